/*
 * In-memory engine_store for tests and benchmarks (mem_store.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/ids.h"
#include "tests/engine/mem_store.h"

int mem_store_init(struct mem_store *m, size_t cap, size_t arena_bytes)
{
    memset(m, 0, sizeof(*m));
    m->cap = cap;
    m->payments = calloc(cap, sizeof(*m->payments));
    m->pay_index = calloc(2 * cap, sizeof(*m->pay_index));
    m->refunds = calloc(cap, sizeof(*m->refunds));
    m->idem = calloc(cap, sizeof(*m->idem));
    m->idem_index = calloc(2 * cap, sizeof(*m->idem_index));
    m->entries = calloc(2 * cap, sizeof(*m->entries));
    m->balances = calloc(cap, sizeof(*m->balances));
    m->events = calloc(cap, sizeof(*m->events));
    m->arena = malloc(arena_bytes);
    m->arena_cap = arena_bytes;
    m->fail_errno = -EIO;
    if (!m->payments || !m->pay_index || !m->refunds || !m->idem || !m->idem_index || !m->entries ||
        !m->balances || !m->events || !m->arena) {
        mem_store_free(m);
        return -ENOMEM;
    }
    return 0;
}

void mem_store_reset(struct mem_store *m)
{
    memset(m->pay_index, 0, 2 * m->cap * sizeof(*m->pay_index));
    memset(m->idem_index, 0, 2 * m->cap * sizeof(*m->idem_index));
    m->npayments = m->nrefunds = m->nidem = m->nentries = m->nbalances = m->nevents = 0;
    m->arena_len = 0;
    memset(m->seq, 0, sizeof(m->seq));
    m->ledger_seq = 0;
    m->writes = 0;
}

void mem_store_free(struct mem_store *m)
{
    free(m->payments);
    free(m->pay_index);
    free(m->refunds);
    free(m->idem);
    free(m->idem_index);
    free(m->entries);
    free(m->balances);
    free(m->events);
    free(m->arena);
    memset(m, 0, sizeof(*m));
}

static int write_gate(struct mem_store *m)
{
    m->writes++;
    if (m->fail_write_at != 0 &&
        (m->writes == m->fail_write_at || (m->fail_persist && m->writes > m->fail_write_at)))
        return m->fail_errno;
    return 0;
}

static size_t arena_put(struct mem_store *m, const char *p, size_t n)
{
    ASSERT(m->arena_len + n <= m->arena_cap);
    size_t off = m->arena_len;
    if (n > 0)
        memcpy(m->arena + off, p, n);
    m->arena_len += n;
    return off;
}

/* Slot of id in pay_index (the matching one, or the empty one where it goes). */
static size_t pay_slot(const struct mem_store *m, const char *id, size_t len)
{
    size_t slots = 2 * m->cap, i = engine_merchant_hash(id, len) % slots;
    for (;;) {
        uint32_t r = m->pay_index[i];
        if (r == 0 || (len == ID_BYTES && memcmp(m->payments[r - 1].id, id, ID_BYTES) == 0))
            return i;
        i = (i + 1) % slots;
    }
}

static int payment_get(void *ctx, const char *id, size_t len, struct payment *out)
{
    struct mem_store *m = ctx;
    uint32_t r = m->pay_index[pay_slot(m, id, len)];
    if (r == 0)
        return -ENOENT;
    *out = m->payments[r - 1];
    return 0;
}

static int payment_put(void *ctx, const struct payment *p)
{
    struct mem_store *m = ctx;
    int rc = write_gate(m);
    if (rc)
        return rc;
    size_t slot = pay_slot(m, p->id, ID_BYTES);
    if (m->pay_index[slot] == 0) {
        if (m->npayments == m->cap)
            return -ENOSPC;
        m->pay_index[slot] = (uint32_t)++m->npayments;
    }
    m->payments[m->pay_index[slot] - 1] = *p;
    return 0;
}

static int refund_put(void *ctx, const struct refund *r)
{
    struct mem_store *m = ctx;
    int rc = write_gate(m);
    if (rc)
        return rc;
    if (m->nrefunds == m->cap)
        return -ENOSPC;
    m->refunds[m->nrefunds++] = *r;
    return 0;
}

static int next_sequence(void *ctx, enum engine_seq which, uint64_t *out)
{
    struct mem_store *m = ctx;
    int rc = write_gate(m);
    if (rc)
        return rc;
    ASSERT(which >= ENGINE_SEQ_PAYMENT && which <= ENGINE_SEQ_EVENT);
    *out = ++m->seq[which];
    return 0;
}

