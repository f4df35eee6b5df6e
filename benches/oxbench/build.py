"""Building what the runs need: the C workloads, the launcher and the malloc probe (into
target/bench/), and generated inputs (the gcc workload's C file). oxmalloc itself is
built in allocators.py."""

import os
import shutil
import subprocess

from .common import BENCH_DIR, PACKAGE_DIR, WORKLOAD_SRC, die, run_quiet

# the calls under test must happen: no folding of malloc/free pairs
WORKLOAD_CFLAGS = ["-O2", "-pthread", "-Wall", "-fno-builtin-malloc", "-fno-builtin-free",
                   "-fno-builtin-calloc", "-fno-builtin-realloc"]


def compile_workloads(workloads):
    """Compile the C programs of the chosen workloads, the fixed-cost program and the
    harness's two helpers (launch.c, probe.c beside this file); exit on an error."""
    os.makedirs(BENCH_DIR, exist_ok=True)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        die("no C compiler (gcc) found", 2)
    stems = sorted({w.binary for w in workloads if w.kind == "c"} | {"fixedcost"})
    for stem in stems:
        src = os.path.join(WORKLOAD_SRC, stem + ".c")
        r = run_quiet([gcc] + WORKLOAD_CFLAGS + ["-o", os.path.join(BENCH_DIR, stem), src, "-lm"])
        if r.returncode != 0:
            die(f"compiling {src} failed:\n{r.stdout}", 2)
    for stem, libs in (("launch", []), ("probe", ["-ldl"])):
        src = os.path.join(PACKAGE_DIR, stem + ".c")
        r = run_quiet([gcc, "-O2", "-Wall", "-o", os.path.join(BENCH_DIR, stem), src] + libs)
        if r.returncode != 0:
            die(f"compiling {src} failed:\n{r.stdout}", 2)


def generate_programs(workloads, scale, python):
    """Write the generated inputs of the workloads that have one (gcc's C file)."""
    for w in workloads:
        if w.gen:
            path = os.path.join(BENCH_DIR, f"big_{scale}.c")
            with open(path, "w") as f:
                r = subprocess.run([python, w.gen, str(100 * scale)], stdout=f)
            if r.returncode != 0:
                die("generating the C file for the gcc workload failed", 2)
