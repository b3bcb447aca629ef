/*
 * backfill_ctl.c — the control socket of a node hosting backfills, and its
 * client (protocol in backfill_ctl.h).
 *
 * Node side: one listener thread accepts a connection, reads one request
 * line (2 s limit, 1 KiB), and calls the handler WITH the subscriber mutex
 * held, so that the hosted backfill's first lines cannot overtake the OK nor
 * its closing line reach nobody: a connection accepted by the handler is a
 * subscriber before any later line is sent. Lines go out with blocking
 * sends bounded by SO_SNDTIMEO (1 s); a subscriber that cannot keep up or
 * went away (Ctrl-C: EPIPE, MSG_NOSIGNAL) is dropped, the backfill goes on.
 *
 * Client side: connect, send the request, read lines until the node closes;
 * a poll() loop of 200 ms lets it notice the operator's Ctrl-C.
 */
#define _GNU_SOURCE
#include "backfill_ctl.h"
#include "replay.h"

#include "sl_err.h"
#include "sl_log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_MAX_SUBS 16
#define CTL_LINE_MAX 2048

struct backfill_ctl {
    int lfd;
    int wake[2];                  /* pipe: stop the listener */
    char path[PATH_MAX];          /* the socket file (unlinked at close) */
    pthread_t thread;
    bool started;
    backfill_ctl_handler_fn fn;
    void *arg;
    pthread_mutex_t mu;
    int subs[CTL_MAX_SUBS];
    size_t n_subs;
};

/* The socket's address. A sun_path holds at most 107 bytes; a longer state
 * dir is reached through a directory descriptor, "/proc/self/fd/N/<name>"
 * (Linux resolves the magic link for bind and connect alike). *dirfd is
 * that descriptor (close it once bound or connected) or -1. */
static int ctl__path(const char *state_dir, struct sockaddr_un *sa, int *dirfd, char *errstr,
                     size_t errsize)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    *dirfd = -1;
    int n = snprintf(sa->sun_path, sizeof sa->sun_path, "%s/%s", state_dir, BACKFILL_CTL_SOCKET);
    if (n >= 0 && (size_t)n < sizeof sa->sun_path) return 0;
    *dirfd = open(state_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (*dirfd < 0) {
        snprintf(errstr, errsize, "state dir %s: %s", state_dir, strerror(errno));
        return SL_EIO;
    }
    snprintf(sa->sun_path, sizeof sa->sun_path, "/proc/self/fd/%d/%s", *dirfd, BACKFILL_CTL_SOCKET);
    return 0;
}

/* ---- request line -------------------------------------------------------------- */

static int ctl__format(const backfill_ctl_request_t *r, char *buf, size_t size)
{
    char from[32];
    if (r->from_ms == REPLAY_FROM_EARLIEST) snprintf(from, sizeof from, "earliest");
    else snprintf(from, sizeof from, "%lld", (long long)r->from_ms);
    return snprintf(buf, size, "BACKFILL view=%s from=%s force=%d catchup=%lld commit_ms=%lld\n", r->view,
                    from, r->force ? 1 : 0, (long long)r->catchup_lag, (long long)r->commit_interval_ms);
}

static int ctl__parse(const char *line, backfill_ctl_request_t *r)
{
    memset(r, 0, sizeof *r);
    r->from_ms = REPLAY_FROM_EARLIEST;
    if (strncmp(line, "BACKFILL ", 9) != 0) return SL_EINVAL;
    char buf[CTL_LINE_MAX];
    snprintf(buf, sizeof buf, "%s", line + 9);
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) return SL_EINVAL;
        *eq = '\0';
        const char *v = eq + 1;
        if (!strcmp(tok, "view")) {
            if (strlen(v) >= sizeof r->view) return SL_EINVAL;
            snprintf(r->view, sizeof r->view, "%s", v);
        } else if (!strcmp(tok, "from")) {
            r->from_ms = strcmp(v, "earliest") ? strtoll(v, NULL, 10) : REPLAY_FROM_EARLIEST;
        } else if (!strcmp(tok, "force")) {
            r->force = atoi(v) != 0;
        } else if (!strcmp(tok, "catchup")) {
            r->catchup_lag = strtoll(v, NULL, 10);
        } else if (!strcmp(tok, "commit_ms")) {
            r->commit_interval_ms = strtoll(v, NULL, 10);
        }                                   /* unknown keys: newer clients */
    }
    return r->view[0] ? 0 : SL_EINVAL;
}

/* ---- node ---------------------------------------------------------------------- */

