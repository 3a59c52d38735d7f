"""Full-size architecture check: PTI on random-weight SD, SDXL, SD3 and FLUX pipelines, in every dtype the device runs.

For each folder under benchmarks/architectures that holds an architecture.json (configs only, no weights; see
ptiedit.models.random_weights) and each dtype, it builds the pipeline with seeded random weights, prepares it as
load_pipeline would, and runs: PTI stage 1, an edit at eta 0 / 0.6 / 1, an Inversion save + load (bit-exact round
trip required), and the reconstruction (eta 0) from the loaded file. One table reports seconds per stage, UNet
calls, peak memory of a stage-1 tuning iteration with and without gradient checkpointing, the share of stage-1 time
spent outside the UNet, the eta = 0 replay error and whether the tuning loss fell. Random weights say nothing
about image quality; they exercise shapes, devices, dtypes, memory and time at the real architecture's size.

Exit status 1 when any run gives non-finite values, a replay error above --replay-tol, a save/load round trip that
is not bit-exact, a tuning loss that never falls, or fails outright; 2 for a bad command line.

dtypes: on CUDA fp32, fp16 and bf16 (where the GPU supports it). On the CPU fp32 only: fp16 runs there at about
4-8x fp32's time per UNet call (40 s against 8-17 s for SD 1.5 at a 16x16 latent on 2 shared cores), and bf16
costs about as much as fp32 again, which would take --quick past its 10-minute budget; half-precision numerics on
the CPU are covered by tests/test_half_precision.py on the embedded model. --dtype overrides the choice.

Peak memory is what stage 1 needs above the resident weights, measured over one tuning iteration (UNet forward +
backward with respect to the conditioning, which is where stage 1 peaks) without gradient checkpointing (as stage
1 runs by default) and with it, so the two columns compare the same work. CUDA: torch.cuda.max_memory_allocated
after a reset. CPU: the process's peak resident set (Linux VmHWM, reset through /proc/self/clear_refs) after
glibc's malloc_trim has returned freed memory, so memory freed earlier cannot hide the probe's own allocations
("n/a" elsewhere).

Run: python benchmarks/gpu_check.py [--device cuda|cpu] [--quick] [--arch NAME ...] [--dtype fp16 ...]
                                    [--compare-nti] [--out FILE [--force]]
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ptiedit import __version__
from ptiedit.devices import resolve_device
from ptiedit.editing.edit import edit_latents
from ptiedit.editing.faithful import FaithfulConfig
from ptiedit.images import pixels_sha256
from ptiedit.inversion.null_text import null_text_inversion
from ptiedit.inversion.pti import prompt_tuning_inversion
from ptiedit.inversion.result import Inversion
from ptiedit.models.family import NonFiniteError, model_family
from ptiedit.models.fingerprint import pipeline_fingerprint
from ptiedit.models.loading import DTYPES, prepare_pipeline
from ptiedit.models.random_weights import random_pipeline
from ptiedit.toyworld.render import render
from ptiedit.toyworld.scene import Obj, Scene

ARCHITECTURES = Path(__file__).parent / "architectures"
ETAS = (0.0, 0.6, 1.0)
TARGET = "a photo of a green circle"
QUICK = {"steps": 2, "inner_steps": 1}  # reduced resolution comes from each architecture.json's quick_size
FULL = {"steps": 50, "inner_steps": 10}


@dataclass(frozen=True)
class Settings:
    quick: bool
    steps: int
    inner_steps: int
    early_stop: float  # 0 in quick mode: every step makes its inner_steps Adam updates, so the work is fixed


# Measuring --------------------------------------------------------------------------------------------------------
def synchronizer(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


class UNetTimer:
    """Seconds spent inside the denoiser (UNet or transformer): its forward calls (module hooks), and its backward
    passes, from the gradient reaching its output to the gradient reaching its conditioning input (tensor hooks).
    The few elementwise DDIM and loss ops between them are negligible next to an 860M-parameter UNet."""

    def __init__(self, unet, sync):
        self.unet, self.sync, self.seconds = unet, sync, 0.0

    def __enter__(self):
        self.handles = [self.unet.register_forward_pre_hook(self.forward_start, with_kwargs=True),
                        self.unet.register_forward_hook(self.forward_done)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def forward_start(self, module, args, kwargs):
        self.sync()
        self.start = time.perf_counter()
        cond = kwargs.get("encoder_hidden_states")
        if cond is not None and cond.requires_grad:
            cond.register_hook(self.backward_done)

    def forward_done(self, module, args, output):
        self.sync()
        self.seconds += time.perf_counter() - self.start
        sample = output[0] if isinstance(output, tuple) else output.sample  # transformers are called return_dict=False
        if sample.requires_grad:
            sample.register_hook(self.backward_start)

    def backward_start(self, grad):
        self.sync()
        self.backward_started = time.perf_counter()

    def backward_done(self, grad):
        self.sync()
        self.seconds += time.perf_counter() - self.backward_started


def resident_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


@contextlib.contextmanager
def peak_memory(device: str):
    """Yields a dict whose "mib" is, after the block, the peak memory it allocated above what was live before."""
    result = {"mib": None}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result["mib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
        base = resident_mib("VmRSS")
    except OSError:  # not Linux/glibc: no reliable CPU figure
        yield result
        return
    yield result
    result["mib"] = resident_mib("VmHWM") - base


def tuning_peak(pipe, z0: torch.Tensor, t, null, checkpointing: bool) -> float | None:
    """Peak MiB of one stage-1 tuning iteration (denoiser forward + backward with respect to the conditioning),
    with or without the denoiser's gradient checkpointing."""
    family = model_family(pipe)
    if checkpointing:
        family.denoiser.enable_gradient_checkpointing()
    try:
        cond = null.map(lambda c: c.detach().clone().requires_grad_(True))
        with peak_memory(str(family.device)) as peak:
            family(z0, t, cond).square().sum().backward()
        return peak["mib"]
    finally:
        family.denoiser.disable_gradient_checkpointing()


