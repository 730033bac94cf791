"""The review screen in a real headless Chromium against `labeler serve`: keys, undo, "I don't know", escaping."""

import os

from playwright.sync_api import expect
from sqlalchemy import select

from labeler.data.imports import import_items
from labeler.store import models
from labeler.store.engine import upsert
from labeler.store.models import Role, State, utcnow
from labeler.store.workspace import open_workspace
from tests.conftest import ARTIFACTS, write_file, write_project
from tests.review_client import PASSWORD, browser_login, make_users, serve

HOSTILE = '<b>bold</b> & <script>window.pwned = 1</script>'


def review_project(tmp_path):
    root = write_project(tmp_path / "proj")
    url = os.environ.get("LABELER_DATABASE_URL") or f"sqlite:///{tmp_path / 'store.db'}"  # see conftest
    ws = open_workspace(root, url=url)
    rows = "".join(f'{{"id": "i{k}", "text": "review number {k}"}}\n' for k in range(1, 7))
    import_items(ws, write_file(tmp_path / "items.jsonl", '{"id": "i0", "text": "%s"}\n' % HOSTILE.replace('"', '\\"') + rows))
    annotator = ws.annotator_ids()["tfidf"]
    with ws.session() as s:
        ids = dict(s.execute(select(models.Item.external_id, models.Item.id)).all())
        s.add_all(models.Vote(item_id=i, annotator_id=annotator, version="m1", label="positive",
                              probs={"positive": 0.61, "negative": 0.3, "neutral": 0.09}) for i in ids.values())
        machine = {"label": "positive", "confidence": 0.55, "reason": "its calibrated confidence is below the level"}
        upsert(s, models.Decision, [{"item_id": i, "project_id": ws.project_id, "label": "positive", "confidence": 0.55, "state": State.needs_review,
                                     "method": "cascade", "details": {"machine": machine}, "updated_at": utcnow()}
                                    for i in ids.values()], ["item_id"])
    make_users(ws, ann=Role.reviewer)
    return ws, root, url, ids


def answers(ws, ids):
    by_id = {v: k for k, v in ids.items()}
    with ws.session() as s:
        tasks = s.execute(select(models.ReviewTask.item_id, models.ReviewTask.label, models.ReviewTask.reason)
                          .where(models.ReviewTask.submitted_at.is_not(None))).all()
    return {by_id[item]: (label, reason) for item, label, reason in tasks}


def test_a_reviewer_works_the_queue_by_keyboard(tmp_path, chromium):
    ws, root, url, ids = review_project(tmp_path)
    with serve(root, url) as base:
        page = chromium.new_page(viewport={"width": 1100, "height": 800})
        page.goto(f"{base}/review")
        expect(page).to_have_url(f"{base}/login?next=/review")
        page.fill("input[name=name]", "ann")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        item = page.locator("#item-id")
        expect(item).to_have_text("i0")
        # The hostile item is shown as text: no <b> element, no script run.
        assert "<script>window.pwned = 1</script>" in page.inner_text("#fields")
        assert page.locator("#fields b").count() == 0 and page.evaluate("window.pwned") is None
        expect(page.locator("#machine")).to_contain_text("positive (calibrated confidence 55 %)")
        expect(page.locator("#why")).to_have_text("Why it is here: its calibrated confidence is below the level.")
        expect(page.locator("button.label.chosen")).to_have_text("1 Positive")  # the suggestion, preselected
        page.screenshot(path=str(ARTIFACTS / "review-screen.png"), full_page=True)

        page.keyboard.press("2")  # a digit chooses and submits
        expect(item).to_have_text("i1")
        page.keyboard.press("3")
        expect(item).to_have_text("i2")
        page.keyboard.press("Enter")  # accepts the preselected suggestion
        expect(item).to_have_text("i3")
        assert answers(ws, ids) == {"i0": ("negative", None), "i1": ("neutral", None), "i2": ("positive", None)}

        page.keyboard.press("u")  # undo: i2 comes back, its answer is gone
        expect(item).to_have_text("i2")
        assert "i2" not in answers(ws, ids)
        page.keyboard.press("1")
        expect(item).to_have_text("i3")

        page.keyboard.press("i")  # "I don't know": a reason picked by its number
        expect(page.locator("#idk")).to_be_visible()
        page.keyboard.press("2")
        page.keyboard.press("Enter")
        expect(item).to_have_text("i4")
        page.keyboard.press("i")  # ... or typed: digits typed there are text, not labels
        page.click("#idk-other")
        page.keyboard.type("sarcasm 2 hard")
        page.keyboard.press("Enter")
        expect(item).to_have_text("i5")
        page.keyboard.press("?")
        expect(page.locator("#help")).to_be_visible()
        page.keyboard.press("?")
        expect(page.locator("#help")).to_be_hidden()
        page.keyboard.press("s")  # skip: i5 is set aside, i6 is next
        expect(item).to_have_text("i6")
        page.screenshot(path=str(ARTIFACTS / "review-screen-after.png"), full_page=True)

    got = answers(ws, ids)
    assert got == {"i0": ("negative", None), "i1": ("neutral", None), "i2": ("positive", None),
                   "i3": (None, "Not about this task"), "i4": (None, "sarcasm 2 hard")}
    with ws.session() as s:
        states = dict(s.execute(select(models.Item.external_id, models.Decision.state)
                                .join(models.Decision, models.Decision.item_id == models.Item.id)).all())
    assert states["i3"] == State.escalated and states["i0"] == State.confirmed and states["i5"] == State.needs_review
    assert (ARTIFACTS / "review-screen.png").stat().st_size > 10_000


