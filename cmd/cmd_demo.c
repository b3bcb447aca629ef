/*
 * cmd_demo.c — `sluice demo`: the whole system in one process with no
 * external cluster.
 *
 *   generator thread ──produce──► librdkafka mock cluster (in process)
 *                                        │ consumer group
 *                                        ▼
 *                     ingest worker thread ──atomic commits──► RocksDB state
 *                                                                  │
 *            redis-cli / grpc clients ◄── RESP + gRPC servers ◄────┘
 *            probe thread (built-in RESP client: lookups/s, p99)
 *            Prometheus /metrics (libmicrohttpd)
 *
 * The main thread prints what to try, then a live line every few seconds
 * (events/s, consumer lag, freshness, lookups/s, p99), and on Ctrl-C or
 * after --duration stops everything in order: generator, ingest (final
 * commit), servers, metrics.
 */
#define _XOPEN_SOURCE 700   /* nftw */
#define _DEFAULT_SOURCE
#include "cmd_common.h"
#include "gen.h"
#include "ingest.h"
#include "metrics.h"
#include "node_metrics.h"
#include "schema.h"
#include "serve.h"
#include "serve_lookup.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_hist.h"
#include "sl_log.h"
#include "sl_time.h"
#include "state.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SLUICE_SOURCE_DIR
#define SLUICE_SOURCE_DIR "."
#endif
#ifndef SLUICE_DATA_DIR
#define SLUICE_DATA_DIR "/usr/local/share/sluice"
#endif

#define DEMO_MAX_SOURCES 8
#define DEMO_PROBE_KEYS 64

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { (void)sig; stop_requested = 1; }

typedef struct demo {
    /* options */
    int resp_port, grpc_port, metrics_port, partitions;
    double rate;
    int64_t duration_s;
    const char *schema_path;
    char state_dir[512];
    bool state_dir_temp;         /* made here: removed at exit */
    /* kafka */
    rd_kafka_t *mock_host;
    rd_kafka_mock_cluster_t *mock;
    char bootstrap[512];
    rd_kafka_t *producer;
    /* model */
    schema_t *schema;
    sl_config_t cfg;
    state_store_t *st;
    ingest_worker_t *worker;
    pthread_t ingest_thr;
    int ingest_rc;
    char ingest_err[1024];
    serve_state_backend_t *backend;
    serve_servers_t *servers;
    sl_metrics_t *metrics;
    node_metrics_t *node_metrics;
    /* generator */
    gen_t *gens[DEMO_MAX_SOURCES];
    int gen_source[DEMO_MAX_SOURCES];
    size_t n_gens;
    pthread_t gen_thr;
    _Atomic uint64_t produced;
    _Atomic int stop_threads;
    /* probe */
    pthread_t probe_thr;
    char probe_keys[DEMO_PROBE_KEYS][160];
    size_t n_probe_keys;
    sl_hist_t probe_hist;
    _Atomic uint64_t probe_lookups, probe_errors;
    char probe_last_error[256];
} demo_t;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sluice demo [options]\n\n"
        "Runs Sluice end to end with no external cluster: an in-process Kafka (librdkafka's\n"
        "mock cluster), a generator of realistic events, ingest into RocksDB, and the RESP and\n"
        "gRPC servers on 127.0.0.1. Ctrl-C stops it cleanly.\n\n"
        "  --schema FILE        schema to run (default: schemas/examples/card_fraud.yaml)\n"
        "  --rate N             events per second (default 2000)\n"
        "  --duration S         stop after S seconds; 0 = until Ctrl-C (default 0)\n"
        "  --resp-port P        Redis-protocol port (default 6380; 0 = any free port)\n"
        "  --grpc-port P        gRPC port (default 50051; 0 = any free port)\n"
        "  --metrics-port P     Prometheus port (default 9464; 0 = any free port)\n"
        "  --partitions N       partitions per topic (default 4)\n"
        "  --state-dir DIR      state directory, new or empty (default: a new\n"
        "                       /tmp/sluice-demo-XXXXXX, removed at exit)\n"
        "  --log-format F       text (default) or json: the log lines on stderr\n"
        "  --log-level L        debug, info (default), warn or error\n");
}

