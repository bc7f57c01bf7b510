"""``FeatureSet``: the configured features at one sample rate, built once per process.

:func:`build_feature_set` is cached on (frozen config, sample_rate), so filterbanks (mel,
chroma, DCT) and the window are built once per worker. ``compute`` frames the clip once,
takes ONE STFT and derives every feature from it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from pipeline.errors import CatalogError, Problem
from pipeline.features import _scratch
from pipeline.features import summaries as _summaries
from pipeline.features._base import FeatureParams, FeatureSpec, json_safe
from pipeline.features.analysis import Analysis, StftPlan, n_frames_for
from pipeline.features.config import FeaturesConfig
from pipeline.features.normalize import RunningStats, per_example
from pipeline.features.registry import REGISTRY


class FeatureSet:
    """Frame-level features of a clip, time-major float32, all from one shared STFT.

    Build with :func:`build_feature_set`; treat as immutable (safe to share between threads).
    """

    def __init__(self, config: FeaturesConfig, sample_rate: int):
        self.config = config
        self.sample_rate = int(sample_rate)
        enabled = config.enabled()
        self._specs: tuple[tuple[FeatureSpec, FeatureParams], ...] = tuple((REGISTRY[name], params) for name, params in enabled.items())
        self.names: tuple[str, ...] = tuple(enabled)
        self._shapes = {
            spec.name: tuple(int(d) for d in spec.frame_shape(params, config.stft, self.sample_rate))
            for spec, params in self._specs
        }
        self.summaries: tuple[str, ...] = tuple(config.summaries)
        self.normalization: str = config.normalization

    # The window, filterbanks and labels import librosa (numba: about a second) and are only
    # needed to compute; the coordinator plans with shapes and params alone.
    @functools.cached_property
    def plan(self) -> StftPlan:
        return StftPlan.build(self.config.stft, self.sample_rate)

    @functools.cached_property
    def _entries(self) -> tuple[tuple[FeatureSpec, FeatureParams, Any], ...]:
        return tuple(
            (spec, params, spec.build_state(params, self.config.stft, self.sample_rate)) for spec, params in self._specs
        )

    @functools.cached_property
    def _columns(self) -> list[str]:
        return [
            col
            for spec, params in self._specs
            for col in _summaries.columns(spec.name, self._labels(spec, params), self.summaries)
        ]

    # -- shape and timing ---------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        return self.config.stft.hop_length

    @property
    def n_fft(self) -> int:
        return self.config.stft.n_fft

    def frame_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-frame trailing shape of each feature, e.g. ``{"log_mel": (80,), "rms": (1,)}``."""
        return dict(self._shapes)

    def n_frames(self, n_samples: int) -> int:
        """Exact frame count of every feature for a clip of ``n_samples`` samples."""
        p = self.config.stft
        return n_frames_for(int(n_samples), n_fft=p.n_fft, hop_length=p.hop_length, center=p.center)

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Seconds of each frame's centre (frame t covers samples t*hop .. t*hop + n_fft)."""
        offset = 0 if self.config.stft.center else self.n_fft // 2
        return (np.arange(n_frames) * self.hop_length + offset) / self.sample_rate

    # -- computing ------------------------------------------------------------------------
    def analyze(self, y: np.ndarray) -> Analysis:
        """The shared analysis of one clip (nothing computed yet), for :meth:`compute` to reuse.

        Other consumers of the spectrum (the quality metrics) can read it first and leave
        what they computed for the features. It lives in this thread's reusable buffers:
        use it before the thread's next ``analyze`` or ``compute``.
        """
        return Analysis(_as_audio(y), self.plan)

    def compute(self, y: np.ndarray, analysis: Analysis | None = None) -> dict[str, np.ndarray]:
        """Every feature of one clip.

        Parameters
        ----------
        y : np.ndarray [shape=(n_samples,)]
            Mono audio at ``sample_rate`` (float32; other real dtypes are converted).
        analysis : :meth:`analyze` of ``y``, already read by another consumer (its
            spectrograms are reused: the features are the same as without it).

        Returns
        -------
        dict[str, np.ndarray [shape=(n_frames, *frame_shape), dtype=float32]]
            Raw (unnormalised) features, in :attr:`names` order; ``feat.T`` equals librosa's output.
        """
        if analysis is None:
            ana = Analysis(_as_audio(y), self.plan)
        elif analysis.plan is not self.plan or analysis.y.shape != np.shape(y):
            raise ValueError("compute: the analysis given is not this feature set's analysis of this clip")
        else:
            ana = analysis
        n = self.n_frames(ana.y.shape[0])
        out: dict[str, np.ndarray] = {}
        for spec, params, state in self._entries:
            x = spec.compute(ana, params, state)
            x = np.ascontiguousarray(x, dtype=np.float32).reshape((n, *self._shapes[spec.name]))
            out[spec.name] = x.copy() if _scratch.owns(x) else x
        return out

    def compute_channels(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Every feature of each channel of one clip.

        Parameters
        ----------
        y : np.ndarray [shape=(n_samples, n_channels)]

        Returns
        -------
        dict[str, np.ndarray [shape=(n_frames, n_channels, *frame_shape), dtype=float32]]
            ``feat[:, c]`` equals :meth:`compute` of channel ``c`` (librosa's, transposed).
        """
        per = [self.compute(np.ascontiguousarray(y[:, c])) for c in range(y.shape[1])]
        return {name: np.stack([p[name] for p in per], axis=1) for name in per[0]}

    def normalize(
        self, feats: dict[str, np.ndarray], stats: dict[str, RunningStats] | None = None
    ) -> dict[str, np.ndarray]:
        """Apply the configured normalisation to computed features (a new dict).

        ``none``: unchanged. ``per_example``: :func:`normalize.per_example` per feature.
        ``global``: ``stats[name].apply`` (the merged :meth:`new_running_stats` of the data set).
        """
        if self.normalization == "per_example":
            return {k: per_example(v) for k, v in feats.items()}
        if self.normalization == "global":
            if stats is None:
                raise ValueError("normalization: global needs the data set's RunningStats per feature")
            return {k: stats[k].apply(v) for k, v in feats.items()}
        return dict(feats)

    def new_running_stats(self) -> dict[str, RunningStats]:
        """Empty global-normalisation accumulators, one per feature (dim = prod(frame_shape))."""
        return {name: RunningStats(math.prod(shape)) for name, shape in self._shapes.items()}

    # -- summaries ------------------------------------------------------------------------
    def summary_columns(self) -> list[str]:
        """Names of :meth:`summarize`'s values (empty when ``summaries`` is empty)."""
        return list(self._columns)

    def summarize(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """float32 [shape=(len(summary_columns()),)]: the ``summaries`` of every feature over frames."""
        parts = []
        for name in self.names:
            if name not in feats:
                raise KeyError(f"summarize: feature {name!r} is missing from the input")
            parts.append(_summaries.summarize(feats[name], self.summaries))
        out = np.concatenate(parts) if parts else np.zeros(0)
        return out.astype(np.float32)

    # -- description ----------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Fully resolved, JSON-able parameters in the shape of the ``features:`` section.

        ``{"stft": {...}, <feature>: {...}, ..., "summaries": [...], "normalization": ...}``;
        ``FeaturesConfig.model_validate(fs.params())`` gives an equivalent config.
        """
        out: dict[str, Any] = {"stft": self.config.stft.resolved()}
        for spec, params in self._specs:
            d = params.model_dump()
            if "fmax" in d and d["fmax"] is None:
                d["fmax"] = self.sample_rate / 2
            out[spec.name] = d
        out["summaries"] = list(self.summaries)
        out["normalization"] = self.normalization
        return json_safe(out)

    def _labels(self, spec: FeatureSpec, params: FeatureParams) -> list[str]:
        dim = math.prod(self._shapes[spec.name])
        labels = spec.labels(params, self.config.stft, self.sample_rate) if spec.labels else None
        return list(labels) if labels and len(labels) == dim else _summaries.index_labels(dim)

    def __reduce__(self) -> tuple[Any, ...]:
        return (build_feature_set, (self.config, self.sample_rate))

    def __repr__(self) -> str:
        return f"FeatureSet(names={self.names}, sample_rate={self.sample_rate}, hop_length={self.hop_length})"


def check(config: FeaturesConfig, sample_rate: int) -> list[Problem]:
    """Problems that depend on the sample rate (fmax above Nyquist, contrast bands), with key paths."""
    problems = []
    if int(sample_rate) <= 0:
        return [Problem("audio.sample_rate", f"must be a positive integer, got {sample_rate}")]
    for name, params in config.enabled().items():
        spec = REGISTRY[name]
        for message in spec.check(params, config.stft, int(sample_rate)) if spec.check else []:
            key, _, text = message.partition(": ")
            problems.append(Problem(f"features.{name}.{key}", text))
    return problems


@functools.lru_cache(maxsize=32)
def build_feature_set(cfg: FeaturesConfig, sample_rate: int) -> FeatureSet:
    """The :class:`FeatureSet` of ``cfg`` at ``sample_rate``, cached per process.

    Raises
    ------
    CatalogError
        When a setting does not fit the sample rate; each problem names its key.
    """
    if not isinstance(cfg, FeaturesConfig):
        raise TypeError(f"build_feature_set needs a FeaturesConfig, got {type(cfg).__name__}")
    problems = check(cfg, sample_rate)
    if problems:
        raise CatalogError(problems)
    return FeatureSet(cfg, int(sample_rate))


def _as_audio(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"features need mono audio of shape (n_samples,), got shape {y.shape}: mix down first")
    if not np.issubdtype(y.dtype, np.floating) and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"audio must be real-valued, got dtype {y.dtype}")
    if y.dtype != np.float32:
        y = y.astype(np.float32)
    if not np.isfinite(y).all():
        raise ValueError("audio contains NaN or infinite samples")
    return y
