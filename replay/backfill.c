/*
 * backfill.c — rebuild a view into a new state version, then cut over
 * (contract in backfill.h; operator's view in docs/backfill.md).
 *
 * Sharing the state directory. The directory is locked by one process, so
 * the backfill runs INSIDE the process that owns it: `sluice backfill` opens
 * the store itself (the normal worker is stopped first) and, with `live`,
 * runs the live ingest worker for every OTHER view in a thread beside the
 * replay, on the same store_t (state commits are serialised by the store).
 * The view being rebuilt is left out of the live worker (a sub-schema), so
 * its current version stays frozen and keeps serving readers of the store
 * until the switch; its new version V' is written only by the replay.
 *
 * The live code path. Every message goes through exactly what live ingest
 * does: the source's decoder (ingest_decode), the partition watermark and
 * lateness rule (watermark.h, restored from the stored progress on resume),
 * the view's filter, the entity key (entity_key.h), agg_entity_update with
 * the partition's accept_from, agg_entity_expire before each commit, and the
 * same encoding. States go to (view, V', partition, key).
 *
 * Exactly once. Every commit is ONE state batch holding the dirty states of
 * V' and, per partition that moved, the backfill's next offset and watermark
 * (pseudo-view BACKFILL_PROGRESS_VIEW, key = view name). A crash at any
 * instant leaves V' = exactly the messages below the stored offsets; a rerun
 * reads them back and continues.
 *
 * How far to read. If another view of the schema reads the same topic, the
 * topic's stored progress (the live worker's committed next offsets, Y_p) is
 * the bound: the replay never reads past Y_p, so V' never gets ahead of the
 * store. Otherwise the bound is the topic's high watermark (followed).
 *
 * Cut-over (crash points C1..C3 are where the tests kill -9):
 *
 *   REPLAY --lag <= catchup_lag--> DRAIN: stop the live worker (its final
 *     |                            commit fixes Y_p), read up to exactly Y_p
 *     |                            (or up to the current high watermarks)
 *     v                                     |
 *   (kill -9: rerun resumes REPLAY)         v
 *                          final batch: V' states + progress (+ the topic's
 *                          progress if no other view reads it)   [C1]
 *                                           |
 *                          meta backfill.<view> := phase=switch  [C2]
 *                                           |
 *                          state_view_version_set(view, V')      <- atomic:
 *                          one synced RocksDB write; a lookup    [C3]
 *                          resolves the version once: old or new
 *                                           |
 *                          fingerprint := the new definition's
 *                          drop version V'-1; clear progress and meta
 *                                           v
 *                                         DONE  (restart the worker)
 *
 * A rerun in phase=switch skips the replay and redoes the (idempotent) steps
 * after C2 without starting the live worker, so nothing can advance the
 * topic between the final batch and the switch.
 *
 * Commits are pipelined as in live ingest, with the same committer
 * (ingest/committer.h): the replay thread encodes the dirty states and the
 * positions into a batch (a consistent cut), hands it to the committer
 * thread that writes it, and replays on; the next commit first waits for
 * that write. Entities are evicted only once the batch holding their state is
 * durable, so a state read back from the store is never older than one in
 * flight. A failed write stops the backfill: it is sticky (commit_failed),
 * nothing commits after it, and a rerun resumes from the last durable batch.
 *
 * Threads: the caller's thread replays; the committer thread writes its
 * batches; an optional thread runs the live worker until DRAIN.
 */
#include "backfill.h"

#include "cache.h"
#include "committer.h"
#include "decode.h"
#include "entity_key.h"
#include "ingest.h"
#include "replay.h"
#include "watermark.h"

#include "agg.h"
#include "sl_err.h"
#include "sl_log.h"
#include "sl_time.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROGRESS_FMT 1

static atomic_bool stop_flag;
static ingest_worker_t *volatile live_worker;

void backfill_stop(void)
{
    atomic_store(&stop_flag, true);
    ingest_worker_t *w = live_worker;
    if (w) ingest_worker_stop(w);
}

static void seterr(char *errstr, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *errstr, size_t errsize, const char *fmt, ...)
{
    if (!errstr || !errsize) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errsize, fmt, ap);
    va_end(ap);
}

/* Test hook: SLUICE_TEST_BACKFILL_DELAY_US=N sleeps N us per replayed
 * message, so that tests can act while a small backfill is still running. */
static int64_t test_delay_us(void)
{
    const char *s = getenv("SLUICE_TEST_BACKFILL_DELAY_US");
    return s ? strtoll(s, NULL, 10) : 0;
}

/* Test hook: SLUICE_TEST_CRASH=<point> makes the process kill itself with
 * SIGKILL at that point of the cut-over (C1, C2, C3), as a crash would. */
static void crash_point(const char *name)
{
    const char *want = getenv("SLUICE_TEST_CRASH");
    if (want && strcmp(want, name) == 0) {
        sl_warn("backfill", "SLUICE_TEST_CRASH=%s: killing myself", name);
        kill(getpid(), SIGKILL);
    }
}

/* ---- meta records --------------------------------------------------------- */

typedef struct bf_meta {
    bool present;
    uint32_t version;
    char fingerprint[32];
    char phase[16];              /* "replay" | "switch" */
    int64_t from_ms;
} bf_meta_t;

