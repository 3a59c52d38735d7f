"""`ptiedit reconstruct`: sample an inversion back to its image (eta = 0)."""
from __future__ import annotations

import argparse

from ...editing.edit import reconstruct
from ...inversion.result import Inversion
from ...models.fingerprint import pipeline_fingerprint
from ...outputs import check_outputs, result_settings, write_png
from .common import add_common_options, check_suffix, open_model, progress_display, say

def run(args: argparse.Namespace) -> int:
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


def add_parser(commands) -> None:
    """The `ptiedit reconstruct` subcommand."""
    p = commands.add_parser("reconstruct", help="sample an inversion back (eta = 0)",
                            description="Sample an inversion back to its image (eta = 0); needs the model that "
                            "made it (--model).")
    p.add_argument("inversion", metavar="INV.safetensors", help="file written by `ptiedit invert`")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="reconstructed image")
    add_common_options(p)
    p.set_defaults(run=run)
