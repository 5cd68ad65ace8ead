/*  model — a llama-family model loaded from a GGUF file, and its forward pass.
    See model.h.

    Loading checks everything the forward pass relies on: the architecture, the numbers
    in the metadata (that they are present, non-zero and agree with each other), and for
    every tensor its presence, its type, its exact shape and its alignment. After that
    the forward pass indexes the weights without further checks.

    The math follows llama.cpp (CPU, default settings) where it changes the result:
    activations are prepared for each weight type as llama.cpp does (npu/kernels), the
    KV cache holds F16, attention is computed the way its flash attention does it (see
    s_attention_heads), RoPE is ggml's with the angle stepped by theta_scale =
    base^(-2/n_dims) and divided by the frequency factors when there are any, and RMSNorm
    sums squares in double as ggml does. With this, every greedy token of
    ../shared/reference/greedy.json matches llama.cpp's, and so does every reply in
    toy-chat.json.

    Batching: model_forward_seqs lays the new tokens of all its sequences out as rows,
    sequence after sequence (row m knows its sequence and its position), and runs them
    through the layers in passes of up to MODEL_BATCH rows: a long prompt may be split
    over passes, and one pass may hold the end of one sequence and the start of the
    next. In a pass each product multiplies the weights with all its rows at once
    (kernels_matmul: a weight matrix is read once per pass, not once per sequence; or,
    for F32, F16 and BF16 weights and at least MODEL_BLAS_MIN_ROWS rows, OpenBLAS's
    sgemm, which on this machine kind beats our kernels from about 16 rows), and
    attention runs for every (row, head) pair over the row's own sequence. The rows
    whose logits are wanted (the last row of each sequence that asks) get the final
    RMSNorm and one output product together.

    A row's numbers are those it gets alone, token by token, bit for bit, whatever else
    shares its pass: the products treat each activation row with the same arithmetic
    whatever the other rows are, and attention reads only the row's own sequence, in
    the same order. The one place where a row depends on its batch is OpenBLAS: whether
    an F32, F16 or BF16 product goes there depends on how many rows the pass has, and
    OpenBLAS orders its sums its own way (equal within float rounding).

    Threads: every product is cut into tasks of weight rows, attention into tasks of a
    row and the heads that share a KV head (whose keys and values are then read once
    for all of them; fewer heads a task when a pass has too few rows to keep the threads
    busy), the feed-forward's SwiGLU (an expf per value) into runs of values, and the
    model's kernels_pool runs them; the serial parts between (norms, RoPE, residuals)
    are small.

    Layout of the KV cache (model_cache_new): keys and values are each
    [n_layers][n_blocks][block_size][kv_dim] F16, kv_dim = n_kv_heads * head_dim, so one
    layer's part of a block is block_size rows of kv_dim values, one row per position.
    Position p of a sequence is row p % block_size of block block_table[p / block_size].
    Attention reads a sequence block by block: the dot products of a block's keys in one
    kernels_matmul into the position's scores, the online softmax over all positions,
    then the weighted sum of values block by block in position order: the same
    operations in the same order as over one contiguous run of rows, so the block size
    and where the blocks are change no bit.
*/
#include "model.h"
#include "kernels.h"
#include "quant.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Rows (new tokens of any sequences) that go through the layers together, at most.
#define MODEL_BATCH 256
#define MODEL_MAX_THREADS 256
//  Positions per KV block, at most.
#define MODEL_MAX_BLOCK_SIZE 1024
//  F32, F16 and BF16 products of at least this many activation rows go to OpenBLAS
//  when it is there (the one place where a row's numbers depend on its batch).
#define MODEL_BLAS_MIN_ROWS 16
//  Products sharing one input, at most (Q, K and V).
#define MODEL_MAX_TARGETS 3
//  F16 and BF16 weight rows converted to F32 at a time, for OpenBLAS.
#define MODEL_TILE_ROWS 64
//  Elements of the feed-forward's SwiGLU per task (a row of SmolLM2's 1536 is three).
#define MODEL_SWIGLU_CHUNK 512

typedef enum {
    ARCH_LLAMA,
    ARCH_QWEN2
} architecture_t;

//  The weights of one transformer block. Vectors are copied to floats at load.
typedef struct {
    float *attn_norm;                   //  [dim]
    const gguf_tensor_t *attn_q;        //  [dim, q_dim]
    const gguf_tensor_t *attn_k;        //  [dim, kv_dim]
    const gguf_tensor_t *attn_v;        //  [dim, kv_dim]
    float *attn_q_bias;                 //  [q_dim], or NULL when the model has none
    float *attn_k_bias;                 //  [kv_dim], or NULL
    float *attn_v_bias;                 //  [kv_dim], or NULL
    const gguf_tensor_t *attn_output;   //  [q_dim, dim]
    float *ffn_norm;                    //  [dim]
    const gguf_tensor_t *ffn_gate;      //  [dim, ffn_dim]
    const gguf_tensor_t *ffn_up;        //  [dim, ffn_dim]
    const gguf_tensor_t *ffn_down;      //  [ffn_dim, dim]
} layer_weights_t;

//  The forms an activation row is prepared in (kernels.h): weight types that take the
//  same form share one buffer. F32 weights take the row as it is.
typedef enum {
    FORM_F32,
    FORM_F16,
    FORM_BF16,
    FORM_Q8_0,
    FORM_Q8_K,
    FORM_COUNT
} input_form_t;

struct _model_t {
    const gguf_t *gguf;                 //  borrowed: holds the weights
    model_config_t config;
    architecture_t architecture;
    char prefix [16];                   //  of the metadata keys: "llama", "qwen2"
    uint32_t q_dim;                     //  n_heads * head_dim
    uint32_t kv_dim;                    //  n_kv_heads * head_dim
    uint32_t n_ctx;
    uint32_t widest;                    //  the longest weight row (input of a product)

    //  RoPE: the first rope_dims values of each head turn, in pairs (i, i + 1), or
    //  (i, i + rope_dims / 2) for neox; pair i by pos * theta_scale^i / factor[i] *
    //  freq_scale.
    uint32_t rope_dims;
    bool rope_neox;
    float rope_theta_scale;
    float rope_freq_scale;              //  1, or 1 / factor for linear scaling
    float *rope_factors;                //  [rope_dims / 2], or NULL

    const gguf_tensor_t *token_embd;    //  [dim, n_vocab]
    float *output_norm;                 //  [dim]
    const gguf_tensor_t *output;        //  [dim, n_vocab], or token_embd when tied
    layer_weights_t *layers;

    //  The KV cache: NULL until model_cache_new.
    uint32_t n_blocks;
    uint32_t block_size;                //  positions per block
    uint16_t *key_cache;                //  [n_layers][n_blocks][block_size][kv_dim], F16
    uint16_t *value_cache;              //  same layout

    //  Threads.
    uint32_t n_threads;
    kernels_pool_t *pool;               //  NULL for one thread
    //  Attention's scratch, for the heads that share a KV head (group = n_heads /
    //  n_kv_heads): their queries rounded to F16, their running sums, their scores
    //  (then scalings), then their weights per position, and their sums of weights.
    float *thread_query;                //  [n_threads][group][head_dim]
    uint16_t *thread_sum;               //  [n_threads][group][head_dim]
    float *thread_scores;               //  [n_threads][2 * group][n_ctx]
    float *thread_exps;                 //  [n_threads][group]
    float *thread_tile;                 //  [n_threads][MODEL_TILE_ROWS * widest]: weight
                                        //  rows as F32 for OpenBLAS (F16 and BF16 weights)

    //  Activations of a pass: up to `batch` rows, one per token.
    uint32_t batch;
    float *x;                           //  residual stream [batch][dim]
    float *xb;                          //  normed input [batch][dim], attention out [batch][q_dim]
    float *xb2;                         //  projection output [batch][dim]
    float *q;                           //  queries [batch][q_dim]
    float *k;                           //  keys [batch][kv_dim]
    float *v;                           //  values [batch][kv_dim]
    float *hb;                          //  feed-forward gate [batch][ffn_dim]
    float *hb2;                         //  feed-forward up [batch][ffn_dim]
    float *rope_cos;                    //  [batch][rope_dims / 2]
    float *rope_sin;
    uint8_t *prepared [FORM_COUNT];     //  an input in the weights' forms [batch][row bytes]
    float *logits;                      //  [logits_rows][n_vocab]: a call's logits
    uint32_t logits_rows;
};

//  --- Loading -----------------------------------------------------------------------------

static input_form_t
s_form (ggml_type_t type)
{
    switch (type) {
        case GGML_TYPE_F16:  return FORM_F16;
        case GGML_TYPE_BF16: return FORM_BF16;
        case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0: return FORM_Q8_0;
        case GGML_TYPE_Q4_K: case GGML_TYPE_Q6_K: return FORM_Q8_K;
        default:             return FORM_F32;
    }
}

