"""Whole-program benchmarks: oxmalloc against glibc malloc and the peer allocators.

Runs every workload under glibc (no preload), oxmalloc, mimalloc, jemalloc and tcmalloc
(the peers through LD_PRELOAD), alternating the allocators within each round, and
reports the median time and peak RSS of each, as a ratio to glibc, with the spread over
the rounds. A crash, a timeout or a wrong result is a failure, shown as FAIL and never
as a time. A workload whose prerequisite is missing (a program not installed, a source
that cannot be fetched) is reported as skipped, with the reason, and is no failure.

    scripts/bench                 quick mode: scale 1, 3 rounds (the default)
    scripts/bench --full          scale 2, 5 rounds
    scripts/bench --smoke         one round of a few fast workloads, some cut down (CI)
    scripts/bench --workloads churn,xthread --allocators glibc,oxmalloc --rounds 5
    scripts/bench --lib old=/path/to/an/older/liboxmalloc.so   # one more allocator, alternated too
    scripts/bench --publish       quick mode, written to results/latest (committed)

Beside time and peak RSS, the report shows what the kernel sees of each allocator: minor
page faults and system time (from the same wait4(2) rusage of the timed runs), and the
number of madvise(2) and munmap(2) calls, counted in a separate un-timed pass after the
rounds under perf stat (syscall tracepoints) or strace, whichever works (--syscalls).

Time is wall-clock time, except for the workloads marked "(cpu)" in the report (xbatch),
which are scored by the user + system CPU time that wait4(2) reports: operations per CPU
second. redis is scored by the wall time of its client (redis-benchmark, on glibc), and
its peak RSS and CPU time are the server's. Every report also has a "fixed cost" section:
the peak RSS of /bin/true and of a tiny program that allocates 1 MiB in small blocks,
in KiB over glibc.

The redis workload builds redis-server from Debian's source package with MALLOC=libc
(no bundled jemalloc) into target/bench/redis, once, through a private deb-src list (the
system's apt configuration is not changed); it needs apt-get, dpkg-source (dpkg-dev),
make and redis-benchmark (redis-tools), and network access the first time.

Writes results.csv (one row per run), summary.md (tables) and chart.svg to --out
(default target/bench/latest; --publish writes results/latest instead, the committed
results, which a plain run never overwrites). Exit status: 0 when every run passed, 1
when any run failed or oxmalloc could not be built, 2 on a usage or setup error.

Standard library only. The command is scripts/bench; the code is the package
benches/oxbench (see its __init__.py for the map of its modules).
"""

import argparse
import datetime
import os
import shutil
import sys

from .allocators import (ALLOC_NAMES, ALLOCATORS, COLORS, EXTRA_COLORS, build_oxmalloc,
                         find_library, install_peers, probe_allocator)
from .build import compile_workloads, generate_programs
from .chart import write_chart
from .common import BENCH_DIR, ROOT, die, note
from .machine import busy, git_commit, loadavg
from .redis import REDIS_DIR, ensure_redis, redis_binding, redis_links_libc_malloc
from .report import fixed_cost_table, fmt_count, report_tables, summary_header, write_csv
from .runner import measure_fixed_cost, run_once
from .stats import build_cells
from .syscalls import choose_counter, count_pass
from .workloads import (SMOKE_DIVISOR, SMOKE_WORKLOADS, c_workloads, program_workloads,
                        select_workloads)

QUICK_SCALE, FULL_SCALE = 1, 2
QUICK_ROUNDS, FULL_ROUNDS = 3, 5


def parse_args():
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="scale 1, 3 rounds (default)")
    mode.add_argument("--full", action="store_true", help="scale 2, 5 rounds")
    mode.add_argument("--smoke", action="store_true",
                      help="one round of a few fast workloads, all allocators found (CI)")
    p.add_argument("--rounds", type=int, help="number of rounds (overrides the mode)")
    p.add_argument("--scale", type=int, help="workload size factor (overrides the mode)")
    p.add_argument("--workloads", help="comma-separated names or prefixes")
    p.add_argument("--allocators", help="comma-separated, from: " + ",".join(ALLOC_NAMES))
    p.add_argument("--out", help="output directory (default target/bench/latest)")
    p.add_argument("--publish", action="store_true",
                   help="write to results/latest, the committed results (never by default)")
    p.add_argument("--lib", action="append", default=[], metavar="NAME=PATH",
                   help="also measure the allocator in the shared library PATH under NAME "
                        "(e.g. an older oxmalloc build); may be repeated")
    p.add_argument("--env", action="append", default=[], metavar="NAME:VAR=VALUE",
                   help="set VAR=VALUE in the runs of allocator NAME (e.g. a --lib copy of "
                        "oxmalloc with OXMALLOC_PROF=1); may be repeated")
    p.add_argument("--syscalls", choices=["auto", "perf", "strace", "off"], default="auto",
                   help="count madvise and munmap calls in an un-timed pass after the rounds, "
                        "with perf stat or strace (auto: the first that works; default)")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    p.add_argument("--no-install", action="store_true", help="never apt-get install peers")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p.parse_args()



