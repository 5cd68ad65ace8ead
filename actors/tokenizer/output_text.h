/*  output_text — the text side of one generation: token ids in, OpenAI output out.

    Each generated token goes through, in order:
        detok         ids to text, never half a UTF-8 character;
        stop_strings  the request's `stop` strings, held back while they may be starting,
                      ending the generation when one is complete;
        tool_parser   when the request may call tools: content and tool-call deltas.
    What comes out is taken with output_text_take after each batch of tokens and sent
    to the frontend as one OUTPUT.

    Who owns what: borrows the vocab (which must outlive it); owns its detok, stop
    matcher and tool parser. One per request.
*/
#ifndef ZLLM_OUTPUT_TEXT_H
#define ZLLM_OUTPUT_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "tool_parser.h"
#include "vocab.h"

typedef struct _output_text_t output_text_t;

//  stops: the request's stop strings (may be none). tools: parse tool calls in format.
output_text_t *
    output_text_new (const vocab_t *vocab, const char *const *stops, size_t n_stops,
                     bool tools, tool_parser_format_t format, uint64_t id_seed);

void
    output_text_destroy (output_text_t **self_p);

//  Add one generated token (a token that ended the generation as a stop token is not
//  added: it has no text). After a stop string, tokens are ignored.
void
    output_text_add (output_text_t *self, uint32_t token);

//  The generation has ended: release everything held back.
void
    output_text_finish (output_text_t *self);

//  True once a stop string has ended the text.
bool
    output_text_stopped (const output_text_t *self);

//  How many tool calls were given out so far.
size_t
    output_text_tool_call_count (const output_text_t *self);

//  Take what is ready since the last take: *text gets a heap string (possibly empty),
//  *tool_calls a heap JSON array of tool-call deltas or NULL. Returns 0, -1 when out of
//  memory.
int
    output_text_take (output_text_t *self, char **text, char **tool_calls);

#endif
