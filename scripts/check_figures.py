"""Check that every measured figure README.md and docs/ quote is in the results file it names, and that file names its machine.

What counts as a figure block:
- a Markdown table with a cell that is a number (bold, or with a unit, allowed);
- a paragraph or list item with a measured quantity: a rate (tokens/s, summaries/s, rows/s, req/s,
  GFLOP/s), a GiB figure, a ratio (2.7x), a duration in min or h, "about N <unit>", "took N", "ROUGE-L N",
  "scored N", "Measured" or "measured on/at/in one/N".
Such a block names its source, `benchmarks/results/NAME.json`: in a "Source:" paragraph right after
a table, in the paragraph or list item that introduces it, or in the block itself; that file names
its machine (names_its_machine). Every number in the block must be one of the file's numbers
(numbers inside its strings count too), printed as
- the value rounded to the printed decimals (1,234 reads as 1234);
- with %, the value or 100x the value; with GiB, bytes / 2**30; with MB, bytes / 10**6 or 2**20;
  with GFLOP, FLOPs / 10**9; with k, thousands (12.5k); with min, minutes or seconds / 60; "3 min 12 s" as
  192 (seconds) and "1 h 55 min" as 115 min; a bare number in a table column takes the unit its header names;
- with x, the ratio of two values under the same key (classic.real_tokens_per_second / peftlab.real_tokens_per_second)
  or in the same object (summaries_per_second.continuous / summaries_per_second.static).
Not figures (no check): numbers in `code`, inside a word (SmolLM2-135M, Q4_1, 2-core, AVX-512), versions
(5.24.0, "peft 0.21"), years after "et al.", the 95% of an interval, a setting's value right after its
`name` ("`--body-timeout`, 30 s", "(default 32)"), and numbers that the block's `command` also holds.
Tables between <!-- results:NAME --> markers are rendered from their file (scripts/render_results.py)
and docs/reference/ is generated from the code: both are skipped here.

Run: python scripts/check_figures.py   (prints one line per problem; exit 1 when there is one)
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = "benchmarks/results"
FIX = ("fix: run the benchmark so it writes benchmarks/results/NAME.json with write_results (benchmarks/machine.py) "
       "and name it in a 'Source:' line, render the table from it (scripts/render_results.py), or remove the figure")

NUMBER = re.compile(r"(?<![\w.])(?P<core>[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:e-?\d+)?)(?:\s*(?:%|GiB|MB|GFLOP|min(?:utes)?(?!\w)|k(?!\w)|x(?!\w)))?(?!\w)")
DURATION = re.compile(r"(?<![\w.])(?:(?P<hours>\d+) h (?P<minutes>\d+) min|(?P<whole_minutes>\d+) min (?P<seconds>\d+) s)(?!\w)")
SOURCE = re.compile(RESULTS_DIR + r"/([\w.-]+\.json)")
MEASURED = re.compile(r"\d\s*(?:tokens/s|tok/s|summaries/s|rows/s|req/s|requests/s|GFLOP/s|GiB\b|x\b|min\b|minutes\b|h\b)"
                      r"|\babout \d[\d.,]*\s*(?:s|ms|MB|GB)\b|\btook (?:about )?\d|\bMeasured\b|\bmeasured (?:on|at|in one|\d)|\bROUGE(?:-\w+)? \d|\bscored \d")
UNITS = {"%": [1, 100], "GiB": [1, 2**-30], "MB": [1, 1e-6, 2**-20], "GFLOP": [1, 1e-9], "k": [1, 1e-3], "min": [1, 1 / 60],
         "x": [1]}  # printed = value * scale
CODE = re.compile(r"`[^`]*`")
NOT_FIGURES = [
    re.compile(r"\b\d+\.\d+\.\d+\b"),                                              # versions
    re.compile(r"\b(?:torch|transformers|peft|accelerate|datasets|bitsandbytes|gguf|Python|numpy) \d+(?:\.\d+)?"),
    re.compile(r"et al\. \d{4}"), re.compile(r"\b\d{4}-\d\d-\d\d\b"),               # citations, dates
    re.compile(r"\b95%"),                                                           # the confidence level of an interval
    re.compile(r"(?:(?<=`, )|(?<=` \()|(?<=\(default ))[-+]?\d[\d.,]*(?:e-?\d+)?(?:\s*[A-Za-z]+)?"),  # a setting's value after its name
    re.compile(r"\d+-(?=[A-Za-z])"), re.compile(r"(?<![\d.]e-)(?<=[A-Za-z]-)\d+"),             # 2-core, 240-token, AVX-512
]


@dataclass
class Block:
    page: str
    line: int
    text: str
    is_table: bool


def _kind(stripped: str) -> str:
    if not stripped:
        return "blank"
    if stripped.startswith("#"):
        return "heading"
    if stripped.startswith("|"):
        return "table"
    return "item" if re.match(r"[-*] |\d+\. ", stripped) else "text"


def blocks(text: str, page: str) -> list[Block]:
    """Paragraphs, list items (with their indented lines), tables and headings (empty blocks, so that
    nothing is looked up across them) outside fenced code and rendered results, with their first line."""
    found: list[Block] = []
    current: list[str] = []
    start, kind, fenced, rendered = 0, "", False, False

    def close() -> None:
        if current:
            found.append(Block(page, start, "\n".join(current), kind == "table"))
            current.clear()

    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```") or re.match(r"<!-- /?results:", stripped):
            close()
            fenced = not fenced if stripped.startswith("```") else fenced
            rendered = stripped.startswith("<!-- results:") or (rendered and not stripped.startswith("<!-- /results:"))
            continue
        if fenced or rendered:
            continue
        line_kind = _kind(stripped)
        if line_kind in ("blank", "heading", "item") or (line_kind == "table") != (kind == "table"):
            close()
            kind = line_kind
        if line_kind == "heading":
            found.append(Block(page, number, "", False))
        elif line_kind != "blank":
            start = start if current else number
            current.append(line)
    close()
    return found


def _blank(match: re.Match) -> str:
    """The match replaced by spaces, newlines kept, so positions still give line numbers."""
    return re.sub(r"[^\n]", " ", match.group(0))


def figures(text: str) -> list[tuple[int, str]]:
    """(line offset, number) for each figure of a block, the number with its unit (one of UNITS) when it has one."""
    command_numbers = set(re.findall(r"\d[\d.]*", " ".join(CODE.findall(text))))
    for pattern in NOT_FIGURES:  # before the code is blanked: a setting's value is recognised by its `name`
        text = pattern.sub(_blank, text)
    text = CODE.sub(_blank, text).replace("**", "  ")
    units = table_units(text)
    found = durations(text)
    text = DURATION.sub(_blank, text)
    for match in NUMBER.finditer(text):
        if match.group("core").lstrip("+-") in command_numbers:
            continue
        figure, line_start = match.group(0).replace(" ", "").replace("minutes", "min"), text.rfind("\n", 0, match.start()) + 1
        if units and figure == match.group("core"):  # a bare number in a table takes its column's unit
            figure += units.get(text.count("|", line_start, match.start()), "")
        found.append((text.count("\n", 0, match.start()), figure))
    return found


def durations(text: str) -> list[tuple[int, str]]:
    """(line offset, figure) per two-part duration: "1 h 55 min" reads as 115min, "3 min 12 s" as 192 (seconds)."""
    found = []
    for match in DURATION.finditer(text):
        hours, minutes, whole_minutes, seconds = (int(group or 0) for group in match.group("hours", "minutes", "whole_minutes", "seconds"))
        figure = f"{60 * hours + minutes}min" if match.group("hours") else str(60 * whole_minutes + seconds)
        found.append((text.count("\n", 0, match.start()), figure))
    return found


def table_units(text: str) -> dict[int, str]:
    """Column number -> the unit its header names (peak GiB, stored MB, trainable %), for a table."""
    if not text.lstrip().startswith("|"):
        return {}
    header = text.lstrip().splitlines()[0].strip().split("|")
    return {column: unit for column, name in enumerate(header) for unit in UNITS
            if unit != "x" and re.search(rf"(?<!\w){re.escape(unit)}(?!\w)", name) and "95%" not in name}


def is_figure_block(block: Block) -> bool:
    if block.is_table:
        cells = [cell.strip().strip("*").strip() for row in block.text.splitlines()[2:] for cell in row.strip().strip("|").split("|")]
        return any(NUMBER.fullmatch(cell) for cell in cells)
    return bool(MEASURED.search(CODE.sub(" ", block.text)))


def _number(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def flatten(value, path: tuple = ()) -> list[tuple[tuple, float]]:
    """Every number of a results file with its key path; numbers written inside strings count too."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [(path, float(value))]
    if isinstance(value, str):
        numbers = [_number(token) for token in re.findall(r"\d[\d,]*(?:\.\d+)?(?:e-?\d+)?", value)]
        numbers += [float(figure.removesuffix("min")) for _, figure in durations(value)]  # "1 h 55 min" holds 115
        return [(path, number) for number in numbers if number is not None]
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in flatten(item, (*path, str(key)))]
    return [pair for item in value for pair in flatten(item, path)]