static int meta_read(state_store_t *st, const char *view, bf_meta_t *m)
{
    char name[600];
    sl_buf_t b = SL_BUF_INIT;
    memset(m, 0, sizeof *m);
    snprintf(name, sizeof name, "backfill.%s", view);
    int rc = state_meta_get(st, name, &b);
    if (rc == SL_ENOTFOUND || (rc == 0 && b.len == 0)) { sl_buf_free(&b); return 0; }
    if (rc) { sl_buf_free(&b); return rc; }
    char text[256];
    snprintf(text, sizeof text, "%.*s", (int)b.len, (const char *)b.data);
    sl_buf_free(&b);
    unsigned v;
    long long from;
    if (sscanf(text, "version=%u fingerprint=%31s phase=%15s from=%lld", &v, m->fingerprint, m->phase, &from) != 4)
        return SL_ECORRUPT;
    m->version = v;
    m->from_ms = from;
    m->present = true;
    return 0;
}

static int meta_write(state_store_t *st, const char *view, const bf_meta_t *m)
{
    char name[600], text[256];
    snprintf(name, sizeof name, "backfill.%s", view);
    int n = m->present ? snprintf(text, sizeof text, "version=%u fingerprint=%s phase=%s from=%lld",
                                  m->version, m->fingerprint, m->phase, (long long)m->from_ms)
                       : 0;
    return state_meta_put(st, name, text, (size_t)n);
}

/* Coverage of the view's state: complete (from earliest: "0", which the
 * readers take as complete; an empty value would do too, but "0" reads the
 * same everywhere) or from from_ms. */
static int since_put(state_store_t *st, const char *view, int64_t from_ms)
{
    char name[600], text[32];
    snprintf(name, sizeof name, "view.%s.since_ms", view);
    int n = snprintf(text, sizeof text, "%lld", from_ms == REPLAY_FROM_EARLIEST ? 0LL : (long long)from_ms);
    return state_meta_put(st, name, text, (size_t)n);
}

static int progress_encode(sl_buf_t *b, uint32_t version, int64_t next, int64_t wm)
{
    unsigned char rec[21];
    rec[0] = PROGRESS_FMT;
    rec[1] = (unsigned char)(version >> 24); rec[2] = (unsigned char)(version >> 16);
    rec[3] = (unsigned char)(version >> 8);  rec[4] = (unsigned char)version;
    sl_store_u64be(rec + 5, (uint64_t)next);
    sl_store_u64be(rec + 13, (uint64_t)wm);
    sl_buf_reset(b);
    return sl_buf_append(b, rec, sizeof rec);
}

static int progress_load(state_store_t *st, const char *view, int32_t partition, uint32_t version,
                         int64_t *next, int64_t *wm)
{
    sl_buf_t b = SL_BUF_INIT;
    int rc = state_lookup(st, BACKFILL_PROGRESS_VIEW, partition, view, strlen(view), &b);
    if (rc == 0) {
        if (b.len != 21 || b.data[0] != PROGRESS_FMT) rc = SL_ECORRUPT;
        else {
            uint32_t v = (uint32_t)b.data[1] << 24 | (uint32_t)b.data[2] << 16 |
                         (uint32_t)b.data[3] << 8 | b.data[4];
            if (v != version) rc = SL_ENOTFOUND;     /* from an abandoned attempt */
            *next = (int64_t)sl_load_u64be(b.data + 5);
            *wm = (int64_t)sl_load_u64be(b.data + 13);
        }
    }
    sl_buf_free(&b);
    return rc;
}

/* ---- the live worker thread ---------------------------------------------- */

typedef struct live {
    pthread_t thread;
    bool running;
    schema_t sub;                 /* the schema without the view (shallow) */
    ingest_worker_t *w;
    int rc;
    char err[1024];
} live_t;

static void *live_main(void *arg)
{
    live_t *l = arg;
    l->rc = ingest_worker_run(l->w, l->err, sizeof l->err);
    if (l->rc) sl_error("backfill", "live worker stopped: %s", l->err);
    return NULL;
}

/* Does the store hold progress on a topic (has it been consumed)? */
static bool topic_consumed(state_store_t *st, const char *topic)
{
    for (int32_t p = 0; p < 4096; p++) {
        int64_t next;
        if (state_offset_get(st, topic, p, &next, NULL) == 0 && next > 0) return true;
    }
    return false;
}

/* Would live ingest of this view be wrong without a backfill first: its
 * definition changed (or its backfill is pending), or it is new on a topic
 * already consumed (it would start mid-stream)? */
static bool view_needs_backfill(state_store_t *st, const schema_t *schema, const schema_view_t *v)
{
    state_view_fp_t kind;
    uint64_t fp;
    if (state_view_fp_get(st, v->name, &kind, &fp, NULL, 0) != 0) return false;
    if (kind == STATE_VIEW_FP_ABSENT) return topic_consumed(st, schema->sources[v->source].topic);
    return kind != STATE_VIEW_FP_BUILT || fp != v->fingerprint;
}

bool backfill_view_needs(state_store_t *st, const schema_t *schema, int view)
{
    return view_needs_backfill(st, schema, &schema->views[view]);
}

bool backfill_view_up_to_date(state_store_t *st, const schema_view_t *v)
{
    state_view_fp_t kind;
    uint64_t fp;
    return state_view_fp_get(st, v->name, &kind, &fp, NULL, 0) == 0 && kind == STATE_VIEW_FP_BUILT &&
           fp == v->fingerprint;
}

