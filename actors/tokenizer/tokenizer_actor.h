/*  tokenizer_actor — between text and token ids, for every request.

    GENERATE from the frontend: a chat request is first rendered into a prompt by the
    chat template (--chat-template, else the GGUF's tokenizer.chat_template); the prompt
    is tokenized with special tokens recognised (BOS as the model asks, unless the
    rendered prompt already starts with it) and goes to the scheduler as SUBMIT, with the
    model's end-of-generation tokens as stop tokens. A prompt given as token ids is sent
    as it is (no BOS, no template); an id outside the vocabulary is refused with 400,
    naming it and its position. n, best_of and the beam-search fields (use_beam_search,
    length_penalty, early_stopping) go on in SUBMIT as they came.
    TOKENS from the scheduler: each new token goes through output_text (detokenizer, stop
    strings, tool-call parser) and what is ready goes back to the frontend as OUTPUT (new
    text, tool-call deltas, the finish reason, the usage). A stop token that ends the
    request is counted in completion_tokens but gives no text, unless the request has
    include_stop_str_in_output (as vLLM: then a stop string that ends the text stays at
    its end too). Special tokens give no text unless the request has keep_special_tokens.
    When a stop string ends the text, the scheduler gets CANCEL so that the sequence
    stops at once. A sequence that comes whole in one TOKENS (best_of, beam search) is
    cut at its first stop string the same way. The queue time of the request's first
    TOKENS (queue_us) goes on its first OUTPUT.
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
