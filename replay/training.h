/*
 * training.h — point-in-time training data: `sluice training-set`.
 *
 * Given a service and a label file (CSV with the entity key column(s) of the
 * service's entities, named like the entity's keys, and a timestamp column),
 * writes the label rows with one column per feature of the service, each
 * feature's value AS OF the row's timestamp: computed from exactly the
 * events with event time <= that timestamp (no leakage from the future),
 * and among those exactly the events the live worker accepts (the same
 * decoder, filters, per-partition watermarks and lateness rule, the same
 * aggregate code). See docs/backfill.md for the algorithm and its bounds.
 */
#ifndef REPLAY_TRAINING_H
#define REPLAY_TRAINING_H

#include <stddef.h>
#include <stdint.h>

#include "agg.h"
#include "schema.h"
#include "sl_buf.h"
#include "sl_config.h"

typedef struct training_options {
    const char *service;
    const char *labels_path;       /* "-" = stdin */
    const char *out_path;          /* "-" = stdout */
    const char *time_column;       /* default "timestamp" (epoch ms or RFC 3339) */
    size_t max_buffered_events;    /* reorder buffer cap; default 100,000 */
    int64_t progress_ms;           /* 0 = quiet */
} training_options_t;

typedef struct training_stats {
    uint64_t labels;               /* label rows */
    uint64_t messages;             /* Kafka messages read, all topics */
    uint64_t events;               /* good, accepted events applied */
    uint64_t bad;                  /* undecodable messages (skipped, as live) */
    uint64_t late;                 /* events live ingest drops as late */
    uint64_t entities;             /* entity states built (peak, over passes) */
    uint64_t buffered_max;         /* largest reorder buffer seen */
    double read_labels_s, replay_s, write_s, total_s;
} training_stats_t;

/* Runs the whole job. Returns 0, or SL_EINVAL (unknown service, label file
 * without a needed column, a bad key or timestamp: errstr names the line),
 * SL_EPARSE (CSV syntax), SL_EIO, SL_EKAFKA, SL_ENOMEM. */
int training_set_run(const sl_config_t *cfg, const schema_t *schema,
                     const training_options_t *opts, training_stats_t *stats,
                     char *errstr, size_t errsize);

/* Formats a feature value as the serving tier does (RESP bulk text): ints in
 * decimal, doubles by resp_format_double, strings raw, last_n lists as a
 * JSON array, NULL/absent as nothing (an empty cell). Appends to b. */
int training_format_value(sl_buf_t *b, const agg_value_t *v);

#endif
