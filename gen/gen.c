/*
 * gen.c — the event generator (see gen.h). A xoshiro256** PRNG seeded by
 * splitmix64 makes streams reproducible across machines; Zipf keys use an
 * inverse-CDF table per population (built once, binary searched per draw).
 * JSON is written directly: every string the generator emits comes from its
 * own vocabularies or from the schema's filter values, and is escaped.
 */
#include "gen.h"
#include "entity_key.h"
#include "sl_err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct population {
    int64_t n;
    double *cdf;             /* cdf[i] = P(rank <= i) */
} population_t;

typedef enum { ROLE_PLAIN, ROLE_KEY, ROLE_TIME } field_role_t;

typedef struct field_gen {
    field_role_t role;
    int pop;                 /* ROLE_KEY: index into g->pops */
    const char **vocab;      /* strings: vocabulary (filter values first) */
    size_t n_vocab;
    double *weights;         /* cumulative weights over vocab */
} field_gen_t;

struct gen {
    const schema_t *schema;
    const schema_source_t *src;
    gen_options_t o;
    uint64_t s[4];
    int64_t index;
    field_gen_t *fields;
    population_t *pops;
    size_t n_pops;
    int key_entity;
    int *key_fields;         /* source fields of the key entity, in key order */
    char numbuf[64];
    char **owned;            /* strings made for vocabularies */
    size_t n_owned;
};

static const char *const kind_names[] = { "good", "out_of_order", "late", "malformed",
    "missing_key", "type_mismatch", "bad_timestamp", "tombstone" };

const char *gen_kind_name(gen_kind_t k) { return k < GEN__KIND_COUNT ? kind_names[k] : "?"; }

void gen_options_defaults(gen_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->spacing_us = 10000;
    o->entities = 10000;
    o->zipf_s = 1.1;
    o->ooo_share = 0.05;
    o->late_share = 0.005;
    o->bad_share = 0.005;
}

/* ---- PRNG ------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(gen_t *g)
{
    uint64_t *s = g->s, r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static double uniform(gen_t *g) { return (double)(next_u64(g) >> 11) * 0x1.0p-53; }

static double normal(gen_t *g)
{
    double u1 = uniform(g), u2 = uniform(g);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static int64_t draw(gen_t *g, const population_t *p)
{
    double u = uniform(g);
    int64_t lo = 0, hi = p->n - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (p->cdf[mid] < u) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static int population_init(population_t *p, int64_t n, double s)
{
    p->n = n < 1 ? 1 : n;
    p->cdf = malloc((size_t)p->n * sizeof *p->cdf);
    if (!p->cdf) return SL_ENOMEM;
    double total = 0;
    for (int64_t i = 0; i < p->n; i++) total += s > 0 ? pow((double)(i + 1), -s) : 1.0;
    double acc = 0;
    for (int64_t i = 0; i < p->n; i++) {
        acc += (s > 0 ? pow((double)(i + 1), -s) : 1.0) / total;
        p->cdf[i] = acc;
    }
    p->cdf[p->n - 1] = 1.0;
    return SL_OK;
}

/* ---- vocabularies ------------------------------------------------------ */

static const struct { const char *field; const char *words[8]; double w[8]; } known[] = {
    { "status",     { "approved", "declined", "pending", "refunded" }, { 90, 6, 3, 1 } },
    { "currency",   { "EUR", "USD", "GBP", "CHF", "JPY" }, { 40, 35, 15, 5, 5 } },
    { "country",    { "DE", "FR", "US", "GB", "NL", "ES", "IT", "BR" }, { 25, 15, 20, 10, 8, 8, 8, 6 } },
    { "event_type", { "view", "click", "add_to_cart", "purchase" }, { 60, 30, 7, 3 } },
    { "page",       { "/", "/search", "/product", "/cart", "/checkout", "/help", "/account", "/deals" },
                    { 20, 25, 30, 8, 5, 3, 4, 5 } },
    { "city",       { "berlin", "paris", "lisbon", "madrid" }, { 40, 30, 15, 15 } },
};

