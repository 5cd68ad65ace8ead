/*  protocol — encode, decode, send and receive zllm's messages (see protocol.h).

    Encoding: one frame holding the msgpack array [kind, fields]. kind is a positive
    integer; fields is a map from field name to value holding exactly the fields the kind
    uses (the table in protocol.h, in that order). Integers are msgpack unsigned integers
    in their smallest form, floats are float32, text is a msgpack string, token lists are
    arrays of unsigned integers, booleans are msgpack booleans. Nested maps (sampling;
    STEP's "seqs", an array of maps {seq_id, pos, tokens, blocks, n_prompt, first,
    sample, sampling, masked_tokens, history}; STEP_RESULT's "outs", an array of maps
    {seq_id, token, logprob, top}) are described member by member in tables below, which both directions use.
    Pairs (logit_bias, top) are arrays of [token, float]. Inside nested maps an empty
    array or an all-zero sampling is not written (a decoder takes it as empty): a decode
    step's sequences then cost a few dozen bytes each.

    Encoding uses msgpack-c's packer. Decoding does not use msgpack-c's unpacker: that one
    allocates 24 bytes of zone for every element an array header claims, before it has
    seen them and without any limit (a 10-byte frame claiming 4 billion elements asks
    malloc for 128 GiB), and it builds a tree of objects that costs 24 to 48 bytes for
    every byte of a large frame. Instead, a bounded reader walks the frame once and
    fills the message directly: every length and count is checked against the limits in
    protocol.h and against the bytes that remain before anything is allocated, so a
    decode allocates at most what the message itself holds (4 bytes per token).

    What the decoder accepts:
      - a frame of 1 .. PROTO_MAX_FRAME_BYTES bytes holding exactly one msgpack value,
        an array of 2: a kind (unsigned integer, a known kind) and a map of fields;
      - field names are strings; a name the kind does not use is skipped (nested up
        to 32 levels), a name the kind uses must appear at most once, with its type:
        unsigned integers of any msgpack width that fit the C field, floats as float32
        or float64 (in range), text as a string without NUL of at most
        PROTO_MAX_STRING_BYTES, token arrays of at most PROTO_MAX_TOKENS ids, seqs and
        outs of at most PROTO_MAX_STEP_SEQS entries, logit_bias of at most
        PROTO_MAX_BIAS pairs, top of at most PROTO_MAX_LOGPROBS pairs, copies of an even
        number of ids, finish 0 .. 3;
      - required fields (all others default to 0, NULL or empty):
          GENERATE, CANCEL, OUTPUT, TOKENS,  request_id
          TOKENIZE, DETOKENIZE
          ERROR                              request_id, status
          SUBMIT                             request_id, tokens
          HELLO                              version, fingerprint
          STEP                               step_id, seqs
          STEP_RESULT                        step_id
          each seq: seq_id, pos, tokens      each out: seq_id, token, logprob
      - a kind that uses text always decodes with a non-NULL text ("" when absent).

    proto_encode refuses (returns NULL) a message that a decoder would refuse: an invalid
    kind, text or arrays over the limits, a NULL array with a non-zero count, a finish
    reason out of range, or a frame over PROTO_MAX_FRAME_BYTES.
*/

#include "protocol.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

//  How deep a value of a field this decoder does not know may nest.
#define S_MAX_SKIP_DEPTH 32

//  Every top-level field that some kind uses.
typedef enum {
    FIELD_REQUEST_ID,
    FIELD_TEXT,
    FIELD_MAX_TOKENS,
    FIELD_FINISH,
    FIELD_PROMPT_TOKENS,
    FIELD_COMPLETION_TOKENS,
    FIELD_STATUS,
    FIELD_TOKENS,
    FIELD_STOP_TOKENS,
    FIELD_VERSION,
    FIELD_FINGERPRINT,
    FIELD_N_CTX,
    FIELD_N_BLOCKS,
    FIELD_BLOCK_SIZE,
    FIELD_N_VOCAB,
    FIELD_STEP_ID,
    FIELD_SEQS,
    FIELD_OUTS,
    FIELD_WORKERS,
    FIELD_RUNNING,
    FIELD_WAITING,
    FIELD_CHAT,
    FIELD_STOPS,
    FIELD_TOOL_CALLS,
    FIELD_SAMPLING,
    FIELD_IGNORE_EOS,
    FIELD_COPIES,
    FIELD_FREES,
    FIELD_KV_BLOCKS_USED,
    FIELD_KV_BLOCKS_TOTAL,
    FIELD_PREFIX_QUERIES,
    FIELD_PREFIX_HITS,
    FIELD_PREEMPTIONS,
    FIELD_N,
    FIELD_INDEX,
    FIELD_ONLY_INDEX,
    FIELD_BEST_OF,
    FIELD_ADD_SPECIAL_TOKENS,
    FIELD_WANT_LOGPROBS,
    FIELD_LOGPROB,
    FIELD_TOP,
    FIELD_LOGPROBS,
    FIELD_USE_BEAM_SEARCH,
    FIELD_LENGTH_PENALTY,
    FIELD_EARLY_STOPPING,
    FIELD_INCLUDE_STOP_STR_IN_OUTPUT,
    FIELD_KEEP_SPECIAL_TOKENS,
    FIELD_QUEUE_US,
    FIELD_COUNT
} s_field_t;

//  The name each field has on the wire.
static const char *s_field_names [FIELD_COUNT] = {
    [FIELD_REQUEST_ID] = "request_id",
    [FIELD_TEXT] = "text",
    [FIELD_MAX_TOKENS] = "max_tokens",
    [FIELD_FINISH] = "finish",
    [FIELD_PROMPT_TOKENS] = "prompt_tokens",
    [FIELD_COMPLETION_TOKENS] = "completion_tokens",
    [FIELD_STATUS] = "status",
    [FIELD_TOKENS] = "tokens",
    [FIELD_STOP_TOKENS] = "stop_tokens",
    [FIELD_VERSION] = "version",
    [FIELD_FINGERPRINT] = "fingerprint",
    [FIELD_N_CTX] = "n_ctx",
    [FIELD_N_BLOCKS] = "n_blocks",
    [FIELD_BLOCK_SIZE] = "block_size",
    [FIELD_N_VOCAB] = "n_vocab",
    [FIELD_STEP_ID] = "step_id",
    [FIELD_SEQS] = "seqs",
    [FIELD_OUTS] = "outs",
    [FIELD_WORKERS] = "workers",
    [FIELD_RUNNING] = "running",
    [FIELD_WAITING] = "waiting",
    [FIELD_CHAT] = "chat",
    [FIELD_STOPS] = "stops",
    [FIELD_TOOL_CALLS] = "tool_calls",
    [FIELD_SAMPLING] = "sampling",
    [FIELD_IGNORE_EOS] = "ignore_eos",
    [FIELD_COPIES] = "copies",
    [FIELD_FREES] = "frees",
    [FIELD_KV_BLOCKS_USED] = "kv_blocks_used",
    [FIELD_KV_BLOCKS_TOTAL] = "kv_blocks_total",
    [FIELD_PREFIX_QUERIES] = "prefix_queries",
    [FIELD_PREFIX_HITS] = "prefix_hits",
    [FIELD_PREEMPTIONS] = "preemptions",
    [FIELD_N] = "n",
    [FIELD_INDEX] = "index",
    [FIELD_ONLY_INDEX] = "only_index",
    [FIELD_BEST_OF] = "best_of",
    [FIELD_ADD_SPECIAL_TOKENS] = "add_special_tokens",
    [FIELD_WANT_LOGPROBS] = "want_logprobs",
    [FIELD_LOGPROB] = "logprob",
    [FIELD_TOP] = "top",
    [FIELD_LOGPROBS] = "logprobs",
    [FIELD_USE_BEAM_SEARCH] = "use_beam_search",
    [FIELD_LENGTH_PENALTY] = "length_penalty",
    [FIELD_EARLY_STOPPING] = "early_stopping",
    [FIELD_INCLUDE_STOP_STR_IN_OUTPUT] = "include_stop_str_in_output",
    [FIELD_KEEP_SPECIAL_TOKENS] = "keep_special_tokens",
    [FIELD_QUEUE_US] = "queue_us"
};

//  One field of a kind, and whether a decoder insists on it.
typedef struct {
    s_field_t field;
    bool required;
} s_kind_field_t;

#define S_MAX_KIND_FIELDS 20

//  What each kind is called and which fields it carries, in encoding order.
typedef struct {
    const char *name;
    size_t n_fields;
    s_kind_field_t fields [S_MAX_KIND_FIELDS];
} s_kind_t;

