/*
 * resp_server.c — RESP2 front end: event loops, connections, commands.
 *
 * Shape (Redis's): each loop thread owns an epoll set, its own SO_REUSEPORT
 * listening socket and the connections it accepted. On readable: one read()
 * of up to 16 KiB, feed the parser, run every complete command, appending
 * replies to the connection's output buffer; once every ready connection of
 * the round was read, each buffer is written at once — a pipeline of 16
 * requests read together is answered by one write(). Only when the socket
 * cannot take everything is EPOLLOUT armed.
 *
 * Connection life:
 *
 *     accept --(over max_clients)--> "-ERR max clients" --> closed
 *       |
 *     OPEN --read/parse/run/flush--> OPEN
 *       |  \--protocol error or limit--> CLOSING (error reply flushed) --> closed
 *       |  \--QUIT--> CLOSING --> closed
 *       \--EOF / I/O error / idle timeout / output over limit--> closed
 *
 * Lookups go to the serve_backend_t with a scratch owned by the loop, so
 * serving never takes a lock; each command pins the backend (serve_lookup.h:
 * a swappable one may carry a newer schema) and reads schema and values
 * through the pinned one only, refitting the loop's per-schema arrays when
 * the schema changed; state reads are RocksDB gets, which never
 * block the ingest writer. Counters are per loop (relaxed atomics, summed by
 * resp_server_stats), so threads do not share cache lines on the hot path.
 */
#define _GNU_SOURCE
#include "resp_server.h"
#include "sl_hist.h"
#include "resp_parse.h"
#include "resp_reply.h"
#include "serve_cache.h"
#include "sl_err.h"
#include "sl_time.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define RESP_READ_CHUNK (16 * 1024)
#define RESP_MAX_EVENTS 128
#define RESP_DRAIN_MS 2000            /* half-closed connections after an error */
#define RESP_STOP_MS 5000             /* a stopping server's wait for slow readers */
#define RESP_DRAIN_MAX (8u << 20)
#define RESP_CACHE_BYTES ((size_t)32 << 20)   /* encoded answers, per loop */

typedef struct resp_loop resp_loop_t;

typedef struct resp_conn {
    int fd;
    resp_loop_t *loop;
    resp_parser_t *parser;
    sl_buf_t out;
    size_t out_sent;
    bool want_write;          /* EPOLLOUT armed */
    bool closing;             /* close once `out` is flushed */
    bool drain;               /* ...after a half-close, reading what the client still sends */
    bool draining;
    size_t drained;
    bool authed;
    int64_t last_active_ms;
    uint64_t id;
    char name[64];
    struct resp_conn *prev, *next;
    bool pending;             /* on the loop's list of replies to write */
    struct resp_conn *pend_prev, *pend_next;
} resp_conn_t;

typedef struct resp_counters {
    _Atomic uint64_t connections, rejected, clients, commands, lookups, hits, misses,
        protocol_errors, idle_closed, bytes_in, bytes_out, cache_hits;
} resp_counters_t;

struct resp_loop {
    resp_server_t *srv;
    int epfd;
    int lfd;
    int evfd;                 /* stop signal */
    pthread_t thread;
    bool started;
    resp_conn_t *conns;       /* every open connection (idle scan) */
    resp_conn_t *pending;     /* replies to write before the next epoll_wait */
    serve_scratch_t *scratch;
    const serve_backend_t *be;  /* pinned for the running command */
    const schema_t *fit;      /* the schema vals, arena_* and svc_views fit */
    int **svc_views;          /* per service: its distinct views, -1 terminated */
    size_t n_svc;
    serve_value_t *vals;      /* room for the widest view */
    sl_buf_t arena;           /* FEATURES: values of one entity, pre-encoded */
    size_t *arena_off, *arena_len;
    char *keybuf;             /* unescaped key parts */
    size_t keybuf_cap;
    serve_cache_t *cache;     /* encoded answers (NULL: backend cannot tell validity) */
    sl_buf_t vbuf;            /* the answer being encoded */
    uint32_t *slices;         /* its slices: (off, len) pairs */
    size_t slices_cap;        /* pairs */
    resp_counters_t ctr;
    sl_hist_t latency;        /* ns per command, from dispatch to its reply encoded */
};

struct resp_server {
    resp_server_opts_t opts;
    char *password;
    const serve_backend_t *be;
    int port;
    int n_loops;
    resp_loop_t *loops;
    _Atomic uint64_t n_clients;
    _Atomic uint64_t next_id;
    int64_t started_ms;
};

#define CTR_ADD(loop, field, n) atomic_fetch_add_explicit(&(loop)->ctr.field, (n), memory_order_relaxed)

/* ---- options ----------------------------------------------------------- */

void resp_server_opts_default(resp_server_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->bind = "127.0.0.1";
    o->port = 6380;
    o->threads = 2;
    o->max_clients = 1024;
    o->max_request_bytes = 1 << 20;
    o->max_args = 1024;
    o->max_entities = 1000;
    o->idle_timeout_ms = 300000;
    o->max_output_bytes = 64u << 20;
    o->cache_bytes = RESP_CACHE_BYTES;
}

/* ---- connections ------------------------------------------------------- */

static void resp__pending_remove(resp_conn_t *c)
{
    if (!c->pending) return;
    if (c->pend_prev) c->pend_prev->pend_next = c->pend_next;
    else c->loop->pending = c->pend_next;
    if (c->pend_next) c->pend_next->pend_prev = c->pend_prev;
    c->pending = false;
    c->pend_prev = c->pend_next = NULL;
}

static void resp__conn_close(resp_conn_t *c)
{
    resp_loop_t *loop = c->loop;
    resp__pending_remove(c);
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->prev) c->prev->next = c->next;
    else loop->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    resp_parser_free(c->parser);
    sl_buf_free(&c->out);
    free(c);
    atomic_fetch_sub_explicit(&loop->srv->n_clients, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&loop->ctr.clients, 1, memory_order_relaxed);
}

static void resp__conn_set_write(resp_conn_t *c, bool on)
{
    if (c->want_write == on) return;
    struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_write = on;
}

/* Writes what it can. Returns false when the connection was closed. */
static bool resp__conn_flush(resp_conn_t *c)
{
    while (c->out_sent < c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out_sent, c->out.len - c->out_sent);
        if (n > 0) {
            c->out_sent += (size_t)n;
            CTR_ADD(c->loop, bytes_out, (uint64_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->out.len - c->out_sent > c->loop->srv->opts.max_output_bytes) {
                resp__conn_close(c);
                return false;
            }
            resp__conn_set_write(c, true);
            return true;
        }
        resp__conn_close(c);
        return false;
    }
    sl_buf_reset(&c->out);
    c->out_sent = 0;
    if (c->closing && c->drain && !c->draining) {
        /* Closing with unread input would make the kernel send a reset that
         * can destroy the error reply in flight: half-close, then read and
         * drop what the client still sends, for a bounded time and size. */
        shutdown(c->fd, SHUT_WR);
        c->draining = true;
        c->last_active_ms = sl_now_ms();
        resp__conn_set_write(c, false);
        return true;
    }
    if (c->closing && !c->draining) {
        resp__conn_close(c);
        return false;
    }
    resp__conn_set_write(c, false);
    return true;
}

/* ---- value encoding ---------------------------------------------------- */

static int resp__json_str(sl_buf_t *b, const char *s, size_t n)
{
    if (sl_buf_append(b, "\"", 1)) return SL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int rc;
        if (c == '"' || c == '\\') rc = sl_buf_printf(b, "\\%c", c);
        else if (c < 0x20) rc = sl_buf_printf(b, "\\u%04x", c);
        else rc = sl_buf_append(b, &c, 1);
        if (rc) return rc;
    }
    return sl_buf_append(b, "\"", 1);
}

