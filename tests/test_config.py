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
    # the environment stands in for --data-root/--cache-dir (``make test`` sets MEMETRM_DATA):
    # these tests are about the options alone
    res = runner.invoke(app, ["train", *args, "--print-config"],
                        env={"MEMETRM_DATA": None, "MEMETRM_CACHE": None})
    assert res.exit_code == 0, res.output
    return yaml.safe_load(res.stdout)


def test_readme_config_example_keeps_the_yaml_head_and_dataset() -> None:
    """``--config configs/trm-origin.yaml --set seeds=3`` trains the YAML's head on its dataset."""
    cfg = print_config("--config", str(REPO / "configs" / "trm-origin.yaml"), "--set", "seeds=3")
    assert (cfg["dataset"], cfg["head"], cfg["seeds"]) == ("hateful_memes", "trm", 3)
    assert cfg["fields"] == ["text", "caption"]
    # the head preset's training options, under the YAML's own
    assert cfg["train"]["lr"] == 1e-4 and cfg["train"]["epochs"] == 30
    assert cfg["train"]["ema"] == 0.999
    # --set dataset=... changes only the dataset
    cfg = print_config("--config", str(REPO / "configs" / "trm-origin.yaml"),
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
    cfg = resolved_config(load_run_config(None, ["head_cfg.map_dim=8"], {"head": "hateclipper-cross"}))
    assert cfg["head_cfg"]["fusion"] == "cross" and cfg["head_cfg"]["map_dim"] == 8
    assert resolved_config(load_run_config(typed={"head": "hateclipper-cross"}))["head_cfg"]["map_dim"] == 32


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


#: per typed option of ``train``: its flag, then a value for the YAML, one to type, one to --set
TYPED_SAMPLES = {
    "dataset": ("--dataset", "hateful_memes", "multioff", "my_memes"),
    "encoder": ("--encoder", "a", "b", "c"),
    "head": ("--head", "mlp", "linear", "trm"),
    "seeds": ("--seeds", 2, 3, 4),
    "cv": ("--cv", 2, 3, 4),
    "fields": ("--fields", ["text"], ["text", "image"], ["caption"]),
    "data_root": ("--data-root", "/a", "/b", "/c"),
    "cache_dir": ("--cache-dir", "/a", "/b", "/c"),
    "on_missing_image": ("--on-missing-image", "skip", "error", "skip"),
    "on_bad_line": ("--on-bad-line", "skip", "error", "skip"),
    "allow_outside_images": ("--allow-outside-images", False, True, False),
    "device": ("--device", "cuda:7", "cpu", "mps"),
    "precision": ("--precision", "fp16", "bf16", "fp32"),
    "save": ("--save", "/a", "/b", "/c"),
    "out_dir": ("--out-dir", "/a", "/b", "/c"),
    "threshold_metric": ("--threshold-metric", "accuracy", "balanced-accuracy", "f1"),
    "train_ids": ("--train-ids", "/a.txt", "/b.txt", "/c.json"),
    "calibration": ("--calibration", "platt", "none", "isotonic"),
}


def test_every_typed_option_is_covered() -> None:
    import inspect

    from memetrm.cli.train import TYPED_KEYS, train

    not_config = {"field_sets", "ensemble", "config", "set_", "json_out", "report", "print_config",
                  "wide"}
    assert set(inspect.signature(train).parameters) - not_config == set(TYPED_KEYS)
    assert set(TYPED_SAMPLES) == set(TYPED_KEYS)


@pytest.mark.parametrize("param", sorted(TYPED_SAMPLES))
def test_typed_option_beats_the_yaml_and_set_beats_both(param: str, tmp_path: Path) -> None:
    from memetrm.cli.train import TYPED_KEYS

    flag, in_yaml, typed, in_set = TYPED_SAMPLES[param]
    key = TYPED_KEYS[param]
    data: dict = {}
    node = data
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = in_yaml
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    cli = [flag] if typed is True else [flag, ",".join(typed) if isinstance(typed, list) else str(typed)]

    def value(cfg: dict) -> object:
        for p in key.split("."):
            cfg = cfg[p]
        return cfg

    assert value(print_config("--config", str(path))) == in_yaml
    assert value(print_config("--config", str(path), *cli)) == typed
    assert value(print_config("--config", str(path), *cli, "--set", f"{key}={in_set}")) == in_set


@pytest.mark.parametrize("text, value", [
    ("1e-4", 1e-4), ("3", 3), ("0.5", 0.5), ("true", True), ("[test_unseen]", ["test_unseen"]),
    ("[dev, test]", ["dev", "test"]), ("embed", "embed"), ("1e5", 100000.0), ("-2E-3", -0.002),
])
def test_set_values_follow_yaml(text: str, value: object) -> None:
    from memetrm.config import parse_value

    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_a_list_with_an_e_reaches_its_field() -> None:
    cfg = print_config("--set", "eval_splits=[test_unseen]", "--set", "train.lr=1e-4")
    assert cfg["eval_splits"] == ["test_unseen"] and cfg["train"]["lr"] == 1e-4


@pytest.mark.parametrize("override, message", [
    (["seeds=three"], "seeds must be an integer"),
    (["eval_splits=dev"], "eval_splits must be a list"),
    (["fields=3"], "fields must be a list or null"),
    (["train.patience=soon"], "train.patience must be an integer"),
    (["head_cfg.hidden=wide"], "head_cfg.hidden must be an integer"),
])
def test_values_are_checked_against_their_field_type(override: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolved_config(load_run_config(None, override))


def test_a_yaml_file_reads_exponent_floats_as_numbers(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 1e-4\n  weight_decay: 5e-2\n")
    cfg = resolved_config(load_run_config(p))
    assert (cfg["train"]["lr"], cfg["train"]["weight_decay"]) == (1e-4, 5e-2)
