/*  test_scheduler — the scheduler actor against a fake tokenizer and fake workers.

    The test holds the other ends of every socket: a DEALER as the tokenizer, DEALERs as
    workers, a SUB on the status. Every receive has a timeout, so a wrong scheduler fails
    instead of hanging.

    The fake workers are deterministic: the token a worker samples for sequence s, to
    be placed at position p, is s_token_at (s, p). So the whole output of a request is
    known in advance, whatever steps, chunks, preemptions or workers it went through.

    Every STEP a fake worker receives is checked against the rules that hold in every
    test (s_worker_check_step), like a strict worker would:
      - at most max_num_batched_tokens new tokens and max_num_seqs sequences, and never
        more than max_num_seqs sequences held by the worker;
      - frees name sequences the worker holds; `first` exactly when the worker does not
        hold the sequence (its first step, or its first after being freed), with the
        request's sampling and, when min_tokens > 0, its stop tokens as masked_tokens;
        later steps carry no sampling; a later step continues where the last one ended;
      - the tokens are the request's: its prompt, then what the workers sampled for it,
        at their positions; `sample` exactly on the step that computes the last known
        token (so no token is sampled twice or skipped);
      - the block table covers pos + n_tokens positions with exactly the blocks needed,
        keeps the blocks it had (unless the step copies one), and no block a step
        writes is held by another sequence of the worker;
      - a sequence freed before it finished (preempted) is the newest the worker holds,
        after those preempted with it.
    Each step is also recorded in fixture->steps, for the checks of single tests.

    A test either drives a worker by hand (s_worker_recv_step, s_worker_answer) or lets
    s_run answer every step of the "automatic" workers until a condition holds.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "protocol.h"
#include "scheduler.h"

#define FINGERPRINT 0x1234abcdULL
#define RECV_TIMEOUT_MS 2000        //  one message
#define RUN_TIMEOUT_MS 5000         //  one s_run
#define STOP_TOKEN 99
#define STOP_TOKEN_2 98
#define DEFAULT_BUDGET 512          //  the scheduler's defaults (scheduler.h)
#define DEFAULT_MAX_SEQS 64
#define PREFIX_WAIT_MS 200          //  scheduler.c's: the head's wait for a better worker

#define MAX_REQUESTS 16
#define MAX_PROMPT 64
#define MAX_GENERATED 64
#define MAX_WORKERS 3
#define MAX_LIVE 16
#define MAX_TABLE 64
#define MAX_STEPS 1024
#define MAX_STEP_SEQS 16
#define MAX_STEP_FREES 16


//  --- What the test knows ----------------------------------------------------------------

//  A request as the test submitted it, what the fake workers sampled for it, and what
//  the tokenizer side received.
typedef struct {
    uint64_t id;
    uint32_t prompt [MAX_PROMPT];
    uint32_t n_prompt;
    uint32_t max_tokens;
    proto_sampling_t sampling;
    uint32_t stop_tokens [2];
    uint32_t n_stop_tokens;
    bool cancelled;
    uint32_t generated [MAX_GENERATED];
    uint32_t n_generated;
    uint32_t received [MAX_GENERATED];
    uint32_t n_received;
    proto_finish_t finish;
    uint32_t error_status;          //  0, or the status of the ERROR it got
    char error_text [256];
    bool ended;                     //  a TOKENS with a finish, or an ERROR
} request_model_t;

//  A sequence a fake worker holds.
typedef struct {
    uint64_t seq_id;
    uint32_t blocks [MAX_TABLE];
    uint32_t n_blocks;
    uint32_t next_pos;              //  positions computed so far
    uint64_t started;               //  order of its first step on this worker
    bool finished;                  //  its last token was sampled
} live_seq_t;

typedef struct {
    zsock_t *sock;                  //  NULL once it left
    uint32_t n_ctx;
    uint32_t n_blocks;
    uint32_t block_size;
    bool manual;                    //  the test receives and answers its steps itself
    live_seq_t live [MAX_LIVE];
    uint32_t n_live;
    uint64_t n_started;
} fake_worker_t;

//  One sequence of a recorded step; `known` is the request's prompt + generated tokens
//  when the step was sent.
typedef struct {
    uint64_t seq_id;
    uint32_t pos;
    uint32_t n_tokens;
    uint32_t n_blocks;
    uint32_t known;
    bool first;
    bool sample;
} seq_record_t;

typedef struct {
    uint32_t worker;                //  index in fixture->worker
    uint32_t n_tokens;              //  new tokens, all sequences
    seq_record_t seqs [MAX_STEP_SEQS];
    uint32_t n_seqs;
    uint64_t frees [MAX_STEP_FREES];
    uint32_t n_frees;
    uint64_t preempted [MAX_STEP_FREES];    //  the frees of unfinished sequences
    uint32_t n_preempted;
} step_record_t;

//  The latest STATUS.
typedef struct {
    uint32_t received;
    uint32_t workers;
    uint32_t running;
    uint32_t waiting;
    uint32_t kv_blocks_used;
    uint32_t kv_blocks_total;
    uint64_t prefix_queries;
    uint64_t prefix_hits;
    uint64_t preemptions;
} status_model_t;

typedef struct {
    scheduler_args_t args;
    char inbox [64], workers [64], status [64];
    zactor_t *scheduler;
    zsock_t *tokenizer;
    zsock_t *status_sub;
    zpoller_t *poller;              //  s_run's, kept here so that teardown frees
    proto_msg_t msg;                //  them when a check fails in s_run
    fake_worker_t worker [MAX_WORKERS];
    uint32_t n_workers;
    request_model_t request [MAX_REQUESTS];
    uint32_t n_requests;
    step_record_t steps [MAX_STEPS];
    uint32_t n_steps;
    status_model_t last_status;
} fixture_t;

//  The token a fake worker samples for sequence seq_id at position pos: 1 .. 90, never
//  a stop token.
static uint32_t
s_token_at (uint64_t seq_id, uint32_t pos)
{
    return (uint32_t) ((seq_id * 31 + (uint64_t) pos * 7) % 90) + 1;
}

//  A prompt of n distinct-looking tokens starting at base.
static void
s_fill_prompt (uint32_t *prompt, uint32_t n, uint32_t base)
{
    for (uint32_t i = 0; i < n; i++)
        prompt [i] = base + i;
}


//  --- Fixture ----------------------------------------------------------------------------

static int
s_setup (void **state)
{
    static int counter = 0;
    fixture_t *fixture = (fixture_t *) calloc (1, sizeof (fixture_t));
    assert_non_null (fixture);
    counter++;
    snprintf (fixture->inbox, sizeof fixture->inbox, "inproc://sched-inbox-%d", counter);
    snprintf (fixture->workers, sizeof fixture->workers, "inproc://sched-workers-%d", counter);
    snprintf (fixture->status, sizeof fixture->status, "inproc://sched-status-%d", counter);
    fixture->args.inbox_endpoint = fixture->inbox;
    fixture->args.worker_endpoint = fixture->workers;
    fixture->args.status_endpoint = fixture->status;
    fixture->args.model_fingerprint = FINGERPRINT;
    fixture->args.heartbeat_ms = 100;
    fixture->args.worker_timeout_ms = 2000;
    *state = fixture;
    return 0;
}

//  Start the scheduler with fixture->args (a test changes them first).
static void
s_start (fixture_t *fixture)
{
    fixture->scheduler = zactor_new (scheduler_actor, &fixture->args);
    assert_non_null (fixture->scheduler);
    assert_string_equal (fixture->args.error, "");
    fixture->tokenizer = zsock_new_dealer (fixture->inbox);
    assert_non_null (fixture->tokenizer);
    zsock_set_rcvtimeo (fixture->tokenizer, RECV_TIMEOUT_MS);
    fixture->status_sub = zsock_new_sub (fixture->status, "");
    assert_non_null (fixture->status_sub);
    zsock_set_rcvtimeo (fixture->status_sub, RECV_TIMEOUT_MS);
}

static int
s_teardown (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    zpoller_destroy (&fixture->poller);
    proto_msg_reset (&fixture->msg);
    for (uint32_t i = 0; i < fixture->n_workers; i++)
        zsock_destroy (&fixture->worker [i].sock);
    zsock_destroy (&fixture->status_sub);
    zsock_destroy (&fixture->tokenizer);
    zactor_destroy (&fixture->scheduler);
    for (uint32_t i = 0; i < fixture->n_requests; i++)
        proto_sampling_reset (&fixture->request [i].sampling);
    free (fixture);
    return 0;
}

static uint32_t
s_budget (const fixture_t *fixture)
{
    return fixture->args.max_num_batched_tokens ? fixture->args.max_num_batched_tokens
                                                : DEFAULT_BUDGET;
}

static uint32_t
s_max_seqs (const fixture_t *fixture)
{
    return fixture->args.max_num_seqs ? fixture->args.max_num_seqs : DEFAULT_MAX_SEQS;
}

static request_model_t *
s_request (fixture_t *fixture, uint64_t id)
{
    for (uint32_t i = 0; i < fixture->n_requests; i++)
        if (fixture->request [i].id == id)
            return &fixture->request [i];
    return NULL;
}

//  Submit a request (stop tokens STOP_TOKEN and STOP_TOKEN_2; sampling may be NULL).
static void
s_submit_with (fixture_t *fixture, uint64_t id, const uint32_t *prompt, uint32_t n_prompt,
               uint32_t max_tokens, const proto_sampling_t *sampling)
{
    assert_true (fixture->n_requests < MAX_REQUESTS);
    assert_true (n_prompt <= MAX_PROMPT);
    assert_null (s_request (fixture, id));
    request_model_t *request = &fixture->request [fixture->n_requests++];
    memset (request, 0, sizeof *request);
    request->id = id;
    if (n_prompt)
        memcpy (request->prompt, prompt, n_prompt * sizeof (uint32_t));
    request->n_prompt = n_prompt;
    request->max_tokens = max_tokens;
    request->stop_tokens [0] = STOP_TOKEN;
    request->stop_tokens [1] = STOP_TOKEN_2;
    request->n_stop_tokens = 2;
    if (sampling)
        assert_int_equal (proto_sampling_copy (&request->sampling, sampling), 0);

    proto_msg_t submit = PROTO_MSG_INIT;
    submit.kind = PROTO_SUBMIT;
    submit.request_id = id;
    assert_int_equal (proto_msg_set_tokens (&submit, prompt, n_prompt), 0);
    assert_int_equal (proto_msg_set_stop_tokens (&submit, request->stop_tokens,
                                                 request->n_stop_tokens), 0);
    submit.max_tokens = max_tokens;
    assert_int_equal (proto_sampling_copy (&submit.sampling, &request->sampling), 0);
    assert_int_equal (proto_send (&submit, fixture->tokenizer), 0);
    proto_msg_reset (&submit);
}

static void
s_submit (fixture_t *fixture, uint64_t id, const uint32_t *prompt, uint32_t n_prompt,
          uint32_t max_tokens)
{
    s_submit_with (fixture, id, prompt, n_prompt, max_tokens, NULL);
}

static void
s_cancel (fixture_t *fixture, uint64_t id)
{
    request_model_t *request = s_request (fixture, id);
    if (request)
        request->cancelled = true;
    proto_msg_t cancel = PROTO_MSG_INIT;
    cancel.kind = PROTO_CANCEL;
    cancel.request_id = id;
    assert_int_equal (proto_send (&cancel, fixture->tokenizer), 0);
}


//  --- The tokenizer side -----------------------------------------------------------------

//  Record a message from the scheduler to the tokenizer in its request's model.
static void
s_tokenizer_record (fixture_t *fixture, const proto_msg_t *msg)
{
    request_model_t *request = s_request (fixture, msg->request_id);
    if (!request)
        fail_msg ("%s for request %" PRIu64 ", which was never submitted",
                  proto_kind_name (msg->kind), msg->request_id);
    if (request->ended)
        fail_msg ("%s for request %" PRIu64 " after it ended", proto_kind_name (msg->kind),
                  msg->request_id);
    if (msg->kind == PROTO_TOKENS) {
        if (request->cancelled)
            fail_msg ("TOKENS for request %" PRIu64 " after it was cancelled",
                      msg->request_id);
        assert_int_equal (msg->prompt_tokens, request->n_prompt);
        assert_true (msg->n_tokens >= 1);
        assert_true (request->n_received + msg->n_tokens <= MAX_GENERATED);
        memcpy (request->received + request->n_received, msg->tokens,
                msg->n_tokens * sizeof (uint32_t));
        request->n_received += msg->n_tokens;
        request->finish = msg->finish;
        request->ended = msg->finish != PROTO_FINISH_NONE;
    }
    else
    if (msg->kind == PROTO_ERROR) {
        request->error_status = msg->status;
        snprintf (request->error_text, sizeof request->error_text, "%s",
                  msg->text ? msg->text : "");
        request->ended = true;
    }
    else
        fail_msg ("unexpected %s on the tokenizer side", proto_kind_name (msg->kind));
}

//  Receive the next message for the tokenizer (recorded), failing after the timeout.
static void
s_tokenizer_recv (fixture_t *fixture, proto_msg_t *msg)
{
    char err [256] = "";
    proto_msg_reset (msg);
    if (proto_recv (fixture->tokenizer, msg, NULL, err, sizeof err) != 0)
        fail_msg ("the tokenizer side expected a message, got nothing or garbage: %s", err);
    s_tokenizer_record (fixture, msg);
}

//  The tokenizer side receives nothing within ms.
static void
s_tokenizer_expect_nothing (fixture_t *fixture, int ms)
{
    zpoller_t *poller = zpoller_new (fixture->tokenizer, NULL);
    void *which = zpoller_wait (poller, ms);
    zpoller_destroy (&poller);
    if (which) {
        proto_msg_t msg = PROTO_MSG_INIT;
        char err [256] = "";
        proto_recv (fixture->tokenizer, &msg, NULL, err, sizeof err);
        fail_msg ("the tokenizer side expected nothing, got %s for request %" PRIu64,
                  proto_kind_name (msg.kind), msg.request_id);
    }
}

//  The request received exactly the tokens the workers' function gives, max_tokens of
//  them (or up to the context end n_ctx when max_tokens is 0), the last with "length".
static void
s_assert_output_is_the_workers (fixture_t *fixture, uint64_t id, uint32_t n_ctx)
{
    request_model_t *request = s_request (fixture, id);
    assert_non_null (request);
    if (!request->ended || request->error_status)
        fail_msg ("request %" PRIu64 " did not end normally (error %u: %s)", id,
                  request->error_status, request->error_text);
    uint32_t expected = request->max_tokens;
    if (expected == 0 || request->n_prompt + expected > n_ctx)
        expected = n_ctx - request->n_prompt;
    if (request->n_received != expected)
        fail_msg ("request %" PRIu64 " received %u tokens, expected %u", id,
                  request->n_received, expected);
    for (uint32_t i = 0; i < request->n_received; i++)
        if (request->received [i] != s_token_at (id, request->n_prompt + i))
            fail_msg ("request %" PRIu64 ": token %u is %u, the worker sampled %u", id, i,
                      request->received [i], s_token_at (id, request->n_prompt + i));
    assert_int_equal (request->finish, PROTO_FINISH_LENGTH);
}


//  --- Fake workers -----------------------------------------------------------------------

static void
s_send_kind (zsock_t *sock, proto_kind_t kind)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = kind;
    assert_int_equal (proto_send (&msg, sock), 0);
}

static uint32_t
s_worker_index (const fixture_t *fixture, const fake_worker_t *worker)
{
    return (uint32_t) (worker - fixture->worker);
}

static void
    s_worker_hello (fixture_t *fixture, fake_worker_t *worker);

//  A worker with this pool joins. `manual`: the test drives its steps.
static fake_worker_t *
s_worker_join (fixture_t *fixture, uint32_t n_ctx, uint32_t n_blocks, uint32_t block_size,
               bool manual)
{
    assert_true (fixture->n_workers < MAX_WORKERS);
    fake_worker_t *worker = &fixture->worker [fixture->n_workers++];
    memset (worker, 0, sizeof *worker);
    worker->n_ctx = n_ctx;
    worker->n_blocks = n_blocks;
    worker->block_size = block_size;
    worker->manual = manual;
    worker->sock = zsock_new_dealer (fixture->workers);
    assert_non_null (worker->sock);
    zsock_set_rcvtimeo (worker->sock, RECV_TIMEOUT_MS);
    s_worker_hello (fixture, worker);
    return worker;
}

//  Say HELLO with the worker's pool and wait for WELCOME. A worker that says it again
//  has restarted: it holds no sequence.
static void
s_worker_hello (fixture_t *fixture, fake_worker_t *worker)
{
    worker->n_live = 0;
    proto_msg_t hello = PROTO_MSG_INIT;
    hello.kind = PROTO_HELLO;
    hello.version = PROTO_VERSION;
    hello.fingerprint = FINGERPRINT;
    hello.n_ctx = worker->n_ctx;
    hello.n_blocks = worker->n_blocks;
    hello.block_size = worker->block_size;
    hello.n_vocab = 100;
    char device [16];
    snprintf (device, sizeof device, "cpu:%u", s_worker_index (fixture, worker));
    proto_msg_set_text (&hello, device);
    assert_int_equal (proto_send (&hello, worker->sock), 0);
    proto_msg_reset (&hello);

    proto_msg_t reply = PROTO_MSG_INIT;
    char err [256] = "";
    int64_t deadline = zclock_mono () + RECV_TIMEOUT_MS;
    do {
        proto_msg_reset (&reply);
        if (proto_recv (worker->sock, &reply, NULL, err, sizeof err) != 0
        ||  zclock_mono () > deadline)
            fail_msg ("expected WELCOME, got nothing or garbage: %s", err);
    } while (reply.kind == PROTO_HEARTBEAT);
    if (reply.kind != PROTO_WELCOME)
        fail_msg ("expected WELCOME, got %s (%s)", proto_kind_name (reply.kind),
                  reply.text ? reply.text : "");
    proto_msg_reset (&reply);
}

//  The worker says BYE and closes its socket.
static void
s_worker_leave (fake_worker_t *worker)
{
    s_send_kind (worker->sock, PROTO_BYE);
    zclock_sleep (20);              //  inproc: let BYE go before the socket closes
    zsock_destroy (&worker->sock);
}

static live_seq_t *
s_live_find (fake_worker_t *worker, uint64_t seq_id)
{
    for (uint32_t i = 0; i < worker->n_live; i++)
        if (worker->live [i].seq_id == seq_id)
            return &worker->live [i];
    return NULL;
}

static void
s_live_remove (fake_worker_t *worker, uint64_t seq_id)
{
    live_seq_t *seq = s_live_find (worker, seq_id);
    if (seq)
        *seq = worker->live [--worker->n_live];
}

//  The token at position pos of a request, as far as the test knows it.
static uint32_t
s_token_of (const request_model_t *request, uint32_t pos)
{
    return pos < request->n_prompt ? request->prompt [pos]
                                   : request->generated [pos - request->n_prompt];
}

static bool
s_sampling_is_empty (const proto_sampling_t *s)
{
    return s->temperature == 0 && s->top_k == 0 && s->top_p == 0 && s->min_p == 0
        && s->presence_penalty == 0 && s->frequency_penalty == 0
        && s->repetition_penalty == 0 && s->seed == 0 && s->min_tokens == 0
        && s->n_logprobs == 0 && s->n_bias == 0;
}

static void
s_assert_sampling_equal (const proto_sampling_t *got, const proto_sampling_t *want,
                         uint64_t seq_id)
{
    bool equal = got->temperature == want->temperature && got->top_k == want->top_k
              && got->top_p == want->top_p && got->min_p == want->min_p
              && got->presence_penalty == want->presence_penalty
              && got->frequency_penalty == want->frequency_penalty
              && got->repetition_penalty == want->repetition_penalty
              && got->seed == want->seed && got->min_tokens == want->min_tokens
              && got->n_logprobs == want->n_logprobs && got->n_bias == want->n_bias;
    for (uint32_t i = 0; equal && i < want->n_bias; i++)
        equal = got->bias_tokens [i] == want->bias_tokens [i]
             && got->bias_values [i] == want->bias_values [i];
    if (!equal)
        fail_msg ("sequence %" PRIu64 ": the first step's sampling is not the SUBMIT's "
                  "(temperature %g seed %" PRIu64 " min_tokens %u, expected %g %" PRIu64
                  " %u)", seq_id, got->temperature, got->seed, got->min_tokens,
                  want->temperature, want->seed, want->min_tokens);
}

//  Is block b in the table of a live sequence other than seq_id?
static bool
s_block_held_by_another (const fake_worker_t *worker, uint32_t b, uint64_t seq_id)
{
    for (uint32_t i = 0; i < worker->n_live; i++) {
        const live_seq_t *seq = &worker->live [i];
        if (seq->seq_id == seq_id)
            continue;
        for (uint32_t k = 0; k < seq->n_blocks; k++)
            if (seq->blocks [k] == b)
                return true;
    }
    return false;
}

static bool
s_step_copies (const proto_msg_t *step, uint32_t src, uint32_t dst)
{
    for (uint32_t i = 0; i < step->n_copies; i++)
        if (step->copies [2 * i] == src && step->copies [2 * i + 1] == dst)
            return true;
    return false;
}

//  What a strict worker checks in every step (see the header), and the step recorded.
static void
s_worker_check_step (fixture_t *fixture, fake_worker_t *worker, const proto_msg_t *step)
{
    assert_true (fixture->n_steps < MAX_STEPS);
    step_record_t *record = &fixture->steps [fixture->n_steps++];
    memset (record, 0, sizeof *record);
    record->worker = s_worker_index (fixture, worker);
    if (step->n_seqs > s_max_seqs (fixture))
        fail_msg ("a step holds %u sequences, max_num_seqs is %u", step->n_seqs,
                  s_max_seqs (fixture));
    assert_true (step->n_seqs <= MAX_STEP_SEQS);
    assert_true (step->n_frees <= MAX_STEP_FREES);

    //  Frees first. A freed sequence that had not finished nor been cancelled was
    //  preempted: every unfinished sequence that started after it must go too.
    for (uint32_t i = 0; i < step->n_frees; i++) {
        uint64_t id = step->frees [i];
        live_seq_t *seq = s_live_find (worker, id);
        if (!seq)
            fail_msg ("step %" PRIu64 " frees sequence %" PRIu64 ", which the worker "
                      "does not hold", step->step_id, id);
        for (uint32_t k = 0; k < i; k++)
            if (step->frees [k] == id)
                fail_msg ("step %" PRIu64 " frees %" PRIu64 " twice", step->step_id, id);
        record->frees [record->n_frees++] = id;
        request_model_t *request = s_request (fixture, id);
        if (!seq->finished && !(request && request->cancelled))
            record->preempted [record->n_preempted++] = id;
    }
    for (uint32_t i = 0; i < record->n_preempted; i++) {
        live_seq_t *victim = s_live_find (worker, record->preempted [i]);
        for (uint32_t k = 0; k < worker->n_live; k++) {
            live_seq_t *other = &worker->live [k];
            request_model_t *request = s_request (fixture, other->seq_id);
            if (other->started <= victim->started || other->finished
            ||  (request && request->cancelled))
                continue;
            bool also = false;
            for (uint32_t j = 0; j < record->n_preempted; j++)
                also = also || record->preempted [j] == other->seq_id;
            if (!also)
                fail_msg ("sequence %" PRIu64 " was preempted but %" PRIu64 ", which "
                          "started after it, was not", victim->seq_id, other->seq_id);
        }
    }
    for (uint32_t i = 0; i < step->n_frees; i++)
        s_live_remove (worker, step->frees [i]);

    //  Copies: within the pool, into blocks no sequence holds.
    for (uint32_t i = 0; i < step->n_copies; i++) {
        uint32_t src = step->copies [2 * i], dst = step->copies [2 * i + 1];
        assert_true (src < worker->n_blocks && dst < worker->n_blocks && src != dst);
        if (s_block_held_by_another (worker, dst, UINT64_MAX))
            fail_msg ("step %" PRIu64 " copies block %u into block %u, which a sequence "
                      "holds", step->step_id, src, dst);
    }

    //  The sequences.
    uint32_t total = 0;
    for (uint32_t i = 0; i < step->n_seqs; i++) {
        const proto_step_seq_t *seq = &step->seqs [i];
        request_model_t *request = s_request (fixture, seq->seq_id);
        if (!request)
            fail_msg ("a step runs sequence %" PRIu64 ", which was never submitted",
                      seq->seq_id);
        for (uint32_t k = 0; k < i; k++)
            if (step->seqs [k].seq_id == seq->seq_id)
                fail_msg ("sequence %" PRIu64 " twice in one step", seq->seq_id);
        if (seq->n_tokens == 0)
            fail_msg ("sequence %" PRIu64 " with no tokens (pos %u)", seq->seq_id,
                      seq->pos);
        total += seq->n_tokens;
        assert_int_equal (seq->n_prompt, request->n_prompt);
        uint32_t known = request->n_prompt + request->n_generated;
        uint32_t end = seq->pos + seq->n_tokens;
        if (end > known)
            fail_msg ("sequence %" PRIu64 ": positions %u .. %u, but only %u tokens are "
                      "known", seq->seq_id, seq->pos, end - 1, known);
        if (seq->sample != (end == known))
            fail_msg ("sequence %" PRIu64 ": positions %u .. %u of %u known tokens with "
                      "sample %s", seq->seq_id, seq->pos, end - 1, known,
                      seq->sample ? "set" : "not set");
        for (uint32_t k = 0; k < seq->n_tokens; k++)
            if (seq->tokens [k] != s_token_of (request, seq->pos + k))
                fail_msg ("sequence %" PRIu64 ": token at position %u is %u, expected %u",
                          seq->seq_id, seq->pos + k, seq->tokens [k],
                          s_token_of (request, seq->pos + k));
        //  The block table: exactly the blocks positions 0 .. end-1 need.
        uint32_t bs = worker->block_size;
        if (seq->n_blocks != (end + bs - 1) / bs)
            fail_msg ("sequence %" PRIu64 ": %u blocks of %u for %u positions",
                      seq->seq_id, seq->n_blocks, bs, end);
        assert_true (seq->n_blocks <= MAX_TABLE);
        for (uint32_t k = 0; k < seq->n_blocks; k++)
            if (seq->blocks [k] >= worker->n_blocks)
                fail_msg ("sequence %" PRIu64 ": block %u is outside the pool of %u",
                          seq->seq_id, seq->blocks [k], worker->n_blocks);

        live_seq_t *live = s_live_find (worker, seq->seq_id);
        if (seq->first) {
            if (live)
                fail_msg ("sequence %" PRIu64 ": `first` but the worker holds it already",
                          seq->seq_id);
            if (seq->pos % bs != 0)
                fail_msg ("sequence %" PRIu64 " starts at %u, not at a block boundary",
                          seq->seq_id, seq->pos);
            s_assert_sampling_equal (&seq->sampling, &request->sampling, seq->seq_id);
            if (request->sampling.min_tokens > 0) {
                assert_int_equal (seq->n_masked, request->n_stop_tokens);
                assert_memory_equal (seq->masked_tokens, request->stop_tokens,
                                     request->n_stop_tokens * sizeof (uint32_t));
            }
            else
                assert_int_equal (seq->n_masked, 0);
            assert_true (worker->n_live < MAX_LIVE);
            live = &worker->live [worker->n_live++];
            memset (live, 0, sizeof *live);
            live->seq_id = seq->seq_id;
            live->started = ++worker->n_started;
        }
        else {
            if (!live)
                fail_msg ("sequence %" PRIu64 ": not `first`, but the worker does not "
                          "hold it (never started, or freed)", seq->seq_id);
            if (seq->pos != live->next_pos)
                fail_msg ("sequence %" PRIu64 ": step at %u, the last one ended at %u",
                          seq->seq_id, seq->pos, live->next_pos);
            if (!s_sampling_is_empty (&seq->sampling) || seq->n_masked != 0)
                fail_msg ("sequence %" PRIu64 ": sampling in a step that is not its first",
                          seq->seq_id);
            assert_true (seq->n_blocks >= live->n_blocks);
            for (uint32_t k = 0; k < live->n_blocks; k++)
                if (seq->blocks [k] != live->blocks [k]
                &&  !s_step_copies (step, live->blocks [k], seq->blocks [k]))
                    fail_msg ("sequence %" PRIu64 ": its block %u changed from %u to %u "
                              "without a copy", seq->seq_id, k, live->blocks [k],
                              seq->blocks [k]);
        }
        memcpy (live->blocks, seq->blocks, seq->n_blocks * sizeof (uint32_t));
        live->n_blocks = seq->n_blocks;
        live->next_pos = end;

        seq_record_t *seen = &record->seqs [record->n_seqs++];
        seen->seq_id = seq->seq_id;
        seen->pos = seq->pos;
        seen->n_tokens = seq->n_tokens;
        seen->n_blocks = seq->n_blocks;
        seen->known = known;
        seen->first = seq->first;
        seen->sample = seq->sample;
    }
    record->n_tokens = total;
    if (total > s_budget (fixture))
        fail_msg ("a step holds %u new tokens, max_num_batched_tokens is %u", total,
                  s_budget (fixture));
    if (worker->n_live > s_max_seqs (fixture))
        fail_msg ("the worker holds %u sequences, max_num_seqs is %u", worker->n_live,
                  s_max_seqs (fixture));

    //  No block a sequence writes is held by another sequence.
    for (uint32_t i = 0; i < step->n_seqs; i++) {
        const proto_step_seq_t *seq = &step->seqs [i];
        uint32_t bs = worker->block_size;
        for (uint32_t k = seq->pos / bs; k * bs < seq->pos + seq->n_tokens; k++)
            if (s_block_held_by_another (worker, seq->blocks [k], seq->seq_id))
                fail_msg ("sequence %" PRIu64 " writes block %u, which another sequence "
                          "holds", seq->seq_id, seq->blocks [k]);
    }
}

//  Answer a step: tokens [i] for the i-th sequence that samples.
static void
s_worker_answer_tokens (fixture_t *fixture, fake_worker_t *worker, const proto_msg_t *step,
                        const uint32_t *tokens)
{
    proto_msg_t result = PROTO_MSG_INIT;
    result.kind = PROTO_STEP_RESULT;
    result.step_id = step->step_id;
    if (step->n_seqs) {
        result.outs = (proto_step_out_t *) calloc (step->n_seqs, sizeof (proto_step_out_t));
        assert_non_null (result.outs);
    }
    for (uint32_t i = 0; i < step->n_seqs; i++) {
        const proto_step_seq_t *seq = &step->seqs [i];
        if (!seq->sample)
            continue;
        uint32_t token = tokens [result.n_outs];
        proto_step_out_t *out = &result.outs [result.n_outs++];
        out->seq_id = seq->seq_id;
        out->token = token;
        out->logprob = -0.5f;
        request_model_t *request = s_request (fixture, seq->seq_id);
        assert_true (request->n_generated < MAX_GENERATED);
        request->generated [request->n_generated++] = token;
        live_seq_t *live = s_live_find (worker, seq->seq_id);
        assert_non_null (live);
        uint32_t total = request->n_prompt + request->n_generated;
        live->finished = token == STOP_TOKEN || token == STOP_TOKEN_2
                      || (request->max_tokens && request->n_generated >= request->max_tokens)
                      || total >= worker->n_ctx;
    }
    assert_int_equal (proto_send (&result, worker->sock), 0);
    proto_msg_reset (&result);
}

//  Answer a step with the tokens the deterministic function gives.
static void
s_worker_answer (fixture_t *fixture, fake_worker_t *worker, const proto_msg_t *step)
{
    uint32_t tokens [MAX_STEP_SEQS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < step->n_seqs && i < MAX_STEP_SEQS; i++)
        if (step->seqs [i].sample)
            tokens [n++] = s_token_at (step->seqs [i].seq_id,
                                       step->seqs [i].pos + step->seqs [i].n_tokens);
    s_worker_answer_tokens (fixture, worker, step, tokens);
}

//  Receive the worker's next STEP (answering heartbeats), checked and recorded.
static void
s_worker_recv_step (fixture_t *fixture, fake_worker_t *worker, proto_msg_t *step)
{
    char err [256] = "";
    //  Heartbeats come all the time: the deadline is for the STEP.
    int64_t deadline = zclock_mono () + RECV_TIMEOUT_MS;
    while (true) {
        proto_msg_reset (step);
        if (proto_recv (worker->sock, step, NULL, err, sizeof err) != 0)
            fail_msg ("the worker expected a STEP, got nothing or garbage: %s", err);
        if (step->kind != PROTO_HEARTBEAT)
            break;
        if (zclock_mono () > deadline)
            fail_msg ("the worker expected a STEP, got only heartbeats for %d ms",
                      RECV_TIMEOUT_MS);
        s_send_kind (worker->sock, PROTO_HEARTBEAT);
    }
    if (step->kind != PROTO_STEP)
        fail_msg ("the worker expected a STEP, got %s", proto_kind_name (step->kind));
    s_worker_check_step (fixture, worker, step);
}

//  The worker receives nothing but heartbeats within ms (and answers them).
static void
s_worker_expect_nothing (fake_worker_t *worker, int ms)
{
    int64_t deadline = zclock_mono () + ms;
    zpoller_t *poller = zpoller_new (worker->sock, NULL);
    while (zclock_mono () < deadline) {
        if (zpoller_wait (poller, (int) (deadline - zclock_mono ())) != worker->sock)
            continue;
        proto_msg_t msg = PROTO_MSG_INIT;
        char err [256] = "";
        assert_int_equal (proto_recv (worker->sock, &msg, NULL, err, sizeof err), 0);
        proto_kind_t kind = msg.kind;
        proto_msg_reset (&msg);
        if (kind != PROTO_HEARTBEAT) {
            zpoller_destroy (&poller);
            fail_msg ("the worker expected nothing, got %s", proto_kind_name (kind));
        }
        s_send_kind (worker->sock, PROTO_HEARTBEAT);
    }
    zpoller_destroy (&poller);
}


//  --- Running ----------------------------------------------------------------------------

typedef bool (condition_fn) (fixture_t *fixture, uint64_t a, uint64_t b);

static void
s_status_record (fixture_t *fixture, const proto_msg_t *msg)
{
    assert_int_equal (msg->kind, PROTO_STATUS);
    status_model_t *status = &fixture->last_status;
    status->received++;
    status->workers = msg->workers;
    status->running = msg->running;
    status->waiting = msg->waiting;
    status->kv_blocks_used = msg->kv_blocks_used;
    status->kv_blocks_total = msg->kv_blocks_total;
    status->prefix_queries = msg->prefix_queries;
    status->prefix_hits = msg->prefix_hits;
    status->preemptions = msg->preemptions;
}

//  Read whatever arrives on the tokenizer side, the status, and the automatic workers
//  (each STEP checked and answered at once) until condition (fixture, a, b) holds.
static void
s_run (fixture_t *fixture, condition_fn *condition, uint64_t a, uint64_t b)
{
    int64_t deadline = zclock_mono () + RUN_TIMEOUT_MS;
    fixture->poller = zpoller_new (fixture->tokenizer, fixture->status_sub, NULL);
    for (uint32_t i = 0; i < fixture->n_workers; i++)
        if (fixture->worker [i].sock && !fixture->worker [i].manual)
            zpoller_add (fixture->poller, fixture->worker [i].sock);
    proto_msg_t *msg = &fixture->msg;
    char err [256] = "";
    while (!condition (fixture, a, b)) {
        if (zclock_mono () > deadline)
            fail_msg ("the condition did not hold within %d ms (%u steps so far)",
                      RUN_TIMEOUT_MS, fixture->n_steps);
        zsock_t *which = (zsock_t *) zpoller_wait (fixture->poller, 100);
        if (!which)
            continue;
        proto_msg_reset (msg);
        if (proto_recv (which, msg, NULL, err, sizeof err) != 0)
            fail_msg ("garbage from the scheduler: %s", err);
        if (which == fixture->tokenizer)
            s_tokenizer_record (fixture, msg);
        else
        if (which == fixture->status_sub)
            s_status_record (fixture, msg);
        else {
            fake_worker_t *worker = NULL;
            for (uint32_t i = 0; i < fixture->n_workers; i++)
                if (fixture->worker [i].sock == which)
                    worker = &fixture->worker [i];
            assert_non_null (worker);
            if (msg->kind == PROTO_HEARTBEAT)
                s_send_kind (worker->sock, PROTO_HEARTBEAT);
            else
            if (msg->kind == PROTO_STEP) {
                s_worker_check_step (fixture, worker, msg);
                s_worker_answer (fixture, worker, msg);
            }
            else
                fail_msg ("a worker got %s", proto_kind_name (msg->kind));
        }
    }
    proto_msg_reset (msg);
    zpoller_destroy (&fixture->poller);
}

//  Every request that was not cancelled has ended, and every worker still there has
//  been told to forget every sequence.
static bool
s_settled (fixture_t *fixture, uint64_t a, uint64_t b)
{
    (void) a;
    (void) b;
    for (uint32_t i = 0; i < fixture->n_requests; i++)
        if (!fixture->request [i].ended && !fixture->request [i].cancelled)
            return false;
    for (uint32_t i = 0; i < fixture->n_workers; i++)
        if (fixture->worker [i].sock && fixture->worker [i].n_live > 0)
            return false;
    return true;
}

//  Request a has received at least b tokens.
static bool
s_has_received (fixture_t *fixture, uint64_t a, uint64_t b)
{
    request_model_t *request = s_request (fixture, a);
    return request && request->n_received >= b;
}

//  The latest STATUS says a running and b waiting.
static bool
s_status_shows (fixture_t *fixture, uint64_t a, uint64_t b)
{
    return fixture->last_status.received > 0 && fixture->last_status.running == a
        && fixture->last_status.waiting == b;
}

//  The latest STATUS says a preemptions.
static bool
s_status_preemptions_are (fixture_t *fixture, uint64_t a, uint64_t b)
{
    (void) b;
    return fixture->last_status.received > 0 && fixture->last_status.preemptions == a;
}

//  The latest STATUS says nothing runs or waits and no KV block is used.
static bool
s_status_idle (fixture_t *fixture, uint64_t a, uint64_t b)
{
    (void) a;
    (void) b;
    return fixture->last_status.received > 0 && fixture->last_status.running == 0
        && fixture->last_status.waiting == 0 && fixture->last_status.kv_blocks_used == 0;
}

//  The latest STATUS says a workers with b KV blocks in all.
static bool
s_status_workers (fixture_t *fixture, uint64_t a, uint64_t b)
{
    return fixture->last_status.received > 0 && fixture->last_status.workers == a
        && fixture->last_status.kv_blocks_total == b;
}

//  Where sequence seq_id is in a recorded step, or NULL.
static const seq_record_t *
s_in_step (const step_record_t *record, uint64_t seq_id)
{
    for (uint32_t i = 0; i < record->n_seqs; i++)
        if (record->seqs [i].seq_id == seq_id)
            return &record->seqs [i];
    return NULL;
}

static bool
s_frees (const step_record_t *record, uint64_t seq_id)
{
    for (uint32_t i = 0; i < record->n_frees; i++)
        if (record->frees [i] == seq_id)
            return true;
    return false;
}

//  The index of the first recorded step (from `from`) that runs seq_id, or -1.
static int
s_first_step_of (const fixture_t *fixture, uint64_t seq_id, uint32_t from)
{
    for (uint32_t i = from; i < fixture->n_steps; i++)
        if (s_in_step (&fixture->steps [i], seq_id))
            return (int) i;
    return -1;
}


//  When seq_id is first run from step `from` on: its step and its place in that step
//  (admissions come in the order of the queue), as one number; -1 when never.
static int64_t
s_start_order (const fixture_t *fixture, uint64_t seq_id, uint32_t from)
{
    int step = s_first_step_of (fixture, seq_id, from);
    if (step < 0)
        return -1;
    const step_record_t *record = &fixture->steps [step];
    const seq_record_t *seq = s_in_step (record, seq_id);
    return (int64_t) step * MAX_STEP_SEQS + (seq - record->seqs);
}


//  --- Tests: workers and requests --------------------------------------------------------

static void
test_request_without_worker_gets_503 (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    uint32_t prompt [] = { 1, 2, 3 };
    s_submit (fixture, 7, prompt, 3, 4);
    proto_msg_t msg = PROTO_MSG_INIT;
    s_tokenizer_recv (fixture, &msg);
    assert_int_equal (msg.kind, PROTO_ERROR);
    assert_int_equal (msg.request_id, 7);
    assert_int_equal (msg.status, 503);
    proto_msg_reset (&msg);
}

static void
test_wrong_version_model_or_pool_is_rejected (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    struct {
        uint32_t version;
        uint64_t fingerprint;
        uint32_t n_ctx, n_blocks, block_size;
        const char *why;
    } cases [] = {
        { PROTO_VERSION + 1, FINGERPRINT, 64, 16, 16, "protocol version" },
        { PROTO_VERSION - 1, FINGERPRINT, 64, 16, 16, "protocol version" },
        { PROTO_VERSION, FINGERPRINT + 1, 64, 16, 16, "another model" },
        { PROTO_VERSION, FINGERPRINT, 64, 0, 16, "cannot hold" },
        { PROTO_VERSION, FINGERPRINT, 64, 16, 0, "cannot hold" },
        { PROTO_VERSION, FINGERPRINT, 0, 16, 16, "cannot hold" },
        //  3 blocks of 16 = 48 positions: not one whole context of 64
        { PROTO_VERSION, FINGERPRINT, 64, 3, 16, "cannot hold" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        zsock_t *sock = zsock_new_dealer (fixture->workers);
        zsock_set_rcvtimeo (sock, RECV_TIMEOUT_MS);
        proto_msg_t hello = PROTO_MSG_INIT;
        hello.kind = PROTO_HELLO;
        hello.version = cases [i].version;
        hello.fingerprint = cases [i].fingerprint;
        hello.n_ctx = cases [i].n_ctx;
        hello.n_blocks = cases [i].n_blocks;
        hello.block_size = cases [i].block_size;
        proto_msg_set_text (&hello, "cpu:1");
        assert_int_equal (proto_send (&hello, sock), 0);
        proto_msg_reset (&hello);
        proto_msg_t reply = PROTO_MSG_INIT;
        char err [256] = "";
        if (proto_recv (sock, &reply, NULL, err, sizeof err) != 0)
            fail_msg ("case %zu: expected REJECT, got nothing: %s", i, err);
        if (reply.kind != PROTO_REJECT)
            fail_msg ("case %zu: expected REJECT, got %s", i, proto_kind_name (reply.kind));
        if (!strstr (reply.text, cases [i].why))
            fail_msg ("case %zu: the reason \"%s\" does not say \"%s\"", i, reply.text,
                      cases [i].why);
        proto_msg_reset (&reply);
        zsock_destroy (&sock);
    }
    //  None of them counts: a good worker is the only one, and it runs the request.
    fake_worker_t *worker = s_worker_join (fixture, 64, 16, 16, false);
    s_run (fixture, s_status_workers, 1, 16);
    uint32_t prompt [] = { 1, 2, 3 };
    s_submit (fixture, 8, prompt, 3, 2);
    s_run (fixture, s_settled, 0, 0);
    s_assert_output_is_the_workers (fixture, 8, worker->n_ctx);
}

static void
test_request_runs_to_max_tokens_then_another_to_a_stop_token (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 16, 16, true);
    uint32_t prompt [] = { 1, 2, 3 };
    s_submit (fixture, 11, prompt, 3, 3);

    proto_msg_t step = PROTO_MSG_INIT, tokens = PROTO_MSG_INIT;
    //  Prefill: the whole prompt at position 0, the first step of the sequence.
    s_worker_recv_step (fixture, worker, &step);
    assert_int_equal (step.n_seqs, 1);
    assert_int_equal (step.n_frees, 0);
    assert_int_equal (step.seqs [0].seq_id, 11);
    assert_int_equal (step.seqs [0].pos, 0);
    assert_int_equal (step.seqs [0].n_tokens, 3);
    assert_memory_equal (step.seqs [0].tokens, prompt, sizeof prompt);
    assert_true (step.seqs [0].first);
    assert_true (step.seqs [0].sample);
    assert_int_equal (step.seqs [0].n_blocks, 1);
    s_worker_answer (fixture, worker, &step);
    s_tokenizer_recv (fixture, &tokens);
    assert_int_equal (tokens.kind, PROTO_TOKENS);
    assert_int_equal (tokens.request_id, 11);
    assert_int_equal (tokens.n_tokens, 1);
    assert_int_equal (tokens.tokens [0], s_token_at (11, 3));
    assert_int_equal (tokens.finish, PROTO_FINISH_NONE);
    assert_int_equal (tokens.prompt_tokens, 3);

    //  Decodes: one token at the next position each step; the third is the last.
    for (uint32_t i = 0; i < 2; i++) {
        s_worker_recv_step (fixture, worker, &step);
        assert_int_equal (step.n_seqs, 1);
        assert_int_equal (step.seqs [0].pos, 3 + i);
        assert_int_equal (step.seqs [0].n_tokens, 1);
        assert_int_equal (step.seqs [0].tokens [0], s_token_at (11, 3 + i));
        assert_false (step.seqs [0].first);
        s_worker_answer (fixture, worker, &step);
        s_tokenizer_recv (fixture, &tokens);
        assert_int_equal (tokens.tokens [0], s_token_at (11, 4 + i));
        assert_int_equal (tokens.finish, i == 1 ? PROTO_FINISH_LENGTH : PROTO_FINISH_NONE);
    }
    //  Finished: the worker is told to forget it, then nothing more.
    s_worker_recv_step (fixture, worker, &step);
    assert_int_equal (step.n_seqs, 0);
    assert_int_equal (step.n_frees, 1);
    assert_int_equal (step.frees [0], 11);
    s_worker_answer (fixture, worker, &step);
    s_worker_expect_nothing (worker, 200);
    s_assert_output_is_the_workers (fixture, 11, worker->n_ctx);

    //  A stop token ends the next request with "stop".
    s_submit (fixture, 12, prompt, 3, 10);
    s_worker_recv_step (fixture, worker, &step);
    assert_int_equal (step.seqs [0].seq_id, 12);
    assert_true (step.seqs [0].first);
    uint32_t token = STOP_TOKEN;
    s_worker_answer_tokens (fixture, worker, &step, &token);
    s_tokenizer_recv (fixture, &tokens);
    assert_int_equal (tokens.request_id, 12);
    assert_int_equal (tokens.tokens [0], STOP_TOKEN);
    assert_int_equal (tokens.finish, PROTO_FINISH_STOP);
    s_worker_recv_step (fixture, worker, &step);
    assert_int_equal (step.n_frees, 1);
    assert_int_equal (step.frees [0], 12);
    s_worker_answer (fixture, worker, &step);
    proto_msg_reset (&step);
    proto_msg_reset (&tokens);
}

static void
test_context_length_limits_prompt_and_output (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 8, 2, 4, false);
    uint32_t prompt [9];
    s_fill_prompt (prompt, 9, 1);
    proto_msg_t msg = PROTO_MSG_INIT;

    //  Longer than the context: 400 that says the numbers.
    s_submit (fixture, 21, prompt, 9, 2);
    s_tokenizer_recv (fixture, &msg);
    assert_int_equal (msg.kind, PROTO_ERROR);
    assert_int_equal (msg.status, 400);
    assert_non_null (strstr (msg.text, "8 tokens"));
    assert_non_null (strstr (msg.text, "9 tokens"));
    //  Empty: 400.
    s_submit (fixture, 22, prompt, 0, 2);
    s_tokenizer_recv (fixture, &msg);
    assert_int_equal (msg.kind, PROTO_ERROR);
    assert_int_equal (msg.status, 400);
    proto_msg_reset (&msg);

    //  max_tokens 0 runs to the end of the context: 5 + 3 = 8 tokens -> length; and
    //  the context ends a request before its max_tokens: 6 + 2 = 8.
    s_submit (fixture, 23, prompt, 5, 0);
    s_run (fixture, s_settled, 0, 0);
    s_assert_output_is_the_workers (fixture, 23, worker->n_ctx);
    s_submit (fixture, 24, prompt, 6, 10);
    s_run (fixture, s_settled, 0, 0);
    s_assert_output_is_the_workers (fixture, 24, worker->n_ctx);
    assert_int_equal (s_request (fixture, 24)->n_received, 2);
}

static void
test_waiting_requests_run_first_come_first_served_and_cancel_drops_them (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    fixture->args.max_num_seqs = 1;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 16, 16, true);
    uint32_t prompt [] = { 1, 2 };
    s_submit (fixture, 31, prompt, 2, 2);
    s_submit (fixture, 32, prompt, 2, 1);
    proto_msg_t step = PROTO_MSG_INIT, tokens = PROTO_MSG_INIT;

    //  One sequence at a time: only 31 runs; 32 waits.
    s_worker_recv_step (fixture, worker, &step);
    assert_int_equal (step.n_seqs, 1);
    assert_int_equal (step.seqs [0].seq_id, 31);
    s_worker_answer (fixture, worker, &step);
    s_tokenizer_recv (fixture, &tokens);
    assert_int_equal (tokens.request_id, 31);

    //  31 is cancelled while its next step is in flight: its token is dropped, the next
    //  step frees it and starts 32.
    s_worker_recv_step (fixture, worker, &step);
    assert_int_equal (step.seqs [0].seq_id, 31);
    s_cancel (fixture, 31);
    zclock_sleep (50);
    s_worker_answer (fixture, worker, &step);
    s_worker_recv_step (fixture, worker, &step);
    assert_int_equal (step.n_frees, 1);
    assert_int_equal (step.frees [0], 31);
    assert_int_equal (step.n_seqs, 1);
    assert_int_equal (step.seqs [0].seq_id, 32);
    assert_int_equal (step.seqs [0].pos, 0);
    assert_true (step.seqs [0].first);
    s_worker_answer (fixture, worker, &step);
    s_tokenizer_recv (fixture, &tokens);
    assert_int_equal (tokens.request_id, 32);
    assert_int_equal (tokens.finish, PROTO_FINISH_LENGTH);
    s_worker_recv_step (fixture, worker, &step);
    assert_int_equal (step.n_frees, 1);
    assert_int_equal (step.frees [0], 32);
    s_worker_answer (fixture, worker, &step);

    //  A waiting request that is cancelled never runs and gets no message.
    s_submit (fixture, 33, prompt, 2, 2);
    s_submit (fixture, 34, prompt, 2, 2);
    s_submit (fixture, 35, prompt, 2, 1);
    s_worker_recv_step (fixture, worker, &step);
    assert_int_equal (step.seqs [0].seq_id, 33);
    s_cancel (fixture, 34);
    zclock_sleep (50);
    s_worker_answer (fixture, worker, &step);
    proto_msg_reset (&step);
    worker->manual = false;
    s_run (fixture, s_settled, 0, 0);
    for (uint32_t i = 0; i < fixture->n_steps; i++)
        assert_null (s_in_step (&fixture->steps [i], 34));
    assert_int_equal (s_request (fixture, 34)->n_received, 0);
    assert_true (s_first_step_of (fixture, 33, 0) < s_first_step_of (fixture, 35, 0));

    //  A cancel of an unknown request is quiet.
    s_cancel (fixture, 12345);
    s_tokenizer_expect_nothing (fixture, 100);
    proto_msg_reset (&tokens);
}

static void
test_worker_that_leaves_requeues_unstarted_requests_and_fails_the_others (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *first = s_worker_join (fixture, 64, 16, 16, true);
    uint32_t prompt_a [] = { 1, 2 }, prompt_b [] = { 5, 6, 7 };
    proto_msg_t step = PROTO_MSG_INIT, tokens = PROTO_MSG_INIT;

    //  601 produces two tokens; 602 arrives while a step is in flight and starts in the
    //  next one, with 601's third decode. That step never comes back.
    s_submit (fixture, 601, prompt_a, 2, 5);
    s_worker_recv_step (fixture, first, &step);
    s_worker_answer (fixture, first, &step);
    s_tokenizer_recv (fixture, &tokens);
    s_worker_recv_step (fixture, first, &step);
    s_submit (fixture, 602, prompt_b, 3, 4);
    zclock_sleep (50);
    s_worker_answer (fixture, first, &step);
    s_tokenizer_recv (fixture, &tokens);
    assert_int_equal (tokens.request_id, 601);
    s_worker_recv_step (fixture, first, &step);
    assert_int_equal (step.n_seqs, 2);
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 602));
    proto_msg_reset (&step);

    //  A second worker joins; the first leaves. 601 had tokens: 503. 602 had none: it
    //  runs again, from its first token, on the second worker.
    fake_worker_t *second = s_worker_join (fixture, 64, 16, 16, false);
    uint32_t steps_before = fixture->n_steps;
    s_worker_leave (first);
    s_run (fixture, s_settled, 0, 0);
    request_model_t *failed = s_request (fixture, 601);
    assert_int_equal (failed->error_status, 503);
    assert_non_null (strstr (failed->error_text, "left"));
    assert_int_equal (failed->n_received, 2);
    s_assert_output_is_the_workers (fixture, 602, second->n_ctx);
    int resumed = s_first_step_of (fixture, 602, steps_before);
    assert_true (resumed >= 0);
    const step_record_t *record = &fixture->steps [resumed];
    assert_int_equal (record->worker, s_worker_index (fixture, second));
    const seq_record_t *seq = s_in_step (record, 602);
    assert_true (seq->first);
    assert_int_equal (seq->pos, 0);
    assert_int_equal (seq->n_tokens, 3);
    proto_msg_reset (&tokens);
}

static void
test_losing_the_last_worker_fails_running_and_waiting_requests (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    fixture->args.max_num_seqs = 1;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 16, 16, true);
    uint32_t prompt [] = { 1, 2 };
    proto_msg_t msg = PROTO_MSG_INIT;

    //  41 runs (no token yet), 42 waits; the only worker leaves: both 503.
    s_submit (fixture, 41, prompt, 2, 5);
    s_submit (fixture, 42, prompt, 2, 5);
    s_worker_recv_step (fixture, worker, &msg);
    s_worker_leave (worker);
    s_tokenizer_recv (fixture, &msg);
    assert_int_equal (msg.kind, PROTO_ERROR);
    assert_int_equal (msg.status, 503);
    s_tokenizer_recv (fixture, &msg);
    assert_int_equal (msg.kind, PROTO_ERROR);
    assert_int_equal (msg.status, 503);
    assert_true (s_request (fixture, 41)->ended && s_request (fixture, 42)->ended);
    proto_msg_reset (&msg);
}

static void
test_silent_worker_is_dropped_and_its_requests_fail (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    fixture->args.worker_timeout_ms = 300;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 16, 16, true);
    uint32_t prompt [] = { 1, 2 };
    proto_msg_t msg = PROTO_MSG_INIT;
    s_submit (fixture, 42, prompt, 2, 5);
    s_worker_recv_step (fixture, worker, &msg);
    s_worker_answer (fixture, worker, &msg);
    s_tokenizer_recv (fixture, &msg);
    assert_int_equal (msg.kind, PROTO_TOKENS);
    //  The worker falls silent: within about worker_timeout_ms, 503.
    int64_t started = zclock_mono ();
    s_tokenizer_recv (fixture, &msg);
    assert_int_equal (msg.kind, PROTO_ERROR);
    assert_int_equal (msg.request_id, 42);
    assert_int_equal (msg.status, 503);
    assert_non_null (strstr (msg.text, "stopped responding"));
    assert_true (zclock_mono () - started < 1500);
    proto_msg_reset (&msg);
}

static void
test_failed_step_fails_its_requests_with_500 (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 16, 16, true);
    uint32_t prompt [] = { 1, 2 };
    proto_msg_t msg = PROTO_MSG_INIT;
    s_submit (fixture, 43, prompt, 2, 5);
    s_worker_recv_step (fixture, worker, &msg);
    proto_msg_t result = PROTO_MSG_INIT;
    result.kind = PROTO_STEP_RESULT;
    result.step_id = msg.step_id;
    proto_msg_set_text (&result, "token 99999 is out of range");
    assert_int_equal (proto_send (&result, worker->sock), 0);
    proto_msg_reset (&result);
    s_tokenizer_recv (fixture, &msg);
    assert_int_equal (msg.kind, PROTO_ERROR);
    assert_int_equal (msg.status, 500);
    assert_non_null (strstr (msg.text, "99999"));
    proto_msg_reset (&msg);
    //  The worker stays: it forgets 43 and runs the next request.
    s_submit (fixture, 44, prompt, 2, 3);
    worker->manual = false;
    s_run (fixture, s_settled, 0, 0);
    s_assert_output_is_the_workers (fixture, 44, worker->n_ctx);
    assert_true (s_frees (&fixture->steps [1], 43));
}

static void
test_restarted_worker_runs_again_what_had_produced_no_token (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 16, 16, true);
    uint32_t prompt_a [] = { 1, 2 }, prompt_b [] = { 5, 6, 7 };
    proto_msg_t step = PROTO_MSG_INIT;

    //  802 has a token; 801 has just started. The step is lost in the restart.
    s_submit (fixture, 802, prompt_a, 2, 5);
    s_worker_recv_step (fixture, worker, &step);
    s_worker_answer (fixture, worker, &step);
    s_worker_recv_step (fixture, worker, &step);
    s_submit (fixture, 801, prompt_b, 3, 3);
    zclock_sleep (50);
    s_worker_answer (fixture, worker, &step);
    s_worker_recv_step (fixture, worker, &step);
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 801));
    proto_msg_reset (&step);

    //  The same worker says HELLO again, as a restarted worker does: 802 fails, 801
    //  runs again from its start on the worker that is back.
    uint32_t steps_before = fixture->n_steps;
    s_worker_hello (fixture, worker);
    worker->manual = false;
    s_run (fixture, s_settled, 0, 0);
    assert_int_equal (s_request (fixture, 802)->error_status, 503);
    s_assert_output_is_the_workers (fixture, 801, worker->n_ctx);
    const seq_record_t *seq = s_in_step (
        &fixture->steps [s_first_step_of (fixture, 801, steps_before)], 801);
    assert_true (seq->first);
    assert_int_equal (seq->pos, 0);
}

static void
test_result_that_does_not_match_its_step_fails_its_requests (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 16, 16, true);
    uint32_t prompt [] = { 1, 2 };
    proto_msg_t step = PROTO_MSG_INIT;
    s_submit (fixture, 811, prompt, 2, 3);
    s_worker_recv_step (fixture, worker, &step);
    //  The output names another sequence: 811 cannot go on (it must not be run again
    //  with nothing to compute).
    proto_msg_t result = PROTO_MSG_INIT;
    result.kind = PROTO_STEP_RESULT;
    result.step_id = step.step_id;
    result.outs = (proto_step_out_t *) calloc (1, sizeof (proto_step_out_t));
    assert_non_null (result.outs);
    result.n_outs = 1;
    result.outs [0].seq_id = 9999;
    result.outs [0].token = 5;
    assert_int_equal (proto_send (&result, worker->sock), 0);
    proto_msg_reset (&result);
    proto_msg_reset (&step);
    worker->manual = false;
    s_run (fixture, s_settled, 0, 0);
    assert_int_equal (s_request (fixture, 811)->error_status, 500);
    //  The worker goes on with the next request.
    s_submit (fixture, 812, prompt, 2, 3);
    s_run (fixture, s_settled, 0, 0);
    s_assert_output_is_the_workers (fixture, 812, worker->n_ctx);
}

static void
test_request_no_worker_left_can_hold_fails_instead_of_blocking_the_queue (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *large = s_worker_join (fixture, 64, 16, 16, true);
    fake_worker_t *small = s_worker_join (fixture, 16, 16, 16, false);
    uint32_t prompt [30];
    s_fill_prompt (prompt, 30, 1);
    proto_msg_t step = PROTO_MSG_INIT;
    //  821 only fits the large worker, which leaves before it produced a token.
    s_submit (fixture, 821, prompt, 30, 3);
    s_worker_recv_step (fixture, large, &step);
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 821));
    proto_msg_reset (&step);
    s_worker_leave (large);
    //  No worker left can run it: it fails, and 822 behind it runs.
    s_submit (fixture, 822, prompt, 3, 2);
    s_run (fixture, s_settled, 0, 0);
    assert_int_equal (s_request (fixture, 821)->error_status, 503);
    s_assert_output_is_the_workers (fixture, 822, small->n_ctx);
}

static void
test_garbage_is_survived (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    zsock_t *stranger = zsock_new_dealer (fixture->workers);
    zstr_send (stranger, "hello?");
    zstr_sendx (stranger, "two", "frames", NULL);
    zstr_send (fixture->tokenizer, "\x92\x01");
    //  A well-formed message from a peer that never said HELLO is ignored too.
    proto_msg_t result = PROTO_MSG_INIT;
    result.kind = PROTO_STEP_RESULT;
    result.step_id = 1;
    proto_send (&result, stranger);
    zclock_sleep (20);
    zsock_destroy (&stranger);

    fake_worker_t *worker = s_worker_join (fixture, 64, 16, 16, true);
    uint32_t prompt [] = { 1 };
    s_submit (fixture, 51, prompt, 1, 2);
    proto_msg_t step = PROTO_MSG_INIT;
    s_worker_recv_step (fixture, worker, &step);
    //  A result for a step that is not in flight is ignored; the right one counts.
    result.step_id = step.step_id + 100;
    assert_int_equal (proto_send (&result, worker->sock), 0);
    s_worker_answer (fixture, worker, &step);
    proto_msg_reset (&step);
    worker->manual = false;
    s_run (fixture, s_settled, 0, 0);
    s_assert_output_is_the_workers (fixture, 51, worker->n_ctx);
}

static void
test_status_is_published (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    s_worker_join (fixture, 64, 24, 16, false);
    //  A STATUS soon says one worker and its pool.
    s_run (fixture, s_status_workers, 1, 24);
    assert_int_equal (fixture->last_status.kv_blocks_used, 0);
    //  And one every second or so even when nothing changes.
    uint32_t received = fixture->last_status.received;
    zclock_sleep (1200);
    s_run (fixture, s_status_workers, 1, 24);
    while (fixture->last_status.received == received) {
        proto_msg_t msg = PROTO_MSG_INIT;
        char err [256] = "";
        if (proto_recv (fixture->status_sub, &msg, NULL, err, sizeof err) != 0)
            fail_msg ("no STATUS within a while: %s", err);
        s_status_record (fixture, &msg);
        proto_msg_reset (&msg);
    }
}


//  --- Tests: the batching policy ---------------------------------------------------------

static void
test_steps_hold_at_most_the_budget_and_admit_in_arrival_order (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    fixture->args.max_num_batched_tokens = 8;
    fixture->args.max_num_seqs = 3;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 64, 4, true);
    uint32_t lengths [] = { 5, 6, 3, 9, 2, 4 };
    size_t n = sizeof lengths / sizeof lengths [0];
    //  100 (one token to generate) keeps the worker busy while all the others arrive.
    uint32_t one [] = { 1 };
    s_submit (fixture, 100, one, 1, 1);
    proto_msg_t step = PROTO_MSG_INIT;
    s_worker_recv_step (fixture, worker, &step);
    for (size_t i = 0; i < n; i++) {
        uint32_t prompt [16];
        s_fill_prompt (prompt, lengths [i], 10 * (uint32_t) (i + 1));
        s_submit (fixture, 101 + i, prompt, lengths [i], 3);
    }
    zclock_sleep (50);
    s_worker_answer (fixture, worker, &step);
    proto_msg_reset (&step);
    worker->manual = false;
    s_run (fixture, s_settled, 0, 0);

    //  The limits were reached, never passed (s_worker_check_step fails on more), and
    //  requests started in the order they arrived.
    uint32_t most_tokens = 0, most_seqs = 0;
    uint64_t last_started = 0;
    for (uint32_t i = 0; i < fixture->n_steps; i++) {
        const step_record_t *record = &fixture->steps [i];
        if (record->n_tokens > most_tokens)
            most_tokens = record->n_tokens;
        if (record->n_seqs > most_seqs)
            most_seqs = record->n_seqs;
        for (uint32_t k = 0; k < record->n_seqs; k++)
            if (record->seqs [k].first) {
                if (record->seqs [k].seq_id < last_started)
                    fail_msg ("request %" PRIu64 " started after %" PRIu64 ", which "
                              "arrived later", record->seqs [k].seq_id, last_started);
                last_started = record->seqs [k].seq_id;
            }
    }
    assert_int_equal (most_tokens, 8);
    assert_int_equal (most_seqs, 3);
    //  The first step after 100's: 101 whole (5) and the first 3 tokens of 102.
    const step_record_t *first = &fixture->steps [1];
    assert_true (s_frees (first, 100));
    assert_int_equal (first->n_seqs, 2);
    assert_int_equal (first->seqs [0].seq_id, 101);
    assert_int_equal (first->seqs [0].n_tokens, 5);
    assert_true (first->seqs [0].sample);
    assert_int_equal (first->seqs [1].seq_id, 102);
    assert_int_equal (first->seqs [1].n_tokens, 3);
    assert_false (first->seqs [1].sample);
    for (size_t i = 0; i < n; i++)
        s_assert_output_is_the_workers (fixture, 101 + i, worker->n_ctx);
    s_assert_output_is_the_workers (fixture, 100, worker->n_ctx);
}

static void
test_request_waiting_for_blocks_is_not_overtaken (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    //  6 blocks of 4. 701 (12 + 5 tokens) holds 4 of them at its end.
    fake_worker_t *worker = s_worker_join (fixture, 24, 6, 4, false);
    uint32_t prompt [16];
    s_fill_prompt (prompt, 12, 10);
    s_submit (fixture, 701, prompt, 12, 5);
    s_run (fixture, s_has_received, 701, 1);
    //  702 needs 4 blocks for its prompt: it waits for 701. 703 would fit in what is
    //  left, but it came after 702.
    s_fill_prompt (prompt, 16, 40);
    s_submit (fixture, 702, prompt, 16, 2);
    s_fill_prompt (prompt, 2, 70);
    s_submit (fixture, 703, prompt, 2, 2);
    s_run (fixture, s_settled, 0, 0);
    int64_t started_702 = s_start_order (fixture, 702, 0);
    int64_t started_703 = s_start_order (fixture, 703, 0);
    assert_true (started_702 >= 0 && started_703 >= 0);
    if (started_703 < started_702)
        fail_msg ("703 started in step %d, before 702 (step %d), which arrived first",
                  (int) (started_703 / MAX_STEP_SEQS), (int) (started_702 / MAX_STEP_SEQS));
    for (uint64_t id = 701; id <= 703; id++)
        s_assert_output_is_the_workers (fixture, id, worker->n_ctx);
}

static void
test_long_prompt_is_prefilled_in_chunks_while_others_decode (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    fixture->args.max_num_batched_tokens = 8;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 32, 4, false);
    uint32_t short_prompt [] = { 1, 2, 3 };
    uint32_t long_prompt [30];
    s_fill_prompt (long_prompt, 30, 100);
    s_submit (fixture, 201, short_prompt, 3, 24);
    s_run (fixture, s_has_received, 201, 1);
    s_submit (fixture, 202, long_prompt, 30, 3);
    s_run (fixture, s_settled, 0, 0);

    //  From 202's first chunk to its last, 201 decodes one token in every step and 202
    //  takes the rest of the budget; only the last chunk samples.
    int start = s_first_step_of (fixture, 202, 0);
    assert_true (start >= 0);
    uint32_t chunks = 0, prefilled = 0;
    for (uint32_t i = (uint32_t) start; prefilled < 30; i++) {
        assert_true (i < fixture->n_steps);
        const step_record_t *record = &fixture->steps [i];
        const seq_record_t *decode = s_in_step (record, 201);
        const seq_record_t *chunk = s_in_step (record, 202);
        if (!decode || !chunk)
            fail_msg ("step %u: 201 %s, 202 %s", i, decode ? "in" : "missing",
                      chunk ? "in" : "missing");
        assert_int_equal (decode->n_tokens, 1);
        assert_true (decode->sample);
        assert_int_equal (chunk->pos, prefilled);
        assert_int_equal (chunk->first, chunks == 0);
        prefilled += chunk->n_tokens;
        assert_int_equal (chunk->sample, prefilled == 30);
        assert_true (chunk->n_tokens == 7 || prefilled == 30);
        chunks++;
    }
    assert_int_equal (chunks, 5);   //  7 + 7 + 7 + 7 + 2
    s_assert_output_is_the_workers (fixture, 201, worker->n_ctx);
    s_assert_output_is_the_workers (fixture, 202, worker->n_ctx);
}

static void
test_block_tables_and_first_steps_carry_what_the_worker_needs (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 48, 4, false);
    uint32_t bias_tokens [] = { 7, 9 };
    float bias_values [] = { -100.0f, 2.5f };
    proto_sampling_t sampling = {
        .temperature = 0.7f, .top_k = 40, .top_p = 0.9f, .min_p = 0.05f,
        .presence_penalty = 0.5f, .frequency_penalty = 0.25f, .repetition_penalty = 1.1f,
        .seed = 1234, .min_tokens = 2, .n_logprobs = 3,
        .bias_tokens = bias_tokens, .bias_values = bias_values, .n_bias = 2
    };
    proto_sampling_t greedy = { .seed = 77, .n_logprobs = 1 };
    uint32_t prompt [13];
    s_fill_prompt (prompt, 13, 20);
    //  Different sampling; and two requests with the same prompt, the second started
    //  while the first runs (it may share the first's computed prefix, never write it).
    s_submit_with (fixture, 301, prompt, 13, 9, &sampling);
    s_submit_with (fixture, 302, prompt + 1, 7, 12, &greedy);
    s_run (fixture, s_has_received, 301, 2);
    sampling.seed = 4321;
    sampling.min_tokens = 0;
    s_submit_with (fixture, 303, prompt, 13, 6, &sampling);
    s_submit_with (fixture, 304, prompt + 2, 3, 10, NULL);
    s_run (fixture, s_settled, 0, 0);

    //  Each started exactly once (no preemption here), on its first step.
    uint64_t ids [] = { 301, 302, 303, 304 };
    for (size_t i = 0; i < 4; i++) {
        uint32_t firsts = 0;
        int start = s_first_step_of (fixture, ids [i], 0);
        assert_true (start >= 0);
        for (uint32_t k = 0; k < fixture->n_steps; k++) {
            const seq_record_t *seq = s_in_step (&fixture->steps [k], ids [i]);
            if (seq && seq->first) {
                firsts++;
                assert_int_equal (k, start);
            }
        }
        assert_int_equal (firsts, 1);
        s_assert_output_is_the_workers (fixture, ids [i], worker->n_ctx);
    }
}


//  --- Tests: KV blocks -------------------------------------------------------------------

//  Run request `id` with prompt to its end, then request id + 1 with the same prompt,
//  and return where the second's first step starts.
static uint32_t
s_run_same_prompt_twice (fixture_t *fixture, uint64_t id, const uint32_t *prompt,
                         uint32_t n_prompt)
{
    s_submit (fixture, id, prompt, n_prompt, 2);
    s_run (fixture, s_settled, 0, 0);
    uint32_t steps_before = fixture->n_steps;
    s_submit (fixture, id + 1, prompt, n_prompt, 2);
    s_run (fixture, s_settled, 0, 0);
    s_assert_output_is_the_workers (fixture, id, fixture->worker [0].n_ctx);
    s_assert_output_is_the_workers (fixture, id + 1, fixture->worker [0].n_ctx);
    int start = s_first_step_of (fixture, id + 1, steps_before);
    assert_true (start >= 0);
    const seq_record_t *seq = s_in_step (&fixture->steps [start], id + 1);
    assert_true (seq->first);
    assert_true (seq->sample);
    assert_int_equal (seq->pos + seq->n_tokens, n_prompt);
    return seq->pos;
}

//  The latest STATUS says a prefix hits and b prefix queries (blocks).
static bool
s_status_prefix_is (fixture_t *fixture, uint64_t a, uint64_t b)
{
    return fixture->last_status.received > 0 && fixture->last_status.prefix_hits == a
        && fixture->last_status.prefix_queries == b;
}

static void
test_prefix_cache_skips_the_cached_blocks_of_a_prompt (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    s_worker_join (fixture, 64, 32, 4, false);
    uint32_t prompt [12];
    //  10 tokens: blocks 0 and 1 (tokens 0 .. 7) are cached and skipped. A query is
    //  of the prompt's 2 full blocks, for each request.
    s_fill_prompt (prompt, 10, 40);
    assert_int_equal (s_run_same_prompt_twice (fixture, 401, prompt, 10), 8);
    s_run (fixture, s_status_prefix_is, 2, 4);
    //  12 tokens, 3 full blocks: the last token is always computed, so only 2 are
    //  taken from the cache.
    s_fill_prompt (prompt, 12, 60);
    assert_int_equal (s_run_same_prompt_twice (fixture, 403, prompt, 12), 8);
    s_run (fixture, s_status_prefix_is, 4, 10);
}

static void
test_no_prefix_caching_computes_every_prompt_whole (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    fixture->args.no_prefix_caching = true;
    s_start (fixture);
    s_worker_join (fixture, 64, 32, 4, false);
    uint32_t prompt [10];
    s_fill_prompt (prompt, 10, 40);
    assert_int_equal (s_run_same_prompt_twice (fixture, 401, prompt, 10), 0);
    s_run (fixture, s_status_shows, 0, 0);
    assert_int_equal (fixture->last_status.prefix_hits, 0);
}

static void
test_preemption_recomputes_the_newest_request_without_losing_tokens (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    //  6 blocks of 4: three requests of 4 + 10 tokens need 4 blocks each at the end.
    fake_worker_t *worker = s_worker_join (fixture, 24, 6, 4, false);
    uint32_t prompt [4];
    for (uint64_t id = 501; id <= 503; id++) {
        s_fill_prompt (prompt, 4, 10 * (uint32_t) (id - 500));
        s_submit (fixture, id, prompt, 4, 10);
    }
    s_run (fixture, s_settled, 0, 0);

    //  Someone was preempted (s_worker_check_step saw that it was the newest), and
    //  every preempted request came back later with first set, with everything it had
    //  (prompt and generated tokens) to compute from pos on, and sampled next.
    uint32_t preempted = 0;
    for (uint32_t i = 0; i < fixture->n_steps; i++) {
        const step_record_t *record = &fixture->steps [i];
        for (uint32_t k = 0; k < record->n_preempted; k++) {
            uint64_t id = record->preempted [k];
            preempted++;
            int back = s_first_step_of (fixture, id, i);
            if (back < 0)
                fail_msg ("request %" PRIu64 " was preempted and never came back", id);
            const seq_record_t *seq = s_in_step (&fixture->steps [back], id);
            assert_true (seq->first);
            assert_true (seq->known > 4);
            assert_int_equal (seq->pos + seq->n_tokens, seq->known);
            assert_true (seq->sample);
        }
    }
    assert_true (preempted > 0);
    //  A preempted request goes back to the head of the queue: it starts again before
    //  any request preempted earlier and still waiting then.
    for (uint32_t i = 0; i < fixture->n_steps; i++)
        for (uint32_t k = 0; k < fixture->steps [i].n_preempted; k++) {
            uint64_t id = fixture->steps [i].preempted [k];
            int64_t back = s_start_order (fixture, id, i);
            for (uint32_t j = 0; j < i; j++)
                for (uint32_t m = 0; m < fixture->steps [j].n_preempted; m++) {
                    uint64_t earlier = fixture->steps [j].preempted [m];
                    int64_t earlier_back = s_start_order (fixture, earlier, j);
                    if (earlier != id && earlier_back > (int64_t) i * MAX_STEP_SEQS
                    &&  earlier_back < back)
                        fail_msg ("%" PRIu64 ", preempted in step %u, started again "
                                  "after %" PRIu64 ", which was waiting behind it", id, i,
                                  earlier);
                }
        }
    s_run (fixture, s_status_preemptions_are, preempted, 0);
    //  Every request got exactly the tokens the worker sampled, none lost or doubled.
    for (uint64_t id = 501; id <= 503; id++)
        s_assert_output_is_the_workers (fixture, id, worker->n_ctx);
    //  All blocks are back.
    s_run (fixture, s_status_idle, 0, 0);
}

static void
test_cancel_frees_the_blocks_of_a_running_request (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *worker = s_worker_join (fixture, 64, 32, 4, true);
    uint32_t short_prompt [] = { 1 };
    uint32_t long_prompt [10];
    s_fill_prompt (long_prompt, 10, 60);
    proto_msg_t step = PROTO_MSG_INIT, tokens = PROTO_MSG_INIT;

    //  601 runs alone; its decode step is held while we look.
    s_submit (fixture, 601, short_prompt, 1, 20);
    s_worker_recv_step (fixture, worker, &step);
    s_worker_answer (fixture, worker, &step);
    s_tokenizer_recv (fixture, &tokens);
    s_worker_recv_step (fixture, worker, &step);
    s_run (fixture, s_status_shows, 1, 0);
    uint32_t used_before = fixture->last_status.kv_blocks_used;
    assert_int_equal (used_before, 1);

    //  602 starts in the next step (3 more blocks), which is held too.
    s_submit (fixture, 602, long_prompt, 10, 20);
    s_run (fixture, s_status_shows, 1, 1);
    s_worker_answer (fixture, worker, &step);
    s_worker_recv_step (fixture, worker, &step);
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 602));
    s_run (fixture, s_status_shows, 2, 0);
    assert_int_equal (fixture->last_status.kv_blocks_used, used_before + 3);

    //  602 is cancelled while that step runs: its blocks are free at once, the next
    //  step tells the worker to forget it, and its token is dropped.
    s_cancel (fixture, 602);
    s_run (fixture, s_status_shows, 1, 0);
    assert_int_equal (fixture->last_status.kv_blocks_used, used_before);
    s_worker_answer (fixture, worker, &step);
    s_worker_recv_step (fixture, worker, &step);
    assert_true (s_frees (&fixture->steps [fixture->n_steps - 1], 602));
    assert_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 602));
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 601));

    //  601 too (after the token of the step before): nothing is left.
    s_run (fixture, s_has_received, 601, 3);
    s_cancel (fixture, 601);
    zclock_sleep (50);
    s_worker_answer (fixture, worker, &step);
    s_worker_recv_step (fixture, worker, &step);
    assert_int_equal (step.n_seqs, 0);
    assert_true (s_frees (&fixture->steps [fixture->n_steps - 1], 601));
    s_worker_answer (fixture, worker, &step);
    s_run (fixture, s_status_shows, 0, 0);
    assert_int_equal (fixture->last_status.kv_blocks_used, 0);
    //  601 got the tokens of the steps answered before its cancel, no more.
    s_tokenizer_expect_nothing (fixture, 100);
    assert_int_equal (s_request (fixture, 601)->n_received, 3);
    assert_int_equal (s_request (fixture, 602)->n_received, 0);
    proto_msg_reset (&step);
    proto_msg_reset (&tokens);
}

//  --- Tests: which worker runs a request ---------------------------------------------------

//  Two workers driven by hand, `first` and `second`, joined in that order (so the first
//  builds its step first on a tie of load). The prompt gets cached on the second: 900
//  (one token) keeps the first busy while 901 (prompt, 20 tokens) starts on the second;
//  then 900 ends. Afterwards the first is idle and runs nothing; the second runs 901,
//  whose whole prompt is in its prefix cache, and its decode step is in flight (in
//  *second_step, to answer).
static void
s_cache_prompt_on_second (fixture_t *fixture, fake_worker_t *first, fake_worker_t *second,
                          const uint32_t *prompt, uint32_t n_prompt, proto_msg_t *second_step)
{
    proto_msg_t step = PROTO_MSG_INIT;
    uint32_t other [] = { 80, 81, 82 };
    s_submit (fixture, 900, other, 3, 1);
    s_worker_recv_step (fixture, first, &step);
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 900));
    s_submit (fixture, 901, prompt, n_prompt, 20);
    s_worker_recv_step (fixture, second, second_step);
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 901));
    s_worker_answer (fixture, second, second_step);
    s_worker_recv_step (fixture, second, second_step);
    s_worker_answer (fixture, first, &step);
    s_worker_recv_step (fixture, first, &step);
    assert_int_equal (step.n_seqs, 0);
    assert_true (s_frees (&fixture->steps [fixture->n_steps - 1], 900));
    s_worker_answer (fixture, first, &step);
    proto_msg_reset (&step);
}

//  Answer the steps held, then run everything to its end with both workers automatic.
static void
s_settle_both (fixture_t *fixture, fake_worker_t *first, fake_worker_t *second,
               proto_msg_t *first_step, proto_msg_t *second_step)
{
    if (first_step)
        s_worker_answer (fixture, first, first_step);
    if (second_step)
        s_worker_answer (fixture, second, second_step);
    first->manual = false;
    second->manual = false;
    s_run (fixture, s_settled, 0, 0);
}

//  A request whose prompt starts with blocks cached on the second worker goes there,
//  although the first is idle and runs nothing: the first leaves it while the second
//  runs a step, and the second starts it after the cached blocks.
static void
test_request_goes_to_the_worker_that_caches_its_prefix (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *first = s_worker_join (fixture, 64, 32, 4, true);
    fake_worker_t *second = s_worker_join (fixture, 64, 32, 4, true);
    uint32_t prompt [14];
    s_fill_prompt (prompt, 14, 10);
    proto_msg_t step = PROTO_MSG_INIT;
    s_cache_prompt_on_second (fixture, first, second, prompt, 12, &step);

    //  902: 901's 12 tokens (3 blocks) and 2 more.
    uint32_t steps_before = fixture->n_steps;
    s_submit (fixture, 902, prompt, 14, 3);
    s_worker_expect_nothing (first, 50);
    s_worker_answer (fixture, second, &step);
    s_worker_recv_step (fixture, second, &step);
    const seq_record_t *seq = s_in_step (&fixture->steps [fixture->n_steps - 1], 902);
    assert_non_null (seq);
    assert_true (seq->first);
    assert_int_equal (seq->pos, 12);
    assert_int_equal (seq->n_tokens, 2);
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 901));
    s_settle_both (fixture, first, second, NULL, &step);
    //  It never ran anywhere else.
    for (uint32_t i = steps_before; i < fixture->n_steps; i++)
        if (s_in_step (&fixture->steps [i], 902))
            assert_int_equal (fixture->steps [i].worker, s_worker_index (fixture, second));
    s_assert_output_is_the_workers (fixture, 901, second->n_ctx);
    s_assert_output_is_the_workers (fixture, 902, second->n_ctx);
    proto_msg_reset (&step);
}

//  The worker that caches the prefix has no room for the rest of the prompt: the idle
//  worker takes the request at once, and computes it whole.
static void
test_request_goes_by_load_when_the_caching_worker_lacks_room (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *first = s_worker_join (fixture, 64, 32, 4, true);
    //  8 blocks: 901 holds 4 of them; 902 would need 5 more besides its 3 cached.
    fake_worker_t *second = s_worker_join (fixture, 32, 8, 4, true);
    uint32_t prompt [30];
    s_fill_prompt (prompt, 30, 10);
    proto_msg_t step = PROTO_MSG_INIT, first_step = PROTO_MSG_INIT;
    s_cache_prompt_on_second (fixture, first, second, prompt, 12, &step);

    int64_t submitted = zclock_mono ();
    s_submit (fixture, 902, prompt, 30, 3);
    s_worker_recv_step (fixture, first, &first_step);
    assert_true (zclock_mono () - submitted < PREFIX_WAIT_MS);
    const seq_record_t *seq = s_in_step (&fixture->steps [fixture->n_steps - 1], 902);
    assert_non_null (seq);
    assert_true (seq->first);
    assert_int_equal (seq->pos, 0);
    assert_int_equal (seq->n_tokens, 30);
    s_settle_both (fixture, first, second, &first_step, &step);
    s_assert_output_is_the_workers (fixture, 901, second->n_ctx);
    s_assert_output_is_the_workers (fixture, 902, first->n_ctx);
    proto_msg_reset (&step);
    proto_msg_reset (&first_step);
}

//  The worker that caches the prefix stays busy: the idle worker leaves the request to
//  it for PREFIX_WAIT_MS, no longer, then takes it.
static void
test_request_left_to_a_busy_worker_waits_at_most_the_bound (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *first = s_worker_join (fixture, 64, 32, 4, true);
    fake_worker_t *second = s_worker_join (fixture, 64, 32, 4, true);
    uint32_t prompt [14];
    s_fill_prompt (prompt, 14, 10);
    proto_msg_t step = PROTO_MSG_INIT, first_step = PROTO_MSG_INIT;
    s_cache_prompt_on_second (fixture, first, second, prompt, 12, &step);

    int64_t submitted = zclock_mono ();
    s_submit (fixture, 902, prompt, 14, 3);
    s_worker_recv_step (fixture, first, &first_step);
    int64_t waited = zclock_mono () - submitted;
    if (waited < PREFIX_WAIT_MS)
        fail_msg ("902 started on the idle worker after %d ms, before the bound of %d ms",
                  (int) waited, PREFIX_WAIT_MS);
    const seq_record_t *seq = s_in_step (&fixture->steps [fixture->n_steps - 1], 902);
    assert_non_null (seq);
    assert_true (seq->first);
    assert_int_equal (seq->pos, 0);
    s_settle_both (fixture, first, second, &first_step, &step);
    s_assert_output_is_the_workers (fixture, 901, second->n_ctx);
    s_assert_output_is_the_workers (fixture, 902, first->n_ctx);
    proto_msg_reset (&step);
    proto_msg_reset (&first_step);
}

//  A request too long for the small worker waits for the large one, which is busy; the
//  small worker does not wait with it: it runs the short request behind it. Then the
//  large one, free again, runs the long one.
static void
test_request_too_long_for_a_worker_does_not_hold_it_back (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *small = s_worker_join (fixture, 32, 16, 4, true);
    fake_worker_t *large = s_worker_join (fixture, 128, 64, 4, true);
    uint32_t long_prompt [60];
    s_fill_prompt (long_prompt, 60, 10);
    //  950 (40 tokens) fits only the large worker: it keeps it busy.
    proto_msg_t large_step = PROTO_MSG_INIT, small_step = PROTO_MSG_INIT;
    s_submit (fixture, 950, long_prompt, 40, 2);
    s_worker_recv_step (fixture, large, &large_step);
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 950));
    //  951 (60 tokens) waits for the large worker; 952 (8) comes after it.
    s_submit (fixture, 951, long_prompt, 60, 2);
    uint32_t short_prompt [8];
    s_fill_prompt (short_prompt, 8, 200);
    s_submit (fixture, 952, short_prompt, 8, 2);
    s_worker_recv_step (fixture, small, &small_step);
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 952));
    assert_int_equal (s_first_step_of (fixture, 951, 0), -1);
    //  The large worker, answered, takes 951 next.
    s_worker_answer (fixture, large, &large_step);
    s_worker_recv_step (fixture, large, &large_step);
    assert_non_null (s_in_step (&fixture->steps [fixture->n_steps - 1], 951));
    s_settle_both (fixture, small, large, &small_step, &large_step);
    s_assert_output_is_the_workers (fixture, 950, large->n_ctx);
    s_assert_output_is_the_workers (fixture, 951, large->n_ctx);
    s_assert_output_is_the_workers (fixture, 952, small->n_ctx);
    proto_msg_reset (&large_step);
    proto_msg_reset (&small_step);
}

//  A request that no worker caches a whole block of goes by load, as before: at once
//  to the idle worker that runs nothing (its first 3 tokens are 901's, less than a
//  block).
static void
test_request_with_no_cached_prefix_goes_by_load (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    fake_worker_t *first = s_worker_join (fixture, 64, 32, 4, true);
    fake_worker_t *second = s_worker_join (fixture, 64, 32, 4, true);
    uint32_t prompt [14];
    s_fill_prompt (prompt, 14, 10);
    proto_msg_t step = PROTO_MSG_INIT, first_step = PROTO_MSG_INIT;
    s_cache_prompt_on_second (fixture, first, second, prompt, 12, &step);

    prompt [3] = 77;
    int64_t submitted = zclock_mono ();
    s_submit (fixture, 902, prompt, 14, 3);
    s_worker_recv_step (fixture, first, &first_step);
    assert_true (zclock_mono () - submitted < PREFIX_WAIT_MS);
    const seq_record_t *seq = s_in_step (&fixture->steps [fixture->n_steps - 1], 902);
    assert_non_null (seq);
    assert_true (seq->first);
    assert_int_equal (seq->pos, 0);
    s_settle_both (fixture, first, second, &first_step, &step);
    s_assert_output_is_the_workers (fixture, 901, second->n_ctx);
    s_assert_output_is_the_workers (fixture, 902, first->n_ctx);
    proto_msg_reset (&step);
    proto_msg_reset (&first_step);
}

//  A worker driven by hand with raw messages (the strict fake worker above knows one
//  sequence per request): HELLO with a pool of 32 blocks of 4, WELCOME.
static zsock_t *
s_raw_worker_join (fixture_t *fixture)
{
    zsock_t *worker = zsock_new_dealer (fixture->workers);
    assert_non_null (worker);
    zsock_set_rcvtimeo (worker, RECV_TIMEOUT_MS);
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_HELLO;
    msg.version = PROTO_VERSION;
    msg.fingerprint = FINGERPRINT;
    msg.n_ctx = 64;
    msg.n_blocks = 32;
    msg.block_size = 4;
    assert_int_equal (proto_send (&msg, worker), 0);
    char err [256] = "";
    do {
        proto_msg_reset (&msg);
        assert_int_equal (proto_recv (worker, &msg, NULL, err, sizeof err), 0);
    } while (msg.kind == PROTO_HEARTBEAT);
    assert_int_equal (msg.kind, PROTO_WELCOME);
    proto_msg_reset (&msg);
    return worker;
}

//  The next message that is not a heartbeat, which must be a STEP.
static void
s_raw_recv_step (zsock_t *worker, proto_msg_t *msg)
{
    char err [256] = "";
    do {
        proto_msg_reset (msg);
        assert_int_equal (proto_recv (worker, msg, NULL, err, sizeof err), 0);
    } while (msg->kind == PROTO_HEARTBEAT);
    assert_int_equal (msg->kind, PROTO_STEP);
}

//  n > 1, driven by hand (the strict fake worker knows one sequence per request): the
//  prompt is computed once by sequence 0; when its first token comes, sequences 1 and
//  2 fork from its blocks (ids with the top bit set, `first`, seed + index) and each
//  computes the prompt's last token again; the shared last block is copied before it
//  is written; TOKENS carry each sequence's index; a CANCEL of one index ends only it.
static void
test_n_sequences_fork_from_one_prefill (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    zsock_t *worker = s_raw_worker_join (fixture);
    proto_msg_t msg = PROTO_MSG_INIT;
    char err [256] = "";

    uint32_t prompt [6];
    s_fill_prompt (prompt, 6, 10);
    proto_msg_t submit = PROTO_MSG_INIT;
    submit.kind = PROTO_SUBMIT;
    submit.request_id = 77;
    submit.n = 3;
    submit.max_tokens = 3;
    submit.sampling.temperature = 1;
    submit.sampling.seed = 1000;
    assert_int_equal (proto_msg_set_tokens (&submit, prompt, 6), 0);
    assert_int_equal (proto_send (&submit, fixture->tokenizer), 0);
    proto_msg_reset (&submit);

    //  Step 1: only sequence 0, the whole prompt.
    s_raw_recv_step (worker, &msg);
    assert_int_equal (msg.n_seqs, 1);
    assert_true (msg.seqs [0].seq_id == 77);
    assert_int_equal (msg.seqs [0].n_tokens, 6);
    assert_true (msg.seqs [0].first && msg.seqs [0].sample);
    uint32_t parent_last_block = msg.seqs [0].blocks [1];
    proto_msg_t result = PROTO_MSG_INIT;
    result.kind = PROTO_STEP_RESULT;
    result.step_id = msg.step_id;
    result.outs = (proto_step_out_t *) calloc (3, sizeof (proto_step_out_t));
    result.n_outs = 1;
    result.outs [0] = (proto_step_out_t) { .seq_id = 77, .token = 50 };
    assert_int_equal (proto_send (&result, worker), 0);

    //  Step 2: sequence 0 decodes; 1 and 2 start from its blocks at the last prompt
    //  position. The partial last block is held by all three: the first two to write
    //  into it get copies, the last writes into the original.
    s_raw_recv_step (worker, &msg);
    assert_int_equal (msg.n_seqs, 3);
    assert_true (msg.seqs [0].seq_id == 77 && msg.seqs [0].pos == 6);
    assert_int_equal (msg.n_copies, 2);
    assert_true (msg.seqs [0].blocks [1] != parent_last_block);
    assert_true (msg.seqs [1].blocks [1] != parent_last_block);
    assert_true (msg.seqs [1].blocks [1] != msg.seqs [0].blocks [1]);
    assert_true (msg.seqs [2].blocks [1] == parent_last_block);
    assert_true (msg.copies [0] == parent_last_block && msg.copies [2] == parent_last_block);
    for (uint32_t i = 1; i < 3; i++) {
        const proto_step_seq_t *fork = &msg.seqs [i];
        assert_true (fork->seq_id > PROTO_MAX_REQUEST_ID);
        assert_true (fork->first && fork->sample);
        assert_int_equal (fork->pos, 5);
        assert_int_equal (fork->n_tokens, 1);
        assert_int_equal (fork->tokens [0], prompt [5]);
        assert_int_equal (fork->n_prompt, 6);
        assert_true (fork->sampling.seed == 1000 + i);
        //  Block 0, full, stays shared.
        assert_int_equal (fork->n_blocks, 2);
        assert_true (fork->blocks [0] == msg.seqs [0].blocks [0]);
    }
    //  A stop string in sequence 2, before the step's result comes: only it ends; its
    //  token is dropped, and the next step frees it.
    uint64_t fork_2 = msg.seqs [2].seq_id;
    proto_msg_t cancel = PROTO_MSG_INIT;
    cancel.kind = PROTO_CANCEL;
    cancel.request_id = 77;
    cancel.index = 2;
    cancel.only_index = true;
    assert_int_equal (proto_send (&cancel, fixture->tokenizer), 0);
    zclock_sleep (100);
    result.step_id = msg.step_id;
    result.n_outs = 3;
    for (uint32_t i = 0; i < 3; i++)
        result.outs [i] = (proto_step_out_t) { .seq_id = msg.seqs [i].seq_id,
                                               .token = 60 + i };
    assert_int_equal (proto_send (&result, worker), 0);

    //  TOKENS: 50 then 60 for index 0, 61 for index 1, nothing for 2.
    uint32_t seen [3] = { 0 };
    for (uint32_t i = 0; i < 3; i++) {
        proto_msg_t tokens = PROTO_MSG_INIT;
        assert_int_equal (proto_recv (fixture->tokenizer, &tokens, NULL, err, sizeof err), 0);
        assert_int_equal (tokens.kind, PROTO_TOKENS);
        assert_true (tokens.request_id == 77);
        assert_true (tokens.index < 3);
        seen [tokens.index]++;
        proto_msg_reset (&tokens);
    }
    assert_int_equal (seen [0], 2);
    assert_int_equal (seen [1], 1);
    assert_int_equal (seen [2], 0);
    s_raw_recv_step (worker, &msg);
    assert_int_equal (msg.n_seqs, 2);
    assert_int_equal (msg.n_frees, 1);
    assert_true (msg.frees [0] == fork_2);
    proto_msg_reset (&msg);
    proto_msg_reset (&result);
    zsock_destroy (&worker);
}

//  best_of 2, n 1: nothing is sent until both sequences have finished; then the one with
//  the higher cumulative log-probability, whole, as index 0.
static void
test_best_of_sends_the_most_likely_sequences_at_the_end (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_start (fixture);
    zsock_t *worker = s_raw_worker_join (fixture);
    uint32_t prompt [5];
    s_fill_prompt (prompt, 5, 10);
    proto_msg_t submit = PROTO_MSG_INIT;
    submit.kind = PROTO_SUBMIT;
    submit.request_id = 88;
    submit.n = 1;
    submit.best_of = 2;
    submit.max_tokens = 2;
    submit.sampling.temperature = 1;
    assert_int_equal (proto_msg_set_tokens (&submit, prompt, 5), 0);
    assert_int_equal (proto_send (&submit, fixture->tokenizer), 0);
    proto_msg_reset (&submit);

    //  Sequence 0 alone, then both, then both again: tokens 40+i with log-probability
    //  -3 for sequence 0 and -1 for the fork, each step.
    proto_msg_t msg = PROTO_MSG_INIT;
    proto_msg_t result = PROTO_MSG_INIT;
    result.kind = PROTO_STEP_RESULT;
    result.outs = (proto_step_out_t *) calloc (2, sizeof (proto_step_out_t));
    uint64_t fork_id = 0;
    uint32_t expected_seqs [3] = { 1, 2, 1 };
    for (uint32_t step = 0; step < 3; step++) {
        s_raw_recv_step (worker, &msg);
        assert_int_equal (msg.n_seqs, expected_seqs [step]);
        result.step_id = msg.step_id;
        result.n_outs = msg.n_seqs;
        for (uint32_t i = 0; i < msg.n_seqs; i++) {
            bool is_fork = msg.seqs [i].seq_id != 88;
            if (is_fork)
                fork_id = msg.seqs [i].seq_id;
            result.outs [i] = (proto_step_out_t) { .seq_id = msg.seqs [i].seq_id,
                                                   .token = 40 + step + (is_fork? 10: 0),
                                                   .logprob = is_fork? -1.0f: -3.0f };
        }
        assert_int_equal (proto_send (&result, worker), 0);
        if (step < 2)
            s_tokenizer_expect_nothing (fixture, 50);
    }
    assert_true (fork_id > PROTO_MAX_REQUEST_ID);
    //  The fork's two tokens (51, 52), finished by length, as the one answer.
    proto_msg_t tokens = PROTO_MSG_INIT;
    char err [256] = "";
    assert_int_equal (proto_recv (fixture->tokenizer, &tokens, NULL, err, sizeof err), 0);
    assert_int_equal (tokens.kind, PROTO_TOKENS);
    assert_true (tokens.request_id == 88);
    assert_int_equal (tokens.index, 0);
    assert_int_equal (tokens.n_tokens, 2);
    assert_int_equal (tokens.tokens [0], 51);
    assert_int_equal (tokens.tokens [1], 52);
    assert_int_equal (tokens.finish, PROTO_FINISH_LENGTH);
    proto_msg_reset (&tokens);
    s_tokenizer_expect_nothing (fixture, 100);
    proto_msg_reset (&msg);
    proto_msg_reset (&result);
    zsock_destroy (&worker);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_request_without_worker_gets_503,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_wrong_version_model_or_pool_is_rejected,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_request_runs_to_max_tokens_then_another_to_a_stop_token,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_request_too_long_for_a_worker_does_not_hold_it_back,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_context_length_limits_prompt_and_output,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_waiting_requests_run_first_come_first_served_and_cancel_drops_them,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_worker_that_leaves_requeues_unstarted_requests_and_fails_the_others,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_losing_the_last_worker_fails_running_and_waiting_requests,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_silent_worker_is_dropped_and_its_requests_fail,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_failed_step_fails_its_requests_with_500,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_restarted_worker_runs_again_what_had_produced_no_token,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_result_that_does_not_match_its_step_fails_its_requests,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_request_no_worker_left_can_hold_fails_instead_of_blocking_the_queue,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_garbage_is_survived, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_status_is_published, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_steps_hold_at_most_the_budget_and_admit_in_arrival_order,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_request_waiting_for_blocks_is_not_overtaken,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_long_prompt_is_prefilled_in_chunks_while_others_decode,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_block_tables_and_first_steps_carry_what_the_worker_needs,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_prefix_cache_skips_the_cached_blocks_of_a_prompt,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_no_prefix_caching_computes_every_prompt_whole,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_preemption_recomputes_the_newest_request_without_losing_tokens,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_n_sequences_fork_from_one_prefill, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (
            test_best_of_sends_the_most_likely_sequences_at_the_end, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cancel_frees_the_blocks_of_a_running_request,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_request_goes_to_the_worker_that_caches_its_prefix, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_request_goes_by_load_when_the_caching_worker_lacks_room,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (
            test_request_left_to_a_busy_worker_waits_at_most_the_bound,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_request_with_no_cached_prefix_goes_by_load,
                                         s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