static const char *default_schema(void)
{
    static const char *const candidates[] = {
        "schemas/examples/card_fraud.yaml",
        SLUICE_SOURCE_DIR "/schemas/examples/card_fraud.yaml",
        SLUICE_DATA_DIR "/schemas/card_fraud.yaml",
    };
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
        if (access(candidates[i], R_OK) == 0) return candidates[i];
    return candidates[0];
}

/* ---- generator thread --------------------------------------------------- */

static void *gen_main(void *arg)
{
    demo_t *d = arg;
    sl_buf_t payload = SL_BUF_INIT, key = SL_BUF_INIT;
    int64_t t0 = sl_mono_ns();
    uint64_t n = 0;
    while (!atomic_load(&d->stop_threads)) {
        gen_t *g = d->gens[n % d->n_gens];
        const char *topic = d->schema->sources[d->gen_source[n % d->n_gens]].topic;
        bool is_null;
        if (gen_next(g, &payload, &key, &is_null) < 0) break;
        while (rd_kafka_producev(d->producer, RD_KAFKA_V_TOPIC(topic),
                                 RD_KAFKA_V_VALUE(is_null ? NULL : payload.data, is_null ? 0 : payload.len),
                                 RD_KAFKA_V_KEY(key.data, key.len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(d->producer, 10);
            if (atomic_load(&d->stop_threads)) goto out;
        }
        rd_kafka_poll(d->producer, 0);
        n++;
        atomic_store(&d->produced, n);
        /* pace: sleep in 1 ms steps when ahead of schedule */
        int64_t due = t0 + (int64_t)((double)n * 1e9 / d->rate);
        int64_t now = sl_mono_ns();
        if (due > now + 1000000) {
            struct timespec ts = { 0, due - now > 50000000 ? 50000000 : (long)(due - now) };
            nanosleep(&ts, NULL);
        }
    }
out:
    rd_kafka_flush(d->producer, 5000);
    sl_buf_free(&payload);
    sl_buf_free(&key);
    return NULL;
}

/* ---- ingest thread ------------------------------------------------------ */

static void *ingest_main(void *arg)
{
    demo_t *d = arg;
    d->ingest_rc = ingest_worker_run(d->worker, d->ingest_err, sizeof d->ingest_err);
    if (d->ingest_rc) stop_requested = 1;
    return NULL;
}

/* ---- probe thread: a real RESP client -------------------------------- */

static void *probe_main(void *arg)
{
    demo_t *d = arg;
    redisContext *c = NULL;
    uint64_t i = 0;
    while (!atomic_load(&d->stop_threads)) {
        if (!c) {
            struct timeval tv = { 1, 0 };
            c = redisConnectWithTimeout("127.0.0.1", serve_servers_resp_port(d->servers), tv);
            if (!c || c->err) {
                if (c) redisFree(c);
                c = NULL;
                sleep(1);
                continue;
            }
        }
        const char *k = d->probe_keys[i++ % d->n_probe_keys];
        int64_t t = sl_mono_ns();
        redisReply *r = redisCommand(c, "HGETALL %s", k);
        sl_hist_record(&d->probe_hist, (uint64_t)(sl_mono_ns() - t));
        if (!r) {
            atomic_fetch_add(&d->probe_errors, 1);
            redisFree(c);
            c = NULL;
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            atomic_fetch_add(&d->probe_errors, 1);
            snprintf(d->probe_last_error, sizeof d->probe_last_error, "%s", r->str);
        }
        atomic_fetch_add(&d->probe_lookups, 1);
        freeReplyObject(r);
        struct timespec ts = { 0, 5000000 };   /* ~200 lookups/s */
        nanosleep(&ts, NULL);
    }
    if (c) redisFree(c);
    return NULL;
}

/* ---- status line -------------------------------------------------------- */

/* Consumer lag (messages) summed over every partition of every topic. */
static int64_t total_lag(demo_t *d)
{
    state_partition_progress_t pp[256];
    size_t n = state_progress(d->st, pp, 256);
    int64_t lag = 0;
    for (size_t g = 0; g < d->n_gens; g++) {
        const char *topic = d->schema->sources[d->gen_source[g]].topic;
        for (int p = 0; p < d->partitions; p++) {
            int64_t lo, hi, next = 0;
            if (rd_kafka_query_watermark_offsets(d->producer, topic, p, &lo, &hi, 500)) continue;
            for (size_t i = 0; i < n && i < 256; i++)
                if (pp[i].partition == p && !strcmp(pp[i].topic, topic)) next = pp[i].next_offset;
            if (hi > next) lag += hi - next;
        }
    }
    return lag;
}

/* Seconds from the newest committed event to now: how stale a lookup is. */
static double freshness_s(demo_t *d)
{
    state_partition_progress_t pp[256];
    size_t n = state_progress(d->st, pp, 256);
    int64_t newest = 0;
    for (size_t i = 0; i < n && i < 256; i++) {
        int64_t delay = 0;
        for (size_t s = 0; s < d->schema->n_sources; s++)
            if (!strcmp(d->schema->sources[s].topic, pp[i].topic))
                delay = d->schema->sources[s].watermark_delay_ms;
        if (pp[i].watermark_ms != INT64_MIN && pp[i].watermark_ms + delay > newest)
            newest = pp[i].watermark_ms + delay;
    }
    return newest ? (double)(sl_now_ms() - newest) / 1000.0 : -1;
}

/* The example key of view v from whichever generator feeds it; 0 or SL_EINVAL. */
static int example_key(demo_t *d, int v, char *key, size_t size)
{
    for (size_t g = 0; g < d->n_gens; g++)
        if (gen_example_key(d->gens[g], v, key, size) == 0) return SL_OK;
    return SL_EINVAL;
}

/* Does every feature of the service come from views of one entity? (RESP's
 * FEATURES takes one entity key; a service spanning several needs gRPC.) */
static bool service_single_entity(const schema_t *schema, const schema_service_t *svc)
{
    for (size_t i = 1; i < svc->n_refs; i++)
        if (schema->views[svc->refs[i].view].entity != schema->views[svc->refs[0].view].entity)
            return false;
    return true;
}

/* The folder holding sluice/v1/feature_service.proto: the source tree's
 * proto/ or the installed share/sluice/proto; NULL when neither is there. */
static const char *proto_dir(void)
{
    static const char *const candidates[] = { "proto", SLUICE_SOURCE_DIR "/proto",
                                              SLUICE_DATA_DIR "/proto" };
    char path[600];
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        snprintf(path, sizeof path, "%s/sluice/v1/feature_service.proto", candidates[i]);
        if (access(path, R_OK) == 0) return candidates[i];
    }
    return NULL;
}

/* Writes the JSON of a GetOnlineFeaturesRequest for the first service (or
 * every feature of the first view when the schema has no service), with one
 * EntityRow giving every key name of every entity involved its example
 * value. Returns false when some key has no example (its view has no
 * generated traffic). Key texts come from the generator: [a-z0-9_-]. */
static bool grpc_request_json(demo_t *d, char *out, size_t size)
{
    const schema_t *sc = d->schema;
    int views[64];
    size_t n_views = 0, off = 0;
    if (sc->n_services) {
        const schema_service_t *svc = &sc->services[0];
        off += (size_t)snprintf(out, size, "{\"feature_service\":\"%s\",\"entities\":[{\"keys\":{",
                                svc->name);
        for (size_t i = 0; i < svc->n_refs && n_views < 64; i++) views[n_views++] = svc->refs[i].view;
    } else {
        off += (size_t)snprintf(out, size,
                                "{\"feature_refs\":{\"refs\":[\"%s:*\"]},\"entities\":[{\"keys\":{",
                                sc->views[0].name);
        views[n_views++] = 0;
    }
    const char *names[32];
    size_t n_names = 0;
    for (size_t i = 0; i < n_views; i++) {
        const schema_entity_t *e = &sc->entities[sc->views[views[i]].entity];
        for (size_t k = 0; k < e->n_keys; k++) {
            bool seen = false;
            for (size_t j = 0; j < n_names; j++) seen |= !strcmp(names[j], e->keys[k]);
            if (seen || n_names == 32) continue;
            char text[96];
            size_t g = 0;
            while (g < d->n_gens && gen_example_key_part(d->gens[g], views[i], k, text, sizeof text)) g++;
            if (g == d->n_gens) return false;
            names[n_names++] = e->keys[k];
            if (off < size)
                off += (size_t)snprintf(out + off, size - off, "%s\"%s\":\"%s\"", n_names > 1 ? "," : "",
                                        e->keys[k], text);
        }
    }
    if (off < size) off += (size_t)snprintf(out + off, size - off, "}}]}");
    return off < size;
}

static void print_try(demo_t *d)
{
    int resp = serve_servers_resp_port(d->servers), grpc = serve_servers_grpc_port(d->servers);
    printf("\nSluice demo is running (schema %s)\n", d->schema_path);
    printf("  Kafka (in-process mock): %s, %d partitions per topic, %.0f events/s\n",
           d->bootstrap, d->partitions, d->rate);
    printf("  state: %s%s\n", d->state_dir,
           d->state_dir_temp ? " (removed at exit; --state-dir DIR keeps it)" : "");
    printf("  RESP:  127.0.0.1:%d    gRPC: 127.0.0.1:%d    metrics: http://127.0.0.1:%d/metrics\n\n",
           resp, grpc, sl_metrics_port(d->metrics));
    printf("Try:\n");
    int shown = 0;
    char key[160];
    for (size_t v = 0; v < d->schema->n_views && shown < 3; v++)
        if (example_key(d, (int)v, key, sizeof key) == 0) {
            printf("  redis-cli -p %d HGETALL '%s:%s'\n", resp, d->schema->views[v].name, key);
            shown++;
        }
    for (size_t s = 0; s < d->schema->n_services; s++) {
        const schema_service_t *svc = &d->schema->services[s];
        if (!service_single_entity(d->schema, svc) || example_key(d, svc->refs[0].view, key, sizeof key))
            continue;
        printf("  redis-cli -p %d FEATURES %s '%s'\n", resp, svc->name, key);
        break;
    }
    printf("  redis-cli -p %d INFO\n", resp);
    printf("  curl -s http://127.0.0.1:%d/metrics | grep sluice_\n", sl_metrics_port(d->metrics));
    char json[2048];
    const char *proto = proto_dir();
    if (proto && grpc_request_json(d, json, sizeof json))
        printf("  grpcurl -plaintext -import-path %s -proto sluice/v1/feature_service.proto \\\n"
               "    -d '%s' \\\n    127.0.0.1:%d sluice.v1.FeatureService/GetOnlineFeatures\n",
               proto, json, grpc);
    printf("  gRPC from Python: docs/serving.md (sluice.v1.FeatureService on 127.0.0.1:%d)\n\n", grpc);
    fflush(stdout);
}

/* ---- setup and teardown -------------------------------------------------- */

static int setup_kafka(demo_t *d, char *err, size_t size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    if (!(d->mock_host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, size))) return SL_EKAFKA;
    if (!(d->mock = rd_kafka_mock_cluster_new(d->mock_host, 1))) {
        snprintf(err, size, "cannot start librdkafka's mock cluster");
        return SL_EKAFKA;
    }
    snprintf(d->bootstrap, sizeof d->bootstrap, "%s", rd_kafka_mock_cluster_bootstraps(d->mock));
    for (size_t s = 0; s < d->schema->n_sources; s++) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(d->mock, d->schema->sources[s].topic,
                                                           d->partitions, 1);
        if (e) {
            snprintf(err, size, "mock topic %s: %s", d->schema->sources[s].topic, rd_kafka_err2str(e));
            return SL_EKAFKA;
        }
    }
    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", d->bootstrap, err, size) ||
        rd_kafka_conf_set(conf, "linger.ms", "5", err, size) ||
        rd_kafka_conf_set(conf, "partitioner", "murmur2_random", err, size) ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", err, size)) {
        rd_kafka_conf_destroy(conf);
        return SL_EKAFKA;
    }
    if (!(d->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, size))) return SL_EKAFKA;
    return SL_OK;
}

