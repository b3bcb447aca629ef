/*
 * cmd_snapshot.c — `sluice snapshot create|list|restore|delete|verify`.
 *
 * A thin shell over state/snapshot.h. Directories come from -c CONFIG
 * (state_dir, snapshot_dir, schemas) and/or --state-dir / --snapshot-dir,
 * the flags winning. The snapshot dir defaults to "<state_dir>.snapshots" as
 * in the config table. `create` opens the state dir itself, so it works on a
 * stopped worker's dir; when a worker holds the dir, create leaves a request
 * in it that the worker serves between two commits
 * (state_snapshot_serve_request) and waits for the reply.
 * Exit status: 0 ok, 1 failure, 2 usage.
 */
#include "schema.h"
#include "sl_config.h"
#include "sl_err.h"
#include "snapshot.h"
#include "state.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sluice snapshot COMMAND [options] [NAME]\n"
        "\n"
        "commands:\n"
        "  create [NAME]   checkpoint the state dir into SNAPSHOT_DIR/NAME (default name\n"
        "                  snap-YYYYMMDD-HHMMSS, UTC); if a worker holds the state dir, it is\n"
        "                  asked to take the snapshot between two commits (into its own\n"
        "                  snapshot_dir)\n"
        "  list            table of snapshots: name, created, age, size, partitions, offsets\n"
        "  restore NAME    restore into the state dir, which must be absent or empty and\n"
        "                  not in use; the snapshot is verified first\n"
        "                  with --partition TOPIC:N: restore that one partition of the\n"
        "                  views fed by TOPIC into the existing (stopped) state dir, leaving\n"
        "                  the other partitions as they are\n"
        "  delete NAME     delete a snapshot\n"
        "  verify NAME     check a snapshot's manifest, files and offsets\n"
        "\n"
        "options:\n"
        "  -c, --config FILE        worker config: state_dir, snapshot_dir, schemas\n"
        "      --state-dir DIR      state directory (overrides the config)\n"
        "      --snapshot-dir DIR   snapshot directory (default <state_dir>.snapshots)\n"
        "      --partition TOPIC:N  restore: one partition only\n"
        "      --view VIEW          restore --partition: a view fed by TOPIC (repeatable;\n"
        "                           default: from the config's schemas)\n"
        "      --wait SECONDS       create on a running worker: how long to wait (120)\n"
        "      --fingerprint HEX    schema fingerprint for the manifest (create; default:\n"
        "                           from the config's schemas, else the one the store holds)\n"
        "  -h, --help               this help\n");
}

static void human_size(uint64_t b, char *out, size_t size)
{
    const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) { v /= 1024; i++; }
    if (i == 0) snprintf(out, size, "%" PRIu64 " B", b);
    else snprintf(out, size, "%.1f %s", v, u[i]);
}

static void human_age(int64_t ms, char *out, size_t size)
{
    int64_t s = ms / 1000;
    if (s < 0) s = 0;
    if (s < 120) snprintf(out, size, "%" PRId64 "s", s);
    else if (s < 7200) snprintf(out, size, "%" PRId64 "m", s / 60);
    else if (s < 172800) snprintf(out, size, "%" PRId64 "h", s / 3600);
    else snprintf(out, size, "%" PRId64 "d", s / 86400);
}

/* "topic[N] next=SUM" per topic, comma separated, truncated to the column. */
static void offsets_summary(const state_snapshot_info_t *in, char *out, size_t size)
{
    out[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < in->n_partitions; i++) {
        const char *topic = in->partitions[i].topic;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) seen = !strcmp(in->partitions[j].topic, topic);
        if (seen) continue;
        int64_t sum = 0, n = 0;
        for (size_t j = i; j < in->n_partitions; j++)
            if (!strcmp(in->partitions[j].topic, topic)) {
                sum += in->partitions[j].next_offset;
                n++;
            }
        int w = snprintf(out + len, size - len, "%s%s[%" PRId64 "] next=%" PRId64,
                         len ? ", " : "", topic, n, sum);
        if (w < 0 || (size_t)w >= size - len) {
            if (size > 4) strcpy(out + size - 4, "...");
            return;
        }
        len += (size_t)w;
    }
    if (!len) snprintf(out, size, "-");
}

