"""The redis workload: a real server, built once from Debian's source package with the
libc allocator (MALLOC=libc, so that LD_PRELOAD decides its malloc), run under each
allocator and driven by redis-benchmark on glibc. Scored by the client's wall time; the
peak RSS, CPU time and page faults are the server's."""

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time

from .common import BENCH_DIR, clean_env, note, read_file, read_result, run_quiet
from .spawn import spawn_measured
from .workloads import REDIS_CLIENTS, REDIS_REQUESTS, REDIS_TESTS

REDIS_DIR = os.path.join(BENCH_DIR, "redis")


def deb_src_lists():
    """The system's `deb` sources turned into `deb-src` ones: (one-line text, deb822 text)."""
    one, parts = [], []
    lists = ["/etc/apt/sources.list"]
    d = "/etc/apt/sources.list.d"
    names = sorted(os.listdir(d)) if os.path.isdir(d) else []
    lists += [os.path.join(d, n) for n in names if n.endswith(".list")]
    for path in lists:
        try:
            with open(path) as f:
                for line in f:
                    if line.strip().startswith("deb "):
                        one.append("deb-src " + line.strip()[4:])
        except OSError:
            pass
    for path in [os.path.join(d, n) for n in names if n.endswith(".sources")]:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for para in re.split(r"\n\s*\n", text):
            fields = {}
            for line in para.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
                continue
            lines = [re.sub(r"^Types:.*$", "Types: deb-src", l, flags=re.I)
                     for l in para.strip().splitlines() if not l.startswith("#")]
            parts.append("\n".join(lines))
    return "\n".join(one) + "\n", "\n\n".join(parts) + "\n"


def redis_links_libc_malloc(server):
    """MALLOC=libc: malloc must be an undefined dynamic symbol (bound at run time)."""
    if not shutil.which("nm"):
        return None  # the LD_DEBUG check still runs
    r = run_quiet(["nm", "-D", server])
    if r.returncode != 0:
        return f"nm -D {server} failed"
    if not re.search(r"^\s+U malloc(@|$)", r.stdout, re.M):
        return "redis-server does not import malloc (built with its own allocator?)"
    r = run_quiet(["nm", server])
    if r.returncode == 0 and re.search(r" [Tt] (je_)?mallocx?$", r.stdout, re.M):
        return "redis-server carries its own allocator (jemalloc); expected MALLOC=libc"
    return None


