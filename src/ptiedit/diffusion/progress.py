"""One progress display per command: stages either draw their own bar or add to a shared one."""
from __future__ import annotations

from typing import Iterable, Iterator, TypeVar, Union

from tqdm.auto import tqdm

Progress = Union[bool, tqdm]  # False: silent; True: a bar per stage; a tqdm: one bar that every stage adds to
T = TypeVar("T")


def track(items: Iterable[T], total: int, progress: Progress, desc: str) -> Iterator[T]:
    """Iterate over items, reporting each as one step of a stage named desc."""
    if isinstance(progress, bool):
        yield from tqdm(items, total=total, desc=desc, disable=not progress)
        return
    progress.total = (progress.total or 0) + total  # the shared bar grows as stages start
    progress.set_description(desc, refresh=False)
    progress.refresh()
    for item in items:
        yield item
        progress.update(1)
