/*  test_protocol — unit tests of protocol/ (protocol.h).

    Round trips of every kind with edge values, the decoder's refusals (truncation,
    garbage, bit flips, wrong types, limits, lying headers, trailing bytes), msgpack-c
    agreeing with what we write and accept, and send / receive over a real inproc
    DEALER <-> ROUTER pair, malformed messages included.
*/

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "protocol.h"

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
s_float_same (float a, float b)
{
    return memcmp (&a, &b, sizeof (float)) == 0;
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

//  Compare every field of two messages.
static void
s_assert_msg_equal (const proto_msg_t *a, const proto_msg_t *b)
{
    assert_int_equal (a->kind, b->kind);
    assert_true (a->request_id == b->request_id);
    if (a->text == NULL || b->text == NULL)
        assert_true (a->text == b->text);
    else
        assert_string_equal (a->text, b->text);
    assert_int_equal (a->max_tokens, b->max_tokens);
    assert_true (s_float_same (a->temperature, b->temperature));
    assert_true (a->seed == b->seed);
    assert_int_equal (a->finish, b->finish);
    assert_int_equal (a->prompt_tokens, b->prompt_tokens);
    assert_int_equal (a->completion_tokens, b->completion_tokens);
    assert_int_equal (a->status, b->status);
    s_assert_tokens_equal (a->tokens, a->n_tokens, b->tokens, b->n_tokens);
    s_assert_tokens_equal (a->stop_tokens, a->n_stop_tokens,
                           b->stop_tokens, b->n_stop_tokens);
    assert_int_equal (a->version, b->version);
    assert_true (a->fingerprint == b->fingerprint);
    assert_int_equal (a->n_ctx, b->n_ctx);
    assert_int_equal (a->n_slots, b->n_slots);
    assert_int_equal (a->n_vocab, b->n_vocab);
    assert_true (a->step_id == b->step_id);
    assert_int_equal (a->n_seqs, b->n_seqs);
    for (uint32_t index = 0; index < a->n_seqs; index++) {
        const proto_step_seq_t *seq_a = &a->seqs [index];
        const proto_step_seq_t *seq_b = &b->seqs [index];
        assert_int_equal (seq_a->slot, seq_b->slot);
        assert_int_equal (seq_a->pos, seq_b->pos);
        s_assert_tokens_equal (seq_a->tokens, seq_a->n_tokens,
                               seq_b->tokens, seq_b->n_tokens);
        assert_true (s_float_same (seq_a->temperature, seq_b->temperature));
        assert_true (seq_a->seed == seq_b->seed);
    }
    assert_int_equal (a->n_outs, b->n_outs);
    for (uint32_t index = 0; index < a->n_outs; index++) {
        assert_int_equal (a->outs [index].slot, b->outs [index].slot);
        assert_int_equal (a->outs [index].token, b->outs [index].token);
        assert_true (s_float_same (a->outs [index].logprob, b->outs [index].logprob));
    }
    assert_int_equal (a->workers, b->workers);
    assert_int_equal (a->running, b->running);
    assert_int_equal (a->waiting, b->waiting);
    if (a->chat == NULL || b->chat == NULL)
        assert_true (a->chat == b->chat);
    else
        assert_string_equal (a->chat, b->chat);
    if (a->tool_calls == NULL || b->tool_calls == NULL)
        assert_true (a->tool_calls == b->tool_calls);
    else
        assert_string_equal (a->tool_calls, b->tool_calls);
    assert_int_equal (a->n_stops, b->n_stops);
    for (uint32_t index = 0; index < a->n_stops; index++)
        assert_string_equal (a->stops [index], b->stops [index]);
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

//  A msgpack writer for hand-made frames.
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

//  Start [kind, {n_fields entries ...
static void
s_writer_start (s_writer_t *writer, uint32_t kind, uint32_t n_fields)
{
    s_writer_init (writer);
    msgpack_pack_array (&writer->packer, 2);
    msgpack_pack_uint32 (&writer->packer, kind);
    msgpack_pack_map (&writer->packer, n_fields);
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

static const char *s_utf8_text =
    "Héllo, wörld! Ünïcödé: 日本語のテキスト, emoji 🦙🚀, "
    "right-to-left שלום, combining e\xcc\x81, and control bytes \x01\x7f\t\n.";

//  Fill msg with sample values for kind. variant 0: ordinary non-trivial values;
//  variant 1: the edges (all ones, long UTF-8 text); variant 2: zeros and empties.
static void
s_fill_sample (proto_msg_t *msg, proto_kind_t kind, int variant)
{
    memset (msg, 0, sizeof (*msg));
    msg->kind = kind;
    static const uint32_t some_tokens [] = { 1, 15043, 0, 127, 128, 255, 256, 65535,
                                             65536, 4294967295u, 32000, 2 };
    const size_t n_some = sizeof (some_tokens) / sizeof (some_tokens [0]);
    const char *text = variant == 0 ? "Once upon a time"
                     : variant == 1 ? s_utf8_text : "";
    uint32_t u32 = variant == 0 ? 1234567 : variant == 1 ? UINT32_MAX : 0;
    uint64_t u64 = variant == 0 ? 0x0123456789abcdefull
                 : variant == 1 ? UINT64_MAX : 0;
    float real = variant == 0 ? 0.7f : variant == 1 ? FLT_MAX : 0.0f;
    uint32_t n_tokens = variant == 2 ? 0 : (uint32_t) n_some;

    switch (kind) {
        case PROTO_GENERATE: {
            msg->request_id = u64;
            assert_int_equal (proto_msg_set_text (msg, text), 0);
            if (variant != 2)
                assert_int_equal (proto_msg_set_chat (msg, variant == 0
                    ? "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}"
                    : s_utf8_text), 0);
            msg->max_tokens = u32;
            msg->temperature = real;
            msg->seed = u64 ^ 0x5555;
            const char *stops [3] = { "\n\n", s_utf8_text, "" };
            assert_int_equal (proto_msg_set_stops (msg, stops, variant == 2 ? 0 : 3), 0);
            assert_int_equal (proto_msg_set_stop_tokens (msg, some_tokens + 1,
                                                         variant == 2 ? 0 : 2), 0);
            break;
        }
        case PROTO_CANCEL:
            msg->request_id = u64;
            break;
        case PROTO_OUTPUT:
            msg->request_id = u64;
            assert_int_equal (proto_msg_set_text (msg, text), 0);
            msg->finish = variant == 0 ? PROTO_FINISH_STOP
                        : variant == 1 ? PROTO_FINISH_TOOL_CALLS : PROTO_FINISH_NONE;
            if (variant == 1)
                assert_int_equal (proto_msg_set_tool_calls (msg, "[{\"index\":0,\"id\":"
                    "\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
                    "\"arguments\":\"{}\"}}]"), 0);
            msg->prompt_tokens = u32;
            msg->completion_tokens = u32 / 3;
            break;
        case PROTO_ERROR:
            msg->request_id = u64;
            msg->status = variant == 0 ? 400 : u32;
            assert_int_equal (proto_msg_set_text (msg, text), 0);
            break;
        case PROTO_SUBMIT:
            msg->request_id = u64;
            assert_int_equal (proto_msg_set_tokens (msg, some_tokens, n_tokens), 0);
            msg->max_tokens = u32;
            msg->temperature = variant == 1 ? FLT_MIN / 4 : real;   //  denormal
            msg->seed = u64;
            assert_int_equal (proto_msg_set_stop_tokens (msg, some_tokens + 3,
                                                         variant == 2 ? 0 : 2), 0);
            break;
        case PROTO_TOKENS:
            msg->request_id = u64;
            assert_int_equal (proto_msg_set_tokens (msg, some_tokens, n_tokens), 0);
            msg->finish = variant == 1 ? PROTO_FINISH_STOP : PROTO_FINISH_NONE;
            msg->prompt_tokens = u32;
            break;
        case PROTO_HELLO:
            msg->version = variant == 0 ? PROTO_VERSION : u32;
            assert_int_equal (proto_msg_set_text (msg, variant == 0 ? "cpu:0" : text), 0);
            msg->fingerprint = u64;
            msg->n_ctx = variant == 0 ? 2048 : u32;
            msg->n_slots = variant == 0 ? 16 : u32;
            msg->n_vocab = variant == 0 ? 32000 : u32;
            break;
        case PROTO_REJECT:
            assert_int_equal (proto_msg_set_text (msg, variant == 0
                              ? "protocol version 2 is not 1" : text), 0);
            break;
        case PROTO_STEP:
            msg->step_id = u64;
            if (variant != 2) {
                msg->n_seqs = 3;
                msg->seqs = (proto_step_seq_t *) calloc (3, sizeof (proto_step_seq_t));
                assert_non_null (msg->seqs);
                for (uint32_t index = 0; index < 3; index++) {
                    proto_step_seq_t *seq = &msg->seqs [index];
                    seq->slot = variant == 1 ? UINT32_MAX - index : index * 7;
                    seq->pos = variant == 1 ? UINT32_MAX : index * 100;
                    //  the middle sequence has no tokens: an empty array
                    seq->n_tokens = index == 1 ? 0 : (uint32_t) n_some - index;
                    if (seq->n_tokens > 0) {
                        seq->tokens = (uint32_t *) malloc (seq->n_tokens * sizeof (uint32_t));
                        assert_non_null (seq->tokens);
                        memcpy (seq->tokens, some_tokens + index,
                                seq->n_tokens * sizeof (uint32_t));
                    }
                    seq->temperature = index == 0 ? 0.0f : real;
                    seq->seed = variant == 1 ? UINT64_MAX - index : index * 1000003ull;
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
                    msg->outs [index].slot = variant == 1 ? UINT32_MAX : index;
                    msg->outs [index].token = some_tokens [index + 5];
                    msg->outs [index].logprob = logprobs [index];
                }
                if (variant == 1)
                    msg->outs [4].logprob = NAN;
            }
            break;
        case PROTO_STATUS:
            msg->workers = variant == 0 ? 2 : u32;
            msg->running = variant == 0 ? 31 : u32;
            msg->waiting = variant == 0 ? 7 : u32;
            break;
        case PROTO_WELCOME:
        case PROTO_HEARTBEAT:
        case PROTO_BYE:
        default:
            break;
    }
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

    proto_msg_reset (&msg);
    assert_true (s_msg_is_zero (&msg));
    proto_msg_reset (&msg);         //  twice is fine
    proto_msg_reset (NULL);
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
        full.max_tokens += 1;
        full.version += 1;
        full.workers += 1;
        full.step_id += 1;
        full.status += 1;
        full.n_vocab += 1;

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
                break;
            case PROTO_ERROR:
                expected.status += 1;
                break;
            case PROTO_SUBMIT:
                expected.max_tokens += 1;
                break;
            case PROTO_HELLO:
                expected.version += 1;
                expected.n_vocab += 1;
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

static void
test_round_trip_at_limits (void **state)
{
    (void) state;
    //  SUBMIT with the most tokens and stop tokens allowed
    proto_msg_t msg = PROTO_MSG_INIT;
    msg.kind = PROTO_SUBMIT;
    msg.request_id = UINT64_MAX;
    msg.n_tokens = PROTO_MAX_TOKENS;
    msg.tokens = (uint32_t *) malloc (PROTO_MAX_TOKENS * sizeof (uint32_t));
    assert_non_null (msg.tokens);
    for (uint32_t index = 0; index < PROTO_MAX_TOKENS; index++)
        msg.tokens [index] = index * 2654435761u;
    assert_int_equal (proto_msg_set_stop_tokens (&msg, msg.tokens, PROTO_MAX_TOKENS), 0);
    s_round_trip (&msg);
    proto_msg_reset (&msg);

    //  STEP with the most sequences, STEP_RESULT with the most outputs
    msg.kind = PROTO_STEP;
    msg.step_id = 1;
    msg.n_seqs = PROTO_MAX_STEP_SEQS;
    msg.seqs = (proto_step_seq_t *) calloc (PROTO_MAX_STEP_SEQS, sizeof (proto_step_seq_t));
    assert_non_null (msg.seqs);
    for (uint32_t index = 0; index < PROTO_MAX_STEP_SEQS; index++) {
        proto_step_seq_t *seq = &msg.seqs [index];
        seq->slot = index;
        seq->pos = index * 3;
        seq->n_tokens = 1 + index % 3;
        seq->tokens = (uint32_t *) calloc (seq->n_tokens, sizeof (uint32_t));
        assert_non_null (seq->tokens);
        seq->tokens [0] = index;
        seq->temperature = (float) index / 100.0f;
        seq->seed = (uint64_t) index << 40;
    }
    s_round_trip (&msg);
    proto_msg_reset (&msg);

    msg.kind = PROTO_STEP_RESULT;
    msg.n_outs = PROTO_MAX_STEP_SEQS;
    msg.outs = (proto_step_out_t *) calloc (PROTO_MAX_STEP_SEQS, sizeof (proto_step_out_t));
    assert_non_null (msg.outs);
    for (uint32_t index = 0; index < PROTO_MAX_STEP_SEQS; index++) {
        msg.outs [index].slot = index;
        msg.outs [index].token = UINT32_MAX - index;
        msg.outs [index].logprob = -(float) index;
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

    proto_step_seq_t seq = { .slot = 1, .pos = 0, .tokens = NULL, .n_tokens = 2 };
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


//  --------------------------------------------------------------------------
//  Hostile input

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
            size_t size = zframe_size (frame);
            for (size_t length = 0; length < size; length++) {
                //  A copy of exactly length bytes, so that ASan and valgrind see
                //  any read past the end.
                uint8_t *prefix = (uint8_t *) malloc (length ? length : 1);
                assert_non_null (prefix);
                memcpy (prefix, zframe_data (frame), length);
                proto_msg_t out;
                char err [256] = "";
                assert_int_equal (proto_decode (prefix, length, &out, err, sizeof (err)), -1);
                assert_true (s_msg_is_zero (&out));
                assert_true (strlen (err) > 0);
                free (prefix);
            }
            zframe_destroy (&frame);
            proto_msg_reset (&msg);
        }
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
//  field names the decoder knows, and now and then a wrong byte or a lying length.
typedef struct {
    uint8_t data [256];
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
        "request_id", "text", "max_tokens", "temperature", "seed", "finish",
        "prompt_tokens", "completion_tokens", "status", "tokens", "stop_tokens",
        "version", "fingerprint", "n_ctx", "n_slots", "n_vocab", "step_id", "seqs",
        "outs", "workers", "running", "waiting", "slot", "pos", "token", "logprob",
        "unknown"
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
    uint32_t choice = s_rng_below (depth < 3 ? 13 : 9);
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
        case 9:
        case 10: {
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
    s_expect_error ("\x92\x0f\x80", 3, "frame: unknown kind 15");
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

    s_writer_start (&writer, PROTO_GENERATE, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "text");
    msgpack_pack_uint32 (&writer.packer, 5);
    s_writer_expect_error (&writer,
        "GENERATE: field 'text': expected a string, got an unsigned integer");

    s_writer_start (&writer, PROTO_GENERATE, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
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

    s_writer_start (&writer, PROTO_GENERATE, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "max_tokens");
    msgpack_pack_uint64 (&writer.packer, (uint64_t) UINT32_MAX + 1);
    s_writer_expect_error (&writer,
        "GENERATE: field 'max_tokens': value 4294967296 does not fit in 32 bits");

    s_writer_start (&writer, PROTO_GENERATE, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "temperature");
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer,
        "GENERATE: field 'temperature': expected a float, got an unsigned integer");

    s_writer_start (&writer, PROTO_GENERATE, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "temperature");
    msgpack_pack_double (&writer.packer, 1e300);
    s_writer_expect_error (&writer, "does not fit in a float");

    s_writer_start (&writer, PROTO_GENERATE, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "temperature");
    msgpack_pack_nil (&writer.packer);
    s_writer_expect_error (&writer, "expected a float, got nil");

    s_writer_start (&writer, PROTO_OUTPUT, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "finish");
    msgpack_pack_uint32 (&writer.packer, 4);
    s_writer_expect_error (&writer,
        "OUTPUT: field 'finish': 4 is not a finish reason");

    s_writer_start (&writer, PROTO_OUTPUT, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "text");
    msgpack_pack_str_with_body (&writer.packer, "ab\0cd", 5);
    s_writer_expect_error (&writer, "OUTPUT: field 'text': text holds a NUL byte at offset 2");

    s_writer_start (&writer, PROTO_REJECT, 1);
    s_writer_key (&writer, "text");
    msgpack_pack_bin_with_body (&writer.packer, "abc", 3);
    s_writer_expect_error (&writer, "REJECT: field 'text': expected a string, got binary data");

    s_writer_start (&writer, PROTO_TOKENS, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_map (&writer.packer, 0);
    s_writer_expect_error (&writer, "TOKENS: field 'tokens': expected an array, got a map");

    s_writer_start (&writer, PROTO_TOKENS, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 3);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 2);
    msgpack_pack_int32 (&writer.packer, -7);
    s_writer_expect_error (&writer,
        "TOKENS: field 'tokens[2]': expected an unsigned integer, got the negative value -7");

    s_writer_start (&writer, PROTO_SUBMIT, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_uint64 (&writer.packer, 1ull << 40);
    s_writer_expect_error (&writer, "SUBMIT: field 'tokens[1]': value 1099511627776 does not fit");

    //  A failure after fields were allocated leaves nothing behind (valgrind / ASan)
    s_writer_start (&writer, PROTO_SUBMIT, 4);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 2);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 2);
    s_writer_key (&writer, "stop_tokens");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 2);
    s_writer_key (&writer, "seed");
    msgpack_pack_true (&writer.packer);
    s_writer_expect_error (&writer, "SUBMIT: field 'seed': expected an unsigned integer, got a boolean");

    //  Duplicate field
    s_writer_start (&writer, PROTO_CANCEL, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 2);
    s_writer_expect_error (&writer, "CANCEL: field 'request_id': appears twice");

    s_writer_start (&writer, PROTO_GENERATE, 3);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "text");
    msgpack_pack_str_with_body (&writer.packer, "a", 1);
    s_writer_key (&writer, "text");
    msgpack_pack_str_with_body (&writer.packer, "b", 1);
    s_writer_expect_error (&writer, "GENERATE: field 'text': appears twice");
}

static void
test_required_fields (void **state)
{
    (void) state;
    s_writer_t writer;
    s_writer_start (&writer, PROTO_CANCEL, 0);
    s_writer_expect_error (&writer, "CANCEL: field 'request_id': required but missing");

    s_writer_start (&writer, PROTO_ERROR, 1);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_expect_error (&writer, "ERROR: field 'status': required but missing");

    s_writer_start (&writer, PROTO_SUBMIT, 1);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_expect_error (&writer, "SUBMIT: field 'tokens': required but missing");

    s_writer_start (&writer, PROTO_HELLO, 1);
    s_writer_key (&writer, "version");
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer, "HELLO: field 'fingerprint': required but missing");

    s_writer_start (&writer, PROTO_STEP, 1);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_expect_error (&writer, "STEP: field 'seqs': required but missing");

    s_writer_start (&writer, PROTO_STEP_RESULT, 0);
    s_writer_expect_error (&writer, "STEP_RESULT: field 'step_id': required but missing");

    //  Optional fields default to zero
    proto_msg_t msg;
    s_writer_start (&writer, PROTO_HELLO, 2);
    s_writer_key (&writer, "fingerprint");
    msgpack_pack_uint64 (&writer.packer, 99);
    s_writer_key (&writer, "version");
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.kind, PROTO_HELLO);
    assert_int_equal (msg.version, 1);
    assert_true (msg.fingerprint == 99);
    assert_int_equal (msg.n_ctx, 0);
    assert_string_equal (msg.text, "");
    proto_msg_reset (&msg);

    s_writer_start (&writer, PROTO_STATUS, 0);
    s_writer_expect_ok (&writer, &msg);
    assert_int_equal (msg.kind, PROTO_STATUS);
    assert_int_equal (msg.workers, 0);
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
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 42);
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

    //  Fields written with wider integer forms, floats as float64
    s_writer_start (&writer, PROTO_GENERATE, 3);
    s_writer_key (&writer, "request_id");
    msgpack_pack_fix_int8 (&writer.packer, 5);
    s_writer_key (&writer, "max_tokens");
    msgpack_pack_fix_uint64 (&writer.packer, 7);
    s_writer_key (&writer, "temperature");
    msgpack_pack_double (&writer.packer, 0.5);
    s_writer_expect_ok (&writer, &msg);
    assert_true (msg.request_id == 5);
    assert_int_equal (msg.max_tokens, 7);
    assert_true (msg.temperature == 0.5f);
    proto_msg_reset (&msg);

    //  Nested too deep inside an unknown field
    s_writer_start (&writer, PROTO_BYE, 1);
    s_writer_key (&writer, "deep");
    for (int level = 0; level < 100; level++)
        msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_nil (&writer.packer);
    s_writer_expect_error (&writer, "BYE: values nested more than 32 levels deep");

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

    //  The never-used byte inside an unknown field
    s_expect_error ("\x92\x0d\x81\xa1x\xc1", 6, "never-used byte 0xc1");
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
    //  An honest array of 3 in a frame that ends early
    s_expect_error ("\x92\x06\x82\xaarequest_id\x01\xa6tokens\x93\x01\x02", 25,
                    "TOKENS: field 'tokens': truncated: an array of 3 elements, 2 bytes left");

    //  Real arrays, one over each limit
    s_writer_t writer;
    s_writer_start (&writer, PROTO_STEP, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "seqs");
    msgpack_pack_array (&writer.packer, 9000);
    for (int index = 0; index < 9000; index++)
        msgpack_pack_map (&writer.packer, 0);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs': array of 9000 elements is over the limit of 4096");

    s_writer_start (&writer, PROTO_STEP_RESULT, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "outs");
    msgpack_pack_array (&writer.packer, PROTO_MAX_STEP_SEQS + 1);
    for (int index = 0; index < PROTO_MAX_STEP_SEQS + 1; index++)
        msgpack_pack_map (&writer.packer, 0);
    s_writer_expect_error (&writer,
        "STEP_RESULT: field 'outs': array of 4097 elements is over the limit of 4096");

    s_writer_start (&writer, PROTO_TOKENS, 2);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, PROTO_MAX_TOKENS + 1);
    for (uint32_t index = 0; index < PROTO_MAX_TOKENS + 1; index++)
        msgpack_pack_uint32 (&writer.packer, index & 0x7f);
    s_writer_expect_error (&writer,
        "TOKENS: field 'tokens': array of 1048577 elements is over the limit of 1048576");

    s_writer_start (&writer, PROTO_SUBMIT, 3);
    s_writer_key (&writer, "request_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, 0);
    s_writer_key (&writer, "stop_tokens");
    msgpack_pack_array (&writer.packer, PROTO_MAX_TOKENS + 1);
    for (uint32_t index = 0; index < PROTO_MAX_TOKENS + 1; index++)
        msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer, "SUBMIT: field 'stop_tokens': array of 1048577");

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
    s_writer_start (&writer, PROTO_STEP, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "seqs");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 5);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0]': expected a map, got an unsigned integer");

    //  A member missing in the second element
    s_writer_start (&writer, PROTO_STEP, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "seqs");
    msgpack_pack_array (&writer.packer, 2);
    for (int index = 0; index < 2; index++) {
        msgpack_pack_map (&writer.packer, index == 0 ? 3 : 2);
        s_writer_key (&writer, "slot");
        msgpack_pack_uint32 (&writer.packer, 1);
        s_writer_key (&writer, "tokens");
        msgpack_pack_array (&writer.packer, 1);
        msgpack_pack_uint32 (&writer.packer, 1);
        if (index == 0) {
            s_writer_key (&writer, "pos");
            msgpack_pack_uint32 (&writer.packer, 0);
        }
    }
    s_writer_expect_error (&writer, "STEP: field 'seqs[1]': member 'pos' is missing");

    //  A member of the wrong type: a map where a number belongs
    s_writer_start (&writer, PROTO_STEP, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "seqs");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "slot");
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "slot");
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].slot': expected an unsigned integer, got a map");

    //  A bad token deep inside
    s_writer_start (&writer, PROTO_STEP, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "seqs");
    msgpack_pack_array (&writer.packer, 2);
    for (int index = 0; index < 2; index++) {
        msgpack_pack_map (&writer.packer, 4);
        s_writer_key (&writer, "slot");
        msgpack_pack_uint32 (&writer.packer, 1);
        s_writer_key (&writer, "pos");
        msgpack_pack_uint32 (&writer.packer, 1);
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

    //  A member twice; a member name that is not a string
    s_writer_start (&writer, PROTO_STEP, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "seqs");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_map (&writer.packer, 2);
    s_writer_key (&writer, "seed");
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_key (&writer, "seed");
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer, "STEP: field 'seqs[0].seed': appears twice");

    s_writer_start (&writer, PROTO_STEP_RESULT, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "outs");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_map (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 1);
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer,
        "STEP_RESULT: field 'outs[0]': expected a string, got an unsigned integer");

    //  outs: a missing logprob; a logprob of the wrong type
    s_writer_start (&writer, PROTO_STEP_RESULT, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "outs");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_map (&writer.packer, 2);
    s_writer_key (&writer, "slot");
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_key (&writer, "token");
    msgpack_pack_uint32 (&writer.packer, 1);
    s_writer_expect_error (&writer,
        "STEP_RESULT: field 'outs[0]': member 'logprob' is missing");

    s_writer_start (&writer, PROTO_STEP_RESULT, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "outs");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "logprob");
    msgpack_pack_str_with_body (&writer.packer, "-1", 2);
    s_writer_expect_error (&writer,
        "STEP_RESULT: field 'outs[0].logprob': expected a float, got a string");

    //  A seq's tokens over the limit (claimed)
    s_writer_start (&writer, PROTO_STEP, 2);
    s_writer_key (&writer, "step_id");
    msgpack_pack_uint64 (&writer.packer, 1);
    s_writer_key (&writer, "seqs");
    msgpack_pack_array (&writer.packer, 1);
    msgpack_pack_map (&writer.packer, 1);
    s_writer_key (&writer, "tokens");
    msgpack_pack_array (&writer.packer, UINT32_MAX);
    s_writer_expect_error (&writer,
        "STEP: field 'seqs[0].tokens': array of 4294967295 elements is over the limit");
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

    //  Bad arguments
    assert_int_equal (proto_send (NULL, dealer), -1);
    assert_int_equal (proto_recv (NULL, &received, NULL, err, sizeof (err)), -1);
    proto_msg_t invalid = PROTO_MSG_INIT;
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
        cmocka_unit_test (test_round_trip_every_kind),
        cmocka_unit_test (test_unused_fields_not_sent),
        cmocka_unit_test (test_null_text_decodes_empty),
        cmocka_unit_test (test_round_trip_at_limits),
        cmocka_unit_test (test_encode_refuses),
        cmocka_unit_test (test_truncation),
        cmocka_unit_test (test_random_garbage),
        cmocka_unit_test (test_bit_flips),
        cmocka_unit_test (test_frame_shape_errors),
        cmocka_unit_test (test_field_type_errors),
        cmocka_unit_test (test_required_fields),
        cmocka_unit_test (test_unknown_fields_skipped),
        cmocka_unit_test (test_lying_headers_and_limits),
        cmocka_unit_test (test_nested_errors),
        cmocka_unit_test (test_dealer_router),
        cmocka_unit_test (test_send_errors),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
