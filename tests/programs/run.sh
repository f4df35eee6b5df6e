#!/usr/bin/env bash
# Real programs under oxmalloc.
#
#   tests/programs/run.sh [LIB]        LIB defaults to target/release/liboxmalloc.so
#   OXTEST_LIB=none tests/programs/run.sh
#                                      the same programs without LD_PRELOAD (to develop
#                                      this script against glibc malloc)
#   OXTEST_ONLY="git sqlite3" ...      run only the named tests
#   OXTEST_KEEP=1 ...                  keep the temporary directories (their path is printed)
#   OXTEST_TAIL=N ...                  lines of stderr shown for a failure (default 20)
#
# Tests: binding, binding-family (the loader binds the malloc family to LIB),
# python-threads, python-json (PYTHONMALLOC=malloc), git, sqlite3, gcc, cpp-threads
# (g++ and a threaded C++ program), cargo (cargo, rustc and the Rust program built,
# tests/programs/crate), perl, lua, bash, redis (server and client on 127.0.0.1).
# rustc links its own malloc, so oxmalloc does not serve rustc itself: that is noted,
# not failed.
#
# Each program runs under LD_PRELOAD=<absolute LIB>, in its own temporary directory,
# under `timeout`, and its output is checked, not only its exit code. Before a program
# runs, the dynamic loader's symbol bindings (LD_DEBUG=bindings) are checked to show
# that the malloc family of that very executable binds to LIB.
#
# Prints "PASS name", "FAIL name: reason" (followed by the last lines of the program's
# stderr) or "SKIP name: why", then one summary line:
#   programs: N passed, N failed, N skipped
# and exits non-zero if any test failed.

set -u
CALLER_PWD=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
ROOT=$PWD
HERE=$ROOT/tests/programs

unset LD_PRELOAD LD_DEBUG LD_DEBUG_OUTPUT LD_BIND_NOW
export LC_ALL=C
export PYTHONDONTWRITEBYTECODE=1
ulimit -c 0 2>/dev/null

# ---------------------------------------------------------------------------------
# The library

# A LIB given by the caller is relative to the caller's directory; the default is
# relative to the repository root.
LIB_ARG=${1:-}
if [ -z "$LIB_ARG" ] && [ -n "${OXTEST_LIB:-}" ] && [ "${OXTEST_LIB}" != none ]; then
    LIB_ARG=$OXTEST_LIB
