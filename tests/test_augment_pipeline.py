"""Augmented copies through the whole pipeline: rows, leakage rules, recorded parameters,
background noise from a catalog source, and bit-exact reproducibility."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from pipeline import open_dataset
from pipeline.augment import build_chain
from pipeline.config.catalog import load_catalog
from pipeline.features import build_feature_set
from pipeline.io.audio import resample, to_mono
from pipeline.rng import example_rng
from pipeline.run import steps
from tests.conftest import base_catalog, write_catalog

AUG = {
    "copies": 2,
    "waveform": [
        {"name": "gain", "min_gain_db": -6, "max_gain_db": 6},
        {"name": "time_shift", "p": 0.5, "max_shift_seconds": 0.1, "mode": "wrap"},
        {"name": "background_noise", "source": "noise", "min_snr_db": 10, "max_snr_db": 20},
    ],
    "spec": [{"name": "time_mask", "count": 1, "max_width_frames": 5}],
}


def _noise_dir(tmp_path):
    d = tmp_path / "noise"
    d.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        sf.write(d / f"n{k}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 8000)
    return d


def test_copies_are_rows_of_their_source_split_with_recorded_parameters(tiny_corpus, tmp_path):
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr", augment=AUG)
    cat["sources"].append({"name": "noise", "url": str(_noise_dir(tmp_path)), "pattern": "*.wav", "role": "noise", "label": {"from": "none"}})
    loaded = load_catalog(write_catalog(tmp_path / "c.yaml", cat))
    summary = steps.run_catalog(loaded)
    assert summary["examples"] == 32 and summary["rows"] == 32 + 2 * 16  # 16 train originals, 2 copies each
    ds = open_dataset(str(tmp_path / "s.zarr"))
    t = ds.table
    ids = list(t["id"])
    copies = [i for i in range(len(ds)) if t["copy"][i] > 0]
    assert len(copies) == 32
    for i in copies:
        parent = ids.index(t["parent"][i])
        assert t["split"][i] == t["split"][parent] == "train"  # no leakage through augmentation
        assert t["label"][i] == t["label"][parent] and t["group"][i] == t["group"][parent]
        assert t["id"][i] == f"{t['parent'][i]}.{t['copy'][i]}"
        drawn = json.loads(t["augment"][i])
        assert [d["name"] for d in drawn][0] == "gain" and any(d["name"] == "background_noise" for d in drawn)
    assert all(t["augment"][i] in ("", "[]") for i in range(len(ds)) if t["copy"][i] == 0)
    assert set(open_dataset(str(tmp_path / "s.zarr"), split="val").table["copy"]) == {0}

    # any copy can be reproduced from (seed, id, copy) alone
    i = copies[3]
    parent = ids.index(t["parent"][i])
    y, sr0 = sf.read(tiny_corpus / t["path"][parent], dtype="float32", always_2d=True)
    y = resample(to_mono(y), sr0, 16000)
    banks = {"noise": [resample(sf.read(p, dtype="float32")[0], 8000, 16000) for p in sorted((tmp_path / "noise").glob("*.wav"))]}
    chain = build_chain(loaded.catalog.augment)
    rng = example_rng(0, t["parent"][i], int(t["copy"][i]), "augment")
    y_aug, drawn = chain.augment_waveform(y, 16000, rng, banks)
    feats = build_feature_set(loaded.catalog.features, 16000).compute(y_aug)
    feats, spec_drawn = chain.augment_features(feats, rng)
    assert json.loads(t["augment"][i]) == json.loads(json.dumps(drawn + spec_drawn))
    np.testing.assert_array_equal(ds[i]["features"]["log_mel"], feats["log_mel"])


def test_normalization_is_recorded_and_applied_by_the_reader(tiny_corpus, tmp_path):
    for mode in ("per_example", "global"):
        store = tmp_path / f"{mode}.zarr"
        cat = base_catalog(tiny_corpus, store, features={"log_mel": {"n_mels": 40}, "normalization": mode})
        steps.run_catalog(load_catalog(write_catalog(tmp_path / f"{mode}.yaml", cat)))
        raw = open_dataset(str(store), split="train", normalize=False)
        norm = open_dataset(str(store), split="train")
        assert norm.normalization == mode and raw.normalization == "none"
        x = norm[0]["features"]["log_mel"]
        r = raw[0]["features"]["log_mel"]
        assert not np.allclose(x, r)  # stored raw, never baked in
        if mode == "per_example":
            np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-4)
            np.testing.assert_allclose(x.std(axis=0)[r.std(axis=0) > 1e-3], 1, atol=1e-3)
        else:
            frames = np.concatenate([raw[i]["features"]["log_mel"] for i in range(len(raw))])
            mean, std = frames.mean(axis=0), frames.std(axis=0)
            np.testing.assert_allclose(x, (r - mean) / np.maximum(std, 1e-8), rtol=1e-3, atol=1e-3)