def choose_mode(args):
    """(mode, scale, rounds) from --quick/--full/--smoke and the overrides."""
    if args.full:
        mode, scale, rounds = "full", FULL_SCALE, FULL_ROUNDS
    elif args.smoke:
        mode, scale, rounds = "smoke", QUICK_SCALE, 1
    else:
        mode, scale, rounds = "quick", QUICK_SCALE, QUICK_ROUNDS
    if args.rounds is not None:
        if args.rounds < 1:
            die("--rounds must be at least 1")
        rounds = args.rounds
    if args.scale is not None:
        if args.scale < 1:
            die("--scale must be at least 1")
        scale = args.scale
    return mode, scale, rounds


def wanted_allocators(args):
    """(names to measure, [(name, path)] of --lib, {name: env} of --env)."""
    if args.allocators:
        wanted = [a.strip() for a in args.allocators.split(",") if a.strip()]
        for a in wanted:
            if a not in ALLOC_NAMES:
                die(f"unknown allocator '{a}' (known: {', '.join(ALLOC_NAMES)})")
    else:
        wanted = list(ALLOC_NAMES)
    extra_libs = []
    for spec_lib in args.lib:
        name, sep, path = spec_lib.partition("=")
        if not sep or not name or not path:
            die(f"--lib takes NAME=PATH, not '{spec_lib}'")
        if name in ALLOC_NAMES or name in [n for n, _ in extra_libs]:
            die(f"--lib: the name '{name}' is taken")
        if not os.path.isfile(path):
            die(f"--lib: {path} is not a file")
        extra_libs.append((name, os.path.abspath(path)))
        COLORS.setdefault(name, EXTRA_COLORS[len(extra_libs) % len(EXTRA_COLORS)])
    wanted += [n for n, _ in extra_libs]
    alloc_env = {}
    for spec_env in args.env:
        name, sep, assignment = spec_env.partition(":")
        var, sep2, value = assignment.partition("=")
        if not sep or not sep2 or not var or name not in wanted:
            die(f"--env takes NAME:VAR=VALUE with NAME a measured allocator, not '{spec_env}'")
        alloc_env.setdefault(name, {})[var] = value
    return wanted, extra_libs, alloc_env


def install_missing(wanted, workloads, no_install):
    """apt-get install the peers and the programs' packages that are missing (as root)."""
    missing_pkgs = []
    for name, soname, pkg in ALLOCATORS:
        if name in wanted and soname and not find_library(soname):
            missing_pkgs.append(pkg)
    if any(w.name.startswith("sqlite") for w in workloads) and not shutil.which("sqlite3"):
        missing_pkgs.append("sqlite3")  # the sqlite workloads' command-line shell
    if any(w.kind == "redis" for w in workloads):
        if not shutil.which("redis-benchmark"):
            missing_pkgs.append("redis-tools")  # the client
        if not os.path.exists(os.path.join(REDIS_DIR, "redis-server")) \
                and not shutil.which("dpkg-source"):
            missing_pkgs.append("dpkg-dev")  # apt-get source unpacks with dpkg-source
    if missing_pkgs and not no_install:
        install_peers(missing_pkgs)


def find_libraries(wanted, extra_libs, no_build, skipped, problems):
    """{name: library path, None for glibc} of the allocators that can be measured."""
    libs = {}
    for name, soname, pkg in ALLOCATORS:
        if name not in wanted:
            continue
        if name == "glibc":
            libs[name] = None
        elif name == "oxmalloc":
            lib, why = build_oxmalloc(no_build)
            if lib:
                libs[name] = lib
            else:
                note(f"oxmalloc: {why}; not measured")
                skipped.append((name, why))
                problems.append(f"oxmalloc: {why}")
        else:
            lib = find_library(soname)
            if lib:
                libs[name] = lib
            else:
                note(f"{name}: {soname} not found (package {pkg}); skipped")
                skipped.append((name, f"{soname} not found"))
    for name, path in extra_libs:
        libs[name] = path
    return libs


