/*
 * rpc_server.c — unary gRPC calls on the core C API (see rpc_server.h).
 *
 * Every worker thread owns one completion queue and keeps RPC_PENDING
 * requested calls per method posted on it. A call's life:
 *
 *   REQUESTED --(tag ok)--> handler runs, one batch sent:
 *       |                   SEND_INITIAL_METADATA, SEND_MESSAGE (if OK),
 *       |                   SEND_STATUS_FROM_SERVER, RECV_CLOSE_ON_SERVER
 *       |                   and a fresh request is posted in its place
 *       |                        \--> SENDING --(tag)--> freed
 *       |         \--(handler deferred)--> waiter queue --> handler runs
 *       |                   again on the waiter thread, batch sent --> SENDING
 *       \--(tag not ok: shutting down)--> freed
 *
 * Thread layout. Only worker 0's queue polls (GRPC_CQ_DEFAULT_POLLING): it
 * reads and writes every connection, and since gRPC gives a new call to the
 * queue of its connection first, it runs the handlers too, so a call costs
 * no thread hand-off. The other workers' queues do not poll
 * (GRPC_CQ_NON_POLLING): a call reaches them only when all of worker 0's
 * pending requests are taken (worker 0 busy), and they wake on a condition
 * variable, not through the poller. With a polling queue per worker (the
 * earlier layout) the threads took turns at epoll and kicked the owner of
 * each call across threads: on the 2-core bench box, echo calls at a fixed
 * 4 000/s cost 58-68 us of server CPU and ~1 context switch each, against
 * 40-52 us and ~0.3 with one poller (docs/serving.md). Because worker 0
 * carries all I/O, no handler waits: a handler that must (a read-your-
 * writes token not reached yet) defers the call (rpc_reply_defer) to the
 * waiter thread, which runs it again every ~2 ms until it answers, so a
 * waiting call holds up no other, and shutdown answers the rest UNAVAILABLE.
 *
 * Copies: a request that arrives as one uncompressed slice (the usual
 * case) is handed to the handler in place, and the handler's reply body
 * becomes the response slice itself (gRPC frees it once written), so a
 * call's bytes are copied by neither side of this file.
 *
 * Transport: plaintext HTTP/2, or TLS (grpc_ssl_server_credentials_create
 * with one PEM certificate chain and key, no client certificates); the
 * bearer-token check is the same either way.
 *
 * Shutdown: grpc_server_shutdown_and_notify on a private queue (no new
 * calls; a call already taken from gRPC's queue whose handler has not begun
 * gets UNAVAILABLE at once), wait for the notification, which comes once the
 * calls in progress have sent their replies (after RPC_STOP_MS the rest is
 * cancelled); then
 * every worker queue is shut down and drained by its worker, which exits on
 * GRPC_QUEUE_SHUTDOWN.
 */
#include "rpc_server.h"
#include "sl_hist.h"
#include "sl_err.h"
#include "sl_time.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RPC_PENDING 16
#define RPC_STOP_MS 5000      /* a stopping server's wait for calls in progress */

typedef struct rpc_worker rpc_worker_t;

typedef enum { RPC_CALL_REQUESTED, RPC_CALL_SENDING } rpc_call_state_t;

typedef struct rpc_call {
    rpc_call_state_t state;
    rpc_worker_t *w;
    size_t method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_byte_buffer *response;
    grpc_slice details;
    grpc_call_details call_details;   /* unregistered methods only */
    int cancelled;
    int status;                       /* the status sent (RPC_CALL_SENDING) */
    int64_t since_ns;                 /* when the handler first ran; 0 = not yet */
    struct rpc_call *next;            /* waiter queue */
} rpc_call_t;

#define RPC_UNREGISTERED ((size_t)-1)

struct rpc_worker {
    rpc_server_t *srv;
    grpc_completion_queue *cq;
    pthread_t thread;
    bool started;
    void *tctx;
};

