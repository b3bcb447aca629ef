/*
 * main.c — the `sluice` binary: a thin dispatcher over subcommands.
 *
 * Each subcommand lives in its own cmd_<name>.c and is declared weak here,
 * so the table below lists the whole CLI while each module lands on its own
 * schedule; a subcommand whose file is absent says so instead of failing to
 * link. Subcommands return the process exit status (0 ok, 1 failure, 2 usage).
 */
#include <stdio.h>
#include <string.h>

typedef int (*cmd_fn)(int argc, char **argv);

#define SLUICE_COMMANDS(X)                                                            \
    X(check,        "validate schema files and print a summary")                      \
    X(config,       "validate a config file, or list every option (--help, --markdown)") \
    X(ingest,       "consume Kafka sources into RocksDB state (exactly once)")        \
    X(serve,        "serve feature lookups over RESP and gRPC")                       \
    X(run,          "ingest and serve in one process")                                \
    X(snapshot,     "create|list|restore|delete state snapshots")                     \
    X(backfill,     "rebuild a view by replaying its Kafka topic")                    \
    X(training_set, "point-in-time feature values for labelled rows")                 \
    X(generate,     "produce realistic events for a schema source")                   \
    X(demo,         "embedded demo: mock Kafka, generator, ingest and servers")

#define X(name, help) int cmd_##name(int argc, char **argv) __attribute__((weak));
SLUICE_COMMANDS(X)
#undef X

static const struct { const char *name; cmd_fn *fn; const char *help; } commands[] = {
#define X(name, help) { #name, NULL, help },
    SLUICE_COMMANDS(X)
#undef X
};

static cmd_fn lookup(const char *name)
{
#define X(n, help) if (strcmp(name, #n) == 0) return cmd_##n;
    SLUICE_COMMANDS(X)
#undef X
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sluice COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "%s", commands[i].name);
        for (char *p = name; *p; p++) if (*p == '_') *p = '-';
        fprintf(f, "  %-14s %s\n", name, commands[i].help);
    }
    fprintf(f, "\nRun `sluice COMMAND --help` for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("sluice 0.1.0\n");
        return 0;
    }
    char name[64];
    snprintf(name, sizeof name, "%s", argv[1]);
    for (char *p = name; *p; p++) if (*p == '-') *p = '_';
    int known = 0;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, name)) known = 1;
    if (!known) {
        fprintf(stderr, "sluice: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return 2;
    }
    cmd_fn fn = lookup(name);
    if (!fn) {
        fprintf(stderr, "sluice: command '%s' is not available in this build yet\n", argv[1]);
        return 2;
    }
    return fn(argc - 1, argv + 1);
}
