/*
 * cmd_config.c — `sluice config`: list every option from the one option
 * table (text or Markdown, the latter is what docs/operations.md embeds), or
 * validate a config file and print the values it results in.
 */
#include "sl_config.h"

#include <stdio.h>
#include <string.h>

int cmd_config(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: sluice config FILE [--set key=value ...]   validate a config file\n"
               "       sluice config --markdown                   option table as Markdown\n\n"
               "options:\n");
        sl_config_print_help(stdout, false);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--markdown")) {
        sl_config_print_help(stdout, true);
        return 0;
    }
    sl_config_t cfg;
    char err[1024];
    sl_config_defaults(&cfg);
    int rc = sl_config_load(&cfg, argv[1], err, sizeof err);
    for (int i = 2; rc == 0 && i < argc; i++) {
        if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            rc = sl_config_set(&cfg, argv[++i], err, sizeof err);
        } else {
            snprintf(err, sizeof err, "unexpected argument '%s'", argv[i]);
            rc = -1;
        }
    }
    if (rc) {
        fprintf(stderr, "sluice config: %s\n", err);
        sl_config_free(&cfg);
        return 1;
    }
    printf("%s: ok\n", argv[1]);
    sl_config_print_values(stdout, &cfg);
    sl_config_free(&cfg);
    return 0;
}
