"""docs/results.md and the README's results table, from docs/data/heads/<dataset>/<head>.json;
the README's head counts from docs/data/heads/_registry.json.

The ROC and trace plots in docs/results_assets/ are drawn when the benchmark runs; this only
links the ones that are there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.render import load as load_json
from benchmarks.render import quality, replace_block
from memetrm.evaluation.tables import dataset_markdown, fmt, markdown_table
from memetrm.progress import console
from memetrm.utils import atomic_write_text

DATA = Path("docs/data/heads")
DOC, README, ASSETS = Path("docs/results.md"), Path("README.md"), Path("docs/results_assets")
#: the head registry as ``python -m benchmarks.heads`` exported it
REGISTRY = DATA / "_registry.json"


def load(ds_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A dataset's run summaries in ``memetrm list`` order (by name), and its LR reference."""
    runs = [json.loads(p.read_text()) for p in ds_dir.glob("*.json") if p.stem != "_reference"]
    ref = ds_dir / "_reference.json"
    return (sorted(runs, key=lambda r: r["head"]),
            json.loads(ref.read_text()) if ref.is_file() else None)


def best_on_dev(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda r: r["splits"][r["roles"]["dev"]]["auroc"]["mean"])


def test_auroc(runs: list[dict[str, Any]], head: str, ci: bool = False) -> str:
    r = next((r for r in runs if r["head"] == head), None)
    return fmt(r["splits"][r["roles"]["test"]]["auroc"], ci=ci) if r else "not run"


def readme_table(groups: dict[str, tuple[list[dict], dict | None]]) -> str:
    rows = []
    for runs, ref in groups.values():
        best = best_on_dev(runs)
        dev = best["splits"][best["roles"]["dev"]]["auroc"]["mean"]
        rows.append([f"{best['dataset']} `{best['roles']['test']}` ({' + '.join(best['fields'])})",
                     f"{best['head']} (dev {dev:.3f})", test_auroc(runs, best["head"], ci=True),
                     test_auroc(runs, "mlp"), test_auroc(runs, "trm"),
                     f"{ref['test_auroc']:.3f}" if ref else "not run"])
    header = ["dataset (test split)", "best head on dev", "its test AUROC [95% CI]", "MLP",
              "TRM", "LR on the same features"]
    return markdown_table(header, rows)


def head_counts(registry: dict[str, Any]) -> str:
    """The README's sentence on the heads ``make run`` trains and those left to be named."""
    return (f"`make run` trains the {len(registry['all'])} heads `--heads all` runs; `memetrm "
            f"list heads -v` marks the other {len(registry['by_name'])} \"(by name)\": variants "
            "and slower fusion heads that run only when named, e.g. `--heads perceiver`.")


def render(data: Path = DATA) -> None:
    """docs/results.md and the README's results table, from the summaries in ``data`` only."""
    registry = load_json(data / REGISTRY.name)
    if registry:
        replace_block(README, "head-counts", head_counts(registry))
    groups = {d.name: load(d) for d in sorted(data.iterdir()) if d.is_dir()} if data.is_dir() else {}
    groups = {k: v for k, v in groups.items() if v[0]}
    if not groups:
        console.print(f"[yellow]no run summaries in {data}: run python -m benchmarks.heads first")
        return
    refs = [markdown_table(["dataset", "model", "dev AUROC", "test AUROC"], [
        [ref["dataset"], f"logistic regression (C={ref['C']} chosen on dev)",
         f"{ref['dev_auroc']:.3f}", f"{ref['test_auroc']:.3f}"]
        for _, ref in groups.values() if ref])]
    body = [
        "# memetrm head benchmark", "",
        "Produced by `make results` (`python -m benchmarks.heads --data-root ../shared/data "
        "--seeds 5`); rendered from `docs/data/heads/` by `make docs`. Encoder: `minilm-effnet` "
        "(offline default: EfficientNet-Lite0 + all-MiniLM-L6-v2, frozen). Hateful Memes has no "
        "images here: its image modality is the generated caption, encoded by the text tower as "
        "its own field. CPU budget: on Hateful Memes every head trains with batch 256; the "
        "TRM and cross-attention heads run 10 epochs x 3 seeds instead of 30 x 5, and the "
        "token-level fusion heads (perceiver, qformer, gated-xattn) 10 epochs x 5 seeds "
        "(`BUDGET` in the script).", "",
        "## Reference: logistic regression on the same frozen features", "", *refs, "",
        "## Heads", "",
        *(dataset_markdown(runs, ASSETS, ASSETS.name) for runs, _ in groups.values()),
        "## Cross-validation, linear probe, ensembles and the mpnet text tower", "",
        "<!-- generated:quality start -->", quality.markdown(), "<!-- generated:quality end -->", "",
    ]
    atomic_write_text(DOC, "\n".join(body))
    replace_block(README, "results", readme_table(groups))
    console.print(f"wrote {DOC} and the results table of {README}")
