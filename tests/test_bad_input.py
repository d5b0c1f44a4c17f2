"""Bad input, one case per test: exit code 2, no traceback, and the file, line or id named."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.errors import ConfigError
from memetrm.features.cache import FeatureCache
from memetrm.heads import create_head, save_pretrained
from memetrm.serving.batch import predict_batch

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .conftest import make_image

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
#: when set, each case appends its exit code and first error line here (jsonl)
CASE_LOG = os.environ.get("MEMETRM_CASE_LOG")


def rows(n: int, prefix: str, **extra) -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"meme {prefix} {i} {'bad' if i % 2 else 'good'}",
             "label": i % 2, **extra} for i in range(n)]


def write(root: Path, split: str, items: list[dict] | str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{split}.jsonl"
    path.write_text(items if isinstance(items, str)
                    else "".join(json.dumps(r) + "\n" for r in items))
    return path


@pytest.fixture
def folder(tmp_path: Path, monkeypatch) -> Path:
    """A valid text-only dataset: train 16, dev 8, test 8."""
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "memes"
    for split, n in (("train", 16), ("dev", 8), ("test", 8)):
        write(root, split, rows(n, split))
    return root


def train(root: Path, *args: str):
    return runner.invoke(app, ["train", "--dataset", str(root), "--encoder", "test-fake",
                               "--seeds", "1", "--set", "train.epochs=1", *args])


#: runs each command line (a JSON list of lists) through the CLI, printing exit code and output
_CLI_RUNS = """
import json, sys
from typer.testing import CliRunner
from tests import fakes
from memetrm.cli.main import app
for args in json.loads(sys.argv[1]):
    res = CliRunner().invoke(app, args)
    print(json.dumps([res.exit_code, res.output]))
"""


def cli_isolated(*commands: list[str]) -> list[tuple[int, str]]:
    """(exit code, output) of each command, run in a process of its own with a memory cap and
    a deadline: input that could hang or exhaust memory fails a test there, not the machine."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    done = subprocess.run([sys.executable, "-c", _CLI_RUNS, json.dumps(commands)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, preexec_fn=cap)
    assert done.returncode == 0, done.stderr[-2000:]
    return [tuple(json.loads(line)) for line in done.stdout.splitlines()]


def assert_clear_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "error:" in res.output
    for n in needles:
        assert n in res.output, (n, res.output)
    if CASE_LOG:  # the table of cases and messages, for the docs
        lines = res.output.splitlines()
        i = next(i for i, line in enumerate(lines) if line.startswith("error:"))
        first = " ".join(x.strip() for x in lines[i:i + 2 if lines[i].endswith(":") else i + 1])
        with open(CASE_LOG, "a") as f:
            f.write(json.dumps({"case": os.environ["PYTEST_CURRENT_TEST"].split("::")[-1]
                                .removesuffix(" (call)"), "exit": res.exit_code,
                                "message": first}) + "\n")


def test_valid_folder_trains(folder: Path) -> None:
    """The control for every case below: the same folder, unbroken, trains."""
    assert train(folder).exit_code == 0


@pytest.mark.parametrize("split", ["train", "test"])
def test_row_without_label(folder: Path, split: str) -> None:
    items = rows(16 if split == "train" else 8, split)
    del items[3]["label"]
    write(folder, split, items)
    assert_clear_error(train(folder), f"{split}3", "no label")


@pytest.mark.parametrize("n, labels", [(1, [1]), (4, [0, 0, 0, 0])])
@pytest.mark.parametrize("split", ["dev", "test", "train"])
def test_split_too_small_or_one_class(folder: Path, split: str, n: int, labels: list[int]) -> None:
    items = [{**r, "label": y} for r, y in zip(rows(n, split), labels, strict=True)]
    write(folder, split, items)
    assert_clear_error(train(folder), f"{split} split", "both classes")


def test_non_utf8_bytes_name_the_line(folder: Path) -> None:
    path = folder / "train.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[4] = b'{"id": "x", "text": "caf\xe9", "label": 0}\n'
    path.write_bytes(b"".join(lines))
    assert_clear_error(train(folder), "train.jsonl:5", "not valid UTF-8")


def test_byte_order_mark_is_accepted(folder: Path) -> None:
    path = folder / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert train(folder).exit_code == 0


def test_many_bad_lines_are_listed_with_the_total(folder: Path) -> None:
    good = "".join(json.dumps(r) + "\n" for r in rows(16, "train"))
    write(folder, "train", good + "{not json\n" * 201)
    res = train(folder)
    assert_clear_error(res, "201 bad lines", "train.jsonl:17", "train.jsonl:36", "and 181 more")
    assert "train.jsonl:37:" not in res.output  # only the first 20 are listed
    res = train(folder, "--on-bad-line", "skip")
    assert res.exit_code == 0, res.output
    assert "skipped 201 bad lines" in res.output


