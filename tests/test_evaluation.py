"""Evaluation: metrics and their masked variants, the suites, the PIE-Bench format, and `ptiedit bench` end to end."""
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ptiedit.evaluation import metrics
from ptiedit.evaluation.metrics import PSNR_CAP, compare, mean_interval, mse, psnr, ssim
from ptiedit.evaluation.piebench import decode_mask, encode_mask, fit_mask, load_piebench, strip_markers
from ptiedit.evaluation.suites import EDIT_TYPES, TEXTURED_EDIT_TYPES, photos_suite, shapes_suite, textured_suite
from ptiedit.interfaces.cli import main
from ptiedit.models.family import StableDiffusion
from ptiedit.models.loading import EMBEDDED_MODEL

PIEBENCH = Path(__file__).parent / "fixtures" / "piebench"


def random_image(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------- metrics

def test_identical_images_give_the_extremes():
    image = random_image(0)
    assert compare(image, image) == {"psnr": PSNR_CAP, "ssim": pytest.approx(1.0, abs=1e-6), "mse": 0.0}
    edited = np.zeros((32, 32), bool)
    edited[8:20, 4:30] = True
    assert compare(image, image, edited) == {"psnr": PSNR_CAP, "ssim": pytest.approx(1.0, abs=1e-6), "mse": 0.0}


def test_known_pairs_give_known_values():
    black, dark = np.zeros((16, 16, 3), np.float32), np.full((16, 16, 3), 0.1, np.float32)
    assert mse(dark, black) == pytest.approx(0.01)
    assert psnr(dark, black) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
    # Flat images: SSIM's contrast-structure term is 1, the luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    grey, lighter = np.full((16, 16, 3), 0.5, np.float32), np.full((16, 16, 3), 0.6, np.float32)
    c1 = (0.01 * 1.0) ** 2
    assert ssim(grey, lighter) == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.5 ** 2 + 0.6 ** 2 + c1), abs=1e-6)
    # The pinned settings are scikit-image's gaussian SSIM (sigma 1.5, population covariance) up to border handling.
    from skimage.metrics import structural_similarity

    a, b = random_image(1), np.clip(random_image(1).astype(int) + random_image(2) // 6 - 21, 0, 255).astype(np.uint8)
    reference = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255)
    assert ssim(a, b) == pytest.approx(reference, abs=2e-3)
    assert ssim(a, b) < 0.99


def test_masked_metrics_ignore_the_edited_region_only():
    reference, prediction = random_image(3), random_image(3).copy()
    prediction[:16] = prediction[:16] // 2 + 40  # some error everywhere in the top half
    edited = np.zeros((32, 32), bool)
    edited[20:28, 6:22] = True
    before = compare(prediction, reference, edited)
    changed_inside = prediction.copy()
    changed_inside[edited] = 255 - changed_inside[edited]
    assert compare(changed_inside, reference, edited) == before
    assert compare(changed_inside, reference) != compare(prediction, reference)
    changed_outside = prediction.copy()
    changed_outside[2:6, 2:6] = 0
    after = compare(changed_outside, reference, edited)
    assert all(after[k] != before[k] for k in before)
    # PSNR and MSE over the unedited pixels are the plain metrics on those pixels.
    keep = ~edited
    expected = np.mean((prediction[keep] / 255.0 - reference[keep] / 255.0) ** 2)
    assert before["mse"] == pytest.approx(expected, rel=1e-5)
    assert before["psnr"] == pytest.approx(-10 * math.log10(expected), rel=1e-5)
    assert compare(prediction, reference, np.ones((32, 32), bool)) == {"psnr": None, "ssim": None, "mse": None}


