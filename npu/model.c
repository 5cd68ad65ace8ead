/*  model — a llama-family model loaded from a GGUF file, and its plain forward pass.
    See model.h.

    Loading checks everything the forward pass relies on: the architecture, the numbers
    in the metadata (that they are present, non-zero and agree with each other), and for
    every tensor its presence, its type (F32 or F16) and its exact shape. After that the
    forward pass indexes the weights without further checks.

    The forward pass takes one token at a time, so a prompt run in one call gives exactly
    the same numbers as the same tokens run one call each. The math follows llama.cpp
    (CPU, default settings) where it changes the result: F16 weights are multiplied with
    the activation rounded to F16, the KV cache holds F16, attention is computed the way
    its flash attention does it (see s_attention), RoPE is ggml's "normal" mode with the
    angle stepped by theta_scale = base^(-2/n_dims), and dot products and sums of squares
    are accumulated in double (llama.cpp's SIMD sums come much closer to the exact sum
    than a single float accumulator). With this, every greedy token of stories260K in
    ../shared/reference/greedy.json matches llama.cpp's (its closest call is 0.0026
    apart in logprob), and so does every reply in toy-chat.json.

    Layout of the KV cache: for each layer, for each slot, n_ctx rows of
    n_kv_heads * head_dim F16 values (one row per position).
*/
#include "model.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  The weights of one transformer block.
typedef struct {
    const gguf_tensor_t *attn_norm;     //  [dim]
    const gguf_tensor_t *attn_q;        //  [dim, dim]
    const gguf_tensor_t *attn_k;        //  [dim, kv_dim]
    const gguf_tensor_t *attn_v;        //  [dim, kv_dim]
    const gguf_tensor_t *attn_output;   //  [dim, dim]
    const gguf_tensor_t *ffn_norm;      //  [dim]
    const gguf_tensor_t *ffn_gate;      //  [dim, ffn_dim]
    const gguf_tensor_t *ffn_up;        //  [dim, ffn_dim]
    const gguf_tensor_t *ffn_down;      //  [ffn_dim, dim]
} layer_weights_t;

struct _model_t {
    const gguf_t *gguf;                 //  borrowed: holds the weights
    model_config_t config;
    uint32_t rope_dims;                 //  how many leading dims of each head RoPE turns
    uint32_t kv_dim;                    //  n_kv_heads * head_dim
    uint32_t n_slots;
    uint32_t n_ctx;

    const gguf_tensor_t *token_embd;    //  [dim, n_vocab]
    const gguf_tensor_t *output_norm;   //  [dim]
    const gguf_tensor_t *output;        //  [dim, n_vocab], or token_embd when tied
    layer_weights_t *layers;

    uint16_t *key_cache;                //  [n_layers][n_slots][n_ctx][kv_dim], F16
    uint16_t *value_cache;              //  same layout

    //  Activations of the token being computed.
    float *x;                           //  residual stream [dim]
    float *xb;                          //  normed input / attention output [dim]
    float *xb2;                         //  projection output [dim]
    float *q;                           //  query [dim]
    float *k;                           //  key [kv_dim]
    float *v;                           //  value [kv_dim]
    uint16_t *weighted_sum_f16;         //  attention's running sum of values [head_dim]
    float *hb;                          //  feed-forward gate [ffn_dim]
    float *hb2;                         //  feed-forward up [ffn_dim]
    uint16_t *input_f16;                //  an activation rounded to F16 [max(dim, ffn_dim)]
    float *logits;                      //  [n_vocab]
};

//  --- F16 <-> F32 (IEEE half precision, round to nearest even) ---------------------------

static float
s_fp16_to_fp32 (uint16_t half)
{
    uint32_t sign = (uint32_t) (half & 0x8000) << 16;
    uint32_t exponent = (half >> 10) & 0x1F;
    uint32_t mantissa = half & 0x3FF;
    uint32_t bits;
    if (exponent == 0) {
        //  Zero or subnormal: mantissa * 2^-24, exact in float.
        float value = (float) mantissa * 5.9604644775390625e-8f;
        return sign? -value: value;
    }
    if (exponent == 31)
        bits = sign | 0x7F800000u | (mantissa << 13);           //  infinity or NaN
    else
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    float value;
    memcpy (&value, &bits, sizeof value);
    return value;
}

