/*
 * The heap profiler's peak, short-lived counts and timeline.
 *
 * A worker run with OXMALLOC_PROF=1 and a 4 KiB sampling interval:
 *   1. `grow_big` allocates 20 MB in 10 KB blocks and keeps them 50 ms;
 *   2. frees them, then `grow_small` allocates 10 MB the same way and keeps them;
 *   3. `churn` allocates 20 MB in 1 KB blocks, each freed at once;
 *   4. frees everything and exits.
 * Its exit profile must say: the peak was about 20 MB (within 5%), held by
 * `grow_big` alone (`grow_small` and `churn` had nothing live then); `grow_small`
 * allocated about 10 MB; `churn`'s blocks were short-lived (freed within the
 * threshold) and `grow_big`'s were not; nothing is live at exit; and the
 * timeline has points with about 20 MB live, resident bytes at least the live
 * bytes then, and one after the end with nothing live.
 *
 * Each function is in a section of its own, so a stack is attributed by the
 * address of its innermost frame.
 */
#include "prof.h"
#include <time.h>

#define BLOCK_BYTES 10000
#define BIG_BLOCKS 2000
#define SMALL_BLOCKS 1000
#define CHURN_BLOCKS 20000
#define CHURN_BYTES 1000

#define SITE(name) __attribute__((noinline, section(name)))

extern char __start_oxprof_big[], __stop_oxprof_big[];
extern char __start_oxprof_small[], __stop_oxprof_small[];
extern char __start_oxprof_churn[], __stop_oxprof_churn[];

static void *blocks[BIG_BLOCKS];

SITE("oxprof_big") void grow_big(void)
{
    for (int i = 0; i < BIG_BLOCKS; i++) {
        blocks[i] = malloc(ox_opaque(BLOCK_BYTES));
        CHECK(blocks[i] != NULL, "malloc");
        memset(blocks[i], 1, BLOCK_BYTES);
    }
}

SITE("oxprof_small") void grow_small(void)
{
    for (int i = 0; i < SMALL_BLOCKS; i++) {
        blocks[i] = malloc(ox_opaque(BLOCK_BYTES));
        CHECK(blocks[i] != NULL, "malloc");
        memset(blocks[i], 2, BLOCK_BYTES);
    }
}

SITE("oxprof_churn") void churn(void)
{
    for (int i = 0; i < CHURN_BLOCKS; i++) {
        char *p = malloc(ox_opaque(CHURN_BYTES));
        CHECK(p != NULL, "malloc");
        p[0] = 1;
        free(p);
    }
}

static void free_blocks(int n)
{
    for (int i = 0; i < n; i++)
        free(blocks[i]);
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void worker(void)
{
    grow_big();
    pause_ms(50);
    free_blocks(BIG_BLOCKS);
    grow_small();
    churn();
    free_blocks(SMALL_BLOCKS);
    ox_child_say("PID", "%ld", (long)getpid());
    ox_child_say("BIG", "%lu %lu", (unsigned long)__start_oxprof_big,
                 (unsigned long)__stop_oxprof_big);
    ox_child_say("SMALL", "%lu %lu", (unsigned long)__start_oxprof_small,
                 (unsigned long)__stop_oxprof_small);
    ox_child_say("CHURN", "%lu %lu", (unsigned long)__start_oxprof_churn,
                 (unsigned long)__stop_oxprof_churn);
}

int main(int argc, char **argv)
{
    char dir[64];
    struct ox_child r;
    static struct ox_prof_file f;
    if (ox_prof_worker_or_profile(argc, argv, worker, "peak", "4096", dir, sizeof dir, &r,
                                  &f))
        return 0;
    uintptr_t lo[3], hi[3];
    ox_prof_range_of(&r, "BIG", &lo[0], &hi[0]);
    ox_prof_range_of(&r, "SMALL", &lo[1], &hi[1]);
    ox_prof_range_of(&r, "CHURN", &lo[2], &hi[2]);
    double alloc[3] = {0}, peak[3] = {0}, live[3] = {0}, shortb[3] = {0};
    for (int i = 0; i < f.nstacks; i++) {
        const struct ox_prof_stack *s = &f.stacks[i];
        for (int k = 0; k < 3 && s->depth > 0; k++) {
            if (s->pcs[0] > lo[k] && s->pcs[0] <= hi[k]) {
                alloc[k] += (double)s->alloc_bytes;
                peak[k] += (double)s->peak_bytes;
                live[k] += (double)s->inuse_bytes;
                shortb[k] += (double)s->short_bytes;
            }
        }
    }
    double big = (double)BIG_BLOCKS * BLOCK_BYTES;
    ox_prof_check_near("peak of the whole heap", (double)f.peak_bytes, big, 0.05);
    ox_prof_check_near("grow_big's bytes at the peak", peak[0], big, 0.05);
    CHECK(peak[1] == 0 && peak[2] == 0, "grow_small (%.0f) or churn (%.0f) live at the peak",
          peak[1], peak[2]);
    ox_prof_check_near("grow_small allocated", alloc[1], (double)SMALL_BLOCKS * BLOCK_BYTES, 0.05);
    ox_prof_check_near("churn allocated", alloc[2], (double)CHURN_BLOCKS * CHURN_BYTES, 0.10);
    CHECK(live[0] == 0 && live[1] == 0 && live[2] == 0, "blocks live at exit");
    CHECK(shortb[2] > 0.9 * alloc[2], "churn: %.0f of %.0f bytes short-lived", shortb[2],
          alloc[2]);
    CHECK(shortb[0] < 0.05 * alloc[0], "grow_big: %.0f of %.0f bytes short-lived", shortb[0],
          alloc[0]);
    CHECK(f.short_lived_us == 1000, "short-lived threshold %llu us",
          (unsigned long long)f.short_lived_us);

    /* The timeline: the big phase is seen (held 50 ms, points every 10 ms), with
     * resident memory to match; the last point is at exit, with nothing live. */
    int big_points = 0;
    for (int i = 0; i < f.npoints; i++) {
        const struct ox_prof_point *p = &f.points[i];
        if (p->live_bytes > 0.9 * big) {
            big_points++;
            CHECK(p->resident_bytes > 0.9 * big, "resident %llu bytes with %llu live",
                  (unsigned long long)p->resident_bytes, (unsigned long long)p->live_bytes);
        }
    }
    CHECK(big_points >= 1, "no timeline point while 20 MB were live (%d points)", f.npoints);
    const struct ox_prof_point *last = &f.points[f.npoints - 1];
    CHECK(last->live_bytes == 0 && last->t_us >= f.peak_us + 50000,
          "last point: %llu us, %llu live (peak at %llu us)", (unsigned long long)last->t_us,
          (unsigned long long)last->live_bytes, (unsigned long long)f.peak_us);
    CHECK(f.elapsed_us >= last->t_us, "elapsed %llu us before the last point",
          (unsigned long long)f.elapsed_us);
    CHECK(strstr(f.cmdline, "worker peak") != NULL, "cmdline '%s'", f.cmdline);
    ox_prof_free(&f);
    ox_prof_dir_remove(dir);
    return 0;
}
