"""Batch scoring with hostile rows and paths: every bad row fails alone as an ``{"id", "error"}``
row, the local and Ray engines give the same rows, and a bad output path is exit 2 naming it."""

from __future__ import annotations

import datetime
import errno
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.errors import DataError
from memetrm.heads import create_head, save_pretrained
from memetrm.serving.batch import ResultLog, iter_inputs, predict_batch, score_chunk
from memetrm.serving.predictor import Predictor
from memetrm.serving.ray_batch import Scorer, _row

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .conftest import make_image
from .test_bad_input import assert_clear_error

runner = CliRunner()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """Reads the image and the text, so image problems reach the scorer."""
    head = create_head("mlp", {"image": 6, "text": 5}, hidden=8)
    return save_pretrained(head, tmp_path / "model", encoder="test-fake",
                           fields=["image", "text"], threshold=0.5)


HOSTILE_JSONL = [
    {"id": "ok", "img": "ok.png", "text": "fine"},
    {"id": "j2", "img": 5, "text": "x"},
    {"id": "j3", "img": ["a.png"], "text": "x"},
    {"id": None, "img": "ok.png", "text": "x"},
    {"id": "j5", "img": "a\u0000b.png", "text": "x"},
    {"id": "j6", "img": "", "text": "x"},
    {"id": "j7", "img": "ok.png", "text": "x", "when": {"nested": [1, 2]}},
]


def test_bad_jsonl_rows_fail_alone(model: Path, tmp_path: Path) -> None:
    make_image(tmp_path / "ok.png", 1)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in HOSTILE_JSONL))
    out = tmp_path / "out.jsonl"
    summary = predict_batch(Predictor(model, device="cpu"), src, out, progress=False)
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (summary.scored, summary.errors) == (2, 5)
    assert got["ok"]["error"] is None and got["j7"]["error"] is None
    assert "'img' must be a path or the image bytes, got int" in got["j2"]["error"]
    assert "got list" in got["j3"]["error"]
    assert "in.jsonl:4" in got["line 4"]["error"] and "'id'" in got["line 4"]["error"]
    assert "NUL byte" in got["j5"]["error"] and "empty" in got["j6"]["error"]


def _parquet(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize("img", [[1, 2], [["a"], ["b"]], [b"", b"not an image"]])
def test_bad_parquet_img_columns_are_error_rows(model: Path, tmp_path: Path, img: list) -> None:
    src = _parquet(tmp_path / "in.parquet", {"id": ["p1", "p2"], "img": img, "text": ["a", "b"]})
    out = tmp_path / "out.jsonl"
    summary = predict_batch(Predictor(model, device="cpu"), src, out, progress=False)
    assert (summary.scored, summary.errors) == (0, 2)


def test_null_id_is_an_error_row_in_jsonl_and_parquet(model: Path, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": null, "text": "x"}\n')
    pq_src = _parquet(tmp_path / "in.parquet", {"id": pa.array([None], pa.string()), "text": ["x"]})
    for src in (tmp_path / "in.jsonl", pq_src):
        item = next(iter_inputs(src))
        assert item.error and "'id'" in item.error and item.id != "None"


def test_ray_and_local_engines_give_the_same_rows(model: Path, tmp_path: Path) -> None:
    make_image(tmp_path / "ok.png", 1)
    src = _parquet(tmp_path / "in.parquet", {
        "id": ["a", "b", "c", "d"],
        "img": [b"", None, b"junk", (tmp_path / "ok.png").read_bytes()],
        "text": ["x", "y", "z", "w"],
        "seen": [datetime.datetime(2024, 1, d) for d in range(1, 5)],  # not JSON serialisable
    })
    items = list(iter_inputs(src))
    predictor = Predictor(model, device="cpu")
    scorer = Scorer.__new__(Scorer)  # the Ray worker's code path, without a Ray cluster
    scorer.predictor = predictor
    rows = [_row(it) for it in items]
    batch = {k: [r[k] for r in rows] for k in rows[0]}
    ray_rows = [json.loads(r) for r in scorer(batch)["row"]]
    assert ray_rows == score_chunk(predictor, items)
    assert [r["error"] is None for r in ray_rows] == [False, False, False, True]


def predict_cli(model: Path, src: Path, out: Path | str):
    return runner.invoke(app, ["predict", "--model", str(model), "--input", str(src),
                               "--output", str(out), "--device", "cpu"])


@pytest.mark.parametrize("case", ["a folder", "under a file", "/proc", "not parquet", "/dev/full"])
def test_bad_output_paths_are_exit_2_naming_the_path(model: Path, tmp_path: Path,
                                                     case: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "x"}\n')
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.parquet").write_text("this is not parquet")
    (tmp_path / "folder.jsonl").mkdir()
    out = {"a folder": tmp_path / "folder.jsonl", "under a file": tmp_path / "file" / "o.jsonl",
           "/proc": Path("/proc/memetrm-test/o.jsonl"), "not parquet": tmp_path / "bad.parquet",
           "/dev/full": Path("/dev/full")}[case]
    assert_clear_error(predict_cli(model, src, out), str(out))


def test_garbage_parquet_input_is_exit_2(model: Path, tmp_path: Path) -> None:
    (tmp_path / "in.parquet").write_bytes(b"PAR1 garbage")
    assert_clear_error(predict_cli(model, tmp_path / "in.parquet", tmp_path / "o.jsonl"),
                       "in.parquet", "not a readable Parquet file")


def test_full_disk_is_a_clear_error_and_the_run_resumes(model: Path, tmp_path: Path,
                                                        monkeypatch) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "text": "x"}) + "\n" for i in range(6)))
    out = tmp_path / "out.jsonl"
    predictor = Predictor(model, device="cpu")
    real_write = ResultLog.write
    calls = []

    def full_after_one(self, rows):
        calls.append(1)
        if len(calls) > 1:
            self._file.write = lambda *_: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
        return real_write(self, rows)

    monkeypatch.setattr(ResultLog, "write", full_after_one)
    with pytest.raises(DataError, match="no space left"):
        predict_batch(predictor, src, out, batch_size=2, progress=False)
    monkeypatch.setattr(ResultLog, "write", real_write)
    summary = predict_batch(predictor, src, out, batch_size=2, progress=False)
    assert summary.already_done + summary.scored + summary.errors == 6
    assert sorted(json.loads(x)["id"] for x in out.read_text().splitlines()) == \
        [f"r{i}" for i in range(6)]


