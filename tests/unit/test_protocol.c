/*  test_protocol — unit tests of protocol/ (protocol.h), PROTO_VERSION 2.

    Round trips of every kind with edge values (sampling with logit_bias, STEP with block
    copies, frees, block tables and nested sampling, STEP_RESULT with top
    log-probabilities), the wire form checked with msgpack-c, the decoder's refusals
    (truncation, garbage, bit flips, wrong types, limits, lying headers, trailing bytes,
    out of memory at every allocation) with their error paths, proto_sampling_copy and
    proto_sampling_reset, and send / receive over a real inproc DEALER <-> ROUTER pair,
    malformed messages included.

    Run it under valgrind too: every refusal must leave nothing allocated. The tests of
    allocation failures need this executable's malloc (below), which memcheck replaces
    by default; they skip themselves then. To check their error paths for leaks, run
    valgrind --leak-check=full --soname-synonyms=somalloc=nouserintercepts.
*/

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "protocol.h"

//  --------------------------------------------------------------------------
//  Allocation failures on demand
//
//  This executable's malloc and calloc stand in for the C library's (glibc lets a
//  program replace them; the protocol library is linked into this executable, so its
//  calls, strdup's included, come here). They pass every call on to the next malloc in
//  line (the C library's, or the one of ASan or valgrind), except that when a test sets
//  s_fail_countdown to n, the n-th allocation after that made on the test's own thread
//  fails, once. Other threads (ZeroMQ's) are never affected.

static _Thread_local volatile unsigned s_fail_countdown = 0;
static void *(*s_next_malloc) (size_t) = NULL;

static bool
s_fail_this_allocation (void)
{
    if (s_fail_countdown == 0)
        return false;
    s_fail_countdown = s_fail_countdown - 1;
    return s_fail_countdown == 0;
}

//  Through a function pointer, so that the compiler does not see a malloc it could
//  turn into calloc (calloc below would then call itself).
static void *
s_allocate (size_t size)
{
    if (s_fail_this_allocation ()) {
        errno = ENOMEM;
        return NULL;
    }
    if (!s_next_malloc) {
        void *symbol = dlsym (RTLD_NEXT, "malloc");
        memcpy (&s_next_malloc, &symbol, sizeof (symbol));
    }
    return s_next_malloc (size);
}

void *
malloc (size_t size)
{
    return s_allocate (size);
}

