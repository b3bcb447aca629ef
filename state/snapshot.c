/*
 * snapshot.c — snapshots of the state store (see snapshot.h).
 *
 * Life of a snapshot directory:
 *
 *   create:  .tmp-<name>-<pid>/db        <- state_checkpoint
 *            .tmp-<name>-<pid>/manifest.json (progress read back from db/)
 *            rename -> <name>/           (atomic publish; fsync of the parent)
 *   delete:  <name>/ rename -> .del-<name>-<pid>/ -> removed recursively
 *   restore: <state_dir>/sluice.lock held, sluice.restoring written,
 *            files of <name>/db copied (SSTs hard-linked when possible),
 *            fsynced, marker removed, restored store opened and checked.
 *
 * Hidden entries (".tmp-", ".del-") are ignored by list, so an interrupted
 * create or delete never shows up as a snapshot. The manifest is JSON
 * (cJSON); int64 values beyond +-2^53 are written as decimal strings so a
 * double never rounds an offset or a watermark.
 *
 * RocksDB writes an info LOG file whenever a directory is opened, even read
 * only, so LOG* files are not part of the manifest's file list.
 */
#define _GNU_SOURCE
#include "snapshot.h"
#include "state_int.h"
#include "sl_err.h"

#include <cJSON.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "unknown"
#endif

#define MANIFEST "manifest.json"
#define MANIFEST_FORMAT 1
#define PATH_SZ 4096

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

/* snprintf for paths: on truncation the result is "" so that the file
 * operation fails (ENOENT) instead of touching a different, shorter path. */
static void pathf(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void pathf(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) out[0] = '\0';
}

bool state_snapshot_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > STATE_SNAPSHOT_NAME_MAX || name[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool is_log_file(const char *name)
{
    return strncmp(name, "LOG", 3) == 0;
}

/* ---- files --------------------------------------------------------------- */

static int fsync_path(const char *path, bool dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_file_synced(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) { close(fd); return -1; }
    return close(fd);
}

static int copy_file(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -1;
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) { close(in); return -1; }
    char buf[1 << 16];
    int rc = 0;
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { rc = -1; break; }
        if (r == 0) break;
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) { rc = -1; break; }
            off += w;
        }
        if (rc) break;
    }
    if (rc == 0 && fsync(out) != 0) rc = -1;
    int e = errno;
    close(in);
    if (close(out) != 0 && rc == 0) rc = -1;
    errno = e;
    return rc;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static int rm_rf(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Sum of the sizes of the regular files directly in dir (LOG* excluded). */
static uint64_t dir_size(const char *dir)
{
    uint64_t total = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || is_log_file(de->d_name)) continue;
        char p[PATH_SZ];
        struct stat sb;
        pathf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) total += (uint64_t)sb.st_size;
    }
    closedir(d);
    return total;
}

/* ---- JSON helpers -------------------------------------------------------- */

static bool json_add_i64(cJSON *obj, const char *name, int64_t v)
{
    const int64_t exact = (int64_t)1 << 53;
    if (v > -exact && v < exact) return cJSON_AddNumberToObject(obj, name, (double)v) != NULL;
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return cJSON_AddStringToObject(obj, name, buf) != NULL;
}

static bool json_get_i64(const cJSON *obj, const char *name, int64_t *v)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsNumber(it)) {
        double d = it->valuedouble;
        if (d != d || d < -9007199254740992.0 || d > 9007199254740992.0 || d != (double)(int64_t)d)
            return false;
        *v = (int64_t)d;
        return true;
    }
    if (cJSON_IsString(it) && it->valuestring[0]) {
        char *end;
        errno = 0;
        long long x = strtoll(it->valuestring, &end, 10);
        if (errno || *end) return false;
        *v = x;
        return true;
    }
    return false;
}

static bool json_get_str(const cJSON *obj, const char *name, char *out, size_t size)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsString(it) || strlen(it->valuestring) >= size) return false;
    snprintf(out, size, "%s", it->valuestring);
    return true;
}

/* ---- info ---------------------------------------------------------------- */

void state_snapshot_info_free(state_snapshot_info_t *info)
{
    if (!info) return;
    free(info->partitions);
    info->partitions = NULL;
    info->n_partitions = 0;
}

void state_snapshot_list_free(state_snapshot_info_t *list, size_t n)
{
    for (size_t i = 0; i < n; i++) state_snapshot_info_free(&list[i]);
    free(list);
}

