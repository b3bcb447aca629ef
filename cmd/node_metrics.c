/*
 * node_metrics.c — see node_metrics.h. Runs on the metrics HTTP thread; it
 * only reads atomics, the store's committed progress (thread-safe) and the
 * worker's published high watermarks, so a scrape never waits on Kafka.
 *
 * Consumer lag = a partition's high watermark - the next offset committed
 * with the state. The high watermarks are those the worker's own consumer
 * learnt from its fetch responses (ingest_stats_t.hwm, refreshed every
 * 100 ms): as fresh as the data it consumes, no request to the brokers per
 * scrape (asking them made a scrape wait up to socket.timeout.ms for each
 * partition while they were down: librdkafka queues the request to the
 * known leader whatever the timeout given), and the last known values
 * during an outage. A partition this worker does not consume has no lag
 * series.
 */
#include "node_metrics.h"
#include "sl_err.h"
#include "sl_time.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node_metrics {
    pthread_mutex_t mu;           /* ingest + schema, swapped by set_ingest */
    const schema_t *schema;
    state_store_t *st;
    const ingest_stats_t *ingest;
    serve_servers_t *servers;
    const sl_hist_t *hist;
};

#define LOAD(x) ((double)atomic_load_explicit(&(x), memory_order_relaxed))

static int counter(sl_buf_t *o, const char *name, const char *help, double v)
{
    return sl_prom_header(o, name, "counter", help) | sl_prom_value(o, name, NULL, v);
}

static int collect_ingest_locked(node_metrics_t *nm, sl_buf_t *o);

static int collect_ingest(void *ctx, sl_buf_t *o)
{
    node_metrics_t *nm = ctx;
    pthread_mutex_lock(&nm->mu);
    int rc = collect_ingest_locked(nm, o);
    pthread_mutex_unlock(&nm->mu);
    return rc;
}

static int collect_ingest_locked(node_metrics_t *nm, sl_buf_t *o)
{
    const ingest_stats_t *s = nm->ingest;
    const schema_t *sc = nm->schema;
    char labels[512];
    int rc = 0;
    rc |= counter(o, "sluice_ingest_messages_total", "Kafka messages consumed (good and bad).", LOAD(s->messages));
    rc |= sl_prom_header(o, "sluice_ingest_bad_events_total", "counter", "Events skipped as bad input, by reason.");
    for (int r = 1; r < INGEST_BAD__COUNT; r++) {
        snprintf(labels, sizeof labels, "reason=\"%s\"", ingest_bad_name((ingest_bad_t)r));
        rc |= sl_prom_value(o, "sluice_ingest_bad_events_total", labels, LOAD(s->bad[r]));
    }
    rc |= counter(o, "sluice_ingest_late_events_total", "Events behind the allowed lateness, rejected.", LOAD(s->late));
    rc |= sl_prom_header(o, "sluice_source_events_total", "counter", "Good events decoded, per source.");
    for (size_t i = 0; i < s->n_sources && i < sc->n_sources; i++) {
        snprintf(labels, sizeof labels, "source=\"%s\"", sc->sources[i].name);
        rc |= sl_prom_value(o, "sluice_source_events_total", labels, LOAD(s->source_events[i]));
    }
    rc |= sl_prom_header(o, "sluice_view_events_total", "counter", "Events applied, per feature view.");
    for (size_t i = 0; i < s->n_views && i < sc->n_views; i++) {
        snprintf(labels, sizeof labels, "view=\"%s\"", sc->views[i].name);
        rc |= sl_prom_value(o, "sluice_view_events_total", labels, LOAD(s->view_events[i]));
    }
    rc |= counter(o, "sluice_commits_total", "Atomic state+offset commits.", LOAD(s->commits));
    rc |= counter(o, "sluice_commit_errors_total", "Failed commits (retried).", LOAD(s->commit_errors));
    rc |= sl_prom_header(o, "sluice_commit_seconds", "summary", "Commit latency.");
    rc |= sl_prom_value(o, "sluice_commit_seconds_sum", NULL, LOAD(s->commit_us_sum) / 1e6);
    rc |= sl_prom_value(o, "sluice_commit_seconds_count", NULL, LOAD(s->commits));
    rc |= sl_prom_header(o, "sluice_commit_seconds_max", "gauge", "Slowest commit so far.");
    rc |= sl_prom_value(o, "sluice_commit_seconds_max", NULL, LOAD(s->commit_us_max) / 1e6);
    rc |= sl_prom_header(o, "sluice_commit_seconds_last", "gauge", "Latest commit.");
    rc |= sl_prom_value(o, "sluice_commit_seconds_last", NULL, LOAD(s->commit_us_last) / 1e6);
    rc |= counter(o, "sluice_committed_entities_total", "Entity states written by commits.", LOAD(s->committed_entities));
    rc |= counter(o, "sluice_commit_build_seconds_total",
                  "Ingest thread time spent expiring and encoding dirty states into commit batches.",
                  LOAD(s->commit_build_us) / 1e6);
    rc |= counter(o, "sluice_dead_letters_total", "Bad events produced to the dead-letter topic.", LOAD(s->dead_letters));
    rc |= sl_prom_header(o, "sluice_cache_entities", "gauge", "Entity states in the write-back cache.");
    rc |= sl_prom_value(o, "sluice_cache_entities", NULL, LOAD(s->cache_entries));
    rc |= counter(o, "sluice_cache_evictions_total", "Clean entity states evicted.", LOAD(s->cache_evictions));
    rc |= counter(o, "sluice_rebalances_total", "Consumer group rebalances.", LOAD(s->rebalances));
    rc |= counter(o, "sluice_snapshots_total", "Snapshots taken by this worker (periodic and requested).",
                  LOAD(s->snapshots));
    rc |= counter(o, "sluice_snapshot_errors_total", "Failed snapshots (ingest went on).",
                  LOAD(s->snapshot_errors));
    uint64_t last = LOAD(s->snapshot_last_ms);
    if (last) {
        rc |= sl_prom_header(o, "sluice_snapshot_age_seconds", "gauge",
                             "Age of the newest snapshot this worker took.");
        rc |= sl_prom_value(o, "sluice_snapshot_age_seconds", NULL,
                            (double)(sl_now_ms() - (int64_t)last) / 1e3);
    }
    return rc ? SL_ENOMEM : SL_OK;
}

