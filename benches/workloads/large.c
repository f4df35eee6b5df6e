/* large: large blocks, 64 KiB .. 32 MiB.
 *
 * Keeps up to 6 large blocks alive; each step frees one (random slot) and allocates a
 * new one with a size drawn log-uniformly from 64 KiB to 32 MiB, then writes one word in
 * every 4 KiB page of it (as a program filling a buffer would fault every page in) and
 * stamps it. Measures the medium/huge paths: reuse of freed spans versus fresh mmap,
 * page-fault and zeroing costs, and how much memory is kept around (peak RSS).
 *
 * usage: large [scale]
 */
#include "common.h"
#include <math.h>

#define LIVE 6
#define PAGE 4096

int main(int argc, char **argv)
{
    long scale = arg_long(argc, argv, 1, 1);
    long steps = 1500 * scale;
    void *slot[LIVE] = {0};
    uint64_t rng = 0x1A46E, sum = 0;
    const double lo = log2(64.0 * 1024), hi = log2(32.0 * 1024 * 1024);

    for (long i = 0; i < steps; i++) {
        unsigned k = rng_below(&rng, LIVE);
        if (slot[k]) {
            const unsigned char *b = slot[k];
            uint32_t n;
            memcpy(&n, b + 8, 4);
            for (size_t off = PAGE; off + 16 <= n; off += PAGE) {
                uint64_t v;
                memcpy(&v, b + off, 8);
                sum += v; /* written when the block was made: part of the result */
            }
            sum += check(slot[k]);
            free(slot[k]);
        }
        double e = lo + (hi - lo) * (double)(rng_next(&rng) >> 11) * (1.0 / 9007199254740992.0);
        size_t n = (size_t)exp2(e);
        n &= ~(size_t)15;
        unsigned char *p = xmalloc(n);
        for (size_t off = PAGE; off + 16 <= n; off += PAGE) {
            uint64_t v = off * 31u + (uint64_t)i;
            memcpy(p + off, &v, 8);
        }
        stamp(p, n, mix64((uint64_t)i));
        slot[k] = p;
    }
    for (unsigned k = 0; k < LIVE; k++)
        if (slot[k]) {
            sum += check(slot[k]);
            free(slot[k]);
        }
    print_ok(sum);
    return 0;
}
