"""A memory head's labelled memes: built from train, grown by ``memory add`` without
retraining, bad rows refused; its whole state (ids, fitted vote) travels with the module, and
its vote is fitted on the training memes leave-one-out, never on dev."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.config import RunConfig
from memetrm.features import FeatureSet
from memetrm.heads import create_head, from_pretrained, save_pretrained
from memetrm.heads.base import NotFittedError
from memetrm.heads.retrieval import calibrate_vote
from memetrm.serving.memory import add_to_memory
from memetrm.serving.predictor import Predictor
from memetrm.training import TrainConfig, fit, predict
from memetrm.training.engine import tensor_auroc
from memetrm.training.ensemble import save_ensemble, select_ensemble
from memetrm.training.runner import run, run_models

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .test_selection import write_dataset

#: fitted settings that let the memory's vote decide, whatever dev chose
VOTE_DECIDES = {"retrieval": {"alpha_": 4.0}, "rgcl": {"alpha_": 4.0, "logit_weight_": 0.0}}


@pytest.mark.parametrize("head_name", list(VOTE_DECIDES))
def test_memory_is_built_from_train_and_memory_add_changes_a_prediction(
        tmp_path: Path, head_name: str) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    res = run(RunConfig(dataset=str(root), encoder="test-fake", head=head_name, seeds=1,
                        fields=["text"], cache_dir=str(tmp_path / "c"), bootstrap=0,
                        train={"epochs": 3, "lr": 3e-3}, save=str(tmp_path / "m")))
    cal = res["calibration"][0]
    assert {"k", "temperature", "alpha"} <= set(cal)
    head, config = from_pretrained(tmp_path / "m")
    assert len(head.memory_ids) == len(head.bank) == 60  # the train split
    assert "memory_ids" not in json.dumps(config)  # ids live with the weights
    head.set_fitted(**VOTE_DECIDES[head_name])
    save_pretrained(head, tmp_path / "m", **{k: v for k, v in config.items()
                                             if k not in ("head", "config", "input_dims",
                                                          "token_dims", "fitted", "revision")})
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


def _features(n: int, seed: int, flip: bool = False) -> FeatureSet:
    """Text features whose first coordinate carries the label (``flip``: the other label)."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2).float()
    x = torch.randn(n, 8, generator=gen)
    x[:, 0] += 2 * (2 * y - 1)
    return FeatureSet([f"s{seed}-{i}" for i in range(n)], {"text": x}, 1 - y if flip else y)


@pytest.mark.parametrize("head_name", ["retrieval", "rgcl"])
def test_a_fitted_vote_does_not_exist_before_fitting(head_name: str) -> None:
    head = create_head(head_name, {"text": 8})
    with pytest.raises(NotFittedError, match="not fitted: k_"):
        _ = head.k_
    assert head.fitted() == {} and not head.is_fitted()
    head.remember(_features(20, 0).batch(), [str(i) for i in range(20)])
    head.eval()
    assert "neighbours" not in head.predict(_features(4, 1).batch())  # the scorer alone


@pytest.mark.parametrize("head_name", ["retrieval", "rgcl"])
def test_the_vote_is_fitted_on_train_leave_one_out_and_dev_never_changes_it(head_name: str) -> None:
    train = _features(60, 0)
    fitted = []
    for flip in (False, True):  # dev with every label flipped: only its epoch choice could move
        torch.manual_seed(0)
        head = create_head(head_name, {"text": 8}, hidden=16)
        result = fit(head, train, _features(30, 1, flip), TrainConfig(epochs=1, patience=0),
                     device="cpu")
        fitted.append(result.head.fitted())
        assert {"k", "temperature", "alpha", "loo_auroc"} <= set(result.calibration)
    assert fitted[0] == fitted[1]
    # what leave-one-out on train chooses: each meme scored by its neighbours, never itself
    head = result.head
    batch = train.batch()
    expected = calibrate_vote(head.scorer(batch), head.bank.own_neighbours(50), head.bank.labels,
                              batch["label"], tensor_auroc, head.cfg, head.vote_alone)
    assert fitted[1] == {a: expected[a.rstrip("_")] for a in head.fitted_attrs}


