/*
 * Tests of `ringpay load`: the histogram and HTTP framing of tools/load/loadstats.c (the
 * percentiles against exact sorted ones, within the stated error), the request mix of
 * tools/load/mix.c (random numbers, the Zipf sampler's distribution, the lifecycle
 * shares), the signer of tools/load/signer.c (SPEC §3's string to sign, computed here
 * with OpenSSL; making, reusing and reloading keys), and the load loop of
 * tools/load/load.c (included, to reach its statics) against a small HTTP server on
 * loopback that this test runs in a thread: pipelining up to 1024 deep, the lifecycle
 * scenario's follow-ups and shares, replays marked Idempotent-Replayed, reconnects after
 * "Connection: close", timeouts, and open-loop latency measured from the schedule
 * (coordinated omission).
 */
#include "tools/load/load.c"

#include <math.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <cmocka.h>

#include "store/keyfile.h"

/* ---- histogram ---- */

static void hist_exact_below_1ms(void **state)
{
    static struct loadstats_hist h;
    loadstats_hist_init(&h);
    for (uint64_t v = 1; v <= 1000; v++)
        loadstats_hist_record(&h, v);
    assert_int_equal(h.count, 1000);
    assert_int_equal(loadstats_hist_percentile(&h, 0.50), 500);
    assert_int_equal(loadstats_hist_percentile(&h, 0.90), 900);
    assert_int_equal(loadstats_hist_percentile(&h, 0.99), 990);
    assert_int_equal(loadstats_hist_percentile(&h, 0.999), 999);
    assert_int_equal(loadstats_hist_percentile(&h, 1.0), 1000);
    assert_int_equal(h.max_us, 1000);
    assert_int_equal(h.min_us, 1);
}

/* Buckets tile the range without gaps, and each is within 1/128 of its values. */
static void hist_buckets_bound_the_error(void **state)
{
    for (size_t b = 0; b + 1 < LOADSTATS_HIST_BUCKETS; b++) {
        uint64_t high = loadstats_hist_bucket_high(b);
        assert_int_equal(loadstats_hist_bucket(high), b);
        assert_int_equal(loadstats_hist_bucket(high + 1), b + 1);
    }
    for (uint64_t v = 1; v <= LOADSTATS_HIST_MAX_US; v = v * 3 / 2 + 1) {
        uint64_t high = loadstats_hist_bucket_high(loadstats_hist_bucket(v));
        assert_true(high >= v);
        assert_true((double)(high - v) <= (double)v / LOADSTATS_HIST_SUB);
    }
    assert_int_equal(loadstats_hist_bucket(0), 0);
    assert_int_equal(loadstats_hist_bucket(1023), 1023);
    assert_int_equal(loadstats_hist_bucket(1024), 1024);
    /* 60 s is still resolved, not clamped into the last bucket. */
    assert_true(loadstats_hist_bucket(60ull * 1000 * 1000) < LOADSTATS_HIST_BUCKETS - 1);
}

static void hist_tail_percentiles(void **state)
{
    static struct loadstats_hist h;
    loadstats_hist_init(&h);
    for (int i = 0; i < 990; i++)
        loadstats_hist_record(&h, 100);
    for (int i = 0; i < 9; i++)
        loadstats_hist_record(&h, 20000);
    loadstats_hist_record(&h, 50000);
    assert_int_equal(loadstats_hist_percentile(&h, 0.50), 100);
    assert_int_equal(loadstats_hist_percentile(&h, 0.99), 100);
    uint64_t p991 = loadstats_hist_percentile(&h, 0.991);
    assert_true(p991 >= 20000 && p991 <= 20000 + 20000 / 128);
    uint64_t p999 = loadstats_hist_percentile(&h, 0.999);
    assert_true(p999 >= 20000 && p999 <= 20000 + 20000 / 128);
    assert_int_equal(loadstats_hist_percentile(&h, 1.0), 50000); /* clipped to the max */
    assert_int_equal(h.max_us, 50000);
    assert_int_equal(h.sum_us, 990 * 100 + 9 * 20000 + 50000);
}

