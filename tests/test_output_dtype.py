"""``output.dtype: float16``: feature arrays stored in half precision, read back as float32.

Two runs of one small corpus (float32 and float16) are compared value by value; nothing is
mocked."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import zarr

from pipeline import open_dataset
from pipeline.config.catalog import load_catalog, parse_catalog
from pipeline.demo import make_corpus
from pipeline.errors import CatalogError, StoreError
from pipeline.features import build_feature_set
from pipeline.features.normalize import RunningStats
from pipeline.io.audio import decode, resample, to_mono
from pipeline.run import steps
from pipeline.store.layout import Layout, make_layout
from pipeline.store.location import StoreLocation
from pipeline.store.state import read_meta
from tests.conftest import base_catalog, write_catalog

FEATURES = {
    "stft": {"n_fft": 400, "hop_length": 160},
    "log_mel": {"n_mels": 80},
    "mfcc": {"n_mfcc": 13},
    "summaries": ["mean", "std"],
    "normalization": "global",
}


def _catalog(tmp: pathlib.Path, audio: pathlib.Path, name: str, dtype: str | None) -> pathlib.Path:
    cat = base_catalog(audio, tmp / f"{name}.zarr", features=FEATURES, splits={"train": 0.5, "val": 0.25, "test": 0.25, "by": "example"})
    if dtype is not None:
        cat["output"]["dtype"] = dtype
    return write_catalog(tmp / f"{name}.yaml", cat)


def _features_bytes(store: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in (store / "features").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same 8-file corpus written once with the default dtype and once as float16."""
    tmp = tmp_path_factory.mktemp("dtype")
    audio = tmp / "audio"
    make_corpus(audio, speakers=2, files_per_speaker_and_class=1, min_seconds=0.8, max_seconds=1.5, seed=3)
    f32_cat, f16_cat = _catalog(tmp, audio, "f32", None), _catalog(tmp, audio, "f16", "float16")
    for cat in (f32_cat, f16_cat):
        summary = steps.run_catalog(load_catalog(cat))
        assert summary["examples"] == 8 and summary["rejected"] == 0
    return {"audio": audio, "f32": tmp / "f32.zarr", "f16": tmp / "f16.zarr", "f32_cat": f32_cat, "f16_cat": f16_cat}


def test_float16_store_holds_the_float32_features_rounded_once(stores):
    g32 = zarr.open_group(str(stores["f32"]), mode="r")
    g16 = zarr.open_group(str(stores["f16"]), mode="r")
    for name in ("log_mel", "mfcc"):
        a32, a16 = g32[f"features/{name}"], g16[f"features/{name}"]
        assert a32.dtype == np.float32 and a16.dtype == np.float16
        assert a32.attrs["dtype"] == "float32" and a16.attrs["dtype"] == "float16"
        # same layout (chunks sized for 4-byte values either way), so the same offsets
        assert a16.shape == a32.shape and a16.chunks == a32.chunks and a16.shards == a32.shards
        v32, v16 = a32[:], a16[:]
        assert np.array_equal(v16, v32.astype(np.float16))
        assert not np.array_equal(v16.astype(np.float32), v32)  # float16 really rounded
    meta32, meta16 = read_meta(StoreLocation(str(stores["f32"]))), read_meta(StoreLocation(str(stores["f16"])))
    assert "dtype" not in meta32["layout"] and meta16["layout"]["dtype"] == "float16"
    assert meta16["fingerprint"] != meta32["fingerprint"]
    # statistics and summaries come from the float32 features, before the write
    assert meta16["norm_stats"] == meta32["norm_stats"]
    ds32, ds16 = open_dataset(str(stores["f32"]), normalize=False), open_dataset(str(stores["f16"]), normalize=False)
    assert list(ds16.table["id"]) == list(ds32.table["id"])
    s32 = g32["tables/v00001/summaries/values"][:]
    s16 = g16["tables/v00001/summaries/values"][:]
    assert s32.shape == (8, 2 * (80 + 13)) and np.array_equal(s16, s32)


