"""A few steps of the embedded model's training recipe: it exports a genuine SD folder and resumes, never
restarts, from its checkpoints. (Never trains for real in CI.)"""
import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ptiedit.interfaces.cli import main as cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    args = ["toyworld", "train", "--out", str(out), "--vae-steps", "2", "--wide-vae-steps", "2", "--unet-steps", "3",
            "--epsilon-steps", "1", "--dataset", "64", "--threads", "2", "--quiet"]
    assert cli(args) == 0
    return out, args


def test_exports_a_v_prediction_sd_folder_that_plain_diffusers_loads_and_samples(trained):
    from diffusers import StableDiffusionPipeline

    out, _ = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = StableDiffusionPipeline.from_pretrained(out / "model")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert len(pipe.tokenizer) == pipe.text_encoder.config.vocab_size
    assert len(pipe.tokenizer("a red circle").input_ids) == 5  # bos, 3 words, eos: no padding state saved
    assert pipe.vae.config.block_out_channels[0] > 16  # the widened VAE ships, not the one the UNet learnt on
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle on a white background", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3) and torch.isfinite(torch.from_numpy(image)).all()


def test_rerun_with_more_steps_resumes_each_stage(trained):
    out, args = trained
    args = list(args)
    args[args.index("--unet-steps") + 1] = "4"
    assert cli(args) == 0
    unet_state = torch.load(out / "checkpoints" / "unet.pt", weights_only=False)
    assert unet_state["step"] == 4
    assert torch.load(out / "checkpoints" / "vae.pt", weights_only=False)["step"] == 2
    unet_log = (out / "unet_log.csv").read_text().splitlines()
    assert len(unet_log) == 2  # header + step 0: the rerun did not start over


def test_continue_from_an_exported_model_keeps_its_vae_and_latent_scale(trained, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    out, _ = trained
    model = out / "model"
    args = ["toyworld", "train", "--out", str(tmp_path), "--continue-from", str(model), "--start-step", "3",
            "--unet-steps", "5", "--dataset", "64", "--threads", "2", "--quiet"]
    assert cli(args) == 0
    assert not (tmp_path / "checkpoints" / "vae.pt").exists()  # no VAE stage: the model's VAE is reused
    assert torch.load(tmp_path / "checkpoints" / "unet.pt", weights_only=False)["step"] == 5
    before, after = (AutoencoderKL.from_pretrained(m / "vae") for m in (model, tmp_path / "model"))
    assert after.config.scaling_factor == before.config.scaling_factor
    assert all(torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters()))
    old, new = (UNet2DConditionModel.from_pretrained(m / "unet") for m in (model, tmp_path / "model"))
    assert any(not torch.equal(p, q) for p, q in zip(old.parameters(), new.parameters()))  # it trained on


def test_continue_from_a_folder_that_is_no_model_is_one_line_error(tmp_path, capsys):
    args = ["toyworld", "train", "--out", str(tmp_path / "out"), "--continue-from", str(tmp_path), "--quiet"]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an exported model folder" in err


def test_start_step_without_continue_from_is_one_line_error(tmp_path, capsys):
    assert cli(["toyworld", "train", "--out", str(tmp_path), "--start-step", "5", "--quiet"]) == 2
    assert "--start-step needs --continue-from" in capsys.readouterr().err


# --- The textured world's recipe (issue 11): fp16 snapshots of a run in progress and continuing from them ---

EMBEDDED = Path(__file__).parents[1] / "src" / "ptiedit" / "models" / "embedded" / "toyworld-textured"


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    out = tmp_path_factory.mktemp("textured")
    args = ["toyworld", "train", "--world", "textured", "--out", str(out), "--vae-steps", "2", "--unet-steps", "3",
            "--dataset", "16", "--init-from", str(EMBEDDED), "--eval-images", "4", "--threads", "2", "--quiet"]
    assert cli(args) == 0
    return out


def test_textured_run_exports_an_fp16_sd_folder_with_8_latent_channels_that_samples(textured):
    from diffusers import StableDiffusionPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = StableDiffusionPipeline.from_pretrained(textured / "model", torch_dtype=torch.float32)
    assert pipe.unet.config.in_channels == pipe.vae.config.latent_channels == 8
    stored = safe_open(str(textured / "model" / "unet" / "diffusion_pytorch_model.safetensors"), "pt")
    assert all(stored.get_tensor(k).dtype == torch.float16 for k in stored.keys())
    assert len(pipe.tokenizer("a red striped circle").input_ids) == 6  # every word one token, patterns included
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3) and torch.isfinite(torch.from_numpy(image)).all()
    evaluation = (textured / "vae3_eval_log.csv").read_text().splitlines()
    assert evaluation[0] == "step,psnr_photo,psnr_solid,psnr_textured" and evaluation[1].startswith("2,")


def test_init_from_keeps_the_old_text_encoders_word_embeddings_under_new_token_ids(textured):
    from transformers import CLIPTextModel

    from ptiedit.toyworld.tokenizer import load_tokenizer
    from ptiedit.training.textured_unet import init_from_model

    tokenizer = load_tokenizer(textured / "tokenizer")
    old_tokenizer = load_tokenizer(EMBEDDED / "tokenizer")
    _, text_encoder = init_from_model(EMBEDDED, tokenizer, 8)
    old = CLIPTextModel.from_pretrained(EMBEDDED / "text_encoder").get_input_embeddings().weight
    new = text_encoder.get_input_embeddings().weight
    for word in ("circle</w>", "purple</w>", "background</w>"):
        assert torch.equal(new[tokenizer.get_vocab()[word]], old[old_tokenizer.get_vocab()[word]])


def test_snapshot_then_continue_resumes_every_stage_at_its_step(textured, tmp_path):
    dest = tmp_path / "training-in-progress"
    assert cli(["toyworld", "train", "--world", "textured", "--out", str(textured), "--snapshot", str(dest)]) == 0
    state = json.loads((dest / "training_state.json").read_text())
    assert (state["vae_step"], state["unet_step"]) == (2, 3)
    assert "--continue-from training-in-progress" in (dest / "README.md").read_text()
    assert sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) < 40e6  # fp16: small enough to commit
    (dest / "notes.md").write_text("mine")  # a newer snapshot replaces the old one and keeps other files
    assert cli(["toyworld", "train", "--world", "textured", "--out", str(textured), "--snapshot", str(dest)]) == 0
    assert (dest / "notes.md").read_text() == "mine" and (dest / "training_state.json").is_file()
    out = tmp_path / "continued"
    args = ["toyworld", "train", "--world", "textured", "--out", str(out), "--continue-from", str(dest),
            "--vae-steps", "3", "--unet-steps", "4", "--dataset", "16", "--eval-images", "4", "--threads", "2",
            "--quiet"]
    assert cli(args) == 0
    assert torch.load(out / "checkpoints" / "vae3.pt", weights_only=False)["step"] == 3
    assert torch.load(out / "checkpoints" / "unet3.pt", weights_only=False)["step"] == 4
    assert json.loads((out / "unet_state.json").read_text()) == json.loads((dest / "unet_state.json").read_text())


def test_snapshot_refuses_to_overwrite_a_folder_that_is_not_one(textured, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli(["toyworld", "train", "--world", "textured", "--out", str(textured), "--snapshot", str(tmp_path)]) == 2
    assert "not a training snapshot" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_textured_continue_from_needs_a_snapshot(tmp_path, capsys):
    args = ["toyworld", "train", "--world", "textured", "--out", str(tmp_path / "o"), "--continue-from", str(EMBEDDED),
            "--quiet"]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "training snapshot folder" in err
