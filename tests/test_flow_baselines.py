"""The flow-only baselines, RF-Inversion (Rout et al. 2025) and FlowEdit (Kulikov et al. 2024), in ptiedit's one
harness (invert + edit, the CLI, the bench) on the tiny seeded SD3 and FLUX.1 pipelines of tests/fixtures."""
import csv
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

import ptiedit
from ptiedit.diffusion.ddim import guided_prediction
from ptiedit.editing.edit import sample_edits
from ptiedit.evaluation.bench import available_methods, method_specs, runnable
from ptiedit.interfaces import cli
from ptiedit.inversion.flowedit import (N_MAX, SOURCE_DISTILLED_GUIDANCE, SOURCE_GUIDANCE, TARGET_DISTILLED_GUIDANCE,
                                       TARGET_GUIDANCE)
from ptiedit.inversion.rf_inversion import ETA, ETA_START, ETA_STOP, GAMMA, controller_etas

from .conftest import build_tiny_pipeline
from .test_cli import assert_one_error_line, run, write_image
from .test_flow import FAMILIES, flow, flow_dir, tiny_flow  # noqa: F401  (module fixtures)

STEPS = 4
SOURCE, TARGET = "a red circle", "a blue square"


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def z0(flow, image) -> torch.Tensor:
    _, pipe = flow
    family = ptiedit.model_family(pipe)
    return family.encode_images([family.fit(image)])


def latent(pipe, inversion, target: str, eta: float = 1.0, mode: str = "paper") -> torch.Tensor:
    return sample_edits(pipe, [(inversion, target, eta)], progress=False, mode=mode)[0].latent


def error(z: torch.Tensor, z0: torch.Tensor) -> float:
    return float((z - z0).square().mean())


def same_distilled(pipe) -> dict:
    """FlowEdit's branches at one distilled guidance, the model's own, on FLUX.1-dev (SD3 has none)."""
    value = ptiedit.model_family(pipe).distilled_guidance
    return {} if value is None else {"source_distilled_guidance": value, "target_distilled_guidance": value}


@pytest.mark.parametrize("method", ["rf_inversion", "flowedit"])
def test_each_method_inverts_and_edits_through_the_harness(flow, image, method):
    _, pipe = flow
    inversion = ptiedit.invert(pipe, image, method=method, prompt=SOURCE, steps=STEPS, progress=False)
    assert inversion.method == method and inversion.z0 is not None and inversion.sampling
    for mode in ("paper", "faithful"):
        edited = ptiedit.edit(pipe, inversion, TARGET, 1.0, mode=mode, progress=False)
        assert edited.size == (16, 16) and np.asarray(edited).std() > 0


def test_the_published_defaults_are_the_methods_defaults(flow, image):
    name, pipe = flow
    rf = ptiedit.invert(pipe, image, method="rf_inversion", steps=STEPS, progress=False)
    assert rf.sampling == {"eta_rf": ETA, "eta_start": ETA_START, "eta_stop": ETA_STOP}
    assert (GAMMA, ETA, ETA_START, ETA_STOP) == (0.5, 0.9, 0.0, 0.25)
    assert controller_etas(rf.sampling, 28) == [0.9] * 7 + [0.0] * 21  # the paper's FLUX.1 setting: 7 of 28 steps
    fe = ptiedit.invert(pipe, image, method="flowedit", steps=50, progress=False)
    assert fe.stats["start_step"] == 50 - N_MAX == 17 and len(fe.timesteps) == N_MAX
    real_cfg = FAMILIES[name].default_guidance > 1  # SD3: the paper's 13.5 / 3.5; FLUX.1 (distilled): 1 / 1
    assert (fe.guidance, fe.sampling["source_guidance"]) == ((TARGET_GUIDANCE, SOURCE_GUIDANCE) if real_cfg
                                                            else (1.0, 1.0))


def test_rf_inversion_at_gamma_zero_with_the_controller_off_is_plain_flow_inversion(flow, image):
    _, pipe = flow
    options = dict(prompt=SOURCE, steps=STEPS, progress=False)
    plain = ptiedit.invert(pipe, image, method="ddim", **options)
    rf = ptiedit.invert(pipe, image, method="rf_inversion", gamma=0.0, eta_rf=0.0, **options)
    assert torch.equal(rf.z_T, plain.z_T)
    assert torch.equal(latent(pipe, rf, TARGET), latent(pipe, plain, TARGET))
    steered = ptiedit.invert(pipe, image, method="rf_inversion", gamma=0.5, eta_rf=0.0, **options)
    assert not torch.allclose(steered.z_T, plain.z_T, atol=1e-3)  # gamma moves z_T toward the fixed noise


