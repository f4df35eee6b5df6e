/* window: a mix of sizes with longer lifetimes.
 *
 * Keeps a window of 100k live objects. Each step replaces one of them: half the time the
 * oldest (FIFO lifetime of a full window), half the time a random one (short and long
 * lifetimes mixed). Sizes are mostly small with a tail of medium blocks up to 64 KiB,
 * so the live heap is ~100 MB and the allocator's size-class mix, reuse and
 * fragmentation all show up in time and peak RSS.
 *
 * usage: window [scale]
 */
#include "common.h"

#define WINDOW 100000

static size_t pick_size(uint64_t *rng)
{
    uint32_t r = rng_below(rng, 1000);
    if (r < 700)
        return rng_range(rng, 16, 128);
    if (r < 900)
        return rng_range(rng, 129, 1024);
    if (r < 990)
        return rng_range(rng, 1025, 8192);
    return rng_range(rng, 8193, 65536);
}

int main(int argc, char **argv)
{
    long scale = arg_long(argc, argv, 1, 1);
    uint64_t steps = 3000000ull * (uint64_t)scale;
    void **live = calloc(WINDOW, sizeof(void *));
    uint64_t rng = 0x5EED0002, sum = 0;
    size_t fifo = 0;
    if (!live)
        fail("calloc");

    for (uint64_t i = 0; i < steps; i++) {
        size_t k;
        if (i & 1) {
            k = fifo;
            fifo = fifo + 1 == WINDOW ? 0 : fifo + 1;
        } else {
            k = rng_below(&rng, WINDOW);
        }
        if (live[k]) {
            sum += check(live[k]);
            free(live[k]);
        }
        size_t n = pick_size(&rng);
        void *p = xmalloc(n);
        stamp(p, n, mix64(i ^ 0x77));
        live[k] = p;
    }
    for (size_t k = 0; k < WINDOW; k++)
        if (live[k]) {
            sum += check(live[k]);
            free(live[k]);
        }
    free(live);
    print_ok(sum);
    return 0;
}
