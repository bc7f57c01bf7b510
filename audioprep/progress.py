"""Run the prepare flow with a live progress bar (partitions and audio hours, rate, ETA)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def run_with_progress(
    catalog: str,
    *,
    store: str | None,
    workers: int | None,
    scheduler: str | None,
    console: Console,
    report: bool = True,
    t0: float | None = None,
    dashboard_address: str | None = None,
) -> dict[str, Any]:
    """Run the prepare flow under a progress bar; ``t0`` is when the command started
    (``time.perf_counter``): the bar's rate and ``ready_seconds`` count from it."""
    import logging
    import time

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
        TextColumn("{task.fields[rate]:.0f}x realtime (processed / wall)"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    state: dict[str, Any] = {"t0": time.perf_counter() if t0 is None else t0}

    def on_plan(plan) -> None:
        total_hours = sum(it.duration_seconds for p in plan.partitions for it in p.items) / 3600
        state["task"] = progress.add_task("partitions", total=len(plan.partitions), hours=0.0, total_hours=total_hours, rate=0.0)
        state["seconds"] = 0.0
        progress.console.print(f"{len(plan.partitions)} partition(s), {total_hours:.3f} h of audio to process")

    def on_ready(dashboard: str | None) -> None:
        state["ready"] = time.perf_counter() - state["t0"]
        progress.console.print(f"ready in {state['ready']:.1f} s" + (f"; Dask dashboard: {dashboard}" if dashboard else ""))
        progress.start()

    def on_partition(result: dict[str, Any]) -> None:
        if not result.get("skipped"):  # already committed by an interrupted run: not processed again
            state["seconds"] += result.get("audio_seconds", 0.0)
        elapsed = max(time.perf_counter() - state["t0"], 1e-9)
        progress.update(state["task"], advance=1, hours=state["seconds"] / 3600, rate=state["seconds"] / elapsed)

    hooks.install(plan=on_plan, ready=on_ready, partition=on_partition)
    try:
        with local_runtime(scheduler, catalog, store, workers=workers, dashboard_address=dashboard_address) as rt:
            from flows.prepare import prepare

            quiet()  # again: importing Prefect configured its loggers
            summary = prepare(catalog, store=store, workers=workers, scheduler=rt["scheduler"], report=report, dashboard_address=dashboard_address)
            if "ready" in state:
                summary["ready_seconds"] = state["ready"]
            return summary
    finally:
        progress.stop()
        hooks.clear()
