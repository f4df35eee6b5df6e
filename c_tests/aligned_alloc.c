/*
 * aligned_alloc: every power-of-two alignment from 1 to 64 MiB (including the
 * page size and above) gives an aligned, writable block; alignment 0 or not a
 * power of two gives NULL + EINVAL (C17 / glibc >= 2.38); impossible sizes
 * give NULL + ENOMEM.
 */
#include "common.h"
#include <malloc.h>

int main(void)
{
    ox_require_active();

    const size_t sizes[] = {0, 1, 16, 100, 4096, 4097, 65536, 100000, (size_t)3 << 20};
    for (size_t al = 1; al <= ((size_t)64 << 20); al <<= 1) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            size_t n = sizes[i];
            void *ps[3];
            for (int k = 0; k < 3; k++) {
                errno = 0;
                ps[k] = aligned_alloc(ox_opaque(al), ox_opaque(n));
                CHECK(ps[k] != NULL, "aligned_alloc(%zu, %zu) returned NULL (errno %d)", al, n,
                      errno);
                CHECK(ox_is_aligned(ps[k], al), "aligned_alloc(%zu, %zu) = %p not aligned", al,
                      n, ps[k]);
                CHECK(ox_is_aligned(ps[k], 16), "aligned_alloc(%zu, %zu) = %p not 16-aligned",
                      al, n, ps[k]);
                CHECK(malloc_usable_size(ps[k]) >= n, "aligned_alloc(%zu, %zu): usable %zu",
                      al, n, malloc_usable_size(ps[k]));
                if (n) {
                    memset(ps[k], 0x61 + k, n < 65536 ? n : 65536);
                    ((char *)ps[k])[n - 1] = (char)k;
                }
            }
            for (int k = 0; k < 3; k++) {
                unsigned char *b = ps[k];
                if (n > 1)
                    CHECK(b[0] == 0x61 + k, "aligned block %d (align %zu, size %zu) overwritten",
                          k, al, n);
                free(ps[k]);
            }
        }
    }

    /* Invalid alignments. */
    const size_t bad_align[] = {0, 3, 5, 6, 7, 12, 24, 48, 100, 4095, 4097, 12288,
                                ((size_t)1 << 20) + 16, SIZE_MAX, SIZE_MAX / 2};
    for (size_t i = 0; i < sizeof(bad_align) / sizeof(bad_align[0]); i++) {
        errno = 0;
        void *p = aligned_alloc(ox_opaque(bad_align[i]), ox_opaque(64));
        int e = errno;
        CHECK_OX(p == NULL && e == EINVAL,
                 "aligned_alloc(%#zx, 64) = %p, errno %d (%s); expected NULL + EINVAL",
                 bad_align[i], p, e, strerror(e));
        if (p != NULL)
            free(p);
    }

    /* Impossible sizes. */
    const size_t bad_size[] = {SIZE_MAX, SIZE_MAX - 4095, (size_t)PTRDIFF_MAX + 1,
                               (size_t)1 << 62};
    for (size_t i = 0; i < sizeof(bad_size) / sizeof(bad_size[0]); i++) {
        for (size_t al = 1; al <= ((size_t)64 << 20); al <<= 4) {
            errno = 0;
            void *p = aligned_alloc(ox_opaque(al), ox_opaque(bad_size[i]));
            int e = errno;
            CHECK(p == NULL, "aligned_alloc(%zu, %#zx) = %p", al, bad_size[i], p);
            CHECK(e == ENOMEM, "aligned_alloc(%zu, %#zx): errno %d (%s), expected ENOMEM", al,
                  bad_size[i], e, strerror(e));
        }
    }
    return 0;
}
