"""The result every inversion method returns, and its safetensors + JSON file format (no pickle)."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

FORMAT = "ptiedit.inversion/1"
TENSORS = ("z_T", "timesteps", "cond", "uncond")


@dataclass
class Inverted:
    """What an inversion method computes; `invert` adds the settings and fingerprint to make an Inversion."""

    z_T: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    stats: dict
    reconstruction: torch.Tensor | None = None  # latent the method itself reconstructs, when it has one
    timesteps: torch.Tensor | None = None  # only when sampling starts part-way (SDEdit)


@dataclass
class Inversion:
    """What editing needs to re-run the sampler from an image's inverted noise.

    Sampling step i (timesteps[i], descending) uses cond[i] and uncond[i] when they carry a leading step axis
    (T, 1, L, D); a (1, L, D) embedding serves every step.
    - PTI: cond = the tuned c_t, uncond = the null-prompt embedding.
    - Null-text inversion: cond = source prompt, uncond = the tuned null embeddings.
    - Negative-prompt inversion: cond = uncond = source prompt.
    - DDIM / SDEdit: cond = source prompt (or null), uncond = null; SDEdit's timesteps start part-way.
    """

    method: str
    z_T: torch.Tensor
    timesteps: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    settings: dict
    fingerprint: dict
    stats: dict = field(default_factory=dict)

    @property
    def guidance(self) -> float:
        return float(self.settings["guidance"])

    def check_compatible(self, fingerprint: dict) -> None:
        """Refuse to edit with a pipeline other than the one this inversion was made with."""
        for key in ("model_sha256", "scheduler"):  # not the name: one model may be reached by several paths
            if self.fingerprint.get(key) != fingerprint.get(key):
                raise ValueError(f"this inversion was made with {key} {self.fingerprint.get(key)!r}, "
                                 f"but the loaded pipeline has {fingerprint.get(key)!r}; invert the image again")

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: tensors in safetensors, everything else as JSON in its metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {name: getattr(self, name).detach().cpu().clone() for name in TENSORS}  # no shared storage
        meta = {"format": FORMAT, "method": self.method, "settings": self.settings,
                "fingerprint": self.fingerprint, "stats": self.stats}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"ptiedit": json.dumps(meta)})
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Inversion":
        """Read a file written by save(); any other file raises ValueError."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("ptiedit", "{}"))
                if meta.get("format") != FORMAT:
                    raise ValueError("not a ptiedit inversion file")
                tensors = {name: f.get_tensor(name) for name in TENSORS}
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        except Exception as error:  # safetensors raises its own error types on corrupt headers
            raise ValueError(f"{path}: not a readable inversion file ({type(error).__name__})") from None
        return cls(meta["method"], tensors["z_T"], tensors["timesteps"], tensors["cond"], tensors["uncond"],
                   meta["settings"], meta["fingerprint"], meta.get("stats", {}))
