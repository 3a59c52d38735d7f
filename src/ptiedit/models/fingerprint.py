"""Model identity for inversion files: the same weights pass from any folder, cache, machine or library version;
any changed weight (a fine-tune, a merged LoRA, another VAE) or schedule is refused, saying what differs.
The check sees the pipeline as it is when the edit runs: a cheap sample of its weights decides whether the full
checksums kept on the pipeline are still its own (a LoRA loaded or fused, a weight replaced, a scheduler swapped).

Weights are checksummed bit for bit after rounding to a half-precision dtype, so a model loaded in fp32 and the
same model loaded in fp16 (or bf16) agree: an fp32 pipeline checks against both, an fp16 one against fp16 and a
bf16 one against bf16. fp16 and bf16 round differently and cannot be checked against each other, so that pair is
refused. An inversion used in another dtype than it was made in edits as usual, but eta = 0 replays stage 1 only
up to that dtype's rounding.
"""
from __future__ import annotations

import hashlib
import json

import torch

from ..diffusion.ddim import schedule_config
from .family import adapter_key, family_label, model_family

# The scheduler settings that define DDIM's timesteps and alpha-bars, or a flow's sigmas (not paths, class names or
# versions); a key the scheduler lacks is recorded as None.
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                 "prediction_type", "set_alpha_to_one", "steps_offset", "timestep_spacing", "rescale_betas_zero_snr",
                 "shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len",
                 "shift_terminal", "time_shift_type", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
CHECKABLE = {torch.float32: ("fp16", "bf16"), torch.float16: ("fp16",), torch.bfloat16: ("bf16",)}
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
SAMPLES_PER_TENSOR = 64


@torch.no_grad()
def weights_checksum(module: torch.nn.Module, dtype: torch.dtype) -> str:
    """sha256 over every tensor's name, shape and sum_i bits_i (2i + 1) mod 2^64 after rounding to dtype.

    The odd weights make any single changed element change the sum (odd numbers are invertible mod 2^64), and
    the sum runs on the tensor's own device, so a multi-GB UNet on a GPU is checked in well under a second.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        bits = tensor.to(dtype).view(torch.int16) if tensor.is_floating_point() else tensor
        flat = bits.reshape(-1).long()
        odd = torch.arange(1, 2 * flat.numel(), 2, device=flat.device)
        digest.update(f"{name}{tuple(tensor.shape)}{int((flat * odd).sum())};".encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def weights_sample(modules: dict[str, torch.nn.Module]) -> str:
    """sha256 over every tensor's name, shape, dtype and up to SAMPLES_PER_TENSOR evenly spaced elements.

    Cheap (one strided read per tensor, one copy to the CPU per device), and enough to see a LoRA loaded (new
    tensors) or fused (every element of the weights it targets changes) and a weight replaced or rescaled; a
    change of a few elements of a large tensor can pass unseen.
    """
    digest, samples = hashlib.sha256(), {}
    for component, module in modules.items():
        for name, tensor in module.state_dict().items():
            digest.update(f"{component}.{name}{tuple(tensor.shape)}{tensor.dtype};".encode())
            flat = tensor.reshape(-1)
            picked = flat[::max(1, flat.numel() // SAMPLES_PER_TENSOR)][:SAMPLES_PER_TENSOR]
            samples.setdefault(tensor.device, []).append(picked.double())
    for device in sorted(samples, key=str):
        digest.update(torch.cat(samples[device]).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def pipeline_fingerprint(pipe) -> dict:
    """Family, schedule and weight checksums of the pipeline as it is now.

    The checksums are kept on the pipeline and computed again when its components, its scheduler config or a
    sample of its weights (weights_sample) changed since."""
    family = model_family(pipe)
    key = (adapter_key(pipe), weights_sample(family.components))
    if getattr(pipe, "ptiedit_fingerprint", None) is None or pipe.ptiedit_fingerprint_key != key:
        pipe.ptiedit_fingerprint, pipe.ptiedit_fingerprint_key = full_fingerprint(pipe, family), key
    return pipe.ptiedit_fingerprint


def full_fingerprint(pipe, family) -> dict:
    """Family, its settings, the schedule's settings and every component's weights_checksum in each checkable
    dtype."""
    dtype = family.denoiser.dtype
    config = schedule_config(pipe.scheduler)
    identity = {
        "family": family.name,
        "settings": family.settings,
        "model": getattr(pipe, "ptiedit_model_name", "unknown"),
        "dtype": DTYPE_NAMES.get(dtype, str(dtype)),
        "scheduler": {key: config.get(key) for key in SCHEDULE_KEYS},
        "weights": {half: {name: weights_checksum(module, HALF[half]) for name, module in family.components.items()}
                    for half in CHECKABLE.get(dtype, ())},
    }
    summary = hashlib.sha256(json.dumps([identity["family"], identity["scheduler"], identity["weights"]]
                                        + ([identity["settings"]] if identity["settings"] else []),
                                        sort_keys=True).encode()).hexdigest()[:16]
    return {**identity, "model_sha256": summary}  # one id per model and dtype, for caches


def check_same_model(made: dict, current: dict, allow_changed_weights: bool = False) -> None:
    """Raise ValueError naming what differs between the pipeline an inversion was made with and this one.

    allow_changed_weights: accept other weights (a LoRA applied since, a fine-tune of the same model) as long as
    the family and the schedule agree; the edit then no longer replays the inversion exactly."""
    again = "invert the image again with this model"
    if made["family"] != current["family"]:
        raise ValueError(f"this inversion was made with a {family_label(made['family'])} model, but the loaded "
                         f"pipeline is {family_label(current['family'])}; {again}")
    for key, value in current.get("settings", {}).items():
        if made.get("settings", {}).get(key) != value:
            raise ValueError(f"the model's {key} differs ({made.get('settings', {}).get(key)!r} when inverted, "
                             f"{value!r} now); {again}")
    changed = [key for key in SCHEDULE_KEYS if json.dumps(made["scheduler"].get(key)) !=
               json.dumps(current["scheduler"].get(key))]
    if changed:
        key = changed[0]
        raise ValueError(f"the scheduler's {key} differs ({made['scheduler'].get(key)!r} when inverted, "
                         f"{current['scheduler'].get(key)!r} now); {again}")
    if allow_changed_weights:
        return
    common = sorted(set(made["weights"]) & set(current["weights"]))
    if not common:
        raise ValueError(f"this inversion was made in {made['dtype']} and the pipeline runs in {current['dtype']}: "
                         f"their weights cannot be compared; load the model in {made['dtype']} or fp32")
    half = common[0]
    differ = [name for name, checksum in made["weights"][half].items() if current["weights"][half].get(name) != checksum]
    if differ:
        raise ValueError(f"the {', '.join(differ)} weights differ from the model this inversion was made with "
                         f"({made.get('model')}); {again}, or pass allow_changed_weights=True")
