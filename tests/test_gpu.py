"""On a real GPU (skipped without CUDA): PTI and editing in fp16 with the embedded model, eta = 0 replaying stage 1.

Run with `pytest -m gpu`. tests/test_device.py checks the device bookkeeping on any machine; this checks what only a
GPU can show: half-precision CUDA kernels, and that eta = 0 reproduces stage 1's latents there too.
"""
import pytest
import torch

import ptiedit
from ptiedit.editing.edit import edit_latents
from ptiedit.toyworld.render import render
from ptiedit.toyworld.scene import Obj, Scene

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_fp16_pti_on_cuda_replays_at_eta_zero_and_stays_finite(tmp_path):
    pipe = ptiedit.load_pipeline(None, device="cuda", dtype="fp16")
    inversion = ptiedit.invert(pipe, render(Scene("white", (Obj("circle", "red", "big", "center"),))), steps=20,
                               progress=False)
    stats = inversion.stats
    assert sum(a < b for a, b in zip(stats["loss"], stats["initial_loss"])) >= 10  # the embedding learns in fp16
    inversion.save(tmp_path / "inv.safetensors")
    loaded = ptiedit.Inversion.load(tmp_path / "inv.safetensors")  # CPU tensors, moved by editing
    replay = edit_latents(pipe, loaded, "a green circle", [0.0], progress=False)
    assert replay.device.type == "cuda" and torch.isfinite(replay).all()
    # same kernels, same calls: bit-exact
    torch.testing.assert_close(replay, inversion.reconstruction, rtol=0, atol=0)
    edited = edit_latents(pipe, loaded, "a green circle", [0.5, 1.0], progress=False)
    assert torch.isfinite(edited).all()
    assert all(image.getextrema() != ((0, 0),) * 3 for image in ptiedit.edit(pipe, loaded, "a green circle", [0.8, 1.0],
                                                                               progress=False))  # no black frames
