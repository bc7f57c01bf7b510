"""Every feature equals librosa called directly on the same signal and parameters.

Tolerances (see docs/features.md, "Numerical agreement"): the shared STFT is bit-identical
to ``librosa.stft``; what differs is float32 summation order in matrix products and
reductions. Linear-scale features: ``rtol=1e-4`` plus ``atol`` = 1e-6 of the clip's largest
value (float32 round-off of near-zero bins). dB-scale features (log_mel, MFCC): ``atol``
1e-3 dB (librosa's MFCC DCT runs in float32). Frequencies in Hz: ``rtol=1e-4``.
"""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import pytest
from numpy.testing import assert_allclose

from pipeline.features import FeaturesConfig, build_feature_set

SAMPLE_RATES = (16000, 22050)
STFTS = ({"n_fft": 400, "hop_length": 160}, {"n_fft": 2048, "hop_length": 512})


def sine(sr: int, freq: float = 440.0, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(sr: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(sr * seconds))).astype(np.float32)


def speechy(sr: int, seconds: float = 1.0) -> np.ndarray:
    """A glide with amplitude modulation, a digital-silence head and a noise floor."""
    t = np.arange(int(sr * seconds)) / sr
    y = 0.3 * np.sin(2 * np.pi * (150 + 50 * t) * t) * (1 + np.sin(2 * np.pi * 3 * t))
    y += 0.01 * np.random.default_rng(1).standard_normal(t.size)
    y[: sr // 8] = 0.0
    return y.astype(np.float32)


SIGNALS = {"sine": sine, "noise": noise, "speechy": speechy}


def features(sr: int, stft: dict, **feats) -> dict[str, np.ndarray]:
    return build_feature_set(FeaturesConfig.model_validate({"stft": stft, **feats}), sr)


def linear_close(ours: np.ndarray, ref: np.ndarray) -> None:
    """Compare time-major ``ours`` with librosa's (feature, time) output."""
    assert ours.dtype == np.float32
    assert ours.shape == ref.T.shape
    assert_allclose(ours.T, ref, rtol=1e-4, atol=1e-6 * float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def computed():
    """All features for every (signal, sample rate, STFT), computed once for the module."""
    out = {}
    for name, make in SIGNALS.items():
        for sr in SAMPLE_RATES:
            y = make(sr)
            for i, stft in enumerate(STFTS):
                fs = features(
                    sr,
                    stft,
                    spectrogram={"power": 1.0},
                    mel={},
                    log_mel={},
                    mfcc={},
                    chroma={},
                    spectral_centroid={},
                    spectral_bandwidth={},
                    spectral_rolloff={},
                    spectral_flatness={},
                    spectral_contrast={"fmin": 100.0},
                    zero_crossing_rate={},
                    rms={},
                )
                out[name, sr, i] = (y, fs.compute(y))
    return out


CASES = [(s, sr, i) for s in SIGNALS for sr in SAMPLE_RATES for i in range(len(STFTS))]
IDS = [f"{s}-{sr}-nfft{STFTS[i]['n_fft']}" for s, sr, i in CASES]


# some cases ask for more mel bands than the FFT resolves, which librosa allows (with a warning)
@pytest.mark.filterwarnings("ignore:Empty filters detected in mel frequency basis:UserWarning")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_feature_equals_librosa(computed, case):
    name, sr, i = case
    y, f = computed[case]
    kw = dict(STFTS[i])
    n_fft, hop = kw["n_fft"], kw["hop_length"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa: empty mel filters at n_fft=400, 128 mels
        linear_close(f["spectrogram"], np.abs(librosa.stft(y, **kw)))
        linear_close(f["mel"], librosa.feature.melspectrogram(y=y, sr=sr, **kw))
        ref_db = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=80, **kw))
        assert_allclose(f["log_mel"].T, ref_db, rtol=0, atol=1e-3)
        ref_mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, **kw)
        assert_allclose(f["mfcc"].T, ref_mfcc, rtol=1e-4, atol=1e-3)
    linear_close(f["chroma"], librosa.feature.chroma_stft(y=y, sr=sr, tuning=0.0, **kw))
    linear_close(f["spectral_centroid"], librosa.feature.spectral_centroid(y=y, sr=sr, **kw))
    linear_close(f["spectral_bandwidth"], librosa.feature.spectral_bandwidth(y=y, sr=sr, **kw))
    linear_close(f["spectral_rolloff"], librosa.feature.spectral_rolloff(y=y, sr=sr, **kw))
    linear_close(f["spectral_flatness"], librosa.feature.spectral_flatness(y=y, **kw))
    linear_close(f["spectral_contrast"], librosa.feature.spectral_contrast(y=y, sr=sr, fmin=100.0, **kw))
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop)
    assert_allclose(f["zero_crossing_rate"].T, zcr, rtol=1e-6, atol=0)
    linear_close(f["rms"], librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop))
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in f.values())


