#!/usr/bin/env bash
# What a user does with oxmalloc besides calling malloc, checked on the shipped library
# (target/release/liboxmalloc.so, under LD_PRELOAD):
#  - options: OXMALLOC_VERBOSE's start-up lines, every boolean spelling, one warning per
#    unknown name or bad value (and the default kept), byte suffixes, signal names, paths;
#  - statistics: the text report survives a program that closes fd 2 (cat does); the JSON
#    report parses and its figures match a program that leaves known blocks live; with
#    OXMALLOC_STATS_FILE=...%p every process (parent, forked child, exec'd program) writes
#    its own file;
#  - scripts/oxrun: --help, unknown options, --stats, --stats=json, --stats-file, --verbose,
#    --check, --harden, --, --profile, and the program's exit status;
#  - scripts/install: install into a temporary prefix, build with pkg-config (shared and
#    static), run, check NEEDED and the stripped library, uninstall, prefix empty again.
# Prints PASS/FAIL/SKIP lines and "usage: N passed, N failed[, N skipped]".
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 2
export PATH="$HOME/.cargo/bin:$PATH"
lib="$root/target/release/liboxmalloc.so"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
out="$root/target/usage"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The checks below set the options they test; none may leak in from the caller.
for v in $(env | sed -n 's/^\(OXMALLOC_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
# A small file that cat reads (cat closes stderr before it exits).
catfile=/etc/hostname
[ -r "$catfile" ] || catfile=/etc/passwd

pass=0
fail=0
skip=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
bad() {
  echo "FAIL $1: $2"
  fail=$((fail + 1))
  if [ -n "${3:-}" ] && [ -s "$3" ]; then tail -n 20 "$3" | sed 's/^/    | /'; fi
}
skipped() { echo "SKIP $1: $2"; skip=$((skip + 1)); }

if [ ! -f "$lib" ]; then
  echo "usage: $lib is missing (build with: cargo build --release)"
  echo "usage: 0 passed, 1 failed"
  exit 1
fi
if ! cc -O1 -g -Wall -o "$out/known_live" tests/usage/known_live.c 2>"$out/build.log"; then
  bad "build known_live" "cc failed" "$out/build.log"
  echo "usage: $pass passed, $fail failed"
  exit 1
fi
have_python=0
command -v python3 >/dev/null && have_python=1

# run_ox ENV... -- CMD...: runs CMD under LD_PRELOAD with the given environment; stdout in
# $tmp/out, stderr in $tmp/err, status in $status.
run_ox() {
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  status=0
  env -u LD_PRELOAD "${envs[@]}" LD_PRELOAD="$lib" "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
}

# --- options ---------------------------------------------------------------------------
run_ox OXMALLOC_VERBOSE=1 -- /bin/true
if [ "$(grep -c "^oxmalloc $version: pid [0-9]*, features: .*, TLS: initial-exec" "$tmp/err")" = 1 ] &&
  [ "$(grep -c '^oxmalloc:   OXMALLOC_' "$tmp/err")" = 14 ] &&
  grep -Eq '^oxmalloc:   OXMALLOC_VERBOSE=on +\(environment\)$' "$tmp/err" &&
  grep -Eq '^oxmalloc:   OXMALLOC_PURGE_DELAY_MS=1000 +\(default\)$' "$tmp/err"; then
  ok "OXMALLOC_VERBOSE=1 prints the version, TLS model and every option once"
else
  bad "verbose" "unexpected start-up lines" "$tmp/err"
fi

run_ox -- /bin/true
if [ ! -s "$tmp/err" ]; then
  ok "without options the library says nothing"
else
  bad "quiet by default" "stderr not empty" "$tmp/err"
fi

spelling_ok=1
for v in 1 true TRUE yes Yes on ON; do
  run_ox OXMALLOC_VERBOSE=1 OXMALLOC_CHECK=$v -- /bin/true
  grep -Eq '^oxmalloc:   OXMALLOC_CHECK=on +\(environment\)$' "$tmp/err" || { spelling_ok=0; echo "    OXMALLOC_CHECK=$v not on"; }
done
for v in 0 false False no NO off Off; do
  run_ox OXMALLOC_VERBOSE=1 OXMALLOC_CHECK=$v -- /bin/true
  grep -Eq '^oxmalloc:   OXMALLOC_CHECK=off +\(environment\)$' "$tmp/err" || { spelling_ok=0; echo "    OXMALLOC_CHECK=$v not off"; }
  grep -q warning "$tmp/err" && { spelling_ok=0; echo "    OXMALLOC_CHECK=$v warned"; }
done
[ $spelling_ok = 1 ] && ok "booleans: 1/0 true/false yes/no on/off in any case" || bad "booleans" "see above"

run_ox OXMALLOC_CHECK=false -- "$out/known_live" overflow
if [ $status = 0 ] && grep -q "not detected" "$tmp/out"; then
  ok "OXMALLOC_CHECK=false leaves check mode off"
else
  bad "OXMALLOC_CHECK=false" "status $status" "$tmp/err"
fi
run_ox OXMALLOC_CHECK=yes -- "$out/known_live" overflow
if [ $status != 0 ] && grep -q "write past the end" "$tmp/err"; then
  ok "OXMALLOC_CHECK=yes turns check mode on (a one-byte overflow is reported)"
else
  bad "OXMALLOC_CHECK=yes" "status $status" "$tmp/err"
fi

run_ox OXMALLOC_BOGUS=1 -- /bin/true
if [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "^oxmalloc: warning: unknown option OXMALLOC_BOGUS ignored (options: OXMALLOC_CHECK .*OXMALLOC_GUARD_INTERVAL)$" "$tmp/err"; then
  ok "an unknown OXMALLOC_ name gets one warning line listing the options"
else
  bad "unknown option" "want one warning line" "$tmp/err"
fi

bad_values_ok=1
for entry in OXMALLOC_PURGE_DELAY_MS=abc OXMALLOC_PURGE_DELAY_MS=-1 OXMALLOC_PURGE_DELAY_MS=4294967296 \
  OXMALLOC_STATS=xml OXMALLOC_PROF_INTERVAL=1.5M OXMALLOC_PROF_SIGNAL=SIGKILL OXMALLOC_VERBOSE=2 \
  OXMALLOC_PROF_DIR=/$(head -c 300 /dev/zero | tr '\0' a); do
  name=${entry%%=*}
  run_ox "$entry" -- /bin/true
  if [ "$(wc -l <"$tmp/err")" != 1 ] || ! grep -q "^oxmalloc: warning: invalid value $name=.* (accepted: .*); using the default" "$tmp/err"; then
    bad_values_ok=0
    echo "    ${entry:0:60}:"; sed 's/^/      /' "$tmp/err" | cut -c1-200
  fi
done
run_ox OXMALLOC_VERBOSE=1 OXMALLOC_PURGE_DELAY_MS=abc -- /bin/true
grep -Eq '^oxmalloc:   OXMALLOC_PURGE_DELAY_MS=1000 +\(default\)$' "$tmp/err" || { bad_values_ok=0; echo "    default not kept"; }
[ $bad_values_ok = 1 ] && ok "a bad value gets one warning line with the accepted values; the default stays" || bad "bad values" "see above"

run_ox OXMALLOC_VERBOSE=on OXMALLOC_PROF=1 OXMALLOC_PROF_INTERVAL=64k OXMALLOC_PROF_DUMP_BYTES=3M \
  OXMALLOC_PROF_SIGNAL=USR2 OXMALLOC_PROF_DIR=prof/out OXMALLOC_PROF_DUMP_PEAK=yes \
  OXMALLOC_PURGE_DELAY_MS=250 OXMALLOC_STATS=json OXMALLOC_STATS_FILE=/dev/null -- /bin/true
values_ok=1
for want in 'OXMALLOC_PROF=on' 'OXMALLOC_PROF_INTERVAL=65536' 'OXMALLOC_PROF_DUMP_BYTES=3145728' \
  'OXMALLOC_PROF_SIGNAL=SIGUSR2 \(12\)' "OXMALLOC_PROF_DIR=$root/prof/out" 'OXMALLOC_PROF_DUMP_PEAK=on' \
  'OXMALLOC_PURGE_DELAY_MS=250' 'OXMALLOC_STATS=json' 'OXMALLOC_STATS_FILE=/dev/null'; do
  grep -Eq "^oxmalloc:   $want +\(environment\)$" "$tmp/err" || { values_ok=0; echo "    missing: $want"; }
done
grep -q warning "$tmp/err" && values_ok=0
run_ox OXMALLOC_VERBOSE=1 OXMALLOC_PROF_SIGNAL=12 -- /bin/true
grep -Eq 'OXMALLOC_PROF_SIGNAL=SIGUSR2 \(12\) +\(environment\)' "$tmp/err" || { values_ok=0; echo "    signal by number"; }
[ $values_ok = 1 ] && ok "values: k/M suffixes, signal names and numbers, relative paths made absolute" || bad "values" "see above" "$tmp/err"

# --- statistics -------------------------------------------------------------------------
run_ox OXMALLOC_STATS=1 -- cat "$catfile"
if grep -q "^oxmalloc $version report, pid [0-9]*: .*cat (cat $catfile)$" "$tmp/err" &&
  grep -q "^  live " "$tmp/err" && grep -q "^  small " "$tmp/err"; then
  ok "OXMALLOC_STATS=1 cat $catfile prints the report although cat closes stderr"
else
  bad "stats with cat" "no report" "$tmp/err"
fi

run_ox OXMALLOC_STATS=text -- "$out/known_live" close2 5
if grep -q "report, pid $(sed -n 's/^pid //p' "$tmp/out"): " "$tmp/err"; then
  ok "a program that closes fd 2 itself still gets its report"
else
  bad "close2" "no report" "$tmp/err"
fi

if [ $have_python = 1 ]; then
  run_ox OXMALLOC_STATS=json -- "$out/known_live" 0
  cp "$tmp/err" "$tmp/base.json"
  pid0=$(sed -n 's/^pid //p' "$tmp/out")
  run_ox OXMALLOC_STATS=json -- "$out/known_live" 777
  cp "$tmp/err" "$tmp/full.json"
  pid1=$(sed -n 's/^pid //p' "$tmp/out")
  if python3 - "$tmp/base.json" "$tmp/full.json" "$pid0" "$pid1" "$version" >"$tmp/py" 2>&1 <<'EOF'
import json, sys
base, full = (json.loads(open(p).read()) for p in sys.argv[1:3])
pid0, pid1, version = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def cls(r, size):
    return next((c for c in r["small"]["classes"] if c["block_bytes"] == size),
                {"live_blocks": 0, "live_bytes": 0})
problems = []
def want(cond, what):
    if not cond:
        problems.append(what)
for r, pid in ((base, pid0), (full, pid1)):
    want(r["oxmalloc"] == version and r["schema"] == 1, "version/schema")
    want(r["pid"] == pid, f"pid {r['pid']} != {pid}")
    want(r["exe"].endswith("/known_live"), "exe " + r["exe"])
    want(r["cmdline"].split()[-1] in ("0", "777"), "cmdline " + r["cmdline"])
    live = r["live"]
    want(live["bytes"] == live["small_bytes"] + live["medium_bytes"] + live["huge_bytes"], "live bytes sum")
    want(live["blocks"] == live["small_blocks"] + live["medium_blocks"] + live["huge_blocks"], "live blocks sum")
    want(live["small_blocks"] == sum(c["live_blocks"] for c in r["small"]["classes"]), "class sum")
    want(r["held"]["peak_bytes"] >= r["held"]["bytes"] >= live["bytes"], "held >= live")
    want(r["memory"]["mapped_bytes"] >= r["memory"]["resident_bytes"] > 0, "resident")
    want(r["memory"]["free_bytes"] == r["memory"]["mapped_bytes"] - live["bytes"], "free bytes")
    # A thread gets its heap (and counts) at its first small allocation.
    want(live["small_blocks"] == 0 or r["threads"]["live"] >= 1, "threads")
    want(r["failed_requests"] == 0, "failed requests")
d = cls(full, 208)["live_blocks"] - cls(base, 208)["live_blocks"]
want(d == 777, f"208-byte class: {d} more live blocks, want 777")
want(cls(full, 208)["live_bytes"] - cls(base, 208)["live_bytes"] == 777 * 208, "208-byte class bytes")
for r in (base, full):
    want(r["medium"]["live_blocks"] >= 3 and r["huge"]["live_blocks"] >= 1, "medium/huge blocks")
want(full["medium"]["live_blocks"] == base["medium"]["live_blocks"], "medium blocks differ")
want(full["medium"]["live_bytes"] == base["medium"]["live_bytes"], "medium bytes differ")
want(base["medium"]["live_bytes"] >= 3 * 300 * 1024, "medium bytes")
want(5 << 20 <= base["huge"]["live_bytes"] <= (5 << 20) + 8192 * base["huge"]["live_blocks"], "huge bytes")
want(full["live"]["small_bytes"] - base["live"]["small_bytes"] >= 777 * 208, "small bytes")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print("ok")
EOF
  then
    ok "JSON report parses; 777 live blocks of 208 bytes, medium and huge blocks as the program left them"
  else
    bad "json report" "$(tr '\n' ';' <"$tmp/py")" "$tmp/full.json"
  fi

  rm -rf "$tmp/files" && mkdir "$tmp/files"
  run_ox OXMALLOC_STATS=json "OXMALLOC_STATS_FILE=$tmp/files/r.%p.json" -- "$out/known_live" fork
  files_ok=1
  for role in parent child exec; do
    p=$(sed -n "s/^$role //p" "$tmp/out")
    f="$tmp/files/r.$p.json"
    if [ -z "$p" ] || [ ! -s "$f" ] || ! python3 -c "import json,sys; r=json.load(open(sys.argv[1])); sys.exit(r['pid'] != int(sys.argv[2]))" "$f" "$p"; then
      files_ok=0
      echo "    no valid report for the $role (pid $p)"
    fi
  done
  [ "$(ls "$tmp/files" | wc -l)" = 3 ] || { files_ok=0; echo "    files: $(ls "$tmp/files" | tr '\n' ' ')"; }
  [ -s "$tmp/err" ] && { files_ok=0; echo "    stderr not empty"; }
  [ $files_ok = 1 ] && ok "OXMALLOC_STATS_FILE with %p: parent, forked child and exec'd program each write their own" || bad "stats files" "see above" "$tmp/err"
else
  skipped "json report" "python3 is not installed (needed to parse the JSON)"
  skipped "stats files" "python3 is not installed"
fi

# --- scripts/oxrun ----------------------------------------------------------------------
oxrun() {
  status=0
  env -u OXMALLOC_STATS -u OXMALLOC_VERBOSE -u OXMALLOC_CHECK -u OXMALLOC_HARDEN scripts/oxrun "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
}
oxrun --help
if [ $status = 0 ] && grep -q "^usage: scripts/oxrun \[OPTIONS\] \[--\] PROGRAM" "$tmp/out" && grep -q -- "--profile DIR" "$tmp/out"; then
  ok "oxrun --help explains itself"
else
  bad "oxrun --help" "status $status" "$tmp/out"
fi
oxrun --bogus /bin/true
if [ $status = 2 ] && grep -q "unknown option '--bogus'" "$tmp/err" && grep -q "^usage:" "$tmp/err"; then
  ok "oxrun: an unknown option is an error with the usage text"
else
  bad "oxrun unknown option" "status $status" "$tmp/err"
fi
oxrun sh -c 'exit 7'
[ $status = 7 ] && ok "oxrun exits with the program's status" || bad "oxrun status" "status $status, want 7"
oxrun -- sh -c 'echo "$0"' -x
[ $status = 0 ] && grep -qx -- "-x" "$tmp/out" && ok "oxrun: -- ends oxrun's options" || bad "oxrun --" "status $status" "$tmp/out"
oxrun --stats cat "$catfile"
grep -q "report, pid" "$tmp/err" && ok "oxrun --stats" || bad "oxrun --stats" "no report" "$tmp/err"
if [ $have_python = 1 ]; then
  oxrun --stats=json python3 -c 'print(1)'
  tail -n 1 "$tmp/err" | python3 -m json.tool >/dev/null 2>&1 && ok "oxrun --stats=json python3 gives one JSON object" || bad "oxrun --stats=json" "not JSON" "$tmp/err"
fi
oxrun "--stats-file=$tmp/oxrun.%p.txt" /bin/true
ls "$tmp"/oxrun.*.txt >/dev/null 2>&1 && grep -q "report, pid" "$tmp"/oxrun.*.txt && ok "oxrun --stats-file=PATH" || bad "oxrun --stats-file" "no file" "$tmp/err"
oxrun --verbose --check /bin/true
grep -Eq "OXMALLOC_CHECK=on +\(environment\)" "$tmp/err" && grep -Eq "OXMALLOC_VERBOSE=on" "$tmp/err" && ok "oxrun --verbose --check" || bad "oxrun --verbose --check" "" "$tmp/err"
oxrun --verbose --harden /bin/true
grep -Eq "OXMALLOC_HARDEN=on +\(environment\)" "$tmp/err" && ok "oxrun --harden" || bad "oxrun --harden" "" "$tmp/err"
oxrun --verbose --guard /bin/true
grep -Eq "OXMALLOC_GUARD=on +\(environment\)" "$tmp/err" && ok "oxrun --guard" || bad "oxrun --guard" "" "$tmp/err"
oxrun --profile "$tmp/prof" sh -c 'echo "$OXMALLOC_PROF $OXMALLOC_PROF_DIR"; exit 5'
if [ $status = 5 ] && grep -qx "1 $tmp/prof" "$tmp/out"; then
  if [ -f tools/oxprof/Cargo.toml ]; then
    ok "oxrun --profile DIR runs with the profiler options and the converter, keeping the exit status"
  elif grep -q "profiler tool is not built" "$tmp/err"; then
    ok "oxrun --profile DIR sets the profiler options, says the profiler tool is not built, keeps the exit status"
  else
    bad "oxrun --profile" "no message about the missing profiler tool" "$tmp/err"
  fi
else
  bad "oxrun --profile" "status $status" "$tmp/out"
fi

# --- scripts/install --------------------------------------------------------------------
prefix="$tmp/prefix"
install_ok=1
why=""
if ! scripts/install --no-build --prefix "$prefix" >"$tmp/install.log" 2>&1; then
  install_ok=0; why="install failed"
else
  cat >"$tmp/app.c" <<'EOF'
#include <oxmalloc.h>
#include <stdio.h>
#include <stdlib.h>
int main(void)
{
    void *p = malloc(100);
    ox_stats s;
    ox_stats_get(&s);
    int ours = ox_owns(p);
    printf("oxmalloc %s owns %d live %zu\n", ox_version(), ours, s.live_blocks);
    free(p);
    return ours == 1 && s.live_blocks >= 1 ? 0 : 1;
}
EOF
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  # shellcheck disable=SC2046
  if ! cc "$tmp/app.c" -o "$tmp/app" $(pkg-config --cflags --libs oxmalloc) 2>"$tmp/cc.log"; then
    install_ok=0; why="pkg-config build failed: $(head -c 300 "$tmp/cc.log")"
  elif ! env -u LD_PRELOAD LD_LIBRARY_PATH="$prefix/lib" "$tmp/app" | grep -q "^oxmalloc $version owns 1"; then
    install_ok=0; why="the program linked with pkg-config did not run on oxmalloc"
  elif ! readelf -d "$tmp/app" | grep -q "NEEDED.*\[liboxmalloc.so.0\]"; then
    install_ok=0; why="NEEDED is not liboxmalloc.so.0"
  elif ! readelf -d "$prefix/lib/liboxmalloc.so.$version" | grep -q "SONAME.*\[liboxmalloc.so.0\]"; then
    install_ok=0; why="soname"
  elif [ "$(readlink "$prefix/lib/liboxmalloc.so.0")" != "liboxmalloc.so.$version" ] ||
    [ "$(readlink "$prefix/lib/liboxmalloc.so")" != "liboxmalloc.so.0" ]; then
    install_ok=0; why="symlinks"
  elif readelf -S "$prefix/lib/liboxmalloc.so.$version" | grep -q "\.debug_info" ||
    ! readelf -S "$prefix/lib/liboxmalloc.so.$version" | grep -q "\.gnu_debuglink" ||
    ! readelf -S "$prefix/lib/.debug/liboxmalloc.so.$version.debug" | grep -q "\.debug_info"; then
    install_ok=0; why="the installed library is not stripped with a debug link, or the debug file lacks debug info"
  elif ! cc "$tmp/app.c" -o "$tmp/app_static" $(pkg-config --cflags --libs oxmalloc-static) 2>"$tmp/cc.log"; then
    install_ok=0; why="static build failed: $(head -c 300 "$tmp/cc.log")"
  elif readelf -d "$tmp/app_static" | grep -q liboxmalloc || ! env -u LD_PRELOAD "$tmp/app_static" | grep -q "owns 1"; then
    install_ok=0; why="the statically linked program depends on the shared library or does not run on oxmalloc"
  elif ! env -u LD_PRELOAD LD_PRELOAD="$prefix/lib/liboxmalloc.so.0" OXMALLOC_VERBOSE=1 /bin/true 2>&1 | grep -q "^oxmalloc $version"; then
    install_ok=0; why="LD_PRELOAD of the installed library"
  fi
  unset PKG_CONFIG_PATH
  if ! scripts/install --uninstall --prefix "$prefix" >>"$tmp/install.log" 2>&1; then
    install_ok=0; why="${why:+$why; }uninstall failed"
  elif [ -n "$(find "$prefix" -mindepth 1)" ]; then
    install_ok=0; why="${why:+$why; }left behind: $(find "$prefix" -mindepth 1 | tr '\n' ' ')"
  fi
fi
[ $install_ok = 1 ] && ok "scripts/install: pkg-config builds (shared: NEEDED liboxmalloc.so.0; static), stripped library with debug link; uninstall empties the prefix" || bad "install" "$why" "$tmp/install.log"

echo
if [ $skip -gt 0 ]; then
  echo "usage: $pass passed, $fail failed, $skip skipped"
else
  echo "usage: $pass passed, $fail failed"
fi
[ $fail -eq 0 ]
