/*
 * state.c — the RocksDB state store (see state.h for the contract).
 *
 * Directory: <dir>/ is one RocksDB database plus our own lock file
 * <dir>/sluice.lock (flock, holds the owner's pid for the "in use by pid N"
 * message; RocksDB's own LOCK is a POSIX lock that cannot name its holder).
 * A restore in progress leaves <dir>/sluice.restoring, and state_open refuses
 * such a directory.
 *
 * Column families (all share one LRU block cache; whole-key bloom filters for
 * point lookups; index and filter blocks live in the cache):
 *
 *   states    [view_id u32be][version u32be][partition u32be][entity bytes]
 *               -> state bytes (agg_entity_encode output, opaque here)
 *   entities  [view_id u32be][version u32be][entity bytes]
 *               -> [partition u32be]        (the partition that last wrote it)
 *   meta      'M' name                      -> user meta (state_meta_put)
 *             'V' view name                 -> [view_id u32be][current version u32be]
 *             'N'                           -> [next view id u32be]
 *             'F'                           -> [store format u32be] (1)
 *             'P' [topic len u16be][topic][partition u32be]
 *                                           -> [next_offset i64be][watermark i64be]
 *   default   unused (RocksDB requires it)
 *
 * Why partition-major state keys: the unit of exactly-once and of moving work
 * between workers is a Kafka partition, so one partition's states are one
 * contiguous key range: iterated, exported, or dropped (DeleteRange) alone,
 * and a backfill's new version is another range beside the serving one.
 * Views get a small stable id (assigned at first commit, kept in meta) so the
 * per-key overhead is 12 bytes whatever the view name.
 *
 * Why the entities index: serving usually does not know the partition of an
 * entity (the entity key comes from payload fields, not necessarily the Kafka
 * message key), so state_lookup(partition = -1) reads the tiny index value
 * (bloom-filtered, almost always in the block cache) and then the one state
 * it points to: one state read per entity. The index row is written in the
 * same write batch as the state, so they never disagree after a crash. With
 * co-partitioned topics (entity key = message key, the supported deployment)
 * an entity lives in one partition. If an entity is written from several
 * partitions, each (partition, entity) state is kept exactly, and partition
 * -1 finds the one written last (documented limitation).
 *
 * Exactly once: a batch collects state puts/deletes and progress rows in an
 * op log (it has no store until commit, so view ids and current versions are
 * resolved at commit) and state_batch_commit applies it as ONE RocksDB write
 * batch with a synced WAL: states and offsets become durable together or not
 * at all. atomic_flush keeps the column families consistent in flushes and
 * checkpoints too. The state operations are sorted by key before they enter
 * the RocksDB batch: the memtable skip list reuses its insertion point for
 * keys in order (10k inserts: ~30% less CPU than random order, measured on
 * this machine); ties keep their arrival order, so the last operation on a
 * key wins as the caller expects. state_batch_put_known skips the index row
 * of an entity known to be indexed in that partition already (a cache
 * flushing an entity it loaded), halving the memtable work of its put.
 *
 * Partition moves: state_partition_drop and state_partition_copy replace or
 * remove one partition's states, index rows and progress in one write.
 *
 * Followers: state_open_follower opens the dir of another process as a
 * RocksDB secondary instance; state_follow_refresh replays the owner's WAL
 * (whole write batches) and reloads views and progress under their locks.
 *
 * Threads: one writer (batches, meta_put, version changes, drops, copies,
 * follower refresh) and any number of readers (state_lookup*,
 * state_progress, state_offset_get, state_meta_get, state_iterate). The view table (name -> id, version) is
 * under an rwlock; the committed progress is copied into memory under a mutex
 * after each successful write (readers never touch RocksDB for tokens).
 * commit_mu serialises writers in case more than one thread writes.
 */
#define _GNU_SOURCE                 /* qsort_r */
#include "state.h"
#include "sl_err.h"
#include "state_int.h"

#include <rocksdb/c.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define STATE_FORMAT 1

enum { CF_DEFAULT, CF_STATES, CF_ENTITIES, CF_META, CF__COUNT };
static const char *const cf_names[CF__COUNT] = { "default", "states", "entities", "meta" };

enum { OP_PUT = 1, OP_DEL = 2, OP_PROGRESS = 3, OP_PUT_KNOWN = 4 };

typedef struct view_entry {
    char *name;
    uint32_t id;
    uint32_t version;
} view_entry_t;

struct state_store {
    char *dir;
    bool read_only;
    bool follower;                   /* RocksDB secondary instance */
    bool follow_refreshed;           /* a follower refresh has loaded the tables */
    int lock_fd;
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_options_t *opts_states;  /* the states column family's (see store_open) */
    rocksdb_cache_t *cache;
    rocksdb_column_family_handle_t *cf[CF__COUNT];
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo_sync;

    pthread_rwlock_t views_lock;     /* guards views, n_views, next_view_id */
    view_entry_t *views;
    size_t n_views, cap_views;
    uint32_t next_view_id;

    pthread_mutex_t progress_mu;     /* guards progress[] */
    state_partition_progress_t *progress;
    size_t n_progress, cap_progress;

    pthread_mutex_t commit_mu;       /* one write at a time */
    /* A commit's working memory, under commit_mu, kept from one commit to the
     * next (see batch_commit): the RocksDB batch, the sorted operations and
     * their keys. */
    rocksdb_writebatch_t *commit_wb;
    struct commit_ent *commit_ents;
    size_t commit_cap_ents;
    sl_buf_t commit_arena;
    _Atomic uint64_t commits;        /* any write that readers should notice */
    _Atomic uint64_t batch_commits, commit_failures, commit_ops, commit_bytes;
    _Atomic uint64_t commit_us_total, commit_us_last;
};

struct state_batch {
    sl_buf_t log;
    size_t n_ops;
};

/* ---- errors -------------------------------------------------------------- */

static void seterr(char *errstr, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *errstr, size_t errsize, const char *fmt, ...)
{
    if (!errstr || !errsize) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errsize, fmt, ap);
    va_end(ap);
}

/* Maps a RocksDB error string to an SL_E code, fills errstr with
 * "<what>: <rocksdb message>", frees the string. */
static int rdb_error(char *err, int fallback, char *errstr, size_t errsize, const char *what)
{
    int rc = fallback;
    if (strncmp(err, "Corruption", 10) == 0) rc = SL_ECORRUPT;
    else if (strstr(err, "lock") && strstr(err, "LOCK")) rc = SL_EBUSY;
    else if (strstr(err, "does not exist (create_if_missing is false)")) rc = SL_ENOTFOUND;
    else if (strncmp(err, "IO error", 8) == 0 && fallback != SL_ESTATE) rc = SL_EIO;
    seterr(errstr, errsize, "%s: %s", what, err);
    rocksdb_free(err);
    return rc;
}

/* ---- small encoders ------------------------------------------------------ */

static void put_u32be(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}

