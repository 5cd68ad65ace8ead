/*  test_beam_search_e2e — beam search through the real scheduler and a real worker on
    stories260K, against a plain beam search written here.

    The scheduler and a worker run in this process as they do in `zllm serve`; the test
    plays the tokenizer (SUBMIT in, TOKENS out). The reference runs each beam alone, the
    plain way: its whole sequence through a model of its own (the prompt, then every
    generated token, one call each, nothing shared), the log-probabilities of the whole
    vocabulary, and vLLM's rules over every beam x every token. The scheduler instead
    batches the beams of several requests with other requests in one step, shares their
    blocks copy-on-write, sees only each beam's 2 x width best tokens, and (with a small
    pool) preempts and recomputes them. Both must give the same hypotheses in the same
    order with the same finish reasons.

    OpenBLAS is off (ZLLM_BLAS=off) so that a row computes the same alone and in a batch
    (docs/architecture.md: products of 16 rows or more through OpenBLAS differ in the
    last bits).
*/
#include "beam_search.h"
#include "gguf.h"
#include "model.h"
#include "protocol.h"
#include "sampler.h"
#include "scheduler.h"
#include "worker.h"

#include <czmq.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define RECV_TIMEOUT_MS 20000
#define N_CTX 128
#define EOS 2
#define MAX_REQUESTS 16
#define MAX_GENERATED 64

//  --- The reference ----------------------------------------------------------------------

typedef struct {
    gguf_t *gguf;                   //  the model reads its weights from its mapping
    model_t *model;
    sampler_t *sampler;
    uint32_t n_vocab;
    sampler_logprob_t *all;         //  [n_vocab]
} reference_t;

typedef struct {
    uint32_t tokens [MAX_GENERATED];
    uint32_t n_tokens;
    double cumulative;
    double score;
    proto_finish_t finish;
} ref_beam_t;

typedef struct {
    double cumulative;
    uint32_t parent;
    uint32_t token;
} ref_candidate_t;

//  What one request asks.
typedef struct {
    uint32_t prompt [16];
    uint32_t n_prompt;
    uint32_t width;
    uint32_t n;
    float length_penalty;
    proto_early_stopping_t early_stopping;
    uint32_t max_tokens;
    uint32_t stop_tokens [2];
    uint32_t n_stop_tokens;
} beam_request_t;

static reference_t *
s_reference_new (const char *path)
{
    reference_t *self = (reference_t *) calloc (1, sizeof (reference_t));
    char err [256];
    self->gguf = gguf_open (path, err, sizeof err);
    assert_non_null (self->gguf);
    self->model = model_new (self->gguf, N_CTX, err, sizeof err);
    assert_non_null (self->model);
    assert_int_equal (model_cache_new (self->model, N_CTX / 16, 16, err, sizeof err), 0);
    self->n_vocab = model_config (self->model)->n_vocab;
    self->sampler = sampler_new (self->n_vocab);
    self->all = (sampler_logprob_t *) calloc (self->n_vocab, sizeof (sampler_logprob_t));
    return self;
}

static void
s_reference_destroy (reference_t **self_p)
{
    reference_t *self = *self_p;
    model_destroy (&self->model);
    gguf_destroy (&self->gguf);
    sampler_destroy (&self->sampler);
    free (self->all);
    free (self);
    *self_p = NULL;
}

//  The log-probability of every next token after prompt + generated, computed from
//  scratch: the prompt in one call, then each generated token in a call of its own.
//  logprobs is indexed by token.
static void
s_reference_logprobs (reference_t *self, const beam_request_t *request,
                      const uint32_t *generated, uint32_t n_generated, double *logprobs)
{
    uint32_t table [N_CTX / 16];
    for (uint32_t i = 0; i < N_CTX / 16; i++)
        table [i] = i;
    char err [256];
    model_seq_t seq = { request->prompt, request->n_prompt, 0, table, N_CTX / 16,
                        n_generated == 0 };
    const float *logits = model_forward_seqs (self->model, &seq, 1, err, sizeof err);
    assert_non_null (logits);
    for (uint32_t i = 0; i < n_generated; i++) {
        seq = (model_seq_t) { &generated [i], 1, request->n_prompt + i, table, N_CTX / 16,
                              i + 1 == n_generated };
        logits = model_forward_seqs (self->model, &seq, 1, err, sizeof err);
        assert_non_null (logits);
    }
    //  The model's own distribution, every token (the requests here ask for no bias,
    //  penalty or mask, so it is also the processed one).
    sampler_top_logprobs (self->sampler, logits, self->all, self->n_vocab);
    for (uint32_t i = 0; i < self->n_vocab; i++)
        logprobs [self->all [i].token] = self->all [i].logprob;
}

