"""Quality bars of the embedded shapes-world model (issue: embedded model): VAE PSNR, caption agreement of
generated images (on solid backgrounds, seen and held-out combinations; objects on textures and photos, read by
the finder), generation time, and reconstruction against the VAE round trip: PTI vs DDIM inversion + CFG on solid
scenes and on held-out texture/photo scenes (issue 11's discrimination bar).

Run: python benchmarks/model_quality.py [--model DIR] [--parts vae generation reconstruction] [--json OUT.json]
     python benchmarks/model_quality.py --vae DIR   (the VAE bars of issue 11 only, e.g. on a training snapshot:
     PSNR on 500 crops of held-out photos and on 500 solid-colour renders, 64 px, posterior mean, 8-bit)
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter

import numpy as np
import torch

import ptiedit
from ptiedit.models.family import model_family
from ptiedit.toyworld.captions import caption
from ptiedit.toyworld.finder import matches_objects
from ptiedit.toyworld.reader import matches_caption, parse_caption, read_scene
from ptiedit.toyworld.render import render
from ptiedit.toyworld.scene import random_scene
from ptiedit.toyworld.world import random_world_scene


def round_trip(pipe, image):
    """The image through the model's VAE and back."""
    family = model_family(pipe)
    return family.decode_latents(family.encode_images([image]))[0]


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-10)))


def vae_psnr(pipe, n: int, seed: int) -> float:
    rng = random.Random(seed)
    scores = []
    for _ in range(n):
        image = render(random_scene(rng, held_out=None))
        scores.append(psnr(image, round_trip(pipe, image)))
    return statistics.mean(scores)


def generate(pipe, captions: list[str], seed: int, batch: int = 25):
    """(image, caption) pairs: 50 DDIM steps, CFG 7.5, batch by batch with seeds fixed per batch."""
    for start in range(0, len(captions), batch):
        prompts = captions[start:start + batch]
        generator = torch.Generator().manual_seed(seed + start)
        yield from zip(pipe(prompts, num_inference_steps=50, guidance_scale=7.5, generator=generator).images, prompts)


def caption_agreement(pipe, n: int, held_out: bool, seed: int) -> dict:
    """Share of generated images whose read attributes agree with every attribute their caption states, and
    per attribute (background; object attributes of one-object captions)."""
    rng = random.Random(seed)
    captions = [caption(random_scene(rng, held_out=held_out), rng) for _ in range(n)]
    hits, agree, stated = 0, Counter(), Counter()
    for image, text in generate(pipe, captions, seed):
        hits += matches_caption(image, text)
        spec = parse_caption(text)
        reading = read_scene(image, n_objects=len(spec.objects))
        checks = {"background": (reading.background, spec.background)}
        if len(spec.objects) == 1 and reading.objects:
            checks |= {a: (getattr(reading.objects[0], a), v) for a, v in spec.objects[0].items()}
        for attribute, (seen, wanted) in checks.items():
            if wanted is not None:
                stated[attribute] += 1
                agree[attribute] += seen == wanted
    return {"all_stated": hits / n} | {a: agree[a] / stated[a] for a in stated}


def textured_agreement(pipe, n: int, seed: int) -> dict:
    """Share of images generated for captions of one-object texture and photo scenes (the captions name only the
    object) in which the finder sees every stated attribute, and per attribute."""
    rng = random.Random(seed)
    captions = [caption(random_world_scene(rng, kinds=("texture", "photo"), n_objects=1, photos="test"), rng)
                for _ in range(n)]
    totals = Counter()
    for image, text in generate(pipe, captions, seed):
        totals.update({a: int(v) for a, v in matches_objects(image, text).items()})
    stated = Counter(a for text in captions for a in parse_caption(text).objects[0])
    return {"all_stated": totals["all"] / n} | {a: totals[a] / stated[a] for a in stated}


