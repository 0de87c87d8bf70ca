"""The documentation cannot drift: every flag and setting is documented, and the generated reference pages are current."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import check_figures  # noqa: E402
import docs_reference  # noqa: E402

# results written before the benchmarks recorded their machine, quoted nowhere (check_figures refuses a source without its machine); rerun them to drop a name here
LEGACY_RESULTS = {"train_speed_before.json"}


def test_every_flag_of_every_command_says_what_it_does():
    from peftlab.cli import build_parser

    assert docs_reference.undocumented_flags(build_parser()) == []


def test_every_setting_has_a_comment_that_documents_it():
    assert docs_reference.undocumented_settings() == []


def test_the_reference_pages_are_what_the_code_gives():
    """Fails after a flag, setting or method changed without `python scripts/docs_reference.py` being rerun."""
    stale = [name for name, text in docs_reference.pages().items()
             if (docs_reference.PAGES / name).read_text(encoding="utf-8") != text]
    assert not stale, f"rerun python scripts/docs_reference.py: {stale} differ from the code"


def test_a_flag_without_help_is_caught():
    import argparse

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    sub = commands.add_parser("x", help="a command")
    sub.add_argument("--said", help="something")
    sub.add_argument("--silent")
    assert docs_reference.undocumented_flags(parser) == ["peftlab x --silent"]


@pytest.mark.skipif(shutil.which("mkdocs") is None and subprocess.run([sys.executable, "-c", "import mkdocs"]).returncode,
                    reason="mkdocs is not installed (pip install -c constraints.txt -e '.[docs]')")
def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_quoted_results_tables_are_rendered_from_their_results_files():
    """A table between <!-- results:NAME --> markers must be exactly what benchmarks/results/NAME.json gives."""
    import render_results

    assert render_results.stale_pages() == []
    assert "<!-- results:train_speed -->" in (ROOT / "README.md").read_text(encoding="utf-8")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "render_results.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_changed_figure_is_caught():
    import render_results

    page = "<!-- results:train_speed -->\n| a table typed by hand |\n<!-- /results:train_speed -->"
    assert render_results.render(page) != page


def test_every_results_file_names_its_machine():
    results = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    unnamed = [p.name for p in results if not check_figures.names_its_machine(json.loads(p.read_text(encoding="utf-8")))]
    assert not unnamed or set(unnamed) <= LEGACY_RESULTS, f"results files without their machine: {unnamed}"


def test_a_table_is_rendered_from_the_table_its_results_file_holds():
    import render_results

    result = {"table": {"header": ["run", "ROUGE-L"], "rows": [["lora", 24.45]]}, "command": "peftlab compare",
              "machine": "2-core AMD EPYC, AVX2", "transcribed": "from the docs of 2026-12-07"}
    assert render_results.results_table("compare", result).splitlines() == [
        "| run | ROUGE-L |", "|---|---|", "| lora | 24.45 |", "",
        "Source: `benchmarks/results/compare.json` (`peftlab compare`). Machine: 2-core AMD EPYC, AVX2. "
        "Transcribed from the docs of 2026-12-07."]


def test_every_quoted_figure_is_in_the_results_file_it_names():
    problems = check_figures.problems()
    assert not problems, "\n".join(problems)


TRAIN_SPEED_TABLE = """Intro.

| recipe | real tok/s | of limit | peak GiB |
|---|---|---|---|
| classic | 80.5 | 26.9% | {peak} |

Source: `benchmarks/results/train_speed.json`.
"""


def test_a_figure_its_results_file_lacks_is_caught_with_its_line():
    assert check_figures.problems_in_text(TRAIN_SPEED_TABLE.format(peak="10.42"), "page.md") == []
    problems = check_figures.problems_in_text(TRAIN_SPEED_TABLE.format(peak="10.43"), "page.md")
    assert len(problems) == 1 and problems[0].startswith("page.md:5: 10.43GiB is not in train_speed.json; fix: ")


def test_durations_percentages_and_ratios_are_read_as_printed():
    numbers = check_figures.flatten({"seconds": 191.7, "share": 0.269, "a": {"rate": 216.3}, "b": {"rate": 80.5}})
    printed = [figure for _, figure in check_figures.figures("3 min 12 s, 3.2 min, 26.9%, 2.7x; 3 min 13 s, 27.0%, 2.6x")]
    assert printed == ["192", "193", "3.2min", "26.9%", "2.7x", "27.0%", "2.6x"]
    assert [check_figures.found_in(figure, numbers) for figure in printed] == [True, False, True, True, True, False, False]


def test_a_measured_figure_without_a_source_is_caught():
    problems = check_figures.problems_in_text("Intro.\n\n- peftlab trains at 216.3 tokens/s here.\n", "page.md")
    assert len(problems) == 1 and problems[0].startswith("page.md:3: measured figures without a source")
    sourced = "- peftlab trains at 216.3 tokens/s, 2.7x the classic recipe (`benchmarks/results/train_speed.json`).\n"
    assert check_figures.problems_in_text(sourced, "page.md") == []


def test_a_source_without_its_machine_is_caught(tmp_path, monkeypatch):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "bare.json").write_text('{"tokens_per_second": 216.3, "machine": {"cpus": 2}}')
    monkeypatch.setattr(check_figures, "ROOT", tmp_path)
    problems = check_figures.problems_in_text("- 216.3 tokens/s (`benchmarks/results/bare.json`).\n", "page.md")
    assert len(problems) == 1 and "bare.json is missing or names no machine" in problems[0]
