"""Reading user images and fitting them to the model: EXIF orientation, RGB, center crop, resize."""
from __future__ import annotations

import hashlib
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


def fit_to_model(image: Image.Image, area: int, multiple: int) -> Image.Image:
    """Resize to about `area` pixels keeping the aspect ratio, each side rounded to a multiple of `multiple`."""
    image = to_rgb(image)
    scale = (area / (image.width * image.height)) ** 0.5
    size = tuple(max(multiple, round(side * scale / multiple) * multiple) for side in image.size)
    return image if size == image.size else image.resize(size, Image.LANCZOS)


def pixels_sha256(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()
