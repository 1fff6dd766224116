// Benchmarks of the back office's core (engine/csv.h, engine/settle.h,
// store/settle_store.h), over events made by the real engine (tests/store/settle_gen).
//
//   BM_CsvRead              a 1,000,000-line bank statement read in 64 KiB chunks;
//                           items/s = lines per second (bytes/s beside it).
//   BM_EventParse           settle_event_parse of captured events; items/s = events/s.
//   BM_StoreApply/N         settle_store_apply of N new captured events per durable
//                           commit on a real directory (/tmp: real fdatasync);
//                           items/s = events/s that settle can consume (wall time).
//   BM_ReconUpload          a 1,000,000-line statement uploaded into the store (every
//                           line classified against a matching index of 100,000
//                           captures, items and the file committed); items/s = lines/s.
//                           Reports the process's peak RSS growth during the upload, and
//                           that of its anonymous memory alone (LMDB's map excluded).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/resource.h>
#include <vector>

extern "C" {
#include "engine/csv.h"
#include "engine/settle.h"
#include "store/settle_store.h"
#include "tests/store/settle_gen.h"
}

namespace
{

constexpr int64_t kDay = 24LL * 3600 * 1000;
constexpr int64_t kT0 = 1795564800000LL; // 2026-11-25T00:00:00Z

struct Events {
    std::vector<std::string> values; // payment.captured values
    std::vector<std::string> payment_ids;
    Events()
    {
        // 10 engine shards of 10,000 payments each: ids never collide across shards.
        for (uint32_t shard = 0; shard < 10; shard++) {
            settle_gen g;
            settle_gen_init(&g, shard, 10000);
            for (int i = 0; i < 10000; i++) {
                char id[ID_BYTES + 1], m[16];
                std::snprintf(m, sizeof(m), "m-%d", (i * 7 + static_cast<int>(shard)) % 1000);
                int64_t at = kT0 + (static_cast<int64_t>(i) * kDay) / 10000;
                if (settle_gen_authorize(&g, m, i % 3 ? "KRW" : "USD", 1000 + i, at, id) != 201 ||
                    settle_gen_capture(&g, id, 0, at + 1) != 200)
                    std::abort();
                size_t len;
                const char *v = settle_gen_event(&g, settle_gen_events(&g) - 1, &len, nullptr);
                values.emplace_back(v, len);
                payment_ids.emplace_back(id);
            }
            settle_gen_free(&g);
        }
    }
};

const Events &events()
{
    static Events e;
    return e;
}

struct TmpDir {
    std::string path;
    TmpDir()
    {
        char tmpl[] = "/tmp/rp_settle_bench_XXXXXX";
        if (mkdtemp(tmpl) == nullptr)
            std::abort();
        path = tmpl;
    }
    ~TmpDir()
    {
        std::string cmd = "rm -rf '" + path + "'";
        if (std::system(cmd.c_str()) != 0)
            std::fprintf(stderr, "settle_bench: could not remove %s\n", path.c_str());
    }
};

settle_store *open_store(const std::string &dir)
{
    settle_store *s = nullptr;
    char why[256];
    if (settle_store_open(&s, dir.c_str(), nullptr, why, sizeof(why)) != 0) {
        std::fprintf(stderr, "settle_bench: %s\n", why);
        std::abort();
    }
    return s;
}

std::string statement(size_t lines)
{
    const Events &e = events();
    std::string text = RECON_HEADER "\n";
    text.reserve(lines * 48);
    char line[96];
    for (size_t i = 0; i < lines; i++) {
        // mostly payments settle knows (matched), one in ten unknown or mismatched
        const std::string &id = e.payment_ids[i % e.payment_ids.size()];
        if (i % 10 == 9)
            std::snprintf(line, sizeof(line), "bank-%zu,%zu,KRW,2026-11-25\n", i, 1000 + i);
        else
            std::snprintf(line, sizeof(line), "%s,%zu,%s,2026-11-25\n", id.c_str(),
                          1000 + (i % 10000), (i % 10000) % 3 ? "KRW" : "USD");
        text += line;
    }
    return text;
}

int count_line(void *arg, const csv_line *)
{
    ++*static_cast<uint64_t *>(arg);
    return 0;
}

void BM_CsvRead(benchmark::State &state)
{
    static const std::string text = statement(1000000);
    uint64_t lines = 0;
    for (auto _ : state) {
        csv_reader r;
        csv_init(&r);
        for (size_t i = 0; i < text.size(); i += 65536)
            csv_feed(&r, text.data() + i, std::min<size_t>(65536, text.size() - i), count_line,
                     &lines);
        csv_finish(&r, count_line, &lines);
    }
    state.SetItemsProcessed(static_cast<int64_t>(lines));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_CsvRead)->Unit(benchmark::kMillisecond);

void BM_EventParse(benchmark::State &state)
{
    const Events &e = events();
    size_t i = 0;
    settle_event ev;
    char reason[SETTLE_REASON_MAX_BYTES + 1];
    for (auto _ : state) {
        const std::string &v = e.values[i++ % e.values.size()];
        if (settle_event_parse("payment.captured", 16, v.data(), v.size(), &ev, reason) != 0)
            std::abort();
        benchmark::DoNotOptimize(ev.amount);
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_EventParse);

void BM_StoreApply(benchmark::State &state)
{
    const Events &e = events();
    const size_t n = static_cast<size_t>(state.range(0));
    TmpDir dir;
    settle_store *s = open_store(dir.path);
    settle_calendar cal;
    settle_calendar_init(&cal, settle_offset_utc, nullptr, 0, 600000);
    std::vector<settle_msg> msgs(n);
    size_t next = 0;
    for (auto _ : state) {
        for (size_t k = 0; k < n; k++, next++) {
            const std::string &v = e.values[next % e.values.size()];
            msgs[k] = settle_msg{};
            msgs[k].topic = "payment.captured";
            msgs[k].topic_len = 16;
            msgs[k].partition = 0;
            msgs[k].offset = static_cast<int64_t>(next);
            msgs[k].value = v.data();
            msgs[k].value_len = v.size();
        }
        if (settle_store_apply(s, &cal, msgs.data(), n, kT0 + kDay / 2) != 0)
            std::abort();
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
    settle_store_close(s);
}
// Fresh events only (100,000 of them): iterations * N stays within that.
BENCHMARK(BM_StoreApply)->Arg(1)->Iterations(300)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StoreApply)->Arg(64)->Iterations(300)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StoreApply)->Arg(512)->Iterations(150)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StoreApply)->Arg(4096)->Iterations(24)->UseRealTime()->Unit(benchmark::kMicrosecond);

