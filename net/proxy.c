/*
 * PROXY protocol v1/v2 parser (see proxy.h for the accepted forms and the answers).
 *
 * Stateless: every call looks at buf from its first byte. v1 is scanned up to its CRLF
 * (at most PROXY_V1_MAX_BYTES); before the CRLF is in, the bytes seen are checked as a
 * prefix (printable, a known protocol token), so junk fails at once instead of after
 * 107 bytes. v2 is checked field by field as its fixed 16 bytes arrive, and as a whole
 * once its length is in. Both checks only ever refuse what the whole header would
 * refuse too, so an answer never changes from ERROR to anything else as bytes arrive
 * (tests/net/proxy_test.c splits every case at every byte; tests/fuzz/proxy_fuzz.c).
 */
#include "net/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "engine/assert.h"

#define V1_SIG_BYTES 6 /* "PROXY " */
#define V2_SIG_BYTES 12
#define V1_ADDR_MAX  45 /* the longest IPv6 text, IPv4-mapped form included */

static const uint8_t v2_sig[V2_SIG_BYTES] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                             0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static const char *const v1_protocols[] = {"TCP4", "TCP6", "UNKNOWN"};

_Static_assert(PROXY_V2_FIXED_BYTES == V2_SIG_BYTES + 4, "signature, ver_cmd, fam, len");

static enum proxy_result fail(struct proxy_header *out, const char *why)
{
    out->error = why;
    return PROXY_ERROR;
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* ---- v1 ----------------------------------------------------------------------------- */

/* Whether token[0..n) is one of the protocols (whole), or the start of one (partial). */
static bool protocol_ok(const char *token, size_t n, bool whole)
{
    for (size_t i = 0; i < ARRAY_LEN(v1_protocols); i++) {
        size_t pl = strlen(v1_protocols[i]);
        if ((whole ? n == pl : n <= pl) && memcmp(token, v1_protocols[i], n) == 0)
            return true;
    }
    return false;
}

/* Dotted quad, parts 0-255 without leading zeros. */
static bool parse_ipv4(const char *s, size_t n, struct in_addr *out)
{
    uint8_t b[4];
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        size_t start = i;
        unsigned v = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        if (i == start || v > 255 || (s[start] == '0' && i - start > 1))
            return false;
        b[part] = (uint8_t)v;
        if (part < 3 && (i >= n || s[i++] != '.'))
            return false;
    }
    if (i != n)
        return false;
    memcpy(&out->s_addr, b, 4);
    return true;
}

static bool parse_ipv6(const char *s, size_t n, struct in6_addr *out)
{
    char text[V1_ADDR_MAX + 1];
    if (n == 0 || n > V1_ADDR_MAX)
        return false;
    memcpy(text, s, n);
    text[n] = '\0';
    return inet_pton(AF_INET6, text, out) == 1;
}

/* 0-65535 without leading zeros, into network byte order. */
static bool parse_port(const char *s, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = htons((uint16_t)v);
    return true;
}

/* One address and port into ss, of the family the protocol names. */
static bool v1_endpoint(bool v6, const char *addr, size_t an, const char *port, size_t pn,
                        struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        return parse_ipv6(addr, an, &a->sin6_addr) && parse_port(port, pn, &a->sin6_port);
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    return parse_ipv4(addr, an, &a->sin_addr) && parse_port(port, pn, &a->sin_port);
}

/* Splits s[0..n) at single spaces into exactly `want` non-empty fields. */
static bool split_fields(const char *s, size_t n, const char **f, size_t *fl, int want)
{
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ' ')
            continue;
        if (i == start || k == want)
            return false;
        f[k] = s + start;
        fl[k++] = i - start;
        start = i + 1;
    }
    return k == want;
}

