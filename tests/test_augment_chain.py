"""AugmentChain: seeding, fixed draw order, banks, and the features pass."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.augment import AugmentChain, AugmentConfig, build_chain
from pipeline.errors import AudioprepError, ConfigError
from pipeline.rng import example_rng

SR = 16000

ALL_ON = {
    "copies": 2,
    "waveform": [
        {"name": "time_shift", "max_shift_seconds": 0.3, "mode": "wrap"},
        {"name": "pitch_shift", "min_semitones": -2, "max_semitones": 2},
        {"name": "time_stretch", "min_rate": 0.9, "max_rate": 1.1},
        {"name": "speed", "min_factor": 0.9, "max_factor": 1.1},
        {"name": "gain", "min_gain_db": -6, "max_gain_db": 6},
        {"name": "gaussian_noise", "min_snr_db": 10, "max_snr_db": 30},
        {"name": "background_noise", "source": "noise", "min_snr_db": 5, "max_snr_db": 20},
        {"name": "reverb", "source": "rirs"},
    ],
    "spec": [
        {"name": "freq_mask", "count": 2, "max_width_bins": 8, "features": ["log_mel"]},
        {"name": "time_mask", "count": 2, "max_width_frames": 20},
    ],
}


def chain_of(doc: dict) -> AugmentChain:
    return build_chain(AugmentConfig.model_validate(doc))


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    t = np.arange(SR) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)


@pytest.fixture(scope="module")
def banks() -> dict[str, list[np.ndarray]]:
    r = np.random.default_rng(1)
    ir = (np.exp(-np.arange(2000) / 300) * r.standard_normal(2000)).astype(np.float32)
    return {"noise": [r.standard_normal(5000).astype(np.float32), r.uniform(-1, 1, 30000).astype(np.float32)], "rirs": [ir]}


def feats() -> dict[str, np.ndarray]:
    r = np.random.default_rng(2)
    return {"log_mel": r.uniform(1, 2, (101, 40)).astype(np.float32), "mfcc": r.uniform(1, 2, (101, 13)).astype(np.float32)}


def test_build_chain_fields():
    chain = chain_of(ALL_ON)
    assert chain.copies == 2 and chain.splits == ("train",)
    assert chain.bank_sources() == {"noise", "rirs"}
    assert chain.applies_to("train") and not chain.applies_to("test")
    assert not chain_of({}).applies_to("train")
    assert chain_of({"copies": 1, "waveform": [{"name": "gain"}]}).bank_sources() == set()


def test_same_seed_bit_identical_different_copy_differs(clip, banks):
    chain = chain_of(ALL_ON)
    y1, a1 = chain.augment_waveform(clip, SR, example_rng(42, "ex-1", 1, stream="augment"), banks)
    y2, a2 = chain.augment_waveform(clip, SR, example_rng(42, "ex-1", 1, stream="augment"), banks)
    assert y1.tobytes() == y2.tobytes() and a1 == a2
    y3, a3 = chain.augment_waveform(clip, SR, example_rng(42, "ex-1", 2, stream="augment"), banks)
    assert a3 != a1 and not (len(y3) == len(y1) and np.array_equal(y3, y1))
    _, a4 = chain.augment_waveform(clip, SR, example_rng(42, "ex-2", 1, stream="augment"), banks)
    assert a4 != a1
    f1, s1 = chain.augment_features(feats(), example_rng(42, "ex-1", 1, stream="augment"))
    f2, s2 = chain.augment_features(feats(), example_rng(42, "ex-1", 1, stream="augment"))
    assert s1 == s2 and all(np.array_equal(f1[k], f2[k]) for k in f1)
    _, s3 = chain.augment_features(feats(), example_rng(42, "ex-1", 2, stream="augment"))
    assert s3 != s1


def test_all_on_chain_applies_everything_in_order(clip, banks):
    chain = chain_of(ALL_ON)
    y, applied = chain.augment_waveform(clip, SR, np.random.default_rng(0), banks)
    assert [a["name"] for a in applied] == [s["name"] for s in ALL_ON["waveform"]]
    assert y.dtype == np.float32 and y.ndim == 1 and np.all(np.isfinite(y))
    assert json.loads(json.dumps(applied)) == applied
    out, spec_applied = chain.augment_features(feats(), np.random.default_rng(0))
    assert [a["name"] for a in spec_applied] == ["freq_mask", "time_mask"]
    assert json.loads(json.dumps(spec_applied)) == spec_applied


def test_rng_consumption_is_fixed_and_steps_independent(clip):
    on = chain_of({"waveform": [{"name": "gain", "p": 1.0}, {"name": "pitch_shift", "p": 1.0}]})
    off = chain_of({"waveform": [{"name": "gain", "p": 0.0}, {"name": "pitch_shift", "p": 1.0}]})
    r_on, r_off = np.random.default_rng(7), np.random.default_rng(7)
    _, a_on = on.augment_waveform(clip, SR, r_on)
    _, a_off = off.augment_waveform(clip, SR, r_off)
    assert [a["name"] for a in a_off] == ["pitch_shift"]  # skipped steps are not listed
    assert a_on[1] == a_off[0]  # pitch draw unaffected by whether gain ran
    assert r_on.random() == r_off.random()  # same amount of the generator consumed


def test_p_gates_apply_at_the_rate_p(clip):
    chain = chain_of({"waveform": [{"name": "gain", "p": 0.3}]})
    hits = sum(len(chain.augment_waveform(clip[:100], SR, example_rng(0, "x", c, "augment"))[1]) for c in range(400))
    assert 0.22 < hits / 400 < 0.38


def test_input_not_mutated_and_float32(clip, banks):
    before = clip.copy()
    chain = chain_of({"waveform": [{"name": "gain"}, {"name": "time_shift", "mode": "wrap"}]})
    y, _ = chain.augment_waveform(clip.astype(np.float64), SR, np.random.default_rng(0))
    assert np.array_equal(clip, before) and y.dtype == np.float32
    f = feats()
    f_before = {k: v.copy() for k, v in f.items()}
    chain_of(ALL_ON).augment_features(f, np.random.default_rng(0))
    assert all(np.array_equal(f[k], f_before[k]) for k in f)


def test_empty_chain_returns_copy(clip):
    y, applied = chain_of({}).augment_waveform(clip, SR, np.random.default_rng(0))
    assert applied == [] and np.array_equal(y, clip) and y is not clip


def test_missing_bank_names_the_key(clip):
    chain = chain_of({"waveform": [{"name": "gain"}, {"name": "reverb", "source": "rirs"}]})
    with pytest.raises(ConfigError, match=r"augment\.waveform\.1\.source: no clips loaded from source 'rirs'"):
        chain.augment_waveform(clip, SR, np.random.default_rng(0), {"rirs": []})
    with pytest.raises(AudioprepError):
        chain.augment_waveform(clip, SR, np.random.default_rng(0))


def test_unknown_feature_names_the_key():
    chain = chain_of({"spec": [{"name": "freq_mask", "features": ["chroma"]}]})
    with pytest.raises(ConfigError, match=r"augment\.spec\.0\.features: .*chroma"):
        chain.augment_features(feats(), np.random.default_rng(0))


def test_bad_waveform_shape():
    with pytest.raises(ValueError, match="mono"):
        chain_of({}).augment_waveform(np.zeros((2, 100), np.float32), SR, np.random.default_rng(0))


def test_empty_and_short_inputs(banks):
    chain = chain_of(ALL_ON)
    for n in (0, 1, 100):
        y, applied = chain.augment_waveform(np.ones(n, np.float32) * 0.1, SR, np.random.default_rng(n), banks)
        assert y.dtype == np.float32 and y.ndim == 1 and np.all(np.isfinite(y)) and len(applied) == 8


def test_chain_pickles_for_workers(clip, banks):
    import pickle

    chain = chain_of(ALL_ON)
    clone = pickle.loads(pickle.dumps(chain))
    assert clone == chain
    a = chain.augment_waveform(clip, SR, np.random.default_rng(3), banks)
    b = clone.augment_waveform(clip, SR, np.random.default_rng(3), banks)
    assert a[1] == b[1] and np.array_equal(a[0], b[0])
