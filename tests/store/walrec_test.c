/*
 * Tests of store/walrec.c: operations survive a round trip field for field (the largest
 * possible ones too), a full record refuses the next operation, and the reader takes a
 * record only when it is whole and right: every truncation of the last record, every
 * flipped byte, another position, zeros (a preallocated segment) and garbage are the
 * log's end, never a crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/walrec.h"

static struct engine_span S(const char *s) {
    return (struct engine_span){s, strlen(s)};
}

static struct op
sample(int i)
{
    struct op op;
    memset(&op, 0, sizeof(op));
    op.kind = i % 2 ? OP_AUTHORIZE : OP_REFUND;
    op.shard = (uint32_t)(i % 3);
    op.merchant_id_len = (uint8_t)snprintf(op.merchant_id, sizeof(op.merchant_id), "m-%d", i);
    op.authenticated = i % 3 == 0;
    memcpy(op.payment_id, "pay_010000000000000007", ID_BYTES);
    op.amount = 1000 + i;
    memcpy(op.currency, "KRW", 4);
    op.has_reference = i % 2;
    op.reference_len = (uint16_t)snprintf(op.reference, sizeof(op.reference), "ref-%d-\xc3\xa9", i);
    op.idem_key_len = (uint16_t)snprintf(op.idem_key, sizeof(op.idem_key), "key-%d", i);
    op.request_id_len = (uint8_t)snprintf(op.request_id, sizeof(op.request_id), "rid-%d", i);
    op.fp_method = S("POST");
    op.fp_path = S("/v1/payments/authorize");
    op.fp_query = S("");
    op.fp_body = S("{\"merchant_id\":\"m-1\",\"amount\":1000,\"currency\":\"KRW\"}");
    return op;
}

static bool span_eq(struct engine_span a, struct engine_span b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void expect_same(const struct op *a, const struct op *b)
{
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->shard, b->shard);
    assert_string_equal(a->merchant_id, b->merchant_id);
    assert_int_equal(a->merchant_id_len, b->merchant_id_len);
    assert_int_equal(a->authenticated, b->authenticated);
    assert_memory_equal(a->payment_id, b->payment_id, ID_BYTES);
    assert_true(a->amount == b->amount);
    assert_string_equal(a->currency, b->currency);
    assert_int_equal(a->has_reference, b->has_reference);
    assert_int_equal(a->reference_len, b->reference_len);
    assert_memory_equal(a->reference, b->reference, a->reference_len);
    assert_string_equal(a->idem_key, b->idem_key);
    assert_string_equal(a->request_id, b->request_id);
    assert_true(span_eq(a->fp_method, b->fp_method));
    assert_true(span_eq(a->fp_path, b->fp_path));
    assert_true(span_eq(a->fp_query, b->fp_query));
    assert_true(span_eq(a->fp_body, b->fp_body));
}

struct collect {
    struct op ops[64];
    int n;
};

static int collect_op(void *arg, const struct op *op)
{
    struct collect *c = arg;
    c->ops[c->n++] = *op;
    return 0;
}

static uint8_t buf[WALREC_MAX_BYTES];

static size_t build(int n, uint64_t pos)
{
    struct walrec_writer w;
    walrec_begin(&w, buf, sizeof(buf));
    for (int i = 0; i < n; i++) {
        struct op op = sample(i);
        assert_int_equal(walrec_add(&w, &op), 0);
    }
    return walrec_finish(&w, pos, 1764478573123, 77, 3);
}

static void test_round_trip(void **state)
{
    (void)state;
    size_t len = build(10, 4096);
    struct walrec_header h;
    assert_int_equal(walrec_check(buf, len + 100, 4096, &h), 0);
    assert_int_equal(h.length, len);
    assert_int_equal(h.n, 10);
    assert_true(h.now_ms == 1764478573123);
    assert_int_equal(h.mark, 77);
    assert_int_equal(h.epoch, 3);
    assert_int_equal(h.type, WALREC_OPS);
    static struct collect c;
    c.n = 0;
    assert_int_equal(walrec_ops(buf, &h, collect_op, &c), 0);
    assert_int_equal(c.n, 10);
    for (int i = 0; i < 10; i++) {
        struct op want = sample(i);
        expect_same(&c.ops[i], &want);
    }
}

static void test_largest_operation_and_full_record(void **state)
{
    (void)state;
    static char path[HTTP_LINE_MAX_BYTES], body[HTTP_BODY_MAX_BYTES];
    memset(path, 'p', sizeof(path));
    memset(body, ' ', sizeof(body));
    struct op op = sample(1);
    op.fp_path = (struct engine_span){path, sizeof(path)};
    op.fp_body = (struct engine_span){body, sizeof(body)};
    op.reference_len = REFERENCE_MAX_BYTES;
    memset(op.reference, 'r', REFERENCE_MAX_BYTES);
    op.idem_key_len = IDEMPOTENCY_KEY_MAX_BYTES;
    memset(op.idem_key, 'k', IDEMPOTENCY_KEY_MAX_BYTES);
    op.request_id_len = REQUEST_ID_MAX_BYTES;
    memset(op.request_id, 'q', REQUEST_ID_MAX_BYTES);
    assert_true(walrec_op_size(&op) <= WALREC_OP_MAX_BYTES);
    struct walrec_writer w;
    walrec_begin(&w, buf, sizeof(buf));
    int n = 0;
    while (walrec_add(&w, &op) == 0)
        n++;
    assert_true(n >= 1);
    assert_true(w.len <= WALREC_MAX_BYTES);
    size_t len = walrec_finish(&w, 0, 1, 0, 1);
    struct walrec_header h;
    assert_int_equal(walrec_check(buf, len, 0, &h), 0);
    static struct collect c;
    c.n = 0;
    assert_int_equal(walrec_ops(buf, &h, collect_op, &c), 0);
    assert_int_equal(c.n, n);
    expect_same(&c.ops[n - 1], &op);
}

static void test_torn_and_corrupt(void **state)
{
    (void)state;
    size_t len = build(5, 8192);
    struct walrec_header h;
    /* Every truncation: more is needed (or it is not a record), never accepted. */
    for (size_t cut = 0; cut < len; cut++) {
        int rc = walrec_check(buf, cut, 8192, &h);
        if (rc != -EAGAIN && rc != -EBADMSG)
            fail_msg("cut at %zu: %d", cut, rc);
    }
    /* Every flipped byte: refused. */
    static uint8_t copy[WALREC_MAX_BYTES];
    for (size_t i = 0; i < len; i++) {
        memcpy(copy, buf, len);
        copy[i] ^= 0x40;
        int rc = walrec_check(copy, len, 8192, &h);
        if (rc == 0)
            fail_msg("byte %zu flipped and still accepted", i);
    }
    /* Another position: a stale record of a recycled segment. */
    assert_int_equal(walrec_check(buf, len, 8192 + 4096, &h), -EBADMSG);
    /* Zeros (a preallocated segment) and garbage. */
    memset(copy, 0, 4096);
    assert_int_equal(walrec_check(copy, 4096, 0, &h), -EBADMSG);
    for (size_t i = 0; i < 4096; i++)
        copy[i] = (uint8_t)(i * 7919);
    assert_int_equal(walrec_check(copy, 4096, 0, &h), -EBADMSG);
}