static int64_t source_delay(const schema_t *sc, const char *topic)
{
    for (size_t s = 0; s < sc->n_sources; s++)
        if (!strcmp(sc->sources[s].topic, topic)) return sc->sources[s].watermark_delay_ms;
    return 0;
}

static int collect_progress(void *ctx, sl_buf_t *o)
{
    node_metrics_t *nm = ctx;
    enum { MAX = 1024 };
    state_partition_progress_t *pp = malloc(MAX * sizeof *pp);
    if (!pp) return SL_ENOMEM;
    size_t n = state_progress(nm->st, pp, MAX);
    if (n > MAX) n = MAX;
    /* the schema, and a copy of the worker's high watermarks (its table
     * changes meanwhile) */
    ingest_hwm_t *hw = NULL;
    size_t nhw = 0;
    pthread_mutex_lock(&nm->mu);
    const schema_t *sc = nm->schema;   /* every schema a node used lives until exit */
    const ingest_stats_t *is = nm->ingest;
    if (is && is->hwm) {
        pthread_mutex_t *hmu = (pthread_mutex_t *)&is->hwm_mu;   /* the stats are const to readers */
        pthread_mutex_lock(hmu);
        if (is->n_hwm && (hw = malloc(is->n_hwm * sizeof *hw))) {
            nhw = is->n_hwm;
            memcpy(hw, is->hwm, nhw * sizeof *hw);
        }
        pthread_mutex_unlock(hmu);
    }
    pthread_mutex_unlock(&nm->mu);
    int64_t now = sl_now_ms(), newest = 0;
    char labels[512];
    int rc = 0;
    rc |= sl_prom_header(o, "sluice_partition_committed_offset", "gauge", "Next offset committed with the state.");
    for (size_t i = 0; i < n; i++) {
        snprintf(labels, sizeof labels, "topic=\"%s\",partition=\"%d\"", pp[i].topic, pp[i].partition);
        rc |= sl_prom_value(o, "sluice_partition_committed_offset", labels, (double)pp[i].next_offset);
    }
    rc |= sl_prom_header(o, "sluice_partition_watermark_delay_seconds", "gauge",
                         "Wall clock minus the partition's committed watermark.");
    for (size_t i = 0; i < n; i++) {
        if (pp[i].watermark_ms == INT64_MIN) continue;
        snprintf(labels, sizeof labels, "topic=\"%s\",partition=\"%d\"", pp[i].topic, pp[i].partition);
        rc |= sl_prom_value(o, "sluice_partition_watermark_delay_seconds", labels,
                            (double)(now - pp[i].watermark_ms) / 1000.0);
        int64_t newest_event = pp[i].watermark_ms + source_delay(sc, pp[i].topic);
        if (newest_event > newest) newest = newest_event;
    }
    if (is) {
        rc |= sl_prom_header(o, "sluice_partition_lag", "gauge", "Messages in Kafka not yet committed to state.");
        for (size_t i = 0; i < n; i++) {
            const ingest_hwm_t *h = NULL;
            for (size_t k = 0; k < nhw && !h; k++)
                if (hw[k].partition == pp[i].partition && !strcmp(hw[k].topic, pp[i].topic)) h = &hw[k];
            if (!h) continue;
            snprintf(labels, sizeof labels, "topic=\"%s\",partition=\"%d\"", pp[i].topic, pp[i].partition);
            rc |= sl_prom_value(o, "sluice_partition_lag", labels,
                                (double)(h->high > pp[i].next_offset ? h->high - pp[i].next_offset : 0));
        }
    }
    free(hw);
    if (newest) {
        rc |= sl_prom_header(o, "sluice_freshness_seconds", "gauge",
                             "Wall clock minus the newest event committed (servable).");
        rc |= sl_prom_value(o, "sluice_freshness_seconds", NULL, (double)(now - newest) / 1000.0);
    }
    free(pp);
    return rc ? SL_ENOMEM : SL_OK;
}

