/*
 * cmd_run.c — `sluice run -c CONFIG`: ingest and serve in one process, on
 * one state store. The live deployment: events committed by the ingest
 * worker are servable at once (freshness = commit_interval), and the
 * consistency tokens of gRPC responses follow ingest's commits.
 *
 * Threads: signals are blocked before any thread starts; the ingest worker
 * runs on its own thread, the servers on theirs, the main thread waits in
 * sigwait(). SIGINT/SIGTERM stop ingest (final commit), then the servers.
 * A fatal ingest error stops the process too (SIGUSR1 to the main thread).
 *
 * Exit status: 0 after a clean stop, 1 on a startup or ingest failure, 2 on
 * usage errors.
 */
#include "ingest.h"
#include "metrics.h"
#include "node_metrics.h"
#include "cmd_common.h"
#include "schema.h"
#include "serve.h"
#include "sl_config.h"
#include "sl_err.h"
#include "state.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct run_ingest {
    pthread_t main_thread;     /* woken with SIGUSR1 when ingest ends */
    ingest_worker_t *w;
    int rc;
    char err[2048];
} run_ingest_t;

static void *run__ingest_main(void *arg)
{
    run_ingest_t *ri = arg;
    ri->rc = ingest_worker_run(ri->w, ri->err, sizeof ri->err);
    pthread_kill(ri->main_thread, SIGUSR1);   /* wake the main thread */
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sluice run -c CONFIG [--set key=value ...] [--log-format F] [--stats]\n\n"
        "Ingest (Kafka -> state, exactly once) and serve (RESP + gRPC) in one process.\n\n"
        "  -c, --config FILE   worker configuration (see `sluice config --help`)\n"
        "  --set key=value     override a config option (kafka.X=Y for librdkafka)\n"
        "  --log-format F      text (default) or json: one JSON object per log line\n"
        "  --log-level L       debug, info (default), warn or error\n"
        "  --stats             print ingest and server counters on exit\n"
        "SIGINT/SIGTERM commit, stop and exit 0. See docs/serving.md.\n");
}

int cmd_run(int argc, char **argv)
{
    const char *config = NULL;
    bool print_stats = false;
    sl_config_t cfg;
    char err[2048] = "";
    int status = 1;
    schema_t *schema = NULL;
    state_store_t *st = NULL;
    serve_state_backend_t *sb = NULL;
    serve_servers_t *srv = NULL;
    sl_metrics_t *metrics = NULL;
    node_metrics_t *nm = NULL;
    run_ingest_t ri = { 0 };

    sl_config_defaults(&cfg);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            status = 0;
            goto out_config;
        } else if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
            config = argv[++i];
        } else if ((!strcmp(argv[i], "--log-format") || !strcmp(argv[i], "--log-level")) && i + 1 < argc) {
            i++;                           /* applied by cmd_load_config_and_schema */
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            i++;
        } else if (!strcmp(argv[i], "--stats")) {
            print_stats = true;
        } else {
            fprintf(stderr, "sluice run: unexpected argument '%s'\n\n", argv[i]);
            usage(stderr);
            status = 2;
            goto out_config;
        }
    }
    if (!config) {
        usage(stderr);
        status = 2;
        goto out_config;
    }
    /* Blocked before any thread exists (RocksDB's and librdkafka's included),
     * so only sigwait below ever takes them: a stray SIGTERM or SIGUSR1 on
     * another thread would kill the process without its final commit. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    ri.main_thread = pthread_self();

    int load_status = cmd_load_config_and_schema("sluice run", config, argc, argv, &cfg, &schema);
    if (load_status) {
        status = load_status;
        goto out_config;
    }
    state_options_t so = { .create_if_missing = true, .read_only = false };
    if (state_open(cfg.state_dir, &so, &st, err, sizeof err)) {
        fprintf(stderr, "sluice run: %s\n", err);
        goto out_schema;
    }
    ingest_options_t io = { .exit_at_eof = false, .progress_log_ms = 10000 };
    if (ingest_worker_new(&cfg, schema, st, &io, &ri.w, err, sizeof err)) {
        fprintf(stderr, "sluice run: %s\n", err);
        goto out_state;
    }
    if (serve_state_backend_new(schema, st, &sb, err, sizeof err)) {
        fprintf(stderr, "sluice run: %s\n", err);
        goto out_worker;
    }

    if (serve_servers_start(&cfg, serve_state_backend(sb), &srv, err, sizeof err)) {
        fprintf(stderr, "sluice run: %s\n", err);
        goto out_backend;
    }
    if (cfg.metrics_port > 0) {
        metrics = sl_metrics_new();
        if (!metrics || node_metrics_attach(metrics, schema, st, ingest_worker_stats(ri.w), srv, NULL,
                                            NULL, &nm) ||
            sl_metrics_listen(metrics, cfg.metrics_bind, (int)cfg.metrics_port, err, sizeof err)) {
            fprintf(stderr, "sluice run: metrics: %s\n", err[0] ? err : "out of memory");
            goto out_metrics;
        }
    }
    pthread_t thr;
    if (pthread_create(&thr, NULL, run__ingest_main, &ri)) {
        fprintf(stderr, "sluice run: cannot start the ingest thread\n");
        goto out_metrics;
    }
    fprintf(stderr, "sluice run: ingest from %s; RESP on %s:%d, gRPC on %s:%d; state %s\n", cfg.brokers,
            cfg.resp_bind, serve_servers_resp_port(srv), cfg.grpc_bind, serve_servers_grpc_port(srv),
            cfg.state_dir);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {}
    if (sig != SIGUSR1) fprintf(stderr, "sluice run: signal %d, stopping\n", sig);
    ingest_worker_stop(ri.w);
    pthread_join(thr, NULL);
    if (ri.rc) fprintf(stderr, "sluice run: ingest: %s\n", ri.err);
    if (print_stats) {
        ingest_stats_print(ingest_worker_stats(ri.w), schema, stdout);
        serve_servers_print_stats(srv, stdout);
    }
    status = ri.rc ? 1 : 0;
out_metrics:
    sl_metrics_free(metrics);          /* stops the HTTP server before its collectors go */
    node_metrics_free(nm);
    serve_servers_stop(srv);
out_backend:
    serve_state_backend_free(sb);
out_worker:
    ingest_worker_free(ri.w);
out_state:
    state_close(st);
out_schema:
    schema_free(schema);
out_config:
    sl_config_free(&cfg);
    return status;
}
