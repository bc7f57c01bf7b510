"""Offline data augmentation: waveform transforms and SpecAugment masks for augmented copies.

``catalog.yaml``'s ``augment:`` section parses into :class:`AugmentConfig`;
:func:`build_chain` turns it into an :class:`AugmentChain`, which the pipeline runs on
copy ``k`` (1..copies) of each example of an augmented split with the generator
``pipeline.rng.example_rng(seed, example_id, k, stream="augment")``.

One transform per module (``time_shift``, ``pitch_shift``, ...), each a pure function
``apply(y, sample_rate, rng, params) -> (y, drawn)``; :mod:`pipeline.augment.registry`
maps names to them. See docs/augmentation.md.
"""

from __future__ import annotations

from pipeline.augment.chain import AugmentChain, build_chain
from pipeline.augment.config import AugmentConfig
from pipeline.augment.registry import (
    SPEC_TRANSFORMS,
    WAVEFORM_TRANSFORMS,
    register_spec,
    register_waveform,
)

__all__ = [
    "AugmentChain",
    "AugmentConfig",
    "SPEC_TRANSFORMS",
    "WAVEFORM_TRANSFORMS",
    "build_chain",
    "register_spec",
    "register_waveform",
]
