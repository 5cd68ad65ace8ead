/*  scheduler — decides, step by step, what every worker computes. See scheduler.h.

    The actor's state: requests waiting in arrival order, and workers. Each worker has a
    block manager (its KV pool: which block holds what, shared prefixes), the requests
    running on it in the order they were admitted, and at most one step in flight with
    the plan it was built from. The loop: read what arrived (requests, cancels, worker
    messages), then give every idle worker its next step, then heartbeats and STATUS.

    Where a request goes next:

        SUBMIT -> s_handle_submit -> waiting list
        s_schedule -> s_step_worker (for each idle worker, least loaded first): running
            requests first, each its next token or its next prefill chunk; then waiting
            requests are admitted while the token budget, the sequence cap and the free
            blocks allow, unless the head is left to a worker that caches more of it
            -> STEP
        STEP_RESULT -> s_handle_step_result -> TOKENS to the tokenizer -> finished? its
            blocks are freed : it stays running and gets its next token in the next step

    The policy, in s_step_worker, is continuous batching with chunked prefill, as vLLM's:
    - every step has a budget of max_num_batched_tokens new tokens and at most
      max_num_seqs sequences;
    - running requests come first, oldest first: a decode takes one token of the budget,
      a prompt being prefilled takes what is left of it (a chunk), so a long prompt
      shares steps with the streams already running instead of freezing them;
    - then waiting requests are admitted first come, first served (nobody overtakes the
      head of the queue) when the blocks for their whole prompt are free; a prompt's
      leading blocks that are in the prefix cache are not computed again. A request
      that cannot run on this worker at all (longer than its context, or a beam whose
      other beams run elsewhere) does not hold it back: the worker's head of the queue
      is the first request it can run;
    - each request runs on one worker (data parallel), chosen by load and by where its
      prompt is cached (s_defers_head). Idle workers build their steps least loaded
      first; the first that can admit the head of the queue takes it, except that it
      leaves the head to a better worker: one that caches at least one block more of
      the head's prompt and could admit it now (its context holds it, it runs fewer than
      max_num_seqs sequences, the blocks for the rest of the prompt are free, a beam may
      run there). That worker builds its step later in the same round, or is running a
      step and takes the head when the step ends. A worker that leaves the head admits
      nothing else (nobody overtakes the head), and it does so for PREFIX_WAIT_MS at
      most, counted from the first time a worker left that request: then the first
      worker that can admit it does, so a better worker that stays busy never starves
      it (the loop wakes at least every 100 ms). The choice only looks at the prefix
      caches (block_manager_cached_prefix): it holds no block and counts no query;
    - when a running request needs a block and none is free, the newest running request
      is preempted: its blocks are freed and it goes back to the head of the queue with
      its tokens so far, to be recomputed later (its output does not change: the worker
      draws each token from a generator seeded by the request's seed and the token's
      index).

    A request with n > 1 has n sequences: sequence 0 runs the prompt alone; when its first
    token comes, the others fork from its blocks (shared, copied by the worker when
    written) and each computes the prompt's last token again for its own logits, with
    the request's seed + its index (they join the running list at once, even past
    max_num_seqs). Each sequence finishes on its own; a CANCEL may end
    one of them (a stop string) or all. With best_of > n, best_of sequences run and
    nothing is sent until all have finished: then the n with the highest cumulative
    log-probability go, best first (s_rank_finished).

    The block tables live here; a step tells the worker which blocks each sequence reads
    and writes, which blocks to copy first and which sequences to forget.
*/
#include "scheduler.h"
#include "beam_search.h"
#include "block_manager.h"
#include "protocol.h"
#include "zlog.h"

#include <inttypes.h>
#include <string.h>

#define ACTOR "scheduler"
#define STATUS_INTERVAL_MS 1000
#define DEFAULT_MAX_NUM_SEQS 64
#define DEFAULT_MAX_NUM_BATCHED_TOKENS 512
//  How long an idle worker leaves the head of the queue to a worker that caches more of
//  its prompt (the routing rule in the header comment), from the first time it did.
#define PREFIX_WAIT_MS 200

typedef struct _worker_t worker_t;

//  best_of > n: the request's sequences are ranked when all have finished; the finished
//  ones wait here. Shared by the sequences; freed when the last of them goes.
typedef struct {
    uint32_t n;                     //  how many come back
    uint32_t size;                  //  best_of: how many run
    uint32_t n_live;                //  sequences that still exist
    uint32_t n_finished;
    uint32_t **outputs;             //  [size]: each finished sequence's generated tokens
    uint32_t *n_outputs;            //  [size]
    double *scores;                 //  [size]: cumulative log-probability
    proto_finish_t *finishes;       //  [size]
} ranking_t;

typedef struct _request_t request_t;

//  use_beam_search: the request's live beams, best first, and the search's bookkeeping
//  (beam_search.h). Each round, every beam computes its next position and reports its
//  candidates; when all have, the search chooses the next beams. Shared by the beams;
//  freed when the last of them goes.
typedef struct {
    beam_search_t *search;          //  made at the first round, when the context is known
    uint32_t width;
    uint32_t n;                     //  hypotheses that come back
    float length_penalty;
    proto_early_stopping_t early_stopping;
    request_t **beams;              //  [width]: this round's beams
    uint32_t n_beams;
    uint32_t n_reported;            //  beams whose candidates came this round
    uint32_t n_live;                //  request_t that point here
    beam_child_t *children;         //  [width], scratch
    beam_t *views;                  //  [width], scratch
} beam_group_t;

//  One sequence of a request. A request with n > 1 has n of them, with the same id and
//  indexes 0 .. n-1: index 0 prefills the prompt, and when its prompt is computed the
//  others fork from it (they share its blocks) and each samples its own tokens. A beam
//  search request starts with one sequence and has up to width (its beams, index 0).
struct _request_t {
    uint64_t id;                    //  the request id
    uint64_t seq_id;                //  this sequence's id on its worker
    uint32_t index;                 //  which of the request's sequences
    request_t **forks;              //  index 0 before its prompt is computed: the others
    uint32_t n_forks;
    zframe_t *reply_to;             //  routing id of the tokenizer that sent it
    uint32_t *tokens;               //  prompt, then every generated token
    uint32_t n_tokens;
    uint32_t capacity;
    uint32_t n_prompt;
    uint32_t max_tokens;            //  0: up to the context length
    proto_sampling_t sampling;
    uint32_t *stop_tokens;
    uint32_t n_stop_tokens;
    //  While it runs on a worker
    worker_t *worker;               //  NULL while waiting
    block_table_t table;
    uint32_t n_computed;            //  leading tokens whose keys and values are in blocks
    bool started;                   //  the worker has its sampling state
    uint32_t n_preempted;
    double logprob;                 //  cumulative, of the tokens generated
    ranking_t *ranking;             //  best_of > n: where it goes when finished
    beam_group_t *beams;            //  use_beam_search: its group
    bool reported;                  //  a beam: its candidates for this round came
    uint32_t *candidate_tokens;     //  ... here, heap
    float *candidate_logprobs;
    uint32_t n_candidates;
    int64_t submitted_at;           //  zclock_usecs when SUBMIT came
    int64_t admitted_at;            //  ... when it first ran on a worker (0: not yet)
    int64_t deferred_since;         //  zclock_mono when a worker first left it, at the
                                    //  head, to one that caches more of it (0: not yet)
    bool sent_tokens;               //  a TOKENS went for it (queue_us goes on the first)
};

//  What a step in flight asked for one sequence, to apply its result.
typedef struct {
    uint64_t seq_id;
    uint32_t n_tokens;              //  new tokens it computes
    bool sample;
} planned_seq_t;

struct _worker_t {
    zframe_t *routing_id;
    char *device;
    uint32_t n_ctx;
    block_manager_t *blocks;
    zlistx_t *running;              //  request_t *, in the order they were admitted
    zhashx_t *by_id;                //  the same requests, by id
    uint64_t step_in_flight;        //  0 when idle
    planned_seq_t *plan;            //  the step in flight's sequences
    uint32_t n_plan;
    uint32_t plan_capacity;
    uint64_t *frees;                //  sequences to forget, sent with the next step
    uint32_t n_frees;
    uint32_t frees_capacity;
    int64_t last_heard;             //  zclock_mono of the last message from it
};

typedef struct {
    scheduler_args_t *args;
    zsock_t *pipe;
    zsock_t *inbox;                 //  ROUTER, tokenizer side
    zsock_t *workers_router;        //  ROUTER, worker side
    zsock_t *status_pub;
    zpoller_t *poller;
    zlistx_t *waiting;              //  request_t *, first come first served
    zlistx_t *workers;              //  worker_t *
    uint64_t next_step_id;
    uint64_t next_fork_id;          //  worker-side ids of sequences 1 .. n-1
    uint32_t heartbeat_ms;
    uint32_t worker_timeout_ms;
    uint32_t max_num_seqs;
    uint32_t max_num_batched_tokens;
    uint64_t preemptions;
    int64_t next_heartbeat;
    int64_t next_status;
    bool status_changed;
    bool terminated;
    bool asked_to_stop;             //  "$TERM" came; otherwise we say STOPPED
} scheduler_t;


//  --- Requests ---------------------------------------------------------------------------

