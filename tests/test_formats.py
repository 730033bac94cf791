"""Data in and out in the formats teams already have: Label Studio tasks, crowd tables, nested JSONL fields."""

import csv
import json

from sqlalchemy import select

from labeler.data.exports import export_to_path, format_of
from labeler.data.imports import import_gold, import_items
from labeler.store.models import Role
from labeler.store.workspace import open_workspace
from review_ui import answers
from review_ui.queue import lease_next
from tests.conftest import write_file, write_project
from tests.test_multi_label import awaiting_review

YAML = "name: {name}\nlabels: {{positive: liked, negative: did not}}\nfields: [text]\nrouting: {{review_order: import, review_blind_share: 0, review_gold_share: 0}}\n"


SETS_YAML = YAML.format(name="m").replace("labels: {positive: liked, negative: did not}",
                                         "task: multi_label\nlabels: {a: one, b: two}")


def project(tmp_path, name="p", yaml_text=None):
    root = write_project(tmp_path / name, yaml_text=yaml_text or YAML.format(name=name))
    return open_workspace(root)  # SQLite in the project folder, or the PostgreSQL pass's store


LABEL_STUDIO = [
    {"id": 7, "data": {"text": "loved it", "id": "r1"},
     "annotations": [{"was_cancelled": True, "result": [{"type": "choices", "value": {"choices": ["negative"]}}]},
                     {"result": [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                                  "value": {"choices": ["positive"]}}]}]},
    {"id": 8, "data": {"text": "broke at once"},
     "annotations": [{"result": [{"type": "choices", "value": {"choices": ["negative"]}}]}]},
    {"id": 9, "data": {"text": "not labeled yet"}},
]


def test_label_studio_tasks_come_in_as_items_and_their_annotations_as_gold(tmp_path):
    ws = project(tmp_path)
    file = write_file(tmp_path / "export.json", json.dumps(LABEL_STUDIO))
    assert import_items(ws, file).items_added == 3
    report = import_gold(ws, file, skip_bad=True)
    assert report.gold_added == 2 and [e.line for e in report.errors] == [3]  # the task with no annotation
    rows = {r["id"]: r for r in _jsonl(ws, tmp_path)}
    assert set(rows) == {"r1", "8", "9"}  # the id in `data`, else the task's
    assert rows["r1"]["gold"] == "positive" and rows["8"]["gold"] == "negative"  # the cancelled one is passed over
    assert rows["r1"]["fields"] == {"text": "loved it"}


def _jsonl(ws, tmp_path):
    export_to_path(ws, tmp_path / "out.jsonl")
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]


def test_an_export_to_label_studio_imports_back_to_the_same_items_and_gold(tmp_path):
    ws = project(tmp_path)
    import_items(ws, write_file(tmp_path / "items.csv", "id,text\na,good\nb,bad\nc,\"=1+1, fine\"\n"))
    import_gold(ws, write_file(tmp_path / "gold.csv", "id,label\na,positive\n"))
    awaiting_review(ws, {"b": "negative", "c": "positive"})
    assert format_of(tmp_path / "x.json") == "label-studio"
    export_to_path(ws, tmp_path / "tasks.json")
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    by_id = {t["data"]["id"]: t for t in tasks}
    assert by_id["a"]["annotations"][0]["result"][0]["value"] == {"choices": ["positive"]}
    prediction = by_id["b"]["predictions"][0]
    assert prediction["result"][0]["value"]["choices"] == ["negative"] and prediction["score"] == 0.5
    assert prediction["result"][0]["to_name"] == "text"
    again = project(tmp_path, "q")
    assert import_items(again, tmp_path / "tasks.json").items_added == 3
    assert import_gold(again, tmp_path / "tasks.json", skip_bad=True).gold_added == 1
    before = {r["id"]: (r["fields"], r["gold"]) for r in _jsonl(ws, tmp_path)}
    after = {r["id"]: (r["fields"], r["gold"]) for r in _jsonl(again, tmp_path)}
    assert before == after


def test_every_vote_machine_and_human_goes_out_as_a_crowd_table(tmp_path):
    from labeler.store import models
    from labeler.store.users import authenticate
    from tests.review_client import PASSWORD, make_users

    ws = project(tmp_path)
    import_items(ws, write_file(tmp_path / "items.csv", "id,text\na,good\n=b,fine\n"))
    awaiting_review(ws, {"a": "positive"})
    make_users(ws, ann=Role.reviewer)
    user = authenticate(ws, "ann", PASSWORD)
    lease = lease_next(ws, user)
    answers.submit(ws, user, lease.item_id, label="negative", client_id="c1")
    with ws.session() as s:
        machine = models.Annotator(project_id=ws.project_id, name="m", kind="model")
        s.add(machine)
        s.flush()
        b = s.scalar(select(models.Item.id).where(models.Item.external_id == "=b"))
        s.add_all([models.Vote(item_id=b, annotator_id=machine.id, label="positive"),
                   models.Vote(item_id=b, annotator_id=machine.id, version="v2", label=None, abstain_reason="unsure")])
    assert format_of(tmp_path / "votes.crowd.csv") == "crowd"
    export_to_path(ws, tmp_path / "votes.crowd.csv")
    rows = list(csv.DictReader((tmp_path / "votes.crowd.csv").open()))
    assert sorted((r["task"], r["worker"], r["label"]) for r in rows) == [
        ("'=b", "m", "positive"), (lease.external_id, "user:ann", "negative")]  # defused; abstentions left out


