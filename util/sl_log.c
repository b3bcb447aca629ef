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
        char esc[4200];
        size_t o = 0;
        for (const char *p = msg; *p && o + 7 < sizeof esc; p++) {
            unsigned char c = (unsigned char)*p;
            if (c == '"' || c == '\\') { esc[o++] = '\\'; esc[o++] = (char)c; }
            else if (c == '\n') { esc[o++] = '\\'; esc[o++] = 'n'; }
            else if (c < 0x20) o += (size_t)snprintf(esc + o, sizeof esc - o, "\\u%04x", c);
            else esc[o++] = (char)c;
        }
        esc[o] = '\0';
        n = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"%s\",\"msg\":\"%s\"}\n",
                     ts, level_names[level], component, esc);
    } else {
        n = snprintf(line, sizeof line, "%s %-5s %s: %s\n", ts, level_names[level], component, msg);
    }
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
