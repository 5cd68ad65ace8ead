/*  test_output_text — token ids to OpenAI output on toy-chat's vocabulary: text as the
    detokenizer gives it, cut at stop strings whatever the token boundaries (before the
    stop string, or after it with include_stop), special tokens left out or, with
    keep_special, written as their text, tool calls parsed into deltas, nothing lost.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "output_text.h"
#include "vocab.h"

static vocab_t *s_vocab;

static int
s_setup (void **state)
{
    (void) state;
    const char *shared = getenv ("ZLLM_SHARED_DIR");
    char path [512], err [256];
    snprintf (path, sizeof path, "%s/models/toy-chat.gguf", shared ? shared : "../shared");
    gguf_t *gguf = gguf_open (path, err, sizeof err);
    assert_non_null (gguf);
    s_vocab = vocab_new (gguf, err, sizeof err);
    gguf_destroy (&gguf);
    assert_non_null (s_vocab);
    return 0;
}

static int
s_teardown (void **state)
{
    (void) state;
    vocab_destroy (&s_vocab);
    return 0;
}

//  The ids of text, without BOS.
static size_t
s_ids (const char *text, uint32_t *ids, size_t max)
{
    char err [256];
    int64_t n = vocab_tokenize (s_vocab, text, strlen (text), false, ids, max, err, sizeof err);
    assert_true (n > 0 && (size_t) n <= max);
    return (size_t) n;
}

//  Run ids through an output_text taking output after every `every` tokens; returns all
//  text (heap) and the merged tool-call deltas in *calls (heap JSON array).
static char *
s_run (output_text_t *output, const uint32_t *ids, size_t n, size_t every, json_t **calls)
{
    char *all = calloc (1, 1);
    *calls = json_array ();
    for (size_t i = 0; i <= n; i++) {
        if (i < n)
            output_text_add (output, ids [i]);
        else
            output_text_finish (output);
        if (i == n || (i + 1) % every == 0) {
            char *text = NULL, *tool_calls = NULL;
            assert_int_equal (output_text_take (output, &text, &tool_calls), 0);
            all = realloc (all, strlen (all) + strlen (text) + 1);
            strcat (all, text);
            if (tool_calls) {
                json_t *deltas = json_loads (tool_calls, 0, NULL);
                assert_true (json_is_array (deltas));
                json_array_extend (*calls, deltas);
                json_decref (deltas);
            }
            free (text);
            free (tool_calls);
        }
    }
    return all;
}

static void
test_plain_text (void **state)
{
    (void) state;
    uint32_t ids [64];
    size_t n = s_ids ("The capital of France is Paris.", ids, 64);
    for (size_t every = 1; every <= 3; every++) {
        output_text_t *output = output_text_new (s_vocab, NULL);
        json_t *calls;
        char *text = s_run (output, ids, n, every, &calls);
        //  The SentencePiece space before the first word is part of the text.
        assert_string_equal (text, " The capital of France is Paris.");
        assert_int_equal (json_array_size (calls), 0);
        assert_false (output_text_stopped (output));
        free (text);
        json_decref (calls);
        output_text_destroy (&output);
    }
}

static void
test_stop_strings (void **state)
{
    (void) state;
    uint32_t ids [64];
    size_t n = s_ids ("The capital of France is Paris.", ids, 64);
    const char *stops [] = { "nce i", "Paris" };
    for (size_t every = 1; every <= 4; every++) {
        output_text_options_t options = { .stops = stops, .n_stops = 2 };
        output_text_t *output = output_text_new (s_vocab, &options);
        json_t *calls;
        char *text = s_run (output, ids, n, every, &calls);
        assert_string_equal (text, " The capital of Fra");
        assert_true (output_text_stopped (output));
        free (text);
        json_decref (calls);
        output_text_destroy (&output);
    }
}

static void
test_tool_calls (void **state)
{
    (void) state;
    const char *reply = "{\"name\": \"get_weather\", \"parameters\": {\"location\": "
                        "\"San Francisco, CA\", \"unit\": \"fahrenheit\"}}";
    uint32_t ids [128];
    size_t n = s_ids (reply, ids, 128);
    for (size_t every = 1; every <= 5; every += 4) {
        output_text_options_t options = {
            .tools = true, .format = TOOL_PARSER_LLAMA3_JSON, .id_seed = 7
        };
        output_text_t *output = output_text_new (s_vocab, &options);
        json_t *calls;
        char *text = s_run (output, ids, n, every, &calls);
        assert_int_equal (output_text_tool_call_count (output), 1);
        assert_int_equal (json_array_size (calls), 1);
        json_t *call = json_array_get (calls, 0);
        assert_int_equal (json_integer_value (json_object_get (call, "index")), 0);
        json_t *function = json_object_get (call, "function");
        assert_string_equal (json_string_value (json_object_get (function, "name")),
                             "get_weather");
        assert_string_equal (json_string_value (json_object_get (function, "arguments")),
                             "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}");
        //  Only the space SentencePiece puts first may be left as content.
        assert_true (strspn (text, " ") == strlen (text));
        free (text);
        json_decref (calls);
        output_text_destroy (&output);
    }
    //  Prose with tools allowed is all content.
    n = s_ids ("The capital of Denmark is Copenhagen.", ids, 128);
    output_text_options_t options = {
        .tools = true, .format = TOOL_PARSER_LLAMA3_JSON, .id_seed = 7
    };
    output_text_t *output = output_text_new (s_vocab, &options);
    json_t *calls;
    char *text = s_run (output, ids, n, 1, &calls);
    assert_string_equal (text, " The capital of Denmark is Copenhagen.");
    assert_int_equal (json_array_size (calls), 0);
    free (text);
    json_decref (calls);
    output_text_destroy (&output);
}

//  include_stop: the text ends right after the stop string, whether it lies in one
//  token or spans two, and whichever the take boundaries.
static void
test_include_stop (void **state)
{
    (void) state;
    uint32_t ids [64];
    size_t n = s_ids ("The capital of France is Paris.", ids, 64);
    const char *one_token [] = { "Paris" };
    const char *two_tokens [] = { "nce i", "Paris" };      //  "Fra|nce" + " is"
    for (size_t every = 1; every <= 4; every++) {
        output_text_options_t options = { .stops = one_token, .n_stops = 1,
                                          .include_stop = true };
        output_text_t *output = output_text_new (s_vocab, &options);
        assert_non_null (output);
        json_t *calls;
        char *text = s_run (output, ids, n, every, &calls);
        assert_string_equal (text, " The capital of France is Paris");
        assert_true (output_text_stopped (output));
        free (text);
        json_decref (calls);
        output_text_destroy (&output);

        options.stops = two_tokens;
        options.n_stops = 2;
        output = output_text_new (s_vocab, &options);
        text = s_run (output, ids, n, every, &calls);
        assert_string_equal (text, " The capital of France i");
        assert_true (output_text_stopped (output));
        free (text);
        json_decref (calls);
        output_text_destroy (&output);
    }
}

//  The id of a special token written in text.
static uint32_t
s_special_id (const char *text)
{
    uint32_t ids [4];
    char err [256];
    int64_t n = vocab_tokenize_special (s_vocab, text, strlen (text), false, ids, 4, err,
                                        sizeof err);
    assert_int_equal (n, 1);
    return ids [0];
}

//  keep_special: control tokens (<|assistant|>, <|end|>) are written as their text;
//  without it they give nothing. A stop string can then match a special token's text.
static void
test_keep_special (void **state)
{
    (void) state;
    uint32_t assistant = s_special_id ("<|assistant|>");
    uint32_t end = s_special_id ("<|end|>");
    assert_true (vocab_is_control (s_vocab, assistant));
    assert_true (vocab_is_control (s_vocab, end));
    uint32_t ids [64];
    ids [0] = assistant;
    size_t n = 1 + s_ids ("Hi there", ids + 1, 60);
    ids [n++] = end;
    n += s_ids ("Bye", ids + n, 64 - n);

    json_t *calls;
    output_text_t *output = output_text_new (s_vocab, NULL);
    char *text = s_run (output, ids, n, 1, &calls);
    assert_string_equal (text, " Hi there Bye");
    free (text);
    json_decref (calls);
    output_text_destroy (&output);

    output_text_options_t options = { .keep_special = true };
    output = output_text_new (s_vocab, &options);
    text = s_run (output, ids, n, 2, &calls);
    assert_string_equal (text, "<|assistant|> Hi there<|end|> Bye");
    free (text);
    json_decref (calls);
    output_text_destroy (&output);

    //  A stop string on a special token's text: it stops only when the token is written.
    const char *stops [] = { "<|end|>" };
    options.stops = stops;
    options.n_stops = 1;
    output = output_text_new (s_vocab, &options);
    text = s_run (output, ids, n, 1, &calls);
    assert_string_equal (text, "<|assistant|> Hi there");
    assert_true (output_text_stopped (output));
    free (text);
    json_decref (calls);
    output_text_destroy (&output);

    options.keep_special = false;
    output = output_text_new (s_vocab, &options);
    text = s_run (output, ids, n, 1, &calls);
    assert_string_equal (text, " Hi there Bye");
    assert_false (output_text_stopped (output));
    free (text);
    json_decref (calls);
    output_text_destroy (&output);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_plain_text),
        cmocka_unit_test (test_stop_strings),
        cmocka_unit_test (test_tool_calls),
        cmocka_unit_test (test_include_stop),
        cmocka_unit_test (test_keep_special),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
