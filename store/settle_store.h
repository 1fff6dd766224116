/*
 * settle's store: the back office's durable state in its own data directory (SPEC §5),
 * one LMDB environment written by one thread (settle's main loop). The rules are
 * engine/settle.h's; this file is where they meet the disk.
 *
 * Directory: DIR/MANIFEST ("ringpay-settle 1", written once, atomically: a settle
 * directory is never mistaken for an engine's, nor the reverse), DIR/LOCK (store/
 * dirlock.h: settle_store_open takes it and holds it until close, so one process owns
 * the directory), DIR/store/ (the LMDB environment). The record layouts are at the top
 * of settle_store.c; every value starts with a version byte and is checked on read.
 *
 * What it keeps:
 *  - batches by (merchant, currency, business date) and their settlement ids
 *    ("stl_YYYYMMDD_CUR_merchant" names the key: no id index), indexes for the listing
 *    (creation order, by merchant, by date, open ones) and the dates closed;
 *  - EXACTLY ONCE: the event ids applied and, per (topic, partition), the next Kafka
 *    offset to consume, both written in the same transaction as the aggregates the
 *    messages changed. A message below its partition's stored offset is skipped without
 *    being read (SETTLE_MSG_STALE); an event id seen before changes nothing
 *    (SETTLE_MSG_DUPLICATE: the engine's at-least-once outbox may publish an event
 *    twice, at two offsets). After a crash, a restart or a rebalance the consumer seeks
 *    each assigned partition to settle_store_offset_get (never the group's committed
 *    offsets): what was committed is exactly what was counted;
 *  - bounded memory of ids (decision): the horizon is the business date of now minus
 *    retention_days (default SETTLE_RETENTION_DAYS_DEFAULT), only ever moving forward.
 *    Ids and matching-index entries of dates before it are deleted (at most
 *    SETTLE_EXPIRE_MAX per transaction), and an event dated before it is refused to
 *    the dead letters (settle.h): a batch that old is closed for good and its
 *    duplicates could no longer be recognised, so no event can ever count twice;
 *  - the matching index (payment id -> captured amount, currency, value date, merchant)
 *    from the captures consumed, and by value date for missing_in_bank;
 *  - reconciliation files: summary, per-file value dates, the transaction ids named
 *    (duplicates, missing_in_bank), the unmatched items; rematch;
 *  - dead letters: reason, source topic/partition/offset, key and original bytes (cut
 *    at SETTLE_DLQ_VALUE_MAX_BYTES, marked), pending or replayed;
 *  - idempotency records of settle's own POSTs, written with the change they answer
 *    (section "Idempotency" below);
 *  - settle's own OUTBOX of settlement.closed, recon.unmatched and payment.dlq messages
 *    in one sequence (so in commit order, hence ordered per merchant), at least once:
 *    a replicated mark (settle_store_set_replicated) is written by the next
 *    transaction and the outbox below it trimmed (SHARD_OUTBOX_TRIM_MAX a transaction).
 *
 * Durability (decision): LMDB's default durable commit (data fdatasync, then the meta
 * page through a synced write) on every transaction, not the engine's position scheme.
 * settle answers few requests (a close, an upload, a rematch) and each already spans
 * one or more commits; its consumer commits batches of hundreds of messages, so two
 * syncs per commit cost nothing that matters, and every function that returns 0 after
 * writing has its change on disk. Never MDB_NOSYNC, MDB_NOMETASYNC, MDB_MAPASYNC or
 * MDB_WRITEMAP (asserted at open).
 *
 * Failure: like the shard store. A write that does not fit (MDB_MAP_FULL) grows the map
 * (doubling up to map_max_bytes) and runs the transaction again once; MDB_TXN_FULL and
 * a map at its ceiling return -ENOSPC with nothing written. Any other commit error
 * fails the store for good (after a failed fsync nothing later can be trusted): every
 * later write returns it (settle_store_failed) until the process reopens the store.
 *
 * Shared stores (decision, `settle --shared`; docs/backoffice.md): the members of one
 * consumer group on one host may open the same directory together (options.shared: the
 * directory lock in its shared form, store/dirlock.h). LMDB serialises their write
 * transactions across processes, and everything exactly-once depends on is read and
 * written inside those transactions (stored offsets, ids seen, batches, counters, the
 * replicated mark only ever moves forward), so a partition that moves from one member
 * to another in a rebalance is resumed from what the other committed, and a message
 * both happen to apply is counted once. Per member: the statistics (counters of what
 * this process did), the map size (a map another member grew is adopted at the next
 * transaction: MDB_MAP_RESIZED), and the right to publish the outbox, which one member
 * holds at a time (settle_store_publisher). Uploads left "processing" are failed only
 * by a member that opens the store alone (the others may still be streaming theirs).
 *
 * Threads: one thread owns a store and makes every write call. Reads take their own
 * read transaction; they may run on other threads only when growth is off
 * (map_max_bytes == map_bytes: LMDB may not resize the map under a reader).
 */
