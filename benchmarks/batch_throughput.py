"""End-to-end images per second of batched PTI (invert + one edit per image) at several batch sizes.

Distinct images: the shapes-world bench scenes (evaluation/suites.py), each edited toward its own ground-truth
target prompt at the default eta. Batch B inverts B images in one `invert` call and edits them in one `edit`
call; B = 1 runs the first --single images one by one. The batch sizes are interleaved within each repeat (in a
rotating order) and the median over repeats is reported, since the machine may be shared; images per CPU second
(process time, all threads) is printed too, a figure that survives a shared machine better with --threads 1.
Besides the time, it prints how many UNet calls the batch made per step against the mean an image makes alone:
with per-image early stopping a batch runs each step until its slowest image stops.

Run: python benchmarks/batch_throughput.py [--model DIR] [--sizes 1,4,8,16] [--repeats 3] [--single 4]
                                           [--steps 50] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import ptiedit
from ptiedit.evaluation.suites import shapes_suite
from ptiedit.models.family import model_family


def run_batch(pipe, cases, steps: int) -> tuple[float, float, float, int, float, float]:
    """(invert s, edit s, total s, inversion UNet calls, the same summed over the images alone, CPU s) of a batch."""
    family = model_family(pipe)
    calls = family.forward_calls
    start, start_cpu = time.perf_counter(), time.process_time()
    inversions = ptiedit.invert(pipe, [c.image for c in cases], steps=steps, progress=False, max_batch=len(cases))
    inverted, inversion_calls = time.perf_counter(), family.forward_calls - calls
    ptiedit.edit(pipe, inversions, [c.edits[0].target_prompt for c in cases], progress=False,
                 max_batch=len(cases))
    end = time.perf_counter()
    return (inverted - start, end - inverted, end - start, inversion_calls,
            sum(i.stats["unet_calls"] for i in inversions), time.process_time() - start_cpu)


def measure(pipe, cases, size: int, single: int, steps: int) -> dict:
    """Images per second at batch `size`: one batch of the first `size` cases (B = 1: `single` cases one by one)."""
    batches = [cases[i:i + 1] for i in range(single)] if size == 1 else [cases[:size]]
    parts = [run_batch(pipe, batch, steps) for batch in batches]
    images = sum(len(b) for b in batches)
    invert_s, edit_s, total_s = (sum(p[k] for p in parts) for k in range(3))
    return {"images_per_s": images / total_s, "images_per_cpu_s": images / sum(p[5] for p in parts),
            "invert_s": invert_s / images, "edit_s": edit_s / images,
            "calls_per_batch": sum(p[3] for p in parts) / len(batches),
            "calls_alone": sum(p[4] for p in parts) / images}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--sizes", default="1,4,8,16", help="batch sizes, comma-separated (default 1,4,8,16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", type=int, default=4, help="images run one by one for B = 1 (default 4)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if min(sizes) < 1 or args.repeats < 1 or args.single < 1 or 1 not in sizes:
        parser.error("need positive --sizes including 1, --repeats and --single")
    torch.set_num_threads(args.threads)
    pipe = ptiedit.load_pipeline(args.model)
    cases = shapes_suite(model_family(pipe).default_size, max(max(sizes), args.single))
    run_batch(pipe, cases[:1], 2)  # warm-up: first calls allocate
    runs: dict[int, list[dict]] = {size: [] for size in sizes}
    for repeat in range(args.repeats):
        order = sizes[repeat % len(sizes):] + sizes[:repeat % len(sizes)]  # rotate: no size always runs first
        for size in order:
            runs[size].append(measure(pipe, cases, size, args.single, args.steps))
            run = runs[size][-1]
            print(f"repeat {repeat + 1}, B={size}: {run['images_per_s']:.3f} images/s, "
                  f"{run['images_per_cpu_s']:.3f} images per CPU s", flush=True)
    base = statistics.median(r["images_per_s"] for r in runs[1])
    print(f"\nPTI at defaults ({args.steps} steps, invert + one edit per image), {args.threads} threads, "
          f"median of {args.repeats} interleaved repeats")
    base_cpu = statistics.median(r["images_per_cpu_s"] for r in runs[1])
    print("| B | images/s | speed-up vs B=1 | images per CPU s | speed-up (CPU) | invert s/image | edit s/image | "
          "inversion UNet calls: per batch / mean per image alone |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        med = {k: statistics.median(r[k] for r in runs[size])
               for k in ("images_per_s", "images_per_cpu_s", "invert_s", "edit_s")}
        last = runs[size][-1]
        print(f"| {size} | {med['images_per_s']:.3f} | {med['images_per_s'] / base:.2f}x | "
              f"{med['images_per_cpu_s']:.3f} | {med['images_per_cpu_s'] / base_cpu:.2f}x | {med['invert_s']:.2f} | "
              f"{med['edit_s']:.2f} | {last['calls_per_batch']:.0f} / {last['calls_alone']:.0f} |")


if __name__ == "__main__":
    main()