static uint32_t get_u32be(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Builds a states key (with_partition) or an entities key into kb. */
static int key_build(sl_buf_t *kb, uint32_t view_id, uint32_t version, bool with_partition,
                     uint32_t partition, const void *key, size_t klen)
{
    unsigned char hdr[12];
    size_t h = 8;
    put_u32be(hdr, view_id);
    put_u32be(hdr + 4, version);
    if (with_partition) { put_u32be(hdr + 8, partition); h = 12; }
    sl_buf_reset(kb);
    if (sl_buf_reserve(kb, h + klen)) return SL_ENOMEM;
    sl_buf_append(kb, hdr, h);
    if (klen) sl_buf_append(kb, key, klen);
    return SL_OK;
}

static int progress_key(sl_buf_t *kb, const char *topic, uint32_t partition)
{
    size_t tl = strlen(topic);
    if (tl == 0 || tl > 249) return SL_EINVAL;     /* Kafka topic names are <= 249 */
    unsigned char p4[4];
    sl_buf_reset(kb);
    put_u32be(p4, partition);
    if (sl_buf_put_u8(kb, 'P') || sl_buf_put_u8(kb, (uint8_t)(tl >> 8)) ||
        sl_buf_put_u8(kb, (uint8_t)tl) || sl_buf_append(kb, topic, tl) ||
        sl_buf_append(kb, p4, 4))
        return SL_ENOMEM;
    return SL_OK;
}

/* Smallest key greater than every key starting with prefix[0..n): the prefix
 * incremented as a big-endian number. Returns false when none exists. */
static bool prefix_successor(const unsigned char *prefix, size_t n, unsigned char *out)
{
    memcpy(out, prefix, n);
    for (size_t i = n; i-- > 0;) {
        if (out[i] != 0xff) { out[i]++; return true; }
        out[i] = 0;
    }
    return false;
}

/* ---- view table ---------------------------------------------------------- */

/* Caller holds views_lock (read or write). */
static view_entry_t *view_find(state_store_t *st, const char *name)
{
    for (size_t i = 0; i < st->n_views; i++)
        if (strcmp(st->views[i].name, name) == 0) return &st->views[i];
    return NULL;
}

/* Caller holds views_lock for writing. */
static int view_add(state_store_t *st, const char *name, uint32_t id, uint32_t version)
{
    if (st->n_views == st->cap_views) {
        size_t cap = st->cap_views ? st->cap_views * 2 : 8;
        view_entry_t *v = realloc(st->views, cap * sizeof *v);
        if (!v) return SL_ENOMEM;
        st->views = v;
        st->cap_views = cap;
    }
    char *copy = strdup(name);
    if (!copy) return SL_ENOMEM;
    st->views[st->n_views++] = (view_entry_t){ copy, id, version };
    return SL_OK;
}

/* Resolves a view for reading: false when the view was never written. */
static bool view_resolve(state_store_t *st, const char *view, uint32_t version,
                         uint32_t *id, uint32_t *ver)
{
    bool found = false;
    pthread_rwlock_rdlock(&st->views_lock);
    view_entry_t *v = view_find(st, view);
    if (v) {
        *id = v->id;
        *ver = version ? version : v->version;
        found = true;
    }
    pthread_rwlock_unlock(&st->views_lock);
    return found;
}

static int view_meta_value(unsigned char out[8], uint32_t id, uint32_t version)
{
    put_u32be(out, id);
    put_u32be(out + 4, version);
    return SL_OK;
}

/* ---- progress table ------------------------------------------------------ */

/* Caller holds progress_mu. */
static state_partition_progress_t *progress_find(state_store_t *st, const char *topic,
                                                 int32_t partition)
{
    for (size_t i = 0; i < st->n_progress; i++)
        if (st->progress[i].partition == partition && strcmp(st->progress[i].topic, topic) == 0)
            return &st->progress[i];
    return NULL;
}

/* Caller holds progress_mu. */
static int progress_set(state_store_t *st, const char *topic, int32_t partition,
                        int64_t next_offset, int64_t watermark_ms)
{
    state_partition_progress_t *p = progress_find(st, topic, partition);
    if (!p) {
        if (st->n_progress == st->cap_progress) {
            size_t cap = st->cap_progress ? st->cap_progress * 2 : 16;
            state_partition_progress_t *np = realloc(st->progress, cap * sizeof *np);
            if (!np) return SL_ENOMEM;
            st->progress = np;
            st->cap_progress = cap;
        }
        p = &st->progress[st->n_progress++];
        memset(p, 0, sizeof *p);
        snprintf(p->topic, sizeof p->topic, "%s", topic);
        p->partition = partition;
    }
    p->next_offset = next_offset;
    p->watermark_ms = watermark_ms;
    return SL_OK;
}

/* ---- directory and lock -------------------------------------------------- */

int state__mkdir_p(const char *dir, char *errstr, size_t errsize)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        seterr(errstr, errsize, "state dir path too long");
        return SL_EINVAL;
    }
    for (char *p = path + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(path, 0700) != 0 && errno != EEXIST) {
                seterr(errstr, errsize, "cannot create %s: %s", path, strerror(errno));
                return SL_EIO;
            }
            *p = c;
            if (!c) break;
        }
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        seterr(errstr, errsize, "%s is not a directory", dir);
        return SL_EIO;
    }
    return SL_OK;
}

static long lock_holder_pid(int fd)
{
    char buf[32] = { 0 };
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return -1;
    return strtol(buf, NULL, 10);
}

/* Takes the exclusive flock on dir/sluice.lock; returns the fd or a negative
 * SL_E code. The lock file stays (removing it would race with a new owner). */
int state__dir_lock(const char *dir, char *errstr, size_t errsize)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, STATE_LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        seterr(errstr, errsize, "cannot open lock file %s: %s", path, strerror(errno));
        return SL_EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        long pid = lock_holder_pid(fd);
        close(fd);
        if (e == EWOULDBLOCK) {
            if (pid > 0)
                seterr(errstr, errsize, "state dir %s is in use by pid %ld", dir, pid);
            else
                seterr(errstr, errsize, "state dir %s is in use by another process", dir);
            return SL_EBUSY;
        }
        seterr(errstr, errsize, "cannot lock %s: %s", path, strerror(e));
        return SL_EIO;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        seterr(errstr, errsize, "cannot write lock file %s: %s", path, strerror(errno));
        close(fd);
        return SL_EIO;
    }
    return fd;
}

int state_dir_check_unlocked(const char *dir, char *errstr, size_t errsize)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, STATE_LOCK_FILE);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return SL_OK;               /* no lock file: nobody holds it */
    int rc = SL_OK;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        long pid = lock_holder_pid(fd);
        if (pid > 0) seterr(errstr, errsize, "state dir %s is in use by pid %ld", dir, pid);
        else seterr(errstr, errsize, "state dir %s is in use by another process", dir);
        rc = SL_EBUSY;
    }
    close(fd);
    return rc;
}

/* ---- open / close -------------------------------------------------------- */

static int load_meta(state_store_t *st, char *errstr, size_t errsize)
{
    int rc = SL_OK;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, st->ro, st->cf[CF_META]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const unsigned char *k = (const unsigned char *)rocksdb_iter_key(it, &kl);
        const unsigned char *v = (const unsigned char *)rocksdb_iter_value(it, &vl);
        if (kl == 0) continue;
        if (k[0] == 'F' && kl == 1) {
            if (vl != 4) goto corrupt;
            uint32_t fmt = get_u32be(v);
            if (fmt > STATE_FORMAT) {
                seterr(errstr, errsize, "state dir %s has store format %u, this build reads <= %u",
                       st->dir, fmt, STATE_FORMAT);
                rc = SL_EVERSION;
                goto out;
            }
        } else if (k[0] == 'N' && kl == 1) {
            if (vl != 4) goto corrupt;
            st->next_view_id = get_u32be(v);
        } else if (k[0] == 'V') {
            if (vl != 8 || kl < 2 || kl > 1024) goto corrupt;
            char name[1024];
            memcpy(name, k + 1, kl - 1);
            name[kl - 1] = '\0';
            if ((rc = view_add(st, name, get_u32be(v), get_u32be(v + 4)))) goto out;
        } else if (k[0] == 'P') {
            if (vl != 16 || kl < 3) goto corrupt;
            size_t tl = (size_t)k[1] << 8 | k[2];
            if (tl == 0 || tl > 249 || kl != 3 + tl + 4) goto corrupt;
            char topic[256];
            memcpy(topic, k + 3, tl);
            topic[tl] = '\0';
            if ((rc = progress_set(st, topic, (int32_t)get_u32be(k + 3 + tl),
                                   (int64_t)sl_load_u64be(v), (int64_t)sl_load_u64be(v + 8))))
                goto out;
        }
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err) rc = rdb_error(err, SL_EIO, errstr, errsize, "reading state meta");
    goto out;
corrupt:
    seterr(errstr, errsize, "state dir %s: malformed meta record", st->dir);
    rc = SL_ECORRUPT;
out:
    rocksdb_iter_destroy(it);
    return rc;
}

