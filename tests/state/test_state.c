/*
 * test_state.c — the RocksDB state store against independent oracles:
 * an in-memory table of every (view, partition, entity) for random operation
 * sequences, committed-prefix checks after kill -9, and a forked second
 * process for the directory lock.
 */
#include <criterion/criterion.h>

#include "state.h"
#include "sl_err.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[256];

static void mk_tmp(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-state-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmp(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", tmpdir);
}

static state_store_t *open_at(const char *sub)
{
    char dir[512], err[512] = "";
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, sub);
    state_store_t *st = NULL;
    int rc = state_open(dir, NULL, &st, err, sizeof err);
    cr_assert_eq(rc, 0, "state_open(%s): %d %s", dir, rc, err);
    return st;
}

static void commit(state_store_t *st, state_batch_t *b)
{
    char err[512] = "";
    int rc = state_batch_commit(st, b, err, sizeof err);
    cr_assert_eq(rc, 0, "commit: %d %s", rc, err);
}

static bool lookup_eq(state_store_t *st, const char *view, int32_t part, const char *key,
                      const char *want)
{
    sl_buf_t out = SL_BUF_INIT;
    int rc = state_lookup(st, view, part, key, strlen(key), &out);
    bool ok;
    if (!want) ok = rc == SL_ENOTFOUND;
    else ok = rc == 0 && out.len == strlen(want) && (!out.len || memcmp(out.data, want, out.len) == 0);
    sl_buf_free(&out);
    return ok;
}

TestSuite(state, .init = mk_tmp, .fini = rm_tmp);

Test(state, put_lookup_by_partition_and_any)
{
    state_store_t *st = open_at("db");
    state_batch_t *b = state_batch_new();
    cr_assert_eq(state_batch_put(b, "clicks", 3, "alice", 5, "A3", 2), 0);
    cr_assert_eq(state_batch_put(b, "clicks", 1, "bob", 3, "B1", 2), 0);
    cr_assert_eq(state_batch_put(b, "orders", 3, "alice", 5, "O3", 2), 0);
    cr_assert_eq(state_batch_count(b), 3);
    commit(st, b);
    cr_assert_eq(state_batch_count(b), 0);

    cr_assert(lookup_eq(st, "clicks", 3, "alice", "A3"));
    cr_assert(lookup_eq(st, "clicks", -1, "alice", "A3"));
    cr_assert(lookup_eq(st, "clicks", 1, "alice", NULL));   /* wrong partition */
    cr_assert(lookup_eq(st, "clicks", -1, "bob", "B1"));
    cr_assert(lookup_eq(st, "orders", -1, "alice", "O3"));
    cr_assert(lookup_eq(st, "orders", -1, "bob", NULL));
    cr_assert(lookup_eq(st, "nosuchview", -1, "bob", NULL));

    /* delete, and an empty entity key / empty value are legal */
    cr_assert_eq(state_batch_delete(b, "clicks", 3, "alice", 5), 0);
    cr_assert_eq(state_batch_put(b, "clicks", 0, "", 0, "", 0), 0);
    commit(st, b);
    cr_assert(lookup_eq(st, "clicks", -1, "alice", NULL));
    cr_assert(lookup_eq(st, "clicks", 3, "alice", NULL));
    cr_assert(lookup_eq(st, "clicks", -1, "", ""));
    cr_assert_eq(state_commit_count(st), 2);
    state_stats_t ss;
    state_stats(st, &ss);
    cr_assert_eq(ss.commits, 2);
    cr_assert_eq(ss.commit_ops, 5);
    cr_assert_eq(ss.commit_failures, 0);
    cr_assert(ss.commit_bytes > 0 && ss.commit_us_total >= ss.commit_us_last);
    cr_assert(ss.memtable_bytes > 0);

    /* bad arguments */
    cr_assert_eq(state_batch_put(b, "clicks", -1, "x", 1, "v", 1), SL_EINVAL);
    cr_assert_eq(state_batch_put(b, "", 0, "x", 1, "v", 1), SL_EINVAL);
    cr_assert_eq(state_batch_progress(b, "", 0, 1, 1), SL_EINVAL);
    cr_assert_eq(state_batch_count(b), 0);

    /* long keys take the heap path */
    char big[600];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cr_assert_eq(state_batch_put(b, "clicks", 7, big, strlen(big), "big", 3), 0);
    commit(st, b);
    cr_assert(lookup_eq(st, "clicks", -1, big, "big"));
    cr_assert(lookup_eq(st, "clicks", 7, big, "big"));

    /* put_known updates a state without rewriting its index row */
    cr_assert_eq(state_batch_put_known(b, "clicks", 1, "bob", 3, "B1v2", 4), 0);
    commit(st, b);
    cr_assert(lookup_eq(st, "clicks", -1, "bob", "B1v2"));
    cr_assert(lookup_eq(st, "clicks", 1, "bob", "B1v2"));
    cr_assert_eq(state_batch_put_known(b, "clicks", 1, "bob", 3, "B1", 2), 0);
    commit(st, b);

    state_batch_free(b);
    state_close(st);
    st = open_at("db");
    cr_assert(lookup_eq(st, "clicks", -1, "bob", "B1"));
    cr_assert(lookup_eq(st, "orders", 3, "alice", "O3"));
    state_close(st);
}

