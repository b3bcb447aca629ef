/*
 * serve_state.c — the real serve_backend_t: state/ + aggregates/.
 *
 * One lookup = ingest_key_from_text (the key bytes ingest wrote under) +
 * ONE state_lookup (partition -1: the store finds the partition through its
 * entity index) + agg_entity_decode + agg_entity_query of every feature of
 * the view at the request time. Statuses:
 *
 *   no state row                                   NOT_FOUND
 *   view has a TTL and no event since now - ttl    OUTSIDE_TTL (no value)
 *   window reaches back before the view's coverage PARTIAL_WINDOW (value given)
 *   otherwise                                      PRESENT
 *
 * Coverage: the meta entry "view.<name>.since_ms" (decimal epoch ms), when a
 * writer records it (a new view whose state starts mid-stream, a backfill
 * from a timestamp), says from when the view's state is complete. A sliding
 * window (t - size, t] or the current tumbling bucket that starts before it
 * is partial. Session and lifetime windows are never flagged. The entries are
 * re-read at most once a second (not per lookup: one state read per entity).
 *
 * Entity cache: each thread keeps decoded entities (and "not found"
 * answers) in a direct-mapped cache of SERVE_CACHE_SLOTS slots, bounded to
 * SERVE_CACHE_BYTES, tagged with the store's commit counter read BEFORE the
 * state read. An entry serves only while the counter is unchanged: the store
 * bumps it after a commit is visible (and after its progress is published),
 * so a cached entity is never older than a fresh read would be, and tokens
 * stay truthful. Live (sluice run), every commit empties the caches lazily;
 * on a read-only or idle store they keep hot entities decoded. The query
 * itself always runs at the request time.
 *
 * Reply caches (serve_cache.h): generation() is the commit counter plus
 * the number of coverage reloads that changed an entry (both only grow, so
 * their sum changes when either does); it also triggers the once-a-second
 * coverage reload, so a front end that answers from its cache still sees a
 * new since_ms. Each lookup leaves in its scratch the first request time at
 * which the answer may change with the state unchanged (valid_until):
 *
 *   sliding           next hop boundary; while partial, since + size too
 *   tumbling          next bucket boundary
 *   lifetime          never (decayed_* aggregates: the next ms)
 *   session           the next ms (open/closed depends on t continuously)
 *   TTL, not expired  last event + ttl + 1 (then outside_ttl for good)
 *   not found, outside TTL: never
 *
 * Threads: the backend is shared and read-only except for the coverage
 * cache (relaxed atomics); each thread has its own scratch (key and value
 * buffers, the entity cache, the raw query results).
 */
#include "serve_lookup.h"
#include "serve_merge.h"
#include "entity_key.h"
#include "sl_err.h"
#include "sl_time.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVE_SINCE_REFRESH_MS 1000
#define SERVE_CACHE_SLOTS 65536                /* per thread, power of two (4 MiB of slots) */
#define SERVE_CACHE_BYTES ((size_t)64 << 20)   /* per thread */

typedef struct serve_cache_slot {
    bool used;
    int view;
    uint64_t gen;             /* state_commit_count when read */
    sl_buf_t key;
    agg_entity_t *ent;        /* NULL: the entity had no state */
    size_t mem;
} serve_cache_slot_t;

struct serve_state_backend {
    serve_backend_t be;
    const schema_t *schema;
    state_store_t *st;
    agg_plan_t **plans;
    _Atomic int64_t *since_ms;        /* per view, 0 = complete */
    _Atomic int64_t since_read_ms;    /* when since_ms was last refreshed */
    _Atomic uint64_t since_changes;   /* reloads that changed some since_ms */
    size_t max_features;
};

struct serve_scratch {
    const serve_state_backend_t *sb;
    sl_buf_t key;
    sl_buf_t val;
    sl_buf_t meta;
    agg_value_t *raw;
    serve_cache_slot_t *cache;
    size_t cache_bytes;
    agg_entity_t *spare;      /* a decoded entity too big for the cache */
    int64_t until;            /* valid_until of the last lookup */
};