static int write_format_marker(state_store_t *st, char *errstr, size_t errsize)
{
    size_t vl = 0;
    char *err = NULL;
    char *v = rocksdb_get_cf(st->db, st->ro, st->cf[CF_META], "F", 1, &vl, &err);
    if (err) return rdb_error(err, SL_EIO, errstr, errsize, "reading store format");
    if (v) { rocksdb_free(v); return SL_OK; }
    unsigned char f[4];
    put_u32be(f, STATE_FORMAT);
    rocksdb_put_cf(st->db, st->wo_sync, st->cf[CF_META], "F", 1, (const char *)f, 4, &err);
    if (err) return rdb_error(err, SL_EIO, errstr, errsize, "writing store format");
    return SL_OK;
}

/* follow_dir != NULL: open as a RocksDB secondary instance (read only). */
static int store_open(const char *dir, const char *follow_dir, const state_options_t *opts,
                      state_store_t **out, char *errstr, size_t errsize)
{
    state_options_t defaults = { .create_if_missing = true };
    if (!opts) opts = &defaults;
    *out = NULL;
    if (!dir || !*dir) {
        seterr(errstr, errsize, "state dir not set");
        return SL_EINVAL;
    }
    int rc;
    char *err = NULL;
    rocksdb_block_based_table_options_t *tbl = NULL;
    state_store_t *st = calloc(1, sizeof *st);
    if (!st) return SL_ENOMEM;
    st->lock_fd = -1;
    st->read_only = opts->read_only || follow_dir;
    st->follower = follow_dir != NULL;
    st->next_view_id = 1;
    pthread_rwlock_init(&st->views_lock, NULL);
    pthread_mutex_init(&st->progress_mu, NULL);
    pthread_mutex_init(&st->commit_mu, NULL);
    if (!(st->dir = strdup(dir))) { rc = SL_ENOMEM; goto fail; }

    struct stat sb;
    if (!st->read_only && opts->create_if_missing) {
        if ((rc = state__mkdir_p(dir, errstr, errsize))) goto fail;
    } else if (stat(dir, &sb) != 0) {
        seterr(errstr, errsize, "state dir %s does not exist", dir);
        rc = SL_ENOTFOUND;
        goto fail;
    }
    if (!st->read_only) {
        int fd = state__dir_lock(dir, errstr, errsize);
        if (fd < 0) { rc = fd; goto fail; }
        st->lock_fd = fd;
    }
    char mark[4200];
    snprintf(mark, sizeof mark, "%s/%s", dir, STATE_RESTORE_MARK);
    if (access(mark, F_OK) == 0) {
        seterr(errstr, errsize, "state dir %s holds an unfinished snapshot restore; "
               "run the restore again or remove the directory", dir);
        rc = SL_ECORRUPT;
        goto fail;
    }

    st->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(st->opts, opts->create_if_missing);
    rocksdb_options_set_create_missing_column_families(st->opts, 1);
    rocksdb_options_increase_parallelism(st->opts, 2);
    rocksdb_options_set_atomic_flush(st->opts, 1);
    rocksdb_options_set_max_total_wal_size(st->opts, 256u << 20);
    rocksdb_options_set_keep_log_file_num(st->opts, 3);
    rocksdb_options_set_max_log_file_size(st->opts, 4u << 20);
    rocksdb_options_set_compression(st->opts, rocksdb_lz4_compression);
    rocksdb_options_set_bottommost_compression(st->opts, rocksdb_zstd_compression);
    st->cache = rocksdb_cache_create_lru(opts->block_cache_bytes ? opts->block_cache_bytes
                                                                 : (size_t)64 << 20);
    tbl = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(tbl, st->cache);
    rocksdb_block_based_options_set_filter_policy(tbl, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(tbl, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(tbl, 1);
    rocksdb_block_based_options_set_format_version(tbl, 5);
    rocksdb_options_set_block_based_table_factory(st->opts, tbl);
    rocksdb_block_based_options_destroy(tbl);

    /* The states column family takes one put per dirty entity per commit:
     * with short commit intervals, about one per event. No compression there
     * (the values are varint-packed tiles, doubles and 32-bit sketch codes,
     * which LZ4 barely shrinks, while flushes and compactions paid for it),
     * and twice the default memtable so that a hot entity's successive
     * versions more often die in the memtable instead of reaching L0. */
    st->opts_states = rocksdb_options_create_copy(st->opts);
    rocksdb_options_set_compression(st->opts_states, rocksdb_no_compression);
    rocksdb_options_set_bottommost_compression(st->opts_states, rocksdb_no_compression);
    rocksdb_options_set_write_buffer_size(st->opts_states, (size_t)128 << 20);
    const rocksdb_options_t *cf_opts[CF__COUNT];
    for (int i = 0; i < CF__COUNT; i++) cf_opts[i] = st->opts;
    cf_opts[CF_STATES] = st->opts_states;
    if (follow_dir) {
        if ((rc = state__mkdir_p(follow_dir, errstr, errsize))) goto fail;
        rocksdb_options_set_max_open_files(st->opts, -1);   /* required by secondaries */
        st->db = rocksdb_open_as_secondary_column_families(st->opts, dir, follow_dir, CF__COUNT,
                                                           cf_names, cf_opts, st->cf, &err);
    } else if (st->read_only) {
        st->db = rocksdb_open_for_read_only_column_families(st->opts, dir, CF__COUNT, cf_names,
                                                             cf_opts, st->cf, 0, &err);
    } else {
        st->db = rocksdb_open_column_families(st->opts, dir, CF__COUNT, cf_names, cf_opts,
                                              st->cf, &err);
    }
    if (err) {
        char what[4200];
        snprintf(what, sizeof what, "cannot open state dir %s", dir);
        rc = rdb_error(err, SL_EIO, errstr, errsize, what);
        if (rc == SL_ESTATE) rc = SL_EIO;
        st->db = NULL;
        goto fail;
    }
    st->ro = rocksdb_readoptions_create();
    st->wo_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(st->wo_sync, 1);
    if ((rc = load_meta(st, errstr, errsize))) goto fail;
    if (!st->read_only && (rc = write_format_marker(st, errstr, errsize))) goto fail;
    *out = st;
    return SL_OK;
fail:
    state_close(st);
    return rc;
}

int state_open(const char *dir, const state_options_t *opts, state_store_t **out,
               char *errstr, size_t errsize)
{
    return store_open(dir, NULL, opts, out, errstr, errsize);
}

int state_open_follower(const char *dir, const char *scratch_dir, const state_options_t *opts,
                        state_store_t **out, char *errstr, size_t errsize)
{
    if (!scratch_dir || !*scratch_dir) {
        *out = NULL;
        seterr(errstr, errsize, "a follower needs a scratch dir of its own");
        return SL_EINVAL;
    }
    state_options_t o = opts ? *opts : (state_options_t){ 0 };
    o.create_if_missing = false;
    o.read_only = true;
    return store_open(dir, scratch_dir, &o, out, errstr, errsize);
}

int state_follow_refresh(state_store_t *st, char *errstr, size_t errsize)
{
    if (!st->follower) return SL_OK;
    char *err = NULL;
    int rc = SL_OK;
    pthread_mutex_lock(&st->commit_mu);          /* one refresh at a time */
    uint64_t seq0 = rocksdb_get_latest_sequence_number(st->db);
    rocksdb_try_catch_up_with_primary(st->db, &err);
    if (err) {
        rc = rdb_error(err, SL_ESTATE, errstr, errsize, "catching up with the state owner");
        goto out;
    }
    /* Nothing new: keep the tables and the counter (readers' caches stay
     * valid; an idle owner must not empty them every refresh). */
    if (rocksdb_get_latest_sequence_number(st->db) == seq0 && st->follow_refreshed) goto out;
    st->follow_refreshed = true;
    /* reload views and progress: rebuild the tables under both locks */
    pthread_rwlock_wrlock(&st->views_lock);
    pthread_mutex_lock(&st->progress_mu);
    for (size_t i = 0; i < st->n_views; i++) free(st->views[i].name);
    st->n_views = 0;
    st->n_progress = 0;
    rc = load_meta(st, errstr, errsize);
    if (!rc) atomic_fetch_add_explicit(&st->commits, 1, memory_order_release);   /* see commit */
    pthread_mutex_unlock(&st->progress_mu);
    pthread_rwlock_unlock(&st->views_lock);
out:
    pthread_mutex_unlock(&st->commit_mu);
    return rc;
}

void state_close(state_store_t *st)
{
    if (!st) return;
    if (st->db) {
        for (int i = 0; i < CF__COUNT; i++)
            if (st->cf[i]) rocksdb_column_family_handle_destroy(st->cf[i]);
        rocksdb_close(st->db);
    }
    if (st->ro) rocksdb_readoptions_destroy(st->ro);
    if (st->wo_sync) rocksdb_writeoptions_destroy(st->wo_sync);
    if (st->commit_wb) rocksdb_writebatch_destroy(st->commit_wb);
    free(st->commit_ents);
    sl_buf_free(&st->commit_arena);
    if (st->opts) rocksdb_options_destroy(st->opts);
    if (st->opts_states) rocksdb_options_destroy(st->opts_states);
    if (st->cache) rocksdb_cache_destroy(st->cache);
    if (st->lock_fd >= 0) close(st->lock_fd);   /* releases the flock */
    for (size_t i = 0; i < st->n_views; i++) free(st->views[i].name);
    free(st->views);
    free(st->progress);
    pthread_rwlock_destroy(&st->views_lock);
    pthread_mutex_destroy(&st->progress_mu);
    pthread_mutex_destroy(&st->commit_mu);
    free(st->dir);
    free(st);
}

const char *state_dir(const state_store_t *st) { return st->dir; }

uint64_t state_commit_count(const state_store_t *st)
{
    return atomic_load_explicit(&((state_store_t *)st)->commits, memory_order_acquire);
}

/* ---- reads --------------------------------------------------------------- */

/* Get into out. Returns 0, SL_ENOTFOUND, SL_ESTATE. */
static int get_into(state_store_t *st, int cf, const void *k, size_t kl, sl_buf_t *out)
{
    char *err = NULL;
    rocksdb_pinnableslice_t *ps = rocksdb_get_pinned_cf(st->db, st->ro, st->cf[cf],
                                                        (const char *)k, kl, &err);
    if (err) { rocksdb_free(err); return SL_ESTATE; }
    if (!ps) return SL_ENOTFOUND;
    size_t vl;
    const char *v = rocksdb_pinnableslice_value(ps, &vl);
    int rc = SL_OK;
    if (out) {
        sl_buf_reset(out);
        if (vl && sl_buf_append(out, v, vl)) rc = SL_ENOMEM;
    }
    rocksdb_pinnableslice_destroy(ps);
    return rc;
}

int state_lookup_version(state_store_t *st, const char *view, uint32_t version,
                         int32_t partition, const void *key, size_t klen, sl_buf_t *out)
{
    uint32_t id, ver;
    if (!view || partition < -1) return SL_EINVAL;
    if (!view_resolve(st, view, version, &id, &ver)) return SL_ENOTFOUND;
    unsigned char stackkey[256];
    sl_buf_t kb = SL_BUF_INIT;
    int rc;
    uint32_t part = (uint32_t)partition;
    if (partition < 0) {
        /* entities index: [id][ver][key] -> partition */
        const unsigned char *ik;
        size_t ikl = 8 + klen;
        if (ikl <= sizeof stackkey) {
            put_u32be(stackkey, id);
            put_u32be(stackkey + 4, ver);
            if (klen) memcpy(stackkey + 8, key, klen);
            ik = stackkey;
        } else {
            if ((rc = key_build(&kb, id, ver, false, 0, key, klen))) goto out;
            ik = kb.data;
        }
        char *err = NULL;
        rocksdb_pinnableslice_t *ps = rocksdb_get_pinned_cf(st->db, st->ro, st->cf[CF_ENTITIES],
                                                            (const char *)ik, ikl, &err);
        if (err) { rocksdb_free(err); rc = SL_ESTATE; goto out; }
        if (!ps) { rc = SL_ENOTFOUND; goto out; }
        size_t vl;
        const char *v = rocksdb_pinnableslice_value(ps, &vl);
        if (vl != 4) { rocksdb_pinnableslice_destroy(ps); rc = SL_ESTATE; goto out; }
        part = get_u32be((const unsigned char *)v);
        rocksdb_pinnableslice_destroy(ps);
    }
    if (12 + klen <= sizeof stackkey) {
        put_u32be(stackkey, id);
        put_u32be(stackkey + 4, ver);
        put_u32be(stackkey + 8, part);
        if (klen) memcpy(stackkey + 12, key, klen);
        rc = get_into(st, CF_STATES, stackkey, 12 + klen, out);
    } else {
        if ((rc = key_build(&kb, id, ver, true, part, key, klen))) goto out;
        rc = get_into(st, CF_STATES, kb.data, kb.len, out);
    }
out:
    sl_buf_free(&kb);
    return rc;
}

int state_lookup(state_store_t *st, const char *view, int32_t partition,
                 const void *key, size_t klen, sl_buf_t *out)
{
    return state_lookup_version(st, view, 0, partition, key, klen, out);
}

size_t state_progress(state_store_t *st, state_partition_progress_t *out, size_t max)
{
    pthread_mutex_lock(&st->progress_mu);
    size_t n = st->n_progress;
    if (out && n && max) memcpy(out, st->progress, (n < max ? n : max) * sizeof *out);
    pthread_mutex_unlock(&st->progress_mu);
    return n;
}

int state_offset_get(state_store_t *st, const char *topic, int32_t partition,
                     int64_t *next_offset, int64_t *watermark_ms)
{
    int rc = SL_ENOTFOUND;
    pthread_mutex_lock(&st->progress_mu);
    state_partition_progress_t *p = progress_find(st, topic, partition);
    if (p) {
        if (next_offset) *next_offset = p->next_offset;
        if (watermark_ms) *watermark_ms = p->watermark_ms;
        rc = SL_OK;
    }
    pthread_mutex_unlock(&st->progress_mu);
    return rc;
}

/* ---- meta ---------------------------------------------------------------- */

static int meta_key(sl_buf_t *kb, const char *name)
{
    if (!name || !*name) return SL_EINVAL;
    sl_buf_reset(kb);
    if (sl_buf_put_u8(kb, 'M') || sl_buf_append_str(kb, name)) return SL_ENOMEM;
    return SL_OK;
}

int state_meta_get(state_store_t *st, const char *name, sl_buf_t *out)
{
    sl_buf_t kb = SL_BUF_INIT;
    int rc = meta_key(&kb, name);
    if (!rc) rc = get_into(st, CF_META, kb.data, kb.len, out);
    sl_buf_free(&kb);
    return rc;
}

int state_meta_put(state_store_t *st, const char *name, const void *val, size_t len)
{
    if (st->read_only) return SL_EINVAL;
    sl_buf_t kb = SL_BUF_INIT;
    int rc = meta_key(&kb, name);
    if (rc) goto out;
    char *err = NULL;
    pthread_mutex_lock(&st->commit_mu);
    rocksdb_put_cf(st->db, st->wo_sync, st->cf[CF_META], (const char *)kb.data, kb.len,
                   (const char *)val, len, &err);
    pthread_mutex_unlock(&st->commit_mu);
    if (err) { rocksdb_free(err); rc = SL_ESTATE; }
out:
    sl_buf_free(&kb);
    return rc;
}

#define VIEW_FP_PENDING "backfill-pending:"

static void view_fp_name(char *name, size_t size, const char *view)
{
    snprintf(name, size, "view.%s.fingerprint", view);
}

/* 16 hex digits exactly, as view_fp_put writes them. */
static bool parse_fp16(const char *p, size_t n, uint64_t *fp)
{
    if (n != 16) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < 16; i++) {
        int c = (unsigned char)p[i], d = c >= '0' && c <= '9' ? c - '0'
                                       : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v = v << 4 | (uint64_t)d;
    }
    *fp = v;
    return true;
}

int state_view_fp_get(state_store_t *st, const char *view, state_view_fp_t *kind, uint64_t *fp,
                      char *text, size_t textsize)
{
    char name[600];
    sl_buf_t b = SL_BUF_INIT;
    view_fp_name(name, sizeof name, view);
    *kind = STATE_VIEW_FP_ABSENT;
    *fp = 0;
    if (text && textsize) text[0] = '\0';
    int rc = state_meta_get(st, name, &b);
    if (rc == SL_ENOTFOUND) return SL_OK;
    if (rc) goto out;
    const char *p = (const char *)b.data;
    const size_t np = sizeof VIEW_FP_PENDING - 1;
    if (parse_fp16(p, b.len, fp))
        *kind = STATE_VIEW_FP_BUILT;
    else if (b.len > np && memcmp(p, VIEW_FP_PENDING, np) == 0 && parse_fp16(p + np, b.len - np, fp))
        *kind = STATE_VIEW_FP_PENDING;
    else
        *kind = STATE_VIEW_FP_INVALID;
    if (text && textsize) snprintf(text, textsize, "%.*s", (int)b.len, p);
out:
    sl_buf_free(&b);
    return rc;
}

int state_view_fp_put(state_store_t *st, const char *view, state_view_fp_t kind, uint64_t fp)
{
    if (kind != STATE_VIEW_FP_BUILT && kind != STATE_VIEW_FP_PENDING) return SL_EINVAL;
    char name[600], text[64];
    view_fp_name(name, sizeof name, view);
    int n = snprintf(text, sizeof text, "%s%016llx", kind == STATE_VIEW_FP_PENDING ? VIEW_FP_PENDING : "",
                     (unsigned long long)fp);
    return state_meta_put(st, name, text, (size_t)n);
}

/* ---- batches ------------------------------------------------------------- */

state_batch_t *state_batch_new(void)
{
    return calloc(1, sizeof(state_batch_t));
}

void state_batch_free(state_batch_t *b)
{
    if (!b) return;
    sl_buf_free(&b->log);
    free(b);
}

size_t state_batch_count(const state_batch_t *b) { return b->n_ops; }

void state_batch_clear(state_batch_t *b)
{
    sl_buf_reset(&b->log);
    b->n_ops = 0;
}

static int batch_op(state_batch_t *b, int op, const char *view, uint32_t version,
                    int32_t partition, const void *key, size_t klen,
                    const void *val, size_t vlen)
{
    if (!b || !view || !*view || strlen(view) > 1000 || partition < 0 || (klen && !key))
        return SL_EINVAL;
    size_t mark = b->log.len;
    unsigned char hdr[9];
    hdr[0] = (unsigned char)op;
    put_u32be(hdr + 1, version);
    put_u32be(hdr + 5, (uint32_t)partition);
    if (sl_buf_append(&b->log, hdr, sizeof hdr) ||
        sl_buf_put_bytes(&b->log, view, strlen(view)) ||
        sl_buf_put_bytes(&b->log, key, klen) ||
        (op != OP_DEL && sl_buf_put_bytes(&b->log, val, vlen))) {
        b->log.len = mark;
        return SL_ENOMEM;
    }
    b->n_ops++;
    return SL_OK;
}

int state_batch_put_version(state_batch_t *b, const char *view, uint32_t version,
                            int32_t partition, const void *key, size_t klen,
                            const void *val, size_t vlen)
{
    if (vlen && !val) return SL_EINVAL;
    return batch_op(b, OP_PUT, view, version, partition, key, klen, val, vlen);
}

int state_batch_put_known(state_batch_t *b, const char *view, int32_t partition,
                          const void *key, size_t klen, const void *val, size_t vlen)
{
    if (vlen && !val) return SL_EINVAL;
    return batch_op(b, OP_PUT_KNOWN, view, 0, partition, key, klen, val, vlen);
}

int state_batch_delete_version(state_batch_t *b, const char *view, uint32_t version,
                               int32_t partition, const void *key, size_t klen)
{
    return batch_op(b, OP_DEL, view, version, partition, key, klen, NULL, 0);
}

int state_batch_put(state_batch_t *b, const char *view, int32_t partition,
                    const void *key, size_t klen, const void *val, size_t vlen)
{
    return state_batch_put_version(b, view, 0, partition, key, klen, val, vlen);
}

int state_batch_delete(state_batch_t *b, const char *view, int32_t partition,
                       const void *key, size_t klen)
{
    return state_batch_delete_version(b, view, 0, partition, key, klen);
}

int state_batch_progress(state_batch_t *b, const char *topic, int32_t partition,
                         int64_t next_offset, int64_t watermark_ms)
{
    if (!b || !topic || !*topic || strlen(topic) > 249 || partition < 0) return SL_EINVAL;
    size_t mark = b->log.len;
    unsigned char hdr[21];
    hdr[0] = OP_PROGRESS;
    put_u32be(hdr + 1, (uint32_t)partition);
    sl_store_u64be(hdr + 5, (uint64_t)next_offset);
    sl_store_u64be(hdr + 13, (uint64_t)watermark_ms);
    if (sl_buf_append(&b->log, hdr, sizeof hdr) ||
        sl_buf_put_bytes(&b->log, topic, strlen(topic))) {
        b->log.len = mark;
        return SL_ENOMEM;
    }
    b->n_ops++;
    return SL_OK;
}

/* A view first seen in this batch, registered only if the write succeeds. */
typedef struct pending_view {
    char name[1001];
    uint32_t id, version;
} pending_view_t;

/* The most working memory a commit keeps for the next one (see batch_commit). */
#define COMMIT_KEEP_BYTES ((size_t)256 << 20)

/* One state operation of a batch being committed; its states key is at
 * arena[koff .. koff+klen). */
typedef struct commit_ent {
    size_t koff, klen;
    const void *val;
    size_t vlen;
    size_t seq;          /* arrival order */
    int op;
} commit_ent_t;

/* Orders by states key (skip_part false) or by entities key (true: the
 * partition is ignored, so the last write of an entity in arrival order
 * decides its index row), then by arrival. ctx is the key arena. */
static int commit_ent_cmp(const void *a, const void *b, void *ctx, bool skip_part)
{
    const commit_ent_t *x = a, *y = b;
    const unsigned char *arena = ctx;
    const unsigned char *kx = arena + x->koff, *ky = arena + y->koff;
    int c = memcmp(kx, ky, 8);                 /* view id, version */
    if (c == 0 && !skip_part) c = memcmp(kx + 8, ky + 8, 4);
    if (c == 0) {
        size_t lx = x->klen - 12, ly = y->klen - 12;
        c = memcmp(kx + 12, ky + 12, lx < ly ? lx : ly);
        if (c == 0 && lx != ly) c = lx < ly ? -1 : 1;
    }
    if (c == 0) c = x->seq < y->seq ? -1 : x->seq > y->seq;
    return c;
}

static int cmp_states(const void *a, const void *b, void *ctx)
{
    return commit_ent_cmp(a, b, ctx, false);
}

static int cmp_entities(const void *a, const void *b, void *ctx)
{
    return commit_ent_cmp(a, b, ctx, true);
}

static int drop_index_rows(state_store_t *st, rocksdb_writebatch_t *wb,
                           const unsigned char *lo, size_t lol,
                           const unsigned char *hi, size_t hil, char *errstr, size_t errsize);

/* Adds to wb the removal of partition `part` of the current version of each
 * view (states range + the index rows that point into it). */
static int drop_partition_ops(state_store_t *st, rocksdb_writebatch_t *wb,
                              const char *const *views, size_t n_views, int32_t part,
                              char *errstr, size_t errsize)
{
    for (size_t i = 0; i < n_views; i++) {
        uint32_t id, ver;
        if (!view_resolve(st, views[i], 0, &id, &ver)) continue;
        unsigned char lo[12], hi[12];
        put_u32be(lo, id);
        put_u32be(lo + 4, ver);
        put_u32be(lo + 8, (uint32_t)part);
        prefix_successor(lo, 12, hi);
        int rc = drop_index_rows(st, wb, lo, 12, hi, 12, errstr, errsize);
        if (rc) return rc;
        rocksdb_writebatch_delete_range_cf(wb, st->cf[CF_STATES], (const char *)lo, 12,
                                           (const char *)hi, 12);
    }
    return SL_OK;
}

/* Commits b; when n_drop > 0 the same write first removes partition
 * drop_part of drop_views (a partition replaced wholesale). */
static int batch_commit(state_store_t *st, state_batch_t *b, const char *const *drop_views,
                        size_t n_drop, int32_t drop_part, char *errstr, size_t errsize)
{
    if (st->read_only) {
        seterr(errstr, errsize, "state store %s is open read-only", st->dir);
        return SL_EINVAL;
    }
    if (b->n_ops == 0 && n_drop == 0) return SL_OK;
    int rc = SL_OK;
    sl_buf_t kb = SL_BUF_INIT;
    size_t n_ents = 0;
    pending_view_t *pend = NULL;
    size_t n_pend = 0, cap_pend = 0;
    char last_view[1001] = "";
    uint32_t last_id = 0, last_cur = 0;
    bool have_last = false;
    uint32_t next_id;

    /* RocksDB counts every memtable insert in a thread-local perf context
     * unless told not to; nothing here reads those counters. */
    static _Thread_local bool perf_off;
    if (!perf_off) {
        rocksdb_set_perf_level(rocksdb_disable);
        perf_off = true;
    }
    pthread_mutex_lock(&st->commit_mu);
    /* The batch, the operations and their keys reuse the previous commit's
     * memory: at short commit intervals a commit writes tens of MB, and
     * growing fresh buffers each time cost page faults, the copies of each
     * doubling and the return of the pages (about a fifth of the committer
     * thread's time, measured with bench_ingest at 100 ms). */
    if (!st->commit_wb) st->commit_wb = rocksdb_writebatch_create();
    rocksdb_writebatch_t *wb = st->commit_wb;
    sl_buf_t arena = st->commit_arena;
    commit_ent_t *ents = st->commit_ents;
    size_t cap_ents = st->commit_cap_ents;
    sl_buf_reset(&arena);
    pthread_rwlock_rdlock(&st->views_lock);
    next_id = st->next_view_id;
    pthread_rwlock_unlock(&st->views_lock);
    if (n_drop && (rc = drop_partition_ops(st, wb, drop_views, n_drop, drop_part, errstr,
                                           errsize))) {
        rc = SL_ESTATE;
        goto out;
    }

    sl_reader_t r;
    sl_reader_init(&r, b->log.data, b->log.len);
    while (r.left) {
        uint8_t op;
        uint32_t part;
        sl_read_u8(&r, &op);
        if (op == OP_PROGRESS) {
            unsigned char hdr[20];
            const void *topic;
            size_t tl;
            if (sl_read_raw(&r, hdr, sizeof hdr) || sl_read_bytes(&r, &topic, &tl)) goto corrupt;
            char t[256];
            memcpy(t, topic, tl);
            t[tl] = '\0';
            if ((rc = progress_key(&kb, t, get_u32be(hdr)))) goto fail;
            rocksdb_writebatch_put_cf(wb, st->cf[CF_META], (const char *)kb.data, kb.len,
                                      (const char *)hdr + 4, 16);
            continue;
        }
        unsigned char hdr[8];
        const void *view, *key, *val = NULL;
        size_t vnl, kl, vl = 0;
        if (sl_read_raw(&r, hdr, sizeof hdr) || sl_read_bytes(&r, &view, &vnl) ||
            sl_read_bytes(&r, &key, &kl) || (op != OP_DEL && sl_read_bytes(&r, &val, &vl)))
            goto corrupt;
        uint32_t version = get_u32be(hdr);
        part = get_u32be(hdr + 4);
        if (!have_last || strlen(last_view) != vnl || memcmp(last_view, view, vnl) != 0) {
            memcpy(last_view, view, vnl);
            last_view[vnl] = '\0';
            bool found = false;
            pthread_rwlock_rdlock(&st->views_lock);
            view_entry_t *ve = view_find(st, last_view);
            if (ve) { last_id = ve->id; last_cur = ve->version; found = true; }
            pthread_rwlock_unlock(&st->views_lock);
            for (size_t i = 0; !found && i < n_pend; i++)
                if (strcmp(pend[i].name, last_view) == 0) {
                    last_id = pend[i].id; last_cur = pend[i].version; found = true;
                }
            if (!found) {
                if (n_pend == cap_pend) {
                    size_t cap = cap_pend ? cap_pend * 2 : 4;
                    pending_view_t *np = realloc(pend, cap * sizeof *np);
                    if (!np) { rc = SL_ENOMEM; goto fail; }
                    pend = np;
                    cap_pend = cap;
                }
                pending_view_t *pv = &pend[n_pend++];
                snprintf(pv->name, sizeof pv->name, "%s", last_view);
                pv->id = next_id++;
                pv->version = 1;
                last_id = pv->id;
                last_cur = 1;
                unsigned char mv[8];
                view_meta_value(mv, pv->id, pv->version);
                sl_buf_reset(&kb);
                if (sl_buf_put_u8(&kb, 'V') || sl_buf_append_str(&kb, last_view)) {
                    rc = SL_ENOMEM;
                    goto fail;
                }
                rocksdb_writebatch_put_cf(wb, st->cf[CF_META], (const char *)kb.data, kb.len,
                                          (const char *)mv, 8);
            }
            have_last = true;
        }
        uint32_t ver = version ? version : last_cur;
        /* collected, sorted below: the states key goes into the arena */
        if (n_ents == cap_ents) {
            size_t cap = cap_ents ? cap_ents * 2 : 256;
            commit_ent_t *ne = realloc(ents, cap * sizeof *ne);
            if (!ne) { rc = SL_ENOMEM; goto fail; }
            ents = ne;
            cap_ents = cap;
        }
        unsigned char kh[12];
        put_u32be(kh, last_id);
        put_u32be(kh + 4, ver);
        put_u32be(kh + 8, part);
        commit_ent_t *ce = &ents[n_ents];
        ce->koff = arena.len;
        ce->klen = 12 + kl;
        ce->val = val;
        ce->vlen = vl;
        ce->seq = n_ents;
        ce->op = op;
        if (sl_buf_append(&arena, kh, 12) || (kl && sl_buf_append(&arena, key, kl))) {
            rc = SL_ENOMEM;
            goto fail;
        }
        n_ents++;
    }
    /* Memtable inserts in key order reuse the skip list's insertion point
     * (RocksDB keeps a sequential-insert splice), which is much cheaper than
     * random-order inserts. Sort by key, then by arrival so that the last
     * operation on a key still wins. */
    if (n_ents) {
        qsort_r(ents, n_ents, sizeof *ents, cmp_states, arena.data);
        for (size_t i = 0; i < n_ents; i++) {
            const commit_ent_t *e = &ents[i];
            const char *k = (const char *)arena.data + e->koff;
            if (e->op != OP_DEL)
                rocksdb_writebatch_put_cf(wb, st->cf[CF_STATES], k, e->klen,
                                          (const char *)e->val, e->vlen);
            else
                rocksdb_writebatch_delete_cf(wb, st->cf[CF_STATES], k, e->klen);
        }
        /* The entities key is the states key without the partition. Only
         * the entries that write or delete an index row are sorted again (a
         * put_known one's row is already current: in steady state, most). */
        size_t n_idx = 0;
        for (size_t i = 0; i < n_ents; i++)
            if (ents[i].op != OP_PUT_KNOWN) ents[n_idx++] = ents[i];
        qsort_r(ents, n_idx, sizeof *ents, cmp_entities, arena.data);
        for (size_t i = 0; i < n_idx; i++) {
            const commit_ent_t *e = &ents[i];
            const unsigned char *k = arena.data + e->koff;
            sl_buf_reset(&kb);
            if (sl_buf_append(&kb, k, 8) || sl_buf_append(&kb, k + 12, e->klen - 12)) {
                rc = SL_ENOMEM;
                goto fail;
            }
            if (e->op == OP_PUT) {
                rocksdb_writebatch_put_cf(wb, st->cf[CF_ENTITIES], (const char *)kb.data, kb.len,
                                          (const char *)k + 8, 4);
            } else {
                rocksdb_writebatch_delete_cf(wb, st->cf[CF_ENTITIES], (const char *)kb.data,
                                             kb.len);
            }
        }
    }
    if (n_pend) {
        unsigned char nv[4];
        put_u32be(nv, next_id);
        rocksdb_writebatch_put_cf(wb, st->cf[CF_META], "N", 1, (const char *)nv, 4);
    }

    char *err = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rocksdb_write(st->db, st->wo_sync, wb, &err);
    if (err) {
        rc = rdb_error(err, SL_ESTATE, errstr, errsize, "state commit failed");
        rc = SL_ESTATE;
        goto fail;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    uint64_t us = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
    atomic_store_explicit(&st->commit_us_last, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->commit_us_total, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->batch_commits, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->commit_ops, n_ents, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->commit_bytes, b->log.len, memory_order_relaxed);

    /* Durable: now publish views and progress to readers. */
    if (n_pend) {
        pthread_rwlock_wrlock(&st->views_lock);
        for (size_t i = 0; i < n_pend; i++)
            if (view_add(st, pend[i].name, pend[i].id, pend[i].version)) rc = SL_ENOMEM;
        st->next_view_id = next_id;
        pthread_rwlock_unlock(&st->views_lock);
    }
    pthread_mutex_lock(&st->progress_mu);
    sl_reader_init(&r, b->log.data, b->log.len);
    while (r.left) {
        uint8_t op;
        sl_read_u8(&r, &op);
        if (op == OP_PROGRESS) {
            unsigned char hdr[20];
            const void *topic;
            size_t tl;
            sl_read_raw(&r, hdr, sizeof hdr);
            sl_read_bytes(&r, &topic, &tl);
            char t[256];
            memcpy(t, topic, tl);
            t[tl] = '\0';
            if (progress_set(st, t, (int32_t)get_u32be(hdr), (int64_t)sl_load_u64be(hdr + 4),
                             (int64_t)sl_load_u64be(hdr + 12)))
                rc = SL_ENOMEM;
        } else {
            const void *p;
            size_t n;
            unsigned char hdr[8];
            sl_read_raw(&r, hdr, sizeof hdr);
            sl_read_bytes(&r, &p, &n);
            sl_read_bytes(&r, &p, &n);
            if (op != OP_DEL) sl_read_bytes(&r, &p, &n);
        }
    }
    /* The commit counter moves before the new progress can be read (both
     * under progress_mu): a reader that took a token including this batch
     * then sees the new counter, so no cache tagged with the old counter can
     * answer it with older data. */
    atomic_fetch_add_explicit(&st->commits, 1, memory_order_release);
    pthread_mutex_unlock(&st->progress_mu);
    if (rc == SL_ENOMEM)
        seterr(errstr, errsize, "state committed, but out of memory updating the in-memory tables");
    state_batch_clear(b);
    goto out;

corrupt:
    seterr(errstr, errsize, "internal error: malformed batch log");
    rc = SL_ESTATE;
fail:
    atomic_fetch_add_explicit(&st->commit_failures, 1, memory_order_relaxed);
    if (rc != SL_ESTATE) {                   /* contract: SL_ESTATE, nothing applied */
        seterr(errstr, errsize, "state commit failed: %s", sl_strerror(rc));
        rc = SL_ESTATE;
    }
out:
    /* Keep the working memory for the next commit, unless this one was an
     * outlier (a first catch-up commit, a partition copy): then give it back. */
    {
        size_t wb_len = 0;
        rocksdb_writebatch_data(wb, &wb_len);
        if (wb_len > COMMIT_KEEP_BYTES) {
            rocksdb_writebatch_destroy(wb);
            st->commit_wb = NULL;
        } else {
            rocksdb_writebatch_clear(wb);
        }
        if (arena.cap > COMMIT_KEEP_BYTES / 8 || cap_ents * sizeof *ents > COMMIT_KEEP_BYTES / 8) {
            sl_buf_free(&arena);
            free(ents);
            ents = NULL;
            cap_ents = 0;
        }
        st->commit_arena = arena;
        st->commit_ents = ents;
        st->commit_cap_ents = cap_ents;
    }
    pthread_mutex_unlock(&st->commit_mu);
    free(pend);
    sl_buf_free(&kb);
    return rc;
}

int state_batch_commit(state_store_t *st, state_batch_t *b, char *errstr, size_t errsize)
{
    return batch_commit(st, b, NULL, 0, 0, errstr, errsize);
}

/* ---- checkpoint ---------------------------------------------------------- */

int state_checkpoint(state_store_t *st, const char *dir, char *errstr, size_t errsize)
{
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        seterr(errstr, errsize, "checkpoint target %s already exists", dir);
        return SL_EEXISTS;
    }
    char *err = NULL;
    rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(st->db, &err);
    if (err) return rdb_error(err, SL_ESTATE, errstr, errsize, "checkpoint");
    pthread_mutex_lock(&st->commit_mu);       /* no commit in the middle */
    rocksdb_checkpoint_create(cp, dir, 0, &err);
    pthread_mutex_unlock(&st->commit_mu);
    rocksdb_checkpoint_object_destroy(cp);
    if (err) {
        char what[4200];
        snprintf(what, sizeof what, "checkpoint into %s", dir);
        return rdb_error(err, SL_ESTATE, errstr, errsize, what);
    }
    return SL_OK;
}

/* ---- views --------------------------------------------------------------- */

int state_view_version_get(state_store_t *st, const char *view, uint32_t *version)
{
    uint32_t id;
    if (!view_resolve(st, view, 0, &id, version)) *version = 1;
    return SL_OK;
}

int state_view_version_set(state_store_t *st, const char *view, uint32_t version,
                           char *errstr, size_t errsize)
{
    if (st->read_only || !view || !*view || strlen(view) > 1000 || version == 0) {
        seterr(errstr, errsize, "invalid view version change");
        return SL_EINVAL;
    }
    int rc = SL_OK;
    sl_buf_t kb = SL_BUF_INIT;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    pthread_mutex_lock(&st->commit_mu);
    pthread_rwlock_rdlock(&st->views_lock);
    view_entry_t *ve = view_find(st, view);
    uint32_t id = ve ? ve->id : st->next_view_id;
    pthread_rwlock_unlock(&st->views_lock);
    unsigned char mv[8];
    view_meta_value(mv, id, version);
    if (sl_buf_put_u8(&kb, 'V') || sl_buf_append_str(&kb, view)) { rc = SL_ENOMEM; goto out; }
    rocksdb_writebatch_put_cf(wb, st->cf[CF_META], (const char *)kb.data, kb.len,
                              (const char *)mv, 8);
    if (!ve) {
        unsigned char nv[4];
        put_u32be(nv, id + 1);
        rocksdb_writebatch_put_cf(wb, st->cf[CF_META], "N", 1, (const char *)nv, 4);
    }
    char *err = NULL;
    rocksdb_write(st->db, st->wo_sync, wb, &err);
    if (err) { rc = rdb_error(err, SL_ESTATE, errstr, errsize, "view version"); goto out; }
    pthread_rwlock_wrlock(&st->views_lock);
    ve = view_find(st, view);
    if (ve) ve->version = version;
    else if (view_add(st, view, id, version) == SL_OK) st->next_view_id = id + 1;
    else rc = SL_ENOMEM;
    pthread_rwlock_unlock(&st->views_lock);
    atomic_fetch_add_explicit(&st->commits, 1, memory_order_release);
out:
    pthread_mutex_unlock(&st->commit_mu);
    rocksdb_writebatch_destroy(wb);
    sl_buf_free(&kb);
    return rc;
}

/* Adds deletes of the entities rows that point at `part` for every state in
 * [lo, hi) of the states CF (keys [id][ver][part][entity]). */
static int drop_index_rows(state_store_t *st, rocksdb_writebatch_t *wb,
                           const unsigned char *lo, size_t lol,
                           const unsigned char *hi, size_t hil, char *errstr, size_t errsize)
{
    int rc = SL_OK;
    sl_buf_t kb = SL_BUF_INIT;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, hil);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, ro, st->cf[CF_STATES]);
    for (rocksdb_iter_seek(it, (const char *)lo, lol); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t kl;
        const unsigned char *k = (const unsigned char *)rocksdb_iter_key(it, &kl);
        if (kl < 12) continue;
        uint32_t part = get_u32be(k + 8);
        if ((rc = key_build(&kb, get_u32be(k), get_u32be(k + 4), false, 0, k + 12, kl - 12)))
            break;
        sl_buf_t pv = SL_BUF_INIT;
        int g = get_into(st, CF_ENTITIES, kb.data, kb.len, &pv);
        if (g == SL_OK && pv.len == 4 && get_u32be(pv.data) == part)
            rocksdb_writebatch_delete_cf(wb, st->cf[CF_ENTITIES], (const char *)kb.data, kb.len);
        sl_buf_free(&pv);
        if (g != SL_OK && g != SL_ENOTFOUND) { rc = SL_ESTATE; break; }
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err) rc = rdb_error(err, SL_ESTATE, errstr, errsize, "scanning states");
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    sl_buf_free(&kb);
    return rc;
}