void *
calloc (size_t count, size_t size)
{
    if (size > 0 && count > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    void *memory = s_allocate (count * size);
    if (memory)
        memset (memory, 0, count * size);
    return memory;
}

//  True when the allocations of this executable's malloc can be made to fail. Under
//  valgrind they cannot: memcheck puts its own malloc in place of this one, and its own
//  strdup, unless run with --soname-synonyms=somalloc=nouserintercepts (then malloc
//  and calloc are these, strdup still memcheck's).
static bool
s_malloc_failures_work (void)
{
    void *(*volatile allocate) (size_t) = malloc;
    s_fail_countdown = 1;
    void *memory = allocate (16);
    s_fail_countdown = 0;
    free (memory);
    return memory == NULL;
}

static bool
s_strdup_failures_work (void)
{
    char *(*volatile duplicate) (const char *) = strdup;
    s_fail_countdown = 1;
    char *copy = duplicate ("x");
    s_fail_countdown = 0;
    free (copy);
    return copy == NULL;
}

//  Skip the calling test when allocations cannot be made to fail.
#define S_SKIP_UNLESS_MALLOC_FAILURES_WORK() \
    do { \
        if (!s_malloc_failures_work ()) { \
            print_message ("# skipped: this malloc is not in use (under valgrind, " \
                           "run with --soname-synonyms=somalloc=nouserintercepts)\n"); \
            skip (); \
        } \
    } while (0)


//  --------------------------------------------------------------------------
//  Helpers

//  A small seeded generator (xorshift64*), so that failures can be replayed.
static uint64_t s_rng_state = 0x9e3779b97f4a7c15ull;

static void
s_rng_seed (uint64_t seed)
{
    s_rng_state = seed ? seed : 1;
}

static uint64_t
s_rng_next (void)
{
    s_rng_state ^= s_rng_state >> 12;
    s_rng_state ^= s_rng_state << 25;
    s_rng_state ^= s_rng_state >> 27;
    return s_rng_state * 2685821657736338717ull;
}

static uint32_t
s_rng_below (uint32_t limit)
{
    return (uint32_t) (s_rng_next () % limit);
}

//  True when every byte of msg is zero (what a failed decode must leave).
static bool
s_msg_is_zero (const proto_msg_t *msg)
{
    proto_msg_t zero;
    memset (&zero, 0, sizeof (zero));
    return memcmp (msg, &zero, sizeof (zero)) == 0;
}

static bool
s_sampling_is_zero (const proto_sampling_t *sampling)
{
    proto_sampling_t zero;
    memset (&zero, 0, sizeof (zero));
    return memcmp (sampling, &zero, sizeof (zero)) == 0;
}

//  The same bits (so NaN equals NaN and -0 differs from 0).
static bool
s_float_same (float a, float b)
{
    return memcmp (&a, &b, sizeof (float)) == 0;
}

//  Heap copies of arrays, for the fields that proto_msg_reset frees (NULL for none).
static uint32_t *
s_copy_ids (const uint32_t *ids, uint32_t n)
{
    if (n == 0)
        return NULL;
    uint32_t *copy = (uint32_t *) malloc ((size_t) n * sizeof (uint32_t));
    assert_non_null (copy);
    memcpy (copy, ids, (size_t) n * sizeof (uint32_t));
    return copy;
}

static float *
s_copy_floats (const float *values, uint32_t n)
{
    if (n == 0)
        return NULL;
    float *copy = (float *) malloc ((size_t) n * sizeof (float));
    assert_non_null (copy);
    memcpy (copy, values, (size_t) n * sizeof (float));
    return copy;
}

static void
s_assert_tokens_equal (const uint32_t *a, uint32_t n_a, const uint32_t *b, uint32_t n_b)
{
    assert_int_equal (n_a, n_b);
    if (n_a > 0) {
        assert_non_null (a);
        assert_non_null (b);
        assert_memory_equal (a, b, (size_t) n_a * sizeof (uint32_t));
    }
}

static void
s_assert_floats_equal (const float *a, const float *b, uint32_t n)
{
    if (n > 0) {
        assert_non_null (a);
        assert_non_null (b);
        for (uint32_t index = 0; index < n; index++)
            assert_true (s_float_same (a [index], b [index]));
    }
}

static void
s_assert_text_equal (const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        assert_true (a == b);
    else
        assert_string_equal (a, b);
}

//  Every member of two samplings, logit_bias included.
static void
s_assert_sampling_equal (const proto_sampling_t *a, const proto_sampling_t *b)
{
    assert_true (s_float_same (a->temperature, b->temperature));
    assert_int_equal (a->top_k, b->top_k);
    assert_true (s_float_same (a->top_p, b->top_p));
    assert_true (s_float_same (a->min_p, b->min_p));
    assert_true (s_float_same (a->presence_penalty, b->presence_penalty));
    assert_true (s_float_same (a->frequency_penalty, b->frequency_penalty));
    assert_true (s_float_same (a->repetition_penalty, b->repetition_penalty));
    assert_true (a->seed == b->seed);
    assert_int_equal (a->min_tokens, b->min_tokens);
    assert_int_equal (a->n_logprobs, b->n_logprobs);
    assert_int_equal (a->beam_candidates, b->beam_candidates);
    s_assert_tokens_equal (a->bias_tokens, a->n_bias, b->bias_tokens, b->n_bias);
    s_assert_floats_equal (a->bias_values, b->bias_values, a->n_bias);
}

static void
s_assert_seq_equal (const proto_step_seq_t *a, const proto_step_seq_t *b)
{
    assert_true (a->seq_id == b->seq_id);
    assert_int_equal (a->pos, b->pos);
    s_assert_tokens_equal (a->tokens, a->n_tokens, b->tokens, b->n_tokens);
    s_assert_tokens_equal (a->blocks, a->n_blocks, b->blocks, b->n_blocks);
    assert_int_equal (a->n_prompt, b->n_prompt);
    assert_int_equal (a->first, b->first);
    assert_int_equal (a->sample, b->sample);
    s_assert_sampling_equal (&a->sampling, &b->sampling);
    s_assert_tokens_equal (a->masked_tokens, a->n_masked, b->masked_tokens, b->n_masked);
    s_assert_tokens_equal (a->history, a->n_history, b->history, b->n_history);
}

static void
s_assert_out_equal (const proto_step_out_t *a, const proto_step_out_t *b)
{
    assert_true (a->seq_id == b->seq_id);
    assert_int_equal (a->token, b->token);
    assert_true (s_float_same (a->logprob, b->logprob));
    s_assert_tokens_equal (a->top_tokens, a->n_top, b->top_tokens, b->n_top);
    s_assert_floats_equal (a->top_logprobs, b->top_logprobs, a->n_top);
}

//  Compare every field of two messages.
static void
s_assert_msg_equal (const proto_msg_t *a, const proto_msg_t *b)
{
    assert_int_equal (a->kind, b->kind);
    assert_true (a->request_id == b->request_id);
    s_assert_text_equal (a->text, b->text);
    s_assert_text_equal (a->chat, b->chat);
    assert_int_equal (a->n_stops, b->n_stops);
    for (uint32_t index = 0; index < a->n_stops; index++)
        assert_string_equal (a->stops [index], b->stops [index]);
    s_assert_text_equal (a->tool_calls, b->tool_calls);
    assert_int_equal (a->max_tokens, b->max_tokens);
    s_assert_sampling_equal (&a->sampling, &b->sampling);
    assert_int_equal (a->ignore_eos, b->ignore_eos);
    assert_int_equal (a->finish, b->finish);
    assert_int_equal (a->prompt_tokens, b->prompt_tokens);
    assert_int_equal (a->completion_tokens, b->completion_tokens);
    assert_int_equal (a->status, b->status);
    s_assert_tokens_equal (a->tokens, a->n_tokens, b->tokens, b->n_tokens);
    s_assert_tokens_equal (a->stop_tokens, a->n_stop_tokens,
                           b->stop_tokens, b->n_stop_tokens);
    assert_int_equal (a->version, b->version);
    assert_true (a->fingerprint == b->fingerprint);
    assert_int_equal (a->n, b->n);
    assert_int_equal (a->best_of, b->best_of);
    assert_int_equal (a->index, b->index);
    assert_true (a->only_index == b->only_index);
    assert_true (a->add_special_tokens == b->add_special_tokens);
    assert_true (a->want_logprobs == b->want_logprobs);
    assert_true (a->use_beam_search == b->use_beam_search);
    assert_true (s_float_same (a->length_penalty, b->length_penalty));
    assert_int_equal (a->early_stopping, b->early_stopping);
    assert_true (a->include_stop_str_in_output == b->include_stop_str_in_output);
    assert_true (a->keep_special_tokens == b->keep_special_tokens);
    assert_true (a->queue_us == b->queue_us);
    assert_true (s_float_same (a->logprob, b->logprob));
    s_assert_tokens_equal (a->top_tokens, a->n_top, b->top_tokens, b->n_top);
    s_assert_floats_equal (a->top_logprobs, b->top_logprobs, a->n_top);
    s_assert_text_equal (a->logprobs, b->logprobs);
    assert_int_equal (a->n_ctx, b->n_ctx);
    assert_int_equal (a->n_blocks, b->n_blocks);
    assert_int_equal (a->block_size, b->block_size);
    assert_int_equal (a->n_vocab, b->n_vocab);
    assert_true (a->step_id == b->step_id);
    assert_int_equal (a->n_copies, b->n_copies);
    if (a->n_copies > 0)
        s_assert_tokens_equal (a->copies, 2 * a->n_copies, b->copies, 2 * b->n_copies);
    assert_int_equal (a->n_frees, b->n_frees);
    if (a->n_frees > 0) {
        assert_non_null (a->frees);
        assert_non_null (b->frees);
        assert_memory_equal (a->frees, b->frees, (size_t) a->n_frees * sizeof (uint64_t));
    }
    assert_int_equal (a->n_seqs, b->n_seqs);
    for (uint32_t index = 0; index < a->n_seqs; index++)
        s_assert_seq_equal (&a->seqs [index], &b->seqs [index]);
    assert_int_equal (a->n_outs, b->n_outs);
    for (uint32_t index = 0; index < a->n_outs; index++)
        s_assert_out_equal (&a->outs [index], &b->outs [index]);
    assert_int_equal (a->workers, b->workers);
    assert_int_equal (a->running, b->running);
    assert_int_equal (a->waiting, b->waiting);
    assert_int_equal (a->kv_blocks_used, b->kv_blocks_used);
    assert_int_equal (a->kv_blocks_total, b->kv_blocks_total);
    assert_true (a->prefix_queries == b->prefix_queries);
    assert_true (a->prefix_hits == b->prefix_hits);
    assert_true (a->preemptions == b->preemptions);
}

//  msgpack-c's own parser must read the frame as one complete value [kind, {map}].
//  Only called on frames we wrote or accepted (those have no lying headers, so
//  msgpack-c's allocations stay small).
static void
s_assert_msgpack_agrees (const void *data, size_t size)
{
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    size_t offset = 0;
    msgpack_unpack_return rc = msgpack_unpack_next (&unpacked, (const char *) data,
                                                    size, &offset);
    assert_int_equal (rc, MSGPACK_UNPACK_SUCCESS);
    assert_int_equal (offset, size);
    msgpack_object root = unpacked.data;
    assert_int_equal (root.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal (root.via.array.size, 2);
    assert_int_equal (root.via.array.ptr [0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal (root.via.array.ptr [1].type, MSGPACK_OBJECT_MAP);
    msgpack_unpacked_destroy (&unpacked);
}

//  Encode, check the bytes with msgpack-c, decode, compare.
static void
s_round_trip (const proto_msg_t *in)
{
    zframe_t *frame = proto_encode (in);
    assert_non_null (frame);
    s_assert_msgpack_agrees (zframe_data (frame), zframe_size (frame));
    proto_msg_t out;
    char err [256] = "unchanged";
    int rc = proto_decode (zframe_data (frame), zframe_size (frame), &out,
                           err, sizeof (err));
    if (rc != 0)
        fail_msg ("decode of a %s failed: %s", proto_kind_name (in->kind), err);
    assert_string_equal (err, "");
    s_assert_msg_equal (in, &out);
    proto_msg_reset (&out);
    zframe_destroy (&frame);
}

//  Decode must fail with an error containing expected, leaving msg zeroed.
static void
s_expect_error (const void *data, size_t size, const char *expected)
{
    proto_msg_t msg;
    memset (&msg, 0xa5, sizeof (msg));     //  decode must not trust what is there
    char err [512] = "";
    int rc = proto_decode (data, size, &msg, err, sizeof (err));
    if (rc != -1)
        fail_msg ("decode succeeded, expected an error with '%s'", expected);
    assert_true (s_msg_is_zero (&msg));
    if (!strstr (err, expected))
        fail_msg ("error '%s' does not say '%s'", err, expected);
}


//  --------------------------------------------------------------------------
//  A msgpack writer for hand-made frames, malformed ones included

typedef struct {
    msgpack_sbuffer buffer;
    msgpack_packer packer;
} s_writer_t;

static void
s_writer_init (s_writer_t *writer)
{
    msgpack_sbuffer_init (&writer->buffer);
    msgpack_packer_init (&writer->packer, &writer->buffer, msgpack_sbuffer_write);
}

static void
s_writer_destroy (s_writer_t *writer)
{
    msgpack_sbuffer_destroy (&writer->buffer);
}

static void
s_writer_key (s_writer_t *writer, const char *key)
{
    msgpack_pack_str_with_body (&writer->packer, key, strlen (key));
}

//  key: an unsigned integer
static void
s_writer_uint (s_writer_t *writer, const char *key, uint64_t value)
{
    s_writer_key (writer, key);
    msgpack_pack_uint64 (&writer->packer, value);
}

//  key: a float32
static void
s_writer_float (s_writer_t *writer, const char *key, float value)
{
    s_writer_key (writer, key);
    msgpack_pack_float (&writer->packer, value);
}

//  Bytes as they are, for what msgpack-c would not write.
static void
s_writer_raw (s_writer_t *writer, const char *bytes, size_t size)
{
    msgpack_sbuffer_write (&writer->buffer, bytes, size);
}

//  A pair [token, value], as logit_bias and top hold them.
static void
s_writer_pair (s_writer_t *writer, uint32_t token, float value)
{
    msgpack_pack_array (&writer->packer, 2);
    msgpack_pack_uint32 (&writer->packer, token);
    msgpack_pack_float (&writer->packer, value);
}

//  Start [kind, {n_fields entries ...
static void
s_writer_start (s_writer_t *writer, uint32_t kind, uint32_t n_fields)
{
    s_writer_init (writer);
    msgpack_pack_array (&writer->packer, 2);
    msgpack_pack_uint32 (&writer->packer, kind);
    msgpack_pack_map (&writer->packer, n_fields);
}

//  Start [GENERATE, {request_id: 1, and n_more fields that the caller writes
static void
s_writer_start_generate (s_writer_t *writer, uint32_t n_more)
{
    s_writer_start (writer, PROTO_GENERATE, 1 + n_more);
    s_writer_uint (writer, "request_id", 1);
}

//  Start [STEP, {step_id: 1, seqs: [ and the n_seqs maps that the caller writes
static void
s_writer_start_step (s_writer_t *writer, uint32_t n_seqs)
{
    s_writer_start (writer, PROTO_STEP, 2);
    s_writer_uint (writer, "step_id", 1);
    s_writer_key (writer, "seqs");
    msgpack_pack_array (&writer->packer, n_seqs);
}

//  Start one seq: a map of n_members, of which this writes the three required ones
//  (seq_id, pos 0, tokens [1]); the caller writes the others.
static void
s_writer_start_seq (s_writer_t *writer, uint32_t n_members, uint64_t seq_id)
{
    msgpack_pack_map (&writer->packer, n_members);
    s_writer_uint (writer, "seq_id", seq_id);
    s_writer_uint (writer, "pos", 0);
    s_writer_key (writer, "tokens");
    msgpack_pack_array (&writer->packer, 1);
    msgpack_pack_uint32 (&writer->packer, 1);
}

//  Start [STEP_RESULT, {step_id: 1, outs: [ and the n_outs maps that the caller writes
static void
s_writer_start_step_result (s_writer_t *writer, uint32_t n_outs)
{
    s_writer_start (writer, PROTO_STEP_RESULT, 2);
    s_writer_uint (writer, "step_id", 1);
    s_writer_key (writer, "outs");
    msgpack_pack_array (&writer->packer, n_outs);
}

//  Start one out: a map of n_members, of which this writes the three required ones
//  (seq_id, token 5, logprob -1); the caller writes the others.
static void
s_writer_start_out (s_writer_t *writer, uint32_t n_members, uint64_t seq_id)
{
    msgpack_pack_map (&writer->packer, n_members);
    s_writer_uint (writer, "seq_id", seq_id);
    s_writer_uint (writer, "token", 5);
    s_writer_float (writer, "logprob", -1.0f);
}

static void
s_writer_expect_error (s_writer_t *writer, const char *expected)
{
    s_expect_error (writer->buffer.data, writer->buffer.size, expected);
    s_writer_destroy (writer);
}

//  Decode must succeed; the caller checks and resets msg.
static void
s_writer_expect_ok (s_writer_t *writer, proto_msg_t *msg)
{
    char err [512] = "";
    int rc = proto_decode (writer->buffer.data, writer->buffer.size, msg,
                           err, sizeof (err));
    if (rc != 0)
        fail_msg ("decode failed: %s", err);
    s_writer_destroy (writer);
}


//  --------------------------------------------------------------------------
//  Sample messages

static const char *s_utf8_text =
    "Héllo, wörld! Ünïcödé: 日本語のテキスト, emoji 🦙🚀, "
    "right-to-left שלום, combining e\xcc\x81, and control bytes \x01\x7f\t\n.";

static const uint32_t s_some_tokens [] = { 1, 15043, 0, 127, 128, 255, 256, 65535,
                                           65536, 4294967295u, 32000, 2 };
#define S_N_SOME ((uint32_t) (sizeof (s_some_tokens) / sizeof (s_some_tokens [0])))

//  Fill sampling with every member set. variant 0: ordinary values and 3 logit_bias
//  entries; variant 1: the edges (largest numbers, infinities, NaN, a denormal, 6
//  entries); variant 2: all zero (greedy), no logit_bias.
static void
s_fill_sampling (proto_sampling_t *sampling, int variant)
{
    memset (sampling, 0, sizeof (*sampling));
    if (variant == 0) {
        static const uint32_t tokens [] = { 15043, 0, 4294967295u };
        static const float values [] = { -100.0f, 5.5f, -0.0f };
        sampling->temperature = 0.7f;
        sampling->top_k = 40;
        sampling->top_p = 0.9f;
        sampling->min_p = 0.05f;
        sampling->presence_penalty = 0.5f;
        sampling->frequency_penalty = -0.25f;
        sampling->repetition_penalty = 1.1f;
        sampling->seed = 0x0123456789abcdefull;
        sampling->min_tokens = 3;
        sampling->n_logprobs = 5;
        sampling->beam_candidates = 8;
        sampling->n_bias = 3;
        sampling->bias_tokens = s_copy_ids (tokens, 3);
        sampling->bias_values = s_copy_floats (values, 3);
    }
    else
    if (variant == 1) {
        static const uint32_t tokens [] = { 0, 4294967295u, 127, 128, 65536, 1 };
        const float values [] = { -INFINITY, INFINITY, NAN, FLT_MIN / 4, -FLT_MAX,
                                  FLT_MAX };
        sampling->temperature = FLT_MAX;
        sampling->top_k = UINT32_MAX;
        sampling->top_p = FLT_MIN / 4;          //  a denormal
        sampling->min_p = 1.0f;
        sampling->presence_penalty = -FLT_MAX;
        sampling->frequency_penalty = INFINITY;
        sampling->repetition_penalty = NAN;
        sampling->seed = UINT64_MAX;
        sampling->min_tokens = UINT32_MAX;
        sampling->n_logprobs = PROTO_MAX_LOGPROBS;
        sampling->beam_candidates = UINT32_MAX;
        sampling->n_bias = 6;
        sampling->bias_tokens = s_copy_ids (tokens, 6);
        sampling->bias_values = s_copy_floats (values, 6);
    }
}

//  Fill msg with sample values for kind. variant 0: ordinary non-trivial values;
//  variant 1: the edges (all ones, long UTF-8 text, the most top log-probabilities);
//  variant 2: zeros and empties.
static void
s_fill_sample (proto_msg_t *msg, proto_kind_t kind, int variant)
{
    memset (msg, 0, sizeof (*msg));
    msg->kind = kind;
    const char *text = variant == 0 ? "Once upon a time"
                     : variant == 1 ? s_utf8_text : "";
    uint32_t u32 = variant == 0 ? 1234567 : variant == 1 ? UINT32_MAX : 0;
    uint64_t u64 = variant == 0 ? 0x0123456789abcdefull
                 : variant == 1 ? UINT64_MAX : 0;
    uint32_t n_tokens = variant == 2 ? 0 : S_N_SOME;

    switch (kind) {
        case PROTO_GENERATE: {
            msg->request_id = u64;
            assert_int_equal (proto_msg_set_text (msg, text), 0);
            if (variant != 2)
                assert_int_equal (proto_msg_set_chat (msg, variant == 0
                    ? "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}"
                    : s_utf8_text), 0);
            msg->max_tokens = u32;
            s_fill_sampling (&msg->sampling, variant);
            msg->ignore_eos = variant == 1;
            msg->n = variant == 0 ? 3 : variant == 1 ? PROTO_MAX_N : 0;
            msg->best_of = variant == 0 ? 5 : variant == 1 ? PROTO_MAX_N : 0;
            msg->want_logprobs = variant != 2;
            if (variant != 2)
                assert_int_equal (proto_msg_set_tokens (msg, s_some_tokens, n_tokens), 0);
            msg->use_beam_search = variant != 2;
            msg->length_penalty = variant == 0 ? 1.5f : variant == 1 ? -FLT_MAX : 0;
            msg->early_stopping = variant == 0 ? PROTO_EARLY_STOPPING_TRUE
                                : variant == 1 ? PROTO_EARLY_STOPPING_NEVER
                                : PROTO_EARLY_STOPPING_FALSE;
            msg->include_stop_str_in_output = variant == 0;
            msg->keep_special_tokens = variant == 1;
            const char *stops [3] = { "\n\n", s_utf8_text, "" };
            assert_int_equal (proto_msg_set_stops (msg, stops, variant == 2 ? 0 : 3), 0);
            assert_int_equal (proto_msg_set_stop_tokens (msg, s_some_tokens + 1,
                                                         variant == 2 ? 0 : 2), 0);
            break;
        }
        case PROTO_CANCEL:
            msg->request_id = u64;
            msg->index = variant == 0 ? 2 : variant == 1 ? PROTO_MAX_N - 1 : 0;
            msg->only_index = variant != 2;
            break;
        case PROTO_TOKENIZE:
            msg->request_id = u64;
            assert_int_equal (proto_msg_set_text (msg, text), 0);
            msg->add_special_tokens = variant != 2;
            break;
        case PROTO_DETOKENIZE:
            msg->request_id = u64;
            assert_int_equal (proto_msg_set_tokens (msg, s_some_tokens, n_tokens), 0);
            break;
        case PROTO_OUTPUT:
            msg->request_id = u64;
            msg->index = variant == 0 ? 1 : variant == 1 ? PROTO_MAX_N - 1 : 0;
            if (variant != 2) {
                msg->logprobs = strdup ("[{\"token\":\",\",\"logprob\":-0.5}]");
                assert_non_null (msg->logprobs);
            }
            assert_int_equal (proto_msg_set_text (msg, text), 0);
            msg->finish = variant == 0 ? PROTO_FINISH_STOP
                        : variant == 1 ? PROTO_FINISH_TOOL_CALLS : PROTO_FINISH_NONE;
            if (variant == 1)
                assert_int_equal (proto_msg_set_tool_calls (msg, "[{\"index\":0,\"id\":"
                    "\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
                    "\"arguments\":\"{}\"}}]"), 0);
            msg->prompt_tokens = u32;
            msg->completion_tokens = u32 / 3;
            msg->queue_us = u64;
            break;
        case PROTO_ERROR:
            msg->request_id = u64;
            msg->status = variant == 0 ? 400 : u32;
            assert_int_equal (proto_msg_set_text (msg, text), 0);
            break;
        case PROTO_SUBMIT:
            msg->request_id = u64;
            assert_int_equal (proto_msg_set_tokens (msg, s_some_tokens, n_tokens), 0);
            msg->max_tokens = u32;
            s_fill_sampling (&msg->sampling, variant);
            msg->n = variant == 0 ? 2 : variant == 1 ? PROTO_MAX_N : 0;
            msg->best_of = variant == 0 ? 4 : variant == 1 ? PROTO_MAX_N : 0;
            if (variant == 1)
                msg->sampling.temperature = FLT_MIN / 4;        //  denormal
            msg->use_beam_search = variant == 0;
            msg->length_penalty = variant == 0 ? 0.5f : variant == 1 ? INFINITY : 0;
            msg->early_stopping = variant == 1 ? PROTO_EARLY_STOPPING_NEVER
                                : PROTO_EARLY_STOPPING_FALSE;
            assert_int_equal (proto_msg_set_stop_tokens (msg, s_some_tokens + 3,
                                                         variant == 2 ? 0 : 2), 0);
            break;
        case PROTO_TOKENS:
            msg->request_id = u64;
            msg->index = variant == 0 ? 1 : variant == 1 ? PROTO_MAX_N - 1 : 0;
            msg->logprob = variant == 0 ? -0.25f : variant == 1 ? -INFINITY : 0;
            msg->n_top = variant == 0 ? 2 : variant == 1 ? PROTO_MAX_LOGPROBS : 0;
            if (msg->n_top) {
                msg->top_tokens = (uint32_t *) malloc (msg->n_top * sizeof (uint32_t));
                msg->top_logprobs = (float *) malloc (msg->n_top * sizeof (float));
                assert_non_null (msg->top_tokens);
                assert_non_null (msg->top_logprobs);
                for (uint32_t top = 0; top < msg->n_top; top++) {
                    msg->top_tokens [top] = s_some_tokens [top % S_N_SOME];
                    msg->top_logprobs [top] = -(float) top;
                }
            }
            assert_int_equal (proto_msg_set_tokens (msg, s_some_tokens, n_tokens), 0);
            msg->finish = variant == 1 ? PROTO_FINISH_STOP : PROTO_FINISH_NONE;
            msg->prompt_tokens = u32;
            msg->queue_us = u64;
            break;
        case PROTO_HELLO:
            msg->version = variant == 0 ? PROTO_VERSION : u32;
            assert_int_equal (proto_msg_set_text (msg, variant == 0 ? "cpu:0" : text), 0);
            msg->fingerprint = u64;
            msg->n_ctx = variant == 0 ? 2048 : u32;
            msg->n_blocks = variant == 0 ? 512 : u32;
            msg->block_size = variant == 0 ? 16 : u32;
            msg->n_vocab = variant == 0 ? 32000 : u32;
            break;
        case PROTO_REJECT:
            assert_int_equal (proto_msg_set_text (msg, variant == 0
                              ? "protocol version 1 is not 2" : text), 0);
            break;
        case PROTO_STEP:
            msg->step_id = u64;
            if (variant != 2) {
                //  3 copies (src, dst pairs), 2 frees
                static const uint32_t copies [] = { 3, 17, 0, 1, 4294967295u, 65536 };
                msg->n_copies = 3;
                msg->copies = s_copy_ids (copies, 6);
                msg->n_frees = 2;
                msg->frees = (uint64_t *) malloc (2 * sizeof (uint64_t));
                assert_non_null (msg->frees);
                msg->frees [0] = u64;
                msg->frees [1] = variant == 1 ? 0 : 99;
                //  seq 0 starts (first, with sampling and masked tokens), seq 1 has no
                //  tokens and does not sample, seq 2 continues and samples
                msg->n_seqs = 3;
                msg->seqs = (proto_step_seq_t *) calloc (3, sizeof (proto_step_seq_t));
                assert_non_null (msg->seqs);
                for (uint32_t index = 0; index < 3; index++) {
                    proto_step_seq_t *seq = &msg->seqs [index];
                    seq->seq_id = variant == 1 ? UINT64_MAX - index : 1000 + index;
                    seq->pos = variant == 1 ? UINT32_MAX : index * 100;
                    seq->n_tokens = index == 1 ? 0 : S_N_SOME - index;
                    seq->tokens = s_copy_ids (s_some_tokens + index, seq->n_tokens);
                    seq->n_blocks = index == 1 ? 0 : 1 + 2 * index;
                    seq->blocks = s_copy_ids (s_some_tokens + 5, seq->n_blocks);
                    seq->n_prompt = variant == 1 ? UINT32_MAX - index : index * 50;
                    seq->first = index == 0;
                    seq->sample = index != 1;
                    if (index == 0) {
                        s_fill_sampling (&seq->sampling, variant);
                        seq->n_masked = 2;
                        seq->masked_tokens = s_copy_ids (s_some_tokens + 8, 2);
                        seq->n_history = variant == 1 ? S_N_SOME : 3;
                        seq->history = s_copy_ids (s_some_tokens, seq->n_history);
                    }
                }
            }
            break;
        case PROTO_STEP_RESULT:
            msg->step_id = u64;
            assert_int_equal (proto_msg_set_text (msg, variant == 0 ? "" : text), 0);
            if (variant != 2) {
                static const float logprobs [] = { -0.0f, -1e-30f, -INFINITY, -FLT_MAX,
                                                   -12.5f };
                msg->n_outs = 5;
                msg->outs = (proto_step_out_t *) calloc (5, sizeof (proto_step_out_t));
                assert_non_null (msg->outs);
                for (uint32_t index = 0; index < 5; index++) {
                    proto_step_out_t *out = &msg->outs [index];
                    out->seq_id = variant == 1 ? UINT64_MAX - index : index;
                    out->token = s_some_tokens [index + 5];
                    out->logprob = logprobs [index];
                    //  out 1 has no top; the others 1 .. 4, or all 20 at the edges
                    out->n_top = index == 1 ? 0
                               : variant == 1 ? PROTO_MAX_LOGPROBS : index + 1;
                    if (out->n_top > 0) {
                        out->top_tokens = (uint32_t *) malloc (out->n_top * sizeof (uint32_t));
                        out->top_logprobs = (float *) malloc (out->n_top * sizeof (float));
                        assert_non_null (out->top_tokens);
                        assert_non_null (out->top_logprobs);
                        for (uint32_t top = 0; top < out->n_top; top++) {
                            out->top_tokens [top] = s_some_tokens [(top + index) % S_N_SOME];
                            out->top_logprobs [top] = logprobs [(top + index) % 5];
                        }
                    }
                }
                if (variant == 1) {
                    msg->outs [4].logprob = NAN;
                    msg->outs [4].top_logprobs [0] = NAN;
                }
            }
            break;
        case PROTO_STATUS:
            msg->workers = variant == 0 ? 2 : u32;
            msg->running = variant == 0 ? 31 : u32;
            msg->waiting = variant == 0 ? 7 : u32;
            msg->kv_blocks_used = variant == 0 ? 300 : u32;
            msg->kv_blocks_total = variant == 0 ? 1024 : u32;
            msg->prefix_queries = variant == 0 ? 5000000000ull : u64;
            msg->prefix_hits = variant == 0 ? 1234 : u64;
            msg->preemptions = variant == 0 ? 3 : u64;
            break;
        case PROTO_WELCOME:
        case PROTO_HEARTBEAT:
        case PROTO_BYE:
        default:
            break;
    }
}

//  The message's frame as msgpack-c sees it: fields is the map of [kind, fields].
//  Its strings point into the frame: the caller destroys unpacked, then the frame
//  that this returns.
static zframe_t *
s_unpack_fields (const proto_msg_t *msg, msgpack_unpacked *unpacked,
                 msgpack_object *fields)
{
    zframe_t *frame = proto_encode (msg);
    assert_non_null (frame);
    msgpack_unpacked_init (unpacked);
    size_t offset = 0;
    assert_int_equal (msgpack_unpack_next (unpacked, (const char *) zframe_data (frame),
                                           zframe_size (frame), &offset),
                      MSGPACK_UNPACK_SUCCESS);
    assert_int_equal (offset, zframe_size (frame));
    assert_int_equal (unpacked->data.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal (unpacked->data.via.array.size, 2);
    *fields = unpacked->data.via.array.ptr [1];
    assert_int_equal (fields->type, MSGPACK_OBJECT_MAP);
    return frame;
}

//  The value of key in a msgpack-c map, or NULL when the map has no such key.
static const msgpack_object *
s_map_get (const msgpack_object *map, const char *key)
{
    assert_int_equal (map->type, MSGPACK_OBJECT_MAP);
    for (uint32_t index = 0; index < map->via.map.size; index++) {
        const msgpack_object_kv *entry = &map->via.map.ptr [index];
        if (entry->key.type == MSGPACK_OBJECT_STR
        &&  entry->key.via.str.size == strlen (key)
        &&  memcmp (entry->key.via.str.ptr, key, strlen (key)) == 0)
            return &entry->val;
    }
    return NULL;
}

//  The value of key, which must be there with this msgpack type.
static const msgpack_object *
s_map_need (const msgpack_object *map, const char *key, msgpack_object_type type)
{
    const msgpack_object *value = s_map_get (map, key);
    if (!value)
        fail_msg ("no member '%s' on the wire", key);
    if (value->type != type)
        fail_msg ("member '%s' has msgpack type %d, not %d", key, value->type, type);
    return value;
}

static uint64_t
s_map_uint (const msgpack_object *map, const char *key)
{
    return s_map_need (map, key, MSGPACK_OBJECT_POSITIVE_INTEGER)->via.u64;
}

//  A float member, which must be written as a float32.
static double
s_map_float (const msgpack_object *map, const char *key)
{
    return s_map_need (map, key, MSGPACK_OBJECT_FLOAT32)->via.f64;
}


//  --------------------------------------------------------------------------
//  Names and setters

static void
test_names (void **state)
{
    (void) state;
    assert_string_equal (proto_kind_name (PROTO_GENERATE), "GENERATE");
    assert_string_equal (proto_kind_name (PROTO_STEP_RESULT), "STEP_RESULT");
    assert_string_equal (proto_kind_name (PROTO_STATUS), "STATUS");
    assert_string_equal (proto_kind_name ((proto_kind_t) 0), "UNKNOWN");
    assert_string_equal (proto_kind_name (PROTO_KIND_COUNT), "UNKNOWN");
    assert_string_equal (proto_kind_name ((proto_kind_t) -3), "UNKNOWN");
    for (int kind = 1; kind < PROTO_KIND_COUNT; kind++)
        assert_string_not_equal (proto_kind_name ((proto_kind_t) kind), "UNKNOWN");
    assert_null (proto_finish_name (PROTO_FINISH_NONE));
    assert_string_equal (proto_finish_name (PROTO_FINISH_STOP), "stop");
    assert_string_equal (proto_finish_name (PROTO_FINISH_LENGTH), "length");
    assert_string_equal (proto_finish_name (PROTO_FINISH_TOOL_CALLS), "tool_calls");
    assert_null (proto_finish_name ((proto_finish_t) 9));
}

static void
test_setters (void **state)
{
    (void) state;
    proto_msg_t msg = PROTO_MSG_INIT;
    assert_int_equal (proto_msg_set_text (&msg, "first"), 0);
    assert_int_equal (proto_msg_set_text (&msg, "second"), 0);
    assert_string_equal (msg.text, "second");
    assert_int_equal (proto_msg_set_text (&msg, msg.text), 0);    //  itself
    assert_string_equal (msg.text, "second");
    assert_int_equal (proto_msg_set_text (&msg, NULL), 0);
    assert_null (msg.text);

    const uint32_t tokens [] = { 5, 6, 7 };
    assert_int_equal (proto_msg_set_tokens (&msg, tokens, 3), 0);
    assert_int_equal (msg.n_tokens, 3);
    assert_memory_equal (msg.tokens, tokens, sizeof (tokens));
    assert_int_equal (proto_msg_set_tokens (&msg, msg.tokens + 1, 2), 0); //  its own
    assert_int_equal (msg.n_tokens, 2);
    assert_int_equal (msg.tokens [0], 6);
    assert_int_equal (msg.tokens [1], 7);
    assert_int_equal (proto_msg_set_tokens (&msg, NULL, 0), 0);
    assert_null (msg.tokens);
    assert_int_equal (msg.n_tokens, 0);
    assert_int_equal (proto_msg_set_tokens (&msg, NULL, 4), -1);
    assert_int_equal (proto_msg_set_stop_tokens (&msg, tokens, 2), 0);
    assert_int_equal (msg.n_stop_tokens, 2);
    assert_int_equal (msg.stop_tokens [1], 6);
    assert_int_equal (proto_msg_set_text (NULL, "x"), -1);
    assert_int_equal (proto_msg_set_tokens (NULL, tokens, 1), -1);

    const char *stops [] = { "a", "", "ccc" };
    assert_int_equal (proto_msg_set_stops (&msg, stops, 3), 0);
    assert_int_equal (msg.n_stops, 3);
    assert_string_equal (msg.stops [2], "ccc");
    assert_true (msg.stops [0] != stops [0]);                       //  copies
    assert_int_equal (proto_msg_set_stops (&msg, stops + 1, 1), 0); //  replaces
    assert_int_equal (msg.n_stops, 1);
    assert_string_equal (msg.stops [0], "");
    const char *with_null [] = { "a", NULL };
    assert_int_equal (proto_msg_set_stops (&msg, with_null, 2), -1);
    assert_int_equal (msg.n_stops, 1);                              //  unchanged
    assert_int_equal (proto_msg_set_stops (&msg, NULL, 1), -1);
    assert_int_equal (proto_msg_set_chat (&msg, "{}"), 0);
    assert_string_equal (msg.chat, "{}");
    assert_int_equal (proto_msg_set_tool_calls (&msg, "[]"), 0);
    assert_string_equal (msg.tool_calls, "[]");

    proto_msg_reset (&msg);
    assert_true (s_msg_is_zero (&msg));
    proto_msg_reset (&msg);         //  twice is fine
    proto_msg_reset (NULL);
}

//  A setter that runs out of memory returns -1 and keeps what the message held.
static void
test_setters_out_of_memory_keep_old_value (void **state)
{
    (void) state;
    S_SKIP_UNLESS_MALLOC_FAILURES_WORK ();
    proto_msg_t msg = PROTO_MSG_INIT;
    const uint32_t tokens [] = { 5, 6, 7 };
    const char *stops [] = { "one", "two", "three" };
    assert_int_equal (proto_msg_set_text (&msg, "old"), 0);
    assert_int_equal (proto_msg_set_tokens (&msg, tokens, 3), 0);
    assert_int_equal (proto_msg_set_stops (&msg, stops, 2), 0);

    s_fail_countdown = 1;
    int rc = proto_msg_set_tokens (&msg, tokens + 1, 2);
    s_fail_countdown = 0;
    assert_int_equal (rc, -1);
    assert_int_equal (msg.n_tokens, 3);
    assert_memory_equal (msg.tokens, tokens, sizeof (tokens));

    //  Text and stop strings are copied with strdup
    if (!s_strdup_failures_work ()) {
        print_message ("# strdup is not this malloc's: text setters not checked\n");
        proto_msg_reset (&msg);
        return;
    }
    s_fail_countdown = 1;
    rc = proto_msg_set_text (&msg, "new");
    s_fail_countdown = 0;
    assert_int_equal (rc, -1);
    assert_string_equal (msg.text, "old");

    //  The array, then each of the three strings: a failure part way frees the copies
    //  made so far (valgrind: no leak)
    for (unsigned failing = 1; failing <= 4; failing++) {
        s_fail_countdown = failing;
        rc = proto_msg_set_stops (&msg, stops, 3);
        s_fail_countdown = 0;
        assert_int_equal (rc, -1);
        assert_int_equal (msg.n_stops, 2);
        assert_string_equal (msg.stops [0], "one");
        assert_string_equal (msg.stops [1], "two");
    }
    assert_int_equal (proto_msg_set_stops (&msg, stops, 3), 0);
    assert_int_equal (msg.n_stops, 3);
    proto_msg_reset (&msg);
}


//  --------------------------------------------------------------------------
//  proto_sampling_copy and proto_sampling_reset

static void
test_sampling_copy_is_deep (void **state)
{
    (void) state;
    for (int variant = 0; variant < 3; variant++) {
        proto_sampling_t source, copy;
        s_fill_sampling (&source, variant);
        memset (&copy, 0, sizeof (copy));
        assert_int_equal (proto_sampling_copy (&copy, &source), 0);
        s_assert_sampling_equal (&source, &copy);
        if (source.n_bias == 0) {
            assert_null (copy.bias_tokens);
            assert_null (copy.bias_values);
            proto_sampling_reset (&source);
            proto_sampling_reset (&copy);
            continue;
        }
        //  Arrays of its own: changing or freeing the source does not touch the copy
        assert_true (copy.bias_tokens != source.bias_tokens);
        assert_true (copy.bias_values != source.bias_values);
        uint32_t first_token = source.bias_tokens [0];
        float first_value = source.bias_values [0];
        source.bias_tokens [0] = 77;
        source.bias_values [0] = 77.0f;
        assert_int_equal (copy.bias_tokens [0], first_token);
        assert_true (s_float_same (copy.bias_values [0], first_value));
        proto_sampling_reset (&source);
        assert_int_equal (copy.bias_tokens [copy.n_bias - 1],
                          variant == 0 ? 4294967295u : 1);
        proto_sampling_reset (&copy);
    }
}

//  Copying into a sampling that holds arrays frees them (valgrind: no leak), whether
//  the source has logit_bias or not.
static void
test_sampling_copy_replaces_what_dst_held (void **state)
{
    (void) state;
    proto_sampling_t target, source;
    s_fill_sampling (&target, 1);
    s_fill_sampling (&source, 0);
    assert_int_equal (proto_sampling_copy (&target, &source), 0);
    s_assert_sampling_equal (&target, &source);
    proto_sampling_reset (&source);

    //  A source without logit_bias empties the target's
    s_fill_sampling (&source, 2);
    source.top_k = 9;
    assert_int_equal (proto_sampling_copy (&target, &source), 0);
    assert_int_equal (target.n_bias, 0);
    assert_null (target.bias_tokens);
    assert_null (target.bias_values);
    assert_int_equal (target.top_k, 9);
    assert_true (target.temperature == 0.0f);

    //  A count of 0 with stray pointers: the copy does not take the pointers (its
    //  reset would free what the source owns)
    uint32_t stray_tokens [1] = { 4 };
    float stray_values [1] = { 4.0f };
    source.bias_tokens = stray_tokens;
    source.bias_values = stray_values;
    source.n_bias = 0;
    assert_int_equal (proto_sampling_copy (&target, &source), 0);
    assert_null (target.bias_tokens);
    assert_null (target.bias_values);
    proto_sampling_reset (&target);

    //  Copying a sampling onto itself keeps its values
    s_fill_sampling (&source, 0);
    proto_sampling_t expected;
    s_fill_sampling (&expected, 0);
    assert_int_equal (proto_sampling_copy (&source, &source), 0);
    s_assert_sampling_equal (&source, &expected);
    proto_sampling_reset (&source);
    proto_sampling_reset (&expected);
}

//  A copy that cannot be made returns -1 and leaves dst exactly as it was.
static void
test_sampling_copy_refusals_leave_dst_unchanged (void **state)
{
    (void) state;
    proto_sampling_t target, before, source;
    s_fill_sampling (&target, 0);
    before = target;                        //  the same values and the same pointers
    s_fill_sampling (&source, 1);

    assert_int_equal (proto_sampling_copy (NULL, &source), -1);
    assert_int_equal (proto_sampling_copy (&target, NULL), -1);
    assert_memory_equal (&target, &before, sizeof (target));

    //  A source that claims logit_bias entries without the arrays
    proto_sampling_t broken = source;
    broken.bias_values = NULL;
    assert_int_equal (proto_sampling_copy (&target, &broken), -1);
    assert_memory_equal (&target, &before, sizeof (target));
    broken = source;
    broken.bias_tokens = NULL;
    assert_int_equal (proto_sampling_copy (&target, &broken), -1);
    assert_memory_equal (&target, &before, sizeof (target));

    proto_sampling_reset (&target);
    proto_sampling_reset (&source);
}

//  Out of memory for the first array, then for the second (the first is freed:
//  valgrind), then enough memory: dst stays as it was until the copy succeeds.
static void
test_sampling_copy_out_of_memory_leaves_dst_unchanged (void **state)
{
    (void) state;
    S_SKIP_UNLESS_MALLOC_FAILURES_WORK ();
    proto_sampling_t target, before, source;
    s_fill_sampling (&target, 0);
    before = target;
    s_fill_sampling (&source, 1);
    for (unsigned failing = 1; failing <= 2; failing++) {
        s_fail_countdown = failing;
        int rc = proto_sampling_copy (&target, &source);
        s_fail_countdown = 0;
        assert_int_equal (rc, -1);
        assert_memory_equal (&target, &before, sizeof (target));
        assert_int_equal (target.bias_tokens [2], 4294967295u);      //  still its own
    }
    assert_int_equal (proto_sampling_copy (&target, &source), 0);
    s_assert_sampling_equal (&target, &source);
    proto_sampling_reset (&target);
    proto_sampling_reset (&source);
}

static void
test_sampling_reset (void **state)
{
    (void) state;
    proto_sampling_t sampling;
    s_fill_sampling (&sampling, 1);
    proto_sampling_reset (&sampling);
    assert_true (s_sampling_is_zero (&sampling));
    proto_sampling_reset (&sampling);       //  twice is fine
    proto_sampling_reset (NULL);

    //  proto_msg_reset frees every sampling a message holds: its own and each seq's
    proto_msg_t msg;
    s_fill_sample (&msg, PROTO_STEP, 0);
    s_fill_sampling (&msg.sampling, 1);
    for (uint32_t index = 1; index < msg.n_seqs; index++)
        s_fill_sampling (&msg.seqs [index].sampling, 0);
    proto_msg_reset (&msg);
    assert_true (s_msg_is_zero (&msg));
}


//  --------------------------------------------------------------------------
//  Round trips

static void
test_round_trip_every_kind (void **state)
{
    (void) state;
    for (int kind = 1; kind < PROTO_KIND_COUNT; kind++) {
        for (int variant = 0; variant < 3; variant++) {
            proto_msg_t msg;
            s_fill_sample (&msg, (proto_kind_t) kind, variant);
            s_round_trip (&msg);
            proto_msg_reset (&msg);
        }
    }
}

//  Every member of sampling, in GENERATE and SUBMIT, decodes to the value it had, and
//  is on the wire under its own name as the type docs/protocol.md gives.
static void
test_round_trip_sampling_all_members (void **state)
{
    (void) state;
    proto_kind_t kinds [] = { PROTO_GENERATE, PROTO_SUBMIT };
    for (int which = 0; which < 2; which++) {
        proto_msg_t msg = PROTO_MSG_INIT;
        msg.kind = kinds [which];
        msg.request_id = 8;
        s_fill_sampling (&msg.sampling, 0);
        msg.ignore_eos = true;

        //  Decoded: each member by value, so that two members swapped on both sides
        //  would show
        zframe_t *frame = proto_encode (&msg);
        assert_non_null (frame);
        proto_msg_t out;
        char err [256] = "";
        if (proto_decode (zframe_data (frame), zframe_size (frame), &out, err,
                          sizeof (err)) != 0)
            fail_msg ("decode failed: %s", err);
        zframe_destroy (&frame);
        const proto_sampling_t *sampling = &out.sampling;
        assert_true (sampling->temperature == 0.7f);
        assert_int_equal (sampling->top_k, 40);
        assert_true (sampling->top_p == 0.9f);
        assert_true (sampling->min_p == 0.05f);
        assert_true (sampling->presence_penalty == 0.5f);
        assert_true (sampling->frequency_penalty == -0.25f);
        assert_true (sampling->repetition_penalty == 1.1f);
        assert_true (sampling->seed == 0x0123456789abcdefull);
        assert_int_equal (sampling->min_tokens, 3);
        assert_int_equal (sampling->n_logprobs, 5);
        assert_int_equal (sampling->n_bias, 3);
        assert_int_equal (sampling->bias_tokens [0], 15043);
        assert_int_equal (sampling->bias_tokens [1], 0);
        assert_int_equal (sampling->bias_tokens [2], 4294967295u);
        assert_true (sampling->bias_values [0] == -100.0f);
        assert_true (sampling->bias_values [1] == 5.5f);
        assert_true (s_float_same (sampling->bias_values [2], -0.0f));
        //  ignore_eos is GENERATE's only
        assert_int_equal (out.ignore_eos, msg.kind == PROTO_GENERATE);
        proto_msg_reset (&out);

        //  On the wire
        msgpack_unpacked unpacked;
        msgpack_object fields;
        zframe_t *wire_frame = s_unpack_fields (&msg, &unpacked, &fields);
        assert_null (s_map_get (&fields, "temperature"));       //  version 1's places
        assert_null (s_map_get (&fields, "seed"));
        const msgpack_object *wire = s_map_need (&fields, "sampling", MSGPACK_OBJECT_MAP);
        assert_true (s_map_float (wire, "temperature") == 0.7f);
        assert_int_equal (s_map_uint (wire, "top_k"), 40);
        assert_true (s_map_float (wire, "top_p") == 0.9f);
        assert_true (s_map_float (wire, "min_p") == 0.05f);
        assert_true (s_map_float (wire, "presence_penalty") == 0.5f);
        assert_true (s_map_float (wire, "frequency_penalty") == -0.25f);
        assert_true (s_map_float (wire, "repetition_penalty") == 1.1f);
        assert_true (s_map_uint (wire, "seed") == 0x0123456789abcdefull);
        assert_int_equal (s_map_uint (wire, "min_tokens"), 3);
        assert_int_equal (s_map_uint (wire, "n_logprobs"), 5);
        const msgpack_object *bias = s_map_need (wire, "logit_bias", MSGPACK_OBJECT_ARRAY);
        assert_int_equal (bias->via.array.size, 3);
        const msgpack_object *pair = &bias->via.array.ptr [1];
        assert_int_equal (pair->type, MSGPACK_OBJECT_ARRAY);
        assert_int_equal (pair->via.array.size, 2);
        assert_int_equal (pair->via.array.ptr [0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        assert_int_equal (pair->via.array.ptr [0].via.u64, 0);
        assert_int_equal (pair->via.array.ptr [1].type, MSGPACK_OBJECT_FLOAT32);
        assert_true (pair->via.array.ptr [1].via.f64 == 5.5);
        const msgpack_object *ignore_eos = s_map_get (&fields, "ignore_eos");
        if (msg.kind == PROTO_GENERATE) {
            assert_non_null (ignore_eos);
            assert_int_equal (ignore_eos->type, MSGPACK_OBJECT_BOOLEAN);
            assert_true (ignore_eos->via.boolean);
        }
        else
            assert_null (ignore_eos);
        msgpack_unpacked_destroy (&unpacked);
        zframe_destroy (&wire_frame);
        proto_msg_reset (&msg);
    }
}

//  STEP with block copies, frees, block tables, first / sample and a nested sampling:
//  what decodes, and what is on the wire.
static void
test_round_trip_step_with_paged_kv (void **state)
{
    (void) state;
    proto_msg_t msg;
    s_fill_sample (&msg, PROTO_STEP, 0);
    s_round_trip (&msg);

    proto_msg_t out;
    zframe_t *frame = proto_encode (&msg);
    assert_non_null (frame);
    assert_int_equal (proto_decode (zframe_data (frame), zframe_size (frame), &out,
                                    NULL, 0), 0);
    zframe_destroy (&frame);
    assert_int_equal (out.n_copies, 3);
    static const uint32_t copies [] = { 3, 17, 0, 1, 4294967295u, 65536 };
    assert_memory_equal (out.copies, copies, sizeof (copies));
    assert_int_equal (out.n_frees, 2);
    assert_true (out.frees [0] == 0x0123456789abcdefull);
    assert_true (out.frees [1] == 99);
    assert_int_equal (out.n_seqs, 3);
    const proto_step_seq_t *first = &out.seqs [0];
    assert_true (first->seq_id == 1000);
    assert_true (first->first);
    assert_true (first->sample);
    assert_int_equal (first->n_blocks, 1);
    assert_int_equal (first->blocks [0], 255);
    assert_int_equal (first->sampling.top_k, 40);
    assert_int_equal (first->sampling.n_bias, 3);
    assert_int_equal (first->n_masked, 2);
    assert_int_equal (first->masked_tokens [0], 65536);
    const proto_step_seq_t *idle = &out.seqs [1];
    assert_false (idle->first);
    assert_false (idle->sample);
    assert_int_equal (idle->n_tokens, 0);
    assert_null (idle->tokens);
    assert_int_equal (idle->n_blocks, 0);
    assert_null (idle->blocks);
    assert_true (s_sampling_is_zero (&idle->sampling));
    const proto_step_seq_t *third = &out.seqs [2];
    assert_false (third->first);
    assert_true (third->sample);
    assert_int_equal (third->pos, 200);
    assert_int_equal (third->n_prompt, 100);
    assert_int_equal (third->n_blocks, 5);
    assert_int_equal (third->blocks [3], 65536);
    assert_int_equal (third->blocks [4], 4294967295u);
    proto_msg_reset (&out);

    //  On the wire: copies flat (src, dst, src, dst ...), frees, seqs as maps
    msgpack_unpacked unpacked;
    msgpack_object fields;
    zframe_t *wire_frame = s_unpack_fields (&msg, &unpacked, &fields);
    const msgpack_object *wire_copies = s_map_need (&fields, "copies", MSGPACK_OBJECT_ARRAY);
    assert_int_equal (wire_copies->via.array.size, 6);
    for (uint32_t index = 0; index < 6; index++)
        assert_true (wire_copies->via.array.ptr [index].via.u64 == copies [index]);
    const msgpack_object *wire_frees = s_map_need (&fields, "frees", MSGPACK_OBJECT_ARRAY);
    assert_int_equal (wire_frees->via.array.size, 2);
    assert_true (wire_frees->via.array.ptr [0].via.u64 == 0x0123456789abcdefull);
    const msgpack_object *seqs = s_map_need (&fields, "seqs", MSGPACK_OBJECT_ARRAY);
    assert_int_equal (seqs->via.array.size, 3);
    const msgpack_object *seq = &seqs->via.array.ptr [0];
    assert_true (s_map_uint (seq, "seq_id") == 1000);
    assert_int_equal (s_map_uint (seq, "pos"), 0);
    assert_int_equal (s_map_need (seq, "tokens", MSGPACK_OBJECT_ARRAY)->via.array.size,
                      S_N_SOME);
    assert_int_equal (s_map_need (seq, "blocks", MSGPACK_OBJECT_ARRAY)->via.array.size, 1);
    assert_int_equal (s_map_uint (seq, "n_prompt"), 0);
    assert_true (s_map_need (seq, "first", MSGPACK_OBJECT_BOOLEAN)->via.boolean);
    assert_true (s_map_need (seq, "sample", MSGPACK_OBJECT_BOOLEAN)->via.boolean);
    const msgpack_object *sampling = s_map_need (seq, "sampling", MSGPACK_OBJECT_MAP);
    assert_int_equal (s_map_uint (sampling, "top_k"), 40);
    assert_int_equal (s_map_need (sampling, "logit_bias",
                                  MSGPACK_OBJECT_ARRAY)->via.array.size, 3);
    assert_int_equal (s_map_need (seq, "masked_tokens",
                                  MSGPACK_OBJECT_ARRAY)->via.array.size, 2);
    assert_null (s_map_get (seq, "slot"));
    assert_false (s_map_need (&seqs->via.array.ptr [1], "first",
                              MSGPACK_OBJECT_BOOLEAN)->via.boolean);
    msgpack_unpacked_destroy (&unpacked);
    zframe_destroy (&wire_frame);
    proto_msg_reset (&msg);

    //  A STEP with only copies and frees, no sequences (a step that only forgets and
    //  copies), round trips with an empty seqs
    memset (&msg, 0, sizeof (msg));
    msg.kind = PROTO_STEP;
    msg.step_id = 5;
    msg.n_copies = 1;
    msg.copies = s_copy_ids (copies, 2);
    msg.n_frees = 1;
    msg.frees = (uint64_t *) malloc (sizeof (uint64_t));
    assert_non_null (msg.frees);
    msg.frees [0] = UINT64_MAX;
    s_round_trip (&msg);
    proto_msg_reset (&msg);
}

//  STEP_RESULT's outs with their top log-probabilities.
static void
test_round_trip_outs_with_top (void **state)
{
    (void) state;
    proto_msg_t msg;
    s_fill_sample (&msg, PROTO_STEP_RESULT, 1);
    s_round_trip (&msg);
    proto_msg_reset (&msg);

    memset (&msg, 0, sizeof (msg));
    msg.kind = PROTO_STEP_RESULT;
    msg.step_id = 3;
    msg.n_outs = 1;
    msg.outs = (proto_step_out_t *) calloc (1, sizeof (proto_step_out_t));
    assert_non_null (msg.outs);
    static const uint32_t tokens [] = { 9, 4294967295u, 0 };
    static const float logprobs [] = { -0.5f, -1.5f, -INFINITY };
    msg.outs [0].seq_id = UINT64_MAX;
    msg.outs [0].token = 9;
    msg.outs [0].logprob = -0.5f;
    msg.outs [0].n_top = 3;
    msg.outs [0].top_tokens = s_copy_ids (tokens, 3);
    msg.outs [0].top_logprobs = s_copy_floats (logprobs, 3);

    proto_msg_t out;
    zframe_t *frame = proto_encode (&msg);
    assert_non_null (frame);
    assert_int_equal (proto_decode (zframe_data (frame), zframe_size (frame), &out,
                                    NULL, 0), 0);
    zframe_destroy (&frame);
    assert_int_equal (out.n_outs, 1);
    assert_true (out.outs [0].seq_id == UINT64_MAX);
    assert_int_equal (out.outs [0].n_top, 3);
    assert_memory_equal (out.outs [0].top_tokens, tokens, sizeof (tokens));
    assert_true (out.outs [0].top_logprobs [1] == -1.5f);
    assert_true (isinf (out.outs [0].top_logprobs [2]));
    assert_string_equal (out.text, "");
    proto_msg_reset (&out);

    msgpack_unpacked unpacked;
    msgpack_object fields;
    zframe_t *wire_frame = s_unpack_fields (&msg, &unpacked, &fields);
    const msgpack_object *outs = s_map_need (&fields, "outs", MSGPACK_OBJECT_ARRAY);
    const msgpack_object *wire_out = &outs->via.array.ptr [0];
    assert_true (s_map_uint (wire_out, "seq_id") == UINT64_MAX);
    assert_int_equal (s_map_uint (wire_out, "token"), 9);
    assert_true (s_map_float (wire_out, "logprob") == -0.5);
    const msgpack_object *top = s_map_need (wire_out, "top", MSGPACK_OBJECT_ARRAY);
    assert_int_equal (top->via.array.size, 3);
    const msgpack_object *pair = &top->via.array.ptr [1];
    assert_int_equal (pair->via.array.size, 2);
    assert_true (pair->via.array.ptr [0].via.u64 == 4294967295u);
    assert_int_equal (pair->via.array.ptr [1].type, MSGPACK_OBJECT_FLOAT32);
    assert_true (pair->via.array.ptr [1].via.f64 == -1.5);
    msgpack_unpacked_destroy (&unpacked);
    zframe_destroy (&wire_frame);
    proto_msg_reset (&msg);
}

//  HELLO's KV pool and STATUS's counters are on the wire under their names.
static void
test_wire_form_of_hello_and_status (void **state)
{
    (void) state;
    proto_msg_t msg;
    msgpack_unpacked unpacked;
    msgpack_object fields;
    zframe_t *wire_frame;

    s_fill_sample (&msg, PROTO_HELLO, 0);
    wire_frame = s_unpack_fields (&msg, &unpacked, &fields);
    assert_int_equal (s_map_uint (&fields, "version"), PROTO_VERSION);
    assert_int_equal (s_map_uint (&fields, "n_blocks"), 512);
    assert_int_equal (s_map_uint (&fields, "block_size"), 16);
    assert_int_equal (s_map_uint (&fields, "n_ctx"), 2048);
    assert_null (s_map_get (&fields, "n_slots"));
    msgpack_unpacked_destroy (&unpacked);
    zframe_destroy (&wire_frame);
    proto_msg_reset (&msg);

    s_fill_sample (&msg, PROTO_STATUS, 0);
    wire_frame = s_unpack_fields (&msg, &unpacked, &fields);
    assert_int_equal (fields.via.map.size, 8);
    assert_int_equal (s_map_uint (&fields, "workers"), 2);
    assert_int_equal (s_map_uint (&fields, "running"), 31);
    assert_int_equal (s_map_uint (&fields, "waiting"), 7);
    assert_int_equal (s_map_uint (&fields, "kv_blocks_used"), 300);
    assert_int_equal (s_map_uint (&fields, "kv_blocks_total"), 1024);
    assert_true (s_map_uint (&fields, "prefix_queries") == 5000000000ull);
    assert_int_equal (s_map_uint (&fields, "prefix_hits"), 1234);
    assert_int_equal (s_map_uint (&fields, "preemptions"), 3);
    msgpack_unpacked_destroy (&unpacked);
    zframe_destroy (&wire_frame);
    proto_msg_reset (&msg);
}

//  The values of fields a kind does not use are not sent.
static void
test_unused_fields_not_sent (void **state)
{
    (void) state;
    const uint32_t tokens [] = { 9, 8, 7 };
    for (int kind = 1; kind < PROTO_KIND_COUNT; kind++) {
        proto_msg_t full;
        s_fill_sample (&full, (proto_kind_t) kind, 0);
        //  Set everything the kind might not use
        if (!full.request_id)
            full.request_id = 77;
        if (!full.text)
            assert_int_equal (proto_msg_set_text (&full, "not mine"), 0);
        if (!full.n_tokens)
            assert_int_equal (proto_msg_set_tokens (&full, tokens, 3), 0);
        if (!full.n_stop_tokens)
            assert_int_equal (proto_msg_set_stop_tokens (&full, tokens, 2), 0);
        if (!full.n_outs) {
            full.outs = (proto_step_out_t *) calloc (1, sizeof (proto_step_out_t));
            full.n_outs = 1;
        }
        if (!full.n_seqs) {
            full.seqs = (proto_step_seq_t *) calloc (1, sizeof (proto_step_seq_t));
            full.n_seqs = 1;
        }
        if (!full.n_copies) {
            full.copies = s_copy_ids (tokens, 2);
            full.n_copies = 1;
        }
        if (!full.n_frees) {
            full.frees = (uint64_t *) calloc (1, sizeof (uint64_t));
            full.n_frees = 1;
        }
        if (!full.sampling.n_bias)
            s_fill_sampling (&full.sampling, 0);
        full.sampling.top_k += 1;
        full.ignore_eos = !full.ignore_eos;
        full.max_tokens += 1;
        full.version += 1;
        full.workers += 1;
        full.step_id += 1;
        full.status += 1;
        full.n_vocab += 1;
        full.n_blocks += 1;
        full.block_size += 1;
        full.kv_blocks_used += 1;
        full.preemptions += 1;

        zframe_t *frame = proto_encode (&full);
        assert_non_null (frame);
        proto_msg_t out;
        char err [256];
        assert_int_equal (proto_decode (zframe_data (frame), zframe_size (frame),
                                        &out, err, sizeof (err)), 0);
        //  What came back is what the kind carries: compare with a fresh sample
        //  whose used fields were changed in the same way.
        proto_msg_t expected;
        s_fill_sample (&expected, (proto_kind_t) kind, 0);
        switch (kind) {
            case PROTO_GENERATE:
                expected.max_tokens += 1;
                expected.sampling.top_k += 1;
                expected.ignore_eos = !expected.ignore_eos;
                break;
            case PROTO_ERROR:
                expected.status += 1;
                break;
            case PROTO_SUBMIT:
                expected.max_tokens += 1;
                expected.sampling.top_k += 1;
                break;
            case PROTO_HELLO:
                expected.version += 1;
                expected.n_vocab += 1;
                expected.n_blocks += 1;
                expected.block_size += 1;
                break;
            case PROTO_REJECT:
                break;
            case PROTO_STEP:
            case PROTO_STEP_RESULT:
                expected.step_id += 1;
                if (kind == PROTO_STEP_RESULT) {
                    assert_int_equal (proto_msg_set_text (&expected, ""), 0);
                }
                break;
            case PROTO_STATUS:
                expected.workers += 1;
                expected.kv_blocks_used += 1;
                expected.preemptions += 1;
                break;
            default:
                break;
        }
        s_assert_msg_equal (&expected, &out);
        proto_msg_reset (&expected);
        proto_msg_reset (&out);
        proto_msg_reset (&full);
        zframe_destroy (&frame);
    }
    //  A kind without fields is the 3-byte [kind, {}]
    proto_msg_t bye = PROTO_MSG_INIT;
    bye.kind = PROTO_BYE;
    bye.request_id = 5;
    zframe_t *frame = proto_encode (&bye);
    assert_non_null (frame);
    assert_int_equal (zframe_size (frame), 3);
    assert_memory_equal (zframe_data (frame), "\x92\x0d\x80", 3);
    zframe_destroy (&frame);
}

//  A kind that carries text decodes with text "" when it was NULL.
static void
test_null_text_decodes_empty (void **state)
{
    (void) state;
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_OUTPUT;
    msg.request_id = 3;
    zframe_t *frame = proto_encode (&msg);
    assert_non_null (frame);
    proto_msg_t out;
    assert_int_equal (proto_decode (zframe_data (frame), zframe_size (frame),
                                    &out, NULL, 0), 0);
    assert_non_null (out.text);
    assert_string_equal (out.text, "");
    proto_msg_reset (&out);
    zframe_destroy (&frame);

    //  Also when the field is absent from the frame
    s_writer_t writer;
    s_writer_start (&writer, PROTO_REJECT, 0);
    s_writer_expect_ok (&writer, &out);
    assert_int_equal (out.kind, PROTO_REJECT);
    assert_string_equal (out.text, "");
    proto_msg_reset (&out);
    //  but not for a kind without text
    s_writer_start (&writer, PROTO_HEARTBEAT, 0);
    s_writer_expect_ok (&writer, &out);
    assert_null (out.text);
    proto_msg_reset (&out);
}

//  Fill n pairs [token, value] into two new arrays.
static void
s_make_pairs (uint32_t n, uint32_t **tokens, float **values)
{
    *tokens = (uint32_t *) malloc ((size_t) n * sizeof (uint32_t));
    *values = (float *) malloc ((size_t) n * sizeof (float));
    assert_non_null (*tokens);
    assert_non_null (*values);
    for (uint32_t index = 0; index < n; index++) {
        (*tokens) [index] = index * 2654435761u;
        (*values) [index] = -(float) index / 7.0f;
    }
}

static void
test_round_trip_at_limits (void **state)
{
    (void) state;
    //  SUBMIT with the most tokens, stop tokens and logit_bias entries allowed
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_SUBMIT;
    msg.request_id = UINT64_MAX;
    msg.n_tokens = PROTO_MAX_TOKENS;
    msg.tokens = (uint32_t *) malloc (PROTO_MAX_TOKENS * sizeof (uint32_t));
    assert_non_null (msg.tokens);
    for (uint32_t index = 0; index < PROTO_MAX_TOKENS; index++)
        msg.tokens [index] = index * 2654435761u;
    assert_int_equal (proto_msg_set_stop_tokens (&msg, msg.tokens, PROTO_MAX_TOKENS), 0);
    msg.sampling.n_bias = PROTO_MAX_BIAS;
    s_make_pairs (PROTO_MAX_BIAS, &msg.sampling.bias_tokens, &msg.sampling.bias_values);
    s_round_trip (&msg);
    proto_msg_reset (&msg);

    //  GENERATE with the most stop strings and logit_bias entries
    msg.kind = PROTO_GENERATE;
    assert_int_equal (proto_msg_set_text (&msg, "Once"), 0);
    const char *stops [PROTO_MAX_STOPS];
    for (int index = 0; index < PROTO_MAX_STOPS; index++)
        stops [index] = index % 2 ? s_utf8_text : "stop";
    assert_int_equal (proto_msg_set_stops (&msg, stops, PROTO_MAX_STOPS), 0);
    msg.sampling.n_bias = PROTO_MAX_BIAS;
    s_make_pairs (PROTO_MAX_BIAS, &msg.sampling.bias_tokens, &msg.sampling.bias_values);
    s_round_trip (&msg);
    proto_msg_reset (&msg);

    //  STEP with the most sequences, each with blocks and a sampling, some with the
    //  most logit_bias entries
    msg.kind = PROTO_STEP;
    msg.step_id = 1;
    msg.n_seqs = PROTO_MAX_STEP_SEQS;
    msg.seqs = (proto_step_seq_t *) calloc (PROTO_MAX_STEP_SEQS, sizeof (proto_step_seq_t));
    assert_non_null (msg.seqs);
    for (uint32_t index = 0; index < PROTO_MAX_STEP_SEQS; index++) {
        proto_step_seq_t *seq = &msg.seqs [index];
        seq->seq_id = (uint64_t) index << 33;
        seq->pos = index * 3;
        seq->n_tokens = 1 + index % 3;
        seq->tokens = (uint32_t *) calloc (seq->n_tokens, sizeof (uint32_t));
        assert_non_null (seq->tokens);
        seq->tokens [0] = index;
        seq->n_blocks = 1 + index % 5;
        seq->blocks = (uint32_t *) calloc (seq->n_blocks, sizeof (uint32_t));
        assert_non_null (seq->blocks);
        seq->blocks [seq->n_blocks - 1] = UINT32_MAX - index;
        seq->n_prompt = index;
        seq->first = index % 2 == 0;
        seq->sample = index % 3 != 0;
        seq->sampling.temperature = (float) index / 100.0f;
        seq->sampling.seed = (uint64_t) index << 40;
        seq->sampling.top_k = index;
        if (index % 512 == 0) {
            seq->sampling.n_bias = PROTO_MAX_BIAS;
            s_make_pairs (PROTO_MAX_BIAS, &seq->sampling.bias_tokens,
                          &seq->sampling.bias_values);
        }
    }
    s_round_trip (&msg);
    proto_msg_reset (&msg);

    //  STEP with the most copies and frees
    msg.kind = PROTO_STEP;
    msg.step_id = 2;
    msg.n_copies = PROTO_MAX_TOKENS / 2;
    msg.copies = (uint32_t *) malloc (PROTO_MAX_TOKENS * sizeof (uint32_t));
    assert_non_null (msg.copies);
    for (uint32_t index = 0; index < PROTO_MAX_TOKENS; index++)
        msg.copies [index] = index ^ 0x80000000u;
    msg.n_frees = PROTO_MAX_TOKENS;
    msg.frees = (uint64_t *) malloc (PROTO_MAX_TOKENS * sizeof (uint64_t));
    assert_non_null (msg.frees);
    for (uint32_t index = 0; index < PROTO_MAX_TOKENS; index++)
        msg.frees [index] = (uint64_t) index * 0x9e3779b97f4a7c15ull;
    s_round_trip (&msg);
    proto_msg_reset (&msg);

    //  STEP_RESULT with the most outputs, each with the most top log-probabilities
    msg.kind = PROTO_STEP_RESULT;
    msg.n_outs = PROTO_MAX_STEP_SEQS;
    msg.outs = (proto_step_out_t *) calloc (PROTO_MAX_STEP_SEQS, sizeof (proto_step_out_t));
    assert_non_null (msg.outs);
    for (uint32_t index = 0; index < PROTO_MAX_STEP_SEQS; index++) {
        proto_step_out_t *out = &msg.outs [index];
        out->seq_id = UINT64_MAX - index;
        out->token = UINT32_MAX - index;
        out->logprob = -(float) index;
        out->n_top = PROTO_MAX_LOGPROBS;
        s_make_pairs (PROTO_MAX_LOGPROBS, &out->top_tokens, &out->top_logprobs);
    }
    assert_int_equal (proto_msg_set_text (&msg, s_utf8_text), 0);
    s_round_trip (&msg);
    proto_msg_reset (&msg);

    //  The longest text allowed
    char *text = (char *) malloc (PROTO_MAX_STRING_BYTES + 2);
    assert_non_null (text);
    for (size_t index = 0; index < PROTO_MAX_STRING_BYTES + 1; index++)
        text [index] = (char) ('a' + index % 26);
    memcpy (text, "日本", 6);
    text [PROTO_MAX_STRING_BYTES] = 0;
    msg.kind = PROTO_GENERATE;
    msg.text = text;
    s_round_trip (&msg);
    //  one byte more: the encoder refuses it
    text [PROTO_MAX_STRING_BYTES] = 'x';
    text [PROTO_MAX_STRING_BYTES + 1] = 0;
    assert_null (proto_encode (&msg));
    proto_msg_reset (&msg);
}

static void
test_encode_refuses (void **state)
{
    (void) state;
    proto_msg_t msg = PROTO_MSG_INIT;
    assert_null (proto_encode (NULL));
    assert_null (proto_encode (&msg));                  //  kind 0
    msg.kind = PROTO_KIND_COUNT;
    assert_null (proto_encode (&msg));
    msg.kind = (proto_kind_t) -1;
    assert_null (proto_encode (&msg));

    uint32_t tokens [4] = { 1, 2, 3, 4 };
    msg.kind = PROTO_TOKENS;
    msg.n_tokens = 3;                                   //  NULL array, count 3
    assert_null (proto_encode (&msg));
    msg.tokens = tokens;
    msg.n_tokens = PROTO_MAX_TOKENS + 1;                //  over the limit
    assert_null (proto_encode (&msg));
    msg.n_tokens = 4;
    msg.finish = (proto_finish_t) 4;                    //  no such reason
    assert_null (proto_encode (&msg));
    msg.finish = PROTO_FINISH_LENGTH;
    zframe_t *frame = proto_encode (&msg);
    assert_non_null (frame);
    zframe_destroy (&frame);
    //  A NULL array in a field the kind does not use does not matter
    msg.kind = PROTO_CANCEL;
    msg.tokens = NULL;
    frame = proto_encode (&msg);
    assert_non_null (frame);
    zframe_destroy (&frame);

    proto_step_seq_t seq = { .seq_id = 1, .pos = 0, .tokens = NULL, .n_tokens = 2 };
    memset (&msg, 0, sizeof (msg));
    msg.kind = PROTO_STEP;
    msg.n_seqs = 1;
    assert_null (proto_encode (&msg));                  //  seqs NULL
    msg.seqs = &seq;
    assert_null (proto_encode (&msg));                  //  seq tokens NULL
    seq.tokens = tokens;
    frame = proto_encode (&msg);
    assert_non_null (frame);
    zframe_destroy (&frame);
    msg.n_seqs = PROTO_MAX_STEP_SEQS + 1;
    assert_null (proto_encode (&msg));

    memset (&msg, 0, sizeof (msg));
    msg.kind = PROTO_STEP_RESULT;
    msg.n_outs = 2;
    assert_null (proto_encode (&msg));                  //  outs NULL
}

//  Counts over the limits, or counts without their arrays, in every new place.
//  The arrays are large enough for the counts, so a refusal is the only right answer.
static void
test_encode_refuses_counts_over_limits (void **state)
{
    (void) state;
    size_t n_ids = (size_t) PROTO_MAX_TOKENS + 2;
    uint32_t *ids = (uint32_t *) calloc (n_ids, sizeof (uint32_t));
    float *values = (float *) calloc (n_ids, sizeof (float));
    uint64_t *wide = (uint64_t *) calloc (n_ids, sizeof (uint64_t));
    assert_non_null (ids);
    assert_non_null (values);
    assert_non_null (wide);
    zframe_t *frame;

    //  logit_bias in GENERATE and SUBMIT: at the limit fine, over it refused
    proto_kind_t kinds [] = { PROTO_GENERATE, PROTO_SUBMIT };
    for (int which = 0; which < 2; which++) {
        proto_msg_t msg = PROTO_MSG_INIT;
        msg.kind = kinds [which];
        msg.sampling.bias_tokens = ids;
        msg.sampling.bias_values = values;
        msg.sampling.n_bias = PROTO_MAX_BIAS;
        frame = proto_encode (&msg);
        assert_non_null (frame);
        zframe_destroy (&frame);
        msg.sampling.n_bias = PROTO_MAX_BIAS + 1;
        assert_null (proto_encode (&msg));
        msg.sampling.n_bias = UINT32_MAX;
        assert_null (proto_encode (&msg));
        msg.sampling.n_bias = 1;
        msg.sampling.bias_values = NULL;                //  one array missing
        assert_null (proto_encode (&msg));
        msg.sampling.bias_values = values;
        msg.sampling.bias_tokens = NULL;
        assert_null (proto_encode (&msg));
        //  A kind that does not carry sampling does not look at it
        msg.kind = PROTO_CANCEL;
        msg.sampling.n_bias = UINT32_MAX;
        frame = proto_encode (&msg);
        assert_non_null (frame);
        zframe_destroy (&frame);
    }

    //  STEP: a seq's logit_bias, blocks and masked tokens; copies; frees
    proto_step_seq_t seq;
    memset (&seq, 0, sizeof (seq));
    seq.tokens = ids;
    seq.n_tokens = 1;
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_STEP;
    msg.seqs = &seq;
    msg.n_seqs = 1;
    frame = proto_encode (&msg);
    assert_non_null (frame);
    zframe_destroy (&frame);

    seq.sampling.bias_tokens = ids;
    seq.sampling.bias_values = values;
    seq.sampling.n_bias = PROTO_MAX_BIAS + 1;
    assert_null (proto_encode (&msg));
    seq.sampling.n_bias = 2;
    seq.sampling.bias_tokens = NULL;
    assert_null (proto_encode (&msg));
    memset (&seq.sampling, 0, sizeof (seq.sampling));

    seq.blocks = ids;
    seq.n_blocks = PROTO_MAX_TOKENS + 1;
    assert_null (proto_encode (&msg));
    seq.blocks = NULL;
    seq.n_blocks = 1;
    assert_null (proto_encode (&msg));
    seq.n_blocks = 0;

    seq.masked_tokens = ids;
    seq.n_masked = PROTO_MAX_TOKENS + 1;
    assert_null (proto_encode (&msg));
    seq.masked_tokens = NULL;
    seq.n_masked = 1;
    assert_null (proto_encode (&msg));
    seq.n_masked = 0;

    msg.copies = ids;
    msg.n_copies = PROTO_MAX_TOKENS / 2;                //  2^20 ids: the limit
    frame = proto_encode (&msg);
    assert_non_null (frame);
    zframe_destroy (&frame);
    msg.n_copies = PROTO_MAX_TOKENS / 2 + 1;
    assert_null (proto_encode (&msg));
    msg.n_copies = 0x80000000u;                         //  2 * n_copies is 0 in 32 bits
    assert_null (proto_encode (&msg));
    msg.n_copies = UINT32_MAX;
    assert_null (proto_encode (&msg));
    msg.copies = NULL;
    msg.n_copies = 1;
    assert_null (proto_encode (&msg));
    msg.n_copies = 0;

    msg.frees = wide;
    msg.n_frees = PROTO_MAX_TOKENS;
    frame = proto_encode (&msg);
    assert_non_null (frame);
    zframe_destroy (&frame);
    msg.n_frees = PROTO_MAX_TOKENS + 1;
    assert_null (proto_encode (&msg));
    msg.n_frees = UINT32_MAX;
    assert_null (proto_encode (&msg));
    msg.frees = NULL;
    msg.n_frees = 1;
    assert_null (proto_encode (&msg));

    //  STEP_RESULT: top over PROTO_MAX_BEAM_CANDIDATES, or without its arrays
    proto_step_out_t out;
    memset (&out, 0, sizeof (out));
    memset (&msg, 0, sizeof (msg));
    msg.kind = PROTO_STEP_RESULT;
    msg.outs = &out;
    msg.n_outs = 1;
    out.top_tokens = ids;
    out.top_logprobs = values;
    out.n_top = PROTO_MAX_BEAM_CANDIDATES;
    frame = proto_encode (&msg);
    assert_non_null (frame);
    zframe_destroy (&frame);
    out.n_top = PROTO_MAX_BEAM_CANDIDATES + 1;
    assert_null (proto_encode (&msg));
    out.n_top = UINT32_MAX;
    assert_null (proto_encode (&msg));
    out.n_top = 1;
    out.top_logprobs = NULL;
    assert_null (proto_encode (&msg));
    out.top_logprobs = values;
    out.top_tokens = NULL;
    assert_null (proto_encode (&msg));

    free (ids);
    free (values);
    free (wide);
}


//  --------------------------------------------------------------------------
//  Hostile input

//  Every prefix of frame is refused cleanly: -1, the message zeroed, and an error that
//  says the frame was cut short.
static void
s_assert_every_prefix_refused (const zframe_t *frame)
{
    const uint8_t *data = (const uint8_t *) zframe_data ((zframe_t *) frame);
    size_t size = zframe_size ((zframe_t *) frame);
    for (size_t length = 0; length < size; length++) {
        //  A copy of exactly length bytes, so that ASan and valgrind see any read
        //  past the end.
        uint8_t *prefix = (uint8_t *) malloc (length ? length : 1);
        assert_non_null (prefix);
        memcpy (prefix, data, length);
        proto_msg_t out;
        memset (&out, 0x5a, sizeof (out));
        char err [256] = "";
        assert_int_equal (proto_decode (prefix, length, &out, err, sizeof (err)), -1);
        assert_true (s_msg_is_zero (&out));
        const char *expected = length == 0 ? "empty" : "truncated";
        if (!strstr (err, expected))
            fail_msg ("prefix of %zu of %zu bytes: error '%s' does not say '%s'",
                      length, size, err, expected);
        free (prefix);
    }
}

//  Every prefix of every kind's frame is refused cleanly.
static void
test_truncation (void **state)
{
    (void) state;
    for (int kind = 1; kind < PROTO_KIND_COUNT; kind++) {
        for (int variant = 0; variant < 3; variant++) {
            proto_msg_t msg;
            s_fill_sample (&msg, (proto_kind_t) kind, variant);
            zframe_t *frame = proto_encode (&msg);
            assert_non_null (frame);
            s_assert_every_prefix_refused (frame);
            zframe_destroy (&frame);
            proto_msg_reset (&msg);
        }
    }
}

//  A STEP with everything: copies, frees, and sequences with blocks, masked tokens and
//  full samplings with logit_bias. Each prefix fails after allocating some of it; the
//  decoder must free all of it (valgrind: no leak).
static void
test_truncation_of_full_step_at_every_byte (void **state)
{
    (void) state;
    proto_msg_t msg;
    s_fill_sample (&msg, PROTO_STEP, 1);
    for (uint32_t index = 1; index < msg.n_seqs; index++) {
        proto_step_seq_t *seq = &msg.seqs [index];
        s_fill_sampling (&seq->sampling, 0);
        seq->n_masked = 1;
        seq->masked_tokens = s_copy_ids (s_some_tokens, 1);
    }
    zframe_t *frame = proto_encode (&msg);
    assert_non_null (frame);
    //  The frame holds what the test is about
    const char *members [] = { "copies", "frees", "seqs", "blocks", "n_prompt", "first",
                               "sample", "sampling", "logit_bias", "masked_tokens" };
    for (size_t index = 0; index < sizeof (members) / sizeof (members [0]); index++)
        assert_non_null (memmem (zframe_data (frame), zframe_size (frame),
                                 members [index], strlen (members [index])));
    s_assert_every_prefix_refused (frame);
    zframe_destroy (&frame);
    proto_msg_reset (&msg);

    //  The same for a STEP_RESULT with the most top log-probabilities
    s_fill_sample (&msg, PROTO_STEP_RESULT, 1);
    frame = proto_encode (&msg);
    assert_non_null (frame);
    s_assert_every_prefix_refused (frame);
    zframe_destroy (&frame);
    proto_msg_reset (&msg);
}

//  Decode msg's frame with the first, second, third ... allocation failing: each is
//  refused with "out of memory" and leaves nothing behind (valgrind), until one has
//  enough memory and decodes the message. Returns how many allocations the decode makes.
static unsigned
s_decode_with_each_allocation_failing (const proto_msg_t *msg)
{
    zframe_t *frame = proto_encode (msg);
    assert_non_null (frame);
    unsigned failing = 1;
    for (;; failing++) {
        assert_true (failing < 10000);
        proto_msg_t out;
        char err [256] = "";
        s_fail_countdown = failing;
        int rc = proto_decode (zframe_data (frame), zframe_size (frame), &out,
                               err, sizeof (err));
        bool failed_one = s_fail_countdown == 0;
        s_fail_countdown = 0;
        if (rc == 0) {
            assert_false (failed_one);          //  no allocation was refused
            s_assert_msg_equal (msg, &out);
            proto_msg_reset (&out);
            break;
        }
        assert_true (failed_one);
        assert_true (s_msg_is_zero (&out));
        if (!strstr (err, "out of memory"))
            fail_msg ("%s with allocation %u failing: error '%s'",
                      proto_kind_name (msg->kind), failing, err);
    }
    zframe_destroy (&frame);
    return failing - 1;
}

static void
test_decode_out_of_memory_at_every_allocation (void **state)
{
    (void) state;
    S_SKIP_UNLESS_MALLOC_FAILURES_WORK ();
    proto_kind_t kinds [] = { PROTO_STEP, PROTO_STEP_RESULT, PROTO_GENERATE,
                              PROTO_SUBMIT, PROTO_OUTPUT };
    for (size_t which = 0; which < sizeof (kinds) / sizeof (kinds [0]); which++) {
        proto_msg_t msg;
        s_fill_sample (&msg, kinds [which], 0);
        unsigned allocations = s_decode_with_each_allocation_failing (&msg);
        //  Each array and text is an allocation (STEP: copies, frees, seqs, 2 token
        //  and 2 block arrays, 1 masked, 2 logit_bias arrays)
        if (kinds [which] == PROTO_STEP)
            assert_true (allocations >= 10);
        if (kinds [which] == PROTO_STEP_RESULT)
            assert_true (allocations >= 1 + 1 + 2 * 4);
        assert_true (allocations >= 1);
        proto_msg_reset (&msg);
    }
}

//  Decode a buffer that may be anything. When it decodes, the message must
//  encode again to a frame that decodes to the same message, and msgpack-c
//  must agree that the buffer is well formed.
static int
s_decode_anything (const uint8_t *data, size_t size)
{
    uint8_t *copy = (uint8_t *) malloc (size ? size : 1);
    assert_non_null (copy);
    if (size)
        memcpy (copy, data, size);
    proto_msg_t msg;
    char err [256] = "";
    int rc = proto_decode (copy, size, &msg, err, sizeof (err));
    if (rc == 0) {
        s_assert_msgpack_agrees (copy, size);
        zframe_t *frame = proto_encode (&msg);
        assert_non_null (frame);
        proto_msg_t again;
        assert_int_equal (proto_decode (zframe_data (frame), zframe_size (frame),
                                        &again, NULL, 0), 0);
        s_assert_msg_equal (&msg, &again);
        proto_msg_reset (&again);
        zframe_destroy (&frame);
        proto_msg_reset (&msg);
    }
    else {
        assert_int_equal (rc, -1);
        assert_true (s_msg_is_zero (&msg));
        assert_true (strlen (err) > 0);
    }
    free (copy);
    return rc;
}

//  Random msgpack-like bytes: mostly well-formed values of every type, the
//  field and member names the decoder knows, and now and then a wrong byte or a
//  lying length.
typedef struct {
    uint8_t data [512];
    size_t size;
} s_fuzz_buffer_t;

static void
s_fuzz_put (s_fuzz_buffer_t *buffer, uint8_t byte)
{
    if (buffer->size < sizeof (buffer->data))
        buffer->data [buffer->size++] = byte;
}

static void
s_fuzz_key (s_fuzz_buffer_t *buffer)
{
    static const char *names [] = {
        //  fields
        "request_id", "text", "chat", "stops", "tool_calls", "max_tokens", "sampling",
        "ignore_eos", "finish", "prompt_tokens", "completion_tokens", "status",
        "tokens", "stop_tokens", "version", "fingerprint", "n_ctx", "n_blocks",
        "block_size", "n_vocab", "step_id", "copies", "frees", "seqs", "outs",
        "workers", "running", "waiting", "kv_blocks_used", "kv_blocks_total",
        "prefix_queries", "prefix_hits", "preemptions",
        //  members of seqs, outs and sampling
        "seq_id", "pos", "blocks", "n_prompt", "first", "sample", "masked_tokens",
        "token", "logprob", "top", "temperature", "top_k", "top_p", "min_p",
        "presence_penalty", "frequency_penalty", "repetition_penalty", "seed",
        "min_tokens", "n_logprobs", "logit_bias",
        //  version 1's, and nobody's
        "slot", "n_slots", "unknown"
    };
    const char *name = names [s_rng_below (sizeof (names) / sizeof (names [0]))];
    size_t length = strlen (name);
    s_fuzz_put (buffer, (uint8_t) (0xa0 | length));
    for (size_t index = 0; index < length; index++)
        s_fuzz_put (buffer, (uint8_t) name [index]);
}

static void
s_fuzz_value (s_fuzz_buffer_t *buffer, int depth)
{
    uint32_t choice = s_rng_below (depth < 4 ? 14 : 9);
    switch (choice) {
        case 0:
        case 1:
            s_fuzz_put (buffer, (uint8_t) s_rng_below (0x80));          //  fixint
            break;
        case 2: {
            uint32_t width_log = s_rng_below (4);                       //  uint 8..64
            s_fuzz_put (buffer, (uint8_t) (0xcc + width_log));
            for (uint32_t index = 0; index < (1u << width_log); index++)
                s_fuzz_put (buffer, (uint8_t) (s_rng_below (2) ? 0 : s_rng_next ()));
            break;
        }
        case 3:
            s_fuzz_put (buffer, (uint8_t) (0xe0 | s_rng_below (32)));  //  negative
            break;
        case 4:
            s_fuzz_put (buffer, 0xca);                                  //  float32
            for (int index = 0; index < 4; index++)
                s_fuzz_put (buffer, (uint8_t) s_rng_next ());
            break;
        case 5:
            s_fuzz_put (buffer, 0xcb);                                  //  float64
            s_fuzz_put (buffer, (uint8_t) (s_rng_below (2) ? 0x3f : s_rng_next ()));
            for (int index = 0; index < 7; index++)
                s_fuzz_put (buffer, (uint8_t) s_rng_next ());
            break;
        case 6: {
            uint32_t length = s_rng_below (6);                          //  string
            s_fuzz_put (buffer, (uint8_t) (0xa0 | length));
            for (uint32_t index = 0; index < length; index++)
                s_fuzz_put (buffer, (uint8_t) (s_rng_below (16) ? 'a' + index : 0));
            break;
        }
        case 7:
            s_fuzz_put (buffer, (uint8_t) (0xc0 + s_rng_below (4)));   //  nil, c1, bool
            break;
        case 8:
            if (s_rng_below (4) == 0) {                                 //  a lying header
                s_fuzz_put (buffer, (uint8_t) (0xc4 + s_rng_below (0x1c)));
                for (int index = 0; index < 4; index++)
                    s_fuzz_put (buffer, (uint8_t) s_rng_next ());
            }
            else
                s_fuzz_put (buffer, (uint8_t) s_rng_next ());           //  any byte
            break;
        case 9: {
            //  a pair [token, float], what logit_bias and top hold
            s_fuzz_put (buffer, 0x92);
            s_fuzz_put (buffer, (uint8_t) s_rng_below (0x80));
            s_fuzz_put (buffer, 0xca);
            for (int index = 0; index < 4; index++)
                s_fuzz_put (buffer, (uint8_t) (s_rng_below (2) ? 0x3f : s_rng_next ()));
            break;
        }
        case 10:
        case 11: {
            uint32_t count = s_rng_below (5);                           //  array
            s_fuzz_put (buffer, (uint8_t) (0x90 | count));
            for (uint32_t index = 0; index < count; index++)
                s_fuzz_value (buffer, depth + 1);
            break;
        }
        default: {
            uint32_t count = s_rng_below (6);                           //  map
            s_fuzz_put (buffer, (uint8_t) (0x80 | count));
            for (uint32_t index = 0; index < count; index++) {
                s_fuzz_key (buffer);
                s_fuzz_value (buffer, depth + 1);
            }
            break;
        }
    }
}

static void
test_random_garbage (void **state)
{
    (void) state;
    s_fuzz_buffer_t buffer;
    int decoded = 0;

    //  Every frame of one and two bytes
    for (size_t first = 0; first < 256; first++) {
        buffer.data [0] = (uint8_t) first;
        if (s_decode_anything (buffer.data, 1) == 0)
            decoded++;
        for (size_t second = 0; second < 256; second++) {
            buffer.data [1] = (uint8_t) second;
            if (s_decode_anything (buffer.data, 2) == 0)
                decoded++;
        }
    }
    //  Fully random buffers
    s_rng_seed (20260102);
    for (int round = 0; round < 5000; round++) {
        size_t size = s_rng_below (96);
        for (size_t index = 0; index < size; index++)
            buffer.data [index] = (uint8_t) s_rng_next ();
        if (s_decode_anything (buffer.data, size) == 0)
            decoded++;
    }
    //  Buffers that look like messages: [kind, {name: value ...}]
    int structured = 0;
    for (int round = 0; round < 30000; round++) {
        buffer.size = 0;
        s_fuzz_put (&buffer, 0x92);
        s_fuzz_put (&buffer, (uint8_t) (s_rng_below (16) ? 1 + s_rng_below (14)
                                                         : s_rng_below (256)));
        uint32_t n_entries = s_rng_below (6);
        uint32_t n_claimed = s_rng_below (16) ? n_entries : s_rng_below (16);
        s_fuzz_put (&buffer, (uint8_t) (0x80 | n_claimed));
        for (uint32_t entry = 0; entry < n_entries; entry++) {
            s_fuzz_key (&buffer);
            s_fuzz_value (&buffer, 0);
        }
        if (s_decode_anything (buffer.data, buffer.size) == 0)
            structured++;
    }
    //  Enough of them must have decoded, or the generator tests little
    print_message ("# random garbage: %d short buffers and %d structured ones decoded\n",
                   decoded, structured);
    assert_true (structured > 1000);
}

static void
test_bit_flips (void **state)
{
    (void) state;
    int decoded = 0, refused = 0;
    for (int kind = 1; kind < PROTO_KIND_COUNT; kind++) {
        for (int variant = 0; variant < 3; variant++) {
            proto_msg_t msg;
            s_fill_sample (&msg, (proto_kind_t) kind, variant);
            zframe_t *frame = proto_encode (&msg);
            assert_non_null (frame);
            size_t size = zframe_size (frame);
            uint8_t *bytes = (uint8_t *) malloc (size);
            assert_non_null (bytes);
            for (size_t bit = 0; bit < size * 8; bit++) {
                memcpy (bytes, zframe_data (frame), size);
                bytes [bit / 8] ^= (uint8_t) (1u << (bit % 8));
                if (s_decode_anything (bytes, size) == 0)
                    decoded++;
                else
                    refused++;
            }
            free (bytes);
            zframe_destroy (&frame);
            proto_msg_reset (&msg);
        }
    }
    assert_true (decoded > 0);
    assert_true (refused > 0);
    print_message ("# bit flips: %d decoded, %d refused\n", decoded, refused);
}

static void
test_frame_shape_errors (void **state)
{
    (void) state;
    s_expect_error ("", 0, "frame: empty");
    s_expect_error ("\x81\x01\x02", 3, "frame: expected an array [kind, fields], got a map");
    s_expect_error ("\x93\x02\x80\x00", 4, "expected an array of 2 elements");
    s_expect_error ("\x91\x02", 2, "expected an array of 2 elements");
    s_expect_error ("\x92\x00\x80", 3, "frame: unknown kind 0");
    s_expect_error ("\x92\x11\x80", 3, "frame: unknown kind 17");
    s_expect_error ("\x92\xcc\xc8\x80", 4, "frame: unknown kind 200");
    s_expect_error ("\x92\xff\x80", 3, "frame: unknown kind -1");
    s_expect_error ("\x92\xd0\x80\x80", 4, "frame: unknown kind -128");
    s_expect_error ("\x92\xcf\xff\xff\xff\xff\xff\xff\xff\xff\x80", 11,
                    "frame: unknown kind 18446744073709551615");
    s_expect_error ("\x92\xa1x\x80", 4, "the kind is a string, not a positive integer");
    s_expect_error ("\x92\xca\x40\x00\x00\x00\x80", 7, "the kind is a float");
    s_expect_error ("\x92\x02\x91\x01", 4, "CANCEL: expected a map of fields, got an array");
    s_expect_error ("\x92\x02\xc0", 3, "CANCEL: expected a map of fields, got nil");
    s_expect_error ("\x92\x02\x81\x01\x02", 5, "CANCEL: field name 0 is an unsigned integer");
    s_expect_error ("\x92\x02\x81\xc4\x01x\x02", 7, "field name 0 is binary data");
    s_expect_error ("\xc1", 1, "never-used byte 0xc1");

    //  Trailing bytes after a complete message
    s_expect_error ("\x92\x0c\x80\x00", 4, "HEARTBEAT: 1 bytes of trailing garbage");
    s_expect_error ("\x92\x0c\x80\x92\x0c\x80", 6, "3 bytes of trailing garbage");

    //  An integer kind written in a wider form than needed is still fine
    proto_msg_t msg;
    assert_int_equal (proto_decode ("\x92\xd3\x00\x00\x00\x00\x00\x00\x00\x0d\x80", 11,
                                    &msg, NULL, 0), 0);
    assert_int_equal (msg.kind, PROTO_BYE);
    proto_msg_reset (&msg);

    //  A frame over the size limit is refused before it is read
    size_t size = (size_t) PROTO_MAX_FRAME_BYTES + 1;
    uint8_t *big = (uint8_t *) malloc (size);
    assert_non_null (big);
    memcpy (big, "\x92\x0c\x80", 3);
    s_expect_error (big, size, "over the limit of 67108864 bytes");
    free (big);

    //  No msg, no data, no room for the error: no crash
    assert_int_equal (proto_decode ("\x92\x0c\x80", 3, NULL, NULL, 0), -1);
    assert_int_equal (proto_decode (NULL, 3, &msg, NULL, 0), -1);
    assert_true (s_msg_is_zero (&msg));
    assert_int_equal (proto_decode ("\x92\x00\x80", 3, &msg, NULL, 0), -1);
    char tiny [8];
    assert_int_equal (proto_decode ("\x92\x00\x80", 3, &msg, tiny, sizeof (tiny)), -1);
    assert_string_equal (tiny, "frame: ");
    char one [1] = { 'x' };
    assert_int_equal (proto_decode ("\x92\x00\x80", 3, &msg, one, 1), -1);
    assert_int_equal (one [0], 0);
}

static void
test_field_type_errors (void **state)
{
    (void) state;
    s_writer_t writer;

    s_writer_start (&writer, PROTO_CANCEL, 1);
    s_writer_key (&writer, "request_id");
    msgpack_pack_str_with_body (&writer.packer, "12", 2);
    s_writer_expect_error (&writer,
        "CANCEL: field 'request_id': expected an unsigned integer, got a string");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "text");
    msgpack_pack_uint32 (&writer.packer, 5);
    s_writer_expect_error (&writer,
        "GENERATE: field 'text': expected a string, got an unsigned integer");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "max_tokens");
    msgpack_pack_int32 (&writer.packer, -1);
    s_writer_expect_error (&writer,
        "GENERATE: field 'max_tokens': expected an unsigned integer, got the negative value -1");

    s_writer_start (&writer, PROTO_GENERATE, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_int64 (&writer.packer, INT64_MIN);
    s_writer_key (&writer, "text");
    msgpack_pack_str_with_body (&writer.packer, "x", 1);
    s_writer_expect_error (&writer, "negative value -9223372036854775808");

    s_writer_start_generate (&writer, 1);
    s_writer_uint (&writer, "max_tokens", (uint64_t) UINT32_MAX + 1);
    s_writer_expect_error (&writer,
        "GENERATE: field 'max_tokens': value 4294967296 does not fit in 32 bits");

    //  Sampling members: a path of field and member
    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_uint (&writer, "temperature", 1);
    s_writer_expect_error (&writer,
        "GENERATE: field 'sampling.temperature': expected a float, got an unsigned integer");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "top_p");
    msgpack_pack_double (&writer.packer, 1e300);
    s_writer_expect_error (&writer,
        "GENERATE: field 'sampling.top_p': value 1e+300 does not fit in a float");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "min_p");
    msgpack_pack_nil (&writer.packer);
    s_writer_expect_error (&writer,
        "GENERATE: field 'sampling.min_p': expected a float, got nil");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_float (&writer, "top_k", 40.0f);
    s_writer_expect_error (&writer,
        "GENERATE: field 'sampling.top_k': expected an unsigned integer, got a float");

    s_writer_start (&writer, PROTO_SUBMIT, 3);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_uint (&writer, "n_logprobs", (uint64_t) UINT32_MAX + 1);
    s_writer_expect_error (&writer,
        "SUBMIT: field 'sampling.n_logprobs': value 4294967296 does not fit in 32 bits");

    //  sampling itself of the wrong type
    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_expect_error (&writer,
        "GENERATE: field 'sampling': expected a map, got an array");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer,
        "GENERATE: field 'sampling': expected a string, got an unsigned integer");

    s_writer_start (&writer, PROTO_OUTPUT, 2);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_uint (&writer, "finish", 4);
    s_writer_expect_error (&writer,
        "OUTPUT: field 'finish': 4 is not a finish reason");

    s_writer_start (&writer, PROTO_OUTPUT, 2);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_key (&writer, "text");
    msgpack_pack_str_with_body (&writer.packer, "ab\0cd", 5);
    s_writer_expect_error (&writer, "OUTPUT: field 'text': text holds a NUL byte at offset 2");

    s_writer_start (&writer, PROTO_REJECT, 1);
    s_writer_key (&writer, "text");
    msgpack_pack_bin_with_body (&writer.packer, "abc", 3);
    s_writer_expect_error (&writer, "REJECT: field 'text': expected a string, got binary data");

    s_writer_start (&writer, PROTO_TOKENS, 2);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_map (&writer.packer, 0);
    s_writer_expect_error (&writer, "TOKENS: field 'tokens': expected an array, got a map");

    s_writer_start (&writer, PROTO_TOKENS, 2);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 3);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 2);
    msgpack_pack_int32 (&writer.packer, -7);
    s_writer_expect_error (&writer,
        "TOKENS: field 'tokens[2]': expected an unsigned integer, got the negative value -7");

    s_writer_start (&writer, PROTO_SUBMIT, 2);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_uint64 (&writer.packer, 1ull << 40);
    s_writer_expect_error (&writer, "SUBMIT: field 'tokens[1]': value 1099511627776 does not fit");

    s_writer_start (&writer, PROTO_HELLO, 3);
    s_writer_uint (&writer, "version", PROTO_VERSION);
    s_writer_uint (&writer, "fingerprint", 1);
    s_writer_key (&writer, "block_size");
    msgpack_pack_int8 (&writer.packer, -16);
    s_writer_expect_error (&writer,
        "HELLO: field 'block_size': expected an unsigned integer, got the negative value -16");

    s_writer_start (&writer, PROTO_STATUS, 1);
    s_writer_key (&writer, "preemptions");
    msgpack_pack_double (&writer.packer, 3.0);
    s_writer_expect_error (&writer,
        "STATUS: field 'preemptions': expected an unsigned integer, got a float");

    //  A failure after fields were allocated leaves nothing behind (valgrind / ASan)
    s_writer_start (&writer, PROTO_SUBMIT, 4);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 2);
    s_writer_key (&writer, "stop_tokens");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 2);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 2);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, 1);
    s_writer_pair (&writer, 3, 1.0f);
    s_writer_key (&writer, "seed");
    msgpack_pack_true (&writer.packer);
    s_writer_expect_error (&writer,
        "SUBMIT: field 'sampling.seed': expected an unsigned integer, got a boolean");

    //  Duplicate field
    s_writer_start (&writer, PROTO_CANCEL, 2);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_uint (&writer, "request_id", 2);
    s_writer_expect_error (&writer, "CANCEL: field 'request_id': appears twice");

    s_writer_start_generate (&writer, 2);
    s_writer_key (&writer, "text");
    msgpack_pack_str_with_body (&writer.packer, "a", 1);
    s_writer_key (&writer, "text");
    msgpack_pack_str_with_body (&writer.packer, "b", 1);
    s_writer_expect_error (&writer, "GENERATE: field 'text': appears twice");

    s_writer_start_generate (&writer, 2);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 0);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 0);
    s_writer_expect_error (&writer, "GENERATE: field 'sampling': appears twice");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 3);
    s_writer_uint (&writer, "seed", 1);
    s_writer_float (&writer, "temperature", 1.0f);
    s_writer_uint (&writer, "seed", 2);
    s_writer_expect_error (&writer, "GENERATE: field 'sampling.seed': appears twice");
}

