/*  mkmodel — write a random-weight llama model of a real shape. See mkmodel.h.

    The shapes are the real models' hyperparameters (their Hugging Face config.json):

      smollm2-135m  30 layers, width 576, 9 heads / 3 KV heads, FFN 1536, rope theta 1e5,
                    context 8192, output tied to the embedding
      smollm2-360m  32 layers, width 960, 15 / 5, FFN 2560, rope theta 1e5, context 8192, tied
      llama-3.2-1b  16 layers, width 2048, 32 / 8, FFN 8192, rope theta 5e5, context 131072,
                    tied. The real model also scales RoPE ("llama3" rope_scaling: factor 32,
                    low/high frequency factors 1 and 4, original context 8192), which
                    llama.cpp stores as a rope_freqs.weight tensor rather than as keys. It
                    is left out here: it changes no speed, only long-context quality.

    Weights: each tensor gets its own generator, seeded from the seed and the tensor's
    name, so a tensor's values do not depend on which tensors come before it. Values are
    normal with std 0.02 (Box-Muller over xoshiro256**), generated and quantized a few
    rows at a time and streamed to gguf_writer.
*/
#include "mkmodel.h"
#include "sampler.h"
#include "gguf_writer.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MKMODEL_STD 0.02f
#define MKMODEL_CHUNK_ELEMENTS (1u << 20)   //  floats generated at a time, at most
#define MKMODEL_MAX_TENSORS_PER_LAYER 9

//  ChatML: the text of templates/chatml.jinja (without the file's final newline).
static const char *s_chatml_template =
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static const mkmodel_shape_t s_shapes [] = {
    { "smollm2-135m", "SmolLM2 135M (random weights)",
      30, 576, 9, 3, 1536, 8192, 100000.0f, 1e-5f, true },
    { "smollm2-360m", "SmolLM2 360M (random weights)",
      32, 960, 15, 5, 2560, 8192, 100000.0f, 1e-5f, true },
    { "llama-3.2-1b", "Llama 3.2 1B (random weights)",
      16, 2048, 32, 8, 8192, 131072, 500000.0f, 1e-5f, true },
};

size_t
mkmodel_shape_count (void)
{
    return sizeof s_shapes / sizeof s_shapes [0];
}

const mkmodel_shape_t *
mkmodel_shape (size_t index)
{
    return index < mkmodel_shape_count ()? &s_shapes [index]: NULL;
}

const mkmodel_shape_t *
mkmodel_find_shape (const char *name)
{
    for (size_t i = 0; i < mkmodel_shape_count (); i++)
        if (strcmp (s_shapes [i].name, name) == 0)
            return &s_shapes [i];
    return NULL;
}

const char *
mkmodel_chat_template (void)
{
    return s_chatml_template;
}

//  --- Types -------------------------------------------------------------------------------

bool
mkmodel_supports_type (ggml_type_t type)
{
    return quant_supports (type);
}

uint32_t
mkmodel_file_type (ggml_type_t type)
{
    //  llama.cpp's llama_ftype numbers.
    switch (type) {
        case GGML_TYPE_F32:  return 0;      //  ALL_F32
        case GGML_TYPE_F16:  return 1;      //  MOSTLY_F16
        case GGML_TYPE_Q4_0: return 2;      //  MOSTLY_Q4_0
        case GGML_TYPE_Q8_0: return 7;      //  MOSTLY_Q8_0
        case GGML_TYPE_Q4_K: return 14;     //  MOSTLY_Q4_K_S
        case GGML_TYPE_Q6_K: return 18;     //  MOSTLY_Q6_K
        case GGML_TYPE_BF16: return 32;     //  MOSTLY_BF16
        default:             return 0;
    }
}

ggml_type_t
mkmodel_weight_type (ggml_type_t type, bool is_output, uint64_t ne0)
{
    if (type == GGML_TYPE_Q4_K && is_output)
        type = GGML_TYPE_Q6_K;
    if (ne0 % QUANT_K_BLOCK != 0) {
        if (type == GGML_TYPE_Q4_K)
            type = GGML_TYPE_Q4_0;
        else
        if (type == GGML_TYPE_Q6_K)
            type = GGML_TYPE_Q8_0;
    }
    if (ne0 % QUANT_32_BLOCK != 0 && (type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q8_0))
        type = GGML_TYPE_F16;
    return type;
}

