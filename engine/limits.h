/*
 * Every bound of the engine, in one place, each with the reason for its number
 * (STYLE.md rule 2). Memory is sized from these at start; a full pool or queue is
 * backpressure that the caller answers (503, 413, ...), never silent growth.
 *
 * The SPEC §6 numbers (line, headers, body, timeouts) are contract: change them only
 * with the SPEC.
 */
#ifndef RINGPAY_ENGINE_LIMITS_H
#define RINGPAY_ENGINE_LIMITS_H

/* C++ (bench/) includes this header too; its spelling of _Static_assert differs. */
#if defined(__cplusplus) && !defined(_Static_assert)
#define _Static_assert static_assert
#endif

/* ---- HTTP framing (SPEC §6) ------------------------------------------------------ */

/* One request line or one header line, CRLF included. Longer request line: 414;
 * longer header line: 431. 8 KiB is what nginx and Apache accept by default. */
#define HTTP_LINE_MAX_BYTES (8 * 1024)

/* The whole head: request line, every header line and the blank line. Over: 431. */
#define HTTP_HEAD_MAX_BYTES (32 * 1024)

/* Header fields in one request. Over: 431. */
#define HTTP_HEADERS_MAX 100

/* A request body after chunked decoding. Over: 413. Payment bodies are < 1 KiB; the
 * bound exists so that a client cannot make us buffer without end. */
#define HTTP_BODY_MAX_BYTES (64 * 1024)

/* Time to receive a whole head once its first byte arrived. Over: 408 and close.
 * Defends against slowloris clients that dribble a header forever. */
#define HTTP_HEADER_TIMEOUT_MS 10000

/* A keep-alive connection with no request in progress is closed after this. */
#define HTTP_IDLE_TIMEOUT_MS 75000

/* ---- Connections (net/) ------------------------------------------------------------ */

/* Default cap of open connections per core (--max-connections). Accepts beyond it
 * get a 503 and a close. Two cores times this stays under the usual 20000-file
 * hard limit with room for LMDB and Kafka descriptors. */
#define CONN_PER_CORE_DEFAULT 4096
#define CONN_PER_CORE_MAX     65536

/* Requests of one connection parsed but not yet answered. A pipelining client that
 * sends more simply waits in its socket buffer: backpressure, not an error. */
#define CONN_PIPELINE_MAX 64

/* Every connection owns this much input buffer; requests that fit (nearly all) never
 * touch the large pool. */
#define CONN_SMALL_BUF_BYTES (16 * 1024)

/* A request that does not fit the small buffer borrows one large buffer: a whole
 * head, a whole decoded body, and slack for one chunk-size line in flight. */
#define CONN_LARGE_BUF_BYTES (HTTP_HEAD_MAX_BYTES + HTTP_BODY_MAX_BYTES + 8 * 1024)

/* Large buffers per core. When all are lent, the next request that needs one is
 * answered 503 and its connection closed. */
#define CONN_LARGE_BUFS_PER_CORE 256

/* Answers queued on a connection whose client does not read. Past this we stop
 * parsing its requests until the socket drains. */
#define CONN_OUT_HIGH_BYTES (1024 * 1024)

/* Provided-buffer ring for multishot recv: entries and bytes per entry, per core. */
#define RECV_BUF_COUNT 1024
#define RECV_BUF_BYTES 4096

/* After answering with Connection: close we half-close and drain what the client
 * still sends, for at most this long, so its last answer is not lost to a reset. */
#define CONN_LINGER_MS 2000

/* SIGTERM: time to finish in-flight requests before the reactor exits anyway. */
#define SHUTDOWN_GRACE_MS 10000

/* Timer tick of a reactor: timeouts are checked and the Date header refreshed. */
#define REACTOR_TICK_MS 100

/* X-Request-Id accepted from a client (printable ASCII); longer ones are replaced. */
#define REQUEST_ID_MAX_BYTES 128

/* ---- Cross-core rings -------------------------------------------------------------- */

/* Messages in flight from one core to another. Full: the sender holds the request and
 * retries on its next turn (backpressure). Power of two. */
#define XCORE_RING_SLOTS 4096

/* ---- Shards -------------------------------------------------------------------------- */

/* Operations one group commit takes at most. Under load a batch is everything queued
 * since the last commit; this caps the work (and the answers held back) behind one
 * fsync. At ~1 µs of apply time per operation a full batch adds ~4 ms, about one
 * commit's fsync on ordinary SSDs. */
#define SHARD_BATCH_MAX 4096

/* Idempotency keys are kept at least this long (SPEC §2: at least 24 h; the
 * --idempotency-ttl-hours flag may only raise it). */
#define IDEM_TTL_DEFAULT_MS (24LL * 3600 * 1000)

/* Expired idempotency records deleted per commit at least (see shard_store.c). */
#define IDEM_SWEEP_MIN 256

/* Cores (and so shards) one process runs. */
#define CORES_MAX 64

/* Replicated outbox events deleted per transaction at most (store/shard_store.c). A
 * long Kafka outage leaves a backlog of millions of events; deleting them in one
 * transaction would dirty a page per few events and outgrow LMDB's dirty-page limit
 * (MDB_TXN_FULL, about 128 Ki pages) or stall that commit for seconds. 8192 events of
 * a few hundred bytes dirty a few thousand pages at most. Twice the events one full
 * batch can append (one per operation), so the trim outruns any insert rate. */
