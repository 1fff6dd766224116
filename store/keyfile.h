/*
 * The API key file (SPEC §3): DIR/keys in a data directory, and the immutable key set
 * a reactor reads without locks.
 *
 * Format (version 1), text, one key per line, every line ending in '\n', fields
 * separated by one space, nothing else (no comments, blank lines or spaces at the end):
 *
 *     ringpay-keys 1
 *     KEY_ID STATUS SCOPE CREATED SECRET [MERCHANT_ID]
 *
 *   KEY_ID       "rpk_" and 16 lower-case hex digits (KEY_ID_BYTES), unique in the file
 *   STATUS       "active" or "revoked"
 *   SCOPE        "merchant", "read" or "admin"
 *   CREATED      unix seconds, decimal, no leading zero
 *   SECRET       "rps_" and 64 lower-case hex digits (KEY_SECRET_BYTES): 32 bytes of
 *                getrandom(2). The HMAC key is these 68 ASCII bytes as printed.
 *   MERCHANT_ID  1-64 of [A-Za-z0-9_-]; present for merchant and read keys, absent for
 *                admin keys (which belong to no merchant). Last, so that no value of it
 *                can be mistaken for a missing field.
 *
 * Lines keep the order keys were added in. Revoked keys stay (audit trail) and count
 * towards KEYFILE_KEYS_MAX. At most KEYS_ACTIVE_PER_MERCHANT_MAX active keys per
 * merchant, and as many active admin keys (one group of their own).
 *
 * Reading is strict: a file that is not exactly this (another header, a bad field, a
 * line over KEYFILE_LINE_MAX_BYTES, a NUL, a last line without '\n', a duplicate key id,
 * too many active keys for a merchant, more than KEYFILE_KEYS_MAX keys, a file over
 * KEYFILE_MAX_BYTES, not a regular file, or readable or writable by group or others) is
 * refused with one line naming the file, the line number when there is one, and what
 * is wrong. No key of a refused file is used. A missing DIR/keys is an empty key set.
 *
 * Writing (add, revoke) is a read-modify-write under an exclusive flock(2) of
 * DIR/keys.lock (so two `ringpay keys` never lose each other's change), and the new
 * content replaces the file atomically: DIR/keys.tmp is created with mode 0600, written,
 * fsynced, renamed over DIR/keys, and DIR is fsynced. A crash or an I/O error at any
 * step leaves the old file or the new one whole, never a mix; before the rename, the
 * old one, and the temporary file is removed. The rendered content is parsed back by
 * the reader's rules before it is written. A reader (serve on SIGHUP) never takes the
 * lock: rename(2) makes it see one version or the other.
 *
 * The key set (struct keyset) is one allocation: the keys in file order and an
 * open-addressing index by key id. It is never changed after keyfile_load returns, so
 * any number of threads may read it without locks; it is freed as a whole, with its key
 * material wiped. It holds each key's prepared HMAC state (engine/sign.h), not the
 * secret text.
 */
#ifndef RINGPAY_STORE_KEYFILE_H
#define RINGPAY_STORE_KEYFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/limits.h"
#include "engine/sign.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KEYFILE_NAME      "keys"
#define KEYFILE_TMP_NAME  "keys.tmp"
#define KEYFILE_LOCK_NAME "keys.lock"
#define KEYFILE_HEADER    "ringpay-keys 1\n"

enum keyfile_scope {
    KEYFILE_SCOPE_MERCHANT = 1, /* every /v1 route of its merchant */
    KEYFILE_SCOPE_READ,         /* its merchant's GETs only */
    KEYFILE_SCOPE_ADMIN,        /* no merchant: the back office and every GET */
};

enum keyfile_status {
    KEYFILE_ACTIVE = 1,
    KEYFILE_REVOKED,
};

/* One key of a key set. */
struct keyfile_key {
    char key_id[KEY_ID_BYTES + 1];
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1]; /* "" for admin keys */
    size_t merchant_id_len;
    int64_t created_s;
    enum keyfile_scope scope;
    enum keyfile_status status;
    struct sign_key sign; /* the prepared HMAC key */
};

