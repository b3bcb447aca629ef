/*
 * cmd_serve.c — `sluice serve -c CONFIG`: answer feature lookups over RESP
 * and gRPC from the state directory, until SIGINT/SIGTERM.
 *
 * The state directory is opened for writing when it is free (this process
 * then holds its lock: a serving replica of a copied snapshot, or a state
 * with its ingest stopped). When an ingest process holds it, serve FOLLOWS
 * it: the directory is opened as a RocksDB secondary (state_open_follower)
 * and a thread catches up with the owner's commits every follow interval
 * (commit_interval / 2, between 10 ms and 1 s), so lookups see whole
 * committed batches within about commit_interval * 1.5. Any number of such
 * serving processes may follow one ingest worker. --read-only opens the
 * directory as it is at startup and never refreshes.
 *
 * A follower also follows backfills: after each refresh it compares the
 * stored fingerprint of every view with its schema's; when the owner has cut
 * a view over to a new definition, it re-reads the schema files and, if they
 * hold that definition, swaps in a backend for them (serving/serve_swap.h:
 * old plan + old version or new + new; the refresh that makes the switch
 * visible comes first, so lookups of that view may fail for the few
 * milliseconds until the swap). If the files do not hold it, it says so once
 * and that view's lookups fail until they do.
 *
 * Threads: signals are blocked before any thread starts and taken with
 * sigwait() by the main thread, so no server thread is interrupted.
 * Exit status: 0 after a clean stop, 1 on a startup failure, 2 on usage.
 */
#define _XOPEN_SOURCE 700   /* nftw */
#define _DEFAULT_SOURCE
#include "cmd_common.h"
#include "metrics.h"
#include "node_metrics.h"
#include "schema.h"
#include "serve.h"
#include "serve_swap.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_log.h"
#include "state.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- following a live owner ------------------------------------------ */

#define FOLLOW_MAX_GENERATIONS 32

typedef struct follow {
    state_store_t *st;
    int64_t interval_ms;
    atomic_bool stop;
    pthread_t thread;
    bool started;
    uint64_t refreshes, errors;
    /* definitions: the schema served now and every one served before (kept
     * until exit: a serving thread may still hold an older generation) */
    const sl_config_t *cfg;
    serve_swap_t *sw;
    const schema_t *cur;
    schema_t *schemas[FOLLOW_MAX_GENERATIONS];
    serve_state_backend_t *backends[FOLLOW_MAX_GENERATIONS];
    size_t n_gen;
    uint64_t complained;      /* stored fingerprint already reported as unknown */
    bool recheck;             /* a switch failed: look again even without a new commit */
} follow_t;

/* The stored fingerprint of view `name`: 0 and *fp, or -1 when absent or a
 * backfill of it is pending (nothing to switch to yet). */
static int stored_fingerprint(state_store_t *st, const char *name, uint64_t *fp)
{
    state_view_fp_t kind;
    return state_view_fp_get(st, name, &kind, fp, NULL, 0) == 0 && kind == STATE_VIEW_FP_BUILT ? 0 : -1;
}

/* After a refresh that brought new commits (or after a failed switch): has
 * the owner cut a view over to another definition? */
static void follow_definitions(follow_t *f)
{
    f->recheck = false;
    const schema_t *cur = f->cur;
    uint64_t want = 0;
    const char *changed = NULL;
    for (size_t v = 0; v < cur->n_views && !changed; v++) {
        uint64_t fp;
        if (stored_fingerprint(f->st, cur->views[v].name, &fp) == 0 && fp != cur->views[v].fingerprint) {
            changed = cur->views[v].name;
            want = fp;
        }
    }
    if (!changed || want == f->complained) return;
    char err[2048];
    schema_t *ns = NULL;
    if (f->n_gen == FOLLOW_MAX_GENERATIONS ||
        schema_load((const char *const *)f->cfg->schema_files, f->cfg->n_schema_files, &ns, err, sizeof err)) {
        sl_error("serve", "view '%s' was rebuilt by a backfill (definition %016llx) but the schema files "
                 "cannot be reloaded: %s; its lookups fail until `sluice serve` restarts",
                 changed, (unsigned long long)want,
                 f->n_gen == FOLLOW_MAX_GENERATIONS ? "too many reloads" : err);
        f->complained = want;
        return;
    }
    int nv = schema_view_index(ns, changed);
    if (nv < 0 || ns->views[nv].fingerprint != want) {
        sl_error("serve", "view '%s' was rebuilt by a backfill (definition %016llx); the schema files "
                 "hold %s: update them (lookups of '%s' fail until then)", changed,
                 (unsigned long long)want, nv < 0 ? "no such view" : "another definition", changed);
        f->complained = want;
        schema_free(ns);
        return;
    }
    serve_state_backend_t *nb = NULL;
    if (serve_state_backend_new(ns, f->st, &nb, err, sizeof err) ||
        serve_swap_begin(f->sw, 5000) != 0) {
        sl_error("serve", "switching to the new definition of '%s' failed: %s", changed,
                 nb ? "requests did not drain within 5 s (retrying)" : err);
        f->recheck = true;
        serve_state_backend_free(nb);
        schema_free(ns);
        return;
    }
    double pause_ms = 0;
    if (serve_swap_commit(f->sw, serve_state_backend(nb), &pause_ms) != 0) {
        sl_error("serve", "switching to the new definition of '%s': out of memory", changed);
        serve_state_backend_free(nb);
        schema_free(ns);
        return;
    }
    f->schemas[f->n_gen] = ns;
    f->backends[f->n_gen] = nb;
    f->n_gen++;
    f->cur = ns;
    f->complained = 0;
    sl_info("serve", "view '%s': serving its new definition %016llx (cut over by a backfill; lookups "
            "held %.1f ms)", changed, (unsigned long long)want, pause_ms);
}

