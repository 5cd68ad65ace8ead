/*  output_text — the text side of one generation. See output_text.h.

    detok -> stop_strings -> tool_parser -> (pending text, pending tool-call deltas)
*/
#include "output_text.h"
#include "detok.h"
#include "stop_strings.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct _output_text_t {
    detok_t *detok;
    stop_strings_t *stops;          //  NULL when the request has none
    tool_parser_t *tools;           //  NULL when the request does not call tools
    bool stopped;
    bool finished;
    char *text;                     //  pending text since the last take
    size_t text_size;
    size_t text_capacity;
    json_t *tool_calls;             //  pending deltas since the last take
    bool out_of_memory;
};

output_text_t *
output_text_new (const vocab_t *vocab, const output_text_options_t *options)
{
    output_text_options_t defaults = { 0 };
    if (!options)
        options = &defaults;
    output_text_t *self = (output_text_t *) calloc (1, sizeof (output_text_t));
    if (!self)
        return NULL;
    self->detok = detok_new (vocab);
    if (self->detok)
        detok_set_keep_special (self->detok, options->keep_special);
    if (options->n_stops > 0)
        self->stops = stop_strings_new (options->stops, options->n_stops,
                                        options->include_stop);
    if (options->tools)
        self->tools = tool_parser_new (options->format, options->id_seed);
    self->tool_calls = json_array ();
    if (!self->detok || (options->n_stops > 0 && !self->stops)
    ||  (options->tools && !self->tools) || !self->tool_calls)
        output_text_destroy (&self);
    return self;
}

void
output_text_destroy (output_text_t **self_p)
{
    output_text_t *self = *self_p;
    if (!self)
        return;
    detok_destroy (&self->detok);
    stop_strings_destroy (&self->stops);
    tool_parser_destroy (&self->tools);
    free (self->text);
    json_decref (self->tool_calls);
    free (self);
    *self_p = NULL;
}

static void
s_append_text (output_text_t *self, const char *text)
{
    size_t length = text ? strlen (text) : 0;
    if (length == 0)
        return;
    if (self->text_size + length + 1 > self->text_capacity) {
        size_t capacity = (self->text_size + length + 1) * 2;
        char *grown = (char *) realloc (self->text, capacity);
        if (!grown) {
            self->out_of_memory = true;
            return;
        }
        self->text = grown;
        self->text_capacity = capacity;
    }
    memcpy (self->text + self->text_size, text, length);
    self->text_size += length;
    self->text [self->text_size] = 0;
}

//  Give out a tool parser's output: content as text, deltas appended to the pending ones.
static void
s_append_tool_output (output_text_t *self, tool_parser_output_t output)
{
    s_append_text (self, output.content);
    if (!output.tool_calls)
        return;
    json_t *deltas = json_loads (output.tool_calls, 0, NULL);
    if (json_is_array (deltas))
        json_array_extend (self->tool_calls, deltas);
    json_decref (deltas);
}

//  Text that has passed the stop strings goes on to the tool parser, or out.
static void
s_emit (output_text_t *self, const char *text)
{
    if (self->tools)
        s_append_tool_output (self, tool_parser_add (self->tools, text));
    else
        s_append_text (self, text);
}

void
output_text_add (output_text_t *self, uint32_t token)
{
    if (self->stopped || self->finished)
        return;
    const char *text = detok_add (self->detok, token);
    if (self->stops) {
        bool stopped = false;
        text = stop_strings_add (self->stops, text, &stopped);
        s_emit (self, text);
        if (stopped) {
            self->stopped = true;
            output_text_finish (self);
        }
    }
    else
        s_emit (self, text);
}

void
output_text_finish (output_text_t *self)
{
    if (self->finished)
        return;
    self->finished = true;
    if (!self->stopped) {
        const char *rest = detok_flush (self->detok);
        if (self->stops) {
            bool stopped = false;
            s_emit (self, stop_strings_add (self->stops, rest, &stopped));
            if (stopped)
                self->stopped = true;
            else
                s_emit (self, stop_strings_flush (self->stops));
        }
        else
            s_emit (self, rest);
    }
    if (self->tools)
        s_append_tool_output (self, tool_parser_finish (self->tools));
}

bool
output_text_stopped (const output_text_t *self)
{
    return self->stopped;
}

size_t
output_text_tool_call_count (const output_text_t *self)
{
    return self->tools ? tool_parser_call_count (self->tools) : 0;
}

int
output_text_take (output_text_t *self, char **text, char **tool_calls)
{
    bool has_calls = json_array_size (self->tool_calls) > 0;
    *text = strdup (self->text_size ? self->text : "");
    *tool_calls = has_calls ? json_dumps (self->tool_calls, JSON_COMPACT) : NULL;
    self->text_size = 0;
    json_array_clear (self->tool_calls);
    bool failed = self->out_of_memory || !*text || (has_calls && !*tool_calls);
    self->out_of_memory = false;
    return failed ? -1 : 0;
}
