/*  test_vocab — the SPM tokenizer against llama.cpp's own outputs.

    - reference/greedy.json: every prompt tokenizes (with BOS) to llama.cpp's prompt_ids,
      and the output ids detokenize to its output_text.
    - models/vocab/ggml-vocab-*.gguf with .inp/.out: every SentencePiece ("llama") vocab
      that has test vectors must match every case exactly (llama.cpp's test-tokenizer-0
      tokenizes them without BOS).
    - Other models are refused by name; bad, empty and huge input tokenizes without harm;
      small GGUFs built here pin down ties, fallbacks and defaults.

    Test data comes from ZLLM_SHARED_DIR (set by meson); a test skips when it is absent.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "gguf.h"
#include "vocab.h"
#include "detok.h"

//  --- Helpers ---------------------------------------------------------------------------

//  Path of a file under the shared test data, or NULL (and the test skips) when the data
//  is not there.
static char *
s_shared_path (const char *relative)
{
    const char *dir = getenv ("ZLLM_SHARED_DIR");
    if (!dir)
        return NULL;
    size_t size = strlen (dir) + strlen (relative) + 2;
    char *path = malloc (size);
    assert_non_null (path);
    snprintf (path, size, "%s/%s", dir, relative);
    FILE *file = fopen (path, "rb");
    if (!file) {
        free (path);
        return NULL;
    }
    fclose (file);
    return path;
}

static char *
s_read_file (const char *path, size_t *len)
{
    FILE *file = fopen (path, "rb");
    assert_non_null (file);
    fseek (file, 0, SEEK_END);
    long size = ftell (file);
    fseek (file, 0, SEEK_SET);
    char *data = malloc ((size_t) size + 1);
    assert_non_null (data);
    assert_int_equal (fread (data, 1, (size_t) size, file), (size_t) size);
    data [size] = 0;
    fclose (file);
    *len = (size_t) size;
    return data;
}

//  Loads the vocabulary of a model under models/; NULL when the data is absent.
static vocab_t *
s_load_model_vocab (const char *relative)
{
    char *path = s_shared_path (relative);
    if (!path)
        return NULL;
    char err [256] = "";
    gguf_t *gguf = gguf_open (path, err, sizeof err);
    if (!gguf)
        fail_msg ("%s: %s", path, err);
    vocab_t *vocab = vocab_new (gguf, err, sizeof err);
    if (!vocab)
        fail_msg ("%s: %s", path, err);
    gguf_destroy (&gguf);           //  the vocab must not need it any more
    free (path);
    return vocab;
}

//  Tokenizes text, sizing the output with a first call; returns the ids (caller frees).
static uint32_t *
s_tokenize (const vocab_t *vocab, const char *text, size_t len, bool add_bos, size_t *count)
{
    char err [256] = "";
    int64_t needed = vocab_tokenize (vocab, text, len, add_bos, NULL, 0, err, sizeof err);
    if (needed < 0)
        fail_msg ("tokenize: %s", err);
    uint32_t *ids = malloc (((size_t) needed + 1) * sizeof (uint32_t));
    assert_non_null (ids);
    int64_t again = vocab_tokenize (vocab, text, len, add_bos, ids, (size_t) needed, err, sizeof err);
    assert_int_equal (again, needed);
    *count = (size_t) needed;
    return ids;
}

//  Concatenates the tokens' pieces (vocab_piece), raw bytes; returns its length.
static char *
s_pieces (const vocab_t *vocab, const uint32_t *ids, size_t count, size_t *len)
{
    size_t cap = 64, used = 0;
    char *text = malloc (cap);
    assert_non_null (text);
    for (size_t i = 0; i < count; i++) {
        int piece_len = vocab_piece (vocab, ids [i], NULL, 0);
        assert_true (piece_len >= 0);
        while (used + (size_t) piece_len + 1 > cap) {
            cap *= 2;
            text = realloc (text, cap);
            assert_non_null (text);
        }
        assert_int_equal (vocab_piece (vocab, ids [i], text + used, (size_t) piece_len), piece_len);
        used += (size_t) piece_len;
    }
    text [used] = 0;
    *len = used;
    return text;
}

//  Detokenizes through a detok_t, as the server streams text; caller frees.
static char *
s_detokenize (const vocab_t *vocab, const uint32_t *ids, size_t count)
{
    detok_t *detok = detok_new (vocab);
    assert_non_null (detok);
    size_t cap = 64, used = 0;
    char *text = calloc (1, cap);
    assert_non_null (text);
    for (size_t i = 0; i <= count; i++) {
        const char *part = i < count? detok_add (detok, ids [i]): detok_flush (detok);
        size_t part_len = strlen (part);
        while (used + part_len + 1 > cap) {
            cap *= 2;
            text = realloc (text, cap);
            assert_non_null (text);
        }
        memcpy (text + used, part, part_len + 1);
        used += part_len;
    }
    detok_destroy (&detok);
    assert_null (detok);
    return text;
}

//  The text with a leading space, as SentencePiece gives it back.
static char *
s_with_space (const char *text, size_t len)
{
    char *spaced = malloc (len + 2);
    assert_non_null (spaced);
    spaced [0] = ' ';
    memcpy (spaced + 1, text, len);
    spaced [len + 1] = 0;
    return spaced;
}

//  Tokenizes text without BOS and checks that the pieces give back " " + text.
static void
s_assert_round_trip (const vocab_t *vocab, const char *text, size_t len)
{
    size_t count, back_len;
    uint32_t *ids = s_tokenize (vocab, text, len, false, &count);
    char *back = s_pieces (vocab, ids, count, &back_len);
    char *expected = s_with_space (text, len);
    assert_int_equal (back_len, len + 1);
    assert_memory_equal (back, expected, len + 1);
    free (expected);
    free (back);
    free (ids);
}

//  --- Reference: greedy.json --------------------------------------------------------------

static void
test_greedy_reference (void **state)
{
    (void) state;
    char *path = s_shared_path ("reference/greedy.json");
    if (!path)
        skip ();
    json_error_t error;
    json_t *cases = json_load_file (path, 0, &error);
    if (!cases)
        fail_msg ("%s: %s", path, error.text);
    assert_true (json_is_array (cases));
    assert_true (json_array_size (cases) > 0);

    size_t index;
    json_t *item;
    json_array_foreach (cases, index, item) {
        const char *model = json_string_value (json_object_get (item, "model"));
        const char *prompt = json_string_value (json_object_get (item, "prompt"));
        json_t *prompt_ids = json_object_get (item, "prompt_ids");
        json_t *output_ids = json_object_get (item, "output_ids");
        const char *output_text = json_string_value (json_object_get (item, "output_text"));
        assert_non_null (model);
        assert_non_null (prompt);
        assert_non_null (output_text);

        char relative [256];
        snprintf (relative, sizeof relative, "models/%s", model);
        vocab_t *vocab = s_load_model_vocab (relative);
        assert_non_null (vocab);

        size_t count;
        uint32_t *ids = s_tokenize (vocab, prompt, strlen (prompt), vocab_add_bos (vocab), &count);
        if (count != json_array_size (prompt_ids))
            fail_msg ("%s '%s': %zu tokens, llama.cpp has %zu", model, prompt, count,
                      json_array_size (prompt_ids));
        for (size_t i = 0; i < count; i++)
            if (ids [i] != (uint32_t) json_integer_value (json_array_get (prompt_ids, i)))
                fail_msg ("%s '%s': token %zu is %u, llama.cpp has %lld", model, prompt, i,
                          ids [i], (long long) json_integer_value (json_array_get (prompt_ids, i)));
        free (ids);

        size_t output_count = json_array_size (output_ids);
        uint32_t *outputs = malloc ((output_count + 1) * sizeof (uint32_t));
        assert_non_null (outputs);
        for (size_t i = 0; i < output_count; i++)
            outputs [i] = (uint32_t) json_integer_value (json_array_get (output_ids, i));
        char *text = s_detokenize (vocab, outputs, output_count);
        if (strcmp (text, output_text) != 0)
            fail_msg ("%s '%s': detokenized\n  '%s'\nllama.cpp:\n  '%s'", model, prompt,
                      text, output_text);
        free (text);
        free (outputs);
        vocab_destroy (&vocab);
        assert_null (vocab);
    }
    json_decref (cases);
    free (path);
}

//  --- Reference: llama.cpp's vocab test vectors ---------------------------------------------

#define VOCAB_TEST_SEPARATOR "\n__ggml_vocab_test__\n"

//  Checks every case of models/vocab/NAME.inp against NAME.out. The .inp holds each
//  input followed by a separator line; the .out has one line of ids per input.
static void
s_check_vocab_vectors (const char *name)
{
    char relative [256];
    snprintf (relative, sizeof relative, "models/vocab/%s", name);
    vocab_t *vocab = s_load_model_vocab (relative);
    if (!vocab)
        skip ();
    snprintf (relative, sizeof relative, "models/vocab/%s.inp", name);
    char *inp_path = s_shared_path (relative);
    snprintf (relative, sizeof relative, "models/vocab/%s.out", name);
    char *out_path = s_shared_path (relative);
    assert_non_null (inp_path);
    assert_non_null (out_path);
    size_t inp_len, out_len;
    char *inp = s_read_file (inp_path, &inp_len);
    char *out = s_read_file (out_path, &out_len);

    size_t separator_len = strlen (VOCAB_TEST_SEPARATOR);
    char *input = inp;
    char *inp_end = inp + inp_len;
    char *line = out;
    size_t cases = 0;
    while (input < inp_end) {
        char *separator = memmem (input, (size_t) (inp_end - input),
                                  VOCAB_TEST_SEPARATOR, separator_len);
        assert_non_null (separator);
        size_t input_len = (size_t) (separator - input);

        char *line_end = strchr (line, '\n');
        assert_non_null (line_end);
        *line_end = 0;
        uint32_t expected [1024];
        size_t expected_count = 0;
        char *cursor = line;
        while (true) {
            char *after;
            unsigned long id = strtoul (cursor, &after, 10);
            if (after == cursor)
                break;
            assert_true (expected_count < 1024);
            expected [expected_count++] = (uint32_t) id;
            cursor = after;
        }

        size_t count;
        uint32_t *ids = s_tokenize (vocab, input, input_len, false, &count);
        bool same = count == expected_count;
        for (size_t i = 0; same && i < count; i++)
            same = ids [i] == expected [i];
        if (!same) {
            fprintf (stderr, "%s case %zu '%.*s'\n  ours:", name, cases, (int) input_len, input);
            for (size_t i = 0; i < count; i++)
                fprintf (stderr, " %u", ids [i]);
            fprintf (stderr, "\n  llama.cpp:%s\n", line);
            fail_msg ("%s: case %zu differs from llama.cpp", name, cases);
        }
        free (ids);
        cases++;
        input = separator + separator_len;
        line = line_end + 1;
    }
    assert_true (line >= out + out_len);        //  as many id lines as inputs
    print_message ("# %s: %zu cases match llama.cpp\n", name, cases);
    assert_true (cases >= 40);
    free (inp);
    free (out);
    free (inp_path);
    free (out_path);
    vocab_destroy (&vocab);
}

static void
test_vectors_llama_spm (void **state)
{
    (void) state;
    s_check_vocab_vectors ("ggml-vocab-llama-spm.gguf");
}

static void
test_vectors_phi_3 (void **state)
{
    (void) state;
    s_check_vocab_vectors ("ggml-vocab-phi-3.gguf");
}

//  Baichuan is SentencePiece too, without test vectors: it loads, tokenizes and gives
//  the text back.
static void
test_baichuan_round_trip (void **state)
{
    (void) state;
    vocab_t *vocab = s_load_model_vocab ("models/vocab/ggml-vocab-baichuan.gguf");
    if (!vocab)
        skip ();
    assert_int_equal (vocab_size (vocab), 64000);
    assert_int_equal (vocab_bos (vocab), 1);
    assert_int_equal (vocab_eos (vocab), 2);
    const char *texts [] = { "Hello world", "百川大模型 tokenizes Chinese 😀", "a\tb\nc" };
    for (size_t i = 0; i < sizeof texts / sizeof texts [0]; i++)
        s_assert_round_trip (vocab, texts [i], strlen (texts [i]));
    vocab_destroy (&vocab);
}

//  --- Refusals -----------------------------------------------------------------------------

static void
s_assert_refused (const char *relative, const char *model_name)
{
    char *path = s_shared_path (relative);
    if (!path)
        skip ();
    char err [256] = "";
    gguf_t *gguf = gguf_open (path, err, sizeof err);
    if (!gguf)
        fail_msg ("%s: %s", path, err);
    vocab_t *vocab = vocab_new (gguf, err, sizeof err);
    assert_null (vocab);
    if (!strstr (err, model_name))
        fail_msg ("message '%s' does not name the model '%s'", err, model_name);
    gguf_destroy (&gguf);
    free (path);
}

static void
test_refuses_other_tokenizers (void **state)
{
    (void) state;
    s_assert_refused ("models/vocab/ggml-vocab-gpt-2.gguf", "\"gpt2\"");
    s_assert_refused ("models/vocab/ggml-vocab-bert-bge.gguf", "\"bert\"");
    char err [64] = "";
    assert_null (vocab_new (NULL, err, sizeof err));
    assert_true (strlen (err) > 0);
}

//  --- llama-2 vocabulary: pieces, round trips, robustness ---------------------------------

static vocab_t *s_llama2;           //  llama-2-tiny-random's 32k vocab, for the tests below

static int
s_setup_llama2 (void **state)
{
    (void) state;
    s_llama2 = s_load_model_vocab ("models/llama-2-tiny-random.gguf");
    return 0;
}

static int
s_teardown_llama2 (void **state)
{
    (void) state;
    vocab_destroy (&s_llama2);
    return 0;
}

static void
test_llama2_basics (void **state)
{
    (void) state;
    if (!s_llama2)
        skip ();
    vocab_t *vocab = s_llama2;
    assert_int_equal (vocab_size (vocab), 32000);
    assert_int_equal (vocab_bos (vocab), 1);
    assert_int_equal (vocab_eos (vocab), 2);
    assert_true (vocab_add_bos (vocab));        //  no key: true, as llama.cpp does for SPM

    assert_string_equal (vocab_token_text (vocab, 1), "<s>");
    assert_string_equal (vocab_token_text (vocab, 13), "<0x0A>");
    assert_string_equal (vocab_token_text (vocab, 15043), "▁Hello");
    assert_null (vocab_token_text (vocab, 32000));

    char buf [16];
    assert_int_equal (vocab_piece (vocab, 1, buf, sizeof buf), 0);         //  control
    assert_int_equal (vocab_piece (vocab, 2, buf, sizeof buf), 0);
    assert_int_equal (vocab_piece (vocab, 0, buf, sizeof buf), 0);         //  <unk>
    assert_int_equal (vocab_piece (vocab, 13, buf, sizeof buf), 1);        //  byte
    assert_int_equal (buf [0], '\n');
    assert_int_equal (vocab_piece (vocab, 3 + 0xF0, buf, sizeof buf), 1);
    assert_int_equal ((unsigned char) buf [0], 0xF0);
    assert_int_equal (vocab_piece (vocab, 15043, buf, sizeof buf), 6);     //  "▁Hello"
    assert_memory_equal (buf, " Hello", 6);
    assert_int_equal (vocab_piece (vocab, 29871, buf, sizeof buf), 1);     //  "▁"
    assert_int_equal (buf [0], ' ');
    assert_int_equal (vocab_piece (vocab, 32000, buf, sizeof buf), -1);
    assert_int_equal (vocab_piece (vocab, UINT32_MAX, buf, sizeof buf), -1);

    //  A small buffer gets what fits; the return value says how much is needed.
    memset (buf, '#', sizeof buf);
    assert_int_equal (vocab_piece (vocab, 15043, buf, 3), 6);
    assert_memory_equal (buf, " He#", 4);
    assert_int_equal (vocab_piece (vocab, 15043, NULL, 0), 6);
}

static void
test_llama2_tokenize_basics (void **state)
{
    (void) state;
    if (!s_llama2)
        skip ();
    vocab_t *vocab = s_llama2;
    char err [256];

    //  Empty text: nothing, or only BOS.
    uint32_t ids [64];
    assert_int_equal (vocab_tokenize (vocab, "", 0, false, ids, 64, err, sizeof err), 0);
    assert_int_equal (vocab_tokenize (vocab, NULL, 0, false, NULL, 0, err, sizeof err), 0);
    assert_int_equal (vocab_tokenize (vocab, "", 0, true, ids, 64, err, sizeof err), 1);
    assert_int_equal (ids [0], 1);

    //  "Hello world" with BOS: as in greedy.json.
    assert_int_equal (vocab_tokenize (vocab, "Hello world", 11, true, ids, 64, err, sizeof err), 3);
    assert_int_equal (ids [0], 1);
    assert_int_equal (ids [1], 15043);
    assert_int_equal (ids [2], 3186);

    //  Too small a buffer: writes what fits, returns what is needed.
    uint32_t small [2] = { 7, 7 };
    assert_int_equal (vocab_tokenize (vocab, "Hello world", 11, true, small, 1, err, sizeof err), 3);
    assert_int_equal (small [0], 1);
    assert_int_equal (small [1], 7);

    //  A llama is not in the vocabulary: its four UTF-8 bytes come out as byte tokens.
    size_t count;
    uint32_t *llama = s_tokenize (vocab, "🦙", strlen ("🦙"), false, &count);
    assert_int_equal (count, 5);
    uint32_t expected [] = { 29871, 3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99 };
    assert_memory_equal (llama, expected, sizeof expected);
    free (llama);

    //  NUL bytes inside the text are text: <0x00>.
    uint32_t *nul = s_tokenize (vocab, "a\0b", 3, false, &count);
    bool has_nul_token = false;
    for (size_t i = 0; i < count; i++)
        has_nul_token = has_nul_token || nul [i] == 3;
    assert_true (has_nul_token);
    free (nul);
    s_assert_round_trip (vocab, "a\0b", 3);

    //  Missing arguments are errors, not crashes.
    assert_int_equal (vocab_tokenize (vocab, NULL, 5, false, ids, 64, err, sizeof err), -1);
    assert_int_equal (vocab_tokenize (vocab, "abc", 3, false, NULL, 5, err, sizeof err), -1);
}

static void
test_llama2_round_trips (void **state)
{
    (void) state;
    if (!s_llama2)
        skip ();
    const char *texts [] = {
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines\r\n",
        "Ünïcødé and emoji 😀 test",
        "日本語のテキスト、中文文本、한국어 텍스트",
        "🦙🦙 llamas 🦙🏳️‍🌈 flags",
        "mixed: ½ µ ∑ ∫ √ ∞ ≠ ≤ € £ ¥",
        "x",
        " ",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts [0]; i++)
        s_assert_round_trip (s_llama2, texts [i], strlen (texts [i]));
}

//  A small deterministic generator for garbage.
static uint32_t
s_next_random (uint64_t *seed)
{
    *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t) (*seed >> 33);
}

static void
test_llama2_garbage (void **state)
{
    (void) state;
    if (!s_llama2)
        skip ();
    uint64_t seed = 42;
    size_t len = 64 * 1024;
    char *garbage = malloc (len);
    assert_non_null (garbage);
    for (size_t i = 0; i < len; i++)
        garbage [i] = (char) s_next_random (&seed);
    //  No "▁" may appear by chance, or it would come back as a space.
    assert_null (memmem (garbage, len, "\xe2\x96\x81", 3));
    s_assert_round_trip (s_llama2, garbage, len);

    //  Invalid UTF-8 of every kind, and every single byte value.
    const char *invalid [] = { "\xff", "\x80", "\xc3(", "\xe2\x82", "\xed\xa0\x80",
                               "\xf0\x9f\xa6", "\xf4\x90\x80\x80", "\xc0\xaf", "a\xffz" };
    for (size_t i = 0; i < sizeof invalid / sizeof invalid [0]; i++)
        s_assert_round_trip (s_llama2, invalid [i], strlen (invalid [i]));
    for (int byte = 0; byte < 256; byte++) {
        char one = (char) byte;
        s_assert_round_trip (s_llama2, &one, 1);
    }
    free (garbage);
}

static void
test_llama2_huge_text (void **state)
{
    (void) state;
    if (!s_llama2)
        skip ();
    const char *paragraph =
        "Once upon a time, in a land far away, there lived a llama 🦙 named Ünïcødé. "
        "It spoke 日本語 and English, and it liked   spaces,\ttabs and newlines.\n";
    size_t paragraph_len = strlen (paragraph);
    size_t len = 1024 * 1024;
    char *text = malloc (len);
    assert_non_null (text);
    for (size_t i = 0; i < len; i++)
        text [i] = paragraph [i % paragraph_len];

    clock_t start = clock ();
    s_assert_round_trip (s_llama2, text, len);
    double seconds = (double) (clock () - start) / CLOCKS_PER_SEC;
    print_message ("# 1 MiB of text tokenized (twice) and pieced back in %.2f s\n", seconds);

    //  The same character a million times, and a million spaces.
    memset (text, 'a', len);
    s_assert_round_trip (s_llama2, text, len);
    memset (text, ' ', len);
    s_assert_round_trip (s_llama2, text, len);
    free (text);
}

//  --- Phi-3: a user-defined token in the text is cut out ---------------------------------

static void
test_phi3_user_defined_token (void **state)
{
    (void) state;
    vocab_t *vocab = s_load_model_vocab ("models/vocab/ggml-vocab-phi-3.gguf");
    if (!vocab)
        skip ();
    assert_int_equal (vocab_eos (vocab), 32000);
    size_t count;
    //  "</s>" (id 2) is user-defined in this vocab: llama.cpp cuts it out even when it
    //  does not parse special tokens, and the text after it gets SentencePiece's space.
    uint32_t *ids = s_tokenize (vocab, "a</s>b", 6, false, &count);
    assert_int_equal (count, 3);
    assert_string_equal (vocab_token_text (vocab, ids [0]), "▁a");
    assert_int_equal (ids [1], 2);
    assert_string_equal (vocab_token_text (vocab, ids [2]), "▁b");
    free (ids);
    //  The model is named "Phi3": llama.cpp drops the whitespace after its special
    //  tokens (RSTRIP).
    ids = s_tokenize (vocab, "hi </s>  \n world", 16, false, &count);
    assert_int_equal (count, 4);
    assert_string_equal (vocab_token_text (vocab, ids [0]), "▁hi");
    assert_string_equal (vocab_token_text (vocab, ids [1]), "▁");
    assert_int_equal (ids [2], 2);
    assert_string_equal (vocab_token_text (vocab, ids [3]), "▁world");
    free (ids);
    //  Control tokens written in text are plain text here.
    ids = s_tokenize (vocab, "<|end|>", 7, false, &count);
    for (size_t i = 0; i < count; i++)
        assert_int_not_equal (ids [i], 32007);
    free (ids);
    //  A user-defined token's piece is its text.
    char buf [8];
    assert_int_equal (vocab_piece (vocab, 2, buf, sizeof buf), 4);
    assert_memory_equal (buf, "</s>", 4);
    vocab_destroy (&vocab);
}

//  --- Small GGUFs built here ---------------------------------------------------------------

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
    uint64_t key_count;
} builder_t;

static void
s_put (builder_t *builder, const void *bytes, size_t len)
{
    while (builder->len + len > builder->cap) {
        builder->cap = builder->cap? builder->cap * 2: 4096;
        builder->data = realloc (builder->data, builder->cap);
        assert_non_null (builder->data);
    }
    memcpy (builder->data + builder->len, bytes, len);
    builder->len += len;
}

static void
s_put_u32 (builder_t *builder, uint32_t value)
{
    s_put (builder, &value, 4);
}

static void
s_put_u64 (builder_t *builder, uint64_t value)
{
    s_put (builder, &value, 8);
}

static void
s_put_string (builder_t *builder, const char *text)
{
    s_put_u64 (builder, strlen (text));
    s_put (builder, text, strlen (text));
}

static void
s_builder_start (builder_t *builder)
{
    memset (builder, 0, sizeof *builder);
    s_put (builder, "GGUF", 4);
    s_put_u32 (builder, 3);
    s_put_u64 (builder, 0);         //  tensors
    s_put_u64 (builder, 0);         //  keys: set by s_builder_finish
}

static void
s_builder_finish (builder_t *builder)
{
    memcpy (builder->data + 16, &builder->key_count, 8);
}

static void
s_key (builder_t *builder, const char *key, gguf_type_t type)
{
    s_put_string (builder, key);
    s_put_u32 (builder, type);
    builder->key_count++;
}

static void
s_key_string (builder_t *builder, const char *key, const char *value)
{
    s_key (builder, key, GGUF_TYPE_STRING);
    s_put_string (builder, value);
}

static void
s_key_u32 (builder_t *builder, const char *key, uint32_t value)
{
    s_key (builder, key, GGUF_TYPE_UINT32);
    s_put_u32 (builder, value);
}

static void
s_key_bool (builder_t *builder, const char *key, bool value)
{
    s_key (builder, key, GGUF_TYPE_BOOL);
    uint8_t byte = value;
    s_put (builder, &byte, 1);
}

//  A toy SentencePiece vocab: <unk>, <s>, </s>, the given pieces, then byte tokens
//  (when with_bytes). The scores and types follow the pieces.
typedef struct {
    const char *text;
    float score;
    int32_t type;
} toy_token_t;

static gguf_t *
s_toy_gguf (builder_t *builder, const toy_token_t *tokens, size_t count, bool with_bytes,
            bool with_scores_and_types, bool space_prefix)
{
    s_builder_start (builder);
    s_key_string (builder, "tokenizer.ggml.model", "llama");
    size_t total = 3 + count + (with_bytes? 256: 0);
    char byte_names [256][8];
    for (int byte = 0; byte < 256; byte++)
        snprintf (byte_names [byte], sizeof byte_names [byte], "<0x%02X>", byte);

    s_key (builder, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
    s_put_u32 (builder, GGUF_TYPE_STRING);
    s_put_u64 (builder, total);
    s_put_string (builder, "<unk>");
    s_put_string (builder, "<s>");
    s_put_string (builder, "</s>");
    for (size_t i = 0; i < count; i++)
        s_put_string (builder, tokens [i].text);
    for (int byte = 0; with_bytes && byte < 256; byte++)
        s_put_string (builder, byte_names [byte]);

    if (with_scores_and_types) {
        s_key (builder, "tokenizer.ggml.scores", GGUF_TYPE_ARRAY);
        s_put_u32 (builder, GGUF_TYPE_FLOAT32);
        s_put_u64 (builder, total);
        float zero = 0;
        for (int i = 0; i < 3; i++)
            s_put (builder, &zero, 4);
        for (size_t i = 0; i < count; i++)
            s_put (builder, &tokens [i].score, 4);
        for (int byte = 0; with_bytes && byte < 256; byte++)
            s_put (builder, &zero, 4);

        s_key (builder, "tokenizer.ggml.token_type", GGUF_TYPE_ARRAY);
        s_put_u32 (builder, GGUF_TYPE_INT32);
        s_put_u64 (builder, total);
        s_put_u32 (builder, 2);
        s_put_u32 (builder, 3);
        s_put_u32 (builder, 3);
        for (size_t i = 0; i < count; i++)
            s_put_u32 (builder, (uint32_t) tokens [i].type);
        for (int byte = 0; with_bytes && byte < 256; byte++)
            s_put_u32 (builder, 6);
        s_key_u32 (builder, "tokenizer.ggml.bos_token_id", 1);
        s_key_u32 (builder, "tokenizer.ggml.eos_token_id", 2);
        s_key_u32 (builder, "tokenizer.ggml.unknown_token_id", 0);
    }
    s_key_bool (builder, "tokenizer.ggml.add_space_prefix", space_prefix);
    s_builder_finish (builder);
    char err [256] = "";
    gguf_t *gguf = gguf_open_memory (builder->data, builder->len, err, sizeof err);
    if (!gguf)
        fail_msg ("toy GGUF: %s", err);
    return gguf;
}

static vocab_t *
s_toy_vocab (const toy_token_t *tokens, size_t count, bool with_bytes,
             bool with_scores_and_types, bool space_prefix)
{
    builder_t builder;
    gguf_t *gguf = s_toy_gguf (&builder, tokens, count, with_bytes, with_scores_and_types,
                               space_prefix);
    char err [256] = "";
    vocab_t *vocab = vocab_new (gguf, err, sizeof err);
    if (!vocab)
        fail_msg ("toy vocab: %s", err);
    gguf_destroy (&gguf);
    free (builder.data);
    return vocab;
}

//  Tokenizes text and compares the tokens' texts, joined by '|'.
static void
s_assert_tokens (const vocab_t *vocab, const char *text, const char *expected)
{
    size_t count;
    uint32_t *ids = s_tokenize (vocab, text, strlen (text), false, &count);
    char joined [512] = "";
    for (size_t i = 0; i < count; i++) {
        if (i)
            strcat (joined, "|");
        strcat (joined, vocab_token_text (vocab, ids [i]));
    }
    if (strcmp (joined, expected) != 0)
        fail_msg ("'%s' tokenized as '%s', expected '%s'", text, joined, expected);
    free (ids);
}

static void
test_toy_merge_order (void **state)
{
    (void) state;
    //  Ids 3.. in this order.
    toy_token_t tokens [] = {
        { "a", -10, 1 }, { "b", -10, 1 }, { "c", -10, 1 }, { "d", -10, 1 },
        { "▁", -10, 1 },
        { "ab", -1, 1 }, { "bc", -1, 1 },               //  a tie: the leftmost pair wins
        { "cd", -0.5f, 1 },                             //  beats "bc" on score
        { "abcd", -3, 1 }, { "▁ab", -2, 1 },
        { "<tag>", 0, 4 },                              //  user-defined
        { "ε", -10, 1 },
    };
    size_t count = sizeof tokens / sizeof tokens [0];
    vocab_t *vocab = s_toy_vocab (tokens, count, true, true, false);
    assert_true (vocab_add_bos (vocab));                //  no key: true

    s_assert_tokens (vocab, "abc", "ab|c");             //  tie: leftmost
    s_assert_tokens (vocab, "bcd", "b|cd");             //  score
    s_assert_tokens (vocab, "abcd", "abcd");            //  "ab" + "cd" -> "abcd"
    s_assert_tokens (vocab, "x", "<0x78>");             //  byte fallback
    s_assert_tokens (vocab, "aε€", "a|ε|<0xE2>|<0x82>|<0xAC>");
    s_assert_tokens (vocab, " ab", "▁ab");              //  no space prefix: the text's own
    s_assert_tokens (vocab, "a<tag>b", "a|<tag>|b");    //  no prefix after it either
    s_assert_tokens (vocab, "<tag><tag>", "<tag>|<tag>");
    s_assert_tokens (vocab, "<ta<tag>g>", "<0x3C>|<0x74>|a|<tag>|<0x67>|<0x3E>");
    vocab_destroy (&vocab);

    vocab = s_toy_vocab (tokens, count, true, true, true);
    s_assert_tokens (vocab, "ab", "▁ab");
    s_assert_tokens (vocab, "a<tag>b", "▁|a|<tag>|▁|b");
    s_assert_tokens (vocab, "<tag>", "<tag>");          //  nothing after it: no "▁"
    vocab_destroy (&vocab);
}

static void
test_toy_defaults_and_fallbacks (void **state)
{
    (void) state;
    //  No scores, no types, no special ids, no byte tokens.
    toy_token_t tokens [] = { { "a", 0, 1 }, { "b", 0, 1 }, { "ab", 0, 1 } };
    vocab_t *vocab = s_toy_vocab (tokens, 3, false, false, false);
    assert_int_equal (vocab_bos (vocab), UINT32_MAX);
    assert_int_equal (vocab_eos (vocab), UINT32_MAX);
    char err [256] = "";
    uint32_t ids [8];
    //  BOS asked for but unnamed: an error with a message.
    assert_int_equal (vocab_tokenize (vocab, "ab", 2, true, ids, 8, err, sizeof err), -1);
    assert_true (strstr (err, "BOS") != NULL);
    assert_int_equal (vocab_tokenize (vocab, "ab", 2, false, ids, 8, err, sizeof err), 1);
    assert_int_equal (ids [0], 5);
    //  No byte token and no unknown id: an error, not a crash.
    assert_int_equal (vocab_tokenize (vocab, "z", 1, false, ids, 8, err, sizeof err), -1);
    assert_true (strlen (err) > 0);
    //  Without types every token is normal: "<s>" is text, its piece is its text.
    char buf [8];
    assert_int_equal (vocab_piece (vocab, 1, buf, sizeof buf), 3);
    vocab_destroy (&vocab);

    //  With types and <unk> but no byte tokens: unknown characters become <unk>.
    vocab = s_toy_vocab (tokens, 3, false, true, false);
    s_assert_tokens (vocab, "azb", "a|<unk>|b");
    vocab_destroy (&vocab);
}

static void
test_toy_bad_metadata (void **state)
{
    (void) state;
    char err [256];
    builder_t builder;

    //  No tokenizer at all.
    s_builder_start (&builder);
    s_key_string (&builder, "general.name", "nothing");
    s_builder_finish (&builder);
    gguf_t *gguf = gguf_open_memory (builder.data, builder.len, err, sizeof err);
    assert_non_null (gguf);
    assert_null (vocab_new (gguf, err, sizeof err));
    assert_true (strstr (err, "tokenizer.ggml.model") != NULL);
    gguf_destroy (&gguf);
    free (builder.data);

    //  Tokens that are not strings.
    s_builder_start (&builder);
    s_key_string (&builder, "tokenizer.ggml.model", "llama");
    s_key_u32 (&builder, "tokenizer.ggml.tokens", 5);
    s_builder_finish (&builder);
    gguf = gguf_open_memory (builder.data, builder.len, err, sizeof err);
    assert_non_null (gguf);
    assert_null (vocab_new (gguf, err, sizeof err));
    assert_true (strstr (err, "tokenizer.ggml.tokens") != NULL);
    gguf_destroy (&gguf);
    free (builder.data);

    //  Scores of the wrong length.
    s_builder_start (&builder);
    s_key_string (&builder, "tokenizer.ggml.model", "llama");
    s_key (&builder, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
    s_put_u32 (&builder, GGUF_TYPE_STRING);
    s_put_u64 (&builder, 2);
    s_put_string (&builder, "a");
    s_put_string (&builder, "b");
    s_key (&builder, "tokenizer.ggml.scores", GGUF_TYPE_ARRAY);
    s_put_u32 (&builder, GGUF_TYPE_FLOAT32);
    s_put_u64 (&builder, 1);
    float zero = 0;
    s_put (&builder, &zero, 4);
    s_builder_finish (&builder);
    gguf = gguf_open_memory (builder.data, builder.len, err, sizeof err);
    assert_non_null (gguf);
    assert_null (vocab_new (gguf, err, sizeof err));
    assert_true (strstr (err, "tokenizer.ggml.scores") != NULL);
    gguf_destroy (&gguf);
    free (builder.data);

    //  Another model name, spelled out in the message.
    s_builder_start (&builder);
    s_key_string (&builder, "tokenizer.ggml.model", "t5");
    s_builder_finish (&builder);
    gguf = gguf_open_memory (builder.data, builder.len, err, sizeof err);
    assert_non_null (gguf);
    assert_null (vocab_new (gguf, err, sizeof err));
    assert_true (strstr (err, "\"t5\"") != NULL);
    gguf_destroy (&gguf);
    free (builder.data);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_greedy_reference),
        cmocka_unit_test (test_vectors_llama_spm),
        cmocka_unit_test (test_vectors_phi_3),
        cmocka_unit_test (test_baichuan_round_trip),
        cmocka_unit_test (test_refuses_other_tokenizers),
        cmocka_unit_test (test_llama2_basics),
        cmocka_unit_test (test_llama2_tokenize_basics),
        cmocka_unit_test (test_llama2_round_trips),
        cmocka_unit_test (test_llama2_garbage),
        cmocka_unit_test (test_llama2_huge_text),
        cmocka_unit_test (test_phi3_user_defined_token),
        cmocka_unit_test (test_toy_merge_order),
        cmocka_unit_test (test_toy_defaults_and_fallbacks),
        cmocka_unit_test (test_toy_bad_metadata),
    };
    return cmocka_run_group_tests (tests, s_setup_llama2, s_teardown_llama2);
}