//  --- Random numbers ------------------------------------------------------------------------

typedef struct {
    sampler_rng_t uniform;              //  the sampler's xoshiro256**
    bool has_spare;                     //  Box-Muller makes normals two at a time
    float spare;
} rng_t;

//  A generator for one tensor: seeded from the model's seed and the tensor's name.
static void
s_rng_seed (rng_t *rng, uint64_t seed, const char *name)
{
    uint64_t hash = 14695981039346656037ULL;        //  FNV-1a of the name
    for (const char *c = name; *c; c++) {
        hash ^= (uint8_t) *c;
        hash *= 1099511628211ULL;
    }
    sampler_rng_seed (&rng->uniform, seed ^ hash);
    rng->has_spare = false;
}

//  Uniform in (0, 1]: never 0, so that its log is finite.
static double
s_rng_uniform (rng_t *rng)
{
    return 1.0 - sampler_rng_uniform (&rng->uniform);
}

//  Standard normal.
static float
s_rng_normal (rng_t *rng)
{
    if (rng->has_spare) {
        rng->has_spare = false;
        return rng->spare;
    }
    double radius = sqrt (-2.0 * log (s_rng_uniform (rng)));
    double angle = 2.0 * M_PI * s_rng_uniform (rng);
    rng->spare = (float) (radius * sin (angle));
    rng->has_spare = true;
    return (float) (radius * cos (angle));
}

//  --- The model's tensors ---------------------------------------------------------------------

typedef struct {
    char name [64];
    ggml_type_t type;
    uint32_t n_dims;
    uint64_t ne [2];
    bool is_norm;                       //  all ones, not random
} planned_tensor_t;

typedef struct {
    planned_tensor_t *tensors;
    size_t count;
} plan_t;

static void
s_plan_add (plan_t *plan, const char *name, ggml_type_t model_type, bool is_norm,
            bool is_output, uint64_t ne0, uint64_t ne1)
{
    planned_tensor_t *tensor = &plan->tensors [plan->count++];
    snprintf (tensor->name, sizeof tensor->name, "%s", name);
    tensor->is_norm = is_norm;
    tensor->ne [0] = ne0;
    tensor->ne [1] = ne1;
    tensor->n_dims = is_norm? 1: 2;
    tensor->type = is_norm? GGML_TYPE_F32: mkmodel_weight_type (model_type, is_output, ne0);
}

//  Every tensor of the model, named and shaped as llama.cpp names and shapes them
//  (ne[0] innermost: a [n_in, n_out] matrix has n_out rows of n_in).
static int
s_plan_model (plan_t *plan, const mkmodel_shape_t *shape, uint32_t n_vocab, ggml_type_t type)
{
    size_t most = 3 + (size_t) shape->n_layers * MKMODEL_MAX_TENSORS_PER_LAYER;
    plan->tensors = calloc (most, sizeof (planned_tensor_t));
    plan->count = 0;
    if (!plan->tensors)
        return -1;
    uint64_t dim = shape->dim;
    uint64_t kv_dim = (uint64_t) shape->dim / shape->n_heads * shape->n_kv_heads;
    uint64_t ffn = shape->ffn_dim;
    s_plan_add (plan, "token_embd.weight", type, false, shape->tied_output, dim, n_vocab);
    for (uint32_t layer = 0; layer < shape->n_layers; layer++) {
        char name [64];
        snprintf (name, sizeof name, "blk.%u.attn_norm.weight", layer);
        s_plan_add (plan, name, type, true, false, dim, 1);
        snprintf (name, sizeof name, "blk.%u.attn_q.weight", layer);
        s_plan_add (plan, name, type, false, false, dim, dim);
        snprintf (name, sizeof name, "blk.%u.attn_k.weight", layer);
        s_plan_add (plan, name, type, false, false, dim, kv_dim);
        snprintf (name, sizeof name, "blk.%u.attn_v.weight", layer);
        s_plan_add (plan, name, type, false, false, dim, kv_dim);
        snprintf (name, sizeof name, "blk.%u.attn_output.weight", layer);
        s_plan_add (plan, name, type, false, false, dim, dim);
        snprintf (name, sizeof name, "blk.%u.ffn_norm.weight", layer);
        s_plan_add (plan, name, type, true, false, dim, 1);
        snprintf (name, sizeof name, "blk.%u.ffn_gate.weight", layer);
        s_plan_add (plan, name, type, false, false, dim, ffn);
        snprintf (name, sizeof name, "blk.%u.ffn_up.weight", layer);
        s_plan_add (plan, name, type, false, false, dim, ffn);
        snprintf (name, sizeof name, "blk.%u.ffn_down.weight", layer);
        s_plan_add (plan, name, type, false, false, ffn, dim);
    }
    s_plan_add (plan, "output_norm.weight", type, true, false, dim, 1);
    if (!shape->tied_output)
        s_plan_add (plan, "output.weight", type, false, true, dim, n_vocab);
    return 0;
}