def printed_as(value: float, printed: str) -> bool:
    """The value, sign aside, rounded as printed: to its decimals, or to its digits in 1.6e-4 notation."""
    value, target = abs(value), abs(float(printed.replace(",", "")))
    if "e" in printed.lower():
        digits = len(printed.lower().split("e")[0].split(".")[1]) if "." in printed else 0
        return f"{value:.{digits}e}" == f"{target:.{digits}e}"
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(round(value, decimals) - target) < 1e-9 * max(1.0, target)


def found_in(figure: str, numbers: list[tuple[tuple, float]]) -> bool:
    unit = next((u for u in UNITS if figure.endswith(u)), "")
    printed = figure[: len(figure) - len(unit)]
    scales = UNITS.get(unit, [1])
    if any(printed_as(value * scale, printed) for _, value in numbers for scale in scales):
        return True
    if unit == "x":
        groups: dict[tuple, list[float]] = {}  # values under the same key (a.rate, b.rate) or in the same object (rate.a, rate.b)
        for path, value in numbers:
            groups.setdefault(("key", *path[-1:]), []).append(value)
            groups.setdefault(("object", *path[:-1]), []).append(value)
        return any(printed_as(a / b, printed) for values in groups.values() for a in values for b in values if b)
    return False


def names_its_machine(result: dict) -> bool:
    """write_results' machine (CPU model and flags, bf16, libraries), or what an older or transcribed
    file recorded of it with a note that says what is missing ("transcribed" or "machine_note")."""
    machine = result.get("machine")
    if isinstance(machine, dict) and machine.get("cpu"):
        return True
    return bool(machine) and bool(result.get("transcribed") or result.get("machine_note"))


