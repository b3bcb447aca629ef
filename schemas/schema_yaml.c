/*
 * schema_yaml.c — typed, located access to a libyaml document.
 *
 * libyaml does all YAML parsing (yaml_parser_load builds the node graph with
 * start marks); this file only checks node shapes and turns marks into
 * "FILE:LINE:COL:" messages. The first error wins so a user sees the root
 * cause, not its echoes.
 */
#include "schema_yaml.h"
#include "sl_err.h"
#include "sl_time.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sy_doc_load(sy_doc_t *d, const char *file, const char *text, size_t len,
                char *errstr, size_t errsize)
{
    yaml_parser_t parser;
    memset(d, 0, sizeof *d);
    d->file = file;
    d->errstr = errstr;
    d->errsize = errsize;

    if (!yaml_parser_initialize(&parser)) {
        snprintf(errstr, errsize, "%s: out of memory initialising the YAML parser", file);
        return SL_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &d->doc)) {
        snprintf(errstr, errsize, "%s:%zu:%zu: not valid YAML: %s%s%s", file,
                 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                 parser.problem ? parser.problem : "syntax error",
                 parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return SL_EPARSE;
    }
    d->loaded = true;
    if (!yaml_document_get_root_node(&d->doc)) {
        snprintf(errstr, errsize, "%s:1:1: empty file: expected a YAML mapping", file);
        yaml_parser_delete(&parser);
        return SL_EPARSE;
    }
    /* A second document in the same file is almost always a mistake. */
    yaml_document_t extra;
    if (yaml_parser_load(&parser, &extra)) {
        bool more = yaml_document_get_root_node(&extra) != NULL;
        yaml_node_t *r = more ? yaml_document_get_root_node(&extra) : NULL;
        if (more)
            snprintf(errstr, errsize, "%s:%zu:%zu: more than one YAML document in a file",
                     file, r->start_mark.line + 1, r->start_mark.column + 1);
        yaml_document_delete(&extra);
        if (more) {
            yaml_parser_delete(&parser);
            return SL_EPARSE;
        }
    } else {
        snprintf(errstr, errsize, "%s:%zu:%zu: not valid YAML: %s", file,
                 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                 parser.problem ? parser.problem : "syntax error");
        yaml_parser_delete(&parser);
        return SL_EPARSE;
    }
    yaml_parser_delete(&parser);
    return SL_OK;
}

void sy_doc_free(sy_doc_t *d)
{
    if (d->loaded) yaml_document_delete(&d->doc);
    d->loaded = false;
}

yaml_node_t *sy_root(sy_doc_t *d) { return yaml_document_get_root_node(&d->doc); }
yaml_node_t *sy_node(sy_doc_t *d, int id) { return yaml_document_get_node(&d->doc, id); }

int sy_error(sy_doc_t *d, const yaml_node_t *n, const char *fmt, ...)
{
    if (d->failed) return SL_EINVAL;
    d->failed = true;
    size_t line = n ? n->start_mark.line + 1 : 1, col = n ? n->start_mark.column + 1 : 1;
    int off = snprintf(d->errstr, d->errsize, "%s:%zu:%zu: ", d->file, line, col);
    if (off < 0 || (size_t)off >= d->errsize) return SL_EINVAL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->errstr + off, d->errsize - (size_t)off, fmt, ap);
    va_end(ap);
    return SL_EINVAL;
}

bool sy_is_map(const yaml_node_t *n) { return n && n->type == YAML_MAPPING_NODE; }
bool sy_is_seq(const yaml_node_t *n) { return n && n->type == YAML_SEQUENCE_NODE; }
bool sy_is_scalar(const yaml_node_t *n) { return n && n->type == YAML_SCALAR_NODE; }

const char *sy_scalar(const yaml_node_t *n)
{
    return sy_is_scalar(n) ? (const char *)n->data.scalar.value : NULL;
}

const char *sy_kind_name(const yaml_node_t *n)
{
    if (!n) return "nothing";
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_SCALAR_NODE: return n->data.scalar.length ? "a scalar" : "an empty value";
    default: return "nothing";
    }
}

int sy_check_keys(sy_doc_t *d, yaml_node_t *n, const char *what, const char *const *allowed)
{
    if (!sy_is_map(n))
        return sy_error(d, n, "%s must be a mapping, found %s", what, sy_kind_name(n));
    SY_MAP_EACH(d, n, k, v) {
        (void)v;
        const char *key = sy_scalar(k);
        if (!key) return sy_error(d, k, "keys of %s must be plain names", what);
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            if (!strcmp(allowed[i], key)) ok = true;
        if (!ok) {
            char list[512] = "";
            size_t off = 0;
            for (size_t i = 0; allowed[i] && off < sizeof list; i++)
                off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "",
                                        allowed[i]);
            return sy_error(d, k, "unknown key '%s' in %s (expected one of: %s)", key, what, list);
        }
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < k_pair; p++) {
            const char *prev = sy_scalar(sy_node(d, p->key));
            if (prev && !strcmp(prev, key))
                return sy_error(d, k, "duplicate key '%s' in %s", key, what);
        }
    }
    return SL_OK;
}

