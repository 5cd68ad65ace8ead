/*  test_tool_parser — the llama3_json and hermes tool-call parsers.

    What it holds tool_parser to:
    - golden outputs: for each text, the content and the calls (name, and arguments as
      Python's json.dumps(args, ensure_ascii=False) writes them; the expected strings
      were made with Python 3), whatever the pieces the text comes in: one piece, one
      character at a time, one byte at a time, and random pieces; each call comes whole
      in one delta with index counting from 0 and an id "call_" + 24 alphanumerics;
    - streaming: content comes out as soon as it cannot be part of a call, and a call as
      soon as it is complete;
    - on random texts made of calls, prose, tags and whitespace, every way of cutting
      the text into pieces gives the same result.
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

#include "tool_parser.h"

#define TEST_SEED 0x1234ABCDULL

//  What a whole generation gave out, merged as a non-streamed answer would be.
typedef struct {
    char *content;
    size_t content_size;
    json_t *calls;                  //  the deltas, in order
} merged_t;

static void
s_merged_init (merged_t *merged)
{
    merged->content = (char *) calloc (1, 1);
    merged->content_size = 0;
    merged->calls = json_array ();
    assert_non_null (merged->content);
    assert_non_null (merged->calls);
}

static void
s_merged_free (merged_t *merged)
{
    free (merged->content);
    json_decref (merged->calls);
}

//  Adds one output; checks that its deltas are whole calls, in order.
static void
s_merge (merged_t *merged, tool_parser_output_t output)
{
    assert_non_null (output.content);
    size_t length = strlen (output.content);
    merged->content = (char *) realloc (merged->content, merged->content_size + length + 1);
    assert_non_null (merged->content);
    memcpy (merged->content + merged->content_size, output.content, length + 1);
    merged->content_size += length;
    if (!output.tool_calls)
        return;
    json_error_t error;
    json_t *deltas = json_loads (output.tool_calls, 0, &error);
    assert_true (json_is_array (deltas));
    assert_true (json_array_size (deltas) > 0);
    for (size_t index = 0; index < json_array_size (deltas); index++) {
        json_t *delta = json_array_get (deltas, index);
        assert_int_equal (json_integer_value (json_object_get (delta, "index")),
                          json_array_size (merged->calls));
        const char *id = json_string_value (json_object_get (delta, "id"));
        assert_non_null (id);
        assert_int_equal (strlen (id), 5 + 24);
        assert_memory_equal (id, "call_", 5);
        for (size_t at = 5; at < 29; at++)
            assert_non_null (strchr ("ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "abcdefghijklmnopqrstuvwxyz0123456789", id [at]));
        assert_string_equal (json_string_value (json_object_get (delta, "type")), "function");
        json_t *function = json_object_get (delta, "function");
        assert_true (json_is_string (json_object_get (function, "name")));
        assert_true (json_is_string (json_object_get (function, "arguments")));
        json_array_append (merged->calls, delta);
    }
    json_decref (deltas);
}

//  How a text is cut into pieces.
typedef enum {
    PIECES_WHOLE,                   //  one piece
    PIECES_CHARACTERS,              //  one UTF-8 character per piece
    PIECES_BYTES,                   //  one byte per piece
    PIECES_RANDOM                   //  random cuts between characters
} pieces_t;

static size_t
s_character_length (const char *text)
{
    unsigned char lead = (unsigned char) text [0];
    size_t length = lead < 0x80? 1: lead >= 0xF0? 4: lead >= 0xE0? 3: 2;
    for (size_t at = 1; at < length; at++)
        if (text [at] == 0)
            return at;
    return length;
}

static uint64_t
s_next_random (uint64_t *state)
{
    //  xorshift64*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 0x2545F4914F6CDD1DULL;
}

//  Runs a whole generation through a new parser and merges what it gives out.
static void
s_run (tool_parser_format_t format, const char *text, pieces_t pieces, uint64_t cut_seed,
       merged_t *merged)
{
    s_merged_init (merged);
    tool_parser_t *parser = tool_parser_new (format, TEST_SEED);
    assert_non_null (parser);
    size_t length = strlen (text);
    size_t at = 0;
    char *piece = (char *) malloc (length + 1);
    assert_non_null (piece);
    while (at < length) {
        size_t take = length - at;
        if (pieces == PIECES_CHARACTERS)
            take = s_character_length (text + at);
        else
        if (pieces == PIECES_BYTES)
            take = 1;
        else
        if (pieces == PIECES_RANDOM) {
            size_t characters = (size_t) (s_next_random (&cut_seed) % 8);
            take = 0;
            for (size_t count = 0; count < characters && at + take < length; count++)
                take += s_character_length (text + at + take);
        }
        memcpy (piece, text + at, take);
        piece [take] = 0;
        at += take;
        s_merge (merged, tool_parser_add (parser, piece));
    }
    s_merge (merged, tool_parser_finish (parser));
    //  Nothing more after the end.
    tool_parser_output_t after = tool_parser_add (parser, "more");
    assert_string_equal (after.content, "");
    assert_null (after.tool_calls);
    assert_int_equal (tool_parser_call_count (parser), json_array_size (merged->calls));
    free (piece);
    tool_parser_destroy (&parser);
    assert_null (parser);
}

static void
s_assert_same (merged_t *one, merged_t *other)
{
    assert_string_equal (one->content, other->content);
    char *one_calls = json_dumps (one->calls, JSON_COMPACT);
    char *other_calls = json_dumps (other->calls, JSON_COMPACT);
    assert_string_equal (one_calls, other_calls);
    free (one_calls);
    free (other_calls);
}

typedef struct {
    tool_parser_format_t format;
    const char *text;
    const char *content;            //  expected content
    size_t call_count;
    const char *names [3];
    const char *arguments [3];
} golden_t;

//  Checks one golden case, cut into pieces every way.
static void
s_check_golden (const golden_t *golden)
{
    merged_t whole;
    s_run (golden->format, golden->text, PIECES_WHOLE, 0, &whole);
    if (strcmp (whole.content, golden->content) != 0
    ||  json_array_size (whole.calls) != golden->call_count)
        fprintf (stderr, "text: '%s'\ncontent: '%s'\ncalls: %zu\n", golden->text,
                 whole.content, json_array_size (whole.calls));
    assert_string_equal (whole.content, golden->content);
    assert_int_equal (json_array_size (whole.calls), golden->call_count);
    for (size_t index = 0; index < golden->call_count; index++) {
        json_t *function = json_object_get (json_array_get (whole.calls, index), "function");
        assert_string_equal (json_string_value (json_object_get (function, "name")),
                             golden->names [index]);
        assert_string_equal (json_string_value (json_object_get (function, "arguments")),
                             golden->arguments [index]);
    }
    pieces_t other_ways [] = { PIECES_CHARACTERS, PIECES_BYTES, PIECES_RANDOM,
                               PIECES_RANDOM, PIECES_RANDOM };
    for (size_t way = 0; way < sizeof other_ways / sizeof other_ways [0]; way++) {
        merged_t other;
        s_run (golden->format, golden->text, other_ways [way], 0xC0FFEE + way, &other);
        s_assert_same (&whole, &other);
        s_merged_free (&other);
    }
    s_merged_free (&whole);
}

static void
s_check_goldens (const golden_t *goldens, size_t count)
{
    for (size_t index = 0; index < count; index++)
        s_check_golden (&goldens [index]);
}

//  ---------------------------------------------------------------------------------
//  Golden cases.

#define LLAMA TOOL_PARSER_LLAMA3_JSON
#define HERMES TOOL_PARSER_HERMES

//  Nested objects and arrays, escapes, unicode (also as \u escapes and a surrogate
//  pair), control characters, and numbers as Python writes them back.
#define NESTED_ARGUMENTS_IN \
    "{\"a\":{\"b\":[1,{\"c\":\"d\"}],\"e\":[],\"o\":{}},\"s\":\"He said \\\"hi\\\"\\n\\\\ \\/ " \
    "\\b\\f\\r\",\"u\":\"日本語 \\u00e9 \\ud83e\\udd99 🦙\",\"ctrl\":\"\\u0001\\t\\u007f\\u001F\"," \
    "\"num\":[1E2,-0.0,0.1,1e16,1e-5,1e15,-0,1234567890123456789,2.5e-7,100,3.14159," \
    "1.5e300,5e-324,0.30000000000000004,123e-2,true,false,null]}"
#define NESTED_ARGUMENTS_OUT \
    "{\"a\": {\"b\": [1, {\"c\": \"d\"}], \"e\": [], \"o\": {}}, \"s\": \"He said " \
    "\\\"hi\\\"\\n\\\\ / \\b\\f\\r\", \"u\": \"日本語 é 🦙 🦙\", \"ctrl\": \"\\u0001\\t\x7f" \
    "\\u001f\", \"num\": [100.0, -0.0, 0.1, 1e+16, 1e-05, 1000000000000000.0, 0, " \
    "1234567890123456789, 2.5e-07, 100, 3.14159, 1.5e+300, 5e-324, 0.30000000000000004, " \
    "1.23, true, false, null]}"

#define WEATHER_CALL \
    "{\"name\": \"get_weather\", \"parameters\": {\"location\": \"San Francisco, CA\", " \
    "\"unit\": \"fahrenheit\"}}"
#define WEATHER_ARGUMENTS "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}"
#define TIME_CALL "{\"name\": \"get_time\", \"parameters\": {\"timezone\": \"Europe/Paris\"}}"
#define TIME_ARGUMENTS "{\"timezone\": \"Europe/Paris\"}"

static void
test_llama3_calls (void **state)
{
    (void) state;
    const golden_t goldens [] = {
        //  The toy-chat model's own output.
        { LLAMA, WEATHER_CALL, "", 1, { "get_weather" }, { WEATHER_ARGUMENTS } },
        //  Two calls.
        { LLAMA, WEATHER_CALL "; " TIME_CALL, "", 2, { "get_weather", "get_time" },
          { WEATHER_ARGUMENTS, TIME_ARGUMENTS } },
        { LLAMA, "{\"name\":\"a\",\"parameters\":{}} ;\n {\"name\":\"b\",\"arguments\":{\"x\":1}};"
                 "{\"name\":\"c\",\"parameters\":{\"y\":[]}}", "", 3, { "a", "b", "c" },
          { "{}", "{\"x\": 1}", "{\"y\": []}" } },
        //  The python tag, with and without whitespace after it.
        { LLAMA, "<|python_tag|>" TIME_CALL, "", 1, { "get_time" }, { TIME_ARGUMENTS } },
        { LLAMA, "<|python_tag|>\n " TIME_CALL, "", 1, { "get_time" }, { TIME_ARGUMENTS } },
        //  Leading whitespace.
        { LLAMA, "\n\n  " WEATHER_CALL, "", 1, { "get_weather" }, { WEATHER_ARGUMENTS } },
        //  "arguments" instead of "parameters"; "arguments" wins when both are there.
        { LLAMA, "{\"name\": \"f\", \"arguments\": {\"a\": 1}}", "", 1, { "f" }, { "{\"a\": 1}" } },
        { LLAMA, "{\"parameters\": {\"p\": 1}, \"name\": \"f\", \"arguments\": {\"a\": 2}}", "",
          1, { "f" }, { "{\"a\": 2}" } },
        //  Nested objects and arrays, unicode, escapes, numbers.
        { LLAMA, "{\"name\":\"f\",\"parameters\":" NESTED_ARGUMENTS_IN "}", "", 1, { "f" },
          { NESTED_ARGUMENTS_OUT } },
        //  Braces and separators inside strings, and a unicode name.
        { LLAMA, "{\"name\": \"météo\", \"parameters\": {\"q\": \"a}; {b\"}}", "", 1,
          { "météo" }, { "{\"q\": \"a}; {b\"}" } },
        //  A repeated key: the last value, in the first one's place (as Python's dict).
        { LLAMA, "{\"name\":\"f\",\"parameters\":{\"a\":1,\"b\":2,\"a\":3}}", "", 1, { "f" },
          { "{\"a\": 3, \"b\": 2}" } },
        //  An escaped NUL stays escaped.
        { LLAMA, "{\"name\":\"f\",\"parameters\":{\"a\":\"x\\u0000y\"}}", "", 1, { "f" },
          { "{\"a\": \"x\\u0000y\"}" } },
        //  Whitespace and a ';' after the last call are dropped.
        { LLAMA, TIME_CALL "\n", "", 1, { "get_time" }, { TIME_ARGUMENTS } },
        { LLAMA, TIME_CALL " ;\n", "", 1, { "get_time" }, { TIME_ARGUMENTS } },
        //  Text after the last call is content.
        { LLAMA, TIME_CALL " Done.", " Done.", 1, { "get_time" }, { TIME_ARGUMENTS } },
        { LLAMA, TIME_CALL "; hello", "; hello", 1, { "get_time" }, { TIME_ARGUMENTS } },
        { LLAMA, TIME_CALL " " TIME_CALL, " " TIME_CALL, 1, { "get_time" },
          { TIME_ARGUMENTS } },
        //  A second call that is cut short or not a call: content, the first stands.
        { LLAMA, TIME_CALL "; {\"name\": \"g\", \"parameters\": ",
          "; {\"name\": \"g\", \"parameters\": ", 1, { "get_time" }, { TIME_ARGUMENTS } },
        { LLAMA, TIME_CALL ";{\"foo\": 1} " TIME_CALL, ";{\"foo\": 1} " TIME_CALL, 1,
          { "get_time" }, { TIME_ARGUMENTS } },
    };
    s_check_goldens (goldens, sizeof goldens / sizeof goldens [0]);
}

static void
test_llama3_content (void **state)
{
    (void) state;
    const golden_t goldens [] = {
        { LLAMA, "", "", 0, { NULL }, { NULL } },
        { LLAMA, "The capital of France is Paris.", "The capital of France is Paris.", 0,
          { NULL }, { NULL } },
        { LLAMA, "  \n", "  \n", 0, { NULL }, { NULL } },
        { LLAMA, "\n Hello {\"name\": \"f\", \"parameters\": {}}",
          "\n Hello {\"name\": \"f\", \"parameters\": {}}", 0, { NULL }, { NULL } },
        { LLAMA, "<b>bold</b>", "<b>bold</b>", 0, { NULL }, { NULL } },
        { LLAMA, "<|python", "<|python", 0, { NULL }, { NULL } },
        { LLAMA, "<|python_tag|>print(1)", "<|python_tag|>print(1)", 0, { NULL }, { NULL } },
        //  Prose that starts with '{' but is not JSON.
        { LLAMA, "{Hello} world", "{Hello} world", 0, { NULL }, { NULL } },
        { LLAMA, "{ not json", "{ not json", 0, { NULL }, { NULL } },
        { LLAMA, " {\"a\": 1} and {\"b\"", " {\"a\": 1} and {\"b\"", 0, { NULL }, { NULL } },
        //  A call cut short by the end of generation.
        { LLAMA, "{\"name\": \"get_weather\", \"parameters\": {\"location\": \"San",
          "{\"name\": \"get_weather\", \"parameters\": {\"location\": \"San", 0,
          { NULL }, { NULL } },
        { LLAMA, "<|python_tag|>{\"name\": \"f\"", "<|python_tag|>{\"name\": \"f\"", 0,
          { NULL }, { NULL } },
        //  JSON that is not a call.
        { LLAMA, "{\"foo\": 1}", "{\"foo\": 1}", 0, { NULL }, { NULL } },
        { LLAMA, "{\"name\": 1, \"parameters\": {}}", "{\"name\": 1, \"parameters\": {}}", 0,
          { NULL }, { NULL } },
        { LLAMA, "{\"name\": \"f\"}", "{\"name\": \"f\"}", 0, { NULL }, { NULL } },
        { LLAMA, "{\"name\": \"f\", \"parameters\": [1]}", "{\"name\": \"f\", \"parameters\": [1]}",
          0, { NULL }, { NULL } },
        //  Syntax errors found at once or at the end.
        { LLAMA, "{\"name\": \"f\", \"parameters\": {\"a\": 01}}",
          "{\"name\": \"f\", \"parameters\": {\"a\": 01}}", 0, { NULL }, { NULL } },
        { LLAMA, "{\"name\": \"f\", \"parameters\": {\"a\": tru}}",
          "{\"name\": \"f\", \"parameters\": {\"a\": tru}}", 0, { NULL }, { NULL } },
        { LLAMA, "{\"name\": \"f\", \"parameters\": {\"a\": \"\\x\"}}",
          "{\"name\": \"f\", \"parameters\": {\"a\": \"\\x\"}}", 0, { NULL }, { NULL } },
        { LLAMA, "{\"name\": \"f\", \"parameters\": {\"a\": [1, 2}}",
          "{\"name\": \"f\", \"parameters\": {\"a\": [1, 2}}", 0, { NULL }, { NULL } },
        { LLAMA, "{\"name\": \"f\", \"parameters\": {\"a\": \"tab\there\"}}",
          "{\"name\": \"f\", \"parameters\": {\"a\": \"tab\there\"}}", 0, { NULL }, { NULL } },
        //  What Python would take but jansson does not (documented): a 30-digit integer.
        { LLAMA, "{\"name\":\"f\",\"parameters\":{\"n\":123456789012345678901234567890}}",
          "{\"name\":\"f\",\"parameters\":{\"n\":123456789012345678901234567890}}", 0,
          { NULL }, { NULL } },
        //  ... and a lone surrogate.
        { LLAMA, "{\"name\":\"f\",\"parameters\":{\"a\":\"\\ud800\"}}",
          "{\"name\":\"f\",\"parameters\":{\"a\":\"\\ud800\"}}", 0, { NULL }, { NULL } },
    };
    s_check_goldens (goldens, sizeof goldens / sizeof goldens [0]);
}

#define HERMES_WEATHER \
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\", " \
    "\"unit\": \"celsius\"}}\n</tool_call>"
#define HERMES_WEATHER_ARGUMENTS "{\"location\": \"Paris\", \"unit\": \"celsius\"}"
#define HERMES_TIME "<tool_call>{\"name\":\"get_time\",\"arguments\":{}}</tool_call>"
#define HERMES_INVALID "<tool_call>\n{\"name\": \"f\", \"arguments\": {bad}}\n</tool_call>"

static void
test_hermes (void **state)
{
    (void) state;
    const golden_t goldens [] = {
        { HERMES, HERMES_WEATHER, "", 1, { "get_weather" }, { HERMES_WEATHER_ARGUMENTS } },
        //  Two calls, with whitespace between and around them (dropped).
        { HERMES, "\n" HERMES_WEATHER "\n" HERMES_TIME "\n\n", "", 2,
          { "get_weather", "get_time" }, { HERMES_WEATHER_ARGUMENTS, "{}" } },
        //  Text before, between and after calls is content.
        { HERMES, "Let me check the weather.\n" HERMES_WEATHER,
          "Let me check the weather.\n", 1, { "get_weather" }, { HERMES_WEATHER_ARGUMENTS } },
        { HERMES, HERMES_TIME " and " HERMES_TIME "\nDone.", " and \nDone.", 2,
          { "get_time", "get_time" }, { "{}", "{}" } },
        //  Nested arguments.
        { HERMES, "<tool_call>\n{\"name\": \"f\", \"arguments\": " NESTED_ARGUMENTS_IN
                  "}\n</tool_call>", "", 1, { "f" }, { NESTED_ARGUMENTS_OUT } },
        //  Invalid JSON inside the tags: the block is content; other calls stand.
        { HERMES, HERMES_INVALID, HERMES_INVALID, 0, { NULL }, { NULL } },
        { HERMES, HERMES_INVALID "\n" HERMES_TIME, HERMES_INVALID "\n", 1, { "get_time" },
          { "{}" } },
        { HERMES, HERMES_TIME "\n" HERMES_INVALID, "\n" HERMES_INVALID, 1, { "get_time" },
          { "{}" } },
        //  "parameters" is not hermes (vLLM requires "arguments").
        { HERMES, "<tool_call>{\"name\": \"f\", \"parameters\": {}}</tool_call>",
          "<tool_call>{\"name\": \"f\", \"parameters\": {}}</tool_call>", 0,
          { NULL }, { NULL } },
        //  No closing tag at the end: a call if the rest is one, content if not.
        { HERMES, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n", "", 1,
          { "get_time" }, { "{}" } },
        { HERMES, "Hi <tool_call>\n{\"name\": \"get_time\", \"argu",
          "Hi <tool_call>\n{\"name\": \"get_time\", \"argu", 0, { NULL }, { NULL } },
        //  Prose, tags that are not ours, a tag cut short at the end.
        { HERMES, "Just text.", "Just text.", 0, { NULL }, { NULL } },
        { HERMES, "\n", "\n", 0, { NULL }, { NULL } },
        { HERMES, "a < b, <tool> and </tool_call> <<tool_call", "a < b, <tool> and "
                  "</tool_call> <<tool_call", 0, { NULL }, { NULL } },
        { HERMES, "Hello <tool", "Hello <tool", 0, { NULL }, { NULL } },
        //  The first "</tool_call>" ends the call, even inside a JSON string (as vLLM).
        { HERMES, "<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": \"</tool_call>\"}}"
                  "</tool_call>", "<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": \""
                  "</tool_call>\"}}</tool_call>", 0, { NULL }, { NULL } },
    };
    s_check_goldens (goldens, sizeof goldens / sizeof goldens [0]);
}

//  ---------------------------------------------------------------------------------
//  Streaming: what each piece gives out.

typedef struct {
    const char *piece;              //  NULL: finish
    const char *content;
    int calls;                      //  how many calls this piece gives out
} step_t;

static void
s_check_steps (tool_parser_format_t format, const step_t *steps, size_t count)
{
    tool_parser_t *parser = tool_parser_new (format, TEST_SEED);
    assert_non_null (parser);
    for (size_t index = 0; index < count; index++) {
        tool_parser_output_t output = steps [index].piece
                                    ? tool_parser_add (parser, steps [index].piece)
                                    : tool_parser_finish (parser);
        assert_string_equal (output.content, steps [index].content);
        if (steps [index].calls == 0)
            assert_null (output.tool_calls);
        else {
            json_t *deltas = json_loads (output.tool_calls, 0, NULL);
            assert_int_equal (json_array_size (deltas), steps [index].calls);
            json_decref (deltas);
        }
    }
    tool_parser_destroy (&parser);
}

static void
test_streaming_llama3 (void **state)
{
    (void) state;
    const step_t prose [] = {
        { "The", "The", 0 }, { " capital", " capital", 0 }, { " is", " is", 0 },
        { NULL, "", 0 } };
    s_check_steps (LLAMA, prose, 4);

    const step_t leading_space [] = {
        { "\n", "", 0 }, { " ", "", 0 }, { "Hi", "\n Hi", 0 }, { NULL, "", 0 } };
    s_check_steps (LLAMA, leading_space, 4);

    const step_t calls [] = {
        { "{\"name\": \"f\", ", "", 0 }, { "\"parameters\": {}", "", 0 },
        { "}", "", 1 }, { "; ", "", 0 }, { "{\"name\": \"g\", \"parameters\": {}}", "", 1 },
        { " ", "", 0 }, { "Done", " Done", 0 }, { ".", ".", 0 }, { NULL, "", 0 } };
    s_check_steps (LLAMA, calls, 9);

    const step_t not_json [] = {
        { "{", "", 0 }, { "Hello", "{Hello", 0 }, { "}", "}", 0 }, { NULL, "", 0 } };
    s_check_steps (LLAMA, not_json, 4);

    const step_t tag [] = {
        { "<|python", "", 0 }, { "_tag|>", "", 0 }, { "{\"name\": \"f\", \"parameters\": {}}",
          "", 1 }, { NULL, "", 0 } };
    s_check_steps (LLAMA, tag, 4);

    const step_t cut_short [] = {
        { "{\"name\": \"f\", ", "", 0 }, { NULL, "{\"name\": \"f\", ", 0 } };
    s_check_steps (LLAMA, cut_short, 2);

    const step_t two_in_one [] = {
        { "{\"name\": \"f\", \"parameters\": {}};{\"name\": \"g\", \"parameters\": {}} ok", " ok",
          2 }, { NULL, "", 0 } };
    s_check_steps (LLAMA, two_in_one, 2);
}

static void
test_streaming_hermes (void **state)
{
    (void) state;
    const step_t steps [] = {
        { "Let", "Let", 0 }, { " me", " me", 0 }, { " <tool", " ", 0 }, { "_call>", "", 0 },
        { "{\"name\": \"f\", \"arguments\": {}}", "", 0 }, { "</tool_", "", 0 },
        { "call>", "", 1 }, { "\n", "", 0 }, { "Done", "\nDone", 0 }, { " <", " ", 0 },
        { NULL, "<", 0 } };
    s_check_steps (HERMES, steps, 11);

    const step_t whitespace [] = {
        { "\n", "", 0 }, { "<tool_call>", "", 0 },
        { "{\"name\": \"f\", \"arguments\": {}}</tool_call>", "", 1 }, { "\n", "", 0 },
        { NULL, "", 0 } };
    s_check_steps (HERMES, whitespace, 5);

    const step_t invalid [] = {
        { "<tool_call>", "", 0 }, { "{oops}", "", 0 },
        { "</tool_call>", "<tool_call>{oops}</tool_call>", 0 }, { "\n", "\n", 0 },
        { NULL, "", 0 } };
    s_check_steps (HERMES, invalid, 5);

    const step_t no_call [] = { { " ", "", 0 }, { NULL, " ", 0 } };
    s_check_steps (HERMES, no_call, 2);
}

//  ---------------------------------------------------------------------------------
//  Random texts: every way of cutting them gives the same result.

static void
test_random_texts_any_pieces (void **state)
{
    (void) state;
    const char *llama_parts [] = {
        WEATHER_CALL, TIME_CALL, "{\"name\": \"f\", \"arguments\": {\"a\": [1, {\"b\": \"é\"}]}}",
        ";", "; ", " ", "\n", "<|python_tag|>", "<|python", "{", "}", "{\"name\": \"f\"",
        "Hello", "日本", "\"", "[1, 2]", "{\"foo\": 1}", "<", "ab;" };
    const char *hermes_parts [] = {
        HERMES_WEATHER, HERMES_TIME, HERMES_INVALID, "<tool_call>", "</tool_call>",
        "<tool_", "</tool", "{\"name\": \"f\", \"arguments\": {}}", " ", "\n", "Hello",
        "日本", "<", "<tool>", "{" };
    uint64_t random = 0xFEEDFACE;
    for (int round = 0; round < 3000; round++) {
        tool_parser_format_t format = round % 2? LLAMA: HERMES;
        const char **parts = format == LLAMA? llama_parts: hermes_parts;
        size_t part_count = format == LLAMA? sizeof llama_parts / sizeof llama_parts [0]
                                           : sizeof hermes_parts / sizeof hermes_parts [0];
        char text [4096] = "";
        size_t count = (size_t) (s_next_random (&random) % 8);
        for (size_t index = 0; index < count; index++)
            strcat (text, parts [s_next_random (&random) % part_count]);

        merged_t whole;
        s_run (format, text, PIECES_WHOLE, 0, &whole);
        //  Nothing the model wrote is lost: with no calls, content is the text.
        if (json_array_size (whole.calls) == 0)
            assert_string_equal (whole.content, text);
        pieces_t ways [] = { PIECES_CHARACTERS, PIECES_BYTES, PIECES_RANDOM };
        for (size_t way = 0; way < 3; way++) {
            merged_t other;
            s_run (format, text, ways [way], s_next_random (&random), &other);
            s_assert_same (&whole, &other);
            s_merged_free (&other);
        }
        s_merged_free (&whole);
    }
}

//  ---------------------------------------------------------------------------------

static char *
s_first_id (uint64_t seed, tool_parser_format_t format, const char *text, size_t which)
{
    tool_parser_t *parser = tool_parser_new (format, seed);
    assert_non_null (parser);
    tool_parser_output_t output = tool_parser_add (parser, text);
    assert_non_null (output.tool_calls);
    json_t *deltas = json_loads (output.tool_calls, 0, NULL);
    char *id = strdup (json_string_value (json_object_get (json_array_get (deltas, which),
                                                           "id")));
    json_decref (deltas);
    tool_parser_destroy (&parser);
    return id;
}

static void
test_call_ids (void **state)
{
    (void) state;
    const char *two = TIME_CALL ";" TIME_CALL;
    char *first = s_first_id (42, LLAMA, two, 0);
    char *again = s_first_id (42, LLAMA, two, 0);
    char *second = s_first_id (42, LLAMA, two, 1);
    char *other_request = s_first_id (43, LLAMA, two, 0);
    char *hermes = s_first_id (42, HERMES, HERMES_TIME, 0);
    assert_string_equal (first, again);
    assert_string_not_equal (first, second);
    assert_string_not_equal (first, other_request);
    assert_string_equal (first, hermes);        //  same request seed, same index
    free (first);
    free (again);
    free (second);
    free (other_request);
    free (hermes);
}

static void
test_format_names (void **state)
{
    (void) state;
    tool_parser_format_t format = TOOL_PARSER_HERMES;
    assert_int_equal (tool_parser_format_from_name ("llama3_json", &format), 0);
    assert_int_equal (format, TOOL_PARSER_LLAMA3_JSON);
    assert_int_equal (tool_parser_format_from_name ("hermes", &format), 0);
    assert_int_equal (format, TOOL_PARSER_HERMES);
    assert_int_equal (tool_parser_format_from_name ("mistral", &format), -1);
    assert_int_equal (tool_parser_format_from_name ("", &format), -1);
    assert_int_equal (tool_parser_format_from_name (NULL, &format), -1);
    assert_null (tool_parser_new ((tool_parser_format_t) 7, 1));
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_llama3_calls),
        cmocka_unit_test (test_llama3_content),
        cmocka_unit_test (test_hermes),
        cmocka_unit_test (test_streaming_llama3),
        cmocka_unit_test (test_streaming_hermes),
        cmocka_unit_test (test_random_texts_any_pieces),
        cmocka_unit_test (test_call_ids),
        cmocka_unit_test (test_format_names),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
