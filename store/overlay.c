/*
 * One layer of in-memory state (see overlay.h).
 *
 * Layout: every put appends an entry to the arena,
 *     [u32 key_len | table << 16 ... see below][u32 val_len][key][value], padded to 8,
 * where the first word is key_len (low 16 bits) and the table (high 16 bits). A slot
 * holds (offset + 1) << 24 | the hash's top 24 bits, so a probe compares the tag
 * before it touches the arena. Linear probing; nothing is ever deleted from the table
 * except by a rollback, which restores the exact slots it changed (in reverse), or by a
 * reset.
 *
 * Invariants: entries <= entries_max = slot_count / 2; every nonzero slot points at an
 * entry below `used`; the entry a slot points at is the newest version of its key.
 */
#include "store/overlay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/assert.h"

#define ENTRY_HEAD_BYTES 8u
#define TAG_BITS         24u
#define TAG_MASK         ((1ull << TAG_BITS) - 1)

static uint64_t hash_bytes(unsigned table, const uint8_t *p, size_t n)
{
    /* FNV-1a over the table and the key, then a final mix (splitmix64's) so that the
     * top bits (the tag and the bucket) depend on every byte. */
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)table;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static size_t entry_bytes(size_t key_len, size_t val_len)
{
    return (ENTRY_HEAD_BYTES + key_len + val_len + 7) & ~(size_t)7;
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof(v));
}

struct entry {
    unsigned table;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *val;
    size_t val_len;
};

static void entry_at(const struct overlay *o, size_t off, struct entry *e)
{
    ASSERT(off + ENTRY_HEAD_BYTES <= o->used);
    const uint8_t *p = o->arena + off;
    uint32_t w = get_u32(p);
    e->table = w >> 16;
    e->key_len = w & 0xffff;
    e->val_len = get_u32(p + 4);
    e->key = p + ENTRY_HEAD_BYTES;
    e->val = e->key + e->key_len;
    ASSERT(off + entry_bytes(e->key_len, e->val_len) <= o->used);
}

/*
 * The slot table is allocated resident: overlay_reset zeroes all of it, and a page
 * written for the first time costs a fault. The shard thread resets a layer when it
 * takes a checkpoint back, so a lazily faulted table stalled it (and every request of
 * the shard) for ~30-60 ms at each layer's first checkpoint. Each page is written here,
 * from user space: on this VM, pages populated by the kernel alone
 * (MADV_POPULATE_WRITE) still cost the first user write ~7 µs each (measured: the first
 * resets took 30 ms either way, 1 ms after a touch from user space).
 */
static uint64_t *slots_alloc(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    long page = sysconf(_SC_PAGESIZE);
    for (size_t off = 0; off < bytes; off += (size_t)(page > 0 ? page : 4096))
        ((volatile uint8_t *)p)[off] = 0;
    return p;
}

int overlay_init(struct overlay *o, size_t arena_bytes, size_t slot_count)
{
    ASSERT(o != NULL && slot_count >= 16 && (slot_count & (slot_count - 1)) == 0);
    ASSERT(arena_bytes >= 64 && arena_bytes < (1ull << 32));
    memset(o, 0, sizeof(*o));
    o->arena_bytes = arena_bytes;
    o->slot_count = slot_count; /* before slots: overlay_fini unmaps by it */
    o->arena = malloc(arena_bytes);
    o->slots = slots_alloc(slot_count * sizeof(*o->slots)); /* zero, as mmap's pages are */
    o->undo = malloc(OVERLAY_UNDO_MAX * sizeof(*o->undo));
    if (o->arena == NULL || o->slots == NULL || o->undo == NULL) {
        overlay_fini(o);
        return -ENOMEM;
    }
    o->entries_max = slot_count / 2;
    return 0;
}

void overlay_fini(struct overlay *o)
{
    if (o == NULL)
        return;
    free(o->arena);
    if (o->slots != NULL)
        munmap(o->slots, o->slot_count * sizeof(*o->slots));
    free(o->undo);
    memset(o, 0, sizeof(*o));
}

void overlay_reset(struct overlay *o)
{
    ASSERT(o != NULL && o->slots != NULL);
    if (o->entries > 0)
        memset(o->slots, 0, o->slot_count * sizeof(*o->slots));
    o->used = 0;
    o->entries = 0;
    o->puts = 0;
    o->undo_len = 0;
    o->save_used = 0;
    o->save_entries = 0;
}