@pytest.mark.parametrize("sr", SAMPLE_RATES)
@pytest.mark.parametrize("i", range(len(STFTS)))
def test_sine_known_answers(computed, sr, i):
    _, f = computed["sine", sr, i]
    inner = slice(3, -3)  # frames away from the zero-padded edges
    bin_hz = sr / STFTS[i]["n_fft"]
    centroid = f["spectral_centroid"][inner, 0]
    assert np.all(np.abs(centroid - 440.0) < 1.0), (centroid.min(), centroid.max())
    chroma = f["chroma"][inner].mean(axis=0)
    assert int(np.argmax(chroma)) == 9  # C-based: index 9 is A
    assert chroma[9] == pytest.approx(1.0)
    rolloff = f["spectral_rolloff"][inner, 0]
    assert np.all((rolloff >= 440.0) & (rolloff <= 440.0 + 2 * bin_hz))
    rms = f["rms"][inner, 0]
    assert_allclose(rms, 0.5 / np.sqrt(2), rtol=2e-3)  # sine of amplitude 0.5
    zcr = f["zero_crossing_rate"][inner, 0]
    assert_allclose(zcr, 2 * 440.0 / sr, atol=1.5 / STFTS[i]["n_fft"])
    assert np.all(f["spectral_flatness"][inner, 0] < 1e-3)


def test_noise_is_flat_and_broadband(computed):
    _, f = computed["noise", 16000, 0]
    assert np.median(f["spectral_flatness"]) > 0.4
    assert 3000 < np.median(f["spectral_centroid"]) < 5000  # white noise: near sr/4


@pytest.mark.parametrize(
    "stft",
    [
        {"n_fft": 512, "hop_length": 128, "center": False},
        {"n_fft": 512, "hop_length": 100, "pad_mode": "reflect"},
        {"n_fft": 511, "hop_length": 128, "pad_mode": "edge"},
        {"n_fft": 512, "hop_length": 128, "win_length": 300, "window": "hamming"},
        {"n_fft": 512, "hop_length": 128, "window": ["kaiser", 8.0]},
    ],
    ids=["uncentered", "reflect", "odd-nfft-edge", "short-hamming", "kaiser"],
)
def test_stft_options_match_librosa(stft, sr=22050):
    y = speechy(sr)
    fs = features(sr, stft, spectrogram={"power": 2.0}, log_mel={}, rms={}, zero_crossing_rate={}, spectral_centroid={})
    f = fs.compute(y)
    window = tuple(stft["window"]) if isinstance(stft.get("window"), list) else stft.get("window", "hann")
    kw = {**stft, "window": window}
    lib_rms_kw = {k: stft[k] for k in ("center", "pad_mode") if k in stft}
    zcr_kw = {"center": stft["center"]} if "center" in stft else {}
    assert f["spectrogram"].shape[0] == fs.n_frames(y.shape[0])
    linear_close(f["spectrogram"], np.abs(librosa.stft(y, **kw)) ** 2)
    ref_db = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=80, **kw))
    assert_allclose(f["log_mel"].T, ref_db, atol=1e-3)
    linear_close(f["spectral_centroid"], librosa.feature.spectral_centroid(y=y, sr=sr, **kw))
    rms = librosa.feature.rms(y=y, frame_length=stft["n_fft"], hop_length=stft["hop_length"], **lib_rms_kw)
    linear_close(f["rms"], rms)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=stft["n_fft"], hop_length=stft["hop_length"], **zcr_kw)
    assert_allclose(f["zero_crossing_rate"].T, zcr, rtol=1e-6)


