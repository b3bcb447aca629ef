/*
 * sl_log.h — structured, levelled logging to stderr.
 *
 * One line per call, written with a single write so lines from different
 * threads never interleave. Text format:
 *   2026-11-25T21:30:00.123Z info  ingest: committed 1200 entities in 3.1ms
 * JSON format (--log-format json):
 *   {"ts":"2026-11-25T21:30:00.123Z","level":"info","component":"ingest","msg":"..."}
 * Level and format are process-wide, set once at start (not thread-safe to
 * change while other threads log).
 */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stdbool.h>

typedef enum { SL_LOG_DEBUG = 0, SL_LOG_INFO, SL_LOG_WARN, SL_LOG_ERROR } sl_log_level_t;

/* Sets the minimum level and format. Returns 0, or SL_EINVAL for an
 * unknown level ("debug", "info", "warn", "error") or format ("text", "json"). */
int sl_log_configure(const char *level, const char *format);
void sl_log_set(sl_log_level_t level, bool json);
bool sl_log_enabled(sl_log_level_t level);

void sl_log(sl_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sl_debug(comp, ...) do { if (sl_log_enabled(SL_LOG_DEBUG)) sl_log(SL_LOG_DEBUG, comp, __VA_ARGS__); } while (0)
#define sl_info(comp, ...)  sl_log(SL_LOG_INFO, comp, __VA_ARGS__)
#define sl_warn(comp, ...)  sl_log(SL_LOG_WARN, comp, __VA_ARGS__)
#define sl_error(comp, ...) sl_log(SL_LOG_ERROR, comp, __VA_ARGS__)

#endif