//  Generate one tensor's values a few rows at a time, convert them to its type and
//  hand them to the writer.
static int
s_stream_tensor (gguf_writer_t *writer, const planned_tensor_t *tensor, uint64_t seed,
                 float *values, uint8_t *encoded, char *err, size_t err_size)
{
    rng_t rng;
    s_rng_seed (&rng, seed, tensor->name);
    uint64_t row = tensor->ne [0];
    uint64_t rows_per_chunk = MKMODEL_CHUNK_ELEMENTS / row;
    if (rows_per_chunk == 0)
        rows_per_chunk = 1;
    uint64_t row_bytes = ggml_row_bytes (tensor->type, row);
    for (uint64_t first = 0; first < tensor->ne [1]; first += rows_per_chunk) {
        uint64_t rows = tensor->ne [1] - first;
        if (rows > rows_per_chunk)
            rows = rows_per_chunk;
        for (uint64_t i = 0; i < rows * row; i++)
            values [i] = tensor->is_norm? 1.0f: MKMODEL_STD * s_rng_normal (&rng);
        for (uint64_t r = 0; r < rows; r++)
            if (quant_quantize_row (tensor->type, values + r * row, encoded + r * row_bytes, row)) {
                snprintf (err, err_size, "cannot encode tensor %s as %s", tensor->name,
                          ggml_type_name (tensor->type));
                return -1;
            }
        if (gguf_writer_append (writer, encoded, rows * row_bytes, err, err_size))
            return -1;
    }
    return 0;
}

//  --- Writing ------------------------------------------------------------------------------

static int
s_check_shape (const mkmodel_shape_t *shape, char *err, size_t err_size)
{
    if (shape->n_layers == 0 || shape->dim == 0 || shape->n_heads == 0
    ||  shape->n_kv_heads == 0 || shape->ffn_dim == 0) {
        snprintf (err, err_size, "shape %s has a zero dimension", shape->name);
        return -1;
    }
    if (shape->dim % shape->n_heads != 0 || (shape->dim / shape->n_heads) % 2 != 0
    ||  shape->n_heads % shape->n_kv_heads != 0) {
        snprintf (err, err_size, "shape %s: width %u, %u heads and %u KV heads do not make "
                  "even heads shared evenly", shape->name, shape->dim, shape->n_heads,
                  shape->n_kv_heads);
        return -1;
    }
    return 0;
}

//  The metadata: the hyperparameters, then the tokenizer.
static int
s_set_metadata (gguf_writer_t *writer, const mkmodel_shape_t *shape, const gguf_t *vocab,
                uint32_t n_vocab, ggml_type_t type, char *err, size_t err_size)
{
    gguf_writer_set_str (writer, "general.architecture", "llama");
    gguf_writer_set_str (writer, "general.name", shape->display_name);
    gguf_writer_set_u32 (writer, "general.file_type", mkmodel_file_type (type));
    if (ggml_type_block_elements (type) > 1)
        gguf_writer_set_u32 (writer, "general.quantization_version", 2);
    gguf_writer_set_u32 (writer, "llama.context_length", shape->context_length);
    gguf_writer_set_u32 (writer, "llama.embedding_length", shape->dim);
    gguf_writer_set_u32 (writer, "llama.block_count", shape->n_layers);
    gguf_writer_set_u32 (writer, "llama.feed_forward_length", shape->ffn_dim);
    gguf_writer_set_u32 (writer, "llama.attention.head_count", shape->n_heads);
    gguf_writer_set_u32 (writer, "llama.attention.head_count_kv", shape->n_kv_heads);
    gguf_writer_set_f32 (writer, "llama.rope.freq_base", shape->rope_theta);
    gguf_writer_set_f32 (writer, "llama.attention.layer_norm_rms_epsilon", shape->rms_eps);
    gguf_writer_set_u32 (writer, "llama.rope.dimension_count", shape->dim / shape->n_heads);
    gguf_writer_set_u32 (writer, "llama.vocab_size", n_vocab);
    int64_t copied = gguf_writer_copy_prefix (writer, vocab, "tokenizer.");
    if (copied == 0) {
        snprintf (err, err_size, "the vocab file has no tokenizer.* keys");
        return -1;
    }
    gguf_writer_set_str (writer, "tokenizer.chat_template", s_chatml_template);
    if (gguf_writer_error (writer) [0]) {
        snprintf (err, err_size, "%s", gguf_writer_error (writer));
        return -1;
    }
    return 0;
}

