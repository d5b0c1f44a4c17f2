"""Config precedence: defaults < head preset < YAML < typed options < --set."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.config import MAX_CONFIG_FILE_BYTES, dump_yaml, load_run_config, load_yaml
from memetrm.errors import ConfigError
from memetrm.training.runner import resolved_config

from .test_bad_input import cli_isolated

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def print_config(*args: str) -> dict:
    # the environment stands in for --data-root/--cache-dir (``make test`` sets MEMETRM_DATA):
    # these tests are about the options alone
    res = runner.invoke(app, ["train", *args, "--print-config"],
                        env={"MEMETRM_DATA": None, "MEMETRM_CACHE": None})
    assert res.exit_code == 0, res.output
    return load_yaml(res.stdout)


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
    (["train.lr=.inf"], r"train.lr must be a number in \(0, 10\], got inf"),
    (["train.lr=.nan"], "train.lr must be a number in"),
    (["train.lr=1e30"], "train.lr must be a number in"),
    (["train.lr=0"], "train.lr must be a number in"),
    (["train.weight_decay=.nan"], r"train.weight_decay must be a number in \[0, 10\]"),
    (["train.weight_decay=-.inf"], "train.weight_decay must be a number in"),
    (["train.warmup_ratio=.nan"], "train.warmup_ratio must be a number in"),
    (["train.grad_clip=.inf"], "train.grad_clip must be a number in"),
    (["train.ema=.nan"], "train.ema must be a decay in"),
    (["seeds=1_000_000"], "seeds must be a positive integer up to 1,000"),
    (["cv=100000"], r"cv must be 0 \(select on dev\) or a number of folds in \[2, 100\]"),
    (["bootstrap=1000000000000"], "bootstrap must be an integer in"),
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
    path.write_text(dump_yaml(data))
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
    # YAML 1.2 core schema, not 1.1: no yes/no booleans, no leading-zero octals
    ("no", "no"), ("yes", "yes"), ("off", "off"), ("010", 10),
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


def test_yaml_1_2_in_files_and_on_the_command_line(tmp_path: Path) -> None:
    """``no`` is a string (a dataset may be called that), ``010`` is ten, in a file as on the
    command line."""
    p = tmp_path / "c.yaml"
    p.write_text("dataset: no\nseeds: 010\ntrain:\n  lr: 1e-4\neval_splits: [dev, test]\n")
    cfg = print_config("--config", str(p))
    assert (cfg["dataset"], cfg["seeds"], cfg["train"]["lr"]) == ("no", 10, 1e-4)
    assert cfg["eval_splits"] == ["dev", "test"]
    cfg = print_config("--set", "dataset=no", "--set", "seeds=010", "--set", "train.lr=1e-4",
                       "--set", "eval_splits=[dev, test]")
    assert (cfg["dataset"], cfg["seeds"], cfg["train"]["lr"]) == ("no", 10, 1e-4)
    assert cfg["eval_splits"] == ["dev", "test"]


def test_print_config_reads_back_to_the_same_config(tmp_path: Path) -> None:
    """What ``--print-config`` writes is a config file that resolves to the same settings
    (a string like ``no`` or ``010`` stays a string)."""
    first = print_config("--set", "dataset=no", "--set", "encoder='010'")
    assert (first["dataset"], first["encoder"]) == ("no", "010")
    p = tmp_path / "c.yaml"
    p.write_text(dump_yaml(first))
    assert print_config("--config", str(p)) == first


def test_a_non_finite_learning_rate_exits_2_naming_the_key() -> None:
    res = runner.invoke(app, ["train", "--set", "train.lr=.nan", "--print-config"])
    assert res.exit_code == 2 and "train.lr must be a number in" in res.output, res.output
    assert "Traceback" not in res.output


BILLION_LAUGHS = "head_cfg:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  {b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdef", "bcdefg", strict=True)
) + f"eval_splits: [{', '.join(['*g'] * 9)}]\n"


def test_hostile_config_files_fail_fast_with_exit_2(tmp_path: Path) -> None:
    """An alias bomb is refused before it expands; a device or a pipe is refused before it is
    read (reading /dev/zero never ends, opening a pipe waits for a writer)."""
    bomb, pipe = tmp_path / "bomb.yaml", tmp_path / "pipe.yaml"
    bomb.write_text(BILLION_LAUGHS)
    os.mkfifo(pipe)
    cases = {bomb: "bomb.yaml:3: not valid YAML (aliases (*name) are not allowed",
             Path("/dev/zero"): "/dev/zero: a config must be a regular file",
             pipe: "pipe.yaml: a config must be a regular file"}
    results = cli_isolated(*(["train", "--config", str(p), "--print-config"] for p in cases))
    for (code, output), needle in zip(results, cases.values(), strict=True):
        assert code == 2 and needle in output.replace("\n", ""), output
        assert "Traceback" not in output


def test_yaml_aliases_are_refused_where_they_stand(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("head: &h mlp\ndataset: *h\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: not valid YAML \(aliases"):
        load_run_config(p)


@pytest.mark.parametrize("case", ["not UTF-8", "too large", "a folder", "missing"])
def test_an_unreadable_config_file_exits_2_naming_it(tmp_path: Path, case: str) -> None:
    p = tmp_path / "c.yaml"
    needle = {"not UTF-8": "c.yaml:2: not valid UTF-8 (byte 0xe9)",
              "too large": f"above the limit of {MAX_CONFIG_FILE_BYTES:,} bytes",
              "a folder": "must be a regular file", "missing": "No such file"}[case]
    if case == "not UTF-8":
        p.write_bytes(b"head: mlp\ndataset: caf\xe9\n")
    elif case == "too large":
        p.write_text("head: mlp\n" + "# padding\n" * (MAX_CONFIG_FILE_BYTES // 10))
    elif case == "a folder":
        p.mkdir()
    res = runner.invoke(app, ["train", "--config", str(p), "--print-config"])
    assert res.exit_code == 2, res.output
    assert needle in res.output and str(p) in res.output.replace("\n", "")
    assert "Traceback" not in res.output


def test_report_does_not_override_the_config_out_dir(tmp_path: Path) -> None:
    """``--report`` takes out_dir by the one rule: the file's, unless one is typed; with none
    at all it is an error before anything trains, not a folder chosen behind your back."""
    p = tmp_path / "c.yaml"
    p.write_text(f"out_dir: {tmp_path / 'mine'}\n")
    report = str(tmp_path / "r.md")
    assert print_config("--config", str(p), "--report", report)["out_dir"] == str(tmp_path / "mine")
    assert print_config("--config", str(p), "--report", report, "--out-dir",
                        str(tmp_path / "typed"))["out_dir"] == str(tmp_path / "typed")
    res = runner.invoke(app, ["train", "--report", report, "--print-config"])
    assert res.exit_code == 2 and "--out-dir" in res.output, res.output


def test_a_sweep_puts_each_run_under_the_config_out_dir(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(f"out_dir: {tmp_path / 'runs'}\n")
    res = runner.invoke(app, ["train", "--config", str(p), "--heads", "mlp,linear",
                              "--print-config"], env={"MEMETRM_DATA": None, "MEMETRM_CACHE": None})
    assert res.exit_code == 0, res.output
    docs = [load_yaml(d) for d in re.split(r"(?m)^(?=dataset:)", res.stdout) if d.strip()]
    assert len(docs) == 2
    assert [d["out_dir"] for d in docs] == [str(tmp_path / "runs" / h) for h in ("mlp", "linear")]


def test_allow_outside_images_can_be_turned_off_over_the_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("allow_outside_images: true\n")
    assert print_config("--config", str(p))["allow_outside_images"] is True
    assert print_config("--config", str(p), "--no-allow-outside-images")[
        "allow_outside_images"] is False
