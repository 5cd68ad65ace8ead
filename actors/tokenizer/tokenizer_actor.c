/*  tokenizer_actor — between text and token ids, for every request. See tokenizer_actor.h.

    Where a request goes next:
        GENERATE -> s_handle_generate (tokenize) -> SUBMIT to the scheduler
        TOKENS   -> s_handle_tokens (detokenize) -> OUTPUT to the frontend
        ERROR    -> s_handle_error               -> ERROR to the frontend
*/
#include "tokenizer_actor.h"
#include "detok.h"
#include "gguf.h"
#include "protocol.h"
#include "vocab.h"
#include "zlog.h"

#include <inttypes.h>
#include <string.h>

#define ACTOR "tokenizer"

//  One request between GENERATE and its end.
typedef struct {
    uint64_t id;
    zframe_t *reply_to;             //  routing id of the frontend that sent it
    detok_t *detok;
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
} request_t;

typedef struct {
    tokenizer_args_t *args;
    zsock_t *pipe;
    zsock_t *inbox;                 //  ROUTER, frontend side
    zsock_t *scheduler;             //  DEALER to the scheduler's inbox
    zpoller_t *poller;
    vocab_t *vocab;
    zhashx_t *requests;             //  "%016x" id -> request_t *
    bool scheduler_down;
    bool terminated;
    bool asked_to_stop;             //  "$TERM" came; otherwise we say STOPPED
} tokenizer_t;


static void
s_request_destroy (request_t **self_p)
{
    request_t *self = *self_p;
    if (!self)
        return;
    zframe_destroy (&self->reply_to);
    detok_destroy (&self->detok);
    free (self);
    *self_p = NULL;
}

//  zhashx destructor adapter
static void
s_request_free (void **item)
{
    s_request_destroy ((request_t **) item);
}

static void
s_key (uint64_t id, char *key)
{
    snprintf (key, 17, "%016" PRIx64, id);
}

static request_t *
s_find (tokenizer_t *self, uint64_t id)
{
    char key [17];
    s_key (id, key);
    return (request_t *) zhashx_lookup (self->requests, key);
}

static void
s_forget (tokenizer_t *self, uint64_t id)
{
    char key [17];
    s_key (id, key);
    zhashx_delete (self->requests, key);
}

static void
s_send_to_frontend (tokenizer_t *self, const proto_msg_t *msg, zframe_t *reply_to)
{
    if (proto_send_to (msg, self->inbox, reply_to) != 0)
        zlog (ZLOG_WARN, ACTOR, msg->request_id, "could not send %s to the frontend: %s",
              proto_kind_name (msg->kind), zmq_strerror (zmq_errno ()));
}

static void
s_send_error (tokenizer_t *self, uint64_t id, zframe_t *reply_to, uint32_t status,
              const char *message)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_ERROR;
    msg.request_id = id;
    msg.status = status;
    if (proto_msg_set_text (&msg, message) == 0)
        s_send_to_frontend (self, &msg, reply_to);
    proto_msg_reset (&msg);
}