static int vocab_add(gen_t *g, field_gen_t *fg, const char *word, double weight)
{
    for (size_t i = 0; i < fg->n_vocab; i++)
        if (!strcmp(fg->vocab[i], word)) return SL_OK;
    const char **v = realloc(fg->vocab, (fg->n_vocab + 1) * sizeof *v);
    if (!v) return SL_ENOMEM;
    fg->vocab = v;
    double *w = realloc(fg->weights, (fg->n_vocab + 1) * sizeof *w);
    if (!w) return SL_ENOMEM;
    fg->weights = w;
    char **own = realloc(g->owned, (g->n_owned + 1) * sizeof *own);
    if (!own) return SL_ENOMEM;
    g->owned = own;
    size_t n = strlen(word) + 1;
    char *copy = malloc(n);
    if (!copy) return SL_ENOMEM;
    memcpy(copy, word, n);
    g->owned[g->n_owned++] = copy;
    fg->vocab[fg->n_vocab] = copy;
    fg->weights[fg->n_vocab] = (fg->n_vocab ? fg->weights[fg->n_vocab - 1] : 0) + weight;
    fg->n_vocab++;
    return SL_OK;
}

static int build_vocab(gen_t *g, int fi)
{
    field_gen_t *fg = &g->fields[fi];
    const char *name = g->src->fields[fi].name;
    int rc;
    /* Filter values of views on this source come first, with real weight. */
    for (size_t v = 0; v < g->schema->n_views; v++) {
        const schema_view_t *view = &g->schema->views[v];
        if (view->source != (int)(g->src - g->schema->sources)) continue;
        if (view->filter.op != SCHEMA_FILTER_NONE && view->filter.field == fi && view->filter.s)
            if ((rc = vocab_add(g, fg, view->filter.s, 8))) return rc;
    }
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
        if (!strcmp(known[k].field, name)) {
            for (size_t i = 0; i < 8 && known[k].words[i]; i++)
                if ((rc = vocab_add(g, fg, known[k].words[i], known[k].w[i]))) return rc;
            return SL_OK;
        }
    for (int i = 0; i < 40; i++) {
        char w[96];
        snprintf(w, sizeof w, "%.40s-%02d", name, i);
        if ((rc = vocab_add(g, fg, w, 1.0 / (i + 1)))) return rc;
    }
    return SL_OK;
}

static const char *pick_word(gen_t *g, const field_gen_t *fg)
{
    double u = uniform(g) * fg->weights[fg->n_vocab - 1];
    for (size_t i = 0; i < fg->n_vocab; i++)
        if (u < fg->weights[i]) return fg->vocab[i];
    return fg->vocab[fg->n_vocab - 1];
}

/* ---- construction ------------------------------------------------------ */

