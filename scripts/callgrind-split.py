#!/usr/bin/env python3
"""Splits a callgrind profile's instructions (self cost, Ir) by where the code comes from.

Each cost line is charged to the source file it was compiled from, inlined code included
(callgrind's fi=/fe= records), so a tokio function inlined into ours counts as tokio.
Standard-library code inlined into another crate's function counts as that crate's.
Files map to groups: this crate (its wake-up module apart), the bench, each crates.io
crate, Rust's standard library, and code without line info by its object (libc: malloc,
free, memcpy; the kernel is not seen by valgrind).

Usage: callgrind-split.py callgrind.out.A [callgrind.out.B [OPS]]
With two files, prints B - A per group, divided by OPS if given: take A from a short run
and B from a long one and OPS the difference in operations, for figures per operation.
"""

import re
import sys
from collections import defaultdict

CRATE = re.compile(r"/index\.crates\.io-[^/]+/([A-Za-z0-9_.-]+?)-\d+\.\d+\.\d+[^/]*/")


STD = "rust std/core/alloc (not inlined)"


def group(path, obj):
    if path in ("???", ""):
        base = obj.rsplit("/", 1)[-1]
        return "no line info: " + base
    if "/malloc/" in path:
        return "libc: malloc/free"
    if "/string/" in path:
        return "libc: memcpy/memmove/memcmp"
    if "/nptl/" in path or "/sysdeps/" in path:
        return "libc: other"
    if "/bench/src/" in path:
        return "bench"
    if "/src/wake/" in path:
        return "tokio-redlock: wake"
    if re.search(r"/wt-[^/]+/src/|/work/main/src/", path):
        return "tokio-redlock: other"
    m = CRATE.search(path)
    if m:
        name = m.group(1)
        if name.startswith("futures"):
            return "futures"
        if name.startswith("tokio"):
            return "tokio"
        return name
    if "/rustc/" in path or "/library/" in path:
        return STD
    return "other: " + path


def split(path):
    names = {"fl": {}, "fi": {}, "ob": {}, "fn": {}}
    totals = defaultdict(int)
    obj = fl = cur = ""
    skip_next = False

    def name(kind, value):
        # "(id) name" defines an id, "(id)" reuses it.
        table = names["fi" if kind in ("fi", "fe", "fl") else kind]
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), "???")

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    where = group(cur, obj)
                    # Standard-library code inlined into another crate's function counts
                    # as that crate's work.
                    if where == STD and cur != fl:
                        outer = group(fl, obj)
                        if not outer.startswith(("other", "no line")):
                            where = outer
                    totals[where] += int(parts[1])
                continue
            key, _, value = line.partition("=")
            if key == "ob":
                obj = name("ob", value)
            elif key == "fl":
                fl = cur = name("fl", value)
            elif key in ("fi", "fe"):
                cur = name(key, value)
            elif key == "fn":
                name("fn", value)
                cur = fl
            elif key in ("cob",):
                name("ob", value)
            elif key in ("cfi", "cfl"):
                name("fl", value)
            elif key == "cfn":
                name("fn", value)
            elif key == "calls":
                skip_next = True
    return totals


def main():
    a = split(sys.argv[1])
    b = split(sys.argv[2]) if len(sys.argv) > 2 else None
    ops = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    rows = {k: (b.get(k, 0) - a.get(k, 0)) if b is not None else v for k, v in
            (b or a).items()}
    for k in a:
        rows.setdefault(k, -a[k] if b is not None else a[k])
    total = sum(rows.values())
    for k, v in sorted(rows.items(), key=lambda kv: -kv[1]):
        if abs(v) * 1000 < abs(total):
            continue
        print(f"{v / ops:>14,.0f} {100 * v / total:6.1f} %  {k}")
    print(f"{total / ops:>14,.0f} 100.0 %  total")


if __name__ == "__main__":
    main()