Test(state, dir_created_0700)
{
    state_store_t *st = open_at("a/b/state");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/a/b/state", tmpdir);
    struct stat sb;
    cr_assert_eq(stat(dir, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0700);
    cr_assert_str_eq(state_dir(st), dir);
    state_close(st);
}

Test(state, progress_round_trip)
{
    state_store_t *st = open_at("db");
    state_batch_t *b = state_batch_new();
    int64_t off, wm;
    cr_assert_eq(state_offset_get(st, "events", 0, &off, &wm), SL_ENOTFOUND);
    cr_assert_eq(state_batch_progress(b, "events", 0, 100, 5000), 0);
    cr_assert_eq(state_batch_progress(b, "events", 1, 7, -3), 0);
    cr_assert_eq(state_batch_progress(b, "other.topic", 0, 1LL << 40, INT64_MIN), 0);
    commit(st, b);
    cr_assert_eq(state_batch_progress(b, "events", 0, 150, 6000), 0);   /* overwrite */
    commit(st, b);

    for (int round = 0; round < 2; round++) {
        cr_assert_eq(state_offset_get(st, "events", 0, &off, &wm), 0);
        cr_assert_eq(off, 150);
        cr_assert_eq(wm, 6000);
        cr_assert_eq(state_offset_get(st, "events", 1, &off, &wm), 0);
        cr_assert_eq(off, 7);
        cr_assert_eq(wm, -3);
        cr_assert_eq(state_offset_get(st, "other.topic", 0, &off, &wm), 0);
        cr_assert_eq(off, 1LL << 40);
        cr_assert_eq(wm, INT64_MIN);
        cr_assert_eq(state_offset_get(st, "events", 2, &off, &wm), SL_ENOTFOUND);
        state_partition_progress_t pp[8];
        cr_assert_eq(state_progress(st, pp, 8), 3);
        cr_assert_eq(state_progress(st, pp, 1), 3);   /* count even when truncated */
        state_close(st);
        st = open_at("db");
    }
    state_close(st);
    state_batch_free(b);
}

Test(state, meta_get_put)
{
    state_store_t *st = open_at("db");
    sl_buf_t out = SL_BUF_INIT;
    cr_assert_eq(state_meta_get(st, STATE_META_SCHEMA_FINGERPRINT, &out), SL_ENOTFOUND);
    cr_assert_eq(state_meta_put(st, STATE_META_SCHEMA_FINGERPRINT, "abc123", 6), 0);
    state_close(st);
    st = open_at("db");
    cr_assert_eq(state_meta_get(st, STATE_META_SCHEMA_FINGERPRINT, &out), 0);
    cr_assert_eq(out.len, 6);
    cr_assert_eq(memcmp(out.data, "abc123", 6), 0);
    sl_buf_free(&out);
    state_close(st);
}

/* View fingerprints: what state_view_fp_put writes, state_view_fp_get reads
 * back (also after a reopen), as the raw meta text the older code wrote by
 * hand ("%016llx", "backfill-pending:%016llx"); other text is INVALID. */
Test(state, view_fingerprint_round_trip)
{
    state_store_t *st = open_at("db");
    state_view_fp_t kind;
    uint64_t fp = 1;
    char text[64];
    cr_assert_eq(state_view_fp_get(st, "v", &kind, &fp, text, sizeof text), 0);
    cr_assert_eq(kind, STATE_VIEW_FP_ABSENT);
    cr_assert_eq(fp, 0);
    const uint64_t vals[] = { 0, 1, 0x00ff00ff00ff00ffULL, 0xfedcba9876543210ULL, UINT64_MAX };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        char want[64];
        for (int pending = 0; pending <= 1; pending++) {
            cr_assert_eq(state_view_fp_put(st, "v", pending ? STATE_VIEW_FP_PENDING : STATE_VIEW_FP_BUILT,
                                           vals[i]), 0);
            state_close(st);
            st = open_at("db");
            cr_assert_eq(state_view_fp_get(st, "v", &kind, &fp, text, sizeof text), 0);
            cr_assert_eq(kind, pending ? STATE_VIEW_FP_PENDING : STATE_VIEW_FP_BUILT);
            cr_assert_eq(fp, vals[i]);
            snprintf(want, sizeof want, "%s%016llx", pending ? "backfill-pending:" : "",
                     (unsigned long long)vals[i]);
            cr_assert_str_eq(text, want);
            sl_buf_t raw = SL_BUF_INIT;
            cr_assert_eq(state_meta_get(st, "view.v.fingerprint", &raw), 0);
            cr_assert(raw.len == strlen(want) && memcmp(raw.data, want, raw.len) == 0);
            sl_buf_free(&raw);
        }
    }
    const char *bad[] = { "", "abc", "0123456789abcdeF", "0123456789abcdef0", "backfill-pending:",
                          "backfill-pending:xyz", "pending:0123456789abcdef" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(state_meta_put(st, "view.v.fingerprint", bad[i], strlen(bad[i])), 0);
        cr_assert_eq(state_view_fp_get(st, "v", &kind, &fp, text, sizeof text), 0);
        cr_assert_eq(kind, STATE_VIEW_FP_INVALID, "'%s'", bad[i]);
        cr_assert_str_eq(text, bad[i]);
    }
    cr_assert_eq(state_view_fp_put(st, "v", STATE_VIEW_FP_ABSENT, 1), SL_EINVAL);
    state_close(st);
}

