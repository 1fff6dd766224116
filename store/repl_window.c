/*
 * The replication window (see repl_window.h for the invariants).
 */
#include "store/repl_window.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/assert.h"

static struct repl_slot *slot_of(const struct repl_window *w, uint64_t seq)
{
    return &w->slots[seq % w->cap];
}

static void check(const struct repl_window *w)
{
    ASSERT(w->mark <= w->sent && w->sent - w->mark <= w->cap);
    ASSERT(w->acked <= w->sent - w->mark);
}

int repl_window_init(struct repl_window *w, uint32_t cap, uint64_t mark)
{
    ASSERT(w != NULL && cap > 0);
    memset(w, 0, sizeof(*w));
    w->slots = calloc(cap, sizeof(*w->slots));
    if (w->slots == NULL)
        return -ENOMEM;
    w->cap = cap;
    w->mark = mark;
    w->sent = mark;
    return 0;
}

void repl_window_free(struct repl_window *w)
{
    free(w->slots);
    w->slots = NULL;
}

uint32_t repl_window_room(const struct repl_window *w)
{
    check(w);
    return w->cap - (uint32_t)(w->sent - w->mark);
}

uint32_t repl_window_outstanding(const struct repl_window *w)
{
    check(w);
    return (uint32_t)(w->sent - w->mark) - w->acked;
}

void repl_window_push(struct repl_window *w, uint64_t seq, uint32_t bytes, int64_t occurred_ms)
{
    ASSERT(seq == w->sent + 1 && repl_window_room(w) > 0);
    struct repl_slot *sl = slot_of(w, seq);
    ASSERT(!sl->acked); /* cleared when the mark passed it, or by a reset */
    sl->bytes = bytes;
    sl->occurred_ms = occurred_ms;
    w->sent = seq;
    w->bytes_in += bytes;
    check(w);
}

int repl_window_ack(struct repl_window *w, uint64_t seq, int64_t *occurred_ms)
{
    check(w);
    if (seq <= w->mark || seq > w->sent)
        return -ESTALE;
    struct repl_slot *sl = slot_of(w, seq);
    if (sl->acked)
        return -EALREADY;
    sl->acked = true;
    w->acked++;
    if (occurred_ms)
        *occurred_ms = sl->occurred_ms;
    check(w);
    return 0;
}

uint64_t repl_window_advance(struct repl_window *w, uint64_t *bytes)
{
    uint64_t passed = 0, sum = 0;
    while (w->mark < w->sent && slot_of(w, w->mark + 1)->acked) {
        struct repl_slot *sl = slot_of(w, w->mark + 1);
        sum += sl->bytes;
        sl->acked = false;
        w->mark++;
        w->acked--;
        passed++;
    }
    ASSERT(w->bytes_in >= sum);
    w->bytes_in -= sum;
    check(w);
    if (bytes)
        *bytes = sum;
    return passed;
}

void repl_window_reset(struct repl_window *w)
{
    for (uint64_t seq = w->mark + 1; seq <= w->sent; seq++)
        slot_of(w, seq)->acked = false;
    w->sent = w->mark;
    w->acked = 0;
    w->bytes_in = 0;
    check(w);
}