//  A sequence of request request_id with its own copies of tokens (n_tokens, of which
//  the first n_prompt are the prompt), sampling and stop tokens; not on a worker yet.
//  Returns NULL when out of memory.
static request_t *
s_sequence_new (uint64_t request_id, uint64_t seq_id, uint32_t index, zframe_t *reply_to,
                const uint32_t *tokens, uint32_t n_tokens, uint32_t n_prompt,
                uint32_t max_tokens, const proto_sampling_t *sampling,
                const uint32_t *stop_tokens, uint32_t n_stop_tokens)
{
    request_t *self = (request_t *) calloc (1, sizeof (request_t));
    if (!self)
        return NULL;
    self->id = request_id;
    self->seq_id = seq_id;
    self->index = index;
    self->reply_to = zframe_dup (reply_to);
    self->capacity = n_tokens + 16;
    self->tokens = (uint32_t *) malloc (self->capacity * sizeof (uint32_t));
    if (n_stop_tokens)
        self->stop_tokens = (uint32_t *) malloc (n_stop_tokens * sizeof (uint32_t));
    if (!self->reply_to || !self->tokens || (n_stop_tokens && !self->stop_tokens)
    ||  proto_sampling_copy (&self->sampling, sampling) != 0) {
        zframe_destroy (&self->reply_to);
        free (self->tokens);
        free (self->stop_tokens);
        free (self);
        return NULL;
    }
    if (n_tokens)
        memcpy (self->tokens, tokens, n_tokens * sizeof (uint32_t));
    self->n_tokens = n_tokens;
    self->n_prompt = n_prompt;
    self->max_tokens = max_tokens;
    if (n_stop_tokens)
        memcpy (self->stop_tokens, stop_tokens, n_stop_tokens * sizeof (uint32_t));
    self->n_stop_tokens = n_stop_tokens;
    return self;
}

//  Sequence `index` of the request in submit: it samples with the request's seed +
//  index.
static request_t *
s_request_new (const proto_msg_t *submit, zframe_t *reply_to, uint32_t index,
               uint64_t seq_id)
{
    request_t *self = s_sequence_new (submit->request_id, seq_id, index, reply_to,
                                      submit->tokens, submit->n_tokens, submit->n_tokens,
                                      submit->max_tokens, &submit->sampling,
                                      submit->stop_tokens, submit->n_stop_tokens);
    if (!self)
        return NULL;
    self->sampling.seed += index;
    self->submitted_at = zclock_usecs ();
    return self;
}

//  Frees the sequence, and the forks still waiting for it; it must hold no blocks
//  (s_release first).
static void
s_ranking_destroy (ranking_t **self_p)
{
    ranking_t *self = *self_p;
    if (!self)
        return;
    for (uint32_t i = 0; self->outputs && i < self->size; i++)
        free (self->outputs [i]);
    free (self->outputs);
    free (self->n_outputs);
    free (self->scores);
    free (self->finishes);
    free (self);
    *self_p = NULL;
}

static ranking_t *
s_ranking_new (uint32_t n, uint32_t size)
{
    ranking_t *self = (ranking_t *) calloc (1, sizeof (ranking_t));
    if (!self)
        return NULL;
    self->n = n;
    self->size = size;
    self->outputs = (uint32_t **) calloc (size, sizeof (uint32_t *));
    self->n_outputs = (uint32_t *) calloc (size, sizeof (uint32_t));
    self->scores = (double *) calloc (size, sizeof (double));
    self->finishes = (proto_finish_t *) calloc (size, sizeof (proto_finish_t));
    if (!self->outputs || !self->n_outputs || !self->scores || !self->finishes)
        s_ranking_destroy (&self);
    return self;
}

static void
s_beam_group_destroy (beam_group_t **self_p)
{
    beam_group_t *self = *self_p;
    if (!self)
        return;
    beam_search_destroy (&self->search);
    free (self->beams);
    free (self->children);
    free (self->views);
    free (self);
    *self_p = NULL;
}

static beam_group_t *
s_beam_group_new (const proto_msg_t *submit)
{
    beam_group_t *self = (beam_group_t *) calloc (1, sizeof (beam_group_t));
    if (!self)
        return NULL;
    uint32_t n = submit->n > 1? submit->n: 1;
    self->width = submit->best_of > n? submit->best_of: n;
    self->n = n;
    self->length_penalty = submit->length_penalty;
    self->early_stopping = submit->early_stopping;
    self->beams = (request_t **) calloc (self->width, sizeof (request_t *));
    self->children = (beam_child_t *) calloc (self->width, sizeof (beam_child_t));
    self->views = (beam_t *) calloc (self->width, sizeof (beam_t));
    if (!self->beams || !self->children || !self->views)
        s_beam_group_destroy (&self);
    return self;
}

//  Drop a beam's candidates (it reports again when it has computed its position again).
static void
s_beam_forget_candidates (request_t *self)
{
    if (self->reported && self->beams)
        self->beams->n_reported--;
    self->reported = false;
    free (self->candidate_tokens);
    free (self->candidate_logprobs);
    self->candidate_tokens = NULL;
    self->candidate_logprobs = NULL;
    self->n_candidates = 0;
}

static void
s_request_destroy (request_t **self_p)
{
    request_t *self = *self_p;
    if (!self)
        return;
    for (uint32_t i = 0; i < self->n_forks; i++)
        s_request_destroy (&self->forks [i]);
    free (self->forks);
    if (self->ranking && --self->ranking->n_live == 0)
        s_ranking_destroy (&self->ranking);
    s_beam_forget_candidates (self);
    if (self->beams && --self->beams->n_live == 0)
        s_beam_group_destroy (&self->beams);
    zframe_destroy (&self->reply_to);
    free (self->tokens);
    free (self->stop_tokens);
    free (self->table.blocks);
    proto_sampling_reset (&self->sampling);
    free (self);
    *self_p = NULL;
}

static int
s_request_append (request_t *self, uint32_t token)
{
    if (self->n_tokens == self->capacity) {
        uint32_t capacity = self->capacity * 2;
        uint32_t *tokens = (uint32_t *) realloc (self->tokens, capacity * sizeof (uint32_t));
        if (!tokens)
            return -1;
        self->tokens = tokens;
        self->capacity = capacity;
    }
    self->tokens [self->n_tokens++] = token;
    return 0;
}

//  A new beam of parent's group with parent's tokens and seq_id, not on a worker yet.
//  Returns NULL when out of memory.
static request_t *
s_beam_clone (const request_t *parent, uint64_t seq_id)
{
    request_t *self = s_sequence_new (parent->id, seq_id, 0, parent->reply_to,
                                      parent->tokens, parent->n_tokens, parent->n_prompt,
                                      parent->max_tokens, &parent->sampling,
                                      parent->stop_tokens, parent->n_stop_tokens);
    if (!self)
        return NULL;
    self->logprob = parent->logprob;
    self->submitted_at = parent->submitted_at;
    self->admitted_at = parent->admitted_at;
    self->beams = parent->beams;
    self->beams->n_live++;
    return self;
}

static bool
s_request_is_stop_token (const request_t *self, uint32_t token)
{
    for (uint32_t i = 0; i < self->n_stop_tokens; i++)
        if (self->stop_tokens [i] == token)
            return true;
    return false;
}


//  --- Messages to the tokenizer ----------------------------------------------------------

static void
s_send_to_tokenizer (scheduler_t *self, const proto_msg_t *msg, zframe_t *reply_to)
{
    if (proto_send_to (msg, self->inbox, reply_to) != 0)
        zlog (ZLOG_WARN, ACTOR, msg->request_id, "could not send %s to the tokenizer: %s",
              proto_kind_name (msg->kind), zmq_strerror (zmq_errno ()));
}

static void
s_send_error (scheduler_t *self, const request_t *request, uint32_t status,
              const char *message)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_ERROR;
    msg.request_id = request->id;
    msg.status = status;
    if (proto_msg_set_text (&msg, message) == 0)
        s_send_to_tokenizer (self, &msg, request->reply_to);
    proto_msg_reset (&msg);
    zlog (ZLOG_INFO, ACTOR, request->id, "failed with %u: %s", status, message);
}


//  --- Workers ----------------------------------------------------------------------------

static worker_t *
s_worker_new (zframe_t *routing_id, const proto_msg_t *hello, bool prefix_caching)
{
    worker_t *self = (worker_t *) calloc (1, sizeof (worker_t));
    if (!self)
        return NULL;
    self->routing_id = zframe_dup (routing_id);
    self->device = strdup (hello->text ? hello->text : "?");
    self->n_ctx = hello->n_ctx;
    self->blocks = block_manager_new (hello->n_blocks, hello->block_size, prefix_caching);
    self->running = zlistx_new ();
    self->by_id = proto_id_table_new (NULL);
    self->last_heard = zclock_mono ();
    if (!self->routing_id || !self->device || !self->blocks || !self->running
    ||  !self->by_id) {
        zframe_destroy (&self->routing_id);
        free (self->device);
        block_manager_destroy (&self->blocks);
        zlistx_destroy (&self->running);
        zhashx_destroy (&self->by_id);
        free (self);
        return NULL;
    }
    return self;
}

//  Frees the worker; its running requests must have been dealt with.
static void
s_worker_destroy (worker_t **self_p)
{
    worker_t *self = *self_p;
    if (!self)
        return;
    zframe_destroy (&self->routing_id);
    free (self->device);
    block_manager_destroy (&self->blocks);
    zlistx_destroy (&self->running);
    zhashx_destroy (&self->by_id);
    free (self->plan);
    free (self->frees);
    free (self);
    *self_p = NULL;
}

static worker_t *
s_find_worker (scheduler_t *self, zframe_t *routing_id)
{
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        if (zframe_eq (worker->routing_id, routing_id))
            return worker;
        worker = (worker_t *) zlistx_next (self->workers);
    }
    return NULL;
}

