/*
 * replay.c — the replay consumer and its progress line (contract and the
 * partition state machine in replay.h).
 *
 * Why manual assignment: a replay must read every partition of the topic
 * from a position it chose (the earliest, a timestamp, or the next offset
 * stored with a backfill's states) and must never be moved by a rebalance,
 * nor move the live worker's group. So the consumer has a private group id
 * that never joins or commits, and assigns the partitions itself.
 *
 * Never past the end, and flow control, without pause/resume: every
 * partition is assigned once, and its messages are taken from its OWN queue
 * (rd_kafka_queue_get_partition, forwarding disabled). A partition at its end
 * or held by the caller is simply not read: its fetched messages stay queued
 * in librdkafka (whose prefetch per partition is bounded by
 * queued.max.messages.kbytes, so fetching stops), and reading resumes exactly
 * where it stopped when the end is raised or the hold released. Partitions
 * are read round-robin in small batches. A position check also drops
 * anything below the position (cannot happen without seeks; kept as a
 * guard). Hence every offset below the end is returned exactly once, in
 * offset order per partition.
 *
 * Threads: one (the caller of replay_poll).
 */
#include "replay.h"
#include "kafka_log.h"

#include "sl_err.h"
#include "sl_log.h"
#include "sl_time.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct rpart {
    int64_t low, start, position, end;
    bool at_end;          /* paused because position >= end */
    bool held;            /* paused by the caller */
    rd_kafka_queue_t *q;  /* the partition's own queue */
    rd_kafka_message_t *stash;   /* a message past the end, kept for later */
    int64_t hwm;          /* last known high watermark */
} rpart_t;

struct replay {
    rd_kafka_t *rk;
    char *topic;
    char *what;
    rpart_t *parts;       /* indexed by partition id */
    size_t n_parts;
    int timeout_ms;
    bool started;
    size_t rr;            /* next partition to read (round robin) */
    rd_kafka_message_t *batch[256];
    size_t batch_n, batch_i;

    int64_t progress_ns;
    int64_t t0_ns, last_ns, last_drawn_ns;
    uint64_t messages, events;
    uint64_t last_messages, last_events;
    bool tty;
    void (*progress_fn)(void *arg, const char *line, bool final);
    void *progress_arg;
    size_t drawn_len;
};

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

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr,
                    size_t errsize)
{
    char e[256];
    if (rd_kafka_conf_set(conf, k, v, e, sizeof e) != RD_KAFKA_CONF_OK) {
        seterr(errstr, errsize, "kafka option %s=%s: %s", k, v, e);
        return SL_EINVAL;
    }
    return 0;
}

