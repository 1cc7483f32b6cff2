"""Real-shape GPU throughput: evaluation and training, the plain HF path against ours.

The same benchmark as ``vlm-retain bench gpu`` (:mod:`vlm_retain.bench.gpu`; docs/performance.md),
runnable as a plain script from a copy of the repository where the package is not installed
(it then puts ``src/`` on ``sys.path``); it needs only torch, transformers and peft.

    python benchmarks/bench_gpu.py --shape 7b --out benchmarks/results/gpu-h200.json
    python benchmarks/bench_gpu.py --shape tiny --device cpu --out /tmp/bench.json   # CPU check
"""

from __future__ import annotations

import sys
from pathlib import Path


def _import_main():
    try:
        from vlm_retain.bench.gpu import main
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from vlm_retain.bench.gpu import main
    return main


if __name__ == "__main__":
    sys.exit(_import_main()())
