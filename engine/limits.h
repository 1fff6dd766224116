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
#define CONN_PER_CORE_MAX 65536

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

/* Cores (and so shards) one process runs. */
#define CORES_MAX 64

_Static_assert(HTTP_LINE_MAX_BYTES <= HTTP_HEAD_MAX_BYTES, "a line fits in a head");
_Static_assert(CONN_SMALL_BUF_BYTES >= HTTP_LINE_MAX_BYTES, "small buffer holds a line");
_Static_assert(CONN_LARGE_BUF_BYTES >= HTTP_HEAD_MAX_BYTES + HTTP_BODY_MAX_BYTES,
               "large buffer holds a whole request");
_Static_assert((XCORE_RING_SLOTS & (XCORE_RING_SLOTS - 1)) == 0, "power of two");
_Static_assert((RECV_BUF_COUNT & (RECV_BUF_COUNT - 1)) == 0, "buf ring is a power of two");
_Static_assert(CONN_PER_CORE_DEFAULT <= CONN_PER_CORE_MAX, "default within max");

#endif