static int info_fail(state_snapshot_info_t *info, int rc, char *errstr, size_t errsize,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int info_fail(state_snapshot_info_t *info, int rc, char *errstr, size_t errsize,
                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(info->error, sizeof info->error, fmt, ap);
    va_end(ap);
    info->valid = false;
    seterr(errstr, errsize, "%s", info->error);
    return rc;
}

static int parse_manifest(const char *text, size_t len, const char *name,
                          state_snapshot_info_t *info, cJSON **files_out,
                          char *errstr, size_t errsize)
{
    cJSON *root = cJSON_ParseWithLength(text, len);
    int rc = SL_ECORRUPT;
    if (!root || !cJSON_IsObject(root)) {
        info_fail(info, rc, errstr, errsize, "snapshot %s: %s is not valid JSON", name, MANIFEST);
        goto out;
    }
    int64_t fmt;
    if (!json_get_i64(root, "format", &fmt)) {
        info_fail(info, rc, errstr, errsize, "snapshot %s: %s has no \"format\"", name, MANIFEST);
        goto out;
    }
    if (fmt > MANIFEST_FORMAT || fmt < 1) {
        rc = info_fail(info, SL_EVERSION, errstr, errsize,
                       "snapshot %s: manifest format %" PRId64 " (this build reads %d)", name,
                       fmt, MANIFEST_FORMAT);
        goto out;
    }
    char mname[STATE_SNAPSHOT_NAME_MAX + 1];
    int64_t size;
    const char *bad = NULL;
    if (!json_get_str(root, "name", mname, sizeof mname)) bad = "name";
    else if (!json_get_i64(root, "created_ms", &info->created_ms)) bad = "created_ms";
    else if (!json_get_str(root, "kind", info->kind, sizeof info->kind)) bad = "kind";
    else if (!json_get_str(root, "sluice_version", info->sluice_version,
                           sizeof info->sluice_version)) bad = "sluice_version";
    else if (!json_get_str(root, "schema_fingerprint", info->schema_fingerprint,
                           sizeof info->schema_fingerprint)) bad = "schema_fingerprint";
    else if (!json_get_i64(root, "size_bytes", &size) || size < 0) bad = "size_bytes";
    if (bad) {
        info_fail(info, rc, errstr, errsize, "snapshot %s: %s: field \"%s\" missing or invalid",
                  name, MANIFEST, bad);
        goto out;
    }
    if (strcmp(mname, name) != 0) {
        info_fail(info, rc, errstr, errsize, "snapshot %s: %s names snapshot \"%s\"", name,
                  MANIFEST, mname);
        goto out;
    }
    info->size_bytes = (uint64_t)size;
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(root, "partitions");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    if (!cJSON_IsArray(parts) || !cJSON_IsArray(files)) {
        info_fail(info, rc, errstr, errsize, "snapshot %s: %s: \"partitions\" or \"files\" "
                  "missing", name, MANIFEST);
        goto out;
    }
    int np = cJSON_GetArraySize(parts);
    if (np > 0 && !(info->partitions = calloc((size_t)np, sizeof *info->partitions))) {
        rc = SL_ENOMEM;
        goto out;
    }
    const cJSON *p;
    size_t i = 0;
    cJSON_ArrayForEach(p, parts) {
        state_partition_progress_t *pp = &info->partitions[i];
        int64_t part;
        if (!cJSON_IsObject(p) || !json_get_str(p, "topic", pp->topic, sizeof pp->topic) ||
            !pp->topic[0] || !json_get_i64(p, "partition", &part) || part < 0 ||
            part > INT32_MAX || !json_get_i64(p, "next_offset", &pp->next_offset) ||
            !json_get_i64(p, "watermark_ms", &pp->watermark_ms)) {
            info_fail(info, rc, errstr, errsize, "snapshot %s: %s: partitions[%zu] malformed",
                      name, MANIFEST, i);
            goto out;
        }
        pp->partition = (int32_t)part;
        i++;
    }
    info->n_partitions = i;
    const cJSON *f;
    i = 0;
    cJSON_ArrayForEach(f, files) {
        char fname[256];
        int64_t fsz;
        if (!cJSON_IsObject(f) || !json_get_str(f, "name", fname, sizeof fname) ||
            !fname[0] || strchr(fname, '/') || fname[0] == '.' ||
            !json_get_i64(f, "size", &fsz) || fsz < 0) {
            info_fail(info, rc, errstr, errsize, "snapshot %s: %s: files[%zu] malformed",
                      name, MANIFEST, i);
            goto out;
        }
        i++;
    }
    info->valid = true;
    rc = SL_OK;
    if (files_out) {
        *files_out = cJSON_DetachItemFromObjectCaseSensitive(root, "files");
    }
out:
    cJSON_Delete(root);
    return rc;
}

static int read_manifest(const char *snapshot_dir, const char *name,
                         state_snapshot_info_t *info, cJSON **files_out,
                         char *errstr, size_t errsize)
{
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", name ? name : "");
    if (!state_snapshot_name_valid(name))
        return info_fail(info, SL_EINVAL, errstr, errsize, "invalid snapshot name \"%s\"",
                         name ? name : "");
    char path[PATH_SZ];
    struct stat sb;
    pathf(path, sizeof path, "%s/%s", snapshot_dir, name);
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return info_fail(info, SL_ENOTFOUND, errstr, errsize, "no snapshot \"%s\" in %s", name,
                         snapshot_dir);
    char db[PATH_SZ];
    pathf(db, sizeof db, "%s/%s/db", snapshot_dir, name);
    info->size_bytes = dir_size(db);
    pathf(path, sizeof path, "%s/%s/%s", snapshot_dir, name, MANIFEST);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return info_fail(info, SL_ECORRUPT, errstr, errsize, "snapshot %s: cannot read %s: %s",
                         name, MANIFEST, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (64u << 20)) break;          /* a manifest is small */
            char *t = realloc(text, cap);
            if (!t) { free(text); fclose(fp); return SL_ENOMEM; }
            text = t;
        }
        size_t r = fread(text + len, 1, cap - len, fp);
        len += r;
        if (r == 0) break;
    }
    fclose(fp);
    int rc = parse_manifest(text ? text : "", len, name, info, files_out, errstr, errsize);
    free(text);
    return rc;
}

