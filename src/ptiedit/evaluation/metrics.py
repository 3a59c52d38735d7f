"""Image metrics with pinned settings, their unedited-region variants, and 95% confidence intervals.

Images are RGB in [0, 1] (data_range = 1.0). PSNR, SSIM and MSE come from torchmetrics:
- MSE: mean over pixels and channels.
- PSNR = 10 log10(1 / MSE), capped at PSNR_CAP dB so that identical images give a finite, averageable number.
- SSIM (Wang et al. 2004): gaussian window of 11 pixels, sigma 1.5, K1 = 0.01, K2 = 0.03, torchmetrics' reflect
  padding; the whole-image score averages the SSIM map inside the border the window needs (torchmetrics' default).

Unedited-region variants (PIE-Bench measures fidelity on 1 - mask): `edited` is a boolean (H, W) map, True where
the edit may change pixels (callers binarize soft masks with mask > 0: a pixel counts as edited when any part of
it is). PSNR and MSE are computed over the unedited pixels only. SSIM: the edited pixels of the prediction are
replaced by the reference's, so they neither count nor leak into neighbouring windows, and the full-resolution
SSIM map is averaged over the unedited pixels. All three return None when no pixel is unedited.

Confidence intervals: percentile bootstrap of the mean over images (BOOTSTRAP_RESAMPLES resamples, fixed seed).
"""
from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchmetrics.functional import mean_squared_error
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

PSNR_CAP = 100.0
SSIM_SETTINGS = {"gaussian_kernel": True, "kernel_size": 11, "sigma": 1.5, "k1": 0.01, "k2": 0.03, "data_range": 1.0}
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def to_tensor(image) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1] from a PIL image, a uint8 (H, W, 3) array or a float (H, W, 3) array in [0, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif not np.issubdtype(array.dtype, np.floating) or array.min() < 0 or array.max() > 1:
        raise ValueError("float images must hold values in [0, 1]; integer images must be uint8")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))[None]


def _pair(prediction, reference, edited) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Tensors of a prediction and its reference, and the unedited-pixel map (None: every pixel counts)."""
    pred, ref = to_tensor(prediction), to_tensor(reference)
    if pred.shape != ref.shape:
        raise ValueError(f"images differ in size: {tuple(pred.shape[-2:])} vs {tuple(ref.shape[-2:])}")
    if edited is None:
        return pred, ref, None
    edited = torch.as_tensor(np.asarray(edited, dtype=bool))
    if edited.shape != pred.shape[-2:]:
        raise ValueError(f"mask is {tuple(edited.shape)}, images are {tuple(pred.shape[-2:])}")
    return pred, ref, ~edited


def mse(prediction, reference, edited=None) -> float | None:
    """Mean squared error, over the unedited pixels when `edited` is given."""
    pred, ref, keep = _pair(prediction, reference, edited)
    if keep is None:
        return float(mean_squared_error(pred, ref))
    if not keep.any():
        return None
    return float(mean_squared_error(pred[..., keep], ref[..., keep]))


def psnr(prediction, reference, edited=None) -> float | None:
    """PSNR in dB (data_range 1), capped at PSNR_CAP; over the unedited pixels when `edited` is given."""
    pred, ref, keep = _pair(prediction, reference, edited)
    if keep is not None:
        if not keep.any():
            return None
        pred, ref = pred[..., keep], ref[..., keep]
    value = float(peak_signal_noise_ratio(pred, ref, data_range=1.0))
    return min(value, PSNR_CAP)


def ssim(prediction, reference, edited=None) -> float | None:
    """SSIM with SSIM_SETTINGS; on the unedited pixels (edited ones taken from the reference) when `edited` is given."""
    pred, ref, keep = _pair(prediction, reference, edited)
    if keep is None:
        return float(structural_similarity_index_measure(pred, ref, **SSIM_SETTINGS))
    if not keep.any():
        return None
    pred = torch.where(keep, pred, ref)
    _, full = structural_similarity_index_measure(pred, ref, return_full_image=True, **SSIM_SETTINGS)
    return float(full.mean(dim=(0, 1))[keep].mean())


def compare(prediction, reference, edited=None) -> dict[str, float | None]:
    """PSNR, SSIM and MSE of a prediction against a reference (unedited region only when `edited` is given)."""
    return {"psnr": psnr(prediction, reference, edited), "ssim": ssim(prediction, reference, edited),
            "mse": mse(prediction, reference, edited)}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1 when both are empty)."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def mean_interval(values, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite values and its 95% percentile-bootstrap interval.

    None and NaN are dropped; no value gives NaNs, one value an interval of zero width.
    """
    x = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (BOOTSTRAP_RESAMPLES, len(x)))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(x.mean()), float(low), float(high)


# Learned metrics, only from weights the user points at: nothing is downloaded.

LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS' input scaling layer (inputs in [-1, 1])
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_TAPS = (1, 4, 7, 9, 11)  # indices of the five AlexNet ReLUs whose features are compared
LPIPS_MIN_SIZE = 64  # AlexNet's three poolings need this much; smaller images are upsampled


def alexnet_features() -> nn.Sequential:
    """AlexNet's convolutional trunk, laid out as torchvision's `features` so its checkpoints load by key."""
    return nn.Sequential(nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                         nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                         nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_state(path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors come in many types
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__})") from None


