/*
 * The heap profiler's estimates are unbiased, and its stacks start in the
 * caller of the allocation entry point.
 *
 * A worker run with OXMALLOC_PROF=1 and a 4 KiB sampling interval calls three
 * functions that allocate 60%, 30% and 10% of 400 MB in blocks of assorted
 * sizes (16 B to 96 KiB, through malloc, calloc, realloc, posix_memalign and
 * aligned_alloc), freeing most blocks at once and keeping one in eight. Each
 * function is placed in a section of its own, so its exact address range is
 * known (__start_/__stop_ symbols). Its exit profile must attribute, by each
 * stack's innermost address, the bytes allocated by each function to within 3%
 * and the bytes still live to within 8% per function and 4% for the three
 * together; and no stack may start inside liboxmalloc.
 *
 * Why these bounds: an allocation of s bytes is sampled with probability
 * p = 1 - exp(-s/T) and counts s/p bytes, an unbiased estimate whose spread
 * grows with T and shrinks with the bytes counted. Over repeated runs of this
 * workload the standard deviation was 0.4% for the bytes allocated per
 * function, 1.1% for the live bytes of the 10% function and 0.5% for the live
 * total: the bounds are 7 standard deviations or more, so a failure means a
 * bias, not bad luck. (At T = 16 KiB the live bytes of the 10% function spread
 * by 3%; at 64 KiB by 8%.)
 */
#include "prof.h"

#define TOTAL_BYTES 400e6
#define ROUNDS 50
#define KEEP_ONE_IN 8

#define ALLOC_SITE(name) __attribute__((noinline, section(name)))

extern char __start_oxprof_f60[], __stop_oxprof_f60[];
extern char __start_oxprof_f30[], __stop_oxprof_f30[];
extern char __start_oxprof_f10[], __stop_oxprof_f10[];

struct truth {
    double alloc, live;
};
static struct truth t60, t30, t10;
static void **kept;
static size_t nkept, kept_cap;
static uint64_t seed = 0x1234567;

static size_t pick_size(void)
{
    uint64_t r = ox_rand(&seed);
    unsigned which = (unsigned)(r % 100);
    r >>= 8;
    if (which < 70)
        return 16 + (size_t)(r % 497);
    if (which < 95)
        return 512 + (size_t)(r % 7681);
    return (16 << 10) + (size_t)(r % (80 << 10));
}

/* Keeps one block in KEEP_ONE_IN, frees the others; counts what it keeps. */
static void keep_or_free(void *p, size_t size, struct truth *t)
{
    CHECK(p != NULL, "allocation of %zu bytes failed", size);
    ((volatile char *)p)[0] = 1;
    if (ox_rand(&seed) % KEEP_ONE_IN == 0 && nkept < kept_cap) {
        kept[nkept++] = p;
        t->live += (double)size;
    } else {
        free(p);
    }
}

ALLOC_SITE("oxprof_f60") void alloc_60(double budget)
{
    double done = 0;
    while (done < budget) {
        size_t n = pick_size();
        void *p = malloc(ox_opaque(n));
        t60.alloc += (double)n;
        done += (double)n;
        keep_or_free(p, n, &t60);
    }
}

ALLOC_SITE("oxprof_f30") void alloc_30(double budget)
{
    double done = 0;
    while (done < budget) {
        size_t n = pick_size();
        if (ox_rand(&seed) % 2 == 0) {
            void *p = calloc(1, ox_opaque(n));
            t30.alloc += (double)n;
            done += (double)n;
            keep_or_free(p, n, &t30);
        } else {
            /* Growing past the block's size: the realloc counts as an
             * allocation of the new size. */
            size_t m = 3 * n + 100;
            void *p = malloc(ox_opaque(n));
            CHECK(p != NULL, "malloc");
            void *q = realloc(p, ox_opaque(m));
            t30.alloc += (double)(n + m);
            done += (double)(n + m);
            keep_or_free(q, m, &t30);
        }
    }
}

ALLOC_SITE("oxprof_f10") void alloc_10(double budget)
{
    double done = 0;
    while (done < budget) {
        size_t n = pick_size();
        void *p = NULL;
        if (ox_rand(&seed) % 2 == 0) {
            CHECK(posix_memalign(&p, 64, ox_opaque(n)) == 0, "posix_memalign");
        } else {
            p = aligned_alloc(4096, ox_opaque(n));
        }
        t10.alloc += (double)n;
        done += (double)n;
        keep_or_free(p, n, &t10);
    }
}

