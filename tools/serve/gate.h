/*
 * The signing gate of `ringpay serve` (SPEC §3): every /v1 request is authenticated on
 * the reactor that read it, before it takes a job, a shard turn or an fsync, so a
 * refused request costs the engine one HMAC at most.
 *
 * gate_check, in order (the first failure is the answer):
 *  1. X-Ringpay-Key, X-Ringpay-Timestamp and X-Ringpay-Signature are each present
 *     exactly once; else 401.
 *  2. sign_verify (engine/sign.h) with the key's prepared HMAC key — NULL for an id that
 *     is unknown or revoked — over the timestamp, the method as sent, the request-target
 *     as sent, the Idempotency-Key (or empty) and the decoded body, within ±300 s of
 *     the server's clock. Every failure of 1 and 2 is the same 401
 *     authentication_failed: no hint which check failed.
 *  3. the key's scope: `merchant` may call every /v1 route; `read` only GET (and HEAD);
 *     `admin` (no merchant) only the engine's GETs — its writes are the back office's.
 *     Outside the scope: 403 forbidden.
 * A pass carries the key's merchant (none for admin): api_decode then refuses another
 * merchant in a path or body (403) and engine_apply answers another merchant's payment
 * 404, as SPEC §3 says.
 *
 * Key sets and reload without locks on the request path: the current set is an
 * immutable snapshot (store/keyfile.h) behind one pointer. gate_reload (the main
 * thread, on SIGHUP) loads the file, publishes the new set with a release store, bumps
 * the epoch, and retires the old set tagged with that epoch. Each reactor, at the start
 * of every loop turn, records the epoch it saw (gate_quiesce); a set read during a
 * turn is used only during that turn. So once every reactor has recorded an epoch at
 * least the retired set's, none can hold it, and gate_collect (the main thread, every
 * tick) frees it. A reactor turns at least every REACTOR_TICK_MS, so a retired set lives
 * about that long; a new set takes effect for the next request that reads the pointer.
 * A file the reader refuses keeps the old set (and gate_reload says why in one line).
 */
#ifndef RINGPAY_TOOLS_SERVE_GATE_H
#define RINGPAY_TOOLS_SERVE_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/sign.h"
#include "net/reactor.h"

struct gate;

/* Who a request passed the gate as. */
struct gate_pass {
    const char *merchant; /* the key's merchant, valid during this turn; NULL: none */
    size_t merchant_len;
    bool admin; /* an admin key (no merchant) */
};

/*
 * Loads DATA/keys (a missing file is an empty set: every signed request is then 401)
 * for `cores` reactors. enabled false (--auth off) makes every check pass without a
 * merchant. Fails with -errno and one line in why (a refused key file).
 */
int gate_create(struct gate **out, const char *data_dir, bool enabled, unsigned cores, char *why,
                size_t why_bytes);

/* Frees every key set. No reactor may run. NULL is a no-op. */
void gate_destroy(struct gate *g);

bool gate_enabled(const struct gate *g);

/* The back office (`ringpay settle`, SPEC §5): every checked route needs an admin key;
 * a merchant or read key is 403 forbidden. Call before any reactor runs. */
void gate_set_admin_only(struct gate *g);

/* Keys in the current set (active and revoked), for the reload log line. */
size_t gate_key_count(const struct gate *g);

/* Main thread: reloads the key file and publishes it. 0, or -errno with one line in
 * why (the old set stays in force). */
int gate_reload(struct gate *g, char *why, size_t why_bytes);

/* Main thread: frees retired sets that no reactor can hold any more. */
void gate_collect(struct gate *g);

/* Reactor `core`, at the start of every loop turn. */
void gate_quiesce(struct gate *g, unsigned core);

/*
 * Reactor thread: checks one /v1 request at now_s (unix seconds). Returns 0 with *pass,
 * or 401 or 403 with a static text for the error body's message in *message.
 */
int gate_check(struct gate *g, const struct reactor_request *rq, int64_t now_s,
               struct gate_pass *pass, const char **message);

/* The signed parts of one request, as pointers (gate_check's steps apart, for a body
 * that streams by: its parts are copied when its head arrives and checked, with the
 * body's hash in body_hex, once the body is complete). */
struct gate_parts {
    const char *key_id;
    size_t key_id_len;
    const char *signature;
    size_t signature_len;
    bool reads; /* GET or HEAD */
    struct sign_request sr;
    const char *body_hex; /* NULL: hash sr.body; else the streamed body's SHA-256 hex */
};

/* Step 1 of gate_check: false when a signing header is missing or repeated. The parts
 * point into rq's buffer. */
bool gate_parts_of(const struct reactor_request *rq, struct gate_parts *gp);

/* Steps 2 and 3 of gate_check over parts: 0 with *pass, or 401/403 and *message. */
int gate_check_parts(struct gate *g, const struct gate_parts *gp, int64_t now_s,
                     struct gate_pass *pass, const char **message);

#endif
