/*
 * Helpers of the write-ahead log mode's tests (shard_wal_test.c, shard_wal_crash_test.c):
 * requests that own their bytes, batches applied through the public shard_store API, a
 * wait for the log's durable position, a canonical dump of a shard's visible state (every
 * payment, balance list, ledger page and outbox event, as the API renders them), and a
 * seeded generator of operations that drives itself from the answers (authorize,
 * capture, void, refund, idempotent replays, reused keys, refusals, authenticated and
 * not).
 *
 * A plan is a generated list of operations grouped in batches, each batch with its own
 * `now`, and the answers a reference store gave them (the "run that never crashed"):
 * running the same plan against another store must give the same answers byte for byte.
 *
 * Everything asserts with cmocka on the test's own process; a forked child uses
 * wh_child_* instead (cmocka must not unwind a child into the parent's test runner).
 */
#ifndef RINGPAY_TESTS_STORE_WAL_HARNESS_H
#define RINGPAY_TESTS_STORE_WAL_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/api.h"
#include "store/shard_store.h"

/* The first batch's `now`; a plan's batches follow 1..20 ms apart. */
#define WH_NOW0 1764064800000LL

/* The merchants a generator uses (all on the one shard of the tests). */
#define WH_MERCHANTS 3
extern const char *const wh_merchants[WH_MERCHANTS];

/* One request as a client sends it; owns its bytes (body is malloc'd or NULL). */
struct wh_req {
    char method[8];
    char path[128];
    char query[64];
    char *body;
    char key[96];        /* "": no Idempotency-Key */
    char auth[72];       /* "": auth off; else the authenticated merchant */
    char request_id[32];
};

/* One answer, owning its body. rc != 0: the store answered 503 itself. */
struct wh_ans {
    uint16_t status;
    bool replayed;
    int rc;
    size_t len;
    char *body;
};

void wh_req_set(struct wh_req *r, const char *method, const char *path, const char *body,
                const char *key);
void wh_req_copy(struct wh_req *dst, const struct wh_req *src);
void wh_req_free(struct wh_req *r);
void wh_ans_free(struct wh_ans *a);
void wh_ans_copy(struct wh_ans *dst, const struct wh_ans *src);

/* Status, length and bytes equal (replayed is compared by the caller). */
bool wh_ans_same(const struct wh_ans *a, const struct wh_ans *b);

/* Whether the engine stored this first answer under its key (engine/apply.h
 * "Decision"): a replay sent again replays it. */
bool wh_ans_stored(const struct wh_req *r, const struct wh_ans *first);

/* A fresh directory with a one-shard manifest (malloc'd path), and its removal. */
char *wh_tmpdir(void);
void wh_rm_rf(const char *dir);

/* shard_store_open that fails the test with the store's reason. */
struct shard_store *wh_open(const char *dir, const struct shard_store_options *opt);

/* Decodes r (one shard, auth as r->auth says) into op; the op borrows r's bytes. -EINVAL
 * when api_decode refuses it. */
int wh_decode(const struct wh_req *r, struct op *op);

/* Applies reqs[0..n) as ONE batch at now_ms; the answers go to out[0..n) (malloc'd
 * bodies, free with wh_ans_free). Does not wait for durability. Returns apply_batch's
 * result. */
int wh_apply(struct shard_store *s, const struct wh_req *reqs, size_t n, int64_t now_ms,
             struct wh_ans *out);

/* Waits (bounded, 30 s) until everything written is durable: the log's syncer in the
 * write-ahead log mode (kick, event fd, poll), an explicit sync in the LMDB mode.
 * Returns shard_store_failed(). */
int wh_settle(struct shard_store *s);

/* One poll turn of the write-ahead log mode: waits up to timeout_ms on the event fd, then
 * shard_store_poll. Returns its result. */
int wh_poll(struct shard_store *s, int timeout_ms);

/* Runs one read (GET path?query) at now_ms; the answer's body goes to a static buffer
 * (valid until the next call), NUL-terminated. Returns the status (0: rc != 0). */
int wh_get(struct shard_store *s, const char *path, const char *query, int64_t now_ms,
           const char **body);

/* The visible state as text: GET of payments 1, 2, ... of shard 0 up to the first that
 * is missing beyond npays (ids are issued in order and never deleted, so with npays 0
 * this is a function of the state alone), the balances and the whole ledger (in pages of
 * page_limit, following next_after) of every merchant of wh_merchants, and every outbox
 * event after after_seq. malloc'd. */
char *wh_dump(struct shard_store *s, uint64_t npays, uint32_t page_limit, uint64_t after_seq,
              int64_t now_ms);

/* 64-bit FNV-1a of a string. */
uint64_t wh_hash(const char *text);

/* ---- the generator --------------------------------------------------------------------- */

struct wh_pay {
    char id[ID_BYTES + 1];
    int merchant; /* index in wh_merchants */
    int64_t amount;
};

struct wh_gen {
    unsigned seed;
    size_t pad_max; /* authorize bodies carry 0..pad_max spaces (to grow the log) */
    int auth_pct;   /* share of capture/void/refund sent with an authenticated merchant */
    struct wh_pay *pays;
    size_t npays, pays_cap;
    struct wh_req *sent; /* every request generated, for replays and reused keys */
    size_t nsent, sent_cap;
    unsigned long keyseq;
};

void wh_gen_init(struct wh_gen *g, unsigned seed, size_t pad_max, int auth_pct);
void wh_gen_free(struct wh_gen *g);
/* The next request (a copy is kept for later replays). */
void wh_gen_next(struct wh_gen *g, struct wh_req *out);
/* Learns the payment a first 201 of an authorize created. */
void wh_gen_learn(struct wh_gen *g, const struct wh_req *r, const struct wh_ans *a);

/* ---- plans ----------------------------------------------------------------------------- */

struct wh_plan {
    size_t nops, nbatches;
    struct wh_req *reqs;
    struct wh_ans *ref;  /* the reference store's answers */
    size_t *batch_end;   /* ops of batch b: [b ? batch_end[b-1] : 0, batch_end[b]) */
    int64_t *batch_now;  /* `now` of batch b */
    uint64_t npays;      /* payments the plan created */
    uint64_t *op_hash;   /* when asked: wh_hash(wh_dump(npays 0)) after i ops */
    uint32_t dump_page;  /* the page size of those dumps */
};

/*
 * Generates nops operations in batches of 1..batch_max and applies them to the reference
 * store ref: one batch at a time, or, with per_op_hash, one operation at a time (same
 * `now` for the operations of a batch) with a dump's hash after each (op_hash[i + 1]
 * after op i). The reference must answer without 503.
 */
void wh_plan_make(struct wh_plan *p, struct shard_store *ref, unsigned seed, size_t nops,
                  size_t batch_max, size_t pad_max, int auth_pct, bool per_op_hash);
void wh_plan_free(struct wh_plan *p);
size_t wh_batch_first(const struct wh_plan *p, size_t b);

/* ---- forked children ----------------------------------------------------------------- */

/* Writes "FAIL <message>" to fd and _exits 1. */
void wh_child_fail(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

#endif
