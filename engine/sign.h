/*
 * Request signatures (SPEC §3), pure: no sockets, files or clocks; the time is passed in.
 *
 * A signed request carries X-Ringpay-Key, X-Ringpay-Timestamp and
 * X-Ringpay-Signature: v1=<hex>, where <hex> is the lower-case hex of
 *
 *     HMAC-SHA256(secret, timestamp "\n" METHOD "\n" request-target "\n"
 *                         idempotency-key "\n" hex(SHA-256(body)))
 *
 * with the secret's ASCII bytes exactly as printed as the HMAC key; `timestamp` is the
 * header's value as sent, `request-target` the path and query as sent, `idempotency-key`
 * the Idempotency-Key header's value or empty, and hex() lower-case. docs/auth.md shows a
 * worked example.
 *
 * Rules sign_verify() enforces, every failure giving the same SIGN_AUTH_FAILED:
 *   - a key is given (NULL stands for an unknown or revoked key id);
 *   - the timestamp is 1..AUTH_TIMESTAMP_MAX_DIGITS decimal digits, no sign, no
 *     leading zero, no space, and within AUTH_CLOCK_SKEW_MAX_S of now_s either way
 *     (exactly 300 s off passes, 301 s fails);
 *   - the signature is exactly "v1=" and 64 lower-case hex digits;
 *   - no signed field holds a '\n' (the separator; HTTP never lets one through, this
 *     keeps the string to sign unambiguous whatever the caller passes);
 *   - the MAC matches, compared with CRYPTO_memcmp (constant time).
 * The checks of public values (key, timestamp, shape) fail fast before any hashing, so
 * a flood of junk costs no SHA-256 of its bodies; their timing reveals only what the
 * sender already knows. The one secret-dependent comparison is constant time.
 *
 * HMAC is built here (RFC 2104) on OpenSSL's SHA256_Init/Update/Final, because
 * OpenSSL 3.0's HMAC() and EVP_MAC allocate on every call (13 allocations per HMAC()
 * measured with CRYPTO_set_mem_functions) and verification must not allocate. A
 * struct sign_key holds the inner and outer SHA-256 states after the padded key, so a
 * verification hashes only the message: no allocation, no lock, safe to call from
 * many threads on a shared const key. tests/engine/sign_test.c checks it against RFC
 * 4231 and against OpenSSL's HMAC() for keys and messages of many lengths.
 */
#ifndef RINGPAY_ENGINE_SIGN_H
#define RINGPAY_ENGINE_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Lower-case hex of a SHA-256 or HMAC-SHA256 value. */
#define SIGN_HEX_BYTES 64

/* Bytes of OpenSSL's SHA256_CTX (asserted in sign.c). */
#define SIGN_SHA256_STATE_BYTES 112

/* An HMAC-SHA256 key, prepared once (sign_key_init) and then only read. Opaque: the
 * two SHA-256 states after absorbing key^ipad and key^opad. It is key material: wipe
 * it (sign_key_wipe) before its memory is freed or reused. */
struct sign_key {
    union {
        unsigned char bytes[2][SIGN_SHA256_STATE_BYTES];
        uint64_t align;
    } state;
};

/* The signed parts of a request, each a pointer and a length (not NUL-terminated).
 * A pointer may be NULL only when its length is 0. */
struct sign_request {
    const char *timestamp; /* X-Ringpay-Timestamp value as sent */
    size_t timestamp_len;
    const char *method; /* "POST", "GET", ... */
    size_t method_len;
    const char *target; /* path and query exactly as sent */
    size_t target_len;
    const char *idempotency_key; /* the header's value; NULL/0 when absent */
    size_t idempotency_key_len;
    const char *body; /* the body as received (after chunked decoding) */
    size_t body_len;
};

enum sign_result {
    SIGN_OK = 0,
    SIGN_AUTH_FAILED = 1, /* one answer for every failure: 401 authentication_failed */
};

/* Prepares key from the secret's bytes (any length; SPEC §3 secrets are
 * KEY_SECRET_BYTES of ASCII). */
void sign_key_init(struct sign_key *key, const char *secret, size_t secret_len);

/* Overwrites key so that no key material stays in memory (OPENSSL_cleanse). */
void sign_key_wipe(struct sign_key *key);

/*
 * The verification entry point. key is the key the request's X-Ringpay-Key names, or
 * NULL when that id is unknown or revoked; signature is the X-Ringpay-Signature value;
 * now_s is the server's clock in unix seconds. Returns SIGN_OK only when every rule of
 * the file comment holds, else SIGN_AUTH_FAILED with no hint which. Allocates nothing.
 */
enum sign_result sign_verify(const struct sign_key *key, const struct sign_request *req,
                             const char *signature, size_t signature_len, int64_t now_s);

/* sign_verify of a body the caller hashed as it streamed by (settle's uploads):
 * body_hex is its SIGN_HEX_BYTES lower-case hex SHA-256 (NULL: hash req->body), and
 * req->body is then unused. */
enum sign_result sign_verify_hashed(const struct sign_key *key, const struct sign_request *req,
                                    const char *body_hex, const char *signature,
                                    size_t signature_len, int64_t now_s);

/*
 * Writes the X-Ringpay-Signature value, "v1=" and 64 hex digits (AUTH_SIGNATURE_BYTES,
 * no NUL), for req into out. Returns 0, or -EINVAL when a signed field holds a '\n'
 * (such a request could not verify). The timestamp is signed as given, unchecked.
 */
int sign_compute(const struct sign_key *key, const struct sign_request *req,
                 char out[AUTH_SIGNATURE_BYTES]);

/*
 * Writes the string to sign for req into out (cap bytes, NUL-terminated) for tests,
 * docs and debugging clients. Returns its length without the NUL, -ENOBUFS when it does
 * not fit, or -EINVAL when a signed field holds a '\n'.
 */
int sign_string(const struct sign_request *req, char *out, size_t cap);

/* Writes the lower-case hex of SHA-256(data) (SIGN_HEX_BYTES, no NUL). */
void sign_sha256_hex(const void *data, size_t len, char out[SIGN_HEX_BYTES]);

/* SHA-256 of data given in pieces (a streamed body): init, update per piece, then the
 * lower-case hex. The state is SIGN_SHA256_STATE_BYTES of OpenSSL's SHA256_CTX. */
struct sign_sha256 {
    union {
        unsigned char bytes[SIGN_SHA256_STATE_BYTES];
        uint64_t align;
    } state;
};
void sign_sha256_init(struct sign_sha256 *h);
void sign_sha256_update(struct sign_sha256 *h, const void *data, size_t len);
void sign_sha256_final_hex(struct sign_sha256 *h, char out[SIGN_HEX_BYTES]);

/*
 * Parses an X-Ringpay-Timestamp value by the rules above (digits only, no leading
 * zero, at most AUTH_TIMESTAMP_MAX_DIGITS). Returns 0 and *out, or -EINVAL.
 */
int sign_timestamp_parse(const char *text, size_t len, int64_t *out);

#ifdef __cplusplus
}
#endif

#endif
