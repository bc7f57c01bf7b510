"""The catalog schema (catalog.yaml), validated at the edge with pydantic v2.

Unknown keys are errors. :func:`load_catalog` reports every problem at once, each with
its dotted key path, so ``audioprep validate`` can print them all. Every key is
documented in docs/catalog.md.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import pathlib
import types
import typing
from typing import Any, Literal, Union

import regex
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.augment import AugmentConfig
from pipeline.config.interpolate import interpolate_env, redact
from pipeline.errors import CatalogError, Problem
from pipeline.features import FeaturesConfig
from pipeline.io.av_reader import AV_EXTENSIONS
from pipeline.quality.config import DuplicatesConfig, QualityConfig

SPLIT_NAMES = ("train", "val", "test")

#: File name extensions libsndfile reads (``soundfile.available_formats()``: WAV/WAVEX, W64, RF64,
#: FLAC, OGG (Vorbis, Opus), MP3, AIFF, AU, CAF, SD2, VOC, PAF, PVF, XI, HTK, SDS, AVR, NIST, IRCAM, SVX, WVE).
AUDIO_EXTENSIONS = (
    "wav", "wave", "bwf", "w64", "rf64", "flac", "ogg", "oga", "opus", "mp3", "aiff", "aif", "aifc",
    "au", "snd", "caf", "sd2", "voc", "paf", "pvf", "xi", "htk", "sds", "avr", "sph", "nist", "sf", "ircam",
    "svx", "8svx", "iff", "wve",
)
#: what PyAV (FFmpeg) reads besides: AAC/ALAC in MP4 (m4a), ADTS AAC, WebM/Matroska, WMA, video tracks
AUDIO_EXTENSIONS += AV_EXTENSIONS
DEFAULT_PATTERN = "**/*.{" + ",".join(AUDIO_EXTENSIONS) + "}"

#: YAML limits checked on the event stream, before anything is built (an alias bomb expands
#: exponentially: 600 bytes can stand for billions of nodes).
MAX_YAML_ALIASES = 100
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 200_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FieldRule(_Model):
    """How a label or group is derived for each file."""

    from_: Literal["parent_dir", "regex", "manifest", "none"] = Field("none", alias="from")
    pattern: str | None = None
    """Regex searched in the path relative to the source root; needs a named group
    ``(?P<label>...)`` for labels or ``(?P<group>...)`` for groups."""

    @model_validator(mode="after")
    def _check(self) -> FieldRule:
        if self.from_ == "regex":
            if not self.pattern:
                raise ValueError("from: regex needs a `pattern` with a named group")
            try:
                regex.compile(self.pattern)
            except regex.error as exc:
                raise ValueError(f"pattern `{self.pattern}` is not a valid regex: {exc}") from None
        elif self.pattern is not None:
            raise ValueError(f"`pattern` is only used with from: regex (got from: {self.from_})")
        return self


TEXT_NORMALIZERS = ("nfkc", "lower", "strip_punct")


class TextRule(_Model):
    """Where each file's transcript comes from (docs/catalog.md, "Transcripts and tags")."""

    from_: Literal["manifest", "sidecar", "transcript_file"] = Field(alias="from")
    column: str = "text"
    """``manifest``: the manifest column holding the transcript."""
    suffix: str | None = None
    """``sidecar``: the file beside each audio file, same name, this suffix (``.txt``, ``.lab``)."""
    pattern: str | None = None
    """``transcript_file``: file name glob of the transcript files in each audio folder
    (``*.trans.txt``), one line per file of that folder."""
    format: Literal["<id> <text>", "<id>\t<text>"] = "<id> <text>"
    """``transcript_file``: each line is the audio file's name without extension, a space
    (or a tab), and its transcript."""
    normalize: tuple[Literal["nfkc", "lower", "strip_punct"], ...] = ()
    """Applied in this order; recorded in the store with the catalog."""
    required: bool = True
    """A file without a transcript becomes a reject (``MissingTranscript``); else it keeps ``""``."""
    min_chars_per_second: float = Field(1.0, ge=0)
    max_chars_per_second: float = Field(30.0, gt=0)
    """Examples outside this transcript rate are flagged ``text_rate`` (a transcript that does
    not belong to its audio, or a truncated file)."""

    @model_validator(mode="after")
    def _check(self) -> TextRule:
        if self.from_ == "sidecar" and not self.suffix:
            raise ValueError("from: sidecar needs `suffix` (e.g. .txt or .lab)")
        if self.from_ == "transcript_file" and not self.pattern:
            raise ValueError('from: transcript_file needs `pattern` (e.g. "*.trans.txt")')
        if self.from_ != "sidecar" and self.suffix is not None:
            raise ValueError("`suffix` is only used with from: sidecar")
        if self.from_ != "transcript_file" and self.pattern is not None:
            raise ValueError("`pattern` is only used with from: transcript_file")
        if self.min_chars_per_second >= self.max_chars_per_second:
            raise ValueError("min_chars_per_second must be below max_chars_per_second")
        return self


