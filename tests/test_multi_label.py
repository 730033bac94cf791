"""Multi-label projects (`task: multi_label`) at every layer: the task type, gold import, prompts and
parsing, the cascade on label sets and its guarantee, a run through litellm to the test server, export,
the review API and screen, eval metrics."""

import hashlib
import json

import numpy as np
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from evals.metrics import label_set_classification
from labeler.config import ProjectConfig
from labeler.data.exports import iter_export_rows
from labeler.data.imports import import_gold, import_items
from labeler.store import models
from labeler.store.engine import upsert
from labeler.store.models import Role
from labeler.store.workspace import open_workspace
from labeler.tasks import MultiLabel
from prompts.parsing import parse_label_set
from prompts.template import COMPLETION, CompiledPrompt, compile_spec
from routing import label_sets
from routing.project import Stage, fold_of
from tests.conftest import write_file, write_project
from tests.llm_server import LLMServer

LABELS = ["billing", "shipping", "defect"]


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_a_label_set_is_stored_in_the_projects_order_and_unknown_labels_are_refused():
    task = MultiLabel(LABELS)
    assert task.canonical("shipping|billing") == "billing|shipping" == task.canonical(["shipping", " billing "])
    assert task.canonical("") == "" and task.parts("") == [] and task.exported("defect|billing") == ["defect", "billing"]
    assert task.canonical("defect, shipping") == "shipping|defect"
    with pytest.raises(ValueError, match="unknown label.*'refund'"):
        task.canonical("billing|refund")
    with pytest.raises(ValueError):
        ProjectConfig.model_validate({"name": "x", "task": "multi_label", "labels": {"a|b": "joined", "c": "c"}})
    with pytest.raises(ValueError, match="at least 2 labels"):
        ProjectConfig.model_validate({"name": "x", "labels": {"only": "one"}})
    assert ProjectConfig.model_validate({"name": "x", "task": "multi_label", "labels": {"only": "one"}}).task == "multi_label"


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
@pytest.mark.parametrize("answer, label, dropped", [
    ('{"labels": ["billing", "defect"]}', "billing|defect", ()),
    ('```json\n{"labels": ["Shipping", "refund"]}\n```', "shipping", ("refund",)),
    ('{"labels": []}', "", ()),
    ("billing, defect", "billing|defect", ()),
    ('{"labels": ["refund"]}', None, ("refund",)),  # only names that are no label: an abstention, never a guess
    ('{"labels": ["bill', None, ()),  # cut short
    ("I think it is about money", None, ()),
    ("unsure", None, ()),
])
def test_a_chat_models_label_set_is_read_leniently_and_never_guessed(answer, label, dropped):
    parsed = parse_label_set(answer, LABELS)
    assert (parsed.label, parsed.dropped) == (label, dropped)
    assert (parsed.abstain_reason is None) == (label is not None)


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_prompts_for_label_sets_ask_json_of_chat_models_and_label_by_label_of_base_models():
    examples = [{"fields": {"text": "charged twice, parcel late"}, "label": "billing|shipping"},
                {"fields": {"text": "hello"}, "label": ""}]
    labels = {name: f"about {name}" for name in LABELS}
    chat = CompiledPrompt(compile_spec("# Topics\n\nTag every topic.", labels, ["text"], examples, task="multi_label"))
    messages = chat.messages({"text": "where is my box"})
    assert '{"labels": [...]}' in messages[0]["content"]
    assert [m["content"] for m in messages[2:5:2]] == ['{"labels": ["billing", "shipping"]}', '{"labels": []}']
    assert chat.steps == 1 and chat.request_params["response_format"] == {"type": "json_object"}
    base = CompiledPrompt(compile_spec("# Topics\n\nTag every topic.", labels, ["text"], examples,
                                       template=COMPLETION, task="multi_label"))
    assert base.steps == 3
    prompt = base.messages({"text": "where is my box"}, ["no"])[0]["content"]
    assert prompt.endswith("Text: where is my box\nbilling: no\nshipping:")
    assert "billing: yes\nshipping: yes\ndefect: no" in prompt
    top = [{"token": " yes", "logprob": np.log(0.8)}, {"token": " no", "logprob": np.log(0.2)}]
    parsed = base.read([("no", None), ("yes", top), ("no", [{"token": "no", "logprob": 0.0}])])
    assert parsed.label == "shipping" and parsed.probs["billing"] == 0.0 and parsed.probs["shipping"] == pytest.approx(0.8)
    assert parsed.probs["defect"] < 0.5  # "yes" missing from the top logprobs: the floor, below "no"
    # A one-label spec hashes as it did before specs had a task: its versions keep their names.
    single = compile_spec("# T\n\nx", {"a": "a", "b": "b"}, ["text"], [])
    before = {k: v for k, v in single.__dict__.items() if k != "task"}
    blob = json.dumps(before, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert single.content_hash() == hashlib.sha256(blob.encode()).hexdigest()[:16]


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_a_set_score_is_the_log_odds_that_every_label_is_right():
    z = np.array([[[2.0, -1.0]]])  # one item, one stage: P(a) = sigmoid(2), P(not b) = sigmoid(1)
    paths = label_sets.SetPaths(z, np.ones((1, 1), bool), np.zeros((1, 1, 2)), np.zeros((1, 1, 2)))
    p = 1 / (1 + np.exp(-2.0)) * 1 / (1 + np.exp(-1.0))
    assert paths.predicted[0, 0] == 0b01 and paths.score[0, 0] == pytest.approx(np.log(p / (1 - p)))
    # Futility: a later stage that can move each label by at most 1 leaves |z| at most 3 and 2.
    two = label_sets.SetPaths(np.concatenate([z, z], axis=1), np.ones((1, 2), bool),
                              np.ones((1, 2, 2)), np.ones((1, 2, 2)))
    best = 1 / (1 + np.exp(-3.0)) * 1 / (1 + np.exp(-2.0))
    reachable = np.log(best / (1 - best))
    assert not two.futile(0, reachable - 1e-6)[0] and two.futile(0, reachable + 1e-6)[0]


def simulated(n: int, rng, skill=(0.9, 0.75)):
    """Items with 3 labels (each applies with probability 0.3) and two annotators that see each label
    right with these probabilities, giving P(yes) that is right more often the surer it is."""
    truth = rng.random((n, 3)) < 0.3
    votes = {}
    for i in range(n):
        by_stage = {}
        for s, p in enumerate(skill):
            right = rng.random(3) < p
            seen = np.where(right, truth[i], ~truth[i])
            sure = np.where(right, rng.uniform(0.6, 1.0, 3), rng.uniform(0.5, 0.8, 3))
            probs = {label: float(sure[k] if seen[k] else 1 - sure[k]) for k, label in enumerate(LABELS)}
            by_stage[s] = ("|".join(label for k, label in enumerate(LABELS) if seen[k]), probs)
        votes[i] = by_stage
    return truth, votes


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_the_guarantee_on_exact_sets_holds_over_draws_of_the_gold():
    """With probability at least `confidence` over draws of the gold, accepted new items are exactly right
    at least `target` of the time: counted over 40 draws (the bound holds by construction; this checks the
    plumbing from votes to the accepted set does not break it)."""

    class Routing:
        target_accuracy, confidence, guarantee = 0.9, 0.9, "high_probability"

    rng = np.random.default_rng(0)
    stages = [Stage("a", 1, ""), Stage("b", 2, "")]
    held, shares = 0, []
    for _ in range(40):
        truth, votes = simulated(600, rng)
        gold = {i: ("|".join(label for k, label in enumerate(LABELS) if truth[i, k]), models.Split.calibration)
                for i in range(300)}
        policy = label_sets.fit(stages, LABELS, {i: votes[i] for i in gold}, gold, Routing)
        new = list(range(300, 600))
        first, label = policy.paths(votes, new).accept(policy.policy.lambda_)
        taken = first >= 0
        right = [policy.label_of(k) == "|".join(x for j, x in enumerate(LABELS) if truth[i, j])
                 for i, k in zip(np.array(new)[taken], label[taken])]
        held += (np.mean(right) if right else 1.0) >= 0.9
        shares.append(taken.mean())
    assert held / 40 >= 0.85 and np.mean(shares) > 0.2  # and it does accept a good share


@pytest.fixture(scope="module")
def server():
    with LLMServer() as s:
        yield s


def multi_project(tmp_path, server, url=None, n=300, gold_n=200):
    yaml_text = (f"name: topics\ntask: multi_label\nlabels: {{billing: money, shipping: delivery, defect: broken}}\n"
                 f"fields: [text]\nrouting: {{target_accuracy: 0.9, confidence: 0.9, review_order: import, review_blind_share: 0}}\n"
                 "annotators:\n"
                 f"  - {{name: cheap, kind: llm, model: openai/noisy-0.3, api_base: '{server.base_url}', cost_rank: 1}}\n"
                 f"  - {{name: good, kind: llm, model: openai/ok, api_base: '{server.base_url}', cost_rank: 2}}\n")
    root = write_project(tmp_path / "p", yaml_text=yaml_text)
    ws = open_workspace(root, url=url)
    sets = [[label for k, label in enumerate(LABELS) if (i >> k) & 1] for i in range(n)]
    lines = "".join(f"i{i},message {i} {' and '.join(f'is {x}' for x in s) or 'says hello'}\n" for i, s in enumerate(sets))
    assert import_items(ws, write_file(tmp_path / "items.csv", "id,text\n" + lines)).committed
    if gold_n:
        gold = "".join(f"i{i},{'|'.join(sets[i])},{'calibration' if i < gold_n - 20 else 'honeypot'}\n" for i in range(gold_n))
        report = import_gold(ws, write_file(tmp_path / "gold.csv", "id,labels,split\n" + gold))
        assert report.committed, report.errors
    return ws, sets


def test_a_multi_label_project_goes_import_run_export(tmp_path, server, store_url):
    from prompts.annotators import build_askers
    from routing.flow import run_project

    ws, sets = multi_project(tmp_path, server, url=store_url)
    askers, skipped = build_askers(ws)
    assert not skipped
    result = run_project(ws, askers)
    assert result["policy"]["certificate"]["guarantee"] == "high_probability"
    assert result["decisions"].get("auto", 0) >= 80  # the good annotator is right on every label
    rows = {r["id"]: r for r in iter_export_rows(ws)}
    auto = [r for r in rows.values() if r["state"] == "auto"]
    assert np.mean([r["labels"] == sets[int(r["id"][1:])] for r in auto]) >= 0.9  # exact sets, at the target
    assert all(set(r["label_confidence"]) == set(LABELS) for r in auto)
    assert rows["i3"]["gold"] == ["billing", "shipping"] and rows["i0"]["gold"] == []
    assert all(isinstance(v["labels"], list) for r in auto for v in r["votes"])
    # The cheap annotator is asked first; the dear one only where it did not settle the item.
    asked = {a["name"]: a["asked"] for a in result["annotators"]}
    assert asked["good"] < asked["cheap"]


def awaiting_review(ws, suggestions: dict[str, str | None]):
    """Every item without gold waiting for review, with the machines' suggestion given (None: none)."""
    with ws.session() as s:
        ids = dict(s.execute(select(models.Item.external_id, models.Item.id)
                             .outerjoin(models.GoldLabel, models.GoldLabel.item_id == models.Item.id)
                             .where(models.GoldLabel.item_id.is_(None))).all())
        upsert(s, models.Decision, [
            {"item_id": i, "project_id": ws.project_id, "label": suggestions.get(ext), "confidence": 0.5, "state": models.State.needs_review,
             "method": "cascade", "updated_at": models.utcnow(),
             "details": {"machine": {"label": suggestions.get(ext), "confidence": 0.5, "reason": "below the level",
                                     **({"label_confidence": {"defect": 0.62}} if suggestions.get(ext) else {})}}}
            for ext, i in ids.items()], ["item_id"])


def test_gold_labels_import_checked_against_the_label_set(tmp_path, server):
    ws, _ = multi_project(tmp_path, server, n=10, gold_n=0)
    report = import_gold(ws, write_file(tmp_path / "bad.csv", "id,labels\ni1,billing|refund\ni2,\ni3,defect;billing\n"),
                         skip_bad=True)
    assert [e.line for e in report.errors] == [2] and "unknown label(s) 'refund'" in report.errors[0].message
    with ws.session() as s:
        stored = dict(s.execute(select(models.Item.external_id, models.GoldLabel.label)
                                .join(models.GoldLabel, models.GoldLabel.item_id == models.Item.id)).all())
    assert stored == {"i2": "", "i3": "billing|defect"}


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_label_set_metrics_against_hand_counts():
    truth = ["billing|shipping", "", "defect", "billing"]
    predicted = ["billing|shipping", "billing", None, "billing|defect"]
    m = label_set_classification(truth, predicted, LABELS)
    assert m["accuracy"] == 0.25 and m["coverage"] == 0.75
    # billing: 3 said, 2 right (precision 2/3), 2 of 2 found; defect: 1 said wrongly, 0 of 1 found
    assert m["per_label"]["billing"] == {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["per_label"]["defect"]["recall"] == 0.0 and m["per_label"]["shipping"]["f1"] == 1.0
    assert m["hamming_loss"] == round(3 / 12, 4)  # 3 wrong (item, label) answers of 12
    assert m["micro_f1"] == round(2 * 3 / (2 * 3 + 2 + 1), 4)  # 3 right yes, 2 false yes, 1 missed


def test_reviewers_answer_label_sets_through_the_api(tmp_path, server):
    from fastapi.testclient import TestClient

    from review_ui.app import create_app
    from tests.review_client import login, make_users

    ws, _ = multi_project(tmp_path, server, n=6, gold_n=0)
    awaiting_review(ws, {"i0": "billing|defect"})
    make_users(ws, ann=Role.reviewer)
    web = TestClient(create_app(ws, secure_cookies=False, session_secret="s"), follow_redirects=False)
    csrf = login(web, "ann")
    card = web.get("/api/queue/next").json()["item"]
    assert card["task"] == "multi_label" and card["suggestion"] == ["billing", "defect"]
    post = lambda body: web.post("/api/queue/submit", json=body, headers={"X-CSRF-Token": csrf})  # noqa: E731
    assert post({"item_id": card["item_id"], "labels": ["refund"], "client_id": "c0"}).status_code == 422
    assert post({"item_id": card["item_id"], "labels": ["defect"], "label": "defect", "client_id": "c1"}).status_code == 422
    assert post({"item_id": card["item_id"], "labels": ["shipping", "billing"], "client_id": "c2"}).status_code == 200
    nxt = web.get("/api/queue/next").json()["item"]
    assert post({"item_id": nxt["item_id"], "labels": [], "client_id": "c3"}).status_code == 200  # none applies
    with ws.session() as s:
        answered = s.execute(select(models.ReviewTask.item_id, models.ReviewTask.label)
                             .where(models.ReviewTask.submitted_at.is_not(None))).all()
    assert dict(answered) == {card["item_id"]: "billing|shipping", nxt["item_id"]: ""}


def test_a_reviewer_toggles_labels_by_keyboard_and_enter_submits_the_set(tmp_path, server, chromium):
    from tests.conftest import ARTIFACTS
    from tests.review_client import browser_login, make_users, serve

    url = f"sqlite:///{tmp_path / 'store.db'}"
    ws, _ = multi_project(tmp_path, server, url=url, n=4, gold_n=0)
    awaiting_review(ws, {"i0": "defect"})
    make_users(ws, ann=Role.reviewer)
    with serve(ws.project.root, url) as base:
        page = browser_login(chromium, base, "ann")
        item = page.locator("#item-id")
        expect(item).to_have_text("i0")
        expect(page.locator("button.label.chosen")).to_have_text("3 Defect 62 %")  # the suggestion, preselected
        page.keyboard.press("1")
        page.keyboard.press("3")  # defect off
        page.keyboard.press("2")
        expect(page.locator("button.label.chosen")).to_have_count(2)
        page.screenshot(path=str(ARTIFACTS / "review-multi-label.png"))
        page.keyboard.press("Enter")
        expect(item).to_have_text("i1")
        expect(page.locator("button.label.chosen")).to_have_count(0)  # no suggestion on this item
        page.keyboard.press("Enter")  # the empty set
        expect(item).to_have_text("i2")
    with ws.session() as s:
        answered = dict(s.execute(select(models.Item.external_id, models.ReviewTask.label)
                                  .join(models.ReviewTask, models.ReviewTask.item_id == models.Item.id)
                                  .where(models.ReviewTask.submitted_at.is_not(None))).all())
    assert answered == {"i0": "billing|shipping", "i1": ""}


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_folds_split_the_simulated_gold():  # the simulation above relies on every fold holding gold
    assert len({fold_of(i) for i in range(300)}) == 5


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_the_multi_label_demo_labels_most_new_items_at_the_target(tmp_path):
    from tests.test_cli import labeler

    result = json.loads(labeler("demo", str(tmp_path / "d"), "--task", "multi_label", "--json").stdout)
    key = result["answer_key"]
    assert key["items"] == 150 and key["auto"] >= 90 and key["auto_accuracy"] >= 0.9
    assert result["run"]["policy"]["certificate"]["gold_accepted"] >= 100
    rows = [json.loads(line) for line in (tmp_path / "d" / "labels.jsonl").read_text().splitlines()]
    assert all(isinstance(r["labels"], list) for r in rows if r["state"] == "auto")


@pytest.mark.once  # no store work of its own: the PostgreSQL pass leaves it out
def test_init_from_a_gold_file_of_label_sets_makes_a_multi_label_project(tmp_path):
    from labeler.config import load_project
    from labeler.data.projects import init_project

    gold = write_file(tmp_path / "gold.csv", "id,labels,text\na,billing|shipping,x\nb,,y\nc,defect,z\n")
    root = init_project(tmp_path / "p", gold=gold)
    config = load_project(root).config
    assert config.task == "multi_label" and config.label_names == ["billing", "shipping", "defect"]
