/*  sampler — choose the next token from a row of logits.

    Greedy (temperature 0: the highest logit, the lowest id on a tie) or random sampling
    from softmax(logits / temperature) with a per-sequence generator, so the same seed
    gives the same tokens whatever else runs. The returned log-probability is that of the
    chosen token under the model's own distribution, log softmax(logits), before any
    temperature.
*/
#ifndef ZLLM_SAMPLER_H
#define ZLLM_SAMPLER_H

#include <stdint.h>

//  A small, fast generator (xoshiro256**), seeded with splitmix64.
typedef struct {
    uint64_t s[4];
} sampler_rng_t;

void
    sampler_rng_seed (sampler_rng_t *rng, uint64_t seed);

//  Uniform in [0, 1).
double
    sampler_rng_uniform (sampler_rng_t *rng);

//  Pick a token. rng may be NULL when temperature is 0. logprob may be NULL.
uint32_t
    sampler_sample (const float *logits, uint32_t n_vocab, float temperature,
                    sampler_rng_t *rng, float *logprob);

#endif
