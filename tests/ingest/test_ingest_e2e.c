/*
 * test_ingest_e2e.c — ingest against the real test broker (fixture
 * kafka_broker): a known out-of-order stream with late and bad messages on a
 * 4-partition topic is ingested and every entity of both views, every
 * partition's offset and counters, and the dead-letter topic are compared
 * with an independent oracle (ingest_stream.c). Then more events are
 * produced and a second worker run resumes from the stored offsets; then a
 * changed view definition makes the worker refuse to start.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ingest.h"
#include "ingest_stream.h"
#include "schema.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_test_kafka.h"
#include "state.h"

typedef struct env {
    char bootstrap[256], topic[128], dlq[128], group[128];
    char dir[256], state_dir[300];
    sl_config_t cfg;
    schema_t *schema;
} env_t;

static void env_init(env_t *e, int partitions)
{
    char err[512];
    memset(e, 0, sizeof *e);
    cr_assert_eq(sl_test_kafka_bootstrap(e->bootstrap, sizeof e->bootstrap, err, sizeof err), 0, "%s", err);
    sl_test_kafka_name(e->topic, sizeof e->topic, "ingest-e2e");
    sl_test_kafka_name(e->dlq, sizeof e->dlq, "ingest-dlq");
    sl_test_kafka_name(e->group, sizeof e->group, "ingest-grp");
    cr_assert_eq(sl_test_kafka_topic_create(e->bootstrap, e->topic, partitions, 30000, err, sizeof err), 0, "%s", err);
    cr_assert_eq(sl_test_kafka_topic_create(e->bootstrap, e->dlq, 1, 30000, err, sizeof err), 0, "%s", err);
    snprintf(e->dir, sizeof e->dir, "/tmp/sluice-ingest-e2e-XXXXXX");
    cr_assert_not_null(mkdtemp(e->dir));
    snprintf(e->state_dir, sizeof e->state_dir, "%s/state", e->dir);

    sl_config_defaults(&e->cfg);
    char set[512];
#define SET(...) do { snprintf(set, sizeof set, __VA_ARGS__); \
        cr_assert_eq(sl_config_set(&e->cfg, set, err, sizeof err), 0, "%s: %s", set, err); } while (0)
    SET("brokers=%s", e->bootstrap);
    SET("group_id=%s", e->group);
    SET("state_dir=%s", e->state_dir);
    SET("commit_interval=100ms");
    SET("max_message_bytes=%d", STREAM_MAX_BYTES);
    SET("dead_letter_topic=%s", e->dlq);
    SET("cache_max_entities=1000");     /* smaller than the entities: eviction runs */
    SET("log_level=warn");
#undef SET
    char yaml[4096];
    snprintf(yaml, sizeof yaml, STREAM_SCHEMA_FMT, e->topic);
    cr_assert_eq(schema_load_string("e2e.yaml", yaml, strlen(yaml), &e->schema, err, sizeof err), 0, "%s", err);
}

static void env_free(env_t *e)
{
    char cmd[600];
    schema_free(e->schema);
    sl_config_free(&e->cfg);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", e->dir);
}

static void run_worker(env_t *e, ingest_stats_t *out_copy_messages_late)
{
    char err[1024] = "";
    state_store_t *st;
    state_options_t so = { .create_if_missing = true };
    cr_assert_eq(state_open(e->state_dir, &so, &st, err, sizeof err), 0, "%s", err);
    ingest_worker_t *w;
    ingest_options_t opts = { .exit_at_eof = true };
    cr_assert_eq(ingest_worker_new(&e->cfg, e->schema, st, &opts, &w, err, sizeof err), 0, "%s", err);
    int rc = ingest_worker_run(w, err, sizeof err);
    cr_assert_eq(rc, 0, "run: %s", err);
    const ingest_stats_t *s = ingest_worker_stats(w);
    if (out_copy_messages_late) {
        atomic_store(&out_copy_messages_late->messages, atomic_load(&s->messages));
        atomic_store(&out_copy_messages_late->late, atomic_load(&s->late));
        for (int i = 0; i < INGEST_BAD__COUNT; i++)
            atomic_store(&out_copy_messages_late->bad[i], atomic_load(&s->bad[i]));
        atomic_store(&out_copy_messages_late->commits, atomic_load(&s->commits));
        atomic_store(&out_copy_messages_late->cache_evictions, atomic_load(&s->cache_evictions));
    }
    ingest_worker_free(w);
    state_close(st);
}