static serve_scratch_t *serve_state__scratch_new(const serve_backend_t *be)
{
    const serve_state_backend_t *sb = be->ctx;
    serve_scratch_t *sc = calloc(1, sizeof *sc);
    if (!sc) return NULL;
    sc->sb = sb;
    sc->raw = calloc(sb->max_features + 1, sizeof *sc->raw);
    sc->cache = calloc(SERVE_CACHE_SLOTS, sizeof *sc->cache);
    if (!sc->raw || !sc->cache) {
        free(sc->raw);
        free(sc->cache);
        free(sc);
        return NULL;
    }
    return sc;
}

static void serve_state__scratch_free(serve_scratch_t *sc)
{
    if (!sc) return;
    sl_buf_free(&sc->key);
    sl_buf_free(&sc->val);
    sl_buf_free(&sc->meta);
    for (size_t i = 0; i < SERVE_CACHE_SLOTS; i++) {
        sl_buf_free(&sc->cache[i].key);
        agg_entity_free(sc->cache[i].ent);
    }
    free(sc->cache);
    agg_entity_free(sc->spare);
    free(sc->raw);
    free(sc);
}

static void serve_state__refresh_since(serve_state_backend_t *sb, sl_buf_t *meta, int64_t now)
{
    int64_t last = atomic_load_explicit(&sb->since_read_ms, memory_order_relaxed);
    if (now - last < SERVE_SINCE_REFRESH_MS && last != 0) return;
    if (!atomic_compare_exchange_strong(&sb->since_read_ms, &last, now)) return;
    bool changed = false;
    for (size_t v = 0; v < sb->schema->n_views; v++) {
        char name[600];
        snprintf(name, sizeof name, "view.%s.since_ms", sb->schema->views[v].name);
        sl_buf_reset(meta);
        int64_t since = 0;
        if (state_meta_get(sb->st, name, meta) == 0 && meta->len < 32) {
            char tmp[32];
            if (meta->len) memcpy(tmp, meta->data, meta->len);   /* "" has no data */
            tmp[meta->len] = 0;
            since = strtoll(tmp, NULL, 10);
        }
        if (atomic_exchange_explicit(&sb->since_ms[v], since, memory_order_relaxed) != since)
            changed = true;
    }
    /* release: a reader that sees the new count sees the new values */
    if (changed) atomic_fetch_add_explicit(&sb->since_changes, 1, memory_order_release);
}

static uint64_t serve_state__generation(const serve_backend_t *be)
{
    serve_state_backend_t *sb = be->ctx;
    int64_t now = sl_now_ms();
    int64_t last = atomic_load_explicit(&sb->since_read_ms, memory_order_relaxed);
    if (now - last >= SERVE_SINCE_REFRESH_MS || last == 0) {
        sl_buf_t meta = SL_BUF_INIT;
        serve_state__refresh_since(sb, &meta, now);
        sl_buf_free(&meta);
    }
    return atomic_load_explicit(&sb->since_changes, memory_order_acquire) +
           state_commit_count(sb->st);
}

static int64_t serve_state__valid_until(const serve_backend_t *be, serve_scratch_t *sc)
{
    (void)be;
    return sc->until;
}

/* floor(t / d) * d + d: the next multiple of d after t (d > 0). */
static int64_t serve_state__next_boundary(int64_t t, int64_t d)
{
    int64_t q = t / d;
    if (t % d != 0 && t < 0) q--;
    return q * d + d;
}

/* The first request time after now at which a query of a live (not
 * expired) entity of view v may answer differently, state unchanged. */
static int64_t serve_state__until(const schema_view_t *v, const agg_entity_t *ent, int64_t since,
                                  int64_t now)
{
    int64_t until = INT64_MAX;
    for (size_t f = 0; f < v->n_features; f++) {
        const schema_feature_t *ft = &v->features[f];
        int64_t u = INT64_MAX;
        switch (ft->window.kind) {
        case SCHEMA_WINDOW_SLIDING:
            u = serve_state__next_boundary(now, ft->window.hop_ms > 0 ? ft->window.hop_ms
                                                                      : ft->window.size_ms);
            if (since > 0 && now - ft->window.size_ms < since && since + ft->window.size_ms < u)
                u = since + ft->window.size_ms;
            break;
        case SCHEMA_WINDOW_TUMBLING:
            u = serve_state__next_boundary(now, ft->window.size_ms);
            break;
        case SCHEMA_WINDOW_LIFETIME:
            break;
        default:
            u = now + 1;
            break;
        }
        if (ft->agg == SCHEMA_AGG_DECAYED_SUM || ft->agg == SCHEMA_AGG_DECAYED_COUNT) u = now + 1;
        if (u < until) until = u;
    }
    if (v->ttl_ms > 0) {
        int64_t expire = agg_entity_last_event_ms(ent) + v->ttl_ms + 1;
        if (expire < until) until = expire;
    }
    return until > now ? until : now + 1;
}

