/*
 * test_backfill.c — `backfill` on the real broker, compared with the
 * independent oracle of tests/ingest/ingest_stream.c (a recompute from the
 * generator's own values: lateness rule, lifetime count/sum/min/max, filter).
 *
 * 1. added_view_matches_oracle_and_switch_is_atomic: a system runs with the
 *    view user_stats only; route_stats is added. The backfill replays the
 *    topic into route_stats' version 2 while the live worker (in process)
 *    keeps ingesting user_stats from the second half of the stream. A reader
 *    thread looks route_stats entities up during the whole run: every value
 *    it ever sees must be the FINAL state of that entity (never a partial
 *    build), and once one entity is found, no later lookup of a finally
 *    present entity may miss it (old or new, never a mix). Afterwards both
 *    views equal the oracle, counters included, and ingest starts cleanly.
 * 2. kill9_during_replay_and_cutover_then_resume: `sluice backfill` as a
 *    child, killed with SIGKILL at random moments of the replay (with the
 *    live worker running), then at each cut-over crash point (C1: after the
 *    final batch, C2: after the switch was recorded, C3: after the switch);
 *    the last run resumes and finishes. Both views equal the oracle, the old
 *    version is gone, and `sluice check --state-dir` reports nothing to do.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agg.h"
#include "backfill.h"
#include "ingest.h"
#include "ingest_stream.h"
#include "replay.h"
#include "schema.h"
#include "sl_config.h"
#include "sl_err.h"
#include "sl_log.h"
#include "sl_test_kafka.h"
#include "state.h"

typedef struct env {
    char bootstrap[256], topic[128], group[128], dir[256], state_dir[300];
    char yaml1[4096], yaml2[4096];      /* without / with route_stats */
    sl_config_t cfg;
    schema_t *s1, *s2;
    stream_t s;
} env_t;

static void env_init(env_t *e, size_t events)
{
    char err[512];
    memset(e, 0, sizeof *e);
    sl_log_set(SL_LOG_WARN, false);
    cr_assert_eq(sl_test_kafka_bootstrap(e->bootstrap, sizeof e->bootstrap, err, sizeof err), 0, "%s", err);
    sl_test_kafka_name(e->topic, sizeof e->topic, "backfill");
    sl_test_kafka_name(e->group, sizeof e->group, "backfill-grp");
    cr_assert_eq(sl_test_kafka_topic_create(e->bootstrap, e->topic, 3, 30000, err, sizeof err), 0, "%s", err);
    snprintf(e->dir, sizeof e->dir, "/tmp/sluice-backfill-XXXXXX");
    cr_assert_not_null(mkdtemp(e->dir));
    snprintf(e->state_dir, sizeof e->state_dir, "%s/state", e->dir);
    sl_config_defaults(&e->cfg);
    char set[512];
#define SET(...) do { snprintf(set, sizeof set, __VA_ARGS__); \
        cr_assert_eq(sl_config_set(&e->cfg, set, err, sizeof err), 0, "%s: %s", set, err); } while (0)
    SET("brokers=%s", e->bootstrap);
    SET("group_id=%s", e->group);
    SET("state_dir=%s", e->state_dir);
    SET("commit_interval=100ms");
    SET("max_message_bytes=%d", STREAM_MAX_BYTES);
    SET("cache_max_entities=1000");
    SET("log_level=warn");
#undef SET
    snprintf(e->yaml2, sizeof e->yaml2, STREAM_SCHEMA_FMT, e->topic);
    snprintf(e->yaml1, sizeof e->yaml1, "%s", e->yaml2);
    char *cut = strstr(e->yaml1, "  - name: route_stats");
    cr_assert_not_null(cut);
    *cut = '\0';
    cr_assert_eq(schema_load_string("s1.yaml", e->yaml1, strlen(e->yaml1), &e->s1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(schema_load_string("s2.yaml", e->yaml2, strlen(e->yaml2), &e->s2, err, sizeof err), 0, "%s", err);
    stream_init(&e->s, 3, 400, 4242);
    stream_generate(&e->s, events, 10);
}

static void env_free(env_t *e)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    if (system(cmd)) { /* best effort */ }
    stream_free(&e->s);
    schema_free(e->s1);
    schema_free(e->s2);
    sl_config_free(&e->cfg);
}

