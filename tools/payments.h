/*
 * The payment API of `ringpay serve` (SPEC §2): wires reactors to shards.
 *
 * A /v1 request is decoded on the reactor that read it (engine/api.c), becomes a
 * shard_job, and travels through the cross-core mesh (net/xcore.h) to the shard that
 * owns its merchant — shard = FNV-1a-64(merchant_id) mod N, or the shard written in
 * the payment id — whether that is the reactor's own core or another. The shard
 * thread answers after its group commit; the job comes back the same way and the
 * reactor writes the answer in the connection's pipelined order.
 *
 * Endpoints of the mesh: reactor i is endpoint i, shard i is endpoint N + i.
 */
#ifndef RINGPAY_TOOLS_PAYMENTS_H
#define RINGPAY_TOOLS_PAYMENTS_H

#include <stddef.h>
#include <stdint.h>

#include "net/reactor.h"

struct payments;

/*
 * Opens (or creates) the data directory for `cores` shards, every shard's store, the
 * mesh, and starts the shard threads, pinned like their reactors. The reactors must
 * exist (their rings are registered with the mesh) but not run yet. Fails with a
 * negative errno and one line in why.
 */
struct payments_config {
    const char *data_dir;
    unsigned cores;
    int64_t idem_ttl_ms; /* idempotency retention; 0: the default (24 h) */
};

int payments_start(struct payments **out, const struct payments_config *cfg,
                   struct reactor *const *reactors, char *why, size_t why_bytes);

/* Stops and joins the shard threads, closes the stores. Call after every reactor
 * returned. */
void payments_stop(struct payments *p);

/* True when every shard thread is running. */
int payments_ready(const struct payments *p);

/* Routes one /v1 request (reactor thread). */
void payments_on_request(struct payments *p, struct reactor *r, const struct reactor_request *rq);

/* A mesh wake-up arrived on reactor r (res < 0: one of ours was not delivered). */
void payments_on_wake(struct payments *p, struct reactor *r, int res);

/* End of a reactor turn: retry held jobs and send wake-ups. */
void payments_on_turn(struct payments *p, struct reactor *r);

/* Appends the shard metrics (batches, jobs, largest batch) in Prometheus text. */
long payments_metrics(const struct payments *p, char *buf, size_t cap);

#endif
