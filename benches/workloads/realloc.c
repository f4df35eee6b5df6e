/* realloc: many buffers grown byte by byte and by doubling.
 *
 * Phase 1 (byte-wise, like a string builder without capacity): 256 buffers are appended
 * to in random turns, one byte per realloc, each up to a random length of up to 8 KiB,
 * then verified, freed and started again. Interleaving the buffers stops a naive
 * allocator from always growing in place.
 * Phase 2 (doubling, like a vector): 64 buffers grow from 16 B by doubling up to a random
 * limit of 1 KiB .. 1 MiB, the new half written each time, then verified and freed.
 * The result is a hash of sampled buffer contents, so a realloc that loses data fails.
 *
 * usage: realloc [scale]
 */
#include "common.h"

#define NBUF 256
#define NVEC 64

static inline unsigned char byte_at(uint64_t id, size_t j)
{
    return (unsigned char)((j * 131u) ^ (id * 29u) ^ (j >> 7));
}

/* vectors: the 16 starting bytes hold level 4; the half [2^k, 2^(k+1)) written at the
 * k-th doubling holds level k+1 (the bit length of its offsets) */
static inline unsigned char vec_byte(uint64_t id, size_t j)
{
    unsigned level = j < 16 ? 4 : 64 - (unsigned)__builtin_clzll((unsigned long long)j);
    return (unsigned char)(id * 29u + level);
}

static uint64_t verify_vec(const unsigned char *b, size_t len, uint64_t id)
{
    uint64_t h = len;
    for (size_t j = 0; j < len; j += 61) {
        if (b[j] != vec_byte(id, j))
            fail("realloc lost data");
        h = h * 31 + b[j];
    }
    if (b[len - 1] != vec_byte(id, len - 1))
        fail("realloc lost data at the end");
    return h;
}

static uint64_t verify(const unsigned char *b, size_t len, uint64_t id)
{
    uint64_t h = len;
    for (size_t j = 0; j < len; j += 61) {
        if (b[j] != byte_at(id, j))
            fail("realloc lost data");
        h = h * 31 + b[j];
    }
    if (len && b[len - 1] != byte_at(id, len - 1))
        fail("realloc lost data at the end");
    return h;
}

int main(int argc, char **argv)
{
    long scale = arg_long(argc, argv, 1, 1);
    uint64_t appends = 25000000ull * (uint64_t)scale;
    long vec_rounds = 60 * scale;
    uint64_t rng = 0x4EA11, sum = 0, next_id = 1;

    unsigned char *buf[NBUF] = {0};
    size_t len[NBUF] = {0}, target[NBUF];
    uint64_t id[NBUF];
    for (int k = 0; k < NBUF; k++) {
        target[k] = rng_range(&rng, 1, 8192);
        id[k] = next_id++;
    }
    for (uint64_t a = 0; a < appends; a++) {
        unsigned k = rng_below(&rng, NBUF);
        unsigned char *p = realloc(buf[k], len[k] + 1);
        if (!p)
            fail("realloc returned NULL");
        p[len[k]] = byte_at(id[k], len[k]);
        len[k]++;
        buf[k] = p;
        if (len[k] == target[k]) {
            sum += verify(p, len[k], id[k]);
            free(p);
            buf[k] = NULL;
            len[k] = 0;
            target[k] = rng_range(&rng, 1, 8192);
            id[k] = next_id++;
        }
    }
    for (int k = 0; k < NBUF; k++)
        if (buf[k]) {
            sum += verify(buf[k], len[k], id[k]);
            free(buf[k]);
        }

    unsigned char *vec[NVEC] = {0};
    size_t cap[NVEC], limit[NVEC];
    uint64_t vid[NVEC];
    for (long r = 0; r < vec_rounds; r++) {
        /* start every vector at 16 bytes */
        for (int k = 0; k < NVEC; k++) {
            vid[k] = next_id++;
            cap[k] = 16;
            limit[k] = (size_t)1024 << rng_below(&rng, 11); /* 1 KiB .. 1 MiB */
            vec[k] = xmalloc(16);
            memset(vec[k], vec_byte(vid[k], 0), 16);
        }
        /* grow them in turns until each reaches its limit */
        int growing = NVEC;
        while (growing) {
            growing = 0;
            for (int k = 0; k < NVEC; k++) {
                if (cap[k] >= limit[k])
                    continue;
                growing++;
                unsigned char *p = realloc(vec[k], cap[k] * 2);
                if (!p)
                    fail("realloc returned NULL");
                memset(p + cap[k], vec_byte(vid[k], cap[k]), cap[k]);
                cap[k] *= 2;
                vec[k] = p;
            }
        }
        for (int k = 0; k < NVEC; k++) {
            sum += verify_vec(vec[k], cap[k], vid[k]);
            free(vec[k]);
        }
    }
    print_ok(sum);
    return 0;
}