fi
if [ -n "$LIB_ARG" ]; then
    case $LIB_ARG in /*) ;; *) LIB_ARG=$CALLER_PWD/$LIB_ARG ;; esac
else
    LIB_ARG=target/release/liboxmalloc.so
fi

PRELOAD=""
if [ "${OXTEST_LIB:-}" = none ]; then
    echo "note: OXTEST_LIB=none: running without LD_PRELOAD (glibc malloc)"
else
    if [ ! -f "$LIB_ARG" ]; then
        echo "FAIL binding: library $LIB_ARG not found (build it: cargo build --release)"
        echo "programs: 0 passed, 1 failed, 0 skipped"
        exit 1
    fi
    PRELOAD=$(cd "$(dirname "$LIB_ARG")" && pwd -P)/$(basename "$LIB_ARG")
    echo "note: LD_PRELOAD=$PRELOAD"
fi

# ---------------------------------------------------------------------------------
# Bookkeeping

WORK=$(mktemp -d "${TMPDIR:-/tmp}/oxprograms.XXXXXX") || exit 2
if [ "${OXTEST_KEEP:-0}" = 1 ]; then
    echo "note: temporary directories are kept in $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi
trap 'exit 130' INT TERM

NPASS=0
NFAIL=0
NSKIP=0
TAIL_LINES=${OXTEST_TAIL:-20}

# run_test NAME FUNCTION
# FUNCTION runs in a subshell inside its own directory $TDIR. It returns 0 (pass),
# 1 (fail: reason in $TDIR/.reason, stderr file to show in $TDIR/.errfile, more
# detail in $TDIR/.detail) or 3 (skip: reason in $TDIR/.reason). A note for a passing
# test may be left in $TDIR/.note.
run_test() {
    local name=$1 fn=$2
    if [ -n "${OXTEST_ONLY:-}" ]; then
        case " $OXTEST_ONLY " in *" $name "*) ;; *) return 0 ;; esac
    fi
    local dir=$WORK/$name
    mkdir -p "$dir"
    # the shell's own messages (such as job reports of a crashed background server) go
    # to .shell.err, shown on failure
    ( TDIR=$dir; cd "$dir" && exec </dev/null && "$fn" ) 2>"$dir/.shell.err"
    local rc=$?
    case $rc in
        0)
            echo "PASS $name"
            [ -s "$dir/.note" ] && sed 's/^/  note: /' "$dir/.note"
            NPASS=$((NPASS + 1))
            ;;
        3)
            echo "SKIP $name: $(cat "$dir/.reason" 2>/dev/null)"
            NSKIP=$((NSKIP + 1))
            ;;
        *)
            local reason="exited with status $rc"
            [ -s "$dir/.reason" ] && reason=$(cat "$dir/.reason")
            echo "FAIL $name: $reason"
            if [ -s "$dir/.detail" ]; then
                head -n 40 "$dir/.detail" | sed 's/^/    > /'
            fi
            local ef
            ef=$(cat "$dir/.errfile" 2>/dev/null)
            if [ -n "$ef" ] && [ -s "$ef" ]; then
                echo "    last lines of stderr ($(basename "$ef")):"
                tail -n "$TAIL_LINES" "$ef" | sed 's/^/    | /'
            elif [ -n "$ef" ]; then
                echo "    (stderr was empty)"
            fi
            if [ -s "$dir/.shell.err" ]; then
                echo "    shell messages:"
                tail -n 5 "$dir/.shell.err" | cut -c1-300 | sed 's/^/    ! /'
            fi
            NFAIL=$((NFAIL + 1))
            ;;
    esac
}

# Helpers for use inside a test function ------------------------------------------

why() { printf '%s\n' "$*" >"$TDIR/.reason"; }
detail() { printf '%s\n' "$*" >>"$TDIR/.detail"; }
note() { printf '%s\n' "$*" >>"$TDIR/.note"; }
skip() { why "$*"; exit 3; }

describe_status() {  # STATUS TIMEOUT
    local rc=$1 t=$2
    if [ "$rc" -eq 124 ]; then
        echo "timed out after ${t}s"
    elif [ "$rc" -eq 137 ]; then
        echo "killed by SIGKILL (timed out after ${t}s and did not stop on SIGTERM, or out of memory)"
    elif [ "$rc" -gt 128 ] && [ "$rc" -le 192 ]; then
        local sig=$((rc - 128))
        echo "killed by signal $sig (SIG$(kill -l "$sig" 2>/dev/null || echo '?'))"
    else
        echo "exit status $rc"
    fi
}

# run STEP TIMEOUT CMD...  runs CMD under the preload (if any) and the timeout, with
# stdout in $TDIR/STEP.out and stderr in $TDIR/STEP.err. On failure it records why and
# returns 1. Stdin is whatever the caller redirects (default /dev/null).
run() {
    local step=$1 t=$2
    shift 2
    local out=$TDIR/$step.out err=$TDIR/$step.err
    printf '%s\n' "$err" >"$TDIR/.errfile"
    # (the braces keep bash's own "Segmentation fault" job message out of the report:
    # the status says it)
    if [ -n "$PRELOAD" ]; then
        { timeout -k 10 "$t" env LD_PRELOAD="$PRELOAD" "$@" >"$out" 2>"$err"; } 2>/dev/null
    else
        { timeout -k 10 "$t" "$@" >"$out" 2>"$err"; } 2>/dev/null
    fi
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        why "$step: $(short_cmd "$@") -> $(describe_status "$rc" "$t")"
        if [ -s "$out" ]; then
            echo "last lines of stdout:" >>"$TDIR/.detail"
            tail -n 5 "$out" | cut -c1-300 >>"$TDIR/.detail"
        fi
        return 1
    fi
    return 0
}

# short_cmd CMD...: the command line, shortened for a report
short_cmd() {
    local s="$*"
    s=${s//$'\n'/ }
    s=${s//$HERE\//}
    [ ${#s} -gt 160 ] && s="${s:0:160}..."
    printf '%s' "$s"
}

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
    if [ "$2" != "$3" ]; then
        why "$1: got '$2', expected '$3'"
        return 1
    fi
}

# expect_file STEP EXPECTED_FILE: $TDIR/STEP.out must equal EXPECTED_FILE
expect_file() {
    if ! cmp -s "$TDIR/$1.out" "$2"; then
        why "$1: output differs from the expected output"
        diff "$2" "$TDIR/$1.out" | head -n 30 | sed 's/^/(< expected, > got) /' >>"$TDIR/.detail"
        return 1
    fi
}

# expect_line STEP REGEX: the output of STEP must be exactly one line matching REGEX
expect_line() {
    local got
    got=$(cat "$TDIR/$1.out")
    if ! [[ $got =~ ^$2$ ]]; then
        why "$1: output '$(head -c 300 "$TDIR/$1.out" | tr '\n' ' ')' does not match '$2'"
        return 1
    fi
}

# need CMD... : skip the test if a command is missing
need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
    done
}

# The allocation functions oxmalloc exports; a binding of any of them to another
# object means that object's allocator, not ours, serves that program.
FAMILY="malloc free calloc realloc posix_memalign aligned_alloc memalign valloc pvalloc malloc_usable_size reallocarray"

# bindings_of LOGPREFIX: summarise LD_DEBUG=bindings logs (LOGPREFIX.*) for FAMILY:
# "ours SYM" lines for bindings to the preloaded library, "other FROM -> TO SYM" for
# bindings elsewhere. A binding to an executable's own canonical PLT entry (a non-PIE
# executable that takes the function's address) is not "elsewhere" when that
# executable's reference binds to the library.
bindings_of() {
    cat "$1".* 2>/dev/null | awk -v lib="$PRELOAD" -v family=" $FAMILY " '
        /binding file / && /normal symbol `/ {
            line = $0
            sub(/^[ \t]*[0-9]+:[ \t]*binding file /, "", line)
            i = index(line, " to "); if (i == 0) next
            from = substr(line, 1, i - 1)
            rest = substr(line, i + 4)
            j = index(rest, ": normal symbol `"); if (j == 0) next
            to = substr(rest, 1, j - 1)
            sym = substr(rest, j + 17)
            sym = substr(sym, 1, index(sym, "'"'"'") - 1)
            if (index(family, " " sym " ") == 0) next
            sub(/ \[[0-9]+\]$/, "", from); sub(/ \[[0-9]+\]$/, "", to)
            if (to == lib) { print "ours " sym; ours[from, sym] = 1 }
            else if (to != from) { nother++; ofrom[nother] = from; oto[nother] = to; osym[nother] = sym }
        }
        END {
            # a binding to an object that itself imports the symbol from the library is
            # its canonical PLT entry (a non-PIE executable that takes the address):
            # it leads to the library
            for (k = 1; k <= nother; k++)
                if (!((oto[k], osym[k]) in ours)) print "other " ofrom[k] " -> " oto[k] " " osym[k]
        }' | sort -u
}

# preload_live LABEL [--own-allocator-ok] CMD...: run CMD (a quick invocation such as
# --version) with LD_BIND_NOW=1 LD_DEBUG=bindings and check that malloc binds to the
# preloaded library and no member of the malloc family binds elsewhere. With
# --own-allocator-ok, a program that brings its own malloc only earns a note.
preload_live() {
    [ -n "$PRELOAD" ] || return 0
    local label=$1
    shift
    local own_ok=0
    if [ "$1" = --own-allocator-ok ]; then own_ok=1; shift; fi
    local log=$TDIR/ldbind.$label
    rm -f "$log".*
    { timeout -k 5 60 env LD_PRELOAD="$PRELOAD" LD_BIND_NOW=1 LD_DEBUG=bindings \
        LD_DEBUG_OUTPUT="$log" "$@" >"$TDIR/ldbind.$label.out" 2>"$TDIR/ldbind.$label.err"; } 2>/dev/null
    local rc=$?
    printf '%s\n' "$TDIR/ldbind.$label.err" >"$TDIR/.errfile"
    if [ "$rc" -ne 0 ]; then
        why "preload check of $label: $(short_cmd "$@") -> $(describe_status "$rc" 60)"
        return 1
    fi
    local summary
    summary=$(bindings_of "$log")
    if ! grep -qx "ours malloc" <<<"$summary"; then
        if [ $own_ok = 1 ] && grep -q "^other .* malloc$" <<<"$summary"; then
            note "$label brings its own malloc ($(grep -m1 '^other .* malloc$' <<<"$summary" | sed 's/^other //; s/ malloc$//')): $(basename "$PRELOAD") is loaded but does not serve it"
            return 0
        fi
        why "preload is not live for $label ($*): malloc does not bind to $(basename "$PRELOAD")"
        grep '^other ' <<<"$summary" | sed 's/^other /binds elsewhere: /' >>"$TDIR/.detail"
        return 1
    fi
    if grep -q '^other ' <<<"$summary"; then
        if [ $own_ok = 1 ]; then
            note "$label: $(grep '^other ' <<<"$summary" | sed 's/^other //' | head -n 3 | tr '\n' ';')"
            return 0
        fi
        why "preload only partly live for $label: some of the malloc family binds elsewhere"
        grep '^other ' <<<"$summary" | sed 's/^other /binds elsewhere: /' >>"$TDIR/.detail"
        return 1
    fi
    return 0
}

# ---------------------------------------------------------------------------------
# binding: the loader binds the malloc family to the library

test_binding() {
    [ -n "$PRELOAD" ] || skip "no library (OXTEST_LIB=none)"
    local true_bin=/bin/true
    [ -x "$true_bin" ] || true_bin=/usr/bin/true
    local log=$TDIR/ld.true
    LD_PRELOAD="$PRELOAD" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$log" timeout 30 "$true_bin" \
        2>"$TDIR/true.err"
    local rc=$?
    printf '%s\n' "$TDIR/true.err" >"$TDIR/.errfile"
    if [ "$rc" -ne 0 ]; then
        why "$true_bin under the preload -> $(describe_status "$rc" 30)"
        return 1
    fi
    local have=" $(bindings_of "$log" | awk '$1 == "ours" { printf "%s ", $2 }')"
    local want="malloc free calloc realloc"
    if command -v cc >/dev/null 2>&1; then
        # /bin/true does not call posix_memalign: a small program that does
        cat >probe.c <<'EOF'
#include <stdlib.h>
int main(void) {
    void *p = 0;
    if (posix_memalign(&p, 64, 100) != 0) return 1;
    p = realloc(p, 200);
    free(calloc(3, 5));
    free(malloc(7));
    free(p);
    return 0;
}
EOF
        if ! cc -O0 -o probe probe.c 2>"$TDIR/cc.err"; then
            printf '%s\n' "$TDIR/cc.err" >"$TDIR/.errfile"
            why "could not compile the posix_memalign probe"
            return 1
        fi
        log=$TDIR/ld.probe
        LD_PRELOAD="$PRELOAD" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$log" timeout 30 ./probe \
            2>"$TDIR/probe.err"
        rc=$?
        printf '%s\n' "$TDIR/probe.err" >"$TDIR/.errfile"
        if [ "$rc" -ne 0 ]; then
            why "posix_memalign probe under the preload -> $(describe_status "$rc" 30)"
            return 1
        fi
        have+=" $(bindings_of "$log" | awk '$1 == "ours" { printf "%s ", $2 }')"
        want+=" posix_memalign"
    else
        note "posix_memalign not checked: no C compiler"
    fi
    local s missing=""
    for s in $want; do
        case "$have " in *" $s "*) ;; *) missing+=" $s" ;; esac
    done
    if [ -n "$missing" ]; then
        why "not bound to $(basename "$PRELOAD"):$missing"
        grep -h "normal symbol \`\(malloc\|free\|calloc\|realloc\|posix_memalign\)'" "$TDIR"/ld.* \
            | sed 's/^ *[0-9]*: *//' | sort -u >>"$TDIR/.detail"
        return 1
    fi
    return 0
}

