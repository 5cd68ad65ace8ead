/*  frontend — the HTTP actor: h2o's event loop, OpenAI JSON in and out. See frontend.h.

    One thread runs h2o's evloop (h2o 2.2.5). Three ZeroMQ sockets live in that loop: the
    actor's pipe, a DEALER to the tokenizer and a SUB on the scheduler's STATUS. Each is
    watched through its ZMQ_FD, registered with H2O_SOCKET_FLAG_DONT_READ so that h2o
    only says "readable" and never reads ZeroMQ's own fd. ZMQ_FD is edge-triggered: a
    wake-up drains every socket while ZMQ_EVENTS says POLLIN, and after each send made
    outside that drain we look at ZMQ_EVENTS again and, if input waits, run a drain from
    h2o's zero timeout (never re-entrantly).

    A completion (or chat completion) becomes a pending_t allocated in the request's own
    memory pool with a dispose callback. It holds one prompt_t per prompt (a chat has
    one; a completion may have up to COMPLETION_MAX_PROMPTS): each prompt is one
    GENERATE with a request id of its own, and the hash table maps that id to its
    prompt_t (and so to the pending_t) while the prompt is in flight, from its GENERATE
    until its last choice finishes, the request fails or it is cancelled. Each prompt
    asks for n choices (n sequences from it, 1 .. PROTO_MAX_N): the pending_t ends with
    one choice_t per choice of every prompt, choice j of prompt i at i * n + j (the index
    the answer gives it, as OpenAI's and vLLM's), and each OUTPUT names its choice within
    its prompt. Each choice finishes on its own (its last OUTPUT has a finish reason);
    the request is done when all have. An ERROR for one prompt fails the whole request
    and CANCELs its other prompts. Not streamed, OUTPUT messages append text (and merge
    tool calls) to their choice; when the last choice finishes, the answer lists them
    all in index order. When h2o frees a request that has no answer yet (the client
    went away), the dispose callback sends CANCEL for every prompt in flight. HTTP/1.1
    connections are not read while h2o processes a request, so h2o cannot see a client
    leave: a probe twice a second peeks at the socket of every pending HTTP/1 request
    and cancels it when the peer has closed (HTTP/2 tells h2o at once).

    Streamed ("stream": true), each OUTPUT becomes SSE events ("data: <json>\n\n"), each
    chunk naming its choice's index; a chat stream opens with a role chunk per choice,
    each choice gets its finish chunk when it finishes, and the usage chunk (when asked
    for) and [DONE] follow once every choice has finished. The
    response starts (200, text/event-stream) with the first OUTPUT, or when a second has
    passed without one: until then an ERROR is still an ordinary JSON error with its
    status. h2o 2.2.5 allows one h2o_send at a time: what arrives while a send waits for
    the generator's proceed callback goes into a queue, sent as one buffer from proceed;
    a sent buffer lives until proceed. While nothing is written for a second (queued, a
    long prefill) a ": ping" comment goes out, so that a client that went away is seen
    (over HTTP/1.1 a write fails; the probe sees it too). The generator's stop callback
    (the client went away, h2o disposes of the request) sends CANCEL like dispose does.
    After a FINAL send h2o may free the request at once: h2o_send is the last thing a
    function does with a pending_t.

    Every accepted connection is tracked (socket on_close callback) so that "$TERM" can
    answer what is open with 503, let those answers be written, then stop reading every
    connection (shutdown SHUT_RD: h2o sees the end of the stream and closes it), run the
    loop until all are closed, and only then dispose of h2o's context, loop and
    configuration (h2o_context_dispose would assert on their linked timeouts). We do
    not call h2o_context_request_shutdown: its HTTP/2 graceful shutdown links timeouts
    of its own that h2o 2.2.5 does not always unlink before h2o_context_dispose.

    Answers that are not streamed are one h2o_send_inline each (a single FINAL send).

    Around the endpoints (s_on_request), in this order:
      - CORS: a preflight (OPTIONS with Origin and Access-Control-Request-Method) is
        answered at once, 204 when the origin, method and headers are allowed, else
        400. Any other request from an allowed Origin gets Access-Control-Allow-Origin
        (and Allow-Credentials) added to its response headers before anything else is
        done, so every answer carries them, errors and streams included.
      - The API key, on every path under /v1 when one is set: "Authorization: Bearer
        KEY", compared in constant time; else 401. /health, /version and /metrics stay
        open, as vLLM leaves them.
      - For a generation request, the queue limit: "waiting" is the number of prompts
        in flight in the pending table (passed on, not yet answered) less the number
        of requests the scheduler says it runs in its latest STATUS (published on every
        change; each prompt is one request there); a request that finds
        max_queued_requests waiting gets 429 with Retry-After: 1. So a prompt counts
        as waiting from the moment the frontend passes it on (while it is tokenized,
        and while it waits in the scheduler's queue) until the scheduler runs it.

    Metrics (metrics.h): each pending request remembers when it arrived; the first
    OUTPUT of each of its prompts gives that prompt's time in the scheduler's queue
    (queue_us); its first OUTPUT with text or tool calls (of any choice) gives the time
    to first token; each later OUTPUT of a choice with new tokens the inter-token
    latency (the time since that choice's previous one, spread over its new tokens: the
    sequences of one request run side by side, so the time between two of them says
    nothing); the end of the last
    choice the end-to-end latency, the finish reason and the usage (prompt tokens summed
    over the prompts, completion tokens over the choices). The gauges come from the
    latest STATUS.

    TLS: with a certificate and key, the listener's connections go through OpenSSL
    (h2o's h2o_accept does the handshake when accept_ctx.ssl_ctx is set), and ALPN
    offers h2 then http/1.1 (h2o_alpn_protocols); a client without ALPN gets HTTP/1.1.
*/
#include <h2o.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frontend.h"
#include "chat.h"
#include "completions.h"
#include "metrics.h"
#include "protocol.h"
#include "zlog.h"

//  Built with AddressSanitizer, LeakSanitizer reads this hook (in this program or any
//  test linking the frontend) and ignores what h2o keeps for good:
//  For LeakSanitizer: h2o 2.2.5 keeps per-thread caches of freed memory (memory-pool
//  chunks, HTTP/2 write buffers) in __thread variables that nothing can empty, and its
//  h2o_multithread_destroy_queue does not free the queue (h2o_context_init makes one).
//  Each actor thread leaves these behind when it ends: bounded, h2o's, not ours to free.
const char *__lsan_default_suppressions (void);
const char *
__lsan_default_suppressions (void)
{
    return "leak:h2o_mem_alloc_recycle\n"
           "leak:h2o_multithread_create_queue\n";
}

#define ACTOR "frontend"

//  Used when args.max_body_bytes is 0.
#define DEFAULT_MAX_BODY_BYTES  (16u * 1024 * 1024)
//  /health is ok while a STATUS with workers >= 1 is younger than this.
#define STATUS_FRESH_MSEC       3000
//  How often pending HTTP/1 requests are checked for a client that has gone.
#define PROBE_MSEC              500
//  Messages handled in one drain before h2o gets the loop back.
#define DRAIN_BUDGET            1000
//  On $TERM: how long connections get to take their last response and close.
#define CLOSE_GRACE_MSEC        2000
#define CLOSE_FORCE_MSEC        1000
//  A stream with nothing written for this long gets a ": ping" comment.
#define PING_MSEC               1000
//  How long a browser may keep a CORS preflight's answer (Starlette's default, as
//  vLLM answers).
#define CORS_MAX_AGE            "600"
//  Access-Control-Allow-Methods when every method is allowed: the list Starlette
//  sends for "*" (a literal "*" means nothing to a browser sending credentials).
#define CORS_ALL_METHODS        "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
//  Request headers a browser may always send (CORS-safelisted); Starlette allows them
//  whatever --allowed-headers says.
#define CORS_SAFE_HEADERS       "Accept, Accept-Language, Content-Language, Content-Type"

typedef struct _server_t server_t;

//  One accepted HTTP connection, tracked so that $TERM can close what is left.
typedef struct {
    h2o_linklist_t link;            //  in server->connections
    server_t *server;
    h2o_socket_t *sock;
    int fd;
} connection_t;

typedef enum {
    ENDPOINT_COMPLETIONS,           //  /v1/completions
    ENDPOINT_CHAT,                  //  /v1/chat/completions
    ENDPOINT_TOKENIZE,              //  /tokenize
    ENDPOINT_DETOKENIZE             //  /detokenize
} endpoint_t;

//  A list of strings from a JSON array (--allowed-origins and friends).
typedef struct {
    char **items;                   //  count heap strings, in a heap array
    size_t count;
    bool any;                       //  "*" is one of them: everything is allowed
} string_list_t;

//  A growable heap buffer of bytes, NUL-terminated when not empty.
typedef struct {
    char *data;
    size_t size;
    size_t limit;                   //  bytes allocated
} buffer_t;

//  One choice of a request: one sequence the scheduler samples.
typedef struct {
    //  Not streamed: what the answer gathers
    buffer_t text;
    chat_tool_calls_t *tool_calls;  //  chat only; NULL until the first call
    proto_finish_t finish;          //  PROTO_FINISH_NONE until its last OUTPUT came
    uint32_t completion_tokens;     //  from its latest OUTPUT (a total so far)
    json_t *logprobs;               //  the tokens' log-probability entries, when asked
    size_t streamed;                //  bytes of text streamed so far (echo included)
    //  Metrics: seconds on the monotonic clock
    bool text_seen;                 //  an OUTPUT with text or tool calls came
    double last_token_at;           //  when its last OUTPUT with new tokens came
    uint32_t last_completion_tokens;    //  completion_tokens of that OUTPUT
} choice_t;

typedef struct _pending_t pending_t;

//  One prompt of a request: one GENERATE, with a request id of its own, and its n
//  choices. Lives in the request's pool, with its pending_t.
typedef struct {
    uint64_t id;                    //  its request id: key in server->pending while it
                                    //  is in flight
    pending_t *pending;             //  the request it belongs to
    uint32_t index;                 //  0 .. n_prompts-1: its choices start at index * n
    bool in_flight;                 //  in the table: sent, and neither finished nor
                                    //  failed nor cancelled
    uint32_t n_finished;            //  of its n choices, how many have finished
    uint32_t prompt_tokens;         //  from its latest OUTPUT
    bool output_seen;               //  its first OUTPUT came (its queue time is counted)
    const char *echo;               //  completions with echo, streamed: its text, in
                                    //  the request's pool, sent first for each choice
    size_t echo_size;               //  bytes of it in front of each choice's text
} prompt_t;

//  One request waiting for its answer. Lives in the request's pool: h2o frees it
//  (through s_pending_dispose) when it frees the request. Its choices are part of the
//  same allocation, and its prompts of the same pool, so they go with it.
struct _pending_t {
    server_t *server;
    h2o_req_t *req;
    endpoint_t endpoint;
    uint64_t id;                    //  that of its first prompt, for its answer and logs
    char id_text [CHAT_ID_SIZE];    //  "cmpl-..." or "chatcmpl-..."
    int64_t created;                //  unix seconds
    bool answered;                  //  out of the table: answered, failed or cancelled
    bool client_gone;               //  the probe found its HTTP/1 client gone
    prompt_t *prompts;              //  n_prompts of them (1 .. COMPLETION_MAX_PROMPTS)
    uint32_t n_prompts;
    //  Streamed
    bool stream;
    bool include_usage;             //  a usage chunk before [DONE]
    bool want_logprobs;             //  answer with the tokens' log-probabilities
    bool started;                   //  h2o_start_response was called
    bool sending;                   //  an h2o_send waits for proceed
    bool final_queued;              //  the queue ends the stream: its send is the last
    bool ended;                     //  the last send was made, or h2o stopped the
                                    //  generator: nothing more may be sent
    h2o_generator_t generator;
    buffer_t queue;                 //  events waiting for the next send
    buffer_t inflight;              //  what h2o is sending: kept until proceed
    h2o_timeout_entry_t ping_entry; //  on server->ping_timeout while streaming
    //  Metrics: seconds on the monotonic clock
    double arrived_at;              //  when the handler got the request
    bool text_seen;                 //  an OUTPUT with text or tool calls came
    //  Choices
    uint32_t n;                     //  how many per prompt, 1 .. PROTO_MAX_N
    uint32_t n_choices;             //  how many in all: n_prompts * n
    uint32_t n_finished;            //  how many have finished
    choice_t choices [];            //  n_choices of them, in index order
};

//  Our h2o handler: one for every path; it dispatches by itself.
typedef struct {
    h2o_handler_t super;
    server_t *server;
} handler_t;