def test_fields_named_by_path_are_read_from_nested_jsonl(tmp_path):
    ws = project(tmp_path, yaml_text=YAML.format(name="p").replace("fields: [text]", "fields: [data.text]"))
    file = write_file(tmp_path / "items.jsonl", '{"id": "a", "data": {"text": "deep"}}\n{"id": "b", "data": {}}\n')
    report = import_items(ws, file, skip_bad=True)
    assert report.items_added == 1 and "missing field(s) data.text" in report.errors[0].message
    from labeler.annotators.classifier import item_text

    row = _jsonl(ws, tmp_path)[0]
    assert row["fields"]["data.text"] == "deep" and item_text(row["fields"], ["data.text"]) == "deep"
    # an Argilla-style record with the field one level down, the project not saying so: the path to declare
    plain = project(tmp_path, "q")
    argilla = write_file(tmp_path / "argilla.jsonl", '{"id": "r1", "fields": {"text": "hello"}, "responses": {}}\n')
    report = import_items(plain, argilla, skip_bad=True)
    assert report.errors[0].message == "item 'r1': missing field(s) text (found nested: declare `fields: [fields.text]` in labeler.yaml)"


def test_parquet_goes_out_and_comes_back_as_the_same_items(tmp_path):
    import pyarrow.parquet as pq

    ws = project(tmp_path)
    import_items(ws, write_file(tmp_path / "items.jsonl", '{"id": "a", "text": "good", "meta": {"n": 1}}\n'
                                '{"id": "b", "text": "bad"}\n'))
    import_gold(ws, write_file(tmp_path / "gold.csv", "id,label\na,positive\n"))
    assert format_of(tmp_path / "x.parquet") == "parquet"
    assert export_to_path(ws, tmp_path / "labels.parquet") == 2
    table = pq.read_table(tmp_path / "labels.parquet")  # what datasets.load_dataset("parquet") reads
    assert table.column_names[:7] == ["id", "label", "confidence", "state", "method", "gold", "text"]
    assert table.to_pylist()[0]["meta"] == '{"n": 1}' and table.to_pylist()[1]["gold"] is None
    again = project(tmp_path, "q")
    assert import_items(again, tmp_path / "labels.parquet").items_added == 2
    before = {r["id"]: r["fields"]["text"] for r in _jsonl(ws, tmp_path)}
    assert before == {r["id"]: r["fields"]["text"] for r in _jsonl(again, tmp_path)}


def test_a_label_set_exports_to_parquet_as_a_list(tmp_path):
    import pyarrow.parquet as pq

    yaml_text = SETS_YAML
    ws = project(tmp_path, "m", yaml_text)
    import_items(ws, write_file(tmp_path / "items.csv", "id,text\nx,hello\n"))
    import_gold(ws, write_file(tmp_path / "gold.csv", "id,labels\nx,b|a\n"))
    export_to_path(ws, tmp_path / "sets.parquet")
    row = pq.read_table(tmp_path / "sets.parquet").to_pylist()[0]
    assert row["labels"] == ["a", "b"] and row["gold"] == ["a", "b"]
    again = project(tmp_path, "m2", yaml_text.replace("name: m", "name: m2"))
    assert import_gold(again, tmp_path / "sets.parquet").gold_added == 1  # its `labels` list is the gold