int gen_new(const schema_t *schema, int source, const gen_options_t *opts, gen_t **out,
            char *errstr, size_t errsize)
{
    *out = NULL;
    if (source < 0 || (size_t)source >= schema->n_sources) {
        snprintf(errstr, errsize, "no such source");
        return SL_EINVAL;
    }
    if (opts->ooo_share < 0 || opts->late_share < 0 || opts->bad_share < 0 ||
        opts->ooo_share + opts->late_share + opts->bad_share > 1.0) {
        snprintf(errstr, errsize, "shares of out-of-order, late and bad events must be >= 0 "
                 "and add up to at most 1");
        return SL_EINVAL;
    }
    if (opts->spacing_us <= 0 || opts->entities <= 0) {
        snprintf(errstr, errsize, "spacing and entity population must be positive");
        return SL_EINVAL;
    }
    gen_t *g = calloc(1, sizeof *g);
    if (!g) return SL_ENOMEM;
    g->schema = schema;
    g->src = &schema->sources[source];
    g->o = *opts;
    uint64_t x = opts->seed;
    for (int i = 0; i < 4; i++) g->s[i] = splitmix64(&x);
    g->key_entity = -1;
    if (!(g->fields = calloc(g->src->n_fields, sizeof *g->fields))) goto nomem;
    g->fields[g->src->time_field].role = ROLE_TIME;

    /* The message key: the source's declared message_key (through a view
     * keyed by it), else the entity of its first view. */
    for (size_t v = 0; v < schema->n_views && g->key_entity < 0; v++) {
        const schema_view_t *view = &schema->views[v];
        if (view->source == source && g->src->n_msg_key_fields && !view->spans_partitions) {
            g->key_entity = view->entity;
            g->key_fields = view->key_fields;
        }
    }
    /* Key fields: one population per entity used by a view of the source. */
    for (size_t v = 0; v < schema->n_views; v++) {
        const schema_view_t *view = &schema->views[v];
        if (view->source != source) continue;
        const schema_entity_t *e = &schema->entities[view->entity];
        if (g->key_entity < 0) {
            g->key_entity = view->entity;
            g->key_fields = view->key_fields;
        }
        for (size_t k = 0; k < e->n_keys; k++) {
            field_gen_t *fg = &g->fields[view->key_fields[k]];
            if (fg->role == ROLE_KEY) continue;
            population_t *p = realloc(g->pops, (g->n_pops + 1) * sizeof *p);
            if (!p) goto nomem;
            g->pops = p;
            /* the message-key entity gets the full population, others a tenth;
               the first component of a composite key a small one (e.g. cities) */
            int64_t n = view->entity == g->key_entity ? opts->entities : opts->entities / 10;
            if (e->n_keys > 1 && k == 0) n = 4;
            if (e->n_keys > 1 && k > 0) n = 50;
            if (population_init(&g->pops[g->n_pops], n, opts->zipf_s)) goto nomem;
            fg->role = ROLE_KEY;
            fg->pop = (int)g->n_pops++;
        }
    }
    if (g->key_entity < 0) {
        snprintf(errstr, errsize, "no feature view uses source '%s'", g->src->name);
        gen_free(g);
        return SL_EINVAL;
    }
    for (size_t f = 0; f < g->src->n_fields; f++)
        if (g->src->fields[f].type == SCHEMA_TYPE_STRING && g->fields[f].role == ROLE_PLAIN)
            if (build_vocab(g, (int)f)) goto nomem;
    *out = g;
    return SL_OK;
nomem:
    gen_free(g);
    snprintf(errstr, errsize, "out of memory");
    return SL_ENOMEM;
}

void gen_free(gen_t *g)
{
    if (!g) return;
    if (g->fields)
        for (size_t f = 0; f < g->src->n_fields; f++) {
            free(g->fields[f].vocab);
            free(g->fields[f].weights);
        }
    free(g->fields);
    for (size_t i = 0; i < g->n_pops; i++) free(g->pops[i].cdf);
    free(g->pops);
    for (size_t i = 0; i < g->n_owned; i++) free(g->owned[i]);
    free(g->owned);
    free(g);
}

const char *gen_key_entity(const gen_t *g) { return g->schema->entities[g->key_entity].name; }

/* ---- events ------------------------------------------------------------ */

static int put_json_string(sl_buf_t *b, const char *s)
{
    int rc = sl_buf_put_u8(b, '"');
    for (; *s && !rc; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') rc = sl_buf_printf(b, "\\%c", c);
        else if (c < 0x20) rc = sl_buf_printf(b, "\\u%04x", c);
        else rc = sl_buf_put_u8(b, c);
    }
    return rc ? rc : sl_buf_put_u8(b, '"');
}

/* Text of a key value: "card-000123" for strings, the number for ints. */
static void key_text(const gen_t *g, int fi, int64_t id, char *out, size_t size)
{
    const schema_field_t *f = &g->src->fields[fi];
    if (f->type == SCHEMA_TYPE_INT) {
        snprintf(out, size, "%lld", (long long)(id + 1));
        return;
    }
    size_t n = strlen(f->name);
    if (n > 3 && !strcmp(f->name + n - 3, "_id")) n -= 3;
    snprintf(out, size, "%.*s-%06lld", (int)(n > 40 ? 40 : n), f->name, (long long)(id + 1));
}