static int
s_compare_ids (const void *a, const void *b)
{
    uint64_t id_a = *(const uint64_t *) a, id_b = *(const uint64_t *) b;
    return id_a < id_b? -1: id_a > id_b? 1: 0;
}

//  Requests running (a request with n sequences counts once), for STATUS.
static uint32_t
s_running_count (scheduler_t *self)
{
    size_t n_sequences = 0;
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        n_sequences += zlistx_size (worker->running);
        worker = (worker_t *) zlistx_next (self->workers);
    }
    if (n_sequences == 0)
        return 0;
    uint64_t *ids = (uint64_t *) malloc (n_sequences * sizeof (uint64_t));
    if (!ids)
        return (uint32_t) n_sequences;      //  an upper bound will do
    size_t n_ids = 0;
    worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        request_t *request = (request_t *) zlistx_first (worker->running);
        while (request) {
            ids [n_ids++] = request->id;
            request = (request_t *) zlistx_next (worker->running);
        }
        worker = (worker_t *) zlistx_next (self->workers);
    }
    qsort (ids, n_ids, sizeof (uint64_t), s_compare_ids);
    uint32_t running = 0;
    for (size_t i = 0; i < n_ids; i++)
        if (i == 0 || ids [i] != ids [i - 1])
            running++;
    free (ids);
    return running;
}

//  Remember that the worker must forget a sequence (with its next step).
static int
s_worker_forget (worker_t *worker, uint64_t seq_id)
{
    if (worker->n_frees == worker->frees_capacity) {
        uint32_t capacity = worker->frees_capacity? 2 * worker->frees_capacity: 16;
        uint64_t *frees = (uint64_t *) realloc (worker->frees, capacity * sizeof (uint64_t));
        if (!frees)
            return -1;
        worker->frees = frees;
        worker->frees_capacity = capacity;
    }
    worker->frees [worker->n_frees++] = seq_id;
    return 0;
}

//  Take a running request off its worker: its blocks are freed and, when the worker
//  holds its sampling state, the worker is told to forget it.
static void
s_release (request_t *request)
{
    worker_t *worker = request->worker;
    if (!worker)
        return;
    block_manager_free (worker->blocks, &request->table);
    if (request->started)
        s_worker_forget (worker, request->seq_id);
    zhashx_delete (worker->by_id, &request->seq_id);
    void *handle = zlistx_find (worker->running, request);
    if (handle)
        zlistx_delete (worker->running, handle);
    request->worker = NULL;
    request->started = false;
    request->n_computed = 0;
}

//  Take every sequence of a request away (or, when one_index is set, only sequence
//  `index`), wherever it is: waiting, running on a worker (its blocks are freed). A
//  sequence whose forks have not started takes them along. Returns how many went.
static uint32_t
s_remove_sequences (scheduler_t *self, uint64_t request_id, bool one_index, uint32_t index)
{
    uint32_t removed = 0;
    request_t *request = (request_t *) zlistx_first (self->waiting);
    while (request) {
        if (request->id == request_id && (!one_index || request->index == index)
        &&  !(one_index && request->beams)) {
            zlistx_delete (self->waiting, zlistx_cursor (self->waiting));
            s_request_destroy (&request);
            removed++;
            request = (request_t *) zlistx_first (self->waiting);
        }
        else
            request = (request_t *) zlistx_next (self->waiting);
    }
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        request = (request_t *) zlistx_first (worker->running);
        while (request) {
            if (request->id == request_id && (!one_index || request->index == index)
            &&  !(one_index && request->beams)) {
                //  Its blocks are free at once: a step in flight may still write them,
                //  but they go to another sequence only in a later step, after this
                //  one. A token that step returns for it is dropped (its id is gone).
                s_release (request);
                s_request_destroy (&request);
                removed++;
                request = (request_t *) zlistx_first (worker->running);
            }
            else
                request = (request_t *) zlistx_next (worker->running);
        }
        worker = (worker_t *) zlistx_next (self->workers);
    }
    if (removed)
        self->status_changed = true;
    return removed;
}

static uint32_t
s_remove_request (scheduler_t *self, uint64_t request_id)
{
    return s_remove_sequences (self, request_id, false, 0);
}

//  One sequence failed: the whole request does (one ERROR), its other sequences go.
static void
s_fail_request (scheduler_t *self, request_t *request, uint32_t status, const char *message)
{
    s_send_error (self, request, status, message);
    s_remove_request (self, request->id);
}

static void
s_fail_waiting (scheduler_t *self, uint32_t status, const char *message)
{
    request_t *request;
    while ((request = (request_t *) zlistx_first (self->waiting)))
        s_fail_request (self, request, status, message);
}

//  The longest context of the workers we have (0: none).
static uint32_t
s_largest_ctx (scheduler_t *self)
{
    uint32_t largest_ctx = 0;
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        if (worker->n_ctx > largest_ctx)
            largest_ctx = worker->n_ctx;
        worker = (worker_t *) zlistx_next (self->workers);
    }
    return largest_ctx;
}

//  Fail the waiting requests that are longer than the context of every worker left
//  (they waited for one that is gone); otherwise they would block the queue forever.
static void
s_fail_waiting_too_long (scheduler_t *self)
{
    uint32_t largest_ctx = s_largest_ctx (self);
    request_t *request = (request_t *) zlistx_first (self->waiting);
    while (request) {
        if (request->n_tokens <= largest_ctx) {
            request = (request_t *) zlistx_next (self->waiting);
            continue;
        }
        char message [256];
        snprintf (message, sizeof message, "no worker left can hold this request's %u "
                  "tokens (the longest context is %u)", request->n_tokens, largest_ctx);
        s_fail_request (self, request, 503, message);
        request = (request_t *) zlistx_first (self->waiting);
    }
}

//  Forget a worker. Its running requests that have not produced a token yet go back to
//  the head of the queue, to run on another worker; the others fail with 503. When it
//  was the last worker, the waiting requests fail too.
static void
s_drop_worker (scheduler_t *self, worker_t *worker, const char *why)
{
    //  A worker that leaves (BYE) is routine; one that vanishes is worth a warning.
    zlog (streq (why, "left") ? ZLOG_INFO : ZLOG_WARN, ACTOR, 0, "worker %s dropped: %s",
          worker->device, why);
    char message [256];
    snprintf (message, sizeof message, "the worker running this request (%s) %s",
              worker->device, why);
    //  Newest first, so that requeued requests keep their order at the head.
    request_t *request;
    while ((request = (request_t *) zlistx_last (worker->running))) {
        if (request->n_tokens == request->n_prompt) {
            s_release (request);        //  takes it off the running list
            zlistx_add_start (self->waiting, request);
            zlog (ZLOG_INFO, ACTOR, request->id, "back in the queue: its worker %s %s",
                  worker->device, why);
        }
        else
            s_fail_request (self, request, 503, message);
    }
    void *handle = zlistx_find (self->workers, worker);
    if (handle)
        zlistx_delete (self->workers, handle);
    s_worker_destroy (&worker);
    if (zlistx_size (self->workers) == 0)
        s_fail_waiting (self, 503, "no worker is available to run this request");
    else
        s_fail_waiting_too_long (self);
    self->status_changed = true;
}

//  Send to a worker; a worker that cannot be reached is dropped. Returns 0 or -1.
static int
s_send_to_worker (scheduler_t *self, worker_t *worker, const proto_msg_t *msg)
{
    if (proto_send_to (msg, self->workers_router, worker->routing_id) == 0)
        return 0;
    char why [128];
    snprintf (why, sizeof why, "could not be reached (%s)", zmq_strerror (zmq_errno ()));
    s_drop_worker (self, worker, why);
    return -1;
}


//  --- Scheduling -------------------------------------------------------------------------

//  Why a request cannot run on any worker we have, or NULL when it can.
static const char *
s_check_fits (scheduler_t *self, const request_t *request, char *message, size_t size)
{
    uint32_t largest_ctx = s_largest_ctx (self);
    if (request->n_prompt == 0) {
        snprintf (message, size, "the prompt is empty (no tokens)");
        return message;
    }
    if (request->n_prompt > largest_ctx) {
        snprintf (message, size, "this model's maximum context length is %u tokens, "
                  "but the prompt has %u tokens", largest_ctx, request->n_prompt);
        return message;
    }
    return NULL;
}

//  A step being built for one worker: the sequences, the copies, and their sizes.
typedef struct {
    proto_step_seq_t *seqs;
    uint32_t n_seqs;
    uint32_t seqs_capacity;
    block_copy_t *copies;
    uint32_t n_copies;
    uint32_t copies_capacity;
    uint32_t budget;                //  tokens left in this step
} step_builder_t;

static void
s_builder_reset (step_builder_t *builder)
{
    free (builder->seqs);
    free (builder->copies);
    memset (builder, 0, sizeof *builder);
}

//  Room for one more sequence and for `copies` more copies. Returns 0 or -1.
static int
s_builder_reserve (step_builder_t *builder, uint32_t copies)
{
    if (builder->n_seqs == builder->seqs_capacity) {
        uint32_t capacity = builder->seqs_capacity? 2 * builder->seqs_capacity: 16;
        proto_step_seq_t *seqs = (proto_step_seq_t *) realloc (
            builder->seqs, capacity * sizeof (proto_step_seq_t));
        if (!seqs)
            return -1;
        builder->seqs = seqs;
        builder->seqs_capacity = capacity;
    }
    if (builder->n_copies + copies > builder->copies_capacity) {
        uint32_t capacity = builder->copies_capacity * 2 + copies + 16;
        block_copy_t *more = (block_copy_t *) realloc (builder->copies,
                                                       capacity * sizeof (block_copy_t));
        if (!more)
            return -1;
        builder->copies = more;
        builder->copies_capacity = capacity;
    }
    return 0;
}