# binding-family: every exported allocation entry point of the contract binds to the
# library when a program references it (the program only takes their addresses)
test_binding_family() {
    [ -n "$PRELOAD" ] || skip "no library (OXTEST_LIB=none)"
    need cc
    local syms="malloc free calloc realloc posix_memalign aligned_alloc memalign valloc pvalloc malloc_usable_size reallocarray mallopt malloc_trim mallinfo2 malloc_stats malloc_info"
    {
        echo '#define _GNU_SOURCE'
        echo '#include <stdlib.h>'
        echo '#include <malloc.h>'
        echo 'int main(int argc, char **argv) {'
        echo '    (void)argv;'
        echo '    void *volatile table[] = {'
        local s
        for s in $syms; do echo "        (void *)$s,"; done
        echo '    };'
        echo '    return argc > 100 ? (int)(long)table[0] : 0;'
        echo '}'
    } >family.c
    if ! cc -O0 -o family family.c 2>"$TDIR/cc.err"; then
        printf '%s\n' "$TDIR/cc.err" >"$TDIR/.errfile"
        why "could not compile the family probe"
        return 1
    fi
    local log=$TDIR/ld.family
    LD_PRELOAD="$PRELOAD" LD_BIND_NOW=1 LD_DEBUG=bindings LD_DEBUG_OUTPUT="$log" timeout 30 ./family \
        2>"$TDIR/family.err"
    local rc=$?
    printf '%s\n' "$TDIR/family.err" >"$TDIR/.errfile"
    if [ "$rc" -ne 0 ]; then
        why "family probe under the preload -> $(describe_status "$rc" 30)"
        return 1
    fi
    local missing=""
    for s in $syms; do
        if ! grep -h "binding file ./family \[0\] to .*: normal symbol \`$s'" "$log".* \
            | grep -qF " to $PRELOAD ["; then
            missing+=" $s"
            grep -h "binding file ./family \[0\] to .*: normal symbol \`$s'" "$log".* \
                | sed 's/^ *[0-9]*: *//' | head -n 1 >>"$TDIR/.detail"
        fi
    done
    if [ -n "$missing" ]; then
        why "not bound to $(basename "$PRELOAD"):$missing"
        return 1
    fi
    return 0
}

