/*
 * replay.h — reading a source topic's history again: the replay consumer and
 * its progress report, shared by `sluice training-set` and `sluice backfill`.
 *
 * A replay_t is a librdkafka consumer that ASSIGNS every partition of one
 * topic itself (no consumer group, no rebalancing, no offset commits: the
 * replay owns its positions) and reads each partition from a start offset
 * (the earliest, the first offset at or after a timestamp, or an explicit
 * offset for a resume) up to an END offset per partition. The ends are the
 * high watermarks snapshotted at replay_new (a bounded replay: history as it
 * was when we started); the caller may raise them later (replay_set_end,
 * replay_refresh_ends: following the topic or a live worker's committed
 * offsets) or set them exactly before starting (replay_set_bound). Each
 * partition is read from its own queue, so a partition at its end, or held
 * by the caller, is simply not read: nothing past the end is ever returned.
 *
 * Partition life:
 *
 *     reading --position >= end--> at_end --end raised--> reading
 *        |  ^
 *        |  +--replay_resume_partition--+
 *        +--replay_pause_partition--> held (not read; librdkafka's prefetch
 *                                      for it fills up and stops)
 *
 * Progress (per partition and overall: offsets done of total, events/s,
 * estimated time left) is drawn as one line redrawn in place when stderr is
 * a terminal, and as plain sl_log lines otherwise (or handed to a sink).
 *
 * Threads: a replay_t belongs to the thread that calls replay_poll.
 */
#ifndef REPLAY_H
#define REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <librdkafka/rdkafka.h>

#include "sl_config.h"

typedef struct replay replay_t;

/* Start of a replay: every partition at its earliest offset, or at the first
 * offset whose Kafka timestamp is >= from_ms (offsets-for-times). */
#define REPLAY_FROM_EARLIEST INT64_MIN

typedef struct replay_options {
    const char *topic;
    int64_t from_ms;              /* REPLAY_FROM_EARLIEST or epoch ms */
    const char *what;             /* label of the progress line ("training-set orders") */
    int64_t progress_ms;          /* progress period; 0 = no progress output */
    int timeout_ms;               /* metadata / offsets requests, default 10000 */
    /* Where progress lines go instead of stderr / the log (a backfill hosted
     * by `sluice run` relays them to its client); called from the replaying
     * thread every progress_ms and once with final = true. */
    void (*progress_fn)(void *arg, const char *line, bool final);
    void *progress_arg;
} replay_options_t;

/* Per-partition figures (replay_partition). */
typedef struct replay_part_info {
    int32_t partition;
    int64_t start;                /* first offset of the replay */
    int64_t position;             /* next offset to read */
    int64_t end;                  /* stop before this offset (INT64_MAX: follow) */
    bool at_end;
} replay_part_info_t;

/* Creates the consumer for opts->topic with cfg's brokers and kafka.*
 * options, finds the partitions, snapshots their high watermarks as ends and
 * resolves the start offsets. It does not start fetching (replay_start).
 * Returns 0, SL_ENOTFOUND (no such topic), SL_EKAFKA, SL_EINVAL or SL_ENOMEM
 * with errstr set. */
int replay_new(const sl_config_t *cfg, const replay_options_t *opts, replay_t **out,
               char *errstr, size_t errsize);
void replay_free(replay_t *r);

size_t replay_partition_count(const replay_t *r);
void replay_partition(const replay_t *r, size_t i, replay_part_info_t *out);

/* Before replay_start: overrides the start of one partition (a resume from a
 * stored next offset). offset < 0 keeps the resolved start. */
int replay_set_start(replay_t *r, int32_t partition, int64_t offset);

/* Assigns every partition at its start and begins fetching. */
int replay_start(replay_t *r, char *errstr, size_t errsize);

/* Moves the end of a partition (it may only grow; a smaller value is
 * ignored) and resumes it if it was at its end. INT64_MAX = follow. */
void replay_set_end(replay_t *r, int32_t partition, int64_t end);
/* Sets the end of a partition exactly (it may shrink, never below the
 * position). For a replay bounded by offsets stored elsewhere. */
void replay_set_bound(replay_t *r, int32_t partition, int64_t end);
/* Raises every partition's end to its high watermark as last seen by the
 * fetcher (cached, non-blocking). */
int replay_refresh_ends(replay_t *r, char *errstr, size_t errsize);

/* Holding back a partition (flow control by the caller), and letting it go. */
void replay_pause_partition(replay_t *r, int32_t partition);
void replay_resume_partition(replay_t *r, int32_t partition);

/* Next message below its partition's end, or NULL after timeout_ms. The
 * caller destroys it (rd_kafka_message_destroy). Errors other than
 * partition EOF are logged and skipped; a fatal consumer error sets *fatal
 * (when not NULL). */
rd_kafka_message_t *replay_poll(replay_t *r, int timeout_ms, int *fatal);

/* Every partition's position has reached its end. */
bool replay_done(const replay_t *r);
/* Offsets still to read, summed over partitions (0 when done; following
 * partitions count up to their last known high watermark). */
int64_t replay_lag(const replay_t *r);

/* Counts one event for the events/s figure (messages are counted by
 * replay_poll; events are what the caller applied). */
void replay_count_events(replay_t *r, uint64_t n);
/* Draws or logs progress if the period elapsed (force: now). final: the
 * closing line (ends the redrawn line with a newline). */
void replay_progress(replay_t *r, bool force, bool final);
/* Totals since replay_start. */
uint64_t replay_messages(const replay_t *r);
double replay_elapsed_s(const replay_t *r);

/* Formats "12.3k" style counts into buf (for progress lines). */
const char *replay_human(double v, char *buf, size_t size);

#endif
