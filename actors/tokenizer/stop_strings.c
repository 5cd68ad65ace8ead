/*  stop_strings — finds OpenAI `stop` strings in generated text as it streams.
    See stop_strings.h.

    The matcher keeps the text it has not given out yet ("held"). Each piece is appended
    to it, and the held text is scanned from its first byte:
    - a position where a stop string lies whole in the held text is a match;
    - a position where the held text, up to its end, is the start of a stop string is
      still open: more text may complete it.
    The first match wins when no open position comes before it: the text before it is
    given out (with the stop string when include_stop) and the rest is discarded. When
    an open position comes first, everything before it is given out and the rest is
    held: that is the shortest tail that may still turn out to be part of a stop string.

    Which stop string is the first: the one that starts earliest in the text; of two that
    start at the same place, the shorter (it is complete first). Without include_stop
    that choice does not change the output. So a stop string that is complete while a
    longer one that started before it is still open waits for that one; if the
    generation ends first, stop_strings_flush cuts the text at it. Because held text always begins where a stop
    string could begin, and stop strings are whole UTF-8 characters, what is given out
    ends on a character boundary whenever the pieces are whole characters.
*/
#include "stop_strings.h"

#include <stdlib.h>
#include <string.h>

struct _stop_strings_t {
    char **stops;                   //  our copies of the non-empty stop strings
    size_t *stop_lengths;
    size_t stop_count;
    bool include_stop;
    bool stopped;                   //  a stop string was found: nothing more comes out
    char *held;                     //  text that may still be the start of a stop string
    size_t held_size;
    size_t held_capacity;
    char *out;                      //  what the last call gave out, NUL-terminated
    size_t out_capacity;
};

stop_strings_t *
stop_strings_new (const char *const *stops, size_t n_stops, bool include_stop)
{
    stop_strings_t *self = (stop_strings_t *) calloc (1, sizeof (stop_strings_t));
    if (!self)
        return NULL;
    self->include_stop = include_stop;
    if (n_stops > 0) {
        self->stops = (char **) calloc (n_stops, sizeof (char *));
        self->stop_lengths = (size_t *) calloc (n_stops, sizeof (size_t));
        if (!self->stops || !self->stop_lengths) {
            stop_strings_destroy (&self);
            return NULL;
        }
    }
    for (size_t index = 0; index < n_stops; index++) {
        const char *stop = stops [index];
        if (!stop || stop [0] == 0)
            continue;               //  an empty stop string would match everywhere
        self->stops [self->stop_count] = strdup (stop);
        if (!self->stops [self->stop_count]) {
            stop_strings_destroy (&self);
            return NULL;
        }
        self->stop_lengths [self->stop_count] = strlen (stop);
        self->stop_count++;
    }
    self->out = (char *) calloc (1, 1);
    if (!self->out) {
        stop_strings_destroy (&self);
        return NULL;
    }
    self->out_capacity = 1;
    return self;
}

void
stop_strings_destroy (stop_strings_t **self_p)
{
    stop_strings_t *self = *self_p;
    if (!self)
        return;
    for (size_t index = 0; index < self->stop_count; index++)
        free (self->stops [index]);
    free (self->stops);
    free (self->stop_lengths);
    free (self->held);
    free (self->out);
    free (self);
    *self_p = NULL;
}

//  Sets the output to the given bytes. On allocation failure the output is empty.
static const char *
s_set_output (stop_strings_t *self, const char *text, size_t length)
{
    if (length + 1 > self->out_capacity) {
        char *grown = (char *) realloc (self->out, length + 1);
        if (!grown) {
            self->out [0] = 0;
            return self->out;
        }
        self->out = grown;
        self->out_capacity = length + 1;
    }
    if (length > 0)
        memcpy (self->out, text, length);
    self->out [length] = 0;
    return self->out;
}

static int
s_hold (stop_strings_t *self, const char *text, size_t length)
{
    if (length == 0)
        return 0;
    if (self->held_size + length > self->held_capacity) {
        size_t capacity = (self->held_size + length) * 2;
        char *grown = (char *) realloc (self->held, capacity);
        if (!grown)
            return -1;
        self->held = grown;
        self->held_capacity = capacity;
    }
    memcpy (self->held + self->held_size, text, length);
    self->held_size += length;
    return 0;
}

//  Scans the held text and gives out what may go. At the end of generation (at_end)
//  nothing is open any more: a stop string that lies whole in the held text still
//  cuts it, and the rest is given out.
static const char *
s_scan (stop_strings_t *self, bool at_end)
{
    size_t first_open = self->held_size;        //  none yet
    size_t match_at = self->held_size;          //  none yet
    size_t match_length = 0;
    for (size_t position = 0; position < self->held_size; position++) {
        size_t available = self->held_size - position;
        const char *here = self->held + position;
        bool open_here = false;
        for (size_t index = 0; index < self->stop_count; index++) {
            size_t stop_length = self->stop_lengths [index];
            if (available >= stop_length) {
                if (memcmp (here, self->stops [index], stop_length) == 0
                &&  (match_length == 0 || stop_length < match_length))
                    match_length = stop_length;
            }
            else
            if (!at_end && memcmp (here, self->stops [index], available) == 0)
                open_here = true;
        }
        if (match_length > 0) {
            match_at = position;
            break;                  //  nothing after a match matters
        }
        if (open_here && first_open == self->held_size)
            first_open = position;
    }

    if (match_length > 0 && first_open > match_at) {
        //  A stop string, with nothing open before it: the generation ends here.
        size_t give = match_at + (self->include_stop? match_length: 0);
        self->stopped = true;
        s_set_output (self, self->held, give);
        self->held_size = 0;
        return self->out;
    }
    //  Give out everything before the first open position, hold the rest.
    s_set_output (self, self->held, first_open);
    if (first_open > 0) {
        memmove (self->held, self->held + first_open, self->held_size - first_open);
        self->held_size -= first_open;
    }
    return self->out;
}

const char *
stop_strings_add (stop_strings_t *self, const char *text, bool *stopped)
{
    const char *out;
    size_t length = text? strlen (text): 0;
    if (self->stopped)
        out = s_set_output (self, "", 0);
    else
    if (self->stop_count == 0)
        out = s_set_output (self, text, length);
    else
    if (s_hold (self, text, length) != 0)
        out = s_set_output (self, "", 0);
    else
        out = s_scan (self, false);
    if (stopped)
        *stopped = self->stopped;
    return out;
}

const char *
stop_strings_flush (stop_strings_t *self)
{
    if (self->stopped)
        return s_set_output (self, "", 0);
    return s_scan (self, true);
}
