"""The hostile-client table in docs/serving.md, from docs/data/hostile.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/hostile.json"), Path("docs/serving.md")


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{n} x {c}" for c, n in codes.items())


def _health(h: dict) -> str:
    return (f"`/health` {h['ok_within_1s']} of {h['probes']} within 1 s "
            f"({100 * h['share_ok']:.0f}%, worst {h['worst_s']:.2f} s)")



def render(data: Path = DATA) -> None:
    """The hostile-client table in docs/serving.md, from the JSON the last run wrote."""
    r = load(data)
    if not r:
        return
    p, s, d = r["poisoned"], r["slow_clients"], r["degenerate_png"]
    rows = [
        ["poisoned batches: bursts of good requests + one lone-surrogate text",
         f"{p['good_failed']} of {p['bursts'] * p['good_per_burst']} good requests failed; "
         f"the bad one got {', '.join(map(str, sorted(set(p['bad_status']))))}"],
        [f"{s['clients']} slow clients trickling headers for {s['seconds']:g} s",
         f"{s['ok_within_1s']} of {s['probes']} `/health` probes answered 200 within 1 s "
         f"({100 * s['share_ok']:.0f}%)"],
        [f"a 4,000,000 x 10 PNG ({d['png_bytes']:,} bytes)",
         f"{d['status']} in {d['seconds']:.2f} s; server RSS {d['rss_before_mb']:.0f} -> "
         f"{d['rss_after_mb']:.0f} MB"],
    ]
    if "ocr_flood" in r:
        o, b, j, m = r["ocr_flood"], r["png_burst"], r["json"], r["memory_add"]
        rows += [
            [f"OCR flood: {o['requests']} concurrent text images with no `text`",
             f"{_codes(o['codes'])} in {o['seconds']:.0f} s; {_health(o['health'])}; server "
             f"CPU {o['cpu_s_in_5s_after']:.1f} s in the 5 s after the last answer"],
            [f"{b['requests']} concurrent {b['side']} x {b['side']} PNGs ({b['png_bytes']:,} "
             "bytes each)",
             f"{_codes(b['codes'])} in {b['seconds']:.0f} s; RSS {b['rss_before_mb']:.0f} -> "
             f"peak {b['rss_peak_mb']:.0f} (+{b['rss_peak_growth_mb']:.0f}) -> "
             f"{b['rss_after_mb']:.0f} MB; {_health(b['health'])}"],
            ["JSON nested 1000 deep; a 4,500-digit integer",
             f"{j['nested_1000_status']}; {j['digits_4500_status']}"],
            [f"{j['big']['bodies']} concurrent {j['big']['bytes'] / 1e6:.1f} MB JSON bodies of "
             f"{j['big']['keys']:,} keys",
             f"{_codes(j['big']['codes'])}; {_health(j['big']['health'])}"],
            [f"{m['writers']} concurrent `memetrm memory add` of {m['rows_each']} memes each",
             f"exit codes {m['exit_codes']}; memory holds {m['held']} of {m['expected']}: "
             f"{m['rows_lost']} rows lost"],
            ["server 500s over all attacks", str(r["server_500s"])],
        ]
    if "disconnects" in r:
        c, t = r["disconnects"], r["trickled_bodies"]
        served = t["first_ordinary_200_s"]
        rows[-1:-1] = [
            [f"{c['clients']} OCR predictions whose clients hang up after "
             f"{c['gave_up_after_s']:g} s",
             f"{c['cancelled']:.0f} cancelled; {c['scored_after']:.0f} scored after they left; "
             f"server busy {c['busy_s_after']:.0f} s after (CPU {c['cpu_s_after']:.1f} s)"],
            [f"{t['clients']} clients trickling a body one byte every 0.5 s",
             f"{_codes(t['answers'])} within {t['answered_within_s']:.0f} s; ordinary "
             f"predictions {_codes(t['ordinary'])}, "
             + (f"the first 200 after {served:.0f} s" if served is not None else "none 200")],
        ]
    replace_block(DOC, "hostile", f"`{r['command']}` (server: `memetrm serve`, model "
                  f"`{Path(r['model']).name}`):\n\n" + markdown_table(["attack", "result"], rows))
