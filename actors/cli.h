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

#endif
