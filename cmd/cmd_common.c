/*
 * cmd_common.c — config + schema loading shared by the worker commands.
 */
#include "cmd_common.h"

#include <stdio.h>
#include <string.h>

int cmd_load_config_and_schema(const char *prog, const char *config, int argc, char **argv,
                               sl_config_t *cfg, schema_t **schema)
{
    char err[2048] = "";
    *schema = NULL;
    if (sl_config_load(cfg, config, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--set") || i + 1 >= argc) continue;
        if (sl_config_set(cfg, argv[++i], err, sizeof err)) {
            fprintf(stderr, "%s: --set %s: %s\n", prog, argv[i], err);
            return 2;
        }
    }
    if (cfg->n_schema_files == 0) {
        fprintf(stderr, "%s: %s: no schema files (option `schemas`)\n", prog, config);
        return 1;
    }
    if (schema_load((const char *const *)cfg->schema_files, cfg->n_schema_files, schema, err,
                    sizeof err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 1;
    }
    return 0;
}
