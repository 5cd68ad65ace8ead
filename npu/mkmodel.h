/*  mkmodel — write a random-weight llama model of a real shape, for benchmarks and tests.

    Speed does not depend on the weights' values, so benchmarks run on files this makes:
    a complete llama-architecture GGUF v3 with the hyperparameters of a real model
    (SmolLM2-135M, SmolLM2-360M, Llama-3.2-1B), the real tokenizer copied from a vocab
    GGUF (every tokenizer.* key), a ChatML chat template, and weights drawn from a normal
    distribution (std 0.02; norms 1.0) by a seeded generator, quantized with npu/quant.

    The file is streamed tensor by tensor: a 1B model in F32 (5 GB) is never held in
    memory. The same seed, shape, vocab and type always give the same bytes.

    Types: every weight matrix gets the chosen type; the norms are always F32. Where a
    matrix's rows do not fit the type's block, it falls back as llama.cpp's quantize does
    (a type of about the same size that fits): Q4_K -> Q4_0 and Q6_K -> Q8_0 for rows not a
    multiple of 256 (llama.cpp would pick Q5_0 for Q4_K; we have no Q5_0, and Q4_0 has
    Q4_K's 4.5 bits per weight), and Q8_0 / Q4_0 -> F16 for rows not a multiple of 32.
    For Q4_K the output matrix (token_embd.weight when the output is tied to it) is Q6_K,
    as llama.cpp makes it in its Q4_K files. general.file_type is llama.cpp's number for
    the chosen type (Q4_K is 14, "mostly Q4_K_S").

    Who owns what: the shapes are static; mkmodel_write opens, reads and closes the vocab
    file itself.
*/
#ifndef ZLLM_MKMODEL_H
#define ZLLM_MKMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

typedef struct {
    const char *name;               //  as given to --shape, e.g. "smollm2-135m"
    const char *display_name;       //  general.name
    uint32_t n_layers;
    uint32_t dim;                   //  embedding width
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint32_t ffn_dim;
    uint32_t context_length;        //  llama.context_length (the real model's)
    float rope_theta;               //  llama.rope.freq_base
    float rms_eps;                  //  llama.attention.layer_norm_rms_epsilon
    bool tied_output;               //  no output.weight: logits use token_embd.weight
} mkmodel_shape_t;

//  The built-in shapes, and the one named `name` (NULL when none is).
size_t
    mkmodel_shape_count (void);
const mkmodel_shape_t *
    mkmodel_shape (size_t index);
const mkmodel_shape_t *
    mkmodel_find_shape (const char *name);

//  True for the types a model can be made in: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K.
bool
    mkmodel_supports_type (ggml_type_t type);

//  llama.cpp's general.file_type for a model made in `type`.
uint32_t
    mkmodel_file_type (ggml_type_t type);

//  The type a weight matrix with rows of ne0 elements gets in a model made in `type`;
//  is_output is true for the matrix that computes the logits.
ggml_type_t
    mkmodel_weight_type (ggml_type_t type, bool is_output, uint64_t ne0);

//  The chat template written into every model (ChatML).
const char *
    mkmodel_chat_template (void);

//  Write the model. vocab_path is a GGUF with tokenizer.* keys (its token count is the
//  model's vocabulary size). Returns 0, or -1 with a message in err.
int
    mkmodel_write (const mkmodel_shape_t *shape, const char *vocab_path, ggml_type_t type,
                   uint64_t seed, const char *out_path, char *err, size_t err_size);

#endif