struct _server_t {
    frontend_args_t *args;
    zsock_t *pipe;                  //  the actor's pipe (not ours to destroy)
    zsock_t *tokenizer;             //  DEALER connected to the tokenizer
    zsock_t *status;                //  SUB on the scheduler's STATUS
    h2o_globalconf_t config;
    bool config_ready;
    h2o_context_t context;
    bool context_ready;
    h2o_accept_ctx_t accept_ctx;
    h2o_evloop_t *loop;
    h2o_socket_t *listener;
    h2o_socket_t *pipe_watch;
    h2o_socket_t *tokenizer_watch;
    h2o_socket_t *status_watch;
    h2o_timeout_entry_t drain_entry;    //  on context.zero_timeout
    h2o_timeout_t probe_timeout;
    bool probe_timeout_ready;
    h2o_timeout_entry_t probe_entry;
    h2o_timeout_t ping_timeout;     //  PING_MSEC, for the ping_entry of each stream
    bool ping_timeout_ready;
    h2o_linklist_t connections;     //  of connection_t
    zhashx_t *pending;              //  request id -> prompt_t in flight
    size_t live_requests;           //  pending_t not yet freed by h2o (answered or not)
    uint64_t next_id;
    uint64_t random_state;
    int64_t started_at;             //  unix seconds, for /v1/models
    int64_t status_at;              //  zclock_mono () of the last healthy STATUS, 0: never
    uint32_t status_workers;
    metrics_status_t scheduler;     //  from the latest STATUS (its waiting is not used)
    size_t max_body_bytes;
    metrics_t *metrics;
    string_list_t origins;          //  CORS: --allowed-origins
    string_list_t methods;          //  --allowed-methods
    string_list_t headers;          //  --allowed-headers
    char *allow_methods;            //  Access-Control-Allow-Methods of a preflight
    char *allow_headers;            //  Access-Control-Allow-Headers, unless any
    SSL_CTX *ssl_context;           //  TLS, or NULL for cleartext
    bool in_drain;                  //  inside s_drain: it re-checks by itself
    bool terminating;               //  $TERM received
    bool draining;                  //  DRAIN received: no new requests
    bool drained_sent;
    bool peer_down;
};

static void s_drain (server_t *server);
static void s_check_drained (server_t *server);


//  --------------------------------------------------------------------------
//  Small helpers

