"""`ptiedit bench`: every method x knob setting x image x edit of a suite, one results row each, resumable.

One inversion per (method, image) serves its reconstruction row and every knob setting and edit (PTI with the
empty init prompt is target-free; the baselines invert with the true source caption); SDEdit's strength is part
of its "inversion" (the noising), so it has one per strength. Rows are made --batch-size images at a time
(runner.py: batched inversion and sampling) and appended to OUT/results.csv as they are made; a rerun skips the
rows already there, keyed by (suite, method, knob, image, edit). Then results.json,
report.md and the plots are written from the rows this command asked for (the file may hold more).
"""
from __future__ import annotations

import argparse
import csv
import inspect
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from ..devices import resolve_device
from ..editing.edit import DEFAULT_ETA
from ..diffusion.flow import is_flow_scheduler
from ..inversion.invert import FLOW_ONLY, METHODS
from ..models.family import model_family
from ..models.fingerprint import pipeline_fingerprint
from ..models.loading import load_pipeline
from .metrics import LearnedMetrics
from .report import RECONSTRUCTION, image_path, write_outputs
from .runner import Job, MethodSpec, Runner, save_once
from .suites import (DEFAULT_SCENES, EDIT_TYPES, SUITES, TEXTURED_EDIT_TYPES, Case, check_edit_types,
                     photos_suite, piebench_suite, shapes_suite, textured_suite)

# Knob swept per method: (name, values, default). Methods not listed edit by CFG on the target prompt (eta = 1).
KNOBS = {"pti": ("eta", (0.4, 0.6, 0.7, 0.8, 0.9, 1.0), DEFAULT_ETA), "sdedit": ("strength", (0.3, 0.5, 0.7, 0.9), 0.5)}
PLAIN = ("eta", (1.0,), 1.0)
FAITHFUL = "faithful"  # METHOD+faithful: the method's inversion edited in faithful mode (mask + blending)
FAITHFUL_KNOBS = {"pti": ("eta", (0.4, 0.7, 0.9, 1.0), DEFAULT_ETA)}
P2P = ("cross_replace", (0.2, 0.5, 0.8), 0.8)  # Prompt-to-Prompt word swap on top of a plain method
# --ablation: one factor at a time against each method's defaults (every row sweeps its method's knob already).
# PTI's own knobs (inner_steps 0 is no tuning at all: c_t stays the init prompt's embedding); the baselines' main
# knobs, so that each is compared at its best (issue 11); guidance for every method.
GUIDANCE_VARIANTS = ({"guidance": 3.0}, {"guidance": 5.0})
VARIANTS = {"pti": ({"inner_steps": 0}, {"inner_steps": 2}, {"inner_steps": 5}, {"early_stop": 1e-5},
                    {"early_stop": 1e-3}, {"init": "target"}, *GUIDANCE_VARIANTS),
            "null_text": ({"lr": 5e-3}, {"lr": 2e-2}, {"early_stop": 1e-4}, {"early_stop": 1e-6}, *GUIDANCE_VARIANTS),
            "negative_prompt": GUIDANCE_VARIANTS, "ddim": GUIDANCE_VARIANTS, "sdedit": GUIDANCE_VARIANTS}
COLUMNS = ("suite", "method", "knob", "image", "edit", "kind", "success", "success_ceiling", "psnr", "ssim", "mse",
           "psnr_vae", "psnr_unedited", "ssim_unedited", "mse_unedited", "psnr_unedited_vae", "lpips_unedited",
           "clip_whole", "clip_edited", "structure_distance", "invert_seconds", "edit_seconds", "unet_calls",
           "source_prompt", "target_prompt")
KEY = ("suite", "method", "knob", "image", "edit")
TEXT_COLUMNS = ("suite", "method", "knob", "image", "edit", "kind", "source_prompt", "target_prompt")
SETTINGS_FILE = "bench.json"
RUNS_FILE = "runs.jsonl"  # one line per run of the command on this folder: when, how many rows, how long
DEFAULT_BATCH = 8
RESUME_SETTINGS = ("model", "model_sha256", "steps", "guidance", "seed", "inner_steps")


def knob_of(name: str) -> tuple[str, tuple[float, ...], float]:
    """(knob, values, default) of a method name: METHOD, METHOD+p2p, either with +faithful, or a variant
    METHOD[...]."""
    parts = name.split("[")[0].split("+")
    if "p2p" in parts:
        return P2P
    knobs = {**KNOBS, **FAITHFUL_KNOBS} if FAITHFUL in parts else KNOBS
    return knobs.get(parts[0], PLAIN)


