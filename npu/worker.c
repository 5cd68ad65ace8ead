/*  worker — one device: load the model, join a scheduler, compute steps. See worker.h.

    Two threads: worker_actor (this file's public function) talks to the scheduler, and
    s_engine_actor computes. A STEP goes: scheduler -> worker_actor -> engine pipe ->
    s_engine_step (block copies, one batched forward pass of every sequence, sampling)
    -> STEP_RESULT -> worker_actor -> scheduler.
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
#define WORKER_DEFAULT_BLOCK_SIZE 16
#define WORKER_DEFAULT_SEQS 4
#define WORKER_DEFAULT_KV_BYTES (1ull << 30)


//  --- The engine thread ------------------------------------------------------------------
//
//  The engine keeps, per sequence the scheduler runs on this worker, its sampling state
//  (parameters, and the tokens generated so far for the penalties, min_tokens and the
//  seeds). The KV blocks are the scheduler's to assign: a step names them.

typedef struct {
    uint64_t seq_id;                //  the key in engine_t.seqs
    sampler_seq_t *sampler;
    uint32_t n_logprobs;            //  top log-probabilities wanted per token
    uint32_t beam_candidates;       //  beam search: candidates wanted per token (0: off)
} engine_seq_t;

typedef struct {
    model_t *model;                 //  borrowed from the worker
    sampler_t *sampler;             //  scratch for sampling
    zhashx_t *seqs;                 //  engine_seq_t by seq_id
    model_seq_t *batch;             //  [capacity]: the step's sequences for the model
    uint32_t capacity;
} engine_t;

static void
s_engine_seq_destroy (void **item)
{
    engine_seq_t *seq = (engine_seq_t *) *item;
    if (seq) {
        sampler_seq_destroy (&seq->sampler);
        free (seq);
        *item = NULL;
    }
}

//  Start sequence step_seq on this engine (replacing one with the same id). Returns 0,
//  or -1 with err filled.
static int
s_engine_start_seq (engine_t *self, const proto_step_seq_t *step_seq, char *err,
                    size_t err_size)
{
    const proto_sampling_t *sampling = &step_seq->sampling;
    sampler_params_t params = {
        .temperature = sampling->temperature,
        .top_k = sampling->top_k,
        .top_p = sampling->top_p,
        .min_p = sampling->min_p,
        .presence_penalty = sampling->presence_penalty,
        .frequency_penalty = sampling->frequency_penalty,
        .repetition_penalty = sampling->repetition_penalty,
        .seed = sampling->seed,
        .min_tokens = sampling->min_tokens,
        .masked_tokens = step_seq->masked_tokens,
        .n_masked = step_seq->n_masked,
        .bias_tokens = sampling->bias_tokens,
        .bias_values = sampling->bias_values,
        .n_bias = sampling->n_bias
    };
    engine_seq_t *seq = (engine_seq_t *) calloc (1, sizeof (engine_seq_t));
    if (!seq) {
        snprintf (err, err_size, "out of memory");
        return -1;
    }
    seq->seq_id = step_seq->seq_id;
    seq->n_logprobs = sampling->n_logprobs;
    seq->beam_candidates = sampling->beam_candidates;
    char reason [200];
    seq->sampler = sampler_seq_new (&params, model_config (self->model)->n_vocab, reason,
                                    sizeof reason);
    if (!seq->sampler) {
        snprintf (err, err_size, "sequence %" PRIu64 ": %s", step_seq->seq_id, reason);
        free (seq);
        return -1;
    }
    zhashx_delete (self->seqs, &step_seq->seq_id);
    if (zhashx_insert (self->seqs, &seq->seq_id, seq) != 0) {
        void *item = seq;
        s_engine_seq_destroy (&item);
        snprintf (err, err_size, "out of memory");
        return -1;
    }
    return 0;
}

//  Tell the sequence's sampler about n tokens at positions pos .. pos+n-1: those before
//  n_prompt are the prompt, the others were generated (and sampled in earlier steps).
static int
s_engine_feed_tokens (engine_seq_t *seq, const uint32_t *tokens, uint32_t n, uint32_t pos,
                      uint32_t n_prompt)
{
    uint32_t n_prompt_tokens = 0;
    if (pos < n_prompt) {
        n_prompt_tokens = n_prompt - pos;
        if (n_prompt_tokens > n)
            n_prompt_tokens = n;
    }
    if (sampler_seq_add_prompt (seq->sampler, tokens, n_prompt_tokens) != 0
    ||  sampler_seq_add_outputs (seq->sampler, tokens + n_prompt_tokens,
                                 n - n_prompt_tokens) != 0)
        return -1;
    return 0;
}

//  The step's new tokens; on a sequence's first step, first the history before them.
static int
s_engine_feed (engine_seq_t *seq, const proto_step_seq_t *step_seq)
{
    if (step_seq->first
    &&  s_engine_feed_tokens (seq, step_seq->history, step_seq->n_history, 0,
                              step_seq->n_prompt) != 0)
        return -1;
    return s_engine_feed_tokens (seq, step_seq->tokens, step_seq->n_tokens, step_seq->pos,
                                 step_seq->n_prompt);
}

//  Make the step's bookkeeping happen (copies, frees, new sequences), then run every
//  sequence through the model as one batch, then sample. A step that cannot run fails
//  as a whole, with the reason in result->text.
static void
s_engine_step (engine_t *self, const proto_msg_t *step, proto_msg_t *result)
{
    char err [256] = "";
    result->kind = PROTO_STEP_RESULT;
    result->step_id = step->step_id;

    //  Forget what the scheduler freed, then copy blocks (copy-on-write forks).
    for (uint32_t i = 0; i < step->n_frees; i++)
        zhashx_delete (self->seqs, &step->frees [i]);
    if (step->n_copies > 0) {
        uint32_t *sources = (uint32_t *) malloc (step->n_copies * sizeof (uint32_t));
        uint32_t *targets = (uint32_t *) malloc (step->n_copies * sizeof (uint32_t));
        int rc = -1;
        if (sources && targets) {
            for (uint32_t i = 0; i < step->n_copies; i++) {
                sources [i] = step->copies [2 * i];
                targets [i] = step->copies [2 * i + 1];
            }
            rc = model_copy_blocks (self->model, sources, targets, step->n_copies, err,
                                    sizeof err);
        }
        else
            snprintf (err, sizeof err, "out of memory");
        free (sources);
        free (targets);
        if (rc != 0) {
            proto_msg_set_text (result, err);
            return;
        }
    }
    if (step->n_seqs == 0)
        return;

    //  The sequences: start new ones, feed their tokens to their samplers.
    if (step->n_seqs > self->capacity) {
        model_seq_t *batch = (model_seq_t *) realloc (self->batch,
                                                      step->n_seqs * sizeof (model_seq_t));
        if (!batch) {
            proto_msg_set_text (result, "out of memory");
            return;
        }
        self->batch = batch;
        self->capacity = step->n_seqs;
    }
    uint32_t n_samples = 0;
    for (uint32_t i = 0; i < step->n_seqs; i++) {
        const proto_step_seq_t *step_seq = &step->seqs [i];
        if (step_seq->first && step_seq->n_history != step_seq->pos) {
            snprintf (err, sizeof err, "sequence %" PRIu64 " starts at position %u with "
                      "%u tokens of history (they must be equal)", step_seq->seq_id,
                      step_seq->pos, step_seq->n_history);
            proto_msg_set_text (result, err);
            return;
        }
        if (step_seq->first && s_engine_start_seq (self, step_seq, err, sizeof err) != 0) {
            proto_msg_set_text (result, err);
            return;
        }
        engine_seq_t *seq = (engine_seq_t *) zhashx_lookup (self->seqs, &step_seq->seq_id);
        if (!seq) {
            snprintf (err, sizeof err, "sequence %" PRIu64 " was never started on this "
                      "worker", step_seq->seq_id);
            proto_msg_set_text (result, err);
            return;
        }
        if (s_engine_feed (seq, step_seq) != 0) {
            snprintf (err, sizeof err, "sequence %" PRIu64 ": a token id is out of range "
                      "(or out of memory)", step_seq->seq_id);
            proto_msg_set_text (result, err);
            return;
        }
        self->batch [i] = (model_seq_t) {
            .tokens = step_seq->tokens,
            .n_tokens = step_seq->n_tokens,
            .pos = step_seq->pos,
            .block_table = step_seq->blocks,
            .n_table = step_seq->n_blocks,
            .want_logits = step_seq->sample
        };
        if (step_seq->sample)
            n_samples++;
    }
    const float *logits = model_forward_seqs (self->model, self->batch, step->n_seqs, err,
                                              sizeof err);
    if (!logits) {
        proto_msg_set_text (result, err);
        return;
    }
    if (n_samples == 0)
        return;

    //  Sample, in the order of the step's sequences.
    result->outs = (proto_step_out_t *) calloc (n_samples, sizeof (proto_step_out_t));
    if (!result->outs) {
        proto_msg_set_text (result, "out of memory");
        return;
    }
    uint32_t n_vocab = model_config (self->model)->n_vocab;
    uint32_t row = 0;
    for (uint32_t i = 0; i < step->n_seqs; i++) {
        const proto_step_seq_t *step_seq = &step->seqs [i];
        if (!step_seq->sample)
            continue;
        const float *row_logits = logits + (size_t) row * n_vocab;
        engine_seq_t *seq = (engine_seq_t *) zhashx_lookup (self->seqs, &step_seq->seq_id);
        proto_step_out_t *out = &result->outs [row];
        out->seq_id = step_seq->seq_id;
        out->token = sampler_sample (self->sampler, seq->sampler, row_logits, &out->logprob);
        row++;
        result->n_outs = row;
        //  Beam search's candidates, or the top log-probabilities asked for.
        uint32_t n_top = seq->beam_candidates > 0? seq->beam_candidates: seq->n_logprobs;
        uint32_t most = seq->beam_candidates > 0? PROTO_MAX_BEAM_CANDIDATES
                                                : PROTO_MAX_LOGPROBS;
        if (n_top > most)
            n_top = most;
        if (n_top > n_vocab)
            n_top = n_vocab;
        if (n_top == 0)
            continue;
        sampler_logprob_t top [PROTO_MAX_BEAM_CANDIDATES];
        if (seq->beam_candidates > 0)
            n_top = sampler_beam_candidates (self->sampler, seq->sampler, row_logits, top,
                                             n_top);
        else
            sampler_top_logprobs (self->sampler, row_logits, top, n_top);
        if (n_top == 0)
            continue;
        out->top_tokens = (uint32_t *) malloc (n_top * sizeof (uint32_t));
        out->top_logprobs = (float *) malloc (n_top * sizeof (float));
        if (!out->top_tokens || !out->top_logprobs) {
            proto_msg_set_text (result, "out of memory");
            return;
        }
        for (uint32_t k = 0; k < n_top; k++) {
            out->top_tokens [k] = top [k].token;
            out->top_logprobs [k] = top [k].logprob;
        }
        out->n_top = n_top;
    }
}

static void
s_engine_actor (zsock_t *pipe, void *args)
{
    engine_t self = { 0 };
    self.model = (model_t *) args;
    self.sampler = sampler_new (model_config (self.model)->n_vocab);
    self.seqs = proto_id_table_new (s_engine_seq_destroy);
    zsock_signal (pipe, 0);
    while (self.sampler && self.seqs) {
        zmsg_t *message = zmsg_recv (pipe);
        if (!message)
            break;
        zframe_t *frame = zmsg_first (message);
        if (zframe_streq (frame, "$TERM")) {
            zmsg_destroy (&message);
            break;
        }
        //  The worker lost its scheduler: every sequence is forgotten.
        if (zframe_streq (frame, "FORGET")) {
            zhashx_purge (self.seqs);
            zmsg_destroy (&message);
            continue;
        }
        proto_msg_t step = PROTO_MSG_INIT;
        proto_msg_t result = PROTO_MSG_INIT;
        char err [256];
        if (proto_decode (zframe_data (frame), zframe_size (frame), &step, err, sizeof err)
            == 0 && step.kind == PROTO_STEP) {
            s_engine_step (&self, &step, &result);
            if (result.text && result.text [0])
                zlog (ZLOG_WARN, ACTOR, 0, "step %" PRIu64 " failed: %s", step.step_id,
                      result.text);
            proto_send (&result, pipe);
        }
        else
            zlog (ZLOG_ERROR, ACTOR, 0, "engine: not a step: %s", err);
        proto_msg_reset (&step);
        proto_msg_reset (&result);
        zmsg_destroy (&message);
    }
    zhashx_destroy (&self.seqs);
    sampler_destroy (&self.sampler);
    free (self.batch);
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
        msg.n_blocks = model_cache_n_blocks (self->model);
        msg.block_size = model_cache_block_size (self->model);
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
        //  A scheduler that takes us back starts from nothing: so does the engine.
        zstr_send (self->engine, "FORGET");
    }
    if (now >= self->next_send) {
        s_send (self, self->welcomed ? PROTO_HEARTBEAT : PROTO_HELLO);
        self->next_send = now + (self->welcomed ? self->heartbeat_ms : HELLO_RETRY_MS);
    }
}

//  The KV pool: kv_cache_bytes, or room for WORKER_DEFAULT_SEQS sequences of the full
//  context up to WORKER_DEFAULT_KV_BYTES; never less than one full-context sequence.
static int
s_allocate_cache (model_t *model, const worker_args_t *args, char *err, size_t err_size)
{
    uint32_t block_size = args->block_size? args->block_size: WORKER_DEFAULT_BLOCK_SIZE;
    uint64_t block_bytes = model_cache_block_bytes (model, block_size);
    uint64_t blocks_per_seq = (model_n_ctx (model) + block_size - 1) / block_size;
    uint64_t n_blocks;
    if (args->kv_cache_bytes)
        n_blocks = args->kv_cache_bytes / block_bytes;
    else {
        n_blocks = WORKER_DEFAULT_SEQS * blocks_per_seq;
        if (n_blocks * block_bytes > WORKER_DEFAULT_KV_BYTES)
            n_blocks = WORKER_DEFAULT_KV_BYTES / block_bytes;
    }
    if (n_blocks < blocks_per_seq) {
        if (args->kv_cache_bytes) {
            snprintf (err, err_size, "a KV cache of %" PRIu64 " bytes holds %" PRIu64
                      " tokens, less than one sequence of %u (%" PRIu64 " bytes): give "
                      "more memory or a shorter --max-model-len", args->kv_cache_bytes,
                      n_blocks * block_size, model_n_ctx (model),
                      blocks_per_seq * block_bytes);
            return -1;
        }
        n_blocks = blocks_per_seq;
    }
    if (n_blocks > UINT32_MAX / 2)
        n_blocks = UINT32_MAX / 2;
    return model_cache_new (model, (uint32_t) n_blocks, block_size, err, err_size);
}

static int
s_start (worker_t *self)
{
    worker_args_t *args = self->args;
    char err [256];
    self->gguf = gguf_open (args->model_path, err, sizeof err);
    if (self->gguf)
        self->model = model_new (self->gguf, args->n_ctx, err, sizeof err);
    if (self->model && s_allocate_cache (self->model, args, err, sizeof err) != 0)
        model_destroy (&self->model);
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
    uint32_t n_blocks = model_cache_n_blocks (self->model);
    uint32_t block_size = model_cache_block_size (self->model);
    zlog (ZLOG_INFO, ACTOR, 0, "%s: %s loaded: %u layers, width %u, vocab %u; context %u; "
          "KV cache %u blocks = %" PRIu64 " tokens (%.1f MiB)", args->device,
          args->model_path, config->n_layers, config->dim, config->n_vocab,
          model_n_ctx (self->model), n_blocks, (uint64_t) n_blocks * block_size,
          (double) n_blocks * model_cache_block_bytes (self->model, block_size)
          / (1024.0 * 1024.0));
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
