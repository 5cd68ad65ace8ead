/*  vocab — a model's vocabulary and llama.cpp's SPM tokenizer. See vocab.h.

    Loading copies each token's text into one blob (every text NUL-terminated, so that
    vocab_token_text can hand it out), with its score, its type and the piece it stands for
    in output text, and builds an open-addressing hash table from text to id.

    Tokenizing follows llama.cpp (llama-vocab.cpp: tokenizer_st_partition, then
    llm_tokenizer_spm) step by step:

    1. Partition. User-defined tokens (type 4) are cut out of the text before anything else,
       as llama.cpp does even when special tokens are not parsed: longest token first, and
       for each token every occurrence, leftmost first. (In parse-special mode, control and
       unknown tokens would be cut out too; the code supports it, vocab.h does not offer it
       yet.) What is left are raw fragments.
    2. A raw fragment gets a leading space when add_space_prefix holds and the fragment is
       the first or follows a cut-out token; then every space becomes U+2581 ("▁").
    3. The fragment is split into UTF-8 characters. Each adjacent pair whose joined text
       is a token goes into a max-heap ordered by that token's score, the leftmost pair
       first on ties. Popping a pair merges it, if neither side changed since it was
       pushed, and pushes the new pairs the merged symbol forms with its neighbours.
       Where no token has a "▁" after another character (checked at load; true of the
       SentencePiece vocabularies seen), no merge can cross from a character into a
       following "▁", so the fragment is cut there into words, each merged on its own
       with a small heap: the same result, ten times faster on long text.
       One deliberate difference: a byte that does not start a well-formed character is a
       symbol of its own, where llama.cpp takes as many bytes as the lead byte announces
       without checking them. Both give byte tokens for such bytes; only the characters
       after a broken sequence can differ.
    4. Each final symbol whose text is a token is output. The others are single characters
       that no token covers: their bytes are output as <0xNN> tokens. (llama.cpp's
       resegment would first look the symbol up in its merge history, but a merged symbol's
       text is always a token, so only unmerged characters ever get there.)

    Work per call is O(n log n) in the text's length; all of a call's state is on its own
    session_t, so many threads may tokenize with one vocab_t.
*/
#include "vocab.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Token types as tokenizer.ggml.token_type numbers them.
typedef enum {
    TOKEN_TYPE_UNDEFINED = 0,
    TOKEN_TYPE_NORMAL = 1,
    TOKEN_TYPE_UNKNOWN = 2,
    TOKEN_TYPE_CONTROL = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED = 5,
    TOKEN_TYPE_BYTE = 6
} token_type_t;

//  "▁", U+2581, which SentencePiece writes for a space.
#define SPACE_MARK "\xe2\x96\x81"
#define SPACE_MARK_LEN 3

//  Texts longer than this are refused: symbol offsets are 32-bit, and each input byte
//  may grow to three (a space becomes "▁").
#define VOCAB_MAX_TEXT ((size_t) 256 << 20)

//  A token that the partition step cuts out of the text before the SPM pass.
typedef struct {
    uint32_t id;
    uint32_t len;                   //  bytes of its text
    bool rstrip;                    //  whitespace after it is dropped (llama.cpp's Phi-3 rule)
} special_t;

struct _vocab_t {
    uint32_t size;                  //  number of tokens
    char *text_blob;                //  every token's text, each followed by a NUL
    size_t *text_offset;            //  where token i's text starts in text_blob
    uint32_t *text_len;             //  its length in bytes (it may hold NULs)
    float *score;
    uint8_t *type;                  //  token_type_t
    char *piece_blob;               //  every token's output piece, back to back
    size_t *piece_offset;           //  size + 1 entries: piece i is [offset[i], offset[i+1])
    uint32_t *table;                //  hash slots: id + 1, or 0 when empty
    size_t table_mask;              //  slot count - 1 (a power of two)
    uint32_t byte_token [256];      //  the token each byte falls back to; UINT32_MAX if none
    special_t *specials;            //  unknown, control and user-defined tokens, longest first
    size_t special_count;
    uint32_t bos;
    uint32_t eos;
    uint32_t unk;
    bool add_bos;
    bool add_space_prefix;
    bool words_split_at_space;      //  no token has a "▁" after another character
};

//  --- Errors ----------------------------------------------------------------------------

static void
s_set_error (char *err, size_t err_size, const char *format, ...)
{
    if (!err || err_size == 0)
        return;
    va_list args;
    va_start (args, format);
    vsnprintf (err, err_size, format, args);
    va_end (args);
}

