"""Features by name: the keys ``catalog.yaml`` may write under ``features:``.

Adding a feature = one module exposing ``SPEC`` (see :mod:`pipeline.features._base`) and
one line here. The order of this tuple is the order of :attr:`FeatureSet.names` and of
the summary columns, whatever order the catalog writes them in.
"""

from __future__ import annotations

from pipeline.features import (
    chroma,
    log_mel,
    mel,
    mfcc,
    rms,
    spectral_bandwidth,
    spectral_centroid,
    spectral_contrast,
    spectral_flatness,
    spectral_rolloff,
    spectrogram,
    zero_crossing_rate,
)
from pipeline.features._base import FeatureSpec

_SPECS: tuple[FeatureSpec, ...] = (
    log_mel.SPEC,
    mel.SPEC,
    mfcc.SPEC,
    chroma.SPEC,
    spectrogram.SPEC,
    spectral_centroid.SPEC,
    spectral_bandwidth.SPEC,
    spectral_rolloff.SPEC,
    spectral_contrast.SPEC,
    spectral_flatness.SPEC,
    zero_crossing_rate.SPEC,
    rms.SPEC,
)

REGISTRY: dict[str, FeatureSpec] = {spec.name: spec for spec in _SPECS}
"""name -> FeatureSpec (params model, compute function, frame-shape function, ...)."""
