import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from evals.compare import bootstrap_difference, compare, mcnemar
from evals.evaluate import evaluate, worse_than_baseline
from evals.metrics import ABSTAIN, auto_share, classification, confidence_quality, coverage_accuracy
from labeler.data.imports import import_gold, import_items
from labeler.store.workspace import open_workspace
from tests.conftest import ARTIFACTS, write_file, write_project
from tests.llm_server import LLMServer
from tests.test_cli import labeler

LABELS = ["positive", "negative", "neutral"]


def test_classification_agrees_with_scikit_learn_and_counts_abstentions():
    rng = np.random.default_rng(0)
    truth = list(rng.choice(LABELS, 200))
    predicted = [t if rng.random() < 0.7 else (None if rng.random() < 0.3 else str(rng.choice(LABELS))) for t in truth]
    report = classification(truth, predicted, LABELS)
    filled = [p or ABSTAIN for p in predicted]
    assert report["accuracy"] == round(accuracy_score(truth, filled), 4)  # abstentions are wrong, not skipped
    assert report["coverage"] == round(sum(p is not None for p in predicted) / 200, 4)
    assert report["macro_f1"] == round(f1_score(truth, filled, labels=LABELS, average="macro"), 4)
    assert report["kappa"] == round(cohen_kappa_score(truth, filled), 4)
    assert sum(map(sum, report["confusion"]["matrix"])) == 200


def test_confidence_quality_by_hand():
    confidence = [0.9, 0.8, 0.7, 0.6]
    correct = [True, True, False, True]
    assert coverage_accuracy(np.array(confidence), np.array(correct)) == [(0.25, 1.0), (0.5, 1.0), (0.75, 0.6667), (1.0, 0.75)]
    assert auto_share(coverage_accuracy(np.array(confidence), np.array(correct)), 0.7) == 1.0
    quality = confidence_quality(confidence, correct, target=0.9)
    assert quality["auto_share"] == 0.5
    assert quality["auroc"] == round(roc_auc_score(correct, confidence), 4)
    # ECE with 10 bins: each item alone in its bin: mean |conf - right| = (0.1 + 0.2 + 0.7 + 0.4) / 4
    assert abs(quality["ece"] - 0.35) < 1e-9


def test_mcnemar_and_bootstrap():
    a = np.array([True] * 50 + [False] * 50)
    b = np.array([True] * 40 + [False] * 10 + [True] * 5 + [False] * 45)
    test = mcnemar(a, b)
    assert (test["only_a_right"], test["only_b_right"]) == (10, 5)
    assert abs(test["p_value"] - 0.301758) < 1e-5  # exact two-sided binomial, 5 of 15
    interval = bootstrap_difference(a, b)
    assert interval["low"] < interval["difference"] == -0.05 < interval["high"]
    assert compare(a, b)["verdict"] == "no significant difference"
    assert compare(a, np.zeros(100, bool))["verdict"] == "worse"


def _project(tmp_path, server, annotators):
    yaml_text = "name: e\nlabels: {positive: liked it, negative: did not like it, neutral: no opinion}\nfields: [text]\nannotators:\n"
    for name, model in annotators:
        yaml_text += f"  - {{name: {name}, kind: llm, model: openai/{model}, api_base: '{server.base_url}'}}\n"
    root = write_project(tmp_path / "p", yaml_text=yaml_text)
    ws = open_workspace(root)
    import_items(ws, write_file(tmp_path / "i.csv", "id,text\n" + "".join(f"i{n},item {n} is {LABELS[n % 3]}\n" for n in range(150))))
    import_gold(ws, write_file(tmp_path / "g.csv", "id,label\n" + "".join(f"i{n},{LABELS[n % 3]}\n" for n in range(150))))
    return ws, root


