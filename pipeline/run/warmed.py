"""Importing this module warms the process up (:func:`pipeline.run.warmup.warm`): the fork
server's preload, so every worker forked from it starts with compiled kernels.

A failure here must not kill the fork server (its workers would then fail to start with no
cause shown): it is skipped, and each worker's own warm-up preload raises it with a traceback.
"""

import atexit
import gc

from pipeline.run.warmup import warm

# The fork server ends when the process that started it does, and holds that process's output
# pipes until then: a shell's `| tee` waits for it. Its exit skips the interpreter's last
# garbage collections over everything it imported (0.7 s here; flows.runtime.skip_final_collection).
atexit.register(gc.freeze)

try:
    warm()
except Exception:  # noqa: BLE001 - reported by the workers' own warm-up
    pass
