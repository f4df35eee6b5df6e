#!/usr/bin/env bash
# Set-user-ID programs must not obey OXMALLOC_*, and report files never follow links.
#
# The way it happens: an administrator lists liboxmalloc.so in /etc/ld.so.preload, so
# every program of the machine runs on it, set-user-ID ones included; an unprivileged user
# then runs a set-user-ID program with OXMALLOC_STATS_FILE or OXMALLOC_PROF_DIR naming a
# directory only root may write. The test builds that machine in a private mount namespace
# (an overlay on /etc holds the ld.so.preload, so the real /etc is never touched), puts a
# set-user-ID root copy and a set-group-ID copy of a small program (tests/setuid/probe.c)
# and a plain copy beside it, and runs them as `nobody`:
#   - the set-user-ID and set-group-ID copies run on oxmalloc (the probe says so) in
#     secure-execution mode, and nothing appears in the root-only directory, nor on their
#     stderr (OXMALLOC_VERBOSE is ignored too);
#   - the plain copy, same user, same variables aimed at a directory it may write, does
#     write its report and its profile, and prints the verbose lines: the options still
#     work where they should;
#   - a symbolic link at the stats file's name is not followed (the report goes to stderr
#     with a message), and one at a profile's temporary name is replaced, not written
#     through.
# Needs root, unshare(1), setpriv(1) and overlayfs; skips with the reason otherwise.
# Prints PASS/FAIL/SKIP lines and "setuid: N passed, N failed[, N skipped]".
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
lib="$root/target/release/liboxmalloc.so"

if [ "${1:-}" = "--inside" ]; then
  # In the private mount namespace, as root. $2: the work directory (a tmpfs).
  t=$2
  cd "$t" || exit 2
  pass=0
  fail=0
  ok() { echo "PASS $1"; pass=$((pass + 1)); }
  bad() {
    echo "FAIL $1: $2"
    fail=$((fail + 1))
    for f in "${@:3}"; do [ -s "$f" ] && sed 's/^/    | /' "$f" | tail -n 15; done
  }
  as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }

  mkdir -p "$t/etc-upper" "$t/etc-work" "$t/bin" "$t/lib" "$t/forbidden" "$t/open"
  cp "$lib" "$t/lib/liboxmalloc.so"
  chmod 755 "$t" "$t/bin" "$t/lib"
  chmod 644 "$t/lib/liboxmalloc.so"
  chmod 700 "$t/forbidden"
  chmod 777 "$t/open"
  cp "$t/probe" "$t/bin/probe-setuid"
  cp "$t/probe" "$t/bin/probe-setgid"
  cp "$t/probe" "$t/bin/probe-plain"
  chown root:root "$t/bin/"probe-*
  chmod 4755 "$t/bin/probe-setuid"
  chmod 2755 "$t/bin/probe-setgid"
  chmod 755 "$t/bin/probe-plain"
  if ! mount -t overlay overlay \
    -o "lowerdir=/etc,upperdir=$t/etc-upper,workdir=$t/etc-work" /etc 2>"$t/mount.err"; then
    echo "SKIP setuid: cannot mount an overlay on /etc here ($(head -c 200 "$t/mount.err"))"
    echo "setuid: 0 passed, 0 failed, 1 skipped"
    exit 0
  fi
  echo "$t/lib/liboxmalloc.so" >/etc/ld.so.preload

  options=(OXMALLOC_VERBOSE=1 OXMALLOC_STATS=1 OXMALLOC_PROF=1 OXMALLOC_PROF_INTERVAL=1)
  for kind in setuid setgid; do
    rm -rf "${t:?}/forbidden/"*
    out="$t/$kind.out" err="$t/$kind.err"
    as_nobody env "${options[@]}" OXMALLOC_STATS_FILE="$t/forbidden/stats.%p.txt" \
      OXMALLOC_PROF_DIR="$t/forbidden" "$t/bin/probe-$kind" >"$out" 2>"$err"
    st=$?
    written=$(find "$t/forbidden" -mindepth 1 | head -n 5)
    if [ $st -ne 0 ]; then
      bad "$kind program runs" "exit status $st" "$out" "$err"
    elif ! grep -qx 'oxmalloc=1' "$out"; then
      bad "$kind program runs on oxmalloc (ld.so.preload)" "malloc is not oxmalloc's" "$out" "$err"
    elif ! grep -qx 'secure=1' "$out"; then
      bad "$kind program in secure-execution mode" "AT_SECURE is not set" "$out" "$err"
    elif [ -n "$written" ]; then
      bad "$kind program ignores OXMALLOC_STATS_FILE and OXMALLOC_PROF_DIR" \
        "it wrote in a directory its caller cannot: $written" "$out" "$err"
    elif grep -q 'oxmalloc' "$err"; then
      bad "$kind program ignores OXMALLOC_VERBOSE and OXMALLOC_STATS" "it printed:" "$err"
    else
      ok "$kind program runs on oxmalloc in secure mode and ignores every OXMALLOC_* option"
    fi
  done

  out="$t/plain.out" err="$t/plain.err"
  as_nobody env "${options[@]}" OXMALLOC_STATS_FILE="$t/open/stats.%p.txt" \
    OXMALLOC_PROF_DIR="$t/open" "$t/bin/probe-plain" >"$out" 2>"$err"
  st=$?
  if [ $st -ne 0 ] || ! grep -qx 'oxmalloc=1' "$out" || ! grep -qx 'secure=0' "$out"; then
    bad "plain program runs on oxmalloc" "exit $st" "$out" "$err"
  elif ! ls "$t/open/"stats.*.txt >/dev/null 2>&1; then
    bad "plain program honours OXMALLOC_STATS_FILE" "no report in $t/open" "$out" "$err"
  elif ! ls "$t/open/"oxprof.*.exit.raw >/dev/null 2>&1; then
    bad "plain program honours OXMALLOC_PROF_DIR" "no profile in $t/open" "$out" "$err"
  elif ! grep -q 'OXMALLOC_PROF_INTERVAL=1 .*(environment)' "$err"; then
    bad "plain program honours OXMALLOC_VERBOSE" "no verbose lines" "$err"
  else
    ok "the same program without the set-user-ID bit honours the options"
  fi

  # A link at the report's name: refused, the report goes to stderr, the target untouched.
  ln -s "$t/forbidden/victim" "$t/open/linked.txt"
  out="$t/link.out" err="$t/link.err"
  as_nobody env OXMALLOC_STATS=1 OXMALLOC_STATS_FILE="$t/open/linked.txt" \
    "$t/bin/probe-plain" >"$out" 2>"$err"
  st=$?
  rm -f "$t/open/linked.txt"
  # As root, the plain probe could write through the link into the root-only directory
  # if the link were followed; run that too.
  ln -s "$t/forbidden/victim" "$t/open/rootlink.txt"
  env OXMALLOC_STATS=1 OXMALLOC_STATS_FILE="$t/open/rootlink.txt" \
    "$t/bin/probe-plain" >>"$out" 2>>"$err"
  st2=$?
  if [ $st -ne 0 ] || [ $st2 -ne 0 ]; then
    bad "stats file: a symbolic link is not followed" "exit $st / $st2" "$out" "$err"
  elif [ -e "$t/forbidden/victim" ]; then
    bad "stats file: a symbolic link is not followed" "the link's target was written" "$err"
  elif ! grep -q 'cannot open OXMALLOC_STATS_FILE' "$err"; then
    bad "stats file: a symbolic link is not followed" "no message on stderr" "$err"
  else
    ok "stats file: a symbolic link at its name is refused, with a message; the report goes to stderr"
  fi

  # A link at a profile's temporary name (what ox_prof_dump(PATH) writes before renaming).
  ln -s "$t/forbidden/victim2" "$t/open/p.raw.tmp"
  out="$t/dump.out" err="$t/dump.err"
  env OXMALLOC_PROF=1 OXMALLOC_PROF_DIR="$t/open" "$t/bin/probe-plain" dump "$t/open/p.raw" >"$out" 2>"$err"
  st=$?
  if [ $st -ne 0 ] || ! grep -qx 'dump=0' "$out"; then
    bad "profile: a link at the temporary name" "exit $st, dump failed" "$out" "$err"
  elif [ -e "$t/forbidden/victim2" ]; then
    bad "profile: a link at the temporary name is not written through" "its target was written" "$out"
  elif [ -L "$t/open/p.raw" ] || [ ! -s "$t/open/p.raw" ] || [ -e "$t/open/p.raw.tmp" ]; then
    bad "profile: a link at the temporary name" "p.raw is not a plain file, or the temporary stayed" "$out"
  else
    ok "profile: a link at the temporary name is replaced by a new file, never written through"
  fi

  echo "setuid: $pass passed, $fail failed"
  [ $fail -eq 0 ]
  exit
