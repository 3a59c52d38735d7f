"""results.json, report.md and plots from bench rows.

Every figure is the mean over images with its 95% percentile-bootstrap interval (metrics.mean_interval).
A method's best knob setting is the one with the highest mean edit success (ties: higher unedited-region PSNR);
without a success measure (PIE-Bench) it is the highest CLIP score when there is one, else the method's default.
The matched-fidelity table picks, for each method, the setting whose mean unedited-region PSNR (against the input's
VAE round trip when the rows have it, which the VAE does not cap) is closest to a common reference: PTI's at its
default setting (the first method's at its best when PTI was not run). The trade-off plot uses the same fidelity.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Callable

from .metrics import BOOTSTRAP_RESAMPLES, PSNR_CAP, SSIM_SETTINGS, mean_interval

RECONSTRUCTION = "reconstruction"
# column: (heading, number format)
COLUMNS = {
    "success": ("edit success", ".2f"), "psnr": ("PSNR vs ground truth", ".2f"),
    "ssim": ("SSIM vs ground truth", ".3f"), "mse": ("MSE vs ground truth", ".2e"),
    "psnr_vae": ("PSNR vs ground truth's VAE round trip", ".2f"),
    "psnr_unedited": ("unedited PSNR", ".2f"), "ssim_unedited": ("unedited SSIM", ".3f"),
    "mse_unedited": ("unedited MSE", ".2e"), "psnr_unedited_vae": ("unedited PSNR vs input's VAE round trip", ".2f"),
    "lpips_unedited": ("unedited LPIPS", ".3f"),
    "clip_whole": ("CLIP whole", ".2f"), "clip_edited": ("CLIP edited region", ".2f"),
    "structure_distance": ("structure distance", ".2e"), "recon_psnr": ("reconstruction PSNR", ".2f"),
    "invert_seconds": ("inversion s", ".2f"), "edit_seconds": ("edit s", ".2f"), "unet_calls": ("UNet calls", ".0f"),
}
LEARNED = ("lpips_unedited", "clip_whole", "clip_edited", "structure_distance")
GRID_IMAGES = 6


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+@-]+", "_", text)


def image_path(out: Path, suite: str, image: str, name: str) -> Path:
    """Where bench saves an image of a case: images/SUITE/IMAGE/NAME.png."""
    return out / "images" / slug(suite) / slug(image) / f"{slug(name)}.png"


def reconstruction_knob(knob: str) -> str:
    """The reconstruction row that goes with an edit setting: SDEdit's own strength, eta = 0 for the rest."""
    return knob if knob.startswith("strength=") else "eta=0"


def summarize(rows: list[dict]) -> dict:
    """{suite: {"edits" | "reconstruction": {method: {knob: {"n": images, column: [mean, low, high]}}}}}."""
    groups = defaultdict(list)
    for row in rows:
        part = RECONSTRUCTION if row["edit"] == RECONSTRUCTION else "edits"
        groups[row["suite"], part, row["method"], row["knob"]].append(row)
    summary = {}
    for (suite, part, method, knob), members in sorted(groups.items()):
        cell = {"n": len(members)}
        for column in COLUMNS:
            values = [r[column] for r in members if r.get(column) is not None]
            if values:
                cell[column] = list(mean_interval(values))
        summary.setdefault(suite, {}).setdefault(part, {}).setdefault(method, {})[knob] = cell
    for suite in summary.values():  # each edit setting also gets its reconstruction PSNR
        for method, knobs in suite.get("edits", {}).items():
            for knob, cell in knobs.items():
                recon = suite.get(RECONSTRUCTION, {}).get(method, {}).get(reconstruction_knob(knob), {})
                if "psnr" in recon:
                    cell["recon_psnr"] = recon["psnr"]
    return summary


def mean(cell: dict, column: str) -> float:
    value = cell.get(column)
    return value[0] if value and value[0] is not None and not math.isnan(value[0]) else math.nan


