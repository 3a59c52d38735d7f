"""Reading user images and fitting them to the model: EXIF orientation, RGB, and an aspect-keeping resize.

Fitting policy (fit_to_model): the model sees the whole picture, never a crop. It is resized to about the
model's pixel count (its default resolution squared), with both sides multiples of what the VAE and UNet need.
Of the sizes next to the ideal one, the one closest in aspect ratio that does not exceed the model's pixel
count wins; the small mismatch left by rounding to multiples is absorbed by stretching, not cropping, so a
result resized back to the input's own width x height (`--keep-size`) lines up with the input pixel for pixel.
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


def fitted_size(width: int, height: int, area: int, multiple: int) -> tuple[int, int]:
    """(W, H) for a width x height picture: multiples of `multiple`, W * H <= area, aspect closest to the input's.

    The ideal size keeps the aspect ratio at exactly `area` pixels: (width, height) * sqrt(area / (width * height)).
    Each ideal side is rounded down and up to a multiple; of the candidates within `area` the one with the
    smallest aspect error |log((W / H) / (width / height))| wins, ties going to the larger one. Raises ValueError
    for pictures more elongated than the model's grid holds (its short side would round to zero).
    """
    if multiple < 1 or area < multiple * multiple:
        raise ValueError(f"cannot fit to {area} pixels in multiples of {multiple}")
    scale = math.sqrt(area / (width * height))
    ideal_w, ideal_h = width * scale, height * scale
    if min(ideal_w, ideal_h) < multiple:
        longest = area // (multiple * multiple)
        raise ValueError(f"the image is {width}x{height}, more elongated than this model's {longest}:1 limit; "
                         "crop it first")
    sides = [{math.floor(ideal / multiple) * multiple, math.ceil(ideal / multiple) * multiple}
             for ideal in (ideal_w, ideal_h)]
    candidates = [(w, h) for w in sides[0] for h in sides[1] if w * h <= area]  # floor x floor always fits
    target = math.log(width / height)
    return min(candidates, key=lambda size: (abs(math.log(size[0] / size[1]) - target), -size[0] * size[1]))


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
