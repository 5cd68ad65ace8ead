/*  tokenizer_actor — between text and token ids, for every request.

    GENERATE from the frontend: a chat request is first rendered into a prompt by the
    chat template (--chat-template, else the GGUF's tokenizer.chat_template); the prompt
    is tokenized with special tokens recognised (BOS as the model asks, unless the
    rendered prompt already starts with it) and goes to the scheduler as SUBMIT, with the
    model's end-of-generation tokens as stop tokens.
    TOKENS from the scheduler: each new token goes through output_text (detokenizer, stop
    strings, tool-call parser) and what is ready goes back to the frontend as OUTPUT (new
    text, tool-call deltas, the finish reason, the usage). A stop token that ends the
    request is counted in completion_tokens but gives no text. When a stop string ends the
    text, the scheduler gets CANCEL so that the sequence stops at once.
    ERROR from the scheduler goes on to the frontend; CANCEL from the frontend goes on to
    the scheduler.

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
    const char *chat_template;      //  template text replacing the GGUF's, or NULL
    const char *tool_call_parser;   //  "llama3_json", "hermes", or NULL: no tool calls
    //  Out, valid once zactor_new returns
    char error[256];
} tokenizer_args_t;

void
    tokenizer_actor (zsock_t *pipe, void *args);

#endif
