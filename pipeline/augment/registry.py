"""Transforms by name: what ``catalog.yaml`` writes as ``{name: pitch_shift, ...}``.

A waveform transform is a pure function ``apply(y, sample_rate, rng, params) -> (y, drawn)``
(plus a ``clips`` argument when it reads a bank of clips from another catalog source); a
spectrogram transform is ``apply(feats, rng, params) -> (feats, drawn)``. ``params`` is the
transform's frozen pydantic model, whose ``name`` literal is its registry key.

Third-party transforms call :func:`register_waveform` / :func:`register_spec` before the
catalog is parsed; the config then accepts their names like the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.augment import (
    background_noise,
    freq_mask,
    gain,
    gaussian_noise,
    pitch_shift,
    reverb,
    speed,
    time_mask,
    time_shift,
    time_stretch,
)
from pipeline.augment._params import StepParams


@dataclass(frozen=True, slots=True)
class WaveformTransform:
    """A registered waveform transform. ``uses_bank``: ``apply`` takes the clips of ``params.source``."""

    name: str
    params_type: type[StepParams]
    apply: Callable[..., tuple]
    uses_bank: bool = False


@dataclass(frozen=True, slots=True)
class SpecTransform:
    """A registered spectrogram (feature) transform."""

    name: str
    params_type: type[StepParams]
    apply: Callable[..., tuple]


WAVEFORM_TRANSFORMS: dict[str, WaveformTransform] = {}
SPEC_TRANSFORMS: dict[str, SpecTransform] = {}


def register_waveform(
    name: str, params_type: type[StepParams], apply: Callable[..., tuple], *, uses_bank: bool = False
) -> None:
    """Add a waveform transform under ``name`` (must not already be taken)."""
    if name in WAVEFORM_TRANSFORMS or name in SPEC_TRANSFORMS:
        raise ValueError(f"augmentation {name!r} is already registered")
    if uses_bank and "source" not in params_type.model_fields:
        raise ValueError(f"{params_type.__name__} uses a bank, so it needs a 'source' field")
    WAVEFORM_TRANSFORMS[name] = WaveformTransform(name, params_type, apply, uses_bank)


def register_spec(name: str, params_type: type[StepParams], apply: Callable[..., tuple]) -> None:
    """Add a spectrogram transform under ``name`` (must not already be taken)."""
    if name in WAVEFORM_TRANSFORMS or name in SPEC_TRANSFORMS:
        raise ValueError(f"augmentation {name!r} is already registered")
    SPEC_TRANSFORMS[name] = SpecTransform(name, params_type, apply)


register_waveform("time_shift", time_shift.TimeShiftParams, time_shift.apply)
register_waveform("pitch_shift", pitch_shift.PitchShiftParams, pitch_shift.apply)
register_waveform("time_stretch", time_stretch.TimeStretchParams, time_stretch.apply)
register_waveform("speed", speed.SpeedParams, speed.apply)
register_waveform("gain", gain.GainParams, gain.apply)
register_waveform("gaussian_noise", gaussian_noise.GaussianNoiseParams, gaussian_noise.apply)
register_waveform("background_noise", background_noise.BackgroundNoiseParams, background_noise.apply, uses_bank=True)
register_waveform("reverb", reverb.ReverbParams, reverb.apply, uses_bank=True)
register_spec("freq_mask", freq_mask.FreqMaskParams, freq_mask.apply)
register_spec("time_mask", time_mask.TimeMaskParams, time_mask.apply)
