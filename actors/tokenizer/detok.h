/*  detok — incremental detokenization: token ids in, complete UTF-8 text out.

    A character may be split over several byte-fallback tokens (an emoji is four <0xNN>
    tokens). detok holds back the bytes of a character until it is complete, so every
    piece of text it gives out is valid UTF-8 and can go into a JSON string at once.
    At the end, detok_flush gives what is left; bytes that never formed a valid character
    come out as U+FFFD, as Hugging Face's decode does.

    Special tokens (control tokens such as <s>, </s>, <|im_end|>) give no text, unless
    detok_set_keep_special asked for them (a request with skip_special_tokens false):
    then they give their text as the vocabulary stores it (vocab_piece_keep_special).

    Who owns what: a detok_t borrows its vocab_t (which must outlive it) and owns a small
    buffer of pending bytes. One per sequence.
*/
#ifndef ZLLM_DETOK_H
#define ZLLM_DETOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "vocab.h"

typedef struct _detok_t detok_t;

detok_t *
    detok_new (const vocab_t *vocab);

void
    detok_destroy (detok_t **self_p);

//  Write special tokens added from now on as their text (keep_special true), or leave
//  them out (false, the default).
void
    detok_set_keep_special (detok_t *self, bool keep_special);

//  Add one token. Returns the text that is now complete: NUL-terminated, possibly empty,
//  owned by the detok_t and valid until its next call.
const char *
    detok_add (detok_t *self, uint32_t token);

//  End of the sequence: returns what was pending (incomplete characters as U+FFFD),
//  and empties the detok_t.
const char *
    detok_flush (detok_t *self);

#endif