# ---------------------------------------------------------------------------------
# python

find_python() {
    command -v python3 >/dev/null 2>&1 || return 1
    # the interpreter itself, not a launcher script in front of it
    python3 -c 'import sys; print(sys.executable)' 2>/dev/null
}

test_python_threads() {
    local py
    py=$(find_python) || skip "python3 is not installed"
    preload_live python "$py" --version || return 1
    PYTHONMALLOC=malloc run py_threads 300 "$py" "$HERE/py_threads.py" || return 1
    expect_line py_threads 'py_threads ok [0-9a-f]{16}' || return 1
    # Again with a 1 ms purge delay, so that the decay (which also cleans up the heaps of
    # exited threads) runs all the time beside the threads and the forks.
    OXMALLOC_PURGE_DELAY_MS=1 PYTHONMALLOC=malloc run py_threads_decay 120 "$py" \
        "$HERE/py_threads.py" || return 1
    expect_line py_threads_decay 'py_threads ok [0-9a-f]{16}'
}

test_python_json() {
    local py
    py=$(find_python) || skip "python3 is not installed"
    preload_live python "$py" --version || return 1
    PYTHONMALLOC=malloc run json 180 "$py" "$HERE/py_json.py" || return 1
    expect_line json 'json ok [0-9]+ [0-9a-f]{16}'
}

