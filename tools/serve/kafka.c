/*
 * The Kafka side of `ringpay serve` (see kafka.h).
 *
 * The wake-up: the replicator's eventfd is non-blocking, so the port keeps a one-shot
 * IORING_OP_POLL_ADD (POLLIN) on it rather than a read (a read of a non-blocking file
 * may complete at once with -EAGAIN); when the poll completes, the port empties the
 * eventfd with one read(2) and arms the next poll. The shard loop polls the replicator
 * after every wait anyway, so the completion only has to end the wait.
 */
#define _GNU_SOURCE
#include "tools/serve/kafka.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/limits.h"
#include "net/log.h"

/* Extra producer settings (--kafka-conf), each "name=value". */
#define KAFKA_CONF_MAX 32

struct kafka {
    bool replication;
    bool embedded;
    rd_kafka_t *mock_rk; /* the embedded cluster's handle */
    char brokers[1024];
    uint64_t events_max, bytes_max;
    char *conf_text;                      /* a copy of --kafka-conf, split in place */
    const char *conf[KAFKA_CONF_MAX + 1]; /* NULL-terminated */
};

static void repl_log(void *ctx, enum replicator_log_level level, unsigned shard, const char *msg,
                     const char *detail)
{
    char s[16];
    snprintf(s, sizeof(s), "%u", shard);
    enum log_level lv = level == REPL_LOG_ERROR  ? LOG_ERROR
                        : level == REPL_LOG_WARN ? LOG_WARN
                                                 : LOG_INFO;
    log_write_str(lv, msg, "shard", s, "detail", detail ? detail : "", NULL);
}

static void mock_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* "Mock cluster enabled: ... replaced with <addresses>": serve prints the address in
     * its start-up line; a start that fails later must still print one line only. */
    if (strstr(buf, "Mock cluster enabled") != NULL)
        return;
    log_write_str(level <= 3 ? LOG_ERROR : LOG_INFO, "kafka: embedded cluster", "detail", buf,
                  NULL);
}

/* Splits "a=1;b=2" into k->conf. */
static int conf_split(struct kafka *k, const char *text, char *why, size_t why_bytes)
{
    if (text == NULL)
        return 0;
    k->conf_text = strdup(text);
    if (k->conf_text == NULL)
        return -ENOMEM;
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(k->conf_text, ";", &save); tok;
         tok = strtok_r(NULL, ";", &save)) {
        if (n == KAFKA_CONF_MAX || strchr(tok, '=') == NULL) {
            snprintf(why, why_bytes,
                     "--kafka-conf: expected up to %d name=value settings "
                     "separated by ';', got \"%s\"",
                     KAFKA_CONF_MAX, tok);
            return -EINVAL;
        }
        k->conf[n++] = tok;
    }
    k->conf[n] = NULL;
    return 0;
}

/* librdkafka's Kafka-protocol cluster, in this process: a handle of its own whose
 * test.mock.num.brokers makes librdkafka start the brokers (DESIGN.md). */
static int embedded_start(struct kafka *k, char *why, size_t why_bytes)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf == NULL)
        return -ENOMEM;
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", "3", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "client.id", "ringpay-embedded-cluster", err, sizeof(err))) {
        rd_kafka_conf_destroy(conf);
        snprintf(why, why_bytes, "embedded kafka cluster: %s", err);
        return -EINVAL;
    }
    rd_kafka_conf_set_log_cb(conf, mock_log);
    k->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (k->mock_rk == NULL) {
        rd_kafka_conf_destroy(conf);
        snprintf(why, why_bytes, "embedded kafka cluster: %s", err);
        return -EINVAL;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(k->mock_rk);
    const char *boot = mc ? rd_kafka_mock_cluster_bootstraps(mc) : NULL;
    if (boot == NULL || strlen(boot) >= sizeof(k->brokers)) {
        snprintf(why, why_bytes, "embedded kafka cluster: librdkafka started no brokers");
        return -EINVAL;
    }
    strcpy(k->brokers, boot);
    k->embedded = true;
    return 0;
}

int kafka_start(struct kafka **out, const struct kafka_config *cfg, char *why, size_t why_bytes)
{
    struct kafka *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return -ENOMEM;
    k->replication = cfg->replication;
    k->events_max = cfg->backlog_events_max;
    k->bytes_max = cfg->backlog_bytes_max;
    int err = conf_split(k, cfg->conf, why, why_bytes);
    if (err == 0 && k->replication) {
        if (cfg->brokers == NULL)
            err = embedded_start(k, why, why_bytes);
        else if (strlen(cfg->brokers) < sizeof(k->brokers))
            strcpy(k->brokers, cfg->brokers);
        else
            err = -EINVAL;
        if (err == -EINVAL && cfg->brokers != NULL)
            snprintf(why, why_bytes, "--kafka-brokers: longer than %zu characters",
                     sizeof(k->brokers) - 1);
    }
    if (err) {
        kafka_stop(k);
        return err;
    }
    *out = k;
    return 0;
}

