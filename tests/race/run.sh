#!/usr/bin/env bash
# Stress tests of the lock-free protocols, each run under LD_PRELOAD:
#  - remote_free_race.c against a build with the test-only `race-window` feature (a remote
#    freer pauses between publishing its block and queueing the slab), then against the
#    shipped release library.
#
#   tests/race/run.sh [SECONDS]      (default 3 s per run)
#
# 0.1's protocol crashed the race-window build in every run (and the release build in
# about one run in three). Prints PASS/FAIL lines and "race: N passed, N failed".
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 2
export PATH="$HOME/.cargo/bin:$PATH"
seconds=${1:-3}
out=target/race
mkdir -p "$out"
pass=0
fail=0

if ! cargo build --quiet --release --features race-window --target-dir target/race-window; then
  echo "race: race-window build failed"
  echo "race: 0 passed, 1 failed"
  exit 1
fi
cargo build --quiet --release || exit 1
${CC:-cc} -O2 -g -pthread -o "$out/remote_free_race" tests/race/remote_free_race.c -ldl || exit 1

run() {
  local name=$1 lib=$2
  shift 2
  if timeout 120 env LD_PRELOAD="$root/$lib" "$out/remote_free_race" "$@" >"$out/$name.log" 2>&1; then
    echo "PASS $name: $(grep rounds "$out/$name.log")"
    pass=$((pass + 1))
  else
    echo "FAIL $name (exit $?):"
    tail -5 "$out/$name.log" | sed 's/^/    | /'
    fail=$((fail + 1))
  fi
}

for i in 1 2 3; do
  run "remote-free-window-$i" target/race-window/release/liboxmalloc.so "$seconds" 3 2
done
run "remote-free-release" target/release/liboxmalloc.so "$seconds" 3 2
echo "race: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
