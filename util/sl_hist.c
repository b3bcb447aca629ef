/*
 * sl_hist.c — log-linear histogram (see sl_hist.h). Bucket index: for a
 * value v >= 16, the exponent e = floor(log2 v) - 4 picks a power-of-two
 * range split into 16 linear sub-buckets; values < 16 map to themselves.
 */
#include "sl_hist.h"

#include <string.h>

static int bucket_of(uint64_t v)
{
    if (v < SL_HIST_SUB) return (int)v;
    int msb = 63 - __builtin_clzll(v);          /* >= 4 */
    int shift = msb - 4;
    int sub = (int)((v >> shift) & (SL_HIST_SUB - 1));
    return (shift + 1) * SL_HIST_SUB + sub;
}

/* Largest value that maps to bucket b. */
static uint64_t bucket_upper(int b)
{
    if (b < SL_HIST_SUB) return (uint64_t)b;
    int shift = b / SL_HIST_SUB - 1;
    uint64_t sub = (uint64_t)(b % SL_HIST_SUB);
    uint64_t lo = ((uint64_t)SL_HIST_SUB + sub) << shift;
    return lo + (((uint64_t)1 << shift) - 1);
}

void sl_hist_init(sl_hist_t *h) { memset(h, 0, sizeof *h); }

void sl_hist_record(sl_hist_t *h, uint64_t value)
{
    atomic_fetch_add_explicit(&h->counts[bucket_of(value)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, value, memory_order_relaxed);
}

uint64_t sl_hist_count(const sl_hist_t *h)
{
    return atomic_load_explicit(&h->total, memory_order_relaxed);
}

uint64_t sl_hist_quantile(const sl_hist_t *h, double q)
{
    uint64_t n = 0;
    for (int b = 0; b < SL_HIST_BUCKETS; b++) n += atomic_load_explicit(&h->counts[b], memory_order_relaxed);
    if (n == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)n);
    if (rank >= n) rank = n - 1;
    uint64_t seen = 0;
    for (int b = 0; b < SL_HIST_BUCKETS; b++) {
        seen += atomic_load_explicit(&h->counts[b], memory_order_relaxed);
        if (seen > rank) return bucket_upper(b);
    }
    return bucket_upper(SL_HIST_BUCKETS - 1);
}

void sl_hist_merge(sl_hist_t *dst, const sl_hist_t *src)
{
    for (int b = 0; b < SL_HIST_BUCKETS; b++)
        atomic_fetch_add_explicit(&dst->counts[b],
                                  atomic_load_explicit(&src->counts[b], memory_order_relaxed),
                                  memory_order_relaxed);
    atomic_fetch_add_explicit(&dst->total, sl_hist_count(src), memory_order_relaxed);
    atomic_fetch_add_explicit(&dst->sum, atomic_load_explicit(&src->sum, memory_order_relaxed),
                              memory_order_relaxed);
}

int sl_hist_prometheus(const sl_hist_t *h, sl_buf_t *out, const char *name, const char *help,
                       const char *labels, const double *bounds_s, int n_bounds, int with_header)
{
    int rc = 0;
    const char *sep = labels && *labels ? "," : "";
    if (!labels) labels = "";
    if (with_header)
        rc |= sl_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    int b = 0;
    for (int i = 0; i < n_bounds; i++) {
        uint64_t limit_ns = (uint64_t)(bounds_s[i] * 1e9);
        while (b < SL_HIST_BUCKETS && bucket_upper(b) <= limit_ns)
            cum += atomic_load_explicit(&h->counts[b++], memory_order_relaxed);
        rc |= sl_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds_s[i],
                            (unsigned long long)cum);
    }
    uint64_t total = 0;
    for (int i = 0; i < SL_HIST_BUCKETS; i++) total += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    rc |= sl_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                        (unsigned long long)total);
    const char *open = *labels ? "{" : "", *close = *labels ? "}" : "";
    rc |= sl_buf_printf(out, "%s_sum%s%s%s %.9f\n%s_count%s%s%s %llu\n", name, open, labels, close,
                        (double)atomic_load_explicit(&h->sum, memory_order_relaxed) / 1e9, name,
                        open, labels, close, (unsigned long long)total);
    return rc ? -1 : 0;
}
