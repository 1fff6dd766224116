/*
 * The shard store's write-ahead log mode (see shard_wal.c). Internal to the shard store:
 * store/shard_store.c calls these when the store was opened with `wal` set; the public
 * contract is shard_store.h's.
 */
#ifndef RINGPAY_STORE_SHARD_WAL_H
#define RINGPAY_STORE_SHARD_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/shard_store.h"

/* Opens the log of an open environment, replays it after the last checkpoint and starts
 * the checkpointer. 0, or -errno with one line in why (shard_wal_close cleans up). */
int shard_wal_open(struct shard_store *s, const struct shard_store_options *opt, char *why,
                   size_t why_bytes);
void shard_wal_close(struct shard_store *s);

int shard_wal_apply_batch(struct shard_store *s, struct batch_item *items, size_t n,
                          int64_t now_ms);
int shard_wal_read(struct shard_store *s, struct batch_item *items, size_t n, int64_t now_ms);
int shard_wal_outbox_scan(struct shard_store *s, uint64_t after_seq, size_t max, shard_event_fn fn,
                          void *arg);

void shard_wal_kick(struct shard_store *s);
int shard_wal_poll(struct shard_store *s);
int shard_wal_sync(struct shard_store *s);
bool shard_wal_ready(const struct shard_store *s);
int shard_wal_event_fd(const struct shard_store *s);

uint64_t shard_wal_written(const struct shard_store *s);
uint64_t shard_wal_durable(const struct shard_store *s);
uint64_t shard_wal_event_durable(const struct shard_store *s);
uint64_t shard_wal_event_seq(const struct shard_store *s);
void shard_wal_stats(const struct shard_store *s, struct shard_store_stats *out);

#endif