int state_snapshot_read(const char *snapshot_dir, const char *name,
                        state_snapshot_info_t *info, char *errstr, size_t errsize)
{
    return read_manifest(snapshot_dir, name, info, NULL, errstr, errsize);
}

/* Compares the progress stored in the checkpoint at db with the manifest's. */
static int check_db_progress(const char *db, state_snapshot_info_t *info,
                             char *errstr, size_t errsize)
{
    state_store_t *st = NULL;
    state_options_t ro = { .read_only = true, .block_cache_bytes = 8u << 20 };
    char err[1024] = "";
    int rc = state_open(db, &ro, &st, err, sizeof err);
    if (rc)
        return info_fail(info, rc == SL_ENOTFOUND ? SL_ECORRUPT : rc, errstr, errsize,
                         "snapshot %s: checkpoint does not open: %s", info->name, err);
    size_t n = state_progress(st, NULL, 0);
    rc = SL_OK;
    if (n != info->n_partitions) {
        rc = info_fail(info, SL_ECORRUPT, errstr, errsize,
                       "snapshot %s: manifest lists %zu partitions, checkpoint holds %zu",
                       info->name, info->n_partitions, n);
    } else {
        for (size_t i = 0; i < n && !rc; i++) {
            const state_partition_progress_t *m = &info->partitions[i];
            int64_t off, wm;
            if (state_offset_get(st, m->topic, m->partition, &off, &wm) != SL_OK ||
                off != m->next_offset || wm != m->watermark_ms)
                rc = info_fail(info, SL_ECORRUPT, errstr, errsize,
                               "snapshot %s: manifest progress of %s[%d] does not match the "
                               "checkpoint", info->name, m->topic, m->partition);
        }
    }
    state_close(st);
    return rc;
}

int state_snapshot_verify(const char *snapshot_dir, const char *name,
                          state_snapshot_info_t *info, char *errstr, size_t errsize)
{
    cJSON *files = NULL;
    int rc = read_manifest(snapshot_dir, name, info, &files, errstr, errsize);
    if (rc) return rc;
    const cJSON *f;
    cJSON_ArrayForEach(f, files) {
        char fname[256], path[PATH_SZ];
        int64_t size;
        json_get_str(f, "name", fname, sizeof fname);
        json_get_i64(f, "size", &size);
        pathf(path, sizeof path, "%s/%s/db/%s", snapshot_dir, name, fname);
        struct stat sb;
        if (stat(path, &sb) != 0) {
            rc = info_fail(info, SL_ECORRUPT, errstr, errsize, "snapshot %s: file db/%s is "
                           "missing", name, fname);
            goto out;
        }
        if ((int64_t)sb.st_size != size) {
            rc = info_fail(info, SL_ECORRUPT, errstr, errsize, "snapshot %s: file db/%s has "
                           "%lld bytes, manifest says %" PRId64, name, fname,
                           (long long)sb.st_size, size);
            goto out;
        }
    }
    char db[PATH_SZ];
    pathf(db, sizeof db, "%s/%s/db", snapshot_dir, name);
    rc = check_db_progress(db, info, errstr, errsize);
out:
    cJSON_Delete(files);
    return rc;
}

/* ---- create -------------------------------------------------------------- */