//  A weight type of each form, to ask kernels about row sizes.
static ggml_type_t
s_form_type (input_form_t form)
{
    switch (form) {
        case FORM_F16:  return GGML_TYPE_F16;
        case FORM_BF16: return GGML_TYPE_BF16;
        case FORM_Q8_0: return GGML_TYPE_Q8_0;
        case FORM_Q8_K: return GGML_TYPE_Q4_K;
        default:        return GGML_TYPE_F32;
    }
}

//  Check a tensor's shape: [ne0] or [ne0, ne1].
static int
s_check_shape (const gguf_tensor_t *tensor, const char *name, uint64_t ne0, uint64_t ne1,
               char *err, size_t err_size)
{
    if (tensor->ne [0] != ne0 || tensor->ne [1] != ne1
    ||  tensor->ne [2] != 1 || tensor->ne [3] != 1) {
        snprintf (err, err_size, "tensor %s has shape [%llu, %llu, %llu, %llu], "
                  "expected [%llu, %llu]", name,
                  (unsigned long long) tensor->ne [0], (unsigned long long) tensor->ne [1],
                  (unsigned long long) tensor->ne [2], (unsigned long long) tensor->ne [3],
                  (unsigned long long) ne0, (unsigned long long) ne1);
        return -1;
    }
    return 0;
}

//  Look up a weight matrix [ne0, ne1] (ne1 rows of ne0), check its type, shape and
//  alignment. It stays in the mapping.
static const gguf_tensor_t *
s_matrix (const gguf_t *gguf, const char *name, uint64_t ne0, uint64_t ne1,
          char *err, size_t err_size)
{
    const gguf_tensor_t *tensor = gguf_find_tensor (gguf, name);
    if (!tensor) {
        snprintf (err, err_size, "tensor %s is missing", name);
        return NULL;
    }
    if (!kernels_supports (tensor->type)) {
        snprintf (err, err_size, "tensor %s: type %s is not supported "
                  "(F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K are)",
                  name, ggml_type_name (tensor->type));
        return NULL;
    }
    if (s_check_shape (tensor, name, ne0, ne1, err, err_size))
        return NULL;
    if (ne0 % ggml_type_block_elements (tensor->type) != 0) {
        snprintf (err, err_size, "tensor %s: rows of %llu are not whole %s blocks of %u",
                  name, (unsigned long long) ne0, ggml_type_name (tensor->type),
                  ggml_type_block_elements (tensor->type));
        return NULL;
    }
    //  The kernels read elements and block fields in place: F32 needs 4-byte alignment,
    //  the others (16-bit fields) 2.
    size_t alignment = tensor->type == GGML_TYPE_F32? 4: 2;
    if ((uintptr_t) tensor->data % alignment != 0) {
        snprintf (err, err_size, "tensor %s: data is not aligned for %s", name,
                  ggml_type_name (tensor->type));
        return NULL;
    }
    return tensor;
}

//  Look up a vector of n values and copy it into a new float array (*out). A missing
//  vector is an error when required, else *out stays NULL. Returns 0 or -1.
static int
s_vector (const gguf_t *gguf, const char *name, uint64_t n, bool required, float **out,
          char *err, size_t err_size)
{
    *out = NULL;
    const gguf_tensor_t *tensor = gguf_find_tensor (gguf, name);
    if (!tensor) {
        if (!required)
            return 0;
        snprintf (err, err_size, "tensor %s is missing", name);
        return -1;
    }
    if (!quant_supports (tensor->type)) {
        snprintf (err, err_size, "tensor %s: type %s is not supported", name,
                  ggml_type_name (tensor->type));
        return -1;
    }
    if (s_check_shape (tensor, name, n, 1, err, err_size))
        return -1;
    float *values = malloc ((size_t) n * sizeof (float));
    if (!values) {
        snprintf (err, err_size, "out of memory for tensor %s", name);
        return -1;
    }
    if (quant_dequantize_row (tensor->type, tensor->data, values, n) != 0) {
        snprintf (err, err_size, "tensor %s: %llu values are not whole %s blocks", name,
                  (unsigned long long) n, ggml_type_name (tensor->type));
        free (values);
        return -1;
    }
    *out = values;
    return 0;
}

//  The metadata key "<prefix>.<name>".
static const char *
s_key (const model_t *self, const char *name, char *key, size_t key_size)
{
    snprintf (key, key_size, "%s.%s", self->prefix, name);
    return key;
}

//  A required positive integer from the metadata.
static int
s_config_u32 (const model_t *self, const char *name, uint32_t *value, char *err, size_t err_size)
{
    char key [128];
    s_key (self, name, key, sizeof key);
    if (gguf_get_u32 (self->gguf, key, value) != 0) {
        snprintf (err, err_size, "metadata %s is missing or not an unsigned 32-bit integer", key);
        return -1;
    }
    if (*value == 0) {
        snprintf (err, err_size, "metadata %s is 0", key);
        return -1;
    }
    return 0;
}

//  An optional positive integer: left as it is when the key is absent.
static int
s_config_u32_optional (const model_t *self, const char *name, uint32_t *value,
                       char *err, size_t err_size)
{
    char key [128];
    if (gguf_find_key (self->gguf, s_key (self, name, key, sizeof key)) < 0)
        return 0;
    return s_config_u32 (self, name, value, err, err_size);
}

//  An optional float: left as it is when the key is absent.
static int
s_config_f32_optional (const model_t *self, const char *name, float *value,
                       char *err, size_t err_size)
{
    char key [128];
    if (gguf_find_key (self->gguf, s_key (self, name, key, sizeof key)) < 0)
        return 0;
    if (gguf_get_f32 (self->gguf, key, value) != 0 || !isfinite (*value)) {
        snprintf (err, err_size, "metadata %s is not a finite float", key);
        return -1;
    }
    return 0;
}

//  The architecture, and with it the prefix of the metadata keys.
static int
s_read_architecture (model_t *self, char *err, size_t err_size)
{
    gguf_str_t architecture;
    if (gguf_get_str (self->gguf, "general.architecture", &architecture) != 0) {
        snprintf (err, err_size, "metadata general.architecture is missing");
        return -1;
    }
    if (architecture.len == 5 && memcmp (architecture.ptr, "llama", 5) == 0)
        self->architecture = ARCH_LLAMA;
    else
    if (architecture.len == 5 && memcmp (architecture.ptr, "qwen2", 5) == 0)
        self->architecture = ARCH_QWEN2;
    else {
        snprintf (err, err_size, "architecture '%.*s' is not supported (llama and qwen2 are)",
                  (int) (architecture.len < 64? architecture.len: 64), architecture.ptr);
        return -1;
    }
    snprintf (self->prefix, sizeof self->prefix, "%.*s", (int) architecture.len,
              architecture.ptr);
    //  llama.cpp turns qwen2's heads in neox style (halves), llama's in adjacent pairs
    //  (its converter permutes Q and K to match).
    self->rope_neox = self->architecture == ARCH_QWEN2;
    return 0;
}