def test_float16_values_equal_the_decoded_file_features_cast(stores):
    ds = open_dataset(str(stores["f16"]), normalize=False)
    cat = load_catalog(stores["f16_cat"]).catalog
    fset = build_feature_set(cat.features, 16000)
    arr = zarr.open_group(str(stores["f16"]), mode="r")["features/log_mel"]
    for i in (0, 5):
        path = stores["audio"] / str(ds.table["path"][i])
        dec = decode(path.read_bytes(), str(path), max_seconds=600, max_channels=8)
        ref = fset.compute(resample(to_mono(dec.y), dec.sample_rate, 16000))["log_mel"]
        off, n = int(ds.table["offset"][i]), int(ds.table["length"][i])
        assert ref.shape == (n, 80)
        assert np.array_equal(arr[off : off + n], ref.astype(np.float16))
        # float16 keeps 11 significant bits: log-mel in dB (|x| < 128) is within 1/32 dB
        assert float(np.max(np.abs(arr[off : off + n].astype(np.float32) - ref))) <= 2.0**-5


def test_reader_returns_float32_for_a_float16_store(stores):
    raw = zarr.open_group(str(stores["f16"]), mode="r")["features/log_mel"][:]
    ds = open_dataset(str(stores["f16"]), normalize=False)
    assert len(ds) == 8
    for i in range(len(ds)):
        x = ds[i]["features"]["log_mel"]
        off, n = int(ds.table["offset"][i]), int(ds.table["length"][i])
        assert x.dtype == np.float32 and np.array_equal(x, raw[off : off + n].astype(np.float32))
    seen = 0
    for batch in ds.iter_batches(3, shuffle=False):
        x = batch["features"]["log_mel"]
        assert x.dtype == np.float32
        for j, ex_id in enumerate(batch["ids"]):
            i = list(ds.table["id"]).index(ex_id)
            off, n = int(ds.table["offset"][i]), int(ds.table["length"][i])
            assert int(batch["lengths"][j]) == n
            assert np.array_equal(x[j, :n], raw[off : off + n].astype(np.float32))
            assert not x[j, n:].any()
            seen += 1
    assert seen == 8
    # global normalization: the recorded float32 statistics applied to the upcast values
    dsn = open_dataset(str(stores["f16"]))
    assert dsn.normalization == "global"
    mean, std = RunningStats.from_dict(dsn.meta["norm_stats"]["log_mel"]).mean_std()
    mean, std = np.asarray(mean, np.float32), np.maximum(np.asarray(std, np.float32), 1e-8)
    off, n = int(dsn.table["offset"][2]), int(dsn.table["length"][2])
    got = dsn[2]["features"]["log_mel"]
    assert got.dtype == np.float32
    assert np.array_equal(got, (raw[off : off + n].astype(np.float32) - mean) / std)
    batch = next(dsn.iter_batches(8, shuffle=False))
    assert batch["features"]["log_mel"].dtype == np.float32
    j = batch["ids"].index(str(dsn.table["id"][2]))
    assert np.array_equal(batch["features"]["log_mel"][j, :n], got)


def test_dense_layout_float16_equals_float32_cast(stores, tmp_path):
    """Fixed-length clips (rows filled one by one) round the same way as ragged ones."""
    arrays = {}
    for dtype in ("float32", "float16"):
        store = tmp_path / f"{dtype}.zarr"
        cat = base_catalog(stores["audio"], store, audio={"sample_rate": 16000, "clip": {"mode": "fixed", "seconds": 1.0}},
                           splits={"train": 0.5, "val": 0.25, "test": 0.25, "by": "example"})
        cat["output"]["dtype"] = dtype
        assert steps.run_catalog(load_catalog(write_catalog(tmp_path / f"{dtype}.yaml", cat)))["examples"] == 8
        arrays[dtype] = zarr.open_group(str(store), mode="r")["features/log_mel"]
        ds = open_dataset(str(store), normalize=False)
        assert ds[0]["features"]["log_mel"].dtype == np.float32 and ds[0]["features"]["log_mel"].shape == (101, 40)
    a32, a16 = arrays["float32"], arrays["float16"]
    assert a16.dtype == np.float16 and a16.shape == a32.shape and a16.shape[1:] == (101, 40)
    assert np.array_equal(a16[:8], a32[:8].astype(np.float16))