#ifndef RINGPAY_STORE_SETTLE_STORE_H
#define RINGPAY_STORE_SETTLE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/settle.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SETTLE_MAP_DEFAULT_BYTES ((size_t)1 << 30)
#define SETTLE_MAP_MAX_BYTES     ((size_t)64 << 30)

/* Headers of an outbox message (payment.dlq carries the reason and the source). */
#define SETTLE_OUT_HEADERS_MAX 4

struct settle_store;

struct settle_store_options {
    size_t map_bytes;        /* initial map size; 0: SETTLE_MAP_DEFAULT_BYTES */
    size_t map_max_bytes;    /* growth ceiling; 0: SETTLE_MAP_MAX_BYTES */
    uint32_t retention_days; /* 0: SETTLE_RETENTION_DAYS_DEFAULT; else MIN..MAX */
    /* Fault injection, tests only (as in store/shard_store.h): after fault_after_puts
     * successful puts the next fails with the LMDB code (or errno) fault_errno, once or
     * persistently; after fault_after_commits commits the next is aborted and reported
     * as the errno fault_commit_errno (a failed fsync). 0 turns each off. */
    unsigned fault_after_puts;
    int fault_errno;
    int fault_persistent;
    unsigned fault_after_commits;
    int fault_commit_errno;
    bool shared; /* open next to the other members of a group (see the top) */
    /* Idempotency records are kept this long; 0: SETTLE_IDEM_TTL_MS (tests may shorten
     * it to see expiry, the program never does: SPEC §2 asks for at least 24 h). */
    int64_t idem_ttl_ms;
};

struct settle_store_stats {
    uint64_t messages;     /* messages applied (committed), stale ones included */
    uint64_t counted;      /* events counted in their own batch */
    uint64_t adjusted;     /* late events counted as adjustments */
    uint64_t duplicates;   /* events seen before */
    uint64_t ignored;      /* authorized and voided events */
    uint64_t stale;        /* messages below their partition's stored offset */
    uint64_t dead_letters; /* poison or refused messages stored as dead letters */
    uint64_t batches_closed;
    uint64_t expired;      /* processed ids and index entries deleted by the horizon */
    uint64_t recon_lines;  /* reconciliation lines classified */
    uint64_t idem_expired; /* idempotency records deleted by their retention */
    uint64_t commits;
    uint64_t failed_commits;
    uint64_t map_full;
    uint64_t map_grows;
    uint64_t map_adopted; /* maps another member grew, adopted (shared stores) */
    size_t map_bytes;
    uint64_t open_batches;   /* batches open now (read from the store: every member's) */
    uint64_t outbox_seq;     /* last outbox message committed (by any member) */
    uint64_t replicated_seq; /* outbox replicated (and trimmed) up to this */
    int32_t horizon;         /* dates before it are forgotten and refused */
};

