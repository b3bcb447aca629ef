/*
 * test_kafka_roundtrip.c — proves the real test broker (tests/kafka/kafka-broker.sh,
 * ctest fixture `kafka_broker`) does what Sluice's ingest path needs, through the same
 * librdkafka the worker links.
 *
 * Oracles are independent of the code under test: every message carries its sequence
 * number in key and value, so "each of N arrived exactly once, unaltered" is checked
 * against the list the test itself produced; kcat (a separate client binary) reads the
 * topic back as a second reader; and the transaction test compares a read_committed
 * reader with a read_uncommitted one over the same log, so the aborted messages are
 * shown to exist and to be hidden.
 *
 *   roundtrip:    AdminAPI CreateTopics (3 partitions) -> idempotent keyed produce of
 *                 1000 messages -> consumer group reads all back, commits -> committed
 *                 offsets sum to 1000 -> kcat counts and checks the same 1000.
 *   transactions: txn A (10 msgs, offsets 10 for a group) committed, txn B (10 msgs,
 *                 offsets 99) aborted, txn C (5 msgs) committed -> read_committed sees
 *                 the 15 committed, read_uncommitted sees all 25, the group's committed
 *                 offset is 10.
 *
 * The broker address comes from the file named by SLUICE_TEST_BOOTSTRAP_FILE. Topic,
 * group and transactional ids carry the pid and time, so reruns on one broker and
 * parallel Criterion workers never meet.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>

#include "sl_test_kafka.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RT_N 1000
#define RT_PARTITIONS 3
#define WAIT_MS 60000

static char g_bootstrap[256];

/* Reads host:port from $SLUICE_TEST_BOOTSTRAP_FILE into g_bootstrap. */
static void bootstrap_load(void) {
  char errstr[512];
  cr_assert_eq(sl_test_kafka_bootstrap(g_bootstrap, sizeof g_bootstrap, errstr, sizeof errstr),
               0, "%s", errstr);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void conf_set(rd_kafka_conf_t *conf, const char *key, const char *val) {
  char errstr[512];
  cr_assert_eq(rd_kafka_conf_set(conf, key, val, errstr, sizeof errstr), RD_KAFKA_CONF_OK,
               "conf %s=%s: %s", key, val, errstr);
}

static rd_kafka_conf_t *conf_base(void) {
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  conf_set(conf, "bootstrap.servers", g_bootstrap);
  conf_set(conf, "socket.timeout.ms", "30000");
  return conf;
}

static rd_kafka_t *client_new(rd_kafka_type_t type, rd_kafka_conf_t *conf) {
  char errstr[512];
  rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
  cr_assert(rk, "rd_kafka_new: %s", errstr);
  return rk;
}

/* Creates TOPIC with NPART partitions or fails the test. */
static void topic_create(const char *topic, int npart) {
  char errstr[512];
  cr_assert_eq(sl_test_kafka_topic_create(g_bootstrap, topic, npart, 30000, errstr,
                                          sizeof errstr), 0, "%s", errstr);
}

/* ---------------------------------------------------------------- roundtrip */

/* What the producer learnt about message i from its delivery report. */
typedef struct {
  int delivered;              /* number of delivery reports (must end at 1) */
  rd_kafka_resp_err_t err;
  int32_t partition;
  int64_t offset;
} dr_slot_t;

static void rt_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  (void)opaque;
  dr_slot_t *slot = m->_private;
  slot->delivered++;
  slot->err = m->err;
  slot->partition = m->partition;
  slot->offset = m->offset;
}

static void rt_key(char *out, size_t size, int i) { snprintf(out, size, "key-%04d", i); }
static void rt_value(char *out, size_t size, int i) {
  snprintf(out, size, "value-%04d-%d", i, i * 7919 % 10007);
}

/* Parses "key-NNNN" into NNNN; -1 if the key is not one of ours. */
static int rt_key_parse(const char *key, size_t len) {
  char buf[32];
  if (len != 8 || memcmp(key, "key-", 4) != 0) return -1;
  memcpy(buf, key, len);
  buf[len] = '\0';
  char *end = NULL;
  long i = strtol(buf + 4, &end, 10);
  if (*end != '\0' || i < 0 || i >= RT_N) return -1;
  return (int)i;
}

