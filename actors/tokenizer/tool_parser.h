/*  tool_parser — finds tool calls in generated text, as vLLM's tool parsers do, and gives
    them out as OpenAI tool-call deltas, streaming or not.

    Formats:
      llama3_json  an optional "<|python_tag|>", then one or more JSON objects with "name"
                   and "parameters" (or "arguments"), separated by ";".
      hermes       <tool_call>{"name": ..., "arguments": {...}}</tool_call>, any number,
                   with text around them (Qwen2.5, Hermes).

    Text arrives in pieces. Text that is not (or cannot be) part of a call is released as
    content at once; text that may be a call is held until the call is complete, then
    given out as a delta [{"index": i, "id": "call_...", "type": "function",
    "function": {"name": ..., "arguments": "<JSON string>"}}] (a whole call in one
    delta is valid OpenAI streaming, and the non-streamed answer is the same deltas
    merged). At the end, held text that never became a valid call is released as
    content: nothing the model wrote is dropped.

    Who owns what: returned strings belong to the parser and are valid until its next
    call. One per sequence.
*/
#ifndef ZLLM_TOOL_PARSER_H
#define ZLLM_TOOL_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    TOOL_PARSER_LLAMA3_JSON = 0,
    TOOL_PARSER_HERMES = 1
} tool_parser_format_t;

//  "llama3_json" or "hermes"; -1 for any other name.
int
    tool_parser_format_from_name (const char *name, tool_parser_format_t *format);

typedef struct _tool_parser_t tool_parser_t;

//  id_seed makes the call ids ("call_" + 24 alphanumerics) unique per request.
tool_parser_t *
    tool_parser_new (tool_parser_format_t format, uint64_t id_seed);

void
    tool_parser_destroy (tool_parser_t **self_p);

//  What one call of tool_parser_add / tool_parser_finish gives out.
typedef struct {
    const char *content;            //  text for the message content (possibly "")
    const char *tool_calls;         //  NULL, or a JSON array of tool-call deltas
} tool_parser_output_t;

//  Add a piece of generated text.
tool_parser_output_t
    tool_parser_add (tool_parser_t *self, const char *text);

//  End of generation: releases what is held (a call completed by the end, or content).
tool_parser_output_t
    tool_parser_finish (tool_parser_t *self);

//  How many calls have been given out so far (finish_reason "tool_calls" when > 0).
size_t
    tool_parser_call_count (const tool_parser_t *self);

#endif
