/*  protocol — every message that zllm's actors exchange, and its msgpack encoding.

    This is the single source of truth for what crosses a ZeroMQ socket. No actor builds
    another actor's messages by hand: it fills a proto_msg_t and calls proto_send.

    Encoding (see docs/protocol.md): one ZeroMQ frame per message, holding a msgpack array
    of two elements, [kind, fields], where kind is a positive integer (proto_kind_t) and
    fields is a map from field name (string) to value. Fields a kind does not use are not
    written. A decoder ignores field names it does not know (so a newer peer can add
    fields) but refuses a known field of the wrong type, a missing required field, an
    unknown kind, a truncated or trailing-garbage frame, and strings or arrays beyond the
    limits below. Protocol compatibility is decided once, when a worker says HELLO with
    its PROTO_VERSION.

    Message flow of one request (docs/architecture.md has the picture):

        frontend  --GENERATE-->   tokenizer  --SUBMIT-->     scheduler --STEP-->        worker
        frontend  <--OUTPUT---    tokenizer  <--TOKENS---    scheduler <--STEP_RESULT-- worker
        frontend  <--ERROR----    tokenizer  <--ERROR----    scheduler
        frontend  --CANCEL--> tokenizer --CANCEL--> scheduler
        worker    --HELLO--> scheduler --WELCOME or REJECT--> worker
        worker   <--HEARTBEAT--> scheduler (both ways); worker --BYE--> scheduler
        scheduler --STATUS--> (PUB) frontend

    Who owns what: a proto_msg_t owns its strings and arrays, which proto_msg_reset frees
    with free(): text, tokens, stop_tokens, copies, frees, seqs, outs, the sampling
    arrays, and in each seqs[i] its tokens, blocks and sampling arrays, in each outs[i]
    its top arrays, must be malloc'd (the setters below copy; seqs and outs are filled
    by hand). A message that
    only borrows arrays for sending (as the scheduler's STEP does) must not be reset.
    proto_decode and proto_recv fill a zeroed message that the caller releases with
    proto_msg_reset; they do not free what it held, so a receive loop resets between
    messages. Zero-initialise one with PROTO_MSG_INIT or proto_msg_reset.
*/
#ifndef ZLLM_PROTOCOL_H
#define ZLLM_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <czmq.h>

//  Bumped on any incompatible change; a worker whose version differs is refused.
#define PROTO_VERSION 3

//  Decoder limits: a frame or field beyond them is refused, never allocated.
#define PROTO_MAX_FRAME_BYTES   (64u * 1024 * 1024)
#define PROTO_MAX_STRING_BYTES  (32u * 1024 * 1024)
#define PROTO_MAX_TOKENS        (1u << 20)      //  ids in one token array
#define PROTO_MAX_STEP_SEQS     4096            //  sequences in one STEP / STEP_RESULT
#define PROTO_MAX_STOPS         16              //  stop strings in one GENERATE
#define PROTO_MAX_LOGPROBS      20              //  top log-probabilities per token
#define PROTO_MAX_N             128             //  sequences of one request
//  Beam search asks the worker for the 2 x width most likely next tokens of each beam.
#define PROTO_MAX_BEAM_CANDIDATES (2 * PROTO_MAX_N)
//  Request ids are below 2^63: the scheduler gives the other sequences of a request
//  (n > 1) worker-side ids with the top bit set, so the two never meet.
#define PROTO_MAX_REQUEST_ID    0x7fffffffffffffffULL
#define PROTO_MAX_BIAS          1024            //  logit_bias entries