static int resp__scalar_json(sl_buf_t *b, const agg_scalar_t *s)
{
    char tmp[48];
    switch (s->type) {
    case AGG_VAL_INT: return sl_buf_printf(b, "%lld", (long long)s->i);
    case AGG_VAL_DOUBLE:
        return sl_buf_append(b, tmp, resp_format_double(s->d, tmp, sizeof tmp));
    case AGG_VAL_STRING: return resp__json_str(b, s->s, s->slen);
    default: return sl_buf_append(b, "null", 4);
    }
}

/* One feature value as a bulk string (nil when it has no value). Lists
 * (last_n) are written as a JSON array, newest last. */
static int resp__reply_value(sl_buf_t *b, const serve_value_t *v)
{
    const agg_value_t *a = &v->val;
    if (v->status == SERVE_STATUS_NOT_FOUND || v->status == SERVE_STATUS_OUTSIDE_TTL)
        return resp_reply_nil(b);
    switch (a->type) {
    case AGG_VAL_INT: return resp_reply_int_bulk(b, a->i);
    case AGG_VAL_DOUBLE: return resp_reply_double(b, a->d);
    case AGG_VAL_STRING: return resp_reply_bulk(b, a->s, a->slen);
    case AGG_VAL_LIST: {
        sl_buf_t j = SL_BUF_INIT;
        int rc = sl_buf_append(&j, "[", 1);
        for (size_t i = 0; !rc && i < a->n_items; i++) {
            if (i) rc = sl_buf_append(&j, ",", 1);
            if (!rc) rc = resp__scalar_json(&j, &a->items[i]);
        }
        if (!rc) rc = sl_buf_append(&j, "]", 1);
        if (!rc) rc = resp_reply_bulk(b, j.data, j.len);
        sl_buf_free(&j);
        return rc;
    }
    default: return resp_reply_nil(b);
    }
}

/* ---- lookups ----------------------------------------------------------- */

static bool resp__entity_present(const serve_value_t *vals, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (vals[i].status == SERVE_STATUS_PRESENT || vals[i].status == SERVE_STATUS_PARTIAL_WINDOW)
            return true;
    return false;
}

#define RESP_BAD_KEY "ERR bad entity key: composite keys are written {k1|k2}, with \\ escaping | } and \\"

/* Parses a key spec into loop->keybuf. Returns 0, SL_EINVAL or SL_ENOMEM
 * (nothing replied). */
static int resp__key(resp_conn_t *c, const char *spec, size_t n, serve_key_t *key)
{
    resp_loop_t *loop = c->loop;
    if (n + 1 > loop->keybuf_cap) {
        char *kb = realloc(loop->keybuf, n + 1);
        if (!kb) return SL_ENOMEM;
        loop->keybuf = kb;
        loop->keybuf_cap = n + 1;
    }
    return serve_key_parse(spec, n, loop->keybuf, key) ? SL_EINVAL : 0;
}

/* Parses "view:spec"; returns the view index, or -1 after replying an error. */
static int resp__view_arg(resp_conn_t *c, const char *arg, size_t n, const char **spec,
                          size_t *speclen)
{
    int view = serve_key_view(c->loop->be->schema, arg, n, spec, speclen);
    if (view < 0) {
        if (!memchr(arg, ':', n))
            resp_reply_error(&c->out, "ERR key must be VIEW:ENTITY_KEY (e.g. user_stats:u42 "
                                      "or trips:{eu|42} for composite keys)");
        else
            resp_reply_errorf(&c->out, "ERR unknown view '%.*s'",
                              (int)((const char *)memchr(arg, ':', n) - arg), arg);
    }
    return view;
}

/* Looks up the entity named by a "view:key" argument into loop->vals.
 * Returns the view index, or -1 after replying an error. */
static int resp__lookup_arg(resp_conn_t *c, const char *arg, size_t n)
{
    resp_loop_t *loop = c->loop;
    const serve_backend_t *be = loop->be;
    const char *spec;
    size_t speclen;
    int view = resp__view_arg(c, arg, n, &spec, &speclen);
    if (view < 0) return -1;
    serve_key_t key;
    if (resp__key(c, spec, speclen, &key)) {
        resp_reply_error(&c->out, RESP_BAD_KEY);
        return -1;
    }
    char err[200] = "";
    CTR_ADD(loop, lookups, 1);
    int rc = be->lookup(be, loop->scratch, view, &key, sl_now_ms(), loop->vals, err, sizeof err);
    if (rc == SL_EINVAL || rc == SL_ETYPE) {
        resp_reply_errorf(&c->out, "ERR bad entity key for view '%s': %s",
                          be->schema->views[view].name, err[0] ? err : sl_strerror(rc));
        return -1;
    }
    if (rc) {
        resp_reply_errorf(&c->out, "ERR lookup failed: %s", err[0] ? err : sl_strerror(rc));
        return -1;
    }
    if (resp__entity_present(loop->vals, be->schema->views[view].n_features)) CTR_ADD(loop, hits, 1);
    else CTR_ADD(loop, misses, 1);
    return view;
}

/* One entity's answer, encoded: slice 0 is the whole HGETALL reply ("*0"
 * when absent), slice 1 + i feature i's value as HMGET sends it. Points
 * into the loop's cache or vbuf: valid until the loop's next vector. */
typedef struct resp_vec {
    const unsigned char *data;
    const uint32_t *slices;
    bool present;
} resp_vec_t;

#define RESP_VEC_PRESENT 1
#define RESP_VEC_BADSPEC 1    /* resp__vector: the key spec does not parse */

static int resp__vec_encode(resp_loop_t *loop, const schema_view_t *v, bool present)
{
    sl_buf_t *b = &loop->vbuf;
    size_t n = v->n_features;
    if (n + 1 > loop->slices_cap) {
        uint32_t *ns = realloc(loop->slices, (n + 1) * 2 * sizeof *ns);
        if (!ns) return SL_ENOMEM;
        loop->slices = ns;
        loop->slices_cap = n + 1;
    }
    sl_buf_reset(b);
    int rc = resp_reply_array(b, present ? 2 * n : 0);
    size_t head = b->len;                /* absent: "*0" is the whole HGETALL reply */
    for (size_t i = 0; !rc && i < n; i++) {
        if (present) rc = resp_reply_bulk_str(b, v->features[i].name);
        size_t off = b->len;
        if (!rc) rc = resp__reply_value(b, &loop->vals[i]);
        loop->slices[2 * (i + 1)] = (uint32_t)off;
        loop->slices[2 * (i + 1) + 1] = (uint32_t)(b->len - off);
    }
    loop->slices[0] = 0;
    loop->slices[1] = (uint32_t)(present ? b->len : head);
    if (!rc && b->len > UINT32_MAX) rc = SL_ETOOBIG;
    return rc;
}

/* The answer for entity `spec` of `view` through the pinned backend: from
 * the loop's cache while the backend says it still holds (generation read
 * before the lookup, request time before valid_until), else one lookup at
 * the request time, encoded and cached. Returns 0, RESP_VEC_BADSPEC, or a
 * lookup error (SL_EINVAL / SL_ETYPE for a key that does not fit, others
 * server-side) with err set. Nothing replied. */
