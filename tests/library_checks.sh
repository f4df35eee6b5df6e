#!/usr/bin/env bash
# Checks of the shipped library itself (target/release/liboxmalloc.so):
#  - it exports the malloc family, C++'s operator new and delete, and the ox_* API, and
#    nothing else;
#  - malloc/free/calloc/realloc never reach __tls_get_addr (initial-exec TLS works);
#  - the library is marked STATIC_TLS (the initial-exec model, right for LD_PRELOAD);
#  - the dynamic linker binds the malloc family to it under LD_PRELOAD;
#  - it holds no panic path (no core::panicking code, no panic message), no Rust std, and
#    needs libc.so.6 alone (no libgcc_s);
#  - the portable-tls build (for late dlopen) still builds.
# Prints PASS/FAIL lines and "library: N passed, N failed".
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
lib=${1:-target/release/liboxmalloc.so}
pass=0
fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }

expected="aligned_alloc calloc cfree free free_aligned_sized free_sized mallinfo mallinfo2 malloc
malloc_info malloc_stats malloc_trim malloc_usable_size mallopt memalign ox_aligned_alloc ox_calloc
ox_free ox_heap_check ox_malloc ox_owns ox_prof_dump ox_realloc ox_stats_get ox_trim ox_usable_size ox_version
posix_memalign pvalloc realloc reallocarray valloc
_Znam _ZnamRKSt9nothrow_t _ZnamSt11align_val_t _ZnamSt11align_val_tRKSt9nothrow_t
_Znwm _ZnwmRKSt9nothrow_t _ZnwmSt11align_val_t _ZnwmSt11align_val_tRKSt9nothrow_t
_ZdaPv _ZdaPvRKSt9nothrow_t _ZdaPvSt11align_val_t _ZdaPvSt11align_val_tRKSt9nothrow_t
_ZdaPvm _ZdaPvmSt11align_val_t
_ZdlPv _ZdlPvRKSt9nothrow_t _ZdlPvSt11align_val_t _ZdlPvSt11align_val_tRKSt9nothrow_t
_ZdlPvm _ZdlPvmSt11align_val_t"
want=$(echo $expected | tr ' ' '\n' | sort)
have=$(nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' | sort)
if [ "$want" = "$have" ]; then
  ok "exports: only the malloc family, operator new/delete and ox_*"
else
  bad "exports" "$(diff <(echo "$want") <(echo "$have") | grep '^[<>]' | tr '\n' ' ')"
fi

# Disassemble each entry point and the functions it calls directly; none may call
# __tls_get_addr.
dis=$(objdump -d --no-show-raw-insn "$lib")
body() { awk -v s="<$1>:" '$2 == s {on = 1; next} on && /^$/ {exit} on {print}' <<<"$dis"; }
tls_hits=""
for sym in malloc free calloc realloc; do
  addr=$(nm -D --defined-only "$lib" | awk -v s="$sym" '$3 == s {print $1}')
  name=$(awk -v a="$addr" '$1 == a && $2 ~ /^</ {print substr($2, 2, length($2) - 3); exit}' <<<"$dis")
  b=$(body "$name")
  if [ "$(wc -l <<<"$b")" -lt 5 ]; then
    tls_hits="$tls_hits $sym(body-not-found)"
  elif grep -q "__tls_get_addr" <<<"$b"; then
    tls_hits="$tls_hits $sym"
  fi
done
if [ -z "$tls_hits" ]; then
  ok "no __tls_get_addr in malloc, free, calloc, realloc"
else
  bad "tls" "__tls_get_addr called from:$tls_hits"
fi
if readelf -d "$lib" | grep -q "STATIC_TLS"; then
  ok "library uses the initial-exec TLS model (STATIC_TLS)"
else
  bad "static tls" "FLAGS lack STATIC_TLS"
fi

# No panic path and no Rust std: the core is no_std, the cdylib has only a fatal
# panic handler, and every index is proved in range or checked (a panic inside malloc
# would run code that is not ours, in the middle of the allocator). Read from the
# unstripped library, so that every function that was linked in is named.
syms=$(nm -C "$lib" 2>/dev/null)
if [ -z "$syms" ]; then
  bad "no panic" "nm printed no symbols (stripped library?)"
elif grep -qE 'core::panicking|core::slice::index::slice_(start_|end_)?index|core::result::unwrap_failed|core::option::(expect|unwrap)_failed' <<<"$syms"; then
  bad "no panic" "panic code linked in: $(grep -E 'core::panicking|slice_(start_|end_)?index|unwrap_failed|expect_failed' <<<"$syms" | awk '{$1=$2=""; print}' | tr '\n' ';')"
elif strings -a "$lib" | grep -qE 'panicked|index out of bounds|attempt to (add|subtract|multiply|divide|calculate)|called `(Option|Result)::unwrap'; then
  bad "no panic" "panic message strings present: $(strings -a "$lib" | grep -E 'panicked|index out of bounds|attempt to|called `' | head -3 | tr '\n' ';')"
else
  ok "no panic path: no core::panicking code and no panic message in the library"
fi
# The C++ operators we export and the two libstdc++ functions they refer to weakly are
# not Rust's std.
rust_syms=$(grep -vE 'operator (new|delete)|std::(get_new_handler|__throw_bad_alloc)\(\)' <<<"$syms")
if grep -qE ' std::|<std::' <<<"$rust_syms"; then
  bad "no std" "Rust std symbols: $(grep -E ' std::|<std::' <<<"$rust_syms" | head -3 | tr '\n' ';')"
else
  ok "no Rust std in the library"
fi
needed=$(readelf -d "$lib" | awk '/NEEDED/ {print $NF}' | tr -d '[]' | sort | tr '\n' ' ')
if [ "$needed" = "libc.so.6 " ]; then
  ok "links libc.so.6 only (no libgcc_s, no libstd)"
else
  bad "needed" "NEEDED is: $needed"
fi

bindings=$(LD_DEBUG=bindings LD_PRELOAD="$root/$lib" /bin/true 2>&1)
unbound=""
for sym in malloc free calloc realloc; do
  if ! grep "normal symbol \`$sym'" <<<"$bindings" | grep -q "liboxmalloc.so"; then
    unbound="$unbound $sym"
  fi
done
if [ -z "$unbound" ]; then
  ok "LD_PRELOAD binds the malloc family to liboxmalloc.so"
else
  bad "bindings" "not bound to oxmalloc:$unbound"
fi

if cargo build --quiet --release --features portable-tls --target-dir target/portable-tls 2>/dev/null \
  && LD_PRELOAD="$root/target/portable-tls/release/liboxmalloc.so" /bin/echo ok >/dev/null; then
  ok "portable-tls build loads and runs"
else
  bad "portable-tls" "build or run failed"
fi

echo "library: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
