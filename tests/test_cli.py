"""The `labeler` command as a user runs it: a real process, a real project folder."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import write_file


def labeler(*args, cwd=None, check=True):
    env = {k: v for k, v in os.environ.items() if k not in ("LABELER_DATABASE_URL", "LABELER_PROJECT")}
    result = subprocess.run(
        [sys.executable, "-m", "labeler.cli", *map(str, args)], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_init_then_import_status_export(tmp_path):
    labeler("init", tmp_path / "p")
    assert (tmp_path / "p" / "labeler.yaml").is_file() and (tmp_path / "p" / "guidelines.md").is_file()
    items = write_file(tmp_path / "items.jsonl", '{"id": "1", "text": "lovely"}\n{"id": "2", "text": "awful"}\n')
    report = json.loads(labeler("import", "items", items, "--json", cwd=tmp_path / "p").stdout)
    assert report["items_added"] == 2 and report["committed"]
    gold = write_file(tmp_path / "gold.csv", "id,label\n1,positive\n")
    labeler("import", "gold", gold, "--split", "honeypot", "--project", tmp_path / "p")
    status = json.loads(labeler("status", "--json", "-p", tmp_path / "p").stdout)
    assert status["items"] == 2 and status["gold"]["honeypot"] == 1 and status["states"]["unlabeled"] == 1
    exported = labeler("export", "--format", "csv", "-p", tmp_path / "p").stdout.splitlines()
    assert exported[0].startswith("id,label,confidence,state") and len(exported) == 3
    assert not labeler("init", tmp_path / "p", check=False).returncode == 0  # no overwriting


def test_bad_import_exits_non_zero_with_line_numbers(tmp_path):
    labeler("init", tmp_path / "p")
    bad = write_file(tmp_path / "bad.csv", "id,text\n1,ok\n,missing\n")
    result = labeler("import", "items", bad, "-p", tmp_path / "p", check=False)
    assert result.returncode == 1
    assert "line 3: missing item id" in result.stderr and "Nothing imported" in result.stderr
    as_json = json.loads(labeler("import", "items", bad, "-p", tmp_path / "p", "--json", check=False).stdout)
    assert as_json["committed"] is False and as_json["errors"][0]["line"] == 3
    skipped = labeler("import", "items", bad, "-p", tmp_path / "p", "--skip-bad")
    assert "1 items added" in skipped.stderr


def test_invalid_project_file_is_a_message_not_a_traceback(tmp_path):
    (tmp_path / "labeler.yaml").write_text("name: x\nlabels: {a: one, b: two}\nrouting: {target_accuracy: 2}\n")
    result = labeler("status", "-p", tmp_path, check=False)
    assert result.returncode == 1
    assert "routing.target_accuracy (line 3)" in result.stderr and "Traceback" not in result.stderr
    missing = labeler("status", "--json", cwd=tmp_path.parent, check=False)
    assert missing.returncode == 1 and "error" in json.loads(missing.stdout)


def test_demo_runs_end_to_end(tmp_path):
    result = labeler("demo", tmp_path / "demo", "--json")
    data = json.loads(result.stdout)
    assert data["import_items"]["items_added"] == 300
    assert data["import_gold"]["gold_added"] == 159
    assert data["status"]["items"] == 300
    assert (tmp_path / "demo" / "labels.jsonl").is_file()
    human = labeler("demo", tmp_path / "demo2")
    assert "Imported 300 items" in human.stdout
