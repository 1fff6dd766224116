/*
 * libFuzzer target for net/proxy.c.
 *
 * The input is the first bytes of a connection. It is parsed whole, then as prefixes
 * (every length up to 256 and past that every 61st, plus the lengths around the
 * header's end), each in a malloc'd copy of exactly its length so AddressSanitizer
 * catches a read past len. Checked, with abort() on a violation:
 *   - DONE: 0 < header_bytes <= len, within PROXY_V1_MAX_BYTES for v1 and
 *     PROXY_V2_MAX_BYTES for v2; addresses are AF_INET or AF_INET6, the same family on
 *     both sides; a v1 TCP4 header is exactly the canonical text of what it reports.
 *   - ERROR: a reason is given.
 *   - Prefixes agree with the whole: when the whole is DONE with n bytes, every prefix
 *     shorter than n is NEED_MORE and every longer one is DONE with the same header;
 *     an ERROR prefix stays ERROR for every longer prefix; no prefix of an input whose
 *     whole is ERROR is DONE.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static enum proxy_result parse_copy(const uint8_t *data, size_t k, struct proxy_header *h)
{
    uint8_t *copy = malloc(k ? k : 1);
    CHECK(copy != NULL);
    if (k)
        memcpy(copy, data, k);
    enum proxy_result r = proxy_parse(copy, k, h);
    free(copy);
    return r;
}

static void check_endpoint(const struct sockaddr_storage *ss)
{
    CHECK(ss->ss_family == AF_INET || ss->ss_family == AF_INET6);
}

/* A v1 TCP4 header is the canonical text of its fields. */
static void check_v1_tcp4(const uint8_t *data, const struct proxy_header *h)
{
    if (h->version != 1 || !h->has_addr || h->src.ss_family != AF_INET)
        return;
    const struct sockaddr_in *s = (const struct sockaddr_in *)&h->src;
    const struct sockaddr_in *d = (const struct sockaddr_in *)&h->dst;
    char a[INET_ADDRSTRLEN], b[INET_ADDRSTRLEN], text[128];
    CHECK(inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a)) != NULL);
    CHECK(inet_ntop(AF_INET, &d->sin_addr, b, sizeof(b)) != NULL);
    int n = snprintf(text, sizeof(text), "PROXY TCP4 %s %s %u %u\r\n", a, b, ntohs(s->sin_port),
                     ntohs(d->sin_port));
    CHECK(n > 0 && (uint32_t)n == h->header_bytes && memcmp(text, data, (size_t)n) == 0);
}

static void check_whole(const uint8_t *data, size_t size, enum proxy_result r,
                        const struct proxy_header *h)
{
    CHECK(r == PROXY_DONE || r == PROXY_NEED_MORE || r == PROXY_ERROR);
    if (r == PROXY_ERROR)
        CHECK(h->error != NULL);
    if (r != PROXY_DONE)
        return;
    CHECK(h->header_bytes > 0 && h->header_bytes <= size);
    CHECK(h->version == 1 || h->version == 2);
    CHECK(h->header_bytes <= (h->version == 1 ? PROXY_V1_MAX_BYTES : PROXY_V2_MAX_BYTES));
    if (h->has_addr) {
        check_endpoint(&h->src);
        check_endpoint(&h->dst);
        CHECK(h->src.ss_family == h->dst.ss_family);
    }
    check_v1_tcp4(data, h);
}

static int same_header(const struct proxy_header *a, const struct proxy_header *b)
{
    return a->header_bytes == b->header_bytes && a->version == b->version &&
           a->has_addr == b->has_addr && memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
           memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0;
}

static int sampled(size_t k, size_t end)
{
    return k <= 256 || k % 61 == 0 || (end && k + 2 >= end && k <= end + 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_header whole;
    enum proxy_result r = parse_copy(data, size, &whole);
    check_whole(data, size, r, &whole);
    size_t end = r == PROXY_DONE ? whole.header_bytes : 0;
    int seen_error = 0;
    for (size_t k = 0; k < size; k++) {
        if (!sampled(k, end))
            continue;
        struct proxy_header h;
        enum proxy_result p = parse_copy(data, k, &h);
        check_whole(data, k, p, &h);
        if (r == PROXY_DONE) {
            CHECK(k < end ? p == PROXY_NEED_MORE : p == PROXY_DONE && same_header(&h, &whole));
            continue;
        }
        CHECK(p != PROXY_DONE);
        CHECK(!seen_error || p == PROXY_ERROR);
        seen_error |= p == PROXY_ERROR;
    }
    CHECK(!seen_error || r == PROXY_ERROR);
    return 0;
}
