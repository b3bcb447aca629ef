/*
 * worker.c — the ingest worker (contract and partition state machine in
 * ingest.h).
 *
 * Exactly once, concretely:
 *   - a message is applied only if its partition is assigned and its offset is
 *     >= the partition's next_offset (a stale or duplicate delivery is
 *     dropped), and applying it advances next_offset to offset + 1;
 *   - next_offset, the watermark, the persisted counters and every entity
 *     state changed since the last commit are written in one state batch, so
 *     RocksDB always holds the result of applying exactly the messages below
 *     next_offset;
 *   - on assignment the consumer is positioned at the stored next_offset (or
 *     the earliest offset if none), and the cache holds nothing of the
 *     partition (entries are dropped on revocation), so what runs after a
 *     crash or a move starts from exactly that committed point.
 * Dead letters are produced (idempotent producer) and flushed before the
 * commit that covers them: at least once, duplicated only by a crash between
 * the flush and the commit.
 *
 * Threads: everything here runs on the thread calling ingest_worker_run
 * (librdkafka calls the rebalance callback from rd_kafka_consumer_poll on
 * that thread), except state_batch_commit, which the committer thread
 * (committer.h) started by ingest_worker_run runs on one handed-off batch at
 * a time (see "commit").
 * ingest_worker_stop only stores an atomic flag; the stats are atomics read
 * by other threads.
 */
#include "ingest.h"
#include "cache.h"
#include "committer.h"
#include "entity_key.h"
#include "kafka_log.h"
#include "watermark.h"

#include "agg.h"
#include "sl_buf.h"
#include "sl_err.h"
#include "sl_log.h"
#include "sl_time.h"
#include "snapshot.h"

#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define RELAXED memory_order_relaxed
#define STAT_ADD(field, n) atomic_fetch_add_explicit(&(field), (uint64_t)(n), RELAXED)
#define STAT_SET(field, v) atomic_store_explicit(&(field), (uint64_t)(v), RELAXED)

typedef struct part {
    bool known;               /* slot in use (assigned at least once) */
    bool assigned;
    bool touched;             /* progress moved since the last commit */
    bool at_eof;
    bool may_have_state;      /* the store may hold entities of this partition */
    int64_t next_offset;      /* next offset to apply; -1 = from the start */
    ingest_wm_t wm;
    ingest_counts_t counts;   /* persisted totals */
} part_t;

/* Messages applied together (see "the event path"). */
#define INGEST_BATCH 64

/* One gathered message. */
typedef struct bslot {
    rd_kafka_message_t *m;
    struct topic_ent *t;
    struct part *p;
    bool live;                /* assigned partition, new offset: decoded */
    ingest_bad_t bad;
    ingest_record_t rec;
    char why[200];
} bslot_t;

/* One (gathered message, view of its topic). */
typedef struct bview {
    ingest_entry_t *e;        /* stage 3 on */
    uint64_t hash;
    uint32_t koff, klen;      /* the entity key in karena */
    bool match;               /* filter passed and key encoded */
} bview_t;

typedef struct topic_ent {
    const char *name;         /* the source's topic (borrowed from the schema) */
    int source;
    int *views;               /* views fed by the source */
    size_t n_views;
    part_t *parts;            /* indexed by partition id */
    size_t n_parts;
} topic_ent_t;

struct ingest_worker {
    const sl_config_t *cfg;
    const schema_t *schema;
    state_store_t *st;
    ingest_options_t opts;
    int log_level;            /* 0 debug, 1 info, 2 warn, 3 error */

    agg_plan_t **plans;       /* per view */
    int *view_topic;          /* per view: index into topics, -1 if the view's source is idle */
    ingest_decoder_t **decoders;   /* per source, INGEST_BATCH each: [s * INGEST_BATCH + slot] */
    topic_ent_t *topics;
    size_t n_topics;

    rd_kafka_t *rk;           /* consumer */
    rd_kafka_t *dlq;          /* dead-letter producer or NULL */

    ingest_cache_t *cache;
    state_batch_t *batches[2];   /* alternate: one building, one in flight */
    int next_batch;

    /* the committer thread (see "commit" below) */
    ingest_committer_t *committer;   /* NULL: not running */
    uint64_t job_us;          /* written by commit_job, read after the wait */
    bool evicted_any;         /* some committed entity left the cache: misses must read the store */
    rd_kafka_topic_partition_list_t *job_offsets;
    sl_buf_t key, enc, lookup;
    agg_input_t keyvals[16];

    /* the batch being gathered and applied (see "the event path") */
    bslot_t slots[INGEST_BATCH];
    size_t n_slots;
    bview_t *bviews;          /* INGEST_BATCH x max_views */
    size_t max_views;
    sl_buf_t karena;          /* entity keys of the batch */
    const rd_kafka_topic_t *last_rkt;   /* topic handle of the last message ... */
    topic_ent_t *last_topic;            /* ... and its entry (NULL: not ours) */

    /* snapshots: periodic (snapshot_interval) and on request of
     * `sluice snapshot create` on the locked state dir */
    char *snap_dir;           /* NULL: no state_dir (tests) */
    char schema_fp[24];
    int64_t next_snapshot_ns, next_snap_request_ns;

    atomic_bool stop;
    int fatal;                /* first fatal error, stops the loop */
    char fatal_msg[512];
    ingest_stats_t stats;
};

/* ---- logging --------------------------------------------------------- */