const char *kafka_brokers(const struct kafka *k)
{
    return k->brokers;
}

bool kafka_embedded(const struct kafka *k)
{
    return k->embedded;
}

void kafka_stop(struct kafka *k)
{
    if (k == NULL)
        return;
    if (k->mock_rk)
        rd_kafka_destroy(k->mock_rk);
    free(k->conf_text);
    free(k);
}

/* ---- shard ports ------------------------------------------------------------------- */

static int port_arm(struct kafka_port *kp, struct io_uring *ring)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (sqe == NULL) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_poll_add(sqe, replicator_wake_fd(kp->repl), POLLIN);
    io_uring_sqe_set_data64(sqe, KAFKA_WAKE_TAG);
    return 0;
}

int kafka_port_open(const struct kafka *k, struct kafka_port *kp, unsigned shard,
                    struct shard_store *store, struct io_uring *ring, char *why, size_t why_bytes)
{
    memset(kp, 0, sizeof(*kp));
    if (!k->replication)
        return 0;
    struct replicator_options opt = {
        .brokers = k->brokers,
        .backlog_events_max = k->events_max,
        .backlog_bytes_max = k->bytes_max,
        .conf = k->conf,
        .log = repl_log,
    };
    int err = replicator_create(&kp->repl, store, shard, &opt, why, why_bytes);
    if (err)
        return err;
    err = port_arm(kp, ring);
    if (err) {
        snprintf(why, why_bytes, "io_uring for shard %u: no room for the kafka wake-up", shard);
        replicator_close(kp->repl, 0);
        kp->repl = NULL;
    }
    return err;
}

bool kafka_port_cqe(struct kafka_port *kp, struct io_uring *ring, const struct io_uring_cqe *cqe)
{
    if (cqe->user_data != KAFKA_WAKE_TAG)
        return false;
    ASSERT(kp->repl != NULL);
    /* Empty the eventfd (it is non-blocking: EAGAIN when already empty), then wait for
     * the next write. A failed arm leaves the shard's 100 ms wait as the wake-up. */
    ssize_t got = read(replicator_wake_fd(kp->repl), &kp->buf, sizeof(kp->buf));
    (void)got;
    port_arm(kp, ring);
    return true;
}

bool kafka_port_overloaded(const struct kafka_port *kp)
{
    return kp->repl != NULL && replicator_overloaded(kp->repl);
}

void kafka_port_close(struct kafka_port *kp, uint64_t deadline_ns)
{
    replicator_close(kp->repl, deadline_ns);
    kp->repl = NULL;
}

/* ---- metrics ----------------------------------------------------------------------- */

static void gauge_or_counter(struct metrics_out *o, const struct kafka_port *const *ports,
                             unsigned n, const char *name, const char *type, const char *help,
                             size_t off)
{
    metrics_family(o, name, type, help);
    for (unsigned i = 0; i < n; i++) {
        if (ports[i]->repl == NULL)
            continue;
        struct replicator_stats st;
        replicator_get_stats(ports[i]->repl, &st);
        char labels[32];
        snprintf(labels, sizeof(labels), "shard=\"%u\"", i);
        metrics_sample_u64(o, name, labels, *(const uint64_t *)((const char *)&st + off));
    }
}

static void errors(struct metrics_out *o, const struct kafka_port *const *ports, unsigned n)
{
    static const char name[] = "ringpay_replication_errors_total";
    metrics_family(o, name, "counter",
                   "Kafka errors by kind: transport (a broker unreachable, all brokers down), "
                   "delivery (a message failed for good), fatal (the producer failed), "
                   "produce (a message refused at once), other.");
    for (unsigned i = 0; i < n; i++) {
        if (ports[i]->repl == NULL)
            continue;
        struct replicator_stats st;
        replicator_get_stats(ports[i]->repl, &st);
        for (int k = 0; k < REPL_ERR_KINDS; k++) {
            char labels[64];
            snprintf(labels, sizeof(labels), "shard=\"%u\",kind=\"%s\"", i,
                     replicator_error_names[k]);
            metrics_sample_u64(o, name, labels, st.errors[k]);
        }
    }
}

