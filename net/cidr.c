/*
 * CIDR lists (see cidr.h for the text form and the matching rule). Everything is kept
 * as 16 IPv6 bytes; IPv4 becomes ::ffff:a.b.c.d with 96 added to its prefix.
 */
#include "net/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/assert.h"

#define ITEM_MAX_BYTES (INET6_ADDRSTRLEN + 4) /* address, '/', three digits */
#define MAPPED_PREFIX  96

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void set_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_size, const char *fmt, ...)
{
    if (err == NULL || err_size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

/* Whether the bits of a past `bits` are all zero; with fix, clears them. */
static bool tail_zero(uint8_t *a, unsigned bits, bool fix)
{
    bool zero = true;
    for (unsigned i = bits; i < 128; i++) {
        uint8_t mask = (uint8_t)(0x80u >> (i % 8));
        if (a[i / 8] & mask) {
            zero = false;
            if (fix)
                a[i / 8] &= (uint8_t)~mask;
        }
    }
    return zero;
}

/* Decimal 0..max without sign or leading zero. */
static int parse_prefix(const char *s, unsigned max)
{
    size_t n = strlen(s);
    if (n == 0 || n > 3 || (s[0] == '0' && n > 1))
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v <= max ? (int)v : -1;
}

/* One item, NUL-terminated without surrounding spaces, into *net. */
static int parse_item(char *item, struct cidr_net *net, char *err, size_t err_size)
{
    char *slash = strchr(item, '/');
    if (slash)
        *slash = '\0';
    bool v6 = strchr(item, ':') != NULL;
    struct in_addr a4;
    if (v6 && inet_pton(AF_INET6, item, net->addr) != 1)
        goto out_bad;
    if (!v6) {
        if (inet_pton(AF_INET, item, &a4) != 1)
            goto out_bad;
        memcpy(net->addr, v4_mapped, 12);
        memcpy(net->addr + 12, &a4, 4);
    }
    unsigned max = v6 ? 128 : 32;
    int prefix = slash ? parse_prefix(slash + 1, max) : (int)max;
    if (prefix < 0) {
        set_err(err, err_size, "\"%s/%s\": the prefix length must be 0-%u", item, slash + 1, max);
        return -EINVAL;
    }
    net->prefix_bits = (uint8_t)(prefix + (v6 ? 0 : MAPPED_PREFIX));
    if (!tail_zero(net->addr, net->prefix_bits, true)) {
        char meant[INET6_ADDRSTRLEN];
        inet_ntop(v6 ? AF_INET6 : AF_INET, v6 ? (const void *)net->addr : net->addr + 12, meant,
                  sizeof(meant));
        set_err(err, err_size, "\"%s/%d\" has bits set past its prefix; the network is %s/%d", item,
                prefix, meant, prefix);
        return -EINVAL;
    }
    return 0;

out_bad:
    set_err(err, err_size, "\"%s\" is not an IPv4 or IPv6 address", item);
    return -EINVAL;
}

/* Copies text[start..end) without surrounding spaces into item (ITEM_MAX_BYTES + 1). */
static int trimmed(const char *text, size_t start, size_t end, char *item)
{
    while (start < end && text[start] == ' ')
        start++;
    while (end > start && text[end - 1] == ' ')
        end--;
    if (end - start > ITEM_MAX_BYTES)
        return -1;
    memcpy(item, text + start, end - start);
    item[end - start] = '\0';
    return (int)(end - start);
}

int cidr_list_parse(struct cidr_list *list, const char *text, char *err, size_t err_size)
{
    ASSERT(list != NULL && text != NULL);
    list->count = 0;
    size_t len = strlen(text);
    if (len == 0)
        return 0;
    for (size_t start = 0; start <= len;) {
        const char *comma = memchr(text + start, ',', len - start);
        size_t end = comma ? (size_t)(comma - text) : len;
        char item[ITEM_MAX_BYTES + 1];
        int n = trimmed(text, start, end, item);
        int rc = 0;
        if (n <= 0) {
            set_err(err, err_size,
                    n == 0 ? "an empty item in \"%.80s\"" : "\"%.80s\": an item is too long", text);
            rc = -EINVAL;
        } else if (list->count == CIDR_LIST_MAX) {
            set_err(err, err_size, "more than %d networks", CIDR_LIST_MAX);
            rc = -EINVAL;
        } else {
            rc = parse_item(item, &list->nets[list->count], err, err_size);
        }
        if (rc) {
            list->count = 0;
            return rc;
        }
        list->count++;
        start = end + 1;
    }
    return 0;
}

/* The 16-byte form of an AF_INET or AF_INET6 address; false for other families. */
static bool addr16(const struct sockaddr_storage *ss, uint8_t out[16])
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        memcpy(out, v4_mapped, 12);
        memcpy(out + 12, &a->sin_addr, 4);
        return true;
    }
    if (ss->ss_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
        return true;
    }
    return false;
}

static bool in_net(const struct cidr_net *net, const uint8_t a[16])
{
    unsigned bits = net->prefix_bits, whole = bits / 8;
    if (memcmp(net->addr, a, whole) != 0)
        return false;
    if (bits % 8 == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00u >> (bits % 8));
    return (a[whole] & mask) == net->addr[whole];
}

bool cidr_list_match(const struct cidr_list *list, const struct sockaddr_storage *addr)
{
    ASSERT(list != NULL && addr != NULL && list->count <= CIDR_LIST_MAX);
    uint8_t a[16];
    if (!addr16(addr, a))
        return false;
    for (size_t i = 0; i < list->count; i++)
        if (in_net(&list->nets[i], a))
            return true;
    return false;
}
