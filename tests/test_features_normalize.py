"""per_example standardisation and mergeable RunningStats for global normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from pipeline.features import FeaturesConfig, build_feature_set
from pipeline.features.normalize import RunningStats, per_example

# librosa warns about empty mel filters for 128 mels at n_fft=400 (mfcc defaults); expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Empty filters:UserWarning")


def test_per_example_zero_mean_unit_std_per_band():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((500, 4)) * [1.0, 10.0, 0.01, 3.0] + [5.0, -2.0, 100.0, 0.0]).astype(np.float32)
    z = per_example(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
    assert_allclose(z.std(axis=0), 1.0, rtol=1e-5)


def test_per_example_constant_band_becomes_zero_not_nan():
    x = np.stack([np.full(10, 3.0), np.arange(10.0)], axis=1).astype(np.float32)
    z = per_example(x)
    assert np.isfinite(z).all()
    assert_array_equal(z[:, 0], 0.0)
    z1 = per_example(x[:1])  # one frame: every band is constant
    assert_array_equal(z1, 0.0)
    with pytest.raises(ValueError):
        per_example(np.zeros((0, 3), np.float32))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    dim=st.integers(1, 5),
    offset=st.floats(-1e4, 1e4),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**32 - 1),
)
def test_merge_of_splits_equals_stats_of_concatenation(sizes, dim, offset, scale, seed):
    rng = np.random.default_rng(seed)
    parts = [(rng.standard_normal((n, dim)) * scale + offset).astype(np.float32) for n in sizes]
    whole = np.concatenate(parts)
    partials = [RunningStats(dim).update(p) for p in parts]
    merged = RunningStats(dim)
    for s in partials:
        merged.merge(s)
    reverse = RunningStats(dim)
    for s in reversed(partials):  # order-independent
        reverse.merge(s)
    sequential = RunningStats(dim)
    for p in parts:
        sequential.update(p)
    for stats in (merged, reverse, sequential):
        assert stats.count == whole.shape[0]
        if whole.shape[0]:
            w = whole.astype(np.float64)
            assert_allclose(stats.mean, w.mean(axis=0), rtol=1e-12, atol=1e-9 * scale)
            assert_allclose(stats.m2, ((w - w.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-9, atol=1e-9 * scale**2)
            mean, std = stats.mean_std()
            assert mean.dtype == std.dtype == np.float32
            expected_std = w.std(axis=0)
            assert_allclose(std, np.where(expected_std > 1e-8, expected_std, 1.0), rtol=1e-5)


def test_to_dict_round_trips_through_json_exactly():
    s = RunningStats(3).update(np.random.default_rng(1).standard_normal((100, 3)).astype(np.float32))
    back = RunningStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.count == s.count and back.dim == 3
    assert_array_equal(back.mean, s.mean)
    assert_array_equal(back.m2, s.m2)


def test_empty_stats_and_shape_errors():
    s = RunningStats(2)
    mean, std = s.mean_std()
    assert_array_equal(mean, 0.0) and assert_array_equal(std, 1.0)
    assert s.merge(RunningStats(2)).count == 0
    with pytest.raises(ValueError, match=r"\(n_frames, 2\)"):
        s.update(np.zeros((4, 3)))
    with pytest.raises(ValueError):
        s.merge(RunningStats(3))
    with pytest.raises(ValueError):
        RunningStats(0)


def test_feature_set_normalize_modes():
    y = np.random.default_rng(2).standard_normal(8000).astype(np.float32)
    raw_cfg = {"log_mel": {"n_mels": 20}, "rms": {}}
    none = build_feature_set(FeaturesConfig.model_validate(raw_cfg), 16000)
    feats = none.compute(y)
    assert all(none.normalize(feats)[k] is feats[k] for k in feats)

    per = build_feature_set(FeaturesConfig.model_validate({**raw_cfg, "normalization": "per_example"}), 16000)
    z = per.normalize(per.compute(y))
    assert_allclose(z["log_mel"].mean(axis=0), 0.0, atol=1e-4)

    glob = build_feature_set(FeaturesConfig.model_validate({**raw_cfg, "normalization": "global"}), 16000)
    stats = glob.new_running_stats()
    assert {k: v.dim for k, v in stats.items()} == {"log_mel": 20, "rms": 1}
    for k, v in feats.items():
        stats[k].update(v.reshape(v.shape[0], -1))
    g = glob.normalize(feats, stats)
    assert_allclose(g["log_mel"], per_example(feats["log_mel"]), atol=1e-4)  # one clip: same as per-example
    with pytest.raises(ValueError, match="RunningStats"):
        glob.normalize(feats)
