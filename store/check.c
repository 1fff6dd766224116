/*
 * The offline audit (contract in check.h). Each shard is opened read-only and read
 * in one read transaction. Payments are loaded in id order (their key order), ledger
 * entries are gathered and sorted by payment id, and both are walked together to
 * recompute each payment's amounts from its entries. Expected balances are summed
 * from the payments and compared with the stored ones. Memory is proportional to
 * the shard's payments and ledger entries, which an offline tool may afford.
 *
 * Nothing read from disk is trusted: every record goes through the record.h
 * decoders and a record that fails is one reported problem, never a crash.
 *
 * The log (check 6) is read after the shard's LMDB environment, from the "wal_pos" that
 * read transaction saw, through wal_scan (store/wal.h: read-only, the same walk as the
 * replay at start). Its lines are information ("shard N: log: ...") and problems
 * ("shard N: log problem: ..."); only problems fail the check.
 */
#include "store/check.h"

#include <errno.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/api.h"
#include "engine/apply.h"
#include "engine/assert.h"
#include "engine/payment.h"
#include "store/manifest.h"
#include "store/record.h"
#include "store/wal.h"
#include "store/walrec.h"

enum { DB_PAYMENTS, DB_REFUNDS, DB_IDEM, DB_LEDGER, DB_BALANCES, DB_OUTBOX, DB_META, DB_N };
static const char *const db_names[DB_N] = {
    RECORD_DB_PAYMENTS, RECORD_DB_REFUNDS, RECORD_DB_IDEM, RECORD_DB_LEDGER,
    RECORD_DB_BALANCES, RECORD_DB_OUTBOX,  RECORD_DB_META,
};

/* A payment as the audit needs it. */
struct pay_row {
    char id[RECORD_PAYMENT_ID_BYTES];
    char merchant[RECORD_MERCHANT_MAX];
    uint8_t mlen;
    char currency[3];
    enum payment_status status;
    int64_t amount, captured, refunded;
    int64_t refund_sum; /* sum of its refund records */
};

/* One ledger entry, with its merchant (from the key). */
struct entry_row {
    char id[RECORD_PAYMENT_ID_BYTES];
    char merchant[RECORD_MERCHANT_MAX];
    uint8_t mlen;
    char currency[3];
    uint8_t debit, credit;
    int64_t amount;
    uint64_t seq;
};

/* A stored balance record, and what the payments say it should be. */
struct bal_row {
    uint8_t key[RECORD_KEY_MAX];
    size_t key_len;
    struct record_balance stored;
    int64_t want_pending, want_available;
};

struct check {
    FILE *report;
    unsigned shard;
    uint64_t problems;
    MDB_txn *txn;
    MDB_dbi dbi[DB_N];
    struct pay_row *pays;
    size_t npays;
    struct entry_row *entries;
    size_t nentries;
    struct bal_row *bals;
    size_t nbals;
    __int128 sum[3]; /* clearing, pending, available of this shard */
    uint64_t events;
    /* LMDB's "wal_pos": where the next start replays the log from. */
    enum { WAL_POS_UNREAD, WAL_POS_ABSENT, WAL_POS_SET } wal_pos_state;
    uint64_t wal_pos;
    bool has_log; /* the shard has a wal/ directory */
    uint64_t log_records, log_ops;
};

static void problem(struct check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct check *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(c->report, "shard %u: ", c->shard);
    vfprintf(c->report, fmt, ap);
    fputc('\n', c->report);
    va_end(ap);
    c->problems++;
}

/* Grows *arr (of elem bytes) to hold at least n + 1 elements. */
static int reserve(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    size_t next = *cap ? *cap * 2 : 1024;
    void *p = realloc(*arr, next * elem);
    if (p == NULL)
        return -ENOMEM;
    *arr = p;
    *cap = next;
    return 0;
}

/* ---- loading ---------------------------------------------------------------------- */

