/*
 * One layer of in-memory state in front of LMDB (the write-ahead log's overlay,
 * DESIGN.md "Where the time goes, and the direction"): a map from (table, key bytes) to
 * value bytes, in the very encodings the LMDB shard store writes (store/record.h), so
 * that a checkpoint copies entries into LMDB as they are.
 *
 * Memory is fixed at init: an arena that entries are appended to and a hash table of
 * slots pointing into it. Nothing is ever freed one by one: a put of a key that exists
 * appends the new version and repoints the slot (the old bytes stay until the layer is
 * reset), and the whole layer is emptied at once by overlay_reset once a checkpoint has
 * written it into LMDB. A put that does not fit returns -ENOSPC and changes nothing; the
 * caller stops taking work until a checkpoint made room (backpressure, never growth).
 *
 * Savepoints: overlay_save() notes the arena's end and the undo log's length;
 * overlay_rollback() puts every slot changed since back and cuts the arena there, so an
 * operation that fails half-way leaves no trace. The undo log is bounded
 * (OVERLAY_UNDO_MAX slot changes between a save and the next); a put beyond it fails
 * with -ENOSPC like a full arena. overlay_save() also forgets the undo log before it:
 * only the last savepoint can be rolled back to.
 *
 * Tables are small integers chosen by the caller (< OVERLAY_TABLES); the layer does not
 * interpret them. Threads: a layer is used by one thread at a time; a layer handed to
 * another thread (the checkpointer) is only read there, and only read here meanwhile.
 */
#ifndef RINGPAY_STORE_OVERLAY_H
#define RINGPAY_STORE_OVERLAY_H

#include <stddef.h>
#include <stdint.h>

/* Tables per layer (the caller's numbering). */
#define OVERLAY_TABLES 16

/* Slot changes one savepoint can undo: a payment operation puts a few dozen entries. */
#define OVERLAY_UNDO_MAX 1024

/* The longest key and value a layer holds (LMDB keys are <= 511 bytes; the largest
 * value is an idempotency record of a 64 KiB body plus its answer). */
#define OVERLAY_KEY_MAX   511
#define OVERLAY_VALUE_MAX (1u << 20)

struct overlay {
    uint8_t *arena;
    size_t arena_bytes; /* capacity */
    size_t used;        /* bytes of entries appended */
    uint64_t *slots;    /* 0: empty; else (arena offset + 1) << 24 | hash tag */
    size_t slot_count;  /* power of two */
    size_t entries;     /* distinct keys */
    size_t entries_max; /* slot_count / 2: the table's load stays <= 1/2 */
    uint64_t puts;      /* puts since the last reset (for the caller's statistics) */
    struct overlay_undo {
        size_t slot;
        uint64_t old;
    } * undo;
    size_t undo_len;
    size_t save_used;    /* the arena's end at the last savepoint */
    size_t save_entries; /* entries at the last savepoint */
};

/* Allocates a layer of arena_bytes (at most 4 GiB) and slot_count slots (a power of
 * two, >= 16). 0 or -ENOMEM (then nothing is left allocated). */
int overlay_init(struct overlay *o, size_t arena_bytes, size_t slot_count);

/* Frees the layer's memory. A zeroed or already freed layer is a no-op. */
void overlay_fini(struct overlay *o);

/* Empties the layer (keeps its memory). */
void overlay_reset(struct overlay *o);

/* Looks key up in table: 0 with *val / *val_len pointing into the layer (valid until
 * the next reset or rollback), or -ENOENT. */
int overlay_get(const struct overlay *o, unsigned table, const void *key, size_t key_len,
                const uint8_t **val, size_t *val_len);

/*
 * Inserts or replaces key in table with a value of val_len bytes and returns where to
 * write it in *val (like LMDB's MDB_RESERVE; the caller must fill all of it before the
 * next call). 0, or -ENOSPC when the arena, the table or the undo log is full (nothing
 * changed).
 */
int overlay_put(struct overlay *o, unsigned table, const void *key, size_t key_len, size_t val_len,
                uint8_t **val);

/* Marks a savepoint (and forgets the undo log before it). */
void overlay_save(struct overlay *o);

/* Undoes every put since the last savepoint. */
void overlay_rollback(struct overlay *o);

/* Bytes left in the arena (a put of key k and value v takes about k + v + 16). */
size_t overlay_free_bytes(const struct overlay *o);

/* Distinct keys the table can still take. */
size_t overlay_free_entries(const struct overlay *o);

/* True when nothing was put since the last reset. */
int overlay_empty(const struct overlay *o);

/*
 * Visits the current version of every key, in the order those versions were written,
 * which is close to LMDB's key order for keys that grow (ids, sequence numbers). fn returns 0 to go
 * on; its nonzero value stops the walk and is returned.
 */
typedef int (*overlay_fn)(void *arg, unsigned table, const uint8_t *key, size_t key_len,
                          const uint8_t *val, size_t val_len);
int overlay_walk(const struct overlay *o, overlay_fn fn, void *arg);

#endif
