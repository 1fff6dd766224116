// Microbenchmarks of request verification (engine/sign.h): ns per sign_verify of a
// typical authorize (an 80-byte body), and how the body's SHA-256 grows it up to the
// 64 KiB body limit. For comparison, OpenSSL 3's one-shot HMAC() over the same string
// to sign, which allocates on every call (why sign.c prepares keys itself). Run:
//   ./build/bench/sign_bench --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>
#include <string>

#include "engine/sign.h"

namespace
{

const char kSecret[] = "rps_5793934f87138344251d3c564a4c0bed74dc6167272ab13240403af21e652653";
const char kTs[] = "1795600800";
constexpr int64_t kNow = 1795600800;
const char kTarget[] = "/v1/payments/authorize";
const char kIdem[] = "order-77-auth";
const char kBody[] = "{\"merchant_id\":\"m-1\",\"amount\":15000,\"currency\":\"KRW\","
                     "\"reference\":\"order-77\"}";

sign_request Request(const std::string &body)
{
    sign_request r{};
    r.timestamp = kTs;
    r.timestamp_len = sizeof(kTs) - 1;
    r.method = "POST";
    r.method_len = 4;
    r.target = kTarget;
    r.target_len = sizeof(kTarget) - 1;
    r.idempotency_key = kIdem;
    r.idempotency_key_len = sizeof(kIdem) - 1;
    r.body = body.data();
    r.body_len = body.size();
    return r;
}

std::string Body(int64_t len)
{
    if (len == 0)
        return std::string(kBody);
    return std::string(static_cast<size_t>(len), 'x');
}

// Arg: body bytes; 0 = the typical authorize body (80 bytes).
void BM_Verify(benchmark::State &state)
{
    sign_key key;
    sign_key_init(&key, kSecret, sizeof(kSecret) - 1);
    std::string body = Body(state.range(0));
    sign_request r = Request(body);
    char sig[AUTH_SIGNATURE_BYTES];
    sign_compute(&key, &r, sig);
    for (auto _ : state) {
        sign_result rc = sign_verify(&key, &r, sig, sizeof(sig), kNow);
        if (rc != SIGN_OK)
            state.SkipWithError("verification failed");
        benchmark::DoNotOptimize(rc);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                            static_cast<int64_t>(body.size()));
}
BENCHMARK(BM_Verify)->Arg(0)->Arg(1024)->Arg(64 * 1024);

// A wrong signature costs the same work as a right one (the MAC is always computed).
void BM_VerifyWrongSignature(benchmark::State &state)
{
    sign_key key;
    sign_key_init(&key, kSecret, sizeof(kSecret) - 1);
    std::string body = Body(0);
    sign_request r = Request(body);
    char sig[AUTH_SIGNATURE_BYTES];
    sign_compute(&key, &r, sig);
    sig[AUTH_SIGNATURE_BYTES - 1] = sig[AUTH_SIGNATURE_BYTES - 1] == '0' ? '1' : '0';
    for (auto _ : state) {
        sign_result rc = sign_verify(&key, &r, sig, sizeof(sig), kNow);
        benchmark::DoNotOptimize(rc);
    }
}
BENCHMARK(BM_VerifyWrongSignature);

// Preparing a key (once per key at load time, not per request).
void BM_KeyInit(benchmark::State &state)
{
    sign_key key;
    for (auto _ : state) {
        sign_key_init(&key, kSecret, sizeof(kSecret) - 1);
        benchmark::DoNotOptimize(key);
    }
}
BENCHMARK(BM_KeyInit);

// OpenSSL 3's HMAC() over the same string to sign, plus the body hash: the cost of not
// preparing the key, and of the allocations HMAC() makes per call.
void BM_OpenSslHmacOneShot(benchmark::State &state)
{
    std::string body = Body(0);
    sign_request r = Request(body);
    char s[512];
    int n = sign_string(&r, s, sizeof(s));
    unsigned char mac[32];
    unsigned int mac_len = 0;
    for (auto _ : state) {
        char hex[SIGN_HEX_BYTES];
        sign_sha256_hex(body.data(), body.size(), hex);
        benchmark::DoNotOptimize(hex);
        HMAC(EVP_sha256(), kSecret, sizeof(kSecret) - 1, reinterpret_cast<unsigned char *>(s),
             static_cast<size_t>(n), mac, &mac_len);
        benchmark::DoNotOptimize(mac);
    }
}
BENCHMARK(BM_OpenSslHmacOneShot);

} // namespace

BENCHMARK_MAIN();
