/*
 * The malloc/free fast path in a loop: N pairs of malloc(SIZE) and free.
 *
 *   malloc_free_loop N [SIZE]      (SIZE defaults to 32)
 *
 * Run under `valgrind --tool=callgrind` twice with different N (scripts/fastpath-cost):
 * the difference in instructions divided by the difference in N is the cost of one pair,
 * without the start-up and exit of the process.
 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s N [SIZE]\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]);
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 32;
    for (long i = 0; i < n; i++) {
        void *p = malloc(size);
        /* Keep the compiler from pairing and dropping the calls. */
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
    return 0;
}
