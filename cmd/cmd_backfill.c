/*
 * cmd_backfill.c — `sluice backfill -c CONFIG --view V [--from earliest|TIME]`:
 * rebuild a view by replaying its topic into a new state version, keep the
 * other views live meanwhile, cut over atomically, exit (replay/backfill.h,
 * docs/backfill.md). Rerunning the same command after a crash resumes.
 *
 * When a `sluice run` node owns the state directory, the request is handed
 * to it over its control socket (replay/backfill_ctl.h): the node hosts the
 * backfill while it keeps serving, and this command shows the node's
 * progress until the cut-over. Ctrl-C detaches; the node goes on.
 *
 * Exit status: 0 cut over, 1 failure, 2 usage, 3 stopped by a signal
 * (progress committed; rerun to resume), 4 nothing to do (hosted: the view
 * is up to date), 130 detached from the node by Ctrl-C.
 */
#include "backfill.h"
#include "cmd_common.h"
#include "backfill_ctl.h"
#include "replay.h"
#include "schema.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_log.h"
#include "sl_time.h"
#include "state.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile int detach;

static void on_signal(int sig)
{
    (void)sig;
    backfill_stop();
    detach = 1;
}

/* The state dir is locked: hand the request to the node that owns it. */
static int hand_to_node(const char *state_dir, const backfill_options_t *o, const char *lock_err)
{
    backfill_ctl_request_t req = { .from_ms = o->from_ms, .force = o->force,
                                   .catchup_lag = o->catchup_lag,
                                   .commit_interval_ms = o->commit_interval_ms };
    snprintf(req.view, sizeof req.view, "%s", o->view);
    cmd_on_stop_signals(on_signal);
    char err[2048];
    int st = backfill_ctl_request(state_dir, &req, &detach, err, sizeof err);
    if (st < 0) {
        fprintf(stderr, "sluice backfill: %s, and that process does not host backfills (%s).\n"
                "Stop it (SIGTERM) and run this command again (it keeps the other views live), "
                "or run the node with `sluice run`, which hosts backfills while it serves.\n",
                lock_err, err);
        return 1;
    }
    fprintf(stderr, "sluice backfill: %s\n", err);
    return st;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sluice backfill -c CONFIG --view V [--from earliest|TIME] [--no-live]\n"
        "                       [--set key=value ...]\n\n"
        "Rebuilds feature view V (new, or whose definition changed) by replaying its\n"
        "source topic through the live ingest code into a NEW version of its state;\n"
        "the current version keeps serving until the switch, which is atomic.\n"
        "If `sluice run` owns the state dir, the node runs the backfill itself while it\n"
        "keeps serving (edit the schema files first: it re-reads them) and this command\n"
        "follows its progress; Ctrl-C detaches, the node goes on. Otherwise it runs\n"
        "here, in place of the worker (stop `sluice ingest` first); the other views are\n"
        "ingested live meanwhile; start the worker again afterwards. Interrupted (kill\n"
        "-9 too)? Run the same command (or restart the node): it resumes.\n\n"
        "  -c, --config FILE   worker configuration\n"
        "  --view V            the view to rebuild\n"
        "  --from WHEN         'earliest' (default), epoch ms, or RFC 3339: replay from the\n"
        "                      first offset at or after that Kafka timestamp\n"
        "  --no-live           do not ingest the other views meanwhile\n"
        "  --force             rebuild even if the view's definition did not change\n"
        "  --catchup-lag N     cut over once at most N offsets behind (default 0)\n"
        "  --commit-interval D commit the new version every D (default 10s: nobody reads\n"
        "                      it yet; a crash replays at most D of work)\n"
        "  --quiet             no progress output\n"
        "  --progress-interval D  a progress log line every D when stderr is not a\n"
        "                      terminal (default 2s; standalone runs)\n"
        "  --set key=value     override a config option\n"
        "  --log-format F      text (default) or json: one JSON object per log line\n"
        "  --log-level L       debug, info (default), warn or error\n");
}

static int parse_from(const char *s, int64_t *out)
{
    if (!strcmp(s, "earliest")) { *out = REPLAY_FROM_EARLIEST; return 0; }
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s && !*end) { *out = v; return 0; }
    return sl_rfc3339_parse(s, strlen(s), out);
}

