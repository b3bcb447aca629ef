/*
 * cmd_check.c — `sluice check FILE...`: validate schema files, print a
 * summary. Exit 0 when all files together form a valid schema, 1 with a
 * located error ("FILE:LINE:COL: message") otherwise, 2 on usage errors.
 */
#include "schema.h"

#include <stdio.h>
#include <string.h>

int cmd_check(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: sluice check SCHEMA.yaml...\n\n"
                   "Validates schema files together (views may refer to entities and sources\n"
                   "of other files) and prints a summary. See docs/schema.md.\n");
        return argc < 2 ? 2 : 0;
    }
    schema_t *s;
    char err[1024];
    if (schema_load((const char *const *)argv + 1, (size_t)argc - 1, &s, err, sizeof err)) {
        fprintf(stderr, "sluice check: %s\n", err);
        return 1;
    }
    schema_print_summary(s, stdout);
    schema_free(s);
    return 0;
}
