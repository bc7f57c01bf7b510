"""The ``audioprep`` command line: run, validate, inspect, export, unlock, serve."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# zarr 3 warns on every open that its string codec is not in the v3 spec yet: the store's
# tables hold their strings with it on purpose, so a user need not read it on every command
warnings.filterwarnings("ignore", message="The codec `vlen-utf8` is currently not part", category=UserWarning)

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Distributed audio dataset preparation: catalog.yaml -> Zarr feature store.",
)
console = Console()
err = Console(stderr=True)
STATE = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks.")) -> None:
    STATE["debug"] = debug


def _fail(exc: BaseException, code: int = 2) -> None:
    if STATE["debug"]:
        raise exc
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code)


def _plain(s: object) -> str:
    """Text for rich: regexes hold [...] (not markup); file names may hold undecodable bytes."""
    from rich.markup import escape

    return escape(str(s).encode("utf-8", "backslashreplace").decode("utf-8"))


def print_source_figures(sources, out: Console) -> None:
    """Per source: the files matched, and the audio-looking files the pattern left out."""
    for f in sources:
        left = sum(f.unmatched_audio.values())
        exts = ", ".join(f".{e}: {n}" for e, n in sorted(f.unmatched_audio.items()))
        extra = f", {left} audio-looking file(s) not matched by `pattern` ({exts})" if left else ""
        links = f", {f.skipped_symlinks} symbolic link(s) skipped" if f.skipped_symlinks else ""
        out.print(f"sources.{f.index} ({_plain(f.name)}): {f.matched} file(s) matched{_plain(extra)}{links}")
        if left:
            out.print(f"  hint: widen sources.{f.index}.pattern to include them")


@app.command()
def validate(catalog: str = typer.Argument(..., help="Path to catalog.yaml")) -> None:
    """Check a catalog and its sources; report every problem at once (exit 2 on errors)."""
    from pipeline.config.catalog import load_catalog
    from pipeline.config.checks import inspect_sources
    from pipeline.errors import CatalogError

    text = _plain

    def show(problems, title: str, style: str) -> None:
        err.print(f"[{style}]{text(catalog)}: {len(problems)} {title}[/]")
        for p in problems:
            err.print(f"  [yellow]{text(p.key)}[/]: {text(p.message)}")

    try:
        loaded = load_catalog(catalog)
    except CatalogError as exc:
        show(exc.problems, "problem(s)", "bold red")
        raise typer.Exit(2) from None
    report = inspect_sources(loaded)
    print_source_figures(report.sources, console)
    if report.warnings:
        show(report.warnings, "warning(s)", "bold yellow")
    if report.errors:
        show(report.errors, "problem(s)", "bold red")
        raise typer.Exit(2)
    console.print(f"[green]{text(catalog)}: valid[/] ({len(loaded.catalog.sources)} source(s), store {text(loaded.catalog.output.store)})")


@app.command()
def run(
    catalog: str = typer.Argument(..., help="Path to catalog.yaml"),
    store: str | None = typer.Option(None, help="Override output.store (any fsspec URL)."),
    workers: int | None = typer.Option(None, help="Worker processes of the embedded Dask cluster."),
    scheduler: str | None = typer.Option(None, help="Address of an existing Dask scheduler (tcp://host:port)."),
    overwrite: bool = typer.Option(False, help="Delete the store first and rebuild it."),
    json_out: str | None = typer.Option(None, "--json", help="Also write the run summary as JSON to this file."),
    report: bool = typer.Option(True, help="Write report figures beside a local store and publish them as a Prefect artifact."),
    dashboard_address: str | None = typer.Option(
        None, help="Where the embedded cluster's Dask dashboard listens (default 127.0.0.1, any free port; it has no authentication)."
    ),
) -> None:
    """Prepare the dataset: discover, featurize on Dask under a Prefect flow, commit a store version."""
    from pipeline.config.catalog import load_catalog
    from pipeline.config.checks import inspect_sources
    from pipeline.errors import AudioprepError, CatalogError, StoreLockedError
    from pipeline.run.commit import reject_fraction
    from pipeline.run.preflight import preflight

    t0 = time.perf_counter()
    if not STATE["debug"]:
        # A refusal raised in the flow is printed once, as one line; Prefect's console handler would
        # print its traceback for the task, the subflow and the flow. The run's records keep them.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    try:
        loaded = load_catalog(catalog, store=store)
        checked = inspect_sources(loaded)
        if checked.errors:
            raise CatalogError(checked.errors, catalog)
        print_source_figures(checked.sources, console)
        for w in checked.warnings:
            err.print(f"[yellow]warning[/] {w.key}: {w.message}", markup=True, highlight=False)
    except CatalogError as exc:
        err.print(f"[bold red]{catalog}: {len(exc.problems)} problem(s); nothing was run[/]")
        for p in exc.problems:
            err.print(f"  [yellow]{p.key}[/]: {p.message}")
        raise typer.Exit(2) from None
    if overwrite:
        _delete_store(store or loaded.catalog.output.store, loaded.catalog.output.storage_options)
    try:
        # a locked or incompatible store, or one with nothing to do, answers before any API or cluster starts
        summary = None if overwrite else preflight(loaded, store)
        if summary is None:
            from audioprep.progress import run_with_progress

            with _interruptible():
                summary = run_with_progress(
                    catalog, store=store, workers=workers, scheduler=scheduler, console=console, report=report, t0=t0,
                    dashboard_address=dashboard_address,
                )
    except BaseException as exc:  # noqa: BLE001 - sorted below
        if _interrupted(exc) and not STATE["debug"]:
            _say_interrupted()
            raise typer.Exit(130) from None
        if not isinstance(exc, AudioprepError):
            raise
        if isinstance(exc, StoreLockedError) and loaded.catalog.output.storage_options and not STATE["debug"]:
            # the store needs the catalog's storage options: the unlock command must name it
            err.print(f"[bold red]error:[/] {exc}")
            # (a lock refused here is alive or from another host: unlock needs --force for it)
            target = store or loaded.catalog.output.store
            err.print(f"if that run is dead, break its lock with: audioprep unlock {target} --catalog {catalog} --force", markup=False, highlight=False)
            raise typer.Exit(2) from None
        _fail(exc)
        return
    summary["wall_seconds"] = time.perf_counter() - t0
    print_summary(summary)
    if json_out:
        with open(json_out, "w") as f:
            json.dump({k: v for k, v in summary.items() if k != "reject_rows"}, f, indent=2, default=str)
    if not summary.get("up_to_date"):
        frac = reject_fraction(summary)
        if summary.get("examples", 0) == 0 or frac > loaded.catalog.execution.max_reject_fraction:
            err.print(f"[bold red]{frac:.0%} of files were rejected (limit execution.max_reject_fraction={loaded.catalog.execution.max_reject_fraction:g})[/]")
            raise typer.Exit(1)


#: After a Ctrl-C, how long the run may take to stop by itself before the command ends at once.
INTERRUPT_GRACE_SECONDS = 4.0
_INTERRUPT = {"said": False}


def _say_interrupted() -> None:
    if not _INTERRUPT["said"]:
        _INTERRUPT["said"] = True
        err.print("interrupted; nothing committed; rerun to resume")


@contextlib.contextmanager
def _interruptible():
    """Ctrl-C (SIGINT to the terminal's process group) ends a run within seconds, exit 130.

    The first one raises KeyboardInterrupt, as by default; should the run not have stopped
    within :data:`INTERRUPT_GRACE_SECONDS` (an interrupt swallowed inside a library while
    the workers, which got it too, are gone), or at a second Ctrl-C, the command exits at
    once. Nothing is lost: a version is only committed at the end, and finished partitions
    are kept for the rerun. The run's API server ends with this process.
    """

    def hard_exit() -> None:
        _say_interrupted()
        os._exit(130)

    def on_sigint(signum, frame) -> None:
        if _INTERRUPT.get("timer") is not None:
            hard_exit()
        timer = _INTERRUPT["timer"] = threading.Timer(INTERRUPT_GRACE_SECONDS, hard_exit)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(exc: BaseException | None) -> bool:
    """Ctrl-C, also when Prefect's clean-up raised another error while handling it."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _delete_store(url: str, options: dict[str, Any]) -> None:
    """``run --overwrite``: delete an audioprep store under its lock, refusing anything else."""
    from pipeline.errors import AudioprepError
    from pipeline.store.location import StoreLocation
    from pipeline.store.verify import delete_store

    try:
        deleted = delete_store(StoreLocation(url, dict(options or {})))
    except AudioprepError as exc:
        _fail(exc)
        return
    if deleted:
        console.print(f"deleted store {url} ({', '.join(deleted)})")


def _catalog_opt():
    return typer.Option(None, "--catalog", help="Reach the store as this catalog does: its output.store and output.storage_options (${VAR} resolved).")


def _options_opt():
    return typer.Option(None, "--storage-options", help='fsspec options of the store as a JSON object, e.g. \'{"client_kwargs": {"endpoint_url": "http://..."}}\'.')


def _location(store: str | None, catalog: str | None, storage_options: str | None):
    """The store a command reads: STORE and/or --catalog, with --storage-options."""
    from pipeline.errors import AudioprepError, CatalogError
    from pipeline.store.verify import resolve_location

    try:
        return resolve_location(store, catalog=catalog, storage_options=storage_options)
    except CatalogError as exc:
        err.print(f"[bold red]{catalog}: {len(exc.problems)} problem(s)[/]")
        for p in exc.problems:
            err.print(f"  [yellow]{p.key}[/]: {p.message}")
        raise typer.Exit(2) from None
    except AudioprepError as exc:
        _fail(exc)
        raise


def print_summary(summary: dict[str, Any]) -> None:
    from pipeline.report.summary import throughput_x_realtime

    wall = summary.get("wall_seconds", 0)
    if summary.get("up_to_date"):
        console.print(f"[green]up to date: nothing to do[/] (no new, changed or removed files; {wall:.1f} s)")
    t = Table(title=f"examples per split and label (version {summary.get('version')})")
    t.add_column("split")
    t.add_column("label")
    t.add_column("examples", justify="right")
    for split, labels in (summary.get("counts") or {}).items():
        for label, n in labels.items():
            t.add_row(split, label, str(n))
    console.print(t)
    processed_h = (summary.get("processed_audio_seconds") or 0) / 3600
    console.print(f"audio: {summary.get('audio_hours', 0):.4f} h in store")
    console.print(f"rejected files: {summary.get('rejected', 0)}")
    if summary.get("skipped_symlinks"):
        console.print(f"symbolic links not followed: {summary['skipped_symlinks']} (sources[].symlinks; broken links and loops)")
    for r in (summary.get("reject_rows") or [])[:10]:
        console.print(f"  [yellow]{r['source']}:{r['path']}[/] [{r['stage']}] {r['error_class']}: {r['message']}")
    if summary.get("up_to_date"):
        console.print(f"store: {summary.get('store')}")
        return
    done, total = summary.get("partitions_already_done", 0), summary.get("partitions", 0)
    if done:
        console.print(f"resumed: {done} of {total} partitions already committed; processed {processed_h:.4f} h")
    else:
        console.print(f"processed {processed_h:.4f} h in {total} partition(s)")
    if summary.get("lost_workers"):
        console.print(f"Dask workers lost during the run (their partitions ran elsewhere): {', '.join(summary['lost_workers'])}", markup=False)
    ready = summary.get("ready_seconds")
    console.print(
        f"wall time: {wall:.1f} s" + (f" (ready in {ready:.1f} s)" if ready is not None else "")
        + f"; throughput: {throughput_x_realtime(summary):.1f}x realtime (audio processed this run / wall time)"
    )
    console.print(f"store: {summary.get('store')}")
    if summary.get("report"):
        console.print(f"report: {summary['report']}")


@app.command()
def inspect(
    store: str | None = typer.Argument(None, help="Store path or URL (default: --catalog's output.store)"),
    version: int | None = typer.Option(None, help="A committed version (default: newest)."),
    catalog: str | None = _catalog_opt(),
    storage_options: str | None = _options_opt(),
) -> None:
    """Summarise a store: counts per split/label, durations, features, provenance."""
    from pipeline.errors import AudioprepError
    from pipeline.report.inspect import describe

    loc = _location(store, catalog, storage_options)
    try:
        info = describe(loc.url, version=version, storage_options=loc.storage_options)
    except AudioprepError as exc:
        _fail(exc)
        return
    from audioprep.render import render_inspect

    render_inspect(info, console)


@app.command()
def export(
    store: str | None = typer.Argument(None, help="Store path or URL (default: --catalog's output.store)"),
    table: str = typer.Option("summaries", help="summaries | examples | rejects"),
    format: str = typer.Option("parquet", help="parquet | csv"),
    out: str | None = typer.Option(None, help="Output file (default: <table>.<format>)."),
    version: int | None = typer.Option(None),
    catalog: str | None = _catalog_opt(),
    storage_options: str | None = _options_opt(),
) -> None:
    """Export a table of the store as Parquet or CSV."""
    from pipeline.errors import AudioprepError
    from pipeline.report.export import export_table

    loc = _location(store, catalog, storage_options)
    try:
        path = export_table(loc.url, table=table, fmt=format, out=out, version=version, storage_options=loc.storage_options)
    except AudioprepError as exc:
        _fail(exc)
        return
    console.print(f"wrote {path}")


@app.command()
def unlock(
    store: str | None = typer.Argument(None, help="Store path or URL (default: --catalog's output.store)"),
    force: bool = typer.Option(False, "--force", help="Also break a lock whose run may be alive (its process lives here, or it is on another host)."),
    catalog: str | None = _catalog_opt(),
    storage_options: str | None = _options_opt(),
) -> None:
    """Break a stale run lock (refused while the run that holds it may be alive, unless --force)."""
    from pipeline.errors import AudioprepError
    from pipeline.store.verify import unlock_store

    loc = _location(store, catalog, storage_options)
    try:
        was = unlock_store(loc, force=force)
    except AudioprepError as exc:
        _fail(exc)
        return
    console.print(f"lock removed (was: {json.dumps(was, sort_keys=True)})" if was else "no lock was held")


@app.command()
def verify(
    store: str | None = typer.Argument(None, help="Store path or URL (default: --catalog's output.store)"),
    version: int | None = typer.Option(None, help="A committed version (default: newest)."),
    catalog: str | None = _catalog_opt(),
    storage_options: str | None = _options_opt(),
    json_out: str | None = typer.Option(None, "--json", help="Also write the findings as JSON to this file."),
) -> None:
    """Read every committed shard and table; list what is damaged (exit 1), else exit 0."""
    from pipeline.errors import AudioprepError
    from pipeline.store.verify import verify_store

    loc = _location(store, catalog, storage_options)
    try:
        result = verify_store(loc, version=version)
    except AudioprepError as exc:
        _fail(exc)
        return
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"store": result.url, "version": result.version, "ok": result.ok, "shards_read": result.shards_read,
                       "damage": [d.to_dict() for d in result.damage]}, f, indent=2)
    if result.ok:
        console.print(f"[green]{result.url}: no damage[/] (version {result.version}: {result.shards_read} shard(s), {result.tables_read} table column(s) read)")
        return
    err.print(f"[bold red]{result.url}: {len(result.damage)} damaged object(s)[/] (version {result.version}; {result.shards_read} shard(s) read)")
    for d in result.damage:
        ids = ", ".join(d.example_ids[:20]) + (f", ... ({len(d.example_ids)} in all)" if len(d.example_ids) > 20 else "")
        err.print(f"  {d.array}  shard {d.shard or '-'}  examples [{ids}]: {d.error}", markup=False, highlight=False)
    raise typer.Exit(1)


