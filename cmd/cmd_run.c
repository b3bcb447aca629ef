/*
 * cmd_run.c — `sluice run -c CONFIG`: ingest and serve in one process, on
 * one state store. The live deployment: events committed by the ingest
 * worker are servable at once (freshness = commit_interval), and the
 * consistency tokens of gRPC responses follow ingest's commits.
 *
 * Hosted backfills. The node owns the state directory (its lock), so a
 * `sluice backfill` started beside it hands its request over the control
 * socket (replay/backfill_ctl.h) and the node runs it while it keeps
 * serving:
 *
 *   LIVE(schema A) --request V--> re-read the schema files (B), check them,
 *     |                           build B's serving backend
 *     |                                   |
 *     |                           stop the live worker (final commit)
 *     |                                   v
 *     |   BACKFILL: backfill_run(B, live) in a thread — its own live worker
 *     |   ingests B without V; serving answers V from its CURRENT version
 *     |   with A's plan (A stays in memory), every other view live
 *     |                                   |
 *     |   switch_begin: hold new requests, drain the ones on A  (serve_swap)
 *     |   version switch (one synced write) + V's coverage
 *     |   switch_end: publish B's backend, release the requests
 *     |                                   v
 *     +<------------- LIVE(schema B): a normal worker on the full B
 *
 * A failed or stopped backfill before the switch leaves A serving and
 * restarts live ingest of A without V (V's state is frozen at its current
 * version; the store marks its backfill pending, so a full-A worker would
 * refuse it); rerunning the command resumes. A node restarted (kill -9)
 * with a backfill pending for a view of the schema files resumes it by
 * itself. The schema files no longer hold the definition V's current
 * version was built with, so a backfill request stores it first: the packed
 * texts of A's files (schema_load_pack) under view.<V>.serving_schema, and
 * the restarted node serves V from them until the cut-over, as before the
 * crash. (A store without that row, written by an older node, answers V
 * with a clear error until the cut-over.)
 *
 * Schemas, serving backends and stopped workers the node used are kept until
 * exit: older serving generations may still reference them, and metrics
 * read the first worker's counters.
 *
 * Threads: signals are blocked before any thread starts; the ingest worker
 * runs on its own thread, the servers on theirs, the control socket on one,
 * a hosted backfill on one; the main thread waits in sigwait().
 * SIGINT/SIGTERM stop a backfill (progress committed), then ingest (final
 * commit), then the servers. A fatal ingest error stops the process too
 * (SIGUSR1 to the main thread). Node state shared with the control thread
 * and the backfill thread is under node.mu.
 *
 * Exit status: 0 after a clean stop, 1 on a startup or ingest failure, 2 on
 * usage errors.
 */
#include "backfill.h"
#include "backfill_ctl.h"
#include "ingest.h"
#include "metrics.h"
#include "node_metrics.h"
#include "cmd_common.h"
#include "replay.h"
#include "schema.h"
#include "serve.h"
#include "serve_swap.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_log.h"
#include "sl_time.h"
#include "state.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUN_MAX_KEEP 64           /* schemas / backends / workers kept until exit */

typedef struct run_node {
    sl_config_t *cfg;
    state_store_t *st;
    pthread_t main_thread;
    pthread_mutex_t mu;
    serve_swap_t *sw;
    backfill_ctl_t *ctl;
    node_metrics_t *nm;           /* NULL without a metrics port */
    const schema_t *schema;       /* what the node ingests and serves now */
    char *pack;                   /* its files' texts (schema_load_pack), NULL if unknown */
    size_t pack_len;
    /* kept until exit */
    schema_t *schemas[RUN_MAX_KEEP];
    size_t n_schemas;
    serve_state_backend_t *backends[RUN_MAX_KEEP];
    size_t n_backends;
    ingest_worker_t *workers[RUN_MAX_KEEP];
    size_t n_workers;
    schema_view_t *subviews[RUN_MAX_KEEP];   /* view arrays of sub-schemas */
    schema_t subs[RUN_MAX_KEEP];
    size_t n_subs;
    /* the live worker */
    ingest_worker_t *w;
    const schema_t *w_schema;     /* the (sub-)schema w ingests */
    pthread_t w_thread;
    bool w_running;
    bool w_handoff;               /* stopped on purpose: not a fatal end */
    int w_rc;
    char w_err[2048];
    /* a hosted backfill */
    bool bf_running, bf_joinable, bf_switched;
    pthread_t bf_thread;
    char bf_view[256];
    backfill_ctl_request_t bf_req;
    const schema_t *bf_schema;
    char *bf_pack;                /* bf_schema's files' texts */
    size_t bf_pack_len;
    serve_state_backend_t *bf_backend;
    double bf_pause_ms;
    bool stopping;
    bool fatal;
    char fatal_err[2048];
} run_node_t;

