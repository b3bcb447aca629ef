/*
 * cmd_training_set.c — `sluice training-set -c CONFIG --service S --labels
 * LABELS.csv --out OUT.csv`: point-in-time feature values for label rows by
 * replaying the service's source topics (replay/training.h,
 * docs/backfill.md).
 *
 * Exit status: 0 done, 1 failure (message says which), 2 usage.
 */
#include "cmd_common.h"
#include "schema.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_log.h"
#include "sl_time.h"
#include "training.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sluice training-set -c CONFIG --service S --labels LABELS.csv --out OUT.csv\n"
        "                           [--time-column NAME] [--buffer N] [--set key=value ...]\n\n"
        "Adds to every label row the value of each feature of service S as of the\n"
        "row's timestamp: only events at or before it, exactly the events live ingest\n"
        "accepts, through the same aggregate code. Replays each source topic once.\n\n"
        "  -c, --config FILE     worker configuration (brokers, schemas, kafka.*)\n"
        "  --service S           the service whose features to compute\n"
        "  --labels FILE         CSV with a header: the entity key column(s), named like\n"
        "                        the entity's keys, and a timestamp column ('-' = stdin)\n"
        "  --out FILE            output CSV: the label columns + one column per feature\n"
        "                        named VIEW.FEATURE ('-' = stdout)\n"
        "  --time-column NAME    timestamp column (default 'timestamp'): epoch ms or RFC 3339\n"
        "  --buffer N            reorder buffer cap in events (default 100000)\n"
        "  --quiet               no progress output\n"
        "  --progress-interval D a progress log line every D when stderr is not a\n"
        "                        terminal (default 2s)\n"
        "  --set key=value       override a config option\n"
        "  --log-format F        text (default) or json: one JSON object per log line\n"
        "  --log-level L         debug, info (default), warn or error\n");
}

int cmd_training_set(int argc, char **argv)
{
    const char *config = NULL;
    training_options_t o = { .time_column = "timestamp", .progress_ms = 2000 };
    sl_config_t cfg;
    schema_t *schema = NULL;
    char err[2048] = "";
    int status = 1;

    sl_config_defaults(&cfg);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); status = 0; goto out; }
        else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && has) config = argv[++i];
        else if (!strcmp(a, "--service") && has) o.service = argv[++i];
        else if (!strcmp(a, "--labels") && has) o.labels_path = argv[++i];
        else if (!strcmp(a, "--out") && has) o.out_path = argv[++i];
        else if (!strcmp(a, "--time-column") && has) o.time_column = argv[++i];
        else if (!strcmp(a, "--buffer") && has) o.max_buffered_events = (size_t)strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--quiet")) o.progress_ms = 0;
        else if (!strcmp(a, "--progress-interval") && has) {
            if (sl_duration_parse(argv[++i], 0, &o.progress_ms) || o.progress_ms <= 0) {
                fprintf(stderr, "sluice training-set: --progress-interval %s: not a positive duration\n", argv[i]);
                status = 2;
                goto out;
            }
        }
        else if ((!strcmp(a, "--set") || !strcmp(a, "--log-format") || !strcmp(a, "--log-level")) && has)
            i++;                           /* applied by cmd_load_config_and_schema */
        else {
            fprintf(stderr, "sluice training-set: unexpected argument '%s'\n\n", a);
            usage(stderr);
            status = 2;
            goto out;
        }
    }
    if (!config || !o.service || !o.labels_path || !o.out_path) {
        usage(stderr);
        status = 2;
        goto out;
    }
    int load_status = cmd_load_config_and_schema("sluice training-set", config, argc, argv, &cfg, &schema);
    if (load_status) {
        status = load_status;
        goto out;
    }
    training_stats_t st;
    int rc = training_set_run(&cfg, schema, &o, &st, err, sizeof err);
    if (rc) {
        fprintf(stderr, "sluice training-set: %s\n", err);
        goto out;
    }
    fprintf(stderr,
            "sluice training-set: %llu rows, %llu messages (%llu events applied, %llu bad, %llu late) "
            "in %.2fs (labels %.2fs, replay %.2fs, output %.2fs): %.0f rows/s, %.0f events/s replayed; "
            "peak %llu entities, reorder buffer %llu\n",
            (unsigned long long)st.labels, (unsigned long long)st.messages,
            (unsigned long long)st.events, (unsigned long long)st.bad, (unsigned long long)st.late,
            st.total_s, st.read_labels_s, st.replay_s, st.write_s,
            st.total_s > 0 ? (double)st.labels / st.total_s : 0.0,
            st.replay_s > 0 ? (double)st.messages / st.replay_s : 0.0,
            (unsigned long long)st.entities, (unsigned long long)st.buffered_max);
    status = 0;
out:
    schema_free(schema);
    sl_config_free(&cfg);
    return status;
}