def drop_unavailable(workloads, skipped):
    """Remove the workloads whose program is not installed, or whose redis-server cannot
    be built."""
    for w in list(workloads):
        if w.kind == "program" and not (os.path.isabs(w.binary) and os.path.exists(w.binary)) \
                and not shutil.which(w.binary):
            note(f"{w.name}: skipped: '{w.binary}' not installed")
            skipped.append((w.name, f"{w.binary} not installed"))
            workloads.remove(w)
    redis_wl = [w for w in workloads if w.kind == "redis"]
    if redis_wl:
        server, why = (None, "redis-benchmark not installed (package redis-tools)") \
            if not shutil.which("redis-benchmark") else ensure_redis()
        if not why:
            why = redis_links_libc_malloc(server)
        if why:
            for w in redis_wl:
                note(f"{w.name}: skipped: {why}")
                skipped.append((w.name, why))
                workloads.remove(w)


def check_redis_binding(workloads, allocs, libs, skipped, problems):
    """The loader's own trace: redis-server's malloc is bound to each allocator under test."""
    for w in [w for w in workloads if w.kind == "redis"]:
        bad = [f"{a}: {why}" for a in allocs
               for why in [redis_binding(os.path.join(REDIS_DIR, "redis-server"), libs[a])] if why]
        if bad:
            note(f"{w.name}: dropped: {'; '.join(bad)}")
            skipped.append((w.name, "; ".join(bad)))
            problems.append(f"{w.name}: malloc not bound to the allocator under test")
            workloads.remove(w)
        else:
            note(f"{w.name}: LD_DEBUG=bindings: redis-server's malloc binds to each allocator "
                 f"under test")


def reference_runs(workloads, scale, logs_dir, skipped, problems):
    """One un-timed glibc run per workload: its expected result, and a timeout of 20 times
    its time (at least a minute). Workloads whose reference run fails are dropped."""
    reference, timeouts = {}, {}
    for w in list(workloads):
        r = run_once(w, "glibc", None, {}, scale, None, 600, 0, 0, logs_dir)
        if r.status != "ok":
            note(f"{w.name}: reference run under glibc failed ({r.status}); workload dropped")
            skipped.append((w.name, f"reference run under glibc failed: {r.status}"))
            problems.append(f"{w.name}: reference run failed")
            workloads.remove(w)
            continue
        reference[w.name] = r.result
        timeouts[w.name] = max(60.0, 20.0 * r.wall)
        note(f"  reference {w.name:15} {r.wall:6.3f}s  {r.result}")
    return reference, timeouts


def measured_rounds(workloads, allocs, libs, alloc_env, scale, rounds, reference, timeouts,
                    logs_dir):
    """The timed runs: round-major, the allocators alternating within each workload."""
    runs = []
    seq = 0
    for rnd in range(1, rounds + 1):
        for w in workloads:
            line = [f"[{rnd}/{rounds}] {w.name:15}"]
            for a in allocs:
                seq += 1
                r = run_once(w, a, libs[a], alloc_env.get(a, {}), scale, reference[w.name],
                             timeouts[w.name], rnd, seq, logs_dir)
                runs.append(r)
                if r.status == "ok":
                    unit = "s cpu" if w.score == "cpu" else "s"
                    line.append(f"{a} {r.score:.3f}{unit} {r.maxrss_kb / 1024:.0f}M "
                                f"{fmt_count(r.minflt)}flt")
                else:
                    line.append(f"{a} FAIL({r.status})")
            note("  ".join(line))
    return runs, seq