def best_knob(knobs: dict, default: str) -> str:
    """Highest edit success (ties: higher unedited PSNR); else highest CLIP score; else the default setting."""
    for column in ("success", "clip_whole"):
        scored = [k for k in knobs if not math.isnan(mean(knobs[k], column))]
        if scored:
            return max(scored, key=lambda k: (mean(knobs[k], column), nan_low(mean(knobs[k], "psnr_unedited"))))
    return default if default in knobs else next(iter(knobs))


def nan_low(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def matched_knob(knobs: dict, reference: float, column: str = "psnr_unedited") -> str:
    scored = [k for k in knobs if not math.isnan(mean(knobs[k], column))]
    if not scored or math.isnan(reference):
        return next(iter(knobs))
    return min(scored, key=lambda k: abs(mean(knobs[k], column) - reference))


def fidelity_column(edits: dict) -> str:
    """Unedited-region PSNR against the input's VAE round trip when the rows have it, else against the input."""
    cells = [cell for knobs in edits.values() for cell in knobs.values()]
    return "psnr_unedited_vae" if any(not math.isnan(mean(c, "psnr_unedited_vae")) for c in cells) else "psnr_unedited"


def is_variant(method: str) -> bool:
    """A variant such as pti[inner_steps=2] or ddim[guidance=3]: reported in the variants table only."""
    return "[" in method


def method_order(methods) -> list[str]:
    """PTI first, variants last, the rest as they came."""
    methods = list(methods)
    return sorted(methods, key=lambda m: (m != "pti", is_variant(m), methods.index(m)))


# ---------------------------------------------------------------------------------------------------- tables

def cell_text(cell: dict, column: str) -> str:
    value = cell.get(column)
    if not value or value[0] is None or math.isnan(value[0]):
        return "–"
    spec = COLUMNS[column][1]
    if column == "unet_calls" or value[1] is None or math.isnan(value[1]):  # calls: the interval adds nothing
        return f"{value[0]:{spec}}"
    return f"{value[0]:{spec}} [{value[1]:{spec}}, {value[2]:{spec}}]"


def table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(x) + " |" for x in lines]


def present(cells: list[dict], columns) -> list[str]:
    """The columns that hold a value in at least one cell."""
    return [c for c in columns if any(c in cell for cell in cells)]


def settings_table(picks: list[tuple[str, str, dict]], columns, headings: dict | None = None) -> list[str]:
    columns = present([cell for _, _, cell in picks], columns)
    return table(["method", "setting", "n"] + [(headings or {}).get(c, COLUMNS[c][0]) for c in columns],
                 [[m, k, str(cell["n"])] + [cell_text(cell, c) for c in columns] for m, k, cell in picks])


EDIT_COLUMNS = ("success", "psnr", "psnr_vae", "ssim", "psnr_unedited", "psnr_unedited_vae", "ssim_unedited",
                "mse_unedited", *LEARNED, "recon_psnr",
                "invert_seconds", "edit_seconds")


SUITE_TITLES = {"shapes": ("Shapes-world edit suite", "scenes"),
                "textured": ("Textured-world edit suite", "scenes on textures and held-out photos (the reader is given "
                             "each scene's background)")}


