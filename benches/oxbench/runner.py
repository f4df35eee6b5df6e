"""Running the workloads and measuring each run: one Run per process started, with the
wall time and the rusage that wait4(2) reports (user and system time, peak RSS, minor page
faults), checked against the expected result. Also the fixed-cost programs (/bin/true and
a 1 MiB program), whose peak RSS is what an allocator adds to every process."""

import hashlib
import os
import re
import signal

from .common import BENCH_DIR, RUN_DIR, clean_env, read_file
from .redis import run_redis
from .spawn import spawn_measured


class Run:
    """One run of one workload under one allocator; None where not measured. round is
    "count" for a run of the syscall-counting pass (syscalls.py), which measures only
    madvise and munmap."""

    __slots__ = ("round", "seq", "workload", "allocator", "status", "wall", "user", "sys",
                 "cpu", "score", "maxrss_kb", "minflt", "madvise", "munmap", "result",
                 "metrics", "detail")

    def __init__(self, rnd, seq, workload, allocator):
        self.round, self.seq, self.workload, self.allocator = rnd, seq, workload, allocator
        self.status = "not run"
        self.wall = self.user = self.sys = self.cpu = self.score = None
        self.maxrss_kb = self.minflt = self.madvise = self.munmap = None
        self.result, self.metrics, self.detail = "", {}, ""


def evaluate(w, status, out, err, run_dir, reference):
    """Judge one finished run from its wait status, stdout and stderr (and gcc's output
    file): return (status, result, metrics), status "ok" or why the run failed, result what
    must match the reference run, metrics the "# key=value" lines the program printed."""
    text = out.decode("utf-8", "replace")
    metrics = {}
    for line in text.splitlines():
        m = re.match(r"#\s*([A-Za-z_][\w.]*)=(-?[0-9.]+)\s*$", line)
        if m:
            metrics[m.group(1)] = float(m.group(2))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signame = signal.Signals(sig).name
        except ValueError:
            signame = str(sig)
        return f"crash ({signame})", "", metrics
    code = os.WEXITSTATUS(status)
    errtext = err.decode("utf-8", "replace")
    if "cannot be preloaded" in errtext:
        return "preload failed", "", metrics
    fails = [l for l in text.splitlines() if l.startswith("FAIL")]
    if fails:
        return f"self-check: {fails[0][:80]}", "", metrics
    if code != 0:
        return f"exit {code}", "", metrics
    if w.check == "okline":
        oks = [l.strip() for l in text.splitlines() if l.startswith("OK ")]
        if not oks:
            return "no OK line", "", metrics
        result = oks[-1]
    elif w.check == "stdout":
        if not text.strip():
            return "empty output", "", metrics
        result = "stdout-sha256:" + hashlib.sha256(out).hexdigest()[:16]
    else:
        obj = os.path.join(run_dir, "big.o")
        try:
            with open(obj, "rb") as f:
                data = f.read()
            os.unlink(obj)
        except OSError:
            return "no output file", "", metrics
        if len(data) < 1000:
            return "output file too small", "", metrics
        result = "object-sha256:" + hashlib.sha256(data).hexdigest()[:16]
    if reference is not None and result != reference:
        return "wrong output", result, metrics
    return "ok", result, metrics


