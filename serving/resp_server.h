/*
 * resp_server.h — the Redis-protocol (RESP2) front end.
 *
 * N event-loop threads, each with its own epoll set and its own listening
 * socket on the same port (SO_REUSEPORT: the kernel spreads connections).
 * A connection lives and dies on the thread that accepted it.
 */
#ifndef RESP_SERVER_H
#define RESP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "serve_lookup.h"

typedef struct resp_server resp_server_t;

typedef struct resp_server_opts {
    const char *bind;            /* "127.0.0.1" */
    int port;                    /* 0 = pick a free port (see resp_server_port) */
    int threads;                 /* event loops, >= 1 */
    const char *password;        /* NULL or "" = no AUTH */
    size_t max_clients;
    size_t max_request_bytes;
    size_t max_args;
    size_t max_entities;         /* keys of one FEATURES command */
    int64_t idle_timeout_ms;     /* 0 = never */
    size_t max_output_bytes;     /* unsent replies before a client is closed */
    size_t cache_bytes;          /* per loop, encoded answers (serve_cache.h); 0 = off */
} resp_server_opts_t;

/* Fills the defaults of sl_config.h (port 6380, 2 threads, ...). */
void resp_server_opts_default(resp_server_opts_t *o);

/* Binds, listens and starts the threads. `be` must outlive the server.
 * Returns 0, or SL_EIO (bind/listen failed) / SL_ENOMEM with errstr set. */
int resp_server_start(const resp_server_opts_t *opts, const serve_backend_t *be,
                      resp_server_t **out, char *errstr, size_t errsize);
/* The bound port. */
int resp_server_port(const resp_server_t *srv);
/* Graceful stop: no new connections or commands; each connection gets the
 * replies of every command it ran, then a half-close, and is closed when the
 * client closes (or after at most 5 s for a client that does not read).
 * request_stop only starts it (returns at once); drain also waits for the
 * loops to finish. The counters stay readable until resp_server_stop, which
 * drains if not done yet and frees. */
void resp_server_request_stop(resp_server_t *srv);
void resp_server_drain(resp_server_t *srv);
void resp_server_stop(resp_server_t *srv);

typedef struct resp_server_stats {
    uint64_t connections;         /* accepted */
    uint64_t rejected;            /* over max_clients */
    uint64_t clients;             /* open now */
    uint64_t commands;
    uint64_t lookups;             /* entity lookups */
    uint64_t hits, misses;        /* entities found / not found or outside TTL */
    uint64_t protocol_errors;     /* connections closed for a bad frame or a limit */
    uint64_t idle_closed;
    uint64_t bytes_in, bytes_out;
    uint64_t cache_hits;          /* lookups answered from a loop's reply cache */
} resp_server_stats_t;

void resp_server_stats(const resp_server_t *srv, resp_server_stats_t *out);
/* Adds the server time of every command (ns from its dispatch to its reply
 * encoded; parsing and network excluded) into `into`. */
struct sl_hist;
void resp_server_latency(const resp_server_t *srv, struct sl_hist *into);

#endif