static int resp__vector(resp_loop_t *loop, int view, const char *spec, size_t speclen,
                        resp_vec_t *out, char *err, size_t errsize)
{
    const serve_backend_t *be = loop->be;
    const schema_view_t *v = &be->schema->views[view];
    bool cacheable = loop->cache && be->generation && be->valid_until;
    uint64_t gen = 0, h = 0;
    int64_t now = sl_now_ms();
    CTR_ADD(loop, lookups, 1);
    if (cacheable) {
        gen = be->generation(be);
        h = serve_cache_hash(view, spec, speclen);
        const serve_cache_entry_t *e =
            serve_cache_get(loop->cache, h, be, view, spec, speclen, gen, now);
        if (e) {
            CTR_ADD(loop, cache_hits, 1);
            out->data = e->data;
            out->slices = e->slices;
            out->present = e->flags & RESP_VEC_PRESENT;
            if (out->present) CTR_ADD(loop, hits, 1);
            else CTR_ADD(loop, misses, 1);
            return 0;
        }
    }
    serve_key_t key;
    if (speclen + 1 > loop->keybuf_cap) {
        char *kb = realloc(loop->keybuf, speclen + 1);
        if (!kb) {
            snprintf(err, errsize, "out of memory");
            return SL_ENOMEM;
        }
        loop->keybuf = kb;
        loop->keybuf_cap = speclen + 1;
    }
    if (serve_key_parse(spec, speclen, loop->keybuf, &key)) return RESP_VEC_BADSPEC;
    int rc = be->lookup(be, loop->scratch, view, &key, now, loop->vals, err, errsize);
    if (rc) return rc;
    bool present = resp__entity_present(loop->vals, v->n_features);
    if (present) CTR_ADD(loop, hits, 1);
    else CTR_ADD(loop, misses, 1);
    if ((rc = resp__vec_encode(loop, v, present))) {
        snprintf(err, errsize, "%s", sl_strerror(rc));
        return rc;
    }
    if (cacheable)
        serve_cache_put(loop->cache, h, be, view, spec, speclen, gen,
                        be->valid_until(be, loop->scratch), present ? RESP_VEC_PRESENT : 0,
                        loop->vbuf.data, loop->vbuf.len, loop->slices, v->n_features + 1);
    out->data = loop->vbuf.data;
    out->slices = loop->slices;
    out->present = present;
    return 0;
}

/* resp__vector for a "view:key" argument. Returns the view, or -1 after
 * replying an error. */
static int resp__vector_arg(resp_conn_t *c, const char *arg, size_t n, resp_vec_t *out)
{
    const char *spec;
    size_t speclen;
    int view = resp__view_arg(c, arg, n, &spec, &speclen);
    if (view < 0) return -1;
    char err[200] = "";
    int rc = resp__vector(c->loop, view, spec, speclen, out, err, sizeof err);
    if (rc == RESP_VEC_BADSPEC) {
        resp_reply_error(&c->out, RESP_BAD_KEY);
        return -1;
    }
    if (rc == SL_EINVAL || rc == SL_ETYPE) {
        resp_reply_errorf(&c->out, "ERR bad entity key for view '%s': %s",
                          c->loop->be->schema->views[view].name, err[0] ? err : sl_strerror(rc));
        return -1;
    }
    if (rc) {
        resp_reply_errorf(&c->out, "ERR lookup failed: %s", err[0] ? err : sl_strerror(rc));
        return -1;
    }
    return view;
}

static inline void resp__vec_put(sl_buf_t *b, const resp_vec_t *vec, size_t slice)
{
    sl_buf_append(b, vec->data + vec->slices[2 * slice], vec->slices[2 * slice + 1]);
}

/* ---- commands ---------------------------------------------------------- */

typedef void (*resp_cmd_fn)(resp_conn_t *c, const resp_cmd_t *cmd);

