/*  metrics — the counters and histograms behind GET /metrics, and their Prometheus text.

    The frontend owns one metrics_t. It tells it what it sees of each request (its time
    in the scheduler's queue, the first text, each later OUTPUT, the end with its finish
    reason and usage), and, when asked
    for /metrics, hands it the latest STATUS of the scheduler (running requests, KV
    blocks, prefix-cache and preemption totals) to write everything in Prometheus' text
    exposition format 0.0.4: "# HELP" and "# TYPE" lines, then the samples.

    Names mirror vLLM's, with the prefix "zllm:" instead of "vllm:", and every sample
    carries the label model_name (the served model name), as vLLM's do, so dashboards
    written for vLLM need only the prefix changed. The histograms use vLLM's buckets.
    Values are written as Python's prometheus_client writes them ("3.0", "0.25", "+Inf").

    It does no I/O and takes no clock: the caller measures, in seconds. Not thread-safe:
    the frontend's one thread uses it.
*/
#ifndef ZLLM_METRICS_H
#define ZLLM_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _metrics_t metrics_t;

//  What the scheduler says (its latest STATUS) and what the frontend counts itself, at
//  the moment /metrics is asked for.
typedef struct {
    uint32_t running;               //  requests the scheduler runs
    uint32_t waiting;               //  requests accepted and not running (see frontend.c)
    uint32_t kv_blocks_used;
    uint32_t kv_blocks_total;       //  0: usage is written as 0
    uint64_t prefix_queries;        //  totals since the scheduler started, in KV blocks
    uint64_t prefix_hits;
    uint64_t preemptions;
} metrics_status_t;

//  A new set of metrics, all zero, labelled with this model name (copied). NULL when out
//  of memory.
metrics_t *
    metrics_new (const char *model_name);

//  Free it and null the pointer.
void
    metrics_destroy (metrics_t **self_p);

//  A request's first text arrived this many seconds after the request did.
void
    metrics_time_to_first_token (metrics_t *self, double seconds);

//  A request waited this many seconds in the scheduler's queue before its first step
//  (the queue_us of its first OUTPUT): one sample of request_queue_time_seconds.
void
    metrics_queue_time (metrics_t *self, double seconds);

//  count tokens arrived seconds after the previous ones: count samples of seconds/count
//  (one per token, as vLLM's inter-token latency has one per decoded token).
void
    metrics_inter_token_latency (metrics_t *self, double seconds, uint32_t count);

//  A request ended well (its last OUTPUT came) after seconds, with this finish reason
//  ("stop", "length" or "tool_calls": the labels of request_success_total; another
//  reason counts its tokens and latency but no success) and usage.
void
    metrics_request_finished (metrics_t *self, const char *finish_reason,
                              uint32_t prompt_tokens, uint32_t completion_tokens,
                              double seconds);

//  The Prometheus text of everything, with status for the gauges and the scheduler's
//  counters. A heap string (free it), or NULL when out of memory.
char *
    metrics_text (metrics_t *self, const metrics_status_t *status);

//  The Content-Type of that text.
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
