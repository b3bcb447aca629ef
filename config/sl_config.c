/*
 * sl_config.c — the option table and the loader for worker configuration.
 *
 * options[] is the single source of truth: the YAML loader, `--set`
 * overrides, `sluice config --help` and docs/operations.md (generated from
 * sl_config_print_help(markdown)) all read it. Each row names a field of
 * sl_config_t by offset and gives its type, default, bounds and meaning.
 * The file is YAML (same syntax as schemas, parsed by libyaml through
 * schemas/schema_yaml.h); keys are flat, except `kafka:` whose entries pass
 * through to librdkafka.
 */
#include "sl_config.h"
#include "schema_yaml.h"
#include "sl_buf.h"
#include "sl_err.h"
#include "sl_time.h"

#include <errno.h>
#include <libgen.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { OPT_STRING, OPT_INT, OPT_DURATION, OPT_BYTES, OPT_LIST } opt_type_t;

typedef struct option {
    const char *name;
    opt_type_t type;
    size_t offset;
    const char *def;       /* default, as written in a config file */
    int64_t min, max;      /* bounds for INT / DURATION (ms) / BYTES */
    const char *help;
} option_t;

#define OFF(f) offsetof(sl_config_t, f)
#define I64MAX INT64_MAX

static const option_t options[] = {
    { "schemas", OPT_LIST, OFF(schema_files), "", 0, 0,
      "Schema files to load, relative to the config file's folder." },
    { "brokers", OPT_STRING, OFF(brokers), "127.0.0.1:9092", 0, 0,
      "Kafka bootstrap servers (host:port,...)." },
    { "group_id", OPT_STRING, OFF(group_id), "sluice", 0, 0,
      "Kafka consumer group of the ingest workers." },
    { "state_dir", OPT_STRING, OFF(state_dir), "./sluice-state", 0, 0,
      "RocksDB state directory (created with mode 0700, locked by one process)." },
    { "commit_interval", OPT_DURATION, OFF(commit_interval_ms), "1s", 10, 3600000,
      "How often state and offsets are committed together; bounds serving freshness." },
    { "max_message_bytes", OPT_BYTES, OFF(max_message_bytes), "1048576", 64, 64 << 20,
      "Larger Kafka messages are rejected as bad input (reason: oversized)." },
    { "dead_letter_topic", OPT_STRING, OFF(dead_letter_topic), "", 0, 0,
      "Topic that receives bad events with a sluice.reason header; empty = none." },
    { "cache_max_entities", OPT_INT, OFF(cache_max_entities), "1000000", 1000, I64MAX,
      "Entity states kept in the ingest write-back cache." },
    { "snapshot_dir", OPT_STRING, OFF(snapshot_dir), "", 0, 0,
      "Where snapshots go; empty = '<state_dir>.snapshots'." },
    { "snapshot_interval", OPT_DURATION, OFF(snapshot_interval_ms), "0s", 0, I64MAX,
      "Period of automatic snapshots; 0s = none." },
    { "snapshot_retain", OPT_INT, OFF(snapshot_retain), "3", 1, 1000,
      "Automatic snapshots kept (older ones are deleted)." },
    { "resp_bind", OPT_STRING, OFF(resp_bind), "127.0.0.1", 0, 0,
      "Address of the Redis-protocol server." },
    { "resp_port", OPT_INT, OFF(resp_port), "6380", 0, 65535,
      "Port of the Redis-protocol server; 0 = disabled." },
    { "grpc_bind", OPT_STRING, OFF(grpc_bind), "127.0.0.1", 0, 0,
      "Address of the gRPC server." },
    { "grpc_port", OPT_INT, OFF(grpc_port), "50051", 0, 65535,
      "Port of the gRPC server; 0 = disabled." },
    { "password", OPT_STRING, OFF(password), "", 0, 0,
      "Password clients must send with AUTH on the Redis protocol; empty = none." },
    { "grpc_token", OPT_STRING, OFF(grpc_token), "", 0, 0,
      "Bearer token gRPC clients must send (authorization metadata); empty = none." },
    { "grpc_tls_cert", OPT_STRING, OFF(grpc_tls_cert), "", 0, 0,
      "PEM file: certificate chain for gRPC TLS (with grpc_tls_key); empty = plaintext." },
    { "grpc_tls_key", OPT_STRING, OFF(grpc_tls_key), "", 0, 0,
      "PEM file: private key of grpc_tls_cert." },
    { "serve_threads", OPT_INT, OFF(serve_threads), "2", 1, 64,
      "Threads per server (RESP event loops, gRPC completion-queue workers)." },
    { "max_clients", OPT_INT, OFF(max_clients), "1024", 1, 1000000,
      "Concurrent Redis-protocol connections; more are refused with an error." },
    { "max_request_bytes", OPT_BYTES, OFF(max_request_bytes), "1048576", 1024, 256 << 20,
      "Largest request (RESP command or gRPC message)." },
    { "max_entities", OPT_INT, OFF(max_entities), "1000", 1, 1000000,
      "Entities per lookup request." },
    { "max_args", OPT_INT, OFF(max_args), "1024", 2, 1000000,
      "Arguments per RESP command." },
    { "idle_timeout", OPT_DURATION, OFF(idle_timeout_ms), "5m", 0, I64MAX,
      "Idle Redis-protocol connections are closed after this; 0s = never." },
    { "metrics_bind", OPT_STRING, OFF(metrics_bind), "127.0.0.1", 0, 0,
      "Address of the Prometheus metrics endpoint." },
    { "metrics_port", OPT_INT, OFF(metrics_port), "9464", 0, 65535,
      "Port of the Prometheus metrics endpoint; 0 = disabled." },
    { "log_level", OPT_STRING, OFF(log_level), "info", 0, 0,
      "debug, info, warn or error." },
    { "log_format", OPT_STRING, OFF(log_format), "text", 0, 0,
      "text or json." },
};
#define N_OPTIONS (sizeof options / sizeof options[0])