static bool serve_state__partial(const schema_feature_t *f, int64_t since, int64_t now)
{
    if (since <= 0) return false;
    switch (f->window.kind) {
    case SCHEMA_WINDOW_SLIDING: return now - f->window.size_ms < since;
    case SCHEMA_WINDOW_TUMBLING: {
        int64_t sz = f->window.size_ms;
        int64_t start = now >= 0 ? now - now % sz : now - (sz + now % sz) % sz;
        return start < since;
    }
    default: return false;
    }
}

static uint64_t serve_state__hash(int view, const unsigned char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(unsigned)view;
    for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

/* The decoded state of (view, sc->key) from the thread's cache or one state
 * read; *out NULL when the entity has no state. Returns 0 or a state /
 * decode error (errstr set). *out stays valid until the thread's next
 * lookup. */
static int serve_state__entity(serve_state_backend_t *sb, serve_scratch_t *sc, int view,
                               const agg_entity_t **out, char *errstr, size_t errsize)
{
    const schema_view_t *v = &sb->schema->views[view];
    uint64_t gen = state_commit_count(sb->st);
    serve_cache_slot_t *slot =
        &sc->cache[serve_state__hash(view, sc->key.data, sc->key.len) & (SERVE_CACHE_SLOTS - 1)];
    if (slot->used && slot->gen == gen && slot->view == view && slot->key.len == sc->key.len &&
        memcmp(slot->key.data, sc->key.data, sc->key.len) == 0) {
        *out = slot->ent;
        return 0;
    }
    /* evict whatever the slot held */
    if (slot->used) {
        sc->cache_bytes -= slot->mem;
        agg_entity_free(slot->ent);
        slot->ent = NULL;
        slot->used = false;
    }
    agg_entity_t *ent = NULL;
    if (v->spans_partitions) {
        /* one state per partition holding the entity: read them all, merge */
        int mrc = serve_merge_read(sb->st, sb->plans[view], v->name,
                                   sb->schema->sources[v->source].topic, sc->key.data,
                                   sc->key.len, &sc->val, &ent, errstr, errsize);
        if (mrc) return mrc;
        goto decoded;
    }
    int rc = state_lookup(sb->st, v->name, -1, sc->key.data, sc->key.len, &sc->val);
    if (rc && rc != SL_ENOTFOUND) {
        snprintf(errstr, errsize, "state read failed for view '%s': %s", v->name, sl_strerror(rc));
        return rc;
    }
    if (rc == 0) {
        rc = agg_entity_decode(sb->plans[view], sc->val.data, sc->val.len, &ent);
        if (rc) {
            snprintf(errstr, errsize, "stored state of view '%s' does not decode: %s", v->name,
                     sl_strerror(rc));
            return rc;
        }
    }
decoded:;
    size_t mem = (ent ? agg_entity_mem_size(ent) : 0) + sc->key.len + sizeof *slot;
    if (sc->cache_bytes + mem <= SERVE_CACHE_BYTES) {
        sl_buf_reset(&slot->key);
        if (sl_buf_append(&slot->key, sc->key.data, sc->key.len) == 0) {
            slot->used = true;
            slot->view = view;
            slot->gen = gen;
            slot->ent = ent;
            slot->mem = mem;
            sc->cache_bytes += mem;
            *out = ent;
            return 0;
        }
    }
    /* not cached: park it in the slot-less holder until the next lookup */
    agg_entity_free(sc->spare);
    sc->spare = ent;
    *out = ent;
    return 0;
}

static int serve_state__lookup(const serve_backend_t *be, serve_scratch_t *sc, int view,
                               const serve_key_t *key, int64_t now_ms, serve_value_t *out,
                               char *errstr, size_t errsize)
{
    serve_state_backend_t *sb = be->ctx;
    const schema_t *s = sb->schema;
    const schema_view_t *v = &s->views[view];
    const schema_entity_t *ent = &s->entities[v->entity];
    int rc;

    sl_buf_reset(&sc->key);
    rc = ingest_key_from_text(&sc->key, ent, key->part, key->len, key->n);
    if (rc == SL_EINVAL) {
        snprintf(errstr, errsize, "entity '%s' has %zu key part(s) (%s%s), got %zu", ent->name,
                 ent->n_keys, ent->keys[0], ent->n_keys > 1 ? ", ..." : "", key->n);
        return SL_EINVAL;
    }
    if (rc == SL_ETYPE) {
        snprintf(errstr, errsize, "a key part is not a valid %s", ent->n_keys == 1 ?
                 schema_type_name(ent->key_types[0]) : "value of its declared type");
        return SL_ETYPE;
    }
    if (rc) return rc;

    for (size_t f = 0; f < v->n_features; f++) {
        memset(&out[f], 0, sizeof out[f]);
        out[f].status = SERVE_STATUS_NOT_FOUND;
    }
    const agg_entity_t *ent_state = NULL;
    sc->until = now_ms + 1;
    rc = serve_state__entity(sb, sc, view, &ent_state, errstr, errsize);
    if (rc) return rc;
    sc->until = INT64_MAX;
    if (!ent_state) return 0;                          /* NOT_FOUND */
    if (v->ttl_ms > 0 && agg_entity_is_idle(sb->plans[view], ent_state, now_ms)) {
        int64_t last = agg_entity_last_event_ms(ent_state);
        for (size_t f = 0; f < v->n_features; f++) {
            out[f].status = SERVE_STATUS_OUTSIDE_TTL;
            out[f].val.newest_event_ms = last;
        }
        return 0;
    }
    serve_state__refresh_since(sb, &sc->meta, sl_now_ms());
    int64_t since = atomic_load_explicit(&sb->since_ms[view], memory_order_relaxed);
    sc->until = serve_state__until(v, ent_state, since, now_ms);
    agg_entity_query(sb->plans[view], ent_state, now_ms, sc->raw);
    for (size_t f = 0; f < v->n_features; f++) {
        out[f].val = sc->raw[f];
        out[f].status = serve_state__partial(&v->features[f], since, now_ms)
                            ? SERVE_STATUS_PARTIAL_WINDOW : SERVE_STATUS_PRESENT;
    }
    return 0;
}

static size_t serve_state__progress(const serve_backend_t *be, state_partition_progress_t *out,
                                    size_t max)
{
    const serve_state_backend_t *sb = be->ctx;
    return state_progress(sb->st, out, max);
}

int serve_state_backend_new(const schema_t *schema, state_store_t *st,
                            serve_state_backend_t **out, char *errstr, size_t errsize)
{
    *out = NULL;
    serve_state_backend_t *sb = calloc(1, sizeof *sb);
    if (!sb) return SL_ENOMEM;
    sb->schema = schema;
    sb->st = st;
    sb->plans = calloc(schema->n_views + 1, sizeof *sb->plans);
    sb->since_ms = calloc(schema->n_views + 1, sizeof *sb->since_ms);
    if (!sb->plans || !sb->since_ms) {
        serve_state_backend_free(sb);
        snprintf(errstr, errsize, "out of memory");
        return SL_ENOMEM;
    }
    for (size_t v = 0; v < schema->n_views; v++) {
        int rc = agg_plan_new(schema, (int)v, &sb->plans[v], errstr, errsize);
        if (rc) {
            serve_state_backend_free(sb);
            return rc;
        }
        if (schema->views[v].n_features > sb->max_features) sb->max_features = schema->views[v].n_features;
    }
    sb->be.schema = schema;
    sb->be.ctx = sb;
    sb->be.scratch_new = serve_state__scratch_new;
    sb->be.scratch_free = serve_state__scratch_free;
    sb->be.lookup = serve_state__lookup;
    sb->be.progress = serve_state__progress;
    sb->be.generation = serve_state__generation;
    sb->be.valid_until = serve_state__valid_until;
    *out = sb;
    return 0;
}

void serve_state_backend_free(serve_state_backend_t *sb)
{
    if (!sb) return;
    if (sb->plans)
        for (size_t v = 0; v < sb->schema->n_views; v++) agg_plan_free(sb->plans[v]);
    free(sb->plans);
    free((void *)sb->since_ms);
    free(sb);
}

const serve_backend_t *serve_state_backend(const serve_state_backend_t *sb) { return &sb->be; }
