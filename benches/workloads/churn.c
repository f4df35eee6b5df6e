/* churn: one thread, many small short-lived objects.
 *
 * A ring of 64 slots; each step frees the object in a random slot and puts a new one of
 * a random small size there, so objects live ~64 steps. This is the malloc/free fast
 * path of a typical program (temporary strings, nodes, small buffers).
 *
 * usage: churn [scale]
 */
#include "common.h"

#define SLOTS 64

static size_t pick_size(uint64_t *rng)
{
    uint32_t r = rng_below(rng, 100);
    if (r < 50)
        return rng_range(rng, 16, 64);
    if (r < 80)
        return rng_range(rng, 65, 128);
    if (r < 95)
        return rng_range(rng, 129, 512);
    return rng_range(rng, 513, 2048);
}

int main(int argc, char **argv)
{
    long scale = arg_long(argc, argv, 1, 1);
    uint64_t steps = 12000000ull * (uint64_t)scale;
    void *slot[SLOTS] = {0};
    uint64_t rng = 0xC0FFEE, sum = 0;

    for (uint64_t i = 0; i < steps; i++) {
        unsigned k = rng_below(&rng, SLOTS);
        if (slot[k]) {
            sum += check(slot[k]);
            free(slot[k]);
        }
        size_t n = pick_size(&rng);
        void *p = xmalloc(n);
        stamp(p, n, mix64(i));
        slot[k] = p;
    }
    for (unsigned k = 0; k < SLOTS; k++)
        if (slot[k]) {
            sum += check(slot[k]);
            free(slot[k]);
        }
    print_ok(sum);
    return 0;
}
