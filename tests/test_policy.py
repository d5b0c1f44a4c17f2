"""Policies -> actions: operating points chosen on the model's dev scores, the first rule that
holds winning, community sections, and an action (with its reason) on every answer: CLI, JSON,
batch rows, the API and list answers; ``policy show`` prints the expected rates on dev."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from memetrm.cli.main import app as cli
from memetrm.errors import ConfigError
from memetrm.evaluation.calibration import Calibrator
from memetrm.evaluation.metrics import choose_threshold
from memetrm.heads import create_head, save_pretrained
from memetrm.serving.app import create_app
from memetrm.serving.batch import predict_batch
from memetrm.serving.hashing import pdq
from memetrm.serving.hashlist import HashList
from memetrm.serving.policy import Policy, PolicyFile
from memetrm.serving.predictor import Predictor

from .fakes import FakeEncoder
from .test_hashing import scene, write_list

runner = CliRunner()
#: dev labels and raw scores saved with the test model
DEV_RAW = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
DEV_Y = [0, 0, 0, 1, 0, 1, 1, 1, 1, 1]
#: a temperature calibrator: T = 2
CALIBRATOR = {"method": "temperature", "a": 0.5, "b": 0.0}
POLICY = """\
actions:
  remove: precision>=0.99
  review: recall>=0.99
default: allow
communities:
  strict:
    actions: {remove: 0.0}
  lenient:
    default: keep
"""


class NoOCR:
    def load(self) -> NoOCR:
        return self

    def __call__(self, image) -> str:
        return "ocr text"


def policy_file(tmp_path: Path, text: str = POLICY) -> Path:
    (tmp_path / "policy.yaml").write_text(text)
    return tmp_path / "policy.yaml"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A text model with a calibrator and dev scores, as ``train --save`` writes them."""
    torch.manual_seed(0)
    return save_pretrained(create_head("linear", {"text": 5}), tmp_path / "model",
                           encoder="test-fake", fields=["text"], tokens=False, threshold=0.5,
                           calibrator=CALIBRATOR,
                           dev_scores={"split": "dev_seen", "labels": DEV_Y, "prob_raw": DEV_RAW})


def predictor(model: Path, policy: Path | None = None, **kw) -> Predictor:
    return Predictor(model, encoder=FakeEncoder(), ocr=NoOCR(), device="cpu",
                     policy=PolicyFile.read(policy) if policy else None, **kw)


def test_operating_points_are_chosen_on_the_calibrated_dev_scores(model: Path,
                                                                  tmp_path: Path) -> None:
    p = predictor(model, policy_file(tmp_path))
    dev = Calibrator.from_config({"calibrator": CALIBRATOR}, "c")(np.array(DEV_RAW))
    remove, review = p.policy.base.points
    assert (remove.action, remove.rule, remove.chosen_on) == ("remove", "precision>=0.99", "dev_seen")
    assert remove.threshold == choose_threshold(np.array(DEV_Y), dev, "precision>=0.99")
    assert review.threshold == choose_threshold(np.array(DEV_Y), dev, "recall>=0.99")
    # on the calibrated scale: the raw 0.6 and 0.4 of dev, through T = 2
    cal = Calibrator.from_config({"calibrator": CALIBRATOR}, "c")
    assert remove.threshold == pytest.approx(cal(np.array([0.6]))[0])
    assert review.threshold == pytest.approx(cal(np.array([0.4]))[0])
    assert remove.met and review.met


def test_the_first_rule_that_holds_wins_and_communities_override(model: Path,
                                                                 tmp_path: Path) -> None:
    spec = PolicyFile.read(policy_file(tmp_path, "actions: {remove: 0.5, review: 0.2}\n"
                                       "communities: {kids: {actions: {review: 0.05}}}\n"))
    pol = Policy.of_model(spec, {}, Calibrator(), 0.5, ["ok", "bad"], "m")
    assert pol.decide(0.7)["action"] == "remove"  # both rules hold: the first wins
    assert pol.decide(0.3)["action"] == "review"
    low = pol.decide(0.1)
    assert low["action"] == "allow" and low["action_reason"]["rule"] == "default"
    assert pol.decide(0.1, "kids")["action"] == "review"  # the community's own rules
    assert pol.decide(0.7, "kids")["action"] == "review"
    assert pol.decide(0.7, "kids")["action_reason"]["community"] == "kids"
    other = pol.decide(0.7, "adults")  # no section: the base policy, and it says so
    assert other["action"] == "remove" and "no section for community 'adults'" in \
        other["action_reason"]["words"]
    reason = pol.decide(0.7)["action_reason"]
    assert reason == {"rule": "remove: p>=0.5", "threshold": 0.5, "policy": "policy.yaml",
                      "community": None, "words": reason["words"]}


