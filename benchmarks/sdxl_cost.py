"""What PTI stage 1 costs on the SDXL architecture, against SD 1.5, with random weights (no download).

speed   Seconds per DDIM step of PTI stage 1 (DDIM inversion + tuning walk, Algorithm 1 lines 1-12) on the CPU in
        fp32 (or --dtype bf16: UNet and VAE; the conditioning is tuned in fp32), one image at --size px, with a fixed budget (inner_steps 2, early_stop 0: every step makes the same
        UNet calls: 3 forwards and 2 forward+backward passes). Each (repeat, architecture) runs in a fresh process,
        the architectures interleaved, and the median is reported.

memory  The stage-1 backward pass: one UNet forward + backward with respect to the conditioning (tokens and, on
        SDXL, pooled) as in one inner Adam step, in bf16 (2 bytes per element, like fp16) at several sizes.
        Measured: the bytes autograd saves for the backward (distinct storages) and the growth of the process's
        resident memory during the pass. Saved activations grow with the pixel count (the script prints the
        ratio between sizes); the 1024 px figure is extrapolated, affine in the pixel count, and added to
        the half-precision weights of every component (the VAE in fp32 when force_upcast): an ESTIMATE of the
        GPU peak, not a GPU measurement (allocator caching and attention kernels differ on a GPU).

    python benchmarks/sdxl_cost.py speed --arch benchmarks/architectures/sdxl --arch benchmarks/architectures/sd15
    python benchmarks/sdxl_cost.py memory --arch benchmarks/architectures/sdxl --sizes 256 512

Runs with --threads torch threads (default 1: on a shared machine oversubscribed OpenMP threads slow small
operations many-fold). Prints one JSON object per measurement.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def build(folder: str, dtype: torch.dtype):
    """The architecture's pipeline with seeded random weights, made ready by ptiedit (DDIM, frozen, CPU)."""
    from ptiedit.models.loading import prepare_pipeline
    from ptiedit.models.random_weights import random_pipeline

    torch.set_default_dtype(dtype)  # initialise in the final dtype: no fp32 copy of a 2.6B-parameter UNet
    try:
        return prepare_pipeline(random_pipeline(folder, seed=0, dtype=dtype), "cpu")
    finally:
        torch.set_default_dtype(torch.float32)