/* Opens (creating on first use) the store in data_dir, taking its lock. Returns 0 and
 * *out, or -errno with one line in why: -EBUSY (another process holds the directory),
 * -EINVAL (not a settle directory: an engine's, or another format version), -EBADMSG
 * (a corrupt store), other -errno from the file system. Nothing stays open on error.
 * Reconciliation uploads left "processing" by a crash are marked failed (when no other
 * member shares the directory). */
int settle_store_open(struct settle_store **out, const char *data_dir,
                      const struct settle_store_options *opt, char *why, size_t why_bytes);

/* Closes the store and releases the lock. NULL is a no-op. */
void settle_store_close(struct settle_store *s);

/* 0 while the store works; else the -errno that failed it for good. */
int settle_store_failed(const struct settle_store *s);

void settle_store_get_stats(const struct settle_store *s, struct settle_store_stats *out);

/* Opened with options.shared. */
bool settle_store_shared(const struct settle_store *s);

/*
 * Whether this process publishes the outbox: always, for a store opened alone; for a
 * shared store, the one member holding DIR/PUBLISHER's lock (tried without waiting: the
 * lock of a member that dies is released by the kernel and the next try of another
 * takes it). When this call made it the publisher, *took is set and the replicated mark
 * is read again from the store (the previous publisher moved it): publishing resumes
 * after settle_store_get_stats' replicated_seq, at least once.
 */
bool settle_store_publisher(struct settle_store *s, bool *took);

/* ---- Consuming ------------------------------------------------------------------------ */

/* No Kafka offset (a replayed dead letter). */
#define SETTLE_NO_OFFSET (-1)

enum settle_msg_result {
    SETTLE_MSG_COUNTED = 1, /* counted in its own batch */
    SETTLE_MSG_ADJUSTED,    /* late: an adjustment of the next open batch */
    SETTLE_MSG_DUPLICATE,   /* its event id was applied before */
    SETTLE_MSG_IGNORED,     /* authorized / voided */
    SETTLE_MSG_DEAD_LETTER, /* poison or refused: stored as a dead letter, published to
                               payment.dlq; the partition goes on */
    SETTLE_MSG_STALE,       /* offset below the stored one: already consumed, skipped */
};

/* One consumed Kafka message. The caller fills the inputs; they must stay valid for the
 * call. */
struct settle_msg {
    const char *topic; /* "payment.captured", ...; 1..SETTLE_TOPIC_MAX_BYTES */
    size_t topic_len;
    int32_t partition; /* >= 0 */
    int64_t offset;    /* >= 0, or SETTLE_NO_OFFSET */
    const char *key;   /* may be NULL */
    size_t key_len;
    const char *value; /* may be NULL (a tombstone: poison) */
    size_t value_len;
    /* out */
    enum settle_msg_result result;
    int32_t date;            /* COUNTED, ADJUSTED: the event's business date */
    struct settle_key batch; /* COUNTED, ADJUSTED: the batch that changed */
};

/*
 * Applies msgs[0..n) in order in ONE transaction and commits it: each message's event
 * counted (or not) and its partition's next offset, all or nothing. Per message, in
 * order: stale offset -> skipped; parse (engine/settle.h) -> poison is a dead letter;
 * settle_apply_event at now_ms -> refused is a dead letter. The transaction also moves
 * the horizon from now_ms, expires ids before it, and writes a pending replicated mark.
 * Returns 0 (every msg's result set, durable), or -errno with nothing committed
 * (-ENOSPC: does not fit; anything else but -ENOSPC also fails the store for good).
 * n may be 0.
 */
int settle_store_apply(struct settle_store *s, struct settle_calendar *cal, struct settle_msg *msgs,
                       size_t n, int64_t now_ms);

/* The next offset to consume of (topic, partition): 0 and *next, or -ENOENT when none
 * was ever consumed (start from the earliest), or -errno. */
int settle_store_offset_get(struct settle_store *s, const char *topic, size_t topic_len,
                            int32_t partition, int64_t *next);

typedef int (*settle_offset_visit_fn)(void *arg, const char *topic, size_t topic_len,
                                      int32_t partition, int64_t next);
