/*
 * bench_ingest.c — ingest throughput from the broker to committed state,
 * beside the raw librdkafka consume rate of the same topic (the ceiling),
 * measured in one run against a real broker.
 *
 *   bench_ingest BOOTSTRAP [EVENTS] [PARTITIONS] [SLUICE_BIN]
 *
 * Phases (each on a fresh consumer group and, for ingest, a fresh state dir):
 *   produce  EVENTS JSON events (default 6M; 100k users, 10k merchants) — not timed
 *   raw      consumer_poll loop with the worker's consumer settings, no
 *            processing: events/s wall and per CPU-second
 *   decode   the same loop decoding every message with the worker's JSON
 *            decoder (ingest_decode) and nothing else: the ceiling of any
 *            ingest that decodes JSON with it on one thread, and the
 *            decoder's CPU per event (against raw)
 *   ingest   the worker (one thread) on a view with 5 features — count, sum,
 *            mean, max over 1h sliding / 5m hop, approx_distinct over 24h
 *            sliding / 1h hop — with a 100 ms and a 10 s commit interval:
 *            events/s wall and per CPU-second (all threads of the process,
 *            librdkafka's included, from first message to the final
 *            commit: closing the consumer and freeing the cache after it
 *            are teardown and not counted),
 *            commit latency mean / max
 *   recovery (if SLUICE_BIN is given) `sluice ingest` caught up, killed with
 *            SIGKILL, restarted with --exit-at-eof: seconds to caught up,
 *            versus a replay of the whole topic from offset 0.
 * "per core" = events / (user+sys CPU seconds of this process), so a
 * figure above the wall rate means work overlapped on the second core.
 *
 * For profiling and quick iterations (not for reported figures):
 *   SLUICE_BENCH_TOPIC=NAME  reuse a topic produced by an earlier run (it must
 *                            hold exactly EVENTS events) instead of producing
 *   SLUICE_BENCH_PHASES=LIST comma list out of raw,decode,100ms,10s (default: all)
 */
#define _GNU_SOURCE
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ingest.h"
#include "schema.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_time.h"
#include "state.h"

static const char *SCHEMA_FMT =
    "version: 1\n"
    "entities: [{name: user, keys: [user], key_type: string}]\n"
    "sources:\n"
    "  - name: tx\n"
    "    topic: %s\n"
    "    format: json\n"
    "    fields: {user: string, merchant: string, amount: double, ts: int}\n"
    "    event_time: {field: ts, format: epoch_ms}\n"
    "    watermark_delay: 5s\n"
    "    allowed_lateness: 1m\n"
    "feature_views:\n"
    "  - name: user_tx\n"
    "    entity: user\n"
    "    source: tx\n"
    "    features:\n"
    "      - {name: n_1h, aggregate: count, window: {sliding: 1h, hop: 5m}}\n"
    "      - {name: sum_1h, aggregate: sum, field: amount, window: {sliding: 1h, hop: 5m}}\n"
    "      - {name: mean_1h, aggregate: mean, field: amount, window: {sliding: 1h, hop: 5m}}\n"
    "      - {name: max_1h, aggregate: max, field: amount, window: {sliding: 1h, hop: 5m}}\n"
    "      - {name: merchants_24h, aggregate: approx_distinct, field: merchant, window: {sliding: 24h, hop: 1h}}\n";

static double now_s(void) { return (double)sl_mono_ns() / 1e9; }

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_ingest: %s: %s\n", what, err);
    exit(1);
}

static void uniq(char *out, size_t n, const char *prefix)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, n, "%s-%d-%lld", prefix, (int)getpid(), (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

static void create_topic(const char *bootstrap, const char *topic, int partitions)
{
    char e[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof e);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
    if (!rk) die("admin client", e);
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, e, sizeof e);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    if (!ev) die("create topic", "timeout");
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t n;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
    if (n != 1 || rd_kafka_topic_result_error(tr[0])) die("create topic", rd_kafka_topic_result_error_string(tr[0]));
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_destroy(rk);
    sleep(1);   /* metadata propagation */
}