def test_prodigy_annotations_come_in_with_their_accepted_answers_as_gold(tmp_path):
    ws = project(tmp_path)
    rows = [{"text": "loved it", "label": "positive", "answer": "accept", "_input_hash": 11, "_task_hash": 1,
             "meta": {"id": "r1"}},
            {"text": "broke at once", "accept": ["negative"], "options": [{"id": "negative"}], "answer": "accept",
             "_input_hash": 12, "_task_hash": 2},
            {"text": "meh", "label": "positive", "answer": "reject", "_input_hash": 13, "_task_hash": 3}]
    file = write_file(tmp_path / "prodigy.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert import_items(ws, file).items_added == 3  # no `id`: meta.id, else the input hash
    report = import_gold(ws, file, skip_bad=True)
    assert report.gold_added == 2 and [e.line for e in report.errors] == [3]
    assert "Prodigy answer 'reject'" in report.errors[0].message
    exported = {r["id"]: r for r in _jsonl(ws, tmp_path)}
    assert exported["r1"]["gold"] == "positive" and exported["12"]["gold"] == "negative"
    assert exported["13"]["fields"] == {"text": "meh"}  # Prodigy's own keys are not item fields


def test_label_studio_predictions_are_votes_and_errors_name_the_task(tmp_path):
    from labeler.annotators.recorded import load_recorded
    from labeler.config import RecordedAnnotator
    from labeler.errors import LabelerError

    ws = project(tmp_path)
    tasks = [{"data": {"text": "good", "id": "a"}, "predictions": [
                 {"model_version": "bert-v2", "score": 0.9, "result": [{"type": "choices", "value": {"choices": ["positive"]}}]},
                 {"model_version": "rules", "result": [{"type": "choices", "value": {"choices": ["negative"]}}]}]},
             {"data": {"text": "bad", "id": "b"}, "predictions": [
                 {"model_version": "bert-v2", "result": [{"type": "choices", "value": {"choices": ["negative"]}}]}]},
             {"data": {"text": "so so", "id": "c"}, "annotations": [{"result": [
                 {"type": "choices", "value": {"choices": ["meh"]}}]}]}]
    file = write_file(tmp_path / "tasks.json", json.dumps(tasks))
    import_items(ws, file)
    loaded = load_recorded(ws, RecordedAnnotator(name="ls", kind="recorded", file=file))
    assert loaded == {"votes": 3, "workers": 2, "unknown_items": 0}
    with ws.session() as s:
        from labeler.store import models
        votes = set(s.execute(select(models.Annotator.name, models.Item.external_id, models.Vote.label)
                              .join(models.Vote, models.Vote.annotator_id == models.Annotator.id)
                              .join(models.Item, models.Item.id == models.Vote.item_id)).all())
    assert votes == {("ls/bert-v2", "a", "positive"), ("ls/rules", "a", "negative"), ("ls/bert-v2", "b", "negative")}
    report = import_gold(ws, file, skip_bad=True)
    assert report.where(report.errors[0]).startswith(f"{file}: task 1: ")  # numbered as Label Studio numbers tasks
    assert report.where(report.errors[-1]) == f"{file}: task 3: item 'c': unknown label 'meh' (labels: negative, positive) (`labels`)"
    bad = write_file(tmp_path / "bad.json", json.dumps([{"data": {"id": "a"}, "predictions": [
        {"model_version": "m", "result": [{"type": "choices", "value": {"choices": ["meh"]}}]}]}]))
    import pytest
    with pytest.raises(LabelerError, match="bad.json: task 1: unknown label 'meh'"):
        load_recorded(ws, RecordedAnnotator(name="x", kind="recorded", file=bad))


def test_a_crowd_table_of_label_sets_may_give_the_empty_set(tmp_path):
    from labeler.annotators.recorded import load_recorded
    from labeler.config import RecordedAnnotator

    ws = project(tmp_path, yaml_text="name: t\ntask: multi_label\nlabels: {a: x, b: y}\nfields: [text]\n")
    import_items(ws, write_file(tmp_path / "items.csv", "id,text\n1,x\n2,y\n"))
    table = write_file(tmp_path / "crowd.csv", "task,worker,label\n1,w1,a|b\n2,w1,\n")
    assert load_recorded(ws, RecordedAnnotator(name="crowd", kind="recorded", file=table))["votes"] == 2


def test_hugging_face_datasets_loads_our_parquet_and_its_own_comes_in(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # local files only: nothing may be fetched
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    yaml_text = SETS_YAML
    ws = project(tmp_path, "m", yaml_text)
    import_items(ws, write_file(tmp_path / "items.csv", "id,text\nx,hello\ny,there\n"))
    import_gold(ws, write_file(tmp_path / "gold.csv", "id,labels\nx,b|a\ny,\n"))
    export_to_path(ws, tmp_path / "labels.parquet")
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "labels.parquet"), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 2 and loaded[0]["gold"] == ["a", "b"] and loaded[1]["gold"] == []
    # ...and a dataset written by datasets itself imports as items and gold
    datasets.Dataset.from_dict({"id": ["p", "q"], "text": ["one", "two"], "labels": [["a"], ["a", "b"]]}) \
        .to_parquet(str(tmp_path / "hf.parquet"))
    other = project(tmp_path, "n", yaml_text.replace("name: m", "name: n"))
    assert import_items(other, tmp_path / "hf.parquet").items_added == 2
    assert import_gold(other, tmp_path / "hf.parquet").gold_added == 2