struct rpc_server {
    rpc_server_opts_t opts;
    char *auth_value;         /* "Bearer <token>" or NULL */
    const rpc_method_t *methods;
    size_t n_methods;
    void **handles;           /* registered method handles */
    grpc_server *server;
    grpc_completion_queue *shutdown_cq;
    rpc_worker_t *workers;
    int n_workers;
    int port;
    /* the waiter thread: deferred calls, first in first out */
    pthread_mutex_t wait_mu;
    pthread_cond_t wait_cv;
    rpc_call_t *wait_head, *wait_tail;
    bool wait_stop;
    bool waiter_started;
    pthread_t waiter;
    void *waiter_tctx;
    _Atomic uint64_t calls, errors, unauthenticated, cancelled;
    bool drained;                    /* rpc_server_drain ran */
    atomic_bool stopping;            /* draining: calls not yet begun get UNAVAILABLE */
    sl_hist_t latency;               /* ns from a call's first handler run to its reply */
};

int rpc_reply_fail(rpc_reply_t *reply, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reply->message, sizeof reply->message, fmt, ap);
    va_end(ap);
    reply->status = status;
    return status;
}

void rpc_reply_defer(rpc_reply_t *reply)
{
    reply->deferred = true;
}

static int rpc__post(rpc_worker_t *w, size_t method)
{
    rpc_call_t *c = calloc(1, sizeof *c);
    if (!c) return SL_ENOMEM;
    c->w = w;
    c->method = method;
    c->state = RPC_CALL_REQUESTED;
    grpc_metadata_array_init(&c->md);
    grpc_call_error e;
    if (method == RPC_UNREGISTERED) {
        grpc_call_details_init(&c->call_details);
        e = grpc_server_request_call(w->srv->server, &c->call, &c->call_details, &c->md, w->cq,
                                     w->cq, c);
    } else {
        e = grpc_server_request_registered_call(w->srv->server, w->srv->handles[method], &c->call,
                                                &c->deadline, &c->md, &c->payload, w->cq, w->cq, c);
    }
    if (e != GRPC_CALL_OK) {
        if (method == RPC_UNREGISTERED) grpc_call_details_destroy(&c->call_details);
        grpc_metadata_array_destroy(&c->md);
        free(c);
        return SL_EIO;
    }
    return 0;
}

static void rpc__call_free(rpc_call_t *c)
{
    if (c->call) grpc_call_unref(c->call);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->response) grpc_byte_buffer_destroy(c->response);
    if (c->state == RPC_CALL_SENDING) grpc_slice_unref(c->details);
    if (c->method == RPC_UNREGISTERED) grpc_call_details_destroy(&c->call_details);
    grpc_metadata_array_destroy(&c->md);
    free(c);
}

static bool rpc__authorized(const rpc_server_t *srv, const rpc_call_t *c)
{
    if (!srv->auth_value || srv->methods[c->method].public_) return true;
    /* (unregistered methods never reach here: they are answered UNIMPLEMENTED) */
    size_t want = strlen(srv->auth_value);
    for (size_t i = 0; i < c->md.count; i++) {
        if (grpc_slice_str_cmp(c->md.metadata[i].key, "authorization") != 0) continue;
        grpc_slice v = c->md.metadata[i].value;
        size_t n = GRPC_SLICE_LENGTH(v);
        const unsigned char *p = GRPC_SLICE_START_PTR(v);
        unsigned diff = (unsigned)(n ^ want);
        for (size_t k = 0; k < n; k++)
            diff |= p[k] ^ (unsigned char)(k < want ? srv->auth_value[k] : 0);
        return diff == 0;
    }
    return false;
}

/* The response message of body, which it takes: past a few bytes, gRPC
 * gets the buffer itself (a slice that frees it when gRPC is done with it)
 * instead of a copy; body is left empty either way. */
