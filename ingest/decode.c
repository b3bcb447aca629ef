/*
 * decode.c — the decoder front (format dispatch, size and tombstone checks,
 * filters) and the JSON implementation on cJSON.
 *
 * A decoder owns a values array (one agg_input_t per source field) and the
 * last parsed document, whose strings the values borrow; both are replaced by
 * the next decode call. Used by one thread at a time.
 *
 * cJSON allocates every item and string of a document separately (about ten
 * malloc/free pairs for a small event). Each decoder has an arena instead:
 * while a decoder parses or deletes its document, cJSON's allocation hooks
 * (installed once, process-wide, at load time) bump-allocate from that
 * decoder's arena, found through a thread-local pointer that is set only
 * around those two calls; a document that outgrows the arena continues in
 * malloc. Releasing a document that fit is a reset of the arena. Every other
 * cJSON use in the process (tl_arena NULL) gets plain malloc and free.
 */
#include "decode.h"
#include "sl_err.h"
#include "sl_time.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct decoder_ops {
    ingest_bad_t (*decode)(ingest_decoder_t *dec, const void *payload, size_t len,
                           char *why, size_t whysize);
    void (*release)(ingest_decoder_t *dec);   /* frees the last document */
} decoder_ops_t;

/* Bump allocator for one decoder's documents (see the top). */
#define JSON_ARENA_BYTES 4096

typedef struct json_arena {
    unsigned char *base;
    size_t used;
    bool spilled;             /* some item of the document came from malloc */
} json_arena_t;

static _Thread_local json_arena_t *tl_arena;

static void *json_malloc(size_t n)
{
    json_arena_t *a = tl_arena;
    if (a) {
        size_t need = (n + 15) & ~(size_t)15;
        if (need >= n && need <= JSON_ARENA_BYTES - a->used) {
            void *p = a->base + a->used;
            a->used += need;
            return p;
        }
        a->spilled = true;
    }
    return malloc(n);
}

static void json_free(void *p)
{
    json_arena_t *a = tl_arena;
    if (a && (unsigned char *)p >= a->base && (unsigned char *)p < a->base + JSON_ARENA_BYTES)
        return;                   /* reclaimed by the arena's reset */
    free(p);
}

/* Before main(): no other thread can be inside cJSON yet. */
__attribute__((constructor)) static void json_hooks_install(void)
{
    cJSON_Hooks hooks = { json_malloc, json_free };
    cJSON_InitHooks(&hooks);
}

struct ingest_decoder {
    const decoder_ops_t *ops;
    json_arena_t arena;
    const schema_source_t *src;
    size_t max_bytes;
    bool *required;           /* per field */
    agg_input_t *vals;        /* per field, borrowed by records */
    int64_t time_ms;
    void *doc;                /* implementation's last document */
};

static const char *const bad_names[] = {
    "ok",
#define INGEST__B(n, s) s,
    INGEST_BAD_MAP(INGEST__B)
#undef INGEST__B
};

const char *ingest_bad_name(ingest_bad_t reason)
{
    if ((unsigned)reason >= INGEST_BAD__COUNT) return "unknown";
    return bad_names[reason];
}

static ingest_bad_t bad(ingest_bad_t r, char *why, size_t whysize, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static ingest_bad_t bad(ingest_bad_t r, char *why, size_t whysize, const char *fmt, ...)
{
    if (why && whysize) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whysize, fmt, ap);
        va_end(ap);
    }
    return r;
}

/* ---- JSON ------------------------------------------------------------ */

#define JSON_MAX_EXACT_INT 9007199254740992.0   /* 2^53 */

static void json_release(ingest_decoder_t *dec)
{
    if (dec->arena.spilled || !dec->arena.base) {
        /* items outside the arena are freed, the others skipped */
        tl_arena = dec->arena.base ? &dec->arena : NULL;
        cJSON_Delete(dec->doc);
        tl_arena = NULL;
    }
    dec->arena.used = 0;
    dec->arena.spilled = false;
    dec->doc = NULL;
}

