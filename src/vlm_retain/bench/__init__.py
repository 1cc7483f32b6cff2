"""Benchmarks over the whole stack: above ``evaluate``, ``train`` and ``models``, like ``cli``.

- :mod:`~vlm_retain.bench.gpu`: real-shape throughput of evaluation and training on one GPU
  (``vlm-retain bench gpu``, ``benchmarks/bench_gpu.py``; docs/performance.md).

This module imports nothing heavy; ``gpu`` needs only torch, transformers and peft (``rich`` is
optional), so it runs as a plain script on a machine where the package is not installed.
"""
