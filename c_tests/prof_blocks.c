/*
 * Sampled blocks behave like any other block.
 *
 * The worker runs with OXMALLOC_PROF=1 and a sampling interval of 1 byte, so
 * that every allocation of 16 bytes or more is sampled (the chance that one is
 * not is below e^-15), and checks on those blocks: free, realloc (growing and
 * shrinking across every size range, contents kept; a large block growing in
 * small steps is not copied each time; strings grown a byte at a time and a
 * vector grown by doubling keep their bytes), malloc_usable_size,
 * alignment (posix_memalign, aligned_alloc, memalign, valloc, pvalloc, up to
 * 1 MiB), calloc zeroing of reused memory, ox_owns, frees by another thread,
 * and that a double free, an interior pointer or a realloc of a freed block
 * aborts with the usual report. At the end its profile must show every block
 * of a counted site sampled, and the right ones still live.
 */
#include "prof.h"
#include <malloc.h>
#include <pthread.h>

#define COUNTED 1000
#define COUNTED_KEPT 400

static int (*prof_dump)(const char *path);

static void fill(void *p, size_t n, unsigned char seed)
{
    for (size_t i = 0; i < n; i++)
        ((unsigned char *)p)[i] = (unsigned char)(seed + i * 7);
}

static void verify(const void *p, size_t n, unsigned char seed, const char *what)
{
    for (size_t i = 0; i < n; i++)
        CHECK(((const unsigned char *)p)[i] == (unsigned char)(seed + i * 7),
              "%s: byte %zu of %zu changed", what, i, n);
}

static const size_t sizes[] = {16, 24, 100, 1000, 4000, 4096, 16384, 20000, 70000, 300000,
                               1 << 20, (1 << 20) + 1, 3 << 20, 9 << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void check_malloc_free_usable(void)
{
    int (*owns)(const void *) = (int (*)(const void *))ox_sym("ox_owns");
    CHECK(owns != NULL, "ox_owns not found");
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = sizes[i];
        unsigned char *p = malloc(ox_opaque(n));
        CHECK(p != NULL, "malloc(%zu)", n);
        CHECK(ox_is_aligned(p, 16), "malloc(%zu) = %p not 16-byte aligned", n, (void *)p);
        size_t usable = malloc_usable_size(p);
        CHECK(usable >= n, "usable size %zu < %zu", usable, n);
        CHECK(owns(p) && !owns(p + 16), "ox_owns of a sampled block of %zu", n);
        fill(p, usable, (unsigned char)i);
        verify(p, usable, (unsigned char)i, "malloc");
        CHECK(malloc_usable_size(p) == usable, "usable size changed");
        free(p);
    }
}

static void check_realloc(void)
{
    /* One block through every size, up and then down: the contents follow. */
    size_t n = 10;
    unsigned char *p = malloc(n);
    CHECK(p != NULL, "malloc");
    fill(p, n, 3);
    for (size_t i = 0; i < NSIZES; i++) {
        unsigned char *q = realloc(p, sizes[i]);
        CHECK(q != NULL, "realloc to %zu", sizes[i]);
        verify(q, n, 3, "realloc (growing)");
        fill(q, sizes[i], 3);
        p = q;
        n = sizes[i];
    }
    for (size_t i = NSIZES; i-- > 0;) {
        unsigned char *q = realloc(p, sizes[i] / 3 + 1);
        CHECK(q != NULL, "realloc to %zu", sizes[i] / 3 + 1);
        n = sizes[i] / 3 + 1;
        verify(q, n, 3, "realloc (shrinking)");
        p = q;
    }
    /* realloc(p, 0) frees, as glibc does. */
    CHECK(realloc(p, 0) == NULL, "realloc(p, 0)");
}

/*
 * A block grown by realloc in 64 KiB steps to 128 MiB (2,000 reallocs, each
 * sampled at this interval): a sampled block this large is resized where it is
 * or has its pages moved, never copied, so this takes moments; copying at each
 * step would move 128 GiB and run into the runner's timeout. One byte per step
 * is written and checked (the rest stays untouched, so RSS stays small).
 */