static void hist_overflow_merge_and_empty(void **state)
{
    static struct loadstats_hist a, b, both;
    loadstats_hist_init(&a);
    loadstats_hist_init(&b);
    loadstats_hist_init(&both);
    assert_int_equal(loadstats_hist_percentile(&a, 0.5), 0);
    uint64_t huge = LOADSTATS_HIST_MAX_US * 4;
    loadstats_hist_record(&a, huge);
    assert_int_equal(a.buckets[LOADSTATS_HIST_BUCKETS - 1], 1);
    assert_int_equal(a.max_us, huge);
    assert_int_equal(loadstats_hist_percentile(&a, 0.5), LOADSTATS_HIST_MAX_US);
    for (uint64_t v = 1; v < 5000; v += 7) {
        loadstats_hist_record(v % 2 ? &a : &b, v);
        loadstats_hist_record(&both, v);
    }
    loadstats_hist_record(&both, huge);
    loadstats_hist_merge(&a, &b);
    assert_memory_equal(&a, &both, sizeof(a));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The contract of loadstats_hist_percentile on random data: for every quantile, the
 * reported value is the exact one (the ceil(q * n)-th smallest sample) or above it by at
 * most 1/LOADSTATS_HIST_SUB of it (0.78 %), and exact below LOADSTATS_HIST_LINEAR_US.
 * Three shapes: log-uniform over 1 us .. 60 s, a narrow cluster (the usual latency),
 * and a bimodal one (fast answers and group-commit waits), each recorded by four
 * "threads" and merged, as the load tool does. */
static void hist_percentiles_match_sorted(void **state)
{
    enum { N = 200000, PARTS = 4 };
    static uint64_t v[N];
    static struct loadstats_hist part[PARTS], h;
    static const double qs[] = {0.001, 0.01, 0.1,   0.25,   0.5,     0.75, 0.9,
                                0.95,  0.99, 0.999, 0.9999, 0.99999, 1.0};
    struct mix_rng r;
    mix_rng_seed(&r, 20261130);
    for (int shape = 0; shape < 3; shape++) {
        loadstats_hist_init(&h);
        for (int p = 0; p < PARTS; p++)
            loadstats_hist_init(&part[p]);
        for (int i = 0; i < N; i++) {
            double u = mix_rng_unit(&r);
            if (shape == 0)
                v[i] = (uint64_t)exp(u * log(60e6));
            else if (shape == 1)
                v[i] = 2000 + mix_rng_below(&r, 300);
            else
                v[i] = u < 0.7 ? 100 + mix_rng_below(&r, 50) : 5000 + mix_rng_below(&r, 20000);
            loadstats_hist_record(&part[i % PARTS], v[i]);
        }
        for (int p = 0; p < PARTS; p++)
            loadstats_hist_merge(&h, &part[p]);
        qsort(v, N, sizeof(v[0]), cmp_u64);
        assert_int_equal(h.count, N);
        assert_int_equal(h.min_us, v[0]);
        assert_int_equal(h.max_us, v[N - 1]);
        for (size_t i = 0; i < ARRAY_LEN(qs); i++) {
            size_t rank = (size_t)ceil(qs[i] * N);
            uint64_t exact = v[rank - 1], got = loadstats_hist_percentile(&h, qs[i]);
            if (got < exact || (double)(got - exact) > (double)exact / LOADSTATS_HIST_SUB)
                fail_msg("shape %d q %g: exact %llu, histogram %llu", shape, qs[i],
                         (unsigned long long)exact, (unsigned long long)got);
            if (exact < LOADSTATS_HIST_LINEAR_US)
                assert_int_equal(got, exact);
        }
    }
}

/* ---- the request mix ---- */

/* The sampler's table is the Zipf distribution, and a million draws follow it: every
 * merchant's count within 5 standard deviations of n * p, and a chi-square statistic
 * well inside what chance allows. */
static void zipf_sampler_follows_the_distribution(void **state)
{
    enum { DRAWS = 1000000 };
    static const double exps[] = {0.0, 0.5, 0.99, 1.0, 1.5, 3.0};
    static const unsigned ns[] = {1, 2, 64, 1000};
    static uint64_t count[1000];
    struct mix_rng r;
    mix_rng_seed(&r, 7);
    for (size_t e = 0; e < ARRAY_LEN(exps); e++)
        for (size_t j = 0; j < ARRAY_LEN(ns); j++) {
            unsigned n = ns[j];
            struct mix_zipf z;
            assert_int_equal(mix_zipf_init(&z, n, exps[e]), 0);
            double h = 0.0;
            for (unsigned k = 1; k <= n; k++)
                h += pow(k, -exps[e]);
            for (unsigned k = 0; k < n; k++)
                assert_true(fabs(mix_zipf_prob(&z, k) - pow(k + 1, -exps[e]) / h) < 1e-12);
            assert_int_equal(mix_zipf_sample(&z, 0.0), 0);
            assert_int_equal(mix_zipf_sample(&z, nextafter(1.0, 0.0)), n - 1);
            memset(count, 0, sizeof(count));
            for (int i = 0; i < DRAWS; i++)
                count[mix_zipf_sample(&z, mix_rng_unit(&r))]++;
            double chi2 = 0.0;
            unsigned cells = 0;
            for (unsigned k = 0; k < n; k++) {
                double p = mix_zipf_prob(&z, k), want = p * DRAWS;
                double sd = sqrt(DRAWS * p * (1 - p));
                if (fabs((double)count[k] - want) > 5 * sd + 2)
                    fail_msg("s %g n %u merchant %u: %llu draws, expected %.0f", exps[e], n, k,
                             (unsigned long long)count[k], want);
                if (want >= 5) { /* the chi-square rule: only cells expected 5 times or more */
                    chi2 += ((double)count[k] - want) * ((double)count[k] - want) / want;
                    cells++;
                }
            }
            /* cells - 1 degrees of freedom: mean cells - 1, sd sqrt(2(cells - 1)); 6 sd
             * above the mean is p < 1e-6 for chance alone. */
            if (cells > 1)
                assert_true(chi2 <= (cells - 1) + 6 * sqrt(2.0 * (cells - 1)));
            mix_zipf_free(&z);
        }
    struct mix_zipf z;
    assert_int_equal(mix_zipf_init(&z, 0, 1.0), -EINVAL);
    assert_int_equal(mix_zipf_init(&z, 8, -0.5), -EINVAL);
    assert_int_equal(mix_zipf_init(&z, 8, MIX_ZIPF_S_MAX + 1), -EINVAL);
    assert_int_equal(mix_zipf_init(&z, 8, NAN), -EINVAL);
}

/* Each lifecycle decision comes out in its share over many draws (within 1 point of
 * percent, ~10 standard deviations at these counts), and a fallback replaces what
 * cannot be done yet. */
static void mix_shares_over_many_draws(void **state)
{
    enum { DRAWS = 400000 };
    struct mix_config c = {.get_pct = 10,
                           .balances_pct = 5,
                           .replay_pct = 30,
                           .capture_pct = 70,
                           .void_pct = 20,
                           .refund_pct = 40,
                           .refunds_per_payment = 3};
    char why[128];
    assert_int_equal(mix_check(&c, why, sizeof(why)), 0);
    struct mix_rng r;
    mix_rng_seed(&r, 99);
    unsigned roots[4] = {0}, after[4] = {0}, refunds = 0;
    for (int i = 0; i < DRAWS; i++) {
        roots[mix_next_root(&c, &r, true, true)]++;
        after[mix_after_authorize(&c, &r)]++;
        refunds += mix_after_capture(&c, &r) == MIX_NEXT_REFUND;
    }
#define NEAR(n, pct) assert_true(fabs(100.0 * (n) / DRAWS - (pct)) < 1.0)
    NEAR(roots[MIX_ROOT_GET_PAYMENT], 10);
    NEAR(roots[MIX_ROOT_BALANCES], 5);
    NEAR(roots[MIX_ROOT_REPLAY], 85 * 0.30);
    NEAR(roots[MIX_ROOT_AUTHORIZE], 85 * 0.70);
    NEAR(after[MIX_NEXT_CAPTURE], 70);
    NEAR(after[MIX_NEXT_VOID], 20);
    NEAR(after[MIX_NEXT_NONE], 10);
    NEAR(refunds, 40);
#undef NEAR
    /* Nothing to GET or replay yet: those draws become authorizations. */
    for (int i = 0; i < 1000; i++) {
        enum mix_root root = mix_next_root(&c, &r, false, false);
        assert_true(root == MIX_ROOT_AUTHORIZE || root == MIX_ROOT_BALANCES);
    }
    /* Refund amounts: N-1 equal parts, then "the rest" (0); they never exceed it. */
    assert_int_equal(mix_refund_amount(&c, 1000, 1), 333);
    assert_int_equal(mix_refund_amount(&c, 1000, 2), 333);
    assert_int_equal(mix_refund_amount(&c, 1000, 3), 0);
    assert_int_equal(mix_refund_amount(&c, 2, 1), 1);
    struct mix_config bad = c;
    bad.get_pct = 96;
    assert_int_equal(mix_check(&bad, why, sizeof(why)), -1);
    bad = c;
    bad.void_pct = 31;
    assert_int_equal(mix_check(&bad, why, sizeof(why)), -1);
    bad = c;
    bad.refunds_per_payment = 0;
    assert_int_equal(mix_check(&bad, why, sizeof(why)), -1);
    /* Same seed, same choices. */
    struct mix_rng a, b;
    mix_rng_seed(&a, 5);
    mix_rng_seed(&b, 5);
    for (int i = 0; i < 100; i++)
        assert_int_equal(mix_rng_next(&a), mix_rng_next(&b));
}

/* ---- requests ---- */

static int test_signer(void *ctx, const struct loadstats_req *req, char *out, size_t cap)
{
    int *calls = ctx;
    (*calls)++;
    return snprintf(out, cap, "X-Ringpay-Key: k1\r\nX-Ringpay-Signature: v1=%s\r\n", req->target);
}

static int failing_signer(void *ctx, const struct loadstats_req *req, char *out, size_t cap)
{
    return -1;
}

static void req_format_get_and_post(void **state)
{
    char buf[512];
    struct loadstats_req get = {.method = "GET", .target = "/healthz", .host = "h:1"};
    int n = loadstats_req_format(buf, sizeof(buf), &get, NULL, NULL);
    static const char want_get[] = "GET /healthz HTTP/1.1\r\nHost: h:1\r\n\r\n";
    assert_int_equal(n, sizeof(want_get) - 1);
    assert_memory_equal(buf, want_get, (size_t)n);

    const char body[] = "{\"a\":1}";
    struct loadstats_req post = {.method = "POST",
                                 .target = "/v1/x",
                                 .host = "h:1",
                                 .idempotency_key = "k-7",
                                 .body = body,
                                 .body_len = 7};
    int calls = 0;
    n = loadstats_req_format(buf, sizeof(buf), &post, test_signer, &calls);
    static const char want_post[] = "POST /v1/x HTTP/1.1\r\nHost: h:1\r\n"
                                    "X-Ringpay-Key: k1\r\nX-Ringpay-Signature: v1=/v1/x\r\n"
                                    "Idempotency-Key: k-7\r\n"
                                    "Content-Type: application/json\r\nContent-Length: 7\r\n"
                                    "\r\n{\"a\":1}";
    assert_int_equal(calls, 1);
    assert_int_equal(n, sizeof(want_post) - 1);
    assert_memory_equal(buf, want_post, (size_t)n);

    /* Every capacity short of the whole request fails instead of truncating. */
    for (size_t cap = 1; cap < sizeof(want_post) - 1; cap++)
        assert_int_equal(loadstats_req_format(buf, cap, &post, test_signer, &calls), -1);
    assert_int_equal(loadstats_req_format(buf, sizeof(buf), &post, failing_signer, NULL), -1);
}

/* ---- signing (SPEC §3) ---- */

#define SECRET0 "rps_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define SECRET1 "rps_ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

static void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

/* The signature SPEC §3 defines, computed here with OpenSSL alone:
 * HMAC-SHA256(secret, ts "\n" METHOD "\n" target "\n" idempotency-key "\n" hex(SHA-256(body))). */
static void spec_signature(const char *secret, const char *ts, const char *method,
                           const char *target, const char *key, const char *body, size_t body_len,
                           char out[65])
{
    unsigned char digest[SHA256_DIGEST_LENGTH], mac[EVP_MAX_MD_SIZE];
    char body_hex[2 * SHA256_DIGEST_LENGTH + 1], sts[1024];
    SHA256((const unsigned char *)body, body_len, digest);
    hex(digest, sizeof(digest), body_hex);
    int n = snprintf(sts, sizeof(sts), "%s\n%s\n%s\n%s\n%s", ts, method, target, key ? key : "",
                     body_hex);
    unsigned mac_len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)sts, (size_t)n, mac, &mac_len);
    assert_int_equal(mac_len, 32);
    hex(mac, mac_len, out);
}