//  Booleans (ignore_eos, first, sample) are msgpack booleans and nothing else.
static void
test_boolean_type_errors (void **state)
{
    (void) state;
    s_writer_t writer;
    s_writer_start_generate (&writer, 1);
    s_writer_uint (&writer, "ignore_eos", 1);
    s_writer_expect_error (&writer,
        "GENERATE: field 'ignore_eos': expected a boolean, got an unsigned integer");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "ignore_eos");
    msgpack_pack_str_with_body (&writer.packer, "true", 4);
    s_writer_expect_error (&writer,
        "GENERATE: field 'ignore_eos': expected a boolean, got a string");

    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "first");
    msgpack_pack_nil (&writer.packer);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].first': expected a boolean, got nil");

    s_writer_start_step (&writer, 2);
    s_writer_start_seq (&writer, 3, 1);
    s_writer_start_seq (&writer, 5, 2);
    s_writer_key (&writer, "first");
    msgpack_pack_true (&writer.packer);
    s_writer_uint (&writer, "sample", 0);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[1].sample': expected a boolean, got an unsigned integer");

    //  true and false both decode, whatever the order of the members
    proto_msg_t msg;
    s_writer_start_step (&writer, 1);
    msgpack_pack_map (&writer.packer, 5);
    s_writer_key (&writer, "sample");
    msgpack_pack_true (&writer.packer);
    s_writer_key (&writer, "first");
    msgpack_pack_false (&writer.packer);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_uint (&writer, "pos", 3);
    s_writer_uint (&writer, "seq_id", 9);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.n_seqs, 1);
    assert_true (msg.seqs [0].sample);
    assert_false (msg.seqs [0].first);
    assert_true (msg.seqs [0].seq_id == 9);
    proto_msg_reset (&msg);

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "ignore_eos");
    msgpack_pack_true (&writer.packer);
    s_writer_expect_ok (&writer, &msg);
    assert_true (msg.ignore_eos);
    proto_msg_reset (&msg);
}