# ---------------------------------------------------------------------------------
# git

# The tree of the second commit, for the files the awk program below generates. It
# depends only on file names and contents: if the generator changes, recompute it with
# OXTEST_LIB=none (the failure message prints the new value).
GIT_WANT_TREE=c3787508ccef2b5d056baf34d8f8c3168e26a11d

test_git() {
    need git
    preload_live git git --version || return 1
    export HOME=$TDIR/home GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0
    mkdir -p "$HOME"
    unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_DEFAULT_HASH \
        GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_CEILING_DIRECTORIES GIT_CONFIG_GLOBAL
    export GIT_AUTHOR_NAME="Ox Test" GIT_AUTHOR_EMAIL="ox@example.invalid"
    export GIT_COMMITTER_NAME="Ox Test" GIT_COMMITTER_EMAIL="ox@example.invalid"
    export GIT_AUTHOR_DATE="2024-01-01T00:00:00Z" GIT_COMMITTER_DATE="2024-01-01T00:00:00Z"
    mkdir repo && cd repo || return 1

    run init 60 git init -q -b main . || return 1
    run config 60 git config user.name "Ox Test" || return 1
    run config 60 git config user.email "ox@example.invalid" || return 1
    run config 60 git config gc.auto 0 || return 1
    run config 60 git config maintenance.auto false || return 1

    # 3000 files in 70 nested directories; a few are large
    awk 'BEGIN {
        for (i = 0; i < 3000; i++) {
            d = sprintf("src/d%d/e%d", i % 10, i % 7)
            if (!(d in made)) { system("mkdir -p " d); made[d] = 1 }
            f = sprintf("%s/f%04d.txt", d, i)
            n = (i % 100 == 0) ? 3000 : 1 + i % 40
            for (j = 0; j < n; j++) printf "file %d line %d: %s\n", i, j, substr("abcdefghijklmnopqrstuvwxyz0123456789", 1 + (i + j) % 36) > f
            close(f)
        }
    }' || { why "could not generate the files"; return 1; }

    run add1 120 git add -A || return 1
    run commit1 120 git commit -q -m "first: 3000 files" || return 1

    # modify 300 files, delete 20, add 50
    local i d f
    for ((i = 3; i < 3000; i += 10)); do
        d="src/d$((i % 10))/e$((i % 7))"
        printf 'changed %d\n' "$i" >>"$(printf '%s/f%04d.txt' "$d" "$i")"
    done
    for ((i = 7; i < 3000; i += 150)); do
        d="src/d$((i % 10))/e$((i % 7))"
        rm "$(printf '%s/f%04d.txt' "$d" "$i")"
    done
    mkdir -p new/sub
    for ((i = 0; i < 50; i++)); do
        f=new/n$i.txt
        [ $((i % 2)) = 0 ] && f=new/sub/n$i.txt
        printf 'new file %d\n%s\n' "$i" "$(printf '%*s' $((i * 40)) '' | tr ' ' 'z')" >"$f"
    done

    run add2 120 git add -A || return 1
    run commit2 120 git commit -q -m "second: 300 changed, 20 deleted, 50 added" || return 1
    run diffstat 120 git diff --shortstat HEAD~1 HEAD || return 1
    local files_changed
    files_changed=$(awk '{ print $1 }' "$TDIR/diffstat.out")
    expect_eq "git diff --shortstat: files changed" "$files_changed" 370 || return 1

    run grep 120 git grep -l '^changed ' || return 1
    expect_eq "git grep -l: files with an appended line" "$(wc -l <"$TDIR/grep.out")" 300 || return 1

    run gc 300 git -c pack.threads=2 gc -q --prune=now || return 1
    run log 60 git log --oneline || return 1
    expect_eq "git log --oneline | wc -l" "$(wc -l <"$TDIR/log.out")" 2 || return 1
    run lsfiles 60 git ls-files || return 1
    expect_eq "git ls-files | wc -l" "$(wc -l <"$TDIR/lsfiles.out")" 3030 || return 1
    run count 60 git count-objects -v || return 1
    expect_eq "git count-objects: loose objects after gc" \
        "$(awk '$1 == "count:" { print $2 }' "$TDIR/count.out")" 0 || return 1
    expect_eq "git count-objects: packs after gc" \
        "$(awk '$1 == "packs:" { print $2 }' "$TDIR/count.out")" 1 || return 1
    run fsck 300 git fsck --full --strict --no-progress || return 1
    if [ -s "$TDIR/fsck.out" ]; then
        why "git fsck reported problems"
        head -n 20 "$TDIR/fsck.out" >>"$TDIR/.detail"
        printf '%s\n' "$TDIR/fsck.err" >"$TDIR/.errfile"
        return 1
    fi
    run status 60 git status --porcelain || return 1
    if [ -s "$TDIR/status.out" ]; then
        why "git status is not clean after the commit"
        head -n 20 "$TDIR/status.out" >>"$TDIR/.detail"
        return 1
    fi
    run tree 60 git rev-parse 'HEAD^{tree}' || return 1
    expect_eq "git tree of HEAD" "$(cat "$TDIR/tree.out")" "$GIT_WANT_TREE" || return 1

    # everything read back out of the pack equals the work tree
    run archive 120 git archive -o "$TDIR/head.tar" HEAD || return 1
    mkdir "$TDIR/export" && tar -xf "$TDIR/head.tar" -C "$TDIR/export" \
        || { why "could not unpack git archive output"; return 1; }
    if ! diff -r -q -x .git "$TDIR/repo" "$TDIR/export" >"$TDIR/exportdiff.txt" 2>&1; then
        why "git archive HEAD differs from the work tree"
        head -n 20 "$TDIR/exportdiff.txt" >>"$TDIR/.detail"
        return 1
    fi
    run show 60 git show HEAD~1:src/d3/e2/f0023.txt || return 1
    local want
    want=$(awk 'BEGIN { for (j = 0; j < 24; j++) printf "file 23 line %d: %s\n", j, substr("abcdefghijklmnopqrstuvwxyz0123456789", 1 + (23 + j) % 36) }')
    expect_eq "git show HEAD~1:src/d3/e2/f0023.txt" "$(cat "$TDIR/show.out")" "$want" || return 1
    return 0
}

