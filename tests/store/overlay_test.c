/*
 * Tests of store/overlay.c: gets see the newest put, tables keep keys apart, a rollback
 * restores exactly the state of the savepoint (also across many colliding keys), a
 * full arena, table or undo log refuses without changing anything, a reset empties,
 * and the walk visits the newest version of every key once, in write order. A model
 * (a plain array of keys and values) checks a long random sequence.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "store/overlay.h"

static int put_str(struct overlay *o, unsigned table, const char *k, const char *v)
{
    uint8_t *dst;
    int rc = overlay_put(o, table, k, strlen(k), strlen(v), &dst);
    if (rc == 0)
        memcpy(dst, v, strlen(v));
    return rc;
}

static int get_is(const struct overlay *o, unsigned table, const char *k, const char *v)
{
    const uint8_t *val;
    size_t n;
    if (overlay_get(o, table, k, strlen(k), &val, &n))
        return v == NULL;
    return v != NULL && n == strlen(v) && memcmp(val, v, n) == 0;
}

static void test_put_get_replace(void **state)
{
    (void)state;
    struct overlay o;
    assert_int_equal(overlay_init(&o, 1 << 16, 64), 0);
    assert_true(overlay_empty(&o));
    assert_true(get_is(&o, 1, "a", NULL));
    assert_int_equal(put_str(&o, 1, "a", "one"), 0);
    assert_int_equal(put_str(&o, 2, "a", "other table"), 0);
    assert_int_equal(put_str(&o, 1, "a", "two"), 0);
    assert_int_equal(put_str(&o, 1, "", "empty key"), 0);
    assert_int_equal(put_str(&o, 1, "b", ""), 0);
    assert_true(get_is(&o, 1, "a", "two"));
    assert_true(get_is(&o, 2, "a", "other table"));
    assert_true(get_is(&o, 1, "", "empty key"));
    assert_true(get_is(&o, 1, "b", ""));
    assert_true(get_is(&o, 3, "a", NULL));
    assert_int_equal(o.entries, 4);
    assert_false(overlay_empty(&o));
    overlay_reset(&o);
    assert_true(overlay_empty(&o));
    assert_true(get_is(&o, 1, "a", NULL));
    assert_int_equal(put_str(&o, 1, "a", "again"), 0);
    assert_true(get_is(&o, 1, "a", "again"));
    overlay_fini(&o);
    overlay_fini(&o); /* a freed layer is a no-op */
}

static void test_rollback(void **state)
{
    (void)state;
    struct overlay o;
    assert_int_equal(overlay_init(&o, 1 << 20, 1024), 0);
    char k[16], v[16];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        snprintf(v, sizeof(v), "v%d", i);
        assert_int_equal(put_str(&o, 0, k, v), 0);
    }
    overlay_save(&o);
    size_t used = o.used;
    /* New keys, replaced keys, and a key replaced twice. */
    for (int i = 50; i < 300; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        assert_int_equal(put_str(&o, 0, k, "new"), 0);
    }
    assert_int_equal(put_str(&o, 0, "k7", "x"), 0);
    assert_int_equal(put_str(&o, 0, "k7", "y"), 0);
    assert_true(get_is(&o, 0, "k7", "y"));
    overlay_rollback(&o);
    assert_int_equal(o.used, used);
    assert_int_equal(o.entries, 100);
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        snprintf(v, sizeof(v), "v%d", i);
        assert_true(get_is(&o, 0, k, i < 100 ? v : NULL));
    }
    /* A rollback right after a save undoes nothing. */
    overlay_save(&o);
    overlay_rollback(&o);
    assert_int_equal(o.entries, 100);
    overlay_fini(&o);
}

static void test_full(void **state)
{
    (void)state;
    struct overlay o;
    /* The table: 16 slots take 8 keys. */
    assert_int_equal(overlay_init(&o, 1 << 16, 16), 0);
    char k[16];
    for (int i = 0; i < 8; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        assert_int_equal(put_str(&o, 0, k, "v"), 0);
    }
    assert_int_equal(overlay_free_entries(&o), 0);
    size_t used = o.used;
    assert_int_equal(put_str(&o, 0, "k8", "v"), -ENOSPC);
    assert_int_equal(o.used, used);
    assert_true(get_is(&o, 0, "k8", NULL));
    assert_int_equal(put_str(&o, 0, "k3", "replacing is fine"), 0);
    overlay_fini(&o);

    /* The arena. */
    assert_int_equal(overlay_init(&o, 256, 64), 0);
    uint8_t *dst;
    assert_int_equal(overlay_put(&o, 0, "a", 1, 200, &dst), 0);
    memset(dst, 1, 200);
    used = o.used;
    assert_int_equal(overlay_put(&o, 0, "b", 1, 100, &dst), -ENOSPC);
    assert_int_equal(o.used, used);
    assert_int_equal(o.entries, 1);
    assert_true(overlay_free_bytes(&o) < 100);
    overlay_fini(&o);

    /* The undo log. */
    assert_int_equal(overlay_init(&o, 1 << 20, 1 << 12), 0);
    overlay_save(&o);
    for (int i = 0; i < OVERLAY_UNDO_MAX; i++) {
        snprintf(k, sizeof(k), "u%d", i);
        assert_int_equal(put_str(&o, 0, k, "v"), 0);
    }
    assert_int_equal(put_str(&o, 0, "one more", "v"), -ENOSPC);
    overlay_rollback(&o);
    assert_int_equal(o.entries, 0);
    overlay_save(&o);
    assert_int_equal(put_str(&o, 0, "one more", "v"), 0);
    overlay_fini(&o);
}

