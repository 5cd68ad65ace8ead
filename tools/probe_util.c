/*  probe_util — see probe_util.h. */
#include "probe_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double
probe_now (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (double) now.tv_sec + (double) now.tv_nsec / 1e9;
}

int
probe_parse_count (const char *program, const char *flag, const char *text, long min,
                   long max, long *value)
{
    char *end = NULL;
    errno = 0;
    long parsed = strtol (text, &end, 10);
    if (!text [0] || *end || errno || parsed < min || parsed > max) {
        fprintf (stderr, "%s: %s: '%s' is not a whole number from %ld to %ld\n",
                 program, flag, text, min, max);
        return -1;
    }
    *value = parsed;
    return 0;
}
