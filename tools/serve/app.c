/*
 * The reactor handler of `ringpay serve` (see app.h).
 *
 * Operations routes are matched on the exact path: a known path with another method is
 * 405 with an Allow header; anything under /v1/ goes to the payment API, which answers
 * its own 404s and 405s; any other path is 404. Errors carry the SPEC error body.
 */
#include "tools/serve/app.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/clock.h"
#include "net/metrics.h"
#include "tools/serve/dispatch.h"
#include "tools/serve/gate.h"
#include "tools/serve/shards.h"

const char *const app_route_names[ROUTE_COUNT] = {
    [ROUTE_HEALTHZ] = "/healthz",
    [ROUTE_READYZ] = "/readyz",
    [ROUTE_METRICS] = "/metrics",
    [ROUTE_AUTHORIZE] = "/v1/payments/authorize",
    [ROUTE_CAPTURE] = "/v1/payments/{id}/capture",
    [ROUTE_VOID] = "/v1/payments/{id}/void",
    [ROUTE_REFUND] = "/v1/payments/{id}/refund",
    [ROUTE_GET_PAYMENT] = "/v1/payments/{id}",
    [ROUTE_BALANCES] = "/v1/merchants/{id}/balances",
    [ROUTE_LEDGER] = "/v1/merchants/{id}/ledger",
    [ROUTE_OTHER] = "other",
};

unsigned app_route_of_op(enum op_kind kind)
{
    switch (kind) {
    case OP_AUTHORIZE:
        return ROUTE_AUTHORIZE;
    case OP_CAPTURE:
        return ROUTE_CAPTURE;
    case OP_VOID:
        return ROUTE_VOID;
    case OP_REFUND:
        return ROUTE_REFUND;
    case OP_GET_PAYMENT:
        return ROUTE_GET_PAYMENT;
    case OP_BALANCES:
        return ROUTE_BALANCES;
    case OP_LEDGER:
        return ROUTE_LEDGER;
    }
    return ROUTE_OTHER;
}

static bool path_is(const struct reactor_request *rq, const char *path)
{
    const struct http_slice p = rq->http->path;
    size_t n = strlen(path);
    return p.len == n && memcmp(rq->buf + p.off, path, n) == 0;
}

static void reply_json(struct reactor *r, const struct reactor_request *rq, int status,
                       unsigned route, const char *body)
{
    struct reactor_response resp = {
        .status = status,
        .route = route,
        .content_type = "application/json",
        .body = body,
        .body_len = strlen(body),
    };
    reactor_reply(r, rq->ref, &resp);
}

/* GET /metrics: every family, rendered into one buffer. A scrape is rare, so the
 * buffer is allocated for it rather than held by every reactor. */
static void serve_metrics(struct app *app, struct reactor *r, const struct reactor_request *rq)
{
    const struct metrics *all[CORES_MAX];
    const struct accesslog *logs[CORES_MAX];
    for (unsigned i = 0; i < app->cores; i++) {
        all[i] = reactor_metrics(app->reactors[i]);
        logs[i] = reactor_accesslog(app->reactors[i]);
    }
    char *body = malloc(METRICS_BODY_MAX_BYTES);
    long len = -ENOMEM;
    if (body) {
        struct metrics_out o;
        metrics_out_init(&o, body, METRICS_BODY_MAX_BYTES);
        metrics_render(&o, all, app->cores);
        accesslog_metrics(logs, app->cores, &o);
        dispatch_metrics(app->dispatch, &o);
        shards_metrics(app->shards, &o);
        len = metrics_out_len(&o);
    }
    if (len < 0) {
        free(body);
        reactor_reply_error(r, rq, 503, ROUTE_METRICS, "overloaded", "metrics unavailable",
                            "Retry-After: 1\r\n");
        return;
    }
    struct reactor_response resp = {
        .status = 200,
        .route = ROUTE_METRICS,
        .content_type = "text/plain; version=0.0.4; charset=utf-8",
        .body = body,
        .body_len = (size_t)len,
    };
    reactor_reply(r, rq->ref, &resp);
    free(body);
}

static void serve_ops(struct app *app, struct reactor *r, const struct reactor_request *rq,
                      unsigned route)
{
    if (route != ROUTE_HEALTHZ && !cidr_list_match(app->ops_allow, rq->client)) {
        reactor_reply_error(r, rq, 403, route, "forbidden",
                            "this address may not call the operations endpoints", NULL);
        return;
    }
    enum http_method m = rq->http->method;
    if (m != HTTP_GET && m != HTTP_HEAD) {
        reactor_reply_error(r, rq, 405, route, "method_not_allowed",
                            "method not allowed on this route", "Allow: GET, HEAD\r\n");
        return;
    }
    switch (route) {
    case ROUTE_HEALTHZ:
        reply_json(r, rq, 200, route, "{\"status\":\"ok\"}");
        break;
    case ROUTE_READYZ:
        if (__atomic_load_n(&app->ready, __ATOMIC_ACQUIRE) && shards_ready(app->shards))
            reply_json(r, rq, 200, route,
                       gate_enabled(app->gate)
                           ? "{\"status\":\"ready\"}"
                           : "{\"status\":\"ready\",\"warning\":\"authentication is off "
                             "(--auth off): every request is accepted unsigned\"}");
        else
            reactor_reply_error(r, rq, 503, route, "not_ready", "shards are not serving",
                                "Retry-After: 1\r\n");
        break;
    default:
        serve_metrics(app, r, rq);
        break;
    }
}

/* A /v1 request: the gate, then the payment API. */
static int serve_api(struct app *app, struct reactor *r, const struct reactor_request *rq)
{
    struct gate_pass pass;
    const char *why;
    int status = gate_check(app->gate, rq, clock_wall_ms() / 1000, &pass, &why);
    if (status != 0) {
        reactor_reply_error(r, rq, status, ROUTE_OTHER,
                            status == 401 ? "authentication_failed" : "forbidden", why, NULL);
        return 0;
    }
    return dispatch_request(app->dispatch, r, rq, &pass);
}

static int on_request(void *ctx, struct reactor *r, const struct reactor_request *rq)
{
    struct app *app = ctx;
    if (app->allow && !cidr_list_match(app->allow, rq->client)) {
        reactor_reply_error(r, rq, 403, ROUTE_OTHER, "forbidden",
                            "this address may not call the engine", NULL);
        return 0;
    }
    if (path_is(rq, "/healthz"))
        serve_ops(app, r, rq, ROUTE_HEALTHZ);
    else if (path_is(rq, "/readyz"))
        serve_ops(app, r, rq, ROUTE_READYZ);
    else if (path_is(rq, "/metrics"))
        serve_ops(app, r, rq, ROUTE_METRICS);
    else if (rq->http->path.len >= 4 && memcmp(rq->buf + rq->http->path.off, "/v1/", 4) == 0)
        return serve_api(app, r, rq);
    else
        reactor_reply_error(r, rq, 404, ROUTE_OTHER, "not_found", "no such route", NULL);
    return 0;
}

static void on_wake(void *ctx, struct reactor *r, int res)
{
    struct app *app = ctx;
    dispatch_on_wake(app->dispatch, r, res);
}

static void on_turn(void *ctx, struct reactor *r)
{
    struct app *app = ctx;
    gate_quiesce(app->gate, reactor_core(r));
    dispatch_on_turn(app->dispatch, r);
}

const struct reactor_handler app_handler = {
    .on_request = on_request,
    .on_wake = on_wake,
    .on_turn = on_turn,
};
