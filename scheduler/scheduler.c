/*  scheduler — decides, step by step, what every worker computes. See scheduler.h.

    The actor's state is three lists: requests waiting in arrival order, workers (each with
    its KV slots, each slot empty or holding one running request), and nothing else. The
    loop: read what arrived (requests, cancels, worker messages), then give every idle
    worker its next step, then heartbeats and STATUS. Where a request goes next:

        SUBMIT -> s_handle_submit -> waiting list -> s_schedule (a free slot, a STEP)
        STEP_RESULT -> s_handle_step_result -> TOKENS to the tokenizer -> finished? free
        the slot : stay running, next step
*/
#include "scheduler.h"
#include "protocol.h"
#include "zlog.h"

#include <inttypes.h>
#include <string.h>

#define ACTOR "scheduler"
#define STATUS_INTERVAL_MS 1000

typedef struct _worker_t worker_t;

typedef struct {
    uint64_t id;
    zframe_t *reply_to;             //  routing id of the tokenizer that sent it
    uint32_t *tokens;               //  prompt, then every generated token
    uint32_t n_tokens;
    uint32_t capacity;
    uint32_t n_prompt;
    uint32_t n_computed;            //  tokens whose keys and values the worker holds
    uint32_t max_tokens;            //  0: up to the context length
    float temperature;
    uint64_t seed;
    uint32_t *stop_tokens;
    uint32_t n_stop_tokens;
} request_t;

struct _worker_t {
    zframe_t *routing_id;
    char *device;
    uint32_t n_slots;
    uint32_t n_ctx;
    request_t **slots;              //  n_slots entries, NULL when free
    uint64_t *step_request_ids;     //  per slot: the request the step in flight ran there
    uint64_t step_in_flight;        //  0 when idle
    int64_t last_heard;             //  zclock_mono of the last message from it
};

typedef struct {
    scheduler_args_t *args;
    zsock_t *pipe;
    zsock_t *inbox;                 //  ROUTER, tokenizer side
    zsock_t *workers_router;        //  ROUTER, worker side
    zsock_t *status_pub;
    zpoller_t *poller;
    zlistx_t *waiting;              //  request_t *, first come first served
    zlistx_t *workers;              //  worker_t *
    uint64_t next_step_id;
    uint32_t heartbeat_ms;
    uint32_t worker_timeout_ms;
    int64_t next_heartbeat;
    int64_t next_status;
    bool status_changed;
    bool terminated;
    bool asked_to_stop;             //  "$TERM" came; otherwise we say STOPPED
} scheduler_t;


//  --- Requests ---------------------------------------------------------------------------

static request_t *
s_request_new (const proto_msg_t *submit, zframe_t *reply_to)
{
    request_t *self = (request_t *) calloc (1, sizeof (request_t));
    if (!self)
        return NULL;
    self->id = submit->request_id;
    self->reply_to = zframe_dup (reply_to);
    self->capacity = submit->n_tokens + 16;
    self->tokens = (uint32_t *) malloc (self->capacity * sizeof (uint32_t));
    if (submit->n_stop_tokens)
        self->stop_tokens = (uint32_t *) malloc (submit->n_stop_tokens * sizeof (uint32_t));
    if (!self->reply_to || !self->tokens || (submit->n_stop_tokens && !self->stop_tokens)) {
        zframe_destroy (&self->reply_to);
        free (self->tokens);
        free (self->stop_tokens);
        free (self);
        return NULL;
    }
    if (submit->n_tokens)
        memcpy (self->tokens, submit->tokens, submit->n_tokens * sizeof (uint32_t));
    self->n_tokens = submit->n_tokens;
    self->n_prompt = submit->n_tokens;
    self->max_tokens = submit->max_tokens;
    self->temperature = submit->temperature;
    self->seed = submit->seed;
    if (submit->n_stop_tokens)
        memcpy (self->stop_tokens, submit->stop_tokens,
                submit->n_stop_tokens * sizeof (uint32_t));
    self->n_stop_tokens = submit->n_stop_tokens;
    return self;
}

