/*
 * `ringpay settle`: the composition of the back office (SPEC §5). It holds no request
 * logic; it starts the parts and connects them:
 *
 *   reactor (net/reactor.h, one thread) --settle_app_handler (app.h)--> routes, uploads
 *        |  on_turn                                                   |
 *        +--> consumer group + outbox producer (consumer.h)          v
 *        +--> close timer ----------------------------------> store/settle_store.h
 *
 * Start-up order: configuration (fail with one line), the zone, the store (which takes
 * the data directory's lock: a second settle on it refuses), the reactor, the gate
 * (admin keys of DATA/keys), Kafka, the reactor thread. SIGTERM/SIGINT: the reactor
 * stops accepting and finishes what is in flight (an upload still streaming is
 * answered 503), then the consumer leaves its group, the producer flushes for up to
 * 2 s, the store closes; exit 0. SIGHUP reloads the keys.
 *
 * --standby: when another settle holds the data directory, this one starts its HTTP
 * server anyway (/healthz 200, /readyz and /v1 503 not_ready), tries the directory's
 * lock every 200 ms from the main thread, and when the other process is gone opens the
 * store, starts Kafka and publishes both to the reactor thread (app.h `live`): a
 * failover on the same host (or storage that honours flock) that resumes exactly where
 * the last owner committed.
 *
 * --shared: several settle processes of one --group on one host open the same data
 * directory together (the lock's shared form; store/settle_store.h "Shared stores"),
 * each an active member of the group consuming the partitions it is given into the one
 * store; one of them at a time publishes the outbox. A settle without --shared, and the
 * dlq commands, still refuse a directory the members hold, and the reverse.
 *
 * `ringpay settle dlq list|replay` work on the data directory of a stopped settle (the
 * store's lock: one process owns it); a replayed event's outbox messages are published
 * when settle runs again.
 *
 * Test clock: RINGPAY_SETTLE_TEST_CLOCK=YYYY-MM-DDTHH:MM:SS.mmmZ starts settle's clock
 * at that instant (it then runs at the wall clock's pace). For tests of cutoff, grace
 * and adjustments only; settle logs a warning when it is set.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/json.h"
#include "engine/limits.h"
#include "engine/settle.h"
#include "net/accesslog.h"
#include "net/cidr.h"
#include "net/log.h"
#include "net/reactor.h"
#include "store/settle_store.h"
#include "tools/cmd.h"
#include "tools/config.h"
#include "tools/serve/gate.h"
#include "tools/settle/app.h"
#include "tools/settle/consumer.h"
#include "tools/settle/tz.h"
#include "tools/settle/upload.h"
#include "tools/signals.h"

static const char settle_usage[] =
    "usage: ringpay settle --kafka-brokers LIST [options]\n"
    "       ringpay settle dlq list|replay [options]   (see ringpay settle dlq --help)\n\n"
    "Runs the back office: consumes payment.captured and payment.refunded from Kafka in\n"
    "consumer group --group, builds settlement batches per (merchant, currency, business\n"
    "date), closes them at the end of the business day plus --grace, reconciles bank\n"
    "statements, and serves its admin API on --listen. --kafka-brokers none runs without\n"
    "Kafka (reconciliation and listings only). SIGTERM or SIGINT stops it; SIGHUP reloads\n"
    "the keys.";

enum {
    O_LISTEN,
    O_DATA,
    O_BROKERS,
    O_GROUP,
    O_KAFKA_CONF,
    O_TZ,
    O_CUTOFF,
    O_GRACE,
    O_RECON_MAX,
    O_RETENTION,
    O_AUTH,
    O_ALLOW,
    O_OPS_ALLOW,
    O_ACCESS_LOG,
    O_LOG_LEVEL,
    O_MAXCONN,
    O_HEADER_TMO,
    O_IDLE_TMO,
    O_CLOSE_POLL,
    O_STANDBY,
    O_SHARED,
    O_COUNT
};

static struct cidr_list allow_list, ops_allow_list;

static void opts_init(struct opt *o, char *recon_def, size_t cap)
{
    snprintf(recon_def, cap, "%llu", (unsigned long long)SETTLE_RECON_MAX_BYTES_DEFAULT);
    static char retention_def[16];
    snprintf(retention_def, sizeof(retention_def), "%d", SETTLE_RETENTION_DAYS_DEFAULT);
    struct opt all[O_COUNT] = {
        [O_LISTEN] = {"listen", OPT_ADDR, "127.0.0.1:8081", "HTTP address HOST:PORT"},
        [O_DATA] = {"data", OPT_STRING, "./settle-data", "settle's data directory (LMDB)"},
        [O_BROKERS] = {"kafka-brokers", OPT_STRING, NULL,
                       "bootstrap brokers (the engine prints its embedded cluster's), or none"},
        [O_GROUP] = {"group", OPT_STRING, "ringpay-settle", "Kafka consumer group"},
        [O_KAFKA_CONF] = {"kafka-conf", OPT_STRING, NULL,
                          "extra librdkafka settings name=value;name=value"},
        [O_TZ] = {"tz", OPT_STRING, "UTC", "time zone of business dates (IANA name)"},
        [O_CUTOFF] = {"cutoff", OPT_STRING, "00:00", "business day cutoff HH:MM"},
        [O_GRACE] = {"grace", OPT_STRING, "10m", "a batch closes this long after its day ends"},
        [O_RECON_MAX] = {"recon-max-bytes", OPT_UINT, recon_def, "largest bank statement upload", 1,
                         HTTP_STREAM_LENGTH_MAX},
        [O_RETENTION] = {"retention-days", OPT_UINT, retention_def,
                         "business days of event ids kept (older events are refused)",
                         SETTLE_RETENTION_DAYS_MIN, SETTLE_RETENTION_DAYS_MAX},
        [O_AUTH] = {"auth", OPT_STRING, "on",
                    "on: every /v1 request needs an admin key's signature; off: for local "
                    "experiments only"},
        [O_ALLOW] = {"allow", OPT_STRING, NULL, "CIDRs that may call at all (unset: everyone)"},
        [O_OPS_ALLOW] = {"ops-allow", OPT_STRING, "127.0.0.0/8,::1",
                         "CIDRs that may call /metrics and /readyz"},
        [O_ACCESS_LOG] = {"access-log", OPT_STRING, "on",
                          "an access line per request: on, off, or N (one request in N)"},
        [O_LOG_LEVEL] = {"log-level", OPT_STRING, "info", "debug, info, warn or error"},
        [O_MAXCONN] = {"max-connections", OPT_UINT, "256", "open connections", 1,
                       CONN_PER_CORE_MAX},
        [O_HEADER_TMO] = {"header-timeout-ms", OPT_UINT, "10000",
                          "time to receive a request head (408 after)", 10, 3600000},
        [O_IDLE_TMO] = {"idle-timeout-ms", OPT_UINT, "75000",
                        "idle connections, and uploads that stop sending, are closed after", 10,
                        86400000},
        [O_CLOSE_POLL] = {"close-poll-ms", OPT_UINT, "1000",
                          "how often the close timer looks for dates due to close", 10, 600000},
        [O_STANDBY] = {"standby", OPT_FLAG, NULL,
                       "when another settle holds --data, wait for it (serving /healthz, "
                       "/readyz 503) and take over when it is released"},
        [O_SHARED] = {"shared", OPT_FLAG, NULL,
                      "share --data with the other --shared members of --group on this host: "
                      "each consumes the partitions the group gives it, into the one store"},
    };
    memcpy(o, all, sizeof(all));
}

/* The calendar flags: one line and -1 when one is wrong. */
static int parse_calendar(struct opt *o, struct settle_calendar *cal)
{
    char why[256];
    if (settle_tz_set(o[O_TZ].str, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return -1;
    }
    int32_t cutoff;
    if (settle_cutoff_parse(o[O_CUTOFF].str, strlen(o[O_CUTOFF].str), &cutoff) != 0) {
        fprintf(stderr, "ringpay: --cutoff: expected HH:MM from 00:00 to 23:59, got \"%s\"\n",
                o[O_CUTOFF].str);
        return -1;
    }
    int64_t grace;
    if (settle_grace_parse(o[O_GRACE].str, strlen(o[O_GRACE].str), &grace) != 0) {
        fprintf(stderr,
                "ringpay: --grace: expected 0 or digits with s, m or h (e.g. 10m), at "
                "most 7 days, got \"%s\"\n",
                o[O_GRACE].str);
        return -1;
    }
    bool utc = strcmp(o[O_TZ].str, "UTC") == 0;
    settle_calendar_init(cal, utc ? settle_offset_utc : settle_tz_offset, NULL, cutoff, grace);
    return 0;
}

static int parse_edge(struct opt *o, bool *auth_on)
{
    if (strcmp(o[O_AUTH].str, "on") != 0 && strcmp(o[O_AUTH].str, "off") != 0) {
        fprintf(stderr, "ringpay: --auth: expected on or off, got \"%s\"\n", o[O_AUTH].str);
        return -1;
    }
    *auth_on = strcmp(o[O_AUTH].str, "on") == 0;
    char why[256];
    if (cidr_list_parse(&allow_list, o[O_ALLOW].str ? o[O_ALLOW].str : "", why, sizeof(why))) {
        fprintf(stderr, "ringpay: --allow: %s\n", why);
        return -1;
    }
    if (cidr_list_parse(&ops_allow_list, o[O_OPS_ALLOW].str, why, sizeof(why))) {
        fprintf(stderr, "ringpay: --ops-allow: %s\n", why);
        return -1;
    }
    int level = log_level_parse(o[O_LOG_LEVEL].str);
    if (level < 0) {
        fprintf(stderr, "ringpay: --log-level: expected debug, info, warn or error, got \"%s\"\n",
                o[O_LOG_LEVEL].str);
        return -1;
    }
    log_set_level((enum log_level)level);
    if (accesslog_parse(o[O_ACCESS_LOG].str) < 0) {
        fprintf(stderr, "ringpay: --access-log: expected on, off or a count N >= 1, got \"%s\"\n",
                o[O_ACCESS_LOG].str);
        return -1;
    }
    return 0;
}

/* RINGPAY_SETTLE_TEST_CLOCK: 0 and the offset (0 when unset), or -1 after one line. */
static int test_clock(int64_t *offset_ms)
{
    *offset_ms = 0;
    const char *v = getenv("RINGPAY_SETTLE_TEST_CLOCK");
    if (v == NULL || v[0] == '\0')
        return 0;
    int64_t at;
    if (settle_time_parse(v, strlen(v), &at) != 0) {
        fprintf(stderr,
                "ringpay: RINGPAY_SETTLE_TEST_CLOCK: expected YYYY-MM-DDTHH:MM:SS.mmmZ, "
                "got \"%s\"\n",
                v);
        return -1;
    }
    *offset_ms = at - clock_wall_ms();
    return 0;
}

/* ---- running ------------------------------------------------------------------------ */

struct runner {
    pthread_t tid;
    struct reactor *reactor;
    int result;
    volatile int done;
};

static void *reactor_main(void *arg)
{
    struct runner *t = arg;
    pthread_setname_np(pthread_self(), "rp-settle");
    t->result = reactor_run(t->reactor);
    __atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static int try_take_over(struct opt *o, struct settle_app *app);

static int wait_for_stop(struct opt *o, struct settle_app *app, struct runner *t)
{
    for (;;) {
        int sig = signals_wait(200);
        if (sig == SIGTERM || sig == SIGINT)
            return 0;
        if (sig == SIGHUP) {
            signals_reload_keys(app->gate);
            continue;
        }
        gate_collect(app->gate);
        if (!settle_app_live(app) && try_take_over(o, app) != 0)
            return 1;
        if (__atomic_load_n(&t->done, __ATOMIC_ACQUIRE)) {
            log_write(LOG_ERROR, "the reactor stopped unexpectedly", NULL);
            return 1;
        }
    }
}

static int start_reactor(struct opt *o, struct settle_app *app)
{
    struct reactor_config rc = {
        .core = 0,
        .cpu = -1,
        .addr = o[O_LISTEN].addr,
        .addr_len = o[O_LISTEN].addr_len,
        .max_connections = (unsigned)o[O_MAXCONN].num,
        .header_timeout_ms = (unsigned)o[O_HEADER_TMO].num,
        .idle_timeout_ms = (unsigned)o[O_IDLE_TMO].num,
        .handler = &settle_app_handler,
        .handler_ctx = app,
        .route_names = settle_route_names,
        .route_count = SR_COUNT,
        .route_other = SR_OTHER,
        .access_log = (unsigned)accesslog_parse(o[O_ACCESS_LOG].str),
        .access_log_fd = 2,
    };
    char why[256] = "";
    if (reactor_create(&app->reactor, &rc, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return -1;
    }
    return 0;
}

static int start_parts(struct opt *o, struct settle_app *app, bool auth_on)
{
    char why[512] = "";
    if (gate_create(&app->gate, app->data_dir, auth_on, 1, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return -1;
    }
    gate_set_admin_only(app->gate);
    if (uploads_create(&app->uploads, app->data_dir) != 0) {
        fprintf(stderr, "ringpay: out of memory for uploads\n");
        return -1;
    }
    return 0;
}

/* The consumer and producer over the open store; then the reactor may use both. */
static int go_live(struct opt *o, struct settle_app *app)
{
    char why[512] = "";
    if (strcmp(o[O_BROKERS].str, "none") != 0) {
        struct skafka_config kc = {
            .brokers = o[O_BROKERS].str, .group = o[O_GROUP].str, .conf = o[O_KAFKA_CONF].str};
        if (skafka_start(&app->kafka, &kc, app->store, &app->cal, why, sizeof(why)) != 0) {
            fprintf(stderr, "ringpay: %s\n", why);
            log_write_str(LOG_ERROR, "cannot start the Kafka side", "reason", why, NULL);
            return -1;
        }
    }
    __atomic_store_n(&app->live, 1, __ATOMIC_RELEASE);
    return 0;
}

/* A standby's turn: the store when the directory's lock is free. 0 (still waiting or
 * taken over), or -1 on any other error. */
static int try_take_over(struct opt *o, struct settle_app *app)
{
    char why[512] = "";
    struct settle_store_options so = {.retention_days = (uint32_t)o[O_RETENTION].num};
    int rc = settle_store_open(&app->store, app->data_dir, &so, why, sizeof(why));
    if (rc == -EBUSY)
        return 0;
    if (rc != 0) {
        log_write_str(LOG_ERROR, "standby cannot open the store", "reason", why, NULL);
        return -1;
    }
    log_write_str(LOG_INFO, "standby: the data directory is free; taking over", "data",
                  app->data_dir, NULL);
    return go_live(o, app);
}

static void announce(struct opt *o, struct settle_app *app, bool auth_on)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", reactor_port(app->reactor));
    log_write_str(LOG_INFO, "settle listening", "listen", o[O_LISTEN].str, "port", port, "data",
                  app->data_dir, "kafka", o[O_BROKERS].str, "group", o[O_GROUP].str, "tz",
                  o[O_TZ].str, "cutoff", o[O_CUTOFF].str, "grace", o[O_GRACE].str, NULL);
    if (!auth_on) {
        log_write(LOG_WARN,
                  "AUTHENTICATION IS OFF (--auth off): every settle request is accepted unsigned; "
                  "for local experiments only",
                  NULL);
        fprintf(stderr, "ringpay: WARNING: --auth off: requests are not authenticated\n");
    } else if (gate_key_count(app->gate) == 0) {
        log_write_str(LOG_WARN,
                      "no API keys yet: every /v1 request is refused 401 until an admin key is "
                      "added (ringpay keys add --scope admin --data DIR) and settle gets SIGHUP",
                      "data", app->data_dir, NULL);
    }
    if (strcmp(o[O_BROKERS].str, "none") == 0)
        log_write(LOG_WARN,
                  "--kafka-brokers none: no events are consumed and nothing is "
                  "published (the outbox keeps it)",
                  NULL);
    if (app->clock_offset_ms != 0)
        log_write(LOG_WARN,
                  "RINGPAY_SETTLE_TEST_CLOCK is set: settle's clock is shifted (tests "
                  "only)",
                  NULL);
}

static int run(struct opt *o, struct settle_app *app, bool auth_on)
{
    static struct runner t;
    signals_block();
    if (start_reactor(o, app) != 0 || start_parts(o, app, auth_on) != 0)
        return 2;
    if (app->store != NULL && go_live(o, app) != 0)
        return 2;
    t.reactor = app->reactor;
    if (pthread_create(&t.tid, NULL, reactor_main, &t) != 0) {
        fprintf(stderr, "ringpay: cannot start the reactor thread\n");
        return 2;
    }
    announce(o, app, auth_on);
    int code = wait_for_stop(o, app, &t);
    reactor_stop(app->reactor);
    pthread_join(t.tid, NULL);
    if (t.result != 0)
        code = 1;
    /* The reactor thread is done: this thread owns the store from here. */
    skafka_stop(app->kafka, 2000);
    uploads_destroy(app->uploads);
    gate_destroy(app->gate);
    reactor_destroy(app->reactor);
    settle_store_close(app->store);
    log_write(LOG_INFO, "stopped", NULL);
    return code;
}

int cmd_settle_dlq(int argc, char **argv);

int cmd_settle(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "dlq") == 0)
        return cmd_settle_dlq(argc - 1, argv + 1);
    struct opt o[O_COUNT];
    char recon_def[24];
    opts_init(o, recon_def, sizeof(recon_def));
    int rc = config_parse(o, O_COUNT, argc, argv, settle_usage);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (o[O_BROKERS].str == NULL) {
        fprintf(stderr, "ringpay: --kafka-brokers is required (the address `ringpay serve` "
                        "prints for its embedded cluster, or none)\n");
        return 2;
    }
    static struct settle_app app;
    bool auth_on;
    if (parse_edge(o, &auth_on) != 0 || parse_calendar(o, &app.cal) != 0 ||
        test_clock(&app.clock_offset_ms) != 0)
        return 2;
    app.data_dir = o[O_DATA].str;
    app.allow = allow_list.count ? &allow_list : NULL;
    app.ops_allow = &ops_allow_list;
    app.recon_max_bytes = o[O_RECON_MAX].num;
    app.close_poll_ms = o[O_CLOSE_POLL].num;
    if (o[O_SHARED].set && o[O_STANDBY].set) {
        fprintf(stderr, "ringpay: --shared and --standby exclude each other (a --shared member is "
                        "active at once)\n");
        return 2;
    }
    struct settle_store_options so = {.retention_days = (uint32_t)o[O_RETENTION].num,
                                      .shared = o[O_SHARED].set};
    char why[512] = "";
    int err = settle_store_open(&app.store, app.data_dir, &so, why, sizeof(why));
    if (err == -EBUSY && o[O_STANDBY].set) {
        log_write_str(LOG_INFO, "standby: another settle holds the data directory; waiting", "data",
                      app.data_dir, NULL);
    } else if (err != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return 2;
    }
    return run(o, &app, auth_on);
}