@pytest.mark.parametrize(("text", "error"), [
    ("default: allow\n", "names its actions in order under 'actions'"),
    ("actions: {remove: precision>=2}\n", "actions.remove: threshold metric"),
    ("actions: {remove: 1.5}\n", "a calibrated probability in [0, 1]"),
    ("actions: {remove: 0.9}\nthreshold: 3\n", "unknown key(s) ['threshold']"),
    ("actions: {allow: 0.9}\n", "'allow' is both a rule's action and the default"),
    ("actions: {remove: 0.9}\ncommunities: {kids: {actions: {}}}\n",
     "communities.kids: 'actions' must map"),
])
def test_a_bad_policy_file_is_a_config_error_naming_it(tmp_path: Path, text: str,
                                                       error: str) -> None:
    with pytest.raises(ConfigError, match=f"policy.yaml.*{_re(error)}"):
        PolicyFile.read(policy_file(tmp_path, text))


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_a_model_without_dev_scores_takes_only_fixed_points(tmp_path: Path) -> None:
    bare = save_pretrained(create_head("linear", {"text": 5}), tmp_path / "bare",
                           encoder="test-fake", fields=["text"], threshold=0.5)
    with pytest.raises(ConfigError, match="keeps no dev scores.*remove: precision>=0.99"):
        predictor(bare, policy_file(tmp_path))
    p = predictor(bare, policy_file(tmp_path, "actions: {remove: 0.0}\n"))
    [res] = p.predict([None], ["some text"])
    assert res["action"] == "remove" and res["score_raw"] == res["prob"]  # no calibrator


def test_no_policy_file_makes_the_label_the_action(model: Path) -> None:
    a, b = predictor(model, threshold=0.0).predict([None, None], ["x", "y"])
    assert a["action"] == a["label_name"] == "hateful"
    assert a["action_reason"]["rule"] == "hateful: threshold" and a["action_reason"]["policy"] is None
    [c] = predictor(model, threshold=1.0).predict([None], ["x"])
    assert c["action"] == "not hateful" and c["action_reason"]["rule"] == "default"


def test_every_answer_has_an_action_consistent_with_the_policy(model: Path,
                                                              tmp_path: Path) -> None:
    p = predictor(model, policy_file(tmp_path))
    points = p.policy.base.points
    texts = [f"meme {'bad ' * i}number {i}" for i in range(12)]
    for res in p.predict([None] * len(texts), texts):
        expected = next((q.action for q in points if res["prob"] >= q.threshold), "allow")
        assert res["action"] == expected
        if expected != "allow":
            rule = next(q for q in points if q.action == expected)
            assert res["action_reason"]["threshold"] == rule.threshold
    [strict] = p.predict([None], [{"text": "x", "community": "strict"}])
    assert strict["action"] == "remove" and strict["action_reason"]["rule"] == "remove: p>=0"
    [lenient] = predictor(model, policy_file(tmp_path, "actions: {remove: 1.0}\n"
                                             "communities: {lenient: {default: keep}}\n")
                          ).predict([None], [{"text": "x", "community": "lenient"}])
    assert lenient["action"] == "keep"


def test_cli_predict_shows_the_action_and_json_carries_it(model: Path, tmp_path: Path) -> None:
    args = ["predict", "--model", str(model), "--text", "hello", "--policy",
            str(policy_file(tmp_path)), "--device", "cpu"]
    res = runner.invoke(cli, [*args, "--community", "strict", "--json"])
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["action"] == "remove" and body["action_reason"]["community"] == "strict"
    assert body["score_raw"] is not None
    res = runner.invoke(cli, [*args, "--community", "strict"])
    assert res.exit_code == 0 and "action: remove (p " in res.stdout, res.output
    missing = runner.invoke(cli, [*args[:-4], "--policy", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "nope.yaml" in missing.output


def test_batch_rows_carry_the_action_and_read_a_community_column(model: Path,
                                                                tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "text": "x", "community": "strict"},
        {"id": "b", "text": "x", "community": "lenient"},
        {"id": "c", "text": "x", "community": 7}]))
    out = tmp_path / "out.jsonl"
    summary = predict_batch(predictor(model, policy_file(tmp_path, "actions: {remove: 1.0}\n"
                                                      "communities: {strict: {actions: "
                                                      "{remove: 0.0}}, lenient: {default: keep}}"
                                                      "\n")), src, out, progress=False)
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (summary.scored, summary.errors) == (2, 1)
    assert rows["a"]["action"] == "remove" and rows["b"]["action"] == "keep"
    assert rows["a"]["action_reason"]["rule"] == "remove: p>=0"
    assert "'community' must be a string, got int" in rows["c"]["error"]
    assert rows["c"]["action"] is None  # error rows share the schema