static uint16_t
s_fp32_to_fp16 (float value)
{
    uint32_t bits;
    memcpy (&bits, &value, sizeof bits);
    uint16_t sign = (uint16_t) ((bits >> 16) & 0x8000);
    uint32_t exponent = (bits >> 23) & 0xFF;
    uint32_t mantissa = bits & 0x7FFFFF;

    if (exponent == 0xFF) {
        if (mantissa == 0)
            return sign | 0x7C00;                               //  infinity
        return (uint16_t) (sign | 0x7E00 | (mantissa >> 13));   //  NaN stays NaN (quiet)
    }
    int32_t half_exponent = (int32_t) exponent - 127 + 15;
    if (half_exponent >= 31)
        return sign | 0x7C00;                                   //  too large: infinity
    if (half_exponent <= 0) {
        //  Subnormal half (or zero): the value in units of 2^-24.
        if (half_exponent < -10)
            return sign;                                        //  below half of 2^-24
        uint32_t full = mantissa | 0x800000;
        uint32_t shift = (uint32_t) (14 - half_exponent);       //  14 .. 24
        uint32_t result = full >> shift;
        uint32_t rest = full & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (result & 1)))
            result++;                                           //  may become the smallest normal
        return (uint16_t) (sign | result);
    }
    uint32_t result = ((uint32_t) half_exponent << 10) | (mantissa >> 13);
    uint32_t rest = mantissa & 0x1FFF;
    if (rest > 0x1000 || (rest == 0x1000 && (result & 1)))
        result++;                                               //  a carry may reach infinity
    return (uint16_t) (sign | result);
}

//  --- Loading -----------------------------------------------------------------------------

//  Look up a tensor, check its type and its shape [ne0] or [ne0, ne1].
static const gguf_tensor_t *
s_tensor (const gguf_t *gguf, const char *name, uint64_t ne0, uint64_t ne1,
          char *err, size_t err_size)
{
    const gguf_tensor_t *tensor = gguf_find_tensor (gguf, name);
    if (!tensor) {
        snprintf (err, err_size, "tensor %s is missing", name);
        return NULL;
    }
    if (tensor->type != GGML_TYPE_F32 && tensor->type != GGML_TYPE_F16) {
        snprintf (err, err_size, "tensor %s: type %s is not supported (only F32 and F16)",
                  name, ggml_type_name (tensor->type));
        return NULL;
    }
    if (tensor->ne [0] != ne0 || tensor->ne [1] != ne1
    ||  tensor->ne [2] != 1 || tensor->ne [3] != 1) {
        snprintf (err, err_size, "tensor %s has shape [%llu, %llu, %llu, %llu], "
                  "expected [%llu, %llu]", name,
                  (unsigned long long) tensor->ne [0], (unsigned long long) tensor->ne [1],
                  (unsigned long long) tensor->ne [2], (unsigned long long) tensor->ne [3],
                  (unsigned long long) ne0, (unsigned long long) ne1);
        return NULL;
    }
    //  The forward pass reads elements in place: they must be aligned for their type.
    size_t element_bytes = tensor->type == GGML_TYPE_F32? 4: 2;
    if ((uintptr_t) tensor->data % element_bytes != 0) {
        snprintf (err, err_size, "tensor %s: data is not aligned for %s", name,
                  ggml_type_name (tensor->type));
        return NULL;
    }
    return tensor;
}

static const gguf_tensor_t *
s_layer_tensor (const gguf_t *gguf, uint32_t layer, const char *what,
                uint64_t ne0, uint64_t ne1, char *err, size_t err_size)
{
    char name [64];
    snprintf (name, sizeof name, "blk.%u.%s.weight", layer, what);
    return s_tensor (gguf, name, ne0, ne1, err, err_size);
}

//  A required positive integer from the metadata.
static int
s_config_u32 (const gguf_t *gguf, const char *key, uint32_t *value, char *err, size_t err_size)
{
    if (gguf_get_u32 (gguf, key, value) != 0) {
        snprintf (err, err_size, "metadata %s is missing or not an unsigned 32-bit integer", key);
        return -1;
    }
    if (*value == 0) {
        snprintf (err, err_size, "metadata %s is 0", key);
        return -1;
    }
    return 0;
}

