"""The `labeler` command as a user runs it: a real process, a real project folder."""

import json
import os
import re
import subprocess
import sys

import pytest

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


@pytest.mark.once
def test_demo_runs_the_whole_loop_with_the_embedded_annotators(tmp_path):
    """The README's first command: no key, no network; most new items labeled automatically with the
    guarantee holding on the answer key, the rest waiting for review, and the way to look at them."""
    human = labeler("demo", cwd=tmp_path, env={"COLUMNS": "80"})
    root = tmp_path / "labeler-demo"  # the default folder, in the current one
    tail = human.stdout[human.stdout.index("Look at the result"):]
    assert "cd labeler-demo" in tail and "labeler serve" in tail and "labeler eval --report eval.html" in tail
    password = re.search(r"log in as demo / (\S+)", tail).group(1)
    assert "labeled automatically" in human.stdout and "wait for review" in human.stdout

    from labeler.data.projects import score_against_answers
    from labeler.store.users import authenticate
    from labeler.store.workspace import open_workspace

    status = json.loads(labeler("status", "--json", "-p", root).stdout)
    assert status["items"] == 240 and status["gold"] == {"calibration": 130, "honeypot": 25, "examples": 8}
    assert [a["name"] for a in status["annotators"]] == ["classifier", "gemma"]
    run = json.loads(labeler("calibrate", "--json", "-p", root).stdout)
    assert run["calibrated_accuracy"]["gemma"] > 0.9  # few-shot Gemma on binary sentiment
    key = score_against_answers(root / "labels.jsonl", root / "answers.csv")
    assert key["auto"] >= 0.6 * 77 and key["auto_accuracy"] >= run["target_accuracy"]  # the guarantee held here
    assert status["states"]["needs_review"] == 77 - key["auto"] and status["states"]["unlabeled"] == 0
    rows = [json.loads(line) for line in (root / "labels.jsonl").read_text().splitlines()]
    gemma_votes = [v for r in rows for v in r["votes"] if v["annotator"] == "gemma"]
    assert gemma_votes[0]["version"] == "v1"
    assert sum(v["probs"] is not None for v in gemma_votes) > 0.9 * len(gemma_votes)  # from logprobs
    assert authenticate(open_workspace(root), "demo", password) is not None  # only its hash is stored
    # The next commands run as printed, from the folder it says, with no environment activated.
    command = re.search(r"^  (.+) export -o labels.csv ", tail, re.MULTILINE).group(1)
    bare = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
    ran = subprocess.run(f"{command} export -o labels.csv", shell=True, cwd=root, env=bare, capture_output=True, text=True)
    assert ran.returncode == 0 and (root / "labels.csv").read_text().startswith("id,"), ran.stderr
    again = labeler("demo", cwd=tmp_path, check=False)  # the folder is taken: said so, nothing overwritten
    assert again.returncode == 1 and "already holds a project" in again.stderr


def test_init_takes_fields_and_labels_from_the_users_files(tmp_path):
    items = write_file(tmp_path / "news.csv", "id,headline,body\n1,Rates up,The bank raised rates.\n2,Cup final,A late goal.\n")
    gold = write_file(tmp_path / "gold.csv", "id,label\n1,Business\n2,Sports\n")
    made = labeler("init", tmp_path / "p", "--items", items, "--gold", gold)
    assert "labeler import items" in made.stderr
    labeler("import", "items", items, "-p", tmp_path / "p")  # no "missing field(s) text"
    labeler("import", "gold", gold, "-p", tmp_path / "p")
    from labeler.config import load_project

    config = load_project(tmp_path / "p").config
    assert config.fields == ["headline", "body"] and config.label_names == ["Business", "Sports"]
    one_label = write_file(tmp_path / "one.csv", "id,label\n1,Business\n")
    bad = labeler("init", tmp_path / "q", "--gold", one_label, check=False)
    assert bad.returncode == 1 and "at least two labels" in bad.stderr and not (tmp_path / "q").exists()


def llm_project(root, server, annotator: str):
    """A project (made by `labeler init`) whose one annotator is model `ok` of the local test server."""
    labeler("init", root)
    (root / "labeler.yaml").write_text(
        "name: p\nlabels: {positive: good, negative: bad}\nfields: [text]\nannotators:\n"
        f"  - {{name: {annotator}, kind: llm, model: openai/ok, api_base: '{server.base_url}'}}\n")
    return root


@pytest.mark.once
def test_eval_fits_an_80_column_terminal(tmp_path):
    from tests.llm_server import LLMServer

    with LLMServer() as server:
        root = llm_project(tmp_path / "p", server, "a-rather-long-annotator-name")
        rows = "".join(f"i{n},item {n} is {'positive' if n % 2 else 'negative'}\n" for n in range(30))
        labeler("import", "items", write_file(tmp_path / "i.csv", "id,text\n" + rows), "-p", root)
        gold = "".join(f"i{n},{'positive' if n % 2 else 'negative'}\n" for n in range(30))
        labeler("import", "gold", write_file(tmp_path / "g.csv", "id,label\n" + gold), "-p", root)
        shown = labeler("eval", "-p", root, env={"COLUMNS": "80"}).stdout
    assert "accuracy 1.000" in shown and "recall: positive 1.000 · negative 1.000" in shown
    assert "share at the target in hindsight 1.000 (no guarantee: see calibrate)" in shown  # not a certified share
    assert max(len(line) for line in shown.splitlines()) <= 80 and "…" not in shown