static void wlog(ingest_worker_t *w, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void wlog(ingest_worker_t *w, int level, const char *fmt, ...)
{
    /* The process-wide logger (util/sl_log: text or JSON, configured by the
     * command from log_level/log_format) decides the format; the worker's
     * own level (its config's log_level) filters first. */
    if (level < w->log_level || !sl_log_enabled((sl_log_level_t)level)) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sl_log((sl_log_level_t)level, "ingest", "%s", msg);
}

static void set_fatal(ingest_worker_t *w, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_fatal(ingest_worker_t *w, int rc, const char *fmt, ...)
{
    if (w->fatal) return;
    w->fatal = rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->fatal_msg, sizeof w->fatal_msg, fmt, ap);
    va_end(ap);
    wlog(w, 3, "%s", w->fatal_msg);
}

/* ---- counters record ------------------------------------------------- */

#define COUNTS_VERSION 1

static int counts_encode(const ingest_counts_t *c, sl_buf_t *b)
{
    int rc = sl_buf_put_u8(b, COUNTS_VERSION);
    rc = rc ? rc : sl_buf_put_varint(b, INGEST_BAD__COUNT);
    rc = rc ? rc : sl_buf_put_varint(b, c->messages);
    rc = rc ? rc : sl_buf_put_varint(b, c->good);
    rc = rc ? rc : sl_buf_put_varint(b, c->late);
    for (int i = 1; i < INGEST_BAD__COUNT && !rc; i++) rc = sl_buf_put_varint(b, c->bad[i]);
    return rc;
}

static int counts_decode(const void *p, size_t n, ingest_counts_t *c)
{
    sl_reader_t r;
    uint8_t ver;
    uint64_t nbad;
    memset(c, 0, sizeof *c);
    sl_reader_init(&r, p, n);
    if (sl_read_u8(&r, &ver) || ver != COUNTS_VERSION) return SL_ECORRUPT;
    if (sl_read_varint(&r, &nbad) || sl_read_varint(&r, &c->messages) ||
        sl_read_varint(&r, &c->good) || sl_read_varint(&r, &c->late))
        return SL_ECORRUPT;
    for (uint64_t i = 1; i < nbad; i++) {
        uint64_t v;
        if (sl_read_varint(&r, &v)) return SL_ECORRUPT;
        if (i < INGEST_BAD__COUNT) c->bad[i] = v;
    }
    return 0;
}

int ingest_counts_load(state_store_t *st, const char *topic, int32_t partition,
                       ingest_counts_t *out)
{
    sl_buf_t b = SL_BUF_INIT;
    memset(out, 0, sizeof *out);
    int rc = state_lookup(st, INGEST_COUNTS_VIEW, partition, topic, strlen(topic), &b);
    if (rc == 0) rc = counts_decode(b.data, b.len, out);
    sl_buf_free(&b);
    return rc;
}

/* ---- partitions ------------------------------------------------------ */

static topic_ent_t *topic_find(ingest_worker_t *w, const char *name)
{
    for (size_t i = 0; i < w->n_topics; i++)
        if (strcmp(w->topics[i].name, name) == 0) return &w->topics[i];
    return NULL;
}

static part_t *part_slot(topic_ent_t *t, int32_t partition, bool create)
{
    if (partition < 0) return NULL;
    if ((size_t)partition >= t->n_parts) {
        if (!create) return NULL;
        size_t n = (size_t)partition + 1;
        part_t *np = realloc(t->parts, n * sizeof *np);
        if (!np) return NULL;
        memset(np + t->n_parts, 0, (n - t->n_parts) * sizeof *np);
        t->parts = np;
        t->n_parts = n;
    }
    return &t->parts[partition];
}

/* ---- commit ----------------------------------------------------------
 *
 * Commits are pipelined: the ingest thread encodes the dirty entities and the
 * progress of every moved partition into a batch (a consistent cut: nothing
 * is applied while it builds), marks them clean and hands the batch to the
 * committer thread (committer.h), which runs state_batch_commit (the synced
 * RocksDB write) while the ingest thread goes on consuming. One batch is in
 * flight at most; its batch and job_offsets are not touched until the wait:
 *
 *   ingest:    build #k -> hand off ---- consume ---- wait #k, evict, build #k+1
 *   committer:             write #k (fsync) ---> done
 *
 * Eviction happens only after the in-flight batch is durable, so an entity
 * evicted (and later re-read from RocksDB) never has a newer state in flight.
 * A failed write is fatal: the cache is then ahead of the store, and the
 * worker stops so that a restart resumes from the last durable batch (nothing
 * is lost: Kafka still has the messages).
 */

/* The committer thread's job: the synced write of one batch. The CPU time
 * is read here because it is the committer thread's. */
static int commit_job(void *arg, void *batch, char *err, size_t errsize)
{
    ingest_worker_t *w = arg;
    int64_t t0 = sl_mono_ns();
    int rc = state_batch_commit(w->st, batch, err, errsize);
    w->job_us = (uint64_t)((sl_mono_ns() - t0) / 1000);
    STAT_SET(w->stats.commit_cpu_us, sl_thread_cpu_us());
    return rc;
}

/* Waits for the batch in flight, if any, and finishes it: counters, Kafka
 * offsets (lag monitoring), eviction. Returns 0 or the commit's error (fatal
 * already set). ingest_committer_busy tells whether this would block. */
static int commit_wait(ingest_worker_t *w)
{
    if (!ingest_committer_pending(w->committer)) return 0;
    char err[512] = "";
    int rc = ingest_committer_wait(w->committer, err, sizeof err);
    uint64_t us = w->job_us;
    if (rc) {
        STAT_ADD(w->stats.commit_errors, 1);
        set_fatal(w, SL_ESTATE, "state commit failed (%s)%s%s; stopping: a restart resumes from the "
                  "last committed batch", sl_strerror(rc), err[0] ? ": " : "", err);
        return rc;
    }
    STAT_ADD(w->stats.commits, 1);
    STAT_SET(w->stats.commit_us_last, us);
    STAT_ADD(w->stats.commit_us_sum, us);
    if (us > atomic_load_explicit(&w->stats.commit_us_max, RELAXED))
        STAT_SET(w->stats.commit_us_max, us);
    if (w->job_offsets) {
        if (w->job_offsets->cnt > 0) rd_kafka_commit(w->rk, w->job_offsets, 1);
        rd_kafka_topic_partition_list_destroy(w->job_offsets);
        w->job_offsets = NULL;
    }
    size_t evicted = ingest_cache_evict(w->cache);
    if (evicted) w->evicted_any = true;
    STAT_ADD(w->stats.cache_evictions, evicted);
    STAT_SET(w->stats.cache_entries, ingest_cache_count(w->cache));
    return 0;
}

/* Builds the next batch from every dirty entity and moved partition and hands
 * it to the committer; with `wait`, returns only once it is durable. Returns
 * 0 (also when there was nothing to do) or a negative code. */
static int worker_commit(ingest_worker_t *w, bool wait)
{
    int rc = commit_wait(w);
    if (rc) return rc;
    if (w->fatal) return w->fatal;   /* the cache may hold a half-applied event */
    bool any = ingest_cache_dirty_count(w->cache) > 0;
    for (size_t t = 0; t < w->n_topics && !any; t++)
        for (size_t p = 0; p < w->topics[t].n_parts && !any; p++)
            any = w->topics[t].parts[p].touched;
    if (!any) return 0;

    if (w->dlq) {
        /* Dead letters go out before the commit that covers their offsets. */
        rd_kafka_flush(w->dlq, 10000);
        if (rd_kafka_outq_len(w->dlq) > 0) {
            wlog(w, 2, "dead-letter topic: %d messages undelivered, commit postponed",
                 rd_kafka_outq_len(w->dlq));
            STAT_ADD(w->stats.commit_errors, 1);
            return SL_EKAFKA;
        }
    }

    state_batch_t *b = w->batches[w->next_batch];
    size_t n_ent = 0;
    /* Each dirty entity is cold (encoding is memory-bound, not CPU-bound):
     * with the array, start the loads a few entities ahead, one pointer
     * level per distance (entry, entity, whole tile arrays, sketches).
     * The encode hints, not the update ones (newest tile only): expire
     * and encode walk every tile; measured with bench_ingest at 100 ms
     * commits, 2.1-2.5 us per entity instead of 2.9-3.1. */
    uint64_t build_t0 = sl_mono_ns();
    ingest_entry_t *const *dv = ingest_cache_dirty_array(w->cache);
    size_t nd = ingest_cache_dirty_count(w->cache), di = 0;
    for (ingest_entry_t *e = dv ? (nd ? dv[0] : NULL) : ingest_cache_dirty(w->cache); e;
         e = dv ? (++di < nd ? dv[di] : NULL) : e->dirty_next) {
        if (dv) {
            if (di + 16 < nd) __builtin_prefetch(dv[di + 16], 1);
            if (di + 12 < nd) agg_entity_prefetch_encode(w->plans[dv[di + 12]->view], dv[di + 12]->ent, 0);
            if (di + 8 < nd) agg_entity_prefetch_encode(w->plans[dv[di + 8]->view], dv[di + 8]->ent, 1);
            if (di + 4 < nd) agg_entity_prefetch_encode(w->plans[dv[di + 4]->view], dv[di + 4]->ent, 2);
        }
        const schema_view_t *view = &w->schema->views[e->view];
        topic_ent_t *t = &w->topics[w->view_topic[e->view]];
        part_t *p = part_slot(t, e->partition, false);
        if (p) agg_entity_expire(w->plans[e->view], e->ent, ingest_wm_accept_from(&p->wm));
        sl_buf_reset(&w->enc);
        /* An entity the store already holds in this partition skips the
         * rewrite of its index row (state_batch_put_known). A failed commit
         * is fatal, so marking it known at hand-off is safe. */
        if ((rc = agg_entity_encode(w->plans[e->view], e->ent, &w->enc)) != 0 ||
            (rc = (e->known ? state_batch_put_known : state_batch_put)(
                 b, view->name, e->partition, e->key, e->klen, w->enc.data, w->enc.len)) != 0)
            goto fail;
        e->known = true;
        n_ent++;
    }
    STAT_ADD(w->stats.commit_build_us, (sl_mono_ns() - build_t0) / 1000);
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(8);
    for (size_t ti = 0; ti < w->n_topics; ti++) {
        topic_ent_t *t = &w->topics[ti];
        for (size_t pi = 0; pi < t->n_parts; pi++) {
            part_t *p = &t->parts[pi];
            if (!p->touched) continue;
            sl_buf_reset(&w->enc);
            if ((rc = state_batch_progress(b, t->name, (int32_t)pi, p->next_offset,
                                           ingest_wm_watermark(&p->wm))) != 0 ||
                (rc = counts_encode(&p->counts, &w->enc)) != 0 ||
                (rc = state_batch_put(b, INGEST_COUNTS_VIEW, (int32_t)pi, t->name,
                                      strlen(t->name), w->enc.data, w->enc.len)) != 0) {
                rd_kafka_topic_partition_list_destroy(offs);
                goto fail;
            }
            if (p->assigned && p->next_offset >= 0)
                rd_kafka_topic_partition_list_add(offs, t->name, (int32_t)pi)->offset = p->next_offset;
        }
    }
    /* The cut is complete: everything in it is clean from now on. */
    ingest_cache_clear_dirty(w->cache);
    for (size_t ti = 0; ti < w->n_topics; ti++)
        for (size_t pi = 0; pi < w->topics[ti].n_parts; pi++) w->topics[ti].parts[pi].touched = false;
    STAT_ADD(w->stats.committed_entities, n_ent);

    w->job_offsets = offs;
    w->next_batch ^= 1;
    ingest_committer_submit(w->committer, b);
    return wait ? commit_wait(w) : 0;

fail:
    /* Encoding failed (out of memory): the batch is unusable and the cache
     * cannot be committed consistently any more. */
    set_fatal(w, rc, "cannot build the state batch: %s", sl_strerror(rc));
    return rc;
}

/* ---- rebalance ------------------------------------------------------- */

struct drop_arg { ingest_worker_t *w; const rd_kafka_topic_partition_list_t *parts; };

static bool drop_pred(int32_t view, int32_t partition, void *arg)
{
    struct drop_arg *a = arg;
    topic_ent_t *t = &a->w->topics[a->w->view_topic[view]];
    for (int i = 0; i < a->parts->cnt; i++)
        if (a->parts->elems[i].partition == partition && strcmp(a->parts->elems[i].topic, t->name) == 0)
            return true;
    return false;
}

static void on_assign(ingest_worker_t *w, rd_kafka_topic_partition_list_t *parts)
{
    commit_wait(w);   /* stored offsets must include the batch in flight */
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        topic_ent_t *t = topic_find(w, tp->topic);
        part_t *p = t ? part_slot(t, tp->partition, true) : NULL;
        if (!p) {
            set_fatal(w, SL_ENOMEM, "out of memory on assignment of %s/%d", tp->topic, tp->partition);
            return;
        }
        const schema_source_t *src = &w->schema->sources[t->source];
        int64_t next = -1, wm = INGEST_WM_NONE;
        int rc = state_offset_get(w->st, tp->topic, tp->partition, &next, &wm);
        if (rc != 0 && rc != SL_ENOTFOUND) {
            set_fatal(w, SL_ESTATE, "cannot read stored offset of %s/%d: %s",
                      tp->topic, tp->partition, sl_strerror(rc));
            return;
        }
        memset(p, 0, sizeof *p);
        p->known = p->assigned = true;
        ingest_wm_init(&p->wm, src->watermark_delay_ms, src->allowed_lateness_ms);
        /* A partition with no stored progress has no stored entities (they
         * are only ever written together), so misses need no lookup until
         * something of it is committed and evicted. */
        p->may_have_state = rc == 0;
        if (rc == 0 && next >= 0) {
            p->next_offset = next;
            ingest_wm_restore(&p->wm, wm);
            tp->offset = next;
        } else {
            p->next_offset = -1;
            tp->offset = RD_KAFKA_OFFSET_BEGINNING;
        }
        rc = ingest_counts_load(w->st, tp->topic, tp->partition, &p->counts);
        if (rc != 0 && rc != SL_ENOTFOUND) {
            set_fatal(w, rc, "cannot read counters of %s/%d: %s", tp->topic, tp->partition,
                      sl_strerror(rc));
            return;
        }
        wlog(w, 1, "assigned %s/%d from %s %lld", tp->topic, tp->partition,
             p->next_offset >= 0 ? "stored offset" : "the beginning",
             (long long)(p->next_offset >= 0 ? p->next_offset : 0));
    }
}

