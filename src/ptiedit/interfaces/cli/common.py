"""What the subcommands share: argument checks, the options they have in common, the progress display and
messages, loading the model, and PTI stage 1 as the commands run it."""
from __future__ import annotations

import argparse
import inspect
import math
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...devices import DEVICES
from ...editing.edit import DEFAULT_MODE, MODES
from ...images import MAX_PIXELS
from ...inversion.flowedit import (N_AVG, N_MAX, SOURCE_DISTILLED_GUIDANCE, SOURCE_GUIDANCE, TARGET_DISTILLED_GUIDANCE,
                                   TARGET_GUIDANCE)
from ...inversion.invert import METHODS, default_guidance, invert
from ...inversion.rf_inversion import ETA, ETA_START, ETA_STOP, GAMMA
from ...inversion.result import Inversion
from ...models.family import model_family
from ...models.loading import load_pipeline, valid_steps
from ..options import DEFAULTS as SETTING_DEFAULTS
from ..options import INVERSION_SETTINGS, RANGES, check_setting

DEFAULTS = {name: SETTING_DEFAULTS[name] for name in INVERSION_SETTINGS}
FLOW_OPTIONS = ("gamma", "eta_rf", "eta_start", "eta_stop", "n_max", "n_avg", "source_guidance",
                "source_distilled_guidance", "target_distilled_guidance")  # add_flow_options

IMAGES_HELP = f"""\
images: any file Pillow reads (PNG, JPEG, WebP, ...; RGBA, greyscale, palette, 16-bit), turned upright by its
  EXIF orientation, transparency composited over white, at most {MAX_PIXELS:,} pixels. The model sees the
  whole image, never a crop, resized to at most its own pixel count (64x64 for the embedded model, 512x512
  for SD 1.5) with both sides multiples of what its VAE and UNet need (16 px for the embedded model, 8 for
  SD). Of those sizes it takes the one that best trades stretch against lost pixels (half the pixels weigh
  as much as a 19% stretch): a 3:2 photo becomes 80x48 on the embedded model and 624x416 on SD 1.5, a 2:1
  one 64x32 and 720x360. Results are written at that size; --keep-size resizes them to exactly the input's
  width x height, which also undoes the stretch.
"""


def check_prompt(text: str, flag: str) -> str:
    if not text.strip():
        raise ValueError(f"{flag} is empty")
    return text


def check_ranges(args: argparse.Namespace) -> None:
    """The settings' ranges (options.RANGES) before the model loads; check_steps then narrows --steps."""
    for name in (*INVERSION_SETTINGS, "seed"):
        if getattr(args, name, None) is not None:
            check_setting(name, getattr(args, name), f"--{name.replace('_', '-')}")
    if getattr(args, "max_batch", None) is not None and args.max_batch < 1:
        raise ValueError(f"--max-batch must be at least 1, got {args.max_batch}")


def parse_etas(values: list[str], allow_extrapolation: bool) -> list[float]:
    """--eta may be repeated and each may be a comma list; duplicates are dropped, order kept."""
    etas = []
    for part in (p.strip() for value in values for p in value.split(",")):
        try:
            eta = float(part)
        except ValueError:
            raise ValueError(f"--eta {part!r} is not a number") from None
        low, high = RANGES["eta"]
        if not (math.isfinite(eta) and eta >= low and (eta <= high or allow_extrapolation)):
            raise ValueError(f"--eta must be in [{low}, {high}] (above {high} only with --allow-extrapolation), "
                             f"got {part}")
        if eta not in etas:
            etas.append(eta)
    return etas


def check_suffix(path: str, suffix: str, what: str) -> Path:
    if Path(path).suffix.lower() != suffix:
        raise ValueError(f"{path}: {what} must be a {suffix} file")
    return Path(path)


def check_steps(pipe, args: argparse.Namespace) -> None:
    """--steps within what the model's scheduler config allows (its timestep offset can cost one step)."""
    allowed = valid_steps(pipe)
    if args.steps is not None and args.steps not in allowed:
        raise ValueError(f"--steps must be between {allowed.start} and {allowed.stop - 1} for this model's "
                         f"scheduler, got {args.steps}")


def say(args: argparse.Namespace, text: str) -> None:
    """A message on stdout; tqdm.write lifts an open progress display out of its way and redraws it."""
    if not args.quiet:
        tqdm.write(text, file=sys.stdout)