static int
s_compare_candidates (const void *a_p, const void *b_p)
{
    const ref_candidate_t *a = (const ref_candidate_t *) a_p;
    const ref_candidate_t *b = (const ref_candidate_t *) b_p;
    if (a->cumulative != b->cumulative)
        return a->cumulative > b->cumulative? -1: 1;
    if (a->parent != b->parent)
        return a->parent < b->parent? -1: 1;
    return a->token < b->token? -1: 1;
}

static bool
s_is_stop (const beam_request_t *request, uint32_t token)
{
    for (uint32_t i = 0; i < request->n_stop_tokens; i++)
        if (request->stop_tokens [i] == token)
            return true;
    return false;
}

static double
s_score (double cumulative, uint32_t length, float length_penalty)
{
    return cumulative / pow ((double) length, (double) length_penalty);
}

//  vLLM's beam search, plainly. Returns how many hypotheses went into results (n).
static uint32_t
s_reference_beam_search (reference_t *self, const beam_request_t *request,
                         ref_beam_t *results)
{
    uint32_t width = request->width;
    uint32_t max_length = N_CTX;
    if (request->max_tokens && request->n_prompt + request->max_tokens < max_length)
        max_length = request->n_prompt + request->max_tokens;
    ref_beam_t beams [PROTO_MAX_N], next [PROTO_MAX_N], finished [3 * PROTO_MAX_N];
    memset (beams, 0, sizeof beams);
    uint32_t n_beams = 1, n_finished = 0;
    double *logprobs = (double *) malloc (self->n_vocab * sizeof (double));
    ref_candidate_t *all = (ref_candidate_t *) malloc (width * self->n_vocab
                                                       * sizeof (ref_candidate_t));
    while (true) {
        uint32_t length = request->n_prompt + beams [0].n_tokens + 1;
        uint32_t n_all = 0;
        for (uint32_t parent = 0; parent < n_beams; parent++) {
            s_reference_logprobs (self, request, beams [parent].tokens,
                                  beams [parent].n_tokens, logprobs);
            for (uint32_t token = 0; token < self->n_vocab; token++)
                if (logprobs [token] > -INFINITY)
                    all [n_all++] = (ref_candidate_t) {
                        beams [parent].cumulative + (float) logprobs [token], parent, token };
        }
        qsort (all, n_all, sizeof (ref_candidate_t), s_compare_candidates);
        if (n_all > 2 * width)
            n_all = 2 * width;
        for (uint32_t i = 0; i < n_all; i++) {
            bool stop = s_is_stop (request, all [i].token);
            if (!stop && length < max_length)
                continue;
            ref_beam_t *hypothesis = &finished [n_finished++];
            *hypothesis = beams [all [i].parent];
            hypothesis->tokens [hypothesis->n_tokens++] = all [i].token;
            hypothesis->cumulative = all [i].cumulative;
            hypothesis->finish = stop? PROTO_FINISH_STOP: PROTO_FINISH_LENGTH;
            hypothesis->score = s_score (all [i].cumulative, stop? length - 1: length,
                                         request->length_penalty);
        }
        for (uint32_t i = 1; i < n_finished; i++)
            for (uint32_t at = i; at > 0 && finished [at - 1].score < finished [at].score;
                 at--) {
                ref_beam_t swap = finished [at];
                finished [at] = finished [at - 1];
                finished [at - 1] = swap;
            }
        if (n_finished > width)
            n_finished = width;
        int best_running = -1;
        for (uint32_t i = 0; i < n_all && best_running < 0; i++)
            if (!s_is_stop (request, all [i].token) && length < max_length)
                best_running = (int) i;
        bool stop;
        if (best_running < 0)
            stop = true;
        else
        if (n_finished < width)
            stop = false;
        else
        if (request->early_stopping == PROTO_EARLY_STOPPING_TRUE)
            stop = true;
        else {
            uint32_t reachable = length;
            if (request->early_stopping == PROTO_EARLY_STOPPING_NEVER
            &&  request->length_penalty > 0)
                reachable = max_length;
            stop = finished [width - 1].score
                >= s_score (all [best_running].cumulative, reachable,
                            request->length_penalty);
        }
        if (stop)
            break;
        uint32_t n_next = 0;
        for (uint32_t i = 0; i < n_all && n_next < width; i++) {
            if (s_is_stop (request, all [i].token) || length >= max_length)
                continue;
            next [n_next] = beams [all [i].parent];
            next [n_next].tokens [next [n_next].n_tokens++] = all [i].token;
            next [n_next].cumulative = all [i].cumulative;
            n_next++;
        }
        memcpy (beams, next, n_next * sizeof (ref_beam_t));
        n_beams = n_next;
    }
    free (all);
    free (logprobs);
    uint32_t n_results = n_finished < request->n? n_finished: request->n;
    memcpy (results, finished, n_results * sizeof (ref_beam_t));
    return n_results;
}


