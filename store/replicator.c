/*
 * The Kafka replicator of one shard (see replicator.h for the contract).
 *
 * Invariants:
 * - Everything in (window.mark, window.sent] was handed to the CURRENT producer exactly
 *   once; a delivery report of that producer names one of those events (or one below
 *   the mark, after an earlier report made it redundant: it is ignored). Replacing the
 *   producer destroys the old one first, which drops its pending reports, and rewinds
 *   the window to the mark: a report can never come from a producer the window forgot.
 * - window.sent <= shard_store_event_durable(): nothing leaves before its commit is
 *   durable. The mark handed to the store is window.mark, so the stored mark only ever
 *   names delivered events.
 * - The backlog bytes are exact: the bytes of the events above the stored mark at
 *   create (one scan), plus every event committed since, minus every event the mark
 *   passed since.
 * - stats are written by the shard thread only (relaxed atomic stores) and read by any
 *   thread (relaxed loads).
 */
#define _GNU_SOURCE
#include "store/replicator.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/json.h"
#include "engine/limits.h"
#include "store/repl_window.h"

const char *const replicator_error_names[REPL_ERR_KINDS] = {
    [REPL_ERR_TRANSPORT] = "transport", [REPL_ERR_DELIVERY] = "delivery",
    [REPL_ERR_FATAL] = "fatal",         [REPL_ERR_PRODUCE] = "produce",
    [REPL_ERR_OTHER] = "other",
};

const uint32_t replicator_lag_bounds_ms[REPL_LAG_BUCKETS] = {
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 250, 1000, 5000, 30000, 300000,
};

/* librdkafka's own log lines that reach our log in one window of this many ms, at
 * most; the rest are counted and reported once (a broker that refuses connections
 * makes one line per reconnect and broker). */
#define REPL_LOG_WINDOW_MS  10000
#define REPL_LOG_PER_WINDOW 10

/* A producer with events outstanding and no delivery report for this long counts as
 * down in /metrics. */
#define REPL_STALL_MS 5000

struct topic {
    char name[REPL_TOPIC_MAX_BYTES + 1];
    rd_kafka_topic_t *rkt;
};

struct replicator {
    struct shard_store *store;
    unsigned shard;
    char brokers[1024];
    const char *const *conf;
    replicator_log_fn log;
    void *log_ctx;
    int wake_fd;
    uint64_t events_max, bytes_max;

    rd_kafka_t *rk; /* NULL while a failed producer waits for its back-off */
    struct topic topics[REPL_TOPICS_MAX];
    unsigned topic_n;
    struct repl_window win;

    /* Set by callbacks inside rd_kafka_poll, acted on after it returns. */
    const char *restart_why; /* NULL, or why the producer must be replaced */
    char restart_detail[512];
    bool all_down;          /* all brokers reported down, no delivery since */
    bool scan_failed;       /* the last refill could not read the outbox */
    uint64_t progress_ns;   /* last delivery report (or when the window was empty) */
    uint64_t retry_at_ns;   /* when rk == NULL: create the next producer then */
    uint64_t backoff_ms;    /* next back-off */
    uint64_t last_commit_n; /* the store's commit count last seen */
    uint64_t last_commit_ns;

    uint64_t bytes_at_open; /* backlog bytes above the stored mark at create */
    uint64_t bytes_base;    /* the store's event_bytes at create */
    uint64_t bytes_passed;  /* bytes the mark passed since create */
    uint64_t log_window_ns; /* start of the current log window (shard thread) */
    unsigned log_lines;     /* librdkafka lines logged in it */
    unsigned log_dropped;   /* ... and not logged */

    struct replicator_stats stats;
};

/* ---- small helpers ---------------------------------------------------------------- */

static void stat_set(uint64_t *field, uint64_t v)
{
    __atomic_store_n(field, v, __ATOMIC_RELAXED);
}

static void stat_add(uint64_t *field, uint64_t delta)
{
    stat_set(field, __atomic_load_n(field, __ATOMIC_RELAXED) + delta);
}

static void say(const struct replicator *r, enum replicator_log_level level, const char *msg,
                const char *detail)
{
    if (r->log)
        r->log(r->log_ctx, level, r->shard, msg, detail);
}

/* The commit time of an event: its "occurred_at" (engine/apply.c renders it third,
 * "YYYY-MM-DDTHH:MM:SS.mmmZ"), in ms since the epoch; -1 when absent or malformed. */
