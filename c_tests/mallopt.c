/*
 * mallopt: the glibc parameters are accepted (1), unknown ones refused (0), and
 * M_TRIM_THRESHOLD = 0 makes freed memory go back to the OS at the next decay check
 * (every 64 slow-path calls of a thread) instead of after the purge delay: a 16 MiB burst
 * of small blocks freed shows in the figures as purged a few hundred allocations later at
 * the latest (with the default delay of 1 s, a test this short would purge little of it).
 */
#include "common.h"
#include "oxmalloc.h"
#include <malloc.h>

enum { BURST = 16384, BURST_SIZE = 1024, LATER = 400, LATER_SIZE = 2048 };

int main(void)
{
    ox_require_active();
    typedef void (*stats_fn)(ox_stats *);
    stats_fn stats_get = (stats_fn)ox_sym("ox_stats_get");
    CHECK(stats_get != NULL, "ox_stats_get not found");

    const int known[] = {M_MXFAST,   M_TOP_PAD,      M_MMAP_THRESHOLD, M_MMAP_MAX,
                         M_PERTURB,  M_CHECK_ACTION, M_ARENA_TEST,     M_ARENA_MAX};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        CHECK(mallopt(known[i], known[i] == M_PERTURB ? 0 : 4) == 1, "mallopt(%d) refused",
              known[i]);
    CHECK(mallopt(12345, 1) == 0, "an unknown mallopt parameter was accepted");
    CHECK(mallopt(M_TRIM_THRESHOLD, 0) == 1, "mallopt(M_TRIM_THRESHOLD, 0) refused");

    ox_stats before;
    stats_get(&before);
    static void *burst[BURST];
    for (int i = 0; i < BURST; i++) {
        burst[i] = malloc(ox_opaque(BURST_SIZE));
        CHECK(burst[i] != NULL, "malloc failed");
        memset(burst[i], 1, BURST_SIZE);
    }
    for (int i = 0; i < BURST; i++)
        free(burst[i]);

    static void *later[LATER];
    for (int i = 0; i < LATER; i++) {
        later[i] = malloc(ox_opaque(LATER_SIZE));
        CHECK(later[i] != NULL, "malloc failed");
    }
    ox_stats after;
    stats_get(&after);
    for (int i = 0; i < LATER; i++)
        free(later[i]);
    size_t purged = after.purged_bytes - before.purged_bytes;
    CHECK(purged >= ((size_t)8 << 20),
          "with M_TRIM_THRESHOLD 0, only %zu bytes were purged after freeing 16 MiB", purged);
    printf("purged %zu bytes after the burst\n", purged);
    return 0;
}