static uint64_t
s_random (server_t *server)
{
    //  splitmix64
    uint64_t z = (server->random_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t
s_random_seed (void)
{
    uint64_t seed = 0;
    if (getrandom (&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t) sizeof seed) {
        struct timespec now;
        clock_gettime (CLOCK_REALTIME, &now);
        seed = (uint64_t) now.tv_nsec ^ ((uint64_t) now.tv_sec << 20)
             ^ ((uint64_t) getpid () << 40);
    }
    return seed;
}

static bool
s_iovec_is (h2o_iovec_t value, const char *text)
{
    return h2o_memis (value.base, value.len, text, strlen (text));
}

//  Does value start with prefix?
static bool
s_iovec_starts (h2o_iovec_t value, const char *prefix)
{
    size_t size = strlen (prefix);
    return value.len >= size && memcmp (value.base, prefix, size) == 0;
}

//  The value of the request header name (lower case), or an iovec with base NULL.
static h2o_iovec_t
s_request_header (h2o_req_t *req, const char *name)
{
    ssize_t index = h2o_find_header_by_str (&req->headers, name, strlen (name), -1);
    if (index < 0)
        return h2o_iovec_init (NULL, 0);
    return req->headers.entries [index].value;
}

//  Seconds on the monotonic clock, for latencies.
static double
s_now (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (double) now.tv_sec + (double) now.tv_nsec * 1e-9;
}

//  After a send made outside s_drain: ZeroMQ may have taken the fd's edge while
//  sending, so look for waiting input and drain it from the zero timeout.
static void
s_check_input (server_t *server)
{
    if (server->in_drain || server->terminating)
        return;
    if (h2o_timeout_is_linked (&server->drain_entry))
        return;
    bool waiting = (zsock_events (server->pipe) & ZMQ_POLLIN)
                || (server->tokenizer && (zsock_events (server->tokenizer) & ZMQ_POLLIN))
                || (zsock_events (server->status) & ZMQ_POLLIN);
    if (waiting)
        h2o_timeout_link (server->loop, &server->context.zero_timeout, &server->drain_entry);
}


//  --------------------------------------------------------------------------
//  Answers

static void
s_send_text (h2o_req_t *req, int status, const char *content_type, const char *body,
             size_t size)
{
    req->res.status = status;
    req->res.reason = http_status_reason (status);
    req->res.content_length = size;
    h2o_add_header (&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                    content_type, strlen (content_type));
    h2o_send_inline (req, body, size);
}

static void
s_send_json (h2o_req_t *req, int status, const char *body, size_t size)
{
    s_send_text (req, status, "application/json", body, size);
}

//  Send body (heap JSON, taken) or, when it is NULL (out of memory), a fixed 500.
static void
s_send_json_owned (h2o_req_t *req, int status, char *body)
{
    if (body) {
        s_send_json (req, status, body, strlen (body));
        free (body);
    }
    else {
        static const char fallback [] =
            "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
            "\"param\":null,\"code\":null}}";
        s_send_json (req, 500, fallback, sizeof fallback - 1);
    }
}

static void
s_send_error (h2o_req_t *req, int status, const char *param, const char *code,
              const char *message)
{
    s_send_json_owned (req, status, api_error_json (status, message, param, code));
}

//  429: the queue is full. Retry-After tells clients (the OpenAI SDKs read it) when to
//  try again.
static void
s_send_queue_full (h2o_req_t *req, const char *message)
{
    h2o_add_header (&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                    H2O_STRLIT ("1"));
    s_send_error (req, 429, NULL, NULL, message);
}

static void
s_send_method_not_allowed (h2o_req_t *req, const char *allowed)
{
    char message [200];
    snprintf (message, sizeof message, "method %.*s is not allowed here; use %s",
              (int) (req->method.len < 20? req->method.len: 20), req->method.base, allowed);
    h2o_add_header (&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                    allowed, strlen (allowed));
    s_send_error (req, 405, NULL, NULL, message);
}


//  --------------------------------------------------------------------------
//  Buffers

static int
s_buffer_append (buffer_t *buffer, const char *data, size_t size)
{
    if (size == 0)
        return 0;
    if (buffer->size + size + 1 > buffer->limit) {
        size_t limit = buffer->limit? buffer->limit * 2: 256;
        while (limit < buffer->size + size + 1)
            limit *= 2;
        char *grown = (char *) realloc (buffer->data, limit);
        if (!grown)
            return -1;
        buffer->data = grown;
        buffer->limit = limit;
    }
    memcpy (buffer->data + buffer->size, data, size);
    buffer->size += size;
    buffer->data [buffer->size] = 0;
    return 0;
}

static void
s_buffer_free (buffer_t *buffer)
{
    free (buffer->data);
    memset (buffer, 0, sizeof *buffer);
}


//  --------------------------------------------------------------------------
//  Lists of strings (--allowed-origins, --allowed-methods, --allowed-headers)

static void
s_string_list_reset (string_list_t *list)
{
    for (size_t index = 0; index < list->count; index++)
        free (list->items [index]);
    free (list->items);
    memset (list, 0, sizeof *list);
}

//  Parse text, a JSON array of strings, into list (zeroed first); NULL text means
//  ["*"]. Returns 0, or -1 with error filled and list empty.
static int
s_string_list_parse (const char *text, string_list_t *list, char *error, size_t error_size)
{
    memset (list, 0, sizeof *list);
    if (!text) {
        list->any = true;
        return 0;
    }
    json_error_t json_error;
    //  Any JSON value, so that '"*"' is told it is no list rather than no JSON.
    json_t *root = json_loads (text, JSON_DECODE_ANY, &json_error);
    if (!root) {
        snprintf (error, error_size, "not valid JSON (%s, at line %d, column %d); give a "
                  "list of strings such as '[\"https://example.com\"]'",
                  json_error.text, json_error.line, json_error.column);
        return -1;
    }
    if (!json_is_array (root)) {
        snprintf (error, error_size, "not a JSON list; give a list of strings such as "
                  "'[\"https://example.com\"]'");
        json_decref (root);
        return -1;
    }
    size_t size = json_array_size (root);
    list->items = (char **) calloc (size? size: 1, sizeof (char *));
    if (!list->items) {
        snprintf (error, error_size, "out of memory");
        json_decref (root);
        return -1;
    }
    for (size_t index = 0; index < size; index++) {
        const char *value = json_string_value (json_array_get (root, index));
        if (!value || !*value) {
            snprintf (error, error_size, "element %zu of the list is not a non-empty string",
                      index);
            json_decref (root);
            s_string_list_reset (list);
            return -1;
        }
        list->items [index] = strdup (value);
        if (!list->items [index]) {
            snprintf (error, error_size, "out of memory");
            json_decref (root);
            s_string_list_reset (list);
            return -1;
        }
        list->count = index + 1;
        if (strcmp (value, "*") == 0)
            list->any = true;
    }
    json_decref (root);
    return 0;
}

//  Is value one of the list's strings (ignoring ASCII case when asked)?
static bool
s_string_list_has (const string_list_t *list, const char *value, size_t size,
                   bool ignore_case)
{
    for (size_t index = 0; index < list->count; index++) {
        const char *item = list->items [index];
        if (strlen (item) != size)
            continue;
        if (ignore_case? strncasecmp (item, value, size) == 0: memcmp (item, value, size) == 0)
            return true;
    }
    return false;
}

//  The strings joined with ", " after prefix (which may be ""), as a heap string.
static char *
s_string_list_join (const string_list_t *list, const char *prefix)
{
    size_t size = strlen (prefix) + 1;
    for (size_t index = 0; index < list->count; index++)
        size += strlen (list->items [index]) + 2;
    char *joined = (char *) malloc (size);
    if (!joined)
        return NULL;
    strcpy (joined, prefix);
    for (size_t index = 0; index < list->count; index++) {
        if (*joined)
            strcat (joined, ", ");
        strcat (joined, list->items [index]);
    }
    return joined;
}

int
frontend_check_string_list (const char *text, char *error, size_t error_size)
{
    string_list_t list;
    if (s_string_list_parse (text, &list, error, error_size) != 0)
        return -1;
    s_string_list_reset (&list);
    return 0;
}


//  --------------------------------------------------------------------------
//  Pending requests

static const char *
s_response_role (server_t *server)
{
    const char *role = server->args->response_role;
    return role && *role? role: CHAT_DEFAULT_RESPONSE_ROLE;
}

static const char *
s_chunk_object (pending_t *pending)
{
    return pending->endpoint == ENDPOINT_CHAT? "chat.completion.chunk": "text_completion";
}

//  The prompt is in flight: in the table by its request id, so that its OUTPUT and
//  ERROR find it.
static void
s_prompt_take_off (prompt_t *prompt)
{
    zhashx_insert (prompt->pending->server->pending, &prompt->id, prompt);
    prompt->in_flight = true;
}

//  The prompt is no longer in flight (finished, failed, cancelled, or never sent):
//  out of the table. Nothing happens when it was not in it.
static void
s_prompt_land (prompt_t *prompt)
{
    if (prompt->in_flight) {
        zhashx_delete (prompt->pending->server->pending, &prompt->id);
        prompt->in_flight = false;
    }
}

//  Take pending out of the table (every prompt of it): from now on nothing more is sent
//  for it but what is already queued.
static void
s_pending_close (pending_t *pending)
{
    server_t *server = pending->server;
    pending->answered = true;
    if (h2o_timeout_is_linked (&pending->ping_entry))
        h2o_timeout_unlink (&pending->ping_entry);
    for (uint32_t index = 0; index < pending->n_prompts; index++)
        s_prompt_land (&pending->prompts [index]);
    s_check_drained (server);
}

static void
s_send_cancel (server_t *server, uint64_t request_id)
{
    if (!server->tokenizer)
        return;
    proto_msg_t cancel = PROTO_MSG_INIT;
    cancel.kind = PROTO_CANCEL;
    cancel.request_id = request_id;
    if (proto_send (&cancel, server->tokenizer) != 0)
        zlog (ZLOG_WARN, ACTOR, request_id, "could not send CANCEL: %s", strerror (errno));
    s_check_input (server);
}

//  CANCEL every prompt of pending that is still in flight (they leave the table with
//  s_pending_close).
static void
s_pending_cancel (pending_t *pending)
{
    for (uint32_t index = 0; index < pending->n_prompts; index++)
        if (pending->prompts [index].in_flight)
            s_send_cancel (pending->server, pending->prompts [index].id);
}

//  The client is gone (h2o stops the generator or frees the request): cancel what has
//  not been answered.
static void
s_pending_abandon (pending_t *pending)
{
    if (!pending->answered) {
        zlog (ZLOG_INFO, ACTOR, pending->id, "client went away: cancelled");
        s_pending_cancel (pending);
        s_pending_close (pending);
    }
}

//  h2o frees the request: if no answer went out, the client is gone.
static void
s_pending_dispose (void *data)
{
    pending_t *pending = (pending_t *) data;
    pending->ended = true;
    s_pending_abandon (pending);
    if (h2o_timeout_is_linked (&pending->ping_entry))
        h2o_timeout_unlink (&pending->ping_entry);
    s_buffer_free (&pending->queue);
    s_buffer_free (&pending->inflight);
    for (uint32_t index = 0; index < pending->n_choices; index++) {
        s_buffer_free (&pending->choices [index].text);
        chat_tool_calls_destroy (&pending->choices [index].tool_calls);
        json_decref (pending->choices [index].logprobs);
    }
    pending->server->live_requests--;
}


//  --------------------------------------------------------------------------
//  Streams (server-sent events)

static void s_stream_flush (pending_t *pending);

static void
s_on_stream_proceed (h2o_generator_t *generator, h2o_req_t *req)
{
    (void) req;
    pending_t *pending = H2O_STRUCT_FROM_MEMBER (pending_t, generator, generator);
    pending->sending = false;
    pending->inflight.size = 0;             //  h2o is done with it
    s_stream_flush (pending);
}

static void
s_on_stream_stop (h2o_generator_t *generator, h2o_req_t *req)
{
    (void) req;
    pending_t *pending = H2O_STRUCT_FROM_MEMBER (pending_t, generator, generator);
    pending->ended = true;
    s_pending_abandon (pending);
}

//  Queue bytes; -1 when out of memory.
static int
s_stream_queue (pending_t *pending, const char *data, size_t size)
{
    return s_buffer_append (&pending->queue, data, size);
}

//  Queue "data: <json>\n\n"; takes json (NULL: out of memory, -1).
static int
s_stream_queue_event (pending_t *pending, char *json)
{
    if (!json)
        return -1;
    int rc = s_stream_queue (pending, "data: ", 6);
    if (rc == 0)
        rc = s_stream_queue (pending, json, strlen (json));
    if (rc == 0)
        rc = s_stream_queue (pending, "\n\n", 2);
    free (json);
    return rc;
}

//  Queue the end of the stream: data: [DONE]. The next send is the last.
static void
s_stream_queue_done (pending_t *pending)
{
    static const char done [] = "data: [DONE]\n\n";
    if (s_stream_queue (pending, done, sizeof done - 1) != 0)
        zlog (ZLOG_WARN, ACTOR, pending->id, "out of memory: the stream ends without [DONE]");
    pending->final_queued = true;
}

//  A completion with echo opens each choice with its prompt's text (a chunk of its
//  own). Returns -1 when out of memory.
static int
s_stream_queue_echo (pending_t *pending)
{
    for (uint32_t prompt_index = 0; prompt_index < pending->n_prompts; prompt_index++) {
        prompt_t *prompt = &pending->prompts [prompt_index];
        if (!prompt->echo)
            continue;
        for (uint32_t index = prompt_index * pending->n;
             index < (prompt_index + 1) * pending->n; index++) {
            if (s_stream_queue_event (pending,
                    completion_chunk_json (pending->id_text, pending->created,
                                           pending->server->args->model_name, index,
                                           prompt->echo, prompt->echo_size, NULL,
                                           pending->include_usage, NULL, 0)) != 0)
                return -1;
            pending->choices [index].streamed = prompt->echo_size;
        }
    }
    return 0;
}

//  Start the response (status and headers go with the first send); a chat stream opens
//  with a role chunk for each choice, as OpenAI's does, a completion with echo with
//  each choice's prompt. Returns -1 when out of memory.
static int
s_stream_start (pending_t *pending)
{
    if (pending->started)
        return 0;
    server_t *server = pending->server;
    h2o_req_t *req = pending->req;
    pending->started = true;
    req->res.status = 200;
    req->res.reason = http_status_reason (200);
    h2o_add_header (&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                    H2O_STRLIT ("text/event-stream"));
    h2o_add_header (&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                    H2O_STRLIT ("no-cache"));
    pending->generator.proceed = s_on_stream_proceed;
    pending->generator.stop = s_on_stream_stop;
    h2o_start_response (req, &pending->generator);
    if (pending->endpoint == ENDPOINT_COMPLETIONS)
        return s_stream_queue_echo (pending);
    for (uint32_t index = 0; index < pending->n_choices; index++)
        if (s_stream_queue_event (pending,
                chat_chunk_role_json (pending->id_text, pending->created,
                                      server->args->model_name, index,
                                      s_response_role (server),
                                      pending->include_usage)) != 0)
            return -1;
    return 0;
}

//  Send what is queued, unless a send is waiting for proceed. May free pending (a FINAL
//  send, a client that is gone): the caller must not touch pending afterwards.
static void
s_stream_flush (pending_t *pending)
{
    if (pending->sending || pending->ended || !pending->started)
        return;
    if (pending->queue.size == 0 && !pending->final_queued)
        return;
    //  The queue becomes the buffer in flight; the old one, emptied, the next queue.
    buffer_t sent = pending->queue;
    pending->queue = pending->inflight;
    pending->queue.size = 0;
    pending->inflight = sent;
    h2o_send_state_t state = H2O_SEND_STATE_IN_PROGRESS;
    if (pending->final_queued) {
        state = H2O_SEND_STATE_FINAL;
        pending->ended = true;
        if (h2o_timeout_is_linked (&pending->ping_entry))
            h2o_timeout_unlink (&pending->ping_entry);
    }
    else {
        pending->sending = true;
        //  The next ping is due a second after this write.
        if (h2o_timeout_is_linked (&pending->ping_entry))
            h2o_timeout_unlink (&pending->ping_entry);
        h2o_timeout_link (pending->server->loop, &pending->server->ping_timeout,
                          &pending->ping_entry);
    }
    h2o_iovec_t buffer = h2o_iovec_init (pending->inflight.data, pending->inflight.size);
    h2o_send (pending->req, &buffer, buffer.len? 1: 0, state);
}

//  Nothing was written for PING_MSEC: start the stream if it has not started, and say
//  ": ping" so that a client that went away is noticed.
static void
s_on_ping (h2o_timeout_entry_t *entry)
{
    pending_t *pending = H2O_STRUCT_FROM_MEMBER (pending_t, ping_entry, entry);
    if (pending->answered || pending->ended || pending->server->terminating)
        return;
    if (pending->sending) {
        //  The client has not taken the last write yet: a ping would only queue.
        h2o_timeout_link (pending->server->loop, &pending->server->ping_timeout,
                          &pending->ping_entry);
        return;
    }
    static const char ping [] = ": ping\n\n";
    if (s_stream_start (pending) != 0 || s_stream_queue (pending, ping, sizeof ping - 1) != 0)
        zlog (ZLOG_WARN, ACTOR, pending->id, "out of memory for a ping");
    s_stream_flush (pending);
}


//  --------------------------------------------------------------------------
//  Answers to pending requests

//  Answer pending with an OpenAI error body (within the stream when it has started:
//  an error event, then [DONE]), and CANCEL its prompts still in flight (a prompt that
//  failed downstream, or was never sent, must have landed first).
static void
s_pending_fail (pending_t *pending, int status, const char *message)
{
    server_t *server = pending->server;
    h2o_req_t *req = pending->req;
    zlog (ZLOG_INFO, ACTOR, pending->id, "answered %d: %s", status, message);
    s_pending_cancel (pending);
    s_pending_close (pending);
    if (server->draining || server->terminating)
        req->http1_is_persistent = 0;
    if (pending->started) {
        if (s_stream_queue_event (pending, api_error_json (status, message, NULL, NULL)) != 0)
            zlog (ZLOG_WARN, ACTOR, pending->id, "out of memory for the error event");
        s_stream_queue_done (pending);
        s_stream_flush (pending);
    }
    else
        s_send_error (req, status, NULL, NULL, message);
}

//  Answer every pending request with this error, cancelling what is in flight.
static void
s_fail_all (server_t *server, int status, const char *message)
{
    prompt_t *prompt;
    while ((prompt = (prompt_t *) zhashx_first (server->pending)))
        s_pending_fail (prompt->pending, status, message);
}

//  The choice an OUTPUT of this prompt is for, or NULL when it must be skipped: its
//  index names no choice of the prompt (the request has then been failed: an answer
//  that waits for a choice that will never come would hang), or that choice has
//  already finished.
static choice_t *
s_output_choice (pending_t *pending, prompt_t *prompt, const proto_msg_t *output)
{
    if (output->index >= pending->n) {
        zlog (ZLOG_WARN, ACTOR, prompt->id, "OUTPUT for choice %u of a prompt with %u",
              output->index, pending->n);
        s_pending_fail (pending, 500, "internal error: the model pipeline answered for a "
                        "choice the request does not have");
        return NULL;
    }
    choice_t *choice = &pending->choices [prompt->index * pending->n + output->index];
    if (choice->finish != PROTO_FINISH_NONE) {
        zlog (ZLOG_WARN, ACTOR, prompt->id, "OUTPUT for choice %u after it finished, "
              "skipped", output->index);
        return NULL;
    }
    prompt->prompt_tokens = output->prompt_tokens;
    choice->completion_tokens = output->completion_tokens;
    return choice;
}

//  The tool-call deltas of an OUTPUT, or NULL when it has none or they are malformed.
static const char *
s_output_tool_calls (pending_t *pending, const proto_msg_t *output)
{
    if (!output->tool_calls || pending->endpoint != ENDPOINT_CHAT)
        return NULL;
    if (!chat_tool_calls_valid (output->tool_calls)) {
        zlog (ZLOG_WARN, ACTOR, pending->id, "malformed tool calls from the tokenizer, "
              "skipped: %.200s", output->tool_calls);
        return NULL;
    }
    return output->tool_calls;
}

//  What an OUTPUT tells the metrics: a prompt's first gives its time in the scheduler's
//  queue; the request's first with text or tool calls gives the time to first token;
//  each later one of the same choice with new tokens, the time since that choice's
//  previous one, spread over them.
static void
s_pending_observe (pending_t *pending, prompt_t *prompt, choice_t *choice,
                   const proto_msg_t *output, bool has_text)
{
    metrics_t *metrics = pending->server->metrics;
    double now = s_now ();
    if (!prompt->output_seen) {
        prompt->output_seen = true;
        metrics_queue_time (metrics, (double) output->queue_us * 1e-6);
    }
    if (has_text && !pending->text_seen) {
        pending->text_seen = true;
        metrics_time_to_first_token (metrics, now - pending->arrived_at);
    }
    if (!choice->text_seen) {
        if (has_text) {
            choice->text_seen = true;
            choice->last_token_at = now;
            choice->last_completion_tokens = output->completion_tokens;
        }
    }
    else
    if (output->completion_tokens > choice->last_completion_tokens) {
        metrics_inter_token_latency (metrics, now - choice->last_token_at,
                                     output->completion_tokens
                                     - choice->last_completion_tokens);
        choice->last_token_at = now;
        choice->last_completion_tokens = output->completion_tokens;
    }
}

//  The choice's last OUTPUT came; when it was its prompt's last choice, the prompt
//  lands. Returns true when it was the request's last choice.
static bool
s_choice_finish (pending_t *pending, prompt_t *prompt, choice_t *choice,
                 const proto_msg_t *output)
{
    choice->finish = output->finish;
    pending->n_finished++;
    prompt->n_finished++;
    if (prompt->n_finished == pending->n)
        s_prompt_land (prompt);
    return pending->n_finished == pending->n_choices;
}

//  The request's prompt tokens: the sum over its prompts.
static uint32_t
s_pending_prompt_tokens (pending_t *pending)
{
    uint64_t sum = 0;
    for (uint32_t index = 0; index < pending->n_prompts; index++)
        sum += pending->prompts [index].prompt_tokens;
    return sum > UINT32_MAX? UINT32_MAX: (uint32_t) sum;
}

//  Every choice has finished: count the request in the metrics, log it, and return
//  its completion tokens (the sum over the choices). One request, one finish reason:
//  that of choice 0 (request_success_total counts requests, not sequences; with n = 1
//  and one prompt it is the only one).
static uint32_t
s_pending_finished (pending_t *pending)
{
    uint64_t sum = 0;
    for (uint32_t index = 0; index < pending->n_choices; index++)
        sum += pending->choices [index].completion_tokens;
    uint32_t completion_tokens = sum > UINT32_MAX? UINT32_MAX: (uint32_t) sum;
    uint32_t prompt_tokens = s_pending_prompt_tokens (pending);
    const char *finish = proto_finish_name (pending->choices [0].finish);
    metrics_request_finished (pending->server->metrics, finish, prompt_tokens,
                              completion_tokens, s_now () - pending->arrived_at);
    char choices [64] = "";
    if (pending->n_prompts > 1)
        snprintf (choices, sizeof choices, " in %u choices of %u prompts",
                  pending->n_choices, pending->n_prompts);
    else
    if (pending->n > 1)
        snprintf (choices, sizeof choices, " in %u choices", pending->n);
    zlog (ZLOG_INFO, ACTOR, pending->id, "completed%s: %s, %u prompt + %u completion tokens%s",
          pending->stream? " (streamed)": "", finish? finish: "?", prompt_tokens,
          completion_tokens, choices);
    return completion_tokens;
}

//  The body of a finished chat completion; logprobs holds each choice's entries as
//  JSON text (or NULL). NULL when out of memory.
static char *
s_chat_body (pending_t *pending, char **logprobs, uint32_t completion_tokens)
{
    server_t *server = pending->server;
    chat_choice_t *choices = (chat_choice_t *) calloc (pending->n_choices,
                                                       sizeof (chat_choice_t));
    if (!choices)
        return NULL;
    for (uint32_t index = 0; index < pending->n_choices; index++) {
        choice_t *choice = &pending->choices [index];
        const char *finish = proto_finish_name (choice->finish);
        choices [index].content = choice->text.data;
        choices [index].content_size = choice->text.size;
        choices [index].tool_calls = choice->tool_calls;
        choices [index].finish_reason = finish? finish: "stop";
        choices [index].logprobs = logprobs [index];
    }
    char *body = chat_response_json (pending->id_text, pending->created,
                                     server->args->model_name, s_response_role (server),
                                     choices, pending->n_choices,
                                     s_pending_prompt_tokens (pending), completion_tokens);
    free (choices);
    return body;
}

//  The body of a finished completion, as s_chat_body.
static char *
s_completion_body (pending_t *pending, char **logprobs, uint32_t completion_tokens)
{
    completion_choice_t *choices = (completion_choice_t *) calloc (
        pending->n_choices, sizeof (completion_choice_t));
    if (!choices)
        return NULL;
    for (uint32_t index = 0; index < pending->n_choices; index++) {
        choice_t *choice = &pending->choices [index];
        const char *finish = proto_finish_name (choice->finish);
        choices [index].text = choice->text.data;
        choices [index].text_size = choice->text.size;
        choices [index].finish_reason = finish? finish: "stop";
        choices [index].logprobs = logprobs [index];
        choices [index].text_offset = pending->prompts [index / pending->n].echo_size;
    }
    char *body = completion_response_json (pending->id_text, pending->created,
                                           pending->server->args->model_name, choices,
                                           pending->n_choices,
                                           s_pending_prompt_tokens (pending),
                                           completion_tokens);
    free (choices);
    return body;
}

//  The whole answer of a request that is not streamed: every choice, in index order.
static void
s_pending_complete (pending_t *pending)
{
    server_t *server = pending->server;
    h2o_req_t *req = pending->req;
    uint32_t completion_tokens = s_pending_finished (pending);
    //  Each choice's log-probabilities as JSON text, when asked ("[]" when none came).
    char **logprobs = (char **) calloc (pending->n_choices, sizeof (char *));
    char *body = NULL;
    if (logprobs) {
        for (uint32_t index = 0; pending->want_logprobs && index < pending->n_choices;
             index++) {
            json_t *entries = pending->choices [index].logprobs;
            logprobs [index] = entries? json_dumps (entries, JSON_COMPACT): strdup ("[]");
        }
        if (pending->endpoint == ENDPOINT_CHAT)
            body = s_chat_body (pending, logprobs, completion_tokens);
        else
            body = s_completion_body (pending, logprobs, completion_tokens);
        for (uint32_t index = 0; index < pending->n_choices; index++)
            free (logprobs [index]);
        free (logprobs);
    }
    s_pending_close (pending);
    if (server->draining)
        req->http1_is_persistent = 0;
    s_send_json_owned (req, 200, body);
}

//  An OUTPUT for a request that is not streamed: gather it into its choice; answer
//  when the last choice finishes.
static void
s_pending_gather (pending_t *pending, prompt_t *prompt, const proto_msg_t *output)
{
    choice_t *choice = s_output_choice (pending, prompt, output);
    if (!choice)
        return;
    const char *text = output->text? output->text: "";
    const char *tool_calls = s_output_tool_calls (pending, output);
    s_pending_observe (pending, prompt, choice, output, *text || tool_calls);
    int rc = s_buffer_append (&choice->text, text, strlen (text));
    if (rc == 0 && output->logprobs && pending->want_logprobs) {
        json_t *entries = json_loads (output->logprobs, 0, NULL);
        if (!choice->logprobs)
            choice->logprobs = json_array ();
        rc = json_is_array (entries) && choice->logprobs
          && json_array_extend (choice->logprobs, entries) == 0? 0: -1;
        json_decref (entries);
    }
    if (rc == 0 && tool_calls) {
        if (!choice->tool_calls)
            choice->tool_calls = chat_tool_calls_new ();
        rc = choice->tool_calls? chat_tool_calls_add (choice->tool_calls, tool_calls): -1;
    }
    if (rc != 0)
        s_pending_fail (pending, 500, "out of memory");
    else
    if (output->finish != PROTO_FINISH_NONE
    &&  s_choice_finish (pending, prompt, choice, output))
        s_pending_complete (pending);
}

//  An OUTPUT for a streamed request: its chunks, and at the end of its choice the
//  finish chunk; after the last choice (of every prompt), the usage chunk when asked
//  for, and [DONE].
static void
s_pending_stream (pending_t *pending, prompt_t *prompt, const proto_msg_t *output)
{
    server_t *server = pending->server;
    const char *model = server->args->model_name;
    choice_t *choice = s_output_choice (pending, prompt, output);
    if (!choice)
        return;
    uint32_t index = prompt->index * pending->n + output->index;
    const char *text = output->text? output->text: "";
    size_t text_size = strlen (text);
    const char *tool_calls = s_output_tool_calls (pending, output);
    s_pending_observe (pending, prompt, choice, output, text_size > 0 || tool_calls);
    //  A token's log-probabilities go with its text; a token that gives no text yet (a
    //  character split over tokens) sends them in a chunk of its own.
    const char *logprobs = pending->want_logprobs? output->logprobs: NULL;
    int rc = s_stream_start (pending);
    if (rc == 0 && pending->endpoint == ENDPOINT_CHAT
    &&  (text_size > 0 || tool_calls || logprobs))
        rc = s_stream_queue_event (pending,
            chat_chunk_delta_json (pending->id_text, pending->created, model, index,
                                   text_size > 0? text: NULL, text_size, tool_calls,
                                   pending->include_usage, logprobs));
    if (rc == 0 && pending->endpoint == ENDPOINT_COMPLETIONS && (text_size > 0 || logprobs))
        rc = s_stream_queue_event (pending,
            completion_chunk_json (pending->id_text, pending->created, model, index,
                                   text, text_size, NULL, pending->include_usage,
                                   logprobs, choice->streamed));
    choice->streamed += text_size;
    if (rc != 0) {
        s_pending_fail (pending, 500, "out of memory");
        return;
    }
    if (output->finish == PROTO_FINISH_NONE) {
        s_stream_flush (pending);
        return;
    }
    const char *finish = proto_finish_name (output->finish);
    if (pending->endpoint == ENDPOINT_CHAT)
        rc = s_stream_queue_event (pending,
            chat_chunk_finish_json (pending->id_text, pending->created, model, index,
                                    finish, pending->include_usage));
    else
        rc = s_stream_queue_event (pending,
            completion_chunk_json (pending->id_text, pending->created, model, index,
                                   "", 0, finish, pending->include_usage, NULL, 0));
    if (rc != 0) {
        s_pending_fail (pending, 500, "out of memory");
        return;
    }
    if (!s_choice_finish (pending, prompt, choice, output)) {
        s_stream_flush (pending);
        return;
    }
    uint32_t completion_tokens = s_pending_finished (pending);
    if (pending->include_usage
    &&  s_stream_queue_event (pending,
            usage_chunk_json (pending->id_text, s_chunk_object (pending), pending->created,
                              model, s_pending_prompt_tokens (pending),
                              completion_tokens)) != 0) {
        s_pending_fail (pending, 500, "out of memory");
        return;
    }
    s_pending_close (pending);
    if (server->draining)
        pending->req->http1_is_persistent = 0;
    s_stream_queue_done (pending);
    s_stream_flush (pending);
}

//  Is the peer of this pending HTTP/1 request gone? Peeks at its socket.
static bool
s_client_gone (pending_t *pending)
{
    h2o_req_t *req = pending->req;
    if (req->version >= 0x200 || !req->conn->callbacks->get_socket)
        return false;               //  HTTP/2: h2o sees it and frees the request
    h2o_socket_t *sock = req->conn->callbacks->get_socket (req->conn);
    if (!sock)
        return false;
    int fd = h2o_socket_get_fd (sock);
    if (fd < 0)
        return false;
    char byte;
    ssize_t got = recv (fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (got == 0)
        return true;                //  the client closed its side
    if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return true;                //  reset
    return false;
}

static void
s_on_probe (h2o_timeout_entry_t *entry)
{
    server_t *server = H2O_STRUCT_FROM_MEMBER (server_t, probe_entry, entry);
    if (server->terminating)
        return;
    //  Gather first: answering takes requests out of the table. A request with several
    //  prompts in flight is in the table several times: it is looked at once.
    zlistx_t *gone = NULL;
    prompt_t *prompt = (prompt_t *) zhashx_first (server->pending);
    while (prompt) {
        pending_t *pending = prompt->pending;
        if (!pending->client_gone && s_client_gone (pending)) {
            pending->client_gone = true;
            if (!gone)
                gone = zlistx_new ();
            if (gone)
                zlistx_add_end (gone, pending);
        }
        prompt = (prompt_t *) zhashx_next (server->pending);
    }
    if (gone) {
        pending_t *pending = (pending_t *) zlistx_first (gone);
        while (pending) {
            zlog (ZLOG_INFO, ACTOR, pending->id, "client closed the connection: cancelled");
            //  The answer goes into a closed socket; h2o then closes the connection
            //  and frees the request.
            pending->req->http1_is_persistent = 0;
            s_pending_fail (pending, 499, "client closed request");
            pending = (pending_t *) zlistx_next (gone);
        }
        zlistx_destroy (&gone);
    }
    h2o_timeout_link (server->loop, &server->probe_timeout, &server->probe_entry);
}


//  --------------------------------------------------------------------------
//  HTTP handlers

//  Can a new request be taken? If not, it has been answered.
static bool
s_accepting (server_t *server, h2o_req_t *req)
{
    if (server->terminating || server->draining) {
        req->http1_is_persistent = 0;
        s_send_error (req, 503, NULL, NULL, "the server is shutting down");
        return false;
    }
    if (server->peer_down || !server->tokenizer) {
        s_send_error (req, 503, NULL, NULL,
                      "the model pipeline is not available; try again later");
        return false;
    }
    if (req->entity.len > server->max_body_bytes) {
        s_send_error (req, 413, NULL, NULL, "the request body is too large");
        return false;
    }
    return true;
}

//  Requests passed on and not yet running: the prompts in flight in the pending table
//  (each is one request for the scheduler) less the requests the scheduler runs (its
//  latest STATUS). A request that finishes in the scheduler before its last OUTPUT
//  reaches us may count as waiting for that moment; hence the floor.
static uint32_t
s_waiting (server_t *server)
{
    size_t in_flight = zhashx_size (server->pending);
    size_t running = server->scheduler.running;
    return in_flight > running? (uint32_t) (in_flight - running): 0;
}

//  Is the queue full (--max-queued-requests)? If so, the request has been answered 429.
static bool
s_queue_full (server_t *server, h2o_req_t *req)
{
    uint32_t limit = server->args->max_queued_requests;
    if (limit == 0)
        return false;
    uint32_t waiting = s_waiting (server);
    if (waiting < limit)
        return false;
    char message [200];
    snprintf (message, sizeof message, "the server is busy: %u requests are already waiting "
              "(--max-queued-requests %u); try again later", waiting, limit);
    zlog (ZLOG_INFO, ACTOR, 0, "refused 429: %u requests waiting", waiting);
    s_send_queue_full (req, message);
    return true;
}

//  A new request id, below 2^63 (PROTO_MAX_REQUEST_ID) and never 0 ("no request" in
//  logs).
static uint64_t
s_next_request_id (server_t *server)
{
    uint64_t id = server->next_id++ & PROTO_MAX_REQUEST_ID;
    if (id == 0)
        id = server->next_id++ & PROTO_MAX_REQUEST_ID;
    return id;
}

//  A request's record until it is answered: n_prompts prompts (1 ..
//  COMPLETION_MAX_PROMPTS), each with a new request id (in the table once it is sent,
//  s_pending_send), and n choices (1 .. PROTO_MAX_N) for each prompt, in the same
//  allocation as the record.
static pending_t *
s_pending_new (server_t *server, h2o_req_t *req, endpoint_t endpoint, uint32_t n_prompts,
               uint32_t n, double arrived_at)
{
    uint32_t n_choices = n_prompts * n;
    size_t size = sizeof (pending_t) + n_choices * sizeof (choice_t);
    pending_t *pending = (pending_t *) h2o_mem_alloc_shared (&req->pool, size,
                                                             s_pending_dispose);
    memset (pending, 0, size);
    pending->n = n;
    pending->n_choices = n_choices;
    pending->server = server;
    pending->req = req;
    pending->endpoint = endpoint;
    server->live_requests++;
    pending->prompts = (prompt_t *) h2o_mem_alloc_pool (&req->pool,
                                                        n_prompts * sizeof (prompt_t));
    memset (pending->prompts, 0, n_prompts * sizeof (prompt_t));
    pending->n_prompts = n_prompts;
    for (uint32_t index = 0; index < n_prompts; index++) {
        prompt_t *prompt = &pending->prompts [index];
        prompt->id = s_next_request_id (server);
        prompt->pending = pending;
        prompt->index = index;
    }
    pending->id = pending->prompts [0].id;
    if (endpoint == ENDPOINT_CHAT)
        chat_id_format (pending->id, pending->id_text);
    else
        completion_id_format (pending->id, pending->id_text);
    pending->created = (int64_t) time (NULL);
    pending->arrived_at = arrived_at;
    return pending;
}

//  Send msg to the tokenizer for this prompt of pending, which then is in flight.
//  Returns 0, or -1 when it could not be sent: the request has then been failed (a
//  message over the protocol's limits is a 413, a tokenizer that cannot be reached a
//  503), its prompts sent before this one cancelled.
static int
s_pending_send (pending_t *pending, prompt_t *prompt, const proto_msg_t *msg)
{
    server_t *server = pending->server;
    int rc = proto_send (msg, server->tokenizer);
    int send_errno = errno;
    s_check_input (server);
    if (rc == 0) {
        s_prompt_take_off (prompt);
        return 0;
    }
    if (send_errno == EINVAL)               //  refused by proto_encode: over its limits
        s_pending_fail (pending, 413, "the request is too large");
    else {
        char message [200];
        snprintf (message, sizeof message,
                  "the request could not be passed on to the model pipeline (%s)",
                  strerror (send_errno));
        s_pending_fail (pending, 503, message);
    }
    return -1;
}

//  echo: each prompt's text opens each of its choices' text (streamed: kept for their
//  first chunks, s_stream_queue_echo). Token-id prompts have no text here (the parser
//  refuses echo with them). Returns -1 when out of memory.
static int
s_pending_echo (pending_t *pending, const completion_prompt_t *prompts)
{
    for (uint32_t prompt_index = 0; prompt_index < pending->n_prompts; prompt_index++) {
        prompt_t *prompt = &pending->prompts [prompt_index];
        const char *text = prompts [prompt_index].text;
        if (!text)
            continue;
        size_t size = strlen (text);
        prompt->echo_size = size;
        if (pending->stream) {
            char *copy = (char *) h2o_mem_alloc_pool (&pending->req->pool, size + 1);
            memcpy (copy, text, size + 1);
            prompt->echo = copy;
            continue;
        }
        for (uint32_t index = prompt_index * pending->n;
             index < (prompt_index + 1) * pending->n; index++)
            if (s_buffer_append (&pending->choices [index].text, text, size) != 0)
                return -1;
    }
    return 0;
}

//  The GENERATE fields every prompt of a request shares, borrowed from options (the
//  message is never reset): sampling, limits, stops, n, best_of, beam search and the
//  output options. The caller sets request_id, the prompt and the seed.
static void
s_generate_fill (proto_msg_t *generate, const generation_options_t *options, uint32_t n)
{
    generate->kind = PROTO_GENERATE;
    generate->max_tokens = options->max_tokens;
    generate->sampling = options->sampling;     //  its logit_bias arrays borrowed too
    generate->ignore_eos = options->ignore_eos;
    generate->n = n;
    //  Beam search runs best_of beams, or n: the scheduler is told the width.
    generate->best_of = options->use_beam_search? generation_options_width (options)
                                                : options->best_of;
    generate->use_beam_search = options->use_beam_search;
    generate->length_penalty = options->length_penalty;
    generate->early_stopping = options->early_stopping;
    generate->want_logprobs = options->want_logprobs;
    generate->include_stop_str_in_output = options->include_stop_str_in_output;
    generate->keep_special_tokens = options->keep_special_tokens;
    generate->stops = options->n_stops? options->stops: NULL;
    generate->n_stops = options->n_stops;
    generate->stop_tokens = options->n_stop_token_ids? (uint32_t *) options->stop_token_ids
                                                    : NULL;
    generate->n_stop_tokens = options->n_stop_token_ids;
}

//  A validated request: its pending_t, and a GENERATE to the tokenizer for each prompt
//  (prompts, n_prompts of them: text or token ids) or for the chat (JSON; prompts NULL
//  and n_prompts 1). Without a seed, each prompt gets a random one.
static void
s_generate (server_t *server, h2o_req_t *req, endpoint_t endpoint,
            const completion_prompt_t *prompts, uint32_t n_prompts, const char *chat,
            const generation_options_t *options, double arrived_at)
{
    //  n is 1 .. PROTO_MAX_N and n_prompts 1 .. COMPLETION_MAX_PROMPTS (validated).
    uint32_t n = options->n >= 1 && options->n <= PROTO_MAX_N? options->n: 1;
    pending_t *pending = s_pending_new (server, req, endpoint, n_prompts, n, arrived_at);
    pending->stream = options->stream;
    pending->want_logprobs = options->want_logprobs;
    pending->include_usage = options->include_usage;
    if (options->echo && prompts && s_pending_echo (pending, prompts) != 0) {
        s_pending_fail (pending, 500, "out of memory");
        return;
    }
    pending->ping_entry.cb = s_on_ping;
    if (pending->stream)
        h2o_timeout_link (server->loop, &server->ping_timeout, &pending->ping_entry);

    proto_msg_t generate = PROTO_MSG_INIT;
    s_generate_fill (&generate, options, n);
    generate.chat = (char *) chat;              //  borrowed, as the prompts
    for (uint32_t index = 0; index < n_prompts; index++) {
        prompt_t *prompt = &pending->prompts [index];
        generate.request_id = prompt->id;
        generate.text = prompts? prompts [index].text: NULL;
        generate.tokens = prompts? prompts [index].tokens: NULL;
        generate.n_tokens = prompts? prompts [index].n_tokens: 0;
        if (!options->has_seed)
            generate.sampling.seed = s_random (server);
        zlog (ZLOG_DEBUG, ACTOR, prompt->id,
              "GENERATE %s%s n=%u best_of=%u%s max_tokens=%u temperature=%g stops=%u%s",
              chat? "chat": generate.tokens? "token prompt": "prompt",
              n_prompts > 1? " (one of several)": "", generate.n, generate.best_of,
              generate.use_beam_search? " beam search": "", generate.max_tokens,
              (double) generate.sampling.temperature, generate.n_stops,
              pending->stream? " stream": "");
        if (s_pending_send (pending, prompt, &generate) != 0)
            return;
    }
}

//  POST /tokenize and /detokenize: the tokenizer answers with TOKENS or OUTPUT
//  (s_pending_tokenized).
static void
s_handle_tokenize (server_t *server, h2o_req_t *req, endpoint_t endpoint)
{
    if (!s_accepting (server, req))
        return;
    tokenize_request_t request;
    api_error_t error;
    if (tokenize_request_parse (req->entity.base, req->entity.len, server->args->model_name,
                                endpoint == ENDPOINT_DETOKENIZE, &request, &error) != 0) {
        s_send_json_owned (req, error.status, api_error_to_json (&error));
        return;
    }
    pending_t *pending = s_pending_new (server, req, endpoint, 1, 1, s_now ());
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = endpoint == ENDPOINT_TOKENIZE? PROTO_TOKENIZE: PROTO_DETOKENIZE;
    msg.request_id = pending->id;
    msg.text = request.prompt;              //  borrowed: msg is not reset
    msg.add_special_tokens = request.add_special_tokens;
    msg.tokens = request.tokens;
    msg.n_tokens = request.n_tokens;
    s_pending_send (pending, &pending->prompts [0], &msg);
    tokenize_request_reset (&request);
}

//  The tokenizer's answer to /tokenize (TOKENS) or /detokenize (OUTPUT).
static void
s_pending_tokenized (pending_t *pending, const proto_msg_t *msg)
{
    server_t *server = pending->server;
    char *body = msg->kind == PROTO_TOKENS
               ? tokenize_response_json (msg->tokens, msg->n_tokens, server->args->n_ctx)
               : detokenize_response_json (msg->text, msg->text? strlen (msg->text): 0);
    h2o_req_t *req = pending->req;
    s_pending_close (pending);
    s_send_json_owned (req, 200, body);
}

static void
s_handle_completion (server_t *server, h2o_req_t *req)
{
    double arrived_at = s_now ();
    if (!s_accepting (server, req) || s_queue_full (server, req))
        return;
    completion_request_t request;
    api_error_t error;
    if (completion_request_parse (req->entity.base, req->entity.len,
                                  server->args->model_name, &request, &error) != 0) {
        zlog (ZLOG_DEBUG, ACTOR, 0, "refused %d: %s", error.status, error.message);
        s_send_json_owned (req, error.status, api_error_to_json (&error));
        return;
    }
    s_generate (server, req, ENDPOINT_COMPLETIONS, request.prompts, request.n_prompts, NULL,
                &request.options, arrived_at);
    completion_request_reset (&request);
}

static void
s_handle_chat (server_t *server, h2o_req_t *req)
{
    double arrived_at = s_now ();
    if (!s_accepting (server, req) || s_queue_full (server, req))
        return;
    chat_request_t request;
    api_error_t error;
    if (chat_request_parse (req->entity.base, req->entity.len, server->args->model_name,
                            server->args->enable_auto_tool_choice, &request, &error) != 0) {
        zlog (ZLOG_DEBUG, ACTOR, 0, "refused %d: %s", error.status, error.message);
        s_send_json_owned (req, error.status, api_error_to_json (&error));
        return;
    }
    s_generate (server, req, ENDPOINT_CHAT, NULL, 1, request.chat, &request.options,
                arrived_at);
    chat_request_reset (&request);
}

static void
s_handle_models (server_t *server, h2o_req_t *req)
{
    s_send_json_owned (req, 200, models_list_json (server->args->model_name,
                                                   server->started_at, server->args->n_ctx));
}

static void
s_handle_health (server_t *server, h2o_req_t *req)
{
    const char *problem = NULL;
    if (server->terminating || server->draining)
        problem = "the server is shutting down";
    else
    if (server->peer_down)
        problem = "the model pipeline is not available";
    else
    if (server->status_at == 0 || zclock_mono () - server->status_at > STATUS_FRESH_MSEC)
        problem = "no worker is available";
    if (problem)
        s_send_error (req, 503, NULL, NULL, problem);
    else {
        static const char ok [] = "{\"status\":\"ok\"}";
        s_send_json (req, 200, ok, sizeof ok - 1);
    }
}

static void
s_handle_version (server_t *server, h2o_req_t *req)
{
    const char *version = server->args->version? server->args->version: "unknown";
    json_t *root = json_pack ("{s:s}", "version", version);
    char *body = root? json_dumps (root, JSON_COMPACT): NULL;
    json_decref (root);
    s_send_json_owned (req, 200, body);
}

//  GET /v1/models/{id}: the object /v1/models lists (taken from that list, so the two
//  never differ), or 404 as OpenAI answers for a model it does not have.
static void
s_handle_model (server_t *server, h2o_req_t *req, h2o_iovec_t id)
{
    const char *model_name = server->args->model_name;
    if (!h2o_memis (id.base, id.len, model_name, strlen (model_name))) {
        char message [400];
        snprintf (message, sizeof message, "The model '%.*s' does not exist",
                  (int) (id.len < 300? id.len: 300), id.base);
        s_send_error (req, 404, "model", "model_not_found", message);
        return;
    }
    char *list = models_list_json (model_name, server->started_at, server->args->n_ctx);
    json_t *root = list? json_loads (list, 0, NULL): NULL;
    json_t *model = json_array_get (json_object_get (root, "data"), 0);
    char *body = model? json_dumps (model, JSON_COMPACT): NULL;
    json_decref (root);
    free (list);
    s_send_json_owned (req, 200, body);
}

static void
s_handle_metrics (server_t *server, h2o_req_t *req)
{
    metrics_status_t status = server->scheduler;
    status.waiting = s_waiting (server);
    char *text = metrics_text (server->metrics, &status);
    if (!text) {
        s_send_error (req, 500, NULL, NULL, "out of memory");
        return;
    }
    s_send_text (req, 200, METRICS_CONTENT_TYPE, text, strlen (text));
    free (text);
}


//  --------------------------------------------------------------------------
//  CORS and the API key

static bool
s_origin_allowed (server_t *server, h2o_iovec_t origin)
{
    return origin.base
        && (server->origins.any
        ||  s_string_list_has (&server->origins, origin.base, origin.len, false));
}

//  The answer to an allowed origin says so: "*" when every origin is allowed and no
//  credentials are, else the origin itself (a browser sending credentials refuses "*"),
//  and then Vary: Origin, since the answer depends on it.
static void
s_cors_allow_origin (server_t *server, h2o_req_t *req, h2o_iovec_t origin)
{
    if (server->origins.any && !server->args->allow_credentials)
        h2o_add_header (&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN,
                        NULL, H2O_STRLIT ("*"));
    else {
        h2o_iovec_t copy = h2o_strdup (&req->pool, origin.base, origin.len);
        h2o_add_header (&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN,
                        NULL, copy.base, copy.len);
        h2o_add_header (&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL,
                        H2O_STRLIT ("Origin"));
    }
    if (server->args->allow_credentials)
        h2o_add_header_by_str (&req->pool, &req->res.headers,
                               H2O_STRLIT ("access-control-allow-credentials"), 0, NULL,
                               H2O_STRLIT ("true"));
}

//  Are all the headers a preflight asks for (comma-separated names) allowed? The
//  CORS-safelisted ones always are.
static bool
s_cors_headers_allowed (server_t *server, h2o_iovec_t requested)
{
    if (server->headers.any || !requested.base)
        return true;
    static const char *safe [] = { "accept", "accept-language", "content-language",
                                   "content-type" };
    size_t at = 0;
    while (at < requested.len) {
        size_t end = at;
        while (end < requested.len && requested.base [end] != ',')
            end++;
        size_t start = at, stop = end;
        while (start < stop && (requested.base [start] == ' ' || requested.base [start] == '\t'))
            start++;
        while (stop > start && (requested.base [stop - 1] == ' ' || requested.base [stop - 1] == '\t'))
            stop--;
        const char *name = requested.base + start;
        size_t size = stop - start;
        bool allowed = size == 0
                    || s_string_list_has (&server->headers, name, size, true);
        for (size_t index = 0; !allowed && index < sizeof safe / sizeof safe [0]; index++)
            allowed = strlen (safe [index]) == size && strncasecmp (safe [index], name, size) == 0;
        if (!allowed)
            return false;
        at = end + 1;
    }
    return true;
}

//  A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method. Allowed:
//  204 with what may be sent and for how long the answer holds. Not allowed: 400 (as
//  Starlette answers for vLLM), without CORS headers, so the browser refuses.
static void
s_handle_preflight (server_t *server, h2o_req_t *req, h2o_iovec_t origin,
                    h2o_iovec_t method)
{
    h2o_iovec_t requested = s_request_header (req, "access-control-request-headers");
    const char *refused = NULL;
    if (!s_origin_allowed (server, origin))
        refused = "origin";
    else
    if (!server->methods.any
    &&  !s_string_list_has (&server->methods, method.base, method.len, false))
        refused = "method";
    else
    if (!s_cors_headers_allowed (server, requested))
        refused = "headers";
    if (refused) {
        char message [100];
        snprintf (message, sizeof message, "Disallowed CORS %s", refused);
        s_send_error (req, 400, NULL, NULL, message);
        return;
    }
    s_cors_allow_origin (server, req, origin);
    h2o_add_header_by_str (&req->pool, &req->res.headers,
                           H2O_STRLIT ("access-control-allow-methods"), 0, NULL,
                           server->allow_methods, strlen (server->allow_methods));
    //  Every header allowed: name the ones asked for ("*" is literal with credentials).
    if (server->headers.any && requested.base && requested.len > 0) {
        h2o_iovec_t copy = h2o_strdup (&req->pool, requested.base, requested.len);
        h2o_add_header_by_str (&req->pool, &req->res.headers,
                               H2O_STRLIT ("access-control-allow-headers"), 0, NULL,
                               copy.base, copy.len);
    }
    else
    if (!server->headers.any)
        h2o_add_header_by_str (&req->pool, &req->res.headers,
                               H2O_STRLIT ("access-control-allow-headers"), 0, NULL,
                               server->allow_headers, strlen (server->allow_headers));
    h2o_add_header_by_str (&req->pool, &req->res.headers,
                           H2O_STRLIT ("access-control-max-age"), 0, NULL,
                           H2O_STRLIT (CORS_MAX_AGE));
    req->res.status = 204;
    req->res.reason = "No Content";
    req->res.content_length = 0;
    h2o_send_inline (req, "", 0);
}

//  Does this path need the API key? Everything under /v1, as vLLM guards it.
static bool
s_path_needs_key (server_t *server, h2o_iovec_t path)
{
    const char *key = server->args->api_key;
    return key && *key && (s_iovec_is (path, "/v1") || s_iovec_starts (path, "/v1/"));
}

//  Compare in constant time: every byte of the key is looked at whatever the guess
//  holds, so how long it takes says nothing about how much of a guess was right.
static bool
s_key_matches (const char *given, size_t given_size, const char *key)
{
    size_t key_size = strlen (key);
    unsigned char difference = given_size != key_size;
    for (size_t index = 0; index < key_size; index++) {
        unsigned char byte = index < given_size? (unsigned char) given [index]: 0;
        difference |= byte ^ (unsigned char) key [index];
    }
    return difference == 0;
}

//  Is the request authorized ("Authorization: Bearer KEY", the scheme in any case)?
//  If not, it has been answered 401 as OpenAI answers (the SDKs raise
//  AuthenticationError).
static bool
s_authorized (server_t *server, h2o_req_t *req)
{
    const char *message = NULL;
    ssize_t index = h2o_find_header (&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (index < 0)
        message = "You didn't provide an API key. You need to provide your API key in an "
                  "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                  "YOUR_KEY).";
    else {
        h2o_iovec_t value = req->headers.entries [index].value;
        size_t at = 0;
        while (at < value.len && value.base [at] == ' ')
            at++;
        bool bearer = value.len - at > 7 && strncasecmp (value.base + at, "bearer ", 7) == 0;
        at += 7;
        while (bearer && at < value.len && value.base [at] == ' ')
            at++;
        size_t end = value.len;
        while (bearer && end > at && value.base [end - 1] == ' ')
            end--;
        if (bearer && s_key_matches (value.base + at, end - at, server->args->api_key))
            return true;
        message = "Incorrect API key provided. You need to provide the server's API key "
                  "in an Authorization header using Bearer auth (i.e. Authorization: "
                  "Bearer YOUR_KEY).";
    }
    zlog (ZLOG_DEBUG, ACTOR, 0, "refused 401: %s API key",
          index < 0? "no": "an incorrect");
    h2o_add_header (&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                    H2O_STRLIT ("Bearer"));
    s_send_error (req, 401, NULL, "invalid_api_key", message);
    return false;
}

static int
s_on_request (h2o_handler_t *self, h2o_req_t *req)
{
    server_t *server = ((handler_t *) self)->server;
    h2o_iovec_t path = req->path_normalized;
    bool is_get = s_iovec_is (req->method, "GET") || s_iovec_is (req->method, "HEAD");

    //  CORS first: a preflight carries no credentials, and every other answer to an
    //  allowed origin, errors included, must say so or the browser hides it.
    h2o_iovec_t origin = s_request_header (req, "origin");
    if (origin.base) {
        h2o_iovec_t method = s_request_header (req, "access-control-request-method");
        if (s_iovec_is (req->method, "OPTIONS") && method.base) {
            s_handle_preflight (server, req, origin, method);
            return 0;
        }
        if (s_origin_allowed (server, origin))
            s_cors_allow_origin (server, req, origin);
    }
    if (s_path_needs_key (server, path) && !s_authorized (server, req))
        return 0;
    if (s_iovec_is (path, "/v1/completions")) {
        if (s_iovec_is (req->method, "POST"))
            s_handle_completion (server, req);
        else
            s_send_method_not_allowed (req, "POST");
    }
    else
    if (s_iovec_is (path, "/v1/chat/completions")) {
        if (s_iovec_is (req->method, "POST"))
            s_handle_chat (server, req);
        else
            s_send_method_not_allowed (req, "POST");
    }
    else
    if (s_iovec_is (path, "/v1/models")) {
        if (is_get)
            s_handle_models (server, req);
        else
            s_send_method_not_allowed (req, "GET, HEAD");
    }
    else
    if (s_iovec_starts (path, "/v1/models/") && path.len > strlen ("/v1/models/")) {
        size_t prefix = strlen ("/v1/models/");
        if (is_get)
            s_handle_model (server, req, h2o_iovec_init (path.base + prefix,
                                                         path.len - prefix));
        else
            s_send_method_not_allowed (req, "GET, HEAD");
    }
    else
    if (s_iovec_is (path, "/health")) {
        if (is_get)
            s_handle_health (server, req);
        else
            s_send_method_not_allowed (req, "GET, HEAD");
    }
    else
    if (s_iovec_is (path, "/version")) {
        if (is_get)
            s_handle_version (server, req);
        else
            s_send_method_not_allowed (req, "GET, HEAD");
    }
    else
    if (s_iovec_is (path, "/tokenize") || s_iovec_is (path, "/detokenize")) {
        if (s_iovec_is (req->method, "POST"))
            s_handle_tokenize (server, req, s_iovec_is (path, "/tokenize")
                                            ? ENDPOINT_TOKENIZE: ENDPOINT_DETOKENIZE);
        else
            s_send_method_not_allowed (req, "POST");
    }
    else
    if (s_iovec_is (path, "/metrics")) {
        if (is_get)
            s_handle_metrics (server, req);
        else
            s_send_method_not_allowed (req, "GET, HEAD");
    }
    else {
        char message [300];
        snprintf (message, sizeof message, "Invalid URL (%.*s %.*s)",
                  (int) (req->method.len < 20? req->method.len: 20), req->method.base,
                  (int) (path.len < 200? path.len: 200), path.base);
        s_send_error (req, 404, NULL, NULL, message);
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Connections

static void
s_on_connection_close (void *data)
{
    connection_t *connection = (connection_t *) data;
    h2o_linklist_unlink (&connection->link);
    free (connection);
}

static void
s_on_accept (h2o_socket_t *listener, const char *err)
{
    server_t *server = (server_t *) listener->data;
    if (err)
        return;
    //  The listener is level-triggered: take a few, the loop brings the rest.
    for (int count = 0; count < 16; count++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept (listener);
        if (!sock)
            return;
        connection_t *connection = (connection_t *) calloc (1, sizeof (connection_t));
        if (!connection) {
            h2o_socket_close (sock);
            continue;
        }
        connection->server = server;
        connection->sock = sock;
        connection->fd = h2o_socket_get_fd (sock);
        h2o_linklist_insert (&server->connections, &connection->link);
        sock->on_close.cb = s_on_connection_close;
        sock->on_close.data = connection;
        h2o_accept (&server->accept_ctx, sock);
    }
}

static void
s_close_listener (server_t *server)
{
    if (server->listener) {
        h2o_socket_read_stop (server->listener);
        h2o_socket_close (server->listener);
        server->listener = NULL;
    }
}

//  Shut down every tracked connection's socket (SHUT_RD or SHUT_RDWR): h2o then sees
//  the end of the stream and closes the connection itself.
static void
s_shutdown_connections (server_t *server, int how)
{
    h2o_linklist_t *node;
    for (node = server->connections.next; node != &server->connections; node = node->next) {
        connection_t *connection = H2O_STRUCT_FROM_MEMBER (connection_t, link, node);
        if (connection->fd >= 0)
            shutdown (connection->fd, how);
    }
}

static int
s_listen (server_t *server)
{
    frontend_args_t *args = server->args;
    const char *host = args->host && *args->host? args->host: NULL;
    char port_text [8];
    snprintf (port_text, sizeof port_text, "%u", (unsigned) args->port);

    struct addrinfo hints;
    memset (&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    struct addrinfo *found = NULL;
    int rc = getaddrinfo (host, port_text, &hints, &found);
    if (rc != 0) {
        snprintf (args->error, sizeof args->error, "cannot resolve '%s': %s",
                  host? host: "*", gai_strerror (rc));
        return -1;
    }
    int fd = -1;
    int saved_errno = 0;
    for (struct addrinfo *address = found; address; address = address->ai_next) {
        fd = socket (address->ai_family, address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                     address->ai_protocol);
        if (fd < 0) {
            saved_errno = errno;
            continue;
        }
        int on = 1;
        setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (bind (fd, address->ai_addr, address->ai_addrlen) == 0
        &&  listen (fd, SOMAXCONN) == 0)
            break;
        saved_errno = errno;
        close (fd);
        fd = -1;
    }
    freeaddrinfo (found);
    if (fd < 0) {
        snprintf (args->error, sizeof args->error, "cannot listen on %s:%u: %s",
                  host? host: "*", (unsigned) args->port, strerror (saved_errno));
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t bound_size = sizeof bound;
    if (getsockname (fd, (struct sockaddr *) &bound, &bound_size) == 0) {
        if (bound.ss_family == AF_INET)
            args->bound_port = ntohs (((struct sockaddr_in *) &bound)->sin_port);
        else
        if (bound.ss_family == AF_INET6)
            args->bound_port = ntohs (((struct sockaddr_in6 *) &bound)->sin6_port);
    }
    server->listener = h2o_evloop_socket_create (server->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    server->listener->data = server;
    h2o_socket_read_start (server->listener, s_on_accept);
    return 0;
}


//  --------------------------------------------------------------------------
//  ZeroMQ sockets in h2o's loop

static void
s_on_zmq_ready (h2o_socket_t *watch, const char *err)
{
    server_t *server = (server_t *) watch->data;
    if (err)
        zlog (ZLOG_WARN, ACTOR, 0, "ZeroMQ fd: %s", err);
    s_drain (server);
}

static void
s_on_drain_timeout (h2o_timeout_entry_t *entry)
{
    server_t *server = H2O_STRUCT_FROM_MEMBER (server_t, drain_entry, entry);
    s_drain (server);
}

static h2o_socket_t *
s_watch (server_t *server, zsock_t *socket)
{
    h2o_socket_t *watch = h2o_evloop_socket_create (server->loop, zsock_fd (socket),
                                                    H2O_SOCKET_FLAG_DONT_READ);
    watch->data = server;
    h2o_socket_read_start (watch, s_on_zmq_ready);
    return watch;
}

//  Take the fd out of h2o's loop without closing it: it belongs to ZeroMQ.
static void
s_unwatch (h2o_socket_t **watch_p)
{
    if (*watch_p) {
        h2o_socket_read_stop (*watch_p);
        h2o_socket_export_t exported;
        if (h2o_socket_export (*watch_p, &exported) == 0)
            h2o_buffer_dispose (&exported.input);
        *watch_p = NULL;
    }
}

static zsock_t *
s_tokenizer_new (server_t *server, char *error, size_t error_size)
{
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    if (!dealer)
        return NULL;
    //  Sends must never block h2o's loop; nothing from the pipeline may be dropped.
    zsock_set_sndhwm (dealer, 0);
    zsock_set_rcvhwm (dealer, 0);
    zsock_set_sndtimeo (dealer, 0);
    zsock_set_linger (dealer, 0);
    if (zsock_connect (dealer, "%s", server->args->tokenizer_endpoint) != 0) {
        snprintf (error, error_size, "cannot connect to the tokenizer at '%s'",
                  server->args->tokenizer_endpoint);
        zsock_destroy (&dealer);
        return NULL;
    }
    return dealer;
}

//  After PEER_UP: a fresh DEALER (an inproc peer that came back is a new socket, and
//  what was queued for the old one is stale).
static void
s_tokenizer_reconnect (server_t *server)
{
    s_unwatch (&server->tokenizer_watch);
    zsock_destroy (&server->tokenizer);
    char error [256];
    server->tokenizer = s_tokenizer_new (server, error, sizeof error);
    if (server->tokenizer) {
        server->tokenizer_watch = s_watch (server, server->tokenizer);
        zlog (ZLOG_INFO, ACTOR, 0, "reconnected to the tokenizer");
    }
    else {
        zlog (ZLOG_ERROR, ACTOR, 0, "cannot reconnect: %s", error);
        server->peer_down = true;
    }
}


//  --------------------------------------------------------------------------
//  Messages

static void
s_check_drained (server_t *server)
{
    if (server->draining && !server->drained_sent && !server->terminating
    &&  zhashx_size (server->pending) == 0) {
        server->drained_sent = true;
        zlog (ZLOG_INFO, ACTOR, 0, "drained");
        zstr_send (server->pipe, "DRAINED");
        s_check_input (server);
    }
}

static void
s_handle_pipe (server_t *server)
{
    zmsg_t *msg = zmsg_recv (server->pipe);
    if (!msg)
        return;                     //  interrupted
    char *command = zmsg_popstr (msg);
    if (!command)
        zlog (ZLOG_WARN, ACTOR, 0, "empty command on the pipe");
    else
    if (streq (command, "$TERM")) {
        zlog (ZLOG_INFO, ACTOR, 0, "terminating");
        server->terminating = true;
    }
    else
    if (streq (command, "DRAIN")) {
        zlog (ZLOG_INFO, ACTOR, 0, "draining: %zu requests in flight",
              zhashx_size (server->pending));
        server->draining = true;
        server->drained_sent = false;
        s_close_listener (server);
        s_check_drained (server);
    }
    else
    if (streq (command, "PEER_DOWN")) {
        zlog (ZLOG_WARN, ACTOR, 0, "the model pipeline is down: failing %zu requests",
              zhashx_size (server->pending));
        server->peer_down = true;
        s_fail_all (server, 503, "the model pipeline went down before the answer");
    }
    else
    if (streq (command, "PEER_UP")) {
        if (server->peer_down) {
            server->peer_down = false;
            s_tokenizer_reconnect (server);
        }
    }
    else
        zlog (ZLOG_WARN, ACTOR, 0, "unknown command on the pipe: '%s'", command);
    zstr_free (&command);
    zmsg_destroy (&msg);
}

static void
s_handle_tokenizer (server_t *server)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    char error [256];
    if (proto_recv (server->tokenizer, &msg, NULL, error, sizeof error) != 0) {
        zlog (ZLOG_WARN, ACTOR, 0, "bad message from the tokenizer, skipped: %s", error);
        return;
    }
    //  The prompt in flight with this request id, and the request it belongs to.
    prompt_t *prompt = (prompt_t *) zhashx_lookup (server->pending, &msg.request_id);
    pending_t *pending = prompt? prompt->pending: NULL;
    if (pending && ((msg.kind == PROTO_TOKENS && pending->endpoint == ENDPOINT_TOKENIZE)
                ||  (msg.kind == PROTO_OUTPUT && pending->endpoint == ENDPOINT_DETOKENIZE)))
        s_pending_tokenized (pending, &msg);
    else
    if (msg.kind == PROTO_OUTPUT) {
        if (!pending)
            zlog (ZLOG_DEBUG, ACTOR, msg.request_id, "OUTPUT for no pending request");
        else
        if (pending->stream)
            s_pending_stream (pending, prompt, &msg);
        else
            s_pending_gather (pending, prompt, &msg);
    }
    else
    if (msg.kind == PROTO_ERROR) {
        if (!pending)
            zlog (ZLOG_DEBUG, ACTOR, msg.request_id, "ERROR for no pending request");
        else {
            //  That prompt has ended downstream; the request's others are cancelled.
            int status = msg.status >= 400 && msg.status <= 599? (int) msg.status: 500;
            s_prompt_land (prompt);
            s_pending_fail (pending, status,
                            msg.text && *msg.text? msg.text: "the request failed");
        }
    }
    else
        zlog (ZLOG_WARN, ACTOR, msg.request_id, "unexpected %s from the tokenizer, skipped",
              proto_kind_name (msg.kind));
    proto_msg_reset (&msg);
}

static void
s_handle_status (server_t *server)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    char error [256];
    if (proto_recv (server->status, &msg, NULL, error, sizeof error) != 0) {
        zlog (ZLOG_WARN, ACTOR, 0, "bad STATUS message, skipped: %s", error);
        return;
    }
    if (msg.kind == PROTO_STATUS) {
        server->status_workers = msg.workers;
        server->status_at = msg.workers >= 1? zclock_mono (): 0;
        server->scheduler.running = msg.running;
        server->scheduler.kv_blocks_used = msg.kv_blocks_used;
        server->scheduler.kv_blocks_total = msg.kv_blocks_total;
        server->scheduler.prefix_queries = msg.prefix_queries;
        server->scheduler.prefix_hits = msg.prefix_hits;
        server->scheduler.preemptions = msg.preemptions;
    }
    else
        zlog (ZLOG_WARN, ACTOR, 0, "unexpected %s on the status socket, skipped",
              proto_kind_name (msg.kind));
    proto_msg_reset (&msg);
}

//  Handle what waits on the three sockets, round-robin, until none has input.
static void
s_drain (server_t *server)
{
    if (server->in_drain)
        return;
    server->in_drain = true;
    bool more = true;
    int budget = DRAIN_BUDGET;
    while (more && budget > 0 && !server->terminating) {
        more = false;
        if (zsock_events (server->pipe) & ZMQ_POLLIN) {
            s_handle_pipe (server);
            more = true;
            budget--;
            if (server->terminating)
                break;
        }
        if (server->tokenizer && (zsock_events (server->tokenizer) & ZMQ_POLLIN)) {
            s_handle_tokenizer (server);
            more = true;
            budget--;
        }
        if (zsock_events (server->status) & ZMQ_POLLIN) {
            s_handle_status (server);
            more = true;
            budget--;
        }
    }
    server->in_drain = false;
    //  Out of budget with input left: let h2o do its I/O, then go on.
    if (more && !server->terminating && !h2o_timeout_is_linked (&server->drain_entry))
        h2o_timeout_link (server->loop, &server->context.zero_timeout, &server->drain_entry);
}


//  --------------------------------------------------------------------------
//  TLS

//  OpenSSL's reason for the last failure in this thread (its error queue emptied), or
//  fallback when it has none.
static const char *
s_tls_reason (char *buffer, size_t size, const char *fallback)
{
    unsigned long code = ERR_peek_last_error ();
    if (code)
        ERR_error_string_n (code, buffer, size);
    else
        snprintf (buffer, size, "%s", fallback);
    ERR_clear_error ();
    return buffer;
}

//  Never ask for a passphrase on the terminal: an encrypted key just fails to load.
static int
s_tls_no_passphrase (char *buffer, int size, int rwflag, void *data)
{
    (void) buffer, (void) size, (void) rwflag, (void) data;
    return 0;
}

//  A server TLS context with this certificate chain and key, offering h2 and
//  http/1.1 by ALPN. NULL with error filled when a file cannot be read or used, or the
//  key is not the certificate's.
static SSL_CTX *
s_tls_context_new (const char *certfile, const char *keyfile, char *error,
                   size_t error_size)
{
    char reason [256];
    //  Say plainly when a file is missing or unreadable: OpenSSL's reason says less.
    const char *paths [2] = { certfile, keyfile };
    const char *flags [2] = { "--ssl-certfile", "--ssl-keyfile" };
    for (int index = 0; index < 2; index++) {
        FILE *file = paths [index]? fopen (paths [index], "rb"): NULL;
        if (!file) {
            snprintf (error, error_size, "%s: cannot read '%s': %s", flags [index],
                      paths [index]? paths [index]: "", paths [index]? strerror (errno)
                                                                    : "no file given");
            return NULL;
        }
        fclose (file);
    }
    ERR_clear_error ();
    SSL_CTX *context = SSL_CTX_new (TLS_server_method ());
    if (!context) {
        snprintf (error, error_size, "cannot make a TLS context: %s",
                  s_tls_reason (reason, sizeof reason, "unknown error"));
        return NULL;
    }
    SSL_CTX_set_min_proto_version (context, TLS1_2_VERSION);
    SSL_CTX_set_options (context, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_default_passwd_cb (context, s_tls_no_passphrase);
    //  The key first: a certificate loaded after a key that is not its own drops the
    //  key, and the check below then says plainly that they do not match.
    if (SSL_CTX_use_PrivateKey_file (context, keyfile, SSL_FILETYPE_PEM) != 1) {
        snprintf (error, error_size, "--ssl-keyfile: '%s' is no usable PEM private key "
                  "(an encrypted key is not supported): %s", keyfile,
                  s_tls_reason (reason, sizeof reason, "unknown error"));
        SSL_CTX_free (context);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file (context, certfile) != 1) {
        snprintf (error, error_size, "--ssl-certfile: '%s' is no usable PEM certificate: %s",
                  certfile, s_tls_reason (reason, sizeof reason, "unknown error"));
        SSL_CTX_free (context);
        return NULL;
    }
    if (SSL_CTX_check_private_key (context) != 1) {
        snprintf (error, error_size, "--ssl-keyfile: the key in '%s' does not match the "
                  "certificate in '%s'", keyfile, certfile);
        ERR_clear_error ();
        SSL_CTX_free (context);
        return NULL;
    }
    //  h2o picks the protocol from this list (h2 first, then http/1.1); with no match
    //  or no ALPN at all, h2o_accept serves HTTP/1.1.
    h2o_ssl_register_alpn_protocols (context, h2o_alpn_protocols);
    return context;
}

int
frontend_check_tls (const char *certfile, const char *keyfile, char *error,
                    size_t error_size)
{
    SSL_CTX *context = s_tls_context_new (certfile, keyfile, error, error_size);
    if (!context)
        return -1;
    SSL_CTX_free (context);
    return 0;
}


//  --------------------------------------------------------------------------
//  Start and stop

static void
s_server_destroy (server_t **self_p)
{
    server_t *server = *self_p;
    if (!server)
        return;
    bool loop_freed = true;
    if (server->loop) {
        s_close_listener (server);
        s_unwatch (&server->pipe_watch);
        s_unwatch (&server->tokenizer_watch);
        s_unwatch (&server->status_watch);
        if (h2o_timeout_is_linked (&server->drain_entry))
            h2o_timeout_unlink (&server->drain_entry);
        if (h2o_timeout_is_linked (&server->probe_entry))
            h2o_timeout_unlink (&server->probe_entry);
        if (server->probe_timeout_ready)
            h2o_timeout_dispose (server->loop, &server->probe_timeout);
        //  Every stream's ping entry is unlinked when it ends; one that is not (a
        //  connection that would not close) keeps the timeout alive, with the loop.
        if (server->ping_timeout_ready
        &&  h2o_linklist_is_empty (&server->ping_timeout._entries))
            h2o_timeout_dispose (server->loop, &server->ping_timeout);
        if (h2o_linklist_is_empty (&server->connections)) {
            if (server->context_ready)
                h2o_context_dispose (&server->context);
            h2o_evloop_destroy (server->loop);
            //  Buffers h2o keeps for reuse in this thread would outlive it.
            while (h2o_socket_buffer_prototype.allocator.cnt > 0)
                free (h2o_mem_alloc_recycle (&h2o_socket_buffer_prototype.allocator, 1));
        }
        else {
            //  Never seen: a connection that would not close. Disposing of h2o's context
            //  under it would crash; leaking is the lesser harm at exit.
            zlog (ZLOG_ERROR, ACTOR, 0, "connections still open at exit: h2o's loop is leaked");
            loop_freed = false;
        }
        server->loop = NULL;
    }
    if (server->config_ready && loop_freed)
        h2o_config_dispose (&server->config);
    //  After the loop: every TLS connection (an SSL holds a reference) is closed.
    if (server->ssl_context && loop_freed)
        SSL_CTX_free (server->ssl_context);
    metrics_destroy (&server->metrics);
    s_string_list_reset (&server->origins);
    s_string_list_reset (&server->methods);
    s_string_list_reset (&server->headers);
    free (server->allow_methods);
    free (server->allow_headers);
    zhashx_destroy (&server->pending);
    zsock_destroy (&server->tokenizer);
    zsock_destroy (&server->status);
    free (server);
    *self_p = NULL;
}

static server_t *
s_server_new (zsock_t *pipe, frontend_args_t *args)
{
    server_t *server = (server_t *) calloc (1, sizeof (server_t));
    if (!server) {
        snprintf (args->error, sizeof args->error, "out of memory");
        return NULL;
    }
    server->args = args;
    server->pipe = pipe;
    server->max_body_bytes = args->max_body_bytes? args->max_body_bytes: DEFAULT_MAX_BODY_BYTES;
    server->random_state = s_random_seed ();
    server->next_id = s_random (server);
    server->started_at = (int64_t) time (NULL);
    h2o_linklist_init_anchor (&server->connections);
    server->drain_entry.cb = s_on_drain_timeout;
    server->probe_entry.cb = s_on_probe;

    server->pending = proto_id_table_new (NULL);
    if (!server->pending) {
        snprintf (args->error, sizeof args->error, "out of memory");
        goto failed;
    }

    if (!args->model_name || !*args->model_name) {
        snprintf (args->error, sizeof args->error, "no model name");
        goto failed;
    }
    if (!args->tokenizer_endpoint || !args->status_endpoint) {
        snprintf (args->error, sizeof args->error, "tokenizer or status endpoint missing");
        goto failed;
    }
    server->metrics = metrics_new (args->model_name);
    if (!server->metrics) {
        snprintf (args->error, sizeof args->error, "out of memory");
        goto failed;
    }
    //  CORS: the lists, and what a preflight's answer says of them.
    char list_error [200];
    if (s_string_list_parse (args->allowed_origins, &server->origins, list_error,
                             sizeof list_error) != 0) {
        snprintf (args->error, sizeof args->error, "--allowed-origins: %s", list_error);
        goto failed;
    }
    if (s_string_list_parse (args->allowed_methods, &server->methods, list_error,
                             sizeof list_error) != 0) {
        snprintf (args->error, sizeof args->error, "--allowed-methods: %s", list_error);
        goto failed;
    }
    if (s_string_list_parse (args->allowed_headers, &server->headers, list_error,
                             sizeof list_error) != 0) {
        snprintf (args->error, sizeof args->error, "--allowed-headers: %s", list_error);
        goto failed;
    }
    server->allow_methods = server->methods.any? strdup (CORS_ALL_METHODS)
                                               : s_string_list_join (&server->methods, "");
    server->allow_headers = s_string_list_join (&server->headers, CORS_SAFE_HEADERS);
    if (!server->allow_methods || !server->allow_headers) {
        snprintf (args->error, sizeof args->error, "out of memory");
        goto failed;
    }
    if ((args->ssl_certfile != NULL) != (args->ssl_keyfile != NULL)) {
        snprintf (args->error, sizeof args->error,
                  "--ssl-certfile and --ssl-keyfile go together");
        goto failed;
    }
    if (args->ssl_certfile) {
        server->ssl_context = s_tls_context_new (args->ssl_certfile, args->ssl_keyfile,
                                                 args->error, sizeof args->error);
        if (!server->ssl_context)
            goto failed;
    }
    server->tokenizer = s_tokenizer_new (server, args->error, sizeof args->error);
    if (!server->tokenizer)
        goto failed;
    server->status = zsock_new (ZMQ_SUB);
    if (!server->status
    ||  zsock_connect (server->status, "%s", args->status_endpoint) != 0) {
        snprintf (args->error, sizeof args->error,
                  "cannot connect to the status endpoint '%s'", args->status_endpoint);
        goto failed;
    }
    zsock_set_subscribe (server->status, "");
    zsock_set_linger (server->status, 0);

    h2o_config_init (&server->config);
    server->config_ready = true;
    server->config.server_name = h2o_iovec_init (H2O_STRLIT ("zllm"));
    server->config.max_request_entity_size = server->max_body_bytes;
    h2o_hostconf_t *hostconf = h2o_config_register_host (
        &server->config, h2o_iovec_init (H2O_STRLIT ("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path (hostconf, "/", 0);
    handler_t *handler = (handler_t *) h2o_create_handler (pathconf, sizeof (handler_t));
    handler->super.on_req = s_on_request;
    handler->server = server;

    server->loop = h2o_evloop_create ();
    h2o_context_init (&server->context, server->loop, &server->config);
    server->context_ready = true;
    server->accept_ctx.ctx = &server->context;
    server->accept_ctx.hosts = server->config.hosts;
    server->accept_ctx.ssl_ctx = server->ssl_context;
    h2o_timeout_init (server->loop, &server->probe_timeout, PROBE_MSEC);
    server->probe_timeout_ready = true;
    h2o_timeout_init (server->loop, &server->ping_timeout, PING_MSEC);
    server->ping_timeout_ready = true;

    if (s_listen (server) != 0)
        goto failed;
    server->pipe_watch = s_watch (server, server->pipe);
    server->tokenizer_watch = s_watch (server, server->tokenizer);
    server->status_watch = s_watch (server, server->status);
    h2o_timeout_link (server->loop, &server->probe_timeout, &server->probe_entry);
    return server;

failed:
    s_server_destroy (&server);
    return NULL;
}

//  Is h2o still writing answers? True while a completion's request has not been freed
//  (HTTP/2 frees it once its last frame is queued) or a connection's socket is writing.
static bool
s_writes_pending (server_t *server)
{
    if (server->live_requests > 0)
        return true;
    h2o_linklist_t *node;
    for (node = server->connections.next; node != &server->connections; node = node->next) {
        connection_t *connection = H2O_STRUCT_FROM_MEMBER (connection_t, link, node);
        if (h2o_socket_is_writing (connection->sock))
            return true;
    }
    return false;
}

//  Run the loop until no connection is left, or until the deadline.
static void
s_run_until_closed (server_t *server, int64_t timeout_msec)
{
    int64_t deadline = zclock_mono () + timeout_msec;
    while (!h2o_linklist_is_empty (&server->connections) && zclock_mono () < deadline)
        h2o_evloop_run (server->loop, 10);
}

//  $TERM: answer what is open, let the answers reach the clients, then stop reading
//  every connection (shutdown SHUT_RD) so that h2o closes each one, and run the loop
//  until none is left: h2o's context can then be disposed of with nothing in it.
//  (Shutting a connection down while an HTTP/2 answer is still queued loses its DATA,
//  hence the wait for quiet first.)
static void
s_server_stop (server_t *server)
{
    s_close_listener (server);
    s_unwatch (&server->pipe_watch);
    s_unwatch (&server->tokenizer_watch);
    s_unwatch (&server->status_watch);
    s_fail_all (server, 503, "the server is shutting down");

    int64_t deadline = zclock_mono () + CLOSE_GRACE_MSEC;
    int quiet_rounds = 0;
    while (quiet_rounds < 2 && !h2o_linklist_is_empty (&server->connections)
    &&     zclock_mono () < deadline) {
        h2o_evloop_run (server->loop, 10);
        quiet_rounds = s_writes_pending (server)? 0: quiet_rounds + 1;
    }
    s_shutdown_connections (server, SHUT_RD);
    s_run_until_closed (server, CLOSE_GRACE_MSEC);
    if (!h2o_linklist_is_empty (&server->connections)) {
        zlog (ZLOG_WARN, ACTOR, 0, "closing connections that did not finish in time");
        s_shutdown_connections (server, SHUT_RDWR);
        s_run_until_closed (server, CLOSE_FORCE_MSEC);
    }
}

void
frontend_actor (zsock_t *pipe, void *void_args)
{
    frontend_args_t *args = (frontend_args_t *) void_args;
    args->error [0] = 0;
    args->bound_port = 0;

    //  A write to a client that has gone raises SIGPIPE in the writing thread: keep it
    //  blocked here so the write just fails with EPIPE (other threads are untouched).
    sigset_t sigpipe;
    sigemptyset (&sigpipe);
    sigaddset (&sigpipe, SIGPIPE);
    pthread_sigmask (SIG_BLOCK, &sigpipe, NULL);

    server_t *server = s_server_new (pipe, args);
    if (!server) {
        zlog (ZLOG_ERROR, ACTOR, 0, "cannot start: %s", args->error);
        zsock_signal (pipe, 0);
        return;
    }
    zlog (ZLOG_INFO, ACTOR, 0, "listening on %s://%s:%u, model '%s'%s",
          server->ssl_context? "https": "http",
          args->host && *args->host? args->host: "*", (unsigned) args->bound_port,
          args->model_name, args->api_key && *args->api_key? ", API key required": "");
    zsock_signal (pipe, 0);

    //  Messages may have arrived before the watches were registered.
    s_drain (server);
    while (!server->terminating)
        h2o_evloop_run (server->loop, INT32_MAX);

    s_server_stop (server);
    s_server_destroy (&server);
    zlog (ZLOG_INFO, ACTOR, 0, "stopped");
}