static bool resp__eq(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

static void resp__cmd_ping(resp_conn_t *c, const resp_cmd_t *cmd)
{
    if (cmd->argc == 1) resp_reply_status(&c->out, "PONG");
    else resp_reply_bulk(&c->out, cmd->argv[1], cmd->argvlen[1]);
}

static void resp__cmd_echo(resp_conn_t *c, const resp_cmd_t *cmd)
{
    resp_reply_bulk(&c->out, cmd->argv[1], cmd->argvlen[1]);
}

static void resp__cmd_quit(resp_conn_t *c, const resp_cmd_t *cmd)
{
    (void)cmd;
    resp_reply_status(&c->out, "OK");
    c->closing = true;
}

static void resp__cmd_auth(resp_conn_t *c, const resp_cmd_t *cmd)
{
    const char *pw = c->loop->srv->password;
    if (!pw) {
        resp_reply_error(&c->out, "ERR AUTH <password> called without any password configured "
                                  "for the default user. Are you sure your configuration is correct?");
        return;
    }
    size_t i = cmd->argc - 1;   /* AUTH pass | AUTH user pass */
    if (cmd->argc == 3 && !resp__eq(cmd->argv[1], cmd->argvlen[1], "default")) {
        resp_reply_error(&c->out, "WRONGPASS invalid username-password pair or user is disabled.");
        return;
    }
    size_t plen = strlen(pw);
    /* compare every byte, whatever the first difference */
    unsigned diff = (unsigned)(cmd->argvlen[i] ^ plen);
    for (size_t k = 0; k < cmd->argvlen[i]; k++)
        diff |= (unsigned char)cmd->argv[i][k] ^ (unsigned char)(k < plen ? pw[k] : 0);
    if (diff) {
        resp_reply_error(&c->out, "WRONGPASS invalid username-password pair or user is disabled.");
        return;
    }
    c->authed = true;
    resp_reply_status(&c->out, "OK");
}

/* HELLO [protover [AUTH user pass] [SETNAME name]]: RESP2 only. Clients that
 * ask for 3 get -NOPROTO and fall back to RESP2, as with an old Redis. */
static void resp__cmd_hello(resp_conn_t *c, const resp_cmd_t *cmd)
{
    size_t i = 1;
    if (cmd->argc > 1) {
        if (!(cmd->argvlen[1] == 1 && (cmd->argv[1][0] == '2'))) {
            resp_reply_error(&c->out, cmd->argvlen[1] == 1 && cmd->argv[1][0] == '3'
                             ? "NOPROTO sorry, this protocol version is not supported"
                             : "NOPROTO unsupported protocol version");
            return;
        }
        i = 2;
    }
    for (; i < cmd->argc; i++) {
        if (resp__eq(cmd->argv[i], cmd->argvlen[i], "AUTH") && i + 2 < cmd->argc) {
            const char *pw = c->loop->srv->password;
            const char *given = cmd->argv[i + 2];
            size_t gl = cmd->argvlen[i + 2];
            bool ok = pw && resp__eq(cmd->argv[i + 1], cmd->argvlen[i + 1], "default") &&
                      strlen(pw) == gl && memcmp(pw, given, gl) == 0;
            if (!ok) {
                resp_reply_error(&c->out, pw ? "WRONGPASS invalid username-password pair or user is disabled."
                                             : "ERR AUTH <password> called without any password configured "
                                               "for the default user. Are you sure your configuration is correct?");
                return;
            }
            c->authed = true;
            i += 2;
        } else if (resp__eq(cmd->argv[i], cmd->argvlen[i], "SETNAME") && i + 1 < cmd->argc) {
            snprintf(c->name, sizeof c->name, "%.*s", (int)cmd->argvlen[i + 1], cmd->argv[i + 1]);
            i += 1;
        } else {
            resp_reply_error(&c->out, "ERR syntax error in HELLO option");
            return;
        }
    }
    if (!c->authed) {
        resp_reply_error(&c->out, "NOAUTH HELLO must be called with the client already authenticated, "
                                  "otherwise the HELLO <proto> AUTH <user> <pass> option can be used");
        return;
    }
    resp_reply_array(&c->out, 14);
    resp_reply_bulk_str(&c->out, "server");
    resp_reply_bulk_str(&c->out, "redis");
    resp_reply_bulk_str(&c->out, "version");
    resp_reply_bulk_str(&c->out, "7.0.0");
    resp_reply_bulk_str(&c->out, "proto");
    resp_reply_int(&c->out, 2);
    resp_reply_bulk_str(&c->out, "id");
    resp_reply_int(&c->out, (int64_t)c->id);
    resp_reply_bulk_str(&c->out, "mode");
    resp_reply_bulk_str(&c->out, "standalone");
    resp_reply_bulk_str(&c->out, "role");
    resp_reply_bulk_str(&c->out, "master");
    resp_reply_bulk_str(&c->out, "modules");
    resp_reply_array(&c->out, 0);
}

static void resp__cmd_select(resp_conn_t *c, const resp_cmd_t *cmd)
{
    if (cmd->argvlen[1] == 1 && cmd->argv[1][0] == '0') resp_reply_status(&c->out, "OK");
    else resp_reply_error(&c->out, "ERR DB index is out of range");
}

static void resp__cmd_client(resp_conn_t *c, const resp_cmd_t *cmd)
{
    const char *sub = cmd->argv[1];
    size_t sl = cmd->argvlen[1];
    if (resp__eq(sub, sl, "SETNAME") && cmd->argc == 3) {
        snprintf(c->name, sizeof c->name, "%.*s", (int)cmd->argvlen[2], cmd->argv[2]);
        resp_reply_status(&c->out, "OK");
    } else if (resp__eq(sub, sl, "GETNAME") && cmd->argc == 2) {
        if (c->name[0]) resp_reply_bulk_str(&c->out, c->name);
        else resp_reply_nil(&c->out);
    } else if (resp__eq(sub, sl, "ID") && cmd->argc == 2) {
        resp_reply_int(&c->out, (int64_t)c->id);
    } else if (resp__eq(sub, sl, "SETINFO") && cmd->argc == 4) {
        resp_reply_status(&c->out, "OK");
    } else if (resp__eq(sub, sl, "INFO") && cmd->argc == 2) {
        char line[160];
        snprintf(line, sizeof line, "id=%llu name=%s db=0\n", (unsigned long long)c->id, c->name);
        resp_reply_bulk_str(&c->out, line);
    } else {
        resp_reply_errorf(&c->out, "ERR unknown subcommand or wrong number of arguments for "
                                   "'CLIENT|%.*s'", (int)(sl > 32 ? 32 : sl), sub);
    }
}

static void resp__cmd_config(resp_conn_t *c, const resp_cmd_t *cmd)
{
    if (!resp__eq(cmd->argv[1], cmd->argvlen[1], "GET") || cmd->argc != 3) {
        resp_reply_error(&c->out, "ERR Sluice is read-only: only CONFIG GET is supported");
        return;
    }
    const char *k = cmd->argv[2];
    size_t kl = cmd->argvlen[2];
    const resp_server_opts_t *o = &c->loop->srv->opts;
    char num[32];
    if (resp__eq(k, kl, "save")) {
        resp_reply_array(&c->out, 2);
        resp_reply_bulk_str(&c->out, "save");
        resp_reply_bulk_str(&c->out, "");
    } else if (resp__eq(k, kl, "appendonly")) {
        resp_reply_array(&c->out, 2);
        resp_reply_bulk_str(&c->out, "appendonly");
        resp_reply_bulk_str(&c->out, "no");
    } else if (resp__eq(k, kl, "maxclients")) {
        snprintf(num, sizeof num, "%zu", o->max_clients);
        resp_reply_array(&c->out, 2);
        resp_reply_bulk_str(&c->out, "maxclients");
        resp_reply_bulk_str(&c->out, num);
    } else if (resp__eq(k, kl, "timeout")) {
        snprintf(num, sizeof num, "%lld", (long long)(o->idle_timeout_ms / 1000));
        resp_reply_array(&c->out, 2);
        resp_reply_bulk_str(&c->out, "timeout");
        resp_reply_bulk_str(&c->out, num);
    } else {
        resp_reply_array(&c->out, 0);
    }
}

static void resp__info(resp_conn_t *c, sl_buf_t *b);

static void resp__cmd_info(resp_conn_t *c, const resp_cmd_t *cmd)
{
    (void)cmd;
    sl_buf_t b = SL_BUF_INIT;
    resp__info(c, &b);
    resp_reply_bulk(&c->out, b.data, b.len);
    sl_buf_free(&b);
}

static void resp__cmd_hgetall(resp_conn_t *c, const resp_cmd_t *cmd)
{
    resp_vec_t vec;
    if (resp__vector_arg(c, cmd->argv[1], cmd->argvlen[1], &vec) < 0) return;
    resp__vec_put(&c->out, &vec, 0);
}

static int resp__feature(const schema_view_t *v, const char *name, size_t n)
{
    for (size_t i = 0; i < v->n_features; i++)
        if (strlen(v->features[i].name) == n && memcmp(v->features[i].name, name, n) == 0)
            return (int)i;
    return -1;
}

/* HMGET key f1 f2 ..., HGET key f: unknown features read as nil. */
static void resp__cmd_hmget(resp_conn_t *c, const resp_cmd_t *cmd)
{
    bool single = resp__eq(cmd->argv[0], cmd->argvlen[0], "HGET");
    if (single && cmd->argc != 3) {
        resp_reply_error(&c->out, "ERR wrong number of arguments for 'hget' command");
        return;
    }
    resp_vec_t vec;
    int view = resp__vector_arg(c, cmd->argv[1], cmd->argvlen[1], &vec);
    if (view < 0) return;
    const schema_view_t *v = &c->loop->be->schema->views[view];
    if (!single) resp_reply_array(&c->out, cmd->argc - 2);
    for (size_t i = 2; i < cmd->argc; i++) {
        int f = resp__feature(v, cmd->argv[i], cmd->argvlen[i]);
        if (f < 0) resp_reply_nil(&c->out);
        else resp__vec_put(&c->out, &vec, (size_t)f + 1);
    }
}

/* HKEYS / HVALS / HLEN / EXISTS / TYPE / HEXISTS on a feature vector. */
static void resp__cmd_hmeta(resp_conn_t *c, const resp_cmd_t *cmd)
{
    const char *name = cmd->argv[0];
    size_t nl = cmd->argvlen[0];
    bool hexists = resp__eq(name, nl, "HEXISTS");
    if (hexists != (cmd->argc == 3)) {
        resp_reply_errorf(&c->out, "ERR wrong number of arguments for '%.*s' command", (int)nl, name);
        return;
    }
    resp_vec_t vec;
    int view = resp__vector_arg(c, cmd->argv[1], cmd->argvlen[1], &vec);
    if (view < 0) return;
    const schema_view_t *v = &c->loop->be->schema->views[view];
    bool present = vec.present;
    size_t n = present ? v->n_features : 0;
    if (resp__eq(name, nl, "HLEN")) resp_reply_int(&c->out, (int64_t)n);
    else if (resp__eq(name, nl, "EXISTS")) resp_reply_int(&c->out, present);
    else if (resp__eq(name, nl, "TYPE")) resp_reply_status(&c->out, present ? "hash" : "none");
    else if (hexists)
        resp_reply_int(&c->out, present && resp__feature(v, cmd->argv[2], cmd->argvlen[2]) >= 0);
    else {
        bool keys = resp__eq(name, nl, "HKEYS");
        resp_reply_array(&c->out, n);
        for (size_t i = 0; i < n; i++) {
            if (keys) resp_reply_bulk_str(&c->out, v->features[i].name);
            else resp__vec_put(&c->out, &vec, i + 1);
        }
    }
}

/* FEATURES service key1 [key2 ...]: one array per key, holding the values of
 * the service's features in the service's order. One lookup per entity and
 * distinct view of the service. */
static void resp__cmd_features(resp_conn_t *c, const resp_cmd_t *cmd)
{
    resp_loop_t *loop = c->loop;
    resp_server_t *srv = loop->srv;
    const serve_backend_t *be = loop->be;
    const schema_t *s = be->schema;
    int svc = -1;
    for (size_t i = 0; i < s->n_services; i++)
        if (strlen(s->services[i].name) == cmd->argvlen[1] &&
            memcmp(s->services[i].name, cmd->argv[1], cmd->argvlen[1]) == 0)
            svc = (int)i;
    if (svc < 0) {
        resp_reply_errorf(&c->out, "ERR unknown feature service '%.*s'",
                          (int)(cmd->argvlen[1] > 64 ? 64 : cmd->argvlen[1]), cmd->argv[1]);
        return;
    }
    size_t n_keys = cmd->argc - 2;
    if (n_keys > srv->opts.max_entities) {
        resp_reply_errorf(&c->out, "ERR too many entities: %zu > max_entities %zu",
                          n_keys, srv->opts.max_entities);
        return;
    }
    const schema_service_t *sv = &s->services[svc];
    const int *views = loop->svc_views[svc];
    int entity = views[0] >= 0 ? s->views[views[0]].entity : -1;
    for (size_t k = 0; views[k] >= 0; k++)
        if (s->views[views[k]].entity != entity) {
            resp_reply_errorf(&c->out, "ERR service '%s' spans several entities: use HMGET "
                                       "per view or gRPC", sv->name);
            return;
        }
    /* On an error the partial reply is dropped: the client gets the error alone. */
    size_t mark = c->out.len;
    resp_reply_array(&c->out, n_keys);
    for (size_t e = 0; e < n_keys; e++) {
        sl_buf_reset(&loop->arena);
        for (size_t k = 0; views[k] >= 0; k++) {
            char err[200] = "";
            resp_vec_t vec;
            int rc = resp__vector(loop, views[k], cmd->argv[2 + e], cmd->argvlen[2 + e], &vec,
                                  err, sizeof err);
            if (rc) {
                c->out.len = mark;
                if (rc == RESP_VEC_BADSPEC)
                    resp_reply_error(&c->out, RESP_BAD_KEY);
                else if (rc == SL_EINVAL || rc == SL_ETYPE)
                    resp_reply_errorf(&c->out, "ERR bad entity key #%zu: %s", e + 1,
                                      err[0] ? err : sl_strerror(rc));
                else
                    resp_reply_errorf(&c->out, "ERR lookup failed: %s", err[0] ? err : sl_strerror(rc));
                return;
            }
            /* copied out: the next vector may reuse what vec points at */
            for (size_t r = 0; r < sv->n_refs; r++) {
                if (sv->refs[r].view != views[k]) continue;
                loop->arena_off[r] = loop->arena.len;
                resp__vec_put(&loop->arena, &vec, (size_t)sv->refs[r].feature + 1);
                loop->arena_len[r] = loop->arena.len - loop->arena_off[r];
            }
        }
        resp_reply_array(&c->out, sv->n_refs);
        for (size_t r = 0; r < sv->n_refs; r++)
            sl_buf_append(&c->out, loop->arena.data + loop->arena_off[r], loop->arena_len[r]);
    }
}

/* FEATURES.META view:key: per feature [name, status, newest event ms] —
 * what HGETALL cannot carry (status names as in docs/serving.md). */
static void resp__cmd_features_meta(resp_conn_t *c, const resp_cmd_t *cmd)
{
    int view = resp__lookup_arg(c, cmd->argv[1], cmd->argvlen[1]);
    if (view < 0) return;
    const schema_view_t *v = &c->loop->be->schema->views[view];
    const serve_value_t *vals = c->loop->vals;
    resp_reply_array(&c->out, v->n_features);
    for (size_t i = 0; i < v->n_features; i++) {
        resp_reply_array(&c->out, 3);
        resp_reply_bulk_str(&c->out, v->features[i].name);
        resp_reply_bulk_str(&c->out, serve_status_name(vals[i].status));
        resp_reply_int(&c->out, vals[i].status == SERVE_STATUS_NOT_FOUND ? 0 : vals[i].val.newest_event_ms);
    }
}

static void resp__cmd_command(resp_conn_t *c, const resp_cmd_t *cmd);

static void resp__cmd_readonly(resp_conn_t *c, const resp_cmd_t *cmd)
{
    resp_reply_errorf(&c->out, "ERR Sluice is read-only: '%.*s' is not supported (features are "
                               "written by ingest)", (int)(cmd->argvlen[0] > 32 ? 32 : cmd->argvlen[0]),
                      cmd->argv[0]);
}

#define RESP_F_NOAUTH  1      /* allowed before AUTH */
#define RESP_F_WRITE   2      /* a Redis write command: refused */

typedef struct resp_command {
    const char *name;
    int arity;                /* Redis convention: >0 exact, <0 at least -arity */
    int flags;
    resp_cmd_fn fn;
    int first_key;
} resp_command_t;

static const resp_command_t resp__commands[] = {
    { "PING",     -1, 0,              resp__cmd_ping,     0 },
    { "ECHO",      2, 0,              resp__cmd_echo,     0 },
    { "QUIT",     -1, RESP_F_NOAUTH,  resp__cmd_quit,     0 },
    { "AUTH",     -2, RESP_F_NOAUTH,  resp__cmd_auth,     0 },
    { "HELLO",    -1, RESP_F_NOAUTH,  resp__cmd_hello,    0 },
    { "SELECT",    2, 0,              resp__cmd_select,   0 },
    { "CLIENT",   -2, 0,              resp__cmd_client,   0 },
    { "CONFIG",   -2, 0,              resp__cmd_config,   0 },
    { "INFO",     -1, 0,              resp__cmd_info,     0 },
    { "COMMAND",  -1, 0,              resp__cmd_command,  0 },
    { "HGETALL",   2, 0,              resp__cmd_hgetall,  1 },
    { "HMGET",    -3, 0,              resp__cmd_hmget,    1 },
    { "HGET",      3, 0,              resp__cmd_hmget,    1 },
    { "HKEYS",     2, 0,              resp__cmd_hmeta,    1 },
    { "HVALS",     2, 0,              resp__cmd_hmeta,    1 },
    { "HLEN",      2, 0,              resp__cmd_hmeta,    1 },
    { "HEXISTS",   3, 0,              resp__cmd_hmeta,    1 },
    { "EXISTS",    2, 0,              resp__cmd_hmeta,    1 },
    { "TYPE",      2, 0,              resp__cmd_hmeta,    1 },
    { "FEATURES", -3, 0,              resp__cmd_features, 0 },
    { "FEATURES.META", 2, 0,          resp__cmd_features_meta, 1 },
};
#define RESP_N_COMMANDS (sizeof resp__commands / sizeof resp__commands[0])

/* Commands that change data in Redis: refused with a read-only error rather
 * than "unknown command", so the client's author sees why. */
static const char *const resp__writes[] = {
    "SET", "SETEX", "SETNX", "PSETEX", "MSET", "MSETNX", "GETSET", "GETDEL", "APPEND",
    "INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY", "DEL", "UNLINK", "EXPIRE",
    "PEXPIRE", "EXPIREAT", "PERSIST", "RENAME", "HSET", "HSETNX", "HMSET", "HDEL",
    "HINCRBY", "HINCRBYFLOAT", "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD", "SREM",
    "ZADD", "ZREM", "XADD", "FLUSHDB", "FLUSHALL", "SAVE", "BGSAVE", "BGREWRITEAOF",
    "MIGRATE", "RESTORE", "COPY", "MOVE", "SWAPDB", "PUBLISH", "EVAL", "EVALSHA",
    "MULTI", "EXEC", "SHUTDOWN", NULL,
};

static void resp__command_info(sl_buf_t *b, const resp_command_t *k)
{
    char lower[32];
    size_t n = strlen(k->name);
    for (size_t i = 0; i <= n; i++) lower[i] = (char)tolower((unsigned char)k->name[i]);
    resp_reply_array(b, 6);
    resp_reply_bulk_str(b, lower);
    resp_reply_int(b, k->arity);
    resp_reply_array(b, 1);
    resp_reply_status(b, k->first_key ? "readonly" : "fast");
    resp_reply_int(b, k->first_key);
    resp_reply_int(b, k->first_key);
    resp_reply_int(b, k->first_key ? 1 : 0);
}

static void resp__cmd_command(resp_conn_t *c, const resp_cmd_t *cmd)
{
    if (cmd->argc == 1) {
        resp_reply_array(&c->out, RESP_N_COMMANDS);
        for (size_t i = 0; i < RESP_N_COMMANDS; i++) resp__command_info(&c->out, &resp__commands[i]);
        return;
    }
    const char *sub = cmd->argv[1];
    size_t sl = cmd->argvlen[1];
    if (resp__eq(sub, sl, "COUNT")) {
        resp_reply_int(&c->out, (int64_t)RESP_N_COMMANDS);
    } else if (resp__eq(sub, sl, "DOCS")) {
        resp_reply_array(&c->out, 0);
    } else if (resp__eq(sub, sl, "INFO")) {
        resp_reply_array(&c->out, cmd->argc - 2);
        for (size_t a = 2; a < cmd->argc; a++) {
            const resp_command_t *k = NULL;
            for (size_t i = 0; i < RESP_N_COMMANDS; i++)
                if (resp__eq(cmd->argv[a], cmd->argvlen[a], resp__commands[i].name)) k = &resp__commands[i];
            if (k) resp__command_info(&c->out, k);
            else resp_reply_nil(&c->out);
        }
    } else {
        resp_reply_errorf(&c->out, "ERR unknown subcommand '%.*s'. Try COMMAND HELP.",
                          (int)(sl > 32 ? 32 : sl), sub);
    }
}

static void resp__loop_unfit(resp_loop_t *loop)
{
    for (size_t i = 0; i < loop->n_svc; i++) free(loop->svc_views[i]);
    free(loop->svc_views);
    free(loop->vals);
    free(loop->arena_off);
    free(loop->arena_len);
    loop->svc_views = NULL;
    loop->vals = NULL;
    loop->arena_off = loop->arena_len = NULL;
    loop->n_svc = 0;
    loop->fit = NULL;
}

/* Sizes the loop's value array and FEATURES' arrays for schema s and lists
 * each service's distinct views. Returns 0 or SL_ENOMEM (loop unchanged). */
static int resp__loop_fit(resp_loop_t *loop, const schema_t *s)
{
    size_t max_features = 0, max_refs = 0;
    for (size_t i = 0; i < s->n_views; i++)
        if (s->views[i].n_features > max_features) max_features = s->views[i].n_features;
    for (size_t i = 0; i < s->n_services; i++)
        if (s->services[i].n_refs > max_refs) max_refs = s->services[i].n_refs;
    resp_loop_t f = { .n_svc = s->n_services, .fit = s };
    f.svc_views = calloc(s->n_services + 1, sizeof *f.svc_views);
    f.vals = calloc(max_features + 1, sizeof *f.vals);
    f.arena_off = calloc(max_refs + 1, sizeof *f.arena_off);
    f.arena_len = calloc(max_refs + 1, sizeof *f.arena_len);
    bool ok = f.svc_views && f.vals && f.arena_off && f.arena_len;
    for (size_t i = 0; ok && i < s->n_services; i++) {
        const schema_service_t *sv = &s->services[i];
        int *v = malloc((sv->n_refs + 1) * sizeof *v);
        if (!(ok = v != NULL)) break;
        size_t n = 0;
        for (size_t r = 0; r < sv->n_refs; r++) {
            bool seen = false;
            for (size_t k = 0; k < n; k++) seen |= v[k] == sv->refs[r].view;
            if (!seen) v[n++] = sv->refs[r].view;
        }
        v[n] = -1;
        f.svc_views[i] = v;
    }
    if (!ok) {
        if (!f.svc_views) f.n_svc = 0;
        resp__loop_unfit(&f);
        return SL_ENOMEM;
    }
    resp__loop_unfit(loop);
    loop->fit = f.fit;
    loop->svc_views = f.svc_views;
    loop->n_svc = f.n_svc;
    loop->vals = f.vals;
    loop->arena_off = f.arena_off;
    loop->arena_len = f.arena_len;
    return 0;
}

static void resp__dispatch(resp_conn_t *c, const resp_cmd_t *cmd)
{
    const char *name = cmd->argv[0];
    size_t nl = cmd->argvlen[0];
    const resp_command_t *k = NULL;
    for (size_t i = 0; i < RESP_N_COMMANDS; i++)
        if (resp__eq(name, nl, resp__commands[i].name)) { k = &resp__commands[i]; break; }
    CTR_ADD(c->loop, commands, 1);
    if (!c->authed && !(k && (k->flags & RESP_F_NOAUTH))) {
        resp_reply_error(&c->out, "NOAUTH Authentication required.");
        return;
    }
    if (!k) {
        for (size_t i = 0; resp__writes[i]; i++)
            if (resp__eq(name, nl, resp__writes[i])) {
                resp__cmd_readonly(c, cmd);
                return;
            }
        sl_buf_t b = SL_BUF_INIT;
        for (size_t i = 1; i < cmd->argc && i < 4; i++)
            sl_buf_printf(&b, "'%.*s' ", (int)(cmd->argvlen[i] > 40 ? 40 : cmd->argvlen[i]), cmd->argv[i]);
        resp_reply_errorf(&c->out, "ERR unknown command '%.*s', with args beginning with: %.*s",
                          (int)(nl > 40 ? 40 : nl), name, (int)b.len, b.data ? (char *)b.data : "");
        sl_buf_free(&b);
        return;
    }
    if ((k->arity > 0 && cmd->argc != (size_t)k->arity) ||
        (k->arity < 0 && cmd->argc < (size_t)-k->arity)) {
        char lower[32];
        size_t n = strlen(k->name);
        for (size_t i = 0; i <= n; i++) lower[i] = (char)tolower((unsigned char)k->name[i]);
        resp_reply_errorf(&c->out, "ERR wrong number of arguments for '%s' command", lower);
        return;
    }
    resp_loop_t *loop = c->loop;
    loop->be = serve_backend_pin(loop->srv->be);
    if (loop->be->schema != loop->fit && resp__loop_fit(loop, loop->be->schema))
        resp_reply_error(&c->out, "ERR out of memory");
    else
        k->fn(c, cmd);
    serve_backend_unpin(loop->srv->be, loop->be);
    loop->be = NULL;
}

/* ---- INFO -------------------------------------------------------------- */

static void resp__info(resp_conn_t *c, sl_buf_t *b)
{
    resp_server_t *srv = c->loop->srv;
    resp_server_stats_t st;
    resp_server_stats(srv, &st);
    int64_t up = (sl_now_ms() - srv->started_ms) / 1000;
    sl_buf_printf(b,
                  "# Server\r\nredis_version:7.0.0\r\nsluice_version:0.1.0\r\nredis_mode:standalone\r\n"
                  "process_id:%ld\r\ntcp_port:%d\r\nuptime_in_seconds:%lld\r\nio_threads:%d\r\n\r\n"
                  "# Clients\r\nconnected_clients:%llu\r\nmaxclients:%zu\r\n\r\n"
                  "# Stats\r\ntotal_connections_received:%llu\r\nrejected_connections:%llu\r\n"
                  "total_commands_processed:%llu\r\nlookups:%llu\r\nkeyspace_hits:%llu\r\n"
                  "keyspace_misses:%llu\r\nreply_cache_hits:%llu\r\nprotocol_errors:%llu\r\nidle_closed:%llu\r\n"
                  "total_net_input_bytes:%llu\r\ntotal_net_output_bytes:%llu\r\n\r\n",
                  (long)getpid(), srv->port, (long long)up, srv->n_loops,
                  (unsigned long long)st.clients, srv->opts.max_clients,
                  (unsigned long long)st.connections, (unsigned long long)st.rejected,
                  (unsigned long long)st.commands, (unsigned long long)st.lookups,
                  (unsigned long long)st.hits, (unsigned long long)st.misses,
                  (unsigned long long)st.cache_hits, (unsigned long long)st.protocol_errors, (unsigned long long)st.idle_closed,
                  (unsigned long long)st.bytes_in, (unsigned long long)st.bytes_out);
    sl_buf_printf(b, "# Ingest\r\n");
    const serve_backend_t *be = c->loop->be;
    if (be->progress) {
        state_partition_progress_t pp[64];
        size_t n = be->progress(be, pp, 64);
        sl_buf_printf(b, "partitions:%zu\r\n", n);
        for (size_t i = 0; i < n && i < 64; i++)
            sl_buf_printf(b, "partition_%s_%d:next_offset=%lld,watermark_ms=%lld\r\n", pp[i].topic,
                          pp[i].partition, (long long)pp[i].next_offset, (long long)pp[i].watermark_ms);
    }
    const schema_t *s = be->schema;
    sl_buf_printf(b, "\r\n# Keyspace\r\nviews:%zu\r\nservices:%zu\r\n", s->n_views, s->n_services);
}

/* ---- event loop -------------------------------------------------------- */

static void resp__on_readable(resp_conn_t *c)
{
    resp_loop_t *loop = c->loop;
    char buf[RESP_READ_CHUNK];
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR && errno != EWOULDBLOCK)) {
        resp__conn_close(c);
        return;
    }
    if (n < 0) return;
    CTR_ADD(loop, bytes_in, (uint64_t)n);
    if (c->draining) {
        c->drained += (size_t)n;
        if (c->drained > RESP_DRAIN_MAX) resp__conn_close(c);
        return;
    }
    c->last_active_ms = sl_now_ms();
    if (c->closing) return;           /* ignore input after QUIT / an error */
    int rc = resp_parser_feed(c->parser, buf, (size_t)n);
    int64_t t = sl_mono_ns();
    while (rc == 0) {
        resp_cmd_t cmd;
        rc = resp_parser_next(c->parser, &cmd);
        if (rc != 1) break;
        rc = 0;
        resp__dispatch(c, &cmd);
        int64_t done = sl_mono_ns();
        sl_hist_record(&loop->latency, (uint64_t)(done - t));
        t = done;
        if (c->closing) break;
        if (c->out.len - c->out_sent > loop->srv->opts.max_output_bytes) break;
    }
    if (rc < 0) {
        resp_reply_errorf(&c->out, "ERR %s", resp_parser_error(c->parser));
        c->closing = true;
        c->drain = true;
        CTR_ADD(loop, protocol_errors, 1);
    }
    if (c->closing || c->out.len - c->out_sent > RESP_READ_CHUNK) {
        resp__conn_flush(c);
    } else if (c->out.len > c->out_sent && !c->pending) {
        /* written after every ready connection was read (resp__flush_pending) */
        c->pending = true;
        c->pend_prev = NULL;
        c->pend_next = loop->pending;
        if (loop->pending) loop->pending->pend_prev = c;
        loop->pending = c;
    }
}

