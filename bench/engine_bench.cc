// Microbenchmarks of the pure domain: the codec alone, and one authorize through
// api_decode + engine_apply on the in-memory store (tests/engine/mem_store.h), which
// is the CPU cost per request a shard pays before LMDB. Run:
//   ./build/bench/engine_bench --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>

#include "engine/api.h"
#include "engine/apply.h"
#include "tests/engine/mem_store.h"

namespace
{

constexpr uint32_t kShards = 2;
constexpr size_t kStoreRows = 1 << 16;
constexpr int64_t kNow = 1795600800123LL;
const char kBody[] = "{\"merchant_id\":\"m-1\",\"amount\":15000,\"currency\":\"KRW\","
                     "\"reference\":\"order-77\"}";

engine_span Span(const char *s, size_t n)
{
    return engine_span{s, n};
}

api_request Request(const char *key, size_t key_len)
{
    api_request r{};
    r.method = Span("POST", 4);
    r.path = Span("/v1/payments/authorize", 22);
    r.query = Span(nullptr, 0);
    r.body = Span(kBody, sizeof(kBody) - 1);
    r.idem_key = Span(key, key_len);
    r.auth_merchant = Span("m-1", 3);
    r.request_id = Span("req-1", 5);
    return r;
}

void BM_DecodeAuthorize(benchmark::State &state)
{
    api_request r = Request("key-1", 5);
    op o;
    api_error err;
    for (auto _ : state) {
        int rc = api_decode(&r, kShards, &o, &err);
        benchmark::DoNotOptimize(rc);
        benchmark::DoNotOptimize(o);
    }
}
BENCHMARK(BM_DecodeAuthorize);

void BM_RenderPayment(benchmark::State &state)
{
    payment p{};
    std::strcpy(p.id, "pay_00000000000000002a");
    std::strcpy(p.merchant_id, "m-1");
    p.merchant_id_len = 3;
    std::strcpy(p.currency, "KRW");
    p.status = PAYMENT_AUTHORIZED;
    p.amount = 15000;
    p.has_reference = true;
    std::strcpy(p.reference, "order-77");
    p.reference_len = 8;
    p.created_at_ms = p.updated_at_ms = kNow;
    static char buf[ENGINE_ANSWER_MAX_BYTES];
    for (auto _ : state) {
        jw w;
        jw_init(&w, buf, sizeof(buf));
        int rc = api_render_payment(&w, &p);
        benchmark::DoNotOptimize(rc);
        benchmark::DoNotOptimize(buf);
    }
}
BENCHMARK(BM_RenderPayment);

// A new payment per iteration (a fresh Idempotency-Key each time): decode, idempotency
// lookup, currency check, ids, payment, posting, event, answer, idempotency record.
void BM_Authorize(benchmark::State &state)
{
    static mem_store m;
    if (mem_store_init(&m, kStoreRows, size_t{kStoreRows} * 1536) != 0) {
        state.SkipWithError("mem_store_init");
        return;
    }
    static char body[ENGINE_ANSWER_MAX_BYTES];
    uint64_t n = 0;
    size_t used = 0;
    for (auto _ : state) {
        if (used == kStoreRows / 2) { // keep the tables half full at most
            state.PauseTiming();
            mem_store_reset(&m);
            used = 0;
            state.ResumeTiming();
        }
        char key[24];
        int klen = std::snprintf(key, sizeof(key), "k-%llu", (unsigned long long)n++);
        api_request r = Request(key, (size_t)klen);
        op o;
        api_error err;
        if (api_decode(&r, kShards, &o, &err) != 0) {
            state.SkipWithError("decode");
            break;
        }
        answer a{};
        a.body = body;
        a.cap = sizeof(body);
        if (engine_apply(&mem_store_ops, &m, &o, kNow, &a) != 0 || a.status != 201) {
            state.SkipWithError("apply");
            break;
        }
        used++;
    }
    state.SetItemsProcessed(state.iterations());
    mem_store_free(&m);
}
BENCHMARK(BM_Authorize);

// The same request again: an idempotent replay (lookup, fingerprint compare, copy).
void BM_AuthorizeReplay(benchmark::State &state)
{
    static mem_store m;
    if (mem_store_init(&m, 1024, 1 << 20) != 0) {
        state.SkipWithError("mem_store_init");
        return;
    }
    static char body[ENGINE_ANSWER_MAX_BYTES];
    api_request r = Request("same-key", 8);
    op o;
    api_error err;
    if (api_decode(&r, kShards, &o, &err) != 0) {
        state.SkipWithError("decode");
        return;
    }
    answer a{};
    a.body = body;
    a.cap = sizeof(body);
    engine_apply(&mem_store_ops, &m, &o, kNow, &a);
    for (auto _ : state) {
        api_decode(&r, kShards, &o, &err);
        a = answer{};
        a.body = body;
        a.cap = sizeof(body);
        int rc = engine_apply(&mem_store_ops, &m, &o, kNow, &a);
        if (rc != 0 || !a.replayed) {
            state.SkipWithError("replay");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations());
    mem_store_free(&m);
}
BENCHMARK(BM_AuthorizeReplay);

} // namespace

BENCHMARK_MAIN();
