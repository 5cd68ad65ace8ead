/*  sampler — choose the next token from a row of logits. See sampler.h.

    Greedy picks the highest logit (the lowest id on a tie). Random sampling draws u in
    [0, 1) and walks the cumulative softmax(logits / temperature) until it passes u. The
    log-probability reported is log softmax(logits) of the chosen token, computed as
    logit - (max + log sum exp(logit - max)) with the sum in double.

    NaN logits are never chosen (unless every logit is NaN: then token 0); a logit of
    -infinity has probability 0.

    The generator is xoshiro256** (Blackman and Vigna), its state filled by splitmix64.
*/
#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

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

//  --- Sampling ----------------------------------------------------------------------------

//  The highest logit, the lowest id on a tie; NaNs are skipped. Token 0 if all are NaN.
static uint32_t
s_argmax (const float *logits, uint32_t n_vocab)
{
    uint32_t best = 0;
    bool found = false;
    for (uint32_t i = 0; i < n_vocab; i++) {
        if (isnan (logits [i]))
            continue;
        if (!found || logits [i] > logits [best]) {
            best = i;
            found = true;
        }
    }
    return best;
}

//  log sum exp(logits), stable: max + log sum exp(logit - max), summed in double.
static double
s_log_sum_exp (const float *logits, uint32_t n_vocab, float max)
{
    if (isinf (max))
        return max;                     //  every logit -inf, or some +inf
    double sum = 0;
    for (uint32_t i = 0; i < n_vocab; i++)
        if (!isnan (logits [i]))
            sum += exp ((double) logits [i] - max);
    return max + log (sum);
}

//  Draw from softmax(logits / temperature); max is the largest (non-NaN) logit.
static uint32_t
s_sample_softmax (const float *logits, uint32_t n_vocab, float temperature, float max,
                  sampler_rng_t *rng, uint32_t argmax)
{
    double total = 0;
    for (uint32_t i = 0; i < n_vocab; i++)
        if (!isnan (logits [i]))
            total += exp (((double) logits [i] - max) / temperature);
    if (!(total > 0) || isinf (total))
        return argmax;
    double target = sampler_rng_uniform (rng) * total;
    double cumulative = 0;
    uint32_t last_possible = argmax;
    for (uint32_t i = 0; i < n_vocab; i++) {
        if (isnan (logits [i]))
            continue;
        double weight = exp (((double) logits [i] - max) / temperature);
        if (weight <= 0)
            continue;
        cumulative += weight;
        last_possible = i;
        if (target < cumulative)
            return i;
    }
    return last_possible;               //  rounding left target just past the end
}

uint32_t
sampler_sample (const float *logits, uint32_t n_vocab, float temperature,
                sampler_rng_t *rng, float *logprob)
{
    if (n_vocab == 0) {
        if (logprob)
            *logprob = -INFINITY;
        return 0;
    }
    uint32_t argmax = s_argmax (logits, n_vocab);
    float max = logits [argmax];
    uint32_t token = argmax;
    if (temperature > 0 && rng && !isnan (max) && isfinite (max))
        token = s_sample_softmax (logits, n_vocab, temperature, max, rng, argmax);
    if (logprob) {
        double log_sum = s_log_sum_exp (logits, n_vocab, max);
        if (isnan (max))
            *logprob = NAN;
        else
        if (isinf (max))
            *logprob = logits [token] == max? 0.0f: -INFINITY;
        else
            *logprob = (float) ((double) logits [token] - log_sum);
    }
    return token;
}