/* Writes the replies of this round. Like Redis, the loop first reads and
 * runs the commands of every ready connection, then writes all replies
 * together before it sleeps again: a client answered on many connections
 * at once (redis-benchmark, a pooled client) then wakes once for the lot
 * instead of once per reply while the server is still reading. */
static void resp__flush_pending(resp_loop_t *loop)
{
    while (loop->pending) {
        resp_conn_t *c = loop->pending;
        resp__pending_remove(c);
        resp__conn_flush(c);
    }
}

static void resp__accept(resp_loop_t *loop)
{
    resp_server_t *srv = loop->srv;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(loop->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        uint64_t now_clients = atomic_fetch_add_explicit(&srv->n_clients, 1, memory_order_relaxed);
        if (now_clients >= srv->opts.max_clients) {
            static const char msg[] = "-ERR max number of clients reached\r\n";
            ssize_t w = write(fd, msg, sizeof msg - 1);
            (void)w;
            close(fd);
            atomic_fetch_sub_explicit(&srv->n_clients, 1, memory_order_relaxed);
            CTR_ADD(loop, rejected, 1);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        resp_conn_t *c = calloc(1, sizeof *c);
        resp_limits_t lim = {
            .max_args = srv->opts.max_args,
            .max_request_bytes = srv->opts.max_request_bytes,
            .max_inline_bytes = srv->opts.max_request_bytes < 65536 ? srv->opts.max_request_bytes : 65536,
        };
        if (c) c->parser = resp_parser_new(&lim);
        if (!c || !c->parser) {
            free(c);
            close(fd);
            atomic_fetch_sub_explicit(&srv->n_clients, 1, memory_order_relaxed);
            continue;
        }
        c->fd = fd;
        c->loop = loop;
        c->authed = srv->password == NULL;
        c->last_active_ms = sl_now_ms();
        c->id = atomic_fetch_add_explicit(&srv->next_id, 1, memory_order_relaxed) + 1;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev)) {
            resp_parser_free(c->parser);
            free(c);
            close(fd);
            atomic_fetch_sub_explicit(&srv->n_clients, 1, memory_order_relaxed);
            continue;
        }
        c->next = loop->conns;
        if (loop->conns) loop->conns->prev = c;
        loop->conns = c;
        CTR_ADD(loop, connections, 1);
        CTR_ADD(loop, clients, 1);
    }
}

