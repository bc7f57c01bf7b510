"""The one error hierarchy of audioprep.

Every user-facing error names the file or the catalog key it is about and says
what to do next. Messages never contain secrets: callers pass redacted values.
"""

from __future__ import annotations

from dataclasses import dataclass


class AudioprepError(ValueError):
    """Root of every error raised on purpose by audioprep."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One catalog problem: where (dotted key path) and what (message with a hint)."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class CatalogError(AudioprepError):
    """The catalog is invalid. Holds every problem found, not only the first."""

    def __init__(self, problems: list[Problem], path: str | None = None):
        self.problems = list(problems)
        self.path = path
        where = f" in {path}" if path else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s){where}:\n{lines}")


class ConfigError(AudioprepError):
    """A single invalid setting given outside a catalog (a CLI flag, a config object)."""


class AudioDecodeError(AudioprepError):
    """A file could not be turned into samples. `stage` says where it failed."""

    def __init__(self, path: str, stage: str, message: str):
        self.path = path
        self.stage = stage
        super().__init__(f"{path}: {stage}: {message}")


class StoreError(AudioprepError):
    """The store is missing, malformed, or of an unsupported format version."""


class StoreLockedError(StoreError):
    """Another run holds the store's lock."""


class LockLostError(StoreLockedError):
    """This run no longer holds the store's lock (its lease lapsed): it must not commit."""


class SourceError(AudioprepError):
    """A source cannot be listed or read (missing path, no permission, empty match)."""


class QualityRejected(AudioDecodeError):
    """The catalog's ``quality.reject_if`` rule is true for an example: it goes to the rejects table."""


class DuplicateError(AudioprepError):
    """Duplicate clusters that the catalog forbids (``duplicates.policy: error``) or that cannot
    be placed in one split (members forced into different splits). Lists the clusters."""


class ClusterError(AudioprepError):
    """The run cannot use the Dask cluster asked for: its workers would not reach the run's
    Prefect API, or the cluster kind cannot start here. Says what to set."""