/* Reads the whole dead-letter topic: counts per reason header, and checks
 * each payload is the original message at the offset its headers name. */
static void check_dead_letters(env_t *e, const stream_t *s, const uint64_t want[INGEST_BAD__COUNT])
{
    char err[512], grp[160];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    snprintf(grp, sizeof grp, "%s-dlq-reader", e->group);
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", e->bootstrap, err, sizeof err), RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "group.id", grp, err, sizeof err), RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof err), RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err), RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    cr_assert_not_null(rk, "%s", err);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tl, e->dlq, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(rk, tl), 0);
    rd_kafka_topic_partition_list_destroy(tl);
    uint64_t got[INGEST_BAD__COUNT] = { 0 };
    uint64_t total_want = 0, total = 0;
    for (int i = 1; i < INGEST_BAD__COUNT; i++) total_want += want[i];
    for (int idle = 0; idle < 100 && total < total_want + 1;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m) { idle++; continue; }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            if (total >= total_want) break;
            idle++;
            continue;
        }
        cr_assert_eq(m->err, 0, "%s", rd_kafka_message_errstr(m));
        rd_kafka_headers_t *h = NULL;
        const void *reason = NULL, *part = NULL, *off = NULL;
        size_t rl = 0, pl = 0, ol = 0;
        cr_assert_eq(rd_kafka_message_headers(m, &h), 0);
        cr_assert_eq(rd_kafka_header_get_last(h, "sluice.reason", &reason, &rl), 0);
        cr_assert_eq(rd_kafka_header_get_last(h, "sluice.partition", &part, &pl), 0);
        cr_assert_eq(rd_kafka_header_get_last(h, "sluice.offset", &off, &ol), 0);
        char rbuf[64], pbuf[16], obuf[32];
        snprintf(rbuf, sizeof rbuf, "%.*s", (int)rl, (const char *)reason);
        snprintf(pbuf, sizeof pbuf, "%.*s", (int)pl, (const char *)part);
        snprintf(obuf, sizeof obuf, "%.*s", (int)ol, (const char *)off);
        int r;
        for (r = 1; r < INGEST_BAD__COUNT; r++)
            if (!strcmp(rbuf, ingest_bad_name((ingest_bad_t)r))) break;
        cr_assert_lt(r, INGEST_BAD__COUNT, "unknown reason header '%s'", rbuf);
        got[r]++;
        total++;
        size_t idx = stream_find(s, atoi(pbuf), atoll(obuf));
        cr_assert_neq(idx, (size_t)-1);
        const stream_msg_t *orig = &s->m[idx];
        cr_assert_eq(orig->kind, (ingest_bad_t)r, "message %s@%s: reason %s, generated as %s", pbuf, obuf,
                     rbuf, ingest_bad_name(orig->kind));
        cr_assert_eq(m->len, orig->len);
        if (orig->payload) cr_assert(!memcmp(m->payload, orig->payload, orig->len), "payload differs");
        else cr_assert_null(m->payload, "tombstone forwarded as tombstone");
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    for (int r = 1; r < INGEST_BAD__COUNT; r++)
        cr_expect_eq(got[r], want[r], "dead letters %s: %llu want %llu", ingest_bad_name((ingest_bad_t)r),
                     (unsigned long long)got[r], (unsigned long long)want[r]);
}

