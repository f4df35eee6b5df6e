"""The allocators under test: which exist, where their libraries are, how oxmalloc is
built, and a probe that malloc really comes from the library we mean to measure."""

import os
import shutil
import subprocess

from .common import BENCH_DIR, ROOT, clean_env, note, run_quiet

# name, file of the shared library (None = no preload), Debian package that ships it
ALLOCATORS = [
    ("glibc", None, None),
    ("oxmalloc", None, None),  # built from this repository
    ("mimalloc", "libmimalloc.so.2", "libmimalloc2.0"),
    ("jemalloc", "libjemalloc.so.2", "libjemalloc2"),
    ("tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
]
ALLOC_NAMES = [a[0] for a in ALLOCATORS]
PACKAGES = {name: pkg for name, _, pkg in ALLOCATORS}

COLORS = {
    "glibc": "#7f7f7f",
    "oxmalloc": "#d9480f",
    "mimalloc": "#1f77b4",
    "jemalloc": "#2ca02c",
    "tcmalloc": "#9467bd",
}
EXTRA_COLORS = ["#e377c2", "#8c564b", "#17becf", "#bcbd22"]  # for --lib allocators


def color(name):
    return COLORS.get(name, "#444")


def library_dirs():
    dirs = []
    multiarch = None
    r = run_quiet(["gcc", "-print-multiarch"])
    if r.returncode == 0 and r.stdout.strip():
        multiarch = r.stdout.strip()
    for base in ("/usr/lib", "/lib", "/usr/local/lib"):
        if multiarch:
            dirs.append(os.path.join(base, multiarch))
        dirs.append(base)
    dirs.append("/usr/lib64")
    return dirs


def find_library(soname):
    for d in library_dirs():
        p = os.path.join(d, soname)
        if os.path.exists(p):
            return p
    r = run_quiet(["/sbin/ldconfig", "-p"])
    if r.returncode == 0:
        for line in r.stdout.splitlines():
            line = line.strip()
            if line.startswith(soname + " ") and "=>" in line:
                p = line.split("=>", 1)[1].strip()
                if os.path.exists(p):
                    return p
    return None


def package_version(pkg):
    if not pkg or not shutil.which("dpkg-query"):
        return ""
    r = run_quiet(["dpkg-query", "-W", "-f=${Version}", pkg])
    return r.stdout.strip() if r.returncode == 0 else ""


def install_peers(missing_pkgs):
    """apt-get install the missing packages (root only)."""
    if not missing_pkgs:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        note(f"  not root or no apt-get: not installing {' '.join(missing_pkgs)}")
        return
    cmd = ["apt-get", "install", "-y", "-q"] + missing_pkgs
    note(f"  installing: {' '.join(cmd)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = run_quiet(cmd, env=env)
    if r.returncode != 0:
        note("  apt-get install failed; running apt-get update and trying again")
        run_quiet(["apt-get", "update", "-q"], env=env)
        r = run_quiet(cmd, env=env)
        if r.returncode != 0:
            note("  apt-get install failed:\n    " + "\n    ".join(r.stdout.strip().splitlines()[-5:]))


def build_oxmalloc(no_build):
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    if not os.path.isabs(target):
        target = os.path.join(ROOT, target)
    lib = os.path.join(target, "release", "liboxmalloc.so")
    if not no_build:
        note("building oxmalloc: cargo build --release")
        r = subprocess.run(["cargo", "build", "--release"], cwd=ROOT)
        if r.returncode != 0:
            return None, "cargo build --release failed"
    if not os.path.exists(lib):
        return None, "liboxmalloc.so not found (run cargo build --release)"
    return lib, None


def probe_allocator(name, lib):
    """Check that malloc really comes from the allocator we mean to measure."""
    r = run_quiet([os.path.join(BENCH_DIR, "probe")], env=clean_env(preload=lib))
    got = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode != 0 or "cannot be preloaded" in r.stdout:
        return f"probe failed: {r.stdout.strip()[:200]}"
    if lib is None:
        if "libc.so" not in os.path.basename(got):
            return f"malloc comes from {got}, expected libc"
    elif os.path.realpath(got) != os.path.realpath(lib):
        return f"malloc comes from {got}, expected {lib}"
    return None


