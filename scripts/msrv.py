#!/usr/bin/env python3
"""MSRV check without a second toolchain (none can be installed offline).

1. Every workspace package declares the workspace's rust-version.
2. No dependency in the lock file (for this platform) declares a newer rust-version: the crates
   we build on would refuse an older compiler.
3. The edition is one the MSRV supports (2024 needs 1.85).

What this cannot see — our own code using a language feature newer than the MSRV — is covered
in part by clippy's `incompatible_msrv` lint (std APIs, run with -D warnings by test.sh), and
otherwise only by compiling with that toolchain.
"""
import json
import subprocess
import sys

def version(v):
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

host = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
target = next(l.split(": ")[1] for l in host.splitlines() if l.startswith("host: "))
meta = json.loads(subprocess.run(
    ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", target],
    capture_output=True, text=True, check=True).stdout)
members = set(meta["workspace_members"])
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
ours = [packages[i] for i in members]
problems = []
for p in ours:
    if not p["rust_version"]:
        problems.append(f"{p['name']} declares no rust-version")
    elif p["edition"] == "2024" and version(p["rust_version"]) < (1, 85, 0):
        problems.append(f"{p['name']}: edition 2024 needs Rust 1.85")


def built_for(member):
    """Every package compiled to build and test `member`: its direct dependencies of any kind,
    then their normal and build dependencies."""
    seen, todo = set(), []
    for d in nodes[member]["deps"]:
        todo.append(d["pkg"])
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        for d in nodes[pid]["deps"]:
            if any(k["kind"] in (None, "build") for k in d["dep_kinds"]):
                todo.append(d["pkg"])
    return seen


checked = set()
for p in ours:
    if not p["rust_version"]:
        continue
    mine = version(p["rust_version"])
    for pid in built_for(p["id"]):
        dep = packages[pid]
        checked.add(pid)
        if dep["rust_version"] and version(dep["rust_version"]) > mine:
            problems.append(f"{p['name']} (rust-version {p['rust_version']}) builds "
                            f"{dep['name']} {dep['version']}, which needs Rust {dep['rust_version']}")
msrv = min(version(p["rust_version"]) for p in ours if p["rust_version"])
if problems:
    print("MSRV check failed:")
    for line in sorted(set(problems)):
        print("  " + line)
    sys.exit(1)
libs = sorted(p["name"] for p in ours if p.get("publish") != [])
print(f"MSRV: {len(ours)} workspace packages checked against the {len(checked)} packages "
      f"they build ({target}); libraries ({', '.join(libs)}) at "
      f"{'.'.join(map(str, msrv))}; no dependency declares a newer rust-version")
