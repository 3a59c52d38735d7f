"""The `ptiedit` command line: edit, invert, reconstruct and demo, plus bench, ui and toyworld train.

Anything a user can get wrong ends in one line on stderr, `ptiedit: error: ...`, and exit status 2; an
unexpected failure prints its type and message and exits 1 (`ptiedit --debug ...` shows the traceback);
Ctrl-C exits 130. Outputs are all checked before the model loads, and written atomically.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import math
import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from .. import __path__ as package_path
from .. import __version__
from ..demo import ETAS as DEMO_ETAS
from ..devices import DEVICES
from ..demo import demo_files, run_demo
from ..models.family import PromptTruncatedWarning, model_family
from ..editing.edit import DEFAULT_ETA, DEFAULT_MODE, MODES, edit, reconstruct
from ..images import MAX_PIXELS, load_image, pixels_sha256, restore_size
from ..editing.p2p import P2PConfig
from ..inversion.invert import METHODS, invert
from ..models.fingerprint import pipeline_fingerprint
from ..inversion.result import Inversion
from ..models.loading import load_pipeline, valid_steps
from ..outputs import check_folder, check_outputs, label_grid, result_settings, write_png
from .options import DEFAULTS as SETTING_DEFAULTS
from .options import INVERSION_SETTINGS, RANGES, check_setting

DEFAULTS = {name: SETTING_DEFAULTS[name] for name in INVERSION_SETTINGS}
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

# Subcommands implemented elsewhere: module (exposing add_arguments and run), optional extra, help.
DELEGATED = {
    "bench": ("ptiedit.evaluation.bench", "eval", "benchmark inversion and editing methods"),
    "ui": ("ptiedit.interfaces.ui", "ui", "start the web app"),
    "batch": ("ptiedit.interfaces.batch", None, "edit every row of a CSV/JSONL manifest, on one or more processes"),
    "toyworld train": ("ptiedit.training.command", None, "train the embedded shapes-world model"),
}


class UsageError(ValueError):
    """A command line argparse rejects."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse reporting usage errors as one line instead of the usage text plus a message."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------------------------------- checks

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


def check_reusable(inversion: Inversion, path: Path, args: argparse.Namespace, init_prompt: str | None) -> None:
    """Settings given on the command line must be the ones the reused inversion was made with."""
    if getattr(args, "method", None) not in (None, inversion.method):
        raise ValueError(f"--method {args.method} differs from the one {path} was made with ({inversion.method}); "
                         "leave it out, or pass a new --inversion file")
    given = {"steps": args.steps, "guidance": args.guidance, "inner_steps": args.inner_steps, "prompt": init_prompt}
    for key, value in given.items():
        if value is not None and inversion.settings.get(key) != value:
            flag = "the init prompt" if key == "prompt" else f"--{key.replace('_', '-')}"
            raise ValueError(f"{flag} {value!r} differs from the one {path} was made with "
                             f"({inversion.settings.get(key)!r}); leave it out, or pass a new --inversion file")


# ----------------------------------------------------------------------------------------------------- steps

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
    """--inner-steps only for the methods that tune at each step."""
    method = args.method or "pti"
    if args.inner_steps is not None and not accepts(method, "inner_steps"):
        tuned = " and ".join(name for name in METHODS if accepts(name, "inner_steps"))
        raise ValueError(f"--inner-steps applies to --method {tuned}, not {method}")


def run_inversion(pipe, image, args: argparse.Namespace, init_prompt: str, progress) -> Inversion:
    """Stage 1 with --method (default pti); SDEdit draws its noise from --seed, the others are deterministic."""
    method = getattr(args, "method", None) or "pti"
    torch.manual_seed(args.seed)  # set and recorded for every method
    settings = {name: DEFAULTS[name] if getattr(args, name) is None else getattr(args, name) for name in DEFAULTS}
    options = {name: value for name, value in settings.items() if name != "inner_steps" or accepts(method, name)}
    if accepts(method, "seed"):
        options["seed"] = args.seed
    inversion = invert(pipe, image, method=method, prompt=init_prompt, progress=progress, **options)
    inversion.settings["seed"] = args.seed
    return inversion