def test_eval_compares_annotators_and_prompt_versions(tmp_path):
    with LLMServer() as server:
        ws, root = _project(tmp_path, server, [("good", "ok"), ("bad", "noisy-0.3")])
        report = evaluate(ws)
        good, bad = report["entries"]["good@v1"], report["entries"]["bad@v1"]
        assert good["accuracy"] == 1.0 and 0.55 < bad["accuracy"] < 0.85 and good["coverage"] == 1.0
        assert good["cost_per_1000"] == 0 and good["latency_ms"]["p50"] is not None
        assert good["confidence"]["auroc"] is None  # all right: nothing to separate
        (comparison,) = report["comparisons"]
        assert comparison["verdict"] == "worse" and comparison["b"] == "bad@v1" and comparison["differ"]
        assert worse_than_baseline(evaluate(ws, baseline="good@v1")) == ["bad@v1"]
        calls = server.requests
        evaluate(ws)
        assert server.requests == calls  # cached like any run
        # A second prompt version: the guideline changed, the same model answers the same way.
        (root / "guidelines.md").write_text("# Test\n\nA new rule.\n")
        versions = evaluate(ws, annotators=["good"], prompts=["v1", "v2"])
        assert set(versions["entries"]) == {"good@v1", "good@v2"}
        assert versions["comparisons"][0]["verdict"] == "no significant difference"
        # The CLI gate for teams' own CI.
        gate = labeler("eval", "--prompt", "v1", "--fail-if-worse", "good@v1", "--json", "-p", root, check=False)
        assert gate.returncode == 1 and json.loads(gate.stdout)["worse"] == ["bad@v1"]
        assert labeler("eval", "--annotator", "good", "-p", root).returncode == 0