static uint64_t idem_hash(const char *merchant, size_t mlen, const char *key, size_t klen)
{
    return engine_merchant_hash(merchant, mlen) * 31 ^ engine_merchant_hash(key, klen);
}

/* Slot of (merchant, key) in idem_index: the matching one or the empty one. */
static size_t idem_slot(const struct mem_store *m, const char *merchant, size_t mlen,
                        const char *key, size_t klen)
{
    size_t slots = 2 * m->cap, i = idem_hash(merchant, mlen, key, klen) % slots;
    for (;;) {
        uint32_t r = m->idem_index[i];
        if (r == 0)
            return i;
        const struct mem_idem *x = &m->idem[r - 1];
        if (strlen(x->merchant) == mlen && memcmp(x->merchant, merchant, mlen) == 0 &&
            x->key_len == klen && memcmp(x->key, key, klen) == 0)
            return i;
        i = (i + 1) % slots;
    }
}

static struct mem_idem *idem_find(struct mem_store *m, const char *merchant, size_t mlen,
                                  const char *key, size_t klen)
{
    uint32_t r = m->idem_index[idem_slot(m, merchant, mlen, key, klen)];
    return r ? &m->idem[r - 1] : NULL;
}

static int idem_get(void *ctx, const char *merchant, size_t mlen, const char *key, size_t klen,
                    struct idem_record *out)
{
    struct mem_store *m = ctx;
    const struct mem_idem *r = idem_find(m, merchant, mlen, key, klen);
    if (r == NULL)
        return -ENOENT;
    for (int i = 0; i < IDEM_FP_PARTS; i++) {
        out->fp[i].ptr = m->arena + r->fp_off[i];
        out->fp[i].len = r->fp_len[i];
    }
    out->status = r->status;
    out->body.ptr = m->arena + r->body_off;
    out->body.len = r->body_len;
    out->created_at_ms = r->created_at_ms;
    return 0;
}

static int idem_put(void *ctx, const char *merchant, size_t mlen, const char *key, size_t klen,
                    const struct idem_record *rec)
{
    struct mem_store *m = ctx;
    int rc = write_gate(m);
    if (rc)
        return rc;
    ASSERT(idem_find(m, merchant, mlen, key, klen) == NULL); /* the engine checked first */
    ASSERT(mlen >= 1 && mlen <= MERCHANT_ID_MAX_BYTES && klen <= IDEMPOTENCY_KEY_MAX_BYTES);
    if (m->nidem == m->cap)
        return -ENOSPC;
    m->idem_index[idem_slot(m, merchant, mlen, key, klen)] = (uint32_t)(m->nidem + 1);
    struct mem_idem *r = &m->idem[m->nidem++];
    memset(r, 0, sizeof(*r));
    memcpy(r->merchant, merchant, mlen);
    memcpy(r->key, key, klen);
    r->key_len = klen;
    for (int i = 0; i < IDEM_FP_PARTS; i++) {
        r->fp_off[i] = arena_put(m, rec->fp[i].ptr, rec->fp[i].len);
        r->fp_len[i] = rec->fp[i].len;
    }
    r->body_off = arena_put(m, rec->body.ptr, rec->body.len);
    r->body_len = rec->body.len;
    r->status = rec->status;
    r->created_at_ms = rec->created_at_ms;
    return 0;
}

static struct mem_balance *balance_find(struct mem_store *m, const char *merchant, size_t mlen,
                                        const char *currency)
{
    for (size_t i = 0; i < m->nbalances; i++) {
        struct mem_balance *b = &m->balances[i];
        if (strlen(b->merchant) == mlen && memcmp(b->merchant, merchant, mlen) == 0 &&
            memcmp(b->b.currency, currency, CURRENCY_BYTES) == 0)
            return b;
    }
    return NULL;
}

