/*
 * sl_log.c — see sl_log.h. Each line is formatted into a stack buffer and
 * written with one write(2) to stderr (atomic for lines under PIPE_BUF on
 * pipes, and never interleaved mid-line in practice on terminals/files).
 */
#include "sl_log.h"
#include "sl_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static sl_log_level_t min_level = SL_LOG_INFO;
static bool json_format;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

int sl_log_configure(const char *level, const char *format)
{
    int lv = -1;
    for (int i = 0; i < 4; i++)
        if (level && !strcmp(level, level_names[i])) lv = i;
    if (lv < 0 || !format || (strcmp(format, "text") && strcmp(format, "json"))) return SL_EINVAL;
    sl_log_set((sl_log_level_t)lv, !strcmp(format, "json"));
    return SL_OK;
}

void sl_log_set(sl_log_level_t level, bool json)
{
    min_level = level;
    json_format = json;
}

bool sl_log_enabled(sl_log_level_t level) { return level >= min_level; }

/* Length of the well-formed UTF-8 sequence at p (1..4), or 0 when the bytes
 * there are not one (stray continuation, overlong form, surrogate, beyond
 * U+10FFFF, cut short). p[0] >= 0x80. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;           /* bounds of the second byte */
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;                  /* overlong */
        if (c == 0xED) hi = 0x9F;                  /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;                  /* overlong */
        if (c == 0xF4) hi = 0x8F;                  /* beyond U+10FFFF */
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi) return 0;          /* also stops at the terminator */
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

/* Writes s as the inside of a JSON string into out (always terminated):
 * quotes, backslashes and control characters escaped, bytes that are not
 * well-formed UTF-8 replaced by U+FFFD (so every line is valid JSON for any
 * message, e.g. one quoting a malformed Kafka payload). Stops early, between
 * two characters, when out is full. */
static void json_escape(char *out, size_t size, const char *s)
{
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p && o + 7 < size) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; p++; }
        else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; p++; }
        else if (c < 0x20) { o += (size_t)snprintf(out + o, size - o, "\\u%04x", c); p++; }
        else if (c < 0x80) { out[o++] = (char)c; p++; }
        else {
            size_t n = utf8_len(p);
            if (n) { memcpy(out + o, p, n); o += n; p += n; }
            else { memcpy(out + o, "\xEF\xBF\xBD", 3); o += 3; p++; }
        }
    }
    out[o] = '\0';
}

void sl_log(sl_log_level_t level, const char *component, const char *fmt, ...)
{
    if (level < min_level) return;
    char msg[2048], line[4600], ts[96];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(now.tv_nsec / 1000000));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int n;
    if (json_format) {
        char esc[4200], comp[128];
        json_escape(esc, sizeof esc, msg);
        json_escape(comp, sizeof comp, component);
        n = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"%s\",\"msg\":\"%s\"}\n",
                     ts, level_names[level], comp, esc);
    } else {
        n = snprintf(line, sizeof line, "%s %-5s %s: %s\n", ts, level_names[level], component, msg);
    }
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
