/*
 * The subcommands of the ringpay binary. Each takes argv with argv[0] = its own name
 * and returns the process exit code: 0 success, 1 failure at run time, 2 bad usage or
 * configuration.
 */
#ifndef RINGPAY_TOOLS_CMD_H
#define RINGPAY_TOOLS_CMD_H

int cmd_serve(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_load(int argc, char **argv);
int cmd_keys(int argc, char **argv);
int cmd_client(int argc, char **argv);
int cmd_settle(int argc, char **argv);

#endif
