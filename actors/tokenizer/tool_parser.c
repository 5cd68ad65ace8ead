/*  tool_parser — finds tool calls in generated text, as vLLM's tool parsers do.
    See tool_parser.h.

    The text is read one byte at a time by a small state machine per format. Text that
    may still be (part of) a call is kept in `held`; when it turns out to be a call, the
    call is given out and the held text is dropped; when it turns out not to be one, the
    held text is given out as content. A call's JSON is read with jansson, and its
    arguments are written back the way Python's json.dumps(args, ensure_ascii=False)
    writes them (", " and ": " separators, non-ASCII as is, keys in their order, floats
    as Python's repr), because that is what vLLM gives out.

    llama3_json (vLLM's Llama3JsonToolParser)
      The output is a call when, after optional whitespace, it begins with "{" or with
      "<|python_tag|>" (then optional whitespace and "{"). Anything else: all content,
      given out at once. Each object is followed by the end, or by ";" (whitespace
      around it allowed) and the next object. An object is read by an incremental JSON
      scanner, so prose that begins with "{" but cannot be JSON ("{Hello") is content as
      soon as that is certain. A call is an object with "name" (a string) and
      "arguments" or "parameters" (an object; "arguments" wins when both are there).
      Choices where vLLM is silent or disagrees with itself:
      - Leading whitespace is allowed (vLLM's streaming path needs "{" or the tag at
        the very start, its non-streamed path searches anywhere); it is dropped when a
        call follows.
      - After the last call, whitespace and a trailing ";" are dropped; any other text
        is content, with the whitespace before it: "{...} Done." gives a call and
        " Done.". vLLM drops it (content is None when calls are found); we keep it.
      - An object that is complete but not a valid call, or text after ";" that is not
        an object, makes that object (with the ";" and whitespace before it) and all
        that follows content; the calls before it stand.
      - An object still open at the end (generation stopped mid-JSON) is content.

    hermes (vLLM's Hermes2ProToolParser)
      <tool_call>JSON</tool_call>, any number. The JSON (whitespace around it allowed)
      must be an object with "name" (a string) and "arguments" (an object), as vLLM
      requires. Text outside the tags is content and streams out at once, except a tail
      that may be the start of "<tool_call>", which is held until it is decided.
      Choices where vLLM is silent or disagrees with itself:
      - Text between and after calls is content, as vLLM streams it (its non-streamed
        path keeps only the text before the first call). Whitespace alone before a
        call (from the start or the previous call) or after the last call is dropped,
        so "\n<tool_call>..</tool_call>\n" has no content; a stretch with any other
        text is given out whole, and whitespace before a block that turns out not to
        be a call goes out with it.
      - A block whose JSON is not a valid call is given out as content, tags included,
        when its "</tool_call>" arrives; calls before and after it stand (vLLM's
        non-streamed path would turn the whole output into content).
      - A "<tool_call>" without its "</tool_call>" at the end is a call when what
        follows the tag is a valid call (as vLLM's non-streamed regex allows), content
        otherwise.

    Differences from Python's json that remain: integers beyond 64 bits, numbers that
    overflow a double, lone UTF-16 surrogates in \u escapes and NaN/Infinity make the
    JSON invalid here (so the text is content), where Python would accept them.

    Ids: "call_" + 24 characters of [A-Za-z0-9] drawn from splitmix64 seeded with the
    request's id_seed and the call's index: the same request gives the same ids, two
    requests (with different seeds) different ones.
*/
#include "tool_parser.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_python_tag [] = "<|python_tag|>";
static const char s_call_open [] = "<tool_call>";
static const char s_call_close [] = "</tool_call>";

//  jansson's own nesting limit, so that what the scanner takes jansson takes too.
#define SCAN_MAX_DEPTH 2048

//  ---------------------------------------------------------------------------------
//  A growable, NUL-terminated byte buffer.

typedef struct {
    char *data;
    size_t size;
    size_t capacity;
} buffer_t;

static int
s_buffer_append (buffer_t *buffer, const char *bytes, size_t length)
{
    if (buffer->size + length + 1 > buffer->capacity) {
        size_t capacity = (buffer->size + length + 1) * 2;
        if (capacity < 64)
            capacity = 64;
        char *grown = (char *) realloc (buffer->data, capacity);
        if (!grown)
            return -1;
        buffer->data = grown;
        buffer->capacity = capacity;
    }
    if (length > 0)
        memcpy (buffer->data + buffer->size, bytes, length);
    buffer->size += length;
    buffer->data [buffer->size] = 0;
    return 0;
}