static void
s_handle_generate (tokenizer_t *self, proto_msg_t *msg, zframe_t *reply_to)
{
    if (self->scheduler_down) {
        s_send_error (self, msg->request_id, reply_to, 503, "the scheduler is not running");
        return;
    }
    if (s_find (self, msg->request_id)) {
        s_send_error (self, msg->request_id, reply_to, 400, "duplicate request id");
        return;
    }
    const char *text = msg->text ? msg->text : "";
    size_t length = strlen (text);
    char err [256] = "";
    //  A first guess at the number of tokens; vocab_tokenize says when it needs more.
    size_t max_ids = length / 2 + 16;
    uint32_t *ids = NULL;
    int64_t n_ids = -1;
    bool out_of_memory = false;
    while (true) {
        uint32_t *grown = (uint32_t *) realloc (ids, max_ids * sizeof (uint32_t));
        if (!grown) {
            snprintf (err, sizeof err, "out of memory");
            out_of_memory = true;
            n_ids = -1;
            break;
        }
        ids = grown;
        n_ids = vocab_tokenize (self->vocab, text, length, vocab_add_bos (self->vocab), ids,
                                max_ids, err, sizeof err);
        if (n_ids < 0 || (size_t) n_ids <= max_ids || n_ids > PROTO_MAX_TOKENS)
            break;
        max_ids = (size_t) n_ids;
    }
    if (n_ids < 0 || n_ids > PROTO_MAX_TOKENS) {
        char message [320];
        if (n_ids > PROTO_MAX_TOKENS)
            snprintf (message, sizeof message, "the prompt has %" PRId64 " tokens; "
                      "at most %u are accepted", n_ids, PROTO_MAX_TOKENS);
        else
            snprintf (message, sizeof message, "could not tokenize the prompt: %s", err);
        s_send_error (self, msg->request_id, reply_to, out_of_memory ? 500 : 400, message);
        free (ids);
        return;
    }
    request_t *request = (request_t *) calloc (1, sizeof (request_t));
    if (request) {
        request->id = msg->request_id;
        request->reply_to = zframe_dup (reply_to);
        request->detok = detok_new (self->vocab);
        request->prompt_tokens = (uint32_t) n_ids;
    }
    if (!request || !request->reply_to || !request->detok) {
        s_request_destroy (&request);
        s_send_error (self, msg->request_id, reply_to, 500, "out of memory");
        free (ids);
        return;
    }
    char key [17];
    s_key (request->id, key);
    zhashx_insert (self->requests, key, request);

    proto_msg_t submit = PROTO_MSG_INIT;
    submit.kind = PROTO_SUBMIT;
    submit.request_id = msg->request_id;
    submit.tokens = ids;
    submit.n_tokens = (uint32_t) n_ids;
    submit.max_tokens = msg->max_tokens;
    submit.temperature = msg->temperature;
    submit.seed = msg->seed;
    uint32_t eos = vocab_eos (self->vocab);
    if (eos != UINT32_MAX) {
        submit.stop_tokens = &eos;
        submit.n_stop_tokens = 1;
    }
    int rc = proto_send (&submit, self->scheduler);
    free (ids);
    if (rc != 0) {
        s_send_error (self, request->id, reply_to, 503, "the scheduler is not reachable");
        s_forget (self, request->id);
        return;
    }
    zlog (ZLOG_DEBUG, ACTOR, msg->request_id, "%" PRId64 " prompt tokens", n_ids);
}

static void
s_handle_tokens (tokenizer_t *self, proto_msg_t *msg)
{
    request_t *request = s_find (self, msg->request_id);
    if (!request)
        return;                     //  cancelled meanwhile
    //  The text of the new tokens; a stop token that ends the request gives none.
    char *text = NULL;
    size_t text_size = 0;
    FILE *stream = open_memstream (&text, &text_size);
    if (!stream)
        return;
    uint32_t n_rendered = msg->n_tokens;
    if (msg->finish == PROTO_FINISH_STOP && n_rendered > 0)
        n_rendered--;
    for (uint32_t i = 0; i < n_rendered; i++)
        fputs (detok_add (request->detok, msg->tokens [i]), stream);
    if (msg->finish != PROTO_FINISH_NONE)
        fputs (detok_flush (request->detok), stream);
    fclose (stream);
    request->completion_tokens += msg->n_tokens;

    proto_msg_t output = PROTO_MSG_INIT;
    output.kind = PROTO_OUTPUT;
    output.request_id = request->id;
    output.text = text;
    output.finish = msg->finish;
    output.prompt_tokens = request->prompt_tokens;
    output.completion_tokens = request->completion_tokens;
    s_send_to_frontend (self, &output, request->reply_to);
    free (text);
    if (msg->finish != PROTO_FINISH_NONE)
        s_forget (self, request->id);
}

static void
s_handle_scheduler_error (tokenizer_t *self, proto_msg_t *msg)
{
    request_t *request = s_find (self, msg->request_id);
    if (!request)
        return;
    s_send_error (self, request->id, request->reply_to, msg->status,
                  msg->text ? msg->text : "the request failed");
    s_forget (self, request->id);
}

static void
s_handle_cancel (tokenizer_t *self, proto_msg_t *msg)
{
    if (!s_find (self, msg->request_id))
        return;
    s_forget (self, msg->request_id);
    if (proto_send (msg, self->scheduler) != 0)
        zlog (ZLOG_WARN, ACTOR, msg->request_id, "could not pass CANCEL on");
}

//  The scheduler is gone: every open request fails.
static void
s_fail_all (tokenizer_t *self, const char *message)
{
    request_t *request = (request_t *) zhashx_first (self->requests);
    while (request) {
        s_send_error (self, request->id, request->reply_to, 503, message);
        request = (request_t *) zhashx_next (self->requests);
    }
    zhashx_purge (self->requests);
}

