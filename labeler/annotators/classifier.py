"""The `model` annotator: logistic regression trained on gold and confirmed labels.

Its features (`features` in the project file): `tfidf` (words and character n-grams),
`embeddings` (the embedded model's mean-pooled hidden states, a linear probe: it beats TF-IDF
by a wide margin at a few hundred labels where meaning matters more than words,
bench/classifier.py), or `auto`: whichever predicts the training labels better in 5-fold
cross-validation on a sample of at most 300 of them (embeddings only where the `local` extra is
installed), so a project where TF-IDF wins never embeds the rest.

Its version is a fingerprint of its features and training labels: once `retrain_every` new
labels have arrived it is retrained, which makes a new version and new votes. Items it was
trained on get out-of-fold predictions (cross-fitting), so its votes on calibration gold are as
honest as its votes on new items; honeypots are never trained on. Embeddings are computed once
per text and kept in the store's cache.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from labeler.annotators.runner import Answer, ItemRef
from labeler.config import ModelAnnotator
from labeler.store import models
from labeler.store.engine import insert_new
from labeler.store.workspace import Workspace

FOLDS = 5
AUTO_SAMPLE = 300  # `features: auto` compares TF-IDF and embeddings on this many training labels at most


@dataclass
class TrainingSet:
    item_ids: list[int]
    texts: list[str]
    labels: list[str]

    def fingerprint(self, features: str = "tfidf") -> str:
        digest = hashlib.sha256()
        for item_id, label in sorted(zip(self.item_ids, self.labels)):
            digest.update(f"{item_id}:{label};".encode())
        kind = {"tfidf": "tfidf-lr", "crf": "crf"}.get(features, "emb-lr")
        return f"{kind}:" + digest.hexdigest()[:16]


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


def _probe():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=10.0, max_iter=3000)  # rows are unit vectors: a light penalty


class Embeddings:
    """The embedded model's embeddings of texts, each computed once and kept in the store's cache."""

    def __init__(self, ws: Workspace):
        from labeler.annotators import local as local_llm

        self.ws, self.model = ws, local_llm
        self.memo: dict[str, np.ndarray] = {}

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(f"embed:gemma3-270m:{text}".encode()).hexdigest()

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.memo})
        keys = {self.key(t): t for t in missing}
        with self.ws.engine.connect() as c:
            for start in range(0, len(keys), 2000):
                rows = c.execute(select(models.ResponseCache.key, models.ResponseCache.response)
                                 .where(models.ResponseCache.key.in_(list(keys)[start:start + 2000])))
                for key, response in rows:
                    self.memo[keys[key]] = np.frombuffer(base64.b64decode(response["f16"]), np.float16).astype(np.float32)
        todo = [t for t in missing if t not in self.memo]
        if todo:
            vectors = self._embed(todo)
            now = models.utcnow()
            with self.ws.session() as s:
                insert_new(s, models.ResponseCache, [
                    {"key": self.key(t), "response": {"f16": base64.b64encode(v.astype(np.float16).tobytes()).decode()},
                     "created_at": now} for t, v in zip(todo, vectors)])
            self.memo.update(zip(todo, vectors))
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)


    def _embed(self, texts: list[str]) -> np.ndarray:
        """The model's embeddings, with a progress bar and a time estimate on the terminal when there are many."""
        if len(texts) < PROGRESS_FROM:
            return self.model.embed(texts)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("embedding texts for the classifier"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("embed", total=len(texts))
            return self.model.embed(texts, progress=lambda done: bar.update(task, completed=done))


PROGRESS_FROM = 50  # texts to embed before a progress bar is worth showing


def _folds(labels: np.ndarray):
    """Cross-validation folds: stratified by label for one label; plain for label sets (a 0/1 matrix), whose
    rare combinations stratification cannot split. None: too few of some label to cross-validate."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if labels.ndim == 2:
        return KFold(min(FOLDS, len(labels)), shuffle=True, random_state=0) if len(labels) >= 2 else None
    folds = min(FOLDS, int(np.bincount(np.unique(labels, return_inverse=True)[1]).min()))
    return StratifiedKFold(folds, shuffle=True, random_state=0) if folds >= 2 else None


def cv_accuracy(make, x, labels: np.ndarray) -> float:
    """Accuracy in cross-validation (of the exact set, for label sets)."""
    from sklearn.model_selection import cross_val_score

    folds = _folds(labels)
    return float(cross_val_score(make(), x, labels, cv=folds).mean()) if folds is not None else float("nan")


def one_vs_rest(make):
    """A label set's model: one yes/no model per label."""
    from sklearn.multiclass import OneVsRestClassifier

    return lambda: OneVsRestClassifier(make())


class ClassifierAsker:
    """Trains at construction; answers from the fitted model (no calls, no cost)."""

    max_concurrency = 64

    def __init__(self, config: ModelAnnotator, annotator_id: int, ws: Workspace):
        from labeler.annotators.local import available

        self.name = config.name
        self.annotator_id = annotator_id
        self.fields = ws.config.fields
        self.task = ws.task
        self.sets = self.task.name == "multi_label"
        self.train = choose_training(ws, config.name, config.retrain_every)
        classes = sorted(set(self.train.labels))
        self.ready = len(self.train.labels) >= config.min_labels and len(classes) >= 2
        self.reason = None if self.ready else (
            f"needs {config.min_labels} labels of 2+ classes to train, has {len(self.train.labels)} of {len(classes)}"
        )
        self.features, self.choice = config.features, {}
        if config.features == "auto" and not available():
            self.features, self.choice = "tfidf", {"reason": "embeddings need the `local` extra"}
        self.embeddings = Embeddings(ws) if self.features != "tfidf" else None
        self.out_of_fold: dict[int, np.ndarray] = {}
        if self.ready:
            labels = self._targets(self.train.labels)
            texts = np.array(self.train.texts, dtype=object)
            wrap = one_vs_rest if self.sets else (lambda make: make)
            if self.features == "auto":  # decided on a sample: only the winner's features are computed for all
                sample = np.random.default_rng(0).permutation(len(texts))[:AUTO_SAMPLE]
                scores = {"tfidf": cv_accuracy(wrap(_pipeline), texts[sample], labels[sample]),
                          "embeddings": cv_accuracy(wrap(_probe), self.embeddings(list(texts[sample])), labels[sample])}
                self.features = "embeddings" if scores["embeddings"] > scores["tfidf"] else "tfidf"
                self.choice = {"cv_accuracy": {k: round(v, 4) for k, v in scores.items()}, "decided_on": len(sample)}
            self.make = wrap(_pipeline if self.features == "tfidf" else _probe)
            x = self._x(self.train.texts)
            self.model = self.make().fit(x, labels)
            self.classes = self.task.labels if self.sets else list(self.model.classes_)
            self._cross_fit(x, labels)
        self.choice["features"] = self.features
        self.version = self.train.fingerprint(self.features)

    def _targets(self, labels: list[str]) -> np.ndarray:
        """The training targets: the labels, or for label sets a 0/1 column per label."""
        if not self.sets:
            return np.array(labels)
        return np.array([[int(name in self.task.parts(label)) for name in self.task.labels] for label in labels])

    def _x(self, texts: list[str]):
        return np.array(texts, dtype=object) if self.features == "tfidf" else self.embeddings(texts)

    def _cross_fit(self, x, labels: np.ndarray) -> None:
        folds = _folds(labels)
        if folds is None:
            return  # too few of some class: trained items get the full model's prediction
        for fit_idx, held_idx in folds.split(np.zeros(len(labels)), labels if labels.ndim == 1 else None):
            model = self.make().fit(x[fit_idx], labels[fit_idx])
            probs = np.zeros((len(held_idx), len(self.classes)))
            if self.sets:  # a column per label, P(it applies)
                probs[:] = model.predict_proba(x[held_idx])
            else:
                probs[:, [self.classes.index(c) for c in model.classes_]] = model.predict_proba(x[held_idx])
            for row, i in enumerate(held_idx):
                self.out_of_fold[self.train.item_ids[i]] = probs[row]

    def prefetch(self, items: list[ItemRef]) -> None:
        """Embed the items to be asked in batches (and keep them), rather than one call each."""
        if self.embeddings is not None and self.features == "embeddings":
            self.embeddings([item_text(i.fields, self.fields) for i in items if i.id not in self.out_of_fold])

    async def ask(self, item: ItemRef) -> Answer:
        probs = self.out_of_fold.get(item.id)
        if probs is None:
            probs = self.model.predict_proba(self._x([item_text(item.fields, self.fields)]))[0]
        rounded = {c: round(float(p), 6) for c, p in zip(self.classes, probs)}
        if self.sets:
            return Answer(label=self.task.join(c for c, p in rounded.items() if p >= 0.5), probs=rounded, cost=0.0)
        return Answer(label=self.classes[int(np.argmax(probs))], probs=rounded, cost=0.0)
