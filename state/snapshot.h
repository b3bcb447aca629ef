/*
 * snapshot.h — named snapshots of a state store: a RocksDB checkpoint plus a
 * JSON manifest, listed, verified, restored and pruned.
 *
 * On disk: <snapshot_dir>/<name>/manifest.json and <snapshot_dir>/<name>/db/
 * (the checkpoint; SST files are hard links where the file system allows, so
 * a snapshot costs little until compaction rewrites the live files). A
 * snapshot appears under its name only when complete (built in a hidden
 * ".tmp-" directory, then renamed), so a crash never leaves a half snapshot
 * that looks valid.
 *
 * The manifest records the per-partition progress (next offset, watermark)
 * read back from the checkpoint itself — so it always matches the states in
 * it — the schema fingerprint, creation time, sluice version, and every file
 * of the checkpoint with its size. Restoring a snapshot and resuming
 * consumption from its offsets continues exactly where the snapshot stood.
 *
 * Threads: create/periodic run on the store's writer thread (they call
 * state_meta_put and state_checkpoint); the others touch only files.
 */
#ifndef STATE_SNAPSHOT_H
#define STATE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "state.h"

#define STATE_SNAPSHOT_NAME_MAX 128

typedef struct state_snapshot_info {
    char name[STATE_SNAPSHOT_NAME_MAX + 1];
    bool valid;                  /* manifest read and well formed */
    char error[512];             /* why not, when !valid */
    int64_t created_ms;
    char kind[16];               /* "manual" or "periodic" */
    char sluice_version[32];
    char schema_fingerprint[128];/* "" when the store had none */
    uint64_t size_bytes;         /* apparent bytes of the checkpoint files */
    state_partition_progress_t *partitions;   /* owned; free with _info_free */
    size_t n_partitions;
} state_snapshot_info_t;

/* Snapshot names: 1..128 characters of [A-Za-z0-9._-], not starting with '.'. */
bool state_snapshot_name_valid(const char *name);

/* Creates snapshot `name` (NULL: "snap-YYYYMMDD-HHMMSS" UTC) of `st` under
 * snapshot_dir (created 0700 if missing). schema_fingerprint, when not NULL,
 * is first stored in the store's meta (STATE_META_SCHEMA_FINGERPRINT); when
 * NULL the stored one (if any) goes into the manifest. On success returns 0
 * and, when info is not NULL, fills it (free with state_snapshot_info_free).
 * Errors: SL_EINVAL (bad name), SL_EEXISTS, SL_EIO, SL_ESTATE, errstr set.
 * Writer thread. */
int state_snapshot_create(state_store_t *st, const char *snapshot_dir, const char *name,
                          const char *schema_fingerprint, state_snapshot_info_t *info,
                          char *errstr, size_t errsize);

/* Periodic snapshot for the ingest loop: creates "auto-YYYYMMDD-HHMMSS-mmm"
 * (kind "periodic"), then deletes the oldest periodic snapshots so that
 * exactly `retain` (>= 1) periodic ones remain; manual snapshots and invalid
 * directories are never touched. created_name (may be NULL) receives the
 * name. Returns 0 or an error of create (nothing pruned then) or of a delete.
 * Writer thread. */
int state_snapshot_periodic(state_store_t *st, const char *snapshot_dir, int retain,
                            const char *schema_fingerprint, char *created_name,
                            size_t created_size, char *errstr, size_t errsize);

/* Reads and checks the manifest of one snapshot. Returns 0, SL_ENOTFOUND (no
 * such snapshot), SL_ECORRUPT (manifest missing, not JSON, fields missing or
 * of the wrong type), SL_EVERSION (newer manifest format); info->error and
 * errstr say which. info is always initialised (free it either way). */
int state_snapshot_read(const char *snapshot_dir, const char *name,
                        state_snapshot_info_t *info, char *errstr, size_t errsize);

/* state_snapshot_read, plus: every file the manifest lists exists with its
 * size, and the checkpoint opens and holds exactly the manifest's progress.
 * Returns 0 or SL_ENOTFOUND / SL_ECORRUPT / SL_EVERSION with errstr set. */
int state_snapshot_verify(const char *snapshot_dir, const char *name,
                          state_snapshot_info_t *info, char *errstr, size_t errsize);

/* All snapshots in snapshot_dir, oldest first (invalid ones included with
 * valid = false). *out is NULL and *n 0 when the directory is absent.
 * Returns 0, SL_EIO or SL_ENOMEM. Free with state_snapshot_list_free. */
int state_snapshot_list(const char *snapshot_dir, state_snapshot_info_t **out, size_t *n,
                        char *errstr, size_t errsize);
void state_snapshot_list_free(state_snapshot_info_t *list, size_t n);
void state_snapshot_info_free(state_snapshot_info_t *info);

/* Restores snapshot `name` into state_dir, which must be absent or empty (or
 * left by an interrupted restore). Refuses with SL_EBUSY when a process holds
 * the state dir, SL_EEXISTS when it holds data. Verifies the snapshot first
 * and the restored store after. Holds the state dir's lock meanwhile and
 * marks it so that a crash mid-restore is refused by state_open. Returns 0 or
 * SL_E* with errstr set. */
int state_snapshot_restore(const char *snapshot_dir, const char *name, const char *state_dir,
                           char *errstr, size_t errsize);

/* Restores one partition alone: partition `partition` of `views` and the
 * progress of (topic, partition) from snapshot `name` replace what the open
 * store `dst` holds for them (state_partition_copy from the verified
 * snapshot). Other partitions of dst are untouched. Returns 0 or SL_E* with
 * errstr set (SL_ENOTFOUND: the snapshot has no progress for it). Writer
 * thread of dst. */
int state_snapshot_restore_partition(const char *snapshot_dir, const char *name,
                                     state_store_t *dst, const char *topic, int32_t partition,
                                     const char *const *views, size_t n_views,
                                     char *errstr, size_t errsize);

/* On-demand snapshots of a running worker. `sluice snapshot create` on a
 * locked state dir drops a request file into it (state_snapshot_request);
 * the worker calls state_snapshot_serve_request from its commit loop (one
 * stat() when there is no request), takes the snapshot between two commits
 * and writes a reply that the requester reads (state_snapshot_wait_reply).
 *
 * serve: returns 0 when there was no request or it was answered (the reply
 * carries the outcome, also copied into errstr on failure), an SL_E* code
 * only if the reply could not be written. *taken (may be NULL) tells whether
 * a snapshot was created (then `name`, if not NULL, holds its name).
 * Writer thread. */
int state_snapshot_serve_request(state_store_t *st, const char *snapshot_dir,
                                 const char *schema_fingerprint, bool *taken, char *name,
                                 size_t namesize, char *errstr, size_t errsize);
/* request: name may be NULL (default name). Fills id (>= 32 bytes) for
 * wait_reply. SL_EBUSY when another request is pending. */
int state_snapshot_request(const char *state_dir, const char *name, char *id, size_t idsize,
                           char *errstr, size_t errsize);
/* Waits up to timeout_ms for the reply to request `id`. Returns the
 * snapshot's outcome (0 with its name in name_out, or its error code with
 * the worker's message in errstr), or SL_ETIMEOUT (request withdrawn). */
int state_snapshot_wait_reply(const char *state_dir, const char *id, int64_t timeout_ms,
                              char *name_out, size_t name_size, char *errstr, size_t errsize);

/* Deletes snapshot `name`. Returns 0, SL_ENOTFOUND, SL_EINVAL, SL_EIO. */
int state_snapshot_delete(const char *snapshot_dir, const char *name,
                          char *errstr, size_t errsize);

#endif
