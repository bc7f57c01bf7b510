"""``mfcc``: MFCCs from the log-mel spectrogram, as ``librosa.feature.mfcc``.

``librosa.feature.mfcc(y=...)`` computes ``power_to_db(melspectrogram(...))`` then a DCT
over the mel axis; here the DCT is a precomputed float64 matrix (built once per process)
applied to the time-major log-mel. With ``deltas: true`` the frame vector is
``[mfcc, delta_1, ..., delta_order]`` (``n_mfcc * (1 + delta_order)`` values), each delta
being ``librosa.feature.delta(mfcc, width=delta_width, order=k, mode=delta_mode)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from pipeline.errors import ConfigError
from pipeline.features._base import FeatureSpec
from pipeline.features.analysis import Analysis, StftParams
from pipeline.features.log_mel import power_to_db
from pipeline.features.mel import MelBandParams, MelNorm, check_bands, mel_basis_t, mel_power


class MfccParams(MelBandParams):
    """``features.mfcc``: librosa.feature.mfcc's keys; its mel settings are its own."""

    n_mfcc: int = Field(20, ge=1)
    dct_type: Literal[1, 2, 3] = 2
    norm: Literal["ortho"] | None = Field("ortho", description="DCT normalisation (mel_norm is the filterbank's)")
    lifter: float = Field(0.0, ge=0.0)
    mel_norm: MelNorm = "slaney"
    top_db: float | None = Field(80.0, ge=0.0, description="power_to_db floor before the DCT")
    deltas: bool = False
    delta_order: Literal[1, 2] = 2
    delta_width: int = Field(9, ge=3)
    delta_mode: Literal["interp", "nearest", "mirror", "constant", "wrap"] = "interp"

    @model_validator(mode="after")
    def _check(self) -> MfccParams:
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) must not exceed n_mels ({self.n_mels})")
        if self.delta_width % 2 != 1:
            raise ValueError(f"delta_width ({self.delta_width}) must be an odd integer >= 3")
        if self.dct_type == 1 and self.norm == "ortho" and self.n_mels < 2:
            raise ValueError("dct_type 1 needs n_mels >= 2")
        return self


@dataclass(frozen=True)
class MfccState:
    mel: MelBandParams
    basis_t: np.ndarray
    dct_t: np.ndarray
    """float64 [shape=(n_mels, n_mfcc)]: ``log_mel @ dct_t`` = scipy.fft.dct(...)[:n_mfcc]."""
    lift: np.ndarray | None


def _mel_of(p: MfccParams) -> MelBandParams:
    return MelBandParams(n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax, power=p.power, htk=p.htk, norm=p.mel_norm)


def prepare(p: MfccParams, stft: StftParams, sample_rate: int) -> MfccState:
    mel = _mel_of(p)
    eye = np.eye(p.n_mels, dtype=np.float64)
    import scipy.fft  # here, not at import: the flow's process validates catalogs without it

    dct_t = scipy.fft.dct(eye, type=p.dct_type, norm=p.norm, axis=0)[: p.n_mfcc].T.copy()
    lift = None
    if p.lifter > 0:
        li = np.sin(np.pi * np.arange(1, 1 + p.n_mfcc, dtype=np.float32) / np.float32(p.lifter))
        lift = (1 + np.float32(p.lifter / 2) * li).astype(np.float32)
    return MfccState(mel, mel_basis_t(mel, stft, sample_rate), dct_t, lift)


def check(p: MfccParams, stft: StftParams, sample_rate: int) -> list[str]:
    return check_bands(_mel_of(p), stft, sample_rate)


def frame_shape(p: MfccParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (p.n_mfcc * (1 + (p.delta_order if p.deltas else 0)),)


def labels(p: MfccParams, stft: StftParams, sample_rate: int) -> list[str]:
    static = [f"{i:02d}" for i in range(p.n_mfcc)]
    orders = range(1, 1 + p.delta_order) if p.deltas else ()
    return static + [f"d{k}_{s}" for k in orders for s in static]


def compute(ana: Analysis, p: MfccParams, st: MfccState) -> np.ndarray:
    log_mel = power_to_db(mel_power(ana, st.mel, st.basis_t), top_db=p.top_db)
    m = np.dot(log_mel.astype(np.float64), st.dct_t).astype(np.float32)
    if st.lift is not None:
        m *= st.lift
    if not p.deltas:
        return m
    if p.delta_mode == "interp" and m.shape[0] < p.delta_width:
        raise ConfigError(
            f"MFCC deltas with features.mfcc.delta_mode: interp need at least delta_width="
            f"{p.delta_width} frames, the clip has {m.shape[0]}: lower delta_width, use another "
            "delta_mode (e.g. nearest), or drop shorter clips"
        )
    import scipy.signal  # slow import: only when deltas are asked for

    parts = [m]
    for k in range(1, p.delta_order + 1):
        d = scipy.signal.savgol_filter(m, p.delta_width, deriv=k, polyorder=k, mode=p.delta_mode, axis=0)
        parts.append(d.astype(np.float32, copy=False))
    return np.concatenate(parts, axis=1)


SPEC = FeatureSpec(
    name="mfcc",
    params=MfccParams,
    compute=compute,
    frame_shape=frame_shape,
    prepare=prepare,
    check=check,
    labels=labels,
    doc="librosa.feature.mfcc (+ librosa.feature.delta)",
)
