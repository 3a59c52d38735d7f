"""A fake accelerator for CPU-only machines: tensors that compute on the CPU but claim to live on another device.

A pipeline moved to it behaves, for device bookkeeping, like one on a GPU: every op that mixes one of its tensors
with a CPU tensor raises DeviceMismatch, with CUDA's own exceptions (0-dim CPU scalars, and CPU index tensors in
indexing, are allowed). So a stray `torch.tensor(...)` without `device=`, or a loaded file left on the CPU, fails
here as it would on CUDA, and the results equal a plain CPU run's. The device is `meta`, the one device every
torch build accepts without a backend: device checks in torch, diffusers and transformers pass unchanged.
"""
from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

DEVICE = torch.device("meta")
INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default,
            torch.ops.aten._index_put_impl_.default}  # indices (argument 1) may stay on the CPU, as with CUDA
CONSTRUCTORS = (torch.tensor, torch.as_tensor, torch.asarray)


class DeviceMismatch(RuntimeError):
    """An op mixed fake-device tensors with tensors of another device."""


class OnDevice(torch.Tensor):
    """A wrapper that reports DEVICE and holds its values in a CPU tensor, `elem`."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            layout=elem.layout, device=DEVICE, requires_grad=elem.requires_grad)

    def __init__(self, elem: torch.Tensor):
        self.elem = elem

    def __repr__(self) -> str:
        return f"OnDevice({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError("OnDevice tensors are only usable inside fake_device()")


def targets_device(device) -> bool:
    return device is not None and torch.device(device) == DEVICE


class Dispatch(TorchDispatchMode):
    """Runs every aten op on the CPU values; checks devices first; wraps results that belong on the device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        checked = (args[:1], args[2:], kwargs) if func in INDEXING else (args, kwargs)
        tensors = [x for x in tree_leaves(checked) if isinstance(x, torch.Tensor)]
        on_device = any(isinstance(x, OnDevice) for x in tensors)
        strays = [x for x in tensors if not isinstance(x, OnDevice) and x.dim() > 0]
        if on_device and strays:
            raise DeviceMismatch(f"{func}: a {strays[0].device.type} tensor of shape {tuple(strays[0].shape)} "
                                 f"meets tensors on the pipeline's device")
        wrap = on_device
        if "device" in kwargs:  # factories and .to(): the target device decides
            wrap = targets_device(kwargs["device"])
            if wrap:
                kwargs["device"] = torch.device("cpu")
        args, kwargs = tree_map(lambda x: x.elem if isinstance(x, OnDevice) else x, (args, kwargs))
        out = func(*args, **kwargs)
        return tree_map(lambda x: OnDevice(x) if isinstance(x, torch.Tensor) else x, out) if wrap else out


class Constructors(TorchFunctionMode):
    """torch.tensor(data, device=...) builds its tensor below the dispatcher, out of Dispatch's sight."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in CONSTRUCTORS and targets_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
            return OnDevice(func(*args, **kwargs))
        return func(*args, **kwargs)


@contextlib.contextmanager
def fake_device():
    """Inside: `x.to("meta")`, `torch.zeros(..., device="meta")` etc. make OnDevice tensors with real values."""
    with Constructors(), Dispatch():
        yield


def move_pipeline(pipe) -> None:
    """Move every module of a diffusers pipeline to the fake device (call inside fake_device())."""
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.to(DEVICE)
    pipe.ptiedit_family = pipe.ptiedit_fingerprint = None  # both cache the device and weights they saw