static bool source_used(const schema_t *schema, size_t s)
{
    for (size_t v = 0; v < schema->n_views; v++)
        if (schema->views[v].source == (int)s) return true;
    return false;
}

static int setup_generators(demo_t *d, char *err, size_t size)
{
    size_t n_used = 0;
    for (size_t s = 0; s < d->schema->n_sources; s++) n_used += source_used(d->schema, s);
    for (size_t s = 0; s < d->schema->n_sources && d->n_gens < DEMO_MAX_SOURCES; s++) {
        if (!source_used(d->schema, s)) continue;
        gen_options_t o;
        gen_options_defaults(&o);
        o.seed = 1 + s;
        o.start_ms = sl_now_ms();
        /* the generator thread round-robins over sources: each gets rate / n_used */
        o.spacing_us = (int64_t)(1e6 * (double)n_used / d->rate);
        if (o.spacing_us < 1) o.spacing_us = 1;
        int rc = gen_new(d->schema, (int)s, &o, &d->gens[d->n_gens], err, size);
        if (rc) return rc;
        d->gen_source[d->n_gens++] = (int)s;
    }
    if (!d->n_gens) {
        snprintf(err, size, "no source of the schema feeds a view: nothing to generate");
        return SL_EINVAL;
    }
    /* Probe keys: the most popular entity of each view, then a few more. */
    for (size_t v = 0; v < d->schema->n_views && d->n_probe_keys < DEMO_PROBE_KEYS; v++)
        for (size_t g = 0; g < d->n_gens; g++) {
            char key[128];
            if (gen_example_key(d->gens[g], (int)v, key, sizeof key) == 0) {
                snprintf(d->probe_keys[d->n_probe_keys++], sizeof d->probe_keys[0], "%s:%s",
                         d->schema->views[v].name, key);
                break;
            }
        }
    return SL_OK;
}

