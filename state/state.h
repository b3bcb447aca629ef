/*
 * state.h — durable per-entity view state in RocksDB, with Kafka offsets.
 *
 * Layout (see state.c for the byte format): one RocksDB database per worker.
 * Entity states are keyed by (view, version, partition, entity key), so that
 * one partition's state can be iterated, snapshotted and restored alone and a
 * backfill can build a new version of a view beside the serving one. The next
 * offset of every consumed (topic, partition) and its watermark are stored in
 * the same database and written in the same atomic write batch as the states
 * they cover: that is the exactly-once guarantee.
 *
 * Threads: one writer (the ingest thread) calls the batch functions; any
 * number of reader threads (serving) may call state_lookup*, state_progress,
 * state_offset_get, state_meta_get, state_iterate and state_stats at the
 * same time. Readers only ever see committed batches. Snapshots: snapshot.h.
 */
#ifndef STATE_H
#define STATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "sl_buf.h"

typedef struct state_store state_store_t;
typedef struct state_batch state_batch_t;

typedef struct state_options {
    bool create_if_missing;   /* true when opts is NULL */
    bool read_only;           /* open a checkpoint / another worker's dir for reading */
    size_t block_cache_bytes; /* 0 = default (64 MiB) */
} state_options_t;

/* Per-partition progress, written atomically with the states it covers. */
typedef struct state_partition_progress {
    char topic[256];
    int32_t partition;
    int64_t next_offset;      /* next offset to consume; -1 = none stored */
    int64_t watermark_ms;     /* partition watermark at commit */
} state_partition_progress_t;

/* Opens (creating if asked) the state directory `dir`, with mode 0700, and
 * takes an exclusive lock on it: a second process gets SL_EBUSY with a
 * message naming the holder. Returns 0 or SL_EIO/SL_EBUSY/SL_ECORRUPT with
 * errstr set. */
int state_open(const char *dir, const state_options_t *opts, state_store_t **out,
               char *errstr, size_t errsize);
void state_close(state_store_t *st);

/* Reads one entity's committed state bytes for a view into out (replacing its
 * contents). The partition is found from the key; `partition` may be -1 to
 * let the store locate it. Returns 0, SL_ENOTFOUND, or SL_ESTATE.
 * Thread-safe. */
int state_lookup(state_store_t *st, const char *view, int32_t partition,
                 const void *key, size_t klen, sl_buf_t *out);

/* Committed progress of every partition, for consistency tokens and restart.
 * Fills up to max entries; returns how many exist. Thread-safe. */
size_t state_progress(state_store_t *st, state_partition_progress_t *out, size_t max);

/* Stored next offset for (topic, partition): 0 and *next_offset, or SL_ENOTFOUND. */
int state_offset_get(state_store_t *st, const char *topic, int32_t partition,
                     int64_t *next_offset, int64_t *watermark_ms);

/* Arbitrary metadata (schema fingerprints, view versions): get/put strings. */
int state_meta_get(state_store_t *st, const char *name, sl_buf_t *out);
int state_meta_put(state_store_t *st, const char *name, const void *val, size_t len);

/* The definition a view's state was built with: the meta row
 * "view.<name>.fingerprint", whose text is the 16-hex-digit schema
 * fingerprint, or "backfill-pending:<hex>" while a backfill builds the view
 * (the ingest worker then sees a mismatch and refuses the view). */
typedef enum {
    STATE_VIEW_FP_ABSENT,     /* never recorded: a new view */
    STATE_VIEW_FP_BUILT,      /* *fp is the definition of the stored state */
    STATE_VIEW_FP_PENDING,    /* a backfill towards definition *fp runs */
    STATE_VIEW_FP_INVALID,    /* text of neither form (shown as stored) */
} state_view_fp_t;
/* 0 and *kind (*fp for BUILT and PENDING; `text`, if not NULL, gets the
 * stored text, truncated to textsize), or an error code of the store. */