//  Give the request the blocks for its next n tokens and add it to the step (the step
//  borrows the request's arrays). Returns 0, or -1 when the blocks are not free.
static int
s_plan_sequence (step_builder_t *builder, worker_t *worker, request_t *request,
                 uint32_t n)
{
    uint32_t first_write = request->n_computed;
    uint32_t end = request->n_computed + n;
    uint32_t needed = block_manager_blocks_needed (worker->blocks, &request->table,
                                                   first_write, end);
    if (s_builder_reserve (builder, needed) != 0
    ||  block_manager_grow (worker->blocks, &request->table, first_write, end,
                            builder->copies, &builder->n_copies) != 0)
        return -1;
    proto_step_seq_t *seq = &builder->seqs [builder->n_seqs++];
    memset (seq, 0, sizeof *seq);
    seq->seq_id = request->seq_id;
    seq->pos = request->n_computed;
    seq->tokens = request->tokens + request->n_computed;
    seq->n_tokens = n;
    seq->blocks = request->table.blocks;
    seq->n_blocks = request->table.n_blocks;
    seq->n_prompt = request->n_prompt;
    seq->sample = end == request->n_tokens;
    if (!request->started) {
        seq->first = true;
        seq->history = request->tokens;
        seq->n_history = request->n_computed;
        seq->sampling = request->sampling;
        if (request->sampling.min_tokens > 0) {
            seq->masked_tokens = request->stop_tokens;
            seq->n_masked = request->n_stop_tokens;
        }
    }
    builder->budget -= n;
    return 0;
}

//  Put a running request back at the head of the queue, its blocks freed (preemption
//  by recompute).
static void
s_preempt (scheduler_t *self, request_t *request)
{
    zlog (ZLOG_INFO, ACTOR, request->id, "preempted on %s (no free KV blocks): %u tokens "
          "to recompute later", request->worker->device, request->n_tokens);
    s_release (request);
    s_beam_forget_candidates (request);
    request->n_preempted++;
    self->preemptions++;
    zlistx_add_start (self->waiting, request);
    self->status_changed = true;
}

//  Running requests, oldest first: each gets its next token, or its next prefill chunk,
//  within the budget. When blocks run out, the newest running request that is not yet
//  in this step is preempted (possibly the one asking).
static void
s_plan_running (scheduler_t *self, worker_t *worker, step_builder_t *builder)
{
    request_t *request = (request_t *) zlistx_first (worker->running);
    while (request && builder->budget > 0) {
        uint32_t n = request->n_tokens - request->n_computed;
        if (n == 0) {
            //  A beam that reported: it waits for the other beams of its round.
            request = (request_t *) zlistx_next (worker->running);
            continue;
        }
        if (n > builder->budget)
            n = builder->budget;
        if (s_plan_sequence (builder, worker, request, n) == 0) {
            request = (request_t *) zlistx_next (worker->running);
            continue;
        }
        //  Out of blocks: preempt the newest. The cursor is on request; preempting
        //  another request moves it, so find request again.
        request_t *newest = (request_t *) zlistx_last (worker->running);
        s_preempt (self, newest);
        if (newest == request) {
            //  It was the newest itself: nothing after it to plan.
            break;
        }
        if (!zlistx_find (worker->running, request))
            break;
    }
}

//  Whether some beam of the group runs on worker.
static bool
s_beam_runs_on (const beam_group_t *group, const worker_t *worker)
{
    for (uint32_t i = 0; i < group->n_beams; i++)
        if (group->beams [i]->worker == worker)
            return true;
    return false;
}

//  Whether a beam of the group may run on worker: all beams of a request run on one
//  worker (they share blocks), one whose context holds the search's longest sequence.
static bool
s_beam_may_run_on (const beam_group_t *group, const worker_t *worker)
{
    for (uint32_t i = 0; i < group->n_beams; i++)
        if (group->beams [i]->worker && group->beams [i]->worker != worker)
            return false;
    return !group->search || worker->n_ctx + 1 >= beam_search_max_length (group->search);
}

//  How many leading tokens of the request the worker's prefix cache holds, as
//  s_admit_waiting would match them (the last token is always computed), without
//  matching them. *n_unheld (when not NULL): how many of those blocks no sequence holds.
static uint32_t
s_cached_on (const worker_t *worker, const request_t *request, uint32_t *n_unheld)
{
    return block_manager_cached_prefix (worker->blocks, request->tokens, request->n_tokens,
                                        request->n_tokens - 1, n_unheld);
}

//  The prompt tokens worker would not compute if it admitted the request now: its cached
//  prefix, or 0 when it could not admit the request now. It could when its context
//  holds the request, it runs fewer than max_num_seqs sequences, a beam may run there,
//  and the blocks for the rest of the prompt are free (matching takes the cached blocks
//  no sequence holds out of the free ones). The step's token budget is not counted: each
//  step has a new one.
static uint32_t
s_saved_on (scheduler_t *self, const worker_t *worker, const request_t *request)
{
    if (request->n_tokens > worker->n_ctx
    ||  zlistx_size (worker->running) >= self->max_num_seqs
    ||  (request->beams && !s_beam_may_run_on (request->beams, worker)))
        return 0;
    uint32_t n_unheld;
    uint32_t n_cached = s_cached_on (worker, request, &n_unheld);
    if (n_cached == 0)
        return 0;
    uint32_t block_size = block_manager_block_size (worker->blocks);
    uint32_t n_blocks = request->n_tokens / block_size
                      + (request->n_tokens % block_size != 0);
    uint32_t to_take = n_blocks - n_cached / block_size + n_unheld;
    return to_take <= block_manager_n_free (worker->blocks)? n_cached: 0;
}

//  The worker other than `worker` that would save the most prompt tokens by admitting
//  the request now (s_saved_on), the first of them on a tie; NULL when none would save
//  any. *n_saved: how many.
static worker_t *
s_best_cached_other (scheduler_t *self, const worker_t *worker, const request_t *request,
                     uint32_t *n_saved)
{
    worker_t *best = NULL;
    *n_saved = 0;
    worker_t *other = (worker_t *) zlistx_first (self->workers);
    while (other) {
        uint32_t saved = other != worker? s_saved_on (self, other, request): 0;
        if (saved > *n_saved) {
            best = other;
            *n_saved = saved;
        }
        other = (worker_t *) zlistx_next (self->workers);
    }
    return best;
}

//  Whether worker leaves the request at the head of the queue to a better worker: one
//  that could admit it now and caches at least one block (of its own) more of it than
//  worker does. That worker is building its step in this same round, or running one
//  and takes the head when it ends. Workers defer a request for PREFIX_WAIT_MS at most,
//  counted from the first time one did; after that, any worker that can admit it does.
static bool
s_defers_head (scheduler_t *self, worker_t *worker, request_t *request)
{
    uint32_t theirs;
    worker_t *better = s_best_cached_other (self, worker, request, &theirs);
    if (!better)
        return false;
    uint32_t mine = s_cached_on (worker, request, NULL);
    if (theirs < mine + block_manager_block_size (better->blocks))
        return false;
    int64_t now = zclock_mono ();
    if (request->deferred_since == 0) {
        request->deferred_since = now;
        zlog (ZLOG_DEBUG, ACTOR, request->id, "waits up to %d ms for %s, which caches %u "
              "of its %u tokens (%s caches %u)", PREFIX_WAIT_MS, better->device, theirs,
              request->n_tokens, worker->device, mine);
    }
    return now - request->deferred_since < PREFIX_WAIT_MS;
}

//  Whether the request can never run on worker while things stay as they are: its
//  tokens are beyond the worker's context, or its other beams run on another worker.
static bool
s_cannot_run_on (const worker_t *worker, const request_t *request)
{
    return request->n_tokens > worker->n_ctx
        || (request->beams && !s_beam_may_run_on (request->beams, worker));
}

//  The first waiting request that may run on worker (s_cannot_run_on), or NULL.
static request_t *
s_first_waiting_for (scheduler_t *self, const worker_t *worker)
{
    request_t *request = (request_t *) zlistx_first (self->waiting);
    while (request && s_cannot_run_on (worker, request))
        request = (request_t *) zlistx_next (self->waiting);
    return request;
}

