"""The `ptiedit` command line on tiny random-weight models: outputs, metadata, reuse, and every bad input.

Bad input must give exactly one stderr line `ptiedit: error: ...`, a non-zero exit and no traceback, and must
never touch an existing file. Most runs call main() in-process; a few run the console script to prove it.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ptiedit
import ptiedit.images
from ptiedit.editing.edit import DEFAULT_ETA
from ptiedit.images import fit_to_model, load_image, pixels_sha256
from ptiedit.interfaces import cli
from ptiedit.interfaces.cli import common
from ptiedit.interfaces.cli import edit as edit_command
from ptiedit.inversion.invert import FLOW_ONLY
from ptiedit.outputs import read_png_settings
from ptiedit.toyworld.render import render
from ptiedit.toyworld.scene import Obj, Scene

from .conftest import build_tiny_pipeline

FAST = ["--steps", "2", "--inner-steps", "1"]
TARGET = "a green circle on a white background"
TINY_AREA, TINY_MULTIPLE = 16 * 16, 4  # the tiny models: 16 px default, VAE x2 and one UNet downsampling


def model_view(path) -> Image.Image:
    """An input as the tiny models see it."""
    return fit_to_model(load_image(path), TINY_AREA, TINY_MULTIPLE)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny epsilon models in two folders, one weight tensor apart: the second stands for 'another model'."""
    folders = []
    for name in ("model-a", "model-b"):
        folder = tmp_path_factory.mktemp(name)
        pipe = build_tiny_pipeline("epsilon")
        if name == "model-b":  # same architecture, one changed weight tensor (same weights would be accepted)
            pipe.unet.conv_out.bias.data += 1e-3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe.save_pretrained(folder, safe_serialization=True)
        folders.append(str(folder))
    return folders


@pytest.fixture
def model(models):
    return models[0]


def write_image(path: Path, size=(24, 20), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def image(tmp_path):
    return write_image(tmp_path / "input.png")


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code, err, *phrases):
    lines = err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("ptiedit: error: "), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------------------- outputs

def test_edit_writes_a_png_carrying_its_settings(capsys, tmp_path, image, model):
    out = tmp_path / "out.png"
    code, stdout, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, *FAST,
                            "--guidance", "5", "--seed", "7")
    assert code == 0, err
    assert f"wrote {out}" in stdout and "Traceback" not in err
    with Image.open(out) as png:
        assert png.size == (16, 12)  # the 24x20 input's aspect ratio, in multiples of 4, within 16x16 pixels
        parameters = png.text["parameters"]
    settings = read_png_settings(out)
    expected_sha = pixels_sha256(model_view(image))
    assert settings == {"prompt": TARGET, "eta": DEFAULT_ETA, "seed": 7, "steps": 2, "guidance": 5.0, "inner_steps": 1,
                        "init_prompt": "", "method": "pti", "model": str(Path(model).resolve()),
                        "model_sha256": settings["model_sha256"], "input_sha256": expected_sha,
                        "version": ptiedit.__version__, "mode": "faithful"}
    assert "\n" not in parameters
    for part in (f'Prompt: "{TARGET}"', f"Eta: {DEFAULT_ETA}", "Steps: 2", "Guidance: 5.0", "Inner steps: 1", "Seed: 7",
                 "Method: pti", f"Input sha256: {expected_sha}"):
        assert part in parameters


