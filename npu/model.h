/*  model — a llama-family model loaded from a GGUF file, and its forward pass.

    Architectures: "llama" (Llama 2 / 3 / 3.1 / 3.2, SmolLM, Mistral, TinyLlama: RoPE on
    adjacent pairs, with "linear" or "llama3" RoPE scaling from the metadata or a
    rope_freqs.weight tensor) and "qwen2" (biases on Q, K and V, RoPE on the two halves
    of each head, "neox" style). Any head counts with grouped-query attention, a tied or
    separate output matrix; rope theta and the RMS epsilon come from the metadata.

    The weights stay in the GGUF mapping in their stored type (F32, F16, BF16, Q8_0, Q4_0,
    Q4_K, Q6_K); nothing is expanded. Products go through npu/kernels, which prepares each
    activation row as llama.cpp does for that weight type (rounded to F16 or BF16, or
    quantized to 8 bits for the quantized types) so that the numbers follow llama.cpp's.
    Only the norms and biases (vectors) are copied, as floats.

    The KV cache is a pool of blocks (model_cache_new): each block holds block_size
    positions of every layer's keys and values, as F16 (as llama.cpp does by default).
    A sequence's position p lives in block block_table[p / block_size], at row
    p % block_size, so sequences grow block by block, share blocks (prefix caching,
    forks) and the caller (the scheduler, through the worker) decides which block holds
    what. model_copy_blocks copies whole blocks (copy-on-write forks).

    The forward pass reads like karpathy's llama2.c: token embedding, then per layer
    RMSNorm, Q/K/V projections, RoPE, grouped-query attention over the sequence's
    cached positions, output projection, residual, RMSNorm, SwiGLU feed-forward,
    residual; then the final RMSNorm and the output projection to logits. One call runs
    many sequences at once (model_forward_seqs): all their new tokens go through the
    layers together, up to 256 rows at a time (matrix-matrix products: each weight is
    read once per 256 rows, not once per sequence), and attention reads each row's own
    sequence through its block table. Each row's numbers are the same as when it runs
    alone, token by token, in any batch and whatever blocks hold it: bit for bit, except
    that products of F32, F16 and BF16 weights with 16 or more rows go to OpenBLAS when
    it is there, whose sums are ordered differently (equal within float rounding;
    through the F16 KV cache, logits about 1e-4 apart). That is the one place where a
    row's numbers depend on its batch; ZLLM_BLAS=off (kernels.h) makes every row exact.

    Threads: the products, and attention row by row and head by head, are split over a
    pool of threads (model_set_threads; the default is 1, or ZLLM_THREADS from the
    environment). The calling thread is one of them, and OpenBLAS runs single-threaded
    inside them, so no more threads than asked ever compute.

    Who owns what: model_new borrows the gguf_t, which must outlive the model. The model
    owns its KV cache, and the logits returned by model_forward_seqs, valid until its
    next call. One model is used by one thread at a time.
*/
#ifndef ZLLM_MODEL_H
#define ZLLM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

typedef struct {
    uint32_t n_vocab;
    uint32_t dim;               //  embedding width
    uint32_t n_layers;
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint32_t head_dim;          //  dim / n_heads, or attention.key_length when given
    uint32_t ffn_dim;
    uint32_t n_ctx_train;       //  llama.context_length
    float rms_eps;
    float rope_theta;
} model_config_t;

typedef struct _model_t model_t;

//  Load the model in gguf (general.architecture "llama" or "qwen2"; weights of the types
//  above). n_ctx is the longest sequence a call may run (positions 0 .. n_ctx-1); 0
//  means the model's trained context length. There is no KV cache yet: see
//  model_cache_new. The thread count is 1, or ZLLM_THREADS when that is set (a number
//  from 1 to 256; anything else is an error). On error returns NULL and writes a message
//  that names what is unsupported or wrong (e.g. "tensor blk.0.attn_q.weight: type Q5_0
//  is not supported").
model_t *
    model_new (const gguf_t *gguf, uint32_t n_ctx, char *err, size_t err_size);

void
    model_destroy (model_t **self_p);

const model_config_t *
    model_config (const model_t *self);

//  The longest sequence (what model_new was given, or the trained length).
uint32_t
    model_n_ctx (const model_t *self);

//  Bytes that one KV block of block_size positions takes (keys and values, all layers).
uint64_t
    model_cache_block_bytes (const model_t *self, uint32_t block_size);

//  Allocate the KV cache: n_blocks blocks of block_size positions (block_size 1 .. 1024,
//  n_blocks >= 1), zeroed. Replaces a cache made before: that one is freed first, so
//  when the new one cannot be had the model is left with none (bad sizes leave it as it
//  was). Returns 0, or -1 with a message (out of memory says how many bytes were asked).
int
    model_cache_new (model_t *self, uint32_t n_blocks, uint32_t block_size,
                     char *err, size_t err_size);

uint32_t
    model_cache_n_blocks (const model_t *self);

uint32_t
    model_cache_block_size (const model_t *self);

//  Compute with n_threads threads in all (1 .. 256), the caller's included. Returns 0,
//  or -1 with a message (the model keeps its previous threads).
int
    model_set_threads (model_t *self, uint32_t n_threads, char *err, size_t err_size);

uint32_t
    model_n_threads (const model_t *self);

//  One sequence in a call: n_tokens new tokens at positions pos .. pos+n_tokens-1.
//  Their keys and values are written into the sequence's blocks; positions before pos
//  must be there already (computed by an earlier call, or copied). block_table lists
//  the blocks that hold positions 0 .. pos+n_tokens-1, in order (at least
//  ceil((pos + n_tokens) / block_size) entries; more are allowed and not read).
typedef struct {
    const uint32_t *tokens;
    uint32_t n_tokens;
    uint32_t pos;
    const uint32_t *block_table;
    uint32_t n_table;
    bool want_logits;                   //  compute the logits of the last new token
} model_seq_t;

//  Run n_seqs sequences as one batch. Returns the logits of the sequences that want
//  them, one row of n_vocab floats each, in the order of seqs (row r for the r-th
//  sequence with want_logits); the rows belong to the model and are valid until its
//  next call. Returns NULL with a message, before touching the cache, when anything is
//  out of range: no cache, no tokens, a token id, positions past n_ctx, a block id, a
//  table too short. Two sequences of one call must not write the same block rows, nor
//  one read a row another writes (the caller's bookkeeping guarantees it; it is not
//  checked). Each new token attends to its sequence's positions up to its own, as if the
//  tokens ran one by one. When no sequence wants logits, the call returns a non-NULL
//  pointer that must not be read.
const float *
    model_forward_seqs (model_t *self, const model_seq_t *seqs, uint32_t n_seqs,
                        char *err, size_t err_size);

//  Copy n blocks: block src[i] to block dst[i], every layer, keys and values, in order.
//  Returns 0, or -1 with a message, copying nothing, when a block id is out of range or
//  there is no cache.
int
    model_copy_blocks (model_t *self, const uint32_t *src, const uint32_t *dst, uint32_t n,
                       char *err, size_t err_size);

#endif
