/*
 * test_ingest_committer.c — the pipelined committer (ingest/committer.c)
 * with a job function that records the order of the jobs it runs and can be
 * told to fail, to be slow, or to block until the test opens a gate.
 *
 * Checked: submit returns while the job still runs (busy, pending); wait
 * returns the job's rc and, on failure only, its message; a failure is
 * reported once and does not stop the committer; jobs run in order, on the
 * committer thread, one at a time; what a job writes is visible after wait;
 * NULL (not started) means nothing pending; stop joins cleanly when idle and
 * runs a still-pending job to its end first. Leaks: the sanitizer build's
 * LeakSanitizer checks every test process at exit.
 */
#define _GNU_SOURCE                 /* pthread_getname_np */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "committer.h"
#include "sl_err.h"

#define MAX_JOBS 256

/* What the job function shares with the test. */
typedef struct recorder {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool gate_open;               /* under mu: a job with `gated` waits for it */
    int order[MAX_JOBS];          /* ids of the jobs run, in order (under mu) */
    int n;
    atomic_int running;           /* jobs inside the job function now */
    atomic_int max_running;
    pthread_t owner;              /* the test's thread */
} recorder_t;

typedef struct job {
    int id;
    int rc;                       /* what the job returns */
    const char *msg;              /* its message on failure (NULL: none) */
    int sleep_ms;                 /* slow job */
    bool gated;                   /* blocks until the gate opens */
    /* written by the job, read by the test after wait */
    bool ran;
    bool on_other_thread;
    bool started_with_empty_err;
    char thread_name[16];
} job_t;

static recorder_t rec;

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int record_job(void *arg, void *jobp, char *errstr, size_t errsize)
{
    recorder_t *r = arg;
    job_t *j = jobp;
    j->started_with_empty_err = errstr[0] == '\0';   /* asserted on the test's thread */
    int now = atomic_fetch_add(&r->running, 1) + 1;
    int max = atomic_load(&r->max_running);
    while (now > max && !atomic_compare_exchange_weak(&r->max_running, &max, now))
        ;
    j->on_other_thread = !pthread_equal(pthread_self(), r->owner);
    pthread_getname_np(pthread_self(), j->thread_name, sizeof j->thread_name);
    pthread_mutex_lock(&r->mu);
    while (j->gated && !r->gate_open) pthread_cond_wait(&r->cond, &r->mu);
    pthread_mutex_unlock(&r->mu);
    if (j->sleep_ms) sleep_ms(j->sleep_ms);
    pthread_mutex_lock(&r->mu);
    if (r->n < MAX_JOBS) r->order[r->n++] = j->id;
    pthread_mutex_unlock(&r->mu);
    j->ran = true;
    atomic_fetch_sub(&r->running, 1);
    if (j->rc && j->msg) snprintf(errstr, errsize, "%s", j->msg);
    return j->rc;
}

static void setup(void)
{
    memset(&rec, 0, sizeof rec);
    pthread_mutex_init(&rec.mu, NULL);
    pthread_cond_init(&rec.cond, NULL);
    rec.owner = pthread_self();
}

static void teardown(void)
{
    pthread_cond_destroy(&rec.cond);
    pthread_mutex_destroy(&rec.mu);
}

static void open_gate(void)
{
    pthread_mutex_lock(&rec.mu);
    rec.gate_open = true;
    pthread_cond_broadcast(&rec.cond);
    pthread_mutex_unlock(&rec.mu);
}

static int recorded(void)
{
    pthread_mutex_lock(&rec.mu);
    int n = rec.n;
    pthread_mutex_unlock(&rec.mu);
    return n;
}

static ingest_committer_t *start(const char *name)
{
    ingest_committer_t *c = NULL;
    char err[256] = "";
    int rc = ingest_committer_start(&c, name, record_job, &rec, err, sizeof err);
    cr_assert_eq(rc, 0, "start: %s", err);
    cr_assert_not_null(c);
    return c;
}

TestSuite(ingest_committer, .init = setup, .fini = teardown, .timeout = 60);

Test(ingest_committer, submit_returns_before_the_job_finishes)
{
    ingest_committer_t *c = start("sl-test-commit");
    job_t j = { .id = 1, .gated = true };
    cr_assert_not(ingest_committer_pending(c));
    cr_assert_not(ingest_committer_busy(c));
    ingest_committer_submit(c, &j);
    /* The job cannot finish before the gate opens: submit returned first. */
    cr_assert(ingest_committer_pending(c));
    cr_assert(ingest_committer_busy(c));
    sleep_ms(20);
    cr_assert(ingest_committer_busy(c), "still blocked on the gate");
    cr_assert_eq(recorded(), 0);
    open_gate();
    char err[64] = "keep";
    cr_assert_eq(ingest_committer_wait(c, err, sizeof err), 0);
    cr_assert_str_eq(err, "keep", "a successful job leaves errstr alone");
    cr_assert_not(ingest_committer_pending(c));
    cr_assert_not(ingest_committer_busy(c));
    cr_assert(j.ran);
    cr_assert(j.on_other_thread, "the job runs on the committer thread");
    cr_assert_str_eq(j.thread_name, "sl-test-commit");
    cr_assert_eq(recorded(), 1);
    ingest_committer_stop(c);
}

