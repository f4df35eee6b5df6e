/*
 * posix_memalign: EINVAL unless the alignment is a power of two multiple of
 * sizeof(void *); ENOMEM for impossible sizes; *memptr is never written on
 * error; success for alignments 8 ... 64 MiB, aligned and writable.
 */
#include "common.h"
#include <malloc.h>

static void *const SENT = (void *)(uintptr_t)0xdeadbeefcafe0000ULL;

static void expect_error(size_t align, size_t size, int want)
{
    void *m = SENT;
    errno = 0;
    int r = posix_memalign(&m, ox_opaque(align), ox_opaque(size));
    CHECK(r == want, "posix_memalign(align %#zx, size %#zx) returned %d (%s), expected %d (%s)",
          align, size, r, strerror(r), want, strerror(want));
    CHECK(m == SENT, "posix_memalign(align %#zx, size %#zx) wrote *memptr = %p on error", align,
          size, m);
}

int main(void)
{
    ox_require_active();

    /* Invalid alignments. */
    const size_t bad_align[] = {0,  1,  2,  3,  4,  sizeof(void *) / 2, 5,  6,  7,  9,
                                12, 24, 48, 96, 100, 4095, 4097, 12288, ((size_t)1 << 20) + 8,
                                SIZE_MAX, SIZE_MAX / 2, ((size_t)1 << 63) + 8};
    for (size_t i = 0; i < sizeof(bad_align) / sizeof(bad_align[0]); i++) {
        expect_error(bad_align[i], 100, EINVAL);
        expect_error(bad_align[i], 0, EINVAL);
    }

    /* Impossible sizes. */
    const size_t bad_size[] = {SIZE_MAX, SIZE_MAX - 8, SIZE_MAX - 4096, (size_t)PTRDIFF_MAX + 1,
                               (size_t)1 << 62, SIZE_MAX - ((size_t)1 << 20)};
    for (size_t i = 0; i < sizeof(bad_size) / sizeof(bad_size[0]); i++)
        for (size_t al = sizeof(void *); al <= ((size_t)64 << 20); al <<= 3)
            expect_error(al, bad_size[i], ENOMEM);

    /* A huge alignment that cannot be served at all. */
    {
        void *m = SENT;
        int r = posix_memalign(&m, ox_opaque((size_t)1 << 62), 16);
        CHECK(r == ENOMEM || r == EINVAL, "posix_memalign(align 2^62) returned %d", r);
        CHECK(m == SENT, "posix_memalign(align 2^62) wrote *memptr on error");
    }

    /* Success: every power of two from 8 to 64 MiB, several sizes. */
    const size_t sizes[] = {0, 1, 8, 24, 100, 1000, 4096, 5000, 70000, (size_t)1 << 20,
                            (size_t)5 << 20};
    for (size_t al = sizeof(void *); al <= ((size_t)64 << 20); al <<= 1) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            size_t n = sizes[i];
            void *held[3];
            for (int k = 0; k < 3; k++) {
                void *m = SENT;
                int r = posix_memalign(&m, ox_opaque(al), ox_opaque(n));
                CHECK(r == 0, "posix_memalign(align %zu, size %zu) failed: %d (%s)", al, n, r,
                      strerror(r));
                CHECK(m != SENT && m != NULL, "posix_memalign(%zu, %zu) success but *memptr=%p",
                      al, n, m);
                CHECK(ox_is_aligned(m, al), "posix_memalign(%zu, %zu) = %p is not aligned", al,
                      n, m);
                CHECK(ox_is_aligned(m, 16), "posix_memalign(%zu, %zu) = %p is not 16-aligned",
                      al, n, m);
                CHECK(malloc_usable_size(m) >= n, "posix_memalign(%zu, %zu): usable %zu", al, n,
                      malloc_usable_size(m));
                if (n) {
                    memset(m, 0x77, n < 65536 ? n : 65536);
                    ((char *)m)[n - 1] = 0x78;
                }
                held[k] = m;
            }
            CHECK(held[0] != held[1] && held[1] != held[2] && held[0] != held[2],
                  "posix_memalign(%zu, %zu) returned the same pointer twice", al, n);
            for (int k = 0; k < 3; k++)
                free(held[k]);
        }
    }

    /* Aligned blocks mixed with ordinary ones; realloc of an aligned block. */
    void *m = NULL;
    CHECK(posix_memalign(&m, 4096, 10000) == 0, "posix_memalign(4096, 10000) failed");
    memset(m, 0x42, 10000);
    char *r = realloc(m, 200000);
    CHECK(r != NULL, "realloc of a posix_memalign block failed");
    for (int i = 0; i < 10000; i++)
        CHECK(r[i] == 0x42, "realloc of an aligned block lost byte %d", i);
    free(r);
    return 0;
}
