// Group-commit benchmarks of the LMDB shard store (store/shard_store.h), on a real
// directory under /tmp, so every commit pays a real fdatasync/fsync.
//
//   BM_AuthorizeBatch/N  one shard_store_apply_batch of N authorizations (distinct
//                        idempotency keys, 16 merchants of one shard), committed
//                        durably; items/s = authorizations per second.
//   BM_DurableCommit     the smallest durable LMDB commit the store makes (one meta
//                        value: the replicated mark); its time is the floor of the
//                        latency of a batch of one.
//   BM_LogBatch/N        the same N authorizations in the write-ahead log mode
//                        (issue 10): applied to the overlay, appended to the log as
//                        records, written and fdatasynced by the log's syncer, and timed
//                        until the log's durable position covers them; checkpoints run
//                        meanwhile on their own thread, as in the engine.
//   BM_OverlayGet/N      a lookup in one overlay layer the engine's size (256 MiB,
//                        2^21 slots) holding N entries, alternating hits and misses at
//                        random keys: the memory cost of the read path (a slot and an
//                        entry, each a likely cache and TLB miss).
//   BM_LogRecord/N       the CPU part alone: encoding N authorizations into one log
//                        record (store/walrec.h) with its CRC-32C.
//
// Operations are decoded once outside the timed loop (decoding is the reactor's
// work); each iteration only rewrites the idempotency key.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <poll.h>

extern "C" {
#include "engine/api.h"
#include "store/manifest.h"
#include "store/overlay.h"
#include "store/shard_store.h"
#include "store/walrec.h"
}

