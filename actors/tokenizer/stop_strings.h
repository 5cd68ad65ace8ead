/*  stop_strings — finds OpenAI `stop` strings in generated text as it streams.

    Text arrives in pieces (one per token). Text that could still be the start of a stop
    string is held back; when a stop string is complete, the text before it is released
    and the rest of the generation is discarded (with include_stop, the stop string itself
    is released too, as vLLM's include_stop_str_in_output). At the end, held-back text is
    released. So the text given out is exactly the generated text cut at the first
    occurrence of any stop string, whatever the piece boundaries.

    Who owns what: the matcher copies the stop strings; returned text belongs to the
    matcher and is valid until its next call. One per sequence.
*/
#ifndef ZLLM_STOP_STRINGS_H
#define ZLLM_STOP_STRINGS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct _stop_strings_t stop_strings_t;

//  stops: n_stops non-empty strings (empty ones are ignored).
stop_strings_t *
    stop_strings_new (const char *const *stops, size_t n_stops, bool include_stop);

void
    stop_strings_destroy (stop_strings_t **self_p);

//  Add a piece of generated text. Returns the text that may be given out now
//  (NUL-terminated, possibly empty) and sets *stopped when a stop string was found;
//  after that, further calls return "".
const char *
    stop_strings_add (stop_strings_t *self, const char *text, bool *stopped);

//  End of generation: returns the text held back.
const char *
    stop_strings_flush (stop_strings_t *self);

#endif
