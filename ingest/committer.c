/*
 * committer.c — the pipelined committer (contract in committer.h).
 *
 * Two threads: the owner (the ingest or replay thread), which calls every
 * function here, and the committer thread, which runs the jobs.
 *
 * What is under which lock:
 *   - fn, arg, name, thread: set by start before the thread exists,
 *     read-only afterwards;
 *   - pending: the owner's only (no lock): set by submit, cleared by wait;
 *   - job, job_ready, job_done, job_rc, job_err, quit: under mu, signalled
 *     on cond.
 *
 * A job's life:
 *
 *   idle --submit--> ready ---------fn returns---------> done --wait--> idle
 *                    job_ready (stays set while fn runs)  job_done
 *   |<------------------ pending (owner's view) ------------------>|
 *
 * Invariant: at most one job in flight (submit asserts that the previous one
 * was waited for). The owner does not touch the submitted job until wait
 * returns; the mutex the thread releases after the job and wait takes before
 * returning orders everything fn wrote before the owner's next reads.
 *
 * Stop sets quit; the thread runs a job already submitted before it obeys,
 * so stop never abandons a job halfway (its result is dropped).
 */
#define _GNU_SOURCE                 /* pthread_setname_np */
#include "committer.h"

#include "sl_err.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ingest_committer {
    ingest_commit_fn fn;
    void *arg;
    char name[16];
    pthread_t thread;
    bool pending;               /* owner only */

    pthread_mutex_t mu;
    pthread_cond_t cond;
    void *job;                  /* under mu from here on */
    bool job_ready, job_done, quit;
    int job_rc;
    char job_err[512];
};

static void *committer_main(void *arg)
{
    ingest_committer_t *c = arg;
    pthread_setname_np(pthread_self(), c->name);
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->job_ready && !c->quit) pthread_cond_wait(&c->cond, &c->mu);
        if (!c->job_ready) break;                   /* quit, nothing left to run */
        void *job = c->job;
        pthread_mutex_unlock(&c->mu);

        char err[sizeof c->job_err] = "";
        int rc = c->fn(c->arg, job, err, sizeof err);

        pthread_mutex_lock(&c->mu);
        c->job_rc = rc;
        memcpy(c->job_err, err, sizeof err);
        c->job_ready = false;
        c->job_done = true;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int ingest_committer_start(ingest_committer_t **out, const char *thread_name, ingest_commit_fn fn,
                           void *arg, char *errstr, size_t errsize)
{
    *out = NULL;
    ingest_committer_t *c = calloc(1, sizeof *c);
    if (!c) {
        if (errstr && errsize) snprintf(errstr, errsize, "out of memory");
        return SL_ENOMEM;
    }
    c->fn = fn;
    c->arg = arg;
    snprintf(c->name, sizeof c->name, "%s", thread_name ? thread_name : "sl-commit");
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    int e = pthread_create(&c->thread, NULL, committer_main, c);
    if (e != 0) {
        if (errstr && errsize)
            snprintf(errstr, errsize, "cannot start the committer thread %s: %s", c->name, strerror(e));
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return SL_ENOMEM;
    }
    *out = c;
    return 0;
}

void ingest_committer_submit(ingest_committer_t *c, void *job)
{
    assert(c && !c->pending);
    c->pending = true;
    pthread_mutex_lock(&c->mu);
    c->job = job;
    c->job_ready = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

bool ingest_committer_pending(const ingest_committer_t *c)
{
    return c && c->pending;
}

bool ingest_committer_busy(ingest_committer_t *c)
{
    if (!c || !c->pending) return false;
    pthread_mutex_lock(&c->mu);
    bool done = c->job_done;
    pthread_mutex_unlock(&c->mu);
    return !done;
}

int ingest_committer_wait(ingest_committer_t *c, char *errstr, size_t errsize)
{
    if (!c || !c->pending) return 0;
    pthread_mutex_lock(&c->mu);
    while (!c->job_done) pthread_cond_wait(&c->cond, &c->mu);
    c->job_done = false;
    int rc = c->job_rc;
    if (rc && errstr && errsize) snprintf(errstr, errsize, "%s", c->job_err);
    pthread_mutex_unlock(&c->mu);
    c->pending = false;
    return rc;
}

void ingest_committer_stop(ingest_committer_t *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->quit = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