//  --- UTF-8 -----------------------------------------------------------------------------

//  Length of the well-formed UTF-8 character at text[0..avail-1], or 1 when the bytes
//  there do not form one (a stray continuation byte, an overlong form, a surrogate, a
//  truncated sequence): such a byte becomes a symbol of its own.
static size_t
s_utf8_char_len (const unsigned char *text, size_t avail)
{
    unsigned char lead = text [0];
    size_t need;
    unsigned char second_low = 0x80;
    unsigned char second_high = 0xBF;

    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF)
        need = 2;
    else
    if (lead == 0xE0) {
        need = 3;
        second_low = 0xA0;
    }
    else
    if (lead == 0xED) {
        need = 3;
        second_high = 0x9F;
    }
    else
    if (lead >= 0xE1 && lead <= 0xEF)
        need = 3;
    else
    if (lead == 0xF0) {
        need = 4;
        second_low = 0x90;
    }
    else
    if (lead == 0xF4) {
        need = 4;
        second_high = 0x8F;
    }
    else
    if (lead >= 0xF1 && lead <= 0xF3)
        need = 4;
    else
        return 1;

    if (avail < need)
        return 1;
    if (text [1] < second_low || text [1] > second_high)
        return 1;
    for (size_t i = 2; i < need; i++)
        if (text [i] < 0x80 || text [i] > 0xBF)
            return 1;
    return need;
}

//  --- Hash table: token text to id ------------------------------------------------------

//  FNV-1a, 64-bit.
static uint64_t
s_hash (const char *text, size_t len)
{
    uint64_t hash = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) {
        hash ^= (unsigned char) text [i];
        hash *= 1099511628211ULL;
    }
    return hash;
}

static bool
s_text_equals (const vocab_t *self, uint32_t id, const char *text, size_t len)
{
    return self->text_len [id] == len
        && memcmp (self->text_blob + self->text_offset [id], text, len) == 0;
}

//  The id of the token whose text is text[0..len-1], or UINT32_MAX.
static uint32_t
s_lookup (const vocab_t *self, const char *text, size_t len)
{
    size_t slot = (size_t) s_hash (text, len) & self->table_mask;
    while (self->table [slot]) {
        uint32_t id = self->table [slot] - 1;
        if (s_text_equals (self, id, text, len))
            return id;
        slot = (slot + 1) & self->table_mask;
    }
    return UINT32_MAX;
}

//  Adds token id. When another token has the same text, the later id wins, as in
//  llama.cpp's token_to_id map.
static void
s_table_insert (vocab_t *self, uint32_t id)
{
    const char *text = self->text_blob + self->text_offset [id];
    size_t len = self->text_len [id];
    size_t slot = (size_t) s_hash (text, len) & self->table_mask;
    while (self->table [slot]) {
        if (s_text_equals (self, self->table [slot] - 1, text, len))
            break;
        slot = (slot + 1) & self->table_mask;
    }
    self->table [slot] = id + 1;
}

//  --- Loading ---------------------------------------------------------------------------

//  A special-token id from the GGUF, or UINT32_MAX when it is missing or out of range.
static uint32_t
s_special_id (const gguf_t *gguf, const char *key, uint32_t size)
{
    uint32_t id;
    if (gguf_get_u32 (gguf, key, &id) || id >= size)
        return UINT32_MAX;
    return id;
}

static bool
s_get_bool_or (const gguf_t *gguf, const char *key, bool fallback)
{
    bool value;
    return gguf_get_bool (gguf, key, &value)? fallback: value;
}

//  The byte a <0xNN> token stands for; -1 when its text has another form.
static int
s_byte_of_token_text (const char *text, size_t len)
{
    if (len != 6 || memcmp (text, "<0x", 3) != 0 || text [5] != '>')
        return -1;
    int value = 0;
    for (int i = 3; i < 5; i++) {
        char c = text [i];
        int digit;
        if (c >= '0' && c <= '9')
            digit = c - '0';
        else
        if (c >= 'A' && c <= 'F')
            digit = c - 'A' + 10;
        else
        if (c >= 'a' && c <= 'f')
            digit = c - 'a' + 10;
        else
            return -1;
        value = value * 16 + digit;
    }
    return value;
}

