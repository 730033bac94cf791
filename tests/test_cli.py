"""The `labeler` command as a user runs it: a real process, a real project folder."""

import json
import os
import subprocess
import sys

from tests.conftest import write_file


def labeler(*args, cwd=None, check=True, env=None):
    """Run the CLI in its own process, in the test's environment (conftest's) plus `env`."""
    env = dict(os.environ) | (env or {})
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


def test_demo_runs_end_to_end_with_the_local_model_and_the_classifier(tmp_path):
    """The README's first command: no key, no network, the embedded model and the classifier vote."""
    data = json.loads(labeler("demo", tmp_path / "demo", "--json").stdout)
    assert data["import_items"]["items_added"] == 240
    assert data["import_gold"]["gold_added"] == 163
    run = data["run"]
    by_name = {a["name"]: a for a in run["annotators"]}
    assert run["skipped"] == {}
    assert list(by_name) == ["tfidf", "gemma"]  # cheapest first
    assert by_name["tfidf"]["voted"] >= 130 + 77  # calibration gold and every new item
    assert by_name["gemma"]["voted"] >= 130 and by_name["gemma"]["failed"] == 0 and by_name["gemma"]["cost"] == 0
    assert set(run["policy"]["calibrated_accuracy"]) == {"tfidf", "gemma"}
    assert run["policy"]["calibrated_accuracy"]["gemma"] > 0.7  # few-shot Gemma on binary sentiment
    assert set(run["honeypots"]) <= {"tfidf", "gemma"} and run["honeypots"]
    assert sum(run["decisions"].values()) == 77 and data["status"]["states"]["unlabeled"] == 0
    assert data["answer_key"]["labelled"] == 77 and data["answer_key"]["accuracy"] > 0.75
    rows = [json.loads(line) for line in (tmp_path / "demo" / "labels.jsonl").read_text().splitlines()]
    gemma_votes = [v for r in rows for v in r["votes"] if v["annotator"] == "gemma"]
    assert gemma_votes[0]["version"] == "v1"
    assert sum(v["probs"] is not None for v in gemma_votes) > 0.9 * len(gemma_votes)  # from logprobs
    human = labeler("status", "-p", tmp_path / "demo")
    assert "needs_review" in human.stdout and "gemma" in human.stdout


def test_prompt_calibrate_and_run_commands(tmp_path):
    from tests.llm_server import LLMServer

    with LLMServer() as server:
        root = tmp_path / "p"
        labeler("init", root)
        (root / "labeler.yaml").write_text(
            "name: p\nlabels: {positive: good, negative: bad}\nfields: [text]\nannotators:\n"
            f"  - {{name: gpt, kind: llm, model: openai/ok, api_base: '{server.base_url}'}}\n"
        )
        items = write_file(tmp_path / "i.csv", "id,text\n" + "".join(f"i{n},item {n} is positive\n" for n in range(12)))
        labeler("import", "items", items, "-p", root)
        labeler("import", "gold", write_file(tmp_path / "g.csv", "id,label,split\ni0,positive,examples\n"), "-p", root)
        shown = json.loads(labeler("prompt", "show", "--item", "i3", "--json", "-p", root).stdout)
        assert shown["version"] == "v1" and shown["messages"][-1]["content"] == "<item>\ntext: item 3 is positive\n</item>"
        assert [m["role"] for m in shown["messages"]] == ["system", "user", "assistant", "user"]
        assert labeler("prompt", "show", "--completion", "-p", root).stdout.rstrip().endswith("Label:")
        assert json.loads(labeler("prompt", "list", "--json", "-p", root).stdout)["current"] == "v1"
        calibration = json.loads(labeler("calibrate", "--json", "-p", root).stdout)
        assert "at least 20 are needed" in calibration["reason"]
        ran = json.loads(labeler("run", "--limit", "5", "--json", "-p", root).stdout)
        assert ran["items"] == 5 and ran["annotators"][0]["voted"] == 5
        assert ran["decisions"] == {"needs_review": 5}
        human = labeler("run", "-p", root)
        assert "no automatic labels" in human.stderr and "needs_review 11" in human.stdout