static int
s_buffer_append_string (buffer_t *buffer, const char *string)
{
    return s_buffer_append (buffer, string, strlen (string));
}

static void
s_buffer_clear (buffer_t *buffer)
{
    buffer->size = 0;
    if (buffer->data)
        buffer->data [0] = 0;
}

static void
s_buffer_free (buffer_t *buffer)
{
    free (buffer->data);
    buffer->data = NULL;
    buffer->size = 0;
    buffer->capacity = 0;
}

//  ---------------------------------------------------------------------------------
//  An incremental JSON scanner: told one byte at a time, it says whether the bytes so
//  far are the start of a JSON object, a whole one, or can never be one. It checks the
//  syntax jansson accepts; it builds nothing.

typedef enum {
    SCAN_EXPECT_VALUE,              //  after ':', or after ',' in an array
    SCAN_EXPECT_VALUE_OR_CLOSE,     //  just after '['
    SCAN_EXPECT_KEY,                //  after ',' in an object
    SCAN_EXPECT_KEY_OR_CLOSE,       //  just after '{'
    SCAN_EXPECT_COLON,              //  after a key
    SCAN_EXPECT_COMMA_OR_CLOSE,     //  after a value inside an object or array
    SCAN_IN_STRING,
    SCAN_IN_ESCAPE,                 //  after a backslash
    SCAN_IN_UNICODE,                //  in the four hex digits of \uXXXX
    SCAN_IN_NUMBER,
    SCAN_IN_LITERAL,                //  in true, false or null
    SCAN_COMPLETE,                  //  the object is whole
    SCAN_INVALID                    //  this can never be JSON
} scan_state_t;

//  Where a number is: -12.5e+3 goes MINUS, INTEGER, DOT, FRACTION, E, E_SIGN, EXPONENT.
typedef enum {
    NUMBER_MINUS,
    NUMBER_ZERO,
    NUMBER_INTEGER,
    NUMBER_DOT,
    NUMBER_FRACTION,
    NUMBER_E,
    NUMBER_E_SIGN,
    NUMBER_EXPONENT
} number_part_t;

typedef struct {
    scan_state_t state;
    char containers [SCAN_MAX_DEPTH];   //  '{' or '[', outermost first
    size_t depth;
    bool string_is_key;
    int hex_digits_left;
    number_part_t number_part;
    const char *literal;            //  "true", "false" or "null"
    size_t literal_matched;
} json_scan_t;

