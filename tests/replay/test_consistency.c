/*
 * test_consistency.c — online/offline consistency on the real broker.
 *
 * During a live run (the card_fraud example: 3 views, 18 features of every
 * kind — counts, sums, max, mean, stddev, variance, HLL distinct counts,
 * DDSketch quantiles, last_n lists, first, decayed sums; TTLs), record what
 * the SERVING lookup (serving's state backend: state_lookup + decode + query,
 * as RESP and gRPC serve it) returned for 60 cards and their merchants at two
 * moments: after the first half of the stream was ingested, as of the newest
 * event time T1, and at the end, as of T2. Then `training-set` for the same
 * (entity, time) pairs must give the same values: exactly for integers,
 * strings and lists (and the order-independent sketches), within 1e-9
 * relative for doubles (sums folded in a different order). The generator
 * runs in order (no out-of-order or late events) so that everything at or
 * before T1 was ingested when T1 was served: the comparison is then exact,
 * with no window-precision slack to allow for.
 *
 * Compared: every feature of the service, card views (keyed by the Kafka
 * message key) and merchant_activity, keyed by a payload field whose events
 * come from every partition: the live store keeps one state per (partition,
 * merchant) and serving merges them (serve_merge.c), training-set folds all
 * partitions' events into one state; the two agree (doubles within 1e-9).
 * tests/replay/test_consistency_live.py does the same over gRPC against a
 * running node ingesting a real-time stream.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "csv.h"
#include "gen.h"
#include "ingest.h"
#include "schema.h"
#include "serve_lookup.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_log.h"
#include "sl_test_kafka.h"
#include "state.h"
#include "training.h"

#define N_EVENTS 20000
#define N_PROBES 60

typedef struct env {
    char bootstrap[256], topic[128], group[128], dir[256], state_dir[300];
    sl_config_t cfg;
    schema_t *schema;
} env_t;

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = calloc(1, (size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return s;
}

static void produce_events(env_t *e, gen_t *g, int n, int64_t *last_ts)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", e->bootstrap, err, sizeof err), 0);
    cr_assert_eq(rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err), 0);
    cr_assert_eq(rd_kafka_conf_set(conf, "linger.ms", "20", err, sizeof err), 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    cr_assert_not_null(rk, "%s", err);
    sl_buf_t pl = SL_BUF_INIT, key = SL_BUF_INIT;
    for (int i = 0; i < n; i++) {
        bool is_null;
        int kind = gen_next(g, &pl, &key, &is_null);
        cr_assert_geq(kind, 0);
        if (kind == GEN_GOOD) {
            /* in-order events carry increasing times: remember the newest */
            /* NUL-terminate past len (payload bytes unchanged) before strstr */
            cr_assert_eq(sl_buf_reserve(&pl, 1), 0);
            pl.data[pl.len] = '\0';
            const char *ts = strstr((const char *)pl.data, "\"ts\":");
            if (ts) *last_ts = strtoll(ts + 5, NULL, 10);
        }
        for (;;) {
            rd_kafka_resp_err_t err2 = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(e->topic),
                RD_KAFKA_V_KEY(key.data, key.len),
                RD_KAFKA_V_VALUE(is_null ? NULL : pl.data, is_null ? 0 : pl.len),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (!err2) break;
            cr_assert_eq(err2, RD_KAFKA_RESP_ERR__QUEUE_FULL, "%s", rd_kafka_err2str(err2));
            rd_kafka_poll(rk, 20);
        }
    }
    rd_kafka_flush(rk, 60000);
    cr_assert_eq(rd_kafka_outq_len(rk), 0);
    rd_kafka_destroy(rk);
    sl_buf_free(&pl);
    sl_buf_free(&key);
}