static void resp__idle_scan(resp_loop_t *loop, int64_t now)
{
    int64_t limit = loop->srv->opts.idle_timeout_ms;
    resp_conn_t *c = loop->conns;
    while (c) {
        resp_conn_t *next = c->next;
        if (c->draining && now - c->last_active_ms > RESP_DRAIN_MS) {
            resp__conn_close(c);
        } else if (limit > 0 && now - c->last_active_ms > limit) {
            CTR_ADD(loop, idle_closed, 1);
            resp__conn_close(c);
        }
        c = next;
    }
}

/* Graceful stop, step 1: no new connections and no new commands; every
 * connection is closed once the replies of the commands it ran are written
 * (a half-close, then what the client still sends is read and dropped, as
 * after an error: closing with unread input would reset the connection and
 * could destroy replies still in flight). */
static void resp__loop_begin_stop(resp_loop_t *loop)
{
    if (loop->lfd >= 0) {
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, loop->lfd, NULL);
        close(loop->lfd);
        loop->lfd = -1;
    }
    int64_t now = sl_now_ms();
    for (resp_conn_t *c = loop->conns, *next; c; c = next) {
        next = c->next;
        if (c->draining) continue;
        c->closing = true;
        c->drain = true;
        c->last_active_ms = now;
        resp__conn_flush(c);
    }
}

