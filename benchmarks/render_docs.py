"""Re-render every generated table in README.md and docs/ from the results kept in docs/data/.

Each benchmark keeps its numbers in a JSON file there; ``benchmarks.render`` holds one
renderer per benchmark, and this runs them all with no training, measuring or torch
(``make docs``). Run from the repository root:

    python -m benchmarks.render_docs
"""

from __future__ import annotations

import sys

from benchmarks.render import (
    align,
    calibration,
    extract,
    hash_scale,
    heads,
    hostile,
    learned_space,
    memory_scale,
    near_dup,
    ocr_eval,
    quality,
    reload,
    review_cost,
    runtimes,
    scale,
    serve,
    serve_limit,
    thresholds,
    trm_ablation,
    trm_speed,
    trm_sweep,
    tune_speed,
)

#: every renderer, in the order the docs were first generated
RENDERERS = [heads, quality, trm_sweep, trm_speed, trm_ablation, serve, hostile, ocr_eval, align,
             scale, runtimes, near_dup, extract, thresholds, learned_space, tune_speed, memory_scale,
             review_cost, calibration, reload, hash_scale, serve_limit]


def main() -> int:
    for module in RENDERERS:
        module.render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
