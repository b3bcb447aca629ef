/*
 * ingest_stream.c — generator, producer and oracle for the ingest
 * integration tests (see ingest_stream.h). The oracle is a direct recompute:
 * per partition in offset order, classify by the generator's own record of
 * what it wrote, apply the watermark rule of docs (max - delay - lateness),
 * and fold lifetime count/sum/min/max into plain arrays.
 */
#define _GNU_SOURCE
#include "ingest_stream.h"

#include "agg.h"
#include "entity_key.h"
#include "schema.h"
#include "sl_err.h"

#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const STREAM_SCHEMA_FMT =
    "version: 1\n"
    "entities:\n"
    "  - {name: user, keys: [user], key_type: string}\n"
    "  - name: route\n"
    "    keys: [{name: region, type: string}, {name: shard, type: int}]\n"
    "sources:\n"
    "  - name: events\n"
    "    topic: %s\n"
    "    format: json\n"
    "    fields: {user: string, region: string, shard: int, amount: double, note: string, ts: int}\n"
    "    event_time: {field: ts, format: epoch_ms}\n"
    "    watermark_delay: 1s\n"
    "    allowed_lateness: 2s\n"
    "feature_views:\n"
    "  - name: user_stats\n"
    "    entity: user\n"
    "    source: events\n"
    "    features:\n"
    "      - {name: n, aggregate: count, window: lifetime}\n"
    "      - {name: total, aggregate: sum, field: amount, window: lifetime}\n"
    "      - {name: biggest, aggregate: max, field: amount, window: lifetime}\n"
    "      - {name: smallest, aggregate: min, field: amount, window: lifetime}\n"
    "  - name: route_stats\n"
    "    entity: route\n"
    "    source: events\n"
    "    filter: {field: amount, op: gt, value: 50}\n"
    "    features:\n"
    "      - {name: n, aggregate: count, window: lifetime}\n"
    "      - {name: total, aggregate: sum, field: amount, window: lifetime}\n";

#define N_REGIONS 3
#define N_SHARDS 4
static const char *const regions[N_REGIONS] = { "eu", "us", "ap" };

static uint64_t rnd(stream_t *s)
{
    /* xorshift64* */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 2685821657736338717ULL;
}

void stream_init(stream_t *s, int partitions, size_t n_users, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->partitions = partitions;
    s->n_users = n_users;
    s->rng = seed ? seed : 88172645463325252ULL;
    s->next_ts = 1700000000000LL;
}

void stream_free(stream_t *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->m[i].payload);
    free(s->m);
    memset(s, 0, sizeof *s);
}

