"""What a run does when a partition's worker dies: find the file, leave it out, go on.

A worker process that dies (killed for memory, or a crash inside a decoder) takes its task
with it; Dask retries the task elsewhere and, after ``distributed.scheduler.allowed-failures``
deaths, gives up with ``KilledWorker``. The run then retries the partition *traced*: before
each file's work, the worker records the file in ``_partitions/<id>.trace.json``. When
traced attempts die :data:`BLAME_AFTER` times on the same file, that file becomes a
``WorkerCrashed`` reject and the partition is retried without it: same region, same id, so
the commit protocol does not change. After :data:`MAX_EXCLUDED` such files in one partition
the run stops, since the cause is then the partition (its memory), not a file.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import AudioprepError
from pipeline.plan.partition import PartitionSpec
from pipeline.run.partition import trace_path
from pipeline.store.location import StoreLocation

#: Files left out of one partition before the run gives up on it.
MAX_EXCLUDED = 3
#: Traced deaths that name the same file before it is blamed: a partition queued on a worker
#: that another partition's file killed dies too (a bystander), and with several threads per
#: worker a bystander's trace names an innocent file; the killer kills again, a bystander not.
BLAME_AFTER = 2
#: Traced deaths with no file named (a bystander, or a death while fetching) before the run gives up.
MAX_UNNAMED_DEATHS = 4


@dataclass(frozen=True)
class Attempt:
    """How a partition is submitted: traced or not, the files left out (id -> message), and
    what earlier traced deaths said (suspect ids, deaths with no file named)."""

    trace: bool = False
    excluded: tuple[tuple[str, str], ...] = ()
    suspects: tuple[str, ...] = ()
    unnamed_deaths: int = 0

    def excluded_map(self) -> dict[str, str]:
        return dict(self.excluded)


class PartitionCrashed(AudioprepError):
    """A partition's workers kept dying and no single file could be blamed."""


def next_attempt(loc: StoreLocation, spec: PartitionSpec, attempt: Attempt, error: BaseException) -> Attempt:
    """The attempt after ``attempt`` died with ``error`` (Dask's ``KilledWorker``).

    Raises
    ------
    PartitionCrashed
        After :data:`MAX_UNNAMED_DEATHS` traced deaths that named no file, or when more
        than :data:`MAX_EXCLUDED` files of the partition killed workers.
    """
    if not attempt.trace:
        return Attempt(trace=True, excluded=attempt.excluded)
    where = f"partition {spec.index} ({spec.partition_id}, {len(spec.items)} files)"
    traced = loc.read_json(trace_path(spec.partition_id))
    loc.delete(trace_path(spec.partition_id))  # the next attempt's trace starts empty
    if not traced:
        if attempt.unnamed_deaths + 1 >= MAX_UNNAMED_DEATHS:
            raise PartitionCrashed(
                f"{where}: its workers died {MAX_UNNAMED_DEATHS} times ({type(error).__name__}: {error}) before any file's work "
                "began, so no file is to blame: give workers more memory (execution.worker_memory_limit) or lower "
                "execution.partition_seconds"
            )
        return Attempt(trace=True, excluded=attempt.excluded, suspects=attempt.suspects, unnamed_deaths=attempt.unnamed_deaths + 1)
    suspect = str(traced["example_id"])
    suspects = (*attempt.suspects, suspect)
    if suspects.count(suspect) < BLAME_AFTER:
        return Attempt(trace=True, excluded=attempt.excluded, suspects=suspects, unnamed_deaths=attempt.unnamed_deaths)
    if len(attempt.excluded) >= MAX_EXCLUDED:
        raise PartitionCrashed(
            f"{where}: workers died on {MAX_EXCLUDED + 1} of its files; more memory per worker "
            "(execution.worker_memory_limit), fewer threads per worker, or a lower execution.partition_seconds is needed"
        )
    message = (
        f"{traced['path']}: crash: the worker processing this file died ({type(error).__name__}) each time, {BLAME_AFTER} "
        "traced attempts (out of memory, or a crash in the decoder); left out of this run. Check the file, or give workers more memory"
    )
    return Attempt(trace=True, excluded=(*attempt.excluded, (suspect, message)), unnamed_deaths=attempt.unnamed_deaths)


__all__ = ["BLAME_AFTER", "MAX_EXCLUDED", "MAX_UNNAMED_DEATHS", "Attempt", "PartitionCrashed", "next_attempt"]
