/*
 * test_snapshot.c — snapshots: create/restore round trips against an
 * in-memory oracle, restore-then-resume equals an uninterrupted run, manifest
 * corruption of every kind is refused with a clear error, retention keeps
 * exactly N, restore refuses busy or non-empty state dirs.
 */
#include <criterion/criterion.h>

#include "snapshot.h"
#include "state.h"
#include "sl_err.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp[256];

static void mk_tmp(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/sluice-snap-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
}

static void rm_tmp(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

TestSuite(snapshot, .init = mk_tmp, .fini = rm_tmp);

static const char *path(const char *sub)
{
    static char bufs[8][512];
    static int i;
    char *p = bufs[i++ % 8];
    snprintf(p, 512, "%s/%s", tmp, sub);
    return p;
}

static state_store_t *open_dir(const char *dir)
{
    state_store_t *st = NULL;
    char err[512] = "";
    int rc = state_open(dir, NULL, &st, err, sizeof err);
    cr_assert_eq(rc, 0, "open %s: %s", dir, err);
    return st;
}

#define NK 120
#define NPART 4
typedef struct model {
    char val[NK][32];        /* "" = absent; key "e<i>" lives in partition i % NPART */
    int64_t next[NPART];
} model_t;

/* Applies `n` random changes to st and m, committing every 10 with progress. */
static void apply_random(state_store_t *st, model_t *m, unsigned *seed, int n)
{
    state_batch_t *b = state_batch_new();
    char err[256];
    for (int r = 0; r < n; r++) {
        int k = rand_r(seed) % NK, p = k % NPART;
        char key[16];
        snprintf(key, sizeof key, "e%d", k);
        if (rand_r(seed) % 5 == 0) {
            state_batch_delete(b, "view", p, key, strlen(key));
            m->val[k][0] = '\0';
        } else {
            snprintf(m->val[k], sizeof m->val[k], "v%u", (unsigned)rand_r(seed));
            state_batch_put(b, "view", p, key, strlen(key), m->val[k], strlen(m->val[k]));
        }
        m->next[p]++;
        if (r % 10 == 9 || r == n - 1) {
            for (int q = 0; q < NPART; q++)
                state_batch_progress(b, "events", q, m->next[q], m->next[q] * 1000);
            cr_assert_eq(state_batch_commit(st, b, err, sizeof err), 0, "%s", err);
        }
    }
    state_batch_free(b);
}

typedef struct cnt { const model_t *m; int n; bool bad; } cnt_t;

static int count_cb(void *arg, int32_t part, const void *key, size_t klen, const void *val,
                    size_t vlen)
{
    cnt_t *c = arg;
    char k[16];
    int i;
    if (klen >= sizeof k) { c->bad = true; return 1; }
    memcpy(k, key, klen);
    k[klen] = '\0';
    if (sscanf(k, "e%d", &i) != 1 || i < 0 || i >= NK || part != i % NPART ||
        strlen(c->m->val[i]) != vlen || memcmp(c->m->val[i], val, vlen) != 0) {
        c->bad = true;
        return 1;
    }
    c->n++;
    return 0;
}

static void check_model(state_store_t *st, const model_t *m)
{
    int want = 0;
    for (int k = 0; k < NK; k++) want += m->val[k][0] != 0;
    cnt_t c = { .m = m };
    cr_assert_eq(state_iterate(st, "view", 0, -1, count_cb, &c), 0);
    cr_assert(!c.bad);
    cr_assert_eq(c.n, want);
    for (int q = 0; q < NPART; q++) {
        int64_t off, wm;
        cr_assert_eq(state_offset_get(st, "events", q, &off, &wm), 0);
        cr_assert_eq(off, m->next[q]);
        cr_assert_eq(wm, m->next[q] * 1000);
    }
}

Test(snapshot, restore_equals_original_and_resume_equals_uninterrupted)
{
    static model_t m, at_snap;
    memset(&m, 0, sizeof m);
    unsigned seed = 4242;
    state_store_t *st = open_dir(path("state"));
    apply_random(st, &m, &seed, 800);
    char err[512] = "";
    state_snapshot_info_t info;
    cr_assert_eq(state_snapshot_create(st, path("snaps"), "s1", "fp-1", &info, err,
                                       sizeof err), 0, "%s", err);
    cr_assert_str_eq(info.name, "s1");
    cr_assert_eq(info.n_partitions, NPART);
    cr_assert_str_eq(info.schema_fingerprint, "fp-1");
    cr_assert(info.size_bytes > 0);
    state_snapshot_info_free(&info);
    at_snap = m;
    /* the uninterrupted run continues */
    unsigned seed_b = 99;
    apply_random(st, &m, &seed_b, 500);
    check_model(st, &m);
    state_close(st);

    /* the manifest reads back what was snapshotted */
    cr_assert_eq(state_snapshot_verify(path("snaps"), "s1", &info, err, sizeof err), 0, "%s",
                 err);
    cr_assert_str_eq(info.kind, "manual");
    for (size_t i = 0; i < info.n_partitions; i++)
        cr_assert_eq(info.partitions[i].next_offset, at_snap.next[info.partitions[i].partition]);
    state_snapshot_info_free(&info);

    /* restore into an absent dir: equals the original at snapshot time */
    cr_assert_eq(state_snapshot_restore(path("snaps"), "s1", path("restored"), err, sizeof err),
                 0, "%s", err);
    struct stat sb;
    cr_assert_eq(stat(path("restored"), &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0700);
    st = open_dir(path("restored"));
    check_model(st, &at_snap);
    sl_buf_t fp = SL_BUF_INIT;
    cr_assert_eq(state_meta_get(st, STATE_META_SCHEMA_FINGERPRINT, &fp), 0);
    cr_assert_eq(fp.len, 4);
    sl_buf_free(&fp);
    /* resuming with the same input from the snapshot's offsets gives the same end */
    model_t resumed = at_snap;
    seed_b = 99;
    apply_random(st, &resumed, &seed_b, 500);
    cr_assert_eq(memcmp(&resumed, &m, sizeof m), 0);
    check_model(st, &m);
    state_close(st);

    /* restore into an existing empty dir works too; the snapshot is intact after */
    mkdir(path("empty"), 0700);
    cr_assert_eq(state_snapshot_restore(path("snaps"), "s1", path("empty"), err, sizeof err), 0,
                 "%s", err);
    st = open_dir(path("empty"));
    check_model(st, &at_snap);
    state_close(st);
    cr_assert_eq(state_snapshot_verify(path("snaps"), "s1", &info, err, sizeof err), 0, "%s",
                 err);
    state_snapshot_info_free(&info);
}

Test(snapshot, restore_refuses_busy_nonempty_and_marks_interrupted)
{
    static model_t m;
    memset(&m, 0, sizeof m);
    unsigned seed = 1;
    state_store_t *st = open_dir(path("state"));
    apply_random(st, &m, &seed, 100);
    char err[512] = "";
    cr_assert_eq(state_snapshot_create(st, path("snaps"), "s", NULL, NULL, err, sizeof err), 0,
                 "%s", err);
    /* the live (locked) state dir */
    cr_assert_eq(state_snapshot_restore(path("snaps"), "s", path("state"), err, sizeof err),
                 SL_EBUSY);
    char want[700];
    snprintf(want, sizeof want, "state dir %s is in use by pid %ld", path("state"),
             (long)getpid());
    cr_assert_str_eq(err, want);
    state_close(st);
    /* stopped but holding data */
    cr_assert_eq(state_snapshot_restore(path("snaps"), "s", path("state"), err, sizeof err),
                 SL_EEXISTS);
    cr_assert(strstr(err, "not empty"), "%s", err);
    /* no such snapshot */
    cr_assert_eq(state_snapshot_restore(path("snaps"), "nope", path("x"), err, sizeof err),
                 SL_ENOTFOUND);
    /* an interrupted restore: marker present -> open refuses, restore again repairs */
    cr_assert_eq(state_snapshot_restore(path("snaps"), "s", path("r"), err, sizeof err), 0);
    FILE *f = fopen(path("r/sluice.restoring"), "w");
    cr_assert_not_null(f);
    fclose(f);
    FILE *junk = fopen(path("r/000999.sst"), "w");   /* half-copied debris */
    cr_assert_not_null(junk);
    fclose(junk);
    cr_assert_eq(state_open(path("r"), NULL, &st, err, sizeof err), SL_ECORRUPT);
    cr_assert(strstr(err, "unfinished snapshot restore"), "%s", err);
    cr_assert_eq(state_snapshot_restore(path("snaps"), "s", path("r"), err, sizeof err), 0,
                 "%s", err);
    cr_assert_neq(access(path("r/000999.sst"), F_OK), 0);
    st = open_dir(path("r"));
    check_model(st, &m);
    state_close(st);
}

/* Writes text as the manifest of snapshot `name`. */
static void put_manifest(const char *name, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/snaps/%s/manifest.json", tmp, name);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static char *get_manifest(const char *name)
{
    char p[600];
    snprintf(p, sizeof p, "%s/snaps/%s/manifest.json", tmp, name);
    FILE *f = fopen(p, "r");
    cr_assert_not_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strdup(buf);
}

/* Replaces the first occurrence of `from` in s by `to` (new string). */
static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    cr_assert_not_null(at, "'%s' not in manifest", from);
    size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    return out;
}

static void expect_bad(const char *what, int want_rc, const char *want_msg)
{
    char err[512] = "";
    state_snapshot_info_t info;
    int rc = state_snapshot_verify(path("snaps"), "s", &info, err, sizeof err);
    cr_assert_eq(rc, want_rc, "%s: rc %d (%s)", what, rc, err);
    cr_assert(strstr(err, want_msg), "%s: message '%s' lacks '%s'", what, err, want_msg);
    state_snapshot_info_free(&info);
    /* restore refuses and leaves no state dir behind */
    rc = state_snapshot_restore(path("snaps"), "s", path("target"), err, sizeof err);
    cr_assert_eq(rc, want_rc, "%s: restore rc %d", what, rc);
    cr_assert_neq(access(path("target"), F_OK), 0, "%s: target created", what);
}

Test(snapshot, corrupt_manifests_are_refused_clearly)
{
    static model_t m;
    memset(&m, 0, sizeof m);
    unsigned seed = 7;
    state_store_t *st = open_dir(path("state"));
    apply_random(st, &m, &seed, 200);
    char err[512] = "";
    cr_assert_eq(state_snapshot_create(st, path("snaps"), "s", "fp", NULL, err, sizeof err), 0);
    state_close(st);
    char *good = get_manifest("s");
    char offs[64];
    snprintf(offs, sizeof offs, "\"next_offset\":\t%lld", (long long)m.next[0]);

    put_manifest("s", "");
    expect_bad("empty", SL_ECORRUPT, "not valid JSON");
    put_manifest("s", "{\"format\": 1, \"name\": \"s\"");
    expect_bad("truncated", SL_ECORRUPT, "not valid JSON");
    put_manifest("s", "[1,2,3]");
    expect_bad("not an object", SL_ECORRUPT, "not valid JSON");
    char *t = replace(good, "\"format\":\t1", "\"format\":\t7");
    put_manifest("s", t);
    expect_bad("newer format", SL_EVERSION, "manifest format 7");
    free(t);
    t = replace(good, "\"created_ms\"", "\"created_at\"");
    put_manifest("s", t);
    expect_bad("field missing", SL_ECORRUPT, "field \"created_ms\" missing or invalid");
    free(t);
    t = replace(good, "\"name\":\t\"s\"", "\"name\":\t\"other\"");
    put_manifest("s", t);
    expect_bad("wrong name", SL_ECORRUPT, "names snapshot \"other\"");
    free(t);
    t = replace(good, "\"partition\":\t0", "\"partition\":\t\"zero\"");
    put_manifest("s", t);
    expect_bad("bad partition", SL_ECORRUPT, "partitions[0] malformed");
    free(t);
    char bumped[64];
    snprintf(bumped, sizeof bumped, "\"next_offset\":\t%lld", (long long)m.next[0] + 1);
    t = replace(good, offs, bumped);
    put_manifest("s", t);
    expect_bad("offset edited", SL_ECORRUPT, "does not match the checkpoint");
    free(t);
    t = replace(good, "\"size\":\t", "\"size\":\t1");
    put_manifest("s", t);
    expect_bad("file size", SL_ECORRUPT, "manifest says");
    free(t);
    t = replace(good, "\"files\":\t[{", "\"files\":\t[{\"name\": \"000777.sst\", \"size\": 1}, {");
    put_manifest("s", t);
    expect_bad("file missing", SL_ECORRUPT, "file db/000777.sst is missing");
    free(t);
    unlink(path("snaps/s/manifest.json"));
    expect_bad("no manifest", SL_ECORRUPT, "cannot read manifest.json");

    /* the good manifest back: verify and restore work again */
    put_manifest("s", good);
    state_snapshot_info_t info;
    cr_assert_eq(state_snapshot_verify(path("snaps"), "s", &info, err, sizeof err), 0, "%s",
                 err);
    state_snapshot_info_free(&info);
    free(good);

    /* list shows invalid snapshots as such */
    mkdir(path("snaps/zz-broken"), 0700);
    state_snapshot_info_t *list;
    size_t n;
    cr_assert_eq(state_snapshot_list(path("snaps"), &list, &n, err, sizeof err), 0);
    cr_assert_eq(n, 2);
    int valid = 0;
    for (size_t i = 0; i < n; i++) valid += list[i].valid;
    cr_assert_eq(valid, 1);
    state_snapshot_list_free(list, n);
}

Test(snapshot, periodic_retention_keeps_exactly_n)
{
    state_store_t *st = open_dir(path("state"));
    static model_t m;
    memset(&m, 0, sizeof m);
    unsigned seed = 3;
    char err[512] = "";
    cr_assert_eq(state_snapshot_create(st, path("snaps"), "manual-1", NULL, NULL, err,
                                       sizeof err), 0);
    char names[7][64];
    for (int i = 0; i < 7; i++) {
        apply_random(st, &m, &seed, 20);
        cr_assert_eq(state_snapshot_periodic(st, path("snaps"), 3, "fp", names[i],
                                             sizeof names[i], err, sizeof err), 0, "%s", err);
        usleep(2000);
    }
    cr_assert_eq(state_snapshot_periodic(st, path("snaps"), 0, NULL, NULL, 0, err, sizeof err),
                 SL_EINVAL);
    state_close(st);
    state_snapshot_info_t *list;
    size_t n;
    cr_assert_eq(state_snapshot_list(path("snaps"), &list, &n, err, sizeof err), 0);
    cr_assert_eq(n, 4, "got %zu snapshots", n);
    cr_assert_str_eq(list[0].name, "manual-1");      /* oldest first, manual untouched */
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(list[1 + i].name, names[4 + i]);
        cr_assert_str_eq(list[1 + i].kind, "periodic");
        cr_assert(list[1 + i].created_ms >= list[i].created_ms);
    }
    /* the newest periodic snapshot holds the latest offsets */
    for (size_t i = 0; i < list[3].n_partitions; i++)
        cr_assert_eq(list[3].partitions[i].next_offset, m.next[list[3].partitions[i].partition]);
    state_snapshot_list_free(list, n);
}

Test(snapshot, names_create_conflicts_and_delete)
{
    state_store_t *st = open_dir(path("state"));
    char err[512] = "";
    const char *bad[] = { "", ".hidden", "a/b", "..", "sp ace", "x\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert(!state_snapshot_name_valid(bad[i]));
        cr_assert_eq(state_snapshot_create(st, path("snaps"), bad[i], NULL, NULL, err,
                                           sizeof err), SL_EINVAL);
    }
    cr_assert(state_snapshot_name_valid("snap-2024_01.x"));
    /* debris of a dead creator is swept by the next create; a live one's stays */
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    char debris[64], live[64];
    snprintf(debris, sizeof debris, "snaps/.tmp-x-%ld", (long)dead);
    snprintf(live, sizeof live, "snaps/.tmp-y-%ld", (long)getppid());
    mkdir(path("snaps"), 0700);
    cr_assert_eq(mkdir(path(debris), 0700), 0);
    cr_assert_eq(mkdir(path(live), 0700), 0);
    state_snapshot_info_t info;
    cr_assert_eq(state_snapshot_create(st, path("snaps"), NULL, NULL, &info, err, sizeof err), 0);
    cr_assert(strncmp(info.name, "snap-", 5) == 0);
    cr_assert_neq(access(path(debris), F_OK), 0);
    cr_assert_eq(access(path(live), F_OK), 0);
    cr_assert_eq(info.n_partitions, 0);            /* empty store: no progress yet */
    cr_assert_eq(state_snapshot_create(st, path("snaps"), info.name, NULL, NULL, err,
                                       sizeof err), SL_EEXISTS);
    cr_assert_eq(state_snapshot_delete(path("snaps"), info.name, err, sizeof err), 0);
    cr_assert_eq(state_snapshot_delete(path("snaps"), info.name, err, sizeof err), SL_ENOTFOUND);
    cr_assert_eq(state_snapshot_delete(path("snaps"), "../state", err, sizeof err), SL_EINVAL);
    state_snapshot_info_free(&info);
    state_snapshot_info_t *list;
    size_t n;
    cr_assert_eq(state_snapshot_list(path("snaps"), &list, &n, err, sizeof err), 0);
    cr_assert_eq(n, 0);
    state_snapshot_list_free(list, n);
    cr_assert_eq(state_snapshot_list(path("absent"), &list, &n, err, sizeof err), 0);
    cr_assert_eq(n, 0);
    state_close(st);
}

/* One partition restored alone: it equals the snapshot, the other partitions
 * keep their newer state, lookups by -1 follow (entities created after the
 * snapshot in that partition disappear, deleted ones come back). */
Test(snapshot, restore_one_partition_alone)
{
    static model_t m, at_snap, want;
    memset(&m, 0, sizeof m);
    unsigned seed = 555;
    state_store_t *st = open_dir(path("state"));
    apply_random(st, &m, &seed, 600);
    char err[512] = "";
    cr_assert_eq(state_snapshot_create(st, path("snaps"), "s", NULL, NULL, err, sizeof err), 0);
    at_snap = m;
    apply_random(st, &m, &seed, 600);
    /* an unrelated view in the same partition must stay */
    state_batch_t *b = state_batch_new();
    state_batch_put(b, "other", 2, "e2", 2, "keep", 4);
    cr_assert_eq(state_batch_commit(st, b, err, sizeof err), 0);
    state_batch_free(b);

    const char *views[] = { "view" };
    cr_assert_eq(state_snapshot_restore_partition(path("snaps"), "s", st, "events", 2, views, 1,
                                                  err, sizeof err), 0, "%s", err);
    want = m;
    for (int k = 0; k < NK; k++)
        if (k % NPART == 2) memcpy(want.val[k], at_snap.val[k], sizeof want.val[k]);
    want.next[2] = at_snap.next[2];
    for (int round = 0; round < 2; round++) {
        check_model(st, &want);
        sl_buf_t out = SL_BUF_INIT;
        for (int k = 0; k < NK; k++) {
            char key[16];
            snprintf(key, sizeof key, "e%d", k);
            int rc = state_lookup(st, "view", -1, key, strlen(key), &out);
            if (want.val[k][0]) {
                cr_assert_eq(rc, 0, "e%d", k);
                cr_assert_eq(out.len, strlen(want.val[k]));
                cr_assert_eq(memcmp(out.data, want.val[k], out.len), 0);
            } else {
                cr_assert_eq(rc, SL_ENOTFOUND, "e%d should be absent", k);
            }
        }
        cr_assert_eq(state_lookup(st, "other", -1, "e2", 2, &out), 0);
        sl_buf_free(&out);
        state_close(st);
        st = open_dir(path("state"));
    }
    cr_assert_eq(state_snapshot_restore_partition(path("snaps"), "s", st, "events", 9, views, 1,
                                                  err, sizeof err), SL_ENOTFOUND);
    state_close(st);
}

/* kill -9 at random instants of create and restore loops. Afterwards every
 * snapshot that is listed verifies, and a state dir is either a complete
 * restore (equal to the snapshot), refused by state_open as an unfinished
 * restore (and then repaired by restoring again), or absent/empty.
 * Even rounds kill at a random instant from the child's start (possibly in
 * its first create); odd rounds wait until the child has finished one create
 * and one restore, then kill at a random instant of the loops that follow:
 * so at least one snapshot and one complete restore exist whatever the
 * machine's speed (fixed delays alone could all pass before the first). */
Test(snapshot, kill9_during_create_and_restore, .timeout = 300)
{
    static model_t m;
    memset(&m, 0, sizeof m);
    unsigned seed = 31337;
    state_store_t *st = open_dir(path("state"));
    apply_random(st, &m, &seed, 3000);
    char err[512] = "";
    cr_assert_eq(state_snapshot_create(st, path("snaps"), "base", NULL, NULL, err, sizeof err), 0);
    state_close(st);
    srand(12345);
    for (int round = 0; round < 6; round++) {
        int pipefd[2];
        cr_assert_eq(pipe(pipefd), 0);
        pid_t child = fork();
        cr_assert(child >= 0);
        if (child == 0) {
            char e[512], name[32], target[64];
            close(pipefd[0]);
            state_store_t *s = NULL;
            if (state_open(path("state"), NULL, &s, e, sizeof e)) _exit(2);
            for (int i = 0;; i++) {
                snprintf(name, sizeof name, "c%d-%d", round, i);
                snprintf(target, sizeof target, "restored-%d-%d", round, i % 3);
                if (state_snapshot_create(s, path("snaps"), name, NULL, NULL, e, sizeof e))
                    _exit(3);
                state_snapshot_restore(path("snaps"), "base", path(target), e, sizeof e);
                if (i == 0 && write(pipefd[1], "r", 1) != 1) _exit(4);
            }
        }
        close(pipefd[1]);
        useconds_t delay = 50000 + (useconds_t)(rand() % 400000);
        if (round % 2 == 1) {
            struct pollfd pfd = { .fd = pipefd[0], .events = POLLIN };
            char c;
            cr_assert(poll(&pfd, 1, 120000) == 1 && read(pipefd[0], &c, 1) == 1,
                      "round %d: the child finished no create and restore", round);
            delay -= 50000;
        }
        usleep(delay);
        close(pipefd[0]);
        kill(child, SIGKILL);
        int status;
        waitpid(child, &status, 0);
        cr_assert(WIFSIGNALED(status), "child ended by itself: %d", status);
    }
    /* every listed snapshot is whole */
    state_snapshot_info_t *list;
    size_t n;
    cr_assert_eq(state_snapshot_list(path("snaps"), &list, &n, err, sizeof err), 0);
    cr_assert(n >= 2);
    for (size_t i = 0; i < n; i++) {
        state_snapshot_info_t info;
        cr_assert_eq(state_snapshot_verify(path("snaps"), list[i].name, &info, err, sizeof err),
                     0, "%s: %s", list[i].name, err);
        state_snapshot_info_free(&info);
    }
    state_snapshot_list_free(list, n);
    /* every restore target is complete, marked unfinished, or absent/empty */
    int complete = 0, unfinished = 0;
    for (int round = 0; round < 6; round++) {
        for (int k = 0; k < 3; k++) {
            char sub[64];
            snprintf(sub, sizeof sub, "restored-%d-%d", round, k);
            const char *dir = path(sub);
            if (access(dir, F_OK) != 0) continue;
            state_store_t *r = NULL;
            int rc = state_open(dir, NULL, &r, err, sizeof err);
            if (rc == SL_ECORRUPT && strstr(err, "unfinished snapshot restore")) {
                unfinished++;
                cr_assert_eq(state_snapshot_restore(path("snaps"), "base", dir, err, sizeof err),
                             0, "%s", err);
                rc = state_open(dir, NULL, &r, err, sizeof err);
            }
            cr_assert_eq(rc, 0, "%s: %s", dir, err);
            int64_t off;
            if (state_offset_get(r, "events", 0, &off, NULL) == SL_ENOTFOUND) {
                /* created before the marker was written: must hold nothing */
                cr_assert_eq(state_progress(r, NULL, 0), 0);
            } else {
                check_model(r, &m);
                complete++;
            }
            state_close(r);
        }
    }
    cr_assert(complete > 0);
    cr_log_info("complete %d, unfinished repaired %d", complete, unfinished);
}

/* Random byte damage to the manifest: verify answers 0 (harmless damage,
 * e.g. in whitespace) or a corruption error, never crashes or accepts
 * offsets that differ from the checkpoint. */
Test(snapshot, mutated_manifests_never_crash, .timeout = 300)
{
    static model_t m;
    memset(&m, 0, sizeof m);
    unsigned seed = 99;
    state_store_t *st = open_dir(path("state"));
    apply_random(st, &m, &seed, 100);
    char err[512] = "";
    cr_assert_eq(state_snapshot_create(st, path("snaps"), "s", "fp", NULL, err, sizeof err), 0);
    state_close(st);
    char *good = get_manifest("s");
    size_t len = strlen(good);
    int ok = 0, bad = 0;
    for (int i = 0; i < 150; i++) {
        char *t = strdup(good);
        int flips = 1 + rand_r(&seed) % 3;
        for (int f = 0; f < flips; f++) t[rand_r(&seed) % len] = (char)(rand_r(&seed) % 256);
        put_manifest("s", t);
        state_snapshot_info_t info;
        int rc = state_snapshot_verify(path("snaps"), "s", &info, err, sizeof err);
        cr_assert(rc == 0 || rc == SL_ECORRUPT || rc == SL_EVERSION || rc == SL_EINVAL,
                  "rc %d: %s", rc, err);
        if (rc == 0) {
            ok++;
            for (size_t p = 0; p < info.n_partitions; p++)
                cr_assert_eq(info.partitions[p].next_offset,
                             m.next[info.partitions[p].partition]);
        } else {
            bad++;
            cr_assert(err[0], "no message for rc %d", rc);
        }
        state_snapshot_info_free(&info);
        free(t);
    }
    free(good);
    cr_assert(bad > 0);
    cr_log_info("mutations: %d harmless, %d refused", ok, bad);
}

/* The on-demand request protocol: request -> serve -> reply; a pending
 * request blocks a second one; an unserved request times out and is
 * withdrawn; a failing snapshot's error reaches the requester. */
Test(snapshot, request_serve_reply)
{
    static model_t m;
    memset(&m, 0, sizeof m);
    unsigned seed = 8;
    state_store_t *st = open_dir(path("state"));
    apply_random(st, &m, &seed, 50);
    char err[512] = "", id[64], id2[64], name[160] = "";
    /* nothing pending: serve is a no-op */
    bool taken = true;
    char taken_name[160] = "";
    cr_assert_eq(state_snapshot_serve_request(st, path("snaps"), NULL, &taken, taken_name,
                                              sizeof taken_name, err, sizeof err), 0);
    cr_assert_not(taken);
    cr_assert_neq(access(path("snaps"), F_OK), 0);

    cr_assert_eq(state_snapshot_request(path("state"), "ondemand", id, sizeof id, err,
                                        sizeof err), 0, "%s", err);
    cr_assert_eq(state_snapshot_request(path("state"), NULL, id2, sizeof id2, err, sizeof err),
                 SL_EBUSY);
    cr_assert_eq(state_snapshot_serve_request(st, path("snaps"), "fp9", &taken, taken_name,
                                              sizeof taken_name, err, sizeof err), 0);
    cr_assert(taken);
    cr_assert_str_eq(taken_name, "ondemand");
    cr_assert_eq(state_snapshot_wait_reply(path("state"), id, 5000, name, sizeof name, err,
                                           sizeof err), 0, "%s", err);
    cr_assert_str_eq(name, "ondemand");
    state_snapshot_info_t info;
    cr_assert_eq(state_snapshot_verify(path("snaps"), "ondemand", &info, err, sizeof err), 0);
    cr_assert_str_eq(info.schema_fingerprint, "fp9");
    state_snapshot_info_free(&info);

    /* the same name again: the worker's error comes back */
    cr_assert_eq(state_snapshot_request(path("state"), "ondemand", id, sizeof id, err,
                                        sizeof err), 0);
    cr_assert_eq(state_snapshot_serve_request(st, path("snaps"), NULL, &taken, NULL, 0, err,
                                              sizeof err), 0);
    cr_assert_not(taken);                       /* failed: nothing new to count */
    cr_assert_eq(state_snapshot_wait_reply(path("state"), id, 5000, name, sizeof name, err,
                                           sizeof err), SL_EEXISTS);
    cr_assert(strstr(err, "already exists"), "%s", err);

    /* nobody serves: timeout, request withdrawn */
    cr_assert_eq(state_snapshot_request(path("state"), NULL, id, sizeof id, err, sizeof err), 0);
    cr_assert_eq(state_snapshot_wait_reply(path("state"), id, 120, name, sizeof name, err,
                                           sizeof err), SL_ETIMEOUT);
    cr_assert_neq(access(path("state/sluice.snapshot-request"), F_OK), 0);
    cr_assert_eq(state_snapshot_request(path("state"), "bad/name", id, sizeof id, err,
                                        sizeof err), SL_EINVAL);
    state_close(st);
}
