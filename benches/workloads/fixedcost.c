/* fixedcost: what an allocator costs a tiny program.
 *
 * Allocates 1 MiB in total, in 16384 blocks of 64 bytes, writes each, and exits without
 * freeing (as many short programs do). The harness reports this program's peak RSS, and
 * that of /bin/true, under each allocator, as KiB over glibc: the fixed cost of loading
 * the allocator and of its first allocations, which dominates for small processes.
 *
 * usage: fixedcost
 */
#include "common.h"

#define BLOCKS 16384
#define BLOCK_BYTES 64

int main(void)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < BLOCKS; i++) {
        void *p = xmalloc(BLOCK_BYTES);
        stamp(p, BLOCK_BYTES, mix64(i));
        sum += check(p);
    }
    print_ok(sum);
    return 0;
}
