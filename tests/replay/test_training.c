/*
 * test_training.c — `training-set` against a brute-force oracle on the real
 * broker, plus the CSV reader and label-file errors (no broker needed).
 *
 * The oracle never touches the aggregates engine or the decoder: it walks
 * the generator's own record of what it produced (tests/ingest/ingest_stream),
 * per partition in offset order, applies the documented lateness rule
 * (late when ts < max_seen - delay - lateness), and for every label filters
 * the accepted events of the label's entity by time <= ts, then folds count,
 * sum, max, min (lifetime) and a 10 s / 1 s sliding count whose window is
 * the W tiles ending at the tile of ts: times in [(floor(ts/1s)-9)*1s, ts].
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "csv.h"
#include "ingest_stream.h"
#include "schema.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_log.h"
#include "sl_test_kafka.h"
#include "training.h"

static const char *const SCHEMA_FMT =
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
    "  - name: events2\n"
    "    topic: %s\n"
    "    format: json\n"
    "    fields: {user: string, amount: double, ts: int}\n"
    "    event_time: {field: ts, format: epoch_ms}\n"
    "    watermark_delay: 1s\n"
    "    allowed_lateness: 2s\n"
    "feature_views:\n"
    "  - name: user_copy\n"
    "    entity: user\n"
    "    source: events2\n"
    "    features:\n"
    "      - {name: n, aggregate: count, window: lifetime}\n"
    "  - name: user_stats\n"
    "    entity: user\n"
    "    source: events\n"
    "    features:\n"
    "      - {name: n, aggregate: count, window: lifetime}\n"
    "      - {name: total, aggregate: sum, field: amount, window: lifetime}\n"
    "      - {name: biggest, aggregate: max, field: amount, window: lifetime}\n"
    "      - {name: smallest, aggregate: min, field: amount, window: lifetime}\n"
    "      - {name: n10s, aggregate: count, window: {sliding: 10s, hop: 1s}}\n"
    "  - name: route_stats\n"
    "    entity: route\n"
    "    source: events\n"
    "    filter: {field: amount, op: gt, value: 50}\n"
    "    features:\n"
    "      - {name: n, aggregate: count, window: lifetime}\n"
    "      - {name: total, aggregate: sum, field: amount, window: lifetime}\n"
    "feature_services:\n"
    "  - name: model\n"
    "    features: [user_stats:n, user_stats:total, user_stats:biggest, user_stats:smallest,\n"
    "               user_stats:n10s, route_stats:n, route_stats:total, user_copy:n]\n";

static const char *const regions[3] = { "eu", "us", "ap" };

typedef struct label { int user, region, shard; int64_t ts; } label_t;

/* Accepted events, per the documented rule, from the generator's record. */
static bool *oracle_accept(const stream_t *s)
{
    bool *acc = calloc(s->n, sizeof *acc);
    int64_t maxseen[64];
    for (int p = 0; p < 64; p++) maxseen[p] = INT64_MIN;
    for (size_t i = 0; i < s->n; i++) {
        const stream_msg_t *m = &s->m[i];
        if (m->kind != INGEST_OK) continue;
        if (m->ts > maxseen[m->partition]) maxseen[m->partition] = m->ts;
        acc[i] = m->ts >= maxseen[m->partition] - STREAM_DELAY_MS - STREAM_LATENESS_MS;
    }
    return acc;
}

static int64_t floor_div(int64_t a, int64_t b) { int64_t q = a / b; return (a % b && (a < 0) != (b < 0)) ? q - 1 : q; }

static void fmt_num(char *out, size_t size, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) snprintf(out, size, "%lld", (long long)v);
    else snprintf(out, size, "%.17g", v);
}

