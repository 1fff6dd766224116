/*
 * ringpay: one binary, git-style subcommands (SPEC §1).
 */
#include <stdio.h>
#include <string.h>

#include "tools/cmd.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"serve", cmd_serve, "run the payment engine (HTTP API over io_uring)"},
    {"check", cmd_check, "audit a stopped engine's data directory"},
    {"load", cmd_load, "load generator: throughput and latency percentiles"},
    {"keys", cmd_keys, "manage API keys: add, list, revoke"},
    {"client", cmd_client, "signed client for every API call"},
    {"settle", cmd_settle, "run the back office: settlement batches, reconciliation"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: ringpay <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'ringpay <command> --help' describes a command's options;\n"
               "'ringpay --version' prints the version.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("ringpay %s\n", RINGPAY_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "ringpay: unknown command \"%s\" (see ringpay --help)\n", argv[1]);
    return 2;
}