static bool ctl__send_fd(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads one line (without the newline) within timeout_ms. */
static int ctl__read_line(int fd, char *buf, size_t size, int timeout_ms)
{
    size_t n = 0;
    while (n + 1 < size) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int pr = poll(&p, 1, timeout_ms);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) return SL_ETIMEOUT;
        ssize_t r = read(fd, buf + n, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return SL_EIO;
        if (buf[n] == '\n') { buf[n] = '\0'; return 0; }
        n++;
    }
    return SL_ETOOBIG;
}

static void ctl__serve(backfill_ctl_t *c, int fd)
{
    char line[CTL_LINE_MAX], msg[1024] = "", out[1200];
    struct timeval tv = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (ctl__read_line(fd, line, sizeof line, 2000)) { close(fd); return; }
    backfill_ctl_request_t req;
    if (ctl__parse(line, &req)) {
        int n = snprintf(out, sizeof out, "ERR 2 malformed request (expected BACKFILL view=V ...)\n");
        ctl__send_fd(fd, out, (size_t)n);
        close(fd);
        return;
    }
    pthread_mutex_lock(&c->mu);
    int status = c->fn(c->arg, &req, msg, sizeof msg);
    if (status == 0 && c->n_subs >= CTL_MAX_SUBS) {
        status = 1;
        snprintf(msg, sizeof msg, "too many clients follow this backfill");
    }
    int n = status ? snprintf(out, sizeof out, "ERR %d %s\n", status, msg)
                   : snprintf(out, sizeof out, "OK %s\n", msg);
    if (n > (int)sizeof out - 1) n = (int)sizeof out - 1;
    bool ok = ctl__send_fd(fd, out, (size_t)n);
    if (status == 0 && ok) c->subs[c->n_subs++] = fd;
    else close(fd);
    pthread_mutex_unlock(&c->mu);
}

static void *ctl__main(void *arg)
{
    backfill_ctl_t *c = arg;
    for (;;) {
        struct pollfd p[2] = { { .fd = c->lfd, .events = POLLIN }, { .fd = c->wake[0], .events = POLLIN } };
        int pr = poll(p, 2, -1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0 || (p[1].revents & POLLIN)) break;
        if (!(p[0].revents & POLLIN)) continue;
        int fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) ctl__serve(c, fd);
    }
    return NULL;
}

int backfill_ctl_listen(const char *state_dir, backfill_ctl_handler_fn fn, void *arg,
                        backfill_ctl_t **out, char *errstr, size_t errsize)
{
    *out = NULL;
    struct sockaddr_un sa;
    int dirfd;
    int rc = ctl__path(state_dir, &sa, &dirfd, errstr, errsize);
    if (rc) return rc;
    backfill_ctl_t *c = calloc(1, sizeof *c);
    if (!c) {
        if (dirfd >= 0) close(dirfd);
        return SL_ENOMEM;
    }
    c->lfd = -1;
    c->wake[0] = c->wake[1] = -1;
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_init(&c->mu, NULL);
    snprintf(c->path, sizeof c->path, "%s/%s", state_dir, BACKFILL_CTL_SOCKET);
    /* We hold the state dir's lock: a socket file there is a dead node's. */
    unlink(c->path);
    c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = c->lfd >= 0 && !bind(c->lfd, (struct sockaddr *)&sa, sizeof sa) &&
              !listen(c->lfd, 8) && !pipe2(c->wake, O_CLOEXEC);
    int e = errno;
    if (dirfd >= 0) close(dirfd);
    if (!ok) {
        snprintf(errstr, errsize, "control socket %s: %s", c->path, strerror(e));
        backfill_ctl_close(c);
        return SL_EIO;
    }
    if (pthread_create(&c->thread, NULL, ctl__main, c)) {
        snprintf(errstr, errsize, "cannot start the control socket thread");
        backfill_ctl_close(c);
        return SL_ENOMEM;
    }
    c->started = true;
    *out = c;
    return 0;
}

static void ctl__drop_all(backfill_ctl_t *c)
{
    for (size_t i = 0; i < c->n_subs; i++) close(c->subs[i]);
    c->n_subs = 0;
}

void backfill_ctl_close(backfill_ctl_t *c)
{
    if (!c) return;
    if (c->started) {
        ssize_t w = write(c->wake[1], "x", 1);
        (void)w;
        pthread_join(c->thread, NULL);
    }
    if (c->lfd >= 0) {
        close(c->lfd);
        unlink(c->path);
    }
    if (c->wake[0] >= 0) close(c->wake[0]);
    if (c->wake[1] >= 0) close(c->wake[1]);
    pthread_mutex_lock(&c->mu);
    ctl__drop_all(c);
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void ctl__broadcast(backfill_ctl_t *c, const char *line, size_t n)
{
    for (size_t i = 0; i < c->n_subs;) {
        if (ctl__send_fd(c->subs[i], line, n)) {
            i++;
            continue;
        }
        close(c->subs[i]);
        c->subs[i] = c->subs[--c->n_subs];
    }
}

void backfill_ctl_send(backfill_ctl_t *c, const char *tag, const char *fmt, ...)
{
    if (!c) return;
    char line[CTL_LINE_MAX];
    int n = snprintf(line, sizeof line, "%s ", tag);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2) len = sizeof line - 2;
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n') line[i] = ' ';
    line[len++] = '\n';
    pthread_mutex_lock(&c->mu);
    ctl__broadcast(c, line, len);
    pthread_mutex_unlock(&c->mu);
}