static ingest_bad_t json_time(ingest_decoder_t *dec, const cJSON *item, char *why, size_t whysize)
{
    const schema_source_t *src = dec->src;
    const char *name = src->fields[src->time_field].name;
    switch (src->time_format) {
    case SCHEMA_TIME_EPOCH_MS:
    case SCHEMA_TIME_EPOCH_S: {
        if (!cJSON_IsNumber(item))
            return bad(INGEST_BAD_BAD_TIMESTAMP, why, whysize, "field '%s': not a number", name);
        double v = item->valuedouble;
        if (src->time_format == SCHEMA_TIME_EPOCH_S) v *= 1000.0;
        else if (v != floor(v))
            return bad(INGEST_BAD_BAD_TIMESTAMP, why, whysize, "field '%s': epoch_ms not integral", name);
        if (!isfinite(v) || fabs(v) > JSON_MAX_EXACT_INT)
            return bad(INGEST_BAD_BAD_TIMESTAMP, why, whysize, "field '%s': out of range", name);
        dec->time_ms = (int64_t)llround(v);
        return INGEST_OK;
    }
    case SCHEMA_TIME_RFC3339:
        if (!cJSON_IsString(item) ||
            sl_rfc3339_parse(item->valuestring, strlen(item->valuestring), &dec->time_ms) != 0)
            return bad(INGEST_BAD_BAD_TIMESTAMP, why, whysize, "field '%s': not an RFC 3339 timestamp", name);
        return INGEST_OK;
    }
    return bad(INGEST_BAD_BAD_TIMESTAMP, why, whysize, "unknown time format");
}

static ingest_bad_t json_decode(ingest_decoder_t *dec, const void *payload, size_t len,
                                char *why, size_t whysize)
{
    const schema_source_t *src = dec->src;
    const char *end = NULL;
    tl_arena = dec->arena.base ? &dec->arena : NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(payload, len, &end, 0);
    tl_arena = NULL;
    if (!root) {
        dec->arena.used = 0;          /* cJSON freed what it had built */
        dec->arena.spilled = false;
    }
    if (!root)
        return bad(INGEST_BAD_MALFORMED, why, whysize, "invalid JSON");
    dec->doc = root;
    for (const char *p = end, *e = (const char *)payload + len; p && p < e; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return bad(INGEST_BAD_MALFORMED, why, whysize, "trailing bytes after JSON value");
    if (!cJSON_IsObject(root))
        return bad(INGEST_BAD_MALFORMED, why, whysize, "not a JSON object");

    for (size_t i = 0; i < src->n_fields; i++) {
        const schema_field_t *f = &src->fields[i];
        agg_input_t *v = &dec->vals[i];
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, f->name);
        memset(v, 0, sizeof *v);
        if (!item || cJSON_IsNull(item)) {
            if (dec->required[i])
                return bad(INGEST_BAD_MISSING_FIELD, why, whysize, "field '%s' missing", f->name);
            continue;
        }
        if ((int)i == src->time_field) {
            ingest_bad_t r = json_time(dec, item, why, whysize);
            if (r) return r;
        }
        switch (f->type) {
        case SCHEMA_TYPE_STRING:
            if (!cJSON_IsString(item)) goto mistyped;
            v->type = AGG_IN_STRING;
            v->s = item->valuestring;
            v->slen = strlen(item->valuestring);
            break;
        case SCHEMA_TYPE_BOOL:
            if (!cJSON_IsBool(item)) goto mistyped;
            v->type = AGG_IN_BOOL;
            v->i = cJSON_IsTrue(item);
            break;
        case SCHEMA_TYPE_DOUBLE:
            if (!cJSON_IsNumber(item)) goto mistyped;
            v->type = AGG_IN_DOUBLE;
            v->d = item->valuedouble;
            break;
        case SCHEMA_TYPE_INT: {
            if (!cJSON_IsNumber(item)) goto mistyped;
            double d = item->valuedouble;
            if (d != floor(d) || fabs(d) > JSON_MAX_EXACT_INT)
                return bad((int)i == src->time_field ? INGEST_BAD_BAD_TIMESTAMP : INGEST_BAD_TYPE_MISMATCH,
                           why, whysize, "field '%s': not an exact integer", f->name);
            v->type = AGG_IN_INT;
            v->i = (int64_t)d;
            break;
        }
        default:
            goto mistyped;
        }
        continue;
    mistyped:
        return bad((int)i == src->time_field ? INGEST_BAD_BAD_TIMESTAMP : INGEST_BAD_TYPE_MISMATCH,
                   why, whysize, "field '%s': expected %s", f->name, schema_type_name(f->type));
    }
    return INGEST_OK;
}

static const decoder_ops_t json_ops = { json_decode, json_release };

/* ---- front ----------------------------------------------------------- */

