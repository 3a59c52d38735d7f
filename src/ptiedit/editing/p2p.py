"""Prompt-to-Prompt word swap (Hertz et al., ICLR 2023) through diffusers attention processors.

The source branch (the inversion's own conditioning) and the target branches are sampled in one batch from the
same z_T. For the first `cross_replace` fraction of the steps (the noisiest) every target branch's
cross-attention probabilities are replaced by the source branch's, so the layout of the source survives while
the values carry the new words; optionally the self-attention probabilities are injected too, for the first
`self_replace` fraction, in the coarse layers: at most 16x16 tokens as P2P does on SD's 64x64 latents, or 1/16 of
the latent's tokens on larger latents (SDXL at 1024 px has no attention layer below 32x32).

Token alignment (a simplification of P2P's word swap and refinement): prompts with the same number of tokens map
position by position. Otherwise the two token sequences are aligned with difflib: tokens of shared words map to
their source position, a replaced run of equal length maps position by position, and the remaining target tokens
(inserted words, or words whose token count changed) keep their own attention.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from difflib import SequenceMatcher

import torch

SELF_REPLACE_MAX_TOKENS = 16 * 16  # P2P injects self-attention only at coarse resolutions; fine layers keep detail
SELF_REPLACE_MAX_FRACTION = 1 / 16  # the same coarseness relative to the latent: 16x16 of SD's 64x64


@dataclass(frozen=True)
class P2PConfig:
    """Word-swap settings. source_prompt names the words the source branch stands for (only used to align tokens);
    None means the prompt the image was inverted with."""

    cross_replace: float = 0.8
    self_replace: float = 0.0
    source_prompt: str | None = None

    def __post_init__(self):
        for name in ("cross_replace", "self_replace"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a fraction of the steps in [0, 1], got {value}")


def token_alignment(tokenizer, source_prompt: str, target_prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For every target token position: the source position whose attention it takes, and whether it takes one."""
    length = tokenizer.model_max_length
    source, target = (tokenizer(p, padding="max_length", max_length=length, truncation=True).input_ids
                      for p in (source_prompt, target_prompt))
    positions = torch.arange(length)
    if source.index(tokenizer.eos_token_id) == target.index(tokenizer.eos_token_id):  # same token count: word swap
        return positions, torch.ones(length, dtype=torch.bool)
    mapper, replaced = positions.clone(), torch.zeros(length, dtype=torch.bool)
    for tag, s0, s1, t0, t1 in SequenceMatcher(None, source, target, autojunk=False).get_opcodes():
        if tag == "equal" or (tag == "replace" and s1 - s0 == t1 - t0):
            mapper[t0:t1], replaced[t0:t1] = positions[s0:s1], True
    return mapper, replaced


class AttentionReplace:
    """State the P2P processors share: the sampling step, and which probabilities to replace at it.

    The UNet batch ends with the conditional rows (guided_eps puts the unconditional half first): one group
    [source, target_1, ..., target_n] per image, in order; like P2P, only those rows are edited, each target from
    its own group's source. targets[g] holds group g's (mapper, replaced, config) per target: its token_alignment
    to the source and its own replacement fractions, so one batch can sweep the settings over one source branch.
    """

    def __init__(self, targets: list[list[tuple[torch.Tensor, torch.Tensor, P2PConfig]]], steps: int,
                 latent_tokens: int):
        self.groups = [[(mapper, replaced, int(c.cross_replace * steps), int(c.self_replace * steps))
                        for mapper, replaced, c in group] for group in targets]
        every = [target for group in self.groups for target in group]
        self.cross_steps, self.self_steps = max(t[2] for t in every), max(t[3] for t in every)
        self.rows = sum(1 + len(group) for group in self.groups)
        self.self_max_tokens = max(SELF_REPLACE_MAX_TOKENS, int(latent_tokens * SELF_REPLACE_MAX_FRACTION))
        self.step = 0

    def step_done(self, i: int, z: torch.Tensor) -> None:
        self.step = i + 1

    def active(self, is_cross: bool, query_tokens: int) -> bool:
        if is_cross:
            return self.step < self.cross_steps
        return self.step < self.self_steps and query_tokens <= self.self_max_tokens

    def __call__(self, probs: torch.Tensor, heads: int, is_cross: bool) -> torch.Tensor:
        """probs (batch * heads, queries, keys) with the active targets' rows replaced by their source's."""
        probs = probs.unflatten(0, (-1, heads)).clone()
        row = len(probs) - self.rows
        for group in self.groups:
            source = probs[row]
            for j, (mapper, replaced, cross_steps, self_steps) in enumerate(group, start=1):
                if is_cross and self.step < cross_steps:
                    mapper, replaced = mapper.to(probs.device), replaced.to(probs.device)
                    probs[row + j][..., replaced] = source[..., mapper[replaced]]
                elif not is_cross and self.step < self_steps:
                    probs[row + j] = source
            row += 1 + len(group)
        return probs.flatten(0, 1)


class P2PAttnProcessor:
    """Attention with explicit probabilities the controller may replace; defers to the layer's original
    processor whenever the controller is inactive, so uncontrolled steps compute exactly as without P2P."""

    def __init__(self, control: AttentionReplace, original):
        self.control, self.original = control, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        is_cross = encoder_hidden_states is not None
        if not self.control.active(is_cross, hidden_states.shape[1]):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if hidden_states.ndim != 3 or attn.group_norm is not None or attn.spatial_norm is not None:
            raise ValueError("Prompt-to-Prompt supports the attention layers of transformer blocks only")
        context = hidden_states if not is_cross else (
            attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states)
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], hidden_states.shape[0])
        query, key, value = (attn.head_to_batch_dim(x) for x in
                             (attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)))
        probs = self.control(attn.get_attention_scores(query, key, mask), attn.heads, is_cross)
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, value))))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@contextmanager
def attention_control(unet, control: AttentionReplace):
    """Install P2P processors on every attention layer of `unet`; the original ones come back even on error."""
    originals = unet.attn_processors
    unet.set_attn_processor({name: P2PAttnProcessor(control, p) for name, p in originals.items()})
    try:
        yield control
    finally:
        unet.set_attn_processor(originals)