def test_feature_options_match_librosa(sr=16000):
    y = speechy(sr)
    kw = {"n_fft": 512, "hop_length": 160}
    fs = features(
        sr,
        kw,
        mel={"n_mels": 40, "fmin": 50.0, "fmax": 7000.0, "htk": True, "norm": None, "power": 1.0},
        log_mel={"n_mels": 64, "ref": "max", "top_db": None, "amin": 1e-5},
        mfcc={"n_mfcc": 13, "n_mels": 40, "lifter": 22, "dct_type": 3, "deltas": True, "delta_order": 2},
        chroma={"n_chroma": 24, "norm": 2.0, "tuning": 0.1, "octwidth": None},
        spectral_bandwidth={"p": 3.0},
        spectral_rolloff={"roll_percent": 0.5},
        spectral_flatness={"power": 1.0, "amin": 1e-6},
        spectral_contrast={"fmin": 150.0, "n_bands": 4, "quantile": 0.1, "linear": True},
        zero_crossing_rate={"zero_pos": False, "threshold": 1e-3},
    )
    f = fs.compute(y)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=40, fmin=50, fmax=7000, htk=True, norm=None, power=1.0, **kw)
    linear_close(f["mel"], mel)
    S = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=64, **kw)
    assert_allclose(f["log_mel"].T, librosa.power_to_db(S, ref=np.max, top_db=None, amin=1e-5), atol=1e-3)
    m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13, n_mels=40, lifter=22, dct_type=3, **kw)
    ref = np.concatenate([m, librosa.feature.delta(m, width=9, order=1), librosa.feature.delta(m, width=9, order=2)])
    assert f["mfcc"].shape[1] == 39 and fs.frame_shapes()["mfcc"] == (39,)
    assert_allclose(f["mfcc"].T, ref, rtol=1e-4, atol=2e-3)
    ref = librosa.feature.chroma_stft(y=y, sr=sr, n_chroma=24, norm=2.0, tuning=0.1, octwidth=None, **kw)
    linear_close(f["chroma"], ref)
    linear_close(f["spectral_bandwidth"], librosa.feature.spectral_bandwidth(y=y, sr=sr, p=3.0, **kw))
    linear_close(f["spectral_rolloff"], librosa.feature.spectral_rolloff(y=y, sr=sr, roll_percent=0.5, **kw))
    linear_close(f["spectral_flatness"], librosa.feature.spectral_flatness(y=y, power=1.0, amin=1e-6, **kw))
    ref = librosa.feature.spectral_contrast(y=y, sr=sr, fmin=150.0, n_bands=4, quantile=0.1, linear=True, **kw)
    linear_close(f["spectral_contrast"], ref)
    ref = librosa.feature.zero_crossing_rate(y, frame_length=512, hop_length=160, zero_pos=False, threshold=1e-3)
    assert_allclose(f["zero_crossing_rate"].T, ref, rtol=1e-6)


def test_chroma_tuning_estimate_matches_librosa_default(sr=22050):
    y = sine(sr, freq=440.0 * 2 ** (0.3 / 12))  # 30 cents sharp
    kw = {"n_fft": 2048, "hop_length": 512}
    f = features(sr, kw, chroma={"tuning": "estimate"}).compute(y)
    linear_close(f["chroma"], librosa.feature.chroma_stft(y=y, sr=sr, **kw))  # librosa estimates by default