Test(kafka, roundtrip, .timeout = 240) {
  bootstrap_load();
  char topic[128], group[128], errstr[512];
  sl_test_kafka_name(topic, sizeof topic, "sluice-rt");
  sl_test_kafka_name(group, sizeof group, "sluice-rt-group");
  static dr_slot_t dr[RT_N];
  memset(dr, 0, sizeof dr);

  /* Produce: idempotent, keyed, default (hash of key) partitioner. */
  rd_kafka_conf_t *pconf = conf_base();
  conf_set(pconf, "enable.idempotence", "true");
  conf_set(pconf, "linger.ms", "5");
  rd_kafka_conf_set_dr_msg_cb(pconf, rt_on_delivery);
  rd_kafka_t *prod = client_new(RD_KAFKA_PRODUCER, pconf);
  topic_create(topic, RT_PARTITIONS);
  /* The helper reports errors: a second create of the same topic must fail. */
  cr_assert_neq(sl_test_kafka_topic_create(g_bootstrap, topic, 1, 30000, errstr, sizeof errstr),
                0, "creating %s twice succeeded", topic);
  cr_assert(strstr(errstr, "already exists"), "unexpected error: %s", errstr);

  for (int i = 0; i < RT_N; i++) {
    char key[32], val[64];
    rt_key(key, sizeof key, i);
    rt_value(val, sizeof val, i);
    rd_kafka_resp_err_t err;
    do {
      err = rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                              RD_KAFKA_V_VALUE(val, strlen(val)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&dr[i]),
                              RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) rd_kafka_poll(prod, 50);
    } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
    cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce %d: %s", i, rd_kafka_err2str(err));
    rd_kafka_poll(prod, 0);
  }
  cr_assert_eq(rd_kafka_flush(prod, WAIT_MS), RD_KAFKA_RESP_ERR_NO_ERROR, "flush timed out");
  int per_part[RT_PARTITIONS] = {0};
  for (int i = 0; i < RT_N; i++) {
    cr_assert_eq(dr[i].delivered, 1, "message %d: %d delivery reports", i, dr[i].delivered);
    cr_assert_eq(dr[i].err, RD_KAFKA_RESP_ERR_NO_ERROR, "message %d: %s", i,
                 rd_kafka_err2str(dr[i].err));
    cr_assert(dr[i].partition >= 0 && dr[i].partition < RT_PARTITIONS);
    per_part[dr[i].partition]++;
  }
  /* 1000 distinct keys over 3 partitions: each must get some (proves 3 partitions). */
  for (int p = 0; p < RT_PARTITIONS; p++)
    cr_assert_gt(per_part[p], 0, "partition %d got no message", p);
  rd_kafka_destroy(prod);

  /* Consume in a group, from the beginning, with manual commit. */
  rd_kafka_conf_t *cconf = conf_base();
  conf_set(cconf, "group.id", group);
  conf_set(cconf, "auto.offset.reset", "earliest");
  conf_set(cconf, "enable.auto.commit", "false");
  conf_set(cconf, "session.timeout.ms", "10000");
  rd_kafka_t *cons = client_new(RD_KAFKA_CONSUMER, cconf);
  rd_kafka_poll_set_consumer(cons);
  rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
  cr_assert_eq(rd_kafka_subscribe(cons, sub), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(sub);

  static int seen[RT_N];
  memset(seen, 0, sizeof seen);
  int64_t last_off[RT_PARTITIONS] = {-1, -1, -1};
  int last_seq[RT_PARTITIONS] = {-1, -1, -1};
  int got = 0;
  int64_t deadline = now_ms() + WAIT_MS;
  int64_t settle_until = -1; /* after all N arrive, keep polling 1 s for duplicates */
  while (now_ms() < deadline && (settle_until < 0 || now_ms() < settle_until)) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 200);
    if (!m) continue;
    if (m->err) {
      cr_assert(m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF, "consume error: %s",
                rd_kafka_message_errstr(m));
      rd_kafka_message_destroy(m);
      continue;
    }
    int i = rt_key_parse(m->key, m->key_len);
    cr_assert_geq(i, 0, "unexpected key %.*s", (int)m->key_len, (const char *)m->key);
    char val[64];
    rt_value(val, sizeof val, i);
    cr_assert(m->len == strlen(val) && memcmp(m->payload, val, m->len) == 0,
              "message %d: value %.*s, expected %s", i, (int)m->len, (const char *)m->payload,
              val);
    cr_assert_eq(m->partition, dr[i].partition, "message %d read from partition %d, "
                 "produced to %d", i, m->partition, dr[i].partition);
    cr_assert_eq(m->offset, dr[i].offset, "message %d at offset %lld, delivered at %lld", i,
                 (long long)m->offset, (long long)dr[i].offset);
    /* Idempotent producer: per partition, offsets and sequence numbers both increase. */
    cr_assert_gt(m->offset, last_off[m->partition]);
    cr_assert_gt(i, last_seq[m->partition], "partition %d: message %d after %d", m->partition,
                 i, last_seq[m->partition]);
    last_off[m->partition] = m->offset;
    last_seq[m->partition] = i;
    seen[i]++;
    got++;
    if (got == RT_N) settle_until = now_ms() + 1000;
    rd_kafka_message_destroy(m);
  }
  cr_assert_eq(got, RT_N, "consumed %d of %d messages", got, RT_N);
  for (int i = 0; i < RT_N; i++) cr_assert_eq(seen[i], 1, "message %d seen %d times", i, seen[i]);

  /* Commit and read the group's offsets back from the broker. */
  cr_assert_eq(rd_kafka_commit(cons, NULL, 0), RD_KAFKA_RESP_ERR_NO_ERROR, "commit failed");
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(RT_PARTITIONS);
  for (int p = 0; p < RT_PARTITIONS; p++) rd_kafka_topic_partition_list_add(parts, topic, p);
  cr_assert_eq(rd_kafka_committed(cons, parts, WAIT_MS), RD_KAFKA_RESP_ERR_NO_ERROR);
  int64_t committed_sum = 0;
  for (int p = 0; p < parts->cnt; p++) {
    cr_assert_eq(parts->elems[p].err, RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_assert_eq(parts->elems[p].offset, per_part[parts->elems[p].partition],
                 "partition %d committed %lld, holds %d", parts->elems[p].partition,
                 (long long)parts->elems[p].offset, per_part[parts->elems[p].partition]);
    committed_sum += parts->elems[p].offset;
  }
  cr_assert_eq(committed_sum, RT_N);
  rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_consumer_close(cons);
  rd_kafka_destroy(cons);

  /* Second, independent reader: kcat prints "key value" per message. */
  char cmd[768];
  snprintf(cmd, sizeof cmd,
           "kcat -C -b '%s' -t '%s' -o beginning -e -q -f '%%k %%s\\n' 2>&1", g_bootstrap,
           topic);
  FILE *kc = popen(cmd, "r");
  cr_assert(kc, "popen(kcat) failed");
  memset(seen, 0, sizeof seen);
  int lines = 0;
  char line[256];
  while (fgets(line, sizeof line, kc)) {
    line[strcspn(line, "\n")] = '\0';
    char *sp = strchr(line, ' ');
    cr_assert(sp, "kcat printed an unexpected line: %s", line);
    int i = rt_key_parse(line, (size_t)(sp - line));
    cr_assert_geq(i, 0, "kcat printed an unexpected line: %s", line);
    char val[64];
    rt_value(val, sizeof val, i);
    cr_assert_str_eq(sp + 1, val, "kcat: message %d", i);
    seen[i]++;
    lines++;
  }
  int st = pclose(kc);
  cr_assert_eq(st, 0, "kcat exited with status %d (is kcat installed?)", st);
  cr_assert_eq(lines, RT_N, "kcat read %d messages, expected %d", lines, RT_N);
  for (int i = 0; i < RT_N; i++) cr_assert_eq(seen[i], 1, "kcat saw message %d %d times", i, seen[i]);
}

