/*  test_frontend — the HTTP actor, driven by a real HTTP client (curl, HTTP/1.1 and h2c
    with prior knowledge, h2 and HTTP/1.1 over TLS) against a fake tokenizer (a ROUTER in
    the test thread) and a fake scheduler (a PUB for STATUS): completions and chat
    completions, whole and streamed (server-sent events, parsed here event by event),
    tool calls, errors before and during a stream, clients that go away; beam search and
    vLLM's output options in GENERATE; several prompts in one completion (one GENERATE
    each, choices by global index, errors and cancels); the API key, CORS, /version,
    /v1/models/{id}, the queue limit (429), /metrics (the queue time included, and the
    Prometheus text of metrics.c on its own), TLS with ALPN.

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
#include <strings.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frontend.h"
#include "metrics.h"
#include "protocol.h"

#define MODEL           "test-model"
#define MAX_BODY        4096
#define WAIT_MSEC       5000

typedef struct {
    zactor_t *actor;
    frontend_args_t args;
    const char *scheme;             //  "http" or "https"
    char tls_dir [64];              //  certificate and key made for a TLS test, or ""
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
    char headers_path [64];         //  curl -D: the response's headers
} call_t;

//  What curl got.
typedef struct {
    int status;                     //  HTTP status, 0 when there was no response
    char version [8];               //  "1.1", "2"
    int exit_code;                  //  curl's exit code (7: could not connect, 28: timeout)
    char content_type [64];         //  "application/json", "text/event-stream", "" when none
    char *headers;                  //  the response's header lines (the last response's)
    char *body;
    json_t *json;                   //  the body parsed, or NULL
} response_t;

static int s_fixture_count = 0;

//  LeakSanitizer suppressions for h2o's own per-thread caches: see frontend.c.


//  --------------------------------------------------------------------------
//  Fixture

//  A fixture whose actor is not started yet: set args, then s_fixture_start.
static fixture_t *
s_fixture_prepare (void)
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
    fixture->args.version = "9.8.7-test";
    fixture->scheme = "http";
    return fixture;
}

static void
s_fixture_start (fixture_t *fixture)
{
    fixture->actor = zactor_new (frontend_actor, &fixture->args);
    assert_non_null (fixture->actor);
    if (fixture->args.error [0])
        print_error ("the frontend did not start: %s\n", fixture->args.error);
    assert_string_equal (fixture->args.error, "");
    assert_true (fixture->args.bound_port != 0);
}

static fixture_t *
s_fixture_new (bool enable_auto_tool_choice)
{
    fixture_t *fixture = s_fixture_prepare ();
    fixture->args.enable_auto_tool_choice = enable_auto_tool_choice;
    s_fixture_start (fixture);
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

#define API_KEY "sk-zllm-test-0123456789"

//  A server started with --api-key.
static int
setup_api_key (void **state)
{
    fixture_t *fixture = s_fixture_prepare ();
    fixture->args.api_key = API_KEY;
    s_fixture_start (fixture);
    *state = fixture;
    return 0;
}

#define GOOD_ORIGIN "https://good.example"

//  A server that allows one origin, two methods, two headers, and credentials.
static int
setup_cors (void **state)
{
    fixture_t *fixture = s_fixture_prepare ();
    fixture->args.allowed_origins = "[\"" GOOD_ORIGIN "\", \"http://localhost:3000\"]";
    fixture->args.allowed_methods = "[\"POST\", \"GET\"]";
    fixture->args.allowed_headers = "[\"Authorization\", \"X-Custom\"]";
    fixture->args.allow_credentials = true;
    s_fixture_start (fixture);
    *state = fixture;
    return 0;
}

//  A server started with --max-queued-requests 2.
static int
setup_queue (void **state)
{
    fixture_t *fixture = s_fixture_prepare ();
    fixture->args.max_queued_requests = 2;
    s_fixture_start (fixture);
    *state = fixture;
    return 0;
}

//  Make a self-signed certificate and its key (openssl req) in a new folder dir,
//  for CN localhost. Returns 0, or -1 when the openssl command is not there.
static int
s_make_certificate (char *dir, size_t dir_size, const char *name)
{
    if (system ("openssl version >/dev/null 2>&1") != 0)
        return -1;
    snprintf (dir, dir_size, "/tmp/zllm-test-tls-XXXXXX");
    assert_non_null (mkdtemp (dir));
    char command [512];
    snprintf (command, sizeof command,
              "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
              "-keyout %s/%s.key -out %s/%s.crt >/dev/null 2>&1", dir, name, dir, name);
    assert_int_equal (system (command), 0);
    return 0;
}

static void
s_remove_tls_dir (const char *dir)
{
    if (dir [0]) {
        char command [128];
        snprintf (command, sizeof command, "rm -rf '%s'", dir);
        assert_int_equal (system (command), 0);
    }
}

//  A server on TLS with a self-signed certificate; curl calls take -k. Skipped when
//  the openssl command is missing.
static int
setup_tls (void **state)
{
    fixture_t *fixture = s_fixture_prepare ();
    *state = fixture;
    if (s_make_certificate (fixture->tls_dir, sizeof fixture->tls_dir, "server") != 0)
        return 0;               //  no actor: the test skips
    static char certfile [96], keyfile [96];
    snprintf (certfile, sizeof certfile, "%s/server.crt", fixture->tls_dir);
    snprintf (keyfile, sizeof keyfile, "%s/server.key", fixture->tls_dir);
    fixture->args.ssl_certfile = certfile;
    fixture->args.ssl_keyfile = keyfile;
    fixture->scheme = "https";
    s_fixture_start (fixture);
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
    s_remove_tls_dir (fixture->tls_dir);
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
    snprintf (call->headers_path, sizeof call->headers_path, "/tmp/zllm-test-headers-XXXXXX");
    int headers_fd = mkstemp (call->headers_path);
    assert_true (headers_fd >= 0);
    close (headers_fd);
    bool tls = strcmp (fixture->scheme, "https") == 0;
    char command [2048];
    snprintf (command, sizeof command,
              "curl -s -N -o - -w '\\n%%{http_code} %%{http_version} %%{content_type}' "
              "--max-time 20 -D %s %s"
              "%s -X %s %s '%s://127.0.0.1:%u%s' 2>/dev/null",
              call->headers_path, tls? "-k ": "", options, method, data_option,
              fixture->scheme, (unsigned) fixture->args.bound_port, path);
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
    //  The headers: of the last response (a 100 Continue may come first).
    FILE *headers = fopen (call->headers_path, "rb");
    assert_non_null (headers);
    char *text = (char *) calloc (1, 65536);
    assert_non_null (text);
    size_t text_size = fread (text, 1, 65535, headers);
    text [text_size] = 0;
    fclose (headers);
    unlink (call->headers_path);
    char *last = text, *at = text;
    while ((at = strstr (at, "\r\n\r\n")) && at [4]) {
        at += 4;
        last = at;
    }
    response.headers = strdup (last);
    assert_non_null (response.headers);
    free (text);
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

//  The value of the response header name (any case), in a static buffer, or NULL.
static const char *
s_header (const response_t *response, const char *name)
{
    static char value [512];
    size_t name_size = strlen (name);
    const char *line = response->headers;
    while (line && *line) {
        const char *end = strstr (line, "\r\n");
        size_t size = end? (size_t) (end - line): strlen (line);
        if (size > name_size && line [name_size] == ':'
        &&  strncasecmp (line, name, name_size) == 0) {
            const char *start = line + name_size + 1;
            while (*start == ' ')
                start++;
            size_t value_size = size - (size_t) (start - line);
            if (value_size >= sizeof value)
                value_size = sizeof value - 1;
            memcpy (value, start, value_size);
            value [value_size] = 0;
            return value;
        }
        line = end? end + 2: NULL;
    }
    return NULL;
}

static void
s_response_reset (response_t *response)
{
    free (response->headers);
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

//  An OUTPUT for choice index of a request (completion_tokens: that choice's total).
static void
s_send_choice_output (fixture_t *fixture, uint64_t request_id, uint32_t index,
                      const char *text, proto_finish_t finish, uint32_t prompt_tokens,
                      uint32_t completion_tokens)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_OUTPUT;
    msg.request_id = request_id;
    msg.index = index;
    assert_int_equal (proto_msg_set_text (&msg, text), 0);
    msg.finish = finish;
    msg.prompt_tokens = prompt_tokens;
    msg.completion_tokens = completion_tokens;
    assert_non_null (fixture->peer);
    assert_int_equal (proto_send_to (&msg, fixture->router, fixture->peer), 0);
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
    assert_true (generate.sampling.temperature == 0.0f);
    assert_true (generate.sampling.seed == 7);
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
        assert_true (generate.sampling.temperature == 1.0f);
        seeds [round] = generate.sampling.seed;
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
                       s_body ("\"prompt\":[[1,2],[3,\"x\"]]"));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "prompt[1][1]",
                         "'prompt[1][1]' must be a token id: an integer from 0 to 4294967295");
    s_response_reset (&response);

    response = s_call (fixture, "", "POST", "/v1/completions",
                       s_body ("\"prompt\":\"a\",\"use_beam_search\":true,"
                               "\"stream\":true"));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "use_beam_search",
                         "beam search cannot be streamed");
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
//  usage chunk, which has none), whatever its index.
static json_t *
s_check_chunk_any (json_t *event, const char *id, const char *object, bool include_usage)
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
    assert_true (json_is_integer (json_object_get (choice, "index")));
    assert_true (json_is_null (json_object_get (choice, "logprobs")));
    return choice;
}

//  The same, for a stream of one choice: its index is 0.
static json_t *
s_check_chunk (json_t *event, const char *id, const char *object, bool include_usage)
{
    json_t *choice = s_check_chunk_any (event, id, object, include_usage);
    if (choice)
        assert_int_equal (json_integer_value (json_object_get (choice, "index")), 0);
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
    assert_true (generate.sampling.temperature == 0.0f);
    assert_true (generate.sampling.seed == 11);
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
        s_chat_body ("'messages':[{'role':'user','content':'Hi'}],'n':200"));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "n", "must be from 1 to 128");
    s_response_reset (&response);

    response = s_call (fixture, "--http2-prior-knowledge", "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Hi'}],'n':2,'best_of':3,"
                     "'stream':true"));
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", "best_of",
                         "best_of above n cannot be streamed");
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


//  --------------------------------------------------------------------------
//  /version, /v1/models/{id}

static void
test_version (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    response_t response = s_call (fixture, "", "GET", "/version", NULL);
    assert_int_equal (response.status, 200);
    assert_non_null (response.json);
    assert_string_equal (json_string_value (json_object_get (response.json, "version")),
                         "9.8.7-test");
    s_response_reset (&response);
    response = s_call (fixture, "--http2-prior-knowledge", "POST", "/version", "{}");
    assert_int_equal (response.status, 405);
    s_response_reset (&response);
}

static void
test_model_by_id (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    response_t list = s_call (fixture, "", "GET", "/v1/models", NULL);
    assert_int_equal (list.status, 200);
    json_t *listed = json_array_get (json_object_get (list.json, "data"), 0);
    assert_non_null (listed);
    const char *options [2] = { "--http1.1", "--http2-prior-knowledge" };
    for (int round = 0; round < 2; round++) {
        response_t response = s_call (fixture, options [round], "GET", "/v1/models/" MODEL,
                                      NULL);
        assert_int_equal (response.status, 200);
        assert_true (json_equal (response.json, listed));
        s_response_reset (&response);

        response = s_call (fixture, options [round], "GET", "/v1/models/gpt-4o", NULL);
        assert_int_equal (response.status, 404);
        s_assert_error_body (&response, "invalid_request_error", "model",
                             "The model 'gpt-4o' does not exist");
        assert_string_equal (json_string_value (json_object_get (
            json_object_get (response.json, "error"), "code")), "model_not_found");
        s_response_reset (&response);
    }
    response_t response = s_call (fixture, "", "DELETE", "/v1/models/" MODEL, NULL);
    assert_int_equal (response.status, 405);
    s_response_reset (&response);
    s_response_reset (&list);
}

//  A served name with a slash and a space, as Hugging Face names have: the id in the
//  path may be percent-encoded (the OpenAI SDKs encode it) or not.
static void
test_model_by_id_encoded (void **state)
{
    fixture_t *fixture = s_fixture_prepare ();
    *state = fixture;
    fixture->args.model_name = "org/tiny model";
    s_fixture_start (fixture);
    const char *paths [] = { "/v1/models/org%2Ftiny%20model", "/v1/models/org/tiny%20model",
                             "/v1/models/org%2ftiny%20model" };
    for (size_t index = 0; index < sizeof paths / sizeof paths [0]; index++) {
        response_t response = s_call (fixture, "", "GET", paths [index], NULL);
        if (response.status != 200)
            print_error ("%s: %d %s\n", paths [index], response.status, response.body);
        assert_int_equal (response.status, 200);
        assert_string_equal (json_string_value (json_object_get (response.json, "id")),
                             "org/tiny model");
        s_response_reset (&response);
    }
    response_t response = s_call (fixture, "", "GET", "/v1/models/org%2Fother", NULL);
    assert_int_equal (response.status, 404);
    s_assert_error_body (&response, "invalid_request_error", "model", "'org/other'");
    s_response_reset (&response);
}


//  --------------------------------------------------------------------------
//  The API key

//  Check a 401 as OpenAI sends it.
static void
s_assert_unauthorized (response_t *response, const char *fragment)
{
    assert_int_equal (response->status, 401);
    s_assert_error_body (response, "authentication_error", NULL, fragment);
    assert_string_equal (json_string_value (json_object_get (
        json_object_get (response->json, "error"), "code")), "invalid_api_key");
    assert_non_null (s_header (response, "www-authenticate"));
    assert_string_equal (s_header (response, "www-authenticate"), "Bearer");
}

static void
test_api_key (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    const char *body = s_body ("\"prompt\":\"secret\"");
    //  No key, a wrong key, a longer and a shorter key, another scheme.
    response_t response = s_call (fixture, "", "POST", "/v1/completions", body);
    s_assert_unauthorized (&response, "You didn't provide an API key");
    s_response_reset (&response);
    const char *wrong [] = {
        "-H 'Authorization: Bearer sk-wrong'",
        "-H 'Authorization: Bearer " API_KEY "x'",
        "-H 'Authorization: Bearer sk-zllm-test-012345678'",
        "-H 'Authorization: Basic " API_KEY "'",
        "-H 'Authorization: Bearer'",
        "-H 'Authorization: " API_KEY "'"
    };
    for (size_t index = 0; index < sizeof wrong / sizeof wrong [0]; index++) {
        response = s_call (fixture, wrong [index], "POST", "/v1/completions", body);
        s_assert_unauthorized (&response, "Incorrect API key provided");
        s_response_reset (&response);
    }
    //  Every path under /v1 is guarded, over HTTP/2 too; nothing reached the tokenizer.
    response = s_call (fixture, "--http2-prior-knowledge", "GET", "/v1/models", NULL);
    s_assert_unauthorized (&response, "API key");
    assert_string_equal (response.version, "2");
    s_response_reset (&response);
    response = s_call (fixture, "", "GET", "/v1/nothing", NULL);
    s_assert_unauthorized (&response, "API key");
    s_response_reset (&response);
    s_expect_nothing (fixture, 50);

    //  The right key (the scheme in any case) is served.
    call_t *call = s_call_start (fixture, "-H 'Authorization: bearer " API_KEY "'",
                                 "POST", "/v1/completions", body);
    uint64_t request_id = s_expect_generate (fixture, "secret");
    s_send_output (fixture, request_id, "ok", PROTO_FINISH_STOP, 1, 1);
    response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
    response = s_call (fixture, "--http2-prior-knowledge -H 'Authorization: Bearer "
                       API_KEY "'", "GET", "/v1/models/" MODEL, NULL);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);

    //  /health, /version and /metrics stay open, as vLLM leaves them.
    response = s_call (fixture, "", "GET", "/health", NULL);
    assert_int_equal (response.status, 503);       //  no STATUS yet, but no 401
    s_response_reset (&response);
    response = s_call (fixture, "", "GET", "/version", NULL);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
    response = s_call (fixture, "", "GET", "/metrics", NULL);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);

    //  A CORS preflight carries no credentials and needs none; the 401 that follows
    //  still says which origin may read it.
    response = s_call (fixture, "-H 'Origin: https://app.example' "
                       "-H 'Access-Control-Request-Method: POST' "
                       "-H 'Access-Control-Request-Headers: authorization, content-type'",
                       "OPTIONS", "/v1/completions", NULL);
    assert_int_equal (response.status, 204);
    s_response_reset (&response);
    response = s_call (fixture, "-H 'Origin: https://app.example'", "POST",
                       "/v1/completions", body);
    s_assert_unauthorized (&response, "API key");
    assert_string_equal (s_header (&response, "access-control-allow-origin"), "*");
    s_response_reset (&response);
}


//  --------------------------------------------------------------------------
//  CORS

//  The default, as vLLM's: every origin, method and header.
static void
test_cors_default (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    //  No Origin: no CORS headers at all.
    response_t response = s_call (fixture, "", "GET", "/v1/models", NULL);
    assert_int_equal (response.status, 200);
    assert_null (s_header (&response, "access-control-allow-origin"));
    s_response_reset (&response);

    //  Any origin: "*", on answers and errors alike.
    response = s_call (fixture, "-H 'Origin: https://any.example'", "GET", "/v1/models",
                       NULL);
    assert_int_equal (response.status, 200);
    assert_string_equal (s_header (&response, "access-control-allow-origin"), "*");
    assert_null (s_header (&response, "access-control-allow-credentials"));
    s_response_reset (&response);
    response = s_call (fixture, "--http2-prior-knowledge -H 'Origin: https://any.example'",
                       "GET", "/v1/nothing", NULL);
    assert_int_equal (response.status, 404);
    assert_string_equal (s_header (&response, "access-control-allow-origin"), "*");
    s_response_reset (&response);

    //  A preflight: 204, the methods, the headers asked for, how long it holds.
    const char *options [2] = { "--http1.1", "--http2-prior-knowledge" };
    for (int round = 0; round < 2; round++) {
        char curl_options [512];
        snprintf (curl_options, sizeof curl_options,
                  "%s -H 'Origin: https://any.example' "
                  "-H 'Access-Control-Request-Method: POST' "
                  "-H 'Access-Control-Request-Headers: authorization, x-stainless-os'",
                  options [round]);
        response = s_call (fixture, curl_options, "OPTIONS", "/v1/chat/completions", NULL);
        assert_int_equal (response.status, 204);
        assert_string_equal (response.body, "");
        assert_string_equal (s_header (&response, "access-control-allow-origin"), "*");
        assert_non_null (strstr (s_header (&response, "access-control-allow-methods"),
                                 "POST"));
        assert_string_equal (s_header (&response, "access-control-allow-headers"),
                             "authorization, x-stainless-os");
        assert_string_equal (s_header (&response, "access-control-max-age"), "600");
        s_response_reset (&response);
    }
    //  OPTIONS that is no preflight: as any other method the path does not take.
    response = s_call (fixture, "", "OPTIONS", "/v1/completions", NULL);
    assert_int_equal (response.status, 405);
    s_response_reset (&response);
    s_expect_nothing (fixture, 50);
}

//  Allowed origins, methods and headers named, with credentials.
static void
test_cors_restricted (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    //  An allowed origin is named (never "*" with credentials), and Vary says so.
    response_t response = s_call (fixture, "-H 'Origin: " GOOD_ORIGIN "'", "GET",
                                  "/v1/models", NULL);
    assert_int_equal (response.status, 200);
    assert_string_equal (s_header (&response, "access-control-allow-origin"), GOOD_ORIGIN);
    assert_string_equal (s_header (&response, "access-control-allow-credentials"), "true");
    assert_string_equal (s_header (&response, "vary"), "Origin");
    s_response_reset (&response);

    //  Another origin gets its answer, without CORS headers: the browser hides it.
    response = s_call (fixture, "-H 'Origin: https://evil.example'", "GET", "/v1/models",
                       NULL);
    assert_int_equal (response.status, 200);
    assert_null (s_header (&response, "access-control-allow-origin"));
    s_response_reset (&response);

    //  A streamed answer carries them too.
    call_t *call = s_call_start (fixture, "--http2-prior-knowledge -H 'Origin: "
                                 GOOD_ORIGIN "'", "POST", "/v1/completions",
                                 s_body ("\"prompt\":\"cors\",\"stream\":true"));
    uint64_t request_id = s_expect_generate (fixture, "cors");
    s_send_output (fixture, request_id, "yes", PROTO_FINISH_STOP, 1, 1);
    response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    assert_string_equal (response.content_type, "text/event-stream");
    assert_string_equal (s_header (&response, "access-control-allow-origin"), GOOD_ORIGIN);
    s_response_reset (&response);

    //  Preflights: allowed, and refused for the origin, the method, a header.
    response = s_call (fixture, "-H 'Origin: " GOOD_ORIGIN "' "
                       "-H 'Access-Control-Request-Method: POST' "
                       "-H 'Access-Control-Request-Headers: X-Custom,content-type'",
                       "OPTIONS", "/v1/completions", NULL);
    assert_int_equal (response.status, 204);
    assert_string_equal (s_header (&response, "access-control-allow-origin"), GOOD_ORIGIN);
    assert_string_equal (s_header (&response, "access-control-allow-methods"), "POST, GET");
    assert_string_equal (s_header (&response, "access-control-allow-headers"),
                         "Accept, Accept-Language, Content-Language, Content-Type, "
                         "Authorization, X-Custom");
    assert_string_equal (s_header (&response, "access-control-allow-credentials"), "true");
    s_response_reset (&response);
    struct {
        const char *options;
        const char *refused;
    } refusals [] = {
        { "-H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: POST'",
          "origin" },
        { "-H 'Origin: " GOOD_ORIGIN "' -H 'Access-Control-Request-Method: DELETE'",
          "method" },
        { "-H 'Origin: " GOOD_ORIGIN "' -H 'Access-Control-Request-Method: POST' "
          "-H 'Access-Control-Request-Headers: x-custom, x-other'", "headers" }
    };
    for (size_t index = 0; index < sizeof refusals / sizeof refusals [0]; index++) {
        response = s_call (fixture, refusals [index].options, "OPTIONS", "/v1/completions",
                           NULL);
        assert_int_equal (response.status, 400);
        s_assert_error_body (&response, "invalid_request_error", NULL,
                             refusals [index].refused);
        assert_null (s_header (&response, "access-control-allow-origin"));
        s_response_reset (&response);
    }
}

static void
test_cors_lists (void **state)
{
    (void) state;
    char error [256];
    assert_int_equal (frontend_check_string_list ("[\"*\"]", error, sizeof error), 0);
    assert_int_equal (frontend_check_string_list ("[]", error, sizeof error), 0);
    assert_int_equal (frontend_check_string_list ("[\"https://a.example\", \"b\"]", error,
                                                  sizeof error), 0);
    assert_int_equal (frontend_check_string_list ("[\"a\"", error, sizeof error), -1);
    assert_non_null (strstr (error, "not valid JSON"));
    assert_int_equal (frontend_check_string_list ("https://a.example", error,
                                                  sizeof error), -1);
    assert_non_null (strstr (error, "not valid JSON"));
    assert_int_equal (frontend_check_string_list ("{\"a\":1}", error, sizeof error), -1);
    assert_non_null (strstr (error, "not a JSON list"));
    assert_int_equal (frontend_check_string_list ("[\"a\", 1]", error, sizeof error), -1);
    assert_non_null (strstr (error, "element 1"));
    assert_int_equal (frontend_check_string_list ("[\"\"]", error, sizeof error), -1);

    //  The actor refuses to start with a bad list, and says which.
    fixture_t *fixture = s_fixture_prepare ();
    fixture->args.allowed_headers = "[1]";
    zactor_t *actor = zactor_new (frontend_actor, &fixture->args);
    assert_non_null (strstr (fixture->args.error, "--allowed-headers"));
    zactor_destroy (&actor);
    fixture->args.error [0] = 0;
    fixture->args.allowed_headers = NULL;
    fixture->args.allowed_origins = "[";
    actor = zactor_new (frontend_actor, &fixture->args);
    assert_non_null (strstr (fixture->args.error, "--allowed-origins"));
    zactor_destroy (&actor);
    *(void **) state = fixture;             //  for teardown
}


//  --------------------------------------------------------------------------
//  n choices

//  The choices of a plain answer, checked against the expected JSON array (written
//  with ' for "), and its usage.
static void
s_check_choices (response_t *response, const char *expected_quoted,
                 uint32_t prompt_tokens, uint32_t completion_tokens)
{
    if (response->status != 200)
        print_error ("status %d, body '%s'\n", response->status, response->body);
    assert_int_equal (response->status, 200);
    assert_non_null (response->json);
    json_t *expected = s_json_quoted (expected_quoted);
    json_t *choices = json_object_get (response->json, "choices");
    if (!json_equal (choices, expected))
        print_error ("body: %s\n", response->body);
    assert_true (json_equal (choices, expected));
    json_decref (expected);
    json_t *usage = json_object_get (response->json, "usage");
    assert_int_equal (json_integer_value (json_object_get (usage, "prompt_tokens")),
                      prompt_tokens);
    assert_int_equal (json_integer_value (json_object_get (usage, "completion_tokens")),
                      completion_tokens);
    assert_int_equal (json_integer_value (json_object_get (usage, "total_tokens")),
                      prompt_tokens + completion_tokens);
}

//  n=3: GENERATE asks for 3; OUTPUTs for the three choices come interleaved and finish
//  out of order (2, then 0, then 1); the answer waits for the last and lists them in
//  index order, each with its text and finish reason; usage sums the choices' tokens.
static void
s_check_choices_completion (fixture_t *fixture, const char *options, const char *version)
{
    call_t *call = s_call_start (fixture, options, "POST", "/v1/completions",
        s_body ("\"prompt\":\"Once\",\"n\":3,\"best_of\":3,\"temperature\":1,\"seed\":40,"
                "\"max_tokens\":4"));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    assert_int_equal (generate.n, 3);
    assert_true (generate.sampling.seed == 40);
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);

    s_send_choice_output (fixture, request_id, 0, "A", PROTO_FINISH_NONE, 2, 1);
    s_send_choice_output (fixture, request_id, 1, "B", PROTO_FINISH_NONE, 2, 1);
    s_send_choice_output (fixture, request_id, 2, "C", PROTO_FINISH_STOP, 2, 1);
    s_send_choice_output (fixture, request_id, 1, "b", PROTO_FINISH_NONE, 2, 2);
    s_send_choice_output (fixture, request_id, 0, "a", PROTO_FINISH_NONE, 2, 3);
    s_send_choice_output (fixture, request_id, 0, "!", PROTO_FINISH_LENGTH, 2, 4);
    //  Two of three have finished: nothing is answered yet.
    zclock_sleep (50);
    s_send_choice_output (fixture, request_id, 1, "", PROTO_FINISH_STOP, 2, 3);
    response_t response = s_call_finish (call);
    assert_string_equal (response.version, version);
    char id [32];
    snprintf (id, sizeof id, "cmpl-%016" PRIx64, request_id);
    assert_string_equal (json_string_value (json_object_get (response.json, "id")), id);
    s_check_choices (&response,
        "[{'index':0,'text':'Aa!','logprobs':null,'finish_reason':'length'},"
        " {'index':1,'text':'Bb','logprobs':null,'finish_reason':'stop'},"
        " {'index':2,'text':'C','logprobs':null,'finish_reason':'stop'}]", 2, 8);
    s_response_reset (&response);
}

static void
test_choices_completion_http1 (void **state)
{
    s_check_choices_completion ((fixture_t *) *state, "--http1.1", "1.1");
}

static void
test_choices_completion_h2c (void **state)
{
    s_check_choices_completion ((fixture_t *) *state, "--http2-prior-knowledge", "2");
}

//  Chat, n=2: each choice its own message; one calls a tool, the other writes text.
static void
test_choices_chat (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Weather in Paris?'}],"
                     "'tools':[" TOOL_WEATHER "],'n':2"));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    assert_int_equal (generate.n, 2);
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);

    s_send_choice_output (fixture, request_id, 1, "Let me", PROTO_FINISH_NONE, 20, 2);
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_OUTPUT;
    msg.request_id = request_id;
    msg.index = 0;
    assert_int_equal (proto_msg_set_text (&msg, ""), 0);
    assert_int_equal (proto_msg_set_tool_calls (&msg,
        "[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":"
        "{\"name\":\"get_weather\",\"arguments\":\"{}\"}}]"), 0);
    msg.prompt_tokens = 20;
    msg.completion_tokens = 9;
    assert_int_equal (proto_send_to (&msg, fixture->router, fixture->peer), 0);
    proto_msg_reset (&msg);
    s_send_choice_output (fixture, request_id, 1, " see.", PROTO_FINISH_STOP, 20, 4);
    s_send_choice_output (fixture, request_id, 0, "", PROTO_FINISH_TOOL_CALLS, 20, 10);
    response_t response = s_call_finish (call);
    s_check_choices (&response,
        "[{'index':0,'message':{'role':'assistant','content':null,'tool_calls':"
        "  [{'id':'call_1','type':'function','function':{'name':'get_weather',"
        "    'arguments':'{}'}}]},'logprobs':null,'finish_reason':'tool_calls'},"
        " {'index':1,'message':{'role':'assistant','content':'Let me see.'},"
        "  'logprobs':null,'finish_reason':'stop'}]", 20, 14);
    s_response_reset (&response);
}

//  The events of a stream of n choices: every chunk one choice; per index, the texts
//  (completions: text, chat: delta.content) joined into texts [index] (each at least
//  64 bytes), exactly one finish (finishes [index]) after which nothing more comes for
//  that index; then the usage chunk when asked for, and [DONE]. Chat streams open with
//  the role chunks of choices 0 .. n-1, in order. Returns the usage chunk or NULL.
static json_t *
s_check_choices_stream (json_t *events, const char *id, bool chat, uint32_t n,
                        bool include_usage, char texts [][64], const char *finishes [])
{
    const char *object = chat? "chat.completion.chunk": "text_completion";
    size_t count = json_array_size (events);
    size_t at = 0;
    for (uint32_t index = 0; index < n; index++) {
        texts [index][0] = 0;
        finishes [index] = NULL;
    }
    if (chat)
        for (uint32_t index = 0; index < n; index++, at++) {
            json_t *choice = s_check_chunk_any (json_array_get (events, at), id, object,
                                                include_usage);
            assert_non_null (choice);
            assert_int_equal (json_integer_value (json_object_get (choice, "index")), index);
            json_t *delta = json_object_get (choice, "delta");
            assert_string_equal (json_string_value (json_object_get (delta, "role")),
                                 "assistant");
            assert_string_equal (json_string_value (json_object_get (delta, "content")), "");
        }
    uint32_t finished = 0;
    json_t *usage_chunk = NULL;
    for (; at < count - 1; at++) {
        json_t *event = json_array_get (events, at);
        json_t *choice = s_check_chunk_any (event, id, object, include_usage);
        if (!choice) {
            //  The usage chunk: after every finish, just before [DONE].
            assert_int_equal (finished, n);
            assert_int_equal (at, count - 2);
            usage_chunk = event;
            continue;
        }
        json_int_t index = json_integer_value (json_object_get (choice, "index"));
        assert_true (index >= 0 && index < (json_int_t) n);
        assert_null (finishes [index]);             //  nothing after its finish
        const char *finish = s_finish_of (choice);
        json_t *text = chat? json_object_get (json_object_get (choice, "delta"), "content")
                           : json_object_get (choice, "text");
        if (text) {
            assert_true (strlen (texts [index]) + json_string_length (text) < 64);
            strcat (texts [index], json_string_value (text));
        }
        if (finish) {
            finishes [index] = finish;
            finished++;
        }
    }
    assert_int_equal (finished, n);
    assert_true (include_usage == (usage_chunk != NULL));
    assert_string_equal (json_string_value (json_array_get (events, count - 1)), "[DONE]");
    return usage_chunk;
}

//  Streamed, n=3, include_usage: interleaved OUTPUTs, choices finishing out of order.
static void
s_check_choices_stream_call (fixture_t *fixture, const char *options, const char *version,
                             bool chat)
{
    call_t *call;
    if (chat)
        call = s_call_start (fixture, options, "POST", "/v1/chat/completions",
            s_chat_body ("'messages':[{'role':'user','content':'Hi'}],'n':3,'stream':true,"
                         "'stream_options':{'include_usage':true}"));
    else
        call = s_call_start (fixture, options, "POST", "/v1/completions",
            s_body ("\"prompt\":\"Once\",\"n\":3,\"stream\":true,"
                    "\"stream_options\":{\"include_usage\":true}"));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    assert_int_equal (generate.n, 3);
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);

    s_send_choice_output (fixture, request_id, 2, "C", PROTO_FINISH_NONE, 5, 1);
    s_send_choice_output (fixture, request_id, 0, "A", PROTO_FINISH_NONE, 5, 1);
    s_send_choice_output (fixture, request_id, 1, "B", PROTO_FINISH_NONE, 5, 1);
    s_send_choice_output (fixture, request_id, 1, "", PROTO_FINISH_NONE, 5, 2);
    s_send_choice_output (fixture, request_id, 0, "a", PROTO_FINISH_STOP, 5, 3);
    s_send_choice_output (fixture, request_id, 2, "c", PROTO_FINISH_NONE, 5, 2);
    s_send_choice_output (fixture, request_id, 2, "", PROTO_FINISH_LENGTH, 5, 3);
    s_send_choice_output (fixture, request_id, 1, "b", PROTO_FINISH_STOP, 5, 4);
    response_t response = s_call_finish (call);
    int pings;
    json_t *events = s_stream_events (&response, version, &pings);
    char id [40];
    snprintf (id, sizeof id, "%s-%016" PRIx64, chat? "chatcmpl": "cmpl", request_id);
    //  (chat: 3 roles), 6 texts, 3 finishes, usage, [DONE]
    size_t expected_count = (chat? 3: 0) + 6 + 3 + 2;
    if (json_array_size (events) != expected_count)
        print_error ("body: %s\n", response.body);
    assert_int_equal (json_array_size (events), expected_count);
    char texts [3][64];
    const char *finishes [3];
    json_t *usage_chunk = s_check_choices_stream (events, id, chat, 3, true, texts,
                                                  finishes);
    assert_string_equal (texts [0], "Aa");
    assert_string_equal (texts [1], "Bb");
    assert_string_equal (texts [2], "Cc");
    assert_string_equal (finishes [0], "stop");
    assert_string_equal (finishes [1], "stop");
    assert_string_equal (finishes [2], "length");
    s_check_usage_chunk (usage_chunk, 5, 10);
    json_decref (events);
    s_response_reset (&response);
}

static void
test_choices_stream_http1 (void **state)
{
    s_check_choices_stream_call ((fixture_t *) *state, "--http1.1", "1.1", false);
    s_check_choices_stream_call ((fixture_t *) *state, "--http1.1", "1.1", true);
}

static void
test_choices_stream_h2c (void **state)
{
    s_check_choices_stream_call ((fixture_t *) *state, "--http2-prior-knowledge", "2", false);
    s_check_choices_stream_call ((fixture_t *) *state, "--http2-prior-knowledge", "2", true);
}

//  n=128, streamed chat: 128 role chunks, one token each, all in reverse order.
static void
test_choices_many (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    enum { N = 128 };
    call_t *call = s_call_start (fixture, "--http2-prior-knowledge", "POST",
                                 "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Hi'}],'n':128,'stream':true"));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    assert_int_equal (generate.n, N);
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);
    for (int index = N - 1; index >= 0; index--) {
        char text [16];
        snprintf (text, sizeof text, "%d", index);
        s_send_choice_output (fixture, request_id, (uint32_t) index, text,
                              PROTO_FINISH_LENGTH, 3, 1);
    }
    response_t response = s_call_finish (call);
    int pings;
    json_t *events = s_stream_events (&response, "2", &pings);
    char id [40];
    snprintf (id, sizeof id, "chatcmpl-%016" PRIx64, request_id);
    assert_int_equal (json_array_size (events), N + N + N + 1);
    static char texts [N][64];
    const char *finishes [N];
    assert_null (s_check_choices_stream (events, id, true, N, false, texts, finishes));
    for (int index = 0; index < N; index++) {
        char text [16];
        snprintf (text, sizeof text, "%d", index);
        assert_string_equal (texts [index], text);
        assert_string_equal (finishes [index], "length");
    }
    json_decref (events);
    s_response_reset (&response);
}

//  An OUTPUT for a choice that has finished is skipped; one for a choice the request
//  does not have fails the request (500) and cancels it: it would never finish.
static void
test_choices_bad_outputs (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":\"late\",\"n\":2"));
    uint64_t request_id = s_expect_generate (fixture, "late");
    s_send_choice_output (fixture, request_id, 0, "x", PROTO_FINISH_STOP, 1, 1);
    s_send_choice_output (fixture, request_id, 0, "late", PROTO_FINISH_STOP, 1, 2);
    s_send_choice_output (fixture, request_id, 1, "y", PROTO_FINISH_STOP, 1, 1);
    response_t response = s_call_finish (call);
    s_check_choices (&response,
        "[{'index':0,'text':'x','logprobs':null,'finish_reason':'stop'},"
        " {'index':1,'text':'y','logprobs':null,'finish_reason':'stop'}]", 1, 2);
    s_response_reset (&response);

    call = s_call_start (fixture, "--http2-prior-knowledge", "POST", "/v1/completions",
                         s_body ("\"prompt\":\"odd\",\"n\":2,\"stream\":true"));
    request_id = s_expect_generate (fixture, "odd");
    s_send_choice_output (fixture, request_id, 2, "z", PROTO_FINISH_STOP, 1, 1);
    response = s_call_finish (call);
    assert_int_equal (response.status, 500);
    s_assert_error_body (&response, "server_error", NULL, "a choice the request does not have");
    s_response_reset (&response);
    proto_msg_t cancel = PROTO_MSG_INIT;
    assert_int_equal (s_tokenizer_recv (fixture, &cancel, WAIT_MSEC), 0);
    assert_int_equal (cancel.kind, PROTO_CANCEL);
    assert_true (cancel.request_id == request_id);
    proto_msg_reset (&cancel);
}

//  A stream of n choices whose client goes away: one CANCEL for the request.
static void
test_choices_disconnect (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "--max-time 1 --http2-prior-knowledge", "POST",
                                 "/v1/completions",
                                 s_body ("\"prompt\":\"gone\",\"n\":4,\"stream\":true"));
    uint64_t request_id = s_expect_generate (fixture, "gone");
    s_send_choice_output (fixture, request_id, 3, "d", PROTO_FINISH_NONE, 1, 1);
    s_send_choice_output (fixture, request_id, 0, "a", PROTO_FINISH_STOP, 1, 1);
    response_t response = s_call_finish (call);
    assert_int_equal (response.exit_code, 28);
    s_response_reset (&response);
    proto_msg_t cancel = PROTO_MSG_INIT;
    assert_int_equal (s_tokenizer_recv (fixture, &cancel, WAIT_MSEC), 0);
    assert_int_equal (cancel.kind, PROTO_CANCEL);
    assert_true (cancel.request_id == request_id);
    proto_msg_reset (&cancel);
    s_send_choice_output (fixture, request_id, 1, "late", PROTO_FINISH_STOP, 1, 1);
    s_expect_nothing (fixture, 100);
}

#define LABEL "{model_name=\"" MODEL "\"}"

//  The value of a sample in the /metrics text (the line "<sample> <value>"), or -1.
static double s_metric (const char *text, const char *sample);

//  Metrics of a request with 3 choices: one request, finished with choice 0's reason;
//  generation tokens summed; inter-token latency per choice.
static void
test_choices_metrics (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":\"m\",\"n\":3"));
    uint64_t request_id = s_expect_generate (fixture, "m");
    s_send_choice_output (fixture, request_id, 2, "q", PROTO_FINISH_LENGTH, 4, 2);
    s_send_choice_output (fixture, request_id, 0, "x", PROTO_FINISH_NONE, 4, 1);
    s_send_choice_output (fixture, request_id, 1, "p", PROTO_FINISH_NONE, 4, 1);
    s_send_choice_output (fixture, request_id, 1, "", PROTO_FINISH_LENGTH, 4, 2);
    s_send_choice_output (fixture, request_id, 0, "y", PROTO_FINISH_STOP, 4, 3);
    response_t response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);

    response = s_call (fixture, "", "GET", "/metrics", NULL);
    const char *text = response.body;
    assert_true (s_metric (text, "zllm:prompt_tokens_total" LABEL) == 4);
    assert_true (s_metric (text, "zllm:generation_tokens_total" LABEL) == 7);
    assert_true (s_metric (text, "zllm:request_success_total{model_name=\"" MODEL
                           "\",finished_reason=\"stop\"}") == 1);
    assert_true (s_metric (text, "zllm:request_success_total{model_name=\"" MODEL
                           "\",finished_reason=\"length\"}") == 0);
    assert_true (s_metric (text, "zllm:time_to_first_token_seconds_count" LABEL) == 1);
    assert_true (s_metric (text, "zllm:e2e_request_latency_seconds_count" LABEL) == 1);
    //  Choice 0: tokens 1 -> 3 (2 samples); choice 1: 1 -> 2 (1); choice 2: none.
    assert_true (s_metric (text, "zllm:inter_token_latency_seconds_count" LABEL) == 3);
    s_response_reset (&response);
}


//  --------------------------------------------------------------------------
//  The queue limit

//  Publish a whole STATUS.
static void
s_publish_status_full (fixture_t *fixture, uint32_t running, uint32_t kv_used,
                       uint32_t kv_total, uint64_t prefix_queries, uint64_t prefix_hits,
                       uint64_t preemptions)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_STATUS;
    msg.workers = 1;
    msg.running = running;
    msg.kv_blocks_used = kv_used;
    msg.kv_blocks_total = kv_total;
    msg.prefix_queries = prefix_queries;
    msg.prefix_hits = prefix_hits;
    msg.preemptions = preemptions;
    assert_int_equal (proto_send (&msg, fixture->publisher), 0);
}

//  The value of a sample in the /metrics text (the line "<sample> <value>"), or -1.
static double
s_metric (const char *text, const char *sample)
{
    size_t size = strlen (sample);
    const char *at = text;
    while ((at = strstr (at, sample))) {
        if ((at == text || at [-1] == '\n') && at [size] == ' ')
            return strtod (at + size + 1, NULL);
        at += size;
    }
    return -1;
}

//  Publish STATUS until /metrics shows this many running (the SUB joins late).
static void
s_wait_running (fixture_t *fixture, uint32_t running, uint32_t kv_used, uint32_t kv_total)
{
    int64_t deadline = zclock_mono () + WAIT_MSEC;
    double seen = -1;
    while (zclock_mono () < deadline) {
        s_publish_status_full (fixture, running, kv_used, kv_total, 40, 10, 3);
        response_t response = s_call (fixture, "", "GET", "/metrics", NULL);
        assert_int_equal (response.status, 200);
        seen = s_metric (response.body, "zllm:num_requests_running" LABEL);
        s_response_reset (&response);
        if (seen == running)
            break;
        zclock_sleep (20);
    }
    assert_true (seen == running);
}

static void
test_queue_full (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    //  Two requests passed on, none running: the queue (2) is full.
    call_t *calls [3];
    uint64_t ids [3];
    calls [0] = s_call_start (fixture, "", "POST", "/v1/completions",
                              s_body ("\"prompt\":\"q0\""));
    ids [0] = s_expect_generate (fixture, "q0");
    calls [1] = s_call_start (fixture, "--http2-prior-knowledge", "POST",
                              "/v1/chat/completions",
                              s_chat_body ("'messages':[{'role':'user','content':'q1'}]"));
    ids [1] = s_expect_generate (fixture, NULL);
    const char *options [2] = { "--http1.1", "--http2-prior-knowledge" };
    for (int round = 0; round < 2; round++) {
        response_t response = s_call (fixture, options [round], "POST", "/v1/completions",
                                      s_body ("\"prompt\":\"q2\",\"stream\":true"));
        assert_int_equal (response.status, 429);
        s_assert_error_body (&response, "rate_limit_error", NULL, "--max-queued-requests 2");
        assert_string_equal (s_header (&response, "retry-after"), "1");
        s_response_reset (&response);
    }
    s_expect_nothing (fixture, 50);
    //  Other endpoints are not limited.
    response_t response = s_call (fixture, "", "GET", "/v1/models", NULL);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
    response = s_call (fixture, "", "GET", "/metrics", NULL);
    assert_true (s_metric (response.body, "zllm:num_requests_waiting" LABEL) == 2);
    s_response_reset (&response);

    //  The scheduler runs one: one is waiting, so a third is taken.
    s_wait_running (fixture, 1, 1, 8);
    response = s_call (fixture, "", "GET", "/metrics", NULL);
    assert_true (s_metric (response.body, "zllm:num_requests_waiting" LABEL) == 1);
    s_response_reset (&response);
    calls [2] = s_call_start (fixture, "", "POST", "/v1/completions",
                              s_body ("\"prompt\":\"q3\""));
    ids [2] = s_expect_generate (fixture, "q3");
    for (int index = 0; index < 3; index++)
        s_send_output (fixture, ids [index], "done", PROTO_FINISH_STOP, 1, 1);
    for (int index = 0; index < 3; index++) {
        response = s_call_finish (calls [index]);
        assert_int_equal (response.status, 200);
        s_response_reset (&response);
    }
}


//  --------------------------------------------------------------------------
//  /metrics

//  Check the Prometheus text: every sample's name has "# HELP" and "# TYPE" lines
//  before it; histograms' buckets are cumulative and end with +Inf = _count.
static void
s_check_prometheus_text (const char *text)
{
    struct {
        const char *name;
        const char *type;
    } metrics [] = {
        { "zllm:num_requests_running", "gauge" },
        { "zllm:num_requests_waiting", "gauge" },
        { "zllm:kv_cache_usage_perc", "gauge" },
        { "zllm:prompt_tokens_total", "counter" },
        { "zllm:generation_tokens_total", "counter" },
        { "zllm:request_success_total", "counter" },
        { "zllm:prefix_cache_queries_total", "counter" },
        { "zllm:prefix_cache_hits_total", "counter" },
        { "zllm:num_preemptions_total", "counter" },
        { "zllm:time_to_first_token_seconds", "histogram" },
        { "zllm:inter_token_latency_seconds", "histogram" },
        { "zllm:e2e_request_latency_seconds", "histogram" },
        { "zllm:request_queue_time_seconds", "histogram" }
    };
    for (size_t index = 0; index < sizeof metrics / sizeof metrics [0]; index++) {
        char line [160];
        snprintf (line, sizeof line, "\n# TYPE %s %s\n", metrics [index].name,
                  metrics [index].type);
        if (!strstr (text, line))
            print_error ("no TYPE line for %s\n", metrics [index].name);
        assert_non_null (strstr (text, line));
        snprintf (line, sizeof line, "# HELP %s ", metrics [index].name);
        assert_non_null (strstr (text, line));
    }
    //  Every line: a comment, or "name{labels} value" with a number for value.
    const char *line = text;
    while (*line) {
        const char *end = strchr (line, '\n');
        assert_non_null (end);                      //  the text ends with a newline
        if (*line != '#') {
            const char *space = memchr (line, ' ', (size_t) (end - line));
            assert_non_null (space);
            assert_true (space [-1] == '}');
            char *number_end = NULL;
            strtod (space + 1, &number_end);
            assert_true (number_end == end);
        }
        line = end + 1;
    }
    //  Histograms: cumulative buckets, the last +Inf, equal to _count.
    const char *histograms [] = { "zllm:time_to_first_token_seconds",
                                  "zllm:inter_token_latency_seconds",
                                  "zllm:e2e_request_latency_seconds",
                                  "zllm:request_queue_time_seconds" };
    for (size_t index = 0; index < sizeof histograms / sizeof histograms [0]; index++) {
        char prefix [128];
        snprintf (prefix, sizeof prefix, "%s_bucket{model_name=\"" MODEL "\",le=\"",
                  histograms [index]);
        double previous = 0, bound = 0;
        const char *at = text;
        int buckets = 0;
        bool infinite = false;
        while ((at = strstr (at, prefix))) {
            at += strlen (prefix);
            assert_false (infinite);                //  +Inf is the last
            if (strncmp (at, "+Inf", 4) == 0)
                infinite = true;
            else {
                double next = strtod (at, NULL);
                assert_true (next > bound);
                bound = next;
            }
            double value = strtod (strstr (at, "} ") + 2, NULL);
            assert_true (value >= previous);
            previous = value;
            buckets++;
        }
        assert_true (infinite);
        assert_true (buckets > 10);
        char count [128];
        snprintf (count, sizeof count, "%s_count" LABEL, histograms [index]);
        assert_true (s_metric (text, count) == previous);
    }
}

static void
test_metrics (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    response_t response = s_call (fixture, "", "GET", "/metrics", NULL);
    assert_int_equal (response.status, 200);
    assert_string_equal (s_header (&response, "content-type"),
                         "text/plain; version=0.0.4; charset=utf-8");
    s_check_prometheus_text (response.body);
    assert_true (s_metric (response.body, "zllm:prompt_tokens_total" LABEL) == 0);
    assert_true (s_metric (response.body, "zllm:kv_cache_usage_perc" LABEL) == 0);
    assert_true (s_metric (response.body, "zllm:request_success_total{model_name=\""
                           MODEL "\",finished_reason=\"stop\"}") == 0);
    s_response_reset (&response);

    //  Gauges and the scheduler's counters come from STATUS.
    s_wait_running (fixture, 2, 3, 12);

    //  A completion in three OUTPUTs (the first with no text: half a character), and
    //  a streamed chat in two.
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":\"m\""));
    uint64_t request_id = s_expect_generate (fixture, "m");
    s_send_output (fixture, request_id, "", PROTO_FINISH_NONE, 3, 1);
    zclock_sleep (20);
    s_send_output (fixture, request_id, "ab", PROTO_FINISH_NONE, 3, 2);
    zclock_sleep (20);
    s_send_output (fixture, request_id, "cd", PROTO_FINISH_NONE, 3, 4);
    s_send_output (fixture, request_id, "", PROTO_FINISH_LENGTH, 3, 4);
    response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
    call = s_call_start (fixture, "--http2-prior-knowledge", "POST", "/v1/chat/completions",
                         s_chat_body ("'messages':[{'role':'user','content':'x'}],"
                                      "'stream':true"));
    request_id = s_expect_generate (fixture, NULL);
    s_send_output (fixture, request_id, "Hi", PROTO_FINISH_NONE, 5, 1);
    s_send_output (fixture, request_id, "!", PROTO_FINISH_STOP, 5, 2);
    response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
    //  One that fails counts in no success.
    call = s_call_start (fixture, "", "POST", "/v1/completions", s_body ("\"prompt\":\"f\""));
    request_id = s_expect_generate (fixture, "f");
    s_send_error (fixture, request_id, 400, "too long");
    response = s_call_finish (call);
    assert_int_equal (response.status, 400);
    s_response_reset (&response);

    response = s_call (fixture, "--http2-prior-knowledge", "GET", "/metrics", NULL);
    assert_int_equal (response.status, 200);
    const char *text = response.body;
    s_check_prometheus_text (text);
    assert_true (s_metric (text, "zllm:num_requests_running" LABEL) == 2);
    assert_true (s_metric (text, "zllm:num_requests_waiting" LABEL) == 0);
    assert_true (s_metric (text, "zllm:kv_cache_usage_perc" LABEL) == 0.25);
    assert_true (s_metric (text, "zllm:prefix_cache_queries_total" LABEL) == 40);
    assert_true (s_metric (text, "zllm:prefix_cache_hits_total" LABEL) == 10);
    assert_true (s_metric (text, "zllm:num_preemptions_total" LABEL) == 3);
    assert_true (s_metric (text, "zllm:prompt_tokens_total" LABEL) == 8);
    assert_true (s_metric (text, "zllm:generation_tokens_total" LABEL) == 6);
    assert_true (s_metric (text, "zllm:request_success_total{model_name=\"" MODEL
                           "\",finished_reason=\"stop\"}") == 1);
    assert_true (s_metric (text, "zllm:request_success_total{model_name=\"" MODEL
                           "\",finished_reason=\"length\"}") == 1);
    assert_true (s_metric (text, "zllm:request_success_total{model_name=\"" MODEL
                           "\",finished_reason=\"tool_calls\"}") == 0);
    assert_true (s_metric (text, "zllm:time_to_first_token_seconds_count" LABEL) == 2);
    assert_true (s_metric (text, "zllm:e2e_request_latency_seconds_count" LABEL) == 2);
    //  Tokens after the first text: 2 (2 -> 4) in the completion, 1 in the chat.
    assert_true (s_metric (text, "zllm:inter_token_latency_seconds_count" LABEL) == 3);
    //  The completion took at least the 40 ms slept.
    assert_true (s_metric (text, "zllm:e2e_request_latency_seconds_sum" LABEL) >= 0.04);
    assert_true (s_metric (text, "zllm:time_to_first_token_seconds_sum" LABEL) >= 0.02);
    s_response_reset (&response);

    //  HEAD answers too; other methods do not.
    response = s_call (fixture, "", "POST", "/metrics", "{}");
    assert_int_equal (response.status, 405);
    s_response_reset (&response);
}

//  The Prometheus text on its own: formatting, buckets, escaping.
static void
test_metrics_text (void **state)
{
    (void) state;
    metrics_t *metrics = metrics_new ("m\"odel\\name\n2");
    assert_non_null (metrics);
    metrics_time_to_first_token (metrics, 0.1);         //  on a bound: le="0.1"
    metrics_time_to_first_token (metrics, 3000);        //  beyond every bound: +Inf
    metrics_inter_token_latency (metrics, 0.1, 4);      //  four of 0.025
    metrics_inter_token_latency (metrics, 1, 0);        //  no tokens: nothing
    metrics_request_finished (metrics, "tool_calls", 7, 5, 1.25);
    metrics_request_finished (metrics, "other", 1, 1, 0.2);
    metrics_queue_time (metrics, 0.3);                  //  on a bound: le="0.3"
    metrics_queue_time (metrics, 0.0);
    metrics_queue_time (metrics, 10000);                //  beyond every bound: +Inf
    metrics_status_t status = { .running = 3, .waiting = 1, .kv_blocks_used = 1,
                                .kv_blocks_total = 3, .prefix_queries = 12345678901ull,
                                .prefix_hits = 10000000000000000ull };
    char *text = metrics_text (metrics, &status);
    assert_non_null (text);
    const char *expected [] = {
        "# HELP zllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE zllm:num_requests_running gauge\n"
        "zllm:num_requests_running{model_name=\"m\\\"odel\\\\name\\n2\"} 3.0\n",
        "zllm:num_requests_waiting{model_name=\"m\\\"odel\\\\name\\n2\"} 1.0\n",
        "zllm:kv_cache_usage_perc{model_name=\"m\\\"odel\\\\name\\n2\"} 0.3333333333333333\n",
        "zllm:prefix_cache_queries_total{model_name=\"m\\\"odel\\\\name\\n2\"} 12345678901.0\n",
        "zllm:prefix_cache_hits_total{model_name=\"m\\\"odel\\\\name\\n2\"} 1e+16\n",
        "zllm:prompt_tokens_total{model_name=\"m\\\"odel\\\\name\\n2\"} 8.0\n",
        "zllm:generation_tokens_total{model_name=\"m\\\"odel\\\\name\\n2\"} 6.0\n",
        "zllm:request_success_total{model_name=\"m\\\"odel\\\\name\\n2\",finished_reason=\"stop\"} 0.0\n"
        "zllm:request_success_total{model_name=\"m\\\"odel\\\\name\\n2\",finished_reason=\"length\"} 0.0\n"
        "zllm:request_success_total{model_name=\"m\\\"odel\\\\name\\n2\",finished_reason=\"tool_calls\"} 1.0\n",
        "zllm:time_to_first_token_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"0.08\"} 0.0\n"
        "zllm:time_to_first_token_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"0.1\"} 1.0\n",
        "zllm:time_to_first_token_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"2560.0\"} 1.0\n"
        "zllm:time_to_first_token_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"+Inf\"} 2.0\n"
        "zllm:time_to_first_token_seconds_sum{model_name=\"m\\\"odel\\\\name\\n2\"} 3000.1\n"
        "zllm:time_to_first_token_seconds_count{model_name=\"m\\\"odel\\\\name\\n2\"} 2.0\n",
        "# TYPE zllm:inter_token_latency_seconds histogram\n"
        "zllm:inter_token_latency_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"0.01\"} 0.0\n"
        "zllm:inter_token_latency_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"0.025\"} 4.0\n",
        "zllm:inter_token_latency_seconds_sum{model_name=\"m\\\"odel\\\\name\\n2\"} 0.1\n"
        "zllm:inter_token_latency_seconds_count{model_name=\"m\\\"odel\\\\name\\n2\"} 4.0\n",
        "zllm:e2e_request_latency_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"0.3\"} 1.0\n",
        "zllm:e2e_request_latency_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"1.5\"} 2.0\n",
        "zllm:e2e_request_latency_seconds_count{model_name=\"m\\\"odel\\\\name\\n2\"} 2.0\n",
        "# HELP zllm:request_queue_time_seconds Histogram of time spent in WAITING phase for request.\n"
        "# TYPE zllm:request_queue_time_seconds histogram\n"
        "zllm:request_queue_time_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"0.3\"} 2.0\n"
        "zllm:request_queue_time_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"0.5\"} 2.0\n",
        "zllm:request_queue_time_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"7680.0\"} 2.0\n"
        "zllm:request_queue_time_seconds_bucket{model_name=\"m\\\"odel\\\\name\\n2\",le=\"+Inf\"} 3.0\n"
        "zllm:request_queue_time_seconds_sum{model_name=\"m\\\"odel\\\\name\\n2\"} 10000.3\n"
        "zllm:request_queue_time_seconds_count{model_name=\"m\\\"odel\\\\name\\n2\"} 3.0\n"
    };
    for (size_t index = 0; index < sizeof expected / sizeof expected [0]; index++) {
        if (!strstr (text, expected [index]))
            print_error ("missing:\n%s\nin:\n%s\n", expected [index], text);
        assert_non_null (strstr (text, expected [index]));
    }
    free (text);

    //  No KV blocks known yet: usage 0.
    metrics_status_t empty = { 0 };
    text = metrics_text (metrics, &empty);
    assert_non_null (strstr (text, "zllm:kv_cache_usage_perc{model_name=\"m\\\"odel\\\\name\\n2\"} 0.0\n"));
    free (text);
    metrics_destroy (&metrics);
    assert_null (metrics);
    metrics_destroy (&metrics);
}


//  --------------------------------------------------------------------------
//  Beam search, vLLM's output options, several prompts, queue time

//  An OUTPUT for choice index of a request, with its queue_us.
static void
s_send_queued_output (fixture_t *fixture, uint64_t request_id, uint32_t index,
                      const char *text, proto_finish_t finish, uint32_t prompt_tokens,
                      uint32_t completion_tokens, uint64_t queue_us)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_OUTPUT;
    msg.request_id = request_id;
    msg.index = index;
    assert_int_equal (proto_msg_set_text (&msg, text), 0);
    msg.finish = finish;
    msg.prompt_tokens = prompt_tokens;
    msg.completion_tokens = completion_tokens;
    msg.queue_us = queue_us;
    assert_non_null (fixture->peer);
    assert_int_equal (proto_send_to (&msg, fixture->router, fixture->peer), 0);
    proto_msg_reset (&msg);
}

//  Receive count CANCELs, one for each of ids (in any order), then nothing more.
static void
s_expect_cancels (fixture_t *fixture, const uint64_t *ids, size_t count)
{
    bool seen [8] = { false };
    assert_true (count <= 8);
    for (size_t got = 0; got < count; got++) {
        proto_msg_t cancel = PROTO_MSG_INIT;
        assert_int_equal (s_tokenizer_recv (fixture, &cancel, WAIT_MSEC), 0);
        assert_int_equal (cancel.kind, PROTO_CANCEL);
        size_t at = 0;
        while (at < count && (seen [at] || ids [at] != cancel.request_id))
            at++;
        if (at == count)
            print_error ("unexpected CANCEL for %" PRIx64 "\n", cancel.request_id);
        assert_true (at < count);
        seen [at] = true;
        proto_msg_reset (&cancel);
    }
    s_expect_nothing (fixture, 50);
}

//  use_beam_search and its parameters, and the output options, reach GENERATE: the width
//  as best_of, temperature 0; the beams come back whole (each OUTPUT finished), best
//  first, as best_of's do. Without them, GENERATE has the defaults.
static void
test_beam_search_generate (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
        s_body ("\"prompt\":\"Once\",\"use_beam_search\":true,\"n\":2,\"best_of\":3,"
                "\"length_penalty\":0.5,\"early_stopping\":\"never\",\"max_tokens\":4,"
                "\"include_stop_str_in_output\":true,\"skip_special_tokens\":false"));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    assert_string_equal (generate.text, "Once");
    assert_true (generate.use_beam_search);
    assert_int_equal (generate.n, 2);
    assert_int_equal (generate.best_of, 3);
    assert_true (generate.length_penalty == 0.5f);
    assert_int_equal (generate.early_stopping, PROTO_EARLY_STOPPING_NEVER);
    assert_true (generate.sampling.temperature == 0.0f);
    assert_int_equal (generate.max_tokens, 4);
    assert_true (generate.include_stop_str_in_output);
    assert_true (generate.keep_special_tokens);
    assert_false (generate.want_logprobs);
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);
    s_send_choice_output (fixture, request_id, 1, " the end", PROTO_FINISH_STOP, 2, 3);
    s_send_choice_output (fixture, request_id, 0, " upon a time", PROTO_FINISH_LENGTH, 2, 4);
    response_t response = s_call_finish (call);
    s_check_choices (&response,
        "[{'index':0,'text':' upon a time','logprobs':null,'finish_reason':'length'},"
        " {'index':1,'text':' the end','logprobs':null,'finish_reason':'stop'}]", 2, 7);
    s_response_reset (&response);

    //  Chat: the width is n when best_of is not given.
    call = s_call_start (fixture, "--http2-prior-knowledge", "POST", "/v1/chat/completions",
        s_chat_body ("'messages':[{'role':'user','content':'Hi'}],'use_beam_search':true,"
                     "'n':2,'early_stopping':true"));
    s_expect_generate_msg (fixture, &generate);
    assert_true (generate.use_beam_search);
    assert_int_equal (generate.n, 2);
    assert_int_equal (generate.best_of, 2);
    assert_true (generate.length_penalty == 1.0f);
    assert_int_equal (generate.early_stopping, PROTO_EARLY_STOPPING_TRUE);
    assert_true (generate.sampling.temperature == 0.0f);
    assert_false (generate.include_stop_str_in_output);
    assert_false (generate.keep_special_tokens);
    request_id = generate.request_id;
    proto_msg_reset (&generate);
    s_send_choice_output (fixture, request_id, 0, "Hello!", PROTO_FINISH_STOP, 9, 3);
    s_send_choice_output (fixture, request_id, 1, "Hi!", PROTO_FINISH_STOP, 9, 2);
    response = s_call_finish (call);
    s_check_choices (&response,
        "[{'index':0,'message':{'role':'assistant','content':'Hello!'},'logprobs':null,"
        "  'finish_reason':'stop'},"
        " {'index':1,'message':{'role':'assistant','content':'Hi!'},'logprobs':null,"
        "  'finish_reason':'stop'}]", 9, 5);
    s_response_reset (&response);

    //  Neither: the defaults.
    call = s_call_start (fixture, "", "POST", "/v1/completions",
                         s_body ("\"prompt\":\"x\",\"n\":2"));
    s_expect_generate_msg (fixture, &generate);
    assert_false (generate.use_beam_search);
    assert_int_equal (generate.best_of, 0);
    assert_true (generate.length_penalty == 1.0f);
    assert_int_equal (generate.early_stopping, PROTO_EARLY_STOPPING_FALSE);
    assert_true (generate.sampling.temperature == 1.0f);
    assert_false (generate.include_stop_str_in_output);
    assert_false (generate.keep_special_tokens);
    assert_int_equal (generate.n_tokens, 0);
    request_id = generate.request_id;
    proto_msg_reset (&generate);
    s_send_choice_output (fixture, request_id, 0, "a", PROTO_FINISH_STOP, 1, 1);
    s_send_choice_output (fixture, request_id, 1, "b", PROTO_FINISH_STOP, 1, 1);
    response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
}

//  Receive the GENERATEs of a request with count prompts, in the prompts' order: their
//  ids (all different) into ids; each GENERATE is checked to ask for n choices.
static void
s_expect_prompts (fixture_t *fixture, uint32_t count, uint32_t n, const char *const *texts,
                  uint64_t *ids)
{
    for (uint32_t index = 0; index < count; index++) {
        proto_msg_t generate = PROTO_MSG_INIT;
        s_expect_generate_msg (fixture, &generate);
        assert_int_equal (generate.n, n);
        if (texts)
            assert_string_equal (generate.text, texts [index]);
        ids [index] = generate.request_id;
        for (uint32_t before = 0; before < index; before++)
            assert_true (ids [before] != ids [index]);
        proto_msg_reset (&generate);
    }
}

//  Two prompts, n=2, echo: a GENERATE for each (the same seed), their OUTPUTs
//  interleaved; choice j of prompt i is choice 2i + j, each echoing its own prompt;
//  usage sums both prompts' tokens; the id is that of the first prompt.
static void
s_check_prompts_completion (fixture_t *fixture, const char *options, const char *version)
{
    call_t *call = s_call_start (fixture, options, "POST", "/v1/completions",
        s_body ("\"prompt\":[\"A\",\"BB\"],\"n\":2,\"seed\":5,\"echo\":true"));
    uint64_t ids [2];
    for (uint32_t index = 0; index < 2; index++) {
        proto_msg_t generate = PROTO_MSG_INIT;
        s_expect_generate_msg (fixture, &generate);
        assert_string_equal (generate.text, index? "BB": "A");
        assert_int_equal (generate.n_tokens, 0);
        assert_int_equal (generate.n, 2);
        assert_true (generate.sampling.seed == 5);
        ids [index] = generate.request_id;
        proto_msg_reset (&generate);
    }
    assert_true (ids [0] != ids [1]);
    s_send_choice_output (fixture, ids [1], 1, "d", PROTO_FINISH_NONE, 3, 1);
    s_send_choice_output (fixture, ids [0], 0, "a", PROTO_FINISH_STOP, 2, 1);
    s_send_choice_output (fixture, ids [1], 0, "c", PROTO_FINISH_LENGTH, 3, 2);
    s_send_choice_output (fixture, ids [0], 1, "b", PROTO_FINISH_STOP, 2, 1);
    //  Prompt 0 has finished, prompt 1 has not: nothing is answered yet.
    zclock_sleep (50);
    s_send_choice_output (fixture, ids [1], 1, "!", PROTO_FINISH_LENGTH, 3, 2);
    response_t response = s_call_finish (call);
    assert_string_equal (response.version, version);
    char id [32];
    snprintf (id, sizeof id, "cmpl-%016" PRIx64, ids [0]);
    assert_string_equal (json_string_value (json_object_get (response.json, "id")), id);
    s_check_choices (&response,
        "[{'index':0,'text':'Aa','logprobs':null,'finish_reason':'stop'},"
        " {'index':1,'text':'Ab','logprobs':null,'finish_reason':'stop'},"
        " {'index':2,'text':'BBc','logprobs':null,'finish_reason':'length'},"
        " {'index':3,'text':'BBd!','logprobs':null,'finish_reason':'length'}]", 5, 6);
    s_response_reset (&response);
}

static void
test_prompts_completion_http1 (void **state)
{
    s_check_prompts_completion ((fixture_t *) *state, "--http1.1", "1.1");
}

static void
test_prompts_completion_h2c (void **state)
{
    s_check_prompts_completion ((fixture_t *) *state, "--http2-prior-knowledge", "2");
}

//  Prompts of token ids go as GENERATE.tokens (no text): one array is one prompt, an
//  array of arrays several.
static void
test_prompts_tokens (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":[[1,2],[4294967295]],\"max_tokens\":3"));
    uint64_t ids [2];
    for (uint32_t index = 0; index < 2; index++) {
        proto_msg_t generate = PROTO_MSG_INIT;
        s_expect_generate_msg (fixture, &generate);
        assert_true (!generate.text || !*generate.text);
        assert_null (generate.chat);
        assert_int_equal (generate.max_tokens, 3);
        if (index == 0) {
            assert_int_equal (generate.n_tokens, 2);
            assert_int_equal (generate.tokens [0], 1);
            assert_int_equal (generate.tokens [1], 2);
        }
        else {
            assert_int_equal (generate.n_tokens, 1);
            assert_int_equal (generate.tokens [0], UINT32_MAX);
        }
        ids [index] = generate.request_id;
        proto_msg_reset (&generate);
    }
    s_send_choice_output (fixture, ids [1], 0, "y", PROTO_FINISH_STOP, 1, 1);
    s_send_choice_output (fixture, ids [0], 0, "x", PROTO_FINISH_LENGTH, 2, 3);
    response_t response = s_call_finish (call);
    s_check_choices (&response,
        "[{'index':0,'text':'x','logprobs':null,'finish_reason':'length'},"
        " {'index':1,'text':'y','logprobs':null,'finish_reason':'stop'}]", 3, 4);
    s_response_reset (&response);

    call = s_call_start (fixture, "--http2-prior-knowledge", "POST", "/v1/completions",
                         s_body ("\"prompt\":[5,6,7]"));
    proto_msg_t generate = PROTO_MSG_INIT;
    s_expect_generate_msg (fixture, &generate);
    assert_int_equal (generate.n_tokens, 3);
    assert_int_equal (generate.tokens [2], 7);
    uint64_t request_id = generate.request_id;
    proto_msg_reset (&generate);
    s_expect_nothing (fixture, 50);             //  one prompt, one GENERATE
    s_send_output (fixture, request_id, "z", PROTO_FINISH_STOP, 3, 1);
    response = s_call_finish (call);
    s_check_choices (&response,
        "[{'index':0,'text':'z','logprobs':null,'finish_reason':'stop'}]", 3, 1);
    s_response_reset (&response);
}

//  Streamed, two prompts, n=2, echo and include_usage: every chunk names its choice by
//  its index in the whole request; the finish of all a prompt's choices ends nothing;
//  the usage chunk (both prompts' tokens) and [DONE] come after the last.
static void
s_check_prompts_stream (fixture_t *fixture, const char *options, const char *version)
{
    call_t *call = s_call_start (fixture, options, "POST", "/v1/completions",
        s_body ("\"prompt\":[\"P\",\"Q\"],\"n\":2,\"echo\":true,\"stream\":true,"
                "\"stream_options\":{\"include_usage\":true}"));
    uint64_t ids [2];
    const char *texts_sent [2] = { "P", "Q" };
    s_expect_prompts (fixture, 2, 2, texts_sent, ids);
    s_send_choice_output (fixture, ids [1], 1, "d", PROTO_FINISH_NONE, 3, 1);
    s_send_choice_output (fixture, ids [0], 0, "a", PROTO_FINISH_STOP, 2, 1);
    s_send_choice_output (fixture, ids [0], 1, "b", PROTO_FINISH_LENGTH, 2, 1);
    zclock_sleep (50);
    s_send_choice_output (fixture, ids [1], 0, "c", PROTO_FINISH_STOP, 3, 1);
    s_send_choice_output (fixture, ids [1], 1, "", PROTO_FINISH_STOP, 3, 2);
    response_t response = s_call_finish (call);
    int pings;
    json_t *events = s_stream_events (&response, version, &pings);
    char id [40];
    snprintf (id, sizeof id, "cmpl-%016" PRIx64, ids [0]);
    //  4 echoes, 4 texts, 4 finishes, usage, [DONE]
    if (json_array_size (events) != 14)
        print_error ("body: %s\n", response.body);
    assert_int_equal (json_array_size (events), 14);
    char texts [4][64];
    const char *finishes [4];
    json_t *usage_chunk = s_check_choices_stream (events, id, false, 4, true, texts,
                                                  finishes);
    assert_string_equal (texts [0], "Pa");
    assert_string_equal (texts [1], "Pb");
    assert_string_equal (texts [2], "Qc");
    assert_string_equal (texts [3], "Qd");
    assert_string_equal (finishes [0], "stop");
    assert_string_equal (finishes [1], "length");
    assert_string_equal (finishes [2], "stop");
    assert_string_equal (finishes [3], "stop");
    s_check_usage_chunk (usage_chunk, 5, 5);
    json_decref (events);
    s_response_reset (&response);
}

static void
test_prompts_stream_http1 (void **state)
{
    s_check_prompts_stream ((fixture_t *) *state, "--http1.1", "1.1");
}

static void
test_prompts_stream_h2c (void **state)
{
    s_check_prompts_stream ((fixture_t *) *state, "--http2-prior-knowledge", "2");
}

//  An ERROR for one prompt fails the whole request (its status and message) and
//  CANCELs the prompts still in flight: not the one that failed, not one that has
//  finished. Streamed, after the stream has started: the error event, then [DONE].
static void
test_prompts_error (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":[\"A\",\"B\",\"C\",\"D\"]"));
    uint64_t ids [4];
    s_expect_prompts (fixture, 4, 1, NULL, ids);
    s_send_choice_output (fixture, ids [0], 0, "a", PROTO_FINISH_STOP, 1, 1);
    s_send_choice_output (fixture, ids [1], 0, "b", PROTO_FINISH_NONE, 1, 1);
    s_send_error (fixture, ids [2], 400, "prompt C: token 99999 is not in the vocabulary");
    response_t response = s_call_finish (call);
    assert_int_equal (response.status, 400);
    s_assert_error_body (&response, "invalid_request_error", NULL,
                         "prompt C: token 99999 is not in the vocabulary");
    s_response_reset (&response);
    uint64_t cancelled [2] = { ids [1], ids [3] };
    s_expect_cancels (fixture, cancelled, 2);
    //  What comes late for the request is dropped.
    s_send_choice_output (fixture, ids [1], 0, "", PROTO_FINISH_STOP, 1, 2);
    s_expect_nothing (fixture, 50);

    call = s_call_start (fixture, "--http2-prior-knowledge", "POST", "/v1/completions",
                         s_body ("\"prompt\":[\"A\",\"B\"],\"stream\":true"));
    s_expect_prompts (fixture, 2, 1, NULL, ids);
    s_send_choice_output (fixture, ids [0], 0, "a", PROTO_FINISH_NONE, 1, 1);
    s_send_error (fixture, ids [1], 503, "no worker");
    response = s_call_finish (call);
    int pings;
    json_t *events = s_stream_events (&response, "2", &pings);
    assert_int_equal (json_array_size (events), 3);
    json_t *error = json_object_get (json_array_get (events, 1), "error");
    assert_string_equal (json_string_value (json_object_get (error, "message")), "no worker");
    assert_string_equal (json_string_value (json_object_get (error, "type")), "server_error");
    assert_string_equal (json_string_value (json_array_get (events, 2)), "[DONE]");
    json_decref (events);
    s_response_reset (&response);
    s_expect_cancels (fixture, ids, 1);
}

//  A client that goes away cancels every prompt still in flight.
static void
test_prompts_disconnect (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    const char *options [2] = { "--max-time 1 --http1.1", "--max-time 1 --http2-prior-knowledge" };
    for (int round = 0; round < 2; round++) {
        call_t *call = s_call_start (fixture, options [round], "POST", "/v1/completions",
                                     s_body ("\"prompt\":[\"A\",\"B\",\"C\"],\"n\":2"));
        uint64_t ids [3];
        s_expect_prompts (fixture, 3, 2, NULL, ids);
        //  Prompt 1 finishes: it is not cancelled.
        s_send_choice_output (fixture, ids [1], 0, "b", PROTO_FINISH_STOP, 1, 1);
        s_send_choice_output (fixture, ids [1], 1, "b", PROTO_FINISH_STOP, 1, 1);
        s_send_choice_output (fixture, ids [0], 1, "a", PROTO_FINISH_NONE, 1, 1);
        response_t response = s_call_finish (call);
        assert_int_equal (response.exit_code, 28);
        s_response_reset (&response);
        uint64_t cancelled [2] = { ids [0], ids [2] };
        s_expect_cancels (fixture, cancelled, 2);
    }
}

//  The queue limit counts prompts: a request of 3 prompts is let in while fewer than 2
//  wait, then counts as 3 waiting.
static void
test_prompts_queue (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":[\"a\",\"b\",\"c\"]"));
    uint64_t ids [3];
    s_expect_prompts (fixture, 3, 1, NULL, ids);
    response_t response = s_call (fixture, "", "GET", "/metrics", NULL);
    assert_true (s_metric (response.body, "zllm:num_requests_waiting" LABEL) == 3);
    s_response_reset (&response);
    response = s_call (fixture, "", "POST", "/v1/completions", s_body ("\"prompt\":\"d\""));
    assert_int_equal (response.status, 429);
    s_assert_error_body (&response, "rate_limit_error", NULL, "3 requests are already waiting");
    s_response_reset (&response);
    //  One prompt finished, the scheduler runs one: one waits, a new one is let in.
    s_send_output (fixture, ids [0], "A", PROTO_FINISH_STOP, 1, 1);
    s_wait_running (fixture, 1, 1, 8);
    response = s_call (fixture, "", "GET", "/metrics", NULL);
    assert_true (s_metric (response.body, "zllm:num_requests_waiting" LABEL) == 1);
    s_response_reset (&response);
    call_t *other = s_call_start (fixture, "", "POST", "/v1/completions",
                                  s_body ("\"prompt\":\"e\""));
    uint64_t other_id = s_expect_generate (fixture, "e");
    s_send_output (fixture, ids [1], "B", PROTO_FINISH_STOP, 1, 1);
    s_send_output (fixture, ids [2], "C", PROTO_FINISH_STOP, 1, 1);
    s_send_output (fixture, other_id, "E", PROTO_FINISH_STOP, 1, 1);
    response = s_call_finish (call);
    s_check_choices (&response,
        "[{'index':0,'text':'A','logprobs':null,'finish_reason':'stop'},"
        " {'index':1,'text':'B','logprobs':null,'finish_reason':'stop'},"
        " {'index':2,'text':'C','logprobs':null,'finish_reason':'stop'}]", 3, 3);
    s_response_reset (&response);
    response = s_call_finish (other);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);
}

//  request_queue_time_seconds: one sample per prompt, from the queue_us of its first
//  OUTPUT (later ones are not counted), whatever choice it is for.
static void
test_queue_time_metric (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    call_t *call = s_call_start (fixture, "", "POST", "/v1/completions",
                                 s_body ("\"prompt\":\"q\",\"n\":2"));
    uint64_t request_id = s_expect_generate (fixture, "q");
    s_send_queued_output (fixture, request_id, 1, "", PROTO_FINISH_NONE, 1, 1, 1500000);
    s_send_queued_output (fixture, request_id, 0, "a", PROTO_FINISH_STOP, 1, 1, 7000000);
    s_send_queued_output (fixture, request_id, 1, "b", PROTO_FINISH_STOP, 1, 2, 7000000);
    response_t response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);

    call = s_call_start (fixture, "--http2-prior-knowledge", "POST", "/v1/completions",
                         s_body ("\"prompt\":[\"r\",\"s\"],\"stream\":true"));
    uint64_t ids [2];
    s_expect_prompts (fixture, 2, 1, NULL, ids);
    s_send_queued_output (fixture, ids [1], 0, "s", PROTO_FINISH_NONE, 1, 1, 250000);
    s_send_queued_output (fixture, ids [0], 0, "r", PROTO_FINISH_STOP, 1, 1, 0);
    s_send_queued_output (fixture, ids [1], 0, "", PROTO_FINISH_STOP, 1, 1, 9000000);
    response = s_call_finish (call);
    assert_int_equal (response.status, 200);
    s_response_reset (&response);

    response = s_call (fixture, "", "GET", "/metrics", NULL);
    const char *text = response.body;
    s_check_prometheus_text (text);
    assert_true (s_metric (text, "zllm:request_queue_time_seconds_count" LABEL) == 3);
    assert_true (s_metric (text, "zllm:request_queue_time_seconds_sum" LABEL) == 1.75);
    assert_true (s_metric (text, "zllm:request_queue_time_seconds_bucket{model_name=\""
                           MODEL "\",le=\"0.3\"}") == 2);
    assert_true (s_metric (text, "zllm:request_queue_time_seconds_bucket{model_name=\""
                           MODEL "\",le=\"1.0\"}") == 2);
    assert_true (s_metric (text, "zllm:request_queue_time_seconds_bucket{model_name=\""
                           MODEL "\",le=\"1.5\"}") == 3);
    //  Two requests, three prompts: the other histograms count requests.
    assert_true (s_metric (text, "zllm:e2e_request_latency_seconds_count" LABEL) == 2);
    assert_true (s_metric (text, "zllm:prompt_tokens_total" LABEL) == 3);
    assert_true (s_metric (text, "zllm:generation_tokens_total" LABEL) == 5);
    s_response_reset (&response);
}


//  --------------------------------------------------------------------------
//  TLS

static void
test_tls (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    if (!fixture->actor)
        skip ();                            //  no openssl command
    //  ALPN: h2 when the client offers it, HTTP/1.1 when it asks for that.
    const char *options [2] = { "--http2", "--http1.1" };
    const char *versions [2] = { "2", "1.1" };
    for (int round = 0; round < 2; round++) {
        call_t *call = s_call_start (fixture, options [round], "POST", "/v1/completions",
                                     s_body ("\"prompt\":\"tls\",\"stream\":true"));
        uint64_t request_id = s_expect_generate (fixture, "tls");
        s_send_output (fixture, request_id, "secure", PROTO_FINISH_STOP, 1, 1);
        response_t response = s_call_finish (call);
        int pings;
        json_t *events = s_stream_events (&response, versions [round], &pings);
        assert_string_equal (json_string_value (json_array_get (events,
                             json_array_size (events) - 1)), "[DONE]");
        json_decref (events);
        s_response_reset (&response);
        response = s_call (fixture, options [round], "GET", "/v1/models/" MODEL, NULL);
        assert_int_equal (response.status, 200);
        assert_string_equal (response.version, versions [round]);
        s_response_reset (&response);
    }
    //  A client gone over TLS is cancelled as over cleartext.
    s_check_disconnect (fixture, "--http2");
    //  Cleartext on the TLS port gets no HTTP answer.
    fixture->scheme = "http";
    response_t response = s_call (fixture, "", "GET", "/health", NULL);
    assert_int_equal (response.status, 0);
    s_response_reset (&response);
    fixture->scheme = "https";
}

static void
test_tls_refused (void **state)
{
    fixture_t *fixture = (fixture_t *) *state;
    char dir [64], other [64];
    if (s_make_certificate (dir, sizeof dir, "a") != 0
    ||  s_make_certificate (other, sizeof other, "b") != 0)
        skip ();
    char certfile [96], keyfile [96], other_key [96], missing [96];
    snprintf (certfile, sizeof certfile, "%s/a.crt", dir);
    snprintf (keyfile, sizeof keyfile, "%s/a.key", dir);
    snprintf (other_key, sizeof other_key, "%s/b.key", other);
    snprintf (missing, sizeof missing, "%s/none.pem", dir);
    char error [512];
    assert_int_equal (frontend_check_tls (certfile, keyfile, error, sizeof error), 0);
    assert_int_equal (frontend_check_tls (missing, keyfile, error, sizeof error), -1);
    assert_non_null (strstr (error, "--ssl-certfile: cannot read"));
    assert_non_null (strstr (error, "No such file"));
    assert_int_equal (frontend_check_tls (certfile, other_key, error, sizeof error), -1);
    assert_non_null (strstr (error, "does not match"));
    assert_int_equal (frontend_check_tls (keyfile, keyfile, error, sizeof error), -1);
    assert_non_null (strstr (error, "no usable PEM certificate"));
    assert_int_equal (frontend_check_tls (certfile, certfile, error, sizeof error), -1);
    assert_non_null (strstr (error, "no usable PEM private key"));

    //  The actor does not start with them either.
    frontend_args_t args = fixture->args;
    args.ssl_certfile = certfile;
    args.ssl_keyfile = other_key;
    args.error [0] = 0;
    zactor_t *actor = zactor_new (frontend_actor, &args);
    assert_non_null (strstr (args.error, "does not match"));
    zactor_destroy (&actor);
    args.ssl_keyfile = NULL;
    args.error [0] = 0;
    actor = zactor_new (frontend_actor, &args);
    assert_non_null (strstr (args.error, "go together"));
    zactor_destroy (&actor);
    s_remove_tls_dir (dir);
    s_remove_tls_dir (other);
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
        cmocka_unit_test_setup_teardown (test_version, setup, teardown),
        cmocka_unit_test_setup_teardown (test_model_by_id, setup, teardown),
        cmocka_unit_test_setup_teardown (test_model_by_id_encoded, NULL, teardown),
        cmocka_unit_test_setup_teardown (test_api_key, setup_api_key, teardown),
        cmocka_unit_test_setup_teardown (test_cors_default, setup, teardown),
        cmocka_unit_test_setup_teardown (test_cors_restricted, setup_cors, teardown),
        cmocka_unit_test_setup_teardown (test_cors_lists, NULL, teardown),
        cmocka_unit_test_setup_teardown (test_choices_completion_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_choices_completion_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_choices_chat, setup_auto_tools, teardown),
        cmocka_unit_test_setup_teardown (test_choices_stream_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_choices_stream_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_choices_many, setup, teardown),
        cmocka_unit_test_setup_teardown (test_choices_bad_outputs, setup, teardown),
        cmocka_unit_test_setup_teardown (test_choices_disconnect, setup, teardown),
        cmocka_unit_test_setup_teardown (test_choices_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown (test_queue_full, setup_queue, teardown),
        cmocka_unit_test_setup_teardown (test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown (test_beam_search_generate, setup, teardown),
        cmocka_unit_test_setup_teardown (test_prompts_completion_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_prompts_completion_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_prompts_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown (test_prompts_stream_http1, setup, teardown),
        cmocka_unit_test_setup_teardown (test_prompts_stream_h2c, setup, teardown),
        cmocka_unit_test_setup_teardown (test_prompts_error, setup, teardown),
        cmocka_unit_test_setup_teardown (test_prompts_disconnect, setup, teardown),
        cmocka_unit_test_setup_teardown (test_prompts_queue, setup_queue, teardown),
        cmocka_unit_test_setup_teardown (test_queue_time_metric, setup, teardown),
        cmocka_unit_test (test_metrics_text),
        cmocka_unit_test_setup_teardown (test_tls, setup_tls, teardown),
        cmocka_unit_test_setup_teardown (test_tls_refused, setup, teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