def test_float16_features_take_less_than_two_thirds_of_the_bytes(stores):
    b32, b16 = _features_bytes(stores["f32"]), _features_bytes(stores["f16"])
    assert b16 < 0.65 * b32, (b16, b32)


def test_catalog_rejects_other_dtypes_naming_the_key(tmp_path):
    raw = base_catalog(tmp_path, tmp_path / "s.zarr")
    assert parse_catalog(raw).catalog.output.dtype == "float32"
    raw["output"]["dtype"] = "float64"
    with pytest.raises(CatalogError) as err:
        parse_catalog(raw)
    assert "output.dtype" in str(err.value)


@pytest.mark.parametrize(
    "features, sample_rate, named",
    [
        ({"spectrogram": {"power": 2.0}, "log_mel": {}}, 16000, "spectrogram"),
        ({"mel": {}}, 16000, "mel"),
        ({"spectral_rolloff": {}}, 192000, "spectral_rolloff"),
    ],
)
def test_float16_refuses_features_beyond_its_range(tmp_path, features, sample_rate, named):
    raw = base_catalog(tmp_path, tmp_path / "s.zarr", features=features)
    raw["audio"] = {"sample_rate": sample_rate}
    parse_catalog(raw)  # fine as float32
    raw["output"]["dtype"] = "float16"
    with pytest.raises(CatalogError) as err:
        parse_catalog(raw)
    assert "output.dtype" in str(err.value) and named in str(err.value)


def test_float16_accepts_hz_features_below_its_range(tmp_path):
    raw = base_catalog(tmp_path, tmp_path / "s.zarr", features={"spectral_centroid": {}, "log_mel": {}})
    raw["output"]["dtype"] = "float16"
    assert parse_catalog(raw).catalog.output.dtype == "float16"


def test_changing_dtype_of_an_existing_store_is_refused(stores, tmp_path):
    import shutil

    store = tmp_path / "f32.zarr"
    shutil.copytree(stores["f32"], store)
    cat = base_catalog(stores["audio"], store, features=FEATURES, splits={"train": 0.5, "val": 0.25, "test": 0.25, "by": "example"})
    cat["output"]["dtype"] = "float16"
    with pytest.raises(StoreError, match=r"output\.dtype") as err:
        steps.run_catalog(load_catalog(write_catalog(tmp_path / "c.yaml", cat)))
    assert "output.dtype: (default) -> float16" in str(err.value) and "--overwrite" in str(err.value)
    # the store is untouched: still float32, one version
    g = zarr.open_group(str(store), mode="r")
    assert g["features/log_mel"].dtype == np.float32
    assert [v["version"] for v in g.attrs["audioprep"]["versions"]] == [1]


def test_layout_dict_omits_float32_and_reads_old_stores():
    shapes = {"log_mel": (80,)}
    old = make_layout(shapes, dense_frames=0, nominal_partition_len=50_000)
    half = make_layout(shapes, dense_frames=0, nominal_partition_len=50_000, dtype="float16")
    # float32 layouts serialize as before the key existed, so their fingerprints hold
    assert old.to_dict() == {"mode": "ragged", "feature_shapes": {"log_mel": [80]}, "frames_per_row": 0, "chunk": 2048, "shard": 49152}
    assert half.to_dict() == {**old.to_dict(), "dtype": "float16"}
    assert Layout.from_dict(old.to_dict()) == old and old.dtype == "float32"
    assert Layout.from_dict(half.to_dict()) == half