static int64_t occurred_ms(const char *json, size_t len)
{
    static const char key[] = "\"occurred_at\":\"";
    const char *p = memmem(json, len < 160 ? len : 160, key, sizeof(key) - 1);
    if (p == NULL)
        return -1;
    p += sizeof(key) - 1;
    if ((size_t)(json + len - p) < JSON_TIME_BYTES)
        return -1;
    int v[7];
    static const int at[7] = {0, 5, 8, 11, 14, 17, 20};
    static const int width[7] = {4, 2, 2, 2, 2, 2, 3};
    for (int i = 0; i < 7; i++) {
        v[i] = 0;
        for (int k = 0; k < width[i]; k++) {
            char c = p[at[i] + k];
            if (c < '0' || c > '9')
                return -1;
            v[i] = v[i] * 10 + (c - '0');
        }
    }
    if (p[23] != 'Z' || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31)
        return -1;
    /* Days from civil (proleptic Gregorian), the inverse of json_format_time. */
    int y = v[0] - (v[1] <= 2);
    int era = y / 400;
    int yoe = y - era * 400;
    int mp = (v[1] + 9) % 12;
    int doy = (153 * mp + 2) / 5 + v[2] - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + doe - 719468;
    return ((days * 24 + v[3]) * 60 + v[4]) * 60000 + (int64_t)v[5] * 1000 + v[6];
}

static void lag_observe(struct replicator *r, int64_t occurred)
{
    if (occurred < 0)
        return;
    int64_t lag = clock_wall_ms() - occurred;
    if (lag < 0)
        lag = 0; /* the wall clock stepped back */
    unsigned b = 0;
    while (b < REPL_LAG_BUCKETS && (uint64_t)lag > replicator_lag_bounds_ms[b])
        b++;
    if (b < REPL_LAG_BUCKETS)
        stat_add(&r->stats.lag_buckets[b], 1);
    stat_add(&r->stats.lag_count, 1);
    stat_add(&r->stats.lag_sum_ms, (uint64_t)lag);
}

/* ---- librdkafka callbacks (inside rd_kafka_poll, on the shard thread) ---------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct replicator *r = opaque;
    uint64_t seq = (uint64_t)(uintptr_t)m->_private;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        int64_t occurred = -1;
        if (repl_window_ack(&r->win, seq, &occurred) == 0)
            lag_observe(r, occurred);
        stat_add(&r->stats.delivered, 1);
        if (r->all_down)
            say(r, REPL_LOG_INFO, "kafka: delivering again", r->brokers);
        r->all_down = false;
        r->progress_ns = clock_mono_ns();
        r->backoff_ms = REPL_RECREATE_BACKOFF_MIN_MS;
        return;
    }
    /* Under a fatal error every outstanding message fails with _FATAL: the error
     * callback counts that once. Anything else failed for good: resend it all. */
    if (m->err != RD_KAFKA_RESP_ERR__FATAL)
        stat_add(&r->stats.errors[REPL_ERR_DELIVERY], 1);
    if (r->restart_why == NULL) {
        r->restart_why = m->err == RD_KAFKA_RESP_ERR__FATAL ? "fatal producer error"
                                                            : "a message failed for good";
        snprintf(r->restart_detail, sizeof(r->restart_detail), "event %llu: %s",
                 (unsigned long long)seq, rd_kafka_err2str(m->err));
    }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct replicator *r = opaque;
    switch (err) {
    case RD_KAFKA_RESP_ERR__FATAL: {
        char why[400];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof(why));
        stat_add(&r->stats.errors[REPL_ERR_FATAL], 1);
        r->restart_why = "fatal producer error";
        snprintf(r->restart_detail, sizeof(r->restart_detail), "%s: %s", rd_kafka_err2name(orig),
                 why);
        return;
    }
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
        if (!r->all_down)
            say(r, REPL_LOG_WARN, "kafka: all brokers are down; events wait in the outbox", reason);
        r->all_down = true;
        stat_add(&r->stats.errors[REPL_ERR_TRANSPORT], 1);
        return;
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__RESOLVE:
        stat_add(&r->stats.errors[REPL_ERR_TRANSPORT], 1);
        return;
    default:
        stat_add(&r->stats.errors[REPL_ERR_OTHER], 1);
        say(r, REPL_LOG_WARN, "kafka: producer error", reason);
        return;
    }
}

