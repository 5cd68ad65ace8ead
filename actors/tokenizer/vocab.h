/*  vocab — a model's vocabulary from GGUF metadata, and the SentencePiece-style (SPM,
    tokenizer.ggml.model = "llama") tokenizer that llama.cpp applies to it.

    Tokenizing follows llama.cpp's SPM tokenizer: spaces become U+2581 ("▁"), a leading
    "▁" is added to the text (the add_space_prefix rule), then the pieces are merged by
    best score (bigram merges of adjacent symbols, highest vocabulary score first, leftmost
    on ties), and characters that no piece covers fall back to their UTF-8 bytes as
    <0xNN> tokens. BOS is prepended when asked.

    vocab_piece gives the bytes a token stands for in output text: "▁" becomes a space,
    <0xNN> becomes that one byte, control tokens (BOS, EOS, ...) give nothing.

    Who owns what: vocab_new copies what it needs out of the gguf_t, which may be closed
    afterwards. A vocab_t never changes after vocab_new: many threads may use one at once.
*/
#ifndef ZLLM_VOCAB_H
#define ZLLM_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

typedef struct _vocab_t vocab_t;

//  Load tokenizer.ggml.* from gguf. Only model "llama" (SPM) is supported here; another
//  model is refused with a message that names it.
vocab_t *
    vocab_new (const gguf_t *gguf, char *err, size_t err_size);

void
    vocab_destroy (vocab_t **self_p);

uint32_t
    vocab_size (const vocab_t *self);

//  Special token ids; UINT32_MAX when the GGUF does not name one.
uint32_t
    vocab_bos (const vocab_t *self);
uint32_t
    vocab_eos (const vocab_t *self);

//  tokenizer.ggml.add_bos_token (true when absent, as llama.cpp does for SPM).
bool
    vocab_add_bos (const vocab_t *self);

//  Tokenize text[0..len-1] (UTF-8; invalid bytes are kept as byte tokens). Writes up to
//  max_ids ids into ids and returns how many the text needs in all (so a caller may call
//  again with a larger buffer), or -1 with a message on error.
int64_t
    vocab_tokenize (const vocab_t *self, const char *text, size_t len, bool add_bos,
                    uint32_t *ids, size_t max_ids, char *err, size_t err_size);

//  The same, with special tokens recognised: the text of a control or user-defined
//  token written in text (a rendered chat prompt's "<|user|>", "<|end|>") becomes that
//  token, and the text after it is tokenized as llama.cpp does (for SPM, with the leading
//  space of a new segment). This is how chat prompts and completion prompts are
//  tokenized, as llama.cpp and vLLM do.
int64_t
    vocab_tokenize_special (const vocab_t *self, const char *text, size_t len, bool add_bos,
                            uint32_t *ids, size_t max_ids, char *err, size_t err_size);

//  The bytes token id stands for in output text (see above). Returns the number of bytes
//  (which may be more than cap: then only cap were written), or -1 if id is out of range.
int
    vocab_piece (const vocab_t *self, uint32_t id, char *buf, size_t cap);

//  The token's text as stored in the vocabulary ("▁the", "<0x0A>", "<s>").
const char *
    vocab_token_text (const vocab_t *self, uint32_t id);

#endif
