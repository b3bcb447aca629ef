/*
 * test_agg_sketch.c — the sketches meet their stated error bounds.
 *
 * approx_distinct: exact up to 64 distinct values (unless two share their
 * top 25 hash bits, ~6e-5 at 64; none do in these seeds); above, HLL with m = 4096
 * registers has relative standard error sigma = 1.04 / sqrt(4096) = 1.63 %.
 * We require every trial within 4 sigma (6.5 %) and the mean absolute
 * relative error over all trials with n >= 1000 below 2 % (its expectation is
 * sigma * sqrt(2 / pi) = 1.3 %), for single sketches and for unions of tiles.
 *
 * approx_quantile: DDSketch with alpha = 1 %: the answer for q is within 1 %
 * (relative) of the exact value of rank floor(q * (n - 1)), for several
 * distributions (uniform, log-normal over 12 decades, both signs, heavy
 * duplicates) and for merged tiles.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg_internal.h"
#include "agg_test_util.h"
#include "sl_buf.h"
#include "sl_err.h"

static const double SIGMA = 1.04 / 64.0;

typedef struct hll_run {
    double sum_abs;
    int trials;
    double worst;
} hll_run_t;

/* One event at time t whose int field is v. */
static void add_int(const agg_plan_t *plan, agg_entity_t *ent, int64_t t, int64_t v)
{
    tev_t e = { .t = t, .has_i = true, .vi = v };
    agg_input_t fields[TF__COUNT];
    agg_event_t ev;
    tev_to_event(&e, fields, &ev);
    cr_assert_eq(agg_entity_update(plan, ent, &ev, INT64_MIN), 0);
}

/* The plan of one lifetime approx_distinct over the int field. */
static agg_plan_t *lifetime_distinct_plan(schema_t **s)
{
    tfeat_t f = { SCHEMA_AGG_APPROX_DISTINCT, TF_VI, 0, 0, 0 };
    schema_window_t w = { .kind = SCHEMA_WINDOW_LIFETIME };
    agg_plan_t *plan;
    char err[128];
    *s = tschema_new(&f, 1, w, 0);
    cr_assert_eq(agg_plan_new(*s, 0, &plan, err, sizeof(err)), 0, "%s", err);
    return plan;
}

/* n distinct ints (each added `dup` times) into a lifetime approx_distinct. */
static void hll_trial(uint64_t seed, int64_t n, int dup, hll_run_t *run)
{
    schema_t *s;
    agg_plan_t *plan = lifetime_distinct_plan(&s);
    agg_entity_t *ent = agg_entity_new(plan);
    uint64_t base = trand(&seed);
    for (int d = 0; d < dup; d++) {
        for (int64_t i = 0; i < n; i++)
            add_int(plan, ent, i, (int64_t)(base + (uint64_t)i * 2654435761u));
    }
    agg_value_t out;
    agg_entity_query(plan, ent, n, &out);
    cr_assert_eq(out.type, AGG_VAL_INT);
    if (n <= 64) {
        cr_assert_eq(out.i, n, "n=%lld got %lld", (long long)n, (long long)out.i);
    } else {
        double rel = fabs((double)out.i - (double)n) / (double)n;
        cr_assert_leq(rel, 4 * SIGMA, "n=%lld got %lld (%.2f %%)", (long long)n, (long long)out.i,
                      rel * 100);
        if (n >= 1000) {
            run->sum_abs += rel;
            run->trials++;
        }
        if (rel > run->worst)
            run->worst = rel;
    }
    agg_entity_free(ent);
    agg_plan_free(plan);
    tschema_free(s);
}

Test(agg_sketch, distinct_error_bound, .timeout = 600)
{
    hll_run_t run = { 0 };
    const int64_t sizes[] = { 1, 10, 64, 65, 100, 300, 1000, 3000, 10000, 30000, 100000 };
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        int trials = sizes[k] >= 30000 ? 4 : 12;
        for (int t = 0; t < trials; t++)
            hll_trial(1000 * k + (uint64_t)t, sizes[k], t % 3 == 0 ? 2 : 1, &run);
    }
    hll_trial(99, 1000000, 1, &run);
    double mean = run.sum_abs / run.trials;
    cr_log_info("approx_distinct: %d trials >= 1000, mean |rel err| %.3f %%, worst %.3f %%",
                run.trials, mean * 100, run.worst * 100);
    cr_assert_leq(mean, 0.02, "mean relative error %.3f %%", mean * 100);
}

/* A sparse sketch keeps 32-bit codes of the hashes and turns them into
 * registers when it densifies; values added after that set registers from
 * their full hash. Both must set the same registers: feeding the same values
 * in three orders routes different values through codes, and the estimates
 * (a function of the registers) must agree to the last bit, for sizes just
 * past the sparse limit up to many times it. */