static int load_payments(struct check *c)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t cap = 0;
    int rc = mdb_cursor_open(c->txn, c->dbi[DB_PAYMENTS], &cur);
    if (rc)
        return rc;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        struct payment p;
        if (k.mv_size != RECORD_PAYMENT_ID_BYTES ||
            record_payment_decode(v.mv_data, v.mv_size, &p) ||
            memcmp(p.id, k.mv_data, RECORD_PAYMENT_ID_BYTES) != 0) {
            problem(c, "payment %.*s: corrupt record (%zu bytes)", (int)k.mv_size,
                    (const char *)k.mv_data, v.mv_size);
            continue;
        }
        if ((rc = reserve((void **)&c->pays, &cap, c->npays, sizeof(*c->pays))))
            break;
        struct pay_row *r = &c->pays[c->npays++];
        memcpy(r->id, p.id, sizeof(r->id));
        memcpy(r->merchant, p.merchant_id, p.merchant_id_len);
        r->mlen = p.merchant_id_len;
        memcpy(r->currency, p.currency, 3);
        r->status = p.status;
        r->amount = p.amount;
        r->captured = p.captured_amount;
        r->refunded = p.refunded_amount;
        r->refund_sum = 0;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int load_entries(struct check *c)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t cap = 0;
    int rc = mdb_cursor_open(c->txn, c->dbi[DB_LEDGER], &cur);
    if (rc)
        return rc;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        const char *m;
        size_t mlen;
        size_t off = record_key_split(k.mv_data, k.mv_size, &m, &mlen);
        struct record_ledger_entry e;
        if (off == 0 || k.mv_size != off + 8 || record_ledger_decode(v.mv_data, v.mv_size, &e) ||
            e.payment_id_len != RECORD_PAYMENT_ID_BYTES) {
            problem(c, "ledger entry: corrupt key or record (%zu/%zu bytes)", k.mv_size, v.mv_size);
            continue;
        }
        if ((rc = reserve((void **)&c->entries, &cap, c->nentries, sizeof(*c->entries))))
            break;
        struct entry_row *r = &c->entries[c->nentries++];
        memcpy(r->id, e.payment_id, sizeof(r->id));
        memcpy(r->merchant, m, mlen);
        r->mlen = (uint8_t)mlen;
        memcpy(r->currency, e.currency, 3);
        r->debit = e.debit;
        r->credit = e.credit;
        r->amount = e.amount;
        r->seq = record_get_u64be((const uint8_t *)k.mv_data + off);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Loads the balance records and checks that each sums to zero (invariant 1). */
static int load_balances(struct check *c)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t cap = 0;
    int rc = mdb_cursor_open(c->txn, c->dbi[DB_BALANCES], &cur);
    if (rc)
        return rc;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        const char *m;
        size_t mlen;
        size_t off = record_key_split(k.mv_data, k.mv_size, &m, &mlen);
        struct record_balance b;
        if (off == 0 || k.mv_size != off + 3 ||
            !record_currency_valid((const char *)k.mv_data + off) ||
            record_balance_decode(v.mv_data, v.mv_size, &b)) {
            problem(c, "balance: corrupt key or record (%zu/%zu bytes)", k.mv_size, v.mv_size);
            continue;
        }
        const char *cu = (const char *)k.mv_data + off;
        __int128 s = (__int128)b.clearing + b.pending + b.available;
        if (s != 0)
            problem(c,
                    "balance %.*s/%.3s: clearing %lld + pending %lld + available %lld "
                    "= %lld, not 0",
                    (int)mlen, m, cu, (long long)b.clearing, (long long)b.pending,
                    (long long)b.available, (long long)s);
        c->sum[0] += b.clearing;
        c->sum[1] += b.pending;
        c->sum[2] += b.available;
        if ((rc = reserve((void **)&c->bals, &cap, c->nbals, sizeof(*c->bals))))
            break;
        struct bal_row *r = &c->bals[c->nbals++];
        memset(r, 0, sizeof(*r));
        memcpy(r->key, k.mv_data, k.mv_size);
        r->key_len = k.mv_size;
        r->stored = b;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- invariants 2 and 3 ------------------------------------------------------------ */