def test_edit_writes_the_edit_mask_and_takes_the_paper_mode(capsys, tmp_path, image, model):
    out, mask = tmp_path / "out.png", tmp_path / "mask.png"
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, *FAST, "--quiet",
                       "--mask", mask, "--eta", "1")
    assert code == 0, err
    with Image.open(mask) as png:
        assert png.mode == "L" and png.size == (16, 12) and set(np.unique(np.asarray(png))) <= {0, 255}
        assert np.asarray(png).max() == 255  # eta 1 changes something
    assert read_png_settings(mask)["mode"] == "faithful"
    kept = tmp_path / "kept_mask.png"
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "kept.png", "--model", model, *FAST,
                       "--quiet", "--mask", kept, "--eta", "1", "--keep-size")
    assert code == 0, err
    with Image.open(kept) as png:  # resized to the input's 24x20, and still black and white
        assert png.size == (24, 20) and set(np.unique(np.asarray(png))) <= {0, 255}
    paper = tmp_path / "paper.png"
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", paper, "--model", model, *FAST, "--quiet",
                       "--mode", "paper", "--eta", "1")
    assert code == 0, err
    assert read_png_settings(paper)["mode"] == "paper"
    assert np.abs(np.asarray(Image.open(out)).astype(int) - np.asarray(Image.open(paper))).max() > 0
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "x.png", "--model", model,
                       "--mask", mask)
    assert_one_error_line(code, err, str(mask))  # an existing mask file is never overwritten without --force
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "x.png", "--model", model,
                       "--mode", "fast")
    assert code != 0 and "Traceback" not in err and "invalid choice" in err


def test_eta_sweep_writes_one_file_per_eta_and_a_grid(capsys, tmp_path, image, model):
    out = tmp_path / "out.png"
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, *FAST, "--quiet",
                       "--eta", "0.5", "--eta", "0.7,1", "--keep-size")
    assert code == 0, err
    names = {"out_eta0.50.png", "out_eta0.70.png", "out_eta1.00.png", "out_grid.png"}
    assert {p.name for p in tmp_path.glob("out*")} == names
    assert [read_png_settings(tmp_path / f"out_eta{e}.png")["eta"] for e in ("0.50", "0.70", "1.00")] == [0.5, 0.7, 1]
    edits = [np.asarray(Image.open(tmp_path / f"out_eta{e}.png")) for e in ("0.50", "1.00")]
    assert edits[0].shape == (20, 24, 3)  # --keep-size: exactly the 24x20 input's size
    assert np.abs(edits[0].astype(int) - edits[1]).max() > 0
    grid = Image.open(tmp_path / "out_grid.png")
    assert read_png_settings(tmp_path / "out_grid.png")["etas"] == [0.5, 0.7, 1.0]
    assert grid.width == 5 * 128  # input | reconstruction | three etas, 16x12 each, enlarged 8 times
    top = grid.height - 96
    cell = grid.crop((0, top, 128, top + 96))
    assert cell.tobytes() == model_view(image).resize((128, 96), Image.NEAREST).tobytes()


def test_invert_reconstruct_and_edit_reuse_one_inversion(capsys, tmp_path, image, tiny_model_dir):
    model, inv = str(tiny_model_dir), tmp_path / "inv.safetensors"
    assert run(capsys, "invert", image, "-o", inv, "--model", model, *FAST, "--quiet")[0] == 0
    before = snapshot(tmp_path)[inv.name]
    code, _, err = run(capsys, "reconstruct", inv, "-o", tmp_path / "rec.png", "--model", model, "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "--eta", "0", "-o", tmp_path / "e0.png",
                       "--model", model, "--inversion", inv, "--quiet")
    assert code == 0, err
    assert snapshot(tmp_path)[inv.name] == before  # reused, not rewritten
    rec, e0 = (np.asarray(Image.open(tmp_path / name)) for name in ("rec.png", "e0.png"))
    assert np.array_equal(rec, e0)  # eta = 0 from the reused inversion is its reconstruction
    assert read_png_settings(tmp_path / "e0.png")["steps"] == 2  # settings come from the inversion


def test_edit_writes_a_missing_inversion_then_reuses_it_only_with_matching_settings(capsys, tmp_path, image, model):
    inv = tmp_path / "inv.safetensors"
    common = ["--target", TARGET, "--model", model, "--inversion", inv, "--quiet"]
    assert run(capsys, "edit", image, "-o", tmp_path / "a.png", *common, *FAST)[0] == 0
    assert inv.exists()
    before = snapshot(tmp_path)
    for option, phrase in [(["--steps", "3"], "--steps 3"), (["--guidance", "2"], "--guidance 2.0"),
                           (["--inner-steps", "4"], "--inner-steps 4"), (["--init-from-target"], "init prompt"),
                           (["--init-prompt", "a red circle"], "init prompt")]:
        code, _, err = run(capsys, "edit", image, "-o", tmp_path / "b.png", *common, *option)
        assert_one_error_line(code, err, phrase, str(inv))
    assert snapshot(tmp_path) == before
    assert run(capsys, "edit", image, "-o", tmp_path / "b.png", *common, *FAST)[0] == 0


