"""Paths and small helpers shared by every module of the benchmark harness."""

import os
import subprocess
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(PACKAGE_DIR))
WORKLOAD_SRC = os.path.join(ROOT, "benches", "workloads")
PROGRAM_SRC = os.path.join(ROOT, "benches", "programs")
BENCH_DIR = os.path.join(ROOT, "target", "bench")   # built programs, scratch files
RUN_DIR = os.path.join(BENCH_DIR, "run")            # the current run's stdout, stderr, ...

def die(msg, code=2):
    print(f"bench: {msg}", file=sys.stderr)
    sys.exit(code)


def note(msg):
    print(msg, flush=True)


def run_quiet(cmd, **kw):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, **kw)
    except OSError as e:
        return subprocess.CompletedProcess(cmd, 127, stdout=str(e))


def clean_env(extra=None, preload=None):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    if extra:
        env.update(extra)
    return env


def read_file(path):
    """The bytes of path, or b"" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def read_result(path):
    """The key=value lines the launcher writes, as a dict of ints and floats."""
    m = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            m[k] = float(v) if "." in v else int(v)
    return m