@contextmanager
def progress_display(args: argparse.Namespace):
    """The command's one progress display: a tqdm bar that the library's stages (DDIM inversion, prompt
    tuning, editing) each add their steps to and name while they run; False (none) with --quiet."""
    if args.quiet:
        yield False
        return
    bar = tqdm(total=0, unit="step", file=sys.stderr, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()

MEMORY_OPTIONS = ("gradient_checkpointing", "vae_slicing", "vae_tiling", "cpu_offload")


def open_model(args: argparse.Namespace):
    """The pipeline for --model on --device in --dtype, with the memory options. Commands defined elsewhere
    may not have added the memory options: they default to off."""
    memory = {name: getattr(args, name, False) for name in MEMORY_OPTIONS}
    return load_pipeline(args.model, device=args.device, dtype=args.dtype, **memory)


def model_image(pipe, image):
    """The image as the model sees it (what invert() inverts and fingerprints)."""
    return model_family(pipe).fit(image)


def accepts(method: str, option: str) -> bool:
    return option in inspect.signature(METHODS[method]).parameters


def check_method(args: argparse.Namespace) -> None:
    """--inner-steps only for the methods that tune at each step, the flow baselines' options for theirs."""
    method = args.method or "pti"
    for name in ("inner_steps", *FLOW_OPTIONS):
        if getattr(args, name, None) is not None and not accepts(method, name):
            takers = " and ".join(m for m in METHODS if accepts(m, name))
            raise ValueError(f"--{name.replace('_', '-')} applies to --method {takers}, not {method}")


def run_inversion(pipe, image, args: argparse.Namespace, init_prompt: str, progress) -> Inversion:
    """Stage 1 with --method (default pti); SDEdit draws its noise from --seed, the others are deterministic."""
    method = getattr(args, "method", None) or "pti"
    torch.manual_seed(args.seed)  # set and recorded for every method
    settings = {name: DEFAULTS[name] if getattr(args, name) is None else getattr(args, name) for name in DEFAULTS}
    if args.guidance is None:  # the family's own (FLUX.1 is guidance-distilled: 1; SD3 7), FlowEdit's on SD3
        settings["guidance"] = default_guidance(method, model_family(pipe).default_guidance)
    options = {name: value for name, value in settings.items() if name != "inner_steps" or accepts(method, name)}
    options.update({name: getattr(args, name) for name in FLOW_OPTIONS if getattr(args, name, None) is not None})
    if accepts(method, "seed"):
        options["seed"] = args.seed
    inversion = invert(pipe, image, method=method, prompt=init_prompt, progress=progress, **options)
    inversion.settings["seed"] = args.seed
    return inversion


def eta_name(eta: float) -> str:
    """Two decimals, or every digit where two would merge distinct etas."""
    return f"{eta:.2f}" if round(eta, 2) == eta else repr(eta)


def eta_files(out: Path, etas: list[float]) -> dict[float, Path]:
    """OUT itself for one eta; OUT_eta0.80.png and so on for several."""
    if len(etas) == 1:
        return {etas[0]: out}
    return {eta: out.with_name(f"{out.stem}_eta{eta_name(eta)}{out.suffix}") for eta in etas}


def one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def add_common_options(parser: argparse.ArgumentParser, show_model: bool = True) -> None:
    group = parser.add_argument_group("model and run")
    group.add_argument("--model", metavar="ID_OR_DIR", help="diffusers Stable Diffusion folder or hub id "
                       "(default: the embedded shapes-world model)" if show_model else argparse.SUPPRESS)
    add_device_options(parser, group)
    group.add_argument("--quiet", action="store_true", help="no progress display or messages")
    group.add_argument("--force", action="store_true", help="overwrite existing output files")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of unexpected errors")


def add_device_options(parser: argparse.ArgumentParser, group=None) -> None:
    """--device, --dtype and the memory and speed options (shared with `ptiedit ui`)."""
    group = group or parser
    group.add_argument("--device", default="auto", metavar="DEVICE", help=f"torch device: {DEVICES} (default "
                       "auto: CUDA if available, then MPS, else the CPU)")
    group.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="weights' precision (default fp32 on "
                       "the CPU, fp16 on GPUs; fp16 on the CPU works but is slow). Prompt tuning runs in fp32")
    memory = parser.add_argument_group("memory and speed")
    memory.add_argument("--gradient-checkpointing", action="store_true", help="recompute UNet activations in "
                        "prompt tuning's backward pass: less memory, more time (stage 1)")
    memory.add_argument("--vae-slicing", action="store_true", help="encode/decode one image at a time")
    memory.add_argument("--vae-tiling", action="store_true", help="encode/decode large images in tiles")
    memory.add_argument("--cpu-offload", action="store_true", help="keep each model on the CPU until it runs "
                        "(accelerate model offload; needs a GPU)")