static void check_realloc_growth(void)
{
    size_t step = 64 << 10, n = 2 << 20;
    unsigned char *p = malloc(n);
    CHECK(p != NULL, "malloc");
    for (size_t at = 0; at < n; at += step)
        p[at] = (unsigned char)(at / step);
    while (n < (size_t)128 << 20) {
        unsigned char *q = realloc(p, n + step);
        CHECK(q != NULL, "realloc to %zu", n + step);
        q[n] = (unsigned char)(n / step);
        p = q;
        n += step;
    }
    for (size_t at = 0; at < n; at += step)
        CHECK(p[at] == (unsigned char)(at / step), "realloc growth: byte %zu changed", at);
    free(p);
}

/*
 * Two strings grown a byte at a time to 20,000 bytes, in turns (so that neither
 * can always grow into free memory after it), and a vector grown by doubling to
 * 1 MiB: every byte written is still there when the block moves or stays in its
 * slot (a sampled small block stays where it is for as long as an unsampled one
 * of its size would, and is not counted again then).
 */
static void check_realloc_steps(void)
{
    unsigned char *s[2] = {NULL, NULL};
    for (size_t n = 1; n <= 20000; n++) {
        for (int k = 0; k < 2; k++) {
            unsigned char *q = realloc(s[k], n);
            CHECK(q != NULL, "realloc to %zu", n);
            q[n - 1] = (unsigned char)(n * 7 + (size_t)k);
            s[k] = q;
        }
        if (n % 1999 == 0 || n == 20000)
            for (int k = 0; k < 2; k++)
                for (size_t i = 0; i < n; i++)
                    CHECK(s[k][i] == (unsigned char)((i + 1) * 7 + (size_t)k),
                          "byte-wise realloc: byte %zu of %zu lost", i, n);
    }
    free(s[0]);
    free(s[1]);
    size_t n = 16;
    unsigned char *v = malloc(n);
    CHECK(v != NULL, "malloc");
    fill(v, n, 5);
    while (n < (size_t)1 << 20) {
        unsigned char *q = realloc(v, 2 * n);
        CHECK(q != NULL, "realloc to %zu", 2 * n);
        verify(q, n, 5, "doubling realloc");
        fill(q, 2 * n, 5);
        v = q;
        n *= 2;
    }
    free(v);
}

static void check_alignment(void)
{
    static const size_t aligns[] = {32, 64, 256, 4096, 8192, 65536, 1 << 20};
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
        for (size_t i = 0; i < NSIZES; i += 3) {
            size_t n = sizes[i];
            void *p = NULL;
            CHECK(posix_memalign(&p, aligns[a], n) == 0, "posix_memalign(%zu, %zu)", aligns[a],
                  n);
            void *q = aligned_alloc(aligns[a], n);
            void *m = memalign(aligns[a], n);
            CHECK(q != NULL && m != NULL, "aligned_alloc/memalign(%zu, %zu)", aligns[a], n);
            void *blocks[] = {p, q, m};
            for (int k = 0; k < 3; k++) {
                CHECK(ox_is_aligned(blocks[k], aligns[a]), "%p not aligned to %zu", blocks[k],
                      aligns[a]);
                CHECK(malloc_usable_size(blocks[k]) >= n, "usable size of an aligned block");
                fill(blocks[k], n, (unsigned char)k);
            }
            for (int k = 0; k < 3; k++) {
                verify(blocks[k], n, (unsigned char)k, "aligned block");
                free(blocks[k]);
            }
        }
    }
    size_t page = ox_page_size();
    void *v = valloc(100), *pv = pvalloc(100);
    CHECK(v && pv && ox_is_aligned(v, page) && ox_is_aligned(pv, page), "valloc/pvalloc");
    CHECK(malloc_usable_size(pv) >= page, "pvalloc rounds up to a page");
    free(v);
    free(pv);
}