static void run__fatal(run_node_t *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run__fatal(run_node_t *n, const char *fmt, ...)
{
    pthread_mutex_lock(&n->mu);
    if (!n->fatal) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(n->fatal_err, sizeof n->fatal_err, fmt, ap);
        va_end(ap);
        n->fatal = true;
    }
    pthread_mutex_unlock(&n->mu);
    pthread_kill(n->main_thread, SIGUSR1);   /* wake the main thread */
}

/* ---- the live worker --------------------------------------------------------- */

static void *run__ingest_main(void *arg)
{
    run_node_t *n = arg;
    n->w_rc = ingest_worker_run(n->w, n->w_err, sizeof n->w_err);
    pthread_mutex_lock(&n->mu);
    bool handoff = n->w_handoff;
    pthread_mutex_unlock(&n->mu);
    if (!handoff) run__fatal(n, "ingest: %s", n->w_rc ? n->w_err : "the worker stopped");
    return NULL;
}

/* Starts a live worker on `schema`, without the view named `without` when
 * given (a sub-schema kept until exit). Caller thread: main or backfill. */
static int run__worker_start(run_node_t *n, const schema_t *schema, const char *without,
                             char *errstr, size_t errsize)
{
    if (n->n_workers >= RUN_MAX_KEEP || n->n_subs >= RUN_MAX_KEEP) {
        snprintf(errstr, errsize, "too many live worker restarts in one process; restart the node");
        return SL_ENOMEM;
    }
    const schema_t *use = schema;
    if (without) {
        schema_t *sub = &n->subs[n->n_subs];
        *sub = *schema;
        sub->views = calloc(schema->n_views + 1, sizeof *sub->views);
        if (!sub->views) return SL_ENOMEM;
        sub->n_views = 0;
        for (size_t v = 0; v < schema->n_views; v++)
            if (strcmp(schema->views[v].name, without) != 0) sub->views[sub->n_views++] = schema->views[v];
        sub->services = NULL;                   /* their refs index the full view list */
        sub->n_services = 0;
        n->subviews[n->n_subs++] = sub->views;
        if (sub->n_views == 0) return 0;        /* nothing else to ingest */
        use = sub;
    }
    ingest_options_t io = { .exit_at_eof = false, .progress_log_ms = 10000 };
    ingest_worker_t *w = NULL;
    int rc = ingest_worker_new(n->cfg, use, n->st, &io, &w, errstr, errsize);
    if (rc) return rc;
    n->workers[n->n_workers++] = w;
    node_metrics_set_ingest(n->nm, ingest_worker_stats(w), use);
    pthread_mutex_lock(&n->mu);
    n->w = w;
    n->w_schema = use;
    n->w_handoff = false;
    n->w_rc = 0;
    pthread_mutex_unlock(&n->mu);
    if (pthread_create(&n->w_thread, NULL, run__ingest_main, n)) {
        n->w = NULL;
        snprintf(errstr, errsize, "cannot start the ingest thread");
        return SL_ENOMEM;
    }
    n->w_running = true;
    return 0;
}

/* Stops the live worker; its final commit is done when this returns. The
 * worker object stays (metrics may read its counters). */
static void run__worker_stop(run_node_t *n)
{
    if (!n->w_running) return;
    pthread_mutex_lock(&n->mu);
    n->w_handoff = true;
    pthread_mutex_unlock(&n->mu);
    ingest_worker_stop(n->w);
    pthread_join(n->w_thread, NULL);
    n->w_running = false;
}

/* ---- hosted backfill ------------------------------------------------------------ */

