"""Duplicate detection on the generated set of issue 20, and duplicate-aware splits."""

from __future__ import annotations

import itertools
import json
import pathlib

import numpy as np
import pytest
import soundfile as sf
import yaml

from pipeline.config.catalog import load_catalog
from pipeline.errors import DuplicateError
from pipeline.plan.splits import ClusterMember, SplitConflict, cluster_split
from pipeline.quality.analyze import METRICS_VERSION, measure
from pipeline.quality.config import DuplicatesConfig, QualityConfig
from pipeline.quality.duplicates import clusters, pack, reduce_bucket, write_fingerprints
from pipeline.quality.testset import TRANSFORMS, make_set
from pipeline.run import steps
from pipeline.store.location import StoreLocation
from pipeline.store.state import read_state

SR = 16000


@pytest.fixture(scope="module")
def generated():
    """4 speakers x 4 clips; the first clip of each speaker in 5 transformed copies."""
    return make_set(4, 4, seed=11)


def _index(tmp_path, items, partitions: int, n_buckets: int, cfg: DuplicatesConfig | None = None):
    cfg = cfg or DuplicatesConfig()
    loc = StoreLocation(str(tmp_path / "idx"))
    pids = [f"p{k:03d}" for k in range(partitions)]
    for k, pid in enumerate(pids):
        part = items[k::partitions]
        ms = [measure(y, y, SR, QualityConfig()) for _, _, y in part]
        write_fingerprints(loc, pid, pack([c for c, _, _ in part], [m.pcm_hash for m in ms], [m.codes for m in ms], [m.keys for m in ms],
                                          ms[0].frame_seconds))
    edges = [e for b in range(n_buckets) for e in reduce_bucket(loc, pids, b, n_buckets, cfg)]
    index_of = {(pids[i % partitions], c): i for i, (c, _, _) in enumerate(items)}
    return clusters(edges, index_of), edges


def test_near_duplicates_precision_and_recall_on_the_generated_set(generated, tmp_path):
    found, edges = _index(tmp_path, generated, partitions=3, n_buckets=2)
    truth = {}
    for i, (_, cluster, _) in enumerate(generated):
        truth.setdefault(cluster, []).append(i)
    true_pairs = {p for members in truth.values() for p in itertools.combinations(sorted(members), 2)}
    found_pairs = {p for members in found for p in itertools.combinations(members, 2)}
    assert len(true_pairs) == 4 * 15  # 6 recordings of one clip per speaker
    # every copy found (recall 1.0), and no two distinct clips of a speaker joined (precision 1.0)
    assert found_pairs == true_pairs
    assert all(0.75 <= e.similarity <= 1.0 for e in edges)


def test_the_clusters_do_not_depend_on_the_number_of_buckets(generated, tmp_path):
    # the flow asks for a bucket per worker thread: the store must not depend on the cluster.
    # A pair sharing keys in several buckets comes once from each, at its best offset there.
    from pipeline.quality.duplicates import reduction_inputs

    runs = {n: _index(tmp_path / str(n), generated, partitions=3, n_buckets=n) for n in (1, 2, 3, 7)}
    one, one_edges = runs[1]
    assert len(one) == 4 and all(len(c) == 6 for c in one)
    for n, (found, edges) in runs.items():
        assert found == one, n
        assert {frozenset((e.a, e.b)) for e in edges} == {frozenset((e.a, e.b)) for e in one_edges}, n
        assert len(edges) >= len(one_edges)

    class Plan:  # what reduction_inputs reads of a run's plan
        previous = None
        partitions = [type("P", (), {"partition_id": f"p{k}", "items": [0] * 50})() for k in range(3)]

    assert reduction_inputs(Plan()) == (["p0", "p1", "p2"], 1)
    assert reduction_inputs(Plan(), min_buckets=4) == (["p0", "p1", "p2"], 4)


