/*
 * PROXY protocol v1 and v2 (HAProxy's proxy-protocol.txt), the header an L4 balancer
 * sends before the client's first byte so that we learn the client's real address.
 * A strict, stateless, incremental parser: call proxy_parse() with every byte received
 * so far, from the connection's first byte, until it says DONE or ERROR. It reads at
 * most PROXY_V2_MAX_BYTES and never past len; it allocates nothing and keeps no state,
 * so a header split over any number of reads gives the same answer as one read.
 *
 * Answers:
 *   PROXY_NEED_MORE  every byte so far is a valid start of a header; read more;
 *   PROXY_DONE       a whole header: out->header_bytes bytes of buf are the header and
 *                    the client's data starts right after them;
 *   PROXY_ERROR      not a PROXY header, or a malformed one (out->error says why, static
 *                    text): answer nothing and close. ERROR comes as early as the bytes
 *                    allow (the first byte that cannot start a header, a length over the
 *                    bound as soon as the length field is in), and once a prefix is an
 *                    error every longer one is too.
 *
 * v1 (text), accepted exactly as the specification writes it:
 *   "PROXY TCP4 " SRC " " DST " " SPORT " " DPORT "\r\n"   (dotted quads)
 *   "PROXY TCP6 " SRC " " DST " " SPORT " " DPORT "\r\n"   (RFC 4291 text, inet_pton)
 *   "PROXY UNKNOWN" [any printable bytes] "\r\n"
 * One space between fields; IPv4 parts 0-255 without leading zeros; ports 0-65535
 * without leading zeros; the whole line, CRLF included, at most PROXY_V1_MAX_BYTES
 * (107); bytes other than printable ASCII, a bare LF or CR, or an address of the other
 * family are errors.
 *
 * v2 (binary): the 12-byte signature, version 2, command LOCAL (0) or PROXY (1), then
 * family and transport, and a big-endian length of what follows, at most
 * PROXY_V2_MAX_LEN_BYTES. PROXY over TCP/IPv4 (0x11) needs 12 address bytes, over
 * TCP/IPv6 (0x21) 36; what follows the addresses is a sequence of TLVs (type, 16-bit
 * length, value), each of which must lie within the header; their contents are skipped
 * (a CRC32C TLV is not checked). PROXY with family UNSPEC (0x00) carries no address.
 * UNIX sockets, UDP and other combinations are errors: we serve TCP only. LOCAL (the
 * balancer's own health check) skips the whole block whatever it holds.
 *
 * LOCAL, UNKNOWN and UNSPEC give has_addr = false: the connection keeps the addresses
 * of its own socket. Otherwise src is the client and dst the address it connected to,
 * both AF_INET or AF_INET6 with the port in network byte order.
 *
 * Who may send a header is the caller's decision (serve --proxy-protocol CIDRS, see
 * net/cidr.h): from a listed peer a header is required; from any other peer the bytes
 * are never given to this parser.
 */
#ifndef RINGPAY_NET_PROXY_H
#define RINGPAY_NET_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

enum proxy_result {
    PROXY_ERROR = -1,
    PROXY_NEED_MORE = 0,
    PROXY_DONE = 1,
};

struct proxy_header {
    uint32_t header_bytes; /* DONE: the header's length; the client's data follows */
    uint8_t version;       /* 1 or 2 once the signature is recognised */
    bool has_addr;         /* false: LOCAL, UNKNOWN or UNSPEC; use the socket's own */
    struct sockaddr_storage src;
    struct sockaddr_storage dst;
    const char *error; /* ERROR: why, static text for a log line */
};

/*
 * Parses the bytes received so far, buf[0..len), from the connection's first byte.
 * Returns a proxy_result; *out is filled on DONE (and out->error on ERROR).
 */
enum proxy_result proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *out);

#ifdef __cplusplus
}
#endif

#endif
