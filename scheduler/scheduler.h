/*  scheduler — decides, step by step, what every worker computes.

    It receives requests as token ids (SUBMIT) from the tokenizer actor, keeps them in a
    first-come-first-served queue, and drives every worker with STEP messages:
    continuous batching with chunked prefill over each worker's paged KV cache (running
    sequences decode or prefill their next chunk; waiting requests join when their
    blocks are free), prefix caching, preemption by recompute when blocks run out, and
    n sequences per request forked from one prefill (scheduler.c says how). Each
    sampled token goes back to the tokenizer as TOKENS (with its sequence's index); a
    sequence finishes on one of its stop tokens (finish "stop") or at max_tokens or the
    end of the worker's context (finish "length").

    Workers, in this process or in others, connect a DEALER to the worker endpoint(s) and
    say HELLO with their KV pool; a worker with another protocol version, another model
    or a pool too small for one sequence is refused (REJECT). Both sides send HEARTBEAT
    every heartbeat_ms; a worker that says BYE or is silent for worker_timeout_ms is
    dropped: its requests that have produced no token yet go back to the queue, the
    others get ERROR 503. A request that arrives while no worker is connected gets
    ERROR 503 at once.

    Every second (and on every change) it publishes STATUS (workers, running requests,
    waiting, KV blocks used and in all, prefix-cache queries and hits, preemptions) on
    status_endpoint, which the frontend reads for /health and /metrics.

    Runs as a CZMQ actor: zactor_new (scheduler_actor, &args); it signals once its
    sockets are bound (args.error says why it could not start). "$TERM" stops it.
*/
#ifndef ZLLM_SCHEDULER_H
#define ZLLM_SCHEDULER_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    //  In
    const char *inbox_endpoint;     //  ROUTER: the tokenizer's requests (SUBMIT, CANCEL)
    const char *worker_endpoint;    //  ROUTER for workers (inproc:// in zllm serve)
    const char *worker_listen;      //  NULL, or a tcp:// endpoint also bound for workers
    const char *status_endpoint;    //  PUB: STATUS
    uint64_t model_fingerprint;     //  workers must serve this model (0: accept any)
    uint32_t heartbeat_ms;          //  0: 1000
    uint32_t worker_timeout_ms;     //  0: 5000
    uint32_t max_num_seqs;          //  sequences one worker runs at once; 0: 64
    uint32_t max_num_batched_tokens;//  tokens in one step of one worker; 0: 512
    bool no_prefix_caching;         //  turn prefix caching off
    //  Out, valid once zactor_new returns
    char error[256];
} scheduler_args_t;

void
    scheduler_actor (zsock_t *pipe, void *args);

#endif
