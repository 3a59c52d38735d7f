"""PTI's reconstruction stage vs null-text inversion: wall time at equal steps, and time to equal reconstruction PSNR.

Both methods run in this one process on the same shapes-world renders with the same DDIM steps and guidance,
interleaved image by image so that background load hits both alike. Each runs a sweep of tuning budgets (Adam
steps per timestep, early-stop threshold); reconstruction PSNR is measured at eta = 0 against the VAE round trip
(what a perfect inversion gives back). Reported: wall and CPU seconds of the inversion, UNet calls, PSNR; the two
methods at their default settings; and, for each, the cheapest setting that reaches NTI's default PSNR.
PTI with inner steps 0 tunes nothing: with its empty init prompt cond = uncond, so the guided step equals the
unguided one and the reconstruction is plain DDIM inversion's; read its figures as that.

Run: python benchmarks/pti_vs_nti_time.py [--model DIR] [--n 4] [--steps 50] [--threads 2]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict

import numpy as np
import torch

from ptiedit import invert, load_pipeline
from ptiedit.models.family import model_family
from ptiedit.editing.edit import edit_latents
from ptiedit.evaluation.metrics import psnr
from ptiedit.toyworld.render import render
from ptiedit.toyworld.scene import random_scene

# (inner steps, early stop): None = the method's default threshold (PTI 1e-5; NTI 1e-5 + 2e-5 i).
SWEEP = [(0, None), (1, None), (2, None), (3, None), (5, None), (10, None), (10, 1e-4), (10, 1e-3)]
METHODS = {"pti": "PTI (c_t tuned, empty init prompt)", "null_text": "null-text inversion (source caption)"}
DEFAULT = (10, None)
TOLERANCE_DB = 0.05  # a setting "reaches" a PSNR when its mean is at most this far below it


def inversion_run(pipe, image, method: str, prompt: str, steps: int, guidance: float, inner: int,
                  early_stop: float | None, reference) -> dict:
    """Time one inversion (wall and process CPU) and measure its reconstruction PSNR."""
    options = {"inner_steps": inner} | ({} if early_stop is None else {"early_stop": early_stop})
    wall, cpu = time.perf_counter(), time.process_time()
    inversion = invert(pipe, image, method=method, prompt=prompt if method != "pti" else "", steps=steps,
                       guidance=guidance, progress=False, **options)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    reconstruction = model_family(pipe).decode_latents(edit_latents(pipe, inversion, "", [0.0], progress=False))[0]
    return {"wall": wall, "cpu": cpu, "calls": inversion.stats["unet_calls"], "psnr": psnr(reconstruction, reference)}


def cheapest_reaching(results: dict, method: str, target: float):
    """(setting, mean wall seconds) of the fastest setting whose mean PSNR reaches target, or None."""
    reached = [(np.mean(r["wall"]), setting) for (m, setting), r in results.items()
               if m == method and np.mean(r["psnr"]) >= target - TOLERANCE_DB]
    return min(reached)[::-1] if reached else None


def label(setting) -> str:
    inner, early_stop = setting
    return f"inner {inner}, early stop {'default' if early_stop is None else f'{early_stop:g}'}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="diffusers SD folder (default: the embedded shapes-world model)")
    parser.add_argument("--n", type=int, default=4, help="number of renders (default 4)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = parser.parse_args(argv)
    if args.n < 1 or args.steps < 1:
        parser.error("--n and --steps must be positive")
    torch.set_num_threads(args.threads)
    try:
        pipe = load_pipeline(args.model)
    except ValueError as error:
        print(f"pti_vs_nti_time: error: {error}", file=sys.stderr)
        return 2
    from ptiedit.toyworld.captions import caption

    size, rng = model_family(pipe).default_size, random.Random(args.seed)
    scenes = [random_scene(rng) for _ in range(args.n)]
    images = [(render(s, size), caption(s)) for s in scenes]
    references = [model_family(pipe).decode_latents(model_family(pipe).encode_images([image]))[0] for image, _ in images]
    print(f"model {pipe.ptiedit_model_name}, {size} px; {args.n} renders, {args.steps} DDIM steps, guidance "
          f"{args.guidance}, {args.threads} threads")
    inversion_run(pipe, images[0][0], "pti", "", 2, args.guidance, 1, None, references[0])  # warm-up
    results = defaultdict(lambda: defaultdict(list))
    for (image, text), reference in zip(images, references):
        for setting in SWEEP:
            for method in METHODS:  # interleaved: both see the same machine load
                run = inversion_run(pipe, image, method, text, args.steps, args.guidance, *setting, reference)
                for key, value in run.items():
                    results[method, setting][key].append(value)

    print(f"\n{'method':<10} {'setting':<34} {'wall s':>8} {'CPU s':>8} {'UNet calls':>11} {'recon PSNR':>11}")
    for (method, setting), r in results.items():
        print(f"{method:<10} {label(setting):<34} {np.mean(r['wall']):8.2f} {np.mean(r['cpu']):8.2f} "
              f"{np.mean(r['calls']):11.0f} {np.mean(r['psnr']):11.2f}")
    pti, nti = results["pti", DEFAULT], results["null_text", DEFAULT]
    print(f"\nEqual settings ({label(DEFAULT)}): PTI {np.mean(pti['wall']):.2f} s, PSNR {np.mean(pti['psnr']):.2f} dB; "
          f"NTI {np.mean(nti['wall']):.2f} s, PSNR {np.mean(nti['psnr']):.2f} dB; "
          f"time ratio PTI/NTI {np.mean(pti['wall']) / np.mean(nti['wall']):.2f}")
    target = float(np.mean(nti["psnr"]))
    fastest = {m: cheapest_reaching(results, m, target) for m in METHODS}
    print(f"To reach NTI's default reconstruction PSNR ({target:.2f} dB, tolerance {TOLERANCE_DB} dB):")
    for method, found in fastest.items():
        print(f"  {METHODS[method]}: " + (f"{label(found[0])}, {found[1]:.2f} s" if found else "not reached"))
    if fastest["pti"] and fastest["pti"][0][0] == 0:
        print("  (PTI's fastest setting tunes nothing: empty-prompt DDIM inversion, cond = uncond)")
    if all(fastest.values()):
        ratio = fastest["pti"][1] / fastest["null_text"][1]
        print(f"  time ratio PTI/NTI {ratio:.2f} (target <= 0.4: {'met' if ratio <= 0.4 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
