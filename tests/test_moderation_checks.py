"""What scoring commands check and say before any model loads: inputs the model cannot
score, and thresholds that put nearly everything in one class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from memetrm.cli.checks import dev_share, warn_one_class, warn_threshold
from memetrm.cli.main import app
from memetrm.evaluation.saved import evaluate_scores

runner = CliRunner()


def config_only_model(tmp_path: Path, fields: list[str], **extra) -> Path:
    """A model folder with a config.json and no weights: loading it would fail, so a test
    that gets a clear input error has proved the check ran before any load."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"head": "mlp", "fields": fields,
                                                   "threshold": 0.5, **extra}))
    return model


def test_predict_refuses_text_only_input_for_an_image_model_before_loading(tmp_path: Path) -> None:
    model = config_only_model(tmp_path, ["image", "text"])
    res = runner.invoke(app, ["predict", "--model", str(model), "--text", "hello"])
    assert res.exit_code == 2 and "pass --image" in res.output, res.output


def test_predict_names_the_missing_caption_of_a_text_caption_model(tmp_path: Path) -> None:
    model = config_only_model(tmp_path, ["text", "caption@mpnet-effnet"])
    res = runner.invoke(app, ["predict", "--model", str(model), "--text", "hello"])
    assert res.exit_code == 2 and "--caption" in res.output, res.output


def test_a_dev_quantile_table_gives_the_share_a_threshold_flags() -> None:
    config = {"dev_quantiles": np.linspace(0.0, 0.4, 101).tolist()}
    assert dev_share(config, 0.2) == pytest.approx(0.5)
    assert dev_share(config, 0.8) == 1.0  # nothing flagged: all in one class
    assert dev_share({}, 0.5) is None  # a model saved before the table existed


def test_a_manual_threshold_that_flags_nothing_gets_a_warning(capsys) -> None:
    warn_threshold({"threshold": 0.3, "dev_quantiles": np.linspace(0, 0.4, 101).tolist()}, 0.8)
    err = capsys.readouterr().err
    assert "set by --threshold" in err and "100%" in err


def test_a_dev_chosen_threshold_that_splits_dev_gets_no_warning(capsys) -> None:
    warn_threshold({"threshold": 0.2, "dev_quantiles": np.linspace(0, 0.4, 101).tolist()}, None)
    assert "warning" not in capsys.readouterr().err


def test_evaluate_warns_when_the_threshold_labels_the_split_one_class(capsys) -> None:
    warn_one_class(np.full(50, 0.3), 0.035, "hm/test_seen", manual=False)
    err = capsys.readouterr().err
    assert "hm/test_seen" in err and "chosen on dev" in err


def test_evaluation_reports_the_majority_class_rate_beside_accuracy() -> None:
    y = np.array([0] * 7 + [1] * 3)
    report = evaluate_scores(y, np.linspace(0, 1, 10), 0.5, ["no", "yes"], n_boot=10)
    assert report["majority_rate"] == pytest.approx(0.7)


@pytest.mark.parametrize("command", [[], ["train"], ["list"], ["predict"]])
def test_help_reads_as_plain_text(command: list[str]) -> None:
    res = runner.invoke(app, [*command, "--help"])
    assert res.exit_code == 0
    assert "<bool>" not in res.output and "``" not in res.output
    if command == ["train"]:
        assert "Seeds per head [default: 5]." in " ".join(res.output.split())


@pytest.mark.parametrize(("alpha", "warned"), [(0.0, True), (0.5, False)])
def test_memory_add_says_when_the_memory_cannot_change_scores(tmp_path: Path, monkeypatch,
                                                              alpha: float, warned: bool) -> None:
    import memetrm.serving.memory as serving_memory

    model = config_only_model(tmp_path, ["image", "text"],
                              fitted={"": {"k_": 5, "temperature_": 0.05, "alpha_": alpha}})
    monkeypatch.setattr(serving_memory, "add_to_memory", lambda *a, **k: 447)
    rows = tmp_path / "new.jsonl"
    rows.write_text('{"id": "x", "label": 1, "text": "hi"}\n')
    res = runner.invoke(app, ["memory", "add", "--model", str(model), "--input", str(rows)])
    assert res.exit_code == 0 and "holds 447 memes" in res.output, res.output
    assert ("change no score" in " ".join(res.output.split())) == warned