static int cmp_entry(const void *a, const void *b)
{
    const struct entry_row *x = a, *y = b;
    int d = memcmp(x->id, y->id, sizeof(x->id));
    if (d)
        return d;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* LMDB's default key order: memcmp of the common length, then the shorter first. */
static int cmp_key(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    int d = memcmp(a, b, alen < blen ? alen : blen);
    if (d)
        return d;
    return alen < blen ? -1 : alen > blen;
}

static int cmp_bal(const void *a, const void *b)
{
    const struct bal_row *x = a, *y = b;
    return cmp_key(x->key, x->key_len, y->key, y->key_len);
}

/* Sums of a payment's entries by kind of posting. */
struct pay_sums {
    int64_t authorized; /* clearing -> pending */
    int64_t captured;   /* pending -> available */
    int64_t released;   /* pending -> clearing */
    int64_t refunded;   /* available -> clearing */
};

static int64_t *sum_slot(struct pay_sums *s, uint8_t debit, uint8_t credit)
{
    if (debit == RECORD_ACCOUNT_CLEARING && credit == RECORD_ACCOUNT_PENDING)
        return &s->authorized;
    if (debit == RECORD_ACCOUNT_PENDING && credit == RECORD_ACCOUNT_AVAILABLE)
        return &s->captured;
    if (debit == RECORD_ACCOUNT_PENDING && credit == RECORD_ACCOUNT_CLEARING)
        return &s->released;
    if (debit == RECORD_ACCOUNT_AVAILABLE && credit == RECORD_ACCOUNT_CLEARING)
        return &s->refunded;
    return NULL;
}

/* Compares the sums recomputed from a payment's entries with its state. */
static void check_payment_sums(struct check *c, const struct pay_row *p, const struct pay_sums *s)
{
    int64_t want_released = 0;
    if (p->status == PAYMENT_VOIDED)
        want_released = p->amount;
    else if (p->status != PAYMENT_AUTHORIZED)
        want_released = p->amount - p->captured;
    if (s->authorized != p->amount || s->captured != p->captured || s->released != want_released ||
        s->refunded != p->refunded)
        problem(c,
                "payment %.22s (%s): entries give authorized %lld captured %lld released "
                "%lld refunded %lld; state says %lld %lld %lld %lld",
                p->id, payment_status_name(p->status), (long long)s->authorized,
                (long long)s->captured, (long long)s->released, (long long)s->refunded,
                (long long)p->amount, (long long)p->captured, (long long)want_released,
                (long long)p->refunded);
}

/* Walks payments (sorted by id) and entries (sorted by id) together. */
static void check_entries(struct check *c)
{
    if (c->nentries > 1) /* qsort(NULL, 0, ...) is undefined behaviour */
        qsort(c->entries, c->nentries, sizeof(*c->entries), cmp_entry);
    size_t e = 0;
    for (size_t i = 0; i < c->npays; i++) {
        const struct pay_row *p = &c->pays[i];
        for (; e < c->nentries && memcmp(c->entries[e].id, p->id, sizeof(p->id)) < 0; e++)
            problem(c, "ledger entry %.*s/%llu names unknown payment %.22s", c->entries[e].mlen,
                    c->entries[e].merchant, (unsigned long long)c->entries[e].seq,
                    c->entries[e].id);
        struct pay_sums s = {0};
        for (; e < c->nentries && memcmp(c->entries[e].id, p->id, sizeof(p->id)) == 0; e++) {
            const struct entry_row *r = &c->entries[e];
            int64_t *slot = sum_slot(&s, r->debit, r->credit);
            if (slot == NULL || r->mlen != p->mlen || memcmp(r->merchant, p->merchant, p->mlen) ||
                memcmp(r->currency, p->currency, 3)) {
                problem(c, "ledger entry %.*s/%llu does not fit payment %.22s", r->mlen,
                        r->merchant, (unsigned long long)r->seq, p->id);
                continue;
            }
            *slot += r->amount; /* amounts <= 10^15; a payment has a few entries */
        }
        check_payment_sums(c, p, &s);
    }
    for (; e < c->nentries; e++)
        problem(c, "ledger entry %.*s/%llu names unknown payment %.22s", c->entries[e].mlen,
                c->entries[e].merchant, (unsigned long long)c->entries[e].seq, c->entries[e].id);
}

/* Invariant 2: stored pending/available against the payments. */
static void check_balances(struct check *c)
{
    for (size_t i = 0; i < c->npays; i++) {
        const struct pay_row *p = &c->pays[i];
        struct bal_row want;
        want.key_len = record_key_balance(want.key, p->merchant, p->mlen, p->currency);
        struct bal_row *b = bsearch(&want, c->bals, c->nbals, sizeof(*c->bals), cmp_bal);
        if (b == NULL) {
            problem(c, "payment %.22s: no balance record for %.*s/%.3s", p->id, p->mlen,
                    p->merchant, p->currency);
            continue;
        }
        if (p->status == PAYMENT_AUTHORIZED)
            b->want_pending += p->amount;
        b->want_available += p->captured - p->refunded;
    }
    for (size_t i = 0; i < c->nbals; i++) {
        const struct bal_row *b = &c->bals[i];
        if (b->stored.pending == b->want_pending && b->stored.available == b->want_available)
            continue;
        const char *m;
        size_t mlen;
        size_t off = record_key_split(b->key, b->key_len, &m, &mlen);
        problem(c,
                "balance %.*s/%.3s: pending %lld, open authorizations %lld; available "
                "%lld, captured minus refunded %lld",
                (int)mlen, m, (const char *)b->key + off, (long long)b->stored.pending,
                (long long)b->want_pending, (long long)b->stored.available,
                (long long)b->want_available);
    }
}

/* Refund records: each names a payment of the same merchant and currency, and a
 * payment's refunds sum to its refunded amount. */
static int cmp_pay_id(const void *key, const void *elem);

static int check_refunds(struct check *c)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(c->txn, c->dbi[DB_REFUNDS], &cur);
    if (rc)
        return rc;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        struct refund r;
        if (k.mv_size != RECORD_PAYMENT_ID_BYTES ||
            record_refund_decode(v.mv_data, v.mv_size, &r) ||
            memcmp(r.id, k.mv_data, RECORD_PAYMENT_ID_BYTES) != 0) {
            problem(c, "refund %.*s: corrupt record (%zu bytes)", (int)k.mv_size,
                    (const char *)k.mv_data, v.mv_size);
            continue;
        }
        struct pay_row *p = bsearch(r.payment_id, c->pays, c->npays, sizeof(*c->pays), cmp_pay_id);
        if (p == NULL || p->mlen != r.merchant_id_len ||
            memcmp(p->merchant, r.merchant_id, p->mlen) || memcmp(p->currency, r.currency, 3)) {
            problem(c,
                    "refund %s names payment %s, which does not exist for its merchant "
                    "and currency",
                    r.id, r.payment_id);
            continue;
        }
        p->refund_sum += r.amount;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        return rc;
    for (size_t i = 0; i < c->npays; i++)
        if (c->pays[i].refund_sum != c->pays[i].refunded)
            problem(c, "payment %.22s: refunds sum to %lld, refunded amount is %lld", c->pays[i].id,
                    (long long)c->pays[i].refund_sum, (long long)c->pays[i].refunded);
    return 0;
}