bool backfill_view_pending(state_store_t *st, const schema_view_t *v)
{
    bf_meta_t m;
    char fp[32];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)v->fingerprint);
    return meta_read(st, v->name, &m) == 0 && m.present && strcmp(m.fingerprint, fp) == 0;
}

static int live_start(live_t *l, const sl_config_t *cfg, const schema_t *schema, int view,
                      state_store_t *st, char *errstr, size_t errsize)
{
    memset(l, 0, sizeof *l);
    if (schema->n_views < 2) return 0;           /* nothing else to keep live */
    l->sub = *schema;
    l->sub.views = calloc(schema->n_views - 1, sizeof *l->sub.views);
    if (!l->sub.views) return SL_ENOMEM;
    l->sub.n_views = 0;
    for (size_t v = 0; v < schema->n_views; v++) {
        if ((int)v == view) continue;
        if (view_needs_backfill(st, schema, &schema->views[v])) {
            /* Another changed (or new) view waits for its own backfill. */
            sl_warn("backfill", "view '%s' needs a backfill too: not ingested until it has one",
                    schema->views[v].name);
            continue;
        }
        l->sub.views[l->sub.n_views++] = schema->views[v];
    }
    if (l->sub.n_views == 0) {
        free(l->sub.views);
        l->sub.views = NULL;
        return 0;
    }
    l->sub.services = NULL;                      /* refs index the full view list */
    l->sub.n_services = 0;
    ingest_options_t io = { .exit_at_eof = false, .progress_log_ms = 0 };
    int rc = ingest_worker_new(cfg, &l->sub, st, &io, &l->w, errstr, errsize);
    if (rc) {
        free(l->sub.views);
        l->sub.views = NULL;
        return rc;
    }
    live_worker = l->w;
    if (pthread_create(&l->thread, NULL, live_main, l)) {
        live_worker = NULL;
        ingest_worker_free(l->w);
        free(l->sub.views);
        seterr(errstr, errsize, "cannot start the live worker thread");
        return SL_ENOMEM;
    }
    l->running = true;
    sl_info("backfill", "live ingest of the other %zu view(s) runs meanwhile", l->sub.n_views);
    return 0;
}

/* Stops the live worker; its final commit is done when this returns. */
static void live_stop(live_t *l)
{
    if (!l->running) return;
    ingest_worker_stop(l->w);
    pthread_join(l->thread, NULL);
    live_worker = NULL;
    ingest_worker_free(l->w);
    free(l->sub.views);
    l->running = false;
}

/* ---- the replay ------------------------------------------------------------ */

/* Messages applied together: their memory loads overlap (below). */
#define BF_BATCH 64

/* One message of a batch, between the stages. */
typedef struct bf_slot {
    rd_kafka_message_t *m;
    ingest_record_t rec;          /* decoded by the slot's own decoder */
    ingest_bad_t bad;
    bool match;                   /* good, passes the filter, key encoded */
    bool nomem;                   /* key encoding ran out of memory */
    uint32_t koff, klen;          /* the key in bf_t.karena */
    uint64_t hash;
    ingest_entry_t *e;            /* found in stage 3, prefetched */
} bf_slot_t;

typedef struct bf {
    const sl_config_t *cfg;
    const schema_t *schema;
    state_store_t *st;
    const backfill_options_t *o;
    backfill_stats_t *stats;
    int view;
    const schema_view_t *v;
    const schema_source_t *src;
    uint32_t version;
    agg_plan_t *plan;
    ingest_cache_t *cache;
    state_batch_t *batches[2];    /* alternate: one building, one in flight */
    int next_batch;
    int commit_failed;            /* sticky: a write failed, nothing more commits */
    ingest_committer_t *committer;   /* NULL: not running */
    replay_t *r;
    ingest_wm_t *wm;
    bool *touched;
    size_t np;
    bool shared;                  /* another view reads the topic: bound = stored progress */
    bool store_may_hold;          /* V' may hold states not in the cache (resumed or evicted) */
    sl_buf_t key, enc, look;
    agg_input_t keyvals[16];
    ingest_decoder_t *decs[BF_BATCH];   /* one per slot: a record points into its decoder */
    bf_slot_t slots[BF_BATCH];
    sl_buf_t karena;              /* the batch's encoded keys */
    bool apply_failed;            /* positions moved past a message not applied: never commit them */
} bf_t;

/* The committer thread's job: the synced write of one batch (b->st is
 * read-only while the committer runs). A failed batch is cleared: nothing
 * of it is written again. */
static int bf_commit_job(void *arg, void *job, char *err, size_t errsize)
{
    bf_t *b = arg;
    state_batch_t *batch = job;
    int64_t t0 = sl_mono_ns();
    int rc = state_batch_commit(b->st, batch, err, errsize);
    if (rc) state_batch_clear(batch);
    sl_debug("backfill", "commit written in %.1f ms", (double)(sl_mono_ns() - t0) / 1e6);
    return rc;
}

/* Waits for the batch in flight, if any; once it is durable, evicts (see the
 * top). Returns 0 or the write's error (then sticky). */
static int bf_commit_wait(bf_t *b, char *errstr, size_t errsize)
{
    if (!ingest_committer_pending(b->committer)) return b->commit_failed;
    char err[512] = "";
    int rc = ingest_committer_wait(b->committer, err, sizeof err);
    if (rc) {
        seterr(errstr, errsize, "backfill commit failed: %s", err[0] ? err : sl_strerror(rc));
        b->commit_failed = rc;
        return rc;
    }
    if (ingest_cache_evict(b->cache) > 0) b->store_may_hold = true;
    return 0;
}