//  Writes token id's output piece at out (which has room for its text) and returns its
//  length. Follows llama.cpp's token_to_piece for SPM without special tokens: normal
//  tokens with "▁" as a space, byte tokens as their byte, user-defined tokens as their
//  text; control, unknown, unused and undefined tokens give nothing.
static size_t
s_make_piece (const vocab_t *self, uint32_t id, char *out)
{
    const char *text = self->text_blob + self->text_offset [id];
    size_t len = self->text_len [id];
    switch (self->type [id]) {
        case TOKEN_TYPE_NORMAL: {
            size_t written = 0;
            size_t i = 0;
            while (i < len) {
                if (len - i >= SPACE_MARK_LEN && memcmp (text + i, SPACE_MARK, SPACE_MARK_LEN) == 0) {
                    out [written++] = ' ';
                    i += SPACE_MARK_LEN;
                }
                else
                    out [written++] = text [i++];
            }
            return written;
        }
        case TOKEN_TYPE_USER_DEFINED:
            memcpy (out, text, len);
            return len;
        case TOKEN_TYPE_BYTE: {
            int byte = s_byte_of_token_text (text, len);
            if (byte < 0)
                return 0;
            out [0] = (char) byte;
            return 1;
        }
        default:
            return 0;
    }
}

//  Orders specials longest text first, then by id (llama.cpp leaves ties unordered).
static int
s_compare_specials (const void *a, const void *b)
{
    const special_t *left = (const special_t *) a;
    const special_t *right = (const special_t *) b;
    if (left->len != right->len)
        return left->len > right->len? -1: 1;
    return left->id < right->id? -1: left->id > right->id;
}

//  True when the model's general.name, lowercased, contains "phi-3" or "phi3".
static bool
s_named_phi3 (const gguf_t *gguf)
{
    gguf_str_t name;
    if (gguf_get_str (gguf, "general.name", &name))
        return false;
    char lower [256];
    size_t len = name.len < sizeof lower - 1? (size_t) name.len: sizeof lower - 1;
    for (size_t i = 0; i < len; i++) {
        char c = name.ptr [i];
        lower [i] = (c >= 'A' && c <= 'Z')? (char) (c - 'A' + 'a'): c;
    }
    lower [len] = 0;
    return strstr (lower, "phi-3") || strstr (lower, "phi3");
}

//  True when text has a "▁" right after a character other than "▁".
static bool
s_has_inner_space_mark (const char *text, size_t len)
{
    const char *found = memmem (text, len, SPACE_MARK, SPACE_MARK_LEN);
    while (found) {
        size_t at = (size_t) (found - text);
        if (at > 0 && (at < SPACE_MARK_LEN
                       || memcmp (text + at - SPACE_MARK_LEN, SPACE_MARK, SPACE_MARK_LEN) != 0))
            return true;
        found = memmem (text + at + 1, len - at - 1, SPACE_MARK, SPACE_MARK_LEN);
    }
    return false;
}

//  Unknown, control and user-defined tokens: the ones written in text that the
//  partition step may cut out (llama.cpp's cache_special_tokens).
static bool
s_is_special_type (uint8_t type)
{
    return type == TOKEN_TYPE_UNKNOWN || type == TOKEN_TYPE_CONTROL
        || type == TOKEN_TYPE_USER_DEFINED;
}

//  Builds the list of tokens that the partition step cuts out. llama.cpp gives Phi-3
//  models (by name) right-strip on all of them except <unk>, <s> and <|endoftext|>.
static int
s_build_specials (vocab_t *self, const gguf_t *gguf)
{
    bool phi3 = s_named_phi3 (gguf);
    size_t count = 0;
    for (uint32_t id = 0; id < self->size; id++) {
        if (s_is_special_type (self->type [id]) && self->text_len [id] > 0)
            count++;
    }
    if (count == 0)
        return 0;
    self->specials = (special_t *) calloc (count, sizeof (special_t));
    if (!self->specials)
        return -1;
    for (uint32_t id = 0; id < self->size; id++) {
        if (s_is_special_type (self->type [id]) && self->text_len [id] > 0) {
            special_t *special = &self->specials [self->special_count++];
            special->id = id;
            special->len = self->text_len [id];
            const char *text = self->text_blob + self->text_offset [id];
            size_t len = self->text_len [id];
            special->rstrip = phi3
                && !(len == 5 && memcmp (text, "<unk>", 5) == 0)
                && !(len == 3 && memcmp (text, "<s>", 3) == 0)
                && !(len == 13 && memcmp (text, "<|endoftext|>", 13) == 0);
        }
    }
    qsort (self->specials, self->special_count, sizeof (special_t), s_compare_specials);
    return 0;
}

