/* tchurn_mixed: thread churn with medium and huge blocks, growing pointer arrays.
 *
 * Each round runs two threads: the main thread, which works as well and survives, and a
 * second thread created and joined in that round (hundreds of rounds). Each of the two
 * keeps a pointer array that it grows with realloc in steps of 100,000 pointers (800 KB,
 * then 1.6 MB, ...; medium, then huge blocks), and a second array of blocks it retains
 * until the end of its round. Block sizes are 8 B x 2^k (k < 5), of which 1% are 100
 * times that, 0.1% 1,000 times and 0.01% 10,000 times (up to 1.28 MB). Each step
 * allocates one block and appends it to the pointer array (one in eight goes to the
 * retained array instead); then, with probability 2/3, it frees the block of a random
 * slot, and with probability 1/4 it swaps a random slot with one of 1,000 global transfer
 * slots (an atomic exchange), so blocks die in other threads, often after the thread that
 * made them has exited. Between rounds the main thread frees half of the transfer slots.
 *
 * An allocator pays here for what a thread exit does with the memory the thread used
 * (medium blocks, the spans of the grown arrays, its slabs): handing it on warm, or giving
 * it back to the OS and faulting it in again in the next round.
 *
 * Every block is written (a tag at its start, the tag's complement at its end, one byte
 * per OS page in between) and checked before it is freed. A block's size is a function of
 * its tag, so the check needs nothing but the block. The result is the sum of the tags of
 * all blocks freed; every block is freed exactly once (by some thread), so the sum does
 * not depend on which thread freed which block.
 *
 * usage: tchurn_mixed [scale] [divisor]   (rounds = 30 * scale / divisor)
 */
#include "common.h"
#include <stdatomic.h>

#define TRANSFER 1000          /* global transfer slots */
#define STEPS_PER_ROUND 115000 /* steps of each of the two threads per round */
#define ARRAY_STEP 100000      /* the pointer array grows by this many pointers */
#define RETAIN_STEP 8192       /* the retained array grows by this many pointers */

static _Atomic(void *) transfer[TRANSFER];
static uint64_t round_no;
static uint64_t sums[2];

/* The size of the block with tag `tag`: 8 << k bytes (k < 5), times 100 (1%), 1,000 (0.1%)
 * or 10,000 (0.01%). */
static size_t size_of_tag(uint64_t tag)
{
    uint64_t h = mix64(tag ^ 0x5123u);
    size_t n = (size_t)8 << (h % 5);
    uint32_t r = (uint32_t)((h >> 8) % 10000);
    if (r == 0)
        n *= 10000;
    else if (r <= 10)
        n *= 1000;
    else if (r <= 110)
        n *= 100;
    return n;
}

static void *new_block(uint64_t tag)
{
    size_t n = size_of_tag(tag);
    void *p = xmalloc(n);
    if (n > 4096)
        touch_pages(p, 8, n - 8, (unsigned char)tag);
    mark(p, n, tag);
    return p;
}

static uint64_t free_block(void *p)
{
    uint64_t tag;
    memcpy(&tag, p, 8);
    unmark(p, size_of_tag(tag));
    free(p);
    return tag;
}

/* Appends `p` to the array `*arr` of `*len` entries and `*cap` capacity, growing it with
 * realloc by `step` entries when full. */
static void push(void ***arr, size_t *len, size_t *cap, size_t step, void *p)
{
    if (*len == *cap) {
        *cap += step;
        void **grown = realloc(*arr, *cap * sizeof **arr);
        if (!grown)
            fail("realloc returned NULL");
        *arr = grown;
    }
    (*arr)[(*len)++] = p;
}

static void *work(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t rng = mix64((round_no << 4) ^ (uint64_t)id ^ 0x3A9u), sum = 0;
    uint64_t base = (round_no << 40) ^ ((uint64_t)id << 36);
    void **slots = NULL, **kept = NULL;
    size_t slot_len = 0, slot_cap = 0, kept_len = 0, kept_cap = 0;
    for (uint64_t s = 0; s < STEPS_PER_ROUND; s++) {
        void *p = new_block(mix64(base + s));
        if (rng_below(&rng, 8) == 0)
            push(&kept, &kept_len, &kept_cap, RETAIN_STEP, p);
        else
            push(&slots, &slot_len, &slot_cap, ARRAY_STEP, p);
        /* Always draw the same numbers, so the random stream does not depend on what the
         * slots hold (which the other thread's swaps change). */
        uint32_t do_free = rng_below(&rng, 3), k = rng_below(&rng, (uint32_t)slot_len);
        uint32_t do_swap = rng_below(&rng, 4), k2 = rng_below(&rng, (uint32_t)slot_len);
        uint32_t j = rng_below(&rng, TRANSFER);
        if (slot_len == 0)
            continue;
        if (do_free != 0 && slots[k]) {
            sum += free_block(slots[k]);
            slots[k] = NULL;
        }
        if (do_swap == 0)
            slots[k2] = atomic_exchange(&transfer[j], slots[k2]);
    }
    for (size_t i = 0; i < slot_len; i++)
        if (slots[i])
            sum += free_block(slots[i]);
    for (size_t i = 0; i < kept_len; i++)
        sum += free_block(kept[i]);
    free(slots);
    free(kept);
    sums[id] += sum;
    return NULL;
}

int main(int argc, char **argv)
{
    long scale = arg_long(argc, argv, 1, 1);
    long divisor = arg_long(argc, argv, 2, 1);
    uint64_t rounds = 30ull * (uint64_t)scale / (uint64_t)divisor;
    if (rounds == 0)
        rounds = 1;
    uint64_t sum = 0;
    for (round_no = 0; round_no < rounds; round_no++) {
        pthread_t th;
        if (pthread_create(&th, NULL, work, (void *)(intptr_t)1) != 0)
            fail("pthread_create");
        work((void *)(intptr_t)0);
        pthread_join(th, NULL);
        /* half of the transfer slots, alternating between rounds */
        for (int j = (int)(round_no & 1); j < TRANSFER; j += 2) {
            void *p = atomic_exchange(&transfer[j], NULL);
            if (p)
                sum += free_block(p);
        }
    }
    for (int j = 0; j < TRANSFER; j++) {
        void *p = atomic_load(&transfer[j]);
        if (p)
            sum += free_block(p);
    }
    print_ok(sum + sums[0] + sums[1]);
    return 0;
}
