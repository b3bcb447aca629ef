/*
 * resp_parse.c — RESP2 requests: hiredis for multibulk frames, our own code
 * for inline commands and for every limit (see resp_parse.h).
 *
 * Input bytes live in the hiredis reader's buffer (r->buf, r->pos, r->len,
 * public fields of hiredis 0.14's read.h), so nothing is copied twice. At a
 * request boundary we peek at the next byte:
 *
 *      boundary --'*'--> IN_FRAME --hiredis returns a reply--> boundary
 *         |                  \--hiredis error / limit--> DEAD
 *         \--other byte--> inline line parsed here, r->pos advanced
 *
 * hiredis builds no objects of its own: our object callbacks copy each bulk
 * string into `args` (one growing buffer reused by every command) and refuse
 * anything a client may not send (nested arrays, integers, nil bulks, more
 * than max_args elements); a refusal makes hiredis stop with an "out of
 * memory" error which we replace by our own reason.
 *
 * Frame size: the number of unconsumed bytes (r->len - r->pos) does not
 * change when hiredis compacts its buffer, so the bytes a frame consumed are
 * the drop in unconsumed bytes across calls; frame bytes plus what is still
 * buffered may never exceed max_request_bytes. That bounds every bulk
 * length, the "*N" / "$N" header lines and the memory a client can pin.
 */
#include "resp_parse.h"
#include "sl_buf.h"
#include "sl_err.h"

#include <hiredis/read.h>
#include <hiredis/sds.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESP_READER_MAXBUF (64 * 1024)

struct resp_parser {
    resp_limits_t lim;
    redisReader *rd;
    bool in_frame;
    bool dead;
    size_t frame_bytes;       /* bytes consumed by the current frame so far */
    sl_buf_t args;            /* argument bytes, each followed by a NUL */
    size_t *off;              /* offsets into args */
    size_t *len;
    const char **argv;
    size_t n_args, cap_args;
    size_t expect_args;       /* elements announced by "*N" */
    int err_rc;               /* SL_EPARSE / SL_ETOOBIG / SL_ENOMEM of the first failure */
    char err[160];
};

static __thread resp_parser_t *resp__cur;   /* parser inside hiredis callbacks */

static void resp__fail(resp_parser_t *p, int rc, const char *fmt, const char *arg)
{
    if (p->err[0]) return;
    snprintf(p->err, sizeof p->err, fmt, arg);
    p->err_rc = rc;
}

static int resp__grow_args(resp_parser_t *p, size_t need)
{
    if (need <= p->cap_args) return 0;
    size_t cap = p->cap_args ? p->cap_args : 8;
    while (cap < need) cap *= 2;
    size_t *off = realloc(p->off, cap * sizeof *off);
    if (!off) return SL_ENOMEM;
    p->off = off;
    size_t *len = realloc(p->len, cap * sizeof *len);
    if (!len) return SL_ENOMEM;
    p->len = len;
    const char **argv = realloc(p->argv, cap * sizeof *argv);
    if (!argv) return SL_ENOMEM;
    p->argv = argv;
    p->cap_args = cap;
    return 0;
}

static int resp__push_arg(resp_parser_t *p, const char *s, size_t n)
{
    if (p->n_args >= p->lim.max_args) {
        resp__fail(p, SL_ETOOBIG, "Protocol error: too many arguments%s", "");
        return SL_ETOOBIG;
    }
    if (resp__grow_args(p, p->n_args + 1) || sl_buf_reserve(&p->args, n + 1)) {
        resp__fail(p, SL_ENOMEM, "out of memory%s", "");
        return SL_ENOMEM;
    }
    p->off[p->n_args] = p->args.len;
    p->len[p->n_args] = n;
    if (n) memcpy(p->args.data + p->args.len, s, n);
    p->args.data[p->args.len + n] = 0;
    p->args.len += n + 1;
    p->n_args++;
    return 0;
}

/* ---- hiredis object callbacks ------------------------------------------ */

static void *resp__cb_string(const redisReadTask *task, char *s, size_t n)
{
    resp_parser_t *p = resp__cur;
    if (!task->parent) {
        resp__fail(p, SL_EPARSE, "Protocol error: expected '*'%s", "");
        return NULL;
    }
    if (task->type != REDIS_REPLY_STRING) {
        resp__fail(p, SL_EPARSE, "Protocol error: expected '$', got '%s'",
                   task->type == REDIS_REPLY_STATUS ? "+" : "-");
        return NULL;
    }
    if (resp__push_arg(p, s, n)) return NULL;
    return p;
}