static const option_t *find_option(const char *name)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (!strcmp(options[i].name, name)) return &options[i];
    return NULL;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static void free_list(sl_config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_schema_files; i++) free(cfg->schema_files[i]);
    free(cfg->schema_files);
    cfg->schema_files = NULL;
    cfg->n_schema_files = 0;
}

static int list_add(sl_config_t *cfg, const char *base_dir, const char *item)
{
    char **p = realloc(cfg->schema_files, (cfg->n_schema_files + 1) * sizeof *p);
    if (!p) return SL_ENOMEM;
    cfg->schema_files = p;
    sl_buf_t b = SL_BUF_INIT;
    int rc = (item[0] != '/' && base_dir && *base_dir)
                 ? sl_buf_printf(&b, "%s/%s", base_dir, item)
                 : sl_buf_printf(&b, "%s", item);
    if (rc) { sl_buf_free(&b); return SL_ENOMEM; }
    cfg->schema_files[cfg->n_schema_files++] = (char *)b.data;
    return SL_OK;
}

static bool check_enum(const option_t *o, const char *v, char *errstr, size_t errsize)
{
    static const char *const levels[] = { "debug", "info", "warn", "error", NULL };
    static const char *const formats[] = { "text", "json", NULL };
    const char *const *allowed = !strcmp(o->name, "log_level") ? levels
                               : !strcmp(o->name, "log_format") ? formats : NULL;
    if (!allowed) return true;
    for (size_t i = 0; allowed[i]; i++)
        if (!strcmp(allowed[i], v)) return true;
    snprintf(errstr, errsize, "'%s' must be one of %s, found '%s'", o->name,
             allowed == levels ? "debug, info, warn, error" : "text, json", v);
    return false;
}

/* Sets one scalar option from text. errstr gets a message without location. */
static int set_value(sl_config_t *cfg, const option_t *o, const char *v, const char *base_dir,
                     char *errstr, size_t errsize)
{
    char *field = (char *)cfg + o->offset;
    int64_t x;
    switch (o->type) {
    case OPT_STRING: {
        if (!check_enum(o, v, errstr, errsize)) return SL_EINVAL;
        char *s = xstrdup(v);
        if (!s) return SL_ENOMEM;
        free(*(char **)field);
        *(char **)field = s;
        return SL_OK;
    }
    case OPT_LIST: {
        free_list(cfg);
        /* comma-separated on the command line */
        char *copy = xstrdup(v), *save = NULL;
        if (!copy) return SL_ENOMEM;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (list_add(cfg, base_dir, t)) { free(copy); return SL_ENOMEM; }
        free(copy);
        return SL_OK;
    }
    case OPT_INT:
    case OPT_BYTES:
        if (!sy_parse_int(v, &x)) {
            snprintf(errstr, errsize, "'%s' must be an integer, found '%s'", o->name, v);
            return SL_EINVAL;
        }
        break;
    case OPT_DURATION:
        if (sl_duration_parse(v, 1, &x)) {
            snprintf(errstr, errsize, "'%s' must be a duration like 100ms, 1s or 5m, found '%s'",
                     o->name, v);
            return SL_EINVAL;
        }
        break;
    }
    if (x < o->min || x > o->max) {
        char lo[32], hi[32];
        if (o->type == OPT_DURATION) {
            sl_duration_format(o->min, lo, sizeof lo);
            o->max == I64MAX ? snprintf(hi, sizeof hi, "unbounded") : (void)sl_duration_format(o->max, hi, sizeof hi);
        } else {
            snprintf(lo, sizeof lo, "%lld", (long long)o->min);
            snprintf(hi, sizeof hi, "%lld", (long long)o->max);
        }
        snprintf(errstr, errsize, "'%s' must be between %s and %s, found '%s'", o->name, lo, hi, v);
        return SL_ERANGE;
    }
    *(int64_t *)field = x;
    return SL_OK;
}

