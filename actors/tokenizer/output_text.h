/*  output_text — the text side of one generation: token ids in, OpenAI output out.

    Each generated token goes through, in order:
        detok         ids to text, never half a UTF-8 character;
        stop_strings  the request's `stop` strings, held back while they may be starting,
                      ending the generation when one is complete;
        tool_parser   when the request may call tools: content and tool-call deltas.
    What comes out is taken with output_text_take after each batch of tokens and sent
    to the frontend as one OUTPUT.

    Options (output_text_options_t) follow vLLM's: include_stop keeps the stop string
    that ends the text at its end (include_stop_str_in_output); keep_special writes
    special tokens as their text (skip_special_tokens false). Which tokens are added is
    the caller's choice: a stop token that ended the generation (EOS, stop_token_ids) is
    added only with include_stop_str_in_output.

    Who owns what: borrows the vocab (which must outlive it); owns its detok, stop
    matcher and tool parser. One per sequence.
*/
#ifndef ZLLM_OUTPUT_TEXT_H
#define ZLLM_OUTPUT_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "tool_parser.h"
#include "vocab.h"

typedef struct _output_text_t output_text_t;

//  How one sequence's text is made. All zero: no stop strings, special tokens left
//  out, no tool calls.
typedef struct {
    const char *const *stops;       //  the request's stop strings (copied), n_stops of them
    size_t n_stops;
    bool include_stop;              //  a stop string that ends the text stays in it
    bool keep_special;              //  special tokens are written as their text
    bool tools;                     //  parse tool calls, in format
    tool_parser_format_t format;
    uint64_t id_seed;               //  seeds the tool calls' ids
} output_text_options_t;

//  A new output for one sequence, as options say (which are copied; options may be
//  NULL for all zero). Returns NULL when out of memory.
output_text_t *
    output_text_new (const vocab_t *vocab, const output_text_options_t *options);

void
    output_text_destroy (output_text_t **self_p);

//  Add one generated token. After a stop string, tokens are ignored.
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
