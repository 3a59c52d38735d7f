"""`ptiedit invert`: stage 1 only, saved for `ptiedit edit --inversion`."""
from __future__ import annotations

import argparse

from ...images import load_image
from ...outputs import check_outputs
from .common import (IMAGES_HELP, add_common_options, add_flow_options, add_inversion_options, add_method_option,
                     check_method, check_prompt, check_ranges, check_steps, check_suffix, open_model,
                     progress_display, run_inversion, say)


def run(args: argparse.Namespace) -> int:
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


def add_parser(commands) -> None:
    """The `ptiedit invert` subcommand."""
    p = commands.add_parser("invert", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=IMAGES_HELP,
                            help="invert an image with PTI",
                            description="Invert INPUT with PTI and save the inversion for `edit --inversion`.")
    p.add_argument("input", metavar="INPUT", help="image to invert")
    p.add_argument("-o", "--output", required=True, metavar="INV.safetensors", help="inversion file to write")
    add_method_option(p)
    add_flow_options(p)
    add_inversion_options(p, with_target=False)
    add_common_options(p)
    p.set_defaults(run=run)