static void run__progress(void *arg, const char *line, bool final)
{
    run_node_t *n = arg;
    sl_info("replay", "%s", line);
    backfill_ctl_send(n->ctl, final ? "F" : "P", "%s", line);
}

static int run__switch_begin(void *arg)
{
    run_node_t *n = arg;
    /* A request waiting for a consistency token may hold its pin up to the
     * servers' max token wait (10 s). */
    return serve_swap_begin(n->sw, 30000);
}

static void run__switch_end(void *arg, bool switched)
{
    run_node_t *n = arg;
    if (!switched) {
        serve_swap_abort(n->sw);
        return;
    }
    if (serve_swap_commit(n->sw, serve_state_backend(n->bf_backend), &n->bf_pause_ms))
        sl_error("run", "out of memory publishing the new serving backend: the old one still serves");
    n->bf_switched = true;
}

static void *run__backfill_main(void *arg)
{
    run_node_t *n = arg;
    char err[2048] = "", msg[1024];
    const char *view = n->bf_view;
    backfill_options_t o = {
        .view = view, .from_ms = n->bf_req.from_ms, .live = true, .progress_ms = 2000,
        .commit_interval_ms = n->bf_req.commit_interval_ms, .catchup_lag = n->bf_req.catchup_lag,
        .force = n->bf_req.force, .progress_fn = run__progress, .switch_begin = run__switch_begin,
        .switch_end = run__switch_end, .hook_arg = n,
    };
    const schema_t *old = n->schema;
    if (n->w_running) {
        backfill_ctl_send(n->ctl, "LOG", "stopping the node's live worker (final commit); view '%s' keeps "
                          "serving its current version until the cut-over", view);
        run__worker_stop(n);
    }
    backfill_ctl_send(n->ctl, "LOG", "replaying into a new version of '%s'; the other views are ingested "
                      "live meanwhile and every view keeps serving", view);
    backfill_stats_t bs;
    int rc = backfill_run(n->cfg, n->bf_schema, n->st, &o, &bs, err, sizeof err);
    int status = 0;
    char werr[2048] = "";
    if (n->bf_switched) {
        /* The new version and definition serve: ingest the new schema. */
        pthread_mutex_lock(&n->mu);
        n->schema = n->bf_schema;
        free(n->pack);
        n->pack = n->bf_pack;
        n->pack_len = n->bf_pack_len;
        n->bf_pack = NULL;
        pthread_mutex_unlock(&n->mu);
        if (rc != SL_ESHUTDOWN && run__worker_start(n, n->bf_schema, NULL, werr, sizeof werr)) {
            run__fatal(n, "after the cut-over of '%s': cannot start live ingest: %s", view, werr);
        }
    } else if (rc != SL_ESHUTDOWN && !n->stopping) {
        /* Nothing switched: A serves; ingest A without the frozen view. */
        if (run__worker_start(n, old, view, werr, sizeof werr))
            run__fatal(n, "after the failed backfill of '%s': cannot restart live ingest: %s", view, werr);
    }
    if (rc == 0) {
        snprintf(msg, sizeof msg,
                 "view '%s' now serves version %u (old version %u dropped)%s; %llu messages replayed "
                 "(%llu events applied, %llu bad, %llu late) in %.2fs = %.0f msg/s; serving held %.2f ms "
                 "at the switch; live ingest goes on with the new schema",
                 view, bs.new_version, bs.old_version, bs.resumed ? ", resumed" : "",
                 (unsigned long long)bs.messages, (unsigned long long)bs.events,
                 (unsigned long long)bs.bad, (unsigned long long)bs.late, bs.replay_s,
                 bs.replay_s > 0 ? (double)bs.messages / bs.replay_s : 0.0, n->bf_pause_ms);
        sl_info("run", "%s", msg);
    } else if (rc == SL_ESHUTDOWN) {
        status = 3;
        snprintf(msg, sizeof msg, "the node is stopping: the backfill of '%s' stopped with its progress "
                 "committed; it resumes when the node runs again", view);
    } else {
        status = rc == SL_EEXISTS ? 4 : 1;
        snprintf(msg, sizeof msg, "%s%s", err,
                 n->bf_switched ? "" : "; the view keeps serving its current version and the other views "
                 "are live: fix the cause and run the same command to resume");
        sl_error("run", "backfill of '%s': %s", view, msg);
    }
    pthread_mutex_lock(&n->mu);
    n->bf_running = false;
    pthread_mutex_unlock(&n->mu);
    backfill_ctl_finish(n->ctl, status, msg);
    return NULL;
}

