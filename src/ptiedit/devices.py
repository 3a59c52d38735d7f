"""The one place where a device name (`--device`, `device=`) becomes a checked torch device name."""
from __future__ import annotations

import torch

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str | torch.device | None = "auto") -> str:
    """'auto' (or None) is CUDA if available, then Apple's MPS, else the CPU; any other name must be one of DEVICES
    and present on this machine. Returns the name as torch.device prints it ("cpu", "cuda", "cuda:1", "mps")."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps") or (device.index is not None
                                                                        and device.type != "cuda"):
        raise ValueError(f"unknown device {str(name)!r}; use {DEVICES}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r}: CUDA is not available on this machine; use auto or cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(name)!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(name)!r}: MPS is not available on this machine; use auto or cpu")
    return str(device)