/* Expected cells for one label, comma-joined. */
static void oracle_row(const stream_t *s, const bool *acc, const label_t *l, char *out, size_t size)
{
    int64_t n = 0, rn = 0, n10 = 0;
    double sum = 0, mx = -INFINITY, mn = INFINITY, rsum = 0;
    int64_t lo = (floor_div(l->ts, 1000) - 9) * 1000;
    for (size_t i = 0; i < s->n; i++) {
        const stream_msg_t *m = &s->m[i];
        if (!acc[i] || m->ts > l->ts) continue;
        if (m->user == l->user) {
            n++;
            sum += (double)m->amount;
            if (m->amount > mx) mx = (double)m->amount;
            if (m->amount < mn) mn = (double)m->amount;
            if (m->ts >= lo) n10++;
        }
        if (m->region == l->region && m->shard == l->shard && m->amount > 50) {
            rn++;
            rsum += (double)m->amount;
        }
    }
    char a[40], b[40], c[40], d[40];
    if (n) {
        fmt_num(a, sizeof a, sum); fmt_num(b, sizeof b, mx); fmt_num(c, sizeof c, mn);
        snprintf(out, size, "%lld,%s,%s,%s,%lld", (long long)n, a, b, c, (long long)n10);
    } else {
        snprintf(out, size, ",,,,");
    }
    size_t len = strlen(out);
    if (rn) {
        fmt_num(d, sizeof d, rsum);
        snprintf(out + len, size - len, ",%lld,%s", (long long)rn, d);
    } else {
        snprintf(out + len, size - len, ",,");
    }
    len = strlen(out);
    if (n) snprintf(out + len, size - len, ",%lld", (long long)n);
    else snprintf(out + len, size - len, ",");
}

typedef struct env {
    char bootstrap[256], topic[128], topic2[128], dir[256];
    sl_config_t cfg;
    schema_t *schema;
    stream_t s;
} env_t;

static void env_init(env_t *e, int partitions, size_t users, size_t events)
{
    char err[512];
    memset(e, 0, sizeof *e);
    sl_log_set(SL_LOG_WARN, false);
    cr_assert_eq(sl_test_kafka_bootstrap(e->bootstrap, sizeof e->bootstrap, err, sizeof err), 0, "%s", err);
    sl_test_kafka_name(e->topic, sizeof e->topic, "training");
    cr_assert_eq(sl_test_kafka_topic_create(e->bootstrap, e->topic, partitions, 30000, err, sizeof err), 0, "%s", err);
    /* A second topic with the same stream: a second replay pass whose
     * answers land in the same rows (user_copy.n must equal user_stats.n). */
    sl_test_kafka_name(e->topic2, sizeof e->topic2, "training2");
    cr_assert_eq(sl_test_kafka_topic_create(e->bootstrap, e->topic2, partitions, 30000, err, sizeof err), 0, "%s", err);
    snprintf(e->dir, sizeof e->dir, "/tmp/sluice-training-XXXXXX");
    cr_assert_not_null(mkdtemp(e->dir));
    sl_config_defaults(&e->cfg);
    char set[512];
    snprintf(set, sizeof set, "brokers=%s", e->bootstrap);
    cr_assert_eq(sl_config_set(&e->cfg, set, err, sizeof err), 0, "%s", err);
    snprintf(set, sizeof set, "max_message_bytes=%d", STREAM_MAX_BYTES);
    cr_assert_eq(sl_config_set(&e->cfg, set, err, sizeof err), 0, "%s", err);
    char yaml[4096];
    snprintf(yaml, sizeof yaml, SCHEMA_FMT, e->topic, e->topic2);
    cr_assert_eq(schema_load_string("t.yaml", yaml, strlen(yaml), &e->schema, err, sizeof err), 0, "%s", err);
    stream_init(&e->s, partitions, users, 777);
    stream_generate(&e->s, events, 10);
    cr_assert_eq(stream_produce(&e->s, 0, e->s.n, e->bootstrap, e->topic, err, sizeof err), 0, "%s", err);
    cr_assert_eq(stream_produce(&e->s, 0, e->s.n, e->bootstrap, e->topic2, err, sizeof err), 0, "%s", err);
}

static void env_free(env_t *e)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    if (system(cmd)) { /* best effort */ }
    stream_free(&e->s);
    schema_free(e->schema);
    sl_config_free(&e->cfg);
}

static uint64_t rng = 99;
static uint64_t rnd(void) { rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27; return rng * 2685821657736338717ULL; }

/* Labels: random entities (some unknown), random times over the stream and
 * beyond both ends, and many exactly at an event's time (ties: included).
 * few: only users u0-u2 and the routes eu/0 and eu/1. */