static void
s_request_destroy (request_t **self_p)
{
    request_t *self = *self_p;
    if (!self)
        return;
    zframe_destroy (&self->reply_to);
    free (self->tokens);
    free (self->stop_tokens);
    free (self);
    *self_p = NULL;
}

static int
s_request_append (request_t *self, uint32_t token)
{
    if (self->n_tokens == self->capacity) {
        uint32_t capacity = self->capacity * 2;
        uint32_t *tokens = (uint32_t *) realloc (self->tokens, capacity * sizeof (uint32_t));
        if (!tokens)
            return -1;
        self->tokens = tokens;
        self->capacity = capacity;
    }
    self->tokens [self->n_tokens++] = token;
    return 0;
}

static bool
s_request_is_stop_token (const request_t *self, uint32_t token)
{
    for (uint32_t i = 0; i < self->n_stop_tokens; i++)
        if (self->stop_tokens [i] == token)
            return true;
    return false;
}


//  --- Messages to the tokenizer ----------------------------------------------------------

static void
s_send_to_tokenizer (scheduler_t *self, const proto_msg_t *msg, zframe_t *reply_to)
{
    if (proto_send_to (msg, self->inbox, reply_to) != 0)
        zlog (ZLOG_WARN, ACTOR, msg->request_id, "could not send %s to the tokenizer: %s",
              proto_kind_name (msg->kind), zmq_strerror (zmq_errno ()));
}

static void
s_send_error (scheduler_t *self, uint64_t request_id, zframe_t *reply_to,
              uint32_t status, const char *message)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_ERROR;
    msg.request_id = request_id;
    msg.status = status;
    if (proto_msg_set_text (&msg, message) == 0)
        s_send_to_tokenizer (self, &msg, reply_to);
    proto_msg_reset (&msg);
    zlog (ZLOG_INFO, ACTOR, request_id, "failed with %u: %s", status, message);
}


//  --- Workers ----------------------------------------------------------------------------

static worker_t *
s_worker_new (zframe_t *routing_id, const proto_msg_t *hello)
{
    worker_t *self = (worker_t *) calloc (1, sizeof (worker_t));
    if (!self)
        return NULL;
    self->routing_id = zframe_dup (routing_id);
    self->device = strdup (hello->text ? hello->text : "?");
    self->n_slots = hello->n_slots;
    self->n_ctx = hello->n_ctx;
    self->slots = (request_t **) calloc (hello->n_slots, sizeof (request_t *));
    self->step_request_ids = (uint64_t *) calloc (hello->n_slots, sizeof (uint64_t));
    self->last_heard = zclock_mono ();
    if (!self->routing_id || !self->device || !self->slots || !self->step_request_ids) {
        zframe_destroy (&self->routing_id);
        free (self->device);
        free (self->slots);
        free (self->step_request_ids);
        free (self);
        return NULL;
    }
    return self;
}

//  Frees the worker; its running requests must have been dealt with.
static void
s_worker_destroy (worker_t **self_p)
{
    worker_t *self = *self_p;
    if (!self)
        return;
    zframe_destroy (&self->routing_id);
    free (self->device);
    free (self->slots);
    free (self->step_request_ids);
    free (self);
    *self_p = NULL;
}

static worker_t *
s_find_worker (scheduler_t *self, zframe_t *routing_id)
{
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        if (zframe_eq (worker->routing_id, routing_id))
            return worker;
        worker = (worker_t *) zlistx_next (self->workers);
    }
    return NULL;
}

static uint32_t
s_running_count (scheduler_t *self)
{
    uint32_t running = 0;
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        for (uint32_t slot = 0; slot < worker->n_slots; slot++)
            if (worker->slots [slot])
                running++;
        worker = (worker_t *) zlistx_next (self->workers);
    }
    return running;
}