def ensure_redis():
    """Return (path of redis-server, None), building it once; or (None, why not)."""
    server = os.path.join(REDIS_DIR, "redis-server")
    if os.path.exists(server) and run_quiet([server, "--version"]).returncode == 0:
        return server, None
    for tool, pkg in (("apt-get", "apt"), ("dpkg-source", "dpkg-dev"), ("make", "make")):
        if not shutil.which(tool):
            return None, f"{tool} not installed (package {pkg}), needed to build redis-server"
    apt_dir = os.path.join(BENCH_DIR, "redis-apt")
    src_dir = os.path.join(BENCH_DIR, "redis-src")
    for d in (apt_dir, src_dir):
        shutil.rmtree(d, ignore_errors=True)
    download = os.path.join(apt_dir, "download")
    for d in ("lists/partial", "cache/archives/partial", "parts", "download"):
        os.makedirs(os.path.join(apt_dir, d), exist_ok=True)
    os.makedirs(REDIS_DIR, exist_ok=True)
    one, parts = deb_src_lists()
    if not one.strip() and not parts.strip():
        return None, "no deb source in /etc/apt to derive a deb-src entry from"
    with open(os.path.join(apt_dir, "sources.list"), "w") as f:
        f.write(one)
    with open(os.path.join(apt_dir, "parts", "src.sources"), "w") as f:
        f.write(parts)
    # a private apt configuration: the system's source lists and caches are not touched
    opts = ["-q", "-o", f"Dir::Etc::SourceList={apt_dir}/sources.list",
            "-o", f"Dir::Etc::SourceParts={apt_dir}/parts",
            "-o", f"Dir::State::Lists={apt_dir}/lists",
            "-o", f"Dir::Cache={apt_dir}/cache", "-o", "Debug::NoLocking=1"]
    if os.geteuid() == 0:
        opts += ["-o", "APT::Sandbox::User=root"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    env.pop("LD_PRELOAD", None)
    note("redis: fetching Debian's redis source (apt-get source, private deb-src list)")
    r = run_quiet(["apt-get"] + opts + ["update"], env=env)
    if r.returncode != 0:
        return None, "apt-get update of a deb-src list failed: " + (r.stdout.strip().splitlines() or ["?"])[-1]
    fetch_errors = [l.strip() for l in r.stdout.splitlines() if l.startswith(("Err:", "W: Failed"))]
    r = run_quiet(["apt-get"] + opts + ["source", "--download-only", "redis"], env=env, cwd=download)
    dscs = sorted(n for n in os.listdir(download) if n.startswith("redis_") and n.endswith(".dsc"))
    if r.returncode != 0 or not dscs:
        if fetch_errors:
            return None, f"cannot fetch Debian's source index (offline?): {fetch_errors[0]}"
        return None, "apt-get source redis failed: " + (r.stdout.strip().splitlines() or ["?"])[-1]
    r = run_quiet(["dpkg-source", "-x", os.path.join(download, dscs[-1]), src_dir], env=env)
    if r.returncode != 0:
        return None, "dpkg-source -x failed: " + (r.stdout.strip().splitlines() or ["?"])[-1]
    jobs = str(min(2, os.cpu_count() or 1))
    note(f"redis: building src/redis-server from {dscs[-1]} with make MALLOC=libc -j{jobs} "
         "(once; about a minute on 2 cores)")
    log = os.path.join(REDIS_DIR, "build.log")
    t0 = time.monotonic()
    with open(log, "w") as f:
        r = subprocess.run(["make", "MALLOC=libc", f"-j{jobs}"], cwd=src_dir, env=env,
                           stdout=f, stderr=subprocess.STDOUT)
    took = time.monotonic() - t0
    built = os.path.join(src_dir, "src", "redis-server")
    if r.returncode != 0 or not os.path.exists(built):
        return None, f"make MALLOC=libc failed (log: {log})"
    why = redis_links_libc_malloc(built)
    if why:
        return None, why
    shutil.copy2(built, server)
    with open(os.path.join(REDIS_DIR, "SOURCE"), "w") as f:
        f.write(f"{dscs[-1][:-4]}, make MALLOC=libc -j{jobs}, built in {took:.0f} s\n")
    note(f"redis: built in {took:.0f} s")
    shutil.rmtree(src_dir, ignore_errors=True)
    shutil.rmtree(apt_dir, ignore_errors=True)
    return server, None


def redis_binding(server, lib):
    """Check with the dynamic loader's own trace that redis-server's malloc is lib's."""
    env = clean_env({"LD_DEBUG": "bindings", "LD_BIND_NOW": "1"}, preload=lib)
    r = run_quiet([server, "--version"], env=env)
    pat = re.compile(r"binding file \S*redis-server \[0\] to (\S+) \[0\]: normal symbol `malloc'")
    m = pat.search(r.stdout)
    if not m:
        return "LD_DEBUG=bindings shows no binding of redis-server's malloc"
    got = os.path.realpath(m.group(1))
    if lib is None:
        return None if "libc.so" in os.path.basename(got) else f"redis-server's malloc is {got}, not libc's"
    return None if got == os.path.realpath(lib) else f"redis-server's malloc is {got}, not {lib}"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_call(port, *words, timeout=10.0):
    """Send one command (RESP) to 127.0.0.1:port; return the reply as text, or None if the
    server closed the connection without one (SHUTDOWN)."""
    req = f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(w.encode())}\r\n".encode() + w.encode() + b"\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(req)
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, rest = data.partition(b"\r\n")
            if not sep:
                continue
            if head[:1] == b"$" and int(head[1:]) >= 0 and len(rest) < int(head[1:]) + 2:
                continue
            break
    if not data:
        return None
    head, _, rest = data.partition(b"\r\n")
    kind, body = head[:1], head[1:].decode()
    if kind == b"-":
        raise OSError(f"redis error: {body}")
    if kind == b"$":
        return None if int(body) < 0 else rest[:int(body)].decode("utf-8", "replace")
    return body