# One check --------------------------------------------------------------------------------------------------------
def test_image(size: int):
    """A procedural picture (random weights make its content irrelevant; it only has to be a real image)."""
    return render(Scene("white", (Obj("circle", "red", "big", "center"),))).resize((size, size))


def build(folder: Path, dtype: torch.dtype, device: str):
    pipe = random_pipeline(folder, seed=0, dtype=dtype)
    pipe = prepare_pipeline(pipe, device)
    pipe.ptiedit_model_name = f"random {folder.name}"
    return pipe


def timed(fn, sync):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def bit_exact(a: Inversion, b: Inversion) -> bool:
    ta, tb = a.tensors(), b.tensors()
    return ta.keys() == tb.keys() and all(torch.equal(ta[k].cpu(), tb[k].cpu()) for k in ta)


def check_one(folder: Path, arch: dict, dtype_name: str, device: str, settings: Settings) -> dict:
    """Every stage of one (architecture, dtype) pair; returns one table row."""
    sync = synchronizer(device)
    size = arch["quick_size"] if settings.quick else arch["size"]
    row = {"arch": folder.name, "dtype": dtype_name, "size": size, "problems": []}
    (pipe, family), row["setup_s"] = timed(lambda: _setup(folder, DTYPES[dtype_name], device), sync)
    image = test_image(size)
    z0 = family.encode_images([image])
    schedule = family.schedule(settings.steps, image.size)
    null, guidance = family.null_conditioning(), family.default_guidance

    # 1. PTI stage 1 (c_T from the empty prompt, as ptiedit.invert does by default).
    calls = family.forward_calls
    with UNetTimer(family.denoiser, sync) as unet_time:
        result, row["stage1_s"] = timed(lambda: prompt_tuning_inversion(
            family, z0, schedule, prompt=null, null=null, guidance=guidance, inner_steps=settings.inner_steps,
            early_stop=settings.early_stop, progress=False), sync)
    row["stage1_calls"] = family.forward_calls - calls
    row["outside_unet"] = 1 - unet_time.seconds / row["stage1_s"]
    z_T, cond, uncond, stats, _ = result.item(0)
    fell = sum(after < before for after, before in zip(stats["loss"], stats["initial_loss"]))
    row["loss_fell"] = f"{fell}/{len(stats['loss'])}"
    if fell == 0:
        row["problems"].append("tuning loss never fell")
    fingerprint = {**pipeline_fingerprint(pipe), "image_sha256": pixels_sha256(image), "version": __version__}
    inversion = Inversion("pti", z_T, schedule.timesteps, cond, uncond,
                          {"steps": settings.steps, "guidance": guidance, "prompt": "",
                           "inner_steps": settings.inner_steps}, fingerprint, stats)

    # 2. An edit at three etas in one batch, decoded (decode_latents refuses non-finite latents and images).
    calls = family.forward_calls
    _, row["edit_s"] = timed(lambda: family.decode_latents(
        edit_latents(pipe, inversion, TARGET, list(ETAS), progress=False, faithful=faithful_config(pipe))), sync)
    row["edit_calls"] = family.forward_calls - calls

    # 3. Save and load: the file must hold exactly the tensors stage 1 made.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "check.safetensors"
        loaded, row["saveload_s"] = timed(lambda: (inversion.save(path), Inversion.load(path))[1], sync)
    if not bit_exact(inversion, loaded):
        row["problems"].append("save/load changed the tensors")

    # 4. Reconstruction (eta 0) from the loaded file: replays stage 1's own latents.
    calls = family.forward_calls
    (replay, _), row["recon_s"] = timed(lambda: _reconstruct(pipe, loaded), sync)
    row["recon_calls"] = family.forward_calls - calls
    reference = result.reconstruction
    row["replay_err"] = float((replay - reference).square().mean().sqrt() / reference.square().mean().sqrt())

    # 5. Stage 1's peak: one tuning iteration (its latents are tiny), without and with gradient checkpointing.
    t = schedule.timesteps[len(schedule) // 2]
    row["peak_mib"], row["peak_ckpt_mib"] = (tuning_peak(pipe, z0, t, null, c) for c in (False, True))
    return row


def _setup(folder: Path, dtype: torch.dtype, device: str):
    pipe = build(folder, dtype, device)
    pipeline_fingerprint(pipe)  # computed once per pipeline; counted here, not in the first edit
    return pipe, model_family(pipe)


def faithful_config(pipe) -> FaithfulConfig | None:
    """The edit's faithful settings: the defaults, without self-attention injection on transformers (P2P's
    attention processors, editing/p2p.py, are the UNet's)."""
    return None if hasattr(pipe, "unet") else FaithfulConfig(self_replace=0.0)


def _reconstruct(pipe, inversion: Inversion):
    latent = edit_latents(pipe, inversion, "", [0.0], progress=False)
    return latent, model_family(pipe).decode_latents(latent)


def compare_nti(folder: Path, arch: dict, dtype_name: str, device: str, settings: Settings) -> list[dict]:
    """PTI stage 1 against null-text inversion at the same fixed inner steps (no early stop), in one process."""
    sync = synchronizer(device)
    pipe, family = _setup(folder, DTYPES[dtype_name], device)
    size = arch["quick_size"] if settings.quick else arch["size"]
    image = test_image(size)
    z0 = family.encode_images([image])
    schedule = family.schedule(settings.steps, image.size)
    null, source = family.null_conditioning(), family.encode_prompt("a photo of a red circle")
    guidance = family.default_guidance
    runs = {"pti": lambda: prompt_tuning_inversion(family, z0, schedule, prompt=null, null=null, guidance=guidance,
                                                   inner_steps=settings.inner_steps, early_stop=0.0, progress=False),
            "null_text": lambda: null_text_inversion(family, z0, schedule, prompt=source, null=null,
                                                     guidance=guidance, inner_steps=settings.inner_steps,
                                                     early_stop=0.0, progress=False)}
    rows = []
    for method, run in runs.items():
        calls = family.forward_calls
        result, seconds = timed(run, sync)
        losses = result.stats["per_image"][0]["loss"]
        rows.append({"arch": folder.name, "dtype": dtype_name, "size": size, "method": method, "seconds": seconds,
                     "calls": family.forward_calls - calls, "final_loss": sum(losses) / len(losses)})
    return rows


# Table ------------------------------------------------------------------------------------------------------------
COLUMNS = [("arch", "arch", "{}"), ("dtype", "dtype", "{}"), ("size", "px", "{}"), ("setup_s", "setup s", "{:.1f}"),
           ("stage1_s", "stage 1 s", "{:.1f}"), ("outside_unet", "outside UNet", "{:.1%}"),
           ("edit_s", "edit (3 etas) s", "{:.1f}"), ("saveload_s", "save+load s", "{:.2f}"),
           ("recon_s", "reconstruct s", "{:.1f}"), ("calls", "UNet calls s1/edit/recon", "{}"),
           ("peak_mib", "peak MiB", "{:.0f}"), ("peak_ckpt_mib", "peak MiB ckpt", "{:.0f}"),
           ("replay_err", "replay err", "{:.1e}"), ("loss_fell", "loss fell", "{}"), ("status", "status", "{}")]


def cell(row: dict, key: str, fmt: str) -> str:
    if key == "calls":
        return "/".join(str(row.get(k, "-")) for k in ("stage1_calls", "edit_calls", "recon_calls"))
    value = row.get(key)
    return "n/a" if value is None else fmt.format(value)


def markdown(header: list[str], lines: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(line) + " |" for line in [header, ["---"] * len(header), *lines])


def check_table(rows: list[dict]) -> str:
    return markdown([title for _, title, _ in COLUMNS], [[cell(r, key, fmt) for key, _, fmt in COLUMNS] for r in rows])


def nti_table(rows: list[dict]) -> str:
    return markdown(["arch", "dtype", "px", "method", "stage 1 s", "UNet calls", "s per call", "mean final loss"],
                    [[r["arch"], r["dtype"], str(r["size"]), r["method"], f"{r['seconds']:.1f}", str(r["calls"]),
                      f"{r['seconds'] / r['calls']:.3f}", f"{r['final_loss']:.2e}"] for r in rows])


# Command line -----------------------------------------------------------------------------------------------------
def find_architectures(root: Path, names: list[str] | None) -> list[tuple[Path, dict]]:
    found = {p.parent.name: p.parent for p in sorted(root.glob("*/architecture.json"))}
    unknown = sorted(set(names or []) - set(found))
    if unknown:
        raise ValueError(f"no architecture {', '.join(unknown)} in {root} (have: {', '.join(found) or 'none'})")
    return [(found[n], json.loads((found[n] / "architecture.json").read_text())) for n in (names or found)]


def device_name(device: str) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else device


def device_dtypes(device: str) -> list[str]:
    if device.startswith("cuda"):
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    return ["fp32"]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help=f"each architecture's quick_size, {QUICK['steps']} steps, {QUICK['inner_steps']} inner steps")
    parser.add_argument("--arch", nargs="+", help="folder names under --architectures (default: all)")
    parser.add_argument("--architectures", type=Path, default=ARCHITECTURES, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", nargs="+", choices=["fp32", "fp16", "bf16"], help="default: what the device runs")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--inner-steps", type=int)
    parser.add_argument("--replay-tol", type=float, default=0.0,
                        help="largest relative RMS error of eta = 0 against stage 1 (default 0: bit-exact)")
    parser.add_argument("--compare-nti", action="store_true",
                        help="also PTI against null-text inversion at fixed inner steps, same run")
    parser.add_argument("--out", type=Path, help="also write the table(s) to this Markdown file")
    parser.add_argument("--force", action="store_true", help="overwrite --out")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.force:
        parser.error(f"{args.out} exists; pass --force to overwrite it")
    try:
        args.device = resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        architectures = find_architectures(args.architectures, args.arch)
    except ValueError as error:
        print(f"gpu_check: {error}", file=sys.stderr)
        return 2
    defaults = QUICK if args.quick else FULL
    settings = Settings(args.quick, defaults["steps"] if args.steps is None else args.steps,
                        defaults["inner_steps"] if args.inner_steps is None else args.inner_steps,
                        0.0 if args.quick else 1e-4)
    dtypes = args.dtype or device_dtypes(args.device)
    start, rows, nti_rows = time.perf_counter(), [], []
    for folder, arch in architectures:
        for dtype in dtypes:
            print(f"[{time.perf_counter() - start:6.0f} s] {arch['name']} in {dtype} on {args.device} ...",
                  file=sys.stderr, flush=True)
            try:
                row = check_one(folder, arch, dtype, args.device, settings)
            except NonFiniteError as error:
                row = {"arch": folder.name, "dtype": dtype, "problems": [f"non-finite: {error}"]}
            except Exception as error:  # one broken pair must not hide the others' rows
                row = {"arch": folder.name, "dtype": dtype, "problems": [f"{type(error).__name__}: {error}"]}
            if row.get("replay_err") is not None and row["replay_err"] > args.replay_tol:
                row["problems"].append(f"replay error {row['replay_err']:.1e} > {args.replay_tol:g}")
            gc.collect()  # the pipeline and its adapter refer to each other: free this one before building the next
            row["status"] = "ok" if not row["problems"] else "FAIL"
            rows.append(row)
            print(check_table([row]).splitlines()[-1], file=sys.stderr, flush=True)  # survives an interrupted run
            if args.compare_nti:
                try:
                    nti_rows += compare_nti(folder, arch, dtype, args.device, settings)
                except Exception as error:
                    row["problems"].append(f"PTI vs NTI: {type(error).__name__}: {error}")
                gc.collect()
    mode = "quick" if args.quick else "full"
    text = (f"gpu_check ({mode}: {settings.steps} steps, {settings.inner_steps} inner steps, early stop "
            f"{settings.early_stop:g}, each family's default guidance) on {device_name(args.device)}, torch {torch.__version__}, "
            f"{time.perf_counter() - start:.0f} s in all\n\n{check_table(rows)}\n")
    if nti_rows:
        text += f"\nPTI against null-text inversion, {settings.inner_steps} inner steps, no early stop\n\n{nti_table(nti_rows)}\n"
    problems = [f"{r['arch']} {r['dtype']}: {p}" for r in rows for p in r["problems"]]
    text += "".join(f"\nFAIL {p}" for p in problems) + ("\n" if problems else "")
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