static void
s_fail_waiting (scheduler_t *self, uint32_t status, const char *message)
{
    request_t *request = (request_t *) zlistx_first (self->waiting);
    while (request) {
        s_send_error (self, request->id, request->reply_to, status, message);
        s_request_destroy (&request);
        request = (request_t *) zlistx_next (self->waiting);
    }
    zlistx_purge (self->waiting);
}

//  Forget a worker: its running requests fail with 503, and when it was the last
//  worker, so do the waiting ones.
static void
s_drop_worker (scheduler_t *self, worker_t *worker, const char *why)
{
    //  A worker that leaves (BYE) is routine; one that vanishes is worth a warning.
    zlog (streq (why, "left") ? ZLOG_INFO : ZLOG_WARN, ACTOR, 0, "worker %s dropped: %s",
          worker->device, why);
    char message [256];
    snprintf (message, sizeof message, "the worker running this request (%s) %s",
              worker->device, why);
    for (uint32_t slot = 0; slot < worker->n_slots; slot++) {
        if (worker->slots [slot]) {
            s_send_error (self, worker->slots [slot]->id, worker->slots [slot]->reply_to,
                          503, message);
            s_request_destroy (&worker->slots [slot]);
        }
    }
    void *handle = zlistx_find (self->workers, worker);
    if (handle)
        zlistx_delete (self->workers, handle);
    s_worker_destroy (&worker);
    if (zlistx_size (self->workers) == 0)
        s_fail_waiting (self, 503, "no worker is available to run this request");
    self->status_changed = true;
}

//  Send to a worker; a worker that cannot be reached is dropped. Returns 0 or -1.
static int
s_send_to_worker (scheduler_t *self, worker_t *worker, const proto_msg_t *msg)
{
    if (proto_send_to (msg, self->workers_router, worker->routing_id) == 0)
        return 0;
    char why [128];
    snprintf (why, sizeof why, "could not be reached (%s)", zmq_strerror (zmq_errno ()));
    s_drop_worker (self, worker, why);
    return -1;
}


//  --- Scheduling -------------------------------------------------------------------------

//  Why a request cannot run on any worker we have, or NULL when it can.
static const char *
s_check_fits (scheduler_t *self, const request_t *request, char *message, size_t size)
{
    uint32_t largest_ctx = 0;
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        if (worker->n_ctx > largest_ctx)
            largest_ctx = worker->n_ctx;
        worker = (worker_t *) zlistx_next (self->workers);
    }
    if (request->n_prompt == 0) {
        snprintf (message, size, "the prompt is empty (no tokens)");
        return message;
    }
    if (request->n_prompt > largest_ctx) {
        snprintf (message, size, "this model's maximum context length is %u tokens, "
                  "but the prompt has %u tokens", largest_ctx, request->n_prompt);
        return message;
    }
    return NULL;
}

//  Place waiting requests in free slots, first come first served.
static void
s_place_waiting (scheduler_t *self)
{
    request_t *request = (request_t *) zlistx_first (self->waiting);
    while (request) {
        bool placed = false;
        worker_t *worker = (worker_t *) zlistx_first (self->workers);
        while (worker && !placed) {
            //  A slot freed while a step is in flight is taken at the next step.
            if (worker->step_in_flight == 0 && request->n_prompt <= worker->n_ctx) {
                for (uint32_t slot = 0; slot < worker->n_slots && !placed; slot++) {
                    if (!worker->slots [slot]) {
                        worker->slots [slot] = request;
                        request->n_computed = 0;
                        placed = true;
                        zlog (ZLOG_DEBUG, ACTOR, request->id, "runs on %s slot %u",
                              worker->device, slot);
                    }
                }
            }
            worker = (worker_t *) zlistx_next (self->workers);
        }
        if (!placed)
            break;                  //  first come, first served: nobody overtakes it
        zlistx_delete (self->waiting, zlistx_cursor (self->waiting));
        self->status_changed = true;
        request = (request_t *) zlistx_first (self->waiting);
    }
}

