"""pipeline.report.figures and pipeline.report.preview: real stores, real PNGs, a real browser."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import base_catalog, write_catalog
from pipeline.config.catalog import load_catalog
from pipeline.errors import ConfigError, StoreError
from pipeline.report.figures import format_drawn, markdown_report, write_report
from pipeline.report.preview import preview
from pipeline.run.steps import run_catalog

AUGMENT = {
    "copies": 1,
    "waveform": [{"name": "gain", "min_gain_db": -6, "max_gain_db": 6}],
    "spec": [{"name": "time_mask", "count": 1, "max_width_frames": 5}],
}
CHROMIUM = pathlib.Path("/usr/bin/chromium")
IMG = re.compile(r'<a href="([^"]+\.png)"><img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="[^"]*" width="(\d+)" height="(\d+)">')


def _build(tmp: pathlib.Path, audio: pathlib.Path, **overrides) -> str:
    store = tmp / "store.zarr"
    cat = write_catalog(tmp / "catalog.yaml", base_catalog(audio, store, **overrides))
    run_catalog(load_catalog(cat))
    return str(store)


@pytest.fixture(scope="module")
def full_store(tiny_corpus, tmp_path_factory) -> str:
    """Augmented copies, summaries, and one rejected (undecodable) file."""
    tmp = tmp_path_factory.mktemp("full")
    audio = tmp / "audio"
    shutil.copytree(tiny_corpus, audio)
    (audio / "tone" / "spk09_tone_broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    features = {"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 40}, "mfcc": {"n_mfcc": 13}, "summaries": ["mean"]}
    return _build(tmp, audio, augment=AUGMENT, features=features)


@pytest.fixture(scope="module")
def full_report(full_store, tmp_path_factory) -> pathlib.Path:
    return pathlib.Path(write_report(full_store, str(tmp_path_factory.mktemp("report") / "out")))


def _check_png(path: pathlib.Path, width: int | None = None, height: int | None = None) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG"
        if width is not None:
            assert im.size == (width, height), f"{path.name}: {im.size} != {(width, height)}"
        assert 400 <= im.size[0] <= 4000 and 250 <= im.size[1] <= 4000, f"{path.name}: odd size {im.size}"
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert rgb.std() > 10, f"{path.name} looks blank (pixel std {rgb.std():.1f})"
    assert _colours(rgb) > 20, f"{path.name} has too few colours"


def _colours(rgb: np.ndarray) -> int:
    packed = rgb.astype(np.uint32).reshape(-1, 3) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    return int(np.unique(packed).size)


def test_report_writes_every_figure_and_a_self_contained_page(full_report):
    page = full_report.read_text()
    pngs = sorted(p.name for p in full_report.parent.glob("*.png"))
    assert {"class_balance.png", "durations.png", "spectrograms.png", "summaries.png"} <= set(pngs)
    assert any(n.startswith("copy_") for n in pngs)
    refs = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in IMG.finditer(page)}
    assert sorted(refs) == pngs, "the page must embed every PNG of the folder, and only those"
    for name, (w, h) in refs.items():
        _check_png(full_report.parent / name, w, h)
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must not load anything from the network"


def test_report_sections_tell_what_they_show(full_report):
    page = full_report.read_text()
    for title in ("Examples per label and split", "Duration per split", "Spectrograms", "Augmented copies beside their source",
                  "Summary-feature distributions", "Rejected files"):
        assert f"<h2>{title}</h2>" in page
    assert "spk09_tone_broken.wav" in page  # the rejects table
    assert "gain(gain_db=" in page and "time_mask(" in page  # drawn parameters in the copy captions


def test_markdown_report_links_the_figures(full_store, tmp_path):
    md = markdown_report(full_store, out=str(tmp_path / "md"))
    assert md.startswith("# audioprep report")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert len(links) >= 5 and all(pathlib.Path(p).is_file() for p in links)
    assert "| split | examples |" in md


def test_report_of_a_plain_store_skips_sections_with_a_reason(tiny_corpus, tmp_path):
    store = _build(tmp_path, tiny_corpus, features={"stft": {"n_fft": 400, "hop_length": 160}, "mfcc": {"n_mfcc": 13}, "rms": {}})
    page = pathlib.Path(write_report(store, str(tmp_path / "out"))).read_text()
    assert "has no augmented copies" in page
    assert "has no summary columns" in page
    assert "No file was rejected." in page
    assert "mfcc of up to 3 original examples per label" in page  # no log_mel: the first 2-D feature
    for name, (w, h) in {m.group(1): (int(m.group(2)), int(m.group(3))) for m in IMG.finditer(page)}.items():
        _check_png(tmp_path / "out" / name, w, h)


def test_report_errors_name_the_problem(tmp_path, full_store):
    with pytest.raises(StoreError, match="audioprep run"):
        write_report(str(tmp_path / "nothing.zarr"), str(tmp_path / "out"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        write_report(full_store, str(tmp_path / "file"))


def test_format_drawn_reads_like_the_catalog():
    drawn = [{"name": "gain", "gain_db": -3.21987}, {"name": "time_mask", "features": ["log_mel"], "masks": [{"start_frame": 4, "width_frames": 2}]}]
    assert format_drawn(drawn) == "gain(gain_db=-3.22); time_mask(features=[log_mel], masks=[start_frame=4 width_frames=2])"
    assert format_drawn([]) == "no transform drawn"


def _chromium(page: pathlib.Path, tmp: pathlib.Path, shot: pathlib.Path) -> tuple[int, list[str], str]:
    """Screenshot ``page``; return (exit code, console lines, whole log)."""
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
           f"--screenshot={shot}", "--window-size=1280,2000", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    log = proc.stdout + proc.stderr
    # Chromium logs every console message (console.error, uncaught exceptions) as ...:CONSOLE...
    console = [line for line in log.splitlines() if re.search(r":CONSOLE\b", line) or "Uncaught" in line]
    return proc.returncode, console, log


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed: apt-get install chromium")
def test_page_renders_in_headless_chromium_without_console_errors(full_report, tmp_path):
    shot = tmp_path / "shot.png"
    rc, console, log = _chromium(full_report, tmp_path, shot)
    assert rc == 0, log[-2000:]
    assert console == [], console
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert rgb.std() > 10 and _colours(rgb) > 50, "the screenshot looks blank"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed: apt-get install chromium")
def test_chromium_console_check_catches_a_script_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><body>x<script>throw new Error("planted");</script></body></html>')
    rc, console, _ = _chromium(bad, tmp_path, tmp_path / "bad.png")
    assert rc == 0 and any("planted" in line for line in console), "the console check would miss real errors"


def test_cli_report_exits_zero(full_store, tmp_path):
    exe = pathlib.Path(sys.executable).parent / "audioprep"
    if not exe.exists():
        pytest.skip(f"{exe} not installed: pip install -e .")
    proc = subprocess.run([str(exe), "report", full_store, "--out", str(tmp_path / "cli")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "cli" / "index.html").is_file()


def test_preview_draws_files_and_writes_no_store(tiny_corpus, tmp_path):
    noise = tmp_path / "noise"
    noise.mkdir()
    import soundfile as sf

    sf.write(noise / "hum.wav", (0.1 * np.sin(2 * np.pi * 50 * np.arange(8000) / 8000)).astype(np.float32), 8000)
    store = tmp_path / "store.zarr"
    noise_step = {"name": "background_noise", "source": "bg", "min_snr_db": 5, "max_snr_db": 10}
    cat = base_catalog(tiny_corpus, store, augment={**AUGMENT, "waveform": [*AUGMENT["waveform"], noise_step]})
    cat["sources"].append({"name": "bg", "url": str(noise), "pattern": "*.wav", "role": "noise"})
    path = write_catalog(tmp_path / "catalog.yaml", cat)
    page = pathlib.Path(preview(str(path), n=3, out=str(tmp_path / "preview")))
    assert not store.exists()
    html = page.read_text()
    refs = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in IMG.finditer(html)}
    assert len(refs) == 3 and sorted(refs) == sorted(p.name for p in page.parent.glob("*.png"))
    for name, (w, h) in refs.items():
        _check_png(page.parent / name, w, h)
    assert "n_fft=400" in html and "hop_length=160" in html and "n_mels=40" in html
    assert "background_noise(" in html and "gain(gain_db=" in html
    # three files from three labels and three speakers, not the first three in sorted order
    shown = re.findall(r"<figcaption>(\w+)/(spk\d+)_\w+\.(?:wav|flac):", html)
    assert len(shown) == 3 and len({lab for lab, _ in shown}) == 3 and len({spk for _, spk in shown}) == 3, shown


def test_preview_picks_files_round_robin_over_labels_then_groups():
    from pipeline.io.discovery import FileRef
    from pipeline.report.preview import pick_files

    def ref(label, group, k):
        path = f"{label}/{group}_{k}.wav"
        return FileRef(path, "src", path, "/x/" + path, 1, "1", label=label, group=group)

    refs = [ref(lab, g, k) for lab in ("b", "a", "c") for g in ("s2", "s1", "s3") for k in (1, 0)]
    got = [(r.label, r.group, r.rel_path) for r in pick_files(refs, 7)]
    assert got == [
        ("a", "s1", "a/s1_0.wav"), ("b", "s2", "b/s2_0.wav"), ("c", "s3", "c/s3_0.wav"),
        ("a", "s2", "a/s2_0.wav"), ("b", "s1", "b/s1_0.wav"), ("c", "s1", "c/s1_0.wav"),
        ("a", "s3", "a/s3_0.wav"),
    ]
    assert pick_files(list(reversed(refs)), 7) == pick_files(refs, 7)  # input order does not matter
    assert len(pick_files(refs, 100)) == len(refs) and pick_files(refs[:1], 5) == refs[:1]
    # a label with few files does not stop the others
    uneven = [ref("a", "s1", 0), *[ref("b", g, k) for g in ("s1", "s2") for k in (0, 1)]]
    assert [r.rel_path for r in pick_files(uneven, 4)] == ["a/s1_0.wav", "b/s2_0.wav", "b/s1_0.wav", "b/s2_1.wav"]


def test_preview_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="at least 1"):
        preview(str(tmp_path / "catalog.yaml"), n=0)


def test_preview_chain_makes_the_very_copies_the_run_stored(full_store):
    from pipeline.augment import build_chain
    from pipeline.features import build_feature_set
    from pipeline.io.audio import decode, resample, to_mono
    from pipeline.report.preview import run_chain
    from pipeline.store.reader import open_dataset

    cat = load_catalog(pathlib.Path(full_store).parent / "catalog.yaml").catalog
    ds = open_dataset(full_store, "train", normalize=False)
    row = int(np.flatnonzero(ds.table["copy"] == 1)[0])
    source = pathlib.Path(cat.sources[0].url) / str(ds.table["path"][row])
    d = decode(source.read_bytes(), str(source), max_seconds=600, max_channels=8)
    y = resample(to_mono(d.y), d.sample_rate, cat.audio.sample_rate)
    versions = run_chain(y, str(ds.table["parent"][row]), seed=cat.seed, sample_rate=cat.audio.sample_rate, clip=cat.audio.clip,
                         fset=build_feature_set(cat.features, cat.audio.sample_rate), chain=build_chain(cat.augment), banks={})
    stored = ds[row]
    np.testing.assert_allclose(versions[1].feats["log_mel"], stored["features"]["log_mel"], atol=1e-4)
    assert format_drawn(versions[1].drawn) == format_drawn(json.loads(str(ds.table["augment"][row])))


def test_frequency_ticks_never_exceed_the_nyquist_frequency():
    from pipeline.report.figures import draw_spectrogram, new_figure, spectrogram_view

    for n_mels in (40, 80):
        view = spectrogram_view({"log_mel": [n_mels]}, {"stft": {"n_fft": 400}, "log_mel": {"n_mels": n_mels, "fmin": 0, "fmax": None}}, 16000)
        fig = new_figure(4.0, 4.0)
        ax = fig.add_subplot()
        draw_spectrogram(ax, np.zeros((100, n_mels), np.float32), view, sample_rate=16000, hop_length=160, vmin=-80, vmax=0)
        fig.canvas.draw()
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert max(ticks) == 8000 and "8192" not in labels, (n_mels, labels)
        assert min(ticks) == 0 and len(ticks) >= 4
    # a band-limited mel axis: ticks inside [fmin, fmax]
    view = spectrogram_view({"log_mel": [40]}, {"stft": {"n_fft": 400}, "log_mel": {"n_mels": 40, "fmin": 300, "fmax": 3000}}, 16000)
    fig = new_figure(4.0, 4.0)
    ax = fig.add_subplot()
    draw_spectrogram(ax, np.zeros((100, 40), np.float32), view, sample_rate=16000, hop_length=160, vmin=-80, vmax=0)
    assert all(300 <= t <= 3000 for t in ax.get_yticks())


def test_summary_axes_name_their_units():
    from pipeline.report.figures import summary_axis_label

    names = ["log_mel", "mfcc", "spectral_centroid", "spectral_contrast", "rms", "zero_crossing_rate", "spectral_flatness"]
    assert summary_axis_label("spectral_centroid_mean", names) == "spectral_centroid_mean (Hz)"
    assert summary_axis_label("spectral_rolloff_std", []) == "spectral_rolloff_std (Hz)"
    assert summary_axis_label("spectral_bandwidth_max", []) == "spectral_bandwidth_max (Hz)"
    assert summary_axis_label("log_mel_07_mean", names) == "log_mel_07_mean (dB)"
    assert summary_axis_label("spectral_contrast_03_std", names) == "spectral_contrast_03_std (dB)"
    assert summary_axis_label("rms_mean", names) == "rms_mean (amplitude, linear, full scale 1)"
    assert summary_axis_label("zero_crossing_rate_mean", names) == "zero_crossing_rate_mean (crossings per sample)"
    assert summary_axis_label("spectral_flatness_mean", names) == "spectral_flatness_mean (ratio, 0-1)"
    assert summary_axis_label("mfcc_d1_03_mean", names) == "mfcc_d1_03_mean (cepstral coefficient of dB)"
    assert summary_axis_label("my_feature_mean", ["my_feature"]) == "my_feature_mean"


def test_inspect_table_fits_80_columns_in_the_readers_order(full_store):
    import io

    from rich.console import Console

    from audioprep.render import render_inspect
    from pipeline.report.inspect import describe
    from pipeline.store.reader import open_dataset

    info = describe(full_store)
    order = list(open_dataset(full_store).feature_names)
    assert order == ["log_mel", "mfcc"]
    # long names as a store with every feature has them, listed by the storage in another order
    long = {n: {**info["features"]["mfcc"], "dims": ["frame", f"{n}_bin"]} for n in ("spectral_bandwidth", "zero_crossing_rate")}
    info["features"] = {**long, **dict(reversed(list(info["features"].items())))}
    info["feature_params"] = {"stft": {}, **{n: {} for n in order}, "spectral_bandwidth": {}, "zero_crossing_rate": {}, "summaries": []}
    out = io.StringIO()
    render_inspect(info, Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│ ") and "float32" in line]
    assert rows == [*order, "spectral_bandwidth", "zero_crossing_rate"], rows
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert all("frame, bin" in line for line in text.splitlines() if "float32" in line)