class TagsRule(_Model):
    """Multi-label tags of each file, from a manifest column holding a list."""

    from_: Literal["manifest"] = Field(alias="from")
    column: str = "tags"
    separator: str = Field(";", min_length=1)
    """Between tags in the column (``dog;bark``); a JSON list (``["dog", "bark"]``) is read as such."""


class Source(_Model):
    """One place audio comes from."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    url: str
    pattern: str = DEFAULT_PATTERN
    label: FieldRule = FieldRule(**{"from": "parent_dir"})
    group: FieldRule = FieldRule(**{"from": "none"})
    text: TextRule | None = None
    """Transcripts (speech recognition): none by default."""
    tags: TagsRule | None = None
    """Multi-label tags (sound events): none by default."""
    manifest: str | None = None
    """CSV or JSONL with a ``path`` column (relative to ``url``) and any of label, group, split."""
    role: Literal["examples", "noise", "impulse_response"] = "examples"
    """``examples`` become dataset rows; ``noise``/``impulse_response`` feed augmentations."""
    storage_options: dict[str, Any] = Field(default_factory=dict)
    cache: Literal["none", "simplecache", "filecache"] = "none"
    """Keep local copies of remote audio (fsspec caching)."""
    cache_dir: str | None = None
    symlinks: Literal["follow", "inside_root", "skip"] = "follow"
    """Local symbolic links: ``follow`` them (files and folders), follow only those whose target
    is ``inside_root`` of the source, or ``skip`` them. Skipped links are counted."""

    @model_validator(mode="after")
    def _manifest_rules(self) -> Source:
        rules = [("label", self.label), ("group", self.group), ("text", self.text), ("tags", self.tags)]
        for which, rule in rules:
            if rule is not None and rule.from_ == "manifest" and not self.manifest:
                raise ValueError(f"{which}: from: manifest needs `manifest:` set on this source")
        if self.label.from_ == "regex" and "label" not in regex.compile(self.label.pattern or "").groupindex:
            raise ValueError("label.pattern needs a named group (?P<label>...)")
        if self.group.from_ == "regex" and "group" not in regex.compile(self.group.pattern or "").groupindex:
            raise ValueError("group.pattern needs a named group (?P<group>...)")
        return self


class Output(_Model):
    store: str
    """Any fsspec URL or local path of the Zarr store."""
    storage_options: dict[str, Any] = Field(default_factory=dict)
    dtype: Literal["float32", "float16"] = "float32"
    """Storage precision of the feature arrays; ``float16`` halves the store (readers
    always get float32). Part of the store fingerprint."""


class Clip(_Model):
    mode: Literal["full", "fixed"] = "full"
    seconds: float | None = Field(None, gt=0)
    crop: Literal["start", "center", "random"] = "start"

    @model_validator(mode="after")
    def _check(self) -> Clip:
        if self.mode == "fixed" and self.seconds is None:
            raise ValueError("mode: fixed needs `seconds` (the clip length)")
        return self


class Audio(_Model):
    sample_rate: int = Field(16000, ge=1000, le=384000)
    mono: bool = True
    """Mix every file to one channel. ``false`` keeps channels: ``channels`` if set, else the
    first ``max_channels``; features get a channel axis (docs/store-format.md)."""
    channels: tuple[int, ...] | None = None
    """With ``mono: false``: the channel indices to keep, in this order (``[0, 2]``)."""
    pad_channels: Literal["repeat", "zero", "reject"] = "repeat"
    """With ``mono: false``: a file with fewer channels than kept repeats its channels
    cyclically, is padded with silent channels, or is rejected (``TooFewChannels``)."""
    clip: Clip = Clip()
    max_seconds: float = Field(600.0, gt=0)
    """Longest example. Longer files (known from the header, before decoding) are rejected,
    or cut into consecutive examples of at most this length (``long_files: split``)."""
    long_files: Literal["reject", "split"] = "reject"
    max_channels: int = Field(8, ge=1)
    max_source_sample_rate: int = Field(384_000, ge=8000, le=10_000_000)
    """Files whose header declares a higher sample rate are rejected before decoding (a
    corrupt or crafted header; 384 kHz is the highest rate audio interfaces record)."""
    min_seconds: float = Field(0.0, ge=0)
    flag_silence_dbfs: float = -90.0
    """Files whose peak is below this level are kept but flagged ``silent``."""


    @model_validator(mode="after")
    def _channels(self) -> Audio:
        if self.channels is not None:
            if self.mono:
                raise ValueError("`channels` selects channels to keep: it needs mono: false")
            if not self.channels or len(set(self.channels)) != len(self.channels) or min(self.channels) < 0:
                raise ValueError("`channels` lists distinct channel indices from 0, e.g. [0, 1]")
            if len(self.channels) > self.max_channels:
                raise ValueError(f"`channels` keeps {len(self.channels)} channels > max_channels={self.max_channels}")
        return self

    @property
    def kept_channels(self) -> int:
        """Channels of every stored example: 0 when mixed to mono (no channel axis)."""
        if self.mono:
            return 0
        return len(self.channels) if self.channels is not None else self.max_channels

class Splits(_Model):
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    by: Literal["group", "example"] = "group"
    stratify: Literal["label", "tags", "none"] = "label"
    seed: int | None = None
    """Defaults to the catalog's top-level ``seed``."""

    @model_validator(mode="after")
    def _sum(self) -> Splits:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1 (got {total:g})")
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


