/*
 * backfill.h — rebuilding one feature view from its topic's history into a
 * NEW version of its state, then switching serving over atomically.
 *
 * Used by `sluice backfill` (cmd/cmd_backfill.c) and `sluice check
 * --state-dir`. The cut-over state machine, the resume rules and the way the
 * live worker and the backfill share the (flock-ed) state directory are in
 * docs/backfill.md and in the design note of backfill.c.
 */
#ifndef REPLAY_BACKFILL_H
#define REPLAY_BACKFILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "schema.h"
#include "sl_config.h"
#include "state.h"

/* Pseudo-view holding a backfill's per-partition progress (key = view name),
 * written in the same batch as the new version's states. */
#define BACKFILL_PROGRESS_VIEW "__sluice.backfill.progress"
/* Meta value prefix of a view fingerprint while its backfill is running:
 * the ingest worker sees a mismatch and refuses to start with the view. */
#define BACKFILL_PENDING_PREFIX "backfill-pending:"

typedef struct backfill_options {
    const char *view;
    int64_t from_ms;              /* REPLAY_FROM_EARLIEST or epoch ms (a fresh start only) */
    bool live;                    /* run live ingest of the other views meanwhile */
    int64_t progress_ms;          /* 0 = quiet */
    int64_t commit_interval_ms;   /* state commits of the new version; 0 = 10 s */
    int64_t catchup_lag;
    bool force;                   /* rebuild even when the definition did not change */          /* cut over when the lag is at most this many offsets (default 0) */
} backfill_options_t;

typedef struct backfill_stats {
    uint64_t messages, events, bad, late;
    uint32_t old_version, new_version;
    bool resumed;
    double replay_s, cutover_ms, total_s;
} backfill_stats_t;

/* Runs (or resumes) the backfill of opts->view on the open, writable store
 * st (this process holds its lock), until the new version serves. Returns 0,
 * SL_EINVAL (unknown view, bad option), SL_EEXISTS (up to date: the stored
 * fingerprint is the view's and no backfill is pending; opts->force rebuilds
 * anyway), SL_EKAFKA, SL_ESTATE, SL_ENOMEM,
 * SL_ESHUTDOWN (backfill_stop: progress is committed, a rerun resumes). */
int backfill_run(const sl_config_t *cfg, const schema_t *schema, state_store_t *st,
                 const backfill_options_t *opts, backfill_stats_t *stats,
                 char *errstr, size_t errsize);

/* Asks a running backfill to stop after its next commit. Async-signal-safe. */
void backfill_stop(void);

/* The state of every view of `schema` against the store in `state_dir`
 * (opened read-only: works while a worker runs): "ok", "new", "needs
 * backfill (changed|new on a consumed topic)" or "backfill in progress",
 * with the exact command. Returns how many views need a backfill (>= 0) or
 * a negative SL_E* code (errstr set). */
int backfill_check(const schema_t *schema, const char *state_dir, const char *config_path,
                   FILE *out, char *errstr, size_t errsize);

#endif