def test_api_answers_carry_the_action_and_model_info_the_policy(model: Path,
                                                               tmp_path: Path) -> None:
    client = TestClient(create_app(predictor(model, policy_file(tmp_path))))
    r = client.post("/v1/predict", json={"text": "hello", "community": "strict"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action"] == "remove" and body["action_reason"]["community"] == "strict"
    assert body["score_raw"] is not None and body["prob"] != body["score_raw"]
    form = client.post("/v1/predict", data={"text": "hello"}).json()
    assert form["action"] in ("remove", "review", "allow") and form["action_reason"]["words"]
    info = client.get("/v1/model").json()
    assert [x["action"] for x in info["policy"]["rules"]] == ["remove", "review"]
    assert set(info["policy"]["communities"]) == {"strict", "lenient"}
    assert info["calibration"] == "temperature scaling (T = 2.000)"
    bad = client.post("/v1/predict", json={"text": "hello", "community": ["a"]})
    assert bad.status_code == 422 and "'community' must be a string" in bad.text
    schema = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["requestBody"]
    assert "community" in schema["content"]["application/json"]["schema"]["properties"]
    page = client.get("/").text
    assert 'id="action-name"' in page and "data.action_reason.words" in page


def test_list_answers_map_to_actions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = save_pretrained(create_head("linear", {"image": 6, "text": 5}), tmp_path / "m",
                            encoder="test-fake", fields=["image", "text"], threshold=0.5)
    listed = HashList.read(write_list(tmp_path / "known.csv", [(pdq(scene(1)).hex, 1, "case-7"),
                                                               (pdq(scene(4)).hex, 0, "case-8")]))
    p = predictor(model, policy_file(tmp_path, "actions: {remove: 0.99, review: 0.5}\n"),
                  hash_lists=[listed])
    bad, good = p.predict([scene(1), scene(4)], [None, None])
    assert bad["source"]["kind"] == good["source"]["kind"] == "list"
    assert bad["action"] == "remove" and "listed meme of label 1" in bad["action_reason"]["words"]
    assert bad["action_reason"]["rule"] == "list: remove"
    assert good["action"] == "allow" and good["action_reason"]["rule"] == "list: allow"
    assert bad["score_raw"] is None


def test_policy_show_prints_each_actions_expected_rates_on_dev(model: Path,
                                                              tmp_path: Path) -> None:
    res = runner.invoke(cli, ["policy", "show", "--model", str(model), "--policy",
                              str(policy_file(tmp_path))])
    assert res.exit_code == 0, res.output
    lines: dict[str, list[str]] = {}
    for line in res.stdout.splitlines():  # the base policy's table comes first
        if line.count("│") >= 8:
            lines.setdefault(line.split("│")[1].strip(), [c.strip() for c in line.split("│")[2:-1]])
    # dev raw >= 0.6 (5 memes, all hateful), [0.4, 0.6) (one of two hateful), the rest
    assert lines["remove"][2:] == ["0.500", "1.000", "0.833", "1.000, 0.833"]
    # the review rule asked for recall >= 0.99 of everything at or above its threshold
    assert lines["review"][2:] == ["0.200", "0.500", "0.167", "0.857, 1.000"]
    assert lines["allow"][2:] == ["0.300", "0.000", "0.000", ""]
    assert "policy.yaml: expected on dev_seen (10 memes)" in res.stdout.replace("\n", " ")
    assert "community 'strict'" in res.stdout


def test_the_ray_worker_applies_the_policy(model: Path, tmp_path: Path) -> None:
    from memetrm.serving.batch import InputItem
    from memetrm.serving.ray_batch import Scorer, _row

    scorer = Scorer(str(model), "cpu", policy=str(policy_file(tmp_path)))
    rows = [_row(InputItem("a", texts={"text": "x", "community": "strict"}))]
    [row] = [json.loads(r) for r in scorer({k: [r[k] for r in rows] for k in rows[0]})["row"]]
    assert row["action"] == "remove" and row["action_reason"]["community"] == "strict"


def test_serve_reads_its_policy_before_serving(model: Path, tmp_path: Path) -> None:
    res = runner.invoke(cli, ["serve", "--model", str(model), "--policy",
                              str(policy_file(tmp_path, "actions: {remove: precision>=7}\n"))])
    assert res.exit_code == 2 and "policy.yaml: actions.remove: threshold metric" in res.output


def test_a_reloaded_revision_gets_operating_points_from_its_own_dev_scores(
        model: Path, tmp_path: Path) -> None:
    from memetrm.serving.reload import ModelWatcher

    p = predictor(model, policy_file(tmp_path))
    before = p.policy.base.points[0].threshold
    head, config = p.head, dict(p.config)
    shifted = [min(1.0, v + 0.04) for v in DEV_RAW]
    save_pretrained(head, model, **{k: v for k, v in config.items() if k not in (
        "head", "config", "input_dims", "token_dims", "fitted", "revision", "dev_scores")},
        dev_scores={"split": "dev_seen", "labels": DEV_Y, "prob_raw": shifted})
    watcher = ModelWatcher(p)
    assert watcher.reload()
    cal = Calibrator.from_config({"calibrator": CALIBRATOR}, "c")
    assert p.policy.base.points[0].threshold == pytest.approx(cal(np.array([0.64]))[0]) != before
    # a revision without dev scores cannot place the rules: the served one stays
    save_pretrained(head, model, **{k: v for k, v in config.items() if k not in (
        "head", "config", "input_dims", "token_dims", "fitted", "revision", "dev_scores")})
    served = p.model_id
    assert not watcher.reload() and p.model_id == served
