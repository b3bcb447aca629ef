/*
 * serve_swap.c — the swappable serve_backend_t (contract in serve_swap.h).
 *
 * Generations. Each generation wraps one inner backend in a serve_backend_t
 * of its own (schema = the inner schema, lookup = swap__lookup) and counts
 * the requests that pinned it. `cur` points at the serving generation.
 *
 * Pin (reader):                         Begin (writer):
 *   g = cur                               held = 1
 *   if held: wait, retry                  wait until cur->inflight == 0
 *   g->inflight++                         ... caller switches the store ...
 *   if held or cur != g: undo, retry    Commit: cur = g'; held = 0
 *
 * All four are sequentially consistent, so a reader that got past its
 * re-check was counted before the writer read the counter (the writer then
 * waits for it), and a reader that arrives later sees `held` and waits: no
 * request runs on the old generation once the store switched, none on the
 * new one before. Waiting readers sleep 50 us per round (the hold lasts one
 * synced write).
 *
 * The outer backend has no generation/valid_until: front ends read them
 * from the pinned generation, which forwards them to its inner backend.
 *
 * Scratches. The servers create one scratch per thread from the OUTER
 * backend; it serves every generation: it holds the inner scratch of the
 * generation it last served, and builds a new one (freeing the old through
 * the generation that made it; generations live until serve_swap_free) the
 * first time the thread serves a newer generation.
 */
#include "serve_swap.h"
#include "sl_err.h"
#include "sl_time.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct swap_gen swap_gen_t;
struct swap_gen {
    serve_backend_t be;                 /* what a pin returns; be.ctx = this */
    const serve_backend_t *inner;
    serve_swap_t *sw;
    _Atomic long inflight;
    char **refused;                     /* per view: why lookups are refused, or NULL */
    size_t n_views;
    swap_gen_t *older;
};

struct serve_swap {
    serve_backend_t be;                 /* the outer backend the servers hold */
    swap_gen_t *_Atomic cur;
    atomic_bool held;
    _Atomic uint64_t requests;
    int64_t held_since_ns;
    swap_gen_t *gens;                   /* newest first */
};

typedef struct swap_scratch {
    swap_gen_t *gen;                    /* generation `inner` was made by */
    serve_scratch_t *inner;
} swap_scratch_t;

/* ---- generation backends ------------------------------------------------ */

static serve_scratch_t *swap__scratch_new(const serve_backend_t *be)
{
    (void)be;
    return (serve_scratch_t *)calloc(1, sizeof(swap_scratch_t));
}

static void swap__scratch_free(serve_scratch_t *sc)
{
    swap_scratch_t *ss = (swap_scratch_t *)sc;
    if (!ss) return;
    if (ss->inner) ss->gen->inner->scratch_free(ss->inner);
    free(ss);
}

static int swap__lookup(const serve_backend_t *be, serve_scratch_t *sc, int view,
                        const serve_key_t *key, int64_t now_ms, serve_value_t *out,
                        char *errstr, size_t errsize)
{
    swap_gen_t *g = be->ctx;
    swap_scratch_t *ss = (swap_scratch_t *)sc;
    if (g == NULL) {
        /* The outer backend used without a pin: serve the current one. */
        const serve_backend_t *p = serve_backend_pin(be);
        int rc = p->lookup(p, sc, view, key, now_ms, out, errstr, errsize);
        serve_backend_unpin(be, p);
        return rc;
    }
    if ((size_t)view < g->n_views && g->refused[view]) {
        snprintf(errstr, errsize, "%s", g->refused[view]);
        return SL_EBUSY;
    }
    if (ss->gen != g) {
        serve_scratch_t *fresh = g->inner->scratch_new(g->inner);
        if (!fresh) {
            snprintf(errstr, errsize, "out of memory");
            return SL_ENOMEM;
        }
        if (ss->inner) ss->gen->inner->scratch_free(ss->inner);
        ss->inner = fresh;
        ss->gen = g;
    }
    return g->inner->lookup(g->inner, ss->inner, view, key, now_ms, out, errstr, errsize);
}

static size_t swap__progress(const serve_backend_t *be, state_partition_progress_t *out, size_t max)
{
    const serve_swap_t *sw = be->ctx ? ((const swap_gen_t *)be->ctx)->sw : (const serve_swap_t *)be;
    const swap_gen_t *g = atomic_load(&((serve_swap_t *)sw)->cur);
    return g->inner->progress ? g->inner->progress(g->inner, out, max) : 0;
}

/* Reply caches (serve_cache.h): forwarded, so that the front ends keep
 * caching behind the wrapper. Their entries are owned by the pinned
 * generation's backend, so a swap never serves an older generation's bytes
 * (generations are never freed before the servers stop: no pointer reuse). */
static uint64_t swap__generation(const serve_backend_t *be)
{
    const swap_gen_t *g = be->ctx;
    return g->inner->generation(g->inner);
}

static int64_t swap__valid_until(const serve_backend_t *be, serve_scratch_t *sc)
{
    const swap_gen_t *g = be->ctx;
    const swap_scratch_t *ss = (const swap_scratch_t *)sc;
    if (!g || ss->gen != g || !ss->inner) return INT64_MIN;   /* not this generation's lookup */
    return g->inner->valid_until(g->inner, ss->inner);
}