/* Checks the three header lines of a signed request against the SPEC's signature. */
static void check_signed(const char *lines, const char *key_id, const char *secret,
                         const char *method, const char *target, const char *key, const char *body,
                         size_t body_len)
{
    char want_key[64], ts[24] = "", sig[80] = "", want[65];
    snprintf(want_key, sizeof(want_key), "X-Ringpay-Key: %s\r\nX-Ringpay-Timestamp: ", key_id);
    assert_memory_equal(lines, want_key, strlen(want_key));
    assert_int_equal(
        sscanf(lines + strlen(want_key), "%23[0-9]\r\nX-Ringpay-Signature: %79[^\r]", ts, sig), 2);
    assert_true(llabs(atoll(ts) - (long long)time(NULL)) <= 5);
    spec_signature(secret, ts, method, target, key, body, body_len, want);
    assert_memory_equal(sig, "v1=", 3);
    assert_string_equal(sig + 3, want);
    char tail[200];
    snprintf(tail, sizeof(tail), "X-Ringpay-Signature: %s\r\n", sig);
    assert_non_null(strstr(lines, tail));
    assert_string_equal(strstr(lines, tail) + strlen(tail), "");
}

static char tmp_dir[64];

static const char *make_tmp_dir(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/load_test.XXXXXX");
    assert_non_null(mkdtemp(tmp_dir));
    return tmp_dir;
}

