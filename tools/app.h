/*
 * The engine's HTTP application: routes requests that a reactor parsed to their
 * handlers (health, readiness, metrics, and the payment API), and owns what all
 * reactors share read-only after start (the reactor list for /metrics).
 */
#ifndef RINGPAY_TOOLS_APP_H
#define RINGPAY_TOOLS_APP_H

#include <stdbool.h>

#include "engine/limits.h"
#include "net/reactor.h"

/* Metrics labels; the order is the index used by reactor_response.route. */
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

extern const char *const app_route_names[ROUTE_COUNT];

struct payments;

struct app {
    unsigned cores;
    struct reactor *reactors[CORES_MAX];
    struct payments *payments;
    int ready; /* started; /readyz also asks every shard: read with __atomic_load_n */
};

/* The handler every reactor runs; ctx is the struct app. */
extern const struct reactor_handler app_handler;

#endif
