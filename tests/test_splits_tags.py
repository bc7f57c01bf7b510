"""Multi-label stratification: every tag's share per split stays near the fractions,
rare tags included, while groups stay whole and forced splits hold."""

from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.plan.splits import SplitUnit, assign_splits

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _units(seed: int = 0) -> list[SplitUnit]:
    rng = np.random.default_rng(seed)
    tags = [f"t{i:02d}" for i in range(20)]
    weights = 1.0 / np.arange(1, 21) ** 1.3  # a long tail: t19 is ~50x rarer than t00
    weights /= weights.sum()
    out = []
    for g in range(400):
        for k in range(int(rng.integers(1, 4))):
            n = int(rng.integers(1, 4))
            chosen = tuple(sorted(set(rng.choice(tags, size=n, p=weights))))
            out.append(SplitUnit(f"g{g}-{k}", f"g{g}", "", tags=chosen))
    return out


def _deviation(units, assignment) -> tuple[float, int]:
    """Mean absolute deviation of each tag's split shares from the fractions, and how many
    (tag, split) cells with a positive fraction got no example of the tag."""
    per: dict[str, Counter] = {}
    for u in units:
        for t in u.tags:
            per.setdefault(t, Counter())[assignment[u.example_id]] += 1
    devs, empty = [], 0
    for c in per.values():
        total = sum(c.values())
        for s, f in FRACTIONS.items():
            devs.append(abs(c[s] / total - f))
            empty += c[s] == 0
    return float(np.mean(devs)), empty


def test_iterative_stratification_balances_every_tag_and_keeps_groups_whole():
    units = _units()
    tagged = assign_splits(units, FRACTIONS, seed=3, stratify="tags")
    plain = assign_splits(units, FRACTIONS, seed=3, stratify=False)
    dev_tags, empty_tags = _deviation(units, tagged)
    dev_plain, _ = _deviation(units, plain)
    assert dev_tags < 0.03 and dev_tags < dev_plain / 2, (dev_tags, dev_plain)
    assert empty_tags == 0  # every split holds every tag, the rarest too
    groups: dict[str, set[str]] = {}
    for u in units:
        groups.setdefault(u.group, set()).add(tagged[u.example_id])
    assert all(len(s) == 1 for s in groups.values())
    sizes = Counter(tagged.values())
    assert abs(sizes["train"] / len(units) - 0.6) < 0.03
    assert tagged == assign_splits(units, FRACTIONS, seed=3, stratify="tags")  # deterministic


def test_forced_and_previous_splits_hold_and_count():
    units = _units(1)
    forced = [SplitUnit(u.example_id, u.group, "", "test" if u.group == "g0" else "", u.tags) for u in units]
    got = assign_splits(forced, FRACTIONS, seed=0, stratify="tags", previous={"g1": "val"})
    assert {got[u.example_id] for u in units if u.group == "g0"} == {"test"}
    assert {got[u.example_id] for u in units if u.group == "g1"} == {"val"}
