/*
 * Routing of the payment API (SPEC §2) to the shards and back: the reactor side of the
 * mesh.
 *
 * A /v1 request is decoded on the reactor that read it (engine/api.c, after the HTTP
 * framing checks the codec cannot see: 411, 415), becomes a job from that reactor's
 * fixed pool (job_pool.h) holding the decoded operation and a copy of its idempotency
 * fingerprint, and travels through the mesh (net/xcore.h) to the shard that owns its
 * merchant — shard = FNV-1a-64(merchant_id) mod N, or the shard written in the payment
 * id — whether that is the reactor's own core or another. The shard answers after the
 * fsync that covers its batch; the job comes back the same way and the reactor writes
 * the answer in the connection's pipelined order, then returns the job to its pool.
 *
 * Backpressure: when the pool has no job of the class a request needs, the request is
 * not taken (-EBUSY to the reactor, which stops reading that connection and offers the
 * request again once a job came back). Mesh rings have a slot for every job of a pool
 * (engine/limits.h), so sending never waits.
 *
 * Threading: every function runs on the calling reactor's thread and touches only
 * that reactor's part; dispatch_metrics may run on any thread.
 */
#ifndef RINGPAY_TOOLS_SERVE_DISPATCH_H
#define RINGPAY_TOOLS_SERVE_DISPATCH_H

#include "net/metrics.h"
#include "net/reactor.h"
#include "net/xcore.h"
#include "tools/serve/gate.h"

struct dispatch;

/* Job pools of jobs_per_core payment jobs (job_pool.h) for `cores` reactors over
 * `mesh` (reactor i = endpoint i, shard i = endpoint cores + i). 0 or -ENOMEM. */
int dispatch_create(struct dispatch **out, unsigned cores, unsigned jobs_per_core,
                    struct xcore *mesh);

/* Frees the pools (jobs still in rings at exit go with them). NULL is a no-op. */
void dispatch_destroy(struct dispatch *d);

/* Takes one /v1 request that passed the gate as *pass (its merchant, if any, is the
 * authenticated one): answers it now (a decode error) or sends it to its shard. 0, or
 * -EBUSY when no job is free (the reactor offers it again later). */
int dispatch_request(struct dispatch *d, struct reactor *r, const struct reactor_request *rq,
                     const struct gate_pass *pass);

/* A mesh wake-up arrived on reactor r (res < 0: one of ours was not delivered). */
void dispatch_on_wake(struct dispatch *d, struct reactor *r, int res);

/* End of a reactor turn: send the turn's wake-ups to the shards. */
void dispatch_on_turn(struct dispatch *d, struct reactor *r);

/* The per-core job families of /metrics. */
void dispatch_metrics(const struct dispatch *d, struct metrics_out *o);

#endif