def sources_of(found: list[Block], index: int) -> list[str]:
    """The results files a block names: its own; for a table, a "Source:" paragraph right after it or the
    paragraph that introduces it; for a list item's text after its table, also the item's."""
    block, own = found[index], set(SOURCE.findall(found[index].text))
    after = found[index + 1].text.strip() if index + 1 < len(found) else ""
    if block.is_table and after.startswith("Source:"):
        return sorted(own | set(SOURCE.findall(after)))
    if block.is_table and not own or block.text[:1].isspace():  # a table's intro; an indented item's own text
        before = index - 1
        while before >= 0 and found[before].is_table:
            before -= 1
        own |= set(SOURCE.findall(found[before].text)) if before >= 0 else set()
    return sorted(own)


def problems_in(page: Path) -> list[str]:
    return problems_in_text(page.read_text(encoding="utf-8"), str(page.relative_to(ROOT)))


def problems_in_text(text: str, name: str) -> list[str]:
    """One line per figure block without a source, per source without a machine, per number its source lacks."""
    found = blocks(text, name)
    problems = []
    for index, block in enumerate(found):
        if not is_figure_block(block):
            continue
        sources = sources_of(found, index)
        if not sources:
            problems.append(f"{name}:{block.line}: measured figures without a source ({block.text.strip()[:60]!r}...); {FIX}")
            continue
        numbers, bad_source = [], False
        for source in sources:
            path = ROOT / RESULTS_DIR / source
            result = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            if not isinstance(result, dict) or not names_its_machine(result):
                problems.append(f"{name}:{block.line}: {RESULTS_DIR}/{source} is missing or names no machine; {FIX}")
                bad_source = True
                continue
            numbers += flatten(result)
        if bad_source:
            continue
        for offset, figure in figures(block.text):
            if not found_in(figure, numbers):
                problems.append(f"{name}:{block.line + offset}: {figure} is not in {', '.join(sources)}; {FIX}")
    return problems


def pages() -> list[Path]:
    docs = [page for page in sorted((ROOT / "docs").rglob("*.md")) if "reference" not in page.relative_to(ROOT / "docs").parts]
    return [ROOT / "README.md", *docs]


def problems() -> list[str]:
    return [problem for page in pages() for problem in problems_in(page)]


def main() -> int:
    found = problems()
    print("\n".join(found) or "every quoted figure is in the results file it names")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