def test_the_reverse_controller_reconstructs_closer_to_z0(flow, image, z0):
    """Measured squared errors of the reconstructions (eta 0) from z0, 4 steps: gamma 0.5, the controller on the
    first quarter of the steps against off: SD3 0.76 against 1.05, FLUX.1 0.49 against 0.69; on every step both
    reach 1e-3 or less."""
    _, pipe = flow
    options = dict(prompt=SOURCE, steps=STEPS, progress=False)
    off = ptiedit.invert(pipe, image, method="rf_inversion", eta_rf=0.0, **options)
    on = ptiedit.invert(pipe, image, method="rf_inversion", **options)
    throughout = ptiedit.invert(pipe, image, method="rf_inversion", eta_stop=1.0, **options)
    errors = [error(latent(pipe, inversion, "", 0.0), z0) for inversion in (off, on, throughout)]
    assert errors[1] < 0.85 * errors[0] and errors[2] < 2e-3, errors


@pytest.mark.parametrize("n_avg", [1, 3])
def test_flowedit_at_the_source_prompt_and_guidance_returns_the_input_latent(flow, image, z0, n_avg):
    """V(Z_tar, c) - V(Z_src, c) vanishes: measured largest differences from z0 2e-6 or less."""
    _, pipe = flow
    inversion = ptiedit.invert(pipe, image, method="flowedit", prompt=SOURCE, steps=STEPS, guidance=3.5,
                               source_guidance=3.5, n_avg=n_avg, progress=False, **same_distilled(pipe))
    assert len(inversion.timesteps) == STEPS  # n_max 33 runs all 4 steps
    torch.testing.assert_close(latent(pipe, inversion, SOURCE), z0, rtol=0, atol=1e-5)
    assert error(latent(pipe, inversion, TARGET), z0) > 1e-6  # another prompt moves it


def test_flowedit_averages_n_avg_noises_per_step(flow, image):
    _, pipe = flow
    family = ptiedit.model_family(pipe)
    options = dict(prompt=SOURCE, steps=STEPS, progress=False)
    one = ptiedit.invert(pipe, image, method="flowedit", **options)
    three = ptiedit.invert(pipe, image, method="flowedit", n_avg=3, **options)
    torch.testing.assert_close(three.z_T, one.z_T, rtol=0, atol=0)  # the same first noise
    calls = family.forward_calls
    edited = latent(pipe, three, TARGET)
    per_call = 2 if family.default_guidance > 1 else 1  # CFG: two calls a velocity
    # a step: the sampler's target velocity, one batch of the 3 source ones, one of the 2 further target ones
    assert family.forward_calls - calls == STEPS * 3 * per_call
    assert not torch.allclose(edited, latent(pipe, one, TARGET), atol=1e-6)


def test_flowedit_with_n_max_zero_keeps_the_input(flow, image, z0):
    _, pipe = flow
    inversion = ptiedit.invert(pipe, image, method="flowedit", steps=STEPS, n_max=0, progress=False)
    assert len(inversion.timesteps) == 0
    torch.testing.assert_close(latent(pipe, inversion, TARGET), z0, rtol=0, atol=0)


def test_batched_inversions_equal_one_by_one(flow, image):
    _, pipe = flow
    other = image.transpose(Image.FLIP_LEFT_RIGHT)
    for method in ("rf_inversion", "flowedit"):
        both = ptiedit.invert(pipe, [image, other], method=method, prompt=SOURCE, steps=STEPS, progress=False)
        alone = ptiedit.invert(pipe, other, method=method, prompt=SOURCE, steps=STEPS, progress=False)
        torch.testing.assert_close(both[1].z_T, alone.z_T, rtol=0, atol=1e-5)
        edited = sample_edits(pipe, [(both[0], TARGET, 1.0), (both[1], TARGET, 1.0)], progress=False, mode="paper")
        torch.testing.assert_close(edited[1].latent, latent(pipe, alone, TARGET), rtol=0, atol=1e-4)