static void *follow_main(void *arg)
{
    follow_t *f = arg;
    char err[512];
    bool failing = false;
    while (!atomic_load(&f->stop)) {
        struct timespec ts = { f->interval_ms / 1000, (long)(f->interval_ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
        uint64_t seen = state_commit_count(f->st);
        if (state_follow_refresh(f->st, err, sizeof err)) {
            f->errors++;
            if (!failing) sl_warn("serve", "following the state owner: %s (retrying)", err);
            failing = true;
        } else {
            if (failing) sl_info("serve", "following the state owner again");
            failing = false;
            f->refreshes++;
            if (f->sw && (f->recheck || state_commit_count(f->st) != seen)) follow_definitions(f);
        }
    }
    return NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sluice serve -c CONFIG [--set key=value ...] [--log-format F] [--read-only] [--stats]\n"
        "                    [--ports-file PATH]\n\n"
        "Serves feature vectors from the state directory over the Redis protocol\n"
        "(resp_bind:resp_port) and gRPC (grpc_bind:grpc_port, sluice.v1.FeatureService).\n\n"
        "  -c, --config FILE   worker configuration (see `sluice config --help`)\n"
        "  --set key=value     override a config option\n"
        "  --log-format F      text (default) or json: one JSON object per log line\n"
        "  --log-level L       debug, info (default), warn or error\n"
        "  --read-only         open the state read-only as of startup (no refresh)\n"
        "  --stats             print the server counters on exit\n"
        "  --ports-file PATH   once listening, write \"NAME BIND PORT\" per listener to PATH\n"
        "                      (resp, grpc, metrics; written atomically; docs/operations.md)\n"
        "When `sluice ingest` holds the state dir, serve follows its commits (a\n"
        "RocksDB secondary refreshed every commit_interval/2).\n"
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
    sl_metrics_t *metrics = NULL;
    node_metrics_t *nm = NULL;
    follow_t fol = { 0 };
    char scratch[64] = "";

    sl_config_defaults(&cfg);
    const cmd_flag_t flags[] = { { "--read-only", &read_only }, { "--stats", &print_stats } };
    int parsed = cmd_parse_args("sluice serve", argc, argv, flags, 2, usage, &config);
    if (parsed >= 0) {
        status = parsed;
        goto out_config;
    }
    /* Blocked before any thread exists (RocksDB's included). */
    sigset_t set;
    cmd_block_stop_signals(&set, false);

    int load_status = cmd_load_config_and_schema("sluice serve", config, argc, argv, &cfg, &schema);
    if (load_status) {
        status = load_status;
        goto out_config;
    }
    state_options_t so = { .create_if_missing = true, .read_only = read_only };
    int rc = state_open(cfg.state_dir, &so, &st, err, sizeof err);
    if (rc == SL_EBUSY && !read_only) {
        sl_info("serve", "%s; following it (RocksDB secondary)", err);
        snprintf(scratch, sizeof scratch, "/tmp/sluice-serve-follower-XXXXXX");
        if (!mkdtemp(scratch)) {
            fprintf(stderr, "sluice serve: cannot create %s: %s\n", scratch, strerror(errno));
            scratch[0] = '\0';
            goto out_schema;
        }
        state_options_t fo = { .create_if_missing = false, .read_only = true };
        rc = state_open_follower(cfg.state_dir, scratch, &fo, &st, err, sizeof err);
        if (!rc) {
            fol.st = st;
            fol.interval_ms = cfg.commit_interval_ms / 2;
            if (fol.interval_ms < 10) fol.interval_ms = 10;
            if (fol.interval_ms > 1000) fol.interval_ms = 1000;
        }
    }
    if (rc) {
        fprintf(stderr, "sluice serve: %s\n", err);
        goto out_schema;
    }
    if (serve_state_backend_new(schema, st, &sb, err, sizeof err)) {
        fprintf(stderr, "sluice serve: %s\n", err);
        goto out_state;
    }
    const serve_backend_t *be = serve_state_backend(sb);
    if (fol.st) {
        fol.cfg = &cfg;
        fol.cur = schema;
        if (serve_swap_new(be, &fol.sw)) {
            fprintf(stderr, "sluice serve: out of memory\n");
            goto out_backend;
        }
        be = serve_swap_backend(fol.sw);
    }

    if (fol.st) {
        atomic_init(&fol.stop, false);
        if (pthread_create(&fol.thread, NULL, follow_main, &fol) != 0) {
            fprintf(stderr, "sluice serve: cannot start the follower thread\n");
            goto out_backend;
        }
        fol.started = true;
    }
    if (serve_servers_start(&cfg, be, &srv, err, sizeof err)) {
        fprintf(stderr, "sluice serve: %s\n", err);
        goto out_backend;
    }
    /* Prometheus: the serving counters and the committed progress this
     * process sees (a follower's freshness is that of its last refresh).
     * Best effort: a follower often runs beside its ingest worker, whose
     * metrics_port is the same by default; serving must not fail for that. */
    if (cfg.metrics_port > 0) {
        metrics = sl_metrics_new();
        if (!metrics || node_metrics_attach(metrics, schema, st, NULL, srv, NULL, &nm)) {
            fprintf(stderr, "sluice serve: metrics: out of memory\n");
            goto out_servers;
        }
        if (sl_metrics_listen(metrics, cfg.metrics_bind, (int)cfg.metrics_port, err, sizeof err)) {
            sl_warn("serve", "serving without a metrics endpoint: %s (set metrics_port to a free port, or 0)", err);
            sl_metrics_free(metrics);
            node_metrics_free(nm);
            metrics = NULL;
            nm = NULL;
        }
    }
    char mode[96] = "";
    if (fol.st) snprintf(mode, sizeof mode, " (following its owner, refresh every %lld ms)",
                         (long long)fol.interval_ms);
    else if (so.read_only) snprintf(mode, sizeof mode, " (read-only)");
    char mport[16] = "off";
    if (metrics) snprintf(mport, sizeof mport, "%d", sl_metrics_port(metrics));
    sl_info("serve", "RESP on %s:%d, gRPC on %s:%d, %lld threads each, metrics on %s:%s, state %s%s",
            cfg.resp_bind, serve_servers_resp_port(srv), cfg.grpc_bind, serve_servers_grpc_port(srv),
            (long long)cfg.serve_threads, cfg.metrics_bind, mport, cfg.state_dir, mode);
    const char *ports_file = cmd_arg_value(argc, argv, "--ports-file");
    if (ports_file && cmd_ports_file_write_node(ports_file, &cfg, srv, metrics, err, sizeof err)) {
        fprintf(stderr, "sluice serve: %s\n", err);
        goto out_servers;
    }
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {}
    sl_info("serve", "signal %d, stopping", sig);
    serve_servers_drain(srv);          /* answers what is in progress */
    if (print_stats) serve_servers_print_stats(srv, stdout);
    status = 0;
out_servers:
    sl_metrics_free(metrics);          /* stops the HTTP server before its collectors go */
    node_metrics_free(nm);
    serve_servers_stop(srv);
out_backend:
    if (fol.started) {
        atomic_store(&fol.stop, true);
        pthread_join(fol.thread, NULL);
    }
    serve_swap_free(fol.sw);
    for (size_t g = 0; g < fol.n_gen; g++) {
        serve_state_backend_free(fol.backends[g]);
        schema_free(fol.schemas[g]);
    }
    serve_state_backend_free(sb);
out_state:
    state_close(st);
out_schema:
    if (scratch[0]) nftw(scratch, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    schema_free(schema);
out_config:
    sl_config_free(&cfg);
    return status;
}
