"""`audio.mono: false`: channels kept, selected and padded; features per channel equal the
features of that channel alone; augmented copies draw once for every channel."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
import zarr
from pydantic import ValidationError

from pipeline import open_dataset
from pipeline.config.catalog import Audio, load_catalog
from pipeline.features import build_feature_set
from pipeline.io.audio import resample
from pipeline.run import steps
from pipeline.store.location import StoreLocation
from pipeline.store.state import read_state
from tests.conftest import base_catalog, write_catalog

SR_IN = 22_050


def _tones(freqs, seconds=1.0, sr=SR_IN) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([0.2 * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "audio" / "room"
    root.mkdir(parents=True)
    sf.write(root / "spk01_three.wav", _tones([300, 500, 700]), SR_IN, subtype="FLOAT")
    sf.write(root / "spk02_stereo.wav", _tones([400, 900]), SR_IN, subtype="FLOAT")
    sf.write(root / "spk03_mono.wav", _tones([600]), SR_IN, subtype="FLOAT")
    return tmp_path / "audio"


def _run(corpus, tmp_path, name, **audio):
    cat = base_catalog(corpus, tmp_path / f"{name}.zarr", splits={"train": 1.0, "val": 0.0, "test": 0.0},
                       audio={"sample_rate": 16000, "mono": False, **audio})
    cat["sources"][0]["pattern"] = "**/*.wav"
    cat["augment"] = {"copies": 1, "splits": ["train"],
                      "waveform": [{"name": "gain", "min_gain_db": -6, "max_gain_db": 6}, {"name": "time_shift", "max_shift_seconds": 0.2}],
                      "spec": [{"name": "time_mask", "count": 2, "max_width_frames": 10}, {"name": "freq_mask", "count": 1, "max_width_bins": 5}]}
    loaded = load_catalog(write_catalog(tmp_path / f"{name}.yaml", cat))
    steps.run_catalog(loaded)
    return loaded, tmp_path / f"{name}.zarr"


def test_selected_channels_are_each_featurized_alone(corpus, tmp_path):
    loaded, store = _run(corpus, tmp_path, "sel", channels=[2, 0], max_channels=3, pad_channels="repeat")
    ds = open_dataset(str(store))
    rows = {(p, int(c)): i for i, (p, c) in enumerate(zip(ds.table["path"], ds.table["copy"]))}
    fset = build_feature_set(loaded.catalog.features, 16000)
    # channels 2 then 0 of the three-channel file: each equals that channel featurized alone
    three = sf.read(corpus / "room" / "spk01_three.wav", dtype="float32")[0]
    feats = ds[rows[("room/spk01_three.wav", 0)]]["features"]
    assert feats["log_mel"].shape[1] == 2
    for k, c in enumerate([2, 0]):
        alone = fset.compute(resample(np.ascontiguousarray(three[:, c]), SR_IN, 16000))
        for name in alone:
            np.testing.assert_array_equal(feats[name][:, k], alone[name])
    # and librosa's, called directly on that channel
    y2 = resample(np.ascontiguousarray(three[:, 2]), SR_IN, 16000)
    mel = librosa.feature.melspectrogram(y=y2, sr=16000, n_fft=400, hop_length=160, n_mels=40, power=2.0)
    np.testing.assert_allclose(feats["log_mel"][:, 0], librosa.power_to_db(mel).T, atol=2e-3)
    # a mono file: its one channel repeated; a stereo file: channel 2 does not exist -> repeats channel 0
    mono = ds[rows[("room/spk03_mono.wav", 0)]]["features"]["log_mel"]
    np.testing.assert_array_equal(mono[:, 0], mono[:, 1])
    stereo = ds[rows[("room/spk02_stereo.wav", 0)]]["features"]["log_mel"]
    np.testing.assert_array_equal(stereo[:, 0], stereo[:, 1])  # [2 % 2, 0] = [0, 0]
    # augmented copies: one draw for every channel (identical channels stay identical)
    copy = ds[rows[("room/spk03_mono.wav", 1)]]
    drawn = json.loads(ds.table["augment"][rows[("room/spk03_mono.wav", 1)]])
    assert {d["name"] for d in drawn} >= {"gain", "time_shift", "time_mask", "freq_mask"}
    np.testing.assert_array_equal(copy["features"]["log_mel"][:, 0], copy["features"]["log_mel"][:, 1])
    assert not np.array_equal(copy["features"]["log_mel"][:, 0], mono[:, 0])
    # the arrays name their channel axis
    arr = zarr.open_group(str(store), mode="r")["features/log_mel"]
    assert arr.metadata.dimension_names == ("frame", "channel", "log_mel_bin")


def test_zero_padding_and_rejection_of_files_with_too_few_channels(corpus, tmp_path):
    loaded, store = _run(corpus, tmp_path, "zero", max_channels=3, pad_channels="zero")
    ds = open_dataset(str(store))
    i = list(zip(ds.table["path"], ds.table["copy"])).index(("room/spk02_stereo.wav", 0))
    x = ds[i]["features"]["log_mel"]
    silence = build_feature_set(loaded.catalog.features, 16000).compute(np.zeros(16000, np.float32))["log_mel"]
    assert x.shape[1] == 3 and x.shape[0] == silence.shape[0]
    np.testing.assert_array_equal(x[:, 2], silence)  # a silent third channel
    assert x[:, 0].max() > silence.max() + 40
    _, store = _run(corpus, tmp_path, "rej", max_channels=3, pad_channels="reject")
    state = read_state(StoreLocation(str(store)))
    rejected = {r["path"]: r for r in state.rejects}
    assert set(rejected) == {"room/spk02_stereo.wav", "room/spk03_mono.wav"}
    assert rejected["room/spk03_mono.wav"]["error_class"] == "TooFewChannels"
    assert "1 channel(s), but audio.channels keeps [0, 1, 2]" in rejected["room/spk03_mono.wav"]["message"]


def test_channel_settings_are_checked():
    with pytest.raises(ValidationError, match="it needs mono: false"):
        Audio(channels=[0, 1])
    with pytest.raises(ValidationError, match="distinct channel indices"):
        Audio(mono=False, channels=[1, 1])
    assert Audio(mono=False, max_channels=2).kept_channels == 2 and Audio().kept_channels == 0
