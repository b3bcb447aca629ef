/*
 * test_ingest_crash.c — exactly once under kill -9, against the real broker.
 *
 * Produces a known stream (out of order, late and bad messages) to a
 * 4-partition topic, then runs `sluice ingest` as a child process and kills
 * it with SIGKILL at random moments, restarting it each time; a final run
 * with --exit-at-eof catches up. Every aggregate, offset and persisted
 * counter must then equal the oracle exactly (ingest_stream.c).
 *
 * Environment: SLUICE_BIN (the sluice binary, set by CMake),
 * SLUICE_CRASH_EVENTS (default 200000; bench/ingest_crash_1m.sh runs 1M),
 * SLUICE_CRASH_KILLS (default 5), SLUICE_CRASH_SEED.
 * Kill moments: the k-th kill waits until the group's committed Kafka offsets
 * (written after each durable state batch) pass a random point of the k-th
 * slice of the stream (and past the previous kill's progress), then a random
 * 0-150 ms; one kill, chosen at random, hits during startup instead. After
 * each kill the committed progress is read from the store: it must be short
 * of the end every time and have advanced for every kill but the startup one
 * (otherwise the test proves nothing).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "ingest.h"
#include "ingest_stream.h"
#include "schema.h"
#include "sl_err.h"
#include "sl_test_kafka.h"
#include "state.h"

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : def;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

static pid_t spawn(const char *bin, const char *config, const char *log, bool exit_at_eof)
{
    fflush(NULL);   /* the child must not inherit unflushed output */
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        if (!freopen(log, "a", stdout)) _exit(127);
        char *argv[] = { (char *)bin, (char *)"ingest", (char *)"-c", (char *)config,
                         exit_at_eof ? (char *)"--exit-at-eof" : NULL, NULL };
        execv(bin, argv);
        _exit(127);
    }
    return pid;
}

static int64_t committed_messages(const char *state_dir, const char *topic, int partitions)
{
    char err[512];
    state_store_t *st;
    state_options_t so = { .create_if_missing = false };
    if (state_open(state_dir, &so, &st, err, sizeof err) != 0) return 0;   /* not created yet */
    int64_t n = 0;
    for (int p = 0; p < partitions; p++) {
        int64_t next, wm;
        if (state_offset_get(st, topic, p, &next, &wm) == 0) n += next;
    }
    state_close(st);
    return n;
}

/* The group's committed Kafka offsets, summed: the worker commits them
 * (asynchronously, for lag monitoring) after each durable state batch, so
 * this trails the state's progress and can be read while the child runs. */
static int64_t group_progress(rd_kafka_t *rk, const char *topic, int partitions)
{
    rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++) rd_kafka_topic_partition_list_add(tl, topic, p);
    int64_t sum = 0;
    if (rd_kafka_committed(rk, tl, 5000) == 0)
        for (int p = 0; p < partitions; p++)
            if (tl->elems[p].offset > 0) sum += tl->elems[p].offset;
    rd_kafka_topic_partition_list_destroy(tl);
    return sum;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