static void check_calloc(void)
{
    /* Dirty a block, free it, calloc the same size: its memory is reused. */
    for (size_t i = 0; i < NSIZES; i++) {
        for (int round = 0; round < 3; round++) {
            size_t n = sizes[i];
            unsigned char *p = malloc(n);
            CHECK(p != NULL, "malloc");
            memset(p, 0xa5, n);
            free(p);
            unsigned char *z = calloc(1, n);
            CHECK(z != NULL, "calloc(%zu)", n);
            for (size_t k = 0; k < n; k++)
                CHECK(z[k] == 0, "calloc(%zu): byte %zu is 0x%02x", n, k, z[k]);
            memset(z, 0x5a, n);
            free(z);
        }
    }
}

#define XT_BLOCKS 2000
static void *xt_blocks[XT_BLOCKS];

static void *free_them(void *arg)
{
    (void)arg;
    for (int i = 0; i < XT_BLOCKS; i++) {
        verify(xt_blocks[i], 64, (unsigned char)i, "block freed by another thread");
        free(xt_blocks[i]);
    }
    return NULL;
}

static void *allocate_them(void *arg)
{
    (void)arg;
    for (int i = 0; i < XT_BLOCKS; i++) {
        xt_blocks[i] = malloc(64 + (size_t)(i % 5) * 1000);
        CHECK(xt_blocks[i] != NULL, "malloc");
        fill(xt_blocks[i], 64, (unsigned char)i);
    }
    return NULL;
}

static void check_cross_thread_free(void)
{
    pthread_t a, b;
    CHECK(pthread_create(&a, NULL, allocate_them, NULL) == 0, "pthread_create");
    pthread_join(a, NULL);
    CHECK(pthread_create(&b, NULL, free_them, NULL) == 0, "pthread_create");
    pthread_join(b, NULL);
}

/* Each in a forked child: must abort with the report. */
static void double_free(void *arg)
{
    size_t n = *(size_t *)arg;
    void *p = malloc(n);
    ox_child_say("P", "%lu", (unsigned long)(uintptr_t)p);
    free(p);
    free(ox_opaque_ptr(p));
}

static void interior_free(void *arg)
{
    size_t n = *(size_t *)arg;
    char *p = malloc(n);
    ox_child_say("P", "%lu", (unsigned long)(uintptr_t)(p + 16));
    free(ox_opaque_ptr(p + 16));
}

static void realloc_freed(void *arg)
{
    size_t n = *(size_t *)arg;
    void *p = malloc(n);
    ox_child_say("P", "%lu", (unsigned long)(uintptr_t)p);
    free(p);
    p = realloc(ox_opaque_ptr(p), n * 2);
    ox_escape(p);
}

static void expect_abort(ox_child_fn fn, size_t n, const char *call, const char *what)
{
    struct ox_child r;
    ox_child_run(fn, &n, 20, &r);
    char buf[64];
    CHECK(ox_child_value(&r, "P", buf, sizeof buf), "child said nothing: %s", r.err);
    uintptr_t p = (uintptr_t)strtoul(buf, NULL, 10);
    CHECK(ox_child_aborted(&r), "%s of a sampled block of %zu: %s, expected an abort", what, n,
          ox_child_describe(&r));
    CHECK(ox_child_has_report(r.err, call, NULL, p), "%s of %zu: no '%s()' report for 0x%lx in: %s",
          what, n, call, (unsigned long)p, r.err);
    NOTE("%s (%zu bytes): %.*s", what, n, (int)strcspn(r.err, "\n"), r.err);
}

static void check_bad_frees(void)
{
    static const size_t bad_sizes[] = {100, 70000, 3 << 20};
    for (size_t i = 0; i < 3; i++) {
        expect_abort(double_free, bad_sizes[i], "free", "double free");
        expect_abort(interior_free, bad_sizes[i], "free", "interior free");
        expect_abort(realloc_freed, bad_sizes[i], "realloc", "realloc of a freed block");
    }
}

/* The counted site: COUNTED blocks, COUNTED_KEPT kept until the dump. In a
 * section of its own, so that its exact address range is known. */
extern char __start_oxprof_counted[], __stop_oxprof_counted[];
__attribute__((noinline, section("oxprof_counted"))) static void counted_site(void **keep)
{
    for (int i = 0; i < COUNTED; i++) {
        void *p = malloc(ox_opaque(48));
        CHECK(p != NULL, "malloc");
        if (i < COUNTED_KEPT)
            keep[i] = p;
        else
            free(p);
    }
}

