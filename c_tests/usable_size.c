/*
 * malloc_usable_size(p) is at least the requested size, stays the same for
 * the block's whole life, is 0 for NULL, and all of the usable bytes really
 * are the block's: writing them does not disturb neighbouring blocks.
 */
#include "common.h"
#include <malloc.h>

#define N 400

int main(void)
{
    ox_require_active();

    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu",
          malloc_usable_size(NULL));

    static unsigned char *blk[N];
    static size_t req[N], usable[N];
    uint64_t rng = 0x1234567;

    /* Sizes from 0 to ~70 MiB, weighted towards small. */
    for (int i = 0; i < N; i++) {
        size_t n;
        switch (i % 4) {
        case 0: n = ox_rand(&rng) % 256; break;
        case 1: n = ox_rand(&rng) % 40000; break;
        case 2: n = ox_rand(&rng) % (4u << 20); break;
        default: n = (i % 40 == 3) ? ox_rand(&rng) % (70u << 20) : ox_rand(&rng) % 1024; break;
        }
        req[i] = n;
        blk[i] = malloc(ox_opaque(n));
        CHECK(blk[i] != NULL, "malloc(%zu) failed", n);
        usable[i] = malloc_usable_size(blk[i]);
        CHECK(usable[i] >= n, "malloc_usable_size = %zu < requested %zu", usable[i], n);
        /* Own every usable byte. */
        if (usable[i] <= (1u << 20))
            memset(blk[i], (int)(i & 0xff), usable[i]);
        else {
            memset(blk[i], (int)(i & 0xff), 4096);
            memset(blk[i] + usable[i] - 4096, (int)(i & 0xff), 4096);
        }
    }

    /* Churn so that the allocator's internal state moves on. */
    for (int r = 0; r < 2000; r++) {
        size_t n = ox_rand(&rng) % 3000;
        void *p = malloc(ox_opaque(n));
        CHECK(p != NULL, "malloc(%zu) failed", n);
        free(p);
    }

    for (int i = 0; i < N; i++) {
        size_t u = malloc_usable_size(blk[i]);
        CHECK(u == usable[i], "usable size of block %d (req %zu) changed: %zu -> %zu", i,
              req[i], usable[i], u);
        size_t check = usable[i] <= (1u << 20) ? usable[i] : 4096;
        for (size_t k = 0; k < check; k++)
            CHECK(blk[i][k] == (unsigned char)(i & 0xff),
                  "block %d (req %zu, usable %zu) byte %zu overwritten", i, req[i], usable[i], k);
        if (usable[i] > (1u << 20))
            for (size_t k = usable[i] - 4096; k < usable[i]; k++)
                CHECK(blk[i][k] == (unsigned char)(i & 0xff),
                      "block %d (usable %zu) tail byte %zu overwritten", i, usable[i], k);
    }

    /* Stability across realloc that keeps the block in place is not required,
     * but the usable size of the result must cover the new request. */
    for (int i = 0; i < N; i++) {
        size_t n = req[i] / 2 + 1;
        void *p = realloc(blk[i], ox_opaque(n));
        CHECK(p != NULL, "realloc to %zu failed", n);
        CHECK(malloc_usable_size(p) >= n, "usable %zu < %zu after realloc",
              malloc_usable_size(p), n);
        free(p);
    }
    return 0;
}
