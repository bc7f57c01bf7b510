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


def test_the_reader_gives_token_ids_for_ctc(libri, tmp_path):
    root, truth = libri
    cat = {
        "dataset": "libri-ctc", "seed": 0, "output": {"store": str(tmp_path / "s.zarr")},
        "sources": [{"name": "libri", "url": str(root), "pattern": "**/*.flac", "label": {"from": "none"},
                     "group": {"from": "regex", "pattern": r"^(?P<group>\d+)/"},
                     "text": {"from": "transcript_file", "pattern": "*.trans.txt"}}],
        "features": {"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 40}},
        "splits": {"train": 0.5, "val": 0.5, "test": 0.0, "stratify": "none"},
    }
    steps.run_catalog(load_catalog(write_catalog(tmp_path / "c.yaml", cat)))
    train = open_dataset(str(tmp_path / "s.zarr"), split="train")
    vocab = train.text_vocab
    for i in range(len(train)):
        ex = train[i]
        assert ex["text"] == truth[str(train.table["path"][i])]
        assert "".join(vocab[k - 1] for k in ex["text_ids"]) == ex["text"] and ex["text_length"] == len(ex["text"])
        assert ex["text_ids"].min() >= 1  # 0 is the CTC blank
    batch = next(iter(train.iter_batches(4, shuffle=True, seed=1)))
    assert batch["text_ids"].shape == (4, int(batch["text_lengths"].max()))
    for j, text in enumerate(batch["texts"]):
        n = int(batch["text_lengths"][j])
        assert "".join(vocab[k - 1] for k in batch["text_ids"][j, :n]) == text and not batch["text_ids"][j, n:].any()
    # a character the train split never had maps to len(vocab) + 1
    val = open_dataset(str(tmp_path / "s.zarr"), split="val")
    assert val.text_ids("Q~").tolist() == [vocab.index("Q") + 1 if "Q" in vocab else len(vocab) + 1, len(vocab) + 1]


def test_a_ctc_loss_trains_on_a_collated_batch(libri, tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install audioprep[torch])")
    from pipeline.torch import collate

    root, _ = libri
    cat = {
        "dataset": "libri-torch", "seed": 0, "output": {"store": str(tmp_path / "s.zarr")},
        "sources": [{"name": "libri", "url": str(root), "pattern": "**/*.flac", "label": {"from": "none"},
                     "text": {"from": "transcript_file", "pattern": "*.trans.txt"}}],
        "features": {"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 40}},
        "splits": {"train": 1.0, "val": 0.0, "test": 0.0},
    }
    steps.run_catalog(load_catalog(write_catalog(tmp_path / "c.yaml", cat)))
    ds = open_dataset(str(tmp_path / "s.zarr"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.ReLU(), torch.nn.Linear(64, len(ds.text_vocab) + 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    losses = []
    for epoch in range(6):
        for raw in ds.iter_batches(8, shuffle=True, seed=0, epoch=epoch):
            b = collate(raw)
            logp = model(b["features"]["log_mel"]).log_softmax(-1).transpose(0, 1)  # (frames, batch, classes)
            loss = ctc(logp, b["text_ids"], b["lengths"], b["text_lengths"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
