"""The natural photographs behind photo backgrounds: where each comes from, its licence, and its split.

Sources: photos bundled in pip packages (scikit-image `skimage.data`, scikit-learn `load_sample_image`) and the
Debian package `mate-backgrounds` (`apt-get install mate-backgrounds`; licences read from
/usr/share/doc/mate-backgrounds/copyright). Licences are as the packages' own docstrings and README files state them.
Not used: matplotlib's grace_hopper.jpg and skimage's stereo_motorcycle (their packages state no licence);
gnome-backgrounds 43 (abstract SVG/WebP art, no photos).

Split: EVAL_PHOTOS never enter training. Tests use only TEST_PHOTOS (pip-package photos, since CI has no Debian
wallpapers); the two held-out wallpapers add variety to the training-time evaluation where they are installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image

MAX_SHORT_SIDE = 640  # photos are downscaled on load to this short side: bounded memory and crop cost
WALLPAPERS = Path("/usr/share/backgrounds/mate")


@dataclass(frozen=True)
class PhotoSource:
    origin: str  # "skimage", "sklearn" or "mate-backgrounds"
    ref: str  # skimage.data function / file name / path under WALLPAPERS
    licence: str


_GPL = "GPL-2+ (mate-backgrounds, Debian copyright file)"
PHOTOS = {
    "astronaut": PhotoSource("skimage", "astronaut", "NASA, public domain (skimage.data docstring)"),
    "coffee": PhotoSource("skimage", "coffee", "CC0, Rachel Michetti (skimage.data docstring)"),
    "chelsea": PhotoSource("skimage", "chelsea", "CC0, Stefan van der Walt (skimage.data docstring)"),
    "rocket": PhotoSource("skimage", "rocket", "SpaceX, public domain (skimage.data docstring)"),
    "hubble": PhotoSource("skimage", "hubble_deep_field", "NASA, public domain (skimage.data docstring)"),
    "ihc": PhotoSource("skimage", "immunohistochemistry", "no known copyright restrictions (skimage.data docstring)"),
    "retina": PhotoSource("skimage", "retina", "CC0 1.0 (skimage.data docstring)"),
    "camera": PhotoSource("skimage", "camera", "CC0, Lav Varshney (skimage.data docstring)"),
    "brick": PhotoSource("skimage", "brick", "CC0, CC0Textures (skimage.data docstring)"),
    "grass": PhotoSource("skimage", "grass", "CC0 (skimage.data docstring)"),
    "gravel": PhotoSource("skimage", "gravel", "CC0, CC0Textures (skimage.data docstring)"),
    "china": PhotoSource("sklearn", "china.jpg", "CC-BY 2.0, danielbuechele on Flickr (sklearn images/README.txt)"),
    "flower": PhotoSource("sklearn", "flower.jpg", "CC-BY 2.0, vultilion on Flickr (sklearn images/README.txt)"),
    **{f"mate-{name.lower()}": PhotoSource("mate-backgrounds", f"nature/{name}.jpg", _GPL)
       for name in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
                    "Storm", "TwoWings", "Wood", "YellowFlower")},
    "mate-greentraditional": PhotoSource("mate-backgrounds", "desktop/GreenTraditional.jpg", _GPL),
    "mate-elephants": PhotoSource("mate-backgrounds", "abstract/Elephants.jpg", _GPL),
}
TEST_PHOTOS = ("coffee", "chelsea", "flower")  # held out of training; pip packages only, so tests can use them
EVAL_PHOTOS = TEST_PHOTOS + ("mate-ladybird", "mate-storm")


def available(name: str) -> bool:
    """Whether the photo can be loaded here (wallpapers need the Debian package)."""
    source = PHOTOS[name]
    return source.origin != "mate-backgrounds" or (WALLPAPERS / source.ref).is_file()


def training_photos() -> tuple[str, ...]:
    """Photos available here and not held out."""
    return tuple(n for n in PHOTOS if n not in EVAL_PHOTOS and available(n))


def _open(source: PhotoSource) -> Image.Image:
    if source.origin == "skimage":
        import skimage.data
        return Image.fromarray(getattr(skimage.data, source.ref)())
    if source.origin == "sklearn":
        from sklearn.datasets import load_sample_image
        return Image.fromarray(load_sample_image(source.ref))
    return Image.open(WALLPAPERS / source.ref)


@lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """The photo as RGB, downscaled (Lanczos) so its short side is at most MAX_SHORT_SIDE. ValueError if unknown
    or not installed here."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}")
    if not available(name):
        raise ValueError(f"photo {name!r} needs the Debian package mate-backgrounds")
    image = _open(PHOTOS[name]).convert("RGB")
    scale = MAX_SHORT_SIDE / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    return image
