"""`ptiedit batch` bookkeeping: per-process result shards, the merged DIR/results.jsonl, and what a rerun skips.

Each process keeps its records in DIR/shards/process-K.jsonl, rewritten atomically after every batch, so a
killed run loses at most the batch in flight. At the end the main process merges results.jsonl and every shard
into a new results.jsonl (one record per manifest row, in row order) and removes the shards. A record counts
for a row only while its `key` (the row's content, model and dtype) is unchanged; of several, the latest wins.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from ..outputs import atomic_path
from .manifest import Job

RESULTS = "results.jsonl"
SHARDS = "shards"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def is_batch_folder(out: Path) -> bool:
    return (out / RESULTS).is_file() or (out / SHARDS).is_dir()


def check_out(out: Path, force: bool) -> None:
    """DIR must be new, empty or an earlier batch run's folder (a rerun resumes it); --force accepts any folder."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; --out takes a folder")
    if out.is_dir() and not force and not is_batch_folder(out) and any(out.iterdir()):
        raise ValueError(f"{out} holds files but no {RESULTS}; choose a new or empty folder, or pass --force "
                         "to write into it (files with the names of outputs are then overwritten)")


def read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a results file written by ptiedit batch ({error}); "
                         "move it away or use another --out folder") from None


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Atomically; a file that already holds these records is left untouched (a rerun with nothing to do
    rewrites nothing)."""
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def read_all(out: Path) -> list[dict]:
    """Every record in DIR: the merged results.jsonl and every process's shard."""
    paths = [out / RESULTS] + sorted((out / SHARDS).glob("process-*.jsonl"))
    return [record for path in paths if path.is_file() for record in read_jsonl(path)]


def latest(records: list[dict], jobs: list[Job], keys: dict[int, str]) -> dict[int, dict]:
    """Per manifest row, its latest record made with the row's current key."""
    best = {}
    for record in records:
        row = record.get("row")
        if row in keys and record.get("key") == keys[row]:
            if row not in best or record.get("finished", "") >= best[row].get("finished", ""):
                best[row] = record
    return {job.row: best[job.row] for job in jobs if job.row in best}


def is_done(record: dict | None, out: Path, planned: list[str]) -> bool:
    """A row is finished when it ran ok and every output it needs now is there (deleted ones are remade)."""
    if record is None or record.get("status") != "ok":
        return False
    written = set(record.get("outputs", [])) | {record.get("inversion")}
    return all(name in written and (out / name).is_file() for name in planned)


class Shard:
    """One process's records, rewritten atomically after each batch."""

    def __init__(self, out: Path, index: int):
        self.path = out / SHARDS / f"process-{index:05d}.jsonl"
        self.records = {record["row"]: record for record in read_jsonl(self.path)} if self.path.is_file() else {}

    def add(self, records: list[dict]) -> None:
        for record in records:
            self.records[record["row"]] = {**record, "finished": now()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.path, [self.records[row] for row in sorted(self.records)])


def merge(out: Path, jobs: list[Job], keys: dict[int, str]) -> list[dict]:
    """Write results.jsonl from every record of this manifest's rows, then drop the shards; returns the rows."""
    records = latest(read_all(out), jobs, keys)
    merged = [records[job.row] for job in jobs if job.row in records]
    write_jsonl(out / RESULTS, merged)
    shutil.rmtree(out / SHARDS, ignore_errors=True)
    return merged