static void on_revoke(ingest_worker_t *w, rd_kafka_topic_partition_list_t *parts)
{
    /* Commit what we have before letting go; if that fails, the uncommitted
     * changes are dropped below and the next owner replays them. */
    if (!rd_kafka_assignment_lost(w->rk)) worker_commit(w, true);
    else commit_wait(w);
    struct drop_arg a = { w, parts };
    ingest_cache_drop_if(w->cache, drop_pred, &a);
    for (int i = 0; i < parts->cnt; i++) {
        topic_ent_t *t = topic_find(w, parts->elems[i].topic);
        part_t *p = t ? part_slot(t, parts->elems[i].partition, false) : NULL;
        if (p) { p->assigned = false; p->touched = false; p->at_eof = false; }
        wlog(w, 1, "revoked %s/%d", parts->elems[i].topic, parts->elems[i].partition);
    }
    STAT_SET(w->stats.cache_entries, ingest_cache_count(w->cache));
}

static void batch_apply(ingest_worker_t *w);

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    ingest_worker_t *w = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    /* Messages gathered before this rebalance are applied before it. */
    batch_apply(w);
    STAT_ADD(w->stats.rebalances, 1);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(w, parts);
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e) { wlog(w, 3, "incremental assign: %s", rd_kafka_error_string(e)); rd_kafka_error_destroy(e); }
        } else {
            rd_kafka_assign(rk, parts);
        }
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        on_revoke(w, parts);
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
            if (e) { wlog(w, 3, "incremental unassign: %s", rd_kafka_error_string(e)); rd_kafka_error_destroy(e); }
        } else {
            rd_kafka_assign(rk, NULL);
        }
    } else {
        wlog(w, 3, "rebalance error: %s", rd_kafka_err2str(err));
        on_revoke(w, parts);
        rd_kafka_assign(rk, NULL);
    }
}

/* ---- dead letters ---------------------------------------------------- */

static void dlq_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    ingest_worker_t *w = opaque;
    if (m->err) {
        STAT_ADD(w->stats.dead_letter_errors, 1);
        wlog(w, 3, "dead-letter delivery failed: %s", rd_kafka_err2str(m->err));
    } else {
        STAT_ADD(w->stats.dead_letters, 1);
    }
}

