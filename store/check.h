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
 *  6. the write-ahead log (a shard with a wal/ directory, read with wal_scan: nothing
 *     is written), from LMDB's "wal_pos" (0 when absent), as the next start would
 *     replay it: `segment-bytes` is present and valid while segment files exist, every
 *     segment file has that size, a record starts exactly at wal_pos (the chain of
 *     records from the start of its segment reaches it, no valid record there claims
 *     another position, its segment file is not missing while later ones exist), the
 *     chain does not run into a missing segment while later ones exist, every record
 *     replayed decodes, and no valid record of the epoch in force at the log's end (or
 *     a later one) lies after that end: a torn tail has nothing valid after it, so
 *     such records mean damage inside the log. A torn, stale or never-written end by
 *     itself is normal after a crash and is reported, not failed;
 * and that every stored record decodes (a corrupt record is reported, never trusted).
 */
#ifndef RINGPAY_STORE_CHECK_H
#define RINGPAY_STORE_CHECK_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Audits the data directory dir (manifest and every shard environment and log), opened
 * read-only; the engine must be stopped. Writes one line per failed invariant, with
 * specifics, two information lines per shard log ("shard N: log: ..."), and a final
 * summary line to report: "check: N shards, P payments, E ledger entries, V events;
 * clearing C pending P available A[; log: R records, O operations to replay]; OK" (or
 * "; FAILED: K problems"); the log field appears when a shard has a log. Returns 0 when
 * every invariant holds, 1 when at least one failed, -errno when the directory cannot
 * be read.
 */
int store_check(const char *dir, FILE *report);

#ifdef __cplusplus
}
#endif

#endif