static char *xasprintf(size_t *len, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *xasprintf(size_t *len, const char *fmt, ...)
{
    va_list ap;
    char *p = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (n < 0) abort();
    *len = (size_t)n;
    return p;
}

void stream_generate(stream_t *s, size_t n, int bad_per_1000)
{
    if (s->n + n > s->cap) {
        s->cap = (s->n + n) * 2;
        s->m = realloc(s->m, s->cap * sizeof *s->m);
        if (!s->m) abort();
    }
    for (size_t k = 0; k < n; k++) {
        stream_msg_t *m = &s->m[s->n++];
        memset(m, 0, sizeof *m);
        m->user = (int)(rnd(s) % s->n_users);
        m->region = (int)(rnd(s) % N_REGIONS);
        m->shard = (int)(rnd(s) % N_SHARDS);
        m->amount = 1 + (int64_t)(rnd(s) % 100);
        s->next_ts += 5;
        int64_t jitter = (int64_t)(rnd(s) % 4001) - 2000;       /* out of order */
        m->ts = s->next_ts + jitter;
        if (rnd(s) % 100 == 0) m->ts -= 20000;                     /* clearly late */
        /* Users map to partitions as a keyed producer would. */
        m->partition = (int32_t)((uint32_t)(m->user * 2654435761u) % (uint32_t)s->partitions);
        snprintf(m->key, sizeof m->key, "u%d", m->user);

        m->kind = INGEST_OK;
        if (bad_per_1000 > 0 && (int)(rnd(s) % 1000) < bad_per_1000)
            m->kind = (ingest_bad_t)(1 + rnd(s) % (INGEST_BAD__COUNT - 1));
        switch (m->kind) {
        case INGEST_OK:
            m->payload = xasprintf(&m->len,
                "{\"user\":\"u%d\",\"region\":\"%s\",\"shard\":%d,\"amount\":%lld,\"ts\":%lld,\"note\":\"n%zu\"}",
                m->user, regions[m->region], m->shard, (long long)m->amount, (long long)m->ts, s->n);
            break;
        case INGEST_BAD_MALFORMED:
            m->payload = xasprintf(&m->len, "{\"user\":\"u%d\",\"ts\":%lld", m->user, (long long)m->ts);
            break;
        case INGEST_BAD_MISSING_FIELD:
            m->payload = xasprintf(&m->len, "{\"region\":\"eu\",\"shard\":1,\"amount\":3,\"ts\":%lld}",
                                   (long long)m->ts);
            break;
        case INGEST_BAD_TYPE_MISMATCH:
            m->payload = xasprintf(&m->len,
                "{\"user\":\"u%d\",\"region\":\"eu\",\"shard\":1,\"amount\":\"lots\",\"ts\":%lld}",
                m->user, (long long)m->ts);
            break;
        case INGEST_BAD_BAD_TIMESTAMP:
            m->payload = xasprintf(&m->len,
                "{\"user\":\"u%d\",\"region\":\"eu\",\"shard\":1,\"amount\":3,\"ts\":\"noon\"}", m->user);
            break;
        case INGEST_BAD_OVERSIZED: {
            char pad[STREAM_MAX_BYTES + 64];
            memset(pad, 'x', sizeof pad - 1);
            pad[sizeof pad - 1] = '\0';
            m->payload = xasprintf(&m->len,
                "{\"user\":\"u%d\",\"region\":\"eu\",\"shard\":1,\"amount\":3,\"ts\":%lld,\"note\":\"%s\"}",
                m->user, (long long)m->ts, pad);
            break;
        }
        case INGEST_BAD_TOMBSTONE:
        default:
            m->payload = NULL;
            m->len = 0;
            break;
        }
    }
}

size_t stream_find(const stream_t *s, int32_t partition, int64_t offset)
{
    int64_t off = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->m[i].partition != partition) continue;
        if (off++ == offset) return i;
    }
    return (size_t)-1;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    if (m->err) (*(int *)opaque)++;
}

int stream_produce(const stream_t *s, size_t from, size_t to, const char *bootstrap,
                   const char *topic, char *errstr, size_t errsize)
{
    char e[512];
    int failed = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof e) ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", e, sizeof e) ||
        rd_kafka_conf_set(conf, "linger.ms", "20", e, sizeof e) ||
        rd_kafka_conf_set(conf, "batch.size", "1000000", e, sizeof e) ||
        rd_kafka_conf_set(conf, "message.max.bytes", "1000000", e, sizeof e)) {
        snprintf(errstr, errsize, "producer conf: %s", e);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, &failed);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
    if (!rk) {
        snprintf(errstr, errsize, "producer: %s", e);
        return -1;
    }
    for (size_t i = from; i < to; i++) {
        const stream_msg_t *m = &s->m[i];
        for (;;) {
            rd_kafka_resp_err_t err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                RD_KAFKA_V_PARTITION(m->partition), RD_KAFKA_V_KEY(m->key, strlen(m->key)),
                RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_END);
            if (!err) break;
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                snprintf(errstr, errsize, "produce: %s", rd_kafka_err2str(err));
                rd_kafka_destroy(rk);
                return -1;
            }
            rd_kafka_poll(rk, 50);
        }
        if ((i & 1023) == 0) rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 120000);
    int left = rd_kafka_outq_len(rk);
    rd_kafka_destroy(rk);
    if (left || failed) {
        snprintf(errstr, errsize, "produce: %d undelivered, %d failed", left, failed);
        return -1;
    }
    return 0;
}

/* ---- oracle ---------------------------------------------------------- */

typedef struct oent {
    int32_t partition;
    int64_t n;
    double sum, max, min;
    bool seen;
} oent_t;

static double num(const agg_value_t *v)
{
    if (v->type == AGG_VAL_INT) return (double)v->i;
    if (v->type == AGG_VAL_DOUBLE) return v->d;
    return -1e300;
}