vocab_t *
vocab_new (const gguf_t *gguf, char *err, size_t err_size)
{
    if (!gguf) {
        s_set_error (err, err_size, "no GGUF file given");
        return NULL;
    }
    gguf_str_t model;
    if (gguf_get_str (gguf, "tokenizer.ggml.model", &model)) {
        s_set_error (err, err_size, "the GGUF has no tokenizer (tokenizer.ggml.model is missing)");
        return NULL;
    }
    if (model.len != 5 || memcmp (model.ptr, "llama", 5) != 0) {
        int shown = model.len > 64? 64: (int) model.len;
        s_set_error (err, err_size,
                     "tokenizer model \"%.*s\" is not supported: only \"llama\" (SentencePiece) is",
                     shown, model.ptr);
        return NULL;
    }
    gguf_type_t elem_type;
    uint64_t count;
    if (gguf_get_array (gguf, "tokenizer.ggml.tokens", &elem_type, &count, NULL)
    ||  elem_type != GGUF_TYPE_STRING) {
        s_set_error (err, err_size, "tokenizer.ggml.tokens is missing or not an array of strings");
        return NULL;
    }
    if (count == 0 || count >= UINT32_MAX / 2) {
        s_set_error (err, err_size, "tokenizer.ggml.tokens has %llu tokens",
                     (unsigned long long) count);
        return NULL;
    }

    vocab_t *self = (vocab_t *) calloc (1, sizeof (vocab_t));
    if (!self) {
        s_set_error (err, err_size, "out of memory");
        return NULL;
    }
    self->size = (uint32_t) count;
    uint32_t size = self->size;

    //  Texts: one blob, each text NUL-terminated.
    size_t blob_bytes = 0;
    for (uint32_t id = 0; id < size; id++) {
        gguf_str_t text;
        gguf_array_str (gguf, "tokenizer.ggml.tokens", id, &text);
        if (text.len > UINT32_MAX / 4) {
            s_set_error (err, err_size, "token %u is %llu bytes long", id,
                         (unsigned long long) text.len);
            goto fail;
        }
        blob_bytes += (size_t) text.len + 1;
    }
    self->text_blob = (char *) malloc (blob_bytes);
    self->text_offset = (size_t *) calloc (size, sizeof (size_t));
    self->text_len = (uint32_t *) calloc (size, sizeof (uint32_t));
    self->score = (float *) calloc (size, sizeof (float));
    self->type = (uint8_t *) calloc (size, 1);
    self->piece_blob = (char *) malloc (blob_bytes);
    self->piece_offset = (size_t *) calloc ((size_t) size + 1, sizeof (size_t));
    if (!self->text_blob || !self->text_offset || !self->text_len || !self->score
    ||  !self->type || !self->piece_blob || !self->piece_offset) {
        s_set_error (err, err_size, "out of memory");
        goto fail;
    }
    size_t offset = 0;
    for (uint32_t id = 0; id < size; id++) {
        gguf_str_t text;
        gguf_array_str (gguf, "tokenizer.ggml.tokens", id, &text);
        self->text_offset [id] = offset;
        self->text_len [id] = (uint32_t) text.len;
        if (text.len)
            memcpy (self->text_blob + offset, text.ptr, (size_t) text.len);
        self->text_blob [offset + text.len] = 0;
        offset += (size_t) text.len + 1;
    }

    //  Scores (0 when absent) and types (normal when absent).
    if (gguf_find_key (gguf, "tokenizer.ggml.scores") >= 0
    &&  gguf_array_f32 (gguf, "tokenizer.ggml.scores", self->score, size)) {
        s_set_error (err, err_size, "tokenizer.ggml.scores is not an array of %u numbers", size);
        goto fail;
    }
    if (gguf_find_key (gguf, "tokenizer.ggml.token_type") >= 0) {
        int32_t *types = (int32_t *) calloc (size, sizeof (int32_t));
        if (!types) {
            s_set_error (err, err_size, "out of memory");
            goto fail;
        }
        if (gguf_array_i32 (gguf, "tokenizer.ggml.token_type", types, size)) {
            free (types);
            s_set_error (err, err_size, "tokenizer.ggml.token_type is not an array of %u integers", size);
            goto fail;
        }
        for (uint32_t id = 0; id < size; id++)
            self->type [id] = (types [id] >= 0 && types [id] <= TOKEN_TYPE_BYTE)?
                              (uint8_t) types [id]: TOKEN_TYPE_UNDEFINED;
        free (types);
    }
    else
        memset (self->type, TOKEN_TYPE_NORMAL, size);

    //  Hash table, at most half full.
    size_t slots = 1;
    while (slots < (size_t) size * 2)
        slots <<= 1;
    self->table = (uint32_t *) calloc (slots, sizeof (uint32_t));
    if (!self->table) {
        s_set_error (err, err_size, "out of memory");
        goto fail;
    }
    self->table_mask = slots - 1;
    for (uint32_t id = 0; id < size; id++)
        s_table_insert (self, id);

    //  Output pieces: never longer than the text.
    offset = 0;
    for (uint32_t id = 0; id < size; id++) {
        self->piece_offset [id] = offset;
        offset += s_make_piece (self, id, self->piece_blob + offset);
    }
    self->piece_offset [size] = offset;

    //  Byte fallback: <0xNN>, else the byte as a one-character token.
    for (int byte = 0; byte < 256; byte++) {
        char name [8];
        snprintf (name, sizeof name, "<0x%02X>", byte);
        uint32_t id = s_lookup (self, name, 6);
        if (id == UINT32_MAX) {
            char one = (char) byte;
            id = s_lookup (self, &one, 1);
        }
        self->byte_token [byte] = id;
    }

    self->words_split_at_space = true;
    for (uint32_t id = 0; id < size && self->words_split_at_space; id++)
        self->words_split_at_space = !s_has_inner_space_mark (
            self->text_blob + self->text_offset [id], self->text_len [id]);

    self->bos = s_special_id (gguf, "tokenizer.ggml.bos_token_id", size);
    self->eos = s_special_id (gguf, "tokenizer.ggml.eos_token_id", size);
    self->unk = s_special_id (gguf, "tokenizer.ggml.unknown_token_id", size);
    self->add_bos = s_get_bool_or (gguf, "tokenizer.ggml.add_bos_token", true);
    self->add_space_prefix = s_get_bool_or (gguf, "tokenizer.ggml.add_space_prefix", true);

    if (s_build_specials (self, gguf)) {
        s_set_error (err, err_size, "out of memory");
        goto fail;
    }
    return self;

fail:
    vocab_destroy (&self);
    return NULL;
}

