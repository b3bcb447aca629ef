/*
 * serve_key.c — the RESP key syntax "view:{k1|k2}" (see serve_lookup.h and
 * docs/serving.md) and the names of value statuses.
 *
 * A key is split at its first ':' — view names cannot contain ':' — and the
 * rest names the entity. Braces are needed only for composite keys or keys
 * that themselves start with '{' or contain '|': inside them '|' separates
 * parts and '\' escapes the next byte ('|', '}' and '\' must be escaped;
 * '{' need not). Pure functions, any thread.
 */
#include "serve_lookup.h"
#include "sl_err.h"

#include <string.h>

const char *serve_status_name(serve_status_t s)
{
    switch (s) {
#define SERVE__N(n, str, d) case SERVE_STATUS_##n: return str;
    SERVE_STATUS_MAP(SERVE__N)
#undef SERVE__N
    }
    return "unknown";
}

int serve_key_view(const schema_t *schema, const char *s, size_t n,
                   const char **spec, size_t *speclen)
{
    const char *colon = memchr(s, ':', n);
    if (!colon) return -1;
    size_t vlen = (size_t)(colon - s);
    for (size_t i = 0; i < schema->n_views; i++) {
        const char *name = schema->views[i].name;
        if (strlen(name) == vlen && memcmp(name, s, vlen) == 0) {
            *spec = colon + 1;
            *speclen = n - vlen - 1;
            return (int)i;
        }
    }
    return -1;
}

int serve_key_parse(const char *s, size_t n, char *buf, serve_key_t *key)
{
    key->n = 0;
    if (n == 0 || s[0] != '{') {
        if (n) memcpy(buf, s, n);
        key->part[0] = buf;
        key->len[0] = n;
        key->n = 1;
        return 0;
    }
    if (n < 2 || s[n - 1] != '}') return SL_EINVAL;
    size_t w = 0, start = 0;
    for (size_t i = 1; i < n - 1; i++) {
        char c = s[i];
        if (c == '\\') {
            if (i + 1 >= n - 1) return SL_EINVAL;    /* escapes the closing brace */
            buf[w++] = s[++i];
            continue;
        }
        if (c == '}') return SL_EINVAL;              /* must be escaped inside */
        if (c == '|') {
            if (key->n + 1 >= SERVE_MAX_KEY_PARTS) return SL_EINVAL;
            key->part[key->n] = buf + start;
            key->len[key->n] = w - start;
            key->n++;
            start = w;
            continue;
        }
        buf[w++] = c;
    }
    key->part[key->n] = buf + start;
    key->len[key->n] = w - start;
    key->n++;
    return 0;
}