def test_exact_copies_and_a_stricter_threshold(generated, tmp_path):
    (cid, _, y), other = generated[0], generated[6]
    items = [(cid, "a", y), (cid + "_again", "a", y.copy()), other]
    found, edges = _index(tmp_path, items, partitions=2, n_buckets=3, cfg=DuplicatesConfig(near=False))
    assert found == [[0, 1]] and [e.similarity for e in edges] == [1.0]
    # similarity 1.0: every fingerprint bit equal. Gain changes none (energy differences keep
    # their sign), nor does 8 kHz resampling below 3 kHz; MP3 and a trim change some
    copies = [g for g in generated if g[1] == generated[0][1]]
    assert [c.split("~")[-1] for c, _, _ in copies] == ["spk00_utt00", *TRANSFORMS]
    found, _ = _index(tmp_path, copies, partitions=1, n_buckets=1, cfg=DuplicatesConfig(similarity=1.0))
    assert found == [[0, 2, 3, 4]]


def test_fingerprint_files_of_another_version_are_left_out_of_the_index(generated, tmp_path):
    import io

    from pipeline.quality.duplicates import fingerprint_path, read_fingerprints

    (cid, _, y) = generated[0]
    items = [(cid, "a", y), (cid + "_again", "a", y.copy())]
    found, _ = _index(tmp_path, items, partitions=2, n_buckets=1)
    assert found == [[0, 1]]
    loc = StoreLocation(str(tmp_path / "idx"))
    path = tmp_path / "idx" / fingerprint_path("p001")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "version"}  # as written before versions were recorded
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    assert read_fingerprints(loc, "p001") is None and read_fingerprints(loc, "p000") is not None
    assert reduce_bucket(loc, ["p000", "p001"], 0, 1, DuplicatesConfig()) == []


def test_cluster_split_rules():
    m = ClusterMember
    assert cluster_split([m("a", "a.wav", "test"), m("b", "b.wav", "val")]) == "val"
    assert cluster_split([m("a", "a.wav", "test"), m("b", "b.wav", "train")]) == "train"
    assert cluster_split([m("a", "a.wav", "train"), m("b", "b.wav", "test", fixed=True)]) == "test"
    assert cluster_split([m("a", "a.wav", "train", forced_split="val"), m("b", "b.wav", "test")]) == "val"
    with pytest.raises(SplitConflict) as exc:
        cluster_split([m("a", "a.wav", "train", forced_split="val"), m("b", "b.wav", "test", forced_split="test")])
    assert "a.wav (val, forced by manifest)" in str(exc.value) and "b.wav (test, forced by manifest)" in str(exc.value)


def _write_set(root: pathlib.Path, items) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for cid, _, y in items:
        # each clip its own group: the group rule alone would scatter copies over the splits
        sf.write(root / f"{cid.replace('~', '-')}.wav", y, SR, subtype="PCM_16")


def _catalog(tmp_path, audio, **extra) -> pathlib.Path:
    cat = {
        "dataset": "dups", "seed": 0, "output": {"store": str(tmp_path / "s.zarr")},
        "sources": [{"name": "d", "url": str(audio), "pattern": "*.wav", "label": {"from": "none"}, "group": {"from": "none"}, **extra.pop("source", {})}],
        "features": {"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 32}},
        "augment": {"copies": 1, "splits": ["train"], "waveform": [{"name": "gain", "p": 1.0, "min_gain_db": -3, "max_gain_db": 3}]},
        "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "by": "group"},
        "execution": {"partition_seconds": 30},
        **extra,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cat))
    return path


def _clusters_of(state):
    out = {}
    for r in state.table:
        if r["copy"] == 0 and r["status"] in ("ok", "flagged") and r["cluster"]:
            out.setdefault(r["cluster"], []).append(r)
    return out