/* ---- invariants 4 and 5 ------------------------------------------------------------ */

/* A meta counter; 0 when absent. */
static int meta_u64(struct check *c, const char *name, uint64_t *out)
{
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name}, v;
    *out = 0;
    int rc = mdb_get(c->txn, c->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    int64_t i;
    if (record_i64_decode(v.mv_data, v.mv_size, &i) || i < 0) {
        problem(c, "meta %s: corrupt record", name);
        return 0;
    }
    *out = (uint64_t)i;
    return 0;
}

static int check_outbox(struct check *c)
{
    uint64_t mark = 0, last_issued = 0;
    int rc = meta_u64(c, "replicated", &mark);
    if (rc == 0)
        rc = meta_u64(c, "seq:event", &last_issued);
    if (rc)
        return rc;
    MDB_cursor *cur;
    MDB_val k, v;
    if ((rc = mdb_cursor_open(c->txn, c->dbi[DB_OUTBOX], &cur)))
        return rc;
    uint64_t expect = 0; /* the next sequence number the walk expects; 0: first */
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        struct record_event ev;
        if (k.mv_size != 8 || record_event_decode(v.mv_data, v.mv_size, &ev)) {
            problem(c, "outbox: corrupt key or event (%zu/%zu bytes)", k.mv_size, v.mv_size);
            continue;
        }
        uint64_t seq = record_get_u64be(k.mv_data);
        if (expect == 0 && seq > mark + 1)
            problem(c, "outbox: events %llu..%llu are missing (replicated up to %llu)",
                    (unsigned long long)mark + 1, (unsigned long long)seq - 1,
                    (unsigned long long)mark);
        else if (expect != 0 && seq != expect)
            problem(c, "outbox: events %llu..%llu are missing", (unsigned long long)expect,
                    (unsigned long long)seq - 1);
        expect = seq + 1;
        c->events++;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        return rc;
    uint64_t last = expect ? expect - 1 : mark;
    if (last != last_issued && !(expect == 0 && mark >= last_issued))
        problem(c, "outbox: last event is %llu but %llu were issued (replicated up to %llu)",
                (unsigned long long)last, (unsigned long long)last_issued,
                (unsigned long long)mark);
    return 0;
}

static int cmp_pay_id(const void *key, const void *elem)
{
    return memcmp(key, ((const struct pay_row *)elem)->id, RECORD_PAYMENT_ID_BYTES);
}