static const s_kind_t s_kinds [PROTO_KIND_COUNT] = {
    [PROTO_GENERATE] = { .name = "GENERATE", .n_fields = 17, .fields = {
        { FIELD_REQUEST_ID, true }, { FIELD_TEXT, false }, { FIELD_CHAT, false },
        { FIELD_TOKENS, false },
        { FIELD_MAX_TOKENS, false }, { FIELD_SAMPLING, false }, { FIELD_IGNORE_EOS, false },
        { FIELD_N, false }, { FIELD_BEST_OF, false }, { FIELD_STOPS, false },
        { FIELD_STOP_TOKENS, false }, { FIELD_WANT_LOGPROBS, false },
        { FIELD_USE_BEAM_SEARCH, false }, { FIELD_LENGTH_PENALTY, false },
        { FIELD_EARLY_STOPPING, false }, { FIELD_INCLUDE_STOP_STR_IN_OUTPUT, false },
        { FIELD_KEEP_SPECIAL_TOKENS, false } } },
    [PROTO_CANCEL] = { .name = "CANCEL", .n_fields = 3, .fields = {
        { FIELD_REQUEST_ID, true }, { FIELD_INDEX, false }, { FIELD_ONLY_INDEX, false } } },
    [PROTO_OUTPUT] = { .name = "OUTPUT", .n_fields = 9, .fields = {
        { FIELD_REQUEST_ID, true }, { FIELD_INDEX, false }, { FIELD_TEXT, false },
        { FIELD_TOOL_CALLS, false }, { FIELD_LOGPROBS, false },
        { FIELD_FINISH, false }, { FIELD_PROMPT_TOKENS, false },
        { FIELD_COMPLETION_TOKENS, false }, { FIELD_QUEUE_US, false } } },
    [PROTO_ERROR] = { .name = "ERROR", .n_fields = 3, .fields = {
        { FIELD_REQUEST_ID, true }, { FIELD_STATUS, true }, { FIELD_TEXT, false } } },
    [PROTO_SUBMIT] = { .name = "SUBMIT", .n_fields = 10, .fields = {
        { FIELD_REQUEST_ID, true }, { FIELD_TOKENS, true }, { FIELD_MAX_TOKENS, false },
        { FIELD_SAMPLING, false }, { FIELD_N, false }, { FIELD_BEST_OF, false },
        { FIELD_STOP_TOKENS, false }, { FIELD_USE_BEAM_SEARCH, false },
        { FIELD_LENGTH_PENALTY, false }, { FIELD_EARLY_STOPPING, false } } },
    [PROTO_TOKENS] = { .name = "TOKENS", .n_fields = 8, .fields = {
        { FIELD_REQUEST_ID, true }, { FIELD_INDEX, false }, { FIELD_TOKENS, false },
        { FIELD_FINISH, false }, { FIELD_LOGPROB, false }, { FIELD_TOP, false },
        { FIELD_PROMPT_TOKENS, false }, { FIELD_QUEUE_US, false } } },
    [PROTO_HELLO] = { .name = "HELLO", .n_fields = 7, .fields = {
        { FIELD_VERSION, true }, { FIELD_TEXT, false }, { FIELD_FINGERPRINT, true },
        { FIELD_N_CTX, false }, { FIELD_N_BLOCKS, false }, { FIELD_BLOCK_SIZE, false },
        { FIELD_N_VOCAB, false } } },
    [PROTO_WELCOME] = { .name = "WELCOME", .n_fields = 0 },
    [PROTO_REJECT] = { .name = "REJECT", .n_fields = 1, .fields = {
        { FIELD_TEXT, false } } },
    [PROTO_STEP] = { .name = "STEP", .n_fields = 4, .fields = {
        { FIELD_STEP_ID, true }, { FIELD_COPIES, false }, { FIELD_FREES, false },
        { FIELD_SEQS, true } } },
    [PROTO_STEP_RESULT] = { .name = "STEP_RESULT", .n_fields = 3, .fields = {
        { FIELD_STEP_ID, true }, { FIELD_OUTS, false }, { FIELD_TEXT, false } } },
    [PROTO_HEARTBEAT] = { .name = "HEARTBEAT", .n_fields = 0 },
    [PROTO_BYE] = { .name = "BYE", .n_fields = 0 },
    [PROTO_STATUS] = { .name = "STATUS", .n_fields = 8, .fields = {
        { FIELD_WORKERS, false }, { FIELD_RUNNING, false }, { FIELD_WAITING, false },
        { FIELD_KV_BLOCKS_USED, false }, { FIELD_KV_BLOCKS_TOTAL, false },
        { FIELD_PREFIX_QUERIES, false }, { FIELD_PREFIX_HITS, false },
        { FIELD_PREEMPTIONS, false } } },
    [PROTO_TOKENIZE] = { .name = "TOKENIZE", .n_fields = 3, .fields = {
        { FIELD_REQUEST_ID, true }, { FIELD_TEXT, false },
        { FIELD_ADD_SPECIAL_TOKENS, false } } },
    [PROTO_DETOKENIZE] = { .name = "DETOKENIZE", .n_fields = 2, .fields = {
        { FIELD_REQUEST_ID, true }, { FIELD_TOKENS, false } } }
};

//  The kind's description, or NULL when kind is not a valid kind.
static const s_kind_t *
s_kind_info (int64_t kind)
{
    if (kind <= 0 || kind >= PROTO_KIND_COUNT)
        return NULL;
    return &s_kinds [kind];
}


//  The maps nested in fields (sampling, each of STEP's seqs, each of STEP_RESULT's
//  outs) are described member by member: name, type, where the value sits in its C
//  struct (and its count, for arrays), whether a decoder insists on it. The encoder
//  writes every member in this order; the decoder accepts them in any order.
typedef enum {
    MEMBER_U32,
    MEMBER_U64,
    MEMBER_F32,
    MEMBER_BOOL,
    MEMBER_TOKENS,          //  uint32_t * with a uint32_t count
    MEMBER_PAIRS,           //  [[uint32, float], ...]: uint32_t * and float * sharing a count
    MEMBER_SAMPLING         //  a nested proto_sampling_t
} s_member_type_t;

typedef struct {
    const char *name;
    s_member_type_t type;
    size_t offset;          //  of the value, or of the (first) array pointer
    size_t values_offset;   //  MEMBER_PAIRS: of the float * array
    size_t count_offset;    //  arrays: of the uint32_t count
    uint32_t max_count;     //  arrays: the most elements a decoder accepts
    bool required;
} s_member_t;

static const s_member_t s_sampling_members [] = {
    { "temperature", MEMBER_F32, offsetof (proto_sampling_t, temperature), 0, 0, 0, false },
    { "top_k", MEMBER_U32, offsetof (proto_sampling_t, top_k), 0, 0, 0, false },
    { "top_p", MEMBER_F32, offsetof (proto_sampling_t, top_p), 0, 0, 0, false },
    { "min_p", MEMBER_F32, offsetof (proto_sampling_t, min_p), 0, 0, 0, false },
    { "presence_penalty", MEMBER_F32, offsetof (proto_sampling_t, presence_penalty),
      0, 0, 0, false },
    { "frequency_penalty", MEMBER_F32, offsetof (proto_sampling_t, frequency_penalty),
      0, 0, 0, false },
    { "repetition_penalty", MEMBER_F32, offsetof (proto_sampling_t, repetition_penalty),
      0, 0, 0, false },
    { "seed", MEMBER_U64, offsetof (proto_sampling_t, seed), 0, 0, 0, false },
    { "min_tokens", MEMBER_U32, offsetof (proto_sampling_t, min_tokens), 0, 0, 0, false },
    { "n_logprobs", MEMBER_U32, offsetof (proto_sampling_t, n_logprobs), 0, 0, 0, false },
    { "beam_candidates", MEMBER_U32, offsetof (proto_sampling_t, beam_candidates), 0, 0,
      0, false },
    { "logit_bias", MEMBER_PAIRS, offsetof (proto_sampling_t, bias_tokens),
      offsetof (proto_sampling_t, bias_values), offsetof (proto_sampling_t, n_bias),
      PROTO_MAX_BIAS, false }
};

static const s_member_t s_step_seq_members [] = {
    { "seq_id", MEMBER_U64, offsetof (proto_step_seq_t, seq_id), 0, 0, 0, true },
    { "pos", MEMBER_U32, offsetof (proto_step_seq_t, pos), 0, 0, 0, true },
    { "tokens", MEMBER_TOKENS, offsetof (proto_step_seq_t, tokens), 0,
      offsetof (proto_step_seq_t, n_tokens), PROTO_MAX_TOKENS, true },
    { "blocks", MEMBER_TOKENS, offsetof (proto_step_seq_t, blocks), 0,
      offsetof (proto_step_seq_t, n_blocks), PROTO_MAX_TOKENS, false },
    { "n_prompt", MEMBER_U32, offsetof (proto_step_seq_t, n_prompt), 0, 0, 0, false },
    { "first", MEMBER_BOOL, offsetof (proto_step_seq_t, first), 0, 0, 0, false },
    { "sample", MEMBER_BOOL, offsetof (proto_step_seq_t, sample), 0, 0, 0, false },
    { "sampling", MEMBER_SAMPLING, offsetof (proto_step_seq_t, sampling), 0, 0, 0, false },
    { "masked_tokens", MEMBER_TOKENS, offsetof (proto_step_seq_t, masked_tokens), 0,
      offsetof (proto_step_seq_t, n_masked), PROTO_MAX_TOKENS, false },
    { "history", MEMBER_TOKENS, offsetof (proto_step_seq_t, history), 0,
      offsetof (proto_step_seq_t, n_history), PROTO_MAX_TOKENS, false }
};

static const s_member_t s_step_out_members [] = {
    { "seq_id", MEMBER_U64, offsetof (proto_step_out_t, seq_id), 0, 0, 0, true },
    { "token", MEMBER_U32, offsetof (proto_step_out_t, token), 0, 0, 0, true },
    { "logprob", MEMBER_F32, offsetof (proto_step_out_t, logprob), 0, 0, 0, true },
    { "top", MEMBER_PAIRS, offsetof (proto_step_out_t, top_tokens),
      offsetof (proto_step_out_t, top_logprobs), offsetof (proto_step_out_t, n_top),
      PROTO_MAX_BEAM_CANDIDATES, false }
};

#define S_N_MEMBERS(table) (sizeof (table) / sizeof ((table) [0]))

//  The most members one map may have (the decoder's bookkeeping).
#define S_MAX_MEMBERS 16
_Static_assert (S_N_MEMBERS (s_sampling_members) <= S_MAX_MEMBERS, "too many members");
_Static_assert (S_N_MEMBERS (s_step_seq_members) <= S_MAX_MEMBERS, "too many members");
_Static_assert (S_N_MEMBERS (s_step_out_members) <= S_MAX_MEMBERS, "too many members");

//  The members of one map, for the encoder and the decoder.
typedef struct {
    const s_member_t *members;
    size_t n_members;
} s_member_table_t;

static const s_member_table_t s_sampling_table =
    { s_sampling_members, S_N_MEMBERS (s_sampling_members) };
static const s_member_table_t s_step_seq_table =
    { s_step_seq_members, S_N_MEMBERS (s_step_seq_members) };
static const s_member_table_t s_step_out_table =
    { s_step_out_members, S_N_MEMBERS (s_step_out_members) };

//  Where a member's value sits in the struct at base.
static void *
s_member_at (void *base, size_t offset)
{
    return (char *) base + offset;
}

static const void *
s_member_at_const (const void *base, size_t offset)
{
    return (const char *) base + offset;
}


//  --------------------------------------------------------------------------
//  Messages and their names