int state_view_fp_get(state_store_t *st, const char *view, state_view_fp_t *kind, uint64_t *fp,
                      char *text, size_t textsize);
/* Records BUILT or PENDING for fp. */
int state_view_fp_put(state_store_t *st, const char *view, state_view_fp_t kind, uint64_t fp);

/* A write batch: entity states and partition progress, applied atomically by
 * state_batch_commit. The batch is reusable after commit. */
state_batch_t *state_batch_new(void);
void state_batch_free(state_batch_t *b);
int state_batch_put(state_batch_t *b, const char *view, int32_t partition,
                    const void *key, size_t klen, const void *val, size_t vlen);
int state_batch_delete(state_batch_t *b, const char *view, int32_t partition,
                       const void *key, size_t klen);
int state_batch_progress(state_batch_t *b, const char *topic, int32_t partition,
                         int64_t next_offset, int64_t watermark_ms);
/* Writes the batch durably (WAL synced) and clears it. Returns 0 or SL_ESTATE
 * (nothing of the batch applied: readers and the in-memory progress are
 * unchanged; the batch is kept). After SL_ESTATE from a failed disk write,
 * RocksDB may refuse further writes: stop, and restart from state_offset_get.
 * If the failure struck after the WAL record was complete (e.g. fsync
 * failed), the batch may be found applied after the restart — whole, states
 * with their progress — so resuming from the stored offsets stays exact. */
int state_batch_commit(state_store_t *st, state_batch_t *b, char *errstr, size_t errsize);

/* Snapshots: a RocksDB checkpoint of the whole store in `dir` (must not exist). */
int state_checkpoint(state_store_t *st, const char *dir, char *errstr, size_t errsize);

/* ---- Additions (beyond the first contract) ------------------------------ */

/* Meta name under which the schema fingerprint is kept (snapshot manifests
 * copy it). Per-view fingerprints: state_view_fp_get / _put. */
#define STATE_META_SCHEMA_FINGERPRINT "schema.fingerprint"

/* The directory the store was opened on (borrowed, lives as long as st). */
const char *state_dir(const state_store_t *st);

/* Number of batches committed since open (a cheap change counter for caches
 * and consistency tokens). Thread-safe, lock-free. */
uint64_t state_commit_count(const state_store_t *st);

/* View versions. Every view has a current (serving) version, 1 until set.
 * state_lookup, state_batch_put and state_batch_delete address the version
 * that is current when they run (for a batch: at commit). A backfill writes a
 * new version beside the current one with the _version variants, then cuts
 * over with state_view_version_set, then drops the old version.
 * version 0 in the _version variants means "current". */
int state_view_version_get(state_store_t *st, const char *view, uint32_t *version);
int state_view_version_set(state_store_t *st, const char *view, uint32_t version,
                           char *errstr, size_t errsize);
int state_view_version_drop(state_store_t *st, const char *view, uint32_t version,
                            char *errstr, size_t errsize);
int state_lookup_version(state_store_t *st, const char *view, uint32_t version,
                         int32_t partition, const void *key, size_t klen, sl_buf_t *out);
int state_batch_put_version(state_batch_t *b, const char *view, uint32_t version,
                            int32_t partition, const void *key, size_t klen,
                            const void *val, size_t vlen);
int state_batch_delete_version(state_batch_t *b, const char *view, uint32_t version,
                               int32_t partition, const void *key, size_t klen);

/* state_batch_put for an entity that state_lookup found in this very
 * partition (current version) since the last commit that touched it — the
 * common case of a write-back cache flushing a loaded entity: the
 * entity->partition index row is then already right and is not rewritten,
 * which halves the memtable work of such a put. Using it for an entity that
 * is new, or was found in another partition, breaks state_lookup(-1) for it. */
int state_batch_put_known(state_batch_t *b, const char *view, int32_t partition,
                          const void *key, size_t klen, const void *val, size_t vlen);

/* Operations queued in the batch (puts, deletes, progress records). */
size_t state_batch_count(const state_batch_t *b);
/* Discards everything queued (nothing is written). */
void state_batch_clear(state_batch_t *b);

