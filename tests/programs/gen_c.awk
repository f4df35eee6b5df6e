# Generates a C program of N small functions (awk -v N=2000 -v C=prog.c -f gen_c.awk)
# into file C, and prints the output that program must produce. Every value
# stays below 2^53, so awk's arithmetic computes it exactly.
function f(i, x,    acc, lim, k, r) {
    acc = i
    lim = x % 7 + 3
    for (k = 0; k < lim; k++) acc = (acc * 31 + k + i) % 1000003
    r = (x + i) % 4
    if (r == 0) acc += 11
    else if (r == 1) acc += 7 * i
    else if (r == 2) acc = (acc * 3) % 1000003
    else acc += x % 100
    acc += (i % 5 == 0) ? tab[i % 16] : 0
    return acc
}
BEGIN {
    if (N == "") N = 2000
    for (j = 0; j < 16; j++) tab[j] = j * j + 1
    print "#include <stdio.h>" > C
    printf "static const unsigned long tab[16] = {" > C
    for (j = 0; j < 16; j++) printf "%s%d", (j ? ", " : ""), tab[j] > C
    print "};" > C
    print "struct acc { unsigned long v; };" > C
    for (i = 0; i < N; i++) {
        printf "static unsigned long f%d(unsigned long x) {\n", i > C
        printf "    struct acc a = { %dUL };\n", i > C
        print  "    unsigned int lim = (unsigned int)(x % 7) + 3;" > C
        printf "    for (unsigned int k = 0; k < lim; k++) a.v = (a.v * 31 + k + %dUL) %% 1000003;\n", i > C
        printf "    switch ((x + %dUL) %% 4) {\n", i > C
        print  "    case 0: a.v += 11; break;" > C
        printf "    case 1: a.v += 7UL * %dUL; break;\n", i > C
        print  "    case 2: a.v = (a.v * 3) % 1000003; break;" > C
        print  "    default: a.v += x % 100; break;" > C
        print  "    }" > C
        if (i % 5 == 0) printf "    a.v += tab[%d %% 16];\n", i > C
        print  "    return a.v;" > C
        print  "}" > C
    }
    print "typedef unsigned long (*fn)(unsigned long);" > C
    printf "static fn const table[%d] = {\n", N > C
    for (i = 0; i < N; i++) printf "    f%d,\n", i > C
    print "};" > C
    print "int main(void) {" > C
    print "    volatile unsigned long seed = 13;" > C
    print "    unsigned long total = 0;" > C
    printf "    for (unsigned long i = 0; i < %d; i++) total = (total + table[i](seed * i + 7)) %% 1000000007UL;\n", N > C
    print "    printf(\"total %lu\\n\", total);" > C
    print "    return 0;" > C
    print "}" > C
    close(C)
    total = 0
    for (i = 0; i < N; i++) total = (total + f(i, 13 * i + 7)) % 1000000007
    printf "total %d\n", total
}