def add_mode_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES, default=DEFAULT_MODE, help="faithful (default): change only what "
                        "an automatic mask finds the target changes, keep the reconstruction elsewhere; paper: the "
                        "paper's plain stage 2, which resamples the whole picture")


def add_method_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=tuple(METHODS), help="inversion method (default pti); the others are "
                        "the baselines: their init prompt is the source caption and they edit at eta 1 by default")


def add_flow_options(parser: argparse.ArgumentParser) -> None:
    """The knobs of the flow-only baselines, at their papers' defaults (inversion/rf_inversion.py, flowedit.py)."""
    group = parser.add_argument_group("flow baselines (SD3, FLUX.1): --method rf_inversion, flowedit")
    group.add_argument("--gamma", type=float, help="RF-Inversion: forward controller strength toward a fixed noise, "
                       f"0 (plain flow inversion)..1 (default {GAMMA})")
    group.add_argument("--eta-rf", type=float, help="RF-Inversion: reverse controller strength toward the image's "
                       f"latent while editing, 0 (off)..1 (default {ETA})")
    group.add_argument("--eta-start", type=float, help="RF-Inversion: share of the sampling steps before the reverse "
                       f"controller starts, 0..1 (default {ETA_START})")
    group.add_argument("--eta-stop", type=float, help="RF-Inversion: share of the sampling steps after which it "
                       f"stops, 0..1 (default {ETA_STOP})")
    group.add_argument("--n-max", type=int, help="FlowEdit: how many of the last --steps steps it runs "
                       f"(default {N_MAX}, of 50)")
    group.add_argument("--n-avg", type=int, help=f"FlowEdit: noises averaged per step (default {N_AVG})")
    group.add_argument("--source-guidance", type=float, help=f"FlowEdit: the source branch's CFG scale (default "
                       f"{SOURCE_GUIDANCE} where --guidance, the target's, is real CFG: {TARGET_GUIDANCE} on SD3; "
                       "the same 1 on FLUX.1, whose guidance is the distilled input below)")
    group.add_argument("--source-distilled-guidance", type=float, help="FlowEdit on FLUX.1-dev: the source branch's "
                       f"distilled guidance input (default {SOURCE_DISTILLED_GUIDANCE}, the paper's)")
    group.add_argument("--target-distilled-guidance", type=float, help="FlowEdit on FLUX.1-dev: the target branch's "
                       f"distilled guidance input (default {TARGET_DISTILLED_GUIDANCE}, the paper's)")


def add_inversion_options(parser: argparse.ArgumentParser, with_target: bool) -> None:
    group = parser.add_argument_group("inversion (PTI stage 1)")
    (steps_low, steps_high), (low, high), (inner_low, inner_high) = (RANGES[name] for name in INVERSION_SETTINGS)
    group.add_argument("--steps", type=int, help=f"DDIM steps, {steps_low} up to the scheduler's training timesteps "
                       f"(at most {steps_high}; default {DEFAULTS['steps']})")
    group.add_argument("--guidance", type=float, help=f"classifier-free guidance scale, {low}..{high} "
                       f"(default: the model's, {DEFAULTS['guidance']} on SD/SDXL, 7 on SD3, 1 on FLUX.1; "
                       f"--method flowedit: {TARGET_GUIDANCE} on SD3)")
    group.add_argument("--inner-steps", type=int, help=f"Adam steps tuning c_t at each step, {inner_low}..{inner_high} "
                       f"(default {DEFAULTS['inner_steps']})")
    init = group.add_mutually_exclusive_group() if with_target else group
    init.add_argument("--init-prompt", metavar="TEXT", help="prompt c_T starts from "
                      "(default: the empty prompt, so one inversion serves any target)")
    if with_target:
        init.add_argument("--init-from-target", action="store_true", help="start c_T from the target prompt")
    group.add_argument("--seed", type=int, default=SETTING_DEFAULTS["seed"], help="torch seed, recorded in the outputs "
                       f"({RANGES['seed'][0]}..{RANGES['seed'][1]}; default {SETTING_DEFAULTS['seed']})")
