#!/usr/bin/env python3
"""Checks that the source tree keeps its layers: no module imports a higher layer.

Layers, top to bottom (each a folder or file under src/):
    abi > process > heap > block > region_map > os
Beside them, used by every layer and using nothing above the OS layer:
    config, stats, sync, fatal, writer, counter
A module's test code (`#[cfg(test)] mod tests`) and the process layer's core tests
(src/process/core_tests.rs, which drive the whole core over the fake OS) may use anything.
Prints one line per violation and "layers: N passed, N failed".
"""
import glob
import os
import re
import sys

RANK = {"abi": 5, "process": 4, "heap": 3, "block": 2, "region_map": 1, "os": 0}
BESIDE = {"config", "stats", "sync", "fatal", "writer", "counter"}
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
passed = failed = 0
for path in sorted(glob.glob(os.path.join(root, "**", "*.rs"), recursive=True)):
    rel = os.path.relpath(path, root)
    top = rel.split(os.sep)[0].removesuffix(".rs")
    if top == "lib" or rel.endswith("core_tests.rs"):
        continue
    text = open(path, encoding="utf-8").read().split("#[cfg(test)]\nmod tests")[0]
    bad = set()
    for dep in set(re.findall(r"crate::(\w+)", text)):
        if dep == top:
            continue
        if top in RANK and dep in RANK and RANK[dep] > RANK[top]:
            bad.add(dep)
        if top in BESIDE and dep in RANK and dep != "os":
            bad.add(dep)
    if bad:
        failed += 1
        print(f"FAIL src/{rel} imports a higher layer: {', '.join(sorted(bad))}")
    else:
        passed += 1
print(f"layers: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
