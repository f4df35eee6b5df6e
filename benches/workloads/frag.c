/* frag: fragmentation. Scattered survivors, then larger requests.
 *
 * Each of 6 cycles allocates 300k small blocks (16..256 B), frees all but every 40th
 * (the survivors are spread over the whole range the small blocks took), then allocates
 * 20k larger blocks (1..16 KiB) that cannot fit in the small holes, frees all but every
 * 40th of those, and goes on with the next cycle. The live heap stays small while the
 * touched address range grows. At the end everything is freed. The program reports its
 * RSS (from /proc/self/statm) with the survivors live and after freeing everything, and
 * the live bytes, so the harness can show how much memory the allocator holds for how
 * much is in use. An allocator that cannot reuse the holes or return memory shows it.
 *
 * usage: frag [scale]
 */
#include "common.h"

#define CYCLES 6
#define SMALL 300000
#define LARGE 20000

int main(int argc, char **argv)
{
    long scale = arg_long(argc, argv, 1, 1);
    size_t small_n = SMALL * (size_t)scale, large_n = LARGE * (size_t)scale;
    size_t keep_cap = CYCLES * (small_n / 40 + large_n / 40 + 2);
    void **keep = malloc(keep_cap * sizeof(void *));
    void **tmp = malloc((small_n > large_n ? small_n : large_n) * sizeof(void *));
    if (!keep || !tmp)
        fail("malloc");
    size_t kept = 0;
    uint64_t rng = 0xF2A6, sum = 0, live_bytes = 0;

    for (int c = 0; c < CYCLES; c++) {
        for (size_t i = 0; i < small_n; i++) {
            size_t n = rng_range(&rng, 16, 256);
            tmp[i] = xmalloc(n);
            stamp(tmp[i], n, mix64(((uint64_t)c << 40) ^ i));
        }
        for (size_t i = 0; i < small_n; i++) {
            if (i % 40 == (size_t)c) {
                uint32_t n;
                memcpy(&n, (char *)tmp[i] + 8, 4);
                live_bytes += n;
                keep[kept++] = tmp[i];
            } else {
                sum += check(tmp[i]);
                free(tmp[i]);
            }
        }
        for (size_t i = 0; i < large_n; i++) {
            size_t n = rng_range(&rng, 1024, 16384);
            tmp[i] = xmalloc(n);
            memset((char *)tmp[i] + 16, (int)(i & 0xff), n - 24);
            stamp(tmp[i], n, mix64(((uint64_t)c << 40) ^ (i + small_n)));
        }
        for (size_t i = 0; i < large_n; i++) {
            if (i % 40 == (size_t)(c + 20)) {
                uint32_t n;
                memcpy(&n, (char *)tmp[i] + 8, 4);
                live_bytes += n;
                keep[kept++] = tmp[i];
            } else {
                sum += check(tmp[i]);
                free(tmp[i]);
            }
        }
    }
    long rss_live = rss_kb();
    for (size_t i = 0; i < kept; i++) {
        sum += check(keep[i]);
        free(keep[i]);
    }
    free(tmp);
    free(keep);
    long rss_end = rss_kb();
    printf("# live_kb=%llu\n", (unsigned long long)(live_bytes / 1024));
    printf("# rss_live_kb=%ld\n", rss_live);
    printf("# rss_final_kb=%ld\n", rss_end);
    print_ok(sum);
    return 0;
}
