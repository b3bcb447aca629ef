/*
 * csv.c — strict RFC 4180 reading and writing (contract in csv.h).
 *
 * The reader is a byte state machine over a buffered FILE:
 *
 *   field_start --'"'--> quoted --'"'--> quote_seen --'"'--> quoted (one '"')
 *        |                  ^                  |--','--> field_start
 *        |                  +--other bytes     |--LF / CR LF / EOF--> row done
 *        +--other--> unquoted --','--> field_start, --LF/EOF--> row done
 *
 * Field bytes are collected in one buffer with a NUL after each field;
 * fields[] holds their offsets, resolved to pointers after the row is
 * complete (the buffer may move while it grows).
 */
#include "csv.h"

#include "sl_err.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define CSV_MAX_ROW_BYTES (1u << 20)
#define CSV_MAX_FIELDS 4096

struct csv_reader {
    FILE *f;
    int own;
    long line, row_line;
    sl_buf_t bytes;
    size_t *off, *len;
    size_t n, cap;
};

int csv_reader_from_file(FILE *f, csv_reader_t **out)
{
    csv_reader_t *r = calloc(1, sizeof *r);
    if (!r) return SL_ENOMEM;
    r->f = f;
    r->line = 1;
    *out = r;
    return 0;
}

int csv_reader_open(const char *path, csv_reader_t **out, char *errstr, size_t errsize)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        snprintf(errstr, errsize, "%s: %s", path, strerror(errno));
        return SL_EIO;
    }
    int rc = csv_reader_from_file(f, out);
    if (rc) {
        if (f != stdin) fclose(f);
        return rc;
    }
    (*out)->own = f != stdin;
    return 0;
}

void csv_reader_free(csv_reader_t *r)
{
    if (!r) return;
    if (r->own) fclose(r->f);
    sl_buf_free(&r->bytes);
    free(r->off);
    free(r->len);
    free(r);
}

static int field_begin(csv_reader_t *r)
{
    if (r->n == CSV_MAX_FIELDS) return SL_ETOOBIG;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        size_t *o = realloc(r->off, cap * sizeof *o);
        if (!o) return SL_ENOMEM;
        r->off = o;
        size_t *l = realloc(r->len, cap * sizeof *l);
        if (!l) return SL_ENOMEM;
        r->len = l;
        r->cap = cap;
    }
    r->off[r->n] = r->bytes.len;
    r->len[r->n] = 0;
    r->n++;
    return 0;
}

static int field_byte(csv_reader_t *r, int c)
{
    if (r->bytes.len >= CSV_MAX_ROW_BYTES) return SL_ETOOBIG;
    unsigned char ch = (unsigned char)c;
    if (sl_buf_append(&r->bytes, &ch, 1)) return SL_ENOMEM;
    r->len[r->n - 1]++;
    return 0;
}

static int field_end(csv_reader_t *r)
{
    unsigned char z = 0;
    return sl_buf_append(&r->bytes, &z, 1) ? SL_ENOMEM : 0;
}

int csv_read_row(csv_reader_t *r, char *errstr, size_t errsize)
{
    enum { START, UNQUOTED, QUOTED, QUOTE_SEEN } s = START;
    int rc = 0;
    sl_buf_reset(&r->bytes);
    r->n = 0;
    r->row_line = r->line;
    int c = getc(r->f);
    if (c == EOF) {
        if (ferror(r->f)) { snprintf(errstr, errsize, "line %ld: read error", r->line); return SL_EIO; }
        return 0;
    }
    if ((rc = field_begin(r))) goto fail;
    for (;; c = getc(r->f)) {
        if (c == '\r' && s != QUOTED) {
            int d = getc(r->f);
            if (d != '\n') {
                if (d != EOF) ungetc(d, r->f);
                snprintf(errstr, errsize, "line %ld: carriage return outside quotes", r->line);
                return SL_EPARSE;
            }
            c = '\n';
        }
        if (c == EOF || (c == '\n' && s != QUOTED)) {
            if (s == QUOTED) {
                snprintf(errstr, errsize, "line %ld: unterminated quoted field (opened on line %ld)",
                         r->line, r->row_line);
                return SL_EPARSE;
            }
            if (c == '\n') r->line++;
            if ((rc = field_end(r))) goto fail;
            return (int)r->n;
        }
        if (c == '\n') r->line++;
        switch (s) {
        case START:
            if (c == '"') { s = QUOTED; break; }
            if (c == ',') { if ((rc = field_end(r)) || (rc = field_begin(r))) goto fail; break; }
            s = UNQUOTED;
            if ((rc = field_byte(r, c))) goto fail;
            break;
        case UNQUOTED:
            if (c == '"') {
                snprintf(errstr, errsize, "line %ld: quote inside an unquoted field", r->line);
                return SL_EPARSE;
            }
            if (c == ',') { s = START; if ((rc = field_end(r)) || (rc = field_begin(r))) goto fail; break; }
            if ((rc = field_byte(r, c))) goto fail;
            break;
        case QUOTED:
            if (c == '"') { s = QUOTE_SEEN; break; }
            if ((rc = field_byte(r, c))) goto fail;
            break;
        case QUOTE_SEEN:
            if (c == '"') { s = QUOTED; if ((rc = field_byte(r, c))) goto fail; break; }
            if (c == ',') { s = START; if ((rc = field_end(r)) || (rc = field_begin(r))) goto fail; break; }
            snprintf(errstr, errsize, "line %ld: text after a closing quote", r->line);
            return SL_EPARSE;
        }
    }
fail:
    if (rc == SL_ETOOBIG)
        snprintf(errstr, errsize, "line %ld: row too large (max %u bytes, %d fields)", r->row_line,
                 CSV_MAX_ROW_BYTES, CSV_MAX_FIELDS);
    else
        snprintf(errstr, errsize, "line %ld: out of memory", r->row_line);
    return rc;
}

const char *csv_field(const csv_reader_t *r, size_t i, size_t *len)
{
    if (i >= r->n) { if (len) *len = 0; return NULL; }
    if (len) *len = r->len[i];
    return (const char *)r->bytes.data + r->off[i];
}

long csv_row_line(const csv_reader_t *r) { return r->row_line; }

int csv_put_field(sl_buf_t *b, const char *s, size_t len)
{
    bool quote = false;
    for (size_t i = 0; i < len && !quote; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    if (!quote) return len ? sl_buf_append(b, s, len) : 0;
    if (sl_buf_append(b, "\"", 1)) return SL_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' && sl_buf_append(b, "\"", 1)) return SL_ENOMEM;
        if (sl_buf_append(b, &s[i], 1)) return SL_ENOMEM;
    }
    return sl_buf_append(b, "\"", 1);
}