void
proto_sampling_reset (proto_sampling_t *sampling)
{
    if (!sampling)
        return;
    free (sampling->bias_tokens);
    free (sampling->bias_values);
    memset (sampling, 0, sizeof (*sampling));
}

int
proto_sampling_copy (proto_sampling_t *dst, const proto_sampling_t *src)
{
    if (!dst || !src)
        return -1;
    proto_sampling_t copy = *src;
    copy.bias_tokens = NULL;
    copy.bias_values = NULL;
    if (src->n_bias > 0) {
        if (!src->bias_tokens || !src->bias_values)
            return -1;
        copy.bias_tokens = (uint32_t *) malloc (src->n_bias * sizeof (uint32_t));
        copy.bias_values = (float *) malloc (src->n_bias * sizeof (float));
        if (!copy.bias_tokens || !copy.bias_values) {
            free (copy.bias_tokens);
            free (copy.bias_values);
            return -1;
        }
        memcpy (copy.bias_tokens, src->bias_tokens, src->n_bias * sizeof (uint32_t));
        memcpy (copy.bias_values, src->bias_values, src->n_bias * sizeof (float));
    }
    proto_sampling_reset (dst);
    *dst = copy;
    return 0;
}

void
proto_msg_reset (proto_msg_t *msg)
{
    if (!msg)
        return;
    free (msg->text);
    free (msg->chat);
    free (msg->tool_calls);
    if (msg->stops) {
        for (uint32_t index = 0; index < msg->n_stops; index++)
            free (msg->stops [index]);
        free (msg->stops);
    }
    free (msg->tokens);
    free (msg->stop_tokens);
    free (msg->top_tokens);
    free (msg->top_logprobs);
    free (msg->logprobs);
    free (msg->copies);
    free (msg->frees);
    proto_sampling_reset (&msg->sampling);
    if (msg->seqs) {
        for (uint32_t index = 0; index < msg->n_seqs; index++) {
            free (msg->seqs [index].tokens);
            free (msg->seqs [index].blocks);
            free (msg->seqs [index].masked_tokens);
            free (msg->seqs [index].history);
            proto_sampling_reset (&msg->seqs [index].sampling);
        }
        free (msg->seqs);
    }
    if (msg->outs) {
        for (uint32_t index = 0; index < msg->n_outs; index++) {
            free (msg->outs [index].top_tokens);
            free (msg->outs [index].top_logprobs);
        }
        free (msg->outs);
    }
    memset (msg, 0, sizeof (*msg));
}

const char *
proto_kind_name (proto_kind_t kind)
{
    const s_kind_t *info = s_kind_info ((int64_t) kind);
    return info ? info->name : "UNKNOWN";
}

const char *
proto_finish_name (proto_finish_t finish)
{
    switch (finish) {
        case PROTO_FINISH_STOP:
            return "stop";
        case PROTO_FINISH_LENGTH:
            return "length";
        case PROTO_FINISH_TOOL_CALLS:
            return "tool_calls";
        default:
            return NULL;
    }
}

//  Replace *field with a heap copy of text (or NULL).
static int
s_set_string (char **field, const char *text)
{
    char *copy = NULL;
    if (text) {
        copy = strdup (text);
        if (!copy)
            return -1;
    }
    free (*field);
    *field = copy;
    return 0;
}

int
proto_msg_set_text (proto_msg_t *msg, const char *text)
{
    return msg ? s_set_string (&msg->text, text) : -1;
}

int
proto_msg_set_chat (proto_msg_t *msg, const char *chat)
{
    return msg ? s_set_string (&msg->chat, chat) : -1;
}

int
proto_msg_set_tool_calls (proto_msg_t *msg, const char *tool_calls)
{
    return msg ? s_set_string (&msg->tool_calls, tool_calls) : -1;
}

int
proto_msg_set_stops (proto_msg_t *msg, const char *const *stops, uint32_t n_stops)
{
    if (!msg || (n_stops > 0 && !stops))
        return -1;
    char **copies = n_stops ? (char **) calloc (n_stops, sizeof (char *)) : NULL;
    if (n_stops && !copies)
        return -1;
    for (uint32_t index = 0; index < n_stops; index++) {
        if (s_set_string (&copies [index], stops [index]) != 0 || !copies [index]) {
            for (uint32_t undo = 0; undo <= index; undo++)
                free (copies [undo]);
            free (copies);
            return -1;
        }
    }
    for (uint32_t index = 0; index < msg->n_stops; index++)
        free (msg->stops [index]);
    free (msg->stops);
    msg->stops = copies;
    msg->n_stops = n_stops;
    return 0;
}

//  Replace *array / *count with a copy of tokens; the old array is freed only after
//  the copy is made, so tokens may point into it.
static int
s_set_token_array (uint32_t **array, uint32_t *count,
                   const uint32_t *tokens, uint32_t n_tokens)
{
    uint32_t *copy = NULL;
    if (n_tokens > 0) {
        if (!tokens)
            return -1;
        copy = (uint32_t *) malloc ((size_t) n_tokens * sizeof (uint32_t));
        if (!copy)
            return -1;
        memcpy (copy, tokens, (size_t) n_tokens * sizeof (uint32_t));
    }
    free (*array);
    *array = copy;
    *count = n_tokens;
    return 0;
}

int
proto_msg_set_tokens (proto_msg_t *msg, const uint32_t *tokens, uint32_t n_tokens)
{
    if (!msg)
        return -1;
    return s_set_token_array (&msg->tokens, &msg->n_tokens, tokens, n_tokens);
}

int
proto_msg_set_stop_tokens (proto_msg_t *msg, const uint32_t *tokens, uint32_t n_tokens)
{
    if (!msg)
        return -1;
    return s_set_token_array (&msg->stop_tokens, &msg->n_stop_tokens, tokens, n_tokens);
}


static size_t
s_id_hash (const void *key)
{
    uint64_t id = *(const uint64_t *) key;
    return (size_t) (id ^ (id >> 29));
}

static int
s_id_compare (const void *key1, const void *key2)
{
    uint64_t id1 = *(const uint64_t *) key1;
    uint64_t id2 = *(const uint64_t *) key2;
    return id1 < id2? -1: id1 > id2? 1: 0;
}

zsock_t *
proto_router_new (const char *endpoint, char *err, size_t err_size)
{
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    if (!router) {
        snprintf (err, err_size, "could not create a ROUTER socket");
        return NULL;
    }
    zsock_set_router_mandatory (router, 1);
    zsock_set_sndhwm (router, 0);
    zsock_set_rcvhwm (router, 0);
    zsock_set_maxmsgsize (router, PROTO_MAX_FRAME_BYTES);
    zsock_set_sndtimeo (router, 0);
    if (zsock_bind (router, "%s", endpoint) == -1) {
        snprintf (err, err_size, "could not bind %s: %s", endpoint,
                  zmq_strerror (zmq_errno ()));
        zsock_destroy (&router);
    }
    return router;
}

zhashx_t *
proto_id_table_new (zhashx_destructor_fn destructor)
{
    zhashx_t *table = zhashx_new ();
    if (!table)
        return NULL;
    zhashx_set_key_hasher (table, s_id_hash);
    zhashx_set_key_comparator (table, s_id_compare);
    zhashx_set_key_duplicator (table, NULL);
    zhashx_set_key_destructor (table, NULL);
    if (destructor)
        zhashx_set_destructor (table, destructor);
    return table;
}


//  --------------------------------------------------------------------------
//  Encoding

static int
s_pack_name (msgpack_packer *packer, const char *name)
{
    size_t length = strlen (name);
    if (msgpack_pack_str (packer, length) != 0)
        return -1;
    return msgpack_pack_str_body (packer, name, length);
}

static int
s_pack_token_array (msgpack_packer *packer, const uint32_t *tokens, uint32_t n_tokens)
{
    if (n_tokens > PROTO_MAX_TOKENS || (n_tokens > 0 && !tokens))
        return -1;
    if (msgpack_pack_array (packer, n_tokens) != 0)
        return -1;
    for (uint32_t index = 0; index < n_tokens; index++)
        if (msgpack_pack_uint32 (packer, tokens [index]) != 0)
            return -1;
    return 0;
}

static int
s_pack_text (msgpack_packer *packer, const char *text)
{
    if (!text)
        text = "";
    size_t length = strlen (text);
    if (length > PROTO_MAX_STRING_BYTES)
        return -1;
    if (msgpack_pack_str (packer, length) != 0)
        return -1;
    return msgpack_pack_str_body (packer, text, length);
}

//  Text that may be absent: nil when NULL.
static int
s_pack_optional_text (msgpack_packer *packer, const char *text)
{
    return text ? s_pack_text (packer, text) : msgpack_pack_nil (packer);
}

static int
s_pack_stops (msgpack_packer *packer, char *const *stops, uint32_t n_stops)
{
    if (n_stops > PROTO_MAX_STOPS || (n_stops > 0 && !stops))
        return -1;
    if (msgpack_pack_array (packer, n_stops) != 0)
        return -1;
    for (uint32_t index = 0; index < n_stops; index++)
        if (!stops [index] || s_pack_text (packer, stops [index]) != 0)
            return -1;
    return 0;
}

static int
s_pack_members (msgpack_packer *packer, const s_member_table_t *table, const void *base);

//  [[token, value], ...]
static int
s_pack_pairs (msgpack_packer *packer, const uint32_t *tokens, const float *values,
              uint32_t count, uint32_t max_count)
{
    if (count > max_count || (count > 0 && (!tokens || !values)))
        return -1;
    if (msgpack_pack_array (packer, count) != 0)
        return -1;
    for (uint32_t index = 0; index < count; index++)
        if (msgpack_pack_array (packer, 2) != 0
        ||  msgpack_pack_uint32 (packer, tokens [index]) != 0
        ||  msgpack_pack_float (packer, values [index]) != 0)
            return -1;
    return 0;
}