def default_knob(name: str) -> str:
    knob, _, default = knob_of(name)
    return f"{knob}={default:g}"


def accepts(method: str, option: str) -> bool:
    return option in inspect.signature(METHODS[method]).parameters


def available_methods() -> list[str]:
    """Every inversion method, plus Prompt-to-Prompt on those that edit with eta = 1 (on UNet models: not the
    flow-only ones), each also in faithful mode."""
    plain = list(METHODS) + [f"{m}+p2p" for m in METHODS if m not in KNOBS and m not in FLOW_ONLY]
    return plain + [f"{m}+{FAITHFUL}" for m in plain]


def method_specs(names: list[str] | None, ablation: bool | list[str], inner_steps: int | None,
                 seed: int) -> list[MethodSpec]:
    """Specs for --methods (default: available_methods()), plus their --ablation variants (VARIANTS): all of them
    with ablation True, or those named in an ablation list ("pti[init=target]", as the report names them)."""
    available = available_methods()
    names = available if names is None else names
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(f"unknown method {', '.join(unknown) or '(none given)'}; choose from {', '.join(available)}")
    specs, variants = [], set()
    for name in dict.fromkeys(names):
        method = name.split("+")[0]
        knob, values, _ = knob_of(name)
        options = {"inner_steps": inner_steps} if inner_steps is not None and accepts(method, "inner_steps") else {}
        if accepts(method, "seed"):
            options["seed"] = seed
        base = MethodSpec(name, method, knob, values, tuple(options.items()),
                          "empty" if method == "pti" else "source", FAITHFUL if name.endswith(FAITHFUL) else "paper")
        specs.append(base)
        for change in VARIANTS.get(name, ()):
            variant = {**options, **{k: v for k, v in change.items() if k != "init"}}
            label = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in change.items())
            specs.append(MethodSpec(f"{name}[{label}]", method, knob, values, tuple(variant.items()),
                                    change.get("init", base.init), base.mode))
            variants.add(specs[-1].name)
    if isinstance(ablation, list):
        unknown = [v for v in ablation if v not in variants]
        if unknown or not ablation:
            raise ValueError(f"unknown --ablation variant {', '.join(unknown) or '(none given)'} for these methods; "
                             f"choose from {', '.join(s.name for s in specs if s.name in variants)}")
    keep = variants if ablation is True else set(ablation or ())
    return [spec for spec in specs if spec.name not in variants or spec.name in keep]


def runnable(specs: list[MethodSpec], pipe, named: bool) -> list[MethodSpec]:
    """The specs the model runs: the flow-only methods (FLOW_ONLY) need a flow model; on another they are left out
    of the default list and refused when named."""
    if is_flow_scheduler(pipe.scheduler):
        return specs
    flow = [spec.name for spec in specs if spec.method in FLOW_ONLY]
    if flow and named:
        raise ValueError(f"{', '.join(flow)}: methods of flow-matching models; {model_family(pipe).label} is not one")
    return [spec for spec in specs if spec.method not in FLOW_ONLY]


def jobs_for(spec: MethodSpec, case: Case) -> list[Job]:
    jobs = []
    for strength in (spec.values if spec.knob == "strength" else (None,)):
        jobs.append(Job(spec, strength, spec.label(strength) if strength is not None else "eta=0", None, None))
        for edit in case.edits:
            for value in ((strength,) if strength is not None else spec.values):
                jobs.append(Job(spec, strength, spec.label(value), value, edit))
    return jobs