typedef struct count_arg { size_t n; } count_arg_t;
static int count_cb(void *arg, int32_t partition, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)partition; (void)key; (void)klen; (void)val; (void)vlen;
    ((count_arg_t *)arg)->n++;
    return 0;
}

#define MISMATCH(...) do { if (bad++ < 10) { fprintf(stderr, "oracle mismatch: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

static size_t check_entity(const agg_plan_t *plan, state_store_t *st, const char *view, int32_t partition,
                           const void *key, size_t klen, const oent_t *o, int n_features,
                           const char *label, bool check_index)
{
    size_t bad = 0;
    sl_buf_t b = SL_BUF_INIT;
    agg_entity_t *ent = NULL;
    int rc = state_lookup(st, view, partition, key, klen, &b);
    if (rc != 0) {
        MISMATCH("%s %s p%d: lookup %s", view, label, partition, sl_errname(rc));
        goto out;
    }
    /* The store's entity index finds the same row without the partition
     * (for entities that live in one partition only). */
    if (check_index) {
        sl_buf_t b2 = SL_BUF_INIT;
        rc = state_lookup(st, view, -1, key, klen, &b2);
        if (rc != 0 || b2.len != b.len || memcmp(b2.data, b.data, b.len) != 0)
            MISMATCH("%s %s p%d: lookup without partition: %s", view, label, partition, sl_errname(rc));
        sl_buf_free(&b2);
    }
    if ((rc = agg_entity_decode(plan, b.data, b.len, &ent)) != 0) {
        MISMATCH("%s %s: decode %s", view, label, sl_errname(rc));
        goto out;
    }
    agg_value_t v[8];
    agg_entity_query(plan, ent, INT64_C(4000000000000), v);
    if (num(&v[0]) != (double)o->n) MISMATCH("%s %s p%d: count %g want %lld", view, label, partition, num(&v[0]), (long long)o->n);
    if (num(&v[1]) != o->sum) MISMATCH("%s %s p%d: sum %g want %g", view, label, partition, num(&v[1]), o->sum);
    if (n_features > 2 && num(&v[2]) != o->max) MISMATCH("%s %s p%d: max %g want %g", view, label, partition, num(&v[2]), o->max);
    if (n_features > 3 && num(&v[3]) != o->min) MISMATCH("%s %s p%d: min %g want %g", view, label, partition, num(&v[3]), o->min);
out:
    agg_entity_free(ent);
    sl_buf_free(&b);
    return bad;
}

static void fold(oent_t *o, int32_t partition, int64_t amount)
{
    double a = (double)amount;
    if (!o->seen) { o->seen = true; o->partition = partition; o->max = a; o->min = a; }
    o->n++;
    o->sum += a;
    if (a > o->max) o->max = a;
    if (a < o->min) o->min = a;
}

