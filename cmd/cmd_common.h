/*
 * cmd_common.h — what the worker commands (ingest, serve, run) share: their
 * common command-line options, loading the config file, applying --set
 * overrides and loading its schema, and the signal mask of a process that
 * stops on SIGINT/SIGTERM.
 */
#ifndef CMD_COMMON_H
#define CMD_COMMON_H

#include "schema.h"
#include "sl_config.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

/* A command's own boolean flag ("--stats"), set to true when present. */
typedef struct cmd_flag {
    const char *name;
    bool *value;
} cmd_flag_t;

/* Parses argv[1..argc): -h/--help (usage to stdout), -c/--config FILE into
 * *config, --set K=V, --log-format F and --log-level L (left in argv for
 * cmd_load_config_and_schema), and the n_flags flags of the command. Returns
 * -1 to go on, or the exit status: 0 after --help, 2 on an unknown argument
 * or a missing -c (usage to stderr). */
int cmd_parse_args(const char *prog, int argc, char **argv, const cmd_flag_t *flags, size_t n_flags,
                   void (*usage)(FILE *), const char **config);

/* Blocks SIGINT and SIGTERM (and SIGUSR1 with `usr1`) in the calling thread,
 * and so in every thread it starts afterwards: only the thread that waits in
 * sigwait(set) takes them, never a RocksDB or librdkafka thread (a SIGTERM
 * there would end the process without its final commit). Ignores SIGPIPE. */
void cmd_block_stop_signals(sigset_t *set, bool usr1);

/* For a command that stops from a handler instead: `handler` runs on SIGINT
 * and SIGTERM (sigaction, no SA_RESTART: a blocking call returns EINTR). */
void cmd_on_stop_signals(void (*handler)(int));

/* Prints "PROG: err" to stderr with the placeholder "-c CONFIG " of a
 * worker's refusal (the backfill command it names) replaced by the real
 * config path, so the command can be pasted as it is. */
void cmd_print_refusal(const char *prog, const char *err, const char *config);

/* Loads `config` into cfg, applies every "--set key=value" of argv[1..argc)
 * (and of "--log-format F" / "--log-level L", shorthands for --set
 * log_format=F / log_level=L), configures the process logger (util/sl_log)
 * and loads the schema files it names into *schema. Errors are printed as
 * "PROG: message". Returns 0, or the exit status to use: 2 for a bad --set,
 * 1 otherwise (*schema is NULL then). */
int cmd_load_config_and_schema(const char *prog, const char *config, int argc, char **argv,
                               sl_config_t *cfg, schema_t **schema);

#endif