/* A port that is free on 127.0.0.1 now: the demo's "0 = any free port" for
 * the RESP and gRPC servers, whose config treats port 0 as "disabled".
 * Another process could take it before the server binds: the servers' start
 * is then tried again on newly picked ports (see demo_run). Returns the
 * port, or -1 with errno set. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

static int parse_port(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v > 65535) return -1;
    *out = (int)v;
    return 0;
}

int cmd_demo(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "schema", required_argument, 0, 's' }, { "rate", required_argument, 0, 'r' },
        { "duration", required_argument, 0, 'd' }, { "resp-port", required_argument, 0, 'R' },
        { "grpc-port", required_argument, 0, 'G' }, { "metrics-port", required_argument, 0, 'M' },
        { "partitions", required_argument, 0, 'p' }, { "state-dir", required_argument, 0, 'S' },
        { "log-format", required_argument, 0, 'F' }, { "log-level", required_argument, 0, 'L' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
    };
    demo_t *d = calloc(1, sizeof *d);
    if (!d) return 1;
    d->resp_port = 6380;
    d->grpc_port = 50051;
    d->metrics_port = 9464;
    d->partitions = 4;
    d->rate = 2000;
    d->schema_path = NULL;
    char err[2048] = "";
    char *end;
    int c, li = 0, status = 1;   /* li: the long option just parsed */
    const char *log_format = "text", *log_level = "info";
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, &li)) != -1) {
        switch (c) {
        case 's': d->schema_path = optarg; break;
        case 'r': d->rate = strtod(optarg, &end); if (*end || d->rate <= 0 || d->rate > 1e7) goto bad; break;
        case 'd': d->duration_s = strtoll(optarg, &end, 10); if (*end || d->duration_s < 0) goto bad; break;
        case 'R': if (parse_port(optarg, &d->resp_port)) goto bad; break;
        case 'G': if (parse_port(optarg, &d->grpc_port)) goto bad; break;
        case 'M': if (parse_port(optarg, &d->metrics_port)) goto bad; break;
        case 'p': d->partitions = atoi(optarg); if (d->partitions < 1 || d->partitions > 256) goto bad; break;
        case 'S': snprintf(d->state_dir, sizeof d->state_dir, "%s", optarg); break;
        case 'F': log_format = optarg; break;
        case 'L': log_level = optarg; break;
        case 'h': usage(stdout); free(d); return 0;
        default: usage(stderr); free(d); return 2;
        }
    }
    if (sl_log_configure(log_level, log_format)) {
        fprintf(stderr, "sluice demo: bad --log-level '%s' or --log-format '%s' "
                        "(debug|info|warn|error, text|json)\n", log_level, log_format);
        free(d);
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "sluice demo: unexpected argument '%s'\n", argv[optind]);
        free(d);
        return 2;
    }
    if (!d->schema_path) d->schema_path = default_schema();
    const bool any_resp = d->resp_port == 0, any_grpc = d->grpc_port == 0;
    if ((any_resp && (d->resp_port = free_port()) < 0) ||
        (any_grpc && (d->grpc_port = free_port()) < 0)) {
        perror("sluice demo: finding a free port");
        free(d);
        return 1;
    }
    if (!d->state_dir[0]) {
        snprintf(d->state_dir, sizeof d->state_dir, "/tmp/sluice-demo-XXXXXX");
        if (!mkdtemp(d->state_dir)) {
            perror("sluice demo: mkdtemp");
            free(d);
            return 1;
        }
        rmdir(d->state_dir);   /* state_open creates it with mode 0700 */
        d->state_dir_temp = true;
    }
    sl_hist_init(&d->probe_hist);
    sl_config_defaults(&d->cfg);

    if (schema_load(&d->schema_path, 1, &d->schema, err, sizeof err)) goto fail;
    if (setup_kafka(d, err, sizeof err)) goto fail;
    if (setup_generators(d, err, sizeof err)) goto fail;

    /* The node's configuration: the config table's defaults plus the demo's choices. */
    char set[600];
    const char *sets[] = { "brokers", d->bootstrap, "state_dir", d->state_dir,
                           "commit_interval", "200ms", "group_id", "sluice-demo" };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i += 2) {
        snprintf(set, sizeof set, "%s=%s", sets[i], sets[i + 1]);
        if (sl_config_set(&d->cfg, set, err, sizeof err)) goto fail;
    }
    d->cfg.resp_port = d->resp_port;
    d->cfg.grpc_port = d->grpc_port;
    d->cfg.metrics_port = d->metrics_port;

    state_options_t so = { .create_if_missing = true, .read_only = false, .block_cache_bytes = 0 };
    if (state_open(d->state_dir, &so, &d->st, err, sizeof err)) goto fail;
    /* The in-process Kafka starts empty on every run: offsets stored by an
     * earlier run point past its end (librdkafka would reset them to 0 and
     * the new events would land on the old state). */
    if (state_progress(d->st, NULL, 0) > 0) {
        snprintf(err, sizeof err, "state dir %s holds the state of an earlier run, whose in-process "
                 "Kafka is gone: remove it or give another --state-dir", d->state_dir);
        goto fail;
    }
    ingest_options_t io = { .exit_at_eof = false, .progress_log_ms = 0 };
    if (ingest_worker_new(&d->cfg, d->schema, d->st, &io, &d->worker, err, sizeof err)) goto fail;
    if (serve_state_backend_new(d->schema, d->st, &d->backend, err, sizeof err)) goto fail;
    for (int attempt = 0;; attempt++) {
        if (serve_servers_start(&d->cfg, serve_state_backend(d->backend), &d->servers, err, sizeof err) == 0)
            break;
        /* a picked port taken meanwhile: pick again (a port the user gave is not changed) */
        if (!(any_resp || any_grpc) || attempt == 4) goto fail;
        if ((any_resp && (d->cfg.resp_port = d->resp_port = free_port()) < 0) ||
            (any_grpc && (d->cfg.grpc_port = d->grpc_port = free_port()) < 0))
            goto fail;
    }
    d->metrics = sl_metrics_new();
    if (!d->metrics) goto fail;
    if (node_metrics_attach(d->metrics, d->schema, d->st, ingest_worker_stats(d->worker),
                            d->servers, &d->probe_hist, &d->node_metrics))
        goto fail;
    if (sl_metrics_listen(d->metrics, d->cfg.metrics_bind, d->metrics_port, err, sizeof err)) goto fail;

    cmd_on_stop_signals(on_signal);
    signal(SIGPIPE, SIG_IGN);

    pthread_create(&d->ingest_thr, NULL, ingest_main, d);
    pthread_create(&d->gen_thr, NULL, gen_main, d);
    pthread_create(&d->probe_thr, NULL, probe_main, d);
    print_try(d);

    const ingest_stats_t *is = ingest_worker_stats(d->worker);
    int64_t start = sl_mono_ns(), last = start;
    uint64_t last_msgs = 0, last_lookups = 0;
    while (!stop_requested) {
        struct timespec ts = { 0, 100000000 };
        nanosleep(&ts, NULL);
        int64_t now = sl_mono_ns();
        if (d->duration_s && now - start >= d->duration_s * 1000000000LL) break;
        if (now - last < 3000000000LL) continue;
        double dt = (double)(now - last) / 1e9;
        uint64_t msgs = atomic_load(&is->messages), lookups = atomic_load(&d->probe_lookups);
        uint64_t bad = 0;
        for (int r = 1; r < INGEST_BAD__COUNT; r++) bad += atomic_load(&is->bad[r]);
        char fresh[32];
        double f = freshness_s(d);
        if (f < 0) snprintf(fresh, sizeof fresh, "    -");   /* nothing committed yet */
        else snprintf(fresh, sizeof fresh, "%5.2fs", f);
        printf("[%4llds] events %7.0f/s  total %-9llu bad %-6llu late %-6llu lag %-6lld "
               "freshness %s  lookups %5.0f/s p99 %.3fms  commits %llu\n",
               (long long)((now - start) / 1000000000LL), (double)(msgs - last_msgs) / dt,
               (unsigned long long)msgs, (unsigned long long)bad,
               (unsigned long long)atomic_load(&is->late), (long long)total_lag(d),
               fresh, (double)(lookups - last_lookups) / dt,
               (double)sl_hist_quantile(&d->probe_hist, 0.99) / 1e6,
               (unsigned long long)atomic_load(&is->commits));
        fflush(stdout);
        last = now;
        last_msgs = msgs;
        last_lookups = lookups;
    }

    printf("\nstopping: generator, ingest (final commit), servers ...\n");
    atomic_store(&d->stop_threads, 1);
    pthread_join(d->gen_thr, NULL);
    pthread_join(d->probe_thr, NULL);
    ingest_worker_stop(d->worker);
    pthread_join(d->ingest_thr, NULL);
    if (d->ingest_rc) fprintf(stderr, "sluice demo: ingest: %s\n", d->ingest_err);
    printf("produced %llu events, ingested %llu messages, %llu probe lookups (%llu errors%s%s)\n",
           (unsigned long long)atomic_load(&d->produced),
           (unsigned long long)atomic_load(&is->messages),
           (unsigned long long)atomic_load(&d->probe_lookups),
           (unsigned long long)atomic_load(&d->probe_errors),
           d->probe_last_error[0] ? ", last: " : "", d->probe_last_error);
    status = d->ingest_rc ? 1 : 0;
    goto cleanup;

bad:
    fprintf(stderr, "sluice demo: bad value '%s' for --%s (see --help)\n", optarg, longopts[li].name);
    free(d);
    return 2;
fail:
    fprintf(stderr, "sluice demo: %s\n", err[0] ? err : "out of memory");
cleanup:
    if (d->metrics) sl_metrics_free(d->metrics);
    node_metrics_free(d->node_metrics);
    if (d->servers) serve_servers_stop(d->servers);
    if (d->backend) serve_state_backend_free(d->backend);
    if (d->worker) ingest_worker_free(d->worker);
    if (d->st) state_close(d->st);
    for (size_t g = 0; g < d->n_gens; g++) gen_free(d->gens[g]);
    if (d->producer) rd_kafka_destroy(d->producer);
    if (d->mock) rd_kafka_mock_cluster_destroy(d->mock);
    if (d->mock_host) rd_kafka_destroy(d->mock_host);
    if (d->state_dir_temp) nftw(d->state_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    schema_free(d->schema);
    sl_config_free(&d->cfg);
    free(d);
    return status;
}