/* Finishes the batch in flight, if any, then stops the committer thread. */
static void bf_committer_stop(bf_t *b)
{
    if (!b->committer) return;
    char err[512];
    bf_commit_wait(b, err, sizeof err);
    ingest_committer_stop(b->committer);
    b->committer = NULL;
}

/* Builds a batch of every dirty state and moved position and hands it to the
 * committer; with `wait`, returns once it is durable. */
static int bf_commit(bf_t *b, bool with_topic_progress, bool wait, char *errstr, size_t errsize)
{
    errstr[0] = '\0';                  /* the checks below ask whether a callee set it */
    int rc = bf_commit_wait(b, errstr, errsize);
    if (rc) {
        if (!errstr[0]) seterr(errstr, errsize, "an earlier backfill commit failed: %s", sl_strerror(rc));
        return rc;
    }
    if (b->apply_failed) {
        seterr(errstr, errsize, "not committed: a message was not applied");
        return SL_ESTATE;
    }
    state_batch_t *batch = b->batches[b->next_batch];
    /* Dirty entities are cold: with the array, start their loads a few
     * entities ahead, one pointer level per distance (as live ingest). */
    int64_t t0 = sl_mono_ns();
    ingest_entry_t *const *dv = ingest_cache_dirty_array(b->cache);
    size_t nd = ingest_cache_dirty_count(b->cache), di = 0;
    for (ingest_entry_t *e = dv ? (nd ? dv[0] : NULL) : ingest_cache_dirty(b->cache); e;
         e = dv ? (++di < nd ? dv[di] : NULL) : e->dirty_next) {
        if (dv) {
            if (di + 16 < nd) __builtin_prefetch(dv[di + 16], 1);
            if (di + 12 < nd) agg_entity_prefetch(b->plan, dv[di + 12]->ent, 0);
            if (di + 8 < nd) agg_entity_prefetch(b->plan, dv[di + 8]->ent, 1);
            if (di + 4 < nd) agg_entity_prefetch(b->plan, dv[di + 4]->ent, 2);
        }
        agg_entity_expire(b->plan, e->ent, ingest_wm_accept_from(&b->wm[e->partition]));
        sl_buf_reset(&b->enc);
        if ((rc = agg_entity_encode(b->plan, e->ent, &b->enc)) ||
            (rc = state_batch_put_version(batch, b->v->name, b->version, e->partition, e->key,
                                          e->klen, b->enc.data, b->enc.len)))
            goto fail;
    }
    for (size_t p = 0; p < b->np; p++) {
        if (!b->touched[p] && !with_topic_progress) continue;
        replay_part_info_t pi;
        replay_partition(b->r, p, &pi);
        int64_t wm = ingest_wm_watermark(&b->wm[p]);
        if ((rc = progress_encode(&b->enc, b->version, pi.position, wm)) ||
            (rc = state_batch_put(batch, BACKFILL_PROGRESS_VIEW, (int32_t)p, b->v->name,
                                  strlen(b->v->name), b->enc.data, b->enc.len)))
            goto fail;
        if (with_topic_progress &&
            (rc = state_batch_progress(batch, b->src->topic, (int32_t)p, pi.position, wm)))
            goto fail;
    }
    sl_debug("backfill", "commit: %zu states encoded in %.1f ms", nd, (double)(sl_mono_ns() - t0) / 1e6);
    /* The cut is complete: clean from now on. */
    ingest_cache_clear_dirty(b->cache);
    memset(b->touched, 0, b->np * sizeof *b->touched);
    ingest_committer_submit(b->committer, batch);
    b->next_batch ^= 1;
    return wait ? bf_commit_wait(b, errstr, errsize) : 0;
fail:
    state_batch_clear(batch);
    if (!errstr[0]) seterr(errstr, errsize, "backfill commit failed: %s", sl_strerror(rc));
    return rc;
}

static agg_entity_t *entity_load(bf_t *b, int32_t partition, int *rc)
{
    agg_entity_t *ent = NULL;
    /* A fresh version holds nothing the cache does not: no store read. */
    *rc = b->store_may_hold ? state_lookup_version(b->st, b->v->name, b->version, partition, b->key.data,
                                                   b->key.len, &b->look)
                            : SL_ENOTFOUND;
    if (*rc == SL_ENOTFOUND) {
        *rc = 0;
        if (!(ent = agg_entity_new(b->plan))) *rc = SL_ENOMEM;
        return ent;
    }
    if (*rc) return NULL;
    *rc = agg_entity_decode(b->plan, b->look.data, b->look.len, &ent);
    return ent;
}

/*
 * The event path, in batches of up to BF_BATCH messages with exactly the
 * effect of applying them one at a time, in order (live ingest's staging,
 * ingest/worker.c): an event's state is a chain of dependent loads that
 * likely miss the CPU caches (bucket -> entry -> entity -> feature states ->
 * tiles), so each stage walks the whole batch and issues one level of loads
 * for every message before any is waited for:
 *
 *   1 decode (each slot its own decoder), filter, encode and hash the key,
 *     prefetch the bucket
 *   2 prefetch the chains' first entries
 *   3 find cached entries, prefetch their entities
 *   4 prefetch what an update reads (agg_entity_prefetch depths 1..3)
 *   5 in order: bad input, the partition watermark and the lateness rule,
 *     a miss loaded (or created) and inserted, the update, the dirty mark
 *
 * Stages 1-4 change no state (the watermark is judged in stage 5, in
 * offset order); nothing evicts between two commits, so entries found in
 * stage 3 stay valid, and a later event of the same key finds the entry an
 * earlier one inserted.
 */
