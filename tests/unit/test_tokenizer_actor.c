/*  test_tokenizer_actor — the tokenizer actor between a fake frontend and a fake scheduler,
    on stories260K's vocabulary: prompts become the ids llama.cpp gives, tokens become
    text, errors and cancels pass through, PEER_DOWN fails what is open, garbage is
    survived. Protocol 3's fields: prompts as token ids, the beam-search fields,
    include_stop_str_in_output, keep_special_tokens and the queue time.

    stories260K's ids used below: 1 <s> (BOS), 2 </s> (EOS), 432 ",", 383 " there",
    286 " was"; other texts are tokenized by the actor itself (TOKENIZE).
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

//  TOKENS from the scheduler for sequence index, with the queue time queue_us.
static void
s_tokens_for (fixture_t *fixture, uint64_t id, uint32_t index, const uint32_t *tokens,
              uint32_t n, proto_finish_t finish, uint64_t queue_us)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_TOKENS;
    msg.request_id = id;
    msg.index = index;
    proto_msg_set_tokens (&msg, tokens, n);
    msg.finish = finish;
    msg.prompt_tokens = 5;
    msg.queue_us = queue_us;
    assert_int_equal (proto_send_to (&msg, fixture->scheduler, fixture->tokenizer_id), 0);
    proto_msg_reset (&msg);
}

//  Sends msg (a GENERATE filled by the caller) from the frontend and resets it.
static void
s_send_generate (fixture_t *fixture, proto_msg_t *msg)
{
    msg->kind = PROTO_GENERATE;
    assert_int_equal (proto_send (msg, fixture->frontend), 0);
    proto_msg_reset (msg);
}

//  Nothing comes to this socket (a ROUTER when is_router) within 200 ms.
static void
s_expect_nothing (zsock_t *socket, bool is_router)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    char err [256];
    zsock_set_rcvtimeo (socket, 200);
    zframe_t *from = NULL;
    int rc = proto_recv (socket, &msg, is_router? &from: NULL, err, sizeof err);
    if (rc == 0)
        fail_msg ("expected nothing, got %s", proto_kind_name (msg.kind));
    zframe_destroy (&from);
    proto_msg_reset (&msg);
    zsock_set_rcvtimeo (socket, RECV_TIMEOUT_MS);
}

//  The ids of text (no BOS), from the actor's own TOKENIZE; returns how many (<= max).
static uint32_t
s_ids (fixture_t *fixture, const char *text, uint32_t *ids, uint32_t max)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_TOKENIZE;
    msg.request_id = 999;
    msg.add_special_tokens = false;
    proto_msg_set_text (&msg, text);
    assert_int_equal (proto_send (&msg, fixture->frontend), 0);
    s_frontend_expect (fixture, PROTO_TOKENS, &msg);
    assert_true (msg.n_tokens > 0 && msg.n_tokens <= max);
    uint32_t n = msg.n_tokens;
    memcpy (ids, msg.tokens, n * sizeof (uint32_t));
    proto_msg_reset (&msg);
    return n;
}

//  The OUTPUT that the TOKENS (tokens, finish) of sequence 0 give.
static void
s_output_of (fixture_t *fixture, uint64_t id, const uint32_t *tokens, uint32_t n,
             proto_finish_t finish, proto_msg_t *output)
{
    s_tokens_for (fixture, id, 0, tokens, n, finish, 0);
    s_frontend_expect (fixture, PROTO_OUTPUT, output);
    assert_int_equal (output->request_id, id);
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

//  A prompt as token ids goes to the scheduler exactly as it is (no BOS); the rest of the
//  request works as for a text prompt, with prompt_tokens the ids given.
static void
test_token_prompt (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    proto_msg_t msg = PROTO_MSG_INIT;
    uint32_t prompt [] = { 403, 407, 261, 378, 2, 1 };
    proto_msg_set_tokens (&msg, prompt, 6);
    msg.request_id = 10;
    msg.max_tokens = 7;
    const char *stops [] = { " was" };
    proto_msg_set_stops (&msg, stops, 1);
    s_send_generate (fixture, &msg);
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    assert_int_equal (msg.request_id, 10);
    assert_int_equal (msg.n_tokens, 6);
    assert_memory_equal (msg.tokens, prompt, sizeof prompt);
    assert_int_equal (msg.max_tokens, 7);
    assert_int_equal (msg.n_stop_tokens, 1);
    assert_int_equal (msg.stop_tokens [0], 2);
    uint32_t tokens [] = { 432, 383, 286 };
    s_output_of (fixture, 10, tokens, 2, PROTO_FINISH_NONE, &msg);
    assert_string_equal (msg.text, ", there");
    assert_int_equal (msg.prompt_tokens, 6);
    s_output_of (fixture, 10, tokens + 2, 1, PROTO_FINISH_NONE, &msg);
    assert_string_equal (msg.text, "");
    assert_int_equal (msg.finish, PROTO_FINISH_STOP);
    assert_int_equal (msg.prompt_tokens, 6);
    s_scheduler_expect (fixture, PROTO_CANCEL, &msg);
    assert_int_equal (msg.request_id, 10);

    //  An empty text with the ids is the same; so is a single id.
    msg.request_id = 11;
    proto_msg_set_text (&msg, "");
    proto_msg_set_tokens (&msg, prompt + 1, 1);
    s_send_generate (fixture, &msg);
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    assert_int_equal (msg.request_id, 11);
    assert_int_equal (msg.n_tokens, 1);
    assert_int_equal (msg.tokens [0], 407);
    proto_msg_reset (&msg);
}

//  Bad token prompts: an id outside the vocabulary (named, with its position), ids with
//  a text or a chat request too. An empty id array is an empty text prompt.
static void
test_token_prompt_refused (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    proto_msg_t msg = PROTO_MSG_INIT;
    uint32_t bad [] = { 403, 407, 512, 100000 };
    proto_msg_set_tokens (&msg, bad, 4);
    msg.request_id = 12;
    s_send_generate (fixture, &msg);
    s_frontend_expect (fixture, PROTO_ERROR, &msg);
    assert_int_equal (msg.request_id, 12);
    assert_int_equal (msg.status, 400);
    assert_string_equal (msg.text, "prompt: token 512 (at 2) is not in the vocabulary "
                         "(of 512 tokens)");

    uint32_t good [] = { 403, 407 };
    proto_msg_set_tokens (&msg, good, 2);
    proto_msg_set_text (&msg, "Once");
    msg.request_id = 13;
    s_send_generate (fixture, &msg);
    s_frontend_expect (fixture, PROTO_ERROR, &msg);
    assert_int_equal (msg.request_id, 13);
    assert_int_equal (msg.status, 400);
    assert_non_null (strstr (msg.text, "both as token ids and as text"));

    proto_msg_set_tokens (&msg, good, 2);
    proto_msg_set_chat (&msg, "{\"messages\": []}");
    msg.request_id = 14;
    s_send_generate (fixture, &msg);
    s_frontend_expect (fixture, PROTO_ERROR, &msg);
    assert_int_equal (msg.request_id, 14);
    assert_int_equal (msg.status, 400);
    assert_non_null (strstr (msg.text, "both as token ids and as a chat request"));
    //  Nothing went to the scheduler.
    s_expect_nothing (fixture->scheduler, true);

    //  An empty array of ids: what an empty text gives (BOS alone).
    msg.request_id = 15;
    proto_msg_set_text (&msg, "");
    s_send_generate (fixture, &msg);
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    uint32_t n_text = msg.n_tokens;
    uint32_t first_text = n_text? msg.tokens [0]: 0;
    proto_msg_t empty = PROTO_MSG_INIT;
    empty.kind = PROTO_GENERATE;
    empty.request_id = 16;
    empty.tokens = good;                //  borrowed: empty is sent, never reset
    empty.n_tokens = 0;
    assert_int_equal (proto_send (&empty, fixture->frontend), 0);
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    assert_int_equal (msg.request_id, 16);
    assert_int_equal (msg.n_tokens, n_text);
    assert_int_equal (n_text, 1);
    assert_int_equal (msg.tokens [0], first_text);
    assert_int_equal (first_text, 1);
    proto_msg_reset (&msg);
}

//  Beam search: its fields go on in SUBMIT with n and best_of; its n sequences come back
//  whole, one TOKENS each, and each is cut at its first stop string (finish stop),
//  without any CANCEL (they have ended already). A hypothesis the search did not find
//  comes back empty, with finish length.
static void
test_beam_search_whole_sequences (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    proto_msg_t msg = PROTO_MSG_INIT;
    proto_msg_set_text (&msg, "Once upon a time");
    msg.request_id = 20;
    msg.n = 3;
    msg.best_of = 4;
    msg.use_beam_search = true;
    msg.length_penalty = 0.5f;
    msg.early_stopping = PROTO_EARLY_STOPPING_NEVER;
    const char *stops [] = { "little" };
    proto_msg_set_stops (&msg, stops, 1);
    s_send_generate (fixture, &msg);
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    assert_int_equal (msg.request_id, 20);
    assert_int_equal (msg.n, 3);
    assert_int_equal (msg.best_of, 4);
    assert_true (msg.use_beam_search);
    assert_true (msg.length_penalty == 0.5f);
    assert_int_equal (msg.early_stopping, PROTO_EARLY_STOPPING_NEVER);

    uint32_t first [32], second [32];
    uint32_t n_first = s_ids (fixture, "there was a little girl", first, 31);
    uint32_t n_second = s_ids (fixture, "there was a dog", second, 31);
    second [n_second++] = 2;            //  EOS ends it
    s_tokens_for (fixture, 20, 0, first, n_first, PROTO_FINISH_LENGTH, 0);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_int_equal (msg.index, 0);
    assert_string_equal (msg.text, " there was a ");
    assert_int_equal (msg.finish, PROTO_FINISH_STOP);
    assert_true (msg.completion_tokens < n_first);
    s_tokens_for (fixture, 20, 1, second, n_second, PROTO_FINISH_STOP, 0);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_int_equal (msg.index, 1);
    assert_string_equal (msg.text, " there was a dog");
    assert_int_equal (msg.finish, PROTO_FINISH_STOP);
    assert_int_equal (msg.completion_tokens, n_second);
    s_tokens_for (fixture, 20, 2, NULL, 0, PROTO_FINISH_LENGTH, 0);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_int_equal (msg.index, 2);
    assert_string_equal (msg.text, "");
    assert_int_equal (msg.finish, PROTO_FINISH_LENGTH);
    assert_int_equal (msg.completion_tokens, 0);
    s_expect_nothing (fixture->scheduler, true);
    //  All finished: the request is forgotten.
    s_tokens_for (fixture, 20, 0, first, 1, PROTO_FINISH_NONE, 0);
    s_expect_nothing (fixture->frontend, false);
    proto_msg_reset (&msg);
}

//  include_stop_str_in_output: the text ends right after the stop string, streamed (a
//  stop string over two tokens) and whole; without it, right before.
static void
test_include_stop_str_in_output (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    uint32_t tokens [] = { 432, 383, 286 };     //  ", there was"
    const char *stops [] = { "there was" };
    for (int include = 0; include <= 1; include++) {
        proto_msg_t msg = PROTO_MSG_INIT;
        uint64_t id = 30 + include;
        proto_msg_set_text (&msg, "Once upon a time");
        msg.request_id = id;
        msg.include_stop_str_in_output = include;
        proto_msg_set_stops (&msg, stops, 1);
        s_send_generate (fixture, &msg);
        s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
        s_output_of (fixture, id, tokens, 1, PROTO_FINISH_NONE, &msg);
        assert_string_equal (msg.text, ",");
        s_output_of (fixture, id, tokens + 1, 1, PROTO_FINISH_NONE, &msg);
        assert_string_equal (msg.text, " ");                  //  "there" held back
        assert_int_equal (msg.finish, PROTO_FINISH_NONE);
        s_output_of (fixture, id, tokens + 2, 1, PROTO_FINISH_NONE, &msg);
        assert_string_equal (msg.text, include? "there was": "");
        assert_int_equal (msg.finish, PROTO_FINISH_STOP);
        assert_int_equal (msg.completion_tokens, 3);
        s_scheduler_expect (fixture, PROTO_CANCEL, &msg);
        assert_int_equal (msg.request_id, id);
        proto_msg_reset (&msg);
    }
    //  Whole sequences (best_of > n): the same cut, in one OUTPUT each.
    proto_msg_t msg = PROTO_MSG_INIT;
    proto_msg_set_text (&msg, "Once upon a time");
    msg.request_id = 32;
    msg.n = 1;
    msg.best_of = 2;
    msg.include_stop_str_in_output = true;
    const char *little [] = { "a lit" };
    proto_msg_set_stops (&msg, little, 1);
    s_send_generate (fixture, &msg);
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    uint32_t whole [32];
    uint32_t n_whole = s_ids (fixture, "there was a little girl", whole, 31);
    s_output_of (fixture, 32, whole, n_whole, PROTO_FINISH_LENGTH, &msg);
    assert_string_equal (msg.text, " there was a lit");
    assert_int_equal (msg.finish, PROTO_FINISH_STOP);
    s_expect_nothing (fixture->scheduler, true);
    proto_msg_reset (&msg);
}

//  keep_special_tokens writes special tokens (here <s>) as their text; the token that ends
//  the sequence (EOS) is still left out unless include_stop_str_in_output.
static void
test_keep_special_tokens (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    uint32_t tokens [] = { 432, 1, 383, 2 };    //  ",", <s>, " there", </s>
    struct {
        bool keep_special;
        bool include_stop;
        const char *text;
    } cases [] = {
        { false, false, ", there" },
        { true, false, ",<s> there" },
        { false, true, ", there" },             //  EOS has no text to write
        { true, true, ",<s> there</s>" },
    };
    for (uint32_t i = 0; i < 4; i++) {
        proto_msg_t msg = PROTO_MSG_INIT;
        uint64_t id = 40 + i;
        proto_msg_set_text (&msg, "Once upon a time");
        msg.request_id = id;
        msg.keep_special_tokens = cases [i].keep_special;
        msg.include_stop_str_in_output = cases [i].include_stop;
        s_send_generate (fixture, &msg);
        s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
        s_output_of (fixture, id, tokens, 2, PROTO_FINISH_NONE, &msg);
        char text [64];
        snprintf (text, sizeof text, "%s", msg.text);
        s_output_of (fixture, id, tokens + 2, 2, PROTO_FINISH_STOP, &msg);
        strncat (text, msg.text, sizeof text - strlen (text) - 1);
        if (strcmp (text, cases [i].text) != 0)
            fail_msg ("case %u: got '%s', expected '%s'", i, text, cases [i].text);
        assert_int_equal (msg.finish, PROTO_FINISH_STOP);
        assert_int_equal (msg.completion_tokens, 4);
        proto_msg_reset (&msg);
    }
}

//  A stop token from stop_token_ids that has text (" was"): left out, or kept with
//  include_stop_str_in_output.
static void
test_stop_token_text (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    uint32_t tokens [] = { 432, 383, 286 };     //  ", there was"
    for (int include = 0; include <= 1; include++) {
        proto_msg_t msg = PROTO_MSG_INIT;
        uint64_t id = 50 + include;
        proto_msg_set_text (&msg, "Once upon a time");
        msg.request_id = id;
        proto_msg_set_stop_tokens (&msg, tokens + 2, 1);
        msg.include_stop_str_in_output = include;
        s_send_generate (fixture, &msg);
        s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
        assert_int_equal (msg.n_stop_tokens, 2);
        assert_int_equal (msg.stop_tokens [1], 286);
        s_output_of (fixture, id, tokens, 2, PROTO_FINISH_NONE, &msg);
        assert_string_equal (msg.text, ", there");
        s_output_of (fixture, id, tokens + 2, 1, PROTO_FINISH_STOP, &msg);
        assert_string_equal (msg.text, include? " was": "");
        assert_int_equal (msg.finish, PROTO_FINISH_STOP);
        assert_int_equal (msg.completion_tokens, 3);
        proto_msg_reset (&msg);
    }
}

//  The queue time of the first TOKENS goes on the request's first OUTPUT, once, even
//  when that OUTPUT's text is all held back (a possible stop string) and when the first
//  TOKENS is for another sequence than index 0.
static void
test_queue_time_forwarded_once (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    proto_msg_t msg = PROTO_MSG_INIT;
    proto_msg_set_text (&msg, "Once upon a time");
    msg.request_id = 60;
    const char *stops [] = { " there was a dog" };
    proto_msg_set_stops (&msg, stops, 1);
    s_send_generate (fixture, &msg);
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    uint32_t tokens [] = { 383, 286, 432 };     //  " there", " was", ","
    s_tokens_for (fixture, 60, 0, tokens, 1, PROTO_FINISH_NONE, 1234);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_string_equal (msg.text, "");
    assert_int_equal (msg.queue_us, 1234);
    s_tokens_for (fixture, 60, 0, tokens + 1, 1, PROTO_FINISH_NONE, 0);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_int_equal (msg.queue_us, 0);
    s_tokens_for (fixture, 60, 0, tokens + 2, 1, PROTO_FINISH_LENGTH, 99);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_string_equal (msg.text, " there was,");
    assert_int_equal (msg.queue_us, 0);

    //  n = 2: whichever sequence's OUTPUT goes first carries it.
    proto_msg_set_text (&msg, "Once upon a time");
    msg.request_id = 61;
    msg.n = 2;
    s_send_generate (fixture, &msg);
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    s_tokens_for (fixture, 61, 1, tokens, 1, PROTO_FINISH_NONE, 500);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_int_equal (msg.index, 1);
    assert_int_equal (msg.queue_us, 500);
    s_tokens_for (fixture, 61, 0, tokens, 1, PROTO_FINISH_NONE, 500);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_int_equal (msg.index, 0);
    assert_int_equal (msg.queue_us, 0);

    //  A first TOKENS that gives no OUTPUT (for a sequence the request does not have):
    //  the next OUTPUT carries its queue time.
    proto_msg_set_text (&msg, "Once upon a time");
    msg.request_id = 62;
    s_send_generate (fixture, &msg);
    s_scheduler_expect (fixture, PROTO_SUBMIT, &msg);
    s_tokens_for (fixture, 62, 5, tokens, 1, PROTO_FINISH_NONE, 777);
    s_expect_nothing (fixture->frontend, false);
    s_tokens_for (fixture, 62, 0, tokens, 1, PROTO_FINISH_NONE, 0);
    s_frontend_expect (fixture, PROTO_OUTPUT, &msg);
    assert_int_equal (msg.queue_us, 777);
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
        cmocka_unit_test_setup_teardown (test_token_prompt, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_token_prompt_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_beam_search_whole_sequences, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_include_stop_str_in_output, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_keep_special_tokens, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_stop_token_text, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_queue_time_forwarded_once, s_setup,
                                         s_teardown),
        cmocka_unit_test (test_bad_model_is_a_start_error),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