static grpc_byte_buffer *rpc__body_message(sl_buf_t *body)
{
    grpc_slice s;
    if (body->len > 64) {
        s = grpc_slice_new(body->data, body->len, free);
        *body = (sl_buf_t)SL_BUF_INIT;
    } else {
        s = grpc_slice_from_copied_buffer((const char *)body->data, body->len);
        sl_buf_free(body);
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* A call's response batch is done (ok: it completed), and the call freed.
 * An OK reply that gRPC reports cancelled or failed on its way (a stop's
 * RPC_STOP_MS ran out, the client left) is counted in `cancelled`: gRPC
 * may say so of a reply the client did get whole, or not of one it did not
 * (a race at the transport's close), so `calls - errors - cancelled` and
 * `calls - errors` bound what clients received OK. */
static void rpc__sent(rpc_server_t *srv, rpc_call_t *c, bool ok)
{
    if (c->status == RPC_OK && (!ok || c->cancelled))
        atomic_fetch_add_explicit(&srv->cancelled, 1, memory_order_relaxed);
    rpc__call_free(c);
}

/* Sends a call's whole response in one batch (the message only when
 * status is OK, taken from body, which may be NULL for an empty one;
 * details only otherwise); the batch's tag frees the call. */
static void rpc__send(rpc_server_t *srv, rpc_call_t *c, int status, const char *details,
                      sl_buf_t *body)
{
    c->status = status;
    atomic_fetch_add_explicit(&srv->calls, 1, memory_order_relaxed);
    if (status != RPC_OK) atomic_fetch_add_explicit(&srv->errors, 1, memory_order_relaxed);
    if (c->since_ns) sl_hist_record(&srv->latency, (uint64_t)(sl_mono_ns() - c->since_ns));
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 0;
    n++;
    if (status == RPC_OK) {
        sl_buf_t empty = SL_BUF_INIT;
        c->response = rpc__body_message(body ? body : &empty);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->response;
        n++;
    }
    c->details = grpc_slice_from_copied_string(status == RPC_OK ? "" : details);
    c->state = RPC_CALL_SENDING;
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    ops[n].data.send_status_from_server.status = (grpc_status_code)status;
    ops[n].data.send_status_from_server.status_details = &c->details;
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;
    if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) rpc__sent(srv, c, false);
}

/* Hands a deferred call to the waiter thread; once the server is stopping
 * (the waiter may be gone), answers it UNAVAILABLE instead, so no call is
 * left unanswered to hold up the shutdown. */
static void rpc__defer(rpc_server_t *srv, rpc_call_t *c)
{
    pthread_mutex_lock(&srv->wait_mu);
    if (srv->wait_stop) {
        pthread_mutex_unlock(&srv->wait_mu);
        rpc__send(srv, c, RPC_UNAVAILABLE, "server shutting down", NULL);
        return;
    }
    c->next = NULL;
    if (srv->wait_tail) srv->wait_tail->next = c;
    else srv->wait_head = c;
    srv->wait_tail = c;
    pthread_cond_signal(&srv->wait_cv);
    pthread_mutex_unlock(&srv->wait_mu);
}

/* Runs the handler with the running thread's context and sends the whole
 * response in one batch, or queues the call for the waiter thread when the
 * handler deferred it. */
static void rpc__handle(rpc_server_t *srv, rpc_call_t *c, void *tctx)
{
    if (!c->since_ns && atomic_load_explicit(&srv->stopping, memory_order_relaxed)) {
        /* taken from gRPC's queue but not begun when the stop came: not in
         * flight yet, so answered at once (the client may retry elsewhere) */
        rpc__send(srv, c, RPC_UNAVAILABLE, "server shutting down", NULL);
        return;
    }
    if (!c->since_ns) c->since_ns = sl_mono_ns();
    rpc_reply_t reply = { .body = SL_BUF_INIT, .status = RPC_OK, .since_ns = c->since_ns };

    if (c->method == RPC_UNREGISTERED) {
        rpc_reply_fail(&reply, RPC_UNIMPLEMENTED, "unknown method %.*s",
                       (int)GRPC_SLICE_LENGTH(c->call_details.method),
                       (const char *)GRPC_SLICE_START_PTR(c->call_details.method));
    } else if (!rpc__authorized(srv, c)) {
        atomic_fetch_add_explicit(&srv->unauthenticated, 1, memory_order_relaxed);
        rpc_reply_fail(&reply, RPC_UNAUTHENTICATED,
                       "missing or wrong bearer token (metadata 'authorization: Bearer <token>')");
    } else {
        grpc_slice req = grpc_empty_slice();
        const grpc_byte_buffer *pl = c->payload;
        if (pl && pl->type == GRPC_BB_RAW && pl->data.raw.compression == GRPC_COMPRESS_NONE &&
            pl->data.raw.slice_buffer.count == 1) {
            /* the usual case, one uncompressed slice: read in place */
            req = grpc_slice_ref(pl->data.raw.slice_buffer.slices[0]);
        } else if (pl) {
            grpc_byte_buffer_reader rd;
            if (!grpc_byte_buffer_reader_init(&rd, c->payload)) {
                rpc_reply_fail(&reply, RPC_INTERNAL, "cannot read the request message");
            } else {
                req = grpc_byte_buffer_reader_readall(&rd);
                grpc_byte_buffer_reader_destroy(&rd);
            }
        }
        if (reply.status == RPC_OK) {
            size_t n = GRPC_SLICE_LENGTH(req);
            if (srv->opts.max_message_bytes && n > srv->opts.max_message_bytes)
                rpc_reply_fail(&reply, RPC_RESOURCE_EXHAUSTED, "request of %zu bytes exceeds %zu",
                               n, srv->opts.max_message_bytes);
            else
                srv->methods[c->method].fn(srv->opts.ctx, tctx,
                                           n ? GRPC_SLICE_START_PTR(req) : NULL, n, &reply);
        }
        grpc_slice_unref(req);
    }
    if (reply.deferred && reply.status == RPC_OK) {
        sl_buf_free(&reply.body);
        rpc__defer(srv, c);           /* the payload stays with the call */
        return;
    }
    rpc__send(srv, c, reply.status, reply.message, &reply.body);
    sl_buf_free(&reply.body);         /* (emptied when sent) */
}

static void *rpc__worker_main(void *arg)
{
    rpc_worker_t *w = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        rpc_call_t *c = ev.tag;
        if (c->state == RPC_CALL_REQUESTED) {
            if (!ev.success) {          /* server shutting down */
                rpc__call_free(c);
                continue;
            }
            rpc__post(w, c->method);    /* keep the same number pending */
            rpc__handle(w->srv, c, w->tctx);
        } else {
            rpc__sent(w->srv, c, ev.success);
        }
    }
    return NULL;
}

/* The waiter thread: runs the deferred calls again, all that are queued
 * in one pass (a call deferred again goes back in the queue), then sleeps
 * 2 ms while any are left. After rpc_server_stop asked it to stop, it
 * answers those still queued UNAVAILABLE and exits. */
static void *rpc__waiter_main(void *arg)
{
    rpc_server_t *srv = arg;
    pthread_mutex_lock(&srv->wait_mu);
    for (;;) {
        while (!srv->wait_head && !srv->wait_stop) pthread_cond_wait(&srv->wait_cv, &srv->wait_mu);
        rpc_call_t *c = srv->wait_head;
        bool stopping = srv->wait_stop;
        srv->wait_head = srv->wait_tail = NULL;
        pthread_mutex_unlock(&srv->wait_mu);
        for (rpc_call_t *next; c; c = next) {
            next = c->next;
            if (stopping) rpc__send(srv, c, RPC_UNAVAILABLE, "server shutting down", NULL);
            else rpc__handle(srv, c, srv->waiter_tctx);
        }
        if (stopping) return NULL;
        struct timespec ts = { 0, 2 * 1000000 };
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&srv->wait_mu);
    }
}