//  Read and check the hyperparameters. Returns 0 or -1 with err filled.
static int
s_read_config (model_t *self, char *err, size_t err_size)
{
    const gguf_t *gguf = self->gguf;
    model_config_t *config = &self->config;
    if (s_read_architecture (self, err, err_size)
    ||  s_config_u32 (self, "embedding_length", &config->dim, err, err_size)
    ||  s_config_u32 (self, "block_count", &config->n_layers, err, err_size)
    ||  s_config_u32 (self, "attention.head_count", &config->n_heads, err, err_size)
    ||  s_config_u32 (self, "feed_forward_length", &config->ffn_dim, err, err_size)
    ||  s_config_u32 (self, "context_length", &config->n_ctx_train, err, err_size))
        return -1;
    config->n_kv_heads = config->n_heads;
    if (s_config_u32_optional (self, "attention.head_count_kv", &config->n_kv_heads,
                               err, err_size))
        return -1;
    char key [128];
    s_key (self, "attention.layer_norm_rms_epsilon", key, sizeof key);
    if (gguf_get_f32 (gguf, key, &config->rms_eps) != 0) {
        snprintf (err, err_size, "metadata %s is missing or not a float", key);
        return -1;
    }
    if (!(config->rms_eps >= 0 && config->rms_eps < 1)) {
        snprintf (err, err_size, "rms epsilon %g is out of range", (double) config->rms_eps);
        return -1;
    }
    config->rope_theta = 10000.0f;
    if (s_config_f32_optional (self, "rope.freq_base", &config->rope_theta, err, err_size))
        return -1;
    if (!(config->rope_theta > 0)) {
        snprintf (err, err_size, "rope frequency base %g is out of range",
                  (double) config->rope_theta);
        return -1;
    }
    if (config->n_kv_heads > config->n_heads || config->n_heads % config->n_kv_heads != 0) {
        snprintf (err, err_size, "head count %u is not a multiple of the KV head count %u",
                  config->n_heads, config->n_kv_heads);
        return -1;
    }
    //  The head size: attention.key_length when given (it must equal value_length),
    //  else the width over the head count.
    uint32_t key_length = 0, value_length = 0;
    if (s_config_u32_optional (self, "attention.key_length", &key_length, err, err_size)
    ||  s_config_u32_optional (self, "attention.value_length", &value_length, err, err_size))
        return -1;
    if (key_length != value_length) {
        snprintf (err, err_size, "attention key length %u differs from value length %u",
                  key_length, value_length);
        return -1;
    }
    if (key_length)
        config->head_dim = key_length;
    else {
        if (config->dim % config->n_heads != 0) {
            snprintf (err, err_size, "embedding length %u is not a multiple of the head "
                      "count %u", config->dim, config->n_heads);
            return -1;
        }
        config->head_dim = config->dim / config->n_heads;
    }
    //  Each layer has at least nine tensors: a larger block count is corrupt (and must
    //  not size an allocation). Head counts beyond 2^16 are too.
    if (config->n_layers > gguf_tensor_count (gguf) / 9) {
        snprintf (err, err_size, "block count %u is more than the file's %zu tensors hold",
                  config->n_layers, gguf_tensor_count (gguf));
        return -1;
    }
    if (config->n_heads > 65536 || config->head_dim > 65536) {
        snprintf (err, err_size, "%u heads of %u are too many", config->n_heads,
                  config->head_dim);
        return -1;
    }
    self->q_dim = config->n_heads * config->head_dim;
    self->kv_dim = config->n_kv_heads * config->head_dim;
    self->rope_dims = config->head_dim;
    if (s_config_u32_optional (self, "rope.dimension_count", &self->rope_dims, err, err_size))
        return -1;
    if (self->rope_dims > config->head_dim || self->rope_dims % 2 != 0) {
        snprintf (err, err_size, "rope dimension count %u does not fit the head size %u",
                  self->rope_dims, config->head_dim);
        return -1;
    }
    self->rope_theta_scale = powf (config->rope_theta, -2.0f / (float) self->rope_dims);

    const gguf_tensor_t *token_embd = gguf_find_tensor (gguf, "token_embd.weight");
    if (!token_embd) {
        snprintf (err, err_size, "tensor token_embd.weight is missing");
        return -1;
    }
    if (token_embd->ne [1] == 0 || token_embd->ne [1] > UINT32_MAX) {
        snprintf (err, err_size, "tensor token_embd.weight has %llu rows",
                  (unsigned long long) token_embd->ne [1]);
        return -1;
    }
    config->n_vocab = (uint32_t) token_embd->ne [1];
    uint32_t vocab_size;
    if (gguf_get_u32 (gguf, s_key (self, "vocab_size", key, sizeof key), &vocab_size) == 0
    &&  vocab_size != config->n_vocab) {
        snprintf (err, err_size, "%s %u differs from token_embd.weight's %u rows",
                  key, vocab_size, config->n_vocab);
        return -1;
    }
    return 0;
}

//  Llama 3's frequency factors, as llama.cpp's converter computes them from
//  rope_scaling (factor, low_freq_factor, high_freq_factor,
//  original_max_position_embeddings): pair i turns at base^(-2i/n) / factor_i, where
//  long wavelengths are slowed by `factor`, short ones kept, and the ones between
//  blended.
static void
s_llama3_factors (model_t *self, float factor, float low_freq_factor, float high_freq_factor,
                  float original_context)
{
    double low_freq_wavelength = original_context / low_freq_factor;
    double high_freq_wavelength = original_context / high_freq_factor;
    for (uint32_t i = 0; i < self->rope_dims / 2; i++) {
        double frequency = 1.0 / pow (self->config.rope_theta, (2.0 * i) / self->rope_dims);
        double wavelength = 2 * M_PI / frequency;
        double result;
        if (wavelength < high_freq_wavelength)
            result = 1;
        else
        if (wavelength > low_freq_wavelength)
            result = factor;
        else {
            double smooth = (original_context / wavelength - low_freq_factor)
                          / (high_freq_factor - low_freq_factor);
            result = 1 / ((1 - smooth) / factor + smooth);
        }
        self->rope_factors [i] = (float) result;
    }
}

//  RoPE scaling: a rope_freqs.weight tensor (as llama.cpp's converter writes for Llama
//  3.1 and 3.2), or <arch>.rope.scaling.type "none", "linear" (positions divided by the
//  factor) or "llama3" (frequency factors computed from the keys). A factor without a
//  type means linear, as in llama.cpp. Other types (yarn, longrope) are refused.
static int
s_read_rope_scaling (model_t *self, char *err, size_t err_size)
{
    self->rope_freq_scale = 1.0f;
    char key [128];
    char type [32] = "";
    gguf_str_t type_value;
    if (gguf_get_str (self->gguf, s_key (self, "rope.scaling.type", key, sizeof key),
                      &type_value) == 0)
        snprintf (type, sizeof type, "%.*s",
                  (int) (type_value.len < 31? type_value.len: 31), type_value.ptr);
    else
    if (gguf_find_key (self->gguf, key) >= 0) {
        snprintf (err, err_size, "metadata %s is not a string", key);
        return -1;
    }
    float factor = 0;
    if (s_config_f32_optional (self, "rope.scaling.factor", &factor, err, err_size))
        return -1;
    if (factor < 0 || (factor > 0 && factor < 1e-6f)) {
        snprintf (err, err_size, "rope scaling factor %g is out of range", (double) factor);
        return -1;
    }
    if (!type [0] && factor > 0)
        snprintf (type, sizeof type, "linear");

    const gguf_tensor_t *freqs = gguf_find_tensor (self->gguf, "rope_freqs.weight");
    if (freqs) {
        if (s_vector (self->gguf, "rope_freqs.weight", self->rope_dims / 2, true,
                      &self->rope_factors, err, err_size))
            return -1;
        for (uint32_t i = 0; i < self->rope_dims / 2; i++)
            if (!(self->rope_factors [i] > 0) || !isfinite (self->rope_factors [i])) {
                snprintf (err, err_size, "rope_freqs.weight [%u] = %g is not a positive "
                          "factor", i, (double) self->rope_factors [i]);
                return -1;
            }
        if (strcmp (type, "llama3") == 0)
            return 0;                   //  the tensor holds what the keys describe
    }
    if (!type [0] || strcmp (type, "none") == 0)
        return 0;
    if (strcmp (type, "linear") == 0) {
        if (factor > 0)
            self->rope_freq_scale = 1.0f / factor;
        return 0;
    }
    if (strcmp (type, "llama3") == 0) {
        float low_freq_factor = 1, high_freq_factor = 4, original_context = 8192;
        if (s_config_f32_optional (self, "rope.scaling.low_freq_factor", &low_freq_factor,
                                   err, err_size)
        ||  s_config_f32_optional (self, "rope.scaling.high_freq_factor", &high_freq_factor,
                                   err, err_size))
            return -1;
        uint32_t context = 0;
        if (s_config_u32_optional (self, "rope.scaling.original_context_length", &context,
                                   err, err_size))
            return -1;
        if (context)
            original_context = (float) context;
        if (!(factor >= 1) || !(low_freq_factor > 0) || !(high_freq_factor > low_freq_factor)) {
            snprintf (err, err_size, "llama3 rope scaling needs factor >= 1 (%g) and 0 < "
                      "low_freq_factor (%g) < high_freq_factor (%g)", (double) factor,
                      (double) low_freq_factor, (double) high_freq_factor);
            return -1;
        }
        self->rope_factors = malloc ((self->rope_dims / 2 + 1) * sizeof (float));
        if (!self->rope_factors) {
            snprintf (err, err_size, "out of memory");
            return -1;
        }
        s_llama3_factors (self, factor, low_freq_factor, high_freq_factor, original_context);
        return 0;
    }
    snprintf (err, err_size, "rope scaling type '%s' is not supported (none, linear and "
              "llama3 are)", type);
    return -1;
}

static const gguf_tensor_t *
s_layer_matrix (const gguf_t *gguf, uint32_t layer, const char *what,
                uint64_t ne0, uint64_t ne1, char *err, size_t err_size)
{
    char name [64];
    snprintf (name, sizeof name, "blk.%u.%s.weight", layer, what);
    return s_matrix (gguf, name, ne0, ne1, err, err_size);
}

