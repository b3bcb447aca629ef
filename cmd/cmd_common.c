/*
 * cmd_common.c — config + schema loading shared by the worker commands.
 */
#include "cmd_common.h"
#include "sl_log.h"

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
        char kv[512];
        const char *flag = argv[i];
        if (i + 1 >= argc) continue;
        if (!strcmp(flag, "--set")) snprintf(kv, sizeof kv, "%s", argv[i + 1]);
        else if (!strcmp(flag, "--log-format")) snprintf(kv, sizeof kv, "log_format=%s", argv[i + 1]);
        else if (!strcmp(flag, "--log-level")) snprintf(kv, sizeof kv, "log_level=%s", argv[i + 1]);
        else continue;
        i++;
        if (sl_config_set(cfg, kv, err, sizeof err)) {
            fprintf(stderr, "%s: %s %s: %s\n", prog, flag, argv[i], err);
            return 2;
        }
    }
    if (sl_log_configure(cfg->log_level, cfg->log_format)) {
        fprintf(stderr, "%s: bad log_level '%s' or log_format '%s' (debug|info|warn|error, text|json)\n",
                prog, cfg->log_level, cfg->log_format);
        return 2;
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
