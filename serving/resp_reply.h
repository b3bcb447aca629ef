/*
 * resp_reply.h — RESP2 reply encoding into an sl_buf_t output buffer.
 *
 * Each function appends one complete reply element and returns 0 or
 * SL_ENOMEM (the buffer then keeps what it had before the failed element;
 * the connection is closed by the caller). Single thread: the buffer is the
 * connection's.
 */
#ifndef RESP_REPLY_H
#define RESP_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "sl_buf.h"

int resp_reply_status(sl_buf_t *b, const char *s);          /* +s */
int resp_reply_error(sl_buf_t *b, const char *msg);         /* -msg (CR/LF replaced) */
int resp_reply_errorf(sl_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int resp_reply_int(sl_buf_t *b, int64_t v);                 /* :v */
int resp_reply_bulk(sl_buf_t *b, const void *p, size_t n);  /* $n bytes */
int resp_reply_bulk_str(sl_buf_t *b, const char *s);
int resp_reply_nil(sl_buf_t *b);                            /* $-1 */
int resp_reply_array(sl_buf_t *b, size_t n);                /* *n header */
/* An integer as a bulk string ("$2\r\n42\r\n"). */
int resp_reply_int_bulk(sl_buf_t *b, int64_t v);
/* A double as a bulk string, in a short form that reads back exactly. */
int resp_reply_double(sl_buf_t *b, double v);

/* Round-trip text of a double ("0.1", "42", "1e+300", "inf", "nan") into
 * buf (>= 40 bytes): up to 9 fraction digits when they suffice, else the
 * shorter of %.15g / %.17g that reads back exactly. Returns the length. */
size_t resp_format_double(double v, char *buf, size_t size);

#endif