static void print_list(const state_snapshot_info_t *list, size_t n)
{
    int64_t now = (int64_t)time(NULL) * 1000;
    printf("%-28s %-20s %-6s %-10s %-5s %s\n", "NAME", "CREATED (UTC)", "AGE", "SIZE", "PARTS",
           "OFFSETS");
    for (size_t i = 0; i < n; i++) {
        const state_snapshot_info_t *s = &list[i];
        char created[32] = "-", age[16] = "-", size[16], offs[256];
        human_size(s->size_bytes, size, sizeof size);
        if (!s->valid) {
            printf("%-28s %-20s %-6s %-10s %-5s INVALID: %s\n", s->name, "-", "-", size, "-",
                   s->error);
            continue;
        }
        time_t t = (time_t)(s->created_ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(created, sizeof created, "%Y-%m-%d %H:%M:%S", &tm);
        human_age(now - s->created_ms, age, sizeof age);
        offsets_summary(s, offs, sizeof offs);
        printf("%-28s %-20s %-6s %-10s %-5zu %s%s\n", s->name, created, age, size,
               s->n_partitions, offs, strcmp(s->kind, "periodic") ? "" : "  (periodic)");
    }
    if (n == 0) printf("(no snapshots)\n");
}

/* Loads the config's schemas to get the fingerprint the ingest worker uses. */
static int config_fingerprint(const sl_config_t *cfg, char *out, size_t size, char *err,
                              size_t errsize)
{
    if (!cfg->n_schema_files) { out[0] = '\0'; return 0; }
    schema_t *s = NULL;
    int rc = schema_load((const char *const *)cfg->schema_files, cfg->n_schema_files, &s, err,
                         errsize);
    if (rc) return rc;
    snprintf(out, size, "%016llx", (unsigned long long)s->fingerprint);
    schema_free(s);
    return 0;
}

/* `restore NAME --partition TOPIC:N [--view V]...` into an existing store. */
static int restore_partition(const sl_config_t *cfg, const char *snap_dir, const char *name,
                             const char *state_dir, const char *spec, const char **views,
                             size_t n_views)
{
    char topic[256], err[2048];
    const char *colon = strrchr(spec, ':');
    char *end;
    long part = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof topic || !colon[1] ||
        *end || part < 0 || part > INT32_MAX) {
        fprintf(stderr, "sluice snapshot restore: --partition wants TOPIC:N (got '%s')\n", spec);
        return 2;
    }
    snprintf(topic, sizeof topic, "%.*s", (int)(colon - spec), spec);
    schema_t *schema = NULL;
    if (n_views == 0) {
        if (!cfg || !cfg->n_schema_files) {
            fprintf(stderr, "sluice snapshot restore: --partition needs --view VIEW or -c CONFIG "
                    "with schemas\n");
            return 2;
        }
        if (schema_load((const char *const *)cfg->schema_files, cfg->n_schema_files, &schema,
                        err, sizeof err)) {
            fprintf(stderr, "sluice snapshot restore: schema: %s\n", err);
            return 1;
        }
        for (size_t i = 0; i < schema->n_views && n_views < 64; i++)
            if (!strcmp(schema->sources[schema->views[i].source].topic, topic))
                views[n_views++] = schema->views[i].name;
        if (n_views == 0) {
            fprintf(stderr, "sluice snapshot restore: no view of the schema reads topic '%s'\n",
                    topic);
            schema_free(schema);
            return 1;
        }
    }
    int status = 1;
    state_store_t *st = NULL;
    state_options_t so = { .create_if_missing = false };
    if (state_open(state_dir, &so, &st, err, sizeof err)) {
        fprintf(stderr, "sluice snapshot restore: %s\n", err);
        goto out;
    }
    if (state_snapshot_restore_partition(snap_dir, name, st, topic, (int32_t)part, views,
                                         n_views, err, sizeof err)) {
        fprintf(stderr, "sluice snapshot restore: %s\n", err);
        goto out;
    }
    printf("restored %s[%ld] (%zu view%s) from snapshot %s into %s\n", topic, part, n_views,
           n_views == 1 ? "" : "s", name, state_dir);
    status = 0;
out:
    state_close(st);
    schema_free(schema);
    return status;
}

