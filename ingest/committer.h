/*
 * committer.h — the pipelined committer: a thread that runs the caller's
 * commit jobs (in Sluice, state_batch_commit: the synced RocksDB write of a
 * batch) one at a time while the caller goes on working. Live ingest
 * (worker.c) and backfills (replay/backfill.c) each run one.
 *
 *   caller:     build #k -> submit #k --- work --- wait #k, after-durable steps, build #k+1
 *   committer:                  run(#k) ---> done
 *
 * At most one job is in flight: submit requires that the previous job has
 * been waited for. The caller may not touch the submitted job (the batch)
 * until wait returns; what the job function wrote into memory the caller
 * owns is visible to the caller once wait has returned.
 *
 * The module only runs jobs: what a result means (stats, the steps allowed
 * only once a write is durable, whether a failure stops further commits) is
 * the caller's. A failed job is reported by the wait for it, once.
 *
 * Threads: start, submit, pending, busy, wait and stop are called by one
 * thread, the owner; the job function runs on the committer thread.
 */
#ifndef INGEST_COMMITTER_H
#define INGEST_COMMITTER_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ingest_committer ingest_committer_t;

/* A job: runs on the committer thread with the `arg` given to start and the
 * job given to submit. Returns 0 or a negative SL_E* code; on failure it may
 * describe the error in errstr (which is "" when the job starts). */
typedef int (*ingest_commit_fn)(void *arg, void *job, char *errstr, size_t errsize);

/* Starts the committer thread, named thread_name (at most 15 characters are
 * kept: for top -H and perf). Returns 0 and *out, or SL_ENOMEM with a message
 * in errstr (the thread or memory could not be had) and *out = NULL. */
int ingest_committer_start(ingest_committer_t **out, const char *thread_name, ingest_commit_fn fn,
                           void *arg, char *errstr, size_t errsize);

/* Hands `job` to the committer thread and returns at once. Nothing may be
 * pending (the previous job was waited for). */
void ingest_committer_submit(ingest_committer_t *c, void *job);

/* Is a job submitted and not yet waited for? c may be NULL (not started:
 * false). Does not block. */
bool ingest_committer_pending(const ingest_committer_t *c);

/* Is a job submitted and still running, so that wait would block? c may be
 * NULL (false). Does not block beyond the committer's short lock. */
bool ingest_committer_busy(ingest_committer_t *c);

/* Waits until the pending job, if any, has finished, and returns its result:
 * 0, or its negative code with the job's message in errstr ("" if it gave
 * none). With nothing pending (or c NULL), returns 0 at once. errstr is
 * untouched unless the job failed. Afterwards nothing is pending and the job
 * belongs to the caller again. */
int ingest_committer_wait(ingest_committer_t *c, char *errstr, size_t errsize);

/* Stops the committer thread and frees c (NULL: nothing). A job still
 * pending is run to its end first and its result dropped: callers that need
 * it wait before. */
void ingest_committer_stop(ingest_committer_t *c);

#endif
