import io

import librosa
import numpy as np
import pytest
import soundfile as sf

from pipeline.errors import AudioDecodeError
from pipeline.io.audio import decode, fix_length, resample, resampled_length, to_mono


def encode(y, sr, fmt="WAV", subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def test_decode_wav_and_flac_by_content_not_extension():
    y = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)
    flac = encode(y, 8000, "FLAC")
    d = decode(flac, "named.wav", max_seconds=10, max_channels=2)
    assert d.sample_rate == 8000 and d.channels == 1 and d.y.shape == (8000, 1)
    np.testing.assert_allclose(d.y[:, 0], y, atol=1 / 32768)


@pytest.mark.parametrize(
    "data,stage",
    [(b"", "read"), (b"this is plain text, not audio" * 10, "header"), (b"RIFF\x00\x00", "header")],
)
def test_bad_bytes_are_reported_with_stage(data, stage):
    with pytest.raises(AudioDecodeError) as ei:
        decode(data, "bad.wav", max_seconds=10, max_channels=2)
    assert ei.value.stage == stage
    assert "bad.wav" in str(ei.value)


def test_limits_are_checked_before_decoding():
    y = np.zeros((16000 * 3, 3), np.float32)
    data = encode(y, 16000)
    with pytest.raises(AudioDecodeError, match="max_channels"):
        decode(data, "x.wav", max_seconds=10, max_channels=2)
    with pytest.raises(AudioDecodeError, match="max_seconds"):
        decode(data, "x.wav", max_seconds=1, max_channels=8)


def test_nan_samples_rejected():
    y = np.zeros(1000, np.float32)
    y[10] = np.nan
    with pytest.raises(AudioDecodeError) as ei:
        decode(encode(y, 8000, subtype="FLOAT"), "nan.wav", max_seconds=10, max_channels=1)
    assert ei.value.stage == "samples"


def test_truncated_file_decodes_what_is_there():
    y = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    data = encode(y, 16000)
    d = decode(data[: 44 + 2 * 8000], "cut.wav", max_seconds=10, max_channels=1)
    assert d.y.shape[0] == 8000


def test_mono_and_resample_match_librosa():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((22050, 2)).astype(np.float32)
    m = to_mono(y)
    np.testing.assert_allclose(m, librosa.to_mono(y.T), rtol=1e-6)
    r = resample(m, 22050, 16000)
    np.testing.assert_allclose(r, librosa.resample(m, orig_sr=22050, target_sr=16000, res_type="soxr_hq"), rtol=1e-5, atol=1e-6)
    assert r.shape[0] <= resampled_length(22050, 22050, 16000)


def test_fix_length_modes():
    y = np.arange(10, dtype=np.float32)
    assert fix_length(y, 4, "start").tolist() == [0, 1, 2, 3]
    assert fix_length(y, 4, "center").tolist() == [3, 4, 5, 6]
    assert fix_length(y, 12, "start").tolist() == list(range(10)) + [0, 0]
    a = fix_length(y, 4, "random", np.random.default_rng(5))
    b = fix_length(y, 4, "random", np.random.default_rng(5))
    assert a.tolist() == b.tolist() and a[1] - a[0] == 1
