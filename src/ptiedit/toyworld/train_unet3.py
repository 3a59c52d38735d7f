"""UNet + text encoder stage of the textured-world recipe (train_textured.py)."""
from __future__ import annotations

from pathlib import Path

from .train import Checkpoint


def export_unet_snapshot(out: Path, dest: Path, save) -> int:
    """Save the UNet stage's EMA weights with save(model, folder) into dest; its step (0: not started)."""
    state = Checkpoint(out / "checkpoints" / "unet3.pt").load()
    if state is None:
        return 0
    raise NotImplementedError