/* Starts the backfill thread for view `vi` of `schema` (kept by the node).
 * With n->mu held. */
static int run__backfill_start(run_node_t *n, const schema_t *schema, int vi,
                               const backfill_ctl_request_t *req, char *msg, size_t msgsize)
{
    if (n->n_backends >= RUN_MAX_KEEP) {
        snprintf(msg, msgsize, "too many backfills in one process: restart the node first");
        return 1;
    }
    serve_state_backend_t *sb = NULL;
    char err[1024];
    if (serve_state_backend_new(schema, n->st, &sb, err, sizeof err)) {
        snprintf(msg, msgsize, "cannot build the serving backend of the new schema: %s", err);
        return 1;
    }
    n->backends[n->n_backends++] = sb;
    if (n->bf_joinable) {
        pthread_join(n->bf_thread, NULL);        /* the previous one ended */
        n->bf_joinable = false;
    }
    n->bf_backend = sb;
    n->bf_schema = schema;
    n->bf_req = *req;
    n->bf_switched = false;
    n->bf_pause_ms = 0;
    snprintf(n->bf_view, sizeof n->bf_view, "%s", schema->views[vi].name);
    if (pthread_create(&n->bf_thread, NULL, run__backfill_main, n)) {
        snprintf(msg, msgsize, "cannot start the backfill thread");
        return 1;
    }
    n->bf_running = n->bf_joinable = true;
    return 0;
}

/* Before a backfill of `view` starts afresh (its recorded definition is the
 * node's), stores the texts of the node's schema files, which V's current
 * version was built with: a node restarted mid-backfill serves V from them
 * (run__serving_schema). A resumed backfill keeps the row written when it
 * started. Failing to store it only costs that fallback: logged. */
static void run__keep_serving_schema(run_node_t *n, const char *view)
{
    int vi = schema_view_index(n->schema, view);
    state_view_fp_t kind;
    uint64_t fp;
    if (vi < 0 || !n->pack || state_view_fp_get(n->st, view, &kind, &fp, NULL, 0) != 0 ||
        kind != STATE_VIEW_FP_BUILT || fp != n->schema->views[vi].fingerprint)
        return;
    char name[600];
    snprintf(name, sizeof name, "view.%s.serving_schema", view);
    if (state_meta_put(n->st, name, n->pack, n->pack_len) != 0)
        sl_warn("run", "cannot store the current definition of view '%s': a restart during its backfill "
                "would answer it with an error until the cut-over", view);
}

/* The schema V's current version was built with, stored by
 * run__keep_serving_schema; NULL (logged) when absent or unusable. */
static schema_t *run__serving_schema(run_node_t *n, const char *view)
{
    char name[600], err[1024];
    sl_buf_t b = SL_BUF_INIT;
    schema_t *s = NULL;
    snprintf(name, sizeof name, "view.%s.serving_schema", view);
    int rc = state_meta_get(n->st, name, &b);
    if (rc == 0 && schema_load_packed(b.data, b.len, &s, err, sizeof err) != 0) {
        sl_warn("run", "the stored definition of view '%s' does not load: %s", view, err);
        s = NULL;
    } else if (rc == 0 && schema_view_index(s, view) < 0) {
        sl_warn("run", "the stored definition of view '%s' does not hold it", view);
        schema_free(s);
        s = NULL;
    }
    sl_buf_free(&b);
    return s;
}

/* Control socket handler (listener thread): checks the request against the
 * schema files as they are now and starts the backfill. */
