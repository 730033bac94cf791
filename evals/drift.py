"""Drift between the gold set and the new items: are the new items still like the ones we calibrated on?

A classifier two-sample test on text features: a model learns to tell gold items from new ones
on half of them and scores the other half; if the two sets were alike, its scores could not
separate them (a one-sided Mann-Whitney test on the held-out scores). Alongside: the shift in
predicted labels (chi-square against gold's label mix), and the new items' mean confidence.
The new items that look least like gold are proposed for gold: the guarantee needs them.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2_contingency, mannwhitneyu
from sqlalchemy import select

from labeler.annotators.classifier import item_text
from labeler.store import models
from labeler.store.workspace import Workspace

ALPHA = 0.01
MIN_ITEMS = 20
SAMPLE = 5000  # items per side at most: the test needs no more, and a run should not wait for it


def _sample(rows: list, rng) -> list:
    if len(rows) <= SAMPLE:
        return rows
    return [rows[i] for i in sorted(rng.choice(len(rows), size=SAMPLE, replace=False))]


def two_sample_test(reference: list[str], new: list[str], seed: int = 0) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = np.array(reference + new, dtype=object)
    is_new = np.array([0] * len(reference) + [1] * len(new))
    rng = np.random.default_rng(seed)
    train = np.zeros(len(texts), bool)
    for group in (0, 1):  # half of each group trains, the other half is scored
        idx = np.nonzero(is_new == group)[0]
        train[rng.choice(idx, size=len(idx) // 2, replace=False)] = True
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    model = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced")
    model.fit(vectorizer.fit_transform(texts[train]), is_new[train])
    held = ~train
    scores = model.predict_proba(vectorizer.transform(texts[held]))[:, 1]
    new_scores, ref_scores = scores[is_new[held] == 1], scores[is_new[held] == 0]
    test = mannwhitneyu(new_scores, ref_scores, alternative="greater")
    auc = test.statistic / (len(new_scores) * len(ref_scores))
    all_new = model.predict_proba(vectorizer.transform(texts[is_new == 1]))[:, 1]
    return {"auc": round(float(auc), 4), "p_value": float(test.pvalue), "new_scores": all_new}


def detect_drift(ws: Workspace, seed: int = 0, propose: int = 10) -> dict:
    Item, Gold, Decision = models.Item, models.GoldLabel, models.Decision
    with ws.session() as s:
        rows = s.execute(
            select(Item.external_id, Item.fields, Gold.label, Decision.label, Decision.confidence, Decision.state)
            .outerjoin(Gold, Gold.item_id == Item.id).outerjoin(Decision, Decision.item_id == Item.id)
            .where(Item.project_id == ws.project_id).order_by(Item.id)
        ).all()
    fields = ws.config.fields
    rng = np.random.default_rng(seed)
    gold = _sample([r for r in rows if r[2] is not None], rng)
    new = _sample([r for r in rows if r[2] is None], rng)
    if len(gold) < MIN_ITEMS or len(new) < MIN_ITEMS:
        return {"drift": None, "reason": f"needs {MIN_ITEMS} gold and {MIN_ITEMS} new items", "gold_items": len(gold), "new_items": len(new)}
    test = two_sample_test([item_text(r[1], fields) for r in gold], [item_text(r[1], fields) for r in new], seed)
    labels = ws.config.label_names
    predicted = [r[3] for r in new if r[3] in labels]
    label_shift = None
    if len(predicted) >= MIN_ITEMS:
        table = np.array([[sum(r[2] == label for r in gold) for label in labels], [predicted.count(label) for label in labels]])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] > 1:
            label_shift = float(chi2_contingency(table)[1])
    confidences = [r[4] for r in new if r[4] is not None and r[5] != models.State.gold]
    order = np.argsort(-test["new_scores"])[:propose]
    return {
        "drift": bool(test["p_value"] < ALPHA),
        "auc": test["auc"],
        "p_value": round(test["p_value"], 6),
        "gold_items": len(gold),
        "new_items": len(new),
        "label_shift_p_value": round(label_shift, 6) if label_shift is not None else None,
        "new_confidence_mean": round(float(np.mean(confidences)), 4) if confidences else None,
        "propose_for_gold": [new[i][0] for i in order],
    }
