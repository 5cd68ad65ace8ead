/*  worker — one device: it loads the model, joins a scheduler, and computes the steps the
    scheduler sends.

    The worker is two threads. The worker actor talks to the scheduler: it says HELLO
    (protocol version, device name, model fingerprint, context length, and its KV pool:
    how many blocks of how many positions), answers heartbeats, and passes each STEP to
    its engine thread, which makes the step's block copies, runs all the step's
    sequences through the model as one batch, samples, and hands back the STEP_RESULT.
    The scheduler decides which blocks hold what; the engine keeps only each sequence's
    sampling state (started by the sequence's first step, dropped when a step frees it). So the worker stays responsive (heartbeats)
    while a long step computes, and the scheduler can tell a busy worker from a dead one.

    The connection: a DEALER connected to the scheduler's worker endpoint (inproc:// inside
    zllm serve, tcp:// for `zllm worker` on another host). Until the scheduler says
    WELCOME, HELLO is repeated every heartbeat; when the scheduler is silent for timeout_ms,
    the worker forgets its sequences and says HELLO again, so a restarted scheduler gets it
    back. REJECT (another model, another protocol version) ends the worker with that reason
    in args.error.

    Runs as a CZMQ actor: zactor_new (worker_actor, &args); it signals once the model is
    loaded (args.error says why it could not start). "$TERM" says BYE and stops it. When it
    ends by itself (REJECT), it sends "STOPPED" on the pipe before returning.
*/
#ifndef ZLLM_WORKER_H
#define ZLLM_WORKER_H

#include <czmq.h>
#include <stdint.h>

typedef struct {
    //  In
    const char *model_path;         //  the GGUF to load
    const char *scheduler_endpoint; //  where to connect
    const char *device;             //  "cpu:0"
    uint32_t n_ctx;                 //  the longest sequence; 0: the model's context length
    uint32_t block_size;            //  KV positions per block; 0: 16
    uint64_t kv_cache_bytes;        //  KV pool size; 0: room for 4 sequences of n_ctx,
                                    //  at most 1 GiB, at least one sequence of n_ctx
    uint32_t n_threads;             //  compute threads; 0: $ZLLM_THREADS or 1
    uint32_t heartbeat_ms;          //  0: 1000
    uint32_t timeout_ms;            //  0: 5000
    //  Out, valid once zactor_new returns
    char error[256];
} worker_args_t;

void
    worker_actor (zsock_t *pipe, void *args);

#endif