static void utc_stamp(int64_t ms, char *out, size_t size, bool with_ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (with_ms)
        snprintf(out, size, "%04d%02d%02d-%02d%02d%02d-%03d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    else
        snprintf(out, size, "%04d%02d%02d-%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void rfc3339(int64_t ms, char *out, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Builds the manifest of the checkpoint in tmp/db into tmp/manifest.json. */
static int write_manifest(const char *tmp, const char *name, const char *kind,
                          int64_t created_ms, const char *fingerprint,
                          state_snapshot_info_t *info, char *errstr, size_t errsize)
{
    int rc = SL_ENOMEM;
    char db[PATH_SZ], path[PATH_SZ];
    pathf(db, sizeof db, "%s/db", tmp);
    state_store_t *st = NULL;
    state_options_t ro = { .read_only = true, .block_cache_bytes = 8u << 20 };
    char err[1024] = "";
    DIR *d = NULL;
    char *text = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) goto out;
    if ((rc = state_open(db, &ro, &st, err, sizeof err))) {
        seterr(errstr, errsize, "snapshot %s: cannot read back the checkpoint: %s", name, err);
        goto out;
    }
    size_t n = state_progress(st, NULL, 0);
    memset(info, 0, sizeof *info);
    rc = SL_ENOMEM;
    if (n && !(info->partitions = calloc(n, sizeof *info->partitions))) goto out;
    info->n_partitions = state_progress(st, info->partitions, n);
    state_close(st);
    st = NULL;
    snprintf(info->name, sizeof info->name, "%s", name);
    info->valid = true;
    info->created_ms = created_ms;
    snprintf(info->kind, sizeof info->kind, "%s", kind);
    snprintf(info->sluice_version, sizeof info->sluice_version, "%s", SLUICE_VERSION);
    snprintf(info->schema_fingerprint, sizeof info->schema_fingerprint, "%s", fingerprint);

    char created[40];
    rfc3339(created_ms, created, sizeof created);
    cJSON *parts, *files;
    if (!json_add_i64(root, "format", MANIFEST_FORMAT) ||
        !cJSON_AddStringToObject(root, "name", name) ||
        !cJSON_AddStringToObject(root, "kind", kind) ||
        !cJSON_AddStringToObject(root, "created", created) ||
        !json_add_i64(root, "created_ms", created_ms) ||
        !cJSON_AddStringToObject(root, "sluice_version", SLUICE_VERSION) ||
        !cJSON_AddStringToObject(root, "schema_fingerprint", fingerprint) ||
        !(parts = cJSON_AddArrayToObject(root, "partitions")))
        goto out;
    for (size_t i = 0; i < info->n_partitions; i++) {
        const state_partition_progress_t *p = &info->partitions[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) goto out;
        cJSON_AddItemToArray(parts, o);
        if (!cJSON_AddStringToObject(o, "topic", p->topic) ||
            !json_add_i64(o, "partition", p->partition) ||
            !json_add_i64(o, "next_offset", p->next_offset) ||
            !json_add_i64(o, "watermark_ms", p->watermark_ms))
            goto out;
    }
    if (!(files = cJSON_AddArrayToObject(root, "files"))) goto out;
    uint64_t total = 0;
    if (!(d = opendir(db))) {
        rc = SL_EIO;
        seterr(errstr, errsize, "snapshot %s: cannot list %s: %s", name, db, strerror(errno));
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || is_log_file(de->d_name)) continue;
        struct stat sb;
        pathf(path, sizeof path, "%s/%s", db, de->d_name);
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        cJSON *o = cJSON_CreateObject();
        if (!o) goto out;
        cJSON_AddItemToArray(files, o);
        if (!cJSON_AddStringToObject(o, "name", de->d_name) ||
            !json_add_i64(o, "size", (int64_t)sb.st_size))
            goto out;
        total += (uint64_t)sb.st_size;
    }
    info->size_bytes = total;
    if (!json_add_i64(root, "size_bytes", (int64_t)total)) goto out;
    if (!(text = cJSON_Print(root))) goto out;
    pathf(path, sizeof path, "%s/%s", tmp, MANIFEST);
    size_t tl = strlen(text);
    char *nl = realloc(text, tl + 2);
    if (!nl) goto out;
    text = nl;
    text[tl++] = '\n';
    text[tl] = '\0';
    if (write_file_synced(path, text, tl) != 0) {
        rc = SL_EIO;
        seterr(errstr, errsize, "snapshot %s: cannot write %s: %s", name, path, strerror(errno));
        goto out;
    }
    rc = SL_OK;
out:
    if (rc == SL_ENOMEM) seterr(errstr, errsize, "snapshot %s: out of memory", name);
    if (d) closedir(d);
    if (st) state_close(st);
    free(text);
    cJSON_Delete(root);
    return rc;
}

/* Removes ".tmp-NAME-PID" / ".del-NAME-PID" left by a process that died
 * mid-create or mid-delete (PID no longer alive). */
static void sweep_debris(const char *snapshot_dir)
{
    DIR *d = opendir(snapshot_dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, ".tmp-", 5) != 0 && strncmp(de->d_name, ".del-", 5) != 0)
            continue;
        const char *dash = strrchr(de->d_name, '-');
        char *end;
        long pid = dash ? strtol(dash + 1, &end, 10) : 0;
        if (pid <= 0 || *end || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char p[PATH_SZ];
        pathf(p, sizeof p, "%s/%s", snapshot_dir, de->d_name);
        if (p[0]) rm_rf(p);
    }
    closedir(d);
}

