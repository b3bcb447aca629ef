/*
 * cmd_generate.c — `sluice generate`: produce realistic, reproducible events
 * for one source of a schema to its Kafka topic (or to a JSON-lines file),
 * optionally paced to a rate, with a share of out-of-order, late and bad
 * events. Prints progress once a second and a per-kind tally at the end, so
 * a test or an operator knows exactly what was sent.
 */
#include "gen.h"
#include "kafka_log.h"
#include "schema.h"
#include "sl_buf.h"
#include "sl_err.h"
#include "sl_time.h"

#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sluice generate --schema FILE --source NAME (--brokers HOST:PORT | --out FILE)\n"
        "                       --events N [options]\n\n"
        "  --schema FILE        schema file (repeatable)\n"
        "  --source NAME        source whose topic receives the events\n"
        "  --brokers HOST:PORT  Kafka bootstrap servers\n"
        "  --out FILE           write JSON lines instead ('-' = stdout); tombstones are skipped\n"
        "  --events N           how many events (required)\n"
        "  --rate R             pace to R events/s of wall time (default: as fast as possible)\n"
        "  --seed S             PRNG seed (default 1): same seed and --start-time, same bytes;\n"
        "                       without --start-time, the same stream shifted to end now\n"
        "  --start-time MS      event time of the first event, epoch ms\n"
        "                       (default: now - events * spacing, so the stream ends now)\n"
        "  --spacing-us US      event-time step between events (default 1e6/rate, else 10000)\n"
        "  --entities N         key population (default 10000)\n"
        "  --skew S             Zipf exponent of key popularity (default 1.1, 0 = uniform)\n"
        "  --ooo-share F        share out of order within the watermark delay (default 0.05)\n"
        "  --late-share F       share beyond the allowed lateness (default 0.005)\n"
        "  --bad-share F        share malformed / missing key / mistyped / bad time / tombstone\n"
        "                       (default 0.005)\n"
        "  --partitions N       create the topic with N partitions if it does not exist\n"
        "  --quiet              no progress lines\n");
}

static int create_topic(rd_kafka_t *rk, const char *topic, int partitions, char *err, size_t size)
{
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, -1, err, size);
    if (!nt) return -1;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    int rc = -1;
    if (!ev) {
        snprintf(err, size, "timed out creating topic %s", topic);
    } else {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t n;
        const rd_kafka_topic_result_t **tr = res ? rd_kafka_CreateTopics_result_topics(res, &n) : NULL;
        if (tr && n == 1) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[0]);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) rc = 0;
            else snprintf(err, size, "creating topic %s: %s", topic, rd_kafka_err2str(e));
        } else {
            snprintf(err, size, "creating topic %s: %s", topic,
                     rd_kafka_event_error_string(ev) ? rd_kafka_event_error_string(ev) : "no result");
        }
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return rc;
}

