"""The docs renderer: JSON in, markdown out, with no torch, and every table tied to its JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.render import replace_block
from benchmarks.render_docs import main as render_docs
from memetrm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
#: run in a fresh interpreter: any import of torch, however indirect, raises
NO_TORCH = """
import runpy, sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ImportError(f"the docs renderer imported {name}")

sys.meta_path.insert(0, NoTorch())
runpy.run_module("benchmarks.render_docs", run_name="__main__")
"""


def markdown(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text()
            for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))]}


@pytest.fixture
def docs_copy(tmp_path: Path) -> Path:
    """README.md and docs/ (data, markdown, plots) copied, so rendering leaves the repo alone."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    return tmp_path


def test_renders_the_committed_docs_without_importing_torch(docs_copy: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    done = subprocess.run([sys.executable, "-c", NO_TORCH], cwd=docs_copy, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert markdown(docs_copy) == markdown(ROOT)


def test_a_changed_number_changes_its_tables(docs_copy: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.chdir(docs_copy)
    render_docs()
    before = markdown(docs_copy)
    ref = docs_copy / "docs/data/heads/multioff/_reference.json"
    data = json.loads(ref.read_text())
    assert f"{data['test_auroc']:.3f}" != "0.988"
    ref.write_text(json.dumps({**data, "test_auroc": 0.987654}))
    render_docs()
    after = markdown(docs_copy)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"README.md", "docs/results.md"}
    assert "| 0.988 |" in after["README.md"]


def test_a_block_without_its_markers_is_an_error(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("prose\n<!-- generated:table start -->\nold\n<!-- generated:table end -->\nmore\n")
    replace_block(doc, "table", "new")
    assert doc.read_text() == ("prose\n<!-- generated:table start -->\nnew\n"
                               "<!-- generated:table end -->\nmore\n")
    with pytest.raises(ConfigError, match="generated:other"):
        replace_block(doc, "other", "new")