# ---------------------------------------------------------------------------------
# sqlite3

test_sqlite3() {
    need sqlite3
    preload_live sqlite3 sqlite3 --version || return 1
    awk -f "$HERE/sqlite_expect.awk" >expected.txt || { why "awk failed"; return 1; }
    run sql 180 sqlite3 -batch -bail db.sqlite <"$HERE/sqlite_churn.sql" || return 1
    expect_file sql expected.txt || return 1
    # reopen the database file and check it again in a fresh process
    run reopen 120 sqlite3 -batch db.sqlite "PRAGMA integrity_check; SELECT count(*), sum(a) FROM t;" || return 1
    local want
    want=$(printf 'ok\n%s|%s' "$(sed -n 's/^count2|//p' expected.txt)" "$(sed -n 's/^sum_a2|//p' expected.txt)")
    expect_eq "sqlite3 after reopening" "$(cat "$TDIR/reopen.out")" "$want"
}

# ---------------------------------------------------------------------------------
# gcc

test_gcc() {
    need gcc awk
    local p
    preload_live gcc gcc --version || return 1
    for p in cc1 collect2; do
        p=$(gcc -print-prog-name=$p)
        [ -x "$p" ] && { preload_live "$(basename "$p")" "$p" --version || return 1; }
    done
    p=$(gcc -print-prog-name=as); p=$(command -v "$p") && { preload_live as "$p" --version || return 1; }
    p=$(gcc -print-prog-name=ld); p=$(command -v "$p") && { preload_live ld "$p" --version || return 1; }

    awk -v N=2000 -v C=big.c -f "$HERE/gen_c.awk" >expected.txt || { why "awk failed"; return 1; }
    run compile 400 gcc -O2 -Wall -Werror -o big big.c || return 1
    preload_live big ./big || return 1
    run big 60 ./big || return 1
    expect_file big expected.txt
}

# ---------------------------------------------------------------------------------
# C++ threads

# What cpp_threads.cpp prints; deterministic. Recompute with OXTEST_LIB=none if the
# program changes.
CPP_WANT="cpp ok 9e2e673fed05c7d4"

test_cpp_threads() {
    need g++
    preload_live g++ g++ --version || return 1
    local p
    p=$(g++ -print-prog-name=cc1plus)
    [ -x "$p" ] && { preload_live cc1plus "$p" --version || return 1; }
    run compile 300 g++ -O2 -pthread -Wall -Wextra -o cpp_threads "$HERE/cpp_threads.cpp" || return 1
    preload_live cpp_threads ./cpp_threads --probe || return 1
    run cpp_threads 120 ./cpp_threads || return 1
    expect_eq "cpp_threads output" "$(cat "$TDIR/cpp_threads.out")" "$CPP_WANT"
}

# ---------------------------------------------------------------------------------
# cargo (and rustc) building a small crate offline, then the program it built

# What the crate in tests/programs/crate prints; deterministic. Recompute with
# OXTEST_LIB=none if the crate changes.
RUST_WANT="rust ok cc727e7cf7038ed6"