Test(agg_sketch, distinct_codes_set_the_hashes_registers)
{
    schema_t *s;
    agg_plan_t *plan = lifetime_distinct_plan(&s);
    uint64_t rs = 11;
    static int64_t vals[5000];
    const int sizes[] = { 65, 100, 129, 300, 1000, 5000 };
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        int n = sizes[k];
        for (int i = 0; i < n; i++)
            vals[i] = (int64_t)(trand(&rs) >> 1);
        int64_t est[3];
        for (int order = 0; order < 3; order++) {
            if (order == 2)                          /* a shuffle */
                for (int i = n - 1; i > 0; i--) {
                    int j = (int)trange(&rs, 0, i);
                    int64_t t = vals[i];
                    vals[i] = vals[j];
                    vals[j] = t;
                }
            agg_entity_t *ent = agg_entity_new(plan);
            for (int i = 0; i < n; i++)
                add_int(plan, ent, i, vals[order == 1 ? n - 1 - i : i]);
            agg_value_t out;
            agg_entity_query(plan, ent, n, &out);
            est[order] = out.i;
            agg_entity_free(ent);
        }
        cr_assert(est[0] == est[1] && est[1] == est[2], "n=%d: %lld %lld %lld", n, (long long)est[0],
                  (long long)est[1], (long long)est[2]);
        double rel = fabs((double)est[0] - n) / n;
        cr_assert_leq(rel, 4 * SIGMA, "n=%d got %lld", n, (long long)est[0]);
    }
    agg_plan_free(plan);
    tschema_free(s);
}

/* The registers themselves, against an oracle written from the definition
 * (register = top 12 hash bits, value = leading zeros of the other 52 + 1,
 * at most 53): hashes added to a sketch that starts sparse (codes) and
 * densifies, and sparse sketches merged into it, must leave exactly the
 * oracle's registers. Half the hashes have bits 38..26 all zero, the rare
 * codes that carry a rank (1 in 8192 of random hashes). The estimate above
 * cannot see a wrong high rank (2^-14 of one register); the bytes can. */
Test(agg_sketch, distinct_registers_match_the_definition)
{
    uint64_t rs = 5;
    for (int round = 0; round < 50; round++) {
        enum { N = 200 };
        uint64_t hs[N];
        uint8_t want[AGG_HLL_M] = { 0 };
        for (int i = 0; i < N; i++) {
            uint64_t h = trand(&rs);
            if (i % 2)
                h &= ~((uint64_t)0x1fff << 26);      /* a rare code */
            if (round == 0 && i == 1)
                h &= ~(((uint64_t)1 << 52) - 1);     /* the other 52 bits all zero: 53 */
            hs[i] = h;
            uint64_t w = h << AGG_HLL_P;
            uint8_t rank = w ? (uint8_t)(__builtin_clzll(w) + 1) : 53;
            if (want[h >> 52] < rank)
                want[h >> 52] = rank;
        }
        /* one sketch fed directly; one merged from sparse pieces of 40 */
        agg_hll_t *a = NULL, *b = NULL;
        for (int i = 0; i < N; i++)
            cr_assert_eq(agg__hll_add(&a, hs[i]), 0);
        for (int p = 0; p < N; p += 40) {
            agg_hll_t *piece = NULL;
            for (int i = p; i < p + 40; i++)
                cr_assert_eq(agg__hll_add(&piece, hs[i]), 0);
            if (!b)
                b = piece;
            else {
                cr_assert_eq(agg__hll_merge(&b, piece), 0);
                agg__hll_free(piece);
            }
        }
        agg_hll_t *hl[2] = { a, b };
        for (int k = 0; k < 2; k++) {
            sl_buf_t buf = SL_BUF_INIT;
            cr_assert_eq(agg__hll_encode(hl[k], &buf), 0);
            cr_assert_eq(buf.len, 1 + AGG_HLL_M);
            cr_assert_eq(buf.data[0], 1, "dense");
            for (uint32_t r = 0; r < AGG_HLL_M; r++)
                cr_assert_eq(buf.data[1 + r], want[r], "round %d, sketch %d, register %u: %u, want %u", round,
                             k, r, buf.data[1 + r], want[r]);
            sl_buf_free(&buf);
            agg__hll_free(hl[k]);
        }
    }
}

/* Union of tiles: a sliding window of 10 tiles, each tile 800 values drawn
 * from a pool of 6000, so tiles overlap; the window's estimate vs the exact
 * union. Windows of one stream share most values, so their errors are
 * correlated: the mean is taken over 12 independent streams (other values). */