//  --- The server side --------------------------------------------------------------------

typedef struct {
    char model [512];
    scheduler_args_t scheduler_args;
    worker_args_t worker_args;
    zactor_t *scheduler;
    zactor_t *worker;
    zsock_t *tokenizer;             //  DEALER, as the tokenizer actor
    zsock_t *status;                //  SUB
} server_t;

static server_t *
s_server_new (uint64_t kv_cache_bytes, uint32_t max_num_batched_tokens)
{
    static int counter = 0;
    counter++;
    server_t *self = (server_t *) calloc (1, sizeof (server_t));
    const char *shared = getenv ("ZLLM_SHARED_DIR");
    snprintf (self->model, sizeof self->model, "%s/models/stories260K.gguf",
              shared? shared: "../shared");
    char inbox [64], workers [64], status [64];
    snprintf (inbox, sizeof inbox, "inproc://beam-inbox-%d", counter);
    snprintf (workers, sizeof workers, "inproc://beam-workers-%d", counter);
    snprintf (status, sizeof status, "inproc://beam-status-%d", counter);
    self->scheduler_args.inbox_endpoint = strdup (inbox);
    self->scheduler_args.worker_endpoint = strdup (workers);
    self->scheduler_args.status_endpoint = strdup (status);
    self->scheduler_args.max_num_batched_tokens = max_num_batched_tokens;
    self->scheduler = zactor_new (scheduler_actor, &self->scheduler_args);
    assert_string_equal (self->scheduler_args.error, "");
    self->status = zsock_new_sub (status, "");
    zsock_set_rcvtimeo (self->status, RECV_TIMEOUT_MS);
    self->worker_args.model_path = self->model;
    self->worker_args.scheduler_endpoint = self->scheduler_args.worker_endpoint;
    self->worker_args.device = "cpu:0";
    self->worker_args.n_ctx = N_CTX;
    self->worker_args.block_size = 16;
    self->worker_args.kv_cache_bytes = kv_cache_bytes;
    self->worker_args.n_threads = 1;
    self->worker = zactor_new (worker_actor, &self->worker_args);
    assert_string_equal (self->worker_args.error, "");
    //  Wait until the worker has joined.
    while (true) {
        proto_msg_t msg = PROTO_MSG_INIT;
        char err [256];
        assert_int_equal (proto_recv (self->status, &msg, NULL, err, sizeof err), 0);
        uint32_t workers_joined = msg.workers;
        proto_msg_reset (&msg);
        if (workers_joined == 1)
            break;
    }
    self->tokenizer = zsock_new_dealer (inbox);
    zsock_set_rcvtimeo (self->tokenizer, RECV_TIMEOUT_MS);
    return self;
}

static void
s_server_destroy (server_t **self_p)
{
    server_t *self = *self_p;
    zsock_destroy (&self->tokenizer);
    zsock_destroy (&self->status);
    zactor_destroy (&self->worker);
    zactor_destroy (&self->scheduler);
    free ((char *) self->scheduler_args.inbox_endpoint);
    free ((char *) self->scheduler_args.worker_endpoint);
    free ((char *) self->scheduler_args.status_endpoint);
    free (self);
    *self_p = NULL;
}

static void
s_submit_beams (server_t *server, uint64_t id, const beam_request_t *request)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_SUBMIT;
    msg.request_id = id;
    assert_int_equal (proto_msg_set_tokens (&msg, request->prompt, request->n_prompt), 0);
    assert_int_equal (proto_msg_set_stop_tokens (&msg, request->stop_tokens,
                                                 request->n_stop_tokens), 0);
    msg.max_tokens = request->max_tokens;
    msg.n = request->n;
    msg.best_of = request->width;
    msg.use_beam_search = true;
    msg.length_penalty = request->length_penalty;
    msg.early_stopping = request->early_stopping;
    msg.sampling.temperature = 0.8f;        //  the scheduler makes beam search greedy
    msg.sampling.seed = id;
    assert_int_equal (proto_send (&msg, server->tokenizer), 0);
    proto_msg_reset (&msg);
}

