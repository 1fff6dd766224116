/*
 * The LMDB shard store: the durable state of one shard (payments, refunds,
 * idempotency records, the merchants' ledgers and balances, the outbox of events)
 * in one LMDB environment at DATA/shard-NNN/, and the group commit that applies a
 * batch of operations in one durable transaction.
 *
 * Threading: a store is owned by ONE thread (the shard thread). Every function here
 * must be called from that thread. This is also what makes growing the map safe:
 * LMDB requires that no transaction of the process is open during
 * mdb_env_set_mapsize, and only the owner ever opens one.
 *
 * Durability (SPEC §6): shard_store_apply_batch returns only after mdb_txn_commit
 * returned, and LMDB's default sync mode fsyncs the data and then the meta page
 * inside it. The answers it wrote are valid to send only after it returns.
 */
#ifndef RINGPAY_STORE_SHARD_STORE_H
#define RINGPAY_STORE_SHARD_STORE_H

#include <stddef.h>
#include <stdint.h>

/* Default initial map size of a shard: 1 GiB of address space (not of disk; the
 * file grows with the data). */
#define SHARD_MAP_DEFAULT_BYTES ((size_t)1 << 30)

/* Default ceiling of map growth on MDB_MAP_FULL: 64 GiB per shard. Past it a batch is
 * answered 503 overloaded; an operator must make room. */
#define SHARD_MAP_MAX_BYTES ((size_t)64 << 30)

struct shard_store;

struct shard_store_options {
    size_t map_bytes;     /* initial map size; 0: SHARD_MAP_DEFAULT_BYTES */
    size_t map_max_bytes; /* growth ceiling; 0: SHARD_MAP_MAX_BYTES */
    /* Fault injection, for tests only: after fault_after_puts successful mdb_put
     * calls, the next one fails with the LMDB code fault_errno (once, or every time
     * when fault_persistent). 0 turns it off. */
    unsigned fault_after_puts;
    int fault_errno;
    int fault_persistent;
};

struct shard_store_stats {
    uint64_t commits;        /* write transactions committed */
    uint64_t failed_commits; /* batches answered 503 because the store failed */
    uint64_t map_full;       /* MDB_MAP_FULL seen */
    uint64_t map_grows;      /* map size increases */
    size_t map_bytes;        /* current map size */
};

/*
 * Opens (creating on first use) the environment of shard `shard` under data_dir,
 * which store_manifest_open must have accepted. opt may be NULL for defaults.
 * Returns 0 and the store in *out, or -errno (-EBADMSG: the environment holds
 * another format version or is corrupt). On error nothing is left open.
 */
int shard_store_open(struct shard_store **out, const char *data_dir, unsigned shard,
                     const struct shard_store_options *opt);

/* Closes the environment and frees the store. NULL is a no-op. */
void shard_store_close(struct shard_store *s);

/* Counters for /metrics. */
void shard_store_stats(const struct shard_store *s, struct shard_store_stats *out);

/*
 * Records that the outbox up to event_seq (inclusive) is replicated to Kafka. The
 * mark is written by the next batch's transaction, so it costs no extra fsync; it
 * never goes backwards.
 */
void shard_store_set_replicated(struct shard_store *s, uint64_t event_seq);

#endif
