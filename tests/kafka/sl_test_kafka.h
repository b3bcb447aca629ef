/*
 * sl_test_kafka.h — small helpers for tests that run against the real test broker
 * (ctest fixture `kafka_broker`, see tests/kafka/CMakeLists.txt). Link `sl_test_kafka`.
 *
 * In CMake:
 *   target_link_libraries(my_test PRIVATE sl_test_kafka)
 *   set_tests_properties(my_test PROPERTIES FIXTURES_REQUIRED kafka_broker
 *     ENVIRONMENT "SLUICE_TEST_BOOTSTRAP_FILE=${CMAKE_BINARY_DIR}/kafka/bootstrap")
 *
 * All functions return 0 on success and -1 on failure with a message in errstr; none
 * calls exit or a test framework, so they work from Criterion, plain mains and forks.
 */
#ifndef SL_TEST_KAFKA_H
#define SL_TEST_KAFKA_H

#include <stddef.h>

/* Reads the broker's "host:port" from the file named by $SLUICE_TEST_BOOTSTRAP_FILE
 * (first line, trailing newline stripped) into out[size]. */
int sl_test_kafka_bootstrap(char *out, size_t size, char *errstr, size_t errsize);

/* Writes "<prefix>-<pid>-<realtime ns>" into out[size]: topic, group and transactional
 * ids that never meet those of another run or another forked test on the same broker. */
void sl_test_kafka_name(char *out, size_t size, const char *prefix);

/* Creates TOPIC with PARTITIONS partitions (replication factor 1) through the Admin
 * API and waits until the controller has created it (at most timeout_ms). An existing
 * topic is an error. Uses a short-lived client of its own. */
int sl_test_kafka_topic_create(const char *bootstrap, const char *topic, int partitions,
                               int timeout_ms, char *errstr, size_t errsize);

#endif