static int posting_add(void *ctx, const struct posting *p, int64_t now_ms, uint64_t *seq)
{
    struct mem_store *m = ctx;
    int rc = write_gate(m);
    if (rc)
        return rc;
    ledger_posting_check(p);
    struct mem_balance *b = balance_find(m, p->merchant_id, p->merchant_id_len, p->currency);
    if (b == NULL) {
        if (m->nbalances == m->cap)
            return -ENOSPC;
        b = &m->balances[m->nbalances++];
        memset(b, 0, sizeof(*b));
        memcpy(b->merchant, p->merchant_id, p->merchant_id_len);
        memcpy(b->b.currency, p->currency, CURRENCY_BYTES + 1);
    }
    if (m->nentries == 2 * m->cap)
        return -ENOSPC;
    rc = ledger_balance_apply(&b->b, p);
    if (rc)
        return rc;
    struct mem_entry *e = &m->entries[m->nentries++];
    memset(e, 0, sizeof(*e));
    memcpy(e->merchant, p->merchant_id, p->merchant_id_len);
    e->e.seq = ++m->ledger_seq;
    memcpy(e->e.payment_id, p->payment_id, ID_BYTES + 1);
    memcpy(e->e.currency, p->currency, CURRENCY_BYTES + 1);
    e->e.debit = p->debit;
    e->e.credit = p->credit;
    e->e.amount = p->amount;
    e->e.created_at_ms = now_ms;
    if (seq != NULL)
        *seq = e->e.seq;
    return 0;
}

static int balance_get(void *ctx, const char *merchant, size_t mlen, const char *currency,
                       struct balance *out)
{
    struct mem_balance *b = balance_find(ctx, merchant, mlen, currency);
    if (b == NULL)
        return -ENOENT;
    *out = b->b;
    return 0;
}

static int balance_list(void *ctx, const char *merchant, size_t mlen, engine_balance_fn fn,
                        void *arg)
{
    struct mem_store *m = ctx;
    const struct balance *sorted[256];
    size_t n = 0;
    for (size_t i = 0; i < m->nbalances && n < ARRAY_LEN(sorted); i++) {
        const struct mem_balance *b = &m->balances[i];
        if (strlen(b->merchant) != mlen || memcmp(b->merchant, merchant, mlen) != 0)
            continue;
        size_t j = n++;
        for (; j > 0 && memcmp(sorted[j - 1]->currency, b->b.currency, CURRENCY_BYTES) > 0; j--)
            sorted[j] = sorted[j - 1];
        sorted[j] = &b->b;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = fn(arg, sorted[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int ledger_page(void *ctx, const char *merchant, size_t mlen, uint64_t after, uint32_t limit,
                       engine_entry_fn fn, void *arg, bool *more)
{
    struct mem_store *m = ctx;
    uint32_t n = 0;
    *more = false;
    for (size_t i = 0; i < m->nentries; i++) {
        const struct mem_entry *e = &m->entries[i];
        if (e->e.seq <= after || strlen(e->merchant) != mlen ||
            memcmp(e->merchant, merchant, mlen) != 0)
            continue;
        if (n == limit) {
            *more = true;
            break;
        }
        n++;
        int rc = fn(arg, &e->e);
        if (rc)
            return rc;
    }
    return 0;
}

static int event_append(void *ctx, const struct engine_event *ev)
{
    struct mem_store *m = ctx;
    int rc = write_gate(m);
    if (rc)
        return rc;
    ASSERT(ev->seq == m->seq[ENGINE_SEQ_EVENT]); /* the id just handed out */
    if (m->nevents == m->cap)
        return -ENOSPC;
    struct mem_event *e = &m->events[m->nevents++];
    memset(e, 0, sizeof(*e));
    e->seq = ev->seq;
    ASSERT(strlen(ev->topic) < sizeof(e->topic));
    strcpy(e->topic, ev->topic);
    memcpy(e->key, ev->key.ptr, ev->key.len);
    e->value_off = arena_put(m, ev->value.ptr, ev->value.len);
    e->value_len = ev->value.len;
    return 0;
}

const struct engine_store mem_store_ops = {
    .payment_get = payment_get,
    .payment_put = payment_put,
    .refund_put = refund_put,
    .next_sequence = next_sequence,
    .idem_get = idem_get,
    .idem_put = idem_put,
    .posting_add = posting_add,
    .balance_get = balance_get,
    .balance_list = balance_list,
    .ledger_page = ledger_page,
    .event_append = event_append,
};

const struct payment *mem_store_payment(const struct mem_store *m, const char *id)
{
    uint32_t r = m->pay_index[pay_slot(m, id, strlen(id))];
    return r ? &m->payments[r - 1] : NULL;
}

const struct balance *mem_store_balance(const struct mem_store *m, const char *merchant,
                                        const char *currency)
{
    const struct mem_balance *b =
        balance_find((struct mem_store *)m, merchant, strlen(merchant), currency);
    return b ? &b->b : NULL;
}

const char *mem_store_event_value(const struct mem_store *m, size_t i, size_t *len)
{
    ASSERT(i < m->nevents);
    *len = m->events[i].value_len;
    return m->arena + m->events[i].value_off;
}
