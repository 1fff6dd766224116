/*
 * Payment and refund ids that carry their shard, and the merchant-to-shard hash.
 *
 * Id format (exactly ID_BYTES = 22 bytes, lower-case only):
 *     "pay_" | "rfd_"   2 hex digits: shard   16 hex digits: sequence
 *     pay_2a000000000000001f   = payment 0x1f of shard 0x2a
 * The sequence is the shard's own counter, starting at 1 and never reused (the store
 * persists it); sequence 0 is never issued and does not parse. Ids are fixed width, so
 * their byte order is their creation order within a shard.
 *
 * Merchant shard (stable, for outside routers too):
 *     h = 0xcbf29ce484222325                       (64-bit FNV-1a offset basis)
 *     for each byte b of merchant_id:  h ^= b;  h *= 0x100000001b3  (mod 2^64)
 *     shard = h mod nshards
 * over the merchant_id bytes as sent (case-sensitive, no terminator).
 * Test vectors (tests/engine): FNV-1a("") = 0xcbf29ce484222325, FNV-1a("a") =
 * 0xaf63dc4c8601ec8c, FNV-1a("foobar") = 0x85944171f73967e8.
 */
#ifndef RINGPAY_ENGINE_IDS_H
#define RINGPAY_ENGINE_IDS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

enum ids_kind {
    IDS_PAYMENT = 1, /* "pay_" */
    IDS_REFUND,      /* "rfd_" */
};

/* Writes the ID_BYTES-byte id and a NUL into out. shard < SHARDS_MAX, seq >= 1
 * (both asserted). */
void ids_format(char out[ID_BYTES + 1], enum ids_kind kind, uint32_t shard, uint64_t seq);

/* Strict parse: exactly ID_BYTES bytes, the prefix of `kind`, lower-case hex, sequence
 * not 0. Returns 0 and fills *shard and *seq (either may be NULL), or -EINVAL. */
int ids_parse(const char *id, size_t len, enum ids_kind kind, uint32_t *shard, uint64_t *seq);

/* The shard of a payment or refund id (either prefix), or -EINVAL when the id is
 * malformed (the API answers 404 for such ids). */
int ids_shard_of(const char *id, size_t len);

/* 64-bit FNV-1a of merchant[0..len), as defined above. */
uint64_t engine_merchant_hash(const char *merchant, size_t len);

/* engine_merchant_hash(merchant, len) % nshards; nshards in 1..SHARDS_MAX (asserted). */
uint32_t engine_shard_of_merchant(const char *merchant, size_t len, uint32_t nshards);

#ifdef __cplusplus
}
#endif

#endif