static void produce(const char *bootstrap, const char *topic, long events)
{
    char e[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof e);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", e, sizeof e);
    rd_kafka_conf_set(conf, "linger.ms", "50", e, sizeof e);
    rd_kafka_conf_set(conf, "batch.size", "1000000", e, sizeof e);
    rd_kafka_conf_set(conf, "compression.codec", "lz4", e, sizeof e);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
    if (!rk) die("producer", e);
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    int64_t ts = 1700000000000LL;
    char buf[256], key[32];
    for (long i = 0; i < events; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int user = (int)(x % 100000);
        int merchant = (int)((x >> 20) % 10000);
        double amount = (double)((x >> 40) % 10000) / 100.0;
        ts += 2;
        int64_t t = ts - (int64_t)((x >> 8) % 3000);
        int n = snprintf(buf, sizeof buf, "{\"user\":\"u%d\",\"merchant\":\"m%d\",\"amount\":%.2f,\"ts\":%lld}",
                         user, merchant, amount, (long long)t);
        int kn = snprintf(key, sizeof key, "u%d", user);
        while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, (size_t)kn),
                                 RD_KAFKA_V_VALUE(buf, (size_t)n), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if ((i & 4095) == 0) rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 300000);
    if (rd_kafka_outq_len(rk)) die("produce", "undelivered messages");
    rd_kafka_destroy(rk);
}

/* The raw ceiling: same consumer settings as the worker, no processing.
 * With a decoder, each message is also decoded as the worker decodes it
 * (and nothing else): the ceiling once the JSON is paid for. */
static void raw_consume(const char *bootstrap, const char *topic, long events, ingest_decoder_t *dec,
                        double *rate, double *per_cpu)
{
    char e[512], group[128];
    uniq(group, sizeof group, "bench-raw");
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof e);
    rd_kafka_conf_set(conf, "group.id", group, e, sizeof e);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof e);
    rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", e, sizeof e);
    rd_kafka_conf_set(conf, "isolation.level", "read_committed", e, sizeof e);
    rd_kafka_conf_set(conf, "queued.min.messages", "1000000", e, sizeof e);   /* as the worker */
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", e, sizeof e);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    if (!rk) die("consumer", e);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tl, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, tl);
    rd_kafka_topic_partition_list_destroy(tl);
    long n = 0, bad = 0;
    double t0 = 0, c0 = 0;
    size_t bytes = 0;
    while (n < events) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
        if (!m) continue;
        if (!m->err) {
            if (n++ == 0) { t0 = now_s(); c0 = cpu_s(); }
            bytes += m->len;
            if (dec) {
                ingest_record_t rec;
                if (ingest_decode(dec, m->payload, m->len, &rec, NULL, 0) != INGEST_OK) bad++;
            }
        }
        rd_kafka_message_destroy(m);
    }
    double dt = now_s() - t0, dc = cpu_s() - c0;
    *rate = (double)n / dt;
    *per_cpu = (double)n / dc;
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    (void)bytes;
    if (bad) die("decode phase", "some events did not decode");
}

typedef struct run_arg {
    ingest_worker_t *w;
    int rc;
    char err[512];
    double thread_cpu_s;      /* CPU time of the ingest thread itself */
    atomic_bool done;
} run_arg_t;

static void *run_thread(void *p)
{
    run_arg_t *a = p;
    a->rc = ingest_worker_run(a->w, a->err, sizeof a->err);
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    a->thread_cpu_s = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    atomic_store(&a->done, true);
    return NULL;
}

/* Size of the committed entity states: what each entity put writes. */
typedef struct size_sum { uint64_t n, bytes; } size_sum_t;

static int add_size(void *arg, int32_t partition, const void *key, size_t klen, const void *val, size_t vlen)
{
    size_sum_t *sz = arg;
    (void)partition, (void)key, (void)val;
    sz->n++;
    sz->bytes += klen + vlen;
    return 0;
}

