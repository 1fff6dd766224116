/*
 * settle's consumer group and outbox producer (see consumer.h).
 *
 * Invariants:
 *  - Only the reactor thread calls in; librdkafka's callbacks (rebalance, delivery
 *    reports, logs) run inside our polls on that thread, so they may use the store.
 *  - The delivered mark `mark` only moves forward and only over a contiguous run of
 *    delivered seqs: window[i] says whether seq mark + 1 + i was delivered; `sent` is
 *    the last seq handed to the producer (mark <= sent <= mark + SETTLE_PUBLISH_WINDOW).
 */
#define _GNU_SOURCE
#include "tools/settle/consumer.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/limits.h"
#include "net/log.h"
#include "net/reactor.h"

#define TOPICS_MAX 2
#define PARTS_MAX  1024 /* assigned partitions tracked for lag */

#define SKAFKA_CLAIM_MS     1000 /* a shared store's publisher lock is tried this often */
#define SKAFKA_REPORT_MS    1000 /* a shared store's member reports its partitions */
#define SKAFKA_COMMITTED_MS 5000 /* the group's committed offsets, fetched at assignment */
#define SKAFKA_FRESH_MS     5000 /* ... and a report older than this is a member gone */

static const char *const topics[TOPICS_MAX] = {"payment.captured", "payment.refunded"};

struct part {
    int topic; /* index in topics */
    int32_t partition;
};

struct skafka {
    rd_kafka_t *consumer;
    rd_kafka_queue_t *cq;
    rd_kafka_t *producer;
    rd_kafka_queue_t *pq;
    struct settle_store *store;
    struct settle_calendar *cal;
    int wake_fd;
    uint64_t wake_buf;
    bool wake_armed;
    bool assigned_once;
    struct part parts[PARTS_MAX];
    size_t nparts;
    /* Partitions refused because the group's committed offset is ahead of this store's:
     * another store counted them (see offsets_from_store). */
    struct part foreign[PARTS_MAX];
    size_t nforeign;
    uint64_t commit_errors;
    uint64_t rebalances;
    uint64_t consume_errors;
    uint64_t batches, batch_messages;
    uint64_t apply_ns; /* time in settle_store_apply (parse, rules, durable commit) */
    /* producer */
    uint64_t mark, sent;
    bool window[SETTLE_PUBLISH_WINDOW];
    uint64_t produced, delivered, delivery_errors;
    uint64_t flushed_mark;
    int64_t last_flush_ms;
    bool publisher;         /* this member publishes the outbox (settle_store_publisher) */
    int64_t last_claim_ms;  /* a shared store's publisher lock, last tried */
    int64_t last_report_ms; /* a shared store's member progress, last stored (wall) */
    uint64_t publisher_takes;
    int64_t last_now_ms;       /* settle's clock at the last turn */
    size_t pending;            /* messages taken, not yet applied (msgs, smsgs) */
    uint64_t pending_since_ms; /* monotonic: when the first of them was taken */
    bool timer_armed;
    struct __kernel_timespec timer_ts;
    rd_kafka_message_t *msgs[SETTLE_CONSUME_BATCH_MAX];
    struct settle_msg smsgs[SETTLE_CONSUME_BATCH_MAX];
};

/* ---- configuration ---------------------------------------------------------------- */

static int conf_set(rd_kafka_conf_t *c, const char *k, const char *v, char *why, size_t why_bytes)
{
    char err[256];
    if (rd_kafka_conf_set(c, k, v, err, sizeof(err)) == RD_KAFKA_CONF_OK)
        return 0;
    /* the value may be a password: name the setting only */
    snprintf(why, why_bytes, "kafka: setting %s refused: %s", k, err);
    return -EINVAL;
}

/* conf_set of each name-value pair in turn, stopping at the first refusal. */
static int conf_set_all(rd_kafka_conf_t *c, const char *const kv[][2], size_t n, char *why,
                        size_t why_bytes)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = conf_set(c, kv[i][0], kv[i][1], why, why_bytes);
    return rc;
}

