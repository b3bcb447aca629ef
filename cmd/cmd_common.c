/*
 * cmd_common.c — options, config + schema loading, the signal mask and the
 * ports file shared by the worker commands (cmd_common.h).
 */
#include "cmd_common.h"
#include "metrics.h"
#include "serve.h"
#include "sl_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cmd_parse_args(const char *prog, int argc, char **argv, const cmd_flag_t *flags, size_t n_flags,
                   void (*usage)(FILE *), const char **config)
{
    *config = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && i + 1 < argc) {
            *config = argv[++i];
            continue;
        }
        if ((!strcmp(a, "--set") || !strcmp(a, "--log-format") || !strcmp(a, "--log-level")) && i + 1 < argc) {
            i++;                           /* applied by cmd_load_config_and_schema */
            continue;
        }
        if (!strcmp(a, "--ports-file") && i + 1 < argc) {
            i++;                           /* read with cmd_arg_value */
            continue;
        }
        size_t f = 0;
        while (f < n_flags && strcmp(a, flags[f].name) != 0) f++;
        if (f < n_flags) {
            *flags[f].value = true;
            continue;
        }
        fprintf(stderr, "%s: unexpected argument '%s'\n\n", prog, a);
        usage(stderr);
        return 2;
    }
    if (!*config) {
        usage(stderr);
        return 2;
    }
    return -1;
}

void cmd_block_stop_signals(sigset_t *set, bool usr1)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    if (usr1) sigaddset(set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

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

void cmd_print_refusal(const char *prog, const char *err, const char *config)
{
    const char *ph = config ? strstr(err, "-c CONFIG ") : NULL;
    if (ph)
        fprintf(stderr, "%s: %.*s-c %s %s\n", prog, (int)(ph - err), err, config, ph + strlen("-c CONFIG "));
    else
        fprintf(stderr, "%s: %s\n", prog, err);
}

void cmd_on_stop_signals(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

const char *cmd_arg_value(int argc, char **argv, const char *name)
{
    const char *v = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) v = argv[++i];
    return v;
}

int cmd_ports_file_write(const char *path, const cmd_listener_t *l, size_t n, char *errstr, size_t errsize)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
        snprintf(errstr, errsize, "--ports-file %s: path too long", path);
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(errstr, errsize, "--ports-file: cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (l[i].port > 0) fprintf(f, "%s %s %d\n", l[i].name, l[i].bind, l[i].port);
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        snprintf(errstr, errsize, "--ports-file: cannot write %s: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

int cmd_ports_file_write_node(const char *path, const sl_config_t *cfg, serve_servers_t *srv,
                              sl_metrics_t *metrics, char *errstr, size_t errsize)
{
    const cmd_listener_t ls[] = {
        { "resp", cfg->resp_bind, serve_servers_resp_port(srv) },
        { "grpc", cfg->grpc_bind, serve_servers_grpc_port(srv) },
        { "metrics", cfg->metrics_bind, metrics ? sl_metrics_port(metrics) : 0 },
    };
    return cmd_ports_file_write(path, ls, sizeof ls / sizeof ls[0], errstr, errsize);
}
