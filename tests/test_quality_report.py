"""The quality columns reach `report`, `inspect` and `export --table examples`."""

from __future__ import annotations

import csv
import math

import soundfile as sf
import yaml

from pipeline.config.catalog import load_catalog
from pipeline.quality.testset import make_set
from pipeline.report.export import export_table
from pipeline.report.figures import write_report
from pipeline.report.inspect import describe
from pipeline.run import steps


def test_report_inspect_and_export_show_quality(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    items = [g for g in make_set(3, 2, seed=5) if "~" not in g[0] or g[0].endswith(("~mp3_64k", "~gain_plus6", "~resample_8k"))]
    for cid, _, y in items:
        sf.write(audio / f"{cid.replace('~', '-')}.wav", y, 16000, subtype="PCM_16")
    store = tmp_path / "s.zarr"
    cat = {
        "dataset": "qr", "output": {"store": str(store)},
        "sources": [{"name": "d", "url": str(audio), "pattern": "*.wav", "label": {"from": "none"}, "group": {"from": "none"}}],
        "features": {"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 32}},
        "splits": {"train": 0.5, "val": 0.25, "test": 0.25},
        "quality": {"reject_if": "bandwidth_hz < 0.3 * sample_rate and duration_seconds > 1"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cat))
    summary = steps.run_catalog(load_catalog(tmp_path / "c.yaml"))
    # the 8 kHz copies are rejected by the rule, the MP3 and gain copies kept and flagged
    assert summary["rejected"] == 3 and summary["examples"] == 6 + 6 and summary["duplicate_clusters"] == 3
    info = describe(str(store))
    assert any("of examples are flagged" in w for w in info["warnings"])
    page = write_report(str(store), str(tmp_path / "report"))
    html = open(page, encoding="utf-8").read()
    for title in ("Quality metrics per split", "The 20 worst examples per metric", "Duplicate clusters"):
        assert title in html
    assert "3 cluster(s) hold 9 examples" in html
    for f in ("quality_distributions.png", "worst_snr_db.png", "worst_bandwidth_hz.png", "duplicate_sizes.png"):
        assert (tmp_path / "report" / f).stat().st_size > 1000
    out = export_table(str(store), table="examples", fmt="csv", out=str(tmp_path / "ex.csv"))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12
    for col in ("loudness_lufs", "snr_db", "bandwidth_hz", "silence_fraction", "clipping_fraction", "pcm_hash", "cluster"):
        assert col in rows[0]
    assert all(math.isfinite(float(r["snr_db"])) for r in rows)
    assert sum(1 for r in rows if "duplicate" in r["flags"]) == 6
    rejects = export_table(str(store), table="rejects", fmt="csv", out=str(tmp_path / "rj.csv"))
    rj = list(csv.DictReader(open(rejects)))
    assert {r["stage"] for r in rj} == {"quality"} and all("resample_8k" in r["path"] for r in rj)
    assert all("reject_if `bandwidth_hz < 0.3 * sample_rate and duration_seconds > 1` is true (bandwidth_hz=" in r["message"] for r in rj)