//  Waiting requests, first come first served, while there is budget, a sequence to
//  spare and free blocks for the whole (remaining) prompt, unless the head is left to a
//  worker that caches more of it (s_defers_head). Requests that cannot run on this
//  worker at all (a longer context, beams elsewhere) wait for theirs without holding
//  this one back: its head is the first request it can run.
static void
s_admit_waiting (scheduler_t *self, worker_t *worker, step_builder_t *builder)
{
    request_t *request = (request_t *) zlistx_first (self->waiting);
    while (request && builder->budget > 0) {
        //  A beam whose round has begun here joins its beams even past the cap (as
        //  forks do): they cannot go on without it.
        bool joins_its_beams = request->beams && s_beam_runs_on (request->beams, worker);
        if (zlistx_size (worker->running) >= self->max_num_seqs && !joins_its_beams)
            break;
        if (s_cannot_run_on (worker, request)) {
            //  It waits for another worker; it does not hold this one back.
            request = (request_t *) zlistx_next (self->waiting);
            continue;
        }
        if (s_defers_head (self, worker, request))
            break;                  //  it waits for the worker that caches more of it
        //  The prompt's leading blocks may be cached: at least one token is computed,
        //  for the logits.
        request->n_computed = block_manager_match_prefix (
            worker->blocks, &request->table, request->tokens, request->n_tokens,
            request->n_tokens - 1);
        uint32_t remaining = request->n_tokens - request->n_computed;
        uint32_t needed = block_manager_blocks_needed (
            worker->blocks, &request->table, request->n_computed, request->n_tokens);
        uint32_t n = remaining < builder->budget? remaining: builder->budget;
        if (needed > block_manager_n_free (worker->blocks)) {
            block_manager_free (worker->blocks, &request->table);
            request->n_computed = 0;
            break;                  //  first come, first served: nobody overtakes it
        }
        request->worker = worker;
        if (s_plan_sequence (builder, worker, request, n) != 0) {
            block_manager_free (worker->blocks, &request->table);
            request->worker = NULL;
            request->n_computed = 0;
            break;
        }
        //  Counted once, when admitted (not each time the head waits for blocks).
        block_manager_count_prefix_query (worker->blocks, request->n_tokens,
                                          request->n_computed);
        if (request->admitted_at == 0)
            request->admitted_at = zclock_usecs ();
        request->deferred_since = 0;
        zlistx_delete (self->waiting, zlistx_cursor (self->waiting));
        zlistx_add_end (worker->running, request);
        zhashx_insert (worker->by_id, &request->seq_id, request);
        self->status_changed = true;
        zlog (ZLOG_DEBUG, ACTOR, request->id, "runs on %s: %u of %u prompt tokens cached",
              worker->device, request->n_computed, request->n_tokens);
        request = (request_t *) zlistx_first (self->waiting);
    }
}

//  Nothing could be planned on a worker that runs sequences: they are all beams that
//  wait for a beam of their round, which waits in the queue for blocks they hold.
//  Nothing else will free those blocks. When beams of other requests hold some, the
//  newest of those requests yields: its beams go to the end of the queue, to be
//  recomputed later. When the head's own beams hold them all, the pool cannot hold
//  that request's beams at once: it fails.
static void
s_unstick_beams (scheduler_t *self, worker_t *worker)
{
    request_t *head = s_first_waiting_for (self, worker);
    if (!head || !head->beams || !s_beam_runs_on (head->beams, worker))
        return;
    request_t *other = (request_t *) zlistx_last (worker->running);
    while (other && other->id == head->id)
        other = (request_t *) zlistx_prev (worker->running);
    if (!other) {
        char message [256];
        snprintf (message, sizeof message, "the KV cache of worker %s cannot hold the %u "
                  "beams of this request at once", worker->device, head->beams->n_beams);
        s_fail_request (self, head, 503, message);
        return;
    }
    uint64_t yielding = other->id;
    zlog (ZLOG_INFO, ACTOR, yielding, "its beams yield their KV blocks on %s to request "
          "%016" PRIx64 " and wait at the end of the queue", worker->device, head->id);
    request_t *request = (request_t *) zlistx_first (worker->running);
    while (request) {
        if (request->id != yielding) {
            request = (request_t *) zlistx_next (worker->running);
            continue;
        }
        s_release (request);
        s_beam_forget_candidates (request);
        request->n_preempted++;
        self->preemptions++;
        zlistx_add_end (self->waiting, request);
        request = (request_t *) zlistx_first (worker->running);
    }
    self->status_changed = true;
}

//  Build and send the next step of an idle worker. Returns -1 when sending dropped
//  the worker.
static int
s_step_worker (scheduler_t *self, worker_t *worker)
{
    step_builder_t builder = { 0 };
    builder.budget = self->max_num_batched_tokens;
    s_plan_running (self, worker, &builder);
    s_admit_waiting (self, worker, &builder);
    if (builder.n_seqs == 0 && zlistx_size (worker->running) > 0)
        s_unstick_beams (self, worker);
    if (builder.n_seqs == 0 && worker->n_frees == 0) {
        s_builder_reset (&builder);
        return 0;
    }
    //  Remember the plan, to apply the result.
    if (builder.n_seqs > worker->plan_capacity) {
        planned_seq_t *plan = (planned_seq_t *) realloc (
            worker->plan, builder.n_seqs * sizeof (planned_seq_t));
        if (!plan) {
            s_builder_reset (&builder);
            return 0;               //  tried again at the next turn
        }
        worker->plan = plan;
        worker->plan_capacity = builder.n_seqs;
    }
    for (uint32_t i = 0; i < builder.n_seqs; i++) {
        worker->plan [i].seq_id = builder.seqs [i].seq_id;
        worker->plan [i].n_tokens = builder.seqs [i].n_tokens;
        worker->plan [i].sample = builder.seqs [i].sample;
        request_t *request = (request_t *) zhashx_lookup (worker->by_id,
                                                          &builder.seqs [i].seq_id);
        if (request)
            request->started = true;
    }
    worker->n_plan = builder.n_seqs;

    proto_msg_t step = PROTO_MSG_INIT;
    step.kind = PROTO_STEP;
    step.step_id = ++self->next_step_id;
    step.seqs = builder.seqs;
    step.n_seqs = builder.n_seqs;
    //  block_copy_t is two uint32_t, {src, dst}: the array is the wire's pairs.
    step.copies = (uint32_t *) builder.copies;
    step.n_copies = builder.n_copies;
    step.frees = worker->frees;
    step.n_frees = worker->n_frees;
    //  Everything is borrowed: the step is not reset, only sent.
    int rc = s_send_to_worker (self, worker, &step);
    if (rc == 0) {
        worker->step_in_flight = step.step_id;
        worker->n_frees = 0;
    }
    s_builder_reset (&builder);
    return rc;
}

//  Give every idle worker its next step, the least loaded first, so that waiting
//  requests go where the fewest run, unless another worker caches more of the head of
//  the queue (s_defers_head).
static void
s_schedule (scheduler_t *self)
{
    size_t n_workers = zlistx_size (self->workers);
    if (n_workers == 0)
        return;
    worker_t *idle [n_workers];
    size_t n_idle = 0;
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        if (worker->step_in_flight == 0) {
            //  Insertion sort by running count: a handful of workers.
            size_t at = n_idle++;
            while (at > 0 && zlistx_size (idle [at - 1]->running)
                             > zlistx_size (worker->running)) {
                idle [at] = idle [at - 1];
                at--;
            }
            idle [at] = worker;
        }
        worker = (worker_t *) zlistx_next (self->workers);
    }
    for (size_t i = 0; i < n_idle; i++)
        //  A worker dropped while sending is gone from the list; the others are not.
        if (zlistx_find (self->workers, idle [i]))
            s_step_worker (self, idle [i]);
}


//  --- Handlers ---------------------------------------------------------------------------

//  Whether the request can be queued: a worker exists and its prompt fits. Otherwise
//  it gets its ERROR here, and the caller destroys it.
static bool
s_accept_request (scheduler_t *self, request_t *request)
{
    if (zlistx_size (self->workers) == 0) {
        s_send_error (self, request, 503, "no worker is available to run this request");
        return false;
    }
    char message [256];
    if (s_check_fits (self, request, message, sizeof message)) {
        s_send_error (self, request, 400, message);
        return false;
    }
    return true;
}

static void
s_send_out_of_memory (scheduler_t *self, uint64_t request_id, zframe_t *reply_to)
{
    proto_msg_t error = PROTO_MSG_INIT;
    error.kind = PROTO_ERROR;
    error.request_id = request_id;
    error.status = 500;
    error.text = (char *) "out of memory";
    s_send_to_tokenizer (self, &error, reply_to);
}

//  use_beam_search: one sequence, the first beam, that ranks the processed distribution
//  greedily (no temperature, top_k, top_p nor min_p) and asks for 2 x width candidates.
static void
s_submit_beam_search (scheduler_t *self, proto_msg_t *msg, zframe_t *reply_to)
{
    beam_group_t *group = s_beam_group_new (msg);
    request_t *request = group? s_request_new (msg, reply_to, 0, msg->request_id): NULL;
    if (!request) {
        s_beam_group_destroy (&group);
        s_send_out_of_memory (self, msg->request_id, reply_to);
        return;
    }
    request->beams = group;
    group->n_live = 1;
    group->beams [0] = request;
    group->n_beams = 1;
    request->sampling.temperature = 0;
    request->sampling.top_k = 0;
    request->sampling.top_p = 1;
    request->sampling.min_p = 0;
    request->sampling.n_logprobs = 0;
    request->sampling.beam_candidates = 2 * group->width;
    if (!s_accept_request (self, request)) {
        s_request_destroy (&request);
        return;
    }
    zlistx_add_end (self->waiting, request);
    self->status_changed = true;
    zlog (ZLOG_DEBUG, ACTOR, request->id, "queued: %u prompt tokens, max_tokens %u, beam "
          "search of width %u", request->n_prompt, request->max_tokens, group->width);
}

