// Microbenchmark of net/http.c: a realistic signed payment POST (~300 bytes with its
// body) and a minimal health check GET, parsed whole from one buffer as a connection
// does when a request arrives in one read. Reports bytes/s and requests/s.
// The dribbled case (one read per 16 bytes) shows the cost of resuming a parse.
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>

// engine/limits.h checks its numbers with C11 _Static_assert, which C++ spells
// static_assert.
#if !defined(_Static_assert)
#define _Static_assert static_assert
#endif
#include "net/http.h"

namespace
{

const std::string kBody = "{\"merchant_id\":\"m_42\",\"amount\":1999,\"currency\":\"EUR\"}";

std::string PostRequest()
{
    return "POST /v1/payments/authorize HTTP/1.1\r\n"
           "Host: 127.0.0.1:8080\r\n"
           "Content-Type: application/json\r\n"
           "Content-Length: " +
           std::to_string(kBody.size()) +
           "\r\n"
           "Idempotency-Key: 5b1f0c1e-2f7a-4a53-9c7e-0d9f6c1b2a10\r\n"
           "X-Ringpay-Key: pk_live_7Hq2\r\n"
           "X-Ringpay-Timestamp: 1718000000\r\n"
           "X-Ringpay-Signature: "
           "3f9a1c0e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19\r\n"
           "\r\n" +
           kBody;
}

const std::string kGet = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

void ParseWhole(benchmark::State &state, const std::string &text)
{
    std::string buf = text;
    struct http_parser p;
    struct http_request req;
    for (auto _ : state) {
        http_parser_init(&p);
        int rc = http_parse(&p, buf.data(), buf.size(), &req);
        if (rc != HTTP_PARSE_DONE || req.wire_bytes != buf.size()) {
            state.SkipWithError("parse failed");
            break;
        }
        benchmark::DoNotOptimize(req);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(buf.size()));
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.counters["request_bytes"] = double(buf.size());
}

void BM_ParsePost(benchmark::State &state)
{
    ParseWhole(state, PostRequest());
}

void BM_ParseGetHealthz(benchmark::State &state)
{
    ParseWhole(state, kGet);
}

void BM_ParsePostIn16ByteReads(benchmark::State &state)
{
    std::string buf = PostRequest();
    struct http_parser p;
    struct http_request req;
    for (auto _ : state) {
        http_parser_init(&p);
        int rc = HTTP_PARSE_AGAIN;
        for (size_t len = 16; rc == HTTP_PARSE_AGAIN; len += 16)
            rc = http_parse(&p, buf.data(), len < buf.size() ? len : buf.size(), &req);
        if (rc != HTTP_PARSE_DONE) {
            state.SkipWithError("parse failed");
            break;
        }
        benchmark::DoNotOptimize(req);
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(buf.size()));
    state.SetItemsProcessed(int64_t(state.iterations()));
}

} // namespace

BENCHMARK(BM_ParsePost);
BENCHMARK(BM_ParseGetHealthz);
BENCHMARK(BM_ParsePostIn16ByteReads);
BENCHMARK_MAIN();
