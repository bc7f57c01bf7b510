"""``AugmentChain``: runs a validated ``AugmentConfig`` on one example's copy.

Randomness: every call consumes the given generator in a fixed pattern, whatever is
applied: one array of ``len(steps)`` uniforms (the ``p`` gates), then one array of
``len(steps)`` 63-bit seeds. Step ``i`` draws its own parameters from
``np.random.default_rng(seeds[i])``. So results are bit-identical for the same generator
state, and turning a step on or off (or changing its ranges) does not change what the
other steps draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.augment import registry
from pipeline.augment._params import StepParams
from pipeline.augment.config import AugmentConfig
from pipeline.errors import ConfigError

_SEED_HIGH = 2**63 - 1


def _step_rngs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[np.random.Generator]]:
    gates = rng.random(n)
    seeds = rng.integers(0, _SEED_HIGH, size=n, dtype=np.int64)
    return gates, [np.random.default_rng(int(s)) for s in seeds]


@dataclass(frozen=True, slots=True)
class AugmentChain:
    """The transforms of one catalog's ``augment:`` section, ready to run (built by :func:`build_chain`)."""

    copies: int
    splits: tuple[str, ...]
    waveform: tuple[StepParams, ...] = ()
    spec: tuple[StepParams, ...] = ()

    def applies_to(self, split: str) -> bool:
        """True if examples of ``split`` get augmented copies."""
        return self.copies > 0 and split in self.splits

    def bank_sources(self) -> set[str]:
        """Catalog source names whose clips ``augment_waveform`` needs in ``banks``."""
        return {
            params.source  # type: ignore[attr-defined]
            for params in self.waveform
            if registry.WAVEFORM_TRANSFORMS[params.name].uses_bank
        }

    def augment_waveform(
        self,
        y: np.ndarray,
        sample_rate: int,
        rng: np.random.Generator,
        banks: Mapping[str, Sequence[np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, list[dict]]:
        """Apply the waveform transforms in order.

        Parameters
        ----------
        y : np.ndarray [shape=(n,), dtype=float32]
            Mono waveform (not modified).
        sample_rate : int
            Sample rate of ``y`` and of every bank clip.
        rng : np.random.Generator
            The copy's generator, ``pipeline.rng.example_rng(seed, id, copy, stream="augment")``.
        banks : mapping of source name to a sequence of mono float32 clips
            Needed for the names in :meth:`bank_sources`.

        Returns
        -------
        y : np.ndarray [shape=(m,), dtype=float32]
            The new waveform (``m != n`` after time_stretch or speed).
        applied : list of dict
            One JSON-serialisable dict per transform applied, in order, with its drawn
            parameters (``{"name": "pitch_shift", "semitones": 1.37}``). Transforms skipped
            by their ``p`` are not listed.
        """
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"augment_waveform takes mono audio of shape (n,), got shape {y.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        y = y.astype(np.float32, copy=True)
        gates, step_rngs = _step_rngs(rng, len(self.waveform))
        applied: list[dict] = []
        for i, params in enumerate(self.waveform):
            if gates[i] >= params.p:
                continue
            transform = registry.WAVEFORM_TRANSFORMS[params.name]
            if transform.uses_bank:
                clips = self._clips(banks, i, params)
                y, drawn = transform.apply(y, sample_rate, step_rngs[i], params, clips)
            else:
                y, drawn = transform.apply(y, sample_rate, step_rngs[i], params)
            y = np.asarray(y, dtype=np.float32)
            applied.append(drawn)
        return y, applied

    def augment_features(
        self, feats: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> tuple[dict[str, np.ndarray], list[dict]]:
        """Apply the SpecAugment masks in order.

        Parameters
        ----------
        feats : mapping of feature name to np.ndarray [shape=(n_frames, n_bins)]
            Time-major features of one copy (not modified). 1-D (per-example) features are
            passed through.
        rng : np.random.Generator
            The copy's generator (the same one may be used for ``augment_waveform`` first).

        Returns
        -------
        feats : dict of feature name to np.ndarray
            Masked features are new arrays; unmasked ones are the input objects.
        applied : list of dict
            One dict per mask transform applied, with every band drawn
            (``{"name": "freq_mask", "masks": [{"feature": "log_mel", "start_bin": 3, "width_bins": 5}]}``).
        """
        out = dict(feats)
        gates, step_rngs = _step_rngs(rng, len(self.spec))
        applied: list[dict] = []
        for i, params in enumerate(self.spec):
            if gates[i] >= params.p:
                continue
            transform = registry.SPEC_TRANSFORMS[params.name]
            try:
                out, drawn = transform.apply(out, step_rngs[i], params)
            except (KeyError, ValueError) as e:
                raise ConfigError(f"augment.spec.{i}.features: {e.args[0] if e.args else e}") from e
            applied.append(drawn)
        return out, applied

    @staticmethod
    def _clips(banks: Mapping[str, Sequence[np.ndarray]] | None, i: int, params: StepParams) -> Sequence[np.ndarray]:
        source = params.source  # type: ignore[attr-defined]
        clips = (banks or {}).get(source)
        if not clips:
            raise ConfigError(
                f"augment.waveform.{i}.source: no clips loaded from source {source!r} for {params.name}; "
                f"pass them in banks[{source!r}] (AugmentChain.bank_sources() lists the sources needed) "
                "or check that the source matches audio files"
            )
        return clips


def build_chain(cfg: AugmentConfig) -> AugmentChain:
    """Turn a validated config into a runnable chain."""
    return AugmentChain(copies=cfg.copies, splits=tuple(cfg.splits), waveform=tuple(cfg.waveform), spec=tuple(cfg.spec))
