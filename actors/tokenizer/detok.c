/*  detok — incremental detokenization. See detok.h.

    Each token's piece (vocab_piece, or vocab_piece_keep_special when special tokens are
    kept) is appended to the bytes still pending from earlier
    tokens, and the result is decoded from the front:
    - a complete, well-formed UTF-8 character is copied out;
    - bytes that can never become a character are replaced by U+FFFD, one per maximal
      invalid subpart (the Unicode recommendation, which Python's
      decode(errors="replace") follows): a stray continuation byte, C0, C1, F5..FF, or a
      lead byte with the continuation bytes that were right so far;
    - a well-formed but incomplete sequence at the very end (at most three bytes) is kept
      pending for the next token, or replaced by one U+FFFD at detok_flush.
*/
#include "detok.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define REPLACEMENT_CHAR "\xef\xbf\xbd"
#define REPLACEMENT_CHAR_LEN 3

struct _detok_t {
    const vocab_t *vocab;
    bool keep_special;              //  special tokens give their text
    char pending [4];               //  an incomplete character's first bytes
    size_t pending_count;           //  at most 3
    char *work;                     //  pending bytes + the new piece
    size_t work_cap;
    char *out;                      //  text handed to the caller, NUL-terminated
    size_t out_cap;
};

//  What the bytes at the front of a buffer hold.
typedef enum {
    SEQUENCE_VALID,                 //  a whole character
    SEQUENCE_INVALID,               //  bytes that can never be a character
    SEQUENCE_INCOMPLETE             //  a character's start that runs into the end
} sequence_t;

//  Classifies the bytes at text[0..avail-1] (avail >= 1) and sets *length to the
//  character's length, the invalid subpart's length, or the incomplete bytes' count.
static sequence_t
s_classify (const unsigned char *text, size_t avail, size_t *length)
{
    unsigned char lead = text [0];
    size_t need;
    unsigned char second_low = 0x80;
    unsigned char second_high = 0xBF;

    if (lead < 0x80) {
        *length = 1;
        return SEQUENCE_VALID;
    }
    if (lead >= 0xC2 && lead <= 0xDF)
        need = 2;
    else
    if (lead == 0xE0) {
        need = 3;
        second_low = 0xA0;          //  no overlong forms
    }
    else
    if (lead == 0xED) {
        need = 3;
        second_high = 0x9F;         //  no surrogates
    }
    else
    if (lead >= 0xE1 && lead <= 0xEF)
        need = 3;
    else
    if (lead == 0xF0) {
        need = 4;
        second_low = 0x90;          //  no overlong forms
    }
    else
    if (lead == 0xF4) {
        need = 4;
        second_high = 0x8F;         //  nothing past U+10FFFF
    }
    else
    if (lead >= 0xF1 && lead <= 0xF3)
        need = 4;
    else {
        *length = 1;                //  continuation byte, C0, C1, F5..FF
        return SEQUENCE_INVALID;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= avail) {
            *length = i;
            return SEQUENCE_INCOMPLETE;
        }
        unsigned char low = i == 1? second_low: 0x80;
        unsigned char high = i == 1? second_high: 0xBF;
        if (text [i] < low || text [i] > high) {
            *length = i;
            return SEQUENCE_INVALID;
        }
    }
    *length = need;
    return SEQUENCE_VALID;
}

static int
s_reserve (char **buffer, size_t *cap, size_t want)
{
    if (want <= *cap)
        return 0;
    size_t new_cap = *cap? *cap: 64;
    while (new_cap < want)
        new_cap *= 2;
    char *grown = (char *) realloc (*buffer, new_cap);
    if (!grown)
        return -1;
    *buffer = grown;
    *cap = new_cap;
    return 0;
}

//  Decodes self->work[0..len-1] into self->out. An incomplete character at the end is
//  kept pending, or, when final, replaced by U+FFFD.
static const char *
s_decode (detok_t *self, size_t len, bool final)
{
    //  Each input byte gives at most three output bytes (a U+FFFD).
    if (s_reserve (&self->out, &self->out_cap, len * REPLACEMENT_CHAR_LEN + 1)) {
        self->pending_count = 0;
        return "";
    }
    const unsigned char *in = (const unsigned char *) self->work;
    size_t written = 0;
    size_t pos = 0;
    self->pending_count = 0;
    while (pos < len) {
        size_t length;
        sequence_t sequence = s_classify (in + pos, len - pos, &length);
        if (sequence == SEQUENCE_VALID) {
            memcpy (self->out + written, in + pos, length);
            written += length;
        }
        else
        if (sequence == SEQUENCE_INVALID || final) {
            memcpy (self->out + written, REPLACEMENT_CHAR, REPLACEMENT_CHAR_LEN);
            written += REPLACEMENT_CHAR_LEN;
        }
        else {
            memcpy (self->pending, in + pos, length);
            self->pending_count = length;
        }
        pos += length;
    }
    self->out [written] = 0;
    return self->out;
}

detok_t *
detok_new (const vocab_t *vocab)
{
    if (!vocab)
        return NULL;
    detok_t *self = (detok_t *) calloc (1, sizeof (detok_t));
    if (!self)
        return NULL;
    self->vocab = vocab;
    return self;
}

void
detok_destroy (detok_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    detok_t *self = *self_p;
    free (self->work);
    free (self->out);
    free (self);
    *self_p = NULL;
}

void
detok_set_keep_special (detok_t *self, bool keep_special)
{
    self->keep_special = keep_special;
}

//  Writes token's piece into buf (cap bytes) as this detok_t writes tokens; returns its
//  length, or -1 for an id out of range.
static int
s_piece (detok_t *self, uint32_t token, char *buf, size_t cap)
{
    if (self->keep_special)
        return vocab_piece_keep_special (self->vocab, token, buf, cap);
    return vocab_piece (self->vocab, token, buf, cap);
}

const char *
detok_add (detok_t *self, uint32_t token)
{
    int piece_len = s_piece (self, token, NULL, 0);
    if (piece_len < 0)
        piece_len = 0;              //  an id out of range adds nothing
    size_t len = self->pending_count + (size_t) piece_len;
    if (s_reserve (&self->work, &self->work_cap, len + 1))
        return "";
    memcpy (self->work, self->pending, self->pending_count);
    if (piece_len > 0)
        s_piece (self, token, self->work + self->pending_count, (size_t) piece_len);
    return s_decode (self, len, false);
}

const char *
detok_flush (detok_t *self)
{
    size_t len = self->pending_count;
    if (s_reserve (&self->work, &self->work_cap, len + 1))
        return "";
    memcpy (self->work, self->pending, len);
    return s_decode (self, len, true);
}