/* "k=v;k=v" on top of the defaults. */
static int conf_extra(rd_kafka_conf_t *c, const char *extra, char *why, size_t why_bytes)
{
    if (extra == NULL || extra[0] == '\0')
        return 0;
    char *copy = strdup(extra), *save = NULL;
    if (copy == NULL)
        return -ENOMEM;
    int rc = 0;
    for (char *t = strtok_r(copy, ";", &save); t && rc == 0; t = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(t, '=');
        if (eq == NULL) {
            snprintf(why, why_bytes,
                     "kafka: --kafka-conf: expected name=value, got a part "
                     "without '='");
            rc = -EINVAL;
            break;
        }
        *eq = '\0';
        rc = conf_set(c, t, eq + 1, why, why_bytes);
    }
    free(copy);
    return rc;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (level <= 4)
        log_write_str(level <= 3 ? LOG_ERROR : LOG_WARN, "kafka", "facility", fac, "message", buf,
                      NULL);
}

/* ---- consumer: assignments from settle's own offsets ------------------------------ */

static int topic_index(const char *t)
{
    for (int i = 0; i < TOPICS_MAX; i++)
        if (strcmp(t, topics[i]) == 0)
            return i;
    return -1;
}

/* Removes the partitions of l from the set parts[0, *n). */
static void parts_forget(struct part *parts, size_t *n, const rd_kafka_topic_partition_list_t *l)
{
    for (int i = 0; i < l->cnt; i++)
        for (size_t j = 0; j < *n; j++)
            if (parts[j].partition == l->elems[i].partition &&
                topic_index(l->elems[i].topic) == parts[j].topic) {
                parts[j] = parts[--*n];
                break;
            }
}

/*
 * Sets every partition's start to settle's stored next offset (or the beginning), and
 * takes out of l the partitions another store counted: settle commits each applied
 * batch's offsets to the group too (commit_applied), after its own store, so a
 * group's committed offset ahead of this store's is another store's progress (a member
 * started with its own --data instead of --shared, or a store restored from an older
 * copy). Counting such a partition here again would count its events twice across the
 * two stores: it is left unconsumed, logged, and /readyz says so until an operator
 * decides (docs/backoffice.md). The committed offsets are fetched from the group
 * coordinator (blocking, bounded) once per assignment.
 */
static int offsets_from_store(struct skafka *k, rd_kafka_topic_partition_list_t *l)
{
    rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_copy(l);
    rd_kafka_resp_err_t ce = rd_kafka_committed(k->consumer, committed, SKAFKA_COMMITTED_MS);
    if (ce != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* The guard is for a misconfiguration; this store's own exactly once does not
         * depend on it: go on without it rather than stop consuming. */
        log_write_str(LOG_WARN, "cannot fetch the group's committed offsets; not checked", "error",
                      rd_kafka_err2str(ce), NULL);
        for (int i = 0; i < committed->cnt; i++)
            committed->elems[i].offset = -1;
    }
    int out = 0;
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_topic_partition_t *p = &l->elems[i];
        int64_t next;
        int rc = settle_store_offset_get(k->store, p->topic, strlen(p->topic), p->partition, &next);
        if (rc == -ENOENT)
            next = -1;
        else if (rc != 0) {
            rd_kafka_topic_partition_list_destroy(committed);
            return rc;
        }
        int t = topic_index(p->topic);
        int64_t group = committed->elems[i].err ? -1 : committed->elems[i].offset;
        if (group >= 0 && group > next) {
            char m[160];
            snprintf(m, sizeof(m), "%s[%d]: group committed %lld, this store %lld", p->topic,
                     p->partition, (long long)group, (long long)next);
            log_write_str(LOG_ERROR,
                          "partition counted by another settle store; not consumed here (use "
                          "--shared members on one data directory)",
                          "partition", m, NULL);
            if (t >= 0 && k->nforeign < PARTS_MAX)
                k->foreign[k->nforeign++] = (struct part){.topic = t, .partition = p->partition};
            continue;
        }
        p->offset = next >= 0 ? next : RD_KAFKA_OFFSET_BEGINNING;
        if (t >= 0 && k->nparts < PARTS_MAX)
            k->parts[k->nparts++] = (struct part){.topic = t, .partition = p->partition};
        l->elems[out++] = *p;
    }
    l->cnt = out;
    rd_kafka_topic_partition_list_destroy(committed);
    return 0;
}

/* After a batch is in the store: its partitions' next offsets to the group as well
 * (asynchronously; never read back as a start, see offsets_from_store). */
