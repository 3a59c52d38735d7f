"""`python -m ptiedit.training ...` is `ptiedit toyworld train ...`."""
import argparse
import sys

from .command import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m ptiedit.training", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