def test_an_inversion_file_keeps_the_sampling_rule(flow, image, tmp_path):
    _, pipe = flow
    for method in ("rf_inversion", "flowedit"):
        inversion = ptiedit.invert(pipe, image, method=method, prompt=SOURCE, steps=STEPS, progress=False)
        inversion.save(tmp_path / f"{method}.safetensors")
        loaded = ptiedit.Inversion.load(tmp_path / f"{method}.safetensors")
        assert loaded.sampling == inversion.sampling and torch.equal(loaded.z0, inversion.z0)
        assert torch.equal(latent(pipe, loaded, TARGET), latent(pipe, inversion, TARGET))


@pytest.mark.parametrize("method, label", [("rf_inversion", "RF-Inversion"), ("flowedit", "FlowEdit")])
def test_non_flow_models_are_refused_in_one_line(image, method, label):
    pipe = build_tiny_pipeline("epsilon")
    with pytest.raises(ValueError, match=f"^{label} needs a flow-matching model; Stable Diffusion") as caught:
        ptiedit.invert(pipe, image, method=method, steps=STEPS, progress=False)
    assert "\n" not in str(caught.value)


def test_bad_options_are_refused(flow, image):
    _, pipe = flow
    for options, message in (({"gamma": 1.5}, "gamma must be in"), ({"eta_start": 0.5, "eta_stop": 0.2}, "eta_start"),
                             ({"n_max": -1}, "n_max must be"), ({"strength": 0.5}, "has no option strength")):
        method = "flowedit" if "n_max" in options else "rf_inversion"
        with pytest.raises(ValueError, match=message):
            ptiedit.invert(pipe, image, method=method, steps=STEPS, progress=False, **options)


@pytest.mark.parametrize("method, knob", [("rf_inversion", ["--gamma", "0.6", "--eta-stop", "0.5"]),
                                          ("flowedit", ["--n-max", "3", "--source-guidance", "2", "--n-avg", "2"])])
def test_cli_edits_with_each_method_and_its_knobs(capsys, tmp_path, flow, flow_dir, method, knob):
    source, inv = write_image(tmp_path / "input.png"), tmp_path / "inv.safetensors"
    code, _, err = run(capsys, "edit", source, "--target", TARGET, "--init-prompt", SOURCE, "-o", tmp_path / "e.png",
                       "--model", flow_dir, "--method", method, "--steps", "3", "--inversion", inv, *knob, "--quiet")
    assert code == 0, err
    inversion = ptiedit.Inversion.load(inv)
    assert inversion.method == method and (tmp_path / "e.png").exists()
    assert inversion.settings[knob[0][2:].replace("-", "_")] == float(knob[1])
    code, _, err = run(capsys, "edit", source, "--target", TARGET, "-o", tmp_path / "p.png", "--model", flow_dir,
                       "--inversion", inv, "--mode", "paper", "--quiet")  # reused
    assert code == 0, err


def test_cli_refuses_a_non_flow_model_and_foreign_knobs_in_one_line(capsys, tmp_path, tiny_model_dir):
    source = write_image(tmp_path / "input.png")
    code, _, err = run(capsys, "edit", source, "--target", TARGET, "-o", tmp_path / "e.png", "--model",
                       tiny_model_dir, "--method", "flowedit", "--steps", "2", "--quiet")
    assert_one_error_line(code, err, "FlowEdit needs a flow-matching model")
    code, _, err = run(capsys, "edit", source, "--target", TARGET, "-o", tmp_path / "e.png", "--model",
                       tiny_model_dir, "--method", "ddim", "--gamma", "0.5", "--quiet")
    assert_one_error_line(code, err, "--gamma applies to --method rf_inversion, not ddim")
    assert not (tmp_path / "e.png").exists()


def test_the_bench_runs_flow_methods_on_flow_models_only(flow):
    _, pipe = flow
    assert {"rf_inversion", "flowedit", "flowedit+faithful"} <= set(available_methods())
    assert "rf_inversion+p2p" not in available_methods()  # joint attention: no Prompt-to-Prompt
    specs = method_specs(None, False, None, 0)
    assert runnable(specs, pipe, named=False) == specs
    embedded = build_tiny_pipeline("epsilon")
    kept = runnable(specs, embedded, named=False)
    assert {s.method for s in kept} == {s.method for s in specs} - {"rf_inversion", "flowedit"}
    with pytest.raises(ValueError, match="rf_inversion: methods of flow-matching models"):
        runnable(method_specs(["ddim", "rf_inversion"], False, None, 0), embedded, named=True)