int replay_new(const sl_config_t *cfg, const replay_options_t *opts, replay_t **out,
               char *errstr, size_t errsize)
{
    int rc = SL_ENOMEM;
    char e[512], group[128];
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = NULL;
    *out = NULL;
    if (!opts || !opts->topic || !*opts->topic) {
        seterr(errstr, errsize, "replay: no topic");
        return SL_EINVAL;
    }
    replay_t *r = calloc(1, sizeof *r);
    if (!r) return SL_ENOMEM;
    r->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
    r->progress_ns = opts->progress_ms * 1000000LL;
    r->tty = isatty(2);
    r->progress_fn = opts->progress_fn;
    r->progress_arg = opts->progress_arg;
    if (r->progress_fn) r->tty = false;   /* lines go to the sink, on its period */
    if (!(r->topic = strdup(opts->topic)) ||
        !(r->what = strdup(opts->what ? opts->what : opts->topic)))
        goto fail;

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ingest_kafka_log_setup(conf);
    snprintf(group, sizeof group, "sluice-replay-%ld-%lld", (long)getpid(), (long long)sl_now_ms());
    rc = conf_set(conf, "bootstrap.servers", cfg->brokers ? cfg->brokers : "", errstr, errsize);
    if (!rc) rc = ingest_kafka_fetch_defaults(conf, errstr, errsize);
    for (size_t i = 0; !rc && i < cfg->n_kafka; i++)
        rc = conf_set(conf, cfg->kafka_keys[i], cfg->kafka_values[i], errstr, errsize);
    /* Forced: the replay owns its positions and reads what the live worker reads. */
    if (!rc) rc = conf_set(conf, "group.id", group, errstr, errsize);
    if (!rc) rc = conf_set(conf, "enable.auto.commit", "false", errstr, errsize);
    if (!rc) rc = conf_set(conf, "enable.auto.offset.store", "false", errstr, errsize);
    if (!rc) rc = conf_set(conf, "enable.partition.eof", "true", errstr, errsize);
    if (!rc) rc = conf_set(conf, "isolation.level", "read_committed", errstr, errsize);
    if (!rc) rc = conf_set(conf, "auto.offset.reset", "earliest", errstr, errsize);
    if (!rc) rc = conf_set(conf, "queued.max.messages.kbytes", "16384", errstr, errsize);
    if (rc) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    if (!r->rk) {
        rd_kafka_conf_destroy(conf);
        seterr(errstr, errsize, "cannot create the replay consumer: %s", e);
        rc = SL_EKAFKA;
        goto fail;
    }

    rkt = rd_kafka_topic_new(r->rk, r->topic, NULL);
    rd_kafka_resp_err_t err = rkt ? rd_kafka_metadata(r->rk, 0, rkt, &md, r->timeout_ms)
                                  : rd_kafka_last_error();
    if (err) {
        seterr(errstr, errsize, "metadata of topic '%s': %s", r->topic, rd_kafka_err2str(err));
        rc = SL_EKAFKA;
        goto fail;
    }
    if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= 0) {
        seterr(errstr, errsize, "topic '%s' not found%s%s", r->topic,
               md->topic_cnt == 1 && md->topics[0].err ? ": " : "",
               md->topic_cnt == 1 && md->topics[0].err ? rd_kafka_err2str(md->topics[0].err) : "");
        rc = SL_ENOTFOUND;
        goto fail;
    }
    int32_t maxp = -1;
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        if (md->topics[0].partitions[i].id > maxp) maxp = md->topics[0].partitions[i].id;
    r->n_parts = (size_t)maxp + 1;
    if (!(r->parts = calloc(r->n_parts, sizeof *r->parts))) { rc = SL_ENOMEM; goto fail; }

    for (size_t p = 0; p < r->n_parts; p++) {
        int64_t lo = 0, hi = 0;
        err = rd_kafka_query_watermark_offsets(r->rk, r->topic, (int32_t)p, &lo, &hi, r->timeout_ms);
        if (err) {
            seterr(errstr, errsize, "watermarks of %s/%zu: %s", r->topic, p, rd_kafka_err2str(err));
            rc = SL_EKAFKA;
            goto fail;
        }
        r->parts[p] = (rpart_t){ .low = lo, .start = lo, .position = lo, .end = hi, .hwm = hi };
    }
    if (opts->from_ms != REPLAY_FROM_EARLIEST) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)r->n_parts);
        for (size_t p = 0; p < r->n_parts; p++)
            rd_kafka_topic_partition_list_add(l, r->topic, (int32_t)p)->offset = opts->from_ms;
        err = rd_kafka_offsets_for_times(r->rk, l, r->timeout_ms);
        for (int i = 0; !err && i < l->cnt; i++) {
            rpart_t *rp = &r->parts[l->elems[i].partition];
            if (l->elems[i].err) { err = l->elems[i].err; break; }
            /* -1: no message at or after the time: start at the end */
            int64_t off = l->elems[i].offset < 0 ? rp->end : l->elems[i].offset;
            if (off < rp->low) off = rp->low;
            rp->start = rp->position = off;
        }
        rd_kafka_topic_partition_list_destroy(l);
        if (err) {
            seterr(errstr, errsize, "offsets for time %lld on %s: %s", (long long)opts->from_ms,
                   r->topic, rd_kafka_err2str(err));
            rc = SL_EKAFKA;
            goto fail;
        }
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    *out = r;
    return 0;
fail:
    if (md) rd_kafka_metadata_destroy(md);
    if (rkt) rd_kafka_topic_destroy(rkt);
    replay_free(r);
    return rc;
}

