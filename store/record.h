/*
 * Byte layouts of every LMDB key and value of a shard (shared by shard_store.c, which
 * writes them, and check.c, which audits them).
 *
 * Keys are built so that LMDB's byte order (memcmp) groups what is read together:
 * a merchant's keys share the prefix [u8 length][merchant bytes], and integers inside
 * keys are big-endian so that they sort numerically. Values are fixed-layout records
 * that start with a version byte; integers inside values are little-endian. A reader
 * checks the version and every length and range before it trusts a record; a record
 * that fails is reported as corrupt (-EBADMSG), never dereferenced blindly.
 *
 *   DBI        key                                          value
 *   payments   payment id bytes                             payment record
 *   refunds    refund id bytes                              refund record
 *   idem       [mlen][merchant][idempotency key bytes]      idempotency record
 *   ledger     [mlen][merchant][u64 BE seq]                 ledger entry
 *   balances   [mlen][merchant][3 currency][u8 account]     [ver][7 zero][i64 LE]
 *   outbox     [u64 BE event seq]                           [ver][mlen][merchant]
 *                                                           [u32 LE len][event JSON]
 *   meta       ASCII name ("format", "seq:<kind>",          [ver][7 zero][u64 LE]
 *              "outbox_seq", "replicated")
 */
#ifndef RINGPAY_STORE_RECORD_H
#define RINGPAY_STORE_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Version byte of every value record. */
#define RECORD_VERSION 1

/* A merchant id is 1..64 bytes of [A-Za-z0-9_-] (SPEC §2). */
#define RECORD_MERCHANT_MAX 64
/* An idempotency key is 1..255 printable ASCII bytes (SPEC §2). */
#define RECORD_IDEM_KEY_MAX 255
/* Longest key we build; LMDB's default maximum key size is 511 bytes. */
#define RECORD_KEY_MAX (1 + RECORD_MERCHANT_MAX + RECORD_IDEM_KEY_MAX)
_Static_assert(RECORD_KEY_MAX <= 511, "keys fit LMDB's maximum key size");

/* Size of a balance value and of a meta value. */
#define RECORD_I64_BYTES 16

static inline void record_put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t record_get_u64be(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static inline void record_put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t record_get_u64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline void record_put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint32_t record_get_u32le(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* True for a merchant id of 1..64 bytes of [A-Za-z0-9_-]. */
int record_merchant_valid(const char *m, size_t len);

/* Writes [mlen][merchant] into key; returns the bytes written. The id must be valid. */
size_t record_key_merchant(uint8_t *key, const char *m, size_t mlen);

/* Ledger key [mlen][merchant][u64 BE seq]; returns its length. */
size_t record_key_ledger(uint8_t *key, const char *m, size_t mlen, uint64_t seq);

/* Balance key [mlen][merchant][currency 3][account]; returns its length. */
size_t record_key_balance(uint8_t *key, const char *m, size_t mlen, const char currency[3],
                          uint8_t account);

/* Idempotency key [mlen][merchant][key]; returns its length. */
size_t record_key_idem(uint8_t *key, const char *m, size_t mlen, const char *idem,
                       size_t idem_len);

/*
 * Splits a merchant-prefixed key: on success sets *m / *mlen to the merchant bytes
 * inside key and returns the offset of what follows; returns 0 on a malformed key.
 */
size_t record_key_split(const uint8_t *key, size_t len, const char **m, size_t *mlen);

/* [ver][7 zero][i64/u64 LE]: encode into 16 bytes / decode (0 or -EBADMSG). */
void record_i64_encode(uint8_t out[RECORD_I64_BYTES], int64_t v);
int record_i64_decode(const void *data, size_t len, int64_t *v);

#endif

/* ---- ledger entries --------------------------------------------------------------- */

/* Accounts of a (merchant, currency) (DESIGN "Ledger"); the byte inside balance keys
 * and ledger entries. Same values as the engine's enum ledger_account. */
enum record_account {
    RECORD_ACCOUNT_CLEARING = 1,
    RECORD_ACCOUNT_PENDING = 2,
    RECORD_ACCOUNT_AVAILABLE = 3,
};
#define RECORD_ACCOUNT_VALID(a) ((a) >= RECORD_ACCOUNT_CLEARING && (a) <= RECORD_ACCOUNT_AVAILABLE)

/* Longest payment or refund id we store. */
#define RECORD_ID_MAX 64

/*
 * A ledger entry value:
 *   [ver][debit u8][credit u8][currency 3][id_len u8][0]
 *   [amount i64 LE][created_at_ms i64 LE][payment id, id_len bytes]
 * Its sequence number is in the key.
 */
struct record_ledger_entry {
    uint8_t debit;  /* enum record_account */
    uint8_t credit; /* enum record_account, != debit */
    char currency[3];
    int64_t amount; /* 1 .. 10^15 minor units */
    int64_t created_at_ms;
    uint8_t payment_id_len;
    char payment_id[RECORD_ID_MAX];
};
#define RECORD_LEDGER_FIXED_BYTES 24
#define RECORD_LEDGER_MAX_BYTES (RECORD_LEDGER_FIXED_BYTES + RECORD_ID_MAX)

/* Largest amount the SPEC allows (10^15 minor units). */
#define RECORD_AMOUNT_MAX 1000000000000000LL

/* Encodes e (asserted valid) into out; returns the length. */
size_t record_ledger_encode(uint8_t out[RECORD_LEDGER_MAX_BYTES],
                            const struct record_ledger_entry *e);
/* Decodes and validates; 0 or -EBADMSG. */
int record_ledger_decode(const void *data, size_t len, struct record_ledger_entry *e);

/* True for three upper-case ASCII letters. */
int record_currency_valid(const char c[3]);

/* ---- outbox events ---------------------------------------------------------------- */

/* Largest event JSON we store (an event holds one payment and a few amounts). */
#define RECORD_EVENT_MAX_BYTES 4096

/* Outbox value: [ver][mlen][merchant][u32 LE json_len][json]. */
size_t record_event_size(size_t mlen, size_t json_len);
size_t record_event_encode(uint8_t *out, const char *m, size_t mlen, const char *json,
                           size_t json_len);
/* Decodes in place (pointers into data); 0 or -EBADMSG. */
int record_event_decode(const void *data, size_t len, const char **m, size_t *mlen,
                        const char **json, size_t *json_len);
