#!/usr/bin/env bash
# Build and run the C tests against liboxmalloc.
#
#   c_tests/run.sh [LIBDIR] [TEST...]
#
# LIBDIR holds liboxmalloc.so (default: target/release, relative to the repo
# root). TEST names (file names in c_tests/ without .c or .cpp) limit the run to
# those tests. Every c_tests/*.c (and *.cpp, with $CXX, when it is installed) is
# built twice into target/c_tests/:
#   NAME.linked  linked with -loxmalloc (rpath to LIBDIR)
#   NAME.plain   linked against libc only, run with LD_PRELOAD=LIBDIR/liboxmalloc.so
# and each binary is run with a 60 s timeout. A test exiting with status 77
# was skipped (it says why). The last line is the summary:
#   c_tests: N passed, N failed[, N skipped]
# and the script exits non-zero if any run failed.
#
# Environment: CC (default cc), CXX (default g++), CFLAGS (added to the build flags),
# OXTEST_EXCLUDE (names of tests not to run, separated by spaces),
# OXTEST_ALLOW_GLIBC=1 (tests accept a malloc that is not oxmalloc's; only for
# developing the tests), OXTEST_VERBOSE=1 (show every test's output).

set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root" || exit 2

libdir=${1:-target/release}
if [ $# -gt 0 ]; then shift; fi
only=("$@")

cc=${CC:-cc}
cxx=${CXX:-g++}
extra_cflags=${CFLAGS:-}
timeout_s=60
skip_status=77

if ! abs_libdir=$(cd "$libdir" 2>/dev/null && pwd); then
    echo "c_tests: library directory '$libdir' does not exist (build with: cargo build --release)" >&2
    echo "c_tests: 0 passed, 1 failed"
    exit 2
fi
lib="$abs_libdir/liboxmalloc.so"
if [ ! -f "$lib" ]; then
    echo "c_tests: $lib not found (build with: cargo build --release)" >&2
    echo "c_tests: 0 passed, 1 failed"
    exit 2
fi

out="$root/target/c_tests"
mkdir -p "$out" || exit 2

passed=0
failed=0
skipped=0

show_log() {
    # Indented tail of a log, so a failure explains itself.
    local log=$1
    if [ -s "$log" ]; then
        tail -n 25 "$log" | sed 's/^/    | /'
    fi
}

describe_status() {
    local st=$1
    if [ "$st" -eq 124 ] || [ "$st" -eq 137 ]; then
        echo "timed out after ${timeout_s}s (exit $st)"
    elif [ "$st" -gt 128 ]; then
        local sig=$((st - 128))
        echo "killed by signal $sig ($(kill -l "$sig" 2>/dev/null || echo '?'))"
    else
        echo "exit code $st"
    fi
}

# run_one NAME MODE LOG CMD...
run_one() {
    local name=$1 mode=$2 log=$3
    shift 3
    local st=0
    timeout -k 5 "$timeout_s" "$@" >"$log" 2>&1 || st=$?
    if [ "$st" -eq 0 ]; then
        echo "PASS $name ($mode)"
        passed=$((passed + 1))
        if [ "${OXTEST_VERBOSE:-0}" = 1 ]; then show_log "$log"; fi
    elif [ "$st" -eq "$skip_status" ]; then
        local why
        why=$(grep -m1 '^SKIP:' "$log" | sed 's/^SKIP: *//')
        echo "SKIP $name ($mode): ${why:-no reason given}"
        skipped=$((skipped + 1))
    else
        local why
        why=$(grep -m1 -E 'CHECK failed|FATAL' "$log")
        echo "FAIL $name ($mode): $(describe_status "$st")${why:+: $why}"
        failed=$((failed + 1))
        show_log "$log"
    fi
}

cflags=(-O1 -g -Wall -pthread)
# shellcheck disable=SC2206
[ -n "$extra_cflags" ] && cflags+=($extra_cflags)

shopt -s nullglob
sources=("$here"/*.c)
if command -v "$cxx" >/dev/null 2>&1; then
    sources+=("$here"/*.cpp)
fi
if [ ${#sources[@]} -eq 0 ]; then
    echo "c_tests: no tests found in $here" >&2
    echo "c_tests: 0 passed, 1 failed"
    exit 2
fi

for src in "${sources[@]}"; do
    file=$(basename "$src")
    name=${file%.*}
    rel="c_tests/$file"
    compiler=$cc
    [ "${file##*.}" = cpp ] && compiler=$cxx
    if [ ${#only[@]} -gt 0 ]; then
        want=0
        for o in "${only[@]}"; do [ "$o" = "$name" ] && want=1; done
        [ $want -eq 1 ] || continue
    fi
    case " ${OXTEST_EXCLUDE:-} " in *" $name "*) continue ;; esac

    linked="$out/$name.linked"
    plain="$out/$name.plain"

    if "$compiler" "${cflags[@]}" "$rel" -Iinclude -L"$abs_libdir" -loxmalloc \
        -Wl,-rpath,"$abs_libdir" -ldl -o "$linked" >"$out/$name.linked.build.log" 2>&1; then
        run_one "$name" linked "$out/$name.linked.log" env -u LD_PRELOAD "$linked"
    else
        echo "FAIL $name (linked): build failed"
        show_log "$out/$name.linked.build.log"
        failed=$((failed + 1))
    fi

    if "$compiler" "${cflags[@]}" "$rel" -Iinclude -ldl -o "$plain" \
        >"$out/$name.plain.build.log" 2>&1; then
        run_one "$name" preload "$out/$name.preload.log" env LD_PRELOAD="$lib" "$plain"
    else
        echo "FAIL $name (preload): build failed"
        show_log "$out/$name.plain.build.log"
        failed=$((failed + 1))
    fi
done

if [ "$skipped" -gt 0 ]; then
    echo "c_tests: $passed passed, $failed failed, $skipped skipped"
else
    echo "c_tests: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
