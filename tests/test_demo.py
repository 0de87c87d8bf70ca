"""`peftlab demo`: the shipped demo data, and the whole flow (base eval, train, tuned eval, page) on a tiny model."""

import json
from pathlib import Path

from peftlab.cli import main
from peftlab.demo import DEMO_TEST, DEMO_TRAIN
from peftlab.demo.make_data import make_rows
from tests.conftest import TOY_ROWS, write_jsonl


def test_demo_data_ships_and_is_reproducible():
    train = [json.loads(line) for line in Path(DEMO_TRAIN).read_text().splitlines()]
    test = [json.loads(line) for line in Path(DEMO_TEST).read_text().splitlines()]
    assert train == make_rows(len(train), 1) and test == make_rows(len(test), 2)
    assert all("synthetic" in row["source"] for row in train + test)
    assert not {row["dialogue"] for row in train} & {row["dialogue"] for row in test}


def test_the_wheel_ships_every_data_file_the_package_reads(tmp_path):
    """Build the wheel a user would install and look inside: the demo data and compare's general text travel with it."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # a copy, so the build writes nothing into the checkout
    shutil.copytree(root / "peftlab", source / "peftlab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "wheel").glob("peftlab-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    data_files = {str(path.relative_to(root)) for path in (root / "peftlab").rglob("*")
                  if path.is_file() and path.suffix in (".jsonl", ".md", ".json", ".yaml")}
    assert data_files and data_files <= inside, sorted(data_files - inside)
    assert {"peftlab/demo/data/train.jsonl", "peftlab/demo/data/test.jsonl", "peftlab/compare/general_text.jsonl"} <= inside


def test_demo_flow_on_user_data(tiny_llama, tmp_path, capsys):
    data = write_jsonl(tmp_path / "mine.jsonl", [{"text": r["dialogue"], "label": r["summary"]} for r in TOY_ROWS * 5])
    out = tmp_path / "demo"
    args = ["demo", "--model", tiny_llama, "--data", str(data), "--columns", "prompt=text,response=label",
            "--dtype", "fp32", "--max-steps", "2", "--batch-size", "2", "--max-new-tokens", "4", "--output", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "gain" in printed and "tuned:" in printed
    results = json.loads((out / "demo.json").read_text())["results"]
    assert set(results) == {"base", "tuned"}
    assert len((out / "data" / "test.jsonl").read_text().splitlines()) == 2  # the last 10% held out
    page = (out / "report.html").read_text()
    assert "peftlab demo" in page and "ROUGE-1" in page
    # a second run needs --overwrite, and gets it
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
