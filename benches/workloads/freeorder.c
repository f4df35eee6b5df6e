/* freeorder: allocate a batch, then free it in a given order.
 *
 * Rounds of: allocate 100k objects of random sizes 16..512 B, then free them all in
 * LIFO (reverse of allocation), FIFO (allocation order) or random order (a fixed
 * shuffled permutation). Random-order frees scatter the free lists; an allocator whose
 * next allocations then walk memory randomly pays in cache and TLB misses.
 *
 * usage: freeorder lifo|fifo|random [scale]
 */
#include "common.h"

#define N 100000

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: freeorder lifo|fifo|random [scale]\n");
        return 2;
    }
    int mode = strcmp(argv[1], "lifo") == 0 ? 0 : strcmp(argv[1], "fifo") == 0 ? 1
             : strcmp(argv[1], "random") == 0 ? 2 : -1;
    if (mode < 0) {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    long scale = arg_long(argc, argv, 2, 1);
    long rounds = 40 * scale;
    void **obj = malloc(N * sizeof(void *));
    uint32_t *order = malloc(N * sizeof(uint32_t));
    if (!obj || !order)
        fail("malloc");
    uint64_t rng = 0xF4EE0001, sum = 0;

    for (uint32_t i = 0; i < N; i++)
        order[i] = mode == 0 ? N - 1 - i : i;
    if (mode == 2)
        for (uint32_t i = N - 1; i > 0; i--) {
            uint32_t j = rng_below(&rng, i + 1);
            uint32_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }

    for (long r = 0; r < rounds; r++) {
        for (uint32_t i = 0; i < N; i++) {
            size_t n = rng_range(&rng, 16, 512);
            void *p = xmalloc(n);
            stamp(p, n, mix64(((uint64_t)r << 32) | i));
            obj[i] = p;
        }
        for (uint32_t i = 0; i < N; i++) {
            void *p = obj[order[i]];
            sum += check(p);
            free(p);
        }
    }
    free(order);
    free(obj);
    print_ok(sum);
    return 0;
}