typedef enum {
    PROTO_GENERATE = 1,     //  frontend -> tokenizer: a new request (text prompt)
    PROTO_CANCEL = 2,       //  frontend -> tokenizer -> scheduler: forget this request
    PROTO_OUTPUT = 3,       //  tokenizer -> frontend: new text, and at the end finish + usage
    PROTO_ERROR = 4,        //  any actor -> the one upstream: the request failed
    PROTO_SUBMIT = 5,       //  tokenizer -> scheduler: a request as token ids
    PROTO_TOKENS = 6,       //  scheduler -> tokenizer: new tokens of a request
    PROTO_HELLO = 7,        //  worker -> scheduler: who I am, what I serve
    PROTO_WELCOME = 8,      //  scheduler -> worker: accepted
    PROTO_REJECT = 9,       //  scheduler -> worker: refused, with the reason
    PROTO_STEP = 10,        //  scheduler -> worker: compute one step
    PROTO_STEP_RESULT = 11, //  worker -> scheduler: the tokens that step sampled
    PROTO_HEARTBEAT = 12,   //  worker <-> scheduler: I am alive
    PROTO_BYE = 13,         //  worker -> scheduler: I am leaving
    PROTO_STATUS = 14,      //  scheduler -> frontend (PUB/SUB): load and health
    PROTO_TOKENIZE = 15,    //  frontend -> tokenizer: text to ids (answered with TOKENS)
    PROTO_DETOKENIZE = 16,  //  frontend -> tokenizer: ids to text (answered with OUTPUT)
    PROTO_KIND_COUNT = 17
} proto_kind_t;

//  Why a request ended (PROTO_TOKENS and PROTO_OUTPUT).
typedef enum {
    PROTO_FINISH_NONE = 0,  //  not finished: more is coming
    PROTO_FINISH_STOP = 1,  //  an end-of-sequence or stop token
    PROTO_FINISH_LENGTH = 2,//  max_tokens or the context length was reached
    PROTO_FINISH_TOOL_CALLS = 3 //  the model called tools (OUTPUT only)
} proto_finish_t;

//  When beam search stops (GENERATE and SUBMIT early_stopping), as Hugging Face
//  transformers and vLLM define it: FALSE stops when no running beam can still beat the
//  worst of the width finished ones at its current length (a heuristic), TRUE as soon
//  as width beams have finished, NEVER only when no running beam can beat them at any
//  length it may still reach.
typedef enum {
    PROTO_EARLY_STOPPING_FALSE = 0,
    PROTO_EARLY_STOPPING_TRUE = 1,
    PROTO_EARLY_STOPPING_NEVER = 2
} proto_early_stopping_t;

//  How to sample one sequence (npu/sampler.h says what each does). Zero is greedy and
//  everything off (top_p and repetition_penalty 0 are taken as 1). Carried by GENERATE
//  and SUBMIT for the request, and by a STEP for a sequence's first step on a worker.
typedef struct {
    float temperature;
    uint32_t top_k;
    float top_p;
    float min_p;
    float presence_penalty;
    float frequency_penalty;
    float repetition_penalty;
    uint64_t seed;
    uint32_t min_tokens;            //  stop tokens are masked until this many are generated
    uint32_t n_logprobs;            //  top log-probabilities wanted per token (0 .. 20)
    uint32_t beam_candidates;       //  beam search (0: off): each sampled token comes with
                                    //  this many (<= PROTO_MAX_BEAM_CANDIDATES) most
                                    //  likely tokens of the processed distribution
                                    //  (log softmax after logit_bias, the min_tokens mask
                                    //  and the penalties) instead of n_logprobs of the
                                    //  model's own
    uint32_t *bias_tokens;          //  logit_bias: n_bias token ids, heap ...
    float *bias_values;             //  ... and their biases, heap
    uint32_t n_bias;
} proto_sampling_t;

