/*
 * Tests of engine/sign.c (included, to reach its HMAC): golden vectors computed outside
 * this code (Python's hmac, see docs/auth.md), RFC 4231 vectors, agreement with
 * OpenSSL's HMAC() for keys and messages of many lengths, every single-byte change of a
 * signed field failing, the ±300 s window at its edges, strict timestamp and signature
 * shapes, unknown keys, and no allocation by libcrypto on the verification path.
 */
#include "engine/sign.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>

/* The worked example of docs/auth.md. */
#define G_SECRET "rps_5793934f87138344251d3c564a4c0bed74dc6167272ab13240403af21e652653"
#define G_TS     "1795600800"
#define G_NOW    1795600800
#define G_TARGET "/v1/payments/authorize"
#define G_IDEM   "order-77-auth"
#define G_BODY                                                                                     \
    "{\"merchant_id\":\"m-1\",\"amount\":15000,\"currency\":\"KRW\",\"reference\":\"order-77\"}"
#define G_STRING                                                                                   \
    G_TS "\nPOST\n" G_TARGET "\n" G_IDEM "\n"                                                      \
         "3f1549c52dd085ff2c36fee6c268ef0a3101f70f1be72d92883e803b97171676"
#define G_SIG     "v1=48804552b207e3c652e73bb6a0131b4263cc625d309702719bbf7762010c02b2"
#define G_SIG_BAD "v1=48804552b207e3c652e73bb6a0131b4263cc625d309702719bbf7762010c02b3"

/* A GET with a query, no idempotency key and no body. */
#define G2_TARGET    "/v1/merchants/m-1/ledger?after=41&limit=100"
#define G2_SIG       "v1=44b937d2a75322914dadb291834d49c0fa22c2c4d0773aafacf8515b85d97ab1"
#define SHA256_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static struct sign_key golden_key;

/* A request whose fields live in caller buffers, so a test can change any byte. */
struct req_buf {
    char ts[32], method[16], target[128], idem[64], body[256];
    size_t ts_len, method_len, target_len, idem_len, body_len;
};

static void set(char *dst, size_t cap, size_t *len, const char *src)
{
    *len = strlen(src);
    assert_true(*len < cap);
    memcpy(dst, src, *len + 1);
}

static void golden_buf(struct req_buf *b)
{
    set(b->ts, sizeof(b->ts), &b->ts_len, G_TS);
    set(b->method, sizeof(b->method), &b->method_len, "POST");
    set(b->target, sizeof(b->target), &b->target_len, G_TARGET "?x=1");
    set(b->idem, sizeof(b->idem), &b->idem_len, G_IDEM);
    set(b->body, sizeof(b->body), &b->body_len, G_BODY);
}

static struct sign_request view(const struct req_buf *b)
{
    return (struct sign_request){b->ts,         b->ts_len, b->method,   b->method_len, b->target,
                                 b->target_len, b->idem,   b->idem_len, b->body,       b->body_len};
}

static struct sign_request golden_request(void)
{
    return (struct sign_request){G_TS,     strlen(G_TS),     "POST", 4,
                                 G_TARGET, strlen(G_TARGET), G_IDEM, strlen(G_IDEM),
                                 G_BODY,   strlen(G_BODY)};
}

static enum sign_result verify(const struct sign_request *r, const char *sig, int64_t now)
{
    return sign_verify(&golden_key, r, sig, strlen(sig), now);
}

static void test_golden_string_and_signature(void **state)
{
    struct sign_request r = golden_request();
    char s[512], sig[AUTH_SIGNATURE_BYTES + 1] = "";
    assert_int_equal(sign_string(&r, s, sizeof(s)), strlen(G_STRING));
    assert_string_equal(s, G_STRING);
    assert_int_equal(sign_compute(&golden_key, &r, sig), 0);
    assert_string_equal(sig, G_SIG);
    assert_int_equal(verify(&r, G_SIG, G_NOW), SIGN_OK);

    struct sign_request g = {G_TS, strlen(G_TS), "GET", 3, G2_TARGET, strlen(G2_TARGET), NULL,
                             0,    NULL,         0};
    int n = sign_string(&g, s, sizeof(s));
    assert_int_equal(n, strlen(s));
    assert_string_equal(s, G_TS "\nGET\n" G2_TARGET "\n\n" SHA256_EMPTY);
    assert_int_equal(sign_compute(&golden_key, &g, sig), 0);
    assert_string_equal(sig, G2_SIG);
    assert_int_equal(verify(&g, G2_SIG, G_NOW), SIGN_OK);

    /* A buffer one byte short of the string and its NUL. */
    assert_int_equal(sign_string(&r, s, strlen(G_STRING)), -ENOBUFS);
}

