"""Reading user images and fitting them to the model: EXIF orientation, RGB, and an aspect-keeping resize.

Fitting policy (fit_to_model): the model sees the whole picture, never a crop. It is resized to at most the
model's pixel count (its default resolution squared), with both sides multiples of what its VAE and UNet need,
choosing the size that best trades aspect-ratio error against lost pixels (fitted_size). What rounding to
multiples leaves over is absorbed by a slight stretch, not by cropping, so a result resized back to the input's
own width x height (`--keep-size`) lines up with the input pixel for pixel.
"""
from __future__ import annotations

import hashlib
import math
import os

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 64_000_000  # larger images are refused as decompression bombs


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open any image Pillow reads, honour its EXIF orientation and return RGB (transparency over white).

    Raises ValueError with a one-line reason for missing, unreadable, corrupt, truncated or oversized files.
    """
    try:
        with Image.open(path) as image:
            # Checked here, before decoding: Pillow only warns between its limit and twice its limit.
            if image.width * image.height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}x{image.height}")
            image.load()
            image = ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise ValueError(f"{path}: permission denied") from None
    except Image.DecompressionBombError:
        raise ValueError(f"{path}: image is too large (over {MAX_PIXELS} pixels)") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's errors for corrupt/truncated/unknown files
        raise ValueError(f"{path}: not a readable image ({error})") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode: 16-bit and float greyscale scaled to 8 bits, alpha composited over white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or a.max() > 255 else 255.0
        image = Image.fromarray((a / top * 255).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


PIXEL_WEIGHT = 0.25  # a picture with half the pixels costs as much as a 19% stretch: exp(0.25 * log 2) = 1.19


def fitted_size(width: int, height: int, area: int, multiple: int) -> tuple[int, int]:
    """(W, H) for a width x height picture: multiples of `multiple` with W * H <= area, minimizing

        cost(W, H) = |log((W / H) / (width / height))| + PIXEL_WEIGHT * log(area / (W * H)),

    the stretch the picture suffers plus a quarter of the (log) pixels it loses; ties go to the larger size.
    For each H only the two multiples around H * width / height (capped at area / H) can minimize it, since
    the cost falls with W below that width and, with PIXEL_WEIGHT < 1, rises above it. Every result is its own
    fit, so a result fitted again keeps its size. Raises ValueError for pictures more elongated than
    area / multiple**2 : 1, the most elongated shape the model's grid holds.
    """
    if multiple < 1 or area < multiple * multiple:
        raise ValueError(f"cannot fit to {area} pixels in multiples of {multiple}")
    ratio = width / height
    if max(ratio, 1 / ratio) > area / multiple**2:
        raise ValueError(f"the image is {width}x{height}, more elongated than this model's "
                         f"{area // multiple**2}:1 limit; crop it first")
    candidates = []
    for h in range(multiple, area // multiple + 1, multiple):
        widest = area // h // multiple * multiple
        ideal = h * ratio / multiple
        candidates += [(w, h) for w in {min(math.floor(ideal) * multiple, widest),
                                        min(math.ceil(ideal) * multiple, widest)} if w >= multiple]

    def cost(size: tuple[int, int]) -> tuple[float, int]:
        w, h = size
        return abs(math.log(w / h / ratio)) + PIXEL_WEIGHT * math.log(area / (w * h)), -w * h

    return min(candidates, key=cost)


def fit_to_model(image: Image.Image, area: int, multiple: int) -> Image.Image:
    """The whole image in RGB, resized (Lanczos) to fitted_size: about `area` pixels, sides multiples of
    `multiple`, aspect ratio kept up to the rounding to multiples (see the module docstring)."""
    image = to_rgb(image)
    size = fitted_size(image.width, image.height, area, multiple)
    return image if image.size == size else image.resize(size, Image.LANCZOS)


def restore_size(result: Image.Image, original: Image.Image) -> Image.Image:
    """A result at the model's size resized (Lanczos) to exactly the input's width x height (--keep-size)."""
    return result if result.size == original.size else result.resize(original.size, Image.LANCZOS)


def pixels_sha256(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()
