"""audioprep's library: catalog -> partitions -> features -> sharded Zarr store -> reader.

This package never imports Prefect; the thin flows in ``flows/`` wire it.
"""

from __future__ import annotations

__version__ = "0.1.0"


def open_dataset(url, split=None, **kwargs):
    """Open a prepared store as a map-style dataset; see :func:`pipeline.store.reader.open_dataset`."""
    from pipeline.store.reader import open_dataset as _open

    return _open(url, split=split, **kwargs)


def open_xarray(url, version=None, **kwargs):
    """The features of a store as an ``xarray.Dataset``; see :func:`pipeline.read.views.open_xarray`."""
    from pipeline.read.views import open_xarray as _open

    return _open(url, version, **kwargs)


__all__ = ["open_dataset", "open_xarray", "__version__"]
