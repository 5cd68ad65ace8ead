/*  cli — small helpers the zllm commands share to read their command lines. */
#include "cli.h"
#include "zlog.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

int
cli_parse_uint (const char *flag, const char *text, uint64_t min, uint64_t max,
                uint64_t *value)
{
    char *end = NULL;
    errno = 0;
    unsigned long long parsed = strtoull (text, &end, 10);
    if (text [0] < '0' || text [0] > '9' || *end != 0 || errno == ERANGE
    ||  parsed < min || parsed > max) {
        fprintf (stderr, "zllm: %s: '%s' is not a whole number from %" PRIu64 " to %"
                 PRIu64 "\n", flag, text, min, max);
        return -1;
    }
    *value = parsed;
    return 0;
}

int
cli_set_log_level (const char *name)
{
    zlog_level_t level;
    if (zlog_parse_level (name, &level) != 0) {
        fprintf (stderr, "zllm: --log-level: '%s' is not one of debug, info, warn, error\n",
                 name);
        return -1;
    }
    zlog_set_level (level);
    return 0;
}