fi

cd "$root" || exit 2
skip() {
  echo "SKIP setuid: $1"
  echo "setuid: 0 passed, 0 failed, 1 skipped"
  exit 0
}
[ -f "$lib" ] || { echo "setuid: $lib not found"; echo "setuid: 0 passed, 1 failed"; exit 1; }
[ "$(id -u)" = 0 ] || skip "needs root (to make a set-user-ID program and a private mount namespace)"
for tool in unshare setpriv mount; do
  command -v "$tool" >/dev/null || skip "$tool is not installed"
done
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
chmod 755 "$t" # nobody must reach the programs below it
if ! cc -O1 -Wall -o "$t/probe" tests/setuid/probe.c -ldl 2>"$t/cc.err"; then
  cat "$t/cc.err"
  echo "setuid: 0 passed, 1 failed"
  exit 1
fi
# A tmpfs for the programs and the overlay's upper layer: not mounted nosuid, and gone
# with the namespace.
mkdir "$t/ns"
unshare --mount --propagation private bash -c '
  if ! mount -t tmpfs -o mode=755 oxsetuid "$1"; then
    echo "SKIP setuid: cannot mount a tmpfs in a private mount namespace"
    echo "setuid: 0 passed, 0 failed, 1 skipped"
    exit 0
  fi
  cp "$2" "$1/probe"
  exec bash "$3" --inside "$1"
' bash "$t/ns" "$t/probe" "$root/tests/setuid/run.sh" </dev/null 2>&1 || {
  st=$?
  grep -q . /dev/null
  exit $st
}
