"""Why null-text and negative-prompt inversion edit poorly on the embedded model: their edits against guidance.

Both methods reconstruct well (bench: 49-50 dB) but edit 0.14-0.17 of the shapes-bench scenes. Editing samples
eps_u + w (eps_target - eps_u) from z*_T, where the unconditional branch eps_u is
- negative-prompt inversion (Miyake et al. 2023): the source caption itself, so w amplifies the small
  target - source difference (one word) w times;
- null-text inversion (Mokady et al. 2023): null embeddings tuned so the source reconstructs at guidance w; the
  script measures how far they move from the empty prompt's embedding toward the source caption's.
DDIM inversion (empty unconditional branch) is the reference. For each method and guidance w: edit success
(the shapes-world reader) and unedited-region PSNR against the input, over the first --n bench scenes, eta 1.

Run: python benchmarks/baseline_guidance.py [--n 16] [--guidance 1,2,3,5,7.5] [--nti-guidance 3,7.5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics

import torch

import ptiedit
from ptiedit.evaluation.metrics import compare
from ptiedit.evaluation.suites import shapes_suite
from ptiedit.models.family import model_family


def edit_scores(pipe, cases, method: str, guidance: float) -> tuple[float, float, list]:
    """(edit success rate, mean unedited PSNR, inversions) of one method at one guidance scale."""
    inversions = ptiedit.invert(pipe, [c.image for c in cases], method=method, prompt=[c.source_prompt for c in cases],
                                guidance=guidance, progress=False, max_batch=8)
    outputs = ptiedit.edit(pipe, inversions, [c.edits[0].target_prompt for c in cases], 1.0, progress=False,
                           max_batch=8)
    outputs = [out[0] if isinstance(out, list) else out for out in outputs]
    success = [c.edits[0].succeeded(out) for c, out in zip(cases, outputs)]
    unedited = [compare(out, c.image, c.edits[0].edited)["psnr"] for c, out in zip(cases, outputs)]
    return sum(success) / len(cases), statistics.mean(unedited), inversions


def null_drift(pipe, cases, inversions) -> tuple[float, float]:
    """Mean over images and steps of how far null_t moved along the empty -> source caption direction (as a
    fraction of that direction's length) and of the cosine between the move and that direction."""
    family = model_family(pipe)
    empty = family.null_conditioning().tokens[0].flatten()
    along, cosine = [], []
    for case, inversion in zip(cases, inversions):
        direction = family.encode_prompt(case.source_prompt).tokens[0].flatten() - empty
        for null_t in inversion.uncond.tokens:  # (T, 1, L, D)
            move = null_t[0].flatten() - empty
            along.append(float(move @ direction / direction.square().sum()))
            cosine.append(float(torch.nn.functional.cosine_similarity(move, direction, dim=0)))
    return statistics.mean(along), statistics.mean(cosine)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="bench scenes (default 16)")
    parser.add_argument("--guidance", default="1,2,3,5,7.5", help="guidance scales for DDIM and negative-prompt")
    parser.add_argument("--nti-guidance", default="3,7.5", help="guidance scales for null-text inversion")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = ptiedit.load_pipeline(None)
    cases = shapes_suite(model_family(pipe).default_size, args.n)
    print(f"{args.n} shapes-bench scenes, eta 1, 50 steps\n")
    print("| method | guidance | edit success | unedited PSNR | null_t along empty->source | cosine |")
    print("|---|---|---|---|---|---|")
    runs = [("ddim", float(w)) for w in args.guidance.split(",")]
    runs += [("negative_prompt", float(w)) for w in args.guidance.split(",")]
    runs += [("null_text", float(w)) for w in args.nti_guidance.split(",")]
    for method, w in runs:
        success, unedited, inversions = edit_scores(pipe, cases, method, w)
        drift = " | ".join(f"{x:.2f}" for x in null_drift(pipe, cases, inversions)) if method == "null_text" else "- | -"
        print(f"| {method} | {w:g} | {success:.2f} | {unedited:.2f} | {drift} |", flush=True)


if __name__ == "__main__":
    main()