//  Give every idle worker with running requests its next step.
static void
s_schedule (scheduler_t *self)
{
    s_place_waiting (self);
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        worker_t *next = (worker_t *) zlistx_next (self->workers);
        if (worker->step_in_flight == 0) {
            proto_step_seq_t seqs [worker->n_slots];
            uint32_t n_seqs = 0;
            for (uint32_t slot = 0; slot < worker->n_slots; slot++) {
                request_t *request = worker->slots [slot];
                worker->step_request_ids [slot] = request ? request->id : 0;
                if (!request)
                    continue;
                proto_step_seq_t *seq = &seqs [n_seqs++];
                seq->slot = slot;
                seq->pos = request->n_computed;
                seq->tokens = request->tokens + request->n_computed;
                seq->n_tokens = request->n_tokens - request->n_computed;
                seq->temperature = request->temperature;
                seq->seed = request->seed;
            }
            if (n_seqs > 0) {
                proto_msg_t step = PROTO_MSG_INIT;
                step.kind = PROTO_STEP;
                step.step_id = ++self->next_step_id;
                step.seqs = seqs;
                step.n_seqs = n_seqs;
                //  The seqs borrow the requests' arrays: not reset, only sent.
                if (s_send_to_worker (self, worker, &step) == 0)
                    worker->step_in_flight = step.step_id;
            }
        }
        //  s_send_to_worker may have dropped the worker: resume from the saved next.
        if (next && zlistx_find (self->workers, next))
            worker = next;
        else
            break;
    }
}


//  --- Handlers ---------------------------------------------------------------------------

static void
s_handle_submit (scheduler_t *self, proto_msg_t *msg, zframe_t *reply_to)
{
    if (zlistx_size (self->workers) == 0) {
        s_send_error (self, msg->request_id, reply_to, 503,
                      "no worker is available to run this request");
        return;
    }
    request_t *request = s_request_new (msg, reply_to);
    if (!request) {
        s_send_error (self, msg->request_id, reply_to, 500, "out of memory");
        return;
    }
    char message [256];
    if (s_check_fits (self, request, message, sizeof message)) {
        s_send_error (self, request->id, reply_to, 400, message);
        s_request_destroy (&request);
        return;
    }
    zlistx_add_end (self->waiting, request);
    self->status_changed = true;
    zlog (ZLOG_DEBUG, ACTOR, request->id, "queued: %u prompt tokens, max_tokens %u",
          request->n_prompt, request->max_tokens);
}

static void
s_handle_cancel (scheduler_t *self, uint64_t request_id)
{
    request_t *request = (request_t *) zlistx_first (self->waiting);
    while (request) {
        if (request->id == request_id) {
            zlistx_delete (self->waiting, zlistx_cursor (self->waiting));
            s_request_destroy (&request);
            self->status_changed = true;
            zlog (ZLOG_INFO, ACTOR, request_id, "cancelled while waiting");
            return;
        }
        request = (request_t *) zlistx_next (self->waiting);
    }
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        for (uint32_t slot = 0; slot < worker->n_slots; slot++) {
            if (worker->slots [slot] && worker->slots [slot]->id == request_id) {
                //  A step in flight may still return a token for this slot: it is
                //  recognised by step_request_ids and dropped.
                s_request_destroy (&worker->slots [slot]);
                self->status_changed = true;
                zlog (ZLOG_INFO, ACTOR, request_id, "cancelled while running");
                return;
            }
        }
        worker = (worker_t *) zlistx_next (self->workers);
    }
}

