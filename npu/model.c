/*  model — a llama-family model loaded from a GGUF file, and its forward pass.
    See model.h.

    Loading checks everything the forward pass relies on: the architecture, the numbers
    in the metadata (that they are present, non-zero and agree with each other), and for
    every tensor its presence, its type, its exact shape and its alignment. After that
    the forward pass indexes the weights without further checks.

    The math follows llama.cpp (CPU, default settings) where it changes the result:
    activations are prepared for each weight type as llama.cpp does (npu/kernels), the
    KV cache holds F16, attention is computed the way its flash attention does it (see
    s_attention_head), RoPE is ggml's with the angle stepped by theta_scale =
    base^(-2/n_dims) and divided by the frequency factors when there are any, and RMSNorm
    sums squares in double as ggml does. With this, every greedy token of
    ../shared/reference/greedy.json matches llama.cpp's, and so does every reply in
    toy-chat.json.

    A prompt runs through the layers up to MODEL_BATCH tokens at a time: each product
    multiplies the weights with all the tokens' rows at once (kernels_matmul; or, for
    F32, F16 and BF16 weights and at least MODEL_BLAS_MIN_ROWS tokens, OpenBLAS's sgemm,
    which on this machine kind beats our kernels from about 16 rows), and attention runs
    for every (token, head) pair. Each token's numbers are the same as when it runs alone
    (within float rounding where OpenBLAS orders the sums its own way).

    Threads: every product is cut into tasks of weight rows, attention into (token, head)
    tasks, and the model's kernels_pool runs them; the serial parts between (norms, RoPE,
    residuals) are small.

    Layout of the KV cache: for each layer, for each slot, n_ctx rows of
    n_kv_heads * head_dim F16 values (one row per position).
*/
#include "model.h"
#include "kernels.h"
#include "quant.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Prompt tokens that go through the layers together, at most.
#define MODEL_BATCH 256
#define MODEL_MAX_THREADS 256
//  F32 products of at least this many activation rows go to OpenBLAS when it is there.
#define MODEL_BLAS_MIN_ROWS 16
//  Products sharing one input, at most (Q, K and V).
#define MODEL_MAX_TARGETS 3
//  F16 and BF16 weight rows converted to F32 at a time, for OpenBLAS.
#define MODEL_TILE_ROWS 64

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
    uint32_t n_slots;
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

    uint16_t *key_cache;                //  [n_layers][n_slots][n_ctx][kv_dim], F16
    uint16_t *value_cache;              //  same layout

    //  Threads.
    uint32_t n_threads;
    kernels_pool_t *pool;               //  NULL for one thread
    float *thread_query;                //  [n_threads][head_dim]: a query rounded to F16
    uint16_t *thread_sum;               //  [n_threads][head_dim]: attention's running sum
    float *thread_scores;               //  [n_threads][2][n_ctx]: attention scores, then
                                        //  its scalings and weights per position
    float *thread_tile;                 //  [n_threads][MODEL_TILE_ROWS * widest]: weight
                                        //  rows as F32 for OpenBLAS (F16 and BF16 weights)

    //  Activations of up to `batch` tokens, one row per token.
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
    float *logits;                      //  [n_vocab]
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