/* ---- pinning --------------------------------------------------------------- */

static const serve_backend_t *swap__pin(const serve_backend_t *be)
{
    serve_swap_t *sw = (serve_swap_t *)be;
    for (;;) {
        swap_gen_t *g = atomic_load(&sw->cur);
        if (!atomic_load(&sw->held)) {
            atomic_fetch_add(&g->inflight, 1);
            if (!atomic_load(&sw->held) && atomic_load(&sw->cur) == g) {
                atomic_fetch_add_explicit(&sw->requests, 1, memory_order_relaxed);
                return &g->be;
            }
            atomic_fetch_sub(&g->inflight, 1);
        }
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
}

static void swap__unpin(const serve_backend_t *be, const serve_backend_t *pinned)
{
    (void)be;
    if (!pinned || !pinned->ctx) return;
    swap_gen_t *g = pinned->ctx;
    atomic_fetch_sub(&g->inflight, 1);
}

/* The entries a generation's backend and the outer one share: lookups go
 * through swap__lookup, which tells them apart by ctx (NULL: the outer). */
static void swap__backend_init(serve_backend_t *be, const serve_backend_t *inner, void *ctx)
{
    be->schema = inner->schema;
    be->ctx = ctx;
    be->scratch_new = swap__scratch_new;
    be->scratch_free = swap__scratch_free;
    be->lookup = swap__lookup;
    be->progress = inner->progress ? swap__progress : NULL;
}

static swap_gen_t *swap__gen_new(serve_swap_t *sw, const serve_backend_t *inner)
{
    swap_gen_t *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->n_views = inner->schema->n_views;
    g->refused = calloc(g->n_views + 1, sizeof *g->refused);
    if (!g->refused) {
        free(g);
        return NULL;
    }
    g->inner = inner;
    g->sw = sw;
    swap__backend_init(&g->be, inner, g);
    if (inner->generation && inner->valid_until) {
        g->be.generation = swap__generation;
        g->be.valid_until = swap__valid_until;
    }
    g->older = sw->gens;
    sw->gens = g;
    return g;
}

/* ---- public ---------------------------------------------------------------- */

int serve_swap_new(const serve_backend_t *inner, serve_swap_t **out)
{
    *out = NULL;
    serve_swap_t *sw = calloc(1, sizeof *sw);
    if (!sw) return SL_ENOMEM;
    swap_gen_t *g = swap__gen_new(sw, inner);
    if (!g) {
        free(sw);
        return SL_ENOMEM;
    }
    atomic_store(&sw->cur, g);
    /* The outer backend: be.ctx NULL tells it apart from a generation's.
     * Its schema is the first generation's; servers read schemas only
     * through a pin. */
    swap__backend_init(&sw->be, inner, NULL);
    sw->be.pin = swap__pin;
    sw->be.unpin = swap__unpin;
    *out = sw;
    return 0;
}

void serve_swap_free(serve_swap_t *sw)
{
    if (!sw) return;
    for (swap_gen_t *g = sw->gens, *next; g; g = next) {
        next = g->older;
        for (size_t v = 0; v < g->n_views; v++) free(g->refused[v]);
        free(g->refused);
        free(g);
    }
    free(sw);
}

const serve_backend_t *serve_swap_backend(serve_swap_t *sw) { return &sw->be; }

int serve_swap_refuse_view(serve_swap_t *sw, int view, const char *why)
{
    swap_gen_t *g = atomic_load(&sw->cur);
    if (view < 0 || (size_t)view >= g->n_views) return SL_EINVAL;
    char *copy = why ? strdup(why) : NULL;
    if (why && !copy) return SL_ENOMEM;
    /* Swapped under a hold so that no lookup reads the string being freed. */
    int rc = serve_swap_begin(sw, 10000);
    if (rc) {
        free(copy);
        return rc;
    }
    free(g->refused[view]);
    g->refused[view] = copy;
    atomic_store(&sw->held, false);
    return 0;
}

int serve_swap_begin(serve_swap_t *sw, int64_t timeout_ms)
{
    int64_t t0 = sl_mono_ns();
    atomic_store(&sw->held, true);
    swap_gen_t *g = atomic_load(&sw->cur);
    while (atomic_load(&g->inflight) > 0) {
        if (sl_mono_ns() - t0 > timeout_ms * 1000000LL) {
            atomic_store(&sw->held, false);
            return SL_ETIMEOUT;
        }
        struct timespec ts = { 0, 20000 };
        nanosleep(&ts, NULL);
    }
    sw->held_since_ns = t0;
    return 0;
}

int serve_swap_commit(serve_swap_t *sw, const serve_backend_t *next, double *pause_ms)
{
    swap_gen_t *g = swap__gen_new(sw, next);
    if (g) atomic_store(&sw->cur, g);
    atomic_store(&sw->held, false);
    if (pause_ms) *pause_ms = (double)(sl_mono_ns() - sw->held_since_ns) / 1e6;
    return g ? 0 : SL_ENOMEM;
}

void serve_swap_abort(serve_swap_t *sw) { atomic_store(&sw->held, false); }

uint64_t serve_swap_requests(const serve_swap_t *sw)
{
    return atomic_load_explicit(&((serve_swap_t *)sw)->requests, memory_order_relaxed);
}
