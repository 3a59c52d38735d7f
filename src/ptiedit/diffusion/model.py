"""Noise prediction from a diffusers UNet, whatever the scheduler's prediction type."""
from __future__ import annotations

import torch


class NoisePredictor:
    """eps(z, t, c) in fp32 from a UNet that predicts epsilon, v (SD 2.x) or x0 ("sample").

    The UNet may run in fp16/bf16; inputs are cast to its dtype and the output back to fp32, so gradients with
    respect to an fp32 embedding flow through the cast.
    """

    def __init__(self, unet, scheduler):
        self.unet = unet
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction type {self.prediction_type!r}")
        self.alphas_cumprod = scheduler.alphas_cumprod.double()
        self.forward_calls = 0  # counted for the speed benchmark and the early-stopping tests

    def __call__(self, z: torch.Tensor, t, embedding: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        dtype = self.unet.dtype
        t = torch.as_tensor(t, device=z.device)
        out = self.unet(z.to(dtype), t, encoder_hidden_states=embedding.to(dtype)).sample.float()
        if self.prediction_type == "epsilon":
            return out
        a = float(self.alphas_cumprod[int(t.reshape(-1)[0])])
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1-a) x0  =>  eps = sqrt(a) v + sqrt(1-a) z
            return a ** 0.5 * out + (1 - a) ** 0.5 * z.float()
        return (z.float() - a ** 0.5 * out) / (1 - a) ** 0.5
