/*
 * agg.h — the window engine: per-entity aggregate state for one feature view.
 *
 * Pure computation: no I/O, no Kafka, no RocksDB, no global state, no locks.
 * An agg_plan_t is compiled once per view from the schema and is immutable
 * (shareable between threads). An agg_entity_t is the mutable state of one
 * entity for that view: all features of the view live in one object so that
 * one state read serves a whole feature vector. An agg_entity_t is owned by
 * one thread at a time (ingest mutates; serving decodes its own copy from
 * bytes and queries it).
 *
 * Time: int64 ms since the epoch. A sliding window queried at time t covers
 * event times in (t - size, t] at the precision of the hop (docs/aggregates.md
 * states exactly how the tail is rounded).
 *
 * Every aggregate is a mergeable partial (monoid), so tiles combine.
 */
#ifndef AGG_H
#define AGG_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "schema.h"
#include "sl_buf.h"

typedef struct agg_plan agg_plan_t;
typedef struct agg_entity agg_entity_t;

/* One typed input value taken from an event. */
typedef enum {
    AGG_IN_MISSING = 0,   /* field absent or null: the feature skips the event */
    AGG_IN_INT,
    AGG_IN_DOUBLE,
    AGG_IN_STRING,
    AGG_IN_BOOL,
} agg_input_type_t;

typedef struct agg_input {
    agg_input_type_t type;
    int64_t i;            /* INT, BOOL */
    double d;             /* DOUBLE */
    const char *s;        /* STRING: not NUL-terminated, borrowed for the call */
    size_t slen;
} agg_input_t;

/* One event as the engine sees it: its event time and the value of every
 * field of the view's source, indexed like schema_source_t.fields. */
typedef struct agg_event {
    int64_t time_ms;
    const agg_input_t *fields;
    size_t n_fields;
} agg_event_t;

/* A feature's value as of a query time. */
typedef enum {
    AGG_VAL_NULL = 0,     /* no data in the window (e.g. min of nothing) */
    AGG_VAL_INT,
    AGG_VAL_DOUBLE,
    AGG_VAL_STRING,
    AGG_VAL_LIST,         /* last_n: items[] newest last */
} agg_value_type_t;

typedef struct agg_scalar {
    agg_value_type_t type;   /* INT, DOUBLE, STRING or NULL */
    int64_t i;
    double d;
    const char *s;           /* points into the agg_entity_t; valid until it changes */
    size_t slen;
} agg_scalar_t;

typedef struct agg_value {
    agg_value_type_t type;
    int64_t i;
    double d;
    const char *s;
    size_t slen;
    const agg_scalar_t *items;  /* LIST: points into the entity; valid until it changes */
    size_t n_items;
    int64_t newest_event_ms;    /* newest event that fed this value, 0 if none */
} agg_value_t;

/* Session window detail served online. */
typedef struct agg_session {
    int64_t start_ms;         /* first event time */
    int64_t end_ms;           /* last event time */
    int64_t events;
} agg_session_t;

/* Compiles the plan for schema->views[view]. The plan borrows `schema`, which
 * must outlive it. Returns 0, or SL_ENOMEM / SL_EINVAL (errstr says why). */
int agg_plan_new(const schema_t *schema, int view, agg_plan_t **out,
                 char *errstr, size_t errsize);
void agg_plan_free(agg_plan_t *plan);

/* A new, empty entity state. NULL on allocation failure. */
agg_entity_t *agg_entity_new(const agg_plan_t *plan);
void agg_entity_free(agg_entity_t *ent);

/* Adds one event to every feature of the view.
 * accept_from_ms: the oldest event time still accepted (the partition's
 * watermark minus the source's allowed lateness; INT64_MIN accepts all).
 * Returns 0, or SL_ELATE when ev->time_ms < accept_from_ms (state unchanged),
 * SL_ERANGE when |ev->time_ms| > 2^60 (state unchanged), or SL_ENOMEM (the
 * entity stays valid and exact for the features that took the event; a
 * feature that ran out of memory may lack it). */
int agg_entity_update(const agg_plan_t *plan, agg_entity_t *ent,
                      const agg_event_t *ev, int64_t accept_from_ms);

/* agg_entity_update for a caller that has already run agg_entity_prefetch
 * depths 1..3 on `ent` (or just created it): the same effect and result,
 * without issuing those hints a second time. */
