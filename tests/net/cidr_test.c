/*
 * Tests of net/cidr.c: the text form (spaces, bare addresses as /32 and /128, prefix
 * bounds, host bits past the prefix, empty items, the list bound), and matching at the
 * edges of networks for IPv4, IPv6 and IPv4-mapped IPv6 peers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "net/cidr.h"

static struct sockaddr_storage addr(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(text, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, text, &a->sin_addr), 1);
    }
    return ss;
}

static struct cidr_list list;

static void must_parse(const char *text, size_t count)
{
    char err[256] = "";
    if (cidr_list_parse(&list, text, err, sizeof(err)) != 0)
        fail_msg("\"%s\": %s", text, err);
    assert_int_equal(list.count, count);
}

static bool match(const char *a)
{
    struct sockaddr_storage ss = addr(a);
    return cidr_list_match(&list, &ss);
}

static void test_ipv4_networks(void **state)
{
    must_parse("10.0.0.0/8, 192.168.1.7 ,172.16.0.0/12", 3);
    assert_true(match("10.0.0.0"));
    assert_true(match("10.255.255.255"));
    assert_false(match("11.0.0.0"));
    assert_false(match("9.255.255.255"));
    assert_true(match("192.168.1.7")); /* a bare address is /32 */
    assert_false(match("192.168.1.6"));
    assert_false(match("192.168.1.8"));
    assert_true(match("172.31.255.255"));
    assert_false(match("172.32.0.0"));
    assert_false(match("::1"));
    /* An IPv4-mapped IPv6 peer matches the IPv4 networks. */
    assert_true(match("::ffff:10.1.2.3"));
    assert_true(match("::ffff:192.168.1.7"));
    assert_false(match("::ffff:11.0.0.1"));
    /* ... but an IPv6 address with the same low bits does not. */
    assert_false(match("::10.1.2.3"));
    assert_false(match("2001:db8::a01:203"));
}

static void test_ipv6_networks(void **state)
{
    must_parse("2001:db8::/32,::1,fe80::/10", 3);
    assert_true(match("2001:db8::1"));
    assert_true(match("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
    assert_false(match("2001:db9::"));
    assert_true(match("::1"));
    assert_false(match("::2"));
    assert_true(match("febf:ffff::1"));
    assert_false(match("fec0::1"));
    assert_false(match("127.0.0.1"));
}

static void test_prefix_edges(void **state)
{
    must_parse("0.0.0.0/0", 1);
    assert_true(match("0.0.0.0"));
    assert_true(match("255.255.255.255"));
    assert_true(match("::ffff:1.2.3.4"));
    assert_false(match("::1")); /* every IPv4 address, not every address */
    must_parse("::/0", 1);
    assert_true(match("::1"));
    assert_true(match("1.2.3.4"));
    must_parse("1.2.3.4/32,1.2.3.128/25", 2);
    assert_true(match("1.2.3.4"));
    assert_false(match("1.2.3.5"));
    assert_true(match("1.2.3.255"));
    assert_false(match("1.2.3.127"));
    must_parse("2001:db8::8000/113", 1);
    assert_true(match("2001:db8::ffff"));
    assert_false(match("2001:db8::7fff"));
    must_parse(CIDR_LOOPBACK, 2);
    assert_true(match("127.0.0.1"));
    assert_true(match("127.255.0.9"));
    assert_true(match("::1"));
    assert_true(match("::ffff:127.0.0.1"));
    assert_false(match("128.0.0.1"));
    must_parse("", 0); /* the empty list matches nothing */
    assert_false(match("127.0.0.1"));
}

static void expect_refused(const char *text, const char *why)
{
    char err[256] = "";
    assert_int_equal(cidr_list_parse(&list, text, err, sizeof(err)), -EINVAL);
    assert_int_equal(list.count, 0);
    if (strstr(err, why) == NULL || strchr(err, '\n'))
        fail_msg("\"%s\": err \"%s\", want \"%s\"", text, err, why);
}

static void test_refused(void **state)
{
    expect_refused("10.0.0.1/8", "\"10.0.0.1/8\" has bits set past its prefix; the network is "
                                 "10.0.0.0/8");
    expect_refused("2001:db8::1/32", "the network is 2001:db8::/32");
    expect_refused("10.0.0.0/33", "0-32");
    expect_refused("::/129", "0-128");
    expect_refused("10.0.0.0/08", "0-32");
    expect_refused("10.0.0.0/", "0-32");
    expect_refused("10.0.0.0/-1", "0-32");
    expect_refused("10.0.0.0/8/8", "0-32");
    expect_refused("10.0.0", "not an IPv4 or IPv6 address");
    expect_refused("010.0.0.0", "not an IPv4 or IPv6 address");
    expect_refused("10.0.0.256", "not an IPv4 or IPv6 address");
    expect_refused("localhost", "not an IPv4 or IPv6 address");
    expect_refused("fe80::1%eth0", "not an IPv4 or IPv6 address");
    expect_refused("1.2.3.4,,5.6.7.8", "an empty item");
    expect_refused("1.2.3.4,", "an empty item");
    expect_refused(",1.2.3.4", "an empty item");
    expect_refused(" ", "an empty item");
    expect_refused("1.2.3.4 5.6.7.8", "not an IPv4 or IPv6 address");
    expect_refused("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128-and-then-some", "too long");
    /* The bound: CIDR_LIST_MAX networks are fine, one more is refused. */
    char text[CIDR_LIST_MAX * 16 + 32];
    size_t o = 0;
    for (int i = 0; i < CIDR_LIST_MAX; i++)
        o += (size_t)snprintf(text + o, sizeof(text) - o, "%s10.0.%d.0/24", i ? "," : "", i);
    must_parse(text, CIDR_LIST_MAX);
    assert_true(match("10.0.127.9"));
    snprintf(text + o, sizeof(text) - o, ",10.1.0.0/16");
    expect_refused(text, "more than 128 networks");
}

static void test_other_families(void **state)
{
    must_parse("::/0", 1);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    assert_false(cidr_list_match(&list, &ss));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_networks),  cmocka_unit_test(test_ipv6_networks),
        cmocka_unit_test(test_prefix_edges),   cmocka_unit_test(test_refused),
        cmocka_unit_test(test_other_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
