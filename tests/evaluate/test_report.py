"""The HTML page and text tables: self-contained, escaped, and torch-free."""

import subprocess
import sys

from peftlab.report.html import evaluation_page
from peftlab.report.tables import confusion_table, scores_table, samples_text

RESULTS = {
    "base": {"rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.15, "rougeLsum": 0.15, "summaries_per_second": 1.5},
    "tuned": {"rouge1": 0.5, "rouge2": 0.3, "rougeL": 0.45, "rougeLsum": 0.45, "summaries_per_second": 1.4},
}
RECORDS = [{
    "where": f"test.jsonl line {i}", "input": "Summarize <b>this</b>", "references": ["A & B talk."],
    "predictions": {"base": "Some <script>x</script>", "tuned": "A and B talk."},
    "scores": {"base": {"rougeL": 0.1}, "tuned": {"rougeL": 0.8}},
} for i in range(1, 5)]


def test_table_shows_percent_and_gain():
    table = scores_table(RESULTS)
    assert "ROUGE-L" in table and "20.00" in table and "50.00" in table and "+30.00" in table
    accuracy = scores_table({"base": {"accuracy": 0.25, "summaries_per_second": 1}, "tuned": {"accuracy": 0.75, "summaries_per_second": 1}},
                            {"accuracy": "accuracy"})
    assert "accuracy" in accuracy and "ROUGE" not in accuracy and "+50.00" in accuracy


def test_confusion_table_counts_true_rows_against_predicted_columns():
    table = confusion_table({"greeting": {"greeting": 3, "travel": 1, "(other)": 0}, "travel": {"greeting": 0, "travel": 2, "(other)": 5}})
    header, greeting, travel = table.splitlines()
    assert header.split()[1:] == ["greeting", "travel", "(other)"]
    assert greeting.split() == ["greeting", "3", "1", "0"] and travel.split() == ["travel", "0", "2", "5"]


def test_samples_side_by_side():
    text = samples_text(RECORDS, 2)
    assert text.count("reference:") == 2 and "tuned:" in text and "base:" in text


def test_page_is_self_contained_and_escaped():
    page = evaluation_page("demo", {"model": "tiny"}, RESULTS, RECORDS)
    assert "<script>" not in page and "&lt;script&gt;" in page and "A &amp; B" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "+30.00" in page


def test_report_never_imports_torch():
    code = "import sys, peftlab.report.html, peftlab.report.tables; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
