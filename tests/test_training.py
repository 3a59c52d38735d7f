"""A few steps of the embedded model's training recipe: it exports a genuine SD folder and resumes, never
restarts, from its checkpoints. (Never trains for real in CI.)"""
import warnings

import pytest
import torch

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
