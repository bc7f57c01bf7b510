"""Importing this module warms the process up (:func:`pipeline.run.warmup.warm`): the fork
server's preload, so every worker forked from it starts with compiled kernels."""

from pipeline.run.warmup import warm

warm()
