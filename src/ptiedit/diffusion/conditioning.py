"""Conditioning: what a text prompt becomes for the denoiser, in every model family.

Stable Diffusion 1.x/2.x conditions on token embeddings alone; SDXL (and the flow models after it) also on a
pooled embedding. Samplers, inversion methods and save/load treat the pair as one value, so they never branch on
the family. Layout: tokens (B, L, D) and pooled (B, P), or with a leading step axis (T, B, ...) when a method
keeps one conditioning per sampling step (PTI's c_t, null-text inversion's null_t).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Sequence

import torch


@dataclass(frozen=True)
class Conditioning:
    tokens: torch.Tensor
    pooled: torch.Tensor | None = None

    @property
    def per_step(self) -> bool:
        return self.tokens.dim() == 4

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[-3]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Conditioning":
        """Apply fn to every tensor (pooled stays None when absent)."""
        return Conditioning(*(None if t is None else fn(t) for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor | None, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def at_step(self, i: int) -> "Conditioning":
        """The conditioning of sampling step i: per-step ones are indexed, a fixed one serves every step."""
        return self.map(lambda t: t[i]) if self.per_step else self

    def items(self, index) -> "Conditioning":
        """Select batch items (an index, slice or index tensor) on the batch axis, per-step or not."""
        if self.per_step:
            return self.map(lambda t: t[:, index])
        return self.map(lambda t: t[index])

    def expand(self, batch: int) -> "Conditioning":
        """Repeat a batch-1 conditioning to `batch` items (a view, no copy)."""
        if self.batch_size == batch:
            return self
        if self.per_step:
            return self.map(lambda t: t.expand(t.shape[0], batch, *t.shape[2:]))
        return self.map(lambda t: t.expand(batch, *t.shape[1:]))

    def to(self, device=None, dtype=None) -> "Conditioning":
        return self.map(lambda t: t.to(device=device, dtype=dtype))

    def detach(self) -> "Conditioning":
        return self.map(lambda t: t.detach().clone())

    @staticmethod
    def cat(parts: Sequence["Conditioning"]) -> "Conditioning":
        """Concatenate on the batch axis."""
        axis = 1 if parts[0].per_step else 0
        return Conditioning(*(None if ts[0] is None else torch.cat(ts, axis) for ts in zip(*(p.tensors() for p in parts))))

    @staticmethod
    def stack_steps(steps: Sequence["Conditioning"]) -> "Conditioning":
        """Per-step conditionings (one per sampling step) -> one with a leading step axis."""
        return Conditioning(*(None if ts[0] is None else torch.stack(ts) for ts in zip(*(s.tensors() for s in steps))))

    def blend(self, target: "Conditioning", eta: torch.Tensor) -> "Conditioning":
        """c~ = eta c_target + (1 - eta) c (Dong et al. 2023, Algorithm 1 line 15), eta (B,) on this device.

        self is one item (batch 1, per-step or not) and target one prompt (batch 1); the result has batch len(eta).
        """
        def mix(c: torch.Tensor, c_target: torch.Tensor) -> torch.Tensor:
            w = eta.view(-1, *([1] * (c_target.dim() - 1)))  # one weight per batch item
            return w * c_target + (1 - w) * c
        return Conditioning(*(None if c is None else mix(c, c_t) for c, c_t in zip(self.tensors(), target.tensors())))
