/*
 * cmd_common.h — what the worker commands (ingest, serve, run) share: their
 * common command-line options, loading the config file, applying --set
 * overrides and loading its schema, the signal mask of a process that
 * stops on SIGINT/SIGTERM, and the ports file (--ports-file) that tells a
 * caller which ports the command listens on.
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
 * cmd_load_config_and_schema), --ports-file PATH (left for cmd_arg_value),
 * and the n_flags flags of the command. Returns
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

/* The value of the last "NAME VALUE" pair of argv[1..argc), or NULL. For
 * valued options cmd_parse_args skips, such as --ports-file. */
const char *cmd_arg_value(int argc, char **argv, const char *name);

/* One listening socket of a command, for the ports file. */
typedef struct cmd_listener {
    const char *name;        /* "resp", "grpc", "metrics" */
    const char *bind;        /* the address it listens on */
    int port;                /* the bound port; 0 = not listening (left out) */
} cmd_listener_t;

/* --ports-file PATH: writes one line "NAME BIND PORT" per listener with a
 * port (in the order given) to PATH atomically (a temporary file in the same
 * directory, renamed over PATH), so a reader that finds PATH finds every
 * line. Called once every listener is bound. Returns 0, or -1 with errstr
 * set (the temporary file removed). */
int cmd_ports_file_write(const char *path, const cmd_listener_t *l, size_t n, char *errstr, size_t errsize);

/* The ports file of a serving node (serve, run): its RESP, gRPC and
 * metrics listeners (metrics may be NULL: no endpoint). */
struct serve_servers;
struct sl_metrics;
int cmd_ports_file_write_node(const char *path, const sl_config_t *cfg, struct serve_servers *srv,
                              struct sl_metrics *metrics, char *errstr, size_t errsize);

#endif
