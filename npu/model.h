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

    The model owns a KV cache of n_slots independent sequences of up to n_ctx tokens each
    (stored as F16, as llama.cpp does by default), so the worker can keep several
    sequences alive between steps.

    The forward pass reads like karpathy's llama2.c: token embedding, then per layer
    RMSNorm, Q/K/V projections, RoPE, grouped-query attention over the slot's cache,
    output projection, residual, RMSNorm, SwiGLU feed-forward, residual; then the final
    RMSNorm and the output projection to logits. A prompt runs through the layers up to
    256 tokens at a time (matrix-matrix products), which gives the same numbers as token
    by token: bit for bit, except that products of F32, F16 and BF16 weights with 16 or
    more rows go to OpenBLAS when it is there, whose sums are ordered differently (equal
    within float rounding; through the F16 KV cache, logits about 1e-4 apart).

    Threads: the products, and attention head by head, are split over a pool of threads
    (model_set_threads; the default is 1, or ZLLM_THREADS from the environment). The
    calling thread is one of them, and OpenBLAS runs single-threaded inside them, so no
    more threads than asked ever compute.

    Who owns what: model_new borrows the gguf_t, which must outlive the model. The logits
    returned by model_forward belong to the model and are valid until its next call.
    One model is used by one thread at a time.
*/
#ifndef ZLLM_MODEL_H
#define ZLLM_MODEL_H

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
//  above). n_ctx 0 means the model's trained context length. The thread count is 1, or
//  ZLLM_THREADS when that is set (a number from 1 to 256; anything else is an error).
//  On error returns NULL and writes a message that names what is unsupported or wrong
//  (e.g. "tensor blk.0.attn_q.weight: type Q5_0 is not supported").
model_t *
    model_new (const gguf_t *gguf, uint32_t n_slots, uint32_t n_ctx, char *err, size_t err_size);

void
    model_destroy (model_t **self_p);

const model_config_t *
    model_config (const model_t *self);

//  Context length of each slot (what model_new was given, or the trained length).
uint32_t
    model_n_ctx (const model_t *self);

uint32_t
    model_n_slots (const model_t *self);

//  Compute with n_threads threads in all (1 .. 256), the caller's included. Returns 0,
//  or -1 with a message (the model keeps its previous threads).
int
    model_set_threads (model_t *self, uint32_t n_threads, char *err, size_t err_size);

uint32_t
    model_n_threads (const model_t *self);

//  Run n_tokens tokens of the sequence in `slot`, at positions pos .. pos+n_tokens-1,
//  writing their keys and values into the slot's cache (positions before pos must have
//  been computed already). Returns the logits (n_vocab floats) of the last of them, or
//  NULL with a message when slot, pos, a token id or the length is out of range.
const float *
    model_forward (model_t *self, uint32_t slot, uint32_t pos,
                   const uint32_t *tokens, uint32_t n_tokens, char *err, size_t err_size);

#endif
