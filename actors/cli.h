/*  cli — small helpers the zllm commands share to read their command lines. */
#ifndef ZLLM_CLI_H
#define ZLLM_CLI_H

#include <stdint.h>

//  Parse a decimal integer in [min, max] given to `flag`. On error prints
//  "zllm: --flag: ..." to stderr and returns -1.
int
    cli_parse_uint (const char *flag, const char *text, uint64_t min, uint64_t max,
                    uint64_t *value);

//  Apply --log-level NAME; prints an error and returns -1 for an unknown name.
int
    cli_set_log_level (const char *name);

//  Parse a memory SIZE given to `flag` (--kv-cache-memory), one of:
//    - a number of bytes, whole, with an optional suffix K, M, G, T or KiB, MiB, GiB,
//      TiB (any case; all powers of 1024), which may have a fractional part before a
//      suffix: 1048576, 512MiB, 2G, 1.5GiB. At least CLI_MIN_SIZE bytes.
//    - a fraction of the memory available (0 < f <= 1), written with a decimal point:
//      0.5, 1.0.
//  No sign, exponent, spaces or decimal suffixes (KB, MB: ambiguous). Sets *bytes (and
//  *fraction to 0) or *fraction (and *bytes to 0) and returns 0; on error prints
//  "zllm: --flag: ..." to stderr and returns -1.
#define CLI_MIN_SIZE 4096
int
    cli_parse_size (const char *flag, const char *text, uint64_t *bytes, double *fraction);

//  A fraction of MemAvailable (/proc/meminfo) divided into shares equal parts, in
//  bytes, into *bytes. Returns 0, or -1 after printing why to stderr.
int
    cli_memory_share (const char *flag, double fraction, uint32_t shares, uint64_t *bytes);

#endif