static int kafka_set(sl_config_t *cfg, const char *key, const char *value)
{
    for (size_t i = 0; i < cfg->n_kafka; i++)
        if (!strcmp(cfg->kafka_keys[i], key)) {
            char *v = xstrdup(value);
            if (!v) return SL_ENOMEM;
            free(cfg->kafka_values[i]);
            cfg->kafka_values[i] = v;
            return SL_OK;
        }
    char **k = realloc(cfg->kafka_keys, (cfg->n_kafka + 1) * sizeof *k);
    if (!k) return SL_ENOMEM;
    cfg->kafka_keys = k;
    char **v = realloc(cfg->kafka_values, (cfg->n_kafka + 1) * sizeof *v);
    if (!v) return SL_ENOMEM;
    cfg->kafka_values = v;
    if (!(k[cfg->n_kafka] = xstrdup(key)) || !(v[cfg->n_kafka] = xstrdup(value))) {
        free(k[cfg->n_kafka]);
        return SL_ENOMEM;
    }
    cfg->n_kafka++;
    return SL_OK;
}

void sl_config_defaults(sl_config_t *cfg)
{
    char err[256];
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (options[i].type != OPT_LIST)
            set_value(cfg, &options[i], options[i].def, NULL, err, sizeof err);
}

int sl_config_load(sl_config_t *cfg, const char *path, char *errstr, size_t errsize)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errstr, errsize, "%s: cannot open config: %s", path, strerror(errno));
        return SL_EIO;
    }
    sl_buf_t text = SL_BUF_INIT;
    char chunk[8192];
    size_t n;
    int rc = SL_OK;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (sl_buf_append(&text, chunk, n)) { rc = SL_ENOMEM; break; }
    fclose(f);
    if (rc) { sl_buf_free(&text); return rc; }

    char *pathcopy = xstrdup(path);
    if (!pathcopy) { sl_buf_free(&text); return SL_ENOMEM; }
    const char *base_dir = dirname(pathcopy);

    sy_doc_t d;
    rc = sy_doc_load(&d, path, (const char *)text.data, text.len, errstr, errsize);
    if (rc) goto done;
    yaml_node_t *root = sy_root(&d);
    if (!sy_is_map(root)) {
        rc = sy_error(&d, root, "a config file must be a mapping of option: value");
        goto done;
    }
    SY_MAP_EACH(&d, root, k, v) {
        const char *key = sy_scalar(k);
        if (!key) { rc = sy_error(&d, k, "option names must be plain words"); goto done; }
        for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < k_pair; p++) {
            const char *prev = sy_scalar(sy_node(&d, p->key));
            if (prev && !strcmp(prev, key)) { rc = sy_error(&d, k, "duplicate option '%s'", key); goto done; }
        }
        if (!strcmp(key, "kafka")) {
            if (!sy_is_map(v)) { rc = sy_error(&d, v, "'kafka' must map librdkafka properties to values"); goto done; }
            SY_MAP_EACH(&d, v, kk, kv) {
                if (!sy_scalar(kk) || !sy_scalar(kv)) {
                    rc = sy_error(&d, kk, "kafka properties must be plain key: value pairs");
                    goto done;
                }
                if (kafka_set(cfg, sy_scalar(kk), sy_scalar(kv))) { rc = SL_ENOMEM; goto done; }
            }
            continue;
        }
        const option_t *o = find_option(key);
        if (!o) {
            rc = sy_error(&d, k, "unknown option '%s' (see `sluice config --help`)", key);
            goto done;
        }
        if (o->type == OPT_LIST) {
            free_list(cfg);
            if (sy_is_scalar(v)) {
                if (list_add(cfg, base_dir, sy_scalar(v))) { rc = SL_ENOMEM; goto done; }
            } else if (sy_is_seq(v)) {
                SY_SEQ_EACH(&d, v, item) {
                    if (!sy_scalar(item)) { rc = sy_error(&d, item, "'%s' must list file names", key); goto done; }
                    if (list_add(cfg, base_dir, sy_scalar(item))) { rc = SL_ENOMEM; goto done; }
                }
            } else {
                rc = sy_error(&d, v, "'%s' must be a file name or a list of them", key);
                goto done;
            }
            continue;
        }
        if (!sy_scalar(v)) {
            rc = sy_error(&d, v, "option '%s' needs a single value, found %s", key, sy_kind_name(v));
            goto done;
        }
        char msg[256];
        if ((rc = set_value(cfg, o, sy_scalar(v), base_dir, msg, sizeof msg))) {
            if (rc != SL_ENOMEM) rc = sy_error(&d, v, "%s", msg);
            goto done;
        }
    }
