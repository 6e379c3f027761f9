#!/usr/bin/env python3
"""Every locked dependency that a user of our published crates builds declares a
rust-version no newer than ours, and every crate of the workspace says ours.

Reads `cargo metadata` (with the lock file) on stdin; our MSRV is the root package's
`rust-version`. Followed: the normal and build dependencies of the published crates
(the library, the harness, the command-line tool), with every feature; dev-dependencies
are ours alone and may need a newer Rust. A dependency without a `rust-version` is let
through (it promises nothing, so nothing can be checked); one with a newer one fails the
check, named.
"""
import json
import sys


def version(v):
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.load(sys.stdin)
ours = {p["name"]: p for p in meta["packages"] if p["source"] is None}
msrv = ours["tokio-redlock"]["rust_version"]
by_id = {p["id"]: p for p in meta["packages"]}
edges = {n["id"]: n["deps"] for n in meta["resolve"]["nodes"]}
published = ["tokio-redlock", "tokio-redlock-harness", "tokio-redlock-cli"]
todo = [ours[name]["id"] for name in published]
seen = set(todo)
while todo:
    for dep in edges[todo.pop()]:
        kinds = {k["kind"] for k in dep["dep_kinds"]}
        if kinds & {None, "build"} and dep["pkg"] not in seen:
            seen.add(dep["pkg"])
            todo.append(dep["pkg"])
newer = [
    f'{p["name"]} {p["version"]} needs Rust {p["rust_version"]}'
    for p in (by_id[i] for i in sorted(seen))
    if p.get("rust_version") and version(p["rust_version"]) > version(msrv)
]
mismatched = [
    f'{name} says rust-version {p["rust_version"]}'
    for name, p in ours.items()
    if p.get("rust_version") != msrv
]
for line in newer + mismatched:
    print(f"MSRV {msrv}: {line}", file=sys.stderr)
if newer or mismatched:
    sys.exit(1)
print(f"MSRV {msrv}: {len(seen)} packages a user builds, none needs a newer Rust")