/* The counters of serve_servers_print_stats that sluice_requests_total is
 * made of (-1 = the server is off). */
typedef struct serving_counts {
    double resp_lookups, resp_hits, resp_misses;
    double grpc_calls, grpc_errors, grpc_unauthenticated;
} serving_counts_t;

static void serving_count(serving_counts_t *sc, const char *name, double v)
{
    static const struct { const char *name; size_t off; } fields[] = {
        { "resp_lookups", offsetof(serving_counts_t, resp_lookups) },
        { "resp_hits", offsetof(serving_counts_t, resp_hits) },
        { "resp_misses", offsetof(serving_counts_t, resp_misses) },
        { "grpc_calls", offsetof(serving_counts_t, grpc_calls) },
        { "grpc_errors", offsetof(serving_counts_t, grpc_errors) },
        { "grpc_unauthenticated", offsetof(serving_counts_t, grpc_unauthenticated) },
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!strcmp(name, fields[i].name)) *(double *)((char *)sc + fields[i].off) = v;
}

static int request_value(sl_buf_t *o, const char *protocol, const char *status, double v)
{
    char labels[96];
    snprintf(labels, sizeof labels, "protocol=\"%s\",status=\"%s\"", protocol, status);
    return sl_prom_value(o, "sluice_requests_total", labels, v < 0 ? 0 : v);
}

/* The serving tier prints "name value" lines; each becomes a gauge
 * (sluice_serving_*). From the same lines, one counter family by protocol
 * and outcome: RESP lookups (hit, miss, error: a failed read) and gRPC calls
 * (ok, unauthenticated, error: any other non-OK status; health checks and
 * ListFeatures included). The stats are read one counter at a time while
 * requests go on, so a scrape may split a request between two outcomes'
 * reads; error is clamped at 0. */
