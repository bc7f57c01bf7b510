from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.plan.splits import SplitUnit, assign_splits

FR = {"train": 0.8, "val": 0.1, "test": 0.1}


def units(n_groups=50, per_group=4, labels=("a", "b", "c")):
    return [SplitUnit(f"g{g}-{i}", f"g{g}", labels[(g + i) % len(labels)]) for g in range(n_groups) for i in range(per_group)]


def test_groups_never_span_splits_and_fractions_are_close():
    us = units()
    out = assign_splits(us, FR, seed=3)
    by_group = {}
    for u in us:
        by_group.setdefault(u.group, set()).add(out[u.example_id])
    assert all(len(s) == 1 for s in by_group.values())
    c = Counter(out.values())
    assert abs(c["train"] / len(us) - 0.8) < 0.05
    assert abs(c["val"] / len(us) - 0.1) < 0.05


def test_stratified_by_label():
    us = units(n_groups=90, per_group=2)
    out = assign_splits(us, FR, seed=0)
    for lab in "abc":
        n = sum(1 for u in us if u.label == lab)
        tr = sum(1 for u in us if u.label == lab and out[u.example_id] == "train")
        assert abs(tr / n - 0.8) < 0.1


def test_deterministic_and_order_independent():
    us = units()
    a = assign_splits(us, FR, seed=7)
    b = assign_splits(list(reversed(us)), FR, seed=7)
    assert a == b
    assert assign_splits(us, FR, seed=8) != a


def test_previous_groups_keep_their_split_when_files_are_added():
    us = units(n_groups=30)
    first = assign_splits(us, FR, seed=0)
    previous = {u.group: first[u.example_id] for u in us}
    more = us + [SplitUnit(f"new{i}", f"g{i % 40}", "a") for i in range(40)]
    counts = Counter((first[u.example_id], u.label) for u in us)
    second = assign_splits(more, FR, seed=0, previous=previous, previous_counts=counts)
    assert all(second[u.example_id] == first[u.example_id] for u in us)
    # new files of an old group follow the group
    assert second["new1"] == first[next(u.example_id for u in us if u.group == "g1")]


def test_manifest_forced_split_wins():
    us = [SplitUnit("x", "g", "a", forced_split="test"), SplitUnit("y", "g", "a")]
    out = assign_splits(us, FR, seed=0)
    assert out == {"x": "test", "y": "test"}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(0, 2**31 - 1))
def test_every_example_gets_exactly_one_valid_split(n_groups, seed):
    us = units(n_groups=n_groups, per_group=2)
    out = assign_splits(us, FR, seed=seed)
    assert set(out) == {u.example_id for u in us}
    assert set(out.values()) <= set(FR)
