/*
 * serve.c — starts and stops the RESP and gRPC servers from sl_config_t.
 * Called from the main thread only.
 */
#include "serve.h"
#include "resp_server.h"
#include "serve_grpc.h"
#include "sl_err.h"

#include <stdio.h>
#include <stdlib.h>

struct serve_servers {
    resp_server_t *resp;
    serve_grpc_t *grpc;
};

int serve_servers_start(const sl_config_t *cfg, const serve_backend_t *be,
                        serve_servers_t **out, char *errstr, size_t errsize)
{
    *out = NULL;
    if (cfg->grpc_tls_cert && *cfg->grpc_tls_cert) {
        snprintf(errstr, errsize, "grpc_tls_cert: TLS for gRPC is not implemented yet; "
                                  "terminate TLS in front of Sluice or leave it empty");
        return SL_EINVAL;
    }
    serve_servers_t *s = calloc(1, sizeof *s);
    if (!s) return SL_ENOMEM;
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
        if ((rc = serve_grpc_start(&go, be, &s->grpc, errstr, errsize))) goto fail;
    }
    *out = s;
    return 0;
fail:
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
        uint64_t calls, errors, unauth;
        serve_grpc_stats(s->grpc, &calls, &errors, &unauth);
        fprintf(f, "grpc_calls %llu\ngrpc_errors %llu\ngrpc_unauthenticated %llu\n",
                (unsigned long long)calls, (unsigned long long)errors, (unsigned long long)unauth);
    }
}

void serve_servers_stop(serve_servers_t *s)
{
    if (!s) return;
    serve_grpc_stop(s->grpc);
    resp_server_stop(s->resp);
    free(s);
}