def drop_text_encoders(pipe) -> None:
    """Stage 1 uses the text encoders only to encode the prompts: free their memory (1.6-3.3 GB on SDXL)."""
    for name in ("text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            setattr(pipe, name, None)


def test_image(size: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


def measure_speed(folder: str, size: int, steps: int, inner_steps: int, dtype: torch.dtype) -> dict:
    from ptiedit.diffusion.ddim import make_schedule
    from ptiedit.inversion.pti import prompt_tuning_inversion
    from ptiedit.models.family import model_family

    # Built in bf16, the UNet and VAE then cast to `dtype`; the text encoders only encode the two prompts and are
    # then dropped. This keeps SDXL's fp32 peak at ~11 GB instead of 14 GB; the conditioning is tuned in fp32.
    pipe = build(folder, torch.bfloat16)
    family = model_family(pipe)
    prompt, null = family.encode_prompt(""), family.null_conditioning()  # fp32 conditionings
    parameters = {name: module.num_parameters() for name, module in family.components.items()}
    drop_text_encoders(pipe)
    pipe.unet.to(dtype), pipe.vae.to(dtype)
    z0 = family.encode_images([test_image(size)])  # the image at --size, not fitted to the model's default size
    calls = family.forward_calls
    start = time.perf_counter()
    prompt_tuning_inversion(family, z0, make_schedule(pipe.scheduler, steps), prompt=prompt, null=null,
                            guidance=7.5, inner_steps=inner_steps, early_stop=0.0, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds_per_step": seconds / steps, "unet_calls_per_step": (family.forward_calls - calls) / steps,
            "parameters": parameters}


class PeakRSS:
    """Peak resident set size (bytes) of this process while the block runs, sampled every 5 ms."""

    def __enter__(self):
        self.peak, self.running = self.now(), True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @staticmethod
    def now() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    def sample(self):
        while self.running:
            self.peak = max(self.peak, self.now())
            time.sleep(0.005)


def measure_memory(folder: str, size: int) -> dict:
    from ptiedit.models.family import model_family

    pipe = build(folder, torch.bfloat16)
    family = model_family(pipe)
    latent = size // pipe.vae_scale_factor
    z = torch.randn(1, pipe.unet.config.in_channels, latent, latent, dtype=torch.float32)
    cond = family.encode_prompt("").map(lambda t: t.requires_grad_(True))  # fp32, as stage 1 tunes it
    parameters = {name: module.num_parameters() for name, module in family.components.items()}
    drop_text_encoders(pipe)
    weights = {p.untyped_storage().data_ptr() for p in pipe.unet.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:  # weights saved for the input gradient are counted as weights
            saved[storage.data_ptr()] = storage.nbytes()  # distinct storages: a tensor saved twice counts once
        return tensor

    base = PeakRSS.now()
    with PeakRSS() as rss:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            eps = family(z, 500, cond)
        eps.square().sum().backward()
    return {"saved_bytes": sum(saved.values()), "rss_growth_bytes": rss.peak - base, "parameters": parameters,
            "vae_force_upcast": bool(pipe.vae.config.get("force_upcast", False))}


def run_worker(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["speed", "memory", "worker-speed", "worker-memory"])
    parser.add_argument("--arch", action="append", required=True, help="architecture folder (repeatable)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--inner-steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="UNet and VAE dtype (speed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common = ["--threads", str(args.threads)]
    if args.mode == "worker-speed":
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
        print(json.dumps(measure_speed(args.arch[0], args.size, args.steps, args.inner_steps, dtype)))
    elif args.mode == "worker-memory":
        print(json.dumps(measure_memory(args.arch[0], args.size)))
    elif args.mode == "speed":
        runs: dict[str, list[float]] = {arch: [] for arch in args.arch}
        for repeat in range(args.repeats):
            for arch in args.arch:  # interleaved, so load changes on a shared machine hit every architecture
                result = run_worker(["worker-speed", "--arch", arch, "--size", str(args.size), "--steps",
                                     str(args.steps), "--inner-steps", str(args.inner_steps), "--dtype",
                                     args.dtype, *common])
                runs[arch].append(result["seconds_per_step"])
                print(json.dumps({"arch": arch, "repeat": repeat, **result}), flush=True)
        for arch, seconds in runs.items():
            print(json.dumps({"arch": arch, "median_seconds_per_step": statistics.median(seconds),
                              "runs": seconds, "size": args.size, "inner_steps": args.inner_steps,
                              "dtype": args.dtype, "threads": args.threads}))
    else:
        for arch in args.arch:
            results = {size: run_worker(["worker-memory", "--arch", arch, "--size", str(size), *common])
                       for size in args.sizes}
            for size, result in results.items():
                print(json.dumps({"arch": arch, "size": size, **result}), flush=True)
            small, large = min(results), max(results)
            # affine in the pixel count through the two extreme sizes: a constant part (time/text embeddings)
            # plus activations proportional to the latent area
            per_pixel = (results[large]["saved_bytes"] - results[small]["saved_bytes"]) / (large ** 2 - small ** 2)
            activations = results[large]["saved_bytes"] + per_pixel * (1024 ** 2 - large ** 2)
            params = results[large]["parameters"]
            weights = 2 * sum(params.values()) + (2 * params["vae"] if results[large]["vae_force_upcast"] else 0)
            print(json.dumps({
                "arch": arch, "saved_bytes_ratio": results[large]["saved_bytes"] / results[small]["saved_bytes"],
                "pixel_ratio": (large / small) ** 2, "estimate_1024px_fp16": {
                    "activations_gib": activations / 2 ** 30, "weights_gib": weights / 2 ** 30,
                    "peak_gib": (activations + weights) / 2 ** 30}}))


if __name__ == "__main__":
    main()