/* A batch that is never committed (or cleared) leaves nothing behind. */
Test(state, uncommitted_batch_leaves_nothing)
{
    state_store_t *st = open_at("db");
    state_batch_t *b = state_batch_new();
    state_batch_put(b, "v", 0, "k1", 2, "one", 3);
    state_batch_progress(b, "t", 0, 10, 1);
    commit(st, b);
    state_batch_put(b, "v", 0, "k1", 2, "two", 3);
    state_batch_put(b, "v", 0, "k2", 2, "two", 3);
    state_batch_put(b, "newview", 0, "k2", 2, "x", 1);
    state_batch_progress(b, "t", 0, 20, 2);
    state_close(st);                     /* without commit */
    st = open_at("db");
    cr_assert(lookup_eq(st, "v", -1, "k1", "one"));
    cr_assert(lookup_eq(st, "v", -1, "k2", NULL));
    cr_assert(lookup_eq(st, "newview", -1, "k2", NULL));
    int64_t off;
    cr_assert_eq(state_offset_get(st, "t", 0, &off, NULL), 0);
    cr_assert_eq(off, 10);
    state_batch_clear(b);
    commit(st, b);                       /* an empty commit writes nothing */
    cr_assert(lookup_eq(st, "v", -1, "k2", NULL));
    state_batch_free(b);
    state_close(st);
}

Test(state, read_only_refuses_writes)
{
    state_store_t *st = open_at("db");
    state_batch_t *b = state_batch_new();
    state_batch_put(b, "v", 2, "k", 1, "val", 3);
    commit(st, b);
    state_close(st);
    char dir[512], err[256] = "";
    snprintf(dir, sizeof dir, "%s/db", tmpdir);
    state_options_t o = { .read_only = true };
    cr_assert_eq(state_open(dir, &o, &st, err, sizeof err), 0, "%s", err);
    cr_assert(lookup_eq(st, "v", -1, "k", "val"));
    state_batch_put(b, "v", 2, "k", 1, "new", 3);
    cr_assert_eq(state_batch_commit(st, b, err, sizeof err), SL_EINVAL);
    state_close(st);
    snprintf(dir, sizeof dir, "%s/absent", tmpdir);
    cr_assert_eq(state_open(dir, &o, &st, err, sizeof err), SL_ENOTFOUND);
    state_batch_free(b);
}

/* A second process opening the same dir gets SL_EBUSY naming our pid. */
Test(state, second_process_is_refused)
{
    state_store_t *st = open_at("db");
    int pipefd[2];
    cr_assert_eq(pipe(pipefd), 0);
    pid_t child = fork();
    cr_assert(child >= 0);
    if (child == 0) {
        char dir[512], err[256] = "";
        snprintf(dir, sizeof dir, "%s/db", tmpdir);
        state_store_t *st2 = NULL;
        int rc = state_open(dir, NULL, &st2, err, sizeof err);
        char msg[300];
        int n = snprintf(msg, sizeof msg, "%d|%s", rc, err);
        if (write(pipefd[1], msg, (size_t)n) != n) _exit(3);
        _exit(0);
    }
    close(pipefd[1]);
    char msg[300] = "";
    ssize_t n = read(pipefd[0], msg, sizeof msg - 1);
    cr_assert(n > 0);
    int status;
    waitpid(child, &status, 0);
    char want[700];
    snprintf(want, sizeof want, "%d|state dir %s/db is in use by pid %ld", SL_EBUSY, tmpdir,
             (long)getpid());
    cr_assert_str_eq(msg, want);
    char err[256];
    char dir[512];
    snprintf(dir, sizeof dir, "%s/db", tmpdir);
    cr_assert_eq(state_dir_check_unlocked(dir, err, sizeof err), SL_EBUSY);
    state_close(st);
    cr_assert_eq(state_dir_check_unlocked(dir, err, sizeof err), 0);
    st = open_at("db");                  /* free again after close */
    state_close(st);
}

/* ---- random operations against an in-memory oracle ------------------------ */

#define NV 3
#define NP 4
#define NE 40
static const char *vnames[NV] = { "v_alpha", "v_beta", "a-much-longer-view-name.with.dots" };

typedef struct oracle {
    char val[NV][NP][NE][24];   /* "" = absent */
} oracle_t;

typedef struct cmp_ctx {
    const oracle_t *o;
    int view;
    int seen;
    bool bad;
    char why[200];
} cmp_ctx_t;

