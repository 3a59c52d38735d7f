"""The `ptiedit` command line: edit, invert, reconstruct and demo (one module each), plus bench, ui, batch
and toyworld train (delegated to their modules, imported only when invoked).

Anything a user can get wrong ends in one line on stderr, `ptiedit: error: ...`, and exit status 2; an
unexpected failure prints its type and message and exits 1 (`ptiedit --debug ...` shows the traceback);
Ctrl-C exits 130. Outputs are all checked before the model loads, and written atomically.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from ... import __path__ as package_path
from ... import __version__
from ...models.family import PromptTruncatedWarning
from . import demo, edit, invert, reconstruct
from .common import IMAGES_HELP, one_line

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


def build_parser(argv: list[str]) -> ArgumentParser:
    """The full parser; a delegated subcommand's module is imported only when that subcommand is invoked."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = ArgumentParser(prog="ptiedit", formatter_class=raw, description="Text-driven editing of real images "
                            "with Prompt Tuning Inversion (Dong et al., ICCV 2023).", epilog=IMAGES_HELP)
    parser.add_argument("--version", action="version", version=f"ptiedit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of unexpected errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (edit, invert, reconstruct, demo):
        command.add_parser(commands)
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
