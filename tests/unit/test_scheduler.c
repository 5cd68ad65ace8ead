/*  test_scheduler — the scheduler actor against a fake tokenizer and fake workers.

    The test holds the other ends of every socket: a DEALER as the tokenizer, DEALERs as
    workers, a SUB on the status. Each case drives one rule of scheduler.h and reads what
    the scheduler sends, with a timeout, so a wrong scheduler fails instead of hanging.
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
#define RECV_TIMEOUT_MS 3000

typedef struct {
    scheduler_args_t args;
    char inbox [64], workers [64], status [64];
    zactor_t *scheduler;
    zsock_t *tokenizer;
} fixture_t;

static int
s_setup (void **state)
{
    static int counter = 0;
    fixture_t *fixture = (fixture_t *) calloc (1, sizeof (fixture_t));
    counter++;
    snprintf (fixture->inbox, sizeof fixture->inbox, "inproc://sched-inbox-%d", counter);
    snprintf (fixture->workers, sizeof fixture->workers, "inproc://sched-workers-%d", counter);
    snprintf (fixture->status, sizeof fixture->status, "inproc://sched-status-%d", counter);
    fixture->args.inbox_endpoint = fixture->inbox;
    fixture->args.worker_endpoint = fixture->workers;
    fixture->args.status_endpoint = fixture->status;
    fixture->args.model_fingerprint = FINGERPRINT;
    fixture->args.heartbeat_ms = 100;
    fixture->args.worker_timeout_ms = 400;
    fixture->scheduler = zactor_new (scheduler_actor, &fixture->args);
    assert_non_null (fixture->scheduler);
    assert_string_equal (fixture->args.error, "");
    fixture->tokenizer = zsock_new_dealer (fixture->inbox);
    assert_non_null (fixture->tokenizer);
    zsock_set_rcvtimeo (fixture->tokenizer, RECV_TIMEOUT_MS);
    *state = fixture;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    zsock_destroy (&fixture->tokenizer);
    zactor_destroy (&fixture->scheduler);
    free (fixture);
    return 0;
}

//  Receive one message of the expected kind, skipping heartbeats.
static void
s_expect (zsock_t *socket, proto_kind_t kind, proto_msg_t *msg)
{
    char err [256] = "";
    while (true) {
        proto_msg_reset (msg);
        int rc = proto_recv (socket, msg, NULL, err, sizeof err);
        if (rc != 0)
            fail_msg ("expected %s, got nothing or garbage: %s", proto_kind_name (kind), err);
        if (msg->kind != PROTO_HEARTBEAT)
            break;
    }
    if (msg->kind != kind)
        fail_msg ("expected %s, got %s", proto_kind_name (kind), proto_kind_name (msg->kind));
}

//  Nothing but heartbeats arrives within ms.
static void
s_expect_nothing (zsock_t *socket, int ms)
{
    int64_t deadline = zclock_mono () + ms;
    zpoller_t *poller = zpoller_new (socket, NULL);
    while (zclock_mono () < deadline) {
        if (zpoller_wait (poller, (int) (deadline - zclock_mono ())) != socket)
            continue;
        proto_msg_t msg = PROTO_MSG_INIT;
        char err [256];
        assert_int_equal (proto_recv (socket, &msg, NULL, err, sizeof err), 0);
        if (msg.kind != PROTO_HEARTBEAT)
            fail_msg ("expected nothing, got %s", proto_kind_name (msg.kind));
        proto_msg_reset (&msg);
    }
    zpoller_destroy (&poller);
}

static zsock_t *
s_worker_join (fixture_t *fixture, uint32_t n_slots, uint32_t n_ctx)
{
    zsock_t *worker = zsock_new_dealer (fixture->workers);
    zsock_set_rcvtimeo (worker, RECV_TIMEOUT_MS);
    proto_msg_t hello = PROTO_MSG_INIT;
    hello.kind = PROTO_HELLO;
    hello.version = PROTO_VERSION;
    hello.fingerprint = FINGERPRINT;
    hello.n_slots = n_slots;
    hello.n_ctx = n_ctx;
    hello.n_vocab = 100;
    proto_msg_set_text (&hello, "cpu:9");
    assert_int_equal (proto_send (&hello, worker), 0);
    proto_msg_reset (&hello);
    proto_msg_t welcome = PROTO_MSG_INIT;
    s_expect (worker, PROTO_WELCOME, &welcome);
    proto_msg_reset (&welcome);
    return worker;
}

static void
s_submit (fixture_t *fixture, uint64_t id, const uint32_t *prompt, uint32_t n_prompt,
          uint32_t max_tokens)
{
    proto_msg_t submit = PROTO_MSG_INIT;
    submit.kind = PROTO_SUBMIT;
    submit.request_id = id;
    proto_msg_set_tokens (&submit, prompt, n_prompt);
    uint32_t stop = 99;
    proto_msg_set_stop_tokens (&submit, &stop, 1);
    submit.max_tokens = max_tokens;
    assert_int_equal (proto_send (&submit, fixture->tokenizer), 0);
    proto_msg_reset (&submit);
}

//  Answer a step: one token per sequence, in order.
static void
s_answer (zsock_t *worker, const proto_msg_t *step, const uint32_t *tokens)
{
    proto_msg_t result = PROTO_MSG_INIT;
    result.kind = PROTO_STEP_RESULT;
    result.step_id = step->step_id;
    result.outs = (proto_step_out_t *) calloc (step->n_seqs, sizeof (proto_step_out_t));
    result.n_outs = step->n_seqs;
    for (uint32_t i = 0; i < step->n_seqs; i++) {
        result.outs [i].slot = step->seqs [i].slot;
        result.outs [i].token = tokens [i];
        result.outs [i].logprob = -0.5f;
    }
    assert_int_equal (proto_send (&result, worker), 0);
    proto_msg_reset (&result);
}

static void
test_no_worker_is_503 (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    uint32_t prompt [] = { 1, 2, 3 };
    s_submit (fixture, 7, prompt, 3, 4);
    proto_msg_t msg = PROTO_MSG_INIT;
    s_expect (fixture->tokenizer, PROTO_ERROR, &msg);
    assert_int_equal (msg.request_id, 7);
    assert_int_equal (msg.status, 503);
    proto_msg_reset (&msg);
}

static void
test_wrong_workers_are_rejected (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    struct { uint32_t version; uint64_t fingerprint; uint32_t slots; const char *why; }
    cases [] = {
        { PROTO_VERSION + 1, FINGERPRINT, 4, "protocol version" },
        { PROTO_VERSION, FINGERPRINT + 1, 4, "another model" },
        { PROTO_VERSION, FINGERPRINT, 0, "not a usable worker" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        zsock_t *worker = zsock_new_dealer (fixture->workers);
        zsock_set_rcvtimeo (worker, RECV_TIMEOUT_MS);
        proto_msg_t hello = PROTO_MSG_INIT;
        hello.kind = PROTO_HELLO;
        hello.version = cases [i].version;
        hello.fingerprint = cases [i].fingerprint;
        hello.n_slots = cases [i].slots;
        hello.n_ctx = 64;
        proto_msg_set_text (&hello, "cpu:1");
        proto_send (&hello, worker);
        proto_msg_reset (&hello);
        proto_msg_t reply = PROTO_MSG_INIT;
        s_expect (worker, PROTO_REJECT, &reply);
        assert_non_null (strstr (reply.text, cases [i].why));
        proto_msg_reset (&reply);
        zsock_destroy (&worker);
    }
}

static void
test_request_runs_to_length_then_stop (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    zsock_t *worker = s_worker_join (fixture, 2, 64);
    uint32_t prompt [] = { 1, 2, 3 };
    s_submit (fixture, 11, prompt, 3, 3);

    proto_msg_t step = PROTO_MSG_INIT, tokens = PROTO_MSG_INIT;
    //  Prefill: the whole prompt at position 0.
    s_expect (worker, PROTO_STEP, &step);
    assert_int_equal (step.n_seqs, 1);
    assert_int_equal (step.seqs [0].pos, 0);
    assert_int_equal (step.seqs [0].n_tokens, 3);
    assert_memory_equal (step.seqs [0].tokens, prompt, sizeof prompt);
    uint32_t token = 5;
    s_answer (worker, &step, &token);
    s_expect (fixture->tokenizer, PROTO_TOKENS, &tokens);
    assert_int_equal (tokens.request_id, 11);
    assert_int_equal (tokens.n_tokens, 1);
    assert_int_equal (tokens.tokens [0], 5);
    assert_int_equal (tokens.finish, PROTO_FINISH_NONE);
    assert_int_equal (tokens.prompt_tokens, 3);

    //  Decodes: one token at the next position each step; the third is the last.
    for (uint32_t i = 0; i < 2; i++) {
        s_expect (worker, PROTO_STEP, &step);
        assert_int_equal (step.seqs [0].pos, 3 + i);
        assert_int_equal (step.seqs [0].n_tokens, 1);
        assert_int_equal (step.seqs [0].tokens [0], 5 + i);
        token = 6 + i;
        s_answer (worker, &step, &token);
        s_expect (fixture->tokenizer, PROTO_TOKENS, &tokens);
        assert_int_equal (tokens.tokens [0], 6 + i);
        assert_int_equal (tokens.finish, i == 1 ? PROTO_FINISH_LENGTH : PROTO_FINISH_NONE);
    }
    s_expect_nothing (worker, 200);

    //  A stop token ends the next request with "stop".
    s_submit (fixture, 12, prompt, 3, 10);
    s_expect (worker, PROTO_STEP, &step);
    token = 99;
    s_answer (worker, &step, &token);
    s_expect (fixture->tokenizer, PROTO_TOKENS, &tokens);
    assert_int_equal (tokens.request_id, 12);
    assert_int_equal (tokens.finish, PROTO_FINISH_STOP);
    proto_msg_reset (&step);
    proto_msg_reset (&tokens);
    zsock_destroy (&worker);
}

static void
test_context_limits (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    zsock_t *worker = s_worker_join (fixture, 1, 4);
    uint32_t prompt [5] = { 1, 2, 3, 4, 5 };
    proto_msg_t msg = PROTO_MSG_INIT;

    //  Longer than the context: 400 that says the numbers.
    s_submit (fixture, 21, prompt, 5, 2);
    s_expect (fixture->tokenizer, PROTO_ERROR, &msg);
    assert_int_equal (msg.status, 400);
    assert_non_null (strstr (msg.text, "4 tokens"));
    assert_non_null (strstr (msg.text, "5 tokens"));
    s_submit (fixture, 22, prompt, 0, 2);
    s_expect (fixture->tokenizer, PROTO_ERROR, &msg);
    assert_int_equal (msg.status, 400);

    //  max_tokens 0 runs to the end of the context: 3 + 1 = 4 tokens -> length.
    s_submit (fixture, 23, prompt, 3, 0);
    proto_msg_t step = PROTO_MSG_INIT;
    s_expect (worker, PROTO_STEP, &step);
    uint32_t token = 7;
    s_answer (worker, &step, &token);
    proto_msg_reset (&step);
    s_expect (fixture->tokenizer, PROTO_TOKENS, &msg);
    assert_int_equal (msg.finish, PROTO_FINISH_LENGTH);
    proto_msg_reset (&msg);
    zsock_destroy (&worker);
}

static void
test_first_come_first_served_and_cancel (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    zsock_t *worker = s_worker_join (fixture, 1, 64);
    uint32_t prompt [] = { 1, 2 };
    s_submit (fixture, 31, prompt, 2, 2);
    s_submit (fixture, 32, prompt, 2, 1);
    proto_msg_t step = PROTO_MSG_INIT, tokens = PROTO_MSG_INIT;

    //  One slot: only 31 runs; 32 waits.
    s_expect (worker, PROTO_STEP, &step);
    assert_int_equal (step.n_seqs, 1);
    uint32_t token = 8;
    s_answer (worker, &step, &token);
    s_expect (fixture->tokenizer, PROTO_TOKENS, &tokens);
    assert_int_equal (tokens.request_id, 31);

    //  31 is cancelled while its next step is in flight: its token is dropped, 32 runs.
    s_expect (worker, PROTO_STEP, &step);
    proto_msg_t cancel = PROTO_MSG_INIT;
    cancel.kind = PROTO_CANCEL;
    cancel.request_id = 31;
    proto_send (&cancel, fixture->tokenizer);
    zclock_sleep (50);
    s_answer (worker, &step, &token);
    s_expect (worker, PROTO_STEP, &step);
    assert_int_equal (step.seqs [0].pos, 0);
    s_answer (worker, &step, &token);
    s_expect (fixture->tokenizer, PROTO_TOKENS, &tokens);
    assert_int_equal (tokens.request_id, 32);
    assert_int_equal (tokens.finish, PROTO_FINISH_LENGTH);

    //  A cancel of a waiting request and of an unknown one are quiet.
    cancel.request_id = 12345;
    proto_send (&cancel, fixture->tokenizer);
    s_expect_nothing (fixture->tokenizer, 100);
    proto_msg_reset (&step);
    proto_msg_reset (&tokens);
    zsock_destroy (&worker);
}

static void
test_worker_loss_fails_its_requests (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    uint32_t prompt [] = { 1, 2 };
    proto_msg_t msg = PROTO_MSG_INIT;

    //  BYE: the running request gets 503.
    zsock_t *worker = s_worker_join (fixture, 1, 64);
    s_submit (fixture, 41, prompt, 2, 5);
    s_expect (worker, PROTO_STEP, &msg);
    proto_msg_t bye = PROTO_MSG_INIT;
    bye.kind = PROTO_BYE;
    proto_send (&bye, worker);
    s_expect (fixture->tokenizer, PROTO_ERROR, &msg);
    assert_int_equal (msg.request_id, 41);
    assert_int_equal (msg.status, 503);
    zsock_destroy (&worker);

    //  Silence: after worker_timeout_ms the running request gets 503.
    worker = s_worker_join (fixture, 1, 64);
    s_submit (fixture, 42, prompt, 2, 5);
    s_expect (worker, PROTO_STEP, &msg);
    int64_t started = zclock_mono ();
    s_expect (fixture->tokenizer, PROTO_ERROR, &msg);
    assert_int_equal (msg.request_id, 42);
    assert_int_equal (msg.status, 503);
    assert_non_null (strstr (msg.text, "stopped responding"));
    assert_true (zclock_mono () - started < 2000);
    zsock_destroy (&worker);

    //  A failed step: its requests get 500 with the worker's reason.
    worker = s_worker_join (fixture, 1, 64);
    s_submit (fixture, 43, prompt, 2, 5);
    s_expect (worker, PROTO_STEP, &msg);
    proto_msg_t result = PROTO_MSG_INIT;
    result.kind = PROTO_STEP_RESULT;
    result.step_id = msg.step_id;
    proto_msg_set_text (&result, "token 99999 is out of range");
    proto_send (&result, worker);
    proto_msg_reset (&result);
    s_expect (fixture->tokenizer, PROTO_ERROR, &msg);
    assert_int_equal (msg.status, 500);
    assert_non_null (strstr (msg.text, "99999"));
    proto_msg_reset (&msg);
    zsock_destroy (&worker);
}

static void
test_garbage_is_survived (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    zsock_t *stranger = zsock_new_dealer (fixture->workers);
    zstr_send (stranger, "hello?");
    zstr_sendx (stranger, "two", "frames", NULL);
    zstr_send (fixture->tokenizer, "\x92\x01");
    //  A well-formed message from a peer that never said HELLO is ignored too.
    proto_msg_t result = PROTO_MSG_INIT;
    result.kind = PROTO_STEP_RESULT;
    result.step_id = 1;
    proto_send (&result, stranger);
    zsock_destroy (&stranger);

    zsock_t *worker = s_worker_join (fixture, 1, 64);
    uint32_t prompt [] = { 1 };
    s_submit (fixture, 51, prompt, 1, 1);
    proto_msg_t msg = PROTO_MSG_INIT;
    s_expect (worker, PROTO_STEP, &msg);
    uint32_t token = 3;
    s_answer (worker, &msg, &token);
    s_expect (fixture->tokenizer, PROTO_TOKENS, &msg);
    assert_int_equal (msg.request_id, 51);
    proto_msg_reset (&msg);
    zsock_destroy (&worker);
}

static void
test_status_is_published (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    zsock_t *status = zsock_new_sub (fixture->status, "");
    zsock_set_rcvtimeo (status, RECV_TIMEOUT_MS);
    zsock_t *worker = s_worker_join (fixture, 2, 64);
    //  Within about a second a STATUS says one worker.
    proto_msg_t msg = PROTO_MSG_INIT;
    bool seen = false;
    int64_t deadline = zclock_mono () + 2500;
    while (!seen && zclock_mono () < deadline) {
        s_expect (status, PROTO_STATUS, &msg);
        seen = msg.workers == 1;
    }
    assert_true (seen);
    proto_msg_reset (&msg);
    zsock_destroy (&worker);
    zsock_destroy (&status);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_no_worker_is_503, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_wrong_workers_are_rejected, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_request_runs_to_length_then_stop, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_context_limits, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_first_come_first_served_and_cancel, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_worker_loss_fails_its_requests, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_garbage_is_survived, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_status_is_published, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
