/*
 * rp_mock_kafka: a Kafka-protocol cluster in a process of its own that a test controls
 * (librdkafka's mock cluster, rd_kafka_mock_cluster_new, on loopback ports).
 *
 * On start it prints one line, "bootstrap HOST:PORT,HOST:PORT,...", then reads commands
 * from stdin, one per line, and answers each with "ok" or "error <why>":
 *
 *   down                  every broker disconnects its clients and refuses new ones
 *   up                    every broker accepts connections again
 *   errors API CODE N     the next N requests of Kafka API key API (0 = Produce) fail
 *                         with Kafka error code CODE (e.g. 19 NOT_ENOUGH_REPLICAS)
 *   rtt MS                every broker answers MS milliseconds late
 *   quit                  exit 0 (so does end of input)
 *
 * Usage: rp_mock_kafka [BROKERS]   (default 3). Messages live in this process's memory.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level <= 3)
        fprintf(stderr, "rp_mock_kafka: %s %s\n", fac, buf);
}

static const char *run(rd_kafka_mock_cluster_t *mc, const char *line)
{
    int api, code, n;
    if (strcmp(line, "down") == 0)
        return rd_kafka_mock_broker_set_down(mc, -1) ? "broker_set_down failed" : NULL;
    if (strcmp(line, "up") == 0)
        return rd_kafka_mock_broker_set_up(mc, -1) ? "broker_set_up failed" : NULL;
    if (sscanf(line, "errors %d %d %d", &api, &code, &n) == 3 && n > 0 && n <= 100000) {
        rd_kafka_resp_err_t *errs = malloc((size_t)n * sizeof(*errs));
        if (errs == NULL)
            return "out of memory";
        for (int i = 0; i < n; i++)
            errs[i] = (rd_kafka_resp_err_t)code;
        rd_kafka_mock_push_request_errors_array(mc, (int16_t)api, (size_t)n, errs);
        free(errs);
        return NULL;
    }
    if (sscanf(line, "rtt %d", &n) == 1 && n >= 0)
        return rd_kafka_mock_broker_set_rtt(mc, -1, n) ? "broker_set_rtt failed" : NULL;
    return "unknown command";
}

int main(int argc, char **argv)
{
    int brokers = argc > 1 ? atoi(argv[1]) : 3;
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "rp_mock_kafka: %s\n", err);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL) {
        fprintf(stderr, "rp_mock_kafka: cannot create the mock cluster\n");
        return 1;
    }
    printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "quit") == 0)
            break;
        const char *why = run(mc, line);
        if (why)
            printf("error %s\n", why);
        else
            printf("ok\n");
        fflush(stdout);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
