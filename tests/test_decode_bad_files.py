"""Bad files at decode time: decompression bombs, absurd sample rates, truncated and
unknown-length streams, text under an audio extension. Real libsndfile codecs throughout."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from pipeline.errors import AudioDecodeError
from pipeline.io import audio


def encode(y, sr, fmt="WAV", subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def zeros_flac(sr, channels, seconds):
    """A FLAC of digital silence, written block by block (no whole-file array)."""
    buf = io.BytesIO()
    block = np.zeros((sr, channels), np.int16)
    with sf.SoundFile(buf, "w", samplerate=sr, channels=channels, format="FLAC", subtype="PCM_16") as f:
        for _ in range(seconds):
            f.write(block)
    return buf.getvalue()


def noise(n, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (n, channels)).astype(np.float32)


def unknown_length(flac: bytes) -> bytes:
    """The same FLAC with STREAMINFO's total-samples field zeroed, as a streaming encoder writes it."""
    b = bytearray(flac)
    assert b[:4] == b"fLaC" and b[4] & 0x7F == 0  # STREAMINFO first
    v = int.from_bytes(b[18:26], "big") & ~((1 << 36) - 1)
    b[18:26] = v.to_bytes(8, "big")
    return bytes(b)


def test_absurd_sample_rate_is_refused_before_decoding():
    data = zeros_flac(655_350, 8, 2)
    with pytest.raises(AudioDecodeError) as ei:
        audio.decode(data, "bomb/655k.flac", max_seconds=600, max_channels=8)
    e = ei.value
    assert type(e).__name__ == "SampleRateTooHigh" and e.stage == "limits"
    assert str(e).startswith("bomb/655k.flac: limits: sample rate 655350 Hz > audio.max_source_sample_rate=384000")
    # the limit is a parameter: a caller allowing the rate decodes it
    d = audio.decode(data, "bomb/655k.flac", max_seconds=600, max_channels=8, max_sample_rate=655_350, mono=True)
    assert d.frames == 2 * 655_350 and d.y.shape == (2 * 655_350, 1) and not d.y.any()


def test_header_declaring_far_more_than_the_bytes_hold_is_refused():
    data = zeros_flac(16_000, 8, 300)  # 76.8 MB of PCM in a few KB
    assert len(data) * 64 < 300 * 16_000 * 8 * 2
    with pytest.raises(AudioDecodeError) as ei:
        audio.decode(data, "bomb/zip.flac", max_seconds=600, max_channels=8)
    e = ei.value
    assert type(e).__name__ == "ImplausibleHeader" and e.stage == "limits"
    assert str(e).startswith("bomb/zip.flac: limits: header declares 76.8 MB of samples (300.0 s x 16000 Hz x 8 ch)")
    # a short silent file (below the floor) is decoded, not refused
    d = audio.decode(zeros_flac(16_000, 2, 1), "quiet.flac", max_seconds=600, max_channels=8)
    assert d.frames == 16_000 and not d.y.any()