static void commit_applied(struct skafka *k, const struct settle_msg *m, size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < n; i++) {
        if (m[i].offset < 0)
            continue;
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(l, m[i].topic, m[i].partition);
        if (p == NULL)
            p = rd_kafka_topic_partition_list_add(l, m[i].topic, m[i].partition);
        if (m[i].offset + 1 > p->offset)
            p->offset = m[i].offset + 1;
    }
    if (l->cnt > 0 && rd_kafka_commit(k->consumer, l, 1) != RD_KAFKA_RESP_ERR_NO_ERROR)
        k->commit_errors++;
    rd_kafka_topic_partition_list_destroy(l);
}

/* The partitions of l, with the offsets they start at (an assignment) or without (a
 * revocation: librdkafka's list holds no offsets then). */
static void log_assignment(const char *what, const rd_kafka_topic_partition_list_t *l, bool offsets)
{
    char list[1024] = "";
    size_t o = 0;
    for (int i = 0; i < l->cnt && o + 80 < sizeof(list); i++) {
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s[%d]", i ? "," : "",
                              l->elems[i].topic, l->elems[i].partition);
        if (offsets)
            o += (size_t)snprintf(list + o, sizeof(list) - o, "@%lld",
                                  (long long)l->elems[i].offset);
    }
    log_write_str(LOG_INFO, what, "partitions", list, NULL);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *l, void *opaque)
{
    struct skafka *k = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    k->rebalances++;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (!coop)
            k->nparts = k->nforeign = 0;
        int rc = offsets_from_store(k, l);
        if (rc != 0) {
            /* Without the stored offsets nothing may be consumed: take nothing. */
            log_write_str(LOG_ERROR, "cannot read stored offsets; partitions not taken", "error",
                          strerror(-rc), NULL);
            k->nparts = 0;
            if (!coop)
                rd_kafka_assign(rk, NULL);
            return;
        }
        log_assignment("partitions assigned (from settle's stored offsets)", l, true);
        k->assigned_once = true;
        if (coop)
            rd_kafka_incremental_assign(rk, l);
        else
            rd_kafka_assign(rk, l);
        return;
    }
    log_assignment("partitions revoked", l, false);
    if (coop) {
        parts_forget(k->parts, &k->nparts, l);
        parts_forget(k->foreign, &k->nforeign, l);
        rd_kafka_incremental_unassign(rk, l);
    } else {
        k->nparts = k->nforeign = 0;
        rd_kafka_assign(rk, NULL);
    }
}

static int make_consumer(struct skafka *k, const struct skafka_config *cfg, char *why,
                         size_t why_bytes)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    /* A settle that died holds its partitions until its session expires: 10 s rather
     * than librdkafka's 45 s, so a restarted or standby instance takes over sooner. */
    const char *const kv[][2] = {
        {"bootstrap.servers", cfg->brokers}, {"group.id", cfg->group},
        {"enable.auto.commit", "false"},     {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},   {"topic.metadata.refresh.interval.ms", "5000"},
        {"session.timeout.ms", "10000"},     {"heartbeat.interval.ms", "1000"},
    };
    int rc = conf_set_all(c, kv, sizeof(kv) / sizeof(kv[0]), why, why_bytes);
    if (!rc)
        rc = conf_extra(c, cfg->conf, why, why_bytes);
    if (rc) {
        rd_kafka_conf_destroy(c);
        return rc;
    }
    rd_kafka_conf_set_opaque(c, k);
    rd_kafka_conf_set_rebalance_cb(c, rebalance_cb);
    rd_kafka_conf_set_log_cb(c, log_cb);
    k->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
    if (k->consumer == NULL) {
        snprintf(why, why_bytes, "kafka: consumer: %s", err);
        return -EINVAL;
    }
    rd_kafka_poll_set_consumer(k->consumer);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(TOPICS_MAX);
    for (int i = 0; i < TOPICS_MAX; i++)
        rd_kafka_topic_partition_list_add(sub, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(k->consumer, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (e) {
        snprintf(why, why_bytes, "kafka: subscribe: %s", rd_kafka_err2str(e));
        return -EINVAL;
    }
    k->cq = rd_kafka_queue_get_consumer(k->consumer);
    static const uint64_t one = 1; /* an eventfd takes 8-byte writes */
    rd_kafka_queue_io_event_enable(k->cq, k->wake_fd, &one, sizeof(one));
    return 0;
}

/* ---- producer: settle's outbox ---------------------------------------------------- */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct skafka *k = opaque;
    uint64_t seq = (uint64_t)(uintptr_t)m->_private;
    if (m->err) {
        k->delivery_errors++;
        log_write_str(LOG_WARN, "outbox message not delivered; sent again", "error",
                      rd_kafka_err2str(m->err), NULL);
        if (seq > k->mark)
            k->sent = k->mark; /* at least once: resend from the mark */
        return;
    }
    k->delivered++;
    if (seq <= k->mark || seq > k->mark + SETTLE_PUBLISH_WINDOW)
        return; /* an older copy of a resent message */
    k->window[seq - k->mark - 1] = true;
    size_t n = 0;
    while (n < SETTLE_PUBLISH_WINDOW && k->window[n])
        n++;
    if (n == 0)
        return;
    memmove(k->window, k->window + n, (SETTLE_PUBLISH_WINDOW - n) * sizeof(bool));
    memset(k->window + SETTLE_PUBLISH_WINDOW - n, 0, n * sizeof(bool));
    k->mark += n;
    if (k->sent < k->mark)
        k->sent = k->mark;
    settle_store_set_replicated(k->store, k->mark);
}

