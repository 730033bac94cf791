import json

import numpy as np
import pytest

from routing.aggregate import METHODS, aggregate_file
from routing.dawid_skene import DawidSkene
from routing.majority_vote import MajorityVote
from routing.one_coin import OneCoin
from routing.votes import VoteTable
from routing.weighted_majority import WeightedMajorityVote
from tests.conftest import DATASETS, needs_datasets, write_file
from tests.test_cli import labeler

pytestmark = pytest.mark.once  # computation only: the PostgreSQL pass leaves it out

SMALL = [("t1", "a", "x"), ("t1", "b", "x"), ("t1", "c", "y"), ("t2", "a", "y"), ("t2", "b", "y"), ("t3", "c", "x")]


def test_majority_vote_by_hand():
    table = VoteTable.from_records(SMALL, ["x", "y"])
    probs = MajorityVote().fit_predict_proba(table)
    assert np.allclose(probs, [[2 / 3, 1 / 3], [0, 1], [1, 0]])


def test_weighted_majority_by_hand():
    # Majority: t1=x, t2=y, t3=x. Agreement: a 2/2, b 2/2, c 1/2 -> skills (k+1)/(n+2): a=b=3/4, c=2/4.
    table = VoteTable.from_records(SMALL, ["x", "y"])
    model = WeightedMajorityVote().fit(table)
    assert np.allclose(model.skills_, [0.75, 0.75, 0.5])
    assert np.allclose(model.probas_[0], [1.5 / 2.0, 0.5 / 2.0])


def test_dawid_skene_one_step_by_hand():
    # With n_iter=1 the posterior is one E-step after the M-step on majority vote.
    table = VoteTable.from_records(SMALL, ["x", "y"])
    model = DawidSkene(n_iter=1).fit(table)
    mv = MajorityVote().fit_predict_proba(table)
    priors = mv.mean(axis=0)
    # worker c: true x mass = t1 (2/3) + t3 (1): observed y on t1, x on t3
    c_errors_x = np.array([1 / (1 + 2 / 3), (2 / 3) / (1 + 2 / 3)])
    c_errors_y = np.array([1e-10, 1.0])  # on true y, c was never seen (t1 has 1/3 y mass: observed y)
    t3 = table.task_names.index("t3")
    expected = priors * np.array([c_errors_x[0], c_errors_y[0]])  # t3's only vote: c says x
    assert np.allclose(model.probas_[t3], expected / expected.sum())
    # and the M-step after it: priors are the new posteriors' mean
    assert np.allclose(model.priors_, model.probas_.mean(axis=0))


def test_dawid_skene_finds_the_reliable_worker():
    # Two spammers who always say "y" outvote one perfect worker under majority vote, not under DS.
    rng = np.random.default_rng(1)
    truth = rng.integers(2, size=200)
    records = []
    for t, label in enumerate(truth):
        records.append((t, "good", int(label)))
        records.append((t, "spam1", 1 if rng.random() < 0.5 else 0))
        records.append((t, "spam2", 1 if rng.random() < 0.5 else 0))
        records.append((t, "fair", int(label) if rng.random() < 0.8 else 1 - int(label)))
    table = VoteTable.from_records(records, [0, 1])
    order = np.array([int(n) for n in table.task_names])
    ds = (DawidSkene().fit_predict(table) == truth[order]).mean()
    mv = (MajorityVote().fit_predict(table) == truth[order]).mean()
    assert ds > 0.97 and ds > mv + 0.05


def test_gold_anchors_the_posterior():
    table = VoteTable.from_records(SMALL, ["x", "y"])
    t1 = table.task_names.index("t1")
    for method in (DawidSkene, OneCoin, WeightedMajorityVote):
        probas = method().fit_predict_proba(table, gold={t1: 1})
        assert probas[t1].argmax() == 1


def test_unknown_labels_are_refused():
    with pytest.raises(ValueError, match="outside the label set"):
        VoteTable.from_records(SMALL, ["x"])


