
import pytest
from sqlalchemy import func, select

from labeler.data.imports import CHUNK_ROWS, import_gold, import_items
from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.workspace import open_workspace
from tests.conftest import DATASETS, needs_datasets, write_file, write_project


def count(ws, model):
    with ws.session() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_csv_import_is_idempotent(ws, tmp_path):
    f = write_file(tmp_path / "items.csv", "id,text,source\na,good,web\nb,bad,shop\n")
    first = import_items(ws, f)
    assert (first.items_added, first.items_unchanged, first.committed) == (2, 0, True)
    again = import_items(ws, f)
    assert (again.items_added, again.items_unchanged) == (0, 2)
    assert count(ws, models.Item) == 2
    with ws.session() as s:
        item = s.scalars(select(models.Item).where(models.Item.external_id == "b")).one()
    assert item.fields == {"text": "bad", "source": "shop"}


def test_jsonl_import_with_task_column_and_numbers(ws, tmp_path):
    f = write_file(tmp_path / "items.jsonl", '{"task": 7, "text": "fine", "stars": 4}\n\n{"task": "8", "text": "meh"}\n')
    report = import_items(ws, f)
    assert report.items_added == 2
    with ws.session() as s:
        ids = set(s.scalars(select(models.Item.external_id)))
    assert ids == {"7", "8"}


def test_bad_rows_have_line_numbers_and_nothing_is_half_imported(ws, tmp_path):
    f = write_file(
        tmp_path / "items.csv",
        'id,text\na,fine\n,no id\nc,"multi\nline"\nd,x,extra\ne,ok\n',
    )
    report = import_items(ws, f)
    assert not report.committed
    assert [(e.line, e.message.split(" (")[0]) for e in report.errors] == [
        (3, "missing item id"),
        (6, "3 values for 2 header columns"),
    ]
    assert count(ws, models.Item) == 0  # all-or-nothing


def test_skip_bad_imports_the_good_rows(ws, tmp_path):
    f = write_file(tmp_path / "items.csv", "id,text\na,fine\n,no id\nb,also fine\n")
    report = import_items(ws, f, skip_bad=True)
    assert report.committed and report.items_added == 2 and report.bad_rows == 1
    assert count(ws, models.Item) == 2


def test_same_id_with_other_fields_is_a_conflict(ws, tmp_path):
    import_items(ws, write_file(tmp_path / "one.csv", "id,text\na,first\n"))
    report = import_items(ws, write_file(tmp_path / "two.csv", "id,text\nb,new\na,changed\n"))
    assert not report.committed
    assert report.errors[0].line == 3 and "other fields" in report.errors[0].message
    assert count(ws, models.Item) == 1


def test_duplicate_ids_within_a_file(ws, tmp_path):
    same = import_items(ws, write_file(tmp_path / "dup.csv", "id,text\na,x\na,x\n"))
    assert (same.items_added, same.items_unchanged) == (1, 1)
    clash = import_items(ws, write_file(tmp_path / "clash.csv", "id,text\nb,x\nb,y\n"))
    assert not clash.committed and clash.errors[0].line == 3


def test_missing_declared_field(ws, tmp_path):
    report = import_items(ws, write_file(tmp_path / "i.jsonl", '{"id": "a", "body": "x"}\n'))  # row by row in JSONL
    assert "missing field(s) text" in report.errors[0].message


def test_file_level_problems_are_errors(ws, tmp_path):
    with pytest.raises(LabelerError, match="unknown format"):
        import_items(ws, write_file(tmp_path / "i.xlsx", "x"))
    with pytest.raises(LabelerError, match="not found"):
        import_items(ws, tmp_path / "nope.csv")
    with pytest.raises(LabelerError, match="line 3: not UTF-8"):
        import_items(ws, write_file(tmp_path / "latin.csv", "id,text\na,ok\nb,caf\xe9\n", encoding="latin-1"))
    assert count(ws, models.Item) == 0


