/*
 * Tests of net/proxy.c. Every case is fed at every split: each prefix of a valid header
 * is NEED_MORE and every length from the header on (with the client's request behind
 * it) is DONE with the same length and addresses; no prefix of a malformed header is
 * DONE, the whole one is ERROR, and once a prefix is ERROR every longer one is too.
 * Each prefix is a malloc'd copy of exactly its length, so under AddressSanitizer a
 * read past len fails. Early refusal is checked where the bytes allow it (the first
 * byte of junk, the length field of an oversized v2 header).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy.h"

#define REQUEST "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

static enum proxy_result parse_prefix(const uint8_t *data, size_t k, struct proxy_header *h)
{
    uint8_t *copy = malloc(k ? k : 1);
    assert_non_null(copy);
    if (k)
        memcpy(copy, data, k);
    enum proxy_result r = proxy_parse(copy, k, h);
    free(copy);
    return r;
}

/* Appends REQUEST to hdr[0..n) into a new buffer. */
static uint8_t *with_request(const void *hdr, size_t n, size_t *total)
{
    *total = n + strlen(REQUEST);
    uint8_t *b = malloc(*total);
    assert_non_null(b);
    memcpy(b, hdr, n);
    memcpy(b + n, REQUEST, strlen(REQUEST));
    return b;
}

static void assert_endpoint(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    char text[INET6_ADDRSTRLEN];
    if (strchr(ip, ':')) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        assert_int_equal(ss->ss_family, AF_INET6);
        assert_non_null(inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text)));
        assert_int_equal(ntohs(a->sin6_port), port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        assert_int_equal(ss->ss_family, AF_INET);
        assert_non_null(inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text)));
        assert_int_equal(ntohs(a->sin_port), port);
    }
    assert_string_equal(text, ip);
}

/* hdr[0..n) is one whole header with these fields (src NULL: no address). */
static void expect_done(const void *hdr, size_t n, int version, const char *src, uint16_t sport,
                        const char *dst, uint16_t dport)
{
    size_t total;
    uint8_t *b = with_request(hdr, n, &total);
    for (size_t k = 0; k <= total; k++) {
        struct proxy_header h;
        enum proxy_result r = parse_prefix(b, k, &h);
        if (k < n) {
            if (r != PROXY_NEED_MORE)
                fail_msg("prefix %zu of %zu: %d (%s)", k, n, r, h.error ? h.error : "");
            continue;
        }
        if (r != PROXY_DONE)
            fail_msg("length %zu: %d (%s)", k, r, h.error ? h.error : "");
        assert_int_equal(h.header_bytes, n);
        assert_int_equal(h.version, version);
        assert_int_equal(h.has_addr, src != NULL);
        if (src) {
            assert_endpoint(&h.src, src, sport);
            assert_endpoint(&h.dst, dst, dport);
        }
    }
    free(b);
}

/* hdr[0..n) is refused; no later than at byte `by` (n: only once whole). */
static void expect_error_by(const void *hdr, size_t n, size_t by)
{
    size_t total;
    uint8_t *b = with_request(hdr, n, &total);
    bool seen = false;
    for (size_t k = 0; k <= total; k++) {
        struct proxy_header h;
        enum proxy_result r = parse_prefix(b, k, &h);
        if (r == PROXY_DONE)
            fail_msg("prefix %zu of a malformed header is DONE", k);
        if (seen && r != PROXY_ERROR)
            fail_msg("prefix %zu: ERROR turned into %d", k, r);
        if (r == PROXY_ERROR) {
            assert_non_null(h.error);
            seen = true;
        }
        if (k == by && !seen)
            fail_msg("not refused by byte %zu (%.*s)", by, (int)n, (const char *)hdr);
    }
    free(b);
}

static void expect_error(const char *hdr)
{
    expect_error_by(hdr, strlen(hdr), strlen(hdr));
}

/* ---- v1 ---------------------------------------------------------------------------- */

static void test_v1_valid(void **state)
{
#define V1(s) s, strlen(s)
    expect_done(V1("PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"), 1, "192.0.2.10", 56324,
                "198.51.100.1", 443);
    expect_done(V1("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"), 1, "0.0.0.0", 0,
                "255.255.255.255", 65535);
    expect_done(V1("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"), 1, "2001:db8::1", 1,
                "2001:db8::2", 2);
    expect_done(V1("PROXY TCP6 ::ffff:192.0.2.1 ::1 10 20\r\n"), 1, "::ffff:192.0.2.1", 10, "::1",
                20);
    expect_done(V1("PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 10 20\r\n"), 1, "2001:db8::1", 10, "::1",
                20);
    expect_done(V1("PROXY UNKNOWN\r\n"), 1, NULL, 0, NULL, 0);
    expect_done(V1("PROXY UNKNOWN 192.0.2.10 198.51.100.1 1 2\r\n"), 1, NULL, 0, NULL, 0);
    /* The specification's longest line: 107 bytes. */
    const char *longest = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_int_equal(strlen(longest), PROXY_V1_MAX_BYTES);
    expect_done(V1(longest), 1, NULL, 0, NULL, 0);
#undef V1
}

