/*  beam_search — the decisions of beam search for one request. See beam_search.h.

    State: the parameters and the kept hypotheses (at most width, best first). A step
    gathers every candidate of every beam, sorts them, considers the 2 x width first,
    adds the finished ones to the kept hypotheses, takes the running ones as the next
    beams and decides whether to stop. Nothing here is per token of the vocabulary:
    the work is proportional to the candidates (at most width x 2 x width).
*/
#include "beam_search.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct _beam_search_t {
    beam_search_params_t params;    //  stop_tokens points at our copy
    uint32_t *stop_tokens;
    beam_hypothesis_t *kept;        //  [width + 2 x width]: the kept ones first, best first
    uint32_t n_kept;
    bool done;
};

//  A candidate of a step.
typedef struct {
    uint32_t parent;
    uint32_t token;
    double cumulative;
} candidate_t;

double
beam_search_score (double cumulative, uint32_t length, float length_penalty)
{
    if (length_penalty == 0)
        return cumulative;
    return cumulative / pow ((double) (length > 0? length: 1), length_penalty);
}

beam_search_t *
beam_search_new (const beam_search_params_t *params)
{
    if (!params || params->width == 0 || params->width > PROTO_MAX_N || params->n == 0
    ||  params->n > params->width || params->max_length <= params->n_prompt
    ||  (unsigned) params->early_stopping > PROTO_EARLY_STOPPING_NEVER
    ||  isnan (params->length_penalty) || isinf (params->length_penalty)
    ||  (params->n_stop_tokens > 0 && !params->stop_tokens))
        return NULL;
    beam_search_t *self = (beam_search_t *) calloc (1, sizeof (beam_search_t));
    if (!self)
        return NULL;
    self->params = *params;
    //  The kept hypotheses, and room for the 2 x width that may finish in one step.
    self->kept = (beam_hypothesis_t *) calloc (3 * params->width, sizeof (beam_hypothesis_t));
    if (params->n_stop_tokens > 0)
        self->stop_tokens = (uint32_t *) malloc (params->n_stop_tokens * sizeof (uint32_t));
    if (!self->kept || (params->n_stop_tokens > 0 && !self->stop_tokens)) {
        beam_search_destroy (&self);
        return NULL;
    }
    if (params->n_stop_tokens > 0)
        memcpy (self->stop_tokens, params->stop_tokens,
                params->n_stop_tokens * sizeof (uint32_t));
    self->params.stop_tokens = self->stop_tokens;
    return self;
}

void
beam_search_destroy (beam_search_t **self_p)
{
    beam_search_t *self = *self_p;
    if (!self)
        return;
    for (uint32_t index = 0; self->kept && index < self->n_kept; index++)
        free (self->kept [index].tokens);
    free (self->kept);
    free (self->stop_tokens);
    free (self);
    *self_p = NULL;
}

static bool
s_is_stop_token (const beam_search_t *self, uint32_t token)
{
    for (uint32_t index = 0; index < self->params.n_stop_tokens; index++)
        if (self->stop_tokens [index] == token)
            return true;
    return false;
}

//  Higher cumulative first, then the lower beam, then the lower token.
static int
s_compare_candidates (const void *a_p, const void *b_p)
{
    const candidate_t *a = (const candidate_t *) a_p;
    const candidate_t *b = (const candidate_t *) b_p;
    if (a->cumulative != b->cumulative)
        return a->cumulative > b->cumulative? -1: 1;
    if (a->parent != b->parent)
        return a->parent < b->parent? -1: 1;
    return a->token < b->token? -1: a->token > b->token? 1: 0;
}

//  Higher score first; on a tie the one kept earlier (stable, by insertion below).
static void
s_insert_kept (beam_search_t *self, beam_hypothesis_t hypothesis)
{
    uint32_t place = self->n_kept;
    while (place > 0 && self->kept [place - 1].score < hypothesis.score) {
        self->kept [place] = self->kept [place - 1];
        place--;
    }
    self->kept [place] = hypothesis;
    self->n_kept++;
}

//  Whether the search stops, with width hypotheses kept and best the best running
//  candidate (its cumulative, over length tokens).
static bool
s_should_stop (const beam_search_t *self, double best_cumulative, uint32_t length)
{
    const beam_search_params_t *params = &self->params;
    if (self->n_kept < params->width)
        return false;
    if (params->early_stopping == PROTO_EARLY_STOPPING_TRUE)
        return true;
    double worst_kept = self->kept [params->width - 1].score;
    uint32_t reachable = length;
    if (params->early_stopping == PROTO_EARLY_STOPPING_NEVER && params->length_penalty > 0)
        reachable = params->max_length;
    double highest_attainable = beam_search_score (best_cumulative, reachable,
                                                   params->length_penalty);
    return worst_kept >= highest_attainable;
}

