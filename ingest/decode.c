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
 *
 * Most payloads are one flat object of escape-free strings, numbers and
 * literals. json_scan reads exactly that shape in one pass, without a tree
 * (no cJSON items, no per-member key lookups, numbers converted in place):
 * it accepts only the strict RFC 8259 grammar with flat members, which cJSON
 * accepts too and reads to the same values, and declines everything else
 * (nesting, escapes, control bytes, whitespace other than the four JSON
 * ones, a BOM, number tokens over 40 bytes, any malformation) before any
 * verdict. A declined payload is parsed by cJSON as before, so the fast path
 * changes no verdict, reason or value; tests/ingest/test_decode_fast.c
 * checks both paths against each other on mutated payloads. Numbers: a
 * mantissa of at most 19 significant digits that fits 2^53 with a decimal
 * exponent within +-22 is w * 10^e or w / 10^-e, one correctly rounded
 * operation on exact operands, hence the double strtod returns (Clinger's
 * fast path); any other token goes to strtod on a copy prepared exactly as
 * cJSON prepares it.
 */
#include "decode.h"
#include "sl_err.h"
#include "sl_time.h"

#include <cjson/cJSON.h>
#include <locale.h>
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

/* One member's value as the field checks see it, from either path. */
typedef enum { JV_ABSENT = 0, JV_NULL, JV_FALSE, JV_TRUE, JV_NUMBER, JV_STRING, JV_OTHER } jv_kind_t;

typedef struct jv {
    jv_kind_t kind;
    double d;                 /* NUMBER */
    const char *s;            /* STRING: NUL-terminated, decoder-owned */
    size_t slen;
} jv_t;

