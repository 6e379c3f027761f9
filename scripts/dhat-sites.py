#!/usr/bin/env python3
"""Allocations per operation by call site, from two valgrind dhat profiles.

Usage: dhat-sites.py SHORT.json OPS_SHORT LONG.json OPS_LONG [TOP]

Per site: (blocks, bytes) of the long run minus the short run, over the difference in
operations, so start-up and warm-up cancel out. A site is the first frame of the stack
outside the allocator and Rust's std/alloc/core (what asked for memory), and, beside it,
the innermost frame of tokio_redlock's own code on the stack (who in this crate caused it).
"""

import json
import re
import sys
from collections import defaultdict

SKIP = re.compile(
    r"^(0x[0-9A-F]+: )?("
    r"malloc|calloc|realloc|free|__rust|__rdl|alloc::|<alloc::|core::|<core::|std::|<std::"
    r"|hashbrown::|<hashbrown::|\?\?\?|_start|main|__libc"
    r")"
)


def std_frame(f):
    """The allocator, or Rust's standard library (inlined or not)."""
    f = re.sub(r"^0x[0-9A-Fa-f]+: ", "", f)
    return bool(SKIP.search(f)) or "library/" in f or f.startswith(("memalign", "posix_memalign"))


def frame_name(f):
    # "0x1234: tokio::runtime::... (file.rs:12:3)" -> "tokio::runtime::... (file.rs:12)"
    f = re.sub(r"^0x[0-9A-Fa-f]+: ", "", f)
    f = re.sub(r"\(in [^)]*\)", "", f)
    f = re.sub(r"/[^ ]*/([^/ ]+\.rs):(\d+):\d+", r"\1:\2", f)
    f = re.sub(r"::h[0-9a-f]{16}", "", f)
    return f.strip()


def load(path):
    d = json.load(open(path))
    ftbl = d["ftbl"]
    sites = defaultdict(lambda: [0, 0])
    ours = defaultdict(lambda: [0, 0])
    total = [0, 0]
    for pp in d["pps"]:
        frames = [ftbl[i] for i in pp["fs"]]
        outside = [frame_name(f) for f in frames if not std_frame(f)]
        site = " < ".join(outside[:3]) or "?"
        mine = next((frame_name(f) for f in frames if "tokio_redlock" in f), "(no tokio_redlock frame)")
        for table, key in ((sites, site), (ours, mine)):
            table[key][0] += pp["tbk"]
            table[key][1] += pp["tb"]
        total[0] += pp["tbk"]
        total[1] += pp["tb"]
    return sites, ours, total


def diff(a, b, ops):
    out = {}
    for k in set(a) | set(b):
        blocks = (b.get(k, [0, 0])[0] - a.get(k, [0, 0])[0]) / ops
        size = (b.get(k, [0, 0])[1] - a.get(k, [0, 0])[1]) / ops
        out[k] = (blocks, size)
    return out


def main():
    short, n_short, long_, n_long = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    top = int(sys.argv[5]) if len(sys.argv) > 5 else 25
    s_sites, s_ours, s_total = load(short)
    l_sites, l_ours, l_total = load(long_)
    ops = n_long - n_short
    print(f"per op: {(l_total[0] - s_total[0]) / ops:.1f} allocations, "
          f"{(l_total[1] - s_total[1]) / ops:.0f} bytes  ({ops} ops)")
    for title, a, b in (("by allocating site", s_sites, l_sites),
                        ("by innermost tokio_redlock frame", s_ours, l_ours)):
        print(f"\n{title}:")
        rows = diff(a, b, ops)
        for k, (blocks, size) in sorted(rows.items(), key=lambda kv: -kv[1][0])[:top]:
            if blocks < 0.05:
                continue
            print(f"{blocks:7.2f} blk {size:8.0f} B  {k[:170]}")


if __name__ == "__main__":
    main()