/* Invariant 5 for one record: a 2xx answer names an object of the merchant. */
static int check_idem_claim(struct check *c, const char *m, size_t mlen,
                            const struct idem_record *rec, const char *key, size_t klen)
{
    static const char head[] = "{\"id\":\"";
    const size_t hl = sizeof(head) - 1;
    const char *b = rec->body.ptr;
    if (rec->body.len < hl + RECORD_PAYMENT_ID_BYTES + 1 || memcmp(b, head, hl) != 0 ||
        b[hl + RECORD_PAYMENT_ID_BYTES] != '"') {
        problem(c, "idempotency %.*s/%.*s: status %u names no payment or refund", (int)mlen, m,
                (int)klen, key, rec->status);
        return 0;
    }
    const char *id = b + hl;
    bool found = false;
    if (memcmp(id, "pay_", 4) == 0) {
        const struct pay_row *p = bsearch(id, c->pays, c->npays, sizeof(*c->pays), cmp_pay_id);
        found = p && p->mlen == mlen && memcmp(p->merchant, m, mlen) == 0;
    } else if (memcmp(id, "rfd_", 4) == 0) {
        MDB_val k = {.mv_size = RECORD_PAYMENT_ID_BYTES, .mv_data = (void *)id}, v;
        int rc = mdb_get(c->txn, c->dbi[DB_REFUNDS], &k, &v);
        if (rc && rc != MDB_NOTFOUND)
            return rc;
        struct refund r;
        found = rc == 0 && record_refund_decode(v.mv_data, v.mv_size, &r) == 0 &&
                r.merchant_id_len == mlen && memcmp(r.merchant_id, m, mlen) == 0;
    }
    if (!found)
        problem(c,
                "idempotency %.*s/%.*s: status %u names %.22s, which does not exist for "
                "that merchant",
                (int)mlen, m, (int)klen, key, rec->status, id);
    return 0;
}

static int check_idem(struct check *c)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(c->txn, c->dbi[DB_IDEM], &cur);
    if (rc)
        return rc;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        const char *m;
        size_t mlen;
        size_t off = record_key_split(k.mv_data, k.mv_size, &m, &mlen);
        struct idem_record rec;
        if (off == 0 || off == k.mv_size || record_idem_decode(v.mv_data, v.mv_size, &rec)) {
            problem(c, "idempotency: corrupt key or record (%zu/%zu bytes)", k.mv_size, v.mv_size);
            continue;
        }
        if (rec.status < 200 || rec.status > 299)
            continue;
        rc = check_idem_claim(c, m, mlen, &rec, (const char *)k.mv_data + off, k.mv_size - off);
        if (rc)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- check 6: the write-ahead log ---------------------------------------------------- */

/* LMDB's "wal_pos" (absent: the log, if any, starts at 0). */
static int read_wal_pos(struct check *c)
{
    static const char name[] = "wal_pos";
    MDB_val k = {.mv_size = sizeof(name) - 1, .mv_data = (void *)name}, v;
    int rc = mdb_get(c->txn, c->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND) {
        c->wal_pos_state = WAL_POS_ABSENT;
        return 0;
    }
    if (rc)
        return rc;
    int64_t i;
    if (record_i64_decode(v.mv_data, v.mv_size, &i) || i < 0) {
        problem(c, "meta wal_pos: corrupt record");
        return 0; /* stays WAL_POS_UNREAD: the log is not read from a guess */
    }
    c->wal_pos = (uint64_t)i;
    c->wal_pos_state = WAL_POS_SET;
    return 0;
}

/* What the next start would replay, by kind of operation; records it could not. */
struct log_count {
    uint64_t kinds[OP_REFUND + 1];
    uint64_t undecodable; /* records whose CRC holds but whose operations do not decode */
    uint64_t first_undecodable;
};

static int count_op(void *arg, const struct op *op)
{
    struct log_count *lc = arg;
    /* walrec_ops hands out only operations that change state */
    ASSERT(op->kind >= OP_AUTHORIZE && op->kind <= OP_REFUND);
    lc->kinds[op->kind]++;
    return 0;
}

static int count_record(void *arg, const struct walrec_header *h, const uint8_t *rec)
{
    struct log_count *lc = arg;
    if (walrec_ops(rec, h, count_op, lc) != 0 && lc->undecodable++ == 0)
        lc->first_undecodable = h->pos;
    return 0;
}

/* The segment files' indexes (hex, as in their names) as ranges: "0-2, 5". */
static void print_segments(FILE *f, const struct wal_scan_report *r)
{
    for (size_t i = 0; i < r->nsegments;) {
        size_t j = i;
        while (j + 1 < r->nsegments && r->segments[j + 1].index == r->segments[j].index + 1)
            j++;
        fprintf(f, "%s%llx", i ? ", " : "", (unsigned long long)r->segments[i].index);
        if (j > i)
            fprintf(f, "-%llx", (unsigned long long)r->segments[j].index);
        i = j + 1;
    }
}