int cmd_generate(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "schema", required_argument, 0, 'S' }, { "source", required_argument, 0, 's' },
        { "brokers", required_argument, 0, 'b' }, { "out", required_argument, 0, 'o' },
        { "events", required_argument, 0, 'n' }, { "rate", required_argument, 0, 'r' },
        { "seed", required_argument, 0, 'x' }, { "start-time", required_argument, 0, 't' },
        { "spacing-us", required_argument, 0, 'u' }, { "entities", required_argument, 0, 'e' },
        { "skew", required_argument, 0, 'k' }, { "ooo-share", required_argument, 0, 'O' },
        { "late-share", required_argument, 0, 'L' }, { "bad-share", required_argument, 0, 'B' },
        { "partitions", required_argument, 0, 'p' }, { "quiet", no_argument, 0, 'q' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
    };
    const char *schemas[16];
    size_t n_schemas = 0;
    const char *source = NULL, *brokers = NULL, *out_path = NULL;
    long long events = -1, start_time = -1, spacing_us = 0;
    double rate = 0;
    int partitions = 0, quiet = 0;
    gen_options_t go;
    gen_options_defaults(&go);
    char *end;
    int c, li = 0;   /* li: the long option just parsed (all take --name) */
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, &li)) != -1) {
        switch (c) {
        case 'S':
            if (n_schemas == 16) { fprintf(stderr, "sluice generate: too many --schema\n"); return 2; }
            schemas[n_schemas++] = optarg;
            break;
        case 's': source = optarg; break;
        case 'b': brokers = optarg; break;
        case 'o': out_path = optarg; break;
        case 'n': events = strtoll(optarg, &end, 10); if (*end || events < 0) goto bad; break;
        case 'r': rate = strtod(optarg, &end); if (*end || rate < 0) goto bad; break;
        case 'x': go.seed = strtoull(optarg, &end, 10); if (*end) goto bad; break;
        case 't': start_time = strtoll(optarg, &end, 10); if (*end) goto bad; break;
        case 'u': spacing_us = strtoll(optarg, &end, 10); if (*end || spacing_us <= 0) goto bad; break;
        case 'e': go.entities = strtoll(optarg, &end, 10); if (*end || go.entities <= 0) goto bad; break;
        case 'k': go.zipf_s = strtod(optarg, &end); if (*end || go.zipf_s < 0) goto bad; break;
        case 'O': go.ooo_share = strtod(optarg, &end); if (*end || !(go.ooo_share >= 0 && go.ooo_share <= 1)) goto bad; break;
        case 'L': go.late_share = strtod(optarg, &end); if (*end || !(go.late_share >= 0 && go.late_share <= 1)) goto bad; break;
        case 'B': go.bad_share = strtod(optarg, &end); if (*end || !(go.bad_share >= 0 && go.bad_share <= 1)) goto bad; break;
        case 'p': partitions = atoi(optarg); if (partitions <= 0) goto bad; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!n_schemas || !source || events < 0 || (!brokers == !out_path)) {
        fprintf(stderr, "sluice generate: --schema, --source, --events and one of --brokers/--out "
                        "are required\n\n");
        usage(stderr);
        return 2;
    }

    schema_t *schema;
    char err[1024];
    if (schema_load(schemas, n_schemas, &schema, err, sizeof err)) {
        fprintf(stderr, "sluice generate: %s\n", err);
        return 1;
    }
    int si = schema_source_index(schema, source);
    if (si < 0) {
        fprintf(stderr, "sluice generate: no source '%s' in the schema\n", source);
        schema_free(schema);
        return 1;
    }
    go.spacing_us = spacing_us ? spacing_us : rate > 0 ? (long long)(1e6 / rate) : 10000;
    if (go.spacing_us <= 0) go.spacing_us = 1;
    go.start_ms = start_time >= 0 ? start_time : sl_now_ms() - (events * go.spacing_us) / 1000;
    if (rate > 0 && start_time < 0) go.start_ms = sl_now_ms();   /* live: event time ~ wall time */
    gen_t *g;
    if (gen_new(schema, si, &go, &g, err, sizeof err)) {
        fprintf(stderr, "sluice generate: %s\n", err);
        schema_free(schema);
        return 1;
    }
    const char *topic = schema->sources[si].topic;

    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    FILE *out = NULL;
    int status = 1;
    if (brokers) {
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        ingest_kafka_log_setup(conf);
        if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) ||
            rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err) ||
            rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err) ||
            rd_kafka_conf_set(conf, "partitioner", "murmur2_random", err, sizeof err) ||
            rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", err, sizeof err)) {
            fprintf(stderr, "sluice generate: %s\n", err);
            rd_kafka_conf_destroy(conf);
            goto done;
        }
        if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err))) {
            fprintf(stderr, "sluice generate: %s\n", err);
            goto done;
        }
        if (partitions > 0 && create_topic(rk, topic, partitions, err, sizeof err)) {
            fprintf(stderr, "sluice generate: %s\n", err);
            goto done;
        }
        rkt = rd_kafka_topic_new(rk, topic, NULL);
    } else {
        out = strcmp(out_path, "-") ? fopen(out_path, "w") : stdout;
        if (!out) {
            perror(out_path);
            goto done;
        }
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    sl_buf_t payload = SL_BUF_INIT, key = SL_BUF_INIT;
    uint64_t tally[GEN__KIND_COUNT] = { 0 };
    int64_t t0 = sl_mono_ns(), last_report = t0;
    long long produced = 0;
    for (long long i = 0; i < events && !stop_requested; i++) {
        bool is_null;
        int kind = gen_next(g, &payload, &key, &is_null);
        if (kind < 0) {
            fprintf(stderr, "sluice generate: out of memory\n");
            break;
        }
        tally[kind]++;
        if (rk) {
            while (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                                    is_null ? NULL : payload.data, is_null ? 0 : payload.len,
                                    key.data, key.len, NULL) == -1) {
                if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                    fprintf(stderr, "sluice generate: produce: %s\n",
                            rd_kafka_err2str(rd_kafka_last_error()));
                    goto flush;
                }
                rd_kafka_poll(rk, 50);
            }
            rd_kafka_poll(rk, 0);
        } else if (!is_null) {
            fwrite(payload.data, 1, payload.len, out);
            fputc('\n', out);
        }
        produced++;
        if (rate > 0) {
            int64_t due = t0 + (int64_t)((double)produced * 1e9 / rate);
            int64_t now = sl_mono_ns();
            if (due > now) {
                struct timespec ts = { (time_t)((due - now) / 1000000000), (long)((due - now) % 1000000000) };
                nanosleep(&ts, NULL);
            }
        }
        int64_t now = sl_mono_ns();
        if (!quiet && now - last_report >= 1000000000LL) {
            fprintf(stderr, "generate: %lld/%lld events (%.0f/s)\n", produced, events,
                    (double)produced * 1e9 / (double)(now - t0));
            last_report = now;
        }
    }
flush:
    if (rk) {
        rd_kafka_resp_err_t fe = rd_kafka_flush(rk, 60000);
        if (fe) fprintf(stderr, "sluice generate: flush: %s\n", rd_kafka_err2str(fe));
        else status = 0;
    } else {
        status = fflush(out) ? 1 : 0;
    }
    double secs = (double)(sl_mono_ns() - t0) / 1e9;
    fprintf(stderr, "generate: %lld events to %s in %.2fs (%.0f/s), seed %llu\n", produced,
            rk ? topic : out_path, secs, secs > 0 ? (double)produced / secs : 0.0,
            (unsigned long long)go.seed);
    fprintf(stderr, "generate: by kind:");
    for (int k = 0; k < GEN__KIND_COUNT; k++)
        fprintf(stderr, " %s=%llu", gen_kind_name((gen_kind_t)k), (unsigned long long)tally[k]);
    fprintf(stderr, "\n");
    sl_buf_free(&payload);
    sl_buf_free(&key);
done:
    if (out && out != stdout) fclose(out);
    if (rkt) rd_kafka_topic_destroy(rkt);
    if (rk) rd_kafka_destroy(rk);
    gen_free(g);
    schema_free(schema);
    return status;
bad:
    fprintf(stderr, "sluice generate: bad value '%s' for --%s (see --help)\n", optarg,
            longopts[li].name);
    return 2;
}
