/*
 * The statistics count sampled blocks like any other.
 *
 * A worker runs with OXMALLOC_PROF=1 and a sampling interval of 1 byte, so that
 * every block it allocates is sampled, and allocates small (100 B), medium
 * (100 KiB) and huge (10 MiB) blocks. ox_stats_get and mallinfo2 must count
 * them exactly as unsampled blocks are counted (small blocks at their size
 * class's block size, medium ones in whole OS pages, huge ones by mapping),
 * and come back to where they were once the blocks are freed. The worker's
 * exit profile must show that the blocks were sampled (the test would pass
 * vacuously otherwise).
 */
#include "prof.h"
#include "oxmalloc.h"
#include <malloc.h>

enum { SMALL_COUNT = 300, SMALL_SIZE = 100, SMALL_BLOCK = 112 };
enum { MEDIUM_COUNT = 10, MEDIUM_SIZE = 100 * 1024 };
enum { HUGE_COUNT = 3 };
#define HUGE_SIZE ((size_t)10 << 20)

typedef void (*stats_fn)(ox_stats *);

static void check_delta(const char *what, size_t before, size_t after, size_t want)
{
    CHECK(after - before == want, "%s grew by %zd, want %zu", what, (ssize_t)(after - before),
          want);
}

static void worker(void)
{
    stats_fn stats_get = (stats_fn)ox_sym("ox_stats_get");
    CHECK(stats_get != NULL, "ox_stats_get not found");
    static void *small[SMALL_COUNT], *medium[MEDIUM_COUNT], *huge[HUGE_COUNT];
    ox_stats s0, s1, s2;
    stats_get(&s0);
    struct mallinfo2 m0 = mallinfo2();
    for (int i = 0; i < SMALL_COUNT; i++)
        CHECK((small[i] = malloc(ox_opaque(SMALL_SIZE))) != NULL, "malloc small");
    for (int i = 0; i < MEDIUM_COUNT; i++)
        CHECK((medium[i] = malloc(ox_opaque(MEDIUM_SIZE))) != NULL, "malloc medium");
    for (int i = 0; i < HUGE_COUNT; i++)
        CHECK((huge[i] = malloc(ox_opaque(HUGE_SIZE))) != NULL, "malloc huge");
    stats_get(&s1);
    struct mallinfo2 m1 = mallinfo2();
    check_delta("small_live_blocks", s0.small_live_blocks, s1.small_live_blocks, SMALL_COUNT);
    check_delta("small_live_bytes", s0.small_live_bytes, s1.small_live_bytes,
                (size_t)SMALL_COUNT * SMALL_BLOCK);
    check_delta("medium_live_blocks", s0.medium_live_blocks, s1.medium_live_blocks,
                MEDIUM_COUNT);
    check_delta("medium_live_bytes", s0.medium_live_bytes, s1.medium_live_bytes,
                (size_t)MEDIUM_COUNT * MEDIUM_SIZE);
    check_delta("huge_live_blocks", s0.huge_live_blocks, s1.huge_live_blocks, HUGE_COUNT);
    CHECK(s1.huge_live_bytes - s0.huge_live_bytes >= HUGE_COUNT * HUGE_SIZE,
          "huge_live_bytes grew by %zu for %d blocks of %zu", s1.huge_live_bytes - s0.huge_live_bytes,
          HUGE_COUNT, HUGE_SIZE);
    check_delta("live_blocks", s0.live_blocks, s1.live_blocks,
                SMALL_COUNT + MEDIUM_COUNT + HUGE_COUNT);
    CHECK(s1.held_bytes - s0.held_bytes >= (size_t)MEDIUM_COUNT * MEDIUM_SIZE + HUGE_COUNT * HUGE_SIZE,
          "held_bytes grew by %zd", (ssize_t)(s1.held_bytes - s0.held_bytes));
    check_delta("mallinfo2 uordblks", m0.uordblks, m1.uordblks,
                (size_t)SMALL_COUNT * SMALL_BLOCK + (size_t)MEDIUM_COUNT * MEDIUM_SIZE);
    check_delta("mallinfo2 hblks", m0.hblks, m1.hblks, HUGE_COUNT);
    CHECK(m1.hblkhd - m0.hblkhd >= HUGE_COUNT * HUGE_SIZE, "mallinfo2 hblkhd grew by %zu",
          m1.hblkhd - m0.hblkhd);
    for (int i = 0; i < SMALL_COUNT; i++)
        free(small[i]);
    for (int i = 0; i < MEDIUM_COUNT; i++)
        free(medium[i]);
    for (int i = 0; i < HUGE_COUNT; i++)
        free(huge[i]);
    stats_get(&s2);
    check_delta("live_blocks after the frees", s0.live_blocks, s2.live_blocks, 0);
    check_delta("live_bytes after the frees", s0.live_bytes, s2.live_bytes, 0);
    ox_child_say("PID", "%ld", (long)getpid());
}

int main(int argc, char **argv)
{
    char dir[64];
    struct ox_child r;
    static struct ox_prof_file f;
    if (ox_prof_worker_or_profile(argc, argv, worker, "stats", "1", dir, sizeof dir, &r,
                                  &f))
        return 0;
    double allocated = (double)SMALL_COUNT * SMALL_SIZE + (double)MEDIUM_COUNT * MEDIUM_SIZE +
                       (double)HUGE_COUNT * (double)HUGE_SIZE;
    CHECK((double)f.total_alloc >= 0.99 * allocated,
          "the profile counts %llu bytes allocated, fewer than the %.0f the worker sampled",
          (unsigned long long)f.total_alloc, allocated);
    ox_prof_free(&f);
    ox_prof_dir_remove(dir);
    return 0;
}
