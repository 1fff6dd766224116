/*
 * Request routing of `ringpay serve` (see app.h).
 *
 * Routes are matched on the exact path; a known path with another method is 405 with
 * an Allow header, an unknown path 404, both with the SPEC error body.
 */
#include "tools/app.h"

#include <stdlib.h>
#include <string.h>

#include "net/metrics.h"
#include "tools/payments.h"

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

/* /metrics of up to CORES_MAX cores fits comfortably. */
#define METRICS_BODY_MAX (512 * 1024)

static bool path_is(const struct reactor_request *rq, const char *path)
{
    const struct http_slice p = rq->http->path;
    size_t n = strlen(path);
    return p.len == n && memcmp(rq->buf + p.off, path, n) == 0;
}

static void reply_json(struct reactor *r, const struct reactor_request *rq, int status,
                       unsigned route, const char *body, const char *headers)
{
    struct reactor_response resp = {
        .status = status,
        .route = route,
        .content_type = "application/json",
        .headers = headers,
        .body = body,
        .body_len = strlen(body),
    };
    reactor_reply(r, rq->ref, &resp);
}

static void serve_metrics(struct app *app, struct reactor *r, const struct reactor_request *rq)
{
    const struct metrics *all[CORES_MAX];
    for (unsigned i = 0; i < app->cores; i++)
        all[i] = reactor_metrics(app->reactors[i]);
    char *body = malloc(METRICS_BODY_MAX);
    long len = body ? metrics_render(all, app->cores, body, METRICS_BODY_MAX) : -1;
    long more =
        len < 0 ? -1 : payments_metrics(app->payments, body + len, METRICS_BODY_MAX - (size_t)len);
    if (len < 0 || more < 0) {
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
        .body_len = (size_t)(len + more),
    };
    reactor_reply(r, rq->ref, &resp);
    free(body);
}

static void on_request(void *ctx, struct reactor *r, const struct reactor_request *rq)
{
    struct app *app = ctx;
    enum http_method m = rq->http->method;
    bool get = m == HTTP_GET || m == HTTP_HEAD;
    unsigned route;
    if (path_is(rq, "/healthz"))
        route = ROUTE_HEALTHZ;
    else if (path_is(rq, "/readyz"))
        route = ROUTE_READYZ;
    else if (path_is(rq, "/metrics"))
        route = ROUTE_METRICS;
    else if (rq->http->path.len >= 4 && memcmp(rq->buf + rq->http->path.off, "/v1/", 4) == 0) {
        payments_on_request(app->payments, r, rq);
        return;
    } else {
        reactor_reply_error(r, rq, 404, ROUTE_OTHER, "not_found", "no such route", NULL);
        return;
    }
    if (!get) {
        reactor_reply_error(r, rq, 405, route, "method_not_allowed",
                            "method not allowed on this route", "Allow: GET, HEAD\r\n");
        return;
    }
    switch (route) {
    case ROUTE_HEALTHZ:
        reply_json(r, rq, 200, route, "{\"status\":\"ok\"}", NULL);
        break;
    case ROUTE_READYZ:
        if (__atomic_load_n(&app->ready, __ATOMIC_ACQUIRE) && payments_ready(app->payments))
            reply_json(r, rq, 200, route, "{\"status\":\"ready\"}", NULL);
        else
            reactor_reply_error(r, rq, 503, route, "not_ready", "shards are not serving yet",
                                "Retry-After: 1\r\n");
        break;
    default:
        serve_metrics(app, r, rq);
        break;
    }
}

static void on_wake(void *ctx, struct reactor *r, int res)
{
    struct app *app = ctx;
    payments_on_wake(app->payments, r, res);
}

static void on_turn(void *ctx, struct reactor *r)
{
    struct app *app = ctx;
    payments_on_turn(app->payments, r);
}

const struct reactor_handler app_handler = {
    .on_request = on_request,
    .on_wake = on_wake,
    .on_turn = on_turn,
};
