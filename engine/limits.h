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

/* A body the application takes as a stream (net/http.h HTTP_PARSE_HEAD: settle's bank
 * statement upload) is never buffered whole, so only its declared length is bounded
 * here, by the parser; the application sets its own, smaller bound (settle's
 * --recon-max-bytes). 1 TiB: no upload is near it, and it keeps the arithmetic far
 * from overflow. */
#define HTTP_STREAM_LENGTH_MAX (1ULL << 40)

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
 * sends more simply waits in its socket buffer: backpressure, not an error. 64 in
 * flight from one connection already fill a group commit's worth of work for it. */
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

/* The head of one answer: status line, Server, Date, Content-Type, Content-Length,
 * X-Request-Id (REQUEST_ID_MAX_BYTES), the application's extra headers (Allow,
 * Retry-After, Idempotent-Replayed: short constants) and Connection. */
#define CONN_ANSWER_HEAD_MAX_BYTES 1024

/* The largest single answer a connection can be given: a list page or /metrics. */
#define CONN_ANSWER_MAX_BYTES (CONN_ANSWER_HEAD_MAX_BYTES + (512 * 1024))

/* A connection's answer budget: bytes of answers written but not yet sent, plus the
 * room reserved for the answers of its requests still being computed (a payment answer
 * reserves CONN_ANSWER_HEAD_MAX_BYTES + ENGINE_ANSWER_MAX_BYTES, a list answer its
 * 256 KiB). While at or over it, the connection's requests are not dispatched and it
 * is not read from: a client that pipelines without reading is slowed by TCP and
 * costs at most this plus one largest answer. 512 KiB lets a full window of payment
 * answers (64 x 5 KiB) be in flight. */
#define CONN_OUT_MAX_BYTES (512 * 1024)

/* After answering with Connection: close we half-close and drain what the client
 * still sends, for at most this long, so its last answer is not lost to a reset. */
#define CONN_LINGER_MS 2000

/* SIGTERM: time to finish in-flight requests before the reactor exits anyway. */
#define SHUTDOWN_GRACE_MS 10000

/* Timer tick of a reactor: timeouts are checked and the Date header refreshed. */
#define REACTOR_TICK_MS 100

/* X-Request-Id accepted from a client (printable ASCII); longer ones are replaced. */
#define REQUEST_ID_MAX_BYTES 128

/* A request the application cannot take yet (its job pool is empty: the shards are
 * behind) waits while jobs keep coming back; when none has come back for this long,
 * the waiting requests, and their connections' next ones until one is taken, are
 * answered 503 overloaded with Retry-After (SPEC §6: over a bound, a status, never a
 * hang). Bursts are absorbed by waiting, which TCP passes on to the client; a shard
 * stalled on its disk is reported within about a second. */
#define REACTOR_BUSY_WAIT_MAX_MS 1000

/* SQ entries of a reactor's io_uring (the CQ has four times as many): a turn prepares
 * at most a receive, a send and a cancel per connection it touched. */
#define REACTOR_RING_ENTRIES 4096

/* Access log (net/accesslog.h): per core, two buffers of half this. At ~250 bytes a
 * line, a half holds ~500 lines, a few ms of a core's answers at full load; when the
 * log cannot keep up, lines are dropped and counted, requests never wait. */
#define ACCESS_LOG_BUF_BYTES (256 * 1024)

/* One access line: fixed keys and numbers, a method cut to 16 bytes, a route template,
 * the request id (REQUEST_ID_MAX_BYTES, escaped at worst six bytes per byte) and the
 * client address. Below PIPE_BUF (4096), so one write of whole lines stays atomic. */
#define ACCESS_LOG_LINE_MAX_BYTES 2048

/* "[IPv6]:port" at most: 45 + 2 + 1 + 5 characters. */
#define ACCESS_LOG_CLIENT_MAX_BYTES 64

/* The method as logged: every method we serve is shorter; a longer token is cut. */
#define ACCESS_LOG_METHOD_MAX_BYTES 16

/* One line of the other logs (net/log.c), written with one write(2): below PIPE_BUF so
 * that lines from different threads never interleave; longer lines are cut at a field
 * boundary and marked "truncated". */
#define LOG_LINE_MAX_BYTES 4096

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