static void slot_decode(bf_t *b, size_t i)
{
    bf_slot_t *sl = &b->slots[i];
    rd_kafka_message_t *m = sl->m;
    sl->match = sl->nomem = false;
    sl->e = NULL;
    sl->bad = ingest_decode(b->decs[i], m->payload, m->payload ? m->len : 0, &sl->rec, NULL, 0);
    if (sl->bad != INGEST_OK || !ingest_filter_match(&b->v->filter, sl->rec.fields)) return;
    const schema_entity_t *ent = &b->schema->entities[b->v->entity];
    for (size_t k = 0; k < ent->n_keys; k++) b->keyvals[k] = sl->rec.fields[b->v->key_fields[k]];
    size_t off = b->karena.len;
    int rc = ingest_key_encode(&b->karena, ent->key_types, b->keyvals, ent->n_keys);
    if (rc) {
        b->karena.len = off;
        sl->nomem = rc == SL_ENOMEM;      /* any other code: the event has no key (as live) */
        return;
    }
    sl->koff = (uint32_t)off;
    sl->klen = (uint32_t)(b->karena.len - off);
    sl->hash = ingest_cache_hash(0, m->partition, b->karena.data + off, sl->klen);
    sl->match = true;
    ingest_cache_prefetch_bucket(b->cache, sl->hash);
}

/* Stage 5 for one slot. */
static int slot_apply(bf_t *b, bf_slot_t *sl)
{
    int32_t p = sl->m->partition;
    b->touched[p] = true;
    if (sl->bad != INGEST_OK) { b->stats->bad++; return 0; }
    if (ingest_wm_observe_is_late(&b->wm[p], sl->rec.time_ms)) { b->stats->late++; return 0; }
    if (sl->nomem) return SL_ENOMEM;
    if (!sl->match) return 0;
    const void *key = b->karena.data + sl->koff;
    ingest_entry_t *e = sl->e ? sl->e : ingest_cache_find_hashed(b->cache, sl->hash, 0, p, key, sl->klen);
    int rc = 0;
    if (!e) {
        sl_buf_reset(&b->key);
        if (sl_buf_append(&b->key, key, sl->klen)) return SL_ENOMEM;
        agg_entity_t *a = entity_load(b, p, &rc);
        if (!a) return rc ? rc : SL_ENOMEM;
        if (!(e = ingest_cache_insert(b->cache, 0, p, b->key.data, b->key.len, a))) {
            agg_entity_free(a);
            return SL_ENOMEM;
        }
    }
    agg_event_t ev = { sl->rec.time_ms, sl->rec.fields, sl->rec.n_fields };
    rc = agg_entity_update_prefetched(b->plan, e->ent, &ev, ingest_wm_accept_from(&b->wm[p]));
    if (rc == SL_ENOMEM) return rc;
    if (rc == 0) {
        ingest_cache_mark_dirty(b->cache, e);
        b->stats->events++;
        replay_count_events(b->r, 1);
    }
    return 0;
}

/* Applies the n gathered messages (stages 1-5) and destroys them. */
static int bf_apply_batch(bf_t *b, size_t n, int64_t delay_us)
{
    sl_buf_reset(&b->karena);
    for (size_t i = 0; i < n; i++) slot_decode(b, i);
    for (size_t i = 0; i < n; i++)
        if (b->slots[i].match) ingest_cache_prefetch_chain(b->cache, b->slots[i].hash);
    for (size_t i = 0; i < n; i++) {
        bf_slot_t *sl = &b->slots[i];
        if (!sl->match) continue;
        sl->e = ingest_cache_find_hashed(b->cache, sl->hash, 0, sl->m->partition, b->karena.data + sl->koff,
                                         sl->klen);
        if (sl->e) agg_entity_prefetch(b->plan, sl->e->ent, 0);
    }
    for (int depth = 1; depth <= 3; depth++)
        for (size_t i = 0; i < n; i++)
            if (b->slots[i].e) agg_entity_prefetch(b->plan, b->slots[i].e->ent, depth);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        rc = slot_apply(b, &b->slots[i]);
        if (delay_us > 0) usleep((useconds_t)delay_us);
    }
    for (size_t i = 0; i < n; i++) rd_kafka_message_destroy(b->slots[i].m);
    /* The replay's positions are past every gathered message: after a
     * failure they must never be committed (a rerun resumes before them). */
    if (rc) b->apply_failed = true;
    return rc;
}

/* Sets every partition's end to the live worker's committed offset. */
static void bounds_from_store(bf_t *b)
{
    for (size_t p = 0; p < b->np; p++) {
        int64_t next = -1, wm;
        replay_part_info_t pi;
        replay_partition(b->r, p, &pi);
        if (state_offset_get(b->st, b->src->topic, (int32_t)p, &next, &wm) == 0 && next >= 0)
            replay_set_end(b->r, (int32_t)p, next);
    }
}

/* Reads until every partition reached its end (or stop). Commits on the
 * config's interval. follow: refresh the ends (high watermarks / stored
 * progress) on the way; returns when the lag is <= catchup. */
