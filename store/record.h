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
 *   balances   [mlen][merchant][3 currency]                 [ver][7 zero][clearing]
 *                                                           [pending][available]
 *   outbox     [u64 BE event seq]                           [ver][mlen][tlen][0]
 *                                                           [u32 LE json_len][merchant]
 *                                                           [topic][event JSON]
 *   meta       ASCII name ("format", "seq:payment",         [ver][7 zero][u64 LE]
 *              "seq:refund", "seq:event", "replicated")
 */
#ifndef RINGPAY_STORE_RECORD_H
#define RINGPAY_STORE_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Names of the LMDB databases of a shard environment. */
#define RECORD_DB_PAYMENTS "payments"
#define RECORD_DB_REFUNDS  "refunds"
#define RECORD_DB_IDEM     "idem"
#define RECORD_DB_IDEM_EXP "idem_exp"
#define RECORD_DB_LEDGER   "ledger"
#define RECORD_DB_BALANCES "balances"
#define RECORD_DB_OUTBOX   "outbox"
#define RECORD_DB_META     "meta"

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

/* Balance key [mlen][merchant][currency 3]; returns its length. */
size_t record_key_balance(uint8_t *key, const char *m, size_t mlen, const char currency[3]);

/* Idempotency key [mlen][merchant][key]; returns its length. */
size_t record_key_idem(uint8_t *key, const char *m, size_t mlen, const char *idem, size_t idem_len);

/* Expiry index key [u64 BE created_at_ms][idempotency key as above]: the records in
 * creation order, so the oldest are found first. Returns its length. */
size_t record_key_idem_exp(uint8_t *key, int64_t created_at_ms, const uint8_t *idem_key,
                           size_t idem_key_len);

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

/* Accounts of a (merchant, currency) (DESIGN "Ledger"); the byte inside ledger entries. Same values
 * as the engine's enum ledger_account. */
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
#define RECORD_LEDGER_MAX_BYTES   (RECORD_LEDGER_FIXED_BYTES + RECORD_ID_MAX)

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

/* Largest event JSON and topic we store. */
#define RECORD_EVENT_MAX_BYTES 4096
#define RECORD_TOPIC_MAX       64

/* A decoded outbox value; pointers into the record. */
struct record_event {
    const char *merchant;
    size_t merchant_len;
    const char *topic;
    size_t topic_len;
    const char *json;
    size_t json_len;
};

/* Outbox value: [ver][mlen][tlen][0][u32 LE json_len][merchant][topic][json]. */
size_t record_event_size(const struct record_event *ev);
size_t record_event_encode(uint8_t *out, const struct record_event *ev);
/* Decodes in place; 0 or -EBADMSG. */
int record_event_decode(const void *data, size_t len, struct record_event *ev);

/* ---- balances --------------------------------------------------------------------- */

/* The balances of one (merchant, currency):
 *   [ver][7 zero][clearing i64 LE][pending i64 LE][available i64 LE] */
#define RECORD_BALANCE_BYTES 32
struct record_balance {
    int64_t clearing, pending, available;
};
void record_balance_encode(uint8_t out[RECORD_BALANCE_BYTES], const struct record_balance *b);
int record_balance_decode(const void *data, size_t len, struct record_balance *b);

/* ---- payments and refunds --------------------------------------------------------- */

/* Fixed width of payment and refund ids (engine/ids.h). */
#define RECORD_PAYMENT_ID_BYTES 22
#define RECORD_REFERENCE_MAX    512

/*
 * Payment value (72 fixed bytes, then merchant and reference):
 *   [ver][status][mlen][has_ref][u16 LE ref_len][currency 3][0][id 22]
 *   [amount][captured][refunded][created_at_ms][updated_at_ms] (i64 LE each)
 *   [merchant mlen][reference ref_len]
 * Refund value (72 fixed bytes, then merchant):
 *   [ver][payment_status][mlen][currency 3][0 0][id 22][payment id 22][0 0 0 0]
 *   [amount][created_at_ms] (i64 LE) [merchant mlen]
 */
#define RECORD_PAYMENT_FIXED_BYTES 72
#define RECORD_REFUND_FIXED_BYTES  72

/*
 * Idempotency value (36 fixed bytes, then the five byte strings in order):
 *   [ver][present bits of the 4 fingerprint parts][u16 LE status][0 0 0 0]
 *   [created_at_ms i64 LE][u32 LE len x5: method, path, query, body, answer]
 */
#define RECORD_IDEM_FIXED_BYTES 36

struct payment;
struct refund;
struct idem_record;

/* Payment codec. encode asserts a valid payment (payment_check) and returns the length;
 * out holds RECORD_PAYMENT_MAX_BYTES. decode checks every field and invariant of
 * engine/payment.h (never asserting on disk bytes): 0 or -EBADMSG. */
#define RECORD_PAYMENT_MAX_BYTES                                                                   \
    (RECORD_PAYMENT_FIXED_BYTES + RECORD_MERCHANT_MAX + RECORD_REFERENCE_MAX)
size_t record_payment_encode(uint8_t *out, const struct payment *p);
int record_payment_decode(const void *data, size_t len, struct payment *p);

#define RECORD_REFUND_MAX_BYTES (RECORD_REFUND_FIXED_BYTES + RECORD_MERCHANT_MAX)
size_t record_refund_encode(uint8_t *out, const struct refund *r);
int record_refund_decode(const void *data, size_t len, struct refund *r);

/* Idempotency codec. size/encode copy the spans (absent parts are remembered as
 * absent); decode points the spans of *rec into data. */
size_t record_idem_size(const struct idem_record *rec);
size_t record_idem_encode(uint8_t *out, const struct idem_record *rec);
int record_idem_decode(const void *data, size_t len, struct idem_record *rec);
