/*
 * Flags and RINGPAY_* environment variables (see config.h).
 */
#include "tools/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int config_parse_addr(const char *text, struct sockaddr_storage *addr, socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon == text || (size_t)(colon - text) >= sizeof(host))
        return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || colon[1] == '\0' || !isdigit((unsigned char)colon[1]) || port > 65535)
        return -1;
    memset(addr, 0, sizeof(*addr));
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)addr;
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -1;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)addr;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return -1;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof(*a4);
    return 0;
}

/* RINGPAY_ + the flag upper-cased with '-' as '_'. */
static void env_name(const char *flag, char *out, size_t cap)
{
    size_t o = (size_t)snprintf(out, cap, "RINGPAY_");
    for (; *flag && o + 1 < cap; flag++)
        out[o++] = *flag == '-' ? '_' : (char)toupper((unsigned char)*flag);
    out[o] = '\0';
}

static int set_value(struct opt *o, const char *value, const char *source)
{
    o->str = value;
    o->set = true;
    switch (o->type) {
    case OPT_STRING:
        if (value[0] == '\0') {
            fprintf(stderr, "ringpay: %s: must not be empty\n", source);
            return -1;
        }
        return 0;
    case OPT_FLAG:
        return 0;
    case OPT_UINT: {
        char *end;
        errno = 0;
        unsigned long v = strtoul(value, &end, 10);
        if (!isdigit((unsigned char)value[0]) || *end || errno || v < o->min || v > o->max) {
            fprintf(stderr, "ringpay: %s: expected an integer from %lu to %lu, got \"%s\"\n",
                    source, o->min, o->max, value);
            return -1;
        }
        o->num = v;
        return 0;
    }
    case OPT_ADDR:
        if (config_parse_addr(value, &o->addr, &o->addr_len) != 0) {
            fprintf(stderr, "ringpay: %s: expected HOST:PORT (e.g. 127.0.0.1:8080), got \"%s\"\n",
                    source, value);
            return -1;
        }
        return 0;
    }
    return -1;
}

static void print_usage(const struct opt *opts, size_t n, const char *usage)
{
    printf("%s\nOptions (each also settable as RINGPAY_<NAME>):\n", usage);
    for (size_t i = 0; i < n; i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s%s", opts[i].name, opts[i].type == OPT_FLAG ? "" : " V");
        printf("  %-26s %s", flag, opts[i].help);
        if (opts[i].def)
            printf(" (default %s)", opts[i].def);
        printf("\n");
    }
    printf("  %-26s %s\n", "--help", "print this help");
}

static struct opt *find(struct opt *opts, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static int parse_args(struct opt *opts, size_t n, int argc, char **argv, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_usage(opts, n, usage);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "ringpay: unexpected argument \"%s\" (see --help)\n", a);
            return -1;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        struct opt *o = find(opts, n, a + 2, len);
        if (o == NULL) {
            fprintf(stderr, "ringpay: unknown option \"%s\" (see --help)\n", a);
            return -1;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (o->type == OPT_FLAG) {
            value = value ? value : "true";
        } else if (value == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ringpay: --%s needs a value\n", o->name);
                return -1;
            }
            value = argv[++i];
        }
        char source[80];
        snprintf(source, sizeof(source), "--%s", o->name);
        if (set_value(o, value, source) != 0)
            return -1;
    }
    return 0;
}

int config_parse(struct opt *opts, size_t n, int argc, char **argv, const char *usage)
{
    int rc = parse_args(opts, n, argc, argv, usage);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct opt *o = &opts[i];
        if (o->set)
            continue;
        char env[80];
        env_name(o->name, env, sizeof(env));
        const char *v = getenv(env);
        if (v && set_value(o, v, env) != 0)
            return -1;
        if (!v && o->def && set_value(o, o->def, "default") != 0)
            return -1;
        if (!v)
            o->set = false; /* a default is not an explicit setting */
    }
    return 0;
}

const struct opt *config_get(const struct opt *opts, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}