static void ingest_run(const char *bootstrap, const char *topic, const char *dir, long events,
                       const char *interval, double *rate, double *per_cpu, double *cores, double *thread_us,
                       double *commit_mean_ms, double *commit_max_ms, uint64_t *commits,
                       double *written_per_event, double *value_bytes, double *commit_cpu_us_per_put,
                       double *build_us_per_put)
{
    char err[1024], set[1024], group[128], state_dir[512];
    uniq(group, sizeof group, "bench-ingest");
    snprintf(state_dir, sizeof state_dir, "%s/state-%s", dir, interval);
    sl_config_t cfg;
    sl_config_defaults(&cfg);
#define SET(...) do { snprintf(set, sizeof set, __VA_ARGS__); \
        if (sl_config_set(&cfg, set, err, sizeof err)) die(set, err); } while (0)
    SET("brokers=%s", bootstrap);
    SET("group_id=%s", group);
    SET("state_dir=%s", state_dir);
    SET("commit_interval=%s", interval);
    SET("log_level=warn");
#undef SET
    char yaml[4096];
    snprintf(yaml, sizeof yaml, SCHEMA_FMT, topic);
    schema_t *schema;
    if (schema_load_string("bench.yaml", yaml, strlen(yaml), &schema, err, sizeof err)) die("schema", err);
    state_store_t *st;
    state_options_t so = { .create_if_missing = true };
    if (state_open(state_dir, &so, &st, err, sizeof err)) die("state", err);
    ingest_options_t opts = { .exit_at_eof = true };
    run_arg_t a = { 0 };
    if (ingest_worker_new(&cfg, schema, st, &opts, &a.w, err, sizeof err)) die("worker", err);
    const ingest_stats_t *s = ingest_worker_stats(a.w);
    pthread_t th;
    pthread_create(&th, NULL, run_thread, &a);
    while (atomic_load(&s->messages) == 0) usleep(200);
    double t0 = now_s(), c0 = cpu_s();
    /* The span ends at the final commit: closing the consumer and freeing
     * the cache afterwards are teardown, not ingest. */
    while (!atomic_load(&s->final_committed) && !atomic_load(&a.done)) usleep(500);
    double dt = now_s() - t0, dc = cpu_s() - c0;
    pthread_join(th, NULL);
    if (a.rc) die("ingest run", a.err);
    a.thread_cpu_s = (double)atomic_load(&s->final_cpu_us) / 1e6;
    uint64_t n = atomic_load(&s->messages);
    if ((long)n != events) fprintf(stderr, "warning: ingested %llu of %ld\n", (unsigned long long)n, events);
    *rate = (double)n / dt;
    *per_cpu = (double)n / dc;
    *cores = dc / dt;
    *thread_us = n ? a.thread_cpu_s * 1e6 / (double)n : 0;
    *commits = atomic_load(&s->commits);
    *commit_mean_ms = *commits ? (double)atomic_load(&s->commit_us_sum) / (double)*commits / 1000.0 : 0;
    *commit_max_ms = (double)atomic_load(&s->commit_us_max) / 1000.0;
    uint64_t puts = atomic_load(&s->committed_entities);
    *written_per_event = n ? (double)puts / (double)n : 0;
    *commit_cpu_us_per_put = puts ? (double)atomic_load(&s->commit_cpu_us) / (double)puts : 0;
    *build_us_per_put = puts ? (double)atomic_load(&s->commit_build_us) / (double)puts : 0;
    size_sum_t sz = { 0, 0 };
    state_iterate(st, "user_tx", 0, -1, add_size, &sz);
    *value_bytes = sz.n ? (double)sz.bytes / (double)sz.n : 0;
    ingest_worker_free(a.w);
    state_close(st);
    schema_free(schema);
    sl_config_free(&cfg);
}

/* ---- recovery: sluice ingest as a child --------------------------------- */

static pid_t spawn(const char *bin, const char *config, const char *log, bool exit_at_eof)
{
    fflush(NULL);   /* the child must not inherit unflushed output */
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(log, "a", stderr) || !freopen(log, "a", stdout)) _exit(127);
        char *argv[] = { (char *)bin, (char *)"ingest", (char *)"-c", (char *)config,
                         exit_at_eof ? (char *)"--exit-at-eof" : NULL, NULL };
        execv(bin, argv);
        _exit(127);
    }
    return pid;
}

