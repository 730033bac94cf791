"""Span projects (`task: spans`) at every layer: the task type, gold import, prompts and parsing, the
cascade on spans and its guarantee, the span tagger, a run through litellm to the test server, export,
the review API and screen, eval metrics, the demo."""

import json

import numpy as np
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from evals.metrics import span_classification
from labeler.config import ProjectConfig
from labeler.data.exports import iter_export_rows
from labeler.data.imports import import_gold, import_items
from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.models import Role
from labeler.store.workspace import open_workspace
from labeler.tasks import NOTHING_ELSE, Spans
from prompts.parsing import parse_spans
from prompts.template import CompiledPrompt, compile_spec
from routing import spans as span_routing
from routing.label_sets import Evidence
from routing.project import Stage
from tests.conftest import write_file, write_project
from tests.llm_server import LLMServer
from tests.test_multi_label import awaiting_review

TYPES = ["person", "place"]
NAMES = ["Ann", "Bob", "Cleo", "Dora", "Evan", "Fred", "Gwen", "Hal"]


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_spans_are_stored_in_order_and_bad_ones_refused():
    task = Spans(TYPES)
    assert task.canonical([{"start": 9, "end": 12, "label": "place"}, [0, 3, "person"]]) == "0:3:person|9:12:place"
    assert task.canonical("9:12:place|0:3:person") == "0:3:person|9:12:place" == task.canonical(
        '[{"start": 0, "end": 3, "label": "person"}, {"start": 9, "end": 12, "label": "place"}]')  # a CSV cell
    assert task.canonical([]) == "" and task.spans("0:3:person") == [(0, 3, "person")]
    assert task.exported("0:3:person", "Ann met Bob") == [{"start": 0, "end": 3, "label": "person", "text": "Ann"}]
    for bad, reason in [([{"start": 0, "end": 3, "label": "org"}], "unknown span label 'org'"),
                        ([{"start": 4, "end": 4, "label": "place"}], "empty or negative"),
                        ([{"start": "a", "end": 3, "label": "place"}], "character offsets"),
                        ("[{", "not a readable JSON list"), (None, "missing spans")]:
        with pytest.raises(ValueError, match=reason):
            task.canonical(bad)
    with pytest.raises(ValueError, match="ends past the text"):
        task.canonical([[0, 30, "person"]], "Ann met Bob")
    with pytest.raises(ValueError, match="one text field"):
        ProjectConfig.model_validate({"name": "x", "task": "spans", "labels": {"a": "a"}, "fields": ["t", "u"]})
    with pytest.raises(ValueError, match="cannot hold"):
        ProjectConfig.model_validate({"name": "x", "task": "spans", "labels": {"a:b": "a"}})


TEXT = "Ann met Bob, then Ann left for Rome."


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
@pytest.mark.parametrize("answer, spans, dropped", [
    ('{"spans": [{"text": "Ann", "label": "person"}, {"text": "Rome", "label": "place"}]}',
     "0:3:person|31:35:place", 0),
    ('{"spans": [{"text": "Ann", "label": "person", "occurrence": 2}]}', "18:21:person", 0),  # the one named
    ('```json\n{"spans": [{"text": "Bob", "label": "Person"}, {"text": "Paris", "label": "place"}]}\n```',
     "8:11:person", 1),  # Paris is not in the text: dropped and counted, never guessed
    ('{"spans": [{"text": "Bob", "label": "org"}]}', None, 1),  # only spans that are dropped: an abstention
    ('{"spans": [{"text": "Ann", "label": "person", "occurrence": 3}]}', None, 1),  # no third Ann
    ('{"spans": [{"start": 8, "end": 11, "label": "person"}]}', "8:11:person", 0),  # offsets alone
    ('{"spans": []}', "", 0),
    ('{"spans": [{"text": "Ann"', None, 0),  # cut short
    ("unsure", None, 0),
    ("Ann is a person", None, 0),
])
def test_a_chat_models_spans_are_located_in_the_text_and_never_guessed(answer, spans, dropped):
    parsed = parse_spans(answer, TEXT, TYPES)
    assert (parsed.label, len(parsed.dropped)) == (spans, dropped)
    assert (parsed.abstain_reason is None) == (spans is not None)


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_span_prompts_ask_json_and_their_examples_quote_the_occurrence():
    examples = [{"fields": {"text": TEXT}, "label": "18:21:person|31:35:place"}]
    prompt = CompiledPrompt(compile_spec("# Names\n\nMark names.", {"person": "someone", "place": "a city"}, ["text"],
                                         examples, task="spans"))
    messages = prompt.messages({"text": "Hal went home"})
    assert '{"spans": [' in messages[0]["content"] and "- place: a city" in messages[0]["content"]
    assert json.loads(messages[2]["content"]) == {"spans": [{"text": "Ann", "label": "person", "occurrence": 2},
                                                            {"text": "Rome", "label": "place"}]}
    assert prompt.request_params["response_format"] == {"type": "json_object"}
    # what the example teaches reads back to the example's spans
    assert prompt.read([(messages[2]["content"], None)], None, {"text": TEXT}).label == examples[0]["label"]


