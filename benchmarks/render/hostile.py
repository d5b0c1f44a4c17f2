"""The hostile-client tables in docs/serving.md, from docs/data/hostile.json: the attacks on a
running server, and the storage and input cases with their numbers before and after a fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/hostile.json"), Path("docs/serving.md")


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{n} x {c}" for c, n in codes.items())


def _health(h: dict) -> str:
    return (f"`/health` {h['ok_within_1s']} of {h['probes']} within 1 s "
            f"({100 * h['share_ok']:.0f}%, worst {h['worst_s']:.2f} s)")


def _server_rows(r: dict[str, Any]) -> list[list[str]]:
    """One row per attack on the server whose numbers are kept, in the order they run."""
    rows = []
    if p := r.get("poisoned"):
        rows.append(["poisoned batches: bursts of good requests + one lone-surrogate text",
                     f"{p['good_failed']} of {p['bursts'] * p['good_per_burst']} good requests "
                     f"failed; the bad one got {', '.join(map(str, sorted(set(p['bad_status']))))}"])
    if s := r.get("slow_clients"):
        rows.append([f"{s['clients']} slow clients trickling headers for {s['seconds']:g} s",
                     f"{s['ok_within_1s']} of {s['probes']} `/health` probes answered 200 within "
                     f"1 s ({100 * s['share_ok']:.0f}%)"])
    if d := r.get("degenerate_png"):
        rows.append([f"a 4,000,000 x 10 PNG ({d['png_bytes']:,} bytes)",
                     f"{d['status']} in {d['seconds']:.2f} s; server RSS "
                     f"{d['rss_before_mb']:.0f} -> {d['rss_after_mb']:.0f} MB"])
    if o := r.get("ocr_flood"):
        rows.append([f"OCR flood: {o['requests']} concurrent text images with no `text`",
                     f"{_codes(o['codes'])} in {o['seconds']:.0f} s; {_health(o['health'])}; "
                     f"server CPU {o['cpu_s_in_5s_after']:.1f} s in the 5 s after the last "
                     "answer"])
    if b := r.get("png_burst"):
        rows.append([f"{b['requests']} concurrent {b['side']} x {b['side']} PNGs "
                     f"({b['png_bytes']:,} bytes each)",
                     f"{_codes(b['codes'])} in {b['seconds']:.0f} s; RSS "
                     f"{b['rss_before_mb']:.0f} -> peak {b['rss_peak_mb']:.0f} "
                     f"(+{b['rss_peak_growth_mb']:.0f}) -> {b['rss_after_mb']:.0f} MB; "
                     f"{_health(b['health'])}"])
    if j := r.get("json"):
        rows += [["JSON nested 1000 deep; a 4,500-digit integer",
                  f"{j['nested_1000_status']}; {j['digits_4500_status']}"],
                 [f"{j['big']['bodies']} concurrent {j['big']['bytes'] / 1e6:.1f} MB JSON bodies "
                  f"of {j['big']['keys']:,} keys",
                  f"{_codes(j['big']['codes'])}; {_health(j['big']['health'])}"]]
    if m := r.get("memory_add"):
        rows.append([f"{m['writers']} concurrent `memetrm memory add` of {m['rows_each']} memes "
                     "each",
                     f"exit codes {m['exit_codes']}; memory holds {m['held']} of "
                     f"{m['expected']}: {m['rows_lost']} rows lost"])
    if c := r.get("disconnects"):
        rows.append([f"{c['clients']} OCR predictions whose clients hang up after "
                     f"{c['gave_up_after_s']:g} s",
                     f"{c['cancelled']:.0f} cancelled; {c['scored_after']:.0f} scored after they "
                     f"left; server busy {c['busy_s_after']:.0f} s after (CPU "
                     f"{c['cpu_s_after']:.1f} s)"])
    if t := r.get("trickled_bodies"):
        served = t["first_ordinary_200_s"]
        rows.append([f"{t['clients']} clients trickling a body one byte every 0.5 s",
                     f"{_codes(t['answers'])} within {t['answered_within_s']:.0f} s; ordinary "
                     f"predictions {_codes(t['ordinary'])}, "
                     + (f"the first 200 after {served:.0f} s" if served is not None
                        else "none 200")])
    if "server_500s" in r:
        rows.append(["server 500s over all attacks", str(r["server_500s"])])
    return rows


def _quote(text: str, limit: int = 90) -> str:
    """``text`` quoted in a table cell, cut at ``limit`` characters."""
    text = text.removeprefix("error: ").replace("|", "/").replace("`", "'")
    return f"\"{text[:limit]}{'...' if len(text) > limit else ''}\""


def _run(c: dict, said: bool = True, limit: int = 90) -> str:
    """Exit code and seconds of one child, with what it said (its error) when it failed."""
    if c["timed_out"]:
        return f"killed at {c['seconds']:.0f} s (peak RSS {c['peak_rss_mb']:.0f} MB)"
    return f"exit {c['exit']} in {c['seconds']:.1f} s" + (
        f": {_quote(c['said'], limit)}" if said and c["exit"] != 0 else "")


def _kept(c: dict, names: list[str]) -> str:
    lost = [n for n in names if n not in c["kept"]]
    return f"lost {', '.join(lost)}" if lost else "both kept"


def _folder_wipe(r: dict) -> str:
    files = ["important.txt", "Makefile"]
    return (f"DIR: {_run(r['dir'])}; {_kept(r['dir'], files)}. `.`: {_run(r['dot'], False)}; "
            f"{_kept(r['dot'], files)}")


def _tune_out(r: dict) -> str:
    def onto(c: dict) -> str:
        return (f"{_run(c)}; notes.txt {'kept' if c['notes_kept'] else 'lost'}, the model "
                f"{'kept' if c['model_kept'] else 'replaced'}")

    f = r["file"]
    hidden = f", hidden beside it: {', '.join(f['hidden_beside'])}" if f["hidden_beside"] else ""
    return (f"plain: {onto(r['plain'])}. `--overwrite`: {onto(r['overwrite'])}. onto a file: "
            f"{_run(f, False)}; the file {'kept' if f['kept'] else 'lost'}{hidden}")


def _hash_writers(r: dict) -> str:
    def trials(ts: list[dict]) -> str:
        codes = sorted({c for t in ts for c in t["exit_codes"]})
        return f"{', '.join(str(t['lost']) for t in ts)} rows lost (exit codes {codes})"

    return (f"new list: {trials(r['plain'])}; on {r['listed_before']:,} listed: "
            f"{trials(r['big'])}")


def _hash_vs_memory(r: dict) -> str:
    added = 3
    return (f"`hashes add` {_run(r['hashes_add'])}, `memory add` {_run(r['memory_add'])}; the "
            f"list keeps {r['hashes_kept']} of {added} added ({len(r['listed'])} listed), the "
            f"memory {r['memory_kept']} of {r['rows']}")


def _symlinks(r: dict) -> str:
    readme, hashes = r["README.md"], r["hashes.csv"]

    def add(c: dict) -> str:
        return f"`memory add` {_run(c['memory_add'])}" + (
            ", the outside file copied into the folder" if c["copied_in"] else "")

    p = hashes["predict"]
    return (f"README.md: {add(readme)}. hashes.csv: {add(hashes)}; `hashes add` "
            f"{_run(hashes['hashes_add'])}"
            + (", the outside list written" if hashes["outside_written"] else "")
            + f"; `predict` {_run(p)}"
            + (", answered by the outside list" if p["outside_answered"] else ""))


def _onnx_swap(r: dict) -> str:
    s, clean = r["swapped"], r["clean"]["prob"]
    if s["exit"] != 0:
        return f"refused: {_run(s)}"
    if r["still_int8"]:
        return (f"{_run(s)}: the int8 file served as `onnx` (p {s['prob']:.4f}, "
                f"{clean:.4f} before the swap)")
    return f"{_run(s)}: exported again (p {s['prob']:.4f}, {clean:.4f} before the swap)"


def _tuned_digest(r: dict) -> str:
    c, p = r["changed"], r["unchanged"]["prob"]
    return _run(c, limit=250) + (f", scored silently (p {c['prob']:.4f}, {p:.4f} before the change)"
                      if c["exit"] == 0 else "")


def _capped(r: dict) -> str:
    return _run(r) + ("" if r["timed_out"] else f"; peak RSS {r['peak_rss_mb']:.0f} MB")


def _long_text(r: dict) -> str:
    long, short = r["long"], r["short"]
    rows = ", ".join(f"{k} {v}" for k, v in long["rows"].items()) or "no rows written"
    errors = "".join(f" ({_quote(e, 120)})" for e in long["errors"])
    return (f"{_run(long)}; {rows}{errors}; peak RSS {long['peak_rss_mb']:.0f} MB "
            f"({short['peak_rss_mb']:.0f} MB with a short middle row)")


#: each storage case: what it does (from its numbers) and one cell per run
STORAGE_ROWS: dict[str, tuple[Callable[[dict], str], Callable[[dict], str]]] = {
    "folder_wipe": (lambda r: "`train --save DIR` onto a folder holding important.txt and a "
                              "Makefile; `train --save .` inside such a folder", _folder_wipe),
    "tune_out": (lambda r: "`tune --out` onto a model folder holding the user's notes.txt, "
                           "without and with `--overwrite`; onto an existing file", _tune_out),
    "hash_writers": (lambda r: f"{r['writers']} concurrent `hashes add` of {r['rows_each']} "
                               f"memes each, {len(r['plain'])} trials on a new list and "
                               f"{len(r['big'])} on a list of {r['listed_before']:,}",
                     _hash_writers),
    "hash_vs_memory": (lambda r: "`hashes add` of 3 memes while a `memory add` of "
                                 f"{r['rows']} waits {r['pause_s']:g} s to write", _hash_vs_memory),
    "symlinks": (lambda r: "README.md, then hashes.csv, linked to a file outside the model "
                           "folder", _symlinks),
    "onnx_swap": (lambda r: "the cached fp32 ONNX text export swapped for the int8 one, then "
                            "`predict --runtime onnx`", _onnx_swap),
    "tuned_digest": (lambda r: "`predict` with a model trained on a `tuned:` tower whose weights "
                               "changed since", _tuned_digest),
    "alias_bomb": (lambda r: f"`train --config` of a {r['bytes']}-byte YAML alias bomb (address "
                             f"space capped at {r['mem_cap_mb']:,} MB)", _capped),
    "long_text": (lambda r: f"`predict --input` of 3 rows, the middle one's text {r['mb']} MB",
                  _long_text),
    "dev_zero": (lambda r: f"`train --config /dev/zero` (address space capped at "
                           f"{r['mem_cap_mb']:,} MB)", _capped),
}


def _storage_table(cases: dict[str, dict[str, dict]]) -> str:
    """One row per case, one column per run label (before, after), headed by the commits the
    runs measured; the commands that made each column are named above it."""
    labels = [label for label in ("before", "after") if any(label in c for c in cases.values())]

    def distinct(label: str, key: str) -> list[str]:
        return list(dict.fromkeys(c[label]["run"][key] for c in cases.values() if label in c))

    rows = [[describe(next(cases[name][label] for label in labels[::-1] if label in cases[name])),
             *(cell(cases[name][label]) if label in cases[name] else "not run"
               for label in labels)]
            for name, (describe, cell) in STORAGE_ROWS.items() if name in cases]
    commands = "; ".join(f"{label}: " + ", ".join(f"`{c}`" for c in distinct(label, "command"))
                         for label in labels)
    return (f"Storage and input cases, each through the real CLI in child processes ({commands}):"
            "\n\n" + markdown_table(["case", *(f"{label} ({', '.join(distinct(label, 'commit'))})"
                                               for label in labels)], rows))


def report(r: dict[str, Any]) -> str:
    """The tables of the numbers kept in ``r``, as markdown."""
    parts = []
    if rows := _server_rows(r):
        parts.append(f"`{r['command']}` (server: `memetrm serve`, model "
                     f"`{Path(r['model']).name}`):\n\n" + markdown_table(["attack", "result"], rows))
    if r.get("storage"):
        parts.append(_storage_table(r["storage"]))
    return "\n\n".join(parts)


def render(data: Path = DATA) -> None:
    """The hostile-client tables in docs/serving.md, from the JSON the last run wrote."""
    r = load(data)
    if r:
        replace_block(DOC, "hostile", report(r))