class ResultsFile:
    """results.csv, appended row by row and flushed, so an interrupted run loses at most the row in progress."""

    def __init__(self, path: Path):
        self.path, self.rows = path, []
        if path.exists():
            text = path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):  # a torn last row from a killed run: drop it
                text = text[:text.rfind("\n") + 1]
                path.write_text(text, encoding="utf-8")
            reader = csv.DictReader(text.splitlines())
            if text and tuple(reader.fieldnames or ()) != COLUMNS:
                raise ValueError(f"{path} was not written by this version of ptiedit bench (other columns)")
            self.rows = [parse_row(row) for row in reader]
        self.done = {tuple(row[k] for k in KEY) for row in self.rows}

    def append(self, row: dict) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        text = {k: format_value(row.get(k)) for k in COLUMNS}
        with self.path.open("a", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerow(text)
        self.rows.append(parse_row(text))  # as a rerun will read it back
        self.done.add(tuple(row[k] for k in KEY))


def format_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def parse_row(row: dict) -> dict:
    parsed = {}
    for key in COLUMNS:
        value = row.get(key) or ""
        parsed[key] = value if key in TEXT_COLUMNS else (float(value) if value else None)
    return parsed


def log_run(out: Path, rows: int, seconds: float, device: str) -> None:
    """Append this run to RUNS_FILE, so a report made over several (resumed) runs can say so."""
    import torch

    run = {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": rows,
           "seconds": round(seconds, 1), "device": device, "threads": torch.get_num_threads()}
    with (out / RUNS_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(run) + "\n")


def read_runs(out: Path) -> list[dict]:
    path = out / RUNS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_out(out: Path, settings: dict) -> None:
    """OUT must be new, empty, or hold a bench run whose settings agree with the given ones (a rerun resumes it)."""
    saved = out / SETTINGS_FILE
    if saved.exists():
        try:
            previous = json.loads(saved.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise ValueError(f"{saved} is not valid JSON; use another --out folder") from None
        for key in RESUME_SETTINGS:
            if key in settings and previous.get(key) != settings[key]:
                raise ValueError(f"{out} holds results made with {key} {previous.get(key)!r}, this run has "
                                 f"{settings[key]!r}; use another --out folder")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and holds no ptiedit bench results; choose a new or empty folder")


def prepare_out(out: Path, settings: dict) -> None:
    check_out(out, settings)
    if not (out / SETTINGS_FILE).exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=1), encoding="utf-8")


def build_cases(args: argparse.Namespace, size: int) -> list[Case]:
    if args.suite == "shapes":
        return shapes_suite(size, args.n or DEFAULT_SCENES, args.seed, tuple(args.edit_types or EDIT_TYPES))
    if args.suite == "textured":
        return textured_suite(size, args.n or DEFAULT_SCENES, args.seed,
                              tuple(args.edit_types or TEXTURED_EDIT_TYPES))
    if args.suite == "photos":
        return photos_suite(size, args.n)
    return piebench_suite(args.piebench, size, args.n)


