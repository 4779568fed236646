"""Every tab's benchmark in one command, written as a markdown table into the README.

    python -m bench [--only textgen recommend] [--no-readme]     (or: python bench/run.py)

Runs each ``bench/<name>.py`` that has ``run() -> list[dict]`` (rows with ``tab``, ``case``, ``median_ms``,
``p90_ms`` and ``note``; a new tab's benchmark is picked up by adding that function) with its defaults,
prints the table, and puts it between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in README.md.
A benchmark that fails (e.g. weights not trained yet) is listed under the table instead.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # python bench/run.py
    sys.path.insert(0, str(ROOT))

README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
NOT_TAB_BENCHMARKS = {"__init__", "__main__", "common", "run", "load"}  # load: python -m bench.load


def discover() -> list[str]:
    """The bench modules that expose ``run()``, in name order."""
    names = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.stem in NOT_TAB_BENCHMARKS:
            continue
        if "def run(" in path.read_text():  # cheap check before importing torch-heavy modules
            names.append(path.stem)
    return names


def run_all(names: list[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    rows, failed = [], {}
    for name in names:
        print(f"== bench.{name}", flush=True)
        start = time.time()
        try:
            module_rows = importlib.import_module(f"bench.{name}").run()
        except (Exception, SystemExit) as e:
            traceback.print_exc()
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
            continue
        for r in module_rows:
            print(f"  {r['tab']}: {r['case']}: median {r['median_ms']:.2f} ms")
        rows += module_rows
        print(f"   ({time.time() - start:.0f} s)", flush=True)
    return rows, failed


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(rows: list[dict[str, Any]], failed: dict[str, str], load: float) -> str:
    import torch
    # the vector unit (AVX2 or AVX-512) moves every figure, so the header names it
    lines = [f"Measured {datetime.date.today().isoformat()} with `python -m bench` on {cpu_name()} "
             f"({torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores; 1-minute load average "
             f"{load:.1f} at the start), torch "
             f"{torch.__version__}, CPU only. "
             "Medians (and p90) over repeats after a warm-up; each tab's rows include the baseline it is "
             "compared with, measured in the same run.", "",
             "| tab | case | median ms | p90 ms | note |", "|---|---|---:|---:|---|"]
    for r in rows:
        p90 = f"{r['p90_ms']:.2f}" if r.get("p90_ms") is not None else ""
        lines.append(f"| {r['tab']} | {r['case']} | {r['median_ms']:.2f} | {p90} | {r.get('note', '')} |")
    for name, why in failed.items():
        lines.append(f"\n`bench/{name}.py` did not run: {why}")
    return "\n".join(lines)


def write_readme(table: str, path: Path = README) -> None:
    text = path.read_text()
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise SystemExit(f"error: {path} has no {START} ... {END} block to fill")
    head, rest = text.split(START, 1)
    path.write_text(f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="bench module names (default: every one with run())")
    parser.add_argument("--no-readme", action="store_true",
                        help="print the table, leave README.md alone (implied by --only)")
    args = parser.parse_args()
    names = discover()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise SystemExit(f"error: no benchmark {', '.join(unknown)}; available: {', '.join(names)}")
        names = [n for n in names if n in args.only]
    load = os.getloadavg()[0]  # other jobs on the machine inflate every figure
    rows, failed = run_all(names)
    table = markdown(rows, failed, load)
    print("\n" + table)
    if not args.no_readme and not args.only:
        write_readme(table)
        print(f"\nwrote the table into {README}")
    if failed and not rows:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
