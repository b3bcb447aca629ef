/*
 * serve_grpc.h — the gRPC front end: sluice.v1.FeatureService
 * (GetOnlineFeatures, ListFeatures) and grpc.health.v1.Health/Check, on
 * rpc_server.h with protobuf-c messages generated from proto/.
 */
#ifndef SERVE_GRPC_H
#define SERVE_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include "serve_lookup.h"

typedef struct serve_grpc serve_grpc_t;

typedef struct serve_grpc_opts {
    const char *bind;             /* "127.0.0.1" */
    int port;                     /* 0 = pick one */
    int threads;
    const char *token;            /* bearer token, NULL/"" = none */
    const char *tls_cert_pem;     /* PEM contents; NULL/"" = plaintext */
    const char *tls_key_pem;
    size_t max_request_bytes;
    size_t max_entities;          /* entity rows per request */
    int64_t max_token_wait_ms;    /* cap on min_token_wait_ms (default 10000) */
    size_t cache_bytes;           /* per thread, packed values (serve_cache.h); 0 = off */
} serve_grpc_opts_t;

void serve_grpc_opts_default(serve_grpc_opts_t *o);

/* `be` must outlive the server. Returns 0 or SL_EIO / SL_ENOMEM (errstr). */
int serve_grpc_start(const serve_grpc_opts_t *opts, const serve_backend_t *be,
                     serve_grpc_t **out, char *errstr, size_t errsize);
int serve_grpc_port(const serve_grpc_t *g);
/* Graceful: no new calls; those in progress are answered (rpc_server_drain).
 * The stats stay readable until serve_grpc_stop. */
void serve_grpc_drain(serve_grpc_t *g);
void serve_grpc_stop(serve_grpc_t *g);

/* Adds the server time of every answered call (ns) into `into`. */
struct sl_hist;
void serve_grpc_latency(const serve_grpc_t *g, struct sl_hist *into);

/* Calls, failed calls, unauthenticated calls since start, and OK replies
 * cancelled on their way (rpc_server.h). */
void serve_grpc_stats(const serve_grpc_t *g, uint64_t *calls, uint64_t *errors,
                      uint64_t *unauthenticated, uint64_t *cancelled);

/* For tests: parses a GetOnlineFeaturesRequest with the fast path and with
 * protobuf-c. Returns 1 (fast path taken, same message), 0 (fast path
 * declined: protobuf-c parses it) or -1 (they differ: a bug). */
int serve_grpc_parse_check(const void *data, size_t len);

#endif
