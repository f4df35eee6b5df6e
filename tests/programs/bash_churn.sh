# Allocator churn for bash (run with "bash bash_churn.sh"): grow and trim big
# strings, indexed and associative arrays. Checks itself; prints "bash ok <n>".
set -u
fail() { echo "bash FAIL: $*"; exit 1; }

# a big string built piece by piece, then trimmed from both ends
s=""
want=0
for ((i = 0; i < 20000; i++)); do
  piece="item$i;"
  s+=$piece
  want=$((want + ${#piece}))
done
[ "${#s}" -eq "$want" ] || fail "string length ${#s} want $want"
t=""
for ((i = 0; i < 2000; i++)); do t+="item$i;"; done
n=0
while [ -n "$t" ] && [ $n -lt 500 ]; do
  t=${t#*;}      # drop the first item
  t=${t%;*;}     # drop the last item
  t+=";"
  n=$((n + 1))
done
case $t in item500\;*) ;; *) fail "trimmed string starts ${t:0:20}" ;; esac
case $t in *\;item1499\;) ;; *) fail "trimmed string ends ${t: -20}" ;; esac

# replace and substring expansions
r=""
for ((i = 0; i < 3000; i++)); do r+="item$i;"; done
u=${r//item/I}
[ "${#u}" -eq $((${#r} - 3 * 3000)) ] || fail "replace length ${#u}"
[ "${u:0:6}" = "I0;I1;" ] || fail "replace prefix ${u:0:6}"

# indexed arrays: fill, unset holes, rebuild
arr=()
for ((i = 0; i < 30000; i++)); do arr+=("v$i-$((i * 3))"); done
[ "${#arr[@]}" -eq 30000 ] || fail "array size ${#arr[@]}"
for ((i = 0; i < 30000; i += 2)); do unset 'arr[i]'; done
[ "${#arr[@]}" -eq 15000 ] || fail "array size after unset ${#arr[@]}"
arr=("${arr[@]}")
[ "${arr[0]}" = "v1-3" ] && [ "${arr[14999]}" = "v29999-89997" ] || fail "array compaction ${arr[0]} ${arr[14999]}"

# associative array: insert, look up, delete
declare -A h
for ((i = 0; i < 20000; i++)); do h["key$i"]="val$((i * 7))"; done
sum=0
for ((i = 0; i < 20000; i++)); do
  v=${h["key$i"]}
  sum=$((sum + ${v#val}))
done
[ "$sum" -eq $((7 * 19999 * 20000 / 2)) ] || fail "assoc sum $sum"
for ((i = 0; i < 20000; i += 4)); do unset "h[key$i]"; done
[ "${#h[@]}" -eq 15000 ] || fail "assoc size ${#h[@]}"

# command substitution and word splitting of a large list
words=$(for ((i = 0; i < 5000; i++)); do echo "w$i"; done)
set -- $words
[ $# -eq 5000 ] || fail "word count $#"

echo "bash ok ${#s}"
