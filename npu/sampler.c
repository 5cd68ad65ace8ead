/*  sampler — choose the next token of a sequence from a row of logits. See sampler.h.

    The file goes: the generator, the fast exponential and the loops over the
    vocabulary built on it, the scratch, sequences (parameters, prompt, outputs), bias,
    mask and penalties, selecting the highest tokens (heap, weighted quickselect, top_p
    buckets), the draw, sampler_sample and sampler_top_logprobs.

    One call of sampler_sample works on "values": the logits themselves when the
    sequence changes nothing (no logit_bias, no masked tokens yet, no penalties), else a
    copy in the sampler's scratch to which those are applied. Then:

    - Greedy (temperature 0): one pass for the highest value, the lowest id on a tie.
    - Random: the weight of a token is e^((value - max) * (1 / temperature)) with max the
      highest value, so the highest token weighs exactly 1 and min_p is "weight below
      min_p". top_k keeps the k first tokens in the order "higher value first, then lower
      id"; top_p the shortest run of that order (within the top k) whose weights reach
      top_p times their total; min_p drops tokens from what is left. The draw:

          u     = sampler_rng_uniform (generator seeded for (seed, k), below)
          chosen = the first kept token, walking kept tokens in increasing id order,
                   at which the running sum of weights exceeds u * (total kept weight)

      So the chosen token depends only on the values, the parameters, the seed and k.
      Sums are in double; where the code sums in another order than one by one (eight
      lanes, blocks of 64, the pieces of a selection), a result can differ from the
      one-by-one sum only when u lands within rounding of a boundary between two tokens.

    The generator for the k-th output (k = outputs told before this draw) is

          sampler_rng_seed (&rng, seed ^ splitmix64 (k))

    where splitmix64 (k) is the first output of splitmix64 started from state k (the
    same function sampler_rng_seed uses to fill the state). One uniform is drawn from it.

    How the highest tokens are found without sorting the vocabulary: top_k keeps a heap
    of the k best seen so far in one pass (a token that does not beat the heap's worst is
    one comparison), then sorts the heap. top_p alone first tries the 64 highest (enough
    for a model that is sure of itself; skipped when top_p times the total weight is
    above 64, as no weight is above 1); when those do not reach top_p, the weights are
    summed into buckets of (max - value) / temperature (1/64 wide), the bucket where the
    running sum reaches top_p is found, and a quickselect that splits by weight instead
    of count finds the cut among that bucket's tokens alone. top_k and top_p together
    need only the k sorted tokens.

    The log-probabilities are log softmax of the model's own logits: logit - (max + log
    sum e^(logit - max)), the sum in double. e^x comes from s_exp_nonpositive: e^x = 2^n
    * e^r with n = round (x / ln 2) and |r| <= ln 2 / 2, e^r by its Taylor series to r^7
    (relative error under 1.3e-7, about one float ulp), exactly 1 at x = 0 and exactly 0
    for x below -86 (e^-86 < 2^-124), -infinity and NaN. It is written without branches
    so that the compiler turns the loops over the vocabulary into vector code.

    Edge cases: NaN values are never chosen; -infinity has weight 0. When nothing is left
    (every value NaN or -infinity), the greedy choice over the model's own logits, and
    token 0 when those are all NaN. A value of +infinity, or a temperature so small that
    1 / temperature overflows a float, is taken greedily. A logprob of a NaN logit is NaN;
    when the highest logit is infinite, a token at that logit gets 0 and the others
    -infinity.

    At temperature 1 on unchanged logits with no top_k and no min_p, the sum of the
    weights is the sum log softmax needs, and is used for it instead of a second pass.

    Penalties use the sampler's counts scratch (one uint32 per token, all zero between
    calls): counted over the outputs, applied, then only the touched entries reset, so
    the penalties cost O(prompt + outputs), never O(vocabulary). A sequence keeps its
    prompt tokens (each once) only when repetition_penalty is on, and its outputs only
    when some penalty is on.

    Parameters: besides the header's ranges, temperature must be finite, logit_bias
    values in [-100, 100] (not NaN); a token named twice in logit_bias gets both biases.
    An empty vocabulary is refused (sampler_new and sampler_seq_new return NULL).
    sampler_sample with no sequence, or one made for another vocabulary, is greedy.

    Costs, n the vocabulary: greedy is one pass (a second for the logprob); a draw adds
    one or two vectorized passes, plus a heap pass for top_k or top_p, and for top_p
    over more than 64 tokens two passes for the buckets. The weighted quickselect is
    linear on average; like any quickselect it has a quadratic worst case (median of
    three makes it unlikely, and it sees one bucket's tokens: the whole vocabulary only
    when nearly all values are equal).
*/
#include "sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLER_NO_TOKEN UINT32_MAX
//  top_p alone first looks for its cut among this many highest tokens.
#define SAMPLER_TOP_P_FIRST_TRY 64
//  At most this many kept tokens are sorted by id for the draw; more are walked over
//  the whole vocabulary.
#define SAMPLER_SMALL_KEPT 64
//  The draw skips the vocabulary in blocks of this many weights.
#define SAMPLER_WALK_BLOCK 64
//  top_p's buckets: this many per unit of (max - value) / temperature, over the 86
//  units where a weight is not 0, and one for the rest.
#define SAMPLER_BUCKETS_PER_UNIT 64
#define SAMPLER_BUCKETS (86 * SAMPLER_BUCKETS_PER_UNIT + 2)

//  --- Generator ---------------------------------------------------------------------------