static void
test_required_fields (void **state)
{
    (void) state;
    s_writer_t writer;
    s_writer_start (&writer, PROTO_CANCEL, 0);
    s_writer_expect_error (&writer, "CANCEL: field 'request_id': required but missing");

    s_writer_start (&writer, PROTO_ERROR, 1);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_expect_error (&writer, "ERROR: field 'status': required but missing");

    s_writer_start (&writer, PROTO_SUBMIT, 1);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_expect_error (&writer, "SUBMIT: field 'tokens': required but missing");

    s_writer_start (&writer, PROTO_HELLO, 1);
    s_writer_uint (&writer, "version", 1);
    s_writer_expect_error (&writer, "HELLO: field 'fingerprint': required but missing");

    s_writer_start (&writer, PROTO_STEP, 1);
    s_writer_uint (&writer, "step_id", 1);
    s_writer_expect_error (&writer, "STEP: field 'seqs': required but missing");

    s_writer_start (&writer, PROTO_STEP_RESULT, 0);
    s_writer_expect_error (&writer, "STEP_RESULT: field 'step_id': required but missing");

    //  Required members: a seq's seq_id, pos, tokens; an out's seq_id, token, logprob
    s_writer_start_step (&writer, 1);
    msgpack_pack_map (&writer.packer, 2);
    s_writer_uint (&writer, "pos", 0);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_expect_error (&writer, "STEP: field 'seqs[0]': member 'seq_id' is missing");

    s_writer_start_step (&writer, 1);
    msgpack_pack_map (&writer.packer, 2);
    s_writer_uint (&writer, "seq_id", 0);
    s_writer_uint (&writer, "pos", 0);
    s_writer_expect_error (&writer, "STEP: field 'seqs[0]': member 'tokens' is missing");

    s_writer_start_step_result (&writer, 1);
    msgpack_pack_map (&writer.packer, 2);
    s_writer_uint (&writer, "token", 1);
    s_writer_float (&writer, "logprob", -1.0f);
    s_writer_expect_error (&writer,
        "STEP_RESULT: field 'outs[0]': member 'seq_id' is missing");

    //  Optional fields and members default to zero
    proto_msg_t msg;
    s_writer_start (&writer, PROTO_HELLO, 2);
    s_writer_uint (&writer, "fingerprint", 99);
    s_writer_uint (&writer, "version", 1);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.kind, PROTO_HELLO);
    assert_int_equal (msg.version, 1);
    assert_true (msg.fingerprint == 99);
    assert_int_equal (msg.n_ctx, 0);
    assert_int_equal (msg.n_blocks, 0);
    assert_int_equal (msg.block_size, 0);
    assert_string_equal (msg.text, "");
    proto_msg_reset (&msg);

    s_writer_start (&writer, PROTO_STATUS, 0);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.kind, PROTO_STATUS);
    assert_int_equal (msg.workers, 0);
    assert_int_equal (msg.kv_blocks_total, 0);
    assert_true (msg.preemptions == 0);
    proto_msg_reset (&msg);

    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 3, 4);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.n_copies, 0);
    assert_null (msg.copies);
    assert_int_equal (msg.n_frees, 0);
    assert_null (msg.frees);
    assert_int_equal (msg.seqs [0].n_blocks, 0);
    assert_false (msg.seqs [0].first);
    assert_false (msg.seqs [0].sample);
    assert_true (s_sampling_is_zero (&msg.seqs [0].sampling));
    proto_msg_reset (&msg);

    s_writer_start_step_result (&writer, 1);
    s_writer_start_out (&writer, 3, 4);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.outs [0].n_top, 0);
    assert_null (msg.outs [0].top_tokens);
    assert_null (msg.outs [0].top_logprobs);
    proto_msg_reset (&msg);

    s_writer_start_generate (&writer, 0);
    s_writer_expect_ok (&writer, &msg);
    assert_true (s_sampling_is_zero (&msg.sampling));
    assert_false (msg.ignore_eos);
    proto_msg_reset (&msg);
}

