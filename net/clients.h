/*
 * Per-client-address state of one reactor (SPEC §3 limits): open connections and a
 * request budget (a token bucket, engine/bucket.h) for each client address it serves.
 *
 * A fixed table of CLIENT_ADDRS_PER_CORE entries, sized at start, open addressing with
 * linear probing over the address's hash (a seed chosen at start, so a client cannot
 * pick colliding addresses). Addresses are kept in IPv6 form (IPv4 as ::ffff:a.b.c.d),
 * without the port. An entry can be taken over by another address when it holds no
 * open connection and its bucket has refilled to its burst — then it is the same as no
 * entry at all. When a probe window finds no free or reusable entry, the least recently
 * used entry without connections starts over (its bucket full: lenient, never wrong in
 * the refusing direction); if every entry in the window holds connections, the new
 * address is refused a connection (clients_connect returns -ENOSPC).
 *
 * Threading: one reactor thread per table.
 */
#ifndef RINGPAY_NET_CLIENTS_H
#define RINGPAY_NET_CLIENTS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/bucket.h"

struct clients_entry {
    uint8_t addr[16];
    uint32_t conns; /* open connections from this address */
    bool used;
    int64_t last_ms; /* last connect or request, for reuse */
    struct bucket bucket;
};

struct clients {
    struct clients_entry *entries; /* [CLIENT_ADDRS_PER_CORE] */
    uint64_t seed;
    struct bucket_conf budget; /* rate_per_s 0: no request budget */
    uint32_t max_conns;        /* 0: no cap */
};

/* Allocates the table. budget.rate_per_s == 0 turns the request budget off; max_conns
 * == 0 the connection cap. 0 or -ENOMEM. */
int clients_init(struct clients *c, const struct bucket_conf *budget, uint32_t max_conns);

void clients_destroy(struct clients *c);

/* The 16-byte key of a socket address (IPv4 mapped into IPv6). */
void clients_key(const struct sockaddr_storage *ss, uint8_t out[16]);

/* A connection from addr opens: 0, or -EMFILE when the address is at its cap, or
 * -ENOSPC when the table has no room for it (both: refuse the connection). */
int clients_connect(struct clients *c, const uint8_t addr[16], int64_t now_ms);

/* A connection counted by clients_connect closes. */
void clients_disconnect(struct clients *c, const uint8_t addr[16]);

/* One request from addr: 0 when it is within the budget, else the Retry-After seconds
 * (>= 1). An address with no entry yet (it connected before the table filled) gets one
 * on its first request. */
uint32_t clients_request(struct clients *c, const uint8_t addr[16], int64_t now_ms);

#endif
