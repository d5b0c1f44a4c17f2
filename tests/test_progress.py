"""Long loops show progress in a log file too, where rich draws no live bar."""

from __future__ import annotations

import io

from rich.console import Console

from memetrm.progress import LogProgress, make_progress


def _log_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200, force_terminal=False), buf


def test_a_log_gets_periodic_lines_with_counts() -> None:
    out, buf = _log_console()
    bar = make_progress(out=out)
    assert isinstance(bar, LogProgress)
    bar.interval = 0.0
    with bar:
        task = bar.add_task("encode text", total=4)
        for _ in range(4):
            bar.advance(task)
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("  encode text:")]
    assert [line.split(":")[1].split(",")[0].strip() for line in lines] == ["1/4", "2/4", "3/4"]


def test_within_the_interval_only_a_new_description_prints() -> None:
    out, buf = _log_console()
    with make_progress(out=out) as bar:  # the default interval: far longer than this loop
        task = bar.add_task("mlp", total=3)
        bar.advance(task)
        bar.update(task, advance=1, description="mlp seed 1/1 epoch 2")
    text = buf.getvalue()
    assert "  mlp: 1/3" not in text
    assert "  mlp seed 1/1 epoch 2: 2/3" in text


def test_a_terminal_gets_the_live_bar() -> None:
    assert not isinstance(make_progress(out=Console(file=io.StringIO(), force_terminal=True)),
                          LogProgress)


def test_a_log_line_estimates_the_time_left_from_the_mean_rate() -> None:
    out, buf = _log_console()
    with make_progress(out=out) as bar:
        bar.interval = 0.0
        task = bar.add_task("encode", total=4)
        bar.advance(task, 2)
    assert "about " in buf.getvalue() and " s left" in buf.getvalue()
