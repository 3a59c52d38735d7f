"""How much batching can speed up PTI on this machine: the UNet's own cost per call against the batch size.

1. Times one UNet forward+backward with respect to the text conditioning (what a PTI tuning iteration costs) and
   one no-grad forward (an unconditional or inversion step) at each batch size, interleaved over repeats, medians.
   B x t(1) / t(B) is the ceiling on any batched speed-up: B images for the price of t(B).
2. With --scenes N, inverts N bench scenes (PTI defaults, batched: per-image iteration counts equal one-by-one
   runs) and predicts, from the timings of 1, the inversion speed-up at each batch size over the same images
   one by one for two schedules:
   - step-synchronous (ptiedit's): all images advance one timestep together; each tuning iteration runs the
     images still above the early-stopping threshold;
   - continuous: every image advances on its own and a finished image's slot takes the next image at once; each
     call holds one row per slot (two when a slot starts a timestep: the unconditional branch and the first
     tuning evaluation), run with gradients whenever any row needs them.
   A model of the call costs, not a measurement of the schedules.

Run: python benchmarks/unet_batch_scaling.py [--model DIR] [--sizes 1,2,4,8,16] [--repeats 7] [--threads 2]
                                             [--scenes 16]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import ptiedit
from ptiedit.evaluation.suites import shapes_suite
from ptiedit.models.family import model_family

INNER_STEPS = 10  # PTI's default: the last evaluation of a step that used the whole budget needs no backward


def time_calls(unet, z1: torch.Tensor, c1: torch.Tensor, sizes: list[int], repeats: int) -> dict:
    """{B: (forward+backward ms, forward ms)}, medians over interleaved repeats."""
    t = torch.tensor(500)

    def forward_backward(b):
        c = c1.expand(b, -1, -1).clone().requires_grad_(True)
        unet(z1.expand(b, -1, -1, -1), t, encoder_hidden_states=c).sample.square().sum().backward()

    def forward(b):
        with torch.no_grad():
            unet(z1.expand(b, -1, -1, -1), t, encoder_hidden_states=c1.expand(b, -1, -1))

    runs = {b: ([], []) for b in sizes}
    for b in sizes:  # warm-up: first calls at a size allocate
        forward_backward(b), forward(b)
    for _ in range(repeats):
        for b in sizes:
            for times, call in zip(runs[b], (forward_backward, forward)):
                start = time.perf_counter()
                call(b)
                times.append(1000 * (time.perf_counter() - start))
    return {b: tuple(statistics.median(times) for times in runs[b]) for b in sizes}


def image_calls(iterations: list[int]) -> list[tuple[int, bool]]:
    """One image's UNet calls alone, as (rows, needs backward): DDIM inversion, then per timestep the
    unconditional branch and the tuning evaluations (merged into one call of two rows at the step's start)."""
    calls = [(1, False)] * len(iterations)
    for k in iterations:
        calls += [(2, k < INNER_STEPS)] + [(1, j < INNER_STEPS) for j in range(1, k + 1)]
    return calls


def predict(per_image: list[list[int]], costs: dict, b: int) -> tuple[float, float]:
    """Predicted inversion speed-ups (step-synchronous, continuous) of batch b over the same images alone."""
    sizes = sorted(costs)

    def fb(n):  # forward+backward of n rows, interpolated between the measured sizes
        return float(np.interp(n, sizes, [costs[s][0] for s in sizes]))

    def fw(n):
        return float(np.interp(n, sizes, [costs[s][1] for s in sizes]))

    steps = len(per_image[0])
    alone = sum(steps * fw(1) + sum(fw(1) + sum(fb(1) if j < INNER_STEPS else fw(1) for j in range(k + 1))
                                    for k in its) for its in per_image)
    synchronous = 0.0
    for lo in range(0, len(per_image), b):
        group = per_image[lo:lo + b]
        synchronous += steps * fw(len(group))
        for i in range(steps):
            ks = [its[i] for its in group]
            synchronous += fw(len(group)) + sum(
                (fb if j < INNER_STEPS else fw)(sum(k >= j for k in ks)) for j in range(max(ks) + 1))
    queue, slots, continuous = [image_calls(its) for its in per_image], [], 0.0
    while queue or slots:
        while len(slots) < b and queue:
            slots.append(queue.pop(0))
        rows = sum(s[0][0] for s in slots)
        continuous += fb(rows) if any(s[0][1] for s in slots) else fw(rows)
        slots = [s[1:] for s in slots if len(s) > 1]
    return alone / synchronous, alone / continuous


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--sizes", default="1,2,4,8,16", help="batch sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scenes", type=int, default=0, help="also predict schedules from N bench scenes")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")} | {1})
    if min(sizes) < 1 or args.repeats < 1 or args.scenes < 0:
        parser.error("need positive --sizes and --repeats, and --scenes >= 0")
    torch.set_num_threads(args.threads)
    pipe = ptiedit.load_pipeline(args.model)
    pipe.unet.requires_grad_(False)
    family = model_family(pipe)
    side = family.default_size // pipe.vae_scale_factor
    z1 = torch.randn(1, pipe.unet.config.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    c1 = family.encode_prompt("a big red circle").tokens
    costs = time_calls(pipe.unet, z1, c1, sizes, args.repeats)
    print(f"UNet of {args.model or 'the embedded model'}, {args.threads} threads, medians of {args.repeats}")
    print("| B | forward+backward ms | forward ms | ceiling B x t(1) / t(B), forward+backward | forward |")
    print("|---|---|---|---|---|")
    for b in sizes:
        print(f"| {b} | {costs[b][0]:.1f} | {costs[b][1]:.1f} | {b * costs[1][0] / costs[b][0]:.2f}x | "
              f"{b * costs[1][1] / costs[b][1]:.2f}x |")
    if args.scenes:
        cases = shapes_suite(family.default_size, args.scenes)
        inversions = ptiedit.invert(pipe, [c.image for c in cases], progress=False)
        per_image = [inv.stats["iterations"] for inv in inversions]
        print(f"\nPredicted PTI inversion speed-up over the same {args.scenes} scenes one by one "
              f"(Adam updates per step: mean {np.mean(per_image):.1f}, per image {min(map(sum, per_image))} to "
              f"{max(map(sum, per_image))} in all)")
        print("| B | step-synchronous | continuous |")
        print("|---|---|---|")
        for b in sizes[1:]:
            print("| {} | {:.2f}x | {:.2f}x |".format(b, *predict(per_image, costs, b)))


if __name__ == "__main__":
    main()