test_cargo() {
    need cargo rustc
    preload_live cargo cargo --version || return 1
    local rustc_real
    rustc_real=$(rustc --print sysroot 2>/dev/null)/bin/rustc
    [ -x "$rustc_real" ] || rustc_real=$(command -v rustc)
    preload_live rustc --own-allocator-ok "$rustc_real" --version || return 1
    cp -r "$HERE/crate" "$TDIR/crate" && rm -f "$TDIR/crate/Cargo.lock"
    cd "$TDIR/crate" || return 1
    CARGO_TARGET_DIR=$TDIR/target CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0 \
        run build 400 cargo build --offline --release || return 1
    local exe=$TDIR/target/release/oxchurn
    [ -x "$exe" ] || { why "cargo reported success but $exe is missing"; return 1; }
    preload_live oxchurn "$exe" --probe || return 1
    run oxchurn 120 "$exe" || return 1
    expect_eq "oxchurn output" "$(cat "$TDIR/oxchurn.out")" "$RUST_WANT"
}

# ---------------------------------------------------------------------------------
# perl, lua, bash

test_perl() {
    need perl
    preload_live perl perl -v || return 1
    run perl 120 perl "$HERE/perl_churn.pl" || return 1
    expect_eq "perl output" "$(cat "$TDIR/perl.out")" "perl ok 200000"
}

test_lua() {
    local lua=""
    command -v lua5.4 >/dev/null 2>&1 && lua=lua5.4
    [ -n "$lua" ] || skip "lua5.4 is not installed (apt-get install lua5.4)"
    preload_live lua "$lua" -v || return 1
    run lua 120 "$lua" "$HERE/lua_churn.lua" || return 1
    expect_eq "lua output" "$(cat "$TDIR/lua.out")" "lua ok 200000"
}

test_bash() {
    need bash
    preload_live bash bash --version || return 1
    run bash 120 bash "$HERE/bash_churn.sh" || return 1
    expect_eq "bash output" "$(cat "$TDIR/bash.out")" "bash ok 188890"
}

# ---------------------------------------------------------------------------------
# redis: a server on loopback, filled and checked through redis-cli