static void remove_tree(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* load_keys_sign writes what SPEC §3 asks for, with the request's own merchant's key:
 * a POST with its idempotency key and body, a GET without either (empty key line, the
 * SHA-256 of nothing); requests without a merchant are not signed. */
static void sign_matches_spec_string_to_sign(void **state)
{
    const char *dir = make_tmp_dir();
    char path[128];
    snprintf(path, sizeof(path), "%s/keys.jsonl", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"key_id\":\"rpk_1111111111111111\",\"merchant_id\":\"m-1\",\"scope\":"
               "\"merchant\",\"secret\":\"" SECRET1 "\"}\n");
    fprintf(f, "{\"key_id\":\"rpk_9999999999999999\",\"merchant_id\":\"x-9\",\"scope\":"
               "\"merchant\",\"secret\":\"" SECRET1 "\"}\n");
    fprintf(f, "{\"key_id\":\"rpk_0000000000000000\",\"merchant_id\":\"m-0\",\"scope\":"
               "\"merchant\",\"secret\":\"" SECRET0 "\"}\n");
    fclose(f);
    struct load_keys *k;
    char why[256];
    assert_int_equal(load_keys_read(path, 2, &k, why, sizeof(why)), 0);

    char out[1024];
    const char body[] = "{\"merchant_id\":\"m-1\",\"amount\":1500,\"currency\":\"KRW\"}";
    struct loadstats_req post = {.method = "POST",
                                 .target = "/v1/payments/authorize",
                                 .host = "h",
                                 .idempotency_key = "order-77",
                                 .body = body,
                                 .body_len = strlen(body),
                                 .merchant = 1};
    int n = load_keys_sign(k, &post, out, sizeof(out));
    assert_true(n > 0 && (size_t)n == strlen(out));
    check_signed(out, "rpk_1111111111111111", SECRET1, "POST", "/v1/payments/authorize", "order-77",
                 body, strlen(body));

    struct loadstats_req get = {
        .method = "GET", .target = "/v1/merchants/m-0/balances?x=1", .host = "h", .merchant = 0};
    n = load_keys_sign(k, &get, out, sizeof(out));
    assert_true(n > 0);
    check_signed(out, "rpk_0000000000000000", SECRET0, "GET", "/v1/merchants/m-0/balances?x=1",
                 NULL, "", 0);

    /* In a whole request, the lines stand between Host and Idempotency-Key. */
    n = loadstats_req_format(out, sizeof(out), &post, load_keys_sign, k);
    assert_true(n > 0);
    out[n] = '\0';
    char *sig = strstr(out, "X-Ringpay-Key: ");
    assert_non_null(sig);
    assert_true(sig < strstr(out, "Idempotency-Key: order-77\r\n"));
    assert_true(sig > strstr(out, "Host: h\r\n"));

    struct loadstats_req health = {
        .method = "GET", .target = "/healthz", .host = "h", .merchant = -1};
    assert_int_equal(load_keys_sign(k, &health, out, sizeof(out)), 0);
    post.merchant = 2; /* beyond --merchants: refused, never sent unsigned */
    assert_int_equal(load_keys_sign(k, &post, out, sizeof(out)), -1);
    assert_int_equal(load_keys_sign(k, &get, out, 40), -1); /* does not fit */
    load_keys_free(k);

    /* A merchant without a key, and a line that is not a key, are refused by name. */
    assert_int_equal(load_keys_read(path, 3, &k, why, sizeof(why)), -ENOENT);
    assert_non_null(strstr(why, "no key for merchant m-2"));
    f = fopen(path, "a");
    fprintf(f, "{\"nope\":1}\n");
    fclose(f);
    assert_int_equal(load_keys_read(path, 2, &k, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, ":4: not a key"));
    remove_tree(dir);
}

/* The key ids load.keys holds, in order, as one string. */
static void read_ids(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    out[0] = '\0';
    while (fgets(line, sizeof(line), f)) {
        char *id = strstr(line, "\"key_id\":\"");
        assert_non_null(id);
        strncat(out, id + 10, KEY_ID_BYTES);
        strncat(out, " ", cap - strlen(out) - 1);
    }
    fclose(f);
}

/* --keys-data: the keys are made in DIR/keys and kept in a 0600 file; a second run
 * reuses them (no key added); a revoked one is replaced, alone; more merchants add only
 * theirs; a merchant whose active keys the file does not hold is refused with a clear
 * line. Every key in the file is active in DIR/keys for its merchant. */
static void keys_provision_makes_and_reuses(void **state)
{
    const char *root = make_tmp_dir();
    char dir[128], path[160], ids1[4096], ids2[4096], why[512];
    snprintf(dir, sizeof(dir), "%s/data", root);
    snprintf(path, sizeof(path), "%s/%s", dir, LOAD_KEYS_FILE);
    unsigned created = 99;
    long last = 99;
    assert_int_equal(load_keys_provision(dir, path, 8, &created, &last, why, sizeof(why)), 0);
    assert_int_equal(created, 8);
    assert_int_equal(last, 7);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    read_ids(path, ids1, sizeof(ids1));
    assert_int_equal(strlen(ids1), 8 * (KEY_ID_BYTES + 1));

    assert_int_equal(load_keys_provision(dir, path, 8, &created, &last, why, sizeof(why)), 0);
    assert_int_equal(created, 0);
    assert_int_equal(last, -1);
    read_ids(path, ids2, sizeof(ids2));
    assert_string_equal(ids1, ids2);

    /* Revoke m-3's key: only it is replaced. */
    char revoked[KEY_ID_BYTES + 1];
    memcpy(revoked, ids1 + 3 * (KEY_ID_BYTES + 1), KEY_ID_BYTES);
    revoked[KEY_ID_BYTES] = '\0';
    bool was_active;
    assert_int_equal(keyfile_revoke(dir, revoked, &was_active, why, sizeof(why)), 0);
    assert_int_equal(load_keys_provision(dir, path, 8, &created, &last, why, sizeof(why)), 0);
    assert_int_equal(created, 1);
    assert_int_equal(last, 3); /* the reload is probed with the new key */
    read_ids(path, ids2, sizeof(ids2));
    assert_null(strstr(ids2, revoked));

    assert_int_equal(load_keys_provision(dir, path, 12, &created, &last, why, sizeof(why)), 0);
    assert_int_equal(created, 4);
    struct load_keys *k;
    assert_int_equal(load_keys_read(path, 12, &k, why, sizeof(why)), 0);
    load_keys_free(k);
    struct keyset *set;
    assert_int_equal(keyfile_load(dir, &set, why, sizeof(why)), 0);
    assert_int_equal(keyfile_count(set), 8 + 1 + 4);
    read_ids(path, ids2, sizeof(ids2));
    assert_int_equal(strlen(ids2), 12 * (KEY_ID_BYTES + 1));
    for (size_t off = 0; off < strlen(ids2); off += KEY_ID_BYTES + 1)
        assert_non_null(keyfile_verify_key(set, ids2 + off, KEY_ID_BYTES));
    keyfile_free(set);

    /* Another file, and m-0 already has two active keys it does not hold. */
    struct keyfile_new_key nk;
    assert_int_equal(keyfile_add(dir, KEYFILE_SCOPE_MERCHANT, "m-0", 1, &nk, why, sizeof(why)), 0);
    char other[200];
    snprintf(other, sizeof(other), "%s/other.keys", root);
    assert_int_equal(load_keys_provision(dir, other, 1, &created, &last, why, sizeof(why)),
                     -EDQUOT);
    assert_non_null(strstr(why, "merchant m-0 already has its active keys"));
    remove_tree(root);
}

/* load_keys_reload signals the process that holds DIR/LOCK (as serve does), with
 * SIGHUP, and nobody when the lock is free or there is no LOCK file. */
static void keys_reload_signals_the_owner(void **state)
{
    const char *dir = make_tmp_dir();
    long pid = 0;
    char why[256], lock[128];
    assert_int_equal(load_keys_reload(dir, &pid, why, sizeof(why)), 0); /* no LOCK */
    snprintf(lock, sizeof(lock), "%s/LOCK", dir);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        sigprocmask(SIG_BLOCK, &hup, NULL);
        int fd = open(lock, O_RDWR | O_CREAT, 0600);
        if (fd < 0 || flock(fd, LOCK_EX) != 0 || dprintf(fd, "%d\n", getpid()) < 0)
            _exit(2);
        if (write(fds[1], "r", 1) != 1)
            _exit(3);
        struct timespec five = {5, 0};
        _exit(sigtimedwait(&hup, NULL, &five) == SIGHUP ? 0 : 1);
    }
    char c;
    assert_int_equal(read(fds[0], &c, 1), 1);
    assert_int_equal(load_keys_reload(dir, &pid, why, sizeof(why)), 1);
    assert_int_equal(pid, child);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The owner is gone: its LOCK file stays, but nobody holds it. */
    assert_int_equal(load_keys_reload(dir, &pid, why, sizeof(why)), 0);
    close(fds[0]);
    close(fds[1]);
    remove_tree(dir);
}

/* ---- responses ---- */

static const char resp_201[] = "HTTP/1.1 201 Created\r\nServer: ringpay\r\n"
                               "content-length:  14 \r\nContent-Type: application/json\r\n"
                               "\r\n{\"id\":\"pay_1\"}";

static void resp_whole_and_split_at_every_byte(void **state)
{
    struct loadstats_resp r;
    size_t len = sizeof(resp_201) - 1;
    for (size_t cut = 0; cut < len; cut++) {
        memset(&r, 0xa5, sizeof(r));
        assert_int_equal(loadstats_resp_parse(resp_201, cut, &r), 0);
    }
    assert_int_equal(loadstats_resp_parse(resp_201, len, &r), 1);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.body_len, 14);
    assert_int_equal(r.total_len, len);
    assert_int_equal(r.head_len, len - 14);
    assert_memory_equal(resp_201 + r.body_off, "{\"id\":\"pay_1\"}", 14);
    assert_false(r.close);
}