static void
s_submit_greedy (server_t *server, uint64_t id, const uint32_t *prompt, uint32_t n_prompt,
                 uint32_t max_tokens)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_SUBMIT;
    msg.request_id = id;
    assert_int_equal (proto_msg_set_tokens (&msg, prompt, n_prompt), 0);
    msg.max_tokens = max_tokens;
    assert_int_equal (proto_send (&msg, server->tokenizer), 0);
    proto_msg_reset (&msg);
}

//  What came back for one request.
typedef struct {
    ref_beam_t results [PROTO_MAX_N];
    uint32_t n_results;
    uint32_t n_greedy;              //  a greedy request: tokens so far
    bool finished;
    uint32_t error_status;
    char error [256];
} outcome_t;

//  Receive until every request of ids [first, first + count) has finished (all its
//  hypotheses, or its ERROR). n_expected [i]: the TOKENS a beam request ends with.
static void
s_collect (server_t *server, uint64_t first, uint32_t count, const uint32_t *n_expected,
           outcome_t *outcomes)
{
    uint32_t n_done = 0;
    while (n_done < count) {
        proto_msg_t msg = PROTO_MSG_INIT;
        char err [256];
        int rc = proto_recv (server->tokenizer, &msg, NULL, err, sizeof err);
        if (rc != 0)
            fprintf (stderr, "no answer: %s (%u of %u done)\n", err, n_done, count);
        assert_int_equal (rc, 0);
        assert_true (msg.request_id >= first && msg.request_id < first + count);
        uint32_t at = (uint32_t) (msg.request_id - first);
        outcome_t *outcome = &outcomes [at];
        assert_false (outcome->finished);
        if (msg.kind == PROTO_ERROR) {
            outcome->error_status = msg.status;
            snprintf (outcome->error, sizeof outcome->error, "%s", msg.text);
            outcome->finished = true;
            n_done++;
        }
        else {
            assert_int_equal (msg.kind, PROTO_TOKENS);
            if (n_expected [at] == 0) {
                outcome->n_greedy += msg.n_tokens;
                if (msg.finish != PROTO_FINISH_NONE) {
                    outcome->finished = true;
                    n_done++;
                }
            }
            else {
                //  Each hypothesis whole, in rank order.
                assert_int_equal (msg.index, outcome->n_results);
                assert_true (msg.finish == PROTO_FINISH_STOP
                             || msg.finish == PROTO_FINISH_LENGTH);
                ref_beam_t *result = &outcome->results [outcome->n_results++];
                assert_true (msg.n_tokens <= MAX_GENERATED);
                memcpy (result->tokens, msg.tokens, msg.n_tokens * sizeof (uint32_t));
                result->n_tokens = msg.n_tokens;
                result->finish = msg.finish;
                if (outcome->n_results == n_expected [at]) {
                    outcome->finished = true;
                    n_done++;
                }
            }
        }
        proto_msg_reset (&msg);
    }
}

static void
s_assert_same (const beam_request_t *request, const ref_beam_t *expected,
               uint32_t n_expected, const outcome_t *outcome)
{
    if (outcome->error_status)
        fprintf (stderr, "error %u: %s\n", outcome->error_status, outcome->error);
    assert_int_equal (outcome->error_status, 0);
    assert_int_equal (outcome->n_results, n_expected);
    assert_int_equal (n_expected, request->n);
    for (uint32_t rank = 0; rank < n_expected; rank++) {
        const ref_beam_t *got = &outcome->results [rank];
        if (got->n_tokens != expected [rank].n_tokens
        ||  memcmp (got->tokens, expected [rank].tokens, got->n_tokens * sizeof (uint32_t))) {
            fprintf (stderr, "rank %u: got", rank);
            for (uint32_t i = 0; i < got->n_tokens; i++)
                fprintf (stderr, " %u", got->tokens [i]);
            fprintf (stderr, "; expected");
            for (uint32_t i = 0; i < expected [rank].n_tokens; i++)
                fprintf (stderr, " %u", expected [rank].tokens [i]);
            fprintf (stderr, "\n");
        }
        assert_int_equal (got->n_tokens, expected [rank].n_tokens);
        assert_memory_equal (got->tokens, expected [rank].tokens,
                             got->n_tokens * sizeof (uint32_t));
        assert_int_equal (got->finish, expected [rank].finish);
    }
}

