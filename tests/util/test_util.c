/*
 * test_util.c — durations, RFC 3339 (checked against libc's timegm as an
 * independent oracle), and the buffer/reader pair (round trips and
 * truncation at every byte).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

#include "sl_buf.h"
#include "sl_err.h"
#include "sl_time.h"

Test(duration, parse_units)
{
    int64_t ms;
    struct { const char *s; int64_t ms; } ok[] = {
        { "250ms", 250 }, { "30s", 30000 }, { "5m", 300000 }, { "1h", 3600000 },
        { "7d", 604800000 }, { "2w", 1209600000 }, { "0s", 0 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cr_assert_eq(sl_duration_parse(ok[i].s, 1, &ms), 0, "%s", ok[i].s);
        cr_assert_eq(ms, ok[i].ms, "%s", ok[i].s);
    }
    const char *bad[] = { "", "s", "5", "-5m", "5 m", "5mm", "1.5h", "5M", "1y", "h1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(sl_duration_parse(bad[i], 1, &ms), SL_EPARSE, "'%s' must not parse", bad[i]);
    cr_assert_eq(sl_duration_parse("0s", 0, &ms), SL_ERANGE);
    cr_assert_eq(sl_duration_parse("99999999999999999999d", 1, &ms), SL_ERANGE);
    cr_assert_eq(sl_duration_parse("9999999999999999d", 1, &ms), SL_ERANGE);
}

Test(duration, format_round_trips)
{
    srand(7);
    for (int i = 0; i < 10000; i++) {
        int64_t ms = (int64_t)(rand() % 100000) * ((int64_t[]){ 1, 1000, 60000, 3600000 })[rand() % 4];
        if (ms == 0) continue;
        char buf[32];
        int64_t back;
        sl_duration_format(ms, buf, sizeof buf);
        cr_assert_eq(sl_duration_parse(buf, 0, &back), 0, "%s", buf);
        cr_assert_eq(back, ms, "%lld -> %s -> %lld", (long long)ms, buf, (long long)back);
    }
}

Test(rfc3339, matches_timegm)
{
    srand(11);
    for (int i = 0; i < 20000; i++) {
        struct tm tm = { 0 };
        tm.tm_year = 70 + rand() % 100;
        tm.tm_mon = rand() % 12;
        tm.tm_mday = 1 + rand() % 28;
        tm.tm_hour = rand() % 24;
        tm.tm_min = rand() % 60;
        tm.tm_sec = rand() % 60;
        int ms = rand() % 1000, off = (rand() % 29 - 14) * 60 + (rand() % 2) * 30;
        time_t t = timegm(&tm);
        char s[64];
        if (off == 0)
            snprintf(s, sizeof s, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
        else
            snprintf(s, sizeof s, "%04d-%02d-%02dT%02d:%02d:%02d.%03d%c%02d:%02d", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms,
                     off < 0 ? '-' : '+', abs(off) / 60, abs(off) % 60);
        int64_t got;
        cr_assert_eq(sl_rfc3339_parse(s, strlen(s), &got), 0, "%s", s);
        int64_t want = ((int64_t)t - (int64_t)off * 60) * 1000 + ms;
        cr_assert_eq(got, want, "%s: got %lld want %lld", s, (long long)got, (long long)want);
    }
}

Test(rfc3339, rejects_malformed)
{
    const char *bad[] = { "", "2024-01-01", "2024-01-01T00:00:00", "2024-13-01T00:00:00Z",
                          "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-01-01T24:00:00Z",
                          "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00Zjunk", "1714567890",
                          "2024-01-01T00:00:00+2:00", "abcd-01-01T00:00:00Z" };
    int64_t v;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(sl_rfc3339_parse(bad[i], strlen(bad[i]), &v), SL_EPARSE, "'%s'", bad[i]);
    cr_assert_eq(sl_rfc3339_parse("2024-02-29T12:00:00Z", 20, &v), 0, "leap day");
    cr_assert_eq(v, 1709208000000LL);
}

Test(buf, round_trip_and_truncation)
{
    sl_buf_t b = SL_BUF_INIT;
    srand(3);
    uint64_t u[200];
    int64_t sv[200];
    double d[200];
    for (int i = 0; i < 200; i++) {
        u[i] = ((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 11) ^ (uint64_t)rand();
        u[i] >>= rand() % 64;
        sv[i] = (int64_t)u[i] * (rand() % 2 ? -1 : 1);
        d[i] = (double)rand() / 7.0 - 1e6;
        cr_assert_eq(sl_buf_put_varint(&b, u[i]), 0);
        cr_assert_eq(sl_buf_put_svarint(&b, sv[i]), 0);
        cr_assert_eq(sl_buf_put_double(&b, d[i]), 0);
        cr_assert_eq(sl_buf_put_bytes(&b, "xyz", (size_t)(i % 4)), 0);
    }
    sl_reader_t r;
    sl_reader_init(&r, b.data, b.len);
    for (int i = 0; i < 200; i++) {
        uint64_t a;
        int64_t s;
        double x;
        const void *p;
        size_t n;
        cr_assert_eq(sl_read_varint(&r, &a), 0);
        cr_assert_eq(a, u[i]);
        cr_assert_eq(sl_read_svarint(&r, &s), 0);
        cr_assert_eq(s, sv[i]);
        cr_assert_eq(sl_read_double(&r, &x), 0);
        cr_assert_eq(x, d[i]);
        cr_assert_eq(sl_read_bytes(&r, &p, &n), 0);
        cr_assert_eq(n, (size_t)(i % 4));
        cr_assert_eq(memcmp(p, "xyz", n), 0);
    }
    cr_assert_eq(r.left, 0);
    /* Every strict prefix must fail somewhere, never read past its end. */
    for (size_t cut = 0; cut < b.len; cut += 7) {
        unsigned char *copy = malloc(cut ? cut : 1);
        memcpy(copy, b.data, cut);
        sl_reader_init(&r, copy, cut);
        int rc = 0;
        for (int i = 0; i < 200 && rc == 0; i++) {
            uint64_t a;
            int64_t s;
            double x;
            const void *p;
            size_t n;
            rc = sl_read_varint(&r, &a);
            if (!rc) rc = sl_read_svarint(&r, &s);
            if (!rc) rc = sl_read_double(&r, &x);
            if (!rc) rc = sl_read_bytes(&r, &p, &n);
        }
        cr_assert_eq(rc, SL_ECORRUPT, "prefix of %zu bytes", cut);
        free(copy);
    }
    sl_buf_free(&b);
}

