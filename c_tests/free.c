/*
 * free(NULL) is a no-op; free preserves errno for every kind of block (small,
 * medium, huge, aligned); the C23 free_sized and free_aligned_sized accept
 * blocks with their size (and alignment).
 */
#include "common.h"
#include <malloc.h>

typedef void (*free_sized_fn)(void *, size_t);
typedef void (*free_aligned_sized_fn)(void *, size_t, size_t);

#define SENTINEL 12345

int main(void)
{
    ox_require_active();

    for (int i = 0; i < 1000; i++) {
        errno = SENTINEL;
        free(ox_opaque_ptr(NULL));
        CHECK(errno == SENTINEL, "free(NULL) changed errno to %d", errno);
    }

    const size_t sizes[] = {0,      1,      16,     100,     1000,     8000,    16384,
                            40000,  100000, 300000, 1000000, (size_t)3 << 20,
                            (size_t)9 << 20, (size_t)64 << 20, (size_t)200 << 20};
    const int errs[] = {SENTINEL, 0, ENOMEM, EINVAL, EBADF, ENOENT};
    for (size_t e = 0; e < sizeof(errs) / sizeof(errs[0]); e++) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            char *p = malloc(ox_opaque(sizes[i]));
            CHECK(p != NULL, "malloc(%zu) failed", sizes[i]);
            if (sizes[i])
                p[0] = p[sizes[i] - 1] = 1;
            errno = errs[e];
            free(p);
            CHECK(errno == errs[e], "free of a %zu-byte block changed errno from %d to %d",
                  sizes[i], errs[e], errno);
        }
    }
    /* Blocks from calloc and the aligned calls too, and many frees in
     * a row (the ones that give memory back to the OS are the risky ones). */
    for (int round = 0; round < 3; round++) {
        enum { M = 300 };
        void *ps[M];
        for (int i = 0; i < M; i++) {
            size_t n = (size_t)(i * 977 + round * 13) % 70000 + 1;
            if (i % 50 == 0)
                n = (size_t)(i + 1) << 17;
            switch (i % 4) {
            case 0: ps[i] = malloc(ox_opaque(n)); break;
            case 1: ps[i] = calloc(1, ox_opaque(n)); break;
            case 2: ps[i] = aligned_alloc(4096, ox_opaque(n)); break;
            default: ps[i] = memalign(256, ox_opaque(n)); break;
            }
            CHECK(ps[i] != NULL, "allocation of %zu failed", n);
            memset(ps[i], 0x3c, n < 4096 ? n : 4096);
        }
        for (int i = 0; i < M; i++) {
            errno = SENTINEL + i;
            free(ps[i]);
            CHECK(errno == SENTINEL + i, "free #%d changed errno to %d", i, errno);
        }
    }
    {
        /* malloc_trim, which may return memory to the OS, keeps errno too. */
        errno = SENTINEL;
        malloc_trim(0);
        CHECK(errno == SENTINEL, "malloc_trim changed errno to %d", errno);
    }

    /* C23 sized frees. */
    free_sized_fn fs = (free_sized_fn)ox_sym("free_sized");
    free_aligned_sized_fn fas = (free_aligned_sized_fn)ox_sym("free_aligned_sized");
    if (fs == NULL || fas == NULL) {
        CHECK(!ox_active(), "free_sized (%p) or free_aligned_sized (%p) not exported",
              (void *)fs, (void *)fas);
        NOTE("free_sized/free_aligned_sized not available in this libc, not tested");
        return 0;
    }
    CHECK(ox_addr_in_oxmalloc((void *)fs) || !ox_active(), "free_sized is in %s",
          ox_object_of((void *)fs));
    CHECK(ox_addr_in_oxmalloc((void *)fas) || !ox_active(), "free_aligned_sized is in %s",
          ox_object_of((void *)fas));

    errno = SENTINEL;
    fs(NULL, 0);
    fs(NULL, 100);
    fas(NULL, 64, 0);
    CHECK(errno == SENTINEL, "free_sized(NULL..) changed errno to %d", errno);

    for (int round = 0; round < 4; round++) {
        for (size_t n = 1; n < ((size_t)32 << 20); n = n * 3 + round) {
            void *p = malloc(ox_opaque(n));
            CHECK(p != NULL, "malloc(%zu) failed", n);
            memset(p, 1, n < 65536 ? n : 65536);
            errno = SENTINEL;
            fs(p, n);
            CHECK(errno == SENTINEL, "free_sized(p, %zu) changed errno to %d", n, errno);

            p = calloc(ox_opaque(n), 1);
            CHECK(p != NULL, "calloc(%zu, 1) failed", n);
            fs(p, n);

            for (size_t al = 16; al <= ((size_t)1 << 20); al <<= 3) {
                size_t m = (n + al - 1) / al * al; /* aligned_alloc wants a multiple */
                void *q = aligned_alloc(al, ox_opaque(m));
                CHECK(q != NULL, "aligned_alloc(%zu, %zu) failed", al, m);
                CHECK(ox_is_aligned(q, al), "aligned_alloc(%zu, ..) = %p", al, q);
                memset(q, 2, m < 65536 ? m : 65536);
                errno = SENTINEL;
                fas(q, al, m);
                CHECK(errno == SENTINEL, "free_aligned_sized changed errno to %d", errno);
            }
        }
    }
    /* After all that the allocator still serves every size. */
    for (size_t n = 1; n < ((size_t)32 << 20); n = n * 5 + 1) {
        void *p = malloc(ox_opaque(n));
        CHECK(p != NULL, "malloc(%zu) failed after sized frees", n);
        memset(p, 3, n < 65536 ? n : 65536);
        free(p);
    }
    return 0;
}
