"""Defaults and ranges of the inversion and editing settings: the one definition that the command line, batch
manifests and the web app share. Torch-free, so that the web app's module loads without it."""
from __future__ import annotations

# eta: editing.edit.DEFAULT_ETA, written out to stay torch-free (tests/test_ui.py checks they agree).
DEFAULTS = {"steps": 50, "guidance": 7.5, "inner_steps": 10, "eta": 0.9, "seed": 0}
# Inclusive. steps: SD's 1000 training timesteps (the CLI narrows them to the model's scheduler, valid_steps);
# guidance: what invert() accepts; seed: 32 bits, which numpy takes and a browser's number box holds exactly.
RANGES = {"steps": (1, 1000), "guidance": (0, 50), "inner_steps": (0, 100), "eta": (0, 1), "seed": (0, 2**32 - 1),
          "cross_replace": (0, 1), "self_replace": (0, 1)}  # Prompt-to-Prompt: shares of the steps
INTEGERS = ("steps", "inner_steps", "seed")
INVERSION_SETTINGS = ("steps", "guidance", "inner_steps")  # what an inversion is made with, besides its prompt


def check_setting(name: str, value, label: str | None = None) -> int | float:
    """value as a number of RANGES[name], an int for INTEGERS; else a one-line ValueError naming it as label."""
    label = label or name.replace("_", " ")
    low, high = RANGES[name]
    if isinstance(value, bool):
        raise ValueError(f"{label} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a number, got {value!r}") from None
    if not low <= number <= high:  # also refuses nan
        raise ValueError(f"{label} must be between {low} and {high}, got {value}")
    if name in INTEGERS:
        if not number.is_integer():
            raise ValueError(f"{label} must be a whole number, got {value}")
        return int(number)
    return number