/* ------------------------------------------------------------- transactions */

static void txn_ok(rd_kafka_error_t *error, const char *what) {
  if (error) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    cr_assert_fail("%s: %s", what, msg);
  }
}

static void txn_produce(rd_kafka_t *rk, const char *topic, const char *tag, int n) {
  for (int i = 0; i < n; i++) {
    char val[64];
    snprintf(val, sizeof val, "%s-%d", tag, i);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_VALUE(val, strlen(val)),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(err));
  }
}

/* Adds "offset OFF of TOPIC/0 consumed by GROUP" to the open transaction. */
static void txn_send_offsets(rd_kafka_t *rk, const char *topic, const char *group, int64_t off) {
  rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(offs, topic, 0)->offset = off;
  rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata_new(group);
  txn_ok(rd_kafka_send_offsets_to_transaction(rk, offs, cgmd, WAIT_MS), "send_offsets");
  rd_kafka_consumer_group_metadata_destroy(cgmd);
  rd_kafka_topic_partition_list_destroy(offs);
}

/* Reads TOPIC/0 from the beginning to the end visible at ISOLATION and counts the
 * values starting with "commit" and with "abort". */
static void txn_read(const char *topic, const char *isolation, int *n_commit, int *n_abort) {
  char group[128];
  sl_test_kafka_name(group, sizeof group, "sluice-txn-reader");
  rd_kafka_conf_t *conf = conf_base();
  conf_set(conf, "group.id", group);
  conf_set(conf, "isolation.level", isolation);
  conf_set(conf, "enable.partition.eof", "true");
  conf_set(conf, "enable.auto.commit", "false");
  rd_kafka_t *rk = client_new(RD_KAFKA_CONSUMER, conf);
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t *asg = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(asg, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
  cr_assert_eq(rd_kafka_assign(rk, asg), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(asg);

  *n_commit = *n_abort = 0;
  bool eof = false;
  int64_t deadline = now_ms() + WAIT_MS;
  while (!eof && now_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      eof = true;
    } else {
      cr_assert_eq(m->err, RD_KAFKA_RESP_ERR_NO_ERROR, "%s consume: %s", isolation,
                   rd_kafka_message_errstr(m));
      if (m->len >= 6 && memcmp(m->payload, "commit", 6) == 0)
        (*n_commit)++;
      else if (m->len >= 5 && memcmp(m->payload, "abort", 5) == 0)
        (*n_abort)++;
      else
        cr_assert_fail("unexpected value %.*s", (int)m->len, (const char *)m->payload);
    }
    rd_kafka_message_destroy(m);
  }
  cr_assert(eof, "%s reader did not reach the end of %s", isolation, topic);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

Test(kafka, transactions, .timeout = 240) {
  bootstrap_load();
  char topic[128], txn_id[128], group[128];
  sl_test_kafka_name(topic, sizeof topic, "sluice-txn");
  sl_test_kafka_name(txn_id, sizeof txn_id, "sluice-txn-id");
  sl_test_kafka_name(group, sizeof group, "sluice-txn-group");

  rd_kafka_conf_t *conf = conf_base();
  conf_set(conf, "transactional.id", txn_id);
  conf_set(conf, "transaction.timeout.ms", "60000");
  rd_kafka_t *prod = client_new(RD_KAFKA_PRODUCER, conf);
  topic_create(topic, 1);

  txn_ok(rd_kafka_init_transactions(prod, WAIT_MS), "init_transactions");

  txn_ok(rd_kafka_begin_transaction(prod), "begin A");
  txn_produce(prod, topic, "commitA", 10);
  txn_send_offsets(prod, topic, group, 10);
  txn_ok(rd_kafka_commit_transaction(prod, WAIT_MS), "commit A");

  txn_ok(rd_kafka_begin_transaction(prod), "begin B");
  txn_produce(prod, topic, "abortB", 10);
  cr_assert_eq(rd_kafka_flush(prod, WAIT_MS), RD_KAFKA_RESP_ERR_NO_ERROR); /* B hits the log */
  txn_send_offsets(prod, topic, group, 99);
  txn_ok(rd_kafka_abort_transaction(prod, WAIT_MS), "abort B");

  txn_ok(rd_kafka_begin_transaction(prod), "begin C");
  txn_produce(prod, topic, "commitC", 5);
  txn_ok(rd_kafka_commit_transaction(prod, WAIT_MS), "commit C");
  rd_kafka_destroy(prod);

  int n_commit, n_abort;
  txn_read(topic, "read_committed", &n_commit, &n_abort);
  cr_assert_eq(n_commit, 15, "read_committed saw %d committed messages", n_commit);
  cr_assert_eq(n_abort, 0, "read_committed saw %d aborted messages", n_abort);
  txn_read(topic, "read_uncommitted", &n_commit, &n_abort);
  cr_assert_eq(n_commit, 15, "read_uncommitted saw %d committed messages", n_commit);
  cr_assert_eq(n_abort, 10, "read_uncommitted saw %d aborted messages (they must be in the log)",
               n_abort);

  /* The offsets sent in A are the group's; those of the aborted B are not. */
  rd_kafka_conf_t *cconf = conf_base();
  conf_set(cconf, "group.id", group);
  rd_kafka_t *cons = client_new(RD_KAFKA_CONSUMER, cconf);
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(parts, topic, 0);
  cr_assert_eq(rd_kafka_committed(cons, parts, WAIT_MS), RD_KAFKA_RESP_ERR_NO_ERROR);
  cr_assert_eq(parts->elems[0].err, RD_KAFKA_RESP_ERR_NO_ERROR);
  cr_assert_eq(parts->elems[0].offset, 10, "group %s committed offset %lld, expected 10", group,
               (long long)parts->elems[0].offset);
  rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_destroy(cons);
}
