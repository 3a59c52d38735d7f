"""Faithful against paper mode on the textured world's colour edits: object shape kept, edit mask, and cost.

For each of the first --n object-colour scenes of the textured bench (evaluation/suites.py; its 100-scene run
holds 34), one PTI inversion is edited at the default eta in both modes. Per mode it reports:
- edit success (the bench's finder) and the unedited region's PSNR against the input's VAE round trip;
- shape IoU: the edited object as the finder finds it in the output (its target colour against the known
  background) against the same finder's reading of the ground-truth edit; 0 when no object of that colour is
  found. The finder's blob of a 64-px render drops antialiased edge pixels, so against the render's own mask even
  the ground truth scores below 1 ("shape_iou_ceiling_vs_render_mask" reports by how much);
- the automatic mask's IoU with the ground-truth edit mask (faithful mode; the mask upsampled to pixels).
Time: stage-2 sampling alone (no decoding), and the whole edit (ptiedit.edit: sampling, decoding and, faithful,
the paste onto the decoded reconstruction), one image at a time, both modes interleaved within each repeat, the
median of --repeats; the machine may be shared, so compare only figures from one run.

It also draws a grid of the first --grid-rows scenes: input | automatic mask | paper mode | faithful mode.

Run: python benchmarks/faithful_edits.py [--n 34] [--repeats 3] [--threads 2] [--json OUT.json] [--grid OUT.png]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import ptiedit
from ptiedit.editing.edit import DEFAULT_ETA, MODES, sample_edits
from ptiedit.evaluation.metrics import iou, psnr
from ptiedit.evaluation.suites import textured_scene, textured_suite
from ptiedit.outputs import label_grid
from ptiedit.toyworld.edits import apply_edit
from ptiedit.toyworld.finder import find_objects


def found_object(image, color: str, background) -> np.ndarray | None:
    """The finder's mask of the object of this colour, None when there is none."""
    found = find_objects(image, color, background=background)
    return found[0][2] if found else None


def object_iou(image, color: str, background, reference: np.ndarray | None) -> float:
    mask = found_object(image, color, background)
    return iou(mask, reference) if mask is not None and reference is not None else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=34, help="object-colour scenes (default: the 100-scene bench's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="OUT.json", help="also write the figures here")
    parser.add_argument("--grid", metavar="OUT.png", help="also draw the example grid here")
    parser.add_argument("--grid-rows", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = ptiedit.load_pipeline()
    family = ptiedit.model_family(pipe)
    cases = textured_suite(family.default_size, args.n, edit_types=("object_color",))
    targets = [apply_edit(*textured_scene(0, "object_color", j, family.default_size)) for j in range(args.n)]
    inversions = ptiedit.invert(pipe, [c.image for c in cases], progress=False, max_batch=8)
    rows = {mode: {"success": [], "psnr_unedited_vae": [], "shape_iou": [], "mask_iou": []} for mode in MODES}
    ceiling, grid = [], []
    for case, inversion, target in zip(cases, inversions, targets):
        edit, (edited_object,) = case.edits[0], target.objects
        truth = found_object(edit.ground_truth, edited_object.color, target.background)
        ceiling.append(object_iou(edit.ground_truth, edited_object.color, target.background, edit.edited))
        round_trip = family.decode_latents(family.encode_images([case.image]))[0]
        shown = {}
        for mode in MODES:
            image, mask = ptiedit.edit(pipe, inversion, edit.target_prompt, progress=False, mode=mode,
                                       return_masks=True)
            shown[mode], shown[f"{mode} mask"] = image, mask
            rows[mode]["success"].append(float(edit.succeeded(image)))
            rows[mode]["psnr_unedited_vae"].append(psnr(image, round_trip, edit.edited))
            rows[mode]["shape_iou"].append(object_iou(image, edited_object.color, target.background, truth))
            if mode == "faithful":
                rows[mode]["mask_iou"].append(iou(np.asarray(mask) > 127, edit.edited))
        if len(grid) < args.grid_rows:
            grid.append([case.image, shown["faithful mask"].convert("RGB"), shown["paper"], shown["faithful"]])
    seconds = {(mode, part): [] for mode in MODES for part in ("sampling", "edit")}
    jobs = [(inversion, case.edits[0].target_prompt, DEFAULT_ETA) for case, inversion in zip(cases, inversions)]
    for repeat in range(args.repeats):
        for mode in (MODES if repeat % 2 == 0 else MODES[::-1]):
            for part, run in (("sampling", lambda job: sample_edits(pipe, [job], progress=False, mode=mode)),
                              ("edit", lambda job: ptiedit.edit(pipe, *job, progress=False, mode=mode))):
                start = time.perf_counter()
                for job in jobs:
                    run(job)
                seconds[mode, part].append((time.perf_counter() - start) / len(jobs))
    report = {"scenes": len(cases), "eta": DEFAULT_ETA, "threads": args.threads, "repeats": args.repeats,
              "shape_iou_ceiling_vs_render_mask": float(np.mean(ceiling))}
    for mode in MODES:
        report[mode] = {name: float(np.mean(values)) for name, values in rows[mode].items() if values}
        report[mode]["shape_iou_min"] = float(np.min(rows[mode]["shape_iou"]))
        for part in ("sampling", "edit"):
            report[mode][f"{part}_s_per_image"] = statistics.median(seconds[mode, part])
    for part in ("sampling", "edit"):
        report[f"faithful_over_paper_{part}_time"] = (report["faithful"][f"{part}_s_per_image"]
                                                      / report["paper"][f"{part}_s_per_image"])
    text = json.dumps(report, indent=1)
    print(text)
    if args.grid:
        label_grid(grid, ["input", "automatic mask", f"paper, eta {DEFAULT_ETA:g}",
                          f"faithful, eta {DEFAULT_ETA:g}"]).save(args.grid)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