def test_a_hidden_gold_card_looks_like_any_other_but_for_its_text(tmp_path, chromium):
    """After a real run, gold items carry the machines' view a new item would get: the same card."""
    from tests.llm_server import LLMServer
    from tests.test_cli import labeler
    from tests.test_routing_run import make_project

    url = os.environ.get("LABELER_DATABASE_URL") or f"sqlite:///{tmp_path / 'store.db'}"
    with LLMServer() as server:
        ws = make_project(tmp_path, server, [("coin", "noisy-0.3", 0)], n_items=140, calibration=60, honeypots=40,
                          target=0.99, url=url)
        (ws.project.root / "labeler.yaml").write_text((ws.project.root / "labeler.yaml").read_text().replace(
            "routing: {", "routing: {review_gold_share: 0.5, review_blind_share: 0, "))
        ws = open_workspace(ws.project.root, url=url)
        labeler("run", "-p", ws.project.root, env={"LABELER_DATABASE_URL": url})  # its own process: the browser owns this loop
    make_users(ws, ann=Role.reviewer)
    with ws.session() as s:
        gold = set(s.scalars(select(models.Item.external_id).join(
            models.GoldLabel, models.GoldLabel.item_id == models.Item.id)))
    shape = """() => { const copy = document.querySelector('#card').cloneNode(true);
        const walk = (n) => { for (const c of n.childNodes) { if (c.nodeType === 3) c.textContent = c.textContent.trim() ? 'T' : '';
                                                            else walk(c); } }; walk(copy); return copy.outerHTML; }"""
    with serve(ws.project.root, url) as base:
        page = chromium.new_page()
        page.goto(f"{base}/login")
        page.fill("input[name=name]", "ann")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        cards = {}
        for _ in range(40):
            expect(page.locator("#item-id")).not_to_have_text("")
            external = page.inner_text("#item-id")
            kind = "gold" if external in gold else "real"
            cards.setdefault(kind, (external, page.evaluate(shape), page.inner_text("#machine"), page.inner_text("#why")))
            if len(cards) == 2:
                break
            page.keyboard.press("1")
            expect(page.locator("#item-id")).not_to_have_text(external)
    (_, gold_shape, gold_machine, gold_why), (_, real_shape, real_machine, real_why) = cards["gold"], cards["real"]
    assert gold_shape == real_shape  # the same elements, attributes and order: only the text differs
    assert "calibrated confidence" in gold_machine and "calibrated confidence" in real_machine
    assert gold_why.startswith("Why it is here:") and real_why.startswith("Why it is here:")


