"""FeaturesConfig: defaults, key-path errors, round trips; build_feature_set caching and checks."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from pipeline.errors import CatalogError
from pipeline.features import REGISTRY, FeaturesConfig, FeatureSet, build_feature_set

# librosa warns about empty mel filters for 128 mels at n_fft=400 (mfcc defaults); expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Empty filters:UserWarning")


class Catalogish(BaseModel):
    """Stands in for the catalog: FeaturesConfig nested under ``features``."""

    features: FeaturesConfig = FeaturesConfig()


def errors_of(raw: dict) -> list[tuple[tuple, str, str]]:
    with pytest.raises(ValidationError) as info:
        Catalogish.model_validate(raw)
    return [(e["loc"], e["type"], e["msg"]) for e in info.value.errors()]


def test_default_is_log_mel_with_librosa_style_defaults():
    for cfg in (FeaturesConfig(), Catalogish().features, Catalogish.model_validate({"features": {}}).features):
        assert list(cfg.enabled()) == ["log_mel"]
    cfg = FeaturesConfig.model_validate({"summaries": ["mean"]})
    assert list(cfg.enabled()) == ["log_mel"]  # no feature named: log_mel
    fs = build_feature_set(FeaturesConfig(), 16000)
    assert fs.frame_shapes() == {"log_mel": (80,)}
    assert (fs.hop_length, fs.n_fft, fs.sample_rate) == (160, 400, 16000)
    p = fs.params()
    assert p["stft"] == {"n_fft": 400, "hop_length": 160, "win_length": 400, "window": "hann", "center": True, "pad_mode": "constant"}
    assert p["log_mel"] == {"n_mels": 80, "fmin": 0.0, "fmax": 8000.0, "power": 2.0, "htk": False, "norm": "slaney", "ref": 1.0, "amin": 1e-10, "top_db": 80.0}
    assert p["summaries"] == [] and p["normalization"] == "none"


def test_null_and_true_enable_false_drops():
    cfg = FeaturesConfig.model_validate({"rms": None, "spectral_centroid": True, "log_mel": False, "mfcc": {}})
    assert list(cfg.enabled()) == ["mfcc", "spectral_centroid", "rms"]  # registry order


def test_unknown_param_error_has_key_path():
    errs = errors_of({"features": {"log_mel": {"n_melz": 64}}})
    assert errs == [(("features", "log_mel", "n_melz"), "extra_forbidden", "Extra inputs are not permitted")]


def test_unknown_feature_error_has_key_path():
    errs = errors_of({"features": {"log_melz": {}}})
    assert [e[:2] for e in errs] == [(("features", "log_melz"), "extra_forbidden")]


def test_bad_values_have_key_paths():
    errs = errors_of(
        {
            "features": {
                "stft": {"n_fft": 512, "hop_length": 0, "window": "nope", "pad_mode": "wrap"},
                "spectral_rolloff": {"roll_percent": 1.5},
                "chroma": {"tuning": "guess"},
                "summaries": ["mean", "median"],
                "normalization": "minmax",
            }
        }
    )
    locs = {e[0] for e in errs}
    assert ("features", "stft", "hop_length") in locs
    assert ("features", "stft", "window") in locs
    assert ("features", "stft", "pad_mode") in locs
    assert ("features", "spectral_rolloff", "roll_percent") in locs
    assert any(loc[:3] == ("features", "chroma", "tuning") for loc in locs)
    assert ("features", "summaries", 1) in locs
    assert ("features", "normalization") in locs


def test_per_feature_stft_keys_point_to_features_stft():
    errs = errors_of({"features": {"log_mel": {"n_fft": 512, "hop_length": 128}}})
    assert {e[0] for e in errs} == {("features", "log_mel", "n_fft"), ("features", "log_mel", "hop_length")}
    assert all(e[1] == "shared_stft" for e in errs)
    assert "set features.stft.n_fft instead" in dict((e[0][-1], e[2]) for e in errs)["n_fft"]
    errs = errors_of({"features": {"rms": {"frame_length": 1024}}})
    assert errs[0][0] == ("features", "rms", "frame_length") and "features.stft.n_fft" in errs[0][2]


def test_cross_field_checks():
    assert errors_of({"features": {"stft": {"n_fft": 256, "win_length": 512}}})[0][0] == ("features", "stft")
    assert "n_mels" in errors_of({"features": {"mfcc": {"n_mfcc": 40, "n_mels": 32}}})[0][2]
    assert "fmin" in errors_of({"features": {"mel": {"fmin": 4000, "fmax": 3000}}})[0][2]
    assert "repeat" in errors_of({"features": {"summaries": ["mean", "mean"]}})[0][2]
    assert "odd" in errors_of({"features": {"mfcc": {"deltas": True, "delta_width": 8}}})[0][2]


def test_config_is_frozen_and_hashable():
    cfg = FeaturesConfig.model_validate({"mfcc": {"n_mfcc": 13}, "summaries": ["mean", "std"]})
    with pytest.raises(ValidationError):
        cfg.summaries = ()
    same = FeaturesConfig.model_validate({"summaries": ("mean", "std"), "mfcc": {"n_mfcc": 13}})
    assert cfg == same and hash(cfg) == hash(same)


def test_build_is_cached_per_config_and_sample_rate():
    a = build_feature_set(FeaturesConfig.model_validate({"mfcc": {}}), 16000)
    b = build_feature_set(FeaturesConfig.model_validate({"mfcc": {}}), 16000)
    c = build_feature_set(FeaturesConfig.model_validate({"mfcc": {}}), 22050)
    assert a is b and a is not c
    assert pickle.loads(pickle.dumps(a)) is a  # unpickles through the per-process cache


def test_sample_rate_dependent_problems_name_their_keys():
    cfg = FeaturesConfig.model_validate({"log_mel": {"fmax": 11025.0}, "spectral_contrast": {"fmin": 1000.0}})
    with pytest.raises(CatalogError) as info:
        build_feature_set(cfg, 16000)
    keys = [p.key for p in info.value.problems]
    assert keys == ["features.log_mel.fmax", "features.spectral_contrast.n_bands"]
    assert "Nyquist" in str(info.value)
    build_feature_set(cfg.model_copy(update={"spectral_contrast": None}), 22050)  # fine at 22.05 kHz
    tiny = FeaturesConfig.model_validate({"stft": {"n_fft": 32, "hop_length": 16}, "spectral_contrast": {}})
    with pytest.raises(CatalogError, match="holds no FFT bin") as info:
        build_feature_set(tiny, 16000)
    assert info.value.problems[0].key == "features.spectral_contrast.fmin"


def test_params_are_strict_json_and_round_trip():
    cfg = FeaturesConfig.model_validate(
        {
            "stft": {"n_fft": 512, "hop_length": 128, "window": ["kaiser", 8.0]},
            "chroma": {},
            "mfcc": {"deltas": True},
            "log_mel": {"ref": "max", "top_db": None},
            "summaries": ["mean", "max"],
            "normalization": "global",
        }
    )
    fs = build_feature_set(cfg, 22050)
    text = json.dumps(fs.params(), allow_nan=False)
    p = json.loads(text)
    assert p["chroma"]["norm"] == "inf" and p["mfcc"]["fmax"] == 11025.0 and p["stft"]["window"] == ["kaiser", 8.0]
    again = build_feature_set(FeaturesConfig.model_validate(p), 22050)
    assert again.params() == fs.params()
    assert again.frame_shapes() == fs.frame_shapes() == {"log_mel": (80,), "mfcc": (60,), "chroma": (12,)}
    assert again.config.chroma.norm == np.inf


def test_every_registered_feature_builds_and_computes():
    cfg = FeaturesConfig.model_validate({name: {} for name in REGISTRY})
    fs = build_feature_set(cfg, 16000)
    assert isinstance(fs, FeatureSet) and fs.names == tuple(REGISTRY)
    y = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    out = fs.compute(y)
    assert list(out) == list(REGISTRY)
    for name, x in out.items():
        assert x.shape == (fs.n_frames(4000), *fs.frame_shapes()[name]) and x.dtype == np.float32


def test_compute_rejects_bad_audio():
    fs = build_feature_set(FeaturesConfig(), 16000)
    with pytest.raises(ValueError, match="mono"):
        fs.compute(np.zeros((2, 1000), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        fs.compute(np.full(1000, np.nan, np.float32))
    with pytest.raises(ValueError, match="at least one sample"):
        fs.compute(np.zeros(0, np.float32))
    x64 = fs.compute(np.ones(1000, np.float64))["log_mel"]
    assert x64.dtype == np.float32