struct ingest_decoder {
    const decoder_ops_t *ops;
    json_arena_t arena;
    const schema_source_t *src;
    size_t max_bytes;
    bool *required;           /* per field */
    agg_input_t *vals;        /* per field, borrowed by records */
    jv_t *jv;                 /* per field: the member read by either path */
    size_t *name_len;         /* per field: strlen of its name */
    char *sbuf;               /* fast path: copies of string values */
    size_t scap;
    bool fast;                /* try json_scan first (tests switch it off) */
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

static ingest_bad_t json_time(ingest_decoder_t *dec, const jv_t *item, char *why, size_t whysize)
{
    const schema_source_t *src = dec->src;
    const char *name = src->fields[src->time_field].name;
    switch (src->time_format) {
    case SCHEMA_TIME_EPOCH_MS:
    case SCHEMA_TIME_EPOCH_S: {
        if (item->kind != JV_NUMBER)
            return bad(INGEST_BAD_BAD_TIMESTAMP, why, whysize, "field '%s': not a number", name);
        double v = item->d;
        if (src->time_format == SCHEMA_TIME_EPOCH_S) v *= 1000.0;
        else if (v != floor(v))
            return bad(INGEST_BAD_BAD_TIMESTAMP, why, whysize, "field '%s': epoch_ms not integral", name);
        if (!isfinite(v) || fabs(v) > JSON_MAX_EXACT_INT)
            return bad(INGEST_BAD_BAD_TIMESTAMP, why, whysize, "field '%s': out of range", name);
        dec->time_ms = (int64_t)llround(v);
        return INGEST_OK;
    }
    case SCHEMA_TIME_RFC3339:
        if (item->kind != JV_STRING || sl_rfc3339_parse(item->s, item->slen, &dec->time_ms) != 0)
            return bad(INGEST_BAD_BAD_TIMESTAMP, why, whysize, "field '%s': not an RFC 3339 timestamp", name);
        return INGEST_OK;
    }
    return bad(INGEST_BAD_BAD_TIMESTAMP, why, whysize, "unknown time format");
}

/* ---- JSON fast path (see the top) ------------------------------------ */

#define JSON_FAST_NUM_MAX 40      /* longer number tokens: cJSON's path */

static const double pow10_exact[23] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

static inline bool json_is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static inline bool json_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

size_t ingest__json_number(const char *p, size_t len, double *out)
{
    const char *s = p, *e = p + len;
    uint64_t w = 0;
    int sig = 0;              /* significant digits in w */
    int64_t exp10 = 0;
    bool slow = false;

    if (p < e && *p == '-') p++;
    if (p == e || !json_is_digit(*p)) return 0;
    if (*p == '0') {
        p++;
    } else {
        for (; p < e && json_is_digit(*p); p++) {
            if (sig < 19) {
                w = w * 10 + (uint64_t)(*p - '0');
                sig++;
            } else {
                slow = true;
            }
        }
    }
    if (p < e && *p == '.') {
        p++;
        if (p == e || !json_is_digit(*p)) return 0;
        for (; p < e && json_is_digit(*p); p++) {
            if (sig < 19) {
                w = w * 10 + (uint64_t)(*p - '0');
                if (w) sig++;         /* leading zeros of 0.00x are not significant */
                exp10--;
            } else {
                slow = true;
            }
        }
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        bool eneg = false;
        if (p < e && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p == e || !json_is_digit(*p)) return 0;
        int64_t x = 0;
        for (; p < e && json_is_digit(*p); p++)
            if (x < 100000) x = x * 10 + (*p - '0');
        exp10 += eneg ? -x : x;
    }
    size_t n = (size_t)(p - s);
    if (n > JSON_FAST_NUM_MAX) return 0;
    if (!slow && w == 0) {
        *out = *s == '-' ? -0.0 : 0.0;
        return n;
    }
    if (!slow && w <= ((uint64_t)1 << 53) && exp10 >= -22 && exp10 <= 22) {
        double d = (double)w;
        d = exp10 < 0 ? d / pow10_exact[-exp10] : d * pow10_exact[exp10];
        *out = *s == '-' ? -d : d;
        return n;
    }
    /* as cJSON's parse_number: '.' becomes the locale's decimal point */
    char buf[JSON_FAST_NUM_MAX + 1], *end = NULL;
    char point = localeconv()->decimal_point[0];
    for (size_t i = 0; i < n; i++) buf[i] = s[i] == '.' ? point : s[i];
    buf[n] = '\0';
    *out = strtod(buf, &end);
    return end == buf + n ? n : 0;
}

static int json_field_of(const ingest_decoder_t *dec, const char *k, size_t klen)
{
    const schema_source_t *src = dec->src;
    for (size_t i = 0; i < src->n_fields; i++)
        if (dec->name_len[i] == klen && memcmp(src->fields[i].name, k, klen) == 0)
            return (int)i;
    return -1;
}

/* Scans an escape-free string whose opening quote is at *pp; leaves *pp past
 * the closing one. false: escape, control byte or no closing quote. */
static inline bool json_scan_string(const char **pp, const char *e, const char **s, size_t *n)
{
    const char *p = *pp + 1, *b = p;
    for (; p < e && *p != '"'; p++)
        if ((unsigned char)*p < 0x20 || *p == '\\') return false;
    if (p == e) return false;
    *s = b;
    *n = (size_t)(p - b);
    *pp = p + 1;
    return true;
}

/* Reads a flat object into dec->jv (first occurrence of a key wins, as
 * with cJSON_GetObjectItemCaseSensitive). false: declined (see the top);
 * dec->jv then holds garbage and the caller starts over with cJSON. */
static bool json_scan(ingest_decoder_t *dec, const char *p, size_t len)
{
    const char *e = p + len;
    size_t nf = dec->src->n_fields, sused = 0;
    if (len + nf > dec->scap) {
        char *nb = realloc(dec->sbuf, len + nf);
        if (!nb) return false;
        dec->sbuf = nb;
        dec->scap = len + nf;
    }
    for (size_t i = 0; i < nf; i++) dec->jv[i].kind = JV_ABSENT;
    while (p < e && json_is_ws(*p)) p++;
    if (p == e || *p != '{') return false;
    p++;
    while (p < e && json_is_ws(*p)) p++;
    if (p < e && *p == '}') {
        p++;
        goto tail;
    }
    for (;;) {
        const char *k, *vs;
        size_t klen, vn;
        if (p == e || *p != '"' || !json_scan_string(&p, e, &k, &klen)) return false;
        while (p < e && json_is_ws(*p)) p++;
        if (p == e || *p != ':') return false;
        p++;
        while (p < e && json_is_ws(*p)) p++;
        if (p == e) return false;
        int fi = json_field_of(dec, k, klen);
        jv_t scratch, *v = fi >= 0 && dec->jv[fi].kind == JV_ABSENT ? &dec->jv[fi] : &scratch;
        switch (*p) {
        case '"':
            if (!json_scan_string(&p, e, &vs, &vn)) return false;
            v->kind = JV_STRING;
            if (v != &scratch) {
                memcpy(dec->sbuf + sused, vs, vn);
                dec->sbuf[sused + vn] = '\0';
                v->s = dec->sbuf + sused;
                v->slen = vn;
                sused += vn + 1;
            }
            break;
        case 't':
            if (e - p < 4 || memcmp(p, "true", 4) != 0) return false;
            v->kind = JV_TRUE;
            p += 4;
            break;
        case 'f':
            if (e - p < 5 || memcmp(p, "false", 5) != 0) return false;
            v->kind = JV_FALSE;
            p += 5;
            break;
        case 'n':
            if (e - p < 4 || memcmp(p, "null", 4) != 0) return false;
            v->kind = JV_NULL;
            p += 4;
            break;
        default:
            if (!(vn = ingest__json_number(p, (size_t)(e - p), &v->d))) return false;
            v->kind = JV_NUMBER;
            p += vn;
            break;
        }
        while (p < e && json_is_ws(*p)) p++;
        if (p == e) return false;
        if (*p == '}') {
            p++;
            break;
        }
        if (*p != ',') return false;
        p++;
        while (p < e && json_is_ws(*p)) p++;
    }
tail:
    while (p < e && json_is_ws(*p)) p++;
    return p == e;
}

/* The field checks of decode.h on dec->jv, filling dec->vals. */
static ingest_bad_t json_fields(ingest_decoder_t *dec, char *why, size_t whysize)
{
    const schema_source_t *src = dec->src;
    for (size_t i = 0; i < src->n_fields; i++) {
        const schema_field_t *f = &src->fields[i];
        agg_input_t *v = &dec->vals[i];
        const jv_t *item = &dec->jv[i];
        memset(v, 0, sizeof *v);
        if (item->kind == JV_ABSENT || item->kind == JV_NULL) {
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
            if (item->kind != JV_STRING) goto mistyped;
            v->type = AGG_IN_STRING;
            v->s = item->s;
            v->slen = item->slen;
            break;
        case SCHEMA_TYPE_BOOL:
            if (item->kind != JV_TRUE && item->kind != JV_FALSE) goto mistyped;
            v->type = AGG_IN_BOOL;
            v->i = item->kind == JV_TRUE;
            break;
        case SCHEMA_TYPE_DOUBLE:
            if (item->kind != JV_NUMBER) goto mistyped;
            v->type = AGG_IN_DOUBLE;
            v->d = item->d;
            break;
        case SCHEMA_TYPE_INT: {
            if (item->kind != JV_NUMBER) goto mistyped;
            double d = item->d;
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

static ingest_bad_t json_decode(ingest_decoder_t *dec, const void *payload, size_t len,
                                char *why, size_t whysize)
{
    const schema_source_t *src = dec->src;
    if (dec->fast && json_scan(dec, payload, len))
        return json_fields(dec, why, whysize);

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
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, src->fields[i].name);
        jv_t *v = &dec->jv[i];
        if (!item) v->kind = JV_ABSENT;
        else if (cJSON_IsNull(item)) v->kind = JV_NULL;
        else if (cJSON_IsFalse(item)) v->kind = JV_FALSE;
        else if (cJSON_IsTrue(item)) v->kind = JV_TRUE;
        else if (cJSON_IsNumber(item)) v->kind = JV_NUMBER, v->d = item->valuedouble;
        else if (cJSON_IsString(item))
            v->kind = JV_STRING, v->s = item->valuestring, v->slen = strlen(item->valuestring);
        else v->kind = JV_OTHER;
    }
    return json_fields(dec, why, whysize);
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
    dec->jv = calloc(src->n_fields ? src->n_fields : 1, sizeof *dec->jv);
    dec->name_len = calloc(src->n_fields ? src->n_fields : 1, sizeof *dec->name_len);
    if (!dec->required || !dec->vals || !dec->jv || !dec->name_len) {
        ingest_decoder_free(dec);
        return SL_ENOMEM;
    }
    for (size_t i = 0; i < src->n_fields; i++) dec->name_len[i] = strlen(src->fields[i].name);
    dec->fast = true;
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
    free(dec->jv);
    free(dec->name_len);
    free(dec->sbuf);
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

void ingest__decoder_set_fast(ingest_decoder_t *dec, bool on)
{
    dec->fast = on;
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