static void test_body_hash(void **state)
{
    char hex[SIGN_HEX_BYTES + 1] = "";
    sign_sha256_hex("", 0, hex);
    assert_string_equal(hex, SHA256_EMPTY);
    sign_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* RFC 4231 test cases 1, 2, 3, 6 and 7 (6 and 7 have a 131-byte key, hashed first). */
static void test_rfc4231(void **state)
{
    static const struct {
        const char *key_hex, *data, *mac_hex;
    } cases[] = {
        {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "Hi There",
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {"4a656665", "what do ya want for nothing?",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {NULL, NULL, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {NULL, "Test Using Larger Than Block-Size Key - Hash Key First",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {NULL,
         "This is a test using a larger than block-size key and a larger than block-size "
         "data. The key needs to be hashed before being used by the HMAC algorithm.",
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
        unsigned char key[131], data[64];
        size_t key_len, data_len;
        const char *msg = cases[c].data;
        if (c == 2) { /* 20 x 0xaa key, 50 x 0xdd data */
            memset(key, 0xaa, key_len = 20);
            memset(data, 0xdd, data_len = 50);
            msg = (const char *)data;
        } else if (cases[c].key_hex == NULL) { /* 131 x 0xaa */
            memset(key, 0xaa, key_len = 131);
            data_len = strlen(msg);
        } else {
            key_len = strlen(cases[c].key_hex) / 2;
            for (size_t i = 0; i < key_len; i++)
                sscanf(cases[c].key_hex + 2 * i, "%2hhx", &key[i]);
            data_len = strlen(msg);
        }
        struct sign_key k;
        sign_key_init(&k, (const char *)key, key_len);
        unsigned char mac[32];
        char hex[65] = "";
        hmac_pieces(&k, &msg, &data_len, 1, mac);
        to_hex(mac, 32, hex);
        assert_string_equal(hex, cases[c].mac_hex);
    }
}

static uint32_t rng_state = 12345;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* sign_compute agrees with OpenSSL's HMAC() over sign_string's output, for keys of 0 to
 * 200 bytes (below, at and above the 64-byte block) and bodies of many lengths. */
static void test_agrees_with_openssl(void **state)
{
    char secret[200], body[300], target[100], s[1024];
    for (size_t key_len = 0; key_len <= sizeof(secret); key_len++) {
        for (size_t i = 0; i < key_len; i++)
            secret[i] = (char)(0x21 + rng() % 94);
        size_t body_len = rng() % sizeof(body), target_len = 1 + rng() % (sizeof(target) - 1);
        for (size_t i = 0; i < body_len; i++)
            body[i] = (char)rng(); /* any bytes, newlines included: the body is hashed */
        for (size_t i = 0; i < target_len; i++)
            target[i] = (char)(0x21 + rng() % 94);
        struct sign_request r = {"1700000000", 10,    "PATCH", 5,    target,
                                 target_len,   "k-1", 3,       body, body_len};
        struct sign_key k;
        sign_key_init(&k, secret, key_len);
        char sig[AUTH_SIGNATURE_BYTES];
        assert_int_equal(sign_compute(&k, &r, sig), 0);
        int n = sign_string(&r, s, sizeof(s));
        assert_true(n > 0);
        unsigned char mac[32];
        unsigned int mac_len = 0;
        assert_non_null(
            HMAC(EVP_sha256(), secret, (int)key_len, (unsigned char *)s, (size_t)n, mac, &mac_len));
        char want[AUTH_SIGNATURE_BYTES] = "v1=";
        to_hex(mac, 32, want + 3);
        assert_memory_equal(sig, want, AUTH_SIGNATURE_BYTES);
        assert_int_equal(sign_verify(&k, &r, sig, sizeof(sig), 1700000000), SIGN_OK);
        sign_key_wipe(&k);
    }
}

/* The golden signature of golden_buf()'s request (with a query). */
static char sig_q[AUTH_SIGNATURE_BYTES + 1];

enum field { F_TS, F_METHOD, F_TARGET, F_IDEM, F_BODY };

static char *field_of(struct req_buf *b, enum field f, size_t **len, size_t *cap)
{
    switch (f) {
    case F_TS:
        *len = &b->ts_len, *cap = sizeof(b->ts);
        return b->ts;
    case F_METHOD:
        *len = &b->method_len, *cap = sizeof(b->method);
        return b->method;
    case F_TARGET:
        *len = &b->target_len, *cap = sizeof(b->target);
        return b->target;
    case F_IDEM:
        *len = &b->idem_len, *cap = sizeof(b->idem);
        return b->idem;
    case F_BODY:
        *len = &b->body_len, *cap = sizeof(b->body);
        return b->body;
    }
    fail();
    return NULL;
}

/* Every single-byte substitution, deletion and insertion in field f fails. Returns the
 * number of changed requests tried. */
static int mutate_field(const struct req_buf *orig, enum field f)
{
    struct req_buf b = *orig;
    size_t *len, cap;
    field_of(&b, f, &len, &cap);
    size_t n0 = *len;
    int tried = 0;
    for (size_t i = 0; i <= n0; i++) {
        for (int kind = 0; kind < 3; kind++) {
            if (kind < 2 && i == n0)
                continue;
            b = *orig;
            char *field = field_of(&b, f, &len, &cap);
            if (kind == 0) { /* substitute */
                field[i] = (char)(field[i] == '~' ? '!' : field[i] + 1);
            } else if (kind == 1) { /* delete */
                memmove(field + i, field + i + 1, n0 - i);
                (*len)--;
            } else { /* insert */
                assert_true(n0 + 1 < cap);
                memmove(field + i + 1, field + i, n0 - i + 1);
                field[i] = 'x';
                (*len)++;
            }
            struct sign_request r = view(&b);
            if (verify(&r, sig_q, G_NOW) != SIGN_AUTH_FAILED)
                fail_msg("field %d change %d at %zu verified: %.*s", f, kind, i, (int)*len, field);
            tried++;
        }
    }
    return tried;
}

static void test_every_byte_change_fails(void **state)
{
    struct req_buf orig, b;
    golden_buf(&orig);
    struct sign_request r = view(&orig);
    assert_int_equal(sign_compute(&golden_key, &r, sig_q), 0);
    assert_int_equal(verify(&r, sig_q, G_NOW), SIGN_OK);
    /* target = path and query: every byte of both, and the '?' between them. */
    static const enum field fields[] = {F_TS, F_METHOD, F_TARGET, F_IDEM, F_BODY};
    for (size_t f = 0; f < ARRAY_LEN(fields); f++) {
        size_t *len, cap;
        field_of(&orig, fields[f], &len, &cap);
        assert_int_equal(mutate_field(&orig, fields[f]), 3 * *len + 1);
    }

    /* The last digits of the timestamp change it by seconds only: still inside the window
     * and well formed, so it is the MAC that refuses it. */
    for (int d = 1; d <= 9; d++) {
        b = orig;
        b.ts[b.ts_len - 1] = (char)('0' + d);
        r = view(&b);
        int64_t ts;
        assert_int_equal(sign_timestamp_parse(b.ts, b.ts_len, &ts), 0);
        assert_true(ts - G_NOW <= AUTH_CLOCK_SKEW_MAX_S);
        assert_int_equal(verify(&r, sig_q, G_NOW), SIGN_AUTH_FAILED);
    }
    /* No idempotency key where one was signed. */
    b = orig;
    b.idem_len = 0;
    r = view(&b);
    assert_int_equal(verify(&r, sig_q, G_NOW), SIGN_AUTH_FAILED);
}

static void test_signature_shape(void **state)
{
    struct sign_request r = golden_request();
    char sig[AUTH_SIGNATURE_BYTES + 2];
    memcpy(sig, G_SIG, sizeof(G_SIG));
    for (size_t i = 0; i < AUTH_SIGNATURE_BYTES; i++) { /* every byte of it */
        char saved = sig[i];
        sig[i] = saved == 'a' ? 'b' : 'a';
        assert_int_equal(verify(&r, sig, G_NOW), SIGN_AUTH_FAILED);
        sig[i] = saved;
    }
    assert_int_equal(verify(&r, sig, G_NOW), SIGN_OK);
    /* Upper-case hex, another version, missing prefix, extra or missing bytes. */
    char upper[sizeof(G_SIG)];
    memcpy(upper, G_SIG, sizeof(G_SIG));
    for (size_t i = 3; upper[i]; i++)
        if (upper[i] >= 'a' && upper[i] <= 'f')
            upper[i] = (char)(upper[i] - 'a' + 'A');
    assert_int_equal(verify(&r, upper, G_NOW), SIGN_AUTH_FAILED);
    char v2[sizeof(G_SIG)];
    memcpy(v2, G_SIG, sizeof(G_SIG));
    v2[1] = '2';
    assert_int_equal(verify(&r, v2, G_NOW), SIGN_AUTH_FAILED);
    assert_int_equal(verify(&r, G_SIG + 3, G_NOW), SIGN_AUTH_FAILED);
    assert_int_equal(verify(&r, G_SIG " ", G_NOW), SIGN_AUTH_FAILED);
    assert_int_equal(verify(&r, " " G_SIG, G_NOW), SIGN_AUTH_FAILED);
    assert_int_equal(verify(&r, G_SIG ",v1=00", G_NOW), SIGN_AUTH_FAILED);
    assert_int_equal(sign_verify(&golden_key, &r, G_SIG, AUTH_SIGNATURE_BYTES - 1, G_NOW),
                     SIGN_AUTH_FAILED);
    assert_int_equal(verify(&r, "", G_NOW), SIGN_AUTH_FAILED);
    assert_int_equal(sign_verify(&golden_key, &r, NULL, 0, G_NOW), SIGN_AUTH_FAILED);
}

/* now - ts of 0, ±299 and ±300 s pass; ±301 s and far off fail. */
static void test_window_edges(void **state)
{
    struct sign_request r = golden_request();
    static const int64_t pass[] = {0, 1, -1, 299, -299, 300, -300};
    static const int64_t refuse[] = {301, -301, 302, -302, 3600, -3600, G_NOW, -G_NOW};
    for (size_t i = 0; i < ARRAY_LEN(pass); i++)
        assert_int_equal(verify(&r, G_SIG, G_NOW + pass[i]), SIGN_OK);
    for (size_t i = 0; i < ARRAY_LEN(refuse); i++)
        assert_int_equal(verify(&r, G_SIG, G_NOW + refuse[i]), SIGN_AUTH_FAILED);
}

/* Timestamps outside the strict form fail even when correctly signed as sent. */
static void test_timestamp_form(void **state)
{
    static const char *const bad[] = {
        "",           "01795600800", "+1795600800",  " 1795600800", "1795600800 ",
        "17956008a0", "-1795600800", "1795600800.0", "0x6b06ca20",  "1795600800000",
        "１7956008"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        struct sign_request r = golden_request();
        r.timestamp = bad[i];
        r.timestamp_len = strlen(bad[i]);
        char sig[AUTH_SIGNATURE_BYTES + 1] = "";
        assert_int_equal(sign_compute(&golden_key, &r, sig), 0);
        assert_int_equal(verify(&r, sig, G_NOW), SIGN_AUTH_FAILED);
        int64_t v;
        assert_int_equal(sign_timestamp_parse(bad[i], strlen(bad[i]), &v), -EINVAL);
    }
    int64_t v = -1;
    assert_int_equal(sign_timestamp_parse("0", 1, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(sign_timestamp_parse("253402300799", 12, &v), 0);
    assert_int_equal(v, 253402300799LL);
}

static void test_unknown_key_and_other_secret(void **state)
{
    struct sign_request r = golden_request();
    assert_int_equal(sign_verify(NULL, &r, G_SIG, strlen(G_SIG), G_NOW), SIGN_AUTH_FAILED);
    /* The secret differing in its last character. */
    char other[] = G_SECRET;
    other[sizeof(other) - 2] ^= 1;
    struct sign_key k;
    sign_key_init(&k, other, strlen(other));
    assert_int_equal(sign_verify(&k, &r, G_SIG, strlen(G_SIG), G_NOW), SIGN_AUTH_FAILED);
    /* The secret's bytes exactly as printed: without its prefix it is another key. */
    sign_key_init(&k, G_SECRET + 4, strlen(G_SECRET) - 4);
    assert_int_equal(sign_verify(&k, &r, G_SIG, strlen(G_SIG), G_NOW), SIGN_AUTH_FAILED);
    sign_key_wipe(&k);
    static const struct sign_key zero;
    assert_memory_equal(&k, &zero, sizeof(k));
}

/* A '\n' in a signed field would make the string ambiguous: refused both ways. */
static void test_newline_in_field(void **state)
{
    struct sign_request r = golden_request();
    r.idempotency_key = "a\nb";
    r.idempotency_key_len = 3;
    char sig[AUTH_SIGNATURE_BYTES], s[512];
    assert_int_equal(sign_compute(&golden_key, &r, sig), -EINVAL);
    assert_int_equal(sign_string(&r, s, sizeof(s)), -EINVAL);
    /* Even with a MAC over exactly those bytes, verification refuses. */
    struct sign_request ok = golden_request();
    ok.idempotency_key = "a\nb";
    ok.idempotency_key_len = 3;
    const char *p[PIECES_MAX];
    size_t l[PIECES_MAX];
    char body_hex[SIGN_HEX_BYTES];
    sign_sha256_hex(ok.body, ok.body_len, body_hex);
    size_t n = pieces(&ok, body_hex, p, l);
    unsigned char mac[32];
    hmac_pieces(&golden_key, p, l, n, mac);
    memcpy(sig, "v1=", 3);
    to_hex(mac, 32, sig + 3);
    assert_int_equal(sign_verify(&golden_key, &ok, sig, sizeof(sig), G_NOW), SIGN_AUTH_FAILED);
}

/* ---- no allocation --------------------------------------------------------------- */

static unsigned crypto_allocs;

static void *count_malloc(size_t n, const char *file, int line)
{
    crypto_allocs++;
    return malloc(n);
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
    crypto_allocs++;
    return realloc(p, n);
}

static void count_free(void *p, const char *file, int line)
{
    free(p);
}

static void test_no_allocation(void **state)
{
    struct sign_request r = golden_request();
    char sig[AUTH_SIGNATURE_BYTES];
    crypto_allocs = 0;
    struct sign_key k;
    sign_key_init(&k, G_SECRET, strlen(G_SECRET));
    for (int i = 0; i < 100; i++) {
        assert_int_equal(sign_verify(&k, &r, G_SIG, strlen(G_SIG), G_NOW), SIGN_OK);
        assert_int_equal(sign_verify(&k, &r, G_SIG_BAD, strlen(G_SIG_BAD), G_NOW),
                         SIGN_AUTH_FAILED);
        assert_int_equal(sign_compute(&k, &r, sig), 0);
    }
    assert_int_equal(crypto_allocs, 0);
    /* The counter works: OpenSSL's own HMAC() allocates. */
    unsigned char mac[32];
    unsigned int mac_len;
    HMAC(EVP_sha256(), "k", 1, (const unsigned char *)"m", 1, mac, &mac_len);
    assert_true(crypto_allocs > 0);
}

int main(void)
{
    /* Before libcrypto allocates anything, or the hooks are refused. */
    if (!CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free)) {
        fprintf(stderr, "CRYPTO_set_mem_functions refused\n");
        return 1;
    }
    sign_key_init(&golden_key, G_SECRET, strlen(G_SECRET));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_allocation),
        cmocka_unit_test(test_golden_string_and_signature),
        cmocka_unit_test(test_body_hash),
        cmocka_unit_test(test_rfc4231),
        cmocka_unit_test(test_agrees_with_openssl),
        cmocka_unit_test(test_every_byte_change_fails),
        cmocka_unit_test(test_signature_shape),
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_timestamp_form),
        cmocka_unit_test(test_unknown_key_and_other_secret),
        cmocka_unit_test(test_newline_in_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
