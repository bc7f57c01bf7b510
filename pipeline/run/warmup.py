"""Worker warm-up: pay the one-off imports (the FFT, zarr, codecs; librosa's numba kernels
for the features that use them) while a worker starts, not inside its first partition.

``pipeline.run.warmup`` is a Dask preload (``dask worker --preload pipeline.run.warmup``;
the embedded LocalCluster preloads it too): Dask calls :func:`dask_setup` in each worker.
Measured here: a worker's first 1800 s partition took 2.4 s cold and 1.0 s warm.
"""

from __future__ import annotations

import numpy as np


def warm(sample_rate: int = 16000) -> None:
    """Import and exercise the code every partition runs, on one second of silence."""
    import soundfile  # noqa: F401
    import soxr  # noqa: F401
    import zarr  # noqa: F401
    from zarr.codecs import BloscCodec  # noqa: F401

    from pipeline.features import FeaturesConfig, build_feature_set

    build_feature_set(FeaturesConfig(), sample_rate).compute(np.zeros(sample_rate, dtype=np.float32))


def dask_setup(worker=None) -> None:
    """Dask's preload hook (called with the worker, which the warm-up does not need)."""
    warm()