/* Visits every stored (topic, partition, next offset). Returns 0, fn's nonzero, -errno. */
int settle_store_offsets(struct settle_store *s, settle_offset_visit_fn fn, void *arg);

/* ---- A shared store's group progress ------------------------------------------------ */

/* One partition a member consumes and the high watermark its consumer last saw (-1:
 * not known yet). */
struct settle_progress {
    const char *topic;
    size_t topic_len;
    int32_t partition;
    int64_t high;
};

/*
 * Shared stores: a member reports the partitions the group gave it, stamped wall_ms (the
 * host's clock, the same for every member), in one transaction (with the housekeeping of
 * settle_store_flush). So a member can tell whether the others are caught up without
 * asking the brokers: settle_store_progress_caught_up. 0 or -errno.
 */
int settle_store_progress_put(struct settle_store *s, struct settle_calendar *cal,
                              const struct settle_progress *p, size_t n, int64_t now_ms,
                              int64_t wall_ms);

/* Every partition any member ever reported was reported again within fresh_ms of wall_ms
 * with a known high watermark, and its stored next offset has reached it. A partition
 * whose member died is stale until the group gives it to another member and that one
 * reports it. False when nothing was reported, or on a read error. */
bool settle_store_progress_caught_up(struct settle_store *s, int64_t wall_ms, int64_t fresh_ms);

/* ---- Closing ---------------------------------------------------------------------- */

/*
 * POST /v1/settlements/close: closes date (idempotent). The date is marked closed in
 * the first transaction (from then on its events are late), then its open batches are
 * closed, SETTLE_CLOSE_MAX per transaction, each with a settlement.closed message in
 * the outbox. A date after the business date of now is refused (-EINVAL: closing the
 * future would turn a whole day into adjustments). *closed (may be NULL): batches this
 * call closed. Returns 0 or -errno.
 */
int settle_store_close_date(struct settle_store *s, struct settle_calendar *cal, int32_t date,
                            int64_t now_ms, uint64_t *closed);

/*
 * The automatic close: every date whose close time (settle_close_at) is <= now_ms
 * becomes closed (one stored mark), and all their open batches close as above. The
 * caller runs it from a timer; deciding WHEN (e.g. only once consumption has caught
 * up with the partitions, so that a lagging consumer does not close batches whose
 * events still wait in Kafka) is the caller's policy.
 */
int settle_store_close_due(struct settle_store *s, struct settle_calendar *cal, int64_t now_ms,
                           uint64_t *closed);

/* ---- Reading batches -------------------------------------------------------------- */

/* 0 and *out, -ENOENT, or -errno. */
int settle_store_batch_get(struct settle_store *s, const struct settle_key *k,
                           struct settle_batch *out);

enum settle_status_filter { SETTLE_ANY = 0, SETTLE_OPEN = 1, SETTLE_CLOSED = 2 };

struct settle_filter {
    bool has_merchant;
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1];
    uint8_t merchant_id_len;
    bool has_date;
    int32_t date;
    enum settle_status_filter status;
};

typedef int (*settle_batch_visit_fn)(void *arg, const struct settle_batch *b);

/*
 * GET /v1/settlements: batches matching f with seq > after, in creation order (seq),
 * at most limit (1..SETTLE_PAGE_MAX) of them. *next_after: the value for the next
 * page's `after`, or 0 (null) when no batch can follow. A page examines at most
 * SETTLE_LIST_SCAN_MAX rows; cut short by that, it may hold fewer than limit batches
 * and still have a next_after. Returns 0, fn's nonzero value, or -errno.
 */
int settle_store_batch_list(struct settle_store *s, const struct settle_filter *f, uint64_t after,
                            uint32_t limit, settle_batch_visit_fn fn, void *arg,
                            uint64_t *next_after);

