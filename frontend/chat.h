/*  chat — OpenAI's Chat Completions JSON in and out for the frontend, as pure functions
    (no I/O).

    Parses and validates a POST /v1/chat/completions body into a chat_request_t: the
    generation options (completions.h) and, for the tokenizer, the chat as compact JSON
    {"messages": [...], "tools": [...] (when given), "tool_choice": "auto" | "none"},
    which the tokenizer renders with the model's chat template. Builds the answers: the
    chat.completion body, and the chat.completion.chunk bodies of a stream.

    Tool calls come from the tokenizer as OpenAI streaming deltas (a JSON array of
    {"index", "id"?, "type"?, "function": {"name"?, "arguments"?}}). A stream passes them
    on as they come; a non-streamed answer merges them with a chat_tool_calls_t: the
    first delta of an index gives id, type and name, later ones append to arguments.

    Every JSON text these functions return is a heap string (free it); NULL means out of
    memory. A request that fails validation fills an api_error_t (completions.h).
*/
#ifndef ZLLM_CHAT_H
#define ZLLM_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "completions.h"

//  "chatcmpl-" + 16 hex digits + NUL
#define CHAT_ID_SIZE                    26
#define CHAT_DEFAULT_RESPONSE_ROLE      "assistant"

//  A valid chat request, as the frontend passes it on.
typedef struct {
    char *chat;                     //  heap: the compact JSON the tokenizer renders
    bool has_tools;                 //  "tools" was a non-empty array
    bool auto_tool_choice;          //  tool_choice is "auto": the tokenizer parses calls
    generation_options_t options;   //  max_tokens 0 (up to the context) when not given
} chat_request_t;

//  Parse and validate a /v1/chat/completions body (size bytes, need not be
//  NUL-terminated). model_name is the only model served; enable_auto_tool_choice says
//  whether the server may parse tool calls (--enable-auto-tool-choice): without it a
//  request with tools and a tool_choice other than "none" is refused, as vLLM does.
//  Returns 0 and fills request (release it with chat_request_reset), or -1 and fills
//  error (request is left zeroed).
int
    chat_request_parse (const char *body, size_t size, const char *model_name,
                        bool enable_auto_tool_choice, chat_request_t *request,
                        api_error_t *error);

//  Free what request owns and zero it.
void
    chat_request_reset (chat_request_t *request);

//  Write "chatcmpl-" and the id as 16 lower-case hex digits into buffer.
void
    chat_id_format (uint64_t request_id, char buffer [CHAT_ID_SIZE]);


//  Tool calls of one answer, merged from their deltas.
typedef struct _chat_tool_calls_t chat_tool_calls_t;

chat_tool_calls_t *
    chat_tool_calls_new (void);

void
    chat_tool_calls_destroy (chat_tool_calls_t **self_p);

//  Is deltas a JSON array of tool-call deltas: objects, each with an integer "index"
//  >= 0, and "id", "type", "function.name", "function.arguments" strings where present?
bool
    chat_tool_calls_valid (const char *deltas);

//  Merge a JSON array of deltas. Returns 0, or -1 when deltas is not valid (see
//  chat_tool_calls_valid; nothing is merged then) or memory ran out.
int
    chat_tool_calls_add (chat_tool_calls_t *self, const char *deltas);

//  How many calls (distinct indexes) were merged.
size_t
    chat_tool_calls_count (const chat_tool_calls_t *self);


//  One choice of a finished chat completion, as the caller holds it (nothing is
//  copied).
typedef struct {
    const char *content;                //  content_size bytes (sanitized as UTF-8);
    size_t content_size;                //  NULL is ""
    const chat_tool_calls_t *tool_calls;    //  NULL or empty: none
    const char *finish_reason;          //  "stop", "length" or "tool_calls"
    const char *logprobs;               //  NULL, or a JSON array of {token, logprob,
                                        //  bytes, top_logprobs}: {"content": that}
} chat_choice_t;

//  The body of a finished, non-streamed chat completion: choices [0 .. n_choices-1],
//  each with "index" its place in the array, and one usage for the request
//  (completion_tokens is the sum over the choices). A message's content is null when it
//  has tool calls and no text; "tool_calls" is there only when there are some.
char *
    chat_response_json (const char *id, int64_t created, const char *model, const char *role,
                        const chat_choice_t *choices, size_t n_choices,
                        uint32_t prompt_tokens, uint32_t completion_tokens);

//  The chunks of a stream each carry one choice, number index. With include_usage each
//  carries "usage": null (a usage chunk follows at the end).

//  The first chunk of a choice: "delta": {"role": role, "content": ""}.
char *
    chat_chunk_role_json (const char *id, int64_t created, const char *model,
                          uint32_t index, const char *role, bool include_usage);

//  A chunk with new content (NULL: none; content_size bytes) and/or tool-call deltas
//  (NULL, or a JSON array that chat_tool_calls_valid accepts; passed on as it is), and
//  the log-probabilities of its tokens (NULL: null; else as in chat_choice_t).
//  NULL when out of memory or tool_calls is not valid JSON.
char *
    chat_chunk_delta_json (const char *id, int64_t created, const char *model,
                           uint32_t index, const char *content, size_t content_size,
                           const char *tool_calls, bool include_usage,
                           const char *logprobs);

//  The chunk that ends the choice: "delta": {} and finish_reason.
char *
    chat_chunk_finish_json (const char *id, int64_t created, const char *model,
                            uint32_t index, const char *finish_reason, bool include_usage);

#endif