static void produce(env_t *e, size_t from, size_t to)
{
    char err[512];
    cr_assert_eq(stream_produce(&e->s, from, to, e->bootstrap, e->topic, err, sizeof err), 0, "%s", err);
}

/* The worker of a schema until caught up. */
static void ingest_until_eof(env_t *e, const schema_t *schema)
{
    char err[1024];
    state_store_t *st;
    ingest_worker_t *w;
    cr_assert_eq(state_open(e->state_dir, NULL, &st, err, sizeof err), 0, "%s", err);
    ingest_options_t io = { .exit_at_eof = true };
    cr_assert_eq(ingest_worker_new(&e->cfg, schema, st, &io, &w, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ingest_worker_run(w, err, sizeof err), 0, "%s", err);
    ingest_worker_free(w);
    state_close(st);
}

static void check_oracle(env_t *e)
{
    char err[512];
    state_store_t *st;
    cr_assert_eq(state_open(e->state_dir, NULL, &st, err, sizeof err), 0, "%s", err);
    uint64_t bad[INGEST_BAD__COUNT], late;
    size_t mism = stream_check(&e->s, e->s.n, e->s2, st, e->topic, bad, &late);
    cr_assert_eq(mism, 0, "%zu mismatches with the oracle", mism);
    uint32_t ver;
    state_view_version_get(st, "route_stats", &ver);
    cr_assert_eq(ver, 2, "the backfilled view serves version 2");
    /* The old version and the backfill's records are gone. */
    sl_buf_t b = SL_BUF_INIT;
    cr_assert_eq(state_lookup(st, BACKFILL_PROGRESS_VIEW, 0, "route_stats", 11, &b), SL_ENOTFOUND);
    cr_assert_eq(state_meta_get(st, "backfill.route_stats", &b), 0);
    cr_assert_eq(b.len, 0, "backfill record cleared");
    sl_buf_free(&b);
    state_close(st);
}

/* ---- 1: in process, with a reader ------------------------------------------ */

typedef struct reader {
    state_store_t *st;
    atomic_bool stop;
    uint64_t lookups;
    atomic_uint_fast64_t found;   /* read by the test while the reader runs */
    /* every (key, value) the reader saw, checked against the final states */
    char (*keys)[32];
    size_t n_keys;
    sl_buf_t *seen;               /* [n_keys]: last value seen (empty = never) */
    bool *ever;
    size_t misses_after_found;
    size_t changes;    /* a finally-present key missing after the switch */
    bool switched;
} reader_t;

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    sl_buf_t v = SL_BUF_INIT;
    while (!atomic_load(&r->stop)) {
        for (size_t i = 0; i < r->n_keys; i++) {
            int rc = state_lookup(r->st, "route_stats", -1, r->keys[i], strlen(r->keys[i]), &v);
            r->lookups++;
            if (rc == 0) {
                r->found++;
                r->switched = true;
                if (r->ever[i] && (r->seen[i].len != v.len || memcmp(r->seen[i].data, v.data, v.len)))
                    r->changes++;          /* a value seen, then another: a partial build */
                r->ever[i] = true;
                sl_buf_reset(&r->seen[i]);
                sl_buf_append(&r->seen[i], v.data, v.len);
            } else if (r->switched && r->ever[i]) {
                r->misses_after_found++;
            }
        }
    }
    sl_buf_free(&v);
    return NULL;
}

