"""Config precedence: defaults < head preset < YAML < typed options < --set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.config import load_run_config
from memetrm.errors import ConfigError
from memetrm.training.runner import resolved_config

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def print_config(*args: str) -> dict:
    res = runner.invoke(app, ["train", *args, "--print-config"])
    assert res.exit_code == 0, res.output
    return yaml.safe_load(res.stdout)


def test_readme_config_example_keeps_the_yaml_head_and_dataset() -> None:
    """``--config configs/trm-seed.yaml --set seeds=3`` trains the YAML's head on its dataset."""
    cfg = print_config("--config", str(REPO / "configs" / "trm-seed.yaml"), "--set", "seeds=3")
    assert (cfg["dataset"], cfg["head"], cfg["seeds"]) == ("hateful_memes", "trm", 3)
    assert cfg["fields"] == ["text", "caption"]
    # the head preset's training options, under the YAML's own
    assert cfg["train"]["lr"] == 1e-4 and cfg["train"]["epochs"] == 30
    assert cfg["train"]["ema"] == 0.999
    # --set dataset=... changes only the dataset
    cfg = print_config("--config", str(REPO / "configs" / "trm-seed.yaml"),
                       "--set", "dataset=multioff")
    assert (cfg["dataset"], cfg["head"], cfg["train"]["lr"]) == ("multioff", "trm", 1e-4)


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("head: trm\nseeds: 3\ntrain:\n  lr: 0.01\n  batch_size: 32\n")
    # YAML over the preset (lr 1e-4) and defaults; typed --seeds over YAML; --set over both
    cfg = print_config("--config", str(p), "--seeds", "2", "--set", "train.batch_size=16")
    assert (cfg["head"], cfg["seeds"]) == ("trm", 2)
    assert (cfg["train"]["lr"], cfg["train"]["batch_size"]) == (0.01, 16)
    assert cfg["train"]["weight_decay"] == 0.05  # preset, untouched by the YAML
    assert cfg["head_cfg"]["n_sup"] == 8 and cfg["train"]["patience"] == 8  # defaults
    # options not typed never override the file
    assert print_config("--config", str(p))["seeds"] == 3
    # --set beats a typed option
    assert print_config("--config", str(p), "--seeds", "2", "--set", "seeds=4")["seeds"] == 4


def test_preset_head_options_under_user_options() -> None:
    cfg = resolved_config(load_run_config(None, ["head_cfg.map_dim=8"], head="hateclipper-cross"))
    assert cfg["head_cfg"]["fusion"] == "cross" and cfg["head_cfg"]["map_dim"] == 8
    assert resolved_config(load_run_config(head="hateclipper-cross"))["head_cfg"]["map_dim"] == 32


@pytest.mark.parametrize("override, message", [
    (["nope=1"], "unknown config key"),
    (["seeds=0"], "seeds must be a positive integer"),
    (["train.epochs=0"], "train.epochs must be a positive integer"),
    (["train.lr=abc"], "train.lr must be a number"),
    (["train.nope=1"], "unknown train option"),
    (["head_cfg.nope=1"], "has no option"),
    (["on_missing_image=ignore"], "on_missing_image must be one of"),
])
def test_bad_settings_are_named(override: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolved_config(load_run_config(None, override))


def test_bad_setting_on_the_command_line_exits_2_without_traceback() -> None:
    res = runner.invoke(app, ["train", "--set", "train.lr=abc", "--print-config"])
    assert res.exit_code == 2 and "train.lr must be a number" in res.output
    assert "Traceback" not in res.output