long max_rss_kib()
{
    rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

// Anonymous resident memory (heap, stacks), without the pages of LMDB's file mapping
// that reads touched (clean, file-backed, reclaimable).
long rss_anon_kib()
{
    FILE *f = std::fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && std::fgets(line, sizeof(line), f))
        if (std::sscanf(line, "RssAnon: %ld kB", &kib) == 1)
            break;
    if (f)
        std::fclose(f);
    return kib;
}

void BM_ReconUpload(benchmark::State &state)
{
    const Events &e = events();
    const std::string text = statement(1000000);
    TmpDir dir;
    settle_store *s = open_store(dir.path);
    settle_calendar cal;
    settle_calendar_init(&cal, settle_offset_utc, nullptr, 0, 600000);
    // the matching index: every event consumed, 4096 a commit
    std::vector<settle_msg> msgs(4096);
    for (size_t i = 0; i < e.values.size();) {
        size_t n = 0;
        for (; n < msgs.size() && i < e.values.size(); n++, i++) {
            msgs[n] = settle_msg{};
            msgs[n].topic = "payment.captured";
            msgs[n].topic_len = 16;
            msgs[n].offset = static_cast<int64_t>(i);
            msgs[n].value = e.values[i].data();
            msgs[n].value_len = e.values[i].size();
        }
        if (settle_store_apply(s, &cal, msgs.data(), n, kT0 + kDay / 2) != 0)
            std::abort();
    }
    long before = max_rss_kib(), anon_before = rss_anon_kib(), anon_peak = 0;
    recon_summary sum{};
    for (auto _ : state) {
        settle_recon *r;
        if (settle_recon_begin(s, kT0 + kDay, &r) != 0)
            std::abort();
        for (size_t i = 0; i < text.size(); i += 65536) {
            if (settle_recon_feed(r, text.data() + i, std::min<size_t>(65536, text.size() - i)))
                std::abort();
            if (i % (64 * 65536) == 0)
                anon_peak = std::max(anon_peak, rss_anon_kib());
        }
        if (settle_recon_finish(r, &sum) != 0)
            std::abort();
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * sum.lines));
    state.counters["matched"] = static_cast<double>(sum.counts[RECON_MATCHED]);
    state.counters["rss_growth_MiB"] = static_cast<double>(max_rss_kib() - before) / 1024.0;
    state.counters["anon_growth_MiB"] = static_cast<double>(anon_peak - anon_before) / 1024.0;
    settle_store_close(s);
}
BENCHMARK(BM_ReconUpload)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