/* Jobs a shard holds at once while their log records sync (the write-ahead log mode,
 * store/shard.c): a few batches in flight. Every reactor's job pool together is far
 * smaller in practice; the bound only keeps the FIFO fixed. */
#define SHARD_HELD_MAX (4 * SHARD_BATCH_MAX)

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
_Static_assert(CONN_ANSWER_HEAD_MAX_BYTES >= 384 + REQUEST_ID_MAX_BYTES,
               "fixed headers and the request id fit an answer head");
_Static_assert(CONN_OUT_MAX_BYTES >= CONN_PIPELINE_MAX * (CONN_ANSWER_HEAD_MAX_BYTES + 4096),
               "a full window of payment answers fits the budget");
_Static_assert(ACCESS_LOG_LINE_MAX_BYTES >=
                   320 + 6 * REQUEST_ID_MAX_BYTES + ACCESS_LOG_CLIENT_MAX_BYTES,
               "an access line fits");
_Static_assert(ACCESS_LOG_LINE_MAX_BYTES < 4096, "an access line is below PIPE_BUF");
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

/* The `code` of an error: a static word of SPEC §2 (the longest has 24 characters). */
#define API_ERROR_CODE_MAX_BYTES 32

/* Every error body, {"error":{"code","message","param","request_id"}}, fits this: the
 * skeleton, the code, and message, param and request id each escaped at worst six bytes
 * per byte (\u00XX). Error answers are rendered into buffers of this size (net/ and
 * tools/serve/), so no input can reach the assertion that they fit. */
#define API_ERROR_BODY_MAX_BYTES                                                                   \
    (64 + API_ERROR_CODE_MAX_BYTES +                                                               \
     6 * (API_MESSAGE_MAX_BYTES + API_PARAM_MAX_BYTES + REQUEST_ID_MAX_BYTES))

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
_Static_assert(API_ERROR_BODY_MAX_BYTES <= ENGINE_ANSWER_MAX_BYTES,
               "a shard renders an error into an answer buffer");

/* ---- The write-ahead log (store/wal.h) --------------------------------------------------- */

/* One log segment file. 64 MiB zero-fill in ~0.1 s on this disk (measured with dd),
 * and ~3 s of a shard's log at 50k authorizations/s (~400 bytes each): segments are
 * switched a few times a minute, each switch a directory-free open of a prepared
 * file. `serve --wal-segment-mb` may lower it (tests use small segments). */
#define WAL_SEGMENT_BYTES ((size_t)64 << 20)

/* Segments kept prepared ahead of the write position (zero-filled, or recycled from
 * below the last checkpoint), so the log never waits for one. */
#define WAL_SPARE_SEGMENTS 2

/* A batch of at most this many logged operations is written and synced by the shard
 * thread itself when no write is in flight: such a small batch means the shard is not
 * busy, and the two thread hand-offs of the syncer (to it and back, ~10-30 µs each)
 * are a tenth of a sync. Larger batches go to the syncer thread, so the next batch is
 * applied while this one syncs. */
#define WAL_INLINE_BATCH_MAX 4

/* Each of the log's two staging buffers (one being written and synced, one filling):
 * a group commit's records. A full buffer stops the shard from applying more until the
 * write in flight completes (backpressure). 8 MiB holds ~20,000 authorizations. */
#define WAL_STAGE_BYTES ((size_t)8 << 20)

/* ---- The overlay and checkpoints (store/shard_wal.c) ----------------------------------- */

/* One overlay layer (store/overlay.h): the changes since the last checkpoint are held in
 * memory, in two layers per shard (one taking batches, one being written into LMDB).
 * An authorization takes ~3 KiB of a layer (its idempotency record holds the request's
 * fingerprint and the answer; the payment, the event, two ledger entries, balances and
 * their keys): 256 MiB hold ~80,000 of them, more than CHECKPOINT_OPS_DEFAULT, so a
 * checkpoint is normally started by its operation count or its timer and the layer's
 * size is the bound that holds against unusually large requests. Slots: one per 128
 * bytes of arena (a key-value entry is >= 64 bytes, the table stays <= half full).
 * `serve --overlay-mb` may change it (tests use small layers). */
#define OVERLAY_ARENA_DEFAULT_BYTES ((size_t)256 << 20)
#define OVERLAY_BYTES_PER_SLOT      128

