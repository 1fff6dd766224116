/*
 * Request signatures (see sign.h for the scheme and every rule).
 *
 * HMAC-SHA256 per RFC 2104 on OpenSSL's low-level SHA-256, which works on a caller's
 * SHA256_CTX and never allocates (deprecated since OpenSSL 3.0 in favour of EVP, whose
 * contexts are allocated; hence OPENSSL_SUPPRESS_DEPRECATED here and only here). The
 * string to sign is streamed into the inner hash piece by piece, so verification needs
 * no buffer for it.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "engine/sign.h"

#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "engine/assert.h"

#define SHA256_BLOCK_BYTES 64

_Static_assert(sizeof(SHA256_CTX) == SIGN_SHA256_STATE_BYTES, "sign_key holds two SHA256_CTX");
_Static_assert(AUTH_SIGNATURE_BYTES == 3 + SIGN_HEX_BYTES, "v1= and the hex MAC");

static const char hex_digits[] = "0123456789abcdef";

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 15];
    }
}

static void ctx_load(SHA256_CTX *ctx, const struct sign_key *key, int which)
{
    memcpy(ctx, key->state.bytes[which], sizeof(*ctx));
}

void sign_key_init(struct sign_key *key, const char *secret, size_t secret_len)
{
    ASSERT(key != NULL && (secret != NULL || secret_len == 0));
    unsigned char k[SHA256_BLOCK_BYTES] = {0}, pad[SHA256_BLOCK_BYTES];
    SHA256_CTX ctx;
    if (secret_len > SHA256_BLOCK_BYTES) { /* RFC 2104: a long key is hashed first */
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, secret, secret_len);
        SHA256_Final(k, &ctx);
    } else if (secret_len > 0) {
        memcpy(k, secret, secret_len);
    }
    for (int which = 0; which < 2; which++) {
        unsigned char x = which == 0 ? 0x36 : 0x5c; /* ipad, opad */
        for (size_t i = 0; i < sizeof(pad); i++)
            pad[i] = k[i] ^ x;
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, pad, sizeof(pad));
        memcpy(key->state.bytes[which], &ctx, sizeof(ctx));
    }
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(&ctx, sizeof(ctx));
}

void sign_key_wipe(struct sign_key *key)
{
    ASSERT(key != NULL);
    OPENSSL_cleanse(key, sizeof(*key));
}

void sign_sha256_hex(const void *data, size_t len, char out[SIGN_HEX_BYTES])
{
    ASSERT(data != NULL || len == 0);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, data, len);
    SHA256_Final(md, &ctx);
    to_hex(md, sizeof(md), out);
}

void sign_sha256_init(struct sign_sha256 *h)
{
    ASSERT(h != NULL);
    SHA256_Init((SHA256_CTX *)(void *)h->state.bytes);
}

void sign_sha256_update(struct sign_sha256 *h, const void *data, size_t len)
{
    ASSERT(h != NULL && (data != NULL || len == 0));
    SHA256_Update((SHA256_CTX *)(void *)h->state.bytes, data, len);
}

void sign_sha256_final_hex(struct sign_sha256 *h, char out[SIGN_HEX_BYTES])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256_Final(md, (SHA256_CTX *)(void *)h->state.bytes);
    to_hex(md, sizeof(md), out);
}

static void check_request(const struct sign_request *r)
{
    ASSERT(r != NULL);
    ASSERT(r->timestamp != NULL || r->timestamp_len == 0);
    ASSERT(r->method != NULL || r->method_len == 0);
    ASSERT(r->target != NULL || r->target_len == 0);
    ASSERT(r->idempotency_key != NULL || r->idempotency_key_len == 0);
    ASSERT(r->body != NULL || r->body_len == 0);
}

static int has_newline(const char *s, size_t len)
{
    return len > 0 && memchr(s, '\n', len) != NULL;
}

/* Whether a signed field holds the separator (the body is hashed, so it may). */
static int fields_ambiguous(const struct sign_request *r)
{
    return has_newline(r->timestamp, r->timestamp_len) || has_newline(r->method, r->method_len) ||
           has_newline(r->target, r->target_len) ||
           has_newline(r->idempotency_key, r->idempotency_key_len);
}

#define PIECES_MAX 9

/* The string to sign's pieces in order: field, "\n", field, ... the body hash last. */
static size_t pieces(const struct sign_request *r, const char *body_hex, const char **ptr,
                     size_t *len)
{
    static const char nl[] = "\n";
    const char *p[] = {r->timestamp,       nl, r->method, nl, r->target, nl,
                       r->idempotency_key, nl, body_hex};
    size_t l[] = {r->timestamp_len,       1, r->method_len, 1, r->target_len, 1,
                  r->idempotency_key_len, 1, SIGN_HEX_BYTES};
    _Static_assert(ARRAY_LEN(p) == ARRAY_LEN(l) && ARRAY_LEN(p) == PIECES_MAX, "the pieces");
    for (size_t i = 0; i < ARRAY_LEN(p); i++) {
        ptr[i] = p[i];
        len[i] = l[i];
    }
    return ARRAY_LEN(p);
}