def test_metrics_refuse_mismatched_inputs():
    with pytest.raises(ValueError, match="differ in size"):
        psnr(random_image(0, 16), random_image(0, 32))
    with pytest.raises(ValueError, match="mask"):
        mse(random_image(0), random_image(1), np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ssim(np.full((16, 16, 3), 2.0), np.zeros((16, 16, 3)))


def test_mean_interval_is_a_bootstrap_interval_of_the_mean():
    mean, low, high = mean_interval([0.0, 1.0] * 50 + [None, float("nan")])
    assert mean == 0.5 and 0.38 < low < 0.5 < high < 0.62
    assert mean_interval([3.0] * 5) == (3.0, 3.0, 3.0)
    wide, narrow = mean_interval([0.0, 1.0] * 5), mean_interval([0.0, 1.0] * 200)
    assert wide[2] - wide[1] > 2 * (narrow[2] - narrow[1])
    assert all(math.isnan(v) for v in mean_interval([None]))


def test_learned_metrics_load_local_weights_only(tmp_path):
    with pytest.raises(ValueError, match="no AlexNet checkpoint"):
        metrics.LPIPS(tmp_path)
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in metrics.alexnet_features().state_dict().items()}
    torch.save(state, tmp_path / "alexnet-owt-7be5be79.pth")
    lpips = metrics.LPIPS(tmp_path)
    a, b = random_image(4, 64), random_image(5, 64)
    assert lpips(a, a) == pytest.approx(0.0, abs=1e-7) and lpips(a, b) > 0
    edited = np.zeros((64, 64), bool)
    edited[:, 32:] = True
    mixed = a.copy()
    mixed[:, 32:] = b[:, 32:]
    assert lpips(mixed, a, edited) == pytest.approx(0.0, abs=1e-7) and lpips(mixed, a) > 0
    with pytest.raises(ValueError, match="cannot load a CLIP model"):
        metrics.ClipScore(tmp_path)
    status = metrics.LearnedMetrics(lpips_weights=tmp_path).status()
    assert status["LPIPS"].startswith("weights from") and status["CLIP score"] == "skipped: no local weights"


def test_clip_score_and_structure_distance_run_on_local_models(tmp_path):
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, ViTConfig, ViTImageProcessor,
                              ViTModel)

    from ptiedit.toyworld.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(Path(__file__).parent / "fixtures" / "tokenizer")
    torch.manual_seed(0)
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
            "num_attention_heads": 2, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(tmp_path / "clip")
    CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer).save_pretrained(tmp_path / "clip")
    ViTModel(ViTConfig(**vision), add_pooling_layer=False).save_pretrained(tmp_path / "dino")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "dino")
    learned = metrics.LearnedMetrics(clip_model=tmp_path / "clip", dino_model=tmp_path / "dino")
    a, b = Image.fromarray(random_image(6, 64)), Image.fromarray(random_image(7, 64))
    region = np.zeros((64, 64), bool)
    region[16:48, 16:48] = True
    scores = learned.scores(a, b, "a red circle", region)
    assert 0 <= scores["clip_whole"] <= 100 and 0 <= scores["clip_edited"] <= 100
    assert learned.clip(a, "a red circle", region=np.ones((64, 64), bool)) == pytest.approx(scores["clip_whole"])
    assert scores["structure_distance"] > 0 and learned.structure(a, a) == pytest.approx(0.0, abs=1e-9)
    assert scores["lpips_unedited"] is None


# ---------------------------------------------------------------------------------------------------- PIE-Bench