/* librdkafka's own lines, forwarded through the main queue (log.queue), so this runs on
 * the shard thread and may keep plain counters. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct replicator *r = rd_kafka_opaque(rk);
    /* We set enable.gapless.guarantee on purpose (see replicator.h); librdkafka warns
     * that it is experimental at every producer it creates. */
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "enable.gapless.guarantee") != NULL)
        return;
    uint64_t now = clock_mono_ns();
    if (now - r->log_window_ns >= (uint64_t)REPL_LOG_WINDOW_MS * 1000000) {
        if (r->log_dropped > 0) {
            char n[64];
            snprintf(n, sizeof(n), "%u lines", r->log_dropped);
            say(r, REPL_LOG_WARN, "kafka: librdkafka log lines suppressed", n);
        }
        r->log_window_ns = now;
        r->log_lines = 0;
        r->log_dropped = 0;
    }
    if (r->log_lines >= REPL_LOG_PER_WINDOW) {
        r->log_dropped++;
        return;
    }
    r->log_lines++;
    enum replicator_log_level lv = level <= 3   ? REPL_LOG_ERROR
                                   : level == 4 ? REPL_LOG_WARN
                                                : REPL_LOG_INFO;
    say(r, lv, "kafka: librdkafka", buf);
}

/* ---- the producer ----------------------------------------------------------------- */

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *why,
                    size_t why_bytes)
{
    char err[256];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) == RD_KAFKA_CONF_OK)
        return 0;
    /* Never the value: it may be a password (sasl.password through --kafka-conf), and
     * librdkafka's own message quotes it when it is invalid. */
    bool secret = strstr(name, "password") || strstr(name, "secret") || strstr(name, ".key");
    snprintf(why, why_bytes, "kafka setting %s: %s", name,
             secret ? "invalid (the value is not shown)" : err);
    return -EINVAL;
}

/* Our settings, then the caller's extra ones. */
static int conf_fill(const struct replicator *r, rd_kafka_conf_t *conf, char *why, size_t why_bytes)
{
    char client_id[32], window[16], backoff[16], linger[16];
    snprintf(client_id, sizeof(client_id), "ringpay-shard-%u", r->shard);
    snprintf(linger, sizeof(linger), "%d", REPL_LINGER_MS);
    snprintf(window, sizeof(window), "%u", r->win.cap);
    snprintf(backoff, sizeof(backoff), "%d", REPL_RECONNECT_BACKOFF_MAX_MS);
    const char *const ours[][2] = {
        {"bootstrap.servers", r->brokers},
        {"client.id", client_id},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"message.timeout.ms", "0"},
        {"enable.gapless.guarantee", "true"},
        {"queue.buffering.max.messages", window},
        {"reconnect.backoff.max.ms", backoff},
        {"partitioner", "murmur2_random"},
        {"socket.nagle.disable", "true"},
        {"linger.ms", linger},
        {"log.queue", "true"},
        {"log.connection.close", "false"},
    };
    for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
        if (conf_set(conf, ours[i][0], ours[i][1], why, why_bytes))
            return -EINVAL;
    for (const char *const *c = r->conf; c && *c; c++) {
        const char *eq = strchr(*c, '=');
        char name[128];
        if (eq == NULL || (size_t)(eq - *c) >= sizeof(name)) {
            snprintf(why, why_bytes, "kafka setting \"%s\": expected name=value", *c);
            return -EINVAL;
        }
        memcpy(name, *c, (size_t)(eq - *c));
        name[eq - *c] = '\0';
        if (conf_set(conf, name, eq + 1, why, why_bytes))
            return -EINVAL;
    }
    return 0;
}

static int producer_create(struct replicator *r, char *why, size_t why_bytes)
{
    ASSERT(r->rk == NULL && r->topic_n == 0);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf == NULL)
        return -ENOMEM;
    int err = conf_fill(r, conf, why, why_bytes);
    if (err) {
        rd_kafka_conf_destroy(conf);
        return err;
    }
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    char errstr[512];
    r->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (r->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        snprintf(why, why_bytes, "kafka producer: %s", errstr);
        return -EINVAL;
    }
    /* Logs go to the main queue (log.queue) and the main queue wakes our fd. */
    rd_kafka_set_log_queue(r->rk, NULL);
    rd_kafka_queue_t *q = rd_kafka_queue_get_main(r->rk);
    static const uint64_t one = 1; /* an eventfd takes 8-byte writes */
    rd_kafka_queue_io_event_enable(q, r->wake_fd, &one, sizeof(one));
    rd_kafka_queue_destroy(q);
    r->progress_ns = clock_mono_ns();
    r->all_down = false;
    return 0;
}