test_redis() {
    need redis-server redis-cli
    preload_live redis-server redis-server --version || return 1
    preload_live redis-cli redis-cli --version || return 1

    local port="" pid="" attempt
    for attempt in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        rm -f redis.log
        if [ -n "$PRELOAD" ]; then
            timeout -k 10 240 env LD_PRELOAD="$PRELOAD" redis-server --port "$port" --bind 127.0.0.1 \
                --save '' --appendonly no --daemonize no --dir "$TDIR" --logfile "$TDIR/redis.log" \
                --lazyfree-lazy-user-del yes --lazyfree-lazy-user-flush yes \
                >"$TDIR/server.out" 2>"$TDIR/server.err" &
        else
            timeout -k 10 240 redis-server --port "$port" --bind 127.0.0.1 \
                --save '' --appendonly no --daemonize no --dir "$TDIR" --logfile "$TDIR/redis.log" \
                --lazyfree-lazy-user-del yes --lazyfree-lazy-user-flush yes \
                >"$TDIR/server.out" 2>"$TDIR/server.err" &
        fi
        pid=$!
        local up=0 k
        for ((k = 0; k < 100; k++)); do
            if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ]; then up=1; break; fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        [ $up = 1 ] && break
        kill "$pid" 2>/dev/null
        wait "$pid"
        local st=$?
        pid=""
        grep -q "Address already in use" redis.log 2>/dev/null && continue
        break
    done
    if [ -z "$pid" ]; then
        why "redis-server did not start on port $port: $(describe_status "$st" 240)"
        [ -s redis.log ] && tail -n 20 redis.log >>"$TDIR/.detail"
        printf '%s\n' "$TDIR/server.err" >"$TDIR/.errfile"
        return 1
    fi
    # shellcheck disable=SC2064
    trap "kill $pid 2>/dev/null" EXIT

    local fail=0 k
    redis_test "$port" || fail=1
    if [ $fail = 0 ]; then
        # SHUTDOWN NOSAVE closes the connection without a reply: the server's exit is what counts
        run shutdown 30 redis-cli -p "$port" SHUTDOWN NOSAVE
        for ((k = 0; k < 150; k++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            why "redis-server still running 15s after SHUTDOWN NOSAVE"
            fail=1
        fi
    fi
    [ $fail = 1 ] && kill "$pid" 2>/dev/null
    wait "$pid"
    local rc=$?
    trap - EXIT
    if grep -qiE "crashed|bug report|ASSERTION FAILED|Guru Meditation" redis.log 2>/dev/null; then
        why "redis-server crashed (see redis.log)"
        grep -iE -A 12 "crashed|bug report|ASSERTION FAILED" redis.log | head -n 30 >>"$TDIR/.detail"
        return 1
    fi
    [ $fail = 1 ] && return 1
    if [ "$rc" -ne 0 ]; then
        why "redis-server: $(describe_status "$rc" 240) after SHUTDOWN NOSAVE"
        printf '%s\n' "$TDIR/server.err" >"$TDIR/.errfile"
        tail -n 10 redis.log >>"$TDIR/.detail" 2>/dev/null
        return 1
    fi
    return 0
}

redis_test() {
    local port=$1 N=3000
    # strings of varied sizes, counters, a list, a hash, a set
    awk -v N=$N 'BEGIN {
        for (i = 1; i <= N; i++) {
            len = (i % 100 == 0) ? 20000 : i % 200
            v = sprintf("v%d-", i); while (length(v) < len) v = v "x"
            print "SET key:" i " " v
            print "INCR counter:" (i % 10)
            print "RPUSH list " i
            if (i <= 1000) print "HSET hash f:" i " " i * 3
            print "SADD set m:" (i % 500)
        }
    }' >cmds.txt
    awk -v N=$N 'BEGIN {
        for (i = 1; i <= N; i++) {
            len = (i % 100 == 0) ? 20000 : i % 200
            v = sprintf("v%d-", i); while (length(v) < len) v = v "x"
            print v
        }
    }' >values.txt
    run fill 120 redis-cli -p "$port" <cmds.txt || return 1
    expect_eq "redis: replies to the fill commands" "$(wc -l <"$TDIR/fill.out")" "$(wc -l <cmds.txt)" || return 1
    expect_eq "redis: OK replies to SET" "$(grep -c '^OK$' "$TDIR/fill.out")" $N || return 1

    local keys
    keys=$(seq 1 $N | sed 's/^/key:/' | tr '\n' ' ')
    # shellcheck disable=SC2086
    run mget 60 redis-cli -p "$port" MGET $keys || return 1
    expect_file mget values.txt || return 1

    {
        echo "DBSIZE"
        echo "GET counter:3"
        echo "LLEN list"
        echo "LINDEX list 0"
        echo "LINDEX list -1"
        echo "HLEN hash"
        echo "HGET hash f:777"
        echo "SCARD set"
        echo "STRLEN key:2500"
        echo "APPEND key:1 tail"
        echo "GET key:1"
    } >checks.txt
    run checks 60 redis-cli -p "$port" <checks.txt || return 1
    printf '%s\n' $((N + 10 + 3)) 300 $N 1 $N 1000 2331 500 20000 7 v1-tail >want_checks.txt
    expect_file checks want_checks.txt || return 1

    # delete half of the strings (freed by the lazy-free thread), rewrite them, trim the list
    seq 2 2 $N | sed 's/^/UNLINK key:/' >del.txt
    seq 2 2 $N | awk '{ print "SET key:" $1 " again-" $1 }' >>del.txt
    echo "LTRIM list 100 199" >>del.txt
    run churn 120 redis-cli -p "$port" <del.txt || return 1
    run checks2 60 redis-cli -p "$port" MGET key:1 key:2 key:2999 key:3000 || return 1
    printf '%s\n' v1-tail again-2 "$(sed -n 2999p values.txt)" again-3000 >want_checks2.txt
    expect_file checks2 want_checks2.txt || return 1
    run lrange 60 redis-cli -p "$port" LRANGE list 0 -1 || return 1
    seq 101 200 >want_lrange.txt
    expect_file lrange want_lrange.txt || return 1

    # a snapshot by a forked child while the server's background threads run
    run bgsave 30 redis-cli -p "$port" BGSAVE || return 1
    local k st=""
    for ((k = 0; k < 300; k++)); do
        st=$(redis-cli -p "$port" INFO persistence 2>/dev/null | tr -d '\r')
        grep -qx "rdb_bgsave_in_progress:0" <<<"$st" && break
        sleep 0.1
    done
    if ! grep -qx "rdb_last_bgsave_status:ok" <<<"$st" || [ ! -s "$TDIR/dump.rdb" ]; then
        why "redis: BGSAVE did not complete: $(grep -E '^rdb_(bgsave_in_progress|last_bgsave_status)' <<<"$st" | tr '\n' ' ')"
        tail -n 10 "$TDIR/redis.log" >>"$TDIR/.detail" 2>/dev/null
        return 1
    fi

    run flush 60 redis-cli -p "$port" FLUSHALL ASYNC || return 1
    local n
    for ((k = 0; k < 50; k++)); do
        n=$(redis-cli -p "$port" DBSIZE 2>/dev/null)
        [ "$n" = 0 ] && break
        sleep 0.1
    done
    expect_eq "redis: DBSIZE after FLUSHALL ASYNC" "$n" 0 || return 1
    return 0
}

# ---------------------------------------------------------------------------------

run_test binding test_binding
run_test binding-family test_binding_family
run_test python-threads test_python_threads
run_test python-json test_python_json
run_test git test_git
run_test sqlite3 test_sqlite3
run_test gcc test_gcc
run_test cpp-threads test_cpp_threads
run_test cargo test_cargo
run_test perl test_perl
run_test lua test_lua
run_test bash test_bash
run_test redis test_redis

echo "programs: $NPASS passed, $NFAIL failed, $NSKIP skipped"
[ "$NFAIL" -eq 0 ]
