/*  test_model — the forward pass of npu/model against llama.cpp's greedy outputs
    (ZLLM_SHARED_DIR/reference/greedy.json and toy-chat.json: every token of every case),
    tiny models written here in every weight type, architecture and RoPE scaling against
    a plain dequantize-to-float reference forward pass, prefill against token by token,
    threads against one thread, the heads of a KV group together against one at a time
    (bit for bit), the paged KV cache (permuted block tables, block sizes, forks by
    copied blocks), batches of many sequences against each sequence alone (bit for bit),
    the error paths (which must leave the cache as it was), and models that must be
    refused.
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
#include "gguf_writer.h"
#include "kernels.h"
#include "model.h"
#include "quant.h"

#include <unistd.h>

#define MAX_TOKENS 256
//  The block size of the caches s_new_model makes.
#define BLOCK_SIZE 16

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

//  Blocks of BLOCK_SIZE positions that hold n_ctx positions.
static uint32_t
s_blocks_per_seq (const model_t *model)
{
    return (model_n_ctx (model) + BLOCK_SIZE - 1) / BLOCK_SIZE;
}

//  A model with a KV cache for n_seqs sequences of n_ctx positions, in blocks of
//  BLOCK_SIZE: sequence s ("slot" s) holds blocks s * per_seq onwards (s_forward).
static model_t *
s_new_model (const gguf_t *gguf, uint32_t n_seqs, uint32_t n_ctx)
{
    char err [512] = "";
    model_t *model = model_new (gguf, n_ctx, err, sizeof err);
    if (!model)
        fail_msg ("model_new: %s", err);
    if (model_cache_new (model, n_seqs * s_blocks_per_seq (model), BLOCK_SIZE,
                         err, sizeof err) != 0)
        fail_msg ("model_cache_new: %s", err);
    return model;
}

//  Fill table with n block ids first, first + 1, ...
static void
s_table (uint32_t *table, uint32_t n, uint32_t first)
{
    for (uint32_t i = 0; i < n; i++)
        table [i] = first + i;
}

//  Run n tokens of sequence `slot` (s_new_model's layout) at pos; its logits.
static const float *
s_forward (model_t *model, uint32_t slot, uint32_t pos, const uint32_t *tokens, uint32_t n,
           char *err, size_t err_size)
{
    uint32_t per_seq = s_blocks_per_seq (model);
    uint32_t *table = malloc (per_seq * sizeof (uint32_t));
    assert_non_null (table);
    s_table (table, per_seq, slot * per_seq);
    model_seq_t seq = { tokens, n, pos, table, per_seq, true };
    const float *logits = model_forward_seqs (model, &seq, 1, err, err_size);
    free (table);
    return logits;
}

//  Greedy: the highest logit, the lowest id on a tie (as the sampler chooses).
static uint32_t
s_greedy (const float *logits, uint32_t n_vocab)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n_vocab; i++)
        if (logits [i] > logits [best])
            best = i;
    return best;
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
    const float *logits = s_forward (model, slot, 0, prompt, n_prompt, err, sizeof err);
    if (!logits)
        fail_msg ("prefill: %s", err);
    uint32_t n_vocab = model_config (model)->n_vocab;
    for (uint32_t step = 0; step < n_predict; step++) {
        output [step] = s_greedy (logits, n_vocab);
        if (step + 1 == n_predict)
            break;
        logits = s_forward (model, slot, n_prompt + step, &output [step], 1, err, sizeof err);
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
    model_t *model = model_new (gguf, 16, err, sizeof err);
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
    assert_int_equal (model_cache_block_size (model), BLOCK_SIZE);
    assert_int_equal (model_cache_n_blocks (model), 3 * 2048 / BLOCK_SIZE);
    //  A block: keys and values, 5 layers, 16 positions of 4 KV heads of 8, F16.
    assert_int_equal (model_cache_block_bytes (model, 16), 2 * 5 * 16 * 32 * 2);
    assert_int_equal (model_cache_block_bytes (model, 1), 2 * 5 * 32 * 2);
    model_destroy (&model);
    assert_null (model);
    model_destroy (&model);

    model = s_new_model (gguf, 1, 100);
    assert_int_equal (model_n_ctx (model), 100);
    assert_int_equal (model_cache_n_blocks (model), 7);
    model_destroy (&model);

    //  No cache until model_cache_new; a new one replaces the old.
    char err [512] = "";
    model = model_new (gguf, 64, err, sizeof err);
    assert_non_null (model);
    assert_int_equal (model_cache_n_blocks (model), 0);
    assert_int_equal (model_cache_block_size (model), 0);
    assert_int_equal (model_cache_new (model, 10, 4, err, sizeof err), 0);
    assert_int_equal (model_cache_n_blocks (model), 10);
    assert_int_equal (model_cache_block_size (model), 4);
    assert_int_equal (model_cache_new (model, 3, 1024, err, sizeof err), 0);
    assert_int_equal (model_cache_n_blocks (model), 3);
    assert_int_equal (model_cache_block_size (model), 1024);
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

//  Every case of greedy.json: the output must match llama.cpp's, every token.
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
        print_message ("# greedy case %zu (%s): %u of %u tokens match (%u stable)\n",
                       c, model_name, matching, n_predict, stable);
        if (matching < n_predict)
            fail_msg ("case %zu: token %u is %u, llama.cpp chose %u", c, matching,
                      output [matching], expected [matching]);
        //  The same with three threads.
        char err [512];
        assert_int_equal (model_set_threads (model, 3, err, sizeof err), 0);
        s_generate (model, 0, prompt, n_prompt, n_predict, output);
        assert_memory_equal (output, expected, n_predict * sizeof (uint32_t));
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
        const float *logits = s_forward (whole, 0, 0, prompt, 12, err, sizeof err);
        assert_non_null (logits);
        float *expected = malloc (n_vocab * sizeof (float));
        memcpy (expected, logits, n_vocab * sizeof (float));
        for (uint32_t t = 0; t < 12; t++) {
            logits = s_forward (single, 0, t, &prompt [t], 1, err, sizeof err);
            assert_non_null (logits);
        }
        for (uint32_t i = 0; i < n_vocab; i++) {
            assert_true (isfinite (logits [i]));
            assert_true (fabsf (logits [i] - expected [i]) <= 1e-5f);
        }
        //  Prefill in two pieces too.
        logits = s_forward (whole, 0, 0, prompt, 5, err, sizeof err);
        assert_non_null (logits);
        logits = s_forward (whole, 0, 5, prompt + 5, 7, err, sizeof err);
        assert_non_null (logits);
        for (uint32_t i = 0; i < n_vocab; i++)
            assert_true (fabsf (logits [i] - expected [i]) <= 1e-5f);
        free (expected);
        model_destroy (&whole);
        model_destroy (&single);
        gguf_destroy (&gguf);
    }
}

//  Two sequences in blocks of their own, stepped in turn (one call each), give what
//  each gives alone.
static void
test_sequences_are_independent (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("stories260K.gguf");
    const uint32_t prompt_a [5] = { 1, 403, 407, 261, 378 };
    const uint32_t prompt_b [5] = { 1, 291, 376, 400, 428 };
    const uint32_t n_predict = 24;
    uint32_t alone_a [32], alone_b [32];
    model_t *model = s_new_model (gguf, 1, 64);
    s_generate (model, 0, prompt_a, 5, n_predict, alone_a);
    s_generate (model, 0, prompt_b, 5, n_predict, alone_b);     //  same blocks, reused
    model_destroy (&model);
    //  Sanity: the two prompts lead to different stories.
    assert_true (memcmp (alone_a, alone_b, sizeof (uint32_t) * n_predict) != 0);

    model = s_new_model (gguf, 3, 64);
    char err [512];
    const float *logits;
    uint32_t n_vocab = model_config (model)->n_vocab;
    uint32_t next_a, next_b;
    logits = s_forward (model, 2, 0, prompt_a, 5, err, sizeof err);
    assert_non_null (logits);
    next_a = s_greedy (logits, n_vocab);
    logits = s_forward (model, 0, 0, prompt_b, 5, err, sizeof err);
    assert_non_null (logits);
    next_b = s_greedy (logits, n_vocab);
    for (uint32_t step = 0; step < n_predict; step++) {
        assert_int_equal (next_a, alone_a [step]);
        assert_int_equal (next_b, alone_b [step]);
        logits = s_forward (model, 2, 5 + step, &next_a, 1, err, sizeof err);
        assert_non_null (logits);
        next_a = s_greedy (logits, n_vocab);
        logits = s_forward (model, 0, 5 + step, &next_b, 1, err, sizeof err);
        assert_non_null (logits);
        next_b = s_greedy (logits, n_vocab);
    }
    model_destroy (&model);
    gguf_destroy (&gguf);
}

//  --- Errors ------------------------------------------------------------------------------

//  Run a call that must be refused: NULL, with a message that contains `word`.
static void
s_assert_refused (model_t *model, const model_seq_t *seqs, uint32_t n_seqs, const char *word,
                  const char *other)
{
    char err [512] = "";
    const float *logits = model_forward_seqs (model, seqs, n_seqs, err, sizeof err);
    if (logits)
        fail_msg ("a call that names %s was run", word);
    print_message ("# refused: %s\n", err);
    if (!strstr (err, word) || (other && !strstr (err, other)))
        fail_msg ("message '%s' does not name %s", err, word);
}

//  Every refused call returns NULL with a message that names the sequence, and leaves
//  the cache as it was: each one also carries a good sequence that would overwrite a
//  cached sequence's first positions, before the bad one; the cached sequence's next
//  logits must stay bit for bit the same.
static void
test_forward_errors (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("stories260K.gguf");
    char err [512] = "";
    const uint32_t prompt [5] = { 1, 403, 407, 261, 378 };
    const uint32_t other [5] = { 1, 291, 376, 400, 428 };

    //  No cache yet.
    model_t *model = model_new (gguf, 16, err, sizeof err);
    assert_non_null (model);
    const uint32_t table [4] = { 0, 1, 2, 3 };
    model_seq_t good = { prompt, 5, 0, table, 4, true };
    s_assert_refused (model, &good, 1, "cache", NULL);
    model_destroy (&model);

    //  16 positions: blocks of 4, a pool of 6. The cached sequence holds blocks 0..3.
    model = model_new (gguf, 16, err, sizeof err);
    assert_non_null (model);
    assert_int_equal (model_cache_new (model, 6, 4, err, sizeof err), 0);
    uint32_t n_vocab = model_config (model)->n_vocab;
    assert_non_null (model_forward_seqs (model, &good, 1, err, sizeof err));
    const uint32_t next = 300;
    model_seq_t step = { &next, 1, 5, table, 4, true };
    const float *logits = model_forward_seqs (model, &step, 1, err, sizeof err);
    assert_non_null (logits);
    float *expected = malloc (n_vocab * sizeof (float));
    memcpy (expected, logits, n_vocab * sizeof (float));

    //  The good sequence of every refused call: other tokens into the same blocks.
    model_seq_t calls [2];
    calls [0] = (model_seq_t) { other, 5, 0, table, 4, true };

    s_assert_refused (model, NULL, 0, "no sequences", NULL);
    s_assert_refused (model, calls, 0, "no sequences", NULL);
    //  No tokens.
    calls [1] = (model_seq_t) { prompt, 0, 0, table, 4, true };
    s_assert_refused (model, calls, 2, "sequence 1", "no tokens");
    calls [1] = (model_seq_t) { NULL, 3, 0, table, 4, true };
    s_assert_refused (model, calls, 2, "sequence 1", "no tokens");
    //  A token id.
    const uint32_t bad [3] = { 1, 512, 2 };
    calls [1] = (model_seq_t) { bad, 3, 0, table, 4, true };
    s_assert_refused (model, calls, 2, "sequence 1", "512");
    const uint32_t bad_at_five [2] = { 7, 600 };
    calls [1] = (model_seq_t) { bad_at_five, 2, 5, table, 4, true };
    s_assert_refused (model, calls, 2, "600", "position 6");
    //  Positions past the context: the last position fits, one more does not.
    calls [1] = (model_seq_t) { prompt, 5, 12, table, 4, true };
    s_assert_refused (model, calls, 2, "sequence 1", "context");
    calls [1] = (model_seq_t) { prompt, 1, 16, table, 4, true };
    s_assert_refused (model, calls, 2, "sequence 1", "context");
    calls [1] = (model_seq_t) { prompt, 2, UINT32_MAX, table, 4, true };
    s_assert_refused (model, calls, 2, "sequence 1", "context");
    //  A block id out of the pool, in a table entry that is read (entry 1: positions 4..7).
    const uint32_t bad_block [4] = { 4, 6, 5, 5 };
    calls [1] = (model_seq_t) { prompt, 5, 0, bad_block, 4, true };
    s_assert_refused (model, calls, 2, "sequence 1", "block 6");
    const uint32_t huge_block [2] = { 5, UINT32_MAX };
    calls [1] = (model_seq_t) { prompt, 5, 0, huge_block, 2, true };
    s_assert_refused (model, calls, 2, "sequence 1", "out of range");
    //  A table too short: positions 0..4 need two blocks of 4; and none at all.
    calls [1] = (model_seq_t) { prompt, 5, 0, table, 1, true };
    s_assert_refused (model, calls, 2, "sequence 1", "table");
    calls [1] = (model_seq_t) { prompt, 5, 0, NULL, 4, true };
    s_assert_refused (model, calls, 2, "sequence 1", "table");
    //  The first sequence is checked too.
    calls [1] = calls [0];
    calls [0] = (model_seq_t) { prompt, 5, 0, table, 1, true };
    s_assert_refused (model, calls, 2, "sequence 0", "table");

    //  Entries past what the positions need are not read; block ids in them may be
    //  anything.
    const uint32_t long_table [5] = { 4, 5, UINT32_MAX, 99, 7 };
    calls [0] = (model_seq_t) { other, 5, 0, long_table, 5, false };
    assert_non_null (model_forward_seqs (model, calls, 1, err, sizeof err));

    //  The cached sequence is untouched.
    logits = model_forward_seqs (model, &step, 1, err, sizeof err);
    assert_non_null (logits);
    assert_memory_equal (logits, expected, n_vocab * sizeof (float));

    //  The last position fits.
    model_seq_t last = { prompt, 5, 11, table, 4, true };
    assert_non_null (model_forward_seqs (model, &last, 1, err, sizeof err));

    //  Bad cache sizes are refused and leave the cache as it was.
    err [0] = 0;
    assert_int_equal (model_cache_new (model, 6, 0, err, sizeof err), -1);
    assert_non_null (strstr (err, "block size"));
    err [0] = 0;
    assert_int_equal (model_cache_new (model, 6, 1025, err, sizeof err), -1);
    assert_non_null (strstr (err, "block size"));
    err [0] = 0;
    assert_int_equal (model_cache_new (model, 0, 16, err, sizeof err), -1);
    assert_true (strlen (err) > 0);
    assert_int_equal (model_cache_n_blocks (model), 6);
    assert_int_equal (model_cache_block_size (model), 4);

    //  model_copy_blocks: ids out of range, copying nothing.
    const uint32_t from [2] = { 0, 1 }, to_bad [2] = { 5, 6 };
    err [0] = 0;
    assert_int_equal (model_copy_blocks (model, from, to_bad, 2, err, sizeof err), -1);
    assert_non_null (strstr (err, "6"));
    const uint32_t from_bad [1] = { 17 }, to [1] = { 0 };
    assert_int_equal (model_copy_blocks (model, from_bad, to, 1, err, sizeof err), -1);
    assert_int_equal (model_copy_blocks (model, NULL, NULL, 0, err, sizeof err), 0);
    //  A block copied onto itself changes nothing.
    const uint32_t same [1] = { 1 };
    assert_int_equal (model_copy_blocks (model, same, same, 1, err, sizeof err), 0);
    logits = model_forward_seqs (model, &step, 1, err, sizeof err);
    assert_non_null (logits);
    assert_memory_equal (logits, expected, n_vocab * sizeof (float));
    //  The check can fail: block 5 (position 4 of `other`) onto block 1 changes them.
    const uint32_t five [1] = { 5 };
    assert_int_equal (model_copy_blocks (model, five, same, 1, err, sizeof err), 0);
    logits = model_forward_seqs (model, &step, 1, err, sizeof err);
    assert_non_null (logits);
    assert_true (memcmp (logits, expected, n_vocab * sizeof (float)) != 0);
    model_destroy (&model);

    model = model_new (gguf, 16, err, sizeof err);
    err [0] = 0;
    assert_int_equal (model_copy_blocks (model, from, to, 1, err, sizeof err), -1);
    assert_non_null (strstr (err, "cache"));
    model_destroy (&model);
    free (expected);
    gguf_destroy (&gguf);
}

//  A vocabulary-only GGUF has no weights.
static void
test_vocab_only_refused (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("vocab/ggml-vocab-llama-spm.gguf");
    char err [512] = "";
    model_t *model = model_new (gguf, 16, err, sizeof err);
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

    //  A weight of an unsupported type (Q5_0: its rows of 64 are whole blocks).
    memcpy (patched, data, size);
    size_t at = s_after_string (patched, size, "blk.0.attn_q.weight");
    uint32_t type = GGML_TYPE_Q5_0;
    memcpy (patched + at + 4 + 2 * 8, &type, 4);
    s_assert_model_refused (patched, size, "blk.0.attn_q.weight", "Q5_0");

    //  A supported one (Q8_0) loads and runs.
    type = GGML_TYPE_Q8_0;
    memcpy (patched + at + 4 + 2 * 8, &type, 4);
    char load_err [512] = "";
    gguf_t *patched_gguf = gguf_open_memory (patched, size, load_err, sizeof load_err);
    assert_non_null (patched_gguf);
    model_t *patched_model = model_new (patched_gguf, 8, load_err, sizeof load_err);
    if (!patched_model)
        fail_msg ("a Q8_0 attn_q was refused: %s", load_err);
    assert_int_equal (model_cache_new (patched_model, 1, 8, load_err, sizeof load_err), 0);
    const uint32_t two [2] = { 1, 2 };
    assert_non_null (s_forward (patched_model, 0, 0, two, 2, load_err, sizeof load_err));
    model_destroy (&patched_model);
    gguf_destroy (&patched_gguf);

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
    model_t *model = model_new (gguf, 8, err, sizeof err);
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
        model_t *model = gguf? model_new (gguf, 4, err, sizeof err): NULL;
        if (model && model_cache_new (model, 2, 2, err, sizeof err) != 0)
            model_destroy (&model);
        if (model) {
            const uint32_t tokens [2] = { 0, 1 };
            const uint32_t table [1] = { 1 };
            uint32_t n_tokens = model_config (model)->n_vocab > 1? 2: 1;
            model_seq_t seq = { tokens, n_tokens, 0, table, 1, true };
            const float *logits = model_forward_seqs (model, &seq, 1, err, sizeof err);
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

//  --- Tiny models of every kind, against a plain reference ---------------------------------
//
//  A tiny model is written with gguf_writer into a temporary file: random weights of the
//  chosen types (uniform, scaled so that activations stay near 1), norms near 1. The
//  reference forward pass below reads the same file, dequantizes every weight to float
//  and runs the textbook math in double (softmax attention over a float KV cache). The
//  model's logits differ from it only by what the model rounds on purpose: the F16 KV
//  cache and attention sums, and the activations rounded to F16 / BF16 or quantized to
//  8 bits for those weight types.

#define TINY_MAX_LAYERS 4

typedef struct {
    const char *architecture;           //  "llama" or "qwen2"
    uint32_t n_vocab, dim, n_layers, n_heads, n_kv_heads, ffn_dim, context;
    float rope_theta, rms_eps;
    ggml_type_t type;                   //  of the weight matrices
    ggml_type_t attn_v_type;            //  attn_v (a mixed model when it differs)
    ggml_type_t output_type;            //  output.weight, or token_embd when tied
    bool tied;
    bool biases;                        //  attn_q/k/v.bias
    const char *rope_scaling;           //  NULL, "linear", "llama3", "yarn"
    float rope_factor;
    bool rope_freqs_tensor;             //  llama3 factors as rope_freqs.weight (no keys)
    uint64_t seed;
} tiny_shape_t;

static tiny_shape_t
s_tiny_shape (ggml_type_t type)
{
    tiny_shape_t shape = { "llama", 300, 256, 2, 4, 2, 512, 64, 10000.0f, 1e-5f,
                           type, type, type, true, false, NULL, 0, false, 7 };
    return shape;
}

static uint64_t s_tiny_random;

static float
s_tiny_uniform (void)
{
    s_tiny_random ^= s_tiny_random >> 12;
    s_tiny_random ^= s_tiny_random << 25;
    s_tiny_random ^= s_tiny_random >> 27;
    uint64_t bits = s_tiny_random * 2685821657736338717ULL;
    return (float) ((double) (bits >> 11) / 4503599627370496.0 - 1.0);
}

//  Add a tensor of random values times `scale` plus `offset`, stored as `type`.
static void
s_tiny_tensor (gguf_writer_t *writer, const char *name, ggml_type_t type, uint64_t ne0,
               uint64_t ne1, float scale, float offset)
{
    float *values = malloc (ne0 * ne1 * sizeof (float));
    uint64_t row_bytes = ggml_row_bytes (type, ne0);
    uint8_t *data = malloc (row_bytes * ne1);
    assert_non_null (values);
    assert_non_null (data);
    for (uint64_t i = 0; i < ne0 * ne1; i++)
        values [i] = offset + scale * s_tiny_uniform ();
    for (uint64_t r = 0; r < ne1; r++)
        assert_int_equal (quant_quantize_row (type, values + r * ne0, data + r * row_bytes,
                                              ne0), 0);
    uint64_t ne [2] = { ne0, ne1 };
    assert_int_equal (gguf_writer_add_tensor (writer, name, type, ne1 > 1? 2: 1, ne, data,
                                              row_bytes * ne1), 0);
    free (values);
    free (data);
}

//  The llama3 frequency factors for head size n, computed here independently of model.c.
static void
s_tiny_llama3_factors (const tiny_shape_t *shape, float *factors)
{
    uint32_t n = shape->dim / shape->n_heads;
    double low = 1, high = 4, original = 32;
    for (uint32_t i = 0; i < n / 2; i++) {
        double wavelength = 2 * M_PI * pow (shape->rope_theta, 2.0 * i / n);
        double factor;
        if (wavelength < original / high)
            factor = 1;
        else
        if (wavelength > original / low)
            factor = shape->rope_factor;
        else {
            double smooth = (original / wavelength - low) / (high - low);
            factor = 1 / ((1 - smooth) / shape->rope_factor + smooth);
        }
        factors [i] = (float) factor;
    }
}

//  "blk.<layer>.<what>" in name.
static const char *
s_layer_name (char *name, size_t name_size, uint32_t layer, const char *what)
{
    snprintf (name, name_size, "blk.%u.%s", layer, what);
    return name;
}

//  Metadata "<architecture>.<name>" = value.
static void
s_set_u32 (gguf_writer_t *writer, const tiny_shape_t *shape, const char *name, uint32_t value)
{
    char key [128];
    snprintf (key, sizeof key, "%s.%s", shape->architecture, name);
    assert_int_equal (gguf_writer_set_u32 (writer, key, value), 0);
}

static void
s_set_f32 (gguf_writer_t *writer, const tiny_shape_t *shape, const char *name, float value)
{
    char key [128];
    snprintf (key, sizeof key, "%s.%s", shape->architecture, name);
    assert_int_equal (gguf_writer_set_f32 (writer, key, value), 0);
}

//  Layer l's tensor `what`, as s_tiny_tensor adds it.
static void
s_tiny_layer_tensor (gguf_writer_t *writer, uint32_t l, const char *what, ggml_type_t type,
                     uint64_t ne0, uint64_t ne1, float scale, float offset)
{
    char name [64];
    s_layer_name (name, sizeof name, l, what);
    s_tiny_tensor (writer, name, type, ne0, ne1, scale, offset);
}

//  Write the tiny model into a new temporary file and open it.
static gguf_t *
s_tiny_model (const tiny_shape_t *shape)
{
    gguf_writer_t *writer = gguf_writer_new ();
    assert_non_null (writer);
    s_tiny_random = shape->seed * 0x9E3779B97F4A7C15ULL + 1;
    gguf_writer_set_str (writer, "general.architecture", shape->architecture);
    s_set_u32 (writer, shape, "context_length", shape->context);
    s_set_u32 (writer, shape, "embedding_length", shape->dim);
    s_set_u32 (writer, shape, "block_count", shape->n_layers);
    s_set_u32 (writer, shape, "feed_forward_length", shape->ffn_dim);
    s_set_u32 (writer, shape, "attention.head_count", shape->n_heads);
    s_set_u32 (writer, shape, "attention.head_count_kv", shape->n_kv_heads);
    s_set_f32 (writer, shape, "rope.freq_base", shape->rope_theta);
    s_set_f32 (writer, shape, "attention.layer_norm_rms_epsilon", shape->rms_eps);
    if (shape->rope_scaling && !shape->rope_freqs_tensor) {
        char key [128];
        snprintf (key, sizeof key, "%s.rope.scaling.type", shape->architecture);
        gguf_writer_set_str (writer, key, shape->rope_scaling);
        s_set_f32 (writer, shape, "rope.scaling.factor", shape->rope_factor);
        if (strcmp (shape->rope_scaling, "llama3") == 0) {
            s_set_f32 (writer, shape, "rope.scaling.low_freq_factor", 1.0f);
            s_set_f32 (writer, shape, "rope.scaling.high_freq_factor", 4.0f);
            s_set_u32 (writer, shape, "rope.scaling.original_context_length", 32);
        }
    }
    uint32_t dim = shape->dim, ffn = shape->ffn_dim;
    uint32_t kv_dim = dim / shape->n_heads * shape->n_kv_heads;
    float dim_scale = sqrtf (3.0f / dim), ffn_scale = sqrtf (3.0f / ffn);
    ggml_type_t type = shape->type;
    s_tiny_tensor (writer, "token_embd.weight", shape->tied? shape->output_type: type,
                   dim, shape->n_vocab, 1.7f, 0);          //  std 1
    for (uint32_t l = 0; l < shape->n_layers; l++) {
        s_tiny_layer_tensor (writer, l, "attn_norm.weight", GGML_TYPE_F32, dim, 1, 0.2f, 1);
        s_tiny_layer_tensor (writer, l, "attn_q.weight", type, dim, dim, dim_scale, 0);
        s_tiny_layer_tensor (writer, l, "attn_k.weight", type, dim, kv_dim, dim_scale, 0);
        s_tiny_layer_tensor (writer, l, "attn_v.weight", shape->attn_v_type, dim, kv_dim,
                             dim_scale, 0);
        if (shape->biases) {
            s_tiny_layer_tensor (writer, l, "attn_q.bias", GGML_TYPE_F32, dim, 1, 0.3f, 0);
            s_tiny_layer_tensor (writer, l, "attn_k.bias", GGML_TYPE_F32, kv_dim, 1, 0.3f, 0);
            s_tiny_layer_tensor (writer, l, "attn_v.bias", GGML_TYPE_F32, kv_dim, 1, 0.3f, 0);
        }
        s_tiny_layer_tensor (writer, l, "attn_output.weight", type, dim, dim, dim_scale, 0);
        s_tiny_layer_tensor (writer, l, "ffn_norm.weight", GGML_TYPE_F32, dim, 1, 0.2f, 1);
        s_tiny_layer_tensor (writer, l, "ffn_gate.weight", type, dim, ffn, dim_scale, 0);
        s_tiny_layer_tensor (writer, l, "ffn_up.weight", type, dim, ffn, dim_scale, 0);
        s_tiny_layer_tensor (writer, l, "ffn_down.weight", type, ffn, dim, ffn_scale, 0);
    }
    s_tiny_tensor (writer, "output_norm.weight", GGML_TYPE_F32, dim, 1, 0.2f, 1);
    if (!shape->tied)
        s_tiny_tensor (writer, "output.weight", shape->output_type, dim, shape->n_vocab,
                       dim_scale, 0);
    if (shape->rope_freqs_tensor) {
        float factors [256];
        s_tiny_llama3_factors (shape, factors);
        uint64_t ne [1] = { dim / shape->n_heads / 2 };
        assert_int_equal (gguf_writer_add_tensor (writer, "rope_freqs.weight", GGML_TYPE_F32,
                                                  1, ne, factors, ne [0] * sizeof (float)), 0);
    }
    char path [] = "/tmp/zllm-test-model-XXXXXX";
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    close (fd);
    char err [512] = "";
    if (gguf_writer_write (writer, path, err, sizeof err) != 0)
        fail_msg ("cannot write the tiny model: %s", err);
    gguf_writer_destroy (&writer);
    gguf_t *gguf = gguf_open (path, err, sizeof err);
    unlink (path);                      //  the mapping keeps it
    if (!gguf)
        fail_msg ("cannot open the tiny model: %s", err);
    return gguf;
}

//  --- The reference forward pass ---

typedef struct {
    float *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *wo, *ffn_norm, *w_gate, *w_up, *w_down;
} reference_layer_t;

typedef struct {
    tiny_shape_t shape;
    uint32_t head_dim, kv_dim;
    float rope_factors [256];
    float *embedding, *output, *output_norm;
    reference_layer_t layers [TINY_MAX_LAYERS];
    float *keys, *values;               //  [layer][position][kv_dim]
} reference_t;

//  A tensor of the file as floats (NULL when it is not there).
static float *
s_dequantized (const gguf_t *gguf, const char *name)
{
    const gguf_tensor_t *tensor = gguf_find_tensor (gguf, name);
    if (!tensor)
        return NULL;
    float *values = malloc (tensor->ne [0] * tensor->ne [1] * sizeof (float));
    assert_non_null (values);
    uint64_t row_bytes = ggml_row_bytes (tensor->type, tensor->ne [0]);
    for (uint64_t r = 0; r < tensor->ne [1]; r++)
        assert_int_equal (quant_dequantize_row (tensor->type, (const uint8_t *) tensor->data
                                                + r * row_bytes, values + r * tensor->ne [0],
                                                tensor->ne [0]), 0);
    return values;
}

static reference_t *
s_reference_new (const gguf_t *gguf, const tiny_shape_t *shape)
{
    reference_t *ref = calloc (1, sizeof (reference_t));
    assert_non_null (ref);
    assert_true (shape->n_layers <= TINY_MAX_LAYERS);
    ref->shape = *shape;
    ref->head_dim = shape->dim / shape->n_heads;
    ref->kv_dim = ref->head_dim * shape->n_kv_heads;
    for (uint32_t i = 0; i < ref->head_dim / 2; i++)
        ref->rope_factors [i] = 1;
    if (shape->rope_scaling && strcmp (shape->rope_scaling, "llama3") == 0)
        s_tiny_llama3_factors (shape, ref->rope_factors);
    ref->embedding = s_dequantized (gguf, "token_embd.weight");
    ref->output = shape->tied? ref->embedding: s_dequantized (gguf, "output.weight");
    ref->output_norm = s_dequantized (gguf, "output_norm.weight");
    for (uint32_t l = 0; l < shape->n_layers; l++) {
        reference_layer_t *layer = &ref->layers [l];
        char name [64];
        const char *names [12] = { "attn_norm.weight", "attn_q.weight", "attn_k.weight",
                                   "attn_v.weight", "attn_q.bias", "attn_k.bias",
                                   "attn_v.bias", "attn_output.weight", "ffn_norm.weight",
                                   "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight" };
        float **slots [12] = { &layer->attn_norm, &layer->wq, &layer->wk, &layer->wv,
                               &layer->bq, &layer->bk, &layer->bv, &layer->wo,
                               &layer->ffn_norm, &layer->w_gate, &layer->w_up,
                               &layer->w_down };
        for (int i = 0; i < 12; i++)
            *slots [i] = s_dequantized (gguf, s_layer_name (name, sizeof name, l, names [i]));
    }
    ref->keys = calloc ((size_t) shape->n_layers * shape->context * ref->kv_dim, sizeof (float));
    ref->values = calloc ((size_t) shape->n_layers * shape->context * ref->kv_dim, sizeof (float));
    return ref;
}

static void
s_reference_destroy (reference_t **ref_p)
{
    reference_t *ref = *ref_p;
    free (ref->embedding);
    if (!ref->shape.tied)
        free (ref->output);
    free (ref->output_norm);
    for (uint32_t l = 0; l < ref->shape.n_layers; l++) {
        reference_layer_t *layer = &ref->layers [l];
        float *all [12] = { layer->attn_norm, layer->wq, layer->wk, layer->wv, layer->bq,
                            layer->bk, layer->bv, layer->wo, layer->ffn_norm, layer->w_gate,
                            layer->w_up, layer->w_down };
        for (int i = 0; i < 12; i++)
            free (all [i]);
    }
    free (ref->keys);
    free (ref->values);
    free (ref);
    *ref_p = NULL;
}

//  out[n_out] = W x (+ bias), W with n_out rows of n_in.
static void
s_ref_matvec (float *out, const float *w, const float *bias, const float *x, uint32_t n_in,
              uint32_t n_out)
{
    for (uint32_t i = 0; i < n_out; i++) {
        double sum = bias? bias [i]: 0;
        for (uint32_t j = 0; j < n_in; j++)
            sum += (double) w [(size_t) i * n_in + j] * x [j];
        out [i] = (float) sum;
    }
}

static void
s_ref_rmsnorm (float *out, const float *x, const float *weight, uint32_t n, float eps)
{
    double sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += (double) x [i] * x [i];
    double scale = 1 / sqrt (sum / n + eps);
    for (uint32_t i = 0; i < n; i++)
        out [i] = (float) (x [i] * scale * weight [i]);
}

//  Rotate each head: pair i (adjacent, or halves for qwen2) by the angle
//  pos * theta^(-2i/n) / factor_i / linear factor.
static void
s_ref_rope (const reference_t *ref, float *vector, uint32_t n_heads, uint32_t pos)
{
    uint32_t n = ref->head_dim;
    bool neox = strcmp (ref->shape.architecture, "qwen2") == 0;
    double linear = ref->shape.rope_scaling && strcmp (ref->shape.rope_scaling, "linear") == 0
                  ? ref->shape.rope_factor: 1.0;
    for (uint32_t h = 0; h < n_heads; h++) {
        float *head = vector + (size_t) h * n;
        for (uint32_t i = 0; i < n / 2; i++) {
            double angle = pos * pow (ref->shape.rope_theta, -2.0 * i / n)
                         / ref->rope_factors [i] / linear;
            uint32_t a = neox? i: 2 * i, b = neox? i + n / 2: 2 * i + 1;
            double x0 = head [a], x1 = head [b];
            head [a] = (float) (x0 * cos (angle) - x1 * sin (angle));
            head [b] = (float) (x0 * sin (angle) + x1 * cos (angle));
        }
    }
}

//  One token at pos (all earlier positions done): its logits.
static void
s_reference_step (reference_t *ref, uint32_t token, uint32_t pos, float *logits)
{
    const tiny_shape_t *shape = &ref->shape;
    uint32_t dim = shape->dim, head_dim = ref->head_dim, kv_dim = ref->kv_dim;
    float x [512], xb [512], q [512], attention [512], h1 [1024], h2 [1024];
    assert_true (dim <= 512 && shape->ffn_dim <= 1024);
    memcpy (x, ref->embedding + (size_t) token * dim, dim * sizeof (float));
    for (uint32_t l = 0; l < shape->n_layers; l++) {
        reference_layer_t *layer = &ref->layers [l];
        float *k = ref->keys + ((size_t) l * shape->context + pos) * kv_dim;
        float *v = ref->values + ((size_t) l * shape->context + pos) * kv_dim;
        s_ref_rmsnorm (xb, x, layer->attn_norm, dim, shape->rms_eps);
        s_ref_matvec (q, layer->wq, layer->bq, xb, dim, dim);
        s_ref_matvec (k, layer->wk, layer->bk, xb, dim, kv_dim);
        s_ref_matvec (v, layer->wv, layer->bv, xb, dim, kv_dim);
        s_ref_rope (ref, q, shape->n_heads, pos);
        s_ref_rope (ref, k, shape->n_kv_heads, pos);
        for (uint32_t h = 0; h < shape->n_heads; h++) {
            uint32_t kv_head = h / (shape->n_heads / shape->n_kv_heads);
            double scores [256], largest = -INFINITY, total = 0;
            for (uint32_t t = 0; t <= pos; t++) {
                const float *key = ref->keys + ((size_t) l * shape->context + t) * kv_dim
                                 + kv_head * head_dim;
                double score = 0;
                for (uint32_t i = 0; i < head_dim; i++)
                    score += (double) q [h * head_dim + i] * key [i];
                scores [t] = score / sqrt ((double) head_dim);
                if (scores [t] > largest)
                    largest = scores [t];
            }
            for (uint32_t t = 0; t <= pos; t++) {
                scores [t] = exp (scores [t] - largest);
                total += scores [t];
            }
            for (uint32_t i = 0; i < head_dim; i++) {
                double sum = 0;
                for (uint32_t t = 0; t <= pos; t++)
                    sum += scores [t] * ref->values [((size_t) l * shape->context + t) * kv_dim
                                                     + kv_head * head_dim + i];
                attention [h * head_dim + i] = (float) (sum / total);
            }
        }
        s_ref_matvec (xb, layer->wo, NULL, attention, dim, dim);
        for (uint32_t i = 0; i < dim; i++)
            x [i] += xb [i];
        s_ref_rmsnorm (xb, x, layer->ffn_norm, dim, shape->rms_eps);
        s_ref_matvec (h1, layer->w_gate, NULL, xb, dim, shape->ffn_dim);
        s_ref_matvec (h2, layer->w_up, NULL, xb, dim, shape->ffn_dim);
        for (uint32_t i = 0; i < shape->ffn_dim; i++)
            h1 [i] = (float) (h1 [i] / (1 + exp (-(double) h1 [i])) * h2 [i]);
        s_ref_matvec (xb, layer->w_down, NULL, h1, shape->ffn_dim, dim);
        for (uint32_t i = 0; i < dim; i++)
            x [i] += xb [i];
    }
    s_ref_rmsnorm (xb, x, ref->output_norm, dim, shape->rms_eps);
    s_ref_matvec (logits, ref->output, NULL, xb, dim, shape->n_vocab);
}

//  ||a - b|| / ||b||.
static double
s_relative_error (const float *a, const float *b, uint32_t n)
{
    double difference = 0, norm = 0;
    for (uint32_t i = 0; i < n; i++) {
        difference += ((double) a [i] - b [i]) * ((double) a [i] - b [i]);
        norm += (double) b [i] * b [i];
    }
    return sqrt (difference / norm);
}

//  Run a prompt in one call and then a few tokens one by one through the model and the
//  reference; every logits vector must be within `tolerance` (relative). Returns the
//  largest error seen.
static double
s_compare_with_reference (const gguf_t *gguf, const tiny_shape_t *shape, double tolerance,
                          const char *label)
{
    const uint32_t tokens [10] = { 1, 17, 255, 3, 99, 42, 7, 200, 150, 299 };
    const uint32_t n_prompt = 7, n_total = 10;
    reference_t *ref = s_reference_new (gguf, shape);
    model_t *model = s_new_model (gguf, 2, shape->context);
    float *expected = malloc (shape->n_vocab * sizeof (float));
    char err [512];
    double worst = 0;
    for (uint32_t t = 0; t < n_total; t++) {
        s_reference_step (ref, tokens [t], t, expected);
        const float *logits = NULL;
        if (t + 1 == n_prompt)
            logits = s_forward (model, 1, 0, tokens, n_prompt, err, sizeof err);
        else
        if (t >= n_prompt)
            logits = s_forward (model, 1, t, &tokens [t], 1, err, sizeof err);
        else
            continue;
        if (!logits)
            fail_msg ("%s: %s", label, err);
        double error = s_relative_error (logits, expected, shape->n_vocab);
        if (error > worst)
            worst = error;
        if (!(error <= tolerance))
            fail_msg ("%s: position %u: logits are %.3g (relative) from the reference, more "
                      "than %.3g", label, t, error, tolerance);
    }
    free (expected);
    model_destroy (&model);
    s_reference_destroy (&ref);
    return worst;
}

//  Logits of a prompt run in one call, and of the same prompt token by token, in a new
//  model with n_threads threads (into out, n_vocab each).
static void
s_prompt_logits (const gguf_t *gguf, uint32_t n_threads, const uint32_t *tokens, uint32_t n,
                 float *whole, float *single)
{
    model_t *model = s_new_model (gguf, 2, 128);
    char err [512];
    assert_int_equal (model_set_threads (model, n_threads, err, sizeof err), 0);
    assert_int_equal (model_n_threads (model), n_threads);
    uint32_t n_vocab = model_config (model)->n_vocab;
    const float *logits = s_forward (model, 0, 0, tokens, n, err, sizeof err);
    assert_non_null (logits);
    memcpy (whole, logits, n_vocab * sizeof (float));
    for (uint32_t t = 0; t < n; t++) {
        logits = s_forward (model, 1, t, &tokens [t], 1, err, sizeof err);
        assert_non_null (logits);
    }
    memcpy (single, logits, n_vocab * sizeof (float));
    model_destroy (&model);
}

//  Every weight type: logits against the reference; a prompt at once equals token by
//  token bit for bit (no OpenBLAS below 16 rows), and three threads equal one.
static void
test_weight_types (void **state)
{
    (void) state;
    const struct { ggml_type_t type; double tolerance; } cases [] = {
        { GGML_TYPE_F32, 2e-3 }, { GGML_TYPE_F16, 3e-3 }, { GGML_TYPE_BF16, 2e-2 },
        { GGML_TYPE_Q8_0, 3e-2 }, { GGML_TYPE_Q4_0, 3e-2 }, { GGML_TYPE_Q4_K, 3e-2 },
        { GGML_TYPE_Q6_K, 3e-2 },
    };
    const uint32_t prompt [9] = { 1, 5, 9, 100, 299, 0, 64, 128, 3 };
    for (size_t c = 0; c < sizeof cases / sizeof cases [0]; c++) {
        tiny_shape_t shape = s_tiny_shape (cases [c].type);
        shape.seed = 11 + c;
        //  Mixed models, as llama.cpp's quantizer makes them: a Q6_K attn_v and output
        //  with Q4_K, a Q8_0 output with Q4_0; untied outputs for some.
        if (cases [c].type == GGML_TYPE_Q4_K) {
            shape.attn_v_type = GGML_TYPE_Q6_K;
            shape.output_type = GGML_TYPE_Q6_K;
        }
        if (cases [c].type == GGML_TYPE_Q4_0) {
            shape.output_type = GGML_TYPE_Q8_0;
            shape.tied = false;
        }
        if (cases [c].type == GGML_TYPE_F16 || cases [c].type == GGML_TYPE_Q6_K)
            shape.tied = false;
        gguf_t *gguf = s_tiny_model (&shape);
        double worst = s_compare_with_reference (gguf, &shape, cases [c].tolerance,
                                                 ggml_type_name (cases [c].type));
        print_message ("# %-5s tiny model: logits within %.2g of the reference (allowed %.2g)\n",
                       ggml_type_name (cases [c].type), worst, cases [c].tolerance);

        float whole [300], single [300], whole_threads [300], single_threads [300];
        s_prompt_logits (gguf, 1, prompt, 9, whole, single);
        s_prompt_logits (gguf, 3, prompt, 9, whole_threads, single_threads);
        assert_memory_equal (whole, single, sizeof whole);
        assert_memory_equal (whole, whole_threads, sizeof whole);
        assert_memory_equal (single, single_threads, sizeof single);
        gguf_destroy (&gguf);
    }
}

//  A prompt long enough for the batched products (and for OpenBLAS, when it is there,
//  with F32 and F16 weights), with one thread and with two: equal to token by token, bit for bit
//  without OpenBLAS. OpenBLAS orders its sums differently; a last-bit difference in a
//  key or value can then round the other way into the F16 cache (2^-11 relative), so
//  the logits may differ by about 1e-4.
static void
test_long_prompt (void **state)
{
    (void) state;
    const ggml_type_t types [4] = { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K };
    uint32_t prompt [70];
    for (uint32_t i = 0; i < 70; i++)
        prompt [i] = (i * 37 + 11) % 300;
    for (int t = 0; t < 4; t++) {
        tiny_shape_t shape = s_tiny_shape (types [t]);
        shape.context = 128;
        gguf_t *gguf = s_tiny_model (&shape);
        float whole [300], single [300], whole_2 [300], single_2 [300];
        s_prompt_logits (gguf, 1, prompt, 70, whole, single);
        s_prompt_logits (gguf, 2, prompt, 70, whole_2, single_2);
        double error = s_relative_error (whole, single, 300);
        double error_2 = s_relative_error (whole_2, single, 300);
        print_message ("# %-5s 70-token prompt at once vs token by token: %.2g (2 threads %.2g)\n",
                       ggml_type_name (types [t]), error, error_2);
        assert_memory_equal (single, single_2, sizeof single);
        if (ggml_type_block_elements (types [t]) == 1 && kernels_blas_available ())
            assert_true (error <= 1e-3 && error_2 <= 1e-3);
        else {
            assert_memory_equal (whole, single, sizeof whole);
            assert_memory_equal (whole_2, single, sizeof whole);
        }
        gguf_destroy (&gguf);
    }
}

//  Grouped-query attention of the shapes the fast weighted sums take apart: 9 heads on 3
//  KV heads (SmolLM2's grouping, heads of 64, 40 and 36 values: whole runs of 32, of 8,
//  and a last 4), 8 on 1 (multi-query: two groups of four) and 12 on 2 (a group of four
//  and one of two, heads of 24). With one thread every attention task takes a whole
//  group of heads (each key and value row read once for the group); with three threads
//  a single new row is split one head a task (s_attention_group), each head alone as
//  before grouping. Both must give the same logits, bit for bit, over a 40-token prompt
//  at once and token by token (OpenBLAS off: its sums would differ); the shapes that
//  the double reference holds are also checked against it.
static void
test_grouped_attention (void **state)
{
    (void) state;
    const struct { uint32_t dim, n_heads, n_kv_heads; } shapes [] = {
        { 576, 9, 3 }, { 360, 9, 3 }, { 324, 9, 3 }, { 256, 8, 1 }, { 288, 12, 2 }
    };
    uint32_t prompt [40];
    for (uint32_t i = 0; i < 40; i++)
        prompt [i] = i? (i * 53 + 19) % 300: 1;
    bool had_blas = kernels_blas_available ();
    kernels_set_blas (false);
    for (size_t c = 0; c < sizeof shapes / sizeof shapes [0]; c++) {
        tiny_shape_t shape = s_tiny_shape (GGML_TYPE_F16);
        shape.dim = shapes [c].dim;
        shape.n_heads = shapes [c].n_heads;
        shape.n_kv_heads = shapes [c].n_kv_heads;
        shape.context = 128;
        shape.seed = 31 + c;
        gguf_t *gguf = s_tiny_model (&shape);
        char label [64];
        snprintf (label, sizeof label, "GQA %u/%u, dim %u", shape.n_heads, shape.n_kv_heads,
                  shape.dim);
        if (shape.dim <= 512) {
            double worst = s_compare_with_reference (gguf, &shape, 3e-3, label);
            print_message ("# %s: logits within %.2g of the reference\n", label, worst);
        }
        float whole [300], single [300], whole_3 [300], single_3 [300];
        s_prompt_logits (gguf, 1, prompt, 40, whole, single);
        s_prompt_logits (gguf, 3, prompt, 40, whole_3, single_3);
        assert_memory_equal (whole, single, sizeof whole);
        assert_memory_equal (whole_3, single, sizeof whole);
        assert_memory_equal (single_3, single, sizeof single);
        print_message ("# %s: grouped heads and one head at a time, bit for bit\n", label);
        gguf_destroy (&gguf);
    }
    kernels_set_blas (had_blas);
}

//  qwen2: biases on Q, K and V, RoPE on halves, a separate output, GQA 4/1.
static void
test_qwen2 (void **state)
{
    (void) state;
    const ggml_type_t types [2] = { GGML_TYPE_F32, GGML_TYPE_Q8_0 };
    for (int t = 0; t < 2; t++) {
        tiny_shape_t shape = s_tiny_shape (types [t]);
        shape.architecture = "qwen2";
        shape.biases = true;
        shape.tied = false;
        shape.n_kv_heads = 1;
        shape.rope_theta = 1000000.0f;
        shape.seed = 31 + t;
        gguf_t *gguf = s_tiny_model (&shape);
        double tolerance = types [t] == GGML_TYPE_F32? 2e-3: 3e-2;
        double worst = s_compare_with_reference (gguf, &shape, tolerance, "qwen2");
        print_message ("# qwen2 %s: logits within %.2g of the reference\n",
                       ggml_type_name (types [t]), worst);
        gguf_destroy (&gguf);
    }
    //  A qwen2 model without its biases is refused, naming the tensor.
    tiny_shape_t shape = s_tiny_shape (GGML_TYPE_F32);
    shape.architecture = "qwen2";
    gguf_t *gguf = s_tiny_model (&shape);
    char err [512] = "";
    assert_null (model_new (gguf, 16, err, sizeof err));
    print_message ("# refused: %s\n", err);
    assert_non_null (strstr (err, "blk.0.attn_q.bias"));
    gguf_destroy (&gguf);
    //  Biases in a llama model are taken too.
    shape = s_tiny_shape (GGML_TYPE_F32);
    shape.biases = true;
    gguf = s_tiny_model (&shape);
    s_compare_with_reference (gguf, &shape, 2e-3, "llama with biases");
    gguf_destroy (&gguf);
}

//  RoPE scaling: llama3 from the metadata keys, llama3 as a rope_freqs.weight tensor
//  (which must give the same logits), and linear. Positions run past the original
//  context so that every kind of frequency is scaled.
static void
test_rope_scaling (void **state)
{
    (void) state;
    tiny_shape_t shape = s_tiny_shape (GGML_TYPE_F32);
    shape.rope_scaling = "llama3";
    shape.rope_factor = 8;
    gguf_t *from_keys = s_tiny_model (&shape);
    s_compare_with_reference (from_keys, &shape, 2e-3, "llama3 rope scaling (keys)");
    shape.rope_freqs_tensor = true;
    gguf_t *from_tensor = s_tiny_model (&shape);
    s_compare_with_reference (from_tensor, &shape, 2e-3, "llama3 rope scaling (tensor)");
    //  Same weights (same seed), the same factors: the same logits.
    const uint32_t prompt [6] = { 3, 1, 4, 1, 5, 9 };
    float a [300], b [300], a_single [300], b_single [300];
    s_prompt_logits (from_keys, 1, prompt, 6, a, a_single);
    s_prompt_logits (from_tensor, 1, prompt, 6, b, b_single);
    assert_true (s_relative_error (a, b, 300) < 1e-6);
    //  And they differ from no scaling at all.
    tiny_shape_t plain = s_tiny_shape (GGML_TYPE_F32);
    gguf_t *unscaled = s_tiny_model (&plain);
    float c [300], c_single [300];
    s_prompt_logits (unscaled, 1, prompt, 6, c, c_single);
    assert_true (s_relative_error (a, c, 300) > 1e-3);
    gguf_destroy (&from_keys);
    gguf_destroy (&from_tensor);
    gguf_destroy (&unscaled);

    shape = s_tiny_shape (GGML_TYPE_F16);
    shape.rope_scaling = "linear";
    shape.rope_factor = 4;
    gguf_t *linear = s_tiny_model (&shape);
    s_compare_with_reference (linear, &shape, 3e-3, "linear rope scaling");
    gguf_destroy (&linear);

    shape.rope_scaling = "yarn";
    gguf_t *yarn = s_tiny_model (&shape);
    char err [512] = "";
    assert_null (model_new (yarn, 16, err, sizeof err));
    print_message ("# refused: %s\n", err);
    assert_non_null (strstr (err, "yarn"));
    gguf_destroy (&yarn);
}

//  Threads: ZLLM_THREADS sets the default; bad values are refused with a message.
static void
test_threads (void **state)
{
    (void) state;
    char saved [64] = "";
    const char *setting = getenv ("ZLLM_THREADS");
    if (setting)
        snprintf (saved, sizeof saved, "%s", setting);
    unsetenv ("ZLLM_THREADS");
    gguf_t *gguf = s_open_model ("stories260K.gguf");
    model_t *model = s_new_model (gguf, 1, 16);
    assert_int_equal (model_n_threads (model), 1);
    char err [512] = "";
    assert_int_equal (model_set_threads (model, 0, err, sizeof err), -1);
    assert_true (strlen (err) > 0);
    assert_int_equal (model_set_threads (model, 100000, err, sizeof err), -1);
    assert_int_equal (model_n_threads (model), 1);
    assert_int_equal (model_set_threads (model, 4, err, sizeof err), 0);
    assert_int_equal (model_set_threads (model, 2, err, sizeof err), 0);
    assert_int_equal (model_n_threads (model), 2);
    model_destroy (&model);

    setenv ("ZLLM_THREADS", "3", 1);
    model = s_new_model (gguf, 1, 16);
    assert_int_equal (model_n_threads (model), 3);
    model_destroy (&model);
    setenv ("ZLLM_THREADS", "three", 1);
    err [0] = 0;
    assert_null (model_new (gguf, 16, err, sizeof err));
    assert_non_null (strstr (err, "ZLLM_THREADS"));
    setenv ("ZLLM_THREADS", "0", 1);
    assert_null (model_new (gguf, 16, err, sizeof err));
    unsetenv ("ZLLM_THREADS");
    if (saved [0])
        setenv ("ZLLM_THREADS", saved, 1);
    gguf_destroy (&gguf);
}

//  --- The paged cache and batches -----------------------------------------------------------

static uint64_t
s_next_random (uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ULL;
}

//  The block ids 0 .. n_blocks - 1 in a scrambled order (a seeded shuffle).
static void
s_scrambled_blocks (uint32_t *blocks, uint32_t n_blocks, uint64_t seed)
{
    uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (uint32_t i = 0; i < n_blocks; i++)
        blocks [i] = i;
    for (uint32_t i = n_blocks - 1; i > 0; i--) {
        uint32_t j = (uint32_t) (s_next_random (&state) % (i + 1));
        uint32_t swap = blocks [i];
        blocks [i] = blocks [j];
        blocks [j] = swap;
    }
}

//  Run one sequence (prompt in one call, then n_steps greedy steps) in a model whose
//  cache has blocks of block_size, the sequence in `table_blocks` of a pool 3 times
//  as large, the rest of the pool filled first with another sequence's keys and
//  values. The prompt's logits and each step's go to logits [(n_steps + 1) * n_vocab].
static void
s_run_paged (const gguf_t *gguf, uint32_t block_size, bool scrambled,
             const uint32_t *prompt, uint32_t n_prompt, uint32_t n_steps, float *logits_out)
{
    char err [512] = "";
    const uint32_t n_ctx = 128;
    model_t *model = model_new (gguf, n_ctx, err, sizeof err);
    assert_non_null (model);
    uint32_t n_vocab = model_config (model)->n_vocab;
    uint32_t n_needed = (n_prompt + n_steps + block_size - 1) / block_size;
    uint32_t n_blocks = 3 * n_needed + 1;
    assert_int_equal (model_cache_new (model, n_blocks, block_size, err, sizeof err), 0);
    uint32_t *blocks = malloc (n_blocks * sizeof (uint32_t));
    assert_non_null (blocks);
    if (scrambled) {
        s_scrambled_blocks (blocks, n_blocks, block_size);
        //  Not in order: some neighbours in the table are not neighbours in the pool.
        bool in_order = true;
        for (uint32_t i = 0; i + 1 < n_needed; i++)
            in_order = in_order && blocks [i + 1] == blocks [i] + 1;
        assert_true (n_needed < 2 || !in_order);
    }
    else
        s_table (blocks, n_blocks, 0);
    const uint32_t *table = blocks, *others = blocks + n_needed;

    //  The other blocks get another sequence's keys and values: reading them by mistake
    //  would show.
    uint32_t n_other = (n_blocks - n_needed) * block_size;
    if (n_other > n_ctx)
        n_other = n_ctx;
    uint32_t *other = malloc (n_other * sizeof (uint32_t));
    for (uint32_t i = 0; i < n_other; i++)
        other [i] = (i * 13 + 5) % n_vocab;
    model_seq_t decoy = { other, n_other, 0, others, n_blocks - n_needed, false };
    assert_non_null (model_forward_seqs (model, &decoy, 1, err, sizeof err));
    free (other);

    model_seq_t seq = { prompt, n_prompt, 0, table, n_needed, true };
    const float *logits = model_forward_seqs (model, &seq, 1, err, sizeof err);
    if (!logits)
        fail_msg ("prefill: %s", err);
    memcpy (logits_out, logits, n_vocab * sizeof (float));
    for (uint32_t step = 1; step <= n_steps; step++) {
        uint32_t token = s_greedy (logits, n_vocab);
        seq = (model_seq_t) { &token, 1, n_prompt + step - 1, table, n_needed, true };
        logits = model_forward_seqs (model, &seq, 1, err, sizeof err);
        if (!logits)
            fail_msg ("step %u: %s", step, err);
        memcpy (logits_out + (size_t) step * n_vocab, logits, n_vocab * sizeof (float));
    }
    free (blocks);
    model_destroy (&model);
}

//  A sequence in scrambled blocks, among blocks full of another sequence, of sizes 1,
//  16 and 7 (neither divides the 37-token prompt), gives the logits of the same
//  sequence in contiguous blocks of 16, bit for bit.
static void
test_scrambled_blocks (void **state)
{
    (void) state;
    const char *models [3] = { "stories260K.gguf", "llama-2-tiny-random.gguf", "toy-chat.gguf" };
    uint32_t prompt [37];
    for (uint32_t i = 0; i < 37; i++)
        prompt [i] = i? (i * 37 + 11) % 500: 1;
    const uint32_t n_steps = 6;
    for (int m = 0; m < 3; m++) {
        gguf_t *gguf = s_open_model (models [m]);
        uint32_t n_vocab = (uint32_t) gguf_find_tensor (gguf, "token_embd.weight")->ne [1];
        size_t bytes = (size_t) (n_steps + 1) * n_vocab * sizeof (float);
        float *expected = malloc (bytes), *logits = malloc (bytes);
        assert_non_null (expected);
        assert_non_null (logits);
        s_run_paged (gguf, 16, false, prompt, 37, n_steps, expected);
        const struct { uint32_t block_size; bool scrambled; } layouts [] = {
            { 16, true }, { 1, true }, { 1, false }, { 7, true }, { 7, false }, { 128, false }
        };
        for (size_t l = 0; l < sizeof layouts / sizeof layouts [0]; l++) {
            s_run_paged (gguf, layouts [l].block_size, layouts [l].scrambled, prompt, 37,
                         n_steps, logits);
            if (memcmp (logits, expected, bytes) != 0)
                fail_msg ("%s: blocks of %u%s give other logits than contiguous blocks of 16",
                          models [m], layouts [l].block_size,
                          layouts [l].scrambled? ", scrambled,": "");
        }
        print_message ("# %s: blocks of 1, 7, 16, 128, scrambled or not: the same logits\n",
                       models [m]);
        free (expected);
        free (logits);
        gguf_destroy (&gguf);
    }
}

#define BATCH_SEQS 8
#define BATCH_STEPS 12
#define BATCH_CTX 320

//  One sequence of the batch test: its prompt, then the tokens greedy decoding chose
//  when it ran alone, and the logits it had then (after the prompt, then each step).
typedef struct {
    uint32_t tokens [BATCH_CTX];
    uint32_t n_prompt;
    float *logits;                      //  [BATCH_STEPS + 1][n_vocab]
    uint32_t start;                     //  the round it starts in, in the batch
    uint32_t chunk;                     //  prompt tokens per call, in the batch
    uint32_t table [BATCH_CTX];
    uint32_t n_table;
    uint32_t done;                      //  positions run, in the batch
} batch_seq_t;

//  Run every sequence alone: the prompt in one call, then greedy steps one by one.
static void
s_batch_alone (const gguf_t *gguf, batch_seq_t *seqs, uint32_t n_vocab)
{
    for (uint32_t i = 0; i < BATCH_SEQS; i++) {
        batch_seq_t *seq = &seqs [i];
        model_t *model = s_new_model (gguf, 1, BATCH_CTX);
        char err [512] = "";
        const float *logits = s_forward (model, 0, 0, seq->tokens, seq->n_prompt,
                                         err, sizeof err);
        assert_non_null (logits);
        for (uint32_t k = 0; ; k++) {
            memcpy (seq->logits + (size_t) k * n_vocab, logits, n_vocab * sizeof (float));
            uint32_t pos = seq->n_prompt + k;
            seq->tokens [pos] = s_greedy (logits, n_vocab);
            if (k == BATCH_STEPS)
                break;
            logits = s_forward (model, 0, pos, &seq->tokens [pos], 1, err, sizeof err);
            assert_non_null (logits);
        }
        model_destroy (&model);
    }
}

//  Run all the sequences together, in rounds: sequence i joins in round `start`, then
//  each round brings its next prompt chunk or its next token (the one it chose alone),
//  in an order that turns every round; blocks come from a scrambled pool as the
//  sequences grow. Every logits row must be the one it had alone: bit for bit when
//  exact, else within `tolerance` (relative). Returns the largest error.
static double
s_batch_together (const gguf_t *gguf, batch_seq_t *seqs, uint32_t n_vocab, uint32_t n_threads,
                  bool exact, double tolerance)
{
    char err [512] = "";
    model_t *model = model_new (gguf, BATCH_CTX, err, sizeof err);
    assert_non_null (model);
    assert_int_equal (model_set_threads (model, n_threads, err, sizeof err), 0);
    const uint32_t block_size = 16;
    const uint32_t n_blocks = BATCH_SEQS * BATCH_CTX / block_size;
    assert_int_equal (model_cache_new (model, n_blocks, block_size, err, sizeof err), 0);
    uint32_t free_blocks [BATCH_SEQS * BATCH_CTX / 16];
    s_scrambled_blocks (free_blocks, n_blocks, 99);
    uint32_t n_used = 0;
    for (uint32_t i = 0; i < BATCH_SEQS; i++) {
        seqs [i].done = 0;
        seqs [i].n_table = 0;
    }
    bool mixed = false, all_in_one = false, long_pass = false;
    double worst = 0;
    for (uint32_t round = 0; ; round++) {
        model_seq_t calls [BATCH_SEQS];
        uint32_t which [BATCH_SEQS];
        uint32_t n_calls = 0, n_rows = 0;
        bool prefill = false, decode = false;
        for (uint32_t j = 0; j < BATCH_SEQS; j++) {
            uint32_t i = (j + round) % BATCH_SEQS;
            batch_seq_t *seq = &seqs [i];
            uint32_t total = seq->n_prompt + BATCH_STEPS;
            if (round < seq->start || seq->done == total)
                continue;
            uint32_t n = 1;
            if (seq->done < seq->n_prompt) {
                n = seq->n_prompt - seq->done < seq->chunk? seq->n_prompt - seq->done
                                                          : seq->chunk;
                prefill = true;
            }
            else
                decode = true;
            while (seq->n_table * block_size < seq->done + n)
                seq->table [seq->n_table++] = free_blocks [n_used++];
            calls [n_calls] = (model_seq_t) { seq->tokens + seq->done, n, seq->done,
                                              seq->table, seq->n_table,
                                              seq->done + n >= seq->n_prompt };
            which [n_calls++] = i;
            n_rows += n;
        }
        if (n_calls == 0)
            break;
        mixed = mixed || (prefill && decode);
        all_in_one = all_in_one || n_calls == BATCH_SEQS;
        long_pass = long_pass || n_rows > 256;
        const float *logits = model_forward_seqs (model, calls, n_calls, err, sizeof err);
        if (!logits)
            fail_msg ("round %u: %s", round, err);
        uint32_t row = 0;
        for (uint32_t c = 0; c < n_calls; c++) {
            batch_seq_t *seq = &seqs [which [c]];
            seq->done += calls [c].n_tokens;
            if (!calls [c].want_logits)
                continue;
            uint32_t k = seq->done - seq->n_prompt;
            const float *got = logits + (size_t) row++ * n_vocab;
            const float *expected = seq->logits + (size_t) k * n_vocab;
            if (exact) {
                if (memcmp (got, expected, n_vocab * sizeof (float)) != 0)
                    fail_msg ("round %u: sequence %u, step %u: the logits differ from alone",
                              round, which [c], k);
                assert_int_equal (s_greedy (got, n_vocab), seq->tokens [seq->done]);
            }
            double error = s_relative_error (got, expected, n_vocab);
            if (error > worst)
                worst = error;
            if (!(error <= tolerance))
                fail_msg ("round %u: sequence %u, step %u: logits %.3g from alone", round,
                          which [c], k, error);
        }
    }
    //  The schedule did what it is for.
    assert_true (mixed && all_in_one && long_pass);
    model_destroy (&model);
    return worst;
}

//  Eight sequences, greedily decoded alone and then together in one batch a step
//  (prompt chunks of several sizes, a 270-token prompt that spans two passes, single
//  tokens at different positions, two threads): the same logits, bit for bit, on a
//  quantized model and on stories260K (F32) with OpenBLAS off; with OpenBLAS on,
//  stories260K's are within float rounding.
static void
test_batch_equals_alone (void **state)
{
    (void) state;
    tiny_shape_t shape = s_tiny_shape (GGML_TYPE_Q8_0);
    shape.context = BATCH_CTX;
    shape.seed = 5;
    gguf_t *models [2] = { s_tiny_model (&shape), s_open_model ("stories260K.gguf") };
    const char *names [2] = { "Q8_0 tiny model", "stories260K" };
    const uint32_t lengths [BATCH_SEQS] = { 1, 3, 270, 16, 17, 33, 5, 40 };
    const uint32_t chunks [BATCH_SEQS] = { 1, 2, 270, 16, 7, 10, 5, 13 };
    bool had_blas = kernels_blas_available ();
    for (int m = 0; m < 2; m++) {
        uint32_t n_vocab = (uint32_t) gguf_find_tensor (models [m], "token_embd.weight")->ne [1];
        batch_seq_t *seqs = calloc (BATCH_SEQS, sizeof (batch_seq_t));
        assert_non_null (seqs);
        for (uint32_t i = 0; i < BATCH_SEQS; i++) {
            seqs [i].n_prompt = lengths [i];
            for (uint32_t t = 0; t < lengths [i]; t++)
                seqs [i].tokens [t] = t? (t * 31 + i * 97 + 7) % n_vocab: 1;
            seqs [i].start = i % 4;
            seqs [i].chunk = chunks [i];
            seqs [i].logits = malloc ((size_t) (BATCH_STEPS + 1) * n_vocab * sizeof (float));
            assert_non_null (seqs [i].logits);
        }
        //  Exact: OpenBLAS off (a no-op for the quantized model, which never uses it).
        kernels_set_blas (false);
        s_batch_alone (models [m], seqs, n_vocab);
        s_batch_together (models [m], seqs, n_vocab, 2, true, 0);
        kernels_set_blas (had_blas);
        print_message ("# %s: 8 sequences in one batch, bit for bit as alone\n", names [m]);
        if (m == 1 && had_blas) {
            s_batch_alone (models [m], seqs, n_vocab);
            double worst = s_batch_together (models [m], seqs, n_vocab, 2, false, 1e-3);
            print_message ("# %s with OpenBLAS: batch against alone within %.2g\n",
                           names [m], worst);
        }
        for (uint32_t i = 0; i < BATCH_SEQS; i++)
            free (seqs [i].logits);
        free (seqs);
        gguf_destroy (&models [m]);
    }
}

//  Fork a sequence by copying its blocks: a full copy, and a copy-on-write fork that
//  shares the full blocks and copies only the last, partly filled one. All three go
//  on together in one call a step: the original and the full copy give the logits the
//  sequence has when never forked, and the fork that takes another token gives the
//  logits of that other sequence run from scratch.
static void
test_copy_blocks_fork (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("stories260K.gguf");
    const uint32_t prompt [13] = { 1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 260 };
    const uint32_t n_prompt = 13, n_before = 2, n_after = 8;
    const uint32_t n_steps = n_before + n_after;
    uint32_t n_vocab = 512;
    char err [512] = "";

    //  Never forked: the tokens and the logits of each step.
    uint32_t tokens [13 + 16];
    memcpy (tokens, prompt, sizeof prompt);
    float *original = malloc ((size_t) (n_steps + 1) * n_vocab * sizeof (float));
    model_t *model = s_new_model (gguf, 1, 64);
    const float *logits = s_forward (model, 0, 0, prompt, n_prompt, err, sizeof err);
    assert_non_null (logits);
    for (uint32_t k = 0; ; k++) {
        memcpy (original + (size_t) k * n_vocab, logits, n_vocab * sizeof (float));
        tokens [n_prompt + k] = s_greedy (logits, n_vocab);
        if (k == n_steps)
            break;
        logits = s_forward (model, 0, n_prompt + k, &tokens [n_prompt + k], 1, err, sizeof err);
        assert_non_null (logits);
    }
    model_destroy (&model);

    //  The other fork's sequence from scratch: the same until the fork, then token 7.
    uint32_t other [13 + 16];
    memcpy (other, tokens, sizeof other);
    uint32_t at = n_prompt + n_before;                  //  the first position after the fork
    other [at] = 7;
    float *other_logits = malloc ((size_t) (n_after + 1) * n_vocab * sizeof (float));
    model = s_new_model (gguf, 1, 64);
    logits = s_forward (model, 0, 0, other, n_prompt, err, sizeof err);
    for (uint32_t pos = n_prompt; pos < at + n_after; pos++) {
        logits = s_forward (model, 0, pos, &other [pos], 1, err, sizeof err);
        assert_non_null (logits);
        if (pos >= at) {
            memcpy (other_logits + (size_t) (pos - at) * n_vocab, logits,
                    n_vocab * sizeof (float));
            other [pos + 1] = s_greedy (logits, n_vocab);
        }
    }
    model_destroy (&model);

    //  Blocks of 8 in a pool of 16: the original in blocks 9, 2, 14, 5.
    model = model_new (gguf, 64, err, sizeof err);
    assert_non_null (model);
    assert_int_equal (model_cache_new (model, 16, 8, err, sizeof err), 0);
    uint32_t table_a [4] = { 9, 2, 14, 5 };
    model_seq_t seq = { prompt, n_prompt, 0, table_a, 4, true };
    logits = model_forward_seqs (model, &seq, 1, err, sizeof err);
    assert_non_null (logits);
    for (uint32_t k = 0; k < n_before; k++) {
        seq = (model_seq_t) { &tokens [n_prompt + k], 1, n_prompt + k, table_a, 4, true };
        logits = model_forward_seqs (model, &seq, 1, err, sizeof err);
        assert_non_null (logits);
    }
    assert_memory_equal (logits, original + (size_t) n_before * n_vocab,
                         n_vocab * sizeof (float));
    //  Positions 0..14 are there: block 9 full, block 2 holds 7 of 8.
    uint32_t table_b [4] = { 0, 11, 3, 7 };             //  a full copy
    uint32_t table_c [4] = { 9, 12, 1, 13 };            //  shares block 9, copies block 2
    const uint32_t from [3] = { 9, 2, 2 }, to [3] = { 0, 11, 12 };
    assert_int_equal (model_copy_blocks (model, from, to, 3, err, sizeof err), 0);
    for (uint32_t k = 0; k < n_after; k++) {
        uint32_t pos = at + k;
        model_seq_t calls [3] = {
            { &tokens [pos], 1, pos, table_a, 4, true },
            { &other [pos], 1, pos, table_c, 4, true },
            { &tokens [pos], 1, pos, table_b, 4, true },
        };
        logits = model_forward_seqs (model, calls, 3, err, sizeof err);
        if (!logits)
            fail_msg ("after the fork, step %u: %s", k, err);
        const float *expected = original + (size_t) (n_before + k + 1) * n_vocab;
        assert_memory_equal (logits, expected, n_vocab * sizeof (float));
        assert_memory_equal (logits + 2 * n_vocab, expected, n_vocab * sizeof (float));
        assert_memory_equal (logits + n_vocab, other_logits + (size_t) k * n_vocab,
                             n_vocab * sizeof (float));
    }
    //  Sanity: the other fork went another way.
    assert_true (memcmp (other_logits, original + (size_t) (n_before + 1) * n_vocab,
                         n_vocab * sizeof (float)) != 0);
    model_destroy (&model);
    free (original);
    free (other_logits);
    gguf_destroy (&gguf);
}

//  The logits rows follow the sequences that want them, in order; a call where none
//  wants them still runs (and returns non-NULL).
static void
test_logits_rows (void **state)
{
    (void) state;
    gguf_t *gguf = s_open_model ("stories260K.gguf");
    const uint32_t a [4] = { 1, 403, 407, 261 }, b [3] = { 1, 291, 376 }, c [2] = { 1, 400 };
    const uint32_t *prompts [3] = { a, b, c };
    const uint32_t lengths [3] = { 4, 3, 2 };
    uint32_t n_vocab = 512;
    float alone [3][512];
    char err [512] = "";
    for (int i = 0; i < 3; i++) {
        model_t *model = s_new_model (gguf, 1, 16);
        const float *logits = s_forward (model, 0, 0, prompts [i], lengths [i], err, sizeof err);
        assert_non_null (logits);
        memcpy (alone [i], logits, sizeof alone [i]);
        model_destroy (&model);
    }
    model_t *model = model_new (gguf, 16, err, sizeof err);
    assert_int_equal (model_cache_new (model, 3, 16, err, sizeof err), 0);
    const uint32_t tables [3] = { 2, 0, 1 };
    model_seq_t calls [3];
    for (int i = 0; i < 3; i++)
        calls [i] = (model_seq_t) { prompts [i], lengths [i], 0, &tables [i], 1, i != 1 };
    const float *logits = model_forward_seqs (model, calls, 3, err, sizeof err);
    assert_non_null (logits);
    assert_memory_equal (logits, alone [0], sizeof alone [0]);
    assert_memory_equal (logits + n_vocab, alone [2], sizeof alone [2]);
    for (int i = 0; i < 3; i++)
        calls [i].want_logits = false;
    assert_non_null (model_forward_seqs (model, calls, 3, err, sizeof err));
    //  Then all three, and then more rows than before (the buffer grows).
    for (int i = 0; i < 3; i++)
        calls [i].want_logits = true;
    logits = model_forward_seqs (model, calls, 3, err, sizeof err);
    assert_non_null (logits);
    for (int i = 0; i < 3; i++)
        assert_memory_equal (logits + i * n_vocab, alone [i], sizeof alone [i]);
    model_destroy (&model);
    gguf_destroy (&gguf);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_config),
        cmocka_unit_test (test_greedy_reference),
        cmocka_unit_test (test_toy_chat_reference),
        cmocka_unit_test (test_prefill_equals_token_by_token),
        cmocka_unit_test (test_sequences_are_independent),
        cmocka_unit_test (test_forward_errors),
        cmocka_unit_test (test_vocab_only_refused),
        cmocka_unit_test (test_bad_models_refused),
        cmocka_unit_test (test_corrupt_headers_never_crash),
        cmocka_unit_test (test_weight_types),
        cmocka_unit_test (test_long_prompt),
        cmocka_unit_test (test_qwen2),
        cmocka_unit_test (test_grouped_attention),
        cmocka_unit_test (test_rope_scaling),
        cmocka_unit_test (test_threads),
        cmocka_unit_test (test_scrambled_blocks),
        cmocka_unit_test (test_batch_equals_alone),
        cmocka_unit_test (test_copy_blocks_fork),
        cmocka_unit_test (test_logits_rows),
    };
    return cmocka_run_group_tests_name ("model", tests, NULL, NULL);
}