void backfill_ctl_finish(backfill_ctl_t *c, int status, const char *text)
{
    if (!c) return;
    if (status == 0) backfill_ctl_send(c, "DONE", "%s", text);
    else backfill_ctl_send(c, "FAIL", "%d %s", status, text);
    pthread_mutex_lock(&c->mu);
    ctl__drop_all(c);
    pthread_mutex_unlock(&c->mu);
}

/* ---- client -------------------------------------------------------------------- */

static void ctl__draw(const char *line, bool final, bool tty)
{
    if (tty) {
        fprintf(stderr, "\r\033[K%.*s%s", 160, line, final ? "\n" : "");
        fflush(stderr);
    } else {
        sl_info("replay", "%s", line);
    }
}

int backfill_ctl_request(const char *state_dir, const backfill_ctl_request_t *req,
                         volatile int *interrupted, char *errstr, size_t errsize)
{
    struct sockaddr_un sa;
    int dirfd;
    if (ctl__path(state_dir, &sa, &dirfd, errstr, errsize)) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && !connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    if (dirfd >= 0) close(dirfd);
    if (!ok) {
        snprintf(errstr, errsize, "no control socket at %s/%s (%s)", state_dir, BACKFILL_CTL_SOCKET,
                 strerror(e));
        if (fd >= 0) close(fd);
        return -1;
    }
    char line[CTL_LINE_MAX];
    int n = ctl__format(req, line, sizeof line);
    if (!ctl__send_fd(fd, line, (size_t)n)) {
        snprintf(errstr, errsize, "control socket: %s", strerror(errno));
        close(fd);
        return -1;
    }
    bool tty = isatty(2), drawn = false, accepted = false;
    int status = -1;
    char buf[CTL_LINE_MAX * 2];
    size_t have = 0;
    snprintf(errstr, errsize, "the node closed the control connection without an answer");
    for (;;) {
        if (interrupted && *interrupted) {
            if (drawn && tty) fputc('\n', stderr);
            snprintf(errstr, errsize, "detached; the node goes on with the backfill "
                     "(run the same command to follow it again)");
            status = 130;
            break;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int pr = poll(&p, 1, 200);
        if (pr < 0 && errno != EINTR) break;
        if (pr <= 0) continue;
        ssize_t r = read(fd, buf + have, sizeof buf - have - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (accepted && status < 0) {
                snprintf(errstr, errsize, "the node went away during the backfill (killed?); "
                         "once it runs again it resumes the backfill itself");
                status = 1;
            }
            break;
        }
        have += (size_t)r;
        buf[have] = '\0';
        char *start = buf, *nl;
        bool over = false;
        while ((nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
            *nl = '\0';
            char *sp = strchr(start, ' ');
            const char *text = sp ? sp + 1 : "";
            if (sp) *sp = '\0';
            if (!strcmp(start, "OK")) {
                accepted = true;
                sl_info("backfill", "%s", text);
            } else if (!strcmp(start, "LOG")) {
                if (drawn && tty) fputc('\n', stderr);
                drawn = false;
                sl_info("backfill", "%s", text);
            } else if (!strcmp(start, "P") || !strcmp(start, "F")) {
                ctl__draw(text, start[0] == 'F', tty);
                drawn = start[0] == 'P';
            } else if (!strcmp(start, "DONE")) {
                if (drawn && tty) fputc('\n', stderr);
                snprintf(errstr, errsize, "%s", text);
                status = 0;
                over = true;
            } else if (!strcmp(start, "ERR") || !strcmp(start, "FAIL")) {
                if (drawn && tty) fputc('\n', stderr);
                char *end;
                long st = strtol(text, &end, 10);
                snprintf(errstr, errsize, "%s", *end == ' ' ? end + 1 : text);
                status = st > 0 && st < 126 ? (int)st : 1;
                over = true;
            }
            start = nl + 1;
            if (over) break;
        }
        if (over) break;
        have -= (size_t)(start - buf);
        memmove(buf, start, have);
        if (have >= sizeof buf - 1) have = 0;       /* a line too long: dropped */
    }
    close(fd);
    return status;
}