def test_image_paths_outside_the_folder(folder: Path, tmp_path: Path) -> None:
    outside = make_image(tmp_path / "elsewhere" / "x.png", 0)
    items = rows(16, "train")
    items[2]["img"] = "../elsewhere/x.png"
    write(folder, "train", items)
    res = runner.invoke(app, ["extract", "--dataset", str(folder), "--encoder", "test-fake",
                              "--fields", "text", "--splits", "train"])
    assert_clear_error(res, "train.jsonl:3", "outside the dataset folder")
    res = runner.invoke(app, ["extract", "--dataset", str(folder), "--encoder", "test-fake",
                              "--fields", "text", "--splits", "train", "--allow-outside-images"])
    assert res.exit_code == 0, res.output
    assert outside.is_file()


def test_declared_images_keep_the_image_field_even_if_the_first_ones_are_missing(
        folder: Path) -> None:
    items = [{**r, "img": f"img/{r['id']}.png"} for r in rows(30, "train")]
    for r in items[20:]:
        make_image(folder / r["img"], 1)
    write(folder, "train", items)
    res = runner.invoke(app, ["extract", "--dataset", str(folder), "--encoder", "test-fake",
                              "--splits", "train"])
    assert_clear_error(res, "20 images missing", "train0")


def test_unknown_missing_image_policy(folder: Path) -> None:
    assert_clear_error(train(folder, "--on-missing-image", "ignore"), "on_missing_image",
                       "ignore")


def test_unknown_split_names_the_folder(folder: Path) -> None:
    res = runner.invoke(app, ["extract", "--dataset", str(folder), "--encoder", "test-fake",
                              "--splits", "nosuch"])
    assert_clear_error(res, str(folder), "no split 'nosuch'", "have: dev, test, train")


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "seeds must be a positive integer"),
    (["--set", "train.epochs=0"], "train.epochs must be a positive integer"),
    (["--set", "train.lr=abc"], "train.lr must be a number"),
    (["--set", "head_cfg.hidden=-3"], "head 'mlp' cannot be built"),
    (["--set", "train.lr=.inf"], "train.lr must be a number in (0, 10], got inf"),
    (["--set", "train.lr=1e30"], "train.lr must be a number in (0, 10], got 1e+30"),
    (["--set", "train.lr=.nan"], "train.lr must be a number in (0, 10], got nan"),
    (["--set", "train.weight_decay=.nan"], "train.weight_decay must be a number in [0, 10]"),
])
def test_bad_settings(folder: Path, args: list[str], message: str) -> None:
    assert_clear_error(train(folder, *args), message)


def test_train_test_overlap_is_reported(folder: Path, tmp_path: Path) -> None:
    write(folder, "test", rows(8, "train"))  # the test ids are train ids
    out = tmp_path / "r.json"
    res = train(folder, "--json", str(out))
    assert res.exit_code == 0, res.output
    assert "the train split shares 8 ids with an evaluated split" in res.output
    assert json.loads(out.read_text())["train_overlap_ids"][:2] == ["train0", "train1"]


def test_damaged_cache_entry_is_recomputed(folder: Path, tmp_path: Path) -> None:
    assert train(folder).exit_code == 0
    cache = FeatureCache(tmp_path / "cache")
    entries = list((tmp_path / "cache" / "features").iterdir())
    for e in entries:  # one row too few for the ids
        save_file({"text": torch.zeros(3, 5)}, str(e / "features.safetensors"))
    ids = json.loads((entries[0] / "meta.json").read_text())["ids"]
    assert cache.load(entries[0].name, ids) is None
    assert train(folder).exit_code == 0


def test_a_diverged_training_saves_nothing_and_exits_2(folder: Path, tmp_path: Path,
                                                       monkeypatch) -> None:
    """Training that ends in NaN weights (however it got there) never leaves a model behind."""
    from memetrm.training import runner as run

    real_fit = run.fit

    def diverging(head, *args, **kwargs):
        result = real_fit(head, *args, **kwargs)
        with torch.no_grad():
            for p in result.head.parameters():
                p.fill_(float("nan"))
        return result

    monkeypatch.setattr(run, "fit", diverging)
    res = train(folder, "--save", str(tmp_path / "m"))
    assert_clear_error(res, "not saved", "NaN or infinite", "train.lr")
    assert not (tmp_path / "m").exists()


def test_a_head_with_a_nan_parameter_is_not_saved(tmp_path: Path) -> None:
    head = create_head("mlp", {"text": 5}, hidden=8)
    with torch.no_grad():
        next(head.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ConfigError, match="not saved: 1 tensor"):
        save_pretrained(head, tmp_path / "model", encoder="test-fake", fields=["text"],
                        threshold=0.5)
    assert not (tmp_path / "model").exists()


