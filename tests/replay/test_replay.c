/*
 * test_replay.c — the replay consumer on the real broker: every offset
 * below the end exactly once and in order per partition, nothing past the
 * end (also when the end is raised later, and when a partition is held),
 * and the start from a timestamp (offsets-for-times) against the
 * timestamps the test gave each message.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "replay.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_log.h"
#include "sl_test_kafka.h"

#define PARTS 2
#define PER_PART 1500
#define T0 1700000000000LL

static char bootstrap[256], topic[128];
static sl_config_t cfg;

/* Message i of partition p has payload "p:i" and timestamp T0 + i * 1000. */
static void setup_topic(void)
{
    char err[512];
    sl_log_set(SL_LOG_WARN, false);
    cr_assert_eq(sl_test_kafka_bootstrap(bootstrap, sizeof bootstrap, err, sizeof err), 0, "%s", err);
    sl_test_kafka_name(topic, sizeof topic, "replay");
    cr_assert_eq(sl_test_kafka_topic_create(bootstrap, topic, PARTS, 30000, err, sizeof err), 0, "%s", err);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err), 0);
    cr_assert_eq(rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err), 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    cr_assert_not_null(rk);
    for (int i = 0; i < PER_PART; i++)
        for (int p = 0; p < PARTS; p++) {
            char v[32];
            int n = snprintf(v, sizeof v, "%d:%d", p, i);
            cr_assert_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(p),
                                           RD_KAFKA_V_VALUE(v, (size_t)n), RD_KAFKA_V_TIMESTAMP(T0 + i * 1000LL),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END), 0);
            if ((i & 255) == 0) rd_kafka_poll(rk, 0);
        }
    rd_kafka_flush(rk, 60000);
    cr_assert_eq(rd_kafka_outq_len(rk), 0);
    rd_kafka_destroy(rk);
    sl_config_defaults(&cfg);
    char set[300];
    snprintf(set, sizeof set, "brokers=%s", bootstrap);
    cr_assert_eq(sl_config_set(&cfg, set, err, sizeof err), 0);
}

/* Reads until done (or idle for ~15 s: a loaded CI box can take seconds to
 * fetch); checks order, payloads and bounds. */
static size_t drain(replay_t *r, int64_t next[PARTS], const int64_t end[PARTS])
{
    size_t n = 0;
    for (int idle = 0; !replay_done(r) && idle < 150;) {
        int fatal = 0;
        rd_kafka_message_t *m = replay_poll(r, 100, &fatal);
        cr_assert_eq(fatal, 0);
        if (!m) { idle++; continue; }
        int p = m->partition;
        cr_assert_eq(m->offset, next[p], "partition %d: offset %lld, want %lld", p, (long long)m->offset,
                     (long long)next[p]);
        cr_assert_lt(m->offset, end[p], "partition %d: offset %lld past the end %lld", p,
                     (long long)m->offset, (long long)end[p]);
        char want[32];
        int wl = snprintf(want, sizeof want, "%d:%lld", p, (long long)m->offset);
        cr_assert(m->len == (size_t)wl && memcmp(m->payload, want, (size_t)wl) == 0);
        next[p]++;
        n++;
        rd_kafka_message_destroy(m);
    }
    /* Nothing more comes: the ends hold. */
    int fatal = 0;
    rd_kafka_message_t *m = replay_poll(r, 300, &fatal);
    cr_assert_null(m, "a message past the end");
    return n;
}

