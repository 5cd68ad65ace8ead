/*  scheduler — decides, step by step, what every worker computes.

    It receives requests as token ids (SUBMIT) from the tokenizer actor, keeps them in a
    first-come-first-served queue, places each in a free KV slot of a worker, and drives
    that worker with STEP messages: a new sequence is prefilled whole, then every running
    sequence decodes one token per step. Each sampled token goes back to the tokenizer as
    TOKENS; a sequence finishes on one of its stop tokens (finish "stop") or at max_tokens
    or the end of the worker's context (finish "length").

    Workers, in this process or in others, connect a DEALER to the worker endpoint(s) and
    say HELLO; a worker with another protocol version or another model is refused
    (REJECT). Both sides send HEARTBEAT every heartbeat_ms; a worker that says BYE or is
    silent for worker_timeout_ms is dropped, and the requests it was running get ERROR 503.
    A request that arrives while no worker is connected gets ERROR 503 at once.

    Every second (and on every change) it publishes STATUS (workers, running, waiting) on
    status_endpoint, which the frontend reads for /health.

    Now: one step in flight per worker, KV slots instead of paged blocks (the scheduler
    issue brings continuous batching over paged KV, prefix caching and beams).

    Runs as a CZMQ actor: zactor_new (scheduler_actor, &args); it signals once its
    sockets are bound (args.error says why it could not start). "$TERM" stops it.
*/
#ifndef ZLLM_SCHEDULER_H
#define ZLLM_SCHEDULER_H

#include <czmq.h>
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
    //  Out, valid once zactor_new returns
    char error[256];
} scheduler_args_t;

void
    scheduler_actor (zsock_t *pipe, void *args);

#endif
