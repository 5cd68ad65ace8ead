/*  model — a llama-family model loaded from a GGUF file, and its plain forward pass.

    The weights stay in the GGUF mapping in their stored type (F32 or F16 here); nothing
    is copied. The model owns a KV cache of n_slots independent sequences of up to n_ctx
    tokens each (stored as F16, as llama.cpp does by default), so the worker can keep
    several sequences alive between steps.

    The forward pass is the plain one, written to be read (as in karpathy's llama2.c):
    token embedding, then per layer RMSNorm, Q/K/V projections, RoPE (adjacent pairs,
    llama.cpp's "normal" mode), grouped-query attention over the slot's cache, output
    projection, residual, RMSNorm, SwiGLU feed-forward, residual; then the final RMSNorm and
    the output projection to logits. Numerics follow llama.cpp where it matters for equal
    greedy tokens: F16 weights are multiplied with activations rounded to F16, and the
    cache holds F16.

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
    uint32_t head_dim;          //  dim / n_heads
    uint32_t ffn_dim;
    uint32_t n_ctx_train;       //  llama.context_length
    float rms_eps;
    float rope_theta;
} model_config_t;

typedef struct _model_t model_t;

//  Load the model in gguf (general.architecture must be "llama"; weights F32 or F16).
//  n_ctx 0 means the model's trained context length. On error returns NULL and writes a
//  message that names what is unsupported or wrong (e.g. "tensor blk.0.attn_q.weight:
//  type Q4_K is not supported").
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

//  Run n_tokens tokens of the sequence in `slot`, at positions pos .. pos+n_tokens-1,
//  writing their keys and values into the slot's cache (positions before pos must have
//  been computed already). Returns the logits (n_vocab floats) of the last of them, or
//  NULL with a message when slot, pos, a token id or the length is out of range.
const float *
    model_forward (model_t *self, uint32_t slot, uint32_t pos,
                   const uint32_t *tokens, uint32_t n_tokens, char *err, size_t err_size);

#endif