def run_redis(w, lib, alloc_env, scale, reference, timeout, r, run_dir, out_path, err_path):
    """One redis run: the server (under the allocator) through the launcher, in the
    background; redis-benchmark (on glibc) through the launcher, timed; then a check of
    the data, SHUTDOWN NOSAVE, and the server's rusage from the launcher's wait4.
    Fills r; returns (server stdout, client stdout, client stderr)."""
    server = os.path.join(REDIS_DIR, "redis-server")
    port = free_port()
    requests = REDIS_REQUESTS * scale
    srv_out = os.path.join(run_dir, "server.out")
    srv_result = srv_out + ".rusage"
    if os.path.exists(srv_result):
        os.unlink(srv_result)
    argv = [os.path.join(BENCH_DIR, "launch"), str(int(math.ceil(timeout))), srv_result,
            lib or "-", server, "--port", str(port), "--bind", "127.0.0.1",
            "--protected-mode", "yes", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", run_dir, "--logfile", ""]
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, srv_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
               (os.POSIX_SPAWN_OPEN, 2, srv_out, os.O_WRONLY | os.O_APPEND, 0)]
    pid = os.posix_spawn(argv[0], argv, clean_env(alloc_env), file_actions=actions)
    launcher_done = False

    def stop_launcher():
        nonlocal launcher_done
        if not launcher_done:
            os.kill(pid, signal.SIGKILL)  # the server dies with it (PDEATHSIG)
            os.waitpid(pid, 0)
            launcher_done = True

    def server_out():
        return read_file(srv_out)

    deadline = time.monotonic() + 30
    ready = False
    while time.monotonic() < deadline and not ready:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            launcher_done = True
            break
        try:
            ready = redis_call(port, "PING", timeout=1.0) == "PONG"
        except (OSError, ValueError):
            time.sleep(0.05)
    if not ready:
        stop_launcher()
        r.status = "server did not start" + (" (exited)" if launcher_done else "")
        return server_out(), b"", b""
    client = [shutil.which("redis-benchmark") or "redis-benchmark", "-h", "127.0.0.1",
              "-p", str(port), "-n", str(requests), "-q", "-t", REDIS_TESTS,
              "-d", "100", "-c", str(REDIS_CLIENTS)]
    try:
        m = spawn_measured(client, clean_env(), None, None, out_path, err_path, timeout)
    except OSError as e:
        stop_launcher()
        r.status, r.detail = "spawn failed", str(e)
        return server_out(), b"", b""
    out, err = read_file(out_path), read_file(err_path)
    r.wall = m["wall"]
    checks = {}
    try:
        checks["dbsize"] = redis_call(port, "DBSIZE")
        checks["counter"] = redis_call(port, "GET", "counter:__rand_int__")
        checks["strlen"] = redis_call(port, "STRLEN", "key:__rand_int__")
        checks["llen"] = redis_call(port, "LLEN", "mylist")
        checks["hlen"] = redis_call(port, "HLEN", "myhash")
        checks["scard"] = redis_call(port, "SCARD", "myset")
        redis_call(port, "SHUTDOWN", "NOSAVE")
    except (OSError, ValueError) as e:
        checks["error"] = str(e)
    deadline = time.monotonic() + 30
    while not launcher_done and time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            launcher_done = True
            if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                r.status = "launcher failed"
                return server_out(), out, err
        else:
            time.sleep(0.02)
    if not launcher_done:
        stop_launcher()
        r.status = "server did not shut down"
        return server_out(), out, err
    sm = read_result(srv_result)
    r.user, r.sys = sm["user"], sm["sys"]
    r.cpu = r.user + r.sys
    r.maxrss_kb, r.minflt = sm["maxrss_kb"], sm["minflt"]
    text = out.decode("utf-8", "replace").replace("\r", "\n")
    done = sorted({l.split(":")[0].strip().lower() for l in text.splitlines()
                   if "requests per second" in l})
    want = sorted(REDIS_TESTS.split(","))
    r.result = (f"tests={','.join(done)} dbsize={checks.get('dbsize')} "
                f"counter={checks.get('counter')} strlen={checks.get('strlen')} "
                f"llen={checks.get('llen')} hlen={checks.get('hlen')} scard={checks.get('scard')}")
    srv_status = sm["status"]
    if m["timed_out"]:
        r.status = f"timeout ({timeout:.0f} s)"
    elif os.WIFSIGNALED(srv_status) or sm["timed_out"]:
        r.status = "server crashed" if not sm["timed_out"] else "server timed out"
    elif os.WEXITSTATUS(srv_status) != 0:
        r.status = f"server exit {os.WEXITSTATUS(srv_status)}"
    elif not os.WIFEXITED(m["status"]) or os.WEXITSTATUS(m["status"]) != 0:
        r.status = "client failed"
    elif "error" in checks:
        r.status = "check failed: " + checks["error"][:60]
    elif done != want or checks["counter"] != str(requests) or checks["strlen"] != "100":
        r.status = "wrong output"
    elif reference is not None and r.result != reference:
        r.status = "wrong output"
    else:
        r.status = "ok"
        r.metrics = {"kreq_per_s": len(want) * requests / r.wall / 1000}
    return server_out(), out, err


