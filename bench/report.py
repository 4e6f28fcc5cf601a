#!/usr/bin/env python3
"""Aggregate bench JSON lines into one table (stdlib only).

Usage: report.py [--json] [FILE]   (reads stdin when FILE is omitted)

Input: one JSON object per line, e.g.
  {"bench": "spawn_join", "impl": "tokio", "unit": "ns/op", "median": 123.4, "runs": 5}
Non-JSON lines are ignored (with a warning on stderr).

--json  re-emit the valid JSON lines unchanged, one per line.
default print a table grouped by bench with a "vs braid" column:
        peer median / braid median for the same bench and unit.
        The Python benches (bench/python/bench.py, names starting with
        "py_") follow the C benches in a section of their own; their braid
        row is the Python binding and the peers are asyncio, uvloop, anyio
        and trio.
"""
import json
import sys


# Units where a larger number is better: rates, "<thing>/s" (msg/s, ops/s,
# ...) or "ops/sec". Every other unit (ns/op, ms, bytes/task, ...) is a cost,
# so lower is better.
def higher_is_better(unit):
    return unit.endswith("/s") or unit.endswith("/sec")


def load(stream):
    rows = []
    for lineno, line in enumerate(stream, 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
            float(row["median"])
            row["bench"], row["impl"], row["unit"]
        except (ValueError, KeyError, TypeError):
            print(f"report.py: ignoring line {lineno}: {line[:80]}", file=sys.stderr)
            continue
        row["_line"] = line
        rows.append(row)
    return rows


def baseline(group):
    """The braid row of a bench group: impl "braid", else the first braid* impl."""
    exact = [r for r in group if r["impl"] == "braid"]
    if exact:
        return exact[0]
    prefixed = [r for r in group if r["impl"].startswith("braid")]
    return prefixed[0] if prefixed else None


def fmt_num(x):
    return f"{x:,.2f}" if abs(x) < 1e6 else f"{x:,.0f}"


PYTHON_PREFIX = "py_"  # bench names of bench/python/bench.py
PYTHON_TITLE = "Python (bench/python): braid's binding vs asyncio, uvloop, AnyIO, Trio"


def table(rows):
    groups = {}
    for r in rows:  # keep first-appearance order of benches
        groups.setdefault(r["bench"], []).append(r)
    native = {b: g for b, g in groups.items() if not b.startswith(PYTHON_PREFIX)}
    python = {b: g for b, g in groups.items() if b.startswith(PYTHON_PREFIX)}

    header = ("bench", "impl", "median", "unit", "vs braid", "better")
    out = []  # rows: a tuple of cells, None (blank line) or a str (section title)
    groups = {**native, **python}  # the C benches first, then the Python ones
    first_python = next(iter(python), None)
    for bench, group in groups.items():
        if bench == first_python and native:
            out.append(PYTHON_TITLE)
        base = baseline(group)
        group.sort(key=lambda r: (r is not base, r["impl"]))
        for i, r in enumerate(group):
            ratio = "-"
            if base and base["unit"] == r["unit"] and float(base["median"]) != 0:
                ratio = f"{float(r['median']) / float(base['median']):.2f}x"
            better = "higher" if higher_is_better(r["unit"]) else "lower"
            # bench name and direction are printed once per group
            out.append((bench if i == 0 else "", r["impl"], fmt_num(float(r["median"])),
                        r["unit"], ratio, better if i == 0 else ""))
        out.append(None)  # blank line between groups

    cells = [row for row in out if isinstance(row, tuple)]
    widths = [max(len(header[i]), *(len(row[i]) for row in cells))
              for i in range(len(header))]
    right = {2, 4}  # right-align the numbers

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    print(line(header))
    print(line(tuple("-" * w for w in widths)))
    for row in out:
        if isinstance(row, str):  # a section title
            print(row)
            print("-" * len(row))
        else:
            print(line(row) if row else "")
    print("vs braid = peer median / braid median (same bench and unit).")
    print("Units other than */s are costs (lower is better): a ratio > 1 means braid wins;")
    print("for throughput units (*/s, higher is better) a ratio > 1 means the peer wins.")
    if not any(baseline(g) for g in groups.values()):
        print("(no braid results in the input: ratios unavailable)")
    elif python and not any(baseline(g) for g in python.values()):
        print("(no braid results for the Python benches: their ratios are unavailable)")


def main(argv):
    as_json = "--json" in argv
    files = [a for a in argv if a != "--json"]
    if any(a.startswith("-") for a in files) or len(files) > 1:
        print(__doc__, file=sys.stderr)
        return 2
    if files:
        with open(files[0]) as f:
            rows = load(f)
    else:
        rows = load(sys.stdin)
    if as_json:
        for r in rows:
            print(r["_line"])
    else:
        table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