static void resp_pipelined(void **state)
{
    char buf[1024];
    static const char second[] = "HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}";
    static const char third[] = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    size_t a = sizeof(resp_201) - 1, b = sizeof(second) - 1, c = sizeof(third) - 1;
    memcpy(buf, resp_201, a);
    memcpy(buf + a, second, b);
    memcpy(buf + a + b, third, c);
    memcpy(buf + a + b + c, "HTTP/1.1 2", 10); /* the start of a fourth */
    struct loadstats_resp r;
    size_t off = 0;
    unsigned want[] = {201, 409, 204};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(loadstats_resp_parse(buf + off, a + b + c + 10 - off, &r), 1);
        assert_int_equal(r.status, want[i]);
        assert_int_equal(r.close, i == 2);
        off += r.total_len;
    }
    assert_int_equal(off, a + b + c);
    assert_int_equal(loadstats_resp_parse(buf + off, 10, &r), 0);
}

static void resp_rejects_what_it_cannot_frame(void **state)
{
    struct loadstats_resp r;
    const char *bad[] = {
        "XTTP/",                                                          /* early */
        "HTTP/1.1 200 OK\r\n\r\n",                                        /* no length */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", /* chunked */
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\rC: d\r\n\r\n",
        "HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        assert_int_equal(loadstats_resp_parse(bad[i], strlen(bad[i]), &r), -EPROTO);

    /* A head that never ends is refused once it passes the limit. */
    static char big[LOADSTATS_RESP_HEAD_MAX + 64];
    memcpy(big, "HTTP/1.1 200 OK\r\n", 17);
    memset(big + 17, 'a', sizeof(big) - 17);
    assert_int_equal(loadstats_resp_parse(big, LOADSTATS_RESP_HEAD_MAX, &r), 0);
    assert_int_equal(loadstats_resp_parse(big, sizeof(big), &r), -EPROTO);

    /* HTTP/1.0 closes unless it says keep-alive; 304 has no body. */
    const char *v10 = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(loadstats_resp_parse(v10, strlen(v10), &r), 1);
    assert_true(r.close);
    const char *v10ka = "HTTP/1.0 304 Not Modified\r\nConnection: Keep-Alive\r\n\r\n";
    assert_int_equal(loadstats_resp_parse(v10ka, strlen(v10ka), &r), 1);
    assert_false(r.close);
    assert_int_equal(r.body_len, 0);
}

static void json_string_finds_members_only(void **state)
{
    char out[32];
    const char *b = "{\"request_id\":\"r-1\",\"ref\":\"id\", \"id\" : \"pay_9\"}";
    assert_int_equal(loadstats_json_string(b, strlen(b), "id", out, sizeof(out)), 5);
    assert_string_equal(out, "pay_9");
    assert_int_equal(loadstats_json_string(b, strlen(b), "request_id", out, sizeof(out)), 3);
    assert_string_equal(out, "r-1");
    assert_int_equal(loadstats_json_string(b, strlen(b), "nope", out, sizeof(out)), -1);
    assert_int_equal(loadstats_json_string(b, strlen(b), "id", out, 5), -1); /* too long */
    const char *esc = "{\"id\":\"a\\\"b\"}";
    assert_int_equal(loadstats_json_string(esc, strlen(esc), "id", out, sizeof(out)), -1);
    const char *num = "{\"id\":12}";
    assert_int_equal(loadstats_json_string(num, strlen(num), "id", out, sizeof(out)), -1);
    const char *cut = "{\"id\":\"pay_";
    assert_int_equal(loadstats_json_string(cut, strlen(cut), "id", out, sizeof(out)), -1);
}

/* ---- the load loop against a loopback server ---- */

#define SRV_CONNS   64
#define SRV_KEYS    8192
#define SRV_PAY_MAX 65536
#define SRV_HASH    65536 /* idempotency records, open addressing */

enum srv_pay { PAY_NONE, PAY_AUTHORIZED, PAY_CAPTURED, PAY_VOIDED };

/* A stand-in for the engine, strict enough to catch a wrong lifecycle: payments with
 * their state, amount and refunds; idempotency by key and body (a repeat with the same
 * body is replayed with Idempotent-Replayed: true, with another body is 409). */
struct srv {
    int lfd;
    uint16_t port;
    pthread_t tid;
    volatile int stop;
    /* behaviour */
    unsigned close_every; /* answer with Connection: close every Nth response (0: never) */
    bool mute;            /* read requests, never answer */
    unsigned stall_at;    /* before answering request #stall_at (1-based), sleep stall_ms */
    unsigned stall_ms;
    /* observations */
    unsigned accepted, requests, authorize, capture, void_, refund, get, balances, healthz;
    unsigned replayed, conflicts, bad_id, bad_state;
    unsigned per_merchant[64]; /* authorizations by merchant m-<i> */
    unsigned max_batch;        /* most requests answered from one read: pipelining seen */
    unsigned nkeys;
    char keys[SRV_KEYS][48];
    unsigned next_id;
    uint8_t state[SRV_PAY_MAX];
    uint8_t refunds[SRV_PAY_MAX];
    uint64_t amount[SRV_PAY_MAX], refunded[SRV_PAY_MAX];
    char hkey[SRV_HASH][48];
    uint64_t hbody[SRV_HASH];
    unsigned hid[SRV_HASH];
};

struct srv_conn {
    int fd;
    char buf[16384];
    size_t len;
};

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

/* The authorization's idempotency record: 0 for a new key (recorded with payment id),
 * else the first payment's id, or -1 when the body differs. */
static long srv_idempotency(struct srv *s, const char *key, size_t kl, const char *body, size_t bl,
                            unsigned id)
{
    uint64_t h = fnv(key, kl), b = fnv(body, bl);
    for (size_t i = h % SRV_HASH;; i = (i + 1) % SRV_HASH) {
        if (s->hkey[i][0] == '\0') {
            memcpy(s->hkey[i], key, kl < 47 ? kl : 47);
            s->hbody[i] = b;
            s->hid[i] = id;
            return 0;
        }
        if (strlen(s->hkey[i]) == kl && memcmp(s->hkey[i], key, kl) == 0)
            return s->hbody[i] == b ? (long)s->hid[i] : -1;
    }
}

static unsigned srv_json_uint(const char *body, const char *name)
{
    const char *p = strstr(body, name);
    return p ? (unsigned)strtoul(p + strlen(name), NULL, 10) : 0;
}

/* POST /v1/payments/pay_N/VERB: the state machine of SPEC §2, amounts included. */
static unsigned srv_followup(struct srv *s, const char *req, const char *body, char *out,
                             size_t cap)
{
    unsigned id = 0;
    char verb[16] = "";
    sscanf(req, "POST /v1/payments/pay_%u/%15[a-z] ", &id, verb);
    if (id == 0 || id > s->next_id || id >= SRV_PAY_MAX) {
        s->bad_id++;
        snprintf(out, cap, "{}");
        return 404;
    }
    unsigned status = 200;
    if (strcmp(verb, "capture") == 0) {
        s->capture++;
        s->bad_state += s->state[id] != PAY_AUTHORIZED;
        s->state[id] = PAY_CAPTURED;
    } else if (strcmp(verb, "void") == 0) {
        s->void_++;
        s->bad_state += s->state[id] != PAY_AUTHORIZED;
        s->state[id] = PAY_VOIDED;
    } else {
        s->refund++;
        uint64_t a = srv_json_uint(body, "\"amount\":");
        uint64_t rest = s->amount[id] - s->refunded[id];
        s->bad_state += s->state[id] != PAY_CAPTURED || a > rest || rest == 0;
        s->refunded[id] += a ? a : rest;
        s->refunds[id]++;
        status = 201;
        snprintf(out, cap, "{\"id\":\"rfd_%u\",\"payment_id\":\"pay_%u\"}", s->refund, id);
        return status;
    }
    snprintf(out, cap, "{\"id\":\"pay_%u\",\"request_id\":\"q\"}", id);
    return status;
}

/* Answers one request (head and body in req[0..len)); appends to out. */
static size_t srv_answer(struct srv *s, const char *req, size_t len, char *out, size_t cap)
{
    s->requests++;
    if (s->stall_at && s->requests == s->stall_at)
        usleep(s->stall_ms * 1000);
    const char *key = strcasestr(req, "\r\nIdempotency-Key: ");
    size_t kl = 0;
    if (key && key < req + len) {
        key += 19;
        kl = strcspn(key, "\r");
        if (kl < sizeof(s->keys[0]) && s->nkeys < SRV_KEYS)
            memcpy(s->keys[s->nkeys++], key, kl);
    }
    /* The body alone, NUL-terminated (pipelined requests follow it in the buffer). */
    const char *body_at = strstr(req, "\r\n\r\n") + 4;
    size_t bl = len - (size_t)(body_at - req);
    char body[512];
    assert_true(bl < sizeof(body));
    memcpy(body, body_at, bl);
    body[bl] = '\0';
    unsigned status = 200;
    bool replayed = false;
    char text[128];
    if (strncmp(req, "GET /healthz ", 13) == 0) {
        s->healthz++;
        snprintf(text, sizeof(text), "{\"status\":\"ok\"}");
    } else if (strncmp(req, "GET /v1/payments/pay_", 21) == 0) {
        s->get++;
        unsigned id = (unsigned)strtoul(req + 21, NULL, 10);
        s->bad_id += id == 0 || id > s->next_id;
        snprintf(text, sizeof(text), "{\"id\":\"pay_%u\"}", id);
    } else if (strncmp(req, "GET /v1/merchants/m-", 20) == 0) {
        s->balances++;
        snprintf(text, sizeof(text), "{\"balances\":[]}");
    } else if (strncmp(req, "POST /v1/payments/authorize ", 28) == 0) {
        s->authorize++;
        status = 201;
        const char *m = strstr(body, "\"merchant_id\":\"m-");
        if (m && strtoul(m + 17, NULL, 10) < 64)
            s->per_merchant[strtoul(m + 17, NULL, 10)]++;
        long first = key ? srv_idempotency(s, key, kl, body, bl, s->next_id + 1) : 0;
        if (first < 0) {
            s->conflicts++;
            status = 409;
            snprintf(text, sizeof(text), "{\"error\":{\"code\":\"idempotency_key_reused\"}}");
        } else if (first > 0) {
            s->replayed++;
            replayed = true;
            snprintf(text, sizeof(text), "{\"request_id\":\"q\",\"id\":\"pay_%ld\"}", first);
        } else {
            unsigned id = ++s->next_id;
            if (id < SRV_PAY_MAX) {
                s->state[id] = PAY_AUTHORIZED;
                s->amount[id] = srv_json_uint(body, "\"amount\":");
            }
            snprintf(text, sizeof(text), "{\"request_id\":\"q\",\"id\":\"pay_%u\"}", id);
        }
    } else {
        status = srv_followup(s, req, body, text, sizeof(text));
    }
    bool close_now = s->close_every && s->requests % s->close_every == 0;
    int n = snprintf(out, cap, "HTTP/1.1 %u X\r\nContent-Length: %zu\r\n%s%s\r\n%s", status,
                     strlen(text), close_now ? "Connection: close\r\n" : "",
                     replayed ? "Idempotent-Replayed: true\r\n" : "", text);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

/* Reads what is there and answers every complete request; false: close the conn. */
static bool srv_serve(struct srv *s, struct srv_conn *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
    if (n <= 0)
        return n < 0 && errno == EAGAIN;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    char out[16384];
    size_t out_len = 0, off = 0;
    unsigned batch = 0;
    bool keep = true;
    for (;;) {
        char *end = strstr(c->buf + off, "\r\n\r\n");
        if (end == NULL)
            break;
        size_t head = (size_t)(end + 4 - (c->buf + off));
        const char *cl = strcasestr(c->buf + off, "\r\nContent-Length: ");
        size_t body = cl && cl < end ? strtoul(cl + 18, NULL, 10) : 0;
        if (c->len - off < head + body)
            break;
        batch++;
        if (!s->mute) {
            out_len +=
                srv_answer(s, c->buf + off, head + body, out + out_len, sizeof(out) - out_len);
            if (strstr(out, "Connection: close")) {
                keep = false;
                off += head + body;
                break;
            }
        }
        off += head + body;
    }
    if (batch > s->max_batch)
        s->max_batch = batch;
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    if (out_len)
        assert_int_equal(send(c->fd, out, out_len, MSG_NOSIGNAL), (ssize_t)out_len);
    return keep;
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    static struct srv_conn conns[SRV_CONNS];
    struct pollfd p[SRV_CONNS + 1];
    unsigned n = 0;
    while (!s->stop) {
        p[0] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        for (unsigned i = 0; i < n; i++)
            p[i + 1] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        if (poll(p, n + 1, 20) <= 0)
            continue;
        for (unsigned i = n; i-- > 0;)
            if (p[i + 1].revents && !srv_serve(s, &conns[i])) {
                close(conns[i].fd);
                conns[i] = conns[--n];
            }
        if ((p[0].revents & POLLIN) && n < SRV_CONNS) {
            int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK);
            if (fd >= 0) {
                conns[n].fd = fd;
                conns[n++].len = 0;
                s->accepted++;
            }
        }
    }
    for (unsigned i = 0; i < n; i++)
        close(conns[i].fd);
    return NULL;
}

static struct srv *srv_start(void)
{
    struct srv *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 128), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    return s;
}