static int
s_pack_member (msgpack_packer *packer, const s_member_t *member, const void *base)
{
    const void *value = s_member_at_const (base, member->offset);
    const uint32_t *count = (const uint32_t *) s_member_at_const (base, member->count_offset);
    switch (member->type) {
        case MEMBER_U32:
            return msgpack_pack_uint32 (packer, *(const uint32_t *) value);
        case MEMBER_U64:
            return msgpack_pack_uint64 (packer, *(const uint64_t *) value);
        case MEMBER_F32:
            return msgpack_pack_float (packer, *(const float *) value);
        case MEMBER_BOOL:
            return *(const bool *) value? msgpack_pack_true (packer)
                                        : msgpack_pack_false (packer);
        case MEMBER_TOKENS:
            if (*count > member->max_count)
                return -1;
            return s_pack_token_array (packer, *(uint32_t *const *) value, *count);
        case MEMBER_PAIRS: {
            const float *values =
                *(float *const *) s_member_at_const (base, member->values_offset);
            return s_pack_pairs (packer, *(uint32_t *const *) value, values, *count,
                                 member->max_count);
        }
        case MEMBER_SAMPLING:
            return s_pack_members (packer, &s_sampling_table, value);
        default:
            return -1;
    }
}

//  True when the member carries nothing a decoder would not assume: an empty array, or
//  a nested sampling that is all zero (a STEP sequence's after its first step). Such
//  members are not written; scalars always are.
static bool
s_member_is_empty (const s_member_t *member, const void *base)
{
    if (member->type == MEMBER_TOKENS || member->type == MEMBER_PAIRS)
        return *(const uint32_t *) s_member_at_const (base, member->count_offset) == 0;
    if (member->type == MEMBER_SAMPLING) {
        static const proto_sampling_t zero;
        return memcmp (s_member_at_const (base, member->offset), &zero, sizeof zero) == 0;
    }
    return false;
}

//  A map of the members of the struct at base (empty optional ones left out).
static int
s_pack_members (msgpack_packer *packer, const s_member_table_t *table, const void *base)
{
    uint32_t n_written = 0;
    for (size_t index = 0; index < table->n_members; index++)
        if (table->members [index].required
        ||  !s_member_is_empty (&table->members [index], base))
            n_written++;
    if (msgpack_pack_map (packer, n_written) != 0)
        return -1;
    for (size_t index = 0; index < table->n_members; index++) {
        const s_member_t *member = &table->members [index];
        if (!member->required && s_member_is_empty (member, base))
            continue;
        if (s_pack_name (packer, member->name) != 0
        ||  s_pack_member (packer, member, base) != 0)
            return -1;
    }
    return 0;
}

//  An array of n structs of size `size` at array, each a map.
static int
s_pack_struct_array (msgpack_packer *packer, const s_member_table_t *table,
                     const void *array, size_t size, uint32_t count, uint32_t max_count)
{
    if (count > max_count || (count > 0 && !array))
        return -1;
    if (msgpack_pack_array (packer, count) != 0)
        return -1;
    for (uint32_t index = 0; index < count; index++)
        if (s_pack_members (packer, table, (const char *) array + index * size) != 0)
            return -1;
    return 0;
}

static int
s_pack_u64_array (msgpack_packer *packer, const uint64_t *values, uint32_t count,
                  uint32_t max_count)
{
    if (count > max_count || (count > 0 && !values))
        return -1;
    if (msgpack_pack_array (packer, count) != 0)
        return -1;
    for (uint32_t index = 0; index < count; index++)
        if (msgpack_pack_uint64 (packer, values [index]) != 0)
            return -1;
    return 0;
}

//  Write one field's value. Returns 0, or -1 when the value cannot be encoded (over a
//  limit, inconsistent) or the buffer could not grow.
static int
s_pack_field (msgpack_packer *packer, const proto_msg_t *msg, s_field_t field)
{
    switch (field) {
        case FIELD_REQUEST_ID:
            return msgpack_pack_uint64 (packer, msg->request_id);
        case FIELD_TEXT:
            return s_pack_text (packer, msg->text);
        case FIELD_MAX_TOKENS:
            return msgpack_pack_uint32 (packer, msg->max_tokens);
        case FIELD_SAMPLING:
            return s_pack_members (packer, &s_sampling_table, &msg->sampling);
        case FIELD_IGNORE_EOS:
            return msg->ignore_eos? msgpack_pack_true (packer): msgpack_pack_false (packer);
        case FIELD_FINISH:
            if ((unsigned) msg->finish > PROTO_FINISH_TOOL_CALLS)
                return -1;
            return msgpack_pack_uint32 (packer, (uint32_t) msg->finish);
        case FIELD_PROMPT_TOKENS:
            return msgpack_pack_uint32 (packer, msg->prompt_tokens);
        case FIELD_COMPLETION_TOKENS:
            return msgpack_pack_uint32 (packer, msg->completion_tokens);
        case FIELD_STATUS:
            return msgpack_pack_uint32 (packer, msg->status);
        case FIELD_TOKENS:
            return s_pack_token_array (packer, msg->tokens, msg->n_tokens);
        case FIELD_STOP_TOKENS:
            return s_pack_token_array (packer, msg->stop_tokens, msg->n_stop_tokens);
        case FIELD_VERSION:
            return msgpack_pack_uint32 (packer, msg->version);
        case FIELD_FINGERPRINT:
            return msgpack_pack_uint64 (packer, msg->fingerprint);
        case FIELD_N_CTX:
            return msgpack_pack_uint32 (packer, msg->n_ctx);
        case FIELD_N_BLOCKS:
            return msgpack_pack_uint32 (packer, msg->n_blocks);
        case FIELD_BLOCK_SIZE:
            return msgpack_pack_uint32 (packer, msg->block_size);
        case FIELD_N_VOCAB:
            return msgpack_pack_uint32 (packer, msg->n_vocab);
        case FIELD_STEP_ID:
            return msgpack_pack_uint64 (packer, msg->step_id);
        case FIELD_COPIES:
            if (msg->n_copies > PROTO_MAX_TOKENS / 2)
                return -1;
            return s_pack_token_array (packer, msg->copies, 2 * msg->n_copies);
        case FIELD_FREES:
            return s_pack_u64_array (packer, msg->frees, msg->n_frees, PROTO_MAX_TOKENS);
        case FIELD_SEQS:
            return s_pack_struct_array (packer, &s_step_seq_table, msg->seqs,
                                        sizeof (proto_step_seq_t), msg->n_seqs,
                                        PROTO_MAX_STEP_SEQS);
        case FIELD_OUTS:
            return s_pack_struct_array (packer, &s_step_out_table, msg->outs,
                                        sizeof (proto_step_out_t), msg->n_outs,
                                        PROTO_MAX_STEP_SEQS);
        case FIELD_WORKERS:
            return msgpack_pack_uint32 (packer, msg->workers);
        case FIELD_RUNNING:
            return msgpack_pack_uint32 (packer, msg->running);
        case FIELD_WAITING:
            return msgpack_pack_uint32 (packer, msg->waiting);
        case FIELD_KV_BLOCKS_USED:
            return msgpack_pack_uint32 (packer, msg->kv_blocks_used);
        case FIELD_KV_BLOCKS_TOTAL:
            return msgpack_pack_uint32 (packer, msg->kv_blocks_total);
        case FIELD_PREFIX_QUERIES:
            return msgpack_pack_uint64 (packer, msg->prefix_queries);
        case FIELD_PREFIX_HITS:
            return msgpack_pack_uint64 (packer, msg->prefix_hits);
        case FIELD_PREEMPTIONS:
            return msgpack_pack_uint64 (packer, msg->preemptions);
        case FIELD_N:
            if (msg->n > PROTO_MAX_N)
                return -1;
            return msgpack_pack_uint32 (packer, msg->n);
        case FIELD_INDEX:
            if (msg->index >= PROTO_MAX_N)
                return -1;
            return msgpack_pack_uint32 (packer, msg->index);
        case FIELD_ONLY_INDEX:
            return msg->only_index? msgpack_pack_true (packer): msgpack_pack_false (packer);
        case FIELD_BEST_OF:
            if (msg->best_of > PROTO_MAX_N)
                return -1;
            return msgpack_pack_uint32 (packer, msg->best_of);
        case FIELD_ADD_SPECIAL_TOKENS:
            return msg->add_special_tokens? msgpack_pack_true (packer)
                                          : msgpack_pack_false (packer);
        case FIELD_WANT_LOGPROBS:
            return msg->want_logprobs? msgpack_pack_true (packer)
                                     : msgpack_pack_false (packer);
        case FIELD_LOGPROB:
            return msgpack_pack_float (packer, msg->logprob);
        case FIELD_TOP:
            return s_pack_pairs (packer, msg->top_tokens, msg->top_logprobs, msg->n_top,
                                 PROTO_MAX_LOGPROBS);
        case FIELD_LOGPROBS:
            return s_pack_optional_text (packer, msg->logprobs);
        case FIELD_USE_BEAM_SEARCH:
            return msg->use_beam_search? msgpack_pack_true (packer)
                                       : msgpack_pack_false (packer);
        case FIELD_LENGTH_PENALTY:
            return msgpack_pack_float (packer, msg->length_penalty);
        case FIELD_EARLY_STOPPING:
            if ((unsigned) msg->early_stopping > PROTO_EARLY_STOPPING_NEVER)
                return -1;
            return msgpack_pack_uint32 (packer, (uint32_t) msg->early_stopping);
        case FIELD_INCLUDE_STOP_STR_IN_OUTPUT:
            return msg->include_stop_str_in_output? msgpack_pack_true (packer)
                                                  : msgpack_pack_false (packer);
        case FIELD_KEEP_SPECIAL_TOKENS:
            return msg->keep_special_tokens? msgpack_pack_true (packer)
                                           : msgpack_pack_false (packer);
        case FIELD_QUEUE_US:
            return msgpack_pack_uint64 (packer, msg->queue_us);
        case FIELD_CHAT:
            return s_pack_optional_text (packer, msg->chat);
        case FIELD_TOOL_CALLS:
            return s_pack_optional_text (packer, msg->tool_calls);
        case FIELD_STOPS:
            return s_pack_stops (packer, msg->stops, msg->n_stops);
        default:
            return -1;
    }
}