static void worker(void)
{
    kept_cap = 1 << 20;
    kept = malloc(kept_cap * sizeof *kept);
    CHECK(kept != NULL, "malloc");
    for (int r = 0; r < ROUNDS; r++) {
        alloc_60(0.6 * TOTAL_BYTES / ROUNDS);
        alloc_30(0.3 * TOTAL_BYTES / ROUNDS);
        alloc_10(0.1 * TOTAL_BYTES / ROUNDS);
    }
    ox_child_say("PID", "%ld", (long)getpid());
    ox_child_say("ALLOC60", "%.0f", t60.alloc);
    ox_child_say("ALLOC30", "%.0f", t30.alloc);
    ox_child_say("ALLOC10", "%.0f", t10.alloc);
    ox_child_say("LIVE60", "%.0f", t60.live);
    ox_child_say("LIVE30", "%.0f", t30.live);
    ox_child_say("LIVE10", "%.0f", t10.live);
    ox_child_say("F60", "%lu %lu", (unsigned long)__start_oxprof_f60,
                 (unsigned long)__stop_oxprof_f60);
    ox_child_say("F30", "%lu %lu", (unsigned long)__start_oxprof_f30,
                 (unsigned long)__stop_oxprof_f30);
    ox_child_say("F10", "%lu %lu", (unsigned long)__start_oxprof_f10,
                 (unsigned long)__stop_oxprof_f10);
    /* The kept blocks stay live: they are the exit profile's in-use bytes. */
}

int main(int argc, char **argv)
{
    char dir[64];
    struct ox_child r;
    struct ox_prof_file f;
    if (ox_prof_worker_or_profile(argc, argv, worker, "unbiased", "4096", dir, sizeof dir, &r,
                                  &f))
        return 0;
    CHECK(r.err[0] == '\0', "the profiled worker wrote to stderr: %s", r.err);
    CHECK(strcmp(f.reason, "exit") == 0 && f.interval == 4096, "reason %s, interval %llu",
          f.reason, (unsigned long long)f.interval);

    uintptr_t lo[3], hi[3];
    ox_prof_range_of(&r, "F60", &lo[0], &hi[0]);
    ox_prof_range_of(&r, "F30", &lo[1], &hi[1]);
    ox_prof_range_of(&r, "F10", &lo[2], &hi[2]);
    double alloc[3] = {0, 0, 0}, live[3] = {0, 0, 0};
    for (int i = 0; i < f.nstacks; i++) {
        const struct ox_prof_stack *s = &f.stacks[i];
        if (s->depth == 0)
            continue;
        CHECK(!ox_prof_pc_in_object(&f, s->pcs[0], "liboxmalloc"),
              "stack %d starts inside liboxmalloc (0x%lx): the allocator's frames were not dropped",
              i, (unsigned long)s->pcs[0]);
        for (int k = 0; k < 3; k++) {
            if (s->pcs[0] > lo[k] && s->pcs[0] <= hi[k]) {
                alloc[k] += (double)s->alloc_bytes;
                live[k] += (double)s->inuse_bytes;
            }
        }
    }
    ox_prof_check_near("alloc 60%", alloc[0], ox_prof_said(&r, "ALLOC60"), 0.03);
    ox_prof_check_near("alloc 30%", alloc[1], ox_prof_said(&r, "ALLOC30"), 0.03);
    ox_prof_check_near("alloc 10%", alloc[2], ox_prof_said(&r, "ALLOC10"), 0.03);
    double live_truth[3] = {ox_prof_said(&r, "LIVE60"), ox_prof_said(&r, "LIVE30"),
                            ox_prof_said(&r, "LIVE10")};
    ox_prof_check_near("live 60%", live[0], live_truth[0], 0.08);
    ox_prof_check_near("live 30%", live[1], live_truth[1], 0.08);
    ox_prof_check_near("live 10%", live[2], live_truth[2], 0.08);
    ox_prof_check_near("live, all three", live[0] + live[1] + live[2],
                   live_truth[0] + live_truth[1] + live_truth[2], 0.04);
    ox_prof_free(&f);
    ox_prof_dir_remove(dir);
    return 0;
}
