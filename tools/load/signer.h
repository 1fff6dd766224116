/*
 * The keys `ringpay load` signs with (SPEC §3): one merchant key per merchant m-0 ..
 * m-(M-1), read from a file of the JSON lines `ringpay keys add` prints
 * ({"key_id","merchant_id","scope","secret"}, one per line; lines of other merchants
 * are ignored). A request is signed with its merchant's key, at the time it is
 * formatted; requests without a merchant (GET /healthz) go unsigned.
 *
 * Provisioning (--keys-data DIR): the load makes the keys it needs in an engine's data
 * directory through the key file API (store/keyfile.h, as `ringpay keys add` does) and
 * keeps their secrets in a file of its own (default DIR/LOAD_KEYS_FILE, mode 0600, the
 * same JSON lines, replaced atomically), so that later runs reuse them instead of adding
 * keys again (a merchant may have only KEYS_ACTIVE_PER_MERCHANT_MAX active keys). A key
 * of that file is reused while DIR/keys still has it active for the same merchant; keys
 * of the file for merchants beyond this run's are kept too. Then a running engine is
 * told to reload (SIGHUP to the pid in DIR/LOCK, held by the engine's flock).
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

#define LOAD_KEYS_FILE "load.keys"

/*
 * Makes sure `path` holds, for each merchant m-0 .. m-(merchants-1), a key that DIR/keys
 * has active for it: keeps those it has, adds a key to DIR/keys (creating DIR when it
 * does not exist) for each one missing, and rewrites path (mode 0600, atomically) when
 * it added any. *created: how many keys were added; *last_created: the index i of the
 * last merchant m-i given a new key (-1: none), the one to probe after a reload.
 * Returns 0, or -errno with one line
 * in why: a refused key file, a merchant that already has its active keys but none of
 * them in path (-EDQUOT: revoke one, or pass the file that holds them), an I/O error.
 */
int load_keys_provision(const char *dir, const char *path, unsigned merchants, unsigned *created,
                        long *last_created, char *why, size_t why_bytes);

/*
 * Tells the engine that owns DIR to reload its keys: when DIR/LOCK is held (flock) by
 * a running process, sends SIGHUP to the pid the file holds. Returns 1 with *pid set
 * when it signalled, 0 when no engine runs on DIR, or -errno with one line in why.
 */
int load_keys_reload(const char *dir, long *pid, char *why, size_t why_bytes);

/* The loadstats_signer_fn: ctx is a struct load_keys. Thread-safe (reads only). */
int load_keys_sign(void *ctx, const struct loadstats_req *req, char *out, size_t cap);

#endif
