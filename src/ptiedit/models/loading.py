"""Load a diffusers pipeline of a supported family (hub id, local folder, or the embedded shapes-world model)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ..devices import resolve_device
from .family import family_of_index, model_family

EMBEDDED_MODEL = Path(__file__).parent / "embedded" / "toyworld-textured"
# The model's identity in fingerprints, PNGs, reports and bench resume keys: kept from its first folder name, so that
# existing bench folders resume and reports stay comparable (inversion files do not check it).
EMBEDDED_NAME = "ptiedit/shapes-sd (embedded)"
EMBEDDED_UNET_PARAMETERS = 7_000_000  # a bigger UNet on the CPU deserves a warning
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


class SlowDeviceWarning(UserWarning):
    """The model will run, but slowly, on this device or in this dtype."""


def resolve_dtype(dtype, device: str) -> torch.dtype:
    """None means fp32 on the CPU and fp16 elsewhere."""
    if dtype is None:
        return torch.float32 if device == "cpu" else torch.float16
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16")
        dtype = DTYPES[dtype]
    if device == "cpu" and dtype == torch.float16:
        warnings.warn("fp16 on the CPU is slow (about 8x fp32); use it to test half precision, not for speed",
                      SlowDeviceWarning)
    return dtype


def load_pipeline(model: str | os.PathLike | None = None, device: str = "auto", dtype=None, *,
                  gradient_checkpointing: bool = False, vae_slicing: bool = False, vae_tiling: bool = False,
                  cpu_offload: bool = False):
    """A frozen diffusers pipeline with its family's scheduler. model=None loads the embedded shapes-world model.

    The family (SD 1.x/2.x, SDXL, SD3, FLUX.1) comes from model_index.json. Memory controls: gradient
    checkpointing of the UNet or transformer (stage-1 backward passes), VAE slicing/tiling (decoding many or large
    images; at SD3/FLUX sizes tiling matters most), and model CPU offload
    through accelerate (each component moves to the GPU only while it runs). Attention uses torch's
    scaled_dot_product_attention (diffusers' default). Honours HF_HUB_OFFLINE. Raises ValueError with one
    readable line when the model cannot be loaded.
    """
    quiet_libraries()
    import diffusers
    from diffusers import DiffusionPipeline

    if model is None:
        if not (EMBEDDED_MODEL / "model_index.json").exists():
            raise ValueError(f"the embedded model is missing from {EMBEDDED_MODEL}; pass --model ID_OR_DIR")
        source, name = str(EMBEDDED_MODEL), EMBEDDED_NAME
    else:
        source = name = str(Path(model).resolve()) if Path(model).exists() else str(model)
        if Path(source).exists() and not (Path(source) / "model_index.json").exists():
            raise ValueError(f"{source} is not a diffusers pipeline folder (no model_index.json)")
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            family = family_of_index(DiffusionPipeline.load_config(source))
            pipe = getattr(diffusers, family.pipeline_class).from_pretrained(
                source, torch_dtype=torch_dtype, **family.load_options)
    except ValueError as error:
        if str(error).startswith("unsupported pipeline"):
            raise
        raise ValueError(f"cannot load model {name!r}{offline_note()}: {first_line(error)}") from None
    except Exception as error:  # hub/IO/config errors come in many types; the user needs one line either way
        raise ValueError(f"cannot load model {name!r}{offline_note()}: {first_line(error)}") from None
    pipe = prepare_pipeline(pipe, device, gradient_checkpointing=gradient_checkpointing,
                            vae_slicing=vae_slicing, vae_tiling=vae_tiling, cpu_offload=cpu_offload)
    pipe.ptiedit_model_name = name
    denoiser = model_family(pipe).denoiser
    if device == "cpu" and denoiser.num_parameters() > EMBEDDED_UNET_PARAMETERS:
        warnings.warn(f"{name} has a {denoiser.num_parameters() / 1e6:.0f}M-parameter denoiser: on the CPU an "
                      f"inversion may take hours; use a GPU (--device cuda)", SlowDeviceWarning)
    return pipe


def prepare_pipeline(pipe, device: str = "auto", *, gradient_checkpointing: bool = False, vae_slicing: bool = False,
                     vae_tiling: bool = False, cpu_offload: bool = False):
    """Make a pipeline in its final dtype ready for ptiedit: its family's scheduler (DDIM, or flow matching's Euler),
    an fp32 VAE where force_upcast asks, device or CPU offload, frozen weights, memory options (gradient
    checkpointing of the UNet or transformer). load_pipeline calls it; so do random-weight checks."""
    import diffusers

    device = resolve_device(device)
    family = family_of_index(dict(pipe.config))
    # DDIM needs only the schedule (betas, offset, prediction type), which every SD scheduler config carries; a flow
    # scheduler's config carries its shift.
    pipe.scheduler = getattr(diffusers, family.scheduler_class).from_config(pipe.scheduler.config)
    denoiser = model_family(pipe).denoiser
    if denoiser.dtype == torch.float16 and pipe.vae.config.get("force_upcast", False):
        pipe.vae.to(torch.float32)  # this VAE overflows in fp16 (NaN or black images): keep it in fp32
    if cpu_offload:
        if device == "cpu":
            raise ValueError("CPU offload moves components to a GPU while they run; it needs --device cuda or mps")
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
    if gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    if vae_slicing:
        pipe.vae.enable_slicing()
    if vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def offline_note() -> str:
    return " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def valid_steps(pipe) -> range:
    """The DDIM step counts this pipeline's scheduler config allows."""
    from ..diffusion.ddim import max_steps

    return range(1, max_steps(pipe.scheduler) + 1)


def quiet_libraries() -> None:
    """diffusers/transformers print loading bars and torchvision notices that users need not see."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()
