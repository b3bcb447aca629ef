/*
 * sl_config.h — worker configuration: one YAML file plus --set overrides.
 *
 * Every option is a row of one table in sl_config.c (name, type, default,
 * bounds, description) that drives parsing, `sluice help config` and
 * docs/operations.md, so they cannot disagree. Unknown keys are errors.
 * Keys under `kafka:` pass through to librdkafka unchanged (security.protocol,
 * sasl.*, ssl.* ...).
 *
 * Ownership: sl_config_t owns all its strings; sl_config_free releases them.
 */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>

typedef struct sl_config {
    /* schema */
    char **schema_files;          /* schemas: [a.yaml, b.yaml] (relative to the config file) */
    size_t n_schema_files;
    /* ingest */
    char *brokers;                /* bootstrap servers, "127.0.0.1:9092" */
    char *group_id;               /* consumer group, default "sluice" */
    char *state_dir;              /* RocksDB state directory, default "./sluice-state" */
    int64_t commit_interval_ms;   /* state+offset commit period, default 1000 */
    int64_t max_message_bytes;    /* larger messages are bad input, default 1 MiB */
    char *dead_letter_topic;      /* "" = no dead-letter topic */
    int64_t cache_max_entities;   /* write-back cache size, default 1,000,000 */
    /* snapshots */
    char *snapshot_dir;           /* default "<state_dir>/../snapshots" when "" */
    int64_t snapshot_interval_ms; /* 0 = no periodic snapshots */
    int64_t snapshot_retain;      /* periodic snapshots kept, default 3 */
    /* serving */
    char *resp_bind;              /* default "127.0.0.1" */
    int64_t resp_port;            /* default 6380, 0 = disabled */
    char *grpc_bind;              /* default "127.0.0.1" */
    int64_t grpc_port;            /* default 50051, 0 = disabled */
    char *password;               /* RESP AUTH password, "" = none */
    char *grpc_token;             /* gRPC bearer token, "" = none */
    char *grpc_tls_cert;          /* PEM files for gRPC TLS, "" = plaintext */
    char *grpc_tls_key;
    int64_t serve_threads;        /* default 2 */
    int64_t max_clients;          /* default 1024 */
    int64_t max_request_bytes;    /* default 1 MiB */
    int64_t max_entities;         /* per request, default 1000 */
    int64_t max_args;             /* per RESP command, default 1024 */
    int64_t idle_timeout_ms;      /* default 300000, 0 = never */
    /* operations */
    char *metrics_bind;           /* default "127.0.0.1" */
    int64_t metrics_port;         /* default 9464, 0 = disabled */
    char *log_level;              /* debug|info|warn|error, default info */
    char *log_format;             /* text|json, default text */
    /* librdkafka pass-through (kafka: {key: value}) */
    char **kafka_keys;
    char **kafka_values;
    size_t n_kafka;
} sl_config_t;

/* Fills every field with its default. */
void sl_config_defaults(sl_config_t *cfg);
/* Loads `path` over the current values. Returns 0, or SL_EPARSE / SL_EINVAL /
 * SL_EIO with "FILE:LINE:COL: message" in errstr (unknown key, bad type,
 * out of bounds). */
int sl_config_load(sl_config_t *cfg, const char *path, char *errstr, size_t errsize);
/* Applies one "key=value" override (e.g. from --set); kafka.X=Y passes X to
 * librdkafka. Returns 0 or SL_EINVAL with errstr set. */
int sl_config_set(sl_config_t *cfg, const char *assignment, char *errstr, size_t errsize);
/* Prints the option table (name, type, default, description) as text or as a
 * Markdown table. */
void sl_config_print_help(FILE *f, bool markdown);
/* Prints every option's value, one "  name: value" line each in table order
 * (durations as written in a file, lists as [a, b], empty strings as ""),
 * then the kafka.* properties. Secrets (password, grpc_token, librdkafka
 * properties named *password*, *secret*, ...) print as "(set, not shown)". */
void sl_config_print_values(FILE *f, const sl_config_t *cfg);
void sl_config_free(sl_config_t *cfg);

#endif
