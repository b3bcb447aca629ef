/*
 * sl_test_kafka.c — helpers for tests against the real test broker (see the header).
 * Each call owns every librdkafka object it makes and frees them before returning;
 * nothing is global, so forked Criterion workers may call them concurrently.
 */
#include "sl_test_kafka.h"

#include <librdkafka/rdkafka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int sl_test_kafka_bootstrap(char *out, size_t size, char *errstr, size_t errsize) {
  const char *path = getenv("SLUICE_TEST_BOOTSTRAP_FILE");
  if (!path || !*path) {
    snprintf(errstr, errsize, "SLUICE_TEST_BOOTSTRAP_FILE is not set (run the test through "
             "ctest, which starts the broker fixture)");
    return -1;
  }
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(errstr, errsize, "cannot open bootstrap file %s (is the kafka_broker fixture "
             "running?)", path);
    return -1;
  }
  char *line = fgets(out, (int)size, f);
  fclose(f);
  if (!line) {
    snprintf(errstr, errsize, "bootstrap file %s is empty", path);
    return -1;
  }
  out[strcspn(out, "\r\n")] = '\0';
  if (!out[0]) {
    snprintf(errstr, errsize, "bootstrap file %s has an empty first line", path);
    return -1;
  }
  return 0;
}

void sl_test_kafka_name(char *out, size_t size, const char *prefix) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(out, size, "%s-%ld-%lld%09ld", prefix, (long)getpid(), (long long)ts.tv_sec,
           ts.tv_nsec);
}

int sl_test_kafka_topic_create(const char *bootstrap, const char *topic, int partitions,
                               int timeout_ms, char *errstr, size_t errsize) {
  int rc = -1;
  char cerr[512];
  rd_kafka_t *rk = NULL;
  rd_kafka_NewTopic_t *nt = NULL;
  rd_kafka_AdminOptions_t *opt = NULL;
  rd_kafka_queue_t *q = NULL;
  rd_kafka_event_t *ev = NULL;

  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, cerr, sizeof cerr) !=
      RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    snprintf(errstr, errsize, "bootstrap.servers: %s", cerr);
    return -1;
  }
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, cerr, sizeof cerr);
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    snprintf(errstr, errsize, "rd_kafka_new: %s", cerr);
    return -1;
  }
  nt = rd_kafka_NewTopic_new(topic, partitions, 1, cerr, sizeof cerr);
  if (!nt) {
    snprintf(errstr, errsize, "NewTopic(%s): %s", topic, cerr);
    goto cleanup_client;
  }
  opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  if (rd_kafka_AdminOptions_set_operation_timeout(opt, timeout_ms, cerr, sizeof cerr) ||
      rd_kafka_AdminOptions_set_request_timeout(opt, timeout_ms, cerr, sizeof cerr)) {
    snprintf(errstr, errsize, "AdminOptions: %s", cerr);
    goto cleanup_topic;
  }
  q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &nt, 1, opt, q);
  /* The request has its own timeout; allow a little more for the result event. */
  ev = rd_kafka_queue_poll(q, timeout_ms + 5000);
  if (!ev) {
    snprintf(errstr, errsize, "CreateTopics(%s): no result within %d ms", topic, timeout_ms);
    goto cleanup_queue;
  }
  if (rd_kafka_event_error(ev)) {
    snprintf(errstr, errsize, "CreateTopics(%s): %s", topic, rd_kafka_event_error_string(ev));
    goto cleanup_event;
  }
  const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
  size_t n = 0;
  const rd_kafka_topic_result_t **tr = res ? rd_kafka_CreateTopics_result_topics(res, &n) : NULL;
  if (n != 1) {
    snprintf(errstr, errsize, "CreateTopics(%s): %zu results, expected 1", topic, n);
    goto cleanup_event;
  }
  if (rd_kafka_topic_result_error(tr[0])) {
    snprintf(errstr, errsize, "CreateTopics(%s): %s", topic,
             rd_kafka_topic_result_error_string(tr[0]));
    goto cleanup_event;
  }
  rc = 0;

cleanup_event:
  rd_kafka_event_destroy(ev);
cleanup_queue:
  rd_kafka_queue_destroy(q);
cleanup_topic:
  if (opt) rd_kafka_AdminOptions_destroy(opt);
  rd_kafka_NewTopic_destroy(nt);
cleanup_client:
  rd_kafka_destroy(rk);
  return rc;
}
