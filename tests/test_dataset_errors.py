"""Datasets and the feature cache: a NUL byte in an image path, an empty split and an
unwritable or full cache are exit 2 naming the problem, and leave no partial cache entry."""

from __future__ import annotations

import errno
from pathlib import Path

from memetrm.features import cache as cache_module

from .test_bad_input import assert_clear_error, folder, rows, train, write  # noqa: F401


def test_nul_byte_in_an_image_path_is_named(folder: Path) -> None:  # noqa: F811
    write(folder, "train", [{**r, "img": "a\u0000b.png"} for r in rows(16, "train")])
    assert_clear_error(train(folder, "--fields", "image,text"), "NUL byte")


def test_an_empty_split_is_called_empty(folder: Path) -> None:  # noqa: F811
    write(folder, "dev", "")
    assert_clear_error(train(folder), "dev is empty")


def test_unwritable_cache_is_a_clear_error(folder: Path, tmp_path: Path,  # noqa: F811
                                           monkeypatch) -> None:
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "a-file" / "cache"))
    assert_clear_error(train(folder), "a-file", "cannot write the feature cache")


def test_full_cache_disk_is_a_clear_error_with_no_partial_entry(folder: Path,  # noqa: F811
                                                                 tmp_path: Path,
                                                                 monkeypatch) -> None:
    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "save_file", full)
    assert_clear_error(train(folder), "cannot write the feature cache", "No space left")
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
