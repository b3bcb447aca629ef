/*
 * bench_state.c — state store figures, each beside a peer measured in the
 * same run on the same disk:
 *
 *   commit: a batch of N entity states (+ progress rows) committed with a
 *           synced WAL through state_batch_commit — alternately with
 *           state_batch_put (new entities: states + index rows) and
 *           state_batch_put_known (the same entities rewritten) — vs the same
 *           N puts as one plain synced rocksdb_write per round (no entity
 *           index, no op log), vs a bare write+fdatasync of as many bytes.
 *   lookup: state_lookup with the partition known and with -1, vs a plain
 *           rocksdb_get of the same key from a plain DB (bloom + same cache).
 *
 * usage: bench_state [DIR] [ENTITIES] [STATE_BYTES]   (defaults /tmp, 10000, 200)
 * Build without sanitizers for meaningful numbers.
 */
#include "state.h"

#include <rocksdb/c.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, int n, double scale, const char *unit)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    printf("  %-46s p50 %8.2f %s  p99 %8.2f %s  mean %8.2f %s\n", what, v[n / 2] * scale, unit,
           v[(int)(n * 0.99)] * scale, unit, sum / n * scale, unit);
}

static rocksdb_t *plain_open(const char *dir, rocksdb_options_t **o_out, rocksdb_cache_t **c_out)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_compression(o, rocksdb_lz4_compression);
    rocksdb_cache_t *cache = rocksdb_cache_create_lru(64u << 20);
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(t, cache);
    rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_options_set_block_based_table_factory(o, t);
    rocksdb_block_based_options_destroy(t);
    char *err = NULL;
    rocksdb_t *db = rocksdb_open(o, dir, &err);
    if (err) { fprintf(stderr, "%s\n", err); exit(1); }
    *o_out = o;
    *c_out = cache;
    return db;
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "/tmp";
    int n = argc > 2 ? atoi(argv[2]) : 10000;
    int vbytes = argc > 3 ? atoi(argv[3]) : 200;
    const int rounds = 40, nlook = 200000;
    char dir[512], pdir[512], cmd[1200], err[512];
    snprintf(dir, sizeof dir, "%s/bench-state-%d", base, (int)getpid());
    snprintf(pdir, sizeof pdir, "%s/bench-plain-%d", base, (int)getpid());
    char *val = malloc((size_t)vbytes);
    memset(val, 'x', (size_t)vbytes);

    state_store_t *st;
    if (state_open(dir, NULL, &st, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    rocksdb_options_t *po;
    rocksdb_cache_t *pc;
    rocksdb_t *pdb = plain_open(pdir, &po, &pc);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(wo, 1);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();

    printf("state store: %d entities per batch, %d-byte states, %d rounds, dir %s\n", n, vbytes,
           rounds, base);
    double *t_ours = calloc(rounds, sizeof(double)), *t_plain = calloc(rounds, sizeof(double)),
           *t_sync = calloc(rounds, sizeof(double)), *t_known = calloc(rounds, sizeof(double));
    state_batch_t *b = state_batch_new();
    char fpath[600];
    snprintf(fpath, sizeof fpath, "%s/bench-fsync-%d", base, (int)getpid());
    int fd = open(fpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    size_t bytes = (size_t)n * (size_t)(vbytes + 24);
    char *blob = calloc(1, bytes);
    for (int r = 0; r < rounds; r++) {
        /* ours: even rounds write entities (states + index rows), odd rounds
         * rewrite the same entities with put_known (a cache flushing entities
         * it loaded), so each store sees one batch per round like the peer */
        int base_r = r & ~1;
        for (int i = 0; i < n; i++) {
            char key[24];
            int kl = snprintf(key, sizeof key, "user-%08d", (i * 7919 + base_r) % (n * 4));
            val[0] = (char)r;
            if (r % 2 == 0)
                state_batch_put(b, "clicks", i % 8, key, (size_t)kl, val, (size_t)vbytes);
            else
                state_batch_put_known(b, "clicks", i % 8, key, (size_t)kl, val, (size_t)vbytes);
        }
        for (int p = 0; p < 8; p++) state_batch_progress(b, "events", p, (int64_t)r * n, r);
        double t0 = now_s();
        if (state_batch_commit(st, b, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
        if (r % 2 == 0) t_ours[r / 2] = now_s() - t0;
        else t_known[r / 2] = now_s() - t0;
        /* plain rocksdb */
        rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
        for (int i = 0; i < n; i++) {
            char key[24];
            int kl = snprintf(key, sizeof key, "user-%08d", (i * 7919 + base_r) % (n * 4));
            rocksdb_writebatch_put(wb, key, (size_t)kl, val, (size_t)vbytes);
        }
        t0 = now_s();
        char *e = NULL;
        rocksdb_write(pdb, wo, wb, &e);
        t_plain[r] = now_s() - t0;
        rocksdb_writebatch_destroy(wb);
        /* bare fdatasync of the same bytes */
        t0 = now_s();
        if (write(fd, blob, bytes) != (ssize_t)bytes || fdatasync(fd) != 0) return 1;
        t_sync[r] = now_s() - t0;
    }
    close(fd);
    unlink(fpath);
    printf("commit latency (batch of %d, WAL synced):\n", n);
    report("state_batch_commit (states+index+progress)", t_ours, rounds / 2, 1e3, "ms");
    report("state_batch_commit, put_known (no index rows)", t_known, rounds / 2, 1e3, "ms");
    report("peer: plain rocksdb_write, same puts, sync", t_plain, rounds, 1e3, "ms");
    report("peer: write+fdatasync of the same bytes", t_sync, rounds, 1e3, "ms");

    /* lookups over the 4n keys written; the partition of each key is found
     * first (untimed), then three passes in different random orders so no
     * pass warms the CPU caches for another */
    int nkeys = n * 4;
    int32_t *kpart = malloc(sizeof(int32_t) * (size_t)nkeys);
    sl_buf_t out = SL_BUF_INIT;
    for (int k = 0; k < nkeys; k++) {
        char key[24];
        int kl = snprintf(key, sizeof key, "user-%08d", k);
        kpart[k] = -1;
        for (int32_t p = 0; p < 8 && kpart[k] < 0; p++)
            if (state_lookup(st, "clicks", p, key, (size_t)kl, NULL) == 0) kpart[k] = p;
    }
    double *lp = malloc(sizeof(double) * nlook), *la = malloc(sizeof(double) * nlook),
           *lr = malloc(sizeof(double) * nlook);
    int found = 0;
    for (int pass = 0; pass < 3; pass++) {
        unsigned seed = 17u + (unsigned)pass;
        for (int i = 0; i < nlook; i++) {
            int k = (int)(rand_r(&seed) % (unsigned)nkeys);
            char key[24];
            int kl = snprintf(key, sizeof key, "user-%08d", k);
            double t0 = now_s();
            if (pass == 0) {
                state_lookup(st, "clicks", kpart[k] < 0 ? 0 : kpart[k], key, (size_t)kl, &out);
                lp[i] = now_s() - t0;
            } else if (pass == 1) {
                found += state_lookup(st, "clicks", -1, key, (size_t)kl, &out) == 0;
                la[i] = now_s() - t0;
            } else {
                size_t vl;
                char *e = NULL;
                char *v = rocksdb_get(pdb, ro, key, (size_t)kl, &vl, &e);
                lr[i] = now_s() - t0;
                rocksdb_free(v);
            }
        }
    }
    free(kpart);
    printf("lookup latency (%d random keys of %d, %d found, single thread):\n", nlook, n * 4,
           found);
    report("state_lookup, partition known", lp, nlook, 1e6, "us");
    report("state_lookup, partition -1 (entity index)", la, nlook, 1e6, "us");
    report("peer: plain rocksdb_get (malloc'd value)", lr, nlook, 1e6, "us");

    sl_buf_free(&out);
    state_batch_free(b);
    state_close(st);
    rocksdb_close(pdb);
    rocksdb_options_destroy(po);
    rocksdb_cache_destroy(pc);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_readoptions_destroy(ro);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, pdir);
    if (system(cmd) != 0) return 1;
    free(val); free(blob); free(t_ours); free(t_plain); free(t_sync); free(t_known);
    free(lp); free(la); free(lr);
    return 0;
}
