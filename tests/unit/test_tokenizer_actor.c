/*  test_tokenizer_actor — the tokenizer actor between a fake frontend and a fake scheduler,
    on stories260K's vocabulary: prompts become the ids llama.cpp gives, tokens become
    text, errors and cancels pass through, PEER_DOWN fails what is open, garbage is
    survived.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "protocol.h"
#include "tokenizer_actor.h"

#define RECV_TIMEOUT_MS 3000

typedef struct {
    tokenizer_args_t args;
    char model [512], inbox [64], scheduler_endpoint [64];
    zsock_t *scheduler;             //  ROUTER, as the scheduler's inbox
    zactor_t *tokenizer;
    zsock_t *frontend;              //  DEALER, as the frontend
    zframe_t *tokenizer_id;         //  routing id of the tokenizer at the scheduler
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
    snprintf (fixture->inbox, sizeof fixture->inbox, "inproc://tok-inbox-%d", counter);
    snprintf (fixture->scheduler_endpoint, sizeof fixture->scheduler_endpoint,
              "inproc://tok-sched-%d", counter);
    fixture->scheduler = zsock_new_router (fixture->scheduler_endpoint);
    zsock_set_rcvtimeo (fixture->scheduler, RECV_TIMEOUT_MS);
    fixture->args.model_path = fixture->model;
    fixture->args.inbox_endpoint = fixture->inbox;
    fixture->args.scheduler_endpoint = fixture->scheduler_endpoint;
    fixture->tokenizer = zactor_new (tokenizer_actor, &fixture->args);
    assert_string_equal (fixture->args.error, "");
    fixture->frontend = zsock_new_dealer (fixture->inbox);
    zsock_set_rcvtimeo (fixture->frontend, RECV_TIMEOUT_MS);
    *state = fixture;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    zsock_destroy (&fixture->frontend);
    zactor_destroy (&fixture->tokenizer);
    zsock_destroy (&fixture->scheduler);
    zframe_destroy (&fixture->tokenizer_id);
    free (fixture);
    return 0;
}

static void
s_generate (fixture_t *fixture, uint64_t id, const char *prompt)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_GENERATE;
    msg.request_id = id;
    msg.max_tokens = 8;
    msg.sampling.temperature = 0.5f;
    msg.sampling.seed = 42;
    proto_msg_set_text (&msg, prompt);
    assert_int_equal (proto_send (&msg, fixture->frontend), 0);
    proto_msg_reset (&msg);
}

static void
s_scheduler_expect (fixture_t *fixture, proto_kind_t kind, proto_msg_t *msg)
{
    char err [256] = "";
    proto_msg_reset (msg);
    zframe_destroy (&fixture->tokenizer_id);
    if (proto_recv (fixture->scheduler, msg, &fixture->tokenizer_id, err, sizeof err) != 0)
        fail_msg ("scheduler: expected %s: %s", proto_kind_name (kind), err);
    assert_int_equal (msg->kind, kind);
}

static void
s_frontend_expect (fixture_t *fixture, proto_kind_t kind, proto_msg_t *msg)
{
    char err [256] = "";
    proto_msg_reset (msg);
    if (proto_recv (fixture->frontend, msg, NULL, err, sizeof err) != 0)
        fail_msg ("frontend: expected %s: %s", proto_kind_name (kind), err);
    assert_int_equal (msg->kind, kind);
}

static void
s_tokens (fixture_t *fixture, uint64_t id, const uint32_t *tokens, uint32_t n,
          proto_finish_t finish)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_TOKENS;
    msg.request_id = id;
    proto_msg_set_tokens (&msg, tokens, n);
    msg.finish = finish;
    msg.prompt_tokens = 5;
    assert_int_equal (proto_send_to (&msg, fixture->scheduler, fixture->tokenizer_id), 0);
    proto_msg_reset (&msg);
}

static void
test_prompt_to_tokens_to_text (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    s_generate (fixture, 1, "Once upon a time");
    proto_msg_t msg = PROTO_MSG_INIT;
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    //  llama.cpp's ids for this prompt (../shared/reference/greedy.json), BOS first.
    uint32_t expected [] = { 1, 403, 407, 261, 378 };
    assert_int_equal (msg.request_id, 1);
    assert_int_equal (msg.n_tokens, 5);
    assert_memory_equal (msg.tokens, expected, sizeof expected);
    assert_int_equal (msg.max_tokens, 8);
    assert_int_equal (msg.sampling.seed, 42);
    assert_true (msg.sampling.temperature == 0.5f);
    assert_int_equal (msg.n_stop_tokens, 1);
    assert_int_equal (msg.stop_tokens [0], 2);

    //  ", there was" then EOS: text, then the finish with no text for the stop token.
    uint32_t first [] = { 432, 383 };
    s_tokens (fixture, 1, first, 2, PROTO_FINISH_NONE);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_string_equal (msg.text, ", there");
    assert_int_equal (msg.finish, PROTO_FINISH_NONE);
    assert_int_equal (msg.completion_tokens, 2);
    assert_int_equal (msg.prompt_tokens, 5);
    uint32_t last [] = { 286, 2 };
    s_tokens (fixture, 1, last, 2, PROTO_FINISH_STOP);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_string_equal (msg.text, " was");
    assert_int_equal (msg.finish, PROTO_FINISH_STOP);
    assert_int_equal (msg.completion_tokens, 4);

    //  The request is finished: more tokens for it are ignored.
    s_tokens (fixture, 1, first, 1, PROTO_FINISH_NONE);
    proto_msg_reset (&msg);
    zsock_set_rcvtimeo (fixture->frontend, 200);
    char err [256];
    assert_int_equal (proto_recv (fixture->frontend, &msg, NULL, err, sizeof err), -1);
    proto_msg_reset (&msg);
}

//  ignore_eos leaves the model's end token out of the stop tokens, not the request's
//  own stop_token_ids; ids outside the vocabulary are refused with 400.
static void
test_ignore_eos_and_token_ids (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_GENERATE;
    msg.request_id = 3;
    msg.ignore_eos = true;
    uint32_t own_stop = 300;
    proto_msg_set_stop_tokens (&msg, &own_stop, 1);
    proto_msg_set_text (&msg, "Once upon a time");
    assert_int_equal (proto_send (&msg, fixture->frontend), 0);
    proto_msg_reset (&msg);
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    assert_int_equal (msg.request_id, 3);
    assert_int_equal (msg.n_stop_tokens, 1);
    assert_int_equal (msg.stop_tokens [0], 300);
    proto_msg_reset (&msg);

    //  stories260K has 512 tokens. (The requests below borrow their arrays: they are
    //  sent, never reset.)
    uint32_t bias_token = 512;
    float bias_value = 1;
    proto_msg_t bad_bias = PROTO_MSG_INIT;
    bad_bias.kind = PROTO_GENERATE;
    bad_bias.request_id = 4;
    bad_bias.sampling.bias_tokens = &bias_token;
    bad_bias.sampling.bias_values = &bias_value;
    bad_bias.sampling.n_bias = 1;
    bad_bias.text = (char *) "Once";
    assert_int_equal (proto_send (&bad_bias, fixture->frontend), 0);
    s_frontend_expect (fixture, PROTO_ERROR, &msg);
    assert_int_equal (msg.request_id, 4);
    assert_int_equal (msg.status, 400);
    assert_non_null (strstr (msg.text, "logit_bias: token 512"));
    proto_msg_reset (&msg);

    uint32_t stop_token = 1000;
    proto_msg_t bad_stop = PROTO_MSG_INIT;
    bad_stop.kind = PROTO_GENERATE;
    bad_stop.request_id = 5;
    bad_stop.stop_tokens = &stop_token;
    bad_stop.n_stop_tokens = 1;
    bad_stop.text = (char *) "Once";
    assert_int_equal (proto_send (&bad_stop, fixture->frontend), 0);
    s_frontend_expect (fixture, PROTO_ERROR, &msg);
    assert_int_equal (msg.status, 400);
    assert_non_null (strstr (msg.text, "stop_token_ids: token 1000"));
    proto_msg_reset (&msg);
}

static void
test_errors_and_cancels_pass_through (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    proto_msg_t msg = PROTO_MSG_INIT;
    s_generate (fixture, 2, "The little dog");
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);

    proto_msg_t error = PROTO_MSG_INIT;
    error.kind = PROTO_ERROR;
    error.request_id = 2;
    error.status = 400;
    proto_msg_set_text (&error, "too long");
    proto_send_to (&error, fixture->scheduler, fixture->tokenizer_id);
    proto_msg_reset (&error);
    s_frontend_expect (fixture, PROTO_ERROR, &msg);
    assert_int_equal (msg.request_id, 2);
    assert_int_equal (msg.status, 400);
    assert_string_equal (msg.text, "too long");

    s_generate (fixture, 3, "The little dog");
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    proto_msg_t cancel = PROTO_MSG_INIT;
    cancel.kind = PROTO_CANCEL;
    cancel.request_id = 3;
    proto_send (&cancel, fixture->frontend);
    s_scheduler_expect (fixture, PROTO_CANCEL, &msg);
    assert_int_equal (msg.request_id, 3);
    proto_msg_reset (&msg);
}

static void
test_peer_down_and_garbage (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    proto_msg_t msg = PROTO_MSG_INIT;
    //  Garbage from both sides first.
    zstr_send (fixture->frontend, "not msgpack");
    zstr_sendx (fixture->frontend, "two", "frames", NULL);
    s_generate (fixture, 4, "Lily and Tom");
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    zframe_t *id = zframe_dup (fixture->tokenizer_id);
    zframe_send (&id, fixture->scheduler, ZFRAME_MORE);
    zstr_send (fixture->scheduler, "\xc1\xc1\xc1");

    //  The scheduler is gone: the open request fails with 503, so do new ones.
    zstr_send (fixture->tokenizer, "PEER_DOWN");
    s_frontend_expect (fixture, PROTO_ERROR, &msg);
    assert_int_equal (msg.request_id, 4);
    assert_int_equal (msg.status, 503);
    s_generate (fixture, 5, "Lily and Tom");
    s_frontend_expect (fixture, PROTO_ERROR, &msg);
    assert_int_equal (msg.request_id, 5);
    assert_int_equal (msg.status, 503);
    proto_msg_reset (&msg);
}

static void
test_bad_model_is_a_start_error (void **state)
{
    (void) state;
    tokenizer_args_t args = { .model_path = "/nonexistent.gguf",
                              .inbox_endpoint = "inproc://tok-bad",
                              .scheduler_endpoint = "inproc://tok-bad-sched" };
    zactor_t *actor = zactor_new (tokenizer_actor, &args);
    assert_non_null (actor);
    assert_true (strlen (args.error) > 0);
    zactor_destroy (&actor);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_prompt_to_tokens_to_text, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_ignore_eos_and_token_ids, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_errors_and_cancels_pass_through, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_peer_down_and_garbage, s_setup, s_teardown),
        cmocka_unit_test (test_bad_model_is_a_start_error),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
