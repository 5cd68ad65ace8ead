/*  sampler — choose the next token of a sequence from a row of logits.

    A sequence's sampling parameters and what it has generated so far live in a
    sampler_seq_t (one per sequence, made when the sequence starts on a worker); the
    scratch memory of one thread lives in a sampler_t. One draw goes:

        logits  ->  logit_bias  ->  forbidden tokens (min_tokens)  ->  penalties
                ->  greedy (temperature 0)  or  temperature, top_k, top_p, min_p, draw

    as vLLM's sampler orders them:
    - logit_bias: added to the named tokens' logits (OpenAI: -100 .. 100).
    - forbidden: while the sequence has generated fewer than min_tokens tokens, the
      masked tokens (its end-of-generation and stop tokens) get -infinity.
    - repetition_penalty (1: off; vLLM/HF): a logit of a token seen in the prompt or the
      output is divided by it when positive, multiplied when negative.
    - frequency_penalty and presence_penalty (0: off; OpenAI): logit -= count *
      frequency + (count > 0) * presence, count = times the token was generated.
    - greedy: the highest logit, the lowest id on a tie.
    - temperature: logits / temperature; then top_k (0: all) keeps the k highest,
      top_p (1: all) the smallest set of highest tokens whose probabilities sum to at
      least top_p, min_p (0: off) drops tokens whose probability is under min_p times
      the highest; the draw is from what is left, renormalized.

    Seeds: the k-th generated token of a sequence (k = sampler_seq_n_outputs () before
    the draw, counting from 0) is drawn with a generator seeded from (seed, k) alone. So
    the same seed gives the same tokens whatever else runs in the batch, and a sequence
    that is preempted and recomputed draws the same tokens again.

    Log-probabilities (the chosen token's and the top ones) are those of the model's own
    distribution, log softmax (logits) before any of the steps above, as OpenAI reports;
    beam search ranks by the processed distribution instead (sampler_beam_candidates).

    NaN logits are never chosen; a logit of -infinity has probability 0. When nothing is
    left to choose (every logit NaN or -infinity after the steps above), the draw falls
    back to the greedy choice over the model's own logits, and to token 0 when those are
    all NaN.

    Who owns what: sampler_seq_new copies params (and their arrays). A sampler_t and the
    sequences are used by one thread at a time.
*/
#ifndef ZLLM_SAMPLER_H
#define ZLLM_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
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

//  The parameters of one sequence. Zero-initialized means greedy with nothing else,
//  except top_p and repetition_penalty, where 0 is taken as 1 (off).
typedef struct {
    float temperature;              //  0: greedy
    uint32_t top_k;                 //  0: all tokens
    float top_p;                    //  (0, 1]; 0 is taken as 1
    float min_p;                    //  [0, 1]
    float presence_penalty;         //  [-2, 2]
    float frequency_penalty;        //  [-2, 2]
    float repetition_penalty;       //  > 0; 0 is taken as 1
    uint64_t seed;
    uint32_t min_tokens;            //  masked_tokens are forbidden until this many
    const uint32_t *masked_tokens;
    uint32_t n_masked;
    const uint32_t *bias_tokens;    //  logit_bias: token ids ...
    const float *bias_values;       //  ... and what to add to their logits
    uint32_t n_bias;
} sampler_params_t;

//  A token and its log-probability.
typedef struct {
    uint32_t token;
    float logprob;
} sampler_logprob_t;

typedef struct _sampler_t sampler_t;
typedef struct _sampler_seq_t sampler_seq_t;

//  Scratch for sampling rows of n_vocab logits. NULL when out of memory.
sampler_t *
    sampler_new (uint32_t n_vocab);

void
    sampler_destroy (sampler_t **self_p);

//  A sequence with these parameters. Returns NULL with a message when a parameter is
//  out of the ranges above, a token id is not below n_vocab, or out of memory.
sampler_seq_t *
    sampler_seq_new (const sampler_params_t *params, uint32_t n_vocab, char *err,
                     size_t err_size);

void
    sampler_seq_destroy (sampler_seq_t **self_p);

//  Tell the sequence about tokens of its prompt (for repetition_penalty) and tokens it
//  generated (for all penalties, and the count that min_tokens and the seeds use), in
//  order, as they are fed to the model. Returns 0, or -1 when out of memory or a token
//  is not below n_vocab.
int
    sampler_seq_add_prompt (sampler_seq_t *self, const uint32_t *tokens, uint32_t n_tokens);
int
    sampler_seq_add_outputs (sampler_seq_t *self, const uint32_t *tokens, uint32_t n_tokens);

//  Generated tokens told so far.
uint32_t
    sampler_seq_n_outputs (const sampler_seq_t *self);

//  Choose the next token of seq from logits (n_vocab floats, not modified). logprob
//  (may be NULL) gets the chosen token's log-probability.
uint32_t
    sampler_sample (sampler_t *self, sampler_seq_t *seq, const float *logits, float *logprob);

//  The n_top most likely tokens of log softmax (logits), most likely first (the lower
//  id first on a tie), into top. n_top at most n_vocab.
void
    sampler_top_logprobs (sampler_t *self, const float *logits, sampler_logprob_t *top,
                          uint32_t n_top);

//  Beam search's candidates: the n_top most likely tokens of seq's processed
//  distribution, log softmax of the logits after logit_bias, the min_tokens mask and
//  the penalties (no temperature, top_k, top_p or min_p), most likely first (the lower
//  id first on a tie), into top. Tokens of probability 0 (-infinity) or NaN are left
//  out. Returns how many were written (fewer than n_top when fewer are possible).
uint32_t
    sampler_beam_candidates (sampler_t *self, const sampler_seq_t *seq,
                             const float *logits, sampler_logprob_t *top, uint32_t n_top);

#endif