namespace
{

struct bench_dir {
    std::string path;
    bench_dir()
    {
        char tmpl[] = "/tmp/rp_store_bench_XXXXXX";
        if (mkdtemp(tmpl) == nullptr)
            std::abort();
        path = tmpl;
        char err[256];
        if (store_manifest_open(path.c_str(), 1, err, sizeof(err)) != 0)
            std::abort();
    }
    ~bench_dir()
    {
        std::string cmd = "rm -rf '" + path + "'";
        if (std::system(cmd.c_str()) != 0)
            std::fprintf(stderr, "store_bench: could not remove %s\n", path.c_str());
    }
};

struct prepared {
    std::vector<std::string> bodies;
    std::vector<op> ops;
    std::vector<std::vector<char>> answers;
    std::vector<batch_item> items;
};

engine_span span_of(const std::string &s)
{
    return engine_span{s.data(), s.size()};
}

void prepare(prepared &p, size_t n)
{
    static const std::string method = "POST", path = "/v1/payments/authorize";
    p.bodies.resize(n);
    p.ops.resize(n);
    p.answers.assign(n, std::vector<char>(ENGINE_ANSWER_MAX_BYTES));
    p.items.resize(n);
    for (size_t i = 0; i < n; i++) {
        p.bodies[i] = "{\"merchant_id\":\"m-" + std::to_string(i % 16) +
                      "\",\"amount\":1500,\"currency\":\"KRW\"}";
        api_request q{};
        q.method = span_of(method);
        q.path = span_of(path);
        q.body = span_of(p.bodies[i]);
        q.idem_key = engine_span{"k", 1};
        api_error err;
        if (api_decode(&q, 1, &p.ops[i], &err) != 0)
            std::abort();
    }
}

// Gives every operation a key never used before, so nothing is an idempotent replay.
void rekey(prepared &p, uint64_t round)
{
    for (size_t i = 0; i < p.ops.size(); i++) {
        op &o = p.ops[i];
        int len = std::snprintf(o.idem_key, sizeof(o.idem_key), "k-%llu-%zu",
                                (unsigned long long)round, i);
        o.idem_key_len = static_cast<uint16_t>(len);
        p.items[i] = batch_item{};
        p.items[i].op = &o;
        p.items[i].answer.body = p.answers[i].data();
        p.items[i].answer.cap = p.answers[i].size();
    }
}

void BM_AuthorizeBatch(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    bench_dir dir;
    shard_store *s = nullptr;
    if (shard_store_open(&s, dir.path.c_str(), 0, nullptr) != 0)
        std::abort();
    prepared p;
    prepare(p, n);
    uint64_t round = 0;
    for (auto _ : state) {
        state.PauseTiming();
        rekey(p, round++);
        state.ResumeTiming();
        int rc = shard_store_apply_batch(s, p.items.data(), n, 1764064800123LL);
        if (rc != 0 || p.items[n - 1].answer.status != 201) {
            state.SkipWithError("batch failed");
            break;
        }
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
    shard_store_close(s);
}
BENCHMARK(BM_AuthorizeBatch)
    ->Arg(1)
    ->Arg(16)
    ->Arg(256)
    ->Arg(4096)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

void BM_DurableCommit(benchmark::State &state)
{
    bench_dir dir;
    shard_store *s = nullptr;
    if (shard_store_open(&s, dir.path.c_str(), 0, nullptr) != 0)
        std::abort();
    uint64_t mark = 0;
    for (auto _ : state) {
        shard_store_set_replicated(s, ++mark);
        if (shard_store_apply_batch(s, nullptr, 0, 1764064800123LL) != 0) {
            state.SkipWithError("commit failed");
            break;
        }
    }
    shard_store_close(s);
}
BENCHMARK(BM_DurableCommit)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_LogBatch(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    bench_dir dir;
    shard_store_options opt{};
    opt.wal = 1;
    opt.wal_segment_bytes = (size_t)64 << 20;
    opt.overlay_bytes = (size_t)256 << 20;
    shard_store *s = nullptr;
    if (shard_store_open(&s, dir.path.c_str(), 0, &opt) != 0)
        std::abort();
    prepared p;
    prepare(p, n);
    uint64_t round = 0;
    for (auto _ : state) {
        state.PauseTiming();
        rekey(p, round++);
        while (!shard_store_ready(s)) { // a checkpoint holds both layers: not timed
            pollfd pf{shard_store_event_fd(s), POLLIN, 0};
            poll(&pf, 1, 1);
            shard_store_poll(s);
        }
        state.ResumeTiming();
        int rc = shard_store_apply_batch(s, p.items.data(), n, 1764064800123LL);
        shard_store_kick(s);
        uint64_t want = shard_store_written(s);
        while (rc == 0 && shard_store_durable(s) < want) {
            pollfd pf{shard_store_event_fd(s), POLLIN, 0};
            poll(&pf, 1, 100);
            rc = shard_store_poll(s);
        }
        if (rc != 0 || p.items[n - 1].answer.status != 201) {
            state.SkipWithError("batch failed");
            break;
        }
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
    shard_store_close(s);
}
BENCHMARK(BM_LogBatch)
    ->Arg(1)
    ->Arg(16)
    ->Arg(256)
    ->Arg(4096)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

void BM_LogRecord(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    prepared p;
    prepare(p, n);
    rekey(p, 1);
    std::vector<uint8_t> buf(WALREC_MAX_BYTES);
    size_t bytes = 0;
    for (auto _ : state) {
        walrec_writer w;
        walrec_begin(&w, buf.data(), buf.size());
        for (size_t i = 0; i < n; i++)
            if (walrec_add(&w, &p.ops[i]) != 0)
                std::abort();
        bytes = walrec_finish(&w, 4096, 1764064800123LL, 0, 1);
        benchmark::DoNotOptimize(buf.data());
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
    state.counters["record_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_LogRecord)->Arg(1)->Arg(16)->Arg(256);

void BM_OverlayGet(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    overlay o;
    if (overlay_init(&o, (size_t)256 << 20, (size_t)1 << 21) != 0)
        std::abort();
    uint8_t key[40] = {0};
    auto make_key = [&](uint64_t i) {
        uint64_t x = i * 0x9e3779b97f4a7c15ull;
        std::memcpy(key, &x, sizeof(x));
        std::memcpy(key + 32, &i, sizeof(i));
    };
    for (size_t i = 0; i < n; i++) {
        make_key(i);
        overlay_save(&o); /* the undo log holds one operation's changes */
        uint8_t *val;
        if (overlay_put(&o, 1, key, sizeof(key), 100, &val) != 0)
            std::abort();
        std::memset(val, (int)i, 100);
    }
    uint64_t r = 88172645463325252ull, found = 0;
    for (auto _ : state) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        make_key(r % (2 * n)); /* half of them were never put */
        const uint8_t *v;
        size_t vl;
        found += overlay_get(&o, 1, key, sizeof(key), &v, &vl) == 0;
    }
    benchmark::DoNotOptimize(found);
    overlay_fini(&o);
}
BENCHMARK(BM_OverlayGet)->Arg(1 << 12)->Arg(1 << 18)->Arg(1 << 20);

} // namespace

BENCHMARK_MAIN();