def test_run_length_masks_round_trip_and_get_the_border():
    mask = np.zeros((512, 512), bool)
    mask[100:200, 50:300] = True
    mask[400, 10:12] = True
    runs = encode_mask(mask)
    assert runs[:2] == [100 * 512 + 50, 250]
    decoded = decode_mask(runs)
    border = np.zeros((512, 512), bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    assert np.array_equal(decoded, mask | border)
    assert np.array_equal(decode_mask([512 * 512 - 3, 100]), border)  # a run past the end is clipped
    with pytest.raises(ValueError, match="pairs"):
        decode_mask([1, 2, 3])
    with pytest.raises(ValueError, match="outside"):
        decode_mask([512 * 512, 1])


def test_markers_are_stripped():
    assert strip_markers("a [red] cat on  a [wooden ]table") == "a red cat on a wooden table"


def test_piebench_folder_loads_with_masks_fitted_to_the_model():
    entries = load_piebench(PIEBENCH)
    assert [e.id for e in entries] == ["000000000000", "000000000001", "111000000000"]
    first = entries[0]
    assert first.source_prompt == "a big red circle in the center on a white background"
    assert first.target_prompt == "a big green circle in the center on a white background"
    assert first.mask[256, 256] and not first.mask[20, 20]  # the circle is edited, the white corner is not
    small = fit_mask(first.mask, (512, 512), 16)
    assert small.shape == (16, 16) and small[8, 8] and small[0].all() and not small[3, 3]
    assert len(load_piebench(PIEBENCH, limit=2)) == 2


def test_piebench_loader_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no mapping_file.json"):
        load_piebench(tmp_path)
    shutil.copy(PIEBENCH / "mapping_file.json", tmp_path)
    with pytest.raises(ValueError, match="not found"):
        load_piebench(tmp_path)
    (tmp_path / "mapping_file.json").write_text(json.dumps({"1": {"image_path": "x.jpg"}}))
    with pytest.raises(ValueError, match="lacks original_prompt, editing_prompt, mask"):
        load_piebench(tmp_path)


# ------------------------------------------------------------------------------------------------------- suites

def test_shapes_suite_is_seeded_extensible_and_has_true_ground_truth():
    cases = shapes_suite(64, n=8, seed=3)
    assert [c.edits[0].kind for c in cases] == list(EDIT_TYPES) * 2
    assert [c.image_id for c in shapes_suite(64, n=4, seed=3)] == [c.image_id for c in cases[:4]]
    assert [c.source_prompt for c in shapes_suite(64, n=8, seed=4)] != [c.source_prompt for c in cases]
    for case in cases:
        edit = case.edits[0]
        source, truth = np.asarray(case.image), np.asarray(edit.ground_truth)
        assert np.array_equal(source[~edit.edited], truth[~edit.edited]) and (source != truth).any()
        assert edit.succeeded(edit.ground_truth) and not edit.succeeded(case.image)
        if edit.kind == "selective":
            assert edit.target_prompt.count(" and ") == 1
    with pytest.raises(ValueError, match="unknown edit type"):
        shapes_suite(64, n=2, edit_types=("object_size_and_more",))


def test_textured_suite_edits_objects_on_textures_and_photos_and_keeps_the_rest():
    cases = textured_suite(64, n=6, seed=3)
    assert [c.edits[0].kind for c in cases] == list(TEXTURED_EDIT_TYPES) * 2
    assert [c.source_prompt for c in textured_suite(64, n=3, seed=3)] == [c.source_prompt for c in cases[:3]]
    for case in cases:
        edit = case.edits[0]
        source, truth = np.asarray(case.image).astype(int), np.asarray(edit.ground_truth).astype(int)
        assert np.array_equal(source[~edit.edited], truth[~edit.edited]) and (source != truth).any()
        assert edit.succeeded(edit.ground_truth) and not edit.succeeded(case.image)
        assert "background" not in case.source_prompt  # textures and photos go unnamed: detail no caption states
        # not a flat backdrop: the pixels the edit leaves alone carry texture
        assert source[~edit.edited].std(axis=0).mean() > 5
    with pytest.raises(ValueError, match="unknown edit type background_color"):
        textured_suite(64, n=1, edit_types=("background_color",))


def test_photos_suite_fits_package_photos_to_the_model():
    cases = photos_suite(16, n=2)
    assert len(cases) == 2 and all(c.image.size == (16, 16) and c.source_prompt and not c.edits for c in cases)


# -------------------------------------------------------------------------------------------------------- bench

def test_report_picks_best_and_matched_settings():
    from ptiedit.evaluation.report import best_knob, fidelity_column, matched_knob

    def cell(success, unedited):
        return {"success": [success, 0, 1], "psnr_unedited": [unedited, 0, 99]}

    knobs = {"eta=0.4": cell(0.5, 30.0), "eta=0.8": cell(0.7, 24.0), "eta=1": cell(0.7, 22.0)}
    assert best_knob(knobs, "eta=0.8") == "eta=0.8"  # the tie on success goes to the higher unedited PSNR
    assert matched_knob(knobs, 28.5) == "eta=0.4" and matched_knob(knobs, 22.9) == "eta=1"
    unscored = {"eta=0.4": {"psnr_unedited": [30.0, 0, 99]}, "eta=0.8": {"psnr_unedited": [25.0, 0, 99]}}
    assert best_knob(unscored, "eta=0.8") == "eta=0.8"
    # Fidelity is matched against the VAE round trip when the rows have it (the VAE caps the pixel figure).
    assert fidelity_column({"pti": knobs}) == "psnr_unedited"
    knobs["eta=0.4"]["psnr_unedited_vae"], knobs["eta=1"]["psnr_unedited_vae"] = [21.0, 0, 99], [35.0, 0, 99]
    assert fidelity_column({"pti": knobs}) == "psnr_unedited_vae"
    assert matched_knob(knobs, 33.0, "psnr_unedited_vae") == "eta=1"


def test_report_counts_only_the_runs_that_made_rows():
    from ptiedit.evaluation.report import runs_text

    run = {"rows": 10, "seconds": 60.0, "threads": 2}
    assert "1 run of" in runs_text([run, {**run, "rows": 0, "seconds": 2.0}], 10)  # a rerun that only reported
    assert "resumed" in runs_text([run, run], 20) and "killed" in runs_text([run], 15)


def test_report_grid_shows_every_kind_of_edit():
    from ptiedit.evaluation.report import GRID_IMAGES, grid_images

    kind_of = {f"{kind}-{i:03d}": kind for kind in ("background_color", "object_color", "selective") for i in range(5)}
    shown = grid_images(kind_of)
    assert len(shown) == GRID_IMAGES
    assert {kind_of[image] for image in shown[:3]} == {"background_color", "object_color", "selective"}
    assert grid_images({"b": "reconstruction", "a": "reconstruction"}) == ["a", "b"]  # one kind: in order


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def bench(*args: str) -> int:
    return main(["bench", "--quiet", *args])


def test_bench_end_to_end_and_resume(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--out", str(out), "--model", str(tiny_model_dir), "--n", "2", "--steps", "2", "--methods", "pti,ddim"]
    assert bench(*common) == 0
    for name in ("results.csv", "results.json", "report.md", "tradeoff_shapes.png", "grid_shapes.png"):
        assert (out / name).stat().st_size > 0, name
    rows = read_rows(out / "results.csv")
    # per scene: pti = reconstruction + 6 etas, ddim = reconstruction + 1 edit
    assert len(rows) == 2 * (7 + 2)
    assert {r["knob"] for r in rows if r["method"] == "pti"} == {"eta=0", "eta=0.4", "eta=0.6", "eta=0.7", "eta=0.8",
                                                                 "eta=0.9", "eta=1"}
    edit_row = next(r for r in rows if r["edit"] != "reconstruction")
    assert edit_row["success"] in ("0", "1") and float(edit_row["psnr_unedited"]) > 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == len(rows) and "pti" in results["summary"]["shapes"]["edits"]
    report = (out / "report.md").read_text()
    assert "best setting" in report and "skipped: no local weights" in report and "| pti |" in report
    assert "Rows made in 1 run of the command" in report and "resumed" not in report
    assert "ground truths' VAE round trips: the edit success of a perfect method" in report
    # A rerun skips every finished row; a lost row is made again, the others are kept as they were.
    before = (out / "results.csv").read_text()
    assert bench(*common) == 0 and (out / "results.csv").read_text() == before
    lines = before.splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-3]) + lines[-3][:20])  # two rows lost, one torn
    assert bench(*common) == 0
    again = read_rows(out / "results.csv")
    assert len(again) == len(rows) and again[:-3] == rows[:-3]
    assert [run["rows"] for run in json.loads((out / "results.json").read_text())["runs"]] == [len(rows), 0, 3]
    assert "Rows made in 2 runs of the command" in (out / "report.md").read_text()  # not the rerun that made none
    assert {(r["method"], r["knob"], r["image"]) for r in again} == {(r["method"], r["knob"], r["image"]) for r in rows}
    # Other settings in the same folder are refused before the model loads.
    capsys.readouterr()
    assert bench("--out", str(out), "--n", "2", "--steps", "3") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"ptiedit: error: {out} holds results made with steps 2, this run has 3; use another --out folder"]