def test_run_puts_each_cluster_in_one_split_and_appends_across_versions(generated, tmp_path):
    first = [g for g in generated if g[1] in ("spk00_utt00", "spk01_utt00")]
    first += [g for g in generated if g[1] in ("spk00_utt01", "spk01_utt01", "spk02_utt01", "spk03_utt01")]
    audio = tmp_path / "audio"
    _write_set(audio, [g for g in first if not g[0].endswith("~trim_0.1s")])
    cat = _catalog(tmp_path, audio)
    summary = steps.run_catalog(load_catalog(cat))
    assert summary["duplicate_clusters"] == 2 and summary["rejected"] == 0
    state = read_state(StoreLocation(str(tmp_path / "s.zarr")))
    found = _clusters_of(state)
    assert sorted(len(v) for v in found.values()) == [5, 5]
    for members in found.values():
        assert len({r["split"] for r in members}) == 1  # no cluster spans two splits
        assert sum("duplicate" not in r["flags"].split(",") for r in members) == 1  # one representative
        assert len({r["path"].split(".")[0].split("-")[0] for r in members}) == 1
        split = members[0]["split"]
        ids = {r["id"] for r in members}
        aug = [r for r in state.table if r["parent"] in ids]
        # augmented copies only in train: those of members planned in train (a member moved into
        # train has none; one moved out loses them)
        assert all(r["split"] == split for r in aug) and (split == "train" or not aug) and len(aug) <= len(members)
    singles = [r for r in state.table if r["copy"] == 0 and not r["cluster"]]
    assert len(singles) == 4 and all(r["flags"] == "" for r in singles)
    assert all(np.isfinite(r["snr_db"]) and len(r["pcm_hash"]) == 32 for r in state.table)
    assert state.meta["quality"]["metrics_version"] == METRICS_VERSION and "snr_db" in state.meta["quality"]["metrics"]
    # a later run adds a trimmed copy: it joins its cluster's committed split
    _write_set(audio, [g for g in first if g[0].endswith("~trim_0.1s")])
    summary = steps.run_catalog(load_catalog(cat))
    state2 = read_state(StoreLocation(str(tmp_path / "s.zarr")))
    found2 = _clusters_of(state2)
    assert sorted(len(v) for v in found2.values()) == [6, 6]
    before = {r["id"]: r["split"] for r in state.table}
    for members in found2.values():
        assert len({r["split"] for r in members}) == 1
        assert all(before.get(r["id"], r["split"]) == r["split"] for r in members)  # committed examples never move


def test_drop_copies_and_error_policies(generated, tmp_path):
    items = [g for g in generated if g[1] == "spk02_utt00"] + [g for g in generated if g[1] == "spk02_utt01"]
    audio = tmp_path / "audio"
    _write_set(audio, items)
    cat = _catalog(tmp_path, audio, duplicates={"policy": "error"})
    with pytest.raises(DuplicateError) as exc:
        steps.run_catalog(load_catalog(cat))
    assert "1 duplicate cluster(s) and duplicates.policy is error" in str(exc.value) and "spk02_utt00-mp3_64k.wav" in str(exc.value)
    assert read_state(StoreLocation(str(tmp_path / "s.zarr"))).version == 0  # nothing committed
    cat = _catalog(tmp_path, audio, duplicates={"policy": "drop_copies"})
    summary = steps.run_catalog(load_catalog(cat), store=str(tmp_path / "s2.zarr"))
    state = read_state(StoreLocation(str(tmp_path / "s2.zarr")))
    assert summary["examples"] == 2 and summary["rejected"] == 5
    assert {r["stage"] for r in state.rejects} == {"duplicate"}
    kept = [r for r in state.table if r["copy"] == 0]
    assert sorted(r["path"] for r in kept) == ["spk02_utt00-gain_plus6.wav", "spk02_utt01.wav"] or len(kept) == 2
    assert all(f"a copy of d:{kept[0]['path'] if kept[0]['cluster'] else kept[1]['path']}" in r["message"] for r in state.rejects)


def test_manifest_forcing_copies_into_two_splits_is_an_error(generated, tmp_path):
    items = [g for g in generated if g[1] == "spk03_utt00"][:3]
    audio = tmp_path / "audio"
    _write_set(audio, items)
    names = sorted(p.name for p in audio.iterdir())
    (tmp_path / "m.csv").write_text("path,split\n" + f"{names[0]},train\n{names[1]},test\n")
    cat = _catalog(tmp_path, audio, source={"manifest": str(tmp_path / "m.csv")})
    with pytest.raises(DuplicateError) as exc:
        steps.run_catalog(load_catalog(cat))
    text = str(exc.value)
    assert "cannot be placed in one split" in text
    assert f"d:{names[0]} (train, forced by manifest)" in text and f"d:{names[1]} (test, forced by manifest)" in text