//  Fields the decoder does not know are skipped, whatever they hold.
static void
test_unknown_fields_skipped (void **state)
{
    (void) state;
    s_writer_t writer;
    proto_msg_t msg;
    s_writer_start (&writer, PROTO_GENERATE, 9);
    s_writer_key (&writer, "future_map");
    msgpack_pack_map (&writer.packer, 2);
    msgpack_pack_uint32 (&writer.packer, 1);        //  non-string keys are fine here
    msgpack_pack_array (&writer.packer, 3);
    msgpack_pack_nil (&writer.packer);
    msgpack_pack_true (&writer.packer);
    msgpack_pack_double (&writer.packer, 2.5);
    msgpack_pack_str_with_body (&writer.packer, "k", 1);
    msgpack_pack_int64 (&writer.packer, -5);
    s_writer_uint (&writer, "request_id", 42);
    s_writer_key (&writer, "future_bin");
    msgpack_pack_bin_with_body (&writer.packer, "\0\1\2", 3);
    s_writer_key (&writer, "future_ext");
    msgpack_pack_ext_with_body (&writer.packer, "abcdefghijklmnopq", 17, 7);
    s_writer_key (&writer, "future_fixext");
    msgpack_pack_ext_with_body (&writer.packer, "abcd", 4, -1);
    s_writer_key (&writer, "seqs");                 //  another kind's field: skipped
    msgpack_pack_str_with_body (&writer.packer, "not an array", 12);
    s_writer_key (&writer, "");
    msgpack_pack_float (&writer.packer, 1.0f);
    s_writer_key (&writer, "text");
    msgpack_pack_str_with_body (&writer.packer, "hi", 2);
    s_writer_key (&writer, "TEXT");                 //  names are case-sensitive
    msgpack_pack_uint32 (&writer.packer, 7);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.kind, PROTO_GENERATE);
    assert_true (msg.request_id == 42);
    assert_string_equal (msg.text, "hi");
    assert_int_equal (msg.n_seqs, 0);
    proto_msg_reset (&msg);

    //  Fields and members written with wider integer forms, floats as float64
    s_writer_start_generate (&writer, 2);
    s_writer_key (&writer, "max_tokens");
    msgpack_pack_fix_uint64 (&writer.packer, 7);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 3);
    s_writer_key (&writer, "temperature");
    msgpack_pack_double (&writer.packer, 0.5);
    s_writer_key (&writer, "top_k");
    msgpack_pack_fix_int8 (&writer.packer, 5);
    s_writer_key (&writer, "seed");
    msgpack_pack_fix_uint16 (&writer.packer, 300);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.max_tokens, 7);
    assert_true (msg.sampling.temperature == 0.5f);
    assert_int_equal (msg.sampling.top_k, 5);
    assert_true (msg.sampling.seed == 300);
    proto_msg_reset (&msg);

    //  An unknown member inside sampling (at the top and inside a seq), inside a seq
    //  and inside an out is skipped, and the members around it are read
    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 3);
    s_writer_float (&writer, "temperature", 0.25f);
    s_writer_key (&writer, "typical_p");
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_map (&writer.packer, 1);
    msgpack_pack_nil (&writer.packer);
    msgpack_pack_bin_with_body (&writer.packer, "x", 1);
    msgpack_pack_float (&writer.packer, 0.9f);
    s_writer_uint (&writer, "seed", 11);
    s_writer_expect_ok (&writer, &msg);
    assert_true (msg.sampling.temperature == 0.25f);
    assert_true (msg.sampling.seed == 11);
    proto_msg_reset (&msg);

    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 5, 3);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 2);
    s_writer_key (&writer, "mirostat");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "tau");
    msgpack_pack_float (&writer.packer, 5.0f);
    s_writer_uint (&writer, "top_k", 12);
    s_writer_key (&writer, "lora");                 //  unknown member of the seq
    msgpack_pack_str_with_body (&writer.packer, "none", 4);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.seqs [0].sampling.top_k, 12);
    assert_true (msg.seqs [0].seq_id == 3);
    proto_msg_reset (&msg);

    s_writer_start_step_result (&writer, 1);
    s_writer_start_out (&writer, 4, 6);
    s_writer_key (&writer, "text_offset");
    msgpack_pack_uint32 (&writer.packer, 17);
    s_writer_expect_ok (&writer, &msg);
    assert_true (msg.outs [0].seq_id == 6);
    assert_int_equal (msg.outs [0].token, 5);
    proto_msg_reset (&msg);

    //  Nested too deep inside an unknown field
    s_writer_start (&writer, PROTO_BYE, 1);
    s_writer_key (&writer, "deep");
    for (int level = 0; level < 100; level++)
        msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_nil (&writer.packer);
    s_writer_expect_error (&writer, "BYE: values nested more than 32 levels deep");

    //  ... and inside an unknown member of sampling
    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "deep");
    for (int level = 0; level < 100; level++)
        msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_nil (&writer.packer);
    s_writer_expect_error (&writer,
        "GENERATE: field 'sampling': values nested more than 32 levels deep");

    //  ... while a few levels are fine
    s_writer_start (&writer, PROTO_BYE, 1);
    s_writer_key (&writer, "deep");
    for (int level = 0; level < 20; level++) {
        msgpack_pack_map (&writer.packer, 1);
        msgpack_pack_nil (&writer.packer);          //  the key; the value is the next map
    }
    msgpack_pack_nil (&writer.packer);
    s_writer_expect_ok (&writer, &msg);
    proto_msg_reset (&msg);

    //  The never-used byte inside an unknown field, and inside an unknown member
    s_expect_error ("\x92\x0d\x81\xa1x\xc1", 6, "never-used byte 0xc1");
    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "x");
    s_writer_raw (&writer, "\xc1", 1);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].sampling': malformed msgpack: the never-used byte 0xc1");
}

