"""The `ptiedit batch` manifest: a CSV or JSONL file, one editing job per row, turned into checked Jobs.

Columns (CSV header) or keys (JSONL objects): `image` (path relative to the manifest's folder) and `target` are
required; `eta` (one value, a comma list, or in JSONL a list), `id` (output file name) and the per-row PTI
settings in ROW_SETTINGS are optional, and an empty cell means "not given" (the command line's value applies).

Two kinds of mistakes are told apart:
- the file itself is wrong (unreadable, not CSV/JSONL, an unknown or missing column, a bad or repeated id):
  ManifestError, raised before any work, naming the row and column;
- a value in one row is wrong (empty target, eta out of range, steps not a number, ...): that row becomes a
  Job with `error` set, recorded as failed while the other rows run.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..editing.edit import check_etas
from .options import INVERSION_SETTINGS, check_setting

# Per-row PTI settings: name -> type. Each has a command-line option of the same name giving its default.
ROW_SETTINGS = {"steps": int, "guidance": float, "inner_steps": int, "early_stop": float, "init_prompt": str,
                "seed": int}
COLUMNS = ("image", "target", "eta", "id", *ROW_SETTINGS)
REQUIRED = ("image", "target")
ID_PATTERN = re.compile(r"\w[\w.\-]*")  # a file name stem: no path separators, no leading dot or dash


class ManifestError(ValueError):
    """The manifest cannot be used at all (the command exits with status 2)."""


@dataclass
class Job:
    """One manifest row, checked: what to invert and edit, where the results go, or why the row cannot run."""

    row: int
    name: str  # output stem: the row's id, or row00042
    image: str  # as written in the manifest
    path: Path  # resolved against the manifest's folder
    target: str = ""
    etas: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # ROW_SETTINGS values; None: the method's (guidance: the model's)
    error: str | None = None

    @property
    def group(self) -> str:
        """Rows with equal inversion settings (the init prompt aside: one per image) are inverted together."""
        return json.dumps({k: v for k, v in self.settings.items() if k != "init_prompt"}, sort_keys=True)

    @property
    def source(self) -> tuple[Path, str]:
        """What the row's inversion depends on beyond its group: rows with the same source share one."""
        return self.path, self.settings["init_prompt"] or ""

    def key(self, model: str, dtype: str | None, mode: str) -> str:
        """Identifies the work a finished row did; a rerun skips the row only while its key is unchanged."""
        spec = {"image": self.image, "target": self.target, "etas": self.etas, "settings": self.settings,
                "model": model, "dtype": dtype, "mode": mode}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(path: Path) -> list[dict]:
    """The rows of a .csv or .jsonl manifest as dicts of raw values; ManifestError for a file that is wrong."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ManifestError(f"{path}: the manifest must be a .csv or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a byte-order mark
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: cannot be read ({error})") from None
    rows = read_csv(path, text) if suffix == ".csv" else read_jsonl(path, text)
    if not rows:
        raise ManifestError(f"{path}: the manifest has no rows")
    for row, values in enumerate(rows):
        for column in values:
            if column not in COLUMNS:
                raise ManifestError(f"{path}: row {row}: unknown column {column!r} (known: {', '.join(COLUMNS)})")
        for column in REQUIRED:
            if column not in values:
                raise ManifestError(f"{path}: row {row}: the column {column!r} is missing")
    return rows


def read_csv(path: Path, text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # newline="": quoted cells may hold line breaks
    header = reader.fieldnames or []
    for column in header:
        if column not in COLUMNS:
            raise ManifestError(f"{path}: header: unknown column {column!r} (known: {', '.join(COLUMNS)})")
    rows = []
    try:
        for row, values in enumerate(reader):
            if None in values:  # DictReader files surplus cells under None
                raise ManifestError(f"{path}: row {row}: more cells than the header has columns")
            rows.append(values)
    except csv.Error as error:
        raise ManifestError(f"{path}: not a readable CSV file ({error})") from None
    for column in REQUIRED:
        if column not in header:
            raise ManifestError(f"{path}: header: the column {column!r} is missing")
    return rows


def read_jsonl(path: Path, text: str) -> list[dict]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            raise ManifestError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
        if not isinstance(values, dict):
            raise ManifestError(f"{path}: line {number} is not a JSON object")
        rows.append(values)
    return rows


def plan_jobs(path: Path, rows: list[dict], defaults: dict, default_etas: list[float], *,
              allow_extrapolation: bool = False, init_from_target: bool = False) -> list[Job]:
    """Check every row. defaults: the command line's ROW_SETTINGS values (None where not given);
    init_from_target: a row without init_prompt starts c_T from its own target prompt."""
    jobs = [plan_job(path, row, values, defaults, default_etas, allow_extrapolation, init_from_target)
            for row, values in enumerate(rows)]
    seen = {}
    for job in jobs:
        if job.name in seen:
            raise ManifestError(f"{path}: row {job.row}: id {job.name!r} is already used by row {seen[job.name]}")
        seen[job.name] = job.row
    return jobs


def plan_job(path: Path, row: int, values: dict, defaults: dict, default_etas: list[float],
             allow_extrapolation: bool, init_from_target: bool) -> Job:
    values = {key: value for key, value in values.items() if value not in (None, "")}  # empty: not given
    name = f"row{row:05d}"
    if "id" in values:
        name = str(values["id"])
        if not ID_PATTERN.fullmatch(name):
            raise ManifestError(f"{path}: row {row}: id {name!r} is not usable as a file name "
                                "(letters, digits, '_', '-' and '.', not first)")
    image = str(values.get("image", ""))
    job = Job(row, name, image, path.parent / image)
    try:
        if not image.strip():
            raise ValueError("no image given")
        job.target = str(values.get("target", ""))
        if not job.target.strip():
            raise ValueError("the target prompt is empty")
        job.etas = parse_etas(values.get("eta"), default_etas, allow_extrapolation)
        settings = {name: parse_setting(name, values[name]) if name in values else defaults.get(name)
                    for name in ROW_SETTINGS}
        if settings["init_prompt"] is None and init_from_target:
            settings["init_prompt"] = job.target
        check_setting_ranges(settings)
        job.settings = settings
    except ValueError as error:
        job.error = str(error)
    return job


def parse_etas(value, default: list[float], allow_extrapolation: bool) -> list[float]:
    """One number, a comma list ("0.6,0.8") or a JSON list; duplicates dropped, order kept."""
    if value is None:
        return list(default)
    parts = value if isinstance(value, list) else str(value).split(",")
    etas = []
    for part in parts:
        try:
            eta = float(str(part).strip())
        except ValueError:
            raise ValueError(f"eta {part!r} is not a number") from None
        if not math.isfinite(eta):
            raise ValueError(f"eta must be a finite number, got {part}")
        if eta not in etas:
            etas.append(eta)
    if not etas:
        raise ValueError("eta is an empty list")
    check_etas(etas, allow_extrapolation)
    return etas


def parse_setting(name: str, value):
    kind = ROW_SETTINGS[name]
    if kind is str:
        return str(value)
    if isinstance(value, bool) or (isinstance(value, (list, dict))):
        raise ValueError(f"{name} must be a number, got {json.dumps(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number") from None
    if kind is int:
        if not number.is_integer():
            raise ValueError(f"{name} must be a whole number, got {value}")
        return int(number)
    return number


def check_setting_ranges(settings: dict) -> None:
    for name in (*INVERSION_SETTINGS, "seed"):
        if settings.get(name) is not None:
            check_setting(name, settings[name], name)
    if settings["early_stop"] is not None and not settings["early_stop"] >= 0:
        raise ValueError(f"early_stop must be at least 0, got {settings['early_stop']}")