def test_inversions_are_refused_for_another_model_or_image(capsys, tmp_path, image, models):
    inv = tmp_path / "inv.safetensors"
    assert run(capsys, "invert", image, "-o", inv, "--model", models[0], *FAST, "--quiet")[0] == 0
    code, _, err = run(capsys, "reconstruct", inv, "-o", tmp_path / "r.png", "--model", models[1])
    assert_one_error_line(code, err, "invert the image again")
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "e.png", "--model", models[1],
                       "--inversion", inv)
    assert_one_error_line(code, err, "invert the image again")
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "allowed.png", "--model",
                       models[1], "--inversion", inv, "--allow-changed-weights", "--quiet")  # said explicitly: accepted
    assert code == 0, err
    other = write_image(tmp_path / "other.png", seed=1)
    code, _, err = run(capsys, "edit", other, "--target", TARGET, "-o", tmp_path / "e.png", "--model", models[0],
                       "--inversion", inv)
    assert_one_error_line(code, err, "another image")
    assert not (tmp_path / "r.png").exists() and not (tmp_path / "e.png").exists()


def test_long_prompt_warns_once_naming_dropped_words_then_edits(capsys, tmp_path, image, model):
    prompt = "red " * 80 + "finalword"
    code, _, err = run(capsys, "edit", image, "--target", prompt, "-o", tmp_path / "o.png", "--model", model,
                       *FAST, "--quiet", "--init-from-target")  # encoded twice: one warning all the same
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptiedit: warning: ") and "finalword" in lines[0]
    assert (tmp_path / "o.png").exists()


@pytest.mark.parametrize("method", [m for m in ptiedit.METHODS if m not in FLOW_ONLY])  # test_flow_baselines
def test_edit_takes_every_inversion_method_and_records_it(capsys, tmp_path, image, model, method):
    out = tmp_path / "out.png"
    tuning = ["--inner-steps", "1"] if method in ("pti", "null_text") else []
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, "--steps", "2", *tuning,
                       "--method", method, "--quiet")
    assert code == 0, err
    settings = read_png_settings(out)
    # PTI edits at its default eta; the baselines on the target prompt alone, as the bench runs them
    assert (settings["method"], settings["eta"]) == (method, DEFAULT_ETA if method == "pti" else 1.0)


def test_edit_method_ddim_on_the_embedded_model(capsys, tmp_path):
    out = tmp_path / "out.png"
    render(Scene("white", (Obj("circle", "red", "big", "center"),))).save(tmp_path / "in.png")
    code, _, err = run(capsys, "edit", tmp_path / "in.png", "--target", "a blue circle in the center on a white "
                       "background", "-o", out, "--method", "ddim", "--steps", "10", "--mode", "paper", "--quiet")
    assert code == 0, err
    settings = read_png_settings(out)
    assert settings["method"] == "ddim" and settings["model"].startswith("ptiedit/") and "inner_steps" not in settings


def test_sdedit_noise_follows_the_seed(capsys, tmp_path, image, model):
    def edited(seed: int, name: str) -> np.ndarray:
        out = tmp_path / name
        code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, "--steps", "4",
                           "--method", "sdedit", "--seed", seed, "--mode", "paper", "--quiet")
        assert code == 0, err
        assert read_png_settings(out)["seed"] == seed
        return np.asarray(Image.open(out), dtype=np.int16)

    first = edited(1, "a.png")
    assert np.array_equal(first, edited(1, "b.png"))
    assert not np.array_equal(first, edited(2, "c.png"))