done:
    sy_doc_free(&d);
    free(pathcopy);
    sl_buf_free(&text);
    return rc;
}

int sl_config_set(sl_config_t *cfg, const char *assignment, char *errstr, size_t errsize)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) {
        snprintf(errstr, errsize, "--set expects key=value, found '%s'", assignment);
        return SL_EINVAL;
    }
    char key[128];
    size_t kl = (size_t)(eq - assignment);
    if (kl >= sizeof key) {
        snprintf(errstr, errsize, "unknown option '%.*s'", (int)kl, assignment);
        return SL_EINVAL;
    }
    memcpy(key, assignment, kl);
    key[kl] = '\0';
    if (!strncmp(key, "kafka.", 6) && key[6])
        return kafka_set(cfg, key + 6, eq + 1);
    const option_t *o = find_option(key);
    if (!o) {
        snprintf(errstr, errsize, "unknown option '%s' (see `sluice config --help`)", key);
        return SL_EINVAL;
    }
    return set_value(cfg, o, eq + 1, ".", errstr, errsize);
}

void sl_config_print_help(FILE *f, bool markdown)
{
    static const char *const tnames[] = { "string", "integer", "duration", "bytes", "list" };
    if (markdown) {
        fprintf(f, "| option | type | default | description |\n|---|---|---|---|\n");
        for (size_t i = 0; i < N_OPTIONS; i++)
            fprintf(f, "| `%s` | %s | `%s` | %s |\n", options[i].name, tnames[options[i].type],
                    options[i].def[0] ? options[i].def : "\"\"", options[i].help);
        fprintf(f, "| `kafka` | mapping | | librdkafka properties passed through unchanged "
                   "(e.g. `security.protocol`, `sasl.mechanism`, `ssl.ca.location`). |\n");
        return;
    }
    for (size_t i = 0; i < N_OPTIONS; i++)
        fprintf(f, "  %-20s %-9s default %-16s %s\n", options[i].name, tnames[options[i].type],
                options[i].def[0] ? options[i].def : "\"\"", options[i].help);
    fprintf(f, "  %-20s %-9s %-24s %s\n", "kafka", "mapping", "",
            "librdkafka properties passed through (kafka.X=Y with --set).");
}

/* Options and librdkafka properties whose values are secrets. */
static bool is_secret(const char *name)
{
    return !strcmp(name, "password") || !strcmp(name, "grpc_token") || strstr(name, "password") ||
           strstr(name, "secret") || strstr(name, "oauthbearer.config") || !strcmp(name, "ssl.key.pem");
}

void sl_config_print_values(FILE *f, const sl_config_t *cfg)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const option_t *o = &options[i];
        const char *field = (const char *)cfg + o->offset;
        int64_t x = o->type == OPT_STRING || o->type == OPT_LIST ? 0 : *(const int64_t *)field;
        char d[32];
        fprintf(f, "  %s: ", o->name);
        switch (o->type) {
        case OPT_STRING: {
            const char *v = *(char *const *)field;
            fprintf(f, "%s\n", !v || !*v ? "\"\"" : is_secret(o->name) ? "(set, not shown)" : v);
            break;
        }
        case OPT_LIST:
            fputc('[', f);
            for (size_t j = 0; j < cfg->n_schema_files; j++)
                fprintf(f, "%s%s", j ? ", " : "", cfg->schema_files[j]);
            fputs("]\n", f);
            break;
        case OPT_DURATION:
            fprintf(f, "%s\n", x == 0 ? "0s" : sl_duration_format(x, d, sizeof d));
            break;
        case OPT_INT:
        case OPT_BYTES:
            fprintf(f, "%lld\n", (long long)x);
            break;
        }
    }
    for (size_t i = 0; i < cfg->n_kafka; i++)
        fprintf(f, "  kafka.%s: %s\n", cfg->kafka_keys[i],
                is_secret(cfg->kafka_keys[i]) ? "(set, not shown)" : cfg->kafka_values[i]);
}

void sl_config_free(sl_config_t *cfg)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (options[i].type == OPT_STRING) {
            char **p = (char **)((char *)cfg + options[i].offset);
            free(*p);
            *p = NULL;
        }
    free_list(cfg);
    for (size_t i = 0; i < cfg->n_kafka; i++) {
        free(cfg->kafka_keys[i]);
        free(cfg->kafka_values[i]);
    }
    free(cfg->kafka_keys);
    free(cfg->kafka_values);
    cfg->kafka_keys = cfg->kafka_values = NULL;
    cfg->n_kafka = 0;
}
