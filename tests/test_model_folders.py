"""Model folders shared by writers and readers: concurrent ``memory add`` runs lose nothing,
readers never see a missing or mixed model even when a writer is killed, temporaries of a
killed writer are cleaned, symlinked folders are written through."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from memetrm.heads import create_head, from_pretrained, save_pretrained
from memetrm.serving import memory

from . import fakes  # noqa: F401  (registers the test-fake encoder the models name)

FORK = mp.get_context("fork")


def retrieval_model(path: Path, n: int = 8) -> Path:
    head = create_head("retrieval", {"text": 5})
    head.remember({"text": torch.randn(n, 5), "label": torch.tensor([i % 2 for i in range(n)],
                                                                    dtype=torch.float)},
                  [f"base{i}" for i in range(n)])
    head.set_fitted(k_=4, temperature_=0.1, alpha_=1.0)  # a fitted vote names its neighbours
    save_pretrained(head, path, encoder="test-fake", fields=["text"], threshold=0.5)
    return path


def rows(path: Path, prefix: str, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "label": i % 2,
                                        "text": f"meme {prefix} {i}"}) + "\n" for i in range(n)))
    return path


def memory_ids(model: Path) -> list[str]:
    head, _ = from_pretrained(model)
    return head.memory_ids  # from_pretrained checks them against the memory's rows


def _slow_add(model: Path, source: Path, pause: float) -> None:
    """``memory add`` that pauses between reading the memory and writing it back."""
    save = memory.save_pretrained

    def paused(*args, **kwargs):
        time.sleep(pause)
        return save(*args, **kwargs)

    memory.save_pretrained = paused
    memory.add_to_memory(model, source, device="cpu")


def test_concurrent_memory_adds_lose_no_rows(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    procs = [FORK.Process(target=_slow_add, args=(model, rows(tmp_path / f"{p}.jsonl", p, 200), 0.5))
             for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = memory_ids(model)
    assert len(ids) == 8 + 400 and {f"a{i}" for i in range(200)} <= set(ids)
    assert {f"b{i}" for i in range(200)} <= set(ids)


def _reader(model: Path, stop: mp.Event, out: mp.Queue) -> None:
    """Loads the model in a loop; reports every failure and every memory size seen."""
    failures, sizes = [], set()
    while not stop.is_set():
        try:
            ids = memory_ids(model)
            sizes.add(len(ids))
            assert ids[:8] == [f"base{i}" for i in range(8)]
        except Exception as e:  # the test asserts there are none
            failures.append(f"{type(e).__name__}: {e}")
    out.put((failures, sorted(sizes)))


def _slow_write_add(model: Path, source: Path) -> None:
    """``memory add`` whose file operations take a little time, so kills land inside the write."""
    from memetrm import modelstore

    replace, fsync = os.replace, modelstore._fsync
    modelstore.os.replace = lambda *a: (time.sleep(0.03), replace(*a))[1]
    modelstore._fsync = lambda p: (time.sleep(0.03), fsync(p))[1]
    memory.add_to_memory(model, source, device="cpu")


@pytest.mark.slow
def test_memory_add_killed_anywhere_never_breaks_a_reader(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    t0 = time.monotonic()
    first = FORK.Process(target=_slow_write_add, args=(model, rows(tmp_path / "w0.jsonl", "w0-", 5)))
    first.start()
    first.join(60)
    full = time.monotonic() - t0
    stop, out = FORK.Event(), FORK.Queue()
    reader = FORK.Process(target=_reader, args=(model, stop, out))
    reader.start()
    rng = random.Random(0)
    killed = done = 0
    for k in range(1, 21):
        p = FORK.Process(target=_slow_write_add,
                         args=(model, rows(tmp_path / f"w{k}.jsonl", f"w{k}-", 5)))
        p.start()
        time.sleep(rng.uniform(0.2, 1.4) * full)  # mostly inside the write, which dominates
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        killed += p.exitcode == -signal.SIGKILL
        done += p.exitcode == 0
    stop.set()
    failures, sizes = out.get(timeout=60)
    reader.join(30)
    assert failures == [] and killed >= 3 and done >= 3 and len(sizes) > 1, (killed, done)
    ids = memory_ids(model)
    for k in range(21):  # each add is all in or all out
        assert sum(f"w{k}-{i}" in ids for i in range(5)) in (0, 5)
    memory.add_to_memory(model, rows(tmp_path / "last.jsonl", "last-", 3), device="cpu")
    leftovers = [p.name for p in model.iterdir() if p.name.startswith(".")
                 and p.name != ".memetrm.lock"] + [p.name for p in tmp_path.iterdir()
                                                     if p.name.startswith(".m")]
    assert leftovers == []


def test_killed_writer_temporaries_are_removed_by_the_next_write(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    (model / ".staging-abc123").mkdir()
    (model / ".staging-abc123" / "model.safetensors").write_bytes(b"x" * 1000)
    legacy = [tmp_path / ".m.old4242", tmp_path / ".m.k2j4_x9q"]  # left by the older writer
    for d in legacy:
        d.mkdir()
    unrelated = tmp_path / ".m.keep-me"
    unrelated.mkdir()
    memory.add_to_memory(model, rows(tmp_path / "a.jsonl", "a", 2), device="cpu")
    assert not (model / ".staging-abc123").exists() and not any(d.exists() for d in legacy)
    assert unrelated.exists()


def test_a_symlinked_model_folder_is_written_through(tmp_path: Path) -> None:
    target = retrieval_model(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    memory.add_to_memory(link, rows(tmp_path / "a.jsonl", "a", 3), device="cpu")
    assert link.is_symlink()
    assert len(memory_ids(target)) == 11 and len(memory_ids(link)) == 11


def test_memory_add_on_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    from memetrm.errors import ConfigError

    with pytest.raises(ConfigError, match="no such model folder"):
        memory.add_to_memory(tmp_path / "nope", rows(tmp_path / "a.jsonl", "a", 1), device="cpu")
    assert not (tmp_path / "nope").exists()


def _hostile(tmp_path: Path, head: str, edit) -> Path:
    """A saved model whose config.json ``edit`` then tampers with."""
    save_pretrained(create_head(head, {"image": 3, "text": 2}), tmp_path / "h", encoder="fake",
                    fields=["image", "text"], tokens=False, threshold=0.5)
    cfg_path = tmp_path / "h" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    edit(cfg)
    cfg_path.write_text(json.dumps(cfg))
    return tmp_path / "h"


@pytest.mark.parametrize("head, edit, message", [
    ("trm", lambda c: c["config"].update(n_sup=1_000_000), "config.n_sup = 1,000,000"),
    ("trm", lambda c: c["config"].update(layers=100_000), "config.layers = 100,000"),
    ("mlp", lambda c: c["input_dims"].update(image=10**9), "input_dims.image = 1000000000"),
    ("mlp", lambda c: c["config"].update(hidden=60_000), "weights do not fit the config"),
    ("mlp", lambda c: c.update(labels=["x"]), "'labels' must be the names"),
])
def test_hostile_config_sizes_are_refused_before_allocating(tmp_path: Path, head: str, edit,
                                                            message: str) -> None:
    from memetrm.errors import ConfigError

    model = _hostile(tmp_path, head, edit)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        from_pretrained(model)
    assert time.monotonic() - t0 < 5


def test_huge_config_and_escaping_weights_link_are_refused(tmp_path: Path) -> None:
    from memetrm.errors import ConfigError

    model = _hostile(tmp_path, "mlp", lambda c: None)
    outside = tmp_path / "elsewhere.safetensors"
    (model / "model.safetensors").rename(outside)
    (model / "model.safetensors").symlink_to(outside)
    with pytest.raises(ConfigError, match="outside the model folder"):
        from_pretrained(model)
    with open(model / "config.json", "r+b") as f:
        f.truncate(600 * 2**20)  # sparse: costs no disk
    with pytest.raises(ConfigError, match="above the limit"):
        from_pretrained(model)
