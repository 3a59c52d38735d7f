"""`ptiedit edit`: invert an image (or reuse its inversion) and edit it toward a target prompt, at one eta or a
sweep, optionally with Prompt-to-Prompt."""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from ...editing.edit import DEFAULT_ETA, edit
from ...editing.p2p import P2PConfig
from ...images import load_image, pixels_sha256, restore_size
from ...inversion.result import Inversion
from ...models.fingerprint import pipeline_fingerprint
from ...outputs import check_outputs, label_grid, result_settings, write_png
from ..options import check_setting
from .common import (FLOW_OPTIONS, IMAGES_HELP, add_common_options, add_flow_options, add_inversion_options,
                     add_method_option, add_mode_option, check_method, check_prompt, check_ranges, check_steps,
                     check_suffix, eta_files, eta_name, model_image, open_model, parse_etas, progress_display,
                     run_inversion, say)


def check_reusable(inversion: Inversion, path: Path, args: argparse.Namespace, init_prompt: str | None) -> None:
    """Settings given on the command line must be the ones the reused inversion was made with."""
    if getattr(args, "method", None) not in (None, inversion.method):
        raise ValueError(f"--method {args.method} differs from the one {path} was made with ({inversion.method}); "
                         "leave it out, or pass a new --inversion file")
    given = {"steps": args.steps, "guidance": args.guidance, "inner_steps": args.inner_steps, "prompt": init_prompt,
             **{name: getattr(args, name) for name in FLOW_OPTIONS}}
    for key, value in given.items():
        if value is not None and inversion.settings.get(key) != value:
            flag = "the init prompt" if key == "prompt" else f"--{key.replace('_', '-')}"
            raise ValueError(f"{flag} {value!r} differs from the one {path} was made with "
                             f"({inversion.settings.get(key)!r}); leave it out, or pass a new --inversion file")


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


def run(args: argparse.Namespace) -> int:
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


def add_parser(commands) -> None:
    """The `ptiedit edit` subcommand."""
    p = commands.add_parser("edit", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=IMAGES_HELP,
                            help="invert an image and edit it",
                            description="Invert INPUT with PTI (or --method) and sample it again toward --target, "
                            "blending the tuned embeddings with the target's: c~_t = eta c_target + (1 - eta) c_t.")
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
    add_flow_options(p)
    add_p2p_options(p)
    add_inversion_options(p, with_target=True)
    add_common_options(p)
    p.set_defaults(run=run)