void
vocab_destroy (vocab_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    vocab_t *self = *self_p;
    free (self->text_blob);
    free (self->text_offset);
    free (self->text_len);
    free (self->score);
    free (self->type);
    free (self->piece_blob);
    free (self->piece_offset);
    free (self->table);
    free (self->specials);
    free (self);
    *self_p = NULL;
}

uint32_t
vocab_size (const vocab_t *self)
{
    return self->size;
}

uint32_t
vocab_bos (const vocab_t *self)
{
    return self->bos;
}

uint32_t
vocab_eos (const vocab_t *self)
{
    return self->eos;
}

bool
vocab_add_bos (const vocab_t *self)
{
    return self->add_bos;
}

int
vocab_piece (const vocab_t *self, uint32_t id, char *buf, size_t cap)
{
    if (id >= self->size)
        return -1;
    size_t start = self->piece_offset [id];
    size_t len = self->piece_offset [id + 1] - start;
    size_t copied = len < cap? len: cap;
    if (copied)
        memcpy (buf, self->piece_blob + start, copied);
    return (int) len;
}

const char *
vocab_token_text (const vocab_t *self, uint32_t id)
{
    if (id >= self->size)
        return NULL;
    return self->text_blob + self->text_offset [id];
}

//  --- Tokenizing ------------------------------------------------------------------------

//  A piece of the text: raw text still to tokenize, or a token cut out of it.
typedef struct {
    size_t offset;
    size_t length;
    uint32_t id;                    //  UINT32_MAX for raw text
} fragment_t;

typedef struct {
    fragment_t *items;
    size_t count;
    size_t cap;
} fragment_list_t;

//  A symbol of the SPM pass: a span of the escaped fragment.
typedef struct {
    uint32_t start;                 //  offset in session text
    uint32_t n;                     //  bytes; 0 once merged into its left neighbour
    int32_t prev;                   //  neighbours in the chain, -1 at either end
    int32_t next;
} symbol_t;

//  A candidate merge of two adjacent symbols.
typedef struct {
    float score;                    //  of the token that the merge forms
    int32_t left;
    int32_t right;
    uint32_t size;                  //  bytes of the merged text when it was pushed
} bigram_t;

