/* minimize: the allocation pattern of a two-level logic minimizer, in a small program.
 *
 * A cube is a product term over V variables, two bits a variable (01: the variable is 0,
 * 10: it is 1, 11: either, 00: no value, an empty cube), V = 32 per 64-bit word, 1..4
 * words; each cube is its own malloc'ed list node. A cover is a linked list of cubes.
 * Each problem (V varies from problem to problem) repeats: make two random covers of 16
 * cubes, intersect them (every pair; the non-empty products become new cubes), drop the
 * cubes contained in others, merge pairs that differ in one variable only (x & y + x & !y
 * = x) until none is left, add the result to the problem's running cover and, when that
 * grows past its cap, drop contained cubes and then the oldest ones. The final cover of
 * each problem is kept to the end, so the live heap grows slowly to a few hundred KB of
 * small blocks of four sizes, while many more short-lived cubes come and go. Peak RSS
 * stays under 3 MiB: this is a small program, and the peak RSS column is the point.
 *
 * usage: minimize [scale] [divisor]   (work = scale / divisor)
 */
#include "common.h"

#define COVER_CUBES 16  /* cubes of each random cover */
#define RUNNING_CAP 400 /* cubes of a problem's running cover before it is pruned */
#define KEEP_CUBES 120  /* cubes of each problem's final cover that stay live to the end */
#define ITERS 60        /* intersections per problem */
#define EVEN 0x5555555555555555ull

struct cube {
    struct cube *next;
    uint64_t w[];
};

struct cover {
    struct cube *head, *tail;
    size_t count;
};

static int nw; /* words per cube in the current problem */

static struct cube *new_cube(void)
{
    struct cube *c = xmalloc(sizeof *c + (size_t)nw * 8);
    c->next = NULL;
    return c;
}

static void append(struct cover *f, struct cube *c)
{
    c->next = NULL;
    if (f->tail)
        f->tail->next = c;
    else
        f->head = c;
    f->tail = c;
    f->count++;
}

static void free_cover(struct cover *f)
{
    struct cube *c = f->head;
    while (c) {
        struct cube *next = c->next;
        free(c);
        c = next;
    }
    f->head = f->tail = NULL;
    f->count = 0;
}

static struct cover random_cover(uint64_t *rng)
{
    struct cover f = {0};
    for (int k = 0; k < COVER_CUBES; k++) {
        struct cube *c = new_cube();
        for (int i = 0; i < nw; i++) {
            uint64_t w = ~0ull;
            for (int v = 0; v < 32; v++) {
                uint32_t r = rng_below(rng, 16);
                if (r < 3) /* a literal; otherwise "don't care" */
                    w &= ~((uint64_t)(r == 0 ? 1 : 2) << (2 * v));
            }
            c->w[i] = w;
        }
        append(&f, c);
    }
    return f;
}

static int is_empty(const uint64_t *w)
{
    for (int i = 0; i < nw; i++)
        if (((w[i] | (w[i] >> 1)) & EVEN) != EVEN)
            return 1;
    return 0;
}

static struct cover intersect(const struct cover *a, const struct cover *b)
{
    struct cover f = {0};
    uint64_t tmp[4];
    for (const struct cube *x = a->head; x; x = x->next)
        for (const struct cube *y = b->head; y; y = y->next) {
            for (int i = 0; i < nw; i++)
                tmp[i] = x->w[i] & y->w[i];
            if (is_empty(tmp))
                continue;
            struct cube *c = new_cube();
            memcpy(c->w, tmp, (size_t)nw * 8);
            append(&f, c);
        }
    return f;
}

static int contained(const struct cube *x, const struct cube *y)
{
    for (int i = 0; i < nw; i++)
        if (x->w[i] & ~y->w[i])
            return 0;
    return 1;
}

/* The cover as an array of its cubes (a temporary, malloc'ed as a program would). */
static struct cube **to_array(const struct cover *f)
{
    struct cube **v = xmalloc((f->count + 1) * sizeof *v);
    size_t n = 0;
    for (struct cube *c = f->head; c; c = c->next)
        v[n++] = c;
    return v;
}

/* Single-cube containment: drop every cube contained in another (of equal cubes, the
 * later ones). Keeps the order of the survivors. */
