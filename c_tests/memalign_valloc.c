/*
 * memalign (a non-power-of-two alignment is rounded up to one, as glibc
 * does), valloc and pvalloc (page aligned; pvalloc rounds the size up to
 * whole pages, pvalloc(0) is one page), and NULL + ENOMEM from all three for
 * sizes near SIZE_MAX.
 */
#include "common.h"
#include <malloc.h>

static size_t next_pow2(size_t x)
{
    size_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

int main(void)
{
    ox_require_active();
    const size_t page = ox_page_size();

    /* memalign with powers of two and with other values. */
    const size_t aligns[] = {1,    2,    3,    8,    16,   24,   48,   64,   100,  256,
                             1000, 4095, 4096, 5000, 8192, 65535, 65536, 100000,
                             (size_t)1 << 20, ((size_t)1 << 20) + 1, (size_t)3 << 20,
                             (size_t)32 << 20};
    const size_t sizes[] = {0, 1, 33, 4096, 70000, (size_t)2 << 20};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
        size_t want = next_pow2(aligns[i]);
        for (size_t j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
            size_t n = sizes[j];
            errno = 0;
            void *p = memalign(ox_opaque(aligns[i]), ox_opaque(n));
            CHECK(p != NULL, "memalign(%zu, %zu) returned NULL (errno %d)", aligns[i], n, errno);
            CHECK(ox_is_aligned(p, want), "memalign(%zu, %zu) = %p not aligned to %zu",
                  aligns[i], n, p, want);
            CHECK(ox_is_aligned(p, 16), "memalign(%zu, %zu) = %p not 16-aligned", aligns[i], n,
                  p);
            CHECK(malloc_usable_size(p) >= n, "memalign(%zu, %zu): usable %zu", aligns[i], n,
                  malloc_usable_size(p));
            if (n)
                memset(p, 0x33, n);
            free(p);
        }
    }

    /* valloc: page aligned. */
    for (size_t n = 0; n < ((size_t)8 << 20); n = n * 3 + 1) {
        void *ps[4];
        for (int k = 0; k < 4; k++) {
            ps[k] = valloc(ox_opaque(n));
            CHECK(ps[k] != NULL, "valloc(%zu) returned NULL", n);
            CHECK(ox_is_aligned(ps[k], page), "valloc(%zu) = %p not page aligned", n, ps[k]);
            CHECK(malloc_usable_size(ps[k]) >= n, "valloc(%zu): usable %zu", n,
                  malloc_usable_size(ps[k]));
            if (n)
                memset(ps[k], k, n);
        }
        for (int k = 0; k < 4; k++)
            free(ps[k]);
    }

    /* pvalloc: page aligned, size rounded up to whole pages. */
    for (size_t n = 0; n < ((size_t)8 << 20); n = n * 3 + 1) {
        size_t rounded = (n + page - 1) / page * page;
        if (rounded == 0)
            rounded = page;
        unsigned char *p = pvalloc(ox_opaque(n));
        CHECK(p != NULL, "pvalloc(%zu) returned NULL", n);
        CHECK(ox_is_aligned(p, page), "pvalloc(%zu) = %p not page aligned", n, (void *)p);
        size_t u = malloc_usable_size(p);
        CHECK_OX(u >= rounded, "pvalloc(%zu): usable %zu < %zu (whole pages)", n, u, rounded);
        /* The whole rounded size is ours to write. */
        if (u >= rounded)
            memset(p, 0x44, rounded);
        free(p);
    }
    {
        void *p = pvalloc(ox_opaque(0));
        CHECK(p != NULL, "pvalloc(0) returned NULL");
        CHECK(ox_is_aligned(p, page), "pvalloc(0) = %p not page aligned", p);
        CHECK_OX(malloc_usable_size(p) >= page, "pvalloc(0): usable %zu < one page %zu",
                 malloc_usable_size(p), page);
        free(p);
    }

    /* Sizes near SIZE_MAX: NULL + ENOMEM, never a wrapped-around small block. */
    const size_t bad[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - page + 1, SIZE_MAX - page,
                          SIZE_MAX - 2 * page, (size_t)PTRDIFF_MAX + 1, (size_t)1 << 62};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = bad[i];
        void *p;
        int e;

        errno = 0;
        p = valloc(ox_opaque(n));
        e = errno;
        CHECK(p == NULL && e == ENOMEM, "valloc(%#zx) = %p, errno %d (%s)", n, p, e, strerror(e));

        errno = 0;
        p = pvalloc(ox_opaque(n));
        e = errno;
        CHECK(p == NULL && e == ENOMEM, "pvalloc(%#zx) = %p, errno %d (%s)", n, p, e,
              strerror(e));

        for (size_t al = 1; al <= ((size_t)1 << 24); al <<= 4) {
            errno = 0;
            p = memalign(ox_opaque(al), ox_opaque(n));
            e = errno;
            CHECK(p == NULL && e == ENOMEM, "memalign(%zu, %#zx) = %p, errno %d (%s)", al, n, p,
                  e, strerror(e));
        }
    }
    /* An alignment so large it cannot be served. */
    errno = 0;
    void *p = memalign(ox_opaque((size_t)1 << 63), 16);
    CHECK(p == NULL && (errno == ENOMEM || errno == EINVAL), "memalign(2^63, 16) = %p, errno %d",
          p, errno);
    return 0;
}