static int
s_layer_vector (const gguf_t *gguf, uint32_t layer, const char *what, uint64_t n,
                bool required, float **out, char *err, size_t err_size)
{
    char name [64];
    snprintf (name, sizeof name, "blk.%u.%s", layer, what);
    return s_vector (gguf, name, n, required, out, err, err_size);
}

//  Find and check every weight. Returns 0 or -1 with err filled.
static int
s_find_weights (model_t *self, char *err, size_t err_size)
{
    const gguf_t *gguf = self->gguf;
    const model_config_t *config = &self->config;
    uint32_t dim = config->dim;

    self->token_embd = s_matrix (gguf, "token_embd.weight", dim, config->n_vocab, err, err_size);
    if (!self->token_embd
    ||  s_vector (gguf, "output_norm.weight", dim, true, &self->output_norm, err, err_size))
        return -1;
    if (gguf_find_tensor (gguf, "output.weight")) {
        self->output = s_matrix (gguf, "output.weight", dim, config->n_vocab, err, err_size);
        if (!self->output)
            return -1;
    }
    else
        self->output = self->token_embd;        //  tied embeddings

    self->layers = calloc (config->n_layers, sizeof (layer_weights_t));
    if (!self->layers) {
        snprintf (err, err_size, "out of memory for %u layers", config->n_layers);
        return -1;
    }
    //  Q, K and V biases: qwen2 has them; llama.cpp takes them in llama models too.
    bool biases_required = self->architecture == ARCH_QWEN2;
    for (uint32_t l = 0; l < config->n_layers; l++) {
        layer_weights_t *layer = &self->layers [l];
        if (s_layer_vector (gguf, l, "attn_norm.weight", dim, true, &layer->attn_norm,
                            err, err_size)
        ||  !(layer->attn_q = s_layer_matrix (gguf, l, "attn_q", dim, self->q_dim, err, err_size))
        ||  !(layer->attn_k = s_layer_matrix (gguf, l, "attn_k", dim, self->kv_dim,
                                              err, err_size))
        ||  !(layer->attn_v = s_layer_matrix (gguf, l, "attn_v", dim, self->kv_dim,
                                              err, err_size))
        ||  s_layer_vector (gguf, l, "attn_q.bias", self->q_dim, biases_required,
                            &layer->attn_q_bias, err, err_size)
        ||  s_layer_vector (gguf, l, "attn_k.bias", self->kv_dim, biases_required,
                            &layer->attn_k_bias, err, err_size)
        ||  s_layer_vector (gguf, l, "attn_v.bias", self->kv_dim, biases_required,
                            &layer->attn_v_bias, err, err_size)
        ||  !(layer->attn_output = s_layer_matrix (gguf, l, "attn_output", self->q_dim, dim,
                                                   err, err_size))
        ||  s_layer_vector (gguf, l, "ffn_norm.weight", dim, true, &layer->ffn_norm,
                            err, err_size)
        ||  !(layer->ffn_gate = s_layer_matrix (gguf, l, "ffn_gate", dim, config->ffn_dim,
                                                err, err_size))
        ||  !(layer->ffn_up = s_layer_matrix (gguf, l, "ffn_up", dim, config->ffn_dim,
                                              err, err_size))
        ||  !(layer->ffn_down = s_layer_matrix (gguf, l, "ffn_down", config->ffn_dim, dim,
                                                err, err_size)))
            return -1;
    }
    return 0;
}

//  True when some weight matrix of the model is stored in a type of this form.
static bool
s_model_uses_form (const model_t *self, input_form_t form)
{
    if (s_form (self->output->type) == form)
        return true;
    for (uint32_t l = 0; l < self->config.n_layers; l++) {
        const layer_weights_t *layer = &self->layers [l];
        const gguf_tensor_t *matrices [7] = { layer->attn_q, layer->attn_k, layer->attn_v,
                                              layer->attn_output, layer->ffn_gate,
                                              layer->ffn_up, layer->ffn_down };
        for (int i = 0; i < 7; i++)
            if (s_form (matrices [i]->type) == form)
                return true;
    }
    return false;
}

//  Allocate the activations of a pass and one row of logits. Returns 0 or -1 with err
//  filled.
static int
s_allocate_activations (model_t *self, char *err, size_t err_size)
{
    const model_config_t *config = &self->config;
    self->batch = MODEL_BATCH;
    size_t batch = self->batch;
    size_t widest = config->dim;                    //  the widest input of a product
    if (config->ffn_dim > widest)
        widest = config->ffn_dim;
    if (self->q_dim > widest)
        widest = self->q_dim;
    self->widest = (uint32_t) widest;
    size_t xb_width = config->dim > self->q_dim? config->dim: self->q_dim;
    self->x = calloc (batch * config->dim, sizeof (float));
    self->xb = calloc (batch * xb_width, sizeof (float));
    self->xb2 = calloc (batch * config->dim, sizeof (float));
    self->q = calloc (batch * self->q_dim, sizeof (float));
    self->k = calloc (batch * self->kv_dim, sizeof (float));
    self->v = calloc (batch * self->kv_dim, sizeof (float));
    self->hb = calloc (batch * config->ffn_dim, sizeof (float));
    self->hb2 = calloc (batch * config->ffn_dim, sizeof (float));
    self->rope_cos = calloc (batch * (self->rope_dims / 2 + 1), sizeof (float));
    self->rope_sin = calloc (batch * (self->rope_dims / 2 + 1), sizeof (float));
    self->logits = calloc (config->n_vocab, sizeof (float));
    self->logits_rows = 1;
    bool ok = self->x && self->xb && self->xb2 && self->q && self->k && self->v && self->hb
           && self->hb2 && self->rope_cos && self->rope_sin && self->logits;
    for (int form = FORM_F16; form < FORM_COUNT && ok; form++)
        if (s_model_uses_form (self, (input_form_t) form)) {
            size_t row_bytes = kernels_activation_row_bytes (s_form_type ((input_form_t) form),
                                                             widest);
            self->prepared [form] = malloc (batch * row_bytes);
            ok = self->prepared [form] != NULL;
        }
    if (!ok) {
        snprintf (err, err_size, "out of memory for the activations of %zu tokens", batch);
        return -1;
    }
    return 0;
}

//  The thread count asked for in ZLLM_THREADS, or 1. Returns 0 or -1 with err filled.
static int
s_threads_from_environment (uint32_t *n_threads, char *err, size_t err_size)
{
    *n_threads = 1;
    const char *setting = getenv ("ZLLM_THREADS");
    if (!setting || !setting [0])
        return 0;
    char *end = NULL;
    long value = strtol (setting, &end, 10);
    if (*end || value < 1 || value > MODEL_MAX_THREADS) {
        snprintf (err, err_size, "ZLLM_THREADS='%.32s' is not a thread count from 1 to %d",
                  setting, MODEL_MAX_THREADS);
        return -1;
    }
    *n_threads = (uint32_t) value;
    return 0;
}

