/*
 * sl_time.c — duration and timestamp parsing. No allocation, no locale: the
 * parsers read bytes and reject anything not in the documented grammar, since
 * their input comes from schema files and Kafka payloads (trust boundaries).
 */
#include "sl_time.h"
#include "sl_err.h"

#include <stdio.h>
#include <time.h>

static const struct { const char *unit; int64_t ms; } units[] = {
    { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
    { "d", 86400000 }, { "w", 604800000 },
};

int sl_duration_parse(const char *s, int allow_zero, int64_t *out_ms)
{
    const char *p = s;
    int64_t n = 0;
    if (!s || *p < '0' || *p > '9') return SL_EPARSE;
    while (*p >= '0' && *p <= '9') {
        if (n > (INT64_MAX - 9) / 10) return SL_ERANGE;
        n = n * 10 + (*p++ - '0');
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        const char *u = units[i].unit, *q = p;
        while (*u && *q == *u) { u++; q++; }
        if (*u == '\0' && *q == '\0') {
            if (n > INT64_MAX / units[i].ms) return SL_ERANGE;
            if (n == 0 && !allow_zero) return SL_ERANGE;
            *out_ms = n * units[i].ms;
            return SL_OK;
        }
    }
    return SL_EPARSE;
}

char *sl_duration_format(int64_t ms, char *buf, size_t size)
{
    /* Weeks are accepted on input but printed as days, as users write them. */
    for (int i = (int)(sizeof units / sizeof units[0]) - 2; i >= 0; i--) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, size, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
            return buf;
        }
    }
    snprintf(buf, size, "%lldms", (long long)ms);
    return buf;
}

static int digits(const char *s, size_t len, size_t *pos, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (*pos >= len || s[*pos] < '0' || s[*pos] > '9') return -1;
        v = v * 10 + (s[(*pos)++] - '0');
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int sl_rfc3339_parse(const char *s, size_t len, int64_t *out_ms)
{
    size_t pos = 0;
    int Y, M, D, h, mi, sec, frac_ms = 0;
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (digits(s, len, &pos, 4, &Y) || pos >= len || s[pos++] != '-') return SL_EPARSE;
    if (digits(s, len, &pos, 2, &M) || pos >= len || s[pos++] != '-') return SL_EPARSE;
    if (digits(s, len, &pos, 2, &D) || pos >= len) return SL_EPARSE;
    if (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ') return SL_EPARSE;
    pos++;
    if (digits(s, len, &pos, 2, &h) || pos >= len || s[pos++] != ':') return SL_EPARSE;
    if (digits(s, len, &pos, 2, &mi) || pos >= len || s[pos++] != ':') return SL_EPARSE;
    if (digits(s, len, &pos, 2, &sec)) return SL_EPARSE;
    if (M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || mi > 59 || sec > 60)
        return SL_EPARSE;
    if (M == 2 && D == 29 && !((Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0))
        return SL_EPARSE;
    if (pos < len && s[pos] == '.') {
        int nd = 0, scale = 100;
        pos++;
        while (pos < len && s[pos] >= '0' && s[pos] <= '9') {
            frac_ms += (s[pos] - '0') * scale;
            scale /= 10;
            pos++;
            nd++;
        }
        if (nd == 0) return SL_EPARSE;
    }
    int64_t offset_min = 0;
    if (pos >= len) return SL_EPARSE;
    if (s[pos] == 'Z' || s[pos] == 'z') {
        pos++;
    } else if (s[pos] == '+' || s[pos] == '-') {
        int sign = s[pos++] == '-' ? -1 : 1, oh, om;
        if (digits(s, len, &pos, 2, &oh) || pos >= len || s[pos++] != ':') return SL_EPARSE;
        if (digits(s, len, &pos, 2, &om) || oh > 23 || om > 59) return SL_EPARSE;
        offset_min = sign * (oh * 60 + om);
    } else {
        return SL_EPARSE;
    }
    if (pos != len) return SL_EPARSE;
    int64_t days = days_from_civil(Y, M, D);
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + (sec == 60 ? 59 : sec) - offset_min * 60;
    *out_ms = secs * 1000 + frac_ms;
    return SL_OK;
}

int64_t sl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sl_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t sl_thread_cpu_us(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
