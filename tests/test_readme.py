"""The README's figures come from the files the benchmarks wrote: its real-data tables are what
`python benchmarks/real.py --table` prints from benchmarks/results/real.json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "<!-- real-data table: python benchmarks/real.py --table -->"


def _real():
    spec = importlib.util.spec_from_file_location("bench_real", ROOT / "benchmarks" / "real.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_real_data_tables_are_real_json():
    real = _real()
    results = json.loads((ROOT / "benchmarks" / "results" / "real.json").read_text())
    expected = real.table(results) + "\n\n" + real.comparison_table(results)
    readme = (ROOT / "README.md").read_text()
    assert MARK in readme, "the README lost its real-data table (python benchmarks/real.py --table prints it)"
    after = readme.split(MARK, 1)[1].lstrip("\n")
    assert after.startswith(expected + "\n"), "README real-data table differs from benchmarks/real.py --table"
    assert {r["corpus"] for r in results["rows"]} >= {"ravdess", "ravdess-2emo", "meld"}