/* A new key as `keyfile_add` made it: the only time its secret leaves the file. */
struct keyfile_new_key {
    char key_id[KEY_ID_BYTES + 1];
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1];
    char secret[KEY_SECRET_BYTES + 1];
    int64_t created_s;
    enum keyfile_scope scope;
};

struct keyset; /* opaque, immutable */

/*
 * Loads DIR/keys into a new key set (*out, freed with keyfile_free). A missing file
 * gives an empty set. Returns 0, or -errno with one line (no newline) in err: -EINVAL
 * for a file the rules above refuse, -EACCES for its mode, -EFBIG when it is too large,
 * -ENOMEM, or the error of open/read (e.g. -ENOENT when DIR does not exist).
 */
int keyfile_load(const char *dir, struct keyset **out, char *err, size_t err_size);

/* Wipes the key material and frees the set. NULL is a no-op. */
void keyfile_free(struct keyset *set);

size_t keyfile_count(const struct keyset *set);

/* The i-th key in file order (i < keyfile_count). */
const struct keyfile_key *keyfile_at(const struct keyset *set, size_t i);

/* The key with this id (any status), or NULL. id need not be NUL-terminated. */
const struct keyfile_key *keyfile_find(const struct keyset *set, const char *id, size_t len);

/* The HMAC key of an ACTIVE key with this id, or NULL for an unknown or revoked id:
 * exactly what sign_verify() takes. */
const struct sign_key *keyfile_verify_key(const struct keyset *set, const char *id, size_t len);

/*
 * Adds a key: scope MERCHANT or READ needs merchant_id (1-64 of [A-Za-z0-9_-]), ADMIN
 * needs NULL. Creates DIR (mode 0700) when it does not exist. The key id and secret come
 * from getrandom(2); created_s is now_s. Returns 0 with *out filled, or -errno and one
 * line in err: -EINVAL for bad arguments or a refused existing file, -EDQUOT when the
 * merchant (or the admin group) already has KEYS_ACTIVE_PER_MERCHANT_MAX active keys,
 * -ENOSPC when the file holds KEYFILE_KEYS_MAX keys, -EWOULDBLOCK when another process
 * holds the lock for longer than KEYFILE_LOCK_WAIT_MS, or an I/O error (the old file
 * is then intact).
 */
int keyfile_add(const char *dir, enum keyfile_scope scope, const char *merchant_id, int64_t now_s,
                struct keyfile_new_key *out, char *err, size_t err_size);

/*
 * Marks key_id revoked. Returns 0 (also when it already was revoked; *was_active then
 * false), or -ENOENT when the file has no such key, or the errors of keyfile_add.
 */
int keyfile_revoke(const char *dir, const char *key_id, bool *was_active, char *err,
                   size_t err_size);

/* Parses "merchant", "read", "admin"; -1 for anything else. */
int keyfile_scope_parse(const char *name);

const char *keyfile_scope_name(enum keyfile_scope scope);
const char *keyfile_status_name(enum keyfile_status status);

/* Whether s is a key id: "rpk_" and KEY_ID_HEX_DIGITS lower-case hex digits. */
bool keyfile_key_id_valid(const char *s, size_t len);

/* Whether s is a merchant id by SPEC §2 (1-64 of [A-Za-z0-9_-]). */
bool keyfile_merchant_id_valid(const char *s, size_t len);

/*
 * Fault injection, for tests only (not thread-safe): the next call of the chosen step
 * of the atomic replace fails with -err (once, or every time when persistent). A
 * failing write first writes half of its bytes for real (a short write). NULL or
 * step KEYFILE_FAULT_NONE turns it off.
 */
enum keyfile_fault_step {
    KEYFILE_FAULT_NONE = 0,
    KEYFILE_FAULT_OPEN,      /* creating DIR/keys.tmp */
    KEYFILE_FAULT_WRITE,     /* writing it */
    KEYFILE_FAULT_FSYNC,     /* fsync of it */
    KEYFILE_FAULT_RENAME,    /* rename over DIR/keys */
    KEYFILE_FAULT_FSYNC_DIR, /* fsync of DIR after the rename */
};

struct keyfile_fault {
    enum keyfile_fault_step step;
    int err; /* a positive errno value */
    bool persistent;
};

void keyfile_fault_set(const struct keyfile_fault *fault);

#ifdef __cplusplus
}
#endif

#endif