/* Information: the log's files. */
static void print_log_files(struct check *c, const struct wal_scan_report *r)
{
    FILE *f = c->report;
    fprintf(f, "shard %u: log: ", c->shard);
    if (r->segment_bytes_state == 0)
        fprintf(f, "segment-bytes %llu", (unsigned long long)r->segment_bytes);
    else
        fprintf(f, "segment-bytes %s", r->segment_bytes_state == -ENOENT ? "missing" : "invalid");
    if (r->epoch_state == 0)
        fprintf(f, ", epoch %u", r->epoch_file);
    else
        fprintf(f, ", epoch file %s", r->epoch_state == -ENOENT ? "missing" : "invalid");
    if (r->nsegments == 0) {
        fprintf(f, ", no segment files\n");
        return;
    }
    fprintf(f, ", %zu segment file%s (indexes, hex): ", r->nsegments, r->nsegments == 1 ? "" : "s");
    print_segments(f, r);
    fputc('\n', f);
}

/* Why the log ends, in words. */
static void print_end(FILE *f, const struct wal_scan_report *r)
{
    switch (r->why) {
    case WAL_END_WRITTEN:
        fprintf(f, "end of written data");
        break;
    case WAL_END_RECYCLED:
        fprintf(f, "end of written data (a recycled segment's old record of position %llu)",
                (unsigned long long)r->end_claims);
        break;
    case WAL_END_TORN: /* a tail only when nothing valid follows (else a problem says so) */
        fprintf(f, "torn or corrupt record%s",
                r->beyond_pos ? "" : " (after a crash: a write that never completed)");
        break;
    case WAL_END_MISPLACED:
        fprintf(f, "a record that claims position %llu", (unsigned long long)r->end_claims);
        break;
    case WAL_END_STALE:
        fprintf(f, "stale record of epoch %u after epoch %u (left by a write that never completed)",
                r->end_epoch, r->epoch_last);
        break;
    case WAL_END_MISSING:
        fprintf(f, "segment %016llx.log does not exist",
                (unsigned long long)(r->end / r->segment_bytes));
        break;
    }
}

/* Information: what the next start replays, and where and why the log ends. */
static void print_log_walk(struct check *c, const struct wal_scan_report *r,
                           const struct log_count *lc)
{
    FILE *f = c->report;
    fprintf(f, "shard %u: log: from wal_pos %llu%s: %llu records, %llu operations to replay",
            c->shard, (unsigned long long)r->from,
            c->wal_pos_state == WAL_POS_ABSENT ? " (none in LMDB)" : "",
            (unsigned long long)r->records, (unsigned long long)r->ops);
    if (r->ops)
        fprintf(f, " (%llu authorize, %llu capture, %llu void, %llu refund)",
                (unsigned long long)lc->kinds[OP_AUTHORIZE],
                (unsigned long long)lc->kinds[OP_CAPTURE], (unsigned long long)lc->kinds[OP_VOID],
                (unsigned long long)lc->kinds[OP_REFUND]);
    fprintf(f, "; ends at %llu: ", (unsigned long long)r->end);
    print_end(f, r);
    if (r->before_end < r->from)
        fprintf(f, "; wal_pos not compared with the records before it (they end at %llu)",
                (unsigned long long)r->before_end);
    fputc('\n', f);
}

static bool segment_above(const struct wal_scan_report *r, uint64_t index)
{
    return r->nsegments > 0 && r->segments[r->nsegments - 1].index > index;
}

/* Problems of the log's files: its segment size, and each segment file's size. */
static void check_log_files(struct check *c, const struct wal_scan_report *r)
{
    if (r->segment_bytes_state == -ENOENT && r->nsegments > 0)
        problem(c,
                "log problem: segment-bytes is missing but %zu segment files exist: their "
                "positions cannot be read",
                r->nsegments);
    else if (r->segment_bytes_state != 0 && r->segment_bytes_state != -ENOENT)
        problem(c, "log problem: segment-bytes does not hold a valid segment size");
    for (size_t i = 0; i < r->nsegments; i++) {
        const struct wal_segment *g = &r->segments[i];
        if (!g->regular)
            problem(c, "log problem: segment %016llx.log is not a regular file",
                    (unsigned long long)g->index);
        else if (r->segment_bytes_state == 0 && g->size_bytes != r->segment_bytes)
            problem(c, "log problem: segment %016llx.log has %llu bytes, not %llu",
                    (unsigned long long)g->index, (unsigned long long)g->size_bytes,
                    (unsigned long long)r->segment_bytes);
    }
}