static void drop_contained(struct cover *f)
{
    size_t n = f->count;
    struct cube **v = to_array(f);
    unsigned char *gone = calloc(n + 1, 1);
    if (!gone)
        fail("calloc");
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n && !gone[i]; j++)
            if (j != i && !gone[j] && contained(v[i], v[j]) && (j < i || !contained(v[j], v[i])))
                gone[i] = 1;
    f->head = f->tail = NULL;
    f->count = 0;
    for (size_t i = 0; i < n; i++) {
        if (gone[i])
            free(v[i]);
        else
            append(f, v[i]);
    }
    free(gone);
    free(v);
}

/* x and y differ in exactly one variable, where one has 01 and the other 10. */
static int adjacent(const struct cube *x, const struct cube *y)
{
    int seen = 0;
    for (int i = 0; i < nw; i++) {
        uint64_t d = x->w[i] ^ y->w[i];
        if (!d)
            continue;
        if (seen || __builtin_popcountll(d) != 2 || ((d >> 1) & d & EVEN) == 0)
            return 0;
        seen = 1;
    }
    return seen;
}

/* Merge adjacent pairs into their union until no pair is left (or 8 passes). */
static void merge(struct cover *f)
{
    for (int pass = 0; pass < 8; pass++) {
        size_t n = f->count;
        struct cube **v = to_array(f);
        unsigned char *used = calloc(n + 1, 1);
        if (!used)
            fail("calloc");
        struct cover out = {0};
        int merged = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n && !used[i]; j++)
                if (!used[j] && adjacent(v[i], v[j])) {
                    struct cube *c = new_cube();
                    for (int k = 0; k < nw; k++)
                        c->w[k] = v[i]->w[k] | v[j]->w[k];
                    append(&out, c);
                    used[i] = used[j] = 1;
                    merged++;
                }
        for (size_t i = 0; i < n; i++) {
            if (used[i])
                free(v[i]);
            else
                append(&out, v[i]);
        }
        free(used);
        free(v);
        *f = out;
        if (!merged)
            break;
    }
}

static uint64_t hash_cover(const struct cover *f)
{
    uint64_t h = f->count;
    for (const struct cube *c = f->head; c; c = c->next)
        for (int i = 0; i < nw; i++)
            h = mix64(h ^ c->w[i]);
    return h;
}

int main(int argc, char **argv)
{
    long scale = arg_long(argc, argv, 1, 1);
    long divisor = arg_long(argc, argv, 2, 1);
    long problems = 120 * scale / divisor;
    if (problems < 1)
        problems = 1;
    struct cover *kept = calloc((size_t)problems, sizeof *kept);
    int *kept_nw = calloc((size_t)problems, sizeof *kept_nw);
    if (!kept || !kept_nw)
        fail("calloc");
    uint64_t rng = 0x3141592653ull, sum = 0;

    for (long p = 0; p < problems; p++) {
        nw = 1 + (int)(p % 4);
        struct cover running = {0};
        for (int it = 0; it < ITERS; it++) {
            struct cover a = random_cover(&rng), b = random_cover(&rng);
            struct cover prod = intersect(&a, &b);
            free_cover(&a);
            free_cover(&b);
            drop_contained(&prod);
            merge(&prod);
            if (prod.head) {
                if (running.tail)
                    running.tail->next = prod.head;
                else
                    running.head = prod.head;
                running.tail = prod.tail;
                running.count += prod.count;
            }
            if (running.count > RUNNING_CAP) {
                drop_contained(&running);
                while (running.count > RUNNING_CAP / 2) {
                    struct cube *c = running.head;
                    running.head = c->next;
                    running.count--;
                    free(c);
                }
                if (!running.head)
                    running.tail = NULL;
            }
            sum += hash_cover(&running);
        }
        drop_contained(&running);
        merge(&running);
        sum = mix64(sum ^ hash_cover(&running));
        while (running.count > KEEP_CUBES) {
            struct cube *c = running.head;
            running.head = c->next;
            running.count--;
            free(c);
        }
        kept[p] = running;
        kept_nw[p] = nw;
    }
    for (long p = 0; p < problems; p++) {
        nw = kept_nw[p];
        sum = mix64(sum ^ hash_cover(&kept[p]));
        free_cover(&kept[p]);
    }
    free(kept_nw);
    free(kept);
    print_ok(sum);
    return 0;
}
