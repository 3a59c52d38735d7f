"""Makes the rows of `ptiedit bench` in batches: images inverted together, their edits sampled together.

The jobs are taken a chunk of `batch_size` images at a time and, within a chunk, one method (spec) at a time.
Every inversion the chunk needs for a spec is made in one vectorized `invert` call per (method, options) (each
image keeps its own conditioning and early stopping, so it equals a one-by-one inversion within the tolerance
tests/test_pti.py states); inversions are kept for the chunk, so a Prompt-to-Prompt spec reuses its base
method's (and its reconstruction). The edits without attention control are sampled in one `sample_edits` call,
the Prompt-to-Prompt ones in another, every setting over one source branch per image; a spec's editing mode
(paper or faithful) applies to both. Times are per-image shares: a call's wall time divided by the images or rows it made.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..editing.edit import EditSample, decode_samples, sample_edits
from ..editing.p2p import P2PConfig
from ..inversion.invert import invert
from ..models.families.base import pil_images
from ..models.family import model_family
from .metrics import LearnedMetrics, compare, psnr
from .report import RECONSTRUCTION, image_path
from .suites import Case, EditCase


@dataclass(frozen=True)
class MethodSpec:
    """A row label of the bench: inversion method, extra inversion options, the prompt the inversion is conditioned
    on ("empty", "source" caption or "target" prompt) and the knob swept when editing."""
    name: str
    method: str
    knob: str
    values: tuple[float, ...]
    options: tuple[tuple[str, object], ...] = ()
    init: str = "source"
    mode: str = "paper"  # editing mode: METHOD+faithful names edit in faithful mode

    def label(self, value: float) -> str:
        return f"{self.knob}={value:g}"

    def inversion_prompt(self, case: Case, edit: EditCase | None) -> str:
        if self.init == "empty":
            return ""
        if self.init == "target" and (edit or case.edits):
            return (edit or case.edits[0]).target_prompt
        return case.source_prompt


@dataclass(frozen=True)
class Job:
    """One results row: an inversion (its SDEdit strength, if any) and what is done with it."""
    spec: MethodSpec
    strength: float | None
    knob: str
    value: float | None  # knob value of an edit; None for the reconstruction
    edit: EditCase | None  # None: the reconstruction (eta = 0, no edit)


def image_seed(seed: int, image_id: str) -> int:
    """A noise seed of its own for each image of a bench run."""
    return (seed * 1_000_003 + zlib.crc32(image_id.encode())) % 2**63


def save_once(image, path: Path) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


def chunks_by_case(work: list[tuple[Case, Job]], batch_size: int) -> Iterator[list[list[tuple[Case, Job]]]]:
    """The jobs of batch_size images at a time, split by spec; images, specs and jobs keep the order of `work`."""
    cases = list({id(case): case for case, _ in work}.values())
    for start in range(0, len(cases), batch_size):
        chunk = {id(case) for case in cases[start:start + batch_size]}
        mine = [(case, job) for case, job in work if id(case) in chunk]
        yield [[(case, job) for case, job in mine if job.spec == spec]
               for spec in dict.fromkeys(job.spec for _, job in mine)]


class Runner:
    """Makes rows: inverts a chunk of images per spec, samples their edits in batches, scores, saves the images."""

    def __init__(self, pipe, suite: str, steps: int, guidance: float, learned: LearnedMetrics, out: Path,
                 batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.pipe, self.suite, self.steps, self.guidance, self.learned, self.out, self.batch_size = \
            pipe, suite, steps, guidance, learned, out, batch_size
        self.family = model_family(pipe)
        self.cache: dict[tuple, tuple] = {}  # inversions of the current chunk of images
        self.sampled: dict[tuple, tuple] = {}  # edited latents of the current chunk
        self.round_trips: dict[tuple, object] = {}  # VAE round trips of the current chunk's images
        self.ceilings: dict[tuple, bool] = {}  # success_ceiling of the current chunk's edits

    def rows(self, work: list[tuple[Case, Job]]) -> Iterator[dict]:
        """One row per (case, job), made batch_size images at a time (see chunks_by_case for the order)."""
        for groups in chunks_by_case(work, self.batch_size):
            self.cache, self.sampled, self.round_trips, self.ceilings = {}, {}, {}, {}  # the old chunk is done
            for group in groups:
                yield from self.run_group(group)

    # Inversions -------------------------------------------------------------------------------------------------
    def inversion_key(self, case: Case, job: Job) -> tuple:
        spec = job.spec
        options = dict(spec.options) | ({"strength": job.strength} if job.strength is not None else {})
        return case.image_id, spec.method, spec.inversion_prompt(case, job.edit), tuple(sorted(options.items()))

    def invert_all(self, group: list[tuple[Case, Job]]) -> None:
        """Invert, one call per (method, options), every image of the group not inverted yet."""
        missing: dict[tuple, tuple[Case, str]] = {}
        for case, job in group:
            key = self.inversion_key(case, job)
            if key not in self.cache:
                missing[key] = (case, key[2])
        calls: dict[tuple, list[tuple]] = {}
        for key in missing:
            calls.setdefault(key[1:2] + key[3:], []).append(key)
        for (method, options), keys in calls.items():
            start = time.perf_counter()
            options = dict(options)  # a variant's guidance replaces the bench's; the edits use the inversion's
            guidance = options.pop("guidance", self.guidance)
            if method == "sdedit":  # each image its own noise, the same whatever the batch it is drawn in
                seed = options.pop("seed", 0)
                options["generator"] = [torch.Generator().manual_seed(image_seed(seed, k[0])) for k in keys]
            inversions = invert(self.pipe, [missing[k][0].image for k in keys], method=method,
                                prompt=[missing[k][1] for k in keys], steps=self.steps, guidance=guidance,
                                progress=False, max_batch=self.batch_size, **options)
            seconds = (time.perf_counter() - start) / len(keys)  # each image's share of the batched call
            self.cache.update({k: (inversion, seconds) for k, inversion in zip(keys, inversions)})

    # Edits ------------------------------------------------------------------------------------------------------
    def sample(self, group: list[tuple[Case, Job]]) -> list[tuple[EditSample, float]]:
        """(edit sample, seconds share) per job: one batched call for the edits without attention control, one
        for the Prompt-to-Prompt ones (their settings share each image's source branch). An edit the chunk has
        sampled already (a P2P spec's reconstruction is its base method's) is reused with its time."""
        spec = group[0][1].spec
        calls: dict[bool, list[tuple[int, tuple, P2PConfig | None, tuple]]] = {False: [], True: []}
        mode = spec.mode
        out: list[tuple[EditSample, float] | None] = [None] * len(group)
        for index, (case, job) in enumerate(group):
            key = self.inversion_key(case, job)
            inversion, config = self.cache[key][0], None
            if job.edit is None:
                edit = (inversion, "", 0.0)
            elif spec.knob == "cross_replace":
                edit, config = (inversion, job.edit.target_prompt, 1.0), P2PConfig(cross_replace=job.value)
            else:  # eta, or SDEdit's strength (its edit is plain target sampling, eta = 1)
                edit = (inversion, job.edit.target_prompt, job.value if spec.knob == "eta" else 1.0)
            sample_key = (key, *edit[1:], config, mode if edit[2] > 0 else "replay")
            if sample_key in self.sampled:
                out[index] = self.sampled[sample_key]
            else:
                calls[config is not None].append((index, edit, config, sample_key))
        for p2p, members in calls.items():
            if not members:
                continue
            start = time.perf_counter()
            samples = sample_edits(self.pipe, [edit for _, edit, _, _ in members], progress=False, mode=mode,
                                   p2p=[config for _, _, config, _ in members] if p2p else None,
                                   max_batch=self.batch_size)
            seconds = (time.perf_counter() - start) / len(members)
            for (index, _, _, sample_key), sample in zip(members, samples):
                out[index] = self.sampled[sample_key] = (sample, seconds)
        return out

    def decode(self, samples: list[EditSample]) -> tuple[list, float]:
        """Images of the samples (edit.decode_samples, in batches of batch_size), and the seconds per image."""
        start = time.perf_counter()
        images = [pil_images(pixels)[0] for pixels in decode_samples(self.family, samples, self.batch_size)]
        return images, (time.perf_counter() - start) / max(len(samples), 1)

    # Rows -------------------------------------------------------------------------------------------------------
    def run_group(self, group: list[tuple[Case, Job]]) -> Iterator[dict]:
        self.invert_all(group)
        sampled = self.sample(group)
        outputs, decode_seconds = self.decode([sample for sample, _ in sampled])
        for (case, job), (_, edit_seconds), output in zip(group, sampled, outputs):
            inversion, invert_seconds = self.cache[self.inversion_key(case, job)]
            edit, spec = job.edit, job.spec
            row = {"suite": self.suite, "method": spec.name, "knob": job.knob, "image": case.image_id,
                   "edit": edit.name if edit else RECONSTRUCTION, "kind": edit.kind if edit else RECONSTRUCTION,
                   "source_prompt": case.source_prompt, "target_prompt": edit.target_prompt if edit else "",
                   "invert_seconds": invert_seconds, "edit_seconds": edit_seconds + decode_seconds,
                   "unet_calls": float(inversion.stats.get("unet_calls", 0))}
            if edit is None:
                row |= compare(output, self.vae_round_trip(case))
            else:
                row |= self.score(output, case, edit)
            save_once(output, image_path(self.out, self.suite, case.image_id,
                                         f"{spec.name}__{job.knob}__{row['edit']}"))
            yield row

    def vae_round_trip(self, case: Case, edit: EditCase | None = None):
        """The case image (or the edit's ground truth) through the VAE and back: what a perfect inversion
        reconstructs (or a perfect edit produces) on this model, once per image."""
        name = "vae_round_trip" if edit is None else f"vae_round_trip__{edit.name}"
        key = (case.image_id, name)
        if key not in self.round_trips:
            source = case.image if edit is None else edit.ground_truth
            image = self.family.decode_latents(self.family.encode_images([source]))[0]
            save_once(image, image_path(self.out, self.suite, case.image_id, name))
            self.round_trips[key] = image
        return self.round_trips[key]

    def success_ceiling(self, case: Case, edit: EditCase) -> bool:
        """Whether the success check accepts the ground truth's VAE round trip (a perfect edit on this model)."""
        key = (case.image_id, edit.name)
        if key not in self.ceilings:
            self.ceilings[key] = edit.succeeded(self.vae_round_trip(case, edit))
        return self.ceilings[key]

    def score(self, output, case: Case, edit: EditCase) -> dict:
        """Pixel-space fidelity, and PSNR against the VAE round trips, which the VAE does not cap."""
        row = {}
        if edit.ground_truth is not None:
            row |= compare(output, edit.ground_truth)
            row["psnr_vae"] = psnr(output, self.vae_round_trip(case, edit))
        if edit.edited is not None:
            row |= {f"{k}_unedited": v for k, v in compare(output, case.image, edit.edited).items()}
            row["psnr_unedited_vae"] = psnr(output, self.vae_round_trip(case), edit.edited)
        if edit.succeeded is not None:
            row["success"] = edit.succeeded(output)
            if edit.ground_truth is not None:
                row["success_ceiling"] = self.success_ceiling(case, edit)
        return row | self.learned.scores(output, case.image, edit.target_prompt, edit.edited)
