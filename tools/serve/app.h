/*
 * The engine's HTTP application: the reactor handler of `ringpay serve`. It routes each
 * request a reactor parsed to the operations endpoints (health, readiness, metrics),
 * which it answers itself, or through the signing gate (gate.h) to the payment API
 * (dispatch.h), and it owns what the reactors share read-only after start.
 *
 * Who may call (SPEC §3), checked on the client address (the PROXY header's source
 * behind a balancer): --allow for every route (else 403 forbidden), --ops-allow for
 * /metrics and /readyz (default loopback); /healthz needs neither a signature nor an
 * allowed address beyond --allow.
 */
#ifndef RINGPAY_TOOLS_SERVE_APP_H
#define RINGPAY_TOOLS_SERVE_APP_H

#include <stdbool.h>

#include "engine/api.h"
#include "engine/limits.h"
#include "net/cidr.h"
#include "net/reactor.h"

/* Route labels of /metrics and the access log; the order is the index used by
 * reactor_response.route. One entry per payment operation (engine/api.h op_kind). */
enum app_route {
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_AUTHORIZE,
    ROUTE_CAPTURE,
    ROUTE_VOID,
    ROUTE_REFUND,
    ROUTE_GET_PAYMENT,
    ROUTE_BALANCES,
    ROUTE_LEDGER,
    ROUTE_OTHER,
    ROUTE_COUNT,
};

/* The label of every route: the path template, e.g. "/v1/payments/{id}/capture". */
extern const char *const app_route_names[ROUTE_COUNT];

/* The route label of a payment operation. */
unsigned app_route_of_op(enum op_kind kind);

struct dispatch;
struct gate;
struct shards;

struct app {
    unsigned cores;
    struct reactor *reactors[CORES_MAX];
    struct dispatch *dispatch;
    struct shards *shards;
    struct gate *gate;
    const struct cidr_list *allow;     /* who may call at all; NULL: everyone */
    const struct cidr_list *ops_allow; /* who may call /metrics and /readyz */
    int ready; /* started; /readyz also asks every shard: read with __atomic_load_n */
};

/* The handler every reactor runs; ctx is the struct app. */
extern const struct reactor_handler app_handler;

#endif