/* One adjustment: a late event counted in a later batch. */
struct settle_adjustment {
    char event_id[EVENT_ID_BYTES + 1];
    enum settle_event_type type;
    int32_t source_date; /* the event's own business date (closed) */
    int64_t amount;      /* +capture, -refund */
};
typedef int (*settle_adjustment_visit_fn)(void *arg, const struct settle_adjustment *a);
/* Visits the adjustments of batch k in event order. 0, fn's nonzero, or -errno. */
int settle_store_adjustments(struct settle_store *s, const struct settle_key *k,
                             settle_adjustment_visit_fn fn, void *arg);

/* The matching index: 0 and *out, -ENOENT, or -errno. */
int settle_store_capture_get(struct settle_store *s, const char *payment_id,
                             struct settle_capture *out);

/* ---- Reconciliation ------------------------------------------------------------------ */

struct settle_recon;

/* Starts an upload (nothing is stored until the header row was accepted). 0 and *out, or
 * -ENOMEM / the store's failure. The upload holds no transaction between calls. */
int settle_recon_begin(struct settle_store *s, int64_t now_ms, struct settle_recon **out);

/*
 * Feeds the next bytes of the CSV body, in chunks of any size (memory stays constant:
 * the reader and RECON_COMMIT_LINES parsed lines). Lines are classified and committed
 * RECON_COMMIT_LINES at a time. Returns 0; -EPROTO when the header row is not
 * RECON_HEADER (settle_recon_error says so; the upload is then dead: abort it; nothing
 * was stored); or a store's -errno.
 */
int settle_recon_feed(struct settle_recon *r, const void *data, size_t len);

/* The one-line reason of -EPROTO ("the header row must be exactly ..."). */
const char *settle_recon_error(const struct settle_recon *r);

/* Data lines read so far (for progress logs). */
uint64_t settle_recon_lines(const struct settle_recon *r);

/*
 * The end of the body: the last line, then missing_in_bank for the file's value dates,
 * then status done. Fills *out with the summary and frees r. Returns 0; -EPROTO for an
 * empty body or a bad header (nothing stored); or a store's -errno (the file, if any,
 * stays "processing" and becomes "failed" at the next open).
 */
int settle_recon_finish(struct settle_recon *r, struct recon_summary *out);

/* Gives an upload up (the client went away): a file already created is marked failed.
 * Frees r. NULL is a no-op. */
void settle_recon_abort(struct settle_recon *r);

/* A file's summary: 0, -ENOENT or -errno. */
int settle_store_recon_get(struct settle_store *s, uint64_t file_seq, struct recon_summary *out);

typedef int (*settle_item_visit_fn)(void *arg, const struct recon_item *it);
/* The file's unmatched items with item number > after, at most limit, in item order;
 * *next_after as in settle_store_batch_list. Pointers in an item (reason) are valid
 * during the callback only. */
int settle_store_recon_items(struct settle_store *s, uint64_t file_seq, uint64_t after,
                             uint32_t limit, settle_item_visit_fn fn, void *arg,
                             uint64_t *next_after);

/*
 * POST .../rematch: classifies the file's amount_mismatch, currency_mismatch and
 * unknown_transaction items again against the matching index as it is now (late
 * events); an item that now matches is removed, one that changed category is updated
 * and published again (recon.unmatched, round = the rematch number). Then the captures
 * of the file's value dates that the file lacks and that are not listed yet are added
 * as missing_in_bank. duplicate_in_file, malformed and missing_in_bank items stay.
 * Fills *out. Returns 0, -ENOENT, -EBUSY (the file is still being uploaded), -EINVAL
 * (a failed upload), or -errno.
 */
int settle_store_recon_rematch(struct settle_store *s, uint64_t file_seq, int64_t now_ms,
                               struct recon_summary *out);

/* ---- Dead letters ------------------------------------------------------------------ */