zframe_t *
proto_encode (const proto_msg_t *msg)
{
    if (!msg)
        return NULL;
    const s_kind_t *kind = s_kind_info ((int64_t) msg->kind);
    if (!kind)
        return NULL;

    msgpack_sbuffer buffer;
    msgpack_sbuffer_init (&buffer);
    msgpack_packer packer;
    msgpack_packer_init (&packer, &buffer, msgpack_sbuffer_write);

    int rc = 0;
    if (msgpack_pack_array (&packer, 2) != 0
    ||  msgpack_pack_uint32 (&packer, (uint32_t) msg->kind) != 0
    ||  msgpack_pack_map (&packer, kind->n_fields) != 0)
        rc = -1;
    for (size_t index = 0; rc == 0 && index < kind->n_fields; index++) {
        s_field_t field = kind->fields [index].field;
        if (s_pack_name (&packer, s_field_names [field]) != 0
        ||  s_pack_field (&packer, msg, field) != 0)
            rc = -1;
    }
    zframe_t *frame = NULL;
    if (rc == 0 && buffer.size <= PROTO_MAX_FRAME_BYTES)
        frame = zframe_new (buffer.data, buffer.size);
    msgpack_sbuffer_destroy (&buffer);
    return frame;
}


//  --------------------------------------------------------------------------
//  Decoding: a bounded reader over the frame's bytes
//
//  Every read checks that its bytes are there. Errors are written once, as
//  "KIND: field 'PATH': what is wrong", where PATH is the field being decoded and,
//  inside arrays, the element and member ("seqs[3].tokens[7]").

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t offset;
    //  Where we are, for error messages
    const char *kind_name;      //  "frame" until the kind is known
    const char *field;          //  top-level field being decoded, or NULL
    int64_t index;              //  element of that field's array, or -1
    const char *member;         //  member of that element's map, or NULL
    const char *submember;      //  member of a map inside that member, or NULL
    int64_t member_index;       //  element of that member's array, or -1
    //  Where errors go
    char *err;
    size_t err_size;
} s_reader_t;