/* HMAC-SHA256 (RFC 2104) of the concatenation of n pieces, from key's prepared states. */
static void hmac_pieces(const struct sign_key *key, const char *const *ptr, const size_t *len,
                        size_t n, unsigned char mac[SHA256_DIGEST_LENGTH])
{
    SHA256_CTX ctx;
    unsigned char inner[SHA256_DIGEST_LENGTH];
    ctx_load(&ctx, key, 0);
    for (size_t i = 0; i < n; i++)
        if (len[i] > 0)
            SHA256_Update(&ctx, ptr[i], len[i]);
    SHA256_Final(inner, &ctx);
    ctx_load(&ctx, key, 1);
    SHA256_Update(&ctx, inner, sizeof(inner));
    SHA256_Final(mac, &ctx);
    OPENSSL_cleanse(&ctx, sizeof(ctx));
}

/* HMAC over the string to sign: "v1=" and the lower-case hex MAC into out. */
static void mac_header(const struct sign_key *key, const struct sign_request *r,
                       const char *given_hex, char out[AUTH_SIGNATURE_BYTES])
{
    char body_hex[SIGN_HEX_BYTES];
    if (given_hex != NULL)
        memcpy(body_hex, given_hex, SIGN_HEX_BYTES);
    else
        sign_sha256_hex(r->body, r->body_len, body_hex);
    const char *ptr[PIECES_MAX];
    size_t len[PIECES_MAX];
    size_t n = pieces(r, body_hex, ptr, len);
    unsigned char mac[SHA256_DIGEST_LENGTH];
    hmac_pieces(key, ptr, len, n, mac);
    memcpy(out, "v1=", 3);
    to_hex(mac, sizeof(mac), out + 3);
}

int sign_timestamp_parse(const char *text, size_t len, int64_t *out)
{
    ASSERT(out != NULL && (text != NULL || len == 0));
    if (len == 0 || len > AUTH_TIMESTAMP_MAX_DIGITS || (text[0] == '0' && len > 1))
        return -EINVAL;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -EINVAL;
        v = v * 10 + (text[i] - '0');
    }
    *out = v;
    return 0;
}

/* The signature's shape: "v1=" and exactly 64 lower-case hex digits. */
static int signature_well_formed(const char *sig, size_t len)
{
    if (len != AUTH_SIGNATURE_BYTES || memcmp(sig, "v1=", 3) != 0)
        return 0;
    for (size_t i = 3; i < len; i++)
        if (!((sig[i] >= '0' && sig[i] <= '9') || (sig[i] >= 'a' && sig[i] <= 'f')))
            return 0;
    return 1;
}

enum sign_result sign_verify(const struct sign_key *key, const struct sign_request *req,
                             const char *signature, size_t signature_len, int64_t now_s)
{
    return sign_verify_hashed(key, req, NULL, signature, signature_len, now_s);
}

enum sign_result sign_verify_hashed(const struct sign_key *key, const struct sign_request *req,
                                    const char *body_hex, const char *signature,
                                    size_t signature_len, int64_t now_s)
{
    check_request(req);
    ASSERT(signature != NULL || signature_len == 0);
    int64_t ts;
    if (key == NULL || sign_timestamp_parse(req->timestamp, req->timestamp_len, &ts) != 0)
        return SIGN_AUTH_FAILED;
    /* Both sides are below 10^12, far from overflow. */
    int64_t skew = ts > now_s ? ts - now_s : now_s - ts;
    if (skew > AUTH_CLOCK_SKEW_MAX_S || !signature_well_formed(signature, signature_len) ||
        fields_ambiguous(req))
        return SIGN_AUTH_FAILED;
    char expect[AUTH_SIGNATURE_BYTES];
    mac_header(key, req, body_hex, expect);
    int diff = CRYPTO_memcmp(expect, signature, AUTH_SIGNATURE_BYTES);
    OPENSSL_cleanse(expect, sizeof(expect));
    return diff == 0 ? SIGN_OK : SIGN_AUTH_FAILED;
}

int sign_compute(const struct sign_key *key, const struct sign_request *req,
                 char out[AUTH_SIGNATURE_BYTES])
{
    ASSERT(key != NULL && out != NULL);
    check_request(req);
    if (fields_ambiguous(req))
        return -EINVAL;
    mac_header(key, req, NULL, out);
    return 0;
}

int sign_string(const struct sign_request *req, char *out, size_t cap)
{
    check_request(req);
    ASSERT(out != NULL && cap > 0);
    if (fields_ambiguous(req))
        return -EINVAL;
    char body_hex[SIGN_HEX_BYTES];
    sign_sha256_hex(req->body, req->body_len, body_hex);
    const char *ptr[PIECES_MAX];
    size_t len[PIECES_MAX], total = 0;
    size_t n = pieces(req, body_hex, ptr, len);
    for (size_t i = 0; i < n; i++)
        total += len[i];
    if (total >= cap || total > INT32_MAX)
        return -ENOBUFS;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (len[i] > 0)
            memcpy(out + o, ptr[i], len[i]);
        o += len[i];
    }
    out[o] = '\0';
    return (int)o;
}