def test_batched_bench_gives_the_rows_of_a_one_by_one_run(tiny_model_dir, tmp_path, monkeypatch):
    if "v_prediction" in tiny_model_dir.name:
        pytest.skip("the epsilon model covers batching")
    common = ["--model", str(tiny_model_dir), "--n", "3", "--steps", "2", "--methods", "pti,null_text,sdedit,ddim+p2p"]
    assert bench("--out", str(tmp_path / "one"), "--batch-size", "1", *common) == 0
    rows_per_call, call = [], StableDiffusion.predict

    def counted(self, z, t, cond):
        rows_per_call.append(len(z))
        return call(self, z, t, cond)
    monkeypatch.setattr(StableDiffusion, "predict", counted)  # every UNet call goes through predict
    assert bench("--out", str(tmp_path / "batched"), "--batch-size", "2", *common) == 0  # a full and a partial batch
    # --batch-size caps every UNet batch: at most 2 jobs (P2P adds each image's source row, fused CFG doubles rows)
    assert max(rows_per_call) == 2 * 2 * 2
    key = lambda r: (r["method"], r["knob"], r["image"], r["edit"])  # noqa: E731
    one, batched = (sorted(read_rows(tmp_path / name / "results.csv"), key=key) for name in ("one", "batched"))
    assert [key(r) for r in one] == [key(r) for r in batched] and len(one) == 3 * (7 + 2 + 8 + 4)
    for a, b in zip(one, batched):
        assert a["success"] == b["success"] and a["unet_calls"] == b["unet_calls"], key(a)
        for column, tolerance in (("psnr", 0.2), ("psnr_unedited", 0.2), ("ssim", 2e-3), ("mse", 1e-4)):
            if a[column]:
                assert float(b[column]) == pytest.approx(float(a[column]), abs=tolerance), (key(a), column)


