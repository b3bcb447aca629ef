/*
 * serve.c — starts and stops the RESP and gRPC servers from sl_config_t.
 * Called from the main thread only. gRPC TLS: the PEM files named by
 * grpc_tls_cert / grpc_tls_key are read here (both or neither), so a bad
 * path is reported by name before anything listens.
 */
#include "serve.h"
#include "sl_hist.h"
#include "resp_server.h"
#include "serve_grpc.h"
#include "sl_err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVE_PEM_MAX (1 << 20)

struct serve_servers {
    resp_server_t *resp;
    serve_grpc_t *grpc;
};

/* Reads a whole PEM file into *out (NUL-terminated, caller frees).
 * Returns 0 or SL_EIO / SL_EINVAL / SL_ENOMEM with errstr naming option and
 * path. */
static int serve__read_pem(const char *opt, const char *path, const char *what, char **out,
                           char *errstr, size_t errsize)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errstr, errsize, "%s: cannot read '%s': %s", opt, path, strerror(errno));
        return SL_EIO;
    }
    char *buf = malloc(SERVE_PEM_MAX + 1);
    if (!buf) {
        fclose(f);
        return SL_ENOMEM;
    }
    size_t n = fread(buf, 1, SERVE_PEM_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > SERVE_PEM_MAX) {
        snprintf(errstr, errsize, "%s: '%s' %s", opt, path, bad ? "cannot be read" : "is over 1 MiB");
        free(buf);
        return bad ? SL_EIO : SL_EINVAL;
    }
    buf[n] = 0;
    if (!strstr(buf, "-----BEGIN ") || !strstr(buf, what)) {
        snprintf(errstr, errsize, "%s: '%s' is not a PEM file holding a %s", opt, path,
                 strcmp(what, "CERTIFICATE") == 0 ? "certificate" : "private key");
        free(buf);
        return SL_EINVAL;
    }
    *out = buf;
    return 0;
}

int serve_servers_start(const sl_config_t *cfg, const serve_backend_t *be,
                        serve_servers_t **out, char *errstr, size_t errsize)
{
    *out = NULL;
    bool has_cert = cfg->grpc_tls_cert && *cfg->grpc_tls_cert;
    bool has_key = cfg->grpc_tls_key && *cfg->grpc_tls_key;
    if (has_cert != has_key) {
        snprintf(errstr, errsize, "%s is set but %s is not: gRPC TLS needs both a certificate "
                                  "chain and its private key (PEM files)",
                 has_cert ? "grpc_tls_cert" : "grpc_tls_key", has_cert ? "grpc_tls_key" : "grpc_tls_cert");
        return SL_EINVAL;
    }
    serve_servers_t *s = calloc(1, sizeof *s);
    if (!s) return SL_ENOMEM;
    char *cert_pem = NULL, *key_pem = NULL;
    int threads = cfg->serve_threads > 0 ? (int)cfg->serve_threads : 1;
    int rc = 0;
    if (cfg->resp_port > 0) {
        resp_server_opts_t ro;
        resp_server_opts_default(&ro);
        ro.bind = cfg->resp_bind;
        ro.port = (int)cfg->resp_port;
        ro.threads = threads;
        ro.password = cfg->password;
        ro.max_clients = (size_t)cfg->max_clients;
        ro.max_request_bytes = (size_t)cfg->max_request_bytes;
        ro.max_args = (size_t)cfg->max_args;
        ro.max_entities = (size_t)cfg->max_entities;
        ro.idle_timeout_ms = cfg->idle_timeout_ms;
        if ((rc = resp_server_start(&ro, be, &s->resp, errstr, errsize))) goto fail;
    }
    if (cfg->grpc_port > 0) {
        serve_grpc_opts_t go;
        serve_grpc_opts_default(&go);
        go.bind = cfg->grpc_bind;
        go.port = (int)cfg->grpc_port;
        go.threads = threads;
        go.token = cfg->grpc_token;
        go.max_request_bytes = (size_t)cfg->max_request_bytes;
        go.max_entities = (size_t)cfg->max_entities;
        if (has_cert) {
            if ((rc = serve__read_pem("grpc_tls_cert", cfg->grpc_tls_cert, "CERTIFICATE", &cert_pem,
                                      errstr, errsize)) ||
                (rc = serve__read_pem("grpc_tls_key", cfg->grpc_tls_key, "PRIVATE KEY", &key_pem,
                                      errstr, errsize)))
                goto fail;
            go.tls_cert_pem = cert_pem;
            go.tls_key_pem = key_pem;
        }
        if ((rc = serve_grpc_start(&go, be, &s->grpc, errstr, errsize))) goto fail;
    }
    free(cert_pem);
    free(key_pem);
    *out = s;
    return 0;
fail:
    free(cert_pem);
    free(key_pem);
    serve_servers_stop(s);
    return rc;
}

int serve_servers_resp_port(const serve_servers_t *s) { return s->resp ? resp_server_port(s->resp) : 0; }
int serve_servers_grpc_port(const serve_servers_t *s) { return s->grpc ? serve_grpc_port(s->grpc) : 0; }

void serve_servers_print_stats(const serve_servers_t *s, FILE *f)
{
    if (s->resp) {
        resp_server_stats_t st;
        resp_server_stats(s->resp, &st);
        fprintf(f, "resp_connections %llu\nresp_rejected %llu\nresp_commands %llu\nresp_lookups %llu\n"
                   "resp_hits %llu\nresp_misses %llu\nresp_protocol_errors %llu\nresp_idle_closed %llu\n",
                (unsigned long long)st.connections, (unsigned long long)st.rejected,
                (unsigned long long)st.commands, (unsigned long long)st.lookups,
                (unsigned long long)st.hits, (unsigned long long)st.misses,
                (unsigned long long)st.protocol_errors, (unsigned long long)st.idle_closed);
    }
    if (s->grpc) {
        uint64_t calls, errors, unauth, cancelled;
        serve_grpc_stats(s->grpc, &calls, &errors, &unauth, &cancelled);
        fprintf(f, "grpc_calls %llu\ngrpc_errors %llu\ngrpc_unauthenticated %llu\ngrpc_cancelled %llu\n",
                (unsigned long long)calls, (unsigned long long)errors, (unsigned long long)unauth,
                (unsigned long long)cancelled);
    }
}

bool serve_servers_has_resp(const serve_servers_t *s) { return s && s->resp; }
bool serve_servers_has_grpc(const serve_servers_t *s) { return s && s->grpc; }

void serve_servers_latency(const serve_servers_t *s, bool grpc, sl_hist_t *into)
{
    if (!s) return;
    if (grpc) serve_grpc_latency(s->grpc, into);
    else if (s->resp) resp_server_latency(s->resp, into);
}

void serve_servers_drain(serve_servers_t *s)
{
    if (!s) return;
    resp_server_request_stop(s->resp);   /* both stop taking work at once */
    serve_grpc_drain(s->grpc);
    resp_server_drain(s->resp);
}

void serve_servers_stop(serve_servers_t *s)
{
    if (!s) return;
    serve_grpc_stop(s->grpc);
    resp_server_stop(s->resp);
    free(s);
}