//  The bytes of one KV block of 16 positions of stories260K, to size small pools.
static uint64_t
s_block_bytes (void)
{
    const char *shared = getenv ("ZLLM_SHARED_DIR");
    char path [512], err [256];
    snprintf (path, sizeof path, "%s/models/stories260K.gguf", shared? shared: "../shared");
    gguf_t *gguf = gguf_open (path, err, sizeof err);
    assert_non_null (gguf);
    model_t *model = model_new (gguf, N_CTX, err, sizeof err);
    assert_non_null (model);
    uint64_t block_bytes = model_cache_block_bytes (model, 16);
    model_destroy (&model);
    gguf_destroy (&gguf);
    return block_bytes;
}

//  The requests of the tests: stories260K prompts, widths 1 .. 6, every early_stopping,
//  length penalties on both sides of 0, EOS and another stop token, lengths that end
//  by max_tokens.
static uint32_t
s_make_requests (beam_request_t *requests)
{
    static const uint32_t prompts [4][8] = {
        { 1, 403, 407, 261, 378 },                      //  Once upon a time
        { 1, 317, 269, 274, 287, 263, 377, 267 },       //  Lily and Tom went to
        { 1, 291, 280, 294, 262, 294 },                 //  The cat sat
        { 1, 403, 407, 261, 378, 432 }                  //  Once upon a time,
    };
    static const uint32_t prompt_sizes [4] = { 5, 8, 6, 6 };
    static const float penalties [4] = { 1.0f, 0.0f, 2.0f, -0.5f };
    uint32_t count = 0;
    for (uint32_t i = 0; i < 12; i++) {
        beam_request_t *request = &requests [count++];
        memset (request, 0, sizeof *request);
        uint32_t prompt = i % 4;
        memcpy (request->prompt, prompts [prompt], prompt_sizes [prompt] * sizeof (uint32_t));
        request->n_prompt = prompt_sizes [prompt];
        request->width = 1 + i % 6;
        request->n = 1 + (i * 5) % request->width;
        request->length_penalty = penalties [i % 4];
        request->early_stopping = (proto_early_stopping_t) (i % 3);
        request->max_tokens = 6 + (i * 7) % 30;
        request->stop_tokens [0] = EOS;
        request->n_stop_tokens = 1;
        if (i % 5 == 2) {
            request->stop_tokens [1] = 432;             //  ","
            request->n_stop_tokens = 2;
        }
    }
    return count;
}

//  Every request alone, then all of them at once with greedy requests in between, on
//  the default pool: the same hypotheses as the reference.
static void
test_beam_search_matches_reference (void **state)
{
    (void) state;
    server_t *server = s_server_new (0, 0);
    reference_t *reference = s_reference_new (server->model);
    beam_request_t requests [MAX_REQUESTS];
    uint32_t n_requests = s_make_requests (requests);
    ref_beam_t expected [MAX_REQUESTS][PROTO_MAX_N];
    uint32_t n_expected [MAX_REQUESTS];
    for (uint32_t i = 0; i < n_requests; i++)
        n_expected [i] = s_reference_beam_search (reference, &requests [i], expected [i]);

    outcome_t *outcomes = (outcome_t *) calloc (2 * MAX_REQUESTS, sizeof (outcome_t));
    for (uint32_t i = 0; i < n_requests; i++) {
        s_submit_beams (server, 100 + i, &requests [i]);
        memset (&outcomes [0], 0, sizeof (outcome_t));
        s_collect (server, 100 + i, 1, &requests [i].n, &outcomes [0]);
        s_assert_same (&requests [i], expected [i], n_expected [i], &outcomes [0]);
    }
    //  All at once, each beam request followed by a greedy one.
    uint32_t waits [2 * MAX_REQUESTS] = { 0 };
    memset (outcomes, 0, 2 * MAX_REQUESTS * sizeof (outcome_t));
    for (uint32_t i = 0; i < n_requests; i++) {
        s_submit_beams (server, 200 + 2 * i, &requests [i]);
        waits [2 * i] = requests [i].n;
        s_submit_greedy (server, 200 + 2 * i + 1, requests [i].prompt, requests [i].n_prompt,
                         10 + i);
        waits [2 * i + 1] = 0;
    }
    s_collect (server, 200, 2 * n_requests, waits, outcomes);
    for (uint32_t i = 0; i < n_requests; i++) {
        s_assert_same (&requests [i], expected [i], n_expected [i], &outcomes [2 * i]);
        assert_int_equal (outcomes [2 * i + 1].error_status, 0);
        assert_true (outcomes [2 * i + 1].n_greedy >= 1);
    }
    free (outcomes);
    s_reference_destroy (&reference);
    s_server_destroy (&server);
}