def test_parquet_output_leaves_no_temporary(model: Path, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "x"}\n')
    predict_batch(Predictor(model, device="cpu"), tmp_path / "in.jsonl", tmp_path / "o.parquet",
                  progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "model", "o.parquet"]


def test_an_over_long_text_is_a_row_error_and_the_other_rows_score(tmp_path: Path) -> None:
    """A 10 MB text is refused by its row (naming the id and the limit) before any tokenizer
    sees it; the rows around it score."""
    from memetrm.serving.guards import MAX_TEXT_CHARS

    head = create_head("mlp", {"text": 5}, hidden=8)
    model = save_pretrained(head, tmp_path / "model", encoder="test-fake", fields=["text"],
                            threshold=0.5)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "before", "text": "fine"},
        {"id": "huge", "text": "x" * 10_000_000},
        {"id": "at-limit", "text": "y" * MAX_TEXT_CHARS},
        {"id": "after", "text": "also fine"},
    ]))
    out = tmp_path / "out.jsonl"
    summary = predict_batch(Predictor(model, device="cpu"), src, out, progress=False)
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (summary.scored, summary.errors) == (3, 1)
    assert "id huge" in got["huge"]["error"] and "10,000,000 characters" in got["huge"]["error"]
    assert f"limit of {MAX_TEXT_CHARS:,}" in got["huge"]["error"]
    assert all(got[i]["error"] is None for i in ("before", "at-limit", "after"))


@pytest.mark.parametrize("text", [["a", "meme"], {"line": "a meme"}])
def test_a_text_that_is_a_list_or_dict_is_a_row_error_not_ocr(model: Path, tmp_path: Path,
                                                              text: object) -> None:
    """Nested data in ``text`` fails its row as an int does; it is never dropped and replaced
    by the text OCR reads off the image."""
    make_image(tmp_path / "ok.png", 1)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "nested", "img": "ok.png", "text": text},
        {"id": "int", "img": "ok.png", "text": 7},
        {"id": "ok", "img": "ok.png", "text": "fine"},
    ]))
    out = tmp_path / "out.jsonl"
    predictor = Predictor(model, device="cpu")
    predictor.ocr = lambda image: pytest.fail("OCR ran for a row that has a text")
    summary = predict_batch(predictor, src, out, progress=False)
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (summary.scored, summary.errors) == (1, 2)
    assert "id nested" in got["nested"]["error"]
    assert f"'text' must be a string, got {type(text).__name__}" in got["nested"]["error"]
    assert "must be a string, got int" in got["int"]["error"]


def test_a_nested_text_column_in_parquet_is_a_row_error(model: Path, tmp_path: Path) -> None:
    src = _parquet(tmp_path / "in.parquet", {"id": ["p1"], "text": [["a", "b"]]})
    item = next(iter_inputs(src))
    assert item.error and "'text' must be a string, got list" in item.error
