/*
 * rpc_server.h — a small unary-call gRPC server on the gRPC core C API.
 *
 * Methods are (path, handler) rows; a handler gets the request bytes and
 * fills a reply (bytes + status). Nothing here knows about features: the
 * Sluice service (serve_grpc.c) and the benchmark's echo service use it the
 * same way, so the echo service measures the ceiling of this very code.
 *
 * Threads: `threads` completion-queue workers plus one waiter thread, each
 * owning a user context made by thread_ctx_new (per-thread scratch). Worker
 * 0 polls: it does the network I/O of every call and runs most handlers;
 * the other workers take the calls that arrive while worker 0 is busy (see
 * rpc_server.c for why). So a handler never waits: when it needs something
 * that is not there yet (a read-your-writes token) it calls
 * rpc_reply_defer and returns; it is then called again for the same call on
 * the waiter thread, about every 2 ms, until it answers. reply->since_ns
 * tells when the call first ran, for its deadline.
 */
#ifndef RPC_SERVER_H
#define RPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sl_buf.h"

typedef struct rpc_server rpc_server_t;

/* Canonical gRPC status codes (same numbers as grpc_status_code). */
enum {
    RPC_OK = 0, RPC_CANCELLED = 1, RPC_UNKNOWN = 2, RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4, RPC_NOT_FOUND = 5, RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9, RPC_UNIMPLEMENTED = 12, RPC_INTERNAL = 13, RPC_UNAVAILABLE = 14,
    RPC_UNAUTHENTICATED = 16,
};

typedef struct rpc_reply {
    sl_buf_t body;            /* response message (sent only when status is OK) */
    int status;               /* RPC_* */
    char message[512];        /* status details for errors */
    int64_t since_ns;         /* set by the server: when the call first ran (sl_mono_ns) */
    bool deferred;            /* set by rpc_reply_defer */
} rpc_reply_t;

/* Fills reply->status and message; returns status for one-line error paths. */
int rpc_reply_fail(rpc_reply_t *reply, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* From a handler that would have to wait: nothing is sent, the handler
 * runs again for this call on the waiter thread ~2 ms later (and again,
 * while it defers). Leave body empty. At shutdown, deferred calls get
 * UNAVAILABLE. */
void rpc_reply_defer(rpc_reply_t *reply);

/* req may be NULL when len == 0 (empty message). */
typedef void (*rpc_handler_fn)(void *ctx, void *thread_ctx, const void *req, size_t len,
                               rpc_reply_t *reply);

typedef struct rpc_method {
    const char *path;         /* "/sluice.v1.FeatureService/GetOnlineFeatures" */
    rpc_handler_fn fn;
    bool public_;             /* no bearer token needed (health checks) */
} rpc_method_t;

typedef struct rpc_server_opts {
    const char *bind;         /* "127.0.0.1" */
    int port;                 /* 0 = pick one */
    int threads;
    const char *token;        /* NULL/"" = no auth; else "authorization: Bearer <token>" */
    const char *tls_cert_pem; /* NULL/"" = plaintext; else TLS with this PEM chain ... */
    const char *tls_key_pem;  /* ... and this PEM private key (both contents, not paths) */
    size_t max_message_bytes; /* larger requests get RESOURCE_EXHAUSTED */
    void *ctx;                /* passed to every handler */
    void *(*thread_ctx_new)(void *ctx);   /* optional; NULL result = failure */
    void (*thread_ctx_free)(void *ctx, void *thread_ctx);
} rpc_server_opts_t;

/* Starts the server; `methods` (n of them) must outlive it. Returns 0 or
 * SL_EIO (cannot bind, or with TLS a certificate/key gRPC refuses) /
 * SL_ENOMEM with errstr set. */
int rpc_server_start(const rpc_server_opts_t *opts, const rpc_method_t *methods, size_t n,
                     rpc_server_t **out, char *errstr, size_t errsize);
int rpc_server_port(const rpc_server_t *srv);
/* Stops taking calls and waits until the calls in progress have sent their
 * replies (at most 5 s; the rest is then cancelled). The counters stay
 * readable. Idempotent. */
void rpc_server_drain(rpc_server_t *srv);
/* rpc_server_drain if not done yet, then joins the workers and frees
 * everything. */
void rpc_server_stop(rpc_server_t *srv);

/* calls: calls answered (counted when the reply is handed to gRPC);
 * errors: those answered with an error status; cancelled: OK replies that
 * gRPC then reported cancelled or failed on their way (a stop's RPC_STOP_MS
 * ran out, the client left). gRPC's report can be wrong either way at a
 * closing transport, so clients received between calls - errors - cancelled
 * and calls - errors OK replies. */
typedef struct rpc_server_stats {
    uint64_t calls, errors, unauthenticated, cancelled;
} rpc_server_stats_t;
void rpc_server_stats(const rpc_server_t *srv, rpc_server_stats_t *out);
/* Adds the server time of every answered call (ns from the handler's first
 * run to the reply handed to gRPC, a token wait included) into `into`. */
struct sl_hist;
void rpc_server_latency(const rpc_server_t *srv, struct sl_hist *into);

#endif