//  One sequence in a STEP: run the n_tokens new tokens at positions pos ..
//  pos+n_tokens-1 of sequence seq_id, whose positions live in the KV blocks listed in
//  blocks (position p in blocks[p / block_size]); then, when sample is set, sample one
//  token from the last position. Positions before n_prompt are the prompt, the others
//  are generated tokens (the penalties count them). `first` starts the sequence on the
//  worker (pos is 0, or where a cached prefix or a forked parent ends): the worker makes
//  its sampling state from `sampling` then, and from `history`, the sequence's tokens at
//  positions 0 .. pos-1 (pos of them, so that the penalties, min_tokens and the seeds
//  count what came before); later steps of the sequence leave both empty.
typedef struct {
    uint64_t seq_id;
    uint32_t pos;
    uint32_t *tokens;
    uint32_t n_tokens;
    uint32_t *blocks;
    uint32_t n_blocks;
    uint32_t n_prompt;
    bool first;
    bool sample;
    proto_sampling_t sampling;
    uint32_t *masked_tokens;        //  with first: ids masked until sampling.min_tokens
    uint32_t n_masked;
    uint32_t *history;              //  with first: the tokens before pos
    uint32_t n_history;
} proto_step_seq_t;

//  One sampled token in a STEP_RESULT: for sequence seq_id, the token, its
//  log-probability under the model's distribution (before any sampling processing), and
//  the n_top most likely tokens with theirs, most likely first (n_logprobs of the
//  model's distribution, or, for beam search, beam_candidates of the processed one).
typedef struct {
    uint64_t seq_id;
    uint32_t token;
    float logprob;
    uint32_t *top_tokens;
    float *top_logprobs;
    uint32_t n_top;
} proto_step_out_t;