static void dlq_produce(ingest_worker_t *w, const rd_kafka_message_t *m, ingest_bad_t reason)
{
    char part[16], off[24];
    snprintf(part, sizeof part, "%d", (int)m->partition);
    snprintf(off, sizeof off, "%lld", (long long)m->offset);
    for (int attempt = 0;; attempt++) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            w->dlq, RD_KAFKA_V_TOPIC(w->cfg->dead_letter_topic),
            RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_KEY(m->key, m->key_len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADER("sluice.reason", ingest_bad_name(reason), -1),
            RD_KAFKA_V_HEADER("sluice.topic", rd_kafka_topic_name(m->rkt), -1),
            RD_KAFKA_V_HEADER("sluice.partition", part, -1),
            RD_KAFKA_V_HEADER("sluice.offset", off, -1), RD_KAFKA_V_END);
        if (!err) return;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || attempt > 1000) {
            STAT_ADD(w->stats.dead_letter_errors, 1);
            wlog(w, 3, "dead-letter produce failed: %s", rd_kafka_err2str(err));
            return;
        }
        rd_kafka_poll(w->dlq, 10);
    }
}

/* ---- the event path -------------------------------------------------- */

static agg_entity_t *entity_load(ingest_worker_t *w, int view, int32_t partition, bool lookup,
                                 bool *known)
{
    agg_entity_t *ent = NULL;
    *known = false;
    const schema_view_t *v = &w->schema->views[view];
    int rc = lookup ? state_lookup(w->st, v->name, partition, w->key.data, w->key.len, &w->lookup)
                    : SL_ENOTFOUND;
    if (rc == SL_ENOTFOUND) {
        ent = agg_entity_new(w->plans[view]);
        if (!ent) set_fatal(w, SL_ENOMEM, "out of memory creating an entity of view '%s'", v->name);
        return ent;
    }
    if (rc != 0) {
        set_fatal(w, SL_ESTATE, "state lookup failed for view '%s': %s", v->name, sl_strerror(rc));
        return NULL;
    }
    *known = true;
    rc = agg_entity_decode(w->plans[view], w->lookup.data, w->lookup.len, &ent);
    if (rc != 0)
        set_fatal(w, rc, "stored state of view '%s' partition %d cannot be decoded: %s",
                  v->name, partition, sl_strerror(rc));
    return ent;
}

/* ---- the event path --------------------------------------------------
 *
 * Messages are applied in batches of up to INGEST_BATCH, in arrival order,
 * with exactly the effect of applying them one at a time; batching only lets
 * their memory work overlap. On a cache of 10^5..10^6 entities an event's
 * state is a chain of dependent loads that each likely miss the CPU caches
 * (hash bucket -> cache entry -> entity -> each feature's newest tile). The
 * stages below walk the whole batch once per level, so every event's load
 * of that level is in flight before any of them is waited for:
 *
 *   1 decode, filter, encode the entity keys, hash them; prefetch buckets
 *   2 prefetch the chains' first entries
 *   3 find the cached entries; prefetch their entities
 *   4 prefetch what an update reads, one level of pointers per pass
 *     (agg_entity_prefetch depths 1..3: feature states, newest tiles, their
 *     sketches)
 *   5 in arrival order: offsets, counters, bad input, watermark and late
 *     events, a cache miss loaded (or created) and inserted, updates, dirty
 *     marks (what handling one message always did)
 *
 * Stages 1-4 change no state: they decode into per-slot decoders and only
 * read the cache (entries stay valid through the batch: nothing evicts or
 * drops between two polls). Stage 1 skips decoding a message that stage 5
 * will drop as stale (next_offset only grows inside a batch, so its test can
 * only be stricter there). A miss is loaded in stage 5, so an entity is never
 * created nor read from the store for a late or duplicate event, and a later
 * event of the same key in the batch finds the entry the first one inserted.
 *
 * A rebalance callback runs inside rd_kafka_consumer_poll while a batch is
 * being gathered: it applies the gathered messages first (batch_apply), so
 * every message polled before a rebalance is applied before it, as before.
 */

static bool slot_is_fresh(const bslot_t *b)
{
    const part_t *p = b->p;
    return p && p->assigned && !(p->next_offset >= 0 && b->m->offset < p->next_offset);
}

/* Stage 1 for slot i. */
static void slot_decode(ingest_worker_t *w, size_t i)
{
    bslot_t *b = &w->slots[i];
    rd_kafka_message_t *m = b->m;
    /* consecutive messages mostly share a topic handle: compare pointers
     * before names */
    if (m->rkt != w->last_rkt || !w->last_topic) {
        w->last_topic = topic_find(w, rd_kafka_topic_name(m->rkt));
        w->last_rkt = m->rkt;
    }
    b->t = w->last_topic;
    b->p = b->t ? part_slot(b->t, m->partition, false) : NULL;
    b->live = false;
    if (m->err || !slot_is_fresh(b)) return;
    b->live = true;
    topic_ent_t *t = b->t;
    b->bad = ingest_decode(w->decoders[(size_t)t->source * INGEST_BATCH + i], m->payload,
                           m->payload ? m->len : 0, &b->rec, b->why, sizeof b->why);
    bview_t *bv = &w->bviews[i * w->max_views];
    for (size_t k = 0; k < t->n_views; k++) {
        bv[k].match = false;
        bv[k].e = NULL;
        if (b->bad != INGEST_OK) continue;
        int vi = t->views[k];
        const schema_view_t *view = &w->schema->views[vi];
        if (!ingest_filter_match(&view->filter, b->rec.fields)) continue;
        const schema_entity_t *ent = &w->schema->entities[view->entity];
        for (size_t c = 0; c < ent->n_keys; c++) w->keyvals[c] = b->rec.fields[view->key_fields[c]];
        size_t off = w->karena.len;
        int rc = ingest_key_encode(&w->karena, ent->key_types, w->keyvals, ent->n_keys);
        if (rc != 0) {
            /* out of memory: stage 5 re-encodes and reports it; any other
             * code cannot happen after decode (skip the view, be safe) */
            w->karena.len = off;
            if (rc == SL_ENOMEM) bv[k].match = true, bv[k].klen = UINT32_MAX;
            continue;
        }
        bv[k].koff = (uint32_t)off;
        bv[k].klen = (uint32_t)(w->karena.len - off);
        bv[k].hash = ingest_cache_hash(vi, m->partition, w->karena.data + off, bv[k].klen);
        bv[k].match = true;
        ingest_cache_prefetch_bucket(w->cache, bv[k].hash);
    }
}

/* Stage 3 for one (slot, view): the entry, found or loaded; NULL with fatal set. */
static ingest_entry_t *slot_entry(ingest_worker_t *w, bslot_t *b, int vi, bview_t *bv)
{
    const void *key = w->karena.data + bv->koff;
    int32_t partition = b->m->partition;
    ingest_entry_t *e = ingest_cache_find_hashed(w->cache, bv->hash, vi, partition, key, bv->klen);
    if (e) return e;
    bool known;
    sl_buf_reset(&w->key);
    if (sl_buf_append(&w->key, key, bv->klen)) {
        set_fatal(w, SL_ENOMEM, "out of memory encoding a key");
        return NULL;
    }
    agg_entity_t *a = entity_load(w, vi, partition, b->p->may_have_state || w->evicted_any, &known);
    if (!a) return NULL;
    e = ingest_cache_insert(w->cache, vi, partition, key, bv->klen, a);
    if (!e) {
        agg_entity_free(a);
        set_fatal(w, SL_ENOMEM, "out of memory growing the entity cache");
        return NULL;
    }
    e->known = known;
    return e;
}

