/*
 * An in-memory implementation of struct engine_store (engine/apply.h) for tests and
 * benchmarks. Capacities are fixed at mem_store_init; a full table is -ENOSPC. It keeps
 * the exact semantics the LMDB store must have: reads see earlier writes, ledger seqs
 * increase per merchant, balances change only through ledger_balance_apply, events get
 * the sequence next_sequence(ENGINE_SEQ_EVENT) handed out.
 *
 * Fault injection: fail_write_at = n makes the n-th write call (1-based, counted over
 * every write function) return fail_errno; fail_persist keeps failing after it.
 */
#ifndef RINGPAY_TESTS_ENGINE_MEM_STORE_H
#define RINGPAY_TESTS_ENGINE_MEM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/apply.h"

#ifdef __cplusplus
extern "C" {
#endif

struct mem_idem {
    char merchant[MERCHANT_ID_MAX_BYTES + 1];
    char key[IDEMPOTENCY_KEY_MAX_BYTES + 1];
    size_t key_len;
    size_t fp_off[IDEM_FP_PARTS], fp_len[IDEM_FP_PARTS];
    size_t body_off, body_len;
    uint16_t status;
    int64_t created_at_ms;
};

struct mem_entry {
    char merchant[MERCHANT_ID_MAX_BYTES + 1];
    struct ledger_entry e;
};

struct mem_balance {
    char merchant[MERCHANT_ID_MAX_BYTES + 1];
    struct balance b;
};

struct mem_event {
    uint64_t seq;
    char topic[32];
    char key[MERCHANT_ID_MAX_BYTES + 1];
    size_t value_off, value_len;
};

struct mem_store {
    size_t cap; /* rows per table */
    struct payment *payments;
    size_t npayments;
    uint32_t *pay_index; /* open addressing: row + 1, 0 empty; 2 * cap slots */
    struct refund *refunds;
    size_t nrefunds;
    struct mem_idem *idem;
    size_t nidem;
    uint32_t *idem_index; /* open addressing over (merchant, key): row + 1; 2 * cap */
    struct mem_entry *entries;
    size_t nentries;
    struct mem_balance *balances;
    size_t nbalances;
    struct mem_event *events;
    size_t nevents;
    char *arena; /* idempotency and event bytes */
    size_t arena_len, arena_cap;
    uint64_t seq[4]; /* by enum engine_seq */
    uint64_t ledger_seq;

    uint64_t writes; /* write calls so far */
    uint64_t fail_write_at;
    bool fail_persist;
    int fail_errno;
};

extern const struct engine_store mem_store_ops;

/* Allocates tables of cap rows and arena_bytes of arena (test code may allocate). */
int mem_store_init(struct mem_store *m, size_t cap, size_t arena_bytes);
void mem_store_reset(struct mem_store *m); /* empty again, same capacities */
void mem_store_free(struct mem_store *m);

/* Lookups for assertions. */
const struct payment *mem_store_payment(const struct mem_store *m, const char *id);
const struct balance *mem_store_balance(const struct mem_store *m, const char *merchant,
                                        const char *currency);
const char *mem_store_event_value(const struct mem_store *m, size_t i, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
