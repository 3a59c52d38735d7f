"""Writing results safely: output checks, atomic writes, PNG settings metadata and labelled grids.

Every file is written to a temporary file in its destination folder and moved into place with os.replace, so
an interrupted run leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from . import __version__

METADATA_KEY = "ptiedit"  # JSON settings chunk
PARAMETERS_KEY = "parameters"  # one human-readable line, as AUTOMATIC1111's web UI writes
UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it), then restored
os.umask(UMASK)
_LABELS = {"prompt": "Prompt", "eta": "Eta", "steps": "Steps", "guidance": "Guidance", "inner_steps": "Inner steps",
           "init_prompt": "Init prompt", "seed": "Seed", "method": "Method", "model": "Model",
           "model_sha256": "Model sha256", "input_sha256": "Input sha256", "version": "ptiedit"}


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name one file (symbolic and hard links included), whether or not it exists yet."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_outputs(outputs: Iterable[str | os.PathLike], *, force: bool = False,
                  inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse, before any work starts, outputs that would overwrite a file unasked, clobber an input, collide
    with each other, or land in a folder that is missing or not writable. Raises ValueError."""
    inputs, seen = [Path(p) for p in inputs], []
    for out in map(Path, outputs):
        if any(same_file(out, other) for other in seen):
            raise ValueError(f"{out} is named twice among the outputs")
        if any(same_file(out, source) for source in inputs):
            raise ValueError(f"{out} is also an input; choose another output path")
        if out.is_dir():
            raise ValueError(f"{out} is a folder; give a file name")
        if out.exists() and not force:
            raise ValueError(f"{out} exists; pass --force to overwrite it")
        check_folder(out.parent)
        seen.append(out)


def check_folder(folder: str | os.PathLike) -> None:
    """Refuse a destination folder that is missing, not a folder, or not writable. Raises ValueError."""
    folder = Path(folder).resolve()
    if not folder.exists():
        raise ValueError(f"output folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {folder} is not writable")


@contextmanager
def atomic_path(path: str | os.PathLike, folder: bool = False):
    """Yield a temporary path next to `path` (an empty folder with folder=True); move it onto `path` only if the
    block completes. Every atomic write of ptiedit (images, inversions, batch results, training checkpoints and
    exported model folders) goes through here. A folder replaces an existing one by removing it first: a crash
    between the two leaves the finished temporary folder, not half of either."""
    path = Path(path)
    if folder:
        tmp = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    else:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    try:
        yield tmp
        # mkstemp and mkdtemp make the path private; give it the usual permissions
        os.chmod(tmp, (0o777 if folder else 0o666) & ~UMASK)
        if folder and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        elif os.path.exists(tmp):
            os.remove(tmp)


def parameters_line(settings: dict) -> str:
    """One line, e.g. `Prompt: "a green circle", Eta: 0.8, Steps: 50, ...`; lists are left to the JSON chunk.

    Prompts, and any value holding a comma, colon or quote, are JSON-quoted so the line splits unambiguously.
    """
    parts = []
    for key, value in settings.items():
        if isinstance(value, (dict, list)):
            continue
        label = _LABELS.get(key, key.replace("_", " ").capitalize())
        text = str(value)
        if key.endswith("prompt") or any(c in text for c in ',:"\n'):
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{label}: {text}")
    return ", ".join(parts)


def result_settings(inversion, **extra) -> dict:
    """What a result image records about the inversion it came from, plus `extra` (prompt, eta, seed, ...)."""
    settings, fingerprint = inversion.settings, inversion.fingerprint
    recorded = {**extra, "steps": settings["steps"], "guidance": settings["guidance"],
                "inner_steps": settings.get("inner_steps"), "init_prompt": settings.get("prompt", ""),
                "method": inversion.method, "model": fingerprint.get("model"),
                "model_sha256": fingerprint.get("model_sha256"), "input_sha256": fingerprint.get("image_sha256"),
                "version": __version__}
    return {key: value for key, value in recorded.items() if value is not None}


def write_png(image: Image.Image, path: str | os.PathLike, settings: dict) -> None:
    """Save atomically as PNG with `settings` in a `parameters` text chunk and as JSON in a `ptiedit` chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, parameters_line(settings))  # falls back to iTXt when not Latin-1
    info.add_text(METADATA_KEY, json.dumps(settings))  # ASCII JSON: always a plain tEXt chunk
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def read_png_settings(path: str | os.PathLike) -> dict:
    """The settings JSON that write_png stored; ValueError if the file carries none."""
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}))
    if METADATA_KEY not in text:
        raise ValueError(f"{path}: no ptiedit settings in this image")
    return json.loads(text[METADATA_KEY])


def label_grid(rows: Sequence[Sequence[Image.Image]], column_labels: Sequence[str],
               row_labels: Sequence[str] | None = None, min_cell: int = 128) -> Image.Image:
    """Images in a table with a header row of column labels and, optionally, a first column of row labels.

    Cells are as wide and as high as the largest image (non-square results keep their shape), each image
    centred in its cell. Small images are enlarged by a whole factor with nearest-neighbour sampling, so pixels
    stay as generated.
    """
    font = _font()
    images = [image for row in rows for image in row]
    scale = max(1, -(-min_cell // max(max(image.size) for image in images)))
    cell_w, cell_h = (max(image.size[i] for image in images) * scale for i in (0, 1))
    pad = 6
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text):
        return measure.textbbox((0, 0), text, font=font)[2]

    line = measure.textbbox((0, 0), "Ag", font=font)[3] + 2 * pad
    left = max(map(width, row_labels)) + 2 * pad if row_labels else 0
    grid = Image.new("RGB", (left + cell_w * len(column_labels), line + cell_h * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for j, text in enumerate(column_labels):
        draw.text((left + j * cell_w + (cell_w - width(text)) // 2, pad), text, fill="black", font=font)
    for i, row in enumerate(rows):
        top = line + i * cell_h
        if row_labels:
            draw.text((pad, top + (cell_h - line) // 2 + pad), row_labels[i], fill="black", font=font)
        for j, image in enumerate(row):
            tile = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
            grid.paste(tile, (left + j * cell_w + (cell_w - tile.width) // 2, top + (cell_h - tile.height) // 2))
    return grid


def _font():
    try:
        return ImageFont.load_default(size=14)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType has only its fixed bitmap font
        return ImageFont.load_default()
