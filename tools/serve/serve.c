/*
 * `ringpay serve`: the composition of the engine. It holds no request logic; it starts
 * the parts and connects them:
 *
 *   reactors (net/reactor.h)  --app_handler (app.h)-->  dispatch (dispatch.h)
 *        ^                                                  |  jobs over the mesh
 *        +---------------- mesh (net/xcore.h) <-------------+
 *                                 |
 *                          shards (shards.h) -> store/shard.h -> LMDB
 *
 * Start-up order: configuration (fail with one line), the data directory and its lock,
 * reactors (core 0 first, so that port 0 picks one port that the others then share
 * through SO_REUSEPORT), the Kafka side (the embedded cluster unless --kafka-brokers;
 * kafka.h), the mesh, the shard threads with their replicators, the job pools, the
 * reactor threads, readiness. SIGTERM/SIGINT stop accepting, let every reactor finish its
 * in-flight requests, stop the shards (which answer what is queued and give their
 * producers up to 2 s to deliver), stop the embedded cluster, and exit 0.
 * Signals are blocked in every thread and taken by the main thread with sigtimedwait,
 * so no handler runs on a reactor.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/limits.h"
#include "net/accesslog.h"
#include "net/cidr.h"
#include "net/log.h"
#include "net/reactor.h"
#include "net/xcore.h"
#include "store/dirlock.h"
#include "tools/cmd.h"
#include "tools/config.h"
#include "tools/serve/app.h"
#include "tools/serve/dispatch.h"
#include "tools/serve/gate.h"
#include "tools/serve/kafka.h"
#include "tools/serve/shards.h"
#include "tools/signals.h"

static const char serve_usage[] =
    "usage: ringpay serve [options]\n\n"
    "Runs the payment engine: the HTTP API on --listen, one pinned io_uring reactor per\n"
    "core. SIGTERM or SIGINT stops accepting, finishes in-flight requests and exits 0.";

struct serve_thread {
    pthread_t tid;
    struct reactor *reactor;
    int result;
    volatile int done;
};

static void *reactor_main(void *arg)
{
    struct serve_thread *t = arg;
    char name[16];
    snprintf(name, sizeof(name), "rp-reactor-%u", reactor_core(t->reactor));
    pthread_setname_np(pthread_self(), name);
    t->result = reactor_run(t->reactor);
    __atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int make_dir(const char *dir)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && access(dir, W_OK) == 0)
            return 0;
    }
    fprintf(stderr, "ringpay: --data %s: not a writable directory (%s)\n", dir,
            errno ? strerror(errno) : "not a directory");
    return -1;
}

/* SIGHUP: the key file again. A file the reader refuses keeps the keys in force. */
/* Waits for SIGTERM/SIGINT (stop) or a reactor failing; returns the exit code. SIGHUP
 * reloads the keys; every tick frees key sets no reactor can hold any more. */
static int wait_for_stop(struct app *app, struct serve_thread *threads)
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
        for (unsigned i = 0; i < app->cores; i++)
            if (__atomic_load_n(&threads[i].done, __ATOMIC_ACQUIRE)) {
                log_write(LOG_ERROR, "a reactor stopped unexpectedly", NULL);
                return 1;
            }
    }
}

enum {
    O_LISTEN,
    O_CORES,
    O_DATA,
    O_MAXCONN,
    O_HEADER_TMO,
    O_IDLE_TMO,
    O_IDEM_TTL,
    O_LOG_LEVEL,
    O_ACCESS_LOG,
    O_JOBS,
    O_AUTH,
    O_ALLOW,
    O_OPS_ALLOW,
    O_PROXY,
    O_MERCHANT_RPS,
    O_MERCHANT_BURST,
    O_CLIENT_RPS,
    O_CLIENT_BURST,
    O_CLIENT_CONNS,
    O_WAL,
    O_WAL_SEGMENT,
    O_OVERLAY,
    O_CKPT_OPS,
    O_CKPT_MS,
    O_KAFKA_BROKERS,
    O_KAFKA_CONF,
    O_REPLICATION,
    O_REPL_EVENTS,
    O_REPL_BYTES,
    O_COUNT
};

static struct xcore mesh;
static struct kafka *kafka;

