"""A LibriSpeech-shaped corpus end to end: speaker/chapter folders of FLAC, one
``<speaker>-<chapter>.trans.txt`` per chapter, speech synthesized by espeak-ng saying the
transcript. The transcripts come back from the store exactly as written, the character
vocabulary is the train split's, and a character-count regressor learns from the store."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from pipeline import open_dataset
from pipeline.config.catalog import load_catalog
from pipeline.run import steps
from pipeline.store.location import StoreLocation
from pipeline.store.state import read_state
from tests.conftest import write_catalog

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (Debian package espeak-ng) to speak the transcripts")

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches "
         "and a zebra hums under the yellow moon").upper().split()


def _sentences(rng: np.random.Generator, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))) for _ in range(n)]


@pytest.fixture(scope="module")
def libri(tmp_path_factory):
    root = tmp_path_factory.mktemp("librispeech") / "train-clean-tiny"
    rng = np.random.default_rng(7)
    truth: dict[str, str] = {}
    for speaker in (19, 26, 103, 125):
        for chapter in (198, 1240):
            folder = root / str(speaker) / str(chapter)
            folder.mkdir(parents=True)
            lines = []
            for k, text in enumerate(_sentences(rng, 3)):
                utt = f"{speaker}-{chapter}-{k:04d}"
                wav = folder / f"{utt}.wav"
                subprocess.run(["espeak-ng", "-w", str(wav), "-s", str(150 + 10 * (speaker % 4)), text], check=True, capture_output=True)
                y, sr = sf.read(wav, dtype="float32")
                sf.write(folder / f"{utt}.flac", y, sr)  # LibriSpeech is FLAC
                wav.unlink()
                lines.append(f"{utt} {text}")
                truth[f"{speaker}/{chapter}/{utt}.flac"] = text
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root, truth


def test_transcripts_come_back_exactly_and_a_model_learns_from_them(libri, tmp_path):
    root, truth = libri
    cat = {
        "dataset": "libri-tiny",
        "seed": 0,
        "output": {"store": str(tmp_path / "libri.zarr")},
        "sources": [{
            "name": "libri",
            "url": str(root),
            "pattern": "**/*.flac",
            "label": {"from": "none"},
            "group": {"from": "regex", "pattern": r"^(?P<group>\d+)/"},  # speakers never straddle splits
            "text": {"from": "transcript_file", "pattern": "*.trans.txt"},
        }],
        "audio": {"sample_rate": 16000},
        "features": {"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 40}},
        "splits": {"train": 0.5, "val": 0.25, "test": 0.25, "stratify": "none"},
    }
    summary = steps.run_catalog(load_catalog(write_catalog(tmp_path / "c.yaml", cat)))
    assert summary["examples"] == len(truth) == 24 and summary["rejected"] == 0
    state = read_state(StoreLocation(str(tmp_path / "libri.zarr")))
    got = {r["path"]: r["text"] for r in state.table}
    assert got == truth  # exactly as written
    train_chars = sorted({ch for r in state.table if r["split"] == "train" for ch in r["text"]})
    assert state.meta["text_vocab"] == train_chars
    speakers = {s: {r["path"].split("/")[0] for r in state.table if r["split"] == s} for s in ("train", "val", "test")}
    assert not (speakers["train"] & speakers["val"]) and not (speakers["train"] & speakers["test"])

    # a character-count regressor on mean log-mel energy and duration: frames carry the speech
    ds = open_dataset(str(tmp_path / "libri.zarr"))
    x, y = [], []
    for i in range(len(ds)):
        ex = ds[i]
        mel = ex["features"]["log_mel"]
        x.append([mel.shape[0], float((mel > mel.mean()).sum()) / mel.shape[1], 1.0])
        y.append(len(str(ds.table["text"][i])))
    x, y = np.asarray(x, float), np.asarray(y, float)
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    pred = x @ w
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert r2 > 0.8, r2  # speech length tracks the transcript's length


def test_inspect_and_report_show_transcript_statistics(libri, tmp_path):
    from pipeline.report.figures import write_report
    from pipeline.report.inspect import describe

    root, truth = libri
    cat = {
        "dataset": "libri-stats", "seed": 0, "output": {"store": str(tmp_path / "s.zarr")},
        "sources": [{"name": "libri", "url": str(root), "pattern": "**/*.flac", "label": {"from": "none"},
                     "text": {"from": "transcript_file", "pattern": "*.trans.txt", "normalize": ["lower"]}}],
        "features": {"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 40}},
        "splits": {"train": 1.0, "val": 0.0, "test": 0.0},
    }
    steps.run_catalog(load_catalog(write_catalog(tmp_path / "c.yaml", cat)))
    info = describe(str(tmp_path / "s.zarr"))
    stats = info["transcripts"]["train"]
    assert stats["examples_with_text"] == 24
    assert stats["characters"] == sum(len(t) for t in truth.values())
    assert stats["words"] == sum(len(t.split()) for t in truth.values())
    assert info["text_vocab"] == sorted({c for t in truth.values() for c in t.lower()})
    page = write_report(str(tmp_path / "s.zarr"), out=str(tmp_path / "report"))
    html = open(page, encoding="utf-8").read()
    assert "Transcripts and tags" in html and f">{stats['characters']}<" in html
