/*  frontend — the HTTP actor: h2o's event loop, OpenAI JSON in and out.

    It accepts HTTP/1.1 and HTTP/2 (h2c with prior knowledge; h2 over TLS with ALPN when
    a certificate is given) on host:port, validates each request, gives each of its
    prompts (a completion may have several, a chat has one) a request id and sends it
    as a GENERATE message to the tokenizer actor; OUTPUT messages coming back are
    gathered into the response, an ERROR message becomes an OpenAI error body with its
    HTTP status (and CANCELs the request's other prompts). When a client goes away
    before its answer, a CANCEL goes to the tokenizer for each prompt still running. /health and the gauges of /metrics answer from the scheduler's STATUS
    broadcasts.

    Endpoints: POST /v1/completions, POST /v1/chat/completions (both answered whole or,
    with "stream": true, as server-sent events), GET /v1/models, GET /v1/models/{id},
    GET /health, GET /version, GET /metrics (Prometheus text, see metrics.h). Every error
    is an OpenAI error body {"error":{"message","type","param","code"}}; an error after a
    stream has started is an SSE event {"error":{...}} followed by [DONE].

    Around every request, in this order: CORS (a preflight OPTIONS is answered here, and
    every answer to an allowed Origin carries Access-Control-Allow-Origin), then the API
    key (every /v1/ path needs "Authorization: Bearer KEY" when api_key is set; /health,
    /version and /metrics stay open), then, for a generation request, the queue limit
    (429 with Retry-After when max_queued_requests requests already wait).

    A client that goes away is seen at once over HTTP/2; over HTTP/1.1 h2o does not read
    a connection while its request is processed, so twice a second the actor peeks at
    the socket of every pending HTTP/1.1 request, and a peer that has closed is cancelled
    (as nginx's 499: a client that half-closes after its request counts as gone).

    It runs as a CZMQ actor: zactor_new (frontend_actor, &args). The strings in args must
    outlive the actor. It signals the pipe once it is listening, or once it has failed to
    start (args.error is then set). Commands on the pipe:
        "$TERM"      stop now: requests still open get 503, their answers are written,
                     then the loop ends.
        "DRAIN"      stop accepting connections; requests in flight go on, new requests
                     on open connections get 503, /health says 503. When no request is
                     left, the actor sends "DRAINED" on the pipe.
        "PEER_DOWN"  the tokenizer (or an actor behind it) died: requests in flight get
                     503 (and a CANCEL), new ones 503, /health 503, until "PEER_UP".
        "PEER_UP"    the pipeline is whole again: the DEALER to the tokenizer is made
                     anew (a restarted inproc peer is a new socket).
*/
#ifndef ZLLM_FRONTEND_H
#define ZLLM_FRONTEND_H

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    //  In
    const char *host;               //  "127.0.0.1"
    uint16_t port;                  //  0: let the kernel choose (see bound_port)
    const char *tokenizer_endpoint; //  the tokenizer actor's ROUTER; we connect a DEALER
    const char *status_endpoint;    //  the scheduler's PUB; we connect a SUB
    const char *model_name;         //  the id clients put in "model" and /v1/models lists
    uint32_t n_ctx;                 //  context length, reported by /v1/models
    size_t max_body_bytes;          //  larger request bodies get 413; 0: 16 MiB
    bool enable_auto_tool_choice;   //  --enable-auto-tool-choice: chat requests with tools
                                    //  may use tool_choice "auto" (the default with tools);
                                    //  without it they must say "none", else 400
    const char *response_role;      //  --response-role: the role of chat answers;
                                    //  NULL or "": "assistant"
    const char *version;            //  what GET /version says; NULL: "unknown"
    const char *api_key;            //  --api-key: NULL or "": no key needed
    const char *allowed_origins;    //  --allowed-origins, a JSON array of strings;
                                    //  NULL: ["*"] (as vLLM); [] answers no Origin
    const char *allowed_methods;    //  --allowed-methods, JSON; NULL: ["*"]
    const char *allowed_headers;    //  --allowed-headers, JSON; NULL: ["*"]
    bool allow_credentials;         //  --allow-credentials
    const char *ssl_certfile;       //  PEM certificate chain: serve HTTPS (h2 and
    const char *ssl_keyfile;        //  http/1.1 by ALPN); both or neither
    uint32_t max_queued_requests;   //  0: no limit; else a generation request that
                                    //  finds this many waiting gets 429
    //  Out, valid once zactor_new returns
    char error[256];                //  empty when the actor started
    uint16_t bound_port;            //  the port it listens on
} frontend_args_t;

void
    frontend_actor (zsock_t *pipe, void *args);

//  Is text a JSON array of strings, as --allowed-origins, --allowed-methods and
//  --allowed-headers want? Returns 0, or -1 with a message in error (e.g. "not valid
//  JSON: ... at line 1, column 3").
int
    frontend_check_string_list (const char *text, char *error, size_t error_size);

//  Can the frontend serve TLS with this certificate chain and key (PEM files): both
//  readable, and the key the certificate's? Returns 0, or -1 with a message in error.
int
    frontend_check_tls (const char *certfile, const char *keyfile, char *error,
                        size_t error_size);

#endif
