"""The review loop: answers routed to review are queued with their precedents, reviewers with a
token decide, every decision is an append-only audit row naming the token's reviewer, a
decision teaches the model (list and memory) and a reversed appeal takes the lesson back; the
log loses no row to concurrent writers or a killed server."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from memetrm.cli.main import app as cli
from memetrm.heads import create_head, from_pretrained, save_pretrained
from memetrm.serving.app import create_app
from memetrm.serving.auth import Tokens
from memetrm.serving.batch import iter_inputs
from memetrm.serving.hashlist import HashList
from memetrm.serving.predictor import Predictor
from memetrm.serving.review import Conflict, ReviewStore, memory_id, routes_to_review

from . import fakes  # noqa: F401  (registers the test-fake encoder the model names)
from .test_hashing import scene

ALICE, BOB = "alice-token-0123456789", "bob-token-9876543210ab"
TOKENS = Tokens({ALICE: "alice", BOB: "bob"})
FORK = mp.get_context("fork")


def retrieval_model(path: Path, ids: tuple[str, ...] = ("a", "b", "c", "d")) -> Path:
    """A retrieval head (image + text, fake encoder) with four labelled memes in memory."""
    torch.manual_seed(0)
    head = create_head("retrieval", {"image": 6, "text": 5})
    head.remember({"image": torch.randn(len(ids), 6), "text": torch.randn(len(ids), 5),
                   "label": torch.tensor([float(i % 2) for i in range(len(ids))])}, list(ids))
    head.set_fitted(k_=2, temperature_=0.1, alpha_=1.0)  # a fitted vote names its neighbours
    return save_pretrained(head, path, encoder="test-fake", fields=["image", "text"],
                           tokens=False, threshold=0.5)


def everything(answer: dict) -> bool:
    """Routes every model answer to review (the policy's ``review`` action, in tests)."""
    return answer["source"]["kind"] != "list"


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    scene(seed).save(buf, "PNG")
    return buf.getvalue()


def predict(client, seed: int, text: str) -> dict:
    r = client.post("/v1/predict", files={"image": ("m.png", png(seed), "image/png")},
                    data={"text": text})
    assert r.status_code == 200, r.text
    return r.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def served(tmp_path: Path):
    """(model folder, review store, client) of a server that routes every model answer."""
    model = retrieval_model(tmp_path / "m")
    store = ReviewStore(str(tmp_path / "review.db"), routes=everything)
    app = create_app(Predictor(model, device="cpu"), review=store, review_tokens=TOKENS)
    with TestClient(app) as client:
        yield model, store, client


def test_routing_follows_the_answers_action() -> None:
    assert routes_to_review({"action": "review"})
    assert not routes_to_review({"action": "remove"}) and not routes_to_review({"label": 1})


def test_review_endpoints_refuse_a_missing_or_wrong_token(served) -> None:
    _, _, client = served
    item = predict(client, 1, "some meme")["review_id"]
    paths = [("get", "/v1/review/queue"), ("get", f"/v1/review/{item}"),
             ("get", f"/v1/review/{item}/image"), ("post", f"/v1/review/{item}/decision"),
             ("post", f"/v1/review/{item}/appeal")]
    for headers in ({}, bearer("wrong-token-0123456789"), bearer(ALICE[:-1]),
                    {"Authorization": f"Basic {ALICE}"}, {"Authorization": ALICE}):
        for method, path in paths:
            r = client.request(method, path, headers=headers, json={"decision": "violating"})
            assert r.status_code == 401, (path, headers, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/review/queue", headers=bearer(ALICE)).status_code == 200
    page = client.get("/review")  # the page holds no data; it asks for the token
    assert page.status_code == 200 and 'id="token"' in page.text


def test_a_decision_is_an_audit_row_of_the_tokens_reviewer(served, tmp_path: Path) -> None:
    _, store, client = served
    answer = predict(client, 1, "some meme")
    item = answer["review_id"]
    queue = client.get("/v1/review/queue", headers=bearer(ALICE)).json()
    assert queue["reviewer"] == "alice"
    [waiting] = queue["items"]
    assert waiting["id"] == item and waiting["status"] == "waiting"
    assert waiting["precedents"] == answer["neighbours"] and len(waiting["precedents"]) > 0
    assert waiting["texts"] == {"text": "some meme"} and waiting["model"] == answer["model"]
    assert client.get(f"/v1/review/{item}/image", headers=bearer(BOB)).content == png(1)
    r = client.post(f"/v1/review/{item}/decision", headers=bearer(BOB),
                    json={"decision": "escalate", "note": "not sure", "reviewer": "mallory",
                          "learn": False})
    assert r.status_code == 200, r.text
    row = r.json()
    assert row["reviewer"] == "bob" and row["decision"] == "escalate" and row["previous"] is None
    assert row["model"] == answer["model"] and row["note"] == "not sure"
    assert client.get("/v1/review/queue", headers=bearer(ALICE)).json()["items"] == []
    escalated = client.get("/v1/review/queue?status=escalated", headers=bearer(ALICE)).json()
    assert [i["id"] for i in escalated["items"]] == [item]
    r = client.post(f"/v1/review/{item}/decision", headers=bearer(ALICE),
                    json={"decision": "not_violating", "learn": False})
    assert r.json()["reviewer"] == "alice" and r.json()["previous"] == "escalate"
    again = client.post(f"/v1/review/{item}/decision", headers=bearer(ALICE),
                        json={"decision": "violating"})
    assert again.status_code == 409 and "appeal" in again.json()["detail"]
    assert [(a["reviewer"], a["decision"]) for a in store.audit()] == [
        ("bob", "escalate"), ("alice", "not_violating")]
    with sqlite3.connect(tmp_path / "review.db") as db:  # append-only, also for the database
        for sql in ("UPDATE review_audit SET reviewer = 'mallory'", "DELETE FROM review_audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)


def test_queue_orders_oldest_or_most_uncertain_first(tmp_path: Path) -> None:
    store = ReviewStore(str(tmp_path / "r.db"))
    base = {"model": "m@1", "threshold": 0.5, "source": {"kind": "model"}}
    for prob in (0.9, 0.52, 0.2):
        store.route({**base, "prob": prob}, None, {"text": str(prob)})
    assert [i["prob"] for i in store.queue()] == [0.9, 0.52, 0.2]
    assert [i["prob"] for i in store.queue(order="uncertain")] == [0.52, 0.2, 0.9]


def within(seconds: float, check) -> None:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not seen within {seconds:g} s"
        time.sleep(0.05)


def test_a_decision_teaches_and_a_reversed_appeal_takes_it_back(served) -> None:
    model, store, client = served
    item = predict(client, 3, "Hateful words here")["review_id"]
    key = memory_id(item)
    r = client.post(f"/v1/review/{item}/decision", headers=bearer(ALICE),
                    json={"decision": "violating", "note": "slur"})
    assert r.status_code == 200, r.text
    assert r.json()["taught"] == {"id": key, "list": "added as 1", "memory": "added as 1"}
    [entry] = HashList.of_model(model).entries
    assert (entry.source_id, entry.label, entry.text) == (key, 1, "hateful words here")
    assert key in from_pretrained(model)[0].memory_ids
    # the running server follows its folder: the same meme is now answered from the list
    within(5, lambda: predict(client, 3, "hateful words here")["source"]["kind"] == "list")
    listed = predict(client, 3, "hateful words here")
    assert listed["source"]["id"] == key and listed["label"] == 1 and listed["review_id"] is None

    r = client.post(f"/v1/review/{item}/appeal", headers=bearer(BOB), json={"note": "satire"})
    assert r.status_code == 200 and r.json()["kind"] == "appeal"
    assert item in [i["id"] for i in client.get("/v1/review/queue", headers=bearer(BOB)).json()["items"]]
    r = client.post(f"/v1/review/{item}/decision", headers=bearer(BOB),
                    json={"decision": "not_violating", "note": "satire", "learn": False})
    assert r.status_code == 200, r.text
    row = r.json()
    assert row["previous"] == "violating" and row["reviewer"] == "bob"
    assert row["taught"] == {"id": key, "list": "removed", "memory": "removed"}
    assert HashList.of_model(model).entries == []
    assert key not in from_pretrained(model)[0].memory_ids
    within(5, lambda: predict(client, 3, "hateful words here")["source"]["kind"] == "model")
    trail = client.get(f"/v1/review/{item}", headers=bearer(ALICE)).json()["history"]
    assert [(h["kind"], h["decision"], h["previous"]) for h in trail] == [
        ("decision", "violating", None), ("appeal", None, "violating"),
        ("decision", "not_violating", "violating")]


def test_appeal_needs_a_decided_item(served) -> None:
    _, _, client = served
    item = predict(client, 1, "x")["review_id"]
    r = client.post(f"/v1/review/{item}/appeal", headers=bearer(ALICE), json={})
    assert r.status_code == 409
    assert client.post("/v1/review/999/decision", headers=bearer(ALICE),
                       json={"decision": "escalate"}).status_code == 404


def _decide_all(db: str, ids: list[int], reviewer: str) -> None:
    store = ReviewStore(db)
    for i in ids:
        store.record(i, "decision", "violating", f"by {reviewer}", reviewer, "m@1")


def _race(db: str, item: int, out) -> None:
    try:
        ReviewStore(db).record(item, "decision", "violating", "", "r", "m@1")
        out.put("won")
    except Conflict:
        out.put("conflict")


def test_eight_concurrent_writers_lose_no_decision(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    store = ReviewStore(db)
    base = {"model": "m@1", "threshold": 0.5, "prob": 0.5, "source": {"kind": "model"}}
    ids = [store.route(base, None, {"text": str(i)}) for i in range(8 * 25 + 1)]
    procs = [FORK.Process(target=_decide_all, args=(db, ids[p:-1:8], f"r{p}")) for p in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = store.audit()
    assert len(rows) == 200 and sorted(r["item_id"] for r in rows) == ids[:-1]
    # eight deciders of one item: exactly one decision, the others are told it is decided
    out = FORK.Queue()
    racers = [FORK.Process(target=_race, args=(db, ids[-1], out)) for _ in range(8)]
    for p in racers:
        p.start()
    for p in racers:
        p.join(60)
    assert sorted(out.get(timeout=5) for _ in racers) == ["conflict"] * 7 + ["won"]
    assert len(store.audit()) == 201


SERVER = """
import sys
import uvicorn
from memetrm.serving.app import create_app
from memetrm.serving.auth import Tokens
from memetrm.serving.predictor import Predictor
from memetrm.serving.review import ReviewStore
from tests import fakes  # noqa: F401

model, db, port, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
app = create_app(Predictor(model, device="cpu"), review=ReviewStore(db),
                 review_tokens=Tokens({token: "alice"}))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")
"""


@pytest.mark.slow
def test_a_killed_server_loses_no_committed_decision(tmp_path: Path) -> None:
    import socket

    model = retrieval_model(tmp_path / "m")
    db = str(tmp_path / "r.db")
    store = ReviewStore(db)
    base = {"model": "m@1", "threshold": 0.5, "prob": 0.5, "source": {"kind": "model"}}
    ids = [store.route(base, None, {"text": str(i)}) for i in range(60)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "server.py").write_text(SERVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), str(model), db, str(port),
                             ALICE],
                            env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        answered: list[int] = []
        with httpx.Client(timeout=10) as client:
            for i in ids:  # killed mid-stream: after 20 answers, while the next is in flight
                if len(answered) == 20:
                    threading.Timer(0.002, proc.send_signal, [signal.SIGKILL]).start()
                try:
                    r = client.post(f"{url}/v1/review/{i}/decision", headers=bearer(ALICE),
                                    json={"decision": "not_violating", "learn": False})
                except httpx.TransportError:
                    break
                assert r.status_code == 200, r.text
                answered.append(r.json()["id"])
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and 20 <= len(answered) < len(ids)
    rows = [r["id"] for r in ReviewStore(db).audit()]
    assert rows[:len(answered)] == answered and len(rows) <= len(answered) + 1


def test_export_round_trips_into_memory_add(served, tmp_path: Path) -> None:
    model, store, client = served
    items = [predict(client, s, f"meme {s}")["review_id"] for s in (1, 3, 4)]
    for item, decision in zip(items, ("violating", "not_violating", "escalate"), strict=True):
        r = client.post(f"/v1/review/{item}/decision", headers=bearer(ALICE),
                        json={"decision": decision, "learn": False})
        assert r.status_code == 200
    for out in (tmp_path / "ds" / "train.jsonl", tmp_path / "decisions.parquet"):
        r = CliRunner().invoke(cli, ["review", "export", "--db", str(tmp_path / "review.db"),
                                     "--output", str(out)])
        assert r.exit_code == 0, r.output
        rows = list(iter_inputs(out))
        assert [(i.id, i.label, i.texts["text"]) for i in rows] == [
            (memory_id(items[0]), 1, "meme 1"), (memory_id(items[1]), 0, "meme 3")]
        fresh = retrieval_model(tmp_path / f"fresh-{out.suffix[1:]}")
        r = CliRunner().invoke(cli, ["memory", "add", "--model", str(fresh), "--input", str(out),
                                     "--device", "cpu"])
        assert r.exit_code == 0, r.output
        assert from_pretrained(fresh)[0].memory_ids[-2:] == [memory_id(i) for i in items[:2]]
    from memetrm.data.jsonl import JsonlFolder

    records = JsonlFolder(tmp_path / "ds").records("train")  # what `train` reads
    assert [(r.id, r.label) for r in records] == [(memory_id(items[0]), 1), (memory_id(items[1]), 0)]
    assert all(r.image is not None and Path(r.image).is_file() for r in records)


def test_hashes_and_memory_remove(tmp_path: Path) -> None:
    from memetrm.serving.hashing import pdq
    from memetrm.serving.hashlist import MODEL_LIST, Entry

    model = retrieval_model(tmp_path / "m")
    HashList([Entry(pdq(scene(s)), 1, f"case-{s}", "") for s in (1, 2)]).write(model / MODEL_LIST)
    run = CliRunner().invoke
    r = run(cli, ["hashes", "remove", "--model", str(model), "--id", "case-1"])
    assert r.exit_code == 0, r.output
    assert [e.source_id for e in HashList.of_model(model).entries] == ["case-2"]
    r = run(cli, ["hashes", "remove", "--model", str(model), "--id", "case-2", "--id", "nope"])
    assert r.exit_code == 2 and "nope" in r.output
    assert [e.source_id for e in HashList.of_model(model).entries] == ["case-2"]
    before = from_pretrained(model)[0]
    r = run(cli, ["memory", "remove", "--model", str(model), "--id", "b", "--id", "d"])
    assert r.exit_code == 0, r.output
    after = from_pretrained(model)[0]
    assert after.memory_ids == ["a", "c"]
    assert torch.equal(after.bank.embeddings, before.bank.embeddings[[0, 2]])
    assert torch.equal(after.bank.labels, before.bank.labels[[0, 2]])
    assert [e.source_id for e in HashList.of_model(model).entries] == ["case-2"]  # carried over
    r = run(cli, ["memory", "remove", "--model", str(model), "--id", "b"])
    assert r.exit_code == 2 and "not in the memory" in r.output


def test_metrics_count_scores_and_actions(served) -> None:
    _, _, client = served
    predict(client, 1, "one")
    text = client.get("/metrics").text
    assert 'memetrm_score_count{source="model"} 1.0' in text
    assert 'memetrm_actions_total{action=' in text


def test_api_token_closes_only_the_scoring_api(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    app = create_app(Predictor(model, device="cpu"), api_tokens=Tokens({BOB: "client"}))
    with TestClient(app) as client:
        files = {"image": ("m.png", png(1), "image/png")}
        assert client.post("/v1/predict", files=files, data={"text": "x"}).status_code == 401
        assert client.get("/v1/model").status_code == 401
        assert client.post("/v1/predict", files=files, data={"text": "x"},
                           headers=bearer(BOB)).status_code == 200
        assert client.get("/health").status_code == 200


def test_no_token_reaches_the_logs(tmp_path: Path, live_server) -> None:
    model = retrieval_model(tmp_path / "m")
    store = ReviewStore(str(tmp_path / "r.db"), routes=everything)
    app = create_app(Predictor(model, device="cpu"), review=store, review_tokens=TOKENS,
                     api_tokens=Tokens({BOB: "client"}))
    url = live_server(app, log_level="info", access_log=True)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    handler = Keep()
    for name in ("uvicorn.access", "uvicorn.error", "memetrm.serve", ""):
        logging.getLogger(name).addHandler(handler)
    try:
        httpx.get(f"{url}/v1/review/queue?token={ALICE}", headers=bearer(ALICE))
        httpx.get(f"{url}/v1/review/queue", headers=bearer(ALICE + "x"))
        httpx.get(f"{url}/v1/model", headers=bearer(BOB))
    finally:
        for name in ("uvicorn.access", "uvicorn.error", "memetrm.serve", ""):
            logging.getLogger(name).removeHandler(handler)
    assert any("/v1/review/queue" in line for line in seen)
    assert not [line for line in seen if ALICE in line or BOB in line]


def test_tokens_file_and_bad_tokens(tmp_path: Path) -> None:
    from memetrm.errors import ConfigError

    (tmp_path / "tokens").write_text(f"# reviewers\n{ALICE} Alice Smith\n\n{BOB} bob\n")
    tokens = Tokens.of(file=tmp_path / "tokens")
    assert tokens.who(f"Bearer {ALICE}") == "Alice Smith" and tokens.who(f"bearer {BOB}") == "bob"
    assert tokens.who(None) is None and tokens.who("Bearer ") is None
    with pytest.raises(ConfigError, match="at least 16"):
        Tokens({"short": "x"})
    (tmp_path / "bad").write_text(f"{ALICE}\n")
    with pytest.raises(ConfigError, match="bad:1") as e:
        Tokens.of(file=tmp_path / "bad")
    assert ALICE not in str(e.value)
    assert json.dumps(Tokens.of()) == "null"


def test_without_stored_pictures_a_decision_still_lists_the_meme(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    store = ReviewStore(str(tmp_path / "r.db"), store_images=False, routes=everything)
    with TestClient(create_app(Predictor(model, device="cpu"), review=store,
                               review_tokens=TOKENS)) as client:
        item = predict(client, 3, "words")["review_id"]
        shown = client.get(f"/v1/review/{item}", headers=bearer(ALICE)).json()
        assert not shown["has_image"] and len(shown["image_sha256"]) == 64
        assert client.get(f"/v1/review/{item}/image", headers=bearer(ALICE)).status_code == 404
        r = client.post(f"/v1/review/{item}/decision", headers=bearer(ALICE),
                        json={"decision": "violating"})
    assert r.json()["taught"] == {"id": memory_id(item), "list": "added as 1",
                                  "memory": "not added: the picture was not stored"}
    [entry] = HashList.of_model(model).entries
    from memetrm.serving.hashing import pdq

    assert entry.hash.bits == pdq(scene(3)).bits and entry.text == "words"


def test_serve_refuses_a_review_queue_without_reviewers(tmp_path: Path) -> None:
    model = retrieval_model(tmp_path / "m")
    r = CliRunner().invoke(cli, ["serve", "--model", str(model), "--review-db",
                                 str(tmp_path / "r.db")], env={"MEMETRM_REVIEW_TOKEN": ""})
    assert r.exit_code == 2 and "--review-token" in r.output
