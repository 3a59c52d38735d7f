"""The PIE-Bench data format (Ju et al. 2023, "Direct Inversion"): mapping_file.json, run-length masks, prompts.

A PIE-Bench folder holds mapping_file.json, a dict keyed by image id whose entries carry `image_path` (relative to
annotation_images/, or to the folder itself), `original_prompt`, `editing_prompt` (changed words in [ ]),
`editing_instruction`, `editing_type_id`, `blended_word` and `mask`: flat [start, length] runs over a row-major
512 x 512 grid, True on the region the edit may change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MASK_SIZE = 512
REQUIRED = ("image_path", "original_prompt", "editing_prompt", "mask")


@dataclass(frozen=True)
class PieBenchEntry:
    id: str
    image_path: Path
    source_prompt: str  # [ ] markers stripped
    target_prompt: str
    instruction: str
    edit_type: str
    mask: np.ndarray  # bool (512, 512), True where the edit may change pixels


def decode_mask(runs, size: int = MASK_SIZE) -> np.ndarray:
    """Boolean (size, size) mask from flat [start, length, ...] runs over the row-major grid.

    Runs past the end are clipped. Like PIE-Bench's reference decoder, the outermost rows and columns are set,
    which keeps annotation errors at the border out of the unedited region.
    """
    runs = np.asarray(runs, dtype=np.int64).ravel()
    if len(runs) % 2:
        raise ValueError(f"a run-length mask needs [start, length] pairs, got {len(runs)} numbers")
    starts, lengths = runs[0::2], runs[1::2]
    if (starts < 0).any() or (lengths < 0).any() or (starts >= size * size).any():
        raise ValueError(f"run-length mask has a run outside the {size}x{size} grid")
    flat = np.zeros(size * size, dtype=bool)
    for start, length in zip(starts, lengths):
        flat[start:start + length] = True
    mask = flat.reshape(size, size)
    mask[[0, -1], :] = True
    mask[:, [0, -1]] = True
    return mask


def encode_mask(mask: np.ndarray) -> list[int]:
    """The flat [start, length, ...] runs of a boolean mask in row-major order (decode_mask's inverse, border aside)."""
    flat = np.concatenate([[False], np.asarray(mask, dtype=bool).ravel(), [False]])
    edges = np.flatnonzero(flat[1:] != flat[:-1])
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def strip_markers(prompt: str) -> str:
    """PIE-Bench marks changed words with [ ]: "a [red] cat" -> "a red cat" (spacing normalized)."""
    return " ".join(prompt.replace("[", " ").replace("]", " ").split())


def fit_mask(mask: np.ndarray, image_size: tuple[int, int], resolution: int) -> np.ndarray:
    """The mask on the model's pixels: stretched to the image, then cropped and resized as suites.square
    does. A model pixel counts as edited when any part of it is (box filter, then > 0)."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(image_size, Image.NEAREST)
    fitted = ImageOps.fit(image, (resolution, resolution), method=Image.BOX, centering=(0.5, 0.5))
    return np.asarray(fitted) > 0


def load_piebench(folder, limit: int | None = None) -> list[PieBenchEntry]:
    """Entries of a PIE-Bench folder in id order (the first `limit`); ValueError naming the first problem found."""
    folder = Path(folder)
    mapping = folder / "mapping_file.json"
    if not mapping.is_file():
        raise ValueError(f"{folder}: no mapping_file.json (expected a PIE-Bench data folder)")
    try:
        data = json.loads(mapping.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{mapping}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{mapping}: expected a non-empty object keyed by image id")
    entries = []
    for key in sorted(data)[:limit]:
        entry = data[key]
        missing = [field for field in REQUIRED if not isinstance(entry, dict) or field not in entry]
        if missing:
            raise ValueError(f"{mapping}: entry {key} lacks {', '.join(missing)}")
        candidates = [folder / "annotation_images" / entry["image_path"], folder / entry["image_path"]]
        image_path = next((p for p in candidates if p.is_file()), None)
        if image_path is None:
            raise ValueError(f"{mapping}: image {entry['image_path']} of entry {key} not found under {folder}")
        try:
            mask = decode_mask(entry["mask"])
        except ValueError as error:
            raise ValueError(f"{mapping}: entry {key}: {error}") from None
        entries.append(PieBenchEntry(key, image_path, strip_markers(entry["original_prompt"]),
                                     strip_markers(entry["editing_prompt"]), entry.get("editing_instruction", ""),
                                     str(entry.get("editing_type_id", "")), mask))
    return entries