//  Allocate the KV cache and the activations. Returns 0 or -1 with err filled.
static int
s_allocate (model_t *self, char *err, size_t err_size)
{
    const model_config_t *config = &self->config;
    //  Cache elements per K or V: n_layers * n_slots * n_ctx * kv_dim, checked for overflow.
    size_t cache_elements = 1;
    const uint64_t factors [4] = { config->n_layers, self->n_slots, self->n_ctx, self->kv_dim };
    for (int i = 0; i < 4; i++) {
        if (cache_elements > SIZE_MAX / sizeof (uint16_t) / factors [i]) {
            snprintf (err, err_size, "KV cache for %u slots of %u tokens is too large",
                      self->n_slots, self->n_ctx);
            return -1;
        }
        cache_elements *= factors [i];
    }
    self->key_cache = calloc (cache_elements, sizeof (uint16_t));
    self->value_cache = calloc (cache_elements, sizeof (uint16_t));

    self->batch = self->n_ctx < MODEL_BATCH? self->n_ctx: MODEL_BATCH;
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
    bool ok = self->key_cache && self->value_cache && self->x && self->xb && self->xb2
           && self->q && self->k && self->v && self->hb && self->hb2 && self->rope_cos
           && self->rope_sin && self->logits;
    for (int form = FORM_F16; form < FORM_COUNT && ok; form++)
        if (s_model_uses_form (self, (input_form_t) form)) {
            size_t row_bytes = kernels_activation_row_bytes (s_form_type ((input_form_t) form),
                                                             widest);
            self->prepared [form] = malloc (batch * row_bytes);
            ok = self->prepared [form] != NULL;
        }
    if (!ok) {
        snprintf (err, err_size, "out of memory for the KV cache (%zu bytes) and activations",
                  2 * cache_elements * sizeof (uint16_t));
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
model_new (const gguf_t *gguf, uint32_t n_slots, uint32_t n_ctx, char *err, size_t err_size)
{
    if (!gguf) {
        snprintf (err, err_size, "no GGUF file given");
        return NULL;
    }
    if (n_slots == 0) {
        snprintf (err, err_size, "a model needs at least one slot");
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
    self->n_slots = n_slots;
    self->n_threads = 1;
    if (s_read_config (self, err, err_size) != 0
    ||  s_read_rope_scaling (self, err, err_size) != 0
    ||  s_find_weights (self, err, err_size) != 0) {
        model_destroy (&self);
        return NULL;
    }
    self->n_ctx = n_ctx? n_ctx: self->config.n_ctx_train;
    if (s_allocate (self, err, err_size) != 0
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

uint32_t
model_n_slots (const model_t *self)
{
    return self->n_slots;
}

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
    float *thread_query = calloc (n_threads * head_dim, sizeof (float));
    uint16_t *thread_sum = calloc (n_threads * head_dim, sizeof (uint16_t));
    float *thread_scores = calloc ((size_t) n_threads * 2 * self->n_ctx, sizeof (float));
    float *thread_tile = tiles? calloc (n_threads * tile_floats, sizeof (float)): NULL;
    kernels_pool_t *pool = n_threads > 1? kernels_pool_new (n_threads): NULL;
    if (!thread_query || !thread_sum || !thread_scores || (tiles && !thread_tile)
    ||  (n_threads > 1 && !pool)) {
        snprintf (err, err_size, "cannot start %u threads", n_threads);
        free (thread_query);
        free (thread_sum);
        free (thread_scores);
        free (thread_tile);
        kernels_pool_destroy (&pool);
        return -1;
    }
    kernels_pool_destroy (&self->pool);
    free (self->thread_query);
    free (self->thread_sum);
    free (self->thread_scores);
    free (self->thread_tile);
    self->pool = pool;
    self->thread_query = thread_query;
    self->thread_sum = thread_sum;
    self->thread_scores = thread_scores;
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

//  Where the cache row of (layer, slot, pos) starts.
static size_t
s_cache_row (const model_t *self, uint32_t layer, uint32_t slot, uint32_t pos)
{
    return (((size_t) layer * self->n_slots + slot) * self->n_ctx + pos) * self->kv_dim;
}

//  Attention of one head's query at position pos over the slot's cache rows 0..pos of
//  this layer; the head_dim results go to out. `thread` picks the scratch memory.
//
//  This is softmax(q . k_t / sqrt(head_dim)) weighted sum of v_t, computed the way
//  llama.cpp's CPU flash attention (its default) computes it, since greedy tokens can
//  hinge on the last bits: the query is rounded to F16 for the dot products with the
//  F16 keys, and one pass over the positions keeps a running maximum and a running sum
//  of exponentials (online softmax), with the weighted sum of values held in F16
//  (ggml_vec_mad_f16: fused multiply-add, then rounding) and scaled down whenever the
//  maximum grows. One division by the sum ends it.
static void
s_attention_head (model_t *self, uint32_t layer, uint32_t slot, uint32_t pos, uint32_t head,
                  const float *query_f32, float *out, uint32_t thread)
{
    const model_config_t *config = &self->config;
    uint32_t head_dim = config->head_dim;
    uint32_t heads_per_kv_head = config->n_heads / config->n_kv_heads;
    float scale = 1.0f / sqrtf ((float) head_dim);
    size_t kv_offset = (size_t) (head / heads_per_kv_head) * head_dim;
    const uint16_t *keys = self->key_cache + s_cache_row (self, layer, slot, 0) + kv_offset;
    const uint16_t *values = self->value_cache + s_cache_row (self, layer, slot, 0) + kv_offset;

    float *query = self->thread_query + (size_t) thread * head_dim;
    uint16_t *weighted_sum = self->thread_sum + (size_t) thread * head_dim;
    float *scores = self->thread_scores + (size_t) thread * 2 * self->n_ctx;
    float *weights = scores + self->n_ctx;
    kernels_prepare_activation (GGML_TYPE_F16, query_f32, query, head_dim);
    //  The dot products first, all positions in one product (the same sums, one by one,
    //  as kernels_dot would give).
    kernels_matmul (GGML_TYPE_F16, head_dim, keys, self->kv_dim * sizeof (uint16_t), pos + 1,
                    query, 0, 1, scores, pos + 1);
    //  The online softmax: for each position, how much to scale what was summed before
    //  (into scores, no longer needed) and this value's weight.
    float max_score = -INFINITY;
    float sum_of_exps = 0;
    for (uint32_t t = 0; t <= pos; t++) {
        float score = scores [t] * scale;
        float old_scale = 1.0f;             //  for what is summed so far
        float weight = 1.0f;                //  for this value: exp(score - max_score)
        if (score > max_score) {
            old_scale = expf (max_score - score);
            max_score = score;
        }
        else
            weight = expf (score - max_score);
        scores [t] = old_scale;
        weights [t] = weight;
        sum_of_exps = sum_of_exps * old_scale + weight;
    }
    //  The weighted sum of values in F16: scaled when the maximum grew, then the value
    //  times its weight added, position by position.
    memset (weighted_sum, 0, head_dim * sizeof (uint16_t));
    kernels_f16_weighted_sum (weighted_sum, values, self->kv_dim, scores, weights, pos + 1,
                              head_dim);
    for (uint32_t i = 0; i < head_dim; i++)
        out [i] = quant_f16_to_f32 (weighted_sum [i]) * (1.0f / sum_of_exps);
}

typedef struct {
    model_t *model;
    uint32_t layer;
    uint32_t slot;
    uint32_t pos;                       //  of the first token
} attention_job_t;

//  Task: head (task % n_heads) of token (task / n_heads); out into xb [token][q_dim].
static void
s_attention_task (void *arg, uint32_t task, uint32_t thread)
{
    attention_job_t *job = arg;
    model_t *self = job->model;
    uint32_t n_heads = self->config.n_heads;
    uint32_t token = task / n_heads, head = task % n_heads;
    size_t offset = (size_t) token * self->q_dim + (size_t) head * self->config.head_dim;
    s_attention_head (self, job->layer, job->slot, job->pos + token, head, self->q + offset,
                      self->xb + offset, thread);
}

//  Run n tokens (n <= batch) at positions pos .. pos + n - 1 through every layer,
//  writing their keys and values into the cache. When with_logits, also compute the
//  logits of the last one.
static void
s_forward_batch (model_t *self, uint32_t slot, uint32_t pos, const uint32_t *tokens,
                 uint32_t n, bool with_logits)
{
    const model_config_t *config = &self->config;
    uint32_t dim = config->dim, q_dim = self->q_dim, kv_dim = self->kv_dim;
    uint32_t ffn_dim = config->ffn_dim, half = self->rope_dims / 2;

    //  Token embeddings: row `token` of token_embd, in whatever type it is stored.
    const gguf_tensor_t *embedding = self->token_embd;
    size_t embedding_bytes = ggml_row_bytes (embedding->type, dim);
    for (uint32_t m = 0; m < n; m++) {
        const uint8_t *row = (const uint8_t *) embedding->data + tokens [m] * embedding_bytes;
        quant_dequantize_row (embedding->type, row, self->x + (size_t) m * dim, dim);
    }
    for (uint32_t m = 0; m < n; m++)
        s_rope_angles (self, pos + m, self->rope_cos + (size_t) m * half,
                       self->rope_sin + (size_t) m * half);

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
            size_t row = s_cache_row (self, l, slot, pos + m);
            kernels_f32_to_f16 (self->k + (size_t) m * kv_dim, self->key_cache + row, kv_dim);
            kernels_f32_to_f16 (self->v + (size_t) m * kv_dim, self->value_cache + row, kv_dim);
        }
        attention_job_t attention = { self, l, slot, pos };
        kernels_pool_run (self->pool, s_attention_task, &attention, n * config->n_heads);
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
        for (size_t i = 0; i < (size_t) n * ffn_dim; i++)
            self->hb [i] = s_silu (self->hb [i]) * self->hb2 [i];
        s_product (self, self->xb2, self->hb, ffn_dim, n, layer->ffn_down);
        for (size_t i = 0; i < (size_t) n * dim; i++)
            self->x [i] += self->xb2 [i];
    }
    if (with_logits) {
        float *last = self->x + (size_t) (n - 1) * dim;
        s_rmsnorm (self->xb, last, self->output_norm, dim, config->rms_eps);
        s_product (self, self->logits, self->xb, dim, 1, self->output);
    }
}

const float *
model_forward (model_t *self, uint32_t slot, uint32_t pos,
               const uint32_t *tokens, uint32_t n_tokens, char *err, size_t err_size)
{
    if (slot >= self->n_slots) {
        snprintf (err, err_size, "slot %u is out of range (the model has %u slots)",
                  slot, self->n_slots);
        return NULL;
    }
    if (n_tokens == 0 || !tokens) {
        snprintf (err, err_size, "no tokens to run");
        return NULL;
    }
    if ((uint64_t) pos + n_tokens > self->n_ctx) {
        snprintf (err, err_size, "positions %u..%llu are past the context length %u",
                  pos, (unsigned long long) pos + n_tokens - 1, self->n_ctx);
        return NULL;
    }
    //  Check every token before touching the cache.
    for (uint32_t i = 0; i < n_tokens; i++)
        if (tokens [i] >= self->config.n_vocab) {
            snprintf (err, err_size, "token %u (at position %u) is not below the vocabulary "
                      "size %u", tokens [i], pos + i, self->config.n_vocab);
            return NULL;
        }
    for (uint32_t done = 0; done < n_tokens; done += self->batch) {
        uint32_t n = n_tokens - done < self->batch? n_tokens - done: self->batch;
        s_forward_batch (self, slot, pos + done, tokens + done, n, done + n == n_tokens);
    }
    return self->logits;
}
