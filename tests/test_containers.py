"""Containers libsndfile cannot open, decoded by PyAV: m4a (AAC, ALAC), ADTS AAC, WebM/Opus,
Matroska/FLAC, WMA, and the audio track of an MP4 video. Each is written by FFmpeg from one
signal and must decode to that signal: exactly for the lossless codecs, within codec
tolerance (after the encoder's priming delay) for the lossy ones."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("av")

from pipeline.config.catalog import DEFAULT_PATTERN, load_catalog  # noqa: E402
from pipeline.errors import AudioDecodeError  # noqa: E402
from pipeline.io.audio import decode  # noqa: E402
from pipeline.io.discovery import FileRef, probe_headers  # noqa: E402
from pipeline.run import steps  # noqa: E402
from pipeline.store.location import StoreLocation  # noqa: E402
from pipeline.store.state import read_state  # noqa: E402
from tests.av_util import CONTAINERS, aligned_snr_db, encode  # noqa: E402
from tests.conftest import base_catalog, write_catalog  # noqa: E402

SR = 48_000
LOSSLESS = {"alac.m4a", "pcm.mka"}
#: waveform SNR each lossy codec keeps on the test signal (a tone plus noise per channel), measured
MIN_SNR_DB = {"aac.m4a": 12.0, "adts.aac": 12.0, "opus.webm": 12.0, "wmav2.wma": 8.0, "video.mp4": 12.0}


def _signal(seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 660 * t) + 0.02 * rng.standard_normal(t.size)
    # 16-bit values: what the lossless codecs store, so they must give exactly these back
    return (np.round(np.stack([left, right], axis=1) * 32767) / 32768).astype(np.float32)


@pytest.fixture(scope="module")
def files():
    y = _signal()
    return y, {name: encode(y, SR, fmt, codec, **opts) for name, (fmt, codec, opts) in CONTAINERS.items()}


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_each_container_decodes_to_the_signal_it_was_made_from(files, name):
    y, data = files
    d = decode(data[name], name, max_seconds=60, max_channels=8)
    assert (d.decoder, d.sample_rate, d.channels, d.truncated) == ("pyav", SR, 2, False)
    if name in LOSSLESS:
        assert d.frames == y.shape[0]
        np.testing.assert_array_equal(d.y, y)
        return
    lag, snr_db = aligned_snr_db(d.y, y)
    # the encoder's priming samples (at most AAC's 2112); FFmpeg's WMA round trip starts 2048 samples in
    assert -2048 <= lag <= 2112, lag
    assert abs(d.frames - lag - y.shape[0]) <= 2048  # the whole signal, plus at most one codec frame of padding
    assert snr_db >= MIN_SNR_DB[name], snr_db


def test_headers_come_from_pyav_before_decoding_with_the_same_limits(files, tmp_path):
    y, data = files
    refs = []
    for name, blob in sorted(data.items()):
        (tmp_path / name).write_bytes(blob)
        refs.append(FileRef(example_id=name, source="s", rel_path=name, url=str(tmp_path / name), size_bytes=len(blob), content_key=""))
    heads = {h.example_id: h for h in probe_headers(refs, {})}
    for name, h in heads.items():
        assert h.error == "" and (h.sample_rate, h.channels) == (SR, 2), (name, h)
        assert y.shape[0] <= h.frames <= y.shape[0] * 1.05 + 8192  # an upper bound: room planned for the decode
    assert heads["alac.m4a"].format == "MOV" and heads["opus.webm"].format == "MATROSKA" and heads["wmav2.wma"].format == "ASF"
    with pytest.raises(AudioDecodeError, match=r"aac.m4a: limits: .* > audio.max_seconds=1"):
        decode(data["aac.m4a"], "aac.m4a", max_seconds=1.0, max_channels=8)
    with pytest.raises(AudioDecodeError, match=r"opus.webm: limits: 2 channels > audio.max_channels=1"):
        decode(data["opus.webm"], "opus.webm", max_seconds=60, max_channels=1)
    with pytest.raises(AudioDecodeError, match=r"junk.m4a: header: not a readable audio file"):
        decode(b"this is a text file, not audio\n" * 40, "junk.m4a", max_seconds=60, max_channels=8)


def test_a_run_takes_every_container_by_default_and_records_its_decoder(files, tmp_path):
    y, data = files
    src = tmp_path / "audio" / "mix"
    src.mkdir(parents=True)
    for name, blob in data.items():
        (src / f"spk01_{name}").write_bytes(blob)
    sf.write(src / "spk02_ref.wav", y, SR, subtype="PCM_16")
    (src / "spk03_junk.m4a").write_bytes(b"not audio\n" * 100)
    cat = base_catalog(tmp_path / "audio", tmp_path / "s.zarr")
    del cat["sources"][0]["pattern"]  # the default pattern covers both decoders' extensions
    loaded = load_catalog(write_catalog(tmp_path / "c.yaml", cat))
    assert loaded.catalog.sources[0].pattern == DEFAULT_PATTERN
    steps.run_catalog(loaded)
    state = read_state(StoreLocation(str(tmp_path / "s.zarr")))
    decoders = {r["path"]: r["decoder"] for r in state.table}
    assert decoders == {**{f"mix/spk01_{n}": "pyav" for n in data}, "mix/spk02_ref.wav": "soundfile"}
    (junk,) = state.rejects
    assert junk["path"] == "mix/spk03_junk.m4a" and "not a readable audio file" in junk["message"]
    # lossless ALAC in an m4a: the same samples as the WAV, so the same features, bit for bit
    from pipeline import open_dataset

    ds = open_dataset(str(tmp_path / "s.zarr"))
    row = {p: i for i, p in enumerate(ds.table["path"])}
    a, b = ds[row["mix/spk01_alac.m4a"]]["features"], ds[row["mix/spk02_ref.wav"]]["features"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