//  A message. Which fields a kind uses (others stay zero / NULL and are not encoded):
//
//  GENERATE     request_id, text (the prompt) or chat (a chat request as JSON: the
//               object {"messages", "tools", "tool_choice", ...} of OpenAI's request,
//               validated by the frontend), max_tokens, sampling, ignore_eos,
//               logprobs (want_logprobs), n (the
//               sequences wanted, 0 or 1: one; sequence i samples with seed + i),
//               best_of (sequences generated when more than n: only the n with the
//               highest cumulative log-probability come back, at the end),
//               stops/n_stops (stop strings), stop_tokens/n_stop_tokens (ids that end
//               the request besides the model's own end-of-generation tokens),
//               tokens/n_tokens (the prompt as ids, instead of text: used as they
//               are, no special tokens added), use_beam_search with length_penalty and
//               early_stopping (best_of beams, or n, the n best come back at the end),
//               include_stop_str_in_output (a stop string that ends a sequence stays
//               in its text), keep_special_tokens (special tokens such as </s> are
//               written into the text; otherwise left out)
//  CANCEL       request_id; with only_index, just sequence `index` of it (a stop string
//               ended that one of n)
//  OUTPUT       request_id, index (of the sequence, 0 .. n-1), text (new text, may be
//               empty), tool_calls (NULL, or new tool-call deltas as a JSON array in
//               OpenAI's streaming shape), logprobs (NULL, or a JSON array of
//               {token, logprob, bytes, top_logprobs} for the new tokens), finish (of
//               that sequence), prompt_tokens, completion_tokens (that sequence's total
//               so far), queue_us (on the request's first OUTPUT: the TOKENS' queue_us)
//  ERROR        request_id, status (an HTTP status: 400, 503, ...), text (message)
//  SUBMIT       request_id, tokens/n_tokens (prompt ids), max_tokens, sampling, n, best_of,
//               stop_tokens/n_stop_tokens (ids that end the request, e.g. EOS; also
//               masked until sampling.min_tokens), use_beam_search, length_penalty,
//               early_stopping
//  TOKENS       request_id, index (of the sequence), tokens/n_tokens (new ids, in
//               order), finish (of that sequence), prompt_tokens, logprob and
//               top/n_top (of a single new token, for a request that wants them),
//               queue_us (on the request's first TOKENS: microseconds it waited in the
//               scheduler's queue before its first step; 0 on the others)
//  HELLO        version, text (device name, "cpu:0"), fingerprint (model), n_ctx,
//               n_blocks, block_size (its KV pool), n_vocab
//  WELCOME      (no fields)
//  REJECT       text (reason)
//  STEP         step_id, copies/n_copies (block pairs src, dst, src, dst ... to copy
//               before computing), frees/n_frees (sequence ids to forget), seqs/n_seqs
//  STEP_RESULT  step_id, outs/n_outs, text (empty, or the error that failed the step)
//  HEARTBEAT    (no fields)
//  BYE          (no fields)
//  TOKENIZE     request_id, text, add_special_tokens (BOS as the model asks); the
//               answer is TOKENS (request_id, tokens, finish STOP) or ERROR
//  DETOKENIZE   request_id, tokens; the answer is OUTPUT (request_id, text, finish
//               STOP) or ERROR
//  STATUS       workers, running, waiting, kv_blocks_used, kv_blocks_total,
//               prefix_queries, prefix_hits (blocks), preemptions (totals since start)
typedef struct {
    proto_kind_t kind;
    uint64_t request_id;
    char *text;                 //  NUL-terminated, heap; may hold any bytes but NUL
    char *chat;                 //  JSON text, heap, or NULL
    char **stops;               //  n_stops heap strings, in a heap array
    uint32_t n_stops;
    char *tool_calls;           //  JSON text, heap, or NULL
    uint32_t max_tokens;
    proto_sampling_t sampling;
    bool ignore_eos;
    uint32_t n;                     //  sequences of a request (GENERATE, SUBMIT)
    uint32_t best_of;               //  sequences generated, when more than n
    uint32_t index;                 //  which of them (TOKENS, OUTPUT, CANCEL)
    bool only_index;                //  CANCEL: that sequence only, not the request
    bool add_special_tokens;        //  TOKENIZE
    bool want_logprobs;             //  GENERATE: log-probabilities of the tokens chosen
                                    //  (and sampling.n_logprobs alternatives)
    bool use_beam_search;           //  GENERATE, SUBMIT
    float length_penalty;           //  beam search: scores are cumulative log-probability
                                    //  / length ^ length_penalty (1 by the API's default)
    proto_early_stopping_t early_stopping;  //  beam search
    bool include_stop_str_in_output;//  GENERATE
    bool keep_special_tokens;       //  GENERATE: vLLM's skip_special_tokens false
    uint64_t queue_us;              //  TOKENS, OUTPUT
    float logprob;                  //  TOKENS: of its (one) token, when asked
    uint32_t *top_tokens;           //  TOKENS: the most likely alternatives, heap ...
    float *top_logprobs;            //  ... and theirs
    uint32_t n_top;
    char *logprobs;                 //  OUTPUT: JSON array of the new tokens' log-
                                    //  probabilities in OpenAI's chat shape, or NULL
    proto_finish_t finish;
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
    uint32_t status;
    uint32_t *tokens;
    uint32_t n_tokens;
    uint32_t *stop_tokens;
    uint32_t n_stop_tokens;
    uint32_t version;
    uint64_t fingerprint;
    uint32_t n_ctx;
    uint32_t n_blocks;
    uint32_t block_size;
    uint32_t n_vocab;
    uint64_t step_id;
    uint32_t *copies;               //  2 * n_copies block ids
    uint32_t n_copies;
    uint64_t *frees;
    uint32_t n_frees;
    proto_step_seq_t *seqs;
    uint32_t n_seqs;
    proto_step_out_t *outs;
    uint32_t n_outs;
    uint32_t workers;
    uint32_t running;
    uint32_t waiting;
    uint32_t kv_blocks_used;
    uint32_t kv_blocks_total;
    uint64_t prefix_queries;
    uint64_t prefix_hits;
    uint64_t preemptions;
} proto_msg_t;

#define PROTO_MSG_INIT { 0 }

//  Free what msg owns and zero it (kind becomes 0).
void
    proto_msg_reset (proto_msg_t *msg);

//  Name of a kind ("GENERATE"), or "UNKNOWN".
const char *
    proto_kind_name (proto_kind_t kind);