#define SHARD_OUTBOX_TRIM_MAX 8192

_Static_assert(HTTP_LINE_MAX_BYTES <= HTTP_HEAD_MAX_BYTES, "a line fits in a head");
_Static_assert(CONN_SMALL_BUF_BYTES >= HTTP_LINE_MAX_BYTES, "small buffer holds a line");
_Static_assert(CONN_LARGE_BUF_BYTES >= HTTP_HEAD_MAX_BYTES + HTTP_BODY_MAX_BYTES,
               "large buffer holds a whole request");
_Static_assert((XCORE_RING_SLOTS & (XCORE_RING_SLOTS - 1)) == 0, "power of two");
_Static_assert((RECV_BUF_COUNT & (RECV_BUF_COUNT - 1)) == 0, "buf ring is a power of two");
_Static_assert(CONN_PER_CORE_DEFAULT <= CONN_PER_CORE_MAX, "default within max");
_Static_assert(SHARD_OUTBOX_TRIM_MAX >= 2 * SHARD_BATCH_MAX, "the trim outruns a full batch");

/* ---- Payments and the API codec (SPEC §2) ------------------------------------------ */

/* Amounts are integers in minor units, 1 <= amount <= 10^15 (SPEC §2). 10^15 minor units
 * is more than any single card or bank payment; it also leaves int64 room for the sum of
 * ~9000 maximal payments in one balance (the store checks overflow, ledger.h). */
#define AMOUNT_MIN 1LL
#define AMOUNT_MAX 1000000000000000LL

/* merchant_id: 1-64 of [A-Za-z0-9_-] (SPEC §2). */
#define MERCHANT_ID_MAX_BYTES 64

/* reference: at most 128 characters (SPEC §2), counted as Unicode code points; UTF-8
 * takes at most 4 bytes per code point, so the stored bytes are bounded by 512. */
#define REFERENCE_MAX_CHARS 128
#define REFERENCE_MAX_BYTES (4 * REFERENCE_MAX_CHARS)

/* Idempotency-Key header: 1-255 printable ASCII (SPEC §2). 255 fits a UUID, a ULID
 * or a client's own composite key, and one LMDB key (511 bytes) with the merchant. */
#define IDEMPOTENCY_KEY_MAX_BYTES 255

/* ISO 4217 style: exactly three upper-case letters. */
#define CURRENCY_BYTES 3

/* Ledger pages: `limit` is 1..1000 (SPEC §2), 100 when absent. 1000 entries render to
 * about 200 KiB, which bounds ENGINE_READ_ANSWER_MAX_BYTES. */
#define LEDGER_PAGE_MAX     1000
#define LEDGER_PAGE_DEFAULT 100

/* Distinct currencies one merchant may use. ISO 4217 lists about 180 active codes; the
 * bound keeps a balances answer finite (an authorize in a 257th currency is 400). */
#define MERCHANT_CURRENCIES_MAX 256

/* Payment and refund ids: "pay_" or "rfd_", 2 lower-case hex digits of the shard and
 * 16 of the shard's sequence (engine/ids.h). Fixed width, so 22 bytes exactly. */
#define ID_BYTES 22

/* Event ids: "evt_" + 2 hex digits of the shard + "_" + 16 hex digits of the shard's
 * event sequence (engine/apply.h). 23 bytes exactly. */
#define EVENT_ID_BYTES 23

/* Shards addressable by an id: two hex digits. */
#define SHARDS_MAX 256

/* jsmn tokens for one request body. A valid body has at most 4 members (9 tokens); the
 * parser reports the first unknown or duplicate member, which always lies within the
 * first 64 tokens, so a bigger body never needs more tokens to be rejected. */
#define JSON_TOKENS_MAX 64

/* Nesting depth of the JSON writer (answers nest 3 deep: object, array, object). */
#define JSON_WRITER_DEPTH_MAX 8

/* The `param` of an error names a field; an unknown field name longer than this is cut
 * (at a UTF-8 boundary) so that an error answer stays small. */
#define API_PARAM_MAX_BYTES 64

/* The `message` of an error. */
#define API_MESSAGE_MAX_BYTES 160

/* Every answer of a state-changing request (payment, refund, error) fits this: a payment
 * is under 1200 bytes even with a 512-byte reference. Also the idempotency record's body. */
#define ENGINE_ANSWER_MAX_BYTES 4096

/* Answers of GET balances and GET ledger: 1000 ledger entries of at most ~200 bytes, or
 * 256 currencies of ~80 bytes. */
#define ENGINE_READ_ANSWER_MAX_BYTES (256 * 1024)

/* One outbox event value: a payment, the amounts and the envelope. */
#define ENGINE_EVENT_MAX_BYTES 4096

/* Timestamps are int64 ms since 1970-01-01T00:00:00Z, rendered RFC 3339 with a 4-digit
 * year; the last such instant is 9999-12-31T23:59:59.999Z. */
#define TIME_MS_MAX 253402300799999LL

_Static_assert(CORES_MAX <= SHARDS_MAX, "every core's shard fits in an id");
_Static_assert(ENGINE_ANSWER_MAX_BYTES <= ENGINE_READ_ANSWER_MAX_BYTES, "read answers are larger");
_Static_assert(LEDGER_PAGE_DEFAULT <= LEDGER_PAGE_MAX, "default within max");
_Static_assert(AMOUNT_MAX < (1LL << 62), "two amounts add without overflow");

#endif