Test(backfill, added_view_matches_oracle_and_switch_is_atomic, .timeout = 300)
{
    env_t e;
    env_init(&e, 24000);
    char err[1024];
    produce(&e, 0, 12000);
    ingest_until_eof(&e, e.s1);                 /* the running system: user_stats only */
    produce(&e, 12000, e.s.n);                   /* more traffic: the live worker takes it */

    state_store_t *st;
    cr_assert_eq(state_open(e.state_dir, NULL, &st, err, sizeof err), 0, "%s", err);
    /* The worker refuses the new view on a consumed topic (it would start
     * mid-stream) and names the backfill command. */
    ingest_worker_t *w = NULL;
    cr_assert_eq(ingest_worker_new(&e.cfg, e.s2, st, NULL, &w, err, sizeof err), SL_ESCHEMA, "%s", err);
    cr_assert_null(w);
    cr_assert(strstr(err, "sluice backfill -c CONFIG --view route_stats"), "%s", err);
    /* A new view on a consumed topic needs a backfill, and check says so. */
    char *buf = NULL;
    size_t blen = 0;
    FILE *mem = open_memstream(&buf, &blen);
    cr_assert_eq(backfill_check(e.s2, e.state_dir, "c.yaml", mem, err, sizeof err), 1, "%s", err);
    fclose(mem);
    cr_assert(strstr(buf, "sluice backfill -c c.yaml --view route_stats"), "%s", buf);
    free(buf);

    reader_t r;
    memset(&r, 0, sizeof r);
    r.st = st;
    r.n_keys = 12;
    r.keys = calloc(r.n_keys, sizeof *r.keys);
    r.seen = calloc(r.n_keys, sizeof *r.seen);
    r.ever = calloc(r.n_keys, sizeof *r.ever);
    static const char *const regions[3] = { "eu", "us", "ap" };
    for (size_t i = 0; i < r.n_keys; i++) {
        /* composite key: varint(len) text varint(len) text */
        const char *rg = regions[i % 3];
        char sh[24];
        snprintf(sh, sizeof sh, "%zu", i / 3);
        r.keys[i][0] = (char)strlen(rg);
        memcpy(r.keys[i] + 1, rg, strlen(rg));
        r.keys[i][1 + strlen(rg)] = (char)strlen(sh);
        memcpy(r.keys[i] + 2 + strlen(rg), sh, strlen(sh) + 1);
    }
    pthread_t th;
    pthread_create(&th, NULL, reader_main, &r);

    backfill_options_t o = { .view = "route_stats", .from_ms = REPLAY_FROM_EARLIEST, .live = true,
                             .commit_interval_ms = 100 };
    backfill_stats_t bs;
    int rc = backfill_run(&e.cfg, e.s2, st, &o, &bs, err, sizeof err);
    /* The reader goes on until it has found the new version (up to 60 s; a
     * fixed 200 ms could pass without a lookup on a loaded machine). */
    for (int waited_ms = 0; rc == 0 && atomic_load(&r.found) == 0 && waited_ms < 60000; waited_ms += 10)
        usleep(10000);
    atomic_store(&r.stop, true);
    pthread_join(th, NULL);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(bs.new_version, 2);
    /* Up to the live worker's offsets at the cut-over (it may still have
     * been catching up; the full worker takes the rest for both views). */
    cr_assert(bs.messages >= 12000 && bs.messages <= e.s.n, "replayed %llu", (unsigned long long)bs.messages);
    cr_assert_gt(r.found, 0, "the reader saw the new version");
    cr_assert_eq(r.changes, 0, "an entity's value changed under the reader: a partial build was visible");
    cr_assert_eq(r.misses_after_found, 0, "after the switch every present entity stays visible");
    /* Each value a reader saw is the final one (what the same lookup gives
     * now): no partial build of version 2 was ever visible. (A route entity
     * is written from several partitions; the lookup without partition
     * reads the one written last, as serving does.) */
    size_t present = 0, diff = 0;
    sl_buf_t fin = SL_BUF_INIT;
    for (size_t i = 0; i < r.n_keys; i++) {
        if (state_lookup(st, "route_stats", -1, r.keys[i], strlen(r.keys[i]), &fin) != 0) continue;
        present++;
        if (r.ever[i] && (fin.len != r.seen[i].len || memcmp(fin.data, r.seen[i].data, fin.len))) diff++;
    }
    sl_buf_free(&fin);
    cr_assert_gt(present, 0);
    cr_assert_eq(diff, 0, "a reader saw a partial (pre-switch) state of %zu entities", diff);
    for (size_t i = 0; i < r.n_keys; i++) sl_buf_free(&r.seen[i]);
    free(r.seen); free(r.ever); free(r.keys);
    state_close(st);

    ingest_until_eof(&e, e.s2);                 /* the full worker starts: no refusal */
    check_oracle(&e);
    env_free(&e);
}

