/*
 * The records of the write-ahead log (store/wal.h): one record holds operations of one
 * group commit, everything engine_apply needs to redo them exactly — the decoded
 * operation (struct op, every field that can change what is stored or answered: the
 * request id is in error answers, which idempotency stores), the bytes of its
 * fingerprint, and the batch's `now` — so that a restart that replays the log rebuilds
 * the same state and the same stored answers, byte for byte.
 *
 * Layout (little-endian, no padding), a record of `length` bytes at log position `pos`:
 *
 *     off  size  field
 *       0     4  magic "RPWL" (0x4C575052)
 *       4     4  length: the whole record, header included (WALREC_HEADER_BYTES ..
 *                WALREC_MAX_BYTES)
 *       8     4  crc: CRC-32C (store/crc32c.h) of bytes [12, length)
 *      12     2  version (WALREC_VERSION)
 *      14     2  type: WALREC_OPS, or WALREC_SKIP (no operations: the rest of the
 *                segment is unused, the log goes on at the next segment)
 *      16     8  pos: the record's own log position (a record read from a recycled
 *                segment, or from anywhere else than where it was written, fails here)
 *      24     8  now_ms: the time of every change of the batch
 *      32     8  mark: the replicated-events mark in force (0: none yet)
 *      40     4  n: operations in the record
 *      44     4  epoch: the log's epoch when it was written. A restart bumps the epoch
 *                before it writes again, so a stale record left after the end of the
 *                log by a write that did not complete (lost in a power cut, then
 *                partly overwritten) has a lower epoch than the record before it and
 *                ends the log when read, even where its position happens to match.
 *      48   ...  n operations, each:
 *                  u8 kind, u8 flags (1 authenticated, 2 has_reference), u16 zero,
 *                  u32 shard, i64 amount,
 *                  u8 merchant_len + bytes, 22 payment_id bytes, 3 currency bytes,
 *                  u16 reference_len + bytes, u16 idem_key_len + bytes,
 *                  u8 request_id_len + bytes,
 *                  u32 len + bytes for each of fp_method, fp_path, fp_query, fp_body
 *
 * Reading is strict: a record is accepted only when its magic, length, crc, version
 * and position are right and every operation decodes within its bounds and is a
 * state-changing operation with valid lengths; anything else is the log's end (a torn
 * or never-written tail) — never an assert, since the bytes come from a disk.
 */
#ifndef RINGPAY_STORE_WALREC_H
#define RINGPAY_STORE_WALREC_H

#include <stddef.h>
#include <stdint.h>

#include "engine/api.h"

#define WALREC_MAGIC        0x4C575052u
#define WALREC_VERSION      1u
#define WALREC_HEADER_BYTES 48u

enum walrec_type { WALREC_OPS = 0, WALREC_SKIP = 1 };

/* The largest record: bounds a read at recovery and a segment's content. Operations of
 * a batch that do not fit one record go into the next record of the same write. A
 * WALREC_SKIP record may be longer (it is the rest of a segment, of zeros after its
 * header); its length is checked against the segment instead. */
#define WALREC_MAX_BYTES (4u * 1024 * 1024)

/* The encoded size of one operation. */
size_t walrec_op_size(const struct op *op);

/* The largest op_size can be (the parser's limits: a 8 KiB path, a 64 KiB body). */
#define WALREC_OP_MAX_BYTES                                                                        \
    (64 + MERCHANT_ID_MAX_BYTES + ID_BYTES + CURRENCY_BYTES + REFERENCE_MAX_BYTES +                \
     IDEMPOTENCY_KEY_MAX_BYTES + REQUEST_ID_MAX_BYTES + 16 + HTTP_LINE_MAX_BYTES +                 \
     HTTP_BODY_MAX_BYTES)

/* A record being built in a caller's buffer (at least WALREC_MAX_BYTES). */
struct walrec_writer {
    uint8_t *buf;
    size_t cap;
    size_t len; /* bytes so far, header included */
    uint32_t n;
};

/* Starts a record at buf (cap bytes): the header is filled by walrec_finish. */
void walrec_begin(struct walrec_writer *w, uint8_t *buf, size_t cap);

/* Appends op; -ENOSPC (nothing written) when it does not fit: finish the record and
 * start another. op must be state-changing (AUTHORIZE, CAPTURE, VOID, REFUND). */
int walrec_add(struct walrec_writer *w, const struct op *op);

/* Completes the header (length, crc, pos, now, mark, epoch) and returns the record's
 * length. */
size_t walrec_finish(struct walrec_writer *w, uint64_t pos, int64_t now_ms, uint64_t mark,
                     uint32_t epoch);

/* Writes a WALREC_SKIP record of exactly `length` bytes (WALREC_HEADER_BYTES or more;
 * the bytes after its header are zero) at buf for position pos. */
void walrec_skip(uint8_t *buf, size_t length, uint64_t pos, uint32_t epoch);

/* A decoded record: its operations' strings point into the record's bytes. */
struct walrec_header {
    uint32_t length;
    enum walrec_type type;
    uint64_t pos;
    int64_t now_ms;
    uint64_t mark;
    uint32_t n;
    uint32_t epoch;
};

/*
 * Checks the record that should start at log position pos in buf[0..avail): 0 and *h
 * when it is whole and right, -EAGAIN when avail holds only part of a plausible header
 * or body (read more, or: the log ends here), -EBADMSG when it is not a valid record
 * (the log ends here).
 */
int walrec_check(const uint8_t *buf, size_t avail, uint64_t pos, struct walrec_header *h);

/* Decodes the operations of a checked record, calling fn for each with a struct op
 * whose fingerprint spans point into buf. Returns 0, fn's nonzero value, or -EBADMSG. */
int walrec_ops(const uint8_t *buf, const struct walrec_header *h,
               int (*fn)(void *arg, const struct op *op), void *arg);

#endif
