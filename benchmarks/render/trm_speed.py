"""The TRM speed tables in docs/trm.md, from docs/data/trm_speed.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table
from memetrm.utils import plural

DATA, DOC = Path("docs/data/trm_speed.json"), Path("docs/trm.md")
#: the label of ``trm-act`` trained with every row running all N_sup steps
NO_HALT = "trm-act, no halting in training"


def render(data: Path = DATA) -> str | None:
    """The speed tables, written into docs/trm.md and returned; None before the first run."""
    r = load(data)
    if not r:
        return None
    train = markdown_table(
        ["head", "s / epoch", "vs mlp", "rows x steps computed", "optimizer steps / batch"],
        [[row["head"], f"{row['seconds_per_epoch']:.2f}", f"{row['ratio_to_mlp']:.1f}x",
          f"{row['work_fraction']:.0%}", f"{row['steps_per_batch']:.2f}"]
         for row in r["train"]], "lrrrr")
    inf = r["inference"]
    infer = markdown_table(
        [f"trm-act on {inf['split']}", "seconds", "mean steps", "AUROC"],
        [["early exit", f"{inf['early_exit_seconds']:.3f}",
          f"{inf['mean_steps']:.2f} / {inf['n_sup']}", f"{inf['auroc_early_exit']:.3f}"],
         ["full depth", f"{inf['full_depth_seconds']:.3f}", f"{inf['n_sup']} / {inf['n_sup']}",
          f"{inf['auroc_full_depth']:.3f}"]], "lrrr")
    by = {row["head"]: row for row in r["train"]}
    act, no_halt = by.get("trm-act"), by.get(NO_HALT)
    saving = ([f"Halting in training computes {act['work_fraction']:.0%} of the rows x steps, and "
               f"a `trm-act` epoch takes {act['seconds_per_epoch'] / no_halt['seconds_per_epoch']:.0%}"
               " of the time of the same head trained without halting.", ""]
              if act and no_halt else [])
    table = "\n".join([
        f"`{r['command']}` ({r['epochs']} epochs on {r['train_rows']} train memes, "
        f"{plural(r['threads'], 'thread')}, {r['machine']}):", "", train, "", *saving,
        f"After those epochs, halting threshold {inf['threshold']:.2f} calibrated on dev_seen; "
        f"on {inf['split']} ({inf['rows']} memes, held out) early exit is "
        f"{inf['speedup']:.1f}x faster than full depth:",
        "", infer])
    replace_block(DOC, "trm-speed", table)
    return table
