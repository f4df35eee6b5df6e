/*
 * realloc: realloc(NULL, n) is malloc(n); realloc(p, 0) frees p and returns
 * NULL (glibc behaviour); contents are preserved when growing and shrinking
 * across every size range (16 B ... 64 MiB, including huge growth that can be
 * done with mremap); failure returns NULL + ENOMEM and leaves the old block
 * untouched, usable and freeable.
 */
#include "common.h"
#include <malloc.h>

/* The first `n` bytes of a block filled as `filled` bytes are intact. */
static void check_pattern(const unsigned char *p, size_t filled, size_t n, uint64_t seed,
                          const char *what, size_t from, size_t to)
{
    size_t bad = ox_verify_part(p, filled, n, seed);
    CHECK(bad == SIZE_MAX, "%s %zu -> %zu: byte %zu of %zu lost", what, from, to, bad, n);
}

int main(void)
{
    ox_require_active();

    /* realloc(NULL, n) == malloc(n) */
    for (size_t n = 0; n < 100000; n = n * 2 + 1) {
        errno = 0;
        char *p = realloc(NULL, ox_opaque(n));
        CHECK(p != NULL, "realloc(NULL, %zu) returned NULL (errno %d)", n, errno);
        CHECK(malloc_usable_size(p) >= n, "realloc(NULL, %zu): usable %zu", n,
              malloc_usable_size(p));
        if (n)
            memset(p, 1, n);
        free(p);
    }

    /* realloc(p, 0) frees p and returns NULL. Freeing repeatedly this way must
     * not leak or crash; the memory goes back (checked loosely via RSS). */
    size_t rss0 = ox_rss_bytes();
    for (int i = 0; i < 2000; i++) {
        size_t n = (i % 3 == 0) ? 24 : (i % 3 == 1) ? 3000 : 300000;
        char *p = malloc(ox_opaque(n));
        CHECK(p != NULL, "malloc(%zu) failed", n);
        memset(p, 7, n);
        void *q = realloc(p, ox_opaque(0));
        CHECK(q == NULL, "realloc(p, 0) returned %p, expected NULL (p freed)", q);
    }
    size_t rss1 = ox_rss_bytes();
    CHECK(rss1 < rss0 + ((size_t)64 << 20),
          "RSS grew from %zu to %zu bytes over 2000 realloc(p, 0): blocks not freed?", rss0,
          rss1);

    /* Grow and shrink through every range, contents preserved. */
    const size_t steps[] = {
        1,       16,       24,       100,      1000,     4096,     10000,    16385,
        32768,   65536,    100000,   262144,   1000000,  (size_t)2 << 20,
        (size_t)5 << 20,   (size_t)16 << 20,   (size_t)64 << 20,
    };
    const size_t nsteps = sizeof(steps) / sizeof(steps[0]);
    uint64_t seed = 1;
    for (size_t a = 0; a < nsteps; a++) {
        for (size_t b = 0; b < nsteps; b++) {
            if (a == b)
                continue;
            /* Skip the heaviest pairs of huge sizes except a few. */
            if (steps[a] >= ((size_t)16 << 20) && steps[b] >= ((size_t)16 << 20) &&
                (a + b) % 2)
                continue;
            size_t from = steps[a], to = steps[b];
            unsigned char *p = malloc(ox_opaque(from));
            CHECK(p != NULL, "malloc(%zu) failed", from);
            ox_fill(p, from, seed);
            /* A neighbour allocated in between, so growth in place is not free. */
            void *nb = malloc(ox_opaque(from));
            CHECK(nb != NULL, "malloc(%zu) failed", from);
            unsigned char *q = realloc(p, ox_opaque(to));
            CHECK(q != NULL, "realloc %zu -> %zu failed", from, to);
            CHECK(ox_is_aligned(q, 16), "realloc %zu -> %zu gave %p", from, to, (void *)q);
            CHECK(malloc_usable_size(q) >= to, "realloc %zu -> %zu: usable %zu", from, to,
                  malloc_usable_size(q));
            size_t keep = from < to ? from : to;
            check_pattern(q, from, keep, seed, "realloc", from, to);
            /* The new part is writable. */
            if (to > from) {
                q[from] = 0x11;
                q[to - 1] = 0x22;
            }
            free(nb);
            free(q);
            seed++;
        }
    }

    /* A chain of many small growth steps up to 64 MiB and back down. */
    {
        size_t n = 1;
        unsigned char *p = malloc(1);
        CHECK(p != NULL, "malloc(1) failed");
        p[0] = ox_pattern_byte(99, 0);
        while (n < ((size_t)64 << 20)) {
            size_t m = n + n / 3 + 13;
            unsigned char *q = realloc(p, ox_opaque(m));
            CHECK(q != NULL, "realloc grow %zu -> %zu failed", n, m);
            check_pattern(q, n, n, 99, "growth chain", n, m);
            ox_fill(q, m, 99);
            p = q;
            n = m;
        }
        while (n > 8) {
            size_t m = n / 2 - 3;
            unsigned char *q = realloc(p, ox_opaque(m));
            CHECK(q != NULL, "realloc shrink %zu -> %zu failed", n, m);
            check_pattern(q, n, m, 99, "shrink chain", n, m);
            ox_fill(q, m, 99);
            p = q;
            n = m;
        }
        free(p);
    }

    /* Huge growth: a 64 MiB block grown to 512 MiB must keep its contents
     * (the region that mremap can move without copying). Every page is
     * checked, not only a sample. */
    {
        size_t from = (size_t)64 << 20, to = (size_t)512 << 20;
        unsigned long *p = malloc(ox_opaque(from));
        CHECK(p != NULL, "malloc(64 MiB) failed");
        for (size_t i = 0; i < from / sizeof(long); i += 512)
            p[i] = i ^ 0x5555;
        unsigned long *q = realloc(p, ox_opaque(to));
        CHECK(q != NULL, "realloc 64 MiB -> 512 MiB failed");
        for (size_t i = 0; i < from / sizeof(long); i += 512)
            CHECK(q[i] == (i ^ 0x5555), "huge realloc lost word %zu", i);
        q[to / sizeof(long) - 1] = 42;
        unsigned long *r = realloc(q, ox_opaque(from / 4));
        CHECK(r != NULL, "realloc 512 MiB -> 16 MiB failed");
        for (size_t i = 0; i < from / 4 / sizeof(long); i += 512)
            CHECK(r[i] == (i ^ 0x5555), "huge shrink lost word %zu", i);
        free(r);
    }

    /* Failure leaves the old block alone. */
    const size_t bad[] = {SIZE_MAX, SIZE_MAX - 15, (size_t)PTRDIFF_MAX + 1, (size_t)1 << 62};
    const size_t olds[] = {16, 500, 20000, 300000, (size_t)8 << 20};
    for (size_t i = 0; i < sizeof(olds) / sizeof(olds[0]); i++) {
        size_t n = olds[i];
        unsigned char *p = malloc(ox_opaque(n));
        CHECK(p != NULL, "malloc(%zu) failed", n);
        ox_fill(p, n, 1000 + i);
        size_t u = malloc_usable_size(p);
        for (size_t j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
            errno = 0;
            void *q = realloc(p, ox_opaque(bad[j]));
            int e = errno;
            CHECK(q == NULL, "realloc(%zu-byte block, %#zx) returned %p", n, bad[j], q);
            CHECK(e == ENOMEM, "realloc(.., %#zx): errno %d (%s), expected ENOMEM", bad[j], e,
                  strerror(e));
            check_pattern(p, n, n, 1000 + i, "failed realloc", n, bad[j]);
            CHECK(malloc_usable_size(p) == u, "usable size changed by a failed realloc");
        }
        /* Still usable: grow it for real, then free. */
        unsigned char *q = realloc(p, ox_opaque(n * 2));
        CHECK(q != NULL, "realloc after a failed realloc failed");
        check_pattern(q, n, n, 1000 + i, "realloc after failure", n, n * 2);
        free(q);
    }
    return 0;
}
