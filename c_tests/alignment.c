/*
 * Every block is at least 16-byte aligned (max_align_t), for every size from
 * 0 to 70000 and for a spread of bigger sizes, and blocks never overlap the
 * blocks live beside them.
 */
#include "common.h"

#define WINDOW 64

int main(void)
{
    ox_require_active();

    char *live[WINDOW] = {0};
    size_t live_size[WINDOW] = {0};

    for (size_t n = 0; n <= 70000; n++) {
        size_t slot = n % WINDOW;
        if (live[slot] != NULL) {
            /* A malloc(0) block has no byte to read (in hardened mode a read faults). */
            CHECK(live_size[slot] == 0 || live[slot][0] == (char)(live_size[slot] & 0x7f),
                  "block of %zu bytes at %p was overwritten", live_size[slot],
                  (void *)live[slot]);
            free(live[slot]);
        }
        char *p = malloc(ox_opaque(n));
        CHECK(p != NULL, "malloc(%zu) returned NULL", n);
        CHECK(ox_is_aligned(p, 16), "malloc(%zu) = %p is not 16-byte aligned", n, (void *)p);
        if (n > 0) {
            p[0] = (char)(n & 0x7f);
            p[n - 1] = (char)(n & 0x7f);
        }
        live[slot] = p;
        live_size[slot] = n;
    }
    for (size_t i = 0; i < WINDOW; i++)
        free(live[i]);

    /* Every size up to 70000, same size many times: each block aligned. */
    for (size_t n = 1; n <= 70000; n = n * 5 / 4 + 1) {
        void *ps[32];
        for (int i = 0; i < 32; i++) {
            ps[i] = malloc(ox_opaque(n));
            CHECK(ps[i] != NULL, "malloc(%zu) returned NULL", n);
            CHECK(ox_is_aligned(ps[i], 16), "malloc(%zu) = %p is not 16-byte aligned", n, ps[i]);
            memset(ps[i], i, n);
        }
        for (int i = 0; i < 32; i++) {
            unsigned char *b = ps[i];
            CHECK(b[0] == (unsigned char)i && b[n - 1] == (unsigned char)i,
                  "block %d of size %zu overwritten by a neighbour", i, n);
            free(ps[i]);
        }
    }

    /* Bigger sizes: medium and huge, odd lengths. */
    for (size_t n = 70001; n <= ((size_t)80 << 20); n = n * 3 / 2 + 7) {
        char *p = malloc(ox_opaque(n));
        CHECK(p != NULL, "malloc(%zu) returned NULL", n);
        CHECK(ox_is_aligned(p, 16), "malloc(%zu) = %p is not 16-byte aligned", n, (void *)p);
        p[0] = 1;
        p[n - 1] = 2;
        free(p);
    }

    /* calloc and realloc results too. */
    for (size_t n = 1; n <= 100000; n = n * 2 + 3) {
        void *c = calloc(1, ox_opaque(n));
        CHECK(c != NULL && ox_is_aligned(c, 16), "calloc(1, %zu) = %p", n, c);
        void *r = realloc(c, ox_opaque(n * 3 + 1));
        CHECK(r != NULL && ox_is_aligned(r, 16), "realloc(.., %zu) = %p", n * 3 + 1, r);
        free(r);
    }
    return 0;
}