static int make_producer(struct skafka *k, const struct skafka_config *cfg, char *why,
                         size_t why_bytes)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *const kv[][2] = {
        {"bootstrap.servers", cfg->brokers},
        {"enable.idempotence", "true"},
        {"message.timeout.ms", "0"},
        {"linger.ms", "5"},
    };
    int rc = conf_set_all(c, kv, sizeof(kv) / sizeof(kv[0]), why, why_bytes);
    if (!rc)
        rc = conf_extra(c, cfg->conf, why, why_bytes);
    if (rc) {
        rd_kafka_conf_destroy(c);
        return rc;
    }
    rd_kafka_conf_set_opaque(c, k);
    rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
    rd_kafka_conf_set_log_cb(c, log_cb);
    k->producer = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    if (k->producer == NULL) {
        snprintf(why, why_bytes, "kafka: producer: %s", err);
        return -EINVAL;
    }
    k->pq = rd_kafka_queue_get_main(k->producer);
    static const uint64_t one = 1;
    rd_kafka_queue_io_event_enable(k->pq, k->wake_fd, &one, sizeof(one));
    return 0;
}

static int produce_one(void *arg, const struct settle_out_msg *m)
{
    struct skafka *k = arg;
    rd_kafka_headers_t *h = rd_kafka_headers_new(m->nheaders);
    for (size_t i = 0; i < m->nheaders; i++)
        rd_kafka_header_add(h, m->headers[i].name, (ssize_t)m->headers[i].name_len,
                            m->headers[i].value, (ssize_t)m->headers[i].value_len);
    char topic[SETTLE_TOPIC_MAX_BYTES + 1];
    snprintf(topic, sizeof(topic), "%.*s", (int)m->topic_len, m->topic);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        k->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(m->key, m->key ? m->key_len : 0),
        RD_KAFKA_V_VALUE((void *)m->value, m->value_len),
        RD_KAFKA_V_OPAQUE((void *)(uintptr_t)m->seq), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(h); /* owned by the message only on success */
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            log_write_str(LOG_WARN, "outbox message not produced; retried", "error",
                          rd_kafka_err2str(e), NULL);
        return 1; /* the rest waits for the next turn */
    }
    k->produced++;
    k->sent = m->seq;
    return 0;
}

/* Whether this member publishes: a shared store's other members are tried for the
 * publisher's lock once a second; taking it resumes from the mark the last one stored. */
static bool may_publish(struct skafka *k, int64_t now_ms)
{
    if (k->publisher)
        return true;
    if (now_ms - k->last_claim_ms < SKAFKA_CLAIM_MS && now_ms >= k->last_claim_ms)
        return false;
    k->last_claim_ms = now_ms;
    bool took = false;
    if (!settle_store_publisher(k->store, &took))
        return false;
    k->publisher = true;
    if (took) {
        struct settle_store_stats st;
        settle_store_get_stats(k->store, &st);
        k->mark = k->sent = k->flushed_mark = st.replicated_seq;
        memset(k->window, 0, sizeof(k->window));
        k->publisher_takes++;
        log_write(LOG_INFO, "this member publishes settle's outbox now", NULL);
    }
    return true;
}

