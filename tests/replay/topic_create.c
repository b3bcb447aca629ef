/*
 * topic_create.c — `topic_create BOOTSTRAP TOPIC PARTITIONS`: creates a topic
 * on the test broker (kcat cannot), for the Python test of hosted backfills.
 */
#include <stdio.h>
#include <stdlib.h>

#include "sl_test_kafka.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: topic_create BOOTSTRAP TOPIC PARTITIONS\n");
        return 2;
    }
    char err[512];
    if (sl_test_kafka_topic_create(argv[1], argv[2], atoi(argv[3]), 30000, err, sizeof err)) {
        fprintf(stderr, "topic_create: %s\n", err);
        return 1;
    }
    return 0;
}