model_t *
model_new (const gguf_t *gguf, uint32_t n_ctx, char *err, size_t err_size)
{
    if (!gguf) {
        snprintf (err, err_size, "no GGUF file given");
        return NULL;
    }
    uint32_t n_threads;
    if (s_threads_from_environment (&n_threads, err, err_size))
        return NULL;
    kernels_init ();
    model_t *self = calloc (1, sizeof (model_t));
    if (!self) {
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->gguf = gguf;
    self->n_threads = 1;
    if (s_read_config (self, err, err_size) != 0
    ||  s_read_rope_scaling (self, err, err_size) != 0
    ||  s_find_weights (self, err, err_size) != 0) {
        model_destroy (&self);
        return NULL;
    }
    self->n_ctx = n_ctx? n_ctx: self->config.n_ctx_train;
    if (s_allocate_activations (self, err, err_size) != 0
    ||  model_set_threads (self, n_threads, err, err_size) != 0) {
        model_destroy (&self);
        return NULL;
    }
    return self;
}

void
model_destroy (model_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    model_t *self = *self_p;
    kernels_pool_destroy (&self->pool);
    if (self->layers)
        for (uint32_t l = 0; l < self->config.n_layers; l++) {
            layer_weights_t *layer = &self->layers [l];
            free (layer->attn_norm);
            free (layer->attn_q_bias);
            free (layer->attn_k_bias);
            free (layer->attn_v_bias);
            free (layer->ffn_norm);
        }
    free (self->layers);
    free (self->output_norm);
    free (self->rope_factors);
    free (self->key_cache);
    free (self->value_cache);
    free (self->thread_query);
    free (self->thread_sum);
    free (self->thread_scores);
    free (self->thread_exps);
    free (self->thread_tile);
    free (self->x);
    free (self->xb);
    free (self->xb2);
    free (self->q);
    free (self->k);
    free (self->v);
    free (self->hb);
    free (self->hb2);
    free (self->rope_cos);
    free (self->rope_sin);
    for (int form = 0; form < FORM_COUNT; form++)
        free (self->prepared [form]);
    free (self->logits);
    free (self);
    *self_p = NULL;
}

const model_config_t *
model_config (const model_t *self)
{
    return &self->config;
}

uint32_t
model_n_ctx (const model_t *self)
{
    return self->n_ctx;
}

//  --- The KV cache ----------------------------------------------------------------------------

//  F16 elements of n_blocks blocks of block_size positions of the key (or value) cache,
//  all layers: n_layers * n_blocks * block_size * kv_dim, or 0 when that does not fit
//  in a size_t with room for its bytes, twice (keys and values).
static size_t
s_cache_elements (const model_t *self, uint32_t n_blocks, uint32_t block_size)
{
    const size_t factors [4] = { self->config.n_layers, n_blocks, block_size, self->kv_dim };
    size_t elements = 1;
    for (int i = 0; i < 4; i++) {
        if (factors [i] == 0 || elements > SIZE_MAX / 2 / sizeof (uint16_t) / factors [i])
            return 0;
        elements *= factors [i];
    }
    return elements;
}

uint64_t
model_cache_block_bytes (const model_t *self, uint32_t block_size)
{
    size_t elements = s_cache_elements (self, 1, block_size);
    return elements? 2 * (uint64_t) elements * sizeof (uint16_t): UINT64_MAX;
}

int
model_cache_new (model_t *self, uint32_t n_blocks, uint32_t block_size,
                 char *err, size_t err_size)
{
    if (block_size < 1 || block_size > MODEL_MAX_BLOCK_SIZE) {
        snprintf (err, err_size, "KV block size %u: give 1 to %d positions", block_size,
                  MODEL_MAX_BLOCK_SIZE);
        return -1;
    }
    if (n_blocks < 1) {
        snprintf (err, err_size, "a KV cache needs at least one block");
        return -1;
    }
    size_t elements = s_cache_elements (self, n_blocks, block_size);
    if (elements == 0) {
        snprintf (err, err_size, "a KV cache of %u blocks of %u positions is too large "
                  "(%llu bytes a block)", n_blocks, block_size,
                  (unsigned long long) model_cache_block_bytes (self, block_size));
        return -1;
    }
    //  The cache made before goes first, so that its memory can be taken again.
    free (self->key_cache);
    free (self->value_cache);
    self->key_cache = calloc (elements, sizeof (uint16_t));
    self->value_cache = calloc (elements, sizeof (uint16_t));
    if (!self->key_cache || !self->value_cache) {
        free (self->key_cache);
        free (self->value_cache);
        self->key_cache = NULL;
        self->value_cache = NULL;
        self->n_blocks = 0;
        self->block_size = 0;
        snprintf (err, err_size, "out of memory for the KV cache: %llu bytes (%u blocks of "
                  "%u positions, %llu bytes each)",
                  (unsigned long long) elements * 2 * sizeof (uint16_t), n_blocks,
                  block_size, (unsigned long long) model_cache_block_bytes (self, block_size));
        return -1;
    }
    self->n_blocks = n_blocks;
    self->block_size = block_size;
    return 0;
}

uint32_t
model_cache_n_blocks (const model_t *self)
{
    return self->n_blocks;
}

uint32_t
model_cache_block_size (const model_t *self)
{
    return self->block_size;
}

//  Where row `row` of block `block` of layer `layer` starts in the key (or value) cache.
static size_t
s_cache_row (const model_t *self, uint32_t layer, uint32_t block, uint32_t row)
{
    return (((size_t) layer * self->n_blocks + block) * self->block_size + row) * self->kv_dim;
}

int
model_copy_blocks (model_t *self, const uint32_t *src, const uint32_t *dst, uint32_t n,
                   char *err, size_t err_size)
{
    if (!self->key_cache) {
        snprintf (err, err_size, "no KV cache: call model_cache_new first");
        return -1;
    }
    if (n > 0 && (!src || !dst)) {
        snprintf (err, err_size, "no block ids to copy");
        return -1;
    }
    for (uint32_t i = 0; i < n; i++)
        if (src [i] >= self->n_blocks || dst [i] >= self->n_blocks) {
            snprintf (err, err_size, "copy %u: block %u to block %u: a block id is out of "
                      "range (the cache has %u blocks)", i, src [i], dst [i], self->n_blocks);
            return -1;
        }
    size_t block_bytes = (size_t) self->block_size * self->kv_dim * sizeof (uint16_t);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t l = 0; l < self->config.n_layers; l++) {
            size_t from = s_cache_row (self, l, src [i], 0);
            size_t to = s_cache_row (self, l, dst [i], 0);
            memmove (self->key_cache + to, self->key_cache + from, block_bytes);
            memmove (self->value_cache + to, self->value_cache + from, block_bytes);
        }
    return 0;
}

//  --- Threads ------------------------------------------------------------------------------

int
model_set_threads (model_t *self, uint32_t n_threads, char *err, size_t err_size)
{
    if (n_threads < 1 || n_threads > MODEL_MAX_THREADS) {
        snprintf (err, err_size, "%u threads: give 1 to %d", n_threads, MODEL_MAX_THREADS);
        return -1;
    }
    //  Scratch memory for each thread; the tiles only when F16 or BF16 weights may go to
    //  OpenBLAS.
    size_t head_dim = self->config.head_dim;
    bool tiles = s_model_uses_form (self, FORM_F16) || s_model_uses_form (self, FORM_BF16);
    size_t tile_floats = tiles? (size_t) MODEL_TILE_ROWS * self->widest: 0;
    size_t group = self->config.n_heads / self->config.n_kv_heads;
    float *thread_query = calloc (n_threads * group * head_dim, sizeof (float));
    uint16_t *thread_sum = calloc (n_threads * group * head_dim, sizeof (uint16_t));
    float *thread_scores = calloc ((size_t) n_threads * 2 * group * self->n_ctx,
                                   sizeof (float));
    float *thread_exps = calloc (n_threads * group, sizeof (float));
    float *thread_tile = tiles? calloc (n_threads * tile_floats, sizeof (float)): NULL;
    kernels_pool_t *pool = n_threads > 1? kernels_pool_new (n_threads): NULL;
    if (!thread_query || !thread_sum || !thread_scores || !thread_exps
    ||  (tiles && !thread_tile) || (n_threads > 1 && !pool)) {
        snprintf (err, err_size, "cannot start %u threads", n_threads);
        free (thread_query);
        free (thread_sum);
        free (thread_scores);
        free (thread_exps);
        free (thread_tile);
        kernels_pool_destroy (&pool);
        return -1;
    }
    kernels_pool_destroy (&self->pool);
    free (self->thread_query);
    free (self->thread_sum);
    free (self->thread_scores);
    free (self->thread_exps);
    free (self->thread_tile);
    self->pool = pool;
    self->thread_query = thread_query;
    self->thread_sum = thread_sum;
    self->thread_scores = thread_scores;
    self->thread_exps = thread_exps;
    self->thread_tile = thread_tile;
    self->n_threads = n_threads;
    return 0;
}

uint32_t
model_n_threads (const model_t *self)
{
    return self->n_threads;
}

//  --- Products ------------------------------------------------------------------------------
//
//  A product: out[m][0 .. n_out-1] = W input[m] (+ bias) for the n_rows activation rows,
//  W a [n_in, n_out] tensor (row i of W is its i-th run of n_in elements). Products
//  that share an input (Q, K, V; gate, up) run as one job: the input is prepared once
//  per form, then every product's weight rows are cut into tasks for the pool.

typedef struct {
    const gguf_tensor_t *weight;
    float *out;                         //  [n_rows][n_out]
    const float *bias;                  //  [n_out], or NULL
} product_t;

typedef struct {
    model_t *model;
    const float *input;                 //  [n_rows][n_in]
    uint32_t n_in;
    uint32_t n_rows;                    //  activation rows (tokens)
    bool forms [FORM_COUNT];            //  the forms this job needs
    uint32_t n_products;
    product_t products [MODEL_MAX_TARGETS];
    bool blas [MODEL_MAX_TARGETS];      //  the product goes to OpenBLAS
    uint32_t rows_per_task [MODEL_MAX_TARGETS];
    uint32_t first_task [MODEL_MAX_TARGETS + 1];
} product_job_t;

//  Task: prepare activation row `task` in every form the job needs.
static void
s_prepare_task (void *arg, uint32_t task, uint32_t thread)
{
    (void) thread;
    product_job_t *job = arg;
    const float *row = job->input + (size_t) task * job->n_in;
    for (int form = FORM_F16; form < FORM_COUNT; form++)
        if (job->forms [form]) {
            ggml_type_t type = s_form_type ((input_form_t) form);
            size_t row_bytes = kernels_activation_row_bytes (type, job->n_in);
            kernels_prepare_activation (type, row, job->model->prepared [form] + task * row_bytes,
                                        job->n_in);
        }
}