static void publish(struct skafka *k, int64_t now_ms)
{
    rd_kafka_poll(k->producer, 0); /* delivery reports */
    if (!may_publish(k, now_ms))
        return;
    size_t room = (size_t)(k->mark + SETTLE_PUBLISH_WINDOW - k->sent);
    if (room > 0)
        settle_store_outbox_scan(k->store, k->sent, room, produce_one, k);
    /* An idle consumer writes no transaction: store the mark now and then. */
    if (k->mark != k->flushed_mark && now_ms - k->last_flush_ms >= 1000) {
        if (settle_store_flush(k->store, k->cal, now_ms) == 0)
            k->flushed_mark = k->mark;
        k->last_flush_ms = now_ms;
    }
}

/* ---- the turn ------------------------------------------------------------------------ */

/* Takes what the consumer queue holds, up to a full batch (a fetch response per call:
 * several calls fill a batch from a backlog, and a larger commit costs less per event). */
static size_t take_batch(struct skafka *k)
{
    size_t kept = k->pending;
    while (kept < SETTLE_CONSUME_BATCH_MAX) {
        rd_kafka_message_t **room = k->msgs + kept;
        ssize_t n = rd_kafka_consume_batch_queue(k->cq, 0, room, SETTLE_CONSUME_BATCH_MAX - kept);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = room[i];
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                    k->consume_errors++;
                    log_write_str(LOG_WARN, "kafka consume error", "error",
                                  rd_kafka_message_errstr(m), NULL);
                }
                rd_kafka_message_destroy(m);
                continue;
            }
            const char *t = rd_kafka_topic_name(m->rkt);
            k->smsgs[kept] = (struct settle_msg){
                .topic = t,
                .topic_len = strlen(t),
                .partition = m->partition,
                .offset = m->offset,
                .key = m->key,
                .key_len = m->key_len,
                .value = m->payload,
                .value_len = m->len,
            };
            k->msgs[kept++] = m;
        }
    }
    return kept;
}

/* Applies the pending messages in one transaction (their offsets with them). */
static void apply_pending(struct skafka *k, int64_t now_ms)
{
    size_t n = k->pending;
    uint64_t t0 = clock_mono_ns();
    int rc = settle_store_apply(k->store, k->cal, k->smsgs, n, now_ms);
    k->apply_ns += clock_mono_ns() - t0;
    if (rc != 0) {
        /* Nothing was committed: read these again from the stored offsets. */
        log_write_str(LOG_ERROR, "cannot apply consumed events; re-reading them", "error",
                      strerror(-rc), NULL);
        for (size_t i = 0; i < n; i++) {
            int64_t next;
            const struct settle_msg *sm = &k->smsgs[i];
            if (settle_store_offset_get(k->store, sm->topic, sm->topic_len, sm->partition, &next) !=
                0)
                next = RD_KAFKA_OFFSET_BEGINNING;
            rd_kafka_seek(k->msgs[i]->rkt, sm->partition, next, 0);
        }
    } else {
        k->batches++;
        k->batch_messages += n;
        commit_applied(k, k->smsgs, n);
    }
    for (size_t i = 0; i < n; i++)
        rd_kafka_message_destroy(k->msgs[i]);
    k->pending = 0;
}

/* A wake-up in SETTLE_CONSUME_WAIT_MS, when none is armed (the linger of a batch). */
static void arm_timer(struct skafka *k, struct io_uring *ring)
{
    if (k->timer_armed)
        return;
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (sqe == NULL) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    ASSERT(sqe != NULL);
    k->timer_ts.tv_sec = 0;
    k->timer_ts.tv_nsec = SETTLE_CONSUME_WAIT_MS * 1000000LL;
    io_uring_prep_timeout(sqe, &k->timer_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, REACTOR_WAKE_TAG);
    k->timer_armed = true;
}

