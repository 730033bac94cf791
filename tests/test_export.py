import csv
import io
import json

from sqlalchemy import select

from labeler.data.exports import export_to_path, project_status, write_export
from labeler.data.imports import import_gold, import_items
from labeler.store import models
from labeler.store.workspace import open_workspace
from tests.conftest import write_file, write_project


def _seed(ws, tmp_path):
    import_items(ws, write_file(tmp_path / "i.csv", 'id,text\na,"great, really"\nb,"bad ""quote"""\nc,unicode ☃\n'))
    import_gold(ws, write_file(tmp_path / "g.csv", "id,label\nc,neutral\n"))
    with ws.session() as s:
        items = {i.external_id: i.id for i in s.scalars(select(models.Item))}
        tfidf = s.scalars(select(models.Annotator).where(models.Annotator.name == "tfidf")).one()
        s.add(models.PromptVersion(project_id=ws.project_id, name="v1", content_hash="h1", spec={}))
        s.add(models.Vote(item_id=items["a"], annotator_id=tfidf.id, version="h1", label="positive",
                          probs={"positive": 0.8, "negative": 0.1, "neutral": 0.1}, cost=0.001))
        s.add(models.Vote(item_id=items["b"], annotator_id=tfidf.id, version="h1", label=None,
                          abstain_reason="unparsable", raw="???"))
        s.add(models.Decision(item_id=items["a"], project_id=ws.project_id, label="positive", confidence=0.8, state=models.State.auto,
                              method="majority"))
    return items


def test_jsonl_export_round_trip(ws, tmp_path):
    _seed(ws, tmp_path)
    out = io.StringIO()
    assert write_export(ws, out, "jsonl") == 3
    rows = {r["id"]: r for r in map(json.loads, out.getvalue().splitlines())}
    assert rows["a"]["label"] == "positive" and rows["a"]["state"] == "auto" and rows["a"]["confidence"] == 0.8
    assert rows["a"]["votes"][0] | {"at": None} == {
        "annotator": "tfidf", "version": "v1", "label": "positive",
        "probs": {"positive": 0.8, "negative": 0.1, "neutral": 0.1}, "abstain_reason": None, "cost": 0.001, "at": None,
    }
    assert rows["b"]["state"] == "unlabeled" and rows["b"]["votes"][0]["abstain_reason"] == "unparsable"
    assert rows["b"]["fields"] == {"text": 'bad "quote"'}
    assert rows["c"]["state"] == "gold" and rows["c"]["gold"] == "neutral" and rows["c"]["fields"]["text"] == "unicode ☃"


def test_csv_export_reimports_into_a_fresh_project(ws, tmp_path):
    _seed(ws, tmp_path)
    path = tmp_path / "out.csv"
    assert export_to_path(ws, path) == 3
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert json.loads(rows[0]["votes"])[0]["label"] == "positive"
    # The exported labelled rows are gold for another project: items and labels survive.
    labelled = tmp_path / "labelled.csv"
    with labelled.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=rows[0].keys())
        writer.writeheader()
        writer.writerows(r for r in rows if r["label"])
    fresh = open_workspace(write_project(tmp_path / "fresh", name="fresh"), url=f"sqlite:///{tmp_path / 'fresh.db'}")
    report = import_gold(fresh, labelled)
    assert report.committed and report.gold_added == 2
    out = io.StringIO()
    write_export(fresh, out, "jsonl")
    again = {r["id"]: r for r in map(json.loads, out.getvalue().splitlines())}
    assert {k: (v["gold"], v["fields"]) for k, v in again.items()} == {
        "a": ("positive", {"text": "great, really"}),
        "c": ("neutral", {"text": "unicode ☃"}),
    }


def test_status_counts(ws, tmp_path):
    _seed(ws, tmp_path)
    status = project_status(ws)
    assert status["items"] == 3
    assert status["states"] == {"auto": 1, "needs_review": 0, "confirmed": 0, "escalated": 0, "gold": 1, "unlabeled": 1}
    assert status["gold"]["calibration"] == 1
    assert status["annotators"] == [{"name": "tfidf", "votes": 2, "abstentions": 1, "cost": 0.001}]


def test_csv_export_keeps_every_field_of_every_item_and_defuses_formulas(ws, tmp_path):
    items = tmp_path / "i.jsonl"
    items.write_text('{"id": "a", "text": "plain"}\n'
                     '{"id": "b", "text": "=HYPERLINK(\\"http://x\\")", "source": "@web"}\n'
                     '{"id": "-c", "text": "+1", "lang": "en", "source": "mail"}\n', encoding="utf-8")
    assert import_items(ws, items).committed
    out = io.StringIO()
    write_export(ws, out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0])[6:9] == ["text", "source", "lang"]  # fields the first item lacks are columns too
    assert [(r["id"], r["text"], r["source"], r["lang"]) for r in rows] == [
        ("a", "plain", "", ""), ("b", "'=HYPERLINK(\"http://x\")", "'@web", ""), ("'-c", "'+1", "mail", "en")]


def test_status_lists_only_the_annotators_in_the_project_file(project_dir, store_url, tmp_path):
    ws = open_workspace(project_dir, url=store_url)
    _seed(ws, tmp_path)
    yaml = (project_dir / "labeler.yaml").read_text().replace("  - name: tfidf\n    kind: model\n",
                                                               "  - name: clf\n    kind: model\n")
    (project_dir / "labeler.yaml").write_text(yaml)
    again = open_workspace(project_dir, url=store_url)
    assert [a["name"] for a in project_status(again)["annotators"]] == ["clf"]  # tfidf's votes stay, unlisted


def test_the_export_format_follows_the_files_extension(tmp_path):
    """`-o labels.csv` wrote JSONL, and `-o x.parquet` JSONL silently."""
    from tests.test_cli import labeler

    root = write_project(tmp_path / "p")
    labeler("import", "items", write_file(tmp_path / "i.csv", "id,text\na,fine\nb,bad\n"), "-p", root)
    labeler("export", "-o", tmp_path / "labels.csv", "-p", root)
    assert (tmp_path / "labels.csv").read_text().splitlines()[0].startswith("id,")  # a CSV header, not JSON
    labeler("export", "-o", tmp_path / "labels.ndjson", "-p", root)
    assert json.loads((tmp_path / "labels.ndjson").read_text().splitlines()[0])["id"] == "a"
    refused = labeler("export", "-o", tmp_path / "x.xlsx", "-p", root, check=False)
    assert refused.returncode == 1 and "unknown format '.xlsx'" in refused.stderr and not (tmp_path / "x.xlsx").exists()
    labeler("export", "-o", tmp_path / "forced.txt", "--format", "csv", "-p", root)  # said outright: as told
    assert (tmp_path / "forced.txt").read_text().startswith("id,")