static int bf_read(bf_t *b, bool follow, int64_t catchup, char *errstr, size_t errsize)
{
    /* No serving freshness to keep for a version nobody reads yet: commit
     * rarely (every commit re-encodes the hot entities). */
    int64_t interval = (b->o->commit_interval_ms > 0 ? b->o->commit_interval_ms : 10000) * 1000000LL;
    int64_t next_commit = sl_mono_ns() + interval, next_refresh = 0;
    int64_t delay_us = test_delay_us();
    int fatal = 0, rc = 0;
    for (;;) {
        if (atomic_load(&stop_flag)) return SL_ESHUTDOWN;
        int64_t now = sl_mono_ns();
        if (follow && now >= next_refresh) {
            if (b->shared) bounds_from_store(b);
            else if ((rc = replay_refresh_ends(b->r, errstr, errsize))) return rc;
            next_refresh = now + 200000000LL;
        }
        if (replay_done(b->r) && (!follow || replay_lag(b->r) <= catchup)) return 0;
        /* A batch: wait for the first message, take what is ready after it. */
        size_t n = 0;
        rd_kafka_message_t *m = replay_poll(b->r, 50, &fatal);
        while (m) {
            b->slots[n++].m = m;
            if (n == BF_BATCH || fatal) break;
            m = replay_poll(b->r, 0, &fatal);
        }
        if (n && (rc = bf_apply_batch(b, n, delay_us))) {
            seterr(errstr, errsize, "applying an event: %s", sl_strerror(rc));
            return rc;
        }
        if (fatal) { seterr(errstr, errsize, "fatal Kafka error replaying %s", b->src->topic); return SL_EKAFKA; }
        /* While the batch in flight is still being written, a periodic
         * commit waits for a later loop turn instead of blocking the replay. */
        if (sl_mono_ns() >= next_commit && !ingest_committer_busy(b->committer)) {
            if ((rc = bf_commit(b, false, false, errstr, errsize))) return rc;
            next_commit = sl_mono_ns() + interval;
        }
        replay_progress(b->r, false, false);
    }
}

/* Steps after C2: switch (with the coverage of the new version, inside the
 * hosting node's hold), record the definition, drop the old version, clear
 * the backfill's records. Idempotent. */
static int bf_finish(state_store_t *st, const schema_view_t *v, uint32_t version, size_t np,
                     int64_t from_ms, const backfill_options_t *o,
                     backfill_stats_t *stats, char *errstr, size_t errsize)
{
    int64_t th = sl_mono_ns();
    int rc = o->switch_begin ? o->switch_begin(o->hook_arg) : 0;
    if (rc) {
        seterr(errstr, errsize, "the serving side could not hold its requests for the switch: %s", sl_strerror(rc));
        return rc;
    }
    if ((rc = since_put(st, v->name, from_ms))) seterr(errstr, errsize, "cannot record view.%s.since_ms", v->name);
    else rc = state_view_version_set(st, v->name, version, errstr, errsize);
    if (o->switch_end) o->switch_end(o->hook_arg, rc == 0);
    stats->switch_ms = (double)(sl_mono_ns() - th) / 1e6;
    if (rc) return rc;
    sl_info("backfill", "view '%s': version %u now serves", v->name, version);
    crash_point("C3");
    if ((rc = state_view_fp_put(st, v->name, STATE_VIEW_FP_BUILT, v->fingerprint))) {
        seterr(errstr, errsize, "cannot record the fingerprint");
        return rc;
    }
    if (version > 1 && (rc = state_view_version_drop(st, v->name, version - 1, errstr, errsize))) return rc;
    state_batch_t *b = state_batch_new();
    if (!b) return SL_ENOMEM;
    for (size_t p = 0; p < np && !rc; p++)
        rc = state_batch_delete(b, BACKFILL_PROGRESS_VIEW, (int32_t)p, v->name, strlen(v->name));
    if (!rc) rc = state_batch_commit(st, b, errstr, errsize);
    state_batch_free(b);
    bf_meta_t none = { 0 };
    if (!rc) rc = meta_write(st, v->name, &none);
    return rc;
}