static void *resp__cb_array(const redisReadTask *task, int elements)
{
    resp_parser_t *p = resp__cur;
    if (task->parent) {
        resp__fail(p, SL_EPARSE, "Protocol error: expected '$', got '%s'", "*");
        return NULL;
    }
    if (elements < 0 || (size_t)elements > p->lim.max_args) {
        resp__fail(p, SL_ETOOBIG, "Protocol error: too many arguments%s", "");
        return NULL;
    }
    p->expect_args = (size_t)elements;
    return p;
}

static void *resp__cb_integer(const redisReadTask *task, long long v)
{
    (void)task; (void)v;
    resp__fail(resp__cur, SL_EPARSE, "Protocol error: expected '$', got '%s'", ":");
    return NULL;
}

static void *resp__cb_nil(const redisReadTask *task)
{
    resp_parser_t *p = resp__cur;
    if (task->parent) {
        resp__fail(p, SL_EPARSE, "Protocol error: invalid bulk length%s", "");
        return NULL;
    }
    p->expect_args = 0;       /* "*-1": a null command, skipped like "*0" */
    return p;
}

static void resp__cb_free(void *obj) { (void)obj; }

static redisReplyObjectFunctions resp__fns = {
    resp__cb_string, resp__cb_array, resp__cb_integer, resp__cb_nil, resp__cb_free,
};

/* ---- life cycle -------------------------------------------------------- */

resp_parser_t *resp_parser_new(const resp_limits_t *limits)
{
    resp_parser_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->lim = *limits;
    if (p->lim.max_args < 1) p->lim.max_args = 1;
    if (p->lim.max_inline_bytes < 1) p->lim.max_inline_bytes = 1;
    p->rd = redisReaderCreateWithFunctions(&resp__fns);
    if (!p->rd) { free(p); return NULL; }
    p->rd->maxbuf = RESP_READER_MAXBUF;
    return p;
}

void resp_parser_free(resp_parser_t *p)
{
    if (!p) return;
    redisReaderFree(p->rd);
    sl_buf_free(&p->args);
    free(p->off);
    free(p->len);
    free(p->argv);
    free(p);
}

const char *resp_parser_error(const resp_parser_t *p)
{
    return p->err[0] ? p->err : "Protocol error";
}

size_t resp_parser_pending(const resp_parser_t *p)
{
    return p->rd->len - p->rd->pos;
}

int resp_parser_feed(resp_parser_t *p, const void *data, size_t len)
{
    if (p->dead) return SL_EPARSE;
    if (len == 0) return 0;
    /* One read's worth of slack beyond the limit: the caller drains complete
     * commands before feeding more, so only a partial request can sit here. */
    if (resp_parser_pending(p) + len > p->lim.max_request_bytes + RESP_READER_MAXBUF) {
        resp__fail(p, SL_ETOOBIG, "Protocol error: request too large%s", "");
        p->dead = true;
        return SL_ETOOBIG;
    }
    if (redisReaderFeed(p->rd, data, len) != REDIS_OK) {
        resp__fail(p, SL_ENOMEM, "out of memory%s", "");
        p->dead = true;
        return SL_ENOMEM;
    }
    return 0;
}

/* Drops consumed bytes from the front of the reader's buffer, as hiredis
 * itself does after 1 KiB, so inline-only traffic does not grow it. */
static void resp__compact(redisReader *rd)
{
    if (rd->pos >= 1024 || (rd->pos > 0 && rd->pos == rd->len)) {
        sdsrange(rd->buf, (int)rd->pos, -1);
        rd->pos = 0;
        rd->len = sdslen(rd->buf);
    }
}

static void resp__fill_cmd(resp_parser_t *p, resp_cmd_t *cmd)
{
    for (size_t i = 0; i < p->n_args; i++) p->argv[i] = (const char *)p->args.data + p->off[i];
    cmd->argc = p->n_args;
    cmd->argv = p->argv;
    cmd->argvlen = p->len;
}

