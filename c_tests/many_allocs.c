/*
 * One million small blocks live at once (sizes 1 ... 128), each tagged, all
 * distinct and intact, then freed (in two different orders over two rounds);
 * memory is reused rather than grown in the second round.
 */
#include "common.h"
#include <sys/mman.h>

#define N 1000000

int main(void)
{
    ox_require_active();
    /* The table itself comes from mmap, not from the allocator under test. */
    uint32_t **ps = mmap(NULL, N * sizeof(*ps), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ps != MAP_FAILED, "mmap failed");
    size_t rss_after_first = 0;

    for (int round = 0; round < 2; round++) {
        for (uint32_t i = 0; i < N; i++) {
            size_t n = (size_t)(i * 2654435761u % 128) + 1;
            if (n < 4)
                n = 4; /* room for the tag */
            ps[i] = malloc(n);
            CHECK(ps[i] != NULL, "malloc(%zu) #%u failed", n, i);
            CHECK(ox_is_aligned(ps[i], 16), "block #%u = %p not 16-byte aligned", i,
                  (void *)ps[i]);
            ps[i][0] = i ^ 0xa5a5a5a5u;
            ((unsigned char *)ps[i])[n - 1] ^= 0; /* touch the end */
        }
        for (uint32_t i = 0; i < N; i++)
            CHECK(ps[i][0] == (i ^ 0xa5a5a5a5u), "block #%u (%p) overwritten: %#x", i,
                  (void *)ps[i], ps[i][0]);
        if (round == 0) {
            rss_after_first = ox_rss_bytes();
            for (uint32_t i = 0; i < N; i++)
                free(ps[i]);
        } else {
            /* free in a scattered order */
            for (uint32_t k = 0; k < N; k++) {
                uint32_t i = (uint32_t)(((uint64_t)k * 7919u) % N);
                CHECK(ps[i] != NULL, "index %u visited twice", i);
                free(ps[i]);
                ps[i] = NULL;
            }
        }
        NOTE("round %d: RSS %zu MiB", round, ox_rss_bytes() >> 20);
    }
    size_t rss_end = ox_rss_bytes();
    CHECK(rss_end < rss_after_first + ((size_t)64 << 20),
          "RSS grew from %zu MiB (1e6 blocks live) to %zu MiB after the second round",
          rss_after_first >> 20, rss_end >> 20);
    munmap(ps, N * sizeof(*ps));
    return 0;
}