static int snapshot_create(state_store_t *st, const char *snapshot_dir, const char *name,
                           const char *kind, const char *fingerprint,
                           state_snapshot_info_t *info_out, char *errstr, size_t errsize)
{
    int rc;
    char tmp[PATH_SZ], final[PATH_SZ], db[PATH_SZ];
    sl_buf_t fp = SL_BUF_INIT;
    state_snapshot_info_t info;
    memset(&info, 0, sizeof info);
    if (!state_snapshot_name_valid(name)) {
        seterr(errstr, errsize, "invalid snapshot name \"%s\" (use letters, digits, '.', '_', "
               "'-'; at most %d)", name, STATE_SNAPSHOT_NAME_MAX);
        return SL_EINVAL;
    }
    if ((rc = state__mkdir_p(snapshot_dir, errstr, errsize))) return rc;
    sweep_debris(snapshot_dir);
    pathf(final, sizeof final, "%s/%s", snapshot_dir, name);
    pathf(tmp, sizeof tmp, "%s/.tmp-%s-%ld", snapshot_dir, name, (long)getpid());
    pathf(db, sizeof db, "%s/db", tmp);
    struct stat sb;
    if (lstat(final, &sb) == 0) {
        seterr(errstr, errsize, "snapshot \"%s\" already exists in %s", name, snapshot_dir);
        return SL_EEXISTS;
    }
    if (rm_rf(tmp) != 0 || mkdir(tmp, 0700) != 0) {
        seterr(errstr, errsize, "cannot create %s: %s", tmp, strerror(errno));
        return SL_EIO;
    }
    if (fingerprint) {
        if (state_meta_put(st, STATE_META_SCHEMA_FINGERPRINT, fingerprint,
                           strlen(fingerprint)) != SL_OK) {
            seterr(errstr, errsize, "snapshot %s: cannot store the schema fingerprint", name);
            rc = SL_ESTATE;
            goto fail;
        }
    } else {
        int g = state_meta_get(st, STATE_META_SCHEMA_FINGERPRINT, &fp);
        if (g != SL_OK && g != SL_ENOTFOUND) {
            seterr(errstr, errsize, "snapshot %s: cannot read the schema fingerprint", name);
            rc = SL_ESTATE;
            goto fail;
        }
        if (sl_buf_append(&fp, "", 1)) { rc = SL_ENOMEM; goto fail; }
        fingerprint = (const char *)fp.data;
    }
    int64_t created = now_ms();
    if ((rc = state_checkpoint(st, db, errstr, errsize))) goto fail;
    if ((rc = write_manifest(tmp, name, kind, created, fingerprint, &info, errstr, errsize)))
        goto fail;
    if (fsync_path(tmp, true) != 0 || rename(tmp, final) != 0) {
        seterr(errstr, errsize, "cannot publish snapshot %s: %s", final, strerror(errno));
        rc = errno == EEXIST || errno == ENOTEMPTY ? SL_EEXISTS : SL_EIO;
        goto fail;
    }
    fsync_path(snapshot_dir, true);
    if (info_out) *info_out = info;
    else state_snapshot_info_free(&info);
    sl_buf_free(&fp);
    return SL_OK;
fail:
    state_snapshot_info_free(&info);
    rm_rf(tmp);
    sl_buf_free(&fp);
    return rc;
}

int state_snapshot_create(state_store_t *st, const char *snapshot_dir, const char *name,
                          const char *schema_fingerprint, state_snapshot_info_t *info,
                          char *errstr, size_t errsize)
{
    char def[64];
    if (!name) {
        char stamp[32];
        utc_stamp(now_ms(), stamp, sizeof stamp, false);
        snprintf(def, sizeof def, "snap-%s", stamp);
        name = def;
    }
    return snapshot_create(st, snapshot_dir, name, "manual", schema_fingerprint, info,
                           errstr, errsize);
}

/* ---- list / delete / periodic -------------------------------------------- */

static int info_cmp(const void *a, const void *b)
{
    const state_snapshot_info_t *x = a, *y = b;
    if (x->created_ms != y->created_ms) return x->created_ms < y->created_ms ? -1 : 1;
    return strcmp(x->name, y->name);
}

int state_snapshot_list(const char *snapshot_dir, state_snapshot_info_t **out, size_t *n,
                        char *errstr, size_t errsize)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(snapshot_dir);
    if (!d) {
        if (errno == ENOENT) return SL_OK;
        seterr(errstr, errsize, "cannot list %s: %s", snapshot_dir, strerror(errno));
        return SL_EIO;
    }
    state_snapshot_info_t *list = NULL;
    size_t cnt = 0, cap = 0;
    int rc = SL_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[PATH_SZ];
        struct stat sb;
        pathf(path, sizeof path, "%s/%s", snapshot_dir, de->d_name);
        if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            state_snapshot_info_t *nl = realloc(list, nc * sizeof *nl);
            if (!nl) { rc = SL_ENOMEM; break; }
            list = nl;
            cap = nc;
        }
        state_snapshot_info_t *info = &list[cnt++];
        int r = read_manifest(snapshot_dir, de->d_name, info, NULL, NULL, 0);
        if (r == SL_ENOMEM) { rc = r; break; }
        if (r != SL_OK) info->created_ms = (int64_t)sb.st_mtime * 1000;
    }
    closedir(d);
    if (rc) {
        state_snapshot_list_free(list, cnt);
        seterr(errstr, errsize, "listing %s: out of memory", snapshot_dir);
        return rc;
    }
    if (cnt) qsort(list, cnt, sizeof *list, info_cmp);
    *out = list;
    *n = cnt;
    return SL_OK;
}

