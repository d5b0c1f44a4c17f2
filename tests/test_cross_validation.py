"""Small-data selection by cross-validation, and seed and cross-configuration ensembles."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.config import RunConfig
from memetrm.evaluation.metrics import choose_threshold
from memetrm.heads import from_pretrained
from memetrm.training.runner import run

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .test_selection import write_dataset


def cv_config(root: Path, cache: Path, head: str = "mlp", **kw) -> RunConfig:
    return RunConfig(dataset=str(root), encoder="test-fake", head=head, seeds=2, cv=3,
                     fields=["text"], cache_dir=str(cache), bootstrap=0,
                     train={"epochs": 4, "lr": 3e-3}, **kw)


def test_cross_validation_reports_out_of_fold_scores_and_never_reads_test(tmp_path: Path) -> None:
    labels = [i % 2 for i in range(30)]
    shuffled = labels[:]
    random.Random(1).shuffle(shuffled)
    out = {}
    for name, y in (("original", labels), ("permuted", shuffled)):
        cfg = cv_config(write_dataset(tmp_path / name, y), tmp_path / "cache",
                        out_dir=str(tmp_path / name / "run"))
        out[name] = run(cfg)
    a, b = out["original"], out["permuted"]
    assert a["roles"]["dev"] == "cv" and a["cv"] == 3
    preds = json.loads((tmp_path / "original" / "run" / "predictions.json").read_text())
    assert len(preds["cv"]["ids"]) == 60 + 30  # train + dev, each predicted out of fold once
    assert a["thresholds"] == b["thresholds"] and a["splits"]["cv"] == b["splits"]["cv"]
    assert [c["fold_epochs"] for c in a["calibration"]] == [c["fold_epochs"] for c in b["calibration"]]
    assert a["splits"]["test"]["auroc"]["values"] != b["splits"]["test"]["auroc"]["values"]


def test_seed_ensemble_row_is_the_mean_of_the_seeds(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    res = run(RunConfig(dataset=str(root), encoder="test-fake", head="mlp", seeds=3, fields=["text"],
                        cache_dir=str(tmp_path / "cache"), bootstrap=50, out_dir=str(tmp_path / "run"),
                        train={"epochs": 3, "lr": 3e-3}))
    preds = json.loads((tmp_path / "run" / "predictions.json").read_text())["test"]
    mean = np.mean(preds["probs"], axis=0)
    from memetrm.evaluation import auroc

    ens = res["ensemble"]
    assert ens["splits"]["test"]["auroc"]["mean"] == pytest.approx(auroc(np.array(preds["labels"]), mean))
    assert ens["splits"]["test"]["auroc"]["std"] is None and ens["splits"]["test"]["auroc"]["ci95"]
    dev = json.loads((tmp_path / "run" / "predictions.json").read_text())["dev"]
    assert ens["threshold"] == pytest.approx(
        choose_threshold(np.array(dev["labels"]), np.mean(dev["probs"], 0)), abs=1e-6)


def test_compare_saves_an_ensemble_that_evaluate_loads(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    runner = CliRunner()
    common = ["--dataset", str(root), "--encoder", "test-fake", "--cache-dir", str(tmp_path / "c"),
              "--device", "cpu"]
    res = runner.invoke(app, ["compare", *common, "--heads", "linear,mlp",
                              "--field-sets", "text;text,text@test-fake", "--seeds", "2",
                              "--ensemble", "2", "--set", "train.epochs=3", "--set", "bootstrap=0",
                              "--out-dir", str(tmp_path / "runs"), "--save", str(tmp_path / "ens")])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "runs" / "ensemble.json").read_text())
    assert len(record["members"]) == 2 and len(record["ranking"]) == 4
    head, config = from_pretrained(tmp_path / "ens")
    assert config["head"] == "ensemble" and len(head.members) == 4  # 2 configs x 2 seeds
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "ens"), "--dataset", str(root),
                              "--cache-dir", str(tmp_path / "c"), "--device", "cpu",
                              "--json", str(tmp_path / "eval.json")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["metrics"]["auroc"]["value"] == pytest.approx(record["splits"]["test"]["auroc"]["mean"])
    assert ev["threshold"] == pytest.approx(record["threshold"])
    # an operator's threshold replaces the dev-chosen one for scoring, not the saved model
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "ens"), "--dataset", str(root),
                              "--cache-dir", str(tmp_path / "c"), "--device", "cpu",
                              "--threshold", "1.0", "--json", str(tmp_path / "eval1.json")])
    assert res.exit_code == 0 and "set by --threshold" in res.output
    ev1 = json.loads((tmp_path / "eval1.json").read_text())
    assert ev1["threshold"] == 1.0 and ev1["metrics"]["recall"]["value"] <= ev["metrics"]["recall"]["value"]
    assert json.loads((tmp_path / "ens" / "config.json").read_text())["threshold"] == record["threshold"]


def test_the_cross_validated_refit_keeps_one_evaluated_tuple(tmp_path: Path) -> None:
    """Never a median per key (pairs no fold evaluated): a head fitted on dev refits with the
    best fold's whole tuple; a memory head refits its vote on train + dev, leave-one-out."""
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    probe = run(cv_config(root, tmp_path / "cache", head="linear-probe"))
    for cal in probe["calibration"]:
        assert len(cal["fold_fitted"]) == 3 and cal["fitted"] in cal["fold_fitted"]
    memory = run(cv_config(root, tmp_path / "cache", head="retrieval"))
    for cal in memory["calibration"]:
        assert cal["fitted"] == {"k_": cal["k"], "temperature_": cal["temperature"],
                                 "alpha_": cal["alpha"]} and "loo_auroc" in cal
