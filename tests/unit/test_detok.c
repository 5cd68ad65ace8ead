/*  test_detok — incremental detokenization over llama-2's vocabulary (32k tokens, with
    the 256 byte tokens <0x00>..<0xFF> at ids 3..258).

    What it holds detok to: ASCII comes out at once; a character split over byte tokens
    comes out whole when its last byte arrives; bytes that can never form a character come
    out as U+FFFD exactly as Python's bytes.decode("utf-8", errors="replace") gives them
    (the expected strings below were made with it); detok_flush turns an incomplete tail
    into one U+FFFD; control tokens add nothing, or, once detok_set_keep_special asks
    for them, their text.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "vocab.h"
#include "detok.h"

#define FFFD "\xef\xbf\xbd"

static vocab_t *s_vocab;

static int
s_setup (void **state)
{
    (void) state;
    const char *dir = getenv ("ZLLM_SHARED_DIR");
    if (!dir)
        return 0;                   //  every test skips
    char path [1024];
    snprintf (path, sizeof path, "%s/models/llama-2-tiny-random.gguf", dir);
    char err [256] = "";
    gguf_t *gguf = gguf_open (path, err, sizeof err);
    if (!gguf) {
        fprintf (stderr, "%s: %s\n", path, err);
        return 0;
    }
    s_vocab = vocab_new (gguf, err, sizeof err);
    if (!s_vocab)
        fprintf (stderr, "%s: %s\n", path, err);
    gguf_destroy (&gguf);
    return 0;
}

static int
s_teardown (void **state)
{
    (void) state;
    vocab_destroy (&s_vocab);
    return 0;
}

//  The byte token for a byte value.
static uint32_t
s_byte (unsigned char byte)
{
    return 3u + byte;
}

//  Adds each byte of bytes[0..len-1] as a byte token, then flushes; returns all text
//  given out (caller frees).
static char *
s_decode_bytes (const char *bytes, size_t len)
{
    detok_t *detok = detok_new (s_vocab);
    assert_non_null (detok);
    char *text = calloc (1, len * 3 + 1);
    assert_non_null (text);
    size_t used = 0;
    for (size_t i = 0; i <= len; i++) {
        const char *part = i < len? detok_add (detok, s_byte ((unsigned char) bytes [i])):
                                    detok_flush (detok);
        size_t part_len = strlen (part);
        assert_true (used + part_len <= len * 3);
        memcpy (text + used, part, part_len + 1);
        used += part_len;
    }
    detok_destroy (&detok);
    return text;
}

static void
test_ascii_passes_through (void **state)
{
    (void) state;
    if (!s_vocab)
        skip ();
    detok_t *detok = detok_new (s_vocab);
    assert_non_null (detok);
    assert_string_equal (detok_add (detok, 15043), " Hello");        //  "▁Hello"
    assert_string_equal (detok_add (detok, 3186), " world");          //  "▁world"
    assert_string_equal (detok_add (detok, s_byte ('!')), "!");
    assert_string_equal (detok_add (detok, s_byte ('\n')), "\n");
    assert_string_equal (detok_flush (detok), "");
    assert_string_equal (detok_flush (detok), "");
    detok_destroy (&detok);
    assert_null (detok);
    detok_destroy (&detok);         //  twice is harmless
}

static void
test_emoji_over_byte_tokens (void **state)
{
    (void) state;
    if (!s_vocab)
        skip ();
    detok_t *detok = detok_new (s_vocab);
    //  🦙 is F0 9F A6 99.
    assert_string_equal (detok_add (detok, s_byte (0xF0)), "");
    assert_string_equal (detok_add (detok, s_byte (0x9F)), "");
    assert_string_equal (detok_add (detok, s_byte (0xA6)), "");
    assert_string_equal (detok_add (detok, s_byte (0x99)), "🦙");
    //  A character split across a normal token: "é" (C3 A9) then "▁Hello".
    assert_string_equal (detok_add (detok, s_byte (0xC3)), "");
    assert_string_equal (detok_add (detok, s_byte (0xA9)), "é");
    assert_string_equal (detok_add (detok, s_byte (0xE2)), "");
    assert_string_equal (detok_add (detok, s_byte (0x82)), "");
    //  Control tokens in the middle add nothing and keep what is pending.
    assert_string_equal (detok_add (detok, 1), "");
    assert_string_equal (detok_add (detok, 2), "");
    assert_string_equal (detok_add (detok, s_byte (0xAC)), "€");
    assert_string_equal (detok_flush (detok), "");
    detok_destroy (&detok);
}

static void
test_control_tokens_emit_nothing (void **state)
{
    (void) state;
    if (!s_vocab)
        skip ();
    detok_t *detok = detok_new (s_vocab);
    assert_string_equal (detok_add (detok, vocab_bos (s_vocab)), "");
    assert_string_equal (detok_add (detok, vocab_eos (s_vocab)), "");
    assert_string_equal (detok_add (detok, 0), "");                   //  <unk>
    assert_string_equal (detok_add (detok, 32000), "");               //  out of range
    assert_string_equal (detok_add (detok, UINT32_MAX), "");
    assert_string_equal (detok_flush (detok), "");
    detok_destroy (&detok);
}

//  Special tokens kept: control and unknown tokens give their text, the others what they
//  gave before; pending bytes before a special token are not a character (U+FFFD).
static void
test_keep_special_tokens (void **state)
{
    (void) state;
    if (!s_vocab)
        skip ();
    detok_t *detok = detok_new (s_vocab);
    detok_set_keep_special (detok, true);
    assert_string_equal (detok_add (detok, vocab_bos (s_vocab)), "<s>");
    assert_string_equal (detok_add (detok, 15043), " Hello");
    assert_string_equal (detok_add (detok, 0), "<unk>");
    assert_string_equal (detok_add (detok, s_byte (0xC3)), "");
    assert_string_equal (detok_add (detok, s_byte (0xA9)), "é");
    assert_string_equal (detok_add (detok, s_byte (0xE2)), "");
    assert_string_equal (detok_add (detok, vocab_eos (s_vocab)), FFFD "</s>");
    assert_string_equal (detok_add (detok, 32000), "");               //  out of range
    //  Back to the default: special tokens give nothing again.
    detok_set_keep_special (detok, false);
    assert_string_equal (detok_add (detok, vocab_eos (s_vocab)), "");
    assert_string_equal (detok_add (detok, 3186), " world");
    assert_string_equal (detok_flush (detok), "");
    detok_destroy (&detok);
}

static void
test_invalid_sequences (void **state)
{
    (void) state;
    if (!s_vocab)
        skip ();
    struct {
        const char *bytes;
        const char *expected;       //  Python's decode(errors="replace")
    } cases [] = {
        { "\xff", FFFD },
        { "\x80\xbf", FFFD FFFD },                      //  continuations without a lead
        { "\xf0\x9f\xa6" "A", FFFD "A" },               //  lead, then not a continuation
        { "\xed\xa0\x80", FFFD FFFD FFFD },             //  a surrogate
        { "\xc0\xaf", FFFD FFFD },                      //  overlong
        { "\xe0\x80\xaf", FFFD FFFD FFFD },             //  overlong
        { "\xf4\x90\x80\x80", FFFD FFFD FFFD FFFD },    //  past U+10FFFF
        { "\xe2(\xa1", FFFD "(" FFFD },
        { "\xf0\x80", FFFD FFFD },
        { "a\xff" "b", "a" FFFD "b" },
        { "\xf0\x9f\x98", FFFD },                       //  incomplete at the end
        { "\xc3\xa9\xe2\x82", "é" FFFD },
        { "\xf5\xf8\xfe", FFFD FFFD FFFD },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char *text = s_decode_bytes (cases [i].bytes, strlen (cases [i].bytes));
        if (strcmp (text, cases [i].expected) != 0)
            fail_msg ("case %zu: got '%s', expected '%s'", i, text, cases [i].expected);
        free (text);
    }

    //  An invalid byte comes out at once, not at the next token.
    detok_t *detok = detok_new (s_vocab);
    assert_string_equal (detok_add (detok, s_byte (0xFF)), FFFD);
    assert_string_equal (detok_add (detok, s_byte (0xE2)), "");
    assert_string_equal (detok_add (detok, 15043), FFFD " Hello");
    detok_destroy (&detok);
}

static void
test_flush_incomplete (void **state)
{
    (void) state;
    if (!s_vocab)
        skip ();
    detok_t *detok = detok_new (s_vocab);
    assert_string_equal (detok_add (detok, s_byte (0xF0)), "");
    assert_string_equal (detok_add (detok, s_byte (0x9F)), "");
    assert_string_equal (detok_flush (detok), FFFD);
    //  Flushing empties it: the next character starts clean.
    assert_string_equal (detok_flush (detok), "");
    assert_string_equal (detok_add (detok, s_byte (0xA6)), FFFD);
    assert_string_equal (detok_add (detok, 15043), " Hello");
    detok_destroy (&detok);
}

static void
test_long_stream (void **state)
{
    (void) state;
    if (!s_vocab)
        skip ();
    //  Many tokens, every character split into bytes: what comes out, put together,
    //  is the text that went in.
    const char *sentence = "Ünïcødé 日本語 🦙🏳️‍🌈 and ASCII. ";
    size_t sentence_len = strlen (sentence);
    size_t repeats = 2000;
    char *expected = malloc (sentence_len * repeats + 1);
    assert_non_null (expected);
    for (size_t i = 0; i < repeats; i++)
        memcpy (expected + i * sentence_len, sentence, sentence_len);
    expected [sentence_len * repeats] = 0;
    char *text = s_decode_bytes (expected, sentence_len * repeats);
    assert_string_equal (text, expected);
    free (text);
    free (expected);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_ascii_passes_through),
        cmocka_unit_test (test_emoji_over_byte_tokens),
        cmocka_unit_test (test_control_tokens_emit_nothing),
        cmocka_unit_test (test_keep_special_tokens),
        cmocka_unit_test (test_invalid_sequences),
        cmocka_unit_test (test_flush_incomplete),
        cmocka_unit_test (test_long_stream),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