/* The Kafka side (tools/serve/kafka.h): the embedded cluster unless --kafka-brokers. */
static int start_kafka(struct opt *o)
{
    char why[512] = "";
    bool on = strcmp(o[O_REPLICATION].str, "on") == 0;
    if (!on && strcmp(o[O_REPLICATION].str, "off") != 0) {
        fprintf(stderr, "ringpay: --replication: expected on or off, got \"%s\"\n",
                o[O_REPLICATION].str);
        return -1;
    }
    struct kafka_config kc = {
        .brokers = o[O_KAFKA_BROKERS].set ? o[O_KAFKA_BROKERS].str : NULL,
        .replication = on,
        .backlog_events_max = o[O_REPL_EVENTS].num,
        .backlog_bytes_max = o[O_REPL_BYTES].num,
        .conf = o[O_KAFKA_CONF].set ? o[O_KAFKA_CONF].str : NULL,
    };
    if (kafka_start(&kafka, &kc, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return -1;
    }
    return 0;
}

/* Who may call, and who speaks PROXY protocol (SPEC §3): parsed once at start, read by
 * every reactor. */
static struct cidr_list allow_list, ops_allow_list, proxy_list;
static bool auth_on;

/* The --auth, --allow, --ops-allow and --proxy-protocol values; one line and -1 when
 * one is wrong. */
static int parse_edge(struct opt *o)
{
    const char *auth = o[O_AUTH].str;
    if (strcmp(auth, "on") != 0 && strcmp(auth, "off") != 0) {
        fprintf(stderr, "ringpay: --auth: expected on or off, got \"%s\"\n", auth);
        return -1;
    }
    auth_on = strcmp(auth, "on") == 0;
    static const struct {
        int opt;
        struct cidr_list *list;
    } lists[] = {{O_ALLOW, &allow_list}, {O_OPS_ALLOW, &ops_allow_list}, {O_PROXY, &proxy_list}};
    for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
        char why[256];
        const char *text = o[lists[i].opt].str ? o[lists[i].opt].str : "";
        if (cidr_list_parse(lists[i].list, text, why, sizeof(why)) != 0) {
            fprintf(stderr, "ringpay: --%s: %s\n", o[lists[i].opt].name, why);
            return -1;
        }
    }
    return 0;
}

/* Says loudly when requests are not authenticated, or cannot be. */
static void warn_about_auth(struct app *app, const char *data_dir)
{
    if (!gate_enabled(app->gate)) {
        log_write(LOG_WARN,
                  "AUTHENTICATION IS OFF (--auth off): every API request is accepted unsigned, "
                  "from anyone who can reach the port; for local experiments only",
                  NULL);
        fprintf(stderr, "ringpay: WARNING: --auth off: requests are not authenticated\n");
    } else if (gate_key_count(app->gate) == 0) {
        log_write_str(LOG_WARN,
                      "no API keys yet: every /v1 request is refused 401 until one is added "
                      "(ringpay keys add --data DIR --merchant ID) and the engine gets SIGHUP",
                      "data", data_dir, NULL);
    }
}