//  Task: a run of weight rows of one product, against every activation row.
static void
s_product_task (void *arg, uint32_t task, uint32_t thread)
{
    (void) thread;
    product_job_t *job = arg;
    uint32_t p = 0;
    while (task >= job->first_task [p + 1])
        p++;
    const product_t *product = &job->products [p];
    const gguf_tensor_t *weight = product->weight;
    size_t n_out = (size_t) weight->ne [1];
    size_t first_row = (size_t) (task - job->first_task [p]) * job->rows_per_task [p];
    size_t n_rows = n_out - first_row < job->rows_per_task [p]? n_out - first_row
                                                              : job->rows_per_task [p];
    size_t row_bytes = ggml_row_bytes (weight->type, job->n_in);
    const uint8_t *first = (const uint8_t *) weight->data + first_row * row_bytes;
    if (job->blas [p]) {
        //  OpenBLAS multiplies floats: F16 and BF16 rows are converted first (exactly),
        //  and their input is the prepared one (rounded to F16 or BF16, as floats).
        const float *rows = (const float *) first;
        const float *input = job->input;
        if (weight->type != GGML_TYPE_F32) {
            float *tile = job->model->thread_tile + (size_t) thread * MODEL_TILE_ROWS
                                                  * job->model->widest;
            for (size_t r = 0; r < n_rows; r++)
                kernels_row_to_f32 (weight->type, first + r * row_bytes, tile + r * job->n_in,
                                    job->n_in);
            rows = tile;
            input = (const float *) job->model->prepared [s_form (weight->type)];
        }
        kernels_sgemm (job->n_rows, n_rows, job->n_in, input, job->n_in, rows, job->n_in,
                       product->out + first_row, n_out);
        return;
    }
    input_form_t form = s_form (weight->type);
    const void *input = form == FORM_F32? (const void *) job->input
                                        : (const void *) job->model->prepared [form];
    size_t input_stride = kernels_activation_row_bytes (weight->type, job->n_in);
    kernels_matmul (weight->type, job->n_in, first, row_bytes, n_rows, input, input_stride,
                    job->n_rows, product->out + first_row, n_out);
}

//  Run n_products products of the same input rows.
static void
s_products (model_t *self, const float *input, uint32_t n_in, uint32_t n_rows,
            const product_t *products, uint32_t n_products)
{
    product_job_t job;
    memset (&job, 0, sizeof job);
    job.model = self;
    job.input = input;
    job.n_in = n_in;
    job.n_rows = n_rows;
    job.n_products = n_products;
    uint32_t n_threads = self->n_threads;
    uint32_t n_tasks = 0;
    for (uint32_t p = 0; p < n_products; p++) {
        job.products [p] = products [p];
        const gguf_tensor_t *weight = products [p].weight;
        uint32_t n_out = (uint32_t) weight->ne [1];
        //  Float weights go to OpenBLAS for enough rows (F16 and BF16 converted a tile of
        //  rows at a time).
        bool float_type = weight->type == GGML_TYPE_F32
                       || ((weight->type == GGML_TYPE_F16 || weight->type == GGML_TYPE_BF16)
                           && self->thread_tile);
        job.blas [p] = float_type && n_rows >= MODEL_BLAS_MIN_ROWS && kernels_blas_available ();
        job.forms [s_form (weight->type)] = true;
        //  Rows per task: with one thread, all; else about four tasks per thread (one
        //  per thread for OpenBLAS), in multiples of 16 rows; at most a tile for
        //  converted rows.
        uint32_t per_task = n_out;
        if (n_threads > 1) {
            uint32_t pieces = job.blas [p]? n_threads: 4 * n_threads;
            per_task = (n_out + pieces - 1) / pieces;
            per_task = (per_task + 15) / 16 * 16;
        }
        if (job.blas [p] && weight->type != GGML_TYPE_F32 && per_task > MODEL_TILE_ROWS)
            per_task = MODEL_TILE_ROWS;
        job.rows_per_task [p] = per_task;
        job.first_task [p] = n_tasks;
        n_tasks += (n_out + per_task - 1) / per_task;
    }
    job.first_task [n_products] = n_tasks;
    job.forms [FORM_F32] = false;
    kernels_pool_run (self->pool, s_prepare_task, &job, n_rows);
    kernels_pool_run (self->pool, s_product_task, &job, n_tasks);
    for (uint32_t p = 0; p < n_products; p++) {
        const float *bias = products [p].bias;
        if (!bias)
            continue;
        uint32_t n_out = (uint32_t) products [p].weight->ne [1];
        for (uint32_t m = 0; m < n_rows; m++)
            for (uint32_t i = 0; i < n_out; i++)
                products [p].out [(size_t) m * n_out + i] += bias [i];
    }
}

//  One product of its own.
static void
s_product (model_t *self, float *out, const float *input, uint32_t n_in, uint32_t n_rows,
           const gguf_tensor_t *weight)
{
    product_t product = { weight, out, NULL };
    s_products (self, input, n_in, n_rows, &product, 1);
}

//  --- The math ----------------------------------------------------------------------------

//  out = x / rms(x) * weight, over n elements. out may be x. The squares are summed in
//  double, as ggml does.
static void
s_rmsnorm (float *out, const float *x, const float *weight, uint32_t n, float eps)
{
    double sum_of_squares = 0;
    for (uint32_t i = 0; i < n; i++)
        sum_of_squares += (double) (x [i] * x [i]);
    float mean = (float) (sum_of_squares / n);
    float scale = 1.0f / sqrtf (mean + eps);
    for (uint32_t i = 0; i < n; i++)
        out [i] = (x [i] * scale) * weight [i];
}

//  The angles of position pos, as ggml's rope cache computes them: pair i turns by
//  freq_scale * (theta_i / factor_i), theta_0 = pos and theta_{i+1} = theta_i *
//  theta_scale (stepped, not recomputed, as ggml does).
static void
s_rope_angles (const model_t *self, uint32_t pos, float *cos_out, float *sin_out)
{
    float theta = (float) pos;
    for (uint32_t i = 0; i < self->rope_dims / 2; i++) {
        float factor = self->rope_factors? self->rope_factors [i]: 1.0f;
        float angle = self->rope_freq_scale * (theta / factor);
        cos_out [i] = cosf (angle);
        sin_out [i] = sinf (angle);
        theta *= self->rope_theta_scale;
    }
}

//  Rotate the first rope_dims values of each of n_heads heads: pairs (2i, 2i + 1), or
//  (i, i + rope_dims / 2) in neox style, by angle i.
static void
s_rope (const model_t *self, float *vector, uint32_t n_heads, const float *cos_t,
        const float *sin_t)
{
    uint32_t head_dim = self->config.head_dim;
    uint32_t half = self->rope_dims / 2;
    for (uint32_t h = 0; h < n_heads; h++) {
        float *head = vector + (size_t) h * head_dim;
        for (uint32_t i = 0; i < half; i++) {
            uint32_t first = self->rope_neox? i: 2 * i;
            uint32_t second = self->rope_neox? i + half: 2 * i + 1;
            float x0 = head [first];
            float x1 = head [second];
            head [first] = x0 * cos_t [i] - x1 * sin_t [i];
            head [second] = x0 * sin_t [i] + x1 * cos_t [i];
        }
    }
}

static float
s_silu (float x)
{
    return x / (1.0f + expf (-x));
}

//  How many blocks from entry b of a block table are neighbours in the pool (block_table
//  [b] + 1, + 2, ...), up to entry `end`: one run of rows of the cache, read in one go.
static uint32_t
s_block_run (const uint32_t *block_table, uint32_t b, uint32_t end)
{
    uint32_t n = 1;
    while (b + n < end && block_table [b + n] == block_table [b] + n)
        n++;
    return n;
}

