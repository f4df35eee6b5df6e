/*
 * errno on every failure path, as glibc sets it: each failing call returns its
 * error value AND leaves errno as glibc would (ENOMEM for memory that cannot be
 * had, EINVAL for a bad argument where glibc sets it), and calls that glibc
 * documents as leaving errno alone (free, posix_memalign's EINVAL, realloc(p, 0))
 * leave it alone. Checked against this table, under oxmalloc linked and preloaded.
 */
#include "common.h"
#include <malloc.h>
#include <stdio.h>

#define SENTINEL 12345

/* Every call goes through a volatile function pointer: the compiler knows the malloc
 * family and may assume a call leaves errno alone (forwarding the SENTINEL store to the
 * load after it), or drop a call whose result is unused. */
static void *(*volatile v_malloc)(size_t) = malloc;
static void *(*volatile v_calloc)(size_t, size_t) = calloc;
static void *(*volatile v_realloc)(void *, size_t) = realloc;
static void *(*volatile v_reallocarray)(void *, size_t, size_t) = reallocarray;
static void *(*volatile v_aligned_alloc)(size_t, size_t) = aligned_alloc;
static void *(*volatile v_memalign)(size_t, size_t) = memalign;
static void *(*volatile v_valloc)(size_t) = valloc;
static void *(*volatile v_pvalloc)(size_t) = pvalloc;
static int (*volatile v_posix_memalign)(void **, size_t, size_t) = posix_memalign;
static void (*volatile v_free)(void *) = free;
static int (*volatile v_malloc_info)(int, FILE *) = malloc_info;

/* For calls that return nothing. */
#define EXPECT_ERRNO_VOID(call, want)                                          \
    do {                                                                       \
        errno = SENTINEL;                                                      \
        call;                                                                  \
        CHECK(errno == (want), "%s: errno %d (%s), expected %d", #call, errno, \
              strerror(errno), (want));                                        \
    } while (0)

/* The result goes through ox_escape: a compiler may drop an allocation whose result
 * is unused, and the call with it. */
#define EXPECT_ERRNO(call, want)                                               \
    do {                                                                       \
        errno = SENTINEL;                                                      \
        ox_escape((const void *)(call));                                       \
        CHECK(errno == (want), "%s: errno %d (%s), expected %d", #call, errno, \
              strerror(errno), (want));                                        \
    } while (0)

int main(void)
{
    ox_require_active();
    size_t huge = ox_opaque(SIZE_MAX - 4096);
    void *p;

    /* Allocation that cannot be served: NULL + ENOMEM. */
    errno = SENTINEL;
    CHECK(v_malloc(huge) == NULL, "malloc(huge) succeeded");
    CHECK(errno == ENOMEM, "malloc: errno %d", errno);
    EXPECT_ERRNO(v_calloc(huge, 1), ENOMEM);
    EXPECT_ERRNO(v_calloc(ox_opaque((size_t)1 << 33), ox_opaque((size_t)1 << 33)), ENOMEM);
    EXPECT_ERRNO(v_aligned_alloc(64, huge), ENOMEM);
    EXPECT_ERRNO(v_memalign(64, huge), ENOMEM);
    EXPECT_ERRNO(v_valloc(huge), ENOMEM);
    EXPECT_ERRNO(v_pvalloc(huge), ENOMEM);

    /* realloc / reallocarray failures: NULL + ENOMEM, the block untouched. */
    p = v_malloc(100);
    CHECK(p != NULL, "malloc(100)");
    memset(p, 0x5a, 100);
    EXPECT_ERRNO(v_realloc(p, huge), ENOMEM);
    EXPECT_ERRNO(v_reallocarray(p, ox_opaque((size_t)1 << 40), ox_opaque((size_t)1 << 40)), ENOMEM);
    EXPECT_ERRNO(v_reallocarray(p, 1, huge), ENOMEM);
    for (int i = 0; i < 100; i++) CHECK(((unsigned char *)p)[i] == 0x5a, "block changed");

    /* posix_memalign: ENOMEM returned AND set in errno (glibc does both); EINVAL only
     * returned. */
    void *out = NULL;
    errno = SENTINEL;
    int r = v_posix_memalign(&out, 64, huge);
    CHECK(r == ENOMEM, "posix_memalign(huge) returned %d", r);
    CHECK(errno == ENOMEM, "posix_memalign(huge): errno %d, glibc sets ENOMEM", errno);
    errno = SENTINEL;
    r = v_posix_memalign(&out, ox_opaque(24), 16);
    CHECK(r == EINVAL, "posix_memalign(24) returned %d", r);
    CHECK(errno == SENTINEL, "posix_memalign(24): errno changed to %d", errno);

    /* Bad alignments where glibc sets EINVAL. */
    if (ox_active()) {
        /* C17 and glibc >= 2.38; older glibc rounds the alignment up instead. */
        EXPECT_ERRNO(v_aligned_alloc(ox_opaque(24), 48), EINVAL);
        EXPECT_ERRNO(v_aligned_alloc(ox_opaque(0), 48), EINVAL);
    }
    EXPECT_ERRNO(v_memalign(ox_opaque(SIZE_MAX / 2 + 2), 16), EINVAL);

    /* malloc_info with options != 0: glibc returns EINVAL and leaves errno alone. */
    errno = SENTINEL;
    FILE *f = fopen("/dev/null", "w");
    CHECK(f != NULL, "fopen /dev/null");
    r = v_malloc_info(ox_opaque(1), f);
    CHECK(r == EINVAL && errno == SENTINEL, "malloc_info(1): %d, errno %d", r, errno);
    fclose(f);

    /* Calls that keep errno. */
    EXPECT_ERRNO_VOID(v_free(NULL), SENTINEL);
    EXPECT_ERRNO_VOID(v_free(p), SENTINEL);
    p = v_malloc(64);
    CHECK(p != NULL, "malloc(64)");
    errno = SENTINEL;
    CHECK(v_realloc(p, 0) == NULL, "realloc(p, 0) returned a block");
    CHECK(errno == SENTINEL, "realloc(p, 0): errno changed to %d", errno);
    /* A large free (munmap path) keeps errno too. */
    p = v_malloc(64 << 20);
    CHECK(p != NULL, "malloc(64 MiB)");
    EXPECT_ERRNO_VOID(v_free(p), SENTINEL);
    malloc_trim(0);

    printf("errno: every failure path sets errno as glibc does\n");
    return 0;
}