typedef struct {
    const vocab_t *vocab;
    char *text;                     //  the escaped fragment
    size_t text_cap;
    symbol_t *symbols;
    size_t symbol_cap;
    bigram_t *heap;
    size_t heap_count;
    size_t heap_cap;
    uint32_t *ids;                  //  caller's output
    size_t max_ids;
    int64_t count;                  //  tokens so far, written or not
    char *err;
    size_t err_size;
} session_t;

static void
s_emit (session_t *session, uint32_t id)
{
    if ((uint64_t) session->count < session->max_ids)
        session->ids [session->count] = id;
    session->count++;
}

//  Grows *items to hold at least want elements of elem_size bytes.
static int
s_reserve (void **items, size_t *cap, size_t want, size_t elem_size)
{
    if (want <= *cap)
        return 0;
    size_t new_cap = *cap? *cap: 16;
    while (new_cap < want)
        new_cap *= 2;
    void *grown = realloc (*items, new_cap * elem_size);
    if (!grown)
        return -1;
    *items = grown;
    *cap = new_cap;
    return 0;
}

//  True when bigram a comes out of the heap before bigram b: higher score first, then
//  the leftmost.
static bool
s_bigram_before (const bigram_t *a, const bigram_t *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    return a->left < b->left;
}

static int
s_heap_push (session_t *session, bigram_t bigram)
{
    if (s_reserve ((void **) &session->heap, &session->heap_cap,
                   session->heap_count + 1, sizeof (bigram_t)))
        return -1;
    size_t child = session->heap_count++;
    while (child > 0) {
        size_t parent = (child - 1) / 2;
        if (!s_bigram_before (&bigram, &session->heap [parent]))
            break;
        session->heap [child] = session->heap [parent];
        child = parent;
    }
    session->heap [child] = bigram;
    return 0;
}

static bigram_t
s_heap_pop (session_t *session)
{
    bigram_t top = session->heap [0];
    bigram_t last = session->heap [--session->heap_count];
    size_t count = session->heap_count;
    size_t parent = 0;
    while (true) {
        size_t child = parent * 2 + 1;
        if (child >= count)
            break;
        if (child + 1 < count && s_bigram_before (&session->heap [child + 1], &session->heap [child]))
            child++;
        if (!s_bigram_before (&session->heap [child], &last))
            break;
        session->heap [parent] = session->heap [child];
        parent = child;
    }
    if (count > 0)
        session->heap [parent] = last;
    return top;
}

//  Pushes the merge of symbols left and right when their joined text is a token.
static int
s_try_add_bigram (session_t *session, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return 0;
    const symbol_t *left_symbol = &session->symbols [left];
    uint32_t size = left_symbol->n + session->symbols [right].n;
    uint32_t id = s_lookup (session->vocab, session->text + left_symbol->start, size);
    if (id == UINT32_MAX)
        return 0;
    bigram_t bigram = { session->vocab->score [id], left, right, size };
    return s_heap_push (session, bigram);
}

//  Outputs one final symbol: its token, or its bytes as byte tokens.
static int
s_output_symbol (session_t *session, const symbol_t *symbol)
{
    const vocab_t *vocab = session->vocab;
    const char *text = session->text + symbol->start;
    uint32_t id = s_lookup (vocab, text, symbol->n);
    if (id != UINT32_MAX) {
        s_emit (session, id);
        return 0;
    }
    for (uint32_t i = 0; i < symbol->n; i++) {
        unsigned char byte = (unsigned char) text [i];
        id = vocab->byte_token [byte];
        if (id == UINT32_MAX)
            id = vocab->unk;
        if (id == UINT32_MAX) {
            s_set_error (session->err, session->err_size,
                         "the vocabulary has no token for byte 0x%02X and no unknown token", byte);
            return -1;
        }
        s_emit (session, id);
    }
    return 0;
}

