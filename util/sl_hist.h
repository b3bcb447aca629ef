/*
 * sl_hist.h — a fixed-size, lock-free latency histogram.
 *
 * Values (e.g. nanoseconds) fall into log-linear buckets: 16 sub-buckets per
 * power of two, so any reported percentile is within 1/16 (6.25 %) above the
 * true value. Recording is one relaxed atomic increment, safe from any
 * thread; reading while others record gives a consistent-enough snapshot for
 * monitoring. Memory: 64 * 16 counters, no allocation.
 */
#ifndef SL_HIST_H
#define SL_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#include "sl_buf.h"

#define SL_HIST_SUB 16
#define SL_HIST_BUCKETS (64 * SL_HIST_SUB)

typedef struct sl_hist {
    _Atomic uint64_t counts[SL_HIST_BUCKETS];
    _Atomic uint64_t total;
    _Atomic uint64_t sum;
} sl_hist_t;

void sl_hist_init(sl_hist_t *h);
void sl_hist_record(sl_hist_t *h, uint64_t value);
/* Upper bound of the bucket holding the q-quantile (q in [0,1]); 0 if empty. */
uint64_t sl_hist_quantile(const sl_hist_t *h, double q);
uint64_t sl_hist_count(const sl_hist_t *h);
/* Adds src's counts into dst. */
void sl_hist_merge(sl_hist_t *dst, const sl_hist_t *src);
/* Appends a Prometheus histogram (seconds) with the given name, help and
 * label text (e.g. "protocol=\"resp\"", may be ""), for values in ns, using
 * buckets at the given boundaries (seconds). */
int sl_hist_prometheus(const sl_hist_t *h, sl_buf_t *out, const char *name, const char *help,
                       const char *labels, const double *bounds_s, int n_bounds, int with_header);

#endif