@app.command()
def serve(
    catalog: str = typer.Argument(..., help="Path to catalog.yaml"),
    cron: str = typer.Option("0 * * * *", help="Cron schedule of the deployment."),
    name: str = typer.Option("audioprep-prepare", help="Deployment name."),
) -> None:
    """Serve the prepare flow as a scheduled Prefect deployment from this long-running process."""
    from flows.serve import serve_catalog
    from pipeline.errors import AudioprepError, CatalogError

    try:
        serve_catalog(catalog, cron=cron, name=name)
    except CatalogError as exc:
        err.print(f"[bold red]{catalog}: {len(exc.problems)} problem(s)[/]")
        for p in exc.problems:
            err.print(f"  [yellow]{p.key}[/]: {p.message}")
        raise typer.Exit(2) from None
    except AudioprepError as exc:
        _fail(exc)


@app.command()
def report(
    store: str | None = typer.Argument(None, help="Store path or URL (default: --catalog's output.store)"),
    out: str = typer.Option("report", help="Output folder for PNG figures and index.html."),
    version: int | None = typer.Option(None),
    catalog: str | None = _catalog_opt(),
    storage_options: str | None = _options_opt(),
) -> None:
    """Write PNG figures and one self-contained HTML page about a store."""
    from pipeline.errors import AudioprepError
    from pipeline.report.figures import write_report

    loc = _location(store, catalog, storage_options)
    try:
        page = write_report(loc.url, out, version=version, storage_options=loc.storage_options)
    except AudioprepError as exc:
        _fail(exc)
        return
    console.print(f"wrote {page}")


@app.command()
def preview(
    catalog: str = typer.Argument(..., help="Path to catalog.yaml"),
    n: int = typer.Option(5, "--n", help="How many files to preview."),
    out: str = typer.Option("preview", help="Output folder for the figures."),
) -> None:
    """Run the feature and augmentation chain on a few files, without writing a store; save figures."""
    from pipeline.errors import AudioprepError
    from pipeline.report.preview import preview as run_preview

    try:
        page = run_preview(catalog, n=n, out=out)
    except AudioprepError as exc:
        _fail(exc)
        return
    console.print(f"wrote {page}")


def main() -> None:
    try:
        app()  # click handles usage errors and exit codes itself
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - users see a sentence, --debug shows the traceback
        if "--debug" in sys.argv:
            raise
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        err.print("run again with --debug for the full traceback")
        sys.exit(1)


if __name__ == "__main__":
    main()