static int collect_serving(void *ctx, sl_buf_t *o)
{
    node_metrics_t *nm = ctx;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return SL_ENOMEM;
    serve_servers_print_stats(nm->servers, f);
    fclose(f);
    int rc = 0;
    char *save = NULL;
    serving_counts_t sc = { -1, -1, -1, -1, -1, -1 };
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[128], metric[160];
        double v;
        if (sscanf(line, "%127s %lf", name, &v) != 2) continue;
        for (char *p = name; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) *p = '_';
        serving_count(&sc, name, v);
        snprintf(metric, sizeof metric, "sluice_serving_%s", name);
        rc |= sl_prom_header(o, metric, "gauge", "Serving tier counter.");
        rc |= sl_prom_value(o, metric, NULL, v);
    }
    free(text);
    rc |= sl_prom_header(o, "sluice_requests_total", "counter",
                         "RESP lookups (hit, miss, error) and gRPC calls (ok, unauthenticated, error).");
    if (sc.resp_lookups >= 0 && sc.resp_hits >= 0 && sc.resp_misses >= 0) {
        rc |= request_value(o, "resp", "hit", sc.resp_hits);
        rc |= request_value(o, "resp", "miss", sc.resp_misses);
        rc |= request_value(o, "resp", "error", sc.resp_lookups - sc.resp_hits - sc.resp_misses);
    }
    if (sc.grpc_calls >= 0 && sc.grpc_errors >= 0 && sc.grpc_unauthenticated >= 0) {
        rc |= request_value(o, "grpc", "ok", sc.grpc_calls - sc.grpc_errors);
        rc |= request_value(o, "grpc", "unauthenticated", sc.grpc_unauthenticated);
        rc |= request_value(o, "grpc", "error", sc.grpc_errors - sc.grpc_unauthenticated);
    }
    return rc ? SL_ENOMEM : SL_OK;
}

/* Server time per request, by protocol: what the servers measured, from a
 * command's dispatch (RESP) or a call's first handler run (gRPC) to its
 * reply, network and client excluded. */
static int collect_server_latency(void *ctx, sl_buf_t *o)
{
    node_metrics_t *nm = ctx;
    static const double bounds[] = { 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
                                     1e-3, 2.5e-3, 10e-3, 100e-3, 1.0 };
    sl_hist_t *h = malloc(sizeof *h);
    if (!h) return SL_ENOMEM;
    int rc = 0, header = 1;
    for (int grpc = 0; grpc <= 1; grpc++) {
        if (!(grpc ? serve_servers_has_grpc(nm->servers) : serve_servers_has_resp(nm->servers)))
            continue;
        sl_hist_init(h);
        serve_servers_latency(nm->servers, grpc, h);
        rc |= sl_hist_prometheus(h, o, "sluice_request_duration_seconds",
                                 "Server time per request: RESP command or gRPC call, from its "
                                 "dispatch to its reply (network excluded).",
                                 grpc ? "protocol=\"grpc\"" : "protocol=\"resp\"", bounds,
                                 (int)(sizeof bounds / sizeof bounds[0]), header);
        header = 0;
    }
    free(h);
    return rc ? SL_ENOMEM : SL_OK;
}

static int collect_hist(void *ctx, sl_buf_t *o)
{
    node_metrics_t *nm = ctx;
    static const double bounds[] = { 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 0.25 };
    return sl_hist_prometheus(nm->hist, o, "sluice_lookup_latency_seconds",
                              "Client-observed RESP lookup latency (built-in probe).", "",
                              bounds, (int)(sizeof bounds / sizeof bounds[0]), 1);
}

int node_metrics_attach(sl_metrics_t *m, const schema_t *schema, state_store_t *st,
                        const ingest_stats_t *ingest, serve_servers_t *servers,
                        const sl_hist_t *lookup_hist, node_metrics_t **out)
{
    node_metrics_t *nm = calloc(1, sizeof *nm);
    if (!nm) return SL_ENOMEM;
    pthread_mutex_init(&nm->mu, NULL);
    nm->schema = schema;
    nm->st = st;
    nm->ingest = ingest;
    nm->servers = servers;
    nm->hist = lookup_hist;
    int rc = 0;
    if (ingest) rc |= sl_metrics_add(m, collect_ingest, nm);
    if (st) rc |= sl_metrics_add(m, collect_progress, nm);
    if (servers) rc |= sl_metrics_add(m, collect_serving, nm);
    if (servers) rc |= sl_metrics_add(m, collect_server_latency, nm);
    if (lookup_hist) rc |= sl_metrics_add(m, collect_hist, nm);
    *out = nm;
    return rc ? SL_ENOMEM : SL_OK;
}

void node_metrics_set_ingest(node_metrics_t *nm, const ingest_stats_t *ingest,
                             const schema_t *schema)
{
    if (!nm) return;
    pthread_mutex_lock(&nm->mu);
    if (nm->ingest && ingest) {       /* the collector is registered only with one */
        nm->ingest = ingest;
        nm->schema = schema;
    }
    pthread_mutex_unlock(&nm->mu);
}

void node_metrics_free(node_metrics_t *nm)
{
    if (!nm) return;
    pthread_mutex_destroy(&nm->mu);
    free(nm);
}