int gen_example_key(const gen_t *g, int view, char *out, size_t size)
{
    if (view < 0 || (size_t)view >= g->schema->n_views ||
        g->schema->sources + g->schema->views[view].source != g->src)
        return SL_EINVAL;
    const schema_view_t *v = &g->schema->views[view];
    size_t nk = g->schema->entities[v->entity].n_keys, off = 0;
    if (size) out[0] = '\0';
    for (size_t k = 0; k < nk && off < size; k++) {
        char text[96];
        key_text(g, v->key_fields[k], 0, text, sizeof text);
        off += (size_t)snprintf(out + off, size - off, "%s%s%s", nk > 1 && k == 0 ? "{" : "",
                                text, nk > 1 ? (k + 1 == nk ? "}" : "|") : "");
    }
    return SL_OK;
}

int gen_example_key_part(const gen_t *g, int view, size_t k, char *out, size_t size)
{
    if (view < 0 || (size_t)view >= g->schema->n_views ||
        g->schema->sources + g->schema->views[view].source != g->src ||
        k >= g->schema->entities[g->schema->views[view].entity].n_keys)
        return SL_EINVAL;
    key_text(g, g->schema->views[view].key_fields[k], 0, out, size);
    return SL_OK;
}

static double number_for(gen_t *g, const char *name, bool integral)
{
    if (strstr(name, "rating")) return 1.0 + floor(uniform(g) * 40.0 + 0.5) / 10.0;
    if (strstr(name, "amount") || strstr(name, "fare") || strstr(name, "price"))
        return floor(exp(3.0 + 1.0 * normal(g)) * 100.0 + 0.5) / 100.0;
    if (strstr(name, "distance") || strstr(name, "km"))
        return floor(exp(1.5 + 0.7 * normal(g)) * 10.0 + 0.5) / 10.0;
    if (strstr(name, "_ms")) return floor(exp(8.0 + 1.0 * normal(g)));
    if (integral) return (double)(next_u64(g) % 1000);
    return floor(exp(2.0 + normal(g)) * 1000.0 + 0.5) / 1000.0;
}