def test_prompt_calibrate_and_run_commands(tmp_path):
    from tests.llm_server import LLMServer

    with LLMServer() as server:
        root = llm_project(tmp_path / "p", server, "gpt")
        items = write_file(tmp_path / "i.csv", "id,text\n" + "".join(f"i{n},item {n} is positive\n" for n in range(12)))
        labeler("import", "items", items, "-p", root)
        labeler("import", "gold", write_file(tmp_path / "g.csv", "id,label,split\ni0,positive,examples\n"), "-p", root)
        shown = json.loads(labeler("prompt", "show", "--item", "i3", "--json", "-p", root).stdout)
        assert shown["version"] == "v1" and shown["messages"][-1]["content"] == "<item>\ntext: item 3 is positive\n</item>"
        assert [m["role"] for m in shown["messages"]] == ["system", "user", "assistant", "user"]
        completion = labeler("prompt", "show", "--completion", "--item", "i3", "-p", root).stdout
        assert completion.rstrip().endswith("Text: item 3 is positive\nLabel:")  # the base model's prompt
        listed = json.loads(labeler("prompt", "list", "--json", "-p", root).stdout)
        assert listed["current"] == "v1" and listed["current_by_template"]["complete.v1"] == "v2"
        calibration = json.loads(labeler("calibrate", "--json", "-p", root).stdout)
        assert "at least 20 are needed" in calibration["reason"]
        ran = json.loads(labeler("run", "--limit", "5", "--json", "-p", root).stdout)
        assert ran["items"] == 5 and ran["annotators"][0]["voted"] == 5
        assert ran["decisions"] == {"needs_review": 5}
        human = labeler("run", "-p", root)
        assert "no automatic labels" in human.stderr and "needs_review 11" in human.stdout


def test_init_prints_next_steps_that_run_as_printed(tmp_path):
    made = labeler("init", tmp_path / "p", "--items", write_file(tmp_path / "i.csv", "id,text\n1,fine\n"))
    step = re.search(r"; (\S+(?: -m labeler\.cli)?) import items (\S+)\.", " ".join(made.stderr.split())).group(0)
    command = step[2:-1]
    bare = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
    ran = subprocess.run(command, shell=True, cwd=tmp_path / "p", env=bare, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr


def test_init_warns_of_rare_labels_and_keeps_honeypots_when_the_gold_has_no_split(tmp_path):
    """A typo `meh` became a label, `cant_tell` from 2 rows too, and all gold calibrated: the honeypot check off."""
    rows = "".join(f"{k},text {k},{'good' if k % 2 else 'bad'}\n" for k in range(200)) + "900,x,meh\n901,y,cant_tell\n902,z,cant_tell\n"
    gold = write_file(tmp_path / "gold.csv", "id,text,label\n" + rows)
    made = labeler("init", tmp_path / "p", "--gold", gold)
    said = " ".join(made.stderr.split())
    assert "rare labels" in said and "'meh' (1 row)" in said and "'cant_tell' (2 rows)" in said and "'good'" not in said
    step = re.search(r"; (\S+(?: -m labeler\.cli)?) import gold (\S+) --honeypot-share 0\.15\.", said).group(0)[2:-1]
    bare = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
    ran = subprocess.run(step, shell=True, cwd=tmp_path / "p", env=bare, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    splits = json.loads(labeler("status", "--json", "-p", tmp_path / "p").stdout)["gold"]
    assert 15 <= splits["honeypot"] <= 50 and splits["honeypot"] + splits["calibration"] == 203
    again = labeler("import", "gold", gold, "--honeypot-share", "0.15", "-p", tmp_path / "p")  # the same splits, by id
    assert json.loads(labeler("status", "--json", "-p", tmp_path / "p").stdout)["gold"] == splits
    other = tmp_path / "q"
    labeler("init", other, "--gold", gold)
    plain = labeler("import", "gold", gold, "-p", other)
    assert "no honeypots" in " ".join(plain.stderr.split()) and "no honeypots" not in again.stderr


def test_the_command_sets_the_collector_for_its_imports(monkeypatch):
    """Python's collector walked the command's imports again and again (a pass every 700 new objects): the
    console script sets a larger first generation before its command runs."""
    import gc

    from labeler import cli, collector

    before = gc.get_threshold()
    monkeypatch.setattr(sys, "argv", ["labeler", "--help"])
    try:
        assert before[0] != collector.FIRST_GENERATION
        with pytest.raises(SystemExit):
            cli.main()
        assert gc.get_threshold() == (collector.FIRST_GENERATION, *before[1:])
    finally:
        gc.set_threshold(*before)