/* Stage 5, the views of one good, timely event. */
static void apply_views(ingest_worker_t *w, bslot_t *b)
{
    const ingest_record_t *rec = &b->rec;
    topic_ent_t *t = b->t;
    agg_event_t ev = { rec->time_ms, rec->fields, rec->n_fields };
    int64_t accept_from = ingest_wm_accept_from(&b->p->wm);
    bview_t *bv = &w->bviews[(size_t)(b - w->slots) * w->max_views];
    for (size_t k = 0; k < t->n_views; k++) {
        int vi = t->views[k];
        const schema_view_t *view = &w->schema->views[vi];
        if (!bv[k].match) continue;
        if (bv[k].klen == UINT32_MAX) { set_fatal(w, SL_ENOMEM, "out of memory encoding a key"); return; }
        ingest_entry_t *e = bv[k].e;
        if (!e && !(e = slot_entry(w, b, vi, &bv[k]))) return;
        /* stage 4 prefetched a found entity; a loaded or new one is hot */
        int rc = agg_entity_update_prefetched(w->plans[vi], e->ent, &ev, accept_from);
        if (rc == SL_ENOMEM) { set_fatal(w, rc, "out of memory updating view '%s'", view->name); return; }
        if (rc == 0) {
            ingest_cache_mark_dirty(w->cache, e);
            STAT_ADD(w->stats.view_events[vi], 1);
        }
    }
}

/* Stage 5 for one slot: handle_message as it was, on the decoded event. */
static void slot_apply(ingest_worker_t *w, bslot_t *b)
{
    rd_kafka_message_t *m = b->m;
    topic_ent_t *t = b->t;
    part_t *p = b->p;
    if (m->err) {
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (p) p->at_eof = true;
        } else if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
            char buf[256];
            rd_kafka_fatal_error(w->rk, buf, sizeof buf);
            set_fatal(w, SL_EKAFKA, "fatal Kafka error: %s", buf);
        } else {
            wlog(w, 2, "consumer: %s", rd_kafka_message_errstr(m));
        }
        return;
    }
    if (!b->live || !slot_is_fresh(b)) return;   /* stale delivery, or already applied */

    const int source = t->source;
    if (STAT_ADD(w->stats.messages, 1) == 0) STAT_SET(w->stats.first_message_us, sl_mono_ns() / 1000);
    p->counts.messages++;
    ingest_bad_t bad = b->bad;
    if (bad != INGEST_OK) {
        STAT_ADD(w->stats.bad[bad], 1);
        p->counts.bad[bad]++;
        wlog(w, 0, "%s/%d@%lld skipped: %s: %s", t->name, m->partition, (long long)m->offset,
             ingest_bad_name(bad), b->why);
        if (w->dlq) dlq_produce(w, m, bad);
    } else {
        STAT_ADD(w->stats.source_events[source], 1);
        p->counts.good++;
        if (ingest_wm_observe_is_late(&p->wm, b->rec.time_ms)) {
            STAT_ADD(w->stats.late, 1);
            p->counts.late++;
        } else {
            apply_views(w, b);
            if (w->fatal) return;   /* not applied: next_offset stays, nothing commits past it */
        }
    }
    p->next_offset = m->offset + 1;
    p->touched = true;
    p->at_eof = false;
}

/* Applies the gathered messages (stages 1-5) and destroys them. Stops at a
 * fatal error: the rest is not applied (and not committed: a fatal worker
 * commits nothing more). */
static void batch_apply(ingest_worker_t *w)
{
    size_t n = w->n_slots;
    if (n == 0) return;
    sl_buf_reset(&w->karena);
    for (size_t i = 0; i < n; i++) slot_decode(w, i);
    for (size_t i = 0; i < n; i++) {
        const bslot_t *b = &w->slots[i];
        if (!b->live) continue;
        const bview_t *bv = &w->bviews[i * w->max_views];
        for (size_t k = 0; k < b->t->n_views; k++)
            if (bv[k].match && bv[k].klen != UINT32_MAX) ingest_cache_prefetch_chain(w->cache, bv[k].hash);
    }
    /* Stage 3 only finds: a miss is loaded in stage 5, in order, so that an
     * entity is never created (nor read from the store) for an event that
     * turns out late or already applied. */
    for (size_t i = 0; i < n; i++) {
        bslot_t *b = &w->slots[i];
        if (!b->live) continue;
        bview_t *bv = &w->bviews[i * w->max_views];
        for (size_t k = 0; k < b->t->n_views; k++) {
            if (!bv[k].match || bv[k].klen == UINT32_MAX) continue;
            bv[k].e = ingest_cache_find_hashed(w->cache, bv[k].hash, b->t->views[k], b->m->partition,
                                               w->karena.data + bv[k].koff, bv[k].klen);
            if (bv[k].e) agg_entity_prefetch(w->plans[b->t->views[k]], bv[k].e->ent, 0);
        }
    }
    for (int depth = 1; depth <= 3; depth++) {
        for (size_t i = 0; i < n; i++) {
            const bslot_t *b = &w->slots[i];
            if (!b->live) continue;
            const bview_t *bv = &w->bviews[i * w->max_views];
            for (size_t k = 0; k < b->t->n_views; k++)
                if (bv[k].e) agg_entity_prefetch(w->plans[b->t->views[k]], bv[k].e->ent, depth);
        }
    }
    size_t i = 0;
    for (; i < n && !w->fatal; i++) {
        slot_apply(w, &w->slots[i]);
    }
    for (i = 0; i < n; i++) rd_kafka_message_destroy(w->slots[i].m);
    w->n_slots = 0;
}

static bool all_at_eof(ingest_worker_t *w)
{
    size_t n = 0;
    for (size_t ti = 0; ti < w->n_topics; ti++) {
        topic_ent_t *t = &w->topics[ti];
        for (size_t pi = 0; pi < t->n_parts; pi++) {
            if (!t->parts[pi].assigned) continue;
            if (!t->parts[pi].at_eof) return false;
            n++;
        }
    }
    return n > 0;
}

/* ---- setup ----------------------------------------------------------- */

static int check_fingerprints(ingest_worker_t *w, char *errstr, size_t errsize)
{
    sl_buf_t changed = SL_BUF_INIT;
    int rc = 0;
    const char *first = NULL, *fresh = NULL;
    /* Committed progress, to tell a new view on an already consumed topic
     * (it would start mid-stream, without its history) from a new one. */
    size_t n_prog = state_progress(w->st, NULL, 0);
    state_partition_progress_t *prog = n_prog ? calloc(n_prog, sizeof *prog) : NULL;
    if (prog) n_prog = state_progress(w->st, prog, n_prog);
    else n_prog = 0;
    for (size_t v = 0; v < w->schema->n_views; v++) {
        const schema_view_t *view = &w->schema->views[v];
        state_view_fp_t kind;
        uint64_t stored;
        char text[64];
        int g = state_view_fp_get(w->st, view->name, &kind, &stored, text, sizeof text);
        if (g != 0) {
            rc = SL_ESTATE;
            snprintf(errstr, errsize, "cannot read the fingerprint of view '%s': %s", view->name, sl_strerror(g));
            goto out;
        }
        if (kind == STATE_VIEW_FP_ABSENT) {
            const char *topic = w->schema->sources[view->source].topic;
            for (size_t i = 0; i < n_prog && !fresh; i++)
                if (prog[i].next_offset > 0 && strcmp(prog[i].topic, topic) == 0) fresh = view->name;
            continue;
        }
        if (kind != STATE_VIEW_FP_BUILT || stored != view->fingerprint) {
            if (!first) first = view->name;
            sl_buf_printf(&changed, "%s'%s' (stored %s, now %016llx)", changed.len ? ", " : "",
                          view->name, text, (unsigned long long)view->fingerprint);
        }
    }
    if (first) {
        rc = SL_ESCHEMA;
        snprintf(errstr, errsize,
                 "the definition of feature view %.*s changed since its state was built; "
                 "refusing to mix old and new state. Rebuild it with "
                 "`sluice backfill -c CONFIG --view %s` (once per changed view) before starting ingest",
                 (int)changed.len, (const char *)changed.data, first);
        goto out;
    }
    if (fresh) {
        rc = SL_ESCHEMA;
        snprintf(errstr, errsize,
                 "feature view '%s' is new, but the store already consumed its topic '%s': starting it "
                 "now would miss its history. Build it with `sluice backfill -c CONFIG --view %s` "
                 "(add --from TIME to start its history at a time) before starting ingest",
                 fresh, w->schema->sources[w->schema->views[schema_view_index(w->schema, fresh)].source].topic,
                 fresh);
        goto out;
    }
    for (size_t v = 0; v < w->schema->n_views; v++) {
        const schema_view_t *view = &w->schema->views[v];
        state_view_fp_t kind;
        uint64_t stored;
        if (state_view_fp_get(w->st, view->name, &kind, &stored, NULL, 0) == 0 &&
            kind != STATE_VIEW_FP_ABSENT)
            continue;
        if (state_view_fp_put(w->st, view->name, STATE_VIEW_FP_BUILT, view->fingerprint) != 0) {
            rc = SL_ESTATE;
            snprintf(errstr, errsize, "cannot record the fingerprint of view '%s'", view->name);
            goto out;
        }
        wlog(w, 1, "view '%s': new, fingerprint %016llx recorded", view->name,
             (unsigned long long)view->fingerprint);
    }
out:
    free(prog);
    sl_buf_free(&changed);
    return rc;
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr, size_t errsize)
{
    char e[256];
    if (rd_kafka_conf_set(conf, k, v, e, sizeof e) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errsize, "kafka option %s=%s: %s", k, v, e);
        return SL_EINVAL;
    }
    return 0;
}

