"""The hostile benchmark's storage cases: run through the real CLI in child processes, merged
into the numbers kept for the other cases, and rendered as a before/after table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import hostile
from benchmarks.render import hostile as render_hostile

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    return subprocess.run([sys.executable, "-m", "benchmarks.hostile", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_selected_cases_run_the_cli_and_keep_the_other_numbers(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    kept = json.loads((ROOT / "docs/data/hostile.json").read_text())
    kept.pop("storage", None)
    data = tmp_path / "docs/data/hostile.json"
    data.parent.mkdir(parents=True)
    data.write_text(json.dumps(kept))
    done = run("--only", "dev_zero,alias_bomb", "--json", str(data))
    assert done.returncode == 0, done.stderr
    r = json.loads(data.read_text())
    assert {k: r[k] for k in kept} == kept  # the server's numbers stay as they were
    assert set(r["storage"]) == {"dev_zero", "alias_bomb"}
    for name in ("dev_zero", "alias_bomb"):
        case = r["storage"][name]["after"]
        assert {"exit", "timed_out", "seconds", "peak_rss_mb", "said", "mem_cap_mb"} <= set(case)
        assert case["exit"] == 2 and not case["timed_out"], case
    assert "/dev/zero" in r["storage"]["dev_zero"]["after"]["said"]
    assert "--only dev_zero,alias_bomb" in r["storage"]["dev_zero"]["after"]["run"]["command"]
    # the table: both cases in the after column, beside the server's table
    shutil.copy(ROOT / "docs/serving.md", tmp_path / "docs/serving.md")
    monkeypatch.chdir(tmp_path)
    render_hostile.render()
    doc = (tmp_path / "docs/serving.md").read_text()
    assert "| case | after (" in doc and "poisoned batches" in doc
    row = next(line for line in doc.splitlines() if line.startswith("| `train --config /dev/zero`"))
    assert "exit 2 in" in row and "a config must be a regular file" in row


def test_a_run_fills_its_column_beside_the_other() -> None:
    case = {"exit": 1, "timed_out": False, "seconds": 10.2, "peak_rss_mb": 1323.0,
            "said": "MemoryError", "mem_cap_mb": 4096,
            "run": {"commit": "f33875a", "command": "old"}}
    after = {**case, "exit": 2, "said": "error: /dev/zero: not a regular file",
             "run": {"commit": "abc1234", "command": "new"}}
    r = {"storage": {"dev_zero": {"before": case, "after": after},
                     "alias_bomb": {"before": {**case, "bytes": 341, "timed_out": True}}}}
    table = render_hostile.report(r)
    assert "| case | before (f33875a) | after (abc1234) |" in table
    assert "(before: `old`; after: `new`)" in table
    assert ("| `train --config /dev/zero` (address space capped at 4,096 MB) | exit 1 in 10.2 s: "
            "\"MemoryError\"; peak RSS 1323 MB | exit 2 in 10.2 s: \"/dev/zero: not a regular "
            "file\"; peak RSS 1323 MB |") in table
    assert "killed at 10 s (peak RSS 1323 MB) | not run |" in table


def test_an_unknown_case_is_refused(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "argv", ["hostile", "--only", "folder_wipe,nonsense"])
    with pytest.raises(SystemExit) as exit_:
        hostile.main()
    assert exit_.value.code == 2 and "unknown case(s) ['nonsense']" in capsys.readouterr().err
