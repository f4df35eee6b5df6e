/*
 * malloc(0) gives unique, freeable pointers; impossible sizes give NULL with
 * errno ENOMEM and never abort.
 */
#include "common.h"

#define NZERO 64

int main(void)
{
    ox_require_active();

    /* malloc(0): unique, non-NULL, freeable, usable as a (tiny) object. */
    void *z[NZERO];
    for (int i = 0; i < NZERO; i++) {
        errno = 0;
        z[i] = malloc(ox_opaque(0));
        CHECK(z[i] != NULL, "malloc(0) #%d returned NULL (errno %d)", i, errno);
        CHECK(ox_is_aligned(z[i], 16), "malloc(0) = %p not 16-byte aligned", z[i]);
        for (int j = 0; j < i; j++)
            CHECK(z[i] != z[j], "malloc(0) returned %p twice (#%d and #%d)", z[i], j, i);
    }
    /* A small block after them must not overlap any of them either. */
    void *s = malloc(ox_opaque(8));
    CHECK(s != NULL, "malloc(8) failed");
    for (int i = 0; i < NZERO; i++)
        CHECK(s != z[i], "malloc(8) returned the live malloc(0) pointer %p", s);
    memset(s, 0xab, 8);
    free(s);
    for (int i = 0; i < NZERO; i++)
        free(z[i]);

    /* Alternating malloc(0)/free must keep working. */
    for (int i = 0; i < 10000; i++) {
        void *p = malloc(ox_opaque(0));
        CHECK(p != NULL, "malloc(0) failed at iteration %d", i);
        ox_escape(p);
        free(p);
    }

    /* Impossible sizes. */
    const size_t huge[] = {
        SIZE_MAX,
        SIZE_MAX - 1,
        SIZE_MAX - 15,
        SIZE_MAX - 4095,
        SIZE_MAX / 2,
        (size_t)PTRDIFF_MAX,
        (size_t)PTRDIFF_MAX + 1,
        (size_t)1 << 62,
        (size_t)1 << 56,
        (size_t)1 << 48,
        ((size_t)1 << 47) + 4096,
    };
    for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
        errno = 0;
        void *p = malloc(ox_opaque(huge[i]));
        int e = errno;
        CHECK(p == NULL, "malloc(%#zx) returned %p, expected NULL", huge[i], p);
        CHECK(e == ENOMEM, "malloc(%#zx): errno %d (%s), expected ENOMEM", huge[i], e,
              strerror(e));
    }

    /* And the allocator still works afterwards, small and big. */
    const size_t after[] = {1, 100, 5000, 100000, 3u << 20, 40u << 20};
    for (size_t i = 0; i < sizeof(after) / sizeof(after[0]); i++) {
        char *p = malloc(ox_opaque(after[i]));
        CHECK(p != NULL, "malloc(%zu) failed after the impossible requests", after[i]);
        memset(p, 0x5a, after[i]);
        free(p);
    }
    return 0;
}
