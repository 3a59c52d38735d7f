"""`ptiedit demo`: the embedded model's worked example, every image and a labelled grid."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ...demo import ETAS as DEMO_ETAS
from ...demo import demo_files, run_demo
from ...outputs import check_folder, check_outputs
from .common import add_common_options, open_model, progress_display, say

def run(args: argparse.Namespace) -> int:
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


def add_parser(commands) -> None:
    """The `ptiedit demo` subcommand."""
    p = commands.add_parser("demo", help="edit two shapes-world scenes, one over a photo",
                            description="Invert a red circle on white and a blue circle over a photo with the "
                            "embedded model, edit them (green circle, yellow background, star; yellow circle, star) "
                            f"at eta {', '.join(map(str, DEMO_ETAS))} and write every image and a labelled grid.png.")
    p.add_argument("-o", "--output", default="ptiedit-demo", metavar="DIR", help="folder (default ptiedit-demo)")
    add_common_options(p, show_model=False)
    p.set_defaults(run=run)
