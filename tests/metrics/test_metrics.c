/*
 * test_metrics.c — the Prometheus endpoint over a real TCP connection:
 * collectors' output is served at /metrics, /healthz answers, other paths
 * and methods get proper HTTP errors.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"
#include "sl_err.h"

static int collect(void *ctx, sl_buf_t *out)
{
    int *calls = ctx;
    (*calls)++;
    int rc = sl_prom_header(out, "test_events_total", "counter", "Events seen.");
    return rc | sl_prom_value(out, "test_events_total", "view=\"card\"", 42);
}

static void http(int port, const char *request, char *reply, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(write(fd, request, strlen(request)), (ssize_t)strlen(request));
    size_t off = 0;
    ssize_t n;
    while (off + 1 < size && (n = read(fd, reply + off, size - 1 - off)) > 0) off += (size_t)n;
    reply[off] = '\0';
    close(fd);
}

Test(metrics, serves_collectors)
{
    sl_metrics_t *m = sl_metrics_new();
    int calls = 0;
    char err[256], reply[8192];
    cr_assert_eq(sl_metrics_add(m, collect, &calls), 0);
    cr_assert_eq(sl_metrics_listen(m, "127.0.0.1", 0, err, sizeof err), 0, "%s", err);
    int port = sl_metrics_port(m);
    cr_assert_gt(port, 0);
    http(port, "GET /metrics HTTP/1.0\r\n\r\n", reply, sizeof reply);
    cr_assert(strstr(reply, "HTTP/1.0 200") || strstr(reply, "HTTP/1.1 200"), "%s", reply);
    cr_assert(strstr(reply, "# TYPE test_events_total counter\n"), "%s", reply);
    cr_assert(strstr(reply, "test_events_total{view=\"card\"} 42\n"), "%s", reply);
    cr_assert_eq(calls, 1);
    http(port, "GET /healthz HTTP/1.0\r\n\r\n", reply, sizeof reply);
    cr_assert(strstr(reply, " 200 ") && strstr(reply, "\r\n\r\nok\n"), "%s", reply);
    http(port, "GET /nope HTTP/1.0\r\n\r\n", reply, sizeof reply);
    cr_assert(strstr(reply, " 404 "), "%s", reply);
    http(port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", reply, sizeof reply);
    cr_assert(strstr(reply, " 405 "), "%s", reply);
    http(port, "garbage\r\n\r\n", reply, sizeof reply);   /* must not kill the server */
    http(port, "GET /metrics HTTP/1.0\r\n\r\n", reply, sizeof reply);
    cr_assert(strstr(reply, "sluice_metrics_scrapes_total 2\n"), "%s", reply);
    sl_metrics_free(m);
}

Test(metrics, bad_bind_and_port_in_use)
{
    sl_metrics_t *a = sl_metrics_new(), *b = sl_metrics_new();
    char err[256];
    cr_assert_eq(sl_metrics_listen(a, "not-an-ip", 0, err, sizeof err), SL_EINVAL);
    cr_assert(strstr(err, "bad bind address"), "%s", err);
    cr_assert_eq(sl_metrics_listen(a, "127.0.0.1", 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(sl_metrics_listen(b, "127.0.0.1", sl_metrics_port(a), err, sizeof err), SL_EIO);
    cr_assert(strstr(err, "cannot listen"), "%s", err);
    sl_metrics_free(a);
    sl_metrics_free(b);
}
