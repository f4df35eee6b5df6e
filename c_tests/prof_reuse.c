/*
 * Sampled big blocks reuse memory as unsampled ones do.
 *
 * A worker runs with OXMALLOC_PROF=1 and a sampling interval of 1 byte, so that
 * every block is sampled, and replaces, one at a time, blocks of 1.5 to 24 MiB
 * (4 live; a random octave, filled), then does the same with medium blocks
 * (64 KiB to 1 MiB). A freed
 * block's memory must serve the next one, resident, as the huge-block cache and
 * the medium blocks do without profiling: the loop may fault in at most a tenth
 * of the OS pages it fills. (A big sampled block with a fresh mapping of its
 * own each time faults in every page it fills.) The worker's exit profile must
 * show that the blocks were sampled.
 */
#include "prof.h"
#include <sys/resource.h>

#define ROUNDS 200
#define LIVE 4

static long minor_faults(void)
{
    struct rusage u;
    CHECK(getrusage(RUSAGE_SELF, &u) == 0, "getrusage");
    return u.ru_minflt;
}

/* ROUNDS steps of: free the block of a random one of LIVE slots, allocate one
 * of MIN << 0 .. MIN << OCTAVES bytes (a random octave, uniform within it) in
 * its place and fill it. Says the pages filled and the faults taken under NAME.
 * Returns the bytes allocated. */
static double loop(const char *name, size_t min, int octaves, uint64_t seed)
{
    size_t page = ox_page_size();
    double pages = 0, bytes = 0;
    unsigned char *slot[LIVE] = {0};
    long before = minor_faults();
    for (int i = 0; i < ROUNDS; i++) {
        int k = (int)(ox_rand(&seed) % LIVE);
        free(slot[k]);
        size_t low = min << (ox_rand(&seed) % (uint64_t)octaves);
        size_t n = (low + (size_t)(ox_rand(&seed) % low)) & ~(size_t)15;
        slot[k] = malloc(ox_opaque(n));
        CHECK(slot[k] != NULL, "malloc(%zu)", n);
        memset(slot[k], i, n);
        pages += (double)(n / page);
        bytes += (double)n;
    }
    for (int k = 0; k < LIVE; k++)
        free(slot[k]);
    long faults = minor_faults() - before;
    char key[64];
    snprintf(key, sizeof key, "%s_FAULTS", name);
    ox_child_say(key, "%ld", faults);
    snprintf(key, sizeof key, "%s_PAGES", name);
    ox_child_say(key, "%.0f", pages);
    return bytes;
}

static void worker(void)
{
    double bytes = loop("BIG", (size_t)3 << 19, 4, 0x9e3779b97f4a7c15u);
    bytes += loop("MEDIUM", (size_t)64 << 10, 4, 0x2545f4914f6cdd1du);
    ox_child_say("BYTES", "%.0f", bytes);
    ox_child_say("PID", "%ld", (long)getpid());
}

static void check_reused(const struct ox_child *r, const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "%s_FAULTS", name);
    double faults = ox_prof_said(r, key);
    snprintf(key, sizeof key, "%s_PAGES", name);
    double pages = ox_prof_said(r, key);
    NOTE("%s blocks: %.0f page faults for %.0f OS pages filled", name, faults, pages);
    CHECK(faults < pages / 10, "%s sampled blocks: %.0f page faults for %.0f OS pages filled "
          "(their memory is not reused)", name, faults, pages);
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "worker") == 0) {
        worker();
        return 0;
    }
    ox_require_active();
    char dir[64];
    struct ox_child r;
    ox_prof_run_profiled("reuse", "1", dir, sizeof dir, &r);
    check_reused(&r, "BIG");
    check_reused(&r, "MEDIUM");
    static struct ox_prof_file f;
    ox_prof_read_or_fail(dir, (long)ox_prof_said(&r, "PID"), "exit", &f);
    double bytes = ox_prof_said(&r, "BYTES");
    CHECK((double)f.total_alloc >= 0.99 * bytes,
          "the profile counts %llu bytes allocated, fewer than the %.0f of the loops",
          (unsigned long long)f.total_alloc, bytes);
    ox_prof_free(&f);
    ox_prof_dir_remove(dir);
    return 0;
}