/* The most one state-changing operation can add to a layer, besides its fingerprint:
 * an answer and an event (<= 4 KiB each), the payment or refund, up to four ledger
 * entries and balances, three counters, keys and entry heads. Checked before each
 * operation, so a layer is never overfilled; entries likewise. */
#define OVERLAY_OP_FIXED_BYTES (ENGINE_ANSWER_MAX_BYTES + ENGINE_EVENT_MAX_BYTES + 8192)
#define OVERLAY_OP_ENTRIES     32

/* A checkpoint starts when the active layer holds this many operations, or when
 * CHECKPOINT_MS_DEFAULT passed since the last one and it holds any. Measured here
 * (DESIGN.md): LMDB commits of 16,384 random-key inserts run at ~31k ops/s, of 2,048 at
 * ~11k: checkpoints must be large. 32,768 operations are ~1 s of a shard's traffic at
 * full load and ~100 MiB of a layer. `serve --checkpoint-ops/--checkpoint-ms`. */
#define CHECKPOINT_OPS_DEFAULT 32768
#define CHECKPOINT_MS_DEFAULT  2000

/* Batches whose events wait for their log record's sync (the replicator sends only
 * events whose record is durable). More batches in flight merge into the last entry,
 * which only delays those events until a later sync. */
#define SHARD_EVENT_MARKS 64

/* ---- Kafka replication (store/replicator.c) ------------------------------------------ */

/* Events a shard's producer holds at once (handed to librdkafka, no delivery report
 * yet). LMDB is the buffer while Kafka is slow or down, not librdkafka's memory: the
 * window is refilled from the outbox as reports come back. 8192 events is at most
 * 32 MiB per shard (ENGINE_EVENT_MAX_BYTES each; ~0.7 KiB is typical, so ~6 MiB) and
 * two full group-commit batches, enough to keep every partition's produce requests full
 * (librdkafka batches up to 10,000 messages per partition and request) while a round
 * trip is in flight. */
#define REPL_WINDOW_EVENTS 8192

/* Default bound of a shard's replication backlog (events committed but not yet
 * acknowledged by Kafka), --replication-backlog-events and --replication-backlog-bytes.
 * Past either, /readyz turns 503 and the shard refuses new state changes (503
 * overloaded, Retry-After) until Kafka takes the backlog. The backlog lives in LMDB: an
 * authorization's event is ~0.4 KiB of key and value (388 B measured) and ~0.45 KiB of
 * the outbox's pages (9 per 4 KiB page), so 2,000,000 events are ~0.8 GiB of values
 * and ~0.9 GiB of the shard's map (far within SHARD_MAP_MAX_BYTES): ~15 minutes of a
 * shard at its full durable rate on the development machine (~2,500 authorizations/s
 * per shard), hours at ordinary load, and ~80 s to drain at the measured ~25,000
 * events/s per shard (docs/benchmarks.md). The bytes bound (2 GiB) binds first only
 * when events average over 1 KiB (long references). */
#define REPL_BACKLOG_EVENTS_DEFAULT 2000000ULL
#define REPL_BACKLOG_BYTES_DEFAULT  (2ULL << 30)

/* After a fatal producer error (or a message that failed for good) the producer is
 * destroyed and a new one resends from the mark after this back-off, doubled at each
 * failure in a row up to the maximum and reset by a successful delivery: a cluster that
 * refuses every message must not make us rebuild a producer in a tight loop. */
#define REPL_RECREATE_BACKOFF_MIN_MS 100
#define REPL_RECREATE_BACKOFF_MAX_MS 10000

/* The replicated mark rides the next group commit (no fsync of its own). A shard that
 * had no commit for this long stores a mark that moved with an empty commit of its
 * own, so that an idle engine restarted after an outage does not send the whole
 * backlog again. The shard is idle then: nobody waits for that fsync. */
#define REPL_MARK_IDLE_MS 1000

/* On SIGTERM each shard's producer gets this long to deliver what it holds, so that the
 * mark stored at exit is close to the end and a restart resends little. */
#define REPL_CLOSE_FLUSH_MS 2000

/* librdkafka's reconnect back-off ceiling: after an outage the producer finds the
 * brokers again within this (its default, 10 s, would keep a drained cluster idle). */
#define REPL_RECONNECT_BACKOFF_MAX_MS 1000