class LocalClusterSpec(_Model):
    """The embedded LocalCluster (the default); ``execution.workers`` sizes it."""

    kind: Literal["local"]


class SchedulerClusterSpec(_Model):
    """An existing Dask scheduler, as ``execution.scheduler``."""

    kind: Literal["scheduler"]
    address: str
    """tcp://host:port"""


class SlurmClusterSpec(_Model):
    """Workers as SLURM batch jobs, through dask-jobqueue's ``SLURMCluster``; the scheduler
    runs in the run's own process. Keys are dask-jobqueue's (docs/operations.md)."""

    kind: Literal["slurm"]
    jobs: int = Field(1, ge=1)
    """SLURM jobs submitted; each runs ``processes`` Dask workers."""
    cores: int = Field(1, ge=1)
    """Cores per job (``--cpus-per-task``), shared by its worker processes."""
    memory: str = "4GiB"
    """Memory per job (``--mem``), shared by its worker processes."""
    processes: int = Field(1, ge=1)
    queue: str | None = None
    """SLURM partition (``-p``)."""
    account: str | None = None
    walltime: str = "01:00:00"
    interface: str | None = None
    """Network interface the scheduler and the run's Prefect API listen on (e.g. ``ib0``);
    default: the address of this host's default route."""
    job_extra_directives: list[str] = Field(default_factory=list)
    """Extra ``#SBATCH`` options, e.g. ``["--gres=gpu:1"]``."""
    job_script_prologue: list[str] = Field(default_factory=list)
    """Shell lines run before the worker starts (``module load ...``, ``source venv/bin/activate``)."""
    python: str | None = None
    """Python on the compute nodes (default: the run's own interpreter path)."""
    local_directory: str | None = None
    """Workers' scratch folder on the compute node (default: the job's working folder)."""
    log_directory: str | None = None


