/*  cli — small helpers the zllm commands share to read their command lines. */
#include "cli.h"
#include "zlog.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

//  The suffixes of a SIZE and what each multiplies by.
static const struct {
    const char *suffix;
    uint64_t multiplier;
} s_size_suffixes [] = {
    { "K", 1ull << 10 }, { "KiB", 1ull << 10 },
    { "M", 1ull << 20 }, { "MiB", 1ull << 20 },
    { "G", 1ull << 30 }, { "GiB", 1ull << 30 },
    { "T", 1ull << 40 }, { "TiB", 1ull << 40 }
};

int
cli_parse_size (const char *flag, const char *text, uint64_t *bytes, double *fraction)
{
    *bytes = 0;
    *fraction = 0;
    //  Read it by hand: strtod would take exponents, hex, "inf" and leading spaces.
    const char *at = text;
    uint64_t whole = 0;
    size_t digits = 0;
    while (*at >= '0' && *at <= '9') {
        if (whole > (UINT64_MAX - 9) / 10)
            goto too_large;
        whole = whole * 10 + (uint64_t) (*at - '0');
        at++;
        digits++;
    }
    bool has_point = *at == '.';
    double part = 0, scale = 1;
    size_t part_digits = 0;
    if (has_point) {
        at++;
        while (*at >= '0' && *at <= '9') {
            if (part_digits < 15) {
                scale /= 10;
                part += (*at - '0') * scale;
            }
            at++;
            part_digits++;
        }
    }
    if (digits == 0 || (has_point && part_digits == 0))
        goto malformed;

    if (*at == 0) {
        if (has_point) {
            double value = (double) whole + part;
            if (value <= 0 || value > 1) {
                fprintf (stderr, "zllm: %s: '%s': a fraction of the available memory must "
                         "be more than 0 and at most 1\n", flag, text);
                return -1;
            }
            *fraction = value;
            return 0;
        }
        if (whole > (1ull << 50))
            goto too_large;
        if (whole < CLI_MIN_SIZE) {
            fprintf (stderr, "zllm: %s: '%s' bytes is too small (at least %d; for a "
                     "fraction of the available memory write it with a decimal point, "
                     "e.g. 1.0)\n", flag, text, CLI_MIN_SIZE);
            return -1;
        }
        *bytes = whole;
        return 0;
    }
    for (size_t index = 0; index < sizeof s_size_suffixes / sizeof s_size_suffixes [0];
         index++) {
        if (strcasecmp (at, s_size_suffixes [index].suffix) != 0)
            continue;
        uint64_t multiplier = s_size_suffixes [index].multiplier;
        //  At most 1 PiB, as without a suffix: far beyond any machine, and no overflow.
        if (whole > (1ull << 50) / multiplier)
            goto too_large;
        uint64_t value = whole * multiplier + (uint64_t) (part * (double) multiplier);
        if (value > (1ull << 50))
            goto too_large;
        if (value < CLI_MIN_SIZE) {
            fprintf (stderr, "zllm: %s: '%s' is too small (at least %d bytes)\n", flag,
                     text, CLI_MIN_SIZE);
            return -1;
        }
        *bytes = value;
        return 0;
    }

malformed:
    fprintf (stderr, "zllm: %s: '%s' is not a size: give bytes with an optional suffix "
             "K, M, G, T, KiB, MiB, GiB or TiB (powers of 1024; e.g. 512MiB, 2GiB), or a "
             "fraction of the available memory with a decimal point (e.g. 0.5)\n", flag,
             text);
    return -1;

too_large:
    fprintf (stderr, "zllm: %s: '%s' is too large\n", flag, text);
    return -1;
}

int
cli_memory_share (const char *flag, double fraction, uint32_t shares, uint64_t *bytes)
{
    FILE *file = fopen ("/proc/meminfo", "r");
    if (!file) {
        fprintf (stderr, "zllm: %s: cannot read /proc/meminfo (%s) for a fraction of the "
                 "available memory; give a size such as 2GiB\n", flag, strerror (errno));
        return -1;
    }
    char line [256];
    uint64_t available_kib = 0;
    bool found = false;
    while (!found && fgets (line, sizeof line, file))
        found = sscanf (line, "MemAvailable: %" SCNu64 " kB", &available_kib) == 1;
    fclose (file);
    if (!found) {
        fprintf (stderr, "zllm: %s: /proc/meminfo has no MemAvailable; give a size such "
                 "as 2GiB\n", flag);
        return -1;
    }
    double share = (double) available_kib * 1024.0 * fraction / (shares? shares: 1);
    *bytes = (uint64_t) share;
    if (*bytes < CLI_MIN_SIZE) {
        fprintf (stderr, "zllm: %s: %g of the available memory (%" PRIu64 " KiB) is too "
                 "little\n", flag, fraction, available_kib);
        return -1;
    }
    return 0;
}