def main():
    args = parse_args()
    python = sys.executable or shutil.which("python3")
    all_wl = c_workloads() + program_workloads(python)
    if args.list:
        for w in all_wl:
            print(f"{w.name:16} {w.desc}")
        return 0
    if args.publish and args.out:
        die("--publish writes results/latest; it cannot be combined with --out")
    mode, scale, rounds = choose_mode(args)
    spec = args.workloads or (",".join(SMOKE_WORKLOADS) if args.smoke else None)
    workloads = select_workloads(all_wl, spec)
    if args.smoke:
        for w in workloads:
            if w.divisible:
                w.divisor = SMOKE_DIVISOR
    wanted, extra_libs, alloc_env = wanted_allocators(args)
    if args.publish:
        out_dir = os.path.join(ROOT, "results", "latest")
    elif args.out:
        out_dir = os.path.abspath(args.out)
    else:
        out_dir = os.path.join(BENCH_DIR, "latest")
    info = {"mode": mode, "scale": scale, "rounds": rounds,
            "started": datetime.datetime.now().astimezone(),
            # Read before the run writes anything: with --publish, the result files it
            # writes are tracked, and would otherwise read as uncommitted changes.
            "commit": git_commit(), "load_start": loadavg()}
    problems = []   # things that make the exit status 1
    skipped = []    # (allocator or workload, reason), reported but not failures

    install_missing(wanted, workloads, args.no_install)
    libs = find_libraries(wanted, extra_libs, args.no_build, skipped, problems)
    note("compiling workloads into target/bench/")
    compile_workloads(workloads)
    drop_unavailable(workloads, skipped)
    generate_programs(workloads, scale, python)
    for name in list(libs):
        why = probe_allocator(name, libs[name])
        if why:
            note(f"{name}: {why}; not measured")
            skipped.append((name, why))
            problems.append(f"{name}: {why}")
            del libs[name]
    allocs = [a for a in wanted if a in libs]
    if not allocs:
        die("no allocator left to measure", 2)
    check_redis_binding(workloads, allocs, libs, skipped, problems)
    counter, why_not = choose_counter(args.syscalls)
    counter_note = counter.description if counter else why_not
    note(f"madvise/munmap calls: {'counted by ' + counter_note if counter else why_not}")
    base = "glibc" if "glibc" in allocs else allocs[0]
    described = [f"{a} ({libs[a] or 'no preload'})" for a in allocs]
    note(f"allocators: {', '.join(described)}")
    note(f"mode {mode}: scale {scale}, {rounds} round(s), {len(workloads)} workloads; "
         f"load average {info['load_start']}")
    if busy(info["load_start"]):
        note("warning: the machine is not idle; wall times will be noisy")

    logs_dir = os.path.join(out_dir, "failed-runs")
    if os.path.isdir(logs_dir):
        shutil.rmtree(logs_dir)
    reference, timeouts = reference_runs(workloads, scale, logs_dir, skipped, problems)
    runs, seq = measured_rounds(workloads, allocs, libs, alloc_env, scale, rounds, reference,
                                timeouts, logs_dir)
    counts = {}
    if counter:
        counts, seq = count_pass(counter, workloads, allocs, libs, alloc_env, scale, reference,
                                 timeouts, seq, logs_dir)
    fixed_runs, seq = measure_fixed_cost(allocs, libs, rounds, seq)
    info["finished"] = datetime.datetime.now().astimezone()
    info["load_end"] = loadavg()

    os.makedirs(out_dir, exist_ok=True)
    count_runs = list(counts.values())
    write_csv(os.path.join(out_dir, "results.csv"), runs + count_runs + fixed_runs)
    cells = build_cells(runs, workloads, allocs)
    tables, geo = report_tables(cells, counts, counter_note, workloads, allocs, base)
    tables += "\n\n" + fixed_cost_table(fixed_runs, allocs, base)
    info["syscalls"] = counter_note if counter else "not counted: " + why_not
    summary = summary_header(info, workloads, allocs, libs, skipped, base) + tables + "\n"
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary)
    started = info["started"]
    write_chart(os.path.join(out_dir, "chart.svg"), cells, workloads, allocs, base, geo,
                f"oxmalloc benchmarks ({mode}, {rounds} round(s), {started.strftime('%Y-%m-%d')}): "
                f"ratio to {base}, lower is better")

    print()
    print(tables)
    print()
    failed_runs = [r for r in runs + count_runs + fixed_runs if r.status != "ok"]
    if failed_runs:
        problems.append(f"{len(failed_runs)} run(s) failed (logs in {logs_dir})")
    took = (info["finished"] - started).total_seconds()
    note(f"wrote {out_dir}/results.csv, summary.md, chart.svg ({took:.0f} s)")
    for p in problems:
        note(f"problem: {p}")
    return 1 if problems else 0
