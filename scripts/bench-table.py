#!/usr/bin/env python3
"""Prints the result rows of the scripts/bench-* parts as one table (see bench-lib.sh).

    bench-table.py RESULTS.tsv     the table of every row in the file
    bench-table.py --one ROW       one row, as a part prints it when it is measured

A row is WORK, RATIO, TARGET, OURS, OTHER separated by tabs; OURS and OTHER are
"WALL_S PEAK_RSS_KIB" or "-". The verdict compares RATIO with TARGET ("<= 0.5",
"< 0.05", "keep <= 0.8"; "-" has none).
"""
import re
import sys


def verdict(ratio, target):
    m = re.fullmatch(r"(?:keep\s+)?(<=|<|>=|>)\s*([0-9.]+)", target.strip())
    if not m:
        return ""
    try:
        r, t = float(ratio), float(m.group(2))
    except ValueError:
        return ""
    ok = {"<=": r <= t, "<": r < t, ">=": r >= t, ">": r > t}[m.group(1)]
    return "ok" if ok else "MISSED"


def cells(row):
    f = row.rstrip("\n").split("\t") + ["-"] * 5
    work, ratio, target, ours, other = f[:5]

    def split(x):
        if x.strip() in ("", "-"):
            return "-", "-"
        wall, rss = x.split()
        return f"{float(wall):.3f}", f"{int(rss) / 1024:.1f}"

    (ow, orss), (tw, trss) = split(ours), split(other)
    return [work, ratio, target, verdict(ratio, target), ow, tw, orss, trss]


HEAD = ["work", "ratio", "target", "", "ours s", "theirs s", "ours RSS MiB", "theirs RSS MiB"]


def show(rows):
    table = [HEAD] + [cells(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEAD))]
    for r in table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        c = cells(sys.argv[2])
        print(f"-> {c[0]}: {c[1]} (target {c[2]}) {c[3]}; ours {c[4]} s {c[6]} MiB, theirs {c[5]} s {c[7]} MiB")
    else:
        with open(sys.argv[1]) as fh:
            show([line for line in fh if line.strip()])