static void test_v1_malformed(void **state)
{
    static const char *const bad[] = {
        "PROXY\r\n",
        "PROXY \r\n",
        "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n",
        "PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.1234 5.6.7.8 1 2\r\n",
        "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        "PROXY TCP6 ::1%eth0 ::1 1 2\r\n",
        "PROXY TCP6 :::1 ::1 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n",
        "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY UNKNOWN \x80\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_error(bad[i]);
    /* A NUL byte inside the line. */
    static const char nul[] = "PROXY TCP4 1.2.3.4\0005.6.7.8 1 2\r\n";
    expect_error_by(nul, sizeof(nul) - 1, 19);
    /* One byte over the specification's bound: refused at byte 107, before its LF. */
    char over[128];
    snprintf(over, sizeof(over), "PROXY UNKNOWN %092d\r\n", 0);
    assert_int_equal(strlen(over), PROXY_V1_MAX_BYTES + 1);
    expect_error_by(over, strlen(over), PROXY_V1_MAX_BYTES);
    /* No CRLF at all within the bound. */
    memset(over + 14, 'a', sizeof(over) - 14);
    expect_error_by(over, sizeof(over), PROXY_V1_MAX_BYTES);
}

/* Junk is refused as soon as it cannot be the start of a header. */
static void test_early_refusal(void **state)
{
    expect_error_by(REQUEST, strlen(REQUEST), 1);                   /* 'G' */
    expect_error_by("\x16\x03\x01", 3, 1);                          /* a TLS hello */
    expect_error_by("PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 32, 5);   /* 'X' */
    expect_error_by("PROXY GET / HTTP/1.1\r\n", 22, 7);             /* not a protocol */
    expect_error_by("PROXY TCP4X 1.2.3.4 5.6.7.8 1 2\r\n", 33, 11); /* TCP4X */
    expect_error_by("PROXY TCP4 1.2.3.4\n", 19, 19);                /* the LF */
    struct proxy_header h;
    assert_int_equal(proxy_parse(NULL, 0, &h), PROXY_NEED_MORE);
}

/* ---- v2 ---------------------------------------------------------------------------- */

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Builds a v2 header: signature, ver_cmd, fam, then the body of body_len bytes. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t body_len)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(body_len >> 8);
    out[15] = (uint8_t)body_len;
    if (body_len)
        memcpy(out + 16, body, body_len);
    return 16 + body_len;
}

static const uint8_t tcp4_addrs[12] = {192, 0, 2, 10, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb};

static size_t tcp6_addrs(uint8_t *b)
{
    struct in6_addr s, d;
    inet_pton(AF_INET6, "2001:db8::1", &s);
    inet_pton(AF_INET6, "2001:db8::2", &d);
    memcpy(b, &s, 16);
    memcpy(b + 16, &d, 16);
    b[32] = 0x30, b[33] = 0x39; /* 12345 */
    b[34] = 0x00, b[35] = 0x50; /* 80 */
    return 36;
}