def _policy(stages=2):
    """A span policy with evidence fixed by hand: every fold alike; per stage a vote moves a candidate's
    log-odds by slope * x + offset, from a prior of 0; 'nothing missed' is the latest vote's claim as it is."""
    ev = Evidence(np.zeros(2), np.full((stages, 2), 1.0), np.zeros((stages, 2)))
    rest = span_routing.Completeness(np.ones(stages), np.zeros(stages))
    return span_routing.SpanPolicy([Stage(f"s{k}", k + 1, "") for k in range(stages)], TYPES, models=[ev] * 5,
                                   rest_models=[rest] * 5)


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_a_span_score_counts_each_candidate_and_what_no_vote_proposed():
    policy = _policy()
    probs = {"0:3:person": 0.9, NOTHING_ELSE: 0.8}
    votes = {7: {0: ("0:3:person", probs), 1: ("0:3:person|8:11:person", None)}}
    paths = policy.paths(votes, [7])
    assert paths.candidates == [["0:3:person", "8:11:person"]]
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    # stage 0: Bob is not proposed yet (no weight), Ann at logit(0.9), nothing missed at logit(0.8)
    p0 = sig(logit(0.9)) * sig(logit(0.8))
    assert policy.answer(paths, 0, 0) == "0:3:person" and paths.score[0, 0] == pytest.approx(logit(p0))
    # stage 1: a plain yes for both (HARD = 2); Bob had a no at stage 0 (-2): 0 in all, in the answer;
    # nothing missed: the plain claim of the stage-1 vote
    z_ann, z_bob, z_rest = logit(0.9) + 2, -2 + 2, 2
    p1 = sig(z_ann) * sig(abs(z_bob)) * sig(z_rest)
    assert paths.score[0, 1] == pytest.approx(logit(p1))
    assert policy.answer(paths, 0, 1) == "0:3:person|8:11:person"  # log-odds 0: P = 1/2 is in
    assert policy.label_confidence(paths, 0, 0) == {"0:3:person": pytest.approx(0.9)}
    assert span_routing.truth_bits(paths.candidates[0], "0:3:person", policy.task) == 0b01
    assert span_routing.truth_bits(paths.candidates[0], "0:3:person|20:24:place", policy.task) == -1  # never proposed


