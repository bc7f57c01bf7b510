"""Dask preload of the embedded cluster's workers (not of workers users start themselves).

A terminal's Ctrl-C reaches every process of its process group: the run's workers too. They
leave it to the run, which stops them when it stops (a worker also ends when its nanny's
process does), instead of each dying mid-partition with a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import signal


def dask_setup(worker=None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