static void lag(struct metrics_out *o, const struct kafka_port *const *ports, unsigned n)
{
    static const char name[] = "ringpay_replication_lag_seconds";
    metrics_family(o, name, "histogram",
                   "Time from an event's commit (its occurred_at) to Kafka's delivery report.");
    for (unsigned i = 0; i < n; i++) {
        if (ports[i]->repl == NULL)
            continue;
        struct replicator_stats st;
        replicator_get_stats(ports[i]->repl, &st);
        char labels[64];
        uint64_t cum = 0;
        for (int b = 0; b < REPL_LAG_BUCKETS; b++) {
            cum += st.lag_buckets[b];
            uint32_t ms = replicator_lag_bounds_ms[b];
            snprintf(labels, sizeof(labels), "shard=\"%u\",le=\"%u.%03u\"", i, ms / 1000,
                     ms % 1000);
            metrics_sample_u64(o, "ringpay_replication_lag_seconds_bucket", labels, cum);
        }
        snprintf(labels, sizeof(labels), "shard=\"%u\",le=\"+Inf\"", i);
        metrics_sample_u64(o, "ringpay_replication_lag_seconds_bucket", labels, st.lag_count);
        snprintf(labels, sizeof(labels), "shard=\"%u\"", i);
        metrics_sample_seconds(o, "ringpay_replication_lag_seconds_sum", labels,
                               st.lag_sum_ms * 1000000);
        metrics_sample_u64(o, "ringpay_replication_lag_seconds_count", labels, st.lag_count);
    }
}

void kafka_metrics(struct metrics_out *o, const struct kafka_port *const *ports, unsigned n)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } m[] = {
        {"ringpay_replication_backlog_events", "gauge",
         "Events committed and not yet acknowledged by Kafka.",
         offsetof(struct replicator_stats, backlog_events)},
        {"ringpay_replication_backlog_bytes", "gauge",
         "Key and value bytes of the backlog's events.",
         offsetof(struct replicator_stats, backlog_bytes)},
        {"ringpay_replication_backlog_limit_events", "gauge",
         "--replication-backlog-events: past it the shard refuses state changes.",
         offsetof(struct replicator_stats, backlog_events_max)},
        {"ringpay_replication_backlog_limit_bytes", "gauge",
         "--replication-backlog-bytes: past it the shard refuses state changes.",
         offsetof(struct replicator_stats, backlog_bytes_max)},
        {"ringpay_replication_overloaded", "gauge",
         "1 while the backlog is over a bound: state changes get 503, /readyz is 503.",
         offsetof(struct replicator_stats, overloaded)},
        {"ringpay_replication_refused_total", "counter",
         "State changes refused (503) because the backlog was over a bound.",
         offsetof(struct replicator_stats, refused)},
        {"ringpay_replication_mark", "gauge",
         "Replicated up to this event sequence: every event at or below it is in Kafka.",
         offsetof(struct replicator_stats, mark)},
        {"ringpay_replication_mark_stored", "gauge",
         "The mark as stored in the shard (a restart resends from here).",
         offsetof(struct replicator_stats, mark_stored)},
        {"ringpay_replication_event_seq", "gauge", "The last event sequence committed.",
         offsetof(struct replicator_stats, event_seq)},
        {"ringpay_replication_in_flight", "gauge",
         "Events handed to the producer without a delivery report yet.",
         offsetof(struct replicator_stats, in_flight)},
        {"ringpay_replication_sent_total", "counter",
         "Messages handed to the producer (resends after a recreation included).",
         offsetof(struct replicator_stats, sent)},
        {"ringpay_replication_delivered_total", "counter",
         "Successful delivery reports (acks=all).", offsetof(struct replicator_stats, delivered)},
        {"ringpay_replication_producer_up", "gauge",
         "1 when the producer delivers or has nothing to deliver; 0 when all brokers are "
         "down, nothing was delivered for 5 s with events outstanding, or it is being "
         "recreated.",
         offsetof(struct replicator_stats, producer_up)},
        {"ringpay_replication_polls_total", "counter",
         "Times the shard loop served its producer and refilled the window.",
         offsetof(struct replicator_stats, polls)},
        {"ringpay_replication_producer_recreated_total", "counter",
         "Producers destroyed after a fatal error or a failed delivery, and replaced.",
         offsetof(struct replicator_stats, recreated)},
    };
    bool any = false;
    for (unsigned i = 0; i < n; i++)
        any |= ports[i]->repl != NULL;
    if (!any)
        return;
    for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++)
        gauge_or_counter(o, ports, n, m[k].name, m[k].type, m[k].help, m[k].off);
    errors(o, ports, n);
    lag(o, ports, n);
    metrics_family(o, "ringpay_replication_poll_seconds_total", "counter",
                   "Shard thread time spent serving the producer and refilling the window.");
    for (unsigned i = 0; i < n; i++) {
        if (ports[i]->repl == NULL)
            continue;
        struct replicator_stats st;
        replicator_get_stats(ports[i]->repl, &st);
        char labels[32];
        snprintf(labels, sizeof(labels), "shard=\"%u\"", i);
        metrics_sample_seconds(o, "ringpay_replication_poll_seconds_total", labels, st.poll_ns);
    }
}