/* Destroys the producer: its pending reports are dropped with it (rd_kafka_destroy
 * purges the main queue without calling back). */
static void producer_destroy(struct replicator *r)
{
    if (r->rk == NULL)
        return;
    for (unsigned i = 0; i < r->topic_n; i++)
        rd_kafka_topic_destroy(r->topics[i].rkt);
    r->topic_n = 0;
    rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
                              RD_KAFKA_PURGE_F_NON_BLOCKING);
    rd_kafka_destroy(r->rk);
    r->rk = NULL;
}

/* Replaces a failed producer: destroy it now, rewind to the mark, create the next one
 * after the back-off (replicator_poll). */
static void producer_restart(struct replicator *r)
{
    uint64_t t0 = clock_mono_ns();
    producer_destroy(r);
    char detail[700];
    snprintf(detail, sizeof(detail),
             "%s; resending from event %llu after %llu ms (destroy took %llu ms)",
             r->restart_detail, (unsigned long long)r->win.mark, (unsigned long long)r->backoff_ms,
             (unsigned long long)((clock_mono_ns() - t0) / 1000000));
    say(r, REPL_LOG_ERROR, r->restart_why, detail);
    repl_window_reset(&r->win);
    r->restart_why = NULL;
    r->retry_at_ns = clock_mono_ns() + r->backoff_ms * 1000000;
    r->backoff_ms *= 2;
    if (r->backoff_ms > REPL_RECREATE_BACKOFF_MAX_MS)
        r->backoff_ms = REPL_RECREATE_BACKOFF_MAX_MS;
    stat_add(&r->stats.recreated, 1);
}

/* The cached topic handle for a topic name (not NUL-terminated), or NULL. */
static rd_kafka_topic_t *topic_of(struct replicator *r, const char *name, size_t len)
{
    for (unsigned i = 0; i < r->topic_n; i++)
        if (strlen(r->topics[i].name) == len && memcmp(r->topics[i].name, name, len) == 0)
            return r->topics[i].rkt;
    if (r->topic_n == REPL_TOPICS_MAX || len == 0 || len > REPL_TOPIC_MAX_BYTES)
        return NULL;
    struct topic *t = &r->topics[r->topic_n];
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    t->rkt = rd_kafka_topic_new(r->rk, t->name, NULL);
    if (t->rkt == NULL)
        return NULL;
    r->topic_n++;
    return t->rkt;
}

/* ---- the window ------------------------------------------------------------------- */

struct refill {
    struct replicator *r;
    uint64_t last; /* send nothing above this (the durable event) */
};

static int send_one(void *arg, const struct shard_event *ev)
{
    struct refill *f = arg;
    struct replicator *r = f->r;
    if (ev->seq > f->last)
        return 1;
    /* The outbox is gapless (ringpay check verifies it): a hole would stall the mark. */
    ASSERT(ev->seq == r->win.sent + 1);
    int64_t occurred = occurred_ms(ev->value, ev->value_len);
    rd_kafka_topic_t *rkt = topic_of(r, ev->topic, ev->topic_len);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    if (rkt)
        err = rd_kafka_producev(
            r->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY((void *)ev->key, ev->key_len),
            RD_KAFKA_V_VALUE((void *)ev->value, ev->value_len),
            RD_KAFKA_V_TIMESTAMP(occurred > 0 ? occurred : 0),
            RD_KAFKA_V_OPAQUE((void *)(uintptr_t)ev->seq), RD_KAFKA_V_END);
    if (err) {
        stat_add(&r->stats.errors[REPL_ERR_PRODUCE], 1);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL && r->restart_why == NULL) {
            r->restart_why = "kafka refused a message";
            snprintf(r->restart_detail, sizeof(r->restart_detail), "event %llu: %s",
                     (unsigned long long)ev->seq, rd_kafka_err2str(err));
        }
        return 1;
    }
    if (repl_window_outstanding(&r->win) == 0)
        r->progress_ns = clock_mono_ns(); /* a stall is counted from the first message */
    repl_window_push(&r->win, ev->seq, (uint32_t)(ev->key_len + ev->value_len), occurred);
    stat_add(&r->stats.sent, 1);
    return 0;
}