/* Problems of the chain of records: where it starts against LMDB, and how it ends. */
static void check_log_walk(struct check *c, const struct wal_scan_report *r,
                           const struct log_count *lc)
{
    unsigned long long from = r->from, end = r->end;
    if (r->before_end > r->from)
        problem(c,
                "log problem: LMDB's wal_pos %llu is not where a record starts: the record at "
                "%llu runs to %llu (positions not contiguous)",
                from, (unsigned long long)r->before_last, (unsigned long long)r->before_last_end);
    uint64_t seg = r->end / r->segment_bytes;
    char follow[160] = ""; /* what lies after the end that a torn tail does not explain */
    if (r->beyond_pos != 0)
        snprintf(follow, sizeof(follow),
                 "%llu valid records (%llu operations) of epoch %u or later follow, from %llu "
                 "to %llu",
                 (unsigned long long)r->beyond_records, (unsigned long long)r->beyond_ops,
                 r->beyond_epoch, (unsigned long long)r->beyond_pos,
                 (unsigned long long)r->beyond_end);
    if (r->why == WAL_END_MISSING && segment_above(r, seg)) {
        /* one problem: the valid records after it, if any, are said with it */
        if (r->end == r->from)
            problem(c,
                    "log problem: segment %016llx.log, which holds LMDB's wal_pos %llu, is "
                    "missing while later segments exist (positions not contiguous)%s%s",
                    (unsigned long long)seg, from, *follow ? "; " : "", follow);
        else
            problem(c,
                    "log problem: the log goes on at %llu in segment %016llx.log, which is "
                    "missing while later segments exist%s%s",
                    end, (unsigned long long)seg, *follow ? "; " : "", follow);
    } else if (r->beyond_pos != 0) {
        problem(c,
                "log problem: the log breaks at %llu, but %s: damage inside the log, not a "
                "torn tail; the next start would replay up to %llu only",
                end, follow, end);
    }
    if (r->why == WAL_END_MISPLACED)
        problem(c,
                "log problem: the record at %s%llu claims position %llu (positions not "
                "contiguous)",
                r->end == r->from ? "LMDB's wal_pos " : "", end, (unsigned long long)r->end_claims);
    if (lc->undecodable)
        problem(c,
                "log problem: %llu records (the first at %llu) pass their CRC but their "
                "operations do not decode: the next start cannot replay them",
                (unsigned long long)lc->undecodable, (unsigned long long)lc->first_undecodable);
}

/* Check 6: the shard's log, when it has a wal/ directory. */
static void check_log(struct check *c, const char *path)
{
    if (c->wal_pos_state == WAL_POS_UNREAD)
        return; /* the LMDB part failed, and said so */
    struct log_count lc = {0};
    struct wal_scan_report r;
    int rc = wal_scan(path, c->wal_pos, count_record, &lc, &r);
    if (rc == -ENOENT) {
        if (c->wal_pos_state == WAL_POS_SET)
            fprintf(c->report,
                    "shard %u: log: no wal directory; LMDB's wal_pos is %llu: nothing "
                    "to replay\n",
                    c->shard, (unsigned long long)c->wal_pos);
        wal_scan_free(&r);
        return;
    }
    c->has_log = true;
    if (rc == 0 || r.nsegments > 0)
        print_log_files(c, &r);
    if (rc == 0)
        check_log_files(c, &r);
    if (rc == 0 && r.walked) {
        print_log_walk(c, &r, &lc);
        check_log_walk(c, &r, &lc);
        c->log_records = r.records;
        c->log_ops = r.ops;
    }
    if (rc)
        problem(c, "log problem: cannot read %s/wal: %s", path, strerror(-rc));
    wal_scan_free(&r);
}

/* ---- driver ------------------------------------------------------------------------ */

static int open_dbs(struct check *c)
{
    for (int i = 0; i < DB_N; i++) {
        int rc = mdb_dbi_open(c->txn, db_names[i], 0, &c->dbi[i]);
        if (rc == MDB_NOTFOUND) {
            problem(c, "database %s is missing", db_names[i]);
            return MDB_NOTFOUND;
        }
        if (rc)
            return rc;
    }
    uint64_t format = 0;
    int rc = meta_u64(c, "format", &format);
    if (rc == 0 && format != STORE_FORMAT_VERSION) {
        problem(c, "format version %llu, expected %d", (unsigned long long)format,
                STORE_FORMAT_VERSION);
        return MDB_VERSION_MISMATCH;
    }
    return rc;
}

