/*  test_sampler — npu/sampler: the generator, sequences and their parameters, every step
    of the sampling pipeline, seeds, log-probabilities.

    The library is held to a plain reference written here (ref_sample, ref_top_logprobs):
    explicit loops, a full sort of the vocabulary, exp () in double, and the draw as
    sampler.c documents it: u from a generator seeded with seed ^ splitmix64 (k), the kept
    tokens walked in id order until the running sum of weights exceeds u times their
    total. The library computes e^x in float (about one ulp) and sums in other orders, so
    the two can differ only when u falls within rounding of a boundary between two
    tokens; with continuous random logits and fixed seeds that does not happen, and the
    comparisons are exact on the tokens.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

//  --- Helpers ---------------------------------------------------------------------------

//  The first output of splitmix64 from this state (Vigna's splitmix64.c).
static uint64_t
test_splitmix64 (uint64_t state)
{
    uint64_t z = state + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

//  The uniform number of the draw for output k with this seed, as sampler.c documents.
static double
test_draw_uniform (uint64_t seed, uint32_t k)
{
    sampler_rng_t rng;
    sampler_rng_seed (&rng, seed ^ test_splitmix64 (k));
    return sampler_rng_uniform (&rng);
}

//  A standard normal number (Box-Muller).
static double
test_normal (sampler_rng_t *rng)
{
    double u = sampler_rng_uniform (rng);
    double v = sampler_rng_uniform (rng);
    return sqrt (-2 * log (1 - u)) * cos (6.283185307179586 * v);
}

static uint32_t
test_below (sampler_rng_t *rng, uint32_t n)
{
    return (uint32_t) (sampler_rng_uniform (rng) * n);
}

//  A sequence with these parameters (asserting it is valid), its prompt and outputs told.
static sampler_seq_t *
test_seq (const sampler_params_t *params, uint32_t n_vocab, const uint32_t *prompt,
          uint32_t n_prompt, const uint32_t *outputs, uint32_t n_outputs)
{
    char err [256] = "";
    sampler_seq_t *seq = sampler_seq_new (params, n_vocab, err, sizeof err);
    if (!seq)
        fprintf (stderr, "sampler_seq_new: %s\n", err);
    assert_non_null (seq);
    assert_int_equal (sampler_seq_add_prompt (seq, prompt, n_prompt), 0);
    assert_int_equal (sampler_seq_add_outputs (seq, outputs, n_outputs), 0);
    assert_int_equal (sampler_seq_n_outputs (seq), n_outputs);
    return seq;
}

//  Greedy with nothing else, for logprob and argmax checks.
static uint32_t
test_greedy (const float *logits, uint32_t n_vocab, float *logprob)
{
    sampler_t *sampler = sampler_new (n_vocab);
    assert_non_null (sampler);
    sampler_params_t params = { 0 };
    sampler_seq_t *seq = test_seq (&params, n_vocab, NULL, 0, NULL, 0);
    uint32_t token = sampler_sample (sampler, seq, logits, logprob);
    sampler_seq_destroy (&seq);
    sampler_destroy (&sampler);
    return token;
}

//  --- The reference -----------------------------------------------------------------------

typedef struct {
    float value;
    uint32_t token;
} ref_entry_t;

//  Higher value first, then lower id; NaN after every number.
static int
ref_compare (const void *a_p, const void *b_p)
{
    const ref_entry_t *a = (const ref_entry_t *) a_p;
    const ref_entry_t *b = (const ref_entry_t *) b_p;
    bool a_nan = isnan (a->value), b_nan = isnan (b->value);
    if (a_nan != b_nan)
        return a_nan? 1: -1;
    if (!a_nan && a->value != b->value)
        return a->value > b->value? -1: 1;
    return a->token < b->token? -1: a->token > b->token? 1: 0;
}

//  The first highest non-NaN logit; n_vocab when all are NaN.
static uint32_t
ref_argmax (const float *values, uint32_t n_vocab)
{
    uint32_t best = n_vocab;
    for (uint32_t token = 0; token < n_vocab; token++) {
        if (isnan (values [token]))
            continue;
        if (best == n_vocab || values [token] > values [best])
            best = token;
    }
    return best;
}

//  log sum e^(logit - max) over the non-NaN logits, in double; *max gets the highest
//  (NaN when all are NaN).
static double
ref_log_sum (const float *logits, uint32_t n_vocab, double *max)
{
    uint32_t best = ref_argmax (logits, n_vocab);
    *max = best == n_vocab? NAN: logits [best];
    double sum = 0;
    for (uint32_t index = 0; index < n_vocab; index++)
        if (!isnan (logits [index]))
            sum += exp ((double) logits [index] - *max);
    return log (sum);
}

//  log softmax (logits) [token], given ref_log_sum's answers.
static double
ref_log_softmax_of (float logit, double max, double log_sum)
{
    if (isnan (max) || isnan (logit))
        return NAN;
    if (isinf (max))
        return logit == max? 0: -INFINITY;
    return (double) logit - max - log_sum;
}

//  log softmax (logits) [token] in double, the plain way.
static double
ref_log_softmax (const float *logits, uint32_t n_vocab, uint32_t token)
{
    double max;
    double log_sum = ref_log_sum (logits, n_vocab, &max);
    return ref_log_softmax_of (logits [token], max, log_sum);
}

typedef struct {
    const float *logits;
    uint32_t n_vocab;
    sampler_params_t params;
    const uint32_t *prompt;
    uint32_t n_prompt;
    const uint32_t *outputs;
    uint32_t n_outputs;
} ref_case_t;

//  The values after logit_bias, min_tokens and the penalties, into values.
static void
ref_values (const ref_case_t *c, float *values)
{
    const sampler_params_t *p = &c->params;
    uint32_t n = c->n_vocab;
    memcpy (values, c->logits, n * sizeof (float));
    for (uint32_t index = 0; index < p->n_bias; index++)
        values [p->bias_tokens [index]] += p->bias_values [index];
    if (c->n_outputs < p->min_tokens)
        for (uint32_t index = 0; index < p->n_masked; index++)
            values [p->masked_tokens [index]] = -INFINITY;
    float repetition = p->repetition_penalty == 0? 1: p->repetition_penalty;
    if (repetition != 1) {
        bool *seen = (bool *) calloc (n, sizeof (bool));
        for (uint32_t index = 0; index < c->n_prompt; index++)
            seen [c->prompt [index]] = true;
        for (uint32_t index = 0; index < c->n_outputs; index++)
            seen [c->outputs [index]] = true;
        for (uint32_t token = 0; token < n; token++)
            if (seen [token]) {
                if (values [token] > 0)
                    values [token] /= repetition;
                else
                    values [token] *= repetition;
            }
        free (seen);
    }
    if (p->frequency_penalty != 0 || p->presence_penalty != 0) {
        uint32_t *count = (uint32_t *) calloc (n, sizeof (uint32_t));
        for (uint32_t index = 0; index < c->n_outputs; index++)
            count [c->outputs [index]]++;
        for (uint32_t token = 0; token < n; token++)
            if (count [token] > 0)
                values [token] -= (float) count [token] * p->frequency_penalty
                                + p->presence_penalty;
        free (count);
    }
}

static uint32_t
ref_sample (const ref_case_t *c, double *logprob)
{
    const sampler_params_t *p = &c->params;
    uint32_t n = c->n_vocab;
    float *values = (float *) malloc (n * sizeof (float));
    ref_values (c, values);

    uint32_t token;
    uint32_t best = ref_argmax (values, n);
    float inverse_temperature = p->temperature > 0? 1.0f / p->temperature: INFINITY;
    if (best == n || values [best] == -INFINITY) {
        token = ref_argmax (c->logits, n);
        if (token == n)
            token = 0;
    }
    else
    if (isinf (inverse_temperature) || isinf (values [best]))
        token = best;
    else {
        float max = values [best];
        //  Every possible token, sorted.
        ref_entry_t *sorted = (ref_entry_t *) malloc (n * sizeof (ref_entry_t));
        uint32_t count = 0;
        for (uint32_t index = 0; index < n; index++)
            if (!isnan (values [index]) && values [index] > -INFINITY) {
                sorted [count].value = values [index];
                sorted [count].token = index;
                count++;
            }
        qsort (sorted, count, sizeof (ref_entry_t), ref_compare);
        double *weight = (double *) malloc (count * sizeof (double));
        for (uint32_t index = 0; index < count; index++)
            weight [index] = exp ((double) ((sorted [index].value - max)
                                            * inverse_temperature));
        uint32_t keep = count;
        if (p->top_k > 0 && p->top_k < keep)
            keep = p->top_k;
        float top_p = p->top_p == 0? 1: p->top_p;
        if (top_p < 1) {
            double total = 0;
            for (uint32_t index = 0; index < keep; index++)
                total += weight [index];
            double cumulative = 0;
            for (uint32_t index = 0; index < keep; index++) {
                cumulative += weight [index];
                if (cumulative >= top_p * total) {
                    keep = index + 1;
                    break;
                }
            }
        }
        //  min_p, then the draw in id order.
        double *kept_weight = (double *) calloc (n, sizeof (double));
        for (uint32_t index = 0; index < keep; index++)
            if (weight [index] >= p->min_p)
                kept_weight [sorted [index].token] = weight [index];
        double total = 0;
        for (uint32_t index = 0; index < n; index++)
            total += kept_weight [index];
        double target = test_draw_uniform (p->seed, c->n_outputs) * total;
        double cumulative = 0;
        token = best;
        for (uint32_t index = 0; index < n; index++)
            if (kept_weight [index] > 0) {
                cumulative += kept_weight [index];
                token = index;
                if (target < cumulative)
                    break;
            }
        free (kept_weight);
        free (weight);
        free (sorted);
    }
    free (values);
    if (logprob)
        *logprob = ref_log_softmax (c->logits, n, token);
    return token;
}

//  The n_top most likely tokens, by a full sort.
static void
ref_top_logprobs (const float *logits, uint32_t n_vocab, uint32_t n_top,
                  uint32_t *tokens, double *logprobs)
{
    ref_entry_t *sorted = (ref_entry_t *) malloc (n_vocab * sizeof (ref_entry_t));
    for (uint32_t index = 0; index < n_vocab; index++) {
        sorted [index].value = logits [index];
        sorted [index].token = index;
    }
    qsort (sorted, n_vocab, sizeof (ref_entry_t), ref_compare);
    double max;
    double log_sum = ref_log_sum (logits, n_vocab, &max);
    for (uint32_t index = 0; index < n_top; index++) {
        tokens [index] = sorted [index].token;
        logprobs [index] = ref_log_softmax_of (sorted [index].value, max, log_sum);
    }
    free (sorted);
}

//  The library's logprob agrees with the reference's.
static void
test_assert_logprob (float actual, double expected)
{
    if (isnan (expected)) {
        assert_true (isnan (actual));
        return;
    }
    if (isinf (expected)) {
        assert_true (actual == expected);
        return;
    }
    //  The library's e^x is within 1.3e-7 (relative), so its log sum within about that;
    //  the result is then rounded to a float.
    double tolerance = 3e-7 + 1.2e-7 * fabs (expected);
    if (!(fabs (actual - expected) <= tolerance))
        fprintf (stderr, "logprob %.9g, expected %.9g\n", actual, expected);
    assert_true (fabs (actual - expected) <= tolerance);
}

//  --- Generator -------------------------------------------------------------------------

//  xoshiro256** from the state {1, 2, 3, 4} gives these (the authors' reference code).
static void
test_rng_reference_values (void **state)
{
    (void) state;
    sampler_rng_t rng = { { 1, 2, 3, 4 } };
    //  uniform() is the top 53 bits of each output times 2^-53.
    const uint64_t expected [4] = { 11520ULL, 0ULL, 1509978240ULL, 1215971899390074240ULL };
    for (int i = 0; i < 4; i++)
        assert_true (sampler_rng_uniform (&rng) == (double) (expected [i] >> 11) * 0x1.0p-53);

    //  Seeding fills the state with splitmix64's first four outputs for that seed.
    sampler_rng_seed (&rng, 0);
    assert_true (rng.s [0] == 0xE220A8397B1DCDAFULL);
    assert_true (rng.s [1] == 0x6E789E6AA1B965F4ULL);
    assert_true (rng.s [2] == 0x06C45D188009454FULL);
    assert_true (rng.s [3] == 0xF88BB8A8724C81ECULL);
    assert_true (test_splitmix64 (0) == 0xE220A8397B1DCDAFULL);
}

static void
test_rng_same_seed_same_sequence (void **state)
{
    (void) state;
    sampler_rng_t a, b, c;
    sampler_rng_seed (&a, 42);
    sampler_rng_seed (&b, 42);
    sampler_rng_seed (&c, 43);
    int differences = 0;
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        double x = sampler_rng_uniform (&a);
        double y = sampler_rng_uniform (&b);
        double z = sampler_rng_uniform (&c);
        assert_true (x == y);
        assert_true (x >= 0 && x < 1);
        assert_true (z >= 0 && z < 1);
        if (x != z)
            differences++;
        sum += x;
    }
    assert_true (differences > 9990);
    assert_true (fabs (sum / 10000 - 0.5) < 0.02);
}

//  --- Greedy and log-probabilities ------------------------------------------------------

static void
test_greedy_argmax (void **state)
{
    (void) state;
    const float logits [6] = { -3.0f, 1.5f, 0.25f, 7.0f, -10.0f, 6.999f };
    assert_int_equal (test_greedy (logits, 6, NULL), 3);

    //  A tie goes to the lowest id.
    const float tied [5] = { 1.0f, 4.0f, 2.0f, 4.0f, 4.0f };
    assert_int_equal (test_greedy (tied, 5, NULL), 1);

    //  All negative; the first is the highest.
    const float negative [3] = { -0.5f, -1.0f, -0.75f };
    assert_int_equal (test_greedy (negative, 3, NULL), 0);

    //  NaN is never chosen, wherever it is.
    const float with_nan [3] = { NAN, -1.0f, -2.0f };
    assert_int_equal (test_greedy (with_nan, 3, NULL), 1);
    const float nan_after [4] = { -5.0f, 3.0f, NAN, 2.0f };
    assert_int_equal (test_greedy (nan_after, 4, NULL), 1);

    //  One token.
    const float single [1] = { -100.0f };
    float logprob = 1;
    assert_int_equal (test_greedy (single, 1, &logprob), 0);
    assert_true (fabsf (logprob) < 1e-6f);

    //  +infinity is chosen; its logprob is 0.
    const float infinite [3] = { 1.0f, INFINITY, 2.0f };
    assert_int_equal (test_greedy (infinite, 3, &logprob), 1);
    assert_true (logprob == 0.0f);

    //  No sequence: greedy.
    sampler_t *sampler = sampler_new (6);
    assert_int_equal (sampler_sample (sampler, NULL, logits, NULL), 3);
    sampler_destroy (&sampler);
    assert_null (sampler);
}

static void
test_logprob (void **state)
{
    (void) state;
    //  log softmax by hand: 3 - log(e^1 + e^2 + e^3) = -0.40760596444...
    const float logits [3] = { 1.0f, 2.0f, 3.0f };
    float logprob = 0;
    assert_int_equal (test_greedy (logits, 3, &logprob), 2);
    double expected = 3.0 - log (exp (1.0) + exp (2.0) + exp (3.0));
    assert_true (fabs (logprob - expected) < 1e-6);
    assert_true (fabs (expected - -0.40760596444) < 1e-9);

    //  Large logits must not overflow: -log(1 + e^-1) = -0.31326168751...
    const float large [2] = { 1000.0f, 1001.0f };
    assert_int_equal (test_greedy (large, 2, &logprob), 1);
    assert_true (fabs (logprob - -0.31326168751) < 1e-6);

    //  Very negative logits must not underflow to -inf.
    const float small [2] = { -1000.0f, -1001.0f };
    assert_int_equal (test_greedy (small, 2, &logprob), 0);
    assert_true (fabs (logprob - -0.31326168751) < 1e-6);

    //  A large vocabulary of equal logits: each is log(1/n).
    static float flat [32000];
    for (int i = 0; i < 32000; i++)
        flat [i] = 0.5f;
    assert_int_equal (test_greedy (flat, 32000, &logprob), 0);
    assert_true (fabs (logprob - -log (32000.0)) < 1e-5);

    //  -inf logits have probability 0 and change nothing.
    const float masked [3] = { -INFINITY, 2.0f, 2.0f };
    assert_int_equal (test_greedy (masked, 3, &logprob), 1);
    assert_true (fabs (logprob - -log (2.0)) < 1e-6);

    //  NaN logits are left out of the sum.
    const float with_nan [3] = { NAN, 2.0f, 2.0f };
    assert_int_equal (test_greedy (with_nan, 3, &logprob), 1);
    assert_true (fabs (logprob - -log (2.0)) < 1e-6);
}

//  The sum behind the logprobs holds to the plain one in double over the whole range the
//  fast exponential covers, for every vocabulary length modulo its eight lanes.
static void
test_logprob_accuracy (void **state)
{
    (void) state;
    sampler_rng_t rng;
    sampler_rng_seed (&rng, 2024);
    const uint32_t sizes [] = { 1, 2, 7, 8, 9, 15, 17, 64, 65, 1000, 4099 };
    for (size_t size = 0; size < sizeof sizes / sizeof sizes [0]; size++) {
        uint32_t n = sizes [size];
        float *logits = (float *) malloc (n * sizeof (float));
        for (int trial = 0; trial < 20; trial++) {
            double spread = trial < 10? 3: 60;
            for (uint32_t index = 0; index < n; index++)
                logits [index] = (float) (spread * (sampler_rng_uniform (&rng) - 0.5)
                                          + 40 * (trial % 3));
            float logprob;
            uint32_t token = test_greedy (logits, n, &logprob);
            assert_int_equal (token, ref_argmax (logits, n));
            test_assert_logprob (logprob, ref_log_softmax (logits, n, token));
        }
        free (logits);
    }
}

//  --- Parameters ----------------------------------------------------------------------------

//  sampler_seq_new refuses params with a message naming what is wrong.
static void
test_assert_refused (const sampler_params_t *params, uint32_t n_vocab, const char *named)
{
    char err [256] = "";
    sampler_seq_t *seq = sampler_seq_new (params, n_vocab, err, sizeof err);
    assert_null (seq);
    if (!strstr (err, named))
        fprintf (stderr, "message '%s' does not name '%s'\n", err, named);
    assert_non_null (strstr (err, named));
}

static void
test_assert_accepted (const sampler_params_t *params, uint32_t n_vocab)
{
    char err [256] = "";
    sampler_seq_t *seq = sampler_seq_new (params, n_vocab, err, sizeof err);
    if (!seq)
        fprintf (stderr, "refused: %s\n", err);
    assert_non_null (seq);
    sampler_seq_destroy (&seq);
    assert_null (seq);
}

static void
test_params_validation (void **state)
{
    (void) state;
    sampler_params_t zero = { 0 };
    sampler_params_t p;
    test_assert_accepted (&zero, 10);

    p = zero; p.temperature = -0.1f;         test_assert_refused (&p, 10, "temperature");
    p = zero; p.temperature = NAN;           test_assert_refused (&p, 10, "temperature");
    p = zero; p.temperature = INFINITY;      test_assert_refused (&p, 10, "temperature");
    p = zero; p.top_p = 1.5f;                test_assert_refused (&p, 10, "top_p");
    p = zero; p.top_p = -0.1f;               test_assert_refused (&p, 10, "top_p");
    p = zero; p.top_p = NAN;                 test_assert_refused (&p, 10, "top_p");
    p = zero; p.min_p = -0.01f;              test_assert_refused (&p, 10, "min_p");
    p = zero; p.min_p = 1.01f;               test_assert_refused (&p, 10, "min_p");
    p = zero; p.min_p = NAN;                 test_assert_refused (&p, 10, "min_p");
    p = zero; p.presence_penalty = 2.01f;    test_assert_refused (&p, 10, "presence_penalty");
    p = zero; p.presence_penalty = NAN;      test_assert_refused (&p, 10, "presence_penalty");
    p = zero; p.frequency_penalty = -2.01f;  test_assert_refused (&p, 10, "frequency_penalty");
    p = zero; p.frequency_penalty = NAN;     test_assert_refused (&p, 10, "frequency_penalty");
    p = zero; p.repetition_penalty = -1.0f;  test_assert_refused (&p, 10, "repetition_penalty");
    p = zero; p.repetition_penalty = NAN;    test_assert_refused (&p, 10, "repetition_penalty");
    p = zero; p.repetition_penalty = INFINITY;
    test_assert_refused (&p, 10, "repetition_penalty");

    uint32_t tokens [2] = { 3, 10 };
    float biases [2] = { 1.0f, 2.0f };
    p = zero; p.masked_tokens = tokens; p.n_masked = 2;
    test_assert_refused (&p, 10, "masked");
    p = zero; p.n_masked = 1;
    test_assert_refused (&p, 10, "masked");
    p = zero; p.bias_tokens = tokens; p.bias_values = biases; p.n_bias = 2;
    test_assert_refused (&p, 10, "logit_bias");
    test_assert_accepted (&p, 11);
    p = zero; p.bias_tokens = tokens; p.n_bias = 1;
    test_assert_refused (&p, 10, "logit_bias");
    float too_big [1] = { 100.5f };
    p = zero; p.bias_tokens = tokens; p.bias_values = too_big; p.n_bias = 1;
    test_assert_refused (&p, 10, "logit_bias");
    float not_a_number [1] = { NAN };
    p = zero; p.bias_tokens = tokens; p.bias_values = not_a_number; p.n_bias = 1;
    test_assert_refused (&p, 10, "logit_bias");

    //  The ends of the ranges are accepted.
    p = zero;
    p.temperature = 2; p.top_p = 1; p.min_p = 1; p.presence_penalty = -2;
    p.frequency_penalty = 2; p.repetition_penalty = 2; p.top_k = 1000000;
    float ends [2] = { -100.0f, 100.0f };
    p.bias_tokens = tokens; p.bias_values = ends; p.n_bias = 1;
    p.masked_tokens = tokens; p.n_masked = 1; p.min_tokens = 5;
    test_assert_accepted (&p, 10);
    p.presence_penalty = 2; p.frequency_penalty = -2; p.min_p = 0; p.top_p = 1e-6f;
    test_assert_accepted (&p, 10);

    //  An empty vocabulary; no message buffer.
    test_assert_refused (&zero, 0, "vocabulary");
    p = zero; p.temperature = -1;
    assert_null (sampler_seq_new (&p, 10, NULL, 0));
    assert_null (sampler_new (0));
}

//  Tokens told must be in the vocabulary; a refused call changes nothing.
static void
test_seq_tokens (void **state)
{
    (void) state;
    sampler_params_t params = { 0 };
    params.frequency_penalty = 1;
    params.repetition_penalty = 2;
    sampler_seq_t *seq = test_seq (&params, 5, NULL, 0, NULL, 0);
    const uint32_t good [3] = { 0, 4, 4 };
    const uint32_t bad [3] = { 1, 5, 2 };
    assert_int_equal (sampler_seq_add_prompt (seq, good, 3), 0);
    assert_int_equal (sampler_seq_add_prompt (seq, bad, 3), -1);
    assert_int_equal (sampler_seq_add_outputs (seq, good, 3), 0);
    assert_int_equal (sampler_seq_n_outputs (seq), 3);
    assert_int_equal (sampler_seq_add_outputs (seq, bad, 3), -1);
    assert_int_equal (sampler_seq_n_outputs (seq), 3);
    assert_int_equal (sampler_seq_add_outputs (seq, NULL, 1), -1);
    assert_int_equal (sampler_seq_add_outputs (seq, NULL, 0), 0);
    //  Many outputs grow the array.
    for (uint32_t index = 0; index < 1000; index++)
        assert_int_equal (sampler_seq_add_outputs (seq, &good [index % 3], 1), 0);
    assert_int_equal (sampler_seq_n_outputs (seq), 1003);
    //  The refused calls had no effect: token 1, in both, is not penalized (2.5 would
    //  become 1.25 or 1.5, under token 3's 2); 0 and 4 are.
    sampler_t *sampler = sampler_new (5);
    const float logits [5] = { 3.0f, 2.5f, 0.4f, 2.0f, 300.0f };
    //  0: 3 / 2 - 335 * 1; 4: 300 / 2 - 668 * 1.
    assert_int_equal (sampler_sample (sampler, seq, logits, NULL), 1);
    sampler_destroy (&sampler);
    sampler_seq_destroy (&seq);
    assert_null (seq);
}

//  The sequence copies its parameters' arrays.
static void
test_seq_copies_params (void **state)
{
    (void) state;
    uint32_t bias_tokens [1] = { 2 };
    float bias_values [1] = { 10.0f };
    uint32_t masked [1] = { 1 };
    sampler_params_t params = { 0 };
    params.bias_tokens = bias_tokens;
    params.bias_values = bias_values;
    params.n_bias = 1;
    params.masked_tokens = masked;
    params.n_masked = 1;
    params.min_tokens = 1;
    sampler_seq_t *seq = test_seq (&params, 4, NULL, 0, NULL, 0);
    bias_tokens [0] = 0;
    bias_values [0] = -100.0f;
    masked [0] = 2;
    sampler_t *sampler = sampler_new (4);
    const float logits [4] = { 1.0f, 5.0f, 0.0f, 2.0f };
    //  Token 2 gets +10 and token 1 is masked, as when the sequence was made.
    assert_int_equal (sampler_sample (sampler, seq, logits, NULL), 2);
    sampler_destroy (&sampler);
    sampler_seq_destroy (&seq);
}

//  --- Each step alone -----------------------------------------------------------------------

//  One greedy choice with these params, prompt and outputs.
static uint32_t
test_choose (const sampler_params_t *params, const float *logits, uint32_t n_vocab,
             const uint32_t *prompt, uint32_t n_prompt, const uint32_t *outputs,
             uint32_t n_outputs)
{
    sampler_t *sampler = sampler_new (n_vocab);
    sampler_seq_t *seq = test_seq (params, n_vocab, prompt, n_prompt, outputs, n_outputs);
    uint32_t token = sampler_sample (sampler, seq, logits, NULL);
    sampler_seq_destroy (&seq);
    sampler_destroy (&sampler);
    return token;
}

static void
test_logit_bias (void **state)
{
    (void) state;
    const float logits [4] = { 1.0f, 9.0f, 2.0f, -3.0f };
    uint32_t tokens [2] = { 1, 3 };
    float ban_and_force [2] = { -100.0f, 100.0f };
    sampler_params_t params = { 0 };
    params.bias_tokens = tokens;
    params.bias_values = ban_and_force;
    params.n_bias = 2;
    assert_int_equal (test_choose (&params, logits, 4, NULL, 0, NULL, 0), 3);
    //  Sampling too: -100 bans, +100 forces, at any seed.
    params.temperature = 1.0f;
    sampler_t *sampler = sampler_new (4);
    sampler_seq_t *seq = test_seq (&params, 4, NULL, 0, NULL, 0);
    for (uint32_t k = 0; k < 500; k++) {
        assert_int_equal (sampler_sample (sampler, seq, logits, NULL), 3);
        uint32_t out = 3;
        assert_int_equal (sampler_seq_add_outputs (seq, &out, 1), 0);
    }
    sampler_seq_destroy (&seq);
    //  A ban alone: token 1 never comes, though it is e^7 times likelier than the rest.
    float ban [1] = { -100.0f };
    params.bias_values = ban;
    params.n_bias = 1;
    seq = test_seq (&params, 4, NULL, 0, NULL, 0);
    int counts [4] = { 0 };
    for (uint32_t k = 0; k < 2000; k++) {
        counts [sampler_sample (sampler, seq, logits, NULL)]++;
        uint32_t out = 0;
        assert_int_equal (sampler_seq_add_outputs (seq, &out, 1), 0);
    }
    assert_int_equal (counts [1], 0);
    assert_true (counts [0] > 0 && counts [2] > 0 && counts [3] > 0);
    sampler_seq_destroy (&seq);
    sampler_destroy (&sampler);

    //  A bias is added exactly: 2 + 0.5 beats 2.25 and loses to 2.75.
    const float close [3] = { 2.25f, 2.0f, 0.0f };
    float half [1] = { 0.5f };
    uint32_t one [1] = { 1 };
    sampler_params_t exact = { 0 };
    exact.bias_tokens = one;
    exact.bias_values = half;
    exact.n_bias = 1;
    assert_int_equal (test_choose (&exact, close, 3, NULL, 0, NULL, 0), 1);
    const float closer [3] = { 2.75f, 2.0f, 0.0f };
    assert_int_equal (test_choose (&exact, closer, 3, NULL, 0, NULL, 0), 0);
}

static void
test_min_tokens (void **state)
{
    (void) state;
    //  Token 2 (say, end of text) is the most likely; 0 comes next.
    const float logits [4] = { 1.0f, 0.5f, 5.0f, -1.0f };
    uint32_t masked [1] = { 2 };
    sampler_params_t params = { 0 };
    params.masked_tokens = masked;
    params.n_masked = 1;
    params.min_tokens = 3;
    sampler_t *sampler = sampler_new (4);
    sampler_seq_t *seq = test_seq (&params, 4, NULL, 0, NULL, 0);
    for (uint32_t step = 0; step < 6; step++) {
        float logprob;
        uint32_t token = sampler_sample (sampler, seq, logits, &logprob);
        assert_int_equal (token, step < 3? 0: 2);
        //  The logprob is the model's own, mask or not.
        test_assert_logprob (logprob, ref_log_softmax (logits, 4, token));
        assert_int_equal (sampler_seq_add_outputs (seq, &token, 1), 0);
    }
    sampler_seq_destroy (&seq);

    //  Sampling never draws a masked token before min_tokens.
    uint32_t two [2] = { 2, 0 };
    params.masked_tokens = two;
    params.n_masked = 2;
    params.min_tokens = 400;
    params.temperature = 2.0f;
    seq = test_seq (&params, 4, NULL, 0, NULL, 0);
    int counts [4] = { 0 };
    for (uint32_t step = 0; step < 400; step++) {
        uint32_t token = sampler_sample (sampler, seq, logits, NULL);
        counts [token]++;
        assert_int_equal (sampler_seq_add_outputs (seq, &token, 1), 0);
    }
    assert_int_equal (counts [0], 0);
    assert_int_equal (counts [2], 0);
    assert_true (counts [1] > 0 && counts [3] > 0);
    int after [4] = { 0 };
    for (uint32_t step = 0; step < 400; step++) {
        uint32_t token = sampler_sample (sampler, seq, logits, NULL);
        after [token]++;
        assert_int_equal (sampler_seq_add_outputs (seq, &token, 1), 0);
    }
    assert_true (after [2] > 200);
    sampler_seq_destroy (&seq);
    sampler_destroy (&sampler);
}

//  A penalty that should leave a token's value at exactly v: probe with a competitor
//  just above and just below (2^-12 away) that nothing else touches.
static void
test_assert_penalized_value (const sampler_params_t *params, float logit, float expected,
                             const uint32_t *prompt, uint32_t n_prompt,
                             const uint32_t *outputs, uint32_t n_outputs)
{
    //  Token 0 is the competitor, token 1 the penalized one, 2 and 3 far below.
    const float step = 0x1.0p-12f;
    float logits [4] = { expected + step, logit, -1000.0f, -1000.0f };
    assert_int_equal (test_choose (params, logits, 4, prompt, n_prompt, outputs, n_outputs),
                      0);
    logits [0] = expected - step;
    assert_int_equal (test_choose (params, logits, 4, prompt, n_prompt, outputs, n_outputs),
                      1);
}

static void
test_frequency_presence (void **state)
{
    (void) state;
    //  Token 1 generated three times: 3 * 0.5 + 0.25 off.
    const uint32_t outputs [5] = { 1, 2, 1, 3, 1 };
    sampler_params_t params = { 0 };
    params.frequency_penalty = 0.5f;
    params.presence_penalty = 0.25f;
    test_assert_penalized_value (&params, 4.0f, 4.0f - 1.75f, NULL, 0, outputs, 5);
    //  Negative penalties raise it.
    params.frequency_penalty = -1.0f;
    params.presence_penalty = -2.0f;
    test_assert_penalized_value (&params, 4.0f, 4.0f + 5.0f, NULL, 0, outputs, 5);
    //  Presence alone: once, however many times.
    params.frequency_penalty = 0;
    params.presence_penalty = 1.5f;
    test_assert_penalized_value (&params, -2.0f, -3.5f, NULL, 0, outputs, 5);
    //  Frequency alone.
    params.frequency_penalty = 0.75f;
    params.presence_penalty = 0;
    test_assert_penalized_value (&params, 1.0f, 1.0f - 2.25f, NULL, 0, outputs, 5);
    //  Tokens of the prompt are not counted.
    const uint32_t prompt [3] = { 1, 1, 1 };
    test_assert_penalized_value (&params, 1.0f, 1.0f - 0.75f, prompt, 3, outputs + 2, 1);
    //  Not generated: untouched.
    const uint32_t others [2] = { 2, 3 };
    test_assert_penalized_value (&params, 1.0f, 1.0f, prompt, 3, others, 2);
}

static void
test_repetition_penalty (void **state)
{
    (void) state;
    sampler_params_t params = { 0 };
    params.repetition_penalty = 2.0f;
    const uint32_t prompt [2] = { 1, 3 };
    const uint32_t outputs [2] = { 3, 1 };
    const uint32_t elsewhere [2] = { 2, 3 };
    //  Positive logits are divided, negative ones multiplied; once however often seen.
    test_assert_penalized_value (&params, 3.0f, 1.5f, prompt, 2, NULL, 0);
    test_assert_penalized_value (&params, -1.5f, -3.0f, prompt, 2, NULL, 0);
    test_assert_penalized_value (&params, 3.0f, 1.5f, NULL, 0, outputs, 2);
    test_assert_penalized_value (&params, -1.5f, -3.0f, NULL, 0, outputs, 2);
    test_assert_penalized_value (&params, 3.0f, 1.5f, prompt, 2, outputs, 2);
    test_assert_penalized_value (&params, 3.0f, 3.0f, elsewhere, 2, elsewhere, 2);
    //  Below 1 it favours repeats.
    params.repetition_penalty = 0.5f;
    test_assert_penalized_value (&params, 3.0f, 6.0f, prompt, 2, NULL, 0);
    test_assert_penalized_value (&params, -3.0f, -1.5f, NULL, 0, outputs, 2);
    //  Repetition first, then frequency and presence (as vLLM).
    params.repetition_penalty = 2.0f;
    params.frequency_penalty = 1.0f;
    params.presence_penalty = 0.5f;
    test_assert_penalized_value (&params, 4.0f, 4.0f / 2 - 1.0f - 0.5f, prompt, 2,
                                 outputs + 1, 1);
    //  After logit_bias: (1 + 3) / 2.
    uint32_t bias_token [1] = { 1 };
    float bias_value [1] = { 3.0f };
    params.frequency_penalty = 0;
    params.presence_penalty = 0;
    params.bias_tokens = bias_token;
    params.bias_values = bias_value;
    params.n_bias = 1;
    test_assert_penalized_value (&params, 1.0f, 2.0f, prompt, 2, NULL, 0);
}

//  top_k 1 and a tiny top_p are greedy, whatever the temperature and seed.
static void
test_top_k_one_top_p_tiny_are_greedy (void **state)
{
    (void) state;
    sampler_rng_t rng;
    sampler_rng_seed (&rng, 5);
    const uint32_t n = 1000;
    float *logits = (float *) malloc (n * sizeof (float));
    sampler_t *sampler = sampler_new (n);
    for (int trial = 0; trial < 200; trial++) {
        for (uint32_t index = 0; index < n; index++)
            logits [index] = (float) test_normal (&rng);
        //  Sometimes a tie for the highest.
        if (trial % 4 == 0)
            logits [n - 1] = logits [ref_argmax (logits, n)];
        uint32_t greedy = ref_argmax (logits, n);
        sampler_params_t params = { 0 };
        params.temperature = 5.0f;
        params.seed = (uint64_t) trial;
        params.top_k = 1;
        sampler_seq_t *seq = test_seq (&params, n, NULL, 0, NULL, 0);
        assert_int_equal (sampler_sample (sampler, seq, logits, NULL), greedy);
        sampler_seq_destroy (&seq);
        params.top_k = 0;
        params.top_p = 1e-6f;
        seq = test_seq (&params, n, NULL, 0, NULL, 0);
        assert_int_equal (sampler_sample (sampler, seq, logits, NULL), greedy);
        sampler_seq_destroy (&seq);
        //  min_p 1 keeps the highest tokens: one, or both of a tie.
        params.top_p = 0;
        params.min_p = 1.0f;
        seq = test_seq (&params, n, NULL, 0, NULL, 0);
        uint32_t token = sampler_sample (sampler, seq, logits, NULL);
        if (trial % 4 == 0)
            assert_true (token == greedy || token == n - 1);
        else
            assert_int_equal (token, greedy);
        sampler_seq_destroy (&seq);
    }
    sampler_destroy (&sampler);
    free (logits);
}

//  Draw many times (one draw per output k) and count the tokens.
static void
test_count_draws (const sampler_params_t *params, const float *logits, uint32_t n_vocab,
                  uint32_t draws, int *counts)
{
    sampler_t *sampler = sampler_new (n_vocab);
    sampler_seq_t *seq = test_seq (params, n_vocab, NULL, 0, NULL, 0);
    memset (counts, 0, n_vocab * sizeof (int));
    for (uint32_t draw = 0; draw < draws; draw++) {
        uint32_t token = sampler_sample (sampler, seq, logits, NULL);
        assert_true (token < n_vocab);
        counts [token]++;
        assert_int_equal (sampler_seq_add_outputs (seq, &token, 1), 0);
    }
    sampler_seq_destroy (&seq);
    sampler_destroy (&sampler);
}

//  top_k, top_p and min_p keep the right tokens, and the draw follows their weights.
static void
test_top_k_top_p_min_p (void **state)
{
    (void) state;
    //  Probabilities 0.4, 0.3, 0.2, 0.1 at temperature 1.
    const float logits [4] = { logf (0.4f), logf (0.3f), logf (0.2f), logf (0.1f) };
    int counts [4];
    sampler_params_t params = { 0 };
    params.temperature = 1.0f;
    params.seed = 77;

    params.top_k = 2;                   //  0.4 : 0.3
    test_count_draws (&params, logits, 4, 70000, counts);
    assert_int_equal (counts [2] + counts [3], 0);
    assert_true (fabs (counts [0] / 70000.0 - 4.0 / 7) < 0.01);

    params.top_k = 0;
    params.top_p = 0.65f;               //  0.4 + 0.3 reaches it
    test_count_draws (&params, logits, 4, 70000, counts);
    assert_int_equal (counts [2] + counts [3], 0);
    assert_true (fabs (counts [1] / 70000.0 - 3.0 / 7) < 0.01);

    params.top_p = 0.75f;               //  needs the third
    test_count_draws (&params, logits, 4, 90000, counts);
    assert_int_equal (counts [3], 0);
    assert_true (fabs (counts [2] / 90000.0 - 2.0 / 9) < 0.01);

    params.top_p = 0.35f;               //  the first alone
    test_count_draws (&params, logits, 4, 1000, counts);
    assert_int_equal (counts [0], 1000);

    //  top_p after top_k renormalizes over the top k: 0.4 / 0.7 = 0.57 < 0.6.
    params.top_k = 2;
    params.top_p = 0.6f;
    test_count_draws (&params, logits, 4, 20000, counts);
    assert_true (counts [1] > 0);
    assert_int_equal (counts [2] + counts [3], 0);
    params.top_p = 0.55f;
    test_count_draws (&params, logits, 4, 1000, counts);
    assert_int_equal (counts [0], 1000);

    //  Reaching top_p exactly is enough: of four equal tokens, two make one half; so
    //  with top_k 4 out of eight.
    const float equal [8] = { 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f };
    int equal_counts [8];
    params.top_k = 0;
    params.top_p = 0.5f;
    test_count_draws (&params, equal, 4, 4000, equal_counts);
    assert_int_equal (equal_counts [2] + equal_counts [3], 0);
    assert_true (equal_counts [0] > 1800 && equal_counts [1] > 1800);
    params.top_k = 4;
    test_count_draws (&params, equal, 8, 4000, equal_counts);
    assert_int_equal (equal_counts [0] + equal_counts [1], 4000);
    //  And past the 64 highest that top_p alone tries first: 75 of 100.
    float hundred [100];
    int hundred_counts [100];
    for (int index = 0; index < 100; index++)
        hundred [index] = -2.0f;
    params.top_k = 0;
    params.top_p = 0.75f;
    test_count_draws (&params, hundred, 100, 20000, hundred_counts);
    for (int index = 0; index < 100; index++)
        assert_true (index < 75? hundred_counts [index] > 150: hundred_counts [index] == 0);

    //  Reaching top_p exactly at the end of a group of equal values: 128 tokens weigh 1
    //  and 256 weigh one half (e^-0.6931472 is 0.5 to a float: the float is within
    //  2e-9 of ln 2), 384 in all; one half of the total is the first group exactly.
    float groups [384];
    int group_counts [384];
    for (int index = 0; index < 384; index++)
        groups [index] = index % 3 == 0? 0.0f: -0.6931472f;
    params.top_p = 0.5f;
    test_count_draws (&params, groups, 384, 4000, group_counts);
    for (int index = 0; index < 384; index++)
        if (index % 3)
            assert_int_equal (group_counts [index], 0);

    //  min_p 0.6: 0.3 / 0.4 stays, 0.2 / 0.4 goes.
    params.top_k = 0;
    params.top_p = 0;
    params.min_p = 0.6f;
    test_count_draws (&params, logits, 4, 70000, counts);
    assert_int_equal (counts [2] + counts [3], 0);
    assert_true (fabs (counts [0] / 70000.0 - 4.0 / 7) < 0.01);
    //  min_p is relative to the highest after temperature: at temperature 0.5 the
    //  weights are 1, 0.5625, 0.25, 0.0625; 0.3 keeps two.
    params.min_p = 0.3f;
    params.temperature = 0.5f;
    test_count_draws (&params, logits, 4, 20000, counts);
    assert_int_equal (counts [2] + counts [3], 0);
    assert_true (counts [1] > 0);
}

//  Frequencies of many draws follow softmax(logits / T); the reported logprob is the
//  model's own.
static void
test_temperature_frequencies (void **state)
{
    (void) state;
    const float logits [5] = { 0.0f, 1.0f, 2.0f, -INFINITY, 0.5f };
    const float temperature = 0.7f;
    double expected [5], total = 0;
    for (int i = 0; i < 5; i++) {
        expected [i] = exp ((double) logits [i] / temperature);
        total += expected [i];
    }
    for (int i = 0; i < 5; i++)
        expected [i] /= total;

    sampler_params_t params = { 0 };
    params.temperature = temperature;
    params.seed = 12345;
    sampler_t *sampler = sampler_new (5);
    sampler_seq_t *seq = test_seq (&params, 5, NULL, 0, NULL, 0);
    const int draws = 200000;
    int counts [5] = { 0 };
    double log_sum = log (exp (0.0) + exp (1.0) + exp (2.0) + exp (0.5));
    for (int d = 0; d < draws; d++) {
        float logprob = 0;
        uint32_t token = sampler_sample (sampler, seq, logits, &logprob);
        assert_true (token < 5);
        counts [token]++;
        assert_true (fabs (logprob - (logits [token] - log_sum)) < 1e-6);
        assert_int_equal (sampler_seq_add_outputs (seq, &token, 1), 0);
    }
    assert_int_equal (counts [3], 0);
    for (int i = 0; i < 5; i++)
        assert_true (fabs ((double) counts [i] / draws - expected [i]) < 0.005);
    sampler_seq_destroy (&seq);

    //  A very low temperature is greedy; a high one is close to uniform.
    const float close [4] = { 0.1f, 0.3f, 0.2f, 0.0f };
    params.temperature = 1e-4f;
    int low [4];
    test_count_draws (&params, close, 4, 1000, low);
    assert_int_equal (low [1], 1000);
    params.temperature = 1000.0f;
    int high [4];
    test_count_draws (&params, close, 4, 40000, high);
    for (int i = 0; i < 4; i++)
        assert_true (fabs (high [i] / 40000.0 - 0.25) < 0.015);
    //  So small that 1 / temperature overflows: greedy.
    params.temperature = 1e-39f;
    test_count_draws (&params, close, 4, 100, low);
    assert_int_equal (low [1], 100);
    sampler_destroy (&sampler);
}

//  --- Seeds ---------------------------------------------------------------------------------

//  The draw for output k uses sampler_rng_seed (seed ^ splitmix64 (k)): with n equal
//  logits (weights exactly 1) the token is floor (u * n).
static void
test_seed_derivation (void **state)
{
    (void) state;
    const uint32_t n = 16;
    float logits [16];
    for (uint32_t index = 0; index < n; index++)
        logits [index] = 0.25f;
    const uint64_t seeds [3] = { 0, 42, 0xFEEDFACECAFEBEEFULL };
    sampler_t *sampler = sampler_new (n);
    for (int s = 0; s < 3; s++) {
        sampler_params_t params = { 0 };
        params.temperature = 0.8f;
        params.seed = seeds [s];
        sampler_seq_t *seq = test_seq (&params, n, NULL, 0, NULL, 0);
        for (uint32_t k = 0; k < 300; k++) {
            uint32_t token = sampler_sample (sampler, seq, logits, NULL);
            uint32_t expected = (uint32_t) (test_draw_uniform (seeds [s], k) * n);
            assert_int_equal (token, expected);
            assert_int_equal (sampler_seq_add_outputs (seq, &token, 1), 0);
        }
        sampler_seq_destroy (&seq);
    }
    sampler_destroy (&sampler);
}

//  The same seed and outputs give the same token whatever ran in between; a sequence
//  made again from its outputs (preempted, recomputed) continues the same; another k
//  draws from another stream.
static void
test_seed_independence (void **state)
{
    (void) state;
    const uint32_t n = 5000;
    sampler_rng_t rng;
    sampler_rng_seed (&rng, 9);
    float *logits = (float *) malloc (n * sizeof (float));
    float *other = (float *) malloc (n * sizeof (float));
    for (uint32_t index = 0; index < n; index++) {
        logits [index] = (float) test_normal (&rng);
        other [index] = (float) (3 * test_normal (&rng));
    }
    sampler_params_t params = { 0 };
    params.temperature = 1.0f;
    params.top_p = 0.95f;
    params.seed = 1234;
    params.frequency_penalty = 0.1f;

    //  Alone.
    uint32_t alone [50];
    sampler_t *sampler = sampler_new (n);
    sampler_seq_t *seq = test_seq (&params, n, NULL, 0, NULL, 0);
    for (int step = 0; step < 50; step++) {
        alone [step] = sampler_sample (sampler, seq, logits, NULL);
        assert_int_equal (sampler_seq_add_outputs (seq, &alone [step], 1), 0);
    }
    sampler_seq_destroy (&seq);

    //  With other sequences (other seeds, parameters and logits) in between, on a
    //  fresh sampler; and a copy made anew from the outputs at step 25.
    sampler_t *shared = sampler_new (n);
    seq = test_seq (&params, n, NULL, 0, NULL, 0);
    sampler_params_t noisy = { 0 };
    noisy.temperature = 1.3f;
    noisy.top_k = 50;
    noisy.repetition_penalty = 1.2f;
    noisy.presence_penalty = 1.0f;
    sampler_seq_t *others [3];
    for (int o = 0; o < 3; o++) {
        noisy.seed = (uint64_t) o;
        others [o] = test_seq (&noisy, n, alone, 10, NULL, 0);
    }
    for (int step = 0; step < 50; step++) {
        for (int o = 0; o < 3; o++) {
            uint32_t token = sampler_sample (shared, others [o], other, NULL);
            assert_int_equal (sampler_seq_add_outputs (others [o], &token, 1), 0);
        }
        uint32_t token = sampler_sample (shared, seq, logits, NULL);
        assert_int_equal (token, alone [step]);
        assert_int_equal (sampler_seq_add_outputs (seq, &token, 1), 0);
        if (step == 25) {
            sampler_seq_t *again = test_seq (&params, n, NULL, 0, alone, 26);
            assert_int_equal (sampler_sample (shared, again, logits, NULL), alone [26]);
            sampler_seq_destroy (&again);
        }
    }
    for (int o = 0; o < 3; o++)
        sampler_seq_destroy (&others [o]);
    sampler_seq_destroy (&seq);

    //  The draws of consecutive k are different numbers: over a flat vocabulary of 5000,
    //  the tokens at k and k + 1 (same logits, no penalties) almost never repeat, and
    //  another seed gives other tokens.
    for (uint32_t index = 0; index < n; index++)
        logits [index] = 0;
    params.frequency_penalty = 0;
    params.top_p = 0;
    seq = test_seq (&params, n, NULL, 0, NULL, 0);
    params.seed = 1235;
    sampler_seq_t *next_seed = test_seq (&params, n, NULL, 0, NULL, 0);
    uint32_t previous = n;
    int repeats = 0, same_as_next_seed = 0;
    for (int step = 0; step < 200; step++) {
        uint32_t token = sampler_sample (shared, seq, logits, NULL);
        uint32_t token_next_seed = sampler_sample (shared, next_seed, logits, NULL);
        repeats += token == previous;
        same_as_next_seed += token == token_next_seed;
        previous = token;
        assert_int_equal (sampler_seq_add_outputs (seq, &token, 1), 0);
        assert_int_equal (sampler_seq_add_outputs (next_seed, &token, 1), 0);
    }
    assert_true (repeats < 3);
    assert_true (same_as_next_seed < 3);
    sampler_seq_destroy (&next_seed);
    sampler_seq_destroy (&seq);
    sampler_destroy (&shared);
    sampler_destroy (&sampler);
    free (other);
    free (logits);
}

//  --- Nothing left ------------------------------------------------------------------------

static void
test_nothing_left (void **state)
{
    (void) state;
    uint32_t all [3] = { 0, 1, 2 };
    sampler_params_t params = { 0 };
    params.masked_tokens = all;
    params.n_masked = 3;
    params.min_tokens = 1;
    const float logits [3] = { 1.0f, 3.0f, 2.0f };
    //  Everything masked: the greedy choice over the model's logits, greedy or not.
    float logprob;
    sampler_t *sampler = sampler_new (3);
    for (int greedy = 0; greedy < 2; greedy++) {
        params.temperature = greedy? 0.0f: 1.0f;
        sampler_seq_t *seq = test_seq (&params, 3, NULL, 0, NULL, 0);
        assert_int_equal (sampler_sample (sampler, seq, logits, &logprob), 1);
        test_assert_logprob (logprob, ref_log_softmax (logits, 3, 1));
        sampler_seq_destroy (&seq);
    }
    //  All NaN: token 0, logprob NaN.
    const float nan3 [3] = { NAN, NAN, NAN };
    sampler_seq_t *seq = test_seq (&params, 3, NULL, 0, NULL, 0);
    assert_int_equal (sampler_sample (sampler, seq, nan3, &logprob), 0);
    assert_true (isnan (logprob));
    sampler_seq_destroy (&seq);
    //  All -inf but not masked: the first.
    params.n_masked = 0;
    const float none [3] = { -INFINITY, -INFINITY, -INFINITY };
    seq = test_seq (&params, 3, NULL, 0, NULL, 0);
    assert_int_equal (sampler_sample (sampler, seq, none, NULL), 0);
    sampler_seq_destroy (&seq);
    //  NaN and -inf: the -inf.
    const float mixed [3] = { NAN, -INFINITY, NAN };
    seq = test_seq (&params, 3, NULL, 0, NULL, 0);
    assert_int_equal (sampler_sample (sampler, seq, mixed, NULL), 1);
    sampler_seq_destroy (&seq);
    //  NaN logits are never drawn.
    params.temperature = 1.0f;
    const float some_nan [3] = { NAN, 0.0f, 0.0f };
    int counts [3];
    test_count_draws (&params, some_nan, 3, 1000, counts);
    assert_int_equal (counts [0], 0);
    assert_true (counts [1] > 400 && counts [2] > 400);
    //  +infinity after the steps: taken.
    const float infinite [3] = { 0.0f, 0.0f, INFINITY };
    test_count_draws (&params, infinite, 3, 100, counts);
    assert_int_equal (counts [2], 100);
    sampler_destroy (&sampler);
}

//  --- Against the reference -------------------------------------------------------------

//  Random logits: normal, sometimes quantized (ties), with some -inf and NaN.
static void
test_random_logits (sampler_rng_t *rng, float *logits, uint32_t n, int kind)
{
    double scale = kind % 3 == 0? 0.3: kind % 3 == 1? 2.0: 6.0;
    for (uint32_t index = 0; index < n; index++) {
        double value = scale * test_normal (rng);
        if (kind % 4 == 3)
            value = floor (value * 2.7) / 2.7;      //  ties
        logits [index] = (float) value;
        double roll = sampler_rng_uniform (rng);
        if (kind % 5 == 4 && roll < 0.05)
            logits [index] = -INFINITY;
        else
        if (kind % 7 == 6 && roll < 0.02)
            logits [index] = NAN;
    }
    if (kind % 11 == 10)                            //  a few sure tokens
        for (int sure = 0; sure < 3; sure++)
            logits [test_below (rng, n)] += 12.0f;
}

static void
test_random_params (sampler_rng_t *rng, uint32_t n, sampler_params_t *p,
                    uint32_t *bias_tokens, float *bias_values, uint32_t *masked)
{
    const float temperatures [6] = { 0.0f, 0.3f, 0.7f, 1.0f, 1.0f, 1.6f };
    const float top_ps [6] = { 0.0f, 1.0f, 0.1f, 0.5f, 0.9f, 0.99f };
    const float min_ps [5] = { 0.0f, 0.0f, 0.01f, 0.1f, 0.5f };
    memset (p, 0, sizeof *p);
    p->temperature = temperatures [test_below (rng, 6)];
    uint32_t top_k_choice = test_below (rng, 6);
    p->top_k = top_k_choice == 0? 0: top_k_choice == 1? 1: top_k_choice == 2? 40:
               top_k_choice == 3? n / 2 + 1: top_k_choice == 4? n: n + 3;
    if (test_below (rng, 2) == 0)
        p->top_k = 0;
    p->top_p = top_ps [test_below (rng, 6)];
    p->min_p = min_ps [test_below (rng, 5)];
    if (test_below (rng, 3) == 0) {
        p->presence_penalty = (float) (4 * sampler_rng_uniform (rng) - 2);
        p->frequency_penalty = (float) (4 * sampler_rng_uniform (rng) - 2);
    }
    if (test_below (rng, 3) == 0)
        p->repetition_penalty = (float) (0.5 + sampler_rng_uniform (rng));
    p->seed = ((uint64_t) test_below (rng, 1u << 31) << 32) | test_below (rng, 1u << 31);
    if (test_below (rng, 3) == 0) {
        p->n_bias = 1 + test_below (rng, 8);
        for (uint32_t index = 0; index < p->n_bias; index++) {
            bias_tokens [index] = test_below (rng, n);
            bias_values [index] = (float) (200 * sampler_rng_uniform (rng) - 100);
            if (index == 0 && test_below (rng, 2))
                bias_values [index] = test_below (rng, 2)? 100.0f: -100.0f;
        }
        p->bias_tokens = bias_tokens;
        p->bias_values = bias_values;
    }
    if (test_below (rng, 4) == 0) {
        p->n_masked = 1 + test_below (rng, 4);
        for (uint32_t index = 0; index < p->n_masked; index++)
            masked [index] = test_below (rng, n);
        p->masked_tokens = masked;
        p->min_tokens = test_below (rng, 20);
    }
}

//  Many random logits and parameter combinations, the token and logprob against the
//  reference, through one shared sampler (so leftovers in its scratch would show).
static void
test_against_reference (void **state)
{
    (void) state;
    sampler_rng_t rng;
    sampler_rng_seed (&rng, 31337);
    const uint32_t sizes [] = { 1, 2, 3, 9, 64, 65, 300, 1000, 5000 };
    int compared = 0, sampled = 0;
    for (size_t size = 0; size < sizeof sizes / sizeof sizes [0]; size++) {
        uint32_t n = sizes [size];
        sampler_t *sampler = sampler_new (n);
        float *logits = (float *) malloc (n * sizeof (float));
        uint32_t prompt [64], outputs [64];
        uint32_t bias_tokens [8], masked [4];
        float bias_values [8];
        int trials = n >= 1000? 400: 600;
        for (int trial = 0; trial < trials; trial++) {
            test_random_logits (&rng, logits, n, trial);
            ref_case_t c = { 0 };
            c.logits = logits;
            c.n_vocab = n;
            test_random_params (&rng, n, &c.params, bias_tokens, bias_values, masked);
            c.n_prompt = test_below (&rng, 64);
            c.n_outputs = test_below (&rng, 40);
            for (uint32_t index = 0; index < c.n_prompt; index++)
                prompt [index] = test_below (&rng, n);
            for (uint32_t index = 0; index < c.n_outputs; index++)
                //  Often repeating a few tokens, for the counts.
                outputs [index] = index > 0 && test_below (&rng, 2)?
                                  outputs [test_below (&rng, index)]: test_below (&rng, n);
            c.prompt = prompt;
            c.outputs = outputs;
            //  Outputs told in two pieces, as a worker would.
            uint32_t first = c.n_outputs / 2;
            sampler_seq_t *seq = test_seq (&c.params, n, prompt, c.n_prompt, outputs, first);
            assert_int_equal (sampler_seq_add_outputs (seq, outputs + first,
                                                       c.n_outputs - first), 0);
            double expected_logprob;
            uint32_t expected = ref_sample (&c, &expected_logprob);
            float logprob;
            uint32_t token = sampler_sample (sampler, seq, logits, &logprob);
            if (token != expected)
                fprintf (stderr, "n %u trial %d: token %u, expected %u (T %g k %u p %g "
                         "min_p %g)\n", n, trial, token, expected, c.params.temperature,
                         c.params.top_k, c.params.top_p, c.params.min_p);
            assert_int_equal (token, expected);
            test_assert_logprob (logprob, expected_logprob);
            //  Without the logprob: the same token.
            assert_int_equal (sampler_sample (sampler, seq, logits, NULL), expected);
            compared++;
            sampled += c.params.temperature > 0;
            sampler_seq_destroy (&seq);
        }
        free (logits);
        sampler_destroy (&sampler);
    }
    assert_true (compared > 4000);
    assert_true (sampled > 3000);
}

//  One big case for the paths that only a large kept set takes (top_p over many
//  tokens: the weighted selection; more than 64 kept: the walk over the vocabulary).
static void
test_against_reference_flat (void **state)
{
    (void) state;
    sampler_rng_t rng;
    sampler_rng_seed (&rng, 4242);
    const uint32_t n = 49152;
    sampler_t *sampler = sampler_new (n);
    float *logits = (float *) malloc (n * sizeof (float));
    const float top_ps [4] = { 0.3f, 0.9f, 0.999f, 0.5f };
    for (int trial = 0; trial < 24; trial++) {
        for (uint32_t index = 0; index < n; index++)
            logits [index] = (float) ((trial % 3 + 1) * 0.2 * test_normal (&rng));
        if (trial % 6 == 5)
            for (uint32_t index = 0; index < n; index++)
                logits [index] = floorf (logits [index] * 8) / 8;       //  ties
        ref_case_t c = { 0 };
        c.logits = logits;
        c.n_vocab = n;
        c.params.temperature = 0.8f;
        c.params.top_p = top_ps [trial % 4];
        c.params.top_k = trial % 8 == 7? 3000: 0;
        c.params.min_p = trial % 5 == 4? 0.5f: 0.0f;
        c.params.seed = (uint64_t) trial * 1000003;
        uint32_t outputs [3] = { 7, 7, 9 };
        c.outputs = outputs;
        c.n_outputs = (uint32_t) trial % 4;
        sampler_seq_t *seq = test_seq (&c.params, n, NULL, 0, outputs, c.n_outputs);
        double expected_logprob;
        uint32_t expected = ref_sample (&c, &expected_logprob);
        float logprob;
        assert_int_equal (sampler_sample (sampler, seq, logits, &logprob), expected);
        test_assert_logprob (logprob, expected_logprob);
        sampler_seq_destroy (&seq);
    }
    //  Many middling tokens and three sure ones: top_p's target is small enough to try
    //  the 64 highest first, which do not reach it.
    for (int trial = 0; trial < 6; trial++) {
        for (uint32_t index = 0; index < n; index++)
            logits [index] = (float) (0.25 * test_normal (&rng) - 3);
        for (int sure = 0; sure < 3; sure++)
            logits [test_below (&rng, n)] = 0.0f;
        ref_case_t c = { 0 };
        c.logits = logits;
        c.n_vocab = n;
        c.params.temperature = 1.0f;
        c.params.top_p = trial % 2? 0.02f: 0.025f;
        c.params.min_p = trial == 5? 0.05f: 0.0f;
        c.params.seed = (uint64_t) trial;
        sampler_seq_t *seq = test_seq (&c.params, n, NULL, 0, NULL, 0);
        double expected_logprob;
        uint32_t expected = ref_sample (&c, &expected_logprob);
        float logprob;
        assert_int_equal (sampler_sample (sampler, seq, logits, &logprob), expected);
        test_assert_logprob (logprob, expected_logprob);
        sampler_seq_destroy (&seq);
    }

    //  All equal: top_p keeps exactly that share of the lowest ids (the sums are exact
    //  integers, so reaching top_p is an equality).
    for (uint32_t index = 0; index < n; index++)
        logits [index] = 1.0f;
    const float shares [5] = { 0.5f, 0.25f, 0.375f, 0.625f, 0.75f };
    for (int share = 0; share < 5; share++) {
        sampler_params_t params = { 0 };
        params.temperature = 1.0f;
        params.top_p = shares [share];
        params.seed = (uint64_t) share;
        uint32_t n_kept = (uint32_t) (shares [share] * n);
        sampler_seq_t *seq = test_seq (&params, n, NULL, 0, NULL, 0);
        uint32_t highest = 0;
        for (uint32_t k = 0; k < 300; k++) {
            uint32_t token = sampler_sample (sampler, seq, logits, NULL);
            assert_true (token < n_kept);
            assert_int_equal (token,
                              (uint32_t) (test_draw_uniform (params.seed, k) * n_kept));
            highest = token > highest? token: highest;
            assert_int_equal (sampler_seq_add_outputs (seq, &token, 1), 0);
        }
        assert_true (highest > n_kept - n_kept / 50);
        sampler_seq_destroy (&seq);
    }
    free (logits);
    sampler_destroy (&sampler);
}

//  The chosen token's logprob is log softmax of the original logits, whatever bias,
//  penalties and temperature chose it.
static void
test_logprob_is_the_models (void **state)
{
    (void) state;
    const float logits [5] = { 2.0f, 1.0f, 0.5f, -1.0f, 3.0f };
    uint32_t bias_token [1] = { 3 };
    float bias_value [1] = { 50.0f };
    sampler_params_t params = { 0 };
    params.bias_tokens = bias_token;
    params.bias_values = bias_value;
    params.n_bias = 1;
    params.temperature = 0.5f;
    params.repetition_penalty = 1.5f;
    params.presence_penalty = 1.0f;
    const uint32_t outputs [2] = { 4, 0 };
    sampler_t *sampler = sampler_new (5);
    sampler_seq_t *seq = test_seq (&params, 5, outputs, 2, outputs, 2);
    float logprob;
    assert_int_equal (sampler_sample (sampler, seq, logits, &logprob), 3);
    double expected = -1.0 - log (exp (2.0) + exp (1.0) + exp (0.5) + exp (-1.0) + exp (3.0));
    assert_true (fabs (logprob - expected) < 1e-6);
    sampler_seq_destroy (&seq);
    sampler_destroy (&sampler);
}

//  --- Top log-probabilities -------------------------------------------------------------

static void
test_top_logprobs (void **state)
{
    (void) state;
    //  By hand: most likely first, the lower id first on a tie.
    const float logits [6] = { 1.0f, 3.0f, 2.0f, 3.0f, -INFINITY, 0.0f };
    sampler_t *sampler = sampler_new (6);
    sampler_logprob_t top [6];
    sampler_top_logprobs (sampler, logits, top, 6);
    const uint32_t order [6] = { 1, 3, 2, 0, 5, 4 };
    double log_sum = log (exp (1.0) + 2 * exp (3.0) + exp (2.0) + exp (0.0));
    for (int index = 0; index < 6; index++) {
        assert_int_equal (top [index].token, order [index]);
        test_assert_logprob (top [index].logprob,
                             logits [order [index]] - log_sum);
    }
    //  Fewer; none.
    sampler_top_logprobs (sampler, logits, top, 2);
    assert_int_equal (top [0].token, 1);
    assert_int_equal (top [1].token, 3);
    top [0].token = 99;
    sampler_top_logprobs (sampler, logits, top, 0);
    assert_int_equal (top [0].token, 99);
    //  More than the vocabulary: the vocabulary.
    sampler_logprob_t more [7];
    more [6].token = 99;
    sampler_top_logprobs (sampler, logits, more, 7);
    assert_int_equal (more [5].token, 4);
    assert_int_equal (more [6].token, 99);
    sampler_destroy (&sampler);

    //  Random, with ties, -inf and NaN (last), against the full sort.
    sampler_rng_t rng;
    sampler_rng_seed (&rng, 777);
    const uint32_t sizes [4] = { 1, 20, 1000, 49152 };
    for (int size = 0; size < 4; size++) {
        uint32_t n = sizes [size];
        float *random = (float *) malloc (n * sizeof (float));
        sampler = sampler_new (n);
        for (int trial = 0; trial < 12; trial++) {
            test_random_logits (&rng, random, n, trial);
            uint32_t n_top = trial == 0? n: 1 + test_below (&rng, n < 20? n: 20);
            sampler_logprob_t *got = (sampler_logprob_t *)
                malloc (n_top * sizeof (sampler_logprob_t));
            uint32_t *tokens = (uint32_t *) malloc (n_top * sizeof (uint32_t));
            double *expected = (double *) malloc (n_top * sizeof (double));
            sampler_top_logprobs (sampler, random, got, n_top);
            ref_top_logprobs (random, n, n_top, tokens, expected);
            for (uint32_t index = 0; index < n_top; index++) {
                assert_int_equal (got [index].token, tokens [index]);
                test_assert_logprob (got [index].logprob, expected [index]);
            }
            free (expected);
            free (tokens);
            free (got);
        }
        sampler_destroy (&sampler);
        free (random);
    }
}

//  Beam search's candidates: the processed distribution's most likely tokens (bias, mask
//  and penalties applied; impossible tokens left out), against the reference values and a
//  full sort, on random cases through one shared sampler.
static void
test_beam_candidates (void **state)
{
    (void) state;
    //  By hand: a bias lifts token 0 over the others, a mask removes token 1.
    const float logits [5] = { 1.0f, 3.0f, 2.0f, 2.0f, -INFINITY };
    uint32_t bias_token = 0, masked = 1;
    float bias = 5.0f;
    sampler_params_t params = { .bias_tokens = &bias_token, .bias_values = &bias,
                                .n_bias = 1, .masked_tokens = &masked, .n_masked = 1,
                                .min_tokens = 2 };
    sampler_t *sampler = sampler_new (5);
    sampler_seq_t *seq = test_seq (&params, 5, NULL, 0, NULL, 0);
    sampler_logprob_t top [5];
    assert_int_equal (sampler_beam_candidates (sampler, seq, logits, top, 5), 3);
    double log_sum = log (exp (6.0) + 2 * exp (2.0));
    assert_int_equal (top [0].token, 0);
    assert_int_equal (top [1].token, 2);
    assert_int_equal (top [2].token, 3);
    test_assert_logprob (top [0].logprob, 6.0 - log_sum);
    test_assert_logprob (top [2].logprob, 2.0 - log_sum);
    //  Once min_tokens are generated the mask is gone: token 1 is back.
    uint32_t outputs [2] = { 2, 2 };
    assert_int_equal (sampler_seq_add_outputs (seq, outputs, 2), 0);
    assert_int_equal (sampler_beam_candidates (sampler, seq, logits, top, 2), 2);
    assert_int_equal (top [1].token, 1);
    assert_int_equal (sampler_beam_candidates (sampler, seq, logits, top, 0), 0);
    sampler_seq_destroy (&seq);
    sampler_destroy (&sampler);

    sampler_rng_t rng;
    sampler_rng_seed (&rng, 4242);
    const uint32_t sizes [] = { 1, 3, 64, 1000, 5000 };
    int compared = 0;
    for (size_t size = 0; size < sizeof sizes / sizeof sizes [0]; size++) {
        uint32_t n = sizes [size];
        sampler = sampler_new (n);
        float *random = (float *) malloc (n * sizeof (float));
        float *values = (float *) malloc (n * sizeof (float));
        ref_entry_t *sorted = (ref_entry_t *) malloc (n * sizeof (ref_entry_t));
        sampler_logprob_t *got = (sampler_logprob_t *) malloc (256 * sizeof *got);
        uint32_t prompt [64], history [40], bias_tokens [8], mask [4];
        float bias_values [8];
        for (int trial = 0; trial < 120; trial++) {
            test_random_logits (&rng, random, n, trial);
            for (uint32_t index = 0; index < n; index++)
                if (isnan (random [index]))
                    random [index] = -INFINITY;     //  a model's logits have no NaN
            ref_case_t c = { 0 };
            c.logits = random;
            c.n_vocab = n;
            test_random_params (&rng, n, &c.params, bias_tokens, bias_values, mask);
            c.n_prompt = test_below (&rng, 64);
            c.n_outputs = test_below (&rng, 40);
            for (uint32_t index = 0; index < c.n_prompt; index++)
                prompt [index] = test_below (&rng, n);
            for (uint32_t index = 0; index < c.n_outputs; index++)
                history [index] = test_below (&rng, n);
            c.prompt = prompt;
            c.outputs = history;
            seq = test_seq (&c.params, n, prompt, c.n_prompt, history, c.n_outputs);
            uint32_t n_top = 1 + test_below (&rng, 256);
            uint32_t found = sampler_beam_candidates (sampler, seq, random, got, n_top);

            ref_values (&c, values);
            uint32_t possible = 0;
            for (uint32_t index = 0; index < n; index++)
                if (values [index] > -INFINITY) {
                    sorted [possible].value = values [index];
                    sorted [possible].token = index;
                    possible++;
                }
            qsort (sorted, possible, sizeof (ref_entry_t), ref_compare);
            uint32_t expected = possible < n_top? possible: n_top;
            assert_int_equal (found, expected);
            double max;
            double log_sum = ref_log_sum (values, n, &max);
            for (uint32_t index = 0; index < found; index++) {
                assert_int_equal (got [index].token, sorted [index].token);
                test_assert_logprob (got [index].logprob,
                                     ref_log_softmax_of (sorted [index].value, max,
                                                         log_sum));
            }
            sampler_seq_destroy (&seq);
            compared++;
        }
        free (got);
        free (sorted);
        free (values);
        free (random);
        sampler_destroy (&sampler);
    }
    assert_int_equal (compared, 600);
}

//  --- Scratch --------------------------------------------------------------------------------

//  The penalties leave the counts scratch at zero: a sequence sampled after one with
//  many penalized outputs sees its own counts only.
static void
test_counts_reset (void **state)
{
    (void) state;
    const float logits [4] = { 1.0f, 1.5f, 0.0f, 0.0f };
    sampler_t *sampler = sampler_new (4);
    sampler_params_t heavy = { 0 };
    heavy.frequency_penalty = 2.0f;
    heavy.presence_penalty = 2.0f;
    heavy.repetition_penalty = 1.5f;
    const uint32_t many [6] = { 1, 1, 1, 0, 2, 1 };
    sampler_seq_t *first = test_seq (&heavy, 4, many, 6, many, 6);
    sampler_params_t light = { 0 };
    light.frequency_penalty = 0.25f;
    const uint32_t one [1] = { 1 };
    sampler_seq_t *second = test_seq (&light, 4, NULL, 0, one, 1);
    for (int round = 0; round < 3; round++) {
        //  first: 1 -> 1.5 / 1.5 - 4 * 2 - 2 = -9; 0 -> 1 / 1.5 - 4; 2 -> 0 - 4: token 3.
        assert_int_equal (sampler_sample (sampler, first, logits, NULL), 3);
        //  second: 1 -> 1.25, still above 1.
        assert_int_equal (sampler_sample (sampler, second, logits, NULL), 1);
    }
    sampler_seq_destroy (&first);
    sampler_seq_destroy (&second);
    sampler_destroy (&sampler);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_rng_reference_values),
        cmocka_unit_test (test_rng_same_seed_same_sequence),
        cmocka_unit_test (test_greedy_argmax),
        cmocka_unit_test (test_logprob),
        cmocka_unit_test (test_logprob_accuracy),
        cmocka_unit_test (test_params_validation),
        cmocka_unit_test (test_seq_tokens),
        cmocka_unit_test (test_seq_copies_params),
        cmocka_unit_test (test_logit_bias),
        cmocka_unit_test (test_min_tokens),
        cmocka_unit_test (test_frequency_presence),
        cmocka_unit_test (test_repetition_penalty),
        cmocka_unit_test (test_top_k_one_top_p_tiny_are_greedy),
        cmocka_unit_test (test_top_k_top_p_min_p),
        cmocka_unit_test (test_temperature_frequencies),
        cmocka_unit_test (test_seed_derivation),
        cmocka_unit_test (test_seed_independence),
        cmocka_unit_test (test_nothing_left),
        cmocka_unit_test (test_against_reference),
        cmocka_unit_test (test_against_reference_flat),
        cmocka_unit_test (test_logprob_is_the_models),
        cmocka_unit_test (test_top_logprobs),
        cmocka_unit_test (test_beam_candidates),
        cmocka_unit_test (test_counts_reset),
    };
    return cmocka_run_group_tests_name ("sampler", tests, NULL, NULL);
}
