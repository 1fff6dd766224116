/*
 * The subcommands' signals (see signals.h).
 */
#define _GNU_SOURCE
#include "tools/signals.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>

#include "net/log.h"
#include "tools/serve/gate.h"

static void handled(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

void signals_block(void)
{
    sigset_t set;
    handled(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int signals_wait(int tick_ms)
{
    sigset_t set;
    handled(&set);
    struct timespec tick = {.tv_sec = tick_ms / 1000, .tv_nsec = (long)(tick_ms % 1000) * 1000000L};
    int sig = sigtimedwait(&set, NULL, &tick);
    if (sig == SIGTERM || sig == SIGINT) {
        log_write_str(LOG_INFO, "stopping", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
        return sig;
    }
    return sig == SIGHUP ? sig : 0;
}

void signals_reload_keys(struct gate *g)
{
    char why[512] = "", count[24];
    if (gate_reload(g, why, sizeof(why)) != 0) {
        log_write_str(LOG_ERROR, "keys not reloaded; the keys in force stay", "reason", why, NULL);
        return;
    }
    snprintf(count, sizeof(count), "%zu", gate_key_count(g));
    log_write(LOG_INFO, "keys reloaded", "keys", count, NULL);
}