static void
s_handle_submit (scheduler_t *self, proto_msg_t *msg, zframe_t *reply_to)
{
    if (msg->request_id > PROTO_MAX_REQUEST_ID || msg->request_id == 0) {
        zlog (ZLOG_WARN, ACTOR, msg->request_id, "SUBMIT with an invalid request id; "
              "ignored");
        return;
    }
    //  Sequence 0 runs under the request's own id; the others under ids with the top bit
    //  set, which no request has.
    uint32_t n = msg->n > 1? msg->n: 1;
    uint32_t size = msg->best_of > n? msg->best_of: n;
    if (msg->use_beam_search) {
        s_submit_beam_search (self, msg, reply_to);
        return;
    }
    ranking_t *ranking = size > n? s_ranking_new (n, size): NULL;
    request_t *request = (size == n || ranking)
                       ? s_request_new (msg, reply_to, 0, msg->request_id): NULL;
    if (request && ranking) {
        request->ranking = ranking;
        ranking->n_live = 1;
    }
    else
        s_ranking_destroy (&ranking);
    n = size;
    if (request && n > 1) {
        request->forks = (request_t **) calloc (n - 1, sizeof (request_t *));
        for (uint32_t i = 1; request->forks && i < n; i++) {
            uint64_t fork_id = (PROTO_MAX_REQUEST_ID + 1) | self->next_fork_id++;
            request->forks [i - 1] = s_request_new (msg, reply_to, i, fork_id);
            if (!request->forks [i - 1])
                break;
            if (request->ranking) {
                request->forks [i - 1]->ranking = request->ranking;
                request->ranking->n_live++;
            }
            request->n_forks = i;
        }
        if (request->n_forks != n - 1)
            s_request_destroy (&request);
    }
    if (!request) {
        s_send_out_of_memory (self, msg->request_id, reply_to);
        return;
    }
    if (!s_accept_request (self, request)) {
        s_request_destroy (&request);
        return;
    }
    zlistx_add_end (self->waiting, request);
    self->status_changed = true;
    zlog (ZLOG_DEBUG, ACTOR, request->id, "queued: %u prompt tokens, max_tokens %u, %u "
          "sequence%s", request->n_prompt, request->max_tokens, n, n > 1? "s": "");
}

static void
s_handle_cancel (scheduler_t *self, const proto_msg_t *cancel)
{
    if (s_remove_sequences (self, cancel->request_id, cancel->only_index, cancel->index)) {
        if (cancel->only_index)
            zlog (ZLOG_INFO, ACTOR, cancel->request_id, "sequence %u cancelled",
                  cancel->index);
        else
            zlog (ZLOG_INFO, ACTOR, cancel->request_id, "cancelled");
    }
}

//  The prompt of sequence 0 is computed: its forks start from its blocks (shared, copied
//  when written), each computing the prompt's last token again for its own logits.
//  Returns 0, or -1 when out of memory.
static int
s_start_forks (scheduler_t *self, worker_t *worker, request_t *parent)
{
    for (uint32_t i = 0; i < parent->n_forks; i++) {
        request_t *fork = parent->forks [i];
        if (block_manager_fork (worker->blocks, &parent->table, &fork->table) != 0)
            return -1;
        fork->n_computed = fork->n_prompt - 1;
        fork->worker = worker;
        fork->admitted_at = parent->admitted_at;
        parent->forks [i] = NULL;
        zlistx_add_end (worker->running, fork);
        zhashx_insert (worker->by_id, &fork->seq_id, fork);
    }
    free (parent->forks);
    parent->forks = NULL;
    parent->n_forks = 0;
    self->status_changed = true;
    return 0;
}

//  Microseconds the request waited in the queue before its first step (0 before it).
static uint64_t
s_queue_time (const request_t *request)
{
    if (request->admitted_at <= request->submitted_at)
        return 0;
    return (uint64_t) (request->admitted_at - request->submitted_at);
}

//  The request's queue time, for its first TOKENS (index 0's first); 0 afterwards.
static uint64_t
s_queue_us (request_t *request)
{
    if (request->sent_tokens || request->index != 0)
        return 0;
    request->sent_tokens = true;
    return s_queue_time (request);
}

//  best_of > n: a sequence finished. Keep what it generated; when all have, send the n
//  with the highest cumulative log-probability, best first, as indexes 0 .. n-1 (each
//  whole, in one TOKENS). Returns 0, or -1 when out of memory.
static int
s_rank_finished (scheduler_t *self, request_t *request, proto_finish_t finish)
{
    ranking_t *ranking = request->ranking;
    uint32_t slot = ranking->n_finished;
    uint32_t n_generated = request->n_tokens - request->n_prompt;
    ranking->outputs [slot] = (uint32_t *) malloc ((n_generated + 1) * sizeof (uint32_t));
    if (!ranking->outputs [slot])
        return -1;
    memcpy (ranking->outputs [slot], request->tokens + request->n_prompt,
            n_generated * sizeof (uint32_t));
    ranking->n_outputs [slot] = n_generated;
    ranking->scores [slot] = request->logprob;
    ranking->finishes [slot] = finish;
    ranking->n_finished++;
    if (ranking->n_finished < ranking->size)
        return 0;
    //  Choose the n best by selection: n and size are small (at most PROTO_MAX_N).
    bool *taken = (bool *) calloc (ranking->size, sizeof (bool));
    if (!taken)
        return -1;
    for (uint32_t rank = 0; rank < ranking->n; rank++) {
        uint32_t best = ranking->size;
        for (uint32_t i = 0; i < ranking->size; i++)
            if (!taken [i] && (best == ranking->size
                               || ranking->scores [i] > ranking->scores [best]))
                best = i;
        taken [best] = true;
        proto_msg_t tokens = PROTO_MSG_INIT;
        tokens.kind = PROTO_TOKENS;
        tokens.request_id = request->id;
        tokens.index = rank;
        tokens.tokens = ranking->outputs [best];
        tokens.n_tokens = ranking->n_outputs [best];
        tokens.finish = ranking->finishes [best];
        tokens.prompt_tokens = request->n_prompt;
        tokens.queue_us = rank == 0? s_queue_time (request): 0;
        s_send_to_tokenizer (self, &tokens, request->reply_to);
    }
    free (taken);
    zlog (ZLOG_INFO, ACTOR, request->id, "the best %u of %u sequences sent", ranking->n,
          ranking->size);
    return 0;
}

//  --- Beam search ---
//
//  A beam that computed its position reports its candidates (the worker's top tokens
//  of the processed distribution) and waits; when every beam of the round has, the
//  search decides: each chosen child continues its parent's sequence, the first child
//  of a parent in the parent itself, the others in forks of it (sharing its blocks
//  copy-on-write); parents without a child are freed. When the search is over, the n
//  best hypotheses go to the tokenizer, best first, each whole.

//  The search is over: send the results, then take every beam away.
static void
s_beam_finish (scheduler_t *self, request_t *request)
{
    beam_group_t *group = request->beams;
    uint64_t request_id = request->id;
    zframe_t *reply_to = zframe_dup (request->reply_to);
    uint64_t queue_us = s_queue_time (request);
    uint32_t n_results = beam_search_n_results (group->search);
    if (n_results < group->n)
        zlog (ZLOG_WARN, ACTOR, request_id, "beam search found only %u hypotheses of the "
              "%u asked for; the others come back empty", n_results, group->n);
    for (uint32_t rank = 0; rank < group->n; rank++) {
        const beam_hypothesis_t *hypothesis = beam_search_result (group->search, rank);
        proto_msg_t tokens = PROTO_MSG_INIT;
        tokens.kind = PROTO_TOKENS;
        tokens.request_id = request_id;
        tokens.index = rank;
        tokens.tokens = hypothesis? hypothesis->tokens: NULL;
        tokens.n_tokens = hypothesis? hypothesis->n_tokens: 0;
        tokens.finish = hypothesis? hypothesis->finish: PROTO_FINISH_LENGTH;
        tokens.prompt_tokens = request->n_prompt;
        tokens.queue_us = rank == 0? queue_us: 0;
        s_send_to_tokenizer (self, &tokens, reply_to);     //  borrowed: not reset
    }
    zlog (ZLOG_INFO, ACTOR, request_id, "beam search of width %u finished: %u prompt "
          "tokens, the best %u hypotheses sent", group->width, request->n_prompt, group->n);
    zframe_destroy (&reply_to);
    s_remove_request (self, request_id);
}

