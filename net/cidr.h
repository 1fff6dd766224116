/*
 * CIDR lists: which client addresses may do something (serve --allow, --ops-allow,
 * --proxy-protocol; SPEC §3). Pure: parsing and matching, no sockets.
 *
 * Text form: networks separated by commas, spaces around each allowed:
 *     "10.0.0.0/8, 192.168.1.7, 2001:db8::/32, ::1"
 * An address without a prefix is one host (/32 for IPv4, /128 for IPv6). Addresses are
 * what inet_pton(3) accepts (IPv4: four decimal parts 0-255 without leading zeros;
 * IPv6: RFC 4291 text, no zone). The prefix length is decimal without leading zeros,
 * 0-32 for IPv4 and 0-128 for IPv6. A network with bits set past its prefix
 * ("10.0.0.1/8") is refused, naming the network meant, because it usually hides a typo.
 * An empty item (",,", a trailing comma) is refused; the empty text is the empty list,
 * which matches nothing. At most CIDR_LIST_MAX networks.
 *
 * Matching: every network and address is held in IPv6 form, IPv4 as the IPv4-mapped
 * ::ffff:a.b.c.d (an IPv4 /n is a /96+n there). So an IPv4-mapped IPv6 peer (a
 * dual-stack socket's view of an IPv4 client) matches the IPv4 networks, and "::/0"
 * matches every address while "0.0.0.0/0" matches every IPv4 one. Families other than
 * AF_INET and AF_INET6 (a UNIX socket) match nothing.
 */
#ifndef RINGPAY_NET_CIDR_H
#define RINGPAY_NET_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The default of --ops-allow: the loopback addresses. */
#define CIDR_LOOPBACK "127.0.0.0/8,::1"

struct cidr_net {
    uint8_t addr[16]; /* IPv6 form, bits past prefix_bits zero */
    uint8_t prefix_bits;
};

struct cidr_list {
    size_t count;
    struct cidr_net nets[CIDR_LIST_MAX];
};

/*
 * Parses text into *list. Returns 0, or -EINVAL with one line (no newline) in err
 * naming the offending item, and *list empty.
 */
int cidr_list_parse(struct cidr_list *list, const char *text, char *err, size_t err_size);

/* Whether addr lies in one of the list's networks. */
bool cidr_list_match(const struct cidr_list *list, const struct sockaddr_storage *addr);

#ifdef __cplusplus
}
#endif

#endif
