"""``compare`` over heads x field sets: combinations that cannot be built are skipped before
anything trains, and runs that finished are kept when a later one fails."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.errors import DataError
from memetrm.training import runner as training_runner

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .test_selection import write_dataset

cli = CliRunner()


def compare_args(tmp_path: Path, heads: str) -> list[str]:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    return ["compare", "--dataset", str(root), "--encoder", "test-fake", "--cache-dir",
            str(tmp_path / "c"), "--device", "cpu", "--heads", heads, "--field-sets",
            "text;text,text@test-fake", "--seeds", "1", "--set", "train.epochs=2", "--set",
            "bootstrap=0", "--json", str(tmp_path / "out.json")]


def test_compare_skips_a_combination_that_cannot_be_built_before_training(tmp_path: Path) -> None:
    res = cli.invoke(app, compare_args(tmp_path, "linear,hateclipper-align"))
    assert res.exit_code == 0, res.output
    skip = res.output.index("skipping")
    assert "hateclipper-align on text:" in res.output[skip:skip + 200]
    assert skip < res.output.index("linear on text")  # warned before the first run trained
    runs = json.loads((tmp_path / "out.json").read_text())
    assert [(r["head"], r["fields"]) for r in runs] == [
        ("linear", ["text"]), ("linear", ["text", "text@test-fake"]),
        ("hateclipper-align", ["text", "text@test-fake"])]


def test_compare_keeps_finished_runs_when_a_later_one_fails(tmp_path: Path, monkeypatch) -> None:
    real = training_runner.run_models

    def flaky(cfg):
        if cfg.head == "mlp":
            raise DataError("disk full")
        return real(cfg)

    monkeypatch.setattr(training_runner, "run_models", flaky)
    res = cli.invoke(app, compare_args(tmp_path, "mlp,linear"))
    assert res.exit_code == 2 and "2 of 4 runs failed" in res.output, res.output
    runs = json.loads((tmp_path / "out.json").read_text())
    assert [r["head"] for r in runs] == ["linear", "linear"]