static int cmp_cb(void *arg, int32_t part, const void *key, size_t klen, const void *val,
                  size_t vlen)
{
    cmp_ctx_t *c = arg;
    int e;
    char kb[32];
    if (klen >= sizeof kb || part < 0 || part >= NP) goto bad;
    memcpy(kb, key, klen);
    kb[klen] = '\0';
    if (sscanf(kb, "e%d", &e) != 1 || e < 0 || e >= NE) goto bad;
    const char *want = c->o->val[c->view][part][e];
    if (!*want || strlen(want) != vlen || memcmp(want, val, vlen) != 0) goto bad;
    c->seen++;
    return 0;
bad:
    c->bad = true;
    snprintf(c->why, sizeof c->why, "view %d part %d key %.*s", c->view, part, (int)klen,
             (const char *)key);
    return 1;
}

static void check_against(state_store_t *st, const oracle_t *o)
{
    for (int v = 0; v < NV; v++) {
        int want = 0;
        for (int p = 0; p < NP; p++)
            for (int e = 0; e < NE; e++) want += o->val[v][p][e][0] != 0;
        cmp_ctx_t c = { .o = o, .view = v };
        cr_assert_eq(state_iterate(st, vnames[v], 0, -1, cmp_cb, &c), 0, "%s", c.why);
        cr_assert_eq(c.seen, want, "view %d: iterated %d, oracle %d", v, c.seen, want);
        /* per-partition iteration covers the same, partition by partition */
        int sum = 0;
        for (int p = 0; p < NP; p++) {
            cmp_ctx_t cp = { .o = o, .view = v };
            cr_assert_eq(state_iterate(st, vnames[v], 0, p, cmp_cb, &cp), 0);
            sum += cp.seen;
        }
        cr_assert_eq(sum, want);
        /* point lookups, by partition and by -1 (entities live in one partition) */
        for (int e = 0; e < NE; e++) {
            char key[16];
            snprintf(key, sizeof key, "e%d", e);
            const char *any = NULL;
            for (int p = 0; p < NP; p++) {
                const char *w = o->val[v][p][e][0] ? o->val[v][p][e] : NULL;
                if (w) any = w;
                cr_assert(lookup_eq(st, vnames[v], p, key, w), "v%d p%d %s", v, p, key);
            }
            cr_assert(lookup_eq(st, vnames[v], -1, key, any), "v%d -1 %s", v, key);
        }
    }
}

/* Entity e of view v lives in partition (e + v) % NP, as with a keyed topic. */
static void random_ops(state_store_t *st, oracle_t *o, unsigned *seed, int rounds)
{
    state_batch_t *b = state_batch_new();
    oracle_t pending = *o;
    for (int r = 0; r < rounds; r++) {
        int v = rand_r(seed) % NV, e = rand_r(seed) % NE, p = (e + v) % NP;
        char key[16];
        snprintf(key, sizeof key, "e%d", e);
        if (rand_r(seed) % 4 == 0) {
            cr_assert_eq(state_batch_delete(b, vnames[v], p, key, strlen(key)), 0);
            pending.val[v][p][e][0] = '\0';
        } else {
            snprintf(pending.val[v][p][e], sizeof pending.val[v][p][e], "r%d-%u", r,
                     (unsigned)rand_r(seed));
            cr_assert_eq(state_batch_put(b, vnames[v], p, key, strlen(key),
                                         pending.val[v][p][e],
                                         strlen(pending.val[v][p][e])), 0);
        }
        if (rand_r(seed) % 16 == 0) {
            commit(st, b);
            *o = pending;
        }
    }
    commit(st, b);
    *o = pending;
    state_batch_free(b);
}

Test(state, random_ops_match_oracle_and_checkpoint)
{
    static oracle_t o;
    memset(&o, 0, sizeof o);
    unsigned seed = 12345;
    state_store_t *st = open_at("db");
    random_ops(st, &o, &seed, 3000);
    check_against(st, &o);

    char cp[512], err[512] = "";
    snprintf(cp, sizeof cp, "%s/cp", tmpdir);
    cr_assert_eq(state_checkpoint(st, cp, err, sizeof err), 0, "%s", err);
    cr_assert_eq(state_checkpoint(st, cp, err, sizeof err), SL_EEXISTS);
    static oracle_t at_cp;
    at_cp = o;
    random_ops(st, &o, &seed, 500);     /* the original moves on */
    check_against(st, &o);
    state_close(st);

    state_options_t ro = { .read_only = true };
    cr_assert_eq(state_open(cp, &ro, &st, err, sizeof err), 0, "%s", err);
    check_against(st, &at_cp);
    state_close(st);
    /* and the checkpoint opens read-write as a store of its own */
    st = open_at("cp");
    check_against(st, &at_cp);
    state_close(st);
}

