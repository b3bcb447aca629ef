/*
 * cmd_check.c — `sluice check FILE...`: validate schema files, print a
 * summary. Exit 0 when all files together form a valid schema, 1 with a
 * located error ("FILE:LINE:COL: message") otherwise, 2 on usage errors.
 *
 * With --state-dir DIR, or -c CONFIG (its schema files and state_dir), also
 * lists the views of a (possibly running) state directory that need
 * `sluice backfill` (replay/backfill.h: backfill_check); with -c the listed
 * commands name that config file, so they can be pasted as they are.
 */
#include "backfill.h"
#include "cmd_common.h"
#include "schema.h"
#include "sl_config.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: sluice check SCHEMA.yaml... [--state-dir DIR]\n"
               "       sluice check -c CONFIG [SCHEMA.yaml...] [--state-dir DIR]\n\n"
               "Validates schema files together (views may refer to entities and sources\n"
               "of other files) and prints a summary. See docs/schema.md.\n"
               "With --state-dir, also lists the views of a (possibly running) state dir\n"
               "that need `sluice backfill` (docs/backfill.md); exit 1 if any does.\n"
               "With -c CONFIG, the schema files (unless given) and the state dir (unless\n"
               "--state-dir) come from the config, and each backfill command names it.\n");
}

int cmd_check(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    /* --state-dir DIR and -c CONFIG may appear anywhere; the other
     * arguments are files. */
    const char *state_dir = NULL, *config = NULL;
    int nf = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--state-dir") && i + 1 < argc) state_dir = argv[++i];
        else if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) config = argv[++i];
        else argv[1 + nf++] = argv[i];
    }
    sl_config_t cfg;
    sl_config_defaults(&cfg);
    schema_t *s = NULL;
    char err[1024];
    int status = 1;
    if (config) {
        if (sl_config_load(&cfg, config, err, sizeof err)) {
            fprintf(stderr, "sluice check: %s\n", err);
            goto out;
        }
        if (!state_dir) state_dir = cfg.state_dir;
        if (nf == 0) {
            if (cfg.n_schema_files == 0) {
                fprintf(stderr, "sluice check: %s: no schema files (option `schemas`)\n", config);
                goto out;
            }
            if (schema_load((const char *const *)cfg.schema_files, cfg.n_schema_files, &s, err, sizeof err)) {
                fprintf(stderr, "sluice check: %s\n", err);
                goto out;
            }
        }
    } else if (nf == 0) {
        usage(stderr);
        status = 2;
        goto out;
    }
    if (!s && schema_load((const char *const *)argv + 1, (size_t)nf, &s, err, sizeof err)) {
        fprintf(stderr, "sluice check: %s\n", err);
        goto out;
    }
    schema_print_summary(s, stdout);
    status = 0;
    if (state_dir) {
        int need = backfill_check(s, state_dir, config, stdout, err, sizeof err);
        if (need < 0) {
            fprintf(stderr, "sluice check: %s\n", err);
            status = 1;
        } else if (need > 0) {
            status = 1;
        }
    }
out:
    schema_free(s);
    sl_config_free(&cfg);
    return status;
}
