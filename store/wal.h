/*
 * The write-ahead log of one shard (DESIGN.md "Where the time goes, and the
 * direction"): batches of operations are appended as records (store/walrec.h) and an
 * answer leaves once the fdatasync that covers its record has completed — one
 * sequential write and one fdatasync per group of batches, instead of an LMDB commit's
 * scattered pages.
 *
 * Files: SHARD_DIR/wal/NNNNNNNNNNNNNNNN.log, one per segment of WAL_SEGMENT_BYTES, named
 * by the segment's index (16 hex digits); position p lies in segment p /
 * WAL_SEGMENT_BYTES at offset p % WAL_SEGMENT_BYTES. Every segment file is prepared
 * before the log reaches it — zero-filled to its full size and fsynced, with its
 * directory (a new file), or a segment below the last checkpoint renamed to its new
 * index and its directory fsynced (a recycled file) — so that appending never changes
 * a file's size or a directory: a write plus fdatasync is all it takes. SHARD_DIR/wal/
 * epoch holds the last epoch a process wrote with (see walrec.h).
 *
 * Records never straddle segments: when the next record might not fit what is left of
 * the current segment, a WALREC_SKIP record covers the rest and the log goes on at the
 * next segment's start.
 *
 * Threads: the shard thread builds records into a staging buffer (wal_begin,
 * wal_finish) and hands the staged bytes to the log's syncer thread (wal_kick), which
 * pwrites them into their segment files and fdatasyncs each file it wrote; when that
 * completed it publishes the new durable position and writes an eventfd the shard
 * thread's loop waits on (wal_event_fd, then wal_poll). While a write is in flight the
 * next batches are staged in the other buffer. The syncer uses plain pwrite and
 * fdatasync (not io_uring) so that the power-loss test's LD_PRELOAD disk model sees
 * every write and sync.
 *
 * Positions: wal_written() is the end of everything staged; wal_durable() the end of
 * everything whose fdatasync completed. A write that or a sync that fails fails the log
 * for good (after a failed fsync the kernel may have dropped the pages): wal_poll
 * returns the error from then on, and nothing more is written.
 */
#ifndef RINGPAY_STORE_WAL_H
#define RINGPAY_STORE_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/walrec.h"

struct wal;

struct wal_options {
    size_t segment_bytes; /* 0: WAL_SEGMENT_BYTES; tests use smaller ones */
    unsigned spares;      /* segments kept prepared ahead; 0: WAL_SPARE_SEGMENTS */
    /* Tests only: the n-th write or sync fails with errno fault_errno (0: none). */
    unsigned fault_after_syncs;
    int fault_errno;
    /* Tests only: called after each segment wal_prepare renamed for reuse, before the
     * directory's fsync (a crash there is a recycling cut short). NULL: none. */
    void (*recycle_hook)(void *arg);
    void *recycle_hook_arg;
};

/*
 * Opens (creating) SHARD_DIR/wal for a log whose records before position `from` are in
 * the checkpoint already. Prepares the segment `from` lies in and the spares. Returns 0,
 * or -errno with one line in why.
 */
int wal_open(struct wal **out, const char *shard_dir, uint64_t from, const struct wal_options *opt,
             char *why, size_t why_bytes);

/* Stops the syncer thread (after its write in flight) and closes the files. */
void wal_close(struct wal *w);

/*
 * Recovery: hands every valid record from `from` on to fn, in order (WALREC_SKIP records
 * are followed, not handed out), and stops at the log's end: a torn, corrupt, stale or
 * never-written record. Then it sets the write position to that end and starts a new
 * epoch (written durably to SHARD_DIR/wal/epoch before anything else is written).
 * Returns 0, fn's nonzero value, or -errno. Call once, before wal_begin.
 */
int wal_replay(struct wal *w,
               int (*fn)(void *arg, const struct walrec_header *h, const uint8_t *rec), void *arg);

/*
 * Starts a record at the end of the staged bytes and returns its writer, or NULL when
 * the staging buffer has no room for a whole record (wait for the write in flight) or
 * the next segment is not prepared yet (wait for wal_prepare).
 */
struct walrec_writer *wal_begin(struct wal *w);

/* Completes the record started by wal_begin (it must hold at least one operation) and
 * returns the log position at its end: an answer whose operation is in it may leave
 * once wal_durable() reaches that position. */
uint64_t wal_finish(struct wal *w, int64_t now_ms, uint64_t mark);

/* Drops the record started by wal_begin (it got no operation). */
void wal_abandon(struct wal *w);

/* Hands what is staged to the syncer when no write is in flight. Returns true when a
 * write started. */
bool wal_kick(struct wal *w);

/* Writes and fdatasyncs what is staged on the calling thread (the shard thread), when
 * no write is in flight: for a shard that is not busy, this saves the two thread
 * hand-offs of the syncer. Returns 0 (also when there was nothing to do or a write is in
 * flight) or the -errno that failed the log. */
int wal_write_here(struct wal *w);

/* True while a write is in flight. */
bool wal_busy(const struct wal *w);

/* The eventfd the syncer writes after each write + fdatasync (shard loop: wait on it). */
int wal_event_fd(const struct wal *w);

/* Takes the syncer's completions (reads the eventfd; cheap when there is none). 0, or
 * the -errno of a failed write or sync: the log has failed for good. */
int wal_poll(struct wal *w);

uint64_t wal_written(const struct wal *w);
uint64_t wal_durable(const struct wal *w);

/*
 * Background work, on a thread that may block (the checkpointer): renames segments
 * wholly below `below` (the last checkpoint's position) into future segments and makes
 * new ones until WAL_SPARE_SEGMENTS are ready ahead of the write position. 0 or -errno.
 */
int wal_prepare(struct wal *w, uint64_t below);

/* Counters for /metrics. */
struct wal_stats {
    uint64_t writes, syncs, bytes, sync_ns, segments_made, segments_recycled;
};
void wal_get_stats(const struct wal *w, struct wal_stats *out);

#endif
