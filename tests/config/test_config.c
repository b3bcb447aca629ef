/*
 * test_config.c — the config loader: values of every type, located errors
 * for unknown keys and bad values, --set overrides, kafka pass-through, and
 * docs/operations.md carrying exactly the table the code prints.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sl_config.h"
#include "sl_err.h"

static char path[64];

static void write_config(const char *text)
{
    strcpy(path, "/tmp/sluice-config-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
}

static void load_expect_error(const char *text, const char *expect)
{
    sl_config_t cfg;
    char err[512] = "";
    sl_config_defaults(&cfg);
    write_config(text);
    int rc = sl_config_load(&cfg, path, err, sizeof err);
    unlink(path);
    sl_config_free(&cfg);
    cr_assert(rc < 0, "expected an error containing '%s'", expect);
    cr_assert(strstr(err, expect), "expected '%s' in '%s'", expect, err);
}

Test(config, defaults)
{
    sl_config_t cfg;
    sl_config_defaults(&cfg);
    cr_assert_str_eq(cfg.resp_bind, "127.0.0.1", "servers bind to loopback by default");
    cr_assert_eq(cfg.resp_port, 6380);
    cr_assert_eq(cfg.commit_interval_ms, 1000);
    cr_assert_eq(cfg.max_message_bytes, 1048576);
    cr_assert_str_eq(cfg.password, "");
    sl_config_free(&cfg);
}

Test(config, load_every_type)
{
    write_config("schemas: [a.yaml, /abs/b.yaml]\nbrokers: 10.0.0.1:9092\n"
                 "commit_interval: 100ms\nresp_port: 7000\nidle_timeout: 0s\n"
                 "kafka:\n  security.protocol: SASL_SSL\n  sasl.mechanism: PLAIN\n");
    sl_config_t cfg;
    char err[512];
    sl_config_defaults(&cfg);
    int rc = sl_config_load(&cfg, path, err, sizeof err);
    unlink(path);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(cfg.n_schema_files, 2);
    cr_assert_str_eq(cfg.schema_files[0], "/tmp/a.yaml", "relative to the config's folder");
    cr_assert_str_eq(cfg.schema_files[1], "/abs/b.yaml");
    cr_assert_str_eq(cfg.brokers, "10.0.0.1:9092");
    cr_assert_eq(cfg.commit_interval_ms, 100);
    cr_assert_eq(cfg.resp_port, 7000);
    cr_assert_eq(cfg.idle_timeout_ms, 0);
    cr_assert_eq(cfg.n_kafka, 2);
    cr_assert_str_eq(cfg.kafka_keys[1], "sasl.mechanism");
    cr_assert_str_eq(cfg.kafka_values[0], "SASL_SSL");
    cr_assert_eq(sl_config_set(&cfg, "resp_port=7001", err, sizeof err), 0);
    cr_assert_eq(cfg.resp_port, 7001);
    cr_assert_eq(sl_config_set(&cfg, "kafka.security.protocol=SSL", err, sizeof err), 0);
    cr_assert_str_eq(cfg.kafka_values[0], "SSL");
    cr_assert_eq(cfg.n_kafka, 2);
    cr_assert_neq(sl_config_set(&cfg, "resp_prot=1", err, sizeof err), 0);
    cr_assert(strstr(err, "unknown option 'resp_prot'"), "%s", err);
    cr_assert_neq(sl_config_set(&cfg, "resp_port=70000", err, sizeof err), 0);
    cr_assert(strstr(err, "'resp_port' must be between 0 and 65535"), "%s", err);
    sl_config_free(&cfg);
}

Test(config, errors_are_located)
{
    load_expect_error("brokers: x\nresp_prot: 1\n", ":2:1: unknown option 'resp_prot'");
    load_expect_error("commit_interval: 5\n", ":1:18: 'commit_interval' must be a duration");
    load_expect_error("commit_interval: 1ms\n", "'commit_interval' must be between 10ms and 1h");
    load_expect_error("resp_port: [1]\n", ":1:12: option 'resp_port' needs a single value");
    load_expect_error("log_format: xml\n", "'log_format' must be one of text, json");
    load_expect_error("brokers: a\nbrokers: b\n", ":2:1: duplicate option 'brokers'");
    load_expect_error("- a\n", "a config file must be a mapping");
    load_expect_error("a: [\n", "not valid YAML");
}

Test(config, operations_doc_matches_table)
{
    const char *doc = getenv("SLUICE_OPERATIONS_DOC");
    cr_assert_not_null(doc);
    FILE *f = fopen(doc, "r");
    cr_assert_not_null(f, "docs/operations.md is missing");
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    char *table = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&table, &len);
    sl_config_print_help(m, true);
    fclose(m);
    cr_assert(strstr(text, table), "docs/operations.md must contain the output of "
              "`sluice config --markdown` verbatim; regenerate it");
    free(table);
}

static char *print_values(const sl_config_t *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    sl_config_print_values(m, cfg);
    fclose(m);
    return text;
}

/* `sluice config FILE` prints every option; with nothing set, each value
 * reads back as the default the table (and docs/operations.md) gives. */
Test(config, printed_defaults_round_trip)
{
    sl_config_t cfg;
    sl_config_defaults(&cfg);
    char *text = print_values(&cfg);
    char *table = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&table, &len);
    sl_config_print_help(m, true);
    fclose(m);
    int n = 0;
    for (char *line = strtok(table, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64], def[64];
        if (sscanf(line, "| `%63[a-z_]` | %*s | `%63[^`]` |", name, def) != 2) continue;
        if (!strcmp(name, "schemas")) strcpy(def, "[]");
        char want[160];
        snprintf(want, sizeof want, "  %s: %s\n", name, def);
        cr_assert(strstr(text, want), "'%s' not printed as its default %s:\n%s", name, def, text);
        n++;
    }
    cr_assert_eq(n, 29, "options compared: %d", n);
    free(table);
    free(text);
    sl_config_free(&cfg);
}

Test(config, printed_values_hide_secrets)
{
    write_config("password: hunter2\ngrpc_token: tok-123\nschemas: [a.yaml, b.yaml]\n"
                 "commit_interval: 1500ms\nkafka:\n  sasl.password: s3cr3t\n  ssl.key.password: kp\n"
                 "  security.protocol: SASL_SSL\n");
    sl_config_t cfg;
    char err[512];
    sl_config_defaults(&cfg);
    int rc = sl_config_load(&cfg, path, err, sizeof err);
    unlink(path);
    cr_assert_eq(rc, 0, "%s", err);
    char *text = print_values(&cfg);
    cr_assert(!strstr(text, "hunter2") && !strstr(text, "tok-123") && !strstr(text, "s3cr3t") &&
              !strstr(text, ": kp\n"), "%s", text);
    cr_assert(strstr(text, "  password: (set, not shown)\n"), "%s", text);
    cr_assert(strstr(text, "  kafka.sasl.password: (set, not shown)\n"), "%s", text);
    cr_assert(strstr(text, "  kafka.security.protocol: SASL_SSL\n"), "%s", text);
    cr_assert(strstr(text, "  schemas: [/tmp/a.yaml, /tmp/b.yaml]\n"), "%s", text);
    cr_assert(strstr(text, "  commit_interval: 1500ms\n"), "%s", text);
    free(text);
    sl_config_free(&cfg);
}
