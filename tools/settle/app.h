/*
 * The back office's HTTP application: the reactor handler of `ringpay settle` (SPEC §5)
 * and the state its one thread owns.
 *
 * Threads (decision): settle runs ONE reactor thread that owns everything that writes:
 * the HTTP routes, the Kafka consumer and the producer of settle's outbox (both polled
 * from the reactor's turns, woken through an eventfd read on its ring), the close
 * timer and the store (store/settle_store.h: one writing thread). A commit or an upload
 * holds up the other answers for its duration; settle answers a few operators, not the
 * engine's traffic, and one owner makes the exactly-once rules simple to keep. The main
 * thread only waits for signals (SIGHUP reloads the keys through the gate).
 *
 * Routes (every /v1 route needs an admin key, tools/serve/gate.h admin-only mode; the
 * same error body, access log and limits as the engine):
 *   GET  /v1/settlements?merchant_id=&date=&status=&after=&limit=&format=json|csv
 *   GET  /v1/settlements/{id}
 *   POST /v1/settlements/close {"date":"YYYY-MM-DD"}
 *   POST /v1/reconciliation/files            (text/csv, streamed; see upload.h)
 *   GET  /v1/reconciliation/files/{id}?after=&limit=
 *   POST /v1/reconciliation/files/{id}/rematch
 *   GET  /v1/dead-letters?status=pending|all&after=&limit=
 *   POST /v1/dead-letters/{id}/replay
 *   GET  /healthz, /readyz, /metrics         (--ops-allow for the last two)
 */
#ifndef RINGPAY_TOOLS_SETTLE_APP_H
#define RINGPAY_TOOLS_SETTLE_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/settle.h"
#include "net/cidr.h"
#include "net/reactor.h"
#include "store/settle_store.h"

enum settle_route {
    SR_HEALTHZ,
    SR_READYZ,
    SR_METRICS,
    SR_LIST,
    SR_GET,
    SR_CLOSE,
    SR_UPLOAD,
    SR_FILE,
    SR_REMATCH,
    SR_DLQ_LIST,
    SR_DLQ_REPLAY,
    SR_OTHER,
    SR_COUNT,
};

extern const char *const settle_route_names[SR_COUNT];

struct gate;
struct skafka;
struct settle_uploads;

struct settle_app {
    /* 0 while a standby waits for the data directory (store and kafka not set yet):
     * written once by the main thread (release) after it opened them, read by the
     * reactor thread (acquire) before it touches either. */
    int live;
    struct settle_store *store;
    struct settle_calendar cal;
    struct gate *gate;
    struct reactor *reactor;
    const struct cidr_list *allow;     /* NULL: everyone */
    const struct cidr_list *ops_allow; /* /metrics, /readyz */
    int64_t clock_offset_ms;           /* test clock: added to the wall clock */
    uint64_t recon_max_bytes;
    uint64_t close_poll_ms; /* how often the close timer looks */
    const char *data_dir;
    struct skafka *kafka; /* consumer and producer; NULL: --kafka-brokers none */
    struct settle_uploads *uploads;
    int64_t next_close_check_ms;
    bool store_failed_logged;
    /* reconciliation throughput of the last upload, for /metrics */
    uint64_t recon_last_lines;
    uint64_t recon_last_ns;
};

/* Whether the store is open (not a standby still waiting). Any thread. */
bool settle_app_live(const struct settle_app *app);

/* settle's clock: the wall clock plus the test offset (RINGPAY_SETTLE_TEST_CLOCK). */
int64_t settle_app_now_ms(const struct settle_app *app);

/* The handler the reactor runs; ctx is the struct settle_app. */
extern const struct reactor_handler settle_app_handler;

#endif