void replay_free(replay_t *r)
{
    if (!r) return;
    for (size_t i = r->batch_i; i < r->batch_n; i++) rd_kafka_message_destroy(r->batch[i]);
    for (size_t p = 0; p < r->n_parts && r->parts; p++) {
        if (r->parts[p].stash) rd_kafka_message_destroy(r->parts[p].stash);
        if (r->parts[p].q) rd_kafka_queue_destroy(r->parts[p].q);
    }
    if (r->rk) {
        if (r->started) rd_kafka_assign(r->rk, NULL);
        rd_kafka_consumer_close(r->rk);
        rd_kafka_destroy(r->rk);
    }
    free(r->parts);
    free(r->topic);
    free(r->what);
    free(r);
}

size_t replay_partition_count(const replay_t *r) { return r->n_parts; }

void replay_partition(const replay_t *r, size_t i, replay_part_info_t *out)
{
    const rpart_t *p = &r->parts[i];
    *out = (replay_part_info_t){ (int32_t)i, p->start, p->position, p->end, p->at_end };
}

int replay_set_start(replay_t *r, int32_t partition, int64_t offset)
{
    if (r->started || partition < 0 || (size_t)partition >= r->n_parts) return SL_EINVAL;
    if (offset < 0) return 0;
    r->parts[partition].start = r->parts[partition].position = offset;
    return 0;
}

int replay_start(replay_t *r, char *errstr, size_t errsize)
{
    /* Each partition's own queue is taken out of the consumer queue BEFORE
     * the assignment: fetching starts inside rd_kafka_assign, and a fetch
     * response that landed in the consumer queue first was never read here,
     * while the partition's EOF, delivered afterwards, moved its position
     * to the end (a small backfill --from replayed 0 of 2000 messages). */
    for (size_t p = 0; p < r->n_parts; p++) {
        r->parts[p].q = rd_kafka_queue_get_partition(r->rk, r->topic, (int32_t)p);
        if (!r->parts[p].q) {
            seterr(errstr, errsize, "no queue for %s/%zu", r->topic, p);
            return SL_EKAFKA;
        }
        rd_kafka_queue_forward(r->parts[p].q, NULL);
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)r->n_parts);
    for (size_t p = 0; p < r->n_parts; p++) {
        rpart_t *rp = &r->parts[p];
        rp->at_end = rp->position >= rp->end;
        rd_kafka_topic_partition_list_add(l, r->topic, (int32_t)p)->offset = rp->position;
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(r->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        seterr(errstr, errsize, "assign %s: %s", r->topic, rd_kafka_err2str(err));
        return SL_EKAFKA;
    }
    /* Test hook: SLUICE_TEST_REPLAY_ASSIGN_PAUSE_MS=N pauses right after the
     * assignment, while the first fetch responses arrive (tests/replay). */
    const char *pause = getenv("SLUICE_TEST_REPLAY_ASSIGN_PAUSE_MS");
    if (pause) usleep((useconds_t)(atoi(pause) * 1000));
    r->started = true;
    r->t0_ns = r->last_ns = r->last_drawn_ns = sl_mono_ns();
    return 0;
}

void replay_set_end(replay_t *r, int32_t partition, int64_t end)
{
    if (partition < 0 || (size_t)partition >= r->n_parts) return;
    rpart_t *p = &r->parts[partition];
    if (end <= p->end) return;
    p->end = end;
    if (end != INT64_MAX && end > p->hwm) p->hwm = end;
    if (p->at_end && p->position < end) p->at_end = false;
}

void replay_set_bound(replay_t *r, int32_t partition, int64_t end)
{
    if (partition < 0 || (size_t)partition >= r->n_parts) return;
    rpart_t *p = &r->parts[partition];
    if (end < p->position) end = p->position;
    p->end = end;
    p->at_end = p->position >= end;
}

int replay_refresh_ends(replay_t *r, char *errstr, size_t errsize)
{
    (void)errstr;
    (void)errsize;
    /* The cached high watermarks (updated by every fetch response): a
     * blocking query would wait behind the fetcher's long poll. */
    for (size_t p = 0; p < r->n_parts; p++) {
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(r->rk, r->topic, (int32_t)p, &lo, &hi) || hi < 0) continue;
        if (hi > r->parts[p].hwm) r->parts[p].hwm = hi;
        replay_set_end(r, (int32_t)p, hi);
    }
    return 0;
}