yaml_node_t *sy_get_key(sy_doc_t *d, yaml_node_t *n, const char *key)
{
    if (!sy_is_map(n)) return NULL;
    SY_MAP_EACH(d, n, k, v) {
        (void)v;
        const char *s = sy_scalar(k);
        if (s && !strcmp(s, key)) return k;
    }
    return NULL;
}

yaml_node_t *sy_get(sy_doc_t *d, yaml_node_t *n, const char *key)
{
    if (!sy_is_map(n)) return NULL;
    SY_MAP_EACH(d, n, k, v) {
        const char *s = sy_scalar(k);
        if (s && !strcmp(s, key)) return v;
    }
    return NULL;
}

static int missing(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what)
{
    return sy_error(d, map, "missing '%s' in %s", key, what);
}

int sy_get_string(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what,
                  bool required, const char **out, yaml_node_t **node)
{
    yaml_node_t *v = sy_get(d, map, key);
    if (node) *node = v;
    if (!v) return required ? missing(d, map, key, what) : SL_OK;
    const char *s = sy_scalar(v);
    if (!s) return sy_error(d, v, "'%s' in %s must be a string, found %s", key, what, sy_kind_name(v));
    if (required && !*s) return sy_error(d, v, "'%s' in %s must not be empty", key, what);
    *out = s;
    return SL_OK;
}

bool sy_parse_int(const char *s, int64_t *out)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

bool sy_parse_double(const char *s, double *out)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

bool sy_parse_bool(const char *s, bool *out)
{
    if (!s) return false;
    if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) { *out = true; return true; }
    if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) { *out = false; return true; }
    return false;
}

int sy_get_int(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what,
               bool required, int64_t min, int64_t max, int64_t *out)
{
    yaml_node_t *v = sy_get(d, map, key);
    if (!v) return required ? missing(d, map, key, what) : SL_OK;
    int64_t x;
    if (!sy_parse_int(sy_scalar(v), &x))
        return sy_error(d, v, "'%s' in %s must be an integer, found '%s'", key, what,
                        sy_scalar(v) ? sy_scalar(v) : sy_kind_name(v));
    if (x < min || x > max)
        return sy_error(d, v, "'%s' in %s must be between %lld and %lld, found %lld", key, what,
                        (long long)min, (long long)max, (long long)x);
    *out = x;
    return SL_OK;
}

int sy_get_double(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what,
                  bool required, double min, double max, double *out)
{
    yaml_node_t *v = sy_get(d, map, key);
    if (!v) return required ? missing(d, map, key, what) : SL_OK;
    double x;
    if (!sy_parse_double(sy_scalar(v), &x))
        return sy_error(d, v, "'%s' in %s must be a number, found '%s'", key, what,
                        sy_scalar(v) ? sy_scalar(v) : sy_kind_name(v));
    if (x < min || x > max)
        return sy_error(d, v, "'%s' in %s must be between %g and %g, found %g", key, what,
                        min, max, x);
    *out = x;
    return SL_OK;
}

int sy_get_bool(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what,
                bool required, bool *out)
{
    yaml_node_t *v = sy_get(d, map, key);
    if (!v) return required ? missing(d, map, key, what) : SL_OK;
    if (!sy_parse_bool(sy_scalar(v), out))
        return sy_error(d, v, "'%s' in %s must be true or false", key, what);
    return SL_OK;
}

int sy_duration(sy_doc_t *d, yaml_node_t *n, const char *what, bool allow_zero, int64_t *out_ms)
{
    const char *s = sy_scalar(n);
    if (!s || !*s)
        return sy_error(d, n, "%s must be a duration like 30s, 5m, 1h or 7d, found %s", what,
                        sy_kind_name(n));
    if (s[0] == '-')
        return sy_error(d, n, "%s must not be negative, found '%s'", what, s);
    int rc = sl_duration_parse(s, allow_zero, out_ms);
    if (rc == SL_ERANGE)
        return sy_error(d, n, "%s '%s' is %s", what, s,
                        allow_zero ? "too large" : "zero or too large");
    if (rc) {
        int64_t plain;
        if (sy_parse_int(s, &plain))
            return sy_error(d, n, "%s '%s' needs a unit (ms, s, m, h, d, w), e.g. '%ss'", what, s, s);
        return sy_error(d, n, "%s '%s' is not a duration (expected e.g. 30s, 5m, 1h, 7d)", what, s);
    }
    return SL_OK;
}

int sy_get_duration(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what,
                    bool required, bool allow_zero, int64_t *out_ms)
{
    yaml_node_t *v = sy_get(d, map, key);
    if (!v) return required ? missing(d, map, key, what) : SL_OK;
    char w[160];
    snprintf(w, sizeof w, "'%s' in %s", key, what);
    return sy_duration(d, v, w, allow_zero, out_ms);
}
