/*
 * calloc returns zeroed memory even when it reuses blocks that were dirtied
 * (malloc, fill, free, then calloc the same sizes), for sizes from 1 byte to
 * 64 MiB; n*m overflow gives NULL + ENOMEM.
 */
#include "common.h"

static const unsigned char zeros[65536];

static int all_zero(const unsigned char *p, size_t n)
{
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (memcmp(p, zeros, k) != 0)
            return 0;
        p += k;
        n -= k;
    }
    return 1;
}

static size_t sizes[200];
static size_t nsizes;

int main(void)
{
    ox_require_active();

    for (size_t n = 1; n <= 64; n++)
        sizes[nsizes++] = n;
    for (size_t n = 80; n <= ((size_t)64 << 20); n = n * 3 / 2)
        sizes[nsizes++] = n;
    sizes[nsizes++] = (size_t)64 << 20;
    CHECK(nsizes <= sizeof(sizes) / sizeof(sizes[0]), "too many sizes");

    enum { REPS = 8 };
    for (int round = 0; round < 2; round++) {
        for (size_t k = 0; k < nsizes; k++) {
            size_t n = sizes[k];
            int reps = n > (8u << 20) ? 1 : n > (1u << 20) ? 2 : REPS;
            unsigned char *d[REPS];
            /* Dirty: allocate, fill, free. */
            for (int i = 0; i < reps; i++) {
                d[i] = malloc(ox_opaque(n));
                CHECK(d[i] != NULL, "malloc(%zu) failed", n);
                memset(d[i], 0xA5 ^ i, n);
            }
            for (int i = 0; i < reps; i++)
                free(d[i]);
            /* Now calloc the same size, as a single element and as an array. */
            for (int i = 0; i < reps; i++) {
                size_t count = (i & 1) ? 1 : n, each = (i & 1) ? n : 1;
                if ((i & 2) && n % 8 == 0) {
                    count = n / 8;
                    each = 8;
                }
                d[i] = calloc(ox_opaque(count), ox_opaque(each));
                CHECK(d[i] != NULL, "calloc(%zu, %zu) failed", count, each);
                CHECK(ox_is_aligned(d[i], 16), "calloc result %p not 16-byte aligned",
                      (void *)d[i]);
                CHECK(all_zero(d[i], n), "calloc(%zu, %zu) (round %d) is not zeroed", count,
                      each, round);
                memset(d[i], 0x5A, n); /* dirty again for the next round */
            }
            for (int i = 0; i < reps; i++)
                free(d[i]);
        }
    }

    /* calloc(0, x) and calloc(x, 0) behave like malloc(0): unique, freeable. */
    void *a = calloc(ox_opaque(0), 16), *b = calloc(16, ox_opaque(0)), *c = calloc(0, 0);
    CHECK(a != NULL && b != NULL && c != NULL, "calloc with a zero argument returned NULL");
    CHECK(a != b && b != c && a != c, "calloc(0,..) returned the same pointer twice");
    free(a);
    free(b);
    free(c);

    /* Overflow of n*m. */
    const size_t ov[][2] = {
        {SIZE_MAX, 2},
        {2, SIZE_MAX},
        {SIZE_MAX, SIZE_MAX},
        {(size_t)1 << 32, (size_t)1 << 32},
        {((size_t)1 << 32) + 1, ((size_t)1 << 32) - 1 + 2},
        {SIZE_MAX / 16 + 1, 16},
        {3, SIZE_MAX / 3 + 1},
        /* no overflow, but impossible */
        {1, SIZE_MAX},
        {(size_t)1 << 31, (size_t)1 << 31},
        {SIZE_MAX / 2, 1},
    };
    for (size_t i = 0; i < sizeof(ov) / sizeof(ov[0]); i++) {
        errno = 0;
        void *p = calloc(ox_opaque(ov[i][0]), ox_opaque(ov[i][1]));
        int e = errno;
        CHECK(p == NULL, "calloc(%#zx, %#zx) returned %p, expected NULL", ov[i][0], ov[i][1], p);
        CHECK(e == ENOMEM, "calloc(%#zx, %#zx): errno %d (%s), expected ENOMEM", ov[i][0],
              ov[i][1], e, strerror(e));
    }

    /* Still works. */
    unsigned char *p = calloc(1000, 1000);
    CHECK(p != NULL && all_zero(p, 1000000), "calloc(1000, 1000) after overflows");
    free(p);
    return 0;
}
