/*
 * cmd_common.h — what the worker commands (ingest, serve, run) share:
 * loading the config file, applying --set overrides and loading its schema.
 */
#ifndef CMD_COMMON_H
#define CMD_COMMON_H

#include "schema.h"
#include "sl_config.h"

/* Loads `config` into cfg, applies every "--set key=value" of argv[1..argc)
 * (and of "--log-format F" / "--log-level L", shorthands for --set
 * log_format=F / log_level=L), configures the process logger (util/sl_log)
 * and loads the schema files it names into *schema. Errors are printed as
 * "PROG: message". Returns 0, or the exit status to use: 2 for a bad --set,
 * 1 otherwise (*schema is NULL then). */
int cmd_load_config_and_schema(const char *prog, const char *config, int argc, char **argv,
                               sl_config_t *cfg, schema_t **schema);

#endif
