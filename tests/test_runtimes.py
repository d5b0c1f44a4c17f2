"""Encoder runtimes: names, ONNX export of tiny towers (cached by weights), and the warning a
model gives when scored with features from another runtime than it was trained on."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from memetrm.encoders import create_encoder, encoder_version, towers
from memetrm.encoders import runtimes as rt
from memetrm.errors import ConfigError
from memetrm.heads import create_head, save_pretrained


def test_runtime_is_a_prefix_of_the_encoder_name() -> None:
    assert rt.with_runtime("minilm-effnet", "onnx-int8") == "onnx-int8:minilm-effnet"
    assert rt.with_runtime("onnx:minilm-effnet", "torch") == "minilm-effnet"
    assert rt.with_runtime("onnx:minilm-effnet", "onnx-int8") == "onnx-int8:minilm-effnet"
    assert rt.with_runtime("onnx:minilm-effnet", None) == "onnx:minilm-effnet"
    assert rt.split_runtime("towers:text=a,image=b") == ("torch", "towers:text=a,image=b")
    assert rt.split_runtime("onnx-int8:mpnet-effnet") == ("onnx-int8", "mpnet-effnet")
    with pytest.raises(ConfigError, match="unknown runtime"):
        rt.with_runtime("minilm-effnet", "tensorrt")


def test_runtime_changes_the_feature_cache_identity() -> None:
    versions = {encoder_version(rt.with_runtime("minilm-effnet", r)) for r in rt.RUNTIMES}
    assert len(versions) == 3


def test_runtime_needs_towers_encoder() -> None:
    from . import fakes  # noqa: F401  (registers test-fake)

    with pytest.raises(ConfigError, match="runs `towers` encoders"):
        create_encoder("onnx:test-fake", device="cpu")


@pytest.fixture
def tiny_towers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A 1-layer BERT sentence-transformers folder and timm's test EfficientNet, no downloads."""
    import timm
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path / "tiny-bert"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat", "dog", "meme", "hate", "love"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(str(folder / "vocab.txt")).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64)).save_pretrained(folder)
    body = models.Transformer(str(folder))
    st = SentenceTransformer(modules=[body, models.Pooling(16)], device="cpu")
    st.save(str(tmp_path / "tiny-st"))

    def tiny_effnet() -> torch.nn.Module:
        torch.manual_seed(0)  # the same weights on every build, as packaged ones would be
        return timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()

    monkeypatch.setitem(towers.IMAGE_TOWERS, "tiny-effnet", (tiny_effnet, "tiny-effnet-1"))
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    return f"towers:text={tmp_path / 'tiny-st'},image=tiny-effnet"