static void srv_run(struct srv *s)
{
    assert_int_equal(pthread_create(&s->tid, NULL, srv_main, s), 0);
}

static void srv_stop(struct srv *s)
{
    s->stop = 1;
    pthread_join(s->tid, NULL);
    close(s->lfd);
}

static void cfg_for(struct load_config *cfg, const struct srv *s, enum scenario sc)
{
    *cfg = (struct load_config){.scenario = sc,
                                .connections = 4,
                                .pipeline = 1,
                                .threads = 1,
                                .merchants = 8,
                                .timeout_ms = 2000,
                                .run_id = 42,
                                .seed = 42,
                                .mix = {.refunds_per_payment = 1},
                                .duration_ns = 20 * 1000000000ull,
                                .target = "127.0.0.1"};
    struct sockaddr_in *a = (struct sockaddr_in *)&cfg->addr;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons(s->port);
    cfg->addr_len = sizeof(*a);
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(a, b);
}

static struct load_result result;

/* Lifecycle (by its old name, mixed) with every payment captured and refunded once,
 * pipelined, two threads, by count: every request answered once, the follow-ups use the
 * ids the server returned, every Idempotency-Key is unique. */
static void loop_mixed_pipelined(void **state)
{
    struct srv *s = srv_start();
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_MIXED);
    cfg.mix.capture_pct = 100;
    cfg.mix.refund_pct = 100;
    cfg.pipeline = 8;
    cfg.threads = 2;
    cfg.requests = 600;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    /* A run by count may overshoot by nothing: the budget is taken per request. */
    assert_int_equal(result.counts.responses, 600);
    assert_int_equal(result.counts.errors + result.counts.timeouts, 0);
    assert_int_equal(result.hist.count, 600);
    assert_int_equal(s->requests, 600);
    assert_int_equal(s->bad_id + s->bad_state, 0);
    assert_true(s->capture > 100 && s->capture <= s->authorize);
    assert_true(s->refund > 100 && s->refund <= s->capture);
    assert_int_equal(result.counts.status[201], s->authorize + s->refund);
    assert_int_equal(result.counts.status[200], s->capture);
    assert_true(s->max_batch > 1); /* requests really were pipelined */
    assert_int_equal(s->accepted, 4);
    qsort(s->keys, s->nkeys, sizeof(s->keys[0]), cmp_key);
    assert_int_equal(s->nkeys, 600);
    for (unsigned i = 1; i < s->nkeys; i++)
        assert_string_not_equal(s->keys[i - 1], s->keys[i]);
    free(s);
}

