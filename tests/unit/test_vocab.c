/*  test_vocab — the SPM and byte-level BPE tokenizers against llama.cpp's own outputs.

    - models/vocab/ggml-vocab-*.gguf with .inp/.out: every vocabulary in the shared data
      that has test vectors must match every case exactly (llama.cpp's test-tokenizer-0
      tokenizes them without BOS, special tokens not parsed). The test walks the folder;
      a vocabulary whose tokenizer is not supported here (WordPiece) must be refused by
      name. A failing case prints the file, the case number and its input.
    - reference/greedy.json: every prompt tokenizes (with BOS) to llama.cpp's prompt_ids,
      and the output ids detokenize to its output_text.
    - reference/toy-chat.json: every rendered chat prompt, special tokens parsed and BOS
      added, tokenizes to llama.cpp's prompt_ids.
    - End of generation, control and user-defined tokens, chat markers in BPE text (a
      Llama-3-style vocabulary built here), pieces, round trips, and random id sequences
      detokenized one by one against all at once, over every vocabulary.
    - Bad, empty and huge input tokenizes without harm and without quadratic time; small
      GGUFs built here pin down ties, fallbacks and defaults.

    Test data comes from ZLLM_SHARED_DIR (set by meson); a test skips when it is absent.
*/
#include <dirent.h>
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

//  Loads models/vocab/NAME; NULL with the message in err when vocab_new refuses it.
static vocab_t *
s_try_load_vocab (const char *path, char *err, size_t err_size)
{
    gguf_t *gguf = gguf_open (path, err, err_size);
    if (!gguf)
        fail_msg ("%s: %s", path, err);
    vocab_t *vocab = vocab_new (gguf, err, err_size);
    gguf_destroy (&gguf);
    return vocab;
}

//  Checks every case of NAME.inp against NAME.out (NAME a .gguf under models/vocab).
//  The .inp holds each input followed by a separator line; the .out has one line of ids
//  per input. Prints each case that differs; returns how many did, and the number of
//  cases in *cases.
static size_t
s_check_vocab_vectors (const vocab_t *vocab, const char *name, size_t *cases)
{
    char relative [512];
    snprintf (relative, sizeof relative, "models/vocab/%s.inp", name);
    char *inp_path = s_shared_path (relative);
    snprintf (relative, sizeof relative, "models/vocab/%s.out", name);
    char *out_path = s_shared_path (relative);
    assert_non_null (inp_path);
    if (!out_path)
        fail_msg ("%s.inp has no .out beside it", name);
    size_t inp_len, out_len;
    char *inp = s_read_file (inp_path, &inp_len);
    char *out = s_read_file (out_path, &out_len);

    size_t separator_len = strlen (VOCAB_TEST_SEPARATOR);
    char *input = inp;
    char *inp_end = inp + inp_len;
    char *line = out;
    size_t failed = 0;
    *cases = 0;
    while (input < inp_end) {
        char *separator = memmem (input, (size_t) (inp_end - input),
                                  VOCAB_TEST_SEPARATOR, separator_len);
        assert_non_null (separator);
        size_t input_len = (size_t) (separator - input);

        char *line_end = strchr (line, '\n');
        if (!line_end)
            fail_msg ("%s.out has fewer lines than %s.inp has cases", name, name);
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
            fprintf (stderr, "%s case %zu '%.*s'\n  ours:", name, *cases, (int) input_len, input);
            for (size_t i = 0; i < count; i++)
                fprintf (stderr, " %u", ids [i]);
            fprintf (stderr, "\n  llama.cpp:%s\n", line);
            failed++;
        }
        free (ids);
        (*cases)++;
        input = separator + separator_len;
        line = line_end + 1;
    }
    if (line < out + out_len)
        fail_msg ("%s.out has more lines than %s.inp has cases", name, name);
    free (inp);
    free (out);
    free (inp_path);
    free (out_path);
    return failed;
}

static int
s_compare_names (const void *a, const void *b)
{
    return strcmp (*(char *const *) a, *(char *const *) b);
}