//  Read and check the hyperparameters. Returns 0 or -1 with err filled.
static int
s_read_config (model_t *self, char *err, size_t err_size)
{
    const gguf_t *gguf = self->gguf;
    model_config_t *config = &self->config;

    gguf_str_t architecture;
    if (gguf_get_str (gguf, "general.architecture", &architecture) != 0) {
        snprintf (err, err_size, "metadata general.architecture is missing");
        return -1;
    }
    if (architecture.len != 5 || memcmp (architecture.ptr, "llama", 5) != 0) {
        snprintf (err, err_size, "architecture '%.*s' is not supported (only llama)",
                  (int) (architecture.len < 64? architecture.len: 64), architecture.ptr);
        return -1;
    }
    if (s_config_u32 (gguf, "llama.embedding_length", &config->dim, err, err_size)
    ||  s_config_u32 (gguf, "llama.block_count", &config->n_layers, err, err_size)
    ||  s_config_u32 (gguf, "llama.attention.head_count", &config->n_heads, err, err_size)
    ||  s_config_u32 (gguf, "llama.feed_forward_length", &config->ffn_dim, err, err_size)
    ||  s_config_u32 (gguf, "llama.context_length", &config->n_ctx_train, err, err_size))
        return -1;
    config->n_kv_heads = config->n_heads;
    if (gguf_find_key (gguf, "llama.attention.head_count_kv") >= 0
    &&  s_config_u32 (gguf, "llama.attention.head_count_kv", &config->n_kv_heads,
                      err, err_size))
        return -1;
    if (gguf_get_f32 (gguf, "llama.attention.layer_norm_rms_epsilon", &config->rms_eps) != 0) {
        snprintf (err, err_size, "metadata llama.attention.layer_norm_rms_epsilon is missing "
                  "or not a float");
        return -1;
    }
    if (!(config->rms_eps >= 0 && config->rms_eps < 1)) {
        snprintf (err, err_size, "rms epsilon %g is out of range", (double) config->rms_eps);
        return -1;
    }
    config->rope_theta = 10000.0f;
    if (gguf_find_key (gguf, "llama.rope.freq_base") >= 0
    &&  gguf_get_f32 (gguf, "llama.rope.freq_base", &config->rope_theta) != 0) {
        snprintf (err, err_size, "metadata llama.rope.freq_base is not a float");
        return -1;
    }
    if (!(config->rope_theta > 0 && isfinite (config->rope_theta))) {
        snprintf (err, err_size, "rope frequency base %g is out of range",
                  (double) config->rope_theta);
        return -1;
    }
    if (config->dim % config->n_heads != 0) {
        snprintf (err, err_size, "embedding length %u is not a multiple of the head count %u",
                  config->dim, config->n_heads);
        return -1;
    }
    if (config->n_kv_heads > config->n_heads || config->n_heads % config->n_kv_heads != 0) {
        snprintf (err, err_size, "head count %u is not a multiple of the KV head count %u",
                  config->n_heads, config->n_kv_heads);
        return -1;
    }
    //  Each layer has nine tensors: a larger block count is corrupt (and must not size
    //  an allocation).
    if (config->n_layers > gguf_tensor_count (gguf) / 9) {
        snprintf (err, err_size, "block count %u is more than the file's %zu tensors hold",
                  config->n_layers, gguf_tensor_count (gguf));
        return -1;
    }
    config->head_dim = config->dim / config->n_heads;
    self->kv_dim = config->n_kv_heads * config->head_dim;
    self->rope_dims = config->head_dim;
    if (gguf_find_key (gguf, "llama.rope.dimension_count") >= 0
    &&  s_config_u32 (gguf, "llama.rope.dimension_count", &self->rope_dims, err, err_size))
        return -1;
    if (self->rope_dims > config->head_dim || self->rope_dims % 2 != 0) {
        snprintf (err, err_size, "rope dimension count %u does not fit the head size %u",
                  self->rope_dims, config->head_dim);
        return -1;
    }

    //  The vocabulary size is the embedding table's second dimension.
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
    if (gguf_get_u32 (gguf, "llama.vocab_size", &vocab_size) == 0
    &&  vocab_size != config->n_vocab) {
        snprintf (err, err_size, "llama.vocab_size %u differs from token_embd.weight's %u rows",
                  vocab_size, config->n_vocab);
        return -1;
    }
    return 0;
}

