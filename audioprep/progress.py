"""Run the prepare flow with a live progress bar (partitions and audio hours, rate, ETA)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def run_with_progress(catalog: str, *, store: str | None, workers: int | None, scheduler: str | None, console: Console, report: bool = True) -> dict[str, Any]:
    import logging

    from flows import hooks
    from flows.runtime import local_runtime

    def quiet() -> None:
        for name in ("distributed", "prefect", "prefect.flow_runs", "prefect.task_runs"):
            logging.getLogger(name).setLevel(logging.WARNING)

    quiet()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[hours]:.3f}/{task.fields[total_hours]:.3f} h audio"),
        TextColumn("{task.fields[rate]:.0f}x realtime"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    state: dict[str, Any] = {}

    def on_plan(plan) -> None:
        state["task"] = progress.add_task("partitions", total=len(plan.partitions), hours=0.0, total_hours=sum(it.duration_seconds for p in plan.partitions for it in p.items) / 3600, rate=0.0)
        state["seconds"] = 0.0
        import time

        state["t0"] = time.perf_counter()
        progress.start()

    def on_partition(result: dict[str, Any]) -> None:
        import time

        state["seconds"] += result.get("audio_seconds", 0.0)
        elapsed = max(time.perf_counter() - state["t0"], 1e-9)
        progress.update(state["task"], advance=1, hours=state["seconds"] / 3600, rate=state["seconds"] / elapsed)

    hooks.install(plan=on_plan, partition=on_partition, dashboard=lambda link: progress.console.print(f"Dask dashboard: {link}"))
    try:
        with local_runtime(scheduler) as rt:
            from flows.prepare import prepare

            quiet()  # again: importing Prefect configured its loggers
            return prepare(catalog, store=store, workers=workers, scheduler=rt["scheduler"], report=report)
    finally:
        progress.stop()
        hooks.clear()
