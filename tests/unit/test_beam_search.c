/*  test_beam_search — the beam search decisions against a plain reference.

    The reference, written here the plain way, runs vLLM's beam search over a toy
    model's whole vocabulary (every beam x every token, sorted); the module gets only
    each beam's 2 x width most likely tokens, as a worker sends them. Both must give the
    same hypotheses, scores and finish reasons, for random toy models, widths, n,
    length penalties, early_stopping modes, stop tokens and length limits. Also: the
    rules by hand on small cases, and the refusals.
*/
#include "beam_search.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define TOY_VOCAB 12
#define TOY_EOS 0

//  --- A toy model ----------------------------------------------------------------------

typedef struct {
    uint64_t seed;
    float eos_boost;                //  added to EOS's logit per generated token
    bool holes;                     //  some tokens impossible (-infinity) at some steps
} toy_model_t;

static uint64_t
s_mix (uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

//  The log-probabilities of the next token after tokens (generated so far), as floats.
static void
s_toy_logprobs (const toy_model_t *model, const uint32_t *tokens, uint32_t n_tokens,
                float *logprobs)
{
    uint64_t state = model->seed;
    for (uint32_t index = 0; index < n_tokens; index++)
        state = s_mix (state ^ tokens [index]);
    double logits [TOY_VOCAB];
    double max = -INFINITY;
    for (uint32_t token = 0; token < TOY_VOCAB; token++) {
        uint64_t bits = s_mix (state + token);
        //  Quantized, so that ties happen.
        logits [token] = (double) (bits % 17) / 4.0 - 2.0;
        if (token == TOY_EOS)
            logits [token] += model->eos_boost * n_tokens - 1.0;
        if (model->holes && token != 1 && (bits >> 20) % 5 == 0)
            logits [token] = -INFINITY;
        if (logits [token] > max)
            max = logits [token];
    }
    double sum = 0;
    for (uint32_t token = 0; token < TOY_VOCAB; token++)
        sum += exp (logits [token] - max);
    for (uint32_t token = 0; token < TOY_VOCAB; token++)
        logprobs [token] = (float) (logits [token] - max - log (sum));
}

//  --- The reference ----------------------------------------------------------------------

typedef struct {
    uint32_t tokens [64];
    uint32_t n_tokens;
    double cumulative;
    double score;
    proto_finish_t finish;
} ref_hypothesis_t;

typedef struct {
    double cumulative;
    uint32_t parent;
    uint32_t token;
} ref_candidate_t;

static int
s_ref_compare (const void *a_p, const void *b_p)
{
    const ref_candidate_t *a = (const ref_candidate_t *) a_p;
    const ref_candidate_t *b = (const ref_candidate_t *) b_p;
    if (a->cumulative != b->cumulative)
        return a->cumulative > b->cumulative? -1: 1;
    if (a->parent != b->parent)
        return a->parent < b->parent? -1: 1;
    return a->token < b->token? -1: 1;
}

static double
s_ref_score (double cumulative, uint32_t length, float length_penalty)
{
    return cumulative / pow ((double) length, (double) length_penalty);
}

static bool
s_ref_is_stop (const beam_search_params_t *params, uint32_t token)
{
    for (uint32_t index = 0; index < params->n_stop_tokens; index++)
        if (params->stop_tokens [index] == token)
            return true;
    return false;
}

//  vLLM's beam search over the whole vocabulary. Writes the n best into results and
//  returns how many.
static uint32_t
s_ref_beam_search (const toy_model_t *model, const beam_search_params_t *params,
                   ref_hypothesis_t *results)
{
    uint32_t width = params->width;
    ref_hypothesis_t *beams = calloc (width, sizeof (ref_hypothesis_t));
    ref_hypothesis_t *next = calloc (width, sizeof (ref_hypothesis_t));
    ref_hypothesis_t *finished = calloc (3 * width, sizeof (ref_hypothesis_t));
    ref_candidate_t *all = calloc (width * TOY_VOCAB, sizeof (ref_candidate_t));
    uint32_t n_beams = 1, n_finished = 0;
    while (true) {
        uint32_t n_generated = beams [0].n_tokens;
        uint32_t length = params->n_prompt + n_generated + 1;
        uint32_t n_all = 0;
        for (uint32_t parent = 0; parent < n_beams; parent++) {
            float logprobs [TOY_VOCAB];
            s_toy_logprobs (model, beams [parent].tokens, n_generated, logprobs);
            for (uint32_t token = 0; token < TOY_VOCAB; token++)
                if (logprobs [token] > -INFINITY)
                    all [n_all++] = (ref_candidate_t) {
                        beams [parent].cumulative + logprobs [token], parent, token };
        }
        qsort (all, n_all, sizeof (ref_candidate_t), s_ref_compare);
        if (n_all > 2 * width)
            n_all = 2 * width;
        //  Finished ones join the kept, stably sorted by score, the first width kept.
        for (uint32_t index = 0; index < n_all; index++) {
            bool stop = s_ref_is_stop (params, all [index].token);
            if (!stop && length < params->max_length)
                continue;
            ref_hypothesis_t *hypothesis = &finished [n_finished++];
            *hypothesis = beams [all [index].parent];
            hypothesis->tokens [hypothesis->n_tokens++] = all [index].token;
            hypothesis->cumulative = all [index].cumulative;
            hypothesis->finish = stop? PROTO_FINISH_STOP: PROTO_FINISH_LENGTH;
            hypothesis->score = s_ref_score (all [index].cumulative, stop? length - 1: length,
                                             params->length_penalty);
        }
        for (uint32_t index = 1; index < n_finished; index++)      //  stable insertion
            for (uint32_t place = index; place > 0
                 && finished [place - 1].score < finished [place].score; place--) {
                ref_hypothesis_t swap = finished [place];
                finished [place] = finished [place - 1];
                finished [place - 1] = swap;
            }
        if (n_finished > width)
            n_finished = width;
        //  The running ones.
        uint32_t n_running = 0;
        int first_running = -1;
        for (uint32_t index = 0; index < n_all; index++)
            if (!s_ref_is_stop (params, all [index].token) && length < params->max_length) {
                if (first_running < 0)
                    first_running = (int) index;
                n_running++;
            }
        bool stop;
        if (n_running == 0)
            stop = true;
        else
        if (n_finished < width)
            stop = false;
        else
        if (params->early_stopping == PROTO_EARLY_STOPPING_TRUE)
            stop = true;
        else {
            uint32_t reachable = length;
            if (params->early_stopping == PROTO_EARLY_STOPPING_NEVER
            &&  params->length_penalty > 0)
                reachable = params->max_length;
            double best = params->length_penalty == 0
                        ? all [first_running].cumulative
                        : s_ref_score (all [first_running].cumulative, reachable,
                                       params->length_penalty);
            stop = finished [width - 1].score >= best;
        }
        if (stop)
            break;
        uint32_t n_next = 0;
        for (uint32_t index = 0; index < n_all && n_next < width; index++) {
            if (s_ref_is_stop (params, all [index].token) || length >= params->max_length)
                continue;
            next [n_next] = beams [all [index].parent];
            next [n_next].tokens [next [n_next].n_tokens++] = all [index].token;
            next [n_next].cumulative = all [index].cumulative;
            n_next++;
        }
        memcpy (beams, next, n_next * sizeof (ref_hypothesis_t));
        n_beams = n_next;
    }
    uint32_t n_results = n_finished < params->n? n_finished: params->n;
    memcpy (results, finished, n_results * sizeof (ref_hypothesis_t));
    free (all);
    free (finished);
    free (next);
    free (beams);
    return n_results;
}

//  --- The module, driven as the scheduler drives it -----------------------------------

typedef struct {
    uint32_t tokens [64];
    uint32_t n_tokens;
    double cumulative;
    uint32_t candidate_tokens [2 * PROTO_MAX_N];
    float candidate_logprobs [2 * PROTO_MAX_N];
} live_beam_t;

//  Each beam's 2 x width most likely tokens (fewer when fewer are possible), most likely
//  first, as sampler_beam_candidates gives them.
static uint32_t
s_top_candidates (const toy_model_t *model, live_beam_t *beam, uint32_t n_top)
{
    float logprobs [TOY_VOCAB];
    s_toy_logprobs (model, beam->tokens, beam->n_tokens, logprobs);
    bool taken [TOY_VOCAB] = { false };
    uint32_t found = 0;
    while (found < n_top) {
        int best = -1;
        for (uint32_t token = 0; token < TOY_VOCAB; token++)
            if (!taken [token] && logprobs [token] > -INFINITY
            &&  (best < 0 || logprobs [token] > logprobs [best]))
                best = (int) token;
        if (best < 0)
            break;
        taken [best] = true;
        beam->candidate_tokens [found] = (uint32_t) best;
        beam->candidate_logprobs [found] = logprobs [best];
        found++;
    }
    return found;
}

static beam_search_t *
s_run_module (const toy_model_t *model, const beam_search_params_t *params, int *steps)
{
    beam_search_t *search = beam_search_new (params);
    assert_non_null (search);
    live_beam_t *beams = calloc (params->width, sizeof (live_beam_t));
    live_beam_t *next = calloc (params->width, sizeof (live_beam_t));
    beam_t *views = calloc (params->width, sizeof (beam_t));
    beam_child_t *children = calloc (params->width, sizeof (beam_child_t));
    uint32_t n_beams = 1;
    bool done = false;
    *steps = 0;
    while (!done) {
        for (uint32_t index = 0; index < n_beams; index++) {
            views [index].tokens = beams [index].tokens;
            views [index].n_tokens = beams [index].n_tokens;
            views [index].cumulative = beams [index].cumulative;
            views [index].candidate_tokens = beams [index].candidate_tokens;
            views [index].candidate_logprobs = beams [index].candidate_logprobs;
            views [index].n_candidates = s_top_candidates (model, &beams [index],
                                                           2 * params->width);
        }
        uint32_t n_children = 99;
        assert_int_equal (beam_search_step (search, views, n_beams, children, &n_children,
                                            &done), 0);
        (*steps)++;
        assert_true (n_children <= params->width);
        assert_true (done == (n_children == 0));
        for (uint32_t index = 0; index < n_children; index++) {
            next [index] = beams [children [index].parent];
            next [index].tokens [next [index].n_tokens++] = children [index].token;
            next [index].cumulative = children [index].cumulative;
            if (index > 0)              //  best first
                assert_true (children [index].cumulative
                             <= children [index - 1].cumulative);
        }
        memcpy (beams, next, n_children * sizeof (live_beam_t));
        n_beams = n_children;
    }
    free (children);
    free (views);
    free (next);
    free (beams);
    return search;
}

//  --- Tests -----------------------------------------------------------------------------

static void
test_against_reference (void **state)
{
    (void) state;
    const float penalties [] = { 1.0f, 0.0f, 2.0f, -0.5f, 0.7f };
    const proto_early_stopping_t modes [] = { PROTO_EARLY_STOPPING_FALSE,
                                              PROTO_EARLY_STOPPING_TRUE,
                                              PROTO_EARLY_STOPPING_NEVER };
    uint32_t stops [] = { TOY_EOS, 7, 9, 4 };
    const uint32_t n_stops [4] = { 1, 2, 4, 3 };
    int cases = 0, results_seen = 0, length_finishes = 0, stop_finishes = 0;
    for (uint64_t seed = 1; seed <= 60; seed++) {
        toy_model_t model = { .seed = seed, .eos_boost = (float) (seed % 4) * 0.25f,
                              .holes = seed % 3 == 0 };
        for (uint32_t mode = 0; mode < 3; mode++)
            for (uint32_t penalty = 0; penalty < 5; penalty++) {
                beam_search_params_t params = { 0 };
                params.width = 1 + (uint32_t) ((seed + penalty) % 5);
                if (seed % 10 == 0)
                    params.width = 6;           //  2 x 6 = every token at once
                params.n = 1 + (uint32_t) (seed % params.width);
                params.length_penalty = penalties [penalty];
                params.early_stopping = modes [mode];
                params.n_prompt = 3 + (uint32_t) (seed % 7);
                params.max_length = params.n_prompt + 1 + (uint32_t) ((seed * 7) % 25);
                params.stop_tokens = stops;
                params.n_stop_tokens = n_stops [(seed + mode) % 4];
                if (seed % 11 == 0)
                    params.n_stop_tokens = 0;   //  ignore_eos: only length ends it

                ref_hypothesis_t expected [PROTO_MAX_N];
                uint32_t n_expected = s_ref_beam_search (&model, &params, expected);
                int steps;
                beam_search_t *search = s_run_module (&model, &params, &steps);
                assert_int_equal (beam_search_n_results (search), n_expected);
                for (uint32_t index = 0; index < n_expected; index++) {
                    const beam_hypothesis_t *got = beam_search_result (search, index);
                    assert_non_null (got);
                    assert_int_equal (got->n_tokens, expected [index].n_tokens);
                    assert_memory_equal (got->tokens, expected [index].tokens,
                                         got->n_tokens * sizeof (uint32_t));
                    assert_true (got->cumulative == expected [index].cumulative);
                    assert_true (fabs (got->score - expected [index].score)
                                 <= 1e-12 * fabs (expected [index].score));
                    assert_int_equal (got->finish, expected [index].finish);
                    length_finishes += got->finish == PROTO_FINISH_LENGTH;
                    stop_finishes += got->finish == PROTO_FINISH_STOP;
                    if (index > 0)
                        assert_true (got->score
                                     <= beam_search_result (search, index - 1)->score);
                }
                assert_null (beam_search_result (search, n_expected));
                results_seen += n_expected;
                beam_search_destroy (&search);
                cases++;
            }
    }
    assert_int_equal (cases, 900);
    //  The cases reach both ends.
    assert_true (length_finishes > 100);
    assert_true (stop_finishes > 100);
    assert_true (results_seen >= cases);
}

//  By hand: width 2, vocabulary {0 = EOS, 1, 2}; the numbers are chosen so that each rule
//  decides one step.
static void
test_rules_by_hand (void **state)
{
    (void) state;
    uint32_t eos = 0;
    beam_search_params_t params = { .width = 2, .n = 2, .length_penalty = 1.0f,
                                    .early_stopping = PROTO_EARLY_STOPPING_FALSE,
                                    .n_prompt = 4, .max_length = 10, .stop_tokens = &eos,
                                    .n_stop_tokens = 1 };
    beam_search_t *search = beam_search_new (&params);
    assert_non_null (search);
    beam_child_t children [2];
    uint32_t n_children;
    bool done;

    //  Step 1, the prompt alone: EOS is the most likely but finishes; the two running
    //  ones go on, best first.
    uint32_t tokens_0 [3] = { 0, 1, 2 };
    float logprobs_0 [3] = { -0.1f, -1.0f, -2.0f };
    beam_t prompt = { NULL, 0, 0.0, tokens_0, logprobs_0, 3 };
    assert_int_equal (beam_search_step (search, &prompt, 1, children, &n_children, &done), 0);
    assert_false (done);
    assert_int_equal (n_children, 2);
    assert_int_equal (children [0].token, 1);
    assert_int_equal (children [1].token, 2);
    assert_true (children [0].cumulative == (double) -1.0f);

    //  Step 2: beam 0 continues with 2 and with EOS; beam 1 is left behind. A second
    //  hypothesis finishes: two kept, and the best running (-1.5 over 6 tokens = -0.25)
    //  still beats the worst kept (-1.05 over 5 = -0.21)? No: -0.21 > -0.25: done.
    uint32_t g0 [1] = { 1 }, g1 [1] = { 2 };
    uint32_t c0 [2] = { 2, 0 }, c1 [1] = { 1 };
    float l0 [2] = { -0.5f, -0.05f }, l1 [1] = { -3.0f };
    beam_t beams [2] = { { g0, 1, children [0].cumulative, c0, l0, 2 },
                         { g1, 1, children [1].cumulative, c1, l1, 1 } };
    assert_int_equal (beam_search_step (search, beams, 2, children, &n_children, &done), 0);
    assert_true (done);
    assert_int_equal (n_children, 0);
    assert_int_equal (beam_search_n_results (search), 2);
    const beam_hypothesis_t *best = beam_search_result (search, 0);
    const beam_hypothesis_t *second = beam_search_result (search, 1);
    //  [0] at step 1: -0.1 over 4 (the prompt; EOS not counted) = -0.025.
    assert_int_equal (best->n_tokens, 1);
    assert_int_equal (best->tokens [0], 0);
    assert_true (fabs (best->score - (-0.1 / 4)) < 1e-7);
    assert_int_equal (best->finish, PROTO_FINISH_STOP);
    //  [1, 0]: (-1 - 0.05) over 5.
    assert_int_equal (second->n_tokens, 2);
    assert_int_equal (second->tokens [0], 1);
    assert_int_equal (second->tokens [1], 0);
    assert_true (fabs (second->score - (-1.05 / 5)) < 1e-7);
    //  A search that is done takes no more steps.
    assert_int_equal (beam_search_step (search, beams, 2, children, &n_children, &done), -1);
    beam_search_destroy (&search);
    assert_null (search);

    //  The same with early_stopping "never" and length_penalty 1: the longest reachable
    //  length (10) gives the running beam -1.5 / 10 = -0.15 > -0.21: it goes on.
    params.early_stopping = PROTO_EARLY_STOPPING_NEVER;
    search = beam_search_new (&params);
    assert_int_equal (beam_search_step (search, &prompt, 1, children, &n_children, &done), 0);
    beams [0].cumulative = children [0].cumulative;
    beams [1].cumulative = children [1].cumulative;
    assert_int_equal (beam_search_step (search, beams, 2, children, &n_children, &done), 0);
    assert_false (done);
    assert_int_equal (n_children, 2);
    assert_int_equal (children [0].token, 2);       //  [1, 2] at -1.5
    assert_int_equal (children [0].parent, 0);
    assert_int_equal (children [1].token, 1);       //  [2, 1] at -5
    assert_int_equal (children [1].parent, 1);
    beam_search_destroy (&search);

    //  max_length: every candidate of the last step finishes with "length".
    params.early_stopping = PROTO_EARLY_STOPPING_FALSE;
    params.max_length = 5;
    params.n = 1;
    search = beam_search_new (&params);
    uint32_t no_eos [2] = { 1, 2 };
    float no_eos_logprobs [2] = { -0.2f, -0.3f };
    beam_t short_prompt = { NULL, 0, 0.0, no_eos, no_eos_logprobs, 2 };
    assert_int_equal (beam_search_step (search, &short_prompt, 1, children, &n_children,
                                        &done), 0);
    assert_true (done);
    assert_int_equal (beam_search_n_results (search), 1);
    assert_int_equal (beam_search_result (search, 0)->finish, PROTO_FINISH_LENGTH);
    assert_int_equal (beam_search_result (search, 0)->tokens [0], 1);
    beam_search_destroy (&search);
}

static void
test_refusals (void **state)
{
    (void) state;
    uint32_t eos = 0;
    beam_search_params_t good = { .width = 2, .n = 1, .length_penalty = 1.0f,
                                  .n_prompt = 3, .max_length = 8, .stop_tokens = &eos,
                                  .n_stop_tokens = 1 };
    beam_search_params_t bad = good;
    assert_null (beam_search_new (NULL));
    bad.width = 0;
    assert_null (beam_search_new (&bad));
    bad = good;
    bad.width = PROTO_MAX_N + 1;
    assert_null (beam_search_new (&bad));
    bad = good;
    bad.n = 3;
    assert_null (beam_search_new (&bad));
    bad = good;
    bad.max_length = 3;
    assert_null (beam_search_new (&bad));
    bad = good;
    bad.length_penalty = NAN;
    assert_null (beam_search_new (&bad));
    bad = good;
    bad.early_stopping = (proto_early_stopping_t) 3;
    assert_null (beam_search_new (&bad));
    bad = good;
    bad.stop_tokens = NULL;
    assert_null (beam_search_new (&bad));

    beam_search_t *search = beam_search_new (&good);
    assert_non_null (search);
    beam_child_t children [2];
    uint32_t n_children;
    bool done;
    uint32_t tokens [2] = { 1, 2 };
    float logprobs [2] = { -1, -2 };
    uint32_t one [1] = { 1 }, two [2] = { 1, 1 };
    beam_t beams [3] = { { one, 1, 0, tokens, logprobs, 2 },
                         { two, 2, 0, tokens, logprobs, 2 },
                         { one, 1, 0, tokens, logprobs, 2 } };
    //  No beams, more than width, lengths that differ, candidates without arrays.
    assert_int_equal (beam_search_step (search, beams, 0, children, &n_children, &done), -1);
    assert_int_equal (beam_search_step (search, beams, 3, children, &n_children, &done), -1);
    assert_int_equal (beam_search_step (search, beams, 2, children, &n_children, &done), -1);
    beams [0].candidate_logprobs = NULL;
    assert_int_equal (beam_search_step (search, beams, 1, children, &n_children, &done), -1);
    beams [0].candidate_logprobs = logprobs;
    //  Past max_length: 3 + 5 generated + 1 > 8.
    uint32_t five [5] = { 1, 1, 1, 1, 1 };
    beam_t long_beam = { five, 5, 0, tokens, logprobs, 2 };
    assert_int_equal (beam_search_step (search, &long_beam, 1, children, &n_children,
                                        &done), -1);
    //  Nothing was changed: a good step still works.
    assert_int_equal (beam_search_step (search, beams, 1, children, &n_children, &done), 0);
    assert_false (done);
    assert_int_equal (n_children, 2);
    //  No possible candidate at all: done, with nothing to return.
    beam_t empty = { one, 1, -1, tokens, logprobs, 0 };
    beam_t both [2] = { empty, empty };
    assert_int_equal (beam_search_step (search, both, 2, children, &n_children, &done), 0);
    assert_true (done);
    assert_int_equal (beam_search_n_results (search), 0);
    beam_search_destroy (&search);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_rules_by_hand),
        cmocka_unit_test (test_refusals),
        cmocka_unit_test (test_against_reference),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