def generation_seconds(pipe) -> float:
    times = []
    for seed in range(4):
        start = time.perf_counter()
        pipe("a red circle on a white background", num_inference_steps=50, guidance_scale=7.5,
             generator=torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def pti_reconstruction_psnr(pipe, scenes) -> tuple[float, float]:
    """Mean PSNR of PTI's eta=0 reconstruction against the VAE round trip, and of DDIM inversion with the true
    caption sampled back with CFG on it (PTI gets no caption)."""
    pti, ddim = [], []
    for scene in scenes:
        image = render(scene)
        reference = round_trip(pipe, image)
        for method, prompt, scores in (("pti", "", pti), ("ddim", caption(scene), ddim)):
            inversion = ptiedit.invert(pipe, image, method=method, prompt=prompt, progress=False)
            scores.append(psnr(ptiedit.reconstruct(pipe, inversion, progress=False), reference))
    return statistics.mean(pti), statistics.mean(ddim)


def reconstruction_scenes(n: int, seed: int, textured: bool) -> list:
    """n solid-background scenes, or n held-out texture and photo scenes (issue 11's discrimination bar)."""
    rng = random.Random(seed)
    if textured:
        return [random_world_scene(rng, kinds=("texture", "photo"), photos="test") for _ in range(n)]
    return [random_scene(rng, held_out=None) for _ in range(n)]


def vae_bars(vae, n: int, photos: str, seed: int = 500) -> dict:
    """Issue 11's VAE bars: mean PSNR over n crops of held-out photos (no objects) and over n solid-colour
    renders of the original world (held-out combinations included)."""
    from ptiedit.training.loops import to_tensor
    from ptiedit.training.textured import psnr_db
    from ptiedit.toyworld.world import photo_crops, photo_names

    rng = random.Random(seed)
    solid = to_tensor([render(random_scene(rng, held_out=None)) for _ in range(n)])
    return {"photos": list(photo_names(photos)),
            "vae_photo_psnr_db": psnr_db(vae, to_tensor(photo_crops(n, seed, photos))),
            "vae_solid_psnr_db": psnr_db(vae, solid)}


def write_json(results: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--vae", default=None, metavar="DIR",
                        help="only the VAE bars, on this AutoencoderKL folder (fp16 weights are upcast)")
    parser.add_argument("--photos", default="test", choices=("test", "eval"),
                        help="held-out photo set of the VAE bars: test = the pip-package photos (what CI has), "
                             "eval = those and the held-out wallpapers")
    parser.add_argument("--vae-images", type=int, default=500)
    parser.add_argument("--captions", type=int, default=300)
    parser.add_argument("--held-out-captions", type=int, default=100)
    parser.add_argument("--textured-captions", type=int, default=200)
    parser.add_argument("--pti-images", type=int, default=10)
    parser.add_argument("--parts", nargs="+", default=["vae", "generation", "reconstruction"],
                        choices=("vae", "generation", "reconstruction"),
                        help="generation: time and caption agreement; reconstruction: PTI vs DDIM + CFG on solid "
                             "scenes and on held-out texture/photo scenes (the discrimination bar: gap >= 10 dB)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.vae:
        from diffusers import AutoencoderKL
        vae = AutoencoderKL.from_pretrained(args.vae, torch_dtype=torch.float32).eval()
        results = vae_bars(vae, args.vae_images, args.photos)
        print(f"VAE round trip PSNR, {args.vae_images} crops of held-out photos ({', '.join(results['photos'])}): "
              f"{results['vae_photo_psnr_db']:.2f} dB (bar 27); {args.vae_images} solid-colour renders: "
              f"{results['vae_solid_psnr_db']:.2f} dB (bar 34)")
        write_json(results, args.json)
        return
    pipe = ptiedit.load_pipeline(args.model)
    results = {}
    if "vae" in args.parts:
        results["vae_psnr_db"] = vae_psnr(pipe, args.vae_images, seed=100)
        print(f"VAE round trip PSNR on {args.vae_images} fresh renders: {results['vae_psnr_db']:.2f} dB", flush=True)
    if "generation" in args.parts:
        results["generation_seconds"] = generation_seconds(pipe)
        print(f"one image, 50 DDIM steps with CFG: {results['generation_seconds']:.2f} s", flush=True)
        results["caption_agreement_seen"] = caption_agreement(pipe, args.captions, held_out=False, seed=200)
        results["caption_agreement_held_out"] = caption_agreement(pipe, args.held_out_captions, held_out=True,
                                                                  seed=300)
        results["caption_agreement_textured"] = textured_agreement(pipe, args.textured_captions, seed=600)
        for split in ("seen", "held_out", "textured"):
            rates = ", ".join(f"{a} {r:.1%}" for a, r in results[f"caption_agreement_{split}"].items())
            print(f"caption agreement, {split} combinations: {rates}", flush=True)
    if "reconstruction" in args.parts:
        for name, textured in (("solid", False), ("textured", True)):
            pti, ddim = pti_reconstruction_psnr(pipe, reconstruction_scenes(args.pti_images, 400, textured))
            results[f"pti_psnr_db_{name}"], results[f"ddim_cfg_psnr_db_{name}"] = pti, ddim
            print(f"reconstruction vs VAE round trip, {args.pti_images} {name} scenes: PTI {pti:.2f} dB, "
                  f"DDIM inversion + CFG {ddim:.2f} dB (gap {pti - ddim:.1f} dB)", flush=True)
    write_json(results, args.json)


if __name__ == "__main__":
    main()