static void
s_read_inbox (tokenizer_t *self)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    zframe_t *routing_id = NULL;
    char err [256];
    if (proto_recv (self->inbox, &msg, &routing_id, err, sizeof err) != 0)
        zlog (ZLOG_WARN, ACTOR, 0, "bad message from the frontend side: %s", err);
    else
    if (msg.kind == PROTO_GENERATE)
        s_handle_generate (self, &msg, routing_id);
    else
    if (msg.kind == PROTO_CANCEL)
        s_handle_cancel (self, &msg);
    else
        zlog (ZLOG_WARN, ACTOR, msg.request_id, "unexpected %s from the frontend side",
              proto_kind_name (msg.kind));
    proto_msg_reset (&msg);
    zframe_destroy (&routing_id);
}

static void
s_read_scheduler (tokenizer_t *self)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    char err [256];
    if (proto_recv (self->scheduler, &msg, NULL, err, sizeof err) != 0)
        zlog (ZLOG_WARN, ACTOR, 0, "bad message from the scheduler: %s", err);
    else
    if (msg.kind == PROTO_TOKENS)
        s_handle_tokens (self, &msg);
    else
    if (msg.kind == PROTO_ERROR)
        s_handle_scheduler_error (self, &msg);
    else
        zlog (ZLOG_WARN, ACTOR, msg.request_id, "unexpected %s from the scheduler",
              proto_kind_name (msg.kind));
    proto_msg_reset (&msg);
}

static void
s_read_pipe (tokenizer_t *self)
{
    char *command = zstr_recv (self->pipe);
    if (!command || streq (command, "$TERM"))
        self->terminated = self->asked_to_stop = true;
    else
    if (streq (command, "PEER_DOWN")) {
        self->scheduler_down = true;
        s_fail_all (self, "the scheduler stopped");
    }
    else
        zlog (ZLOG_WARN, ACTOR, 0, "unknown command on the pipe: %s", command);
    zstr_free (&command);
}

static int
s_start (tokenizer_t *self)
{
    tokenizer_args_t *args = self->args;
    char err [256];
    gguf_t *gguf = gguf_open (args->model_path, err, sizeof err);
    if (!gguf) {
        snprintf (args->error, sizeof args->error, "%s", err);
        return -1;
    }
    self->vocab = vocab_new (gguf, err, sizeof err);
    gguf_destroy (&gguf);
    if (!self->vocab) {
        snprintf (args->error, sizeof args->error, "%s", err);
        return -1;
    }
    self->requests = zhashx_new ();
    zhashx_set_destructor (self->requests, s_request_free);

    self->inbox = zsock_new (ZMQ_ROUTER);
    self->scheduler = zsock_new (ZMQ_DEALER);
    if (!self->inbox || !self->scheduler)
        return -1;
    zsock_set_router_mandatory (self->inbox, 1);
    zsock_set_sndhwm (self->inbox, 0);
    zsock_set_rcvhwm (self->inbox, 0);
    zsock_set_sndtimeo (self->inbox, 0);
    zsock_set_sndhwm (self->scheduler, 0);
    zsock_set_rcvhwm (self->scheduler, 0);
    if (zsock_bind (self->inbox, "%s", args->inbox_endpoint) == -1
    ||  zsock_connect (self->scheduler, "%s", args->scheduler_endpoint) == -1) {
        snprintf (args->error, sizeof args->error, "could not bind %s or connect %s",
                  args->inbox_endpoint, args->scheduler_endpoint);
        return -1;
    }
    self->poller = zpoller_new (self->pipe, self->inbox, self->scheduler, NULL);
    zlog (ZLOG_INFO, ACTOR, 0, "vocabulary of %u tokens", vocab_size (self->vocab));
    return self->poller ? 0 : -1;
}

static void
s_stop (tokenizer_t *self)
{
    zhashx_destroy (&self->requests);
    zpoller_destroy (&self->poller);
    zsock_destroy (&self->scheduler);
    zsock_destroy (&self->inbox);
    vocab_destroy (&self->vocab);
}

void
tokenizer_actor (zsock_t *pipe, void *args)
{
    tokenizer_t self = { 0 };
    self.args = (tokenizer_args_t *) args;
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
    zlog (ZLOG_INFO, ACTOR, 0, "ready");
    while (!self.terminated) {
        void *which = zpoller_wait (self.poller, -1);
        if (which == self.pipe)
            s_read_pipe (&self);
        else
        if (which == self.inbox)
            s_read_inbox (&self);
        else
        if (which == self.scheduler)
            s_read_scheduler (&self);
        else
        if (zpoller_terminated (self.poller))
            break;
    }
    s_stop (&self);
    if (!self.asked_to_stop)
        zstr_send (pipe, "STOPPED");
}