/* How long librdkafka lets a message wait to fill a batch (linger.ms). librdkafka 2.0
 * sends one ProduceRequest per partition, so at a shard's few thousand events/s over
 * 16 partitions its default of 5 ms sends batches of one or two messages: measured on
 * this 2-core machine, ~45 µs of CPU per event in the engine (producer threads,
 * requests, reports) against ~15 µs at 25 ms, which the durable path's threads then
 * miss. 20 ms adds ~20 ms to the replication lag, which the settlement feed does not
 * notice; --kafka-conf linger.ms=N changes it. */
#define REPL_LINGER_MS 20

/* Topics one producer sends to: the four payment.* topics and room for more. */
#define REPL_TOPICS_MAX 8

/* A topic name (SPEC §4 names are short; Kafka allows 249). */
#define REPL_TOPIC_MAX_BYTES 64

_Static_assert(REPL_WINDOW_EVENTS >= 2 * SHARD_BATCH_MAX,
               "a full batch's events fit the window while the previous one is in flight");
_Static_assert((unsigned long long)REPL_WINDOW_EVENTS *ENGINE_EVENT_MAX_BYTES <= (32ULL << 20),
               "the window stays within 32 MiB of librdkafka memory per shard");
_Static_assert(REPL_BACKLOG_EVENTS_DEFAULT >= 100ULL * SHARD_BATCH_MAX,
               "the default backlog outlasts many full batches");
_Static_assert(REPL_RECREATE_BACKOFF_MIN_MS <= REPL_RECREATE_BACKOFF_MAX_MS, "min <= max");

/* ---- Serving: jobs, rings, metrics (tools/serve/) ------------------------------------ */

/* A request on its way to a shard and back is a job from its reactor's fixed pool
 * (tools/serve/job_pool.h). A small job's data area holds an answer and a fingerprint
 * (method, path and body of a POST) of up to 2 KiB; an ordinary authorize is ~200
 * bytes, so only unusually large bodies need a large job. */
#define JOB_FP_SMALL_MAX_BYTES 2048
#define JOB_SMALL_DATA_BYTES   (JOB_FP_SMALL_MAX_BYTES + ENGINE_ANSWER_MAX_BYTES)

/* A large job holds a list answer (balances, ledger pages) or the fingerprint of the
 * largest POST the parser lets through with its answer. */
#define JOB_LARGE_DATA_BYTES ENGINE_READ_ANSWER_MAX_BYTES

/* Jobs per reactor. A ledger page is 256 KiB, so large jobs are few: 64 in flight per
 * core is 16 MiB. Both classes together never exceed a ring's slots: a reactor's
 * sends to a shard and a shard's replies to the reactor always find room (neither
 * side ever holds a job back), and a core's jobs cost at most ~45 MiB of address
 * space, resident only as far as they are used. When a class is empty the
 * connection that needs a job waits (net/ stops reading it) until one comes back. */
#define JOB_LARGE_PER_CORE 64
#define JOB_SMALL_PER_CORE (XCORE_RING_SLOTS - JOB_LARGE_PER_CORE)

/* SQ entries of a shard thread's io_uring: it only sends MSG_RING wake-ups, one per
 * reactor per turn. */
#define SHARD_RING_ENTRIES 256

/* GET /metrics: every family of up to CORES_MAX cores fits comfortably. */
#define METRICS_BODY_MAX_BYTES (512 * 1024)

_Static_assert(CONN_ANSWER_MAX_BYTES >= CONN_ANSWER_HEAD_MAX_BYTES + METRICS_BODY_MAX_BYTES &&
                   CONN_ANSWER_MAX_BYTES >=
                       CONN_ANSWER_HEAD_MAX_BYTES + ENGINE_READ_ANSWER_MAX_BYTES,
               "the largest answer is a list page or /metrics");
_Static_assert(HTTP_LINE_MAX_BYTES + HTTP_BODY_MAX_BYTES + ENGINE_ANSWER_MAX_BYTES <=
                   JOB_LARGE_DATA_BYTES,
               "the largest POST's fingerprint and its answer fit a large job");
_Static_assert(JOB_SMALL_DATA_BYTES < JOB_LARGE_DATA_BYTES, "classes grow");
_Static_assert(JOB_SMALL_PER_CORE + JOB_LARGE_PER_CORE <= XCORE_RING_SLOTS,
               "a reactor's jobs always fit a ring: sends and replies never wait");
