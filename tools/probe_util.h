/*  probe_util — what the machine probes (probe_bandwidth, probe_sgemm) share: a
    monotonic clock and the parsing of their whole-number flags.
*/
#ifndef ZLLM_PROBE_UTIL_H
#define ZLLM_PROBE_UTIL_H

//  Seconds on the monotonic clock.
double
    probe_now (void);

//  Parse text as a whole number from min to max for flag. Returns 0, or -1 after
//  printing "PROGRAM: FLAG: 'TEXT' is not a whole number from MIN to MAX" to stderr.
int
    probe_parse_count (const char *program, const char *flag, const char *text, long min,
                       long max, long *value);

#endif
