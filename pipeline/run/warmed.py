"""Importing this module warms the process up (:func:`pipeline.run.warmup.warm`): the fork
server's preload, so every worker forked from it starts with compiled kernels.

A failure here must not kill the fork server (its workers would then fail to start with no
cause shown): it is skipped, and each worker's own warm-up preload raises it with a traceback.
"""

from pipeline.run.warmup import skip_final_collection, warm

# The fork server ends when the process that started it does, and holds that process's output
# pipes until then: a shell's `| tee` waits for it (0.7 s of final collections here).
skip_final_collection()

try:
    warm()
except Exception:  # noqa: BLE001 - reported by the workers' own warm-up
    pass