ClusterSpec = typing.Annotated[Union[LocalClusterSpec, SchedulerClusterSpec, SlurmClusterSpec], Field(discriminator="kind")]  # noqa: UP007


class Execution(_Model):
    partition_seconds: float = Field(1800.0, gt=0)
    """Audio seconds per partition (one Prefect task). Minutes of audio, never one file."""
    workers: int | None = Field(None, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    worker_memory_limit: str | None = Field(None, pattern=r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|[kmgt]i?b)?\s*$")
    """Memory per worker of the embedded cluster (``"4GiB"``); Dask pauses a worker at 80% and
    restarts it at 95%. None: Dask's default, this host's memory shared among the workers.
    Workers of an external cluster take their own ``--memory-limit``."""
    scheduler: str | None = None
    """Address of an existing Dask scheduler (tcp://host:port); none = embedded LocalCluster."""
    cluster: ClusterSpec | None = None
    """Where the workers run: ``{kind: local}`` (default), ``{kind: scheduler, address}``, or
    ``{kind: slurm, ...}`` (SLURM jobs through dask-jobqueue)."""
    retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(2.0, ge=0)
    max_reject_fraction: float = Field(0.5, ge=0, le=1)
    """The run exits non-zero when more than this share of files is rejected."""
    probe_batch_files: int = Field(2000, ge=1)
    probe_in_flow_files: int = Field(5000, ge=0)
    """Up to this many new local files have their headers read in the flow's own process
    (about 0.1 ms each) instead of in Dask tasks; more, or any remote file: on Dask, in
    batches of ``probe_batch_files``. 0: always on Dask."""
    fetch_concurrency: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _one_cluster(self) -> Execution:
        if self.scheduler and self.cluster is not None and self.cluster.kind != "scheduler":
            raise ValueError(f"`scheduler` and `cluster: {{kind: {self.cluster.kind}}}` cannot both be set; keep one")
        return self

    def scheduler_address(self) -> str | None:
        """The external scheduler's address, from ``scheduler`` or ``cluster: {kind: scheduler}``."""
        if self.scheduler:
            return self.scheduler
        return self.cluster.address if isinstance(self.cluster, SchedulerClusterSpec) else None


class Catalog(_Model):
    dataset: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    output: Output
    sources: list[Source] = Field(min_length=1)
    audio: Audio = Audio()
    features: FeaturesConfig = FeaturesConfig()
    augment: AugmentConfig = AugmentConfig()
    splits: Splits = Splits()
    execution: Execution = Execution()
    quality: QualityConfig = QualityConfig()
    duplicates: DuplicatesConfig = DuplicatesConfig()

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Source]) -> list[Source]:
        names = [s.name for s in sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dup)}")
        if not any(s.role == "examples" for s in sources):
            raise ValueError("at least one source needs role: examples")
        return sources

    @model_validator(mode="after")
    def _bank_sources_exist(self) -> Catalog:
        from pipeline.augment import build_chain

        names = {s.name for s in self.sources if s.role != "examples"}
        missing = sorted(build_chain(self.augment).bank_sources() - names)
        if missing:
            raise ValueError(
                f"augment uses source(s) {missing} that are not declared with role: noise or "
                "role: impulse_response under `sources`"
            )
        return self

    @model_validator(mode="after")
    def _float16_fits(self) -> Catalog:
        # float16 tops out at 65504: linear power spectra of loud audio, and frequencies in Hz
        # above that, would be stored as inf
        if self.output.dtype != "float16":
            return self
        enabled = set(self.features.enabled())
        linear = sorted(enabled & {"spectrogram", "mel"})
        if linear:
            raise ValueError(
                f"output.dtype: float16 cannot hold linear-scale features {linear} (values above 65504 "
                "become inf); use output.dtype: float32, or log_mel instead of mel"
            )
        hz = sorted(enabled & {"spectral_centroid", "spectral_bandwidth", "spectral_rolloff"})
        if hz and self.audio.sample_rate / 2 > 65504:
            raise ValueError(
                f"output.dtype: float16 cannot hold {hz} in Hz at audio.sample_rate {self.audio.sample_rate} "
                "(above 65504); use output.dtype: float32"
            )
        return self

    @property
    def split_seed(self) -> int:
        return self.seed if self.splits.seed is None else self.splits.seed

    def example_sources(self) -> list[Source]:
        return [s for s in self.sources if s.role == "examples"]


