/*
 * Per-client-address connections and request budgets (see clients.h).
 */
#include "net/clients.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "engine/assert.h"
#include "engine/limits.h"

/* Entries one lookup examines: the address's home slot and the next ones. */
#define PROBE_WINDOW 32

_Static_assert((CLIENT_ADDRS_PER_CORE & (CLIENT_ADDRS_PER_CORE - 1)) == 0, "power of two");

int clients_init(struct clients *c, const struct bucket_conf *budget, uint32_t max_conns)
{
    memset(c, 0, sizeof(*c));
    c->budget = *budget;
    c->max_conns = max_conns;
    ASSERT(budget->rate_per_s == 0 || bucket_conf_valid(budget));
    if (getrandom(&c->seed, sizeof(c->seed), 0) != sizeof(c->seed))
        c->seed = (uint64_t)(uintptr_t)c ^ 0x9e3779b97f4a7c15ull;
    c->entries = calloc(CLIENT_ADDRS_PER_CORE, sizeof(*c->entries));
    return c->entries ? 0 : -ENOMEM;
}

void clients_destroy(struct clients *c)
{
    free(c->entries);
    c->entries = NULL;
}

void clients_key(const struct sockaddr_storage *ss, uint8_t out[16])
{
    memset(out, 0, 16);
    if (ss->ss_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    } else if (ss->ss_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint32_t home_of(const struct clients *c, const uint8_t addr[16])
{
    uint64_t a, b;
    memcpy(&a, addr, 8);
    memcpy(&b, addr + 8, 8);
    return (uint32_t)(mix(mix(a ^ c->seed) ^ b) & (CLIENT_ADDRS_PER_CORE - 1));
}

/* An entry without connections whose budget is full again is the same as none. */
static bool reusable(const struct clients *c, struct clients_entry *e, int64_t now_ms)
{
    if (!e->used)
        return true;
    if (e->conns > 0)
        return false;
    if (c->budget.rate_per_s == 0)
        return true;
    return bucket_full(&e->bucket, &c->budget, now_ms);
}

/* The entry of addr, making one when create; NULL when none (or no room). */
static struct clients_entry *lookup(struct clients *c, const uint8_t addr[16], bool create,
                                    int64_t now_ms)
{
    uint32_t home = home_of(c, addr);
    struct clients_entry *spare = NULL, *oldest = NULL;
    for (uint32_t k = 0; k < PROBE_WINDOW; k++) {
        struct clients_entry *e = &c->entries[(home + k) & (CLIENT_ADDRS_PER_CORE - 1)];
        if (e->used && memcmp(e->addr, addr, 16) == 0)
            return e;
        if (spare == NULL && reusable(c, e, now_ms))
            spare = e;
        if (e->used && e->conns == 0 && (oldest == NULL || e->last_ms < oldest->last_ms))
            oldest = e;
    }
    if (!create)
        return NULL;
    struct clients_entry *e = spare ? spare : oldest;
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    memcpy(e->addr, addr, 16);
    e->used = true;
    if (c->budget.rate_per_s)
        bucket_init(&e->bucket, &c->budget, now_ms);
    return e;
}

int clients_connect(struct clients *c, const uint8_t addr[16], int64_t now_ms)
{
    struct clients_entry *e = lookup(c, addr, true, now_ms);
    if (e == NULL)
        return -ENOSPC;
    if (c->max_conns && e->conns >= c->max_conns)
        return -EMFILE;
    e->conns++;
    e->last_ms = now_ms;
    return 0;
}

void clients_disconnect(struct clients *c, const uint8_t addr[16])
{
    struct clients_entry *e = lookup(c, addr, false, 0);
    ASSERT(e != NULL && e->conns > 0); /* an entry with connections is never reused */
    e->conns--;
}

uint32_t clients_request(struct clients *c, const uint8_t addr[16], int64_t now_ms)
{
    if (c->budget.rate_per_s == 0)
        return 0;
    struct clients_entry *e = lookup(c, addr, true, now_ms);
    if (e == NULL)
        return 0; /* no room to track it: lenient */
    e->last_ms = now_ms;
    return bucket_take(&e->bucket, &c->budget, now_ms);
}
