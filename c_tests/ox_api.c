/*
 * The extended ox_* API: ox_malloc/ox_calloc/ox_realloc/ox_free/
 * ox_aligned_alloc behave like their standard names and share one heap with
 * them; ox_usable_size agrees with malloc_usable_size; ox_owns says yes for
 * our blocks (any byte of them) and no for stack, static and foreign mmap
 * memory; ox_trim returns 0 or 1.
 */
#include "common.h"
#include <malloc.h>
#include <sys/mman.h>

static int static_object;

int main(void)
{
    ox_require_active();

    struct ox_api ox;
    if (!ox_api_load(&ox, 1)) {
        CHECK(!ox_active(), "the extended ox_* API is not fully exported");
        SKIP("extended ox_* API not available (not running on oxmalloc)");
    }

    /* ox_malloc / ox_free, and mixing with the standard names. */
    for (size_t n = 0; n < ((size_t)20 << 20); n = n * 2 + 7) {
        unsigned char *p = ox.malloc(n);
        CHECK(p != NULL, "ox_malloc(%zu) failed", n);
        CHECK(ox_is_aligned(p, 16), "ox_malloc(%zu) = %p", n, (void *)p);
        CHECK(ox.usable_size(p) >= n, "ox_usable_size %zu < %zu", ox.usable_size(p), n);
        CHECK(ox.usable_size(p) == malloc_usable_size(p), "ox_usable_size %zu != malloc_usable_size %zu",
              ox.usable_size(p), malloc_usable_size(p));
        CHECK(ox.owns(p) == 1, "ox_owns(ox_malloc(%zu)) = %d", n, ox.owns(p));
        ox_fill(p, n, n);
        /* Freed by the standard free. */
        free(p);

        unsigned char *q = malloc(n);
        CHECK(q != NULL, "malloc(%zu) failed", n);
        CHECK(ox.owns(q) == 1, "ox_owns(malloc(%zu)) = %d", n, ox.owns(q));
        ox_fill(q, n, n + 1);
        unsigned char *r = ox.realloc(q, n * 2 + 1);
        CHECK(r != NULL, "ox_realloc failed");
        CHECK(ox_verify(r, n, n + 1) == SIZE_MAX, "ox_realloc lost contents at size %zu", n);
        ox.free(r);
    }

    /* ox_calloc zeroes and checks overflow. */
    for (size_t n = 1; n < ((size_t)4 << 20); n = n * 3 + 1) {
        unsigned char *d = malloc(n);
        CHECK(d != NULL, "malloc failed");
        memset(d, 0xff, n);
        free(d);
        unsigned char *c = ox.calloc(n, 1);
        CHECK(c != NULL, "ox_calloc(%zu, 1) failed", n);
        for (size_t i = 0; i < n; i++)
            CHECK(c[i] == 0, "ox_calloc(%zu, 1) byte %zu not zero", n, i);
        ox.free(c);
    }
    errno = 0;
    CHECK(ox.calloc(SIZE_MAX, 2) == NULL && errno == ENOMEM, "ox_calloc overflow: errno %d", errno);
    errno = 0;
    CHECK(ox.malloc(SIZE_MAX) == NULL && errno == ENOMEM, "ox_malloc(SIZE_MAX): errno %d", errno);

    /* ox_realloc edge cases match realloc. */
    void *n0 = ox.realloc(NULL, 10);
    CHECK(n0 != NULL, "ox_realloc(NULL, 10) failed");
    errno = 0;
    CHECK(ox.realloc(n0, SIZE_MAX) == NULL && errno == ENOMEM, "ox_realloc(p, SIZE_MAX)");
    CHECK(ox.realloc(n0, 0) == NULL, "ox_realloc(p, 0) should free p and return NULL");

    /* ox_aligned_alloc */
    for (size_t al = 1; al <= ((size_t)16 << 20); al <<= 1) {
        void *p = ox.aligned_alloc(al, 100);
        CHECK(p != NULL && ox_is_aligned(p, al), "ox_aligned_alloc(%zu, 100) = %p", al, p);
        CHECK(ox.owns(p) == 1, "ox_owns(aligned block) = 0");
        free(p);
    }
    errno = 0;
    CHECK(ox.aligned_alloc(3, 100) == NULL && errno == EINVAL, "ox_aligned_alloc(3, 100): errno %d",
          errno);

    /* ox_free(NULL) and ox_usable_size(NULL). */
    errno = 777;
    ox.free(NULL);
    CHECK(errno == 777, "ox_free(NULL) changed errno");
    CHECK(ox.usable_size(NULL) == 0, "ox_usable_size(NULL) = %zu", ox.usable_size(NULL));

    /* ox_owns says no to memory that is not ours. */
    int local = 0;
    CHECK(ox.owns(&local) == 0, "ox_owns(stack address %p) = 1", (void *)&local);
    CHECK(ox.owns(&static_object) == 0, "ox_owns(static object) = 1");
    CHECK(ox.owns((void *)&main) == 0, "ox_owns(code address) = 1");
    CHECK(ox.owns(NULL) == 0, "ox_owns(NULL) = 1");
    CHECK(ox.owns((void *)(uintptr_t)16) == 0, "ox_owns(0x10) = 1");
    CHECK(ox.owns((void *)(uintptr_t)0xffffffffffff0000ULL) == 0, "ox_owns(kernel address) = 1");
    unsigned char *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED, "mmap failed");
    CHECK(ox.owns(m) == 0 && ox.owns(m + 4096) == 0 && ox.owns(m + (1 << 20) - 1) == 0,
          "ox_owns(foreign mmap memory) = 1");
    munmap(m, 1 << 20);

    /* ox_trim after freeing a lot. */
    enum { K = 64 };
    void *big[K];
    for (int i = 0; i < K; i++) {
        big[i] = malloc((size_t)(i % 8 + 1) * 100000);
        CHECK(big[i] != NULL, "malloc failed");
        memset(big[i], 1, (size_t)(i % 8 + 1) * 100000);
    }
    for (int i = 0; i < K; i++)
        free(big[i]);
    int t = ox.trim();
    CHECK(t == 0 || t == 1, "ox_trim returned %d", t);
    t = ox.trim();
    CHECK(t == 0 || t == 1, "second ox_trim returned %d", t);
    void *after = malloc(300000);
    CHECK(after != NULL, "malloc after ox_trim failed");
    memset(after, 2, 300000);
    free(after);

    /* ox_owns answers "is this the start of a block of ours?" (a pointer that free()
     * would take): yes for every block, no for an address inside one. */
    for (size_t n = 1; n < ((size_t)20 << 20); n = n * 2 + 7) {
        unsigned char *p = malloc(n);
        CHECK(p != NULL, "malloc(%zu) failed", n);
        CHECK(ox.owns(p) == 1, "ox_owns(start of a %zu-byte block %p) = 0", n, (void *)p);
        if (n >= 32)
            CHECK(ox.owns(p + 16) == 0, "ox_owns(inside a %zu-byte block, %p + 16) = 1", n,
                  (void *)p);
        free(p);
    }
    return 0;
}
