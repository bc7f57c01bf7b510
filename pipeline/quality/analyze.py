"""All quality measurements of one example, its flags and the rules' verdicts.

:func:`measure` is what a partition task calls once per example (on the original, not on
its augmented copies, which carry their source's values).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.features.analysis import Analysis, StftPlan
from pipeline.quality import _kernels, _xxh3
from pipeline.quality import fingerprint as fp
from pipeline.quality import loudness as ld
from pipeline.quality.config import QualityConfig, Vad
from pipeline.quality.metrics import (
    LEAKAGE_DB_PER_BIN,
    NOISE_QUANTILE,
    bias_of,
    clipping_fraction,
    peak_abs,
    power_db,
    sample_summary,
    snr_from_terms,
    snr_width,
    summary_args,
    summary_of,
    vad_frame,
)
from pipeline.quality.rules import parse_rule
from pipeline.quality.spectrum import Spectra, default_plan, pass_constants, skip_steps

#: the example table's float columns measured per example (docs/quality.md); NaN = not measured
METRIC_COLUMNS = (
    "peak_dbfs", "rms_dbfs", "loudness_lufs", "dc_offset", "clipping_fraction",
    "speech_fraction", "silence_fraction", "snr_db", "bandwidth_hz",
)
#: bump when a metric's definition changes: recorded in the store's provenance.
#: 2: SNR, bandwidth, loudness and fingerprint read the features' STFT, not a 128 ms one;
#: pcm_hash is CRC-32C-based. 3: pcm_hash is XXH3-128 (other metrics as in 2, to rounding)
METRICS_VERSION = 3
QUALITY_FLAGS = ("clipped", "mostly_silent", "low_snr", "narrowband", "quality", "duplicate")


@dataclass(frozen=True)
class Measured:
    metrics: dict[str, float]
    pcm_hash: str
    codes: np.ndarray
    """Fingerprint: one int32 per frame (pipeline.quality.fingerprint)."""
    keys: tuple[np.ndarray, np.ndarray]
    frame_seconds: float


def measure(y_decoded: np.ndarray, y: np.ndarray, sample_rate: int, cfg: QualityConfig, analysis: Analysis | None = None) -> Measured:
    """Measure one example.

    Parameters
    ----------
    y_decoded : (n0,) mono samples as decoded, before resampling (clipping and peak are
        measured there: resampling rings around the rails).
    y : (n,) the same audio resampled to ``sample_rate`` (everything else).
    analysis : the feature set's :class:`Analysis` of ``y``
        (:meth:`pipeline.features.feature_set.FeatureSet.analyze`): its power spectrum is
        reused, and what is computed here is kept for the features. Default: an analysis
        with ``features.stft`` at its defaults.
    """
    if analysis is None:
        analysis = Analysis(np.ascontiguousarray(y, dtype=np.float32), default_plan(sample_rate))
    elif analysis.plan.sample_rate != sample_rate or analysis.y.shape[0] != y.shape[0]:
        raise ValueError(f"the analysis is of {analysis.y.shape[0]} samples at {analysis.plan.sample_rate} Hz, "
                         f"not of this clip ({y.shape[0]} at {sample_rate})")
    # the samples first, levels and hash in one call (two loops back to back, the second from
    # cache), then the spectrum (which takes the features' STFT now if no feature has yet:
    # its framing reads the samples again)
    if y.shape[0]:
        x = y if y.dtype == np.float32 and y.flags.c_contiguous else np.ascontiguousarray(y, dtype=np.float32)
        hashed = 4 * x.shape[0] >= _xxh3.MIN_BYTES
        sums, high, low = _kernels.sample_metrics(x, x.view(np.uint32), *_vad_args(sample_rate, cfg.vad), hashed)
        levels = summary_of(y, x, sums)
        digest = fp.xxh3_hex(int(high), int(low)) if hashed else fp.pcm_hash(x)
    else:
        vad = cfg.vad
        levels = sample_summary(y, vad_frame(sample_rate, vad.frame_seconds), speech_dbfs=vad.speech_dbfs, silence_dbfs=vad.silence_dbfs)
        digest = fp.pcm_hash(y)
    loudness, snr, bandwidth, codes, keys, frame_seconds = _spectral(analysis.spectrum(2.0), analysis.plan, y.shape[0],
                                                                     cfg.bandwidth_floor_db)
    # clipping and peak on the audio as decoded: the same samples (one read) unless resampled
    peak = levels.peak if y_decoded is y else peak_abs(y_decoded)
    metrics = {
        "peak_dbfs": power_db(peak * peak),
        "rms_dbfs": levels.rms_dbfs,
        "loudness_lufs": loudness,
        "dc_offset": levels.dc_offset,
        "clipping_fraction": clipping_fraction(y_decoded, peak=peak),
        "speech_fraction": levels.speech_fraction,
        "silence_fraction": levels.silence_fraction,
        "snr_db": snr,
        "bandwidth_hz": bandwidth,
    }
    return Measured(metrics, digest, codes, keys, frame_seconds)


@lru_cache(maxsize=32)
def _vad_args(sample_rate: int, vad: Vad) -> tuple[int, float, float]:
    """``(frame, speech power, silence power)`` of the VAD settings (fixed per run)."""
    return summary_args(np.zeros(0, np.float32), vad_frame(sample_rate, vad.frame_seconds), vad.speech_dbfs, vad.silence_dbfs)[1:]


def _spectral(power: np.ndarray, plan: StftPlan, n_samples: int, floor_db: float
              ) -> tuple[float, float, float, np.ndarray, tuple[np.ndarray, np.ndarray], float]:
    """``(loudness_lufs, snr_db, bandwidth_hz, codes, sketch keys, frame_seconds)`` of a
    clip's power spectrum (``Analysis.spectrum(2.0)`` through ``plan``) in one compiled
    call: the values :func:`~pipeline.quality.loudness.spectral_loudness`,
    :func:`~pipeline.quality.metrics.snr_db`, :func:`~pipeline.quality.metrics.bandwidth_hz`,
    :func:`~pipeline.quality.fingerprint.fingerprint` and :func:`~pipeline.quality.fingerprint.sketch`
    give one by one (tests/test_quality_metrics.py), from the same kernels."""
    power = power if power.flags.c_contiguous else np.ascontiguousarray(power)
    fixed, edge_frames, stride, bias, freqs, frame_seconds = _spectral_constants(plan, power.shape[1], floor_db)
    loudness, total, floor, n_blocks, band, codes, keys, frames = _kernels.spectral_metrics(
        power, skip_steps(power.shape[0], stride, edge_frames), n_samples, *fixed)
    bandwidth = float(freqs[band]) if band >= 0 else float("nan")
    return float(loudness), snr_from_terms(total, floor, n_blocks, bias), bandwidth, codes, (keys, frames), frame_seconds


@lru_cache(maxsize=32)
def _spectral_constants(plan: StftPlan, n_bins: int, floor_db: float) -> tuple:
    """What :func:`_spectral` passes that is fixed per STFT plan and ``bandwidth_floor_db``
    (plans are per process: cached by identity)."""
    spectra = Spectra.of_plan(np.zeros((0, n_bins), np.float32), plan, 0)
    sr, bin_hz, hop = spectra.sample_rate, spectra.bin_hz, spectra.hop
    stride, block_steps, block_bins, weights, lo, hi = pass_constants(sr, hop, n_bins, bin_hz)
    fixed = (weights, lo, hi, stride, block_steps, block_bins,
             spectra.scale / stride, float(spectra.first_centre), hop, int(round(ld.BLOCK_SECONDS * sr)), int(round(ld.STEP_SECONDS * sr)),
             ld.ABSOLUTE_GATE_LUFS, ld.RELATIVE_GATE_LU, ld.LOUDNESS_FLOOR_LUFS,
             NOISE_QUANTILE, snr_width(bin_hz, block_bins), 10.0 ** (-floor_db / 10.0), 10.0 ** (LEAKAGE_DB_PER_BIN / 10.0),
             fp.POOL_STEPS, fp.LAG_FRAMES, 10.0 ** (-fp.ACTIVE_RANGE_DB / 10.0), fp.abs_floor(stride, spectra.scale),
             10.0 ** (-fp.BAND_RANGE_DB / 10.0), fp.MIN_BANDS, fp.SKETCH_KEYS, fp.INACTIVE)
    return fixed, spectra.edge_frames, stride, bias_of(spectra), spectra.freqs_hz, stride * hop / sr


def rule_values(metrics: dict[str, float], **others: float) -> dict[str, float]:
    """The names a rule can read: the metrics plus ``sample_rate``, ``duration_seconds``, ..."""
    return {**metrics, **others}


def quality_flags(values: dict[str, float], cfg: QualityConfig) -> list[str]:
    """The built-in flags (thresholds in ``quality.flags``) and ``quality`` for ``flag_if``."""
    t = cfg.flags
    out = []
    if values["clipping_fraction"] > t.clipped_fraction:
        out.append("clipped")
    if values["silence_fraction"] > t.mostly_silent_fraction:
        out.append("mostly_silent")
    if values["snr_db"] < t.low_snr_db:
        out.append("low_snr")
    if values["bandwidth_hz"] < t.narrowband_ratio * values["sample_rate"]:
        out.append("narrowband")
    if cfg.flag_if and parse_rule(cfg.flag_if)(values):
        out.append("quality")
    return out


def rejected_by(values: dict[str, float], cfg: QualityConfig) -> str | None:
    """A message naming the rule and the values it read, when ``reject_if`` is true; else None."""
    if not cfg.reject_if:
        return None
    rule = parse_rule(cfg.reject_if)
    if not rule(values):
        return None
    shown = ", ".join(f"{k}={values[k]:.4g}" for k in sorted(rule.names) if k in values)
    return f"reject_if `{rule.text}` is true ({shown})"
