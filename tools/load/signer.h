/*
 * The keys `ringpay load` signs with (SPEC §3): one merchant key per merchant m-0 ..
 * m-(M-1), read from a file of the JSON lines `ringpay keys add` prints
 * ({"key_id","merchant_id","scope","secret"}, one per line; lines of other merchants
 * are ignored). A request is signed with its merchant's key, at the time it is
 * formatted; requests without a merchant (GET /healthz) go unsigned.
 */
#ifndef RINGPAY_TOOLS_LOAD_SIGNER_H
#define RINGPAY_TOOLS_LOAD_SIGNER_H

#include <stddef.h>

#include "tools/load/loadstats.h"

struct load_keys;

/*
 * Reads path for merchants m-0 .. m-(merchants-1). Fails with -errno and one line in
 * why when the file cannot be read, a line is not such a key, or a merchant has no key.
 */
int load_keys_read(const char *path, unsigned merchants, struct load_keys **out, char *why,
                   size_t why_bytes);

/* Wipes the prepared keys and frees them. NULL is a no-op. */
void load_keys_free(struct load_keys *keys);

/* The loadstats_signer_fn: ctx is a struct load_keys. Thread-safe (reads only). */
int load_keys_sign(void *ctx, const struct loadstats_req *req, char *out, size_t cap);

#endif