//  The SPM pass over session text[start..end-1]: split into characters, merge, output.
static int
s_tokenize_segment (session_t *session, size_t start, size_t end)
{
    //  Symbols: one per character.
    if (s_reserve ((void **) &session->symbols, &session->symbol_cap, end - start,
                   sizeof (symbol_t)))
        goto out_of_memory;
    const unsigned char *bytes = (const unsigned char *) session->text;
    int32_t symbol_count = 0;
    size_t offset = start;
    while (offset < end) {
        size_t char_len = s_utf8_char_len (bytes + offset, end - offset);
        symbol_t *symbol = &session->symbols [symbol_count];
        symbol->start = (uint32_t) offset;
        symbol->n = (uint32_t) char_len;
        symbol->prev = symbol_count - 1;
        offset += char_len;
        symbol->next = offset == end? -1: symbol_count + 1;
        symbol_count++;
    }
    if (symbol_count == 0)
        return 0;

    //  Merge the best pair while any pair forms a token.
    session->heap_count = 0;
    for (int32_t i = 1; i < symbol_count; i++)
        if (s_try_add_bigram (session, i - 1, i))
            goto out_of_memory;
    while (session->heap_count > 0) {
        bigram_t bigram = s_heap_pop (session);
        symbol_t *left = &session->symbols [bigram.left];
        symbol_t *right = &session->symbols [bigram.right];
        if (left->n == 0 || right->n == 0 || left->n + right->n != bigram.size)
            continue;               //  one side has changed since the pair was pushed
        left->n += right->n;
        right->n = 0;
        left->next = right->next;
        if (right->next >= 0)
            session->symbols [right->next].prev = bigram.left;
        if (s_try_add_bigram (session, left->prev, bigram.left)
        ||  s_try_add_bigram (session, bigram.left, left->next))
            goto out_of_memory;
    }

    for (int32_t i = 0; i != -1; i = session->symbols [i].next)
        if (s_output_symbol (session, &session->symbols [i]))
            return -1;
    return 0;

out_of_memory:
    s_set_error (session->err, session->err_size, "out of memory");
    return -1;
}

static bool
s_space_mark_at (const char *text, size_t pos, size_t len)
{
    return len - pos >= SPACE_MARK_LEN && memcmp (text + pos, SPACE_MARK, SPACE_MARK_LEN) == 0;
}

//  The SPM pass over one raw fragment. When no token has a "▁" after another character
//  (true of SentencePiece vocabularies, checked at load), no merge can join a character
//  to a "▁" that follows it, so the text splits there into words that merge on their
//  own: the same result as one pass over the whole fragment, with small heaps.
static int
s_tokenize_fragment (session_t *session, const char *raw, size_t raw_len, bool space_prefix)
{
    //  Escape: optional leading space, every space as "▁".
    size_t escaped_max = raw_len * SPACE_MARK_LEN + SPACE_MARK_LEN;
    if (s_reserve ((void **) &session->text, &session->text_cap, escaped_max, 1)) {
        s_set_error (session->err, session->err_size, "out of memory");
        return -1;
    }
    char *text = session->text;
    size_t len = 0;
    if (space_prefix) {
        memcpy (text, SPACE_MARK, SPACE_MARK_LEN);
        len = SPACE_MARK_LEN;
    }
    for (size_t i = 0; i < raw_len; i++) {
        if (raw [i] == ' ') {
            memcpy (text + len, SPACE_MARK, SPACE_MARK_LEN);
            len += SPACE_MARK_LEN;
        }
        else
            text [len++] = raw [i];
    }
    if (!session->vocab->words_split_at_space)
        return s_tokenize_segment (session, 0, len);

    size_t start = 0;
    size_t pos = 0;
    while (pos < len) {
        //  Skip the "▁"s that start a word, then find the next "▁".
        while (s_space_mark_at (text, pos, len))
            pos += SPACE_MARK_LEN;
        while (pos < len && !s_space_mark_at (text, pos, len))
            pos++;
        if (s_tokenize_segment (session, start, pos))
            return -1;
        start = pos;
    }
    return 0;
}

static int
s_fragment_append (fragment_list_t *list, size_t offset, size_t length, uint32_t id)
{
    if (s_reserve ((void **) &list->items, &list->cap, list->count + 1, sizeof (fragment_t)))
        return -1;
    fragment_t *fragment = &list->items [list->count++];
    fragment->offset = offset;
    fragment->length = length;
    fragment->id = id;
    return 0;
}