static label_t *make_labels_of(const stream_t *s, size_t n, const char *path, bool rfc3339, bool few)
{
    label_t *ls = calloc(n, sizeof *ls);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    int64_t t0 = s->m[0].ts - 5000, span = s->m[s->n - 1].ts + 10000 - t0;
    fprintf(f, rfc3339 ? "user,region,shard,when,y\r\n" : "user,region,shard,timestamp,y\n");
    for (size_t i = 0; i < n; i++) {
        label_t *l = &ls[i];
        l->user = (int)(rnd() % (s->n_users + 5));      /* a few users never seen */
        l->region = (int)(rnd() % 3);
        l->shard = (int)(rnd() % 4);
        if (rnd() % 4 == 0) {
            const stream_msg_t *m = &s->m[rnd() % s->n];
            l->ts = m->ts + (int64_t)(rnd() % 3) - 1;    /* at, just before, just after */
            l->user = m->user;
        } else {
            l->ts = t0 + (int64_t)(rnd() % (uint64_t)span);
        }
        if (few) {
            l->user %= 3;
            l->region = 0;
            l->shard %= 2;
        }
        if (rfc3339) {
            time_t sec = (time_t)(l->ts / 1000);
            struct tm tm;
            gmtime_r(&sec, &tm);
            char buf[64];
            strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
            fprintf(f, "u%d,%s,%d,%s.%03lldZ,\"a,\"\"b\"\"\"\r\n", l->user, regions[l->region], l->shard, buf,
                    (long long)(l->ts % 1000));
        } else {
            fprintf(f, "u%d,%s,%d,%lld,%zu\n", l->user, regions[l->region], l->shard, (long long)l->ts, i % 2);
        }
    }
    fclose(f);
    return ls;
}

static label_t *make_labels(const stream_t *s, size_t n, const char *path, bool rfc3339)
{
    return make_labels_of(s, n, path, rfc3339, false);
}

/* Distinct users and routes the labels name: the entity states a pass may
 * hold at once (only labelled entities get one). */
static uint64_t labelled_entities(const label_t *ls, size_t n)
{
    uint64_t users = 0, routes = 0;
    char seen_u[4096] = { 0 }, seen_r[3 * 64] = { 0 };
    for (size_t i = 0; i < n; i++) {
        cr_assert_lt(ls[i].user, 4096);
        cr_assert_lt(ls[i].shard, 64);
        if (!seen_u[ls[i].user]++) users++;
        if (!seen_r[ls[i].region * 64 + ls[i].shard]++) routes++;
    }
    return users + routes;
}

static void check_output(const env_t *e, const label_t *ls, size_t n, const char *out, bool rfc3339)
{
    bool *acc = oracle_accept(&e->s);
    csv_reader_t *r;
    char err[256];
    cr_assert_eq(csv_reader_open(out, &r, err, sizeof err), 0, "%s", err);
    cr_assert_eq(csv_read_row(r, err, sizeof err), 13, "header");
    size_t len;
    cr_assert_str_eq(csv_field(r, 5, &len), "user_stats.n");
    cr_assert_str_eq(csv_field(r, 11, &len), "route_stats.total");
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(csv_read_row(r, err, sizeof err), 13, "row %zu: %s", i, err);
        char want[512], got[512] = "";
        oracle_row(&e->s, acc, &ls[i], want, sizeof want);
        size_t gl = 0;
        for (size_t c = 5; c < 13; c++) {
            const char *f = csv_field(r, c, &len);
            gl += (size_t)snprintf(got + gl, sizeof got - gl, "%s%s", c > 5 ? "," : "", f);
        }
        char user[32];
        snprintf(user, sizeof user, "u%d", ls[i].user);
        cr_assert_str_eq(csv_field(r, 0, &len), user, "row %zu keeps its key", i);
        if (rfc3339) cr_assert_str_eq(csv_field(r, 4, &len), "a,\"b\"", "row %zu keeps quoted text", i);
        if (strcmp(want, got) != 0 && bad++ < 10)
            fprintf(stderr, "row %zu (u%d %s/%d @%lld): want %s got %s\n", i, ls[i].user,
                    regions[ls[i].region], ls[i].shard, (long long)ls[i].ts, want, got);
    }
    cr_assert_eq(csv_read_row(r, err, sizeof err), 0, "no extra rows");
    cr_assert_eq(bad, 0, "%zu of %zu rows differ from the oracle", bad, n);
    csv_reader_free(r);
    free(acc);
}