/* The slot holding key, or the empty slot where it would go (*found says which). */
static size_t probe(const struct overlay *o, unsigned table, const uint8_t *key, size_t key_len,
                    uint64_t h, int *found)
{
    size_t mask = o->slot_count - 1;
    uint64_t tag = h >> (64 - TAG_BITS);
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        uint64_t s = o->slots[i];
        if (s == 0) {
            *found = 0;
            return i;
        }
        if ((s & TAG_MASK) != tag)
            continue;
        struct entry e;
        entry_at(o, (size_t)(s >> TAG_BITS) - 1, &e);
        if (e.table == table && e.key_len == key_len && memcmp(e.key, key, key_len) == 0) {
            *found = 1;
            return i;
        }
    }
}

int overlay_get(const struct overlay *o, unsigned table, const void *key, size_t key_len,
                const uint8_t **val, size_t *val_len)
{
    ASSERT(o != NULL && table < OVERLAY_TABLES && key_len <= OVERLAY_KEY_MAX);
    if (o->entries == 0)
        return -ENOENT;
    int found;
    uint64_t h = hash_bytes(table, key, key_len);
    size_t i = probe(o, table, key, key_len, h, &found);
    if (!found)
        return -ENOENT;
    struct entry e;
    entry_at(o, (size_t)(o->slots[i] >> TAG_BITS) - 1, &e);
    *val = e.val;
    *val_len = e.val_len;
    return 0;
}

int overlay_put(struct overlay *o, unsigned table, const void *key, size_t key_len, size_t val_len,
                uint8_t **val)
{
    ASSERT(o != NULL && table < OVERLAY_TABLES && key_len <= OVERLAY_KEY_MAX);
    ASSERT(val_len <= OVERLAY_VALUE_MAX && val != NULL);
    size_t need = entry_bytes(key_len, val_len);
    if (need > o->arena_bytes - o->used || o->undo_len == OVERLAY_UNDO_MAX)
        return -ENOSPC;
    int found;
    uint64_t h = hash_bytes(table, key, key_len);
    size_t i = probe(o, table, key, key_len, h, &found);
    if (!found && o->entries == o->entries_max)
        return -ENOSPC;
    size_t off = o->used;
    uint8_t *p = o->arena + off;
    put_u32(p, (uint32_t)table << 16 | (uint32_t)key_len);
    put_u32(p + 4, (uint32_t)val_len);
    memcpy(p + ENTRY_HEAD_BYTES, key, key_len);
    o->used += need;
    o->undo[o->undo_len++] = (struct overlay_undo){.slot = i, .old = o->slots[i]};
    o->slots[i] = ((uint64_t)off + 1) << TAG_BITS | (h >> (64 - TAG_BITS));
    if (!found)
        o->entries++;
    o->puts++;
    *val = p + ENTRY_HEAD_BYTES + key_len;
    return 0;
}

void overlay_save(struct overlay *o)
{
    ASSERT(o != NULL);
    o->undo_len = 0;
    o->save_used = o->used;
    o->save_entries = o->entries;
}

void overlay_rollback(struct overlay *o)
{
    ASSERT(o != NULL && o->save_used <= o->used);
    while (o->undo_len > 0) {
        struct overlay_undo *u = &o->undo[--o->undo_len];
        o->slots[u->slot] = u->old;
    }
    o->used = o->save_used;
    o->entries = o->save_entries;
}

size_t overlay_free_bytes(const struct overlay *o)
{
    return o->arena_bytes - o->used;
}

size_t overlay_free_entries(const struct overlay *o)
{
    return o->entries_max - o->entries;
}

int overlay_empty(const struct overlay *o)
{
    return o->used == 0;
}

int overlay_walk(const struct overlay *o, overlay_fn fn, void *arg)
{
    ASSERT(o != NULL && fn != NULL);
    for (size_t off = 0; off < o->used;) {
        struct entry e;
        entry_at(o, off, &e);
        int found;
        size_t i =
            probe(o, e.table, e.key, e.key_len, hash_bytes(e.table, e.key, e.key_len), &found);
        ASSERT(found);
        /* Only the newest version of a key is visited (the slot points at it). */
        if ((size_t)(o->slots[i] >> TAG_BITS) - 1 == off) {
            int rc = fn(arg, e.table, e.key, e.key_len, e.val, e.val_len);
            if (rc)
                return rc;
        }
        off += entry_bytes(e.key_len, e.val_len);
    }
    return 0;
}