static rd_kafka_conf_t *kafka_conf(ingest_worker_t *w, char *errstr, size_t errsize)
{
    const sl_config_t *cfg = w->cfg;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ingest_kafka_log_setup(conf);
    if (conf_set(conf, "bootstrap.servers", cfg->brokers ? cfg->brokers : "", errstr, errsize) ||
        ingest_kafka_fetch_defaults(conf, errstr, errsize))
        goto fail;
    for (size_t i = 0; i < cfg->n_kafka; i++)
        if (conf_set(conf, cfg->kafka_keys[i], cfg->kafka_values[i], errstr, errsize)) goto fail;
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

static int kafka_setup(ingest_worker_t *w, char *errstr, size_t errsize)
{
    char e[512];
    rd_kafka_conf_t *conf = kafka_conf(w, errstr, errsize);
    if (!conf) return SL_EINVAL;
    /* Forced last: exactly-once depends on them, kafka.* cannot override. */
    if (conf_set(conf, "group.id", w->cfg->group_id ? w->cfg->group_id : "sluice", errstr, errsize) ||
        conf_set(conf, "enable.auto.commit", "false", errstr, errsize) ||
        conf_set(conf, "enable.auto.offset.store", "false", errstr, errsize) ||
        conf_set(conf, "isolation.level", "read_committed", errstr, errsize) ||
        conf_set(conf, "auto.offset.reset", "earliest", errstr, errsize) ||
        conf_set(conf, "enable.partition.eof", w->opts.exit_at_eof ? "true" : "false", errstr, errsize)) {
        rd_kafka_conf_destroy(conf);
        return SL_EINVAL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, w);
    w->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    if (!w->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, errsize, "cannot create the Kafka consumer: %s", e);
        return SL_EKAFKA;
    }
    rd_kafka_poll_set_consumer(w->rk);

    if (w->cfg->dead_letter_topic && w->cfg->dead_letter_topic[0]) {
        conf = kafka_conf(w, errstr, errsize);
        if (!conf) return SL_EINVAL;
        if (conf_set(conf, "enable.idempotence", "true", errstr, errsize) ||
            conf_set(conf, "linger.ms", "5", errstr, errsize)) {
            rd_kafka_conf_destroy(conf);
            return SL_EINVAL;
        }
        rd_kafka_conf_set_dr_msg_cb(conf, dlq_dr_cb);
        rd_kafka_conf_set_opaque(conf, w);
        w->dlq = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
        if (!w->dlq) {
            rd_kafka_conf_destroy(conf);
            snprintf(errstr, errsize, "cannot create the dead-letter producer: %s", e);
            return SL_EKAFKA;
        }
    }
    return 0;
}

/* ---- snapshots -------------------------------------------------------
 *
 * Taken on the ingest thread between two commits, with no batch in flight
 * (commit_wait first), so a snapshot holds exactly the committed batches and
 * their offsets: a RocksDB checkpoint is consistent by itself, waiting only
 * keeps the snapshot's offsets as close to the live ones as possible.
 * Periodic ones every snapshot_interval (0 = off), keeping snapshot_retain;
 * requested ones (`sluice snapshot create` while this worker holds the state
 * dir) are looked for once a second: a stat() when there is none. A failed
 * snapshot is logged and counted; ingest goes on. */

#define SNAP_REQUEST_CHECK_NS 1000000000LL

static void worker_snapshots(ingest_worker_t *w, int64_t now)
{
    char err[512] = "", name[128] = "";
    int64_t interval = w->cfg->snapshot_interval_ms;
    bool request_due = now >= w->next_snap_request_ns;
    bool periodic_due = interval > 0 && now >= w->next_snapshot_ns;
    if (!request_due && !periodic_due) return;
    /* A snapshot is taken between two commits, but ingest never waits for
     * the write in flight: while it runs, the check is retried on the next
     * loop turn; the loop calls this before it hands off the next commit,
     * so it gets its turn at the latest when that write is done. */
    if (ingest_committer_busy(w->committer)) return;
    if (request_due) {
        w->next_snap_request_ns = now + SNAP_REQUEST_CHECK_NS;
        commit_wait(w);
        bool taken = false;
        int64_t t0 = sl_mono_ns();
        int rc = state_snapshot_serve_request(w->st, w->snap_dir, w->schema_fp, &taken, name,
                                              sizeof name, err, sizeof err);
        if (rc || err[0]) {
            STAT_ADD(w->stats.snapshot_errors, 1);
            wlog(w, 2, "requested snapshot failed: %s", err);
        }
        if (taken) {
            STAT_ADD(w->stats.snapshots, 1);
            STAT_SET(w->stats.snapshot_last_ms, sl_now_ms());
            wlog(w, 1, "snapshot %s taken on request in %.1f ms (in %s)", name,
                 (double)(sl_mono_ns() - t0) / 1e6, w->snap_dir);
        }
    }
    if (!periodic_due) return;
    w->next_snapshot_ns = now + interval * 1000000LL;
    commit_wait(w);
    int64_t t0 = sl_mono_ns();
    int rc = state_snapshot_periodic(w->st, w->snap_dir, w->cfg->snapshot_retain > 0 ? (int)w->cfg->snapshot_retain : 1,
                                     w->schema_fp, name, sizeof name, err, sizeof err);
    if (rc) {
        STAT_ADD(w->stats.snapshot_errors, 1);
        wlog(w, 3, "periodic snapshot failed (%s): %s; ingest goes on", sl_strerror(rc), err);
        return;
    }
    STAT_ADD(w->stats.snapshots, 1);
    STAT_SET(w->stats.snapshot_last_ms, sl_now_ms());
    wlog(w, 1, "snapshot %s taken in %.1f ms (in %s, keeping %lld)", name,
         (double)(sl_mono_ns() - t0) / 1e6, w->snap_dir, (long long)w->cfg->snapshot_retain);
}