@pytest.mark.slow
def test_onnx_towers_match_torch_and_export_once(tiny_towers: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    texts = ["cat meme", "dog love hate meme cat"]
    image = Image.new("RGB", (80, 60), (120, 30, 200))
    ref = create_encoder(tiny_towers, device="cpu")
    pixels = ref.image_transform()(image)[None]
    want_t, want_i = ref.encode_texts(texts, tokens=True), ref.encode_images(pixels, tokens=True)
    for runtime, close in [("onnx", 1e-4), ("onnx-int8", 0.2)]:
        enc = create_encoder(rt.with_runtime(tiny_towers, runtime), device="cpu")
        got_t, got_i = enc.encode_texts(texts, tokens=True), enc.encode_images(pixels, tokens=True)
        assert got_t.tokens.shape == want_t.tokens.shape
        assert torch.equal(got_t.mask, want_t.mask)
        assert torch.allclose(got_t.pooled, want_t.pooled, atol=close), runtime
        assert torch.allclose(got_i.pooled, want_i.pooled, atol=1e-4), runtime
        assert got_i.tokens.shape == want_i.tokens.shape
    files = sorted((tmp_path / "cache" / "onnx").glob("*/model.onnx"))
    assert len(files) == 4  # text and image, fp32 and int8

    def no_export(*_a, **_k):
        raise AssertionError("exported again although the weights did not change")

    monkeypatch.setattr(rt, "_export", no_export)
    create_encoder(rt.with_runtime(tiny_towers, "onnx-int8"), device="cpu")


def test_predictor_warns_when_runtime_differs_from_training(tmp_path: Path) -> None:
    from memetrm.serving.predictor import Predictor

    from .fakes import FakeEncoder

    head = create_head("linear", {"image": 6, "text": 5})
    save_pretrained(head, tmp_path / "m", encoder="minilm-effnet", fields=["image", "text"],
                    tokens=False, threshold=0.5)
    with pytest.warns(UserWarning, match="torch runtime of minilm-effnet; scoring with onnx-int8"):
        p = Predictor(tmp_path / "m", encoder=FakeEncoder(), runtime="onnx-int8", device="cpu")
    assert p._default == "onnx-int8:minilm-effnet"


def test_cli_extract_runtime_reaches_the_encoder(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from memetrm.cli.main import app

    from . import fakes  # noqa: F401  (registers test-fake)

    r = CliRunner().invoke(app, ["extract", "--dataset", str(tiny_jsonl_dataset), "--encoder",
                                 "test-fake", "--runtime", "onnx", "--fields", "text",
                                 "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 2 and "runs `towers` encoders" in r.output


@pytest.fixture
def tiny_export(tmp_path: Path):
    """``export(int8) -> path``: a 4x3 linear layer through ``onnx_file`` into its own cache."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3))
    batch = torch.export.Dim("batch")

    def export(int8: bool = False) -> Path:
        return rt.onnx_file(module, (torch.zeros(2, 4),), ["x"], ({0: batch},), "test", int8,
                            cache_dir=tmp_path / "cache")

    return export


def _run(path: Path) -> list:
    import onnxruntime as ort

    return ort.InferenceSession(str(path)).run(None, {"x": torch.ones(1, 4).numpy()})[0].tolist()


def test_swapped_or_truncated_onnx_export_is_rebuilt(tiny_export) -> None:
    fp32, int8 = tiny_export(), tiny_export(int8=True)
    good = fp32.read_bytes()
    assert int8.read_bytes() != good and fp32.parent != int8.parent
    fp32.write_bytes(int8.read_bytes())  # the int8 export put where the fp32 one should be
    assert tiny_export() == fp32 and fp32.read_bytes() == good
    fp32.write_bytes(good[: len(good) // 2])  # cut short
    assert tiny_export() == fp32 and fp32.read_bytes() == good
    shutil.rmtree(fp32.parent)  # the whole int8 folder, its record included, in its place
    shutil.copytree(int8.parent, fp32.parent)
    assert tiny_export() == fp32 and fp32.read_bytes() == good
    _run(fp32)
    # an export from before the records existed (no export.json) is rebuilt, not trusted
    (fp32.parent / rt.RECORD_NAME).unlink()
    assert tiny_export() == fp32 and (fp32.parent / rt.RECORD_NAME).is_file()


@pytest.mark.parametrize("err", [errno.EROFS, errno.ENOSPC])
def test_bad_export_in_an_unwritable_cache_is_refused(tiny_export, monkeypatch, err) -> None:
    fp32 = tiny_export()
    fp32.write_bytes(fp32.read_bytes()[:50])

    def unwritable(*_a, **_k):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(rt, "_export", unwritable)
    with pytest.raises(ConfigError, match=f"{fp32}: its bytes do not match.*{os.strerror(err)}"):
        tiny_export()
    assert len(fp32.read_bytes()) == 50  # left as it was, for the user to look at


def test_onnx_load_error_is_a_config_error(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ConfigError, match="ONNX Runtime cannot load"):
        rt._session(ort, bad, ort.SessionOptions())


def test_cli_exits_2_on_a_bad_export_in_a_read_only_cache(tiny_towers: str, tmp_path: Path,
                                                          tiny_jsonl_dataset: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from memetrm.cli.main import app

    create_encoder(rt.with_runtime(tiny_towers, "onnx"), device="cpu")
    text = next((tmp_path / "cache" / "onnx").glob("text-*/model.onnx"))
    text.write_bytes(text.read_bytes()[:100])

    def read_only(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(rt, "_export", read_only)
    r = CliRunner().invoke(app, ["extract", "--dataset", str(tiny_jsonl_dataset), "--encoder",
                                 tiny_towers, "--runtime", "onnx", "--fields", "text",
                                 "--cache-dir", str(tmp_path / "features")])
    assert r.exit_code == 2, r.output
    assert str(text) in r.output.replace("\n", "") and "Read-only" in r.output
