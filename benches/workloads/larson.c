/* larson: a server simulation in the manner of Larson and Krishnan's benchmark.
 *
 * THREADS lanes run at once. Each lane owns an array of 4000 blocks of 8..1000 bytes,
 * first filled by the main thread. A lane's thread replaces random blocks of the array
 * (free the old one, allocate and mark a new one) 5000 times, then starts a new thread,
 * hands it the array and exits; the new thread frees and replaces the blocks its
 * predecessor made, and so on: like a server whose connections are served by short-lived
 * threads over long-lived data. The total number of replacements is fixed and split among
 * the lanes, so the work does not depend on THREADS; each lane's random stream goes on
 * from thread to thread, so the result is deterministic.
 *
 * Mode "sized" frees with C23 free_sized(p, n) where the allocator has it. glibc 2.36
 * does not, so the function is declared here and looked up with dlsym(RTLD_DEFAULT): a
 * preloaded allocator that exports it is found, and without it the program falls back
 * to free(). "# free_sized=1" says the sized call was used.
 *
 * usage: larson free|sized THREADS [scale] [divisor]   (work = scale / divisor)
 */
#include "common.h"
#include <dlfcn.h>
#include <pthread.h>

#define BLOCKS 4000
#define ROUND 5000 /* replacements by one thread before it hands the array on */

void free_sized(void *ptr, size_t size);

struct lane {
    int id;
    uint64_t rounds_left;
    uint64_t rng, made, sum;
    uint32_t size[BLOCKS];
    void *blk[BLOCKS];
};

static void (*release)(void *, size_t);
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static int lanes_done;
static pthread_attr_t detached;

static void free_unsized(void *ptr, size_t size)
{
    (void)size;
    free(ptr);
}

static void put_block(struct lane *l, unsigned k)
{
    size_t n = rng_range(&l->rng, 8, 1000);
    void *p = xmalloc(n);
    mark(p, n, mix64(((uint64_t)l->id << 48) ^ l->made++));
    l->blk[k] = p;
    l->size[k] = (uint32_t)n;
}

static void *lane_thread(void *arg)
{
    struct lane *l = arg;
    for (int r = 0; r < ROUND; r++) {
        unsigned k = rng_below(&l->rng, BLOCKS);
        l->sum += unmark(l->blk[k], l->size[k]);
        release(l->blk[k], l->size[k]);
        put_block(l, k);
    }
    if (--l->rounds_left > 0) {
        pthread_t next;
        if (pthread_create(&next, &detached, lane_thread, l) != 0)
            fail("pthread_create");
        return NULL;
    }
    pthread_mutex_lock(&done_lock);
    lanes_done++;
    pthread_cond_signal(&done_cond);
    pthread_mutex_unlock(&done_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    int sized = argc > 1 && strcmp(argv[1], "sized") == 0;
    if (argc < 2 || (!sized && strcmp(argv[1], "free") != 0)) {
        fprintf(stderr, "usage: larson free|sized THREADS [scale] [divisor]\n");
        return 2;
    }
    int nthreads = (int)arg_long(argc, argv, 2, 1);
    long scale = arg_long(argc, argv, 3, 1);
    long divisor = arg_long(argc, argv, 4, 1);
    uint64_t total_rounds = 3000ull * (uint64_t)scale / (uint64_t)divisor;
    uint64_t rounds_per_lane = total_rounds / (uint64_t)nthreads;
    if (rounds_per_lane == 0)
        rounds_per_lane = 1;

    release = free_unsized;
    int found = 0;
    if (sized) {
        __typeof__(free_sized) *fn = (__typeof__(free_sized) *)dlsym(RTLD_DEFAULT, "free_sized");
        if (fn) {
            release = fn;
            found = 1;
        }
    }
    pthread_attr_init(&detached);
    pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);

    struct lane *lanes = calloc((size_t)nthreads, sizeof *lanes);
    if (!lanes)
        fail("calloc");
    for (int i = 0; i < nthreads; i++) {
        struct lane *l = &lanes[i];
        l->id = i;
        l->rounds_left = rounds_per_lane;
        l->rng = mix64(0x1A250u + (uint64_t)i);
        for (unsigned k = 0; k < BLOCKS; k++)
            put_block(l, k);
    }
    for (int i = 0; i < nthreads; i++) {
        pthread_t t;
        if (pthread_create(&t, &detached, lane_thread, &lanes[i]) != 0)
            fail("pthread_create");
    }
    pthread_mutex_lock(&done_lock);
    while (lanes_done < nthreads)
        pthread_cond_wait(&done_cond, &done_lock);
    pthread_mutex_unlock(&done_lock);

    uint64_t sum = 0;
    for (int i = 0; i < nthreads; i++) {
        struct lane *l = &lanes[i];
        for (unsigned k = 0; k < BLOCKS; k++) {
            sum += unmark(l->blk[k], l->size[k]);
            release(l->blk[k], l->size[k]);
        }
        sum += l->sum;
    }
    free(lanes);
    if (sized)
        printf("# free_sized=%d\n", found);
    print_ok(sum);
    return 0;
}