Test(training, matches_brute_force_oracle, .timeout = 120)
{
    env_t e;
    env_init(&e, 3, 60, 30000);
    char labels[400], out[400];
    snprintf(labels, sizeof labels, "%s/labels.csv", e.dir);
    snprintf(out, sizeof out, "%s/out.csv", e.dir);
    size_t n = 3000;
    label_t *ls = make_labels(&e.s, n, labels, false);
    training_options_t o = { .service = "model", .labels_path = labels, .out_path = out };
    training_stats_t st;
    char err[1024];
    cr_assert_eq(training_set_run(&e.cfg, e.schema, &o, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(st.labels, n);
    cr_assert_eq(st.messages, 2 * e.s.n, "every message of both topics read once");
    check_output(&e, ls, n, out, false);
    cr_assert_leq(st.entities, labelled_entities(ls, n), "states only for labelled entities");

    /* A tiny reorder buffer forces the flow control: the same answers, byte
     * for byte (ties in event time leave in a fixed order). */
    char first[400];
    snprintf(first, sizeof first, "%s/first.csv", e.dir);
    cr_assert_eq(rename(out, first), 0);
    o.max_buffered_events = 50;
    cr_assert_eq(training_set_run(&e.cfg, e.schema, &o, &st, err, sizeof err), 0, "%s", err);
    cr_assert_leq(st.buffered_max, 50 + 5000, "buffer stays near its cap (plus one fetch)");
    check_output(&e, ls, n, out, false);
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", first, out);
    cr_assert_eq(system(cmd), 0, "output depends on the buffer size");

    /* RFC 3339 times in a custom column, CRLF rows, quoted fields. */
    ls = (free(ls), make_labels(&e.s, 500, labels, true));
    o.time_column = "when";
    o.max_buffered_events = 0;
    cr_assert_eq(training_set_run(&e.cfg, e.schema, &o, &st, err, sizeof err), 0, "%s", err);
    check_output(&e, ls, 500, out, true);

    /* Labels on 3 users and 2 routes only: the other entities' events are
     * skipped (no state is built for them), the answers are the oracle's,
     * and an entity's state is dropped after its last label. */
    ls = (free(ls), make_labels_of(&e.s, 2000, labels, false, true));
    o.time_column = NULL;
    cr_assert_eq(training_set_run(&e.cfg, e.schema, &o, &st, err, sizeof err), 0, "%s", err);
    check_output(&e, ls, 2000, out, false);
    cr_assert_leq(st.entities, 5, "%llu entity states for 5 labelled entities", (unsigned long long)st.entities);
    cr_assert_gt(st.entities, 0);
    free(ls);
    env_free(&e);
}

/* ---- no broker needed ------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static int run_labels(const char *text, const char *time_col, char *err, size_t errsize)
{
    char dir[] = "/tmp/sluice-labels-XXXXXX", path[64], out[64];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/l.csv", dir);
    snprintf(out, sizeof out, "%s/o.csv", dir);
    write_file(path, text);
    schema_t *s;
    char yaml[4096];
    snprintf(yaml, sizeof yaml, SCHEMA_FMT, "no-such-topic", "no-such-topic-2");
    cr_assert_eq(schema_load_string("t.yaml", yaml, strlen(yaml), &s, err, errsize), 0, "%s", err);
    sl_config_t cfg;
    sl_config_defaults(&cfg);
    training_options_t o = { .service = "model", .labels_path = path, .out_path = out, .time_column = time_col };
    int rc = training_set_run(&cfg, s, &o, NULL, err, errsize);
    schema_free(s);
    sl_config_free(&cfg);
    unlink(path);
    unlink(out);
    rmdir(dir);
    return rc;
}

Test(training_labels, errors_name_the_line)
{
    char err[512];
    cr_assert_eq(run_labels("user,region,shard,ts\nu1,eu,1,5\n", NULL, err, sizeof err), SL_EINVAL);
    cr_assert(strstr(err, "timestamp"), "%s", err);
    cr_assert_eq(run_labels("user,region,timestamp\nu1,eu,5\n", NULL, err, sizeof err), SL_EINVAL);
    cr_assert(strstr(err, "'shard'"), "%s", err);
    cr_assert_eq(run_labels("user,region,shard,timestamp\nu1,eu,1,5\nu1,eu,x,5\n", NULL, err, sizeof err), SL_EINVAL);
    cr_assert(strstr(err, ":3:") && strstr(err, "route"), "%s", err);
    cr_assert_eq(run_labels("user,region,shard,timestamp\nu1,eu,1,noon\n", NULL, err, sizeof err), SL_EINVAL);
    cr_assert(strstr(err, ":2:") && strstr(err, "noon"), "%s", err);
    cr_assert_eq(run_labels("user,region,shard,timestamp\nu1,eu,1\n", NULL, err, sizeof err), SL_EPARSE);
    cr_assert(strstr(err, ":2:"), "%s", err);
    cr_assert_eq(run_labels("user,region,shard,timestamp\nu1,\"eu,1,5\n", NULL, err, sizeof err), SL_EPARSE);
    cr_assert(strstr(err, "unterminated"), "%s", err);
    cr_assert_eq(run_labels("", NULL, err, sizeof err), SL_EINVAL);
}

Test(csv, reader_and_writer_roundtrip)
{
    const char *in = "a,\"b,c\",\"d\"\"e\"\r\n,\"multi\nline\",\n\nlast";
    FILE *f = fmemopen((void *)in, strlen(in), "r");
    csv_reader_t *r;
    char err[128];
    size_t len;
    cr_assert_eq(csv_reader_from_file(f, &r), 0);
    cr_assert_eq(csv_read_row(r, err, sizeof err), 3);
    cr_assert_str_eq(csv_field(r, 1, &len), "b,c");
    cr_assert_str_eq(csv_field(r, 2, &len), "d\"e");
    cr_assert_eq(csv_read_row(r, err, sizeof err), 3);
    cr_assert_str_eq(csv_field(r, 0, &len), "");
    cr_assert_str_eq(csv_field(r, 1, &len), "multi\nline");
    cr_assert_eq(csv_row_line(r), 2);
    cr_assert_eq(csv_read_row(r, err, sizeof err), 1);   /* blank line */
    cr_assert_eq(csv_read_row(r, err, sizeof err), 1);
    cr_assert_str_eq(csv_field(r, 0, &len), "last");
    cr_assert_eq(csv_row_line(r), 5);
    cr_assert_eq(csv_read_row(r, err, sizeof err), 0);
    csv_reader_free(r);
    fclose(f);

    sl_buf_t b = SL_BUF_INIT;
    cr_assert_eq(csv_put_field(&b, "x", 1), 0);
    cr_assert_eq(csv_put_field(&b, "a,\"b\"\n", 6), 0);
    cr_assert_eq(b.len, strlen("x\"a,\"\"b\"\"\n\""));
    cr_assert_eq(memcmp(b.data, "x\"a,\"\"b\"\"\n\"", b.len), 0);
    sl_buf_free(&b);

    const char *bad[] = { "a\"b\n", "\"a\"b\n", "a\rb\n" };
    for (size_t i = 0; i < 3; i++) {
        f = fmemopen((void *)bad[i], strlen(bad[i]), "r");
        cr_assert_eq(csv_reader_from_file(f, &r), 0);
        cr_assert_eq(csv_read_row(r, err, sizeof err), SL_EPARSE, "%s", bad[i]);
        cr_assert(strstr(err, "line 1"), "%s", err);
        csv_reader_free(r);
        fclose(f);
    }
}

Test(training_format, values_as_serving_writes_them)
{
    sl_buf_t b = SL_BUF_INIT;
    agg_value_t v = { .type = AGG_VAL_DOUBLE, .d = 0.1 };
    training_format_value(&b, &v);
    v = (agg_value_t){ .type = AGG_VAL_DOUBLE, .d = 3.0 };
    sl_buf_append(&b, "|", 1);
    training_format_value(&b, &v);
    agg_scalar_t items[3] = { { .type = AGG_VAL_STRING, .s = "a\"b", .slen = 3 },
                              { .type = AGG_VAL_INT, .i = -4 }, { .type = AGG_VAL_DOUBLE, .d = 2.5 } };
    v = (agg_value_t){ .type = AGG_VAL_LIST, .items = items, .n_items = 3 };
    sl_buf_append(&b, "|", 1);
    training_format_value(&b, &v);
    v = (agg_value_t){ .type = AGG_VAL_NULL };
    sl_buf_append(&b, "|", 1);
    training_format_value(&b, &v);
    sl_buf_append(&b, "", 1);
    cr_assert_str_eq((const char *)b.data, "0.1|3|[\"a\\\"b\",-4,2.5]|");
    sl_buf_free(&b);
}