def test_fidelity_against_the_vae_round_trip_is_not_capped_by_the_vae(tiny_pipe, tmp_path):
    from ptiedit.evaluation.metrics import LearnedMetrics
    from ptiedit.evaluation.runner import Runner

    case = shapes_suite(StableDiffusion(tiny_pipe).default_size, n=1)[0]
    edit = case.edits[0]
    runner = Runner(tiny_pipe, "shapes", 2, 7.5, LearnedMetrics(), tmp_path)
    perfect = runner.vae_round_trip(case, edit)  # the best any method can do on this model
    row = runner.score(perfect, case, edit)
    assert row["psnr_vae"] == PSNR_CAP and row["psnr"] < 40  # the tiny random VAE garbles the pixels
    assert row["psnr_unedited_vae"] > row["psnr_unedited"]
    # The reader's ceiling: its verdict on the perfect edit, whatever the method's output.
    assert row["success_ceiling"] == row["success"] == runner.score(case.image, case, edit)["success_ceiling"]


def test_ablation_varies_each_method_one_factor_at_a_time():
    from ptiedit.evaluation.bench import method_specs

    specs = {s.name: s for s in method_specs(["pti", "null_text", "ddim+p2p"], True, None, 0)}
    assert {"pti[inner_steps=0]", "pti[init=target]", "pti[guidance=3]", "null_text[lr=0.005]",
            "null_text[early_stop=1e-06]", "null_text[guidance=5]"} <= set(specs)
    assert not any(name.startswith("ddim") for name in specs if name != "ddim+p2p")
    assert specs["pti[init=target]"].init == "target" and specs["pti"].init == "empty"
    assert dict(specs["null_text[lr=0.005]"].options) == {"lr": 5e-3} and not specs["null_text"].options
    assert [s.name for s in method_specs(["pti"], False, None, 0)] == ["pti"]
    chosen = method_specs(["pti", "null_text"], ["null_text[lr=0.005]", "pti[init=target]"], None, 0)
    assert [s.name for s in chosen] == ["pti", "pti[init=target]", "null_text", "null_text[lr=0.005]"]