Test(state, partition_drop_removes_states_index_and_progress)
{
    static oracle_t o;
    memset(&o, 0, sizeof o);
    unsigned seed = 777;
    state_store_t *st = open_at("db");
    random_ops(st, &o, &seed, 2000);
    state_batch_t *b = state_batch_new();
    state_batch_progress(b, "topic", 2, 99, 9);
    state_batch_progress(b, "topic", 1, 42, 4);
    commit(st, b);
    char err[256];
    const char *views[] = { vnames[0], vnames[2], "never-written" };
    cr_assert_eq(state_partition_drop(st, "topic", 2, views, 3, err, sizeof err), 0, "%s", err);
    for (int e = 0; e < NE; e++) {
        o.val[0][2][e][0] = '\0';
        o.val[2][2][e][0] = '\0';
    }
    check_against(st, &o);
    int64_t off;
    cr_assert_eq(state_offset_get(st, "topic", 2, &off, NULL), SL_ENOTFOUND);
    cr_assert_eq(state_offset_get(st, "topic", 1, &off, NULL), 0);
    cr_assert_eq(off, 42);
    state_close(st);
    st = open_at("db");
    check_against(st, &o);
    cr_assert_eq(state_offset_get(st, "topic", 2, &off, NULL), SL_ENOTFOUND);
    state_batch_free(b);
    state_close(st);
}

