"""Per-attribute accuracy of the shapes-world attribute reader.

On fresh renders, on renders degraded by blur and colour noise, and (with --model) on VAE round trips; then
the same on the textured world (patterns, textures, held-out photos, jittered objects), where the reader is given
each scene's background, reported per background kind; then the finder, with and without the background, on one-object
texture and photo scenes: how often all attributes of the true caption hold, and of a caption with one attribute changed.
Run: python benchmarks/reader_accuracy.py [--n 500] [--model DIR_OR_VAE_PT]
--model takes a diffusers Stable Diffusion folder (its vae/ subfolder is used), a bare AutoencoderKL folder (e.g. a
training snapshot's vae/) or a train.py checkpoint vae.pt.
"""
from __future__ import annotations

import argparse
import itertools
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from ptiedit.toyworld.captions import describe
from ptiedit.toyworld.finder import matches_objects
from ptiedit.toyworld.reader import ATTRIBUTES, attribute_agreement, read_scene
from ptiedit.toyworld.render import render
from ptiedit.toyworld.scene import COLORS, POSITIONS, SHAPES, SIZES, is_held_out, random_scene
from ptiedit.toyworld.world import BACKGROUND_KINDS, background_kind, random_world_scene


def degrade(image: np.ndarray, rng: np.random.Generator, blur: float, noise: float, shift: float) -> np.ndarray:
    """Gaussian blur, per-pixel noise and one global colour shift (all in 0..255 units), as uint8."""
    out = ndimage.gaussian_filter(image.astype(np.float32), (blur, blur, 0))
    out += rng.normal(0, noise, out.shape) + rng.normal(0, shift, 3)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def load_vae(path: Path):
    """A diffusers AutoencoderKL from a pipeline folder, or from a train.py vae.pt checkpoint."""
    if path.is_file():
        import torch

        from ptiedit.training.models import build_vae
        vae = build_vae()
        vae.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["model"])
        return vae.eval()
    import torch
    from diffusers import AutoencoderKL
    subfolder = None if (path / "config.json").is_file() else "vae"
    return AutoencoderKL.from_pretrained(path, subfolder=subfolder, torch_dtype=torch.float32).eval()


