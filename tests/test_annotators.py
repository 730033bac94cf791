"""Annotators through litellm over real HTTP to a local OpenAI-compatible server."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from labeler.data.imports import import_gold, import_items
from labeler.store import models
from labeler.store.workspace import open_workspace
from prompts.annotators import build_askers
from routing.flow import run_project
from tests.conftest import store_bytes, write_file, write_project
from tests.llm_server import LLMServer

LABELS = ["positive", "negative", "neutral"]


@pytest.fixture(scope="module")
def server():
    with LLMServer() as s:
        yield s


def project(tmp_path, server, annotators: str, n_items: int = 30, url=None):
    yaml_text = f"""\
name: llm-test
labels: {{positive: liked it, negative: did not like it, neutral: no opinion}}
fields: [text]
annotators:
{annotators.format(base=server.base_url)}
"""
    root = write_project(tmp_path / "p", yaml_text=yaml_text)
    rows = "".join(f"i{n},item {n} is {LABELS[n % 3]}\n" for n in range(n_items))
    ws = open_workspace(root, url=url)
    if n_items:  # a file with no rows is an error
        assert import_items(ws, write_file(tmp_path / "items.csv", "id,text\n" + rows)).committed
    return ws


def llm(name, model, **extra):
    settings = {"kind": "llm", "model": f"openai/{model}", "api_base": "{base}", "max_retries": 3, "timeout": 5, **extra}
    return f"  - name: {name}\n" + "".join(f"    {k}: {v}\n" for k, v in settings.items())


def votes(ws, name=None):
    with ws.session() as s:
        q = select(models.Item.external_id, models.Vote.label, models.Vote.probs, models.Vote.abstain_reason,
                   models.Vote.raw, models.Vote.cost, models.Annotator.name).join(models.Item).join(models.Annotator)
        if name:
            q = q.where(models.Annotator.name == name)
        return s.execute(q).all()


def run(ws, names=None):
    askers, skipped = build_askers(ws, names)
    return run_project(ws, askers), skipped


def test_votes_with_probabilities_cost_and_a_free_rerun(tmp_path, server):
    ws = project(tmp_path, server, llm("gpt", "ok", cost_per_1k_tokens=0.5))
    before = server.requests
    report, _ = run(ws)
    assert server.requests - before == 30
    rows = votes(ws)
    assert len(rows) == 30
    assert all(label == LABELS[int(ext[1:]) % 3] for ext, label, *_ in rows)
    probs = rows[0][2]
    assert max(probs, key=probs.get) == rows[0][1] and probs[rows[0][1]] > 0.9
    assert abs(sum(r[5] for r in rows) - 30 * 101 * 0.5 / 1000) < 1e-9
    assert report["annotators"][0]["voted"] == 30
    again, _ = run(ws)
    assert server.requests - before == 30  # a rerun makes no calls
    assert again["annotators"][0]["asked"] == 0 and len(votes(ws)) == 30


def test_cache_serves_a_second_annotator_with_the_same_model_and_prompt(tmp_path, server):
    ws = project(tmp_path, server, llm("first", "ok") + llm("second", "ok"), n_items=10)
    before = server.by_model.get("ok", 0)
    run(ws, ["first"])
    run(ws, ["second"])
    assert server.by_model["ok"] - before == 10
    assert len(votes(ws, "second")) == 10


def test_transient_errors_are_retried_until_every_item_is_voted(tmp_path, server):
    ws = project(tmp_path, server, llm("flaky", "flaky-0.3", max_retries=8), n_items=60)
    before = server.by_model.get("flaky-0.3", 0)
    report, _ = run(ws)
    assert report["annotators"][0]["failed"] == 0
    assert len(votes(ws)) == 60
    assert server.by_model["flaky-0.3"] - before > 60  # some were retried


def test_unparsable_and_unsure_answers_are_abstentions_with_raw_text(tmp_path, server):
    ws = project(tmp_path, server, llm("garbage", "garbage") + llm("doubter", "unsure"), n_items=5)
    run(ws)
    garbage = votes(ws, "garbage")
    assert {(r[1], r[3], r[4]) for r in garbage} == {(None, "unparsable", "Well, it depends on many things.")}
    assert {(r[1], r[3]) for r in votes(ws, "doubter")} == {(None, "unsure")}


def test_a_failing_annotator_fails_its_own_votes_while_others_finish(tmp_path, server):
    ws = project(tmp_path, server, llm("denied", "denied") + llm("good", "ok"), n_items=40)
    report, _ = run(ws)
    by_name = {a["name"]: a for a in report["annotators"]}
    assert by_name["good"]["voted"] == 40
    assert by_name["denied"]["voted"] == 0 and by_name["denied"]["failed"] == 40
    assert list(by_name["denied"]["errors"]) == ["AuthenticationError (401)"]  # grouped by kind
    assert "invalid api key" in by_name["denied"]["error_examples"]["AuthenticationError (401)"]
    assert by_name["denied"]["stopped"].startswith("stopped after 5 permanent errors")
    assert len(votes(ws, "denied")) == 0  # nothing stored: a later run tries again


def test_hangs_resets_and_broken_bodies_fail_visibly_in_bounded_time(tmp_path, server):
    ws = project(
        tmp_path, server,
        llm("hang", "hang", timeout=0.5, max_retries=1) + llm("broken", "broken", max_retries=1)
        + llm("reset", "reset", max_retries=4), n_items=4,
    )
    started = time.monotonic()
    report, _ = run(ws)
    assert time.monotonic() - started < 30
    by_name = {a["name"]: a for a in report["annotators"]}
    assert by_name["hang"]["failed"] == 4 and by_name["broken"]["failed"] == 4
    assert by_name["reset"]["voted"] == 4  # each first try is reset: the retries get through


@pytest.mark.once
def test_a_hanging_model_trips_the_breaker_and_the_run_exits_non_zero(tmp_path, server):
    from labeler.annotators import runner
    from tests.test_cli import labeler

    ws = project(tmp_path, server, llm("hang", "hang", timeout=0.3, max_retries=0, max_concurrency=2)
                 + llm("good", "ok"), n_items=60)
    started = time.monotonic()
    report, _ = run(ws)
    by_name = {a["name"]: a for a in report["annotators"]}
    assert by_name["good"]["voted"] == 60  # the others finish
    hang = by_name["hang"]
    assert hang["stopped"].startswith(f"stopped after {runner.STOP_AFTER_FAILURES} failures in a row")
    assert hang["failed"] == 60 and list(hang["errors"]) == ["Timeout (408)"]  # one kind, whatever the timings
    assert time.monotonic() - started < 0.3 * 60 / 2  # it stopped waiting long before every item timed out
    cli = labeler("run", "-p", ws.project.root, "-a", "hang", check=False)
    assert cli.returncode == 2 and "every call to hang failed" in cli.stderr


def test_logprobs_off_gives_votes_without_probabilities(tmp_path, server):
    ws = project(tmp_path, server, llm("plain", "ok", logprobs="false"), n_items=3)
    run(ws)
    assert {r[2] is None for r in votes(ws)} == {True}


def test_keys_come_from_the_environment_and_are_never_stored(tmp_path, server, monkeypatch):
    ws = project(tmp_path, server, llm("keyed", "ok", api_key_env="TEST_LLM_KEY"), n_items=3)
    _, skipped = run(ws)
    assert "TEST_LLM_KEY is not set" in skipped["keyed"]
    monkeypatch.setenv("TEST_LLM_KEY", "sk-very-secret-123")
    run(ws)
    assert len(votes(ws)) == 3
    stored = store_bytes(ws)
    assert b"keyed" in stored and b"sk-very-secret-123" not in stored


def test_model_annotator_trains_on_gold_and_votes_out_of_fold(tmp_path, server):
    ws = project(tmp_path, server, "  - {{name: clf, kind: model, min_labels: 10}}", n_items=60)
    gold = "id,label\n" + "".join(f"i{n},{LABELS[n % 3]}\n" for n in range(30))
    assert import_gold(ws, write_file(tmp_path / "gold.csv", gold)).committed
    report, skipped = run(ws)
    assert not skipped
    rows = votes(ws, "clf")
    assert len(rows) == 60
    accuracy = sum(label == LABELS[int(ext[1:]) % 3] for ext, label, *_ in rows) / 60
    assert accuracy > 0.9  # "is positive" is easy to learn
    assert all(abs(sum(r[2].values()) - 1) < 1e-4 for r in rows)


def test_model_annotator_without_enough_labels_is_skipped_with_a_reason(tmp_path, server):
    ws = project(tmp_path, server, "  - {{name: clf, kind: model}}", n_items=5)
    _, skipped = run(ws)
    assert "needs 20 labels" in skipped["clf"]


def test_recorded_votes_become_annotators(tmp_path, server):
    write_file(tmp_path / "crowd.csv", "task,worker,label\ni0,w1,positive\ni0,w2,negative\ni1,w1,negative\nzz,w1,neutral\n")
    ws = project(tmp_path, server, f"  - {{{{name: crowd, kind: recorded, file: {tmp_path / 'crowd.csv'}}}}}", n_items=3)
    report, _ = run(ws)
    assert report["recorded"]["crowd"] == {"votes": 3, "workers": 2, "unknown_items": 1}
    assert {r[6] for r in votes(ws)} == {"crowd/w1", "crowd/w2"}
    run(ws)
    assert len(votes(ws)) == 3  # loading again adds nothing


def test_sigkill_mid_run_then_rerun_loses_nothing_and_votes_once(tmp_path):
    with LLMServer(latency=0.05) as slow:
        ws = project(tmp_path, slow, llm("gpt", "ok", max_concurrency=4), n_items=200)
        env = dict(os.environ)  # conftest's: the test's own store
        cmd = [sys.executable, "-m", "labeler.cli", "run", "-p", str(tmp_path / "p"), "--json"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(votes(ws)) < 40:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = len(votes(ws))
        assert 40 <= partial < 200, partial
        calls_before_rerun = slow.requests
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
        rows = votes(ws)
        assert len(rows) == 200 and len({r[0] for r in rows}) == 200  # none lost, none twice
        assert slow.requests - calls_before_rerun <= 200 - partial  # finished calls were not paid again
        with ws.session() as s:
            duplicates = s.execute(
                select(models.Vote.item_id).group_by(models.Vote.item_id, models.Vote.annotator_id, models.Vote.version)
                .having(func.count() > 1)
            ).all()
        assert duplicates == []


def test_backoff_never_waits_less_than_retry_after():
    from types import SimpleNamespace

    from labeler.annotators.llm import _Wait

    class Throttled(Exception):
        litellm_response_headers = {"retry-after": "7"}

    state = SimpleNamespace(outcome=SimpleNamespace(exception=lambda: Throttled()), attempt_number=1)
    assert _Wait()(state) >= 7
    plain = SimpleNamespace(outcome=SimpleNamespace(exception=lambda: RuntimeError()), attempt_number=1)
    assert _Wait()(plain) < 7


def test_model_annotator_retrains_only_when_enough_new_labels_arrive(tmp_path, server):
    from labeler.annotators.classifier import ClassifierAsker

    ws = project(tmp_path, server, "  - {{name: clf, kind: model, min_labels: 10, retrain_every: 5}}", n_items=60)
    config = ws.config.annotators[0]
    ids = ws.annotator_ids()

    def add_gold(rows, name):
        gold = "id,label\n" + "".join(f"i{n},{LABELS[n % 3]}\n" for n in rows)
        assert import_gold(ws, write_file(tmp_path / name, gold)).committed

    add_gold(range(30), "g1.csv")
    first = ClassifierAsker(config, ids["clf"], ws)
    add_gold(range(30, 33), "g2.csv")  # 3 new labels: fewer than 5
    same = ClassifierAsker(config, ids["clf"], ws)
    assert same.version == first.version and len(same.train.labels) == 30
    add_gold(range(33, 36), "g3.csv")  # 6 since the last training
    again = ClassifierAsker(config, ids["clf"], ws)
    assert again.version != first.version and len(again.train.labels) == 36


@pytest.mark.slow
@pytest.mark.skipif(not __import__("labeler.annotators.local", fromlist=["available"]).available(),
                    reason="the local model's extra is not installed (pip install 'labeler[local]')")
@pytest.mark.once
def test_the_embedded_model_votes_with_probabilities_through_litellm(tmp_path, server):
    ws = project(tmp_path, server, "  - {{name: gemma, kind: local}}", n_items=6)
    gold = "id,label,split\n" + "".join(f"i{n},{LABELS[n % 3]},examples\n" for n in range(3))
    import_gold(ws, write_file(tmp_path / "ex.csv", gold))
    report, skipped = run(ws)
    assert not skipped and report["annotators"][0]["voted"] == 3  # the 3 non-example items
    rows = votes(ws, "gemma")
    assert all(r[1] in LABELS and abs(sum(r[2].values()) - 1) < 1e-3 for r in rows)
    assert all(r[5] == 0 for r in rows)  # no cost


def test_deployments_share_the_load_and_a_dead_one_is_stood_in_for(tmp_path, server):
    from tests.review_client import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connections are refused
    with LLMServer() as other:
        annotator = ("  - name: routed\n    kind: llm\n    model: openai/ok\n    max_retries: 4\n    timeout: 5\n"
                     "    deployments:\n" + "".join(f"      - {{model: openai/ok, api_base: '{base}', rpm: 6000}}\n"
                                                    for base in (server.base_url, other.base_url, dead)))
        ws = project(tmp_path, server, annotator.replace("{", "{{").replace("}", "}}"), n_items=40)
        before = server.by_model.get("ok", 0)
        report, _ = run(ws)
        served = (server.by_model.get("ok", 0) - before, other.by_model.get("ok", 0))
    assert len(votes(ws, "routed")) == 40 and report["annotators"][0]["failed"] == 0  # the dead one cost nothing
    assert min(served) > 5 and sum(served) == 40  # both live servers took a share; each item asked once


needs_local = pytest.mark.skipif(not __import__("labeler.annotators.local", fromlist=["available"]).available(),
                                 reason="the local model's extra is not installed (pip install 'labeler[local]')")
TOPICS = __import__("pathlib").Path(__file__).parent / "data" / "topics.csv"


def topics_project(tmp_path, annotators: str, examples: int = 2, n: int = 60):
    """The 4-label news set written for this project: `examples` per label as shots, then `n` more as gold."""
    import csv

    rows = list(csv.DictReader(TOPICS.open(encoding="utf-8")))
    labels = ["World", "Sports", "Business", "Sci/Tech"]
    root = write_project(tmp_path / "topics", yaml_text=(
        "name: topics\nlabels:\n" + "".join(f"  '{k}': News about {k}.\n" for k in labels)
        + f"fields: [text]\nprompt: {{shots: {examples * 4}}}\nannotators:\n{annotators}"))
    (root / "guidelines.md").write_text("# Topics\n\nDecide the topic of one news headline.\n", encoding="utf-8")
    ws = open_workspace(root)
    shots = [r for label in labels for r in [r for r in rows if r["label"] == label][:examples]]
    rest = [r for r in rows if r not in shots][:n]
    items = "id,text\n" + "".join(f"{r['id']},\"{r['text']}\"\n" for r in shots + rest)
    gold = "id,label,split\n" + "".join(f"{r['id']},{r['label']},examples\n" for r in shots) \
        + "".join(f"{r['id']},{r['label']},calibration\n" for r in rest)
    assert import_items(ws, write_file(tmp_path / "items.csv", items)).committed
    assert import_gold(ws, write_file(tmp_path / "gold.csv", gold)).committed
    return ws, {r["id"]: r["label"] for r in rest}


@pytest.mark.slow
@needs_local
@pytest.mark.once
def test_the_embedded_model_reads_four_labels(tmp_path):
    """It answered one label for every item of a 4-topic set, at chance, given the chat prompt flattened."""
    from evals.evaluate import evaluate

    ws, _ = topics_project(tmp_path, "  - {name: gemma, kind: local}\n")
    entry = next(iter(evaluate(ws)["entries"].values()))
    assert entry["accuracy"] >= 0.8, entry["confusion"]
    assert all(row["recall"] > 0.5 for row in entry["per_label"].values())  # every label answered, and mostly right


@needs_local
@pytest.mark.once
def test_the_classifier_picks_its_features_by_cross_validation_and_keeps_embeddings(tmp_path, monkeypatch):
    from labeler.annotators import local as local_llm
    from labeler.annotators.classifier import ClassifierAsker

    ws, _ = topics_project(tmp_path, "  - {name: clf, kind: model, min_labels: 20}\n", examples=0, n=120)
    config, annotator = ws.config.annotators[0], ws.annotator_ids()["clf"]
    chosen = ClassifierAsker(config, annotator, ws)
    scores = chosen.choice["cv_accuracy"]
    assert chosen.choice["features"] == max(scores, key=scores.get) and chosen.version.startswith(
        "emb-lr:" if chosen.features == "embeddings" else "tfidf-lr:")
    assert scores["embeddings"] > scores["tfidf"]  # meaning beats words with 120 short headlines
    calls = []
    monkeypatch.setattr(local_llm, "embed", lambda texts: calls.append(texts) or pytest.fail("not cached"))
    again = ClassifierAsker(config, annotator, ws)  # the embeddings come from the store now
    assert again.version == chosen.version and not calls
    plain = ClassifierAsker(config.model_copy(update={"features": "tfidf"}), annotator, ws)
    assert plain.version.startswith("tfidf-lr:") and plain.choice == {"features": "tfidf"}
    # Decided on a sample: with the sample smaller than the labels, only the sample is embedded for the choice
    from labeler.annotators import classifier

    monkeypatch.setattr(classifier, "AUTO_SAMPLE", 40)
    embedded = []
    real = classifier.Embeddings.__call__
    monkeypatch.setattr(classifier.Embeddings, "__call__", lambda self, texts: embedded.append(len(texts)) or real(self, texts))
    sampled = ClassifierAsker(config, annotator, ws)
    assert sampled.choice["decided_on"] == 40 and embedded[0] == 40
    assert len(embedded) == 1 or sampled.features == "embeddings"  # the rest embedded only if embeddings won


def test_a_budget_stops_new_questions_and_dry_run_counts_before_spending(tmp_path, server):
    from tests.test_cli import labeler

    ws = project(tmp_path, server, llm("gpt", "ok", cost_per_1k_tokens=1.0, max_concurrency=2), n_items=100)
    root = ws.project.root
    before = server.by_model.get("ok", 0)
    estimate = json.loads(labeler("run", "--dry-run", "--json", "-p", root).stdout)
    [gpt] = estimate["annotators"]
    assert gpt["calls"] == 100 and gpt["tokens"] > 100 * 16 and gpt["cost"] == pytest.approx(gpt["tokens"] / 1000)
    assert server.by_model.get("ok", 0) == before  # asked nobody
    (root / "labeler.yaml").write_text((root / "labeler.yaml").read_text() + "budget: {run: 0.5}\n")
    report = json.loads(labeler("run", "--json", "-p", root).stdout)
    calls = server.by_model.get("ok", 0) - before
    spent = report["budget"]["spent"]  # each call costs 101 tokens at $1 per 1,000: $0.101
    assert report["budget"]["stopped"].startswith("the run's budget of $0.5 is spent")
    assert 0.5 <= spent < 0.5 + 2 * 0.101 and calls == round(spent / 0.101)  # at most the calls in flight past it
    assert report["annotators"][0]["unasked"] == 100 - calls
    status = json.loads(labeler("status", "--json", "-p", root).stdout)
    assert status["spend"] == pytest.approx(spent) and status["budget"]["run"] == 0.5
    human = labeler("run", "-p", root)  # a new run: a new budget
    assert "asking stopped" in human.stdout


@pytest.mark.once
def test_the_breaker_holds_across_the_stages_of_a_run(tmp_path, server):
    """It re-armed at each stage: 67 failed calls to a hung model before it was stopped, not 20."""
    from labeler.annotators import runner

    ws = project(tmp_path, server, llm("hang", "hang", timeout=0.2, max_retries=0, max_concurrency=2), n_items=80)
    import_gold(ws, write_file(tmp_path / "gold.csv", "id,label\n" + "".join(f"i{n},{LABELS[n % 3]}\n" for n in range(40))))
    before = server.by_model.get("hang", 0)
    report, _ = run(ws)
    [hang] = report["annotators"]
    assert hang["stopped"].startswith(f"stopped after {runner.STOP_AFTER_FAILURES} failures in a row")
    assert server.by_model["hang"] - before <= runner.STOP_AFTER_FAILURES + 2  # calls in flight when it tripped


def test_a_refused_connection_is_reported_as_one(tmp_path, server):
    from tests.review_client import free_port

    closed = f"http://127.0.0.1:{free_port()}/v1"
    ws = project(tmp_path, server, llm("away", "ok", max_retries=0).replace("{base}", closed), n_items=3)
    report, _ = run(ws)
    [away] = report["annotators"]
    assert list(away["errors"]) == ["ConnectionRefusedError (no answer from the server)"]
    assert "could not reach the server" in away["error_examples"][list(away["errors"])[0]]
    assert "InternalServerError" not in str(away)


@needs_local
@pytest.mark.once
def test_embedding_many_texts_reports_its_progress(tmp_path, monkeypatch):
    from labeler.annotators import local as local_llm
    from labeler.annotators.classifier import PROGRESS_FROM, Embeddings

    ws = open_workspace(write_project(tmp_path / "e"))
    real, seen = local_llm.embed, []

    def watched(texts, progress=None):
        return real(texts, progress=lambda done: (seen.append(done), progress(done)))

    monkeypatch.setattr(local_llm, "embed", watched)
    texts = [f"headline number {k} about the weather" for k in range(PROGRESS_FROM + 10)]
    vectors = Embeddings(ws)(texts)
    assert vectors.shape[0] == len(texts) and seen and seen[-1] == len(texts) and seen == sorted(seen)
    ws.engine.dispose()


def test_samples_give_a_model_without_logprobs_a_confidence_that_tracks_its_errors(tmp_path, server):
    from sklearn.metrics import roc_auc_score

    from labeler.config import LLMAnnotator
    from routing.flow import estimate

    ws = project(tmp_path, server, llm("one", "fuzzy", logprobs="false", cost_per_1k_tokens=1.0)
                 + llm("five", "fuzzy", logprobs="false", samples=5, temperature=1.0, cost_per_1k_tokens=1.0),
                 n_items=90)
    askers, _ = build_askers(ws)
    assert [r["calls"] for r in estimate(ws, askers)["annotators"]] == [90, 450]  # five calls an item, priced
    before = server.by_model.get("fuzzy", 0)
    run(ws)
    assert server.by_model["fuzzy"] - before == 90 + 5 * 90
    sampled = {ext: (label, probs, cost, raw) for ext, label, probs, _, raw, cost, name in votes(ws, "five")}
    assert all(set(p) == set(LABELS) and all(round(v * 5, 6) % 1 == 0 for v in p.values()) for _, p, _, _ in sampled.values())
    assert all(abs(c - 5 * 101 / 1000) < 1e-9 for _, _, c, _ in sampled.values()) and "sample 5:" in next(iter(sampled.values()))[3]
    right = [label == LABELS[int(ext[1:]) % 3] for ext, (label, _, _, _) in sampled.items()]
    sure = [max(p.values()) for _, p, _, _ in sampled.values()]
    assert roc_auc_score(right, sure) > 0.6  # the shares separate right from wrong; one answer has no confidence at all
    assert all(p is None for _, _, p, *_ in votes(ws, "one"))
    again = server.by_model["fuzzy"]
    run(ws)
    assert server.by_model["fuzzy"] == again  # cached: a rerun pays for no sample again
    with pytest.raises(ValueError, match="temperature 0"):
        LLMAnnotator(name="x", kind="llm", model="m", samples=3, temperature=0)
    assert LLMAnnotator(name="x", kind="llm", model="m", samples=3).temperature == 0.7


@pytest.mark.once  # no store work: the PostgreSQL pass leaves it out
def test_litellm_prices_come_from_its_package_not_a_download_at_run_time():
    """litellm fetched its price list from GitHub on import (here: a failed lookup and two warnings)."""
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    done = subprocess.run([sys.executable, "-c", "from labeler.annotators.llm import litellm; litellm()"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "cost map" not in done.stderr, done.stderr[-500:]