static int run__on_request(void *arg, const backfill_ctl_request_t *req, char *msg, size_t msgsize)
{
    run_node_t *n = arg;
    int status = 1;
    schema_t *schema = NULL;
    char err[2048];
    pthread_mutex_lock(&n->mu);
    if (n->stopping) {
        snprintf(msg, msgsize, "the node is stopping");
        goto out;
    }
    if (n->bf_running) {
        if (strcmp(n->bf_view, req->view) == 0) {
            snprintf(msg, msgsize, "node pid %ld is already backfilling view '%s': following it", (long)getpid(),
                     req->view);
            status = 0;
        } else {
            snprintf(msg, msgsize, "a backfill of view '%s' is already running on this node (one at a time): "
                     "wait for it to finish (`sluice backfill -c CONFIG --view %s` follows it)", n->bf_view,
                     n->bf_view);
        }
        goto out;
    }
    if (n->n_schemas >= RUN_MAX_KEEP) {
        snprintf(msg, msgsize, "too many backfills in one process: restart the node first");
        goto out;
    }
    char *pack = NULL;
    size_t pack_len = 0;
    if (schema_load_pack((const char *const *)n->cfg->schema_files, n->cfg->n_schema_files, &schema,
                         &pack, &pack_len, err, sizeof err)) {
        snprintf(msg, msgsize, "the schema files do not load: %s", err);
        goto out;
    }
    int vi = schema_view_index(schema, req->view);
    if (vi < 0) {
        snprintf(msg, msgsize, "no feature view '%s' in the schema files (edit them first: the node re-reads "
                 "them for the backfill)", req->view);
        goto out;
    }
    for (size_t v = 0; v < schema->n_views; v++) {
        if ((int)v == vi || !backfill_view_needs(n->st, schema, (int)v)) continue;
        snprintf(msg, msgsize, "view '%s' of the schema files needs a backfill too (changed, or new on a "
                 "consumed topic); a node rebuilds one view at a time and ingests every other view live "
                 "meanwhile: revert '%s' for now, backfill '%s', then change '%s' and backfill it",
                 schema->views[v].name, schema->views[v].name, req->view, schema->views[v].name);
        goto out;
    }
    if (!req->force && backfill_view_up_to_date(n->st, &schema->views[vi])) {
        status = 4;
        snprintf(msg, msgsize, "view '%s' is up to date (its state was built with this definition); "
                 "use --force to rebuild it anyway", req->view);
        goto out;
    }
    run__keep_serving_schema(n, req->view);
    if ((status = run__backfill_start(n, schema, vi, req, msg, msgsize))) goto out;
    n->schemas[n->n_schemas++] = schema;
    schema = NULL;
    free(n->bf_pack);
    n->bf_pack = pack;
    n->bf_pack_len = pack_len;
    pack = NULL;
    snprintf(msg, msgsize, "node pid %ld hosts the backfill of view '%s'; serving goes on", (long)getpid(),
             req->view);
    sl_info("run", "control socket: backfill of view '%s' requested", req->view);
out:
    pthread_mutex_unlock(&n->mu);
    schema_free(schema);
    free(pack);
    return status;
}

/* A backfill of a view of `schema` left pending in the store (the node was
 * killed while hosting it): the view's index, or -1. */
static int run__pending_view(state_store_t *st, const schema_t *schema)
{
    int pending = -1;
    for (size_t v = 0; v < schema->n_views; v++) {
        if (backfill_view_pending(st, &schema->views[v])) {
            pending = (int)v;
            continue;
        }
        if (backfill_view_needs(st, schema, (int)v)) return -1;   /* the worker's refusal explains */
    }
    return pending;
}