static uint64_t
s_splitmix64_next (uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t
s_rotate_left (uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
s_xoshiro_next (sampler_rng_t *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = s_rotate_left (s [1] * 5, 7) * 9;
    uint64_t t = s [1] << 17;
    s [2] ^= s [0];
    s [3] ^= s [1];
    s [1] ^= s [2];
    s [0] ^= s [3];
    s [2] ^= t;
    s [3] = s_rotate_left (s [3], 45);
    return result;
}

void
sampler_rng_seed (sampler_rng_t *rng, uint64_t seed)
{
    uint64_t state = seed;
    for (int i = 0; i < 4; i++)
        rng->s [i] = s_splitmix64_next (&state);
}

double
sampler_rng_uniform (sampler_rng_t *rng)
{
    //  The top 53 bits, as a multiple of 2^-53.
    return (double) (s_xoshiro_next (rng) >> 11) * 0x1.0p-53;
}

//  The uniform number that the draw for output k of a sequence with this seed uses.
static double
s_draw_uniform (uint64_t seed, uint64_t k)
{
    uint64_t state = k;
    sampler_rng_t rng;
    sampler_rng_seed (&rng, seed ^ s_splitmix64_next (&state));
    return sampler_rng_uniform (&rng);
}

//  --- Fast exponential --------------------------------------------------------------------

typedef union {
    float value;
    uint32_t bits;
} float_bits_t;

//  e^x for x <= 0, to about one float ulp; 0 for x below -86, -infinity and NaN. No
//  branches: a float is kept or zeroed by and-ing its bits with an all-ones or all-zeros
//  mask, so a loop of these can run as vector code.
static inline float
s_exp_nonpositive (float x)
{
    //  Numbers below -86, and NaN, are computed as -86 and then zeroed.
    uint32_t in_range = 0u - (uint32_t) (x >= -86.0f);
    float_bits_t input = { x };
    float_bits_t lowest = { -86.0f };
    input.bits = (input.bits & in_range) | (lowest.bits & ~in_range);
    float clamped = input.value;

    //  n = round (x / ln 2), by the float rounding of adding and taking away 1.5 * 2^23;
    //  r = x - n ln 2, with ln 2 in two parts so that n * ln2_high is exact.
    float n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = clamped - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;

    //  e^r = 1 + r + r^2/2! + ... + r^7/7!, by Horner.
    float series = 1.0f / 5040.0f;
    series = series * r + 1.0f / 720.0f;
    series = series * r + 1.0f / 120.0f;
    series = series * r + 1.0f / 24.0f;
    series = series * r + 1.0f / 6.0f;
    series = series * r + 0.5f;
    series = series * r + 1.0f;
    series = series * r + 1.0f;

    //  2^n, n in -124 .. 0, built as a float's exponent bits.
    float_bits_t power;
    power.bits = (uint32_t) ((int32_t) n + 127) << 23;
    float_bits_t result = { series * power.value };
    result.bits &= in_range;
    return result.value;
}

//  The weight of a value: e^((value - max) * inverse_temperature); 0 for NaN and -inf.
static inline float
s_weight (float value, float max, float inverse_temperature)
{
    return s_exp_nonpositive ((value - max) * inverse_temperature);
}

//  Sum in double of n weights, in eight lanes (lane j takes the weights j, j + 8, ...),
//  the lanes added in order at the end.
static double
s_sum_weights (const float *weights, uint32_t n)
{
    double lanes [8] = { 0 };
    uint32_t index = 0;
    for (; index + 8 <= n; index += 8) {
        const float *block = weights + index;
        for (int lane = 0; lane < 8; lane++)
            lanes [lane] += block [lane];
    }
    for (; index < n; index++)
        lanes [index % 8] += weights [index];
    double sum = 0;
    for (int lane = 0; lane < 8; lane++)
        sum += lanes [lane];
    return sum;
}

//  Sum in double of e^(logit - max) over the logits, in eight lanes as above.
static double
s_sum_exp (const float *logits, uint32_t n, float max)
{
    double lanes [8] = { 0 };
    uint32_t index = 0;
    for (; index + 8 <= n; index += 8) {
        const float *block = logits + index;
        for (int lane = 0; lane < 8; lane++)
            lanes [lane] += s_exp_nonpositive (block [lane] - max);
    }
    for (; index < n; index++)
        lanes [index % 8] += s_exp_nonpositive (logits [index] - max);
    double sum = 0;
    for (int lane = 0; lane < 8; lane++)
        sum += lanes [lane];
    return sum;
}

//  weights [token] = the weight of values [token] when the token comes no later than
//  (last_value, last_token) in the order "higher value first, then lower id" and
//  weighs at least min_weight, else 0. Returns their sum, in eight lanes as
//  s_sum_weights adds them. last_value -infinity with last_token UINT32_MAX keeps all.
static double
s_fill_weights (const float *restrict values, uint32_t n, float max,
                float inverse_temperature, float min_weight, float last_value,
                uint32_t last_token, float *restrict weights)
{
    double lanes [8] = { 0 };
    uint32_t index = 0;
    for (; index + 8 <= n; index += 8) {
        const float *restrict block = values + index;
        float *restrict block_weights = weights + index;
        for (uint32_t lane = 0; lane < 8; lane++) {
            float value = block [lane];
            float_bits_t weight = { s_weight (value, max, inverse_temperature) };
            uint32_t kept = (uint32_t) (value > last_value)
                          | ((uint32_t) (value == last_value)
                           & (uint32_t) (index + lane <= last_token));
            kept &= (uint32_t) (weight.value >= min_weight);
            weight.bits &= 0u - kept;
            block_weights [lane] = weight.value;
            lanes [lane] += weight.value;
        }
    }
    for (; index < n; index++) {
        float value = values [index];
        float weight = s_weight (value, max, inverse_temperature);
        bool kept = value > last_value || (value == last_value && index <= last_token);
        weights [index] = kept && weight >= min_weight? weight: 0.0f;
        lanes [index % 8] += weights [index];
    }
    double sum = 0;
    for (int lane = 0; lane < 8; lane++)
        sum += lanes [lane];
    return sum;
}

//  Like s_fill_weights on weights already there: zeroes those of the tokens after
//  (last_value, last_token) in the order and those under min_weight; returns the sum of
//  what is left, in eight lanes.
static double
s_keep_weights (const float *restrict values, uint32_t n, float min_weight,
                float last_value, uint32_t last_token, float *restrict weights)
{
    double lanes [8] = { 0 };
    uint32_t index = 0;
    for (; index + 8 <= n; index += 8) {
        const float *restrict block = values + index;
        float *restrict block_weights = weights + index;
        for (uint32_t lane = 0; lane < 8; lane++) {
            float value = block [lane];
            float_bits_t weight = { block_weights [lane] };
            uint32_t kept = (uint32_t) (value > last_value)
                          | ((uint32_t) (value == last_value)
                           & (uint32_t) (index + lane <= last_token));
            kept &= (uint32_t) (weight.value >= min_weight);
            weight.bits &= 0u - kept;
            block_weights [lane] = weight.value;
            lanes [lane] += weight.value;
        }
    }
    for (; index < n; index++) {
        float value = values [index];
        bool kept = value > last_value || (value == last_value && index <= last_token);
        weights [index] = kept && weights [index] >= min_weight? weights [index]: 0.0f;
        lanes [index % 8] += weights [index];
    }
    double sum = 0;
    for (int lane = 0; lane < 8; lane++)
        sum += lanes [lane];
    return sum;
}

//  --- Scratch -----------------------------------------------------------------------------

//  A token and its value, for selecting the highest tokens.
typedef struct {
    float value;
    uint32_t token;
} candidate_t;

struct _sampler_t {
    uint32_t n_vocab;
    float *values;                  //  the logits with bias, mask and penalties applied
    float *weights;                 //  the draw's weights by token
    candidate_t *candidates;        //  the highest tokens, a heap or sorted
    uint32_t *counts;               //  by token; all zero between calls
    double *bucket_weights;         //  [SAMPLER_BUCKETS], for top_p
};

sampler_t *
sampler_new (uint32_t n_vocab)
{
    if (n_vocab == 0)
        return NULL;
    sampler_t *self = (sampler_t *) calloc (1, sizeof (sampler_t));
    if (!self)
        return NULL;
    self->n_vocab = n_vocab;
    self->values = (float *) malloc (n_vocab * sizeof (float));
    self->weights = (float *) malloc (n_vocab * sizeof (float));
    self->candidates = (candidate_t *) malloc (n_vocab * sizeof (candidate_t));
    self->counts = (uint32_t *) calloc (n_vocab, sizeof (uint32_t));
    self->bucket_weights = (double *) malloc (SAMPLER_BUCKETS * sizeof (double));
    if (!self->values || !self->weights || !self->candidates || !self->counts
    ||  !self->bucket_weights)
        sampler_destroy (&self);
    return self;
}

void
sampler_destroy (sampler_t **self_p)
{
    if (self_p && *self_p) {
        sampler_t *self = *self_p;
        free (self->values);
        free (self->weights);
        free (self->candidates);
        free (self->counts);
        free (self->bucket_weights);
        free (self);
        *self_p = NULL;
    }
}

//  --- Sequences ---------------------------------------------------------------------------

struct _sampler_seq_t {
    sampler_params_t params;        //  validated; top_p and repetition_penalty never 0;
                                    //  its arrays point to the copies below
    uint32_t n_vocab;
    uint32_t *masked_tokens;        //  [n_masked]
    uint32_t *bias_tokens;          //  [n_bias]
    float *bias_values;             //  [n_bias]
    bool keep_prompt;               //  repetition_penalty is on
    bool keep_outputs;              //  some penalty is on
    uint8_t *prompt_seen;           //  one bit per token, when keep_prompt
    uint32_t *prompt;               //  the distinct prompt tokens, when keep_prompt
    uint32_t n_prompt;
    uint32_t prompt_capacity;
    uint32_t *outputs;              //  the generated tokens in order, when keep_outputs
    uint32_t outputs_capacity;
    uint32_t n_outputs;             //  generated tokens told, kept or not
};

//  A copy of n items of size bytes, or NULL when n is 0; sets *failed when out of memory.
static void *
s_copy_array (const void *source, size_t n, size_t size, bool *failed)
{
    if (n == 0)
        return NULL;
    void *copy = malloc (n * size);
    if (copy)
        memcpy (copy, source, n * size);
    else
        *failed = true;
    return copy;
}

//  Returns true when params are in range, else false with err filled.
static bool
s_params_valid (const sampler_params_t *params, uint32_t n_vocab, char *err,
                size_t err_size)
{
    const char *problem = NULL;
    bool names_token = false;
    uint32_t bad_token = 0;
    if (!(params->temperature >= 0) || isinf (params->temperature))
        problem = "temperature must be a number of at least 0";
    else
    if (!(params->top_p >= 0 && params->top_p <= 1))
        problem = "top_p must be in (0, 1]";
    else
    if (!(params->min_p >= 0 && params->min_p <= 1))
        problem = "min_p must be in [0, 1]";
    else
    if (!(params->presence_penalty >= -2 && params->presence_penalty <= 2))
        problem = "presence_penalty must be in [-2, 2]";
    else
    if (!(params->frequency_penalty >= -2 && params->frequency_penalty <= 2))
        problem = "frequency_penalty must be in [-2, 2]";
    else
    if (!(params->repetition_penalty >= 0) || isinf (params->repetition_penalty))
        problem = "repetition_penalty must be a number greater than 0";
    else
    if (params->n_masked > 0 && !params->masked_tokens)
        problem = "masked tokens are missing";
    else
    if (params->n_bias > 0 && (!params->bias_tokens || !params->bias_values))
        problem = "logit_bias tokens or values are missing";
    if (!problem) {
        for (uint32_t index = 0; index < params->n_masked && !problem; index++)
            if (params->masked_tokens [index] >= n_vocab) {
                problem = "a masked token is not in the vocabulary";
                names_token = true;
                bad_token = params->masked_tokens [index];
            }
        for (uint32_t index = 0; index < params->n_bias && !problem; index++) {
            float bias = params->bias_values [index];
            if (params->bias_tokens [index] >= n_vocab) {
                problem = "a logit_bias token is not in the vocabulary";
                names_token = true;
                bad_token = params->bias_tokens [index];
            }
            else
            if (!(bias >= -100 && bias <= 100))
                problem = "a logit_bias value must be in [-100, 100]";
        }
    }
    if (problem && err && err_size > 0) {
        if (names_token)
            snprintf (err, err_size, "%s (token %u, vocabulary %u)", problem, bad_token,
                      n_vocab);
        else
            snprintf (err, err_size, "%s", problem);
    }
    return problem == NULL;
}

sampler_seq_t *
sampler_seq_new (const sampler_params_t *params, uint32_t n_vocab, char *err,
                 size_t err_size)
{
    if (!params || n_vocab == 0) {
        if (err && err_size > 0)
            snprintf (err, err_size, "no sampling parameters or an empty vocabulary");
        return NULL;
    }
    if (!s_params_valid (params, n_vocab, err, err_size))
        return NULL;
    sampler_seq_t *self = (sampler_seq_t *) calloc (1, sizeof (sampler_seq_t));
    if (!self) {
        if (err && err_size > 0)
            snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->n_vocab = n_vocab;
    self->params = *params;
    if (self->params.top_p == 0)
        self->params.top_p = 1;
    if (self->params.repetition_penalty == 0)
        self->params.repetition_penalty = 1;

    bool failed = false;
    self->masked_tokens = (uint32_t *) s_copy_array (params->masked_tokens,
                                                     params->n_masked, sizeof (uint32_t),
                                                     &failed);
    self->bias_tokens = (uint32_t *) s_copy_array (params->bias_tokens, params->n_bias,
                                                   sizeof (uint32_t), &failed);
    self->bias_values = (float *) s_copy_array (params->bias_values, params->n_bias,
                                                sizeof (float), &failed);
    self->params.masked_tokens = self->masked_tokens;
    self->params.bias_tokens = self->bias_tokens;
    self->params.bias_values = self->bias_values;

    self->keep_prompt = self->params.repetition_penalty != 1;
    self->keep_outputs = self->keep_prompt
                      || self->params.frequency_penalty != 0
                      || self->params.presence_penalty != 0;
    if (self->keep_prompt) {
        self->prompt_seen = (uint8_t *) calloc ((n_vocab + 7) / 8, 1);
        if (!self->prompt_seen)
            failed = true;
    }
    if (failed) {
        sampler_seq_destroy (&self);
        if (err && err_size > 0)
            snprintf (err, err_size, "out of memory");
    }
    return self;
}

void
sampler_seq_destroy (sampler_seq_t **self_p)
{
    if (self_p && *self_p) {
        sampler_seq_t *self = *self_p;
        free (self->masked_tokens);
        free (self->bias_tokens);
        free (self->bias_values);
        free (self->prompt_seen);
        free (self->prompt);
        free (self->outputs);
        free (self);
        *self_p = NULL;
    }
}

//  Makes room for n_more tokens in *array. Returns 0, or -1 when out of memory.
static int
s_reserve (uint32_t **array, uint32_t *capacity, uint32_t size, uint32_t n_more)
{
    if (n_more > UINT32_MAX - size)
        return -1;
    if (size + n_more <= *capacity)
        return 0;
    uint64_t new_capacity = *capacity? *capacity: 16;
    while (new_capacity < (uint64_t) size + n_more)
        new_capacity *= 2;
    if (new_capacity > UINT32_MAX)
        new_capacity = UINT32_MAX;
    uint32_t *grown = (uint32_t *) realloc (*array, new_capacity * sizeof (uint32_t));
    if (!grown)
        return -1;
    *array = grown;
    *capacity = (uint32_t) new_capacity;
    return 0;
}

//  True when every token is below n_vocab.
static bool
s_tokens_valid (const uint32_t *tokens, uint32_t n_tokens, uint32_t n_vocab)
{
    if (n_tokens > 0 && !tokens)
        return false;
    for (uint32_t index = 0; index < n_tokens; index++)
        if (tokens [index] >= n_vocab)
            return false;
    return true;
}

int
sampler_seq_add_prompt (sampler_seq_t *self, const uint32_t *tokens, uint32_t n_tokens)
{
    if (!self || !s_tokens_valid (tokens, n_tokens, self->n_vocab))
        return -1;
    if (!self->keep_prompt)
        return 0;
    //  At most this many new distinct tokens; reserve for that many.
    uint32_t n_new = n_tokens < self->n_vocab - self->n_prompt?
                     n_tokens: self->n_vocab - self->n_prompt;
    if (s_reserve (&self->prompt, &self->prompt_capacity, self->n_prompt, n_new) != 0)
        return -1;
    for (uint32_t index = 0; index < n_tokens; index++) {
        uint32_t token = tokens [index];
        uint8_t bit = (uint8_t) (1u << (token % 8));
        if (!(self->prompt_seen [token / 8] & bit)) {
            self->prompt_seen [token / 8] |= bit;
            self->prompt [self->n_prompt++] = token;
        }
    }
    return 0;
}

int
sampler_seq_add_outputs (sampler_seq_t *self, const uint32_t *tokens, uint32_t n_tokens)
{
    if (!self || !s_tokens_valid (tokens, n_tokens, self->n_vocab))
        return -1;
    if (n_tokens > UINT32_MAX - self->n_outputs)
        return -1;
    if (n_tokens == 0)
        return 0;
    if (self->keep_outputs) {
        if (s_reserve (&self->outputs, &self->outputs_capacity, self->n_outputs,
                       n_tokens) != 0)
            return -1;
        memcpy (self->outputs + self->n_outputs, tokens, n_tokens * sizeof (uint32_t));
    }
    self->n_outputs += n_tokens;
    return 0;
}

uint32_t
sampler_seq_n_outputs (const sampler_seq_t *self)
{
    return self? self->n_outputs: 0;
}

//  --- Bias, mask and penalties ------------------------------------------------------------

//  True when the sequence changes any logit at this step.
static bool
s_seq_changes_logits (const sampler_seq_t *seq)
{
    const sampler_params_t *params = &seq->params;
    if (params->n_bias > 0)
        return true;
    if (params->n_masked > 0 && seq->n_outputs < params->min_tokens)
        return true;
    if (params->repetition_penalty != 1 && (seq->n_prompt > 0 || seq->n_outputs > 0))
        return true;
    if ((params->frequency_penalty != 0 || params->presence_penalty != 0)
    &&  seq->n_outputs > 0)
        return true;
    return false;
}

static float
s_repetition_penalized (float value, float penalty)
{
    return value > 0? value / penalty: value * penalty;
}

//  Applies logit_bias, the min_tokens mask and the penalties to values (a copy of the
//  logits), in that order.
static void
s_apply_seq (sampler_t *self, const sampler_seq_t *seq, float *values)
{
    const sampler_params_t *params = &seq->params;
    uint32_t *counts = self->counts;

    for (uint32_t index = 0; index < params->n_bias; index++)
        values [params->bias_tokens [index]] += params->bias_values [index];

    if (seq->n_outputs < params->min_tokens)
        for (uint32_t index = 0; index < params->n_masked; index++)
            values [params->masked_tokens [index]] = -INFINITY;

    //  Repetition: every token of the prompt (kept distinct) and of the outputs, once;
    //  counts marks the tokens done, then goes back to zero.
    if (params->repetition_penalty != 1) {
        float penalty = params->repetition_penalty;
        for (uint32_t index = 0; index < seq->n_prompt; index++) {
            uint32_t token = seq->prompt [index];
            values [token] = s_repetition_penalized (values [token], penalty);
            counts [token] = 1;
        }
        for (uint32_t index = 0; index < seq->n_outputs; index++) {
            uint32_t token = seq->outputs [index];
            if (counts [token] == 0) {
                values [token] = s_repetition_penalized (values [token], penalty);
                counts [token] = 1;
            }
        }
        for (uint32_t index = 0; index < seq->n_prompt; index++)
            counts [seq->prompt [index]] = 0;
        for (uint32_t index = 0; index < seq->n_outputs; index++)
            counts [seq->outputs [index]] = 0;
    }

    //  Frequency and presence: count each output token, then at each token's first
    //  place apply its count and reset it (so a token is penalized once).
    if (params->frequency_penalty != 0 || params->presence_penalty != 0) {
        for (uint32_t index = 0; index < seq->n_outputs; index++)
            counts [seq->outputs [index]]++;
        for (uint32_t index = 0; index < seq->n_outputs; index++) {
            uint32_t token = seq->outputs [index];
            if (counts [token] > 0) {
                values [token] -= (float) counts [token] * params->frequency_penalty
                                + params->presence_penalty;
                counts [token] = 0;
            }
        }
    }
}

//  --- Selecting the highest tokens --------------------------------------------------------

//  True when (value a, token a) comes before (value b, token b) in the order "higher
//  value first, then lower id", NaN after every number.
static inline bool
s_comes_before (float value_a, uint32_t token_a, float value_b, uint32_t token_b)
{
    if (value_a > value_b)
        return true;
    if (value_a < value_b)
        return false;
    if (value_a == value_b)
        return token_a < token_b;
    //  At least one is NaN.
    if (isnan (value_a) && isnan (value_b))
        return token_a < token_b;
    return isnan (value_b);
}

static inline bool
s_candidate_before (const candidate_t *a, const candidate_t *b)
{
    return s_comes_before (a->value, a->token, b->value, b->token);
}

//  The heap keeps its last candidate (in the order) at the top, heap [0].
static void
s_heap_sift_down (candidate_t *heap, uint32_t size, uint32_t index)
{
    while (true) {
        uint32_t left = 2 * index + 1;
        if (left >= size)
            break;
        uint32_t later = left;
        if (left + 1 < size && s_candidate_before (&heap [left], &heap [left + 1]))
            later = left + 1;
        if (!s_candidate_before (&heap [index], &heap [later]))
            break;
        candidate_t swap = heap [index];
        heap [index] = heap [later];
        heap [later] = swap;
        index = later;
    }
}

static void
s_heap_sift_up (candidate_t *heap, uint32_t index)
{
    while (index > 0) {
        uint32_t parent = (index - 1) / 2;
        if (!s_candidate_before (&heap [parent], &heap [index]))
            break;
        candidate_t swap = heap [index];
        heap [index] = heap [parent];
        heap [parent] = swap;
        index = parent;
    }
}

//  The n_top first tokens of values in the order, into top, sorted. With only_possible,
//  NaN and -infinity are left out. Returns how many were found (fewer than n_top when
//  there are fewer tokens).
static uint32_t
s_select_top (const float *values, uint32_t n_values, uint32_t n_top, bool only_possible,
              candidate_t *top)
{
    uint32_t size = 0;
    if (n_top == 0)
        return 0;
    for (uint32_t token = 0; token < n_values; token++) {
        float value = values [token];
        if (only_possible && !(value > -INFINITY))
            continue;
        if (size < n_top) {
            top [size].value = value;
            top [size].token = token;
            s_heap_sift_up (top, size);
            size++;
        }
        else
        if (value < top [0].value)
            continue;                   //  the usual case, quickly: it comes later
        else
        if (s_comes_before (value, token, top [0].value, top [0].token)) {
            top [0].value = value;
            top [0].token = token;
            s_heap_sift_down (top, size, 0);
        }
    }
    //  Take the last one off the top, into the end, until the heap is empty.
    for (uint32_t end = size; end > 1; end--) {
        candidate_t swap = top [0];
        top [0] = top [end - 1];
        top [end - 1] = swap;
        s_heap_sift_down (top, end - 1, 0);
    }
    return size;
}

//  Sorts candidates in the order (insertion sort: for short runs).
static void
s_sort_candidates (candidate_t *candidates, uint32_t n)
{
    for (uint32_t index = 1; index < n; index++) {
        candidate_t moving = candidates [index];
        uint32_t place = index;
        while (place > 0 && s_candidate_before (&moving, &candidates [place - 1])) {
            candidates [place] = candidates [place - 1];
            place--;
        }
        candidates [place] = moving;
    }
}

//  In sorted candidates, how many from the first until their weights reach target;
//  0 when all of them do not.
static uint32_t
s_top_p_cut (const candidate_t *sorted, uint32_t n, const float *weights, double target)
{
    double cumulative = 0;
    for (uint32_t index = 0; index < n; index++) {
        cumulative += weights [sorted [index].token];
        if (cumulative >= target)
            return index + 1;
    }
    return 0;
}

//  1 when candidate a comes before b, both possible (neither NaN nor -infinity); 0
//  else. Without branches, for the partition below.
static inline uint32_t
s_possible_before (const candidate_t *a, const candidate_t *b)
{
    return (uint32_t) (a->value > b->value)
         | ((uint32_t) (a->value == b->value) & (uint32_t) (a->token < b->token));
}

//  The position of the median of three candidates in the order.
static uint32_t
s_median_of_three (const candidate_t *candidates, uint32_t a, uint32_t b, uint32_t c)
{
    if (s_candidate_before (&candidates [a], &candidates [b])) {
        if (s_candidate_before (&candidates [b], &candidates [c]))
            return b;
        return s_candidate_before (&candidates [a], &candidates [c])? c: a;
    }
    if (s_candidate_before (&candidates [a], &candidates [c]))
        return a;
    return s_candidate_before (&candidates [b], &candidates [c])? c: b;
}

//  Puts into candidates [0, kept) the shortest run of the order whose weights reach
//  target, candidates [kept - 1] the last of them in the order, and returns kept (all
//  of them when rounding keeps the sum under target). A quickselect that splits by
//  weight instead of count: each round puts the candidates before a pivot on its left;
//  if they and the pivot reach what is still missing, the cut is among them, else they
//  are all kept and the search goes on to the right. A short run left at the end is
//  sorted and walked.
static uint32_t
s_select_by_weight (candidate_t *candidates, uint32_t count, const float *weights,
                    double target)
{
    uint32_t low = 0, high = count;       //  the cut is in [low, high)
    double kept_weight = 0;               //  of candidates [0, low)
    while (high - low > SAMPLER_SMALL_KEPT) {
        uint32_t pivot_at = s_median_of_three (candidates, low, low + (high - low) / 2,
                                               high - 1);
        candidate_t pivot = candidates [pivot_at];
        candidates [pivot_at] = candidates [high - 1];
        candidates [high - 1] = pivot;
        //  Lomuto partition, what comes before the pivot to [low, split), without a
        //  branch on the comparison: every candidate is swapped with the one at split
        //  (harmless when it stays on the right) and split moves on when it came before.
        //  The weight that went left is summed in two lanes, so that one addition need
        //  not wait for the one before.
        uint32_t split = low;
        double before_weights [2] = { 0, 0 };
        for (uint32_t index = low; index < high - 1; index++) {
            candidate_t moving = candidates [index];
            uint32_t before = s_possible_before (&moving, &pivot);
            candidates [index] = candidates [split];
            candidates [split] = moving;
            split += before;
            float_bits_t weight = { weights [moving.token] };
            weight.bits &= 0u - before;
            before_weights [index % 2] += weight.value;
        }
        double before_weight = before_weights [0] + before_weights [1];
        candidates [high - 1] = candidates [split];
        candidates [split] = pivot;
        double through_pivot = before_weight + weights [pivot.token];
        if (kept_weight + through_pivot >= target)
            high = split + 1;
        else {
            kept_weight += through_pivot;
            low = split + 1;
        }
    }
    s_sort_candidates (candidates + low, high - low);
    double cumulative = kept_weight;
    for (uint32_t index = low; index < high; index++) {
        cumulative += weights [candidates [index].token];
        if (cumulative >= target)
            return index + 1;
    }
    return high > 0? high: 1;             //  rounding kept the sum under: keep them all
}

//  The bucket of a value for top_p: its depth below the highest after temperature,
//  (max - value) / temperature, in steps of 1 / SAMPLER_BUCKETS_PER_UNIT; the last
//  bucket for depths past the exponential's range (weight 0), -infinity and NaN. A
//  higher value never has a higher bucket.
static inline uint32_t
s_bucket (float value, float max, float inverse_temperature)
{
    float depth = (max - value) * inverse_temperature * SAMPLER_BUCKETS_PER_UNIT;
    return depth < SAMPLER_BUCKETS - 1? (uint32_t) depth: SAMPLER_BUCKETS - 1;
}

//  top_p over every possible token, when more than the first try is needed: the weight
//  of each bucket, the first bucket at which their running sum reaches target, and the
//  weighted quickselect among that bucket's tokens only. Returns the last kept token
//  (in the order); every token before it is kept too. weights holds every weight.
static candidate_t
s_top_p_by_buckets (sampler_t *self, const float *values, float max,
                    float inverse_temperature, double target)
{
    uint32_t n_vocab = self->n_vocab;
    const float *weights = self->weights;
    double *bucket_weights = self->bucket_weights;
    memset (bucket_weights, 0, SAMPLER_BUCKETS * sizeof (double));
    for (uint32_t token = 0; token < n_vocab; token++)
        bucket_weights [s_bucket (values [token], max, inverse_temperature)]
            += weights [token];
    uint32_t boundary = 0;
    double before = 0;                    //  the weight of the buckets before boundary
    while (boundary < SAMPLER_BUCKETS - 1
    &&     before + bucket_weights [boundary] < target) {
        before += bucket_weights [boundary];
        boundary++;
    }
    if (boundary == SAMPLER_BUCKETS - 1) {
        //  Rounding kept the sum under target: keep every token with a weight.
        while (boundary > 0 && !(bucket_weights [boundary] > 0))
            boundary--;
        target = INFINITY;
    }
    uint32_t count = 0;
    candidate_t *candidates = self->candidates;
    for (uint32_t token = 0; token < n_vocab; token++)
        if (s_bucket (values [token], max, inverse_temperature) == boundary) {
            candidates [count].value = values [token];
            candidates [count].token = token;
            count++;
        }
    uint32_t kept = s_select_by_weight (candidates, count, weights, target - before);
    return candidates [kept - 1];
}

//  --- The draw ----------------------------------------------------------------------------

//  The first token, by id, at which the running sum of weights exceeds u * total.
//  Skips whole blocks by their sums, then walks one block.
static uint32_t
s_walk_weights (const float *weights, uint32_t n, double total, double u)
{
    double target = u * total;
    double cumulative = 0;
    uint32_t start = 0;
    for (; start < n; start += SAMPLER_WALK_BLOCK) {
        uint32_t length = n - start < SAMPLER_WALK_BLOCK? n - start: SAMPLER_WALK_BLOCK;
        double block = s_sum_weights (weights + start, length);
        if (target < cumulative + block)
            break;
        cumulative += block;
    }
    uint32_t last_possible = SAMPLER_NO_TOKEN;
    if (start < n) {
        uint32_t end = n - start < SAMPLER_WALK_BLOCK? n: start + SAMPLER_WALK_BLOCK;
        for (uint32_t token = start; token < end; token++)
            if (weights [token] > 0) {
                cumulative += weights [token];
                last_possible = token;
                if (target < cumulative)
                    return token;
            }
    }
    if (last_possible != SAMPLER_NO_TOKEN)
        return last_possible;
    //  Rounding put target past the end: the last token with a weight.
    uint32_t token = n;
    while (token > 0 && !(weights [token - 1] > 0))
        token--;
    return token > 0? token - 1: 0;
}

//  The draw from a few kept tokens, candidates [0, n_kept), less those under
//  min_weight: sorted by id and walked.
static uint32_t
s_draw_few (const candidate_t *candidates, uint32_t n_kept, const float *values, float max,
            float inverse_temperature, float min_weight, double u)
{
    uint32_t tokens [SAMPLER_SMALL_KEPT];
    for (uint32_t index = 0; index < n_kept; index++) {
        uint32_t token = candidates [index].token;
        uint32_t place = index;
        while (place > 0 && tokens [place - 1] > token) {
            tokens [place] = tokens [place - 1];
            place--;
        }
        tokens [place] = token;
    }
    float weights [SAMPLER_SMALL_KEPT];
    double total = 0;
    for (uint32_t index = 0; index < n_kept; index++) {
        float weight = s_weight (values [tokens [index]], max, inverse_temperature);
        weights [index] = weight >= min_weight? weight: 0.0f;
        total += weights [index];
    }
    double target = u * total;
    double cumulative = 0;
    uint32_t last_possible = candidates [0].token;
    for (uint32_t index = 0; index < n_kept; index++)
        if (weights [index] > 0) {
            cumulative += weights [index];
            last_possible = tokens [index];
            if (target < cumulative)
                return tokens [index];
        }
    return last_possible;
}

//  The draw from the tokens that come no later than last (in the order), less those
//  under min_weight: their weights over the whole vocabulary (computed, or when
//  weights_ready kept from the sampler's weights), then the walk.
static uint32_t
s_draw_up_to (sampler_t *self, candidate_t last, const float *values, float max,
              float inverse_temperature, float min_weight, bool weights_ready, double u)
{
    double total;
    if (weights_ready)
        total = s_keep_weights (values, self->n_vocab, min_weight, last.value, last.token,
                                self->weights);
    else
        total = s_fill_weights (values, self->n_vocab, max, inverse_temperature,
                                min_weight, last.value, last.token, self->weights);
    return s_walk_weights (self->weights, self->n_vocab, total, u);
}

//  The random draw from values (max: the highest, finite) for seq's parameters. Sets
//  *all_weights to the sum of every token's weight when it computed that sum (no
//  min_p, no top_k), else to NaN: at temperature 1 on unchanged logits, that is the sum
//  log softmax needs.
static uint32_t
s_sample_random (sampler_t *self, const sampler_seq_t *seq, const float *values, float max,
                 float inverse_temperature, double u, double *all_weights)
{
    const sampler_params_t *params = &seq->params;
    uint32_t n_vocab = self->n_vocab;
    bool use_top_k = params->top_k > 0 && params->top_k < n_vocab;
    bool use_top_p = params->top_p < 1;
    float min_weight = params->min_p;
    float *weights = self->weights;
    candidate_t *candidates = self->candidates;
    *all_weights = NAN;

    if (!use_top_k && !use_top_p) {
        double total = s_fill_weights (values, n_vocab, max, inverse_temperature,
                                       min_weight, -INFINITY, UINT32_MAX, weights);
        if (min_weight == 0)
            *all_weights = total;
        return s_walk_weights (weights, n_vocab, total, u);
    }
    uint32_t n_kept;
    if (use_top_k) {
        n_kept = s_select_top (values, n_vocab, params->top_k, true, candidates);
        if (use_top_p) {
            double total = 0;
            for (uint32_t index = 0; index < n_kept; index++) {
                uint32_t token = candidates [index].token;
                weights [token] = s_weight (candidates [index].value, max,
                                            inverse_temperature);
                total += weights [token];
            }
            uint32_t cut = s_top_p_cut (candidates, n_kept, weights,
                                        (double) params->top_p * total);
            if (cut > 0)
                n_kept = cut;
        }
    }
    else {
        double total = s_fill_weights (values, n_vocab, max, inverse_temperature, 0.0f,
                                       -INFINITY, UINT32_MAX, weights);
        *all_weights = total;
        double target = (double) params->top_p * total;
        //  No weight is above 1 (the highest's), so when target is above the number of
        //  tokens of the first try, they cannot reach it: straight to the buckets.
        uint32_t cut = 0;
        n_kept = 0;
        if (target <= SAMPLER_TOP_P_FIRST_TRY) {
            n_kept = s_select_top (values, n_vocab, SAMPLER_TOP_P_FIRST_TRY, true,
                                   candidates);
            cut = s_top_p_cut (candidates, n_kept, weights, target);
        }
        if (cut > 0)
            n_kept = cut;
        else
        if (n_kept == 0 || n_kept == SAMPLER_TOP_P_FIRST_TRY) {
            candidate_t last = s_top_p_by_buckets (self, values, max, inverse_temperature,
                                                   target);
            return s_draw_up_to (self, last, values, max, inverse_temperature, min_weight,
                                 true, u);
        }
    }
    if (n_kept <= SAMPLER_SMALL_KEPT)
        return s_draw_few (candidates, n_kept, values, max, inverse_temperature,
                           min_weight, u);
    return s_draw_up_to (self, candidates [n_kept - 1], values, max, inverse_temperature,
                         min_weight, false, u);
}

//  --- Sampling ----------------------------------------------------------------------------

//  The highest value, the lowest id on a tie; NaN skipped. SAMPLER_NO_TOKEN if all NaN.
static uint32_t
s_argmax (const float *values, uint32_t n)
{
    uint32_t best = SAMPLER_NO_TOKEN;
    float best_value = -INFINITY;
    for (uint32_t token = 0; token < n; token++)
        if (values [token] > best_value) {
            best_value = values [token];
            best = token;
        }
    if (best == SAMPLER_NO_TOKEN)
        //  Every value is NaN or -inf: the first -inf, if any.
        for (uint32_t token = 0; token < n; token++)
            if (values [token] == -INFINITY)
                return token;
    return best;
}

//  log softmax (logits) [token], given the highest logit (NaN when all are NaN) and, when
//  that is finite, log_sum = log sum e^(logit - max).
static float
s_log_softmax (float logit, float max, double log_sum)
{
    if (isnan (logit) || isnan (max))
        return NAN;
    if (isinf (max))
        return logit == max? 0.0f: -INFINITY;
    return (float) (((double) logit - max) - log_sum);
}

uint32_t
sampler_sample (sampler_t *self, sampler_seq_t *seq, const float *logits, float *logprob)
{
    uint32_t n_vocab = self->n_vocab;
    const float *values = logits;
    //  A sequence made for another vocabulary is a caller's bug: greedy on the logits.
    bool usable = seq && seq->n_vocab == n_vocab;
    if (usable && s_seq_changes_logits (seq)) {
        memcpy (self->values, logits, n_vocab * sizeof (float));
        s_apply_seq (self, seq, self->values);
        values = self->values;
    }
    uint32_t best = s_argmax (values, n_vocab);
    uint32_t best_of_logits = values == logits? best: SAMPLER_NO_TOKEN;
    uint32_t token;
    double all_weights = NAN;               //  see s_sample_random
    bool at_temperature_one = false;
    if (best == SAMPLER_NO_TOKEN || values [best] == -INFINITY) {
        //  Nothing left to choose.
        if (values != logits)
            best_of_logits = s_argmax (logits, n_vocab);
        token = best_of_logits != SAMPLER_NO_TOKEN? best_of_logits: 0;
    }
    else {
        token = best;
        float temperature = usable? seq->params.temperature: 0.0f;
        float inverse_temperature = temperature > 0? 1.0f / temperature: INFINITY;
        if (isfinite (inverse_temperature) && isfinite (values [best])) {
            double u = s_draw_uniform (seq->params.seed, seq->n_outputs);
            token = s_sample_random (self, seq, values, values [best], inverse_temperature,
                                     u, &all_weights);
            at_temperature_one = inverse_temperature == 1.0f;
        }
    }
    if (logprob) {
        if (values != logits && best_of_logits == SAMPLER_NO_TOKEN)
            best_of_logits = s_argmax (logits, n_vocab);
        float max = best_of_logits != SAMPLER_NO_TOKEN? logits [best_of_logits]: NAN;
        double log_sum = 0;
        if (values == logits && at_temperature_one && !isnan (all_weights))
            //  The weights were e^(logit - max), summed as s_sum_exp sums them.
            log_sum = log (all_weights);
        else
        if (isfinite (max))
            log_sum = log (s_sum_exp (logits, n_vocab, max));
        *logprob = s_log_softmax (logits [token], max, log_sum);
    }
    return token;
}

void
sampler_top_logprobs (sampler_t *self, const float *logits, sampler_logprob_t *top,
                      uint32_t n_top)
{
    uint32_t n_vocab = self->n_vocab;
    if (n_top > n_vocab)
        n_top = n_vocab;
    if (n_top == 0)
        return;
    uint32_t best = s_argmax (logits, n_vocab);
    float max = best != SAMPLER_NO_TOKEN? logits [best]: NAN;
    double log_sum = isfinite (max)? log (s_sum_exp (logits, n_vocab, max)): 0;
    uint32_t found = s_select_top (logits, n_vocab, n_top, false, self->candidates);
    for (uint32_t index = 0; index < found; index++) {
        top [index].token = self->candidates [index].token;
        top [index].logprob = s_log_softmax (self->candidates [index].value, max, log_sum);
    }
}

uint32_t
sampler_beam_candidates (sampler_t *self, const sampler_seq_t *seq, const float *logits,
                         sampler_logprob_t *top, uint32_t n_top)
{
    uint32_t n_vocab = self->n_vocab;
    if (n_top > n_vocab)
        n_top = n_vocab;
    if (n_top == 0)
        return 0;
    const float *values = logits;
    if (seq && seq->n_vocab == n_vocab && s_seq_changes_logits (seq)) {
        memcpy (self->values, logits, n_vocab * sizeof (float));
        s_apply_seq (self, seq, self->values);
        values = self->values;
    }
    uint32_t best = s_argmax (values, n_vocab);
    float max = best != SAMPLER_NO_TOKEN? values [best]: NAN;
    if (!isfinite (max))
        return 0;                           //  nothing possible, or an infinite logit
    double log_sum = log (s_sum_exp (values, n_vocab, max));
    uint32_t found = s_select_top (values, n_vocab, n_top, true, self->candidates);
    for (uint32_t index = 0; index < found; index++) {
        top [index].token = self->candidates [index].token;
        top [index].logprob = s_log_softmax (self->candidates [index].value, max, log_sum);
    }
    return found;
}