Test(agg_sketch, distinct_union_of_tiles)
{
    tfeat_t f = { SCHEMA_AGG_APPROX_DISTINCT, TF_VI, 0, 0, 0 };
    schema_window_t w = { .kind = SCHEMA_WINDOW_SLIDING, .size_ms = 10000, .hop_ms = 1000 };
    schema_t *s = tschema_new(&f, 1, w, 0);
    agg_plan_t *plan;
    char err[128];
    cr_assert_eq(agg_plan_new(s, 0, &plan, err, sizeof(err)), 0);
    enum { POOL = 6000, TILES = 24, RUNS = 12 };
    static int16_t val[TILES][800];
    static char seen[POOL];
    double sum = 0;
    int nq = 0;
    uint64_t rs = 7;
    for (int run = 0; run < RUNS; run++) {
        agg_entity_t *ent = agg_entity_new(plan);
        int64_t base = (int64_t)(trand(&rs) >> 20);
        for (int tile = 0; tile < TILES; tile++) {
            for (int i = 0; i < 800; i++) {
                val[tile][i] = (int16_t)trange(&rs, 0, POOL - 1);
                tev_t e = { .t = tile * 1000 + i, .has_i = true, .vi = base + val[tile][i] };
                agg_input_t fields[TF__COUNT];
                agg_event_t ev;
                tev_to_event(&e, fields, &ev);
                cr_assert_eq(agg_entity_update(plan, ent, &ev, tile * 1000 - 1500), 0);
            }
            if (tile < 9)
                continue;
            memset(seen, 0, sizeof(seen));
            int64_t exact = 0;
            for (int k = tile - 9; k <= tile; k++)
                for (int i = 0; i < 800; i++) {
                    exact += !seen[val[k][i]];
                    seen[val[k][i]] = 1;
                }
            agg_value_t out;
            agg_entity_query(plan, ent, tile * 1000 + 999, &out);
            double rel = fabs((double)out.i - (double)exact) / (double)exact;
            cr_assert_leq(rel, 4 * SIGMA, "run %d tile %d: got %lld exact %lld", run, tile,
                          (long long)out.i, (long long)exact);
            sum += rel;
            nq++;
        }
        agg_entity_free(ent);
    }
    cr_log_info("approx_distinct unions: %d windows, mean |rel err| %.3f %%", nq, sum / nq * 100);
    cr_assert_leq(sum / nq, 0.025);
    agg_plan_free(plan);
    tschema_free(s);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const double QS[] = { 0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0 };
#define NQ (sizeof(QS) / sizeof(QS[0]))

static double draw(uint64_t *rs, int dist)
{
    double u = ((double)(trand(rs) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = ((double)(trand(rs) >> 11) + 0.5) / 9007199254740992.0;
    double z = sqrt(-2 * log(u)) * cos(2 * M_PI * u2);
    switch (dist) {
    case 0: return u * 1000.0;                          /* uniform */
    case 1: return exp(z * 6.0);                        /* log-normal, ~12 decades */
    case 2: return (u2 < 0.4 ? -1 : 1) * exp(z * 3.0);  /* both signs */
    case 3: return (double)(trand(rs) % 5) * 2.5;       /* heavy duplicates, zeros */
    default: return z * 1e-3;                           /* small around 0 */
    }
}

static void quantile_check(int dist, schema_window_t w, int n, int64_t tiles)
{
    tfeat_t f[NQ];
    for (size_t i = 0; i < NQ; i++)
        f[i] = (tfeat_t){ SCHEMA_AGG_APPROX_QUANTILE, TF_VD, 0, QS[i], 0 };
    schema_t *s = tschema_new(f, NQ, w, 0);
    agg_plan_t *plan;
    char err[128];
    cr_assert_eq(agg_plan_new(s, 0, &plan, err, sizeof(err)), 0);
    agg_entity_t *ent = agg_entity_new(plan);
    double *v = malloc((size_t)n * sizeof(double));
    uint64_t rs = 1234 + (uint64_t)dist;
    for (int i = 0; i < n; i++) {
        v[i] = draw(&rs, dist);
        tev_t e = { .t = (int64_t)i * tiles / n, .has_d = true, .vd = v[i] };
        agg_input_t fields[TF__COUNT];
        agg_event_t ev;
        tev_to_event(&e, fields, &ev);
        cr_assert_eq(agg_entity_update(plan, ent, &ev, INT64_MIN), 0);
    }
    qsort(v, (size_t)n, sizeof(double), cmp_dbl);
    agg_value_t out[NQ];
    agg_entity_query(plan, ent, tiles - 1, out);
    for (size_t i = 0; i < NQ; i++) {
        double exact = v[(size_t)floor(QS[i] * (n - 1))];
        double tol = 0.01 * fabs(exact) * (1 + 1e-9) + (fabs(exact) < 1e-12 ? 1e-12 : 0);
        cr_assert(out[i].type == AGG_VAL_DOUBLE && fabs(out[i].d - exact) <= tol,
                  "dist %d q=%g: got %.17g exact %.17g", dist, QS[i], out[i].d, exact);
    }
    free(v);
    agg_entity_free(ent);
    agg_plan_free(plan);
    tschema_free(s);
}

Test(agg_sketch, quantile_error_bound_single)
{
    schema_window_t w = { .kind = SCHEMA_WINDOW_LIFETIME };
    for (int dist = 0; dist < 5; dist++)
        quantile_check(dist, w, 50000, 1);
}

Test(agg_sketch, quantile_error_bound_merged_tiles)
{
    /* 64 tiles of one ms; the window covers all of them */
    schema_window_t w = { .kind = SCHEMA_WINDOW_SLIDING, .size_ms = 64, .hop_ms = 1 };
    for (int dist = 0; dist < 5; dist++)
        quantile_check(dist, w, 20000, 64);
}
