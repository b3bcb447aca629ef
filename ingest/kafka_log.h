/*
 * kafka_log.h — librdkafka's own log lines through util/sl_log, so that
 * `--log-format json` covers them too (librdkafka prints its own
 * "%3|ts|FAC|name| msg" lines to stderr otherwise).
 */
#ifndef INGEST_KAFKA_LOG_H
#define INGEST_KAFKA_LOG_H

#include <librdkafka/rdkafka.h>

/* Sets conf's log callback: syslog levels 0-3 -> error, 4 -> warn,
 * 5-6 -> info, 7 -> debug; component "kafka", message "FAC: text (client)". */
void ingest_kafka_log_setup(rd_kafka_conf_t *conf);

#endif