int state_snapshot_delete(const char *snapshot_dir, const char *name,
                          char *errstr, size_t errsize)
{
    if (!state_snapshot_name_valid(name)) {
        seterr(errstr, errsize, "invalid snapshot name \"%s\"", name ? name : "");
        return SL_EINVAL;
    }
    char path[PATH_SZ], del[PATH_SZ];
    pathf(path, sizeof path, "%s/%s", snapshot_dir, name);
    pathf(del, sizeof del, "%s/.del-%s-%ld", snapshot_dir, name, (long)getpid());
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        seterr(errstr, errsize, "no snapshot \"%s\" in %s", name, snapshot_dir);
        return SL_ENOTFOUND;
    }
    rm_rf(del);
    if (rename(path, del) != 0 || rm_rf(del) != 0) {
        seterr(errstr, errsize, "cannot delete snapshot %s: %s", path, strerror(errno));
        return SL_EIO;
    }
    fsync_path(snapshot_dir, true);
    return SL_OK;
}

int state_snapshot_periodic(state_store_t *st, const char *snapshot_dir, int retain,
                            const char *schema_fingerprint, char *created_name,
                            size_t created_size, char *errstr, size_t errsize)
{
    if (retain < 1) {
        seterr(errstr, errsize, "snapshot retention must be at least 1 (got %d)", retain);
        return SL_EINVAL;
    }
    char name[64], stamp[32];
    int64_t now = now_ms();
    utc_stamp(now, stamp, sizeof stamp, true);
    snprintf(name, sizeof name, "auto-%s", stamp);
    int rc = snapshot_create(st, snapshot_dir, name, "periodic", schema_fingerprint, NULL,
                             errstr, errsize);
    for (int k = 1; rc == SL_EEXISTS && k < 100; k++) {     /* two in one millisecond */
        snprintf(name, sizeof name, "auto-%s-%d", stamp, k);
        rc = snapshot_create(st, snapshot_dir, name, "periodic", schema_fingerprint, NULL,
                             errstr, errsize);
    }
    if (rc) return rc;
    if (created_name) snprintf(created_name, created_size, "%s", name);

    state_snapshot_info_t *list;
    size_t n;
    if ((rc = state_snapshot_list(snapshot_dir, &list, &n, errstr, errsize))) return rc;
    size_t periodic = 0;
    for (size_t i = 0; i < n; i++)
        periodic += list[i].valid && strcmp(list[i].kind, "periodic") == 0;
    /* oldest first: delete until `retain` periodic snapshots remain */
    for (size_t i = 0; i < n && periodic > (size_t)retain; i++) {
        if (!list[i].valid || strcmp(list[i].kind, "periodic") != 0) continue;
        if (strcmp(list[i].name, name) == 0) continue;
        int d = state_snapshot_delete(snapshot_dir, list[i].name, errstr, errsize);
        if (d) { rc = d; break; }
        periodic--;
    }
    state_snapshot_list_free(list, n);
    return rc;
}

/* ---- restore ------------------------------------------------------------- */

/* Is dir empty but for our lock file and an interrupted restore's files?
 * Returns 1 empty/restorable, 0 holds data, -1 error. */
static int dir_restorable(const char *dir)
{
    char mark[PATH_SZ];
    pathf(mark, sizeof mark, "%s/%s", dir, STATE_RESTORE_MARK);
    if (access(mark, F_OK) == 0) return 1;          /* interrupted restore: redo */
    DIR *d = opendir(dir);
    if (!d) return -1;
    int empty = 1;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            !strcmp(de->d_name, STATE_LOCK_FILE))
            continue;
        empty = 0;
        break;
    }
    closedir(d);
    return empty;
}

/* Removes everything in dir except the lock file. */
static int dir_clear(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            !strcmp(de->d_name, STATE_LOCK_FILE) || !strcmp(de->d_name, STATE_RESTORE_MARK))
            continue;
        char p[PATH_SZ];
        pathf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (rm_rf(p) != 0) rc = -1;
    }
    closedir(d);
    return rc;
}

