/*  worker — one device: load the model, join a scheduler, compute steps. See worker.h.

    Two threads: worker_actor (this file's public function) talks to the scheduler, and
    s_engine_actor computes. A STEP goes: scheduler -> worker_actor -> engine pipe ->
    s_engine_step (forward pass and sampling per sequence) -> STEP_RESULT -> worker_actor
    -> scheduler.
*/
#include "worker.h"
#include "gguf.h"
#include "model.h"
#include "protocol.h"
#include "sampler.h"
#include "zlog.h"

#include <inttypes.h>
#include <string.h>

#define ACTOR "worker"
#define HELLO_RETRY_MS 200


//  --- The engine thread ------------------------------------------------------------------

typedef struct {
    model_t *model;                 //  borrowed from the worker
    sampler_rng_t *rngs;            //  one per slot
} engine_t;

//  Compute one step into result (kind STEP_RESULT). A sequence that cannot run fails the
//  whole step, with the reason in result->text.
static void
s_engine_step (engine_t *self, const proto_msg_t *step, proto_msg_t *result)
{
    const model_config_t *config = model_config (self->model);
    result->kind = PROTO_STEP_RESULT;
    result->step_id = step->step_id;
    result->outs = (proto_step_out_t *) calloc (step->n_seqs ? step->n_seqs : 1,
                                                sizeof (proto_step_out_t));
    if (!result->outs) {
        proto_msg_set_text (result, "out of memory");
        return;
    }
    for (uint32_t i = 0; i < step->n_seqs; i++) {
        const proto_step_seq_t *seq = &step->seqs [i];
        char err [256];
        const float *logits = NULL;
        if (seq->slot >= model_n_slots (self->model))
            snprintf (err, sizeof err, "slot %u does not exist", seq->slot);
        else
            logits = model_forward (self->model, seq->slot, seq->pos, seq->tokens,
                                    seq->n_tokens, err, sizeof err);
        if (!logits) {
            proto_msg_set_text (result, err);
            result->n_outs = 0;
            return;
        }
        sampler_rng_t *rng = &self->rngs [seq->slot];
        if (seq->pos == 0)
            sampler_rng_seed (rng, seq->seed);
        proto_step_out_t *out = &result->outs [result->n_outs++];
        out->slot = seq->slot;
        out->token = sampler_sample (logits, config->n_vocab, seq->temperature, rng,
                                     &out->logprob);
    }
}

static void
s_engine_actor (zsock_t *pipe, void *args)
{
    engine_t self = { 0 };
    self.model = (model_t *) args;
    self.rngs = (sampler_rng_t *) calloc (model_n_slots (self.model), sizeof (sampler_rng_t));
    zsock_signal (pipe, 0);
    while (self.rngs) {
        zmsg_t *message = zmsg_recv (pipe);
        if (!message)
            break;
        zframe_t *frame = zmsg_first (message);
        if (zframe_streq (frame, "$TERM")) {
            zmsg_destroy (&message);
            break;
        }
        proto_msg_t step = PROTO_MSG_INIT;
        proto_msg_t result = PROTO_MSG_INIT;
        char err [256];
        if (proto_decode (zframe_data (frame), zframe_size (frame), &step, err, sizeof err)
            == 0 && step.kind == PROTO_STEP) {
            s_engine_step (&self, &step, &result);
            proto_send (&result, pipe);
        }
        else
            zlog (ZLOG_ERROR, ACTOR, 0, "engine: not a step: %s", err);
        proto_msg_reset (&step);
        proto_msg_reset (&result);
        zmsg_destroy (&message);
    }
    free (self.rngs);
}


//  --- The worker actor -------------------------------------------------------------------

typedef struct {
    worker_args_t *args;
    zsock_t *pipe;
    zsock_t *scheduler;             //  DEALER
    zactor_t *engine;
    zpoller_t *poller;
    gguf_t *gguf;
    model_t *model;
    uint32_t heartbeat_ms;
    uint32_t timeout_ms;
    bool welcomed;
    int64_t last_heard;
    int64_t next_send;              //  when the next HELLO or HEARTBEAT is due
    bool terminated;
} worker_t;

static void
s_send (worker_t *self, proto_kind_t kind)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = kind;
    if (kind == PROTO_HELLO) {
        msg.version = PROTO_VERSION;
        msg.text = (char *) self->args->device;
        msg.fingerprint = gguf_fingerprint (self->gguf);
        msg.n_ctx = model_n_ctx (self->model);
        msg.n_slots = model_n_slots (self->model);
        msg.n_vocab = model_config (self->model)->n_vocab;
    }
    //  Not connected (ZMQ_IMMEDIATE) is normal before the scheduler is up: HELLO is
    //  repeated until WELCOME.
    proto_send (&msg, self->scheduler);
}

