"""Calibrated probabilities: fitted on dev (or out-of-fold), saved with the model, applied by
the predictor (the raw score kept), measured by ECE in train, evaluate and reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.errors import ConfigError
from memetrm.evaluation.calibration import (
    ISOTONIC_MIN,
    Calibrator,
    expected_calibration_error,
    reliability,
)
from memetrm.evaluation.metrics import auroc, choose_threshold
from memetrm.modelstore import read_config
from memetrm.serving.predictor import Predictor

from . import fakes  # noqa: F401  (registers the test-fake encoder)

runner = CliRunner()


def overconfident(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) and scores sigmoid(4 z): right ranking, far too sure."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return y, 1 / (1 + np.exp(-4 * z))


def test_temperature_scaling_lowers_ece_and_keeps_auroc() -> None:
    y, raw = overconfident()
    dev, test = slice(0, 1500), slice(1500, None)
    cal = Calibrator.fit("temperature", y[dev], raw[dev])
    assert cal.method == "temperature" and cal.params["b"] == 0
    assert 1 / cal.params["a"] == pytest.approx(4, rel=0.25)  # the over-confidence undone
    before, after = (expected_calibration_error(y[test], p) for p in (raw[test], cal(raw[test])))
    assert before > 0.1 and after < 0.04
    assert auroc(y[test], cal(raw[test])) == pytest.approx(auroc(y[test], raw[test]), abs=1e-12)
    # strictly increasing: the threshold moved to the calibrated scale labels every meme as before
    thr = choose_threshold(y[dev], raw[dev], "precision>=0.8")
    cal_thr = choose_threshold(y[dev], cal(raw[dev]), "precision>=0.8")
    assert ((raw >= thr) == (cal(raw) >= cal_thr)).all()


def test_platt_and_isotonic_follow_scikit_learn() -> None:
    from sklearn.calibration import _SigmoidCalibration
    from sklearn.isotonic import IsotonicRegression

    from memetrm.evaluation.calibration import logit

    y, raw = overconfident(1200)
    platt = Calibrator.fit("platt", y, raw)
    ref = _SigmoidCalibration().fit(logit(raw), y)
    assert platt.params["a"] == pytest.approx(-ref.a_, rel=1e-4)
    assert platt(raw) == pytest.approx(ref.predict(logit(raw)), abs=1e-6)
    iso = Calibrator.fit("isotonic", y, raw)
    ref_iso = IsotonicRegression(out_of_bounds="clip").fit(logit(raw), y)
    assert iso(raw) == pytest.approx(ref_iso.predict(logit(raw)), abs=1e-9)
    assert Calibrator.fit("none", y, raw)(raw) is not None
    assert (Calibrator.fit("none", y, raw)(raw) == raw).all()


def test_scores_ranked_backwards_on_dev_get_the_dev_rate_not_a_swapped_ranking() -> None:
    y, raw = overconfident(1200)
    platt = Calibrator.fit("platt", 1 - y, raw)  # label 1 scored lower: a falling sigmoid fits
    assert platt.params["a"] == 0 and platt(raw) == pytest.approx(np.full(1200, 1 - y.mean()))
    assert Calibrator.from_config({"calibrator": platt.to_dict()}, "m") == platt


def test_a_calibrator_fits_on_a_dev_split_with_one_meme_of_a_class() -> None:
    y, raw = np.array([0, 0, 0, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.2])
    for method in ("temperature", "platt"):
        p = Calibrator.fit(method, y, raw)(raw)
        assert p[3] == p.max()


def test_isotonic_is_refused_under_a_thousand_examples() -> None:
    y, raw = overconfident(ISOTONIC_MIN)
    with pytest.raises(ConfigError, match="at least 1,000 examples.*dev_seen has 999 examples"):
        Calibrator.fit("isotonic", y[:-1], raw[:-1], "dev_seen")
    assert Calibrator.fit("isotonic", y, raw).method == "isotonic"


def test_a_saved_calibrator_round_trips_and_a_bad_one_is_named() -> None:
    y, raw = overconfident(1200)
    for method in ("temperature", "platt", "isotonic", "none"):
        cal = Calibrator.fit(method, y, raw)
        again = Calibrator.from_config(json.loads(json.dumps({"calibrator": cal.to_dict()})), "m")
        assert again == cal and (again(raw) == cal(raw)).all()
    assert Calibrator.from_config({}, "m").method == "none"  # saved before calibration existed
    for bad in ({"method": "magic"}, {"method": "platt", "a": 1.0},
                {"method": "temperature", "a": -1.0, "b": 0.0}, "temperature",
                {"method": "platt", "a": float("nan"), "b": 0.0}):
        with pytest.raises(ConfigError, match="m/config.json: 'calibrator' must be"):
            Calibrator.from_config({"calibrator": bad}, "m/config.json")


def test_ece_and_reliability_use_fifteen_equal_width_bins() -> None:
    y = np.array([0, 1, 1, 1, 0, 0])
    p = np.array([0.0, 1.0, 0.95, 0.95, 0.5, 0.5])
    r = reliability(y, p)
    assert len(r["count"]) == 15 and r["count"][14] == 3 and r["count"][7] == 2
    # bins: {0.0} gap 0; {0.5, 0.5} gap 0.5; {1.0, 0.95, 0.95} gap |0.9667 - 1|
    expected = (2 * 0.5 + 3 * (1 - (1.0 + 0.95 + 0.95) / 3)) / 6
    assert expected_calibration_error(y, p) == pytest.approx(expected)


def train_tiny(data: Path, out: Path, *extra: str) -> CliRunner:
    return runner.invoke(app, ["train", "--dataset", str(data), "--encoder", "test-fake",
                               "--head", "mlp", "--seeds", "2", "--set", "train.epochs=3",
                               "--set", "bootstrap=0", "--save", str(out / "model"),
                               "--out-dir", str(out / "run"), "--json", str(out / "r.json"),
                               *extra])


@pytest.fixture
def trained(tiny_jsonl_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    res = train_tiny(tiny_jsonl_dataset, tmp_path)
    assert res.exit_code == 0, res.output
    (tmp_path / "train.log").write_text(res.output)
    return tmp_path


def test_train_saves_the_calibrator_and_the_predictor_answers_calibrated(trained: Path) -> None:
    r = json.loads((trained / "r.json").read_text())
    config = read_config(trained / "model")
    assert "test ECE (15 bins)" in (trained / "train.log").read_text()
    cal = Calibrator.from_config(config, "config")
    assert cal.method == "temperature" and cal.to_dict() == r["calibrators"][r["best_seed"]]
    for split in r["splits"].values():  # ECE beside the metrics, calibrated and raw
        assert {"ece", "ece_raw"} <= set(split) and len(split["ece"]["values"]) == 2
    preds = json.loads((trained / "run" / "predictions.json").read_text())
    dev = preds["dev"]
    assert np.allclose(cal(np.array(dev["probs_raw"][r["best_seed"]])), dev["probs"][r["best_seed"]])
    # the threshold is on the calibrated scale: chosen on the calibrated dev probabilities
    assert config["threshold"] == pytest.approx(choose_threshold(
        np.array(dev["labels"]), np.array(dev["probs"][r["best_seed"]]), "balanced-accuracy"))
    assert config["dev_scores"]["split"] == "dev"
    assert config["dev_scores"]["prob_raw"] == pytest.approx(dev["probs_raw"][r["best_seed"]])
    assert "calibrated on the same predictions by temperature scaling" in (
        trained / "model" / "README.md").read_text()

    p = Predictor(trained / "model", encoder=fakes.FakeEncoder(), device="cpu")
    img = Image.new("RGB", (32, 32), "red")
    a, b = p.predict([img, img], ["a good meme", "a bad bad meme"])
    for res in (a, b):
        assert res["prob"] == pytest.approx(float(cal(np.array([res["score_raw"]]))[0]))
        assert res["label"] == int(res["prob"] >= config["threshold"])
        assert res["action"] == res["label_name"]  # no policy: the action is the label
    assert a["score_raw"] != b["score_raw"] and a["prob"] != pytest.approx(a["score_raw"])
    assert p.info()["calibration"].startswith("temperature scaling (T = ")


def test_evaluate_reports_ece_and_plots_the_reliability_diagram(trained: Path) -> None:
    out = trained / "eval.json"
    res = runner.invoke(app, ["evaluate", "--model", str(trained / "model"), "--json", str(out),
                              "--plot", str(trained / "eval.png")])
    assert res.exit_code == 0, res.output
    assert "ECE (15 bins)" in res.stdout
    ev = json.loads(out.read_text())
    assert ev["calibration"]["method"] == "temperature" and 0 <= ev["ece"] <= 1
    assert 0 <= ev["ece_raw"] <= 1 and sum(ev["reliability"]["count"]) == ev["n"]
    assert (trained / "eval.png").stat().st_size > 10_000
    report = runner.invoke(app, ["report", str(trained / "run"), "--out", str(trained / "r.md")])
    assert report.exit_code == 0, report.output
    png = next((trained / "r_assets").glob("roc-*.png"))
    assert Image.open(png).width > 1100  # the ROC and the reliability diagram side by side


def test_isotonic_on_a_small_dev_split_is_exit_2_with_the_reason(
        tiny_jsonl_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    res = train_tiny(tiny_jsonl_dataset, tmp_path, "--calibration", "isotonic")
    assert res.exit_code == 2, res.output
    assert "isotonic calibration needs at least 1,000 examples" in res.output
    assert "tiny_memes/dev has 12 examples" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "model").exists()
    res = train_tiny(tiny_jsonl_dataset, tmp_path, "--calibration", "sigmoidal")
    assert res.exit_code == 2 and "calibration must be one of" in res.output


def test_cross_validation_calibrates_on_the_out_of_fold_predictions(
        tiny_jsonl_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    res = train_tiny(tiny_jsonl_dataset, tmp_path, "--cv", "2", "--calibration", "platt")
    assert res.exit_code == 0, res.output
    config = read_config(tmp_path / "model")
    r = json.loads((tmp_path / "r.json").read_text())
    oof = json.loads((tmp_path / "run" / "predictions.json").read_text())["cv"]
    raw = np.array(oof["probs_raw"][r["best_seed"]])
    assert config["dev_scores"]["split"] == "cv" and len(config["dev_scores"]["labels"]) == 36
    assert Calibrator.from_config(config, "c") == Calibrator.fit("platt", np.array(oof["labels"]),
                                                                  raw)


def test_the_benchmark_fits_on_dev_only_and_refuses_isotonic_on_a_small_dev() -> None:
    from benchmarks.calibration import score_methods

    y, raw = overconfident(1400)
    dev, test = [raw[:400]] * 2, [raw[400:]] * 2
    a = score_methods(y[:400], dev, y[400:], test)
    b = score_methods(y[:400], dev, 1 - y[400:], test)  # other test labels: same calibrators
    assert a["isotonic"] == {"refused": "dev has 400 memes (< 1,000)"}
    assert a["temperature"]["mean_prob"] == b["temperature"]["mean_prob"]
    assert a["raw"]["auroc"]["mean"] == pytest.approx(a["temperature"]["auroc"]["mean"])
    assert a["temperature"]["ece"]["mean"] < a["raw"]["ece"]["mean"]


def test_a_saved_ensemble_is_calibrated_on_its_own_dev_mean(
        tiny_jsonl_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    res = runner.invoke(app, ["compare", "--dataset", str(tiny_jsonl_dataset), "--encoder",
                              "test-fake", "--heads", "linear,mlp", "--seeds", "2", "--ensemble",
                              "2", "--set", "train.epochs=3", "--set", "bootstrap=0",
                              "--calibration", "platt", "--out-dir", str(tmp_path / "runs"),
                              "--save", str(tmp_path / "ens")])
    assert res.exit_code == 0, res.output
    config = read_config(tmp_path / "ens")
    dev = config["dev_scores"]
    # the members' raw mean is what the ensemble head computes: the calibrator is fitted on it
    assert Calibrator.from_config(config, "c") == Calibrator.fit(
        "platt", np.array(dev["labels"]), np.array(dev["prob_raw"]))
    assert config["threshold"] == pytest.approx(choose_threshold(
        np.array(dev["labels"]), Calibrator.from_config(config, "c")(np.array(dev["prob_raw"])),
        "balanced-accuracy"))


def test_a_reasoning_trace_is_on_the_calibrated_scale_of_its_threshold(
        tmp_path: Path, trace_head: str) -> None:
    from memetrm.heads import create_head, save_pretrained

    model = save_pretrained(create_head(trace_head, {"text": 5}, steps=3), tmp_path / "m",
                            encoder="test-fake", fields=["text"], threshold=0.5,
                            calibrator={"method": "platt", "a": 0.5, "b": 1.0})
    [res] = Predictor(model, encoder=fakes.FakeEncoder(), device="cpu").predict([None], ["hi"])
    assert res["trace"][-1] == pytest.approx(res["prob"])  # the page draws the threshold on it
    assert res["prob"] == pytest.approx(1 / (1 + np.exp(-(0.5 * np.log(
        res["score_raw"] / (1 - res["score_raw"])) + 1.0))))
