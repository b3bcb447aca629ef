/*
 * cmd_check.c — `sluice check FILE...`: validate schema files, print a
 * summary. Exit 0 when all files together form a valid schema, 1 with a
 * located error ("FILE:LINE:COL: message") otherwise, 2 on usage errors.
 */
#include "backfill.h"
#include "schema.h"

#include <stdio.h>
#include <string.h>

int cmd_check(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: sluice check SCHEMA.yaml... [--state-dir DIR]\n\n"
                   "Validates schema files together (views may refer to entities and sources\n"
                   "of other files) and prints a summary. See docs/schema.md.\n"
                   "With --state-dir, also lists the views of a (possibly running) state dir\n"
                   "that need `sluice backfill` (docs/backfill.md); exit 1 if any does.\n");
        return argc < 2 ? 2 : 0;
    }
    /* --state-dir DIR may appear anywhere; the other arguments are files. */
    const char *state_dir = NULL;
    int nf = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--state-dir") && i + 1 < argc) state_dir = argv[++i];
        else argv[1 + nf++] = argv[i];
    }
    schema_t *s;
    char err[1024];
    if (schema_load((const char *const *)argv + 1, (size_t)nf, &s, err, sizeof err)) {
        fprintf(stderr, "sluice check: %s\n", err);
        return 1;
    }
    schema_print_summary(s, stdout);
    int status = 0;
    if (state_dir) {
        int need = backfill_check(s, state_dir, NULL, stdout, err, sizeof err);
        if (need < 0) {
            fprintf(stderr, "sluice check: %s\n", err);
            status = 1;
        } else if (need > 0) {
            status = 1;
        }
    }
    schema_free(s);
    return status;
}