@pytest.mark.once
def test_eval_of_two_prompt_versions_on_the_example_writes_a_report_that_renders(tmp_path, chromium):
    """The example project, the embedded model, the guideline edited into v2; the report opened in Chromium."""
    import pytest

    from labeler.annotators import local as local_llm

    if not local_llm.available():
        pytest.skip("the local model's extra is not installed")
    ws = _example_workspace(tmp_path, gold_rows=80)  # 72 to evaluate on: the embedded model is the test's time
    root = ws.project.root
    labeler("prompt", "list", "-p", root)  # registers v1
    guideline = root / "guidelines.md"
    guideline.write_text(guideline.read_text().replace(
        "## Rules\n", "## Rules\n\n- A review that only complains about delivery is still negative.\n"))
    path = tmp_path / "report.html"
    result = json.loads(labeler("eval", "-a", "gemma", "--prompt", "v1", "--prompt", "v2", "--report", path,
                                "--json", "-p", root).stdout)
    assert set(result["entries"]) == {"gemma@v1", "gemma@v2"}
    assert result["comparisons"][0]["a"] == "gemma@v1" and result["comparisons"][0]["b"] == "gemma@v2"
    assert all(e["accuracy"] > 0.6 and e["confidence"]["auroc"] is not None for e in result["entries"].values())
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    page.goto(path.as_uri())
    widths = page.eval_on_selector_all(".plots img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == 4 and all(w > 100 for w in widths)  # coverage, reliability, two confusion matrices
    assert "gemma@v2" in page.inner_text("#entries")
    assert json.loads(page.inner_text("#data"))["gold_items"] == 72
    page.screenshot(path=str(ARTIFACTS / "eval-report.png"), full_page=True)
    assert (ARTIFACTS / "eval-report.png").stat().st_size > 10_000


def test_agreement_matches_the_reference_implementations():
    import krippendorff

    from evals.agreement import fleiss_kappa, krippendorff_alpha

    rng = np.random.default_rng(3)
    truth = rng.integers(3, size=80)
    raters = np.where(rng.random((5, 80)) < 0.75, truth, rng.integers(3, size=(5, 80))).astype(float)
    counts = np.stack([np.bincount(raters[:, u].astype(int), minlength=3) for u in range(80)])
    # Fleiss' kappa by its textbook formula, computed independently here.
    p_j = counts.sum(0) / counts.sum()
    p_i = ((counts * (counts - 1)).sum(1)) / (5 * 4)
    assert abs(fleiss_kappa(counts) - (p_i.mean() - (p_j ** 2).sum()) / (1 - (p_j ** 2).sum())) < 1e-12
    # Krippendorff's alpha against the `krippendorff` package, with missing values.
    raters[rng.random((5, 80)) < 0.2] = np.nan
    counts = np.stack([np.bincount(raters[~np.isnan(raters[:, u]), u].astype(int), minlength=3) for u in range(80)])
    expected = krippendorff.alpha(reliability_data=raters, level_of_measurement="nominal")
    assert abs(krippendorff_alpha(counts) - expected) < 1e-9
    # Two raters: Fleiss' kappa is close to (not equal to) Cohen's, both chance-corrected.
    two = np.stack([np.bincount(x, minlength=3) for x in zip(rng.integers(3, size=50), rng.integers(3, size=50))])
    assert fleiss_kappa(two) < 0.3


def test_project_metrics_after_a_run(tmp_path):
    from evals.project_metrics import project_metrics
    from prompts.annotators import build_askers
    from routing.flow import run_project

    with LLMServer() as server:
        ws, root = _project(tmp_path, server, [("good", "ok"), ("bad", "noisy-0.3")])
        import_items(ws, write_file(tmp_path / "new.csv", "id,text\n" + "".join(f"n{n},item {n} is positive\n" for n in range(20))))
        run_project(ws, build_askers(ws)[0])
        data = project_metrics(ws)
    assert data["items"] == 170 and data["states"]["gold"] == 150
    assert data["completion_rate"] == round((150 + data["states"]["auto"]) / 170, 4)
    assert set(data["labels_per_annotator"]) == {"good", "bad"}
    assert data["agreement"]["items"] >= 150  # both voted on the calibration gold
    assert 0 < data["agreement"]["krippendorff_alpha"] < 1 and data["agreement"]["fleiss_kappa"] is not None
    cli = json.loads(labeler("metrics", "--json", "-p", root).stdout)
    assert cli["states"] == data["states"]


def _example_workspace(tmp_path, gold_rows: int | None = None):
    """The example project with its items and gold (only the gold file's first `gold_rows` rows when given:
    the examples, then calibration gold)."""
    from labeler.data.projects import copy_example

    root = copy_example(tmp_path / "example")
    ws = open_workspace(root)
    import_items(ws, root / "items.csv")
    gold = root / "gold.csv"
    if gold_rows is not None:
        gold.write_text("".join(gold.read_text().splitlines(keepends=True)[:1 + gold_rows]))
    import_gold(ws, gold)
    return ws


def test_no_drift_on_a_held_back_slice_of_the_same_domain(tmp_path):
    from evals.drift import detect_drift

    result = detect_drift(_example_workspace(tmp_path), seed=0)
    assert result["new_items"] == 77 and result["drift"] is False, result


def test_drift_when_items_come_from_another_domain(tmp_path):
    import pytest

    from evals.drift import detect_drift
    from tests.conftest import DATASETS

    movies = DATASETS / "sst2" / "items.csv"
    if not movies.exists():
        pytest.skip(f"{movies} is absent")
    ws = _example_workspace(tmp_path)
    lines = movies.read_text().splitlines()[1:121]  # movie-review sentences: another domain
    import_items(ws, write_file(tmp_path / "movies.csv", "id,text\n" + "\n".join(lines) + "\n"))
    result = detect_drift(ws, seed=0)
    assert result["drift"] is True and result["auc"] > 0.6, result  # new items: 77 reviews and 120 movie lines
    movie_ids = {line.split(",", 1)[0] for line in lines}
    assert set(result["propose_for_gold"]) <= movie_ids  # the proposals come from where the data differ
    shown = labeler("metrics", "-p", tmp_path / "example")
    assert "drift: new items differ from the gold set" in shown.stderr


def test_guideline_suggestions_from_overturned_items(tmp_path):
    from sqlalchemy import select as sa_select

    from evals.disagreements import overturned, suggest_markdown
    from labeler.store import models
    from prompts.annotators import build_askers
    from routing.flow import run_project

    with LLMServer() as server:
        ws, root = _project(tmp_path, server, [("good", "ok")])
        import_items(ws, write_file(tmp_path / "new.csv", "id,text\nn1,item n1 is positive\nn2,item n2 is negative\n"))
        run_project(ws, build_askers(ws)[0])
    with ws.session() as s:  # what the review UI does when a reviewer overturns the machine
        ids = dict(s.execute(sa_select(models.Item.external_id, models.Item.id)).all())
        for external_id, label in (("n1", "neutral"), ("n2", "negative")):
            s.merge(models.Decision(item_id=ids[external_id], project_id=ws.project_id, label=label, state=models.State.confirmed, method="review"))
    groups = overturned(ws)
    assert list(groups) == [("positive", "neutral")] and groups[("positive", "neutral")][0]["id"] == "n1"
    markdown = suggest_markdown(groups)
    assert "### neutral" in markdown and "- item n1 is positive" in markdown
    assert labeler("guideline", "suggest", "-p", root).stdout == markdown