class LoadedCatalog(_Model):
    """A validated catalog plus what the store records about it."""

    catalog: Catalog
    path: str
    redacted: dict[str, Any]
    """The catalog as written (``${VAR}`` kept as placeholders), literal secrets masked."""
    catalog_hash: str


def _loc_to_key(loc: tuple[Any, ...]) -> str:
    parts = []
    for p in loc:
        if isinstance(p, str) and (p.startswith("function-") or p in {"tagged-union", "list", "dict"}):
            continue
        parts.append(str(p))
    return ".".join(parts) or "(catalog)"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        args = args[:1]
    elif origin is not Union and origin is not types.UnionType and origin not in (list, tuple, dict, set, frozenset):
        return []
    out: list[type[BaseModel]] = []
    for a in args:
        out.extend(m for m in _models_in(a) if m not in out)
    return out


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed beside the last element of ``loc`` (an unknown key), from the schema."""
    models: list[type[BaseModel]] = [Catalog]
    for part in loc[:-1]:
        if not isinstance(part, str):
            continue
        nxt: list[type[BaseModel]] = []
        for m in models:
            for name, field in m.model_fields.items():
                if part in (name, field.alias):
                    nxt.extend(x for x in _models_in(field.annotation) if x not in nxt)
        if nxt:
            models = nxt
        # else: a union tag or validator name in the path; stay on the same models
    keys: list[str] = []
    for m in models:
        for name, field in m.model_fields.items():
            key = field.alias or name
            if key not in keys:
                keys.append(key)
    return keys


def _doc_page(loc: tuple[Any, ...]) -> str:
    first = loc[0] if loc else ""
    pages = {"features": "docs/features.md", "augment": "docs/augmentation.md", "quality": "docs/quality.md", "duplicates": "docs/quality.md"}
    return pages.get(str(first), "docs/catalog.md")


def _hint(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    msg = err.get("msg", "")
    loc = tuple(err.get("loc", ()))
    if kind == "extra_forbidden":
        page = _doc_page(loc)
        unknown = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(unknown, _valid_keys(loc), n=1, cutoff=0.6)
        if close:
            return f"unknown key `{unknown}`: did you mean `{close[0]}`? (see {page})"
        return f"unknown key `{unknown}`: remove it or check its spelling in {page}"
    if kind == "missing":
        return f"required key is missing: add it (see {_doc_page(loc)})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    return [Problem(_loc_to_key(e["loc"]), _hint(e)) for e in exc.errors()]


def parse_catalog(raw: dict[str, Any], *, path: str = "<catalog>", env: dict[str, str] | None = None) -> LoadedCatalog:
    """Validate a catalog given as a dict (already YAML-parsed). Raises CatalogError with all problems."""
    if not isinstance(raw, dict):
        raise CatalogError([Problem("(catalog)", "the catalog must be a YAML mapping of keys")], path)
    resolved, env_problems = interpolate_env(raw, env=env)
    problems = list(env_problems)
    catalog = None
    try:
        catalog = Catalog.model_validate(resolved)
    except ValidationError as exc:
        problems.extend(problems_from_validation(exc))
    if problems:
        raise CatalogError(problems, path)
    assert catalog is not None
    redacted = redact(raw)
    digest = hashlib.sha256(json.dumps(catalog.model_dump(mode="json", by_alias=True), sort_keys=True).encode())
    return LoadedCatalog(catalog=catalog, path=path, redacted=redacted, catalog_hash=digest.hexdigest()[:16])


def load_catalog(path: str | pathlib.Path, *, env: dict[str, str] | None = None, store: str | None = None) -> LoadedCatalog:
    """Read and validate ``catalog.yaml`` (``yaml.safe_load`` only, after :func:`safe_load_limited`'s checks).

    Relative local paths in ``sources[].url``, ``sources[].manifest`` and ``output.store``
    are resolved against the catalog file's folder. ``store`` (``audioprep run --store``)
    replaces ``output.store``, and stands in for it when the catalog has none.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        hint = f"; did you mean {p / 'catalog.yaml'}?" if (p / "catalog.yaml").is_file() else ""
        raise CatalogError([Problem("(file)", f"{p} is a folder, not a catalog file; pass the path to catalog.yaml{hint}")], str(p))
    if not p.is_file():
        raise CatalogError([Problem("(file)", f"catalog file not found: {p}; pass the path to catalog.yaml")], str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError([Problem("(file)", f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8")], str(p)) from None
    try:
        raw = safe_load_limited(text, str(p))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CatalogError([Problem("(yaml)", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}")], str(p)) from None
    if isinstance(raw, dict):
        raw = _resolve_relative(raw, p.parent)
        if store:
            output = raw.get("output") if isinstance(raw.get("output"), dict) else {}
            raw = {**raw, "output": {**output, "store": store}}
    return parse_catalog(raw, path=str(p), env=env)


def safe_load_limited(text: str, path: str = "<catalog>") -> Any:
    """``yaml.safe_load`` that refuses alias bombs and deep nesting before building anything.

    The event stream is read first (aliases are not expanded there): more than
    :data:`MAX_YAML_ALIASES` aliases or nesting deeper than :data:`MAX_YAML_DEPTH` is refused.
    Then the composed node graph (aliases shared, not copied) is sized as if expanded; more
    than :data:`MAX_YAML_NODES` nodes is refused. Only then is the document constructed.
    """
    aliases = depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise CatalogError([Problem("(yaml)", (
                    f"more than {MAX_YAML_ALIASES} YAML aliases (*name), the {aliases}th at line {line}: refused, as aliases can "
                    "expand to an enormous document; write the values out or use fewer anchors"))], path)
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise CatalogError([Problem("(yaml)", f"YAML nested deeper than {MAX_YAML_DEPTH} levels at line {line}: refused; flatten the catalog")], path)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        # depth is bounded above, so recursion is too; shared (aliased) nodes are sized once
        if id(n) in sizes:
            return sizes[id(n)]
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        sizes[id(n)] = min(total, MAX_YAML_NODES + 1)
        return sizes[id(n)]

    if size(node) > MAX_YAML_NODES:
        raise CatalogError([Problem("(yaml)", (
            f"the YAML expands to more than {MAX_YAML_NODES:,} values through its aliases: refused; "
            "write the values out or use fewer anchors"))], path)
    return yaml.safe_load(text)


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _resolve_relative(raw: dict[str, Any], base: pathlib.Path) -> dict[str, Any]:
    raw = json.loads(json.dumps(raw, default=str))  # deep copy, plain types

    def fix(u: Any) -> Any:
        if isinstance(u, str) and _is_local(u) and not u.startswith("file://") and "${" not in u[:2]:
            q = pathlib.Path(u)
            return str(q if q.is_absolute() else (base / q).resolve())
        return u

    for src in raw.get("sources") or []:
        if isinstance(src, dict):
            for key in ("url", "manifest"):
                if key in src:
                    src[key] = fix(src[key])
    out = raw.get("output")
    if isinstance(out, dict) and "store" in out:
        out["store"] = fix(out["store"])
    return raw