int state_view_version_drop(state_store_t *st, const char *view, uint32_t version,
                            char *errstr, size_t errsize)
{
    uint32_t id, cur;
    if (st->read_only || version == 0) {
        seterr(errstr, errsize, "invalid view version drop");
        return SL_EINVAL;
    }
    if (!view_resolve(st, view, 0, &id, &cur)) return SL_OK;
    if (version == cur) {
        seterr(errstr, errsize, "view %s: version %u is the serving version", view, version);
        return SL_EBUSY;
    }
    unsigned char lo[8], hi[8];
    put_u32be(lo, id);
    put_u32be(lo + 4, version);
    prefix_successor(lo, 8, hi);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    rocksdb_writebatch_delete_range_cf(wb, st->cf[CF_STATES], (const char *)lo, 8,
                                       (const char *)hi, 8);
    rocksdb_writebatch_delete_range_cf(wb, st->cf[CF_ENTITIES], (const char *)lo, 8,
                                       (const char *)hi, 8);
    char *err = NULL;
    int rc = SL_OK;
    pthread_mutex_lock(&st->commit_mu);
    rocksdb_write(st->db, st->wo_sync, wb, &err);
    pthread_mutex_unlock(&st->commit_mu);
    if (err) rc = rdb_error(err, SL_ESTATE, errstr, errsize, "view version drop");
    rocksdb_writebatch_destroy(wb);
    return rc;
}

