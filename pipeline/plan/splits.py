"""Leak-free train/val/test assignment.

Whole groups (speakers, sessions) go to one split. Assignment is greedy over groups in a
seeded hash order, choosing the split whose label-wise and overall deficit against the
requested fractions is largest, so splits land close to the fractions and roughly
stratified by label. Groups that already have a split (from an earlier run of the same
store, or from a manifest) keep it: an example never changes split between runs.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class SplitUnit:
    """One example as the splitter sees it."""

    example_id: str
    group: str
    label: str
    forced_split: str = ""
    tags: tuple[str, ...] = ()
    """Multi-label tags (``splits.stratify: tags``)."""


def _order_key(seed: int, unit: str) -> str:
    return hashlib.blake2b(f"{seed}\x00{unit}".encode(), digest_size=8).hexdigest()


def assign_splits(
    units: Iterable[SplitUnit],
    fractions: Mapping[str, float],
    *,
    seed: int,
    by: str = "group",
    stratify: bool | str = True,
    previous: Mapping[str, str] | None = None,
    previous_counts: Mapping[tuple[str, str], int] | None = None,
) -> dict[str, str]:
    """Return ``example_id -> split``.

    Parameters
    ----------
    units : the examples to place.
    fractions : requested share per split name (summing to 1).
    seed : orders the greedy pass; the same seed gives the same assignment.
    by : ``group`` keeps every group in one split; ``example`` splits examples freely.
    stratify : balance each label's share per split, not only the totals (``True`` or
        ``"label"``); ``"tags"``: balance every tag's share, by iterative multi-label
        stratification (:func:`_assign_by_tags`).
    previous : group -> split already fixed (earlier runs); those groups keep it.
    previous_counts : (split, label) -> example count already in the store, so new groups
        top up the fractions of the whole dataset, not of this batch alone.
    """
    previous = dict(previous or {})
    units = list(units)
    key_of = (lambda u: u.group) if by == "group" else (lambda u: u.example_id)
    if stratify == "tags":
        return _assign_by_tags(units, fractions, seed=seed, key_of=key_of, previous=previous, previous_counts=previous_counts)
    members: dict[str, list[SplitUnit]] = defaultdict(list)
    for u in units:
        members[key_of(u)].append(u)

    counts: Counter[tuple[str, str]] = Counter(previous_counts or {})
    fixed: dict[str, str] = {}
    free: list[str] = []
    for key, us in members.items():
        forced = next((u.forced_split for u in us if u.forced_split), "")
        split = forced or previous.get(key, "")
        if split:
            fixed[key] = split
            for u in us:
                counts[(split, u.label)] += 1
        else:
            free.append(key)

    total_by_label: Counter[str] = Counter()
    for (_, label), n in counts.items():
        total_by_label[label] += n
    for key in free:
        for u in members[key]:
            total_by_label[u.label] += 1
    grand_total = sum(total_by_label.values())
    split_totals: Counter[str] = Counter()
    for (split, _), n in counts.items():
        split_totals[split] += n

    active = [s for s in fractions if fractions[s] > 0]
    # big groups first so small ones can even out the remainder; hash breaks ties reproducibly
    free.sort(key=lambda k: (-len(members[k]), _order_key(seed, k)))
    assignment = dict(fixed)
    for key in free:
        label_counts = Counter(u.label for u in members[key])
        size = sum(label_counts.values())
        best, best_score = active[0], None
        for s in active:
            overall = (fractions[s] * grand_total - split_totals[s]) / max(grand_total, 1)
            score = overall
            if stratify:
                label_def = sum(
                    c * (fractions[s] * total_by_label[lab] - counts[(s, lab)]) / max(total_by_label[lab], 1)
                    for lab, c in label_counts.items()
                ) / size
                score = label_def + 0.5 * overall
            if best_score is None or score > best_score + 1e-12:
                best, best_score = s, score
        assignment[key] = best
        for lab, c in label_counts.items():
            counts[(best, lab)] += c
        split_totals[best] += size

    return {u.example_id: assignment[key_of(u)] for u in units}


def _assign_by_tags(
    units: list[SplitUnit],
    fractions: Mapping[str, float],
    *,
    seed: int,
    key_of,
    previous: Mapping[str, str],
    previous_counts: Mapping[tuple[str, str], int] | None,
) -> dict[str, str]:
    """Iterative stratification (Sechidis, Tsoumakas and Vlahavas, 2011) over whole groups.

    Repeatedly take the tag with the fewest examples still unplaced, and place every free
    group holding it (seeded order) in the split that most lacks that tag, ties broken by
    the split that most lacks examples overall. Rare tags are placed first, while every
    split still has room for them. Groups without tags fill the overall deficits last.
    ``previous_counts`` here is ``(split, tag) -> examples`` already stored.
    """
    members: dict[str, list[SplitUnit]] = defaultdict(list)
    for u in units:
        members[key_of(u)].append(u)
    counts: Counter[tuple[str, str]] = Counter(previous_counts or {})
    split_totals: Counter[str] = Counter()
    assignment: dict[str, str] = {}
    free: list[str] = []
    for key, us in members.items():
        split = next((u.forced_split for u in us if u.forced_split), "") or previous.get(key, "")
        if split:
            assignment[key] = split
            split_totals[split] += len(us)
            for u in us:
                for t in u.tags:
                    counts[(split, t)] += 1
        else:
            free.append(key)
    tag_total: Counter[str] = Counter()
    for (_, t), n in counts.items():
        tag_total[t] += n
    grand_total = sum(split_totals.values()) + sum(len(members[k]) for k in free)
    for key in free:
        for u in members[key]:
            tag_total.update(u.tags)
    active = [s for s in fractions if fractions[s] > 0]
    free.sort(key=lambda k: _order_key(seed, k))
    group_tags = {k: Counter(t for u in members[k] for t in u.tags) for k in free}
    unplaced: Counter[str] = Counter()
    for k in free:
        unplaced.update(group_tags[k])

    def place(key: str, tag: str | None) -> None:
        def want(s: str) -> tuple[float, float]:
            overall = fractions[s] * grand_total - split_totals[s]
            if tag is None:
                return (overall, 0.0)
            return (fractions[s] * tag_total[tag] - counts[(s, tag)], overall)

        best = max(active, key=lambda s: (want(s), -active.index(s)))
        assignment[key] = best
        split_totals[best] += len(members[key])
        for t, n in group_tags[key].items():
            counts[(best, t)] += n
            unplaced[t] -= n

    remaining = set(free)
    while True:
        open_tags = [t for t, n in unplaced.items() if n > 0]
        if not open_tags:
            break
        tag = min(open_tags, key=lambda t: (unplaced[t], t))
        for key in [k for k in free if k in remaining and group_tags[k].get(tag)]:
            place(key, tag)
            remaining.discard(key)
    for key in [k for k in free if k in remaining]:
        place(key, None)
    return {u.example_id: assignment[key_of(u)] for u in units}


@dataclass(frozen=True, slots=True)
class ClusterMember:
    """One example of a duplicate cluster as the splitter sees it."""

    example_id: str
    path: str
    split: str
    """The split it was given (planned from its group, or committed earlier)."""
    fixed: bool = False
    """Committed by an earlier version: an example never changes split."""
    forced_split: str = ""


class SplitConflict(ValueError):
    """The members of a duplicate cluster are bound to different splits."""


def cluster_split(members: Iterable[ClusterMember]) -> str:
    """The one split for every member of a duplicate cluster.

    A split bound by a manifest or by an earlier version wins; two different bound splits
    are a :class:`SplitConflict` naming the members. Otherwise the cluster goes to the first
    of ``train, val, test`` a member was planned in: evaluation splits lose the copies of
    training audio (never the reverse), and the training split's augmented copies and
    normalisation statistics stay exactly as computed.
    """
    members = list(members)
    bound = {m.forced_split or m.split for m in members if m.fixed or m.forced_split}
    if len(bound) > 1:
        listed = "; ".join(
            f"{m.path} ({m.forced_split or m.split}, {'forced by manifest' if m.forced_split else 'committed earlier' if m.fixed else 'free'})"
            for m in members
        )
        raise SplitConflict(f"a duplicate cluster is bound to splits {sorted(bound)}: {listed}")
    if bound:
        return next(iter(bound))
    planned = {m.split for m in members}
    return next((s for s in SPLITS if s in planned), sorted(planned)[0])