int
mkmodel_write (const mkmodel_shape_t *shape, const char *vocab_path, ggml_type_t type,
               uint64_t seed, const char *out_path, char *err, size_t err_size)
{
    if (!mkmodel_supports_type (type)) {
        snprintf (err, err_size, "cannot make a model in type %s", ggml_type_name (type));
        return -1;
    }
    if (s_check_shape (shape, err, err_size))
        return -1;
    char vocab_err [512];
    gguf_t *vocab = gguf_open (vocab_path, vocab_err, sizeof vocab_err);
    if (!vocab) {
        snprintf (err, err_size, "%s", vocab_err);
        return -1;
    }
    gguf_type_t token_type;
    uint64_t n_vocab = 0;
    if (gguf_get_array (vocab, "tokenizer.ggml.tokens", &token_type, &n_vocab, NULL)
    ||  token_type != GGUF_TYPE_STRING || n_vocab == 0 || n_vocab > UINT32_MAX) {
        snprintf (err, err_size, "%s has no tokenizer.ggml.tokens array of strings", vocab_path);
        gguf_destroy (&vocab);
        return -1;
    }

    int rc = -1;
    plan_t plan = { 0 };
    float *values = NULL;
    uint8_t *encoded = NULL;
    gguf_writer_t *writer = gguf_writer_new ();
    if (!writer || s_plan_model (&plan, shape, (uint32_t) n_vocab, type)) {
        snprintf (err, err_size, "out of memory");
        goto done;
    }
    if (s_set_metadata (writer, shape, vocab, (uint32_t) n_vocab, type, err, err_size))
        goto done;
    gguf_destroy (&vocab);              //  everything needed was copied

    //  Buffers for the largest chunk of any tensor: whole rows, at least one.
    uint64_t most_elements = 0, most_bytes = 0;
    for (size_t i = 0; i < plan.count; i++) {
        planned_tensor_t *tensor = &plan.tensors [i];
        uint64_t rows = MKMODEL_CHUNK_ELEMENTS / tensor->ne [0];
        if (rows == 0)
            rows = 1;
        if (rows > tensor->ne [1])
            rows = tensor->ne [1];
        if (rows * tensor->ne [0] > most_elements)
            most_elements = rows * tensor->ne [0];
        if (rows * ggml_row_bytes (tensor->type, tensor->ne [0]) > most_bytes)
            most_bytes = rows * ggml_row_bytes (tensor->type, tensor->ne [0]);
        gguf_writer_add_tensor (writer, tensor->name, tensor->type, tensor->n_dims,
                                tensor->ne, NULL, 0);
    }
    values = malloc ((size_t) most_elements * sizeof (float));
    encoded = malloc ((size_t) most_bytes);
    if (!values || !encoded) {
        snprintf (err, err_size, "out of memory");
        goto done;
    }
    if (gguf_writer_begin (writer, out_path, err, err_size))
        goto done;
    for (size_t i = 0; i < plan.count; i++)
        if (s_stream_tensor (writer, &plan.tensors [i], seed, values, encoded, err, err_size))
            goto done;
    if (gguf_writer_finish (writer, NULL, err, err_size))
        goto done;
    rc = 0;
done:
    free (values);
    free (encoded);
    free (plan.tensors);
    gguf_writer_destroy (&writer);
    gguf_destroy (&vocab);
    return rc;
}
