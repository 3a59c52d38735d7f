"""Every tensor follows the pipeline's device: checked without a GPU on a fake accelerator (tests/fake_device.py).

On CUDA, an eta tensor built on the CPU, or an inversion loaded from a file and not moved, makes the first op that
meets the GPU pipeline's tensors fail. The fake device fails the same way, so these paths are covered on any machine.
"""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import ptiedit
from ptiedit.editing.p2p import P2PConfig
from ptiedit.models.loading import prepare_pipeline

from .conftest import build_tiny_pipeline
from .fake_device import DEVICE, DeviceMismatch, fake_device, move_pipeline

STEPS, INNER = 2, 1
ETAS = [0.0, 0.5, 1.0]
TARGET = "a green circle"


def tiny_pipeline():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_pipeline(build_tiny_pipeline("v_prediction"), "cpu")


def picture() -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))


def user_session(pipe, folder) -> dict:
    """What a user does: invert, save, load in a new session and edit (plain and with P2P), reconstruct."""
    inversion = ptiedit.invert(pipe, picture(), steps=STEPS, inner_steps=INNER, progress=False)
    inversion.save(folder / "inv.safetensors")
    loaded = ptiedit.Inversion.load(folder / "inv.safetensors")
    return {"edits": ptiedit.edit(pipe, loaded, TARGET, ETAS, progress=False),
            "reconstruction": ptiedit.reconstruct(pipe, loaded, progress=False),
            "p2p": ptiedit.edit(pipe, loaded, TARGET, 0.8, progress=False, p2p=P2PConfig())}


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in (images if isinstance(images, list) else [images])])


def test_the_fake_device_fails_where_cuda_would():
    with fake_device():
        on_device = torch.ones(3, device=DEVICE)
        assert on_device.device == DEVICE and float(on_device.sum()) == 3  # real values behind the fake device
        assert float((on_device * torch.tensor(2.0)).sum()) == 6  # a 0-dim CPU scalar is allowed, as on CUDA
        assert float(on_device[torch.tensor([0, 2])].sum()) == 2  # so are CPU indices
        with pytest.raises(DeviceMismatch):
            on_device * torch.ones(3)
        with pytest.raises(DeviceMismatch):
            on_device * torch.tensor([1.0, 2.0, 3.0])


def test_invert_save_load_edit_follow_the_pipeline_device(tmp_path):
    """The whole user path runs with the pipeline on another device, and gives the CPU run's pictures."""
    (tmp_path / "cpu").mkdir()
    (tmp_path / "device").mkdir()
    expected = user_session(tiny_pipeline(), tmp_path / "cpu")
    with fake_device():
        pipe = tiny_pipeline()
        move_pipeline(pipe)
        assert ptiedit.model_family(pipe).device == DEVICE
        got = user_session(pipe, tmp_path / "device")
    for key, images in expected.items():
        # the fake device runs torch's generic kernels (e.g. math attention), which round a little differently
        assert np.abs(pixels(got[key]) - pixels(images)).max() <= 2, key