def test_bench_refuses_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    for args, message in [(["--out", str(tmp_path / "a"), "--methods", "pti,magic"], "unknown method magic"),
                          (["--out", str(tmp_path)], "holds no ptiedit bench results"),
                          (["--out", str(tmp_path / "b"), "--suite", "piebench"], "needs --piebench"),
                          (["--out", str(tmp_path / "c"), "--n", "0"], "--n must be at least 1"),
                          (["--out", str(tmp_path / "d"), "--edit-types", "hue,selective"], "unknown edit type hue"),
                          (["--out", str(tmp_path / "e"), "--methods", "ddim+p2p", "--ablation"],
                           "--ablation varies pti,"),
                          (["--out", str(tmp_path / "e"), "--methods", "pti", "--ablation", "pti[lr=1]"],
                           "unknown --ablation variant pti[lr=1] for these methods; choose from pti[inner_steps=0],"),
                          (["--out", str(tmp_path / "f"), "--batch-size", "0"], "--batch-size must be at least 1"),
                          (["--out", str(tmp_path / "g"), "--suite", "textured", "--edit-types", "background_color"],
                           "unknown edit type background_color"),
                          (["--out", str(tmp_path / "h"), "--suite", "photos", "--edit-types", "selective"],
                           "--edit-types applies to --suite shapes or textured only")]:
        assert bench(*args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "a").exists()


def test_bench_runs_piebench_folders_and_photos(tiny_model_dir, tmp_path):
    if "v_prediction" in tiny_model_dir.name:
        pytest.skip("the epsilon model covers these suites")
    out = tmp_path / "pie"
    assert bench("--out", str(out), "--model", str(tiny_model_dir), "--suite", "piebench", "--piebench",
                 str(PIEBENCH), "--n", "2", "--steps", "2", "--methods", "sdedit,ddim+p2p") == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 2 * (4 * 2 + 1 + 3)  # SDEdit: reconstruction + edit per strength; P2P: one + 3 settings
    edits = [r for r in rows if r["edit"] != "reconstruction"]
    assert all(r["psnr_unedited"] and not r["success"] and not r["psnr"] for r in edits)
    assert "## PIE-Bench" in (out / "report.md").read_text()
    out = tmp_path / "photos"
    assert bench("--out", str(out), "--model", str(tiny_model_dir), "--suite", "photos", "--n", "1", "--steps", "1",
                 "--methods", "negative_prompt") == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 1 and rows[0]["edit"] == "reconstruction" and float(rows[0]["psnr"]) > 0
    assert "VAE round trip" in (out / "report.md").read_text()
    out = tmp_path / "textured"
    assert bench("--out", str(out), "--model", str(tiny_model_dir), "--suite", "textured", "--n", "2", "--steps", "1",
                 "--methods", "ddim", "--ablation") == 0
    rows = read_rows(out / "results.csv")
    edits = {(r["method"], r["image"]): r for r in rows if r["edit"] != "reconstruction"}
    assert {m for m, _ in edits} == {"ddim", "ddim[guidance=3]", "ddim[guidance=5]"}
    assert all(r["success"] in ("0", "1") and r["psnr_unedited"] and r["psnr_vae"] for r in edits.values())
    for image in ("object_color-000", "object_shape-000"):  # a variant's guidance reaches its inversion and edit
        assert len({edits[m, image]["psnr"] for m in ("ddim", "ddim[guidance=3]", "ddim[guidance=5]")}) == 3
    report = (out / "report.md").read_text()
    assert "## Textured-world edit suite" in report and "| ddim[guidance=3] |" in report


@pytest.mark.skipif(not (EMBEDDED_MODEL / "model_index.json").exists(),
                    reason="the embedded shapes-world model is not trained yet "
                    "(models/embedded/toyworld-textured missing)")
def test_bench_on_the_embedded_model(tmp_path):
    out = tmp_path / "embedded"
    assert bench("--out", str(out), "--n", "2", "--steps", "4", "--inner-steps", "2", "--methods", "pti,ddim",
                 "--edit-types", "object_color,background_color") == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 2 * (7 + 2)
    reconstruction = {m: np.mean([float(r["psnr"]) for r in rows if r["method"] == m and r["edit"] == "reconstruction"])
                      for m in ("pti", "ddim")}
    assert reconstruction["pti"] > reconstruction["ddim"]  # tuned c_t undoes the CFG drift of plain DDIM inversion