void replay_pause_partition(replay_t *r, int32_t partition)
{
    if (partition >= 0 && (size_t)partition < r->n_parts) r->parts[partition].held = true;
}

void replay_resume_partition(replay_t *r, int32_t partition)
{
    if (partition >= 0 && (size_t)partition < r->n_parts) r->parts[partition].held = false;
}

static void reach_end(replay_t *r, int32_t partition)
{
    r->parts[partition].at_end = true;
}

/* Refills the batch from the next readable partition (round robin), waiting
 * up to wait_ms on the first readable one when all are empty. */
static void refill(replay_t *r, int wait_ms)
{
    r->batch_n = r->batch_i = 0;
    size_t first = SIZE_MAX;
    for (size_t k = 0; k < r->n_parts; k++) {
        size_t p = (r->rr + k) % r->n_parts;
        rpart_t *rp = &r->parts[p];
        if (rp->at_end || rp->held || !rp->q) continue;
        if (first == SIZE_MAX) first = p;
        /* Only up to the end: a message past it must stay queued. */
        int64_t room = rp->end - rp->position;
        if (rp->stash) {
            if (rp->stash->offset >= rp->end) continue;
            r->batch[0] = rp->stash;
            rp->stash = NULL;
            r->batch_n = 1;
            r->rr = p + 1;
            return;
        }
        /* Near the end read one at a time: offsets may have gaps
         * (compaction, transaction markers), so at most one message past
         * the end is taken, and it is stashed. */
        size_t max = room >= 256 || rp->end == INT64_MAX ? 256 : 1;
        ssize_t n = rd_kafka_consume_batch_queue(rp->q, 0, r->batch, max);
        if (n > 0) {
            r->batch_n = (size_t)n;
            r->rr = p + 1;
            return;
        }
    }
    if (first != SIZE_MAX && wait_ms > 0) {
        ssize_t n = rd_kafka_consume_batch_queue(r->parts[first].q, wait_ms, r->batch, 1);
        if (n > 0) r->batch_n = (size_t)n;
        r->rr = first + 1;
    } else if (wait_ms > 0) {
        rd_kafka_poll(r->rk, wait_ms);   /* nothing readable: serve callbacks */
    }
}

rd_kafka_message_t *replay_poll(replay_t *r, int timeout_ms, int *fatal)
{
    int64_t deadline = sl_mono_ns() + (int64_t)timeout_ms * 1000000LL;
    for (;;) {
        if (r->batch_i >= r->batch_n) {
            int64_t left = (deadline - sl_mono_ns()) / 1000000LL;
            refill(r, left > 2 ? 2 : (int)(left > 0 ? left : 0));
            if (r->batch_n == 0) {
                if (sl_mono_ns() >= deadline) return NULL;
                continue;
            }
        }
        rd_kafka_message_t *m = r->batch[r->batch_i++];
        int32_t part = m->partition;
        rpart_t *p = part >= 0 && (size_t)part < r->n_parts ? &r->parts[part] : NULL;
        if (m->err) {
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (p && m->offset > p->position && m->offset <= p->end) p->position = m->offset;
                if (p && m->offset > p->hwm) p->hwm = m->offset;
                if (p && p->position >= p->end) reach_end(r, part);
            } else if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
                char buf[256];
                rd_kafka_fatal_error(r->rk, buf, sizeof buf);
                sl_error("replay", "fatal Kafka error: %s", buf);
                if (fatal) *fatal = SL_EKAFKA;
            } else {
                sl_warn("replay", "consumer: %s", rd_kafka_message_errstr(m));
            }
            rd_kafka_message_destroy(m);
            if (fatal && *fatal) return NULL;
            continue;
        }
        if (!p || m->offset < p->position) {    /* guard: a duplicate delivery */
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->offset >= p->end) {               /* past the end: keep for later */
            if (p->stash) rd_kafka_message_destroy(p->stash);
            p->stash = m;
            reach_end(r, part);
            continue;
        }
        p->position = m->offset + 1;
        if (p->position > p->hwm) p->hwm = p->position;
        r->messages++;
        if (p->position >= p->end) reach_end(r, part);
        return m;
    }
}

bool replay_done(const replay_t *r)
{
    for (size_t p = 0; p < r->n_parts; p++)
        if (r->parts[p].position < r->parts[p].end) return false;
    return true;
}

