/*  test_frontend — the HTTP actor, driven by a real HTTP client (curl, HTTP/1.1 and h2c
    with prior knowledge) against a fake tokenizer (a ROUTER in the test thread) and a
    fake scheduler (a PUB for STATUS): completions and chat completions, whole and
    streamed (server-sent events, parsed here event by event), tool calls, errors before
    and during a stream, clients that go away.

    Each test starts its own actor on an ephemeral port. curl runs as a child process
    (popen) while the test thread plays the tokenizer; every wait is a poll with a
    timeout, never a fixed sleep.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <czmq.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frontend.h"
#include "protocol.h"

#define MODEL           "test-model"
#define MAX_BODY        4096
#define WAIT_MSEC       5000

typedef struct {
    zactor_t *actor;
    frontend_args_t args;
    zsock_t *router;                //  the fake tokenizer
    zsock_t *publisher;             //  the fake scheduler's STATUS
    zframe_t *peer;                 //  routing id of the frontend's DEALER
    char tokenizer_endpoint [80];
    char status_endpoint [80];
} fixture_t;

//  One curl run in the background.
typedef struct {
    FILE *stream;
    char body_path [64];
} call_t;

//  What curl got.
typedef struct {
    int status;                     //  HTTP status, 0 when there was no response
    char version [8];               //  "1.1", "2"
    int exit_code;                  //  curl's exit code (7: could not connect, 28: timeout)
    char content_type [64];         //  "application/json", "text/event-stream", "" when none
    char *body;
    json_t *json;                   //  the body parsed, or NULL
} response_t;

static int s_fixture_count = 0;

//  LeakSanitizer suppressions for h2o's own per-thread caches: see frontend.c.


//  --------------------------------------------------------------------------
//  Fixture

static fixture_t *
s_fixture_new (bool enable_auto_tool_choice)
{
    fixture_t *fixture = (fixture_t *) calloc (1, sizeof (fixture_t));
    assert_non_null (fixture);
    s_fixture_count++;
    snprintf (fixture->tokenizer_endpoint, sizeof fixture->tokenizer_endpoint,
              "inproc://test-tok-%d-%d", (int) getpid (), s_fixture_count);
    snprintf (fixture->status_endpoint, sizeof fixture->status_endpoint,
              "inproc://test-status-%d-%d", (int) getpid (), s_fixture_count);
    fixture->router = zsock_new (ZMQ_ROUTER);
    assert_non_null (fixture->router);
    zsock_set_router_mandatory (fixture->router, 1);
    assert_int_equal (zsock_bind (fixture->router, "%s", fixture->tokenizer_endpoint), 0);
    fixture->publisher = zsock_new (ZMQ_PUB);
    assert_non_null (fixture->publisher);
    assert_int_equal (zsock_bind (fixture->publisher, "%s", fixture->status_endpoint), 0);

    fixture->args.host = "127.0.0.1";
    fixture->args.port = 0;
    fixture->args.tokenizer_endpoint = fixture->tokenizer_endpoint;
    fixture->args.status_endpoint = fixture->status_endpoint;
    fixture->args.model_name = MODEL;
    fixture->args.n_ctx = 512;
    fixture->args.max_body_bytes = MAX_BODY;
    fixture->args.enable_auto_tool_choice = enable_auto_tool_choice;
    fixture->actor = zactor_new (frontend_actor, &fixture->args);
    assert_non_null (fixture->actor);
    assert_string_equal (fixture->args.error, "");
    assert_true (fixture->args.bound_port != 0);
    return fixture;
}

static int
setup (void **state)
{
    *state = s_fixture_new (false);
    return 0;
}

//  A server started with --enable-auto-tool-choice.
static int
setup_auto_tools (void **state)
{
    *state = s_fixture_new (true);
    return 0;
}

static int
teardown (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    zactor_destroy (&fixture->actor);
    zframe_destroy (&fixture->peer);
    zsock_destroy (&fixture->router);
    zsock_destroy (&fixture->publisher);
    free (fixture);
    return 0;
}


//  --------------------------------------------------------------------------
//  HTTP client

//  Start curl: options (e.g. "--http2-prior-knowledge"), method, path, body (or NULL).
static call_t *
s_call_start (fixture_t *fixture, const char *options, const char *method,
              const char *path, const char *body)
{
    call_t *call = (call_t *) calloc (1, sizeof (call_t));
    assert_non_null (call);
    char data_option [128] = "";
    if (body) {
        snprintf (call->body_path, sizeof call->body_path, "/tmp/zllm-test-body-XXXXXX");
        int fd = mkstemp (call->body_path);
        assert_true (fd >= 0);
        size_t size = strlen (body);
        assert_int_equal (write (fd, body, size), (ssize_t) size);
        close (fd);
        snprintf (data_option, sizeof data_option,
                  "-H 'Content-Type: application/json' --data-binary @%s", call->body_path);
    }
    char command [1024];
    snprintf (command, sizeof command,
              "curl -s -N -o - -w '\\n%%{http_code} %%{http_version} %%{content_type}' "
              "--max-time 20 "
              "%s -X %s %s 'http://127.0.0.1:%u%s' 2>/dev/null",
              options, method, data_option, (unsigned) fixture->args.bound_port, path);
    call->stream = popen (command, "r");
    assert_non_null (call->stream);
    return call;
}

//  Wait for curl to finish and return what it got.
static response_t
s_call_finish (call_t *call)
{
    response_t response;
    memset (&response, 0, sizeof response);
    size_t size = 0, limit = 4096;
    char *output = (char *) malloc (limit);
    assert_non_null (output);
    size_t got;
    while ((got = fread (output + size, 1, limit - size - 1, call->stream)) > 0) {
        size += got;
        if (limit - size < 2) {
            limit *= 2;
            output = (char *) realloc (output, limit);
            assert_non_null (output);
        }
    }
    output [size] = 0;
    int wait_status = pclose (call->stream);
    response.exit_code = WIFEXITED (wait_status)? WEXITSTATUS (wait_status): -1;
    if (call->body_path [0])
        unlink (call->body_path);
    free (call);

    //  The last line is "<status> <version> <content type>", written by -w.
    char *last_line = strrchr (output, '\n');
    assert_non_null (last_line);
    *last_line = 0;
    if (sscanf (last_line + 1, "%d %7s %63s", &response.status, response.version,
                response.content_type) < 1)
        response.status = 0;
    response.body = output;
    response.json = json_loads (output, 0, NULL);
    return response;
}

static response_t
s_call (fixture_t *fixture, const char *options, const char *method, const char *path,
        const char *body)
{
    return s_call_finish (s_call_start (fixture, options, method, path, body));
}

static void
s_response_reset (response_t *response)
{
    free (response->body);
    json_decref (response->json);
    memset (response, 0, sizeof *response);
}

//  Check an OpenAI error body: type, param (NULL: null) and that the message holds
//  fragment.
static void
s_assert_error_body (response_t *response, const char *type, const char *param,
                     const char *fragment)
{
    if (!response->json)
        print_error ("body is not JSON: '%s' (status %d, HTTP %s, curl %d)\n", response->body, response->status, response->version, response->exit_code);
    assert_non_null (response->json);
    json_t *error = json_object_get (response->json, "error");
    assert_true (json_is_object (error));
    const char *message = json_string_value (json_object_get (error, "message"));
    assert_non_null (message);
    if (!strstr (message, fragment))
        print_error ("message '%s' lacks '%s'\n", message, fragment);
    assert_non_null (strstr (message, fragment));
    assert_string_equal (json_string_value (json_object_get (error, "type")), type);
    if (param)
        assert_string_equal (json_string_value (json_object_get (error, "param")), param);
    else
        assert_true (json_is_null (json_object_get (error, "param")));
    assert_non_null (json_object_get (error, "code"));
}


//  --------------------------------------------------------------------------
//  Fake tokenizer and scheduler

//  Receive one message from the frontend within timeout; 0 when one came. Learns the
//  frontend's routing id.
static int
s_tokenizer_recv (fixture_t *fixture, proto_msg_t *msg, int timeout_msec)
{
    zsock_set_rcvtimeo (fixture->router, timeout_msec);
    zframe_t *routing_id = NULL;
    char error [256];
    int rc = proto_recv (fixture->router, msg, &routing_id, error, sizeof error);
    if (rc == 0) {
        zframe_destroy (&fixture->peer);
        fixture->peer = routing_id;
    }
    else
        zframe_destroy (&routing_id);
    return rc;
}

//  Receive a GENERATE; returns its request id.
static uint64_t
s_expect_generate (fixture_t *fixture, const char *prompt)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    assert_int_equal (s_tokenizer_recv (fixture, &msg, WAIT_MSEC), 0);
    assert_int_equal (msg.kind, PROTO_GENERATE);
    assert_true (msg.request_id != 0);
    if (prompt)
        assert_string_equal (msg.text, prompt);
    uint64_t request_id = msg.request_id;
    proto_msg_reset (&msg);
    return request_id;
}

//  Nothing reaches the tokenizer within timeout.
static void
s_expect_nothing (fixture_t *fixture, int timeout_msec)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    int rc = s_tokenizer_recv (fixture, &msg, timeout_msec);
    if (rc == 0)
        print_error ("unexpected %s for %" PRIx64 "\n", proto_kind_name (msg.kind),
                     msg.request_id);
    assert_int_equal (rc, -1);
    proto_msg_reset (&msg);
}

static void
s_send_output (fixture_t *fixture, uint64_t request_id, const char *text,
               proto_finish_t finish, uint32_t prompt_tokens, uint32_t completion_tokens)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_OUTPUT;
    msg.request_id = request_id;
    assert_int_equal (proto_msg_set_text (&msg, text), 0);
    msg.finish = finish;
    msg.prompt_tokens = prompt_tokens;
    msg.completion_tokens = completion_tokens;
    assert_non_null (fixture->peer);
    assert_int_equal (proto_send_to (&msg, fixture->router, fixture->peer), 0);
    proto_msg_reset (&msg);
}

static void
s_send_error (fixture_t *fixture, uint64_t request_id, uint32_t status, const char *text)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_ERROR;
    msg.request_id = request_id;
    msg.status = status;
    assert_int_equal (proto_msg_set_text (&msg, text), 0);
    assert_int_equal (proto_send_to (&msg, fixture->router, fixture->peer), 0);
    proto_msg_reset (&msg);
}

static void
s_publish_status (fixture_t *fixture, uint32_t workers)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_STATUS;
    msg.workers = workers;
    assert_int_equal (proto_send (&msg, fixture->publisher), 0);
}

//  Wait for the actor to say something on its pipe; returns it (free it) or NULL.
static char *
s_actor_recv (fixture_t *fixture, int timeout_msec)
{
    zsock_t *pipe = zactor_sock (fixture->actor);
    zsock_set_rcvtimeo (pipe, timeout_msec);
    char *reply = zstr_recv (pipe);
    zsock_set_rcvtimeo (pipe, -1);
    return reply;
}

static const char *
s_body (const char *prompt_and_more)
{
    static char body [1024];
    snprintf (body, sizeof body, "{\"model\":\"" MODEL "\",%s}", prompt_and_more);
    return body;
}


//  --------------------------------------------------------------------------
//  Tests

static void
s_check_completion (fixture_t *fixture, const char *options, const char *version)
{
    time_t before = time (NULL);
    call_t *call = s_call_start (fixture, options, "POST", "/v1/completions",
        s_body ("\"prompt\":\"Once upon\",\"max_tokens\":5,\"temperature\":0,\"seed\":7"));
    proto_msg_t generate = PROTO_MSG_INIT;
    assert_int_equal (s_tokenizer_recv (fixture, &generate, WAIT_MSEC), 0);
    assert_int_equal (generate.kind, PROTO_GENERATE);
    assert_string_equal (generate.text, "Once upon");
    assert_int_equal (generate.max_tokens, 5);
    assert_true (generate.temperature == 0.0f);
    assert_true (generate.seed == 7);
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);

    s_send_output (fixture, request_id, "Hello", PROTO_FINISH_NONE, 3, 1);
    s_send_output (fixture, request_id, "", PROTO_FINISH_NONE, 3, 1);
    s_send_output (fixture, request_id, " w\xC3\xB6rld", PROTO_FINISH_LENGTH, 3, 2);
    response_t response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    assert_string_equal (response.version, version);
    assert_non_null (response.json);

    char id [32];
    snprintf (id, sizeof id, "cmpl-%016" PRIx64, request_id);
    json_t *root = response.json;
    assert_string_equal (json_string_value (json_object_get (root, "id")), id);
    assert_string_equal (json_string_value (json_object_get (root, "object")),
                         "text_completion");
    json_int_t created = json_integer_value (json_object_get (root, "created"));
    assert_true (created >= (json_int_t) before && created <= (json_int_t) time (NULL));
    assert_string_equal (json_string_value (json_object_get (root, "model")), MODEL);
    json_t *choice = json_array_get (json_object_get (root, "choices"), 0);
    assert_non_null (choice);
    assert_int_equal (json_integer_value (json_object_get (choice, "index")), 0);
    assert_string_equal (json_string_value (json_object_get (choice, "text")),
                         "Hello w\xC3\xB6rld");
    assert_true (json_is_null (json_object_get (choice, "logprobs")));
    assert_string_equal (json_string_value (json_object_get (choice, "finish_reason")),
                         "length");
    json_t *usage = json_object_get (root, "usage");
    assert_int_equal (json_integer_value (json_object_get (usage, "prompt_tokens")), 3);
    assert_int_equal (json_integer_value (json_object_get (usage, "completion_tokens")), 2);
    assert_int_equal (json_integer_value (json_object_get (usage, "total_tokens")), 5);
    s_response_reset (&response);
}

static void
test_completion_http1 (void **state)
{
    s_check_completion ((fixture_t *) *state, "--http1.1", "1.1");
}

static void
test_completion_h2c (void **state)
{
    s_check_completion ((fixture_t *) *state, "--http2-prior-knowledge", "2");
}

static void
test_completion_defaults_and_stop (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    uint64_t seeds [2];
    for (int round = 0; round < 2; round++) {
        call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                     s_body ("\"prompt\":\"hi\",\"stream\":false,\"n\":1"));
        proto_msg_t generate = PROTO_MSG_INIT;
        assert_int_equal (s_tokenizer_recv (fixture, &generate, WAIT_MSEC), 0);
        assert_int_equal (generate.max_tokens, 16);
        assert_true (generate.temperature == 1.0f);
        seeds [round] = generate.seed;
        uint64_t request_id = generate.request_id;
        proto_msg_reset (&generate);
        s_send_output (fixture, request_id, "!", PROTO_FINISH_STOP, 1, 1);
        response_t response = s_call_finish (call);
        assert_int_equal (response.status, 200);
        json_t *choice = json_array_get (json_object_get (response.json, "choices"), 0);
        assert_string_equal (json_string_value (json_object_get (choice, "finish_reason")),
                             "stop");
        s_response_reset (&response);
    }
    //  No seed given: each request gets its own random one.
    assert_true (seeds [0] != seeds [1]);
}

static void
test_concurrent_completions (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    enum { COUNT = 8 };
    call_t *calls [COUNT];
    uint64_t ids [COUNT];
    for (int index = 0; index < COUNT; index++) {
        char fields [64];
        snprintf (fields, sizeof fields, "\"prompt\":\"p%d\"", index);
        calls [index] = s_call_start (fixture, index % 2? "--http2-prior-knowledge": "",
                                      "POST", "/v1/completions", s_body (fields));
    }
    //  They arrive in any order: map prompt -> id.
    for (int count = 0; count < COUNT; count++) {
        proto_msg_t generate = PROTO_MSG_INIT;
        assert_int_equal (s_tokenizer_recv (fixture, &generate, WAIT_MSEC), 0);
        assert_int_equal (generate.kind, PROTO_GENERATE);
        int index = atoi (generate.text + 1);
        assert_true (index >= 0 && index < COUNT);
        ids [index] = generate.request_id;
        proto_msg_reset (&generate);
    }
    //  Answer in reverse order, each with its own text.
    for (int index = COUNT - 1; index >= 0; index--) {
        char text [32];
        snprintf (text, sizeof text, "answer %d", index);
        s_send_output (fixture, ids [index], text, PROTO_FINISH_STOP, 2, 2);
    }
    for (int index = 0; index < COUNT; index++) {
        response_t response = s_call_finish (calls [index]);
        assert_int_equal (response.status, 200);
        char text [32];
        snprintf (text, sizeof text, "answer %d", index);
        json_t *choice = json_array_get (json_object_get (response.json, "choices"), 0);
        assert_string_equal (json_string_value (json_object_get (choice, "text")), text);
        s_response_reset (&response);
    }
}

static void
test_malformed_json (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    response_t response = s_call (fixture, "", "POST", "/v1/completions",
                                  "{\"model\": \"" MODEL "\",\n \"prompt\": ");
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", NULL, "not valid JSON");
    const char *message = json_string_value (json_object_get (
        json_object_get (response.json, "error"), "message"));
    assert_non_null (strstr (message, "line 2"));
    assert_true (json_is_null (json_object_get (json_object_get (response.json, "error"),
                                                "code")));
    s_response_reset (&response);

    //  No body at all, a body that is not an object.
    response = s_call (fixture, "", "POST", "/v1/completions", NULL);
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", NULL, "not valid JSON");
    s_response_reset (&response);
    response = s_call (fixture, "--http2-prior-knowledge", "POST", "/v1/completions", "[1]");
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", NULL, "JSON object");
    s_response_reset (&response);
    s_expect_nothing (fixture, 50);
}

static void
test_invalid_requests (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    response_t response = s_call (fixture, "", "POST", "/v1/completions",
                                  "{\"model\":\"gpt-4\",\"prompt\":\"hi\"}");
    assert_int_equal (response.status, 404);
    s_assert_error_body (&response, "invalid_request_error", "model", "gpt-4");
    assert_string_equal (json_string_value (json_object_get (
        json_object_get (response.json, "error"), "code")), "model_not_found");
    s_response_reset (&response);

    response = s_call (fixture, "", "POST", "/v1/completions",
                       s_body ("\"prompt\":\"hi\",\"stream_options\":{}"));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "stream_options",
                         "only allowed when 'stream' is enabled");
    s_response_reset (&response);

    response = s_call (fixture, "", "POST", "/v1/completions",
                       s_body ("\"prompt\":[\"a\",\"b\"]"));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "prompt",
                         "only a string prompt is supported for now");
    s_response_reset (&response);

    response = s_call (fixture, "", "POST", "/v1/completions",
                       s_body ("\"prompt\":\"a\",\"max_tokens\":\"many\""));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "max_tokens", "integer");
    s_response_reset (&response);
    s_expect_nothing (fixture, 50);
}

static void
test_unknown_path_and_method (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    response_t response = s_call (fixture, "", "GET", "/v1/nothing", NULL);
    assert_int_equal (response.status, 404);
    s_assert_error_body (&response, "invalid_request_error", NULL,
                         "Invalid URL (GET /v1/nothing)");
    s_response_reset (&response);

    response = s_call (fixture, "--http2-prior-knowledge", "POST", "/", "{}");
    assert_int_equal (response.status, 404);
    assert_string_equal (response.version, "2");
    s_assert_error_body (&response, "invalid_request_error", NULL, "Invalid URL");
    s_response_reset (&response);

    response = s_call (fixture, "", "GET", "/v1/completions", NULL);
    assert_int_equal (response.status, 405);
    s_assert_error_body (&response, "invalid_request_error", NULL, "use POST");
    s_response_reset (&response);

    response = s_call (fixture, "", "DELETE", "/v1/models", NULL);
    assert_int_equal (response.status, 405);
    s_response_reset (&response);

    response = s_call (fixture, "", "POST", "/health", "{}");
    assert_int_equal (response.status, 405);
    s_response_reset (&response);
}

static void
test_models (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    response_t response = s_call (fixture, "", "GET", "/v1/models", NULL);
    assert_int_equal (response.status, 200);
    assert_non_null (response.json);
    assert_string_equal (json_string_value (json_object_get (response.json, "object")),
                         "list");
    json_t *model = json_array_get (json_object_get (response.json, "data"), 0);
    assert_non_null (model);
    assert_string_equal (json_string_value (json_object_get (model, "id")), MODEL);
    assert_string_equal (json_string_value (json_object_get (model, "object")), "model");
    assert_string_equal (json_string_value (json_object_get (model, "owned_by")), "zllm");
    assert_int_equal (json_integer_value (json_object_get (model, "max_model_len")), 512);
    json_int_t created = json_integer_value (json_object_get (model, "created"));
    assert_true (created > 0 && created <= (json_int_t) time (NULL));
    s_response_reset (&response);

    //  A query string does not change the path.
    response = s_call (fixture, "--http2-prior-knowledge", "GET", "/v1/models?x=1", NULL);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
}

//  Publish STATUS until /health answers expected (the SUB joins a little late).
static void
s_wait_health (fixture_t *fixture, uint32_t workers, int expected)
{
    int64_t deadline = zclock_mono () + WAIT_MSEC;
    int status = 0;
    while (zclock_mono () < deadline) {
        s_publish_status (fixture, workers);
        response_t response = s_call (fixture, "", "GET", "/health", NULL);
        status = response.status;
        if (status == 200)
            assert_string_equal (json_string_value (json_object_get (response.json, "status")),
                                 "ok");
        s_response_reset (&response);
        if (status == expected)
            break;
        zclock_sleep (20);
    }
    assert_int_equal (status, expected);
}

static void
test_health (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    response_t response = s_call (fixture, "", "GET", "/health", NULL);
    assert_int_equal (response.status, 503);
    s_assert_error_body (&response, "server_error", NULL, "no worker is available");
    s_response_reset (&response);

    s_wait_health (fixture, 1, 200);
    s_wait_health (fixture, 0, 503);
    s_wait_health (fixture, 2, 200);
}

static void
test_tokenizer_error (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":\"long\""));
    uint64_t request_id = s_expect_generate (fixture, "long");
    s_send_output (fixture, request_id, "partial", PROTO_FINISH_NONE, 1, 1);
    s_send_error (fixture, request_id, 400, "the prompt is too long: 600 tokens");
    response_t response = s_call_finish (call);
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", NULL, "600 tokens");
    s_response_reset (&response);

    call = s_call_start (fixture, "--http2-prior-knowledge", "POST", "/v1/completions",
                         s_body ("\"prompt\":\"x\""));
    request_id = s_expect_generate (fixture, "x");
    s_send_error (fixture, request_id, 503, "no worker can take it");
    response = s_call_finish (call);
    assert_int_equal (response.status, 503);
    s_assert_error_body (&response, "server_error", NULL, "no worker can take it");
    s_response_reset (&response);

    //  A status that is no HTTP error status becomes 500.
    call = s_call_start (fixture, "", "POST", "/v1/completions", s_body ("\"prompt\":\"y\""));
    request_id = s_expect_generate (fixture, "y");
    s_send_error (fixture, request_id, 42, "odd");
    response = s_call_finish (call);
    assert_int_equal (response.status, 500);
    s_response_reset (&response);
}

static void
s_check_disconnect (fixture_t *fixture, const char *options)
{
    char curl_options [128];
    snprintf (curl_options, sizeof curl_options, "--max-time 1 %s", options);
    call_t *call = s_call_start (fixture, curl_options, "POST", "/v1/completions",
                                 s_body ("\"prompt\":\"never answered\""));
    uint64_t request_id = s_expect_generate (fixture, "never answered");
    response_t response = s_call_finish (call);
    assert_int_equal (response.exit_code, 28);      //  curl timed out
    s_response_reset (&response);

    proto_msg_t cancel = PROTO_MSG_INIT;
    assert_int_equal (s_tokenizer_recv (fixture, &cancel, WAIT_MSEC), 0);
    assert_int_equal (cancel.kind, PROTO_CANCEL);
    assert_true (cancel.request_id == request_id);
    proto_msg_reset (&cancel);

    //  Late answers for the gone request are ignored.
    s_send_output (fixture, request_id, "late", PROTO_FINISH_NONE, 1, 1);
    s_send_output (fixture, request_id, "late", PROTO_FINISH_STOP, 1, 2);
    s_send_error (fixture, request_id, 500, "late");
    response = s_call (fixture, "", "GET", "/v1/models", NULL);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
}

static void
test_client_disconnect_http1 (void **state)
{
    s_check_disconnect ((fixture_t *) *state, "--http1.1");
}

static void
test_client_disconnect_h2c (void **state)
{
    s_check_disconnect ((fixture_t *) *state, "--http2-prior-knowledge");
}

static void
test_bad_tokenizer_messages (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":\"robust\""));
    uint64_t request_id = s_expect_generate (fixture, "robust");

    //  Garbage, an empty frame, a message of the wrong kind, an unknown id.
    zframe_t *garbage = zframe_new ("\xc1\xff garbage", 10);
    assert_int_equal (zframe_send (&fixture->peer, fixture->router,
                                   ZFRAME_MORE | ZFRAME_REUSE), 0);
    assert_int_equal (zframe_send (&garbage, fixture->router, 0), 0);
    zframe_t *empty = zframe_new_empty ();
    assert_int_equal (zframe_send (&fixture->peer, fixture->router,
                                   ZFRAME_MORE | ZFRAME_REUSE), 0);
    assert_int_equal (zframe_send (&empty, fixture->router, 0), 0);
    proto_msg_t wrong = PROTO_MSG_INIT;
    wrong.kind = PROTO_CANCEL;
    wrong.request_id = request_id;
    assert_int_equal (proto_send_to (&wrong, fixture->router, fixture->peer), 0);
    s_send_output (fixture, request_id + 1000, "other", PROTO_FINISH_STOP, 1, 1);

    s_send_output (fixture, request_id, "fine", PROTO_FINISH_STOP, 1, 1);
    response_t response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    json_t *choice = json_array_get (json_object_get (response.json, "choices"), 0);
    assert_string_equal (json_string_value (json_object_get (choice, "text")), "fine");
    s_response_reset (&response);
}

static void
test_body_too_large (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    char *body = (char *) malloc (MAX_BODY + 100);
    assert_non_null (body);
    snprintf (body, MAX_BODY + 100, "{\"model\":\"" MODEL "\",\"prompt\":\"");
    size_t used = strlen (body);
    memset (body + used, 'a', MAX_BODY + 100 - used - 3);
    memcpy (body + MAX_BODY + 100 - 3, "\"}", 3);
    response_t response = s_call (fixture, "", "POST", "/v1/completions", body);
    assert_int_equal (response.status, 413);
    s_response_reset (&response);
    free (body);
    s_expect_nothing (fixture, 50);
}

static void
test_peer_down_and_up (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":\"in flight\""));
    uint64_t request_id = s_expect_generate (fixture, "in flight");
    assert_int_equal (zstr_send (fixture->actor, "PEER_DOWN"), 0);
    response_t response = s_call_finish (call);
    assert_int_equal (response.status, 503);
    s_assert_error_body (&response, "server_error", NULL, "went down");
    s_response_reset (&response);
    proto_msg_t cancel = PROTO_MSG_INIT;
    assert_int_equal (s_tokenizer_recv (fixture, &cancel, WAIT_MSEC), 0);
    assert_int_equal (cancel.kind, PROTO_CANCEL);
    assert_true (cancel.request_id == request_id);
    proto_msg_reset (&cancel);

    //  While down: refused at once, and not healthy.
    response = s_call (fixture, "", "POST", "/v1/completions", s_body ("\"prompt\":\"no\""));
    assert_int_equal (response.status, 503);
    s_assert_error_body (&response, "server_error", NULL, "not available");
    s_response_reset (&response);
    s_publish_status (fixture, 1);
    response = s_call (fixture, "", "GET", "/health", NULL);
    assert_int_equal (response.status, 503);
    s_response_reset (&response);
    s_expect_nothing (fixture, 50);

    //  Up again: served through a fresh connection to the tokenizer.
    assert_int_equal (zstr_send (fixture->actor, "PEER_UP"), 0);
    call = s_call_start (fixture, "", "POST", "/v1/completions", s_body ("\"prompt\":\"yes\""));
    request_id = s_expect_generate (fixture, "yes");
    s_send_output (fixture, request_id, "back", PROTO_FINISH_STOP, 1, 1);
    response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
}

static void
test_drain (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":\"last one\""));
    uint64_t request_id = s_expect_generate (fixture, "last one");
    assert_int_equal (zstr_send (fixture->actor, "DRAIN"), 0);
    char *reply = s_actor_recv (fixture, 100);
    assert_null (reply);

    //  No new connections.
    response_t response = s_call (fixture, "", "GET", "/v1/models", NULL);
    assert_int_equal (response.status, 0);
    assert_int_equal (response.exit_code, 7);
    s_response_reset (&response);

    //  The request in flight is still served; then the actor says DRAINED.
    s_send_output (fixture, request_id, "done", PROTO_FINISH_STOP, 2, 1);
    response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
    reply = s_actor_recv (fixture, WAIT_MSEC);
    assert_non_null (reply);
    assert_string_equal (reply, "DRAINED");
    zstr_free (&reply);

    //  DRAIN again with nothing in flight: DRAINED at once.
    assert_int_equal (zstr_send (fixture->actor, "DRAIN"), 0);
    reply = s_actor_recv (fixture, WAIT_MSEC);
    assert_non_null (reply);
    assert_string_equal (reply, "DRAINED");
    zstr_free (&reply);
}

static void
test_term_with_request_in_flight (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *calls [2];
    calls [0] = s_call_start (fixture, "", "POST", "/v1/completions",
                              s_body ("\"prompt\":\"one\""));
    s_expect_generate (fixture, "one");
    calls [1] = s_call_start (fixture, "--http2-prior-knowledge", "POST", "/v1/completions",
                              s_body ("\"prompt\":\"two\""));
    s_expect_generate (fixture, "two");
    int64_t started = zclock_mono ();
    zactor_destroy (&fixture->actor);
    assert_null (fixture->actor);
    assert_true (zclock_mono () - started < 3000);
    for (int index = 0; index < 2; index++) {
        response_t response = s_call_finish (calls [index]);
        assert_int_equal (response.status, 503);
        s_assert_error_body (&response, "server_error", NULL, "shutting down");
        s_response_reset (&response);
    }
}

static void
test_idle_connections_at_term (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    //  A keep-alive connection that a client holds open and idle: $TERM must not wait
    //  for h2o's idle timeout (10 s).
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert_true (fd >= 0);
    struct sockaddr_in address;
    memset (&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons (fixture->args.bound_port);
    address.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    assert_int_equal (connect (fd, (struct sockaddr *) &address, sizeof address), 0);
    //  Make sure the server has accepted it: a complete request on it is answered.
    const char *request = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal (write (fd, request, strlen (request)), (ssize_t) strlen (request));
    char buffer [512];
    assert_true (read (fd, buffer, sizeof buffer) > 0);

    int64_t started = zclock_mono ();
    zactor_destroy (&fixture->actor);
    assert_true (zclock_mono () - started < 3000);
    //  The server closed its side.
    ssize_t got;
    while ((got = read (fd, buffer, sizeof buffer)) > 0)
        ;
    assert_int_equal (got, 0);
    close (fd);
}

static void
test_bind_failure (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    frontend_args_t args = fixture->args;
    args.port = fixture->args.bound_port;       //  already taken
    args.error [0] = 0;
    zactor_t *second = zactor_new (frontend_actor, &args);
    assert_non_null (second);
    assert_true (strlen (args.error) > 0);
    assert_non_null (strstr (args.error, "cannot listen"));
    zactor_destroy (&second);

    args.host = "no-such-host.invalid";
    args.port = 0;
    args.error [0] = 0;
    second = zactor_new (frontend_actor, &args);
    assert_true (strlen (args.error) > 0);
    zactor_destroy (&second);

    //  The first actor is unharmed.
    response_t response = s_call (fixture, "", "GET", "/v1/models", NULL);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
}

//  --------------------------------------------------------------------------
//  Chat and streaming

//  A chat body: the model, then members written with ' for " (no test text needs an
//  apostrophe).
static const char *
s_chat_body (const char *members)
{
    static char body [4096];
    snprintf (body, sizeof body, "{'model':'" MODEL "',%s}", members);
    for (char *at = body; *at; at++)
        if (*at == '\'')
            *at = '"';
    return body;
}

//  JSON written with ' for ", parsed.
static json_t *
s_json_quoted (const char *text)
{
    char *copy = strdup (text);
    assert_non_null (copy);
    for (char *at = copy; *at; at++)
        if (*at == '\'')
            *at = '"';
    json_t *value = json_loads (copy, 0, NULL);
    if (!value)
        print_error ("not JSON: %s\n", copy);
    assert_non_null (value);
    free (copy);
    return value;
}

//  Receive a GENERATE into msg (reset it after).
static void
s_expect_generate_msg (fixture_t *fixture, proto_msg_t *msg)
{
    assert_int_equal (s_tokenizer_recv (fixture, msg, WAIT_MSEC), 0);
    assert_int_equal (msg->kind, PROTO_GENERATE);
    assert_true (msg->request_id != 0);
}

//  Check that a GENERATE's chat is this JSON (written with ' for ").
static void
s_assert_chat (const proto_msg_t *generate, const char *expected_quoted)
{
    //  No prompt (the decoder gives an absent text as "").
    assert_true (!generate->text || !*generate->text);
    assert_non_null (generate->chat);
    json_t *chat = json_loads (generate->chat, 0, NULL);
    assert_non_null (chat);
    json_t *expected = s_json_quoted (expected_quoted);
    //  The generation-prompt flags, when the expectation leaves them out, are at their
    //  defaults.
    if (!json_object_get (expected, "add_generation_prompt")) {
        assert_true (json_is_true (json_object_get (chat, "add_generation_prompt")));
        json_object_del (chat, "add_generation_prompt");
    }
    if (!json_object_get (expected, "continue_final_message")) {
        assert_true (json_is_false (json_object_get (chat, "continue_final_message")));
        json_object_del (chat, "continue_final_message");
    }
    if (!json_equal (chat, expected))
        print_error ("GENERATE.chat is %s\n", generate->chat);
    assert_true (json_equal (chat, expected));
    json_decref (expected);
    json_decref (chat);
}

//  An OUTPUT with tool-call deltas (JSON written with ' for ", or NULL).
static void
s_send_output_calls (fixture_t *fixture, uint64_t request_id, const char *text,
                     const char *tool_calls_quoted, proto_finish_t finish,
                     uint32_t prompt_tokens, uint32_t completion_tokens)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_OUTPUT;
    msg.request_id = request_id;
    assert_int_equal (proto_msg_set_text (&msg, text), 0);
    if (tool_calls_quoted) {
        char *tool_calls = strdup (tool_calls_quoted);
        assert_non_null (tool_calls);
        for (char *at = tool_calls; *at; at++)
            if (*at == '\'')
                *at = '"';
        assert_int_equal (proto_msg_set_tool_calls (&msg, tool_calls), 0);
        free (tool_calls);
    }
    msg.finish = finish;
    msg.prompt_tokens = prompt_tokens;
    msg.completion_tokens = completion_tokens;
    assert_non_null (fixture->peer);
    assert_int_equal (proto_send_to (&msg, fixture->router, fixture->peer), 0);
    proto_msg_reset (&msg);
}

//  The events of a server-sent-events body, in order: each "data:" event's JSON (an
//  object, or the string "[DONE]"). *pings gets the number of ": ping" comments. Fails
//  on anything else (every event must end with a blank line).
static json_t *
s_sse_events (const char *body, int *pings)
{
    json_t *events = json_array ();
    assert_non_null (events);
    *pings = 0;
    const char *at = body;
    while (*at) {
        const char *end = strstr (at, "\n\n");
        if (!end)
            print_error ("unterminated event: '%s'\n", at);
        assert_non_null (end);
        size_t size = (size_t) (end - at);
        if (size == 6 && memcmp (at, ": ping", 6) == 0)
            (*pings)++;
        else
        if (size == 12 && memcmp (at, "data: [DONE]", 12) == 0)
            json_array_append_new (events, json_string ("[DONE]"));
        else
        if (size > 6 && memcmp (at, "data: ", 6) == 0) {
            json_t *event = json_loadb (at + 6, size - 6, 0, NULL);
            if (!event)
                print_error ("event is not JSON: '%.*s'\n", (int) size, at);
            assert_non_null (event);
            json_array_append_new (events, event);
        }
        else {
            print_error ("not an SSE event: '%.*s'\n", (int) size, at);
            fail ();
        }
        at = end + 2;
    }
    return events;
}

//  Check what every chunk of a stream carries; returns its only choice (NULL for the
//  usage chunk, which has none).
static json_t *
s_check_chunk (json_t *event, const char *id, const char *object, bool include_usage)
{
    assert_true (json_is_object (event));
    assert_string_equal (json_string_value (json_object_get (event, "id")), id);
    assert_string_equal (json_string_value (json_object_get (event, "object")), object);
    json_int_t created = json_integer_value (json_object_get (event, "created"));
    assert_true (created > 0 && created <= (json_int_t) time (NULL));
    assert_string_equal (json_string_value (json_object_get (event, "model")), MODEL);
    json_t *choices = json_object_get (event, "choices");
    assert_true (json_is_array (choices));
    if (json_array_size (choices) == 0) {
        assert_true (include_usage);
        assert_true (json_is_object (json_object_get (event, "usage")));
        return NULL;
    }
    if (include_usage)
        assert_true (json_is_null (json_object_get (event, "usage")));
    else
        assert_null (json_object_get (event, "usage"));
    assert_int_equal (json_array_size (choices), 1);
    json_t *choice = json_array_get (choices, 0);
    assert_int_equal (json_integer_value (json_object_get (choice, "index")), 0);
    assert_true (json_is_null (json_object_get (choice, "logprobs")));
    return choice;
}

static void
s_check_usage_chunk (json_t *event, uint32_t prompt_tokens, uint32_t completion_tokens)
{
    json_t *usage = json_object_get (event, "usage");
    assert_int_equal (json_integer_value (json_object_get (usage, "prompt_tokens")),
                      prompt_tokens);
    assert_int_equal (json_integer_value (json_object_get (usage, "completion_tokens")),
                      completion_tokens);
    assert_int_equal (json_integer_value (json_object_get (usage, "total_tokens")),
                      prompt_tokens + completion_tokens);
}

static const char *
s_finish_of (json_t *choice)
{
    json_t *finish = json_object_get (choice, "finish_reason");
    assert_non_null (finish);
    return json_string_value (finish);     //  NULL for JSON null
}

//  Check a streamed response: 200, SSE headers, events parsed. Returns the events.
static json_t *
s_stream_events (response_t *response, const char *version, int *pings)
{
    if (response->status != 200)
        print_error ("status %d, body '%s'\n", response->status, response->body);
    assert_int_equal (response->status, 200);
    assert_string_equal (response->content_type, "text/event-stream");
    if (version)
        assert_string_equal (response->version, version);
    return s_sse_events (response->body, pings);
}

static void
s_check_chat (fixture_t *fixture, const char *options, const char *version)
{
    call_t *call = s_call_start (fixture, options, "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'system','content':'Be brief.'},"
                     "{'role':'user','content':'Capital of France?'}],"
                     "'temperature':0,'seed':11,'stop':['END','\\n\\n'],'user':'u'"));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    s_assert_chat (&generate, "{'messages':[{'role':'system','content':'Be brief.'},"
                              "{'role':'user','content':'Capital of France?'}],"
                              "'tool_choice':'none'}");
    assert_int_equal (generate.max_tokens, 0);         //  up to the context
    assert_true (generate.temperature == 0.0f);
    assert_true (generate.seed == 11);
    assert_int_equal (generate.n_stops, 2);
    assert_string_equal (generate.stops [0], "END");
    assert_string_equal (generate.stops [1], "\n\n");
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);

    s_send_output (fixture, request_id, "Paris", PROTO_FINISH_NONE, 9, 1);
    s_send_output (fixture, request_id, "", PROTO_FINISH_NONE, 9, 1);
    s_send_output (fixture, request_id, ".", PROTO_FINISH_STOP, 9, 3);
    response_t response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    assert_string_equal (response.version, version);
    assert_string_equal (response.content_type, "application/json");
    json_t *root = response.json;
    assert_non_null (root);
    char id [40];
    snprintf (id, sizeof id, "chatcmpl-%016" PRIx64, request_id);
    assert_string_equal (json_string_value (json_object_get (root, "id")), id);
    assert_string_equal (json_string_value (json_object_get (root, "object")),
                         "chat.completion");
    assert_string_equal (json_string_value (json_object_get (root, "model")), MODEL);
    json_t *choice = json_array_get (json_object_get (root, "choices"), 0);
    json_t *message = json_object_get (choice, "message");
    assert_string_equal (json_string_value (json_object_get (message, "role")), "assistant");
    assert_string_equal (json_string_value (json_object_get (message, "content")), "Paris.");
    assert_null (json_object_get (message, "tool_calls"));
    assert_string_equal (s_finish_of (choice), "stop");
    json_t *usage = json_object_get (root, "usage");
    assert_int_equal (json_integer_value (json_object_get (usage, "prompt_tokens")), 9);
    assert_int_equal (json_integer_value (json_object_get (usage, "completion_tokens")), 3);
    assert_int_equal (json_integer_value (json_object_get (usage, "total_tokens")), 12);
    s_response_reset (&response);
}

static void
test_chat_http1 (void **state)
{
    s_check_chat ((fixture_t *) *state, "--http1.1", "1.1");
}

static void
test_chat_h2c (void **state)
{
    s_check_chat ((fixture_t *) *state, "--http2-prior-knowledge", "2");
}

//  A streamed chat: role chunk, content deltas, finish chunk, usage chunk when asked
//  for, [DONE].
static void
s_check_chat_stream (fixture_t *fixture, const char *options, const char *version,
                     bool include_usage)
{
    char members [300];
    snprintf (members, sizeof members,
              "'messages':[{'role':'user','content':'Hi'}],'max_completion_tokens':8,"
              "'stream':true%s", include_usage?
              ",'stream_options':{'include_usage':true}": "");
    call_t *call = s_call_start (fixture, options, "POST", "/v1/chat/completions",
                                 s_chat_body (members));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    assert_int_equal (generate.max_tokens, 8);
    assert_int_equal (generate.n_stops, 0);
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);

    s_send_output (fixture, request_id, "Hel", PROTO_FINISH_NONE, 4, 1);
    s_send_output (fixture, request_id, "", PROTO_FINISH_NONE, 4, 1);
    s_send_output (fixture, request_id, "lo \xF0\x9F\x98\x80", PROTO_FINISH_NONE, 4, 2);
    s_send_output (fixture, request_id, "!", PROTO_FINISH_LENGTH, 4, 8);
    response_t response = s_call_finish (call);
    int pings;
    json_t *events = s_stream_events (&response, version, &pings);
    char id [40];
    snprintf (id, sizeof id, "chatcmpl-%016" PRIx64, request_id);
    //  role, 3 deltas, finish, (usage), [DONE]
    size_t expected_count = include_usage? 7: 6;
    if (json_array_size (events) != expected_count)
        print_error ("body: %s\n", response.body);
    assert_int_equal (json_array_size (events), expected_count);

    json_t *choice = s_check_chunk (json_array_get (events, 0), id, "chat.completion.chunk",
                                    include_usage);
    json_t *delta = json_object_get (choice, "delta");
    assert_int_equal (json_object_size (delta), 2);
    assert_string_equal (json_string_value (json_object_get (delta, "role")), "assistant");
    assert_string_equal (json_string_value (json_object_get (delta, "content")), "");
    assert_null (s_finish_of (choice));

    const char *contents [] = { "Hel", "lo \xF0\x9F\x98\x80", "!" };
    for (size_t index = 0; index < 3; index++) {
        choice = s_check_chunk (json_array_get (events, 1 + index), id,
                                "chat.completion.chunk", include_usage);
        delta = json_object_get (choice, "delta");
        assert_int_equal (json_object_size (delta), 1);
        assert_string_equal (json_string_value (json_object_get (delta, "content")),
                             contents [index]);
        assert_null (s_finish_of (choice));
    }
    choice = s_check_chunk (json_array_get (events, 4), id, "chat.completion.chunk",
                            include_usage);
    assert_int_equal (json_object_size (json_object_get (choice, "delta")), 0);
    assert_string_equal (s_finish_of (choice), "length");
    if (include_usage) {
        json_t *usage_chunk = json_array_get (events, 5);
        assert_null (s_check_chunk (usage_chunk, id, "chat.completion.chunk", true));
        s_check_usage_chunk (usage_chunk, 4, 8);
    }
    assert_string_equal (json_string_value (json_array_get (events, expected_count - 1)),
                         "[DONE]");
    json_decref (events);
    s_response_reset (&response);
}

static void
test_chat_stream_http1 (void **state)
{
    s_check_chat_stream ((fixture_t *) *state, "--http1.1", "1.1", true);
    s_check_chat_stream ((fixture_t *) *state, "--http1.1", "1.1", false);
}

static void
test_chat_stream_h2c (void **state)
{
    s_check_chat_stream ((fixture_t *) *state, "--http2-prior-knowledge", "2", true);
    s_check_chat_stream ((fixture_t *) *state, "--http2-prior-knowledge", "2", false);
}

#define TOOL_WEATHER "{'type':'function','function':{'name':'get_weather'," \
                     "'parameters':{'type':'object','properties':{'location':{'type':'string'}}}}}"

static void
test_chat_tool_calls (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Weather in Paris?'}],"
                     "'tools':[" TOOL_WEATHER "]"));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    s_assert_chat (&generate, "{'messages':[{'role':'user','content':'Weather in Paris?'}],"
                              "'tools':[" TOOL_WEATHER "],'tool_choice':'auto'}");
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);

    //  The first delta of each index has id, type and name; later ones add arguments.
    s_send_output_calls (fixture, request_id, "", "[{'index':0,'id':'call_1',"
                         "'type':'function','function':{'name':'get_weather',"
                         "'arguments':''}}]", PROTO_FINISH_NONE, 20, 5);
    s_send_output_calls (fixture, request_id, "", "[{'index':0,'function':{'arguments':"
                         "'{\\'location\\': '}}]", PROTO_FINISH_NONE, 20, 10);
    s_send_output_calls (fixture, request_id, "", "[{'index':0,'function':{'arguments':"
                         "'\\'Paris\\'}'}},{'index':1,'id':'call_2','type':'function',"
                         "'function':{'name':'get_weather','arguments':'{}'}}]",
                         PROTO_FINISH_NONE, 20, 15);
    //  Malformed deltas from the tokenizer are skipped, not fatal.
    s_send_output_calls (fixture, request_id, "", "{'not':'an array'}",
                         PROTO_FINISH_NONE, 20, 16);
    s_send_output (fixture, request_id, "", PROTO_FINISH_TOOL_CALLS, 20, 17);
    response_t response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    json_t *choice = json_array_get (json_object_get (response.json, "choices"), 0);
    assert_string_equal (s_finish_of (choice), "tool_calls");
    json_t *message = json_object_get (choice, "message");
    assert_non_null (json_object_get (message, "content"));
    assert_true (json_is_null (json_object_get (message, "content")));
    json_t *expected = s_json_quoted (
        "[{'id':'call_1','type':'function','function':{'name':'get_weather',"
        "'arguments':'{\\'location\\': \\'Paris\\'}'}},"
        "{'id':'call_2','type':'function','function':{'name':'get_weather',"
        "'arguments':'{}'}}]");
    if (!json_equal (json_object_get (message, "tool_calls"), expected))
        print_error ("body: %s\n", response.body);
    assert_true (json_equal (json_object_get (message, "tool_calls"), expected));
    json_decref (expected);
    s_response_reset (&response);
}

static void
test_chat_tool_calls_stream (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "--http2-prior-knowledge", "POST",
        "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Weather?'}],"
                     "'tools':[" TOOL_WEATHER "],'tool_choice':'auto','stream':true,"
                     "'parallel_tool_calls':true"));
    uint64_t request_id = s_expect_generate (fixture, NULL);
    const char *first = "[{'index':0,'id':'call_1','type':'function',"
                        "'function':{'name':'get_weather','arguments':''}}]";
    const char *second = "[{'index':0,'function':{'arguments':'{}'}}]";
    s_send_output_calls (fixture, request_id, "Checking.", first, PROTO_FINISH_NONE, 5, 3);
    s_send_output_calls (fixture, request_id, "", second, PROTO_FINISH_TOOL_CALLS, 5, 6);
    response_t response = s_call_finish (call);
    int pings;
    json_t *events = s_stream_events (&response, "2", &pings);
    char id [40];
    snprintf (id, sizeof id, "chatcmpl-%016" PRIx64, request_id);
    //  role, content + calls, calls, finish, [DONE]
    assert_int_equal (json_array_size (events), 5);
    s_check_chunk (json_array_get (events, 0), id, "chat.completion.chunk", false);

    json_t *choice = s_check_chunk (json_array_get (events, 1), id, "chat.completion.chunk",
                                    false);
    json_t *delta = json_object_get (choice, "delta");
    assert_string_equal (json_string_value (json_object_get (delta, "content")), "Checking.");
    json_t *expected = s_json_quoted (first);
    assert_true (json_equal (json_object_get (delta, "tool_calls"), expected));
    json_decref (expected);

    choice = s_check_chunk (json_array_get (events, 2), id, "chat.completion.chunk", false);
    delta = json_object_get (choice, "delta");
    assert_int_equal (json_object_size (delta), 1);
    expected = s_json_quoted (second);
    assert_true (json_equal (json_object_get (delta, "tool_calls"), expected));
    json_decref (expected);

    choice = s_check_chunk (json_array_get (events, 3), id, "chat.completion.chunk", false);
    assert_int_equal (json_object_size (json_object_get (choice, "delta")), 0);
    assert_string_equal (s_finish_of (choice), "tool_calls");
    assert_string_equal (json_string_value (json_array_get (events, 4)), "[DONE]");
    json_decref (events);
    s_response_reset (&response);
}

static void
test_chat_tools_need_auto_flag (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    //  Started without --enable-auto-tool-choice: tools with tool_choice auto (the
    //  default) are refused with vLLM's message.
    response_t response = s_call (fixture, "", "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Hi'}],"
                     "'tools':[" TOOL_WEATHER "]"));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "tool_choice",
                         "\"auto\" tool choice requires --enable-auto-tool-choice and "
                         "--tool-call-parser to be set");
    s_response_reset (&response);
    s_expect_nothing (fixture, 50);

    //  tool_choice "none": accepted; the tokenizer gets the tools and "none".
    call_t *call = s_call_start (fixture, "", "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Hi'}],"
                     "'tools':[" TOOL_WEATHER "],'tool_choice':'none'"));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    s_assert_chat (&generate, "{'messages':[{'role':'user','content':'Hi'}],"
                              "'tools':[" TOOL_WEATHER "],'tool_choice':'none'}");
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);
    s_send_output (fixture, request_id, "Hello", PROTO_FINISH_STOP, 3, 2);
    response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    json_t *message = json_object_get (json_array_get (json_object_get (response.json,
                                                                        "choices"), 0),
                                       "message");
    assert_string_equal (json_string_value (json_object_get (message, "content")), "Hello");
    s_response_reset (&response);
}

static void
test_chat_invalid_requests (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    response_t response = s_call (fixture, "", "POST", "/v1/chat/completions",
                                  s_chat_body ("'stream':true"));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "messages",
                         "Missing required parameter: 'messages'");
    s_response_reset (&response);

    response = s_call (fixture, "--http2-prior-knowledge", "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':[{'type':'image_url',"
                     "'image_url':{'url':'http://x/y.png'}}]}]"));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "messages[0].content[0].type",
                         "only text content is supported");
    s_response_reset (&response);

    response = s_call (fixture, "", "POST", "/v1/chat/completions",
        "{\"model\":\"other\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}");
    assert_int_equal (response.status, 404);
    s_response_reset (&response);

    response = s_call (fixture, "", "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Hi'}],'n':3"));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "n", "only n=1");
    s_response_reset (&response);

    response = s_call (fixture, "", "GET", "/v1/chat/completions", NULL);
    assert_int_equal (response.status, 405);
    s_assert_error_body (&response, "invalid_request_error", NULL, "use POST");
    s_response_reset (&response);
    s_expect_nothing (fixture, 50);
}

static void
s_check_completion_stream (fixture_t *fixture, const char *options, const char *version)
{
    call_t *call = s_call_start (fixture, options, "POST", "/v1/completions",
        s_body ("\"prompt\":\"Once\",\"stream\":true,\"stop\":[\"END\",\"\\n\"],"
                "\"stream_options\":{\"include_usage\":true}"));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    assert_string_equal (generate.text, "Once");
    assert_null (generate.chat);
    assert_int_equal (generate.max_tokens, 16);
    assert_int_equal (generate.n_stops, 2);
    assert_string_equal (generate.stops [0], "END");
    assert_string_equal (generate.stops [1], "\n");
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);

    s_send_output (fixture, request_id, " upon", PROTO_FINISH_NONE, 2, 1);
    s_send_output (fixture, request_id, " a time", PROTO_FINISH_STOP, 2, 3);
    response_t response = s_call_finish (call);
    int pings;
    json_t *events = s_stream_events (&response, version, &pings);
    char id [40];
    snprintf (id, sizeof id, "cmpl-%016" PRIx64, request_id);
    //  2 texts, finish, usage, [DONE]
    assert_int_equal (json_array_size (events), 5);
    const char *texts [] = { " upon", " a time" };
    for (size_t index = 0; index < 2; index++) {
        json_t *choice = s_check_chunk (json_array_get (events, index), id,
                                        "text_completion", true);
        assert_string_equal (json_string_value (json_object_get (choice, "text")),
                             texts [index]);
        assert_null (s_finish_of (choice));
    }
    json_t *choice = s_check_chunk (json_array_get (events, 2), id, "text_completion", true);
    assert_string_equal (json_string_value (json_object_get (choice, "text")), "");
    assert_string_equal (s_finish_of (choice), "stop");
    assert_null (s_check_chunk (json_array_get (events, 3), id, "text_completion", true));
    s_check_usage_chunk (json_array_get (events, 3), 2, 3);
    assert_string_equal (json_string_value (json_array_get (events, 4)), "[DONE]");
    json_decref (events);
    s_response_reset (&response);
}

static void
test_completion_stream_http1 (void **state)
{
    s_check_completion_stream ((fixture_t *) *state, "--http1.1", "1.1");
}

static void
test_completion_stream_h2c (void **state)
{
    s_check_completion_stream ((fixture_t *) *state, "--http2-prior-knowledge", "2");
}

static void
s_check_stream_error (fixture_t *fixture, const char *options)
{
    //  An ERROR after the stream started: an error event, then [DONE].
    call_t *call = s_call_start (fixture, options, "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Hi'}],'stream':true"));
    uint64_t request_id = s_expect_generate (fixture, NULL);
    s_send_output (fixture, request_id, "partial", PROTO_FINISH_NONE, 1, 1);
    s_send_error (fixture, request_id, 503, "the worker died");
    response_t response = s_call_finish (call);
    int pings;
    json_t *events = s_stream_events (&response, NULL, &pings);
    //  role, "partial", error, [DONE]
    assert_int_equal (json_array_size (events), 4);
    json_t *choice = json_array_get (json_object_get (json_array_get (events, 1), "choices"),
                                     0);
    assert_string_equal (json_string_value (json_object_get (json_object_get (choice, "delta"),
                                                             "content")), "partial");
    json_t *error = json_object_get (json_array_get (events, 2), "error");
    assert_true (json_is_object (error));
    assert_string_equal (json_string_value (json_object_get (error, "message")),
                         "the worker died");
    assert_string_equal (json_string_value (json_object_get (error, "type")), "server_error");
    assert_string_equal (json_string_value (json_array_get (events, 3)), "[DONE]");
    json_decref (events);
    s_response_reset (&response);

    //  An ERROR before anything was sent: an ordinary JSON error with its status.
    call = s_call_start (fixture, options, "POST", "/v1/completions",
                         s_body ("\"prompt\":\"long\",\"stream\":true"));
    request_id = s_expect_generate (fixture, "long");
    s_send_error (fixture, request_id, 400, "the prompt is too long: 600 tokens");
    response = s_call_finish (call);
    assert_int_equal (response.status, 400);
    assert_string_equal (response.content_type, "application/json");
    s_assert_error_body (&response, "invalid_request_error", NULL, "600 tokens");
    s_response_reset (&response);
}

static void
test_stream_error_http1 (void **state)
{
    s_check_stream_error ((fixture_t *) *state, "--http1.1");
}

static void
test_stream_error_h2c (void **state)
{
    s_check_stream_error ((fixture_t *) *state, "--http2-prior-knowledge");
}

static void
s_check_stream_disconnect (fixture_t *fixture, const char *options)
{
    char curl_options [128];
    snprintf (curl_options, sizeof curl_options, "--max-time 1 %s", options);
    call_t *call = s_call_start (fixture, curl_options, "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Tell me a story'}],"
                     "'stream':true"));
    uint64_t request_id = s_expect_generate (fixture, NULL);
    s_send_output (fixture, request_id, "Once", PROTO_FINISH_NONE, 4, 1);
    s_send_output (fixture, request_id, " upon", PROTO_FINISH_NONE, 4, 2);
    response_t response = s_call_finish (call);
    assert_int_equal (response.exit_code, 28);      //  curl timed out mid-stream
    assert_non_null (strstr (response.body, "\"content\":\"Once\""));
    s_response_reset (&response);

    proto_msg_t cancel = PROTO_MSG_INIT;
    assert_int_equal (s_tokenizer_recv (fixture, &cancel, WAIT_MSEC), 0);
    assert_int_equal (cancel.kind, PROTO_CANCEL);
    assert_true (cancel.request_id == request_id);
    proto_msg_reset (&cancel);

    //  Late messages for the gone request are ignored.
    s_send_output (fixture, request_id, " a time", PROTO_FINISH_NONE, 4, 3);
    s_send_output (fixture, request_id, "", PROTO_FINISH_STOP, 4, 4);
    s_send_error (fixture, request_id, 500, "late");
    response = s_call (fixture, options, "GET", "/v1/models", NULL);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
    s_expect_nothing (fixture, 100);
}

static void
test_stream_disconnect_http1 (void **state)
{
    s_check_stream_disconnect ((fixture_t *) *state, "--http1.1");
}

static void
test_stream_disconnect_h2c (void **state)
{
    s_check_stream_disconnect ((fixture_t *) *state, "--http2-prior-knowledge");
}

//  While nothing comes (a long prefill), the stream starts after a second and says
//  ": ping" every second.
static void
test_stream_pings (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Hi'}],'stream':true"));
    uint64_t request_id = s_expect_generate (fixture, NULL);
    zclock_sleep (2300);
    s_send_output (fixture, request_id, "Hi!", PROTO_FINISH_STOP, 2, 2);
    response_t response = s_call_finish (call);
    int pings;
    json_t *events = s_stream_events (&response, "1.1", &pings);
    assert_true (pings >= 2);
    //  The role chunk still comes first: role, "Hi!", finish, [DONE].
    assert_int_equal (json_array_size (events), 4);
    json_t *delta = json_object_get (json_array_get (json_object_get (
        json_array_get (events, 0), "choices"), 0), "delta");
    assert_string_equal (json_string_value (json_object_get (delta, "role")), "assistant");
    assert_true (strncmp (response.body, "data: ", 6) == 0);
    json_decref (events);
    s_response_reset (&response);

    //  An ERROR once the stream has started (by a ping) is an event.
    call = s_call_start (fixture, "--http2-prior-knowledge", "POST", "/v1/completions",
                         s_body ("\"prompt\":\"slow\",\"stream\":true"));
    request_id = s_expect_generate (fixture, "slow");
    zclock_sleep (1300);
    s_send_error (fixture, request_id, 400, "too long");
    response = s_call_finish (call);
    events = s_stream_events (&response, "2", &pings);
    assert_true (pings >= 1);
    assert_int_equal (json_array_size (events), 2);
    assert_non_null (json_object_get (json_array_get (events, 0), "error"));
    assert_string_equal (json_string_value (json_array_get (events, 1)), "[DONE]");
    json_decref (events);
    s_response_reset (&response);
}

//  Many OUTPUTs at once: what arrives while a send waits for proceed is queued and
//  coalesced; nothing is lost, nothing comes twice, over both protocols at once.
static void
test_stream_many_chunks (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    enum { PIECES = 2000 };
    call_t *calls [2];
    uint64_t ids [2];
    calls [0] = s_call_start (fixture, "--http1.1", "POST", "/v1/completions",
                              s_body ("\"prompt\":\"count\",\"stream\":true,"
                                      "\"max_tokens\":5000"));
    ids [0] = s_expect_generate (fixture, "count");
    calls [1] = s_call_start (fixture, "--http2-prior-knowledge", "POST",
                              "/v1/chat/completions",
                              s_chat_body ("'messages':[{'role':'user','content':'count'}],"
                                           "'stream':true"));
    ids [1] = s_expect_generate (fixture, NULL);
    for (int piece = 0; piece < PIECES; piece++) {
        char text [16];
        snprintf (text, sizeof text, "%d,", piece);
        for (int index = 0; index < 2; index++)
            s_send_output (fixture, ids [index], text, PROTO_FINISH_NONE, 1,
                           (uint32_t) piece + 1);
    }
    for (int index = 0; index < 2; index++)
        s_send_output (fixture, ids [index], "", PROTO_FINISH_LENGTH, 1, PIECES);
    for (int index = 0; index < 2; index++) {
        response_t response = s_call_finish (calls [index]);
        int pings;
        json_t *events = s_stream_events (&response, index? "2": "1.1", &pings);
        size_t count = json_array_size (events);
        //  completions: pieces, finish, [DONE]; chat: role first
        assert_int_equal (count, PIECES + 2 + (size_t) index);
        for (int piece = 0; piece < PIECES; piece++) {
            char text [16];
            snprintf (text, sizeof text, "%d,", piece);
            json_t *choice = json_array_get (json_object_get (
                json_array_get (events, (size_t) (piece + index)), "choices"), 0);
            json_t *value = index? json_object_get (json_object_get (choice, "delta"),
                                                    "content")
                                 : json_object_get (choice, "text");
            assert_string_equal (json_string_value (value), text);
        }
        assert_string_equal (json_string_value (json_array_get (events, count - 1)),
                             "[DONE]");
        json_decref (events);
        s_response_reset (&response);
    }
}

static void
test_stream_peer_down (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "--http2-prior-knowledge", "POST",
                                 "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Hi'}],'stream':true"));
    uint64_t request_id = s_expect_generate (fixture, NULL);
    s_send_output (fixture, request_id, "Hel", PROTO_FINISH_NONE, 1, 1);
    //  Make sure the first chunk is out before the pipeline goes down.
    zclock_sleep (100);
    assert_int_equal (zstr_send (fixture->actor, "PEER_DOWN"), 0);
    response_t response = s_call_finish (call);
    int pings;
    json_t *events = s_stream_events (&response, "2", &pings);
    size_t count = json_array_size (events);
    assert_true (count >= 3);
    json_t *error = json_object_get (json_array_get (events, count - 2), "error");
    assert_non_null (error);
    assert_non_null (strstr (json_string_value (json_object_get (error, "message")),
                             "went down"));
    assert_string_equal (json_string_value (json_array_get (events, count - 1)), "[DONE]");
    json_decref (events);
    s_response_reset (&response);
    proto_msg_t cancel = PROTO_MSG_INIT;
    assert_int_equal (s_tokenizer_recv (fixture, &cancel, WAIT_MSEC), 0);
    assert_int_equal (cancel.kind, PROTO_CANCEL);
    assert_true (cancel.request_id == request_id);
    proto_msg_reset (&cancel);
}

static void
test_term_with_stream_in_flight (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *calls [2];
    calls [0] = s_call_start (fixture, "", "POST", "/v1/completions",
                              s_body ("\"prompt\":\"one\",\"stream\":true"));
    uint64_t first = s_expect_generate (fixture, "one");
    s_send_output (fixture, first, "1", PROTO_FINISH_NONE, 1, 1);
    calls [1] = s_call_start (fixture, "--http2-prior-knowledge", "POST",
                              "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'two'}],'stream':true"));
    uint64_t second = s_expect_generate (fixture, NULL);
    s_send_output (fixture, second, "2", PROTO_FINISH_NONE, 1, 1);
    zclock_sleep (100);
    int64_t started = zclock_mono ();
    zactor_destroy (&fixture->actor);
    assert_true (zclock_mono () - started < 3000);
    for (int index = 0; index < 2; index++) {
        response_t response = s_call_finish (calls [index]);
        int pings;
        json_t *events = s_stream_events (&response, NULL, &pings);
        size_t count = json_array_size (events);
        assert_true (count >= 3);
        json_t *error = json_object_get (json_array_get (events, count - 2), "error");
        assert_non_null (strstr (json_string_value (json_object_get (error, "message")),
                                 "shutting down"));
        assert_string_equal (json_string_value (json_array_get (events, count - 1)),
                             "[DONE]");
        json_decref (events);
        s_response_reset (&response);
    }
}

int
main (void)
{
    //  The tests speak HTTP through curl, HTTP/2 included.
    if (system ("curl --version 2>/dev/null | grep -q HTTP2") != 0) {
        printf ("1..0 # SKIP curl with HTTP/2 support is not installed\n");
        return 0;
    }
    zsys_init ();
    zsys_handler_set (NULL);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_completion_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_completion_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_completion_defaults_and_stop, setup, teardown),
        cmocka_unit_test_setup_teardown (test_concurrent_completions, setup, teardown),
        cmocka_unit_test_setup_teardown (test_malformed_json, setup, teardown),
        cmocka_unit_test_setup_teardown (test_invalid_requests, setup, teardown),
        cmocka_unit_test_setup_teardown (test_unknown_path_and_method, setup, teardown),
        cmocka_unit_test_setup_teardown (test_models, setup, teardown),
        cmocka_unit_test_setup_teardown (test_health, setup, teardown),
        cmocka_unit_test_setup_teardown (test_tokenizer_error, setup, teardown),
        cmocka_unit_test_setup_teardown (test_client_disconnect_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_client_disconnect_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_bad_tokenizer_messages, setup, teardown),
        cmocka_unit_test_setup_teardown (test_body_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown (test_peer_down_and_up, setup, teardown),
        cmocka_unit_test_setup_teardown (test_drain, setup, teardown),
        cmocka_unit_test_setup_teardown (test_term_with_request_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown (test_idle_connections_at_term, setup, teardown),
        cmocka_unit_test_setup_teardown (test_bind_failure, setup, teardown),
        cmocka_unit_test_setup_teardown (test_chat_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_chat_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_chat_stream_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_chat_stream_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_chat_tool_calls, setup_auto_tools, teardown),
        cmocka_unit_test_setup_teardown (test_chat_tool_calls_stream, setup_auto_tools,
                                         teardown),
        cmocka_unit_test_setup_teardown (test_chat_tools_need_auto_flag, setup, teardown),
        cmocka_unit_test_setup_teardown (test_chat_invalid_requests, setup, teardown),
        cmocka_unit_test_setup_teardown (test_completion_stream_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_completion_stream_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_stream_error_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_stream_error_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_stream_disconnect_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_stream_disconnect_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_stream_pings, setup, teardown),
        cmocka_unit_test_setup_teardown (test_stream_many_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown (test_stream_peer_down, setup, teardown),
        cmocka_unit_test_setup_teardown (test_term_with_stream_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
