"""The serving-limit tables of docs/serving.md (stages, served load, the reduced decode), from
docs/data/serve_limit.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/serve_limit.json"), Path("docs/serving.md")


def _draft(name: str, d: dict[str, Any]) -> str:
    said = f"Memes {name}: the decode drafted to {d['side']} px reduces {d['reduced']} of {d['memes']}"
    if not d["reduced"]:
        return said + "."
    return (f"{said}, decoded in {d['decode_drafted_ms']:.1f} ms instead of "
            f"{d['decode_full_ms']:.1f}; PDQ moves by {d['pdq_mean']:.1f} bits on average, at "
            f"most {d['pdq_max']}; probabilities by {d['dp_mean']:.4f} on average, at most "
            f"{d['dp_max']:.4f}.")


def markdown(r: dict[str, Any] | None) -> str:
    if not r:
        return "Not run yet: `python -m benchmarks.serve_limit`."
    s, p = r["stages"], r["provenance"]
    stages = markdown_table(
        ["stage", "runtime", "best batch", "ms per meme", "in the limit"],
        [[x["stage"], x["runtime"] or "both", str(x["batch"]), f"{x['ms']:.1f}",
          "yes" if x["in_limit"] else "no"] for x in s["rows"]], "llrrl")
    limits = "; ".join(f"{rt}: {ms:.1f} ms, {s['limit'][rt]:.0f} memes/s"
                       for rt, ms in s["stage_sum_ms"].items())
    served = markdown_table(
        ["runtime", "memes", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"],
        [[x["runtime"], x["traffic"], str(x["clients"]), f"{x['rps']:.1f}",
          *(f"{x[f'p{q}']:.0f}" for q in (50, 95, 99)), str(x["errors"])]
         for x in r["served"]], "llrrrrrr")
    draft = " ".join(_draft(name, d) for name, d in r["draft"].items())
    before, after = r["load_before"][0], r["load_after"][0]
    return "\n".join([
        f"`{p['command']}` ({r['memes']} MultiOFF memes, {r['duration']:g} s per served row; "
        f"{p['cores']} cores, {p['threads']} torch threads; load average {before:.1f} before, "
        f"{after:.1f} after{'; --quick: a smoke test, not a measurement' if r['quick'] else ''}"
        "):", "", stages, "", f"Stage sum and the limit it sets: {limits}.", "", served, "",
        f"onnx-int8 at 8 clients: fresh memes at {r['ratio_fresh_8']:.2f} of the limit, "
        f"{r['speedup_vs_torch_8']:.1f}x torch; reposts at {r['reposts_vs_fresh_8']:.1f}x the "
        f"fresh rate, half reposts at {r['half_reposts_vs_fresh_8']:.1f}x. p50 at 1 client is "
        f"the stage sum {r['p50_1_minus_stage_sum_ms']:+.1f} ms.", "", _bound(s), "", draft])


def _bound(s: dict[str, Any]) -> str:
    """How far a faster tower runtime can move the limit: the shared stages stay."""
    shared = sum(x["ms"] for x in s["rows"] if x["in_limit"] and x["runtime"] is None)
    torch_ms = s["stage_sum_ms"]["torch"]
    return (f"Decode, PDQ and transform take {shared:.1f} ms of every meme whatever runtime "
            f"runs the towers, so even towers that cost nothing would serve at most "
            f"{torch_ms / shared:.1f}x torch's limit; onnx-int8's towers give "
            f"{s['limit']['onnx-int8'] / s['limit']['torch']:.1f}x.")


def render(data: Path = DATA) -> None:
    replace_block(DOC, "serve-limit", markdown(load(data)))