Test(err, names_and_messages)
{
    cr_assert_str_eq(sl_strerror(SL_ELATE), "event later than the allowed lateness");
    cr_assert_str_eq(sl_errname(SL_ECORRUPT), "SL_ECORRUPT");
    cr_assert_str_eq(sl_strerror(-9999), "unknown error");
}

#include "sl_hist.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

Test(hist, quantiles_within_bucket_precision)
{
    static sl_hist_t h;
    sl_hist_init(&h);
    enum { N = 100000 };
    uint64_t *v = malloc(N * sizeof *v);
    srand(5);
    for (int i = 0; i < N; i++) {
        /* log-uniform between 1 and ~1e9 */
        v[i] = (uint64_t)exp((double)rand() / RAND_MAX * 20.7);
        sl_hist_record(&h, v[i]);
    }
    qsort(v, N, sizeof *v, cmp_u64);
    cr_assert_eq(sl_hist_count(&h), N);
    double qs[] = { 0.0, 0.5, 0.9, 0.99, 0.999, 1.0 };
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        size_t rank = (size_t)(qs[i] * N);
        if (rank >= N) rank = N - 1;
        uint64_t exact = v[rank], got = sl_hist_quantile(&h, qs[i]);
        cr_assert_geq(got, exact, "q=%g: %llu < exact %llu", qs[i], (unsigned long long)got,
                      (unsigned long long)exact);
        cr_assert_leq((double)got, (double)exact * (1.0 + 1.0 / 16) + 1, "q=%g: %llu vs exact %llu",
                      qs[i], (unsigned long long)got, (unsigned long long)exact);
    }
    sl_buf_t b = SL_BUF_INIT;
    double bounds[] = { 1e-6, 1e-3, 1.0 };
    cr_assert_eq(sl_hist_prometheus(&h, &b, "x_seconds", "test", "", bounds, 3, 1), 0);
    sl_buf_put_u8(&b, 0);
    char want[64];
    snprintf(want, sizeof want, "x_seconds_count %d\n", N);
    cr_assert(strstr((char *)b.data, want), "%s", (char *)b.data);
    sl_buf_free(&b);
    free(v);
}
