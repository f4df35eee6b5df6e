/*
 * reallocarray(p, n, m) is realloc(p, n*m) with the multiplication checked:
 * overflow gives NULL + ENOMEM and leaves p alone.
 */
#include "common.h"
#include <malloc.h>

int main(void)
{
    ox_require_active();

    /* Normal use, from NULL and growing. */
    int *a = reallocarray(NULL, ox_opaque(10), sizeof(int));
    CHECK(a != NULL, "reallocarray(NULL, 10, 4) failed");
    for (int i = 0; i < 10; i++)
        a[i] = i * 7;
    int *b = reallocarray(a, ox_opaque(100000), sizeof(int));
    CHECK(b != NULL, "reallocarray(a, 100000, 4) failed");
    CHECK(malloc_usable_size(b) >= 100000 * sizeof(int), "usable size too small");
    for (int i = 0; i < 10; i++)
        CHECK(b[i] == i * 7, "reallocarray lost element %d", i);
    b[99999] = 1;

    /* Overflow: the product does not fit in size_t. */
    const size_t ov[][2] = {
        {SIZE_MAX, 2},
        {2, SIZE_MAX},
        {(size_t)1 << 33, (size_t)1 << 31},
        {SIZE_MAX / 4 + 1, 4},
        {SIZE_MAX, SIZE_MAX},
    };
    for (size_t i = 0; i < sizeof(ov) / sizeof(ov[0]); i++) {
        errno = 0;
        void *q = reallocarray(b, ox_opaque(ov[i][0]), ox_opaque(ov[i][1]));
        int e = errno;
        CHECK(q == NULL, "reallocarray(p, %#zx, %#zx) returned %p", ov[i][0], ov[i][1], q);
        CHECK(e == ENOMEM, "reallocarray overflow: errno %d (%s), expected ENOMEM", e,
              strerror(e));
        for (int k = 0; k < 10; k++)
            CHECK(b[k] == k * 7, "failed reallocarray changed element %d", k);
        errno = 0;
        q = reallocarray(NULL, ox_opaque(ov[i][0]), ox_opaque(ov[i][1]));
        e = errno;
        CHECK(q == NULL && e == ENOMEM, "reallocarray(NULL, %#zx, %#zx) = %p, errno %d",
              ov[i][0], ov[i][1], q, e);
    }

    /* No overflow, but too big. */
    errno = 0;
    void *q = reallocarray(b, ox_opaque((size_t)1 << 31), ox_opaque((size_t)1 << 31));
    CHECK(q == NULL && errno == ENOMEM, "reallocarray(p, 2^31, 2^31) = %p, errno %d", q, errno);

    /* Shrink works and keeps contents. */
    int *c = reallocarray(b, ox_opaque(5), sizeof(int));
    CHECK(c != NULL, "reallocarray shrink failed");
    for (int i = 0; i < 5; i++)
        CHECK(c[i] == i * 7, "shrink lost element %d", i);
    free(c);
    return 0;
}
