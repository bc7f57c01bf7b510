"""AugmentConfig: the YAML shape, defaults, and errors with the catalog key path."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.augment import AugmentConfig
from pipeline.augment.pitch_shift import PitchShiftParams

EXAMPLE = """
augment:
  copies: 2
  splits: [train]
  waveform:
    - {name: time_shift, p: 0.5, max_shift_seconds: 0.3, mode: wrap}
    - {name: pitch_shift, p: 0.5, min_semitones: -2, max_semitones: 2}
    - {name: time_stretch, p: 0.3, min_rate: 0.9, max_rate: 1.1}
    - {name: speed, p: 0.3, factors: [0.9, 1.0, 1.1]}
    - {name: gain, p: 0.5, min_gain_db: -6, max_gain_db: 6}
    - {name: gaussian_noise, p: 0.5, min_snr_db: 10, max_snr_db: 30}
    - {name: background_noise, p: 0.3, source: noise, min_snr_db: 5, max_snr_db: 20}
    - {name: reverb, p: 0.2, source: rirs}
  spec:
    - {name: freq_mask, count: 2, max_width_bins: 8, features: [log_mel]}
    - {name: time_mask, count: 2, max_width_frames: 20}
"""


class Catalog(BaseModel):
    """Stand-in for the catalog model, which nests AugmentConfig under ``augment``."""

    model_config = ConfigDict(extra="forbid")
    augment: AugmentConfig = AugmentConfig()


def errors(doc: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        Catalog.model_validate({"augment": doc})
    return [(".".join(str(x) for x in e["loc"]), e["msg"]) for e in info.value.errors()]


def test_example_parses():
    cfg = Catalog.model_validate(yaml.safe_load(EXAMPLE)).augment
    assert cfg.copies == 2 and cfg.splits == ("train",)
    assert [s.name for s in cfg.waveform] == [
        "time_shift", "pitch_shift", "time_stretch", "speed", "gain", "gaussian_noise", "background_noise", "reverb",
    ]
    assert isinstance(cfg.waveform[1], PitchShiftParams) and cfg.waveform[1].max_semitones == 2.0
    assert cfg.spec[0].features == ("log_mel",) and cfg.spec[1].max_width_frames == 20
    # round trip: dumps every transform's own fields, and re-validates to an equal config
    dumped = cfg.model_dump()
    assert dumped["waveform"][0] == {"name": "time_shift", "p": 0.5, "max_shift_seconds": 0.3, "mode": "wrap"}
    assert AugmentConfig.model_validate(dumped) == cfg
    assert AugmentConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_defaults_are_off():
    cfg = AugmentConfig()
    assert cfg.copies == 0 and cfg.splits == ("train",) and cfg.waveform == () and cfg.spec == ()


def test_frozen():
    cfg = AugmentConfig(copies=1)
    with pytest.raises(ValidationError):
        cfg.copies = 3  # type: ignore[misc]


def test_bad_key_reports_path():
    assert errors({"waveform": [{"name": "gain"}, {"name": "pitch_shift", "min_semitone": 1}]}) == [
        ("augment.waveform.1.min_semitone", "Extra inputs are not permitted")
    ]
    assert errors({"waveform": [{"name": "pitch_shift", "min_semitones": "high"}]})[0][0] == "augment.waveform.0.min_semitones"
    assert errors({"copiez": 1})[0][0] == "augment.copiez"


@pytest.mark.parametrize(
    "doc, loc, message",
    [
        ({"waveform": [{"name": "gain"}, {"name": "pitch_shift", "min_semitones": 3, "max_semitones": 1}]},
         "augment.waveform.1.max_semitones", "min_semitones (3) > max_semitones (1): swap them"),
        ({"waveform": [{"name": "time_stretch", "min_rate": 1.2, "max_rate": 0.8}]},
         "augment.waveform.0.max_rate", "min_rate (1.2) > max_rate (0.8): swap them"),
        ({"waveform": [{"name": "time_stretch", "min_rate": 0}]}, "augment.waveform.0.min_rate", "greater than 0"),
        ({"waveform": [{"name": "gain", "min_gain_db": 6, "max_gain_db": -6}]},
         "augment.waveform.0.max_gain_db", "min_gain_db (6) > max_gain_db (-6)"),
        ({"waveform": [{"name": "gaussian_noise", "min_snr_db": 30, "max_snr_db": 10}]},
         "augment.waveform.0.max_snr_db", "min_snr_db (30) > max_snr_db (10)"),
        ({"waveform": [{"name": "background_noise", "source": "n", "min_snr_db": 20, "max_snr_db": 5}]},
         "augment.waveform.0.max_snr_db", "min_snr_db (20) > max_snr_db (5)"),
        ({"waveform": [{"name": "speed", "min_factor": 1.2, "max_factor": 0.9}]},
         "augment.waveform.0.max_factor", "min_factor (1.2) > max_factor (0.9)"),
        ({"waveform": [{"name": "speed", "factors": []}]}, "augment.waveform.0.factors", "factors is empty"),
        ({"waveform": [{"name": "speed", "factors": [1.0, -1]}]}, "augment.waveform.0.factors", "> 0"),
        ({"waveform": [{"name": "speed", "factors": [1.0], "min_factor": 0.9, "max_factor": 1.1}]},
         "augment.waveform.0", "not both"),
        ({"waveform": [{"name": "time_shift", "max_shift_seconds": -0.1}]},
         "augment.waveform.0.max_shift_seconds", "greater than or equal to 0"),
        ({"waveform": [{"name": "time_shift", "mode": "reflect"}]}, "augment.waveform.0.mode", "'wrap' or 'silence'"),
        ({"waveform": [{"name": "gain", "p": 1.5}]}, "augment.waveform.0.p", "less than or equal to 1"),
        ({"waveform": [{"name": "gain", "p": -0.1}]}, "augment.waveform.0.p", "greater than or equal to 0"),
        ({"waveform": [{"name": "reverb"}]}, "augment.waveform.0.source", "Field required"),
        ({"spec": [{"name": "freq_mask", "max_width_bins": -1}]}, "augment.spec.0.max_width_bins", "greater than or equal to 0"),
        ({"spec": [{"name": "time_mask", "max_width_frames": -5}]}, "augment.spec.0.max_width_frames", "greater than or equal to 0"),
        ({"spec": [{"name": "time_mask", "count": -1}]}, "augment.spec.0.count", "greater than or equal to 0"),
        ({"copies": -1}, "augment.copies", "greater than or equal to 0"),
        ({"waveform": [{"name": "pitchshift"}]}, "augment.waveform.0.name", "unknown waveform transform 'pitchshift'"),
        ({"waveform": [{"name": "time_mask"}]}, "augment.waveform.0.name", "move it under spec"),
        ({"spec": [{"name": "gain"}]}, "augment.spec.0.name", "move it under waveform"),
        ({"waveform": [{"p": 0.5}]}, "augment.waveform.0.name", "missing key name"),
        ({"waveform": ["gain"]}, "augment.waveform.0", "mapping"),
    ],
)
def test_invalid_values_report_loc_and_message(doc, loc, message):
    (err,) = errors(doc)
    assert err[0] == loc
    assert message in err[1]


def test_every_bad_step_is_reported():
    errs = errors({"waveform": [{"name": "gain", "p": 2}, {"name": "gain"}, {"name": "pitch_shift", "min_semitones": 5}]})
    assert [loc for loc, _ in errs] == ["augment.waveform.0.p", "augment.waveform.2.max_semitones"]