Test(state, view_versions_side_by_side)
{
    state_store_t *st = open_at("db");
    state_batch_t *b = state_batch_new();
    uint32_t ver;
    cr_assert_eq(state_view_version_get(st, "v", &ver), 0);
    cr_assert_eq(ver, 1);
    state_batch_put(b, "v", 0, "k", 1, "old", 3);
    state_batch_put_version(b, "v", 2, 0, "k", 1, "new", 3);
    state_batch_put_version(b, "v", 2, 1, "only-new", 8, "n2", 2);
    commit(st, b);
    cr_assert(lookup_eq(st, "v", -1, "k", "old"));
    cr_assert(lookup_eq(st, "v", -1, "only-new", NULL));
    sl_buf_t out = SL_BUF_INIT;
    cr_assert_eq(state_lookup_version(st, "v", 2, -1, "only-new", 8, &out), 0);
    cr_assert_eq(out.len, 2);
    char err[256];
    cr_assert_eq(state_view_version_drop(st, "v", 1, err, sizeof err), SL_EBUSY);
    cr_assert_eq(state_view_version_set(st, "v", 2, err, sizeof err), 0, "%s", err);
    cr_assert(lookup_eq(st, "v", -1, "k", "new"));
    cr_assert(lookup_eq(st, "v", 1, "only-new", "n2"));
    cr_assert_eq(state_view_version_drop(st, "v", 1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(state_lookup_version(st, "v", 1, -1, "k", 1, &out), SL_ENOTFOUND);
    state_close(st);
    st = open_at("db");
    cr_assert_eq(state_view_version_get(st, "v", &ver), 0);
    cr_assert_eq(ver, 2);
    cr_assert(lookup_eq(st, "v", 0, "k", "new"));
    /* a brand-new view can get a version before its first state */
    cr_assert_eq(state_view_version_set(st, "fresh", 5, err, sizeof err), 0);
    state_batch_put(b, "fresh", 0, "x", 1, "y", 1);
    state_batch_put(b, "v2", 0, "x", 1, "z", 1);
    commit(st, b);
    state_close(st);
    st = open_at("db");
    cr_assert_eq(state_lookup_version(st, "fresh", 5, 0, "x", 1, &out), 0);
    cr_assert(lookup_eq(st, "v2", -1, "x", "z"));
    cr_assert(lookup_eq(st, "v", -1, "k", "new"));
    sl_buf_free(&out);
    state_batch_free(b);
    state_close(st);
}

/* ---- concurrent readers ---------------------------------------------------- */

#define CR_ENT 200
typedef struct rd_ctx {
    state_store_t *st;
    volatile int *stop;
    atomic_long reads;                /* read by the writer while the reader runs */
    int failures;
    char why[200];
} rd_ctx_t;

/* Every committed batch i writes value i to all CR_ENT entities and progress
 * next_offset i+1: a reader must never see a value newer than... anything but
 * a whole number, decreasing values, or a state from a batch not yet visible. */
static void *reader(void *arg)
{
    rd_ctx_t *c = arg;
    sl_buf_t out = SL_BUF_INIT;
    long last[CR_ENT];
    for (int i = 0; i < CR_ENT; i++) last[i] = -1;
    while (!*c->stop) {
        for (int i = 0; i < CR_ENT; i++) {
            char key[16];
            snprintf(key, sizeof key, "ent%d", i);
            int64_t before = -1;
            state_offset_get(c->st, "t", 0, &before, NULL);
            int rc = state_lookup(c->st, "cv", (i % 2) ? -1 : i % 4, key, strlen(key), &out);
            c->reads++;
            if (rc == SL_ENOTFOUND) {
                if (last[i] >= 0) { c->failures++; snprintf(c->why, sizeof c->why, "vanished"); }
                continue;
            }
            char txt[32];
            if (rc != 0 || out.len == 0 || out.len >= sizeof txt) { c->failures++; continue; }
            memcpy(txt, out.data, out.len);
            txt[out.len] = '\0';
            long v = atol(txt);
            if (v < last[i] || (before >= 0 && v + 1 < before)) {
                c->failures++;
                snprintf(c->why, sizeof c->why, "ent%d: %ld after %ld (offset %lld)", i, v,
                         last[i], (long long)before);
            }
            last[i] = v;
        }
    }
    sl_buf_free(&out);
    return NULL;
}

Test(state, concurrent_readers_during_writes)
{
    state_store_t *st = open_at("db");
    volatile int stop = 0;
    rd_ctx_t ctx[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        ctx[i] = (rd_ctx_t){ .st = st, .stop = &stop };
        pthread_create(&th[i], NULL, reader, &ctx[i]);
    }
    state_batch_t *b = state_batch_new();
    for (int n = 0; n < 150; n++) {
        for (int i = 0; i < CR_ENT; i++) {
            char key[16], val[16];
            snprintf(key, sizeof key, "ent%d", i);
            snprintf(val, sizeof val, "%d", n);
            state_batch_put(b, "cv", i % 4, key, strlen(key), val, strlen(val));
        }
        state_batch_progress(b, "t", 0, n + 1, n);
        commit(st, b);
    }
    /* Every reader read at least once before the stop (up to 60 s: on a
     * loaded machine a reader thread may not have run during the commits). */
    for (int i = 0, waited_ms = 0; i < 3 && waited_ms < 60000; waited_ms++) {
        if (atomic_load(&ctx[i].reads) > 0) { i++; continue; }
        usleep(1000);
    }
    stop = 1;
    long reads = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(ctx[i].failures, 0, "reader %d: %s", i, ctx[i].why);
        cr_assert_gt(atomic_load(&ctx[i].reads), 0, "reader %d never read", i);
        reads += ctx[i].reads;
    }
    cr_assert(reads > 0);
    cr_assert(lookup_eq(st, "cv", -1, "ent7", "149"));
    state_batch_free(b);
    state_close(st);
}

/* ---- crash consistency: kill -9 a committing child ------------------------- */

/* The child commits batch n: all entities get value n, progress next_offset
 * n + 1. After SIGKILL at a random instant the store must hold one committed
 * prefix: every entity equals next_offset - 1. committed_fd (-1: none) gets
 * one byte after the child's first commit. */
static void crash_child(const char *dir, int committed_fd)
{
    state_store_t *st = NULL;
    char err[256];
    if (state_open(dir, NULL, &st, err, sizeof err)) _exit(2);
    int64_t next = 0;
    state_offset_get(st, "t", 0, &next, NULL);
    state_batch_t *b = state_batch_new();
    for (int64_t n = next;; n++) {
        for (int i = 0; i < 300; i++) {
            char key[16], val[32];
            snprintf(key, sizeof key, "k%d", i);
            snprintf(val, sizeof val, "%lld", (long long)n);
            state_batch_put(b, "crash", i % 3, key, strlen(key), val, strlen(val));
        }
        state_batch_progress(b, "t", 0, n + 1, n * 10);
        if (state_batch_commit(st, b, err, sizeof err)) _exit(3);
        if (committed_fd >= 0 && n == next) {
            if (write(committed_fd, "c", 1) != 1) _exit(4);
        }
    }
}

/* Waits (up to 120 s) for the byte crash_child writes after its first
 * commit. Returns false if none came (the child died or hung). */
static bool wait_first_commit(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    char c;
    return poll(&pfd, 1, 120000) == 1 && read(fd, &c, 1) == 1;
}

Test(state, kill9_mid_commit_keeps_committed_prefix, .timeout = 300)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/crash", tmpdir);
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    int64_t prev = 0;
    /* Round 0 kills at a random instant from the child's start (it may land
     * in the open); the other rounds wait for the child's first commit of
     * the round, then a random 0-300 ms, so that the store must have moved
     * on in each of them (a fixed 150-450 ms from the start could pass
     * without any commit on a loaded machine). */
    for (int round = 0; round < 5; round++) {
        int pipefd[2];
        cr_assert_eq(pipe(pipefd), 0);
        pid_t child = fork();
        cr_assert(child >= 0);
        if (child == 0) {
            close(pipefd[0]);
            crash_child(dir, pipefd[1]);
        }
        close(pipefd[1]);
        if (round == 0) {
            usleep(150000 + (useconds_t)(rand() % 300000));
        } else {
            cr_assert(wait_first_commit(pipefd[0]), "round %d: the child never committed", round);
            usleep((useconds_t)(rand() % 300000));
        }
        close(pipefd[0]);
        kill(child, SIGKILL);
        int status;
        waitpid(child, &status, 0);
        cr_assert(WIFSIGNALED(status), "child exited early: %d", status);

        state_store_t *st = NULL;
        char err[256];
        cr_assert_eq(state_open(dir, NULL, &st, err, sizeof err), 0, "%s", err);
        int64_t next = -1, wm = -1;
        if (state_offset_get(st, "t", 0, &next, &wm) == SL_ENOTFOUND) {
            next = 0;
        } else {
            cr_assert_eq(wm, (next - 1) * 10);
        }
        cr_assert(next >= prev, "progress went back: %lld < %lld", (long long)next,
                  (long long)prev);
        if (round > 0)
            cr_assert_gt(next, prev, "round %d: the child committed, the store did not move on (seed %u)",
                         round, seed);
        prev = next;
        for (int i = 0; i < 300; i++) {
            char key[16], val[32];
            snprintf(key, sizeof key, "k%d", i);
            snprintf(val, sizeof val, "%lld", (long long)(next - 1));
            cr_assert(lookup_eq(st, "crash", i % 3, key, next > 0 ? val : NULL),
                      "round %d k%d != %s", round, i, val);
        }
        state_close(st);
    }
    cr_assert(prev > 0, "the child never committed");
}

