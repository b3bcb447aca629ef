/*
 * metrics.c — Prometheus endpoint on libmicrohttpd (see metrics.h).
 *
 * MHD runs its own polling thread (MHD_USE_INTERNAL_POLLING_THREAD); each
 * request renders all collectors into a fresh buffer that MHD frees after
 * sending. The collector list is guarded by a mutex so modules may register
 * after the server started.
 */
#include "metrics.h"
#include "sl_err.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct collector {
    sl_metrics_collect_fn fn;
    void *ctx;
} collector_t;

struct sl_metrics {
    pthread_mutex_t lock;
    collector_t *collectors;
    size_t n;
    struct MHD_Daemon *daemon;
    int port;
    _Atomic uint64_t scrapes;
};

sl_metrics_t *sl_metrics_new(void)
{
    sl_metrics_t *m = calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->lock, NULL);
    return m;
}

int sl_metrics_add(sl_metrics_t *m, sl_metrics_collect_fn fn, void *ctx)
{
    pthread_mutex_lock(&m->lock);
    collector_t *c = realloc(m->collectors, (m->n + 1) * sizeof *c);
    if (!c) {
        pthread_mutex_unlock(&m->lock);
        return SL_ENOMEM;
    }
    m->collectors = c;
    c[m->n++] = (collector_t){ fn, ctx };
    pthread_mutex_unlock(&m->lock);
    return SL_OK;
}

int sl_prom_header(sl_buf_t *out, const char *name, const char *type, const char *help)
{
    return sl_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int sl_prom_value(sl_buf_t *out, const char *name, const char *labels, double value)
{
    if (labels && *labels) return sl_buf_printf(out, "%s{%s} %.17g\n", name, labels, value);
    return sl_buf_printf(out, "%s %.17g\n", name, value);
}

int sl_metrics_render(sl_metrics_t *m, sl_buf_t *out)
{
    int rc = 0;
    m->scrapes++;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n && rc == 0; i++) rc = m->collectors[i].fn(m->collectors[i].ctx, out);
    pthread_mutex_unlock(&m->lock);
    rc |= sl_prom_header(out, "sluice_metrics_scrapes_total", "counter", "Scrapes of this endpoint.");
    rc |= sl_prom_value(out, "sluice_metrics_scrapes_total", NULL, (double)m->scrapes);
    return rc ? SL_ENOMEM : SL_OK;
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned code, const char *type,
                               void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_size, void **req_cls)
{
    sl_metrics_t *m = cls;
    (void)version;
    (void)upload_data;
    (void)upload_size;
    (void)req_cls;
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "only GET\n", 9,
                       MHD_RESPMEM_PERSISTENT);
    if (!strcmp(url, "/healthz"))
        return respond(conn, MHD_HTTP_OK, "text/plain", "ok\n", 3, MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/metrics"))
        return respond(conn, MHD_HTTP_NOT_FOUND, "text/plain", "not found: try /metrics\n", 24,
                       MHD_RESPMEM_PERSISTENT);
    sl_buf_t b = SL_BUF_INIT;
    if (sl_metrics_render(m, &b)) {
        sl_buf_free(&b);
        return respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "render failed\n", 14,
                       MHD_RESPMEM_PERSISTENT);
    }
    return respond(conn, MHD_HTTP_OK, "text/plain; version=0.0.4", b.data, b.len,
                   MHD_RESPMEM_MUST_FREE);
}

int sl_metrics_listen(sl_metrics_t *m, const char *bind, int port, char *errstr, size_t errsize)
{
    struct sockaddr_in addr = { 0 };
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, bind, &addr.sin_addr) != 1) {
        snprintf(errstr, errsize, "metrics: bad bind address '%s' (an IPv4 address)", bind);
        return SL_EINVAL;
    }
    m->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL,
                                 (uint16_t)port, NULL, NULL, handle, m,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                                 MHD_OPTION_END);
    if (!m->daemon) {
        snprintf(errstr, errsize, "metrics: cannot listen on %s:%d (address in use?)", bind, port);
        return SL_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? info->port : port;
    return SL_OK;
}

int sl_metrics_port(const sl_metrics_t *m) { return m->daemon ? m->port : 0; }

void sl_metrics_free(sl_metrics_t *m)
{
    if (!m) return;
    if (m->daemon) MHD_stop_daemon(m->daemon);
    free(m->collectors);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