def _crowd_kit_agrees(records, gold):
    """Our Dawid-Skene and crowd-kit's on the same votes: (our accuracy, theirs, share of equal labels)."""
    crowdkit = pytest.importorskip("crowdkit.aggregation", reason="crowd-kit is the reference (extra `dev`)")
    import pandas as pd

    labels = sorted({r[2] for r in records} | set(gold.values()), key=str)
    table = VoteTable.from_records(records, labels)
    ours = dict(zip(table.task_names, (labels[k] for k in DawidSkene().fit_predict(table))))
    frame = pd.DataFrame(records, columns=["task", "worker", "label"]).astype({"task": str})
    theirs = crowdkit.DawidSkene(n_iter=100).fit_predict(frame).to_dict()
    accuracy = lambda labelled: np.mean([labelled[str(t)] == g for t, g in gold.items()])  # noqa: E731
    return accuracy(ours), accuracy(theirs), np.mean([ours[t] == theirs[t] for t in ours])


@needs_datasets
@pytest.mark.parametrize("name", ["rte", "product", "possent", "weather", "dog", "face", "duck"])
def test_dawid_skene_matches_crowd_kit_on_every_crowd_set(name):
    from routing.aggregate import read_gold, read_votes

    ours, theirs, same = _crowd_kit_agrees(read_votes(DATASETS / name / "labels.csv"),
                                           read_gold(DATASETS / name / "gold.csv"))
    assert abs(ours - theirs) <= 0.002 and same >= 0.998, (ours, theirs, same)


def test_dawid_skene_matches_crowd_kit_with_many_workers_and_labels():
    """Hundreds of workers with few votes each, four labels: where smoothing and a different stopping
    rule used to cost up to 2.7 points against crowd-kit."""
    rng = np.random.default_rng(5)
    n_tasks, n_workers, K = 3000, 600, 4
    truth = rng.integers(K, size=n_tasks)
    activity = rng.pareto(1.0, n_workers) + 1
    skill = rng.beta(3, 2, n_workers)
    records = []
    for t in range(n_tasks):
        for w in rng.choice(n_workers, size=5, replace=False, p=activity / activity.sum()):
            records.append((f"t{t}", f"w{w}", int(truth[t] if rng.random() < skill[w] else rng.integers(K))))
    ours, theirs, same = _crowd_kit_agrees(records, {f"t{t}": int(truth[t]) for t in range(n_tasks)})
    assert abs(ours - theirs) <= 0.002 and same >= 0.998, (ours, theirs, same)


@needs_datasets
def test_aggregate_command(tmp_path):
    result = json.loads(labeler("aggregate", DATASETS / "rte" / "labels.csv", "--method", "mv",
                                "--gold", DATASETS / "rte" / "gold.csv", "--json").stdout)
    assert result["items"] == 800 and 0.9 < result["accuracy"] < 0.93 and "seconds" in result
    assert {"task", "label", "confidence"} <= set(result["labels"][0])


def test_aggregate_command_on_a_small_file(tmp_path):
    votes = write_file(tmp_path / "v.csv", "task,worker,label\n1,a,cat\n1,b,cat\n2,a,dog\n")
    out = labeler("aggregate", votes, "--method", "wmv").stdout.splitlines()
    assert out[0] == "task,label,confidence" and out[1].startswith("1,cat,")
    bad = labeler("aggregate", votes, "--method", "nope", check=False)
    assert bad.returncode == 1 and "unknown method" in bad.stderr
    assert set(METHODS) == {"mv", "wmv", "ds", "onecoin"}


def test_votes_with_probabilities_count_by_them_in_majority_vote():
    records = [("t1", "llm", "x"), ("t1", "clf", "y")]
    soft = [{"x": 0.9, "y": 0.1}, {"x": 0.4, "y": 0.6}]
    table = VoteTable.from_records(records, ["x", "y"], soft=soft)
    assert np.allclose(MajorityVote().fit_predict_proba(table), [[0.65, 0.35]])
    hard = VoteTable.from_records(records, ["x", "y"])
    assert np.allclose(MajorityVote().fit_predict_proba(hard), [[0.5, 0.5]])


def test_crowd_tables_with_an_empty_cell_are_refused_with_the_line(tmp_path):
    from labeler.errors import LabelerError

    votes = write_file(tmp_path / "v.csv", "task,worker,label\n1,a,cat\n2,,dog\n")
    with pytest.raises(LabelerError, match="line 3: expected task, worker and label"):
        aggregate_file(votes, "mv")
    gold = write_file(tmp_path / "g.csv", "task,label\n1,\n")
    with pytest.raises(LabelerError, match="line 2: expected task and label"):
        aggregate_file(write_file(tmp_path / "ok.csv", "task,worker,label\n1,a,cat\n"), "mv", gold)