Test(ingest_committer, busy_clears_when_done_before_the_wait)
{
    ingest_committer_t *c = start("sl-test-commit");
    job_t j = { .id = 1 };
    ingest_committer_submit(c, &j);
    for (int i = 0; i < 5000 && ingest_committer_busy(c); i++) sleep_ms(1);
    /* Done but not waited for: not busy (wait would not block), still pending. */
    cr_assert_not(ingest_committer_busy(c));
    cr_assert(ingest_committer_pending(c));
    cr_assert_eq(ingest_committer_wait(c, NULL, 0), 0);
    cr_assert_not(ingest_committer_pending(c));
    ingest_committer_stop(c);
}

Test(ingest_committer, wait_returns_the_rc_and_message_of_a_failed_job)
{
    ingest_committer_t *c = start("sl-test-commit");
    job_t bad = { .id = 1, .rc = SL_ESTATE, .msg = "disk full", .sleep_ms = 10 };
    ingest_committer_submit(c, &bad);
    char err[64] = "keep";
    cr_assert_eq(ingest_committer_wait(c, err, sizeof err), SL_ESTATE);
    cr_assert_str_eq(err, "disk full");

    /* Reported once: nothing pending now, the next wait returns 0 and
     * leaves errstr alone (stopping after a failure is the caller's call). */
    snprintf(err, sizeof err, "keep");
    cr_assert_eq(ingest_committer_wait(c, err, sizeof err), 0);
    cr_assert_str_eq(err, "keep");

    /* A failure without a message gives "". */
    job_t quiet = { .id = 2, .rc = SL_EIO };
    ingest_committer_submit(c, &quiet);
    cr_assert_eq(ingest_committer_wait(c, err, sizeof err), SL_EIO);
    cr_assert_str_eq(err, "", "the message of the job that failed, not an older one");

    /* The committer still runs jobs. */
    job_t good = { .id = 3 };
    ingest_committer_submit(c, &good);
    cr_assert_eq(ingest_committer_wait(c, err, sizeof err), 0);
    cr_assert(good.ran);
    cr_assert(good.started_with_empty_err, "a job starts with errstr \"\", whatever failed before");
    /* A short buffer truncates; NULL is allowed. */
    job_t bad2 = { .id = 4, .rc = SL_ESTATE, .msg = "a rather long message" };
    char small[8];
    ingest_committer_submit(c, &bad2);
    cr_assert_eq(ingest_committer_wait(c, small, sizeof small), SL_ESTATE);
    cr_assert_str_eq(small, "a rathe");
    ingest_committer_submit(c, &bad2);
    cr_assert_eq(ingest_committer_wait(c, NULL, 0), SL_ESTATE);
    ingest_committer_stop(c);
}

Test(ingest_committer, jobs_run_in_order_one_at_a_time)
{
    ingest_committer_t *c = start("sl-test-commit");
    static job_t jobs[100];
    for (int i = 0; i < 100; i++) {
        jobs[i] = (job_t){ .id = i, .rc = i % 7 == 3 ? SL_ESTATE : 0, .sleep_ms = i % 10 == 0 ? 5 : 0 };
        ingest_committer_submit(c, &jobs[i]);
        /* the owner works on while the job runs */
        if (i % 2) sleep_ms(1);
        cr_assert_eq(ingest_committer_wait(c, NULL, 0), jobs[i].rc, "job %d", i);
        cr_assert(jobs[i].ran, "job %d finished before its wait returned", i);
    }
    cr_assert_eq(recorded(), 100);
    for (int i = 0; i < 100; i++) cr_assert_eq(rec.order[i], i);
    cr_assert_eq(atomic_load(&rec.max_running), 1);
    ingest_committer_stop(c);
}

Test(ingest_committer, not_started_means_nothing_pending)
{
    char err[16] = "keep";
    cr_assert_not(ingest_committer_pending(NULL));
    cr_assert_not(ingest_committer_busy(NULL));
    cr_assert_eq(ingest_committer_wait(NULL, err, sizeof err), 0);
    cr_assert_str_eq(err, "keep");
    ingest_committer_stop(NULL);
}

Test(ingest_committer, stop_when_idle)
{
    /* never used */
    ingest_committer_t *c = start("sl-test-commit");
    ingest_committer_stop(c);
    /* used, then stopped after its wait */
    c = start("sl-test-commit");
    job_t j = { .id = 1 };
    ingest_committer_submit(c, &j);
    cr_assert_eq(ingest_committer_wait(c, NULL, 0), 0);
    ingest_committer_stop(c);
    cr_assert_eq(recorded(), 1);
}

Test(ingest_committer, stop_runs_a_pending_job_to_its_end)
{
    ingest_committer_t *c = start("sl-test-commit");
    job_t slow = { .id = 1, .sleep_ms = 100, .rc = SL_ESTATE, .msg = "dropped" };
    ingest_committer_submit(c, &slow);
    ingest_committer_stop(c);       /* joins: the job is over when this returns */
    cr_assert(slow.ran);
    cr_assert_eq(recorded(), 1);

    /* A job submitted and stopped at once (the thread may not have taken it
     * yet) runs too. */
    c = start("sl-test-commit");
    job_t quick = { .id = 2 };
    ingest_committer_submit(c, &quick);
    ingest_committer_stop(c);
    cr_assert(quick.ran);
    cr_assert_eq(recorded(), 2);
}

Test(ingest_committer, long_thread_names_are_truncated)
{
    ingest_committer_t *c = start("sl-a-very-long-committer-name");
    job_t j = { .id = 1 };
    ingest_committer_submit(c, &j);
    cr_assert_eq(ingest_committer_wait(c, NULL, 0), 0);
    cr_assert_str_eq(j.thread_name, "sl-a-very-long-");
    ingest_committer_stop(c);
}
