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

typedef struct backfill_options {
    const char *view;
    int64_t from_ms;              /* REPLAY_FROM_EARLIEST or epoch ms (a fresh start only) */
    bool live;                    /* run live ingest of the other views meanwhile */
    int64_t progress_ms;          /* 0 = quiet */
    int64_t commit_interval_ms;   /* state commits of the new version; 0 = 10 s */
    int64_t catchup_lag;          /* cut over when the lag is at most this many offsets (default 0) */
    bool force;                   /* rebuild even when the definition did not change */
    /* Hosted by `sluice run` (all NULL when standalone). Progress lines go
     * to progress_fn instead of stderr. switch_begin runs right before the
     * version switch (the serving side holds its requests; non-zero
     * aborts the cut-over, the backfill stays resumable) and switch_end
     * right after it (switched: the store now serves the new version), both
     * on the backfill's thread. */
    void (*progress_fn)(void *arg, const char *line, bool final);
    int (*switch_begin)(void *arg);
    void (*switch_end)(void *arg, bool switched);
    void *hook_arg;
} backfill_options_t;

typedef struct backfill_stats {
    uint64_t messages, events, bad, late;
    uint32_t old_version, new_version;
    bool resumed;
    double replay_s;              /* replay start .. the last batch durable */
    double cutover_ms;            /* caught up .. the new version serves (the last
                                   * reads and batch, the switch, the old version dropped) */
    double total_s;
    double switch_ms;             /* switch_begin .. switch_end (serving held) */
} backfill_stats_t;

/* Runs (or resumes) the backfill of opts->view on the open, writable store
 * st (this process holds its lock), until the new version serves. With
 * --from a timestamp, the new version is complete only from then on: the
 * meta entry "view.<name>.since_ms" records it (serving answers
 * PARTIAL_WINDOW for windows reaching further back); a backfill from the
 * earliest offset clears it. Returns 0,
 * SL_EINVAL (unknown view, bad option), SL_EEXISTS (up to date: the stored
 * fingerprint is the view's and no backfill is pending; opts->force rebuilds
 * anyway), SL_EKAFKA, SL_ESTATE, SL_ENOMEM,
 * SL_ESHUTDOWN (backfill_stop: progress is committed, a rerun resumes). */
int backfill_run(const sl_config_t *cfg, const schema_t *schema, state_store_t *st,
                 const backfill_options_t *opts, backfill_stats_t *stats,
                 char *errstr, size_t errsize);

/* Would live ingest of view `view` of `schema` be wrong without a backfill
 * first: its definition changed since its state was built (or its backfill
 * is pending), or it is new on a topic the store already consumed? */
bool backfill_view_needs(state_store_t *st, const schema_t *schema, int view);
/* Is the stored state of the view built with exactly this definition (its
 * fingerprint recorded, no backfill pending)? */
bool backfill_view_up_to_date(state_store_t *st, const schema_view_t *v);
/* Is a backfill of exactly this definition of the view unfinished in the
 * store (interrupted: a rerun resumes it)? */
bool backfill_view_pending(state_store_t *st, const schema_view_t *v);

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