/* Several operations on one key in one batch: the last one wins, whatever
 * order the commit writes them in. An entity written from two partitions
 * keeps both states; -1 finds the one written last. */
Test(state, same_key_ordering_and_multi_partition_entity)
{
    state_store_t *st = open_at("db");
    state_batch_t *b = state_batch_new();
    state_batch_put(b, "v", 0, "a", 1, "1", 1);
    state_batch_delete(b, "v", 0, "a", 1);
    state_batch_delete(b, "v", 0, "b", 1);
    state_batch_put(b, "v", 0, "b", 1, "2", 1);
    state_batch_put(b, "v", 0, "c", 1, "x", 1);
    state_batch_put(b, "v", 0, "c", 1, "y", 1);
    /* z: first partition 5, then 1 (lower partition sorts first) */
    state_batch_put(b, "v", 5, "z", 1, "z5", 2);
    state_batch_put(b, "v", 1, "z", 1, "z1", 2);
    commit(st, b);
    cr_assert(lookup_eq(st, "v", -1, "a", NULL));
    cr_assert(lookup_eq(st, "v", -1, "b", "2"));
    cr_assert(lookup_eq(st, "v", -1, "c", "y"));
    cr_assert(lookup_eq(st, "v", -1, "z", "z1"));
    cr_assert(lookup_eq(st, "v", 5, "z", "z5"));
    state_batch_put(b, "v", 5, "z", 1, "z5b", 3);
    commit(st, b);
    cr_assert(lookup_eq(st, "v", -1, "z", "z5b"));

    /* dropping partition 1 keeps the index row that points at 5 */
    char err[256];
    const char *views[] = { "v" };
    cr_assert_eq(state_partition_drop(st, "t", 1, views, 1, err, sizeof err), 0, "%s", err);
    cr_assert(lookup_eq(st, "v", 1, "z", NULL));
    cr_assert(lookup_eq(st, "v", -1, "z", "z5b"));
    cr_assert_eq(state_partition_drop(st, "t", 5, views, 1, err, sizeof err), 0, "%s", err);
    cr_assert(lookup_eq(st, "v", -1, "z", NULL));
    cr_assert(lookup_eq(st, "v", -1, "b", "2"));          /* partition 0 untouched */
    state_batch_free(b);
    state_close(st);
}

/* A follower in this process reads the store a child process owns and keeps
 * committing: after every refresh it sees whole batches only (every entity
 * equals next_offset - 1), and progress moves forward. */