def edit_suite_section(suite: str, summary: dict, rows: list[dict], default: Callable[[str], str]) -> list[str]:
    edits = summary.get("edits", {})
    methods = method_order(edits)
    main = [m for m in methods if not is_variant(m)]
    best = {m: best_knob(edits[m], default(m)) for m in methods}
    fidelity = fidelity_column(edits)
    reference_method = "pti" if "pti" in edits else main[0]
    reference_knob = default("pti") if default("pti") in edits.get("pti", {}) else best[reference_method]
    reference = mean(edits[reference_method][reference_knob], fidelity)
    matched = {m: matched_knob(edits[m], reference, fidelity) for m in methods}
    title, scenes = SUITE_TITLES[suite]
    lines = [f"## {title}", "",
             f"{len({r['image'] for r in rows})} {scenes} with one ground-truth edit each. Success: the attribute "
             "reader finds the target attribute reached and every other attribute kept. PSNR/SSIM vs ground truth: "
             "against the render of the edited scene. Unedited: against the input, on the pixels the edit leaves "
             "unchanged (ground-truth mask). The \"VAE round trip\" columns compare with the ground truth, or the "
             "input, encoded and decoded by the model's VAE: what a perfect method yields on this model, so the VAE "
             "does not cap them. Reconstruction PSNR: eta = 0, against the VAE round trip.", ""]
    ceilings = {(r["image"], r["edit"]): r["success_ceiling"] for r in rows if r.get("success_ceiling") is not None}
    if ceilings:
        lines += [f"The reader accepts {sum(ceilings.values()) / len(ceilings):.0%} of the {len(ceilings)} ground "
                  "truths' VAE round trips: the edit success of a perfect method on this model.", ""]
    lines += ["### At each method's best setting (highest edit success)", ""]
    lines += settings_table([(m, best[m], edits[m][best[m]]) for m in main], EDIT_COLUMNS)
    lines += ["", f"### At matched fidelity (setting whose {COLUMNS[fidelity][0]} is closest to "
              f"{reference:.2f} dB, {reference_method} at {reference_knob})", ""]
    lines += settings_table([(m, matched[m], edits[m][matched[m]]) for m in main], EDIT_COLUMNS)
    lines += ["", "### Edit success by edit type, at the best setting", ""]
    kinds = sorted({r["kind"] for r in rows if r["edit"] != RECONSTRUCTION})
    by_kind = []
    for m in main:
        cells = [mean_interval([r["success"] for r in rows if r["method"] == m and r["knob"] == best[m]
                                and r["kind"] == kind and r["success"] is not None]) for kind in kinds]
        by_kind.append([m, best[m]] + [cell_text({"success": list(c)}, "success") for c in cells])
    lines += table(["method", "setting"] + kinds, by_kind)
    variants = [m for m in methods if is_variant(m)]
    if variants:
        lines += ["", "### Variants (one factor at a time against each method's defaults; best setting of each)", ""]
        of = {base: [v for v in variants if v.split("[")[0] == base] for base in main}
        grouped = [m for base in main if of[base] for m in [base, *of[base]]]
        lines += settings_table([(m, best[m], edits[m][best[m]]) for m in grouped],
                                ("success", "psnr_unedited", "psnr_unedited_vae", "psnr", "recon_psnr",
                                 "invert_seconds", "unet_calls"))
    lines += ["", "### Every setting", ""]
    lines += settings_table([(m, k, edits[m][k]) for m in methods for k in edits[m]],
                            ("success", "psnr", "psnr_unedited", *LEARNED, "edit_seconds"))
    return lines


def photos_section(summary: dict, rows: list[dict]) -> list[str]:
    recon = summary.get(RECONSTRUCTION, {})
    methods = method_order(recon)
    lines = ["## Real-photo reconstruction suite", "",
             "Natural photos shipped inside installed packages, fitted to the model's resolution; reconstruction "
             "(eta = 0, no edit) against the VAE round trip, the best any inversion can do.", ""]
    lines += settings_table([(m, k, recon[m][k]) for m in methods for k in recon[m]],
                            ("psnr", "ssim", "mse", "invert_seconds", "unet_calls"),
                            {c: f"{c.upper()} vs VAE round trip" for c in ("psnr", "ssim", "mse")})
    images = sorted({r["image"] for r in rows})
    columns = [(m, k) for m in methods for k in recon[m]]
    psnr = {(r["image"], r["method"], r["knob"]): r["psnr"] for r in rows}
    lines += ["", "### Reconstruction PSNR per photo (dB)", ""]
    lines += table(["photo"] + [f"{m} {k}" for m, k in columns],
                   [[image] + [f"{psnr[image, m, k]:.2f}" if psnr.get((image, m, k)) is not None else "–"
                               for m, k in columns] for image in images])
    return lines


def piebench_section(summary: dict, rows: list[dict]) -> list[str]:
    edits = summary.get("edits", {})
    lines = ["## PIE-Bench", "",
             f"{len({r['image'] for r in rows})} images. Unedited-region metrics against the input outside the "
             "annotated mask (fitted to the model's resolution; a pixel is edited when any part of it is).", ""]
    lines += settings_table([(m, k, edits[m][k]) for m in method_order(edits) for k in edits[m]],
                            ("psnr_unedited", "mse_unedited", "ssim_unedited", *LEARNED, "recon_psnr",
                             "invert_seconds", "edit_seconds"))
    return lines


