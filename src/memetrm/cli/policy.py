"""``memetrm policy show``: what a policy file would do with a model, on its dev split, before
it is deployed with ``serve --policy`` or ``predict --policy``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from memetrm.cli.options import Model
from memetrm.errors import DataError
from memetrm.modelstore import read_config
from memetrm.progress import results

if TYPE_CHECKING:
    from memetrm.serving.policy import Policy

PolicyOption = Annotated[Path | None, typer.Option(
    "--policy", help="A policy file (YAML): actions at operating points chosen on the model's "
                     "dev split, the first that holds winning, e.g. 'actions: {remove: "
                     "precision>=0.9, review: recall>=0.95}' and 'default: allow'; every answer "
                     "gets its action [default: the label at the threshold].")]
Community = Annotated[str | None, typer.Option(
    help="The meme's community: selects its section of the --policy file.")]

policy_app = typer.Typer(help="Policies: actions at operating points chosen on dev.",
                         no_args_is_help=True)


@policy_app.command("show")
def policy_show(
    model: Model,
    policy: Annotated[Path, typer.Option(help="The policy file (YAML).")],
    community: Annotated[str | None, typer.Option(
        help="Show only this community's section [default: the base policy and every "
             "community].")] = None,
) -> None:
    """Each action's operating point and its expected rates on the model's dev split: the
    share of memes it gets, and their precision and recall for the positive label."""
    from memetrm.evaluation.calibration import Calibrator
    from memetrm.serving.policy import Policy, PolicyFile
    from memetrm.serving.predictor import DEFAULT_LABELS, decision_threshold

    if not policy.is_file():
        raise DataError(f"{policy}: no such policy file")
    spec = PolicyFile.read(policy)
    config = read_config(model)
    where = str(model / "config.json")
    labels = list(config.get("labels") or DEFAULT_LABELS)
    compiled = Policy.of_model(spec, config, Calibrator.from_config(config, where),
                               decision_threshold(config, model), labels, where)
    sections = [community] if community is not None else [None, *compiled.communities]
    for name in sections:
        results.print(rates_table(compiled, name, labels[1]))


def rates_table(policy: Policy, community: str | None, positive: str) -> Table:
    """One rule set's actions, in order, then its default, with their rates on dev."""
    rules = policy.rules_for(community)
    dev = policy.dev
    title = (f"{policy.name}" + (f", community {community!r}" if community is not None else "")
             + (" (no section: the base policy)" if community is not None
                and rules.community is None else "")
             + f": expected on {dev.split if dev else 'dev'} ({len(dev.labels) if dev else 0} "
               "memes), first rule winning")
    table = Table(title=title)
    for col in ("action", "rule", "threshold", "share of memes", f"precision ({positive})",
                f"recall ({positive})", "at or above the threshold: precision, recall"):
        table.add_column(col, justify="left" if col in ("action", "rule") else "right")
    for row in policy.expected_rates(community):
        rule = row["rule"] + ("" if row["met"] else " (not reached on dev: the closest)")
        above = row["at_threshold"]
        table.add_row(row["action"], rule,
                      "" if row["threshold"] is None else f"{row['threshold']:.3f}",
                      f"{row['share']:.3f}", _rate(row["precision"]), _rate(row["recall"]),
                      "" if above is None else
                      f"{_rate(above['precision'])}, {_rate(above['recall'])}")
    return table


def _rate(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"  # NaN: no meme gets the action


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