def test_measure_false_skips_metrics_and_duplicates(generated, tmp_path):
    audio = tmp_path / "audio"
    cid, _, y = generated[0]
    _write_set(audio, [(cid, cid, y), (cid + "~again", cid, y)])
    cat = _catalog(tmp_path, audio, quality={"measure": False})
    summary = steps.run_catalog(load_catalog(cat))
    state = read_state(StoreLocation(str(tmp_path / "s.zarr")))
    assert summary["duplicate_clusters"] == 0 and summary["examples"] == 2
    assert all(np.isnan(r["snr_db"]) and r["pcm_hash"] == "" and r["cluster"] == "" for r in state.table)


def test_overwrite_deletes_a_store_with_its_duplicate_index(generated, tmp_path):
    from pipeline.store.verify import delete_store, unknown_entries, verify_store

    audio = tmp_path / "audio"
    _write_set(audio, [g for g in generated if g[1] == "spk01_utt00"][:2])
    steps.run_catalog(load_catalog(_catalog(tmp_path, audio)))
    loc = StoreLocation(str(tmp_path / "s.zarr"))
    assert (tmp_path / "s.zarr" / "_quality").is_dir()
    assert verify_store(loc).ok
    assert unknown_entries(loc, read_state(loc).meta) == []
    (tmp_path / "s.zarr" / "_quality" / "stray.txt").write_text("x")
    assert unknown_entries(loc, read_state(loc).meta) == ["_quality/stray.txt"]
    (tmp_path / "s.zarr" / "_quality" / "stray.txt").unlink()
    assert "_quality" in delete_store(loc) and not (tmp_path / "s.zarr").exists()


def test_a_forced_member_pulls_its_cluster_and_the_store_verifies(generated, tmp_path):
    from pipeline.store.verify import verify_store

    items = [g for g in generated if g[1] == "spk03_utt00"] + [g for g in generated if g[1] in ("spk03_utt01", "spk03_utt02")]
    audio = tmp_path / "audio"
    _write_set(audio, items)
    forced = "spk03_utt00-gain_minus6.wav"
    (tmp_path / "m.csv").write_text(f"path,split\n{forced},val\n")
    cat = _catalog(tmp_path, audio, source={"manifest": str(tmp_path / "m.csv")})
    summary = steps.run_catalog(load_catalog(cat))
    assert summary["duplicate_clusters"] == 1
    loc = StoreLocation(str(tmp_path / "s.zarr"))
    state = read_state(loc)
    members = [r for r in state.table if r["copy"] == 0 and r["cluster"]]
    assert len(members) == 6 and {r["split"] for r in members} == {"val"}
    ids = {r["id"] for r in members}
    assert not [r for r in state.table if r["parent"] in ids]  # val has no augmented copies: those planned in train were dropped
    planned = {r["id"]: r["split"] for p in (tmp_path / "s.zarr" / "_partitions").glob("*.json")
               for r in json.loads(p.read_text())["rows"] if r["copy"] == 0}
    assert "train" in {planned[i] for i in ids}  # the case is exercised: a member was planned in train, with a copy
    assert verify_store(loc).ok


def test_clusters_are_found_afresh_and_the_policy_is_not_fingerprinted(generated, tmp_path):
    audio = tmp_path / "audio"
    cid, _, y = generated[0]
    _write_set(audio, [(cid, cid, y), (cid + "~again", cid, y), generated[7]])
    steps.run_catalog(load_catalog(_catalog(tmp_path, audio)))
    loc = StoreLocation(str(tmp_path / "s.zarr"))
    assert sum(1 for r in read_state(loc).table if r["copy"] == 0 and r["cluster"]) == 2
    (audio / f"{cid}-again.wav").unlink()  # the copy goes: its partner is a cluster of one no more
    steps.run_catalog(load_catalog(_catalog(tmp_path, audio, duplicates={"policy": "drop_copies", "similarity": 0.9})))
    state = read_state(loc)
    active = [r for r in state.table if r["copy"] == 0 and r["status"] in ("ok", "flagged")]
    assert len(active) == 2 and all(r["cluster"] == "" and "duplicate" not in r["flags"] for r in active)