static int put_time(gen_t *g, sl_buf_t *b, int64_t t_ms)
{
    switch (g->src->time_format) {
    case SCHEMA_TIME_EPOCH_MS:
        return sl_buf_printf(b, "%lld", (long long)t_ms);
    case SCHEMA_TIME_EPOCH_S:
        return sl_buf_printf(b, "%lld", (long long)(t_ms / 1000));
    case SCHEMA_TIME_RFC3339: {
        time_t secs = (time_t)(t_ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        return sl_buf_printf(b, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
                             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                             (int)(t_ms % 1000));
    }
    }
    return SL_EINVAL;
}

int gen_next(gen_t *g, sl_buf_t *payload, sl_buf_t *key, bool *is_null)
{
    const schema_source_t *src = g->src;
    int64_t base = g->o.start_ms + (g->index * g->o.spacing_us) / 1000;
    g->index++;
    sl_buf_reset(payload);
    sl_buf_reset(key);
    *is_null = false;

    double u = uniform(g);
    gen_kind_t kind = GEN_GOOD;
    int64_t t = base;
    if (u < g->o.bad_share) {
        kind = (gen_kind_t)(GEN_BAD_MALFORMED + (int)(next_u64(g) % 5));
    } else if (u < g->o.bad_share + g->o.late_share) {
        kind = GEN_LATE;
        t = base - src->watermark_delay_ms - src->allowed_lateness_ms - 1000 -
            (int64_t)(next_u64(g) % 60000);
    } else if (u < g->o.bad_share + g->o.late_share + g->o.ooo_share && src->watermark_delay_ms > 0) {
        kind = GEN_OUT_OF_ORDER;
        t = base - 1 - (int64_t)(next_u64(g) % (uint64_t)src->watermark_delay_ms);
    }

    /* Draw every key first: the message key must match the payload. */
    int64_t ids[64] = { 0 };
    for (size_t f = 0; f < src->n_fields && f < 64; f++)
        if (g->fields[f].role == ROLE_KEY) ids[f] = draw(g, &g->pops[g->fields[f].pop]);

    /* Message key: the key entity's key bytes (entity_key.h encoding). */
    const schema_entity_t *ke = &g->schema->entities[g->key_entity];
    agg_input_t kv[8];
    char ktext[8][96];
    size_t nk = ke->n_keys < 8 ? ke->n_keys : 8;
    for (size_t k = 0; k < nk; k++) {
        int fi = g->key_fields[k];
        key_text(g, fi, ids[fi], ktext[k], sizeof ktext[k]);
        if (src->fields[fi].type == SCHEMA_TYPE_INT) {
            kv[k] = (agg_input_t){ .type = AGG_IN_INT, .i = ids[fi] + 1 };
        } else {
            kv[k] = (agg_input_t){ .type = AGG_IN_STRING, .s = ktext[k], .slen = strlen(ktext[k]) };
        }
    }
    int rc = ingest_key_encode(key, ke->key_types, kv, nk);
    if (rc) return rc;

    if (kind == GEN_TOMBSTONE) {
        *is_null = true;
        return kind;
    }
    int missing_field = -1, mistyped_field = -1;
    if (kind == GEN_BAD_MISSING_KEY) missing_field = g->key_fields[0];
    if (kind == GEN_BAD_TYPE) {
        for (size_t f = 0; f < src->n_fields; f++)
            if ((src->fields[f].type == SCHEMA_TYPE_DOUBLE || src->fields[f].type == SCHEMA_TYPE_INT) &&
                g->fields[f].role != ROLE_TIME) { mistyped_field = (int)f; break; }
        if (mistyped_field < 0) kind = GEN_BAD_TIMESTAMP;   /* nothing numeric to break */
    }

    rc = sl_buf_put_u8(payload, '{');
    bool first = true;
    for (size_t f = 0; f < src->n_fields && !rc; f++) {
        const schema_field_t *fd = &src->fields[f];
        if ((int)f == missing_field) continue;
        if (!first) rc = sl_buf_put_u8(payload, ',');
        first = false;
        rc = rc ? rc : put_json_string(payload, fd->name);
        rc = rc ? rc : sl_buf_put_u8(payload, ':');
        if (rc) break;
        if ((int)f == mistyped_field) {
            rc = sl_buf_append_str(payload, "\"twelve\"");
            continue;
        }
        switch (g->fields[f].role) {
        case ROLE_TIME:
            if (kind == GEN_BAD_TIMESTAMP)
                rc = sl_buf_append_str(payload, fd->type == SCHEMA_TYPE_STRING ? "\"yesterday at noon\""
                                                                               : "\"soon\"");
            else
                rc = put_time(g, payload, t);
            break;
        case ROLE_KEY: {
            char text[96];
            key_text(g, (int)f, ids[f], text, sizeof text);
            rc = fd->type == SCHEMA_TYPE_INT ? sl_buf_append_str(payload, text)
                                              : put_json_string(payload, text);
            break;
        }
        case ROLE_PLAIN:
            switch (fd->type) {
            case SCHEMA_TYPE_STRING:
                rc = put_json_string(payload, pick_word(g, &g->fields[f]));
                break;
            case SCHEMA_TYPE_INT:
                rc = sl_buf_printf(payload, "%lld", (long long)number_for(g, fd->name, true));
                break;
            case SCHEMA_TYPE_DOUBLE:
                rc = sl_buf_printf(payload, "%.2f", number_for(g, fd->name, false));
                break;
            case SCHEMA_TYPE_BOOL:
                rc = sl_buf_append_str(payload, uniform(g) < 0.05 ? "true" : "false");
                break;
            default:
                rc = sl_buf_append_str(payload, "null");
            }
            break;
        }
    }
    rc = rc ? rc : sl_buf_put_u8(payload, '}');
    if (rc) return rc;
    if (kind == GEN_BAD_MALFORMED) payload->len = payload->len / 2;   /* cut mid-object */
    return kind;
}
