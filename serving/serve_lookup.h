/*
 * serve_lookup.h — the lookup core shared by the RESP and gRPC front ends.
 *
 * A lookup reads one entity of one view: one state read, one decode, one
 * query of every feature of the view as of the request time. Both front ends
 * only see this interface (serve_backend_t), so they can be tested and
 * benchmarked against any backend; serve_state.c provides the real one
 * (state_lookup + agg_entity_decode + agg_entity_query).
 *
 * Threads: a backend is shared by every serving thread; each thread owns
 * one serve_scratch_t (buffers, the decoded entity) and values returned by a
 * lookup point into it until that thread's next lookup.
 */
#ifndef SERVE_LOOKUP_H
#define SERVE_LOOKUP_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "agg.h"
#include "schema.h"
#include "state.h"

#define SERVE_STATUS_MAP(X)                                                   \
    X(PRESENT,        "present",        "value computed from state")          \
    X(NOT_FOUND,      "not_found",      "no state for this entity")           \
    X(OUTSIDE_TTL,    "outside_ttl",    "newest event older than the TTL")    \
    X(PARTIAL_WINDOW, "partial_window", "state covers less than the window")

typedef enum {
#define SERVE__S(n, s, d) SERVE_STATUS_##n,
    SERVE_STATUS_MAP(SERVE__S)
#undef SERVE__S
} serve_status_t;

const char *serve_status_name(serve_status_t s);

/* One feature value of one entity. val.type AGG_VAL_NULL with status
 * PRESENT means "no event in the window". */
typedef struct serve_value {
    serve_status_t status;
    agg_value_t val;            /* strings/lists point into the scratch */
} serve_value_t;

/* Largest entity key, in parts and in bytes of one part. */
#define SERVE_MAX_KEY_PARTS 8

/* One entity key as parsed from a request: its parts, one per key of the
 * entity (text as written by the client; typed by the backend). */
typedef struct serve_key {
    size_t n;
    const char *part[SERVE_MAX_KEY_PARTS];
    size_t len[SERVE_MAX_KEY_PARTS];
} serve_key_t;

typedef struct serve_scratch serve_scratch_t;

typedef struct serve_backend serve_backend_t;
struct serve_backend {
    const schema_t *schema;
    void *ctx;
    /* A per-thread scratch; NULL on allocation failure. */
    serve_scratch_t *(*scratch_new)(const serve_backend_t *be);
    void (*scratch_free)(serve_scratch_t *sc);
    /* Evaluates every feature of `view` for `key` as of now_ms into
     * out[0..n_features-1]. Returns 0 (statuses tell found / not found /
     * outside TTL), SL_EINVAL when the key does not fit the entity (wrong
     * number of parts, not an int...; errstr says why) or SL_ESTATE /
     * SL_ECORRUPT / SL_ENOMEM on a server-side failure. */
    int (*lookup)(const serve_backend_t *be, serve_scratch_t *sc, int view,
                  const serve_key_t *key, int64_t now_ms, serve_value_t *out,
                  char *errstr, size_t errsize);
    /* Committed per-partition progress (consistency tokens); returns how
     * many exist, fills up to max. */
    size_t (*progress)(const serve_backend_t *be, state_partition_progress_t *out, size_t max);
    /* Optional, NULL for a backend that never changes. A backend that can be
     * replaced while serving (serve_swap.h) returns from pin the backend one
     * request must use from start to end — its schema, its lookup — and is
     * told by unpin that the request is over. Scratches made by the outer
     * backend serve every backend its pin returns. */
    const serve_backend_t *(*pin)(const serve_backend_t *be);
    void (*unpin)(const serve_backend_t *be, const serve_backend_t *pinned);
    /* Optional pair, for the front ends' reply caches (serve_cache.h); a
     * backend that leaves them NULL gets no caching, so a wrapper that does
     * not forward them stays correct.
     * generation: changes whenever the same lookup at the same request time
     * could answer differently (store commits, the backend's reloads of
     * coverage); never decreases. Read it BEFORE the lookup whose result is
     * tagged with it. Any thread.
     * valid_until: right after a successful lookup on `sc`, the first
     * request time at which that lookup's values or statuses may differ
     * while the generation holds (> its now_ms; INT64_MAX: never). The
     * thread's own scratch only. */
    uint64_t (*generation)(const serve_backend_t *be);
    int64_t (*valid_until)(const serve_backend_t *be, serve_scratch_t *sc);
};

/* Front ends: once per request (every read of be->schema and every lookup
 * of the request go through the returned backend), then unpin. */
static inline const serve_backend_t *serve_backend_pin(const serve_backend_t *be)
{
    return be->pin ? be->pin(be) : be;
}
static inline void serve_backend_unpin(const serve_backend_t *be, const serve_backend_t *pinned)
{
    if (be->unpin) be->unpin(be, pinned);
}

/* ---- the RESP key syntax: "view:{k1|k2}" or "view:k" ------------------- */

/* Splits "view:rest" at the first ':' into the view name and the key spec.
 * Returns the view index or -1 (no ':' or unknown view). */
int serve_key_view(const schema_t *schema, const char *s, size_t n,
                   const char **spec, size_t *speclen);

/* Parses a key spec: "{a|b}" gives the parts a and b, where '\' escapes the
 * next byte ("\|", "\}", "\\"); anything not starting with '{' is one part
 * taken verbatim. Unescaped parts are written into buf (>= n bytes), which
 * the parts point into. Returns 0 or SL_EINVAL (unbalanced braces, too many
 * parts, dangling '\'). */
int serve_key_parse(const char *s, size_t n, char *buf, serve_key_t *key);

/* ---- the real backend over state/ + aggregates/ ------------------------ */

typedef struct serve_state_backend serve_state_backend_t;

/* Builds the plans of every view. Borrows `schema` and `st`, which must
 * outlive the backend. Returns 0 or SL_ENOMEM / SL_EINVAL (errstr set). */
int serve_state_backend_new(const schema_t *schema, state_store_t *st,
                            serve_state_backend_t **out, char *errstr, size_t errsize);
void serve_state_backend_free(serve_state_backend_t *sb);
const serve_backend_t *serve_state_backend(const serve_state_backend_t *sb);

#endif