_Static_assert(SHARD_RING_ENTRIES >= CORES_MAX, "one wake-up per reactor fits a turn");

/* ---- Authentication and limits (SPEC §3) --------------------------------------------- */

/* A signed request's X-Ringpay-Timestamp may differ from the server clock by at most
 * this many seconds either way; more is 401 (SPEC §3). */
#define AUTH_CLOCK_SKEW_MAX_S 300

/* X-Ringpay-Timestamp is decimal unix seconds without sign or leading zero. 12 digits
 * reach the year 9999 (TIME_MS_MAX / 1000 = 253402300799), the last instant we render. */
#define AUTH_TIMESTAMP_MAX_DIGITS 12

/* X-Ringpay-Signature is "v1=" and 64 lower-case hex digits of the HMAC-SHA256. */
#define AUTH_SIGNATURE_BYTES (3 + 64)

/* Key ids: "rpk_" and 16 lower-case hex digits of getrandom(2) bytes. A key id is not
 * secret (it travels in every request); 64 random bits only keep ids unguessable and
 * free of collisions across data directories. Fixed width: 20 bytes. */
#define KEY_ID_PREFIX     "rpk_"
#define KEY_ID_HEX_DIGITS 16
#define KEY_ID_BYTES      (4 + KEY_ID_HEX_DIGITS)

/* Secrets: "rps_" and 64 lower-case hex digits of 32 getrandom(2) bytes (SPEC §3: 32
 * random bytes). The HMAC key is these 68 ASCII bytes exactly as printed. Hex needs no
 * quoting in JSON, shell or headers; the prefix lets a log scan (net/log.h) and secret
 * scanners recognise a leaked secret. */
#define KEY_SECRET_PREFIX       "rps_"
#define KEY_SECRET_RANDOM_BYTES 32
#define KEY_SECRET_BYTES        (4 + 2 * KEY_SECRET_RANDOM_BYTES)

/* Active keys per merchant: two, so that a new key is rolled out before the old one is
 * revoked (SPEC §3). Admin keys, which belong to no merchant, form one group of their
 * own under the same bound. */
#define KEYS_ACTIVE_PER_MERCHANT_MAX 2

/* Keys in one key file, revoked ones included (they stay listed for the audit trail).
 * 64 Ki keys is 32 Ki merchants rotating; the file is then at most 16 MiB and loads in
 * tens of milliseconds, off the request path (start-up and SIGHUP). */
#define KEYFILE_KEYS_MAX 65536

/* One line of the key file, newline included. The longest line a key can make is
 * key id, status, scope, created time, secret and a 64-byte merchant id with five
 * separators: 185 bytes. A longer line is corruption, refused. */
#define KEYFILE_LINE_MAX_BYTES 256

/* The whole key file: the header line and KEYFILE_KEYS_MAX key lines. */
#define KEYFILE_MAX_BYTES ((size_t)KEYFILE_LINE_MAX_BYTES * (KEYFILE_KEYS_MAX + 1))

/* `ringpay keys add/revoke` wait this long for another one's lock on the key file, then
 * give up with one line: a change takes milliseconds, so a longer wait means a stuck
 * process, which a person should look at rather than a queue of waiting commands. */
#define KEYFILE_LOCK_WAIT_MS 5000

/* SIGHUP reloads of the key file whose old key set a reactor may still hold (it is
 * freed once every reactor has passed a loop turn, within ~REACTOR_TICK_MS). More
 * reloads than this within that time are refused with one line; the keys in force
 * stay. */
#define KEYS_RELOADS_PENDING_MAX 8

/* Merchants whose request budget one shard tracks at once (tools/serve/limits). A
 * bucket that has refilled to its burst is the same as no bucket, so such entries are
 * reused first; only when MERCHANT_BUCKETS_PER_SHARD merchants are all mid-budget at
 * once does the least recently used one start over (full) — lenient, never wrong in the
 * refusing direction. 64 Ki entries are ~3 MiB per shard. */
#define MERCHANT_BUCKETS_PER_SHARD 65536

/* Client addresses one reactor tracks (open connections and request budget) at once,
 * with the same reuse rule; an address with open connections is never reused. */
#define CLIENT_ADDRS_PER_CORE 65536