//  Every NAME.gguf.inp in models/vocab whose NAME.gguf is there: all its cases match,
//  or, for a tokenizer that is not supported (WordPiece), the GGUF is refused by name.
static void
test_all_vocab_vectors (void **state)
{
    (void) state;
    char *dir_path = s_shared_path ("models/vocab");
    if (!dir_path)
        skip ();
    DIR *dir = opendir (dir_path);
    assert_non_null (dir);
    char *names [256];
    size_t name_count = 0;
    struct dirent *entry;
    while ((entry = readdir (dir)) != NULL) {
        size_t len = strlen (entry->d_name);
        if (len > 9 && strcmp (entry->d_name + len - 9, ".gguf.inp") == 0 && name_count < 256) {
            names [name_count] = strdup (entry->d_name);
            assert_non_null (names [name_count]);
            names [name_count][len - 4] = 0;    //  NAME.gguf
            name_count++;
        }
    }
    closedir (dir);
    qsort (names, name_count, sizeof (char *), s_compare_names);

    size_t vocabularies = 0;
    size_t failed_files = 0;
    for (size_t i = 0; i < name_count; i++) {
        char relative [512];
        snprintf (relative, sizeof relative, "models/vocab/%s", names [i]);
        char *path = s_shared_path (relative);
        if (!path) {
            print_message ("# %s: no GGUF in the shared data, vectors not checked\n", names [i]);
            free (names [i]);
            continue;
        }
        char err [256] = "";
        vocab_t *vocab = s_try_load_vocab (path, err, sizeof err);
        if (!vocab) {
            //  Only WordPiece (BERT) is left out, and it must say so.
            if (!strstr (err, "\"bert\""))
                fail_msg ("%s: refused: %s", names [i], err);
            print_message ("# %s: refused as it should be (%s)\n", names [i], err);
            free (path);
            free (names [i]);
            continue;
        }
        size_t cases;
        size_t failed = s_check_vocab_vectors (vocab, names [i], &cases);
        print_message ("# %s (%s%s%s): %zu of %zu cases match llama.cpp\n", names [i],
                       vocab_model_name (vocab), *vocab_pre_name (vocab)? ", ": "",
                       vocab_pre_name (vocab), cases - failed, cases);
        assert_true (cases >= 40);
        if (failed)
            failed_files++;
        vocabularies++;
        vocab_destroy (&vocab);
        free (path);
        free (names [i]);
    }
    free (dir_path);
    if (failed_files)
        fail_msg ("%zu vocabularies differ from llama.cpp (cases above)", failed_files);
    assert_true (vocabularies >= 9);
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

    //  Special tokens kept: control and unknown tokens give their text, the others
    //  what vocab_piece gives.
    assert_int_equal (vocab_piece_keep_special (vocab, 1, buf, sizeof buf), 3);
    assert_memory_equal (buf, "<s>", 3);
    assert_int_equal (vocab_piece_keep_special (vocab, 2, buf, sizeof buf), 4);
    assert_memory_equal (buf, "</s>", 4);
    assert_int_equal (vocab_piece_keep_special (vocab, 0, buf, sizeof buf), 5);
    assert_memory_equal (buf, "<unk>", 5);
    assert_int_equal (vocab_piece_keep_special (vocab, 13, buf, sizeof buf), 1);
    assert_int_equal (buf [0], '\n');
    assert_int_equal (vocab_piece_keep_special (vocab, 15043, buf, sizeof buf), 6);
    assert_memory_equal (buf, " Hello", 6);
    assert_int_equal (vocab_piece_keep_special (vocab, 32000, buf, sizeof buf), -1);
    assert_int_equal (vocab_piece_keep_special (vocab, UINT32_MAX, buf, sizeof buf), -1);
    memset (buf, '#', sizeof buf);
    assert_int_equal (vocab_piece_keep_special (vocab, 2, buf, 2), 4);
    assert_memory_equal (buf, "</#", 3);
    assert_int_equal (vocab_piece_keep_special (vocab, 2, NULL, 0), 4);
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

//  --- Special tokens and end of generation -----------------------------------------------

//  Tokenizes text with special tokens recognised; returns the ids (caller frees).
static uint32_t *
s_tokenize_special (const vocab_t *vocab, const char *text, size_t len, bool add_bos,
                    size_t *count)
{
    char err [256] = "";
    int64_t needed = vocab_tokenize_special (vocab, text, len, add_bos, NULL, 0, err, sizeof err);
    if (needed < 0)
        fail_msg ("tokenize: %s", err);
    uint32_t *ids = malloc (((size_t) needed + 1) * sizeof (uint32_t));
    assert_non_null (ids);
    int64_t again = vocab_tokenize_special (vocab, text, len, add_bos, ids, (size_t) needed,
                                            err, sizeof err);
    assert_int_equal (again, needed);
    *count = (size_t) needed;
    return ids;
}

static bool
s_contains (const uint32_t *ids, size_t count, uint32_t id)
{
    for (size_t i = 0; i < count; i++)
        if (ids [i] == id)
            return true;
    return false;
}

//  Every rendered chat prompt of toy-chat.json, with BOS and special tokens parsed, gives
//  llama.cpp's prompt_ids (SentencePiece's leading space after each special token).
static void
test_toy_chat_reference (void **state)
{
    (void) state;
    char *path = s_shared_path ("reference/toy-chat.json");
    vocab_t *vocab = s_load_model_vocab ("models/toy-chat.gguf");
    if (!path || !vocab) {
        free (path);
        vocab_destroy (&vocab);
        skip ();
    }
    json_error_t error;
    json_t *cases = json_load_file (path, 0, &error);
    if (!cases)
        fail_msg ("%s: %s", path, error.text);
    assert_true (json_array_size (cases) > 0);
    size_t index;
    json_t *item;
    json_array_foreach (cases, index, item) {
        const char *prompt = json_string_value (json_object_get (item, "prompt"));
        json_t *prompt_ids = json_object_get (item, "prompt_ids");
        assert_non_null (prompt);
        size_t count;
        uint32_t *ids = s_tokenize_special (vocab, prompt, strlen (prompt), true, &count);
        bool same = count == json_array_size (prompt_ids);
        for (size_t i = 0; same && i < count; i++)
            same = ids [i] == (uint32_t) json_integer_value (json_array_get (prompt_ids, i));
        if (!same) {
            fprintf (stderr, "toy-chat case %zu: '%s'\n  ours:", index, prompt);
            for (size_t i = 0; i < count; i++)
                fprintf (stderr, " %u", ids [i]);
            fprintf (stderr, "\n");
            fail_msg ("toy-chat case %zu differs from llama.cpp", index);
        }
        free (ids);
    }
    print_message ("# toy-chat.json: %zu prompts match llama.cpp\n", json_array_size (cases));
    json_decref (cases);
    free (path);
    vocab_destroy (&vocab);
}

static void
s_assert_eog (const char *relative, const uint32_t *expected, size_t expected_count)
{
    vocab_t *vocab = s_load_model_vocab (relative);
    if (!vocab)
        return;
    uint32_t ids [16];
    size_t count = vocab_eog_tokens (vocab, ids, 16);
    if (count != expected_count)
        fail_msg ("%s: %zu end-of-generation tokens, expected %zu", relative, count,
                  expected_count);
    for (size_t i = 0; i < count; i++) {
        assert_int_equal (ids [i], expected [i]);
        assert_true (vocab_is_eog (vocab, expected [i]));
        assert_true (vocab_is_control (vocab, expected [i]));
        char buf [8];
        assert_int_equal (vocab_piece (vocab, expected [i], buf, sizeof buf), 0);
    }
    assert_false (vocab_is_eog (vocab, UINT32_MAX));
    assert_false (vocab_is_eog (vocab, vocab_size (vocab)));
    vocab_destroy (&vocab);
}

static void
test_end_of_generation (void **state)
{
    (void) state;
    //  toy-chat (Phi-3's vocabulary): its eos <|end|>, and <|endoftext|> by its text.
    uint32_t toy_chat [] = { 32000, 32007 };
    s_assert_eog ("models/toy-chat.gguf", toy_chat, 2);
    vocab_t *vocab = s_load_model_vocab ("models/toy-chat.gguf");
    if (vocab) {
        assert_int_equal (vocab_eos (vocab), 32007);
        assert_string_equal (vocab_token_text (vocab, 32007), "<|end|>");
        assert_string_equal (vocab_token_text (vocab, 32000), "<|endoftext|>");
        assert_false (vocab_is_eog (vocab, 1));             //  <s>
        assert_false (vocab_is_eog (vocab, 32001));         //  <|assistant|>
        assert_false (vocab_is_eog (vocab, 2));             //  </s>, user-defined here
        assert_false (vocab_is_eog (vocab, 3186));
        assert_true (vocab_is_control (vocab, 32001));
        assert_false (vocab_is_control (vocab, 2));
        assert_false (vocab_is_control (vocab, 3186));
        assert_false (vocab_is_control (vocab, UINT32_MAX));
        //  A short buffer gets what fits; the count is the whole.
        uint32_t one [1] = { 0 };
        assert_int_equal (vocab_eog_tokens (vocab, one, 1), 2);
        assert_int_equal (one [0], 32000);
        assert_int_equal (vocab_eog_tokens (vocab, NULL, 0), 2);
        assert_string_equal (vocab_model_name (vocab), "llama");
        assert_string_equal (vocab_pre_name (vocab), "");
        vocab_destroy (&vocab);
    }
    uint32_t llama2 [] = { 2 };
    s_assert_eog ("models/llama-2-tiny-random.gguf", llama2, 1);
    uint32_t gpt2 [] = { 50256 };
    s_assert_eog ("models/vocab/ggml-vocab-gpt-2.gguf", gpt2, 1);
    //  StarCoder: <|endoftext|>, and <fim_pad>, a fill-in-the-middle pad, as llama.cpp.
    uint32_t starcoder [] = { 0, 4 };
    s_assert_eog ("models/vocab/ggml-vocab-starcoder.gguf", starcoder, 2);
    uint32_t deepseek [] = { 32014 };
    s_assert_eog ("models/vocab/ggml-vocab-deepseek-coder.gguf", deepseek, 1);
}

//  --- Byte-level BPE: real vocabularies --------------------------------------------------

static void
test_bpe_gpt2_basics (void **state)
{
    (void) state;
    vocab_t *vocab = s_load_model_vocab ("models/vocab/ggml-vocab-gpt-2.gguf");
    if (!vocab)
        skip ();
    assert_string_equal (vocab_model_name (vocab), "gpt2");
    assert_string_equal (vocab_pre_name (vocab), "gpt-2");
    assert_int_equal (vocab_size (vocab), 50257);
    assert_int_equal (vocab_bos (vocab), 50256);
    assert_false (vocab_add_bos (vocab));       //  no key: false, as llama.cpp for gpt-2
    assert_false (vocab_add_eos (vocab));

    size_t count;
    uint32_t *ids = s_tokenize (vocab, "Hello world", 11, false, &count);
    assert_int_equal (count, 2);
    assert_int_equal (ids [0], 15496);
    assert_int_equal (ids [1], 995);
    free (ids);
    ids = s_tokenize (vocab, "Hello world", 11, true, &count);
    assert_int_equal (count, 3);
    assert_int_equal (ids [0], 50256);
    free (ids);

    char buf [16];
    assert_string_equal (vocab_token_text (vocab, 995), "\xc4\xa0world");      //  "Ġworld"
    assert_int_equal (vocab_piece (vocab, 995, buf, sizeof buf), 6);
    assert_memory_equal (buf, " world", 6);
    assert_int_equal (vocab_piece (vocab, 50256, buf, sizeof buf), 0);        //  control
    assert_int_equal (vocab_piece_keep_special (vocab, 50256, buf, sizeof buf), 13);
    assert_memory_equal (buf, "<|endoftext|>", 13);
    assert_int_equal (vocab_piece_keep_special (vocab, 995, buf, sizeof buf), 6);
    assert_memory_equal (buf, " world", 6);
    assert_true (vocab_is_control (vocab, 50256));
    assert_false (vocab_is_control (vocab, 995));
    //  Bytes of the alphabet: NUL is "Ā", 0xFF is "ÿ".
    ids = s_tokenize (vocab, "\0", 1, false, &count);
    assert_int_equal (count, 1);
    assert_string_equal (vocab_token_text (vocab, ids [0]), "\xc4\x80");
    assert_int_equal (vocab_piece (vocab, ids [0], buf, sizeof buf), 1);
    assert_int_equal (buf [0], 0);
    free (ids);
    //  A lone 0xFF is not UTF-8: it reads as U+FFFD, as in llama.cpp.
    ids = s_tokenize (vocab, "\xff", 1, false, &count);
    size_t back_len;
    char *back = s_pieces (vocab, ids, count, &back_len);
    assert_int_equal (back_len, 3);
    assert_memory_equal (back, "\xef\xbf\xbd", 3);
    free (back);
    free (ids);
    //  Without special tokens, "<|endoftext|>" is text; with them, the token.
    ids = s_tokenize (vocab, "a<|endoftext|>b", 15, false, &count);
    assert_false (s_contains (ids, count, 50256));
    free (ids);
    ids = s_tokenize_special (vocab, "a<|endoftext|>b", 15, false, &count);
    assert_int_equal (count, 3);
    assert_int_equal (ids [1], 50256);
    free (ids);
    vocab_destroy (&vocab);
}

//  DeepSeek Coder: user-defined tokens are cut out of the text even without special
//  tokens parsed (its added "õ"... tokens, "<|User|>"); control tokens only with them.
static void
test_bpe_user_defined_tokens (void **state)
{
    (void) state;
    vocab_t *vocab = s_load_model_vocab ("models/vocab/ggml-vocab-deepseek-coder.gguf");
    if (!vocab)
        skip ();
    assert_true (vocab_add_bos (vocab));
    size_t count;
    uint32_t *ids = s_tokenize (vocab, "\xc3\xb5", 2, false, &count);      //  "õ"
    assert_int_equal (count, 1);
    assert_int_equal (ids [0], 32000);
    free (ids);
    char buf [16];
    assert_int_equal (vocab_piece (vocab, 32000, buf, sizeof buf), 2);    //  its text
    assert_memory_equal (buf, "\xc3\xb5", 2);

    const char *chat = "<|User|>hi<|Assistant|>";
    ids = s_tokenize (vocab, chat, strlen (chat), false, &count);
    assert_true (count >= 3);
    assert_int_equal (ids [0], 32019);
    assert_int_equal (ids [count - 1], 32020);
    free (ids);

    const char *bos_text = "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>x";
    ids = s_tokenize (vocab, bos_text, strlen (bos_text), false, &count);
    assert_false (s_contains (ids, count, 32013));
    free (ids);
    ids = s_tokenize_special (vocab, bos_text, strlen (bos_text), false, &count);
    assert_int_equal (count, 2);
    assert_int_equal (ids [0], 32013);
    free (ids);
    vocab_destroy (&vocab);

    //  MPT (GPT-NeoX's vocabulary): runs of spaces are user-defined tokens, longest first.
    vocab = s_load_model_vocab ("models/vocab/ggml-vocab-mpt.gguf");
    if (!vocab)
        return;
    ids = s_tokenize (vocab, "a     b", 7, false, &count);
    assert_int_equal (count, 3);
    assert_string_equal (vocab_token_text (vocab, ids [1]), "     ");
    free (ids);
    vocab_destroy (&vocab);
}

//  StarCoder's fill-in-the-middle markers are control tokens: recognised only when asked.
static void
test_bpe_special_markers (void **state)
{
    (void) state;
    vocab_t *vocab = s_load_model_vocab ("models/vocab/ggml-vocab-starcoder.gguf");
    if (!vocab)
        skip ();
    const char *prompt = "<fim_prefix>def f():\n    <fim_suffix>\n    return x<fim_middle>";
    size_t count;
    uint32_t *ids = s_tokenize_special (vocab, prompt, strlen (prompt), false, &count);
    assert_int_equal (ids [0], 1);
    assert_int_equal (ids [count - 1], 2);
    assert_true (s_contains (ids, count, 3));
    //  The text between markers is tokenized on its own: the same ids as alone.
    size_t alone_count;
    uint32_t *alone = s_tokenize (vocab, "def f():\n    ", 13, false, &alone_count);
    assert_memory_equal (ids + 1, alone, alone_count * sizeof (uint32_t));
    assert_int_equal (ids [1 + alone_count], 3);
    free (alone);
    free (ids);
    ids = s_tokenize (vocab, prompt, strlen (prompt), false, &count);
    assert_false (s_contains (ids, count, 1) || s_contains (ids, count, 2)
               || s_contains (ids, count, 3));
    size_t back_len;
    char *back = s_pieces (vocab, ids, count, &back_len);
    assert_int_equal (back_len, strlen (prompt));
    assert_memory_equal (back, prompt, back_len);
    free (back);
    free (ids);
    vocab_destroy (&vocab);
}

//  The names of the byte-level BPE vocabularies in the shared data.
static const char *const s_bpe_vocabs [] = {
    "ggml-vocab-gpt-2.gguf", "ggml-vocab-starcoder.gguf", "ggml-vocab-refact.gguf",
    "ggml-vocab-mpt.gguf", "ggml-vocab-falcon.gguf", "ggml-vocab-deepseek-coder.gguf",
    "ggml-vocab-deepseek-llm.gguf", "ggml-vocab-gpt-neox.gguf", NULL
};

static vocab_t *
s_load_vocab_file (const char *name)
{
    char relative [256];
    snprintf (relative, sizeof relative, "models/vocab/%s", name);
    return s_load_model_vocab (relative);
}

//  --- Detokenizing: one by one equals all at once -----------------------------------------

//  Decodes bytes as Python's decode(errors="replace") does: each maximal invalid subpart
//  (a stray byte, or a lead byte with the continuation bytes that were right so far)
//  becomes one U+FFFD. Returns a new NUL-terminated string.
static char *
s_decode_replacing (const unsigned char *bytes, size_t len)
{
    char *out = malloc (len * 3 + 1);
    assert_non_null (out);
    size_t written = 0;
    size_t pos = 0;
    while (pos < len) {
        unsigned char lead = bytes [pos];
        size_t need = 0;
        unsigned char low = 0x80, high = 0xBF;
        if (lead < 0x80)
            need = 1;
        else if (lead >= 0xC2 && lead <= 0xDF)
            need = 2;
        else if (lead == 0xE0)
            need = 3, low = 0xA0;
        else if (lead == 0xED)
            need = 3, high = 0x9F;
        else if (lead >= 0xE1 && lead <= 0xEF)
            need = 3;
        else if (lead == 0xF0)
            need = 4, low = 0x90;
        else if (lead == 0xF4)
            need = 4, high = 0x8F;
        else if (lead >= 0xF1 && lead <= 0xF3)
            need = 4;
        size_t good = need? 1: 0;      //  bytes that fit so far
        while (good && good < need && pos + good < len) {
            unsigned char byte = bytes [pos + good];
            unsigned char byte_low = good == 1? low: 0x80;
            unsigned char byte_high = good == 1? high: 0xBF;
            if (byte < byte_low || byte > byte_high)
                break;
            good++;
        }
        if (need && good == need) {
            memcpy (out + written, bytes + pos, need);
            written += need;
            pos += need;
        }
        else {
            memcpy (out + written, "\xef\xbf\xbd", 3);
            written += 3;
            pos += good? good: 1;
        }
    }
    out [written] = 0;
    return out;
}

//  Random id sequences (tokens whose piece holds a NUL left out: detok gives C strings)
//  detokenized one token at a time equal the whole sequence's pieces decoded at once.
static void
s_check_random_detok (const vocab_t *vocab, const char *name, uint64_t seed)
{
    uint32_t size = vocab_size (vocab);
    for (int sequence = 0; sequence < 300; sequence++) {
        uint32_t ids [48];
        size_t count = 1 + s_next_random (&seed) % 48;
        for (size_t i = 0; i < count; i++) {
            char piece [512];
            uint32_t id;
            int len;
            do {
                //  Half the time a token of at most one byte: broken characters are
                //  what detok has to hold back.
                id = s_next_random (&seed) % size;
                len = vocab_piece (vocab, id, piece, sizeof piece);
                assert_true (len >= 0);
            } while (len > (int) sizeof piece || memchr (piece, 0, (size_t) len)
                     || (sequence % 2 && len > 1 && s_next_random (&seed) % 4));
            ids [i] = id;
        }
        size_t all_len;
        char *all = s_pieces (vocab, ids, count, &all_len);
        char *expected = s_decode_replacing ((const unsigned char *) all, all_len);
        char *streamed = s_detokenize (vocab, ids, count);
        if (strcmp (streamed, expected) != 0)
            fail_msg ("%s, sequence %d: one by one '%s', all at once '%s'", name, sequence,
                      streamed, expected);
        free (streamed);
        free (expected);
        free (all);
    }
}

static void
test_detok_random_ids (void **state)
{
    (void) state;
    const char *models [] = {
        "models/toy-chat.gguf", "models/llama-2-tiny-random.gguf", "models/stories260K.gguf",
        "models/vocab/ggml-vocab-llama-spm.gguf", "models/vocab/ggml-vocab-phi-3.gguf",
        "models/vocab/ggml-vocab-baichuan.gguf",
    };
    uint64_t seed = 7;
    for (size_t i = 0; i < sizeof models / sizeof models [0]; i++) {
        vocab_t *vocab = s_load_model_vocab (models [i]);
        if (!vocab)
            continue;
        s_check_random_detok (vocab, models [i], seed++);
        vocab_destroy (&vocab);
    }
    for (size_t v = 0; s_bpe_vocabs [v]; v++) {
        vocab_t *vocab = s_load_vocab_file (s_bpe_vocabs [v]);
        if (!vocab)
            continue;
        s_check_random_detok (vocab, s_bpe_vocabs [v], seed++);
        vocab_destroy (&vocab);
    }
}

//  --- Byte-level BPE: bad, huge and hostile input -----------------------------------------

//  text with every byte that does not start a well-formed UTF-8 character replaced by
//  U+FFFD: what BPE tokenizes. Returns a new string and its length.
static char *
s_replace_invalid (const char *text, size_t len, size_t *out_len)
{
    char *out = malloc (len * 3 + 1);
    assert_non_null (out);
    size_t written = 0;
    size_t pos = 0;
    while (pos < len) {
        char *decoded = s_decode_replacing ((const unsigned char *) text + pos,
                                            len - pos < 4? len - pos: 4);
        //  The first character decoded from here: valid only if it is not U+FFFD made
        //  up of the input's own bytes.
        size_t char_len = 1;
        unsigned char lead = (unsigned char) text [pos];
        if (lead >= 0x80) {
            char_len = lead >= 0xF0? 4: lead >= 0xE0? 3: 2;
            if (pos + char_len > len || strncmp (decoded, text + pos, char_len) != 0)
                char_len = 0;
        }
        if (char_len) {
            memcpy (out + written, text + pos, char_len);
            written += char_len;
            pos += char_len;
        }
        else {
            memcpy (out + written, "\xef\xbf\xbd", 3);
            written += 3;
            pos++;
        }
        free (decoded);
    }
    out [written] = 0;
    *out_len = written;
    return out;
}

//  GPT-2's byte alphabet: writes byte's character into text (NUL-terminated).
static void
s_alphabet_char (int byte, char text [4])
{
    uint32_t next = 0x100;
    uint32_t codepoint = 0;
    for (int other = 0; other <= byte; other++) {
        bool printable = (other >= 0x21 && other <= 0x7E) || (other >= 0xA1 && other <= 0xAC)
                      || (other >= 0xAE && other <= 0xFF);
        codepoint = printable? (uint32_t) other: next++;
    }
    memset (text, 0, 4);
    if (codepoint < 0x80)
        text [0] = (char) codepoint;
    else {
        text [0] = (char) (0xC0 | (codepoint >> 6));
        text [1] = (char) (0x80 | (codepoint & 0x3F));
    }
}

//  Which bytes a BPE vocabulary can write: those whose alphabet character is a token.
//  llama.cpp drops the others (Falcon has no token for 0x03, StarCoder none for 0xF1).
static void
s_bpe_bytes (const vocab_t *vocab, bool representable [256])
{
    char chars [256][4];
    for (int byte = 0; byte < 256; byte++) {
        s_alphabet_char (byte, chars [byte]);
        representable [byte] = false;
    }
    for (uint32_t id = 0; id < vocab_size (vocab); id++) {
        const char *text = vocab_token_text (vocab, id);
        if (strlen (text) > 2)
            continue;
        for (int byte = 0; byte < 256; byte++)
            if (strcmp (text, chars [byte]) == 0)
                representable [byte] = true;
    }
}

//  Tokenizing text and joining the pieces gives text back, with invalid UTF-8 read as
//  U+FFFD and the bytes the vocabulary cannot write left out.
static void
s_assert_bpe_round_trip (const vocab_t *vocab, const bool representable [256],
                         const char *text, size_t len)
{
    size_t count, back_len, expected_len;
    uint32_t *ids = s_tokenize (vocab, text, len, false, &count);
    char *back = s_pieces (vocab, ids, count, &back_len);
    char *expected = s_replace_invalid (text, len, &expected_len);
    size_t kept = 0;
    for (size_t i = 0; i < expected_len; i++)
        if (representable [(unsigned char) expected [i]])
            expected [kept++] = expected [i];
    expected_len = kept;
    if (back_len != expected_len || memcmp (back, expected, expected_len) != 0)
        fail_msg ("%zu bytes came back as %zu, expected %zu", len, back_len, expected_len);
    free (expected);
    free (back);
    free (ids);
}

//  Byte-level BPE loses nothing: the pieces of valid UTF-8 text give the text back (but
//  for bytes a vocabulary has no token for, which llama.cpp leaves out too).
static void
test_bpe_round_trips (void **state)
{
    (void) state;
    const char *texts [] = {
        "Hello world", " leading space", "  two  spaces   three\t\ttabs\r\n\n\n",
        "The quick brown fox jumps over the lazy dog. 1234567890 3.14159",
        "I've been 'told he's there, 'RE you sure? We'Ve a'lL",
        "Ünïcødé, 日本語のテキスト、中文文本、한국어 텍스트, Ελληνικά, русский",
        "🦙🦙 llamas 🦙🏳️‍🌈 flags \u00a0nbsp\u2003em\u3000ideographic",
        "int main(void) { return printf(\"%d\\n\", 42) >= 0 ? 0 : 1; }",
        "~~~ ~tilde~ ~~ $$ ++ <<>> ^^ `` || ... !!! ??? ''' \"\"\"",
        "\x01\x02\x1f\x7f control bytes, \x1c\x1d\x1e file separators",
        "x", " ", "\n", "",
    };
    for (size_t v = 0; s_bpe_vocabs [v]; v++) {
        vocab_t *vocab = s_load_vocab_file (s_bpe_vocabs [v]);
        if (!vocab)
            continue;
        bool representable [256];
        s_bpe_bytes (vocab, representable);
        for (size_t i = 0; i < sizeof texts / sizeof texts [0]; i++) {
            size_t len = strlen (texts [i]);
            size_t count, back_len;
            uint32_t *ids = s_tokenize (vocab, texts [i], len, false, &count);
            char *back = s_pieces (vocab, ids, count, &back_len);
            bool all_bytes = true;
            for (size_t k = 0; k < len; k++)
                all_bytes = all_bytes && representable [(unsigned char) texts [i][k]];
            if (all_bytes && (back_len != len || memcmp (back, texts [i], len) != 0))
                fail_msg ("%s: '%s' came back as '%s'", s_bpe_vocabs [v], texts [i], back);
            free (back);
            free (ids);
            s_assert_bpe_round_trip (vocab, representable, texts [i], len);
        }
        vocab_destroy (&vocab);
    }
}

static void
test_bpe_garbage (void **state)
{
    (void) state;
    const char *names [] = { "ggml-vocab-starcoder.gguf", "ggml-vocab-deepseek-llm.gguf",
                             "ggml-vocab-falcon.gguf" };
    for (size_t v = 0; v < sizeof names / sizeof names [0]; v++) {
        vocab_t *vocab = s_load_vocab_file (names [v]);
        if (!vocab)
            continue;
        bool representable [256];
        s_bpe_bytes (vocab, representable);
        for (int byte = 0; byte < 256; byte++) {
            char one = (char) byte;
            s_assert_bpe_round_trip (vocab, representable, &one, 1);
            char three [3] = { 'a', (char) byte, 'b' };
            s_assert_bpe_round_trip (vocab, representable, three, 3);
        }
        const char *invalid [] = { "\xff", "\x80", "\xc3(", "\xe2\x82", "\xed\xa0\x80",
                                   "\xf0\x9f\xa6", "\xf4\x90\x80\x80", "\xc0\xaf",
                                   "a\xffz", "\xe2\x82 \xe2\x82", "\xf0\x9f\xa6\x99\xf0" };
        for (size_t i = 0; i < sizeof invalid / sizeof invalid [0]; i++)
            s_assert_bpe_round_trip (vocab, representable, invalid [i], strlen (invalid [i]));
        s_assert_bpe_round_trip (vocab, representable, "a\0b\0\0 c", 7);

        uint64_t seed = 99 + v;
        size_t len = 64 * 1024;
        char *garbage = malloc (len);
        assert_non_null (garbage);
        for (size_t i = 0; i < len; i++)
            garbage [i] = (char) s_next_random (&seed);
        s_assert_bpe_round_trip (vocab, representable, garbage, len);
        //  The same garbage with special tokens parsed: no crash, as many tokens or fewer.
        size_t count;
        uint32_t *ids = s_tokenize_special (vocab, garbage, len, true, &count);
        assert_true (count > 0);
        free (ids);
        free (garbage);
        vocab_destroy (&vocab);
    }
}

static void
test_bpe_huge_text (void **state)
{
    (void) state;
    vocab_t *vocab = s_load_model_vocab ("models/vocab/ggml-vocab-starcoder.gguf");
    if (!vocab)
        skip ();
    const char *paragraph =
        "Once upon a time, in a land far away, there lived a llama \xf0\x9f\xa6\x99 named "
        "\xc3\x9cn\xc3\xaf" "c\xc3\xb8" "d\xc3\xa9. It spoke \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
        "and English, counted to 1234567, and it liked   spaces,\ttabs and newlines.\n";
    size_t paragraph_len = strlen (paragraph);
    size_t len = 10 * 1000 * 1000;
    char *text = malloc (len);
    assert_non_null (text);
    for (size_t i = 0; i < len; i++)
        text [i] = paragraph [i % paragraph_len];
    //  Cut at a character boundary.
    while (len > 0 && ((unsigned char) text [len - 1] & 0xC0) == 0x80)
        len--;
    if (len > 0 && (unsigned char) text [len - 1] >= 0xC0)
        len--;
    clock_t start = clock ();
    size_t count, back_len;
    uint32_t *ids = s_tokenize (vocab, text, len, false, &count);
    double seconds = (double) (clock () - start) / CLOCKS_PER_SEC;
    char *back = s_pieces (vocab, ids, count, &back_len);
    assert_int_equal (back_len, len);
    assert_memory_equal (back, text, len);
    print_message ("# 10 MB tokenized twice (count, then ids) in %.2f s: %zu tokens\n",
                   seconds, count);
    free (back);
    free (ids);
    free (text);
    vocab_destroy (&vocab);
}

//  CPU seconds to tokenize len bytes of pattern repeated.
static double
s_time_pattern (const vocab_t *vocab, const char *pattern, size_t len)
{
    size_t pattern_len = strlen (pattern);
    char *text = malloc (len);
    assert_non_null (text);
    for (size_t i = 0; i < len; i++)
        text [i] = pattern [i % pattern_len];
    char err [256];
    clock_t start = clock ();
    int64_t count = vocab_tokenize (vocab, text, len, false, NULL, 0, err, sizeof err);
    double seconds = (double) (clock () - start) / CLOCKS_PER_SEC;
    if (count <= 0)
        fail_msg ("'%s' x %zu: %s", pattern, len, err);
    free (text);
    return seconds;
}

//  One long word, one long run of spaces, of newlines, of digits, of punctuation: eight
//  times the text takes about eight times as long, not sixty-four.
static void
test_bpe_no_quadratic_time (void **state)
{
    (void) state;
    const char *names [] = { "ggml-vocab-starcoder.gguf", "ggml-vocab-deepseek-llm.gguf",
                             "ggml-vocab-mpt.gguf" };
    const char *patterns [] = { "a", " ", "\n", " \n", "7", "!", "'", "\t", " \t\r\n\v\f",
                                "\xe4\xb8\xad", "\xc2\xa0", "\xf0\x9f\x98\x80", "ab1 ",
                                "x ", "'s" };
    for (size_t v = 0; v < sizeof names / sizeof names [0]; v++) {
        vocab_t *vocab = s_load_vocab_file (names [v]);
        if (!vocab)
            continue;
        for (size_t p = 0; p < sizeof patterns / sizeof patterns [0]; p++) {
            double small = s_time_pattern (vocab, patterns [p], 8 * 1024);
            double large = s_time_pattern (vocab, patterns [p], 64 * 1024);
            if (large > 24 * small + 0.05)
                fail_msg ("%s: '%s' x 8 KiB took %.3f s, x 64 KiB %.3f s", names [v],
                          patterns [p], small, large);
        }
        vocab_destroy (&vocab);
    }
}

//  --- Byte-level BPE: a small Llama-3-style vocabulary built here --------------------------

//  A toy BPE vocabulary: the 256 characters of GPT-2's byte alphabet (ids 0..255, in
//  byte order), then the tokens and merges given, under pre-tokenizer pre.
static vocab_t *
s_toy_bpe_vocab (const char *pre, const toy_token_t *tokens, size_t count,
                 const char *const *merges, size_t merge_count, bool with_bos)
{
    builder_t builder;
    s_builder_start (&builder);
    s_key_string (&builder, "tokenizer.ggml.model", "gpt2");
    s_key_string (&builder, "tokenizer.ggml.pre", pre);
    size_t total = 256 + count;
    s_key (&builder, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
    s_put_u32 (&builder, GGUF_TYPE_STRING);
    s_put_u64 (&builder, total);
    uint32_t next = 0x100;
    for (int byte = 0; byte < 256; byte++) {
        bool printable = (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC)
                      || (byte >= 0xAE && byte <= 0xFF);
        uint32_t codepoint = printable? (uint32_t) byte: next++;
        char text [4] = { 0 };
        if (codepoint < 0x80)
            text [0] = (char) codepoint;
        else {
            text [0] = (char) (0xC0 | (codepoint >> 6));
            text [1] = (char) (0x80 | (codepoint & 0x3F));
        }
        s_put_string (&builder, text);
    }
    for (size_t i = 0; i < count; i++)
        s_put_string (&builder, tokens [i].text);
    s_key (&builder, "tokenizer.ggml.token_type", GGUF_TYPE_ARRAY);
    s_put_u32 (&builder, GGUF_TYPE_INT32);
    s_put_u64 (&builder, total);
    for (int byte = 0; byte < 256; byte++)
        s_put_u32 (&builder, 1);
    for (size_t i = 0; i < count; i++)
        s_put_u32 (&builder, (uint32_t) tokens [i].type);
    s_key (&builder, "tokenizer.ggml.merges", GGUF_TYPE_ARRAY);
    s_put_u32 (&builder, GGUF_TYPE_STRING);
    s_put_u64 (&builder, merge_count);
    for (size_t i = 0; i < merge_count; i++)
        s_put_string (&builder, merges [i]);
    if (with_bos)
        s_key_u32 (&builder, "tokenizer.ggml.bos_token_id", 256 + 5);
    s_builder_finish (&builder);
    char err [256] = "";
    gguf_t *gguf = gguf_open_memory (builder.data, builder.len, err, sizeof err);
    if (!gguf)
        fail_msg ("toy BPE GGUF: %s", err);
    vocab_t *vocab = vocab_new (gguf, err, sizeof err);
    if (!vocab)
        fail_msg ("toy BPE vocab: %s", err);
    gguf_destroy (&gguf);
    free (builder.data);
    return vocab;
}

//  Ids 256.. of the toy BPE vocabulary.
static const toy_token_t s_toy_bpe_tokens [] = {
    { "us", 0, 1 }, { "er", 0, 1 }, { "user", 0, 1 }, { "\xc4\x8a\xc4\x8a", 0, 1 },  //  "ĊĊ"
    { "Hi", 0, 1 }, { "<|begin_of_text|>", 0, 3 }, { "<|start_header_id|>", 0, 3 },
    { "<|end_header_id|>", 0, 3 },
    { "<|eot_id|>", 0, 1 },         //  normal here: its text makes it control, and an end
    { "<tool>", 0, 4 }, { "abc", 0, 1 }, { "se", 0, 1 },
};
static const char *const s_toy_bpe_merges [] = {
    "u s", "e r", "us er", "\xc4\x8a \xc4\x8a", "H i", "s e",
};

static void
test_toy_bpe_chat_markers (void **state)
{
    (void) state;
    size_t token_count = sizeof s_toy_bpe_tokens / sizeof s_toy_bpe_tokens [0];
    size_t merge_count = sizeof s_toy_bpe_merges / sizeof s_toy_bpe_merges [0];
    vocab_t *vocab = s_toy_bpe_vocab ("llama-bpe", s_toy_bpe_tokens, token_count,
                                      s_toy_bpe_merges, merge_count, true);
    assert_true (vocab_add_bos (vocab));        //  no key: llama3's default is true
    assert_int_equal (vocab_bos (vocab), 261);
    assert_true (vocab_is_eog (vocab, 264));    //  by its text
    assert_true (vocab_is_control (vocab, 264));
    uint32_t eog [4];
    assert_int_equal (vocab_eog_tokens (vocab, eog, 4), 1);

    const char *chat = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
    size_t count;
    uint32_t *ids = s_tokenize_special (vocab, chat, strlen (chat), true, &count);
    uint32_t expected [] = { 261, 262, 258, 263, 259, 260, 264 };
    assert_int_equal (count, sizeof expected / sizeof expected [0]);
    assert_memory_equal (ids, expected, sizeof expected);
    free (ids);
    //  Without special tokens the markers are text, which gives itself back.
    ids = s_tokenize (vocab, chat, strlen (chat), false, &count);
    assert_false (s_contains (ids, count, 262) || s_contains (ids, count, 263)
               || s_contains (ids, count, 264));
    size_t back_len;
    char *back = s_pieces (vocab, ids, count, &back_len);
    assert_int_equal (back_len, strlen (chat));
    assert_memory_equal (back, chat, back_len);
    free (back);
    free (ids);
    //  A user-defined token is cut out anyway, and its piece is its text.
    ids = s_tokenize (vocab, "a<tool>b", 8, false, &count);
    assert_int_equal (count, 3);
    assert_int_equal (ids [1], 265);
    free (ids);
    //  Merges by rank: "u s" (rank 0) before "s e" (rank 5).
    ids = s_tokenize (vocab, "use", 3, false, &count);
    assert_int_equal (count, 2);
    assert_int_equal (ids [0], 256);
    assert_int_equal (ids [1], 'e' - 0);
    free (ids);
    //  llama3 ignores merges for a word that is a token: "abc" has no merges but is one.
    ids = s_tokenize (vocab, "abc", 3, false, &count);
    assert_int_equal (count, 1);
    assert_int_equal (ids [0], 266);
    free (ids);
    vocab_destroy (&vocab);

    //  GPT-2's pre-tokenizer does not: "abc" stays three bytes. No BOS default either.
    vocab = s_toy_bpe_vocab ("gpt-2", s_toy_bpe_tokens, token_count, s_toy_bpe_merges,
                             merge_count, false);
    assert_false (vocab_add_bos (vocab));
    assert_int_equal (vocab_bos (vocab), UINT32_MAX);
    ids = s_tokenize (vocab, "abc", 3, false, &count);
    assert_int_equal (count, 3);
    free (ids);
    char err [256];
    uint32_t one [4];
    assert_int_equal (vocab_tokenize (vocab, "abc", 3, true, one, 4, err, sizeof err), -1);
    vocab_destroy (&vocab);
}

//  Every pre-tokenizer name compiles and tokenizes; an unknown one is refused by name.
static void
test_toy_bpe_every_pre_tokenizer (void **state)
{
    (void) state;
    const char *names [] = {
        "default", "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
        "midm-2.0", "lfm2", "dbrx", "smaug-bpe", "chatglm-bpe", "glm4", "deepseek-llm",
        "deepseek-coder", "deepseek-v3", "hunyuan-dense", "falcon", "gpt-2", "phi-2", "mpt",
        "olmo", "jais", "trillion", "granite-docling", "exaone4", "jina-es", "jina-de",
        "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe", "gigachat",
        "a.x-4.0", "mellum", "starcoder", "refact", "command-r", "smollm", "codeshell",
        "exaone", "minerva-7b", "qwen2", "deepseek-r1-qwen", "stablelm2", "megrez",
        "hunyuan", "grok-2", "poro-chat", "bloom", "gpt3-finnish", "viking", "tekken",
        "chameleon", "gpt-4o", "llama4", "minimax-m2", "superbpe", "bailingmoe",
        "bailingmoe2", "llada-moe", "seed-coder", "kimi-k2",
    };
    const char *text = "Hello, World! It's 12345 ~tokens~ \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\xa6\x99"
                       "  \n\n <sentinel:12> IMGIMGABZ user";
    size_t token_count = sizeof s_toy_bpe_tokens / sizeof s_toy_bpe_tokens [0];
    size_t merge_count = sizeof s_toy_bpe_merges / sizeof s_toy_bpe_merges [0];
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        vocab_t *vocab = s_toy_bpe_vocab (names [i], s_toy_bpe_tokens, token_count,
                                          s_toy_bpe_merges, merge_count, true);
        assert_string_equal (vocab_pre_name (vocab), names [i]);
        bool representable [256];
        s_bpe_bytes (vocab, representable);
        s_assert_bpe_round_trip (vocab, representable, text, strlen (text));
        vocab_destroy (&vocab);
    }

    builder_t builder;
    s_builder_start (&builder);
    s_key_string (&builder, "tokenizer.ggml.model", "gpt2");
    s_key_string (&builder, "tokenizer.ggml.pre", "no-such-pre");
    s_key (&builder, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
    s_put_u32 (&builder, GGUF_TYPE_STRING);
    s_put_u64 (&builder, 1);
    s_put_string (&builder, "a");
    s_builder_finish (&builder);
    char err [256];
    gguf_t *gguf = gguf_open_memory (builder.data, builder.len, err, sizeof err);
    assert_non_null (gguf);
    assert_null (vocab_new (gguf, err, sizeof err));
    assert_true (strstr (err, "\"no-such-pre\"") != NULL);
    gguf_destroy (&gguf);
    free (builder.data);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_greedy_reference),
        cmocka_unit_test (test_all_vocab_vectors),
        cmocka_unit_test (test_toy_chat_reference),
        cmocka_unit_test (test_end_of_generation),
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
        cmocka_unit_test (test_bpe_gpt2_basics),
        cmocka_unit_test (test_bpe_user_defined_tokens),
        cmocka_unit_test (test_bpe_special_markers),
        cmocka_unit_test (test_bpe_round_trips),
        cmocka_unit_test (test_detok_random_ids),
        cmocka_unit_test (test_bpe_garbage),
        cmocka_unit_test (test_bpe_huge_text),
        cmocka_unit_test (test_bpe_no_quadratic_time),
        cmocka_unit_test (test_toy_bpe_chat_markers),
        cmocka_unit_test (test_toy_bpe_every_pre_tokenizer),
    };
    return cmocka_run_group_tests (tests, s_setup_llama2, s_teardown_llama2);
}