def simulated(n: int, rng, recall=(0.85, 0.95), precision=(0.9, 0.97)):
    """Items with 0-3 gold spans among 6 slots; two annotators each find a gold span with `recall` and add
    a wrong one with a chance set by `precision`, with probabilities that are right more often the surer."""
    truth, votes = [], {}
    for i in range(n):
        gold = {f"{4 * k}:{4 * k + 3}:{TYPES[k % 2]}" for k in range(6) if rng.random() < 0.25}
        truth.append("|".join(sorted(gold, key=lambda c: int(c.split(":")[0]))))
        by_stage = {}
        for s in range(2):
            found = {c for c in gold if rng.random() < recall[s]}
            if rng.random() > precision[s]:
                found.add(f"{4 * int(rng.integers(6))}:{4 * int(rng.integers(6)) + 3}:place")
            found = {c for c in found if int(c.split(":")[0]) < int(c.split(":")[1])}
            probs = {c: float(rng.uniform(0.7, 1.0) if c in gold else rng.uniform(0.5, 0.8)) for c in found}
            probs[NOTHING_ELSE] = float(rng.uniform(0.7, 1.0) if gold <= found else rng.uniform(0.3, 0.8))
            by_stage[s] = (Spans(TYPES).canonical("|".join(found)), probs)
        votes[i] = by_stage
    return truth, votes


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_the_guarantee_on_exact_spans_holds_over_draws_of_the_gold():
    """With probability at least `confidence` over draws of the gold, accepted new items carry exactly the
    gold's spans at least `target` of the time: counted over 40 draws (the bound holds by construction;
    this checks the plumbing from votes to the accepted answers does not break it)."""

    class Routing:
        target_accuracy, confidence, guarantee = 0.9, 0.9, "high_probability"

    rng = np.random.default_rng(1)
    stages = [Stage("a", 1, ""), Stage("b", 2, "")]
    held, shares = 0, []
    for _ in range(40):
        truth, votes = simulated(600, rng)
        gold = {i: (truth[i], models.Split.calibration) for i in range(300)}
        policy = span_routing.fit(stages, TYPES, {i: votes[i] for i in gold}, gold, Routing)
        new = list(range(300, 600))
        paths = policy.paths(votes, new)
        first, _ = paths.accept(policy.policy.lambda_)
        right = [policy.answer(paths, r, first[r]) == truth[new[r]] for r in np.nonzero(first >= 0)[0]]
        held += (np.mean(right) if right else 1.0) >= 0.9
        shares.append(np.mean(first >= 0))
    assert held / 40 >= 0.85 and np.mean(shares) > 0.3  # and it does accept a good share


@pytest.fixture(scope="module")
def server():
    with LLMServer() as s:
        yield s


def names_of(i: int) -> list[str]:
    return [NAMES[(i * 3 + k) % len(NAMES)] for k in range(i % 3)] + (["Ann"] if i % 4 == 0 else [])


def gold_spans(text: str, names: list[str]) -> list[dict]:
    """Where the test server's rule puts spans: each capitalised word after the first, typed by its length."""
    out, at = [], 0
    for name in names:
        at = text.index(" " + name, at) + 1
        out.append({"start": at, "end": at + len(name), "label": TYPES[len(name) % 2]})
        at += len(name)
    return out