/* The whole line, "PROXY " included, CRLF excluded. */
static enum proxy_result v1_line(const char *line, size_t n, struct proxy_header *out)
{
    const char *rest = line + V1_SIG_BYTES;
    size_t rn = n - V1_SIG_BYTES;
    if (rn >= 7 && memcmp(rest, "UNKNOWN", 7) == 0 && (rn == 7 || rest[7] == ' ')) {
        out->has_addr = false;
        return PROXY_DONE;
    }
    const char *f[5];
    size_t fl[5];
    if (!split_fields(rest, rn, f, fl, 5))
        return fail(out, "PROXY v1: expected PROTO SRC DST SPORT DPORT, one space apart");
    if (!protocol_ok(f[0], fl[0], true) || fl[0] != 4)
        return fail(out, "PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN");
    bool v6 = f[0][3] == '6';
    if (!v1_endpoint(v6, f[1], fl[1], f[3], fl[3], &out->src) ||
        !v1_endpoint(v6, f[2], fl[2], f[4], fl[4], &out->dst))
        return fail(out, v6 ? "PROXY v1: bad TCP6 address or port"
                            : "PROXY v1: bad TCP4 address or port");
    out->has_addr = true;
    return PROXY_DONE;
}

/* The bytes of a v1 line before its CR: printable, and a protocol token that is (the
 * start of) a known one. */
static enum proxy_result v1_prefix(const char *s, size_t n, struct proxy_header *out)
{
    const char *token = s + V1_SIG_BYTES;
    size_t avail = n - V1_SIG_BYTES;
    const char *space = memchr(token, ' ', avail);
    size_t tn = space ? (size_t)(space - token) : avail;
    if (!protocol_ok(token, tn, space != NULL))
        return fail(out, "PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN");
    return PROXY_NEED_MORE;
}

static enum proxy_result parse_v1(const uint8_t *buf, size_t len, struct proxy_header *out)
{
    const char *s = (const char *)buf;
    if (memcmp(s, "PROXY ", min_size(len, V1_SIG_BYTES)) != 0)
        return fail(out, "not a PROXY protocol header");
    size_t limit = min_size(len, PROXY_V1_MAX_BYTES);
    for (size_t i = V1_SIG_BYTES; i < limit; i++) {
        unsigned char c = buf[i];
        if (c == '\r' && i + 2 > PROXY_V1_MAX_BYTES)
            break; /* its LF would be byte 108 */
        if (c == '\r' && i + 1 == len)
            return v1_prefix(s, i, out); /* the LF may come next */
        if (c == '\r' && buf[i + 1] != '\n')
            return fail(out, "PROXY v1: CR without LF");
        if (c == '\r') {
            enum proxy_result r = v1_line(s, i, out);
            if (r == PROXY_DONE) {
                out->version = 1;
                out->header_bytes = (uint32_t)(i + 2);
            }
            return r;
        }
        if (c == '\n')
            return fail(out, "PROXY v1: LF without CR");
        if (c < 0x20 || c > 0x7e)
            return fail(out, "PROXY v1: a byte that is not printable ASCII");
    }
    if (len >= PROXY_V1_MAX_BYTES)
        return fail(out, "PROXY v1: no CRLF within 107 bytes");
    ASSERT(limit == len);
    return len > V1_SIG_BYTES ? v1_prefix(s, len, out) : PROXY_NEED_MORE;
}

/* ---- v2 ----------------------------------------------------------------------------- */

enum { V2_LOCAL = 0, V2_PROXY = 1 };
enum { V2_UNSPEC = 0x00, V2_TCP4 = 0x11, V2_TCP6 = 0x21 };

/* Address bytes a PROXY command's family and transport need. */
static size_t v2_addr_bytes(uint8_t fam)
{
    return fam == V2_TCP4 ? 12 : fam == V2_TCP6 ? 36 : 0;
}

static void v2_endpoints(const uint8_t *a, uint8_t fam, struct proxy_header *out)
{
    memset(&out->src, 0, sizeof(out->src));
    memset(&out->dst, 0, sizeof(out->dst));
    if (fam == V2_TCP4) {
        struct sockaddr_in *s = (struct sockaddr_in *)&out->src,
                           *d = (struct sockaddr_in *)&out->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2); /* already in network order */
        memcpy(&d->sin_port, a + 10, 2);
        return;
    }
    ASSERT(fam == V2_TCP6);
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src,
                        *d = (struct sockaddr_in6 *)&out->dst;
    s->sin6_family = d->sin6_family = AF_INET6;
    memcpy(&s->sin6_addr, a, 16);
    memcpy(&d->sin6_addr, a + 16, 16);
    memcpy(&s->sin6_port, a + 32, 2);
    memcpy(&d->sin6_port, a + 34, 2);
}

