/*
 * cmd_ingest.c — `sluice ingest -c CONFIG [--set key=value ...]`: run one
 * ingest worker until SIGINT/SIGTERM (or, with --exit-at-eof, until every
 * assigned partition is caught up), committing state and offsets together.
 *
 * Exit status: 0 after a clean stop (final commit done, consumer closed),
 * 1 on a fatal error (schema change, state or Kafka failure: the message
 * says which), 2 on usage errors.
 */
#include "ingest.h"
#include "metrics.h"
#include "node_metrics.h"
#include "cmd_common.h"
#include "schema.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_log.h"
#include "state.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ingest_worker_t *volatile running;

static void on_signal(int sig)
{
    (void)sig;
    ingest_worker_t *w = running;
    if (w) ingest_worker_stop(w);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sluice ingest -c CONFIG [--set key=value ...] [--log-format F] [--exit-at-eof] [--stats]\n"
        "                     [--ports-file PATH]\n\n"
        "Consumes the Kafka topics of the schema's sources into RocksDB state, exactly\n"
        "once: entity states and partition offsets are committed in one atomic batch\n"
        "every commit_interval, and a restart resumes from the stored offsets.\n\n"
        "  -c, --config FILE   worker configuration (see `sluice config --help`)\n"
        "  --set key=value     override a config option (kafka.X=Y for librdkafka)\n"
        "  --log-format F      text (default) or json: one JSON object per log line\n"
        "  --log-level L       debug, info (default), warn or error\n"
        "  --exit-at-eof       stop once every assigned partition is caught up\n"
        "  --stats             print the counters on exit\n"
        "  --ports-file PATH   once listening, write \"NAME BIND PORT\" per listener to PATH\n"
        "                      (metrics; written atomically; docs/operations.md)\n"
        "SIGINT/SIGTERM commit, close the consumer and exit 0.\n");
}

int cmd_ingest(int argc, char **argv)
{
    const char *config = NULL;
    bool print_stats = false;
    ingest_options_t opts = { .exit_at_eof = false, .progress_log_ms = 10000 };
    sl_config_t cfg;
    char err[2048] = "";
    int status = 1;
    schema_t *schema = NULL;
    state_store_t *st = NULL;
    ingest_worker_t *w = NULL;
    sl_metrics_t *metrics = NULL;
    node_metrics_t *node_metrics = NULL;

    sl_config_defaults(&cfg);
    const cmd_flag_t flags[] = { { "--exit-at-eof", &opts.exit_at_eof }, { "--stats", &print_stats } };
    int parsed = cmd_parse_args("sluice ingest", argc, argv, flags, 2, usage, &config);
    if (parsed >= 0) {
        status = parsed;
        goto out_config;
    }
    int load_status = cmd_load_config_and_schema("sluice ingest", config, argc, argv, &cfg, &schema);
    if (load_status) {
        status = load_status;
        goto out_config;
    }
    state_options_t so = { .create_if_missing = true, .read_only = false, .block_cache_bytes = 0 };
    if (state_open(cfg.state_dir, &so, &st, err, sizeof err)) {
        fprintf(stderr, "sluice ingest: %s\n", err);
        goto out_schema;
    }
    if (ingest_worker_new(&cfg, schema, st, &opts, &w, err, sizeof err)) {
        /* Make the backfill command exact: the worker does not know the path. */
        cmd_print_refusal("sluice ingest", err, config);
        goto out_state;
    }

    /* Prometheus endpoint (metrics_port 0 = off). A port in use is a warning,
     * not a reason to stop ingesting. */
    if (cfg.metrics_port > 0) {
        err[0] = '\0';
        metrics = sl_metrics_new();
        if (!metrics || node_metrics_attach(metrics, schema, st, ingest_worker_stats(w), NULL, NULL,
                                            &node_metrics) ||
            sl_metrics_listen(metrics, cfg.metrics_bind, (int)cfg.metrics_port, err, sizeof err))
            sl_warn("ingest", "metrics endpoint not started: %s", metrics ? err : "out of memory");
    }
    const char *ports_file = cmd_arg_value(argc, argv, "--ports-file");
    if (ports_file) {
        const cmd_listener_t ls[] = { { "metrics", cfg.metrics_bind, metrics ? sl_metrics_port(metrics) : 0 } };
        if (cmd_ports_file_write(ports_file, ls, 1, err, sizeof err)) {
            fprintf(stderr, "sluice ingest: %s\n", err);
            goto out_metrics;
        }
    }

    running = w;
    cmd_on_stop_signals(on_signal);

    int rc = ingest_worker_run(w, err, sizeof err);
    running = NULL;
    if (print_stats) ingest_stats_print(ingest_worker_stats(w), schema, stdout);
    if (rc) sl_error("ingest", "%s", err);
    status = rc ? 1 : 0;

out_metrics:
    if (metrics) sl_metrics_free(metrics);
    node_metrics_free(node_metrics);
    ingest_worker_free(w);
out_state:
    state_close(st);
out_schema:
    schema_free(schema);
out_config:
    sl_config_free(&cfg);
    return status;
}