int state_snapshot_restore(const char *snapshot_dir, const char *name, const char *state_dir,
                           char *errstr, size_t errsize)
{
    state_snapshot_info_t info;
    int rc = state_snapshot_verify(snapshot_dir, name, &info, errstr, errsize);
    if (rc) {
        state_snapshot_info_free(&info);
        return rc;
    }
    int lock_fd = -1;
    DIR *d = NULL;
    char src[PATH_SZ], mark[PATH_SZ];
    pathf(src, sizeof src, "%s/%s/db", snapshot_dir, name);
    pathf(mark, sizeof mark, "%s/%s", state_dir, STATE_RESTORE_MARK);

    if ((rc = state_dir_check_unlocked(state_dir, errstr, errsize))) goto out;
    struct stat sb;
    if (stat(state_dir, &sb) == 0) {
        int r = dir_restorable(state_dir);
        if (r != 1) {
            seterr(errstr, errsize, r == 0 ? "state dir %s is not empty: restore needs an "
                   "empty or absent directory" : "cannot read state dir %s", state_dir);
            rc = r == 0 ? SL_EEXISTS : SL_EIO;
            goto out;
        }
    }
    if ((rc = state__mkdir_p(state_dir, errstr, errsize))) goto out;
    if ((lock_fd = state__dir_lock(state_dir, errstr, errsize)) < 0) {
        rc = lock_fd;
        goto out;
    }
    if (write_file_synced(mark, name, strlen(name)) != 0 || fsync_path(state_dir, true) != 0) {
        seterr(errstr, errsize, "cannot write %s: %s", mark, strerror(errno));
        rc = SL_EIO;
        goto out;
    }
    if (dir_clear(state_dir) != 0) {
        seterr(errstr, errsize, "cannot clear %s: %s", state_dir, strerror(errno));
        rc = SL_EIO;
        goto out;
    }
    if (!(d = opendir(src))) {
        seterr(errstr, errsize, "cannot list %s: %s", src, strerror(errno));
        rc = SL_EIO;
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || is_log_file(de->d_name)) continue;
        char from[PATH_SZ], to[PATH_SZ];
        pathf(from, sizeof from, "%s/%s", src, de->d_name);
        pathf(to, sizeof to, "%s/%s", state_dir, de->d_name);
        if (stat(from, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        size_t nl = strlen(de->d_name);
        bool sst = nl > 4 && strcmp(de->d_name + nl - 4, ".sst") == 0;
        /* SSTs are immutable: share them; everything else RocksDB may append to */
        if (sst && link(from, to) == 0) continue;
        if (copy_file(from, to) != 0) {
            seterr(errstr, errsize, "cannot copy %s to %s: %s", from, to, strerror(errno));
            rc = SL_EIO;
            goto out;
        }
    }
    if (fsync_path(state_dir, true) != 0 || unlink(mark) != 0 ||
        fsync_path(state_dir, true) != 0) {
        seterr(errstr, errsize, "cannot finish restore in %s: %s", state_dir, strerror(errno));
        rc = SL_EIO;
        goto out;
    }
    /* the restored store must open and hold the snapshot's progress */
    rc = check_db_progress(state_dir, &info, errstr, errsize);
out:
    if (d) closedir(d);
    if (lock_fd >= 0) close(lock_fd);
    state_snapshot_info_free(&info);
    return rc;
}

int state_snapshot_restore_partition(const char *snapshot_dir, const char *name,
                                     state_store_t *dst, const char *topic, int32_t partition,
                                     const char *const *views, size_t n_views,
                                     char *errstr, size_t errsize)
{
    state_snapshot_info_t info;
    int rc = state_snapshot_verify(snapshot_dir, name, &info, errstr, errsize);
    state_snapshot_info_free(&info);
    if (rc) return rc;
    char db[PATH_SZ], err[1024] = "";
    pathf(db, sizeof db, "%s/%s/db", snapshot_dir, name);
    state_store_t *src = NULL;
    state_options_t ro = { .read_only = true, .block_cache_bytes = 8u << 20 };
    if ((rc = state_open(db, &ro, &src, err, sizeof err))) {
        seterr(errstr, errsize, "snapshot %s: %s", name, err);
        return rc;
    }
    rc = state_partition_copy(dst, src, topic, partition, views, n_views, errstr, errsize);
    state_close(src);
    return rc;
}

/* ---- on-demand snapshots of a running worker ------------------------------- */

#define REQUEST_FILE "sluice.snapshot-request"
#define REPLY_PREFIX "sluice.snapshot-reply-"

static bool request_id_valid(const char *id)
{
    if (!*id || strlen(id) > 40) return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || *p == '-')) return false;
    return true;
}