//  A version 1 peer's fields (top-level temperature and seed, n_slots, a seq's slot)
//  are not read since version 2: they are skipped, and HELLO still tells the version,
//  so that the scheduler can refuse the worker with a reason.
static void
test_version_1_fields_are_not_read (void **state)
{
    (void) state;
    assert_int_equal (PROTO_VERSION, 3);
    s_writer_t writer;
    proto_msg_t msg;

    s_writer_start_generate (&writer, 2);
    s_writer_float (&writer, "temperature", 0.5f);
    s_writer_uint (&writer, "seed", 7);
    s_writer_expect_ok (&writer, &msg);
    assert_true (s_sampling_is_zero (&msg.sampling));
    proto_msg_reset (&msg);

    s_writer_start (&writer, PROTO_HELLO, 4);
    s_writer_uint (&writer, "version", 1);
    s_writer_uint (&writer, "fingerprint", 5);
    s_writer_uint (&writer, "n_ctx", 2048);
    s_writer_uint (&writer, "n_slots", 16);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.version, 1);
    assert_int_equal (msg.n_blocks, 0);
    assert_int_equal (msg.block_size, 0);
    proto_msg_reset (&msg);

    //  A version 1 STEP has no seq_id: refused
    s_writer_start_step (&writer, 1);
    msgpack_pack_map (&writer.packer, 5);
    s_writer_uint (&writer, "slot", 0);
    s_writer_uint (&writer, "pos", 0);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_float (&writer, "temperature", 0.0f);
    s_writer_uint (&writer, "seed", 0);
    s_writer_expect_error (&writer, "STEP: field 'seqs[0]': member 'seq_id' is missing");
}