/* ---- iteration and partition drop ---------------------------------------- */

int state_iterate(state_store_t *st, const char *view, uint32_t version, int32_t partition,
                  state_iter_fn fn, void *arg)
{
    uint32_t id, ver;
    if (!view || partition < -1 || !fn) return SL_EINVAL;
    if (!view_resolve(st, view, version, &id, &ver)) return SL_OK;
    unsigned char lo[12], hi[12];
    size_t n = partition < 0 ? 8 : 12;
    put_u32be(lo, id);
    put_u32be(lo + 4, ver);
    put_u32be(lo + 8, (uint32_t)partition);
    prefix_successor(lo, n, hi);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, n);
    rocksdb_readoptions_set_fill_cache(ro, 0);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, ro, st->cf[CF_STATES]);
    int rc = SL_OK;
    for (rocksdb_iter_seek(it, (const char *)lo, n); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t kl, vl;
        const unsigned char *k = (const unsigned char *)rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (kl < 12) { rc = SL_ESTATE; break; }
        if ((rc = fn(arg, (int32_t)get_u32be(k + 8), k + 12, kl - 12, v, vl))) break;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err) { rocksdb_free(err); rc = SL_ESTATE; }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    return rc;
}

int state_partition_drop(state_store_t *st, const char *topic, int32_t partition,
                         const char *const *views, size_t n_views,
                         char *errstr, size_t errsize)
{
    if (st->read_only || !topic || partition < 0) {
        seterr(errstr, errsize, "invalid partition drop");
        return SL_EINVAL;
    }
    int rc = SL_OK;
    sl_buf_t kb = SL_BUF_INIT;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    pthread_mutex_lock(&st->commit_mu);
    if ((rc = drop_partition_ops(st, wb, views, n_views, partition, errstr, errsize))) goto out;
    if ((rc = progress_key(&kb, topic, (uint32_t)partition))) goto out;
    rocksdb_writebatch_delete_cf(wb, st->cf[CF_META], (const char *)kb.data, kb.len);
    char *err = NULL;
    rocksdb_write(st->db, st->wo_sync, wb, &err);
    if (err) { rc = rdb_error(err, SL_ESTATE, errstr, errsize, "partition drop"); goto out; }
    pthread_mutex_lock(&st->progress_mu);
    state_partition_progress_t *p = progress_find(st, topic, partition);
    if (p) *p = st->progress[--st->n_progress];
    atomic_fetch_add_explicit(&st->commits, 1, memory_order_release);   /* see commit */
    pthread_mutex_unlock(&st->progress_mu);
out:
    pthread_mutex_unlock(&st->commit_mu);
    rocksdb_writebatch_destroy(wb);
    sl_buf_free(&kb);
    return rc;
}

