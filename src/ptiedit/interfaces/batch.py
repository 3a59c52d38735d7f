"""`ptiedit batch MANIFEST --out DIR`: invert and edit every row of a manifest, resumably, on one or more processes.

Rows with the same PTI settings are inverted together, up to --batch-size at a time (one UNet batch when the
core vectorizes them), then edited. Each row gets one PNG per eta (the metadata of `ptiedit edit`) and one line
in DIR/results.jsonl; a bad row is recorded as an error and the others go on. Exit status: 0 when every row
succeeded, 1 when some failed, 2 for a bad command line or manifest.

Under `torchrun` or `accelerate launch`, accelerate's PartialState splits the batches between the processes;
each keeps its own shard of results (batch_results.py) and the main process merges them after a barrier.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..devices import resolve_device
from ..editing.edit import DEFAULT_ETA, DEFAULT_MODE, edit
from ..images import load_image
from ..inversion.invert import invert
from ..outputs import result_settings, write_png
from .batch_results import RESULTS, Shard, check_out, is_done, latest, merge, read_all
from .cli.common import DEFAULTS, add_common_options, add_inversion_options, add_mode_option, check_ranges, eta_files, \
    one_line, open_model, parse_etas
from .manifest import COLUMNS, ROW_SETTINGS, Job, plan_jobs, read_manifest

DEFAULT_BATCH_SIZE = 8
# The processes meet at a barrier when all are done; one may finish hours before the slowest.
BARRIER_TIMEOUT = timedelta(days=7)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Invert and edit every row of MANIFEST (CSV or JSONL) with PTI, writing one PNG per row "
                          "and eta and DIR/results.jsonl; resumable, and split between processes under torchrun "
                          "or accelerate launch.")
    parser.epilog = (f"manifest columns: {', '.join(COLUMNS)}. image (relative to the manifest's folder) and "
                     "target are required; eta is one value or several (\"0.6,0.8\", or a JSON list); id names "
                     f"the outputs (default rowNNNNN); {', '.join(ROW_SETTINGS)} override the options of the same "
                     "name for that row. Exit status: 0 all rows ok, 1 some failed, 2 bad command line or manifest.")
    parser.add_argument("manifest", metavar="MANIFEST", help="a .csv or .jsonl file, one row per edit")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs and results.jsonl "
                        "(new, empty, or an earlier run's: a rerun skips the rows already done)")
    parser.add_argument("--eta", action="append", metavar="ETA[,ETA...]", help="eta for rows without one "
                        f"(default {DEFAULT_ETA})")
    parser.add_argument("--allow-extrapolation", action="store_true", help="allow eta above 1")
    add_mode_option(parser)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"images per UNet batch, in inversion and in editing (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--save-inversions", action="store_true", help="also write DIR/NAME.safetensors per row")
    add_inversion_options(parser, with_target=True)
    parser.add_argument("--early-stop", type=float, metavar="LOSS",
                        help="stop tuning c_t once the loss is below this (default: the method's, 1e-4)")
    add_common_options(parser)


@dataclass
class Edited:
    """One row's model work: its inversion and its edits by eta."""

    inversion: object
    images: dict


def process_group(pipe, jobs: list[Job], images: dict, allow_extrapolation: bool,
                  max_batch: int | None = None, mode: str = DEFAULT_MODE) -> list[Edited]:
    """PTI stage 1 for the rows of one settings group, then stage 2 for each row and eta, in UNet batches.

    images: path -> image. One inversion per distinct (image, init prompt) serves all its rows: PTI's c_T does
    not depend on the target unless it starts from it (--init-from-target). The core inverts the list as
    batches of one image size, and samples every (row, eta) of rows sharing their etas in batches of up to
    max_batch; every image keeps its own conditioning and early stopping, so the results equal one-by-one runs.
    """
    settings = jobs[0].settings
    options = {name: settings[name] for name in ("inner_steps", "early_stop") if settings[name] is not None}
    sources = list(dict.fromkeys(job.source for job in jobs))
    torch.manual_seed(settings["seed"])  # PTI is deterministic; the seed is set and recorded as `edit` does
    inverted = invert(pipe, [images[path] for path, _ in sources], method="pti",
                      prompt=[prompt for _, prompt in sources], steps=settings["steps"],
                      guidance=settings["guidance"], progress=False, max_batch=max_batch, **options)
    inversions = dict(zip(sources, inverted))
    for inversion in inverted:
        inversion.settings["seed"] = settings["seed"]
    by_etas = {}
    for job in jobs:
        by_etas.setdefault(tuple(job.etas), []).append(job)
    results = {}
    for etas, rows in by_etas.items():
        chosen = [inversions[job.source] for job in rows]
        edited = edit(pipe, chosen, [job.target for job in rows], list(etas), progress=False, mode=mode,
                      allow_extrapolation=allow_extrapolation, max_batch=max_batch)
        for job, inversion, pictures in zip(rows, chosen, edited):
            results[job.row] = Edited(inversion, dict(zip(etas, pictures)))
    return [results[job.row] for job in jobs]