/* The lifecycle mix over 30,000 requests comes out in the shares the flags ask for, and
 * the server's state machine never sees a wrong move: captures and voids only of
 * authorized payments, refunds only of captured ones, never more than the captured
 * amount, exactly refunds_per_payment of each refunded payment (the last one "the
 * rest"), GETs only of payments that exist. */
static void loop_lifecycle_shares(void **state)
{
    struct srv *s = srv_start();
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_LIFECYCLE);
    cfg.mix = (struct mix_config){.get_pct = 10,
                                  .balances_pct = 5,
                                  .capture_pct = 60,
                                  .void_pct = 25,
                                  .refund_pct = 50,
                                  .refunds_per_payment = 3};
    cfg.pipeline = 16;
    cfg.threads = 2;
    cfg.requests = 30000;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    const struct load_counts *c = &result.counts;
    assert_int_equal(c->responses, 30000);
    assert_int_equal(c->errors + c->timeouts + c->replayed, 0);
    assert_int_equal(status_class(c, 2), 30000);
    if (s->bad_id + s->bad_state + s->conflicts)
        fail_msg("bad id %u, bad state %u, conflicts %u", s->bad_id, s->bad_state, s->conflicts);
    /* What the client counted is what the server saw. */
    assert_int_equal(c->kind_ok[K_AUTHORIZE], s->authorize);
    assert_int_equal(c->kind_ok[K_CAPTURE], s->capture);
    assert_int_equal(c->kind_ok[K_VOID], s->void_);
    assert_int_equal(c->kind_ok[K_REFUND], s->refund);
    assert_int_equal(c->kind_ok[K_GET_PAYMENT], s->get);
    assert_int_equal(c->kind_ok[K_BALANCES], s->balances);
    double auth = s->authorize, roots = s->authorize + s->get + s->balances;
    /* Shares, within 2 points of percent (several standard deviations here). The chains
     * still in flight at the end of the run are at most a few per connection. */
    assert_true(fabs(100.0 * s->capture / auth - 60) < 2);
    assert_true(fabs(100.0 * s->void_ / auth - 25) < 2);
    assert_true(fabs(100.0 * s->get / roots - 10) < 2);
    assert_true(fabs(100.0 * s->balances / roots - 5) < 2);
    unsigned refunded = 0, full = 0;
    for (unsigned id = 1; id <= s->next_id; id++) {
        if (s->refunds[id] == 0)
            continue;
        refunded++;
        assert_true(s->refunds[id] <= 3);
        full += s->refunds[id] == 3;
        if (s->refunds[id] == 3) /* the last refund took the rest */
            assert_int_equal(s->refunded[id], s->amount[id]);
        else
            assert_true(s->refunded[id] < s->amount[id]);
    }
    assert_true(fabs(100.0 * refunded / s->capture - 50) < 3);
    /* Chains cut by the end of the run: at most one per slot in flight. */
    assert_true(refunded - full <= cfg.connections * cfg.pipeline);
    free(s);
}

/* The replay scenario: a share of the authorizations re-send an earlier answered one
 * with the same key and the same body; the server (like the engine) answers them from
 * its record with Idempotent-Replayed: true, and the client counts exactly those. No
 * replay ever reuses a key with another body (no 409). */
static void loop_replay_marks(void **state)
{
    struct srv *s = srv_start();
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_REPLAY);
    cfg.mix.replay_pct = 40;
    cfg.pipeline = 4;
    cfg.threads = 2;
    cfg.requests = 8000;
    cfg.zipf = NULL;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    const struct load_counts *c = &result.counts;
    assert_int_equal(c->responses, 8000);
    assert_int_equal(c->status[201], 8000);
    assert_int_equal(s->conflicts, 0);
    assert_int_equal(c->replayed, s->replayed);
    assert_int_equal(c->kind_ok[K_REPLAY], s->replayed);
    assert_int_equal(c->kind_ok[K_AUTHORIZE], s->next_id);
    assert_true(fabs(100.0 * s->replayed / 8000 - 40) < 2.5);
    free(s);
}

/* Pipelines deeper than the engine's own bound and than one output buffer: 1,024 in
 * flight on each of two connections, all answered in order; the per-connection memory
 * follows the depth asked for (a depth-1 connection costs what one request needs). */