/* Default budgets (SPEC §3: generous enough that benchmarks are not throttled): a
 * merchant 100,000 requests/s with bursts of 200,000, kept by the shard that owns it;
 * a client address 1,000,000 requests/s with bursts of 1,000,000 on each core, and as
 * many connections per core as --max-connections. Operators lower them per deployment
 * (--merchant-rps, --merchant-burst, --client-rps, --client-burst,
 * --client-max-connections). */
#define MERCHANT_RPS_DEFAULT   100000
#define MERCHANT_BURST_DEFAULT 200000
#define CLIENT_RPS_DEFAULT     1000000
#define CLIENT_BURST_DEFAULT   1000000

/* Token buckets (engine/bucket.h): rate in tokens per second and burst in tokens. The
 * bounds keep the arithmetic (milli-tokens, int64) far from overflow: a full bucket is
 * at most 10^12 milli-tokens and one step adds at most 10^12. */
#define BUCKET_RATE_MAX  1000000000
#define BUCKET_BURST_MAX 1000000000

/* PROXY protocol v1: the specification's own bound, "PROXY UNKNOWN" with two IPv6
 * addresses and ports, CRLF included. */
#define PROXY_V1_MAX_BYTES 107

/* PROXY protocol v2: the 16-byte fixed part plus at most this many bytes of addresses
 * and TLVs. HAProxy's TLVs (ALPN, authority, unique id, SSL details) stay within a few
 * hundred bytes; 2 KiB leaves room for cloud balancers' TLVs while bounding what a
 * listed balancer can make a connection buffer before its first request. */
#define PROXY_V2_FIXED_BYTES   16
#define PROXY_V2_MAX_LEN_BYTES 2048
#define PROXY_V2_MAX_BYTES     (PROXY_V2_FIXED_BYTES + PROXY_V2_MAX_LEN_BYTES)

/* Networks in one CIDR list (--allow, --ops-allow, --proxy-protocol). Matching is a
 * linear scan per connection; a list longer than this belongs in a firewall. */
#define CIDR_LIST_MAX 128

_Static_assert(KEYFILE_LINE_MAX_BYTES >= KEY_ID_BYTES + 7 /* revoked */ + 8 /* merchant */ +
                                             AUTH_TIMESTAMP_MAX_DIGITS + KEY_SECRET_BYTES +
                                             MERCHANT_ID_MAX_BYTES + 5 + 1,
               "the longest key line fits");
_Static_assert(KEYS_ACTIVE_PER_MERCHANT_MAX >= 2, "rotation needs two active keys");
_Static_assert(PROXY_V2_MAX_BYTES <= CONN_SMALL_BUF_BYTES, "a PROXY header fits a small buffer");
_Static_assert(PROXY_V1_MAX_BYTES <= PROXY_V2_MAX_BYTES, "v1 is the smaller header");
_Static_assert((long long)BUCKET_BURST_MAX * 1000 < (1LL << 62), "milli-tokens fit int64");

/* ---- Back office: settlement and reconciliation (SPEC §5, engine/settle.h, engine/csv.h,
 * store/settle_store.h) ------------------------------------------------------------------ */

/* The largest engine event value settle parses. The engine renders every event within
 * ENGINE_EVENT_MAX_BYTES; a longer value is not the engine's and is poison. */
#define SETTLE_EVENT_MAX_BYTES ENGINE_EVENT_MAX_BYTES

/* Nesting of the event JSON: the envelope holds "payment" and "refund" objects (depth 2).
 * Members settle does not know are skipped (forward compatibility) but must nest no
 * deeper than this, so that a hostile value cannot make the parser recurse. */
#define SETTLE_EVENT_DEPTH_MAX 8

/* A poison event's reason (DLQ, logs): a short fixed sentence and at most a member name. */
#define SETTLE_REASON_MAX_BYTES 160

/* The original bytes of a poison message kept in the dead-letter store. Kafka's default
 * message.max.bytes is 1 MiB; a longer value is kept cut to this, and marked so. */
#define SETTLE_DLQ_VALUE_MAX_BYTES (1024 * 1024)

/* A Kafka topic name (Kafka's own limit is 249 characters) and message key as stored
 * with consumed offsets and dead letters. Longer keys are cut (they are only shown). */
#define SETTLE_TOPIC_MAX_BYTES 249
#define SETTLE_KEY_MAX_BYTES   256

