/*  test_worker — the worker actor against a fake scheduler, on stories260K: it says HELLO
    (with its KV pool) until welcomed, computes steps of several sequences over the block
    tables the step names (llama.cpp's greedy tokens), copies blocks and forgets freed
    sequences, keeps its heartbeat, fails a bad step cleanly, says BYE on $TERM and
    STOPPED when refused.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "gguf.h"
#include "protocol.h"
#include "worker.h"

#define RECV_TIMEOUT_MS 5000

typedef struct {
    worker_args_t args;
    char model [512], endpoint [64];
    zsock_t *scheduler;             //  ROUTER, as the scheduler
    zframe_t *worker_id;
    zactor_t *worker;
} fixture_t;

static int
s_setup (void **state)
{
    static int counter = 0;
    counter++;
    fixture_t *fixture = (fixture_t *) calloc (1, sizeof (fixture_t));
    const char *shared = getenv ("ZLLM_SHARED_DIR");
    snprintf (fixture->model, sizeof fixture->model, "%s/models/stories260K.gguf",
              shared ? shared : "../shared");
    snprintf (fixture->endpoint, sizeof fixture->endpoint, "inproc://worker-test-%d", counter);
    fixture->scheduler = zsock_new_router (fixture->endpoint);
    zsock_set_rcvtimeo (fixture->scheduler, RECV_TIMEOUT_MS);
    fixture->args.model_path = fixture->model;
    fixture->args.scheduler_endpoint = fixture->endpoint;
    fixture->args.device = "cpu:3";
    fixture->args.n_ctx = 128;
    fixture->args.block_size = 16;
    fixture->args.heartbeat_ms = 100;
    fixture->args.timeout_ms = 2000;
    fixture->worker = zactor_new (worker_actor, &fixture->args);
    assert_string_equal (fixture->args.error, "");
    *state = fixture;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    zactor_destroy (&fixture->worker);
    zsock_destroy (&fixture->scheduler);
    zframe_destroy (&fixture->worker_id);
    free (fixture);
    return 0;
}

//  The next message of that kind from the worker; heartbeats are skipped.
static void
s_expect (fixture_t *fixture, proto_kind_t kind, proto_msg_t *msg)
{
    char err [256] = "";
    while (true) {
        proto_msg_reset (msg);
        zframe_destroy (&fixture->worker_id);
        if (proto_recv (fixture->scheduler, msg, &fixture->worker_id, err, sizeof err) != 0)
            fail_msg ("expected %s: %s", proto_kind_name (kind), err);
        if (msg->kind != PROTO_HEARTBEAT || kind == PROTO_HEARTBEAT)
            break;
    }
    assert_int_equal (msg->kind, kind);
}

static void
s_send (fixture_t *fixture, proto_msg_t *msg)
{
    assert_int_equal (proto_send_to (msg, fixture->scheduler, fixture->worker_id), 0);
}

static void
s_welcome (fixture_t *fixture)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    s_expect (fixture, PROTO_HELLO, &msg);
    proto_msg_reset (&msg);
    msg.kind = PROTO_WELCOME;
    s_send (fixture, &msg);
}

static void
test_hello_then_steps (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    proto_msg_t msg = PROTO_MSG_INIT;
    //  HELLO says who it is; it is repeated until WELCOME.
    s_expect (fixture, PROTO_HELLO, &msg);
    assert_int_equal (msg.version, PROTO_VERSION);
    assert_string_equal (msg.text, "cpu:3");
    //  The default pool: 4 sequences of the context, in blocks of 16.
    assert_int_equal (msg.block_size, 16);
    assert_int_equal (msg.n_blocks, 4 * 128 / 16);
    assert_int_equal (msg.n_ctx, 128);
    assert_int_equal (msg.n_vocab, 512);
    char err [256];
    gguf_t *gguf = gguf_open (fixture->model, err, sizeof err);
    assert_non_null (gguf);
    assert_true (msg.fingerprint == gguf_fingerprint (gguf));
    gguf_destroy (&gguf);
    s_expect (fixture, PROTO_HELLO, &msg);
    proto_msg_reset (&msg);
    msg.kind = PROTO_WELCOME;
    s_send (fixture, &msg);

    //  "Once upon a time" -> llama.cpp's greedy ", there", for two sequences at once,
    //  in blocks the step names (not in order).
    uint32_t prompt [] = { 1, 403, 407, 261, 378 };
    uint32_t blocks_a [] = { 5 }, blocks_b [] = { 2 };
    proto_step_seq_t seqs [2] = {
        { .seq_id = 10, .pos = 0, .tokens = prompt, .n_tokens = 5, .blocks = blocks_a,
          .n_blocks = 1, .n_prompt = 5, .first = true, .sample = true },
        { .seq_id = 11, .pos = 0, .tokens = prompt, .n_tokens = 5, .blocks = blocks_b,
          .n_blocks = 1, .n_prompt = 5, .first = true, .sample = true },
    };
    seqs [1].sampling.n_logprobs = 3;
    proto_msg_t step = PROTO_MSG_INIT;
    step.kind = PROTO_STEP;
    step.step_id = 1;
    step.seqs = seqs;
    step.n_seqs = 2;
    s_send (fixture, &step);
    s_expect (fixture, PROTO_STEP_RESULT, &msg);
    assert_int_equal (msg.step_id, 1);
    assert_int_equal (msg.n_outs, 2);
    assert_true (msg.outs [0].seq_id == 10 && msg.outs [1].seq_id == 11);
    assert_int_equal (msg.outs [0].token, 432);
    assert_int_equal (msg.outs [1].token, 432);
    assert_true (msg.outs [0].logprob < 0 && msg.outs [0].logprob > -5);
    assert_int_equal (msg.outs [0].n_top, 0);
    //  Top log-probabilities when asked: the chosen (greedy) token first.
    assert_int_equal (msg.outs [1].n_top, 3);
    assert_int_equal (msg.outs [1].top_tokens [0], 432);
    assert_true (msg.outs [1].top_logprobs [0] == msg.outs [1].logprob);
    assert_true (msg.outs [1].top_logprobs [1] <= msg.outs [1].top_logprobs [0]);

    //  Sequence 10 goes on; sequence 11 is forked into 12 by copying its block, then
    //  freed: 12 must go on exactly as 10 does.
    uint32_t comma = 432;
    uint32_t blocks_c [] = { 7 };
    uint32_t copies [] = { 2, 7 };
    uint64_t frees [] = { 11 };
    seqs [0] = (proto_step_seq_t) { .seq_id = 10, .pos = 5, .tokens = &comma, .n_tokens = 1,
                                    .blocks = blocks_a, .n_blocks = 1, .n_prompt = 5,
                                    .sample = true };
    seqs [1] = (proto_step_seq_t) { .seq_id = 12, .pos = 5, .tokens = &comma, .n_tokens = 1,
                                    .blocks = blocks_c, .n_blocks = 1, .n_prompt = 5,
                                    .first = true, .sample = true, .history = prompt,
                                    .n_history = 5 };
    //  12 ranks as beam search does: the processed distribution's 4 most likely tokens,
    //  the greedy one first.
    seqs [1].sampling.beam_candidates = 4;
    step.step_id = 2;
    step.copies = copies;
    step.n_copies = 1;
    step.frees = frees;
    step.n_frees = 1;
    s_send (fixture, &step);
    s_expect (fixture, PROTO_STEP_RESULT, &msg);
    assert_int_equal (msg.n_outs, 2);
    assert_true (msg.outs [0].seq_id == 10);
    assert_int_equal (msg.outs [0].token, 383);
    assert_int_equal (msg.outs [1].token, 383);
    assert_int_equal (msg.outs [1].n_top, 4);
    assert_int_equal (msg.outs [1].top_tokens [0], 383);
    assert_true (msg.outs [1].top_logprobs [0] == msg.outs [1].logprob);
    assert_true (msg.outs [1].top_logprobs [3] <= msg.outs [1].top_logprobs [2]);
    step.copies = NULL;
    step.n_copies = 0;
    step.frees = NULL;
    step.n_frees = 0;

    //  A freed sequence is forgotten: running it again without `first` fails the step.
    seqs [0] = (proto_step_seq_t) { .seq_id = 11, .pos = 5, .tokens = &comma, .n_tokens = 1,
                                    .blocks = blocks_b, .n_blocks = 1, .n_prompt = 5,
                                    .sample = true };
    step.step_id = 3;
    step.n_seqs = 1;
    s_send (fixture, &step);
    s_expect (fixture, PROTO_STEP_RESULT, &msg);
    assert_int_equal (msg.n_outs, 0);
    assert_non_null (strstr (msg.text, "never started"));

    //  A bad step fails as a whole, with the reason; the worker goes on: a block out of
    //  the pool, a token out of the vocabulary, a table too short, bad sampling.
    uint32_t far_block [] = { 1000 };
    uint32_t bad_token = 100000;
    uint32_t history16 [16] = { 1, 403, 407, 261, 378, 432, 383, 286 };
    proto_step_seq_t bad [] = {
        { .seq_id = 20, .pos = 0, .tokens = &comma, .n_tokens = 1, .blocks = far_block,
          .n_blocks = 1, .first = true, .sample = true },
        { .seq_id = 21, .pos = 0, .tokens = &bad_token, .n_tokens = 1, .blocks = blocks_a,
          .n_blocks = 1, .first = true, .sample = true },
        { .seq_id = 22, .pos = 16, .tokens = &comma, .n_tokens = 1, .blocks = blocks_a,
          .n_blocks = 1, .first = true, .sample = true, .history = history16,
          .n_history = 16 },
        //  A first step past position 0 must bring the tokens before it.
        { .seq_id = 24, .pos = 5, .tokens = &comma, .n_tokens = 1, .blocks = blocks_a,
          .n_blocks = 1, .n_prompt = 5, .first = true, .sample = true },
        { .seq_id = 23, .pos = 0, .tokens = &comma, .n_tokens = 1, .blocks = blocks_a,
          .n_blocks = 1, .first = true, .sample = true,
          .sampling = { .temperature = -1 } },
    };
    for (uint32_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        seqs [0] = bad [i];
        step.step_id = 4 + i;
        s_send (fixture, &step);
        s_expect (fixture, PROTO_STEP_RESULT, &msg);
        assert_int_equal (msg.n_outs, 0);
        assert_true (msg.text && strlen (msg.text) > 0);
    }
    //  After all that, sequence 10 still gives llama.cpp's next token.
    uint32_t there = 383;
    seqs [0] = (proto_step_seq_t) { .seq_id = 10, .pos = 6, .tokens = &there, .n_tokens = 1,
                                    .blocks = blocks_a, .n_blocks = 1, .n_prompt = 5,
                                    .sample = true };
    step.step_id = 10;
    s_send (fixture, &step);
    s_expect (fixture, PROTO_STEP_RESULT, &msg);
    assert_int_equal (msg.n_outs, 1);
    assert_int_equal (msg.outs [0].token, 286);

    //  Heartbeats keep coming; garbage from the scheduler side is survived.
    s_expect (fixture, PROTO_HEARTBEAT, &msg);
    zframe_t *id = zframe_dup (fixture->worker_id);
    zframe_send (&id, fixture->scheduler, ZFRAME_MORE);
    zstr_send (fixture->scheduler, "garbage");
    s_expect (fixture, PROTO_HEARTBEAT, &msg);

    //  $TERM: BYE.
    zactor_destroy (&fixture->worker);
    s_expect (fixture, PROTO_BYE, &msg);
    proto_msg_reset (&msg);
}

static void
test_reject_stops_the_worker (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    proto_msg_t msg = PROTO_MSG_INIT;
    s_expect (fixture, PROTO_HELLO, &msg);
    proto_msg_reset (&msg);
    msg.kind = PROTO_REJECT;
    proto_msg_set_text (&msg, "the worker serves another model");
    s_send (fixture, &msg);
    proto_msg_reset (&msg);
    zsock_set_rcvtimeo (fixture->worker, RECV_TIMEOUT_MS);
    char *said = zstr_recv (fixture->worker);
    assert_non_null (said);
    assert_string_equal (said, "STOPPED");
    zstr_free (&said);
    assert_non_null (strstr (fixture->args.error, "another model"));
}

static void
test_silent_scheduler_means_hello_again (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_welcome (fixture);
    //  We stay silent: after timeout_ms (2 s) the worker says HELLO again.
    proto_msg_t msg = PROTO_MSG_INIT;
    s_expect (fixture, PROTO_HELLO, &msg);
    proto_msg_reset (&msg);
}

static void
test_bad_model_is_a_start_error (void **state)
{
    (void) state;
    const char *shared = getenv ("ZLLM_SHARED_DIR");
    char vocab_only [512];
    snprintf (vocab_only, sizeof vocab_only, "%s/models/vocab/ggml-vocab-llama-spm.gguf",
              shared ? shared : "../shared");
    const char *paths [] = { "/nonexistent.gguf", vocab_only };
    for (size_t i = 0; i < 2; i++) {
        worker_args_t args = { .model_path = paths [i],
                               .scheduler_endpoint = "inproc://worker-bad",
                               .device = "cpu:0" };
        zactor_t *actor = zactor_new (worker_actor, &args);
        assert_non_null (actor);
        assert_true (strlen (args.error) > 0);
        zactor_destroy (&actor);
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_hello_then_steps, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_reject_stops_the_worker, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_silent_scheduler_means_hello_again, s_setup,
                                         s_teardown),
        cmocka_unit_test (test_bad_model_is_a_start_error),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