/* Calls fn for every committed state of `view` (version 0 = current) in
 * `partition` (-1 = all partitions), in key order (partition, then entity key
 * bytes). A consistent point-in-time view of the store. Returns 0 when done,
 * fn's return value if it returns non-zero (iteration stops), SL_ESTATE.
 * A view never written iterates nothing. Thread-safe. */
typedef int (*state_iter_fn)(void *arg, int32_t partition, const void *key, size_t klen,
                             const void *val, size_t vlen);
int state_iterate(state_store_t *st, const char *view, uint32_t version, int32_t partition,
                  state_iter_fn fn, void *arg);

/* Deletes, in one atomic synced write, the states of the given views (their
 * current versions) in `partition` and the stored progress of (topic,
 * partition): the store then holds nothing of that partition, and a later
 * assignment starts it from scratch (or from a restored partition). Used on
 * revocation when a partition moves to another worker. Writer thread only. */
int state_partition_drop(state_store_t *st, const char *topic, int32_t partition,
                         const char *const *views, size_t n_views,
                         char *errstr, size_t errsize);

/* Replaces partition `partition` of the given views (current versions) and
 * the progress of (topic, partition) in dst by src's, in one atomic synced
 * write on dst: a partition moved between workers, or restored alone from a
 * snapshot (src opened read-only on the snapshot's db/). The views are those
 * fed by `topic`. The whole partition passes through memory once. Returns 0,
 * SL_ENOTFOUND (src has no progress for it), SL_EINVAL, SL_ESTATE, SL_ENOMEM.
 * Writer thread of dst; src may be in use by readers. */
int state_partition_copy(state_store_t *dst, state_store_t *src, const char *topic,
                         int32_t partition, const char *const *views, size_t n_views,
                         char *errstr, size_t errsize);

/* Follower: opens the state dir of ANOTHER process (the ingest worker that
 * owns it) as a RocksDB secondary instance, so a separate serving process
 * can read live state. Reads see the owner's commits as of the last
 * state_follow_refresh (whole batches only: never half a commit), including
 * progress and views. scratch_dir is the follower's own directory for its
 * info logs (created; one per follower process). No lock is taken; writes
 * are refused. Returns 0 or SL_ENOTFOUND/SL_EIO/SL_ECORRUPT with errstr. */
int state_open_follower(const char *dir, const char *scratch_dir, const state_options_t *opts,
                        state_store_t **out, char *errstr, size_t errsize);
/* Catches a follower up with its owner (call periodically, e.g. every 100 ms,
 * from one thread; readers may keep reading meanwhile). No-op on other stores.
 * Returns 0 or SL_ESTATE. */
int state_follow_refresh(state_store_t *st, char *errstr, size_t errsize);

/* Figures for metrics. Counters are since open. Thread-safe, cheap (a few
 * RocksDB property reads). */
typedef struct state_stats {
    uint64_t commits;               /* successful state_batch_commit calls */
    uint64_t commit_failures;
    uint64_t commit_ops;            /* state puts + deletes committed */
    uint64_t commit_bytes;          /* batch bytes committed (keys, values, framing) */
    uint64_t commit_us_total;       /* wall time in the RocksDB write (WAL append +
                                     * sync + memtable) of successful commits */
    uint64_t commit_us_last;
    uint64_t est_states;            /* RocksDB estimate of stored states */
    uint64_t sst_bytes;             /* live SST files, all column families */
    uint64_t memtable_bytes;        /* memtables, all column families */
    uint64_t block_cache_bytes;     /* block cache in use */
    uint64_t pending_compaction_bytes;
} state_stats_t;
void state_stats(state_store_t *st, state_stats_t *out);

/* Is the state directory locked by a live process? Returns 0 (free or absent)
 * or SL_EBUSY with "state dir X is in use by pid N" in errstr. */
int state_dir_check_unlocked(const char *dir, char *errstr, size_t errsize);

#endif