def test_mono_decoding_holds_one_channel_and_one_block():
    y = noise(16_000 * 40, 8)
    data = encode(y, 16_000, "FLAC")
    full = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0]
    tracemalloc.start()
    try:
        d = audio.decode(data, "eight.flac", max_seconds=600, max_channels=8, mono=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert d.channels == 8 and d.frames == y.shape[0] and d.y.shape == (y.shape[0], 1)
    np.testing.assert_array_equal(d.y[:, 0], full.mean(axis=1, dtype=np.float32))
    # the 8-channel float32 decode is 20.5 MB; mono (2.6 MB, twice while joined) plus one block
    assert peak < full.nbytes / 2, peak


def test_truncated_wav_keeps_what_decodes_and_is_flagged():
    y = noise(16_000)
    data = encode(y, 16_000)
    whole = audio.decode(data, "cut.wav", max_seconds=10, max_channels=1)
    assert whole.frames == 16_000 and not whole.truncated
    d = audio.decode(data[: 44 + 2 * 8000 + 1], "cut.wav", max_seconds=10, max_channels=1)
    assert d.frames == 8000 and d.truncated
    np.testing.assert_array_equal(d.y, whole.y[:8000])
    assert audio.wav_declared_frames(data[:100]) == 16_000


def test_truncated_flac_keeps_the_frames_before_the_damage():
    y = noise(160_000)
    data = encode(y, 16_000, "FLAC")
    whole = audio.decode(data, "cut.flac", max_seconds=20, max_channels=1)
    d = audio.decode(data[: len(data) // 2], "cut.flac", max_seconds=20, max_channels=1)
    assert d.truncated and d.frames == 77_824  # 19 whole FLAC frames of 4096
    np.testing.assert_array_equal(d.y, whole.y[: d.frames])


def test_flac_of_unknown_length_is_measured_by_decoding_up_to_max_seconds():
    y = noise(40_000)
    data = unknown_length(encode(y, 16_000, "FLAC"))
    with sf.SoundFile(io.BytesIO(data)) as f:
        assert audio.length_unknown(f.frames)
    d = audio.decode(data, "stream.flac", max_seconds=10, max_channels=1)
    assert d.frames == 40_000 and not d.truncated
    np.testing.assert_array_equal(d.y[:, 0], audio.decode(encode(y, 16_000, "FLAC"), "x", max_seconds=10, max_channels=1).y[:, 0])
    with pytest.raises(AudioDecodeError) as ei:
        audio.decode(data, "stream.flac", max_seconds=2, max_channels=1)
    assert ei.value.stage == "limits" and str(ei.value).startswith("stream.flac: limits: more than audio.max_seconds=2 s")
    assert audio.planned_frames(2**63 - 1, 16_000, 2.5) == 40_000 and audio.planned_frames(123, 16_000, 2.5) == 123


@pytest.mark.parametrize("ext", ["mp3", "ogg", "flac"])
def test_text_under_any_audio_extension_gets_the_wav_message(tmp_path, ext):
    text = b"hello, I am not audio\n" * 20
    with pytest.raises(AudioDecodeError) as as_wav:
        audio.decode(text, "notes.wav", max_seconds=10, max_channels=2)
    with pytest.raises(AudioDecodeError) as as_other:
        audio.decode(text, f"notes.{ext}", max_seconds=10, max_channels=2)
    assert as_wav.value.stage == as_other.value.stage == "header"
    assert str(as_other.value) == str(as_wav.value).replace("notes.wav", f"notes.{ext}")
    assert "BytesIO" not in str(as_wav.value) and "not a recognised audio format" in str(as_wav.value)
    # the header probe opens local paths itself, where libsndfile says "possibly a pipe?" for .mp3
    messages = []
    for name in ("notes.wav", f"notes.{ext}"):
        (tmp_path / name).write_bytes(text)
        with pytest.raises(sf.LibsndfileError) as ei:
            sf.SoundFile(str(tmp_path / name))
        messages.append(audio.describe_open_error(ei.value))
    assert messages[0] == messages[1] and "pipe" not in messages[1] and str(tmp_path) not in messages[1]


def test_header_limits_problem_gives_the_planner_a_reject_row():
    from types import SimpleNamespace

    def head(data):
        with sf.SoundFile(io.BytesIO(data)) as f:
            return SimpleNamespace(sample_rate=f.samplerate, channels=f.channels, frames=f.frames, format=f.format, subtype=f.subtype)

    rate = zeros_flac(655_350, 8, 1)
    stage, cls, msg = audio.header_limits_problem(head(rate), len(rate), max_channels=8)
    assert (stage, cls) == ("limits", "SampleRateTooHigh") and msg.startswith("sample rate 655350 Hz > audio.max_source_sample_rate=384000")
    bomb = zeros_flac(16_000, 8, 300)
    stage, cls, msg = audio.header_limits_problem(head(bomb), len(bomb), max_channels=8)
    assert (stage, cls) == ("limits", "ImplausibleHeader") and msg.startswith("header declares 76.8 MB of samples")
    ok = encode(noise(16_000), 16_000, "FLAC")
    assert audio.header_limits_problem(head(ok), len(ok), max_channels=8) is None
    stream = unknown_length(ok)
    assert audio.header_limits_problem(head(stream), len(stream), max_channels=8) is None  # measured when decoded