int cmd_snapshot(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "state-dir", required_argument, NULL, 's' },
        { "snapshot-dir", required_argument, NULL, 'd' },
        { "fingerprint", required_argument, NULL, 'f' },
        { "partition", required_argument, NULL, 'p' },
        { "view", required_argument, NULL, 'v' },
        { "wait", required_argument, NULL, 'w' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *config = NULL, *state_dir = NULL, *snap_dir = NULL, *fingerprint = NULL;
    const char *partition = NULL;
    long wait_s = 120;
    char *endp;
    const char *views[64];
    size_t n_views = 0;
    int opt;
    optind = 0;                /* GNU: full re-initialisation; options may go anywhere */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 's': state_dir = optarg; break;
        case 'd': snap_dir = optarg; break;
        case 'f': fingerprint = optarg; break;
        case 'p': partition = optarg; break;
        case 'w':
            wait_s = strtol(optarg, &endp, 10);
            if (*endp || wait_s < 1 || wait_s > 86400) {
                fprintf(stderr, "sluice snapshot: --wait wants seconds (1..86400)\n");
                return 2;
            }
            break;
        case 'v':
            if (n_views == sizeof views / sizeof views[0]) {
                fprintf(stderr, "sluice snapshot: too many --view options\n");
                return 2;
            }
            views[n_views++] = optarg;
            break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "sluice snapshot: unknown option or missing value: '%s'\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) { usage(stderr); return 2; }
    const char *cmd = argv[optind++];
    const char *name = optind < argc ? argv[optind++] : NULL;
    if (optind < argc) {
        fprintf(stderr, "sluice snapshot: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    bool is_create = !strcmp(cmd, "create"), is_list = !strcmp(cmd, "list"),
         is_restore = !strcmp(cmd, "restore"), is_delete = !strcmp(cmd, "delete"),
         is_verify = !strcmp(cmd, "verify");
    if (!is_create && !is_list && !is_restore && !is_delete && !is_verify) {
        fprintf(stderr, "sluice snapshot: unknown command '%s'\n\n", cmd);
        usage(stderr);
        return 2;
    }
    if ((is_restore || is_delete || is_verify) && !name) {
        fprintf(stderr, "sluice snapshot %s: NAME is required\n", cmd);
        return 2;
    }
    if (partition && !is_restore) {
        fprintf(stderr, "sluice snapshot %s: --partition applies to restore only\n", cmd);
        return 2;
    }
    if (is_list && name) {
        fprintf(stderr, "sluice snapshot list: takes no NAME\n");
        return 2;
    }

    int status = 1;
    char err[2048] = "", fp[64] = "";
    char *default_snap = NULL;
    sl_config_t cfg;
    sl_config_defaults(&cfg);
    if (config && sl_config_load(&cfg, config, err, sizeof err)) {
        fprintf(stderr, "sluice snapshot: %s\n", err);
        goto out;
    }
    if (!state_dir && config) state_dir = cfg.state_dir;
    if (!snap_dir && config && cfg.snapshot_dir && cfg.snapshot_dir[0]) snap_dir = cfg.snapshot_dir;
    if (!state_dir && (is_create || is_restore || (!snap_dir))) {
        fprintf(stderr, "sluice snapshot %s: --state-dir DIR (or -c CONFIG) is required\n", cmd);
        status = 2;
        goto out;
    }
    if (!snap_dir) {
        size_t n = strlen(state_dir);
        while (n > 1 && state_dir[n - 1] == '/') n--;
        if (!(default_snap = malloc(n + 11))) goto out;
        snprintf(default_snap, n + 11, "%.*s.snapshots", (int)n, state_dir);
        snap_dir = default_snap;
    }

    if (is_create) {
        if (!fingerprint && config) {
            if (config_fingerprint(&cfg, fp, sizeof fp, err, sizeof err)) {
                fprintf(stderr, "sluice snapshot create: schema: %s\n", err);
                goto out;
            }
            if (fp[0]) fingerprint = fp;
        }
        state_store_t *st = NULL;
        state_options_t so = { .create_if_missing = false };
        int rc = state_open(state_dir, &so, &st, err, sizeof err);
        if (rc == SL_EBUSY) {
            /* a running worker: ask it (it answers between two commits) */
            char id[64], got[STATE_SNAPSHOT_NAME_MAX + 1] = "", busy[2048];
            snprintf(busy, sizeof busy, "%s", err);
            if (state_snapshot_request(state_dir, name, id, sizeof id, err, sizeof err)) {
                fprintf(stderr, "sluice snapshot create: %s\n", err);
                goto out;
            }
            printf("%s: asking the worker to take the snapshot...\n", busy);
            fflush(stdout);
            rc = state_snapshot_wait_reply(state_dir, id, wait_s * 1000, got, sizeof got, err,
                                           sizeof err);
            if (rc) {
                fprintf(stderr, "sluice snapshot create: %s\n", err);
                goto out;
            }
            printf("created snapshot %s (taken by the running worker)\n", got);
            status = 0;
            goto out;
        }
        if (rc) {
            fprintf(stderr, "sluice snapshot create: %s\n", err);
            goto out;
        }
        state_snapshot_info_t info;
        rc = state_snapshot_create(st, snap_dir, name, fingerprint, &info, err, sizeof err);
        state_close(st);
        if (rc) {
            fprintf(stderr, "sluice snapshot create: %s\n", err);
            goto out;
        }
        char size[16];
        human_size(info.size_bytes, size, sizeof size);
        printf("created snapshot %s in %s (%s, %zu partitions)\n", info.name, snap_dir, size,
               info.n_partitions);
        state_snapshot_info_free(&info);
        status = 0;
    } else if (is_list) {
        state_snapshot_info_t *list;
        size_t n;
        if (state_snapshot_list(snap_dir, &list, &n, err, sizeof err)) {
            fprintf(stderr, "sluice snapshot list: %s\n", err);
            goto out;
        }
        print_list(list, n);
        state_snapshot_list_free(list, n);
        status = 0;
    } else if (is_verify) {
        state_snapshot_info_t info;
        int rc = state_snapshot_verify(snap_dir, name, &info, err, sizeof err);
        if (rc) fprintf(stderr, "sluice snapshot verify: %s\n", err);
        else printf("snapshot %s is intact (%zu partitions, schema %s)\n", name,
                    info.n_partitions, info.schema_fingerprint[0] ? info.schema_fingerprint : "-");
        state_snapshot_info_free(&info);
        status = rc ? 1 : 0;
    } else if (is_restore && partition) {
        status = restore_partition(config ? &cfg : NULL, snap_dir, name, state_dir, partition,
                                   views, n_views);
    } else if (is_restore) {
        /* a schema that changed since the snapshot: the worker will refuse
         * the changed views; say so now */
        if (config && config_fingerprint(&cfg, fp, sizeof fp, err, sizeof err) == 0 && fp[0]) {
            state_snapshot_info_t info;
            if (state_snapshot_read(snap_dir, name, &info, NULL, 0) == 0 &&
                info.schema_fingerprint[0] && strcmp(info.schema_fingerprint, fp) != 0)
                fprintf(stderr, "sluice snapshot restore: warning: snapshot %s was taken with "
                        "schema %s, the config's schemas are %s; views whose definition "
                        "changed will need a backfill\n", name, info.schema_fingerprint, fp);
            state_snapshot_info_free(&info);
        }
        if (state_snapshot_restore(snap_dir, name, state_dir, err, sizeof err)) {
            fprintf(stderr, "sluice snapshot restore: %s\n", err);
            goto out;
        }
        printf("restored snapshot %s into %s\n", name, state_dir);
        status = 0;
    } else {
        if (state_snapshot_delete(snap_dir, name, err, sizeof err)) {
            fprintf(stderr, "sluice snapshot delete: %s\n", err);
            goto out;
        }
        printf("deleted snapshot %s\n", name);
        status = 0;
    }
out:
    free(default_snap);
    sl_config_free(&cfg);
    return status;
}
