"""The result every inversion method returns, and its safetensors + JSON file format (no pickle)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from ..diffusion.conditioning import Conditioning
from ..models.fingerprint import check_same_model
from ..outputs import atomic_path

FORMAT = "ptiedit.inversion/2"  # /1 held bare embeddings and a weaker model check


@dataclass
class Inverted:
    """What an inversion method computes for a batch of images; `invert` splits it into one Inversion each."""

    z_T: torch.Tensor  # (B, C, h, w)
    cond: Conditioning  # batch B, or batch 1 shared by every image; per step (T, B, ...) or not
    uncond: Conditioning
    stats: dict  # per-image lists under "per_image", batch totals otherwise
    reconstruction: torch.Tensor | None = None  # latents the method itself reconstructs, when it has them
    timesteps: torch.Tensor | None = None  # only when sampling starts part-way (SDEdit, FlowEdit)
    z0: torch.Tensor | None = None  # the source latents, for methods whose sampling steps use them (sampling)
    sampling: dict = field(default_factory=dict)  # the method's per-step rule for editing (Inversion.sampling)

    @classmethod
    def from_steps(cls, z_T, cond, uncond, steps, seconds: float, reconstruction=None) -> "Inverted":
        """A tuning method's result, with each image's loss and Adam updates per step from its TunedSteps."""
        per_image = [{"loss": [float(s.loss[b]) for s in steps], "initial_loss": [float(s.first_loss[b]) for s in steps],
                      "iterations": [int(s.iterations[b]) for s in steps]} for b in range(len(z_T))]
        return cls(z_T, cond, uncond, {"seconds": seconds, "per_image": per_image}, reconstruction)

    def item(self, b: int) -> tuple[torch.Tensor, Conditioning, Conditioning, dict, torch.Tensor | None]:
        """Image b's z_T, cond, uncond, stats (batch-1 conditionings) and reconstruction, if any."""
        # copies, so one image's Inversion does not keep the whole batch's tensors alive
        pick = (lambda c: c.items(slice(b, b + 1)).map(torch.Tensor.contiguous) if c.batch_size > 1 else c)
        stats = {key: value for key, value in self.stats.items() if key != "per_image"}
        stats.update(self.stats.get("per_image", [{}] * len(self.z_T))[b])
        reconstruction = None if self.reconstruction is None else self.reconstruction[b:b + 1].clone()
        return self.z_T[b:b + 1].clone(), pick(self.cond), pick(self.uncond), stats, reconstruction

    def source(self, b: int) -> torch.Tensor | None:
        """Image b's z0, if the method keeps it."""
        return None if self.z0 is None else self.z0[b:b + 1].clone()


@dataclass
class Inversion:
    """What editing needs to re-run the sampler from one image's inverted noise.

    Sampling step i (timesteps[i], descending) uses cond.at_step(i) and uncond.at_step(i): per-step
    conditionings carry a leading step axis (T, 1, ...); a fixed one serves every step.
    - PTI: cond = the tuned c_t, uncond = the unconditional branch.
    - Null-text inversion: cond = source prompt, uncond = the tuned null embeddings.
    - Negative-prompt inversion: cond = uncond = source prompt.
    - DDIM / SDEdit: cond = source prompt (or null), uncond = null; SDEdit's timesteps start part-way.
    - RF-Inversion, FlowEdit (flow models): as DDIM / SDEdit, plus z0 and `sampling`, the method's rule that
      editing applies after each sampling step (inversion/steps.py): RF-Inversion's reverse controller toward z0,
      FlowEdit's source branch. Empty for every other method.
    """

    method: str
    z_T: torch.Tensor
    timesteps: torch.Tensor
    cond: Conditioning
    uncond: Conditioning
    settings: dict
    fingerprint: dict
    stats: dict = field(default_factory=dict)
    # The latent the method itself reconstructed (PTI, null-text: what eta 0 replays); in memory only, not saved.
    reconstruction: torch.Tensor | None = field(default=None, repr=False)
    # RF-Inversion's and FlowEdit's source latent and per-step rule (inversion/steps.py); saved. None / {} otherwise.
    z0: torch.Tensor | None = field(default=None, repr=False)
    sampling: dict = field(default_factory=dict)

    @property
    def guidance(self) -> float:
        return float(self.settings["guidance"])

    @property
    def distilled_guidance(self) -> float | None:
        """The distilled guidance input editing's sampler runs at (FlowEdit's target one on FLUX.1-dev; None: the
        model's own)."""
        return self.sampling.get("target_distilled_guidance")

    def check_compatible(self, fingerprint: dict, allow_changed_weights: bool = False) -> None:
        """Refuse to edit with a pipeline other than the one this inversion was made with (models/fingerprint.py);
        allow_changed_weights accepts other weights of the same family and schedule (a LoRA applied since)."""
        check_same_model(self.fingerprint, fingerprint, allow_changed_weights)

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"z_T": self.z_T, "timesteps": self.timesteps, **({"z0": self.z0} if self.z0 is not None else {})}
        for branch in ("cond", "uncond"):
            c = getattr(self, branch)
            named.update({f"{branch}.{f.name}": t for f, t in zip(fields(c), c.tensors()) if t is not None})
        return named

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: tensors in safetensors, everything else as JSON in its metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {name: t.detach().cpu().contiguous().clone() for name, t in self.tensors().items()}  # no shared storage
        meta = {"format": FORMAT, "method": self.method, "settings": self.settings,
                "fingerprint": self.fingerprint, "stats": self.stats, "sampling": self.sampling}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata={"ptiedit": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Inversion":
        """Read a file written by save(); any other file raises ValueError."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("ptiedit", "{}"))
                if meta.get("format", "").startswith("ptiedit.inversion/") and meta["format"] != FORMAT:
                    raise ValueError("written by another version of ptiedit; invert the image again")
                if meta.get("format") != FORMAT:
                    raise ValueError("not a ptiedit inversion file")
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        except Exception as error:  # safetensors raises its own error types on corrupt headers
            raise ValueError(f"{path}: not a readable inversion file ({type(error).__name__})") from None
        cond, uncond = (Conditioning(tensors[f"{b}.tokens"], tensors.get(f"{b}.pooled")) for b in ("cond", "uncond"))
        return cls(meta["method"], tensors["z_T"], tensors["timesteps"], cond, uncond, meta["settings"],
                   meta["fingerprint"], meta.get("stats", {}), z0=tensors.get("z0"),
                   sampling=meta.get("sampling", {}))