//  Headers that claim more than the frame holds, and arrays over the limits.
static void
test_lying_headers_and_limits (void **state)
{
    (void) state;
    //  10-byte frames that claim 4 billion elements or bytes
    s_expect_error ("\x92\x06\x81\xa1x\xdd\xff\xff\xff\xff", 10,
                    "an array of 4294967295 elements, 0 bytes left");
    s_expect_error ("\xdd\xff\xff\xff\xff\x00\x00\x00\x00\x00", 10,
                    "frame: truncated: an array of 4294967295 elements, 5 bytes left");
    s_expect_error ("\x92\x06\xdf\xff\xff\xff\xff\x00\x00\x00", 10,
                    "TOKENS: truncated: a map of 4294967295 entries, 3 bytes left");
    s_expect_error ("\x92\x06\x81\xa1x\xdf\xff\xff\xff\xff", 10,
                    "a map of 4294967295 entries, 0 bytes left");
    s_expect_error ("\x92\x04\x81\xa4text\xdb\xff\xff\xff\xff", 13,
                    "ERROR: field 'text': truncated: a string of 4294967295 bytes");
    s_expect_error ("\x92\x06\x81\xa1x\xc6\xff\xff\xff\xff", 10,
                    "a value of 4294967295 bytes, 0 bytes left");
    s_expect_error ("\x92\x06\x81\xa1x\xc9\xff\xff\xff\xff", 10,
                    "truncated: a value of 4294967296 bytes");
    //  ... and for known fields the limit is named
    s_expect_error ("\x92\x06\x81\xa6tokens\xdd\xff\xff\xff\xff", 15,
                    "TOKENS: field 'tokens': array of 4294967295 elements is over the limit of 1048576");
    s_expect_error ("\x92\x0a\x81\xa4seqs\xdd\x00\x01\x00\x00", 13,
                    "STEP: field 'seqs': array of 65536 elements is over the limit of 4096");
    s_expect_error ("\x92\x0a\x81\xa6" "copies\xdd\xff\xff\xff\xff", 15,
                    "STEP: field 'copies': array of 4294967295 elements is over the limit of 1048576");
    s_expect_error ("\x92\x0a\x81\xa5" "frees\xdd\x00\x10\x00\x01", 14,
                    "STEP: field 'frees': array of 1048577 elements is over the limit of 1048576");
    //  An honest array of 3 in a frame that ends early
    s_expect_error ("\x92\x06\x82\xaarequest_id\x01\xa6tokens\x93\x01\x02", 25,
                    "TOKENS: field 'tokens': truncated: an array of 3 elements, 2 bytes left");

    //  Real arrays, one over each limit
    s_writer_t writer;
    s_writer_start_step (&writer, 9000);
    for (int index = 0; index < 9000; index++)
        msgpack_pack_map (&writer.packer, 0);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs': array of 9000 elements is over the limit of 4096");

    s_writer_start_step_result (&writer, PROTO_MAX_STEP_SEQS + 1);
    for (int index = 0; index < PROTO_MAX_STEP_SEQS + 1; index++)
        msgpack_pack_map (&writer.packer, 0);
    s_writer_expect_error (&writer,
        "STEP_RESULT: field 'outs': array of 4097 elements is over the limit of 4096");

    s_writer_start (&writer, PROTO_TOKENS, 2);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, PROTO_MAX_TOKENS + 1);
    for (uint32_t index = 0; index < PROTO_MAX_TOKENS + 1; index++)
        msgpack_pack_uint32 (&writer.packer, index & 0x7f);
    s_writer_expect_error (&writer,
        "TOKENS: field 'tokens': array of 1048577 elements is over the limit of 1048576");

    s_writer_start (&writer, PROTO_SUBMIT, 3);
    s_writer_uint (&writer, "request_id", 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_key (&writer, "stop_tokens");
    msgpack_pack_array (&writer.packer, PROTO_MAX_TOKENS + 1);
    for (uint32_t index = 0; index < PROTO_MAX_TOKENS + 1; index++)
        msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer, "SUBMIT: field 'stop_tokens': array of 1048577");

    //  A seq's blocks over the limit
    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "blocks");
    msgpack_pack_array (&writer.packer, PROTO_MAX_TOKENS + 1);
    for (uint32_t index = 0; index < PROTO_MAX_TOKENS + 1; index++)
        msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].blocks': array of 1048577 elements is over the limit of 1048576");

    //  logit_bias: PROTO_MAX_BIAS entries decode, one more is refused; the same in a seq
    proto_msg_t msg;
    for (uint32_t count = PROTO_MAX_BIAS; count <= PROTO_MAX_BIAS + 1; count++) {
        s_writer_start_generate (&writer, 1);
        s_writer_key (&writer, "sampling");
        msgpack_pack_map (&writer.packer, 1);
        s_writer_key (&writer, "logit_bias");
        msgpack_pack_array (&writer.packer, count);
        for (uint32_t index = 0; index < count; index++)
            s_writer_pair (&writer, index, -1.0f);
        if (count == PROTO_MAX_BIAS) {
            s_writer_expect_ok (&writer, &msg);
            assert_int_equal (msg.sampling.n_bias, PROTO_MAX_BIAS);
            assert_int_equal (msg.sampling.bias_tokens [PROTO_MAX_BIAS - 1],
                              PROTO_MAX_BIAS - 1);
            proto_msg_reset (&msg);
        }
        else
            s_writer_expect_error (&writer, "GENERATE: field 'sampling.logit_bias': "
                                   "array of 1025 elements is over the limit of 1024");
    }
    s_writer_start_step (&writer, 2);
    s_writer_start_seq (&writer, 3, 1);
    s_writer_start_seq (&writer, 4, 2);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, PROTO_MAX_BIAS + 1);
    for (uint32_t index = 0; index < PROTO_MAX_BIAS + 1; index++)
        s_writer_pair (&writer, index, 1.0f);
    s_writer_expect_error (&writer, "STEP: field 'seqs[1].sampling.logit_bias': "
                           "array of 1025 elements is over the limit of 1024");
    //  ... and a claimed count, without the entries
    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    s_writer_raw (&writer, "\xdd\xff\xff\xff\xff", 5);
    s_writer_expect_error (&writer, "GENERATE: field 'sampling.logit_bias': "
                           "array of 4294967295 elements is over the limit of 1024");

    //  top: PROTO_MAX_BEAM_CANDIDATES pairs decode, one more is refused
    for (uint32_t count = PROTO_MAX_BEAM_CANDIDATES; count <= PROTO_MAX_BEAM_CANDIDATES + 1; count++) {
        s_writer_start_step_result (&writer, 1);
        s_writer_start_out (&writer, 4, 1);
        s_writer_key (&writer, "top");
        msgpack_pack_array (&writer.packer, count);
        for (uint32_t index = 0; index < count; index++)
            s_writer_pair (&writer, index, -(float) index);
        if (count == PROTO_MAX_BEAM_CANDIDATES) {
            s_writer_expect_ok (&writer, &msg);
            assert_int_equal (msg.outs [0].n_top, PROTO_MAX_BEAM_CANDIDATES);
            assert_true (msg.outs [0].top_logprobs [PROTO_MAX_BEAM_CANDIDATES - 1]
                         == -(float) (PROTO_MAX_BEAM_CANDIDATES - 1));
            proto_msg_reset (&msg);
        }
        else
            s_writer_expect_error (&writer, "STEP_RESULT: field 'outs[0].top': "
                                   "array of 257 elements is over the limit of 256");
    }

    //  Text one byte over the limit
    size_t length = PROTO_MAX_STRING_BYTES + 1;
    char *text = (char *) malloc (length);
    assert_non_null (text);
    memset (text, 'z', length);
    s_writer_start (&writer, PROTO_REJECT, 1);
    s_writer_key (&writer, "text");
    msgpack_pack_str_with_body (&writer.packer, text, length);
    free (text);
    s_writer_expect_error (&writer,
        "REJECT: field 'text': text of 33554433 bytes is over the limit of 33554432");
}

//  STEP's seqs and STEP_RESULT's outs: maps inside arrays.
static void
test_nested_errors (void **state)
{
    (void) state;
    s_writer_t writer;

    //  An element that is not a map
    s_writer_start_step (&writer, 1);
    msgpack_pack_uint32 (&writer.packer, 5);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0]': expected a map, got an unsigned integer");

    //  A member missing in the second element
    s_writer_start_step (&writer, 2);
    for (int index = 0; index < 2; index++) {
        msgpack_pack_map (&writer.packer, index == 0 ? 3 : 2);
        s_writer_uint (&writer, "seq_id", 1);
        s_writer_key (&writer, "tokens");
        msgpack_pack_array (&writer.packer, 1);
        msgpack_pack_uint32 (&writer.packer, 1);
        if (index == 0)
            s_writer_uint (&writer, "pos", 0);
    }
    s_writer_expect_error (&writer, "STEP: field 'seqs[1]': member 'pos' is missing");

    //  A member of the wrong type: a map where a number belongs
    s_writer_start_step (&writer, 1);
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "seq_id");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_uint (&writer, "seq_id", 1);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].seq_id': expected an unsigned integer, got a map");

    //  A bad token deep inside
    s_writer_start_step (&writer, 2);
    for (int index = 0; index < 2; index++) {
        msgpack_pack_map (&writer.packer, 4);
        s_writer_uint (&writer, "seq_id", 1);
        s_writer_uint (&writer, "pos", 1);
        s_writer_key (&writer, "extra");             //  unknown member: skipped
        msgpack_pack_array (&writer.packer, 1);
        msgpack_pack_nil (&writer.packer);
        s_writer_key (&writer, "tokens");
        msgpack_pack_array (&writer.packer, 3);
        msgpack_pack_uint32 (&writer.packer, 1);
        msgpack_pack_uint32 (&writer.packer, 2);
        if (index == 1)
            msgpack_pack_str_with_body (&writer.packer, "3", 1);
        else
            msgpack_pack_uint32 (&writer.packer, 3);
    }
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[1].tokens[2]': expected an unsigned integer, got a string");

    //  A bad block id, a bad masked token
    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "blocks");
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_uint32 (&writer.packer, 0);
    msgpack_pack_int32 (&writer.packer, -1);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].blocks[1]': expected an unsigned integer, got the negative value -1");

    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "masked_tokens");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_uint64 (&writer.packer, 1ull << 32);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].masked_tokens[0]': value 4294967296 does not fit in 32 bits");

    //  A member twice; a member name that is not a string
    s_writer_start_step (&writer, 1);
    msgpack_pack_map (&writer.packer, 2);
    s_writer_uint (&writer, "n_prompt", 1);
    s_writer_uint (&writer, "n_prompt", 1);
    s_writer_expect_error (&writer, "STEP: field 'seqs[0].n_prompt': appears twice");

    s_writer_start_step_result (&writer, 1);
    msgpack_pack_map (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer,
        "STEP_RESULT: field 'outs[0]': expected a string, got an unsigned integer");

    //  outs: a missing logprob; a logprob of the wrong type
    s_writer_start_step_result (&writer, 1);
    msgpack_pack_map (&writer.packer, 2);
    s_writer_uint (&writer, "seq_id", 1);
    s_writer_uint (&writer, "token", 1);
    s_writer_expect_error (&writer,
        "STEP_RESULT: field 'outs[0]': member 'logprob' is missing");

    s_writer_start_step_result (&writer, 1);
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logprob");
    msgpack_pack_str_with_body (&writer.packer, "-1", 2);
    s_writer_expect_error (&writer,
        "STEP_RESULT: field 'outs[0].logprob': expected a float, got a string");

    //  A seq's tokens over the limit (claimed)
    s_writer_start_step (&writer, 1);
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, UINT32_MAX);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].tokens': array of 4294967295 elements is over the limit");
}