def test_p2p_options_reach_the_edit_and_the_png(capsys, tmp_path, image, model, monkeypatch):
    configs, edit = [], edit_command.edit

    def recording(*args, p2p=None, **kwargs):
        configs.append(p2p)
        return edit(*args, p2p=p2p, **kwargs)

    monkeypatch.setattr(edit_command, "edit", recording)
    out = tmp_path / "out.png"
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, *FAST, "--quiet",
                       "--p2p", "--cross-replace", "0.5", "--self-replace", "0.2", "--source-prompt", "a red circle")
    assert code == 0, err
    assert configs == [ptiedit.P2PConfig(cross_replace=0.5, self_replace=0.2, source_prompt="a red circle")]
    settings = read_png_settings(out)
    assert {k: settings[k] for k in ("p2p", "cross_replace", "self_replace", "source_prompt")} == {
        "p2p": True, "cross_replace": 0.5, "self_replace": 0.2, "source_prompt": "a red circle"}
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, *FAST, "--quiet",
                       "--p2p", "--force")
    assert code == 0, err
    assert configs[-1] == ptiedit.P2PConfig() and read_png_settings(out)["cross_replace"] == 0.8
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, *FAST, "--quiet",
                       "--force")
    assert code == 0 and configs[-1] is None and "p2p" not in read_png_settings(out)


def test_a_reused_inversion_keeps_its_method(capsys, tmp_path, image, model):
    inversion, out = tmp_path / "inv.safetensors", tmp_path / "out.png"
    assert run(capsys, "invert", image, "-o", inversion, "--model", model, "--steps", "2", "--method", "ddim",
               "--quiet")[0] == 0
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, "--inversion",
                       inversion, "--method", "pti")
    assert_one_error_line(code, err, "--method pti differs from the one", "(ddim)")
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, "--inversion",
                       inversion, "--quiet")
    assert code == 0, err
    assert (read_png_settings(out)["method"], read_png_settings(out)["eta"]) == ("ddim", 1.0)


def test_extrapolation_is_allowed_when_asked(capsys, tmp_path, image, model):
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "o.png", "--model", model,
                       *FAST, "--quiet", "--eta", "1.5", "--allow-extrapolation")
    assert code == 0, err
    assert read_png_settings(tmp_path / "o.png")["eta"] == 1.5


# ------------------------------------------------------------------------------ progress, device, memory

def progress_lines(err: str) -> list[str]:
    """Lines of stderr that are not warnings: a tqdm display redraws one line with carriage returns, so each
    separate display leaves one line."""
    return [line for line in err.split("\n") if line.strip() and not line.startswith("ptiedit: warning:")]


def test_one_progress_display_covers_inversion_tuning_and_editing(capsys, tmp_path, image, model):
    code, out, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "o.png", "--model", model,
                         *FAST, "--eta", "0.5,1", "--inversion", tmp_path / "inv.safetensors")
    assert code == 0, err
    lines = progress_lines(err)
    assert len(lines) == 1, err
    done, total = map(int, re.findall(r"(\d+)/(\d+)", lines[0].split("\r")[-1])[-1])
    assert done == total >= 3 * 2  # inversion, tuning and editing, two steps each at least, all completed
    assert out.splitlines() == [f"wrote {tmp_path / name}" for name in
                                ("inv.safetensors", "o_eta0.50.png", "o_eta1.00.png", "o_grid.png")]


def test_quiet_prints_no_progress_and_no_messages(capsys, tmp_path, image, model):
    code, out, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "o.png", "--model", model,
                         *FAST, "--quiet")
    assert (code, out, err) == (0, "", "")


def test_steps_range_comes_from_the_scheduler_config(capsys, tmp_path, image, model):
    short = tmp_path / "short-schedule"
    shutil.copytree(model, short)
    config_path = short / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "num_train_timesteps": 100}))
    inv = tmp_path / "inv.safetensors"
    code, _, err = run(capsys, "invert", image, "-o", inv, "--model", short, "--steps", "101")
    # 100 training timesteps with steps_offset 1: 100 DDIM steps would need timestep 100, so 99 is the most
    assert_one_error_line(code, err, "--steps must be between 1 and 99", "got 101")
    assert not inv.exists()
    code, _, err = run(capsys, "invert", image, "-o", inv, "--model", short, "--steps", "99", "--inner-steps", "0",
                       "--quiet")  # every training timestep: the upper end of the range works
    assert code == 0, err