/* ---- 2: kill -9 via the CLI ------------------------------------------------ */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* Runs `sluice backfill` as a child; crash: SLUICE_TEST_CRASH point or
 * NULL; delay_us: SLUICE_TEST_BACKFILL_DELAY_US (0 = none). */
static pid_t spawn(const char *bin, const char *config, const char *crash, bool live, int delay_us)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        if (crash) setenv("SLUICE_TEST_CRASH", crash, 1);
        if (delay_us > 0) {
            char d[24];
            snprintf(d, sizeof d, "%d", delay_us);
            setenv("SLUICE_TEST_BACKFILL_DELAY_US", d, 1);
        }
        int fd = open("/dev/null", 1);
        if (fd >= 0) dup2(fd, 1);
        char *argv[] = { (char *)bin, "backfill", "-c", (char *)config, "--view", "route_stats",
                         "--quiet", "--commit-interval", "100ms", live ? NULL : "--no-live", NULL };
        execv(bin, argv);
        _exit(127);
    }
    return pid;
}

static int wait_status(pid_t pid)
{
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return status;
}

/* Offsets the backfill has committed, over all partitions; read-only works
 * while the backfill runs (-1 when the store cannot be opened yet). */
static int64_t backfill_done_opt(env_t *e, bool read_only)
{
    char err[512];
    state_store_t *st;
    state_options_t so = { .create_if_missing = false, .read_only = read_only };
    int rc = state_open(e->state_dir, &so, &st, err, sizeof err);
    if (read_only && rc) return -1;
    cr_assert_eq(rc, 0, "%s", err);
    int64_t sum = 0;
    sl_buf_t b = SL_BUF_INIT;
    for (int p = 0; p < 3; p++)
        if (state_lookup(st, BACKFILL_PROGRESS_VIEW, p, "route_stats", 11, &b) == 0 && b.len == 21)
            sum += (int64_t)sl_load_u64be(b.data + 5);
    sl_buf_free(&b);
    state_close(st);
    return sum;
}

static int64_t backfill_done(env_t *e)
{
    return backfill_done_opt(e, false);
}

static uint32_t stored_version(env_t *e)
{
    char err[512];
    state_store_t *st;
    cr_assert_eq(state_open(e->state_dir, NULL, &st, err, sizeof err), 0, "%s", err);
    uint32_t v;
    state_view_version_get(st, "route_stats", &v);
    state_close(st);
    return v;
}