int agg_entity_update_prefetched(const agg_plan_t *plan, agg_entity_t *ent,
                                 const agg_event_t *ev, int64_t accept_from_ms);

/* Memory hints: start loading what an update of `ent` touches, one level
 * of pointers per depth (0 the entity itself, 1 its per-feature state, 2
 * and 3 what that points to). Depth d reads what depth d - 1 loads, so a
 * caller holding many events issues depth 0 for all of them, then depth 1
 * for all, and so on: their cache misses overlap instead of queueing.
 * Changes nothing. */
void agg_entity_prefetch(const agg_plan_t *plan, const agg_entity_t *ent, int depth);

/* The same hints for agg_entity_expire and agg_entity_encode, which read
 * every tile, not the newest: depth 0 the entity, 1 every feature's whole
 * tile array, 2 every tile's sketch or string. Changes nothing. */
void agg_entity_prefetch_encode(const agg_plan_t *plan, const agg_entity_t *ent, int depth);

/* Evaluates every feature as of time t_ms into out[0..n_features-1].
 * Values may point into `ent` and stay valid until it is next modified or
 * queried. The query writes scratch space inside `ent` (despite the const):
 * never query one entity from two threads at once. An empty window gives
 * 0 for count / sum / approx_distinct / decayed_*, an empty LIST for last_n
 * and NULL otherwise; a session feature with no session open at t reads as
 * an empty window. Costs one merge per feature for t from a quarter window
 * before the newest event to half a window after it (docs/aggregates.md). */
void agg_entity_query(const agg_plan_t *plan, const agg_entity_t *ent,
                      int64_t t_ms, agg_value_t *out);

/* Drops state no window can need any more: tiles older than every window
 * at accept_from_ms and sessions beyond the kept ones. Queries at t >=
 * accept_from_ms answer as before. accept_from_ms must not decrease between
 * calls (update or expire) on one entity. */
void agg_entity_expire(const agg_plan_t *plan, agg_entity_t *ent,
                       int64_t accept_from_ms);

/* Newest event time ever applied to this entity (for TTL), 0 if none. */
int64_t agg_entity_last_event_ms(const agg_entity_t *ent);

/* True when the view has a TTL and no event newer than now_ms - ttl was
 * applied: the entity reads as absent and its state may be purged. */
bool agg_entity_is_idle(const agg_plan_t *plan, const agg_entity_t *ent, int64_t now_ms);

/* Session windows: for feature f, the session open at t_ms (start <= t <
 * last event + gap, same max_length period; returns false if none or if f is
 * not a session feature), and up to min(max, sessions_kept) sessions closed
 * as of the newest event time seen, newest first; returns how many. */
bool agg_entity_open_session(const agg_plan_t *plan, const agg_entity_t *ent,
                             int feature, int64_t t_ms, agg_session_t *out);
size_t agg_entity_completed_sessions(const agg_plan_t *plan, const agg_entity_t *ent,
                                     int feature, agg_session_t *out, size_t max);

/* Versioned binary encoding of an entity's state (docs/aggregates.md).
 * encode appends to buf; returns 0 or SL_ENOMEM (buf as before). decode
 * returns 0 and a new entity, or SL_ECORRUPT (truncated / malformed),
 * SL_EVERSION (unknown format version), SL_ESCHEMA (state of another
 * definition of the view: fingerprint or features differ) or SL_ENOMEM, with
 * *out NULL; it never reads outside [data, data+len). A decoded entity
 * answers every query bit-for-bit like the one encoded. */
int agg_entity_encode(const agg_plan_t *plan, const agg_entity_t *ent, sl_buf_t *buf);
int agg_entity_decode(const agg_plan_t *plan, const void *data, size_t len,
                      agg_entity_t **out);

/* Merges src into dst: dst then holds the state of the union of both
 * entities' events (the states of one entity in two partitions; see
 * agg_merge.c). Exact, except that sums of doubles, variances and decayed
 * sums may differ in the last bits from one state fed every event. src is
 * unchanged. Returns 0 or SL_ENOMEM (dst then holds a partial merge of some
 * features: discard it). */
int agg_entity_merge(const agg_plan_t *plan, agg_entity_t *dst, const agg_entity_t *src);

/* Approximate heap bytes held by the entity (for cache accounting). */
size_t agg_entity_mem_size(const agg_entity_t *ent);

#endif
