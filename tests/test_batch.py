"""`ptiedit batch` on a tiny random-weight model: results.jsonl and exit status with bad rows, manifest errors,
resuming (a rerun redoes nothing; a killed run keeps its finished batches), and a two-process torchrun run
whose merged results equal a one-process run's."""
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptiedit import invert
from ptiedit.interfaces import batch, cli
from ptiedit.inversion.result import Inversion
from ptiedit.models.random_weights import random_pipeline
from ptiedit.outputs import read_png_settings

from .conftest import FIXTURES, build_tiny_pipeline

FAST = ["--steps", "2", "--inner-steps", "1"]
SRC = Path(__file__).parents[1] / "src"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch-model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_tiny_pipeline("epsilon").save_pretrained(folder, safe_serialization=True)
    return str(folder)


def write_image(path: Path, seed: int, size=(24, 20)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture
def images(tmp_path):
    for i in range(4):
        write_image(tmp_path / f"img{i}.png", seed=i, size=(24 + 4 * i, 20))
    (tmp_path / "corrupt.png").write_bytes(b"not a png at all")
    return tmp_path


def write_csv(folder: Path, text: str, name="manifest.csv") -> Path:
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def write_jsonl(folder: Path, rows: list, name="manifest.jsonl") -> Path:
    (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return folder / name


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


BAD_ROWS = """image,target,eta,id,steps
img0.png,a green circle on a white background,,first,
img1.png,a red square,"0.5,0.9",,
missing.png,a star,,,
corrupt.png,a star,,,
img2.png,,,,
img2.png,a star,1.5,,
img2.png,a blue star,,,many
img3.png,a blue star,,,3
"""


def test_bad_rows_are_recorded_the_others_run_and_a_rerun_retries_only_them(capsys, images, model, monkeypatch):
    manifest, out = write_csv(images, BAD_ROWS), images / "out"
    code, stdout, err = run(capsys, "batch", manifest, "--out", out, "--model", model, *FAST, "--quiet")
    assert code == 1, err
    assert err == "" and stdout == ""
    rows = results(out)
    assert [r["row"] for r in rows] == list(range(8))
    assert [r["status"] for r in rows] == ["ok", "ok", "error", "error", "error", "error", "error", "ok"]
    errors = [r["error"] for r in rows]
    assert errors[0] is None and "missing.png: no such file" in errors[2]
    assert "corrupt.png: not a readable image" in errors[3]
    assert errors[4] == "the target prompt is empty"
    assert "eta must be in [0, 1]" in errors[5] and "1.5" in errors[5]
    assert errors[6] == "steps 'many' is not a number"
    assert all("\n" not in (e or "") for e in errors)
    assert rows[0]["outputs"] == ["first.png"]
    assert rows[1]["outputs"] == ["row00001_eta0.50.png", "row00001_eta0.90.png"]
    assert rows[7]["outputs"] == ["row00007.png"]
    assert all(r["outputs"] == [] for r in rows[2:7])
    assert all(isinstance(r["seconds"], float) for r in rows)
    assert sorted(p.name for p in out.iterdir()) == sorted(["results.jsonl", "first.png", "row00001_eta0.50.png",
                                                            "row00001_eta0.90.png", "row00007.png"])
    assert read_png_settings(out / "row00007.png")["steps"] == 3  # the row's own setting beats --steps
    # A rerun skips the finished rows (no inversion, no file rewritten) and tries the failed ones again.
    before, first = snapshot(out), rows
    inverted = []
    monkeypatch.setattr(batch, "invert", lambda *a, **k: inverted.append(1) or pytest.fail("inverted again"))
    monkeypatch.setattr(batch, "open_model", lambda *a, **k: pytest.fail("model loaded for unreadable images"))
    code, _, _ = run(capsys, "batch", manifest, "--out", out, "--model", model, *FAST, "--quiet")
    assert code == 1 and inverted == []
    again = results(out)
    assert [r for r in again if r["status"] == "ok"] == [r for r in first if r["status"] == "ok"]
    assert [comparable(r) for r in again] == [comparable(r) for r in first]  # the failed rows failed again
    assert all(a["finished"] > b["finished"] for a, b in zip(again, first) if a["status"] == "error")
    del before["results.jsonl"]
    assert {k: v for k, v in snapshot(out).items() if k != "results.jsonl"} == before  # no output rewritten
    # With every row done, a rerun writes nothing at all, results.jsonl included.
    monkeypatch.undo()
    manifest = write_csv(images, "".join(BAD_ROWS.splitlines(keepends=True)[:3]), "ok.csv")
    assert run(capsys, "batch", manifest, "--out", images / "ok", "--model", model, *FAST, "--quiet")[0] == 0
    before = snapshot(images / "ok")
    monkeypatch.setattr(batch, "open_model", lambda *a, **k: pytest.fail("model loaded with nothing to do"))
    assert run(capsys, "batch", manifest, "--out", images / "ok", "--model", model, *FAST, "--quiet")[0] == 0
    assert snapshot(images / "ok") == before


def test_outputs_match_ptiedit_edit_and_rows_of_one_image_share_its_inversion(capsys, images, model, monkeypatch):
    """The same image, target and settings give `ptiedit edit`'s PNG: pixels and metadata."""
    manifest = write_jsonl(images, [{"image": "img0.png", "target": "a green circle", "eta": [0.6, 0.8]},
                                    {"image": "img0.png", "target": "a red square", "id": "square"}])
    inverted = []
    monkeypatch.setattr(batch, "invert", lambda *a, **k: inverted.append(1) or invert(*a, **k))
    code, _, err = run(capsys, "batch", manifest, "--out", images / "out", "--model", model, *FAST, "--quiet",
                       "--save-inversions")
    assert code == 0, err
    assert len(inverted) == 1
    assert read_png_settings(images / "out" / "square.png")["prompt"] == "a red square"
    code, _, err = run(capsys, "edit", images / "img0.png", "--target", "a green circle", "--eta", "0.6,0.8",
                       "-o", images / "edit.png", "--model", model, *FAST, "--quiet")
    assert code == 0, err
    for eta in ("0.60", "0.80"):
        ours, theirs = images / "out" / f"row00000_eta{eta}.png", images / f"edit_eta{eta}.png"
        assert read_png_settings(ours) == read_png_settings(theirs)
        # `edit` samples the reconstruction in the same batch for its grid: float rounding may differ a little
        difference = np.asarray(Image.open(ours), dtype=int) - np.asarray(Image.open(theirs), dtype=int)
        assert np.abs(difference).max() <= 2
    assert results(images / "out")[0]["inversion"] == "row00000.safetensors"
    assert Inversion.load(images / "out" / "row00000.safetensors").settings["steps"] == 2


def test_rows_are_inverted_in_batches_of_distinct_sources(capsys, images, model, monkeypatch):
    """--init-from-target: each row's inversion starts from its own target, and they still share UNet batches."""
    rows = [{"image": f"img{i % 2}.png", "target": f"a star {i % 3}"} for i in range(5)]
    calls = []

    def counting(pipe, images, **options):
        calls.append(options["prompt"])
        return invert(pipe, images, **options)

    monkeypatch.setattr(batch, "invert", counting)
    code, _, err = run(capsys, "batch", write_jsonl(images, rows), "--out", images / "out", "--model", model, *FAST,
                       "--quiet", "--init-from-target", "--batch-size", "4")
    assert code == 0, err
    # sources (image, init prompt): (0, star 0), (1, star 1), (0, star 2), (1, star 0), (0, star 1)
    assert calls == [["a star 0", "a star 1", "a star 2", "a star 0"], ["a star 1"]]


@pytest.mark.parametrize("family, guidance", [("flux", 1.0), ("sd3", 7.0)])
def test_a_row_without_guidance_inverts_at_the_models_guidance(capsys, images, tmp_path_factory, family, guidance):
    """No guidance column or --guidance: invert()'s default, the family's (FLUX.1 is guidance-distilled: 1); a row's
    own guidance still wins."""
    folder = tmp_path_factory.mktemp(f"{family}-batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        random_pipeline(FIXTURES / f"{family}-tiny", seed=0).save_pretrained(folder, safe_serialization=True)
    rows = [{"image": "img0.png", "target": "a star"}, {"image": "img0.png", "target": "a star", "guidance": 2}]
    code, _, err = run(capsys, "batch", write_jsonl(images, rows), "--out", images / "out", "--model", folder, *FAST,
                       "--quiet", "--save-inversions")
    assert code == 0, err
    for row, expected in (("row00000", guidance), ("row00001", 2.0)):
        assert Inversion.load(images / "out" / f"{row}.safetensors").guidance == expected
        assert read_png_settings(images / "out" / f"{row}.png")["guidance"] == expected


@pytest.mark.parametrize("name, text, phrases", [
    ("m.csv", "image,target,colour\nimg0.png,a star,red\n", ["header", "unknown column 'colour'"]),
    ("m.jsonl", '{"image": "img0.png", "target": "a star"}\n{"image": "img1.png", "target": "x", "strength": 1}\n',
     ["row 1", "unknown column 'strength'"]),
    ("m.csv", "image,eta\nimg0.png,0.5\n", ["the column 'target' is missing"]),
    ("m.csv", "image,target,id\nimg0.png,a,x\nimg1.png,b,x\n", ["row 1", "id 'x' is already used by row 0"]),
    ("m.csv", "image,target,id\nimg0.png,a,../x\n", ["row 0", "not usable as a file name"]),
    ("m.jsonl", '{"image": "img0.png", "target": "a"}\n[1, 2]\n', ["line 2 is not a JSON object"]),
    ("m.txt", "image,target\nimg0.png,a\n", ["must be a .csv or .jsonl file"]),
])
def test_a_bad_manifest_is_refused_before_any_work(capsys, images, model, name, text, phrases):
    code, _, err = run(capsys, "batch", write_csv(images, text, name), "--out", images / "out", "--model", model)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("ptiedit: error: "), err
    assert all(phrase in err for phrase in phrases), err
    assert not (images / "out").exists()


def test_bad_command_lines_and_folders_exit_2(capsys, images, model):
    code, out, _ = run(capsys, "batch", "--help")
    assert code == 0 and "--batch-size" in out and "manifest columns: image, target, eta, id" in " ".join(out.split())
    manifest = write_csv(images, "image,target\nimg0.png,a star\n")
    code, _, err = run(capsys, "batch", manifest, "--out", images / "o", "--batch-size", "0")
    assert code == 2 and "--batch-size must be at least 1" in err
    code, _, err = run(capsys, "batch", manifest, "--out", images / "o", "--eta", "2")
    assert code == 2 and "--eta must be in [0, 1]" in err
    code, _, err = run(capsys, "batch", manifest, "--out", images)  # holds the user's images
    assert code == 2 and "holds files but no results.jsonl" in err
    (images / "row00000.png").write_bytes((images / "img0.png").read_bytes())
    manifest = write_csv(images, "image,target\nrow00000.png,a star\n")
    code, _, err = run(capsys, "batch", manifest, "--out", images, "--force")  # would overwrite its own input
    assert code == 2 and "is an input" in err


def test_a_killed_run_resumes_and_only_changed_rows_run_again(capsys, images, model, monkeypatch):
    rows = [{"image": f"img{i}.png", "target": f"a star {i}"} for i in range(4)]
    manifest, out = write_jsonl(images, rows), images / "out"
    calls, real = [], batch.process_group

    def killed_on_third_batch(pipe, jobs, *rest):
        calls.append([job.row for job in jobs])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(pipe, jobs, *rest)

    monkeypatch.setattr(batch, "process_group", killed_on_third_batch)
    code, _, _ = run(capsys, "batch", manifest, "--out", out, "--model", model, *FAST, "--quiet", "--batch-size", "1")
    assert code == 130
    assert sorted(p.name for p in out.glob("*.png")) == ["row00000.png", "row00001.png"]
    calls.clear()
    code, _, _ = run(capsys, "batch", manifest, "--out", out, "--model", model, *FAST, "--quiet", "--batch-size", "1")
    assert code == 0 and calls == [[2], [3]]  # the batch in flight is the only work lost
    assert [r["status"] for r in results(out)] == ["ok"] * 4 and not (out / "shards").exists()
    # A changed row is a new job: it runs again (and overwrites its own output); the others are skipped.
    rows[1]["target"] = "a moon"
    write_jsonl(images, rows)
    calls.clear()
    code, _, _ = run(capsys, "batch", manifest, "--out", out, "--model", model, *FAST, "--quiet", "--batch-size", "1")
    assert code == 0 and calls == [[1]]
    assert read_png_settings(out / "row00001.png")["prompt"] == "a moon"


def comparable(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in ("seconds", "finished")}


def test_two_torchrun_processes_merge_into_the_one_process_results(capsys, images, model):
    rows = [{"image": f"img{i}.png", "target": "a green circle", "id": f"scene{i}", "eta": [0.5, 1.0]}
            for i in range(4)]
    rows.insert(2, {"image": "corrupt.png", "target": "a star"})
    rows.insert(4, {"image": "img0.png", "target": "a star", "steps": 3, "eta": 0.7})  # its own settings group
    manifest = write_jsonl(images, rows)
    argv = ["batch", manifest, "--model", model, *FAST, "--batch-size", "2", "--quiet"]
    code, _, err = run(capsys, *argv, "--out", images / "one")
    assert code == 1, err
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(torchrun) if torchrun.exists() else shutil.which("torchrun"), "--standalone",
                           "--nproc_per_node", "2", "-m", "ptiedit", *map(str, argv), "--out", str(images / "two")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # a row failed: both processes say so
    one, two = results(images / "one"), results(images / "two")
    assert [comparable(r) for r in two] == [comparable(r) for r in one]
    assert [r["status"] for r in one] == ["ok", "ok", "error", "ok", "ok", "ok"]
    assert sorted(p.name for p in (images / "two").iterdir()) == sorted(p.name for p in (images / "one").iterdir())
    for name in (name for r in one for name in r["outputs"]):
        a = np.asarray(Image.open(images / "one" / name), dtype=int)
        b = np.asarray(Image.open(images / "two" / name), dtype=int)
        assert np.abs(a - b).max() <= 2, name  # batches are composed differently; the core's tolerance
