"""Every metric on hand-worked examples, and each one's failure as one clear line."""

from __future__ import annotations

import sys

import pytest

from peftlab.errors import PeftlabError
from peftlab.cli.commands import metric_names
from peftlab.cli.options import build_parser
from peftlab.evaluate.metrics import ScoringContext, resolve_metrics, score_all
from peftlab.evaluate.metrics.exact import confusion

NO_CONTEXT = ScoringContext()


def scores(name: str, predictions: list[str], references: list[list[str]]) -> list[dict[str, float]]:
    return score_all(resolve_metrics([name]), predictions, references, NO_CONTEXT)


def test_names_split_on_commas_and_default_to_rouge():
    def names(*flags: str) -> list[str]:
        return metric_names(build_parser().parse_args(["eval", "--data", "test.jsonl", *flags]))

    assert names() == ["rouge"]
    assert names("--metric", "exact,f1", "--metric", "chrf") == ["exact", "f1", "chrf"]
    with pytest.raises(PeftlabError, match="unknown metric"):
        resolve_metrics(["bertscore"])


def test_exact_match_after_squad_normalisation():
    got = scores("exact", ["The Cat!", "a dog", "cats", "Paris, France"], [["cat"], ["Dog."], ["cat"], ["London", "paris france"]])
    assert [s["exact"] for s in got] == [1.0, 1.0, 0.0, 1.0]


def test_token_f1_is_squads():
    got = scores("f1", ["the cat sat on the mat", "cat sat", "dog", ""], [["cat sat on mat"], ["cat sat on mat"], ["cat"], [""]])
    # identical after dropping articles; precision 1 and recall 1/2 -> 2/3; nothing shared; two empty answers agree
    assert [s["f1"] for s in got] == pytest.approx([1.0, 2 / 3, 0.0, 1.0])
    best = scores("f1", ["cat sat"], [["dog", "cat sat on mat"]])[0]["f1"]
    assert best == pytest.approx(2 / 3)  # the best of the references


def test_accuracy_reads_the_labels_from_the_data_and_counts_confusions():
    predictions = ["greeting", "Travel.", "travel", "no idea"]
    references = [["greeting"], ["travel"], ["greeting"], ["travel"]]
    assert [s["accuracy"] for s in scores("accuracy", predictions, references)] == [1.0, 1.0, 0.0, 0.0]
    assert confusion(predictions, references) == {"greeting": {"greeting": 1, "travel": 1, "(other)": 0},
                                                  "travel": {"greeting": 0, "travel": 1, "(other)": 1}}


def test_accuracy_refuses_a_label_column_with_one_class():
    with pytest.raises(PeftlabError, match="at least two classes"):
        scores("accuracy", ["a", "a"], [["yes"], ["Yes."]])


def test_chrf_and_bleu_are_sacrebleus_sentence_scores_over_100():
    sacrebleu = pytest.importorskip("sacrebleu")
    same, other = "the cat sat on the mat today", "zzz qqq"  # no character in common
    for name in ("chrf", "bleu"):
        got = [s[name] for s in scores(name, [same, other], [[same], ["the cat sat on the mat today"]])]
        assert got[0] == pytest.approx(1.0) and got[1] == pytest.approx(0.0, abs=0.1)
    partial = scores("chrf", ["the cat sat"], [["the cat sat on the mat"]])[0]["chrf"]
    assert partial == pytest.approx(sacrebleu.sentence_chrf("the cat sat", ["the cat sat on the mat"]).score / 100)
    assert 0 < partial < 1


def test_a_missing_sacrebleu_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # import sacrebleu now raises ImportError
    with pytest.raises(PeftlabError, match="pip install"):
        scores("chrf", ["x"], [["x"]])


def test_json_validity_and_value_match():
    got = scores("json", ['{"b": 2, "a": 1}', '```json\n[1, 2]\n```', "{'a': 1}", "true", '{"a": 1}'],
                 [['{"a": 1, "b": 2}'], ["[1,2]"], ['{"a": 1}'], ["1"], ['{"a": 2}']])
    assert [(s["json_valid"], s["json_exact"]) for s in got] == [(1, 1), (1, 1), (0, 0), (1, 0), (1, 0)]


USER_METRIC = """
def overlap(prediction, references):
    return 1.0 if prediction in references else 0.25

def broken(prediction, references):
    raise ValueError("no luck")

def too_big(prediction, references):
    return 1.5
"""


def test_a_user_function_from_a_file(tmp_path):
    path = tmp_path / "my_metric.py"
    path.write_text(USER_METRIC)
    got = scores(f"python:{path}:overlap", ["a", "b"], [["a"], ["c"]])
    assert got == [{"overlap": 1.0}, {"overlap": 0.25}]
    with pytest.raises(PeftlabError, match=r"raised on test row 1: ValueError: no luck"):
        scores(f"python:{path}:broken", ["a"], [["a"]])
    with pytest.raises(PeftlabError, match=r"returned 1.5 for test row 1; it must return a number in \[0, 1\]"):
        scores(f"python:{path}:too_big", ["a"], [["a"]])
    with pytest.raises(PeftlabError, match="has no function nothing"):
        resolve_metrics([f"python:{path}:nothing"])
    with pytest.raises(PeftlabError, match="cannot import"):
        resolve_metrics(["python:no_such_module_anywhere:f"])