//  Every beam of the round reported: choose the next beams. Returns 0, or -1 when out
//  of memory (the caller fails the request).
static int
s_beam_advance (scheduler_t *self, worker_t *worker, beam_group_t *group)
{
    request_t *first = group->beams [0];
    if (!group->search) {
        uint32_t max_length = worker->n_ctx;
        if (first->max_tokens && first->n_prompt + first->max_tokens < max_length)
            max_length = first->n_prompt + first->max_tokens;
        if (max_length <= first->n_prompt)
            max_length = first->n_prompt + 1;
        beam_search_params_t params = {
            .width = group->width, .n = group->n, .length_penalty = group->length_penalty,
            .early_stopping = group->early_stopping, .n_prompt = first->n_prompt,
            .max_length = max_length, .stop_tokens = first->stop_tokens,
            .n_stop_tokens = first->n_stop_tokens
        };
        group->search = beam_search_new (&params);
        if (!group->search)
            return -1;
    }
    for (uint32_t i = 0; i < group->n_beams; i++) {
        request_t *beam = group->beams [i];
        group->views [i] = (beam_t) {
            .tokens = beam->tokens + beam->n_prompt,
            .n_tokens = beam->n_tokens - beam->n_prompt,
            .cumulative = beam->logprob,
            .candidate_tokens = beam->candidate_tokens,
            .candidate_logprobs = beam->candidate_logprobs,
            .n_candidates = beam->n_candidates
        };
    }
    uint32_t n_children = 0;
    bool done = false;
    if (beam_search_step (group->search, group->views, group->n_beams, group->children,
                          &n_children, &done) != 0)
        return -1;
    if (done) {
        s_beam_finish (self, first);
        return 0;
    }
    //  The children: forks first (from each parent's sequence as it is), then each
    //  used parent takes its own first child's token.
    request_t *next [group->width];
    uint32_t first_child_of [group->n_beams];
    for (uint32_t i = 0; i < group->n_beams; i++)
        first_child_of [i] = UINT32_MAX;
    for (uint32_t c = 0; c < n_children; c++) {
        uint32_t parent_index = group->children [c].parent;
        request_t *parent = group->beams [parent_index];
        if (first_child_of [parent_index] == UINT32_MAX) {
            first_child_of [parent_index] = c;
            next [c] = parent;
            continue;
        }
        uint64_t fork_id = (PROTO_MAX_REQUEST_ID + 1) | self->next_fork_id++;
        request_t *fork = s_beam_clone (parent, fork_id);
        if (!fork)
            return -1;
        if (block_manager_fork (worker->blocks, &parent->table, &fork->table) != 0
        ||  s_request_append (fork, group->children [c].token) != 0) {
            s_request_destroy (&fork);
            return -1;
        }
        fork->logprob = group->children [c].cumulative;
        fork->n_computed = parent->n_computed;
        fork->worker = worker;
        zlistx_add_end (worker->running, fork);
        zhashx_insert (worker->by_id, &fork->seq_id, fork);
        next [c] = fork;
    }
    for (uint32_t i = 0; i < group->n_beams; i++) {
        request_t *parent = group->beams [i];
        s_beam_forget_candidates (parent);
        if (first_child_of [i] == UINT32_MAX) {
            s_release (parent);
            s_request_destroy (&parent);
            continue;
        }
        const beam_child_t *child = &group->children [first_child_of [i]];
        if (s_request_append (parent, child->token) != 0)
            return -1;
        parent->logprob = child->cumulative;
    }
    memcpy (group->beams, next, n_children * sizeof (request_t *));
    group->n_beams = n_children;
    group->n_reported = 0;
    self->status_changed = true;
    return 0;
}

//  A beam computed its position: keep its candidates; the last of the round advances
//  the search.
static void
s_beam_report (scheduler_t *self, worker_t *worker, request_t *request,
               const proto_step_out_t *out)
{
    beam_group_t *group = request->beams;
    s_beam_forget_candidates (request);
    if (out->n_top > 0) {
        request->candidate_tokens = (uint32_t *) malloc (out->n_top * sizeof (uint32_t));
        request->candidate_logprobs = (float *) malloc (out->n_top * sizeof (float));
        if (!request->candidate_tokens || !request->candidate_logprobs) {
            s_fail_request (self, request, 500, "out of memory");
            return;
        }
        memcpy (request->candidate_tokens, out->top_tokens, out->n_top * sizeof (uint32_t));
        memcpy (request->candidate_logprobs, out->top_logprobs, out->n_top * sizeof (float));
        request->n_candidates = out->n_top;
    }
    request->reported = true;
    group->n_reported++;
    if (group->n_reported < group->n_beams)
        return;
    //  Advancing may free this beam: fail the request by its id.
    uint64_t request_id = request->id;
    zframe_t *reply_to = zframe_dup (request->reply_to);
    if (s_beam_advance (self, worker, group) != 0) {
        s_send_out_of_memory (self, request_id, reply_to);
        s_remove_request (self, request_id);
    }
    zframe_destroy (&reply_to);
}

static void
s_handle_token (scheduler_t *self, worker_t *worker, request_t *request,
                const proto_step_out_t *out)
{
    if (request->beams) {
        s_beam_report (self, worker, request, out);
        return;
    }
    uint32_t token = out->token;
    float logprob = out->logprob;
    if ((request->n_forks > 0 && s_start_forks (self, worker, request) != 0)
    ||  s_request_append (request, token) != 0) {
        s_fail_request (self, request, 500, "out of memory");
        return;
    }
    request->logprob += logprob;
    uint32_t generated = request->n_tokens - request->n_prompt;
    proto_finish_t finish = PROTO_FINISH_NONE;
    if (s_request_is_stop_token (request, token))
        finish = PROTO_FINISH_STOP;
    else
    if ((request->max_tokens && generated >= request->max_tokens)
    ||  request->n_tokens >= worker->n_ctx)
        finish = PROTO_FINISH_LENGTH;

    if (request->ranking) {
        //  Nothing goes out until the sequences are ranked.
        if (finish != PROTO_FINISH_NONE && s_rank_finished (self, request, finish) != 0) {
            s_fail_request (self, request, 500, "out of memory");
            return;
        }
    }
    else {
        proto_msg_t tokens = PROTO_MSG_INIT;
        tokens.kind = PROTO_TOKENS;
        tokens.request_id = request->id;
        tokens.index = request->index;
        tokens.tokens = &request->tokens [request->n_tokens - 1];
        tokens.n_tokens = 1;
        tokens.finish = finish;
        tokens.prompt_tokens = request->n_prompt;
        tokens.logprob = logprob;
        tokens.top_tokens = out->top_tokens;        //  borrowed: tokens is not reset
        tokens.top_logprobs = out->top_logprobs;
        tokens.n_top = out->n_top;
        tokens.queue_us = s_queue_us (request);
        s_send_to_tokenizer (self, &tokens, request->reply_to);
    }
    if (finish != PROTO_FINISH_NONE) {
        zlog (ZLOG_INFO, ACTOR, request->id, "finished (%s): %u prompt + %u generated "
              "tokens%s", proto_finish_name (finish), request->n_prompt, generated,
              request->n_preempted? " (preempted before)": "");
        s_release (request);
        s_request_destroy (&request);
        self->status_changed = true;
    }
}

static void
s_handle_step_result (scheduler_t *self, worker_t *worker, proto_msg_t *msg)
{
    if (msg->step_id != worker->step_in_flight) {
        zlog (ZLOG_WARN, ACTOR, 0, "worker %s: result for step %" PRIu64
              " which is not in flight; ignored", worker->device, msg->step_id);
        return;
    }
    worker->step_in_flight = 0;
    //  One output per sampling sequence, in the plan's order; anything else is a
    //  broken result, and fails the step like an error.
    bool outs_match = true;
    uint32_t n_sampled = 0;
    for (uint32_t i = 0; i < worker->n_plan && outs_match; i++)
        if (worker->plan [i].sample) {
            outs_match = n_sampled < msg->n_outs
                      && msg->outs [n_sampled].seq_id == worker->plan [i].seq_id;
            n_sampled++;
        }
    outs_match = outs_match && n_sampled == msg->n_outs;
    if ((msg->text && msg->text [0]) || !outs_match) {
        //  The whole step failed: its requests cannot go on.
        char message [512];
        snprintf (message, sizeof message, "the worker failed: %s",
                  msg->text && msg->text [0]? msg->text
                                            : "its outputs do not match its step");
        for (uint32_t i = 0; i < worker->n_plan; i++) {
            request_t *request = (request_t *) zhashx_lookup (worker->by_id,
                                                              &worker->plan [i].seq_id);
            if (request)
                s_fail_request (self, request, 500, message);
        }
        worker->n_plan = 0;
        self->status_changed = true;
        return;
    }
    //  First what was computed (blocks may now be shared as cached prefixes), then
    //  the sampled tokens, in the order of the plan.
    for (uint32_t i = 0; i < worker->n_plan; i++) {
        request_t *request = (request_t *) zhashx_lookup (worker->by_id,
                                                          &worker->plan [i].seq_id);
        if (!request)
            continue;               //  cancelled while the step ran
        request->n_computed += worker->plan [i].n_tokens;
        block_manager_commit (worker->blocks, &request->table, request->tokens,
                              request->n_computed);
    }
    uint32_t out = 0;
    for (uint32_t i = 0; i < worker->n_plan; i++) {
        if (!worker->plan [i].sample)
            continue;
        if (out >= msg->n_outs || msg->outs [out].seq_id != worker->plan [i].seq_id) {
            zlog (ZLOG_WARN, ACTOR, 0, "worker %s: step %" PRIu64 " returned outputs that "
                  "do not match its sequences", worker->device, msg->step_id);
            break;
        }
        request_t *request = (request_t *) zhashx_lookup (worker->by_id,
                                                          &worker->plan [i].seq_id);
        if (request)
            s_handle_token (self, worker, request, &msg->outs [out]);
        out++;
    }
    worker->n_plan = 0;
}