struct settle_dead_letter {
    uint64_t id; /* 1, 2, ... */
    bool replayed;
    const char *reason;
    size_t reason_len;
    const char *topic;
    size_t topic_len;
    int32_t partition;
    int64_t offset; /* SETTLE_NO_OFFSET when it had none */
    const char *key;
    size_t key_len;
    const char *value; /* the original bytes (cut when truncated) */
    size_t value_len;
    bool truncated;
    int64_t created_at_ms;
    int64_t replayed_at_ms; /* -1 until replayed */
};
typedef int (*settle_dlq_visit_fn)(void *arg, const struct settle_dead_letter *d);

/* `ringpay settle dlq list`: dead letters with id > after (only pending ones when
 * pending_only), at most limit; *next_after as above. Pointers valid during fn. */
int settle_store_dlq_list(struct settle_store *s, uint64_t after, uint32_t limit, bool pending_only,
                          settle_dlq_visit_fn fn, void *arg, uint64_t *next_after);

/*
 * `ringpay settle dlq replay`: processes dead letter id again through the rules (as a
 * message without an offset), in one transaction with its new state: applied (or a
 * duplicate, or ignored) -> marked replayed; still poison or refused -> stays pending
 * with the new reason. *result (may be NULL) gets the outcome. Returns 0, -ENOENT,
 * -EALREADY (already replayed), or -errno.
 */
int settle_store_dlq_replay(struct settle_store *s, struct settle_calendar *cal, uint64_t id,
                            int64_t now_ms, enum settle_msg_result *result);

/* Marks dead letter id replayed without processing it (an operator fixed it by other
 * means). 0, -ENOENT, -EALREADY or -errno. */
int settle_store_dlq_mark_replayed(struct settle_store *s, uint64_t id, int64_t now_ms);

/* ---- Idempotency of settle's POSTs --------------------------------------------------------- */

/*
 * SPEC §2 for settle's own POST routes (§5): a key seen before with the same request
 * replays the stored answer; with another request it is 409 idempotency_key_reused.
 *
 * Table (decision): idem [key bytes] -> [ver][0][status u16][body len u32][created
 * i64][fingerprint 32][body], and idem_exp [created_ms u64 BE][key] -> empty, the
 * time-ordered index by which records older than the retention (idem_ttl_ms, default
 * SETTLE_IDEM_TTL_MS) are deleted in every write transaction's housekeeping, at most
 * SETTLE_IDEM_EXPIRE_MAX per transaction. Keys are global to the store: settle's callers
 * are admin keys of no merchant, so there is no scope to put them in (two operators
 * using the same key for different requests get 409). The fingerprint is the caller's
 * (tools/settle/app.c: SHA-256 of method, path and the body's SHA-256); the store keeps
 * its 32 bytes and compares nothing.
 *
 * Same transaction (decision): the record of a request that changed something is
 * written in the LAST transaction of that change, by the *_idem variants below, so a
 * crash leaves either the completed change with its record or no record (a retry then
 * does the work again: a close or a rematch redoes only what is left; an upload cut
 * short by a crash was marked failed at open and never answered). The answer body is
 * rendered inside that transaction by the caller's render function from the operation's
 * results (struct settle_idem_result): it must be a pure function of them, since a
 * transaction that did not fit the map runs again. Answers that changed nothing (a
 * stored 404 or 409) are written alone by settle_store_idem_put.
 *
 * Bound (decision): an answer body is at most SETTLE_IDEM_BODY_MAX_BYTES. Every answer a
 * settle route stores fits it by construction (asserted at compile time in app.c), so a
 * larger one is a programmer error and ASSERTs; a stored record that claims more is
 * corrupt (-EBADMSG).
 *
 * The caller looks a key up (settle_store_idem_get) and then writes it on the same, only
 * writing thread with nothing in between, so a put never finds the key present
 * (asserted).
 */

#define SETTLE_IDEM_FP_BYTES 32

struct settle_idem_record {
    uint8_t fp[SETTLE_IDEM_FP_BYTES];
    uint16_t status;
    int64_t created_at_ms;
    size_t body_len;
    char body[SETTLE_IDEM_BODY_MAX_BYTES];
};