static void test_v2_valid(void **state)
{
    static uint8_t h[PROXY_V2_MAX_BYTES + 64], body[PROXY_V2_MAX_LEN_BYTES + 64];
    size_t n = v2(h, 0x21, 0x11, tcp4_addrs, 12);
    expect_done(h, n, 2, "192.0.2.10", 56324, "198.51.100.1", 443);

    size_t b = tcp6_addrs(body);
    n = v2(h, 0x21, 0x21, body, b);
    expect_done(h, n, 2, "2001:db8::1", 12345, "2001:db8::2", 80);

    /* TLVs after the addresses, as HAProxy sends them: skipped within bounds. */
    memcpy(body, tcp4_addrs, 12);
    b = 12;
    static const uint8_t tlvs[] = {0x01, 0x00, 0x02, 'h', '2',      /* ALPN */
                                   0x02, 0x00, 0x03, 'a', '.', 'b', /* authority */
                                   0x04, 0x00, 0x00,                /* NOOP, empty */
                                   0x05, 0x00, 0x01, 0x42};         /* unique id */
    memcpy(body + b, tlvs, sizeof(tlvs));
    b += sizeof(tlvs);
    n = v2(h, 0x21, 0x11, body, b);
    expect_done(h, n, 2, "192.0.2.10", 56324, "198.51.100.1", 443);

    /* The largest header: one TLV filling the block to the limit. */
    memcpy(body, tcp4_addrs, 12);
    size_t fill = PROXY_V2_MAX_LEN_BYTES - 12 - 3;
    body[12] = 0xEE, body[13] = (uint8_t)(fill >> 8), body[14] = (uint8_t)fill;
    memset(body + 15, 0x5a, fill);
    n = v2(h, 0x21, 0x11, body, PROXY_V2_MAX_LEN_BYTES);
    assert_int_equal(n, PROXY_V2_MAX_BYTES);
    expect_done(h, n, 2, "192.0.2.10", 56324, "198.51.100.1", 443);

    /* LOCAL (a balancer's health check): no address, whatever the block holds. */
    n = v2(h, 0x20, 0x00, NULL, 0);
    expect_done(h, n, 2, NULL, 0, NULL, 0);
    n = v2(h, 0x20, 0x31, (const uint8_t *)"\xff\xff\xff", 3);
    expect_done(h, n, 2, NULL, 0, NULL, 0);
    /* PROXY with family UNSPEC: no address either. */
    n = v2(h, 0x21, 0x00, NULL, 0);
    expect_done(h, n, 2, NULL, 0, NULL, 0);
}

static void test_v2_malformed(void **state)
{
    static uint8_t h[PROXY_V2_MAX_BYTES + 64], body[PROXY_V2_MAX_LEN_BYTES + 64];
    /* Each signature byte wrong: refused at that byte. */
    for (size_t i = 0; i < 12; i++) {
        size_t n = v2(h, 0x21, 0x11, tcp4_addrs, 12);
        h[i] ^= 0x20;
        expect_error_by(h, n, i + 1);
    }
    struct {
        uint8_t ver_cmd, fam;
        size_t by; /* refused by this byte */
    } fixed[] = {
        {0x11, 0x11, 13}, /* version 1 in the binary form */
        {0x31, 0x11, 13}, /* version 3 */
        {0x22, 0x11, 13}, /* command 2 */
        {0x2f, 0x11, 13}, /* command 15 */
        {0x21, 0x31, 14}, /* PROXY over a UNIX socket */
        {0x21, 0x32, 14}, /* UNIX datagram */
        {0x21, 0x12, 14}, /* UDP over IPv4 */
        {0x21, 0x22, 14}, /* UDP over IPv6 */
        {0x21, 0x10, 14}, /* IPv4, transport unspecified */
        {0x21, 0x01, 14}, /* family unspecified, stream */
        {0x21, 0x41, 14}, /* family 4 */
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        size_t n = v2(h, fixed[i].ver_cmd, fixed[i].fam, tcp4_addrs, 12);
        expect_error_by(h, n, fixed[i].by);
    }
    /* Address blocks too short for their family: refused once the length is in. */
    size_t n = v2(h, 0x21, 0x11, tcp4_addrs, 11);
    expect_error_by(h, n, 16);
    size_t b = tcp6_addrs(body);
    n = v2(h, 0x21, 0x21, body, b - 1);
    expect_error_by(h, n, 16);
    /* Longer than the limit: refused at the length field, before the block arrives. */
    memset(body, 0, sizeof(body));
    memcpy(body, tcp4_addrs, 12);
    n = v2(h, 0x21, 0x11, body, PROXY_V2_MAX_LEN_BYTES + 1);
    expect_error_by(h, n, 16);
    n = v2(h, 0x20, 0x00, body, PROXY_V2_MAX_LEN_BYTES + 1); /* LOCAL too */
    expect_error_by(h, n, 16);
    /* TLVs that do not fit: a partial TLV header, a length past the end. */
    static const uint8_t *const bad_tlvs[] = {(const uint8_t *)"\x01", (const uint8_t *)"\x01\x00",
                                              (const uint8_t *)"\x01\x00\x02h",
                                              (const uint8_t *)"\x04\x00\x00\x01\xff\xff"};
    static const size_t bad_tlv_len[] = {1, 2, 4, 6};
    for (size_t i = 0; i < 4; i++) {
        memcpy(body, tcp4_addrs, 12);
        memcpy(body + 12, bad_tlvs[i], bad_tlv_len[i]);
        n = v2(h, 0x21, 0x11, body, 12 + bad_tlv_len[i]);
        expect_error_by(h, n, n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_valid),      cmocka_unit_test(test_v1_malformed),
        cmocka_unit_test(test_early_refusal), cmocka_unit_test(test_v2_valid),
        cmocka_unit_test(test_v2_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