/* Hands the producer the durable events after the window's end, as many as fit. */
static void refill(struct replicator *r)
{
    uint64_t durable = shard_store_event_durable(r->store);
    uint32_t room = repl_window_room(&r->win);
    if (r->rk == NULL || r->restart_why || room == 0 || durable <= r->win.sent)
        return;
    uint64_t want = durable - r->win.sent;
    struct refill f = {.r = r, .last = durable};
    int rc =
        shard_store_outbox_scan(r->store, r->win.sent, want < room ? want : room, send_one, &f);
    if (rc < 0 && r->restart_why == NULL) {
        /* The store could not be read: try again at the next poll, say so once. */
        stat_add(&r->stats.errors[REPL_ERR_OTHER], 1);
        if (!r->scan_failed)
            say(r, REPL_LOG_ERROR, "kafka: cannot read the outbox; retrying", strerror(-rc));
    }
    r->scan_failed = rc < 0;
}

/* Publishes the backlog and the overload flag. */
static void account(struct replicator *r)
{
    struct shard_store_stats st;
    shard_store_get_stats(r->store, &st);
    ASSERT(st.event_seq >= r->win.mark);
    uint64_t events = st.event_seq - r->win.mark;
    uint64_t total = r->bytes_at_open + (st.event_bytes - r->bytes_base);
    ASSERT(total >= r->bytes_passed);
    uint64_t bytes = total - r->bytes_passed;
    stat_set(&r->stats.mark, r->win.mark);
    stat_set(&r->stats.mark_stored, st.replicated_seq);
    stat_set(&r->stats.event_seq, st.event_seq);
    stat_set(&r->stats.backlog_events, events);
    stat_set(&r->stats.backlog_bytes, bytes);
    stat_set(&r->stats.in_flight, repl_window_outstanding(&r->win));
    bool over = events > r->events_max || bytes > r->bytes_max;
    __atomic_store_n(&r->stats.overloaded, over, __ATOMIC_RELEASE);
    uint64_t now = clock_mono_ns();
    bool stalled = repl_window_outstanding(&r->win) > 0 &&
                   now - r->progress_ns > (uint64_t)REPL_STALL_MS * 1000000;
    stat_set(&r->stats.producer_up, r->rk != NULL && !r->all_down && !stalled);
    if (st.commits != r->last_commit_n) {
        r->last_commit_n = st.commits;
        r->last_commit_ns = now;
    }
}

void replicator_poll(struct replicator *r)
{
    ASSERT(r != NULL);
    uint64_t t0 = clock_mono_ns();
    if (r->rk == NULL && clock_mono_ns() >= r->retry_at_ns) {
        char why[512];
        if (producer_create(r, why, sizeof(why)) != 0) {
            /* The settings were accepted at create; only memory can fail here. */
            say(r, REPL_LOG_ERROR, "kafka: cannot create a producer", why);
            r->retry_at_ns = clock_mono_ns() + (uint64_t)REPL_RECREATE_BACKOFF_MAX_MS * 1000000;
        } else {
            say(r, REPL_LOG_INFO, "kafka: producer recreated", r->brokers);
        }
    }
    if (r->rk)
        rd_kafka_poll(r->rk, 0); /* delivery reports, errors, logs: callbacks above */
    uint64_t bytes = 0;
    if (repl_window_advance(&r->win, &bytes) > 0) {
        r->bytes_passed += bytes;
        shard_store_set_replicated(r->store, r->win.mark);
    }
    if (r->restart_why)
        producer_restart(r);
    refill(r);
    if (r->restart_why) /* refused at produce time */
        producer_restart(r);
    account(r);
    stat_add(&r->stats.polls, 1);
    stat_add(&r->stats.poll_ns, clock_mono_ns() - t0);
}

void replicator_idle(struct replicator *r)
{
    ASSERT(r != NULL);
    struct shard_store_stats st;
    shard_store_get_stats(r->store, &st);
    if (r->win.mark <= st.replicated_seq || shard_store_failed(r->store))
        return;
    uint64_t now = clock_mono_ns();
    if (st.commits != r->last_commit_n) {
        r->last_commit_n = st.commits;
        r->last_commit_ns = now;
        return;
    }
    if (now - r->last_commit_ns < (uint64_t)REPL_MARK_IDLE_MS * 1000000)
        return;
    shard_store_apply_batch(r->store, NULL, 0, clock_wall_ms()); /* the mark only */
    r->last_commit_ns = now;
    account(r);
}

bool replicator_overloaded(const struct replicator *r)
{
    return __atomic_load_n(&r->stats.overloaded, __ATOMIC_ACQUIRE) != 0;
}

void replicator_refused(struct replicator *r, uint64_t n)
{
    stat_add(&r->stats.refused, n);
}

