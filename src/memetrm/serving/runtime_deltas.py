"""What changes when a model is scored with features from another encoder runtime.

``runtime_deltas.json`` beside this module holds AUROC differences measured by
``python -m benchmarks.runtimes`` (the same trained head scored with features from each runtime):
``{base encoder: {"<trained>-><used>": {"<dataset>/<split>": AUROC(used) - AUROC(trained)}}}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from memetrm.encoders.runtimes import split_runtime

DELTAS = Path(__file__).with_name("runtime_deltas.json")


def measured_deltas() -> dict[str, dict[str, dict[str, float]]]:
    return json.loads(DELTAS.read_text()) if DELTAS.is_file() else {}


def runtime_note(trained: str, runtime: str) -> str:
    """The warning for scoring a model trained on ``trained``'s features with ``runtime``."""
    trained_runtime, base = split_runtime(trained)
    note = (f"this model was trained on features from the {trained_runtime} runtime of {base}; "
            f"scoring with {runtime}")
    deltas = measured_deltas().get(base, {}).get(f"{trained_runtime}->{runtime}")
    if not deltas:
        return note + " (no AUROC difference measured for this pair)"
    return note + ": measured AUROC difference " + ", ".join(
        f"{split} {d:+.4f}" for split, d in sorted(deltas.items()))