def test_device_dtype_and_memory_options_reach_the_library(capsys, tmp_path, image, model, monkeypatch):
    loaded = {}

    def record(model_name, **options):
        loaded.update(options)
        raise ValueError("recorded")

    monkeypatch.setattr(common, "load_pipeline", record)
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "o.png", "--model", model,
                       "--dtype", "fp16", "--gradient-checkpointing", "--vae-slicing", "--vae-tiling", "--cpu-offload")
    assert_one_error_line(code, err, "recorded")
    assert loaded == {"device": "auto", "dtype": "fp16", "gradient_checkpointing": True, "vae_slicing": True,
                      "vae_tiling": True, "cpu_offload": True}
    monkeypatch.undo()

    batches = []
    real_edit = edit_command.edit

    def edit_recording(*args, max_batch=None, **kwargs):
        batches.append(max_batch)
        return real_edit(*args, max_batch=max_batch, **kwargs)

    monkeypatch.setattr(edit_command, "edit", edit_recording)
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "o.png", "--model", model, *FAST,
                       "--eta", "0.2,0.4,0.6", "--max-batch", "2", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert batches == [2] and len(list(tmp_path.glob("o_eta*.png"))) == 3


def test_fp16_on_the_cpu_runs_and_warns_in_one_line(capsys, tmp_path, image, model):
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "o.png", "--model", model, *FAST,
                       "--device", "cpu", "--dtype", "fp16", "--quiet")
    assert code == 0, err
    warnings_ = err.strip().splitlines()
    assert len(warnings_) == 1 and warnings_[0].startswith("ptiedit: warning: ") and "fp16" in warnings_[0], err
    assert read_png_settings(tmp_path / "o.png")["prompt"] == TARGET


# ----------------------------------------------------------------------------------------- no overwriting

def test_existing_outputs_are_kept_without_force_and_replaced_with_it(capsys, tmp_path, image, model):
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    args = ["edit", image, "--target", TARGET, "-o", out, "--model", model, *FAST, "--quiet"]
    before = snapshot(tmp_path)
    code, _, err = run(capsys, *args)
    assert_one_error_line(code, err, str(out), "--force")
    assert snapshot(tmp_path) == before
    assert run(capsys, *args, "--force")[0] == 0
    assert read_png_settings(out)["prompt"] == TARGET
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_every_output_is_checked_before_any_work(capsys, tmp_path, image, model, monkeypatch):
    (tmp_path / "out_grid.png").write_bytes(b"precious")  # only the last output of a sweep exists
    monkeypatch.setattr(common, "load_pipeline", lambda *a, **k: pytest.fail("loaded the model before checking"))
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "out.png", "--eta", "0.5,1",
                       "--model", model)
    assert_one_error_line(code, err, "out_grid.png")
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "new.png", "--model", model,
                       "--inversion", tmp_path / "missing" / "inv.safetensors")
    assert_one_error_line(code, err, "does not exist")
    assert snapshot(tmp_path) == before


def test_interrupted_write_leaves_the_old_file_and_no_debris(capsys, tmp_path, image, model, monkeypatch):
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    real_save = Image.Image.save

    def save_half_then_interrupt(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        Path(fp).write_bytes(Path(fp).read_bytes()[:20])
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", save_half_then_interrupt)
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", out, "--model", model, *FAST, "--quiet",
                       "--force")
    assert code == 130 and err.strip() == "ptiedit: interrupted"
    assert snapshot(tmp_path) == before  # no half file, no temporary file left behind


