"""Where PTI's time goes: UNet forward/backward against everything else, early stopping, and a full edit.

Run: python benchmarks/pti_speed.py [--model DIR] [--steps 50] [--inner-steps 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import ptiedit
from ptiedit.models.family import model_family
from ptiedit.toyworld.render import render
from ptiedit.toyworld.scene import Obj, Scene


def median_time(fn, repeats: int = 20) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unet_costs(pipe):
    """Seconds per UNet forward without grad and per forward+backward w.r.t. the embedding, alone."""
    unet, size = pipe.unet, pipe.unet.config.sample_size
    z = torch.randn(1, unet.config.in_channels, size, size)
    c = model_family(pipe).encode_prompt("a red circle").tokens
    t = torch.tensor(500)

    def forward():
        with torch.no_grad():
            unet(z, t, encoder_hidden_states=c)

    def forward_backward():
        e = c.clone().requires_grad_(True)
        unet(z, t, encoder_hidden_states=e).sample.square().mean().backward()

    return median_time(forward), median_time(forward_backward)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--inner-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = ptiedit.load_pipeline(args.model)
    image = render(Scene("white", (Obj("circle", "red", "big", "center"),))).resize((model_family(pipe).default_size,) * 2)
    t_fwd, t_fwd_bwd = unet_costs(pipe)
    print(f"UNet alone: forward {t_fwd * 1e3:.1f} ms, forward+backward w.r.t. embedding {t_fwd_bwd * 1e3:.1f} ms")

    for label, early_stop in (("no early stopping", 0.0), ("early stopping (default)", None)):
        options = {"inner_steps": args.inner_steps} | ({} if early_stop is None else {"early_stop": early_stop})
        start = time.perf_counter()
        inversion = ptiedit.invert(pipe, image, steps=args.steps, progress=False, **options)
        total = time.perf_counter() - start
        # A step that stopped early made its last forward with grad (no backward); one that ran out of inner steps
        # made it without grad. Count that early-stop forward with the fwd+bwd ones: it slightly overstates them.
        iterations = inversion.stats["iterations"]
        inner = sum(k + (k < args.inner_steps) for k in iterations)
        no_grad = inversion.stats["unet_calls"] - inner  # DDIM inversion, uncond branch, exhausted-step evaluations
        unet = inner * t_fwd_bwd + no_grad * t_fwd
        recon = ptiedit.reconstruct(pipe, inversion, progress=False)
        psnr = psnr_vs_round_trip(pipe, image, recon)
        print(f"{label}: stage 1 {total:.2f} s, {inner} fwd+bwd + {no_grad} fwd; UNet ~{unet:.2f} s, "
              f"outside the UNet ~{total - unet:.2f} s ({100 * (total - unet) / total:.0f}%); "
              f"mean Adam updates per step {sum(iterations) / args.steps:.1f}; reconstruction {psnr:.2f} dB vs VAE round trip")

    start = time.perf_counter()
    inversion = ptiedit.invert(pipe, image, steps=args.steps, progress=False)
    ptiedit.edit(pipe, inversion, "a green circle on a white background", progress=False)
    print(f"full edit at defaults (invert + one edit, {args.steps} steps): {time.perf_counter() - start:.2f} s")


def psnr_vs_round_trip(pipe, image, recon) -> float:
    import numpy as np

    reference = np.asarray(model_family(pipe).decode_latents(model_family(pipe).encode_images([image]))[0], dtype=np.float64)
    mse = np.mean((np.asarray(recon, dtype=np.float64) - reference) ** 2)
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-10)))


if __name__ == "__main__":
    main()
