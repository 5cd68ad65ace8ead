/*  tokenizer_actor — between text and token ids, for every request.

    GENERATE from the frontend: the prompt is tokenized (BOS as the model asks) and goes to
    the scheduler as SUBMIT, with the model's end-of-sequence token as stop token.
    TOKENS from the scheduler: each new token is detokenized incrementally and goes back to
    the frontend as OUTPUT (the text now complete, the finish reason, the usage). A stop
    token that ends the request is counted in completion_tokens but gives no text.
    ERROR from the scheduler goes on to the frontend; CANCEL from the frontend goes on to
    the scheduler.

    Now: the SentencePiece tokenizer that stories260K needs (the tokenizer issue brings
    BPE, chat templates, stop strings and tool calls).

    Runs as a CZMQ actor: zactor_new (tokenizer_actor, &args); it signals once the
    vocabulary is loaded and its sockets are up (args.error says why it could not start).
    Pipe commands: "$TERM" stops it; "PEER_DOWN" fails every open request with 503 (the
    scheduler is gone).
*/
#ifndef ZLLM_TOKENIZER_ACTOR_H
#define ZLLM_TOKENIZER_ACTOR_H

#include <czmq.h>
#include <stdint.h>

typedef struct {
    //  In
    const char *model_path;         //  the GGUF whose vocabulary to use
    const char *inbox_endpoint;     //  ROUTER: the frontend connects here
    const char *scheduler_endpoint; //  the scheduler's inbox; we connect a DEALER
    //  Out, valid once zactor_new returns
    char error[256];
} tokenizer_args_t;

void
    tokenizer_actor (zsock_t *pipe, void *args);

#endif