/* A shared store's member: its partitions and their high watermarks, once a second. */
static void report_progress(struct skafka *k, int64_t now_ms)
{
    int64_t wall = clock_wall_ms();
    if (!settle_store_shared(k->store) || k->nparts == 0 ||
        (wall - k->last_report_ms < SKAFKA_REPORT_MS && wall >= k->last_report_ms))
        return;
    k->last_report_ms = wall;
    static struct settle_progress p[PARTS_MAX];
    for (size_t i = 0; i < k->nparts; i++) {
        int64_t lo, hi;
        const char *t = topics[k->parts[i].topic];
        if (rd_kafka_get_watermark_offsets(k->consumer, t, k->parts[i].partition, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            hi = -1;
        p[i] = (struct settle_progress){
            .topic = t, .topic_len = strlen(t), .partition = k->parts[i].partition, .high = hi};
    }
    if (settle_store_progress_put(k->store, k->cal, p, k->nparts, now_ms, wall) != 0)
        log_write(LOG_WARN, "cannot store this member's progress; tried again", NULL);
}

bool skafka_turn(struct skafka *k, struct io_uring *ring, int64_t now_ms)
{
    size_t before = k->pending;
    size_t n = take_batch(k);
    k->pending = n;
    uint64_t mono_ms = clock_mono_ns() / 1000000;
    if (before == 0 && n > 0)
        k->pending_since_ms = mono_ms;
    bool full = n == SETTLE_CONSUME_BATCH_MAX;
    if (n > 0 && (full || mono_ms - k->pending_since_ms >= SETTLE_CONSUME_WAIT_MS))
        apply_pending(k, now_ms);
    else if (n > 0)
        arm_timer(k, ring); /* linger: a larger commit costs less per event */
    k->last_now_ms = now_ms;
    publish(k, now_ms);
    report_progress(k, now_ms);
    return full;
}

/* ---- wake-ups ------------------------------------------------------------------------ */

void skafka_arm(struct skafka *k, struct io_uring *ring)
{
    if (k->wake_armed)
        return;
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (sqe == NULL) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    ASSERT(sqe != NULL);
    io_uring_prep_read(sqe, k->wake_fd, &k->wake_buf, sizeof(k->wake_buf), 0);
    io_uring_sqe_set_data64(sqe, REACTOR_WAKE_TAG);
    k->wake_armed = true;
}

void skafka_on_wake(struct skafka *k, struct io_uring *ring, int res)
{
    if (res == -ETIME) { /* the linger timer */
        k->timer_armed = false;
        return;
    }
    k->wake_armed = false;
    skafka_arm(k, ring);
}

void skafka_kick(struct skafka *k)
{
    uint64_t one = 1;
    ssize_t w = write(k->wake_fd, &one, sizeof(one));
    (void)w; /* a non-blocking eventfd write of 1 fails only at overflow: it is set */
}

/* ---- state for others ----------------------------------------------------------------- */

static int64_t stored_next(const struct skafka *k, const struct part *p)
{
    int64_t next;
    const char *t = topics[p->topic];
    if (settle_store_offset_get(k->store, t, strlen(t), p->partition, &next) != 0)
        next = 0;
    return next;
}

size_t skafka_foreign_partitions(const struct skafka *k)
{
    return k->nforeign;
}

bool skafka_caught_up(const struct skafka *k)
{
    if (!k->assigned_once)
        return false;
    /* Other members consume the other partitions into the same store: a date closes
     * only when theirs are consumed too (or a lagging member's events would become
     * adjustments), as their reports in the store say. */
    if (settle_store_shared(k->store) &&
        !settle_store_progress_caught_up(k->store, clock_wall_ms(), SKAFKA_FRESH_MS))
        return false;
    for (size_t i = 0; i < k->nparts; i++) {
        int64_t lo, hi;
        const struct part *p = &k->parts[i];
        if (rd_kafka_get_watermark_offsets(k->consumer, topics[p->topic], p->partition, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            return false;
        if (stored_next(k, p) < hi)
            return false;
    }
    return true;
}

void skafka_metrics(const struct skafka *k, struct metrics_out *o)
{
    metrics_family(o, "ringpay_settle_consumer_lag", "gauge",
                   "Messages of an assigned partition not yet applied (high watermark - "
                   "settle's stored next offset).");
    for (size_t i = 0; i < k->nparts; i++) {
        int64_t lo, hi;
        const struct part *p = &k->parts[i];
        if (rd_kafka_get_watermark_offsets(k->consumer, topics[p->topic], p->partition, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        int64_t next = stored_next(k, p);
        char l[128];
        snprintf(l, sizeof(l), "topic=\"%s\",partition=\"%d\"", topics[p->topic], p->partition);
        metrics_sample_u64(o, "ringpay_settle_consumer_lag", l,
                           (uint64_t)(hi > next ? hi - next : 0));
    }
    /* The unlabelled families, one sample each. */
    const struct {
        const char *name, *type, *help;
        uint64_t v;
        bool seconds; /* v in nanoseconds, shown in seconds */
    } one[] = {
        {"ringpay_settle_consumer_partitions", "gauge", "Partitions assigned now.", k->nparts,
         false},
        {"ringpay_settle_foreign_partitions", "gauge",
         "Assigned partitions not consumed: the group's committed offset is ahead of this "
         "store's (another store counted them).",
         k->nforeign, false},
        {"ringpay_settle_group_commit_errors_total", "counter",
         "Applied offsets that could not be handed to the group's commit.", k->commit_errors,
         false},
        {"ringpay_settle_rebalances_total", "counter", "Group assignments and revocations.",
         k->rebalances, false},
        {"ringpay_settle_consume_batches_total", "counter", "Transactions of consumed messages.",
         k->batches, false},
        {"ringpay_settle_apply_seconds_total", "counter",
         "Time spent applying consumed batches (parse, rules, durable commit).", k->apply_ns, true},
        {"ringpay_settle_published_total", "counter",
         "Outbox messages delivered to Kafka (settlement.closed, recon.unmatched, payment.dlq).",
         k->delivered, false},
        {"ringpay_settle_publish_errors_total", "counter",
         "Outbox deliveries that failed and were sent again.", k->delivery_errors, false},
        {"ringpay_settle_publisher", "gauge",
         "1 when this process publishes settle's outbox (one member of a shared store at a "
         "time).",
         k->publisher, false},
    };
    for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
        metrics_family(o, one[i].name, one[i].type, one[i].help);
        if (one[i].seconds)
            metrics_sample_seconds(o, one[i].name, NULL, one[i].v);
        else
            metrics_sample_u64(o, one[i].name, NULL, one[i].v);
    }
}

/* ---- life ------------------------------------------------------------------------ */

int skafka_start(struct skafka **out, const struct skafka_config *cfg, struct settle_store *s,
                 struct settle_calendar *cal, char *why, size_t why_bytes)
{
    struct skafka *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return -ENOMEM;
    k->store = s;
    k->cal = cal;
    struct settle_store_stats st;
    settle_store_get_stats(s, &st);
    k->mark = k->sent = k->flushed_mark = st.replicated_seq;
    k->last_now_ms = clock_wall_ms();
    k->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (k->wake_fd < 0) {
        snprintf(why, why_bytes, "kafka: eventfd: %s", strerror(errno));
        free(k);
        return -errno;
    }
    int rc = make_producer(k, cfg, why, why_bytes);
    if (rc == 0)
        rc = make_consumer(k, cfg, why, why_bytes);
    if (rc != 0) {
        skafka_stop(k, 0);
        return rc;
    }
    *out = k;
    return 0;
}

void skafka_stop(struct skafka *k, int flush_ms)
{
    if (k == NULL)
        return;
    if (k->consumer) {
        if (k->pending > 0)
            apply_pending(k, k->last_now_ms); /* taken: count them before leaving */
        if (k->cq) {
            rd_kafka_queue_io_event_enable(k->cq, -1, NULL, 0);
            rd_kafka_queue_destroy(k->cq);
        }
        rd_kafka_consumer_close(k->consumer);
        rd_kafka_destroy(k->consumer);
    }
    if (k->producer) {
        if (flush_ms > 0)
            rd_kafka_flush(k->producer, flush_ms);
        rd_kafka_poll(k->producer, 0);
        if (k->pq) {
            rd_kafka_queue_io_event_enable(k->pq, -1, NULL, 0);
            rd_kafka_queue_destroy(k->pq);
        }
        rd_kafka_destroy(k->producer);
    }
    if (k->mark != k->flushed_mark)
        settle_store_flush(k->store, k->cal, k->last_now_ms);
    close(k->wake_fd);
    free(k);
}