int ingest_decoder_new(const schema_t *schema, int source, size_t max_bytes,
                       ingest_decoder_t **out, char *errstr, size_t errsize)
{
    const schema_source_t *src = &schema->sources[source];
    ingest_decoder_t *dec = calloc(1, sizeof *dec);
    *out = NULL;
    if (!dec) return SL_ENOMEM;
    switch (src->format) {
    case SCHEMA_FORMAT_JSON:
        dec->ops = &json_ops;
        break;
    default:
        snprintf(errstr, errsize, "source '%s': unsupported format %d", src->name, (int)src->format);
        free(dec);
        return SL_EINVAL;
    }
    dec->src = src;
    dec->max_bytes = max_bytes;
    dec->arena.base = malloc(JSON_ARENA_BYTES);   /* NULL: cJSON uses malloc */
    dec->required = calloc(src->n_fields ? src->n_fields : 1, sizeof *dec->required);
    dec->vals = calloc(src->n_fields ? src->n_fields : 1, sizeof *dec->vals);
    if (!dec->required || !dec->vals) {
        ingest_decoder_free(dec);
        return SL_ENOMEM;
    }
    if (src->time_field >= 0 && (size_t)src->time_field < src->n_fields)
        dec->required[src->time_field] = true;
    for (size_t v = 0; v < schema->n_views; v++) {
        const schema_view_t *view = &schema->views[v];
        if (view->source != source) continue;
        const schema_entity_t *ent = &schema->entities[view->entity];
        for (size_t k = 0; k < ent->n_keys; k++)
            dec->required[view->key_fields[k]] = true;
    }
    *out = dec;
    return 0;
}

void ingest_decoder_free(ingest_decoder_t *dec)
{
    if (!dec) return;
    if (dec->doc) dec->ops->release(dec);
    free(dec->arena.base);
    free(dec->required);
    free(dec->vals);
    free(dec);
}

ingest_bad_t ingest_decode(ingest_decoder_t *dec, const void *payload, size_t len,
                           ingest_record_t *rec, char *why, size_t whysize)
{
    if (dec->doc) dec->ops->release(dec);
    if (why && whysize) why[0] = '\0';
    if (!payload)
        return bad(INGEST_BAD_TOMBSTONE, why, whysize, "tombstone (null payload)");
    if (dec->max_bytes && len > dec->max_bytes)
        return bad(INGEST_BAD_OVERSIZED, why, whysize, "%zu bytes > max_message_bytes %zu",
                   len, dec->max_bytes);
    ingest_bad_t r = dec->ops->decode(dec, payload, len, why, whysize);
    if (r) return r;
    rec->time_ms = dec->time_ms;
    rec->fields = dec->vals;
    rec->n_fields = dec->src->n_fields;
    return INGEST_OK;
}

static int cmp_num(const schema_filter_t *f, const agg_input_t *v, int *out)
{
    switch (v->type) {
    case AGG_IN_INT:
    case AGG_IN_BOOL:
        if (f->type == SCHEMA_TYPE_DOUBLE) {
            double a = (double)v->i;
            *out = a < f->d ? -1 : a > f->d;
        } else {
            *out = v->i < f->i ? -1 : v->i > f->i;
        }
        return 0;
    case AGG_IN_DOUBLE: {
        double b = f->type == SCHEMA_TYPE_DOUBLE ? f->d : (double)f->i;
        if (isnan(v->d)) return -1;
        *out = v->d < b ? -1 : v->d > b;
        return 0;
    }
    case AGG_IN_STRING: {
        size_t n = strlen(f->s ? f->s : "");
        int c = memcmp(v->s, f->s ? f->s : "", v->slen < n ? v->slen : n);
        *out = c ? (c < 0 ? -1 : 1) : (v->slen < n ? -1 : v->slen > n);
        return 0;
    }
    default:
        return -1;
    }
}

bool ingest_filter_match(const schema_filter_t *f, const agg_input_t *fields)
{
    if (f->op == SCHEMA_FILTER_NONE) return true;
    const agg_input_t *v = &fields[f->field];
    int c;
    if (v->type == AGG_IN_MISSING || cmp_num(f, v, &c) != 0) return false;
    switch (f->op) {
    case SCHEMA_FILTER_EQ: return c == 0;
    case SCHEMA_FILTER_NE: return c != 0;
    case SCHEMA_FILTER_GT: return c > 0;
    case SCHEMA_FILTER_GE: return c >= 0;
    case SCHEMA_FILTER_LT: return c < 0;
    case SCHEMA_FILTER_LE: return c <= 0;
    default: return false;
    }
}