class LPIPS:
    """LPIPS (Zhang et al. 2018, eq. 1), AlexNet variant: the five ReLU feature maps of both images, unit-normalized
    over channels, squared differences weighted per channel by the calibrated linear heads, averaged over space
    and summed over layers. The backbone is torchvision's AlexNet checkpoint (alexnet*.pth) found in a local
    folder; the heads are the calibrated weights torchmetrics ships (lpips_models/alex.pth)."""

    def __init__(self, folder):
        folder = Path(folder)
        found = [folder] if folder.is_file() else sorted(folder.glob("**/alexnet*.pth"))
        if not found:
            raise ValueError(f"no AlexNet checkpoint (alexnet*.pth, as torchvision saves it) in {folder}")
        state = {k.removeprefix("features."): v for k, v in _load_state(found[0]).items() if k.startswith("features.")}
        self.features = alexnet_features().eval()
        try:
            self.features.load_state_dict(state)
        except RuntimeError:
            raise ValueError(f"{found[0]}: not a torchvision AlexNet checkpoint") from None
        heads = _load_state(files("torchmetrics.functional.image") / "lpips_models" / "alex.pth")
        self.heads = [heads[f"lin{i}.model.1.weight"].float() for i in range(len(LPIPS_TAPS))]
        self.source = str(found[0])

    def _activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        shift, scale = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)
        x = (2 * x - 1 - shift) / scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                out.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))
        return out

    @torch.no_grad()
    def __call__(self, prediction, reference, edited=None) -> float | None:
        """LPIPS distance; on the unedited region (edited pixels taken from the reference) when `edited` is given."""
        pred, ref, keep = _pair(prediction, reference, edited)
        if keep is not None:
            if not keep.any():
                return None
            pred = torch.where(keep, pred, ref)
        if min(pred.shape[-2:]) < LPIPS_MIN_SIZE:
            pred, ref = (F.interpolate(x, size=LPIPS_MIN_SIZE, mode="bilinear") for x in (pred, ref))
        total = sum(F.conv2d((a - b) ** 2, head).mean()
                    for a, b, head in zip(self._activations(pred), self._activations(ref), self.heads))
        return float(total)


class ClipScore:
    """CLIP score as torchmetrics scales it (Hessel et al. 2021): 100 * max(cos(image embedding, text embedding), 0).

    Computed here with transformers directly: torchmetrics' CLIPScore accepts only hub ids, and with
    transformers 5 its feature extraction fails (get_image_features returns an output object, not a tensor).
    """

    def __init__(self, folder):
        from transformers import CLIPModel, CLIPProcessor

        try:
            self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
            self.processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
        except Exception as error:  # missing files, wrong model type: one line for the user
            raise ValueError(f"cannot load a CLIP model from {folder}: {first_line(error)}") from None
        self.source = str(folder)

    @torch.no_grad()
    def __call__(self, image, text: str, region=None) -> float:
        """Score of the whole image, or of `region` (boolean (H, W)) with everything else black."""
        pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if region is not None:
            pixels = pixels * np.asarray(region, dtype=bool)[..., None]
        inputs = self.processor(text=[text], images=[Image.fromarray(pixels.astype(np.uint8))], return_tensors="pt",
                                padding=True, truncation=True)
        out = self.model(**inputs)
        return 100 * max(float(F.cosine_similarity(out.image_embeds, out.text_embeds)), 0.0)


class StructureDistance:
    """DINO-ViT structure distance (Tumanyan et al. 2022, as PIE-Bench reports it): the mean squared difference of
    the two images' cosine self-similarity matrices of the last layer's attention keys (all tokens)."""

    def __init__(self, folder):
        from transformers import AutoImageProcessor, AutoModel

        try:
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
            self.processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
        except Exception as error:
            raise ValueError(f"cannot load a DINO model from {folder}: {first_line(error)}") from None
        keys = [m for name, m in self.model.named_modules() if name.endswith(("k_proj", ".key"))]
        if not keys:
            raise ValueError(f"{folder}: no attention key projection found; expected a ViT such as DINO")
        self._keys = None
        keys[-1].register_forward_hook(self._keep)
        self.source = str(folder)

    def _keep(self, module, inputs, output) -> None:
        self._keys = output

    def self_similarity(self, image) -> torch.Tensor:
        self.model(**self.processor(images=image, return_tensors="pt"))
        keys = F.normalize(self._keys[0].float(), dim=-1)
        return keys @ keys.T

    @torch.no_grad()
    def __call__(self, a, b) -> float:
        return float(F.mse_loss(self.self_similarity(a), self.self_similarity(b)))


class LearnedMetrics:
    """The learned metrics the user gave local weights for; the others are None and reported as skipped."""

    def __init__(self, lpips_weights=None, clip_model=None, dino_model=None):
        self.lpips = LPIPS(lpips_weights) if lpips_weights else None
        self.clip = ClipScore(clip_model) if clip_model else None
        self.structure = StructureDistance(dino_model) if dino_model else None

    def status(self) -> dict[str, str]:
        """Per metric, where its weights came from, or why it was skipped."""
        return {name: (f"weights from {metric.source}" if metric else "skipped: no local weights")
                for name, metric in (("LPIPS", self.lpips), ("CLIP score", self.clip),
                                     ("DINO structure distance", self.structure))}

    def scores(self, output, source, target_prompt: str | None, edited=None) -> dict[str, float | None]:
        """lpips_unedited (output vs source outside `edited`), clip_whole / clip_edited (output vs the target
        prompt: whole image, edited region), structure_distance (output vs source); None where not available."""
        row = {"lpips_unedited": None, "clip_whole": None, "clip_edited": None, "structure_distance": None}
        if self.lpips:
            row["lpips_unedited"] = self.lpips(output, source, edited)
        if self.clip and target_prompt is not None:
            row["clip_whole"] = self.clip(output, target_prompt)
            if edited is not None and np.asarray(edited).any():
                row["clip_edited"] = self.clip(output, target_prompt, region=edited)
        if self.structure:
            row["structure_distance"] = self.structure(output, source)
        return row