def planned_outputs(job: Job, save_inversions: bool) -> list[str]:
    """Output file names, relative to DIR: NAME.png for one eta, NAME_eta0.60.png, ... for several."""
    names = [path.name for path in eta_files(Path(f"{job.name}.png"), job.etas).values()] if job.etas else []
    return names + ([f"{job.name}.safetensors"] if save_inversions else [])


def record(job: Job, key: str, error: str | None = None, outputs=(), inversion=None, seconds=0.0) -> dict:
    return {"row": job.row, "id": job.name, "image": job.image, "target": job.target, "etas": job.etas,
            "status": "error" if error else "ok", "error": error, "outputs": list(outputs),
            "inversion": inversion, "seconds": round(seconds, 3), "key": key}


def run_batch(model, jobs: list[Job], keys: dict, out: Path, args: argparse.Namespace) -> list[dict]:
    """Load, invert, edit and write one batch of rows; a row whose image cannot be read fails alone.
    model(): the pipeline, loaded on first use (a rerun that only retries unreadable images never loads it)."""
    start, records, images = time.perf_counter(), {}, {}
    for job in jobs:
        try:
            if job.path not in images:
                images[job.path] = load_image(job.path)
        except ValueError as error:
            records[job.row] = record(job, keys[job.row], one_line(error))
    loaded = [job for job in jobs if job.path in images]
    if loaded:
        try:
            edited = process_group(model(), loaded, images, args.allow_extrapolation, args.batch_size, args.mode)
        except Exception as error:  # noqa: BLE001 - out of memory, NaNs, ...: these rows fail, the run goes on
            message = one_line(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {one_line(error)}"
            edited = [message] * len(loaded)
        seconds = (time.perf_counter() - start) / len(jobs)
        for job, result in zip(loaded, edited):
            if isinstance(result, str):
                records[job.row] = record(job, keys[job.row], result, seconds=seconds)
                continue
            files = eta_files(out / f"{job.name}.png", job.etas)
            for eta, path in files.items():
                write_png(result.images[eta], path, result_settings(result.inversion, prompt=job.target, eta=eta,
                                                                     seed=job.settings["seed"], mode=args.mode))
            inversion = None
            if args.save_inversions:
                inversion = f"{job.name}.safetensors"
                result.inversion.save(out / inversion)
            records[job.row] = record(job, keys[job.row], None, [p.name for p in files.values()], inversion, seconds)
    return [records[job.row] for job in jobs]


def make_batches(jobs: list[Job], size: int) -> list[list[Job]]:
    """Rows grouped by settings and, within a group, by inversion source (first appearance order); each group is
    cut into batches of at most `size` inversions, the rows sharing one staying together."""
    groups = {}
    for job in jobs:
        groups.setdefault(job.group, {}).setdefault(job.source, []).append(job)
    batches = []
    for by_image in groups.values():
        rows = list(by_image.values())
        batches += [[job for image_rows in rows[i:i + size] for job in image_rows] for i in range(0, len(rows), size)]
    return batches


def start_processes(device: str) -> PartialState:
    """accelerate's view of the launch: one process, or one of N under torchrun / accelerate launch."""
    # Without CUDA, cpu=True is what makes PartialState join torchrun's process group (gloo) instead of
    # treating every process as a lone one that would then run every row.
    cuda = resolve_device(device).startswith("cuda")
    return PartialState(cpu=not cuda, timeout=BARRIER_TIMEOUT)


def check_arguments(args: argparse.Namespace) -> None:
    check_ranges(args)
    resolve_device(args.device)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.early_stop is not None and not args.early_stop >= 0:
        raise ValueError(f"--early-stop must be at least 0, got {args.early_stop}")
    if args.init_prompt is not None and not args.init_prompt.strip():
        raise ValueError("--init-prompt is empty")


def check_inputs_kept(jobs: list[Job], manifest: Path, out: Path, save_inversions: bool) -> None:
    """No output may be the manifest or an input image, even with --force."""
    inputs = {manifest.resolve(), *(job.path.resolve() for job in jobs if job.image)}
    for job in jobs:
        for name in planned_outputs(job, save_inversions):
            if (out / name).resolve() in inputs:
                raise ValueError(f"row {job.row}: output {out / name} is an input; choose another --out folder")


def run(args: argparse.Namespace) -> int:
    state = start_processes(args.device)
    try:
        try:
            plan = plan_run(args)
        except ValueError:
            if not state.is_main_process:
                raise SystemExit(2) from None  # every process finds the same mistake: the main one reports it
            raise
        return run_plan(state, plan, args)
    finally:
        if state.use_distributed:
            state.destroy_process_group()


@dataclass
class Plan:
    jobs: list[Job]  # every manifest row
    keys: dict[int, str]  # row -> Job.key
    todo: list[Job]  # rows not finished by an earlier run


def plan_run(args: argparse.Namespace) -> Plan:
    """Check the command line, manifest and DIR, and find what earlier runs finished; reads only."""
    check_arguments(args)
    manifest, out = Path(args.manifest), Path(args.out)
    defaults = {name: DEFAULTS[name] if getattr(args, name) is None else getattr(args, name) for name in DEFAULTS}
    # guidance not given stays None: invert() takes the model's (default_guidance: 7.5 SD, 7 SD3, 1 FLUX.1)
    defaults.update(guidance=args.guidance, early_stop=args.early_stop, init_prompt=args.init_prompt, seed=args.seed)
    etas = parse_etas(args.eta or [str(DEFAULT_ETA)], args.allow_extrapolation)
    jobs = plan_jobs(manifest, read_manifest(manifest), defaults, etas,
                     allow_extrapolation=args.allow_extrapolation, init_from_target=args.init_from_target)
    check_out(out, args.force)
    check_inputs_kept(jobs, manifest, out, args.save_inversions)
    model = str(Path(args.model).resolve()) if args.model and Path(args.model).exists() else args.model
    keys = {job.row: job.key(model or "embedded", args.dtype, args.mode) for job in jobs}
    previous = latest(read_all(out), jobs, keys) if out.is_dir() else {}
    todo = [job for job in jobs if not is_done(previous.get(job.row), out, planned_outputs(job, args.save_inversions))]
    return Plan(jobs, keys, todo)


def run_plan(state: PartialState, plan: Plan, args: argparse.Namespace) -> int:
    jobs, keys, todo, out = plan.jobs, plan.keys, plan.todo, Path(args.out)
    state.wait_for_everyone()  # every process has read DIR before any writes to it
    # 1. Split the batches of valid rows between the processes; the main one records the invalid rows.
    out.mkdir(parents=True, exist_ok=True)
    shard = Shard(out, state.process_index)
    failed = [job for job in todo if job.error]
    if state.is_main_process and failed:
        shard.add([record(job, keys[job.row], job.error) for job in failed])
    with state.split_between_processes(make_batches([job for job in todo if not job.error], args.batch_size)) \
            as batches:
        batches = list(batches)
    if state.is_main_process and not args.quiet:
        print(f"ptiedit batch: {len(jobs)} rows, {len(jobs) - len(todo)} already done, {len(todo)} to run"
              + (f" on {state.num_processes} processes" if state.num_processes > 1 else ""), file=sys.stderr)
    # 2. Each process loads the model on its device when it first needs it and works through its batches.
    if batches:
        if state.num_processes > 1 and state.device.type != "cpu":
            args.device = str(state.device)  # the GPU of this process's local rank
        model = functools.cache(lambda: open_model(args))
        desc = "batch" if state.num_processes == 1 else f"batch, process 0 of {state.num_processes}"
        with tqdm(total=sum(map(len, batches)), unit="image", desc=desc, dynamic_ncols=True,
                  disable=args.quiet or not state.is_main_process) as bar:
            for batch in batches:
                shard.add(run_batch(model, batch, keys, out, args))
                bar.update(len(batch))
    # 3. When every process is done, the main one merges the shards; every process exits with the same status.
    state.wait_for_everyone()
    if state.is_main_process:
        merge(out, jobs, keys)
    state.wait_for_everyone()
    results = latest(read_all(out), jobs, keys)
    ok = sum(results.get(job.row, {}).get("status") == "ok" for job in jobs)
    if state.is_main_process and not args.quiet:
        print(f"ptiedit batch: {ok} of {len(jobs)} rows ok, {len(jobs) - ok} failed; see {out / RESULTS}")
    return 0 if ok == len(jobs) else 1
