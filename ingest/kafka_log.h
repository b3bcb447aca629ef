/*
 * kafka_log.h — librdkafka set-up shared by Sluice's consumers (the ingest
 * worker and the replay): its own log lines through util/sl_log, so that
 * `--log-format json` covers them too (librdkafka prints its own
 * "%3|ts|FAC|name| msg" lines to stderr otherwise), and the fetch defaults.
 */
#ifndef INGEST_KAFKA_LOG_H
#define INGEST_KAFKA_LOG_H

#include <librdkafka/rdkafka.h>

/* Sets conf's log callback: syslog levels 0-3 -> error, 4 -> warn,
 * 5-6 -> info, 7 -> debug; component "kafka", message "FAC: text (client)". */
void ingest_kafka_log_setup(rd_kafka_conf_t *conf);

/* Consumer fetch defaults, set before the config's kafka: keys (which may
 * override them). queued.min.messages=1000000: with librdkafka's 100000, a
 * consumer that is slower than the fetcher (catching up, replaying) found
 * its queue empty for 500-700 ms after every ~120k messages — 94 empty
 * 100 ms polls in 2M events, half of the ingest run's wall time. The queue
 * stays bounded by queued.max.messages.kbytes. 0 or SL_EINVAL (errstr set). */
int ingest_kafka_fetch_defaults(rd_kafka_conf_t *conf, char *errstr, size_t errsize);

#endif
