from pathlib import Path

import pytest

from labeler.config import find_project_dir, load_project, parse_project_file
from labeler.errors import LabelerError
from tests.conftest import write_project


def _errors(tmp_path, text: str) -> str:
    path = tmp_path / "labeler.yaml"
    path.write_text(text)
    with pytest.raises(LabelerError) as info:
        parse_project_file(path)
    return str(info.value)


def test_valid_file_loads_with_defaults(tmp_path):
    project = load_project(write_project(tmp_path / "p"))
    assert project.config.label_names == ["positive", "negative", "neutral"]
    assert project.config.routing.target_accuracy == 0.9
    assert project.config.routing.confidence == 0.9  # the default
    assert project.config.annotators[0].kind == "model"


def test_every_problem_is_reported_with_path_and_line(tmp_path):
    message = _errors(
        tmp_path,
        "name: x\n"
        "labels:\n"
        "  a: first\n"
        "  b: second\n"
        "annotators:\n"
        "  - name: one\n"
        "    kind: llm\n"
        "    temprature: 0.5\n"
        "  - name: two\n"
        "    kind: robot\n"
        "routing:\n"
        "  target_accuracy: 1.5\n",
    )
    assert "4 problem(s)" in message
    assert "annotators.0.temprature (line 8): Extra inputs are not permitted" in message
    assert "annotators.0.model (line 6): Field required" in message
    assert "annotators.1" in message and "robot" in message
    assert "routing.target_accuracy (line 12)" in message


def test_missing_keys_point_at_their_parent(tmp_path):
    message = _errors(tmp_path, "name: x\nannotators: []\n")
    assert "labels" in message and "Field required" in message


def test_repeated_annotator_names_are_refused(tmp_path):
    message = _errors(
        tmp_path,
        "name: x\nlabels: {a: one, b: two}\nannotators:\n  - {name: m, kind: model}\n  - {name: m, kind: model}\n",
    )
    assert "repeated: m" in message


def test_integer_labels_become_strings(tmp_path):
    path = tmp_path / "labeler.yaml"
    path.write_text("name: x\nlabels: {0: different, 1: same}\n")
    assert parse_project_file(path).label_names == ["0", "1"]


def test_one_label_is_not_a_task(tmp_path):
    assert "labels" in _errors(tmp_path, "name: x\nlabels: {a: one}\n")


def test_broken_yaml_is_reported(tmp_path):
    assert "not valid YAML" in _errors(tmp_path, "name: [x\n")


def test_project_found_from_a_subfolder(tmp_path, monkeypatch):
    root = write_project(tmp_path / "p")
    deep = root / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_project_dir() == root.resolve()


def test_no_project_anywhere_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabelerError, match="labeler init"):
        find_project_dir()
    with pytest.raises(LabelerError, match="no labeler.yaml"):
        find_project_dir(Path(tmp_path))
