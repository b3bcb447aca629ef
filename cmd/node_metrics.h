/*
 * node_metrics.h — Prometheus collectors for one Sluice process: ingest
 * counters, per-partition progress (committed offset, watermark delay, lag),
 * freshness, serving counters, and an optional latency histogram.
 *
 * Lives in cmd/ because it joins modules that do not know each other; each
 * module only exposes its own counters.
 */
#ifndef NODE_METRICS_H
#define NODE_METRICS_H

#include "ingest.h"
#include "metrics.h"
#include "schema.h"
#include "serve.h"
#include "sl_config.h"
#include "sl_hist.h"
#include "state.h"

typedef struct node_metrics node_metrics_t;

/* Registers the collectors on m. Any of ingest (with it, consumer lag from
 * the worker's published high watermarks), servers and lookup_hist may be
 * NULL. Everything passed must outlive m. Returns 0 or SL_ENOMEM. */
int node_metrics_attach(sl_metrics_t *m, const schema_t *schema, state_store_t *st,
                        const ingest_stats_t *ingest, serve_servers_t *servers,
                        const sl_hist_t *lookup_hist, node_metrics_t **out);
/* Points the ingest collectors at another worker's counters and the schema
 * it ingests (sluice run restarts its worker around a hosted backfill; the
 * counters start again from 0, which Prometheus reads as a reset). Both must
 * outlive m. Thread-safe against the collectors. */
void node_metrics_set_ingest(node_metrics_t *nm, const ingest_stats_t *ingest,
                             const schema_t *schema);
void node_metrics_free(node_metrics_t *nm);
#endif
