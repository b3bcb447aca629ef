/*
 * serve_swap.h — a serve_backend_t that can be replaced while the servers
 * keep answering (a backfill's cut-over inside `sluice run`).
 *
 * The servers get serve_swap_backend() once, at start, and never see a
 * different pointer. Per request they pin it (serve_backend_pin, in
 * serve_lookup.h): the pin returns the backend of the CURRENT generation —
 * its schema, its plans, its lookup — and the request uses that one from
 * its first schema read to its last reply byte, then unpins. A replacement
 * (serve_swap_begin ... serve_swap_commit) holds new pins back, waits until
 * no request holds the old generation, lets the caller change the store
 * (the view version switch), then publishes the new generation: a request
 * sees old schema + old store version or new + new, never a mix. The pause
 * is what the caller does between begin and commit (one synced RocksDB
 * write) plus the longest request in flight.
 *
 *   SERVING(g) --begin--> HELD (new pins wait; in-flight of g drains to 0)
 *       ^                   | caller switches the store
 *       +-----commit(g')----+   (or abort: back to g)
 *
 * Generations are kept until serve_swap_free (a backfill happens rarely; a
 * generation is a schema's plans), so a thread's scratch can always free
 * what it built for an older one. The inner backends and their schemas are
 * borrowed: the caller frees them after serve_swap_free.
 *
 * Threads: pin/unpin/lookup from any serving thread; begin/commit/abort
 * from one control thread at a time.
 */
#ifndef SERVE_SWAP_H
#define SERVE_SWAP_H

#include <stdbool.h>

#include "serve_lookup.h"

typedef struct serve_swap serve_swap_t;

/* A swappable backend serving `inner` (borrowed). Returns 0 or SL_ENOMEM. */
int serve_swap_new(const serve_backend_t *inner, serve_swap_t **out);
/* Frees the wrapper and its generations (not the inner backends). Only
 * after the servers using it stopped. */
void serve_swap_free(serve_swap_t *sw);

/* The backend to hand to the servers (stable for the wrapper's life). */
const serve_backend_t *serve_swap_backend(serve_swap_t *sw);

/* Per view of the current generation: refuse lookups of `view` (index in
 * the current schema) with `why` (e.g. "view X is being rebuilt"), or
 * accept them again (why NULL). For a node that restarted in the middle of a
 * backfill and lacks the old definition. Control thread. */
int serve_swap_refuse_view(serve_swap_t *sw, int view, const char *why);

/* Holds new requests back and waits until none uses the current
 * generation. Returns 0 (held: call commit or abort soon) or SL_ETIMEOUT
 * after timeout_ms (nothing held). */
int serve_swap_begin(serve_swap_t *sw, int64_t timeout_ms);
/* Publishes `next` (borrowed) as the new generation and releases the held
 * requests. *pause_ms (may be NULL): how long requests were held. Returns 0
 * or SL_ENOMEM (then the old generation serves again). */
int serve_swap_commit(serve_swap_t *sw, const serve_backend_t *next, double *pause_ms);
/* Releases the held requests on the old generation. */
void serve_swap_abort(serve_swap_t *sw);

/* Requests pinned since creation (figures). */
uint64_t serve_swap_requests(const serve_swap_t *sw);

#endif