static void worker(const char *dump_path)
{
    prof_dump = (int (*)(const char *))ox_sym("ox_prof_dump");
    CHECK(prof_dump != NULL, "ox_prof_dump not found");
    check_malloc_free_usable();
    check_realloc();
    check_realloc_growth();
    check_realloc_steps();
    check_alignment();
    check_calloc();
    check_cross_thread_free();
    check_bad_frees();
    static void *keep[COUNTED_KEPT];
    counted_site(keep);
    ox_child_say("SITE", "%lu %lu", (unsigned long)(uintptr_t)__start_oxprof_counted,
                 (unsigned long)(uintptr_t)__stop_oxprof_counted);
    CHECK(prof_dump(dump_path) == 0, "ox_prof_dump(%s)", dump_path);
    for (int i = 0; i < COUNTED_KEPT; i++)
        free(keep[i]);
}

int main(int argc, char **argv)
{
    if (argc > 3 && strcmp(argv[1], "worker") == 0) {
        worker(argv[3]);
        return 0;
    }
    if (argc > 2 && strcmp(argv[1], "worker") == 0) {
        /* ox_prof_run_worker passes no path: it is in the environment. */
        worker(getenv("OXTEST_DUMP_PATH"));
        return 0;
    }
    ox_require_active();
    char dir[64], env_dir[128], env_path[160], path[160];
    ox_prof_dir_make(dir, sizeof dir);
    snprintf(env_dir, sizeof env_dir, "OXMALLOC_PROF_DIR=%s", dir);
    snprintf(path, sizeof path, "%s/blocks.raw", dir);
    snprintf(env_path, sizeof env_path, "OXTEST_DUMP_PATH=%s", path);
    const char *env[] = {"OXMALLOC_PROF=1", "OXMALLOC_PROF_INTERVAL=1", env_dir, env_path, NULL};
    struct ox_child r;
    ox_prof_run_worker("blocks", env, 50, &r);
    CHECK(r.exited && r.exit_code == 0, "worker %s: %s", ox_child_describe(&r), r.err);

    struct ox_prof_file f;
    char err[512];
    CHECK(ox_prof_read(path, &f, err, sizeof err), "%s", err);
    CHECK(strcmp(f.reason, "api") == 0 && f.interval == 1, "reason %s, interval %llu", f.reason,
          (unsigned long long)f.interval);
    /* The counted site's stack: its innermost frame is in counted_site. */
    char buf[128];
    unsigned long lo, hi;
    CHECK(ox_child_value(&r, "SITE", buf, sizeof buf) && sscanf(buf, "%lu %lu", &lo, &hi) == 2,
          "worker did not say SITE");
    int found = 0;
    for (int i = 0; i < f.nstacks; i++) {
        const struct ox_prof_stack *s = &f.stacks[i];
        if (s->depth > 0 && s->pcs[0] > lo && s->pcs[0] <= hi) {
            found++;
            CHECK(s->alloc_samples == COUNTED, "counted site: %llu samples, expected %d",
                  (unsigned long long)s->alloc_samples, COUNTED);
            CHECK(s->inuse_samples == COUNTED_KEPT, "counted site: %llu live, expected %d",
                  (unsigned long long)s->inuse_samples, COUNTED_KEPT);
            /* At interval 1 a 48-byte block is sampled with p = 1 - e^-48: each counts 1. */
            CHECK(s->alloc_objects == COUNTED && s->alloc_bytes == 48 * COUNTED &&
                      s->inuse_bytes == 48 * COUNTED_KEPT,
                  "counted site estimates %llu objects, %llu bytes, %llu live bytes",
                  (unsigned long long)s->alloc_objects, (unsigned long long)s->alloc_bytes,
                  (unsigned long long)s->inuse_bytes);
        }
    }
    CHECK(found == 1, "%d stacks start in counted_site", found);
    ox_prof_free(&f);
    ox_prof_dir_remove(dir);
    return 0;
}