int cmd_backfill(int argc, char **argv)
{
    const char *config = NULL;
    backfill_options_t o = { .from_ms = REPLAY_FROM_EARLIEST, .live = true, .progress_ms = 2000 };
    sl_config_t cfg;
    schema_t *schema = NULL;
    state_store_t *st = NULL;
    char err[2048] = "";
    int status = 1;

    sl_config_defaults(&cfg);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); status = 0; goto out; }
        else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && has) config = argv[++i];
        else if (!strcmp(a, "--view") && has) o.view = argv[++i];
        else if (!strcmp(a, "--from") && has) {
            if (parse_from(argv[++i], &o.from_ms)) {
                fprintf(stderr, "sluice backfill: --from %s: not 'earliest', epoch ms or RFC 3339\n", argv[i]);
                status = 2;
                goto out;
            }
        }
        else if (!strcmp(a, "--no-live")) o.live = false;
        else if (!strcmp(a, "--force")) o.force = true;
        else if (!strcmp(a, "--catchup-lag") && has) o.catchup_lag = strtoll(argv[++i], NULL, 10);
        else if (!strcmp(a, "--commit-interval") && has) {
            if (sl_duration_parse(argv[++i], 0, &o.commit_interval_ms)) {
                fprintf(stderr, "sluice backfill: --commit-interval %s: not a duration\n", argv[i]);
                status = 2;
                goto out;
            }
        }
        else if (!strcmp(a, "--quiet")) o.progress_ms = 0;
        else if (!strcmp(a, "--progress-interval") && has) {
            if (sl_duration_parse(argv[++i], 0, &o.progress_ms) || o.progress_ms <= 0) {
                fprintf(stderr, "sluice backfill: --progress-interval %s: not a positive duration\n", argv[i]);
                status = 2;
                goto out;
            }
        }
        else if ((!strcmp(a, "--set") || !strcmp(a, "--log-format") || !strcmp(a, "--log-level")) && has)
            i++;                           /* applied by cmd_load_config_and_schema */
        else {
            fprintf(stderr, "sluice backfill: unexpected argument '%s'\n\n", a);
            usage(stderr);
            status = 2;
            goto out;
        }
    }
    if (!config || !o.view) { usage(stderr); status = 2; goto out; }
    int load_status = cmd_load_config_and_schema("sluice backfill", config, argc, argv, &cfg, &schema);
    if (load_status) {
        status = load_status;
        goto out;
    }
    state_options_t so = { .create_if_missing = true };
    int rc = state_open(cfg.state_dir, &so, &st, err, sizeof err);
    if (rc == SL_EBUSY) {
        status = hand_to_node(cfg.state_dir, &o, err);
        goto out;
    }
    if (rc) { fprintf(stderr, "sluice backfill: %s\n", err); goto out; }

    cmd_on_stop_signals(on_signal);

    backfill_stats_t bs;
    rc = backfill_run(&cfg, schema, st, &o, &bs, err, sizeof err);
    if (rc == SL_ESHUTDOWN) {
        fprintf(stderr, "sluice backfill: stopped; progress is committed, run the same command to resume\n");
        status = 3;
        goto out;
    }
    if (rc == SL_EEXISTS) { fprintf(stderr, "sluice backfill: %s\n", err); status = 0; goto out; }
    if (rc) { fprintf(stderr, "sluice backfill: %s\n", err); goto out; }
    fprintf(stderr,
            "sluice backfill: view '%s' now serves version %u (old version %u dropped)%s; "
            "%llu messages replayed (%llu events applied, %llu bad, %llu late) in %.2fs to the last "
            "durable batch = %.0f msg/s; cut-over %.1f ms. Start the ingest worker again.\n",
            o.view, bs.new_version, bs.old_version, bs.resumed ? ", resumed" : "",
            (unsigned long long)bs.messages, (unsigned long long)bs.events, (unsigned long long)bs.bad,
            (unsigned long long)bs.late, bs.replay_s, bs.replay_s > 0 ? (double)bs.messages / bs.replay_s : 0.0,
            bs.cutover_ms);
    status = 0;
out:
    state_close(st);
    schema_free(schema);
    sl_config_free(&cfg);
    return status;
}