//  Name of a finish reason as OpenAI spells it: NULL, "stop", "length", "tool_calls".
const char *
    proto_finish_name (proto_finish_t finish);

//  Setters that copy: replace msg->text / tokens / stop_tokens / chat / tool_calls /
//  stops with a copy.
//  Return 0, or -1 when out of memory.
int
    proto_msg_set_text (proto_msg_t *msg, const char *text);
int
    proto_msg_set_tokens (proto_msg_t *msg, const uint32_t *tokens, uint32_t n_tokens);
int
    proto_msg_set_stop_tokens (proto_msg_t *msg, const uint32_t *tokens, uint32_t n_tokens);
int
    proto_msg_set_chat (proto_msg_t *msg, const char *chat);
int
    proto_msg_set_tool_calls (proto_msg_t *msg, const char *tool_calls);
int
    proto_msg_set_stops (proto_msg_t *msg, const char *const *stops, uint32_t n_stops);

//  Copy src into dst (its logit_bias arrays too), freeing what dst held. Returns 0, or
//  -1 when out of memory (dst unchanged).
int
    proto_sampling_copy (proto_sampling_t *dst, const proto_sampling_t *src);

//  Free what sampling owns and zero it.
void
    proto_sampling_reset (proto_sampling_t *sampling);

//  A ROUTER bound to endpoint, set up as every actor's inbox is: unlimited queues (a
//  message is never dropped for a full queue: NOTES-deps.md), sends that never block,
//  a send to a peer that is gone fails (router_mandatory) instead of vanishing, frames
//  over PROTO_MAX_FRAME_BYTES refused. Returns NULL with a message in err.
zsock_t *
    proto_router_new (const char *endpoint, char *err, size_t err_size);

//  A zhashx table whose keys are uint64_t ids that live inside the items (the table
//  keeps a pointer to the item's own id, never a copy): zhashx_insert (table, &item->id,
//  item). destructor (may be NULL) frees an item when it leaves the table.
zhashx_t *
    proto_id_table_new (zhashx_destructor_fn destructor);

//  Encode msg into a new zframe. Returns NULL for a message that a decoder would refuse:
//  an invalid kind, text or arrays over the limits, a NULL array with a non-zero count,
//  a finish reason out of range, a frame over PROTO_MAX_FRAME_BYTES.
zframe_t *
    proto_encode (const proto_msg_t *msg);

//  Decode one frame's bytes into msg (which must be reset / zeroed). On error returns -1,
//  leaves msg reset and writes a message into err (e.g. "STEP: field 'seqs': array of
//  9000 elements is over the limit of 4096"). Never reads outside data[0..size-1].
int
    proto_decode (const void *data, size_t size, proto_msg_t *msg, char *err, size_t err_size);

//  Send msg as one frame on a DEALER, PUB or PAIR socket. Blocks as the socket's own
//  send timeout says (actors that must not block set ZMQ_SNDTIMEO 0). Returns 0, or -1
//  (errno set by ZeroMQ, e.g. EAGAIN / EHOSTUNREACH, or EINVAL when proto_encode refused
//  msg). Does not take ownership of msg.
int
    proto_send (const proto_msg_t *msg, zsock_t *socket);

//  Send msg on a ROUTER socket to the peer with this routing id (2 frames).
int
    proto_send_to (const proto_msg_t *msg, zsock_t *router, zframe_t *routing_id);

//  Receive one message. On a ROUTER (routing_id != NULL) the first frame is the sender's
//  routing id, returned in *routing_id (caller destroys it, also on error). Returns 0 on
//  success; -1 if nothing could be read (interrupted) or the message was malformed: in
//  that case err says why, msg is reset, and every frame of the bad message has been read
//  so the socket is ready for the next one.
int
    proto_recv (zsock_t *socket, proto_msg_t *msg, zframe_t **routing_id,
                char *err, size_t err_size);

#endif