static void *resp__loop_main(void *arg)
{
    resp_loop_t *loop = arg;
    struct epoll_event evs[RESP_MAX_EVENTS];
    int64_t idle = loop->srv->opts.idle_timeout_ms;
    int timeout = idle > 0 && idle < 1000 ? (int)(idle / 4 + 1) : 250;
    int64_t last_scan = sl_now_ms();
    int64_t stop_deadline = 0;        /* stopping: the last moment to wait for readers */
    for (;;) {
        if (stop_deadline) {
            /* step 2: wait until every connection is gone, or for so long */
            if (!loop->conns || sl_now_ms() >= stop_deadline) break;
            timeout = 50;
        }
        int n = epoll_wait(loop->epfd, evs, RESP_MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &loop->evfd) {
                if (!stop_deadline) {
                    uint64_t v;
                    ssize_t r = read(loop->evfd, &v, sizeof v);
                    (void)r;
                    stop_deadline = sl_now_ms() + RESP_STOP_MS;
                    resp__loop_begin_stop(loop);
                }
                continue;
            }
            if (p == &loop->lfd) { resp__accept(loop); continue; }
            resp_conn_t *c = p;
            if (evs[i].events & (EPOLLERR | EPOLLHUP) && !(evs[i].events & EPOLLIN)) {
                resp__conn_close(c);
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                if (!resp__conn_flush(c)) continue;
            }
            if (evs[i].events & EPOLLIN) resp__on_readable(c);
        }
        resp__flush_pending(loop);
        {
            int64_t now = sl_now_ms();
            if (now - last_scan >= timeout) {
                resp__idle_scan(loop, now);
                last_scan = now;
            }
        }
    }
    while (loop->conns) resp__conn_close(loop->conns);
    return NULL;
}