int backfill_run(const sl_config_t *cfg, const schema_t *schema, state_store_t *st,
                 const backfill_options_t *o, backfill_stats_t *stats,
                 char *errstr, size_t errsize)
{
    bf_t b;
    backfill_stats_t local;
    live_t live;
    memset(&b, 0, sizeof b);
    memset(&live, 0, sizeof live);
    if (!stats) stats = &local;
    memset(stats, 0, sizeof *stats);
    if (errstr && errsize) errstr[0] = '\0';
    atomic_store(&stop_flag, false);
    int64_t t0 = sl_mono_ns();
    int rc = 0;

    int vi = o->view ? schema_view_index(schema, o->view) : -1;
    if (vi < 0) { seterr(errstr, errsize, "no feature view '%s' in the schema", o->view ? o->view : ""); return SL_EINVAL; }
    b.cfg = cfg; b.schema = schema; b.st = st; b.o = o; b.stats = stats; b.view = vi;
    b.v = &schema->views[vi];
    b.src = &schema->sources[b.v->source];
    for (size_t v = 0; v < schema->n_views; v++)
        if ((int)v != vi && schema->views[v].source == b.v->source) b.shared = true;
    char fp[32];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)b.v->fingerprint);

    bf_meta_t meta;
    if ((rc = meta_read(st, b.v->name, &meta))) { seterr(errstr, errsize, "cannot read backfill.%s: %s", b.v->name, sl_strerror(rc)); return rc; }
    uint32_t cur;
    state_view_version_get(st, b.v->name, &cur);
    if (meta.present && strcmp(meta.fingerprint, fp) != 0) {
        sl_warn("backfill", "view '%s': an unfinished backfill of another definition (%s) is abandoned",
                b.v->name, meta.fingerprint);
        if (meta.version != cur) state_view_version_drop(st, b.v->name, meta.version, NULL, 0);
        meta.present = false;
    }
    if (!meta.present && !o->force) {
        if (backfill_view_up_to_date(st, b.v)) {
            seterr(errstr, errsize, "view '%s' is up to date (its state was built with this definition); "
                   "use --force to rebuild it anyway", b.v->name);
            return SL_EEXISTS;
        }
    }
    if (meta.present && strcmp(meta.phase, "switch") == 0) {
        /* Crashed inside the cut-over after the final batch: finish it. */
        stats->resumed = true;
        stats->old_version = meta.version - 1;
        stats->new_version = meta.version;
        replay_options_t ro = { .topic = b.src->topic, .from_ms = REPLAY_FROM_EARLIEST };
        replay_t *r = NULL;
        size_t np = 64;
        if (replay_new(cfg, &ro, &r, NULL, 0) == 0) np = replay_partition_count(r);
        replay_free(r);
        sl_info("backfill", "view '%s': resuming an interrupted cut-over to version %u", b.v->name, meta.version);
        rc = bf_finish(st, b.v, meta.version, np, meta.from_ms, o, stats, errstr, errsize);
        stats->total_s = (double)(sl_mono_ns() - t0) / 1e9;
        return rc;
    }
    if (meta.present) {
        stats->resumed = true;
        b.store_may_hold = true;
        b.version = meta.version;
    } else {
        b.version = cur + 1;
        /* Leftovers of an abandoned attempt at this version. */
        if ((rc = state_view_version_drop(st, b.v->name, b.version, errstr, errsize))) return rc;
        meta = (bf_meta_t){ .present = true, .version = b.version, .from_ms = o->from_ms };
        snprintf(meta.fingerprint, sizeof meta.fingerprint, "%s", fp);
        snprintf(meta.phase, sizeof meta.phase, "replay");
        if ((rc = meta_write(st, b.v->name, &meta)) ||
            (rc = state_view_fp_put(st, b.v->name, STATE_VIEW_FP_PENDING, b.v->fingerprint))) {
            seterr(errstr, errsize, "cannot record the backfill in the store");
            return rc;
        }
    }
    stats->old_version = b.version - 1;
    stats->new_version = b.version;
    sl_info("backfill", "view '%s': %s version %u (serving version %u) from topic %s%s", b.v->name,
            stats->resumed ? "resuming" : "building", b.version, cur, b.src->topic,
            b.shared ? ", bounded by the live worker's offsets" : "");

    if ((rc = agg_plan_new(schema, vi, &b.plan, errstr, errsize))) goto out;
    size_t maxb = cfg->max_message_bytes > 0 ? (size_t)cfg->max_message_bytes : 0;
    for (size_t i = 0; i < BF_BATCH; i++)
        if ((rc = ingest_decoder_new(schema, b.v->source, maxb, &b.decs[i], errstr, errsize))) goto out;
    b.cache = ingest_cache_new(cfg->cache_max_entities > 0 ? (size_t)cfg->cache_max_entities : 100000);
    b.batches[0] = state_batch_new();
    b.batches[1] = state_batch_new();
    if (!b.cache || !b.batches[0] || !b.batches[1]) { rc = SL_ENOMEM; goto out; }
    if ((rc = ingest_committer_start(&b.committer, "sl-bf-commit", bf_commit_job, &b, errstr, errsize)))
        goto out;
    char what[600];
    snprintf(what, sizeof what, "backfill %s", b.v->name);
    replay_options_t ro = { .topic = b.src->topic, .from_ms = meta.from_ms, .what = what,
                            .progress_ms = o->progress_ms, .progress_fn = o->progress_fn,
                            .progress_arg = o->hook_arg };
    if ((rc = replay_new(cfg, &ro, &b.r, errstr, errsize))) goto out;
    b.np = replay_partition_count(b.r);
    b.wm = calloc(b.np, sizeof *b.wm);
    b.touched = calloc(b.np, sizeof *b.touched);
    if (!b.wm || !b.touched) { rc = SL_ENOMEM; goto out; }
    for (size_t p = 0; p < b.np; p++) {
        ingest_wm_init(&b.wm[p], b.src->watermark_delay_ms, b.src->allowed_lateness_ms);
        int64_t next, wm;
        int g = progress_load(st, b.v->name, (int32_t)p, b.version, &next, &wm);
        if (g == 0) {
            replay_set_start(b.r, (int32_t)p, next);
            ingest_wm_restore(&b.wm[p], wm);
        } else if (g != SL_ENOTFOUND) {
            seterr(errstr, errsize, "backfill progress of partition %zu: %s", p, sl_strerror(g));
            rc = g;
            goto out;
        }
    }
    if (b.shared) {
        /* Never past what the store holds for the topic (absent: nothing). */
        for (size_t p = 0; p < b.np; p++) {
            replay_part_info_t pi;
            replay_partition(b.r, p, &pi);
            int64_t next = -1, wm;
            if (state_offset_get(st, b.src->topic, (int32_t)p, &next, &wm) != 0 || next < 0) next = pi.start;
            /* replay_set_end only grows: shrink by re-creating the end. */
            replay_set_bound(b.r, (int32_t)p, next > pi.start ? next : pi.start);
        }
    }
    if ((rc = replay_start(b.r, errstr, errsize))) goto out;
    if (o->live && (rc = live_start(&live, cfg, schema, vi, st, errstr, errsize))) goto out;

    /* REPLAY: follow the bound until caught up. */
    rc = bf_read(&b, true, o->catchup_lag, errstr, errsize);
    if (rc) {
        char e2[256];
        if (bf_commit(&b, false, true, e2, sizeof e2) == 0 && rc == SL_ESHUTDOWN)
            sl_info("backfill", "stopped; progress committed, rerun to resume");
        goto out;
    }
    /* DRAIN: fix the bound, read exactly up to it. */
    int64_t tc = sl_mono_ns();
    live_stop(&live);
    if (b.shared) bounds_from_store(&b);
    else if ((rc = replay_refresh_ends(b.r, errstr, errsize))) goto out;
    if ((rc = bf_read(&b, false, 0, errstr, errsize))) {
        char e2[256];
        bf_commit(&b, false, true, e2, sizeof e2);
        goto out;
    }
    replay_progress(b.r, true, true);
    if ((rc = bf_commit(&b, !b.shared, true, errstr, errsize))) goto out;
    stats->replay_s = replay_elapsed_s(b.r);   /* up to the last durable batch, like live ingest's */
    crash_point("C1");
    snprintf(meta.phase, sizeof meta.phase, "switch");
    if ((rc = meta_write(st, b.v->name, &meta))) { seterr(errstr, errsize, "cannot record the cut-over"); goto out; }
    crash_point("C2");
    if ((rc = bf_finish(st, b.v, b.version, b.np, meta.from_ms, o, stats, errstr, errsize))) goto out;
    stats->cutover_ms = (double)(sl_mono_ns() - tc) / 1e6;