def test_bad_jsonl_lines(ws, tmp_path):
    f = write_file(tmp_path / "i.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": \n[1, 2]\n')
    report = import_items(ws, f)
    assert [e.line for e in report.errors] == [2, 3]
    assert "not valid JSON" in report.errors[0].message and "JSON object" in report.errors[1].message


def test_gold_import_checks_labels_and_splits(ws, tmp_path):
    import_items(ws, write_file(tmp_path / "i.csv", "id,text\na,good\nb,bad\nc,meh\n"))
    bad = import_gold(ws, write_file(tmp_path / "g.csv", "id,label,split\na,positive,examples\nb,awful,\nc,neutral,training\nz,positive,\n"))
    assert not bad.committed
    messages = {e.line: e.message for e in bad.errors}
    assert "unknown label 'awful'" in messages[3]
    assert "unknown split 'training'" in messages[4]
    assert "not imported" in messages[5]
    assert count(ws, models.GoldLabel) == 0

    good = import_gold(ws, write_file(tmp_path / "g2.csv", "id,label,split\na,positive,examples\nb,negative,\n"), split="honeypot")
    assert good.committed and good.gold_added == 2
    with ws.session() as s:
        splits = dict(s.execute(select(models.GoldLabel.label, models.GoldLabel.split)).all())
        decisions = s.scalars(select(models.Decision)).all()
    assert splits == {"positive": models.Split.examples, "negative": models.Split.honeypot}
    assert {d.state for d in decisions} == {models.State.gold}
    again = import_gold(ws, write_file(tmp_path / "g3.csv", "id,label,split\na,positive,examples\nb,negative,honeypot\n"))
    assert (again.gold_added, again.gold_unchanged) == (0, 2)
    changed = import_gold(ws, write_file(tmp_path / "g4.csv", "id,label,split\na,negative,examples\n"))
    assert not changed.committed and "already has gold 'positive'" in changed.errors[0].message


def test_gold_rows_may_bring_their_items(ws, tmp_path):
    report = import_gold(ws, write_file(tmp_path / "g.jsonl", '{"id": "n1", "text": "great", "label": "positive"}\n'))
    assert (report.items_added, report.gold_added) == (1, 1)


@needs_datasets
def test_product_dataset_imports_quickly_and_only_once(tmp_path, store_url):
    import time

    from labeler.store.workspace import open_workspace
    from tests.conftest import write_project

    root = write_project(
        tmp_path / "product",
        yaml_text="name: product\nlabels: {0: different, 1: same}\nfields: [a_name, b_name]\n",
    )
    ws = open_workspace(root, url=store_url)
    started = time.perf_counter()
    items = import_items(ws, DATASETS / "product" / "items.csv")
    gold = import_gold(ws, DATASETS / "product" / "gold.csv")
    seconds = time.perf_counter() - started
    assert (items.items_added, gold.gold_added) == (4125, 4125)
    assert seconds < 30, seconds  # seconds, not minutes (about 1 s here)
    again = import_items(ws, DATASETS / "product" / "items.csv")
    gold_again = import_gold(ws, DATASETS / "product" / "gold.csv")
    assert (again.items_added, gold_again.gold_added) == (0, 0)
    assert count(ws, models.Item) == 4125
    ws.engine.dispose()


def test_conflicts_anywhere_in_the_file_are_found_before_anything_is_written(ws, tmp_path):
    # The rows that conflict sit in different chunks: the check pass remembers what came before.
    far = CHUNK_ROWS + 5
    rows = "".join(f"i{k},text {k}\n" for k in range(far)) + "i3,other text\n"
    report = import_items(ws, write_file(tmp_path / "items.csv", "id,text\n" + rows))
    assert not report.committed and [e.line for e in report.errors] == [far + 2]
    assert "imported before with other fields" in report.errors[0].message
    assert count(ws, models.Item) == 0
    gold = "".join(f"i{k},positive\n" for k in range(far)) + "i3,negative\nnew,positive\n"
    import_items(ws, write_file(tmp_path / "items.csv", "id,text\n" + rows.replace("i3,other text\n", "")))
    report = import_gold(ws, write_file(tmp_path / "gold.csv", "id,label\n" + gold))
    assert not report.committed and [e.line for e in report.errors] == [far + 2, far + 3]
    assert "already has gold 'positive'" in report.errors[0].message and "not imported" in report.errors[1].message
    assert count(ws, models.GoldLabel) == 0


def test_a_gold_row_may_name_an_item_from_an_earlier_chunk_of_the_same_file(ws, tmp_path):
    rows = [f'{{"id": "i{k}", "text": "t{k}", "label": "positive"}}' for k in range(CHUNK_ROWS + 3)]
    rows.append('{"id": "i1", "label": "positive"}')  # the same gold again, without fields: unchanged
    report = import_gold(ws, write_file(tmp_path / "gold.jsonl", "\n".join(rows) + "\n"))
    assert report.committed and (report.items_added, report.gold_added, report.gold_unchanged) == (CHUNK_ROWS + 3,) * 2 + (1,)


def test_a_long_import_on_sqlite_lets_other_writers_in_between_chunks(tmp_path):
    import sqlite3
    import threading
    import time

    from labeler.store.workspace import open_workspace
    from tests.conftest import write_project

    ws = open_workspace(write_project(tmp_path / "p"), url=f"sqlite:///{tmp_path / 'store.db'}")
    rows = "".join(f"i{k},{'some review text ' * 10}{k}\n" for k in range(10 * CHUNK_ROWS))
    items = write_file(tmp_path / "items.csv", "id,text\n" + rows)
    done = threading.Thread(target=import_items, args=(ws, items))
    other = sqlite3.connect(tmp_path / "store.db", timeout=2, isolation_level=None)  # a reviewer's write, say
    waits = []
    done.start()
    while done.is_alive():
        if other.execute("SELECT count(*) FROM item").fetchone()[0]:  # the import is writing
            started = time.monotonic()
            other.execute("BEGIN IMMEDIATE")  # the store's write lock; "database is locked" after 2 s
            other.execute("COMMIT")
            waits.append(time.monotonic() - started)
        time.sleep(0.02)
    done.join()
    assert count(ws, models.Item) == 10 * CHUNK_ROWS
    assert len(waits) >= 3 and max(waits) < 2  # got in while the import went on, each time within a chunk


def test_a_file_separated_by_semicolons_is_named_as_such(ws, tmp_path):
    with pytest.raises(LabelerError, match=r"line 1: the header was read as one column \('id;text'\).*semicolons"):
        import_items(ws, write_file(tmp_path / "semi.csv", "id;text\na;fine\nb;bad\n"))


def test_a_field_missing_from_the_header_is_said_once_for_the_header(ws, tmp_path):
    rows = "".join(f"i{n},hello\n" for n in range(50))
    with pytest.raises(LabelerError, match=r"line 1: no column 'text' .*the header has 'id', 'tweet_body'"):
        import_items(ws, write_file(tmp_path / "tweets.csv", "id,tweet_body\n" + rows))
    # A gold file of ids and labels names items imported before: no fields needed.
    import_items(ws, write_file(tmp_path / "items.csv", "id,text\na,fine\n"))
    assert import_gold(ws, write_file(tmp_path / "gold.csv", "id,label\na,positive\n")).gold_added == 1


@pytest.mark.parametrize("name, text", [("empty.csv", ""), ("header.csv", "id,text\n"), ("empty.jsonl", ""),
                                        ("blank.jsonl", "\n\n")])
def test_a_file_with_no_rows_is_the_same_error_whatever_its_format(ws, tmp_path, name, text):
    with pytest.raises(LabelerError, match="no rows to import|empty file"):
        import_items(ws, write_file(tmp_path / name, text))


def test_an_item_over_the_size_limit_is_refused_with_its_line(tmp_path):
    from tests.conftest import PROJECT_YAML

    root = write_project(tmp_path / "p", yaml_text=PROJECT_YAML.format(name="p") + "max_item_chars: 100\n")
    small = open_workspace(root)
    report = import_items(small, write_file(tmp_path / "big.csv", f"id,text\na,short\nb,{'x' * 200}\n"), skip_bad=True)
    assert report.items_added == 1 and str(report.errors[0]).startswith("line 3: item 'b': its fields hold 2")
    assert "over the project's limit of 100 (`max_item_chars` in labeler.yaml)" in report.errors[0].message
