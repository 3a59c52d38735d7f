"""`python -m ptiedit` is the command line too, so launchers that run modules (torchrun, accelerate launch -m) can
start it."""
import sys

from .interfaces.cli import main

if __name__ == "__main__":
    sys.exit(main())
