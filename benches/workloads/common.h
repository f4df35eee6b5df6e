/* Shared helpers for the oxmalloc whole-program workloads.
 *
 * Every workload is deterministic: its random numbers come from fixed seeds, and the
 * result it prints (the line starting with "OK ") depends only on its arguments, never on
 * addresses, timing or thread interleaving. The benchmark harness compares that line
 * between allocators. Lines starting with "# key=value" are informational metrics.
 *
 * Objects are self-describing: stamp() writes a tag, the size and a tail mark into the
 * block, and check() verifies them before the block is freed, so that an allocator that
 * hands out overlapping or too-small blocks is caught (the program prints FAIL and exits
 * with status 3).
 */
#ifndef OXBENCH_COMMON_H
#define OXBENCH_COMMON_H

#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIN_OBJ 16

static inline uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: tiny state, good enough mixing, fast */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, n) */
static inline uint32_t rng_below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(((rng_next(s) >> 32) * (uint64_t)n) >> 32);
}

/* uniform in [lo, hi] */
static inline size_t rng_range(uint64_t *s, size_t lo, size_t hi)
{
    return lo + rng_below(s, (uint32_t)(hi - lo + 1));
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static void fail(const char *what)
{
    /* write(2) directly: the heap may be broken */
    const char pre[] = "FAIL ";
    ssize_t r = write(1, pre, sizeof pre - 1);
    r = write(1, what, strlen(what));
    r = write(1, "\n", 1);
    (void)r;
    _exit(3);
}

/* Runs worker((void *)i) for i in 0..n on n threads and waits for all of them; the
 * threads report through the caller's own arrays. */
static inline void run_workers(int n, void *(*worker)(void *))
{
    pthread_t *th = calloc((size_t)n, sizeof *th);
    if (!th)
        fail("calloc");
    for (int i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0)
            fail("pthread_create");
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    free(th);
}

/* The sum of the n per-thread sums. */
static inline uint64_t sum_of(const uint64_t *sums, int n)
{
    uint64_t sum = 0;
    for (int i = 0; i < n; i++)
        sum += sums[i];
    return sum;
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        fail("malloc returned NULL");
    if (((uintptr_t)p & 15) != 0 && n >= 16)
        fail("malloc result is not 16-byte aligned");
    return p;
}

__attribute__((unused)) static long arg_long(int argc, char **argv, int i, long def)
{
    if (argc <= i)
        return def;
    char *end;
    long v = strtol(argv[i], &end, 10);
    if (*end != '\0' || v <= 0) {
        fprintf(stderr, "bad argument '%s'\n", argv[i]);
        exit(2);
    }
    return v;
}

/* Write a tag, the size and a tail mark into an object of n >= MIN_OBJ bytes. */
static inline void stamp(void *p, size_t n, uint64_t tag)
{
    unsigned char *b = (unsigned char *)p;
    uint32_t n32 = (uint32_t)n;
    uint32_t chk = (uint32_t)(tag >> 32) ^ n32 ^ 0xA5A5A5A5u;
    memcpy(b, &tag, 8);
    memcpy(b + 8, &n32, 4);
    memcpy(b + 12, &chk, 4);
    if (n >= 24) {
        uint64_t tail = ~tag;
        memcpy(b + n - 8, &tail, 8);
    }
}

/* Verify a stamped object; return its tag. */
static inline uint64_t check(const void *p)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t tag, tail;
    uint32_t n32, chk;
    memcpy(&tag, b, 8);
    memcpy(&n32, b + 8, 4);
    memcpy(&chk, b + 12, 4);
    if (chk != ((uint32_t)(tag >> 32) ^ n32 ^ 0xA5A5A5A5u) || n32 < MIN_OBJ)
        fail("object header corrupted");
    if (n32 >= 24) {
        memcpy(&tail, b + n32 - 8, 8);
        if (tail != ~tag)
            fail("object tail corrupted");
    }
    return tag;
}

/* Resident set size of this process in KiB, from /proc/self/statm, without malloc. */
__attribute__((unused)) static long rss_kb(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *s = buf;
    while (*s && *s != ' ')
        s++;
    long pages = strtol(s, NULL, 10);
    return pages * (sysconf(_SC_PAGESIZE) / 1024);
}

/* For blocks whose size the caller keeps (so it may be below MIN_OBJ, down to 8 bytes):
 * mark() writes the tag into the first 8 bytes and, from 16 bytes up, its complement into
 * the last 8; unmark() verifies them and returns the tag. */
static inline void mark(void *p, size_t n, uint64_t tag)
{
    unsigned char *b = (unsigned char *)p;
    memcpy(b, &tag, 8);
    if (n >= 16) {
        uint64_t tail = ~tag;
        memcpy(b + n - 8, &tail, 8);
    }
}

static inline uint64_t unmark(const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t tag, tail;
    memcpy(&tag, b, 8);
    if (n >= 16) {
        memcpy(&tail, b + n - 8, 8);
        if (tail != ~tag)
            fail("block tail corrupted");
    }
    return tag;
}

/* Write one byte into every 4 KiB of b[lo, hi), as a program that fills a buffer would
 * make each of its OS pages resident, at a fraction of the cost of writing all of it. */
static inline void touch_pages(void *p, size_t lo, size_t hi, unsigned char v)
{
    unsigned char *b = (unsigned char *)p;
    for (size_t i = lo; i < hi; i += 4096)
        b[i] = v;
}

__attribute__((unused)) static void print_ok(uint64_t sum)
{
    printf("OK %016llx\n", (unsigned long long)sum);
}

#endif