Test(ingest_crash, kill9_restarts_equal_oracle, .timeout = 900)
{
    const char *bin = getenv("SLUICE_BIN");
    cr_assert_not_null(bin, "SLUICE_BIN not set");
    const size_t n_events = (size_t)env_long("SLUICE_CRASH_EVENTS", 200000);
    const int kills = (int)env_long("SLUICE_CRASH_KILLS", 5);
    unsigned seed = (unsigned)env_long("SLUICE_CRASH_SEED", (long)time(NULL));
    srand(seed);
    fprintf(stderr, "crash test: %zu events, %d kills, seed %u\n", n_events, kills, seed);

    char err[1024], bootstrap[256], topic[128], group[128], dir[256] = "/tmp/sluice-ingest-crash-XXXXXX";
    cr_assert_eq(sl_test_kafka_bootstrap(bootstrap, sizeof bootstrap, err, sizeof err), 0, "%s", err);
    sl_test_kafka_name(topic, sizeof topic, "ingest-crash");
    sl_test_kafka_name(group, sizeof group, "ingest-crash-grp");
    const int P = 4;
    cr_assert_eq(sl_test_kafka_topic_create(bootstrap, topic, P, 30000, err, sizeof err), 0, "%s", err);
    cr_assert_not_null(mkdtemp(dir));

    char path_schema[300], path_config[300], path_log[300], state_dir[300];
    snprintf(path_schema, sizeof path_schema, "%s/schema.yaml", dir);
    snprintf(path_config, sizeof path_config, "%s/sluice.yaml", dir);
    snprintf(path_log, sizeof path_log, "%s/ingest.log", dir);
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    char text[4096];
    snprintf(text, sizeof text, STREAM_SCHEMA_FMT, topic);
    write_file(path_schema, text);
    snprintf(text, sizeof text,
             "schemas: [schema.yaml]\n"
             "brokers: \"%s\"\n"
             "group_id: %s\n"
             "state_dir: %s\n"
             "commit_interval: 100ms\n"
             "max_message_bytes: %d\n"
             "cache_max_entities: 5000\n"
             "log_level: warn\n"
             "metrics_port: 0\n"
             "kafka:\n"
             "  group.instance.id: crash-worker\n"
             "  session.timeout.ms: \"6000\"\n",
             bootstrap, group, state_dir, STREAM_MAX_BYTES);
    write_file(path_config, text);

    stream_t s;
    stream_init(&s, P, 20000, seed);
    stream_generate(&s, n_events, 5);
    cr_assert_eq(stream_produce(&s, 0, s.n, bootstrap, topic, err, sizeof err), 0, "%s", err);

    /* A handle (never subscribed) to read the group's committed offsets. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err), RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "group.id", group, err, sizeof err), RD_KAFKA_CONF_OK);
    rd_kafka_t *watch = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    cr_assert_not_null(watch, "%s", err);

    int mid = 0;
    int64_t last = 0;
    /* Exactly one kill (chosen at random) hits during startup; the others
     * wait for this run's own progress, so the count of kills that landed
     * after progress does not depend on luck. */
    const int startup_kill = kills > 1 ? rand() % kills : -1;
    for (int k = 0; k < kills; k++) {
        pid_t pid = spawn(bin, path_config, path_log, false);
        /* Kill k lands at a random point of the k-th slice of the stream,
         * and after this run has committed something, plus a random 0-150 ms. */
        int64_t slice = (int64_t)s.n / (kills + 2);   /* the last 2/7 stay as margin */
        int64_t target = 0;
        if (k != startup_kill) {
            target = slice * k + rand() % (slice * 9 / 10);
            if (target <= last) target = last + 1;
        }
        int status;
        long waited = 0;
        while (group_progress(watch, topic, P) < target && waited < 120000) {
            cr_assert_eq(waitpid(pid, &status, WNOHANG), 0, "worker %d exited early; see %s", k, path_log);
            sleep_ms(20);
            waited += 20;
        }
        long delay = rand() % 150;
        sleep_ms(delay);
        pid_t done = waitpid(pid, &status, WNOHANG);
        cr_assert_eq(done, 0, "worker %d exited early (status %d); see %s", k, status, path_log);
        cr_assert_eq(kill(pid, SIGKILL), 0);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        int64_t c = committed_messages(state_dir, topic, P);
        fprintf(stderr, "kill %d (target %lld, +%ld ms): %lld of %zu messages committed\n", k + 1,
                (long long)target, delay, (long long)c, s.n);
        cr_assert_geq(c, last, "committed progress never goes back");
        cr_assert_lt(c, (int64_t)s.n, "kill %d landed after the end: the test would prove nothing", k + 1);
        if (c > last) mid++;
        last = c;
    }
    rd_kafka_destroy(watch);
    /* Every kill hit a worker short of the end; all but the startup kill
     * after it had committed something of its own. */
    cr_assert_geq(mid, kills - (startup_kill >= 0 ? 1 : 0), "only %d of %d kills landed after progress", mid, kills);

    pid_t pid = spawn(bin, path_config, path_log, true);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "final run failed; see %s", path_log);

    state_store_t *st;
    state_options_t so = { .create_if_missing = false };
    cr_assert_eq(state_open(state_dir, &so, &st, err, sizeof err), 0, "%s", err);
    schema_t *schema;
    snprintf(text, sizeof text, STREAM_SCHEMA_FMT, topic);
    cr_assert_eq(schema_load_string("crash.yaml", text, strlen(text), &schema, err, sizeof err), 0, "%s", err);
    uint64_t bad[INGEST_BAD__COUNT], late;
    size_t mism = stream_check(&s, s.n, schema, st, topic, bad, &late);
    fprintf(stderr, "oracle: %llu late, bad %llu/%llu/%llu/%llu/%llu/%llu\n", (unsigned long long)late,
            (unsigned long long)bad[1], (unsigned long long)bad[2], (unsigned long long)bad[3],
            (unsigned long long)bad[4], (unsigned long long)bad[5], (unsigned long long)bad[6]);
    state_close(st);
    schema_free(schema);
    cr_assert_eq(mism, 0, "%zu mismatches with the oracle after %d kills (seed %u)", mism, kills, seed);

    stream_free(&s);
    snprintf(text, sizeof text, "rm -rf '%s'", dir);
    if (system(text) != 0) fprintf(stderr, "cleanup failed\n");
}
