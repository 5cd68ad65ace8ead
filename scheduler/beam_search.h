/*  beam_search — the decisions of beam search for one request, as pure bookkeeping.

    The scheduler runs a request's beams as sequences on a worker (sharing their blocks
    copy-on-write); each step, the worker returns, for every beam, the 2 x width most
    likely next tokens of its processed distribution (sampler_beam_candidates). This
    module decides, from those, which (beam, token) children go on, which hypotheses
    have finished, and when the search is over. It knows nothing of workers or blocks.

    The rules are those of vLLM's beam search (vLLM <= 0.5, which Furiosa LLM's
    use_beam_search, length_penalty and early_stopping follow), themselves Hugging Face
    transformers' BeamSearchScorer before version 4.36:

    - a candidate is a beam extended by one token; its cumulative log-probability is the
      beam's plus the token's. Of all candidates of all beams, the 2 x width highest (the
      lower beam, then the lower token first on a tie) are considered;
    - one that ends on a stop token (an end-of-generation token or stop_token_ids)
      finishes with "stop"; one that reaches max_length tokens (prompt included: the
      request's max_tokens or the context) finishes with "length"; the others run on;
    - a hypothesis scores cumulative / length ^ length_penalty, where length counts the
      prompt and the generated tokens, less a final stop token (HF before 4.36 and vLLM
      count the prompt; newer HF counts only the generated tokens). The width best
      finished hypotheses are kept;
    - the width highest running candidates become the next beams, unless the search
      stops: when no candidate runs on, or when width hypotheses have finished and
        early_stopping true:    at once;
        early_stopping false:   the best running candidate cannot beat the worst kept
                                hypothesis at its current length (a heuristic);
        early_stopping never:   nor at the longest length it may reach (max_length)
                                when length_penalty > 0 (longer is better then), else
                                at its current length.
      (vLLM's "never" bound takes the larger of max_tokens and the model's context; this
      one takes the length the beam can really reach, the tighter bound.)
    - the answer is the n best kept hypotheses, best first.

    Usage: beam_search_new, then beam_search_step once per step with every live beam
    (the first step: the prompt alone, cumulative 0), until it says done; then
    beam_search_n_results / beam_search_result.
*/
#ifndef ZLLM_BEAM_SEARCH_H
#define ZLLM_BEAM_SEARCH_H

#include "protocol.h"
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint32_t width;                 //  beams kept, 1 .. PROTO_MAX_N
    uint32_t n;                     //  hypotheses returned, 1 .. width
    float length_penalty;
    proto_early_stopping_t early_stopping;
    uint32_t n_prompt;              //  prompt tokens
    uint32_t max_length;            //  the most tokens a sequence may have, prompt
                                    //  included (> n_prompt)
    const uint32_t *stop_tokens;    //  ids that finish a hypothesis with "stop" (copied)
    uint32_t n_stop_tokens;
} beam_search_params_t;

//  One live beam at a step: what it generated so far, its cumulative log-probability,
//  and its candidates (token ids and their log-probabilities, any order). Borrowed.
typedef struct {
    const uint32_t *tokens;         //  generated tokens (not the prompt)
    uint32_t n_tokens;
    double cumulative;
    const uint32_t *candidate_tokens;
    const float *candidate_logprobs;
    uint32_t n_candidates;
} beam_t;

//  A beam for the next step: beam `parent` of the step, extended by `token`.
typedef struct {
    uint32_t parent;
    uint32_t token;
    double cumulative;
} beam_child_t;

//  A finished hypothesis.
typedef struct {
    uint32_t *tokens;               //  generated tokens, the last one included
    uint32_t n_tokens;
    double cumulative;
    double score;
    proto_finish_t finish;          //  STOP or LENGTH
} beam_hypothesis_t;

typedef struct _beam_search_t beam_search_t;

//  A search with these parameters; NULL when they are out of range or out of memory.
beam_search_t *
    beam_search_new (const beam_search_params_t *params);

void
    beam_search_destroy (beam_search_t **self_p);

//  One step: every live beam (all of the same length) with its candidates. Writes the
//  beams of the next step into children (room for width), best first, and their count
//  into *n_children; sets *done when the search is over (then *n_children is 0).
//  Returns 0, or -1 when out of memory or the beams are not valid (no beams, more than
//  width, lengths that differ, a beam past max_length); the search is unchanged then.
int
    beam_search_step (beam_search_t *self, const beam_t *beams, uint32_t n_beams,
                      beam_child_t *children, uint32_t *n_children, bool *done);

//  Once done: how many hypotheses come back (n, or fewer when fewer finished: only
//  when fewer than n candidates were ever possible), and the index-th best.
uint32_t
    beam_search_n_results (const beam_search_t *self);

const beam_hypothesis_t *
    beam_search_result (const beam_search_t *self, uint32_t index);

//  params.max_length.
uint32_t
    beam_search_max_length (const beam_search_t *self);

//  The score of a hypothesis of cumulative log-probability over length tokens.
double
    beam_search_score (double cumulative, uint32_t length, float length_penalty);

#endif
