#!/usr/bin/env python3
"""Checks of the benchmark harness (benches/oxbench) that need no run: reading the
counting tools' output, the workload table, the count format and the CSV's columns.
The harness's runs themselves are checked by `scripts/bench --smoke`."""

import csv
import io
import os
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benches"))

from oxbench import report, runner, syscalls, workloads  # noqa: E402

failures = []
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print(f"FAIL {what}")


def parse(counter, text):
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write(text)
    try:
        return counter.parse(f.name)
    finally:
        os.unlink(f.name)


def raises(counter, text):
    try:
        parse(counter, text)
    except ValueError:
        return True
    return False


# perf stat -x, output
perf_out = """# started on Mon Dec  7 19:56:24 2026

386,,syscalls:sys_enter_madvise,122083003,100.00,,
17,,syscalls:sys_enter_munmap,122083003,100.00,,
"""
check(parse(syscalls.PERF, perf_out) == {"madvise": 386, "munmap": 17}, "perf counts read")
check(raises(syscalls.PERF, perf_out.replace("386,", "<not counted>,")),
      "a perf event it could not count is an error, not a zero")
check(raises(syscalls.PERF, "# started on ...\n\n17,,syscalls:sys_enter_munmap,1,100.00,,\n"),
      "a missing perf event is an error")

# strace -c output: the errors column may be empty or not; a call never made has no line
strace_out = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
100.00    0.000657          13        47           munmap
  0.00    0.000000           0      1203         5 madvise
------ ----------- ----------- --------- --------- ----------------
100.00    0.000657          13      1250         5 total
"""
check(parse(syscalls.STRACE, strace_out) == {"madvise": 1203, "munmap": 47},
      "strace counts read, with and without errors")
only_munmap = "\n".join(l for l in strace_out.splitlines() if "madvise" not in l) + "\n"
check(parse(syscalls.STRACE, only_munmap) == {"madvise": 0, "munmap": 47},
      "a call strace never saw counts 0")
check(raises(syscalls.STRACE, ""), "an empty strace output is an error")

# the workload table
table = workloads.c_workloads()
names = [w.name for w in table]
check(len(names) == len(set(names)), "workload names are unique")
for family in ("xthread", "prodcons", "threadlife", "tchurn", "xbatch", "larson",
               "larson-sized"):
    for t in workloads.MANY:
        w = [x for x in table if x.name == f"{family}-{t}"]
        check(len(w) == 1, f"{family}-{t} is in the table")
        if w:
            check(str(t) in w[0].args(1), f"{family}-{t} passes its thread count")
check(not any(w.name == "rslot-8" for w in table), "rslot stays at 1, 2 and 4 threads")
check([w.name for w in workloads.select_workloads(table, "xthread-1")] == ["xthread-1"],
      "an exact name selects only that workload (not xthread-16)")
check(all(n in names or n in ("sqlite",) for n in workloads.SMOKE_WORKLOADS),
      "the smoke workloads exist")

# counts in the tables
for n, text in ((0, "0"), (9999, "9999"), (10000, "10.0k"), (652000, "652k"),
                (1544610, "1.54M")):
    check(report.fmt_count(n) == text, f"fmt_count({n}) == {text!r}")

# results.csv: a timed row and a counting row
timed = runner.Run(1, 1, "realloc", "oxmalloc")
timed.status, timed.wall, timed.user, timed.sys = "ok", 1.5, 1.0, 0.5
timed.maxrss_kb, timed.minflt = 1000, 225000
count = runner.Run("count", 2, "realloc", "oxmalloc")
count.status, count.madvise, count.munmap = "ok", 3684, 13
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "results.csv")
    report.write_csv(path, [timed, count])
    with open(path) as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
check(rows[0]["minflt"] == "225000" and rows[0]["sys_s"] == "0.500000"
      and rows[0]["madvise_calls"] == "", "timed row: faults and system time, no counts")
check(rows[1]["round"] == "count" and rows[1]["madvise_calls"] == "3684"
      and rows[1]["munmap_calls"] == "13" and rows[1]["wall_s"] == "",
      "counting row: the counts only")

print(f"bench-harness: {checks - len(failures)} passed, {len(failures)} failed")
if failures:
    sys.exit(1)