//  Attention at position pos over positions 0..pos of a sequence in this layer, read
//  through its block table, for n_group heads from `head` on that share one KV head:
//  their queries are in query_f32 and their head_dim results go to out (both a head
//  apart). `thread` picks the scratch memory.
//
//  For each head this is softmax(q . k_t / sqrt(head_dim)) weighted sum of v_t, computed
//  the way llama.cpp's CPU flash attention (its default) computes it, since greedy
//  tokens can hinge on the last bits: the query is rounded to F16 for the dot products
//  with the F16 keys, and one pass over the positions keeps a running maximum and a
//  running sum of exponentials (online softmax), with the weighted sum of values held
//  in F16 (ggml_vec_mad_f16: fused multiply-add, then rounding) and scaled down
//  whenever the maximum grows. One division by the sum ends it.
//
//  Neither the blocks nor the group change a bit: each dot product is the same
//  whichever product computes it and whatever other queries it computes beside (the
//  group's keys are read once for all its heads), each head's weighted sum takes the
//  same steps whatever other sums share its values (read and converted once for the
//  group: kernels_f16_weighted_sums), and the weighted sums, kept in F16, go on from
//  one run of blocks to the next exactly as in one run.
static void
s_attention_heads (model_t *self, uint32_t layer, const uint32_t *block_table, uint32_t pos,
                   uint32_t head, uint32_t n_group, const float *query_f32, float *out,
                   uint32_t thread)
{
    const model_config_t *config = &self->config;
    uint32_t head_dim = config->head_dim;
    uint32_t heads_per_kv_head = config->n_heads / config->n_kv_heads;
    float scale = 1.0f / sqrtf ((float) head_dim);
    size_t kv_offset = (size_t) (head / heads_per_kv_head) * head_dim;
    size_t kv_stride_bytes = self->kv_dim * sizeof (uint16_t);
    uint32_t block_size = self->block_size;
    uint32_t n_positions = pos + 1;
    uint32_t n_blocks = (n_positions + block_size - 1) / block_size;

    //  Scratch: the queries rounded to F16, each head's scores (then scalings), each
    //  head's weights and each head's running sum.
    float *query = self->thread_query + (size_t) thread * heads_per_kv_head * head_dim;
    uint16_t *weighted_sums = self->thread_sum
                            + (size_t) thread * heads_per_kv_head * head_dim;
    float *scores = self->thread_scores
                  + (size_t) thread * 2 * heads_per_kv_head * self->n_ctx;
    float *weights = scores + (size_t) heads_per_kv_head * self->n_ctx;
    float *sum_of_exps = self->thread_exps + (size_t) thread * heads_per_kv_head;
    for (uint32_t g = 0; g < n_group; g++)
        kernels_prepare_activation (GGML_TYPE_F16, query_f32 + (size_t) g * head_dim,
                                    query + (size_t) g * head_dim, head_dim);
    //  The dot products first, a run of blocks' keys against every query of the group in
    //  one product (the same sums, one by one, as kernels_dot would give).
    for (uint32_t b = 0; b < n_blocks; ) {
        uint32_t run = s_block_run (block_table, b, n_blocks);
        uint32_t first = b * block_size;
        uint32_t n = n_positions - first < run * block_size? n_positions - first
                                                           : run * block_size;
        const uint16_t *keys = self->key_cache + kv_offset
                             + s_cache_row (self, layer, block_table [b], 0);
        kernels_matmul (GGML_TYPE_F16, head_dim, keys, kv_stride_bytes, n,
                        query, head_dim * sizeof (float), n_group, scores + first, self->n_ctx);
        b += run;
    }
    //  The online softmax of each head: for each position, how much to scale what was
    //  summed before (into head_scores, no longer needed) and this value's weight.
    for (uint32_t g = 0; g < n_group; g++) {
        float *head_scores = scores + (size_t) g * self->n_ctx;
        float *head_weights = weights + (size_t) g * self->n_ctx;
        float max_score = -INFINITY;
        float sum = 0;
        for (uint32_t t = 0; t < n_positions; t++) {
            float score = head_scores [t] * scale;
            float old_scale = 1.0f;             //  for what is summed so far
            float weight = 1.0f;                //  for this value: exp(score - max_score)
            if (score > max_score) {
                old_scale = expf (max_score - score);
                max_score = score;
            }
            else
                weight = expf (score - max_score);
            head_scores [t] = old_scale;
            head_weights [t] = weight;
            sum = sum * old_scale + weight;
        }
        sum_of_exps [g] = sum;
    }
    //  The weighted sums of values in F16, every head of the group together (each value
    //  row read once for all of them), run by run in position order: scaled when the
    //  maximum grew, then the value times its weight added, position by position.
    memset (weighted_sums, 0, (size_t) n_group * head_dim * sizeof (uint16_t));
    for (uint32_t b = 0; b < n_blocks; ) {
        uint32_t run = s_block_run (block_table, b, n_blocks);
        uint32_t first = b * block_size;
        uint32_t n = n_positions - first < run * block_size? n_positions - first
                                                           : run * block_size;
        const uint16_t *values = self->value_cache + kv_offset
                               + s_cache_row (self, layer, block_table [b], 0);
        kernels_f16_weighted_sums (weighted_sums, n_group, values, self->kv_dim,
                                   scores + first, weights + first, self->n_ctx, n, head_dim);
        b += run;
    }
    for (uint32_t g = 0; g < n_group; g++) {
        const uint16_t *head_sum = weighted_sums + (size_t) g * head_dim;
        float *head_out = out + (size_t) g * head_dim;
        for (uint32_t i = 0; i < head_dim; i++)
            head_out [i] = quant_f16_to_f32 (head_sum [i]) * (1.0f / sum_of_exps [g]);
    }
}

//  The rows of one pass: row m is token token[m] of sequence seq[m] (an index into
//  seqs), at position pos[m]. The rows whose logits are wanted are logit_row[0 ..
//  n_logits - 1], in order; their logits go to the call's rows first_logits onwards.
typedef struct {
    const model_seq_t *seqs;
    uint32_t n_rows;
    uint32_t seq [MODEL_BATCH];
    uint32_t pos [MODEL_BATCH];
    uint32_t token [MODEL_BATCH];
    uint32_t n_logits;
    uint32_t logit_row [MODEL_BATCH];
    uint32_t first_logits;
} pass_t;

typedef struct {
    model_t *model;
    const pass_t *pass;
    uint32_t layer;
    uint32_t n_group;                   //  heads per task, sharing a KV head
} attention_job_t;

//  Task: heads (task % groups) * n_group onwards of row task / groups, groups = n_heads /
//  n_group; out into xb [row][q_dim].
static void
s_attention_task (void *arg, uint32_t task, uint32_t thread)
{
    attention_job_t *job = arg;
    model_t *self = job->model;
    const pass_t *pass = job->pass;
    uint32_t n_groups = self->config.n_heads / job->n_group;
    uint32_t row = task / n_groups, head = task % n_groups * job->n_group;
    const model_seq_t *seq = &pass->seqs [pass->seq [row]];
    size_t offset = (size_t) row * self->q_dim + (size_t) head * self->config.head_dim;
    s_attention_heads (self, job->layer, seq->block_table, pass->pos [row], head, job->n_group,
                       self->q + offset, self->xb + offset, thread);
}

//  Heads per attention task: all the heads that share a KV head (their keys and values
//  are then read once), unless that leaves too few tasks to keep the threads busy (a
//  few rows of a model with few KV heads); then fewer, a divisor of the heads per KV
//  head.
static uint32_t
s_attention_group (const model_t *self, uint32_t n_rows)
{
    uint32_t heads_per_kv_head = self->config.n_heads / self->config.n_kv_heads;
    uint32_t group = heads_per_kv_head;
    for (; group > 1; group--)
        if (heads_per_kv_head % group == 0
        &&  (self->n_threads == 1
             || (uint64_t) n_rows * (self->config.n_heads / group) >= 4 * self->n_threads))
            break;
    return group;
}

//  The feed-forward's SwiGLU, hb[i] = silu(hb[i]) * hb2[i] over the n_rows * ffn_dim
//  values of a pass, cut into tasks of MODEL_SWIGLU_CHUNK values: each value computed
//  alone, so the cut changes nothing, and the threads share what would otherwise run
//  on one (an expf per value) while the others wait.
typedef struct {
    float *hb;
    const float *hb2;
    size_t n;
} swiglu_job_t;

//  Task: values task * MODEL_SWIGLU_CHUNK onwards.
static void
s_swiglu_task (void *arg, uint32_t task, uint32_t thread)
{
    (void) thread;
    swiglu_job_t *job = arg;
    size_t first = (size_t) task * MODEL_SWIGLU_CHUNK;
    size_t end = job->n - first < MODEL_SWIGLU_CHUNK? job->n: first + MODEL_SWIGLU_CHUNK;
    for (size_t i = first; i < end; i++)
        job->hb [i] = s_silu (job->hb [i]) * job->hb2 [i];
}