static void
s_fail (s_reader_t *reader, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

static void
s_fail (s_reader_t *reader, const char *format, ...)
{
    if (!reader->err || reader->err_size == 0)
        return;
    char detail [256];
    va_list args;
    va_start (args, format);
    vsnprintf (detail, sizeof (detail), format, args);
    va_end (args);

    if (!reader->field) {
        snprintf (reader->err, reader->err_size, "%s: %s", reader->kind_name, detail);
        return;
    }
    char path [128];
    char index [24] = "";
    char member_index [24] = "";
    if (reader->index >= 0)
        snprintf (index, sizeof (index), "[%" PRId64 "]", reader->index);
    if (reader->member_index >= 0)
        snprintf (member_index, sizeof (member_index), "[%" PRId64 "]",
                  reader->member_index);
    if (reader->member && reader->submember)
        snprintf (path, sizeof (path), "%s%s.%s.%s%s",
                  reader->field, index, reader->member, reader->submember, member_index);
    else
    if (reader->member)
        snprintf (path, sizeof (path), "%s%s.%s%s",
                  reader->field, index, reader->member, member_index);
    else
        snprintf (path, sizeof (path), "%s%s", reader->field, index);
    snprintf (reader->err, reader->err_size, "%s: field '%s': %s",
              reader->kind_name, path, detail);
}

static size_t
s_remaining (const s_reader_t *reader)
{
    return reader->size - reader->offset;
}

//  The type a msgpack value has, named from its first byte, for error messages.
static const char *
s_type_name (uint8_t byte)
{
    if (byte <= 0x7f || (byte >= 0xcc && byte <= 0xcf))
        return "an unsigned integer";
    if (byte >= 0xe0 || (byte >= 0xd0 && byte <= 0xd3))
        return "an integer";
    if (byte <= 0x8f || byte == 0xde || byte == 0xdf)
        return "a map";
    if (byte <= 0x9f || byte == 0xdc || byte == 0xdd)
        return "an array";
    if (byte <= 0xbf || (byte >= 0xd9 && byte <= 0xdb))
        return "a string";
    if (byte == 0xc0)
        return "nil";
    if (byte == 0xc2 || byte == 0xc3)
        return "a boolean";
    if (byte == 0xca || byte == 0xcb)
        return "a float";
    if (byte >= 0xc4 && byte <= 0xc6)
        return "binary data";
    if (byte == 0xc1)
        return "the never-used byte 0xc1";
    return "an extension value";
}

//  Check that n more bytes are there.
static int
s_need (s_reader_t *reader, size_t n)
{
    if (s_remaining (reader) < n) {
        s_fail (reader, "truncated: %zu more bytes needed at offset %zu, %zu left",
                n, reader->offset, s_remaining (reader));
        return -1;
    }
    return 0;
}

//  Look at the next byte without consuming it.
static int
s_peek (s_reader_t *reader, uint8_t *byte)
{
    if (s_need (reader, 1) != 0)
        return -1;
    *byte = reader->data [reader->offset];
    return 0;
}

//  Read an n-byte big-endian unsigned number (n is 1, 2, 4 or 8).
static int
s_read_big_endian (s_reader_t *reader, size_t n, uint64_t *value)
{
    if (s_need (reader, n) != 0)
        return -1;
    uint64_t result = 0;
    for (size_t index = 0; index < n; index++)
        result = (result << 8) | reader->data [reader->offset + index];
    reader->offset += n;
    *value = result;
    return 0;
}

//  Read an integer of any msgpack width as a signed or an unsigned value.
//  is_negative says which of the two was set.
static int
s_read_integer (s_reader_t *reader, uint64_t *unsigned_value, int64_t *negative_value,
                bool *is_negative)
{
    uint8_t byte;
    if (s_peek (reader, &byte) != 0)
        return -1;
    *is_negative = false;
    if (byte <= 0x7f) {
        reader->offset++;
        *unsigned_value = byte;
        return 0;
    }
    if (byte >= 0xe0) {
        reader->offset++;
        *is_negative = true;
        *negative_value = (int64_t) byte - 256;
        return 0;
    }
    if (byte >= 0xcc && byte <= 0xcf) {
        reader->offset++;
        return s_read_big_endian (reader, (size_t) 1 << (byte - 0xcc), unsigned_value);
    }
    if (byte >= 0xd0 && byte <= 0xd3) {
        size_t width = (size_t) 1 << (byte - 0xd0);
        uint64_t bits;
        reader->offset++;
        if (s_read_big_endian (reader, width, &bits) != 0)
            return -1;
        //  Sign-extend the two's complement number of width bytes
        int64_t value;
        if (width == 8)
            memcpy (&value, &bits, sizeof (value));
        else {
            uint64_t sign_bit = (uint64_t) 1 << (width * 8 - 1);
            if (bits & sign_bit)
                value = (int64_t) (bits & (sign_bit - 1)) - (int64_t) sign_bit;
            else
                value = (int64_t) bits;
        }
        if (value < 0) {
            *is_negative = true;
            *negative_value = value;
        }
        else
            *unsigned_value = (uint64_t) value;
        return 0;
    }
    s_fail (reader, "expected an unsigned integer, got %s", s_type_name (byte));
    return -1;
}

static int
s_read_uint64 (s_reader_t *reader, uint64_t *value)
{
    uint64_t unsigned_value = 0;
    int64_t negative_value = 0;
    bool is_negative;
    if (s_read_integer (reader, &unsigned_value, &negative_value, &is_negative) != 0)
        return -1;
    if (is_negative) {
        s_fail (reader, "expected an unsigned integer, got the negative value %" PRId64,
                negative_value);
        return -1;
    }
    *value = unsigned_value;
    return 0;
}

static int
s_read_uint32 (s_reader_t *reader, uint32_t *value)
{
    uint64_t wide;
    if (s_read_uint64 (reader, &wide) != 0)
        return -1;
    if (wide > UINT32_MAX) {
        s_fail (reader, "value %" PRIu64 " does not fit in 32 bits", wide);
        return -1;
    }
    *value = (uint32_t) wide;
    return 0;
}

//  An unsigned integer of at most max.
static int
s_read_limited_uint32 (s_reader_t *reader, uint32_t *value, uint32_t max)
{
    if (s_read_uint32 (reader, value) != 0)
        return -1;
    if (*value > max) {
        s_fail (reader, "%" PRIu32 " is over the limit of %" PRIu32, *value, max);
        return -1;
    }
    return 0;
}

//  A float32, or a float64 that is within the range of a float.
static int
s_read_float (s_reader_t *reader, float *value)
{
    uint8_t byte;
    if (s_peek (reader, &byte) != 0)
        return -1;
    if (byte == 0xca) {
        uint64_t bits;
        reader->offset++;
        if (s_read_big_endian (reader, 4, &bits) != 0)
            return -1;
        uint32_t bits32 = (uint32_t) bits;
        memcpy (value, &bits32, sizeof (*value));
        return 0;
    }
    if (byte == 0xcb) {
        uint64_t bits;
        double wide;
        reader->offset++;
        if (s_read_big_endian (reader, 8, &bits) != 0)
            return -1;
        memcpy (&wide, &bits, sizeof (wide));
        if (isfinite (wide) && (wide > FLT_MAX || wide < -FLT_MAX)) {
            s_fail (reader, "value %g does not fit in a float", wide);
            return -1;
        }
        *value = (float) wide;
        return 0;
    }
    s_fail (reader, "expected a float, got %s", s_type_name (byte));
    return -1;
}

//  A string: returns where its bytes are in the frame, and how many.
static int
s_read_string (s_reader_t *reader, const uint8_t **bytes, size_t *length)
{
    uint8_t byte;
    if (s_peek (reader, &byte) != 0)
        return -1;
    uint64_t string_length;
    if (byte >= 0xa0 && byte <= 0xbf) {
        reader->offset++;
        string_length = byte & 0x1f;
    }
    else
    if (byte >= 0xd9 && byte <= 0xdb) {
        reader->offset++;
        if (s_read_big_endian (reader, (size_t) 1 << (byte - 0xd9), &string_length) != 0)
            return -1;
    }
    else {
        s_fail (reader, "expected a string, got %s", s_type_name (byte));
        return -1;
    }
    if (string_length > s_remaining (reader)) {
        s_fail (reader, "truncated: a string of %" PRIu64 " bytes, %zu bytes left",
                string_length, s_remaining (reader));
        return -1;
    }
    *bytes = reader->data + reader->offset;
    *length = (size_t) string_length;
    reader->offset += (size_t) string_length;
    return 0;
}

//  An array header of at most max_count elements; each element takes at least one
//  byte, so a count beyond the bytes left is a lie, refused before anything is
//  allocated for it.
static int
s_read_array_header (s_reader_t *reader, uint32_t max_count, uint32_t *count)
{
    uint8_t byte;
    if (s_peek (reader, &byte) != 0)
        return -1;
    uint64_t array_count;
    if (byte >= 0x90 && byte <= 0x9f) {
        reader->offset++;
        array_count = byte & 0x0f;
    }
    else
    if (byte == 0xdc || byte == 0xdd) {
        reader->offset++;
        if (s_read_big_endian (reader, byte == 0xdc ? 2 : 4, &array_count) != 0)
            return -1;
    }
    else {
        s_fail (reader, "expected an array, got %s", s_type_name (byte));
        return -1;
    }
    if (array_count > max_count) {
        s_fail (reader, "array of %" PRIu64 " elements is over the limit of %" PRIu32,
                array_count, max_count);
        return -1;
    }
    if (array_count > s_remaining (reader)) {
        s_fail (reader, "truncated: an array of %" PRIu64 " elements, %zu bytes left",
                array_count, s_remaining (reader));
        return -1;
    }
    *count = (uint32_t) array_count;
    return 0;
}

//  A map header; each entry takes at least two bytes (key and value).
static int
s_read_map_header (s_reader_t *reader, uint32_t *count)
{
    uint8_t byte;
    if (s_peek (reader, &byte) != 0)
        return -1;
    uint64_t map_count;
    if (byte >= 0x80 && byte <= 0x8f) {
        reader->offset++;
        map_count = byte & 0x0f;
    }
    else
    if (byte == 0xde || byte == 0xdf) {
        reader->offset++;
        if (s_read_big_endian (reader, byte == 0xde ? 2 : 4, &map_count) != 0)
            return -1;
    }
    else {
        s_fail (reader, "expected a map, got %s", s_type_name (byte));
        return -1;
    }
    if (map_count > s_remaining (reader) / 2) {
        s_fail (reader, "truncated: a map of %" PRIu64 " entries, %zu bytes left",
                map_count, s_remaining (reader));
        return -1;
    }
    *count = (uint32_t) map_count;
    return 0;
}

//  Step over one value of any type (the value of a field we do not know), checking
//  that it is complete and well formed. depth counts the containers around it.
static int
s_skip_value (s_reader_t *reader, int depth)
{
    if (depth >= S_MAX_SKIP_DEPTH) {
        s_fail (reader, "values nested more than %d levels deep", S_MAX_SKIP_DEPTH);
        return -1;
    }
    uint8_t byte;
    if (s_peek (reader, &byte) != 0)
        return -1;

    //  Containers: step over each element
    if ((byte >= 0x80 && byte <= 0x9f) || (byte >= 0xdc && byte <= 0xdf)) {
        bool is_map = byte <= 0x8f || byte >= 0xde;
        uint32_t count;
        if (is_map) {
            if (s_read_map_header (reader, &count) != 0)
                return -1;
        }
        else
        if (s_read_array_header (reader, UINT32_MAX, &count) != 0)
            return -1;
        uint64_t n_values = is_map ? (uint64_t) count * 2 : count;
        for (uint64_t index = 0; index < n_values; index++)
            if (s_skip_value (reader, depth + 1) != 0)
                return -1;
        return 0;
    }
    //  Everything else: a header, then a length or a fixed number of bytes
    reader->offset++;
    uint64_t length = 0;
    if (byte <= 0x7f || byte >= 0xe0 || byte == 0xc0 || byte == 0xc2 || byte == 0xc3)
        length = 0;
    else
    if (byte >= 0xa0 && byte <= 0xbf)
        length = byte & 0x1f;
    else
    if (byte >= 0xcc && byte <= 0xcf)
        length = (uint64_t) 1 << (byte - 0xcc);
    else
    if (byte >= 0xd0 && byte <= 0xd3)
        length = (uint64_t) 1 << (byte - 0xd0);
    else
    if (byte == 0xca)
        length = 4;
    else
    if (byte == 0xcb)
        length = 8;
    else
    if (byte >= 0xd4 && byte <= 0xd8)          //  fixext 1, 2, 4, 8, 16: type + data
        length = 1 + ((uint64_t) 1 << (byte - 0xd4));
    else
    if (byte >= 0xd9 && byte <= 0xdb) {         //  str 8, 16, 32
        if (s_read_big_endian (reader, (size_t) 1 << (byte - 0xd9), &length) != 0)
            return -1;
    }
    else
    if (byte >= 0xc4 && byte <= 0xc6) {         //  bin 8, 16, 32
        if (s_read_big_endian (reader, (size_t) 1 << (byte - 0xc4), &length) != 0)
            return -1;
    }
    else
    if (byte >= 0xc7 && byte <= 0xc9) {         //  ext 8, 16, 32: length, type, data
        if (s_read_big_endian (reader, (size_t) 1 << (byte - 0xc7), &length) != 0)
            return -1;
        length += 1;
    }
    else {
        s_fail (reader, "malformed msgpack: the never-used byte 0xc1 at offset %zu",
                reader->offset - 1);
        return -1;
    }
    if (length > s_remaining (reader)) {
        s_fail (reader, "truncated: a value of %" PRIu64 " bytes, %zu bytes left",
                length, s_remaining (reader));
        return -1;
    }
    reader->offset += (size_t) length;
    return 0;
}

static int
s_fail_duplicate (s_reader_t *reader)
{
    s_fail (reader, "appears twice");
    return -1;
}

//  True when the string key (not NUL-terminated) is name.
static bool
s_key_is (const uint8_t *key, size_t key_length, const char *name)
{
    return strlen (name) == key_length && memcmp (key, name, key_length) == 0;
}

//  Text: a string without NUL, copied to the heap.
static int
s_read_text (s_reader_t *reader, char **text)
{
    const uint8_t *bytes;
    size_t length;
    if (s_read_string (reader, &bytes, &length) != 0)
        return -1;
    if (length > PROTO_MAX_STRING_BYTES) {
        s_fail (reader, "text of %zu bytes is over the limit of %u",
                length, PROTO_MAX_STRING_BYTES);
        return -1;
    }
    const uint8_t *nul = (const uint8_t *) memchr (bytes, 0, length);
    if (nul) {
        s_fail (reader, "text holds a NUL byte at offset %zu", (size_t) (nul - bytes));
        return -1;
    }
    char *copy = (char *) malloc (length + 1);
    if (!copy) {
        s_fail (reader, "out of memory for %zu bytes of text", length);
        return -1;
    }
    memcpy (copy, bytes, length);
    copy [length] = 0;
    *text = copy;
    return 0;
}

//  An array of token ids into *tokens / *n_tokens (set as soon as the array is
//  allocated, so that a failure part way leaves nothing that reset would not free).
//  element_index is where the reader notes which element it is at.
static int
s_read_token_array (s_reader_t *reader, uint32_t **tokens, uint32_t *n_tokens,
                    int64_t *element_index)
{
    uint32_t count;
    if (s_read_array_header (reader, PROTO_MAX_TOKENS, &count) != 0)
        return -1;
    if (count == 0)
        return 0;
    uint32_t *array = (uint32_t *) malloc ((size_t) count * sizeof (uint32_t));
    if (!array) {
        s_fail (reader, "out of memory for %" PRIu32 " tokens", count);
        return -1;
    }
    *tokens = array;
    *n_tokens = count;
    for (uint32_t index = 0; index < count; index++) {
        *element_index = index;
        if (s_read_uint32 (reader, &array [index]) != 0)
            return -1;
    }
    *element_index = -1;
    return 0;
}

static int
s_read_bool (s_reader_t *reader, bool *value)
{
    uint8_t byte;
    if (s_peek (reader, &byte) != 0)
        return -1;
    if (byte != 0xc2 && byte != 0xc3) {
        s_fail (reader, "expected a boolean, got %s", s_type_name (byte));
        return -1;
    }
    reader->offset++;
    *value = byte == 0xc3;
    return 0;
}

//  An array of at most max_count unsigned 64-bit numbers.
static int
s_read_u64_array (s_reader_t *reader, uint64_t **values, uint32_t *count,
                  uint32_t max_count)
{
    uint32_t n;
    if (s_read_array_header (reader, max_count, &n) != 0)
        return -1;
    if (n == 0)
        return 0;
    uint64_t *array = (uint64_t *) malloc ((size_t) n * sizeof (uint64_t));
    if (!array) {
        s_fail (reader, "out of memory for %" PRIu32 " numbers", n);
        return -1;
    }
    *values = array;
    *count = n;
    for (uint32_t index = 0; index < n; index++) {
        reader->index = index;
        if (s_read_uint64 (reader, &array [index]) != 0)
            return -1;
    }
    reader->index = -1;
    return 0;
}

//  [[token, value], ...] into two arrays sharing *count (set as soon as they are
//  allocated, so that a failure part way leaves nothing that reset would not free).
static int
s_read_pairs (s_reader_t *reader, uint32_t **tokens, float **values, uint32_t *count,
              uint32_t max_count)
{
    uint32_t n;
    if (s_read_array_header (reader, max_count, &n) != 0)
        return -1;
    if (n == 0)
        return 0;
    *tokens = (uint32_t *) malloc ((size_t) n * sizeof (uint32_t));
    *values = (float *) malloc ((size_t) n * sizeof (float));
    if (!*tokens || !*values) {
        free (*tokens);
        free (*values);
        *tokens = NULL;
        *values = NULL;
        s_fail (reader, "out of memory for %" PRIu32 " pairs", n);
        return -1;
    }
    *count = n;
    for (uint32_t index = 0; index < n; index++) {
        reader->member_index = index;
        uint32_t pair_length;
        //  No limit of 2 here: it would refuse [a, b, c] as "over the limit of 2"
        //  before the check below could say what a pair is (the count is still
        //  checked against the bytes left, and nothing is allocated for it)
        if (s_read_array_header (reader, UINT32_MAX, &pair_length) != 0)
            return -1;
        if (pair_length != 2) {
            s_fail (reader, "expected a pair [token, value], got %" PRIu32 " elements",
                    pair_length);
            return -1;
        }
        if (s_read_uint32 (reader, &(*tokens) [index]) != 0
        ||  s_read_float (reader, &(*values) [index]) != 0)
            return -1;
    }
    reader->member_index = -1;
    return 0;
}

static int
s_read_members (s_reader_t *reader, const s_member_table_t *table, void *base,
                const char **name_slot);

static int
s_read_member (s_reader_t *reader, const s_member_t *member, void *base)
{
    void *value = s_member_at (base, member->offset);
    uint32_t *count = (uint32_t *) s_member_at (base, member->count_offset);
    switch (member->type) {
        case MEMBER_U32:
            return s_read_uint32 (reader, (uint32_t *) value);
        case MEMBER_U64:
            return s_read_uint64 (reader, (uint64_t *) value);
        case MEMBER_F32:
            return s_read_float (reader, (float *) value);
        case MEMBER_BOOL:
            return s_read_bool (reader, (bool *) value);
        case MEMBER_TOKENS:
            return s_read_token_array (reader, (uint32_t **) value, count,
                                       &reader->member_index);
        case MEMBER_PAIRS:
            return s_read_pairs (reader, (uint32_t **) value,
                                 (float **) s_member_at (base, member->values_offset), count,
                                 member->max_count);
        case MEMBER_SAMPLING:
            return s_read_members (reader, &s_sampling_table, value, &reader->submember);
        default:
            s_fail (reader, "no decoder for this member");
            return -1;
    }
}

//  A map holding the members of table into the struct at base. The name of the member
//  being read goes to *name_slot, for error messages.
static int
s_read_members (s_reader_t *reader, const s_member_table_t *table, void *base,
                const char **name_slot)
{
    uint32_t count;
    if (s_read_map_header (reader, &count) != 0)
        return -1;
    bool seen [S_MAX_MEMBERS] = { false };
    for (uint32_t entry = 0; entry < count; entry++) {
        const uint8_t *key;
        size_t key_length;
        *name_slot = NULL;
        if (s_read_string (reader, &key, &key_length) != 0)
            return -1;
        size_t which = table->n_members;
        for (size_t index = 0; index < table->n_members; index++)
            if (s_key_is (key, key_length, table->members [index].name)) {
                which = index;
                break;
            }
        if (which == table->n_members) {
            if (s_skip_value (reader, 3) != 0)
                return -1;
            continue;
        }
        *name_slot = table->members [which].name;
        if (seen [which])
            return s_fail_duplicate (reader);
        seen [which] = true;
        if (s_read_member (reader, &table->members [which], base) != 0)
            return -1;
    }
    *name_slot = NULL;
    for (size_t index = 0; index < table->n_members; index++)
        if (table->members [index].required && !seen [index]) {
            s_fail (reader, "member '%s' is missing", table->members [index].name);
            return -1;
        }
    return 0;
}

//  An array of at most max_count maps, each read into a struct of `size` bytes in a
//  zeroed heap array (*array and *count set as soon as it is allocated).
static int
s_read_struct_array (s_reader_t *reader, const s_member_table_t *table, void **array,
                     size_t size, uint32_t *count, uint32_t max_count)
{
    uint32_t n;
    if (s_read_array_header (reader, max_count, &n) != 0)
        return -1;
    if (n == 0)
        return 0;
    *array = calloc (n, size);
    if (!*array) {
        s_fail (reader, "out of memory for %" PRIu32 " entries", n);
        return -1;
    }
    *count = n;
    for (uint32_t index = 0; index < n; index++) {
        reader->index = index;
        if (s_read_members (reader, table, (char *) *array + index * size,
                            &reader->member) != 0)
            return -1;
    }
    reader->index = -1;
    return 0;
}

//  STEP's copies: an even number of block ids.
static int
s_read_copies (s_reader_t *reader, proto_msg_t *msg)
{
    uint32_t n_ids = 0;
    if (s_read_token_array (reader, &msg->copies, &n_ids, &reader->index) != 0)
        return -1;
    if (n_ids % 2 != 0) {
        s_fail (reader, "%" PRIu32 " block ids: not pairs (src, dst)", n_ids);
        return -1;
    }
    msg->n_copies = n_ids / 2;
    return 0;
}

static int
s_read_finish (s_reader_t *reader, proto_finish_t *finish)
{
    uint32_t value;
    if (s_read_uint32 (reader, &value) != 0)
        return -1;
    if (value > PROTO_FINISH_TOOL_CALLS) {
        s_fail (reader, "%" PRIu32 " is not a finish reason (0 to 3)", value);
        return -1;
    }
    *finish = (proto_finish_t) value;
    return 0;
}

//  Text that may be absent (nil): *text stays NULL then.
static int
s_read_optional_text (s_reader_t *reader, char **text)
{
    uint8_t byte;
    if (s_peek (reader, &byte) != 0)
        return -1;
    if (byte == 0xc0) {
        reader->offset++;
        return 0;
    }
    return s_read_text (reader, text);
}

//  Stop strings: an array of at most PROTO_MAX_STOPS texts.
static int
s_read_stops (s_reader_t *reader, proto_msg_t *msg)
{
    uint32_t count;
    if (s_read_array_header (reader, PROTO_MAX_STOPS, &count) != 0)
        return -1;
    if (count == 0)
        return 0;
    msg->stops = (char **) calloc (count, sizeof (char *));
    if (!msg->stops) {
        s_fail (reader, "out of memory");
        return -1;
    }
    msg->n_stops = count;
    for (uint32_t index = 0; index < count; index++) {
        reader->index = index;
        if (s_read_text (reader, &msg->stops [index]) != 0)
            return -1;
    }
    reader->index = -1;
    return 0;
}

//  Read one field's value into msg.
static int
s_read_field (s_reader_t *reader, proto_msg_t *msg, s_field_t field)
{
    switch (field) {
        case FIELD_REQUEST_ID:
            return s_read_uint64 (reader, &msg->request_id);
        case FIELD_TEXT:
            return s_read_text (reader, &msg->text);
        case FIELD_CHAT:
            return s_read_optional_text (reader, &msg->chat);
        case FIELD_TOOL_CALLS:
            return s_read_optional_text (reader, &msg->tool_calls);
        case FIELD_STOPS:
            return s_read_stops (reader, msg);
        case FIELD_MAX_TOKENS:
            return s_read_uint32 (reader, &msg->max_tokens);
        case FIELD_SAMPLING:
            return s_read_members (reader, &s_sampling_table, &msg->sampling,
                                   &reader->member);
        case FIELD_IGNORE_EOS:
            return s_read_bool (reader, &msg->ignore_eos);
        case FIELD_FINISH:
            return s_read_finish (reader, &msg->finish);
        case FIELD_PROMPT_TOKENS:
            return s_read_uint32 (reader, &msg->prompt_tokens);
        case FIELD_COMPLETION_TOKENS:
            return s_read_uint32 (reader, &msg->completion_tokens);
        case FIELD_STATUS:
            return s_read_uint32 (reader, &msg->status);
        case FIELD_TOKENS:
            return s_read_token_array (reader, &msg->tokens, &msg->n_tokens,
                                       &reader->index);
        case FIELD_STOP_TOKENS:
            return s_read_token_array (reader, &msg->stop_tokens, &msg->n_stop_tokens,
                                       &reader->index);
        case FIELD_VERSION:
            return s_read_uint32 (reader, &msg->version);
        case FIELD_FINGERPRINT:
            return s_read_uint64 (reader, &msg->fingerprint);
        case FIELD_N_CTX:
            return s_read_uint32 (reader, &msg->n_ctx);
        case FIELD_N_BLOCKS:
            return s_read_uint32 (reader, &msg->n_blocks);
        case FIELD_BLOCK_SIZE:
            return s_read_uint32 (reader, &msg->block_size);
        case FIELD_N_VOCAB:
            return s_read_uint32 (reader, &msg->n_vocab);
        case FIELD_STEP_ID:
            return s_read_uint64 (reader, &msg->step_id);
        case FIELD_COPIES:
            return s_read_copies (reader, msg);
        case FIELD_FREES:
            return s_read_u64_array (reader, &msg->frees, &msg->n_frees, PROTO_MAX_TOKENS);
        case FIELD_SEQS:
            return s_read_struct_array (reader, &s_step_seq_table, (void **) &msg->seqs,
                                        sizeof (proto_step_seq_t), &msg->n_seqs,
                                        PROTO_MAX_STEP_SEQS);
        case FIELD_OUTS:
            return s_read_struct_array (reader, &s_step_out_table, (void **) &msg->outs,
                                        sizeof (proto_step_out_t), &msg->n_outs,
                                        PROTO_MAX_STEP_SEQS);
        case FIELD_WORKERS:
            return s_read_uint32 (reader, &msg->workers);
        case FIELD_RUNNING:
            return s_read_uint32 (reader, &msg->running);
        case FIELD_WAITING:
            return s_read_uint32 (reader, &msg->waiting);
        case FIELD_KV_BLOCKS_USED:
            return s_read_uint32 (reader, &msg->kv_blocks_used);
        case FIELD_KV_BLOCKS_TOTAL:
            return s_read_uint32 (reader, &msg->kv_blocks_total);
        case FIELD_PREFIX_QUERIES:
            return s_read_uint64 (reader, &msg->prefix_queries);
        case FIELD_PREFIX_HITS:
            return s_read_uint64 (reader, &msg->prefix_hits);
        case FIELD_PREEMPTIONS:
            return s_read_uint64 (reader, &msg->preemptions);
        case FIELD_N:
            return s_read_limited_uint32 (reader, &msg->n, PROTO_MAX_N);
        case FIELD_INDEX:
            return s_read_limited_uint32 (reader, &msg->index, PROTO_MAX_N - 1);
        case FIELD_ONLY_INDEX:
            return s_read_bool (reader, &msg->only_index);
        case FIELD_BEST_OF:
            return s_read_limited_uint32 (reader, &msg->best_of, PROTO_MAX_N);
        case FIELD_ADD_SPECIAL_TOKENS:
            return s_read_bool (reader, &msg->add_special_tokens);
        case FIELD_WANT_LOGPROBS:
            return s_read_bool (reader, &msg->want_logprobs);
        case FIELD_LOGPROB:
            return s_read_float (reader, &msg->logprob);
        case FIELD_TOP:
            return s_read_pairs (reader, &msg->top_tokens, &msg->top_logprobs, &msg->n_top,
                                 PROTO_MAX_LOGPROBS);
        case FIELD_LOGPROBS:
            return s_read_optional_text (reader, &msg->logprobs);
        case FIELD_USE_BEAM_SEARCH:
            return s_read_bool (reader, &msg->use_beam_search);
        case FIELD_LENGTH_PENALTY:
            return s_read_float (reader, &msg->length_penalty);
        case FIELD_EARLY_STOPPING: {
            uint32_t value;
            if (s_read_limited_uint32 (reader, &value, PROTO_EARLY_STOPPING_NEVER) != 0)
                return -1;
            msg->early_stopping = (proto_early_stopping_t) value;
            return 0;
        }
        case FIELD_INCLUDE_STOP_STR_IN_OUTPUT:
            return s_read_bool (reader, &msg->include_stop_str_in_output);
        case FIELD_KEEP_SPECIAL_TOKENS:
            return s_read_bool (reader, &msg->keep_special_tokens);
        case FIELD_QUEUE_US:
            return s_read_uint64 (reader, &msg->queue_us);
        default:
            s_fail (reader, "no decoder for this field");
            return -1;
    }
}

//  The whole frame: [kind, {fields}] and nothing after it.
static int
s_read_message (s_reader_t *reader, proto_msg_t *msg)
{
    uint8_t byte;
    if (s_peek (reader, &byte) != 0)
        return -1;
    if (!((byte >= 0x90 && byte <= 0x9f) || byte == 0xdc || byte == 0xdd)) {
        s_fail (reader, "expected an array [kind, fields], got %s", s_type_name (byte));
        return -1;
    }
    uint32_t count;
    if (s_read_array_header (reader, UINT32_MAX, &count) != 0)
        return -1;
    if (count != 2) {
        s_fail (reader, "expected an array of 2 elements [kind, fields], got %" PRIu32,
                count);
        return -1;
    }
    if (s_peek (reader, &byte) != 0)
        return -1;
    if (!(byte <= 0x7f || byte >= 0xe0 || (byte >= 0xcc && byte <= 0xd3))) {
        s_fail (reader, "the kind is %s, not a positive integer", s_type_name (byte));
        return -1;
    }
    uint64_t unsigned_kind = 0;
    int64_t negative_kind = 0;
    bool is_negative;
    if (s_read_integer (reader, &unsigned_kind, &negative_kind, &is_negative) != 0)
        return -1;
    if (is_negative) {
        s_fail (reader, "unknown kind %" PRId64, negative_kind);
        return -1;
    }
    const s_kind_t *kind = unsigned_kind < PROTO_KIND_COUNT
                         ? s_kind_info ((int64_t) unsigned_kind): NULL;
    if (!kind) {
        s_fail (reader, "unknown kind %" PRIu64, unsigned_kind);
        return -1;
    }
    msg->kind = (proto_kind_t) unsigned_kind;
    reader->kind_name = kind->name;

    if (s_peek (reader, &byte) != 0)
        return -1;
    if (!((byte >= 0x80 && byte <= 0x8f) || byte == 0xde || byte == 0xdf)) {
        s_fail (reader, "expected a map of fields, got %s", s_type_name (byte));
        return -1;
    }
    uint32_t n_entries;
    if (s_read_map_header (reader, &n_entries) != 0)
        return -1;

    bool seen [S_MAX_KIND_FIELDS] = { false };
    for (uint32_t entry = 0; entry < n_entries; entry++) {
        if (s_peek (reader, &byte) != 0)
            return -1;
        if (!((byte >= 0xa0 && byte <= 0xbf) || (byte >= 0xd9 && byte <= 0xdb))) {
            s_fail (reader, "field name %" PRIu32 " is %s, not a string",
                    entry, s_type_name (byte));
            return -1;
        }
        const uint8_t *name;
        size_t name_length;
        if (s_read_string (reader, &name, &name_length) != 0)
            return -1;

        //  Which of this kind's fields is it?
        size_t which = kind->n_fields;
        for (size_t index = 0; index < kind->n_fields; index++)
            if (s_key_is (name, name_length, s_field_names [kind->fields [index].field])) {
                which = index;
                break;
            }
        if (which == kind->n_fields) {
            //  A field this kind does not use: a newer peer's, skipped
            if (s_skip_value (reader, 2) != 0)
                return -1;
            continue;
        }
        s_field_t field = kind->fields [which].field;
        reader->field = s_field_names [field];
        reader->index = -1;
        reader->member = NULL;
        reader->submember = NULL;
        reader->member_index = -1;
        if (seen [which])
            return s_fail_duplicate (reader);
        seen [which] = true;
        if (s_read_field (reader, msg, field) != 0)
            return -1;
        reader->field = NULL;
    }
    for (size_t index = 0; index < kind->n_fields; index++) {
        if (kind->fields [index].required && !seen [index]) {
            reader->field = s_field_names [kind->fields [index].field];
            s_fail (reader, "required but missing");
            return -1;
        }
    }
    if (s_remaining (reader) > 0) {
        s_fail (reader, "%zu bytes of trailing garbage after the message",
                s_remaining (reader));
        return -1;
    }
    //  A kind that carries text always has some, possibly empty
    for (size_t index = 0; index < kind->n_fields; index++) {
        if (kind->fields [index].field == FIELD_TEXT && !msg->text) {
            msg->text = strdup ("");
            if (!msg->text) {
                s_fail (reader, "out of memory");
                return -1;
            }
        }
    }
    return 0;
}

int
proto_decode (const void *data, size_t size, proto_msg_t *msg, char *err, size_t err_size)
{
    if (err && err_size > 0)
        err [0] = 0;
    s_reader_t reader = {
        .data = (const uint8_t *) data,
        .size = size,
        .offset = 0,
        .kind_name = "frame",
        .field = NULL,
        .index = -1,
        .member = NULL,
        .submember = NULL,
        .member_index = -1,
        .err = err,
        .err_size = err_size
    };
    if (!msg) {
        s_fail (&reader, "no message to decode into");
        return -1;
    }
    memset (msg, 0, sizeof (*msg));
    if (size == 0) {
        s_fail (&reader, "empty");
        return -1;
    }
    if (!data) {
        s_fail (&reader, "no data");
        return -1;
    }
    if (size > PROTO_MAX_FRAME_BYTES) {
        s_fail (&reader, "%zu bytes is over the limit of %u bytes",
                size, PROTO_MAX_FRAME_BYTES);
        return -1;
    }
    if (s_read_message (&reader, msg) != 0) {
        proto_msg_reset (msg);
        return -1;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Sending and receiving

int
proto_send (const proto_msg_t *msg, zsock_t *socket)
{
    if (!msg || !socket) {
        errno = EINVAL;
        return -1;
    }
    zframe_t *frame = proto_encode (msg);
    if (!frame) {
        errno = EINVAL;
        return -1;
    }
    if (zframe_send (&frame, socket, 0) != 0) {
        int saved_errno = errno;
        zframe_destroy (&frame);        //  if zframe_send did not
        errno = saved_errno;
        return -1;
    }
    return 0;
}

int
proto_send_to (const proto_msg_t *msg, zsock_t *router, zframe_t *routing_id)
{
    if (!msg || !router || !routing_id) {
        errno = EINVAL;
        return -1;
    }
    zframe_t *frame = proto_encode (msg);
    if (!frame) {
        errno = EINVAL;
        return -1;
    }
    //  The routing id stays the caller's: send it with REUSE
    zframe_t *address = routing_id;
    if (zframe_send (&address, router, ZFRAME_MORE | ZFRAME_REUSE) != 0
    ||  zframe_send (&frame, router, 0) != 0) {
        int saved_errno = errno;
        zframe_destroy (&frame);
        errno = saved_errno;
        return -1;
    }
    return 0;
}

//  Read and drop what is left of a multi-frame message; returns how many frames.
static size_t
s_drain (zsock_t *socket)
{
    size_t dropped = 0;
    while (zsock_rcvmore (socket)) {
        zframe_t *frame = zframe_recv (socket);
        if (!frame)
            break;
        zframe_destroy (&frame);
        dropped++;
    }
    return dropped;
}

static void
s_recv_fail (char *err, size_t err_size, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_recv_fail (char *err, size_t err_size, const char *format, ...)
{
    if (!err || err_size == 0)
        return;
    va_list args;
    va_start (args, format);
    vsnprintf (err, err_size, format, args);
    va_end (args);
}

int
proto_recv (zsock_t *socket, proto_msg_t *msg, zframe_t **routing_id,
            char *err, size_t err_size)
{
    if (err && err_size > 0)
        err [0] = 0;
    if (routing_id)
        *routing_id = NULL;
    if (!msg || !socket) {
        s_recv_fail (err, err_size, "proto_recv: no socket or no message");
        return -1;
    }
    memset (msg, 0, sizeof (*msg));

    if (routing_id) {
        *routing_id = zframe_recv (socket);
        if (!*routing_id) {
            s_recv_fail (err, err_size, "nothing received (interrupted or timed out)");
            return -1;
        }
        if (!zframe_more (*routing_id)) {
            s_recv_fail (err, err_size, "message has a routing id but no body");
            return -1;
        }
    }
    zframe_t *body = zframe_recv (socket);
    if (!body) {
        s_recv_fail (err, err_size, "nothing received (interrupted or timed out)");
        s_drain (socket);
        return -1;
    }
    if (zframe_more (body)) {
        size_t extra = s_drain (socket);
        zframe_destroy (&body);
        s_recv_fail (err, err_size,
                     "message has %zu frames after the body, expected none", extra);
        return -1;
    }
    int rc = proto_decode (zframe_data (body), zframe_size (body), msg, err, err_size);
    zframe_destroy (&body);
    return rc;
}
