"""The `model` annotator: TF-IDF and logistic regression trained on gold and confirmed labels.

Its version is a fingerprint of its training labels: once `retrain_every` new labels have
arrived it is retrained, which makes a new version and new votes. Items it was trained on get out-of-fold predictions (cross-fitting), so its votes on
calibration gold are as honest as its votes on new items; honeypots are never trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from labeler import models
from labeler.config import ModelAnnotator
from labeler.runner import Answer, ItemRef
from labeler.workspace import Workspace

FOLDS = 5


@dataclass
class TrainingSet:
    item_ids: list[int]
    texts: list[str]
    labels: list[str]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for item_id, label in sorted(zip(self.item_ids, self.labels)):
            digest.update(f"{item_id}:{label};".encode())
        return "tfidf-lr:" + digest.hexdigest()[:16]


def item_text(fields: dict, names: list[str]) -> str:
    return " \n ".join(str(fields.get(n, "")) for n in names)


def training_set(ws: Workspace) -> TrainingSet:
    """Gold labels (not honeypots) and human-confirmed decisions."""
    Item, Gold, Decision = models.Item, models.GoldLabel, models.Decision
    with ws.session() as s:
        gold = s.execute(
            select(Item.id, Item.fields, Gold.label)
            .join(Gold, Gold.item_id == Item.id)
            .where(Item.project_id == ws.project_id, Gold.split != models.Split.honeypot)
        ).all()
        confirmed = s.execute(
            select(Item.id, Item.fields, Decision.label)
            .join(Decision, Decision.item_id == Item.id)
            .where(Item.project_id == ws.project_id, Decision.state == models.State.confirmed, Decision.label.is_not(None))
        ).all()
    rows = {item_id: (fields, label) for item_id, fields, label in [*gold, *confirmed]}
    ids = sorted(rows)
    return TrainingSet(ids, [item_text(rows[i][0], ws.config.fields) for i in ids], [rows[i][1] for i in ids])


def _last_training(ws: Workspace, name: str) -> dict | None:
    """The training set this annotator's current version was fitted on (a `train` run's stats)."""
    with ws.session() as s:
        run = s.scalars(
            select(models.Run).where(models.Run.project_id == ws.project_id, models.Run.kind == f"train {name}")
            .order_by(models.Run.id.desc()).limit(1)
        ).first()
    return run.stats if run else None


def choose_training(ws: Workspace, name: str, retrain_every: int) -> TrainingSet:
    """The current labels, unless fewer than `retrain_every` arrived since the last training:
    then the same set again (same version, no new votes). A label that changed forces a retrain."""
    current = training_set(ws)
    last = _last_training(ws, name)
    if last:
        now = dict(zip(current.item_ids, current.labels))
        kept = all(now.get(i) == label for i, label in zip(last["item_ids"], last["labels"]))
        if kept and len(current.item_ids) - len(last["item_ids"]) < retrain_every:
            index = {i: n for n, i in enumerate(current.item_ids)}
            return TrainingSet(last["item_ids"], [current.texts[index[i]] for i in last["item_ids"]], last["labels"])
    if not last or current.fingerprint() != last.get("version"):
        with ws.session() as s:
            s.add(models.Run(project_id=ws.project_id, kind=f"train {name}", finished_at=models.utcnow(),
                             stats={"version": current.fingerprint(), "item_ids": current.item_ids, "labels": current.labels}))
    return current


def _pipeline():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    return make_pipeline(features, LogisticRegression(C=4.0, max_iter=2000))


class ClassifierAsker:
    """Trains at construction; answers from the fitted model (no calls, no cost)."""

    max_concurrency = 64

    def __init__(self, config: ModelAnnotator, annotator_id: int, ws: Workspace):
        self.name = config.name
        self.annotator_id = annotator_id
        self.fields = ws.config.fields
        self.train = choose_training(ws, config.name, config.retrain_every)
        self.version = self.train.fingerprint()
        classes = sorted(set(self.train.labels))
        self.ready = len(self.train.labels) >= config.min_labels and len(classes) >= 2
        self.reason = None if self.ready else (
            f"needs {config.min_labels} labels of 2+ classes to train, has {len(self.train.labels)} of {len(classes)}"
        )
        self.out_of_fold: dict[int, np.ndarray] = {}
        if self.ready:
            self.model = _pipeline().fit(self.train.texts, self.train.labels)
            self.classes = list(self.model.classes_)
            self._cross_fit()

    def _cross_fit(self) -> None:
        from sklearn.model_selection import StratifiedKFold

        labels = np.array(self.train.labels)
        folds = min(FOLDS, int(np.bincount(np.unique(labels, return_inverse=True)[1]).min()))
        if folds < 2:
            return  # too few of some class: trained items get the full model's prediction
        texts = np.array(self.train.texts, dtype=object)
        for fit_idx, held_idx in StratifiedKFold(folds, shuffle=True, random_state=0).split(texts, labels):
            model = _pipeline().fit(list(texts[fit_idx]), list(labels[fit_idx]))
            probs = np.zeros((len(held_idx), len(self.classes)))
            probs[:, [self.classes.index(c) for c in model.classes_]] = model.predict_proba(list(texts[held_idx]))
            for row, i in enumerate(held_idx):
                self.out_of_fold[self.train.item_ids[i]] = probs[row]

    async def ask(self, item: ItemRef) -> Answer:
        probs = self.out_of_fold.get(item.id)
        if probs is None:
            probs = self.model.predict_proba([item_text(item.fields, self.fields)])[0]
        best = int(np.argmax(probs))
        return Answer(label=self.classes[best], probs={c: round(float(p), 6) for c, p in zip(self.classes, probs)}, cost=0.0)