//  Run the rows of a pass through every layer, writing their keys and values into their
//  sequences' blocks; then the logits of the rows that want them.
static void
s_forward_pass (model_t *self, const pass_t *pass)
{
    const model_config_t *config = &self->config;
    uint32_t dim = config->dim, q_dim = self->q_dim, kv_dim = self->kv_dim;
    uint32_t ffn_dim = config->ffn_dim, half = self->rope_dims / 2;
    uint32_t n = pass->n_rows, block_size = self->block_size;

    //  Token embeddings: row `token` of token_embd, in whatever type it is stored; each
    //  row's RoPE angles for its position.
    const gguf_tensor_t *embedding = self->token_embd;
    size_t embedding_bytes = ggml_row_bytes (embedding->type, dim);
    for (uint32_t m = 0; m < n; m++) {
        const uint8_t *row = (const uint8_t *) embedding->data
                           + pass->token [m] * embedding_bytes;
        quant_dequantize_row (embedding->type, row, self->x + (size_t) m * dim, dim);
        s_rope_angles (self, pass->pos [m], self->rope_cos + (size_t) m * half,
                       self->rope_sin + (size_t) m * half);
    }

    for (uint32_t l = 0; l < config->n_layers; l++) {
        const layer_weights_t *layer = &self->layers [l];

        //  Attention block.
        for (uint32_t m = 0; m < n; m++)
            s_rmsnorm (self->xb + (size_t) m * dim, self->x + (size_t) m * dim,
                       layer->attn_norm, dim, config->rms_eps);
        product_t qkv [3] = {
            { layer->attn_q, self->q, layer->attn_q_bias },
            { layer->attn_k, self->k, layer->attn_k_bias },
            { layer->attn_v, self->v, layer->attn_v_bias }
        };
        s_products (self, self->xb, dim, n, qkv, 3);
        for (uint32_t m = 0; m < n; m++) {
            const float *cos_t = self->rope_cos + (size_t) m * half;
            const float *sin_t = self->rope_sin + (size_t) m * half;
            s_rope (self, self->q + (size_t) m * q_dim, config->n_heads, cos_t, sin_t);
            s_rope (self, self->k + (size_t) m * kv_dim, config->n_kv_heads, cos_t, sin_t);
            //  The key and value of position pos: row pos % block_size of its block.
            const uint32_t *block_table = pass->seqs [pass->seq [m]].block_table;
            uint32_t pos = pass->pos [m];
            size_t row = s_cache_row (self, l, block_table [pos / block_size], pos % block_size);
            kernels_f32_to_f16 (self->k + (size_t) m * kv_dim, self->key_cache + row, kv_dim);
            kernels_f32_to_f16 (self->v + (size_t) m * kv_dim, self->value_cache + row, kv_dim);
        }
        attention_job_t attention = { self, pass, l, s_attention_group (self, n) };
        kernels_pool_run (self->pool, s_attention_task, &attention,
                          n * (config->n_heads / attention.n_group));
        s_product (self, self->xb2, self->xb, q_dim, n, layer->attn_output);
        for (size_t i = 0; i < (size_t) n * dim; i++)
            self->x [i] += self->xb2 [i];

        //  Feed-forward block: SwiGLU.
        for (uint32_t m = 0; m < n; m++)
            s_rmsnorm (self->xb + (size_t) m * dim, self->x + (size_t) m * dim,
                       layer->ffn_norm, dim, config->rms_eps);
        product_t gate_up [2] = {
            { layer->ffn_gate, self->hb, NULL },
            { layer->ffn_up, self->hb2, NULL }
        };
        s_products (self, self->xb, dim, n, gate_up, 2);
        swiglu_job_t swiglu = { self->hb, self->hb2, (size_t) n * ffn_dim };
        uint32_t n_swiglu = (uint32_t) ((swiglu.n + MODEL_SWIGLU_CHUNK - 1) / MODEL_SWIGLU_CHUNK);
        kernels_pool_run (self->pool, s_swiglu_task, &swiglu, n_swiglu);
        s_product (self, self->xb2, self->hb, ffn_dim, n, layer->ffn_down);
        for (size_t i = 0; i < (size_t) n * dim; i++)
            self->x [i] += self->xb2 [i];
    }

    //  The logits: the wanted rows normed side by side into xb, then one product.
    if (pass->n_logits > 0) {
        for (uint32_t i = 0; i < pass->n_logits; i++)
            s_rmsnorm (self->xb + (size_t) i * dim, self->x + (size_t) pass->logit_row [i] * dim,
                       self->output_norm, dim, config->rms_eps);
        float *logits = self->logits + (size_t) pass->first_logits * config->n_vocab;
        s_product (self, logits, self->xb, dim, pass->n_logits, self->output);
    }
}

//  Check a call before anything runs: the cache, every sequence's tokens, positions and
//  block table. Counts the sequences that want logits. Returns 0 or -1 with err filled.
static int
s_check_seqs (const model_t *self, const model_seq_t *seqs, uint32_t n_seqs,
              uint32_t *n_wanted, char *err, size_t err_size)
{
    if (!self->key_cache) {
        snprintf (err, err_size, "no KV cache: call model_cache_new first");
        return -1;
    }
    if (!seqs || n_seqs == 0) {
        snprintf (err, err_size, "no sequences to run");
        return -1;
    }
    *n_wanted = 0;
    for (uint32_t s = 0; s < n_seqs; s++) {
        const model_seq_t *seq = &seqs [s];
        if (!seq->tokens || seq->n_tokens == 0) {
            snprintf (err, err_size, "sequence %u has no tokens to run", s);
            return -1;
        }
        uint64_t end = (uint64_t) seq->pos + seq->n_tokens;        //  one past the last
        if (end > self->n_ctx) {
            snprintf (err, err_size, "sequence %u: positions %u..%llu are past the context "
                      "length %u", s, seq->pos, (unsigned long long) end - 1, self->n_ctx);
            return -1;
        }
        for (uint32_t i = 0; i < seq->n_tokens; i++)
            if (seq->tokens [i] >= self->config.n_vocab) {
                snprintf (err, err_size, "sequence %u: token %u (at position %llu) is not "
                          "below the vocabulary size %u", s, seq->tokens [i],
                          (unsigned long long) seq->pos + i, self->config.n_vocab);
                return -1;
            }
        uint64_t n_needed = (end + self->block_size - 1) / self->block_size;
        if (!seq->block_table || seq->n_table < n_needed) {
            snprintf (err, err_size, "sequence %u: positions 0..%llu need %llu blocks of %u "
                      "positions, its block table has %u", s, (unsigned long long) end - 1,
                      (unsigned long long) n_needed, self->block_size,
                      seq->block_table? seq->n_table: 0);
            return -1;
        }
        for (uint64_t b = 0; b < n_needed; b++)
            if (seq->block_table [b] >= self->n_blocks) {
                snprintf (err, err_size, "sequence %u: block %u (entry %llu of its table) is "
                          "out of range (the KV cache has %u blocks)", s,
                          seq->block_table [b], (unsigned long long) b, self->n_blocks);
                return -1;
            }
        if (seq->want_logits)
            (*n_wanted)++;
    }
    return 0;
}

//  Room for n_rows rows of logits. Returns 0 or -1 with err filled.
static int
s_reserve_logits (model_t *self, uint32_t n_rows, char *err, size_t err_size)
{
    if (n_rows <= self->logits_rows)
        return 0;
    size_t n_vocab = self->config.n_vocab;
    if (n_rows > SIZE_MAX / sizeof (float) / n_vocab) {
        snprintf (err, err_size, "the logits of %u sequences are too large", n_rows);
        return -1;
    }
    float *logits = realloc (self->logits, (size_t) n_rows * n_vocab * sizeof (float));
    if (!logits) {
        snprintf (err, err_size, "out of memory for the logits of %u sequences (%zu bytes)",
                  n_rows, (size_t) n_rows * n_vocab * sizeof (float));
        return -1;
    }
    self->logits = logits;
    self->logits_rows = n_rows;
    return 0;
}

const float *
model_forward_seqs (model_t *self, const model_seq_t *seqs, uint32_t n_seqs,
                    char *err, size_t err_size)
{
    uint32_t n_wanted = 0;
    if (s_check_seqs (self, seqs, n_seqs, &n_wanted, err, err_size) != 0
    ||  s_reserve_logits (self, n_wanted, err, err_size) != 0)
        return NULL;
    //  Lay the rows out, sequence after sequence, up to `batch` rows a pass.
    pass_t pass;
    pass.seqs = seqs;
    pass.first_logits = 0;
    uint32_t s = 0, done = 0;           //  the next row: token `done` of sequence s
    while (s < n_seqs) {
        pass.n_rows = 0;
        pass.n_logits = 0;
        while (s < n_seqs && pass.n_rows < self->batch) {
            const model_seq_t *seq = &seqs [s];
            uint32_t m = pass.n_rows++;
            pass.seq [m] = s;
            pass.pos [m] = seq->pos + done;
            pass.token [m] = seq->tokens [done];
            if (++done == seq->n_tokens) {
                if (seq->want_logits)
                    pass.logit_row [pass.n_logits++] = m;
                s++;
                done = 0;
            }
        }
        s_forward_pass (self, &pass);
        pass.first_logits += pass.n_logits;
    }
    return self->logits;
}