struct walk_seen {
    char keys[8][8];
    char vals[8][8];
    int n;
};

static int walk_fn(void *arg, unsigned table, const uint8_t *key, size_t key_len,
                   const uint8_t *val, size_t val_len)
{
    struct walk_seen *w = arg;
    assert_int_equal(table, 3);
    assert_true(w->n < 8 && key_len < 8 && val_len < 8);
    memcpy(w->keys[w->n], key, key_len);
    memcpy(w->vals[w->n], val, val_len);
    w->n++;
    return w->n == 99 ? 7 : 0;
}

static void test_walk(void **state)
{
    (void)state;
    struct overlay o;
    assert_int_equal(overlay_init(&o, 1 << 16, 64), 0);
    assert_int_equal(put_str(&o, 3, "a", "1"), 0);
    assert_int_equal(put_str(&o, 3, "b", "2"), 0);
    assert_int_equal(put_str(&o, 3, "a", "3"), 0);
    assert_int_equal(put_str(&o, 3, "c", "4"), 0);
    struct walk_seen w = {0};
    assert_int_equal(overlay_walk(&o, walk_fn, &w), 0);
    assert_int_equal(w.n, 3);
    /* Order of the newest versions: b, a (replaced after b), c. */
    assert_string_equal(w.keys[0], "b");
    assert_string_equal(w.keys[1], "a");
    assert_string_equal(w.vals[1], "3");
    assert_string_equal(w.keys[2], "c");
    overlay_fini(&o);
}

/* A long random sequence of puts, saves and rollbacks against a model. */
#define MODEL_KEYS 500
static void test_model(void **state)
{
    (void)state;
    static int model[MODEL_KEYS], saved[MODEL_KEYS];
    memset(model, -1, sizeof(model));
    memcpy(saved, model, sizeof(model));
    struct overlay o;
    assert_int_equal(overlay_init(&o, 1 << 24, 2048), 0);
    uint32_t x = 7;
    char k[16], v[16];
    for (int step = 0; step < 200000; step++) {
        x = x * 1103515245u + 12345u;
        unsigned r = (x >> 8) % 100;
        if (r < 2) {
            overlay_save(&o);
            memcpy(saved, model, sizeof(model));
        } else if (r < 3) {
            overlay_rollback(&o);
            memcpy(model, saved, sizeof(model));
        } else {
            int key = (int)((x >> 12) % MODEL_KEYS);
            snprintf(k, sizeof(k), "key%d", key);
            snprintf(v, sizeof(v), "%d", step);
            int rc = put_str(&o, (unsigned)key % 4, k, v);
            if (rc == -ENOSPC) { /* undo log full: start afresh from a savepoint */
                overlay_save(&o);
                memcpy(saved, model, sizeof(model));
                continue;
            }
            assert_int_equal(rc, 0);
            model[key] = step;
        }
        if (o.used > (1 << 23)) {
            overlay_reset(&o);
            memset(model, -1, sizeof(model));
            memcpy(saved, model, sizeof(model));
        }
    }
    for (int key = 0; key < MODEL_KEYS; key++) {
        snprintf(k, sizeof(k), "key%d", key);
        snprintf(v, sizeof(v), "%d", model[key]);
        assert_true(get_is(&o, (unsigned)key % 4, k, model[key] < 0 ? NULL : v));
    }
    overlay_fini(&o);
}

/* The slot table is resident from the start (overlay.c: zeroing it at a reset must not
 * fault its pages in on the shard thread), and stays so across a reset. */
static void test_slots_resident(void **state)
{
    (void)state;
    struct overlay o;
    size_t slots = (size_t)1 << 18; /* 2 MiB of slots, as a small engine layer */
    assert_int_equal(overlay_init(&o, 1 << 20, slots), 0);
    long page = sysconf(_SC_PAGESIZE);
    size_t bytes = slots * sizeof(*o.slots), pages = (bytes + (size_t)page - 1) / (size_t)page;
    unsigned char *vec = malloc(pages);
    assert_non_null(vec);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(mincore(o.slots, bytes, vec), 0);
        size_t resident = 0;
        for (size_t i = 0; i < pages; i++)
            resident += vec[i] & 1;
        if (resident != pages)
            fail_msg("round %d: %zu of %zu slot pages resident", round, resident, pages);
        assert_int_equal(put_str(&o, 1, "a", "one"), 0);
        overlay_reset(&o);
    }
    free(vec);
    overlay_fini(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_rollback),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_walk),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_slots_resident),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