static void
s_handle_hello (scheduler_t *self, zframe_t *routing_id, proto_msg_t *msg)
{
    char reason [256] = "";
    if (msg->version != PROTO_VERSION)
        snprintf (reason, sizeof reason, "protocol version %u, this scheduler speaks %u",
                  msg->version, PROTO_VERSION);
    else
    if (self->args->model_fingerprint && msg->fingerprint != self->args->model_fingerprint)
        snprintf (reason, sizeof reason, "the worker serves another model (fingerprint "
                  "%016" PRIx64 ", expected %016" PRIx64 ")",
                  msg->fingerprint, self->args->model_fingerprint);
    else
    if (msg->n_blocks == 0 || msg->block_size == 0 || msg->n_ctx == 0
    ||  (uint64_t) msg->n_blocks * msg->block_size < msg->n_ctx)
        snprintf (reason, sizeof reason, "%u KV blocks of %u tokens cannot hold a "
                  "sequence of %u tokens", msg->n_blocks, msg->block_size, msg->n_ctx);

    proto_msg_t reply = PROTO_MSG_INIT;
    if (reason [0]) {
        zlog (ZLOG_WARN, ACTOR, 0, "worker %s refused: %s", msg->text, reason);
        reply.kind = PROTO_REJECT;
        proto_msg_set_text (&reply, reason);
        proto_send_to (&reply, self->workers_router, routing_id);
        proto_msg_reset (&reply);
        return;
    }
    //  A worker that says HELLO again has restarted: what it ran is lost. The new
    //  one is listed before the old one is dropped, so that the requests the old one
    //  had not started go back to the queue for it instead of failing for want of a
    //  worker.
    worker_t *old = s_find_worker (self, routing_id);
    worker_t *worker = s_worker_new (routing_id, msg, !self->args->no_prefix_caching);
    if (worker)
        zlistx_add_end (self->workers, worker);
    if (old)
        s_drop_worker (self, old, "restarted");
    if (!worker)
        return;
    self->status_changed = true;
    reply.kind = PROTO_WELCOME;
    if (s_send_to_worker (self, worker, &reply) == 0)
        zlog (ZLOG_INFO, ACTOR, 0, "worker %s joined: KV cache %u blocks = %" PRIu64
              " tokens, context %u", worker->device, msg->n_blocks,
              (uint64_t) msg->n_blocks * msg->block_size, worker->n_ctx);
}

static void
s_read_inbox (scheduler_t *self)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    zframe_t *routing_id = NULL;
    char err [256];
    if (proto_recv (self->inbox, &msg, &routing_id, err, sizeof err) != 0) {
        zlog (ZLOG_WARN, ACTOR, 0, "bad message from the tokenizer side: %s", err);
        zframe_destroy (&routing_id);
        return;
    }
    if (msg.kind == PROTO_SUBMIT)
        s_handle_submit (self, &msg, routing_id);
    else
    if (msg.kind == PROTO_CANCEL)
        s_handle_cancel (self, &msg);
    else
        zlog (ZLOG_WARN, ACTOR, msg.request_id, "unexpected %s from the tokenizer side",
              proto_kind_name (msg.kind));
    proto_msg_reset (&msg);
    zframe_destroy (&routing_id);
}

static void
s_read_workers (scheduler_t *self)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    zframe_t *routing_id = NULL;
    char err [256];
    if (proto_recv (self->workers_router, &msg, &routing_id, err, sizeof err) != 0) {
        zlog (ZLOG_WARN, ACTOR, 0, "bad message on the worker socket: %s", err);
        zframe_destroy (&routing_id);
        return;
    }
    worker_t *worker = s_find_worker (self, routing_id);
    if (worker)
        worker->last_heard = zclock_mono ();

    if (msg.kind == PROTO_HELLO)
        s_handle_hello (self, routing_id, &msg);
    else
    if (!worker)
        zlog (ZLOG_WARN, ACTOR, 0, "%s from a peer that has not said HELLO; ignored",
              proto_kind_name (msg.kind));
    else
    if (msg.kind == PROTO_STEP_RESULT)
        s_handle_step_result (self, worker, &msg);
    else
    if (msg.kind == PROTO_BYE)
        s_drop_worker (self, worker, "left");
    else
    if (msg.kind != PROTO_HEARTBEAT)
        zlog (ZLOG_WARN, ACTOR, 0, "unexpected %s from worker %s",
              proto_kind_name (msg.kind), worker->device);
    proto_msg_reset (&msg);
    zframe_destroy (&routing_id);
}

static void
s_read_pipe (scheduler_t *self)
{
    char *command = zstr_recv (self->pipe);
    if (!command || streq (command, "$TERM"))
        self->terminated = self->asked_to_stop = true;
    else
        zlog (ZLOG_WARN, ACTOR, 0, "unknown command on the pipe: %s", command);
    zstr_free (&command);
}

static void
s_publish_status (scheduler_t *self)
{
    proto_msg_t status = PROTO_MSG_INIT;
    status.kind = PROTO_STATUS;
    status.workers = (uint32_t) zlistx_size (self->workers);
    status.running = s_running_count (self);
    status.waiting = (uint32_t) zlistx_size (self->waiting);
    status.preemptions = self->preemptions;
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        uint64_t queries, hits;
        block_manager_prefix_stats (worker->blocks, &queries, &hits);
        status.prefix_queries += queries;
        status.prefix_hits += hits;
        status.kv_blocks_used += block_manager_n_used (worker->blocks);
        status.kv_blocks_total += block_manager_n_blocks (worker->blocks);
        worker = (worker_t *) zlistx_next (self->workers);
    }
    proto_send (&status, self->status_pub);
}

//  Heartbeats out, silent workers dropped, STATUS published.
static void
s_on_clock (scheduler_t *self)
{
    int64_t now = zclock_mono ();
    if (now >= self->next_heartbeat) {
        self->next_heartbeat = now + self->heartbeat_ms;
        proto_msg_t heartbeat = PROTO_MSG_INIT;
        heartbeat.kind = PROTO_HEARTBEAT;
        worker_t *worker = (worker_t *) zlistx_first (self->workers);
        while (worker) {
            worker_t *next = (worker_t *) zlistx_next (self->workers);
            if (now - worker->last_heard > (int64_t) self->worker_timeout_ms)
                s_drop_worker (self, worker, "stopped responding");
            else
                s_send_to_worker (self, worker, &heartbeat);
            if (!next || !zlistx_find (self->workers, next))
                break;
            worker = next;
        }
    }
    if (self->status_changed || now >= self->next_status) {
        self->next_status = now + STATUS_INTERVAL_MS;
        self->status_changed = false;
        s_publish_status (self);
    }
}


//  --- The actor --------------------------------------------------------------------------

static int
s_start (scheduler_t *self)
{
    scheduler_args_t *args = self->args;
    self->heartbeat_ms = args->heartbeat_ms ? args->heartbeat_ms : 1000;
    self->worker_timeout_ms = args->worker_timeout_ms ? args->worker_timeout_ms : 5000;
    self->max_num_seqs = args->max_num_seqs? args->max_num_seqs: DEFAULT_MAX_NUM_SEQS;
    self->max_num_batched_tokens = args->max_num_batched_tokens
                                 ? args->max_num_batched_tokens
                                 : DEFAULT_MAX_NUM_BATCHED_TOKENS;
    self->waiting = zlistx_new ();
    self->workers = zlistx_new ();
    self->inbox = proto_router_new (args->inbox_endpoint, args->error, sizeof args->error);
    if (!self->inbox)
        return -1;
    self->workers_router = proto_router_new (args->worker_endpoint, args->error,
                                          sizeof args->error);
    if (!self->workers_router)
        return -1;
    if (args->worker_listen && zsock_bind (self->workers_router, "%s",
                                           args->worker_listen) == -1) {
        snprintf (args->error, sizeof args->error, "could not listen for workers on %s: %s",
                  args->worker_listen, zmq_strerror (zmq_errno ()));
        return -1;
    }
    self->status_pub = zsock_new (ZMQ_PUB);
    if (!self->status_pub || zsock_bind (self->status_pub, "%s", args->status_endpoint) == -1) {
        snprintf (args->error, sizeof args->error, "could not bind %s",
                  args->status_endpoint);
        return -1;
    }
    self->poller = zpoller_new (self->pipe, self->inbox, self->workers_router, NULL);
    return self->poller ? 0 : -1;
}

static void
s_stop (scheduler_t *self)
{
    request_t *request = (request_t *) zlistx_first (self->waiting);
    while (request) {
        s_request_destroy (&request);
        request = (request_t *) zlistx_next (self->waiting);
    }
    zlistx_destroy (&self->waiting);
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        request = (request_t *) zlistx_first (worker->running);
        while (request) {
            s_request_destroy (&request);
            request = (request_t *) zlistx_next (worker->running);
        }
        s_worker_destroy (&worker);
        worker = (worker_t *) zlistx_next (self->workers);
    }
    zlistx_destroy (&self->workers);
    zpoller_destroy (&self->poller);
    zsock_destroy (&self->status_pub);
    zsock_destroy (&self->workers_router);
    zsock_destroy (&self->inbox);
}

void
scheduler_actor (zsock_t *pipe, void *args)
{
    scheduler_t self = { 0 };
    self.args = (scheduler_args_t *) args;
    self.pipe = pipe;
    self.args->error [0] = 0;
    if (s_start (&self) != 0) {
        if (!self.args->error [0])
            snprintf (self.args->error, sizeof self.args->error, "could not start");
        s_stop (&self);
        zsock_signal (pipe, 0);
        return;
    }
    zsock_signal (pipe, 0);
    zlog (ZLOG_INFO, ACTOR, 0, "ready%s%s; up to %u sequences and %u tokens a step per "
          "worker, prefix caching %s", self.args->worker_listen ? "; workers may connect "
          "to " : "", self.args->worker_listen ? self.args->worker_listen : "",
          self.max_num_seqs, self.max_num_batched_tokens,
          self.args->no_prefix_caching? "off": "on");

    while (!self.terminated) {
        void *which = zpoller_wait (self.poller, 100);
        //  Interrupted (a signal with CZMQ's handler in place, in a test): stop.
        if (!which && zpoller_terminated (self.poller))
            break;
        if (which == self.pipe)
            s_read_pipe (&self);
        else
        if (which == self.inbox)
            s_read_inbox (&self);
        else
        if (which == self.workers_router)
            s_read_workers (&self);
        if (!self.terminated) {
            s_schedule (&self);
            s_on_clock (&self);
        }
    }
    s_stop (&self);
    if (!self.asked_to_stop)
        zstr_send (pipe, "STOPPED");
}