/* A record whose crc is right but whose operations are not (a writer bug, or a crafted
 * file): refused as a whole, nothing handed out. */
static void test_bad_operations_refused_whole(void **state)
{
    (void)state;
    struct walrec_writer w;
    walrec_begin(&w, buf, sizeof(buf));
    struct op op = sample(1);
    assert_int_equal(walrec_add(&w, &op), 0);
    assert_int_equal(walrec_add(&w, &op), 0);
    buf[WALREC_HEADER_BYTES + walrec_op_size(&op)] = 99; /* the second op's kind */
    size_t len = walrec_finish(&w, 0, 1, 0, 1);
    struct walrec_header h;
    assert_int_equal(walrec_check(buf, len, 0, &h), 0);
    static struct collect c;
    c.n = 0;
    assert_int_equal(walrec_ops(buf, &h, collect_op, &c), -EBADMSG);
    assert_int_equal(c.n, 0);
}

/* A skip record: only its header is checked; it covers the rest of a segment. */
static void test_skip(void **state)
{
    (void)state;
    static uint8_t seg[1 << 20];
    memset(seg, 0xee, sizeof(seg)); /* the rest of the segment is whatever was there */
    walrec_skip(seg, sizeof(seg), 5 << 20, 9);
    struct walrec_header h;
    assert_int_equal(walrec_check(seg, WALREC_HEADER_BYTES, 5 << 20, &h), 0);
    assert_int_equal(h.type, WALREC_SKIP);
    assert_int_equal(h.length, sizeof(seg));
    assert_int_equal(h.epoch, 9);
    assert_int_equal(h.n, 0);
    seg[20] ^= 1;
    assert_int_equal(walrec_check(seg, WALREC_HEADER_BYTES, 5 << 20, &h), -EBADMSG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_largest_operation_and_full_record),
        cmocka_unit_test(test_torn_and_corrupt),
        cmocka_unit_test(test_bad_operations_refused_whole),
        cmocka_unit_test(test_skip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
