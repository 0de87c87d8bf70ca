"""The HTML page and text tables: self-contained, escaped, and torch-free."""

import subprocess
import sys

from peftlab.report.html import evaluation_page
from peftlab.report.tables import rouge_table, samples_text

RESULTS = {
    "base": {"rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.15, "rougeLsum": 0.15, "summaries_per_second": 1.5},
    "tuned": {"rouge1": 0.5, "rouge2": 0.3, "rougeL": 0.45, "rougeLsum": 0.45, "summaries_per_second": 1.4},
}
RECORDS = [{
    "where": f"test.jsonl line {i}", "input": "Summarize <b>this</b>", "references": ["A & B talk."],
    "predictions": {"base": "Some <script>x</script>", "tuned": "A and B talk."},
    "rouge": {"base": {"rougeL": 0.1}, "tuned": {"rougeL": 0.8}},
} for i in range(1, 5)]


def test_table_shows_percent_and_gain():
    table = rouge_table(RESULTS)
    assert "20.00" in table and "50.00" in table and "+30.00" in table


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