static int resp__hex(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Splits one inline line into arguments. Words are separated by spaces or
 * tabs; "double quotes" understand \n \r \t \b \a \\ \" and \xHH; 'single
 * quotes' understand \' only. A closing quote must be followed by a blank
 * or the end of the line. */
static int resp__split_inline(resp_parser_t *p, const char *s, size_t n)
{
    sl_buf_t word = SL_BUF_INIT;
    size_t i = 0;
    int rc = 0;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
        if (i == n) break;
        sl_buf_reset(&word);
        char q = 0;
        if (s[i] == '"' || s[i] == '\'') q = s[i++];
        bool closed = (q == 0);
        while (i < n) {
            char c = s[i];
            if (!q && (c == ' ' || c == '\t')) break;
            if (q && c == q) { closed = true; i++; break; }
            if (q == '"' && c == '\\' && i + 1 < n) {
                char e = s[i + 1];
                int h1, h2;
                if (e == 'x' && i + 3 < n && (h1 = resp__hex(s[i + 2])) >= 0 &&
                    (h2 = resp__hex(s[i + 3])) >= 0) {
                    c = (char)(h1 * 16 + h2);
                    i += 4;
                } else {
                    switch (e) {
                    case 'n': c = '\n'; break;
                    case 'r': c = '\r'; break;
                    case 't': c = '\t'; break;
                    case 'b': c = '\b'; break;
                    case 'a': c = '\a'; break;
                    default: c = e; break;
                    }
                    i += 2;
                }
            } else if (q == '\'' && c == '\\' && i + 1 < n && s[i + 1] == '\'') {
                c = '\'';
                i += 2;
            } else {
                i++;
            }
            if (sl_buf_append(&word, &c, 1)) { rc = SL_ENOMEM; goto out; }
        }
        if (!closed || (q && i < n && s[i] != ' ' && s[i] != '\t')) {
            resp__fail(p, SL_EPARSE, "Protocol error: unbalanced quotes in request%s", "");
            rc = SL_EPARSE;
            goto out;
        }
        if ((rc = resp__push_arg(p, (const char *)word.data, word.len))) goto out;
    }
out:
    sl_buf_free(&word);
    return rc;
}

static int resp__next_inline(resp_parser_t *p, resp_cmd_t *cmd)
{
    redisReader *rd = p->rd;
    const char *start = rd->buf + rd->pos;
    size_t avail = rd->len - rd->pos;
    size_t scan = avail < p->lim.max_inline_bytes + 1 ? avail : p->lim.max_inline_bytes + 1;
    const char *nl = memchr(start, '\n', scan);
    if (!nl) {
        if (avail > p->lim.max_inline_bytes) {
            resp__fail(p, SL_ETOOBIG, "Protocol error: too big inline request%s", "");
            return SL_ETOOBIG;
        }
        return 0;
    }
    size_t linelen = (size_t)(nl - start);
    size_t n = linelen;
    if (n > 0 && start[n - 1] == '\r') n--;
    p->n_args = 0;
    sl_buf_reset(&p->args);
    int rc = resp__split_inline(p, start, n);
    if (rc) return rc;
    rd->pos += linelen + 1;
    resp__compact(rd);
    if (p->n_args == 0) return 2;           /* blank line: skip */
    resp__fill_cmd(p, cmd);
    return 1;
}

static int resp__next_frame(resp_parser_t *p, resp_cmd_t *cmd)
{
    redisReader *rd = p->rd;
    if (!p->in_frame) {
        p->in_frame = true;
        p->frame_bytes = 0;
        p->n_args = 0;
        p->expect_args = 0;
        sl_buf_reset(&p->args);
    }
    size_t before = rd->len - rd->pos;
    void *reply = NULL;
    resp__cur = p;
    int rc = redisReaderGetReply(rd, &reply);
    resp__cur = NULL;
    if (rc != REDIS_OK) {
        if (!p->err[0]) {
            const char *why = rd->errstr[0] ? rd->errstr : "malformed frame";
            snprintf(p->err, sizeof p->err, "Protocol error: %s", why);
        }
        return p->err_rc ? p->err_rc : SL_EPARSE;
    }
    size_t after = rd->len - rd->pos;
    p->frame_bytes += before - after;
    if (p->frame_bytes + (reply ? 0 : after) > p->lim.max_request_bytes) {
        resp__fail(p, SL_ETOOBIG, "Protocol error: request too large%s", "");
        return SL_ETOOBIG;
    }
    if (!reply) return 0;
    p->in_frame = false;
    if (p->n_args == 0) return 2;           /* "*0" or "*-1": skip */
    resp__fill_cmd(p, cmd);
    return 1;
}

int resp_parser_next(resp_parser_t *p, resp_cmd_t *cmd)
{
    if (p->dead) return SL_EPARSE;
    for (;;) {
        int rc;
        if (p->in_frame) {
            rc = resp__next_frame(p, cmd);
        } else {
            redisReader *rd = p->rd;
            if (rd->pos >= rd->len) return 0;
            if (rd->buf[rd->pos] == '*') rc = resp__next_frame(p, cmd);
            else rc = resp__next_inline(p, cmd);
        }
        if (rc == 2) continue;
        if (rc < 0) p->dead = true;
        return rc;
    }
}