Test(backfill, kill9_during_replay_and_cutover_then_resume, .timeout = 600)
{
    const char *bin = getenv("SLUICE_BIN");
    cr_assert_not_null(bin, "SLUICE_BIN not set");
    env_t e;
    env_init(&e, 100000);
    produce(&e, 0, 50000);
    ingest_until_eof(&e, e.s1);
    produce(&e, 50000, e.s.n);

    char s2path[400], cfgpath[400], text[2048];
    snprintf(s2path, sizeof s2path, "%s/s2.yaml", e.dir);
    snprintf(cfgpath, sizeof cfgpath, "%s/c.yaml", e.dir);
    write_file(s2path, e.yaml2);
    snprintf(text, sizeof text,
             "schemas: [s2.yaml]\nbrokers: \"%s\"\ngroup_id: %s\nstate_dir: %s\ncommit_interval: 50ms\n"
             "max_message_bytes: %d\ncache_max_entities: 1000\nlog_level: warn\n"
             /* a killed member must not hold the group for 45 s */
             "kafka:\n  session.timeout.ms: 6000\n  heartbeat.interval.ms: 1000\n",
             e.bootstrap, e.group, e.state_dir, STREAM_MAX_BYTES);
    write_file(cfgpath, text);

    /* Kills during the replay at random points of its progress. The replay
     * runs to the live worker's committed offsets (50000 messages in all);
     * SLUICE_TEST_BACKFILL_DELAY_US slows it to >= 10 s for those, so that
     * a resumed run cannot catch up and cut over before the test sees its
     * progress: kill k waits until the committed progress passes a random
     * point of the k-th fifth of the replay (and this run's own progress),
     * then a random 0-100 ms. With >= 4 s of replay left at the latest kill,
     * every kill lands during the replay after progress whatever the seed
     * and the machine's speed (random delays once let a fast machine finish
     * before the kill, or a slow one not start). */
    const int64_t bound = 50000, slice = bound / 5;
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    int64_t last = 0;
    for (int k = 0; k < 3; k++) {
        pid_t pid = spawn(bin, cfgpath, NULL, true, 200);
        int64_t target = slice * k + rand() % (slice * 9 / 10);
        if (target <= last) target = last + 1;
        for (int waited_ms = 0; waited_ms < 120000; waited_ms += 50) {
            if (backfill_done_opt(&e, true) >= target) break;
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                cr_assert_fail("the backfill ended (status %d) before kill %d (seed %u)", status, k + 1, seed);
            }
            usleep(50000);
        }
        usleep((useconds_t)(rand() % 100000));
        kill(pid, SIGKILL);
        int st = wait_status(pid);
        int64_t done = backfill_done(&e);
        fprintf(stderr, "backfill kill %d: %s, %lld of %lld offsets committed (target %lld)\n", k + 1,
                WIFSIGNALED(st) ? "killed" : "had already finished", (long long)done, (long long)bound,
                (long long)target);
        cr_assert(WIFSIGNALED(st), "the backfill finished before kill %d: the crash points below would "
                  "test nothing (seed %u)", k + 1, seed);
        cr_assert(done >= target && done < bound, "kill %d: progress %lld, want %lld..%lld (seed %u)", k + 1,
                  (long long)done, (long long)target, (long long)bound - 1, seed);
        last = done;
        cr_assert_eq(stored_version(&e), 1, "killed before the cut-over: version 1 still serves");
    }

    /* Crash at each point of the cut-over, then resume. */
    static const char *const points[] = { "C1", "C2", "C3" };
    for (int i = 0; i < 3; i++) {
        pid_t pid = spawn(bin, cfgpath, points[i], i == 0, 0);
        int st = wait_status(pid);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "crash point %s reached (status %d)", points[i], st);
        cr_assert_eq(stored_version(&e), i < 2 ? 1u : 2u, "after %s", points[i]);
    }
    pid_t pid = spawn(bin, cfgpath, NULL, true, 0);
    int st = wait_status(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "final run status %d", st);

    ingest_until_eof(&e, e.s2);
    check_oracle(&e);

    /* Nothing left to backfill. */
    char err[512];
    FILE *devnull = fopen("/dev/null", "w");
    cr_assert_eq(backfill_check(e.s2, e.state_dir, NULL, devnull, err, sizeof err), 0, "%s", err);
    fclose(devnull);
    env_free(&e);
}

/* ---- 3: the view is its topic's only view ---------------------------------- */

/* The backfill then follows the high watermarks and writes the topic's
 * progress in its final batch: the worker restarted afterwards must neither
 * replay nor skip anything. Oracle: per user, lifetime count and sum of the
 * accepted events (documented lateness rule), recomputed from the generator. */
/* States of user_stats version 1 still stored, over every user and partition. */
static size_t old_version_states(env_t *e, state_store_t *st)
{
    size_t n = 0;
    sl_buf_t b = SL_BUF_INIT;
    for (size_t u = 0; u < e->s.n_users; u++) {
        char key[32];
        snprintf(key, sizeof key, "u%zu", u);
        for (int32_t p = 0; p < 3; p++)
            n += state_lookup_version(st, "user_stats", 1, p, key, strlen(key), &b) == 0;
    }
    sl_buf_free(&b);
    return n;
}

