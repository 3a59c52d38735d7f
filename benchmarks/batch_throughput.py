"""End-to-end images per second of batched PTI (invert + one edit per image) at several batch sizes.

Distinct images: the shapes-world bench scenes (evaluation/suites.py), each edited toward its own ground-truth
target prompt at the default eta. Batch B inverts B images in one `invert` call and edits them in one `edit`
call; B = 1 runs the images one by one, and each B is compared with B = 1 on the same B images (scenes differ
several-fold in how many tuning steps they need, so comparing against other images would bias the speed-up).
The batch sizes are interleaved within each repeat (in a rotating order) and the median over repeats is
reported, since the machine may be shared; images per CPU second (process time, all threads) is printed too.
Besides the time, it prints how many UNet calls the batch made per step against the mean an image makes alone:
with per-image early stopping a batch runs each step until its slowest image stops.

Run: python benchmarks/batch_throughput.py [--model DIR] [--sizes 1,4,8,16] [--repeats 3]
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


def measure(pipe, cases, size: int, steps: int) -> list[dict]:
    """One record per batch: B = 1 runs every case alone (the baseline for each B), B > 1 one batch of the first B."""
    batches = [cases[i:i + 1] for i in range(len(cases))] if size == 1 else [cases[:size]]
    records = []
    for batch in batches:
        invert_s, edit_s, total_s, calls, calls_alone, cpu_s = run_batch(pipe, batch, steps)
        records.append({"images": len(batch), "total_s": total_s, "cpu_s": cpu_s, "invert_s": invert_s,
                        "edit_s": edit_s, "calls": calls, "calls_alone": calls_alone})
    return records


def summarize(runs: dict[int, list[list[dict]]], size: int) -> dict:
    """Medians over repeats for batch `size`, its speed-up against the same images run one by one (B = 1)."""
    def per_repeat(repeat: int) -> dict:
        batch = runs[size][repeat]
        images = sum(r["images"] for r in batch)
        alone = runs[1][repeat][:images]  # B = 1 on exactly the images the batch holds
        wall, cpu = (sum(r[k] for r in batch) for k in ("total_s", "cpu_s"))
        return {"images_per_s": images / wall, "images_per_cpu_s": images / cpu,
                "speedup": sum(r["total_s"] for r in alone) / wall, "speedup_cpu": sum(r["cpu_s"] for r in alone) / cpu,
                "invert_s": sum(r["invert_s"] for r in batch) / images, "edit_s": sum(r["edit_s"] for r in batch) / images}
    repeats = [per_repeat(r) for r in range(len(runs[size]))]
    summary = {k: statistics.median(r[k] for r in repeats) for k in repeats[0]}
    batch = runs[size][-1]
    summary["calls_per_batch"] = sum(r["calls"] for r in batch) / len(batch)
    summary["calls_alone"] = sum(r["calls_alone"] for r in batch) / sum(r["images"] for r in batch)
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--sizes", default="1,4,8,16", help="batch sizes, comma-separated (default 1,4,8,16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if min(sizes) < 1 or args.repeats < 1 or 1 not in sizes:
        parser.error("need positive --sizes including 1, and positive --repeats")
    torch.set_num_threads(args.threads)
    pipe = ptiedit.load_pipeline(args.model)
    cases = shapes_suite(model_family(pipe).default_size, max(sizes))
    run_batch(pipe, cases[:1], 2)  # warm-up: first calls allocate
    runs: dict[int, list[list[dict]]] = {size: [] for size in sizes}
    for repeat in range(args.repeats):
        order = sizes[repeat % len(sizes):] + sizes[:repeat % len(sizes)]  # rotate: no size always runs first
        for size in order:
            runs[size].append(measure(pipe, cases, size, args.steps))
            wall = sum(r["total_s"] for r in runs[size][-1])
            images = sum(r["images"] for r in runs[size][-1])
            print(f"repeat {repeat + 1}, B={size}: {images} images in {wall:.1f} s", flush=True)
    device = f"{model_family(pipe).device} {str(pipe.unet.dtype).removeprefix('torch.')}"
    print(f"\nPTI at defaults ({args.steps} steps, invert + one edit per image) on {device}, {args.threads} threads, "
          f"median of {args.repeats} interleaved repeats; each B against the same B images run one by one")
    print("| B | images/s | speed-up vs the same images at B=1 | images per CPU s | speed-up (CPU) | invert s/image | "
          "edit s/image | inversion UNet calls: per batch / mean per image alone |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        s = summarize(runs, size)
        print(f"| {size} | {s['images_per_s']:.3f} | {s['speedup']:.2f}x | {s['images_per_cpu_s']:.3f} | "
              f"{s['speedup_cpu']:.2f}x | {s['invert_s']:.2f} | {s['edit_s']:.2f} | "
              f"{s['calls_per_batch']:.0f} / {s['calls_alone']:.0f} |")


if __name__ == "__main__":
    main()
