/*
 * The offline audit of a stopped engine's data directory (`ringpay check --data DIR`).
 *
 * Per shard, and summed over all shards, it verifies the invariants of DESIGN
 * "Ledger" and SPEC §6:
 *  1. balances: every (merchant, currency) record sums to zero, and so does the
 *     sum of all balances of the shard and of all shards;
 *  2. per (merchant, currency): pending equals the sum of the amounts of payments in
 *     status authorized, and available equals the sum of captured minus refunded;
 *  3. every payment's ledger entries match its state (authorized, captured, released
 *     and refunded amounts recomputed from its entries), and every ledger entry
 *     names an existing payment of the same merchant and currency;
 *     every refund record names a payment of its merchant and currency, and a
 *     payment's refunds sum to its refunded amount;
 *  4. outbox: event sequence numbers are gapless from just past the replicated mark
 *     to the shard's last issued event number, and every event decodes;
 *  5. idempotency records that claim success (2xx) name a payment or refund that
 *     exists and belongs to the record's merchant;
 * and that every stored record decodes (a corrupt record is reported, never trusted).
 */
#ifndef RINGPAY_STORE_CHECK_H
#define RINGPAY_STORE_CHECK_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Audits the data directory dir (manifest and every shard environment), opened
 * read-only; the engine must be stopped. Writes one line per failed invariant, with
 * specifics, and a final summary line to report. Returns 0 when every invariant
 * holds, 1 when at least one failed, -errno when the directory cannot be read.
 */
int store_check(const char *dir, FILE *report);

#ifdef __cplusplus
}
#endif

#endif