/* Every TLV in buf[off..end) lies within it. */
static bool v2_tlvs_ok(const uint8_t *buf, size_t off, size_t end)
{
    while (off < end) {
        if (end - off < 3)
            return false;
        size_t n = (size_t)buf[off + 1] << 8 | buf[off + 2];
        if (n > end - off - 3)
            return false;
        off += 3 + n;
    }
    return true;
}

/* The fixed 16 bytes, as far as they are in. Returns NEED_MORE when they pass. */
static enum proxy_result v2_fixed(const uint8_t *buf, size_t len, struct proxy_header *out)
{
    if (memcmp(buf, v2_sig, min_size(len, V2_SIG_BYTES)) != 0)
        return fail(out, "not a PROXY protocol header");
    if (len > 12 && buf[12] >> 4 != 2)
        return fail(out, "PROXY v2: version is not 2");
    if (len > 12 && (buf[12] & 0x0f) > V2_PROXY)
        return fail(out, "PROXY v2: command is neither LOCAL nor PROXY");
    bool proxy = len > 12 && (buf[12] & 0x0f) == V2_PROXY;
    if (proxy && len > 13 && buf[13] != V2_UNSPEC && buf[13] != V2_TCP4 && buf[13] != V2_TCP6)
        return fail(out, "PROXY v2: not TCP over IPv4 or IPv6");
    if (len < PROXY_V2_FIXED_BYTES)
        return PROXY_NEED_MORE;
    size_t block = (size_t)buf[14] << 8 | buf[15];
    if (block > PROXY_V2_MAX_LEN_BYTES)
        return fail(out, "PROXY v2: header longer than the limit");
    if (proxy && block < v2_addr_bytes(buf[13]))
        return fail(out, "PROXY v2: address block too short");
    return PROXY_NEED_MORE;
}

static enum proxy_result parse_v2(const uint8_t *buf, size_t len, struct proxy_header *out)
{
    enum proxy_result r = v2_fixed(buf, len, out);
    if (r != PROXY_NEED_MORE || len < PROXY_V2_FIXED_BYTES)
        return r;
    size_t total = PROXY_V2_FIXED_BYTES + ((size_t)buf[14] << 8 | buf[15]);
    ASSERT(total <= PROXY_V2_MAX_BYTES);
    if (len < total)
        return PROXY_NEED_MORE;
    uint8_t fam = buf[13];
    out->has_addr = (buf[12] & 0x0f) == V2_PROXY && fam != V2_UNSPEC;
    if (out->has_addr) {
        size_t addr = v2_addr_bytes(fam);
        if (!v2_tlvs_ok(buf, PROXY_V2_FIXED_BYTES + addr, total))
            return fail(out, "PROXY v2: a TLV runs past the header");
        v2_endpoints(buf + PROXY_V2_FIXED_BYTES, fam, out);
    }
    out->version = 2;
    out->header_bytes = (uint32_t)total;
    return PROXY_DONE;
}

enum proxy_result proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *out)
{
    ASSERT(out != NULL && (buf != NULL || len == 0));
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return PROXY_NEED_MORE;
    enum proxy_result r;
    if (buf[0] == 'P')
        r = parse_v1(buf, len, out);
    else if (buf[0] == v2_sig[0])
        r = parse_v2(buf, len, out);
    else
        r = fail(out, "not a PROXY protocol header");
    ASSERT(r != PROXY_DONE || (out->header_bytes > 0 && out->header_bytes <= len &&
                               out->header_bytes <= PROXY_V2_MAX_BYTES));
    ASSERT(r != PROXY_DONE || !out->has_addr || out->src.ss_family == out->dst.ss_family);
    return r;
}