//  Errors inside a seq's sampling name the whole path, four levels deep, and a path
//  does not stay behind once its member has been read.
static void
test_sampling_errors_inside_seqs_have_paths (void **state)
{
    (void) state;
    s_writer_t writer;

    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_float (&writer, "top_k", 1.0f);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].sampling.top_k': expected an unsigned integer, got a float");

    s_writer_start_step (&writer, 2);
    s_writer_start_seq (&writer, 3, 1);
    s_writer_start_seq (&writer, 4, 2);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 2);
    s_writer_uint (&writer, "seed", UINT64_MAX);
    s_writer_uint (&writer, "min_tokens", 1ull << 32);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[1].sampling.min_tokens': value 4294967296 does not fit in 32 bits");

    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "repetition_penalty");
    msgpack_pack_double (&writer.packer, -1e39);
    s_writer_expect_error (&writer, "STEP: field 'seqs[0].sampling.repetition_penalty': "
                           "value -1e+39 does not fit in a float");

    //  A member twice inside the nested sampling; the sampling twice
    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 3);
    s_writer_uint (&writer, "seed", 1);
    s_writer_uint (&writer, "top_k", 2);
    s_writer_uint (&writer, "seed", 3);
    s_writer_expect_error (&writer, "STEP: field 'seqs[0].sampling.seed': appears twice");

    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 5, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_uint (&writer, "seed", 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 0);
    s_writer_expect_error (&writer, "STEP: field 'seqs[0].sampling': appears twice");

    //  The nested sampling not a map; its member name not a string
    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_nil (&writer.packer);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].sampling': expected a map, got nil");

    s_writer_start_step (&writer, 1);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 2);
    s_writer_uint (&writer, "seed", 1);
    msgpack_pack_true (&writer.packer);
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].sampling': expected a string, got a boolean");

    //  Five levels: an entry of a seq's logit_bias
    s_writer_start_step (&writer, 3);
    s_writer_start_seq (&writer, 3, 1);
    s_writer_start_seq (&writer, 3, 2);
    s_writer_start_seq (&writer, 4, 3);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, 3);
    s_writer_pair (&writer, 1, 1.0f);
    s_writer_pair (&writer, 2, 1.0f);
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_uint32 (&writer.packer, 3);
    msgpack_pack_str_with_body (&writer.packer, "1.0", 3);
    s_writer_expect_error (&writer, "STEP: field 'seqs[2].sampling.logit_bias[2]': "
                           "expected a float, got a string");

    //  After a seq's sampling (with logit_bias) was read, an error in a later member
    //  of the same seq, and in the next seq, has that member's own path
    s_writer_start_step (&writer, 1);
    msgpack_pack_map (&writer.packer, 3);
    s_writer_uint (&writer, "seq_id", 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, 1);
    s_writer_pair (&writer, 1, 1.0f);
    s_writer_key (&writer, "pos");
    msgpack_pack_str_with_body (&writer.packer, "0", 1);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].pos': expected an unsigned integer, got a string");

    s_writer_start_step (&writer, 2);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, 1);
    s_writer_pair (&writer, 1, 1.0f);
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "blocks");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_nil (&writer.packer);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[1].blocks[0]': expected an unsigned integer, got nil");

    s_writer_start_step (&writer, 2);
    s_writer_start_seq (&writer, 4, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_uint (&writer, "top_k", 1);
    msgpack_pack_map (&writer.packer, 1);
    s_writer_uint (&writer, "pos", 1);
    s_writer_expect_error (&writer, "STEP: field 'seqs[1]': member 'seq_id' is missing");
}

//  logit_bias and top are arrays of pairs [token, float]: exactly two elements, of
//  those types.
static void
test_pair_errors (void **state)
{
    (void) state;
    s_writer_t writer;

    //  A pair of 3, of 1, of 0
    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_array (&writer.packer, 3);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_float (&writer.packer, 0.5f);
    msgpack_pack_uint32 (&writer.packer, 7);
    s_writer_expect_error (&writer, "GENERATE: field 'sampling.logit_bias[0]': "
                           "expected a pair [token, value], got 3 elements");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, 2);
    s_writer_pair (&writer, 1, 0.5f);
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer, "GENERATE: field 'sampling.logit_bias[1]': "
                           "expected a pair [token, value], got 1 elements");

    s_writer_start_step_result (&writer, 1);
    s_writer_start_out (&writer, 4, 1);
    s_writer_key (&writer, "top");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_array (&writer.packer, 0);
    s_writer_expect_error (&writer, "STEP_RESULT: field 'outs[0].top[0]': "
                           "expected a pair [token, value], got 0 elements");

    s_writer_start_step_result (&writer, 2);
    s_writer_start_out (&writer, 3, 1);
    s_writer_start_out (&writer, 4, 2);
    s_writer_key (&writer, "top");
    msgpack_pack_array (&writer.packer, 3);
    s_writer_pair (&writer, 1, -0.5f);
    s_writer_pair (&writer, 2, -1.5f);
    msgpack_pack_array (&writer.packer, 3);
    msgpack_pack_uint32 (&writer.packer, 3);
    msgpack_pack_float (&writer.packer, -2.5f);
    msgpack_pack_nil (&writer.packer);
    s_writer_expect_error (&writer, "STEP_RESULT: field 'outs[1].top[2]': "
                           "expected a pair [token, value], got 3 elements");

    //  A pair that is not an array; a pair of the wrong types
    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_map (&writer.packer, 1);
    s_writer_float (&writer, "15043", -100.0f);
    s_writer_expect_error (&writer,
        "GENERATE: field 'sampling.logit_bias[0]': expected an array, got a map");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_int32 (&writer.packer, -3);
    msgpack_pack_float (&writer.packer, 1.0f);
    s_writer_expect_error (&writer, "GENERATE: field 'sampling.logit_bias[0]': "
                           "expected an unsigned integer, got the negative value -3");

    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_uint32 (&writer.packer, 3);
    msgpack_pack_int32 (&writer.packer, 5);         //  a bias must be a float
    s_writer_expect_error (&writer, "GENERATE: field 'sampling.logit_bias[0]': "
                           "expected a float, got an unsigned integer");

    //  A pair claiming more elements than the frame has
    s_writer_start_step_result (&writer, 1);
    s_writer_start_out (&writer, 4, 1);
    s_writer_key (&writer, "top");
    msgpack_pack_array (&writer.packer, 1);
    s_writer_raw (&writer, "\xdd\x00\x01\x00\x00", 5);
    s_writer_expect_error (&writer, "STEP_RESULT: field 'outs[0].top[0]': truncated");

    //  Pairs as float64 still decode
    proto_msg_t msg;
    s_writer_start_generate (&writer, 1);
    s_writer_key (&writer, "sampling");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logit_bias");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_fix_uint32 (&writer.packer, 7);
    msgpack_pack_double (&writer.packer, -2.0);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.sampling.n_bias, 1);
    assert_int_equal (msg.sampling.bias_tokens [0], 7);
    assert_true (msg.sampling.bias_values [0] == -2.0f);
    proto_msg_reset (&msg);
}

//  copies is an even number of block ids; frees is sequence ids (64 bits).
static void
test_copies_and_frees_errors (void **state)
{
    (void) state;
    s_writer_t writer;
    for (uint32_t n_ids = 1; n_ids <= 3; n_ids += 2) {
        s_writer_start (&writer, PROTO_STEP, 3);
        s_writer_uint (&writer, "step_id", 1);
        s_writer_key (&writer, "copies");
        msgpack_pack_array (&writer.packer, n_ids);
        for (uint32_t index = 0; index < n_ids; index++)
            msgpack_pack_uint32 (&writer.packer, index);
        s_writer_key (&writer, "seqs");
        msgpack_pack_array (&writer.packer, 0);
        s_writer_expect_error (&writer, n_ids == 1
            ? "STEP: field 'copies': 1 block ids: not pairs (src, dst)"
            : "STEP: field 'copies': 3 block ids: not pairs (src, dst)");
    }

    s_writer_start (&writer, PROTO_STEP, 3);
    s_writer_uint (&writer, "step_id", 1);
    s_writer_key (&writer, "seqs");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_key (&writer, "copies");
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_int32 (&writer.packer, -2);
    s_writer_expect_error (&writer, "STEP: field 'copies[1]': "
                           "expected an unsigned integer, got the negative value -2");

    s_writer_start (&writer, PROTO_STEP, 2);
    s_writer_uint (&writer, "step_id", 1);
    s_writer_key (&writer, "copies");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_uint (&writer, "1", 2);
    s_writer_expect_error (&writer, "STEP: field 'copies': expected an array, got a map");

    s_writer_start (&writer, PROTO_STEP, 2);
    s_writer_uint (&writer, "step_id", 1);
    s_writer_key (&writer, "frees");
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_uint64 (&writer.packer, UINT64_MAX);
    msgpack_pack_float (&writer.packer, 2.0f);
    s_writer_expect_error (&writer,
        "STEP: field 'frees[1]': expected an unsigned integer, got a float");

    s_writer_start (&writer, PROTO_STEP, 4);
    s_writer_uint (&writer, "step_id", 1);
    s_writer_key (&writer, "frees");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_key (&writer, "frees");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_key (&writer, "seqs");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_expect_error (&writer, "STEP: field 'frees': appears twice");

    //  An even number decodes into n_copies pairs, in order; frees of any 64-bit id
    proto_msg_t msg;
    s_writer_start (&writer, PROTO_STEP, 4);
    s_writer_uint (&writer, "step_id", 1);
    s_writer_key (&writer, "frees");
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_uint64 (&writer.packer, UINT64_MAX);
    msgpack_pack_uint64 (&writer.packer, 0);
    s_writer_key (&writer, "copies");
    msgpack_pack_array (&writer.packer, 4);
    for (uint32_t index = 0; index < 4; index++)
        msgpack_pack_uint32 (&writer.packer, 10 + index);
    s_writer_key (&writer, "seqs");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.n_copies, 2);
    assert_int_equal (msg.copies [0], 10);
    assert_int_equal (msg.copies [3], 13);
    assert_int_equal (msg.n_frees, 2);
    assert_true (msg.frees [0] == UINT64_MAX);
    assert_int_equal (msg.n_seqs, 0);
    proto_msg_reset (&msg);
}


//  --------------------------------------------------------------------------
//  Sockets

static void
s_send_raw (zsock_t *socket, const void *data, size_t size, int flags)
{
    zframe_t *frame = zframe_new (data, size);
    assert_non_null (frame);
    assert_int_equal (zframe_send (&frame, socket, flags), 0);
}

static void
test_dealer_router (void **state)
{
    (void) state;
    zsock_t *router = zsock_new_router ("@inproc://test-protocol-dealer-router");
    zsock_t *dealer = zsock_new_dealer (">inproc://test-protocol-dealer-router");
    assert_non_null (router);
    assert_non_null (dealer);
    zsock_set_rcvtimeo (router, 2000);
    zsock_set_rcvtimeo (dealer, 2000);

    //  DEALER -> ROUTER and back
    proto_msg_t sent;
    s_fill_sample (&sent, PROTO_GENERATE, 1);
    assert_int_equal (proto_send (&sent, dealer), 0);
    proto_msg_t received;
    zframe_t *routing_id = NULL;
    char err [256] = "";
    assert_int_equal (proto_recv (router, &received, &routing_id, err, sizeof (err)), 0);
    assert_non_null (routing_id);
    s_assert_msg_equal (&sent, &received);
    proto_msg_reset (&received);
    proto_msg_reset (&sent);

    s_fill_sample (&sent, PROTO_STEP, 1);
    assert_int_equal (proto_send_to (&sent, router, routing_id), 0);
    assert_int_equal (proto_send_to (&sent, router, routing_id), 0);  //  id still ours
    for (int copy = 0; copy < 2; copy++) {
        assert_int_equal (proto_recv (dealer, &received, NULL, err, sizeof (err)), 0);
        s_assert_msg_equal (&sent, &received);
        proto_msg_reset (&received);
    }
    proto_msg_reset (&sent);

    s_fill_sample (&sent, PROTO_STEP_RESULT, 1);
    assert_int_equal (proto_send (&sent, dealer), 0);
    zframe_destroy (&routing_id);
    assert_int_equal (proto_recv (router, &received, &routing_id, err, sizeof (err)), 0);
    s_assert_msg_equal (&sent, &received);
    proto_msg_reset (&received);
    proto_msg_reset (&sent);
    zframe_destroy (&routing_id);

    //  A malformed message, then a valid one: the valid one arrives
    s_send_raw (dealer, "\x92\x00\x80", 3, 0);
    s_fill_sample (&sent, PROTO_CANCEL, 0);
    assert_int_equal (proto_send (&sent, dealer), 0);
    assert_int_equal (proto_recv (router, &received, &routing_id, err, sizeof (err)), -1);
    assert_non_null (strstr (err, "unknown kind 0"));
    assert_true (s_msg_is_zero (&received));
    assert_non_null (routing_id);               //  the sender is known even so
    zframe_destroy (&routing_id);
    assert_int_equal (proto_recv (router, &received, &routing_id, err, sizeof (err)), 0);
    s_assert_msg_equal (&sent, &received);
    proto_msg_reset (&received);
    zframe_destroy (&routing_id);

    //  An empty frame
    s_send_raw (dealer, "", 0, 0);
    assert_int_equal (proto_send (&sent, dealer), 0);
    assert_int_equal (proto_recv (router, &received, &routing_id, err, sizeof (err)), -1);
    assert_non_null (strstr (err, "empty"));
    zframe_destroy (&routing_id);
    assert_int_equal (proto_recv (router, &received, &routing_id, err, sizeof (err)), 0);
    proto_msg_reset (&received);
    zframe_destroy (&routing_id);

    //  A multi-frame garbage message, then a valid one
    s_send_raw (dealer, "garbage", 7, ZFRAME_MORE);
    s_send_raw (dealer, "\x92\x0c\x80", 3, ZFRAME_MORE);   //  valid bytes do not help
    s_send_raw (dealer, "more", 4, 0);
    assert_int_equal (proto_send (&sent, dealer), 0);
    assert_int_equal (proto_recv (router, &received, &routing_id, err, sizeof (err)), -1);
    assert_non_null (strstr (err, "2 frames after the body"));
    assert_true (s_msg_is_zero (&received));
    zframe_destroy (&routing_id);
    assert_int_equal (proto_recv (router, &received, &routing_id, err, sizeof (err)), 0);
    s_assert_msg_equal (&sent, &received);
    proto_msg_reset (&received);

    //  The same on the DEALER side: [valid body, extra frame] from the ROUTER
    zframe_t *body = proto_encode (&sent);
    assert_non_null (body);
    assert_int_equal (zframe_send (&routing_id, router, ZFRAME_MORE | ZFRAME_REUSE), 0);
    assert_int_equal (zframe_send (&body, router, ZFRAME_MORE), 0);
    s_send_raw (router, "extra", 5, 0);
    assert_int_equal (proto_send_to (&sent, router, routing_id), 0);
    assert_int_equal (proto_recv (dealer, &received, NULL, err, sizeof (err)), -1);
    assert_non_null (strstr (err, "1 frames after the body"));
    assert_int_equal (proto_recv (dealer, &received, NULL, err, sizeof (err)), 0);
    s_assert_msg_equal (&sent, &received);
    proto_msg_reset (&received);
    zframe_destroy (&routing_id);
    proto_msg_reset (&sent);

    //  Nothing to read: returns -1 after the socket's own timeout
    zsock_set_rcvtimeo (router, 10);
    assert_int_equal (proto_recv (router, &received, &routing_id, err, sizeof (err)), -1);
    assert_null (routing_id);
    assert_true (strlen (err) > 0);
    assert_true (s_msg_is_zero (&received));

    //  Bad arguments; a message the encoder refuses is not sent (EINVAL)
    assert_int_equal (proto_send (NULL, dealer), -1);
    assert_int_equal (proto_recv (NULL, &received, NULL, err, sizeof (err)), -1);
    proto_msg_t invalid = PROTO_MSG_INIT;
    assert_int_equal (proto_send (&invalid, dealer), -1);
    assert_int_equal (errno, EINVAL);
    invalid.kind = PROTO_STEP_RESULT;
    proto_step_out_t out = { .seq_id = 1, .n_top = PROTO_MAX_BEAM_CANDIDATES + 1 };
    invalid.outs = &out;
    invalid.n_outs = 1;
    errno = 0;
    assert_int_equal (proto_send (&invalid, dealer), -1);
    assert_int_equal (errno, EINVAL);

    zsock_destroy (&dealer);
    zsock_destroy (&router);
}

static void
test_send_errors (void **state)
{
    (void) state;
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_HEARTBEAT;

    //  A ROUTER that must know the peer: an unknown routing id is an error
    zsock_t *router = zsock_new_router ("@inproc://test-protocol-mandatory");
    assert_non_null (router);
    zsock_set_router_mandatory (router, 1);
    zframe_t *nobody = zframe_new ("nobody", 6);
    assert_non_null (nobody);
    errno = 0;
    assert_int_equal (proto_send_to (&msg, router, nobody), -1);
    assert_int_equal (errno, EHOSTUNREACH);
    assert_int_equal (proto_send_to (NULL, router, nobody), -1);
    zframe_destroy (&nobody);
    zsock_destroy (&router);

    //  A DEALER with no peer and a zero send timeout does not block
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    assert_non_null (dealer);
    zsock_set_sndtimeo (dealer, 0);
    errno = 0;
    assert_int_equal (proto_send (&msg, dealer), -1);
    assert_int_equal (errno, EAGAIN);
    zsock_destroy (&dealer);
}


int
main (void)
{
    zsys_handler_set (NULL);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_names),
        cmocka_unit_test (test_setters),
        cmocka_unit_test (test_setters_out_of_memory_keep_old_value),
        cmocka_unit_test (test_sampling_copy_is_deep),
        cmocka_unit_test (test_sampling_copy_replaces_what_dst_held),
        cmocka_unit_test (test_sampling_copy_refusals_leave_dst_unchanged),
        cmocka_unit_test (test_sampling_copy_out_of_memory_leaves_dst_unchanged),
        cmocka_unit_test (test_sampling_reset),
        cmocka_unit_test (test_round_trip_every_kind),
        cmocka_unit_test (test_round_trip_sampling_all_members),
        cmocka_unit_test (test_round_trip_step_with_paged_kv),
        cmocka_unit_test (test_round_trip_outs_with_top),
        cmocka_unit_test (test_wire_form_of_hello_and_status),
        cmocka_unit_test (test_unused_fields_not_sent),
        cmocka_unit_test (test_null_text_decodes_empty),
        cmocka_unit_test (test_round_trip_at_limits),
        cmocka_unit_test (test_encode_refuses),
        cmocka_unit_test (test_encode_refuses_counts_over_limits),
        cmocka_unit_test (test_truncation),
        cmocka_unit_test (test_truncation_of_full_step_at_every_byte),
        cmocka_unit_test (test_decode_out_of_memory_at_every_allocation),
        cmocka_unit_test (test_random_garbage),
        cmocka_unit_test (test_bit_flips),
        cmocka_unit_test (test_frame_shape_errors),
        cmocka_unit_test (test_field_type_errors),
        cmocka_unit_test (test_boolean_type_errors),
        cmocka_unit_test (test_required_fields),
        cmocka_unit_test (test_unknown_fields_skipped),
        cmocka_unit_test (test_version_1_fields_are_not_read),
        cmocka_unit_test (test_lying_headers_and_limits),
        cmocka_unit_test (test_nested_errors),
        cmocka_unit_test (test_sampling_errors_inside_seqs_have_paths),
        cmocka_unit_test (test_pair_errors),
        cmocka_unit_test (test_copies_and_frees_errors),
        cmocka_unit_test (test_dealer_router),
        cmocka_unit_test (test_send_errors),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