/* Results of the operation, for the render function. */
struct settle_idem_result {
    const struct recon_summary *sum; /* upload, rematch: the final summary */
    uint64_t closed;                 /* close: batches this call closed */
    enum settle_msg_result outcome;  /* dead-letter replay */
};

/* Writes the answer body into buf (cap == SETTLE_IDEM_BODY_MAX_BYTES), returns its
 * length. Runs inside the store's write transaction: it must not call the store. */
typedef size_t (*settle_idem_render_fn)(void *arg, const struct settle_idem_result *res, char *buf,
                                        size_t cap);

struct settle_idem_put {
    const char *key; /* 1..IDEMPOTENCY_KEY_MAX_BYTES */
    size_t key_len;
    uint8_t fp[SETTLE_IDEM_FP_BYTES];
    uint16_t status; /* the answer's status */
    settle_idem_render_fn render;
    void *arg;
};

/* The record of key: 0 and *out, -ENOENT, or -errno (-EBADMSG: corrupt). */
int settle_store_idem_get(struct settle_store *s, const char *key, size_t key_len,
                          struct settle_idem_record *out);

/* Stores an answer that changed nothing (status, body of len bytes) for key, created
 * at now_ms, in a transaction of its own. 0 or -errno. */
int settle_store_idem_put(struct settle_store *s, const char *key, size_t key_len,
                          const uint8_t fp[SETTLE_IDEM_FP_BYTES], uint16_t status, const char *body,
                          size_t len, int64_t now_ms);

/* Records stored (for /metrics and tests): a count of the table. 0 or -errno. */
int settle_store_idem_count(struct settle_store *s, uint64_t *out);

/* settle_store_close_date, settle_recon_finish, settle_store_recon_rematch and
 * settle_store_dlq_replay, each writing idem's record (rendered from its results) in
 * the transaction that completes the operation. They return what the plain function
 * returns; on 0 the record is durable with the change. idem NULL: the plain function. */
int settle_store_close_date_idem(struct settle_store *s, struct settle_calendar *cal, int32_t date,
                                 int64_t now_ms, uint64_t *closed,
                                 const struct settle_idem_put *idem);
int settle_recon_finish_idem(struct settle_recon *r, struct recon_summary *out,
                             const struct settle_idem_put *idem);
int settle_store_recon_rematch_idem(struct settle_store *s, uint64_t file_seq, int64_t now_ms,
                                    struct recon_summary *out, const struct settle_idem_put *idem);
int settle_store_dlq_replay_idem(struct settle_store *s, struct settle_calendar *cal, uint64_t id,
                                 int64_t now_ms, enum settle_msg_result *result,
                                 const struct settle_idem_put *idem);

/* ---- Outbox ---------------------------------------------------------------------------- */

struct settle_out_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* One outbox message, pointers valid during the visit only. */
struct settle_out_msg {
    uint64_t seq;
    const char *topic;
    size_t topic_len;
    const char *key; /* NULL: no key */
    size_t key_len;
    const char *value;
    size_t value_len;
    size_t nheaders;
    struct settle_out_header headers[SETTLE_OUT_HEADERS_MAX];
};
typedef int (*settle_out_visit_fn)(void *arg, const struct settle_out_msg *m);

/* Visits committed outbox messages with seq > after_seq in order, at most max (the
 * producer's bounded window). 0, fn's nonzero, or -errno. */
int settle_store_outbox_scan(struct settle_store *s, uint64_t after_seq, size_t max,
                             settle_out_visit_fn fn, void *arg);

/* The outbox is replicated up to seq (delivery reports, contiguous): written by the next
 * write transaction (or settle_store_flush), never backwards. */
void settle_store_set_replicated(struct settle_store *s, uint64_t seq);

/* A transaction of housekeeping only: the pending replicated mark, the outbox trim, the
 * horizon and expiry. For idle periods. 0 or -errno. */
int settle_store_flush(struct settle_store *s, struct settle_calendar *cal, int64_t now_ms);

#ifdef __cplusplus
}
#endif

#endif
