"""``memetrm report`` and the results tables, on run folders written by the test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from memetrm.cli.main import app

runner = CliRunner()


def stat(mean: float, n: int = 2) -> dict[str, Any]:
    return {"mean": mean, "std": 0.01, "ci95": [mean - 0.05, mean + 0.05],
            "values": [mean] * n}


def fake_run(folder: Path, dataset: str, head: str, test: str = "test", auc: float = 0.7,
             majority: float | None = 0.6) -> Path:
    """A run folder as ``train --out-dir`` leaves it: results.json and predictions.json."""
    rng = np.random.default_rng(0)
    y = [0, 1] * 20
    split = {m: stat(v) for m, v in (("auroc", auc), ("accuracy", 0.65), ("f1", 0.5),
                                     ("ece", 0.04), ("ece_raw", 0.15))}
    results = {
        "dataset": dataset, "encoder": "minilm-effnet", "head": head, "seeds": 2,
        "fields": ["image", "text"], "roles": {"train": "train", "dev": "dev", "test": test},
        "splits": {"dev": split, test: split}, "thresholds": [0.4, 0.5], "params": 1234,
        "train_seconds_per_seed": 1.5, "config": {}, "label_names": ["no", "yes"],
        "skipped_missing_images": [f"{dataset}-gap.jpg"],
    }
    if majority is not None:
        results["majority_rate"] = {"dev": majority, test: majority}
    preds = {test: {"ids": [str(i) for i in range(40)], "labels": y,
                    "probs": [rng.random(40).tolist(), rng.random(40).tolist()],
                    "probs_raw": [rng.random(40).tolist(), rng.random(40).tolist()], "trace": None}}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "predictions.json").write_text(json.dumps(preds))
    return folder


def test_report_puts_each_dataset_in_its_own_section_with_its_own_plots(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "hm-mlp", "hateful_memes", "mlp", test="test_seen")
    b = fake_run(tmp_path / "mo-ret", "multioff", "retrieval", auc=0.6)
    c = fake_run(tmp_path / "hm-lin", "hateful_memes", "linear", test="test_seen", auc=0.8)
    res = runner.invoke(app, ["report", str(a), str(b), str(c), "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "r.md").read_text()
    hm, _, mo = md.partition("### multioff")
    assert "### hateful_memes" in hm and "| mlp |" in hm and "| linear |" in hm
    assert "| retrieval |" not in hm and "multioff-gap.jpg" not in hm
    assert "| retrieval |" in mo and "hateful_memes-gap.jpg" not in mo
    assets = tmp_path / "r_assets"
    for ds in ("hateful_memes", "multioff"):
        for kind in ("roc", "forest"):
            png = assets / f"{kind}-{ds}-minilm-effnet.png"
            assert png.is_file() and f"r_assets/{png.name}" in md


def test_report_keeps_two_test_splits_of_one_dataset_apart(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "seen", "hateful_memes", "mlp", test="test_seen")
    b = fake_run(tmp_path / "unseen", "hateful_memes", "mlp", test="test_unseen")
    res = runner.invoke(app, ["report", str(a), str(b), "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.md").read_text().count("### hateful_memes") == 2
    assert len(list((tmp_path / "r_assets").glob("forest-*.png"))) == 2


def load_results(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text())


def test_default_terminal_table_fits_100_columns_with_every_number_whole(tmp_path: Path) -> None:
    from rich.console import Console

    from memetrm.evaluation.tables import summary_table

    runs = [load_results(fake_run(tmp_path / h, "multioff", h)) for h in
            ("hateclipper-align", "cross-attention")]
    for r in runs:
        r["config"] = {"fields": ["image", "text"]}  # the longest names: "(fields ...)"
        r["ensemble"] = {"threshold": 0.3, "splits": r["splits"]}
    console = Console(width=100, record=True)
    console.print(summary_table(runs))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 100 and "…" not in text
    assert "0.700 [0.650, 0.750]" in text and "majority" in text and "0.600" in text
    wide = Console(width=250, record=True)
    wide.print(summary_table(runs, wide=True))
    assert "0.650 ± 0.010" in wide.export_text()  # --wide: the spread over seeds too


def test_markdown_table_shows_the_majority_rate_only_where_runs_record_it(tmp_path: Path) -> None:
    from memetrm.evaluation.tables import results_table

    with_rate = results_table([load_results(fake_run(tmp_path / "a", "multioff", "mlp"))])
    without = results_table([load_results(fake_run(tmp_path / "b", "multioff", "mlp",
                                                   majority=None))])
    assert "| test acc | test majority | test F1 |" in with_rate and "| 0.600 |" in with_rate
    assert "majority" not in without  # older summaries (the docs' data) render as before


def test_model_card_of_one_seed_says_n_a_for_the_spread(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from memetrm.training.runner import model_card

    results = load_results(fake_run(tmp_path / "a", "multioff", "mlp"))
    for split in results["splits"].values():
        split["auroc"] = {"mean": 0.633, "std": 0.0, "ci95": None, "values": [0.633]}
    results |= {"seeds": 1, "config": {"train": {"threshold_metric": "f1"}},
                "provenance": {"memetrm": "x"}}
    from memetrm.evaluation.calibration import Calibrator

    best = SimpleNamespace(seed=0, threshold=0.4, fit=SimpleNamespace(dev_score=0.6),
                           calibrator=Calibrator())
    card = model_card(results, best, ("no", "yes"))
    assert "0.633 ± n/a" in card and "0.633 ± 0.000" not in card


def test_training_logged_to_a_file_prints_a_line_per_epoch(capsys) -> None:
    from memetrm.progress import make_progress
    from memetrm.training.runner import _epoch_display

    with make_progress() as bar:
        show = _epoch_display(bar, bar.add_task("mlp", total=2), "mlp seed 1/1")
        show({"epoch": 0, "loss": 0.7, "dev_score": 0.61})
        show({"epoch": 1, "loss": 0.6, "dev_score": 0.64})
    err = capsys.readouterr().err  # pytest's stderr is not a terminal, as a log file is not
    assert "mlp seed 1/1 epoch 1: loss 0.700, dev AUROC 0.610" in err
    assert "epoch 2: loss 0.600" in err
