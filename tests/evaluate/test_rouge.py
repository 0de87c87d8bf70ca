"""Our ROUGE: hand-worked values, and what the `evaluate` library's `rouge` metric computes.

`evaluate.load("rouge")` fetches its script from the hub, which tests cannot reach, so
`evaluate_rouge` below repeats that script's computation (metrics/rouge/rouge.py in
huggingface/evaluate: a RougeScorer, `score_multi` when references are lists, then either
per-example F1 lists (use_aggregator=False) or a BootstrapAggregator's mid F1) with
rouge_score directly; our mean is compared with its default bootstrap "mid", to within
resampling noise. That comparison only shows we aggregate as `evaluate` does: the values
themselves are checked against ROUGE worked out by hand.
"""

import numpy as np
import pytest
from rouge_score import rouge_scorer, scoring

from peftlab.evaluate.metrics import mean_scores
from peftlab.evaluate.metrics.rouge import ROUGE_TYPES, example_scores

PREDICTIONS = [
    "Ms. Dawson writes a memo banning instant messaging at the office.",
    "Steven agrees to talk to his wife about the divorce.",
    "They are running late for the train and take a taxi.",
    "",
]
REFERENCES = [
    ["Ms. Dawson helps #Person1# to write a memo to inform every employee that they have to change the communication method.",
     "In order to prevent employees from wasting time on Instant Message programs, #Person1# decides to change the policy."],
    ["#Person1# is begging Steven to persuade his wife not to divorce him. Steven agrees.",
     "Steven agrees to help #Person1# persuade his wife."],
    ["Two friends run to catch the train.\nThey take a cab.", "They were late, so they took a taxi to the station."],
    ["Nothing was said."],
]


def evaluate_rouge(predictions, references, use_aggregator):
    """The `evaluate` rouge metric's _compute with use_stemmer=True, as that script does it."""
    multi_ref = isinstance(references[0], list)
    scorer = rouge_scorer.RougeScorer(rouge_types=list(ROUGE_TYPES), use_stemmer=True, tokenizer=None)
    aggregator, scores = scoring.BootstrapAggregator(), []
    for ref, pred in zip(references, predictions):
        score = scorer.score_multi(ref, pred) if multi_ref else scorer.score(ref, pred)
        aggregator.add_scores(score) if use_aggregator else scores.append(score)
    if use_aggregator:
        return {key: value.mid.fmeasure for key, value in aggregator.aggregate().items()}
    return {key: [score[key].fmeasure for score in scores] for key in scores[0]}


# Worked by hand from ROUGE's definitions (Lin 2004): lower-cased words, Porter stems, F1 of
# unigram / bigram overlap, of the longest common subsequence (L), and of the union LCS over
# newline-separated sentences (Lsum).
HAND_WORKED = [
    # 6 words each, 5 shared (the x2, cat, on, mat); bigrams: 3 of 5 shared; LCS "the cat on the mat" = 5
    ("the cat sat on the mat", ["the cat is on the mat"], (5 / 6, 3 / 5, 5 / 6, 5 / 6)),
    # the best reference counts: 4 of 4 predicted words in 6 ("agrees" -> "agre" both sides): P 1, R 2/3;
    # bigrams 3 of 3 against 5: P 1, R 3/5
    ("steven agrees to help", ["the weather is fine", "Steven agrees to help his friend"], (0.8, 0.75, 0.8, 0.8)),
    ("", ["Nothing was said."], (0.0, 0.0, 0.0, 0.0)),
    # sentences swapped: LCS over the whole text keeps only "they take a cab" (4 of 7), Lsum matches each sentence
    ("They take a cab.\nThey were late.", ["They were late.\nThey take a cab."], (1.0, 5 / 6, 4 / 7, 1.0)),
]


@pytest.mark.parametrize("prediction, references, expected", HAND_WORKED)
def test_scores_equal_hand_worked_values(prediction, references, expected):
    scores = example_scores([prediction], [references])[0]
    assert [scores[name] for name in ROUGE_TYPES] == pytest.approx(list(expected), abs=1e-12)


def test_mean_is_over_examples():
    predictions = [case[0] for case in HAND_WORKED]
    mean = mean_scores(example_scores(predictions, [case[1] for case in HAND_WORKED]))
    for index, name in enumerate(ROUGE_TYPES):
        assert mean[name] == pytest.approx(sum(case[2][index] for case in HAND_WORKED) / len(HAND_WORKED), abs=1e-12)


def test_mean_is_the_bootstrap_mid_up_to_noise():
    np.random.seed(0)
    ours = mean_scores(example_scores(PREDICTIONS, REFERENCES))
    theirs = evaluate_rouge(PREDICTIONS, REFERENCES, use_aggregator=True)
    for name in ROUGE_TYPES:
        assert ours[name] == pytest.approx(theirs[name], abs=0.03)


def test_multi_reference_takes_the_best_reference_per_example():
    one = example_scores(["steven agrees to help"], [["the weather is fine", "Steven agrees to help his friend"]])[0]
    best = example_scores(["steven agrees to help"], [["Steven agrees to help his friend"]])[0]
    assert one == best and one["rouge1"] > 0.5


def test_stemming_and_case():
    scores = example_scores(["The dogs Running"], [["the dog runs"]])[0]
    assert scores["rouge1"] == pytest.approx(1.0)
    assert example_scores(["x"], [["y"]])[0]["rougeL"] == 0.0
