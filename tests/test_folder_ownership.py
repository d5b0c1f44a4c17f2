"""Writers never destroy what they did not write, and every file a model trusts is checked:
a save refuses an ordinary folder, a user's file in a model folder survives every writer,
``hashes add`` and ``memory add`` share one lock and one revision (real processes), links
leaving the folder and weights that are not regular files are refused."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from itertools import islice
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from memetrm import modelstore
from memetrm.cli.main import app as cli
from memetrm.errors import ConfigError
from memetrm.heads import create_head, from_pretrained, save_pretrained
from memetrm.serving import hashlist, memory
from memetrm.serving.hashing import pdq
from memetrm.serving.hashlist import HashList
from memetrm.serving.predictor import Predictor

from . import fakes  # noqa: F401  (registers the test-fake encoder the models name)
from .test_hashing import scene
from .test_model_folders import memory_ids, retrieval_model, rows

FORK = mp.get_context("fork")
runner = CliRunner()


def ordinary_folder(path: Path) -> Path:
    path.mkdir()
    (path / "important.txt").write_text("the only copy")
    (path / "Makefile").write_text("all:\n\ttrue\n")
    return path


def assert_untouched(path: Path) -> None:
    assert sorted(p.name for p in path.iterdir()) == ["Makefile", "important.txt"]
    assert (path / "important.txt").read_text() == "the only copy"


def test_train_save_refuses_an_ordinary_folder(tiny_jsonl_dataset: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    project = ordinary_folder(tmp_path / "project")
    res = runner.invoke(cli, ["train", "--dataset", str(tiny_jsonl_dataset), "--encoder",
                              "test-fake", "--head", "linear", "--seeds", "1", "--set",
                              "train.epochs=1", "--save", str(project)])
    assert res.exit_code == 2, res.output
    assert "not a memetrm model folder" in res.output and "project" in res.output
    assert_untouched(project)  # not even a lock file
    assert not (tmp_path / "cache").exists()  # refused before any feature was extracted


@pytest.mark.parametrize("content", [
    {"important.txt": "the only copy", "Makefile": "all:\n"},
    {".git/HEAD": "ref: refs/heads/main\n"},  # `train --save .` in a repository
    {"config.json": json.dumps({"model_type": "bert"})},  # another tool's model
])
def test_write_model_refuses_a_folder_that_holds_no_memetrm_model(tmp_path: Path,
                                                                  content: dict) -> None:
    folder = tmp_path / "f"
    for name, text in content.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with pytest.raises(ConfigError, match=f"{folder}: not empty and not a memetrm model"):
        save_pretrained(create_head("linear", {"text": 5}), folder)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    for name, text in content.items():
        assert (folder / name).read_text() == text


def test_a_user_file_in_a_model_folder_survives_a_resave_and_a_memory_add(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    (model / "notes.txt").write_text("mine")
    save_pretrained(create_head("retrieval", {"text": 5}), model, card="# card",
                    encoder="test-fake", fields=["text"], threshold=0.5)
    memory.add_to_memory(model, rows(tmp_path / "a.jsonl", "a", 3), device="cpu")
    assert (model / "notes.txt").read_text() == "mine"
    assert (model / "README.md").read_text() == "# card"  # carried over by the memory add
    assert modelstore.owned_files(model) == {"config.json", "model.safetensors", "README.md"}
    save_pretrained(create_head("retrieval", {"text": 5}), model, encoder="test-fake",
                    fields=["text"], threshold=0.5)
    assert not (model / "README.md").exists()  # memetrm's card, not in the new revision
    assert (model / "notes.txt").read_text() == "mine"


def test_a_new_revision_never_replaces_a_file_memetrm_did_not_write(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    (model / "README.md").write_text("my own notes")
    with pytest.raises(ConfigError, match="README.md not written by memetrm"):
        save_pretrained(create_head("retrieval", {"text": 5}), model, card="# card")
    assert (model / "README.md").read_text() == "my own notes"


def test_a_manifest_naming_paths_is_refused(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    cfg = json.loads((model / "config.json").read_text())
    cfg["manifest"] = [*cfg["manifest"], "../victim.txt"]
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="must list the names of the model's files"):
        save_pretrained(create_head("retrieval", {"text": 5}), model)
    assert victim.read_text() == "keep"


def legacy(model: Path) -> Path:
    """The folder as versions before the manifest wrote it: a revision, no format key."""
    cfg = json.loads((model / "config.json").read_text())
    cfg["revision"] = cfg.pop("weights_revision", cfg["revision"])
    for key in ("format", "manifest"):
        cfg.pop(key, None)
    (model / "config.json").write_text(json.dumps(cfg))
    return model


def test_a_folder_of_an_older_version_is_read_and_written_as_a_model(tmp_path: Path) -> None:
    model = legacy(retrieval_model(tmp_path / "m"))
    (model / "README.md").write_text("# old card")
    (model / "notes.txt").write_text("mine")
    assert len(memory_ids(model)) == 8
    memory.add_to_memory(model, rows(tmp_path / "a.jsonl", "a", 2), device="cpu")
    assert (model / "notes.txt").read_text() == "mine"
    assert len(memory_ids(model)) == 10 and (model / "README.md").read_text() == "# old card"
    assert json.loads((model / "config.json").read_text())["format"] == modelstore.FORMAT


def known_memes(tmp_path: Path, prefix: str, n: int, seed: int) -> Path:
    """A ``hashes add`` input of ``n`` labelled pictures with detail enough for PDQ."""
    pictures = (scene(s, size=64) for s in range(seed, seed + 10 * n))
    lines = []
    for i, picture in enumerate(islice((p for p in pictures if pdq(p).reliable), n)):
        img = tmp_path / f"{prefix}{i}.png"
        picture.save(img)
        lines.append(json.dumps({"id": f"{prefix}{i}", "label": i % 2, "img": str(img)}))
    source = tmp_path / f"{prefix}.jsonl"
    source.write_text("\n".join(lines) + "\n")
    return source


def _slow_hashes_add(model: Path, source: Path, pause: float) -> None:
    """``hashes add`` that pauses between reading the list and writing it back."""
    read = hashlist.HashList.read.__func__

    def paused(cls, *args, **kwargs):
        out = read(cls, *args, **kwargs)
        time.sleep(pause)
        return out

    hashlist.HashList.read = classmethod(paused)
    res = runner.invoke(cli, ["hashes", "add", "--model", str(model), "--input", str(source)])
    sys.exit(res.exit_code)


def listed(model: Path) -> list[str]:
    return [e.source_id for e in HashList.read(model / "hashes.csv").entries]


def test_concurrent_hashes_adds_lose_no_rows(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    seed = runner.invoke(cli, ["hashes", "add", "--model", str(model), "--input",
                               str(known_memes(tmp_path, "s", 1, 0))])
    assert seed.exit_code == 0, seed.output
    sources = [known_memes(tmp_path, p, 25, 100 * k) for k, p in enumerate("abcd", 1)]
    procs = [FORK.Process(target=_slow_hashes_add, args=(model, s, 0.3)) for s in sources]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = listed(model)
    assert len(ids) == 101 and {f"{p}{i}" for p in "abcd" for i in range(25)} <= set(ids)
    assert "hashes.csv" in modelstore.owned_files(model)


def _slow_memory_add(model: Path, source: Path, pause: float) -> None:
    """``memory add`` that pauses between reading the folder and writing it back."""
    save = memory.save_pretrained
    memory.save_pretrained = lambda *a, **kw: (time.sleep(pause), save(*a, **kw))[1]
    memory.add_to_memory(model, source, device="cpu")


def test_hashes_add_during_a_memory_add_keeps_both(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    assert runner.invoke(cli, ["hashes", "add", "--model", str(model), "--input",
                               str(known_memes(tmp_path, "s", 1, 0))]).exit_code == 0
    adding = FORK.Process(target=_slow_memory_add,
                          args=(model, rows(tmp_path / "r.jsonl", "r", 5), 1.5))
    adding.start()
    time.sleep(0.7)  # the memory add has read the folder and waits to write it
    res = runner.invoke(cli, ["hashes", "add", "--model", str(model), "--input",
                              str(known_memes(tmp_path, "h", 3, 50))])
    adding.join(60)
    assert res.exit_code == 0 and adding.exitcode == 0, res.output
    assert listed(model) == ["s0", "h0", "h1", "h2"]
    assert {f"r{i}" for i in range(5)} <= set(memory_ids(model))


def test_a_hash_list_change_is_a_new_revision_of_the_same_weights(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    before = json.loads((model / "config.json").read_text())
    weights = (model / "model.safetensors").stat().st_ino
    assert runner.invoke(cli, ["hashes", "add", "--model", str(model), "--input",
                               str(known_memes(tmp_path, "s", 1, 0))]).exit_code == 0
    after = json.loads((model / "config.json").read_text())
    assert after["revision"] != before["revision"]
    assert after["weights_revision"] == before["weights_revision"]
    assert (model / "model.safetensors").stat().st_ino == weights  # not rewritten
    assert {k: v for k, v in after.items() if k not in ("revision", "manifest")} \
        == {k: v for k, v in before.items() if k not in ("revision", "manifest")}


@pytest.mark.parametrize("name", ["README.md", "hashes.csv"])
def test_a_file_linked_outside_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    model = retrieval_model(tmp_path / "m")
    outside = tmp_path / f"outside-{name}"
    outside.write_text(f"pdq,label,source_id\n{'ab' * 32},1,outside\n")
    legacy(model)  # in an older folder both names are memetrm's, carried over by a write
    (model / name).symlink_to(outside)
    with pytest.raises(ConfigError, match="outside the model folder"):
        memory.add_to_memory(model, rows(tmp_path / "a.jsonl", "a", 1), device="cpu")
    assert (model / name).is_symlink() and len(memory_ids(model)) == 8
    if name == "hashes.csv":  # an outside list never answers predictions
        with pytest.raises(ConfigError, match="outside the model folder"):
            Predictor(model, device="cpu")
        res = runner.invoke(cli, ["hashes", "add", "--model", str(model), "--input",
                                  str(known_memes(tmp_path, "h", 1, 0))])
        assert res.exit_code == 2 and "outside the model folder" in res.output
        assert "h0" not in outside.read_text()


def _load(model: Path) -> None:
    try:
        from_pretrained(model)
    except ConfigError as e:
        print(e)
        sys.exit(2)


def test_weights_that_are_not_a_regular_file_are_refused_without_blocking(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    (model / "model.safetensors").unlink()
    os.mkfifo(model / "model.safetensors")
    loading = FORK.Process(target=_load, args=(model,))
    loading.start()
    loading.join(10)
    if loading.exitcode is None:  # blocked on opening the FIFO
        loading.kill()
        loading.join()
    assert loading.exitcode == 2
    with pytest.raises(ConfigError, match="model.safetensors: not a regular file"):
        from_pretrained(model)


def test_weights_of_another_model_are_named_as_such(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modelstore, "READ_RETRY_S", 0.1)
    model = retrieval_model(tmp_path / "m")
    other = retrieval_model(tmp_path / "other", n=4)
    (model / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="belong to another model or write"):
        from_pretrained(model)
    torch.manual_seed(0)  # the folder is still saved over: its own weights are its to replace
    save_pretrained(create_head("retrieval", {"text": 5}), model)
    assert from_pretrained(model)[0].name == "retrieval"