def test_unexpected_errors_are_one_line_unless_debugging(capsys, tmp_path, image, model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the GPU caught fire\nsecond line")

    monkeypatch.setattr(common, "load_pipeline", broken)
    args = ["edit", image, "--target", TARGET, "-o", tmp_path / "o.png", "--model", model]
    code, _, err = run(capsys, *args)
    assert code == 1
    assert err.strip() == "ptiedit: error: RuntimeError: the GPU caught fire second line"
    with pytest.raises(RuntimeError):
        cli.main(["--debug", *map(str, args)])


# ------------------------------------------------------------------------------------------- bad input

def bad_inputs(tmp: Path, image: Path, model: str):
    """(argv, phrase the error line must hold) for every bad input the CLI must refuse."""
    text = tmp / "notes.png"
    text.write_text("not an image")
    empty = tmp / "empty.png"
    empty.write_bytes(b"")
    for fmt in ("png", "jpeg"):
        whole = tmp / f"whole.{fmt}"
        Image.open(image).save(whole)
        (tmp / f"half.{fmt}").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    corrupt = tmp / "corrupt.safetensors"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    parent_file = tmp / "afile"
    parent_file.write_text("x")
    out = tmp / "out.png"

    def edit(*extra, source=image, output=out):
        return ["edit", source, "--target", TARGET, "-o", output, "--model", model, *extra]

    named_like_inversion = tmp / "picture.safetensors"
    named_like_inversion.write_bytes(image.read_bytes())
    inversion_named_png = tmp / "inversion.png"
    inversion_named_png.write_bytes(corrupt.read_bytes())
    return {
        "missing input": (edit(source=tmp / "absent.png"), "no such file"),
        "folder as input": (edit(source=tmp), "is a folder"),
        "text file": (edit(source=text), "not a readable image"),
        "empty file": (edit(source=empty), "not a readable image"),
        "truncated png": (edit(source=tmp / "half.png"), "not a readable image"),
        "truncated jpeg": (edit(source=tmp / "half.jpeg"), "not a readable image"),
        "empty prompt": (["edit", image, "--target", "", "-o", out], "--target is empty"),
        "blank prompt": (["edit", image, "--target", " \t ", "-o", out], "--target is empty"),
        "blank init prompt": (edit("--init-prompt", "  "), "--init-prompt is empty"),
        "eta above 1": (edit("--eta", "1.2"), "--allow-extrapolation"),
        "eta below 0": (edit("--eta", "0.5,-0.1"), "--eta must be in [0, 1]"),
        "eta nan": (edit("--eta", "nan"), "--eta must be in [0, 1]"),
        "eta not a number": (edit("--eta", "high"), "'high' is not a number"),
        "steps 0": (edit("--steps", "0"), "--steps must be between 1 and 1000"),
        "steps 1001": (edit("--steps", "1001"), "--steps must be between 1 and 1000"),
        "steps not a number": (edit("--steps", "ten"), "invalid int value"),
        "inner steps -1": (edit("--inner-steps", "-1"), "--inner-steps must be between 0 and 100"),
        "inner steps 101": (edit("--inner-steps", "101"), "--inner-steps must be between 0 and 100"),
        "guidance -1": (edit("--guidance", "-1"), "--guidance must be between 0 and 50"),
        "guidance 51": (edit("--guidance", "51"), "--guidance must be between 0 and 50"),
        "guidance nan": (edit("--guidance", "nan"), "--guidance must be between 0 and 50"),
        "negative seed": (edit("--seed", "-1"), "--seed must be"),
        "seed above 32 bits": (edit("--seed", str(2**32)), "--seed must be between 0 and 4294967295"),
        "unknown method": (edit("--method", "foo"), "invalid choice: 'foo'"),
        "inner steps for ddim": (edit("--method", "ddim", "--inner-steps", "2"),
                                 "--inner-steps applies to --method pti and null_text, not ddim"),
        "p2p option without p2p": (edit("--cross-replace", "0.5"), "--cross-replace needs --p2p"),
        "cross replace above 1": (edit("--p2p", "--cross-replace", "1.5"), "--cross-replace must be between 0 and 1"),
        "self replace nan": (edit("--p2p", "--self-replace", "nan"), "--self-replace must be between 0 and 1"),
        "blank source prompt": (edit("--p2p", "--source-prompt", " "), "--source-prompt is empty"),
        "no target": (["edit", image, "-o", out], "--target"),
        "unknown option": (edit("--colour", "red"), "unrecognized arguments"),
        "two init options": (edit("--init-prompt", "x", "--init-from-target"), "not allowed with"),
        "unknown model": (["edit", image, "--target", TARGET, "-o", out, "--model", "no-such-org/no-such-model"],
                          "cannot load model"),
        "not a model folder": (["edit", image, "--target", TARGET, "-o", out, "--model", tmp], "model_index.json"),
        "unknown device": (edit("--device", "toaster"), "unknown device 'toaster'; use auto, cpu, cuda, cuda:N or mps"),
        "device index on the cpu": (edit("--device", "cpu:1"), "unknown device 'cpu:1'"),
        "absent cuda device": (edit("--device", f"cuda:{torch.cuda.device_count()}"),
                               "CUDA device(s)" if torch.cuda.is_available() else "CUDA is not available"),
        "max batch 0": (edit("--max-batch", "0"), "--max-batch must be at least 1, got 0"),
        "corrupt inversion": (edit("--inversion", corrupt), "corrupt.safetensors"),
        "corrupt inversion to reconstruct": (["reconstruct", corrupt, "-o", out, "--model", model],
                                             "corrupt.safetensors"),
        "missing inversion to reconstruct": (["reconstruct", tmp / "no.safetensors", "-o", out], "no such file"),
        "output folder missing": (edit(output=tmp / "nowhere" / "o.png"), "does not exist"),
        "output under a file": (edit(output=parent_file / "o.png"), "is not a folder"),
        "output is a folder": (edit(output=tmp / "sub.png"), "is a folder"),
        "output not png": (edit(output=tmp / "o.jpg"), "must be a .png file"),
        "input is the output": (edit("--force", output=image), "is also an input"),
        "input linked as the output": (edit("--force", output=tmp / "link.png"), "is also an input"),
        "inversion linked to the output": (edit("--inversion", tmp / "link.safetensors"), "named twice"),
        "inversion not safetensors": (edit("--inversion", tmp / "inv.pt"), "must be a .safetensors file"),
        "invert output exists": (["invert", image, "-o", corrupt, "--model", model], "--force"),
        "invert output not safetensors": (["invert", image, "-o", tmp / "inv.png"], "must be a .safetensors"),
        "invert into its input": (["invert", named_like_inversion, "-o", named_like_inversion, "--force"],
                                  "is also an input"),
        "reconstruct over its input": (["reconstruct", inversion_named_png, "-o", inversion_named_png, "--force"],
                                       "is also an input"),
        "demo into a file": (["demo", "-o", parent_file], "is a file"),
        "demo under a file": (["demo", "-o", parent_file / "demo"], "is not a folder"),
        "no command": ([], "required"),
        "unknown command": (["paint"], "invalid choice"),
    }


def test_every_bad_input_gets_one_error_line_and_changes_nothing(capsys, tmp_path, image, model, monkeypatch):
    assert_bad_inputs_fail_cleanly(capsys, tmp_path, image, model)


def assert_bad_inputs_fail_cleanly(capsys, tmp_path, image, model):
    """Every case of bad_inputs gives one error line and a non-zero exit, and leaves tmp_path as it was."""
    (tmp_path / "sub.png").mkdir()
    (tmp_path / "link.png").symlink_to(image)
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "out.png")  # dangling until out.png is written
    cases = bad_inputs(tmp_path, image, model)
    before = snapshot(tmp_path)
    failures = []
    for name, (argv, phrase) in cases.items():
        code, _, err = run(capsys, *argv)
        try:
            assert_one_error_line(code, err, phrase)
            assert snapshot(tmp_path) == before
        except AssertionError as error:
            failures.append(f"{name}: {error}")
    assert not failures, "\n".join(failures)