/* ---- start / stop ------------------------------------------------------ */

static int resp__listen(const char *host, int port, char *errstr, size_t errsize)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host && *host ? host : NULL, ps, &hints, &ai);
    if (rc) {
        snprintf(errstr, errsize, "resp: cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(errstr, errsize, "resp: socket: %s", strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 511)) {
        snprintf(errstr, errsize, "resp: cannot listen on %s:%d: %s", host, port, strerror(errno));
        close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static int resp__bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl)) return -1;
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void resp__loop_free(resp_loop_t *loop)
{
    if (loop->epfd >= 0) close(loop->epfd);
    if (loop->lfd >= 0) close(loop->lfd);
    if (loop->evfd >= 0) close(loop->evfd);
    if (loop->scratch) loop->srv->be->scratch_free(loop->scratch);
    serve_cache_free(loop->cache);
    sl_buf_free(&loop->vbuf);
    free(loop->slices);
    resp__loop_unfit(loop);
    free(loop->keybuf);
    sl_buf_free(&loop->arena);
}

static int resp__loop_init(resp_loop_t *loop, resp_server_t *srv, int port, char *errstr, size_t errsize)
{
    loop->srv = srv;
    loop->epfd = loop->lfd = loop->evfd = -1;
    loop->lfd = resp__listen(srv->opts.bind, port, errstr, errsize);
    if (loop->lfd < 0) return SL_EIO;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop->scratch = srv->be->scratch_new(srv->be);
    if (srv->opts.cache_bytes > 0) {
        loop->cache = serve_cache_new(srv->opts.cache_bytes);
        if (!loop->cache) {
            snprintf(errstr, errsize, "resp: out of memory");
            return SL_ENOMEM;
        }
    }
    if (loop->epfd < 0 || loop->evfd < 0 || !loop->scratch || resp__loop_fit(loop, srv->be->schema)) {
        snprintf(errstr, errsize, "resp: out of memory or descriptors");
        return SL_ENOMEM;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &loop->lfd };
    epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->lfd, &ev);
    struct epoll_event ev2 = { .events = EPOLLIN, .data.ptr = &loop->evfd };
    epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->evfd, &ev2);
    return 0;
}

static void resp__free(resp_server_t *srv)
{
    if (!srv) return;
    for (int i = 0; i < srv->n_loops; i++) resp__loop_free(&srv->loops[i]);
    free(srv->loops);
    free(srv->password);
    free(srv);
}

int resp_server_start(const resp_server_opts_t *opts, const serve_backend_t *be,
                      resp_server_t **out, char *errstr, size_t errsize)
{
    *out = NULL;
    resp_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) return SL_ENOMEM;
    srv->opts = *opts;
    srv->be = be;
    if (srv->opts.threads < 1) srv->opts.threads = 1;
    if (srv->opts.max_args < 3) srv->opts.max_args = 3;
    if (opts->password && *opts->password && !(srv->password = strdup(opts->password))) goto nomem;
    srv->opts.password = NULL;
    srv->started_ms = sl_now_ms();
    srv->loops = calloc((size_t)srv->opts.threads, sizeof *srv->loops);
    if (!srv->loops) goto nomem;
    int port = opts->port;
    for (int i = 0; i < srv->opts.threads; i++) {
        srv->n_loops = i + 1;
        int rc = resp__loop_init(&srv->loops[i], srv, port, errstr, errsize);
        if (rc) { resp__free(srv); return rc; }
        if (i == 0) port = srv->port = resp__bound_port(srv->loops[0].lfd);
    }
    for (int i = 0; i < srv->n_loops; i++) {
        if (pthread_create(&srv->loops[i].thread, NULL, resp__loop_main, &srv->loops[i])) {
            snprintf(errstr, errsize, "resp: cannot start thread");
            resp_server_stop(srv);
            return SL_ENOMEM;
        }
        srv->loops[i].started = true;
    }
    *out = srv;
    return 0;
nomem:
    snprintf(errstr, errsize, "resp: out of memory");
    resp__free(srv);
    return SL_ENOMEM;
}

int resp_server_port(const resp_server_t *srv) { return srv->port; }

void resp_server_request_stop(resp_server_t *srv)
{
    if (!srv) return;
    for (int i = 0; i < srv->n_loops; i++) {
        uint64_t one = 1;
        if (srv->loops[i].started) {
            ssize_t w = write(srv->loops[i].evfd, &one, sizeof one);
            (void)w;
        }
    }
}

void resp_server_drain(resp_server_t *srv)
{
    if (!srv) return;
    resp_server_request_stop(srv);
    for (int i = 0; i < srv->n_loops; i++)
        if (srv->loops[i].started) {
            pthread_join(srv->loops[i].thread, NULL);
            srv->loops[i].started = false;
        }
}

void resp_server_stop(resp_server_t *srv)
{
    if (!srv) return;
    resp_server_drain(srv);
    resp__free(srv);
}

void resp_server_latency(const resp_server_t *srv, sl_hist_t *into)
{
    for (int i = 0; i < srv->n_loops; i++) sl_hist_merge(into, &srv->loops[i].latency);
}

void resp_server_stats(const resp_server_t *srv, resp_server_stats_t *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < srv->n_loops; i++) {
        const resp_counters_t *k = &srv->loops[i].ctr;
#define RESP__SUM(f) out->f += atomic_load_explicit(&k->f, memory_order_relaxed);
        RESP__SUM(connections) RESP__SUM(rejected) RESP__SUM(clients) RESP__SUM(commands)
        RESP__SUM(lookups) RESP__SUM(hits) RESP__SUM(misses) RESP__SUM(protocol_errors)
        RESP__SUM(idle_closed) RESP__SUM(bytes_in) RESP__SUM(bytes_out) RESP__SUM(cache_hits)
#undef RESP__SUM
    }
}
