/*
 * resp_parse.h — server-side RESP2 request parser with limits.
 *
 * Requests arrive either as multibulk frames ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
 * parsed by hiredis's redisReader, or as inline commands ("PING\r\n" typed
 * in telnet, redis-benchmark's *_inline tests), parsed here. Limits that
 * hiredis lacks are enforced around it: arguments per command, bytes of one
 * request (which bounds every bulk length and the unconsumed input), and the
 * length of an inline line.
 *
 * One parser per connection, used by one thread. After resp_parser_next()
 * returns an error the parser is dead: the caller replies with
 * resp_parser_error() and closes the connection (the stream cannot be
 * resynchronised).
 */
#ifndef RESP_PARSE_H
#define RESP_PARSE_H

#include <stddef.h>

typedef struct resp_parser resp_parser_t;

typedef struct resp_limits {
    size_t max_args;          /* arguments per command (incl. the name), >= 1 */
    size_t max_request_bytes; /* bytes of one request, and unconsumed input */
    size_t max_inline_bytes;  /* length of one inline line */
} resp_limits_t;

/* One parsed command. argv[i] points to argvlen[i] bytes followed by a NUL
 * (arguments are binary safe; the NUL is only a convenience). The arrays and
 * bytes belong to the parser and stay valid until its next call. */
typedef struct resp_cmd {
    size_t argc;
    const char **argv;
    const size_t *argvlen;
} resp_cmd_t;

/* NULL on allocation failure. `limits` is copied. */
resp_parser_t *resp_parser_new(const resp_limits_t *limits);
void resp_parser_free(resp_parser_t *p);

/* Appends received bytes. Returns 0, SL_ENOMEM, or SL_ETOOBIG when the
 * unconsumed input would exceed max_request_bytes (the parser is then dead). */
int resp_parser_feed(resp_parser_t *p, const void *data, size_t len);

/* Extracts the next complete command: returns 1 and fills *cmd, 0 when more
 * input is needed, or a negative SL_E* code (SL_EPARSE malformed frame,
 * SL_ETOOBIG a limit broken, SL_ENOMEM) with the reason in
 * resp_parser_error(). Empty commands (blank inline lines, "*0") are
 * skipped. */
int resp_parser_next(resp_parser_t *p, resp_cmd_t *cmd);

/* Human-readable reason of the last error, suitable after "-ERR ". */
const char *resp_parser_error(const resp_parser_t *p);

/* Bytes received but not yet returned as commands. */
size_t resp_parser_pending(const resp_parser_t *p);

#endif