def test_a_training_ids_file_that_is_not_utf8_exits_2(folder: Path, tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"train0\ntrain\xff1\n")
    assert_clear_error(train(folder, "--train-ids", str(ids)), "ids.txt:2: not valid UTF-8")


def test_a_device_as_training_ids_is_refused_before_reading(folder: Path) -> None:
    [(code, output)] = cli_isolated(["train", "--dataset", str(folder), "--encoder", "test-fake",
                                     "--seeds", "1", "--train-ids", "/dev/zero"])
    assert code == 2 and "/dev/zero: a training-ids file must be a regular file" in output, output


def test_evaluate_keeps_the_models_data_settings_unless_typed(folder: Path,
                                                              tmp_path: Path) -> None:
    """evaluate takes the settings the model was trained with (here: skip bad lines) as train
    takes a config file's: an option typed beats them, one not typed never does."""
    write(folder, "test", "".join(json.dumps(r) + "\n" for r in rows(8, "test")) + "{bad\n")
    model = tmp_path / "m"
    assert train(folder, "--on-bad-line", "skip", "--save", str(model)).exit_code == 0
    res = runner.invoke(app, ["evaluate", "--model", str(model)])
    assert res.exit_code == 0 and "skipped 1 bad line" in res.output, res.output
    assert_clear_error(runner.invoke(app, ["evaluate", "--model", str(model), "--on-bad-line",
                                           "error"]), "test.jsonl:9", "1 bad line:")


# --- saved models ----------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    head = create_head("mlp", {"text": 5}, hidden=8)
    return save_pretrained(head, tmp_path / "model", encoder="test-fake", fields=["text"],
                           threshold=0.5, dataset="x")


def _break(model: Path, case: str) -> None:
    weights, config = model / "model.safetensors", model / "config.json"
    cfg = json.loads(config.read_text())
    if case == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif case == "not safetensors":
        weights.write_bytes(b"\x80\x04pickle, not safetensors")
    elif case == "config not JSON":
        config.write_text("{nope")
    elif case == "weights missing":
        weights.unlink()
    elif case == "bogus dimensions":
        config.write_text(json.dumps({**cfg, "input_dims": {"text": -4}}))
    elif case == "non-numeric threshold":
        config.write_text(json.dumps({**cfg, "threshold": "high"}))
    elif case == "no threshold":
        config.write_text(json.dumps({k: v for k, v in cfg.items() if k != "threshold"}))
    elif case == "wrong tensor shapes":
        config.write_text(json.dumps({**cfg, "config": {**cfg["config"], "hidden": 16}}))
    elif case == "NaN weights":
        from safetensors.torch import load_file

        state = load_file(str(weights))
        state = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
        save_file(state, str(weights))


BROKEN = ["truncated weights", "not safetensors", "config not JSON", "weights missing",
          "bogus dimensions", "non-numeric threshold", "no threshold", "wrong tensor shapes",
          "NaN weights"]


@pytest.mark.parametrize("case", BROKEN)
@pytest.mark.parametrize("command", ["predict", "evaluate", "serve"])
def test_broken_checkpoint(model_dir: Path, folder: Path, tmp_path: Path, case: str,
                           command: str) -> None:
    _break(model_dir, case)
    args = {"predict": ["--text", "hello", "--image", str(make_image(tmp_path / "m.png", 0))],
            "evaluate": ["--dataset", str(folder), "--split", "test"],
            "serve": ["--port", "0"]}[command]
    res = runner.invoke(app, [command, "--model", str(model_dir), *args])
    assert_clear_error(res, "model")
    assert str(model_dir) in res.output


def test_predict_on_a_missing_file_fails_before_loading_the_model(tmp_path: Path) -> None:
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "no-model"), "--image",
                              str(tmp_path / "nope.png")])
    assert_clear_error(res, "nope.png", "no such file")


def test_batch_predict_counts_duplicates_and_isolates_bad_rows(model_dir: Path,
                                                               tmp_path: Path) -> None:
    from memetrm.serving.predictor import Predictor

    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join([
        json.dumps({"id": "a", "text": "hello"}).encode() + b"\n",
        json.dumps({"id": "a", "text": "hello again"}).encode() + b"\n",
        b'{"id": "b", "text": "caf\xe9"}\n',
        json.dumps({"id": "c", "text": 7}).encode() + b"\n",
        json.dumps({"id": "d", "text": "fine"}).encode() + b"\n",
    ]))
    out = tmp_path / "out.jsonl"
    summary = predict_batch(Predictor(model_dir, device="cpu"), src, out, progress=False)
    assert (summary.scored, summary.errors, summary.duplicates) == (2, 2, 1)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in got] == ["a", "line 3", "c", "d"]
    assert "in.jsonl:3" in got[1]["error"] and "UTF-8" in got[1]["error"]
    assert "must be a string" in got[2]["error"]
