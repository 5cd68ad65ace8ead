/*  test_stop_strings — the stop-string matcher, piece by piece and against a reference.

    What it holds stop_strings to: the text given out, put together, is the generated
    text cut at the first occurrence of any stop string (the one that starts first; at
    the same start, the shorter), with the stop string when include_stop, whatever the
    piece boundaries; while no stop is found, exactly the longest tail that may still
    start a stop string is held back, no more; what comes out is whole UTF-8 characters.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stop_strings.h"

//  Feeds the pieces one by one and checks what each gives out; expected_out has one
//  string per piece, then the flush's (NULL for "not flushed: stopped before").
static void
s_check_pieces (const char *const *stops, size_t n_stops, bool include_stop,
                const char *const *pieces, const char *const *expected_out,
                size_t n_pieces, const char *expected_flush, size_t stop_after)
{
    stop_strings_t *matcher = stop_strings_new (stops, n_stops, include_stop);
    assert_non_null (matcher);
    for (size_t index = 0; index < n_pieces; index++) {
        bool stopped = false;
        const char *out = stop_strings_add (matcher, pieces [index], &stopped);
        assert_string_equal (out, expected_out [index]);
        assert_int_equal (stopped, index + 1 >= stop_after);
    }
    if (expected_flush)
        assert_string_equal (stop_strings_flush (matcher), expected_flush);
    stop_strings_destroy (&matcher);
    assert_null (matcher);
}

static void
test_no_stops_passes_through (void **state)
{
    (void) state;
    const char *pieces [] = { "Hello", "", " world" };
    const char *expected [] = { "Hello", "", " world" };
    s_check_pieces (NULL, 0, false, pieces, expected, 3, "", 99);

    //  Only empty stop strings: the same as none.
    const char *empty [] = { "", "" };
    s_check_pieces (empty, 2, false, pieces, expected, 3, "", 99);
}

static void
test_stop_across_one_byte_pieces (void **state)
{
    (void) state;
    const char *stops [] = { "STOP" };
    const char *pieces [] = { "H", "i", " ", "S", "T", "O", "P", " ", "x" };
    const char *expected [] = { "H", "i", " ", "", "", "", "", "", "" };
    s_check_pieces (stops, 1, false, pieces, expected, 9, "", 7);

    const char *with_stop [] = { "H", "i", " ", "", "", "", "STOP", "", "" };
    s_check_pieces (stops, 1, true, pieces, with_stop, 9, "", 7);
}

static void
test_held_text_released_when_it_cannot_stop (void **state)
{
    (void) state;
    const char *stops [] = { "abc" };
    const char *pieces [] = { "xa", "b", "d", "ab", "ab", "c!" };
    const char *expected [] = { "x", "", "abd", "", "ab", "" };
    s_check_pieces (stops, 1, false, pieces, expected, 6, "", 6);
}

static void
test_flush_releases_held_text (void **state)
{
    (void) state;
    const char *stops [] = { "STOP" };
    const char *pieces [] = { "Hello S", "T" };
    const char *expected [] = { "Hello ", "" };
    s_check_pieces (stops, 1, false, pieces, expected, 2, "ST", 99);
}

static void
test_overlapping_prefixes (void **state)
{
    (void) state;
    //  "aab" in "aaab": the first 'a' is released once it cannot start "aab".
    const char *aab [] = { "aab" };
    const char *pieces [] = { "a", "a", "a", "b" };
    const char *expected [] = { "", "", "a", "" };
    s_check_pieces (aab, 1, false, pieces, expected, 4, NULL, 4);

    //  "ab" is complete before "abc" can be: it wins.
    const char *ab_abc [] = { "abc", "ab" };
    const char *xabc [] = { "x", "a", "b", "c" };
    const char *cut [] = { "x", "", "", "" };
    s_check_pieces (ab_abc, 2, false, xabc, cut, 4, NULL, 3);
    const char *cut_with_stop [] = { "x", "", "ab", "" };
    s_check_pieces (ab_abc, 2, true, xabc, cut_with_stop, 4, NULL, 3);

    //  Held text that is the start of one stop and holds another inside it.
    const char *abab [] = { "abab", "ba" };
    const char *aba [] = { "a", "b", "a", "c" };
    const char *aba_out [] = { "", "", "", "a" };
    s_check_pieces (abab, 2, false, aba, aba_out, 4, NULL, 4);
}

static void
test_earliest_stop_in_the_text_wins (void **state)
{
    (void) state;
    //  Whole text in one piece: the stops' order in the list does not matter.
    const char *stops [] = { "world", "lo" };
    const char *hello [] = { "Hello world" };
    const char *hel [] = { "Hel" };
    s_check_pieces (stops, 2, false, hello, hel, 1, NULL, 1);
    const char *hello_lo [] = { "Hello" };
    s_check_pieces (stops, 2, true, hello, hello_lo, 1, NULL, 1);

    //  "abcde" starts before "cd": when "cd" is complete, "abcde" is still open, so
    //  nothing is decided until "abcde" completes (it wins) or fails ("cd" wins).
    const char *nested [] = { "cd", "abcde" };
    const char *abcde [] = { "a", "b", "c", "d", "e" };
    const char *abcde_out [] = { "", "", "", "", "abcde" };
    s_check_pieces (nested, 2, true, abcde, abcde_out, 5, NULL, 5);
    const char *abcdx [] = { "a", "b", "c", "d", "x" };
    const char *abcdx_out [] = { "", "", "", "", "abcd" };
    s_check_pieces (nested, 2, true, abcdx, abcdx_out, 5, NULL, 5);
    const char *abcdx_cut [] = { "", "", "", "", "ab" };
    s_check_pieces (nested, 2, false, abcdx, abcdx_cut, 5, NULL, 5);

    //  The generation ends while the longer stop is still open: the flush cuts the
    //  text at the shorter one.
    const char *open_at_end [] = { "ba日ba", "a" };
    const char *ba [] = { "b", "a" };
    const char *ba_out [] = { "", "" };
    s_check_pieces (open_at_end, 2, false, ba, ba_out, 2, "b", 99);
    //  With include_stop, the flush gives the stop string too.
    s_check_pieces (open_at_end, 2, true, ba, ba_out, 2, "ba", 99);
}

static void
test_after_a_stop_everything_is_discarded (void **state)
{
    (void) state;
    const char *stops [] = { "\n\n" };
    stop_strings_t *matcher = stop_strings_new (stops, 1, false);
    assert_non_null (matcher);
    bool stopped = false;
    assert_string_equal (stop_strings_add (matcher, "one\n", &stopped), "one");
    assert_false (stopped);
    assert_string_equal (stop_strings_add (matcher, "\ntwo", &stopped), "");
    assert_true (stopped);
    stopped = false;
    assert_string_equal (stop_strings_add (matcher, "three", &stopped), "");
    assert_true (stopped);
    assert_string_equal (stop_strings_flush (matcher), "");
    stop_strings_destroy (&matcher);
}

static void
test_stop_strings_are_copied (void **state)
{
    (void) state;
    char stop [8];
    strcpy (stop, "end");
    const char *stops [] = { stop };
    stop_strings_t *matcher = stop_strings_new (stops, 1, false);
    assert_non_null (matcher);
    strcpy (stop, "zzz");
    bool stopped = false;
    assert_string_equal (stop_strings_add (matcher, "the end", &stopped), "the ");
    assert_true (stopped);
    stop_strings_destroy (&matcher);
}

static void
test_utf8 (void **state)
{
    (void) state;
    const char *stops [] = { "日本", "é" };
    const char *pieces [] = { "こ", "ん", "に", "日", "々", "è", "日", "本", "語" };
    const char *expected [] = { "こ", "ん", "に", "", "日々", "è", "", "", "" };
    s_check_pieces (stops, 2, false, pieces, expected, 9, NULL, 8);
}

//  ---------------------------------------------------------------------------------
//  Fuzz against a reference.

static uint64_t
s_next_random (uint64_t *state)
{
    //  xorshift64*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 0x2545F4914F6CDD1DULL;
}

static size_t
s_random_below (uint64_t *state, size_t bound)
{
    return (size_t) (s_next_random (state) % bound);
}

//  Is the text whole, well-formed UTF-8 characters?
static bool
s_is_whole_utf8 (const char *text, size_t length)
{
    size_t index = 0;
    while (index < length) {
        unsigned char lead = (unsigned char) text [index];
        size_t count = lead < 0x80? 1: lead >= 0xF0? 4: lead >= 0xE0? 3: lead >= 0xC2? 2: 0;
        if (count == 0 || index + count > length)
            return false;
        for (size_t next = 1; next < count; next++)
            if (((unsigned char) text [index + next] & 0xC0) != 0x80)
                return false;
        index += count;
    }
    return true;
}

//  Where the first stop string occurs in text (length if none) and which one.
static size_t
s_reference_first_stop (const char *text, size_t length, char stops [][32],
                        size_t n_stops, size_t *stop_length)
{
    for (size_t position = 0; position < length; position++) {
        size_t shortest = 0;
        for (size_t index = 0; index < n_stops; index++) {
            size_t this_length = strlen (stops [index]);
            if (this_length == 0 || this_length > length - position)
                continue;
            if (memcmp (text + position, stops [index], this_length) == 0
            &&  (shortest == 0 || this_length < shortest))
                shortest = this_length;
        }
        if (shortest > 0) {
            *stop_length = shortest;
            return position;
        }
    }
    *stop_length = 0;
    return length;
}

//  The longest tail of text that is a proper start of a stop string.
static size_t
s_reference_held (const char *text, size_t length, char stops [][32], size_t n_stops)
{
    for (size_t position = 0; position < length; position++) {
        size_t tail = length - position;
        for (size_t index = 0; index < n_stops; index++) {
            size_t this_length = strlen (stops [index]);
            if (tail < this_length && memcmp (text + position, stops [index], tail) == 0)
                return tail;
        }
    }
    return 0;
}

static void
test_fuzz_against_reference (void **state)
{
    (void) state;
    const char *alphabet [] = { "a", "b", "c", "a", "b", " ", "é", "日", "🦙" };
    size_t alphabet_size = sizeof alphabet / sizeof alphabet [0];
    uint64_t random = 0x5EED5EED12345678ULL;
    size_t rounds_cut = 0;
    size_t rounds_whole = 0;

    for (int round = 0; round < 20000; round++) {
        //  Up to five stop strings of one to five characters (some empty).
        char stops [5][32];
        const char *stop_list [5];
        size_t n_stops = 1 + s_random_below (&random, 5);
        for (size_t index = 0; index < n_stops; index++) {
            size_t characters = s_random_below (&random, 6);
            if (round % 3)
                characters = characters? characters: 1;
            stops [index][0] = 0;
            for (size_t at = 0; at < characters; at++)
                strcat (stops [index], alphabet [s_random_below (&random, alphabet_size)]);
            stop_list [index] = stops [index];
        }
        //  A text of up to 80 characters, remembered with where each character starts.
        char text [512];
        size_t starts [100];
        size_t characters = s_random_below (&random, 81);
        size_t length = 0;
        for (size_t at = 0; at < characters; at++) {
            const char *character = alphabet [s_random_below (&random, alphabet_size)];
            starts [at] = length;
            memcpy (text + length, character, strlen (character));
            length += strlen (character);
        }
        starts [characters] = length;
        text [length] = 0;
        bool include_stop = s_random_below (&random, 2) == 1;

        size_t stop_length;
        size_t cut = s_reference_first_stop (text, length, stops, n_stops, &stop_length);
        char expected [512];
        size_t expected_length = cut + (include_stop? stop_length: 0);
        memcpy (expected, text, expected_length);
        expected [expected_length] = 0;

        stop_strings_t *matcher = stop_strings_new (stop_list, n_stops, include_stop);
        assert_non_null (matcher);
        char got [600];
        size_t got_length = 0;
        bool stopped = false;
        size_t at = 0;
        while (at < characters && !stopped) {
            //  A piece of zero to six whole characters.
            size_t take = s_random_below (&random, 7);
            if (take > characters - at)
                take = characters - at;
            char piece [64];
            size_t piece_length = starts [at + take] - starts [at];
            memcpy (piece, text + starts [at], piece_length);
            piece [piece_length] = 0;
            at += take;

            const char *out = stop_strings_add (matcher, piece, &stopped);
            size_t out_length = strlen (out);
            assert_true (s_is_whole_utf8 (out, out_length));
            assert_true (got_length + out_length < sizeof got);
            memcpy (got + got_length, out, out_length);
            got_length += out_length;
            if (!stopped) {
                //  Exactly the necessary tail is held back.
                size_t so_far = starts [at];
                size_t held = s_reference_held (text, so_far, stops, n_stops);
                assert_int_equal (got_length, so_far - held);
                assert_memory_equal (got, text, got_length);
            }
        }
        if (!stopped) {
            const char *out = stop_strings_flush (matcher);
            size_t out_length = strlen (out);
            assert_true (s_is_whole_utf8 (out, out_length));
            memcpy (got + got_length, out, out_length);
            got_length += out_length;
        }
        got [got_length] = 0;
        if (strcmp (got, expected) != 0)
        {
            fprintf (stderr, "round %d: text '%s' got '%s' expected '%s', stops",
                     round, text, got, expected);
            for (size_t index = 0; index < n_stops; index++)
                fprintf (stderr, " '%s'", stops [index]);
            fprintf (stderr, " include %d\n", include_stop);
        }
        assert_string_equal (got, expected);
        //  A stop string found by add stops the generation; one that was still
        //  waiting on a longer, earlier one when the generation ended is found by
        //  the flush (the text is cut all the same).
        if (stopped)
            assert_true (cut < length);
        if (cut < length)
            rounds_cut++;
        else
            rounds_whole++;
        stop_strings_destroy (&matcher);
    }
    //  Both kinds of text were tried, many times.
    assert_true (rounds_cut > 2000);
    assert_true (rounds_whole > 2000);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_no_stops_passes_through),
        cmocka_unit_test (test_stop_across_one_byte_pieces),
        cmocka_unit_test (test_held_text_released_when_it_cannot_stop),
        cmocka_unit_test (test_flush_releases_held_text),
        cmocka_unit_test (test_overlapping_prefixes),
        cmocka_unit_test (test_earliest_stop_in_the_text_wins),
        cmocka_unit_test (test_after_a_stop_everything_is_discarded),
        cmocka_unit_test (test_stop_strings_are_copied),
        cmocka_unit_test (test_utf8),
        cmocka_unit_test (test_fuzz_against_reference),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