/* ---- partition copy -------------------------------------------------------- */

typedef struct copy_ctx {
    state_batch_t *b;
    const char *view;
    int rc;
} copy_ctx_t;

static int copy_cb(void *arg, int32_t part, const void *key, size_t klen, const void *val,
                   size_t vlen)
{
    copy_ctx_t *c = arg;
    c->rc = state_batch_put(c->b, c->view, part, key, klen, val, vlen);
    return c->rc;
}

int state_partition_copy(state_store_t *dst, state_store_t *src, const char *topic,
                         int32_t partition, const char *const *views, size_t n_views,
                         char *errstr, size_t errsize)
{
    if (!dst || !src || dst == src || !topic || partition < 0) {
        seterr(errstr, errsize, "invalid partition copy");
        return SL_EINVAL;
    }
    int64_t off, wm;
    if (state_offset_get(src, topic, partition, &off, &wm) != SL_OK) {
        seterr(errstr, errsize, "%s holds no progress for %s[%d]", src->dir, topic, partition);
        return SL_ENOTFOUND;
    }
    state_batch_t *b = state_batch_new();
    if (!b) return SL_ENOMEM;
    int rc = SL_OK;
    for (size_t i = 0; i < n_views && !rc; i++) {
        copy_ctx_t c = { b, views[i], SL_OK };
        rc = state_iterate(src, views[i], 0, partition, copy_cb, &c);
        if (rc) {
            seterr(errstr, errsize, "reading %s[%d] of view %s from %s: %s", topic, partition,
                   views[i], src->dir, sl_strerror(rc));
            rc = c.rc ? c.rc : SL_ESTATE;
        }
    }
    if (!rc && (rc = state_batch_progress(b, topic, partition, off, wm)))
        seterr(errstr, errsize, "partition copy: %s", sl_strerror(rc));
    if (!rc) rc = batch_commit(dst, b, views, n_views, partition, errstr, errsize);
    state_batch_free(b);
    return rc;
}