static int check_txn(struct check *c)
{
    int rc = open_dbs(c);
    if (rc == 0)
        rc = load_payments(c);
    if (rc == 0)
        rc = load_entries(c);
    if (rc == 0)
        rc = load_balances(c);
    if (rc == 0) {
        check_entries(c);
        check_balances(c);
        if (c->sum[0] + c->sum[1] + c->sum[2] != 0)
            problem(c, "the sum of all balances is not zero");
        rc = check_refunds(c);
    }
    if (rc == 0)
        rc = check_outbox(c);
    if (rc == 0)
        rc = check_idem(c);
    if (rc == 0)
        rc = read_wal_pos(c);
    return rc;
}

/* Audits one shard; adds its balance sums to total. Returns 0 or an LMDB error. */
static int check_shard(struct check *c, const char *path)
{
    MDB_env *env = NULL;
    int rc = mdb_env_create(&env);
    if (rc)
        return rc;
    if ((rc = mdb_env_set_maxdbs(env, DB_N)))
        goto out_close_env;
    /* Read-only; MDB_NOLOCK would skip the reader table, but a stopped engine leaves a
     * lock file we may use, and a running one must not be audited anyway. */
    if ((rc = mdb_env_open(env, path, MDB_RDONLY, 0600)))
        goto out_close_env;
    if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &c->txn)))
        goto out_close_env;
    rc = check_txn(c);
    if (rc == MDB_NOTFOUND || rc == MDB_VERSION_MISMATCH)
        rc = 0; /* already reported as a problem */
    mdb_txn_abort(c->txn);
    c->txn = NULL;
out_close_env:
    mdb_env_close(env);
    if (rc == 0)
        check_log(c, path);
    return rc;
}

static void print_i128(FILE *f, __int128 v)
{
    if (v >= INT64_MIN && v <= INT64_MAX)
        fprintf(f, "%lld", (long long)v);
    else
        fprintf(f, "(beyond int64)");
}

int store_check(const char *dir, FILE *report)
{
    ASSERT(dir != NULL && report != NULL);
    char err[STORE_PATH_MAX + 128];
    unsigned nshards = 0;
    int rc = store_manifest_read(dir, &nshards, err, sizeof(err));
    if (rc) {
        fprintf(report, "check: %s\n", err);
        return rc;
    }
    uint64_t problems = 0, pays = 0, entries = 0, events = 0, log_records = 0, log_ops = 0;
    bool logs = false;
    __int128 total[3] = {0, 0, 0};
    for (unsigned i = 0; i < nshards; i++) {
        char path[STORE_PATH_MAX];
        struct check c = {.report = report, .shard = i};
        rc = store_manifest_shard_path(dir, i, path, sizeof(path));
        if (rc == 0)
            rc = check_shard(&c, path);
        if (rc) {
            fprintf(report, "shard %u: cannot read %s: %s\n", i, path, mdb_strerror(rc));
            problems++;
        }
        for (int a = 0; a < 3; a++)
            total[a] += c.sum[a];
        problems += c.problems;
        pays += c.npays;
        entries += c.nentries;
        events += c.events;
        logs |= c.has_log;
        log_records += c.log_records;
        log_ops += c.log_ops;
        free(c.pays);
        free(c.entries);
        free(c.bals);
    }
    if (total[0] + total[1] + total[2] != 0) {
        fprintf(report, "all shards: the sum of all balances is not zero\n");
        problems++;
    }
    fprintf(report,
            "check: %u shards, %llu payments, %llu ledger entries, %llu events; "
            "clearing ",
            nshards, (unsigned long long)pays, (unsigned long long)entries,
            (unsigned long long)events);
    print_i128(report, total[0]);
    fprintf(report, " pending ");
    print_i128(report, total[1]);
    fprintf(report, " available ");
    print_i128(report, total[2]);
    if (logs) /* added for the log mode; the fields before are unchanged */
        fprintf(report, "; log: %llu records, %llu operations to replay",
                (unsigned long long)log_records, (unsigned long long)log_ops);
    if (problems)
        fprintf(report, "; FAILED: %llu problems\n", (unsigned long long)problems);
    else
        fprintf(report, "; OK\n");
    return problems ? 1 : 0;
}