//  Find and check every weight. Returns 0 or -1 with err filled.
static int
s_find_weights (model_t *self, char *err, size_t err_size)
{
    const gguf_t *gguf = self->gguf;
    const model_config_t *config = &self->config;
    uint32_t dim = config->dim;

    self->token_embd = s_tensor (gguf, "token_embd.weight", dim, config->n_vocab, err, err_size);
    if (!self->token_embd)
        return -1;
    self->output_norm = s_tensor (gguf, "output_norm.weight", dim, 1, err, err_size);
    if (!self->output_norm)
        return -1;
    if (gguf_find_tensor (gguf, "output.weight")) {
        self->output = s_tensor (gguf, "output.weight", dim, config->n_vocab, err, err_size);
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
    for (uint32_t l = 0; l < config->n_layers; l++) {
        layer_weights_t *layer = &self->layers [l];
        if (!(layer->attn_norm = s_layer_tensor (gguf, l, "attn_norm", dim, 1, err, err_size))
        ||  !(layer->attn_q = s_layer_tensor (gguf, l, "attn_q", dim, dim, err, err_size))
        ||  !(layer->attn_k = s_layer_tensor (gguf, l, "attn_k", dim, self->kv_dim,
                                              err, err_size))
        ||  !(layer->attn_v = s_layer_tensor (gguf, l, "attn_v", dim, self->kv_dim,
                                              err, err_size))
        ||  !(layer->attn_output = s_layer_tensor (gguf, l, "attn_output", dim, dim,
                                                   err, err_size))
        ||  !(layer->ffn_norm = s_layer_tensor (gguf, l, "ffn_norm", dim, 1, err, err_size))
        ||  !(layer->ffn_gate = s_layer_tensor (gguf, l, "ffn_gate", dim, config->ffn_dim,
                                                err, err_size))
        ||  !(layer->ffn_up = s_layer_tensor (gguf, l, "ffn_up", dim, config->ffn_dim,
                                              err, err_size))
        ||  !(layer->ffn_down = s_layer_tensor (gguf, l, "ffn_down", config->ffn_dim, dim,
                                                err, err_size)))
            return -1;
    }
    return 0;
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

    uint32_t widest = config->dim > config->ffn_dim? config->dim: config->ffn_dim;
    self->x = calloc (config->dim, sizeof (float));
    self->xb = calloc (config->dim, sizeof (float));
    self->xb2 = calloc (config->dim, sizeof (float));
    self->q = calloc (config->dim, sizeof (float));
    self->k = calloc (self->kv_dim, sizeof (float));
    self->v = calloc (self->kv_dim, sizeof (float));
    self->weighted_sum_f16 = calloc (config->head_dim, sizeof (uint16_t));
    self->hb = calloc (config->ffn_dim, sizeof (float));
    self->hb2 = calloc (config->ffn_dim, sizeof (float));
    self->input_f16 = calloc (widest, sizeof (uint16_t));
    self->logits = calloc (config->n_vocab, sizeof (float));
    if (!self->key_cache || !self->value_cache || !self->x || !self->xb || !self->xb2
    ||  !self->q || !self->k || !self->v || !self->weighted_sum_f16 || !self->hb || !self->hb2
    ||  !self->input_f16 || !self->logits) {
        snprintf (err, err_size, "out of memory for the KV cache (%zu bytes) and activations",
                  2 * cache_elements * sizeof (uint16_t));
        return -1;
    }
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
    model_t *self = calloc (1, sizeof (model_t));
    if (!self) {
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->gguf = gguf;
    self->n_slots = n_slots;
    if (s_read_config (self, err, err_size) != 0
    ||  s_find_weights (self, err, err_size) != 0) {
        model_destroy (&self);
        return NULL;
    }
    self->n_ctx = n_ctx? n_ctx: self->config.n_ctx_train;
    if (s_allocate (self, err, err_size) != 0) {
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
    free (self->layers);
    free (self->key_cache);
    free (self->value_cache);
    free (self->x);
    free (self->xb);
    free (self->xb2);
    free (self->q);
    free (self->k);
    free (self->v);
    free (self->weighted_sum_f16);
    free (self->hb);
    free (self->hb2);
    free (self->input_f16);
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

//  --- The math ----------------------------------------------------------------------------

//  Element i of a vector tensor (F32 or F16).
static float
s_weight_at (const gguf_tensor_t *tensor, size_t i)
{
    if (tensor->type == GGML_TYPE_F16)
        return s_fp16_to_fp32 (((const uint16_t *) tensor->data) [i]);
    return ((const float *) tensor->data) [i];
}

//  out = x / rms(x) * weight, over n elements. out may be x.
static void
s_rmsnorm (float *out, const float *x, const gguf_tensor_t *weight, uint32_t n, float eps)
{
    double sum_of_squares = 0;
    for (uint32_t i = 0; i < n; i++)
        sum_of_squares += (double) x [i] * x [i];
    float mean = (float) (sum_of_squares / n);
    float scale = 1.0f / sqrtf (mean + eps);
    for (uint32_t i = 0; i < n; i++)
        out [i] = (x [i] * scale) * s_weight_at (weight, i);
}

//  Dot products. Each sum is accumulated in double: llama.cpp's SIMD dot products add
//  in many float lanes, which lands much closer to the exact sum than one float
//  accumulator would; double is the plain way to get as close.
static float
s_dot_f32 (const float *a, const float *b, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double) a [i] * b [i];
    return (float) sum;
}

//  Both vectors F16; each product is exact in float.
static float
s_dot_f16 (const uint16_t *a, const uint16_t *b, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += s_fp16_to_fp32 (a [i]) * s_fp16_to_fp32 (b [i]);
    return (float) sum;
}

//  out[n_out] = W x, where W is a [n_in, n_out] tensor (row i of W is its i-th run of
//  n_in elements). For F16 weights x is rounded to F16 first, as llama.cpp does.
static void
s_matmul (model_t *self, float *out, const float *x, const gguf_tensor_t *weight)
{
    size_t n_in = (size_t) weight->ne [0];
    size_t n_out = (size_t) weight->ne [1];
    if (weight->type == GGML_TYPE_F32) {
        const float *w = weight->data;
        for (size_t i = 0; i < n_out; i++)
            out [i] = s_dot_f32 (w + i * n_in, x, n_in);
        return;
    }
    uint16_t *x_f16 = self->input_f16;
    for (size_t j = 0; j < n_in; j++)
        x_f16 [j] = s_fp32_to_fp16 (x [j]);
    const uint16_t *w = weight->data;
    for (size_t i = 0; i < n_out; i++)
        out [i] = s_dot_f16 (w + i * n_in, x_f16, n_in);
}

//  Rotate the first rope_dims values of each of n_heads heads by position pos: pairs
//  (x[2i], x[2i+1]) turn by pos * base^(-2i/rope_dims), the angle stepped as ggml does.
static void
s_rope (const model_t *self, float *vector, uint32_t n_heads, uint32_t pos)
{
    uint32_t head_dim = self->config.head_dim;
    float theta_scale = powf (self->config.rope_theta, -2.0f / (float) self->rope_dims);
    for (uint32_t h = 0; h < n_heads; h++) {
        float *head = vector + (size_t) h * head_dim;
        float theta = (float) pos;
        for (uint32_t i = 0; i < self->rope_dims; i += 2) {
            float cos_theta = cosf (theta);
            float sin_theta = sinf (theta);
            float x0 = head [i];
            float x1 = head [i + 1];
            head [i] = x0 * cos_theta - x1 * sin_theta;
            head [i + 1] = x0 * sin_theta + x1 * cos_theta;
            theta *= theta_scale;
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

//  Attention of the query in self->q at position pos over the slot's cache rows
//  0..pos of this layer; the result (n_heads * head_dim values) goes to self->xb.
//
//  This is softmax(q . k_t / sqrt(head_dim)) weighted sum of v_t, computed the way
//  llama.cpp's CPU flash attention (its default) computes it, since greedy tokens can
//  hinge on the last bits: the query is rounded to F16 for the dot products with the
//  F16 keys, and one pass over the positions keeps a running maximum and a running sum
//  of exponentials (online softmax), with the weighted sum of values held in F16 and
//  scaled down whenever the maximum grows. One division by the sum ends it.
static void
s_attention (model_t *self, uint32_t layer, uint32_t slot, uint32_t pos)
{
    const model_config_t *config = &self->config;
    uint32_t head_dim = config->head_dim;
    uint32_t heads_per_kv_head = config->n_heads / config->n_kv_heads;
    float scale = 1.0f / sqrtf ((float) head_dim);
    const uint16_t *keys = self->key_cache + s_cache_row (self, layer, slot, 0);
    const uint16_t *values = self->value_cache + s_cache_row (self, layer, slot, 0);

    uint16_t *query_f16 = self->input_f16;
    for (uint32_t i = 0; i < config->dim; i++)
        query_f16 [i] = s_fp32_to_fp16 (self->q [i]);

    for (uint32_t h = 0; h < config->n_heads; h++) {
        const uint16_t *query = query_f16 + (size_t) h * head_dim;
        size_t kv_offset = (size_t) (h / heads_per_kv_head) * head_dim;
        uint16_t *weighted_sum = self->weighted_sum_f16;
        for (uint32_t i = 0; i < head_dim; i++)
            weighted_sum [i] = 0;
        float max_score = -INFINITY;
        float sum_of_exps = 0;

        for (uint32_t t = 0; t <= pos; t++) {
            const uint16_t *key = keys + (size_t) t * self->kv_dim + kv_offset;
            const uint16_t *value = values + (size_t) t * self->kv_dim + kv_offset;
            float score = s_dot_f16 (query, key, head_dim) * scale;
            float old_scale = 1.0f;         //  for what is summed so far
            float weight = 1.0f;            //  for this value: exp(score - max_score)
            if (score > max_score) {
                old_scale = expf (max_score - score);
                max_score = score;
                for (uint32_t i = 0; i < head_dim; i++)
                    weighted_sum [i] = s_fp32_to_fp16 (s_fp16_to_fp32 (weighted_sum [i])
                                                       * old_scale);
            }
            else
                weight = expf (score - max_score);
            for (uint32_t i = 0; i < head_dim; i++)
                weighted_sum [i] = s_fp32_to_fp16 (s_fp16_to_fp32 (weighted_sum [i])
                                                   + s_fp16_to_fp32 (value [i]) * weight);
            sum_of_exps = sum_of_exps * old_scale + weight;
        }
        float *out = self->xb + (size_t) h * head_dim;
        for (uint32_t i = 0; i < head_dim; i++)
            out [i] = s_fp16_to_fp32 (weighted_sum [i]) * (1.0f / sum_of_exps);
    }
}

//  Run one token at pos through every layer, writing its keys and values into the
//  cache. When with_logits, also compute the logits.
static void
s_forward_token (model_t *self, uint32_t slot, uint32_t pos, uint32_t token, bool with_logits)
{
    const model_config_t *config = &self->config;
    uint32_t dim = config->dim;

    //  Token embedding: row `token` of token_embd.
    size_t embedding_row = (size_t) token * dim;
    for (uint32_t i = 0; i < dim; i++)
        self->x [i] = s_weight_at (self->token_embd, embedding_row + i);

    for (uint32_t l = 0; l < config->n_layers; l++) {
        const layer_weights_t *layer = &self->layers [l];

        //  Attention block.
        s_rmsnorm (self->xb, self->x, layer->attn_norm, dim, config->rms_eps);
        s_matmul (self, self->q, self->xb, layer->attn_q);
        s_matmul (self, self->k, self->xb, layer->attn_k);
        s_matmul (self, self->v, self->xb, layer->attn_v);
        s_rope (self, self->q, config->n_heads, pos);
        s_rope (self, self->k, config->n_kv_heads, pos);

        size_t row = s_cache_row (self, l, slot, pos);
        for (uint32_t i = 0; i < self->kv_dim; i++) {
            self->key_cache [row + i] = s_fp32_to_fp16 (self->k [i]);
            self->value_cache [row + i] = s_fp32_to_fp16 (self->v [i]);
        }
        s_attention (self, l, slot, pos);
        s_matmul (self, self->xb2, self->xb, layer->attn_output);
        for (uint32_t i = 0; i < dim; i++)
            self->x [i] += self->xb2 [i];

        //  Feed-forward block: SwiGLU.
        s_rmsnorm (self->xb, self->x, layer->ffn_norm, dim, config->rms_eps);
        s_matmul (self, self->hb, self->xb, layer->ffn_gate);
        s_matmul (self, self->hb2, self->xb, layer->ffn_up);
        for (uint32_t i = 0; i < config->ffn_dim; i++)
            self->hb [i] = s_silu (self->hb [i]) * self->hb2 [i];
        s_matmul (self, self->xb, self->hb, layer->ffn_down);
        for (uint32_t i = 0; i < dim; i++)
            self->x [i] += self->xb [i];
    }
    if (with_logits) {
        s_rmsnorm (self->x, self->x, self->output_norm, dim, config->rms_eps);
        s_matmul (self, self->logits, self->x, self->output);
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
    for (uint32_t i = 0; i < n_tokens; i++)
        s_forward_token (self, slot, pos + i, tokens [i], i == n_tokens - 1);
    return self->logits;
}