size_t stream_check(const stream_t *s, size_t upto, const schema_t *schema, state_store_t *st,
                    const char *topic, uint64_t bad_out[INGEST_BAD__COUNT], uint64_t *late_out)
{
    size_t bad = 0;
    const int P = s->partitions;
    oent_t *users = calloc(s->n_users, sizeof *users);
    oent_t *routes = calloc((size_t)P * N_REGIONS * N_SHARDS, sizeof *routes);
    ingest_counts_t *want = calloc((size_t)P, sizeof *want);
    int64_t *maxev = malloc((size_t)P * sizeof *maxev);
    for (int p = 0; p < P; p++) maxev[p] = INT64_MIN;
    if (bad_out) memset(bad_out, 0, INGEST_BAD__COUNT * sizeof *bad_out);
    if (late_out) *late_out = 0;

    for (size_t i = 0; i < upto; i++) {
        const stream_msg_t *m = &s->m[i];
        ingest_counts_t *c = &want[m->partition];
        c->messages++;
        if (m->kind != INGEST_OK) {
            c->bad[m->kind]++;
            if (bad_out) bad_out[m->kind]++;
            continue;
        }
        c->good++;
        if (m->ts > maxev[m->partition]) maxev[m->partition] = m->ts;
        if (m->ts < maxev[m->partition] - STREAM_DELAY_MS - STREAM_LATENESS_MS) {
            c->late++;
            if (late_out) (*late_out)++;
            continue;
        }
        fold(&users[m->user], m->partition, m->amount);
        if (m->amount > 50)
            fold(&routes[((size_t)m->partition * N_REGIONS + (size_t)m->region) * N_SHARDS + (size_t)m->shard],
                 m->partition, m->amount);
    }

    int vu = schema_view_index(schema, "user_stats"), vr = schema_view_index(schema, "route_stats");
    agg_plan_t *pu = NULL, *pr = NULL;
    char err[256];
    if (agg_plan_new(schema, vu, &pu, err, sizeof err) || agg_plan_new(schema, vr, &pr, err, sizeof err)) {
        MISMATCH("agg_plan_new: %s", err);
        goto out;
    }
    size_t n_users = 0, n_routes = 0;
    for (size_t u = 0; u < s->n_users; u++) {
        if (!users[u].seen) continue;
        n_users++;
        char key[24], label[32];
        snprintf(key, sizeof key, "u%zu", u);
        snprintf(label, sizeof label, "user %s", key);
        bad += check_entity(pu, st, "user_stats", users[u].partition, key, strlen(key), &users[u], 4, label, true);
    }
    const schema_entity_t *route = &schema->entities[schema->views[vr].entity];
    for (int p = 0; p < P; p++)
        for (int r = 0; r < N_REGIONS; r++)
            for (int sh = 0; sh < N_SHARDS; sh++) {
                oent_t *o = &routes[((size_t)p * N_REGIONS + (size_t)r) * N_SHARDS + (size_t)sh];
                if (!o->seen) continue;
                n_routes++;
                char shard[8], label[32];
                snprintf(shard, sizeof shard, "%d", sh);
                const char *parts[2] = { regions[r], shard };
                size_t lens[2] = { strlen(regions[r]), strlen(shard) };
                sl_buf_t k = SL_BUF_INIT;
                if (ingest_key_from_text(&k, route, parts, lens, 2) != 0) abort();
                snprintf(label, sizeof label, "route %s|%s", regions[r], shard);
                bad += check_entity(pr, st, "route_stats", p, k.data, k.len, o, 2, label, false);
                sl_buf_free(&k);
            }
    /* No entity beyond the oracle's. */
    count_arg_t cu = { 0 }, cr = { 0 };
    state_iterate(st, "user_stats", 0, -1, count_cb, &cu);
    state_iterate(st, "route_stats", 0, -1, count_cb, &cr);
    if (cu.n != n_users) MISMATCH("user_stats: %zu entities stored, oracle %zu", cu.n, n_users);
    if (cr.n != n_routes) MISMATCH("route_stats: %zu entities stored, oracle %zu", cr.n, n_routes);
    /* Persisted counters, exact per partition. */
    for (int p = 0; p < P; p++) {
        ingest_counts_t got;
        int rc = ingest_counts_load(st, topic, p, &got);
        if (rc != 0 && want[p].messages) { MISMATCH("counts p%d: %s", p, sl_errname(rc)); continue; }
        if (got.messages != want[p].messages || got.good != want[p].good || got.late != want[p].late)
            MISMATCH("counts p%d: messages %llu/%llu good %llu/%llu late %llu/%llu", p,
                     (unsigned long long)got.messages, (unsigned long long)want[p].messages,
                     (unsigned long long)got.good, (unsigned long long)want[p].good,
                     (unsigned long long)got.late, (unsigned long long)want[p].late);
        for (int r = 1; r < INGEST_BAD__COUNT; r++)
            if (got.bad[r] != want[p].bad[r])
                MISMATCH("counts p%d: bad.%s %llu want %llu", p, ingest_bad_name((ingest_bad_t)r),
                         (unsigned long long)got.bad[r], (unsigned long long)want[p].bad[r]);
        int64_t next = -1, wm = 0;
        int64_t n_part = (int64_t)want[p].messages;
        if (n_part && (state_offset_get(st, topic, p, &next, &wm) != 0 || next != n_part))
            MISMATCH("progress p%d: next_offset %lld want %lld", p, (long long)next, (long long)n_part);
    }
out:
    agg_plan_free(pu);
    agg_plan_free(pr);
    free(users);
    free(routes);
    free(want);
    free(maxev);
    return bad;
}
