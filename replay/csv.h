/*
 * csv.h — a small, strict CSV reader and writer (RFC 4180) for label files
 * and training-set output.
 *
 * Reader: fields separated by ',', rows by LF or CRLF; a field may be quoted
 * with '"' (then it may hold ',', CR, LF, and '""' for one quote). A quote
 * inside an unquoted field, text after a closing quote, or an unterminated
 * quoted field is an error naming the line. Field bytes are returned as
 * they are (no trimming, no type conversion). Rows are capped in size.
 *
 * Writer: a field is quoted when it holds ',', '"', CR or LF, or when it is
 * empty but must be told apart from a missing value (never needed here: an
 * empty cell IS the missing value).
 *
 * Threads: a reader belongs to one thread.
 */
#ifndef REPLAY_CSV_H
#define REPLAY_CSV_H

#include <stddef.h>
#include <stdio.h>

#include "sl_buf.h"

typedef struct csv_reader csv_reader_t;

/* Opens path for reading ("-" = stdin). Returns 0 or SL_EIO (errstr set). */
int csv_reader_open(const char *path, csv_reader_t **out, char *errstr, size_t errsize);
/* Reads from f (not closed by csv_reader_free). */
int csv_reader_from_file(FILE *f, csv_reader_t **out);
void csv_reader_free(csv_reader_t *r);

/* Reads the next row. Returns the number of fields (>= 1), 0 at end of
 * input, or SL_EPARSE / SL_ETOOBIG / SL_EIO / SL_ENOMEM with errstr set
 * ("line N: ..."). An empty line is a row with one empty field. */
int csv_read_row(csv_reader_t *r, char *errstr, size_t errsize);
/* Field i of the last row: bytes (NUL-terminated copy inside the reader,
 * valid until the next csv_read_row) and length. */
const char *csv_field(const csv_reader_t *r, size_t i, size_t *len);
/* Line on which the last row started (1-based). */
long csv_row_line(const csv_reader_t *r);

/* Appends one field, quoted if needed, to b. Returns 0 or SL_ENOMEM. */
int csv_put_field(sl_buf_t *b, const char *s, size_t len);

#endif