Test(state, follower_sees_whole_commits_of_another_process, .timeout = 120)
{
    char dir[512], scratch[512], err[512] = "";
    snprintf(dir, sizeof dir, "%s/owned", tmpdir);
    snprintf(scratch, sizeof scratch, "%s/follower", tmpdir);
    state_store_t *own = open_at("owned");       /* create it with a first commit */
    state_batch_t *b = state_batch_new();
    state_batch_put(b, "crash", 0, "k0", 2, "-1", 2);
    commit(own, b);
    state_close(own);
    state_batch_free(b);

    pid_t child = fork();
    cr_assert(child >= 0);
    if (child == 0) crash_child(dir, -1);        /* commits forever */
    usleep(200000);
    state_store_t *fol = NULL;
    cr_assert_eq(state_open_follower(dir, scratch, NULL, &fol, err, sizeof err), 0, "%s", err);
    int64_t prev = -1;
    int advanced = 0;
    /* At least 25 refreshes, and on until three advances were seen (up to
     * 60 s: a loaded machine may run the child slowly). */
    for (int round = 0; round < 25 || (advanced < 3 && round < 1500); round++) {
        usleep(40000);
        cr_assert_eq(state_follow_refresh(fol, err, sizeof err), 0, "%s", err);
        int64_t next = 0;
        if (state_offset_get(fol, "t", 0, &next, NULL) != 0) continue;
        cr_assert(next >= prev);
        advanced += next > prev;
        prev = next;
        char want[32];
        snprintf(want, sizeof want, "%lld", (long long)(next - 1));
        for (int i = 0; i < 300; i++) {
            char key[16];
            snprintf(key, sizeof key, "k%d", i);
            cr_assert(lookup_eq(fol, "crash", -1, key, want), "round %d k%d != %s", round, i,
                      want);
        }
    }
    state_batch_t *wb = state_batch_new();
    state_batch_put(wb, "crash", 0, "x", 1, "y", 1);
    cr_assert_eq(state_batch_commit(fol, wb, err, sizeof err), SL_EINVAL);
    state_batch_free(wb);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* The owner is gone: a refresh with nothing new keeps the change counter
     * (readers' caches stay valid) ... */
    cr_assert_eq(state_follow_refresh(fol, err, sizeof err), 0, "%s", err);
    uint64_t idle = state_commit_count(fol);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(state_follow_refresh(fol, err, sizeof err), 0, "%s", err);
    cr_assert_eq(state_commit_count(fol), idle, "an idle refresh moved the commit counter");
    /* ... and one that catches up with a new commit moves it. */
    state_store_t *again = open_at("owned");
    state_batch_t *nb = state_batch_new();
    state_batch_put(nb, "crash", 0, "k0", 2, "new", 3);
    state_batch_progress(nb, "t", 0, 1 << 30, 0);
    commit(again, nb);
    state_batch_free(nb);
    cr_assert_eq(state_follow_refresh(fol, err, sizeof err), 0, "%s", err);
    cr_assert_gt(state_commit_count(fol), idle, "a refresh that caught up did not move the counter");
    cr_assert(lookup_eq(fol, "crash", -1, "k0", "new"));
    state_close(again);
    state_close(fol);
    cr_assert(advanced >= 3, "the follower saw only %d advances", advanced);
}

/* Fault injection: the disk "fills" (RLIMIT_FSIZE) mid-run. The failing
 * commit returns SL_ESTATE, the in-memory progress stays at the last good
 * commit, and after a restart the store holds one consistent prefix: the
 * last good commit, or the failed one whole if its WAL record was complete
 * (states and progress travel together, so either is exact). */
Test(state, disk_full_commit_fails_cleanly, .timeout = 120)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/full", tmpdir);
    int pipefd[2];
    cr_assert_eq(pipe(pipefd), 0);
    pid_t child = fork();
    cr_assert(child >= 0);
    if (child == 0) {
        signal(SIGXFSZ, SIG_IGN);
        state_store_t *st = NULL;
        char err[512];
        if (state_open(dir, NULL, &st, err, sizeof err)) _exit(2);
        struct rlimit rl = { 4u << 20, 4u << 20 };       /* no file may pass 4 MiB */
        if (setrlimit(RLIMIT_FSIZE, &rl)) _exit(3);
        state_batch_t *b = state_batch_new();
        char val[256];
        memset(val, 'v', sizeof val);
        long long last_ok = -1, n;
        int failed_rc = 0;
        for (n = 0; n < 100000; n++) {
            for (int i = 0; i < 200; i++) {
                char key[16];
                snprintf(key, sizeof key, "k%d", i);
                int vl = snprintf(val, sizeof val, "%lld", n);
                val[vl] = 'v';                            /* pad to 256 bytes */
                state_batch_put(b, "full", i % 2, key, strlen(key), val, sizeof val);
            }
            state_batch_progress(b, "t", 0, n + 1, n);
            int rc = state_batch_commit(st, b, err, sizeof err);
            if (rc) { failed_rc = rc; break; }
            last_ok = n;
        }
        int64_t off = -1;
        state_offset_get(st, "t", 0, &off, NULL);
        char msg[128];
        int len = snprintf(msg, sizeof msg, "%d %lld %lld", failed_rc, last_ok, (long long)off);
        if (write(pipefd[1], msg, (size_t)len) != len) _exit(4);
        _exit(0);                                         /* no clean close: like a crash */
    }
    close(pipefd[1]);
    char msg[128] = "";
    cr_assert(read(pipefd[0], msg, sizeof msg - 1) > 0);
    int status;
    waitpid(child, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    int failed_rc;
    long long last_ok, mem_off;
    cr_assert_eq(sscanf(msg, "%d %lld %lld", &failed_rc, &last_ok, &mem_off), 3);
    cr_assert_eq(failed_rc, SL_ESTATE, "%s", msg);
    cr_assert(last_ok >= 10, "the limit struck too early: %s", msg);
    cr_assert_eq(mem_off, last_ok + 1, "in-memory progress moved on a failed commit: %s", msg);

    state_store_t *st = open_at("full");
    int64_t next;
    cr_assert_eq(state_offset_get(st, "t", 0, &next, NULL), 0);
    cr_assert(next == last_ok + 1 || next == last_ok + 2, "next %lld, last ok %lld",
              (long long)next, last_ok);
    sl_buf_t out = SL_BUF_INIT;
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)next - 1);
    for (int i = 0; i < 200; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(state_lookup(st, "full", -1, key, strlen(key), &out), 0);
        cr_assert_eq(out.len, 256);
        cr_assert_eq(strncmp((const char *)out.data, want, strlen(want)), 0);
        cr_assert_eq(out.data[strlen(want)], 'v', "k%d from another batch", i);
    }
    sl_buf_free(&out);
    /* and the store takes new commits again */
    state_batch_t *b = state_batch_new();
    state_batch_progress(b, "t", 0, next + 1, 0);
    commit(st, b);
    state_batch_free(b);
    state_close(st);
}
