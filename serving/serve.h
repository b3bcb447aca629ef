/*
 * serve.h — both front ends started from the worker configuration, for
 * `sluice serve` and `sluice run`.
 */
#ifndef SERVE_H
#define SERVE_H

#include <stddef.h>

#include "serve_lookup.h"
#include "sl_config.h"

typedef struct serve_servers serve_servers_t;

/* Starts the RESP server (unless resp_port is 0) and the gRPC server (unless
 * grpc_port is 0) with the config's binds, limits, password and token.
 * `be` must outlive the servers. Returns 0 or SL_EIO / SL_ENOMEM / SL_EINVAL
 * with errstr set (nothing left running). */
int serve_servers_start(const sl_config_t *cfg, const serve_backend_t *be,
                        serve_servers_t **out, char *errstr, size_t errsize);
/* Bound ports, 0 when the server is disabled. */
int serve_servers_resp_port(const serve_servers_t *s);
int serve_servers_grpc_port(const serve_servers_t *s);
/* Writes RESP and gRPC counters as "name value" lines. */
void serve_servers_print_stats(const serve_servers_t *s, FILE *f);
/* Adds the server time per request (ns) of the RESP (grpc false) or gRPC
 * server into `into`; nothing when that server is off. */
struct sl_hist;
void serve_servers_latency(const serve_servers_t *s, bool grpc, struct sl_hist *into);
bool serve_servers_has_resp(const serve_servers_t *s);
bool serve_servers_has_grpc(const serve_servers_t *s);
/* Graceful stop of both servers: no new connections, calls or commands;
 * what is in progress is answered (see resp_server_drain, serve_grpc_drain).
 * The counters stay readable until serve_servers_stop (which drains first
 * if this was not called). */
void serve_servers_drain(serve_servers_t *s);
void serve_servers_stop(serve_servers_t *s);

#endif
