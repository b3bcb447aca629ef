/*
 * test_serve_key.c — the RESP key syntax "view:{k1|k2}" (docs/serving.md).
 * Oracle: keys built from random parts by the documented escaping rule must
 * parse back into exactly those parts.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "serve_lookup.h"
#include "sl_err.h"

static int parse(const char *s, serve_key_t *k, char *buf)
{
    return serve_key_parse(s, strlen(s), buf, k);
}

Test(serve_key, bare_and_braced)
{
    char buf[64];
    serve_key_t k;
    cr_assert_eq(parse("u42", &k, buf), 0);
    cr_assert_eq(k.n, 1);
    cr_assert_eq(k.len[0], 3);
    cr_assert_eq(memcmp(k.part[0], "u42", 3), 0);
    cr_assert_eq(parse("{eu|7}", &k, buf), 0);
    cr_assert_eq(k.n, 2);
    cr_assert_eq(memcmp(k.part[0], "eu", 2), 0);
    cr_assert_eq(memcmp(k.part[1], "7", 1), 0);
    cr_assert_eq(parse("{a\\|b|c\\}\\\\|{x}", &k, buf), 0);
    cr_assert_eq(k.n, 3);
    cr_assert_eq(k.len[0], 3);
    cr_assert_eq(memcmp(k.part[0], "a|b", 3), 0);
    cr_assert_eq(memcmp(k.part[1], "c}\\", 3), 0);
    cr_assert_eq(memcmp(k.part[2], "{x", 2), 0);
    cr_assert_eq(parse("{}", &k, buf), 0);
    cr_assert_eq(k.n, 1);
    cr_assert_eq(k.len[0], 0);
    cr_assert_eq(parse("", &k, buf), 0);
    cr_assert_eq(k.n, 1);
}

Test(serve_key, malformed)
{
    char buf[64];
    serve_key_t k;
    cr_assert_eq(parse("{abc", &k, buf), SL_EINVAL);
    cr_assert_eq(parse("{a}b}", &k, buf), SL_EINVAL);
    cr_assert_eq(parse("{abc\\}", &k, buf), SL_EINVAL);
    cr_assert_eq(parse("{a|b|c|d|e|f|g|h|i}", &k, buf), SL_EINVAL);   /* > SERVE_MAX_KEY_PARTS */
}

Test(serve_key, random_roundtrip)
{
    srand(7);
    for (int round = 0; round < 2000; round++) {
        size_t n = 1 + (size_t)rand() % SERVE_MAX_KEY_PARTS;
        char parts[SERVE_MAX_KEY_PARTS][8];
        size_t lens[SERVE_MAX_KEY_PARTS];
        char enc[256];
        size_t w = 0;
        enc[w++] = '{';
        for (size_t i = 0; i < n; i++) {
            lens[i] = (size_t)rand() % 8;
            for (size_t j = 0; j < lens[i]; j++) {
                static const char alpha[] = "ab|}{\\ x";
                char c = alpha[rand() % 8];
                parts[i][j] = c;
                if (c == '|' || c == '}' || c == '\\') enc[w++] = '\\';
                enc[w++] = c;
            }
            if (i + 1 < n) enc[w++] = '|';
        }
        enc[w++] = '}';
        char buf[256];
        serve_key_t k;
        cr_assert_eq(serve_key_parse(enc, w, buf, &k), 0, "round %d", round);
        cr_assert_eq(k.n, n);
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(k.len[i], lens[i]);
            cr_assert_eq(memcmp(k.part[i], parts[i], lens[i]), 0);
        }
    }
}
