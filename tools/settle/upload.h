/*
 * Bank statement uploads of `ringpay settle` (POST /v1/reconciliation/files, SPEC §5):
 * the body streams through the reactor (net/reactor.h on_body) into a spool file, and
 * is classified only once it is complete and its signature verified.
 *
 * Why spool (decision): the signature (SPEC §3) covers SHA-256 of the body, known only
 * after its last byte. Classifying while the bytes arrive would commit items and
 * publish recon.unmatched events for a body that may turn out unsigned. So the body is
 * written to an unnamed file in the data directory (O_TMPFILE; gone when closed, also
 * after a crash) while it is hashed, in constant memory; then the signature is checked;
 * then the file is read back SETTLE_UPLOAD_CHUNK_BYTES at a time into the classifier
 * (store/settle_store.h settle_recon_*), which commits RECON_COMMIT_LINES lines per
 * transaction. Memory per upload is fixed (its signed parts and the reader); disk is
 * bounded by --recon-max-bytes per upload and SETTLE_UPLOADS_MAX uploads.
 *
 * Chunked bodies stream the same way (the reactor decodes the framing), held to
 * --recon-max-bytes as they come since their length is known only at the end.
 * upload_classify_memory classifies a body that arrived whole, without the spool.
 *
 * Idempotency (app.c): the request's Idempotency-Key is kept with the upload and looked
 * up at the last byte, after the signature and before any line is classified (its
 * fingerprint covers the body's hash); a new key's record is written with the file's
 * last transaction (upload_classify_idem), so a replayed upload never makes a second
 * file.
 *
 * Everything runs on settle's reactor thread.
 */
#ifndef RINGPAY_TOOLS_SETTLE_UPLOAD_H
#define RINGPAY_TOOLS_SETTLE_UPLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/settle.h"
#include "net/reactor.h"
#include "store/settle_store.h"
#include "tools/serve/gate.h"

struct settle_uploads;
struct upload;

/* The spool directory (settle's data directory) and the pool. 0 or -ENOMEM. */
int uploads_create(struct settle_uploads **out, const char *dir);
void uploads_destroy(struct settle_uploads *u);

/* Uploads receiving now (for /metrics). */
unsigned uploads_active(const struct settle_uploads *u);

/*
 * Starts receiving the body of request ref (length: its Content-Length, or a chunked
 * body's bound): opens its spool and copies its signed parts (gp NULL: --auth off). Returns 0 and
 * *out, -EBUSY when SETTLE_UPLOADS_MAX are receiving, -ENAMETOOLONG when a signed part does not
 * fit, or the spool's -errno.
 */
int upload_begin(struct settle_uploads *u, struct reactor_ref ref, const char *request_id,
                 const struct gate_parts *gp, uint64_t length, struct upload **out);

/* The upload of request ref, or NULL. */
struct upload *upload_find(struct settle_uploads *u, struct reactor_ref ref);

/* The request id the upload's answer carries. */
const char *upload_request_id(const struct upload *up);

/* Appends body bytes: spooled and hashed. 0, -EFBIG past length, or the spool's -errno
 * (sticky). */
int upload_body(struct upload *up, const char *data, size_t len);

/* Checks the signature over the whole body (after the last byte): as gate_check_parts. */
int upload_verify(struct upload *up, struct gate *g, int64_t now_s, struct gate_pass *pass,
                  const char **message);

/*
 * Classifies the spooled body into a new reconciliation file at now_ms, logging a
 * progress line every SETTLE_RECON_PROGRESS_LINES lines. Returns 0 with *out, or a
 * settle_recon -errno: -EPROTO with *why (a wrong header row, an empty body), else a
 * store or spool error.
 */
int upload_classify(struct upload *up, struct settle_store *s, int64_t now_ms,
                    struct recon_summary *out, const char **why);

/* The same for a body that arrived whole. */
int upload_classify_memory(struct settle_store *s, const char *body, size_t len, int64_t now_ms,
                           const char *request_id, struct recon_summary *out, const char **why);

/* The same two, writing idem's record (NULL: none) in the transaction that completes
 * the file (store/settle_store.h settle_recon_finish_idem), so a replayed upload never
 * creates a second file. */
int upload_classify_idem(struct upload *up, struct settle_store *s, int64_t now_ms,
                         const struct settle_idem_put *idem, struct recon_summary *out,
                         const char **why);
int upload_classify_memory_idem(struct settle_store *s, const char *body, size_t len,
                                int64_t now_ms, const char *request_id,
                                const struct settle_idem_put *idem, struct recon_summary *out,
                                const char **why);

/* The request's Idempotency-Key (1..IDEMPOTENCY_KEY_MAX_BYTES, checked by the caller),
 * kept for the idempotency check at the last byte also when --auth is off. */
void upload_set_idempotency_key(struct upload *up, const char *key, size_t len);

/* The key set above (NULL when none), its length in *len. */
const char *upload_idempotency_key(const struct upload *up, size_t *len);

/* The lower-case hex SHA-256 of the whole body (SIGN_HEX_BYTES, no NUL), known once
 * upload_verify ran. */
const char *upload_body_hex(const struct upload *up);

/* Ends the upload: closes (and so deletes) its spool, frees its slot. */
void upload_end(struct upload *up);

#endif