int64_t replay_lag(const replay_t *r)
{
    int64_t lag = 0;
    for (size_t p = 0; p < r->n_parts; p++) {
        const rpart_t *rp = &r->parts[p];
        int64_t end = rp->end == INT64_MAX ? rp->hwm : rp->end;
        if (end > rp->position) lag += end - rp->position;
    }
    return lag;
}

void replay_count_events(replay_t *r, uint64_t n) { r->events += n; }
uint64_t replay_messages(const replay_t *r) { return r->messages; }

double replay_elapsed_s(const replay_t *r)
{
    return r->t0_ns ? (double)(sl_mono_ns() - r->t0_ns) / 1e9 : 0.0;
}

const char *replay_human(double v, char *buf, size_t size)
{
    if (v >= 1e9) snprintf(buf, size, "%.2fG", v / 1e9);
    else if (v >= 1e6) snprintf(buf, size, "%.2fM", v / 1e6);
    else if (v >= 1e4) snprintf(buf, size, "%.1fk", v / 1e3);
    else snprintf(buf, size, "%.0f", v);
    return buf;
}

static void fmt_eta(double s, char *buf, size_t size)
{
    if (s < 0 || s > 1e7) { snprintf(buf, size, "?"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

void replay_progress(replay_t *r, bool force, bool final)
{
    if (r->progress_ns <= 0 && !final) return;
    int64_t now = sl_mono_ns();
    int64_t period = r->tty ? (r->progress_ns < 250000000LL ? r->progress_ns : 250000000LL)
                            : r->progress_ns;
    if (!force && !final && now - r->last_drawn_ns < period) return;
    if (r->progress_ns <= 0 && final && !r->tty && !r->progress_fn) return;

    int64_t done = 0, total = 0;
    char parts[512];
    size_t pl = 0;
    parts[0] = '\0';
    for (size_t p = 0; p < r->n_parts; p++) {
        const rpart_t *rp = &r->parts[p];
        int64_t end = rp->end == INT64_MAX ? rp->hwm : rp->end;
        int64_t t = end > rp->start ? end - rp->start : 0;
        int64_t d = rp->position > rp->start ? rp->position - rp->start : 0;
        if (d > t) d = t;
        done += d;
        total += t;
        if (pl < sizeof parts - 32) {
            int n = snprintf(parts + pl, sizeof parts - pl, " p%zu=%.0f%%", p,
                             t ? 100.0 * (double)d / (double)t : 100.0);
            if (n > 0) pl += (size_t)n;
        }
    }
    double dt = (double)(now - r->last_ns) / 1e9, all = (double)(now - r->t0_ns) / 1e9;
    double mrate = dt > 0 ? (double)(r->messages - r->last_messages) / dt : 0;
    double erate_all = all > 0 ? (double)r->events / all : 0;
    double mrate_all = all > 0 ? (double)r->messages / all : 0;
    double rate = final ? mrate_all : (mrate > 0 ? mrate : mrate_all);
    char a[16], b[16], c[16], d[16], eta[24];
    fmt_eta(rate > 0 ? (double)(total - done) / rate : -1, eta, sizeof eta);
    char line[1024];
    snprintf(line, sizeof line, "%s: %.1f%% %s/%s offsets, %s msg/s, %s events/s, ETA %s |%s",
             r->what, total ? 100.0 * (double)done / (double)total : 100.0,
             replay_human((double)done, a, sizeof a), replay_human((double)total, b, sizeof b),
             replay_human(final ? mrate_all : rate, c, sizeof c),
             replay_human(erate_all, d, sizeof d), final ? "0:00" : eta, parts);
    if (r->progress_fn) {
        r->progress_fn(r->progress_arg, line, final);
    } else if (r->tty) {
        /* One line redrawn in place; cut to the terminal-friendly width. */
        fprintf(stderr, "\r\033[K%.*s%s", 160, line, final ? "\n" : "");
        fflush(stderr);
    } else {
        sl_info("replay", "%s", line);
    }
    r->last_drawn_ns = now;
    if (dt >= 1.0 || final) {
        r->last_ns = now;
        r->last_messages = r->messages;
        r->last_events = r->events;
    }
}