/* "<state_dir>.snapshots" unless snapshot_dir is set; NULL without a state dir. */
static char *snapshot_dir_of(const sl_config_t *cfg)
{
    if (cfg->snapshot_dir && cfg->snapshot_dir[0]) return strdup(cfg->snapshot_dir);
    if (!cfg->state_dir || !cfg->state_dir[0]) return NULL;
    size_t n = strlen(cfg->state_dir);
    while (n > 1 && cfg->state_dir[n - 1] == '/') n--;
    char *d = malloc(n + sizeof ".snapshots");
    if (d) snprintf(d, n + sizeof ".snapshots", "%.*s.snapshots", (int)n, cfg->state_dir);
    return d;
}

static int level_of(const char *s)
{
    if (!s) return 1;
    if (!strcmp(s, "debug")) return 0;
    if (!strcmp(s, "warn")) return 2;
    if (!strcmp(s, "error")) return 3;
    return 1;
}

int ingest_worker_new(const sl_config_t *cfg, const schema_t *schema, state_store_t *st,
                      const ingest_options_t *opts, ingest_worker_t **out,
                      char *errstr, size_t errsize)
{
    int rc = SL_ENOMEM;
    ingest_worker_t *w = calloc(1, sizeof *w);
    *out = NULL;
    if (!w) return SL_ENOMEM;
    w->cfg = cfg;
    w->schema = schema;
    w->st = st;
    if (opts) w->opts = *opts;
    w->log_level = level_of(cfg->log_level);
    atomic_init(&w->stop, false);
    w->snap_dir = snapshot_dir_of(cfg);
    snprintf(w->schema_fp, sizeof w->schema_fp, "%016llx", (unsigned long long)schema->fingerprint);
    w->next_snapshot_ns = sl_mono_ns() + cfg->snapshot_interval_ms * 1000000LL;

    size_t nv = schema->n_views, ns = schema->n_sources;
    w->plans = calloc(nv ? nv : 1, sizeof *w->plans);
    w->view_topic = calloc(nv ? nv : 1, sizeof *w->view_topic);
    w->decoders = calloc((ns ? ns : 1) * INGEST_BATCH, sizeof *w->decoders);
    w->topics = calloc(ns ? ns : 1, sizeof *w->topics);
    w->stats.source_events = calloc(ns ? ns : 1, sizeof *w->stats.source_events);
    w->stats.view_events = calloc(nv ? nv : 1, sizeof *w->stats.view_events);
    w->stats.hwm = calloc(INGEST_HWM_MAX, sizeof *w->stats.hwm);
    pthread_mutex_init(&w->stats.hwm_mu, NULL);
    w->stats.n_sources = ns;
    w->stats.n_views = nv;
    w->cache = ingest_cache_new(cfg->cache_max_entities > 0 ? (size_t)cfg->cache_max_entities : 1);
    w->batches[0] = state_batch_new();
    w->batches[1] = state_batch_new();
    if (!w->plans || !w->view_topic || !w->decoders || !w->topics || !w->stats.source_events ||
        !w->stats.view_events || !w->cache || !w->batches[0] || !w->batches[1])
        goto fail;

    for (size_t v = 0; v < nv; v++) {
        w->view_topic[v] = -1;
        const schema_entity_t *ent = &schema->entities[schema->views[v].entity];
        if (ent->n_keys > sizeof w->keyvals / sizeof w->keyvals[0]) {
            rc = SL_EINVAL;
            snprintf(errstr, errsize, "entity '%s': more than 16 key components", ent->name);
            goto fail;
        }
        if ((rc = agg_plan_new(schema, (int)v, &w->plans[v], errstr, errsize)) != 0) goto fail;
    }
    /* One topic entry per source that feeds at least one view. */
    for (size_t s = 0; s < ns; s++) {
        const schema_source_t *src = &schema->sources[s];
        size_t n = 0;
        for (size_t v = 0; v < nv; v++) n += schema->views[v].source == (int)s;
        if (n == 0) continue;
        if (topic_find(w, src->topic)) {
            rc = SL_EINVAL;
            snprintf(errstr, errsize,
                     "source '%s': topic '%s' is read by another source too; one source per topic is supported",
                     src->name, src->topic);
            goto fail;
        }
        topic_ent_t *t = &w->topics[w->n_topics];
        t->name = src->topic;
        t->source = (int)s;
        if (!(t->views = calloc(n, sizeof *t->views))) { rc = SL_ENOMEM; goto fail; }
        for (size_t v = 0; v < nv; v++)
            if (schema->views[v].source == (int)s) {
                t->views[t->n_views++] = (int)v;
                w->view_topic[v] = (int)w->n_topics;
            }
        w->n_topics++;
        size_t maxb = cfg->max_message_bytes > 0 ? (size_t)cfg->max_message_bytes : 0;
        for (size_t i = 0; i < INGEST_BATCH; i++)
            if ((rc = ingest_decoder_new(schema, (int)s, maxb, &w->decoders[s * INGEST_BATCH + i],
                                         errstr, errsize)) != 0)
                goto fail;
        if (t->n_views > w->max_views) w->max_views = t->n_views;
    }
    if (!(w->bviews = calloc(INGEST_BATCH * (w->max_views ? w->max_views : 1), sizeof *w->bviews))) {
        rc = SL_ENOMEM;
        goto fail;
    }
    if (w->n_topics == 0) {
        rc = SL_EINVAL;
        snprintf(errstr, errsize, "the schema has no feature view: nothing to ingest");
        goto fail;
    }
    if ((rc = check_fingerprints(w, errstr, errsize)) != 0) goto fail;
    if ((rc = kafka_setup(w, errstr, errsize)) != 0) goto fail;
    *out = w;
    return 0;
fail:
    if (rc == SL_ENOMEM && errstr && errsize && !errstr[0]) snprintf(errstr, errsize, "out of memory");
    ingest_worker_free(w);
    return rc;
}

/* ---- run ------------------------------------------------------------- */

/* Finishes the batch in flight, if any, then stops the committer thread. */
static void commit_stop(ingest_worker_t *w)
{
    if (!w->committer) return;
    commit_wait(w);
    ingest_committer_stop(w->committer);
    w->committer = NULL;
}

/* Publishes the assigned partitions' high watermarks from what the
 * consumer learnt with its fetches (rd_kafka_get_watermark_offsets reads
 * its own records: no request, never blocks). */
static void worker_publish_hwm(ingest_worker_t *w)
{
    if (!w->stats.hwm) return;
    pthread_mutex_lock(&w->stats.hwm_mu);
    size_t n = 0;
    for (size_t t = 0; t < w->n_topics; t++)
        for (size_t pi = 0; pi < w->topics[t].n_parts && n < INGEST_HWM_MAX; pi++) {
            int64_t lo = -1, hi = -1;
            if (!w->topics[t].parts[pi].assigned ||
                rd_kafka_get_watermark_offsets(w->rk, w->topics[t].name, (int32_t)pi, &lo, &hi) || hi < 0)
                continue;
            w->stats.hwm[n++] = (ingest_hwm_t){ w->topics[t].name, (int32_t)pi, hi };
        }
    w->stats.n_hwm = n;
    pthread_mutex_unlock(&w->stats.hwm_mu);
}