def runs_text(runs: list[dict], rows: int) -> str:
    """How the rows were made: one run, or several whose per-row times mix machine states."""
    runs = [run for run in runs if run["rows"]]  # a rerun that only rewrote the report made no rows
    if not runs:
        return ""
    logged = sum(run["rows"] for run in runs)
    text = (f" Rows made in {len(runs)} run{'s' if len(runs) > 1 else ''} of the command "
            f"({sum(run['seconds'] for run in runs) / 60:.1f} min wall time in all, "
            f"threads {'/'.join(str(run['threads']) for run in runs)})")
    if len(runs) > 1:
        text += ": the run was resumed, so per-row times mix the runs' machine states"
    if logged < rows:
        text += f"; {rows - logged} rows come from runs whose end was not logged (killed)"
    return text + "."


def header(settings: dict, learned: dict, runs: list[dict], rows: int) -> list[str]:
    return ["# ptiedit bench report", "",
            f"Model {settings['model']} (sha256 {settings['model_sha256']}), {settings['resolution']} px; "
            f"{settings['steps']} DDIM steps, guidance {settings['guidance']}, seed {settings['seed']}, inner "
            f"steps {settings['inner_steps'] if settings['inner_steps'] is not None else 'method defaults'}. "
            f"Up to {settings.get('batch_size', 1)} images inverted and edited together: times (inversion s, edit s) "
            f"are each image's or row's share of a batched call's wall time.{runs_text(runs, rows)}", "",
            "## Metrics", "",
            f"- Images in [0, 1], data_range 1.0. PSNR = 10 log10(1 / MSE), capped at {PSNR_CAP:g} dB (identical "
            "images). MSE: mean over pixels and RGB channels.",
            f"- SSIM (torchmetrics): gaussian kernel {SSIM_SETTINGS['kernel_size']}, sigma {SSIM_SETTINGS['sigma']}, "
            f"K1 {SSIM_SETTINGS['k1']}, K2 {SSIM_SETTINGS['k2']}; whole-image SSIM averages the map inside the "
            "window's border.",
            "- Unedited region (1 - mask, as PIE-Bench): PSNR and MSE over the unedited pixels only; SSIM map of the "
            "output with its edited pixels replaced by the reference's, averaged over the unedited pixels.",
            f"- Intervals: 95% percentile bootstrap of the mean over images ({BOOTSTRAP_RESAMPLES} resamples, "
            "seed 0). Edit success is a 0/1 value per image, so its mean is a rate.",
            *[f"- {name}: {text}" for name, text in learned.items()], ""]


# ----------------------------------------------------------------------------------------------------- plots

def knob_value(knob: str) -> float:
    return float(knob.split("=")[1])