//  A pool of 12 blocks (192 positions) and a step budget of 16 tokens, shared with a
//  greedy request of 105 tokens that came first: the beams of three requests do not
//  fit beside it, some are preempted and recomputed, and the answers do not change.
static void
test_beam_search_with_preemption (void **state)
{
    (void) state;
    char err [256];
    server_t *server = s_server_new (12 * s_block_bytes (), 16);
    reference_t *reference = s_reference_new (server->model);
    beam_request_t requests [MAX_REQUESTS];
    s_make_requests (requests);
    //  Three of the wider ones, longer; the greedy one goes first (id 299).
    const uint32_t chosen [3] = { 3, 4, 5 };
    beam_request_t picked [3];
    ref_beam_t expected [3][PROTO_MAX_N];
    uint32_t n_expected [3], waits [4] = { 0 };
    for (uint32_t i = 0; i < 3; i++) {
        picked [i] = requests [chosen [i]];
        picked [i].max_tokens = 30;
        picked [i].n_stop_tokens = 0;           //  no EOS: they run to max_tokens
        picked [i].early_stopping = PROTO_EARLY_STOPPING_NEVER;
        n_expected [i] = s_reference_beam_search (reference, &picked [i], expected [i]);
        waits [1 + i] = picked [i].n;
    }
    uint32_t greedy_prompt [5] = { 1, 403, 407, 261, 378 };
    s_submit_greedy (server, 299, greedy_prompt, 5, 100);
    for (uint32_t i = 0; i < 3; i++)
        s_submit_beams (server, 300 + i, &picked [i]);
    outcome_t *outcomes = (outcome_t *) calloc (4, sizeof (outcome_t));
    s_collect (server, 299, 4, waits, outcomes);
    assert_int_equal (outcomes [0].error_status, 0);
    assert_int_equal (outcomes [0].n_greedy, 100);
    for (uint32_t i = 0; i < 3; i++)
        s_assert_same (&picked [i], expected [i], n_expected [i], &outcomes [1 + i]);
    //  Preemption happened: the latest STATUS counts it (older ones wait in the queue
    //  first).
    uint64_t preemptions = 0;
    zsock_set_rcvtimeo (server->status, 1500);
    proto_msg_t msg = PROTO_MSG_INIT;
    for (int read = 0; read < 200 && preemptions == 0
                       && proto_recv (server->status, &msg, NULL, err, sizeof err) == 0;
         read++) {
        preemptions = msg.preemptions;
        proto_msg_reset (&msg);
    }
    assert_true (preemptions > 0);
    free (outcomes);
    s_reference_destroy (&reference);
    s_server_destroy (&server);
}

//  A pool of 8 blocks (one sequence of the context) cannot hold 6 beams of 40 tokens
//  that each need blocks of their own: the request fails with 503 instead of waiting
//  forever, and the server goes on serving.
static void
test_beam_search_too_wide_for_the_pool (void **state)
{
    (void) state;
    server_t *server = s_server_new (8 * s_block_bytes (), 0);
    beam_request_t wide = { .prompt = { 1, 403, 407, 261, 378 }, .n_prompt = 5, .width = 6,
                            .n = 2, .length_penalty = 1.0f,
                            .early_stopping = PROTO_EARLY_STOPPING_NEVER,
                            .max_tokens = 100 };
    s_submit_beams (server, 400, &wide);
    outcome_t outcome = { 0 };
    uint32_t wait = 2;
    s_collect (server, 400, 1, &wait, &outcome);
    assert_int_equal (outcome.error_status, 503);
    assert_non_null (strstr (outcome.error, "cannot hold"));
    //  A greedy request still runs.
    uint32_t prompt [5] = { 1, 403, 407, 261, 378 };
    s_submit_greedy (server, 401, prompt, 5, 8);
    wait = 0;
    memset (&outcome, 0, sizeof outcome);
    s_collect (server, 401, 1, &wait, &outcome);
    assert_int_equal (outcome.error_status, 0);
    assert_int_equal (outcome.n_greedy, 8);
    s_server_destroy (&server);
}

int
main (void)
{
    setenv ("ZLLM_BLAS", "off", 1);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_beam_search_matches_reference),
        cmocka_unit_test (test_beam_search_with_preemption),
        cmocka_unit_test (test_beam_search_too_wide_for_the_pool),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
