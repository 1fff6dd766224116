/*
 * The signals of the long-running subcommands (serve, settle), handled on their main
 * thread (SPEC §1): SIGTERM/SIGINT stop, SIGHUP reloads the keys, SIGPIPE is ignored.
 */
#ifndef RINGPAY_TOOLS_SIGNALS_H
#define RINGPAY_TOOLS_SIGNALS_H

struct gate;

/* Blocks SIGTERM, SIGINT, SIGHUP and SIGPIPE in the calling thread, before any other
 * thread exists, so that every thread inherits it and only signals_wait sees them. */
void signals_block(void);

/* Waits up to tick_ms for one of them: SIGTERM or SIGINT (the "stopping" line logged),
 * SIGHUP, or 0 when the tick passed. */
int signals_wait(int tick_ms);

/* SIGHUP: gate_reload, logged ("keys reloaded" with the count, or why the keys in force
 * stay). */
void signals_reload_keys(struct gate *g);

#endif
