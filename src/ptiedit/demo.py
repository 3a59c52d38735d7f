"""The shapes-world demo: invert one rendered scene with PTI once, then edit it three ways over a sweep of eta.

One inversion serves every edit because PTI's stage 1 does not depend on the target prompt (its c_T starts
from the empty prompt by default); stage 2 blends each target prompt in with c~_t = eta c_target + (1-eta) c_t.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .models.family import model_family
from .editing.edit import edit
from .inversion.invert import invert
from .outputs import label_grid, result_settings, write_png
from .toyworld.captions import caption
from .toyworld.edits import Edit, describe_edit, target_prompt
from .toyworld.render import render
from .toyworld.scene import Obj, Scene

SCENE = Scene("white", (Obj("circle", "red", "big", "center"),))
EDITS = (Edit("object_color", "green"), Edit("background_color", "yellow"), Edit("object_shape", "star"))
ETAS = (0.6, 0.8, 1.0)


def edit_file(edit_: Edit, eta: float) -> str:
    return f"{edit_.kind.replace('_', '-')}-{edit_.value}_eta{eta:.2f}.png"


def demo_files(folder: str | Path) -> list[Path]:
    """Every file the demo writes into `folder`, so all can be checked before the work starts."""
    names = ["input.png", "reconstruction.png"] + [edit_file(e, eta) for e in EDITS for eta in ETAS] + ["grid.png"]
    return [Path(folder) / name for name in names]


def run_demo(pipe, folder: str | Path, *, steps: int = 50, inner_steps: int = 10, seed: int = 0,
             progress=True) -> list[Path]:
    """Render SCENE, invert it, apply EDITS at every eta in ETAS and write the files of demo_files(folder).

    progress: a bool, or one tqdm bar that the inversion and all three edits report to (as invert/edit take it).
    """
    torch.manual_seed(seed)
    image = render(SCENE, model_family(pipe).default_size)
    inversion = invert(pipe, image, steps=steps, inner_steps=inner_steps, progress=progress)
    recorded = result_settings(inversion, seed=seed)
    folder = Path(folder)
    write_png(image, folder / "input.png", {"caption": caption(SCENE), **recorded})
    rows, labels, prompts, reconstruction = [], [], [], None
    for edit_ in EDITS:
        prompt = target_prompt(SCENE, edit_)
        # eta = 0 is the reconstruction: sampled once, in the first edit's batch.
        etas = [0.0, *ETAS] if reconstruction is None else list(ETAS)
        results = edit(pipe, inversion, prompt, etas, progress=progress)
        if reconstruction is None:
            reconstruction, results = results[0], results[1:]
            write_png(reconstruction, folder / "reconstruction.png", {"prompt": "", "eta": 0.0, **recorded})
        for eta, result in zip(ETAS, results):
            write_png(result, folder / edit_file(edit_, eta), {"prompt": prompt, "eta": eta, **recorded})
        rows.append([image, reconstruction, *results])
        labels.append(describe_edit(edit_, SCENE))
        prompts.append(prompt)
    grid = label_grid(rows, ["input", "reconstruction", *(f"eta {eta:.2f}" for eta in ETAS)], labels)
    write_png(grid, folder / "grid.png", {"edits": labels, "prompts": prompts, "etas": list(ETAS), **recorded})
    return demo_files(folder)