/* Sum of the group's committed Kafka offsets (the worker commits them after
 * each state commit, for lag monitoring). */
static long group_committed(const char *bootstrap, const char *group, const char *topic, int partitions)
{
    char e[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof e);
    rd_kafka_conf_set(conf, "group.id", group, e, sizeof e);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    if (!rk) die("consumer", e);
    rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++) rd_kafka_topic_partition_list_add(tl, topic, p);
    long sum = 0;
    if (rd_kafka_committed(rk, tl, 10000) == 0)
        for (int p = 0; p < partitions; p++)
            if (tl->elems[p].offset > 0) sum += tl->elems[p].offset;
    rd_kafka_topic_partition_list_destroy(tl);
    rd_kafka_destroy(rk);
    return sum;
}

static double timed_child(const char *bin, const char *config, const char *log)
{
    double t0 = now_s();
    pid_t pid = spawn(bin, config, log, true);
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("sluice ingest", log);
    return now_s() - t0;
}

static void write_config(const char *path, const char *bootstrap, const char *group, const char *state_dir,
                         const char *schema_path)
{
    FILE *f = fopen(path, "w");
    if (!f) die("config", path);
    fprintf(f, "schemas: [%s]\nbrokers: \"%s\"\ngroup_id: %s\nstate_dir: %s\ncommit_interval: 1s\n"
               "log_level: warn\nmetrics_port: 0\nkafka:\n  group.instance.id: bench-worker\n  session.timeout.ms: \"6000\"\n",
            schema_path, bootstrap, group, state_dir);
    fclose(f);
}

