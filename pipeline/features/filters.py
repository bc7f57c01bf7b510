"""librosa's STFT window and mel filterbank, computed as librosa computes them.

``librosa.filters`` imports scipy.signal, scipy.ndimage (and scipy.stats with them) and
numba when it is imported: about 1.1 CPU-s in every process that computes features, paid
on the critical path of a run's start (the embedded cluster's fork server imports it before
it can fork a worker). The default features need none of that: a Hann window and a mel
filterbank are a few lines of numpy. These are the same operations in the same order as
``scipy.signal.get_window`` and ``librosa.filters.mel`` / ``librosa.mel_frequencies``
(librosa 0.11, scipy 1.16), so the arrays are bit-identical
(``tests/test_features_librosa.py`` compares them); any other window or a numeric mel
``norm`` is delegated to librosa itself.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

#: Windows computed here: ``scipy.signal.windows.general_hamming``'s alpha per name.
_COSINE_WINDOWS = {"hann": 0.5, "hamming": 0.54}


def get_window(window: Any, n: int, *, fftbins: bool = True) -> np.ndarray:
    """``librosa.filters.get_window(window, n, fftbins=fftbins)``: float64 [shape=(n,)]."""
    # n < 1 goes to scipy too: recent scipy raises ValueError, older (1.11) returns []
    if isinstance(window, str) and window in _COSINE_WINDOWS and int(n) == n and n >= 1:
        alpha = _COSINE_WINDOWS[window]
        # scipy.signal.windows._general_cosine_impl with a = [alpha, 1 - alpha]
        if n == 1:
            return np.ones(n, dtype=np.float64)
        m = n + 1 if fftbins else n
        a = np.asarray([alpha, 1.0 - alpha], dtype=np.float64)
        fac = np.linspace(-np.pi, np.pi, m, dtype=np.float64)
        w = np.zeros(m, dtype=np.float64)
        for k in range(a.shape[0]):
            w += a[k] * np.cos(k * fac)
        return w[:-1] if fftbins else w
    import librosa

    return librosa.filters.get_window(window, n, fftbins=fftbins)


def pad_center(data: np.ndarray, *, size: int) -> np.ndarray:
    """``librosa.util.pad_center`` along the last axis: zero-pad both sides to ``size``."""
    n = data.shape[-1]
    lpad = int((size - n) // 2)
    if lpad < 0:
        raise ValueError(f"Target size ({size:d}) must be at least input size ({n:d})")
    lengths = [(0, 0)] * data.ndim
    lengths[-1] = (lpad, int(size - n - lpad))
    return np.pad(data, lengths, mode="constant")


def fft_frequencies(*, sr: float, n_fft: int) -> np.ndarray:
    """``librosa.fft_frequencies``: centre frequency of each STFT bin, Hz."""
    return np.fft.rfftfreq(n=n_fft, d=1.0 / sr)


def hz_to_mel(frequencies, *, htk: bool = False):
    """``librosa.hz_to_mel`` (Slaney's scale, or HTK's with ``htk``)."""
    frequencies = np.asanyarray(frequencies)
    if htk:
        return 2595.0 * np.log10(1.0 + frequencies / 700.0)
    f_min = 0.0
    f_sp = 200.0 / 3
    mels = (frequencies - f_min) / f_sp
    min_log_hz = 1000.0
    min_log_mel = (min_log_hz - f_min) / f_sp
    logstep = np.log(6.4) / 27.0
    if frequencies.ndim:
        log_t = frequencies >= min_log_hz
        mels[log_t] = min_log_mel + np.log(frequencies[log_t] / min_log_hz) / logstep
    elif frequencies >= min_log_hz:
        mels = min_log_mel + np.log(frequencies / min_log_hz) / logstep
    return mels


def mel_to_hz(mels, *, htk: bool = False):
    """``librosa.mel_to_hz``."""
    mels = np.asanyarray(mels)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_min = 0.0
    f_sp = 200.0 / 3
    freqs = f_min + f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = (min_log_hz - f_min) / f_sp
    logstep = np.log(6.4) / 27.0
    if mels.ndim:
        log_t = mels >= min_log_mel
        freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    elif mels >= min_log_mel:
        freqs = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return freqs


def mel_frequencies(n_mels: int, *, fmin: float, fmax: float, htk: bool = False) -> np.ndarray:
    """``librosa.mel_frequencies``: ``n_mels`` frequencies evenly spaced on the mel scale, Hz."""
    mels = np.linspace(hz_to_mel(fmin, htk=htk), hz_to_mel(fmax, htk=htk), n_mels)
    return mel_to_hz(mels, htk=htk)


def mel(*, sr: float, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None, htk: bool = False,
        norm: Any = "slaney", dtype: Any = np.float32) -> np.ndarray:
    """``librosa.filters.mel``: the mel filterbank [shape=(n_mels, 1 + n_fft // 2)]."""
    if norm is not None and not (isinstance(norm, str) and norm == "slaney"):
        import librosa  # another norm (a p-norm, or a name librosa rejects): librosa's own path

        return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm, dtype=dtype)
    if fmax is None:
        fmax = float(sr) / 2
    n_mels = int(n_mels)
    weights = np.zeros((n_mels, int(1 + n_fft // 2)), dtype=dtype)
    fftfreqs = fft_frequencies(sr=sr, n_fft=n_fft)
    mel_f = mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax, htk=htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    if norm == "slaney":
        enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
        weights *= enorm[:, np.newaxis]
    if not np.all((mel_f[:-2] == 0) | (weights.max(axis=1) > 0)):
        warnings.warn(
            "Empty filters detected in mel frequency basis. Some channels will produce empty responses. "
            "Try increasing your sampling rate (and fmax) or reducing n_mels.",
            stacklevel=2,
        )
    return weights
