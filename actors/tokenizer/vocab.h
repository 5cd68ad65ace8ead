/*  vocab — a model's vocabulary from GGUF metadata, and the tokenizer that llama.cpp
    applies to it: SentencePiece-style (SPM, tokenizer.ggml.model = "llama") or byte-level
    BPE (tokenizer.ggml.model = "gpt2").

    SPM: spaces become U+2581 ("▁"), a leading "▁" is added to the text (the
    add_space_prefix rule), then the pieces are merged by best score (bigram merges of
    adjacent symbols, highest vocabulary score first, leftmost on ties), and characters
    that no piece covers fall back to their UTF-8 bytes as <0xNN> tokens.

    BPE: the text is first cut into words by the pre-tokenizer that tokenizer.ggml.pre
    names (a list of regular expressions, as llama.cpp has them for "llama-bpe", "qwen2",
    "starcoder", "gpt-2", ...); each word's bytes are written with GPT-2's byte-to-unicode
    alphabet and merged pair by pair, lowest rank in tokenizer.ggml.merges first.

    With both, user-defined tokens written in the text are cut out first (and, with
    vocab_tokenize_special, control tokens too). BOS is prepended when asked.

    vocab_piece gives the bytes a token stands for in output text: for SPM "▁" becomes a
    space and <0xNN> that one byte; for BPE the byte alphabet is mapped back to bytes;
    user-defined tokens give their text, control tokens (BOS, EOS, ...) give nothing.
    vocab_piece_keep_special is the same with special tokens written: control and unknown
    tokens give their text ("</s>", "<|im_end|>"), for a request that keeps them.

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

//  Load tokenizer.ggml.* from gguf. Models "llama" (SPM) and "gpt2" (byte-level BPE) are
//  supported; another model, or a BPE pre-tokenizer that llama.cpp does not know, is
//  refused with a message that names it.
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

//  tokenizer.ggml.add_bos_token. When absent, llama.cpp's default: true for SPM; for BPE
//  true only for the pre-tokenizers that ask for it (llama3, tekken, chameleon).
bool
    vocab_add_bos (const vocab_t *self);

//  tokenizer.ggml.add_eos_token (false when absent). vocab_tokenize never appends EOS:
//  a caller that follows llama.cpp's add_special appends vocab_eos itself.
bool
    vocab_add_eos (const vocab_t *self);

//  "llama" (SPM) or "gpt2" (byte-level BPE): tokenizer.ggml.model.
const char *
    vocab_model_name (const vocab_t *self);

//  The BPE pre-tokenizer's name (tokenizer.ggml.pre, "default" when absent), or "" for
//  SPM.
const char *
    vocab_pre_name (const vocab_t *self);

//  End of generation, as llama.cpp decides it: the EOS, EOT and EOM tokens (from the
//  GGUF), the FIM pad/repo/separator tokens, and every token whose text is one of
//  "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>",
//  "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>",
//  "<end_of_utterance>" (such a token is made a control token). Where "<|return|>" and
//  "<|call|>" are there too (gpt-oss), "<|end|>" is not an end and is user-defined.
bool
    vocab_is_eog (const vocab_t *self, uint32_t id);

//  Writes up to max end-of-generation ids (ascending) into ids; returns how many there
//  are in all.
size_t
    vocab_eog_tokens (const vocab_t *self, uint32_t *ids, size_t max);

//  True when token id is a control token (BOS, EOS, "<|im_start|>", ...): it gives no
//  text, and is recognised in text only by vocab_tokenize_special. False out of range.
bool
    vocab_is_control (const vocab_t *self, uint32_t id);

//  Tokenize text[0..len-1]. Writes up to max_ids ids into ids and returns how many the
//  text needs in all (so a caller may call again with a larger buffer), or -1 with a
//  message on error. Text that is not valid UTF-8 never fails: SPM keeps such bytes as
//  byte tokens; BPE reads each such byte as U+FFFD, as llama.cpp does.
int64_t
    vocab_tokenize (const vocab_t *self, const char *text, size_t len, bool add_bos,
                    uint32_t *ids, size_t max_ids, char *err, size_t err_size);

//  The same, with special tokens recognised: the text of a control or user-defined
//  token written in text (a rendered chat prompt's "<|user|>", "<|end|>") becomes that
//  token, and the text after it is tokenized as llama.cpp does (for SPM, with the leading
//  space of a new segment; for BPE, as a text of its own). This is how chat prompts and
//  completion prompts are tokenized, as llama.cpp and vLLM do.
int64_t
    vocab_tokenize_special (const vocab_t *self, const char *text, size_t len, bool add_bos,
                            uint32_t *ids, size_t max_ids, char *err, size_t err_size);

//  The bytes token id stands for in output text (see above). Returns the number of bytes
//  (which may be more than cap: then only cap were written), or -1 if id is out of range.
int
    vocab_piece (const vocab_t *self, uint32_t id, char *buf, size_t cap);

//  As vocab_piece, but with special tokens written: a control or unknown token gives its
//  text as stored ("</s>", "<|im_end|>", "<unk>") instead of nothing, as llama.cpp's
//  token_to_piece with special set and Hugging Face's decode with skip_special_tokens
//  false do. Every other token gives what vocab_piece gives.
int
    vocab_piece_keep_special (const vocab_t *self, uint32_t id, char *buf, size_t cap);

//  The token's text as stored in the vocabulary ("▁the", "<0x0A>", "<s>").
const char *
    vocab_token_text (const vocab_t *self, uint32_t id);

#endif