int state_snapshot_serve_request(state_store_t *st, const char *snapshot_dir,
                                 const char *schema_fingerprint, bool *taken, char *taken_name,
                                 size_t namesize, char *errstr, size_t errsize)
{
    char req[PATH_SZ], claimed[PATH_SZ];
    if (taken) *taken = false;
    pathf(req, sizeof req, "%s/%s", state_dir(st), REQUEST_FILE);
    struct stat sb;
    if (stat(req, &sb) != 0) return SL_OK;               /* the common case */
    pathf(claimed, sizeof claimed, "%s/%s.taken", state_dir(st), REQUEST_FILE);
    if (rename(req, claimed) != 0) return SL_OK;         /* withdrawn meanwhile */
    char text[512] = "", id[64] = "", name[STATE_SNAPSHOT_NAME_MAX + 2] = "";
    FILE *f = fopen(claimed, "r");
    if (f) {
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = '\0';
        fclose(f);
    }
    unlink(claimed);
    char *nl = strchr(text, '\n');
    if (!nl) return SL_OK;                               /* malformed: dropped */
    *nl = '\0';
    snprintf(id, sizeof id, "%s", text);
    char *nl2 = strchr(nl + 1, '\n');
    if (nl2) *nl2 = '\0';
    snprintf(name, sizeof name, "%s", nl + 1);
    if (!request_id_valid(id)) return SL_OK;

    char err[1024] = "";
    state_snapshot_info_t info;
    memset(&info, 0, sizeof info);
    int rc = state_snapshot_create(st, snapshot_dir, name[0] ? name : NULL, schema_fingerprint,
                                   &info, err, sizeof err);
    char reply[1400];
    int len = snprintf(reply, sizeof reply, "%d\n%s\n", rc, rc ? err : info.name);
    if (!rc && taken) *taken = true;
    if (!rc && taken_name && namesize) snprintf(taken_name, namesize, "%s", info.name);
    state_snapshot_info_free(&info);
    if (rc) seterr(errstr, errsize, "%s", err);
    char tmp[PATH_SZ], fin[PATH_SZ];
    pathf(tmp, sizeof tmp, "%s/%s%s.tmp", state_dir(st), REPLY_PREFIX, id);
    pathf(fin, sizeof fin, "%s/%s%s", state_dir(st), REPLY_PREFIX, id);
    if (write_file_synced(tmp, reply, (size_t)len) != 0 || rename(tmp, fin) != 0) {
        seterr(errstr, errsize, "cannot write snapshot reply %s: %s", fin, strerror(errno));
        return SL_EIO;
    }
    return SL_OK;
}

int state_snapshot_request(const char *state_dir, const char *name, char *id, size_t idsize,
                           char *errstr, size_t errsize)
{
    if (name && !state_snapshot_name_valid(name)) {
        seterr(errstr, errsize, "invalid snapshot name \"%s\"", name);
        return SL_EINVAL;
    }
    char req[PATH_SZ];
    pathf(req, sizeof req, "%s/%s", state_dir, REQUEST_FILE);
    snprintf(id, idsize, "%ld-%lld", (long)getpid(), (long long)now_ms());
    int fd = open(req, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST) {
            seterr(errstr, errsize, "another snapshot request is pending in %s", state_dir);
            return SL_EBUSY;
        }
        seterr(errstr, errsize, "cannot write %s: %s", req, strerror(errno));
        return SL_EIO;
    }
    char text[256];
    int len = snprintf(text, sizeof text, "%s\n%s\n", id, name ? name : "");
    int ok = write(fd, text, (size_t)len) == len;
    close(fd);
    if (!ok) {
        unlink(req);
        seterr(errstr, errsize, "cannot write %s", req);
        return SL_EIO;
    }
    return SL_OK;
}

int state_snapshot_wait_reply(const char *state_dir, const char *id, int64_t timeout_ms,
                              char *name_out, size_t name_size, char *errstr, size_t errsize)
{
    char fin[PATH_SZ];
    pathf(fin, sizeof fin, "%s/%s%s", state_dir, REPLY_PREFIX, id);
    /* a negative timeout is the one extension granted after the worker took
     * the request (see below) */
    int64_t deadline = now_ms() + (timeout_ms < 0 ? -timeout_ms : timeout_ms);
    for (;;) {
        FILE *f = fopen(fin, "r");
        if (f) {
            char text[1400] = "";
            size_t n = fread(text, 1, sizeof text - 1, f);
            text[n] = '\0';
            fclose(f);
            unlink(fin);
            char *nl = strchr(text, '\n');
            if (!nl) {
                seterr(errstr, errsize, "malformed snapshot reply");
                return SL_ECORRUPT;
            }
            *nl = '\0';
            int rc = atoi(text);
            char *msg = nl + 1;
            char *end = strchr(msg, '\n');
            if (end) *end = '\0';
            if (rc == 0) snprintf(name_out, name_size, "%s", msg);
            else seterr(errstr, errsize, "%s", msg);
            return rc;
        }
        if (now_ms() >= deadline) break;
        usleep(50000);
    }
    /* withdraw the request if the worker has not taken it; if it has, the
     * snapshot is under way: give it one more period */
    char req[PATH_SZ];
    pathf(req, sizeof req, "%s/%s", state_dir, REQUEST_FILE);
    if (unlink(req) != 0 && errno == ENOENT && timeout_ms > 0)
        return state_snapshot_wait_reply(state_dir, id, -timeout_ms, name_out, name_size,
                                         errstr, errsize);
    if (timeout_ms < 0) timeout_ms = -timeout_ms;
    seterr(errstr, errsize, "the worker did not take the snapshot within %lld ms (is it running "
           "a build that serves snapshot requests?)", (long long)timeout_ms);
    return SL_ETIMEOUT;
}