static void
s_handle_step_result (scheduler_t *self, worker_t *worker, proto_msg_t *msg)
{
    if (msg->step_id != worker->step_in_flight) {
        zlog (ZLOG_WARN, ACTOR, 0, "worker %s: result for step %" PRIu64
              " which is not in flight; ignored", worker->device, msg->step_id);
        return;
    }
    worker->step_in_flight = 0;
    if (msg->text && msg->text [0]) {
        //  The whole step failed: its requests cannot go on.
        char message [512];
        snprintf (message, sizeof message, "the worker failed: %s", msg->text);
        for (uint32_t slot = 0; slot < worker->n_slots; slot++) {
            request_t *request = worker->slots [slot];
            if (request && request->id == worker->step_request_ids [slot]) {
                s_send_error (self, request->id, request->reply_to, 500, message);
                s_request_destroy (&worker->slots [slot]);
            }
        }
        self->status_changed = true;
        return;
    }
    for (uint32_t i = 0; i < msg->n_outs; i++) {
        const proto_step_out_t *out = &msg->outs [i];
        if (out->slot >= worker->n_slots)
            continue;
        request_t *request = worker->slots [out->slot];
        if (!request || request->id != worker->step_request_ids [out->slot])
            continue;               //  cancelled while the step ran
        request->n_computed = request->n_tokens;
        proto_finish_t finish = PROTO_FINISH_NONE;
        if (s_request_append (request, out->token) != 0) {
            s_send_error (self, request->id, request->reply_to, 500, "out of memory");
            s_request_destroy (&worker->slots [out->slot]);
            continue;
        }
        uint32_t generated = request->n_tokens - request->n_prompt;
        if (s_request_is_stop_token (request, out->token))
            finish = PROTO_FINISH_STOP;
        else
        if ((request->max_tokens && generated >= request->max_tokens)
        ||  request->n_tokens >= worker->n_ctx)
            finish = PROTO_FINISH_LENGTH;

        proto_msg_t tokens = PROTO_MSG_INIT;
        tokens.kind = PROTO_TOKENS;
        tokens.request_id = request->id;
        tokens.tokens = &request->tokens [request->n_tokens - 1];
        tokens.n_tokens = 1;
        tokens.finish = finish;
        tokens.prompt_tokens = request->n_prompt;
        s_send_to_tokenizer (self, &tokens, request->reply_to);
        if (finish != PROTO_FINISH_NONE) {
            zlog (ZLOG_INFO, ACTOR, request->id, "finished (%s): %u prompt + %u generated "
                  "tokens", proto_finish_name (finish), request->n_prompt, generated);
            s_request_destroy (&worker->slots [out->slot]);
            self->status_changed = true;
        }
    }
}

static void
s_handle_hello (scheduler_t *self, zframe_t *routing_id, proto_msg_t *msg)
{
    char reason [256] = "";
    if (msg->version != PROTO_VERSION)
        snprintf (reason, sizeof reason, "protocol version %u, this scheduler speaks %u",
                  msg->version, PROTO_VERSION);
    else
    if (self->args->model_fingerprint && msg->fingerprint != self->args->model_fingerprint)
        snprintf (reason, sizeof reason, "the worker serves another model (fingerprint "
                  "%016" PRIx64 ", expected %016" PRIx64 ")",
                  msg->fingerprint, self->args->model_fingerprint);
    else
    if (msg->n_slots == 0 || msg->n_slots > PROTO_MAX_STEP_SEQS || msg->n_ctx == 0)
        snprintf (reason, sizeof reason, "%u slots of %u tokens is not a usable worker",
                  msg->n_slots, msg->n_ctx);

    proto_msg_t reply = PROTO_MSG_INIT;
    if (reason [0]) {
        zlog (ZLOG_WARN, ACTOR, 0, "worker %s refused: %s", msg->text, reason);
        reply.kind = PROTO_REJECT;
        proto_msg_set_text (&reply, reason);
        proto_send_to (&reply, self->workers_router, routing_id);
        proto_msg_reset (&reply);
        return;
    }
    //  A worker that says HELLO again has restarted: what it ran is lost.
    worker_t *old = s_find_worker (self, routing_id);
    if (old)
        s_drop_worker (self, old, "restarted");
    worker_t *worker = s_worker_new (routing_id, msg);
    if (!worker)
        return;
    zlistx_add_end (self->workers, worker);
    self->status_changed = true;
    reply.kind = PROTO_WELCOME;
    if (s_send_to_worker (self, worker, &reply) == 0)
        zlog (ZLOG_INFO, ACTOR, 0, "worker %s joined: %u slots of %u tokens",
              worker->device, worker->n_slots, worker->n_ctx);
}

