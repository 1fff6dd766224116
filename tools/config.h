/*
 * Command-line and environment configuration of the subcommands.
 *
 * Every flag --some-name is also read from the environment variable
 * RINGPAY_SOME_NAME; a flag on the command line wins over the environment, which wins
 * over the built-in default. A bad value fails with one line naming the flag (or the
 * variable) and what was expected.
 */
#ifndef RINGPAY_TOOLS_CONFIG_H
#define RINGPAY_TOOLS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

enum opt_type { OPT_STRING, OPT_UINT, OPT_ADDR, OPT_FLAG };

struct opt {
    const char *name; /* without the leading "--" */
    enum opt_type type;
    const char *def; /* default as text; NULL: unset */
    const char *help;
    unsigned long min, max; /* OPT_UINT bounds */
    /* results */
    const char *str;
    unsigned long num;
    bool set;
    struct sockaddr_storage addr;
    socklen_t addr_len;
};

/*
 * Fills every option from argv (argv[0] is the subcommand), the environment and the
 * defaults. Returns 0; 1 when --help was given (usage printed to stdout); or -1 after
 * printing one "ringpay: ..." line to stderr.
 */
int config_parse(struct opt *opts, size_t n, int argc, char **argv, const char *usage);

const struct opt *config_get(const struct opt *opts, size_t n, const char *name);

/* Parses "host:port" or "[v6]:port" into addr; 0 or -1. */
int config_parse_addr(const char *text, struct sockaddr_storage *addr, socklen_t *len);

#endif