def p2p_config(args: argparse.Namespace) -> P2PConfig | None:
    """--p2p with its fractions, checked against options.RANGES; None without --p2p (its options then refused)."""
    given = [flag for flag, value in (("--cross-replace", args.cross_replace), ("--self-replace", args.self_replace),
                                      ("--source-prompt", args.source_prompt)) if value is not None]
    if not args.p2p:
        if given:
            raise ValueError(f"{given[0]} needs --p2p")
        return None
    if args.source_prompt is not None:
        check_prompt(args.source_prompt, "--source-prompt")
    fractions = {name: check_setting(name, getattr(args, name), f"--{name.replace('_', '-')}")
                 for name in ("cross_replace", "self_replace") if getattr(args, name) is not None}
    return P2PConfig(**fractions, source_prompt=args.source_prompt)


def p2p_settings(config: P2PConfig | None) -> dict:
    """What a result PNG records of Prompt-to-Prompt: nothing without it."""
    if config is None:
        return {}
    return {"p2p": True, "cross_replace": config.cross_replace, "self_replace": config.self_replace,
            **({"source_prompt": config.source_prompt} if config.source_prompt is not None else {})}


def eta_name(eta: float) -> str:
    """Two decimals, or every digit where two would merge distinct etas."""
    return f"{eta:.2f}" if round(eta, 2) == eta else repr(eta)


def eta_files(out: Path, etas: list[float]) -> dict[float, Path]:
    """OUT itself for one eta; OUT_eta0.80.png and so on for several."""
    if len(etas) == 1:
        return {etas[0]: out}
    return {eta: out.with_name(f"{out.stem}_eta{eta_name(eta)}{out.suffix}") for eta in etas}


# -------------------------------------------------------------------------------------------------- commands