def test_the_bench_runs_the_flow_methods_on_a_flow_folder(flow, flow_dir, tmp_path):
    out = tmp_path / "bench"
    assert cli.main(["bench", "--quiet", "--out", str(out), "--model", str(flow_dir), "--methods",
                     "rf_inversion,flowedit", "--n", "1", "--steps", "2", "--edit-types", "object_color"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["method"], r["edit"].split("=")[0]) for r in rows) == [
        ("flowedit", "object_color"), ("flowedit", "reconstruction"),
        ("rf_inversion", "object_color"), ("rf_inversion", "reconstruction")]


def guided_velocity(family, z, t, cond, uncond, guidance):
    prediction = guided_prediction(family, z, t, cond, uncond, guidance)
    return prediction.eps - prediction.x0


@pytest.mark.parametrize("n_avg", [1, 2])
def test_flowedit_in_the_harness_is_algorithm_1_written_out(flow, image, z0, n_avg):
    """The sampler's step plus the rule (inversion/flowedit.py) against the paper's loop with both velocities:
    measured largest differences 6e-6 or less."""
    _, pipe = flow
    family = ptiedit.model_family(pipe)
    inversion = ptiedit.invert(pipe, image, method="flowedit", prompt=SOURCE, steps=STEPS, n_max=3, n_avg=n_avg,
                               progress=False, **same_distilled(pipe))
    schedule = family.schedule(STEPS, (16, 16)).tail(1)
    source, target, null = (family.encode_prompt(p) for p in (SOURCE, TARGET, ""))
    w_src, w_tar = inversion.sampling["source_guidance"], inversion.guidance
    generator = torch.Generator().manual_seed(0)
    draw = lambda: torch.randn((1, *z0.shape[1:]), generator=generator)  # noqa: E731
    z_fe, noise = z0.clone(), draw()
    for i in range(len(schedule)):
        t, level, level_next = schedule.timesteps[i], schedule.level(i), schedule.level(i + 1)
        v_delta = 0
        for n in [noise] + [draw() for _ in range(n_avg - 1)]:
            z_src = level.signal * z0 + level.noise * n
            z_tar = z_fe + z_src - z0
            v_delta = v_delta + (guided_velocity(family, z_tar, t, target, null, w_tar)
                                 - guided_velocity(family, z_src, t, source, null, w_src)) / n_avg
        z_fe = z_fe + (level_next.noise - level.noise) * v_delta
        noise = draw()
    torch.testing.assert_close(latent(pipe, inversion, TARGET), z_fe, rtol=0, atol=1e-4)


def test_the_reverse_controller_in_the_harness_is_algorithm_2_written_out(flow, image):
    """The sampler's step plus the controller rule against v_hat = v + eta (u(z | y0) - v) stepped directly."""
    _, pipe = flow
    family = ptiedit.model_family(pipe)
    inversion = ptiedit.invert(pipe, image, method="rf_inversion", prompt=SOURCE, steps=STEPS, eta_stop=0.5,
                               progress=False)
    schedule = family.schedule(STEPS, (16, 16))
    target, null, y0 = family.encode_prompt(TARGET), family.encode_prompt(""), inversion.z0
    z = inversion.z_T.clone()
    for i in range(STEPS):
        sigma, sigma_next = schedule.level(i).noise, schedule.level(i + 1).noise
        v = guided_velocity(family, z, schedule.timesteps[i], target, null, inversion.guidance)
        eta = ETA if i < 2 else 0.0  # eta_stop 0.5 of 4 steps
        z = z + (sigma_next - sigma) * (v + eta * ((z - y0) / sigma - v))
    torch.testing.assert_close(latent(pipe, inversion, TARGET), z, rtol=0, atol=1e-4)


# ------------------------------------------------------------------- FlowEdit on FLUX.1-dev: distilled guidance

@pytest.fixture(scope="module")
def flux():
    return tiny_flow("flux")


@contextmanager
def distilled_calls(pipe):
    """(batch, distilled guidance) of every transformer call inside, as the transformer receives them."""
    calls = []

    def record(module, args, kwargs):
        calls.append((len(kwargs["hidden_states"]), *kwargs["guidance"].unique().tolist()))
    hook = pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        hook.remove()