int rpc_server_start(const rpc_server_opts_t *opts, const rpc_method_t *methods, size_t n,
                     rpc_server_t **out, char *errstr, size_t errsize)
{
    *out = NULL;
    rpc_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) return SL_ENOMEM;
    srv->opts = *opts;
    srv->methods = methods;
    srv->n_methods = n;
    if (srv->opts.threads < 1) srv->opts.threads = 1;
    if (opts->token && *opts->token) {
        size_t len = strlen(opts->token) + 8;
        srv->auth_value = malloc(len);
        if (!srv->auth_value) { free(srv); return SL_ENOMEM; }
        snprintf(srv->auth_value, len, "Bearer %s", opts->token);
    }
    srv->handles = calloc(n, sizeof *srv->handles);
    srv->workers = calloc((size_t)srv->opts.threads, sizeof *srv->workers);
    if (!srv->handles || !srv->workers) goto nomem;
    pthread_mutex_init(&srv->wait_mu, NULL);
    pthread_cond_init(&srv->wait_cv, NULL);

    grpc_init();
    grpc_arg args[2];
    int nargs = 0;
    if (opts->max_message_bytes) {
        args[nargs].type = GRPC_ARG_INTEGER;
        args[nargs].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        args[nargs].value.integer = (int)(opts->max_message_bytes + 1024);
        nargs++;
    }
    grpc_channel_args chargs = { (size_t)nargs, args };
    srv->server = grpc_server_create(&chargs, NULL);
    for (size_t i = 0; i < n; i++)
        srv->handles[i] = grpc_server_register_method(srv->server, methods[i].path, NULL,
                                                      GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    srv->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->shutdown_cq, NULL);
    srv->n_workers = srv->opts.threads;
    for (int i = 0; i < srv->n_workers; i++) {
        srv->workers[i].srv = srv;
        if (i == 0) {
            srv->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
        } else {
            /* no pollset: woken by the poller through a condition variable */
            grpc_completion_queue_attributes attr = { .version = GRPC_CQ_CURRENT_VERSION,
                                                      .cq_completion_type = GRPC_CQ_NEXT,
                                                      .cq_polling_type = GRPC_CQ_NON_POLLING };
            srv->workers[i].cq = grpc_completion_queue_create(
                grpc_completion_queue_factory_lookup(&attr), &attr, NULL);
        }
        grpc_server_register_completion_queue(srv->server, srv->workers[i].cq, NULL);
    }
    char addr[300];
    snprintf(addr, sizeof addr, "%s:%d", opts->bind && *opts->bind ? opts->bind : "127.0.0.1",
             opts->port);
    bool tls = opts->tls_cert_pem && *opts->tls_cert_pem;
    grpc_server_credentials *creds;
    if (tls) {
        /* server-side TLS only (no client certificates): clients
         * authenticate with the bearer token over the encrypted channel */
        grpc_ssl_pem_key_cert_pair pair = { opts->tls_key_pem, opts->tls_cert_pem };
        creds = grpc_ssl_server_credentials_create(NULL, &pair, 1, 0, NULL);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    srv->port = creds ? grpc_server_add_http2_port(srv->server, addr, creds) : 0;
    if (creds) grpc_server_credentials_release(creds);
    if (srv->port <= 0) {
        if (tls)
            snprintf(errstr, errsize, "grpc: cannot listen on %s with TLS (address in use, or "
                                      "grpc_tls_cert / grpc_tls_key not a matching PEM "
                                      "certificate and private key)", addr);
        else
            snprintf(errstr, errsize, "grpc: cannot listen on %s", addr);
        rpc_server_stop(srv);
        return SL_EIO;
    }
    grpc_server_start(srv->server);
    for (int i = 0; i < srv->n_workers; i++) {
        rpc_worker_t *w = &srv->workers[i];
        if (opts->thread_ctx_new && !(w->tctx = opts->thread_ctx_new(opts->ctx))) goto nomem_started;
        for (size_t m = 0; m < n; m++)
            for (int k = 0; k < RPC_PENDING; k++)
                if (rpc__post(w, m)) goto nomem_started;
        for (int k = 0; k < 2; k++)
            if (rpc__post(w, RPC_UNREGISTERED)) goto nomem_started;
        if (pthread_create(&w->thread, NULL, rpc__worker_main, w)) goto nomem_started;
        w->started = true;
    }
    if (opts->thread_ctx_new && !(srv->waiter_tctx = opts->thread_ctx_new(opts->ctx))) goto nomem_started;
    if (pthread_create(&srv->waiter, NULL, rpc__waiter_main, srv)) goto nomem_started;
    srv->waiter_started = true;
    *out = srv;
    return 0;
nomem_started:
    snprintf(errstr, errsize, "grpc: out of memory or threads");
    rpc_server_stop(srv);
    return SL_ENOMEM;
nomem:
    if (srv->handles && srv->workers) {
        pthread_mutex_destroy(&srv->wait_mu);
        pthread_cond_destroy(&srv->wait_cv);
    }
    free(srv->handles);
    free(srv->workers);
    free(srv->auth_value);
    free(srv);
    snprintf(errstr, errsize, "grpc: out of memory");
    return SL_ENOMEM;
}