static bool
s_is_space (unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool
s_is_digit (unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool
s_is_hex_digit (unsigned char c)
{
    return s_is_digit (c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

//  Does the text hold anything besides whitespace?
static bool
s_has_text (const char *text, size_t length)
{
    for (size_t index = 0; index < length; index++)
        if (!s_is_space ((unsigned char) text [index]))
            return true;
    return false;
}

//  Starts a scan at an object's opening '{'.
static void
s_scan_start (json_scan_t *scan)
{
    scan->state = SCAN_EXPECT_KEY_OR_CLOSE;
    scan->containers [0] = '{';
    scan->depth = 1;
}

static void
s_scan_push (json_scan_t *scan, char container)
{
    if (scan->depth == SCAN_MAX_DEPTH) {
        scan->state = SCAN_INVALID;
        return;
    }
    scan->containers [scan->depth++] = container;
    scan->state = container == '{'? SCAN_EXPECT_KEY_OR_CLOSE: SCAN_EXPECT_VALUE_OR_CLOSE;
}

//  A value has ended: the object is whole, or its container goes on.
static void
s_scan_value_done (json_scan_t *scan)
{
    scan->state = scan->depth == 0? SCAN_COMPLETE: SCAN_EXPECT_COMMA_OR_CLOSE;
}

static void
s_scan_close (json_scan_t *scan, unsigned char c)
{
    char open = c == '}'? '{': '[';
    if (scan->depth == 0 || scan->containers [scan->depth - 1] != open) {
        scan->state = SCAN_INVALID;
        return;
    }
    scan->depth--;
    s_scan_value_done (scan);
}

static void
s_scan_start_literal (json_scan_t *scan, const char *literal)
{
    scan->state = SCAN_IN_LITERAL;
    scan->literal = literal;
    scan->literal_matched = 1;
}

static void
s_scan_start_number (json_scan_t *scan, number_part_t part)
{
    scan->state = SCAN_IN_NUMBER;
    scan->number_part = part;
}

static void
s_scan_value_start (json_scan_t *scan, unsigned char c)
{
    if (c == '{' || c == '[')
        s_scan_push (scan, (char) c);
    else
    if (c == '"') {
        scan->state = SCAN_IN_STRING;
        scan->string_is_key = false;
    }
    else
    if (c == '-')
        s_scan_start_number (scan, NUMBER_MINUS);
    else
    if (c == '0')
        s_scan_start_number (scan, NUMBER_ZERO);
    else
    if (s_is_digit (c))
        s_scan_start_number (scan, NUMBER_INTEGER);
    else
    if (c == 't')
        s_scan_start_literal (scan, "true");
    else
    if (c == 'f')
        s_scan_start_literal (scan, "false");
    else
    if (c == 'n')
        s_scan_start_literal (scan, "null");
    else
        scan->state = SCAN_INVALID;
}

static void s_scan_byte (json_scan_t *scan, unsigned char c);

//  A byte inside a number: it goes on, or the number ends (if it may end here) and the
//  byte is read again as what follows it.
static void
s_scan_number (json_scan_t *scan, unsigned char c)
{
    bool digit = s_is_digit (c);
    bool exponent_mark = c == 'e' || c == 'E';
    bool may_end = false;
    switch (scan->number_part) {
        case NUMBER_MINUS:
            if (c == '0')
                scan->number_part = NUMBER_ZERO;
            else
            if (digit)
                scan->number_part = NUMBER_INTEGER;
            else
                scan->state = SCAN_INVALID;
            return;
        case NUMBER_ZERO:
            if (c == '.')
                scan->number_part = NUMBER_DOT;
            else
            if (exponent_mark)
                scan->number_part = NUMBER_E;
            else
                may_end = true;
            break;
        case NUMBER_INTEGER:
            if (c == '.')
                scan->number_part = NUMBER_DOT;
            else
            if (exponent_mark)
                scan->number_part = NUMBER_E;
            else
            if (!digit)
                may_end = true;
            break;
        case NUMBER_DOT:
            if (digit)
                scan->number_part = NUMBER_FRACTION;
            else
                scan->state = SCAN_INVALID;
            return;
        case NUMBER_FRACTION:
            if (exponent_mark)
                scan->number_part = NUMBER_E;
            else
            if (!digit)
                may_end = true;
            break;
        case NUMBER_E:
            if (c == '+' || c == '-')
                scan->number_part = NUMBER_E_SIGN;
            else
            if (digit)
                scan->number_part = NUMBER_EXPONENT;
            else
                scan->state = SCAN_INVALID;
            return;
        case NUMBER_E_SIGN:
            if (digit)
                scan->number_part = NUMBER_EXPONENT;
            else
                scan->state = SCAN_INVALID;
            return;
        case NUMBER_EXPONENT:
            if (!digit)
                may_end = true;
            break;
    }
    if (may_end) {
        //  A number is never the outermost value here, so a container goes on.
        scan->state = SCAN_EXPECT_COMMA_OR_CLOSE;
        s_scan_byte (scan, c);
    }
}

static void
s_scan_byte (json_scan_t *scan, unsigned char c)
{
    switch (scan->state) {
        case SCAN_EXPECT_VALUE:
            if (!s_is_space (c))
                s_scan_value_start (scan, c);
            break;
        case SCAN_EXPECT_VALUE_OR_CLOSE:
            if (c == ']')
                s_scan_close (scan, c);
            else
            if (!s_is_space (c))
                s_scan_value_start (scan, c);
            break;
        case SCAN_EXPECT_KEY_OR_CLOSE:
            if (c == '}')
                s_scan_close (scan, c);
            else
            if (c == '"') {
                scan->state = SCAN_IN_STRING;
                scan->string_is_key = true;
            }
            else
            if (!s_is_space (c))
                scan->state = SCAN_INVALID;
            break;
        case SCAN_EXPECT_KEY:
            if (c == '"') {
                scan->state = SCAN_IN_STRING;
                scan->string_is_key = true;
            }
            else
            if (!s_is_space (c))
                scan->state = SCAN_INVALID;
            break;
        case SCAN_EXPECT_COLON:
            if (c == ':')
                scan->state = SCAN_EXPECT_VALUE;
            else
            if (!s_is_space (c))
                scan->state = SCAN_INVALID;
            break;
        case SCAN_EXPECT_COMMA_OR_CLOSE:
            if (c == ',')
                scan->state = scan->containers [scan->depth - 1] == '{'
                            ? SCAN_EXPECT_KEY: SCAN_EXPECT_VALUE;
            else
            if (c == '}' || c == ']')
                s_scan_close (scan, c);
            else
            if (!s_is_space (c))
                scan->state = SCAN_INVALID;
            break;
        case SCAN_IN_STRING:
            if (c == '"') {
                if (scan->string_is_key)
                    scan->state = SCAN_EXPECT_COLON;
                else
                    s_scan_value_done (scan);
            }
            else
            if (c == '\\')
                scan->state = SCAN_IN_ESCAPE;
            else
            if (c < 0x20)
                scan->state = SCAN_INVALID;     //  control characters must be escaped
            break;
        case SCAN_IN_ESCAPE:
            if (c == 'u') {
                scan->state = SCAN_IN_UNICODE;
                scan->hex_digits_left = 4;
            }
            else
            if (c != 0 && strchr ("\"\\/bfnrt", c))
                scan->state = SCAN_IN_STRING;
            else
                scan->state = SCAN_INVALID;
            break;
        case SCAN_IN_UNICODE:
            if (!s_is_hex_digit (c))
                scan->state = SCAN_INVALID;
            else
            if (--scan->hex_digits_left == 0)
                scan->state = SCAN_IN_STRING;
            break;
        case SCAN_IN_NUMBER:
            s_scan_number (scan, c);
            break;
        case SCAN_IN_LITERAL:
            if (c != (unsigned char) scan->literal [scan->literal_matched])
                scan->state = SCAN_INVALID;
            else
            if (scan->literal [++scan->literal_matched] == 0)
                s_scan_value_done (scan);
            break;
        case SCAN_COMPLETE:
            scan->state = SCAN_INVALID;         //  nothing may follow; never fed
            break;
        case SCAN_INVALID:
            break;
    }
}

//  ---------------------------------------------------------------------------------
//  Writing JSON as Python's json.dumps(value, ensure_ascii=False) does.

static int
s_dump_string (buffer_t *out, const char *text, size_t length)
{
    int rc = s_buffer_append (out, "\"", 1);
    size_t plain_start = 0;
    for (size_t index = 0; index < length && rc == 0; index++) {
        unsigned char c = (unsigned char) text [index];
        const char *escape = NULL;
        char hex_escape [8];
        if (c == '"')
            escape = "\\\"";
        else
        if (c == '\\')
            escape = "\\\\";
        else
        if (c == '\n')
            escape = "\\n";
        else
        if (c == '\r')
            escape = "\\r";
        else
        if (c == '\t')
            escape = "\\t";
        else
        if (c == '\b')
            escape = "\\b";
        else
        if (c == '\f')
            escape = "\\f";
        else
        if (c < 0x20) {
            snprintf (hex_escape, sizeof hex_escape, "\\u%04x", c);
            escape = hex_escape;
        }
        if (escape) {
            rc = s_buffer_append (out, text + plain_start, index - plain_start);
            if (rc == 0)
                rc = s_buffer_append_string (out, escape);
            plain_start = index + 1;
        }
    }
    if (rc == 0)
        rc = s_buffer_append (out, text + plain_start, length - plain_start);
    if (rc == 0)
        rc = s_buffer_append (out, "\"", 1);
    return rc;
}

//  A double as Python's repr: the fewest digits that read back as the same double,
//  written plainly when the decimal point falls within -4 < point <= 16 (with ".0"
//  when there is no fraction), in exponent form (at least two exponent digits)
//  otherwise.
static int
s_dump_real (buffer_t *out, double value)
{
    char text [64];
    char digits [32];
    size_t digit_count = 0;
    int exponent = 0;
    for (int precision = 1; precision <= 17; precision++) {
        snprintf (text, sizeof text, "%.*e", precision - 1, value);
        if (strtod (text, NULL) == value || precision == 17)
            break;
    }
    //  text is [-]D[.DDD]e(+|-)XX
    const char *cursor = text;
    bool negative = *cursor == '-';
    if (negative)
        cursor++;
    while (*cursor && *cursor != 'e') {
        if (s_is_digit ((unsigned char) *cursor))
            digits [digit_count++] = *cursor;
        cursor++;
    }
    if (*cursor == 'e')
        exponent = atoi (cursor + 1);
    while (digit_count > 1 && digits [digit_count - 1] == '0')
        digit_count--;
    if (value == 0)
        exponent = 0;
    int point = exponent + 1;       //  where the decimal point goes, counted in digits

    char result [64];
    size_t length = 0;
    if (negative)
        result [length++] = '-';
    if (point > -4 && point <= 16) {
        if (point <= 0) {
            result [length++] = '0';
            result [length++] = '.';
            for (int zero = 0; zero < -point; zero++)
                result [length++] = '0';
            for (size_t index = 0; index < digit_count; index++)
                result [length++] = digits [index];
        }
        else
        if ((size_t) point >= digit_count) {
            for (size_t index = 0; index < digit_count; index++)
                result [length++] = digits [index];
            for (size_t zero = digit_count; zero < (size_t) point; zero++)
                result [length++] = '0';
            result [length++] = '.';
            result [length++] = '0';
        }
        else {
            for (size_t index = 0; index < digit_count; index++) {
                if (index == (size_t) point)
                    result [length++] = '.';
                result [length++] = digits [index];
            }
        }
        result [length] = 0;
    }
    else {
        result [length++] = digits [0];
        if (digit_count > 1) {
            result [length++] = '.';
            for (size_t index = 1; index < digit_count; index++)
                result [length++] = digits [index];
        }
        snprintf (result + length, sizeof result - length, "e%c%02d",
                  exponent < 0? '-': '+', abs (exponent));
    }
    return s_buffer_append_string (out, result);
}

static int
s_dump_value (buffer_t *out, json_t *value)
{
    int rc = 0;
    if (json_is_object (value)) {
        rc = s_buffer_append (out, "{", 1);
        const char *key;
        size_t key_length;
        json_t *member;
        bool first = true;
        json_object_keylen_foreach (value, key, key_length, member) {
            if (rc == 0 && !first)
                rc = s_buffer_append (out, ", ", 2);
            if (rc == 0)
                rc = s_dump_string (out, key, key_length);
            if (rc == 0)
                rc = s_buffer_append (out, ": ", 2);
            if (rc == 0)
                rc = s_dump_value (out, member);
            first = false;
        }
        if (rc == 0)
            rc = s_buffer_append (out, "}", 1);
    }
    else
    if (json_is_array (value)) {
        rc = s_buffer_append (out, "[", 1);
        for (size_t index = 0; index < json_array_size (value) && rc == 0; index++) {
            if (index > 0)
                rc = s_buffer_append (out, ", ", 2);
            if (rc == 0)
                rc = s_dump_value (out, json_array_get (value, index));
        }
        if (rc == 0)
            rc = s_buffer_append (out, "]", 1);
    }
    else
    if (json_is_string (value))
        rc = s_dump_string (out, json_string_value (value), json_string_length (value));
    else
    if (json_is_integer (value)) {
        char text [32];
        snprintf (text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value (value));
        rc = s_buffer_append_string (out, text);
    }
    else
    if (json_is_real (value))
        rc = s_dump_real (out, json_real_value (value));
    else
    if (json_is_true (value))
        rc = s_buffer_append_string (out, "true");
    else
    if (json_is_false (value))
        rc = s_buffer_append_string (out, "false");
    else
        rc = s_buffer_append_string (out, "null");
    return rc;
}

//  ---------------------------------------------------------------------------------
//  The parser.

typedef enum {
    //  llama3_json
    LLAMA_LEADING,                  //  only whitespace so far
    LLAMA_PYTHON_TAG,               //  in what may be "<|python_tag|>"
    LLAMA_AFTER_TAG,                //  after "<|python_tag|>", before the '{'
    LLAMA_OBJECT,                   //  in a JSON object that may be a call
    LLAMA_AFTER_CALL,               //  after a call: whitespace, then ';' or the end
    LLAMA_AFTER_SEPARATOR,          //  after ';': whitespace, then the next '{'
    LLAMA_CONTENT,                  //  no (more) calls: everything is content
    //  hermes
    HERMES_TEXT,                    //  outside the tags
    HERMES_CALL                     //  after "<tool_call>", before "</tool_call>"
} parser_state_t;

struct _tool_parser_t {
    tool_parser_format_t format;
    uint64_t id_seed;
    parser_state_t state;
    bool finished;
    buffer_t held;                  //  text not given out yet: it may be (part of) a call
    size_t call_start;              //  where the call (its '{' or its tag) starts in held
    size_t tag_matched;             //  bytes of the awaited tag at the end of held
    bool stretch_has_text;          //  hermes: the text since the start or the last
                                    //  call holds more than whitespace
    json_scan_t scan;               //  llama3_json: the object being read
    size_t call_count;              //  calls given out so far
    buffer_t content;               //  content given out by this add or finish
    json_t *deltas;                 //  tool-call deltas given out by this add or finish
    char *deltas_text;              //  the same, as JSON text
};

int
tool_parser_format_from_name (const char *name, tool_parser_format_t *format)
{
    if (!name)
        return -1;
    if (strcmp (name, "llama3_json") == 0) {
        *format = TOOL_PARSER_LLAMA3_JSON;
        return 0;
    }
    if (strcmp (name, "hermes") == 0) {
        *format = TOOL_PARSER_HERMES;
        return 0;
    }
    return -1;
}

tool_parser_t *
tool_parser_new (tool_parser_format_t format, uint64_t id_seed)
{
    if (format != TOOL_PARSER_LLAMA3_JSON && format != TOOL_PARSER_HERMES)
        return NULL;
    tool_parser_t *self = (tool_parser_t *) calloc (1, sizeof (tool_parser_t));
    if (!self)
        return NULL;
    self->format = format;
    self->id_seed = id_seed;
    self->state = format == TOOL_PARSER_LLAMA3_JSON? LLAMA_LEADING: HERMES_TEXT;
    self->deltas = json_array ();
    if (!self->deltas
    ||  s_buffer_append (&self->held, "", 0) != 0
    ||  s_buffer_append (&self->content, "", 0) != 0)
        tool_parser_destroy (&self);
    return self;
}

void
tool_parser_destroy (tool_parser_t **self_p)
{
    tool_parser_t *self = *self_p;
    if (!self)
        return;
    s_buffer_free (&self->held);
    s_buffer_free (&self->content);
    json_decref (self->deltas);
    free (self->deltas_text);
    free (self);
    *self_p = NULL;
}

//  (On allocation failure, here and below, the text is lost: there is no better
//  place for it.)
static void
s_give_content (tool_parser_t *self, const char *text, size_t length)
{
    s_buffer_append (&self->content, text, length);
}

//  The held text is content after all.
static void
s_give_held (tool_parser_t *self)
{
    s_give_content (self, self->held.data, self->held.size);
    s_buffer_clear (&self->held);
}

static uint64_t
s_splitmix64 (uint64_t *state)
{
    *state += 0x9E3779B97F4A7C15ULL;
    uint64_t mixed = *state;
    mixed = (mixed ^ (mixed >> 30)) * 0xBF58476D1CE4E5B9ULL;
    mixed = (mixed ^ (mixed >> 27)) * 0x94D049BB133111EBULL;
    return mixed ^ (mixed >> 31);
}

//  "call_" + 24 alphanumerics, from the request's seed and the call's index.
static void
s_make_call_id (uint64_t id_seed, size_t index, char *id, size_t id_size)
{
    static const char alphabet [] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint64_t state = id_seed;
    uint64_t request_key = s_splitmix64 (&state);
    state = request_key ^ ((uint64_t) index * 0xD1B54A32D192ED03ULL);
    snprintf (id, id_size, "call_");
    for (size_t at = 5; at < 5 + 24 && at + 1 < id_size; at++) {
        id [at] = alphabet [s_splitmix64 (&state) % (sizeof alphabet - 1)];
        id [at + 1] = 0;
    }
}

//  Reads one call's JSON; when it is a valid call, gives out its delta and returns 0.
static int
s_give_call (tool_parser_t *self, const char *json_text, size_t length)
{
    json_error_t error;
    json_t *object = json_loadb (json_text, length, JSON_ALLOW_NUL, &error);
    if (!json_is_object (object)) {
        json_decref (object);
        return -1;
    }
    json_t *name = json_object_get (object, "name");
    json_t *arguments = json_object_get (object, "arguments");
    if (!arguments && self->format == TOOL_PARSER_LLAMA3_JSON)
        arguments = json_object_get (object, "parameters");
    if (!json_is_string (name) || !json_is_object (arguments)) {
        json_decref (object);
        return -1;
    }
    buffer_t arguments_text = { NULL, 0, 0 };
    char id [32];
    s_make_call_id (self->id_seed, self->call_count, id, sizeof id);
    json_t *function = json_object ();
    json_t *delta = json_object ();
    int rc = s_dump_value (&arguments_text, arguments);
    if (rc == 0 && function && delta) {
        json_object_set_new (delta, "index", json_integer ((json_int_t) self->call_count));
        json_object_set_new (delta, "id", json_string (id));
        json_object_set_new (delta, "type", json_string ("function"));
        json_object_set_new (function, "name", json_stringn (json_string_value (name),
                                                             json_string_length (name)));
        json_object_set_new (function, "arguments", json_stringn (arguments_text.data,
                                                                  arguments_text.size));
        json_object_set_new (delta, "function", function);
        function = NULL;
        rc = json_array_append_new (self->deltas, delta);
        delta = NULL;
    }
    else
        rc = -1;
    if (rc == 0)
        self->call_count++;
    json_decref (function);
    json_decref (delta);
    s_buffer_free (&arguments_text);
    json_decref (object);
    return 0;
}

//  ---------------------------------------------------------------------------------
//  llama3_json, one byte at a time.

static void
s_hold_byte (tool_parser_t *self, char c)
{
    s_buffer_append (&self->held, &c, 1);
}

//  Not a call (or no more calls): what is held and all that follows is content.
static void
s_llama_become_content (tool_parser_t *self, char c)
{
    s_give_held (self);
    s_give_content (self, &c, 1);
    self->state = LLAMA_CONTENT;
}

static void
s_llama_start_object (tool_parser_t *self)
{
    self->call_start = self->held.size;
    s_hold_byte (self, '{');
    s_scan_start (&self->scan);
    self->state = LLAMA_OBJECT;
}

static void
s_llama_byte (tool_parser_t *self, char c)
{
    unsigned char byte = (unsigned char) c;
    switch (self->state) {
        case LLAMA_LEADING:
            if (s_is_space (byte))
                s_hold_byte (self, c);
            else
            if (c == s_python_tag [0]) {
                s_hold_byte (self, c);
                self->tag_matched = 1;
                self->state = LLAMA_PYTHON_TAG;
            }
            else
            if (c == '{')
                s_llama_start_object (self);
            else
                s_llama_become_content (self, c);
            break;
        case LLAMA_PYTHON_TAG:
            if (c == s_python_tag [self->tag_matched]) {
                s_hold_byte (self, c);
                if (s_python_tag [++self->tag_matched] == 0)
                    self->state = LLAMA_AFTER_TAG;
            }
            else
                s_llama_become_content (self, c);
            break;
        case LLAMA_AFTER_TAG:
        case LLAMA_AFTER_SEPARATOR:
            if (s_is_space (byte))
                s_hold_byte (self, c);
            else
            if (c == '{')
                s_llama_start_object (self);
            else
                s_llama_become_content (self, c);
            break;
        case LLAMA_OBJECT:
            s_hold_byte (self, c);
            s_scan_byte (&self->scan, byte);
            if (self->scan.state == SCAN_INVALID) {
                s_give_held (self);
                self->state = LLAMA_CONTENT;
            }
            else
            if (self->scan.state == SCAN_COMPLETE) {
                if (s_give_call (self, self->held.data + self->call_start,
                                 self->held.size - self->call_start) == 0) {
                    s_buffer_clear (&self->held);
                    self->state = LLAMA_AFTER_CALL;
                }
                else {
                    s_give_held (self);
                    self->state = LLAMA_CONTENT;
                }
            }
            break;
        case LLAMA_AFTER_CALL:
            if (s_is_space (byte))
                s_hold_byte (self, c);
            else
            if (c == ';') {
                s_hold_byte (self, c);
                self->state = LLAMA_AFTER_SEPARATOR;
            }
            else
                s_llama_become_content (self, c);
            break;
        case LLAMA_CONTENT:
            s_give_content (self, &c, 1);
            break;
        default:
            break;
    }
}

static void
s_llama_add (tool_parser_t *self, const char *text, size_t length)
{
    for (size_t index = 0; index < length; index++) {
        if (self->state == LLAMA_CONTENT) {
            s_give_content (self, text + index, length - index);
            break;
        }
        s_llama_byte (self, text [index]);
    }
}

static void
s_llama_finish (tool_parser_t *self)
{
    if (self->state == LLAMA_AFTER_CALL || self->state == LLAMA_AFTER_SEPARATOR)
        s_buffer_clear (&self->held);   //  whitespace, and a trailing ';'
    else
        s_give_held (self);             //  no call, or a call cut short: content
    self->state = LLAMA_CONTENT;
}

//  ---------------------------------------------------------------------------------
//  hermes, one byte at a time.

//  How many bytes of tag the end of the text matches after one more byte. Right
//  for tags whose first byte appears nowhere else in them, as '<' in ours.
static size_t
s_tag_advance (const char *tag, size_t matched, char c)
{
    if (c == tag [matched])
        return matched + 1;
    return c == tag [0]? 1: 0;
}

static void
s_hermes_byte (tool_parser_t *self, char c)
{
    s_hold_byte (self, c);
    if (self->state == HERMES_TEXT) {
        self->tag_matched = s_tag_advance (s_call_open, self->tag_matched, c);
        if (s_call_open [self->tag_matched] != 0)
            return;
        //  A call may start: the text before it is content, unless it is only
        //  whitespace, which is held with the call (dropped if it is one).
        size_t before = self->held.size - self->tag_matched;
        if (self->stretch_has_text || s_has_text (self->held.data, before)) {
            s_give_content (self, self->held.data, before);
            memmove (self->held.data, self->held.data + before, self->tag_matched);
            self->held.size = self->tag_matched;
            self->held.data [self->held.size] = 0;
            before = 0;
        }
        self->call_start = before;
        self->tag_matched = 0;
        self->state = HERMES_CALL;
    }
    else {
        self->tag_matched = s_tag_advance (s_call_close, self->tag_matched, c);
        if (s_call_close [self->tag_matched] != 0)
            return;
        size_t inner_start = self->call_start + strlen (s_call_open);
        size_t inner_end = self->held.size - self->tag_matched;
        if (inner_start <= inner_end
        &&  s_give_call (self, self->held.data + inner_start,
                         inner_end - inner_start) == 0) {
            s_buffer_clear (&self->held);
            self->stretch_has_text = false;
        }
        else {
            s_give_held (self);         //  not a valid call: the block is content
            self->stretch_has_text = true;
        }
        self->tag_matched = 0;
        self->state = HERMES_TEXT;
    }
}

//  Outside a call, gives out the held text but for a tail that may start a tag, and
//  but for a stretch of only whitespace (dropped if a call follows).
static void
s_hermes_release (tool_parser_t *self)
{
    if (self->state != HERMES_TEXT)
        return;
    size_t releasable = self->held.size - self->tag_matched;
    if (!self->stretch_has_text && s_has_text (self->held.data, releasable))
        self->stretch_has_text = true;
    if (!self->stretch_has_text || releasable == 0)
        return;
    s_give_content (self, self->held.data, releasable);
    memmove (self->held.data, self->held.data + releasable, self->tag_matched);
    self->held.size = self->tag_matched;
    self->held.data [self->held.size] = 0;
}

static void
s_hermes_add (tool_parser_t *self, const char *text, size_t length)
{
    for (size_t index = 0; index < length; index++)
        s_hermes_byte (self, text [index]);
    s_hermes_release (self);
}

static void
s_hermes_finish (tool_parser_t *self)
{
    if (self->state == HERMES_CALL) {
        //  A call without its closing tag: a call if what follows the tag is one.
        size_t inner_start = self->call_start + strlen (s_call_open);
        if (inner_start <= self->held.size
        &&  s_give_call (self, self->held.data + inner_start,
                         self->held.size - inner_start) == 0)
            s_buffer_clear (&self->held);
        else
            s_give_held (self);
    }
    else
    if (self->call_count > 0 && !self->stretch_has_text
    &&  !s_has_text (self->held.data, self->held.size))
        s_buffer_clear (&self->held);   //  only whitespace after the last call
    else
        s_give_held (self);
    self->state = HERMES_TEXT;
    self->tag_matched = 0;
}

//  ---------------------------------------------------------------------------------

//  Empties what the previous call gave out.
static void
s_start_output (tool_parser_t *self)
{
    s_buffer_clear (&self->content);
    json_array_clear (self->deltas);
    free (self->deltas_text);
    self->deltas_text = NULL;
}

static tool_parser_output_t
s_output (tool_parser_t *self)
{
    tool_parser_output_t output;
    output.content = self->content.data? self->content.data: "";
    output.tool_calls = NULL;
    if (json_array_size (self->deltas) > 0) {
        self->deltas_text = json_dumps (self->deltas, JSON_COMPACT);
        output.tool_calls = self->deltas_text;
    }
    return output;
}

tool_parser_output_t
tool_parser_add (tool_parser_t *self, const char *text)
{
    s_start_output (self);
    if (!self->finished && text) {
        if (self->format == TOOL_PARSER_LLAMA3_JSON)
            s_llama_add (self, text, strlen (text));
        else
            s_hermes_add (self, text, strlen (text));
    }
    return s_output (self);
}

tool_parser_output_t
tool_parser_finish (tool_parser_t *self)
{
    s_start_output (self);
    if (!self->finished) {
        if (self->format == TOOL_PARSER_LLAMA3_JSON)
            s_llama_finish (self);
        else
            s_hermes_finish (self);
        self->finished = true;
    }
    return s_output (self);
}

size_t
tool_parser_call_count (const tool_parser_t *self)
{
    return self->call_count;
}