def span_project(tmp_path, server, url=None, n=240, gold_n=160, annotators=None):
    annotators = annotators or (
        f"  - {{name: cheap, kind: llm, model: openai/noisy-0.3, api_base: '{server.base_url}', cost_rank: 1}}\n"
        f"  - {{name: good, kind: llm, model: openai/ok, api_base: '{server.base_url}', cost_rank: 2}}\n")
    yaml_text = ("name: names\ntask: spans\nlabels: {person: someone, place: a city}\nfields: [text]\n"
                 "routing: {target_accuracy: 0.9, confidence: 0.9, review_order: import, review_blind_share: 0}\n"
                 "annotators:\n" + annotators)
    root = write_project(tmp_path / "p", yaml_text=yaml_text)
    ws = open_workspace(root, url=url)
    texts = {f"i{i}": f"note {i}: " + (" and ".join(f"saw {x}" for x in names_of(i)) or "nobody") for i in range(n)}
    lines = "".join(f"{k},{v}\n" for k, v in texts.items())
    assert import_items(ws, write_file(tmp_path / "items.csv", "id,text\n" + lines)).committed
    spans = {k: gold_spans(t, names_of(int(k[1:]))) for k, t in texts.items()}
    if gold_n:
        rows = [{"id": f"i{i}", "spans": spans[f"i{i}"], "split": "calibration" if i < gold_n - 20 else "honeypot"}
                for i in range(gold_n)]
        report = import_gold(ws, write_file(tmp_path / "gold.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
        assert report.committed, report.errors
    return ws, texts, spans


def test_a_spans_project_goes_import_run_export_and_back(tmp_path, server, store_url):
    from prompts.annotators import build_askers
    from routing.flow import run_project

    ws, texts, spans = span_project(tmp_path, server, url=store_url)
    askers, skipped = build_askers(ws)
    assert not skipped
    result = run_project(ws, askers)
    assert result["policy"]["certificate"]["guarantee"] == "high_probability"
    assert result["decisions"].get("auto", 0) >= 40
    rows = {r["id"]: r for r in iter_export_rows(ws)}
    auto = [r for r in rows.values() if r["state"] == "auto"]
    strip = lambda found: [{k: s[k] for k in ("start", "end", "label")} for s in found]  # noqa: E731
    assert np.mean([strip(r["spans"]) == spans[r["id"]] for r in auto]) >= 0.9  # exact spans, at the target
    assert all(s["text"] == texts[r["id"]][s["start"]:s["end"]] and 0.5 <= s["confidence"] <= 1
               for r in auto for s in r["spans"])
    assert rows["i4"]["gold"][0]["text"] == "Evan" and all(isinstance(v["spans"], list) for r in auto for v in r["votes"])
    asked = {a["name"]: a["asked"] for a in result["annotators"]}
    assert asked["good"] < asked["cheap"]  # the dear annotator only where the cheap one did not settle it
    # The CSV export imports back as gold of a new project: the same spans.
    from labeler.data.exports import export_to_path

    export_to_path(ws, tmp_path / "out.csv")
    again, _, _ = span_project(tmp_path / "again", server, n=240, gold_n=0)
    report = import_gold(again, tmp_path / "out.csv", skip_bad=True)
    assert report.committed and report.gold_added == sum(r["spans"] is not None for r in rows.values())
    with again.session() as s:
        stored = dict(s.execute(select(models.Item.external_id, models.GoldLabel.label)
                                .join(models.GoldLabel, models.GoldLabel.item_id == models.Item.id)).all())
    assert stored["i4"] == Spans(TYPES).canonical(spans["i4"])


def test_gold_spans_import_with_a_one_line_error_per_bad_row(tmp_path, server):
    ws, _, _ = span_project(tmp_path, server, n=10, gold_n=0)
    rows = [{"id": "i1", "spans": [{"start": 0, "end": 4, "label": "org"}]},
            {"id": "i2", "spans": "not spans"},
            {"id": "new", "text": "Ann met Bob", "spans": [{"start": 8, "end": 40, "label": "person"}]},
            {"id": "i3", "spans": []}]
    report = import_gold(ws, write_file(tmp_path / "g.jsonl", "".join(json.dumps(r) + "\n" for r in rows)),
                         skip_bad=True)
    assert [e.line for e in report.errors] == [1, 2, 3]
    assert "unknown span label 'org'" in report.errors[0].message and "past the text" in report.errors[2].message
    assert report.gold_added == 1


def test_the_span_tagger_learns_from_gold_and_votes_out_of_fold(tmp_path, server):
    import asyncio

    from labeler.annotators.runner import ItemRef
    from prompts.annotators import build_askers

    ws, texts, spans = span_project(tmp_path, server, n=120, gold_n=100,
                                    annotators="  - {name: tagger, kind: model, min_labels: 20}\n")
    (tagger,), skipped = build_askers(ws)
    assert not skipped and tagger.version.startswith("crf:")
    with ws.session() as s:
        ids = dict(s.execute(select(models.Item.external_id, models.Item.id)).all())
    trained = set(tagger.train.item_ids)
    assert trained and set(tagger.out_of_fold) == trained  # every item it learnt from gets a held-out answer
    new = ItemRef(ids["i110"], "i110", {"text": texts["i110"]}, "")
    answer = asyncio.run(tagger.ask(new))
    assert answer.label == Spans(TYPES).canonical(spans["i110"])
    assert 0 < answer.probs[NOTHING_ELSE] <= 1 and all(0 < p <= 1 for p in answer.probs.values())


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_the_embedded_model_says_it_does_not_mark_spans(tmp_path, server):
    from prompts.annotators import build_asker

    ws, _, _ = span_project(tmp_path, server, n=4, gold_n=0, annotators="  - {name: gemma, kind: local}\n")
    with pytest.raises(LabelerError, match="does not mark spans"):
        build_asker(ws, ws.config.annotators[0], 1)


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_span_metrics_against_hand_counts():
    truth = ["0:3:person|8:11:person", "", "4:8:place"]
    predicted = ["0:3:person|8:12:person", "0:2:place", None]
    m = span_classification(truth, predicted, TYPES)
    assert m["accuracy"] == 0.0 and m["coverage"] == round(2 / 3, 4)
    # exact: 1 of 3 said is right, 1 of 3 gold found; partial: 8:12 overlaps 8:11, so 2 of 3 and 2 of 3
    assert m["exact"] == {"precision": 0.3333, "recall": 0.3333, "f1": 0.3333, "support": 3}
    assert m["partial"]["precision"] == 0.6667 and m["partial"]["recall"] == 0.6667
    assert m["per_label"]["place"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_label"]["person"]["precision"] == 0.5


def test_reviewers_answer_spans_through_the_api(tmp_path, server):
    from fastapi.testclient import TestClient

    from review_ui.app import create_app
    from tests.review_client import login, make_users

    ws, texts, _ = span_project(tmp_path, server, n=6, gold_n=0)
    awaiting_review(ws, {"i1": "13:16:person"})
    make_users(ws, ann=Role.reviewer)
    web = TestClient(create_app(ws, secure_cookies=False, session_secret="s"), follow_redirects=False)
    csrf = login(web, "ann")
    card = web.get("/api/queue/next").json()["item"]
    assert card["task"] == "spans" and card["external_id"] == "i0"
    post = lambda body: web.post("/api/queue/submit", json=body, headers={"X-CSRF-Token": csrf})  # noqa: E731
    assert post({"item_id": card["item_id"], "spans": [], "client_id": "c0"}).status_code == 200
    card = web.get("/api/queue/next").json()["item"]
    assert card["suggestion"] == [{"start": 13, "end": 16, "label": "person", "text": texts["i1"][13:16]}]
    past = post({"item_id": card["item_id"], "spans": [{"start": 13, "end": 90, "label": "person"}], "client_id": "c1"})
    assert past.status_code == 422 and "ends past the text" in past.json()["detail"]
    assert post({"item_id": card["item_id"], "labels": ["person"], "client_id": "c2"}).status_code == 422
    assert post({"item_id": card["item_id"], "spans": [{"start": 13, "end": 16, "label": "place"}],
                 "client_id": "c3"}).status_code == 200
    with ws.session() as s:
        answered = dict(s.execute(select(models.Item.external_id, models.ReviewTask.label)
                                  .join(models.ReviewTask, models.ReviewTask.item_id == models.Item.id)
                                  .where(models.ReviewTask.submitted_at.is_not(None))).all())
    assert answered == {"i0": "", "i1": "13:16:place"}


def test_a_reviewer_edits_spans_by_keyboard_and_mouse(tmp_path, server, chromium):
    from tests.conftest import ARTIFACTS
    from tests.review_client import browser_login, make_users, serve

    url = f"sqlite:///{tmp_path / 'store.db'}"
    ws, texts, _ = span_project(tmp_path, server, url=url, n=4, gold_n=0)
    assert texts["i2"] == "note 2: saw Gwen and saw Hal"
    awaiting_review(ws, {"i2": "12:16:person|25:28:place"})
    with ws.session() as s:  # i2 first
        s.execute(models.Decision.__table__.delete().where(models.Decision.item_id.in_(
            select(models.Item.id).where(models.Item.external_id.in_(["i0", "i1"])))))
    make_users(ws, ann=Role.reviewer)
    with serve(ws.project.root, url) as base:
        page = browser_login(chromium, base, "ann")
        item = page.locator("#item-id")
        expect(item).to_have_text("i2")
        spans = page.locator(".spans .ent")
        expect(spans).to_have_count(2)  # the suggestion, highlighted by type
        expect(page.locator(".spans .ent.focus")).to_have_text("Gwen")
        page.keyboard.press("Tab")
        expect(page.locator(".spans .ent.focus")).to_have_text("Hal")
        page.keyboard.press("1")  # Hal is a person
        expect(page.locator(".spans .ent.focus")).to_have_attribute("data-label", "person")
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Delete")  # Gwen is no span
        expect(spans).to_have_count(1)
        page.keyboard.press("Shift+ArrowRight")  # a word after the focused span (Hal, the last): from the start
        page.keyboard.press("Shift+ArrowRight")
        expect(page.locator(".spans .sel")).to_have_text("note 2")
        page.keyboard.press("2")  # a place span of the selection
        expect(spans).to_have_count(2)
        page.evaluate("""() => {  // "Gwen" chosen with the mouse: a range inside the first piece's text
            const text = document.querySelector(".spans [data-start='6']").firstChild;  // ": saw Gwen and saw "
            const range = document.createRange();
            range.setStart(text, 6); range.setEnd(text, 11);  // with the space after it, which is dropped
            getSelection().removeAllRanges(); getSelection().addRange(range);
        }""")
        page.locator(".spans").dispatch_event("mouseup")
        expect(page.locator(".spans .sel")).to_have_text("Gwen")
        page.keyboard.press("1")
        expect(spans).to_have_count(3)
        page.screenshot(path=str(ARTIFACTS / "review-spans.png"))
        page.keyboard.press("Enter")
        expect(item).to_have_text("i3")
    with ws.session() as s:
        answered = dict(s.execute(select(models.Item.external_id, models.ReviewTask.label)
                                  .join(models.ReviewTask, models.ReviewTask.item_id == models.Item.id)
                                  .where(models.ReviewTask.submitted_at.is_not(None))).all())
    assert answered == {"i2": "0:6:place|12:16:person|25:28:person"}


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_the_spans_demo_labels_most_new_items_at_the_target(tmp_path):
    from tests.test_cli import labeler

    result = json.loads(labeler("demo", str(tmp_path / "d"), "--task", "spans", "--json").stdout)
    key = result["answer_key"]
    assert key["items"] == 200 and key["auto"] >= 120 and key["auto_accuracy"] >= 0.9
    rows = [json.loads(line) for line in (tmp_path / "d" / "labels.jsonl").read_text().splitlines()]
    auto = [r for r in rows if r["state"] == "auto"]
    assert all(isinstance(r["spans"], list) and all("confidence" in s for s in r["spans"]) for r in auto)


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_init_from_a_gold_file_of_spans_makes_a_spans_project(tmp_path):
    from labeler.config import load_project
    from labeler.data.projects import init_project

    gold = write_file(tmp_path / "gold.jsonl", '{"id": "a", "spans": [{"start": 0, "end": 3, "label": "person"}]}\n'
                                               '{"id": "b", "spans": [{"start": 4, "end": 8, "label": "place"}]}\n')
    items = write_file(tmp_path / "items.csv", "id,text,source\na,Ann x,web\nb,in Rome,mail\n")
    root = init_project(tmp_path / "p", items=items, gold=gold)
    config = load_project(root).config
    assert config.task == "spans" and config.label_names == ["person", "place"] and config.fields == ["text"]


def test_an_eval_of_a_spans_project_reports_span_f1_and_agreement(tmp_path, server):
    from evals.evaluate import evaluate
    from evals.project_metrics import project_metrics
    from evals.report import write_report

    ws, _, _ = span_project(tmp_path, server, n=60, gold_n=60)
    report = evaluate(ws)
    entries = {name.split("@")[0]: e for name, e in report["entries"].items()}
    good, cheap = entries["good"], entries["cheap"]
    assert good["task"] == "spans" and good["accuracy"] == 1.0 and good["exact"]["f1"] == 1.0
    # the noisy annotator misses the last span of 30% of the items: recall drops, precision does not
    assert cheap["exact"]["precision"] == 1.0 and cheap["exact"]["recall"] < 0.95
    html = write_report(report, tmp_path / "eval.html").read_text()
    assert "span F1 1.0 exact" in html and "partial" in html
    agreement = project_metrics(ws)["agreement"]
    assert agreement["items"] == 60 and cheap["exact"]["f1"] - 0.05 < agreement["pairwise_span_f1"] < 1.0