def test_an_ensemble_of_memory_heads_saves_reloads_and_grows(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    outs = [run_models(RunConfig(dataset=str(root), encoder="test-fake", head=name, seeds=1,
                                 fields=["text"], cache_dir=str(tmp_path / "c"), bootstrap=0,
                                 train={"epochs": 2, "lr": 3e-3}, device="cpu"))
            for name in ("retrieval", "rgcl")]
    for o in outs:
        o.runs[0].fit.head.set_fitted(alpha_=4.0)  # the vote counts in every member's score
    selection = select_ensemble(outs, 2, "f1", 0)
    save_ensemble(selection, tmp_path / "ens", provenance={})
    ens, _ = from_pretrained(tmp_path / "ens")
    test = outs[0].feats["test"]
    members = [o.runs[0].fit.head for o in selection["_chosen"]]  # ranked on dev
    assert {m.name for m in ens.members} == {"retrieval", "rgcl"}
    for member, saved in zip(ens.members, members, strict=True):
        assert member.fitted() == saved.fitted() and member.memory_ids == saved.memory_ids
    expected = torch.stack([predict(m, test)["prob"] for m in members]).mean(0)
    assert torch.allclose(predict(ens, test)["prob"], expected, atol=1e-6)
    meme = {"text": "cat cat cat"}
    (tmp_path / "add.jsonl").write_text("".join(
        json.dumps({"id": f"new{i}", "label": 1, **meme}) + "\n" for i in range(3)))
    assert add_to_memory(tmp_path / "ens", tmp_path / "add.jsonl", device="cpu") == 63
    grown, _ = from_pretrained(tmp_path / "ens")
    for member, saved in zip(grown.members, members, strict=True):
        assert member.memory_ids == [*saved.memory_ids, "new0", "new1", "new2"]
        assert member.fitted() == saved.fitted()


def test_a_folder_saved_before_extra_state_still_loads_its_ids_and_fitted_vote(tmp_path: Path) -> None:
    """Then ids sat beside the weights and fitted values only in config.json."""
    from memetrm.checkpoint import save_checkpoint

    head = create_head("retrieval", {"text": 16})
    head.remember({"text": torch.randn(4, 16), "label": torch.tensor([0., 1., 0., 1.])}, list("abcd"))
    config = {"head": "retrieval", "config": {}, "input_dims": {"text": 16}, "token_dims": {},
              "fitted": {"": {"k_": 5, "temperature_": 0.05, "alpha_": 1.0}}}
    save_checkpoint(tmp_path / "m", head, config, None, {"memory_ids": json.dumps({"bank": list("abcd")})})
    loaded, _ = from_pretrained(tmp_path / "m")
    assert loaded.memory_ids == list("abcd") and loaded.fitted() == config["fitted"][""]


def test_memory_add_and_a_list_edit_keep_the_saved_hnsw_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memetrm.layers import memory as memory_layer
    from memetrm.layers.memory import InnerProductIndex
    from memetrm.modelstore import republish

    monkeypatch.setattr(memory_layer, "APPROXIMATE_AFTER", 50)
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    run(RunConfig(dataset=str(root), encoder="test-fake", head="retrieval", seeds=1,
                  fields=["text"], cache_dir=str(tmp_path / "c"), bootstrap=0,
                  train={"epochs": 1}, save=str(tmp_path / "m")))
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["memory_index"]["bank"]

    def no_build(*_: object) -> None:
        raise AssertionError("the index was built again")

    monkeypatch.setattr(InnerProductIndex, "calibrate", no_build)
    (tmp_path / "add.jsonl").write_text("".join(
        json.dumps({"id": f"new{i}", "label": 1, "text": f"dog {i}"}) + "\n" for i in range(3)))
    assert add_to_memory(tmp_path / "m", tmp_path / "add.jsonl", device="cpu") == 63
    republish(tmp_path / "m", {"README.md": b"# a new card\n"})
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    grown = config["memory_index"]["bank"]
    assert grown["sha256"] != saved["sha256"] and grown["ef_search"] == saved["ef_search"]
    assert {"bank.faiss", "README.md"} <= set(config["manifest"])
    head, _ = from_pretrained(tmp_path / "m")
    assert len(head.bank._index) == 63
    answer = Predictor(tmp_path / "m", device="cpu").predict([None], [{"text": "dog 1"}])[0]
    assert answer["neighbours"][0]["id"] == "new1"


@pytest.mark.parametrize("head_name", list(VOTE_DECIDES))
def test_a_prediction_searches_the_memory_once_for_its_vote_and_its_neighbours(
        head_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    head = create_head(head_name, {"text": 16}).eval()
    head.remember({"text": torch.randn(40, 16), "label": (torch.arange(40) % 2).float()},
                  [f"m{i}" for i in range(40)])
    head.set_fitted(k_=5, temperature_=0.1, **VOTE_DECIDES[head_name])
    searches = []
    search = type(head.bank).search
    monkeypatch.setattr(type(head.bank), "search",
                        lambda bank, q, k: searches.append(k) or search(bank, q, k))
    out = head.predict({"text": torch.randn(3, 16)})
    assert searches == [5] and out["neighbours"].shape == (3, 5)
