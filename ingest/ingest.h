/*
 * ingest.h — the streaming ingest worker: Kafka in, exactly-once per-entity
 * window state out (RocksDB via state.h).
 *
 * One worker = one thread running ingest_worker_run(): a librdkafka consumer
 * in a group, reading the topics of every source that feeds a view. Each
 * message is decoded (decode.h), its partition watermark advanced
 * (watermark.h), and every view of the source updated in a write-back cache
 * (cache.h). Every commit_interval_ms (or, when the store takes longer than
 * that to write one batch, as soon as the previous one is durable) the dirty
 * states, the next offset and watermark of every partition that moved, and
 * the partition's persisted counters go to RocksDB in ONE atomic batch. On assignment a partition
 * resumes from the offset stored with its state (never Kafka's committed
 * offset), so a crash at any instant neither loses nor double-counts an event.
 * Kafka offsets are also committed asynchronously, for lag monitoring only.
 *
 * Partition life (rebalance callback, ingest thread):
 *
 *     unassigned --assign: seek to stored next_offset (none: earliest),
 *         ^        restore watermark and counters--> assigned
 *         |                                            | message: apply,
 *         |                                            | next_offset = off+1
 *         +--revoke: commit state, drop cached <-------+
 *                    entities of the partition
 */
#ifndef INGEST_H
#define INGEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "decode.h"
#include "schema.h"
#include "sl_config.h"
#include "state.h"

typedef struct ingest_worker ingest_worker_t;

typedef struct ingest_options {
    /* Stop (after a final commit) once every assigned partition has reached
     * its end. For catch-up runs, tests and benchmarks. */
    bool exit_at_eof;
    /* Log progress (to stderr) at this period; 0 = never. */
    int64_t progress_log_ms;
} ingest_options_t;

/* One assigned partition's high watermark (log end offset) as the worker's
 * consumer last saw it, from its own fetch responses (no broker round trip:
 * fresh while it consumes, the last known value while brokers are down). */
typedef struct ingest_hwm {
    const char *topic;                  /* the schema's string: lives as long as the worker */
    int32_t partition;
    int64_t high;
} ingest_hwm_t;

#define INGEST_HWM_MAX 4096         /* partitions published, at most */
#define INGEST_HWM_REFRESH_MS 100

/* Live counters of one worker since it started. Written by the ingest thread
 * with relaxed atomics; any thread (metrics, serving) may read them. */
typedef struct ingest_stats {
    _Atomic uint64_t messages;          /* messages taken from Kafka (good + bad) */
    _Atomic uint64_t bad[INGEST_BAD__COUNT];   /* by reason; [0] unused */
    _Atomic uint64_t late;              /* good events behind accept_from */
    _Atomic uint64_t commits;           /* state batches committed */
    _Atomic uint64_t commit_errors;
    _Atomic uint64_t commit_us_last;    /* duration of the last commit */
    _Atomic uint64_t commit_us_max;
    _Atomic uint64_t commit_us_sum;
    _Atomic uint64_t committed_entities; /* entity states written, all commits */
    _Atomic uint64_t commit_cpu_us;     /* CPU time of the committer thread so far */
    _Atomic uint64_t commit_build_us;   /* wall time the ingest thread spent expiring
                                           and encoding dirty states into batches */
    _Atomic uint64_t final_cpu_us;      /* CPU time of the ingest thread up to the final commit */
    _Atomic uint64_t final_committed;   /* 1 once the run's final commit is durable (the
                                         * consumer is closed and the cache freed after it) */
    _Atomic uint64_t first_message_us;  /* monotonic clock at the first message; 0 = none yet */
    _Atomic uint64_t final_commit_us;   /* ...and once the final commit was durable */
    _Atomic uint64_t dead_letters;      /* produced to the dead-letter topic */
    _Atomic uint64_t dead_letter_errors;
    _Atomic uint64_t cache_entries;
    _Atomic uint64_t cache_evictions;
    _Atomic uint64_t rebalances;
    _Atomic uint64_t snapshots;         /* periodic + requested, taken by this worker */
    _Atomic uint64_t snapshot_errors;
    _Atomic uint64_t snapshot_last_ms;  /* wall clock of the newest one; 0 = none yet */
    size_t n_sources, n_views;
    _Atomic uint64_t *source_events;    /* [n_sources] good events decoded */
    _Atomic uint64_t *view_events;      /* [n_views] events applied to the view */
    /* The assigned partitions' high watermarks, refreshed by the worker
     * thread every INGEST_HWM_REFRESH_MS (consumer lag = high - the
     * committed next offset). n_hwm and hwm[] are under hwm_mu. */
    pthread_mutex_t hwm_mu;
    size_t n_hwm;
    ingest_hwm_t *hwm;                  /* [INGEST_HWM_MAX] */
} ingest_stats_t;

/* Counters persisted per (topic, partition) with every commit, so they are
 * exact across crashes (a replayed message is counted once). */
typedef struct ingest_counts {
    uint64_t messages;
    uint64_t good;
    uint64_t late;
    uint64_t bad[INGEST_BAD__COUNT];
} ingest_counts_t;

/* Pseudo-view name under which ingest_counts_t records live in the store
 * (key = topic name, partition = the partition). */
#define INGEST_COUNTS_VIEW "__sluice.ingest.counts"

/* Creates a worker. Borrows cfg, schema and st, which must outlive it.
 * Checks every view's fingerprint against the store: a changed view gives
 * SL_ESCHEMA with a message naming it and the backfill command; new views'
 * fingerprints are recorded. Returns 0, SL_ESCHEMA, SL_EINVAL (e.g. two
 * sources on one topic, bad kafka.* option), SL_EKAFKA, SL_ENOMEM, SL_ESTATE
 * with errstr set. */
int ingest_worker_new(const sl_config_t *cfg, const schema_t *schema, state_store_t *st,
                      const ingest_options_t *opts, ingest_worker_t **out,
                      char *errstr, size_t errsize);

/* Consumes until ingest_worker_stop() (or, with exit_at_eof, until caught
 * up), then commits and closes the consumer. Returns 0 after a clean stop,
 * or a negative SL_E* code after a fatal error (errstr set); state committed
 * before the error stays valid and a restart resumes from it. */
int ingest_worker_run(ingest_worker_t *w, char *errstr, size_t errsize);

/* Asks the worker to stop. Async-signal-safe; callable from any thread. */
void ingest_worker_stop(ingest_worker_t *w);

/* Live counters (valid as long as the worker). */
const ingest_stats_t *ingest_worker_stats(const ingest_worker_t *w);

void ingest_worker_free(ingest_worker_t *w);

/* Reads the persisted counters of one partition from a store (zeros and
 * SL_ENOTFOUND if none). Thread-safe. */
int ingest_counts_load(state_store_t *st, const char *topic, int32_t partition,
                       ingest_counts_t *out);

/* Prints the live counters as "name value" lines. */
void ingest_stats_print(const ingest_stats_t *s, const schema_t *schema, FILE *f);

#endif
