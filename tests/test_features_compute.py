"""compute() outputs are independent arrays: reused per-thread buffers never leak, threads agree."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from pipeline.features import REGISTRY, FeaturesConfig, _scratch, build_feature_set

pytestmark = pytest.mark.filterwarnings("ignore:Empty filters:UserWarning")

CFG = FeaturesConfig.model_validate(
    {name: {} for name in REGISTRY} | {"spectrogram": {"power": 1.0}, "mel": {"power": 2.0}, "summaries": ["mean"]}
)


def clip(seed: int, n: int = 12000) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def test_outputs_survive_the_next_clip():
    fs = build_feature_set(CFG, 16000)
    first = fs.compute(clip(0))
    kept = {k: v.copy() for k, v in first.items()}
    fs.compute(clip(1, n=20000))  # longer clip: buffers grow and are overwritten
    fs.compute(clip(2, n=4000))
    for name, x in first.items():
        assert_array_equal(x, kept[name], err_msg=name)
        assert not _scratch.owns(x), name


def test_threads_give_the_sequential_answers():
    fs = build_feature_set(CFG, 16000)
    clips = [clip(s, n=8000 + 1000 * s) for s in range(8)]
    sequential = [fs.compute(y) for y in clips]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(fs.compute, clips))
    for a, b in zip(sequential, threaded):
        for name in fs.names:
            assert_array_equal(a[name], b[name], err_msg=name)


def test_release_frees_and_compute_still_works():
    fs = build_feature_set(CFG, 16000)
    a = fs.compute(clip(3))
    _scratch.release()
    b = fs.compute(clip(3))
    for name in fs.names:
        assert_array_equal(a[name], b[name])