int ingest_worker_run(ingest_worker_t *w, char *errstr, size_t errsize)
{
    int started = ingest_committer_start(&w->committer, "sl-commit", commit_job, w, errstr, errsize);
    if (started != 0) return started;
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new((int)w->n_topics);
    for (size_t i = 0; i < w->n_topics; i++)
        rd_kafka_topic_partition_list_add(subs, w->topics[i].name, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(w->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (err) {
        commit_stop(w);
        snprintf(errstr, errsize, "subscribe failed: %s", rd_kafka_err2str(err));
        return SL_EKAFKA;
    }
    const int64_t interval_ns = (w->cfg->commit_interval_ms > 0 ? w->cfg->commit_interval_ms : 1000) * 1000000LL;
    int64_t next_commit = sl_mono_ns() + interval_ns, next_hwm = 0;
    int64_t log_every = w->opts.progress_log_ms * 1000000LL;
    int64_t next_log = sl_mono_ns() + log_every;
    while (!atomic_load_explicit(&w->stop, RELAXED) && !w->fatal) {
        /* Gather up to INGEST_BATCH messages: wait for the first, take what
         * is already there after it; an error or EOF event ends the batch so
         * that EOF is checked right after it. A rebalance inside a poll
         * applies what was gathered (rebalance_cb). */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(w->rk, 100);
        bool check_eof = m == NULL;
        while (m) {
            w->slots[w->n_slots++].m = m;
            if (m->err) {
                check_eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
                break;
            }
            if (w->n_slots == INGEST_BATCH) break;
            m = rd_kafka_consumer_poll(w->rk, 0);
        }
        batch_apply(w);
        if (w->dlq) rd_kafka_poll(w->dlq, 0);
        int64_t now = sl_mono_ns();
        /* The interval is the shortest period between commits. A commit
         * never waits for the one in flight: while the store is still
         * writing it, events keep coming into the next, larger batch, which
         * is handed off as soon as the write is done (an entity touched
         * twice meanwhile is then encoded and written once, not twice). */
        if (w->snap_dir && !w->fatal) worker_snapshots(w, now);
        if (now >= next_hwm) {
            worker_publish_hwm(w);
            next_hwm = now + INGEST_HWM_REFRESH_MS * 1000000LL;
        }
        if (now >= next_commit && !ingest_committer_busy(w->committer)) {
            if (!w->fatal) worker_commit(w, false);
            next_commit = now + interval_ns;
        }
        if (log_every > 0 && now >= next_log) {
            wlog(w, 1, "progress: %llu messages, %llu commits, %llu late, cache %llu",
                 (unsigned long long)atomic_load(&w->stats.messages),
                 (unsigned long long)atomic_load(&w->stats.commits),
                 (unsigned long long)atomic_load(&w->stats.late),
                 (unsigned long long)atomic_load(&w->stats.cache_entries));
            next_log = now + log_every;
        }
        if (w->opts.exit_at_eof && check_eof && all_at_eof(w)) break;
    }

    int rc = 0;
    if (!w->fatal) {
        for (int attempt = 0; (rc = worker_commit(w, true)) == SL_EKAFKA && attempt < 5; attempt++)
            ;
        STAT_SET(w->stats.final_cpu_us, sl_thread_cpu_us());
        if (!rc && !w->fatal) {
            STAT_SET(w->stats.final_commit_us, sl_mono_ns() / 1000);
            atomic_store(&w->stats.final_committed, 1);
        }
    } else {
        commit_wait(w);
    }
    rd_kafka_consumer_close(w->rk);   /* runs the revoke callback: commits nothing new */
    commit_stop(w);
    if (w->dlq) rd_kafka_flush(w->dlq, 10000);
    if (w->fatal) {
        snprintf(errstr, errsize, "%s", w->fatal_msg);
        return w->fatal;
    }
    if (rc) snprintf(errstr, errsize, "final commit failed: %s", sl_strerror(rc));
    return rc;
}

void ingest_worker_stop(ingest_worker_t *w)
{
    atomic_store(&w->stop, true);
}

const ingest_stats_t *ingest_worker_stats(const ingest_worker_t *w)
{
    return &w->stats;
}

void ingest_worker_free(ingest_worker_t *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n_slots; i++) rd_kafka_message_destroy(w->slots[i].m);
    if (w->rk) rd_kafka_destroy(w->rk);
    if (w->dlq) rd_kafka_destroy(w->dlq);
    ingest_cache_free(w->cache);
    commit_stop(w);
    for (int i = 0; i < 2; i++)
        if (w->batches[i]) state_batch_free(w->batches[i]);
    if (w->job_offsets) rd_kafka_topic_partition_list_destroy(w->job_offsets);
    for (size_t v = 0; w->plans && v < w->schema->n_views; v++) agg_plan_free(w->plans[v]);
    for (size_t s = 0; w->decoders && s < w->schema->n_sources * INGEST_BATCH; s++)
        ingest_decoder_free(w->decoders[s]);
    free(w->bviews);
    sl_buf_free(&w->karena);
    for (size_t t = 0; t < w->n_topics; t++) {
        free(w->topics[t].views);
        free(w->topics[t].parts);
    }
    free(w->topics);
    free(w->plans);
    free(w->view_topic);
    free(w->decoders);
    free((void *)w->stats.source_events);
    free((void *)w->stats.view_events);
    free(w->stats.hwm);
    pthread_mutex_destroy(&w->stats.hwm_mu);
    sl_buf_free(&w->key);
    sl_buf_free(&w->enc);
    sl_buf_free(&w->lookup);
    free(w->snap_dir);
    free(w);
}

void ingest_stats_print(const ingest_stats_t *s, const schema_t *schema, FILE *f)
{
    fprintf(f, "messages %llu\n", (unsigned long long)atomic_load(&s->messages));
    for (int i = 1; i < INGEST_BAD__COUNT; i++)
        fprintf(f, "bad.%s %llu\n", ingest_bad_name((ingest_bad_t)i),
                (unsigned long long)atomic_load(&s->bad[i]));
    fprintf(f, "late %llu\n", (unsigned long long)atomic_load(&s->late));
    for (size_t i = 0; i < s->n_sources; i++)
        fprintf(f, "source.%s.events %llu\n", schema->sources[i].name,
                (unsigned long long)atomic_load(&s->source_events[i]));
    for (size_t i = 0; i < s->n_views; i++)
        fprintf(f, "view.%s.events %llu\n", schema->views[i].name,
                (unsigned long long)atomic_load(&s->view_events[i]));
    uint64_t commits = atomic_load(&s->commits);
    fprintf(f, "commits %llu\ncommit_errors %llu\n", (unsigned long long)commits,
            (unsigned long long)atomic_load(&s->commit_errors));
    fprintf(f, "commit_us_mean %llu\ncommit_us_max %llu\n",
            (unsigned long long)(commits ? atomic_load(&s->commit_us_sum) / commits : 0),
            (unsigned long long)atomic_load(&s->commit_us_max));
    fprintf(f, "committed_entities %llu\ncommit_build_us %llu\ndead_letters %llu\ndead_letter_errors %llu\n",
            (unsigned long long)atomic_load(&s->committed_entities),
            (unsigned long long)atomic_load(&s->commit_build_us),
            (unsigned long long)atomic_load(&s->dead_letters),
            (unsigned long long)atomic_load(&s->dead_letter_errors));
    uint64_t t0 = atomic_load(&s->first_message_us), t1 = atomic_load(&s->final_commit_us);
    if (t0 && t1 >= t0)   /* the work itself, without start-up, group join and close */
        fprintf(f, "seconds_first_message_to_final_commit %.3f\n", (double)(t1 - t0) / 1e6);
    fprintf(f, "cache_entries %llu\ncache_evictions %llu\nrebalances %llu\n",
            (unsigned long long)atomic_load(&s->cache_entries),
            (unsigned long long)atomic_load(&s->cache_evictions),
            (unsigned long long)atomic_load(&s->rebalances));
}