def check_arguments(args: argparse.Namespace) -> None:
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if not 1 <= args.steps <= 1000:
        raise ValueError(f"--steps must be between 1 and 1000, got {args.steps}")
    if not 0 <= args.guidance <= 50:
        raise ValueError(f"--guidance must be between 0 and 50, got {args.guidance}")
    if args.inner_steps is not None and not 0 <= args.inner_steps <= 100:
        raise ValueError(f"--inner-steps must be between 0 and 100, got {args.inner_steps}")
    if (args.suite == "piebench") != (args.piebench is not None):
        raise ValueError("--suite piebench needs --piebench DIR" if args.suite == "piebench"
                         else "--piebench DIR goes with --suite piebench")
    if args.piebench is not None and not (Path(args.piebench) / "mapping_file.json").is_file():
        raise ValueError(f"{args.piebench}: no mapping_file.json (expected a PIE-Bench data folder)")
    if args.edit_types is not None:
        if args.suite not in ("shapes", "textured"):
            raise ValueError("--edit-types applies to --suite shapes or textured only")
        check_edit_types(args.edit_types, EDIT_TYPES if args.suite == "shapes" else TEXTURED_EDIT_TYPES)
    resolve_device(args.device)
    if not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.ablation and not set(args.methods or VARIANTS) & set(VARIANTS):
        raise ValueError(f"--ablation varies {', '.join(VARIANTS)}: include one of them in --methods")


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Benchmark inversion and editing methods on the shapes-world edit suite, its textured-world "
                          "counterpart (textures and held-out photos), natural photos (reconstruction) or a "
                          "PIE-Bench folder; resumable.")
    parser.add_argument("--out", required=True, metavar="DIR", help="results folder: results.csv/json, report.md, "
                        "plots and images; rerunning with the same folder resumes")
    parser.add_argument("--suite", choices=SUITES, default="shapes", help="what to evaluate (default shapes)")
    parser.add_argument("--piebench", metavar="DIR",
                        help="PIE-Bench folder holding mapping_file.json (with --suite piebench)")
    parser.add_argument("--methods", type=comma_list, metavar="M[,M...]", help="methods to run: "
                        f"{', '.join(available_methods())} (default: all)")
    parser.add_argument("--n", type=int, help=f"images: scenes for shapes and textured (default {DEFAULT_SCENES}); "
                        "at most this many for photos and piebench (default all)")
    parser.add_argument("--edit-types", type=comma_list, metavar="T[,T...]",
                        help=f"edit types, in turn: shapes {','.join(EDIT_TYPES)} (the default), textured "
                        f"{','.join(TEXTURED_EDIT_TYPES)} (the default)")
    parser.add_argument("--ablation", nargs="?", const=True, default=False, type=comma_list, metavar="VARIANT[,...]",
                        help="add one-factor variants of each method: PTI's inner steps, early stop and c_T init, "
                        "null-text inversion's learning rate and early stop, and guidance 3 and 5 for every "
                        "inverting method; or only the variants named, as the report names them ('pti[init=target]')")
    parser.add_argument("--seed", type=int, default=0, help="scenes and SDEdit noise (default 0)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--inner-steps", type=int, help="tuning steps per timestep of PTI and null-text inversion "
                        "(default: each method's own)")
    parser.add_argument("--model", metavar="ID_OR_DIR", help="diffusers Stable Diffusion folder or hub id "
                        "(default: the embedded shapes-world model)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="B", help="images inverted, and "
                        f"edits sampled, together (default {DEFAULT_BATCH}); results equal one by one within rounding")
    learned = parser.add_argument_group("learned metrics (local weights only; skipped otherwise)")
    learned.add_argument("--lpips-weights", metavar="DIR", help="folder holding torchvision's AlexNet checkpoint")
    learned.add_argument("--clip-model", metavar="DIR", help="transformers CLIP model folder")
    learned.add_argument("--dino-model", metavar="DIR", help="transformers DINO ViT model folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    specs = method_specs(args.methods, args.ablation, args.inner_steps, args.seed)
    out = Path(args.out)
    settings = {"steps": args.steps, "guidance": args.guidance, "seed": args.seed, "inner_steps": args.inner_steps}
    check_out(out, settings)  # before the slow part: loading the model
    learned = LearnedMetrics(args.lpips_weights, args.clip_model, args.dino_model)
    pipe = load_pipeline(args.model, device=args.device)
    specs = runnable(specs, pipe, named=args.methods is not None)
    cases = build_cases(args, model_family(pipe).default_size)
    fingerprint = pipeline_fingerprint(pipe)
    settings = {"model": fingerprint["model"], "model_sha256": fingerprint["model_sha256"], **settings,
                "resolution": model_family(pipe).default_size, "batch_size": args.batch_size}
    prepare_out(out, settings)
    results = ResultsFile(out / "results.csv")
    planned = {(args.suite, spec.name, job.knob, case.image_id, job.edit.name if job.edit else RECONSTRUCTION):
               (case, job) for case in cases for spec in specs for job in jobs_for(spec, case)}
    todo = [work for key, work in planned.items() if key not in results.done]
    if not args.quiet:
        print(f"ptiedit bench: {len(planned) - len(todo)} of {len(planned)} rows already in {out / 'results.csv'}, "
              f"{len(todo)} to run", file=sys.stderr)
    runner = Runner(pipe, args.suite, args.steps, args.guidance, learned, out, args.batch_size)
    for case in cases:
        save_once(case.image, image_path(out, args.suite, case.image_id, "input"))
        for edit in case.edits:
            if edit.ground_truth is not None:
                save_once(edit.ground_truth, image_path(out, args.suite, case.image_id, f"ground_truth__{edit.name}"))
    started, made = time.perf_counter(), 0
    try:
        with tqdm(total=len(todo), desc="bench", disable=args.quiet) as bar:
            for row in runner.rows(todo):
                results.append(row)
                made += 1
                bar.update()
    finally:  # an interrupted run is logged too: its rows stay in results.csv
        log_run(out, made, time.perf_counter() - started, args.device)
    reported = [row for row in results.rows if tuple(row[k] for k in KEY) in planned]  # this command's rows only
    write_outputs(out, reported, settings, learned.status(), default_knob, read_runs(out))
    if not args.quiet:
        print(f"ptiedit bench: wrote {out / 'report.md'}", file=sys.stderr)
    return 0