def test_an_unsure_suggestion_is_not_preselected_and_the_screen_says_where_things_stand(tmp_path, chromium):
    ws, root, url, ids = review_project(tmp_path)
    (root / "labeler.yaml").write_text((root / "labeler.yaml").read_text().replace(
        "labels:", "display_names: {negative: Not good}\nlabels:", 1))
    (root / "guidelines.md").write_text("# Reviews\n\n## Labels\n\n### positive\nliked it\n\n### negative\n"
                                        "did not\n\n### neutral\nneither\n")
    with ws.session() as s:  # i1 as the machines' 15 % guess; its vote's version has a name
        decision = s.get(models.Decision, ids["i1"])
        decision.details = {"machine": {"label": "positive", "confidence": 0.15, "reason": "below the level"}}
        s.add(models.PromptVersion(project_id=ws.project_id, name="v1", content_hash="m1", spec={}))
    make_users(ws, bob=Role.reviewer)
    with serve(root, url) as base:
        other = chromium.new_page()  # bob holds i0 and does not answer it
        other.goto(f"{base}/login?next=/review")
        other.fill("input[name=name]", "bob")
        other.fill("input[name=password]", PASSWORD)
        other.click("button[type=submit]")
        expect(other.locator("#item-id")).to_have_text("i0")
        page = browser_login(chromium, base, "ann")
        expect(page.locator("#item-id")).to_have_text("i1")
        expect(page.locator("#machine")).to_contain_text("calibrated confidence 15 %")
        expect(page.locator("button.label.chosen")).to_have_count(0)  # 15 %: nothing chosen, Enter does nothing
        page.keyboard.press("Enter")
        expect(page.locator("#item-id")).to_have_text("i1")
        expect(page.locator("button.label").nth(1)).to_contain_text("Not good")  # the project's display name
        expect(page.locator("#votes")).to_contain_text("v1")  # the prompt version by its name, not its hash
        expect(page.locator("#progress")).to_contain_text("You answered 0")
        assert page.locator("#guideline dl").count() == 0  # the guideline defines the labels: not twice
        page.keyboard.press("i")
        page.keyboard.press("Enter")  # no reason: the error shows in the dialog, where it is seen
        expect(page.locator("#idk-error")).to_be_visible()
        expect(page.locator("#idk-error")).to_contain_text("Say why")
        page.keyboard.press("Escape")
        page.screenshot(path=str(ARTIFACTS / "review-card-1280.png"))
        for k in range(1, 7):  # ann answers what is left; bob still holds i0
            expect(page.locator("#item-id")).to_have_text(f"i{k}")
            page.keyboard.press("1")
        expect(page.locator("#empty")).to_contain_text("1 item is with other reviewers")
        expect(page.locator("#progress")).to_contain_text("You answered 6 · ")  # waiting: counted every 15 s


def test_admins_land_on_an_overview_with_plots_that_fits_the_screen(tmp_path, chromium):
    from tests.llm_server import LLMServer
    from tests.test_cli import labeler
    from tests.test_routing_run import make_project

    url = os.environ.get("LABELER_DATABASE_URL") or f"sqlite:///{tmp_path / 'store.db'}"
    report = tmp_path / "eval.html"
    with LLMServer() as server:  # the runs in their own processes: the browser owns this thread's loop
        ws = make_project(tmp_path, server, [("cheap", "noisy-0.3", 0), ("good", "ok", 1)], n_items=160,
                          calibration=80, honeypots=30, url=url)
        env = {"LABELER_DATABASE_URL": url}
        labeler("run", "--limit", "20", "-p", ws.project.root, env=env)  # two runs: a line to draw
        labeler("run", "-p", ws.project.root, env=env)
        labeler("eval", "--report", report, "-p", ws.project.root, env=env)
    make_users(ws, boss=Role.admin)
    with serve(ws.project.root, url) as base:
        page = browser_login(chromium, base, "boss", path=None)
        expect(page).to_have_url(f"{base}/manage")  # not the queue: opening it leased nothing
        expect(page.locator("#plot-runs")).to_be_visible()
        expect(page.locator("#plot-states")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # wide tables scroll in place
        page.screenshot(path=str(ARTIFACTS / "overview-1280.png"))
        page.goto(report.as_uri())
        expect(page.locator("h1")).to_contain_text("Eval on")
        page.screenshot(path=str(ARTIFACTS / "eval-report-1280.png"))
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    with ws.session() as s:
        assert s.scalar(select(models.ReviewTask.id).limit(1)) is None