int
beam_search_step (beam_search_t *self, const beam_t *beams, uint32_t n_beams,
                  beam_child_t *children, uint32_t *n_children, bool *done)
{
    if (!self || !beams || !children || !n_children || !done || self->done
    ||  n_beams == 0 || n_beams > self->params.width)
        return -1;
    const beam_search_params_t *params = &self->params;
    uint32_t n_generated = beams [0].n_tokens;
    uint32_t total = 0;
    for (uint32_t index = 0; index < n_beams; index++) {
        if (beams [index].n_tokens != n_generated
        ||  (beams [index].n_candidates > 0 && (!beams [index].candidate_tokens
                                               || !beams [index].candidate_logprobs))
        ||  (n_generated > 0 && !beams [index].tokens))
            return -1;
        total += beams [index].n_candidates;
    }
    //  The length of every candidate, prompt included.
    uint32_t length = params->n_prompt + n_generated + 1;
    if (length > params->max_length)
        return -1;

    candidate_t *candidates = (candidate_t *) malloc ((total? total: 1)
                                                     * sizeof (candidate_t));
    if (!candidates)
        return -1;
    uint32_t n_candidates = 0;
    for (uint32_t parent = 0; parent < n_beams; parent++)
        for (uint32_t index = 0; index < beams [parent].n_candidates; index++) {
            float logprob = beams [parent].candidate_logprobs [index];
            if (!(logprob > -INFINITY))
                continue;                   //  impossible, or NaN
            candidates [n_candidates].parent = parent;
            candidates [n_candidates].token = beams [parent].candidate_tokens [index];
            candidates [n_candidates].cumulative = beams [parent].cumulative + logprob;
            n_candidates++;
        }
    qsort (candidates, n_candidates, sizeof (candidate_t), s_compare_candidates);
    if (n_candidates > 2 * params->width)
        n_candidates = 2 * params->width;

    //  The finished ones, into the kept hypotheses (the tokens copied first, so that
    //  running out of memory leaves the search as it was).
    beam_hypothesis_t finished [2 * PROTO_MAX_N];
    uint32_t n_finished = 0;
    bool failed = false;
    for (uint32_t index = 0; index < n_candidates && !failed; index++) {
        const candidate_t *candidate = &candidates [index];
        bool stopped = s_is_stop_token (self, candidate->token);
        if (!stopped && length < params->max_length)
            continue;
        beam_hypothesis_t *hypothesis = &finished [n_finished];
        hypothesis->tokens = (uint32_t *) malloc ((n_generated + 1) * sizeof (uint32_t));
        if (!hypothesis->tokens) {
            failed = true;
            break;
        }
        if (n_generated > 0)
            memcpy (hypothesis->tokens, beams [candidate->parent].tokens,
                    n_generated * sizeof (uint32_t));
        hypothesis->tokens [n_generated] = candidate->token;
        hypothesis->n_tokens = n_generated + 1;
        hypothesis->cumulative = candidate->cumulative;
        hypothesis->finish = stopped? PROTO_FINISH_STOP: PROTO_FINISH_LENGTH;
        hypothesis->score = beam_search_score (candidate->cumulative,
                                               stopped? length - 1: length,
                                               params->length_penalty);
        n_finished++;
    }
    if (failed) {
        for (uint32_t index = 0; index < n_finished; index++)
            free (finished [index].tokens);
        free (candidates);
        return -1;
    }
    for (uint32_t index = 0; index < n_finished; index++)
        s_insert_kept (self, finished [index]);
    while (self->n_kept > params->width)
        free (self->kept [--self->n_kept].tokens);

    //  The running ones, best first; the search goes on with the width first of them.
    uint32_t n_running = 0;
    for (uint32_t index = 0; index < n_candidates; index++) {
        const candidate_t *candidate = &candidates [index];
        if (s_is_stop_token (self, candidate->token) || length >= params->max_length)
            continue;
        if (n_running == 0 && s_should_stop (self, candidate->cumulative, length))
            break;
        if (n_running < params->width)
            children [n_running++] = (beam_child_t) { candidate->parent, candidate->token,
                                                      candidate->cumulative };
    }
    free (candidates);
    *n_children = n_running;
    self->done = n_running == 0;
    *done = self->done;
    return 0;
}

uint32_t
beam_search_max_length (const beam_search_t *self)
{
    return self? self->params.max_length: 0;
}

uint32_t
beam_search_n_results (const beam_search_t *self)
{
    if (!self || !self->done)
        return 0;
    return self->n_kept < self->params.n? self->n_kept: self->params.n;
}

const beam_hypothesis_t *
beam_search_result (const beam_search_t *self, uint32_t index)
{
    if (index >= beam_search_n_results (self))
        return NULL;
    return &self->kept [index];
}