static void loop_deep_pipeline(void **state)
{
    struct srv *s = srv_start();
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_AUTHORIZE);
    cfg.connections = 2;
    cfg.pipeline = LOAD_PIPELINE_MAX;
    cfg.requests = 20000;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    assert_int_equal(result.counts.responses, 20000);
    assert_int_equal(result.counts.errors + result.counts.timeouts, 0);
    assert_true(s->max_batch > CONN_PIPELINE_MAX); /* more in one read than the engine takes */
    free(s);

    struct conn c1 = {0}, cmax = {0};
    assert_int_equal(conn_alloc(&c1, 1), 0);
    assert_int_equal(conn_alloc(&cmax, LOAD_PIPELINE_MAX), 0);
    assert_int_equal(c1.out_cap, LOAD_REQ_MAX_BYTES);
    assert_int_equal(cmax.out_cap, LOAD_OUT_REQS * LOAD_REQ_MAX_BYTES);
    /* Depth 1: under 20 KiB of address space a connection (10,000 of them: < 200 MiB,
     * of which only the touched pages become resident). */
    assert_true(sizeof(struct inflight) + sizeof(struct followup) + c1.out_cap + LOAD_IN_BYTES <
                20 * 1024);
    free(c1.fifo);
    free(cmax.fifo);
}

/* Zipf over merchants in a run: m-0 gets its share 1/H(8, 1.2) of the authorizations. */
static void loop_zipf_skews_merchants(void **state)
{
    struct srv *s = srv_start();
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_AUTHORIZE);
    static struct mix_zipf z;
    assert_int_equal(mix_zipf_init(&z, cfg.merchants, 1.2), 0);
    cfg.zipf = &z;
    cfg.requests = 4000;
    cfg.pipeline = 8;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    assert_int_equal(s->authorize, 4000);
    /* Each merchant within 5 standard deviations of its share; m-0 is 1/H(8, 1.2) = 0.386. */
    for (unsigned m = 0; m < cfg.merchants; m++) {
        double p = mix_zipf_prob(&z, m), sd = sqrt(4000 * p * (1 - p));
        assert_true(fabs(s->per_merchant[m] - 4000 * p) <= 5 * sd + 1);
    }
    assert_true(s->per_merchant[0] > 0.35 * 4000);
    free(s);
    mix_zipf_free(&z);

    /* Without --zipf: merchants in turn, exactly uniform. */
    s = srv_start();
    srv_run(s);
    cfg_for(&cfg, s, SC_AUTHORIZE);
    cfg.requests = 4000;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    for (unsigned m = 0; m < cfg.merchants; m++)
        assert_int_equal(s->per_merchant[m], 4000 / cfg.merchants);
    free(s);
}

/* The server closes every 7th response: the client reconnects and loses nothing. */
static void loop_reconnects_after_close(void **state)
{
    struct srv *s = srv_start();
    s->close_every = 7;
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_HEALTHZ);
    cfg.requests = 300;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    assert_int_equal(result.counts.responses, 300);
    assert_int_equal(result.counts.status[200], 300);
    assert_int_equal(result.counts.errors + result.counts.timeouts, 0);
    /* 42 closes; each was replaced, except at most one per connection at the end. */
    assert_true(s->accepted >= 4 + 300 / 7 - 4 && s->accepted <= 4 + 300 / 7);
    free(s);
}

/* A server that never answers: requests time out and the run still ends on time. */
static void loop_times_out(void **state)
{
    struct srv *s = srv_start();
    s->mute = true;
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_AUTHORIZE);
    cfg.connections = 2;
    cfg.timeout_ms = 100;
    cfg.duration_ns = 500 * 1000000ull;
    uint64_t t0 = now_ns();
    assert_int_equal(run(&cfg, &result), 0);
    uint64_t took_ms = (now_ns() - t0) / 1000000;
    srv_stop(s);
    free(s);
    assert_int_equal(result.counts.responses, 0);
    assert_true(result.counts.timeouts >= 2 * 3); /* ~4 rounds of 2 connections */
    assert_true(took_ms >= 500 && took_ms < 500 + 3 * 100 + 500);
}

/* Open loop against a server that never answers: every slot of the schedule is either
 * sent (and times out) or reported missed; none is lost from the account. */
static void loop_open_loop_accounts_every_slot(void **state)
{
    struct srv *s = srv_start();
    s->mute = true;
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_HEALTHZ);
    cfg.connections = 1;
    cfg.rate = 1000;
    cfg.timeout_ms = 100;
    cfg.duration_ns = 500 * 1000000ull;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    free(s);
    assert_int_equal(result.counts.responses, 0);
    assert_true(result.counts.timeouts >= 2);
    assert_true(result.counts.missed > 400);
    assert_int_equal(result.counts.timeouts + result.counts.errors + result.counts.missed, 500);
}

/* One 150 ms stall of the server. Closed loop: only the stalled request sees it. Open
 * loop: every request scheduled during the stall is charged its wait, so the tail
 * shows it (no coordinated omission). */
static void loop_open_loop_counts_the_stall(void **state)
{
    uint64_t p95[2];
    for (int open = 0; open < 2; open++) {
        struct srv *s = srv_start();
        s->stall_at = 50;
        s->stall_ms = 150;
        srv_run(s);
        struct load_config cfg;
        cfg_for(&cfg, s, SC_HEALTHZ);
        cfg.connections = 1;
        cfg.rate = open ? 1000 : 0;
        cfg.duration_ns = 1000 * 1000000ull;
        cfg.requests = open ? 0 : 1000;
        assert_int_equal(run(&cfg, &result), 0);
        srv_stop(s);
        free(s);
        assert_int_equal(result.counts.errors + result.counts.timeouts, 0);
        assert_true(result.hist.max_us >= 150000);
        p95[open] = loadstats_hist_percentile(&result.hist, 0.95);
        if (open) { /* the rate is kept: ~1000 requests in the second */
            assert_int_equal(result.counts.responses + result.counts.missed, 1000);
            assert_true(result.counts.responses >= 800);
        }
    }
    assert_true(p95[0] < 20000);
    assert_true(p95[1] > 30000);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hist_exact_below_1ms),
        cmocka_unit_test(hist_buckets_bound_the_error),
        cmocka_unit_test(hist_tail_percentiles),
        cmocka_unit_test(hist_overflow_merge_and_empty),
        cmocka_unit_test(hist_percentiles_match_sorted),
        cmocka_unit_test(zipf_sampler_follows_the_distribution),
        cmocka_unit_test(mix_shares_over_many_draws),
        cmocka_unit_test(sign_matches_spec_string_to_sign),
        cmocka_unit_test(keys_provision_makes_and_reuses),
        cmocka_unit_test(keys_reload_signals_the_owner),
        cmocka_unit_test(req_format_get_and_post),
        cmocka_unit_test(resp_whole_and_split_at_every_byte),
        cmocka_unit_test(resp_pipelined),
        cmocka_unit_test(resp_rejects_what_it_cannot_frame),
        cmocka_unit_test(json_string_finds_members_only),
        cmocka_unit_test(loop_mixed_pipelined),
        cmocka_unit_test(loop_lifecycle_shares),
        cmocka_unit_test(loop_replay_marks),
        cmocka_unit_test(loop_deep_pipeline),
        cmocka_unit_test(loop_zipf_skews_merchants),
        cmocka_unit_test(loop_reconnects_after_close),
        cmocka_unit_test(loop_times_out),
        cmocka_unit_test(loop_open_loop_accounts_every_slot),
        cmocka_unit_test(loop_open_loop_counts_the_stall),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
