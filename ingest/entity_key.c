/*
 * entity_key.c — canonical entity key bytes (format described in
 * entity_key.h). Pure functions, no state, callable from any thread.
 */
#include "entity_key.h"
#include "sl_err.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Canonical text of one typed value into tmp (numbers) or a borrowed pointer
 * (strings). */
static int key_text(schema_type_t type, const agg_input_t *v, char *tmp, size_t tmpsize,
                    const char **text, size_t *len)
{
    switch (type) {
    case SCHEMA_TYPE_STRING:
        if (v->type != AGG_IN_STRING) return v->type == AGG_IN_MISSING ? SL_EINVAL : SL_ETYPE;
        *text = v->s;
        *len = v->slen;
        return 0;
    case SCHEMA_TYPE_INT:
        if (v->type != AGG_IN_INT) return v->type == AGG_IN_MISSING ? SL_EINVAL : SL_ETYPE;
        *len = (size_t)snprintf(tmp, tmpsize, "%lld", (long long)v->i);
        *text = tmp;
        return 0;
    case SCHEMA_TYPE_BOOL:
        if (v->type != AGG_IN_BOOL) return v->type == AGG_IN_MISSING ? SL_EINVAL : SL_ETYPE;
        *text = v->i ? "true" : "false";
        *len = strlen(*text);
        return 0;
    case SCHEMA_TYPE_DOUBLE: {
        double d;
        if (v->type == AGG_IN_DOUBLE) d = v->d;
        else if (v->type == AGG_IN_INT) d = (double)v->i;
        else return v->type == AGG_IN_MISSING ? SL_EINVAL : SL_ETYPE;
        if (!isfinite(d)) return SL_ERANGE;
        if (d == 0) d = 0;    /* -0 -> 0 */
        *len = (size_t)snprintf(tmp, tmpsize, "%.17g", d);
        *text = tmp;
        return 0;
    }
    default:
        return SL_EINVAL;
    }
}

static int key_append(sl_buf_t *out, size_t n, const char *text, size_t len)
{
    int rc;
    if (n > 1 && (rc = sl_buf_put_varint(out, len)) != 0) return rc;
    return sl_buf_append(out, text, len);
}

int ingest_key_encode(sl_buf_t *out, const schema_type_t *types,
                      const agg_input_t *vals, size_t n)
{
    char tmp[64];
    for (size_t i = 0; i < n; i++) {
        const char *text;
        size_t len;
        int rc = key_text(types[i], &vals[i], tmp, sizeof tmp, &text, &len);
        if (rc == 0) rc = key_append(out, n, text, len);
        if (rc) return rc;
    }
    return 0;
}

/* Strict parsers for text components: the whole part must be the value. */
static int parse_int(const char *p, size_t len, int64_t *out)
{
    char tmp[32];
    if (len == 0 || len >= sizeof tmp) return SL_ETYPE;
    memcpy(tmp, p, len);
    tmp[len] = '\0';
    if (!(tmp[0] == '-' || (tmp[0] >= '0' && tmp[0] <= '9'))) return SL_ETYPE;
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (errno || *end) return SL_ETYPE;
    *out = v;
    return 0;
}

static int parse_double(const char *p, size_t len, double *out)
{
    char tmp[64];
    if (len == 0 || len >= sizeof tmp) return SL_ETYPE;
    memcpy(tmp, p, len);
    tmp[len] = '\0';
    if (tmp[0] == ' ' || tmp[0] == '\t' || tmp[0] == '\n') return SL_ETYPE;
    char *end;
    errno = 0;
    double d = strtod(tmp, &end);
    if (errno == ERANGE || *end || !isfinite(d)) return SL_ETYPE;
    *out = d;
    return 0;
}

int ingest_key_from_text(sl_buf_t *out, const schema_entity_t *ent,
                         const char *const *parts, const size_t *lens, size_t n)
{
    if (n != ent->n_keys) return SL_EINVAL;
    char tmp[64];
    for (size_t i = 0; i < n; i++) {
        agg_input_t v = { 0 };
        int rc = 0;
        switch (ent->key_types[i]) {
        case SCHEMA_TYPE_STRING:
            v.type = AGG_IN_STRING; v.s = parts[i]; v.slen = lens[i];
            break;
        case SCHEMA_TYPE_INT:
            v.type = AGG_IN_INT;
            rc = parse_int(parts[i], lens[i], &v.i);
            break;
        case SCHEMA_TYPE_DOUBLE:
            v.type = AGG_IN_DOUBLE;
            rc = parse_double(parts[i], lens[i], &v.d);
            break;
        case SCHEMA_TYPE_BOOL:
            v.type = AGG_IN_BOOL;
            if (lens[i] == 4 && !memcmp(parts[i], "true", 4)) v.i = 1;
            else if (lens[i] == 5 && !memcmp(parts[i], "false", 5)) v.i = 0;
            else rc = SL_ETYPE;
            break;
        default:
            rc = SL_EINVAL;
        }
        const char *text;
        size_t len;
        if (rc == 0) rc = key_text(ent->key_types[i], &v, tmp, sizeof tmp, &text, &len);
        if (rc == 0) rc = key_append(out, n, text, len);
        if (rc) return rc == SL_ERANGE ? SL_ETYPE : rc;
    }
    return 0;
}

int ingest_key_format(sl_buf_t *out, size_t n_keys, const void *key, size_t klen)
{
    if (n_keys <= 1) return sl_buf_append(out, key, klen);
    sl_reader_t r;
    sl_reader_init(&r, key, klen);
    for (size_t i = 0; i < n_keys; i++) {
        const void *p;
        size_t n;
        int rc = sl_read_bytes(&r, &p, &n);
        if (rc) return SL_ECORRUPT;
        if (i && (rc = sl_buf_append(out, "|", 1)) != 0) return rc;
        if ((rc = sl_buf_append(out, p, n)) != 0) return rc;
    }
    return r.left ? SL_ECORRUPT : 0;
}