def run_once(w, alloc, lib, alloc_env, scale, reference, timeout, rnd, seq, logs_dir):
    """Run workload w once under allocator alloc (library lib, None for glibc; alloc_env
    added to its environment), check its result against reference (None: not checked)
    and return the Run."""
    run_dir = RUN_DIR
    os.makedirs(run_dir, exist_ok=True)
    out_path = os.path.join(run_dir, "stdout")
    err_path = os.path.join(run_dir, "stderr")
    stale = os.path.join(run_dir, "big.o")
    if os.path.exists(stale):
        os.unlink(stale)
    r = Run(rnd, seq, w.name, alloc)
    if w.kind == "redis":
        srv, out, err = run_redis(w, lib, alloc_env, scale, reference, timeout, r, run_dir,
                                  out_path, err_path)
        r.score = r.wall
        if r.status != "ok":
            save_failed_run(logs_dir, w, alloc, rnd, out, err + b"\n--- server ---\n" + srv)
            r.detail = srv.decode("utf-8", "replace").strip()[-300:].replace("\n", " | ")
        return r
    argv = w.command(scale, run_dir)
    env = clean_env(dict(w.env or {}, **alloc_env))
    try:
        m = spawn_measured(argv, env, lib, w.stdin, out_path, err_path, timeout)
    except OSError as e:
        r.status, r.detail = "spawn failed", str(e)
        return r
    out = read_file(out_path)
    err = read_file(err_path)
    if m["timed_out"]:
        r.status = f"timeout ({timeout:.0f} s)"
    else:
        r.status, r.result, r.metrics = evaluate(w, m["status"], out, err, run_dir, reference)
    r.wall, r.user, r.sys = m["wall"], m["user"], m["sys"]
    r.cpu = r.user + r.sys
    r.score = r.cpu if w.score == "cpu" else r.wall
    r.maxrss_kb, r.minflt = m["maxrss_kb"], m["minflt"]
    if r.status == "ok" and "ops" in r.metrics and r.cpu > 0:
        # the program's own count of mallocs and frees (fixed), per CPU second
        r.metrics["Mops_per_cpu_s"] = r.metrics.pop("ops") / r.cpu / 1e6
    if r.status != "ok":
        errtext = err.decode("utf-8", "replace").strip()
        r.detail = errtext[-300:].replace("\n", " | ")
        save_failed_run(logs_dir, w, alloc, rnd, out, err)
    return r


def save_failed_run(logs_dir, w, alloc, rnd, out, err):
    """Keep the output of a failed run in logs_dir (the report's failed-runs/)."""
    if logs_dir:
        os.makedirs(logs_dir, exist_ok=True)
        base = os.path.join(logs_dir, f"{w.name}.{alloc}.round{rnd}")
        with open(base + ".stdout", "wb") as f:
            f.write(out)
        with open(base + ".stderr", "wb") as f:
            f.write(err)


# fixed cost: the peak RSS of tiny programs, what an allocator adds to every process

def fixed_programs():
    """(key, description, argv) of each fixed-cost program."""
    return [("fixed-true", "/bin/true", ["/bin/true"]),
            ("fixed-1mib", "1 MiB in 64 B blocks, then exit",
             [os.path.join(BENCH_DIR, "fixedcost")])]


def measure_fixed_cost(allocs, libs, rounds, seq):
    """Run each tiny program under each allocator, alternating, rounds times; return
    (runs, the last sequence number)."""
    runs = []
    os.makedirs(RUN_DIR, exist_ok=True)
    out_path, err_path = os.path.join(RUN_DIR, "stdout"), os.path.join(RUN_DIR, "stderr")
    expected = {}
    for rnd in range(1, rounds + 1):
        for key, _, argv in fixed_programs():
            for a in allocs:
                seq += 1
                r = Run(rnd, seq, key, a)
                runs.append(r)
                try:
                    m = spawn_measured(argv, clean_env(), libs[a], None, out_path, err_path, 30)
                except OSError as e:
                    r.status, r.detail = "spawn failed", str(e)
                    continue
                out = read_file(out_path).decode("utf-8", "replace")
                oks = [l for l in out.splitlines() if l.startswith("OK ")]
                r.result = oks[-1] if oks else ""
                r.wall, r.user, r.sys = m["wall"], m["user"], m["sys"]
                r.cpu = r.score = r.user + r.sys
                r.maxrss_kb, r.minflt = m["maxrss_kb"], m["minflt"]
                if m["timed_out"] or not os.WIFEXITED(m["status"]) or os.WEXITSTATUS(m["status"]):
                    r.status = "failed"
                elif argv[0] != "/bin/true" and expected.setdefault(key, r.result) != r.result:
                    r.status = "wrong output"
                elif argv[0] != "/bin/true" and not r.result:
                    r.status = "no OK line"
                else:
                    r.status = "ok"
    return runs, seq