/* ---- the command ----------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sluice run -c CONFIG [--set key=value ...] [--log-format F] [--stats] [--ports-file PATH]\n\n"
        "Ingest (Kafka -> state, exactly once) and serve (RESP + gRPC) in one process.\n"
        "Hosts `sluice backfill` requests while serving (docs/backfill.md).\n\n"
        "  -c, --config FILE   worker configuration (see `sluice config --help`)\n"
        "  --set key=value     override a config option (kafka.X=Y for librdkafka)\n"
        "  --log-format F      text (default) or json: one JSON object per log line\n"
        "  --log-level L       debug, info (default), warn or error\n"
        "  --stats             print ingest and server counters on exit\n"
        "  --ports-file PATH   once listening, write \"NAME BIND PORT\" per listener to PATH\n"
        "                      (resp, grpc, metrics; written atomically; docs/operations.md)\n"
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
    serve_servers_t *srv = NULL;
    sl_metrics_t *metrics = NULL;
    node_metrics_t *nm = NULL;
    run_node_t *n = calloc(1, sizeof *n);
    if (!n) return 1;
    pthread_mutex_init(&n->mu, NULL);
    n->cfg = &cfg;

    sl_config_defaults(&cfg);
    const cmd_flag_t flags[] = { { "--stats", &print_stats } };
    int parsed = cmd_parse_args("sluice run", argc, argv, flags, 1, usage, &config);
    if (parsed >= 0) {
        status = parsed;
        goto out_config;
    }
    /* Blocked before any thread exists (RocksDB's and librdkafka's included). */
    sigset_t set;
    cmd_block_stop_signals(&set, true);
    n->main_thread = pthread_self();

    int load_status = cmd_load_config_and_schema("sluice run", config, argc, argv, &cfg, &schema);
    if (load_status) {
        status = load_status;
        goto out_config;
    }
    n->schemas[n->n_schemas++] = schema;
    n->schema = schema;
    {   /* The files' texts, kept for a backfill's restart (run__keep_serving_schema);
         * read again, so they must still be what was loaded. */
        schema_t *again = NULL;
        if (schema_load_pack((const char *const *)cfg.schema_files, cfg.n_schema_files, &again, &n->pack,
                             &n->pack_len, err, sizeof err) != 0 ||
            again->fingerprint != schema->fingerprint) {
            free(n->pack);
            n->pack = NULL;
        }
        schema_free(again);
        err[0] = '\0';
    }
    state_options_t so = { .create_if_missing = true, .read_only = false };
    if (state_open(cfg.state_dir, &so, &n->st, err, sizeof err)) {
        fprintf(stderr, "sluice run: %s\n", err);
        goto out_config;
    }
    /* Killed while hosting a backfill? Resume it (below) instead of the
     * normal worker, which would refuse the half-built view. */
    int pending = run__pending_view(n->st, schema);
    if (pending < 0 && run__worker_start(n, schema, NULL, err, sizeof err)) {
        cmd_print_refusal("sluice run", err, config);    /* the exact backfill command */
        goto out_state;
    }
    /* A view being rebuilt keeps serving with the definition its current
     * version was built with, as before the restart. */
    schema_t *prior = pending >= 0 ? run__serving_schema(n, schema->views[pending].name) : NULL;
    if (prior) {
        n->schemas[n->n_schemas++] = prior;
        sl_info("run", "view '%s' serves its current version with its stored definition until the cut-over",
                schema->views[pending].name);
    }
    serve_state_backend_t *sb = NULL;
    if (serve_state_backend_new(prior ? prior : schema, n->st, &sb, err, sizeof err) ||
        serve_swap_new(serve_state_backend(sb), &n->sw)) {
        fprintf(stderr, "sluice run: %s\n", err[0] ? err : "out of memory");
        serve_state_backend_free(sb);
        goto out_worker;
    }
    n->backends[n->n_backends++] = sb;
    if (pending >= 0 && !prior) {
        char why[700];
        snprintf(why, sizeof why, "view '%s' is being rebuilt by a backfill resumed after a restart (the old "
                 "definition is gone); it serves again after the cut-over", schema->views[pending].name);
        serve_swap_refuse_view(n->sw, pending, why);
    }
    if (serve_servers_start(&cfg, serve_swap_backend(n->sw), &srv, err, sizeof err)) {
        fprintf(stderr, "sluice run: %s\n", err);
        goto out_worker;
    }
    if (cfg.metrics_port > 0) {
        err[0] = '\0';
        metrics = sl_metrics_new();
        if (!metrics ||
            node_metrics_attach(metrics, n->w_schema ? n->w_schema : schema, n->st,
                                n->n_workers ? ingest_worker_stats(n->workers[0]) : NULL,
                                srv, NULL, &nm) ||
            sl_metrics_listen(metrics, cfg.metrics_bind, (int)cfg.metrics_port, err, sizeof err)) {
            fprintf(stderr, "sluice run: metrics: %s\n", err[0] ? err : "out of memory");
            goto out_metrics;
        }
        n->nm = nm;
    }
    if (backfill_ctl_listen(cfg.state_dir, run__on_request, n, &n->ctl, err, sizeof err))
        sl_warn("run", "%s: `sluice backfill` cannot reach this node", err);
    sl_info("run", "ingest from %s; RESP on %s:%d, gRPC on %s:%d; state %s", cfg.brokers,
            cfg.resp_bind, serve_servers_resp_port(srv), cfg.grpc_bind, serve_servers_grpc_port(srv),
            cfg.state_dir);
    const char *ports_file = cmd_arg_value(argc, argv, "--ports-file");
    if (ports_file && cmd_ports_file_write_node(ports_file, &cfg, srv, metrics, err, sizeof err)) {
        fprintf(stderr, "sluice run: %s\n", err);
        goto out_ctl;
    }
    if (pending >= 0) {
        sl_info("run", "resuming the interrupted backfill of view '%s'",
                schema->views[pending].name);
        backfill_ctl_request_t req = { .from_ms = REPLAY_FROM_EARLIEST };  /* the stored start wins */
        snprintf(req.view, sizeof req.view, "%s", schema->views[pending].name);
        char msg[1024];
        pthread_mutex_lock(&n->mu);
        if (n->pack && (n->bf_pack = malloc(n->pack_len))) {   /* the files' texts serve after the cut-over */
            memcpy(n->bf_pack, n->pack, n->pack_len);
            n->bf_pack_len = n->pack_len;
        }
        int bst = run__backfill_start(n, schema, pending, &req, msg, sizeof msg);
        pthread_mutex_unlock(&n->mu);
        if (bst) {
            sl_error("run", "%s", msg);
            goto out_ctl;
        }
    }
    int sig = 0;
    for (;;) {
        while (sigwait(&set, &sig) != 0) {}
        if (sig != SIGUSR1) break;
        pthread_mutex_lock(&n->mu);
        bool fatal = n->fatal;
        pthread_mutex_unlock(&n->mu);
        if (fatal) break;
    }
    if (sig != SIGUSR1) sl_info("run", "signal %d, stopping", sig);
    pthread_mutex_lock(&n->mu);
    n->stopping = true;                         /* the control socket refuses new requests */
    pthread_mutex_unlock(&n->mu);
    serve_servers_drain(srv);                   /* stop taking lookups, answer those in progress */
    if (n->bf_joinable) {
        backfill_stop();                        /* its followers get "stopped, resumes on restart" */
        pthread_join(n->bf_thread, NULL);
        n->bf_joinable = false;
    }
    backfill_ctl_close(n->ctl);
    n->ctl = NULL;
    run__worker_stop(n);
    status = 0;
    if (n->fatal) {
        sl_error("run", "%s", n->fatal_err);
        status = 1;
    }
    if (print_stats) {
        if (n->w) ingest_stats_print(ingest_worker_stats(n->w), n->w_schema, stdout);
        serve_servers_print_stats(srv, stdout);
    }
out_ctl:
    backfill_ctl_close(n->ctl);
    if (n->bf_joinable) {
        backfill_stop();
        pthread_join(n->bf_thread, NULL);
    }
    run__worker_stop(n);
out_metrics:
    sl_metrics_free(metrics);          /* stops the HTTP server before its collectors go */
    n->nm = NULL;
    node_metrics_free(nm);
    serve_servers_stop(srv);
out_worker:
    run__worker_stop(n);
    serve_swap_free(n->sw);
    for (size_t i = 0; i < n->n_backends; i++) serve_state_backend_free(n->backends[i]);
    for (size_t i = 0; i < n->n_workers; i++) ingest_worker_free(n->workers[i]);
out_state:
    state_close(n->st);
out_config:
    for (size_t i = 0; i < n->n_subs; i++) free(n->subviews[i]);
    for (size_t i = 0; i < n->n_schemas; i++) schema_free(n->schemas[i]);
    if (!n->n_schemas) schema_free(schema);
    free(n->pack);
    free(n->bf_pack);
    sl_config_free(&cfg);
    pthread_mutex_destroy(&n->mu);
    free(n);
    return status;
}