void replicator_get_stats(const struct replicator *r, struct replicator_stats *out)
{
    const uint64_t *src = (const uint64_t *)&r->stats;
    uint64_t *dst = (uint64_t *)out;
    _Static_assert(sizeof(struct replicator_stats) % sizeof(uint64_t) == 0,
                   "the stats are whole uint64_t fields");
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

int replicator_wake_fd(const struct replicator *r)
{
    return r->wake_fd;
}

/* ---- life cycle ------------------------------------------------------------------- */

static int count_event(void *arg, const struct shard_event *ev)
{
    uint64_t *bytes = arg;
    *bytes += ev->key_len + ev->value_len;
    return 0;
}

static int options_apply(struct replicator *r, const struct replicator_options *opt, char *why,
                         size_t why_bytes)
{
    if (opt->brokers == NULL || opt->brokers[0] == '\0' ||
        strlen(opt->brokers) >= sizeof(r->brokers)) {
        snprintf(why, why_bytes, "kafka: a broker list of 1 to %zu characters is needed",
                 sizeof(r->brokers) - 1);
        return -EINVAL;
    }
    strcpy(r->brokers, opt->brokers);
    r->conf = opt->conf;
    r->log = opt->log;
    r->log_ctx = opt->log_ctx;
    r->events_max = opt->backlog_events_max ? opt->backlog_events_max : REPL_BACKLOG_EVENTS_DEFAULT;
    r->bytes_max = opt->backlog_bytes_max ? opt->backlog_bytes_max : REPL_BACKLOG_BYTES_DEFAULT;
    stat_set(&r->stats.backlog_events_max, r->events_max);
    stat_set(&r->stats.backlog_bytes_max, r->bytes_max);
    r->backoff_ms = REPL_RECREATE_BACKOFF_MIN_MS;
    return 0;
}

int replicator_create(struct replicator **out, struct shard_store *store, unsigned shard,
                      const struct replicator_options *opt, char *why, size_t why_bytes)
{
    ASSERT(out != NULL && store != NULL && opt != NULL);
    struct replicator *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->store = store;
    r->shard = shard;
    r->wake_fd = -1;
    int err = options_apply(r, opt, why, why_bytes);
    if (err)
        goto out_free;
    struct shard_store_stats st;
    shard_store_get_stats(store, &st);
    err = repl_window_init(&r->win, opt->window_events ? opt->window_events : REPL_WINDOW_EVENTS,
                           st.replicated_seq);
    if (err)
        goto out_free;
    /* The backlog's bytes: one pass over what a restart left above the stored mark. */
    err =
        shard_store_outbox_scan(store, st.replicated_seq, SIZE_MAX, count_event, &r->bytes_at_open);
    if (err) {
        snprintf(why, why_bytes, "kafka: cannot read shard %u's outbox: %s", shard, strerror(-err));
        goto out_window;
    }
    r->bytes_base = st.event_bytes; /* committed since open, already counted above */
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->wake_fd < 0) {
        err = -errno;
        snprintf(why, why_bytes, "kafka: eventfd: %s", strerror(errno));
        goto out_window;
    }
    err = producer_create(r, why, why_bytes);
    if (err)
        goto out_close_fd;
    r->last_commit_n = st.commits;
    r->last_commit_ns = clock_mono_ns();
    account(r);
    *out = r;
    return 0;

out_close_fd:
    close(r->wake_fd);
out_window:
    repl_window_free(&r->win);
out_free:
    free(r);
    return err;
}

void replicator_close(struct replicator *r, uint64_t deadline_ns)
{
    if (r == NULL)
        return;
    while (r->rk && repl_window_outstanding(&r->win) > 0 && r->restart_why == NULL &&
           clock_mono_ns() < deadline_ns)
        rd_kafka_poll(r->rk, 10);
    uint64_t bytes = 0;
    if (repl_window_advance(&r->win, &bytes) > 0)
        shard_store_set_replicated(r->store, r->win.mark);
    struct shard_store_stats st;
    shard_store_get_stats(r->store, &st);
    if (r->win.mark > st.replicated_seq && !shard_store_failed(r->store))
        shard_store_apply_batch(r->store, NULL, 0, clock_wall_ms());
    producer_destroy(r);
    close(r->wake_fd);
    repl_window_free(&r->win);
    free(r);
}

void replicator_test_fatal(struct replicator *r)
{
    if (r->rk)
        rd_kafka_test_fatal_error(r->rk, RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
                                  "test: a fenced producer");
}
