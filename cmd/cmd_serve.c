/*
 * cmd_serve.c — `sluice serve -c CONFIG`: answer feature lookups over RESP
 * and gRPC from the state directory, until SIGINT/SIGTERM.
 *
 * The state directory is opened for writing when it is free (this process
 * then holds its lock: a serving replica of a copied snapshot, or a state
 * with its ingest stopped). When an ingest process holds it, serve falls
 * back to a read-only open, which sees the state as of that moment; live
 * serving next to ingest is `sluice run` (one process, one store).
 *
 * Threads: signals are blocked before any thread starts and taken with
 * sigwait() by the main thread, so no server thread is interrupted.
 * Exit status: 0 after a clean stop, 1 on a startup failure, 2 on usage.
 */
#include "cmd_common.h"
#include "schema.h"
#include "serve.h"
#include "sl_config.h"
#include "sl_err.h"
#include "state.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sluice serve -c CONFIG [--set key=value ...] [--log-format F] [--read-only] [--stats]\n\n"
        "Serves feature vectors from the state directory over the Redis protocol\n"
        "(resp_bind:resp_port) and gRPC (grpc_bind:grpc_port, sluice.v1.FeatureService).\n\n"
        "  -c, --config FILE   worker configuration (see `sluice config --help`)\n"
        "  --set key=value     override a config option\n"
        "  --log-format F      text (default) or json: one JSON object per log line\n"
        "  --log-level L       debug, info (default), warn or error\n"
        "  --read-only         open the state read-only (a snapshot as of startup)\n"
        "  --stats             print the server counters on exit\n"
        "SIGINT/SIGTERM stop the servers and exit 0. See docs/serving.md.\n");
}

int cmd_serve(int argc, char **argv)
{
    const char *config = NULL;
    bool read_only = false, print_stats = false;
    sl_config_t cfg;
    char err[2048] = "";
    int status = 1;
    schema_t *schema = NULL;
    state_store_t *st = NULL;
    serve_state_backend_t *sb = NULL;
    serve_servers_t *srv = NULL;

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
        } else if (!strcmp(argv[i], "--read-only")) {
            read_only = true;
        } else if (!strcmp(argv[i], "--stats")) {
            print_stats = true;
        } else {
            fprintf(stderr, "sluice serve: unexpected argument '%s'\n\n", argv[i]);
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
    int load_status = cmd_load_config_and_schema("sluice serve", config, argc, argv, &cfg, &schema);
    if (load_status) {
        status = load_status;
        goto out_config;
    }
    state_options_t so = { .create_if_missing = true, .read_only = read_only };
    int rc = state_open(cfg.state_dir, &so, &st, err, sizeof err);
    if (rc == SL_EBUSY && !read_only) {
        fprintf(stderr, "sluice serve: %s\nsluice serve: opening read-only: serving the state as of "
                        "now (use `sluice run` to serve live next to ingest)\n", err);
        so.read_only = true;
        so.create_if_missing = false;
        rc = state_open(cfg.state_dir, &so, &st, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "sluice serve: %s\n", err);
        goto out_schema;
    }
    if (serve_state_backend_new(schema, st, &sb, err, sizeof err)) {
        fprintf(stderr, "sluice serve: %s\n", err);
        goto out_state;
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (serve_servers_start(&cfg, serve_state_backend(sb), &srv, err, sizeof err)) {
        fprintf(stderr, "sluice serve: %s\n", err);
        goto out_backend;
    }
    fprintf(stderr, "sluice serve: RESP on %s:%d, gRPC on %s:%d, %lld threads each, state %s%s\n",
            cfg.resp_bind, serve_servers_resp_port(srv), cfg.grpc_bind, serve_servers_grpc_port(srv),
            (long long)cfg.serve_threads, cfg.state_dir, so.read_only ? " (read-only)" : "");
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {}
    fprintf(stderr, "sluice serve: signal %d, stopping\n", sig);
    if (print_stats) serve_servers_print_stats(srv, stdout);
    serve_servers_stop(srv);
    status = 0;
out_backend:
    serve_state_backend_free(sb);
out_state:
    state_close(st);
out_schema:
    schema_free(schema);
out_config:
    sl_config_free(&cfg);
    return status;
}
