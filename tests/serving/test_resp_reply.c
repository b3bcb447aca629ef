/*
 * test_resp_reply.c — RESP reply encoding and the double formatter.
 * Oracles: strtod must read every formatted double back exactly; values
 * with few decimals must print as printf("%.*f") trimmed; the digits must
 * be as few as a brute-force search over %.1g .. %.17g finds; frames must
 * match hand-written RESP.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resp_reply.h"

static char *fmt(double v, char *buf)
{
    size_t n = resp_format_double(v, buf, 48);
    buf[n] = 0;
    return buf;
}

Test(resp_reply, double_known)
{
    char b[48];
    cr_assert_str_eq(fmt(0.1, b), "0.1");
    cr_assert_str_eq(fmt(6.5, b), "6.5");
    cr_assert_str_eq(fmt(-2.25, b), "-2.25");
    cr_assert_str_eq(fmt(42.0, b), "42");
    cr_assert_str_eq(fmt(-0.0, b), "0");
    cr_assert_str_eq(fmt(583.26, b), "583.26");
    cr_assert_str_eq(fmt(0.005, b), "0.005");
    cr_assert_str_eq(fmt(1e300, b), "1e+300");
    cr_assert_str_eq(fmt(INFINITY, b), "inf");
    cr_assert_str_eq(fmt(NAN, b), "nan");
}

Test(resp_reply, double_roundtrip_random)
{
    srand(99);
    char b[48];
    for (int i = 0; i < 200000; i++) {
        double v;
        switch (i % 4) {
        case 0: v = (double)(rand() % 2000000 - 1000000) / 100.0; break;           /* cents */
        case 1: v = ((double)rand() / RAND_MAX - 0.5) * pow(10, rand() % 40 - 20); break;
        case 2: { uint64_t u = ((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 11) ^ (uint64_t)rand();
                  memcpy(&v, &u, sizeof v); if (!isfinite(v)) continue; break; }
        default: v = (double)(rand() % 100000) / 1000.0 + 1e6; break;
        }
        fmt(v, b);
        cr_assert_eq(strtod(b, NULL), v, "%.17g printed as %s", v, b);
        if (i % 4 == 0) {
            char want[48];
            snprintf(want, sizeof want, "%.2f", v);
            size_t n = strlen(want);
            while (want[n - 1] == '0') want[--n] = 0;
            if (want[n - 1] == '.') want[--n] = 0;
            if (!strcmp(want, "-0")) strcpy(want, "0");
            cr_assert_str_eq(b, want);
        }
    }
}

/* Significant digits of a formatted double: sign, exponent, point, and
 * leading and trailing zeros of the mantissa do not count. */
static int sig_digits(const char *s)
{
    char m[48];
    size_t n = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9') m[n++] = *s;
    m[n] = 0;
    size_t a = 0;
    while (a < n && m[a] == '0') a++;
    while (n > a && m[n - 1] == '0') n--;
    return (int)(n - a);
}

/* Oracle: the shortest text is found by brute force, trying every
 * precision %.1g .. %.17g until one reads back exactly. */
static int shortest_digits(double v)
{
    char b[48];
    for (int p = 1; p <= 17; p++) {
        snprintf(b, sizeof b, "%.*g", p, v);
        if (strtod(b, NULL) == v) return p;
    }
    return 17;
}

Test(resp_reply, double_shortest_random)
{
    srand(7);
    char b[48];
    cr_assert_str_eq(fmt(185.42000000000002, b), "185.42000000000002");   /* 17 digits needed */
    cr_assert_str_eq(fmt(5e-324, b), "5e-324");                            /* subnormal */
    cr_assert_str_eq(fmt(2.2250738585072014e-308, b), "2.2250738585072014e-308");   /* DBL_MIN */
    for (int i = 0; i < 100000; i++) {
        double v;
        switch (i % 4) {
        case 3: { uint64_t u = (((uint64_t)rand() << 31) ^ (uint64_t)rand()) & ((1ULL << 52) - 1);
                  memcpy(&v, &u, sizeof v); break; }                         /* subnormals */
        case 0: { uint64_t u = ((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 11) ^ (uint64_t)rand();
                  memcpy(&v, &u, sizeof v); if (!isfinite(v)) continue; break; }
        case 1: v = ((double)rand() / RAND_MAX) * pow(10, rand() % 30 - 10); break;
        default: v = (double)(rand() % 1000000) / 997.0; break;                 /* long fractions */
        }
        fmt(v, b);
        cr_assert_eq(strtod(b, NULL), v, "%.17g printed as %s", v, b);
        cr_assert_eq(sig_digits(b), shortest_digits(v), "%.17g printed as %s, %d digits would do", v, b,
                     shortest_digits(v));
    }
}

Test(resp_reply, frames)
{
    sl_buf_t b = SL_BUF_INIT;
    resp_reply_array(&b, 3);
    resp_reply_bulk_str(&b, "ab");
    resp_reply_int_bulk(&b, -12);
    resp_reply_nil(&b);
    resp_reply_int(&b, 0);
    resp_reply_status(&b, "OK");
    resp_reply_error(&b, "ERR bad\r\nthing");
    resp_reply_double(&b, 2.5);
    const char want[] = "*3\r\n$2\r\nab\r\n$3\r\n-12\r\n$-1\r\n:0\r\n+OK\r\n-ERR bad  thing\r\n$3\r\n2.5\r\n";
    cr_assert_eq(b.len, sizeof want - 1);
    cr_assert_eq(memcmp(b.data, want, b.len), 0);
    sl_buf_free(&b);
}
