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
    with np.errstate(divide="ignore"):  # no smoothing: some confusion cells are exactly 0
        model = DawidSkene(n_iter=1, smoothing=0.0).fit(table)
    mv = MajorityVote().fit_predict_proba(table)
    priors = mv.mean(axis=0)
    assert np.allclose(model.priors_, priors)
    # worker c: true x mass = t1 (2/3) + t3 (1): observed y on t1, x on t3
    c = table.worker_names.index("c")
    assert np.allclose(model.errors_[c, 0], [1 / (1 + 2 / 3), (2 / 3) / (1 + 2 / 3)])
    t3 = table.task_names.index("t3")
    expected = priors * model.errors_[c, :, 0]
    assert np.allclose(model.probas_[t3], expected / expected.sum())


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


@needs_datasets
@pytest.mark.parametrize("name,crowd_kit", [("rte", 0.928), ("possent", 0.960), ("weather", 0.840), ("product", 0.940)])
def test_dawid_skene_matches_crowd_kit(name, crowd_kit):
    result = aggregate_file(DATASETS / name / "labels.csv", "ds", DATASETS / name / "gold.csv")
    assert result["accuracy"] >= crowd_kit - 0.002


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