/* Batch totals (gross, refunds) stay below 2^62 and adjustments strictly within +-2^62,
 * so net = gross - refunds + adjustments never leaves int64. That is 4,611 maximal
 * payments (AMOUNT_MAX) in one batch; an event that would pass the bound is refused
 * (dead letter) rather than wrap. */
#define SETTLE_TOTAL_MAX (1LL << 62)

/* Settlement ids: "stl_" YYYYMMDD "_" currency "_" merchant_id: readable, unique per
 * (merchant, currency, business date), and parsed back without a lookup. */
#define SETTLE_BATCH_ID_MAX_BYTES (4 + 8 + 1 + CURRENCY_BYTES + 1 + MERCHANT_ID_MAX_BYTES)

/* settlement.closed and recon.unmatched event values: a settlement or an item with its
 * envelope. An item holds a transaction id and a reason of at most RECON_FIELD_MAX_BYTES
 * each, escaped at worst six bytes per byte. */
#define SETTLE_OUT_EVENT_MAX_BYTES 4096

/* --tz offsets: every zone in the tz database is within -12 h .. +14 h of UTC. The
 * calendar asserts |offset| < 24 h, which its day arithmetic relies on (a local day
 * starts within 26 hours of the same wall time read as UTC). */
#define SETTLE_TZ_OFFSET_MAX_S (24 * 3600 - 1)

/* --grace: the time a business day stays open after it ended (default 10 minutes,
 * SPEC §5). At most a week: a longer grace is a misconfiguration. */
#define SETTLE_GRACE_DEFAULT_MS (10LL * 60 * 1000)
#define SETTLE_GRACE_MAX_MS     (7LL * 24 * 3600 * 1000)

/* Retention of the processed-event memory and of the matching index, in business days
 * (store/settle_store.h). Events of a business date older than the horizon (today minus
 * this) are refused to the DLQ, because their duplicates could no longer be recognised.
 * 35 days covers a monthly bank statement and Kafka's default retention (7 days) many
 * times over. */
#define SETTLE_RETENTION_DAYS_DEFAULT 35
#define SETTLE_RETENTION_DAYS_MIN     2
#define SETTLE_RETENTION_DAYS_MAX     3660

/* Expired processed ids and index entries deleted per transaction at most, so that the
 * first commit after a long pause does not delete a month of ids at once. */
#define SETTLE_EXPIRE_MAX 8192

/* Batches closed per transaction at most: a date's close runs over several commits when
 * it has more batches (the date is marked closed in the first one, so no event counts
 * in it any more). Each close writes the batch, its indexes and one outbox event. */
#define SETTLE_CLOSE_MAX 4096

/* GET /v1/settlements and the items of a reconciliation file: limit 1..1000, default
 * 100, like the ledger. A listing with filters examines at most SETTLE_LIST_SCAN_MAX
 * rows for one page; a page cut short by it still carries next_after. */
#define SETTLE_PAGE_MAX      1000
#define SETTLE_PAGE_DEFAULT  100
#define SETTLE_LIST_SCAN_MAX 20000

/* Bank statement CSV (engine/csv.h): one line without its terminator. A valid line is
 * about 60 bytes (22 + 16 + 3 + 10 and separators); 1 KiB leaves room for quoting and
 * for banks' longer transaction ids while bounding the reader's buffer. */
#define CSV_LINE_MAX_BYTES 1024

/* Fields of one CSV line the reader splits out; a line with more is malformed. */
#define CSV_FIELDS_MAX 16

/* A reconciliation line's transaction_id (printable ASCII), and any field echoed back
 * in an item. Payment ids have ID_BYTES; a longer id cannot be ours. */
#define RECON_FIELD_MAX_BYTES 64

/* Distinct value dates in one bank file. missing_in_bank scans the matching index for
 * each of them; a year of daily values is plenty, and a line with one more is
 * malformed rather than a scan of every date in history. */
#define RECON_VALUE_DATES_MAX 366

/* Lines of an upload classified per transaction (and items rematched, missing payments
 * listed): a 1,000,000-line file is ~250 commits, each of a few thousand pages. */
#define RECON_COMMIT_LINES 4096

/* ---- The settle program (tools/settle/) ---- */

