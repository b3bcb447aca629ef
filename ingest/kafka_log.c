/*
 * kafka_log.c — librdkafka log lines into sl_log (kafka_log.h). The callback
 * runs on librdkafka's threads; sl_log writes each line with one write(), so
 * lines never interleave.
 */
#include "kafka_log.h"
#include "sl_err.h"
#include "sl_log.h"

#include <stdio.h>

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    sl_log_level_t l = level <= 3 ? SL_LOG_ERROR : level == 4 ? SL_LOG_WARN
                     : level <= 6 ? SL_LOG_INFO : SL_LOG_DEBUG;
    if (!sl_log_enabled(l)) return;
    sl_log(l, "kafka", "%s: %s (%s)", fac, buf, rk ? rd_kafka_name(rk) : "-");
}

void ingest_kafka_log_setup(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
}

int ingest_kafka_fetch_defaults(rd_kafka_conf_t *conf, char *errstr, size_t errsize)
{
    char e[256];
    if (rd_kafka_conf_set(conf, "queued.min.messages", "1000000", e, sizeof e) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errsize, "kafka option queued.min.messages: %s", e);
        return SL_EINVAL;
    }
    return 0;
}
