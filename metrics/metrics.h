/*
 * metrics.h — the Prometheus endpoint: an HTTP server (libmicrohttpd) that
 * answers GET /metrics with the text exposition format assembled from
 * registered collectors, and GET /healthz with "ok".
 *
 * Collectors are callbacks that append metric families to a buffer; each
 * module (ingest, serving, state) keeps its own counters and registers one
 * collector, so the metrics module knows no module's internals. Collectors
 * run on the HTTP server's thread and must only read atomics or take their
 * own locks briefly.
 */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stdint.h>

#include "sl_buf.h"

typedef struct sl_metrics sl_metrics_t;

/* Appends Prometheus text to out. Returns 0 or a negative code. */
typedef int (*sl_metrics_collect_fn)(void *ctx, sl_buf_t *out);

sl_metrics_t *sl_metrics_new(void);
/* Registers a collector (thread-safe; may be called while serving). */
int sl_metrics_add(sl_metrics_t *m, sl_metrics_collect_fn fn, void *ctx);
/* Renders every collector into out (what GET /metrics returns). */
int sl_metrics_render(sl_metrics_t *m, sl_buf_t *out);
/* Starts the HTTP server on bind:port (port 0 = any free port). Returns 0,
 * or SL_EIO with errstr set (address in use, bad address). */
int sl_metrics_listen(sl_metrics_t *m, const char *bind, int port, char *errstr, size_t errsize);
/* The bound port, or 0 when not listening. */
int sl_metrics_port(const sl_metrics_t *m);
/* Stops the server (if any) and frees everything. */
void sl_metrics_free(sl_metrics_t *m);

/* Formatting helpers for collectors. */
int sl_prom_header(sl_buf_t *out, const char *name, const char *type, const char *help);
int sl_prom_value(sl_buf_t *out, const char *name, const char *labels, double value);

#endif
