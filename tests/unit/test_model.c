/*  test_model — the plain forward pass of npu/model against llama.cpp's greedy outputs
    (ZLLM_SHARED_DIR/reference/greedy.json and toy-chat.json), prefill against token by
    token, slots against each other, the error paths, and models that must be refused.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gguf.h"
#include "model.h"
#include "sampler.h"

#define MAX_TOKENS 256

//  --- Helpers -----------------------------------------------------------------------------

static const char *
s_shared_dir (void)
{
    const char *shared = getenv ("ZLLM_SHARED_DIR");
    return shared? shared: "../shared";
}

static gguf_t *
s_open_model (const char *name)
{
    char path [1024];
    snprintf (path, sizeof path, "%s/models/%s", s_shared_dir (), name);
    char err [512] = "";
    gguf_t *gguf = gguf_open (path, err, sizeof err);
    if (!gguf)
        fail_msg ("cannot open %s: %s", path, err);
    return gguf;
}

static model_t *
s_new_model (const gguf_t *gguf, uint32_t n_slots, uint32_t n_ctx)
{
    char err [512] = "";
    model_t *model = model_new (gguf, n_slots, n_ctx, err, sizeof err);
    if (!model)
        fail_msg ("model_new: %s", err);
    return model;
}

static json_t *
s_load_reference (const char *name)
{
    char path [1024];
    snprintf (path, sizeof path, "%s/reference/%s", s_shared_dir (), name);
    json_error_t error;
    json_t *root = json_load_file (path, 0, &error);
    if (!root)
        fail_msg ("cannot read %s: %s", path, error.text);
    assert_true (json_is_array (root));
    return root;
}

//  Copy a JSON array of token ids into ids; returns how many.
static uint32_t
s_ids (json_t *array, uint32_t *ids, uint32_t max)
{
    assert_true (json_is_array (array));
    size_t count = json_array_size (array);
    assert_true (count <= max);
    for (size_t i = 0; i < count; i++)
        ids [i] = (uint32_t) json_integer_value (json_array_get (array, i));
    return (uint32_t) count;
}

//  Run the prompt in one call, then n_predict greedy steps, each feeding the previous
//  token back. Writes the n_predict chosen tokens.
static void
s_generate (model_t *model, uint32_t slot, const uint32_t *prompt, uint32_t n_prompt,
            uint32_t n_predict, uint32_t *output)
{
    char err [512] = "";
    const float *logits = model_forward (model, slot, 0, prompt, n_prompt, err, sizeof err);
    if (!logits)
        fail_msg ("prefill: %s", err);
    uint32_t n_vocab = model_config (model)->n_vocab;
    for (uint32_t step = 0; step < n_predict; step++) {
        output [step] = sampler_sample (logits, n_vocab, 0.0f, NULL, NULL);
        if (step + 1 == n_predict)
            break;
        logits = model_forward (model, slot, n_prompt + step, &output [step], 1,
                                err, sizeof err);
        if (!logits)
            fail_msg ("step %u: %s", step, err);
    }
}

//  The stored bytes of a GGUF file, for patching in memory.
static uint8_t *
s_read_model (const char *name, size_t *size)
{
    char path [1024];
    snprintf (path, sizeof path, "%s/models/%s", s_shared_dir (), name);
    FILE *file = fopen (path, "rb");
    assert_non_null (file);
    fseek (file, 0, SEEK_END);
    long length = ftell (file);
    fseek (file, 0, SEEK_SET);
    uint8_t *data = malloc ((size_t) length);
    assert_non_null (data);
    assert_int_equal (fread (data, 1, (size_t) length, file), (size_t) length);
    fclose (file);
    *size = (size_t) length;
    return data;
}

//  Where the bytes right after a GGUF string (its 8-byte length, then its text) start:
//  for a key, its value type; for a tensor name, its dimension count.
static size_t
s_after_string (const uint8_t *data, size_t size, const char *text)
{
    uint64_t length = strlen (text);
    for (size_t i = 0; i + 8 + length <= size; i++)
        if (memcmp (data + i, &length, 8) == 0 && memcmp (data + i + 8, text, length) == 0)
            return i + 8 + length;
    fail_msg ("no string %s in the file", text);
    return 0;
}

//  Open a patched image and try to load it as a model; the load must fail with a
//  message that contains each of the given words.
static void
s_assert_model_refused (const uint8_t *data, size_t size, const char *word, const char *other)
{
    char err [512] = "";
    gguf_t *gguf = gguf_open_memory (data, size, err, sizeof err);
    if (!gguf)
        fail_msg ("the patched file did not open: %s", err);
    model_t *model = model_new (gguf, 1, 16, err, sizeof err);
    if (model)
        fail_msg ("a model with a bad %s was accepted", word);
    print_message ("# refused: %s\n", err);
    if (!strstr (err, word) || (other && !strstr (err, other)))
        fail_msg ("message '%s' does not name %s", err, word);
    gguf_destroy (&gguf);
}

//  --- Against llama.cpp -------------------------------------------------------------------

static void
test_config (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("stories260K.gguf");
    model_t *model = s_new_model (gguf, 3, 0);
    const model_config_t *config = model_config (model);
    assert_int_equal (config->n_vocab, 512);
    assert_int_equal (config->dim, 64);
    assert_int_equal (config->n_layers, 5);
    assert_int_equal (config->n_heads, 8);
    assert_int_equal (config->n_kv_heads, 4);
    assert_int_equal (config->head_dim, 8);
    assert_int_equal (config->ffn_dim, 172);
    assert_int_equal (config->n_ctx_train, 2048);
    assert_true (fabsf (config->rms_eps - 1e-5f) < 1e-10f);
    assert_true (config->rope_theta == 10000.0f);
    assert_int_equal (model_n_ctx (model), 2048);
    assert_int_equal (model_n_slots (model), 3);
    model_destroy (&model);
    assert_null (model);
    model_destroy (&model);

    model = s_new_model (gguf, 1, 100);
    assert_int_equal (model_n_ctx (model), 100);
    model_destroy (&model);
    gguf_destroy (&gguf);

    gguf = s_open_model ("llama-2-tiny-random.gguf");
    model = s_new_model (gguf, 1, 64);
    config = model_config (model);
    assert_int_equal (config->n_vocab, 32000);
    assert_int_equal (config->dim, 8);
    assert_int_equal (config->n_heads, 2);
    assert_int_equal (config->n_kv_heads, 2);
    assert_int_equal (config->head_dim, 4);
    model_destroy (&model);
    gguf_destroy (&gguf);
}

//  Every case of greedy.json: the output must match for its stable steps.
static void
test_greedy_reference (void **state)
{
    (void) state;
    json_t *cases = s_load_reference ("greedy.json");
    assert_int_equal (json_array_size (cases), 8);
    for (size_t c = 0; c < json_array_size (cases); c++) {
        json_t *item = json_array_get (cases, c);
        const char *model_name = json_string_value (json_object_get (item, "model"));
        assert_non_null (model_name);
        uint32_t prompt [MAX_TOKENS], expected [MAX_TOKENS], output [MAX_TOKENS];
        uint32_t n_prompt = s_ids (json_object_get (item, "prompt_ids"), prompt, MAX_TOKENS);
        uint32_t n_predict = s_ids (json_object_get (item, "output_ids"), expected, MAX_TOKENS);
        assert_int_equal (n_predict, json_integer_value (json_object_get (item, "n_predict")));
        uint32_t stable = (uint32_t) json_integer_value (json_object_get (item, "stable_steps"));
        if (strcmp (model_name, "stories260K.gguf") == 0)
            assert_int_equal (stable, n_predict);      //  F32: all must match

        gguf_t *gguf = s_open_model (model_name);
        model_t *model = s_new_model (gguf, 1, n_prompt + n_predict);
        s_generate (model, 0, prompt, n_prompt, n_predict, output);
        uint32_t matching = 0;
        while (matching < n_predict && output [matching] == expected [matching])
            matching++;
        print_message ("# greedy case %zu (%s): %u of %u tokens match, %u must\n",
                       c, model_name, matching, n_predict, stable);
        if (matching < stable)
            fail_msg ("case %zu: token %u is %u, llama.cpp chose %u", c, matching,
                      output [matching], expected [matching]);
        model_destroy (&model);
        gguf_destroy (&gguf);
    }
    json_decref (cases);
}

//  The first toy-chat conversations (F32, GQA 8/4, width 256): the reply must be
//  llama.cpp's, up to and including the eos.
static void
test_toy_chat_reference (void **state)
{
    (void) state;
    json_t *cases = s_load_reference ("toy-chat.json");
    gguf_t *gguf = s_open_model ("toy-chat.gguf");
    model_t *model = s_new_model (gguf, 1, MAX_TOKENS);
    const size_t chosen [] = { 0, 2 };
    for (size_t i = 0; i < sizeof chosen / sizeof chosen [0]; i++) {
        json_t *item = json_array_get (cases, chosen [i]);
        assert_non_null (item);
        uint32_t prompt [MAX_TOKENS], expected [MAX_TOKENS], output [MAX_TOKENS];
        uint32_t n_prompt = s_ids (json_object_get (item, "prompt_ids"), prompt, MAX_TOKENS);
        uint32_t n_reply = s_ids (json_object_get (item, "output_ids"), expected, MAX_TOKENS);
        assert_true (n_prompt + n_reply <= MAX_TOKENS);
        s_generate (model, 0, prompt, n_prompt, n_reply, output);
        for (uint32_t t = 0; t < n_reply; t++)
            if (output [t] != expected [t])
                fail_msg ("toy-chat case %zu: token %u is %u, llama.cpp chose %u",
                          chosen [i], t, output [t], expected [t]);
        print_message ("# toy-chat case %zu: all %u tokens match\n", chosen [i], n_reply);
    }
    model_destroy (&model);
    gguf_destroy (&gguf);
    json_decref (cases);
}

//  --- Consistency -------------------------------------------------------------------------

//  A prompt run in one call gives the logits of the same tokens run one call each.
static void
test_prefill_equals_token_by_token (void **state)
{
    (void) state;
    const char *models [2] = { "stories260K.gguf", "llama-2-tiny-random.gguf" };
    const uint32_t prompt [12] = { 1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315 };
    for (int m = 0; m < 2; m++) {
        gguf_t *gguf = s_open_model (models [m]);
        model_t *whole = s_new_model (gguf, 1, 64);
        model_t *single = s_new_model (gguf, 1, 64);
        uint32_t n_vocab = model_config (whole)->n_vocab;
        char err [512];
        const float *logits = model_forward (whole, 0, 0, prompt, 12, err, sizeof err);
        assert_non_null (logits);
        float *expected = malloc (n_vocab * sizeof (float));
        memcpy (expected, logits, n_vocab * sizeof (float));
        for (uint32_t t = 0; t < 12; t++) {
            logits = model_forward (single, 0, t, &prompt [t], 1, err, sizeof err);
            assert_non_null (logits);
        }
        for (uint32_t i = 0; i < n_vocab; i++) {
            assert_true (isfinite (logits [i]));
            assert_true (fabsf (logits [i] - expected [i]) <= 1e-5f);
        }
        //  Prefill in two pieces too.
        logits = model_forward (whole, 0, 0, prompt, 5, err, sizeof err);
        assert_non_null (logits);
        logits = model_forward (whole, 0, 5, prompt + 5, 7, err, sizeof err);
        assert_non_null (logits);
        for (uint32_t i = 0; i < n_vocab; i++)
            assert_true (fabsf (logits [i] - expected [i]) <= 1e-5f);
        free (expected);
        model_destroy (&whole);
        model_destroy (&single);
        gguf_destroy (&gguf);
    }
}

//  Two sequences in two slots, stepped in turn, give what each gives alone.
static void
test_slots_are_independent (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("stories260K.gguf");
    const uint32_t prompt_a [5] = { 1, 403, 407, 261, 378 };
    const uint32_t prompt_b [5] = { 1, 291, 376, 400, 428 };
    const uint32_t n_predict = 24;
    uint32_t alone_a [32], alone_b [32];
    model_t *model = s_new_model (gguf, 1, 64);
    s_generate (model, 0, prompt_a, 5, n_predict, alone_a);
    s_generate (model, 0, prompt_b, 5, n_predict, alone_b);     //  same slot, reused
    model_destroy (&model);
    //  Sanity: the two prompts lead to different stories.
    assert_true (memcmp (alone_a, alone_b, sizeof (uint32_t) * n_predict) != 0);

    model = s_new_model (gguf, 3, 64);
    char err [512];
    const float *logits;
    uint32_t n_vocab = model_config (model)->n_vocab;
    uint32_t next_a, next_b;
    logits = model_forward (model, 2, 0, prompt_a, 5, err, sizeof err);
    assert_non_null (logits);
    next_a = sampler_sample (logits, n_vocab, 0.0f, NULL, NULL);
    logits = model_forward (model, 0, 0, prompt_b, 5, err, sizeof err);
    assert_non_null (logits);
    next_b = sampler_sample (logits, n_vocab, 0.0f, NULL, NULL);
    for (uint32_t step = 0; step < n_predict; step++) {
        assert_int_equal (next_a, alone_a [step]);
        assert_int_equal (next_b, alone_b [step]);
        logits = model_forward (model, 2, 5 + step, &next_a, 1, err, sizeof err);
        assert_non_null (logits);
        next_a = sampler_sample (logits, n_vocab, 0.0f, NULL, NULL);
        logits = model_forward (model, 0, 5 + step, &next_b, 1, err, sizeof err);
        assert_non_null (logits);
        next_b = sampler_sample (logits, n_vocab, 0.0f, NULL, NULL);
    }
    model_destroy (&model);
    gguf_destroy (&gguf);
}

//  --- Errors ------------------------------------------------------------------------------

static void
test_forward_errors (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("stories260K.gguf");
    model_t *model = s_new_model (gguf, 2, 16);
    const uint32_t prompt [5] = { 1, 403, 407, 261, 378 };
    char err [512];

    err [0] = 0;
    assert_null (model_forward (model, 2, 0, prompt, 5, err, sizeof err));
    assert_non_null (strstr (err, "slot"));
    err [0] = 0;
    assert_null (model_forward (model, 0, 12, prompt, 5, err, sizeof err));
    assert_non_null (strstr (err, "context"));
    err [0] = 0;
    assert_null (model_forward (model, 0, 16, prompt, 1, err, sizeof err));
    assert_true (strlen (err) > 0);
    err [0] = 0;
    assert_null (model_forward (model, 0, UINT32_MAX, prompt, 2, err, sizeof err));
    assert_true (strlen (err) > 0);
    err [0] = 0;
    assert_null (model_forward (model, 0, 0, prompt, 0, err, sizeof err));
    assert_true (strlen (err) > 0);
    err [0] = 0;
    assert_null (model_forward (model, 0, 0, NULL, 3, err, sizeof err));
    assert_true (strlen (err) > 0);
    const uint32_t bad [3] = { 1, 512, 2 };
    err [0] = 0;
    assert_null (model_forward (model, 0, 0, bad, 3, err, sizeof err));
    assert_non_null (strstr (err, "512"));

    //  The last position fits.
    const float *logits = model_forward (model, 1, 11, prompt, 5, err, sizeof err);
    assert_non_null (logits);

    //  A refused call leaves the slot as it was: generation goes on as if it never came.
    uint32_t reference [8], output [8];
    model_t *clean = s_new_model (gguf, 1, 16);
    s_generate (clean, 0, prompt, 5, 8, reference);
    model_destroy (&clean);
    uint32_t n_vocab = model_config (model)->n_vocab;
    logits = model_forward (model, 0, 0, prompt, 5, err, sizeof err);
    assert_non_null (logits);
    output [0] = sampler_sample (logits, n_vocab, 0.0f, NULL, NULL);
    const uint32_t bad_at_five [2] = { 7, 600 };
    assert_null (model_forward (model, 0, 5, bad_at_five, 2, err, sizeof err));
    for (uint32_t step = 1; step < 8; step++) {
        logits = model_forward (model, 0, 4 + step, &output [step - 1], 1, err, sizeof err);
        assert_non_null (logits);
        output [step] = sampler_sample (logits, n_vocab, 0.0f, NULL, NULL);
    }
    assert_memory_equal (output, reference, sizeof reference);

    model_destroy (&model);

    //  model_new's own errors.
    err [0] = 0;
    assert_null (model_new (gguf, 0, 16, err, sizeof err));
    assert_true (strlen (err) > 0);
    err [0] = 0;
    assert_null (model_new (gguf, UINT32_MAX, UINT32_MAX, err, sizeof err));
    assert_true (strlen (err) > 0);
    gguf_destroy (&gguf);
}

//  A vocabulary-only GGUF has no weights.
static void
test_vocab_only_refused (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("vocab/ggml-vocab-llama-spm.gguf");
    char err [512] = "";
    model_t *model = model_new (gguf, 1, 16, err, sizeof err);
    assert_null (model);
    assert_true (strlen (err) > 0);
    print_message ("# vocab-only: %s\n", err);
    gguf_destroy (&gguf);
}

//  stories260K with one thing changed in its header.
static void
test_bad_models_refused (void **state)
{
    (void) state;
    size_t size;
    uint8_t *data = s_read_model ("stories260K.gguf", &size);
    uint8_t *patched = malloc (size);
    assert_non_null (patched);

    //  A weight of an unsupported type (Q8_0: its rows of 64 are whole blocks).
    memcpy (patched, data, size);
    size_t at = s_after_string (patched, size, "blk.0.attn_q.weight");
    uint32_t type = GGML_TYPE_Q8_0;
    memcpy (patched + at + 4 + 2 * 8, &type, 4);
    s_assert_model_refused (patched, size, "blk.0.attn_q.weight", "Q8_0");

    //  A weight of the wrong shape: ffn_down [172, 32] instead of [172, 64].
    memcpy (patched, data, size);
    at = s_after_string (patched, size, "blk.2.ffn_down.weight");
    uint64_t rows = 32;
    memcpy (patched + at + 4 + 8, &rows, 8);
    s_assert_model_refused (patched, size, "blk.2.ffn_down.weight", "shape");

    //  A missing weight (renamed).
    memcpy (patched, data, size);
    at = s_after_string (patched, size, "blk.4.ffn_up.weight");
    patched [at - 8] = 'x';                                     //  blk.4.ffn_ux.weight
    s_assert_model_refused (patched, size, "blk.4.ffn_up.weight", "missing");

    //  Another architecture.
    memcpy (patched, data, size);
    at = s_after_string (patched, size, "general.architecture");
    patched [at + 4 + 8 + 4] = 'x';                             //  "llamx"
    s_assert_model_refused (patched, size, "architecture", "llamx");

    //  A head count that does not divide the width.
    memcpy (patched, data, size);
    at = s_after_string (patched, size, "llama.attention.head_count");
    uint32_t heads = 3;
    memcpy (patched + at + 4, &heads, 4);
    s_assert_model_refused (patched, size, "head count", NULL);

    //  A KV head count that does not divide the head count.
    memcpy (patched, data, size);
    at = s_after_string (patched, size, "llama.attention.head_count_kv");
    heads = 3;
    memcpy (patched + at + 4, &heads, 4);
    s_assert_model_refused (patched, size, "KV head count", NULL);

    //  A block count beyond the tensors there are.
    memcpy (patched, data, size);
    at = s_after_string (patched, size, "llama.block_count");
    uint32_t blocks = 4000000000u;
    memcpy (patched + at + 4, &blocks, 4);
    s_assert_model_refused (patched, size, "block count", NULL);

    //  Fewer blocks than the file has is fine (the extra tensors are ignored).
    memcpy (patched, data, size);
    blocks = 2;
    memcpy (patched + at + 4, &blocks, 4);
    char err [512] = "";
    gguf_t *gguf = gguf_open_memory (patched, size, err, sizeof err);
    assert_non_null (gguf);
    model_t *model = model_new (gguf, 1, 8, err, sizeof err);
    assert_non_null (model);
    model_destroy (&model);
    gguf_destroy (&gguf);

    free (patched);
    free (data);
}

//  Thousands of corrupted headers: each either fails to open or load, with a message, or
//  gives a model that runs.
static void
test_corrupt_headers_never_crash (void **state)
{
    (void) state;
    size_t size;
    uint8_t *data = s_read_model ("stories260K.gguf", &size);
    const size_t header_size = 14176;
    uint64_t random_state = 0xC0FFEE123ULL;
    int loaded = 0, refused = 0;
    for (int round = 0; round < 3000; round++) {
        random_state ^= random_state >> 12;
        random_state ^= random_state << 25;
        random_state ^= random_state >> 27;
        uint64_t random = random_state * 2685821657736338717ULL;
        size_t where = (size_t) (random % header_size);
        uint8_t saved = data [where];
        data [where] ^= (uint8_t) (1u << ((random >> 32) % 8));
        char err [512] = "";
        gguf_t *gguf = gguf_open_memory (data, size, err, sizeof err);
        model_t *model = gguf? model_new (gguf, 1, 4, err, sizeof err): NULL;
        if (model) {
            const uint32_t tokens [2] = { 0, 1 };
            uint32_t n_tokens = model_config (model)->n_vocab > 1? 2: 1;
            const float *logits = model_forward (model, 0, 0, tokens, n_tokens, err, sizeof err);
            assert_non_null (logits);
            model_destroy (&model);
            loaded++;
        }
        else {
            assert_true (strlen (err) > 0);
            refused++;
        }
        gguf_destroy (&gguf);
        data [where] = saved;
    }
    print_message ("# corrupt headers: %d loaded and ran, %d refused\n", loaded, refused);
    assert_true (loaded > 0 && refused > 0);
    free (data);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_config),
        cmocka_unit_test (test_greedy_reference),
        cmocka_unit_test (test_toy_chat_reference),
        cmocka_unit_test (test_prefill_equals_token_by_token),
        cmocka_unit_test (test_slots_are_independent),
        cmocka_unit_test (test_forward_errors),
        cmocka_unit_test (test_vocab_only_refused),
        cmocka_unit_test (test_bad_models_refused),
        cmocka_unit_test (test_corrupt_headers_never_crash),
    };
    return cmocka_run_group_tests_name ("model", tests, NULL, NULL);
}