/* ---- stats ----------------------------------------------------------------- */

static uint64_t prop_sum(state_store_t *st, const char *name, int only_cf)
{
    uint64_t total = 0, v;
    for (int i = 0; i < CF__COUNT; i++) {
        if (only_cf >= 0 && i != only_cf) continue;
        if (rocksdb_property_int_cf(st->db, st->cf[i], name, &v) == 0) total += v;
    }
    return total;
}

void state_stats(state_store_t *st, state_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->commits = atomic_load_explicit(&st->batch_commits, memory_order_relaxed);
    out->commit_failures = atomic_load_explicit(&st->commit_failures, memory_order_relaxed);
    out->commit_ops = atomic_load_explicit(&st->commit_ops, memory_order_relaxed);
    out->commit_bytes = atomic_load_explicit(&st->commit_bytes, memory_order_relaxed);
    out->commit_us_total = atomic_load_explicit(&st->commit_us_total, memory_order_relaxed);
    out->commit_us_last = atomic_load_explicit(&st->commit_us_last, memory_order_relaxed);
    out->est_states = prop_sum(st, "rocksdb.estimate-num-keys", CF_STATES);
    out->sst_bytes = prop_sum(st, "rocksdb.live-sst-files-size", -1);
    out->memtable_bytes = prop_sum(st, "rocksdb.cur-size-all-mem-tables", -1);
    out->pending_compaction_bytes = prop_sum(st, "rocksdb.estimate-pending-compaction-bytes", -1);
    out->block_cache_bytes = st->cache ? rocksdb_cache_get_usage(st->cache) : 0;
}