static void
s_read_inbox (scheduler_t *self)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    zframe_t *routing_id = NULL;
    char err [256];
    if (proto_recv (self->inbox, &msg, &routing_id, err, sizeof err) != 0) {
        zlog (ZLOG_WARN, ACTOR, 0, "bad message from the tokenizer side: %s", err);
        zframe_destroy (&routing_id);
        return;
    }
    if (msg.kind == PROTO_SUBMIT)
        s_handle_submit (self, &msg, routing_id);
    else
    if (msg.kind == PROTO_CANCEL)
        s_handle_cancel (self, msg.request_id);
    else
        zlog (ZLOG_WARN, ACTOR, msg.request_id, "unexpected %s from the tokenizer side",
              proto_kind_name (msg.kind));
    proto_msg_reset (&msg);
    zframe_destroy (&routing_id);
}

static void
s_read_workers (scheduler_t *self)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    zframe_t *routing_id = NULL;
    char err [256];
    if (proto_recv (self->workers_router, &msg, &routing_id, err, sizeof err) != 0) {
        zlog (ZLOG_WARN, ACTOR, 0, "bad message on the worker socket: %s", err);
        zframe_destroy (&routing_id);
        return;
    }
    worker_t *worker = s_find_worker (self, routing_id);
    if (worker)
        worker->last_heard = zclock_mono ();

    if (msg.kind == PROTO_HELLO)
        s_handle_hello (self, routing_id, &msg);
    else
    if (!worker)
        zlog (ZLOG_WARN, ACTOR, 0, "%s from a peer that has not said HELLO; ignored",
              proto_kind_name (msg.kind));
    else
    if (msg.kind == PROTO_STEP_RESULT)
        s_handle_step_result (self, worker, &msg);
    else
    if (msg.kind == PROTO_BYE)
        s_drop_worker (self, worker, "left");
    else
    if (msg.kind != PROTO_HEARTBEAT)
        zlog (ZLOG_WARN, ACTOR, 0, "unexpected %s from worker %s",
              proto_kind_name (msg.kind), worker->device);
    proto_msg_reset (&msg);
    zframe_destroy (&routing_id);
}

static void
s_read_pipe (scheduler_t *self)
{
    char *command = zstr_recv (self->pipe);
    if (!command || streq (command, "$TERM"))
        self->terminated = self->asked_to_stop = true;
    else
        zlog (ZLOG_WARN, ACTOR, 0, "unknown command on the pipe: %s", command);
    zstr_free (&command);
}

//  Heartbeats out, silent workers dropped, STATUS published.
static void
s_on_clock (scheduler_t *self)
{
    int64_t now = zclock_mono ();
    if (now >= self->next_heartbeat) {
        self->next_heartbeat = now + self->heartbeat_ms;
        proto_msg_t heartbeat = PROTO_MSG_INIT;
        heartbeat.kind = PROTO_HEARTBEAT;
        worker_t *worker = (worker_t *) zlistx_first (self->workers);
        while (worker) {
            worker_t *next = (worker_t *) zlistx_next (self->workers);
            if (now - worker->last_heard > (int64_t) self->worker_timeout_ms)
                s_drop_worker (self, worker, "stopped responding");
            else
                s_send_to_worker (self, worker, &heartbeat);
            if (!next || !zlistx_find (self->workers, next))
                break;
            worker = next;
        }
    }
    if (self->status_changed || now >= self->next_status) {
        self->next_status = now + STATUS_INTERVAL_MS;
        self->status_changed = false;
        proto_msg_t status = PROTO_MSG_INIT;
        status.kind = PROTO_STATUS;
        status.workers = (uint32_t) zlistx_size (self->workers);
        status.running = s_running_count (self);
        status.waiting = (uint32_t) zlistx_size (self->waiting);
        proto_send (&status, self->status_pub);
    }
}