static void
s_read_scheduler (worker_t *self)
{
    proto_msg_t msg = PROTO_MSG_INIT;
    char err [256];
    if (proto_recv (self->scheduler, &msg, NULL, err, sizeof err) != 0) {
        zlog (ZLOG_WARN, ACTOR, 0, "%s: bad message from the scheduler: %s",
              self->args->device, err);
        return;
    }
    self->last_heard = zclock_mono ();
    if (msg.kind == PROTO_WELCOME) {
        if (!self->welcomed)
            zlog (ZLOG_INFO, ACTOR, 0, "%s joined the scheduler at %s", self->args->device,
                  self->args->scheduler_endpoint);
        self->welcomed = true;
        self->next_send = self->last_heard + self->heartbeat_ms;
    }
    else
    if (msg.kind == PROTO_REJECT) {
        snprintf (self->args->error, sizeof self->args->error,
                  "the scheduler refused this worker: %s", msg.text ? msg.text : "");
        zlog (ZLOG_ERROR, ACTOR, 0, "%s: %s", self->args->device, self->args->error);
        self->terminated = true;
    }
    else
    if (msg.kind == PROTO_STEP) {
        if (self->welcomed)
            proto_send (&msg, zactor_sock (self->engine));
    }
    else
    if (msg.kind != PROTO_HEARTBEAT)
        zlog (ZLOG_WARN, ACTOR, 0, "%s: unexpected %s from the scheduler",
              self->args->device, proto_kind_name (msg.kind));
    proto_msg_reset (&msg);
}

static void
s_read_engine (worker_t *self)
{
    zmsg_t *message = zmsg_recv (self->engine);
    if (!message)
        return;
    //  The engine's results are already encoded: pass the frame on as it is.
    zframe_t *frame = zmsg_pop (message);
    if (frame && zframe_size (frame) > 0 && self->welcomed
    &&  zframe_send (&frame, self->scheduler, 0) != 0)
        zlog (ZLOG_WARN, ACTOR, 0, "%s: could not send a step result", self->args->device);
    zframe_destroy (&frame);
    zmsg_destroy (&message);
}

static void
s_on_clock (worker_t *self)
{
    int64_t now = zclock_mono ();
    if (self->welcomed && now - self->last_heard > (int64_t) self->timeout_ms) {
        zlog (ZLOG_WARN, ACTOR, 0, "%s: the scheduler is silent; saying HELLO again",
              self->args->device);
        self->welcomed = false;
    }
    if (now >= self->next_send) {
        s_send (self, self->welcomed ? PROTO_HEARTBEAT : PROTO_HELLO);
        self->next_send = now + (self->welcomed ? self->heartbeat_ms : HELLO_RETRY_MS);
    }
}

static int
s_start (worker_t *self)
{
    worker_args_t *args = self->args;
    char err [256];
    self->gguf = gguf_open (args->model_path, err, sizeof err);
    if (self->gguf)
        self->model = model_new (self->gguf, args->n_slots ? args->n_slots : 4, args->n_ctx,
                                 err, sizeof err);
    if (self->model && args->n_threads
    &&  model_set_threads (self->model, args->n_threads, err, sizeof err) != 0)
        model_destroy (&self->model);
    if (!self->model) {
        snprintf (args->error, sizeof args->error, "%s", err);
        return -1;
    }
    self->heartbeat_ms = args->heartbeat_ms ? args->heartbeat_ms : 1000;
    self->timeout_ms = args->timeout_ms ? args->timeout_ms : 5000;
    self->scheduler = zsock_new (ZMQ_DEALER);
    if (!self->scheduler)
        return -1;
    zsock_set_immediate (self->scheduler, 1);
    zsock_set_sndtimeo (self->scheduler, 0);
    zsock_set_maxmsgsize (self->scheduler, PROTO_MAX_FRAME_BYTES);
    zsock_set_linger (self->scheduler, 500);
    if (zsock_connect (self->scheduler, "%s", args->scheduler_endpoint) == -1) {
        snprintf (args->error, sizeof args->error, "could not connect to %s: %s",
                  args->scheduler_endpoint, zmq_strerror (zmq_errno ()));
        return -1;
    }
    self->engine = zactor_new (s_engine_actor, self->model);
    self->poller = zpoller_new (self->pipe, self->scheduler, self->engine, NULL);
    if (!self->engine || !self->poller)
        return -1;
    const model_config_t *config = model_config (self->model);
    zlog (ZLOG_INFO, ACTOR, 0, "%s: %s loaded: %u layers, width %u, vocab %u; %u slots of "
          "%u tokens", args->device, args->model_path, config->n_layers, config->dim,
          config->n_vocab, model_n_slots (self->model), model_n_ctx (self->model));
    return 0;
}

static void
s_stop (worker_t *self)
{
    zpoller_destroy (&self->poller);
    zactor_destroy (&self->engine);     //  waits for a step being computed
    zsock_destroy (&self->scheduler);
    model_destroy (&self->model);
    gguf_destroy (&self->gguf);
}

void
worker_actor (zsock_t *pipe, void *args)
{
    worker_t self = { 0 };
    self.args = (worker_args_t *) args;
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
    s_on_clock (&self);                 //  the first HELLO at once
    bool asked_to_stop = false;
    while (!self.terminated) {
        void *which = zpoller_wait (self.poller, HELLO_RETRY_MS / 2);
        if (which == self.pipe) {
            char *command = zstr_recv (self.pipe);
            if (!command || streq (command, "$TERM"))
                asked_to_stop = self.terminated = true;
            zstr_free (&command);
        }
        else
        if (which == self.scheduler)
            s_read_scheduler (&self);
        else
        if (which == self.engine)
            s_read_engine (&self);
        s_on_clock (&self);
    }
    if (self.welcomed)
        s_send (&self, PROTO_BYE);
    s_stop (&self);
    if (!asked_to_stop)
        zstr_send (pipe, "STOPPED");
}