/* The mesh, the shard threads and the job pools, once the reactors exist. */
static int start_parts(struct opt *o, struct app *app)
{
    char why[512] = "";
    int err = xcore_init(&mesh, 2 * app->cores, XCORE_RING_SLOTS, sizeof(struct shard_job *));
    if (err) {
        fprintf(stderr, "ringpay: cannot set up cross-core rings: %s\n", strerror(-err));
        return -1;
    }
    for (unsigned i = 0; i < app->cores; i++)
        xcore_set_ring_fd(&mesh, i, reactor_ring_fd(app->reactors[i]));
    struct shards_config sc = {
        .data_dir = o[O_DATA].str,
        .cores = app->cores,
        .idem_ttl_ms = (int64_t)o[O_IDEM_TTL].num * 3600 * 1000,
        .mesh = &mesh,
        .merchant_budget = {.rate_per_s = (uint32_t)o[O_MERCHANT_RPS].num,
                            .burst = (uint32_t)o[O_MERCHANT_BURST].num},
        .store = {.wal = strcmp(o[O_WAL].str, "on") == 0,
                  .wal_segment_bytes = (size_t)o[O_WAL_SEGMENT].num << 20,
                  .overlay_bytes = (size_t)o[O_OVERLAY].num << 20,
                  .checkpoint_ops = (uint64_t)o[O_CKPT_OPS].num,
                  .checkpoint_ms = (uint32_t)o[O_CKPT_MS].num},
        .kafka = kafka,
    };
    if (shards_start(&app->shards, &sc, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return -1;
    }
    if (dispatch_create(&app->dispatch, app->cores, (unsigned)o[O_JOBS].num, &mesh) != 0) {
        fprintf(stderr, "ringpay: out of memory for the job pools\n");
        return -1;
    }
    return 0;
}

/* The signing gate and the allow-lists, before any reactor runs. */
static int start_gate(struct opt *o, struct app *app)
{
    char why[512] = "";
    if (gate_create(&app->gate, o[O_DATA].str, auth_on, app->cores, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return -1;
    }
    app->allow = allow_list.count ? &allow_list : NULL;
    app->ops_allow = &ops_allow_list;
    return 0;
}

static int start(struct opt *o, struct app *app, struct serve_thread *threads)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    struct reactor_config rc = {
        .addr = o[O_LISTEN].addr,
        .addr_len = o[O_LISTEN].addr_len,
        .max_connections = (unsigned)o[O_MAXCONN].num,
        .header_timeout_ms = (unsigned)o[O_HEADER_TMO].num,
        .idle_timeout_ms = (unsigned)o[O_IDLE_TMO].num,
        .handler = &app_handler,
        .handler_ctx = app,
        .route_names = app_route_names,
        .route_count = ROUTE_COUNT,
        .route_other = ROUTE_OTHER,
        .access_log = (unsigned)accesslog_parse(o[O_ACCESS_LOG].str),
        .access_log_fd = 2,
        .proxy_from = proxy_list.count ? &proxy_list : NULL,
        .client_budget = {.rate_per_s = (uint32_t)o[O_CLIENT_RPS].num,
                          .burst = (uint32_t)o[O_CLIENT_BURST].num},
        .client_max_conns = (unsigned)o[O_CLIENT_CONNS].num,
    };
    for (unsigned i = 0; i < app->cores; i++) {
        char why[256] = "";
        rc.core = i;
        rc.cpu = (int)(i % (unsigned)(online > 0 ? online : 1));
        int err = reactor_create(&app->reactors[i], &rc, why, sizeof(why));
        if (err) {
            fprintf(stderr, "ringpay: %s\n", why);
            return -1;
        }
        if (i == 0) { /* port 0: every core shares the port core 0 got */
            uint16_t port = htons((uint16_t)reactor_port(app->reactors[0]));
            if (rc.addr.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&rc.addr)->sin6_port = port;
            else
                ((struct sockaddr_in *)&rc.addr)->sin_port = port;
        }
        threads[i].reactor = app->reactors[i];
    }
    if (start_kafka(o) != 0 || start_parts(o, app) != 0 || start_gate(o, app) != 0)
        return -1;
    for (unsigned i = 0; i < app->cores; i++)
        if (pthread_create(&threads[i].tid, NULL, reactor_main, &threads[i]) != 0) {
            fprintf(stderr, "ringpay: cannot start reactor thread %u\n", i);
            return -1;
        }
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    char cores_def[24], jobs_def[24], merchant_rps_def[24], merchant_burst_def[24];
    char client_rps_def[24], client_burst_def[24], repl_events_def[24], repl_bytes_def[24];
    snprintf(jobs_def, sizeof(jobs_def), "%d", JOB_SMALL_PER_CORE);
    snprintf(merchant_rps_def, sizeof(merchant_rps_def), "%d", MERCHANT_RPS_DEFAULT);
    snprintf(merchant_burst_def, sizeof(merchant_burst_def), "%d", MERCHANT_BURST_DEFAULT);
    snprintf(client_rps_def, sizeof(client_rps_def), "%d", CLIENT_RPS_DEFAULT);
    snprintf(client_burst_def, sizeof(client_burst_def), "%d", CLIENT_BURST_DEFAULT);
    snprintf(repl_events_def, sizeof(repl_events_def), "%llu", REPL_BACKLOG_EVENTS_DEFAULT);
    snprintf(repl_bytes_def, sizeof(repl_bytes_def), "%llu", REPL_BACKLOG_BYTES_DEFAULT);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(cores_def, sizeof(cores_def), "%ld", online > 0 ? online : 1);
    struct opt o[O_COUNT] = {
        [O_LISTEN] = {"listen", OPT_ADDR, "127.0.0.1:8080", "HTTP address HOST:PORT"},
        [O_CORES] = {"cores", OPT_UINT, cores_def, "pinned reactors (and shards)", 1, CORES_MAX},
        [O_DATA] = {"data", OPT_STRING, "./data", "data directory"},
        [O_MAXCONN] = {"max-connections", OPT_UINT, "4096", "open connections per core", 1,
                       CONN_PER_CORE_MAX},
        [O_HEADER_TMO] = {"header-timeout-ms", OPT_UINT, "10000",
                          "time to receive a whole request (408 after)", 10, 3600000},
        [O_IDLE_TMO] = {"idle-timeout-ms", OPT_UINT, "75000",
                        "idle keep-alive connections are closed after", 10, 86400000},
        [O_IDEM_TTL] = {"idempotency-ttl-hours", OPT_UINT, "24",
                        "keep idempotency keys this long (at least 24)", 24, 24 * 366},
        [O_LOG_LEVEL] = {"log-level", OPT_STRING, "info", "debug, info, warn or error"},
        [O_ACCESS_LOG] = {"access-log", OPT_STRING, "on",
                          "an access line per request: on, off, or N (one request in N)"},
        [O_JOBS] = {"jobs-per-core", OPT_UINT, jobs_def,
                    "payment requests in flight per core (memory: ~7 KiB each)", 16,
                    JOB_SMALL_PER_CORE},
        [O_AUTH] = {"auth", OPT_STRING, "on",
                    "on: every /v1 request must be signed (SPEC §3); off: for local "
                    "experiments only"},
        [O_ALLOW] = {"allow", OPT_STRING, NULL, "CIDRs that may call at all (unset: everyone)"},
        [O_OPS_ALLOW] = {"ops-allow", OPT_STRING, "127.0.0.0/8,::1",
                         "CIDRs that may call /metrics and /readyz"},
        [O_PROXY] = {"proxy-protocol", OPT_STRING, NULL,
                     "CIDRs of L4 balancers that send a PROXY v1/v2 header (unset: none)"},
        [O_MERCHANT_RPS] = {"merchant-rps", OPT_UINT, merchant_rps_def,
                            "requests/s per merchant, kept by its shard (0: no limit)", 0,
                            BUCKET_RATE_MAX},
        [O_MERCHANT_BURST] = {"merchant-burst", OPT_UINT, merchant_burst_def,
                              "burst of requests per merchant", 1, BUCKET_BURST_MAX},
        [O_CLIENT_RPS] = {"client-rps", OPT_UINT, client_rps_def,
                          "requests/s per client address on each core (0: no limit)", 0,
                          BUCKET_RATE_MAX},
        [O_CLIENT_BURST] = {"client-burst", OPT_UINT, client_burst_def,
                            "burst of requests per client address on each core", 1,
                            BUCKET_BURST_MAX},
        [O_CLIENT_CONNS] = {"client-max-connections", OPT_UINT, "0",
                            "open connections per client address on each core (0: only "
                            "--max-connections)",
                            0, CONN_PER_CORE_MAX},
        [O_WAL] = {"wal", OPT_STRING, "on",
                   "on: answers after one sequential write-ahead log fsync, LMDB written by "
                   "checkpoints; off: after an LMDB commit"},
        [O_WAL_SEGMENT] = {"wal-segment-mb", OPT_UINT, "64", "size of one log segment file", 1,
                           1024},
        [O_OVERLAY] = {"overlay-mb", OPT_UINT, "256",
                       "memory of each of a shard's two overlay layers (changes since the last "
                       "checkpoint)",
                       4, 16384},
        [O_CKPT_OPS] = {"checkpoint-ops", OPT_UINT, "32768",
                        "a checkpoint starts when the overlay holds this many operations", 1,
                        100000000},
        [O_CKPT_MS] = {"checkpoint-ms", OPT_UINT, "2000",
                       "...or when this long passed since the last one", 1, 3600000},
        [O_KAFKA_BROKERS] = {"kafka-brokers", OPT_STRING, NULL,
                             "Kafka bootstrap servers HOST:PORT,... (default: an embedded "
                             "in-memory cluster)"},
        [O_KAFKA_CONF] = {"kafka-conf", OPT_STRING, NULL,
                          "extra librdkafka producer settings name=value;name=value"},
        [O_REPLICATION] = {"replication", OPT_STRING, "on",
                           "on, or off (benchmarks: events stay in the outbox, unsent)"},
        [O_REPL_EVENTS] = {"replication-backlog-events", OPT_UINT, repl_events_def,
                           "unreplicated events per shard before state changes get 503", 1,
                           1000000000000ULL},
        [O_REPL_BYTES] = {"replication-backlog-bytes", OPT_UINT, repl_bytes_def,
                          "unreplicated event bytes per shard before state changes get 503", 1,
                          1ULL << 50},
    };
    int rc = config_parse(o, O_COUNT, argc, argv, serve_usage);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    int level = log_level_parse(o[O_LOG_LEVEL].str);
    if (level < 0) {
        fprintf(stderr, "ringpay: --log-level: expected debug, info, warn or error, got \"%s\"\n",
                o[O_LOG_LEVEL].str);
        return 2;
    }
    log_set_level((enum log_level)level);
    int access_log = accesslog_parse(o[O_ACCESS_LOG].str);
    if (access_log < 0) {
        fprintf(stderr, "ringpay: --access-log: expected on, off or a count N >= 1, got \"%s\"\n",
                o[O_ACCESS_LOG].str);
        return 2;
    }
    if (strcmp(o[O_WAL].str, "on") != 0 && strcmp(o[O_WAL].str, "off") != 0) {
        fprintf(stderr, "ringpay: --wal: expected on or off, got \"%s\"\n", o[O_WAL].str);
        return 2;
    }
    if (parse_edge(o) != 0)
        return 2;
    if (make_dir(o[O_DATA].str) != 0)
        return 2;
    /* Held until the process exits: one engine per data directory (SPEC §1). */
    static struct dirlock lock;
    char why[512];
    if (dirlock_acquire(&lock, o[O_DATA].str, true, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return 2;
    }
    raise_fd_limit();

    signals_block(); /* before any thread exists */

    static struct app app;
    static struct serve_thread threads[CORES_MAX];
    app.cores = (unsigned)o[O_CORES].num;
    if (start(o, &app, threads) != 0)
        return 2;
    __atomic_store_n(&app.ready, 1, __ATOMIC_RELEASE);
    char port[16], cores[16];
    snprintf(port, sizeof(port), "%d", reactor_port(app.reactors[0]));
    snprintf(cores, sizeof(cores), "%u", app.cores);
    log_write_str(LOG_INFO, "listening", "listen", o[O_LISTEN].str, "port", port, "cores", cores,
                  "data", o[O_DATA].str, "kafka", kafka_brokers(kafka), NULL);
    if (kafka_embedded(kafka))
        log_write_str(LOG_WARN,
                      "kafka: embedded cluster (librdkafka's mock brokers): it keeps messages "
                      "in memory only and loses them at exit; use --kafka-brokers for a real "
                      "cluster",
                      "kafka", kafka_brokers(kafka), NULL);
    else if (kafka_brokers(kafka)[0] == '\0')
        log_write(LOG_WARN, "replication is off: events stay in the outbox, unsent", NULL);

    warn_about_auth(&app, o[O_DATA].str);
    int code = wait_for_stop(&app, threads);
    for (unsigned i = 0; i < app.cores; i++)
        reactor_stop(app.reactors[i]);
    for (unsigned i = 0; i < app.cores; i++) {
        pthread_join(threads[i].tid, NULL);
        if (threads[i].result != 0)
            code = 1;
    }
    /* Reactors are done (their in-flight jobs answered or abandoned): stop the shards,
     * which finish whatever is still queued, then free the pools, the mesh and the
     * reactors. */
    shards_stop(app.shards);
    kafka_stop(kafka);
    dispatch_destroy(app.dispatch);
    gate_destroy(app.gate);
    xcore_destroy(&mesh);
    for (unsigned i = 0; i < app.cores; i++)
        reactor_destroy(app.reactors[i]);
    log_write(LOG_INFO, "stopped", NULL);
    return code;
}