def test_silence_gives_finite_librosa_values(sr=16000):
    y = np.zeros(sr // 2, dtype=np.float32)
    kw = {"n_fft": 400, "hop_length": 160}
    f = features(sr, kw, spectral_centroid={}, spectral_bandwidth={}, spectral_rolloff={}, chroma={}, rms={}).compute(y)
    assert all(np.isfinite(v).all() for v in f.values())
    linear_close(f["spectral_centroid"], librosa.feature.spectral_centroid(y=y, sr=sr, **kw))
    linear_close(f["spectral_bandwidth"], librosa.feature.spectral_bandwidth(y=y, sr=sr, **kw))
    linear_close(f["spectral_rolloff"], librosa.feature.spectral_rolloff(y=y, sr=sr, **kw))
    linear_close(f["chroma"], librosa.feature.chroma_stft(y=y, sr=sr, tuning=0.0, **kw))
    assert not f["rms"].any()


# pipeline.features.filters computes the window and the mel filterbank without importing
# librosa.filters (scipy.signal, numba): the arrays must be librosa's, bit for bit.
@pytest.mark.parametrize("window", ["hann", "hamming", ("kaiser", 4.0), "blackman"])
@pytest.mark.parametrize("n", [1, 2, 7, 400, 512, 2048])
@pytest.mark.parametrize("fftbins", [True, False])
def test_window_is_librosas_bit_for_bit(window, n, fftbins):
    from pipeline.features import filters

    # a length of 0: recent scipy raises ValueError, older (1.11) returns an empty window
    outcomes = []
    for f in (filters.get_window, librosa.filters.get_window):
        try:
            outcomes.append(f(window, 0, fftbins=fftbins).tobytes())
        except ValueError:
            outcomes.append(ValueError)
    assert outcomes[0] == outcomes[1]
    ours = filters.get_window(window, n, fftbins=fftbins)
    theirs = librosa.filters.get_window(window, n, fftbins=fftbins)
    assert ours.dtype == theirs.dtype and ours.tobytes() == theirs.tobytes()


# some cases ask for more mel bands than the FFT resolves, which librosa allows (with a warning)
@pytest.mark.filterwarnings("ignore:Empty filters detected in mel frequency basis:UserWarning")
@pytest.mark.parametrize("sr, n_fft", [(16000, 400), (22050, 2048), (8000, 256), (44100, 1024)])
@pytest.mark.parametrize("n_mels, fmin, fmax", [(80, 0.0, None), (128, 30.0, 7600.0), (40, 300.0, 3000.0), (13, 0.0, 4000.0)])
@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("norm", ["slaney", None, 2.0, np.inf])
def test_mel_filterbank_is_librosas_bit_for_bit(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    from pipeline.features import filters

    if fmax is not None and fmax > sr / 2:
        fmax = sr / 2
    ours = filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape and ours.tobytes() == theirs.tobytes()
    np.testing.assert_array_equal(filters.fft_frequencies(sr=sr, n_fft=n_fft), librosa.fft_frequencies(sr=sr, n_fft=n_fft))
    np.testing.assert_array_equal(filters.mel_frequencies(n_mels, fmin=fmin, fmax=fmax or sr / 2, htk=htk),
                                  librosa.mel_frequencies(n_mels, fmin=fmin, fmax=fmax or sr / 2, htk=htk))


def test_empty_mel_filters_warn_as_librosa():
    from pipeline.features import filters

    with pytest.warns(UserWarning, match="Empty filters"):
        filters.mel(sr=8000, n_fft=64, n_mels=128)


def test_pad_center_is_librosas():
    from pipeline.features import filters

    w = np.hanning(301)
    assert filters.pad_center(w, size=512).tobytes() == librosa.util.pad_center(w, size=512).tobytes()
    with pytest.raises(ValueError):
        filters.pad_center(w, size=300)


def test_the_default_features_do_not_import_librosa_filters():
    """The fork server and every worker import what the default features need: no
    librosa.filters, scipy.signal or numba (about 1.1 CPU-s per process)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from pipeline.features import FeaturesConfig, build_feature_set\n"
        "build_feature_set(FeaturesConfig(), 16000).compute(np.zeros(16000, np.float32))\n"
        "print(sorted(m for m in ('librosa.filters', 'scipy.signal', 'numba') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