def plot_tradeoff(edits: dict, path: Path, suite: str) -> bool:
    """Fidelity vs success: one line per method through its settings (x unedited PSNR; y edit success, or the
    CLIP score when there is no success measure). False, and no file, when neither is there."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    y_column = next((c for c in ("success", "clip_whole")
                     if any(c in cell for knobs in edits.values() for cell in knobs.values())), None)
    if y_column is None:
        return False
    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot()
    x_column = fidelity_column(edits)
    for method in (m for m in method_order(edits) if not is_variant(m)):
        knobs = sorted((k for k, cell in edits[method].items()
                        if not math.isnan(mean(cell, x_column)) and not math.isnan(mean(cell, y_column))),
                       key=knob_value)
        xs = [mean(edits[method][k], x_column) for k in knobs]
        ys = [mean(edits[method][k], y_column) for k in knobs]
        axes.plot(xs, ys, marker="o", label=method)
        for knob, x, y in zip(knobs, xs, ys):
            axes.annotate(knob.split("=")[1], (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    axes.set_xlabel(f"{COLUMNS[x_column][0]} (dB)")
    axes.set_ylabel(COLUMNS[y_column][0])
    knobs = sorted({k.split("=")[0] for m in edits for k in edits[m]})
    axes.set_title(f"{suite}: fidelity vs edit, one line per method through its {' / '.join(knobs)}", fontsize=9)
    if y_column == "success":
        axes.set_ylim(-0.05, 1.05)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return True


def grid_picks(summary: dict, default: Callable[[str], str]) -> list[tuple[str, str]]:
    """(method, setting) shown per method: the best edit setting, or the reconstruction (no edits in the suite)."""
    edits = summary.get("edits")
    if edits:
        return [(m, best_knob(edits[m], default(m))) for m in method_order(edits) if not is_variant(m)]
    recon = summary.get(RECONSTRUCTION, {})
    return [(m, reconstruction_knob(default(m))) for m in method_order(recon) if not is_variant(m)]


def grid_images(kind_of: dict[str, str]) -> list[str]:
    """Up to GRID_IMAGES image ids in sorted order, taking their edit kinds in turn, so that the grid shows every
    kind of edit rather than the first few scenes of one."""
    kinds: dict[str, list[str]] = {}
    for image in sorted(kind_of):
        kinds.setdefault(kind_of[image], []).append(image)
    rounds = itertools.zip_longest(*kinds.values())
    return [image for turn in rounds for image in turn if image is not None][:GRID_IMAGES]


def plot_grid(out: Path, suite: str, rows: list[dict], picks: list[tuple[str, str]], path: Path) -> bool:
    """Qualitative grid, one image per row: input, ground truth or VAE round trip, each method's pick."""
    from matplotlib.figure import Figure
    from PIL import Image

    edit_of, kind_of = {}, {}
    for row in rows:
        if row["edit"] != RECONSTRUCTION or row["image"] not in edit_of:
            edit_of[row["image"]], kind_of[row["image"]] = row["edit"], row["kind"]
    images = grid_images(kind_of)
    if not images or not picks:
        return False
    edited = any(edit != RECONSTRUCTION for edit in edit_of.values())
    columns = [("input", lambda image: "input")]
    if edited and image_path(out, suite, images[0], f"ground_truth__{edit_of[images[0]]}").exists():
        columns.append(("ground truth", lambda image: f"ground_truth__{edit_of[image]}"))
    if not edited:
        columns.append(("VAE round trip", lambda image: "vae_round_trip"))
    columns += [(f"{m}\n{k}", lambda image, m=m, k=k: f"{m}__{k}__{edit_of[image]}") for m, k in picks]
    figure = Figure(figsize=(1.4 * len(columns), 1.5 * len(images)))
    axes = figure.subplots(len(images), len(columns), squeeze=False)
    for i, image in enumerate(images):
        for j, (title, name) in enumerate(columns):
            ax, file = axes[i, j], image_path(out, suite, image, name(image))
            if file.exists():
                with Image.open(file) as picture:
                    ax.imshow(picture.convert("RGB"), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=7)
            if j == 0:
                ax.set_ylabel(image, fontsize=7)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return True


# ---------------------------------------------------------------------------------------------------- output

def finite(value):
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_outputs(out: Path, rows: list[dict], settings: dict, learned: dict, default: Callable[[str], str],
                  runs: list[dict]) -> None:
    """results.json, report.md and, per suite, the trade-off plot and the qualitative grid."""
    summary = summarize(rows)
    results = {"settings": settings, "metrics": learned, "runs": runs, "summary": summary, "rows": rows}
    (out / "results.json").write_text(json.dumps(finite(results), indent=1), encoding="utf-8")
    lines = header(settings, learned, runs, len(rows))
    sections = {"shapes": partial(edit_suite_section, "shapes", default=default),
                "textured": partial(edit_suite_section, "textured", default=default),
                "photos": photos_section, "piebench": piebench_section}
    for suite, suite_summary in summary.items():
        suite_rows = [r for r in rows if r["suite"] == suite]
        lines += sections[suite](suite_summary, suite_rows) + [""]
        if plot_tradeoff(suite_summary.get("edits", {}), out / f"tradeoff_{suite}.png", suite):
            lines.append(f"![fidelity vs edit trade-off](tradeoff_{suite}.png)")
        if plot_grid(out, suite, suite_rows, grid_picks(suite_summary, default), out / f"grid_{suite}.png"):
            lines.append(f"![examples](grid_{suite}.png)")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
