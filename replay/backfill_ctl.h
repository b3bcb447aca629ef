/*
 * backfill_ctl.h — the control channel between `sluice backfill` and a
 * running `sluice run` that owns the state directory: the client hands the
 * backfill request to the node, which hosts it (serving goes on), and
 * follows the node's progress until the cut-over.
 *
 * Transport: a Unix stream socket "control.sock" in the state directory,
 * created by the node that holds the directory's lock (a stale file from a
 * killed node is replaced). One request line per connection, then lines
 * from the node until it closes:
 *
 *   client:  BACKFILL view=V from=earliest|MS force=0|1 catchup=N commit_ms=N
 *   node:    OK text            accepted (started, or attached to the same
 *                               view's running backfill)
 *            ERR status text    refused (status: the client's exit status)
 *            LOG text           a message for the operator
 *            P line / F line    a progress line / the final one (the same
 *                               text as a standalone backfill prints)
 *            DONE text          cut over (exit 0)
 *            FAIL status text   the backfill stopped or failed
 *
 * The client going away (Ctrl-C) only unsubscribes it: the node goes on.
 *
 * Threads: the node side runs one listener thread; backfill_ctl_send may be
 * called from any thread (subscribers are under a mutex).
 */
#ifndef REPLAY_BACKFILL_CTL_H
#define REPLAY_BACKFILL_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BACKFILL_CTL_SOCKET "control.sock"

typedef struct backfill_ctl_request {
    char view[256];
    int64_t from_ms;              /* REPLAY_FROM_EARLIEST or epoch ms */
    bool force;
    int64_t catchup_lag;
    int64_t commit_interval_ms;
} backfill_ctl_request_t;

/* ---- client ------------------------------------------------------------- */

/* Sends req to the node owning state_dir and follows it: progress lines are
 * drawn on stderr (redrawn in place on a terminal, log lines otherwise),
 * LOG lines printed. Returns the exit status for the command: 0 cut over,
 * the node's status for ERR / FAIL (message in errstr), or -1 when no node
 * listens (errstr says why: the lock holder does not host backfills).
 * *interrupted (may be NULL) is polled: when it becomes true the client
 * detaches and returns 130; the node goes on. */
int backfill_ctl_request(const char *state_dir, const backfill_ctl_request_t *req,
                         volatile int *interrupted, char *errstr, size_t errsize);

/* ---- node ----------------------------------------------------------------- */

typedef struct backfill_ctl backfill_ctl_t;

/* Called on the listener thread for each request. Returns 0 to accept (the
 * connection becomes a subscriber: it gets every later line until
 * backfill_ctl_finish) or the client's exit status (> 0) with msg set. */
typedef int (*backfill_ctl_handler_fn)(void *arg, const backfill_ctl_request_t *req,
                                       char *msg, size_t msgsize);

/* Listens on state_dir/control.sock. Returns 0 or SL_EIO / SL_ENOMEM /
 * SL_EINVAL (path too long) with errstr set. */
int backfill_ctl_listen(const char *state_dir, backfill_ctl_handler_fn fn, void *arg,
                        backfill_ctl_t **out, char *errstr, size_t errsize);
/* Stops listening, closes every subscriber, removes the socket file. */
void backfill_ctl_close(backfill_ctl_t *c);

/* Sends one line "TAG text" to every subscriber (a subscriber whose socket
 * does not take it within a second is dropped). */
void backfill_ctl_send(backfill_ctl_t *c, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends the closing line (DONE text when status is 0, else FAIL status
 * text) and disconnects every subscriber. */
void backfill_ctl_finish(backfill_ctl_t *c, int status, const char *text);

#endif