static void ingest_until_eof(env_t *e)
{
    char err[1024];
    state_store_t *st;
    ingest_worker_t *w;
    cr_assert_eq(state_open(e->state_dir, NULL, &st, err, sizeof err), 0, "%s", err);
    ingest_options_t io = { .exit_at_eof = true };
    cr_assert_eq(ingest_worker_new(&e->cfg, e->schema, st, &io, &w, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ingest_worker_run(w, err, sizeof err), 0, "%s", err);
    ingest_worker_free(w);
    state_close(st);
}

/* What serving returns for card i (and its merchant) as of t: one string of
 * comma-joined cells in the service's feature order. */
static void record_served(env_t *e, int64_t t, char out[N_PROBES][4096])
{
    char err[512];
    state_store_t *st;
    serve_state_backend_t *sb;
    cr_assert_eq(state_open(e->state_dir, NULL, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(serve_state_backend_new(e->schema, st, &sb, err, sizeof err), 0, "%s", err);
    const serve_backend_t *be = serve_state_backend(sb);
    serve_scratch_t *sc = be->scratch_new(be);
    int si = schema_service_index(e->schema, "fraud_model_v1");
    const schema_service_t *svc = &e->schema->services[si];
    serve_value_t vals[64];
    sl_buf_t b = SL_BUF_INIT;
    for (int i = 0; i < N_PROBES; i++) {
        char card[32], merchant[32];
        snprintf(card, sizeof card, "card-%06d", i + 1);
        snprintf(merchant, sizeof merchant, "merchant-%06d", i + 1);
        sl_buf_reset(&b);
        for (size_t r = 0; r < svc->n_refs; r++) {
            int v = svc->refs[r].view;
            const char *k = e->schema->views[v].entity == 0 ? card : merchant;
            serve_key_t key = { .n = 1, .part = { k }, .len = { strlen(k) } };
            cr_assert_eq(be->lookup(be, sc, v, &key, t, vals, err, sizeof err), 0, "%s", err);
            const serve_value_t *sv = &vals[svc->refs[r].feature];
            if (r) sl_buf_append(&b, ",", 1);
            if (sv->status == SERVE_STATUS_PRESENT || sv->status == SERVE_STATUS_PARTIAL_WINDOW) {
                sl_buf_t cell = SL_BUF_INIT;
                training_format_value(&cell, &sv->val);
                csv_put_field(&b, (const char *)cell.data, cell.len);
                sl_buf_free(&cell);
            }
        }
        snprintf(out[i], 4096, "%.*s", (int)b.len, (const char *)b.data);
    }
    sl_buf_free(&b);
    be->scratch_free(sc);
    serve_state_backend_free(sb);
    state_close(st);
}

static bool cells_equal(const char *a, size_t al, const char *b, size_t bl)
{
    if (al == bl && memcmp(a, b, al) == 0) return true;
    char x[128], y[128];
    if (al >= sizeof x || bl >= sizeof y || !al || !bl) return false;
    memcpy(x, a, al); x[al] = 0;
    memcpy(y, b, bl); y[bl] = 0;
    char *ex, *ey;
    double dx = strtod(x, &ex), dy = strtod(y, &ey);
    if (*ex || *ey) return false;
    return fabs(dx - dy) <= 1e-9 * fmax(fabs(dx), fabs(dy));
}

Test(consistency, served_values_equal_training_set, .timeout = 300)
{
    env_t e;
    char err[1024];
    memset(&e, 0, sizeof e);
    sl_log_set(SL_LOG_WARN, false);
    cr_assert_eq(sl_test_kafka_bootstrap(e.bootstrap, sizeof e.bootstrap, err, sizeof err), 0, "%s", err);
    sl_test_kafka_name(e.topic, sizeof e.topic, "consistency");
    sl_test_kafka_name(e.group, sizeof e.group, "consistency-grp");
    cr_assert_eq(sl_test_kafka_topic_create(e.bootstrap, e.topic, 4, 30000, err, sizeof err), 0, "%s", err);
    snprintf(e.dir, sizeof e.dir, "/tmp/sluice-consistency-XXXXXX");
    cr_assert_not_null(mkdtemp(e.dir));
    snprintf(e.state_dir, sizeof e.state_dir, "%s/state", e.dir);

    char *yaml = read_text(SLUICE_SOURCE_DIR "/schemas/examples/card_fraud.yaml");
    char *at = strstr(yaml, "topic: payments");
    cr_assert_not_null(at);
    char text[16384];
    snprintf(text, sizeof text, "%.*stopic: %s%s", (int)(at - yaml), yaml, e.topic, at + strlen("topic: payments"));
    free(yaml);
    cr_assert_eq(schema_load_string("card_fraud.yaml", text, strlen(text), &e.schema, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(e.schema->entities[0].name, "card");

    sl_config_defaults(&e.cfg);
    char set[512];
    snprintf(set, sizeof set, "brokers=%s", e.bootstrap);
    cr_assert_eq(sl_config_set(&e.cfg, set, err, sizeof err), 0);
    snprintf(set, sizeof set, "group_id=%s", e.group);
    cr_assert_eq(sl_config_set(&e.cfg, set, err, sizeof err), 0);
    snprintf(set, sizeof set, "state_dir=%s", e.state_dir);
    cr_assert_eq(sl_config_set(&e.cfg, set, err, sizeof err), 0);
    cr_assert_eq(sl_config_set(&e.cfg, "commit_interval=200ms", err, sizeof err), 0);
    cr_assert_eq(sl_config_set(&e.cfg, "log_level=warn", err, sizeof err), 0);

    gen_options_t go;
    gen_options_defaults(&go);
    go.seed = 11;
    go.start_ms = 1700000000000LL;
    go.spacing_us = 200000;             /* 0.2 s apart: 20k events span ~67 min */
    go.entities = 300;
    go.ooo_share = 0;
    go.late_share = 0;
    gen_t *g;
    int src = schema_source_index(e.schema, "payments");
    cr_assert_eq(gen_new(e.schema, src, &go, &g, err, sizeof err), 0, "%s", err);

    static char served1[N_PROBES][4096], served2[N_PROBES][4096];
    int64_t t1 = 0, t2 = 0;
    produce_events(&e, g, N_EVENTS / 2, &t1);
    ingest_until_eof(&e);
    record_served(&e, t1, served1);
    produce_events(&e, g, N_EVENTS / 2, &t2);
    ingest_until_eof(&e);
    record_served(&e, t2, served2);
    gen_free(g);

    char labels[400], out[400];
    snprintf(labels, sizeof labels, "%s/labels.csv", e.dir);
    snprintf(out, sizeof out, "%s/out.csv", e.dir);
    FILE *f = fopen(labels, "w");
    fprintf(f, "card_id,merchant_id,timestamp\n");
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N_PROBES; i++)
            fprintf(f, "card-%06d,merchant-%06d,%lld\n", i + 1, i + 1, (long long)(k ? t2 : t1));
    fclose(f);
    training_options_t o = { .service = "fraud_model_v1", .labels_path = labels, .out_path = out };
    cr_assert_eq(training_set_run(&e.cfg, e.schema, &o, NULL, err, sizeof err), 0, "%s", err);

    csv_reader_t *r;
    cr_assert_eq(csv_reader_open(out, &r, err, sizeof err), 0);
    int ncols = csv_read_row(r, err, sizeof err);
    cr_assert_gt(ncols, 3);
    size_t diff = 0, cells = 0, nonempty = 0;
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < N_PROBES; i++) {
            cr_assert_eq(csv_read_row(r, err, sizeof err), ncols);
            csv_reader_t *sr;
            const char *served = k ? served2[i] : served1[i];
            FILE *sf = fmemopen((void *)served, strlen(served), "r");
            cr_assert_eq(csv_reader_from_file(sf, &sr), 0);
            cr_assert_eq(csv_read_row(sr, err, sizeof err), ncols - 3, "served row: %s", served);
            for (int c = 3; c < ncols; c++) {
                size_t al, bl;
                const char *a = csv_field(r, (size_t)c, &al), *b = csv_field(sr, (size_t)(c - 3), &bl);
                cells++;
                nonempty += al > 0;
                if (!cells_equal(a, al, b, bl) && diff++ < 10) {
                    size_t hl;
                    fprintf(stderr, "card %d at T%d, column %d: training-set '%s' served '%s'\n", i + 1, k + 1,
                            c, a, b);
                    (void)hl;
                }
            }
            csv_reader_free(sr);
            fclose(sf);
        }
    }
    csv_reader_free(r);
    cr_assert_gt(nonempty, cells / 2, "most probes have values (%zu of %zu)", nonempty, cells);
    cr_assert_eq(diff, 0, "%zu of %zu cells differ between serving and training-set", diff, cells);

    schema_free(e.schema);
    sl_config_free(&e.cfg);
    snprintf(text, sizeof text, "rm -rf '%s'", e.dir);
    if (system(text)) { /* best effort */ }
}
