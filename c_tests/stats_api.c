/*
 * The glibc-compatible introspection calls exist and are honest: mallopt
 * returns an int, mallinfo2 (and the deprecated mallinfo) report a heap that
 * grows when 100 MiB are allocated, malloc_trim(0), malloc_stats() and
 * malloc_info() can be called without crashing.
 */
#include "common.h"
#include <malloc.h>

typedef struct mallinfo (*mallinfo_fn)(void);

static size_t mi2_total(struct mallinfo2 m)
{
    /* Bytes in use, however the allocator chooses to split them between the
     * main arena and mmapped blocks. */
    return m.uordblks + m.hblkhd;
}

int main(void)
{
    ox_require_active();

    /* mallopt: any int is a fine answer, crashing is not. Options oxmalloc
     * does not support should be refused with 0 rather than misbehave. */
    const int params[] = {M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX,
                          M_ARENA_MAX,      M_ARENA_TEST, M_PERTURB,     M_CHECK_ACTION,
                          M_MXFAST,         12345,        -7};
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        int r = mallopt(params[i], 0);
        (void)r;
        r = mallopt(params[i], 1 << 20);
        (void)r;
    }
    /* Restore the usual values where glibc interprets them. */
    mallopt(M_PERTURB, 0);
    mallopt(M_MMAP_MAX, 65536);

    /* Allocate after mallopt: still fine. */
    void *t = malloc(ox_opaque(1000));
    CHECK(t != NULL, "malloc after mallopt failed");
    free(t);

    /* mallinfo2 grows by ~100 MiB while 100 MiB are live. */
    struct mallinfo2 before = mallinfo2();
    enum { NB = 100 };
    void *blocks[NB + 1000];
    for (int i = 0; i < NB; i++) {
        blocks[i] = malloc(ox_opaque((size_t)1 << 20));
        CHECK(blocks[i] != NULL, "malloc(1 MiB) #%d failed", i);
        memset(blocks[i], i, (size_t)1 << 20);
    }
    for (int i = 0; i < 1000; i++) {
        blocks[NB + i] = malloc(ox_opaque(64));
        CHECK(blocks[NB + i] != NULL, "malloc(64) failed");
    }
    struct mallinfo2 during = mallinfo2();
    size_t b = mi2_total(before), d = mi2_total(during);
    CHECK(d >= b + ((size_t)90 << 20),
          "mallinfo2 in-use bytes (uordblks+hblkhd) went from %zu to %zu with 100 MiB more live",
          b, d);
    CHECK(during.arena + during.hblkhd >= during.uordblks,
          "mallinfo2: arena %zu + hblkhd %zu < uordblks %zu", during.arena, during.hblkhd,
          during.uordblks);
    CHECK(d < b + ((size_t)1 << 30), "mallinfo2 in-use bytes implausible: %zu -> %zu", b, d);

    /* The deprecated mallinfo, through dlsym to avoid the deprecation warning.
     * Its fields are int and may saturate; they must at least move. */
    mallinfo_fn mi = (mallinfo_fn)ox_sym("mallinfo");
    if (mi != NULL) {
        struct mallinfo m = mi();
        long used = (long)(unsigned)m.uordblks + (long)(unsigned)m.hblkhd;
        CHECK(used >= (90L << 20), "mallinfo in-use bytes %ld with >= 100 MiB live", used);
    } else {
        NOTE("mallinfo not exported");
    }

    for (int i = 0; i < NB + 1000; i++)
        free(blocks[i]);
    struct mallinfo2 after = mallinfo2();
    size_t a = mi2_total(after);
    CHECK(a + ((size_t)80 << 20) <= d, "mallinfo2 in-use bytes did not drop after freeing: %zu -> %zu",
          d, a);

    /* malloc_trim: 0 or 1, callable repeatedly. */
    for (int i = 0; i < 3; i++) {
        int r = malloc_trim(0);
        CHECK(r == 0 || r == 1, "malloc_trim(0) returned %d", r);
    }
    int r = malloc_trim(1 << 20);
    CHECK(r == 0 || r == 1, "malloc_trim(1 MiB) returned %d", r);

    /* malloc_stats writes to stderr. */
    fflush(stderr);
    malloc_stats();
    fflush(stderr);

    /* malloc_info(0, fp) writes something and returns 0. */
    FILE *f = tmpfile();
    CHECK(f != NULL, "tmpfile failed");
    r = malloc_info(0, f);
    CHECK(r == 0, "malloc_info(0, fp) returned %d", r);
    fflush(f);
    long len = ftell(f);
    CHECK(len > 0, "malloc_info wrote nothing");
    fclose(f);

    /* And the allocator still works. */
    void *p = malloc(ox_opaque(12345));
    CHECK(p != NULL, "malloc after the stats calls failed");
    free(p);
    return 0;
}
