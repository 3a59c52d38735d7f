"""The shapes-world demo: two scenes, a red circle on white and a blue circle over a photo the model never saw in
training; each is inverted with PTI once and edited over a sweep of eta.

One inversion serves every edit of a scene because PTI's stage 1 does not depend on the target prompt (its c_T
starts from the empty prompt by default); stage 2 blends each target prompt in with c~_t = eta c_target + (1-eta)
c_t. On the photo, the object changes and the photo around it stays: detail no prompt states.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .editing.edit import edit
from .inversion.invert import invert
from .models.family import model_family
from .outputs import label_grid, result_settings, write_png
from .toyworld.backgrounds import Photo
from .toyworld.captions import caption
from .toyworld.edits import Edit, describe_edit, target_prompt
from .toyworld.render import render
from .toyworld.scene import Obj, Scene

ETAS = (0.6, 0.8, 1.0)
# The photo scene ships as a PNG (rendering it needs scikit-image, an optional dependency); a test checks that the
# file is this render.
PHOTO_SCENE = Scene(Photo("coffee", 0), (Obj("circle", "blue", "big", "center"),))  # coffee: held out of training
PHOTO_EXAMPLE = Path(__file__).parent / "toyworld" / "assets" / "blue-circle-over-coffee.png"
PHOTO_EXAMPLE_SIZE = 128


@dataclass(frozen=True)
class DemoScene:
    name: str  # prefix of its files
    scene: Scene
    edits: tuple[Edit, ...]
    shipped: Path | None = None  # a shipped render of the scene, used instead of rendering it

    def image(self, size: int) -> Image.Image:
        if self.shipped is None:
            return render(self.scene, size)
        return Image.open(self.shipped).convert("RGB").resize((size, size), Image.BICUBIC)


SCENES = (DemoScene("shapes", Scene("white", (Obj("circle", "red", "big", "center"),)),
                    (Edit("object_color", "green"), Edit("background_color", "yellow"), Edit("object_shape", "star"))),
          DemoScene("photo", PHOTO_SCENE,
                    (Edit("object_color", "yellow"), Edit("object_shape", "star")), PHOTO_EXAMPLE))


def edit_file(demo: DemoScene, edit_: Edit, eta: float) -> str:
    return f"{demo.name}-{edit_.kind.replace('_', '-')}-{edit_.value}_eta{eta:.2f}.png"


def demo_files(folder: str | Path) -> list[Path]:
    """Every file the demo writes into `folder`, so all can be checked before the work starts."""
    names = [name for demo in SCENES for name in (f"{demo.name}-input.png", f"{demo.name}-reconstruction.png",
                                                  *(edit_file(demo, e, eta) for e in demo.edits for eta in ETAS))]
    return [Path(folder) / name for name in [*names, "grid.png"]]


def run_demo(pipe, folder: str | Path, *, steps: int = 50, inner_steps: int = 10, seed: int = 0,
             progress=True) -> list[Path]:
    """Invert every scene of SCENES, apply its edits at every eta in ETAS and write the files of demo_files(folder).

    progress: a bool, or one tqdm bar that the inversions and all edits report to (as invert/edit take it).
    """
    folder, size = Path(folder), model_family(pipe).default_size
    rows, labels, prompts, recorded = [], [], [], {}
    for demo in SCENES:
        torch.manual_seed(seed)
        image = demo.image(size)
        inversion = invert(pipe, image, steps=steps, inner_steps=inner_steps, progress=progress)
        recorded = result_settings(inversion, seed=seed)
        write_png(image, folder / f"{demo.name}-input.png", {"caption": caption(demo.scene), **recorded})
        reconstruction = None
        for edit_ in demo.edits:
            prompt = target_prompt(demo.scene, edit_)
            # eta = 0 is the reconstruction: sampled once, in the first edit's batch.
            etas = [0.0, *ETAS] if reconstruction is None else list(ETAS)
            results = edit(pipe, inversion, prompt, etas, progress=progress)
            if reconstruction is None:
                reconstruction, results = results[0], results[1:]
                write_png(reconstruction, folder / f"{demo.name}-reconstruction.png",
                          {"prompt": "", "eta": 0.0, **recorded})
            for eta, result in zip(ETAS, results):
                write_png(result, folder / edit_file(demo, edit_, eta), {"prompt": prompt, "eta": eta, **recorded})
            rows.append([image, reconstruction, *results])
            labels.append(describe_edit(edit_, demo.scene))
            prompts.append(prompt)
    grid = label_grid(rows, ["input", "reconstruction", *(f"eta {eta:.2f}" for eta in ETAS)], labels)
    write_png(grid, folder / "grid.png", {"edits": labels, "prompts": prompts, "etas": list(ETAS), **recorded})
    return demo_files(folder)