def test_decompression_bomb_and_unwritable_folder(capsys, tmp_path, image, model, monkeypatch):
    monkeypatch.setattr(ptiedit.images, "MAX_PIXELS", 100)
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "o.png", "--model", model)
    assert_one_error_line(code, err, "too large")
    monkeypatch.undo()
    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", folder / "o.png", "--model", model)
    assert_one_error_line(code, err, "not writable")
    assert not any(folder.iterdir())


# ------------------------------------------------------------------------------------- wiring and help

@pytest.mark.parametrize("command", [["edit"], ["invert"], ["reconstruct"], ["demo"], ["toyworld", "train"], []])
def test_help_works_for_every_command(capsys, command):
    code, out, err = run(capsys, *command, "--help")
    assert code == 0 and err == ""
    assert out.startswith("usage: ptiedit")
    expected = {"edit": "--keep-size", "invert": "--inner-steps", "reconstruct": "--model", "demo": "--force",
                "toyworld": "--out"}
    assert expected.get(command[0] if command else "", "COMMAND") in out


def test_delegated_commands_load_lazily_and_name_what_to_install(capsys, tmp_path, monkeypatch):
    (tmp_path / "fake_ui.py").write_text("import not_an_installed_package_xyz\n")
    (tmp_path / "fake_bench.py").write_text(
        "def add_arguments(parser):\n    parser.add_argument('--n', type=int, required=True)\n"
        "def run(args):\n    if args.n < 0:\n        raise ValueError('--n must be >= 0')\n    return args.n\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.DELEGATED, "ui", ("fake_ui", "ui", "web app"))
    monkeypatch.setitem(cli.DELEGATED, "bench", ("fake_bench", "eval", "benchmark"))
    assert run(capsys, "bench", "--n", "3")[0] == 3
    assert "fake_ui" not in sys.modules  # only the invoked command's module is imported
    code, _, err = run(capsys, "bench", "--n", "-1")
    assert_one_error_line(code, err, "--n must be >= 0")
    code, _, err = run(capsys, "ui")
    assert_one_error_line(code, err, "not_an_installed_package_xyz", "pip install 'ptiedit[ui]'")
    monkeypatch.setitem(cli.DELEGATED, "ui", ("ptiedit.no_such_module", "ui", "web app"))
    code, _, err = run(capsys, "ui")
    assert_one_error_line(code, err, "not available in this installation")


def test_demo_writes_every_file_and_refuses_to_overwrite(capsys, tmp_path, model):
    from ptiedit.demo import ETAS, SCENES, demo_files

    folder = tmp_path / "new" / "demo"  # created with its parent
    code, out, err = run(capsys, "demo", "-o", folder, "--model", model)
    assert code == 0, err
    assert len(progress_lines(err)) == 1, err  # one display for the inversions and all edits
    assert out.startswith(f"wrote {len(demo_files(folder))} files to {folder}")
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in demo_files(folder))
    grid = Image.open(folder / "grid.png")
    rows = sum(len(demo.edits) for demo in SCENES)
    assert grid.height > rows * 128 and grid.width > (2 + len(ETAS)) * 128  # plus labels
    assert read_png_settings(folder / "shapes-object-color-green_eta0.80.png")["prompt"] == \
        "a big green circle in the center on a white background"
    assert read_png_settings(folder / "photo-object-color-yellow_eta0.80.png")["prompt"] == \
        "a big yellow circle in the center"  # the photo goes unnamed
    before = snapshot(folder)
    code, _, err = run(capsys, "demo", "-o", folder, "--model", model)
    assert_one_error_line(code, err, "--force")
    assert snapshot(folder) == before


# --------------------------------------------------------------------------------------- console script

@pytest.mark.parametrize("argv, phrase", [
    (["edit", "absent.png", "--target", TARGET, "-o", "o.png"], "no such file"),
    (["edit", "in.png", "--target", TARGET, "-o", "o.png", "--steps", "many"], "invalid int value"),
    (["edit", "in.png", "--target", TARGET, "-o", "o.png", "--model", "no-such-org/no-such-model"],
     "cannot load model"),
])
def test_console_script_prints_one_line_and_no_traceback(tmp_path, argv, phrase):
    write_image(tmp_path / "in.png")
    script = Path(sys.executable).with_name("ptiedit")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(script), *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert_one_error_line(done.returncode, done.stderr, phrase)
    assert done.returncode == 2 and not (tmp_path / "o.png").exists()