Test(replay, bounded_exactly_once_in_order_then_raised_end, .timeout = 120)
{
    setup_topic();
    char err[512];
    replay_t *r;
    replay_options_t o = { .topic = topic, .from_ms = REPLAY_FROM_EARLIEST, .what = "test" };
    cr_assert_eq(replay_new(&cfg, &o, &r, err, sizeof err), 0, "%s", err);
    cr_assert_eq(replay_partition_count(r), PARTS);
    int64_t next[PARTS] = { 0, 0 }, end[PARTS] = { 500, 900 };
    for (int p = 0; p < PARTS; p++) {
        replay_part_info_t pi;
        replay_partition(r, (size_t)p, &pi);
        cr_assert_eq(pi.end, PER_PART, "the end snapshot is the high watermark");
        replay_set_bound(r, p, end[p]);
    }
    cr_assert_eq(replay_start(r, err, sizeof err), 0, "%s", err);
    replay_pause_partition(r, 1);                 /* held: nothing of p1 for now */
    int fatal = 0;
    for (int i = 0; i < 20; i++) {
        rd_kafka_message_t *m = replay_poll(r, 50, &fatal);
        if (!m) continue;
        cr_assert_eq(m->partition, 0, "a held partition is not read");
        cr_assert_eq(m->offset, next[0]++);
        rd_kafka_message_destroy(m);
    }
    replay_resume_partition(r, 1);
    drain(r, next, end);
    cr_assert_eq(next[0], 500);
    cr_assert_eq(next[1], 900);
    cr_assert_eq(replay_lag(r), 0);
    /* Raise the ends: reading continues exactly where it stopped. */
    end[0] = PER_PART;
    end[1] = 1200;
    replay_set_end(r, 0, end[0]);
    replay_set_end(r, 1, end[1]);
    replay_set_end(r, 1, 1000);                   /* an end never shrinks this way */
    drain(r, next, end);
    cr_assert_eq(next[0], PER_PART);
    cr_assert_eq(next[1], 1200);
    cr_assert_eq(replay_messages(r), PER_PART + 1200);
    replay_free(r);
    sl_config_free(&cfg);
}

/* Fetch responses that arrive before the replay reads (here: a pause right
 * after the assignment) are still delivered, every one: the replay once
 * took its partition queues out of the consumer queue after assigning, and
 * a response that landed in between was lost while the partition's EOF moved
 * its position to the end. */
Test(replay, fetches_before_the_first_poll_are_read, .timeout = 120)
{
    setup_topic();
    char err[512];
    replay_t *r;
    replay_options_t o = { .topic = topic, .from_ms = T0 + 1000000, .what = "test" };
    cr_assert_eq(replay_new(&cfg, &o, &r, err, sizeof err), 0, "%s", err);
    int64_t next[PARTS] = { 1000, 1000 }, end[PARTS] = { PER_PART, PER_PART };
    setenv("SLUICE_TEST_REPLAY_ASSIGN_PAUSE_MS", "1500", 1);
    cr_assert_eq(replay_start(r, err, sizeof err), 0, "%s", err);
    unsetenv("SLUICE_TEST_REPLAY_ASSIGN_PAUSE_MS");
    cr_assert_eq(drain(r, next, end), (size_t)(PARTS * (PER_PART - 1000)));
    cr_assert_eq(next[0], PER_PART);
    cr_assert_eq(next[1], PER_PART);
    replay_free(r);
    sl_config_free(&cfg);
}

Test(replay, start_at_a_timestamp, .timeout = 120)
{
    setup_topic();
    char err[512];
    replay_t *r;
    /* First message with timestamp >= T0 + 1234.5 s is message 1235. */
    replay_options_t o = { .topic = topic, .from_ms = T0 + 1234500, .what = "test" };
    cr_assert_eq(replay_new(&cfg, &o, &r, err, sizeof err), 0, "%s", err);
    int64_t next[PARTS], end[PARTS] = { PER_PART, PER_PART };
    for (int p = 0; p < PARTS; p++) {
        replay_part_info_t pi;
        replay_partition(r, (size_t)p, &pi);
        cr_assert_eq(pi.start, 1235, "partition %d starts at %lld", p, (long long)pi.start);
        next[p] = 1235;
    }
    cr_assert_eq(replay_start(r, err, sizeof err), 0, "%s", err);
    cr_assert_eq(drain(r, next, end), (size_t)(PARTS * (PER_PART - 1235)));
    replay_free(r);

    /* After the last message: nothing to read. */
    o.from_ms = T0 + PER_PART * 1000LL + 5;
    cr_assert_eq(replay_new(&cfg, &o, &r, err, sizeof err), 0, "%s", err);
    cr_assert(replay_done(r));
    replay_free(r);

    /* An unknown topic is a clear error. */
    o.topic = "sluice-no-such-topic-for-replay";
    o.from_ms = REPLAY_FROM_EARLIEST;
    o.timeout_ms = 3000;
    cr_assert_neq(replay_new(&cfg, &o, &r, err, sizeof err), 0);
    cr_assert(strstr(err, "sluice-no-such-topic-for-replay"), "%s", err);
    sl_config_free(&cfg);
}
