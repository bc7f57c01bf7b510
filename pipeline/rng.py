"""Per-example random generators: the only source of randomness in audioprep.

A generator is seeded from (catalog seed, example id, copy index), so the draws of
one example never depend on which worker runs it or in which order partitions finish.
"""

from __future__ import annotations

import hashlib

import numpy as np


def example_rng(seed: int, example_id: str, copy: int = 0, stream: str = "") -> np.random.Generator:
    """Return the generator of one example (copy 0 is the original, 1.. are augmented copies).

    Parameters
    ----------
    seed : int
        The catalog seed.
    example_id : str
        The example's stable id (hex digest).
    copy : int
        0 for the original example, k >= 1 for the k-th augmented copy.
    stream : str
        Separates independent uses for one example (e.g. ``"crop"`` vs ``"augment"``).
    """
    digest = hashlib.blake2b(f"{example_id}\x00{stream}".encode(), digest_size=16).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(copy), *words])
