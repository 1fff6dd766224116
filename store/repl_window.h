/*
 * The replication window of one shard: the outbox events handed to the Kafka producer
 * and not yet covered by the contiguous "replicated up to" mark (DESIGN.md "Kafka
 * replication"). Pure bookkeeping, no I/O, so that every ordering of delivery reports
 * can be tested without a broker.
 *
 * Invariants (asserted):
 * - mark <= sent <= mark + cap. Events mark+1 .. sent are in the window, in sequence
 *   order; an event enters only as sent + 1 (the outbox is gapless per shard).
 * - mark only grows, and only over events whose delivery was reported: a report for
 *   event m + 2 while m + 1 is outstanding is remembered but does not move the mark
 *   past the gap; when m + 1's report comes, the mark jumps over both.
 * - A report for an event outside (mark, sent], or a second one for the same event, is
 *   refused (-ESTALE, -EALREADY) and changes nothing: a report can never move the mark
 *   over an event that was not delivered.
 * - repl_window_reset() forgets every report above the mark and makes sent = mark, so
 *   everything above the mark is sent again (a new producer resends from the mark).
 *
 * Each slot also keeps the event's key + value bytes and its commit time (ms since the
 * epoch, or -1 when unknown), for the backlog bytes and the replication lag.
 */
#ifndef RINGPAY_STORE_REPL_WINDOW_H
#define RINGPAY_STORE_REPL_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct repl_slot {
    uint32_t bytes;
    bool acked;
    int64_t occurred_ms;
};

struct repl_window {
    uint64_t mark;           /* every event <= mark is delivered */
    uint64_t sent;           /* the last event handed to the producer */
    uint32_t cap;            /* events in the window at most */
    uint32_t acked;          /* events in (mark, sent] with a report */
    uint64_t bytes_in;       /* key + value bytes of the events in (mark, sent] */
    struct repl_slot *slots; /* cap of them; event seq lives in slot seq % cap */
};

/* Sets up an empty window of cap events starting after `mark`. 0 or -ENOMEM. */
int repl_window_init(struct repl_window *w, uint32_t cap, uint64_t mark);

void repl_window_free(struct repl_window *w);

/* Events that may still enter: cap - (sent - mark). */
uint32_t repl_window_room(const struct repl_window *w);

/* Events handed out and not yet reported: (sent - mark) - acked. */
uint32_t repl_window_outstanding(const struct repl_window *w);

/* Event seq (== sent + 1, asserted, and room > 0) enters the window. */
void repl_window_push(struct repl_window *w, uint64_t seq, uint32_t bytes, int64_t occurred_ms);

/* Records a delivery report for seq: 0, -ESTALE (outside (mark, sent]) or -EALREADY.
 * *occurred_ms (may be NULL) gets the event's commit time on 0. */
int repl_window_ack(struct repl_window *w, uint64_t seq, int64_t *occurred_ms);

/* Moves the mark over every reported event right after it. Returns how many it passed;
 * *bytes (may be NULL) gets their key + value bytes. */
uint64_t repl_window_advance(struct repl_window *w, uint64_t *bytes);

/* Forgets the reports above the mark and rewinds sent to the mark. */
void repl_window_reset(struct repl_window *w);

#endif