int rpc_server_port(const rpc_server_t *srv) { return srv->port; }

static void rpc__drain(rpc_server_t *srv, grpc_completion_queue *cq)
{
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE || !ev.tag) continue;
        rpc_call_t *c = ev.tag;
        if (c->state == RPC_CALL_SENDING) rpc__sent(srv, c, ev.success);
        else rpc__call_free(c);
    }
}

void rpc_server_drain(rpc_server_t *srv)
{
    if (!srv || srv->drained) return;
    srv->drained = true;
    atomic_store(&srv->stopping, true);
    static int shutdown_tag;
    /* No new calls from here; calls in progress finish (their replies are
     * sent) before the notification, for at most RPC_STOP_MS; then the
     * rest is cancelled. */
    grpc_server_shutdown_and_notify(srv->server, srv->shutdown_cq, &shutdown_tag);
    /* the waiter first: its calls keep their channels open, and the
     * workers must still be running to free them once sent */
    pthread_mutex_lock(&srv->wait_mu);
    srv->wait_stop = true;           /* from now on rpc__defer answers at once */
    rpc_call_t *left = srv->waiter_started ? NULL : srv->wait_head;
    if (left) srv->wait_head = srv->wait_tail = NULL;
    pthread_cond_signal(&srv->wait_cv);
    pthread_mutex_unlock(&srv->wait_mu);
    if (srv->waiter_started) pthread_join(srv->waiter, NULL);
    for (rpc_call_t *next; left; left = next) {
        next = left->next;
        rpc__send(srv, left, RPC_UNAVAILABLE, "server shutting down", NULL);
    }
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(RPC_STOP_MS, GPR_TIMESPAN));
    bool cancelled = false;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(srv->shutdown_cq,
                                                   cancelled ? gpr_inf_future(GPR_CLOCK_REALTIME) : deadline,
                                                   NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            grpc_server_cancel_all_calls(srv->server);
            cancelled = true;
            continue;
        }
        if (ev.type == GRPC_OP_COMPLETE && ev.tag == &shutdown_tag) break;
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    }
}

