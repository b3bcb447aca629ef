/*
 * sl_time.h — durations and timestamps.
 *
 * All times inside Sluice are int64 milliseconds since the Unix epoch (event
 * time) or milliseconds of a duration. Durations are written as a positive
 * integer followed by a unit: ms, s, m, h, d, w (e.g. "30s", "5m", "1h", "7d").
 */
#ifndef SL_TIME_H
#define SL_TIME_H

#include <stdint.h>
#include <stddef.h>

/* Parses a duration like "30s" into milliseconds. Returns 0 and sets *out_ms,
 * or SL_EPARSE (malformed, negative, no unit) / SL_ERANGE (overflow, zero when
 * !allow_zero). *out_ms is untouched on failure. */
int sl_duration_parse(const char *s, int allow_zero, int64_t *out_ms);

/* Formats ms as the shortest exact duration ("90s" -> "90s", 3600000 -> "1h")
 * into buf. Returns buf. */
char *sl_duration_format(int64_t ms, char *buf, size_t size);

/* Parses an RFC 3339 timestamp ("2024-05-01T12:00:00.250Z", offsets like
 * "+02:00" allowed) into epoch ms. Returns 0 or SL_EPARSE. */
int sl_rfc3339_parse(const char *s, size_t len, int64_t *out_ms);

/* Wall clock and monotonic clock in ms / ns. */
int64_t sl_now_ms(void);
int64_t sl_mono_ns(void);
/* CPU time (user + system) the calling thread has used, in µs. */
uint64_t sl_thread_cpu_us(void);

#endif
