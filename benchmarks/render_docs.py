"""Re-render every generated table in README.md and docs/ from the results kept in docs/data/.

Each benchmark keeps its numbers in a JSON file there and owns the renderer of its tables;
this runs them all with no training or measuring (``make docs``).

    python benchmarks/render_docs.py
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

#: benchmark modules whose ``render()`` writes a generated block
RENDERERS = ["heads", "quality", "trm_sweep", "trm_speed", "trm_ablation", "serve", "hostile",
             "ocr_eval", "align", "scale"]


def main() -> int:
    for name in RENDERERS:
        importlib.import_module(name).render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