def vae_round_trip(vae, images: np.ndarray, batch: int = 50) -> np.ndarray:
    """Encode (posterior mean) and decode uint8 images (N, H, W, 3)."""
    import torch
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
            y = vae.decode(vae.encode(x).latent_dist.mean).sample
            out.append(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def accuracy(images, scenes, given_count: bool, known_background: bool = False) -> dict[str, float]:
    """Fraction of images whose reading agrees with the scene, per attribute and for all attributes at once."""
    totals = Counter()
    for image, scene in zip(images, scenes):
        reading = read_scene(image, len(scene.objects) if given_count else None,
                             background=scene.background if known_background else None)
        agreement = attribute_agreement(reading, scene)
        totals.update({k: int(v) for k, v in agreement.items()} | {"all": int(all(agreement.values()))})
    return {k: totals[k] / len(scenes) for k in (*ATTRIBUTES, "all")}


def finder_accuracy(images, scenes, rng: random.Random, known_background: bool) -> dict[str, float]:
    """For the finder (given each scene's background or not): the share of images on which every attribute of the scene's full caption holds ("true"),
    per attribute, and for each attribute the share on which all hold when that attribute alone is changed
    ("<attribute> changed", which a perfect finder keeps at 0) and on which that attribute alone holds."""
    options = {"color": list(COLORS), "shape": SHAPES, "size": SIZES, "position": POSITIONS}
    totals = Counter()
    for image, scene in zip(images, scenes):
        obj = scene.objects[0]
        background = scene.background if known_background else None
        agreement = matches_objects(image, describe(obj, True, True), background)
        totals.update({"true": int(agreement.pop("all"))} | {k: int(v) for k, v in agreement.items()})
        for attribute, values in options.items():
            wrong = replace(obj, **{attribute: rng.choice([v for v in values if v != getattr(obj, attribute)])})
            agreement = matches_objects(image, describe(wrong, True, True), background)
            totals[f"{attribute} changed"] += agreement["all"]
            totals[f"{attribute} changed, {attribute}"] += agreement[attribute]
    return {k: v / len(scenes) for k, v in totals.items()}


def report(name: str, result: dict[str, float], seconds: float, n: int):
    cells = "  ".join(f"{k} {100 * v:5.1f}%" for k, v in result.items())
    print(f"{name:<56} {cells}  ({1000 * seconds / n:.1f} ms/image)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="number of random scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=None, help="diffusers SD folder or train.py vae.pt")
    parser.add_argument("--blur", type=float, default=0.7, help="gaussian sigma (pixels) of the degraded set")
    parser.add_argument("--noise", type=float, default=6.0, help="per-pixel noise std of the degraded set")
    parser.add_argument("--shift", type=float, default=10.0, help="global colour shift std of the degraded set")
    parser.add_argument("--given-count", action="store_true", help="tell the reader how many objects to find")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the VAE")
    parser.add_argument("--photos", default="test", choices=("test", "eval"),
                        help="held-out photos of the textured scenes (test: pip-package photos only)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be positive")

    rng = random.Random(args.seed)
    scenes = [random_scene(rng, held_out=None) for _ in range(args.n)]
    fresh = np.stack([np.asarray(render(s)) for s in scenes])
    noise_rng = np.random.default_rng(args.seed)
    sets = {"fresh renders": fresh,
            f"blur {args.blur} noise {args.noise:g} shift {args.shift:g}":
                np.stack([degrade(im, noise_rng, args.blur, args.noise, args.shift) for im in fresh])}
    textured_scenes = [random_world_scene(rng, held_out=None, photos=args.photos) for _ in range(args.n)]
    textured = np.stack([np.asarray(render(s)) for s in textured_scenes])
    textured_sets = {"fresh textured renders": textured}
    if args.model is not None:
        import torch
        torch.set_num_threads(args.threads)
        vae = load_vae(args.model)
        start = time.perf_counter()
        sets["VAE round trip"] = vae_round_trip(vae, fresh)
        print(f"VAE round trip of {args.n} images: {time.perf_counter() - start:.1f} s")
        textured_sets["VAE round trip of textured renders"] = vae_round_trip(vae, textured)
    # The held-out split (purple backgrounds, some shape/colour pairs) is reported apart: a VAE trained on the
    # training split alone may fail there, which is the VAE's limit rather than the reader's.
    splits = {"all": range(args.n), "train split": [i for i, s in enumerate(scenes) if not is_held_out(s)],
              "held-out split": [i for i, s in enumerate(scenes) if is_held_out(s)]}
    for name, images in sets.items():
        for split, indices in splits.items():
            if not indices:
                continue
            start = time.perf_counter()
            result = accuracy(images[list(indices)], [scenes[i] for i in indices], args.given_count)
            report(f"{name} [{split}, n={len(indices)}]", result, time.perf_counter() - start, len(indices))
    kinds = {kind: [i for i, s in enumerate(textured_scenes) if background_kind(s) == kind]
             for kind in BACKGROUND_KINDS}
    for name, images in textured_sets.items():
        for kind, indices in {"all": range(args.n), **kinds}.items():
            if not indices:
                continue
            start = time.perf_counter()
            result = accuracy(images[list(indices)], [textured_scenes[i] for i in indices], args.given_count,
                              known_background=True)
            report(f"{name} [{kind}, n={len(indices)}]", result, time.perf_counter() - start, len(indices))
    print("finder, one object on textures and photos: share of images with all attributes holding")
    single = [random_world_scene(rng, kinds=("texture", "photo"), n_objects=1, held_out=None, photos=args.photos)
              for _ in range(args.n)]
    single_sets = {"fresh renders": np.stack([np.asarray(render(s)) for s in single])}
    if args.model is not None:
        single_sets["VAE round trip"] = vae_round_trip(vae, single_sets["fresh renders"])
    for (name, images), known in itertools.product(single_sets.items(), (False, True)):
        start = time.perf_counter()
        result = finder_accuracy(images, single, random.Random(args.seed), known)
        given = "background given" if known else "no background"
        report(f"finder, {given}: {name} [n={args.n}]", result, time.perf_counter() - start, args.n)


if __name__ == "__main__":
    main()
