"""The live progress display of a report run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

from .run import MODEL_DONE, ProgressCallback


@contextlib.contextmanager
def live_progress(models: Sequence[str]) -> Iterator[ProgressCallback]:
    """A rich progress display on stderr (model, stage, elapsed); yields the callback for
    :func:`run_report`, which prints one line per finished model."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("[bold]{task.fields[model]}[/] {task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("starting", total=len(models), model="")
        started = {}

        def progress(model: str, stage: str) -> None:
            started.setdefault(model, time.perf_counter())
            if stage == MODEL_DONE:
                console.print(f"{model} done in {time.perf_counter() - started[model]:.1f} s")
                bar.advance(task)
            else:
                bar.update(task, description=stage, model=model)

        yield progress