//  --- The actor --------------------------------------------------------------------------

static zsock_t *
s_bind_router (const char *endpoint, char *error, size_t error_size)
{
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    if (!router) {
        snprintf (error, error_size, "could not create a ROUTER socket");
        return NULL;
    }
    zsock_set_router_mandatory (router, 1);
    zsock_set_sndhwm (router, 0);
    zsock_set_rcvhwm (router, 0);
    zsock_set_maxmsgsize (router, PROTO_MAX_FRAME_BYTES);
    zsock_set_sndtimeo (router, 0);
    if (zsock_bind (router, "%s", endpoint) == -1) {
        snprintf (error, error_size, "could not bind %s: %s", endpoint,
                  zmq_strerror (zmq_errno ()));
        zsock_destroy (&router);
    }
    return router;
}

static int
s_start (scheduler_t *self)
{
    scheduler_args_t *args = self->args;
    self->heartbeat_ms = args->heartbeat_ms ? args->heartbeat_ms : 1000;
    self->worker_timeout_ms = args->worker_timeout_ms ? args->worker_timeout_ms : 5000;
    self->waiting = zlistx_new ();
    self->workers = zlistx_new ();
    self->inbox = s_bind_router (args->inbox_endpoint, args->error, sizeof args->error);
    if (!self->inbox)
        return -1;
    self->workers_router = s_bind_router (args->worker_endpoint, args->error,
                                          sizeof args->error);
    if (!self->workers_router)
        return -1;
    if (args->worker_listen && zsock_bind (self->workers_router, "%s",
                                           args->worker_listen) == -1) {
        snprintf (args->error, sizeof args->error, "could not listen for workers on %s: %s",
                  args->worker_listen, zmq_strerror (zmq_errno ()));
        return -1;
    }
    self->status_pub = zsock_new (ZMQ_PUB);
    if (!self->status_pub || zsock_bind (self->status_pub, "%s", args->status_endpoint) == -1) {
        snprintf (args->error, sizeof args->error, "could not bind %s",
                  args->status_endpoint);
        return -1;
    }
    self->poller = zpoller_new (self->pipe, self->inbox, self->workers_router, NULL);
    return self->poller ? 0 : -1;
}

static void
s_stop (scheduler_t *self)
{
    request_t *request = (request_t *) zlistx_first (self->waiting);
    while (request) {
        s_request_destroy (&request);
        request = (request_t *) zlistx_next (self->waiting);
    }
    zlistx_destroy (&self->waiting);
    worker_t *worker = (worker_t *) zlistx_first (self->workers);
    while (worker) {
        for (uint32_t slot = 0; slot < worker->n_slots; slot++)
            s_request_destroy (&worker->slots [slot]);
        s_worker_destroy (&worker);
        worker = (worker_t *) zlistx_next (self->workers);
    }
    zlistx_destroy (&self->workers);
    zpoller_destroy (&self->poller);
    zsock_destroy (&self->status_pub);
    zsock_destroy (&self->workers_router);
    zsock_destroy (&self->inbox);
}

void
scheduler_actor (zsock_t *pipe, void *args)
{
    scheduler_t self = { 0 };
    self.args = (scheduler_args_t *) args;
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
    zlog (ZLOG_INFO, ACTOR, 0, "ready%s%s", self.args->worker_listen ? "; workers may "
          "connect to " : "", self.args->worker_listen ? self.args->worker_listen : "");

    while (!self.terminated) {
        void *which = zpoller_wait (self.poller, 100);
        if (which == self.pipe)
            s_read_pipe (&self);
        else
        if (which == self.inbox)
            s_read_inbox (&self);
        else
        if (which == self.workers_router)
            s_read_workers (&self);
        if (!self.terminated) {
            s_schedule (&self);
            s_on_clock (&self);
        }
    }
    s_stop (&self);
    if (!self.asked_to_stop)
        zstr_send (pipe, "STOPPED");
}