def test_flowedit_takes_the_papers_distilled_guidances_on_flux_and_none_on_sd3(flow, image):
    name, pipe = flow
    inversion = ptiedit.invert(pipe, image, method="flowedit", steps=STEPS, progress=False)
    distilled = {key: inversion.sampling[key] for key in ("source_distilled_guidance", "target_distilled_guidance")
                 if key in inversion.sampling}
    assert (SOURCE_DISTILLED_GUIDANCE, TARGET_DISTILLED_GUIDANCE) == (1.5, 5.5) and inversion.guidance == (
        1.0 if name == "flux" else TARGET_GUIDANCE)  # FLUX.1: no CFG
    assert distilled == ({"source_distilled_guidance": 1.5, "target_distilled_guidance": 5.5} if name == "flux"
                         else {})
    if name == "sd3":
        with pytest.raises(ValueError, match="^source_distilled_guidance and target_distilled_guidance need a "
                                             "guidance-distilled model .FLUX.1-dev.; this Stable Diffusion 3 model"):
            ptiedit.invert(pipe, image, method="flowedit", steps=STEPS, target_distilled_guidance=5.5, progress=False)
    else:
        with pytest.raises(ValueError, match="^target_distilled_guidance must be between 0 and 50, got 60"):
            ptiedit.invert(pipe, image, method="flowedit", steps=STEPS, target_distilled_guidance=60, progress=False)


def test_flowedit_on_flux_at_equal_distilled_guidances_returns_the_input(flux, image):
    """At the same prompt, source and target at distilled guidance 1.5 (not the model's 3.5): V_tar - V_src
    vanishes, the sampler's own step run at the target's as editing's sampler runs it."""
    family = ptiedit.model_family(flux)
    inversion = ptiedit.invert(flux, image, method="flowedit", prompt=SOURCE, steps=STEPS, progress=False,
                               source_distilled_guidance=1.5, target_distilled_guidance=1.5)
    z0 = inversion.z0
    with family.distilled_guidance_at(1.5):
        torch.testing.assert_close(latent(flux, inversion, SOURCE), z0, rtol=0, atol=1e-5)
    assert family.distilled_guidance == 3.5  # restored
    apart = ptiedit.invert(flux, image, method="flowedit", prompt=SOURCE, steps=STEPS, progress=False)
    with family.distilled_guidance_at(TARGET_DISTILLED_GUIDANCE):
        assert error(latent(flux, apart, SOURCE), z0) > 1e-6  # 1.5 against 5.5 moves it


def test_flowedit_on_flux_runs_the_source_at_1_5_and_its_further_targets_at_5_5(flux, image):
    """n_avg 2: per step the rule's batch of the 2 source velocities receives 1.5 and its further target velocity
    5.5 (the sampler's own target step: the next test)."""
    inversion = ptiedit.invert(flux, image, method="flowedit", prompt=SOURCE, steps=STEPS, n_avg=2, progress=False)
    with distilled_calls(flux) as calls:
        latent(flux, inversion, TARGET)
    assert calls[1::3] == [(2, 1.5)] * STEPS and calls[2::3] == [(1, 5.5)] * STEPS, calls


def test_flowedit_on_flux_samples_its_target_steps_at_5_5(flux, image):
    inversion = ptiedit.invert(flux, image, method="flowedit", prompt=SOURCE, steps=STEPS, progress=False)
    with distilled_calls(flux) as calls:
        latent(flux, inversion, TARGET)
    assert calls == [(1, 5.5), (1, 1.5)] * STEPS, calls


def test_cli_flowedit_on_flux_takes_the_distilled_guidance_knobs(capsys, tmp_path, flow, flow_dir):
    name, _ = flow
    source, inv = write_image(tmp_path / "input.png"), tmp_path / "inv.safetensors"
    code, _, err = run(capsys, "invert", source, "-o", inv, "--model", flow_dir, "--method", "flowedit", "--steps",
                       "3", "--source-distilled-guidance", "2", "--target-distilled-guidance", "4", "--quiet")
    if name == "sd3":
        assert_one_error_line(code, err, "need a guidance-distilled model (FLUX.1-dev)")
        return
    assert code == 0, err
    sampling = ptiedit.Inversion.load(inv).sampling
    assert (sampling["source_distilled_guidance"], sampling["target_distilled_guidance"]) == (2.0, 4.0)