def cmd_edit(args: argparse.Namespace) -> int:
    # 1. Check every argument and output, read the reused inversion and the input, before the model loads.
    target = check_prompt(args.target, "--target")
    check_ranges(args)
    check_method(args)
    p2p = p2p_config(args)
    if args.init_prompt is not None:
        check_prompt(args.init_prompt, "--init-prompt")
    init_prompt = target if args.init_from_target else args.init_prompt
    inversion_path = Path(args.inversion) if args.inversion else None
    reuse = inversion_path is not None and inversion_path.exists()
    if reuse:
        inversion = Inversion.load(inversion_path)
        check_reusable(inversion, inversion_path, args, init_prompt)
    # PTI edits at DEFAULT_ETA; the other methods on the target prompt alone (eta = 1), as the bench runs them.
    method = inversion.method if reuse else args.method or "pti"
    etas = parse_etas(args.eta or [str(DEFAULT_ETA if method == "pti" else 1.0)], args.allow_extrapolation)
    out = check_suffix(args.output, ".png", "the output")
    files = eta_files(out, etas)
    mask_files = eta_files(check_suffix(args.mask, ".png", "--mask"), etas) if args.mask else {}
    grid = out.with_name(f"{out.stem}_grid{out.suffix}") if len(etas) > 1 else None
    writes_inversion = inversion_path is not None and not reuse
    if writes_inversion:
        check_suffix(args.inversion, ".safetensors", "--inversion")
    outputs, inputs = [*files.values(), *mask_files.values()], [args.input]
    outputs += [grid] if grid is not None else []
    outputs += [inversion_path] if writes_inversion else []
    inputs += [inversion_path] if reuse else []
    check_outputs(outputs, force=args.force, inputs=inputs)
    image = load_image(args.input)
    # 2. Load the model; reuse the inversion if it fits it and the image, else invert (stage 1).
    pipe = open_model(args)
    check_steps(pipe, args)
    if reuse:
        inversion.check_compatible(pipeline_fingerprint(pipe), args.allow_changed_weights)
        if inversion.fingerprint.get("image_sha256") != pixels_sha256(model_image(pipe, image)):
            raise ValueError(f"{inversion_path} was made from another image than {args.input}")
    # 3. Invert (PTI stage 1) unless reused, and edit (PTI stage 2) under one progress display. The grid shows
    # the reconstruction (eta = 0) too: sampled in the same batch.
    sampled = etas if grid is None or 0.0 in etas else [0.0, *etas]
    with progress_display(args) as progress:
        if not reuse:
            inversion = run_inversion(pipe, image, args, init_prompt or "", progress)
            if writes_inversion:
                inversion.save(inversion_path)
                say(args, f"wrote {inversion_path}")
        images, masks = edit(pipe, inversion, target, sampled, progress=progress, mode=args.mode, p2p=p2p,
                             max_batch=args.max_batch, allow_extrapolation=args.allow_extrapolation, return_masks=True,
                             allow_changed_weights=args.allow_changed_weights)
        results, masks = dict(zip(sampled, images)), dict(zip(sampled, masks))
    recorded = {"seed": args.seed, "mode": args.mode, **p2p_settings(p2p)}
    for eta, path in files.items():
        result = restore_size(results[eta], image) if args.keep_size else results[eta]
        write_png(result, path, result_settings(inversion, prompt=target, eta=eta, **recorded))
        say(args, f"wrote {path}")
    for eta, path in mask_files.items():  # a mask stays black and white: resized by nearest neighbour
        mask = masks[eta].resize(image.size, Image.NEAREST) if args.keep_size else masks[eta]
        write_png(mask, path, result_settings(inversion, prompt=target, eta=eta, **recorded))
        say(args, f"wrote {path}")
    if grid is not None:
        row = [model_image(pipe, image), results[0.0], *(results[eta] for eta in etas)]
        picture = label_grid([row], ["input", "reconstruction", *(f"eta {eta_name(eta)}" for eta in etas)])
        write_png(picture, grid, result_settings(inversion, prompt=target, etas=etas, **recorded))
        say(args, f"wrote {grid}")
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    check_ranges(args)
    check_method(args)
    init_prompt = "" if args.init_prompt is None else check_prompt(args.init_prompt, "--init-prompt")
    out = check_suffix(args.output, ".safetensors", "the output")
    check_outputs([out], force=args.force, inputs=[args.input])
    image = load_image(args.input)
    pipe = open_model(args)
    check_steps(pipe, args)
    with progress_display(args) as progress:
        inversion = run_inversion(pipe, image, args, init_prompt, progress)
    inversion.save(out)
    say(args, f"wrote {out}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    out = check_suffix(args.output, ".png", "the output")
    check_outputs([out], force=args.force, inputs=[args.inversion])
    inversion = Inversion.load(args.inversion)
    pipe = open_model(args)
    inversion.check_compatible(pipeline_fingerprint(pipe))
    with progress_display(args) as progress:
        image = reconstruct(pipe, inversion, progress=progress)
    write_png(image, out, result_settings(inversion, prompt="", eta=0.0, seed=inversion.settings.get("seed")))
    say(args, f"wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; the demo writes into a folder")
    if folder.is_dir():
        check_outputs(demo_files(folder), force=args.force)
    else:  # created with its parents; the nearest existing one must take it
        check_folder(next(parent for parent in folder.absolute().parents if parent.exists()))
    pipe = open_model(args)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with progress_display(args) as progress:
        run_demo(pipe, folder, progress=progress)
    say(args, f"wrote {len(demo_files(folder))} files to {folder} (grid.png shows them all) "
              f"in {time.perf_counter() - start:.0f} s")
    return 0


# ---------------------------------------------------------------------------------------------------- parser

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


def add_p2p_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Prompt-to-Prompt (attention control from the reconstruction branch)")
    default = P2PConfig()
    group.add_argument("--p2p", action="store_true", help="edit with Prompt-to-Prompt's word swap")
    group.add_argument("--cross-replace", type=float, metavar="FRACTION", help="share of the steps (the noisiest) "
                       f"whose cross-attention comes from the source branch, 0..1 (default {default.cross_replace})")
    group.add_argument("--self-replace", type=float, metavar="FRACTION", help="share of the steps whose coarse "
                       f"self-attention comes from the source branch, 0..1 (default {default.self_replace})")
    group.add_argument("--source-prompt", metavar="TEXT", help="the words the source branch stands for, to align "
                       "tokens (default: the prompt the image was inverted with)")


def add_inversion_options(parser: argparse.ArgumentParser, with_target: bool) -> None:
    group = parser.add_argument_group("inversion (PTI stage 1)")
    (steps_low, steps_high), (low, high), (inner_low, inner_high) = (RANGES[name] for name in INVERSION_SETTINGS)
    group.add_argument("--steps", type=int, help=f"DDIM steps, {steps_low} up to the scheduler's training timesteps "
                       f"(at most {steps_high}; default {DEFAULTS['steps']})")
    group.add_argument("--guidance", type=float, help=f"classifier-free guidance scale, {low}..{high} "
                       f"(default {DEFAULTS['guidance']})")
    group.add_argument("--inner-steps", type=int, help=f"Adam steps tuning c_t at each step, {inner_low}..{inner_high} "
                       f"(default {DEFAULTS['inner_steps']})")
    init = group.add_mutually_exclusive_group() if with_target else group
    init.add_argument("--init-prompt", metavar="TEXT", help="prompt c_T starts from "
                      "(default: the empty prompt, so one inversion serves any target)")
    if with_target:
        init.add_argument("--init-from-target", action="store_true", help="start c_T from the target prompt")
    group.add_argument("--seed", type=int, default=SETTING_DEFAULTS["seed"], help="torch seed, recorded in the outputs "
                       f"({RANGES['seed'][0]}..{RANGES['seed'][1]}; default {SETTING_DEFAULTS['seed']})")


def build_parser(argv: list[str]) -> ArgumentParser:
    """The full parser; a delegated subcommand's module is imported only when that subcommand is invoked."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = ArgumentParser(prog="ptiedit", formatter_class=raw, description="Text-driven editing of real images "
                            "with Prompt Tuning Inversion (Dong et al., ICCV 2023).", epilog=IMAGES_HELP)
    parser.add_argument("--version", action="version", version=f"ptiedit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of unexpected errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("edit", formatter_class=raw, epilog=IMAGES_HELP, help="invert an image and edit it",
                            description="Invert INPUT with PTI and sample it again toward --target, blending the "
                            "tuned embeddings with the target's: c~_t = eta c_target + (1 - eta) c_t.")
    p.add_argument("input", metavar="INPUT", help="image to edit")
    p.add_argument("--target", required=True, metavar="PROMPT", help="what the edited image shows")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="edited image; with several etas the "
                   "base name of OUT_eta0.60.png, ... and OUT_grid.png (input | reconstruction | edits)")
    p.add_argument("--eta", action="append", metavar="ETA[,ETA...]", help="share of the target prompt in [0, 1]: "
                   f"0 reconstructs, 1 is the target prompt alone; repeat or list for a sweep (default {DEFAULT_ETA})")
    p.add_argument("--allow-extrapolation", action="store_true", help="allow eta above 1")
    add_mode_option(p)
    p.add_argument("--mask", metavar="MASK.png", help="also write the automatic edit mask (white: edited; faithful "
                   "mode), named per eta as the outputs are")
    p.add_argument("--inversion", metavar="INV.safetensors", help="reuse this inversion if it exists (it must "
                   "come from the same image, model and settings), else write the new one here")
    p.add_argument("--allow-changed-weights", action="store_true", help="reuse an --inversion made with other "
                   "weights of the same family and schedule (a fine-tune, a merged LoRA); eta 0 then no longer "
                   "replays its reconstruction")
    p.add_argument("--keep-size", action="store_true", help="resize results to exactly the input's size")
    p.add_argument("--max-batch", type=int, metavar="N", help="at most N etas in one UNet batch; a longer "
                   "sweep runs in chunks (default: all at once)")
    add_method_option(p)
    add_p2p_options(p)
    add_inversion_options(p, with_target=True)
    add_common_options(p)
    p.set_defaults(run=cmd_edit)

    p = commands.add_parser("invert", formatter_class=raw, epilog=IMAGES_HELP, help="invert an image with PTI",
                            description="Invert INPUT with PTI and save the inversion for `edit --inversion`.")
    p.add_argument("input", metavar="INPUT", help="image to invert")
    p.add_argument("-o", "--output", required=True, metavar="INV.safetensors", help="inversion file to write")
    add_method_option(p)
    add_inversion_options(p, with_target=False)
    add_common_options(p)
    p.set_defaults(run=cmd_invert)

    p = commands.add_parser("reconstruct", help="sample an inversion back (eta = 0)",
                            description="Sample an inversion back to its image (eta = 0); needs the model that "
                            "made it (--model).")
    p.add_argument("inversion", metavar="INV.safetensors", help="file written by `ptiedit invert`")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="reconstructed image")
    add_common_options(p)
    p.set_defaults(run=cmd_reconstruct)

    p = commands.add_parser("demo", help="edit two shapes-world scenes, one over a photo",
                            description="Invert a red circle on white and a blue circle over a photo with the "
                            "embedded model, edit them (green circle, yellow background, star; yellow circle, star) "
                            f"at eta {', '.join(map(str, DEMO_ETAS))} and write every image and a labelled grid.png.")
    p.add_argument("-o", "--output", default="ptiedit-demo", metavar="DIR", help="folder (default ptiedit-demo)")
    add_common_options(p, show_model=False)
    p.set_defaults(run=cmd_demo)

    words = [word for word in argv if not word.startswith("-")]
    toyworld = commands.add_parser("toyworld", help="the shapes world: train its model")
    toyworld_commands = toyworld.add_subparsers(dest="toyworld_command", metavar="COMMAND", required=True)
    for name, (_, _, help_text) in DELEGATED.items():
        path = name.split()
        where = toyworld_commands if path[0] == "toyworld" else commands
        p = where.add_parser(path[-1], help=help_text, description=help_text)
        if words[:len(path)] == path:
            module = import_command(name)
            module.add_arguments(p)
            p.set_defaults(run=module.run)
    return parser


def import_command(name: str):
    """The module of a delegated subcommand, or one line saying what to install."""
    module_name, extra, _ = DELEGATED[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing.split(".")[0] == "ptiedit":
            raise ValueError(f"`ptiedit {name}` is not available in this installation ({missing} is missing)") \
                from None
        install = f"pip install 'ptiedit[{extra}]'" if extra else f"pip install {missing.split('.')[0]}"
        raise ValueError(f"`ptiedit {name}` needs {missing}, which is not installed: {install}") from None
    if not (hasattr(module, "add_arguments") and hasattr(module, "run")):
        raise ValueError(f"`ptiedit {name}` is not available: {module_name} has no add_arguments/run")
    return module


# ------------------------------------------------------------------------------------------------------ main

def one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split()) or type(error).__name__


PACKAGE = Path(package_path[0]).absolute()  # as the interpreter names its modules' files: not resolved


@contextmanager
def reported_warnings(show_all: bool):
    """Each distinct warning of ptiedit's own (e.g. a truncated prompt, fp16 on the CPU) becomes one
    `ptiedit: warning:` line, written past an open progress display; other libraries' only with --debug."""
    shown = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = one_line(message)
        ours = issubclass(category, PromptTruncatedWarning) or PACKAGE in Path(filename).absolute().parents
        if (show_all or ours) and text not in shown:
            shown.add(text)
            tqdm.write(f"ptiedit: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    if "--debug" not in argv:  # read when the libraries load: their notices would add lines to stderr
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    try:
        with reported_warnings(show_all="--debug" in argv):
            args = build_parser(argv).parse_args(argv)
            debug = args.debug
            return int(args.run(args) or 0)
    except SystemExit as done:  # --help, --version, or a delegated command exiting
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(f"ptiedit: error: {one_line(done.code)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ptiedit: interrupted", file=sys.stderr)
        return 130
    except ValueError as error:
        if debug and not isinstance(error, UsageError):
            raise
        print(f"ptiedit: error: {one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        if debug:
            raise
        print(f"ptiedit: error: {type(error).__name__}: {one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