static void recovery(const char *bin, const char *bootstrap, const char *topic, int partitions,
                     const char *dir, long events)
{
    char schema_path[512], cfg1[512], cfg2[512], log[512], sd1[512], sd2[512], g1[128], g2[128];
    snprintf(schema_path, sizeof schema_path, "%s/schema.yaml", dir);
    snprintf(log, sizeof log, "%s/sluice.log", dir);
    FILE *f = fopen(schema_path, "w");
    fprintf(f, SCHEMA_FMT, topic);
    fclose(f);
    uniq(g1, sizeof g1, "bench-kill");
    uniq(g2, sizeof g2, "bench-replay");
    snprintf(sd1, sizeof sd1, "%s/state-kill", dir);
    snprintf(sd2, sizeof sd2, "%s/state-replay", dir);
    snprintf(cfg1, sizeof cfg1, "%s/kill.yaml", dir);
    snprintf(cfg2, sizeof cfg2, "%s/replay.yaml", dir);
    write_config(cfg1, bootstrap, g1, sd1, schema_path);
    write_config(cfg2, bootstrap, g2, sd2, schema_path);

    /* Live worker: let it catch up (its committed offsets reach the end),
     * then kill -9 and time the restart to caught up. */
    pid_t pid = spawn(bin, cfg1, log, false);
    while (group_committed(bootstrap, g1, topic, partitions) < events) usleep(200000);
    sleep(1);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    double t_recover = timed_child(bin, cfg1, log);
    double t_replay = timed_child(bin, cfg2, log);
    printf("recovery after kill -9 (restart to caught up): %.2f s\n", t_recover);
    printf("replay of the topic from offset 0:             %.2f s\n", t_replay);
    printf("recovery / replay:                             %.3f (target <= 0.25)\n", t_recover / t_replay);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_ingest BOOTSTRAP [EVENTS] [PARTITIONS] [SLUICE_BIN]\n");
        return 2;
    }
    const char *bootstrap = argv[1];
    long events = argc > 2 ? atol(argv[2]) : 6000000;   /* see bench/ingest_bench.sh */
    int partitions = argc > 3 ? atoi(argv[3]) : 4;
    const char *bin = argc > 4 ? argv[4] : NULL;
    char topic[128], dir[256] = "/tmp/sluice-bench-ingest-XXXXXX";
    const char *phases = getenv("SLUICE_BENCH_PHASES");
    const char *reuse = getenv("SLUICE_BENCH_TOPIC");
    if (!mkdtemp(dir)) die("mkdtemp", dir);
    if (reuse && reuse[0]) {
        snprintf(topic, sizeof topic, "%s", reuse);
        printf("reusing topic %s (%ld events expected)\n", topic, events);
    } else {
        uniq(topic, sizeof topic, "bench-ingest");
        create_topic(bootstrap, topic, partitions);
        double t0 = now_s();
        produce(bootstrap, topic, events);
        printf("produced %ld events to %s (%d partitions) in %.1f s\n", events, topic, partitions, now_s() - t0);
    }

    printf("method: events/s wall = events / seconds from the first message to the final commit; "
           "events/CPU-s (\"per core\") = events / (user+sys CPU seconds of this process over the "
           "same span, getrusage: every thread, librdkafka's and RocksDB's included) = wall rate / "
           "cores busy\n");
    double raw_rate = 0, raw_cpu = 0;
    if (!phases || strstr(phases, "raw")) {
        raw_consume(bootstrap, topic, events, NULL, &raw_rate, &raw_cpu);
        printf("raw librdkafka consume (ceiling):   %9.0f events/s wall, %9.0f events/CPU-s\n", raw_rate, raw_cpu);
    }
    if (!phases || strstr(phases, "decode")) {
        char yaml[4096], err[512];
        snprintf(yaml, sizeof yaml, SCHEMA_FMT, topic);
        schema_t *schema;
        ingest_decoder_t *dec;
        if (schema_load_string("bench.yaml", yaml, strlen(yaml), &schema, err, sizeof err)) die("schema", err);
        if (ingest_decoder_new(schema, 0, 0, &dec, err, sizeof err)) die("decoder", err);
        double rate, per_cpu;
        raw_consume(bootstrap, topic, events, dec, &rate, &per_cpu);
        printf("consume + JSON decode only:         %9.0f events/s wall, %9.0f events/CPU-s, %.0f%% of raw; "
               "decoding costs %.2f us CPU/event\n", rate, per_cpu, raw_rate > 0 ? 100.0 * rate / raw_rate : 0.0,
               raw_cpu > 0 ? 1e6 / per_cpu - 1e6 / raw_cpu : 0.0);
        ingest_decoder_free(dec);
        schema_free(schema);
    }

    const char *intervals[] = { "100ms", "10s" };
    double rates[2] = { 0, 0 };
    for (int i = 0; i < 2; i++) {
        if (phases && !strstr(phases, intervals[i])) continue;
        double rate, per_cpu, cores, thread_us, cmean, cmax;
        double written, vbytes, put_us, build_us;
        uint64_t commits;
        ingest_run(bootstrap, topic, dir, events, intervals[i], &rate, &per_cpu, &cores, &thread_us,
                   &cmean, &cmax, &commits, &written, &vbytes, &put_us, &build_us);
        rates[i] = rate;
        printf("ingest, commit every %-5s:        %9.0f events/s wall, %9.0f events/CPU-s (%.2f cores busy), "
               "%.0f%% of raw; ingest thread %.2f us CPU/event; %llu commits, latency mean %.2f ms max %.2f ms\n",
               intervals[i], rate, per_cpu, cores, raw_rate > 0 ? 100.0 * rate / raw_rate : 0.0, thread_us,
               (unsigned long long)commits, cmean, cmax);
        printf("  entity states written per event %.3f, %.0f bytes each (key + value, mean at the end); "
               "ingest thread %.2f us (wall) to expire and encode each, committer thread %.2f us CPU "
               "to write it\n", written, vbytes, build_us, put_us);
    }
    if (rates[0] > 0 && rates[1] > 0)
        printf("throughput 100ms / 10s commit interval: %.2f (target >= 0.9)\n", rates[0] / rates[1]);
    if (bin) recovery(bin, bootstrap, topic, partitions, dir, events);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