out:
    live_stop(&live);
    bf_committer_stop(&b);
    stats->messages = b.r ? replay_messages(b.r) : 0;
    if (stats->replay_s == 0) stats->replay_s = b.r ? replay_elapsed_s(b.r) : 0;
    stats->total_s = (double)(sl_mono_ns() - t0) / 1e9;
    replay_free(b.r);
    for (size_t i = 0; i < BF_BATCH; i++) ingest_decoder_free(b.decs[i]);
    ingest_cache_free(b.cache);
    state_batch_free(b.batches[0]);
    state_batch_free(b.batches[1]);
    agg_plan_free(b.plan);
    free(b.wm);
    free(b.touched);
    sl_buf_free(&b.key);
    sl_buf_free(&b.enc);
    sl_buf_free(&b.look);
    sl_buf_free(&b.karena);
    if (rc && errstr && !errstr[0]) seterr(errstr, errsize, "%s", sl_strerror(rc));
    return rc;
}

/* ---- sluice check --state-dir ------------------------------------------------ */

int backfill_check(const schema_t *schema, const char *state_dir, const char *config_path,
                   FILE *out, char *errstr, size_t errsize)
{
    state_store_t *st = NULL;
    state_options_t so = { .create_if_missing = false, .read_only = true };
    int rc = state_open(state_dir, &so, &st, errstr, errsize);
    if (rc) return rc;
    int need = 0;
    const char *cfgp = config_path ? config_path : "CONFIG";
    /* A live owner (sluice run) runs a pending backfill itself. */
    char lock_err[512];
    bool owned = state_dir_check_unlocked(state_dir, lock_err, sizeof lock_err) == SL_EBUSY;
    fprintf(out, "views against state dir %s:\n", state_dir);
    for (size_t v = 0; v < schema->n_views; v++) {
        const schema_view_t *view = &schema->views[v];
        uint32_t ver;
        state_view_version_get(st, view->name, &ver);
        state_view_fp_t kind;
        uint64_t fp;
        int g = state_view_fp_get(st, view->name, &kind, &fp, NULL, 0);
        const char *status;
        bool needs = false;
        if (g == 0 && kind == STATE_VIEW_FP_ABSENT) {
            bool consumed = topic_consumed(st, schema->sources[view->source].topic);
            status = consumed ? "NEEDS BACKFILL: new view on a topic already consumed (live ingest would start it mid-stream)"
                              : "new: ingest builds it from the start of its topic";
            needs = consumed;
        } else if (g != 0) {
            status = "cannot read its fingerprint";
        } else if (kind == STATE_VIEW_FP_BUILT && fp == view->fingerprint) {
            status = "ok";
        } else if (kind == STATE_VIEW_FP_PENDING) {
            status = owned ? "BACKFILL IN PROGRESS (if `sluice run` owns the dir it runs it; the command follows it)"
                           : "BACKFILL IN PROGRESS (rerun the command to resume it)";
            needs = true;
        } else {
            status = "NEEDS BACKFILL: definition changed since its state was built";
            needs = true;
        }
        fprintf(out, "  %-24s version %u  %s\n", view->name, ver, status);
        if (needs) {
            fprintf(out, "      sluice backfill -c %s --view %s\n", cfgp, view->name);
            need++;
        }
    }
    state_close(st);
    return need;
}