static bool
s_is_space (char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

//  Cuts every occurrence of special token `special` out of the raw fragments in *list,
//  as llama.cpp's tokenizer_st_partition does. *spare is a scratch list; the two are
//  swapped when anything was cut.
static int
s_cut_special (const vocab_t *vocab, const special_t *special, const char *text,
               fragment_list_t *list, fragment_list_t *spare)
{
    const char *token = vocab->text_blob + vocab->text_offset [special->id];
    size_t token_len = vocab->text_len [special->id];

    //  Most tokens occur nowhere: check before rebuilding the list.
    bool found = false;
    for (size_t i = 0; i < list->count && !found; i++) {
        const fragment_t *fragment = &list->items [i];
        if (fragment->id == UINT32_MAX
        &&  memmem (text + fragment->offset, fragment->length, token, token_len))
            found = true;
    }
    if (!found)
        return 0;

    spare->count = 0;
    for (size_t i = 0; i < list->count; i++) {
        fragment_t fragment = list->items [i];
        if (fragment.id != UINT32_MAX) {
            if (s_fragment_append (spare, fragment.offset, fragment.length, fragment.id))
                return -1;
            continue;
        }
        size_t start = fragment.offset;
        size_t end = fragment.offset + fragment.length;
        while (start < end) {
            const char *match = (const char *) memmem (text + start, end - start, token, token_len);
            if (!match) {
                if (s_fragment_append (spare, start, end - start, UINT32_MAX))
                    return -1;
                break;
            }
            size_t match_at = (size_t) (match - text);
            if (match_at > start
            &&  s_fragment_append (spare, start, match_at - start, UINT32_MAX))
                return -1;
            if (s_fragment_append (spare, match_at, token_len, special->id))
                return -1;
            start = match_at + token_len;
            if (special->rstrip)
                while (start < end && s_is_space (text [start]))
                    start++;
        }
    }
    fragment_list_t swap = *list;
    *list = *spare;
    *spare = swap;
    return 0;
}

//  Tokenizes text; parse_special also cuts out control and unknown tokens written in it.
static int64_t
s_tokenize (const vocab_t *self, const char *text, size_t len, bool add_bos,
            bool parse_special, uint32_t *ids, size_t max_ids, char *err, size_t err_size)
{
    if (!self || (!text && len > 0) || (!ids && max_ids > 0)) {
        s_set_error (err, err_size, "vocab_tokenize: missing argument");
        return -1;
    }
    if (len > VOCAB_MAX_TEXT) {
        s_set_error (err, err_size, "text of %zu bytes is too long to tokenize (limit %zu)",
                     len, VOCAB_MAX_TEXT);
        return -1;
    }
    session_t session;
    memset (&session, 0, sizeof session);
    session.vocab = self;
    session.ids = ids;
    session.max_ids = max_ids;
    session.err = err;
    session.err_size = err_size;

    fragment_list_t list = { NULL, 0, 0 };
    fragment_list_t spare = { NULL, 0, 0 };
    int64_t result = -1;

    if (add_bos) {
        if (self->bos == UINT32_MAX) {
            s_set_error (err, err_size, "BOS was asked for but the vocabulary names no BOS token");
            goto done;
        }
        s_emit (&session, self->bos);
    }
    if (len > 0 && s_fragment_append (&list, 0, len, UINT32_MAX))
        goto out_of_memory;
    for (size_t i = 0; i < self->special_count; i++) {
        const special_t *special = &self->specials [i];
        if (!parse_special && self->type [special->id] != TOKEN_TYPE_USER_DEFINED)
            continue;
        if (s_cut_special (self, special, text, &list, &spare))
            goto out_of_memory;
    }
    bool after_special = true;      //  the text's start counts as following one
    for (size_t i = 0; i < list.count; i++) {
        const fragment_t *fragment = &list.items [i];
        if (fragment->id != UINT32_MAX) {
            s_emit (&session, fragment->id);
            after_special = true;
        }
        else {
            if (s_tokenize_fragment (&session, text + fragment->offset, fragment->length,
                                     self->add_space_prefix && after_special))
                goto done;
            after_special = false;
        }
    }
    result = session.count;
    goto done;

out_of_memory:
    s_set_error (err, err_size, "out of memory");
done:
    free (list.items);
    free (spare.items);
    free (session.text);
    free (session.symbols);
    free (session.heap);
    return result;
}

int64_t
vocab_tokenize (const vocab_t *self, const char *text, size_t len, bool add_bos,
                uint32_t *ids, size_t max_ids, char *err, size_t err_size)
{
    return s_tokenize (self, text, len, add_bos, false, ids, max_ids, err, err_size);
}

int64_t
vocab_tokenize_special (const vocab_t *self, const char *text, size_t len, bool add_bos,
                        uint32_t *ids, size_t max_ids, char *err, size_t err_size)
{
    return s_tokenize (self, text, len, add_bos, true, ids, max_ids, err, err_size);
}