/* --recon-max-bytes default: a bank statement upload (SPEC §5: 256 MiB). A 1,000,000-line
 * statement is ~45 MB. */
#define SETTLE_RECON_MAX_BYTES_DEFAULT (256ULL << 20)

/* Uploads receiving at once. Each spools its body to a file in the data directory
 * (its signature covers the body's hash, known only at the end, so nothing is
 * classified before the whole body is verified) and holds ~9 KiB of signed parts; a
 * fifth concurrent upload is 503 overloaded. Finance uploads a few files a day. */
#define SETTLE_UPLOADS_MAX 4

/* Bytes read from a spooled upload per feed of the classifier. */
#define SETTLE_UPLOAD_CHUNK_BYTES (64 * 1024)

/* A progress line in the log every this many statement lines (a 1M-line file: 10). */
#define SETTLE_RECON_PROGRESS_LINES 100000

/* Messages the consumer applies in one transaction at most (whatever librdkafka has
 * fetched, up to this). Measured (docs/benchmarks.md section 9): a durable commit of
 * 4,096 events takes ~13 ms, ~320,000 events/s, above the engine's best authorization
 * rate, so the store does not make settle fall behind (its Kafka fetches may: see there);
 * a larger batch would hold the reactor (and the API) longer per commit for little. */
#define SETTLE_CONSUME_BATCH_MAX 4096

/* ...and the longest a batch waits to fill once its first message was taken: fetch
 * responses bring a few hundred messages each, and committing each alone costs a
 * durable commit per few hundred events. A lone event waits this much more. */
#define SETTLE_CONSUME_WAIT_MS 20

/* settle's outbox messages handed to its producer and not yet acknowledged, at most:
 * LMDB, not librdkafka's memory, is the buffer while Kafka is away. */
#define SETTLE_PUBLISH_WINDOW 1024

/* Idempotency records of settle's own POSTs (store/settle_store.h). Kept this long
 * after their answer (SPEC §2: at least 24 h). Their answers are a close, a file's
 * summary, a dead letter's outcome or an error body: each fits the engine's answer
 * bound, which is also the cap of a stored answer. Expired records are deleted at most
 * SETTLE_IDEM_EXPIRE_MAX per transaction (settle's POSTs are a few a day; the bound
 * only keeps the first commit after a long pause small). */
#define SETTLE_IDEM_TTL_MS         (24LL * 3600 * 1000)
#define SETTLE_IDEM_BODY_MAX_BYTES ENGINE_ANSWER_MAX_BYTES
#define SETTLE_IDEM_EXPIRE_MAX     256

_Static_assert(SETTLE_RECON_MAX_BYTES_DEFAULT <= HTTP_STREAM_LENGTH_MAX, "an upload may stream");
_Static_assert(SETTLE_UPLOAD_CHUNK_BYTES >= CSV_LINE_MAX_BYTES, "a chunk holds a line");
_Static_assert(API_ERROR_BODY_MAX_BYTES <= SETTLE_IDEM_BODY_MAX_BYTES,
               "settle stores error answers for replay");

_Static_assert(SETTLE_TOTAL_MAX > AMOUNT_MAX && SETTLE_TOTAL_MAX <= (1LL << 62),
               "totals below it hold an amount, and three of them add within int64");
_Static_assert(SETTLE_BATCH_ID_MAX_BYTES == 81, "the settlement id layout");
_Static_assert(SETTLE_EVENT_MAX_BYTES <= SETTLE_DLQ_VALUE_MAX_BYTES,
               "a dead letter holds any event");
_Static_assert(SETTLE_RETENTION_DAYS_MIN <= SETTLE_RETENTION_DAYS_DEFAULT &&
                   SETTLE_RETENTION_DAYS_DEFAULT <= SETTLE_RETENTION_DAYS_MAX,
               "default within bounds");
_Static_assert(SETTLE_PAGE_DEFAULT <= SETTLE_PAGE_MAX && SETTLE_PAGE_MAX <= SETTLE_LIST_SCAN_MAX,
               "a full page fits the scan bound");
_Static_assert(CSV_FIELDS_MAX >= 4 && RECON_FIELD_MAX_BYTES >= ID_BYTES, "a statement line fits");
_Static_assert(RECON_FIELD_MAX_BYTES < CSV_LINE_MAX_BYTES, "a field fits a line");

#endif