void rpc_server_stop(rpc_server_t *srv)
{
    if (!srv) return;
    rpc_server_drain(srv);
    for (int i = 0; i < srv->n_workers; i++) {
        rpc_worker_t *w = &srv->workers[i];
        grpc_completion_queue_shutdown(w->cq);
        if (w->started) pthread_join(w->thread, NULL);
        else rpc__drain(srv, w->cq);
    }
    grpc_server_destroy(srv->server);
    for (int i = 0; i < srv->n_workers; i++) {
        rpc_worker_t *w = &srv->workers[i];
        grpc_completion_queue_destroy(w->cq);
        if (w->tctx && srv->opts.thread_ctx_free) srv->opts.thread_ctx_free(srv->opts.ctx, w->tctx);
    }
    if (srv->waiter_tctx && srv->opts.thread_ctx_free)
        srv->opts.thread_ctx_free(srv->opts.ctx, srv->waiter_tctx);
    pthread_mutex_destroy(&srv->wait_mu);
    pthread_cond_destroy(&srv->wait_cv);
    grpc_completion_queue_shutdown(srv->shutdown_cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(srv->shutdown_cq,
                                                   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    }
    grpc_completion_queue_destroy(srv->shutdown_cq);
    free(srv->handles);
    free(srv->workers);
    free(srv->auth_value);
    free(srv);
    grpc_shutdown();
}

void rpc_server_latency(const rpc_server_t *srv, sl_hist_t *into)
{
    sl_hist_merge(into, &srv->latency);
}

void rpc_server_stats(const rpc_server_t *srv, rpc_server_stats_t *out)
{
    out->calls = atomic_load_explicit(&srv->calls, memory_order_relaxed);
    out->errors = atomic_load_explicit(&srv->errors, memory_order_relaxed);
    out->cancelled = atomic_load_explicit(&srv->cancelled, memory_order_relaxed);
    out->unauthenticated = atomic_load_explicit(&srv->unauthenticated, memory_order_relaxed);
}