Test(ingest_e2e, oracle_resume_dead_letters_and_schema_change, .timeout = 300)
{
    env_t e;
    char err[1024];
    env_init(&e, 4);
    stream_t s;
    stream_init(&s, 4, 3000, 12345);
    stream_generate(&s, 20000, 30);        /* 3 % bad, every reason */
    cr_assert_eq(stream_produce(&s, 0, s.n, e.bootstrap, e.topic, err, sizeof err), 0, "%s", err);

    /* Run 1: everything produced so far. */
    ingest_stats_t st1;
    memset(&st1, 0, sizeof st1);
    run_worker(&e, &st1);
    uint64_t bad_want[INGEST_BAD__COUNT], late_want;
    state_store_t *st;
    state_options_t so = { .create_if_missing = false };
    cr_assert_eq(state_open(e.state_dir, &so, &st, err, sizeof err), 0, "%s", err);
    size_t mism = stream_check(&s, s.n, e.schema, st, e.topic, bad_want, &late_want);
    state_close(st);
    cr_assert_eq(mism, 0, "%zu mismatches with the oracle after run 1", mism);
    /* Live counters of one uninterrupted run equal the oracle's too. */
    cr_assert_eq(atomic_load(&st1.messages), s.n);
    cr_assert_eq(atomic_load(&st1.late), late_want);
    cr_assert_gt(late_want, 0, "the stream must contain late events");
    for (int r = 1; r < INGEST_BAD__COUNT; r++) {
        cr_assert_gt(bad_want[r], 0, "the stream must contain %s", ingest_bad_name((ingest_bad_t)r));
        cr_assert_eq(atomic_load(&st1.bad[r]), bad_want[r], "bad.%s", ingest_bad_name((ingest_bad_t)r));
    }
    cr_assert_gt(atomic_load(&st1.cache_evictions), 0, "cache smaller than the entity set must evict");
    check_dead_letters(&e, &s, bad_want);

    /* Run 2: more events; the worker resumes from the stored offsets. */
    size_t n1 = s.n;
    stream_generate(&s, 5000, 30);
    cr_assert_eq(stream_produce(&s, n1, s.n, e.bootstrap, e.topic, err, sizeof err), 0, "%s", err);
    ingest_stats_t st2;
    memset(&st2, 0, sizeof st2);
    run_worker(&e, &st2);
    cr_assert_eq(atomic_load(&st2.messages), s.n - n1, "run 2 reads only the new messages");
    cr_assert_eq(state_open(e.state_dir, &so, &st, err, sizeof err), 0, "%s", err);
    mism = stream_check(&s, s.n, e.schema, st, e.topic, NULL, NULL);
    state_close(st);
    cr_assert_eq(mism, 0, "%zu mismatches with the oracle after run 2", mism);

    /* A changed view definition: refuse to start, name the view, point to backfill. */
    char yaml[4096];
    snprintf(yaml, sizeof yaml, STREAM_SCHEMA_FMT, e.topic);
    char *p = strstr(yaml, "filter: {field: amount, op: gt, value: 50}");
    cr_assert_not_null(p);
    memcpy(p, "filter: {field: amount, op: gt, value: 60}", strlen("filter: {field: amount, op: gt, value: 60}"));
    schema_t *changed;
    cr_assert_eq(schema_load_string("e2e2.yaml", yaml, strlen(yaml), &changed, err, sizeof err), 0, "%s", err);
    cr_assert_eq(state_open(e.state_dir, &so, &st, err, sizeof err), 0, "%s", err);
    ingest_worker_t *w = NULL;
    err[0] = '\0';
    int rc = ingest_worker_new(&e.cfg, changed, st, NULL, &w, err, sizeof err);
    cr_assert_eq(rc, SL_ESCHEMA, "got %s: %s", sl_errname(rc), err);
    cr_assert_null(w);
    cr_assert_not_null(strstr(err, "route_stats"), "message names the view: %s", err);
    cr_assert_null(strstr(err, "user_stats"), "only the changed view is named: %s", err);
    cr_assert_not_null(strstr(err, "sluice backfill -c CONFIG --view route_stats"), "%s", err);
    state_close(st);
    schema_free(changed);

    stream_free(&s);
    env_free(&e);
}