Test(backfill, only_view_of_its_topic_writes_topic_progress, .timeout = 300)
{
    env_t e;
    env_init(&e, 12000);
    char err[1024];
    produce(&e, 0, 6000);
    ingest_until_eof(&e, e.s1);
    produce(&e, 6000, e.s.n);
    /* Same values, another fingerprint: a filter every event passes. */
    char yaml[4096];
    snprintf(yaml, sizeof yaml, "%s", e.yaml1);
    char *at = strstr(yaml, "    source: events\n");
    cr_assert_not_null(at);
    at += strlen("    source: events\n");
    char tail[4096];
    snprintf(tail, sizeof tail, "%s", at);
    snprintf(at, sizeof yaml - (size_t)(at - yaml), "    filter: {field: amount, op: gt, value: -1}\n%s", tail);
    schema_t *s3;
    cr_assert_eq(schema_load_string("s3.yaml", yaml, strlen(yaml), &s3, err, sizeof err), 0, "%s", err);
    cr_assert_neq(s3->views[0].fingerprint, e.s1->views[0].fingerprint);

    state_store_t *st;
    cr_assert_eq(state_open(e.state_dir, NULL, &st, err, sizeof err), 0, "%s", err);
    backfill_options_t o = { .view = "user_stats", .from_ms = REPLAY_FROM_EARLIEST, .live = true,
                             .commit_interval_ms = 100 };
    backfill_stats_t bs;
    cr_assert_gt(old_version_states(&e, st), 0, "version 1 holds the users' states before");
    cr_assert_eq(backfill_run(&e.cfg, s3, st, &o, &bs, err, sizeof err), 0, "%s", err);
    cr_assert_eq(bs.messages, e.s.n, "no other view: replayed to the high watermarks");
    cr_assert_eq(old_version_states(&e, st), 0, "the old version is dropped after the cut-over");
    state_close(st);
    ingest_until_eof(&e, s3);                   /* resumes at the backfill's offsets */

    cr_assert_eq(state_open(e.state_dir, NULL, &st, err, sizeof err), 0, "%s", err);
    agg_plan_t *plan;
    cr_assert_eq(agg_plan_new(s3, 0, &plan, err, sizeof err), 0, "%s", err);
    int64_t maxseen[8];
    for (int p = 0; p < 8; p++) maxseen[p] = INT64_MIN;
    int64_t *cnt = calloc(e.s.n_users, sizeof *cnt);
    double *sum = calloc(e.s.n_users, sizeof *sum);
    for (size_t i = 0; i < e.s.n; i++) {
        const stream_msg_t *m = &e.s.m[i];
        if (m->kind != INGEST_OK) continue;
        if (m->ts > maxseen[m->partition]) maxseen[m->partition] = m->ts;
        if (m->ts < maxseen[m->partition] - STREAM_DELAY_MS - STREAM_LATENESS_MS) continue;
        cnt[m->user]++;
        sum[m->user] += (double)m->amount;
    }
    size_t bad = 0;
    sl_buf_t b = SL_BUF_INIT;
    for (size_t u = 0; u < e.s.n_users; u++) {
        char key[32];
        snprintf(key, sizeof key, "u%zu", u);
        int rc = state_lookup(st, "user_stats", -1, key, strlen(key), &b);
        if (cnt[u] == 0) { bad += rc != SL_ENOTFOUND; continue; }
        agg_entity_t *ent;
        if (rc || agg_entity_decode(plan, b.data, b.len, &ent)) { bad++; continue; }
        agg_value_t v[4];
        agg_entity_query(plan, ent, INT64_MAX / 4, v);
        if (v[0].i != cnt[u] || fabs(v[1].d - sum[u]) > 1e-6) {
            if (bad < 5) fprintf(stderr, "%s: count %lld want %lld, sum %g want %g\n", key, (long long)v[0].i,
                                 (long long)cnt[u], v[1].d, sum[u]);
            bad++;
        }
        agg_entity_free(ent);
    }
    cr_assert_eq(bad, 0, "%zu users differ from the oracle", bad);
    int64_t per_part[3] = { 0 }, next;
    for (size_t i = 0; i < e.s.n; i++) per_part[e.s.m[i].partition]++;
    for (int p = 0; p < 3; p++) {
        cr_assert_eq(state_offset_get(st, e.topic, p, &next, NULL), 0);
        cr_assert_eq(next, per_part[p], "partition %d: progress %lld, %lld messages", p, (long long)next,
                     (long long)per_part[p]);
    }
    sl_buf_free(&b);
    free(cnt);
    free(sum);
    agg_plan_free(plan);
    state_close(st);
    schema_free(s3);
    env_free(&e);
}
