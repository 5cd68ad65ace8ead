/*  jinja — a Jinja2 engine for chat templates, as Hugging Face sets Jinja2 up. See jinja.h.

    The source goes through three stages:
    - the lexer turns it into tokens exactly as Jinja2's lexer does with trim_blocks and
      lstrip_blocks: text between tags (with the whitespace control applied), tag
      delimiters, names, numbers, strings and operators;
    - the parser builds a tree of nodes with Jinja2's grammar and precedence, then checks
      that every filter and test exists (as Jinja2's compiler does: an unknown one is an
      error at once, unless it sits inside an if, where it fails only when reached);
    - the renderer walks the tree with Python's semantics (see jinja_value.h for the
      values), writing into a buffer.

    Scopes follow Jinja2: a for loop's body gets a fresh scope each iteration, a macro's
    body a scope whose parent is where the macro was defined; an if shares its scope.
    Names not found in any scope are the render's variables, then the globals (range,
    namespace, dict, raise_exception, strftime_now, ...), else undefined.
*/
#include "jinja.h"
#include "jinja_value.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Limits that keep a hostile template from taking the process over.
#define MAX_AST_DEPTH           300         //  nesting of expressions and statements
#define MAX_BRACKETS            256         //  open ( [ { in one tag
#define MAX_CALL_DEPTH          120         //  macro calls inside macro calls
#define MAX_EVAL_DEPTH          3000        //  evaluation frames in all
#define MAX_RANGE               100000      //  the sandbox's largest range()
#define MAX_LIST_ITEMS          10000000    //  items in one list a template builds
#define DEFAULT_MAX_OUTPUT      (64u << 20)
#define DEFAULT_MAX_MEMORY      (512u << 20)
#define DEFAULT_MAX_ITERATIONS  5000000
#define DEFAULT_MAX_STEPS       50000000

//  --- Tokens ---------------------------------------------------------------------------

typedef enum {
    TOKEN_DATA,
    TOKEN_VARIABLE_BEGIN,
    TOKEN_VARIABLE_END,
    TOKEN_BLOCK_BEGIN,
    TOKEN_BLOCK_END,
    TOKEN_NAME,
    TOKEN_STRING,
    TOKEN_INTEGER,
    TOKEN_FLOAT,
    TOKEN_OPERATOR,
    TOKEN_EOF
} token_type_t;

typedef enum {
    OP_ADD, OP_SUB, OP_DIV, OP_FLOORDIV, OP_MUL, OP_MOD, OP_POW, OP_TILDE,
    OP_LBRACKET, OP_RBRACKET, OP_LPAREN, OP_RPAREN, OP_LBRACE, OP_RBRACE,
    OP_EQ, OP_NE, OP_GT, OP_GTEQ, OP_LT, OP_LTEQ, OP_ASSIGN, OP_DOT, OP_COLON,
    OP_PIPE, OP_COMMA, OP_SEMICOLON,
    OP_IN, OP_NOTIN                 //  comparisons written with words
} op_t;

static const char *s_operator_text [] = {
    "+", "-", "/", "//", "*", "%", "**", "~",
    "[", "]", "(", ")", "{", "}",
    "==", "!=", ">", ">=", "<", "<=", "=", ".", ":",
    "|", ",", ";",
    "in", "not in"
};

typedef struct {
    token_type_t type;
    op_t op;                        //  TOKEN_OPERATOR
    size_t offset;                  //  where the token starts in the source
    size_t start;                   //  TOKEN_DATA, TOKEN_NAME: the text's bytes
    size_t end;
    char *text;                     //  TOKEN_STRING: the decoded value
    size_t text_size;
    int64_t integer;
    double number;
} token_t;

typedef struct {
    const char *source;             //  with newlines normalized to \n
    size_t size;
    token_t *tokens;
    size_t count;
    size_t capacity;
    size_t error_offset;
    char error [256];
    bool failed;
} lexer_t;

static void
s_lexer_fail (lexer_t *lexer, size_t offset, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_lexer_fail (lexer_t *lexer, size_t offset, const char *format, ...)
{
    if (lexer->failed)
        return;
    lexer->failed = true;
    lexer->error_offset = offset;
    va_list args;
    va_start (args, format);
    vsnprintf (lexer->error, sizeof (lexer->error), format, args);
    va_end (args);
}

static token_t *
s_lexer_push (lexer_t *lexer, token_type_t type, size_t offset)
{
    if (lexer->count == lexer->capacity) {
        size_t capacity = lexer->capacity? lexer->capacity * 2: 256;
        token_t *tokens = realloc (lexer->tokens, capacity * sizeof (token_t));
        if (!tokens) {
            s_lexer_fail (lexer, offset, "out of memory");
            return NULL;
        }
        lexer->tokens = tokens;
        lexer->capacity = capacity;
    }
    token_t *token = &lexer->tokens [lexer->count++];
    memset (token, 0, sizeof (*token));
    token->type = type;
    token->offset = offset;
    token->start = token->end = offset;
    return token;
}

//  Is there a whitespace character (Python's \s) at pos? Sets *next past it.
static bool
s_space_at (const char *text, size_t size, size_t pos, size_t *next)
{
    unsigned char byte = (unsigned char) text [pos];
    if (byte < 0x80) {
        if ((byte >= 0x09 && byte <= 0x0D) || (byte >= 0x1C && byte <= 0x20)) {
            *next = pos + 1;
            return true;
        }
        return false;
    }
    size_t after = pos;
    uint32_t code = jinja_utf8_next (text, size, &after);
    if (jinja_unicode_is_space (code)) {
        *next = after;
        return true;
    }
    return false;
}

static size_t
s_skip_spaces (const char *text, size_t size, size_t pos)
{
    size_t next;
    while (pos < size && s_space_at (text, size, pos, &next))
        pos = next;
    return pos;
}

//  Where Python's str.rstrip() would cut text[start..end).
static size_t
s_rstrip_end (const char *text, size_t start, size_t end)
{
    while (end > start) {
        size_t char_start = end - 1;
        while (char_start > start && ((unsigned char) text [char_start] & 0xC0) == 0x80)
            char_start--;
        size_t next;
        if (!s_space_at (text, end, char_start, &next) || next != end)
            break;
        end = char_start;
    }
    return end;
}

//  Data before a tag, with the tag's whitespace control: "-" strips all whitespace
//  before it; otherwise (not "+", not a {{ tag) lstrip_blocks removes the spaces and
//  tabs between the start of the line and the tag.
static size_t
s_data_end (const char *text, size_t start, size_t end, char strip_sign,
            bool is_variable, bool line_starting)
{
    if (strip_sign == '-')
        return s_rstrip_end (text, start, end);
    if (strip_sign == '+' || is_variable)
        return end;
    size_t line_pos = start;
    for (size_t index = end; index > start; index--)
        if (text [index - 1] == '\n') {
            line_pos = index;
            break;
        }
    if (line_pos == start && !line_starting)
        return end;
    if (line_pos == end)
        return end;
    //  only whitespace between the line start and the tag?
    size_t pos = line_pos;
    size_t next;
    while (pos < end && s_space_at (text, end, pos, &next))
        pos = next;
    return pos == end? line_pos: end;
}

static bool
s_starts (const char *text, size_t size, size_t pos, const char *with)
{
    size_t length = strlen (with);
    return pos + length <= size && memcmp (text + pos, with, length) == 0;
}

//  The end of a block tag at pos: "+%}", "-%}" and the whitespace after it, or "%}"
//  and one newline (trim_blocks). Returns the offset after it, or 0 when pos holds
//  no block end.
static size_t
s_block_end_at (const char *text, size_t size, size_t pos)
{
    if (s_starts (text, size, pos, "+%}"))
        return pos + 3;
    if (s_starts (text, size, pos, "-%}"))
        return s_skip_spaces (text, size, pos + 3);
    if (s_starts (text, size, pos, "%}")) {
        pos += 2;
        if (pos < size && text [pos] == '\n')
            pos++;
        return pos;
    }
    return 0;
}

static bool
s_is_digit (char c)
{
    return c >= '0' && c <= '9';
}

static bool
s_is_name_start (char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
        || (unsigned char) c >= 0x80;
}

static bool
s_is_name_char (char c)
{
    return s_is_name_start (c) || s_is_digit (c);
}

//  (\d+_)*\d+ at pos: returns the end, or pos when there are no digits.
static size_t
s_digits_end (const char *text, size_t size, size_t pos)
{
    size_t end = pos;
    while (end < size && s_is_digit (text [end])) {
        end++;
        if (end + 1 < size && text [end] == '_' && s_is_digit (text [end + 1]))
            end++;
    }
    return end;
}

//  Jinja2's float: digits, then a fraction and/or an exponent (not after a '.').
static size_t
s_float_end (const char *text, size_t size, size_t pos)
{
    if (pos > 0 && text [pos - 1] == '.')
        return pos;
    size_t end = s_digits_end (text, size, pos);
    if (end == pos)
        return pos;
    size_t cursor = end;
    bool fraction = false;
    if (cursor + 1 < size && text [cursor] == '.' && s_is_digit (text [cursor + 1])) {
        cursor = s_digits_end (text, size, cursor + 1);
        fraction = true;
    }
    if (cursor < size && (text [cursor] == 'e' || text [cursor] == 'E')) {
        size_t exponent = cursor + 1;
        if (exponent < size && (text [exponent] == '+' || text [exponent] == '-'))
            exponent++;
        size_t exponent_end = s_digits_end (text, size, exponent);
        if (exponent_end > exponent)
            return exponent_end;
    }
    return fraction? cursor: pos;
}

static int
s_hex_value (char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

//  Jinja2's integer: 0b.., 0o.., 0x.. (with _ between digits), decimal, or zeros.
static size_t
s_integer_end (const char *text, size_t size, size_t pos, int *base)
{
    *base = 10;
    if (text [pos] == '0' && pos + 2 < size) {
        char kind = text [pos + 1];
        int radix = (kind == 'b' || kind == 'B')? 2: (kind == 'o' || kind == 'O')? 8:
                    (kind == 'x' || kind == 'X')? 16: 0;
        if (radix) {
            size_t end = pos + 2;
            size_t digits = 0;
            while (end < size) {
                size_t at = end;
                if (text [at] == '_')
                    at++;
                if (at >= size)
                    break;
                int value = s_hex_value (text [at]);
                if (value < 0 || value >= radix)
                    break;
                end = at + 1;
                digits++;
            }
            if (digits) {
                *base = radix;
                return end;
            }
        }
    }
    if (text [pos] >= '1' && text [pos] <= '9')
        return s_digits_end (text, size, pos);
    if (text [pos] == '0') {
        size_t end = pos + 1;
        while (end < size) {
            if (text [end] == '0')
                end++;
            else
            if (text [end] == '_' && end + 1 < size && text [end + 1] == '0')
                end += 2;
            else
                break;
        }
        return end;
    }
    return pos;
}

//  Append a code point to a growing string.
static int
s_text_push (char **text, size_t *size, size_t *capacity, const char *bytes, size_t count)
{
    if (*size + count + 1 > *capacity) {
        size_t grown = *capacity? *capacity * 2: 32;
        while (grown < *size + count + 1)
            grown *= 2;
        char *data = realloc (*text, grown);
        if (!data)
            return -1;
        *text = data;
        *capacity = grown;
    }
    memcpy (*text + *size, bytes, count);
    *size += count;
    (*text) [*size] = 0;
    return 0;
}

//  Decode a string literal's body as Python's unicode-escape codec does.
static int
s_decode_string (lexer_t *lexer, size_t offset, const char *body, size_t size,
                 char **out, size_t *out_size)
{
    char *text = NULL;
    size_t used = 0, capacity = 0;
    size_t pos = 0;
    if (s_text_push (&text, &used, &capacity, "", 0))
        goto oom;
    while (pos < size) {
        char c = body [pos];
        if (c != '\\') {
            size_t run = pos;
            while (pos < size && body [pos] != '\\')
                pos++;
            if (s_text_push (&text, &used, &capacity, body + run, pos - run))
                goto oom;
            continue;
        }
        if (pos + 1 >= size) {
            s_lexer_fail (lexer, offset, "\\ at end of string");
            goto fail;
        }
        char kind = body [pos + 1];
        pos += 2;
        char single = 0;
        uint32_t code = 0;
        bool have_code = false;
        switch (kind) {
            case '\n': continue;
            case '\\': single = '\\'; break;
            case '\'': single = '\''; break;
            case '"': single = '"'; break;
            case 'a': single = '\a'; break;
            case 'b': single = '\b'; break;
            case 'f': single = '\f'; break;
            case 'n': single = '\n'; break;
            case 'r': single = '\r'; break;
            case 't': single = '\t'; break;
            case 'v': single = '\v'; break;
            case 'x': case 'u': case 'U': {
                int digits = kind == 'x'? 2: kind == 'u'? 4: 8;
                for (int index = 0; index < digits; index++) {
                    int value = pos < size? s_hex_value (body [pos]): -1;
                    if (value < 0) {
                        s_lexer_fail (lexer, offset, "truncated \\%cXX escape", kind);
                        goto fail;
                    }
                    code = code * 16 + (uint32_t) value;
                    pos++;
                }
                have_code = true;
                break;
            }
            default:
                if (kind >= '0' && kind <= '7') {
                    code = (uint32_t) (kind - '0');
                    for (int index = 0; index < 2 && pos < size
                         && body [pos] >= '0' && body [pos] <= '7'; index++)
                        code = code * 8 + (uint32_t) (body [pos++] - '0');
                    have_code = true;
                }
                else
                if ((unsigned char) kind >= 0x80) {
                    //  a backslash before a non-ASCII character stays, and the character
                    //  becomes its escape's text (what backslashreplace then decoding does)
                    size_t at = pos - 1;
                    uint32_t other = jinja_utf8_next (body, size, &at);
                    pos = at;
                    char escaped [16];
                    if (other <= 0xFF)
                        snprintf (escaped, sizeof (escaped), "\\x%02x", other);
                    else
                    if (other <= 0xFFFF)
                        snprintf (escaped, sizeof (escaped), "\\u%04x", other);
                    else
                        snprintf (escaped, sizeof (escaped), "\\U%08x", other);
                    if (s_text_push (&text, &used, &capacity, escaped, strlen (escaped)))
                        goto oom;
                    continue;
                }
                else {
                    char kept [2] = { '\\', kind };
                    if (s_text_push (&text, &used, &capacity, kept, 2))
                        goto oom;
                    continue;
                }
        }
        if (have_code) {
            if (code >= 0xD800 && code <= 0xDBFF && pos + 1 < size
            &&  body [pos] == '\\' && body [pos + 1] == 'u') {
                uint32_t low = 0;
                bool valid = true;
                for (int index = 0; index < 4; index++) {
                    int value = pos + 2 + (size_t) index < size?
                                s_hex_value (body [pos + 2 + (size_t) index]): -1;
                    if (value < 0)
                        valid = false;
                    else
                        low = low * 16 + (uint32_t) value;
                }
                if (valid && low >= 0xDC00 && low <= 0xDFFF) {
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    pos += 6;
                }
            }
            if (code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
                s_lexer_fail (lexer, offset, "illegal Unicode character in string");
                goto fail;
            }
            char encoded [4];
            if (s_text_push (&text, &used, &capacity, encoded, jinja_utf8_encode (code, encoded)))
                goto oom;
        }
        else
        if (s_text_push (&text, &used, &capacity, &single, 1))
            goto oom;
    }
    *out = text;
    *out_size = used;
    return 0;
oom:
    s_lexer_fail (lexer, offset, "out of memory");
fail:
    free (text);
    return -1;
}

static const struct {
    const char *text;
    op_t op;
} s_operators [] = {
    { "//", OP_FLOORDIV }, { "**", OP_POW }, { "==", OP_EQ }, { "!=", OP_NE },
    { ">=", OP_GTEQ }, { "<=", OP_LTEQ },
    { "+", OP_ADD }, { "-", OP_SUB }, { "/", OP_DIV }, { "*", OP_MUL }, { "%", OP_MOD },
    { "~", OP_TILDE }, { "[", OP_LBRACKET }, { "]", OP_RBRACKET }, { "(", OP_LPAREN },
    { ")", OP_RPAREN }, { "{", OP_LBRACE }, { "}", OP_RBRACE }, { ">", OP_GT },
    { "<", OP_LT }, { "=", OP_ASSIGN }, { ".", OP_DOT }, { ":", OP_COLON },
    { "|", OP_PIPE }, { ",", OP_COMMA }, { ";", OP_SEMICOLON }
};

//  The tokens inside {{ }} or {% %}, from pos; returns the offset after the end tag
//  (or the end of the source: the parser then reports the missing end).
static size_t
s_lex_tag (lexer_t *lexer, size_t pos, bool is_block, bool *line_starting)
{
    const char *text = lexer->source;
    size_t size = lexer->size;
    char brackets [MAX_BRACKETS];
    size_t bracket_count = 0;
    while (pos < size && !lexer->failed) {
        size_t start = pos;
        if (bracket_count == 0) {
            size_t end = 0;
            if (is_block)
                end = s_block_end_at (text, size, pos);
            else
            if (s_starts (text, size, pos, "-}}"))
                end = s_skip_spaces (text, size, pos + 3);
            else
            if (s_starts (text, size, pos, "}}"))
                end = pos + 2;
            if (end) {
                if (!s_lexer_push (lexer, is_block? TOKEN_BLOCK_END: TOKEN_VARIABLE_END, pos))
                    return size;
                *line_starting = text [end - 1] == '\n';
                return end;
            }
        }
        size_t next;
        if (s_space_at (text, size, pos, &next)) {
            pos = s_skip_spaces (text, size, pos);
            continue;
        }
        char c = text [pos];
        if (s_is_digit (c)) {
            size_t end = s_float_end (text, size, pos);
            if (end > pos) {
                char number [128];
                size_t length = 0;
                for (size_t index = pos; index < end && length < sizeof (number) - 1; index++)
                    if (text [index] != '_')
                        number [length++] = text [index];
                number [length] = 0;
                token_t *token = s_lexer_push (lexer, TOKEN_FLOAT, start);
                if (!token)
                    return size;
                token->number = strtod (number, NULL);
                pos = end;
                continue;
            }
            int base;
            end = s_integer_end (text, size, pos, &base);
            uint64_t value = 0;
            bool overflow = false;
            size_t digit_start = base == 10? pos: pos + 2;
            for (size_t index = digit_start; index < end; index++) {
                if (text [index] == '_')
                    continue;
                uint64_t digit = (uint64_t) s_hex_value (text [index]);
                if (value > (UINT64_MAX - digit) / (uint64_t) base)
                    overflow = true;
                value = value * (uint64_t) base + digit;
            }
            if (overflow || value > (uint64_t) INT64_MAX) {
                s_lexer_fail (lexer, start, "integer literal too large");
                return size;
            }
            token_t *token = s_lexer_push (lexer, TOKEN_INTEGER, start);
            if (!token)
                return size;
            token->integer = (int64_t) value;
            pos = end;
            continue;
        }
        if (s_is_name_start (c)) {
            size_t end = pos;
            while (end < size && s_is_name_char (text [end]))
                end++;
            token_t *token = s_lexer_push (lexer, TOKEN_NAME, start);
            if (!token)
                return size;
            token->start = pos;
            token->end = end;
            pos = end;
            continue;
        }
        if (c == '\'' || c == '"') {
            size_t end = pos + 1;
            while (end < size && text [end] != c) {
                if (text [end] == '\\' && end + 1 < size)
                    end++;
                end++;
            }
            if (end < size) {
                token_t *token = s_lexer_push (lexer, TOKEN_STRING, start);
                if (!token)
                    return size;
                if (s_decode_string (lexer, start, text + pos + 1, end - pos - 1,
                                     &token->text, &token->text_size))
                    return size;
                pos = end + 1;
                continue;
            }
            //  an unterminated string is no token (as in Jinja2)
        }
        bool matched = false;
        for (size_t index = 0; index < sizeof (s_operators) / sizeof (s_operators [0]); index++) {
            if (!s_starts (text, size, pos, s_operators [index].text))
                continue;
            op_t op = s_operators [index].op;
            if (op == OP_LPAREN || op == OP_LBRACKET || op == OP_LBRACE) {
                if (bracket_count == MAX_BRACKETS) {
                    s_lexer_fail (lexer, start, "too many nested brackets");
                    return size;
                }
                brackets [bracket_count++] = op == OP_LPAREN? ')': op == OP_LBRACKET? ']': '}';
            }
            else
            if (op == OP_RPAREN || op == OP_RBRACKET || op == OP_RBRACE) {
                char closer = text [pos];
                if (bracket_count == 0) {
                    s_lexer_fail (lexer, start, "unexpected '%c'", closer);
                    return size;
                }
                char expected = brackets [--bracket_count];
                if (expected != closer) {
                    s_lexer_fail (lexer, start, "unexpected '%c', expected '%c'", closer, expected);
                    return size;
                }
            }
            token_t *token = s_lexer_push (lexer, TOKEN_OPERATOR, start);
            if (!token)
                return size;
            token->op = op;
            pos += strlen (s_operators [index].text);
            matched = true;
            break;
        }
        if (!matched) {
            size_t after = pos;
            uint32_t code = jinja_utf8_next (text, size, &after);
            char shown [8];
            shown [jinja_utf8_encode (code, shown)] = 0;
            s_lexer_fail (lexer, start, "unexpected char '%s' at %zu", shown, start);
            return size;
        }
        *line_starting = false;
    }
    return size;
}

//  {% raw %} at pos (with its - or + sign)? Returns the offset after the tag or 0.
static size_t
s_raw_begin_at (const char *text, size_t size, size_t pos, char *sign)
{
    if (!s_starts (text, size, pos, "{%"))
        return 0;
    size_t cursor = pos + 2;
    *sign = 0;
    if (cursor < size && (text [cursor] == '-' || text [cursor] == '+'))
        *sign = text [cursor++];
    cursor = s_skip_spaces (text, size, cursor);
    if (!s_starts (text, size, cursor, "raw"))
        return 0;
    cursor = s_skip_spaces (text, size, cursor + 3);
    if (s_starts (text, size, cursor, "-%}"))
        return s_skip_spaces (text, size, cursor + 3);
    if (s_starts (text, size, cursor, "%}"))
        return cursor + 2;
    return 0;
}

//  {% endraw %} at pos? Returns the offset after it (trim_blocks applied) or 0.
static size_t
s_raw_end_at (const char *text, size_t size, size_t pos, char *sign)
{
    if (!s_starts (text, size, pos, "{%"))
        return 0;
    size_t cursor = pos + 2;
    *sign = 0;
    if (cursor < size && (text [cursor] == '-' || text [cursor] == '+'))
        *sign = text [cursor++];
    cursor = s_skip_spaces (text, size, cursor);
    if (!s_starts (text, size, cursor, "endraw"))
        return 0;
    cursor = s_skip_spaces (text, size, cursor + 6);
    return s_block_end_at (text, size, cursor);
}

static void
s_push_data (lexer_t *lexer, size_t start, size_t end)
{
    if (end <= start)
        return;
    token_t *token = s_lexer_push (lexer, TOKEN_DATA, start);
    if (token) {
        token->start = start;
        token->end = end;
    }
}

static void
s_lex (lexer_t *lexer)
{
    const char *text = lexer->source;
    size_t size = lexer->size;
    size_t pos = 0;
    bool line_starting = true;
    while (pos < size && !lexer->failed) {
        //  the next tag: the first "{{", "{%" or "{#"
        size_t tag = pos;
        while (tag + 1 < size && !(text [tag] == '{'
                                   && (text [tag + 1] == '{' || text [tag + 1] == '%'
                                       || text [tag + 1] == '#')))
            tag++;
        if (tag + 1 >= size) {
            s_push_data (lexer, pos, size);
            break;
        }
        char kind = text [tag + 1];
        char sign = 0;
        char raw_sign = 0;
        size_t raw_end = kind == '%'? s_raw_begin_at (text, size, tag, &raw_sign): 0;
        if (raw_end)
            sign = raw_sign;
        else
        if (tag + 2 < size && (text [tag + 2] == '-' || text [tag + 2] == '+'))
            sign = text [tag + 2];
        s_push_data (lexer, pos, s_data_end (text, pos, tag, sign, kind == '{', line_starting));

        if (raw_end) {
            //  the raw text runs to the first {% endraw %}
            size_t search = raw_end;
            size_t end_tag = 0;
            char end_sign = 0;
            size_t after = 0;
            while (search < size) {
                if (text [search] == '{' && (after = s_raw_end_at (text, size, search, &end_sign))) {
                    end_tag = search;
                    break;
                }
                search++;
            }
            if (!after) {
                s_lexer_fail (lexer, tag, "Missing end of raw directive");
                return;
            }
            bool raw_line_starting = text [raw_end - 1] == '\n';
            s_push_data (lexer, raw_end,
                         s_data_end (text, raw_end, end_tag, end_sign, false, raw_line_starting));
            line_starting = text [after - 1] == '\n';
            pos = after;
            continue;
        }
        if (kind == '#') {
            size_t search = tag + 2 + (sign? 1: 0);
            size_t after = 0;
            while (search < size) {
                if (s_starts (text, size, search, "+#}")) {
                    after = search + 3;
                    break;
                }
                if (s_starts (text, size, search, "-#}")) {
                    after = s_skip_spaces (text, size, search + 3);
                    break;
                }
                if (s_starts (text, size, search, "#}")) {
                    after = search + 2;
                    if (after < size && text [after] == '\n')
                        after++;
                    break;
                }
                search++;
            }
            if (!after) {
                s_lexer_fail (lexer, tag, "Missing end of comment tag");
                return;
            }
            line_starting = text [after - 1] == '\n';
            pos = after;
            continue;
        }
        bool is_block = kind == '%';
        if (!s_lexer_push (lexer, is_block? TOKEN_BLOCK_BEGIN: TOKEN_VARIABLE_BEGIN, tag))
            return;
        line_starting = false;
        pos = s_lex_tag (lexer, tag + 2 + (sign? 1: 0), is_block, &line_starting);
    }
    s_lexer_push (lexer, TOKEN_EOF, size);
}

static void
s_lexer_release (lexer_t *lexer)
{
    for (size_t index = 0; index < lexer->count; index++)
        free (lexer->tokens [index].text);
    free (lexer->tokens);
    lexer->tokens = NULL;
    lexer->count = lexer->capacity = 0;
}

//  --- Filters and tests known by name -------------------------------------------------

typedef enum {
    FILTER_ABS, FILTER_ATTR, FILTER_BATCH, FILTER_CAPITALIZE, FILTER_CENTER, FILTER_COUNT,
    FILTER_DEFAULT, FILTER_DICTSORT, FILTER_ESCAPE, FILTER_FILESIZEFORMAT, FILTER_FIRST,
    FILTER_FLOAT, FILTER_FORCEESCAPE, FILTER_FORMAT, FILTER_GROUPBY, FILTER_INDENT,
    FILTER_INT, FILTER_JOIN, FILTER_LAST, FILTER_LENGTH, FILTER_LIST, FILTER_LOWER,
    FILTER_ITEMS, FILTER_MAP, FILTER_MIN, FILTER_MAX, FILTER_PPRINT, FILTER_RANDOM,
    FILTER_REJECT, FILTER_REJECTATTR, FILTER_REPLACE, FILTER_REVERSE, FILTER_ROUND,
    FILTER_SAFE, FILTER_SELECT, FILTER_SELECTATTR, FILTER_SLICE, FILTER_SORT, FILTER_STRING,
    FILTER_STRIPTAGS, FILTER_SUM, FILTER_TITLE, FILTER_TRIM, FILTER_TRUNCATE, FILTER_UNIQUE,
    FILTER_UPPER, FILTER_URLENCODE, FILTER_URLIZE, FILTER_WORDCOUNT, FILTER_WORDWRAP,
    FILTER_XMLATTR, FILTER_TOJSON
} filter_id_t;

static const struct {
    const char *name;
    filter_id_t id;
} s_filter_names [] = {
    { "abs", FILTER_ABS }, { "attr", FILTER_ATTR }, { "batch", FILTER_BATCH },
    { "capitalize", FILTER_CAPITALIZE }, { "center", FILTER_CENTER },
    { "count", FILTER_COUNT }, { "d", FILTER_DEFAULT }, { "default", FILTER_DEFAULT },
    { "dictsort", FILTER_DICTSORT }, { "e", FILTER_ESCAPE }, { "escape", FILTER_ESCAPE },
    { "filesizeformat", FILTER_FILESIZEFORMAT }, { "first", FILTER_FIRST },
    { "float", FILTER_FLOAT }, { "forceescape", FILTER_FORCEESCAPE },
    { "format", FILTER_FORMAT }, { "groupby", FILTER_GROUPBY }, { "indent", FILTER_INDENT },
    { "int", FILTER_INT }, { "join", FILTER_JOIN }, { "last", FILTER_LAST },
    { "length", FILTER_LENGTH }, { "list", FILTER_LIST }, { "lower", FILTER_LOWER },
    { "items", FILTER_ITEMS }, { "map", FILTER_MAP }, { "min", FILTER_MIN },
    { "max", FILTER_MAX }, { "pprint", FILTER_PPRINT }, { "random", FILTER_RANDOM },
    { "reject", FILTER_REJECT }, { "rejectattr", FILTER_REJECTATTR },
    { "replace", FILTER_REPLACE }, { "reverse", FILTER_REVERSE }, { "round", FILTER_ROUND },
    { "safe", FILTER_SAFE }, { "select", FILTER_SELECT }, { "selectattr", FILTER_SELECTATTR },
    { "slice", FILTER_SLICE }, { "sort", FILTER_SORT }, { "string", FILTER_STRING },
    { "striptags", FILTER_STRIPTAGS }, { "sum", FILTER_SUM }, { "title", FILTER_TITLE },
    { "trim", FILTER_TRIM }, { "truncate", FILTER_TRUNCATE }, { "unique", FILTER_UNIQUE },
    { "upper", FILTER_UPPER }, { "urlencode", FILTER_URLENCODE }, { "urlize", FILTER_URLIZE },
    { "wordcount", FILTER_WORDCOUNT }, { "wordwrap", FILTER_WORDWRAP },
    { "xmlattr", FILTER_XMLATTR }, { "tojson", FILTER_TOJSON }
};

typedef enum {
    TEST_ODD, TEST_EVEN, TEST_DIVISIBLEBY, TEST_DEFINED, TEST_UNDEFINED, TEST_FILTER,
    TEST_TEST, TEST_NONE, TEST_BOOLEAN, TEST_FALSE, TEST_TRUE, TEST_INTEGER, TEST_FLOAT,
    TEST_LOWER, TEST_UPPER, TEST_STRING, TEST_MAPPING, TEST_NUMBER, TEST_SEQUENCE,
    TEST_ITERABLE, TEST_CALLABLE, TEST_SAMEAS, TEST_ESCAPED, TEST_IN, TEST_EQ, TEST_NE,
    TEST_GT, TEST_GE, TEST_LT, TEST_LE
} test_id_t;

static const struct {
    const char *name;
    test_id_t id;
} s_test_names [] = {
    { "odd", TEST_ODD }, { "even", TEST_EVEN }, { "divisibleby", TEST_DIVISIBLEBY },
    { "defined", TEST_DEFINED }, { "undefined", TEST_UNDEFINED }, { "filter", TEST_FILTER },
    { "test", TEST_TEST }, { "none", TEST_NONE }, { "boolean", TEST_BOOLEAN },
    { "false", TEST_FALSE }, { "true", TEST_TRUE }, { "integer", TEST_INTEGER },
    { "float", TEST_FLOAT }, { "lower", TEST_LOWER }, { "upper", TEST_UPPER },
    { "string", TEST_STRING }, { "mapping", TEST_MAPPING }, { "number", TEST_NUMBER },
    { "sequence", TEST_SEQUENCE }, { "iterable", TEST_ITERABLE },
    { "callable", TEST_CALLABLE }, { "sameas", TEST_SAMEAS }, { "escaped", TEST_ESCAPED },
    { "in", TEST_IN }, { "==", TEST_EQ }, { "eq", TEST_EQ }, { "equalto", TEST_EQ },
    { "!=", TEST_NE }, { "ne", TEST_NE }, { ">", TEST_GT }, { "gt", TEST_GT },
    { "greaterthan", TEST_GT }, { "ge", TEST_GE }, { ">=", TEST_GE }, { "<", TEST_LT },
    { "lt", TEST_LT }, { "lessthan", TEST_LT }, { "<=", TEST_LE }, { "le", TEST_LE }
};

//  The filter's id, or -1 for a name Jinja2 does not know.
static int
s_filter_lookup (const char *name)
{
    for (size_t index = 0; index < sizeof (s_filter_names) / sizeof (s_filter_names [0]); index++)
        if (strcmp (s_filter_names [index].name, name) == 0)
            return (int) s_filter_names [index].id;
    return -1;
}

static int
s_test_lookup (const char *name)
{
    for (size_t index = 0; index < sizeof (s_test_names) / sizeof (s_test_names [0]); index++)
        if (strcmp (s_test_names [index].name, name) == 0)
            return (int) s_test_names [index].id;
    return -1;
}

//  --- The tree -------------------------------------------------------------------------

typedef enum {
    //  expressions
    NODE_CONST,                     //  value
    NODE_NAME,                      //  name
    NODE_GETATTR,                   //  a.name
    NODE_GETITEM,                   //  a[b]
    NODE_SLICE,                     //  a:b:c inside [], any of them NULL
    NODE_CALL,                      //  a(args, kwargs, *b, **c)
    NODE_FILTER,                    //  a | name(args, kwargs, *b, **c); a NULL in blocks
    NODE_TEST,                      //  a is name(args, kwargs, *b, **c)
    NODE_NOT,                       //  not a
    NODE_NEG,                       //  -a
    NODE_POS,                       //  +a
    NODE_BINARY,                    //  a op b (+ - * / // % **)
    NODE_CONCAT,                    //  args joined with ~
    NODE_COMPARE,                   //  a followed by args (NODE_OPERAND: op, a)
    NODE_OPERAND,
    NODE_AND,                       //  a and b
    NODE_OR,                        //  a or b
    NODE_CONDEXPR,                  //  b if a else c (c may be NULL)
    NODE_LIST,                      //  [args]
    NODE_TUPLE,                     //  (args)
    NODE_DICT,                      //  {args: NODE_PAIR a: b}
    NODE_PAIR,
    NODE_KEYWORD,                   //  name=a in calls
    NODE_NSREF,                     //  name.attr as an assignment target
    //  statements
    NODE_OUTPUT,                    //  print args (constants are the template's text)
    NODE_IF,                        //  if a: body else else_body
    NODE_FOR,                       //  for a in b if c: body else else_body (flag: recursive)
    NODE_SET,                       //  set a = b
    NODE_SET_BLOCK,                 //  set a | b: body
    NODE_MACRO,                     //  macro name(args: NODE_PARAM): body
    NODE_PARAM,                     //  name = a (default, may be NULL)
    NODE_CALL_BLOCK,                //  call(args: NODE_PARAM) a: body
    NODE_FILTER_BLOCK,              //  filter a: body
    NODE_BREAK,
    NODE_CONTINUE,
    NODE_WITH,                      //  with args (NODE_PARAM): body
    NODE_SCOPE                      //  a block that only renders its body ({% generation %})
} node_kind_t;

typedef struct _node_t node_t;

typedef struct {
    node_t **items;
    size_t count;
    size_t capacity;
} node_list_t;

//  What a macro's body refers to, which decides what a call may pass.
#define USES_CALLER     1
#define USES_VARARGS    2
#define USES_KWARGS     4

struct _node_t {
    node_kind_t kind;
    size_t offset;                  //  where it starts in the (normalized) source
    int depth;                      //  1 + the deepest child
    int op;                         //  NODE_BINARY, NODE_OPERAND: op_t
    int id;                         //  NODE_FILTER, NODE_TEST: filter_id_t, test_id_t or -1
    int uses;                       //  NODE_MACRO, NODE_CALL_BLOCK: USES_*
    bool flag;                      //  NODE_FOR: recursive
    char *name;
    char *attr;                     //  NODE_NSREF
    jinja_value_t *value;           //  NODE_CONST (frozen)
    node_t *a;
    node_t *b;
    node_t *c;
    node_list_t args;
    node_list_t kwargs;
    node_list_t body;
    node_list_t else_body;
};

static void
s_node_destroy (node_t **node_p)
{
    node_t *node = *node_p;
    if (!node)
        return;
    *node_p = NULL;
    node_list_t *lists [] = { &node->args, &node->kwargs, &node->body, &node->else_body };
    for (size_t list = 0; list < 4; list++) {
        for (size_t index = 0; index < lists [list]->count; index++)
            s_node_destroy (&lists [list]->items [index]);
        free (lists [list]->items);
    }
    s_node_destroy (&node->a);
    s_node_destroy (&node->b);
    s_node_destroy (&node->c);
    jinja_value_free_frozen (&node->value);
    free (node->name);
    free (node->attr);
    free (node);
}

//  --- Parser ---------------------------------------------------------------------------

typedef struct {
    lexer_t *lexer;
    size_t index;                   //  current token
    int depth;                      //  recursion of the parse functions
    int loop_depth;                 //  for loops around (break and continue need one)
    const char *end_tokens [32] [4];//  the tags each open block waits for
    const char *open_tags [32];
    size_t open_count;
    bool failed;
    size_t error_offset;
    char error [512];
} parser_t;

//  Line and column (1-based; columns count characters) of a source offset.
static void
s_source_position (const char *source, const size_t *line_starts, size_t line_count,
                   size_t offset, int *line, int *column)
{
    size_t low = 0, high = line_count;
    while (high - low > 1) {
        size_t middle = (low + high) / 2;
        if (line_starts [middle] <= offset)
            low = middle;
        else
            high = middle;
    }
    size_t start = line_starts [low];
    *line = (int) low + 1;
    *column = (int) jinja_utf8_length (source + start, offset - start) + 1;
}

static void *
s_parse_fail (parser_t *parser, size_t offset, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static void *
s_parse_fail (parser_t *parser, size_t offset, const char *format, ...)
{
    if (parser->failed)
        return NULL;
    parser->failed = true;
    parser->error_offset = offset;
    va_list args;
    va_start (args, format);
    vsnprintf (parser->error, sizeof (parser->error), format, args);
    va_end (args);
    return NULL;
}

static token_t *
s_current (parser_t *parser)
{
    return &parser->lexer->tokens [parser->index];
}

static token_t *
s_peek (parser_t *parser)
{
    size_t next = parser->index + 1;
    if (next >= parser->lexer->count)
        next = parser->lexer->count - 1;
    return &parser->lexer->tokens [next];
}

static void
s_advance (parser_t *parser)
{
    if (parser->index + 1 < parser->lexer->count)
        parser->index++;
}

static bool
s_token_is_name (parser_t *parser, const token_t *token, const char *name)
{
    size_t length = strlen (name);
    return token->type == TOKEN_NAME && token->end - token->start == length
        && memcmp (parser->lexer->source + token->start, name, length) == 0;
}

static bool
s_at_name (parser_t *parser, const char *name)
{
    return s_token_is_name (parser, s_current (parser), name);
}

static bool
s_at_op (parser_t *parser, op_t op)
{
    token_t *token = s_current (parser);
    return token->type == TOKEN_OPERATOR && token->op == op;
}

static bool
s_skip_name (parser_t *parser, const char *name)
{
    if (!s_at_name (parser, name))
        return false;
    s_advance (parser);
    return true;
}

static bool
s_skip_op (parser_t *parser, op_t op)
{
    if (!s_at_op (parser, op))
        return false;
    s_advance (parser);
    return true;
}

//  How Jinja2 names a token in messages.
static void
s_describe (parser_t *parser, const token_t *token, char *text, size_t size)
{
    switch (token->type) {
        case TOKEN_NAME:
            snprintf (text, size, "%.*s", (int) (token->end - token->start),
                      parser->lexer->source + token->start);
            return;
        case TOKEN_OPERATOR: snprintf (text, size, "%s", s_operator_text [token->op]); return;
        case TOKEN_DATA: snprintf (text, size, "template data / text"); return;
        case TOKEN_VARIABLE_BEGIN: snprintf (text, size, "begin of print statement"); return;
        case TOKEN_VARIABLE_END: snprintf (text, size, "end of print statement"); return;
        case TOKEN_BLOCK_BEGIN: snprintf (text, size, "begin of statement block"); return;
        case TOKEN_BLOCK_END: snprintf (text, size, "end of statement block"); return;
        case TOKEN_STRING: snprintf (text, size, "string"); return;
        case TOKEN_INTEGER: snprintf (text, size, "integer"); return;
        case TOKEN_FLOAT: snprintf (text, size, "float"); return;
        case TOKEN_EOF: snprintf (text, size, "end of template"); return;
    }
    snprintf (text, size, "token");
}

//  Fails with Jinja2's "expected token 'what', got '...'".
static void *
s_expected (parser_t *parser, const char *what)
{
    token_t *token = s_current (parser);
    if (token->type == TOKEN_EOF)
        return s_parse_fail (parser, token->offset,
                             "unexpected end of template, expected '%s'.", what);
    char got [64];
    s_describe (parser, token, got, sizeof (got));
    return s_parse_fail (parser, token->offset, "expected token '%s', got '%s'", what, got);
}

static bool
s_expect_op (parser_t *parser, op_t op)
{
    if (s_skip_op (parser, op))
        return true;
    s_expected (parser, s_operator_text [op]);
    return false;
}

static bool
s_expect_type (parser_t *parser, token_type_t type, const char *what)
{
    if (s_current (parser)->type == type) {
        s_advance (parser);
        return true;
    }
    s_expected (parser, what);
    return false;
}

//  A copy of the current name token's text (the caller frees), advancing past it.
static char *
s_expect_name (parser_t *parser)
{
    token_t *token = s_current (parser);
    if (token->type != TOKEN_NAME) {
        s_expected (parser, "name");
        return NULL;
    }
    size_t length = token->end - token->start;
    char *name = malloc (length + 1);
    if (!name)
        return s_parse_fail (parser, token->offset, "out of memory");
    memcpy (name, parser->lexer->source + token->start, length);
    name [length] = 0;
    s_advance (parser);
    return name;
}

static node_t *
s_node_new (parser_t *parser, node_kind_t kind, size_t offset)
{
    node_t *node = calloc (1, sizeof (node_t));
    if (!node)
        return s_parse_fail (parser, offset, "out of memory");
    node->kind = kind;
    node->id = -1;
    node->offset = offset;
    node->depth = 1;
    return node;
}

static bool
s_list_push (parser_t *parser, node_list_t *list, node_t *node)
{
    if (list->count == list->capacity) {
        size_t capacity = list->capacity? list->capacity * 2: 4;
        node_t **items = realloc (list->items, capacity * sizeof (node_t *));
        if (!items) {
            s_parse_fail (parser, 0, "out of memory");
            return false;
        }
        list->items = items;
        list->capacity = capacity;
    }
    list->items [list->count++] = node;
    return true;
}

//  Sets the node's depth from its children; fails when the tree gets too deep.
static node_t *
s_finish (parser_t *parser, node_t *node)
{
    int depth = 0;
    node_t *children [] = { node->a, node->b, node->c };
    for (size_t index = 0; index < 3; index++)
        if (children [index] && children [index]->depth > depth)
            depth = children [index]->depth;
    node_list_t *lists [] = { &node->args, &node->kwargs, &node->body, &node->else_body };
    for (size_t list = 0; list < 4; list++)
        for (size_t index = 0; index < lists [list]->count; index++)
            if (lists [list]->items [index]->depth > depth)
                depth = lists [list]->items [index]->depth;
    node->depth = depth + 1;
    if (node->depth > MAX_AST_DEPTH) {
        s_parse_fail (parser, node->offset, "the template is nested too deeply");
        s_node_destroy (&node);
        return NULL;
    }
    return node;
}

//  Parse functions return a node, or NULL with the parser failed.
static node_t *s_parse_expression (parser_t *parser, bool with_condexpr);
static node_t *s_parse_tuple (parser_t *parser, bool simplified, bool with_condexpr,
                              const char *extra_end, bool explicit_parentheses,
                              bool with_namespace);
static node_t *s_parse_unary (parser_t *parser, bool with_filter);
static node_t *s_parse_primary (parser_t *parser, bool with_namespace);
static node_t *s_parse_postfix (parser_t *parser, node_t *node);
static node_t *s_parse_filter (parser_t *parser, node_t *node, bool start_inline);
static bool s_subparse (parser_t *parser, node_list_t *body, const char *const *end_tokens,
                        const char *tag);

static bool
s_enter (parser_t *parser)
{
    if (++parser->depth > MAX_AST_DEPTH) {
        s_parse_fail (parser, s_current (parser)->offset, "the template is nested too deeply");
        return false;
    }
    return true;
}

static void
s_leave (parser_t *parser)
{
    parser->depth--;
}

//  Call arguments after the "(": positional into args, keyword into kwargs, *x into
//  node->b, **x into node->c.
static bool
s_parse_call_args (parser_t *parser, node_t *node)
{
    size_t offset = s_current (parser)->offset;
    if (!s_expect_op (parser, OP_LPAREN))
        return false;
    bool require_comma = false;
    while (!s_at_op (parser, OP_RPAREN)) {
        if (require_comma) {
            if (!s_expect_op (parser, OP_COMMA))
                return false;
            if (s_at_op (parser, OP_RPAREN))
                break;
        }
        if (s_at_op (parser, OP_MUL)) {
            if (node->b || node->c) {
                s_parse_fail (parser, offset, "invalid syntax for function call expression");
                return false;
            }
            s_advance (parser);
            node->b = s_parse_expression (parser, true);
            if (!node->b)
                return false;
        }
        else
        if (s_at_op (parser, OP_POW)) {
            if (node->c) {
                s_parse_fail (parser, offset, "invalid syntax for function call expression");
                return false;
            }
            s_advance (parser);
            node->c = s_parse_expression (parser, true);
            if (!node->c)
                return false;
        }
        else
        if (s_current (parser)->type == TOKEN_NAME && s_peek (parser)->type == TOKEN_OPERATOR
        &&  s_peek (parser)->op == OP_ASSIGN) {
            if (node->c) {
                s_parse_fail (parser, offset, "invalid syntax for function call expression");
                return false;
            }
            node_t *keyword = s_node_new (parser, NODE_KEYWORD, s_current (parser)->offset);
            if (!keyword)
                return false;
            keyword->name = s_expect_name (parser);
            s_advance (parser);     //  =
            keyword->a = keyword->name? s_parse_expression (parser, true): NULL;
            if (!keyword->a || !(keyword = s_finish (parser, keyword))) {
                s_node_destroy (&keyword);
                return false;
            }
            if (!s_list_push (parser, &node->kwargs, keyword)) {
                s_node_destroy (&keyword);
                return false;
            }
        }
        else {
            if (node->b || node->c || node->kwargs.count) {
                s_parse_fail (parser, offset, "invalid syntax for function call expression");
                return false;
            }
            node_t *argument = s_parse_expression (parser, true);
            if (!argument)
                return false;
            if (!s_list_push (parser, &node->args, argument)) {
                s_node_destroy (&argument);
                return false;
            }
        }
        require_comma = true;
    }
    return s_expect_op (parser, OP_RPAREN);
}

//  A filter or test name: name(.name)*
static char *
s_parse_dotted_name (parser_t *parser)
{
    char *name = s_expect_name (parser);
    while (name && s_at_op (parser, OP_DOT)) {
        s_advance (parser);
        char *part = s_expect_name (parser);
        if (!part) {
            free (name);
            return NULL;
        }
        char *joined = malloc (strlen (name) + strlen (part) + 2);
        if (joined)
            sprintf (joined, "%s.%s", name, part);
        free (name);
        free (part);
        name = joined;
        if (!name)
            return s_parse_fail (parser, s_current (parser)->offset, "out of memory");
    }
    return name;
}

static node_t *
s_parse_filter (parser_t *parser, node_t *node, bool start_inline)
{
    while (s_at_op (parser, OP_PIPE) || start_inline) {
        if (!start_inline)
            s_advance (parser);
        start_inline = false;
        node_t *filter = s_node_new (parser, NODE_FILTER, s_current (parser)->offset);
        if (!filter) {
            s_node_destroy (&node);
            return NULL;
        }
        filter->a = node;
        filter->name = s_parse_dotted_name (parser);
        if (!filter->name
        ||  (s_at_op (parser, OP_LPAREN) && !s_parse_call_args (parser, filter))) {
            s_node_destroy (&filter);
            return NULL;
        }
        filter->id = s_filter_lookup (filter->name);
        node = s_finish (parser, filter);
        if (!node)
            return NULL;
    }
    return node;
}

static node_t *
s_parse_test (parser_t *parser, node_t *node)
{
    token_t *is_token = s_current (parser);
    s_advance (parser);             //  is
    bool negated = s_skip_name (parser, "not");
    node_t *test = s_node_new (parser, NODE_TEST, is_token->offset);
    if (!test) {
        s_node_destroy (&node);
        return NULL;
    }
    test->a = node;
    test->name = s_parse_dotted_name (parser);
    if (!test->name) {
        s_node_destroy (&test);
        return NULL;
    }
    token_t *token = s_current (parser);
    if (s_at_op (parser, OP_LPAREN)) {
        if (!s_parse_call_args (parser, test)) {
            s_node_destroy (&test);
            return NULL;
        }
    }
    else
    if ((token->type == TOKEN_NAME || token->type == TOKEN_STRING
         || token->type == TOKEN_INTEGER || token->type == TOKEN_FLOAT
         || (token->type == TOKEN_OPERATOR
             && (token->op == OP_LPAREN || token->op == OP_LBRACKET || token->op == OP_LBRACE)))
    &&  !s_at_name (parser, "else") && !s_at_name (parser, "or") && !s_at_name (parser, "and")) {
        if (s_at_name (parser, "is")) {
            s_node_destroy (&test);
            return s_parse_fail (parser, token->offset, "You cannot chain multiple tests with is");
        }
        node_t *argument = s_parse_primary (parser, false);
        if (argument)
            argument = s_parse_postfix (parser, argument);
        if (!argument || !s_list_push (parser, &test->args, argument)) {
            s_node_destroy (&argument);
            s_node_destroy (&test);
            return NULL;
        }
    }
    test->id = s_test_lookup (test->name);
    test = s_finish (parser, test);
    if (!test || !negated)
        return test;
    node_t *not_node = s_node_new (parser, NODE_NOT, is_token->offset);
    if (!not_node) {
        s_node_destroy (&test);
        return NULL;
    }
    not_node->a = test;
    return s_finish (parser, not_node);
}

static node_t *
s_parse_subscribed (parser_t *parser)
{
    size_t offset = s_current (parser)->offset;
    node_t *start = NULL;
    if (s_at_op (parser, OP_COLON))
        s_advance (parser);
    else {
        start = s_parse_expression (parser, true);
        if (!start || !s_at_op (parser, OP_COLON))
            return start;
        s_advance (parser);
    }
    node_t *slice = s_node_new (parser, NODE_SLICE, offset);
    if (!slice) {
        s_node_destroy (&start);
        return NULL;
    }
    slice->a = start;
    if (!s_at_op (parser, OP_COLON) && !s_at_op (parser, OP_RBRACKET)
    &&  !s_at_op (parser, OP_COMMA)) {
        slice->b = s_parse_expression (parser, true);
        if (!slice->b) {
            s_node_destroy (&slice);
            return NULL;
        }
    }
    if (s_at_op (parser, OP_COLON)) {
        s_advance (parser);
        if (!s_at_op (parser, OP_RBRACKET) && !s_at_op (parser, OP_COMMA)) {
            slice->c = s_parse_expression (parser, true);
            if (!slice->c) {
                s_node_destroy (&slice);
                return NULL;
            }
        }
    }
    return s_finish (parser, slice);
}

static node_t *
s_parse_subscript (parser_t *parser, node_t *node)
{
    token_t *token = s_current (parser);
    s_advance (parser);
    if (token->op == OP_DOT) {
        token_t *attr = s_current (parser);
        if (attr->type == TOKEN_NAME) {
            node_t *getattr = s_node_new (parser, NODE_GETATTR, token->offset);
            if (!getattr) {
                s_node_destroy (&node);
                return NULL;
            }
            getattr->a = node;
            getattr->name = s_expect_name (parser);
            if (!getattr->name) {
                s_node_destroy (&getattr);
                return NULL;
            }
            return s_finish (parser, getattr);
        }
        if (attr->type != TOKEN_INTEGER) {
            s_node_destroy (&node);
            return s_parse_fail (parser, attr->offset, "expected name or number");
        }
        s_advance (parser);
        node_t *getitem = s_node_new (parser, NODE_GETITEM, token->offset);
        node_t *index = s_node_new (parser, NODE_CONST, attr->offset);
        if (!getitem || !index) {
            s_node_destroy (&getitem);
            s_node_destroy (&index);
            s_node_destroy (&node);
            return NULL;
        }
        index->value = jinja_value_new_int (NULL, attr->integer);
        jinja_value_freeze (index->value);
        getitem->a = node;
        getitem->b = index;
        if (!index->value) {
            s_node_destroy (&getitem);
            return s_parse_fail (parser, attr->offset, "out of memory");
        }
        return s_finish (parser, getitem);
    }
    //  [ ... ]
    node_t *getitem = s_node_new (parser, NODE_GETITEM, token->offset);
    node_t *tuple = s_node_new (parser, NODE_TUPLE, token->offset);
    if (!getitem || !tuple) {
        s_node_destroy (&getitem);
        s_node_destroy (&tuple);
        s_node_destroy (&node);
        return NULL;
    }
    getitem->a = node;
    while (!s_at_op (parser, OP_RBRACKET)) {
        if (tuple->args.count && !s_expect_op (parser, OP_COMMA))
            break;
        node_t *argument = s_parse_subscribed (parser);
        if (!argument || !s_list_push (parser, &tuple->args, argument)) {
            s_node_destroy (&argument);
            break;
        }
    }
    if (parser->failed || !s_expect_op (parser, OP_RBRACKET)) {
        s_node_destroy (&tuple);
        s_node_destroy (&getitem);
        return NULL;
    }
    if (tuple->args.count == 1) {
        getitem->b = tuple->args.items [0];
        tuple->args.count = 0;
        s_node_destroy (&tuple);
    }
    else {
        getitem->b = s_finish (parser, tuple);
        if (!getitem->b) {
            s_node_destroy (&getitem);
            return NULL;
        }
    }
    return s_finish (parser, getitem);
}

//  A call of node: node(args...). Takes node; NULL on error.
static node_t *
s_parse_call (parser_t *parser, node_t *node)
{
    node_t *call = s_node_new (parser, NODE_CALL, node->offset);
    if (!call) {
        s_node_destroy (&node);
        return NULL;
    }
    call->a = node;
    if (!s_parse_call_args (parser, call)) {
        s_node_destroy (&call);
        return NULL;
    }
    return s_finish (parser, call);
}

static node_t *
s_parse_postfix (parser_t *parser, node_t *node)
{
    while (node) {
        if (s_at_op (parser, OP_DOT) || s_at_op (parser, OP_LBRACKET))
            node = s_parse_subscript (parser, node);
        else
        if (s_at_op (parser, OP_LPAREN))
            node = s_parse_call (parser, node);
        else
            break;
    }
    return node;
}

static node_t *
s_parse_filter_expr (parser_t *parser, node_t *node)
{
    while (node) {
        if (s_at_op (parser, OP_PIPE))
            node = s_parse_filter (parser, node, false);
        else
        if (s_at_name (parser, "is"))
            node = s_parse_test (parser, node);
        else
        if (s_at_op (parser, OP_LPAREN))
            node = s_parse_call (parser, node);
        else
            break;
    }
    return node;
}

static node_t *
s_parse_list (parser_t *parser)
{
    node_t *list = s_node_new (parser, NODE_LIST, s_current (parser)->offset);
    if (!list)
        return NULL;
    s_advance (parser);             //  [
    while (!s_at_op (parser, OP_RBRACKET)) {
        if (list->args.count && !s_expect_op (parser, OP_COMMA))
            break;
        if (s_at_op (parser, OP_RBRACKET))
            break;
        node_t *item = s_parse_expression (parser, true);
        if (!item || !s_list_push (parser, &list->args, item)) {
            s_node_destroy (&item);
            break;
        }
    }
    if (parser->failed || !s_expect_op (parser, OP_RBRACKET)) {
        s_node_destroy (&list);
        return NULL;
    }
    return s_finish (parser, list);
}

static node_t *
s_parse_dict (parser_t *parser)
{
    node_t *dict = s_node_new (parser, NODE_DICT, s_current (parser)->offset);
    if (!dict)
        return NULL;
    s_advance (parser);             //  {
    while (!s_at_op (parser, OP_RBRACE)) {
        if (dict->args.count && !s_expect_op (parser, OP_COMMA))
            break;
        if (s_at_op (parser, OP_RBRACE))
            break;
        node_t *pair = s_node_new (parser, NODE_PAIR, s_current (parser)->offset);
        if (!pair)
            break;
        pair->a = s_parse_expression (parser, true);
        if (pair->a && s_expect_op (parser, OP_COLON))
            pair->b = s_parse_expression (parser, true);
        if (!pair->b || !(pair = s_finish (parser, pair))
        ||  !s_list_push (parser, &dict->args, pair)) {
            s_node_destroy (&pair);
            break;
        }
    }
    if (parser->failed || !s_expect_op (parser, OP_RBRACE)) {
        s_node_destroy (&dict);
        return NULL;
    }
    return s_finish (parser, dict);
}

static node_t *
s_const_node (parser_t *parser, size_t offset, jinja_value_t *value)
{
    if (!value)
        return s_parse_fail (parser, offset, "out of memory");
    node_t *node = s_node_new (parser, NODE_CONST, offset);
    if (!node) {
        jinja_value_unref (&value);
        return NULL;
    }
    jinja_value_freeze (value);
    node->value = value;
    return node;
}

static node_t *
s_parse_primary (parser_t *parser, bool with_namespace)
{
    token_t *token = s_current (parser);
    size_t offset = token->offset;
    if (token->type == TOKEN_NAME) {
        if (s_at_name (parser, "true") || s_at_name (parser, "True")) {
            s_advance (parser);
            return s_const_node (parser, offset, jinja_value_bool (true));
        }
        if (s_at_name (parser, "false") || s_at_name (parser, "False")) {
            s_advance (parser);
            return s_const_node (parser, offset, jinja_value_bool (false));
        }
        if (s_at_name (parser, "none") || s_at_name (parser, "None")) {
            s_advance (parser);
            return s_const_node (parser, offset, jinja_value_none ());
        }
        char *name = s_expect_name (parser);
        if (!name)
            return NULL;
        if (with_namespace && s_at_op (parser, OP_DOT)) {
            s_advance (parser);
            node_t *nsref = s_node_new (parser, NODE_NSREF, offset);
            if (!nsref) {
                free (name);
                return NULL;
            }
            nsref->name = name;
            nsref->attr = s_expect_name (parser);
            if (!nsref->attr) {
                s_node_destroy (&nsref);
                return NULL;
            }
            return nsref;
        }
        node_t *node = s_node_new (parser, NODE_NAME, offset);
        if (!node) {
            free (name);
            return NULL;
        }
        node->name = name;
        return node;
    }
    if (token->type == TOKEN_STRING) {
        //  adjacent strings are one
        size_t total = 0;
        size_t index = parser->index;
        while (parser->lexer->tokens [index].type == TOKEN_STRING)
            total += parser->lexer->tokens [index++].text_size;
        char *joined = malloc (total + 1);
        if (!joined)
            return s_parse_fail (parser, offset, "out of memory");
        size_t used = 0;
        while (s_current (parser)->type == TOKEN_STRING) {
            memcpy (joined + used, s_current (parser)->text, s_current (parser)->text_size);
            used += s_current (parser)->text_size;
            s_advance (parser);
        }
        jinja_value_t *value = jinja_value_new_string (NULL, joined, used, false);
        free (joined);
        return s_const_node (parser, offset, value);
    }
    if (token->type == TOKEN_INTEGER) {
        s_advance (parser);
        return s_const_node (parser, offset, jinja_value_new_int (NULL, token->integer));
    }
    if (token->type == TOKEN_FLOAT) {
        s_advance (parser);
        return s_const_node (parser, offset, jinja_value_new_float (NULL, token->number));
    }
    if (token->type == TOKEN_OPERATOR && token->op == OP_LPAREN) {
        s_advance (parser);
        node_t *node = s_parse_tuple (parser, false, true, NULL, true, false);
        if (node && !s_expect_op (parser, OP_RPAREN))
            s_node_destroy (&node);
        return node;
    }
    if (token->type == TOKEN_OPERATOR && token->op == OP_LBRACKET)
        return s_parse_list (parser);
    if (token->type == TOKEN_OPERATOR && token->op == OP_LBRACE)
        return s_parse_dict (parser);
    char text [64];
    s_describe (parser, token, text, sizeof (text));
    if (token->type == TOKEN_EOF)
        return s_parse_fail (parser, offset, "unexpected end of template");
    return s_parse_fail (parser, offset, "unexpected '%s'", text);
}

static node_t *
s_parse_unary (parser_t *parser, bool with_filter)
{
    if (!s_enter (parser))
        return NULL;
    size_t offset = s_current (parser)->offset;
    node_t *node;
    if (s_at_op (parser, OP_SUB) || s_at_op (parser, OP_ADD)) {
        node_kind_t kind = s_at_op (parser, OP_SUB)? NODE_NEG: NODE_POS;
        s_advance (parser);
        node_t *operand = s_parse_unary (parser, false);
        node = operand? s_node_new (parser, kind, offset): NULL;
        if (node) {
            node->a = operand;
            node = s_finish (parser, node);
        }
        else
            s_node_destroy (&operand);
    }
    else
        node = s_parse_primary (parser, false);
    node = s_parse_postfix (parser, node);
    if (with_filter)
        node = s_parse_filter_expr (parser, node);
    s_leave (parser);
    return node;
}

static node_t *
s_binary (parser_t *parser, node_kind_t kind, int op, size_t offset, node_t *left, node_t *right)
{
    if (!right) {
        s_node_destroy (&left);
        return NULL;
    }
    node_t *node = s_node_new (parser, kind, offset);
    if (!node) {
        s_node_destroy (&left);
        s_node_destroy (&right);
        return NULL;
    }
    node->op = op;
    node->a = left;
    node->b = right;
    return s_finish (parser, node);
}

static node_t *
s_parse_pow (parser_t *parser)
{
    size_t offset = s_current (parser)->offset;
    node_t *left = s_parse_unary (parser, true);
    while (left && s_at_op (parser, OP_POW)) {
        s_advance (parser);
        left = s_binary (parser, NODE_BINARY, OP_POW, offset, left, s_parse_unary (parser, true));
    }
    return left;
}

static node_t *
s_parse_math2 (parser_t *parser)
{
    size_t offset = s_current (parser)->offset;
    node_t *left = s_parse_pow (parser);
    while (left && (s_at_op (parser, OP_MUL) || s_at_op (parser, OP_DIV)
                    || s_at_op (parser, OP_FLOORDIV) || s_at_op (parser, OP_MOD))) {
        op_t op = s_current (parser)->op;
        s_advance (parser);
        left = s_binary (parser, NODE_BINARY, (int) op, offset, left, s_parse_pow (parser));
    }
    return left;
}

static node_t *
s_parse_concat (parser_t *parser)
{
    size_t offset = s_current (parser)->offset;
    node_t *first = s_parse_math2 (parser);
    if (!first || !s_at_op (parser, OP_TILDE))
        return first;
    node_t *concat = s_node_new (parser, NODE_CONCAT, offset);
    if (!concat || !s_list_push (parser, &concat->args, first)) {
        s_node_destroy (&first);
        s_node_destroy (&concat);
        return NULL;
    }
    while (s_at_op (parser, OP_TILDE)) {
        s_advance (parser);
        node_t *next = s_parse_math2 (parser);
        if (!next || !s_list_push (parser, &concat->args, next)) {
            s_node_destroy (&next);
            s_node_destroy (&concat);
            return NULL;
        }
    }
    return s_finish (parser, concat);
}

static node_t *
s_parse_math1 (parser_t *parser)
{
    size_t offset = s_current (parser)->offset;
    node_t *left = s_parse_concat (parser);
    while (left && (s_at_op (parser, OP_ADD) || s_at_op (parser, OP_SUB))) {
        op_t op = s_current (parser)->op;
        s_advance (parser);
        left = s_binary (parser, NODE_BINARY, (int) op, offset, left, s_parse_concat (parser));
    }
    return left;
}

static node_t *
s_parse_compare (parser_t *parser)
{
    size_t offset = s_current (parser)->offset;
    node_t *expr = s_parse_math1 (parser);
    if (!expr)
        return NULL;
    node_t *compare = NULL;
    while (true) {
        int op = -1;
        token_t *token = s_current (parser);
        if (token->type == TOKEN_OPERATOR
        &&  (token->op == OP_EQ || token->op == OP_NE || token->op == OP_LT
             || token->op == OP_LTEQ || token->op == OP_GT || token->op == OP_GTEQ)) {
            op = (int) token->op;
            s_advance (parser);
        }
        else
        if (s_at_name (parser, "in")) {
            op = OP_IN;
            s_advance (parser);
        }
        else
        if (s_at_name (parser, "not") && s_token_is_name (parser, s_peek (parser), "in")) {
            op = OP_NOTIN;
            s_advance (parser);
            s_advance (parser);
        }
        else
            break;
        if (!compare) {
            compare = s_node_new (parser, NODE_COMPARE, offset);
            if (!compare) {
                s_node_destroy (&expr);
                return NULL;
            }
            compare->a = expr;
        }
        node_t *operand = s_node_new (parser, NODE_OPERAND, token->offset);
        if (!operand) {
            s_node_destroy (&compare);
            return NULL;
        }
        operand->op = op;
        operand->a = s_parse_math1 (parser);
        if (!operand->a || !(operand = s_finish (parser, operand))
        ||  !s_list_push (parser, &compare->args, operand)) {
            s_node_destroy (&operand);
            s_node_destroy (&compare);
            return NULL;
        }
    }
    return compare? s_finish (parser, compare): expr;
}

static node_t *
s_parse_not (parser_t *parser)
{
    if (!s_at_name (parser, "not"))
        return s_parse_compare (parser);
    if (!s_enter (parser))
        return NULL;
    size_t offset = s_current (parser)->offset;
    s_advance (parser);
    node_t *operand = s_parse_not (parser);
    node_t *node = operand? s_node_new (parser, NODE_NOT, offset): NULL;
    if (node) {
        node->a = operand;
        node = s_finish (parser, node);
    }
    else
        s_node_destroy (&operand);
    s_leave (parser);
    return node;
}

static node_t *
s_parse_and (parser_t *parser)
{
    size_t offset = s_current (parser)->offset;
    node_t *left = s_parse_not (parser);
    while (left && s_skip_name (parser, "and"))
        left = s_binary (parser, NODE_AND, 0, offset, left, s_parse_not (parser));
    return left;
}

static node_t *
s_parse_or (parser_t *parser)
{
    size_t offset = s_current (parser)->offset;
    node_t *left = s_parse_and (parser);
    while (left && s_skip_name (parser, "or"))
        left = s_binary (parser, NODE_OR, 0, offset, left, s_parse_and (parser));
    return left;
}

static node_t *
s_parse_condexpr (parser_t *parser)
{
    if (!s_enter (parser))
        return NULL;
    size_t offset = s_current (parser)->offset;
    node_t *expr = s_parse_or (parser);
    while (expr && s_skip_name (parser, "if")) {
        node_t *node = s_node_new (parser, NODE_CONDEXPR, offset);
        if (!node) {
            s_node_destroy (&expr);
            break;
        }
        node->b = expr;
        expr = NULL;
        node->a = s_parse_or (parser);
        if (node->a && s_skip_name (parser, "else"))
            node->c = s_parse_condexpr (parser);
        if (!node->a || parser->failed) {
            s_node_destroy (&node);
            break;
        }
        expr = s_finish (parser, node);
        offset = s_current (parser)->offset;
    }
    s_leave (parser);
    return expr;
}

static node_t *
s_parse_expression (parser_t *parser, bool with_condexpr)
{
    return with_condexpr? s_parse_condexpr (parser): s_parse_or (parser);
}

static bool
s_is_tuple_end (parser_t *parser, const char *extra_end)
{
    token_t *token = s_current (parser);
    if (token->type == TOKEN_VARIABLE_END || token->type == TOKEN_BLOCK_END
    ||  (token->type == TOKEN_OPERATOR && token->op == OP_RPAREN))
        return true;
    return extra_end && s_at_name (parser, extra_end);
}

static node_t *
s_parse_tuple (parser_t *parser, bool simplified, bool with_condexpr, const char *extra_end,
               bool explicit_parentheses, bool with_namespace)
{
    size_t offset = s_current (parser)->offset;
    node_t *tuple = s_node_new (parser, NODE_TUPLE, offset);
    if (!tuple)
        return NULL;
    bool is_tuple = false;
    while (true) {
        if (tuple->args.count && !s_expect_op (parser, OP_COMMA))
            break;
        if (s_is_tuple_end (parser, extra_end))
            break;
        node_t *item = simplified? s_parse_primary (parser, with_namespace):
                                   s_parse_expression (parser, with_condexpr);
        if (!item || !s_list_push (parser, &tuple->args, item)) {
            s_node_destroy (&item);
            break;
        }
        if (s_at_op (parser, OP_COMMA))
            is_tuple = true;
        else
            break;
    }
    if (parser->failed) {
        s_node_destroy (&tuple);
        return NULL;
    }
    if (!is_tuple) {
        if (tuple->args.count) {
            node_t *single = tuple->args.items [0];
            tuple->args.count = 0;
            s_node_destroy (&tuple);
            return single;
        }
        if (!explicit_parentheses) {
            char text [64];
            s_describe (parser, s_current (parser), text, sizeof (text));
            s_node_destroy (&tuple);
            return s_parse_fail (parser, s_current (parser)->offset,
                                 "Expected an expression, got '%s'", text);
        }
    }
    return s_finish (parser, tuple);
}

//  An assignment target: a name, a namespace attribute, or a tuple of names.
static node_t *
s_parse_assign_target (parser_t *parser, bool with_tuple, bool name_only,
                       const char *extra_end, bool with_namespace)
{
    size_t offset = s_current (parser)->offset;
    node_t *target;
    if (name_only) {
        target = s_node_new (parser, NODE_NAME, offset);
        if (!target)
            return NULL;
        target->name = s_expect_name (parser);
        if (!target->name) {
            s_node_destroy (&target);
            return NULL;
        }
        return target;
    }
    target = with_tuple? s_parse_tuple (parser, true, true, extra_end, false, with_namespace):
                         s_parse_primary (parser, with_namespace);
    if (!target)
        return NULL;
    bool valid = target->kind == NODE_NAME || target->kind == NODE_NSREF;
    if (target->kind == NODE_TUPLE) {
        valid = true;
        for (size_t index = 0; index < target->args.count; index++)
            if (target->args.items [index]->kind != NODE_NAME)
                valid = false;
    }
    if (valid && target->kind == NODE_NAME
    &&  (strcmp (target->name, "true") == 0 || strcmp (target->name, "false") == 0
         || strcmp (target->name, "none") == 0))
        valid = false;
    if (!valid) {
        const char *what = target->kind == NODE_CONST? "const": target->kind == NODE_TUPLE?
                           "tuple": "expression";
        s_node_destroy (&target);
        return s_parse_fail (parser, offset, "can't assign to '%s'", what);
    }
    return target;
}

//  The body of a block up to one of end_tokens: "{% ... %}" body "{% end... ".
//  Leaves the current token at the end tag's name (or after it when drop_needle).
static bool
s_parse_statements (parser_t *parser, node_list_t *body, const char *const *end_tokens,
                    const char *tag, bool drop_needle)
{
    s_skip_op (parser, OP_COLON);
    if (!s_expect_type (parser, TOKEN_BLOCK_END, "end of statement block"))
        return false;
    if (!s_subparse (parser, body, end_tokens, tag))
        return false;
    if (drop_needle)
        s_advance (parser);
    return true;
}

static node_t *
s_parse_for (parser_t *parser, size_t offset)
{
    node_t *node = s_node_new (parser, NODE_FOR, offset);
    if (!node)
        return NULL;
    node->a = s_parse_assign_target (parser, true, false, "in", false);
    if (!node->a || node->a->kind == NODE_NSREF) {
        if (node->a)
            s_parse_fail (parser, offset, "can't assign to 'nsref'");
        s_node_destroy (&node);
        return NULL;
    }
    if (!s_skip_name (parser, "in")) {
        s_expected (parser, "in");
        s_node_destroy (&node);
        return NULL;
    }
    node->b = s_parse_tuple (parser, false, false, "recursive", false, false);
    if (node->b && s_skip_name (parser, "if"))
        node->c = s_parse_expression (parser, true);
    if (parser->failed) {
        s_node_destroy (&node);
        return NULL;
    }
    node->flag = s_skip_name (parser, "recursive");
    static const char *const body_end [] = { "endfor", "else", NULL };
    static const char *const else_end [] = { "endfor", NULL };
    parser->loop_depth++;
    bool ok = s_parse_statements (parser, &node->body, body_end, "for", false);
    parser->loop_depth--;
    if (ok && s_at_name (parser, "else")) {
        s_advance (parser);
        ok = s_parse_statements (parser, &node->else_body, else_end, "for", true);
    }
    else
    if (ok)
        s_advance (parser);
    if (!ok) {
        s_node_destroy (&node);
        return NULL;
    }
    return s_finish (parser, node);
}

//  An if: a is the test, args the elif branches (NODE_IF with a test and a body),
//  else_body what runs when no test holds.
static node_t *
s_parse_if (parser_t *parser, size_t offset)
{
    node_t *node = s_node_new (parser, NODE_IF, offset);
    if (!node)
        return NULL;
    static const char *const body_end [] = { "elif", "else", "endif", NULL };
    static const char *const else_end [] = { "endif", NULL };
    node_t *branch = node;
    while (true) {
        branch->a = s_parse_tuple (parser, false, false, NULL, false, false);
        if (!branch->a || !s_parse_statements (parser, &branch->body, body_end, "if", false))
            break;
        if (branch != node && !s_finish (parser, branch)) {
            node->args.count--;     //  s_finish destroyed it
            break;
        }
        if (s_at_name (parser, "elif")) {
            size_t elif_offset = s_current (parser)->offset;
            s_advance (parser);
            branch = s_node_new (parser, NODE_IF, elif_offset);
            if (!branch || !s_list_push (parser, &node->args, branch)) {
                s_node_destroy (&branch);
                break;
            }
            continue;
        }
        if (s_at_name (parser, "else")) {
            s_advance (parser);
            s_parse_statements (parser, &node->else_body, else_end, "if", true);
        }
        else
            s_advance (parser);     //  endif
        break;
    }
    if (parser->failed) {
        s_node_destroy (&node);
        return NULL;
    }
    return s_finish (parser, node);
}

static node_t *
s_parse_set (parser_t *parser, size_t offset)
{
    node_t *target = s_parse_assign_target (parser, true, false, NULL, true);
    if (!target)
        return NULL;
    if (s_skip_op (parser, OP_ASSIGN)) {
        node_t *node = s_node_new (parser, NODE_SET, offset);
        if (!node) {
            s_node_destroy (&target);
            return NULL;
        }
        node->a = target;
        node->b = s_parse_tuple (parser, false, true, NULL, false, false);
        if (!node->b) {
            s_node_destroy (&node);
            return NULL;
        }
        return s_finish (parser, node);
    }
    node_t *node = s_node_new (parser, NODE_SET_BLOCK, offset);
    if (!node) {
        s_node_destroy (&target);
        return NULL;
    }
    node->a = target;
    if (s_at_op (parser, OP_PIPE)) {
        node->b = s_parse_filter (parser, NULL, false);
        if (!node->b) {
            s_node_destroy (&node);
            return NULL;
        }
    }
    static const char *const end [] = { "endset", NULL };
    int loop_depth = parser->loop_depth;
    bool ok = s_parse_statements (parser, &node->body, end, "set", true);
    parser->loop_depth = loop_depth;
    if (!ok) {
        s_node_destroy (&node);
        return NULL;
    }
    return s_finish (parser, node);
}

//  Does anything under node use a name (caller, varargs, kwargs)?
static int
s_names_used (const node_t *node)
{
    if (!node)
        return 0;
    int uses = 0;
    if (node->kind == NODE_NAME) {
        if (strcmp (node->name, "caller") == 0)
            uses |= USES_CALLER;
        else
        if (strcmp (node->name, "varargs") == 0)
            uses |= USES_VARARGS;
        else
        if (strcmp (node->name, "kwargs") == 0)
            uses |= USES_KWARGS;
    }
    uses |= s_names_used (node->a) | s_names_used (node->b) | s_names_used (node->c);
    const node_list_t *lists [] = { &node->args, &node->kwargs, &node->body, &node->else_body };
    for (size_t list = 0; list < 4; list++)
        for (size_t index = 0; index < lists [list]->count; index++)
            uses |= s_names_used (lists [list]->items [index]);
    return uses;
}

//  (a, b=default, ...) of a macro or call block, into node->args as NODE_PARAMs.
static bool
s_parse_signature (parser_t *parser, node_t *node)
{
    if (!s_expect_op (parser, OP_LPAREN))
        return false;
    bool have_default = false;
    while (!s_at_op (parser, OP_RPAREN)) {
        if (node->args.count && !s_expect_op (parser, OP_COMMA))
            return false;
        node_t *param = s_node_new (parser, NODE_PARAM, s_current (parser)->offset);
        if (!param)
            return false;
        param->name = s_expect_name (parser);
        if (!param->name) {
            s_node_destroy (&param);
            return false;
        }
        if (s_skip_op (parser, OP_ASSIGN)) {
            param->a = s_parse_expression (parser, true);
            have_default = true;
            if (!param->a) {
                s_node_destroy (&param);
                return false;
            }
        }
        else
        if (have_default) {
            s_node_destroy (&param);
            s_parse_fail (parser, s_current (parser)->offset,
                          "non-default argument follows default argument");
            return false;
        }
        if (!(param = s_finish (parser, param)) || !s_list_push (parser, &node->args, param)) {
            s_node_destroy (&param);
            return false;
        }
    }
    return s_expect_op (parser, OP_RPAREN);
}

static node_t *
s_parse_macro (parser_t *parser, size_t offset)
{
    node_t *node = s_node_new (parser, NODE_MACRO, offset);
    if (!node)
        return NULL;
    node->name = s_expect_name (parser);
    static const char *const end [] = { "endmacro", NULL };
    int loop_depth = parser->loop_depth;
    parser->loop_depth = 0;
    bool ok = node->name && s_parse_signature (parser, node)
           && s_parse_statements (parser, &node->body, end, "macro", true);
    parser->loop_depth = loop_depth;
    if (!ok) {
        s_node_destroy (&node);
        return NULL;
    }
    for (size_t index = 0; index < node->body.count; index++)
        node->uses |= s_names_used (node->body.items [index]);
    return s_finish (parser, node);
}

static node_t *
s_parse_call_block (parser_t *parser, size_t offset)
{
    node_t *node = s_node_new (parser, NODE_CALL_BLOCK, offset);
    if (!node)
        return NULL;
    if (s_at_op (parser, OP_LPAREN) && !s_parse_signature (parser, node)) {
        s_node_destroy (&node);
        return NULL;
    }
    node->a = s_parse_expression (parser, true);
    if (node->a && node->a->kind != NODE_CALL)
        s_parse_fail (parser, offset, "expected call");
    static const char *const end [] = { "endcall", NULL };
    int loop_depth = parser->loop_depth;
    parser->loop_depth = 0;
    bool ok = !parser->failed && s_parse_statements (parser, &node->body, end, "call", true);
    parser->loop_depth = loop_depth;
    if (!ok) {
        s_node_destroy (&node);
        return NULL;
    }
    for (size_t index = 0; index < node->body.count; index++)
        node->uses |= s_names_used (node->body.items [index]);
    return s_finish (parser, node);
}

static node_t *
s_parse_filter_block (parser_t *parser, size_t offset)
{
    node_t *node = s_node_new (parser, NODE_FILTER_BLOCK, offset);
    if (!node)
        return NULL;
    node->a = s_parse_filter (parser, NULL, true);
    static const char *const end [] = { "endfilter", NULL };
    if (!node->a || !s_parse_statements (parser, &node->body, end, "filter", true)) {
        s_node_destroy (&node);
        return NULL;
    }
    return s_finish (parser, node);
}

static node_t *
s_parse_with (parser_t *parser, size_t offset)
{
    node_t *node = s_node_new (parser, NODE_WITH, offset);
    if (!node)
        return NULL;
    while (s_current (parser)->type != TOKEN_BLOCK_END) {
        if (node->args.count && !s_expect_op (parser, OP_COMMA))
            break;
        node_t *param = s_node_new (parser, NODE_PARAM, s_current (parser)->offset);
        if (!param)
            break;
        param->name = s_expect_name (parser);
        if (param->name && s_expect_op (parser, OP_ASSIGN))
            param->a = s_parse_expression (parser, true);
        if (!param->a || !(param = s_finish (parser, param))
        ||  !s_list_push (parser, &node->args, param)) {
            s_node_destroy (&param);
            break;
        }
    }
    static const char *const end [] = { "endwith", NULL };
    if (parser->failed || !s_parse_statements (parser, &node->body, end, "with", true)) {
        s_node_destroy (&node);
        return NULL;
    }
    return s_finish (parser, node);
}

static node_t *
s_parse_print (parser_t *parser, size_t offset)
{
    node_t *node = s_node_new (parser, NODE_OUTPUT, offset);
    if (!node)
        return NULL;
    while (s_current (parser)->type != TOKEN_BLOCK_END) {
        if (node->args.count && !s_expect_op (parser, OP_COMMA))
            break;
        node_t *item = s_parse_expression (parser, true);
        if (!item || !s_list_push (parser, &node->args, item)) {
            s_node_destroy (&item);
            break;
        }
    }
    if (parser->failed) {
        s_node_destroy (&node);
        return NULL;
    }
    return s_finish (parser, node);
}

//  Jinja2's message for a tag nobody expected, naming what the open blocks wait for.
static void *
s_unknown_tag (parser_t *parser, const char *name, size_t offset, bool at_eof)
{
    char expected [256] = "";
    const char *innermost = NULL;
    if (parser->open_count) {
        size_t used = 0;
        for (size_t level = parser->open_count; level-- > 0;) {
            for (size_t index = 0; parser->end_tokens [level] [index]; index++) {
                int written = snprintf (expected + used, sizeof (expected) - used, "%s'%s'",
                                        used? " or ": "", parser->end_tokens [level] [index]);
                if (written > 0 && used + (size_t) written < sizeof (expected))
                    used += (size_t) written;
            }
        }
        innermost = parser->open_tags [parser->open_count - 1];
    }
    char message [400];
    if (at_eof)
        snprintf (message, sizeof (message), "Unexpected end of template.");
    else
        snprintf (message, sizeof (message), "Encountered unknown tag '%s'.", name);
    if (innermost)
        return s_parse_fail (parser, offset, "%s Jinja was looking for the following tags: %s."
                             " The innermost block that needs to be closed is '%s'.",
                             message, expected, innermost);
    return s_parse_fail (parser, offset, "%s", message);
}

static node_t *
s_parse_statement (parser_t *parser)
{
    token_t *token = s_current (parser);
    size_t offset = token->offset;
    if (token->type != TOKEN_NAME)
        return s_parse_fail (parser, offset, "tag name expected");
    if (!s_enter (parser))
        return NULL;
    node_t *node = NULL;
    if (s_skip_name (parser, "for"))
        node = s_parse_for (parser, offset);
    else
    if (s_skip_name (parser, "if"))
        node = s_parse_if (parser, offset);
    else
    if (s_skip_name (parser, "set"))
        node = s_parse_set (parser, offset);
    else
    if (s_skip_name (parser, "macro"))
        node = s_parse_macro (parser, offset);
    else
    if (s_skip_name (parser, "call"))
        node = s_parse_call_block (parser, offset);
    else
    if (s_skip_name (parser, "filter"))
        node = s_parse_filter_block (parser, offset);
    else
    if (s_skip_name (parser, "with"))
        node = s_parse_with (parser, offset);
    else
    if (s_skip_name (parser, "print"))
        node = s_parse_print (parser, offset);
    else
    if (s_at_name (parser, "break") || s_at_name (parser, "continue")) {
        bool is_break = s_at_name (parser, "break");
        s_advance (parser);
        if (parser->loop_depth == 0)
            s_parse_fail (parser, offset, "'%s' outside loop", is_break? "break": "continue");
        else
            node = s_node_new (parser, is_break? NODE_BREAK: NODE_CONTINUE, offset);
    }
    else
    if (s_skip_name (parser, "generation")) {
        node = s_node_new (parser, NODE_SCOPE, offset);
        static const char *const end [] = { "endgeneration", NULL };
        if (node && !s_parse_statements (parser, &node->body, end, "generation", true))
            s_node_destroy (&node);
        if (node)
            node = s_finish (parser, node);
    }
    else {
        char name [64];
        s_describe (parser, token, name, sizeof (name));
        static const char *const unsupported [] = {
            "block", "extends", "include", "import", "from", "autoescape", NULL
        };
        for (size_t index = 0; unsupported [index]; index++)
            if (strcmp (name, unsupported [index]) == 0) {
                s_leave (parser);
                return s_parse_fail (parser, offset, "the '%s' tag is not supported", name);
            }
        s_unknown_tag (parser, name, offset, false);
    }
    s_leave (parser);
    if (parser->failed)
        s_node_destroy (&node);
    return node;
}

//  Statements and text until a {% tag %} named in end_tokens (NULL: until the end).
static bool
s_subparse (parser_t *parser, node_list_t *body, const char *const *end_tokens, const char *tag)
{
    if (end_tokens) {
        if (parser->open_count == 32) {
            s_parse_fail (parser, s_current (parser)->offset, "the template is nested too deeply");
            return false;
        }
        size_t count = 0;
        while (count < 3 && end_tokens [count]) {
            parser->end_tokens [parser->open_count] [count] = end_tokens [count];
            count++;
        }
        parser->end_tokens [parser->open_count] [count] = NULL;
        parser->open_tags [parser->open_count] = tag;
        parser->open_count++;
    }
    node_t *output = NULL;          //  consecutive text and {{ }} go into one output
    bool ok = true;
    while (ok) {
        token_t *token = s_current (parser);
        if (token->type == TOKEN_EOF)
            break;
        if (token->type == TOKEN_DATA || token->type == TOKEN_VARIABLE_BEGIN) {
            if (!output) {
                output = s_node_new (parser, NODE_OUTPUT, token->offset);
                if (!output || !s_list_push (parser, body, output)) {
                    s_node_destroy (&output);
                    ok = false;
                    break;
                }
            }
            node_t *item;
            if (token->type == TOKEN_DATA) {
                item = s_const_node (parser, token->offset,
                                     jinja_value_new_string (NULL, parser->lexer->source + token->start,
                                                             token->end - token->start, false));
                s_advance (parser);
            }
            else {
                s_advance (parser);
                item = s_parse_tuple (parser, false, true, NULL, false, false);
                if (item && !s_expect_type (parser, TOKEN_VARIABLE_END, "end of print statement"))
                    s_node_destroy (&item);
            }
            if (!item || !s_list_push (parser, &output->args, item)) {
                s_node_destroy (&item);
                ok = false;
            }
            continue;
        }
        if (token->type != TOKEN_BLOCK_BEGIN) {
            s_parse_fail (parser, token->offset, "internal parsing error");
            ok = false;
            break;
        }
        if (output) {
            //  the output is complete: fix its depth
            if (!s_finish (parser, output)) {
                body->count--;
                ok = false;
                break;
            }
            output = NULL;
        }
        s_advance (parser);
        if (end_tokens) {
            bool at_end = false;
            for (size_t index = 0; end_tokens [index]; index++)
                if (s_at_name (parser, end_tokens [index]))
                    at_end = true;
            if (at_end)
                break;
        }
        node_t *statement = s_parse_statement (parser);
        if (!statement || !s_list_push (parser, body, statement)) {
            s_node_destroy (&statement);
            ok = false;
            break;
        }
        if (!s_expect_type (parser, TOKEN_BLOCK_END, "end of statement block"))
            ok = false;
    }
    if (ok && output && !s_finish (parser, output)) {
        body->count--;
        ok = false;
    }
    if (ok && end_tokens && s_current (parser)->type == TOKEN_EOF) {
        s_unknown_tag (parser, NULL, s_current (parser)->offset, true);
        ok = false;
    }
    if (end_tokens)
        parser->open_count--;
    return ok && !parser->failed;
}

//  Jinja2's compiler refuses a filter or test it does not know, except inside an if
//  (or an inline if), where the error waits until the expression runs.
static bool s_check_names (parser_t *parser, const node_t *node, bool soft);

static bool
s_check_list (parser_t *parser, const node_list_t *list, bool soft)
{
    for (size_t index = 0; index < list->count; index++)
        if (!s_check_names (parser, list->items [index], soft))
            return false;
    return true;
}

static bool
s_check_names (parser_t *parser, const node_t *node, bool soft)
{
    if (!node)
        return true;
    if ((node->kind == NODE_FILTER || node->kind == NODE_TEST) && node->id < 0 && !soft) {
        s_parse_fail (parser, node->offset, "No %s named '%s'.",
                      node->kind == NODE_FILTER? "filter": "test", node->name);
        return false;
    }
    switch (node->kind) {
        case NODE_IF:
        case NODE_CONDEXPR:
            soft = true;
            break;
        case NODE_FOR:
            //  the iterable is evaluated outside the loop's scope
            return s_check_names (parser, node->b, soft) && s_check_names (parser, node->a, false)
                && s_check_names (parser, node->c, false)
                && s_check_list (parser, &node->body, false)
                && s_check_list (parser, &node->else_body, false);
        case NODE_CALL_BLOCK:
            return s_check_names (parser, node->a, soft)
                && s_check_list (parser, &node->args, false)
                && s_check_list (parser, &node->body, false);
        case NODE_WITH:
            return s_check_list (parser, &node->args, soft)
                && s_check_list (parser, &node->body, false);
        case NODE_MACRO:
        case NODE_FILTER_BLOCK:
        case NODE_SET_BLOCK:
            soft = false;
            break;
        default:
            break;
    }
    return s_check_names (parser, node->a, soft) && s_check_names (parser, node->b, soft)
        && s_check_names (parser, node->c, soft) && s_check_list (parser, &node->args, soft)
        && s_check_list (parser, &node->kwargs, soft) && s_check_list (parser, &node->body, soft)
        && s_check_list (parser, &node->else_body, soft);
}

//  --- Rendering: context and errors ---------------------------------------------------

struct _jinja_template_t {
    node_list_t body;
    char *source;                   //  normalized: for the positions in error messages
    size_t *line_starts;
    size_t line_count;
};

//  Kinds of callables (jinja_value_t.u.callable.kind).
typedef enum {
    CALL_BUILTIN,                   //  id: builtin_id_t
    CALL_METHOD,                    //  id: method_id_t, self: the receiver
    CALL_MACRO,                     //  node: NODE_MACRO or NODE_CALL_BLOCK (caller)
    CALL_LOOP                       //  self: a recursive loop; calling it recurses
} call_kind_t;

typedef enum {
    BUILTIN_RANGE,
    BUILTIN_NAMESPACE,
    BUILTIN_DICT,
    BUILTIN_RAISE_EXCEPTION,
    BUILTIN_STRFTIME_NOW
} builtin_id_t;

typedef enum {
    EXEC_OK,
    EXEC_BREAK,
    EXEC_CONTINUE,
    EXEC_ERROR
} exec_status_t;

typedef struct {
    jinja_heap_t heap;
    jinja_value_t *variables;       //  the render's variables (a dict)
    time_t now;
    size_t max_output;
    uint64_t max_iterations;
    uint64_t iterations;
    uint64_t max_steps;
    uint64_t steps;
    int depth;                      //  evaluation frames open
    int call_depth;                 //  macro calls open
    const jinja_template_t *template;
    bool error_located;             //  error_offset says where the first error surfaced
    size_t error_offset;
} render_t;

//  Arguments of a call, after evaluation: positional, then named.
typedef struct {
    jinja_value_t **positional;
    size_t positional_count;
    size_t positional_capacity;
    const char **names;             //  borrowed from the tree or from holder's keys
    jinja_value_t **named;
    size_t named_count;
    size_t named_capacity;
    jinja_value_t *holder;          //  a **kwargs dict whose keys names point into
} args_t;

static void
s_locate (render_t *render, const node_t *node)
{
    if (render->heap.failed && !render->error_located && node) {
        render->error_located = true;
        render->error_offset = node->offset;
    }
}

static int
s_line_of (const render_t *render, const node_t *node)
{
    int line, column;
    s_source_position (render->template->source, render->template->line_starts,
                       render->template->line_count, node->offset, &line, &column);
    return line;
}

static void *
s_fail (render_t *render, const node_t *node, const char *kind, const char *format, ...)
    __attribute__ ((format (printf, 4, 5)));

static void *
s_fail (render_t *render, const node_t *node, const char *kind, const char *format, ...)
{
    if (!render->heap.failed) {
        char message [768];
        va_list args;
        va_start (args, format);
        vsnprintf (message, sizeof (message), format, args);
        va_end (args);
        jinja_heap_fail (&render->heap, kind, "%s", message);
    }
    s_locate (render, node);
    return NULL;
}

static void *
s_out_of_memory (render_t *render, const node_t *node)
{
    return s_fail (render, node, "MemoryError", "out of memory");
}

//  Raise what using an undefined value raises.
static void *
s_raise_undefined (render_t *render, const node_t *node, const jinja_value_t *undefined)
{
    const char *message = undefined->u.undefined.message;
    const char *kind = undefined->u.undefined.error_kind;
    return s_fail (render, node, kind? kind: "UndefinedError", "%s",
                   message? message: "value is undefined");
}

//  Count one step of work; fails when the template has done too much. Work is the
//  expressions and statements evaluated, plus one for every 64 bytes allocated.
static bool
s_step (render_t *render, const node_t *node)
{
    if (++render->steps + render->heap.allocated / 64 > render->max_steps) {
        s_fail (render, node, "TemplateRuntimeError",
                "the template did more than %llu steps of work",
                (unsigned long long) render->max_steps);
        return false;
    }
    return true;
}

static jinja_value_t *
s_new_string (render_t *render, const char *data, size_t size)
{
    jinja_value_t *value = jinja_value_new_string (&render->heap, data, size, false);
    return value;
}

static jinja_value_t *
s_new_int (render_t *render, int64_t integer)
{
    return jinja_value_new_int (&render->heap, integer);
}

static jinja_value_t *
s_new_float (render_t *render, double number)
{
    return jinja_value_new_float (&render->heap, number);
}

//  How Jinja2's undefined messages name an object's type: "dict object", "None", ...
static void
s_object_type_repr (const jinja_value_t *value, char *text, size_t size)
{
    switch (value->type) {
        case JINJA_NONE:
            snprintf (text, size, "None");
            return;
        case JINJA_NAMESPACE:
            snprintf (text, size, "jinja2.utils.Namespace object");
            return;
        case JINJA_LOOP:
            snprintf (text, size, "jinja2.runtime.LoopContext object");
            return;
        case JINJA_CALLABLE:
            snprintf (text, size, value->u.callable.node? "jinja2.runtime.Macro object":
                                                          "builtin_function_or_method object");
            return;
        case JINJA_STRING:
            if (value->u.string.safe) {
                snprintf (text, size, "markupsafe.Markup object");
                return;
            }
            break;
        default:
            break;
    }
    snprintf (text, size, "%s object", jinja_value_type_name (value));
}

//  repr() of a value into text (cut short when long).
static void
s_repr_text (render_t *render, const jinja_value_t *value, char *text, size_t size)
{
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, &render->heap, 0);
    bool failed = render->heap.failed;
    if (jinja_value_write_repr (&buffer, value) == 0 && buffer.data)
        snprintf (text, size, "%s", buffer.data);
    else
        snprintf (text, size, "?");
    if (!failed && render->heap.failed) {
        //  a repr for a message must not turn into the render's error
        render->heap.failed = false;
        render->heap.error [0] = 0;
    }
    jinja_buffer_release (&buffer);
}

//  obj.name that does not exist: an undefined that says so when used.
static jinja_value_t *
s_undefined_attribute (render_t *render, const jinja_value_t *object, const char *name)
{
    char type [64], type_repr [80], name_repr [160];
    s_object_type_repr (object, type, sizeof (type));
    jinja_value_t *type_value = s_new_string (render, type, strlen (type));
    jinja_value_t *name_value = s_new_string (render, name, strlen (name));
    if (!type_value || !name_value) {
        jinja_value_unref (&type_value);
        jinja_value_unref (&name_value);
        return NULL;
    }
    s_repr_text (render, type_value, type_repr, sizeof (type_repr));
    s_repr_text (render, name_value, name_repr, sizeof (name_repr));
    jinja_value_unref (&type_value);
    jinja_value_unref (&name_value);
    return jinja_value_new_undefined (&render->heap, NULL, "%s has no attribute %s",
                                      type_repr, name_repr);
}

//  obj[key] that does not exist.
static jinja_value_t *
s_undefined_element (render_t *render, const jinja_value_t *object, const jinja_value_t *key)
{
    if (key->type == JINJA_STRING)
        return s_undefined_attribute (render, object, key->u.string.data);
    char type [64], key_repr [160];
    s_object_type_repr (object, type, sizeof (type));
    s_repr_text (render, key, key_repr, sizeof (key_repr));
    return jinja_value_new_undefined (&render->heap, NULL, "%s has no element %s",
                                      type, key_repr);
}

static jinja_value_t *
s_undefined_unsafe (render_t *render, const jinja_value_t *object, const char *name)
{
    return jinja_value_new_undefined (&render->heap, "SecurityError",
                                      "access to attribute '%s' of '%s' object is unsafe.",
                                      name, jinja_value_type_name (object));
}

//  --- Scopes ---------------------------------------------------------------------------

static jinja_value_t *s_global (render_t *render, const char *name);

//  A variable's value (new reference), or an undefined that names it.
static jinja_value_t *
s_lookup (render_t *render, jinja_value_t *scope, const char *name)
{
    for (jinja_value_t *level = scope; level; level = level->u.scope.parent) {
        jinja_value_t *value = jinja_dict_get_str (level->u.scope.vars, name);
        if (value)
            return jinja_value_ref (value);
    }
    jinja_value_t *value = jinja_dict_get_str (render->variables, name);
    if (value)
        return jinja_value_ref (value);
    value = s_global (render, name);
    if (value || render->heap.failed)
        return value;
    return jinja_value_new_undefined (&render->heap, NULL, "'%s' is undefined", name);
}

static bool
s_assign (render_t *render, const node_t *node, jinja_value_t *scope, const char *name,
          jinja_value_t *value)
{
    if (jinja_dict_set_str (scope->u.scope.vars, name, value)) {
        s_locate (render, node);
        return false;
    }
    return true;
}

//  --- Sequences ------------------------------------------------------------------------

static bool
s_is_sequence_list (const jinja_value_t *value)
{
    return value->type == JINJA_LIST
        && (value->u.list.kind == JINJA_LIST_PLAIN || value->u.list.kind == JINJA_LIST_TUPLE);
}

static jinja_value_t *
s_new_list (render_t *render, jinja_list_kind_t kind)
{
    return jinja_value_new_list (&render->heap, kind);
}

static bool
s_push (render_t *render, const node_t *node, jinja_value_t *list, jinja_value_t *item)
{
    if (list->u.list.count >= MAX_LIST_ITEMS) {
        s_fail (render, node, "MemoryError", "a list may hold at most %d items", MAX_LIST_ITEMS);
        return false;
    }
    if (jinja_list_push (list, item)) {
        s_locate (render, node);
        return false;
    }
    return true;
}

//  The characters of a string as a list of one-character strings.
static jinja_value_t *
s_string_chars (render_t *render, const node_t *node, const jinja_value_t *string)
{
    jinja_value_t *list = s_new_list (render, JINJA_LIST_PLAIN);
    if (!list)
        return s_out_of_memory (render, node);
    size_t pos = 0;
    while (pos < string->u.string.size) {
        size_t start = pos;
        jinja_utf8_next (string->u.string.data, string->u.string.size, &pos);
        jinja_value_t *item = jinja_value_new_string (&render->heap, string->u.string.data + start,
                                                      pos - start, string->u.string.safe);
        if (!item || !s_push (render, node, list, item)) {
            jinja_value_unref (&item);
            jinja_value_unref (&list);
            s_locate (render, node);
            return NULL;
        }
        jinja_value_unref (&item);
    }
    return list;
}

//  What iterating over value yields, as a list (new reference; a list or tuple is
//  returned as itself). A generator is used up.
static jinja_value_t *
s_iterate (render_t *render, const node_t *node, jinja_value_t *value)
{
    switch (value->type) {
        case JINJA_UNDEFINED:
            return s_new_list (render, JINJA_LIST_PLAIN);
        case JINJA_LIST:
            if (value->u.list.kind == JINJA_LIST_GENERATOR) {
                if (value->u.list.consumed)
                    return s_new_list (render, JINJA_LIST_PLAIN);
                value->u.list.consumed = true;
            }
            if (s_is_sequence_list (value))
                return jinja_value_ref (value);
            {
                jinja_value_t *list = s_new_list (render, JINJA_LIST_PLAIN);
                for (size_t index = 0; list && index < value->u.list.count; index++)
                    if (jinja_list_push (list, value->u.list.items [index]))
                        jinja_value_unref (&list);
                if (!list)
                    s_locate (render, node);
                return list;
            }
        case JINJA_DICT: {
            jinja_value_t *list = s_new_list (render, JINJA_LIST_PLAIN);
            for (size_t index = 0; list && index < value->u.dict.count; index++)
                if (jinja_list_push (list, value->u.dict.entries [index].key))
                    jinja_value_unref (&list);
            if (!list)
                s_locate (render, node);
            return list;
        }
        case JINJA_STRING:
            return s_string_chars (render, node, value);
        default:
            return s_fail (render, node, "TypeError", "'%s' object is not iterable",
                           jinja_value_type_name (value));
    }
}

//  len(value), or -1 with a TypeError.
static int64_t
s_length (render_t *render, const node_t *node, const jinja_value_t *value)
{
    switch (value->type) {
        case JINJA_UNDEFINED:
            return 0;
        case JINJA_STRING:
            return (int64_t) value->u.string.length;
        case JINJA_LIST:
            if (value->u.list.kind != JINJA_LIST_GENERATOR)
                return (int64_t) value->u.list.count;
            break;
        case JINJA_DICT:
            return (int64_t) value->u.dict.count;
        default:
            break;
    }
    s_fail (render, node, "TypeError", "object of type '%s' has no len()",
            jinja_value_type_name (value));
    return -1;
}

//  Python's slice indices for a sequence of length: start, step, and how many.
static bool
s_slice_indices (render_t *render, const node_t *node, int64_t length,
                 const jinja_value_t *start_value, const jinja_value_t *stop_value,
                 const jinja_value_t *step_value, int64_t *start, int64_t *step, int64_t *count)
{
    const jinja_value_t *values [3] = { start_value, stop_value, step_value };
    int64_t numbers [3] = { 0, 0, 1 };
    bool given [3] = { false, false, false };
    for (size_t index = 0; index < 3; index++) {
        const jinja_value_t *value = values [index];
        if (!value || value->type == JINJA_NONE)
            continue;
        if (value->type == JINJA_INT)
            numbers [index] = value->u.integer;
        else
        if (value->type == JINJA_BOOL)
            numbers [index] = value->u.boolean;
        else {
            s_fail (render, node, "TypeError",
                    "slice indices must be integers or None or have an __index__ method");
            return false;
        }
        given [index] = true;
    }
    int64_t step_number = numbers [2];
    if (step_number == 0) {
        s_fail (render, node, "ValueError", "slice step cannot be zero");
        return false;
    }
    int64_t lower = step_number < 0? -1: 0;
    int64_t upper = step_number < 0? length - 1: length;
    int64_t bounds [2];
    for (size_t index = 0; index < 2; index++) {
        int64_t value;
        if (!given [index]) {
            if (index == 0)
                value = step_number > 0? 0: length - 1;
            else
                value = step_number > 0? length: -1;
        }
        else {
            value = numbers [index];
            if (value < 0) {
                value += length;
                if (value < lower)
                    value = lower;
            }
            else
            if (value > upper)
                value = upper;
        }
        bounds [index] = value;
    }
    int64_t first = bounds [0], last = bounds [1];
    int64_t total = 0;
    if (step_number > 0 && last > first)
        total = (last - first - 1) / step_number + 1;
    else
    if (step_number < 0 && first > last)
        total = (first - last - 1) / (-step_number) + 1;
    *start = first;
    *step = step_number;
    *count = total;
    return true;
}

//  Byte offsets of each character of a string (length + 1 of them), or NULL for ASCII.
static size_t *
s_char_offsets (render_t *render, const jinja_value_t *string)
{
    if (string->u.string.length == string->u.string.size)
        return NULL;
    size_t *offsets = malloc ((string->u.string.length + 1) * sizeof (size_t));
    if (!offsets) {
        jinja_heap_fail (&render->heap, "MemoryError", "out of memory");
        return NULL;
    }
    size_t pos = 0, index = 0;
    while (pos < string->u.string.size) {
        offsets [index++] = pos;
        jinja_utf8_next (string->u.string.data, string->u.string.size, &pos);
    }
    offsets [index] = string->u.string.size;
    return offsets;
}

static size_t
s_offset_of (const size_t *offsets, size_t index)
{
    return offsets? offsets [index]: index;
}

static jinja_value_t *
s_slice (render_t *render, const node_t *node, jinja_value_t *object,
         const jinja_value_t *start_value, const jinja_value_t *stop_value,
         const jinja_value_t *step_value)
{
    int64_t start, step, count;
    if (object->type == JINJA_STRING) {
        if (!s_slice_indices (render, node, (int64_t) object->u.string.length,
                              start_value, stop_value, step_value, &start, &step, &count))
            return NULL;
        size_t *offsets = s_char_offsets (render, object);
        if (!offsets && render->heap.failed)
            return NULL;
        jinja_buffer_t buffer;
        jinja_buffer_init (&buffer, &render->heap, 0);
        int64_t at = start;
        for (int64_t index = 0; index < count; index++, at += step) {
            size_t from = s_offset_of (offsets, (size_t) at);
            size_t to = s_offset_of (offsets, (size_t) at + 1);
            if (jinja_buffer_append (&buffer, object->u.string.data + from, to - from))
                break;
        }
        free (offsets);
        if (render->heap.failed) {
            jinja_buffer_release (&buffer);
            return NULL;
        }
        return jinja_buffer_to_string (&buffer, object->u.string.safe);
    }
    if (s_is_sequence_list (object)) {
        if (!s_slice_indices (render, node, (int64_t) object->u.list.count,
                              start_value, stop_value, step_value, &start, &step, &count))
            return NULL;
        jinja_value_t *list = s_new_list (render, object->u.list.kind);
        int64_t at = start;
        for (int64_t index = 0; list && index < count; index++, at += step)
            if (jinja_list_push (list, object->u.list.items [at]))
                jinja_value_unref (&list);
        return list;
    }
    return NULL;                    //  not sliceable: the caller makes an undefined
}

//  --- Attributes and items -------------------------------------------------------------

typedef enum {
    METHOD_CAPITALIZE, METHOD_CASEFOLD, METHOD_CENTER, METHOD_COUNT, METHOD_ENDSWITH,
    METHOD_FIND, METHOD_FORMAT, METHOD_INDEX, METHOD_ISALNUM, METHOD_ISALPHA, METHOD_ISASCII,
    METHOD_ISDECIMAL, METHOD_ISDIGIT, METHOD_ISLOWER, METHOD_ISNUMERIC, METHOD_ISSPACE,
    METHOD_ISTITLE, METHOD_ISUPPER, METHOD_JOIN, METHOD_LJUST, METHOD_LOWER, METHOD_LSTRIP,
    METHOD_PARTITION, METHOD_REMOVEPREFIX, METHOD_REMOVESUFFIX, METHOD_REPLACE, METHOD_RFIND,
    METHOD_RINDEX, METHOD_RJUST, METHOD_RPARTITION, METHOD_RSPLIT, METHOD_RSTRIP,
    METHOD_SPLIT, METHOD_SPLITLINES, METHOD_STARTSWITH, METHOD_STRIP, METHOD_SWAPCASE,
    METHOD_TITLE, METHOD_UPPER, METHOD_ZFILL,
    METHOD_DICT_ITEMS, METHOD_DICT_KEYS, METHOD_DICT_VALUES, METHOD_DICT_GET, METHOD_DICT_COPY,
    METHOD_LIST_COUNT, METHOD_LIST_INDEX, METHOD_LIST_COPY,
    METHOD_LOOP_CYCLE, METHOD_LOOP_CHANGED
} method_id_t;

typedef struct {
    const char *name;
    int id;                         //  -1: exists, but the sandbox refuses it
} method_name_t;

static const method_name_t s_string_methods [] = {
    { "capitalize", METHOD_CAPITALIZE }, { "casefold", METHOD_CASEFOLD },
    { "center", METHOD_CENTER }, { "count", METHOD_COUNT }, { "endswith", METHOD_ENDSWITH },
    { "find", METHOD_FIND }, { "format", METHOD_FORMAT }, { "index", METHOD_INDEX },
    { "isalnum", METHOD_ISALNUM }, { "isalpha", METHOD_ISALPHA }, { "isascii", METHOD_ISASCII },
    { "isdecimal", METHOD_ISDECIMAL }, { "isdigit", METHOD_ISDIGIT },
    { "islower", METHOD_ISLOWER }, { "isnumeric", METHOD_ISNUMERIC },
    { "isspace", METHOD_ISSPACE }, { "istitle", METHOD_ISTITLE }, { "isupper", METHOD_ISUPPER },
    { "join", METHOD_JOIN }, { "ljust", METHOD_LJUST }, { "lower", METHOD_LOWER },
    { "lstrip", METHOD_LSTRIP }, { "partition", METHOD_PARTITION },
    { "removeprefix", METHOD_REMOVEPREFIX }, { "removesuffix", METHOD_REMOVESUFFIX },
    { "replace", METHOD_REPLACE }, { "rfind", METHOD_RFIND }, { "rindex", METHOD_RINDEX },
    { "rjust", METHOD_RJUST }, { "rpartition", METHOD_RPARTITION }, { "rsplit", METHOD_RSPLIT },
    { "rstrip", METHOD_RSTRIP }, { "split", METHOD_SPLIT }, { "splitlines", METHOD_SPLITLINES },
    { "startswith", METHOD_STARTSWITH }, { "strip", METHOD_STRIP },
    { "swapcase", METHOD_SWAPCASE }, { "title", METHOD_TITLE }, { "upper", METHOD_UPPER },
    { "zfill", METHOD_ZFILL }, { NULL, 0 }
};

static const method_name_t s_dict_methods [] = {
    { "items", METHOD_DICT_ITEMS }, { "keys", METHOD_DICT_KEYS },
    { "values", METHOD_DICT_VALUES }, { "get", METHOD_DICT_GET }, { "copy", METHOD_DICT_COPY },
    { "clear", -1 }, { "pop", -1 }, { "popitem", -1 }, { "setdefault", -1 }, { "update", -1 },
    { NULL, 0 }
};

static const method_name_t s_list_methods [] = {
    { "count", METHOD_LIST_COUNT }, { "index", METHOD_LIST_INDEX }, { "copy", METHOD_LIST_COPY },
    { "append", -1 }, { "clear", -1 }, { "extend", -1 }, { "insert", -1 }, { "pop", -1 },
    { "remove", -1 }, { "reverse", -1 }, { "sort", -1 }, { NULL, 0 }
};

static const method_name_t s_tuple_methods [] = {
    { "count", METHOD_LIST_COUNT }, { "index", METHOD_LIST_INDEX }, { NULL, 0 }
};

static const method_name_t *
s_find_method (const method_name_t *table, const char *name)
{
    for (size_t index = 0; table [index].name; index++)
        if (strcmp (table [index].name, name) == 0)
            return &table [index];
    return NULL;
}

static jinja_value_t *
s_bound_method (render_t *render, jinja_value_t *object, const method_name_t *method)
{
    if (method->id < 0)
        return s_undefined_unsafe (render, object, method->name);
    return jinja_value_new_callable (&render->heap, CALL_METHOD, method->id, method->name,
                                     NULL, object, NULL);
}

//  A method of the object by that name, or NULL (without an error) when it has none.
static jinja_value_t *
s_method (render_t *render, jinja_value_t *object, const char *name)
{
    const method_name_t *table = NULL;
    if (object->type == JINJA_STRING)
        table = s_string_methods;
    else
    if (object->type == JINJA_DICT)
        table = s_dict_methods;
    else
    if (object->type == JINJA_LIST && object->u.list.kind == JINJA_LIST_PLAIN)
        table = s_list_methods;
    else
    if (object->type == JINJA_LIST && object->u.list.kind == JINJA_LIST_TUPLE)
        table = s_tuple_methods;
    if (!table)
        return NULL;
    const method_name_t *method = s_find_method (table, name);
    return method? s_bound_method (render, object, method): NULL;
}

static jinja_value_t *
s_loop_attribute (render_t *render, jinja_value_t *loop, const char *name)
{
    size_t index0 = loop->u.loop.index0;
    size_t length = loop->u.loop.items->u.list.count;
    if (strcmp (name, "index") == 0)
        return s_new_int (render, (int64_t) index0 + 1);
    if (strcmp (name, "index0") == 0)
        return s_new_int (render, (int64_t) index0);
    if (strcmp (name, "revindex") == 0)
        return s_new_int (render, (int64_t) (length - index0));
    if (strcmp (name, "revindex0") == 0)
        return s_new_int (render, (int64_t) (length - index0) - 1);
    if (strcmp (name, "first") == 0)
        return jinja_value_bool (index0 == 0);
    if (strcmp (name, "last") == 0)
        return jinja_value_bool (index0 + 1 == length);
    if (strcmp (name, "length") == 0)
        return s_new_int (render, (int64_t) length);
    if (strcmp (name, "depth") == 0)
        return s_new_int (render, (int64_t) loop->u.loop.depth0 + 1);
    if (strcmp (name, "depth0") == 0)
        return s_new_int (render, (int64_t) loop->u.loop.depth0);
    if (strcmp (name, "previtem") == 0) {
        if (index0 == 0)
            return jinja_value_new_undefined (&render->heap, NULL, "there is no previous item");
        return jinja_value_ref (loop->u.loop.items->u.list.items [index0 - 1]);
    }
    if (strcmp (name, "nextitem") == 0) {
        if (index0 + 1 >= length)
            return jinja_value_new_undefined (&render->heap, NULL, "there is no next item");
        return jinja_value_ref (loop->u.loop.items->u.list.items [index0 + 1]);
    }
    if (strcmp (name, "cycle") == 0 || strcmp (name, "changed") == 0)
        return jinja_value_new_callable (&render->heap, CALL_METHOD,
                                         name [1] == 'y'? METHOD_LOOP_CYCLE: METHOD_LOOP_CHANGED,
                                         name, NULL, loop, NULL);
    return s_undefined_attribute (render, loop, name);
}

//  object.name with the sandbox's rules: attributes first (methods), then items.
static jinja_value_t *
s_getattr (render_t *render, const node_t *node, jinja_value_t *object, const char *name)
{
    jinja_value_t *result = NULL;
    if (object->type == JINJA_UNDEFINED)
        return s_raise_undefined (render, node, object);
    if (name [0] == '_' && name [1] == '_') {
        //  Python's special attributes: the sandbox refuses them all
        if (object->type == JINJA_DICT || object->type == JINJA_STRING
        ||  object->type == JINJA_LIST || object->type == JINJA_NAMESPACE)
            result = s_undefined_unsafe (render, object, name);
        else
            result = s_undefined_attribute (render, object, name);
    }
    else
    if (object->type == JINJA_NAMESPACE) {
        jinja_value_t *value = jinja_dict_get_str (object->u.namespace_.attrs, name);
        result = value? jinja_value_ref (value): s_undefined_attribute (render, object, name);
    }
    else
    if (object->type == JINJA_LOOP)
        result = s_loop_attribute (render, object, name);
    else {
        result = s_method (render, object, name);
        if (!result && !render->heap.failed) {
            jinja_value_t *value = object->type == JINJA_DICT?
                                   jinja_dict_get_str (object, name): NULL;
            result = value? jinja_value_ref (value): s_undefined_attribute (render, object, name);
        }
    }
    if (!result)
        s_locate (render, node);
    return result;
}

//  object[key] with the sandbox's rules: items first, then attributes.
static jinja_value_t *
s_getitem (render_t *render, const node_t *node, jinja_value_t *object, jinja_value_t *key)
{
    if (object->type == JINJA_UNDEFINED)
        return s_raise_undefined (render, node, object);
    jinja_value_t *result = NULL;
    if (object->type == JINJA_DICT) {
        if (jinja_value_hashable (key)) {
            jinja_value_t *value = jinja_dict_get (object, key);
            if (value)
                return jinja_value_ref (value);
        }
    }
    else
    if ((s_is_sequence_list (object) || object->type == JINJA_STRING)
    &&  (key->type == JINJA_INT || key->type == JINJA_BOOL)) {
        int64_t length = object->type == JINJA_STRING? (int64_t) object->u.string.length:
                                                       (int64_t) object->u.list.count;
        int64_t index = key->type == JINJA_INT? key->u.integer: key->u.boolean;
        if (index < 0)
            index += length;
        if (index >= 0 && index < length) {
            if (object->type != JINJA_STRING)
                return jinja_value_ref (object->u.list.items [index]);
            size_t from = jinja_utf8_offset (object, (size_t) index);
            size_t to = from;
            jinja_utf8_next (object->u.string.data, object->u.string.size, &to);
            result = jinja_value_new_string (&render->heap, object->u.string.data + from,
                                             to - from, object->u.string.safe);
            if (!result)
                s_locate (render, node);
            return result;
        }
    }
    if (key->type == JINJA_STRING) {
        //  not an item: an attribute of that name (methods, namespace attributes)
        if (object->type == JINJA_NAMESPACE || object->type == JINJA_LOOP)
            return s_getattr (render, node, object, key->u.string.data);
        if (!(key->u.string.data [0] == '_' && key->u.string.data [1] == '_')) {
            result = s_method (render, object, key->u.string.data);
            if (result || render->heap.failed) {
                s_locate (render, node);
                return result;
            }
        }
    }
    result = s_undefined_element (render, object, key);
    if (!result)
        s_locate (render, node);
    return result;
}

//  --- Arithmetic -----------------------------------------------------------------------

static bool
s_is_number (const jinja_value_t *value)
{
    return value->type == JINJA_INT || value->type == JINJA_FLOAT || value->type == JINJA_BOOL;
}

//  An int or bool as an integer (0 for anything else).
static int64_t
s_int_of (const jinja_value_t *value)
{
    if (value->type == JINJA_INT)
        return value->u.integer;
    if (value->type == JINJA_BOOL)
        return value->u.boolean? 1: 0;
    return 0;
}

static double
s_float_of (const jinja_value_t *value)
{
    return value->type == JINJA_FLOAT? value->u.number: (double) s_int_of (value);
}

//  Markup's escape() of a string's bytes.
static int
s_write_escaped (jinja_buffer_t *out, const char *data, size_t size)
{
    size_t run = 0;
    for (size_t index = 0; index < size; index++) {
        const char *entity = NULL;
        switch (data [index]) {
            case '&': entity = "&amp;"; break;
            case '<': entity = "&lt;"; break;
            case '>': entity = "&gt;"; break;
            case '\'': entity = "&#39;"; break;
            case '"': entity = "&#34;"; break;
            default: break;
        }
        if (entity) {
            if (jinja_buffer_append (out, data + run, index - run)
            ||  jinja_buffer_append_str (out, entity))
                return -1;
            run = index + 1;
        }
    }
    return jinja_buffer_append (out, data + run, size - run);
}

//  escape(value): a Markup string (a Markup value stays as it is).
static jinja_value_t *
s_escape (render_t *render, jinja_value_t *value)
{
    if (value->type == JINJA_STRING && value->u.string.safe)
        return jinja_value_ref (value);
    jinja_value_t *text = jinja_value_to_string (&render->heap, value);
    if (!text)
        return NULL;
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, &render->heap, 0);
    int rc = s_write_escaped (&buffer, text->u.string.data, text->u.string.size);
    jinja_value_unref (&text);
    if (rc) {
        jinja_buffer_release (&buffer);
        return NULL;
    }
    return jinja_buffer_to_string (&buffer, true);
}

static jinja_value_t *
s_concat_strings (render_t *render, const jinja_value_t *a, const jinja_value_t *b)
{
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, &render->heap, 0);
    bool safe = a->u.string.safe || b->u.string.safe;
    //  Markup + str escapes the str (and str + Markup too)
    int rc = (safe && !a->u.string.safe)?
             s_write_escaped (&buffer, a->u.string.data, a->u.string.size):
             jinja_buffer_append (&buffer, a->u.string.data, a->u.string.size);
    if (rc == 0)
        rc = (safe && !b->u.string.safe)?
             s_write_escaped (&buffer, b->u.string.data, b->u.string.size):
             jinja_buffer_append (&buffer, b->u.string.data, b->u.string.size);
    if (rc) {
        jinja_buffer_release (&buffer);
        return NULL;
    }
    return jinja_buffer_to_string (&buffer, safe);
}

static jinja_value_t *
s_repeat (render_t *render, const node_t *node, jinja_value_t *sequence, int64_t times)
{
    if (times < 0)
        times = 0;
    if (sequence->type == JINJA_STRING) {
        if (times && sequence->u.string.size > render->max_output / (uint64_t) times)
            return s_fail (render, node, "MemoryError", "the string would be too long");
        jinja_buffer_t buffer;
        jinja_buffer_init (&buffer, &render->heap, 0);
        for (int64_t index = 0; index < times; index++)
            if (jinja_buffer_append (&buffer, sequence->u.string.data, sequence->u.string.size)) {
                jinja_buffer_release (&buffer);
                s_locate (render, node);
                return NULL;
            }
        return jinja_buffer_to_string (&buffer, sequence->u.string.safe);
    }
    if (times && sequence->u.list.count > MAX_LIST_ITEMS / (uint64_t) times)
        return s_fail (render, node, "MemoryError", "a list may hold at most %d items",
                       MAX_LIST_ITEMS);
    jinja_value_t *list = s_new_list (render, sequence->u.list.kind);
    for (int64_t index = 0; list && index < times; index++)
        for (size_t item = 0; list && item < sequence->u.list.count; item++)
            if (jinja_list_push (list, sequence->u.list.items [item]))
                jinja_value_unref (&list);
    if (!list)
        s_locate (render, node);
    return list;
}

static jinja_value_t *s_percent_format (render_t *render, const node_t *node,
                                        const jinja_value_t *format, jinja_value_t *args);

static const char *
s_binary_symbol (int op)
{
    return s_operator_text [op];
}

static jinja_value_t *
s_unsupported (render_t *render, const node_t *node, int op, const jinja_value_t *a,
               const jinja_value_t *b)
{
    return s_fail (render, node, "TypeError", "unsupported operand type(s) for %s: '%s' and '%s'",
                   op == OP_POW? "** or pow()": s_binary_symbol (op),
                   jinja_value_type_name (a), jinja_value_type_name (b));
}

static jinja_value_t *
s_arithmetic (render_t *render, const node_t *node, int op, jinja_value_t *a, jinja_value_t *b)
{
    //  str % anything is formatting (str's own operator comes first)
    if (op == OP_MOD && a->type == JINJA_STRING)
        return s_percent_format (render, node, a, b);
    if (a->type == JINJA_UNDEFINED)
        return s_raise_undefined (render, node, a);
    if (b->type == JINJA_UNDEFINED)
        return s_raise_undefined (render, node, b);
    if (s_is_number (a) && s_is_number (b)) {
        bool floats = a->type == JINJA_FLOAT || b->type == JINJA_FLOAT;
        int64_t x = s_int_of (a), y = s_int_of (b), result;
        double fx = s_float_of (a), fy = s_float_of (b);
        switch (op) {
            case OP_ADD:
                if (floats)
                    return s_new_float (render, fx + fy);
                if (__builtin_add_overflow (x, y, &result))
                    break;
                return s_new_int (render, result);
            case OP_SUB:
                if (floats)
                    return s_new_float (render, fx - fy);
                if (__builtin_sub_overflow (x, y, &result))
                    break;
                return s_new_int (render, result);
            case OP_MUL:
                if (floats)
                    return s_new_float (render, fx * fy);
                if (__builtin_mul_overflow (x, y, &result))
                    break;
                return s_new_int (render, result);
            case OP_DIV:
                if (fy == 0.0)
                    return s_fail (render, node, "ZeroDivisionError",
                                   floats? "float division by zero": "division by zero");
                return s_new_float (render, fx / fy);
            case OP_FLOORDIV:
                if (floats) {
                    if (fy == 0.0)
                        return s_fail (render, node, "ZeroDivisionError",
                                       "float floor division by zero");
                    double mod = fmod (fx, fy);
                    double div = (fx - mod) / fy;
                    if (mod != 0.0 && ((fy < 0) != (mod < 0)))
                        div -= 1.0;
                    double floored = floor (div);
                    if (div - floored > 0.5)
                        floored += 1.0;
                    return s_new_float (render, div == 0.0? copysign (0.0, fx / fy): floored);
                }
                if (y == 0)
                    return s_fail (render, node, "ZeroDivisionError",
                                   "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1)
                    break;
                result = x / y;
                if ((x % y != 0) && ((x < 0) != (y < 0)))
                    result--;
                return s_new_int (render, result);
            case OP_MOD:
                if (floats) {
                    if (fy == 0.0)
                        return s_fail (render, node, "ZeroDivisionError", "float modulo");
                    double mod = fmod (fx, fy);
                    if (mod != 0.0 && ((fy < 0) != (mod < 0)))
                        mod += fy;
                    else
                    if (mod == 0.0)
                        mod = copysign (0.0, fy);
                    return s_new_float (render, mod);
                }
                if (y == 0)
                    return s_fail (render, node, "ZeroDivisionError",
                                   "integer division or modulo by zero");
                if (y == -1)
                    return s_new_int (render, 0);
                result = x % y;
                if (result != 0 && ((result < 0) != (y < 0)))
                    result += y;
                return s_new_int (render, result);
            case OP_POW:
                if (!floats && y >= 0) {
                    int64_t power = 1, base = x;
                    int64_t exponent = y;
                    bool overflow = false;
                    while (exponent > 0 && !overflow) {
                        if (exponent & 1)
                            overflow |= __builtin_mul_overflow (power, base, &power);
                        exponent >>= 1;
                        if (exponent)
                            overflow |= __builtin_mul_overflow (base, base, &base);
                    }
                    if (overflow)
                        break;
                    return s_new_int (render, power);
                }
                if (fx == 0.0 && fy < 0)
                    return s_fail (render, node, "ZeroDivisionError",
                                   "0.0 cannot be raised to a negative power");
                if (fx < 0 && fy != floor (fy))
                    return s_fail (render, node, "ValueError",
                                   "negative number cannot be raised to a fractional power");
                return s_new_float (render, pow (fx, fy));
            default:
                break;
        }
        return s_fail (render, node, "OverflowError",
                       "integer result too large (beyond 64 bits)");
    }
    if (op == OP_ADD) {
        if (a->type == JINJA_STRING && b->type == JINJA_STRING) {
            jinja_value_t *result = s_concat_strings (render, a, b);
            if (!result)
                s_locate (render, node);
            return result;
        }
        if (s_is_sequence_list (a) && s_is_sequence_list (b) && a->u.list.kind == b->u.list.kind) {
            if (a->u.list.count + b->u.list.count > MAX_LIST_ITEMS)
                return s_fail (render, node, "MemoryError", "a list may hold at most %d items",
                               MAX_LIST_ITEMS);
            jinja_value_t *list = s_new_list (render, a->u.list.kind);
            for (size_t index = 0; list && index < a->u.list.count; index++)
                if (jinja_list_push (list, a->u.list.items [index]))
                    jinja_value_unref (&list);
            for (size_t index = 0; list && index < b->u.list.count; index++)
                if (jinja_list_push (list, b->u.list.items [index]))
                    jinja_value_unref (&list);
            if (!list)
                s_locate (render, node);
            return list;
        }
        if (a->type == JINJA_STRING && !a->u.string.safe && b->type != JINJA_STRING)
            return s_fail (render, node, "TypeError",
                           "can only concatenate str (not \"%s\") to str",
                           jinja_value_type_name (b));
        if (s_is_sequence_list (a) && !s_is_sequence_list (b))
            return s_fail (render, node, "TypeError",
                           "can only concatenate %s (not \"%s\") to %s",
                           jinja_value_type_name (a), jinja_value_type_name (b),
                           jinja_value_type_name (a));
        if (s_is_sequence_list (a))
            return s_fail (render, node, "TypeError",
                           "can only concatenate %s (not \"%s\") to %s",
                           jinja_value_type_name (a), jinja_value_type_name (b),
                           jinja_value_type_name (a));
    }
    if (op == OP_MUL) {
        jinja_value_t *sequence = (a->type == JINJA_STRING || s_is_sequence_list (a))? a:
                                  (b->type == JINJA_STRING || s_is_sequence_list (b))? b: NULL;
        jinja_value_t *times = sequence == a? b: a;
        if (sequence && (times->type == JINJA_INT || times->type == JINJA_BOOL))
            return s_repeat (render, node, sequence, s_int_of (times));
        if (sequence && sequence == a)
            return s_fail (render, node, "TypeError",
                           "can't multiply sequence by non-int of type '%s'",
                           jinja_value_type_name (times));
    }
    if (op == OP_MOD && a->type == JINJA_STRING)
        return s_percent_format (render, node, a, b);
    return s_unsupported (render, node, op, a, b);
}

//  needle in container
static int
s_contains (render_t *render, const node_t *node, jinja_value_t *needle,
            jinja_value_t *container)
{
    switch (container->type) {
        case JINJA_UNDEFINED:
            return 0;
        case JINJA_STRING:
            if (needle->type != JINJA_STRING) {
                s_fail (render, node, "TypeError",
                        "'in <string>' requires string as left operand, not %s",
                        jinja_value_type_name (needle));
                return -1;
            }
            return memmem (container->u.string.data, container->u.string.size,
                           needle->u.string.data, needle->u.string.size) != NULL
                || needle->u.string.size == 0;
        case JINJA_LIST:
            if (container->u.list.kind == JINJA_LIST_GENERATOR && container->u.list.consumed)
                return 0;
            for (size_t index = 0; index < container->u.list.count; index++)
                if (jinja_value_equal (container->u.list.items [index], needle))
                    return 1;
            return 0;
        case JINJA_DICT:
            if (!jinja_value_hashable (needle)) {
                s_fail (render, node, "TypeError", "unhashable type: '%s'",
                        jinja_value_type_name (needle));
                return -1;
            }
            return jinja_dict_get (container, needle) != NULL;
        default:
            s_fail (render, node, "TypeError", "argument of type '%s' is not iterable",
                    jinja_value_type_name (container));
            return -1;
    }
}

//  a op b for the comparison operators; -1 on error.
static int
s_compare_op (render_t *render, const node_t *node, int op, jinja_value_t *a, jinja_value_t *b)
{
    int order = 0;
    switch (op) {
        case OP_EQ:
            return jinja_value_equal (a, b);
        case OP_NE:
            return !jinja_value_equal (a, b);
        case OP_IN:
            return s_contains (render, node, a, b);
        case OP_NOTIN: {
            int found = s_contains (render, node, a, b);
            return found < 0? -1: !found;
        }
        default:
            if (jinja_value_compare (&render->heap, a, b, s_operator_text [op], &order)) {
                s_locate (render, node);
                return -1;
            }
            switch (op) {
                case OP_LT: return order < 0;
                case OP_LTEQ: return order <= 0;
                case OP_GT: return order > 0;
                default: return order >= 0;
            }
    }
}

//  --- Calls ----------------------------------------------------------------------------

static void
s_args_release (args_t *args)
{
    for (size_t index = 0; index < args->positional_count; index++)
        jinja_value_unref (&args->positional [index]);
    for (size_t index = 0; index < args->named_count; index++)
        jinja_value_unref (&args->named [index]);
    free (args->positional);
    free (args->named);
    free ((void *) args->names);
    jinja_value_unref (&args->holder);
    memset (args, 0, sizeof (*args));
}

static bool
s_args_add (render_t *render, const node_t *node, args_t *args, const char *name,
            jinja_value_t *value)
{
    if (!name) {
        if (args->positional_count == args->positional_capacity) {
            size_t capacity = args->positional_capacity? args->positional_capacity * 2: 4;
            jinja_value_t **grown = realloc (args->positional, capacity * sizeof (*grown));
            if (!grown) {
                s_out_of_memory (render, node);
                return false;
            }
            args->positional = grown;
            args->positional_capacity = capacity;
        }
        args->positional [args->positional_count++] = jinja_value_ref (value);
        return true;
    }
    for (size_t index = 0; index < args->named_count; index++)
        if (strcmp (args->names [index], name) == 0) {
            s_fail (render, node, "TypeError", "got multiple values for keyword argument '%s'",
                    name);
            return false;
        }
    if (args->named_count == args->named_capacity) {
        size_t capacity = args->named_capacity? args->named_capacity * 2: 4;
        jinja_value_t **grown = realloc (args->named, capacity * sizeof (*grown));
        const char **names = grown? realloc ((void *) args->names, capacity * sizeof (*names)): NULL;
        if (grown)
            args->named = grown;
        if (!grown || !names) {
            s_out_of_memory (render, node);
            return false;
        }
        args->names = names;
        args->named_capacity = capacity;
    }
    args->names [args->named_count] = name;
    args->named [args->named_count++] = jinja_value_ref (value);
    return true;
}

static jinja_value_t *s_eval (render_t *render, jinja_value_t *scope, const node_t *node);

//  Evaluate a call's arguments (node->args, node->kwargs, *node->b, **node->c).
static bool
s_eval_args (render_t *render, jinja_value_t *scope, const node_t *node, args_t *args)
{
    memset (args, 0, sizeof (*args));
    for (size_t index = 0; index < node->args.count; index++) {
        jinja_value_t *value = s_eval (render, scope, node->args.items [index]);
        bool ok = value && s_args_add (render, node, args, NULL, value);
        jinja_value_unref (&value);
        if (!ok)
            goto fail;
    }
    if (node->b) {
        jinja_value_t *value = s_eval (render, scope, node->b);
        jinja_value_t *items = value? s_iterate (render, node->b, value): NULL;
        jinja_value_unref (&value);
        if (!items)
            goto fail;
        for (size_t index = 0; index < items->u.list.count; index++)
            if (!s_args_add (render, node, args, NULL, items->u.list.items [index])) {
                jinja_value_unref (&items);
                goto fail;
            }
        jinja_value_unref (&items);
    }
    for (size_t index = 0; index < node->kwargs.count; index++) {
        const node_t *keyword = node->kwargs.items [index];
        jinja_value_t *value = s_eval (render, scope, keyword->a);
        bool ok = value && s_args_add (render, keyword, args, keyword->name, value);
        jinja_value_unref (&value);
        if (!ok)
            goto fail;
    }
    if (node->c) {
        jinja_value_t *value = s_eval (render, scope, node->c);
        if (!value)
            goto fail;
        if (value->type != JINJA_DICT) {
            s_fail (render, node->c, "TypeError", "argument after ** must be a mapping, not %s",
                    jinja_value_type_name (value));
            jinja_value_unref (&value);
            goto fail;
        }
        args->holder = value;
        for (size_t index = 0; index < value->u.dict.count; index++) {
            const jinja_value_t *key = value->u.dict.entries [index].key;
            if (key->type != JINJA_STRING) {
                s_fail (render, node->c, "TypeError", "keywords must be strings");
                goto fail;
            }
            if (!s_args_add (render, node, args, key->u.string.data,
                             value->u.dict.entries [index].value))
                goto fail;
        }
    }
    return true;
fail:
    s_args_release (args);
    return false;
}

//  Match arguments to a Python signature: params names the parameters (NULL-ended),
//  the first `required` of them must be given. out[i] is borrowed, NULL when not given.
static bool
s_bind (render_t *render, const node_t *node, const char *function, const args_t *args,
        const char *const *params, size_t required, jinja_value_t **out)
{
    size_t count = 0;
    while (params [count])
        count++;
    for (size_t index = 0; index < count; index++)
        out [index] = NULL;
    if (args->positional_count > count) {
        s_fail (render, node, "TypeError", "%s() takes at most %zu argument%s (%zu given)",
                function, count, count == 1? "": "s", args->positional_count);
        return false;
    }
    for (size_t index = 0; index < args->positional_count; index++)
        out [index] = args->positional [index];
    for (size_t index = 0; index < args->named_count; index++) {
        size_t slot = count;
        for (size_t param = 0; param < count; param++)
            if (strcmp (params [param], args->names [index]) == 0)
                slot = param;
        if (slot == count) {
            s_fail (render, node, "TypeError", "%s() got an unexpected keyword argument '%s'",
                    function, args->names [index]);
            return false;
        }
        if (out [slot]) {
            s_fail (render, node, "TypeError", "%s() got multiple values for argument '%s'",
                    function, args->names [index]);
            return false;
        }
        out [slot] = args->named [index];
    }
    for (size_t index = 0; index < required; index++)
        if (!out [index]) {
            s_fail (render, node, "TypeError", "%s() missing required argument '%s'",
                    function, params [index]);
            return false;
        }
    return true;
}

//  An argument that must be an integer (bool counts), or the default when not given.
static bool
s_int_arg (render_t *render, const node_t *node, const jinja_value_t *value, int64_t fallback,
           int64_t *result)
{
    if (!value || value->type == JINJA_NONE) {
        *result = fallback;
        return true;
    }
    if (value->type == JINJA_INT || value->type == JINJA_BOOL) {
        *result = s_int_of (value);
        return true;
    }
    if (value->type == JINJA_UNDEFINED) {
        s_raise_undefined (render, node, value);
        return false;
    }
    s_fail (render, node, "TypeError", "'%s' object cannot be interpreted as an integer",
            jinja_value_type_name (value));
    return false;
}

static jinja_value_t *s_call_macro (render_t *render, const node_t *node, jinja_value_t *macro,
                                    args_t *args, jinja_value_t *caller);
static jinja_value_t *s_call_loop (render_t *render, const node_t *node, jinja_value_t *loop,
                                   args_t *args);
static jinja_value_t *s_call_method (render_t *render, const node_t *node,
                                     jinja_value_t *method, args_t *args);

static jinja_value_t *
s_global (render_t *render, const char *name)
{
    static const struct {
        const char *name;
        builtin_id_t id;
    } builtins [] = {
        { "range", BUILTIN_RANGE }, { "namespace", BUILTIN_NAMESPACE }, { "dict", BUILTIN_DICT },
        { "raise_exception", BUILTIN_RAISE_EXCEPTION }, { "strftime_now", BUILTIN_STRFTIME_NOW }
    };
    for (size_t index = 0; index < sizeof (builtins) / sizeof (builtins [0]); index++)
        if (strcmp (builtins [index].name, name) == 0)
            return jinja_value_new_callable (&render->heap, CALL_BUILTIN, (int) builtins [index].id,
                                             name, NULL, NULL, NULL);
    return NULL;
}

//  Fill a dict from dict(*args, **kwargs)'s arguments.
static bool
s_fill_dict (render_t *render, const node_t *node, const char *function, jinja_value_t *dict,
             args_t *args)
{
    if (args->positional_count > 1) {
        s_fail (render, node, "TypeError", "%s expected at most 1 argument, got %zu",
                function, args->positional_count);
        return false;
    }
    if (args->positional_count == 1) {
        jinja_value_t *source = args->positional [0];
        if (source->type == JINJA_DICT) {
            for (size_t index = 0; index < source->u.dict.count; index++)
                if (jinja_dict_set (dict, source->u.dict.entries [index].key,
                                    source->u.dict.entries [index].value)) {
                    s_locate (render, node);
                    return false;
                }
        }
        else {
            jinja_value_t *items = s_iterate (render, node, source);
            if (!items)
                return false;
            for (size_t index = 0; index < items->u.list.count; index++) {
                jinja_value_t *pair = items->u.list.items [index];
                jinja_value_t *parts = s_iterate (render, node, pair);
                if (!parts || parts->u.list.count != 2) {
                    if (parts)
                        s_fail (render, node, "ValueError",
                                "dictionary update sequence element #%zu has length %zu; 2 is required",
                                index, parts->u.list.count);
                    jinja_value_unref (&parts);
                    jinja_value_unref (&items);
                    return false;
                }
                if (!jinja_value_hashable (parts->u.list.items [0])
                ||  jinja_dict_set (dict, parts->u.list.items [0], parts->u.list.items [1])) {
                    s_fail (render, node, "TypeError", "unhashable type: '%s'",
                            jinja_value_type_name (parts->u.list.items [0]));
                    jinja_value_unref (&parts);
                    jinja_value_unref (&items);
                    return false;
                }
                jinja_value_unref (&parts);
            }
            jinja_value_unref (&items);
        }
    }
    for (size_t index = 0; index < args->named_count; index++)
        if (jinja_dict_set_str (dict, args->names [index], args->named [index])) {
            s_locate (render, node);
            return false;
        }
    return true;
}

static jinja_value_t *
s_strftime (render_t *render, const node_t *node, const jinja_value_t *format)
{
    if (format->type != JINJA_STRING)
        return s_fail (render, node, "TypeError", "strftime() argument 1 must be str, not %s",
                       jinja_value_type_name (format));
    time_t now = render->now? render->now: time (NULL);
    struct tm local;
    if (!localtime_r (&now, &local))
        return s_fail (render, node, "OSError", "the time cannot be converted");
    if (format->u.string.size == 0)
        return s_new_string (render, "", 0);
    if (memchr (format->u.string.data, 0, format->u.string.size))
        return s_fail (render, node, "ValueError", "embedded null character");
    for (size_t size = 256; size <= 65536; size *= 4) {
        char *text = malloc (size);
        if (!text)
            return s_out_of_memory (render, node);
        size_t used = strftime (text, size, format->u.string.data, &local);
        if (used > 0) {
            jinja_value_t *result = s_new_string (render, text, used);
            free (text);
            return result;
        }
        free (text);
    }
    return s_new_string (render, "", 0);
}

static jinja_value_t *
s_call_builtin (render_t *render, const node_t *node, int id, args_t *args)
{
    switch ((builtin_id_t) id) {
        case BUILTIN_RANGE: {
            if (args->named_count)
                return s_fail (render, node, "TypeError", "range() takes no keyword arguments");
            if (args->positional_count < 1 || args->positional_count > 3)
                return s_fail (render, node, "TypeError",
                               "range expected at least 1 argument, got %zu",
                               args->positional_count);
            int64_t numbers [3] = { 0, 0, 1 };
            for (size_t index = 0; index < args->positional_count; index++)
                if (!s_int_arg (render, node, args->positional [index], 0, &numbers [index]))
                    return NULL;
            int64_t start = 0, stop, step = 1;
            if (args->positional_count == 1)
                stop = numbers [0];
            else {
                start = numbers [0];
                stop = numbers [1];
                if (args->positional_count == 3)
                    step = numbers [2];
            }
            if (step == 0)
                return s_fail (render, node, "ValueError", "range() arg 3 must not be zero");
            int64_t count = 0;
            if (step > 0 && stop > start)
                count = (int64_t) (((uint64_t) stop - (uint64_t) start - 1) / (uint64_t) step + 1);
            else
            if (step < 0 && start > stop)
                count = (int64_t) (((uint64_t) start - (uint64_t) stop - 1) / (uint64_t) (-step) + 1);
            if (count > MAX_RANGE)
                return s_fail (render, node, "OverflowError",
                               "Range too big. The sandbox blocks ranges larger than"
                               " MAX_RANGE (%d).", MAX_RANGE);
            jinja_value_t *list = s_new_list (render, JINJA_LIST_PLAIN);
            for (int64_t index = 0; list && index < count; index++) {
                jinja_value_t *number = s_new_int (render, start + index * step);
                if (!number || jinja_list_push (list, number))
                    jinja_value_unref (&list);
                jinja_value_unref (&number);
            }
            if (!list)
                s_locate (render, node);
            return list;
        }
        case BUILTIN_NAMESPACE: {
            jinja_value_t *namespace_ = jinja_value_new_namespace (&render->heap);
            if (!namespace_ || !s_fill_dict (render, node, "namespace", namespace_->u.namespace_.attrs,
                                             args)) {
                jinja_value_unref (&namespace_);
                s_locate (render, node);
                return NULL;
            }
            return namespace_;
        }
        case BUILTIN_DICT: {
            jinja_value_t *dict = jinja_value_new_dict (&render->heap);
            if (!dict || !s_fill_dict (render, node, "dict", dict, args)) {
                jinja_value_unref (&dict);
                s_locate (render, node);
                return NULL;
            }
            return dict;
        }
        case BUILTIN_RAISE_EXCEPTION: {
            static const char *const params [] = { "message", NULL };
            jinja_value_t *values [1];
            if (!s_bind (render, node, "raise_exception", args, params, 1, values))
                return NULL;
            jinja_value_t *text = jinja_value_to_string (&render->heap, values [0]);
            if (!text)
                return s_fail (render, node, "TemplateError", "(message unavailable)");
            s_fail (render, node, "TemplateError", "%s", text->u.string.data);
            jinja_value_unref (&text);
            return NULL;
        }
        case BUILTIN_STRFTIME_NOW: {
            static const char *const params [] = { "format", NULL };
            jinja_value_t *values [1];
            if (!s_bind (render, node, "strftime_now", args, params, 1, values))
                return NULL;
            return s_strftime (render, node, values [0]);
        }
    }
    return s_fail (render, node, "TypeError", "not callable");
}

//  callee(args); caller is the {% call %} block's body, or NULL.
static jinja_value_t *
s_call (render_t *render, const node_t *node, jinja_value_t *callee, args_t *args,
        jinja_value_t *caller)
{
    if (callee->type == JINJA_UNDEFINED)
        return s_raise_undefined (render, node, callee);
    if (callee->type == JINJA_LOOP && callee->u.loop.node)
        return s_call_loop (render, node, callee, args);
    if (callee->type != JINJA_CALLABLE)
        return s_fail (render, node, "TypeError", "'%s' object is not callable",
                       jinja_value_type_name (callee));
    switch ((call_kind_t) callee->u.callable.kind) {
        case CALL_BUILTIN:
            return s_call_builtin (render, node, callee->u.callable.id, args);
        case CALL_METHOD:
            return s_call_method (render, node, callee, args);
        case CALL_MACRO:
            return s_call_macro (render, node, callee, args, caller);
        case CALL_LOOP:
            return s_call_loop (render, node, callee->u.callable.self, args);
    }
    return s_fail (render, node, "TypeError", "object is not callable");
}

//  --- Strings --------------------------------------------------------------------------

//  A character's start before byte offset `end` of valid UTF-8.
static size_t
s_char_before (const char *data, size_t end)
{
    size_t start = end - 1;
    while (start > 0 && ((unsigned char) data [start] & 0xC0) == 0x80)
        start--;
    return start;
}

//  Is code one of the characters in set (a string), or whitespace when set is NULL?
static bool
s_in_char_set (uint32_t code, const jinja_value_t *set)
{
    if (!set)
        return jinja_unicode_is_space (code);
    size_t pos = 0;
    while (pos < set->u.string.size)
        if (jinja_utf8_next (set->u.string.data, set->u.string.size, &pos) == code)
            return true;
    return false;
}

static jinja_value_t *
s_strip (render_t *render, const node_t *node, jinja_value_t *string, const jinja_value_t *chars,
         bool left, bool right)
{
    if (chars && chars->type == JINJA_NONE)
        chars = NULL;
    if (chars && chars->type != JINJA_STRING)
        return s_fail (render, node, "TypeError", "strip arg must be None or str");
    const char *data = string->u.string.data;
    size_t start = 0, end = string->u.string.size;
    while (left && start < end) {
        size_t next = start;
        if (!s_in_char_set (jinja_utf8_next (data, end, &next), chars))
            break;
        start = next;
    }
    while (right && end > start) {
        size_t before = s_char_before (data, end);
        size_t pos = before;
        if (!s_in_char_set (jinja_utf8_next (data, end, &pos), chars))
            break;
        end = before;
    }
    if (start == 0 && end == string->u.string.size)
        return jinja_value_ref (string);
    return jinja_value_new_string (&render->heap, data + start, end - start, string->u.string.safe);
}

//  The string with each character mapped: upper, lower, swapcase, title, capitalize.
typedef enum { CASE_UPPER, CASE_LOWER, CASE_SWAP, CASE_TITLE, CASE_CAPITALIZE } case_mode_t;

static jinja_value_t *
s_change_case (render_t *render, jinja_value_t *string, case_mode_t mode)
{
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, &render->heap, 0);
    const char *data = string->u.string.data;
    size_t size = string->u.string.size;
    size_t pos = 0;
    bool previous_cased = false;
    bool first = true;
    int rc = 0;
    while (pos < size && rc == 0) {
        uint32_t code = jinja_utf8_next (data, size, &pos);
        bool upper;
        switch (mode) {
            case CASE_UPPER: upper = true; break;
            case CASE_LOWER: upper = false; break;
            case CASE_SWAP: upper = jinja_unicode_is_lower (code); break;
            case CASE_CAPITALIZE: upper = first; break;
            default: upper = !previous_cased; break;
        }
        bool cased = jinja_unicode_is_upper (code) || jinja_unicode_is_lower (code);
        previous_cased = cased;
        first = false;
        if (mode == CASE_SWAP && !cased) {
            char encoded [4];
            rc = jinja_buffer_append (&buffer, encoded, jinja_utf8_encode (code, encoded));
            continue;
        }
        if (upper && code == 0xDF) {
            rc = jinja_buffer_append_str (&buffer, mode == CASE_UPPER || mode == CASE_SWAP? "SS": "Ss");
            continue;
        }
        uint32_t mapped = upper? jinja_unicode_upper (code): jinja_unicode_lower (code);
        char encoded [4];
        rc = jinja_buffer_append (&buffer, encoded, jinja_utf8_encode (mapped, encoded));
    }
    if (rc) {
        jinja_buffer_release (&buffer);
        return NULL;
    }
    return jinja_buffer_to_string (&buffer, string->u.string.safe);
}

//  Jinja2's title filter: the first letter of each word (after - space ( { [ <) upper.
static jinja_value_t *
s_title_filter (render_t *render, jinja_value_t *string)
{
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, &render->heap, 0);
    const char *data = string->u.string.data;
    size_t size = string->u.string.size;
    size_t pos = 0;
    bool word_start = true;
    int rc = 0;
    while (pos < size && rc == 0) {
        uint32_t code = jinja_utf8_next (data, size, &pos);
        bool separator = code == '-' || code == '(' || code == '{' || code == '[' || code == '<'
                      || jinja_unicode_is_space (code);
        uint32_t mapped = separator? code: word_start? jinja_unicode_upper (code):
                                                       jinja_unicode_lower (code);
        word_start = separator;
        char encoded [4];
        rc = jinja_buffer_append (&buffer, encoded, jinja_utf8_encode (mapped, encoded));
    }
    if (rc) {
        jinja_buffer_release (&buffer);
        return NULL;
    }
    return jinja_buffer_to_string (&buffer, string->u.string.safe);
}

//  Byte ranges of a string's pieces, as split finds them.
typedef struct {
    size_t *bounds;                 //  from, to, from, to, ...
    size_t count;                   //  ranges
    size_t capacity;                //  ranges
} range_list_t;

static bool
s_range_push (range_list_t *ranges, size_t from, size_t to)
{
    if (ranges->count == ranges->capacity) {
        size_t capacity = ranges->capacity? ranges->capacity * 2: 8;
        size_t *grown = realloc (ranges->bounds, capacity * 2 * sizeof (size_t));
        if (!grown)
            return false;
        ranges->bounds = grown;
        ranges->capacity = capacity;
    }
    ranges->bounds [2 * ranges->count] = from;
    ranges->bounds [2 * ranges->count + 1] = to;
    ranges->count++;
    return true;
}

static jinja_value_t *
s_split (render_t *render, const node_t *node, jinja_value_t *string, const jinja_value_t *sep,
         const jinja_value_t *maxsplit_value, bool from_right)
{
    int64_t maxsplit;
    if (!s_int_arg (render, node, maxsplit_value, -1, &maxsplit))
        return NULL;
    if (sep && sep->type == JINJA_NONE)
        sep = NULL;
    if (sep && sep->type != JINJA_STRING)
        return s_fail (render, node, "TypeError", "must be str or None, not %s",
                       jinja_value_type_name (sep));
    if (sep && sep->u.string.size == 0)
        return s_fail (render, node, "ValueError", "empty separator");
    const char *data = string->u.string.data;
    size_t size = string->u.string.size;
    //  pieces as byte ranges, collected in order (reversed afterwards for rsplit)
    range_list_t pieces = { NULL, 0, 0 };
    int64_t splits = 0;
    bool ok = true;
    if (!sep) {
        if (!from_right) {
            size_t pos = 0;
            while (ok) {
                size_t next;
                while (pos < size && s_space_at (data, size, pos, &next))
                    pos = next;
                if (pos >= size)
                    break;
                if (maxsplit >= 0 && splits >= maxsplit) {
                    ok = s_range_push (&pieces, pos, size);
                    break;
                }
                size_t start = pos;
                while (pos < size && !s_space_at (data, size, pos, &next))
                    jinja_utf8_next (data, size, &pos);
                ok = s_range_push (&pieces, start, pos);
                splits++;
            }
        }
        else {
            size_t end = size;
            while (ok) {
                size_t next;
                while (end > 0) {
                    size_t before = s_char_before (data, end);
                    if (!s_space_at (data, size, before, &next))
                        break;
                    end = before;
                }
                if (end == 0)
                    break;
                if (maxsplit >= 0 && splits >= maxsplit) {
                    ok = s_range_push (&pieces, 0, end);
                    break;
                }
                size_t start = end;
                while (start > 0) {
                    size_t before = s_char_before (data, start);
                    if (s_space_at (data, size, before, &next))
                        break;
                    start = before;
                }
                ok = s_range_push (&pieces, start, end);
                end = start;
                splits++;
            }
        }
    }
    else {
        const char *needle = sep->u.string.data;
        size_t needle_size = sep->u.string.size;
        if (!from_right) {
            size_t pos = 0;
            while (ok) {
                const char *found = (maxsplit < 0 || splits < maxsplit)?
                                    memmem (data + pos, size - pos, needle, needle_size): NULL;
                if (!found) {
                    ok = s_range_push (&pieces, pos, size);
                    break;
                }
                size_t at = (size_t) (found - data);
                ok = s_range_push (&pieces, pos, at);
                pos = at + needle_size;
                splits++;
            }
        }
        else {
            size_t end = size;
            while (ok) {
                size_t found = SIZE_MAX;
                if ((maxsplit < 0 || splits < maxsplit) && end >= needle_size)
                    for (size_t at = end - needle_size + 1; at-- > 0;)
                        if (memcmp (data + at, needle, needle_size) == 0) {
                            found = at;
                            break;
                        }
                if (found == SIZE_MAX) {
                    ok = s_range_push (&pieces, 0, end);
                    break;
                }
                ok = s_range_push (&pieces, found + needle_size, end);
                end = found;
                splits++;
            }
        }
    }
    jinja_value_t *list = ok? s_new_list (render, JINJA_LIST_PLAIN): NULL;
    for (size_t piece = 0; list && piece < pieces.count; piece++) {
        size_t index = from_right? pieces.count - 1 - piece: piece;
        size_t from = pieces.bounds [2 * index], to = pieces.bounds [2 * index + 1];
        jinja_value_t *item = jinja_value_new_string (&render->heap, data + from, to - from,
                                                      string->u.string.safe);
        if (!item || !s_push (render, node, list, item))
            jinja_value_unref (&list);
        jinja_value_unref (&item);
    }
    free (pieces.bounds);
    if (!list)
        return s_out_of_memory (render, node);
    return list;
}

static jinja_value_t *
s_splitlines (render_t *render, const node_t *node, jinja_value_t *string, bool keepends)
{
    const char *data = string->u.string.data;
    size_t size = string->u.string.size;
    jinja_value_t *list = s_new_list (render, JINJA_LIST_PLAIN);
    size_t start = 0, pos = 0;
    while (list && pos < size) {
        size_t line_end = pos;
        uint32_t code = jinja_utf8_next (data, size, &pos);
        bool is_break = code == '\n' || code == '\r' || code == 0x0B || code == 0x0C
                     || code == 0x1C || code == 0x1D || code == 0x1E || code == 0x85
                     || code == 0x2028 || code == 0x2029;
        if (!is_break)
            continue;
        if (code == '\r' && pos < size && data [pos] == '\n')
            pos++;
        jinja_value_t *item = jinja_value_new_string (&render->heap, data + start,
                                                      (keepends? pos: line_end) - start,
                                                      string->u.string.safe);
        if (!item || !s_push (render, node, list, item))
            jinja_value_unref (&list);
        jinja_value_unref (&item);
        start = pos;
    }
    if (list && start < size) {
        jinja_value_t *item = jinja_value_new_string (&render->heap, data + start, size - start,
                                                      string->u.string.safe);
        if (!item || !s_push (render, node, list, item))
            jinja_value_unref (&list);
        jinja_value_unref (&item);
    }
    if (!list)
        s_locate (render, node);
    return list;
}

//  Byte range [*from, *to) of a string's characters start..end (Python's slice rules for
//  str.find's start and end arguments).
static bool
s_char_range (render_t *render, const node_t *node, const jinja_value_t *string,
              const jinja_value_t *start_value, const jinja_value_t *end_value,
              size_t *from, size_t *to, int64_t *char_start)
{
    int64_t length = (int64_t) string->u.string.length;
    int64_t start, end;
    if (!s_int_arg (render, node, start_value, 0, &start)
    ||  !s_int_arg (render, node, end_value, length, &end))
        return false;
    if (start < 0)
        start = start + length < 0? 0: start + length;
    if (end < 0)
        end = end + length < 0? 0: end + length;
    if (start > length)
        start = length + 1;         //  beyond: nothing can match
    if (end > length)
        end = length;
    if (start > length || end < start) {
        *from = 1;
        *to = 0;
        *char_start = start;
        return true;
    }
    *from = jinja_utf8_offset (string, (size_t) start);
    *to = jinja_utf8_offset (string, (size_t) end);
    *char_start = start;
    return true;
}

//  str.find / rfind / index / rindex / count. Returns the character index (or count),
//  -1 when not found, -2 on error.
static int64_t
s_find (render_t *render, const node_t *node, const jinja_value_t *string, args_t *args,
        const char *function, bool reverse, bool counting)
{
    static const char *const params [] = { "sub", "start", "end", NULL };
    jinja_value_t *values [3];
    if (!s_bind (render, node, function, args, params, 1, values))
        return -2;
    if (values [0]->type != JINJA_STRING) {
        s_fail (render, node, "TypeError", "must be str, not %s", jinja_value_type_name (values [0]));
        return -2;
    }
    size_t from, to;
    int64_t char_start;
    if (!s_char_range (render, node, string, values [1], values [2], &from, &to, &char_start))
        return -2;
    const char *needle = values [0]->u.string.data;
    size_t needle_size = values [0]->u.string.size;
    if (from > to)
        return counting? 0: -1;
    const char *data = string->u.string.data;
    if (counting) {
        if (needle_size == 0)
            return (int64_t) jinja_utf8_length (data + from, to - from) + 1;
        int64_t count = 0;
        size_t pos = from;
        const char *found;
        while (pos <= to && (found = memmem (data + pos, to - pos, needle, needle_size))) {
            count++;
            pos = (size_t) (found - data) + needle_size;
        }
        return count;
    }
    size_t at = SIZE_MAX;
    if (!reverse) {
        const char *found = needle_size? memmem (data + from, to - from, needle, needle_size):
                                         data + from;
        if (found)
            at = (size_t) (found - data);
    }
    else
    if (to - from >= needle_size) {
        for (size_t pos = to - needle_size + 1; pos-- > from;)
            if (memcmp (data + pos, needle, needle_size) == 0) {
                at = pos;
                break;
            }
    }
    if (at == SIZE_MAX)
        return -1;
    return char_start + (int64_t) jinja_utf8_length (data + from, at - from);
}

static jinja_value_t *
s_replace (render_t *render, const node_t *node, jinja_value_t *string, const jinja_value_t *old,
           const jinja_value_t *new_value, int64_t count, bool safe)
{
    if (old->type != JINJA_STRING || new_value->type != JINJA_STRING)
        return s_fail (render, node, "TypeError", "replace() argument must be str, not %s",
                       jinja_value_type_name (old->type != JINJA_STRING? old: new_value));
    const char *data = string->u.string.data;
    size_t size = string->u.string.size;
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, &render->heap, render->max_output);
    int rc = 0;
    int64_t done = 0;
    if (old->u.string.size == 0) {
        size_t pos = 0;
        while (rc == 0 && (count < 0 || done < count)) {
            rc = jinja_buffer_append (&buffer, new_value->u.string.data, new_value->u.string.size);
            done++;
            if (pos >= size)
                break;
            size_t start = pos;
            jinja_utf8_next (data, size, &pos);
            if (rc == 0)
                rc = jinja_buffer_append (&buffer, data + start, pos - start);
        }
        if (rc == 0 && pos < size)
            rc = jinja_buffer_append (&buffer, data + pos, size - pos);
    }
    else {
        size_t pos = 0;
        const char *found;
        while (rc == 0 && (count < 0 || done < count)
               && (found = memmem (data + pos, size - pos, old->u.string.data, old->u.string.size))) {
            size_t at = (size_t) (found - data);
            rc = jinja_buffer_append (&buffer, data + pos, at - pos);
            if (rc == 0)
                rc = jinja_buffer_append (&buffer, new_value->u.string.data, new_value->u.string.size);
            pos = at + old->u.string.size;
            done++;
        }
        if (rc == 0)
            rc = jinja_buffer_append (&buffer, data + pos, size - pos);
    }
    if (rc) {
        jinja_buffer_release (&buffer);
        s_locate (render, node);
        return NULL;
    }
    return jinja_buffer_to_string (&buffer, safe);
}

//  str.center / ljust / rjust; align is '^', '<' or '>'.
static jinja_value_t *
s_pad (render_t *render, const node_t *node, jinja_value_t *string, int64_t width,
       const jinja_value_t *fill_value, char align)
{
    const char *fill = " ";
    size_t fill_size = 1;
    if (fill_value) {
        if (fill_value->type != JINJA_STRING || fill_value->u.string.length != 1)
            return s_fail (render, node, "TypeError",
                           "The fill character must be exactly one character long");
        fill = fill_value->u.string.data;
        fill_size = fill_value->u.string.size;
    }
    int64_t length = (int64_t) string->u.string.length;
    if (width <= length)
        return jinja_value_ref (string);
    if (width > (int64_t) render->max_output)
        return s_fail (render, node, "MemoryError", "the string would be too long");
    int64_t margin = width - length;
    int64_t left = align == '<'? 0: align == '>'? margin: margin / 2 + (margin & width & 1);
    int64_t right = margin - left;
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, &render->heap, 0);
    int rc = 0;
    for (int64_t index = 0; rc == 0 && index < left; index++)
        rc = jinja_buffer_append (&buffer, fill, fill_size);
    if (rc == 0)
        rc = jinja_buffer_append (&buffer, string->u.string.data, string->u.string.size);
    for (int64_t index = 0; rc == 0 && index < right; index++)
        rc = jinja_buffer_append (&buffer, fill, fill_size);
    if (rc) {
        jinja_buffer_release (&buffer);
        s_locate (render, node);
        return NULL;
    }
    return jinja_buffer_to_string (&buffer, string->u.string.safe);
}

//  str.startswith / endswith
static jinja_value_t *
s_affix (render_t *render, const node_t *node, jinja_value_t *string, args_t *args, bool prefix)
{
    static const char *const params [] = { "prefix", "start", "end", NULL };
    const char *function = prefix? "startswith": "endswith";
    jinja_value_t *values [3];
    if (!s_bind (render, node, function, args, params, 1, values))
        return NULL;
    size_t from, to;
    int64_t char_start;
    if (!s_char_range (render, node, string, values [1], values [2], &from, &to, &char_start))
        return NULL;
    const jinja_value_t *candidates = values [0];
    size_t count = 1;
    if (s_is_sequence_list (candidates) && candidates->u.list.kind == JINJA_LIST_TUPLE)
        count = candidates->u.list.count;
    else
    if (candidates->type != JINJA_STRING)
        return s_fail (render, node, "TypeError",
                       "%s first arg must be str or a tuple of str, not %s",
                       function, jinja_value_type_name (candidates));
    for (size_t index = 0; index < count; index++) {
        const jinja_value_t *candidate = candidates->type == JINJA_STRING? candidates:
                                         candidates->u.list.items [index];
        if (candidate->type != JINJA_STRING)
            return s_fail (render, node, "TypeError",
                           "tuple for %s must only contain str, not %s",
                           function, jinja_value_type_name (candidate));
        if (from > to)
            continue;
        size_t size = candidate->u.string.size;
        if (size > to - from)
            continue;
        size_t at = prefix? from: to - size;
        if (memcmp (string->u.string.data + at, candidate->u.string.data, size) == 0)
            return jinja_value_bool (true);
    }
    return jinja_value_bool (false);
}

static jinja_value_t *
s_join (render_t *render, const node_t *node, const jinja_value_t *separator,
        jinja_value_t *iterable, bool require_strings)
{
    jinja_value_t *items = s_iterate (render, node, iterable);
    if (!items)
        return NULL;
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, &render->heap, render->max_output);
    int rc = 0;
    for (size_t index = 0; rc == 0 && index < items->u.list.count; index++) {
        jinja_value_t *item = items->u.list.items [index];
        if (require_strings && item->type != JINJA_STRING) {
            s_fail (render, node, "TypeError", "sequence item %zu: expected str instance, %s found",
                    index, jinja_value_type_name (item));
            rc = -1;
            break;
        }
        if (index)
            rc = jinja_buffer_append (&buffer, separator->u.string.data, separator->u.string.size);
        if (rc == 0)
            rc = jinja_value_write_str (&buffer, item);
    }
    jinja_value_unref (&items);
    if (rc) {
        jinja_buffer_release (&buffer);
        s_locate (render, node);
        return NULL;
    }
    return jinja_buffer_to_string (&buffer, false);
}

static jinja_value_t *
s_tuple_of (render_t *render, jinja_value_t **items, size_t count)
{
    jinja_value_t *tuple = s_new_list (render, JINJA_LIST_TUPLE);
    for (size_t index = 0; tuple && index < count; index++)
        if (jinja_list_push (tuple, items [index]))
            jinja_value_unref (&tuple);
    return tuple;
}

static jinja_value_t *
s_partition (render_t *render, const node_t *node, jinja_value_t *string,
             const jinja_value_t *sep, bool reverse)
{
    if (sep->type != JINJA_STRING)
        return s_fail (render, node, "TypeError", "must be str, not %s", jinja_value_type_name (sep));
    if (sep->u.string.size == 0)
        return s_fail (render, node, "ValueError", "empty separator");
    const char *data = string->u.string.data;
    size_t size = string->u.string.size;
    size_t at = SIZE_MAX;
    if (!reverse) {
        const char *found = memmem (data, size, sep->u.string.data, sep->u.string.size);
        if (found)
            at = (size_t) (found - data);
    }
    else
    if (size >= sep->u.string.size)
        for (size_t pos = size - sep->u.string.size + 1; pos-- > 0;)
            if (memcmp (data + pos, sep->u.string.data, sep->u.string.size) == 0) {
                at = pos;
                break;
            }
    jinja_value_t *parts [3];
    if (at == SIZE_MAX) {
        jinja_value_t *empty = s_new_string (render, "", 0);
        parts [0] = reverse? empty: string;
        parts [1] = empty;
        parts [2] = reverse? string: empty;
        jinja_value_t *tuple = empty? s_tuple_of (render, parts, 3): NULL;
        jinja_value_unref (&empty);
        return tuple;
    }
    jinja_value_t *before = s_new_string (render, data, at);
    jinja_value_t *after = s_new_string (render, data + at + sep->u.string.size,
                                         size - at - sep->u.string.size);
    jinja_value_t *tuple = NULL;
    if (before && after) {
        parts [0] = before;
        parts [1] = (jinja_value_t *) sep;
        parts [2] = after;
        tuple = s_tuple_of (render, parts, 3);
    }
    jinja_value_unref (&before);
    jinja_value_unref (&after);
    return tuple;
}

typedef enum { CLASS_ALNUM, CLASS_ALPHA, CLASS_ASCII, CLASS_DIGIT, CLASS_SPACE } char_class_t;

static bool
s_all_chars (const jinja_value_t *string, char_class_t class_, bool empty_result)
{
    if (string->u.string.size == 0)
        return empty_result;
    size_t pos = 0;
    while (pos < string->u.string.size) {
        uint32_t code = jinja_utf8_next (string->u.string.data, string->u.string.size, &pos);
        bool ok;
        switch (class_) {
            case CLASS_ALNUM: ok = jinja_unicode_is_alpha (code) || jinja_unicode_is_digit (code); break;
            case CLASS_ALPHA: ok = jinja_unicode_is_alpha (code); break;
            case CLASS_ASCII: ok = code < 0x80; break;
            case CLASS_DIGIT: ok = jinja_unicode_is_digit (code); break;
            default: ok = jinja_unicode_is_space (code); break;
        }
        if (!ok)
            return false;
    }
    return true;
}

//  str.islower / isupper: at least one cased character, none of the other case.
static bool
s_is_case (const jinja_value_t *string, bool upper)
{
    bool cased = false;
    size_t pos = 0;
    while (pos < string->u.string.size) {
        uint32_t code = jinja_utf8_next (string->u.string.data, string->u.string.size, &pos);
        if (upper? jinja_unicode_is_lower (code): jinja_unicode_is_upper (code))
            return false;
        if (upper? jinja_unicode_is_upper (code): jinja_unicode_is_lower (code))
            cased = true;
    }
    return cased;
}

static bool
s_is_title (const jinja_value_t *string)
{
    bool cased = false, previous_cased = false;
    size_t pos = 0;
    while (pos < string->u.string.size) {
        uint32_t code = jinja_utf8_next (string->u.string.data, string->u.string.size, &pos);
        if (jinja_unicode_is_upper (code)) {
            if (previous_cased)
                return false;
            previous_cased = cased = true;
        }
        else
        if (jinja_unicode_is_lower (code)) {
            if (!previous_cased)
                return false;
            previous_cased = cased = true;
        }
        else
            previous_cased = false;
    }
    return cased;
}

static jinja_value_t *s_str_format (render_t *render, const node_t *node,
                                    const jinja_value_t *format, args_t *args);

static jinja_value_t *
s_string_method (render_t *render, const node_t *node, method_id_t id, const char *name,
                 jinja_value_t *string, args_t *args)
{
    jinja_value_t *values [4] = { NULL, NULL, NULL, NULL };
    static const char *const no_params [] = { NULL };
    static const char *const chars_param [] = { "chars", NULL };
    static const char *const split_params [] = { "sep", "maxsplit", NULL };
    static const char *const width_fill [] = { "width", "fillchar", NULL };
    switch (id) {
        case METHOD_UPPER:
        case METHOD_LOWER:
        case METHOD_CASEFOLD:
        case METHOD_SWAPCASE:
        case METHOD_TITLE:
        case METHOD_CAPITALIZE: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            case_mode_t mode = id == METHOD_UPPER? CASE_UPPER: id == METHOD_SWAPCASE? CASE_SWAP:
                               id == METHOD_TITLE? CASE_TITLE: id == METHOD_CAPITALIZE?
                               CASE_CAPITALIZE: CASE_LOWER;
            jinja_value_t *result = s_change_case (render, string, mode);
            if (!result)
                s_locate (render, node);
            return result;
        }
        case METHOD_STRIP:
        case METHOD_LSTRIP:
        case METHOD_RSTRIP:
            if (!s_bind (render, node, name, args, chars_param, 0, values))
                return NULL;
            return s_strip (render, node, string, values [0], id != METHOD_RSTRIP,
                            id != METHOD_LSTRIP);
        case METHOD_SPLIT:
        case METHOD_RSPLIT:
            if (!s_bind (render, node, name, args, split_params, 0, values))
                return NULL;
            return s_split (render, node, string, values [0], values [1], id == METHOD_RSPLIT);
        case METHOD_SPLITLINES: {
            static const char *const params [] = { "keepends", NULL };
            if (!s_bind (render, node, name, args, params, 0, values))
                return NULL;
            return s_splitlines (render, node, string, values [0] && jinja_value_truthy (values [0]));
        }
        case METHOD_STARTSWITH:
        case METHOD_ENDSWITH:
            return s_affix (render, node, string, args, id == METHOD_STARTSWITH);
        case METHOD_FIND:
        case METHOD_RFIND:
        case METHOD_INDEX:
        case METHOD_RINDEX:
        case METHOD_COUNT: {
            bool reverse = id == METHOD_RFIND || id == METHOD_RINDEX;
            int64_t found = s_find (render, node, string, args, name, reverse, id == METHOD_COUNT);
            if (found == -2)
                return NULL;
            if (found == -1 && (id == METHOD_INDEX || id == METHOD_RINDEX))
                return s_fail (render, node, "ValueError", "substring not found");
            return s_new_int (render, found);
        }
        case METHOD_REPLACE: {
            static const char *const params [] = { "old", "new", "count", NULL };
            int64_t count;
            if (!s_bind (render, node, name, args, params, 2, values)
            ||  !s_int_arg (render, node, values [2], -1, &count))
                return NULL;
            return s_replace (render, node, string, values [0], values [1], count,
                              string->u.string.safe);
        }
        case METHOD_JOIN: {
            static const char *const params [] = { "iterable", NULL };
            if (!s_bind (render, node, name, args, params, 1, values))
                return NULL;
            return s_join (render, node, string, values [0], true);
        }
        case METHOD_FORMAT:
            return s_str_format (render, node, string, args);
        case METHOD_CENTER:
        case METHOD_LJUST:
        case METHOD_RJUST: {
            int64_t width;
            if (!s_bind (render, node, name, args, width_fill, 1, values)
            ||  !s_int_arg (render, node, values [0], 0, &width))
                return NULL;
            return s_pad (render, node, string, width, values [1],
                          id == METHOD_CENTER? '^': id == METHOD_LJUST? '<': '>');
        }
        case METHOD_ZFILL: {
            static const char *const params [] = { "width", NULL };
            int64_t width;
            if (!s_bind (render, node, name, args, params, 1, values)
            ||  !s_int_arg (render, node, values [0], 0, &width))
                return NULL;
            int64_t length = (int64_t) string->u.string.length;
            if (width <= length)
                return jinja_value_ref (string);
            if (width > (int64_t) render->max_output)
                return s_fail (render, node, "MemoryError", "the string would be too long");
            jinja_buffer_t buffer;
            jinja_buffer_init (&buffer, &render->heap, 0);
            const char *data = string->u.string.data;
            size_t skip = (length && (data [0] == '+' || data [0] == '-'))? 1: 0;
            int rc = jinja_buffer_append (&buffer, data, skip);
            for (int64_t index = 0; rc == 0 && index < width - length; index++)
                rc = jinja_buffer_append (&buffer, "0", 1);
            if (rc == 0)
                rc = jinja_buffer_append (&buffer, data + skip, string->u.string.size - skip);
            if (rc) {
                jinja_buffer_release (&buffer);
                s_locate (render, node);
                return NULL;
            }
            return jinja_buffer_to_string (&buffer, false);
        }
        case METHOD_PARTITION:
        case METHOD_RPARTITION: {
            static const char *const params [] = { "sep", NULL };
            if (!s_bind (render, node, name, args, params, 1, values))
                return NULL;
            return s_partition (render, node, string, values [0], id == METHOD_RPARTITION);
        }
        case METHOD_REMOVEPREFIX:
        case METHOD_REMOVESUFFIX: {
            static const char *const params [] = { "affix", NULL };
            if (!s_bind (render, node, name, args, params, 1, values))
                return NULL;
            const jinja_value_t *affix = values [0];
            if (affix->type != JINJA_STRING)
                return s_fail (render, node, "TypeError", "%s() argument must be str, not %s",
                               name, jinja_value_type_name (affix));
            size_t size = affix->u.string.size;
            const char *data = string->u.string.data;
            if (size > string->u.string.size)
                return jinja_value_ref (string);
            if (id == METHOD_REMOVEPREFIX && memcmp (data, affix->u.string.data, size) == 0)
                return jinja_value_new_string (&render->heap, data + size,
                                               string->u.string.size - size, string->u.string.safe);
            if (id == METHOD_REMOVESUFFIX
            &&  memcmp (data + string->u.string.size - size, affix->u.string.data, size) == 0)
                return jinja_value_new_string (&render->heap, data, string->u.string.size - size,
                                               string->u.string.safe);
            return jinja_value_ref (string);
        }
        case METHOD_ISALNUM:
        case METHOD_ISALPHA:
        case METHOD_ISASCII:
        case METHOD_ISDECIMAL:
        case METHOD_ISDIGIT:
        case METHOD_ISNUMERIC:
        case METHOD_ISSPACE:
        case METHOD_ISLOWER:
        case METHOD_ISUPPER:
        case METHOD_ISTITLE: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            bool result;
            switch (id) {
                case METHOD_ISALNUM: result = s_all_chars (string, CLASS_ALNUM, false); break;
                case METHOD_ISALPHA: result = s_all_chars (string, CLASS_ALPHA, false); break;
                case METHOD_ISASCII: result = s_all_chars (string, CLASS_ASCII, true); break;
                case METHOD_ISSPACE: result = s_all_chars (string, CLASS_SPACE, false); break;
                case METHOD_ISLOWER: result = s_is_case (string, false); break;
                case METHOD_ISUPPER: result = s_is_case (string, true); break;
                case METHOD_ISTITLE: result = s_is_title (string); break;
                default: result = s_all_chars (string, CLASS_DIGIT, false); break;
            }
            return jinja_value_bool (result);
        }
        default:
            break;
    }
    return s_fail (render, node, "TypeError", "str.%s is not supported", name);
}

static jinja_value_t *
s_call_method (render_t *render, const node_t *node, jinja_value_t *method, args_t *args)
{
    jinja_value_t *self = method->u.callable.self;
    method_id_t id = (method_id_t) method->u.callable.id;
    const char *name = method->u.callable.name;
    jinja_value_t *values [3] = { NULL, NULL, NULL };
    static const char *const no_params [] = { NULL };
    if (self->type == JINJA_STRING)
        return s_string_method (render, node, id, name, self, args);
    switch (id) {
        case METHOD_DICT_ITEMS:
        case METHOD_DICT_KEYS:
        case METHOD_DICT_VALUES: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            jinja_list_kind_t kind = id == METHOD_DICT_ITEMS? JINJA_LIST_DICT_ITEMS:
                                     id == METHOD_DICT_KEYS? JINJA_LIST_DICT_KEYS:
                                     JINJA_LIST_DICT_VALUES;
            jinja_value_t *view = s_new_list (render, kind);
            for (size_t index = 0; view && index < self->u.dict.count; index++) {
                jinja_dict_entry_t *entry = &self->u.dict.entries [index];
                jinja_value_t *item;
                if (id == METHOD_DICT_ITEMS) {
                    jinja_value_t *pair [2] = { entry->key, entry->value };
                    item = s_tuple_of (render, pair, 2);
                }
                else
                    item = jinja_value_ref (id == METHOD_DICT_KEYS? entry->key: entry->value);
                if (!item || jinja_list_push (view, item))
                    jinja_value_unref (&view);
                jinja_value_unref (&item);
            }
            if (!view)
                s_locate (render, node);
            return view;
        }
        case METHOD_DICT_GET: {
            static const char *const params [] = { "key", "default", NULL };
            if (!s_bind (render, node, name, args, params, 1, values))
                return NULL;
            if (!jinja_value_hashable (values [0]))
                return s_fail (render, node, "TypeError", "unhashable type: '%s'",
                               jinja_value_type_name (values [0]));
            jinja_value_t *found = jinja_dict_get (self, values [0]);
            if (found)
                return jinja_value_ref (found);
            return jinja_value_ref (values [1]? values [1]: jinja_value_none ());
        }
        case METHOD_DICT_COPY:
        case METHOD_LIST_COPY: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            jinja_value_t *copy = self->type == JINJA_DICT? jinja_value_new_dict (&render->heap):
                                  s_new_list (render, JINJA_LIST_PLAIN);
            if (copy && self->type == JINJA_DICT) {
                for (size_t index = 0; copy && index < self->u.dict.count; index++)
                    if (jinja_dict_set (copy, self->u.dict.entries [index].key,
                                        self->u.dict.entries [index].value))
                        jinja_value_unref (&copy);
            }
            else
                for (size_t index = 0; copy && index < self->u.list.count; index++)
                    if (jinja_list_push (copy, self->u.list.items [index]))
                        jinja_value_unref (&copy);
            if (!copy)
                s_locate (render, node);
            return copy;
        }
        case METHOD_LIST_COUNT: {
            static const char *const params [] = { "value", NULL };
            if (!s_bind (render, node, name, args, params, 1, values))
                return NULL;
            int64_t count = 0;
            for (size_t index = 0; index < self->u.list.count; index++)
                if (jinja_value_equal (self->u.list.items [index], values [0]))
                    count++;
            return s_new_int (render, count);
        }
        case METHOD_LIST_INDEX: {
            static const char *const params [] = { "value", "start", "stop", NULL };
            int64_t start, stop;
            int64_t length = (int64_t) self->u.list.count;
            if (!s_bind (render, node, name, args, params, 1, values)
            ||  !s_int_arg (render, node, values [1], 0, &start)
            ||  !s_int_arg (render, node, values [2], length, &stop))
                return NULL;
            if (start < 0)
                start = start + length < 0? 0: start + length;
            if (stop < 0)
                stop = stop + length < 0? 0: stop + length;
            for (int64_t index = start; index < stop && index < length; index++)
                if (jinja_value_equal (self->u.list.items [index], values [0]))
                    return s_new_int (render, index);
            char shown [160];
            s_repr_text (render, values [0], shown, sizeof (shown));
            return s_fail (render, node, "ValueError", "%s is not in %s", shown,
                           jinja_value_type_name (self));
        }
        case METHOD_LOOP_CYCLE: {
            if (args->named_count)
                return s_fail (render, node, "TypeError", "cycle() takes no keyword arguments");
            if (args->positional_count == 0)
                return s_fail (render, node, "TypeError", "no items for cycling given");
            return jinja_value_ref (args->positional [self->u.loop.index0 % args->positional_count]);
        }
        case METHOD_LOOP_CHANGED: {
            jinja_value_t *current = s_tuple_of (render, args->positional, args->positional_count);
            if (!current)
                return s_out_of_memory (render, node);
            bool changed = !self->u.loop.last_changed
                        || !jinja_value_equal (self->u.loop.last_changed, current);
            if (changed) {
                jinja_value_unref (&self->u.loop.last_changed);
                self->u.loop.last_changed = current;
            }
            else
                jinja_value_unref (&current);
            return jinja_value_bool (changed);
        }
        default:
            break;
    }
    return s_fail (render, node, "TypeError", "%s() is not supported", name);
}

//  --- printf-style and str.format formatting ------------------------------------------

//  Append text padded to width (characters) on the left or right.
static int
s_append_padded (jinja_buffer_t *out, const char *text, size_t size, int64_t width,
                 bool left_align, char fill)
{
    int64_t length = (int64_t) jinja_utf8_length (text, size);
    int rc = 0;
    if (!left_align)
        for (int64_t index = length; rc == 0 && index < width; index++)
            rc = jinja_buffer_append (out, &fill, 1);
    if (rc == 0)
        rc = jinja_buffer_append (out, text, size);
    if (left_align)
        for (int64_t index = length; rc == 0 && index < width; index++)
            rc = jinja_buffer_append (out, &fill, 1);
    return rc;
}

static jinja_value_t *
s_percent_format (render_t *render, const node_t *node, const jinja_value_t *format,
                  jinja_value_t *args)
{
    jinja_value_t **items = &args;
    size_t count = 1;
    const jinja_value_t *mapping = NULL;
    if (s_is_sequence_list (args) && args->u.list.kind == JINJA_LIST_TUPLE) {
        items = args->u.list.items;
        count = args->u.list.count;
    }
    else
    if (args->type == JINJA_DICT || args->type == JINJA_UNDEFINED)
        mapping = args;             //  (an undefined has __getitem__: a mapping to Python)
    size_t used = 0;
    const char *text = format->u.string.data;
    size_t size = format->u.string.size;
    jinja_buffer_t out;
    jinja_buffer_init (&out, &render->heap, render->max_output);
    size_t pos = 0;
    while (pos < size) {
        const char *percent = memchr (text + pos, '%', size - pos);
        size_t stop = percent? (size_t) (percent - text): size;
        if (jinja_buffer_append (&out, text + pos, stop - pos))
            goto fail;
        if (!percent)
            break;
        size_t spec_start = stop;
        pos = stop + 1;
        jinja_value_t *value = NULL;
        if (pos < size && text [pos] == '(') {
            size_t close = pos + 1;
            int level = 1;
            while (close < size && level) {
                if (text [close] == '(')
                    level++;
                else
                if (text [close] == ')')
                    level--;
                close++;
            }
            if (level) {
                s_fail (render, node, "ValueError", "incomplete format key");
                goto fail;
            }
            if (!mapping) {
                s_fail (render, node, "TypeError", "format requires a mapping");
                goto fail;
            }
            if (mapping->type == JINJA_UNDEFINED) {
                s_raise_undefined (render, node, mapping);
                goto fail;
            }
            jinja_value_t *key = s_new_string (render, text + pos + 1, close - pos - 2);
            if (!key)
                goto fail;
            value = jinja_dict_get (mapping, key);
            if (!value) {
                s_fail (render, node, "KeyError", "'%s'", key->u.string.data);
                jinja_value_unref (&key);
                goto fail;
            }
            jinja_value_unref (&key);
            pos = close;
        }
        char flags [8];
        size_t flag_count = 0;
        while (pos < size && strchr ("-+ #0", text [pos]) && flag_count < sizeof (flags) - 1)
            flags [flag_count++] = text [pos++];
        flags [flag_count] = 0;
        int64_t width = -1, precision = -1;
        for (int part = 0; part < 2; part++) {
            if (part == 1) {
                if (pos < size && text [pos] == '.') {
                    pos++;
                    precision = 0;
                }
                else
                    break;
            }
            int64_t *target = part == 0? &width: &precision;
            if (pos < size && text [pos] == '*') {
                pos++;
                if (used >= count || mapping) {
                    s_fail (render, node, "TypeError", "not enough arguments for format string");
                    goto fail;
                }
                if (!s_int_arg (render, node, items [used++], 0, target))
                    goto fail;
                if (part == 0 && *target < 0) {
                    *target = -*target;
                    flags [flag_count++] = '-';
                    flags [flag_count] = 0;
                }
            }
            else {
                int64_t number = part == 0? -1: 0;
                while (pos < size && s_is_digit (text [pos])) {
                    number = (number < 0? 0: number) * 10 + (text [pos++] - '0');
                    if (number > 100000) {
                        s_fail (render, node, "ValueError", "width too big");
                        goto fail;
                    }
                }
                *target = number;
            }
        }
        while (pos < size && (text [pos] == 'h' || text [pos] == 'l' || text [pos] == 'L'))
            pos++;
        if (pos >= size) {
            s_fail (render, node, "ValueError", "incomplete format");
            goto fail;
        }
        char conversion = text [pos++];
        if (conversion == '%' && pos - spec_start == 2) {
            if (jinja_buffer_append (&out, "%", 1))
                goto fail;
            continue;
        }
        if (!value) {
            if (mapping) {
                value = (jinja_value_t *) mapping;
                }
            else {
                if (used >= count) {
                    s_fail (render, node, "TypeError", "not enough arguments for format string");
                    goto fail;
                }
                value = items [used++];
            }
        }
        bool left = strchr (flags, '-') != NULL;
        char formatted [512];
        const char *piece = formatted;
        size_t piece_size = 0;
        jinja_value_t *text_value = NULL;
        switch (conversion) {
            case 's': case 'r': case 'a': {
                if (conversion == 's')
                    text_value = jinja_value_to_string (&render->heap, value);
                else {
                    jinja_buffer_t repr;
                    jinja_buffer_init (&repr, &render->heap, 0);
                    if (jinja_value_write_repr (&repr, value) == 0)
                        text_value = jinja_buffer_to_string (&repr, false);
                    else
                        jinja_buffer_release (&repr);
                }
                if (!text_value)
                    goto fail;
                piece = text_value->u.string.data;
                piece_size = text_value->u.string.size;
                if (precision >= 0 && (size_t) precision < text_value->u.string.length)
                    piece_size = jinja_utf8_offset (text_value, (size_t) precision);
                int rc = s_append_padded (&out, piece, piece_size, width, left, ' ');
                jinja_value_unref (&text_value);
                if (rc)
                    goto fail;
                continue;
            }
            case 'd': case 'i': case 'u': case 'o': case 'x': case 'X': case 'c': {
                if (value->type == JINJA_UNDEFINED) {
                    s_raise_undefined (render, node, value);
                    goto fail;
                }
                if (conversion == 'c' && value->type == JINJA_STRING && value->u.string.length == 1) {
                    piece = value->u.string.data;
                    piece_size = value->u.string.size;
                    if (s_append_padded (&out, piece, piece_size, width, left, ' '))
                        goto fail;
                    continue;
                }
                if (!s_is_number (value) || (value->type == JINJA_FLOAT
                                             && strchr ("oxXc", conversion))) {
                    s_fail (render, node, "TypeError", "%%%c format: %s is required, not %s",
                            conversion, strchr ("oxXc", conversion)? "an integer": "a real number",
                            jinja_value_type_name (value));
                    goto fail;
                }
                int64_t number;
                if (value->type == JINJA_FLOAT) {
                    double real = value->u.number;
                    if (!isfinite (real) || real >= 9.2e18 || real <= -9.2e18) {
                        s_fail (render, node, "OverflowError", "cannot convert float to integer");
                        goto fail;
                    }
                    number = (int64_t) real;
                }
                else
                    number = s_int_of (value);
                if (conversion == 'c') {
                    if (number < 0 || number > 0x10FFFF) {
                        s_fail (render, node, "OverflowError", "%%c arg not in range(0x110000)");
                        goto fail;
                    }
                    piece_size = jinja_utf8_encode ((uint32_t) number, formatted);
                    if (s_append_padded (&out, formatted, piece_size, width, left, ' '))
                        goto fail;
                    continue;
                }
                //  C's printf writes these as Python does, except that Python writes
                //  an alternate octal as 0o17 where C writes 017
                char c_conversion = conversion == 'i' || conversion == 'u'? 'd': conversion;
                bool alternate_octal = conversion == 'o' && strchr (flags, '#');
                char c_format [32];
                size_t format_size = 0;
                c_format [format_size++] = '%';
                for (size_t index = 0; flags [index]; index++)
                    if (flags [index] != '-' && flags [index] != '0'
                    &&  !(alternate_octal && flags [index] == '#'))
                        c_format [format_size++] = flags [index];
                c_format [format_size++] = '.';
                c_format [format_size++] = '*';
                c_format [format_size++] = 'l';
                c_format [format_size++] = 'l';
                c_format [format_size++] = c_conversion;
                c_format [format_size] = 0;
                int digits = precision >= 0? (int) precision: 1;
                char body [256];
                if (c_conversion == 'd')
                    snprintf (body, sizeof (body), c_format, digits, (long long) number);
                else {
                    //  Python writes a negative hex or octal number with a sign
                    uint64_t magnitude = number < 0? (uint64_t) 0 - (uint64_t) number:
                                                     (uint64_t) number;
                    char unsigned_body [240];
                    snprintf (unsigned_body, sizeof (unsigned_body), c_format, digits,
                              (unsigned long long) magnitude);
                    snprintf (body, sizeof (body), "%s%s", number < 0? "-": "", unsigned_body);
                }
                if (alternate_octal) {
                    char *digits_start = body;
                    bool negative = false;
                    while (*digits_start == ' ' || *digits_start == '+' || *digits_start == '-') {
                        if (*digits_start == '-')
                            negative = true;
                        digits_start++;
                    }
                    snprintf (formatted, sizeof (formatted), "%s0o%s", negative? "-": "",
                              digits_start);
                }
                else
                    snprintf (formatted, sizeof (formatted), "%s", body);
                bool zero = strchr (flags, '0') && !left;
                if (s_append_padded (&out, formatted, strlen (formatted), width, left,
                                     zero? '0': ' '))
                    goto fail;
                continue;
            }
            case 'e': case 'E': case 'f': case 'F': case 'g': case 'G': {
                if (value->type == JINJA_UNDEFINED) {
                    s_raise_undefined (render, node, value);
                    goto fail;
                }
                if (!s_is_number (value)) {
                    s_fail (render, node, "TypeError", "must be real number, not %s",
                            jinja_value_type_name (value));
                    goto fail;
                }
                char c_format [32];
                snprintf (c_format, sizeof (c_format), "%%%s%s*.*%c", flags, "", conversion);
                int c_width = width < 0? 0: (int) width;
                int c_precision = precision < 0? 6: (int) precision;
                if (c_precision > 100)
                    c_precision = 100;
                snprintf (formatted, sizeof (formatted), c_format, c_width, c_precision,
                          s_float_of (value));
                if (jinja_buffer_append_str (&out, formatted))
                    goto fail;
                continue;
            }
            default:
                s_fail (render, node, "ValueError",
                        "unsupported format character '%c' (0x%x) at index %zu",
                        conversion, (unsigned char) conversion, pos - 1);
                goto fail;
        }
    }
    if (!mapping && used < count) {
        s_fail (render, node, "TypeError", "not all arguments converted during string formatting");
        goto fail;
    }
    return jinja_buffer_to_string (&out, format->u.string.safe);
fail:
    jinja_buffer_release (&out);
    s_locate (render, node);
    return NULL;
}

//  format(value, spec) for str.format's fields.
static int
s_format_field (render_t *render, const node_t *node, jinja_buffer_t *out, jinja_value_t *value,
                const char *spec, size_t spec_size)
{
    if (spec_size == 0)
        return jinja_value_write_str (out, value);
    //  [[fill]align][sign][#][0][width][,_][.precision][type]
    size_t pos = 0;
    char fill = ' ';
    char align = 0;
    if (spec_size >= 2 && strchr ("<>=^", spec [1])) {
        fill = spec [0];
        align = spec [1];
        pos = 2;
    }
    else
    if (strchr ("<>=^", spec [0])) {
        align = spec [0];
        pos = 1;
    }
    char sign = '-';
    if (pos < spec_size && strchr ("+- ", spec [pos]))
        sign = spec [pos++];
    bool alternate = false;
    if (pos < spec_size && spec [pos] == '#') {
        alternate = true;
        pos++;
    }
    if (pos < spec_size && spec [pos] == '0') {
        if (!align) {
            fill = '0';
            align = '=';
        }
        pos++;
    }
    int64_t width = 0;
    while (pos < spec_size && s_is_digit (spec [pos]) && width < 100000)
        width = width * 10 + (spec [pos++] - '0');
    char grouping = 0;
    if (pos < spec_size && (spec [pos] == ',' || spec [pos] == '_'))
        grouping = spec [pos++];
    int64_t precision = -1;
    if (pos < spec_size && spec [pos] == '.') {
        pos++;
        precision = 0;
        while (pos < spec_size && s_is_digit (spec [pos]) && precision < 1000)
            precision = precision * 10 + (spec [pos++] - '0');
    }
    char type = pos < spec_size? spec [pos++]: 0;
    if (pos != spec_size) {
        s_fail (render, node, "ValueError", "Invalid format specifier");
        return -1;
    }
    char body [600];
    const char *text = body;
    size_t text_size;
    jinja_value_t *string = NULL;
    if (value->type == JINJA_STRING && (type == 0 || type == 's')) {
        text = value->u.string.data;
        text_size = value->u.string.size;
        if (precision >= 0 && (size_t) precision < value->u.string.length)
            text_size = jinja_utf8_offset (value, (size_t) precision);
        if (!align)
            align = '<';
    }
    else
    if ((value->type == JINJA_INT || value->type == JINJA_BOOL)
    &&  (type == 0 || strchr ("dbcoxXn", type))) {
        int64_t number = s_int_of (value);
        uint64_t magnitude = number < 0? (uint64_t) 0 - (uint64_t) number: (uint64_t) number;
        char digits [80];
        size_t count = 0;
        int radix = type == 'b'? 2: type == 'o'? 8: (type == 'x' || type == 'X')? 16: 10;
        if (type == 'c') {
            count = jinja_utf8_encode ((uint32_t) number, digits);
        }
        else {
            char reversed [80];
            size_t used = 0;
            int group = 0;
            do {
                if (grouping && group == (radix == 10? 3: 4)) {
                    reversed [used++] = grouping;
                    group = 0;
                }
                int digit = (int) (magnitude % (uint64_t) radix);
                reversed [used++] = (char) (digit < 10? '0' + digit:
                                            (type == 'X'? 'A': 'a') + digit - 10);
                magnitude /= (uint64_t) radix;
                group++;
            } while (magnitude);
            while (used)
                digits [count++] = reversed [--used];
        }
        digits [count] = 0;
        const char *prefix = !alternate? "": radix == 2? "0b": radix == 8? "0o":
                             radix == 16? (type == 'X'? "0X": "0x"): "";
        const char *sign_text = number < 0? "-": sign == '+'? "+": sign == ' '? " ": "";
        if (align == '=' || (!align && fill == '0')) {
            //  padding goes between the sign and the digits
            size_t head = strlen (sign_text) + strlen (prefix);
            int64_t pad = width - (int64_t) head - (int64_t) count;
            int rc = jinja_buffer_append_str (out, sign_text);
            if (rc == 0)
                rc = jinja_buffer_append_str (out, prefix);
            for (int64_t index = 0; rc == 0 && index < pad; index++)
                rc = jinja_buffer_append (out, &fill, 1);
            if (rc == 0)
                rc = jinja_buffer_append (out, digits, count);
            return rc;
        }
        snprintf (body, sizeof (body), "%s%s%s", sign_text, prefix, digits);
        text_size = strlen (body);
        if (!align)
            align = '>';
    }
    else
    if (s_is_number (value) && (type == 0 || strchr ("eEfFgGn%", type))) {
        double number = s_float_of (value);
        char c_format [16];
        char conversion = type == 0? 'g': type == 'n'? 'g': type == '%'? 'f': type;
        if (type == '%')
            number *= 100.0;
        if (type == 0 && precision < 0)
            jinja_format_float (number, body, sizeof (body) - 2);
        else {
            snprintf (c_format, sizeof (c_format), "%%%s%s.*%c", sign == '+'? "+":
                      sign == ' '? " ": "", alternate? "#": "", conversion);
            snprintf (body, sizeof (body) - 2, c_format,
                      (int) (precision < 0? 6: precision > 100? 100: precision), number);
            if (type == 0 && !strpbrk (body, ".einfa"))
                strcat (body, ".0");
            if (type == '%')
                strcat (body, "%");
        }
        if (sign != '-' && number >= 0 && body [0] != '+' && body [0] != ' ' && type == 0
        &&  precision < 0) {
            memmove (body + 1, body, strlen (body) + 1);
            body [0] = sign;
        }
        text_size = strlen (body);
        if (!align)
            align = '>';
    }
    else {
        s_fail (render, node, "ValueError", "Unknown format code '%c' for object of type '%s'",
                type? type: 's', jinja_value_type_name (value));
        return -1;
    }
    int64_t length = (int64_t) jinja_utf8_length (text, text_size);
    int64_t pad = width > length? width - length: 0;
    int64_t left = align == '<'? 0: align == '^'? pad / 2: pad;
    int rc = 0;
    for (int64_t index = 0; rc == 0 && index < left; index++)
        rc = jinja_buffer_append (out, &fill, 1);
    if (rc == 0)
        rc = jinja_buffer_append (out, text, text_size);
    for (int64_t index = left; rc == 0 && index < pad; index++)
        rc = jinja_buffer_append (out, &fill, 1);
    jinja_value_unref (&string);
    return rc;
}

static jinja_value_t *
s_str_format (render_t *render, const node_t *node, const jinja_value_t *format, args_t *args)
{
    const char *text = format->u.string.data;
    size_t size = format->u.string.size;
    jinja_buffer_t out;
    jinja_buffer_init (&out, &render->heap, render->max_output);
    size_t pos = 0;
    size_t auto_index = 0;
    bool manual = false, automatic = false;
    while (pos < size) {
        char c = text [pos];
        if (c == '}') {
            if (pos + 1 < size && text [pos + 1] == '}') {
                if (jinja_buffer_append (&out, "}", 1))
                    goto fail;
                pos += 2;
                continue;
            }
            s_fail (render, node, "ValueError", "Single '}' encountered in format string");
            goto fail;
        }
        if (c != '{') {
            size_t start = pos;
            while (pos < size && text [pos] != '{' && text [pos] != '}')
                pos++;
            if (jinja_buffer_append (&out, text + start, pos - start))
                goto fail;
            continue;
        }
        if (pos + 1 < size && text [pos + 1] == '{') {
            if (jinja_buffer_append (&out, "{", 1))
                goto fail;
            pos += 2;
            continue;
        }
        //  a field: {name[.attr|[key]]*[!conversion][:spec]}
        size_t start = ++pos;
        int level = 1;
        while (pos < size && level) {
            if (text [pos] == '{')
                level++;
            else
            if (text [pos] == '}')
                level--;
            if (level)
                pos++;
        }
        if (pos >= size) {
            s_fail (render, node, "ValueError", "expected '}' before end of string");
            goto fail;
        }
        size_t end = pos++;         //  the closing }
        size_t name_end = start;
        bool in_bracket = false;
        while (name_end < end && (in_bracket || (text [name_end] != '!' && text [name_end] != ':'))) {
            if (text [name_end] == '[')
                in_bracket = true;
            else
            if (text [name_end] == ']')
                in_bracket = false;
            name_end++;
        }
        char conversion = 0;
        size_t spec_start = name_end;
        if (spec_start < end && text [spec_start] == '!') {
            conversion = spec_start + 1 < end? text [spec_start + 1]: 0;
            spec_start += 2;
        }
        if (spec_start < end && text [spec_start] == ':')
            spec_start++;
        else
            spec_start = end;
        //  the argument
        size_t part_end = start;
        while (part_end < name_end && text [part_end] != '.' && text [part_end] != '[')
            part_end++;
        jinja_value_t *value = NULL;
        if (part_end == start || s_is_digit (text [start])) {
            size_t index;
            if (part_end == start) {
                if (manual) {
                    s_fail (render, node, "ValueError",
                            "cannot switch from manual field specification to automatic field numbering");
                    goto fail;
                }
                automatic = true;
                index = auto_index++;
            }
            else {
                if (automatic) {
                    s_fail (render, node, "ValueError",
                            "cannot switch from automatic field numbering to manual field specification");
                    goto fail;
                }
                manual = true;
                index = 0;
                for (size_t digit = start; digit < part_end; digit++)
                    index = index * 10 + (size_t) (text [digit] - '0');
            }
            if (index >= args->positional_count) {
                s_fail (render, node, "IndexError",
                        "Replacement index %zu out of range for positional args tuple", index);
                goto fail;
            }
            value = jinja_value_ref (args->positional [index]);
        }
        else {
            for (size_t index = 0; index < args->named_count; index++)
                if (strlen (args->names [index]) == part_end - start
                &&  memcmp (args->names [index], text + start, part_end - start) == 0)
                    value = jinja_value_ref (args->named [index]);
            if (!value) {
                s_fail (render, node, "KeyError", "'%.*s'", (int) (part_end - start), text + start);
                goto fail;
            }
        }
        //  .attr and [key] after it
        size_t cursor = part_end;
        while (value && cursor < name_end) {
            jinja_value_t *next = NULL;
            if (text [cursor] == '.') {
                size_t attr_end = cursor + 1;
                while (attr_end < name_end && text [attr_end] != '.' && text [attr_end] != '[')
                    attr_end++;
                char attr [128];
                snprintf (attr, sizeof (attr), "%.*s", (int) (attr_end - cursor - 1), text + cursor + 1);
                next = s_getattr (render, node, value, attr);
                cursor = attr_end;
            }
            else {
                size_t key_end = cursor + 1;
                while (key_end < name_end && text [key_end] != ']')
                    key_end++;
                bool numeric = key_end > cursor + 1;
                for (size_t digit = cursor + 1; digit < key_end; digit++)
                    if (!s_is_digit (text [digit]))
                        numeric = false;
                jinja_value_t *key;
                if (numeric) {
                    int64_t number = 0;
                    for (size_t digit = cursor + 1; digit < key_end && number < INT64_MAX / 10; digit++)
                        number = number * 10 + (text [digit] - '0');
                    key = s_new_int (render, number);
                }
                else
                    key = s_new_string (render, text + cursor + 1, key_end - cursor - 1);
                next = key? s_getitem (render, node, value, key): NULL;
                jinja_value_unref (&key);
                cursor = key_end + 1;
            }
            jinja_value_unref (&value);
            value = next;
        }
        if (!value)
            goto fail;
        if (conversion == 'r' || conversion == 'a') {
            jinja_buffer_t repr;
            jinja_buffer_init (&repr, &render->heap, 0);
            jinja_value_t *shown = jinja_value_write_repr (&repr, value) == 0?
                                   jinja_buffer_to_string (&repr, false): NULL;
            jinja_buffer_release (&repr);
            jinja_value_unref (&value);
            value = shown;
        }
        else
        if (conversion == 's') {
            jinja_value_t *shown = jinja_value_to_string (&render->heap, value);
            jinja_value_unref (&value);
            value = shown;
        }
        if (!value)
            goto fail;
        //  a spec may hold {fields} itself
        jinja_value_t *spec_text = s_new_string (render, text + spec_start, end - spec_start);
        jinja_value_t *spec = NULL;
        if (spec_text && memchr (spec_text->u.string.data, '{', spec_text->u.string.size))
            spec = s_str_format (render, node, spec_text, args);
        else
            spec = jinja_value_ref (spec_text);
        jinja_value_unref (&spec_text);
        int rc = spec? s_format_field (render, node, &out, value, spec->u.string.data,
                                       spec->u.string.size): -1;
        jinja_value_unref (&spec);
        jinja_value_unref (&value);
        if (rc)
            goto fail;
    }
    return jinja_buffer_to_string (&out, format->u.string.safe);
fail:
    jinja_buffer_release (&out);
    s_locate (render, node);
    return NULL;
}

//  --- Filters --------------------------------------------------------------------------

//  Jinja2's attribute getter: "a.b.0" looks up a, then b, then item 0 (with getitem's
//  rules). A NULL or none attribute gives the item itself.
static jinja_value_t *
s_attribute_path (render_t *render, const node_t *node, jinja_value_t *item,
                  const jinja_value_t *attribute, const jinja_value_t *fallback)
{
    jinja_value_t *current = jinja_value_ref (item);
    if (!attribute || attribute->type == JINJA_NONE)
        return current;
    if (attribute->type != JINJA_STRING) {
        jinja_value_t *next = s_getitem (render, node, current, (jinja_value_t *) attribute);
        jinja_value_unref (&current);
        if (next && fallback && next->type == JINJA_UNDEFINED) {
            jinja_value_unref (&next);
            next = jinja_value_ref ((jinja_value_t *) fallback);
        }
        return next;
    }
    const char *path = attribute->u.string.data;
    size_t size = attribute->u.string.size;
    size_t start = 0;
    while (current && start <= size) {
        size_t end = start;
        while (end < size && path [end] != '.')
            end++;
        bool numeric = end > start;
        for (size_t index = start; index < end; index++)
            if (!s_is_digit (path [index]))
                numeric = false;
        jinja_value_t *key;
        if (numeric) {
            int64_t number = 0;
            for (size_t index = start; index < end && number < INT64_MAX / 10; index++)
                number = number * 10 + (path [index] - '0');
            key = s_new_int (render, number);
        }
        else
            key = s_new_string (render, path + start, end - start);
        jinja_value_t *next = key? s_getitem (render, node, current, key): NULL;
        jinja_value_unref (&key);
        jinja_value_unref (&current);
        current = next;
        if (current && fallback && current->type == JINJA_UNDEFINED) {
            jinja_value_unref (&current);
            current = jinja_value_ref ((jinja_value_t *) fallback);
        }
        start = end + 1;
    }
    return current;
}

//  Strings lowered (for the filters that ignore case by default), others as they are.
static jinja_value_t *
s_ignore_case (render_t *render, jinja_value_t *value)
{
    if (value->type != JINJA_STRING)
        return jinja_value_ref (value);
    return s_change_case (render, value, CASE_LOWER);
}

typedef struct {
    jinja_value_t *key;
    jinja_value_t *item;
} sort_entry_t;

//  Stable merge sort of entries by key (reversed order when reverse, keeping equal
//  entries in order, as Python's sorted does). Returns false on an ordering error.
static bool
s_sort_entries (render_t *render, const node_t *node, sort_entry_t *entries, size_t count,
                bool reverse)
{
    if (count < 2)
        return true;
    sort_entry_t *scratch = malloc (count * sizeof (sort_entry_t));
    if (!scratch) {
        s_out_of_memory (render, node);
        return false;
    }
    bool ok = true;
    for (size_t width = 1; ok && width < count; width *= 2) {
        for (size_t low = 0; ok && low < count; low += 2 * width) {
            size_t middle = low + width < count? low + width: count;
            size_t high = low + 2 * width < count? low + 2 * width: count;
            size_t left = low, right = middle, out = low;
            while (left < middle && right < high) {
                int order = 0;
                if (jinja_value_compare (&render->heap, entries [right].key, entries [left].key,
                                         "<", &order)) {
                    ok = false;
                    break;
                }
                //  take from the right only when it must come strictly first
                bool right_first = reverse? order > 0: order < 0;
                scratch [out++] = right_first? entries [right++]: entries [left++];
            }
            if (!ok)
                break;
            while (left < middle)
                scratch [out++] = entries [left++];
            while (right < high)
                scratch [out++] = entries [right++];
            memcpy (entries + low, scratch + low, (high - low) * sizeof (sort_entry_t));
        }
    }
    free (scratch);
    if (!ok)
        s_locate (render, node);
    return ok;
}

static void
s_release_entries (sort_entry_t *entries, size_t count)
{
    for (size_t index = 0; index < count; index++) {
        jinja_value_unref (&entries [index].key);
        jinja_value_unref (&entries [index].item);
    }
    free (entries);
}

//  Entries of items with their keys (attribute path, lowered unless case_sensitive).
static sort_entry_t *
s_keyed_entries (render_t *render, const node_t *node, jinja_value_t *items,
                 const jinja_value_t *attribute, bool case_sensitive)
{
    size_t count = items->u.list.count;
    sort_entry_t *entries = calloc (count? count: 1, sizeof (sort_entry_t));
    if (!entries)
        return s_out_of_memory (render, node);
    for (size_t index = 0; index < count; index++) {
        jinja_value_t *item = items->u.list.items [index];
        jinja_value_t *key = s_attribute_path (render, node, item, attribute, NULL);
        if (key && !case_sensitive) {
            jinja_value_t *lowered = s_ignore_case (render, key);
            jinja_value_unref (&key);
            key = lowered;
        }
        if (!key) {
            s_release_entries (entries, count);
            s_locate (render, node);
            return NULL;
        }
        entries [index].key = key;
        entries [index].item = jinja_value_ref (item);
    }
    return entries;
}

static jinja_value_t *s_call_filter (render_t *render, const node_t *node, int id,
                                     const char *name, jinja_value_t *value, args_t *args);
static int s_call_test (render_t *render, const node_t *node, int id, const char *name,
                        jinja_value_t *value, args_t *args);

//  Arguments from index `first` on, as a new args_t (values referenced).
static bool
s_args_tail (render_t *render, const node_t *node, const args_t *args, size_t first,
             bool keep_named, args_t *tail)
{
    memset (tail, 0, sizeof (*tail));
    for (size_t index = first; index < args->positional_count; index++)
        if (!s_args_add (render, node, tail, NULL, args->positional [index])) {
            s_args_release (tail);
            return false;
        }
    for (size_t index = 0; keep_named && index < args->named_count; index++)
        if (!s_args_add (render, node, tail, args->names [index], args->named [index])) {
            s_args_release (tail);
            return false;
        }
    return true;
}

//  select / reject / selectattr / rejectattr
static jinja_value_t *
s_select (render_t *render, const node_t *node, jinja_value_t *value, args_t *args,
          bool with_attribute, bool keep)
{
    jinja_value_t *result = s_new_list (render, JINJA_LIST_GENERATOR);
    if (!result)
        return s_out_of_memory (render, node);
    if (!jinja_value_truthy (value))
        return result;
    size_t offset = with_attribute? 1: 0;
    if (with_attribute && args->positional_count < 1) {
        jinja_value_unref (&result);
        return s_fail (render, node, "FilterArgumentError", "Missing parameter for attribute name");
    }
    const jinja_value_t *attribute = with_attribute? args->positional [0]: NULL;
    const char *test_name = NULL;
    int test_id = -1;
    if (args->positional_count > offset) {
        const jinja_value_t *name_value = args->positional [offset];
        if (name_value->type != JINJA_STRING) {
            jinja_value_unref (&result);
            return s_fail (render, node, "TypeError", "test name must be a string");
        }
        test_name = name_value->u.string.data;
        test_id = s_test_lookup (test_name);
        if (test_id < 0) {
            jinja_value_unref (&result);
            return s_fail (render, node, "TemplateRuntimeError", "No test named '%s'.", test_name);
        }
    }
    args_t test_args;
    if (!s_args_tail (render, node, args, offset + 1, true, &test_args)) {
        jinja_value_unref (&result);
        return NULL;
    }
    jinja_value_t *items = s_iterate (render, node, value);
    if (!items)
        jinja_value_unref (&result);
    for (size_t index = 0; items && result && index < items->u.list.count; index++) {
        jinja_value_t *item = items->u.list.items [index];
        jinja_value_t *subject = s_attribute_path (render, node, item, attribute, NULL);
        int passed = -1;
        if (subject)
            passed = test_name? s_call_test (render, node, test_id, test_name, subject, &test_args):
                                jinja_value_truthy (subject);
        jinja_value_unref (&subject);
        if (passed < 0 || (passed == keep && jinja_list_push (result, item))) {
            s_locate (render, node);
            jinja_value_unref (&result);
            break;
        }
    }
    jinja_value_unref (&items);
    s_args_release (&test_args);
    return result;
}

static jinja_value_t *
s_map (render_t *render, const node_t *node, jinja_value_t *value, args_t *args)
{
    jinja_value_t *result = s_new_list (render, JINJA_LIST_GENERATOR);
    if (!result)
        return s_out_of_memory (render, node);
    if (!jinja_value_truthy (value))
        return result;
    const jinja_value_t *attribute = NULL;
    const jinja_value_t *fallback = NULL;
    const char *filter_name = NULL;
    int filter_id = -1;
    args_t filter_args;
    memset (&filter_args, 0, sizeof (filter_args));
    bool by_attribute = args->positional_count == 0;
    if (by_attribute) {
        for (size_t index = 0; index < args->named_count; index++) {
            if (strcmp (args->names [index], "attribute") == 0)
                attribute = args->named [index];
            else
            if (strcmp (args->names [index], "default") == 0)
                fallback = args->named [index];
            else {
                jinja_value_unref (&result);
                return s_fail (render, node, "FilterArgumentError",
                               "Unexpected keyword argument '%s'", args->names [index]);
            }
        }
        if (!attribute) {
            jinja_value_unref (&result);
            return s_fail (render, node, "FilterArgumentError", "map requires a filter argument");
        }
        if (fallback && fallback->type == JINJA_NONE)
            fallback = NULL;
    }
    else {
        const jinja_value_t *name_value = args->positional [0];
        if (name_value->type != JINJA_STRING) {
            jinja_value_unref (&result);
            return s_fail (render, node, "TypeError", "filter name must be a string");
        }
        filter_name = name_value->u.string.data;
        filter_id = s_filter_lookup (filter_name);
        if (filter_id < 0) {
            jinja_value_unref (&result);
            return s_fail (render, node, "TemplateRuntimeError", "No filter named '%s'.",
                           filter_name);
        }
        if (!s_args_tail (render, node, args, 1, true, &filter_args)) {
            jinja_value_unref (&result);
            return NULL;
        }
    }
    jinja_value_t *items = s_iterate (render, node, value);
    for (size_t index = 0; items && index < items->u.list.count; index++) {
        jinja_value_t *item = items->u.list.items [index];
        jinja_value_t *mapped = by_attribute?
            s_attribute_path (render, node, item, attribute, fallback):
            s_call_filter (render, node, filter_id, filter_name, item, &filter_args);
        if (!mapped || jinja_list_push (result, mapped)) {
            s_locate (render, node);
            jinja_value_unref (&result);
        }
        jinja_value_unref (&mapped);
    }
    if (!items)
        jinja_value_unref (&result);
    jinja_value_unref (&items);
    s_args_release (&filter_args);
    return result;
}

static jinja_value_t *
s_indent (render_t *render, const node_t *node, jinja_value_t *value, const jinja_value_t *width,
          bool first, bool blank)
{
    jinja_buffer_t indention;
    jinja_buffer_init (&indention, &render->heap, 0);
    if (width && width->type == JINJA_STRING) {
        if (jinja_buffer_append (&indention, width->u.string.data, width->u.string.size))
            goto fail_indention;
    }
    else {
        int64_t count;
        if (!s_int_arg (render, node, width, 4, &count))
            goto fail_indention;
        if (count > 10000)
            count = 10000;
        for (int64_t index = 0; index < count; index++)
            if (jinja_buffer_append (&indention, " ", 1))
                goto fail_indention;
    }
    //  Jinja2 does s += "\n", then s.splitlines(): only strings get that far
    if (value->type != JINJA_STRING) {
        jinja_buffer_release (&indention);
        if (value->type == JINJA_UNDEFINED)
            return s_raise_undefined (render, node, value);
        if (s_is_sequence_list (value) && value->u.list.kind == JINJA_LIST_PLAIN)
            return s_fail (render, node, "AttributeError",
                           "'list' object has no attribute 'splitlines'");
        return s_fail (render, node, "TypeError",
                       "unsupported operand type(s) for +=: '%s' and 'str'",
                       jinja_value_type_name (value));
    }
    jinja_value_t *text = jinja_value_to_string (&render->heap, value);
    if (!text)
        goto fail_indention;
    //  s + "\n", split into lines (Python's splitlines), then joined back
    jinja_value_t *lines = NULL;
    {
        jinja_buffer_t with_newline;
        jinja_buffer_init (&with_newline, &render->heap, 0);
        jinja_value_t *joined = NULL;
        if (jinja_buffer_append (&with_newline, text->u.string.data, text->u.string.size) == 0
        &&  jinja_buffer_append (&with_newline, "\n", 1) == 0)
            joined = jinja_buffer_to_string (&with_newline, false);
        else
            jinja_buffer_release (&with_newline);
        if (joined)
            lines = s_splitlines (render, node, joined, false);
        jinja_value_unref (&joined);
    }
    bool safe = text->u.string.safe;
    jinja_value_unref (&text);
    if (!lines)
        goto fail_indention;
    jinja_buffer_t out;
    jinja_buffer_init (&out, &render->heap, render->max_output);
    int rc = 0;
    if (first)
        rc = jinja_buffer_append (&out, indention.data? indention.data: "", indention.size);
    for (size_t index = 0; rc == 0 && index < lines->u.list.count; index++) {
        const jinja_value_t *line = lines->u.list.items [index];
        if (index) {
            rc = jinja_buffer_append (&out, "\n", 1);
            if (rc == 0 && (blank || line->u.string.size))
                rc = jinja_buffer_append (&out, indention.data? indention.data: "", indention.size);
        }
        if (rc == 0)
            rc = jinja_buffer_append (&out, line->u.string.data, line->u.string.size);
    }
    jinja_value_unref (&lines);
    jinja_buffer_release (&indention);
    if (rc) {
        jinja_buffer_release (&out);
        s_locate (render, node);
        return NULL;
    }
    return jinja_buffer_to_string (&out, safe);
fail_indention:
    jinja_buffer_release (&indention);
    s_locate (render, node);
    return NULL;
}

//  Python's float() of a string; false when it is not a number.
static bool
s_parse_float (const jinja_value_t *string, double *result)
{
    const char *data = string->u.string.data;
    size_t size = string->u.string.size;
    size_t start = 0, end = size;
    while (start < end && jinja_unicode_is_space ((unsigned char) data [start]))
        start++;
    while (end > start && jinja_unicode_is_space ((unsigned char) data [end - 1]))
        end--;
    if (start == end || end - start > 400)
        return false;
    char text [401];
    size_t used = 0;
    for (size_t index = start; index < end; index++) {
        char c = data [index];
        if (c == '_') {
            if (index == start || index + 1 == end || !s_is_digit (data [index - 1])
            ||  !s_is_digit (data [index + 1]))
                return false;
            continue;
        }
        if (!(s_is_digit (c) || strchr ("+-.eEinfatyINFATY", c)))
            return false;
        text [used++] = c;
    }
    text [used] = 0;
    const char *body = text [0] == '+' || text [0] == '-'? text + 1: text;
    if (strcasecmp (body, "inf") == 0 || strcasecmp (body, "infinity") == 0) {
        *result = text [0] == '-'? -INFINITY: INFINITY;
        return true;
    }
    if (strcasecmp (body, "nan") == 0) {
        *result = NAN;
        return true;
    }
    for (const char *c = body; *c; c++)
        if (!(s_is_digit (*c) || *c == '.' || *c == 'e' || *c == 'E' || *c == '+' || *c == '-'))
            return false;
    char *stop;
    errno = 0;
    *result = strtod (text, &stop);
    return *stop == 0 && stop != text;
}

//  Python's int(string, base); false when it is not an integer.
static bool
s_parse_int (const jinja_value_t *string, int64_t base, int64_t *result)
{
    const char *data = string->u.string.data;
    size_t size = string->u.string.size;
    size_t start = 0, end = size;
    while (start < end && jinja_unicode_is_space ((unsigned char) data [start]))
        start++;
    while (end > start && jinja_unicode_is_space ((unsigned char) data [end - 1]))
        end--;
    bool negative = false;
    if (start < end && (data [start] == '+' || data [start] == '-'))
        negative = data [start++] == '-';
    if (end - start >= 2 && data [start] == '0') {
        char kind = (char) (data [start + 1] | 0x20);
        int prefix_base = kind == 'x'? 16: kind == 'o'? 8: kind == 'b'? 2: 0;
        if (prefix_base && (base == prefix_base || base == 0)) {
            base = prefix_base;
            start += 2;
            if (start < end && data [start] == '_')
                start++;
        }
    }
    if (base == 0)
        base = 10;
    if (base < 2 || base > 36 || start >= end)
        return false;
    uint64_t value = 0;
    for (size_t index = start; index < end; index++) {
        char c = data [index];
        if (c == '_' && index > start && index + 1 < end && data [index + 1] != '_')
            continue;
        int digit = s_is_digit (c)? c - '0': (c | 0x20) >= 'a' && (c | 0x20) <= 'z'?
                    (c | 0x20) - 'a' + 10: 99;
        if (digit >= base)
            return false;
        if (value > (UINT64_MAX - (uint64_t) digit) / (uint64_t) base)
            return false;
        value = value * (uint64_t) base + (uint64_t) digit;
    }
    if (value > (uint64_t) INT64_MAX + (negative? 1u: 0u))
        return false;
    *result = negative? (int64_t) (0 - value): (int64_t) value;
    return true;
}

static jinja_value_t *
s_round (render_t *render, const node_t *node, jinja_value_t *value, int64_t precision,
         const char *method)
{
    if (strcmp (method, "common") && strcmp (method, "ceil") && strcmp (method, "floor"))
        return s_fail (render, node, "FilterArgumentError", "method must be common, ceil or floor");
    if (!s_is_number (value))
        return s_fail (render, node, "TypeError", "type %s doesn't define __round__ method",
                       jinja_value_type_name (value));
    if (strcmp (method, "common") == 0) {
        if (value->type != JINJA_FLOAT && precision >= 0)
            return s_new_int (render, s_int_of (value));
        double number = s_float_of (value);
        if (!isfinite (number))
            return s_new_float (render, number);
        if (precision > 300)
            return s_new_float (render, number);
        if (precision < -300)
            return s_new_float (render, 0.0 * number);
        if (precision >= 0) {
            //  correctly rounded decimal text, read back: Python's round()
            char text [512];
            snprintf (text, sizeof (text), "%.*f", (int) precision, number);
            return s_new_float (render, strtod (text, NULL));
        }
        double scale = pow (10.0, (double) -precision);
        double rounded = nearbyint (number / scale) * scale;
        return s_new_float (render, rounded);
    }
    double scale = pow (10.0, (double) precision);
    double number = s_float_of (value) * scale;
    number = strcmp (method, "ceil") == 0? ceil (number): floor (number);
    return s_new_float (render, number / scale);
}

static jinja_value_t *
s_tojson (render_t *render, const node_t *node, jinja_value_t *value, args_t *args)
{
    static const char *const params [] = { "ensure_ascii", "indent", "separators", "sort_keys", NULL };
    jinja_value_t *values [4];
    if (!s_bind (render, node, "tojson", args, params, 0, values))
        return NULL;
    jinja_json_options_t options = { 0 };
    options.ensure_ascii = values [0] && jinja_value_truthy (values [0]);
    options.sort_keys = values [3] && jinja_value_truthy (values [3]);
    char spaces [256];
    if (values [1] && values [1]->type != JINJA_NONE) {
        if (values [1]->type == JINJA_STRING)
            options.indent = values [1]->u.string.data;
        else
        if (values [1]->type == JINJA_INT || values [1]->type == JINJA_BOOL) {
            int64_t count = s_int_of (values [1]);
            if (count < 0)
                count = 0;
            if (count > 255)
                count = 255;
            memset (spaces, ' ', (size_t) count);
            spaces [count] = 0;
            options.indent = spaces;
        }
        else
            return s_fail (render, node, "TypeError", "indent must be an int or a str, not %s",
                           jinja_value_type_name (values [1]));
    }
    if (values [2] && values [2]->type != JINJA_NONE) {
        const jinja_value_t *separators = values [2];
        if (!s_is_sequence_list (separators) || separators->u.list.count != 2
        ||  separators->u.list.items [0]->type != JINJA_STRING
        ||  separators->u.list.items [1]->type != JINJA_STRING)
            return s_fail (render, node, "TypeError", "separators must be a pair of strings");
        options.item_separator = separators->u.list.items [0]->u.string.data;
        options.key_separator = separators->u.list.items [1]->u.string.data;
    }
    jinja_buffer_t out;
    jinja_buffer_init (&out, &render->heap, render->max_output);
    if (jinja_value_write_json (&out, value, &options)) {
        jinja_buffer_release (&out);
        s_locate (render, node);
        return NULL;
    }
    return jinja_buffer_to_string (&out, false);
}

//  Python's str() of a value for the filters that take text (soft_str: Markup stays).
static jinja_value_t *
s_soft_str (render_t *render, const node_t *node, jinja_value_t *value)
{
    jinja_value_t *text = jinja_value_to_string (&render->heap, value);
    if (!text)
        s_locate (render, node);
    return text;
}

static jinja_value_t *
s_first_or_last (render_t *render, const node_t *node, jinja_value_t *value, bool last)
{
    if (last && value->type == JINJA_LIST && value->u.list.kind == JINJA_LIST_GENERATOR)
        return s_fail (render, node, "TypeError", "'generator' object is not reversible");
    jinja_value_t *items = s_iterate (render, node, value);
    if (!items)
        return NULL;
    jinja_value_t *result;
    if (items->u.list.count == 0)
        result = jinja_value_new_undefined (&render->heap, NULL, last?
                                            "No last item, sequence was empty.":
                                            "No first item, sequence was empty.");
    else
        result = jinja_value_ref (items->u.list.items [last? items->u.list.count - 1: 0]);
    jinja_value_unref (&items);
    return result;
}

static jinja_value_t *
s_min_max (render_t *render, const node_t *node, jinja_value_t *value, args_t *args, bool max)
{
    static const char *const params [] = { "case_sensitive", "attribute", NULL };
    jinja_value_t *values [2];
    if (!s_bind (render, node, max? "max": "min", args, params, 0, values))
        return NULL;
    jinja_value_t *items = s_iterate (render, node, value);
    if (!items)
        return NULL;
    if (items->u.list.count == 0) {
        jinja_value_unref (&items);
        return jinja_value_new_undefined (&render->heap, NULL,
                                          "No aggregated item, sequence was empty.");
    }
    bool case_sensitive = values [0] && jinja_value_truthy (values [0]);
    sort_entry_t *entries = s_keyed_entries (render, node, items, values [1], case_sensitive);
    size_t count = items->u.list.count;
    jinja_value_unref (&items);
    if (!entries)
        return NULL;
    size_t best = 0;
    for (size_t index = 1; index < count; index++) {
        int order = 0;
        if (jinja_value_compare (&render->heap, entries [index].key, entries [best].key,
                                 max? ">": "<", &order)) {
            s_release_entries (entries, count);
            s_locate (render, node);
            return NULL;
        }
        if (max? order > 0: order < 0)
            best = index;
    }
    jinja_value_t *result = jinja_value_ref (entries [best].item);
    s_release_entries (entries, count);
    return result;
}

static jinja_value_t *
s_unique (render_t *render, const node_t *node, jinja_value_t *value, args_t *args)
{
    static const char *const params [] = { "case_sensitive", "attribute", NULL };
    jinja_value_t *values [2];
    if (!s_bind (render, node, "unique", args, params, 0, values))
        return NULL;
    jinja_value_t *items = s_iterate (render, node, value);
    if (!items)
        return NULL;
    bool case_sensitive = values [0] && jinja_value_truthy (values [0]);
    size_t count = items->u.list.count;
    sort_entry_t *entries = s_keyed_entries (render, node, items, values [1], case_sensitive);
    jinja_value_unref (&items);
    if (!entries)
        return NULL;
    jinja_value_t *result = s_new_list (render, JINJA_LIST_GENERATOR);
    jinja_value_t *seen = jinja_value_new_dict (&render->heap);
    if (!seen)
        jinja_value_unref (&result);
    for (size_t index = 0; result && index < count; index++) {
        jinja_value_t *key = entries [index].key;
        if (!jinja_value_hashable (key)) {
            s_fail (render, node, "TypeError", "unhashable type: '%s'",
                    jinja_value_type_name (key));
            jinja_value_unref (&result);
            break;
        }
        if (jinja_dict_get (seen, key))
            continue;
        if (jinja_dict_set (seen, key, jinja_value_none ())
        ||  jinja_list_push (result, entries [index].item))
            jinja_value_unref (&result);
    }
    jinja_value_unref (&seen);
    s_release_entries (entries, count);
    if (!result)
        s_locate (render, node);
    return result;
}

//  Sort entries by key and return their items as a list; releases entries.
static jinja_value_t *
s_sorted_list (render_t *render, const node_t *node, sort_entry_t *entries, size_t count,
               bool reverse)
{
    jinja_value_t *result = NULL;
    if (s_sort_entries (render, node, entries, count, reverse)) {
        result = s_new_list (render, JINJA_LIST_PLAIN);
        for (size_t index = 0; result && index < count; index++)
            if (jinja_list_push (result, entries [index].item))
                jinja_value_unref (&result);
    }
    s_release_entries (entries, count);
    if (!result)
        s_locate (render, node);
    return result;
}

static jinja_value_t *
s_sort (render_t *render, const node_t *node, jinja_value_t *value, args_t *args)
{
    static const char *const params [] = { "reverse", "case_sensitive", "attribute", NULL };
    jinja_value_t *values [3];
    if (!s_bind (render, node, "sort", args, params, 0, values))
        return NULL;
    jinja_value_t *items = s_iterate (render, node, value);
    if (!items)
        return NULL;
    bool reverse = values [0] && jinja_value_truthy (values [0]);
    bool case_sensitive = values [1] && jinja_value_truthy (values [1]);
    size_t count = items->u.list.count;
    sort_entry_t *entries = NULL;
    //  attribute may be "a,b": sort by a tuple of keys
    const jinja_value_t *attribute = values [2];
    if (attribute && attribute->type == JINJA_STRING && memchr (attribute->u.string.data, ',',
                                                               attribute->u.string.size)) {
        jinja_value_t *comma = s_new_string (render, ",", 1);
        jinja_value_t *parts = comma? s_split (render, node, (jinja_value_t *) attribute, comma,
                                               NULL, false): NULL;
        jinja_value_unref (&comma);
        entries = parts? calloc (count? count: 1, sizeof (sort_entry_t)): NULL;
        for (size_t index = 0; entries && index < count; index++) {
            jinja_value_t *keys [16];
            size_t key_count = parts->u.list.count < 16? parts->u.list.count: 16;
            bool ok = true;
            for (size_t part = 0; part < key_count; part++) {
                keys [part] = s_attribute_path (render, node, items->u.list.items [index],
                                                parts->u.list.items [part], NULL);
                if (keys [part] && !case_sensitive) {
                    jinja_value_t *lowered = s_ignore_case (render, keys [part]);
                    jinja_value_unref (&keys [part]);
                    keys [part] = lowered;
                }
                if (!keys [part]) {
                    ok = false;
                    key_count = part;
                }
            }
            jinja_value_t *key = ok? s_tuple_of (render, keys, key_count): NULL;
            for (size_t part = 0; part < key_count; part++)
                jinja_value_unref (&keys [part]);
            if (!key) {
                s_release_entries (entries, count);
                entries = NULL;
                break;
            }
            entries [index].key = key;
            entries [index].item = jinja_value_ref (items->u.list.items [index]);
        }
        jinja_value_unref (&parts);
    }
    else
        entries = s_keyed_entries (render, node, items, attribute, case_sensitive);
    jinja_value_unref (&items);
    if (!entries) {
        s_locate (render, node);
        return NULL;
    }
    return s_sorted_list (render, node, entries, count, reverse);
}

static jinja_value_t *
s_dictsort (render_t *render, const node_t *node, jinja_value_t *value, args_t *args)
{
    static const char *const params [] = { "case_sensitive", "by", "reverse", NULL };
    jinja_value_t *values [3];
    if (!s_bind (render, node, "dictsort", args, params, 0, values))
        return NULL;
    if (value->type == JINJA_UNDEFINED)
        return s_raise_undefined (render, node, value);
    if (value->type != JINJA_DICT)
        return s_fail (render, node, "AttributeError", "'%s' object has no attribute 'items'",
                       jinja_value_type_name (value));
    bool case_sensitive = values [0] && jinja_value_truthy (values [0]);
    bool by_value = false;
    if (values [1]) {
        if (values [1]->type == JINJA_STRING && strcmp (values [1]->u.string.data, "value") == 0)
            by_value = true;
        else
        if (!(values [1]->type == JINJA_STRING && strcmp (values [1]->u.string.data, "key") == 0))
            return s_fail (render, node, "FilterArgumentError",
                           "You can only sort by either \"key\" or \"value\"");
    }
    bool reverse = values [2] && jinja_value_truthy (values [2]);
    size_t count = value->u.dict.count;
    sort_entry_t *entries = calloc (count? count: 1, sizeof (sort_entry_t));
    if (!entries)
        return s_out_of_memory (render, node);
    for (size_t index = 0; index < count; index++) {
        jinja_dict_entry_t *entry = &value->u.dict.entries [index];
        jinja_value_t *pair [2] = { entry->key, entry->value };
        entries [index].item = s_tuple_of (render, pair, 2);
        jinja_value_t *key = by_value? entry->value: entry->key;
        entries [index].key = case_sensitive? jinja_value_ref (key): s_ignore_case (render, key);
        if (!entries [index].item || !entries [index].key) {
            s_release_entries (entries, count);
            return s_out_of_memory (render, node);
        }
    }
    return s_sorted_list (render, node, entries, count, reverse);
}

static jinja_value_t *
s_groupby (render_t *render, const node_t *node, jinja_value_t *value, args_t *args)
{
    static const char *const params [] = { "attribute", "default", "case_sensitive", NULL };
    jinja_value_t *values [3];
    if (!s_bind (render, node, "groupby", args, params, 1, values))
        return NULL;
    jinja_value_t *items = s_iterate (render, node, value);
    if (!items)
        return NULL;
    bool case_sensitive = values [2] && jinja_value_truthy (values [2]);
    size_t count = items->u.list.count;
    sort_entry_t *entries = calloc (count? count: 1, sizeof (sort_entry_t));
    for (size_t index = 0; entries && index < count; index++) {
        jinja_value_t *key = s_attribute_path (render, node, items->u.list.items [index],
                                               values [0], values [1]);
        if (key && !case_sensitive) {
            jinja_value_t *lowered = s_ignore_case (render, key);
            jinja_value_unref (&key);
            key = lowered;
        }
        entries [index].key = key;
        entries [index].item = jinja_value_ref (items->u.list.items [index]);
        if (!key) {
            s_release_entries (entries, count);
            entries = NULL;
        }
    }
    jinja_value_unref (&items);
    if (!entries || !s_sort_entries (render, node, entries, count, false)) {
        if (entries)
            s_release_entries (entries, count);
        s_locate (render, node);
        return NULL;
    }
    jinja_value_t *result = s_new_list (render, JINJA_LIST_PLAIN);
    size_t start = 0;
    while (result && start < count) {
        size_t end = start + 1;
        while (end < count && jinja_value_equal (entries [end].key, entries [start].key))
            end++;
        jinja_value_t *group = s_new_list (render, JINJA_LIST_PLAIN);
        for (size_t index = start; group && index < end; index++)
            if (jinja_list_push (group, entries [index].item))
                jinja_value_unref (&group);
        jinja_value_t *pair [2] = { entries [start].key, group };
        jinja_value_t *tuple = group? s_tuple_of (render, pair, 2): NULL;
        if (!tuple || jinja_list_push (result, tuple))
            jinja_value_unref (&result);
        jinja_value_unref (&tuple);
        jinja_value_unref (&group);
        start = end;
    }
    s_release_entries (entries, count);
    if (!result)
        s_locate (render, node);
    return result;
}

//  batch (rows of n) and slice (n columns)
static jinja_value_t *
s_batch_or_slice (render_t *render, const node_t *node, jinja_value_t *value, args_t *args,
                  bool slicing)
{
    static const char *const batch_params [] = { "linecount", "fill_with", NULL };
    static const char *const slice_params [] = { "slices", "fill_with", NULL };
    jinja_value_t *values [2];
    int64_t number;
    if (!s_bind (render, node, slicing? "slice": "batch", args,
                 slicing? slice_params: batch_params, 1, values)
    ||  !s_int_arg (render, node, values [0], 1, &number))
        return NULL;
    jinja_value_t *items = s_iterate (render, node, value);
    if (!items)
        return NULL;
    jinja_value_t *fill = values [1] && values [1]->type != JINJA_NONE? values [1]: NULL;
    size_t count = items->u.list.count;
    jinja_value_t *result = s_new_list (render, JINJA_LIST_GENERATOR);
    if (number <= 0 && (slicing || count)) {
        jinja_value_unref (&items);
        jinja_value_unref (&result);
        return s_fail (render, node, slicing? "ZeroDivisionError": "ValueError",
                       slicing? "integer division or modulo by zero": "batch size must be positive");
    }
    if (!slicing) {
        for (size_t start = 0; result && start < count; start += (size_t) number) {
            jinja_value_t *row = s_new_list (render, JINJA_LIST_PLAIN);
            for (size_t index = start; row && index < start + (size_t) number; index++) {
                jinja_value_t *item = index < count? items->u.list.items [index]: fill;
                if (!item)
                    break;
                if (jinja_list_push (row, item))
                    jinja_value_unref (&row);
            }
            if (!row || jinja_list_push (result, row))
                jinja_value_unref (&result);
            jinja_value_unref (&row);
        }
    }
    else {
        size_t per_slice = count / (size_t) number;
        size_t with_extra = count % (size_t) number;
        size_t offset = 0;
        for (size_t slice = 0; result && slice < (size_t) number; slice++) {
            size_t start = offset + slice * per_slice;
            if (slice < with_extra)
                offset++;
            size_t end = offset + (slice + 1) * per_slice;
            jinja_value_t *column = s_new_list (render, JINJA_LIST_PLAIN);
            for (size_t index = start; column && index < end && index < count; index++)
                if (jinja_list_push (column, items->u.list.items [index]))
                    jinja_value_unref (&column);
            if (column && fill && slice >= with_extra && jinja_list_push (column, fill))
                jinja_value_unref (&column);
            if (!column || jinja_list_push (result, column))
                jinja_value_unref (&result);
            jinja_value_unref (&column);
        }
    }
    jinja_value_unref (&items);
    if (!result)
        s_locate (render, node);
    return result;
}

static jinja_value_t *
s_truncate (render_t *render, const node_t *node, jinja_value_t *value, args_t *args)
{
    static const char *const params [] = { "length", "killwords", "end", "leeway", NULL };
    jinja_value_t *values [4];
    int64_t length, leeway;
    if (!s_bind (render, node, "truncate", args, params, 0, values)
    ||  !s_int_arg (render, node, values [0], 255, &length)
    ||  !s_int_arg (render, node, values [3], 5, &leeway))
        return NULL;
    jinja_value_t *text = s_soft_str (render, node, value);
    if (!text)
        return NULL;
    const char *end_text = values [2] && values [2]->type == JINJA_STRING?
                           values [2]->u.string.data: "...";
    int64_t end_length = (int64_t) jinja_utf8_length (end_text, strlen (end_text));
    if (length < end_length)
        length = end_length;
    if ((int64_t) text->u.string.length <= length + leeway)
        return text;
    size_t cut = jinja_utf8_offset (text, (size_t) (length - end_length));
    if (!(values [1] && jinja_value_truthy (values [1]))) {
        //  drop the last (partial) word: rsplit(" ", 1)[0]
        size_t space = cut;
        while (space > 0 && text->u.string.data [space - 1] != ' ')
            space--;
        if (space > 0)
            cut = space - 1;
    }
    jinja_buffer_t out;
    jinja_buffer_init (&out, &render->heap, 0);
    int rc = jinja_buffer_append (&out, text->u.string.data, cut);
    if (rc == 0)
        rc = jinja_buffer_append_str (&out, end_text);
    jinja_value_unref (&text);
    if (rc) {
        jinja_buffer_release (&out);
        s_locate (render, node);
        return NULL;
    }
    return jinja_buffer_to_string (&out, false);
}

static jinja_value_t *
s_call_filter (render_t *render, const node_t *node, int id, const char *name,
               jinja_value_t *value, args_t *args)
{
    jinja_value_t *values [4] = { NULL, NULL, NULL, NULL };
    static const char *const no_params [] = { NULL };
    if (id < 0)
        return s_fail (render, node, "TemplateRuntimeError", "No filter named '%s' found.", name);
    switch ((filter_id_t) id) {
        case FILTER_ABS:
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            if (value->type == JINJA_FLOAT)
                return s_new_float (render, fabs (value->u.number));
            if (value->type == JINJA_INT || value->type == JINJA_BOOL) {
                int64_t number = s_int_of (value);
                if (number == INT64_MIN)
                    return s_fail (render, node, "OverflowError", "integer result too large");
                return s_new_int (render, number < 0? -number: number);
            }
            return s_fail (render, node, "TypeError", "bad operand type for abs(): '%s'",
                           jinja_value_type_name (value));
        case FILTER_ATTR: {
            static const char *const params [] = { "name", NULL };
            if (!s_bind (render, node, name, args, params, 1, values))
                return NULL;
            if (values [0]->type != JINJA_STRING)
                return s_fail (render, node, "TypeError", "attribute name must be string");
            const char *attr = values [0]->u.string.data;
            if (value->type == JINJA_DICT) {
                //  attributes only: a dict's keys are not its attributes
                jinja_value_t *method = s_method (render, value, attr);
                if (method || render->heap.failed)
                    return method;
                return s_undefined_attribute (render, value, attr);
            }
            return s_getattr (render, node, value, attr);
        }
        case FILTER_BATCH:
            return s_batch_or_slice (render, node, value, args, false);
        case FILTER_SLICE:
            return s_batch_or_slice (render, node, value, args, true);
        case FILTER_CAPITALIZE:
        case FILTER_LOWER:
        case FILTER_UPPER:
        case FILTER_TITLE: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            jinja_value_t *text = s_soft_str (render, node, value);
            if (!text)
                return NULL;
            jinja_value_t *result = id == FILTER_TITLE? s_title_filter (render, text):
                                    s_change_case (render, text, id == FILTER_UPPER? CASE_UPPER:
                                                   id == FILTER_LOWER? CASE_LOWER: CASE_CAPITALIZE);
            jinja_value_unref (&text);
            if (!result)
                s_locate (render, node);
            return result;
        }
        case FILTER_CENTER: {
            static const char *const params [] = { "width", NULL };
            int64_t width;
            if (!s_bind (render, node, name, args, params, 0, values)
            ||  !s_int_arg (render, node, values [0], 80, &width))
                return NULL;
            jinja_value_t *text = s_soft_str (render, node, value);
            jinja_value_t *result = text? s_pad (render, node, text, width, NULL, '^'): NULL;
            jinja_value_unref (&text);
            return result;
        }
        case FILTER_COUNT:
        case FILTER_LENGTH: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            int64_t length = s_length (render, node, value);
            return length < 0? NULL: s_new_int (render, length);
        }
        case FILTER_DEFAULT: {
            static const char *const params [] = { "default_value", "boolean", NULL };
            if (!s_bind (render, node, name, args, params, 0, values))
                return NULL;
            bool boolean = values [1] && jinja_value_truthy (values [1]);
            if (value->type == JINJA_UNDEFINED || (boolean && !jinja_value_truthy (value)))
                return values [0]? jinja_value_ref (values [0]): s_new_string (render, "", 0);
            return jinja_value_ref (value);
        }
        case FILTER_DICTSORT:
            return s_dictsort (render, node, value, args);
        case FILTER_ESCAPE:
        case FILTER_FORCEESCAPE: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            jinja_value_t *result;
            if (id == FILTER_FORCEESCAPE && value->type == JINJA_STRING && value->u.string.safe) {
                jinja_value_t *plain = s_new_string (render, value->u.string.data,
                                                     value->u.string.size);
                result = plain? s_escape (render, plain): NULL;
                jinja_value_unref (&plain);
            }
            else
                result = s_escape (render, value);
            if (!result)
                s_locate (render, node);
            return result;
        }
        case FILTER_FIRST:
        case FILTER_LAST:
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            return s_first_or_last (render, node, value, id == FILTER_LAST);
        case FILTER_FLOAT: {
            static const char *const params [] = { "default", NULL };
            if (!s_bind (render, node, name, args, params, 0, values))
                return NULL;
            if (value->type == JINJA_UNDEFINED)
                return s_raise_undefined (render, node, value);
            double number;
            if (s_is_number (value))
                return s_new_float (render, s_float_of (value));
            if (value->type == JINJA_STRING && s_parse_float (value, &number))
                return s_new_float (render, number);
            return values [0]? jinja_value_ref (values [0]): s_new_float (render, 0.0);
        }
        case FILTER_INT: {
            static const char *const params [] = { "default", "base", NULL };
            int64_t base;
            if (!s_bind (render, node, name, args, params, 0, values)
            ||  !s_int_arg (render, node, values [1], 10, &base))
                return NULL;
            if (value->type == JINJA_UNDEFINED)
                return s_raise_undefined (render, node, value);
            int64_t number;
            double real;
            if (value->type == JINJA_INT || value->type == JINJA_BOOL)
                return s_new_int (render, s_int_of (value));
            if (value->type == JINJA_STRING && s_parse_int (value, base, &number))
                return s_new_int (render, number);
            if (value->type == JINJA_FLOAT)
                real = value->u.number;
            else
            if (!(value->type == JINJA_STRING && s_parse_float (value, &real)))
                return values [0]? jinja_value_ref (values [0]): s_new_int (render, 0);
            if (isnan (real))
                return values [0]? jinja_value_ref (values [0]): s_new_int (render, 0);
            if (!isfinite (real) || real >= 9.2e18 || real <= -9.2e18)
                return s_fail (render, node, "OverflowError", "cannot convert float to integer");
            return s_new_int (render, (int64_t) real);
        }
        case FILTER_FORMAT: {
            jinja_value_t *text = s_soft_str (render, node, value);
            if (!text)
                return NULL;
            if (args->positional_count && args->named_count) {
                jinja_value_unref (&text);
                return s_fail (render, node, "FilterArgumentError",
                               "can't handle positional and keyword arguments at the same time");
            }
            jinja_value_t *packed;
            if (args->named_count) {
                packed = jinja_value_new_dict (&render->heap);
                for (size_t index = 0; packed && index < args->named_count; index++)
                    if (jinja_dict_set_str (packed, args->names [index], args->named [index]))
                        jinja_value_unref (&packed);
            }
            else
                packed = s_tuple_of (render, args->positional, args->positional_count);
            jinja_value_t *result = packed? s_percent_format (render, node, text, packed): NULL;
            jinja_value_unref (&packed);
            jinja_value_unref (&text);
            return result;
        }
        case FILTER_GROUPBY:
            return s_groupby (render, node, value, args);
        case FILTER_INDENT: {
            static const char *const params [] = { "width", "first", "blank", NULL };
            if (!s_bind (render, node, name, args, params, 0, values))
                return NULL;
            return s_indent (render, node, value, values [0],
                             values [1] && jinja_value_truthy (values [1]),
                             values [2] && jinja_value_truthy (values [2]));
        }
        case FILTER_JOIN: {
            static const char *const params [] = { "d", "attribute", NULL };
            if (!s_bind (render, node, name, args, params, 0, values))
                return NULL;
            jinja_value_t *separator = values [0]? s_soft_str (render, node, values [0]):
                                                   s_new_string (render, "", 0);
            if (!separator)
                return NULL;
            jinja_value_t *source = jinja_value_ref (value);
            if (values [1] && values [1]->type != JINJA_NONE) {
                jinja_value_t *items = s_iterate (render, node, value);
                jinja_value_unref (&source);
                source = items? s_new_list (render, JINJA_LIST_PLAIN): NULL;
                for (size_t index = 0; source && index < items->u.list.count; index++) {
                    jinja_value_t *part = s_attribute_path (render, node, items->u.list.items [index],
                                                            values [1], NULL);
                    if (!part || jinja_list_push (source, part))
                        jinja_value_unref (&source);
                    jinja_value_unref (&part);
                }
                jinja_value_unref (&items);
            }
            jinja_value_t *result = source? s_join (render, node, separator, source, false):
                                            NULL;
            jinja_value_unref (&source);
            jinja_value_unref (&separator);
            if (!result)
                s_locate (render, node);
            return result;
        }
        case FILTER_LIST: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            jinja_value_t *items = s_iterate (render, node, value);
            if (!items || (items->type == JINJA_LIST && items->u.list.kind == JINJA_LIST_PLAIN
                           && items != value))
                return items;
            jinja_value_t *list = s_new_list (render, JINJA_LIST_PLAIN);
            for (size_t index = 0; list && index < items->u.list.count; index++)
                if (jinja_list_push (list, items->u.list.items [index]))
                    jinja_value_unref (&list);
            jinja_value_unref (&items);
            if (!list)
                s_locate (render, node);
            return list;
        }
        case FILTER_ITEMS: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            jinja_value_t *result = s_new_list (render, JINJA_LIST_GENERATOR);
            if (!result || value->type == JINJA_UNDEFINED)
                return result;
            if (value->type != JINJA_DICT) {
                jinja_value_unref (&result);
                return s_fail (render, node, "TypeError", "Can only get item pairs from a mapping.");
            }
            for (size_t index = 0; result && index < value->u.dict.count; index++) {
                jinja_value_t *pair [2] = { value->u.dict.entries [index].key,
                                            value->u.dict.entries [index].value };
                jinja_value_t *tuple = s_tuple_of (render, pair, 2);
                if (!tuple || jinja_list_push (result, tuple))
                    jinja_value_unref (&result);
                jinja_value_unref (&tuple);
            }
            if (!result)
                s_locate (render, node);
            return result;
        }
        case FILTER_MAP:
            return s_map (render, node, value, args);
        case FILTER_MIN:
        case FILTER_MAX:
            return s_min_max (render, node, value, args, id == FILTER_MAX);
        case FILTER_PPRINT: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            jinja_buffer_t out;
            jinja_buffer_init (&out, &render->heap, render->max_output);
            if (jinja_value_write_repr (&out, value)) {
                jinja_buffer_release (&out);
                s_locate (render, node);
                return NULL;
            }
            return jinja_buffer_to_string (&out, false);
        }
        case FILTER_REJECT:
        case FILTER_SELECT:
            return s_select (render, node, value, args, false, id == FILTER_SELECT);
        case FILTER_REJECTATTR:
        case FILTER_SELECTATTR:
            return s_select (render, node, value, args, true, id == FILTER_SELECTATTR);
        case FILTER_REPLACE: {
            static const char *const params [] = { "old", "new", "count", NULL };
            int64_t count;
            if (!s_bind (render, node, name, args, params, 2, values)
            ||  !s_int_arg (render, node, values [2], -1, &count))
                return NULL;
            jinja_value_t *text = s_soft_str (render, node, value);
            jinja_value_t *old = s_soft_str (render, node, values [0]);
            jinja_value_t *new_value = s_soft_str (render, node, values [1]);
            jinja_value_t *result = text && old && new_value?
                s_replace (render, node, text, old, new_value, count, false): NULL;
            jinja_value_unref (&text);
            jinja_value_unref (&old);
            jinja_value_unref (&new_value);
            return result;
        }
        case FILTER_REVERSE: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            if (value->type == JINJA_STRING) {
                jinja_value_t *step = s_new_int (render, -1);
                jinja_value_t *result = step? s_slice (render, node, value, NULL, NULL, step): NULL;
                jinja_value_unref (&step);
                if (!result)
                    s_locate (render, node);
                return result;
            }
            if (value->type != JINJA_LIST && value->type != JINJA_DICT
            &&  value->type != JINJA_UNDEFINED)
                return s_fail (render, node, "FilterArgumentError", "argument must be iterable");
            jinja_value_t *items = s_iterate (render, node, value);
            if (!items)
                return NULL;
            jinja_value_t *result = s_new_list (render, JINJA_LIST_GENERATOR);
            for (size_t index = items->u.list.count; result && index-- > 0;)
                if (jinja_list_push (result, items->u.list.items [index]))
                    jinja_value_unref (&result);
            jinja_value_unref (&items);
            if (!result)
                s_locate (render, node);
            return result;
        }
        case FILTER_ROUND: {
            static const char *const params [] = { "precision", "method", NULL };
            int64_t precision;
            if (!s_bind (render, node, name, args, params, 0, values)
            ||  !s_int_arg (render, node, values [0], 0, &precision))
                return NULL;
            const char *method = values [1] && values [1]->type == JINJA_STRING?
                                 values [1]->u.string.data: "common";
            return s_round (render, node, value, precision, method);
        }
        case FILTER_SAFE: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            jinja_value_t *text = s_soft_str (render, node, value);
            if (!text || text->u.string.safe)
                return text;
            jinja_value_t *result = jinja_value_new_string (&render->heap, text->u.string.data,
                                                            text->u.string.size, true);
            jinja_value_unref (&text);
            if (!result)
                s_locate (render, node);
            return result;
        }
        case FILTER_SORT:
            return s_sort (render, node, value, args);
        case FILTER_STRING:
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            return s_soft_str (render, node, value);
        case FILTER_SUM: {
            static const char *const params [] = { "attribute", "start", NULL };
            if (!s_bind (render, node, name, args, params, 0, values))
                return NULL;
            jinja_value_t *items = s_iterate (render, node, value);
            if (!items)
                return NULL;
            jinja_value_t *total = values [1]? jinja_value_ref (values [1]): s_new_int (render, 0);
            for (size_t index = 0; total && index < items->u.list.count; index++) {
                jinja_value_t *term = s_attribute_path (render, node, items->u.list.items [index],
                                                        values [0], NULL);
                jinja_value_t *next = term? s_arithmetic (render, node, OP_ADD, total, term): NULL;
                jinja_value_unref (&term);
                jinja_value_unref (&total);
                total = next;
            }
            jinja_value_unref (&items);
            return total;
        }
        case FILTER_TRIM: {
            static const char *const params [] = { "chars", NULL };
            if (!s_bind (render, node, name, args, params, 0, values))
                return NULL;
            jinja_value_t *text = s_soft_str (render, node, value);
            jinja_value_t *result = text? s_strip (render, node, text, values [0], true, true): NULL;
            jinja_value_unref (&text);
            if (!result)
                s_locate (render, node);
            return result;
        }
        case FILTER_TRUNCATE:
            return s_truncate (render, node, value, args);
        case FILTER_UNIQUE:
            return s_unique (render, node, value, args);
        case FILTER_WORDCOUNT: {
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return NULL;
            jinja_value_t *text = s_soft_str (render, node, value);
            if (!text)
                return NULL;
            int64_t words = 0;
            bool in_word = false;
            size_t pos = 0;
            while (pos < text->u.string.size) {
                uint32_t code = jinja_utf8_next (text->u.string.data, text->u.string.size, &pos);
                bool word = code == '_' || jinja_unicode_is_alpha (code)
                         || jinja_unicode_is_digit (code);
                if (word && !in_word)
                    words++;
                in_word = word;
            }
            jinja_value_unref (&text);
            return s_new_int (render, words);
        }
        case FILTER_TOJSON:
            return s_tojson (render, node, value, args);
        default:
            break;
    }
    return s_fail (render, node, "TemplateRuntimeError", "the filter '%s' is not supported", name);
}

//  --- Tests ----------------------------------------------------------------------------

static int
s_call_test (render_t *render, const node_t *node, int id, const char *name,
             jinja_value_t *value, args_t *args)
{
    static const char *const no_params [] = { NULL };
    static const char *const other_param [] = { "other", NULL };
    jinja_value_t *values [2] = { NULL, NULL };
    if (id < 0) {
        s_fail (render, node, "TemplateRuntimeError", "No test named '%s' found.", name);
        return -1;
    }
    switch ((test_id_t) id) {
        case TEST_IN:
        case TEST_EQ:
        case TEST_NE:
        case TEST_GT:
        case TEST_GE:
        case TEST_LT:
        case TEST_LE:
        case TEST_SAMEAS:
        case TEST_DIVISIBLEBY:
            if (!s_bind (render, node, name, args, other_param, 1, values))
                return -1;
            break;
        default:
            if (!s_bind (render, node, name, args, no_params, 0, values))
                return -1;
            break;
    }
    jinja_value_t *other = values [0];
    switch ((test_id_t) id) {
        case TEST_ODD:
        case TEST_EVEN:
        case TEST_DIVISIBLEBY: {
            jinja_value_t *divisor = id == TEST_DIVISIBLEBY? other: NULL;
            jinja_value_t *two = divisor? NULL: s_new_int (render, 2);
            jinja_value_t *remainder = (divisor || two)?
                s_arithmetic (render, node, OP_MOD, value, divisor? divisor: two): NULL;
            jinja_value_unref (&two);
            if (!remainder)
                return -1;
            double rest = s_is_number (remainder)? s_float_of (remainder): 1.0;
            jinja_value_unref (&remainder);
            return id == TEST_ODD? rest == 1.0: rest == 0.0;
        }
        case TEST_DEFINED:
            return value->type != JINJA_UNDEFINED;
        case TEST_UNDEFINED:
            return value->type == JINJA_UNDEFINED;
        case TEST_FILTER:
            return value->type == JINJA_STRING && s_filter_lookup (value->u.string.data) >= 0;
        case TEST_TEST:
            return value->type == JINJA_STRING && s_test_lookup (value->u.string.data) >= 0;
        case TEST_NONE:
            return value->type == JINJA_NONE;
        case TEST_BOOLEAN:
            return value->type == JINJA_BOOL;
        case TEST_FALSE:
            return value->type == JINJA_BOOL && !value->u.boolean;
        case TEST_TRUE:
            return value->type == JINJA_BOOL && value->u.boolean;
        case TEST_INTEGER:
            return value->type == JINJA_INT;
        case TEST_FLOAT:
            return value->type == JINJA_FLOAT;
        case TEST_NUMBER:
            return s_is_number (value);
        case TEST_STRING:
            return value->type == JINJA_STRING;
        case TEST_MAPPING:
            return value->type == JINJA_DICT;
        case TEST_SEQUENCE:
            return value->type == JINJA_STRING || value->type == JINJA_DICT
                || value->type == JINJA_UNDEFINED || s_is_sequence_list (value);
        case TEST_ITERABLE:
            return value->type == JINJA_STRING || value->type == JINJA_DICT
                || value->type == JINJA_UNDEFINED || value->type == JINJA_LIST
                || value->type == JINJA_LOOP;
        case TEST_CALLABLE:
            return value->type == JINJA_CALLABLE || value->type == JINJA_UNDEFINED
                || value->type == JINJA_LOOP;
        case TEST_ESCAPED:
            return value->type == JINJA_STRING && value->u.string.safe;
        case TEST_LOWER:
        case TEST_UPPER: {
            jinja_value_t *text = s_soft_str (render, node, value);
            if (!text)
                return -1;
            bool result = s_is_case (text, id == TEST_UPPER);
            jinja_value_unref (&text);
            return result;
        }
        case TEST_SAMEAS:
            if (value == other)
                return 1;
            if (value->type != other->type)
                return 0;
            if (value->type == JINJA_NONE || value->type == JINJA_BOOL)
                return value->type == JINJA_NONE || value->u.boolean == other->u.boolean;
            if (value->type == JINJA_INT)   //  Python keeps one object per small int
                return value->u.integer == other->u.integer
                    && value->u.integer >= -5 && value->u.integer <= 256;
            return 0;
        case TEST_IN:
            return s_contains (render, node, value, other);
        case TEST_EQ:
            return s_compare_op (render, node, OP_EQ, value, other);
        case TEST_NE:
            return s_compare_op (render, node, OP_NE, value, other);
        case TEST_GT:
            return s_compare_op (render, node, OP_GT, value, other);
        case TEST_GE:
            return s_compare_op (render, node, OP_GTEQ, value, other);
        case TEST_LT:
            return s_compare_op (render, node, OP_LT, value, other);
        case TEST_LE:
            return s_compare_op (render, node, OP_LTEQ, value, other);
    }
    return 0;
}

//  --- Evaluation -----------------------------------------------------------------------

//  A filter node applied: its operand is node->a evaluated, or (in {% filter %} and
//  {% set x | f %}, where the innermost operand is missing) input.
static jinja_value_t *
s_filter_node (render_t *render, jinja_value_t *scope, const node_t *node, jinja_value_t *input)
{
    jinja_value_t *value;
    if (!node->a)
        value = jinja_value_ref (input);
    else
    if (input)
        value = s_filter_node (render, scope, node->a, input);
    else
        value = s_eval (render, scope, node->a);
    if (!value)
        return NULL;
    args_t args;
    if (!s_eval_args (render, scope, node, &args)) {
        jinja_value_unref (&value);
        return NULL;
    }
    jinja_value_t *result = s_call_filter (render, node, node->id, node->name, value, &args);
    s_args_release (&args);
    jinja_value_unref (&value);
    return result;
}

static jinja_value_t *
s_eval_list (render_t *render, jinja_value_t *scope, const node_t *node, jinja_list_kind_t kind)
{
    jinja_value_t *list = s_new_list (render, kind);
    if (!list)
        return NULL;
    for (size_t index = 0; index < node->args.count; index++) {
        const node_t *item_node = node->args.items [index];
        if (item_node->kind == NODE_SLICE) {
            jinja_value_unref (&list);
            return s_fail (render, item_node, "TypeError", "slices are not supported here");
        }
        jinja_value_t *item = s_eval (render, scope, item_node);
        if (!item || !s_push (render, node, list, item)) {
            jinja_value_unref (&item);
            jinja_value_unref (&list);
            return NULL;
        }
        jinja_value_unref (&item);
    }
    return list;
}

static jinja_value_t *
s_eval_node (render_t *render, jinja_value_t *scope, const node_t *node)
{
    switch (node->kind) {
        case NODE_CONST:
            return jinja_value_ref (node->value);
        case NODE_NAME:
            return s_lookup (render, scope, node->name);
        case NODE_GETATTR: {
            jinja_value_t *object = s_eval (render, scope, node->a);
            jinja_value_t *result = object? s_getattr (render, node, object, node->name): NULL;
            jinja_value_unref (&object);
            return result;
        }
        case NODE_GETITEM: {
            jinja_value_t *object = s_eval (render, scope, node->a);
            if (!object)
                return NULL;
            jinja_value_t *result = NULL;
            if (node->b->kind == NODE_SLICE) {
                const node_t *slice = node->b;
                jinja_value_t *parts [3] = { NULL, NULL, NULL };
                const node_t *part_nodes [3] = { slice->a, slice->b, slice->c };
                bool ok = true;
                for (size_t index = 0; ok && index < 3; index++)
                    if (part_nodes [index]) {
                        parts [index] = s_eval (render, scope, part_nodes [index]);
                        ok = parts [index] != NULL;
                    }
                //  a slice is Python's own subscript (not Jinja2's getitem): what cannot
                //  be sliced raises
                if (ok && object->type == JINJA_UNDEFINED)
                    s_raise_undefined (render, node, object);
                else
                if (ok && object->type == JINJA_DICT)
                    s_fail (render, node, "TypeError", "unhashable type: 'slice'");
                else
                if (ok && object->type != JINJA_STRING && !s_is_sequence_list (object))
                    s_fail (render, node, "TypeError", "'%s' object is not subscriptable",
                            jinja_value_type_name (object));
                else
                if (ok)
                    result = s_slice (render, node, object, parts [0], parts [1], parts [2]);
                for (size_t index = 0; index < 3; index++)
                    jinja_value_unref (&parts [index]);
            }
            else {
                jinja_value_t *key = s_eval (render, scope, node->b);
                result = key? s_getitem (render, node, object, key): NULL;
                jinja_value_unref (&key);
            }
            jinja_value_unref (&object);
            return result;
        }
        case NODE_CALL: {
            jinja_value_t *callee = s_eval (render, scope, node->a);
            if (!callee)
                return NULL;
            args_t args;
            jinja_value_t *result = NULL;
            if (s_eval_args (render, scope, node, &args)) {
                result = s_call (render, node, callee, &args, NULL);
                s_args_release (&args);
            }
            jinja_value_unref (&callee);
            return result;
        }
        case NODE_FILTER:
            return s_filter_node (render, scope, node, NULL);
        case NODE_TEST: {
            jinja_value_t *value = s_eval (render, scope, node->a);
            if (!value)
                return NULL;
            args_t args;
            int passed = -1;
            if (s_eval_args (render, scope, node, &args)) {
                passed = s_call_test (render, node, node->id, node->name, value, &args);
                s_args_release (&args);
            }
            jinja_value_unref (&value);
            return passed < 0? NULL: jinja_value_bool (passed);
        }
        case NODE_NOT: {
            jinja_value_t *value = s_eval (render, scope, node->a);
            if (!value)
                return NULL;
            bool truth = jinja_value_truthy (value);
            jinja_value_unref (&value);
            return jinja_value_bool (!truth);
        }
        case NODE_NEG:
        case NODE_POS: {
            jinja_value_t *value = s_eval (render, scope, node->a);
            if (!value)
                return NULL;
            jinja_value_t *result = NULL;
            if (value->type == JINJA_UNDEFINED)
                s_raise_undefined (render, node, value);
            else
            if (value->type == JINJA_FLOAT)
                result = s_new_float (render, node->kind == NODE_NEG? -value->u.number:
                                                                      value->u.number);
            else
            if (value->type == JINJA_INT || value->type == JINJA_BOOL) {
                int64_t number = s_int_of (value);
                if (node->kind == NODE_NEG && number == INT64_MIN)
                    s_fail (render, node, "OverflowError", "integer result too large");
                else
                    result = s_new_int (render, node->kind == NODE_NEG? -number: number);
            }
            else
                s_fail (render, node, "TypeError", "bad operand type for unary %c: '%s'",
                        node->kind == NODE_NEG? '-': '+', jinja_value_type_name (value));
            jinja_value_unref (&value);
            return result;
        }
        case NODE_BINARY: {
            jinja_value_t *left = s_eval (render, scope, node->a);
            jinja_value_t *right = left? s_eval (render, scope, node->b): NULL;
            jinja_value_t *result = right? s_arithmetic (render, node, node->op, left, right): NULL;
            jinja_value_unref (&left);
            jinja_value_unref (&right);
            return result;
        }
        case NODE_CONCAT: {
            jinja_buffer_t buffer;
            jinja_buffer_init (&buffer, &render->heap, render->max_output);
            for (size_t index = 0; index < node->args.count; index++) {
                jinja_value_t *value = s_eval (render, scope, node->args.items [index]);
                int rc = value? jinja_value_write_str (&buffer, value): -1;
                jinja_value_unref (&value);
                if (rc) {
                    jinja_buffer_release (&buffer);
                    return NULL;
                }
            }
            return jinja_buffer_to_string (&buffer, false);
        }
        case NODE_COMPARE: {
            jinja_value_t *left = s_eval (render, scope, node->a);
            bool result = true;
            for (size_t index = 0; left && index < node->args.count; index++) {
                const node_t *operand = node->args.items [index];
                jinja_value_t *right = s_eval (render, scope, operand->a);
                int holds = right? s_compare_op (render, operand, operand->op, left, right): -1;
                jinja_value_unref (&left);
                left = right;
                if (holds < 0) {
                    jinja_value_unref (&left);
                    return NULL;
                }
                if (!holds) {
                    result = false;
                    break;
                }
            }
            if (!left)
                return NULL;
            jinja_value_unref (&left);
            return jinja_value_bool (result);
        }
        case NODE_AND:
        case NODE_OR: {
            jinja_value_t *left = s_eval (render, scope, node->a);
            if (!left)
                return NULL;
            bool truth = jinja_value_truthy (left);
            if ((node->kind == NODE_AND) != truth)
                return left;
            jinja_value_unref (&left);
            return s_eval (render, scope, node->b);
        }
        case NODE_CONDEXPR: {
            jinja_value_t *test = s_eval (render, scope, node->a);
            if (!test)
                return NULL;
            bool truth = jinja_value_truthy (test);
            jinja_value_unref (&test);
            if (truth)
                return s_eval (render, scope, node->b);
            if (node->c)
                return s_eval (render, scope, node->c);
            return jinja_value_new_undefined (&render->heap, NULL,
                                              "the inline if-expression on line %d evaluated"
                                              " to false and no else section was defined.",
                                              s_line_of (render, node));
        }
        case NODE_LIST:
            return s_eval_list (render, scope, node, JINJA_LIST_PLAIN);
        case NODE_TUPLE:
            return s_eval_list (render, scope, node, JINJA_LIST_TUPLE);
        case NODE_DICT: {
            jinja_value_t *dict = jinja_value_new_dict (&render->heap);
            for (size_t index = 0; dict && index < node->args.count; index++) {
                const node_t *pair = node->args.items [index];
                jinja_value_t *key = s_eval (render, scope, pair->a);
                jinja_value_t *value = key? s_eval (render, scope, pair->b): NULL;
                if (value && !jinja_value_hashable (key))
                    s_fail (render, pair, "TypeError", "unhashable type: '%s'",
                            jinja_value_type_name (key));
                else
                if (value && jinja_dict_set (dict, key, value))
                    s_locate (render, pair);
                if (render->heap.failed)
                    jinja_value_unref (&dict);
                jinja_value_unref (&key);
                jinja_value_unref (&value);
            }
            return dict;
        }
        default:
            return s_fail (render, node, "TemplateRuntimeError", "cannot evaluate this expression");
    }
}

static jinja_value_t *
s_eval (render_t *render, jinja_value_t *scope, const node_t *node)
{
    if (!s_step (render, node))
        return NULL;
    if (render->depth >= MAX_EVAL_DEPTH)
        return s_fail (render, node, "RecursionError", "maximum recursion depth exceeded");
    render->depth++;
    jinja_value_t *result = s_eval_node (render, scope, node);
    render->depth--;
    if (!result) {
        if (!render->heap.failed)
            s_fail (render, node, "TemplateRuntimeError", "the expression has no value");
        s_locate (render, node);
    }
    return result;
}

//  --- Statements -----------------------------------------------------------------------

static exec_status_t s_exec_body (render_t *render, jinja_value_t *scope,
                                  const node_list_t *body, jinja_buffer_t *out);

//  Bind an assignment target (a name, or a tuple of names that unpacks value).
static bool
s_bind_target (render_t *render, jinja_value_t *scope, const node_t *target, jinja_value_t *value)
{
    if (target->kind == NODE_NAME)
        return s_assign (render, target, scope, target->name, value);
    if (target->kind == NODE_NSREF) {
        jinja_value_t *namespace_ = s_lookup (render, scope, target->name);
        if (!namespace_) {
            s_locate (render, target);
            return false;
        }
        bool ok = namespace_->type == JINJA_NAMESPACE;
        if (!ok)
            s_fail (render, target, "TemplateRuntimeError",
                    "cannot assign attribute on non-namespace object");
        else
        if (jinja_dict_set_str (namespace_->u.namespace_.attrs, target->attr, value)) {
            s_locate (render, target);
            ok = false;
        }
        jinja_value_unref (&namespace_);
        return ok;
    }
    //  a tuple of names: unpack
    jinja_value_t *items = s_iterate (render, target, value);
    if (!items)
        return false;
    size_t expected = target->args.count;
    bool ok = true;
    if (items->u.list.count < expected) {
        s_fail (render, target, "ValueError", "not enough values to unpack (expected %zu, got %zu)",
                expected, items->u.list.count);
        ok = false;
    }
    else
    if (items->u.list.count > expected) {
        s_fail (render, target, "ValueError", "too many values to unpack (expected %zu)", expected);
        ok = false;
    }
    for (size_t index = 0; ok && index < expected; index++)
        ok = s_assign (render, target, scope, target->args.items [index]->name,
                       items->u.list.items [index]);
    jinja_value_unref (&items);
    return ok;
}

//  Run a for loop over iterable (depth0 > 0 when a recursive loop calls itself).
static exec_status_t
s_run_for (render_t *render, jinja_value_t *scope, const node_t *node, jinja_value_t *iterable,
           size_t depth0, jinja_buffer_t *out)
{
    jinja_value_t *items = s_iterate (render, node->b, iterable);
    if (!items)
        return EXEC_ERROR;
    if (node->c) {
        //  for x in y if test: only the items the test holds for count
        jinja_value_t *kept = s_new_list (render, JINJA_LIST_PLAIN);
        for (size_t index = 0; kept && index < items->u.list.count; index++) {
            jinja_value_t *item = items->u.list.items [index];
            jinja_value_t *test_scope = jinja_value_new_scope (&render->heap, scope);
            jinja_value_t *test = NULL;
            if (test_scope && s_bind_target (render, test_scope, node->a, item))
                test = s_eval (render, test_scope, node->c);
            jinja_value_unref (&test_scope);
            if (!test || (jinja_value_truthy (test) && !s_push (render, node, kept, item)))
                jinja_value_unref (&kept);
            jinja_value_unref (&test);
        }
        jinja_value_unref (&items);
        if (!kept) {
            s_locate (render, node);
            return EXEC_ERROR;
        }
        items = kept;
    }
    else
    if (items->u.list.kind != JINJA_LIST_PLAIN) {
        jinja_value_t *plain = s_new_list (render, JINJA_LIST_PLAIN);
        for (size_t index = 0; plain && index < items->u.list.count; index++)
            if (jinja_list_push (plain, items->u.list.items [index]))
                jinja_value_unref (&plain);
        jinja_value_unref (&items);
        if (!plain) {
            s_locate (render, node);
            return EXEC_ERROR;
        }
        items = plain;
    }
    jinja_value_t *loop = jinja_value_new_loop (&render->heap, items, depth0);
    if (!loop) {
        jinja_value_unref (&items);
        s_locate (render, node);
        return EXEC_ERROR;
    }
    if (node->flag) {
        loop->u.loop.node = node;
        loop->u.loop.scope = jinja_value_ref (scope);
    }
    exec_status_t status = EXEC_OK;
    size_t count = items->u.list.count;
    for (size_t index = 0; index < count; index++) {
        if (++render->iterations > render->max_iterations) {
            s_fail (render, node, "TemplateRuntimeError",
                    "the template ran more than %llu loop iterations",
                    (unsigned long long) render->max_iterations);
            status = EXEC_ERROR;
            break;
        }
        loop->u.loop.index0 = index;
        jinja_value_t *iteration = jinja_value_new_scope (&render->heap, scope);
        if (!iteration || !s_bind_target (render, iteration, node->a, items->u.list.items [index])
        ||  !s_assign (render, node, iteration, "loop", loop)) {
            jinja_value_unref (&iteration);
            s_locate (render, node);
            status = EXEC_ERROR;
            break;
        }
        exec_status_t body = s_exec_body (render, iteration, &node->body, out);
        jinja_value_unref (&iteration);
        if (body == EXEC_ERROR) {
            status = EXEC_ERROR;
            break;
        }
        if (body == EXEC_BREAK)
            break;
    }
    jinja_value_unref (&loop);
    jinja_value_unref (&items);
    if (status == EXEC_OK && count == 0 && node->else_body.count) {
        jinja_value_t *else_scope = jinja_value_new_scope (&render->heap, scope);
        if (!else_scope) {
            s_locate (render, node);
            return EXEC_ERROR;
        }
        status = s_exec_body (render, else_scope, &node->else_body, out);
        jinja_value_unref (&else_scope);
        if (status != EXEC_ERROR)
            status = EXEC_OK;
    }
    return status;
}

//  loop(children) in a recursive loop: the loop's body again, one level deeper.
static jinja_value_t *
s_call_loop (render_t *render, const node_t *node, jinja_value_t *loop, args_t *args)
{
    if (args->positional_count != 1 || args->named_count)
        return s_fail (render, node, "TypeError", "loop() takes exactly one argument");
    if (render->call_depth >= MAX_CALL_DEPTH)
        return s_fail (render, node, "RecursionError", "maximum recursion depth exceeded");
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, &render->heap, render->max_output);
    render->call_depth++;
    exec_status_t status = s_run_for (render, loop->u.loop.scope, loop->u.loop.node,
                                      args->positional [0], loop->u.loop.depth0 + 1, &buffer);
    render->call_depth--;
    if (status == EXEC_ERROR) {
        jinja_buffer_release (&buffer);
        return NULL;
    }
    return jinja_buffer_to_string (&buffer, false);
}

static jinja_value_t *
s_call_macro (render_t *render, const node_t *node, jinja_value_t *macro, args_t *args,
              jinja_value_t *caller)
{
    const node_t *definition = macro->u.callable.node;
    const char *name = macro->u.callable.name;
    if (render->call_depth >= MAX_CALL_DEPTH)
        return s_fail (render, node, "RecursionError",
                       "maximum recursion depth exceeded in macro '%s'", name);
    jinja_value_t *scope = jinja_value_new_scope (&render->heap, macro->u.callable.closure);
    bool *consumed = calloc (args->named_count + 1, sizeof (bool));
    if (!scope || !consumed) {
        jinja_value_unref (&scope);
        free (consumed);
        return s_out_of_memory (render, node);
    }
    bool ok = true;
    size_t param_count = definition->args.count;
    for (size_t index = 0; ok && index < param_count; index++) {
        const node_t *param = definition->args.items [index];
        jinja_value_t *value = NULL;
        if (index < args->positional_count)
            value = jinja_value_ref (args->positional [index]);
        else
            for (size_t named = 0; named < args->named_count; named++)
                if (!consumed [named] && strcmp (args->names [named], param->name) == 0) {
                    value = jinja_value_ref (args->named [named]);
                    consumed [named] = true;
                    break;
                }
        if (!value) {
            if (param->a)
                value = s_eval (render, scope, param->a);
            else
                value = jinja_value_new_undefined (&render->heap, NULL,
                                                   "parameter '%s' was not provided", param->name);
        }
        ok = value && s_assign (render, param, scope, param->name, value);
        jinja_value_unref (&value);
    }
    if (ok && (definition->uses & USES_CALLER)) {
        jinja_value_t *value = caller? jinja_value_ref (caller): NULL;
        for (size_t named = 0; !value && named < args->named_count; named++)
            if (!consumed [named] && strcmp (args->names [named], "caller") == 0) {
                value = jinja_value_ref (args->named [named]);
                consumed [named] = true;
            }
        if (!value)
            value = jinja_value_new_undefined (&render->heap, NULL, "No caller defined");
        ok = value && s_assign (render, node, scope, "caller", value);
        jinja_value_unref (&value);
    }
    if (ok && (definition->uses & USES_KWARGS)) {
        jinja_value_t *kwargs = jinja_value_new_dict (&render->heap);
        for (size_t named = 0; kwargs && named < args->named_count; named++)
            if (!consumed [named] && jinja_dict_set_str (kwargs, args->names [named],
                                                          args->named [named]))
                jinja_value_unref (&kwargs);
        if (kwargs && caller && !(definition->uses & USES_CALLER)
        &&  jinja_dict_set_str (kwargs, "caller", caller))
            jinja_value_unref (&kwargs);
        ok = kwargs && s_assign (render, node, scope, "kwargs", kwargs);
        jinja_value_unref (&kwargs);
    }
    else
    if (ok) {
        if (caller && !(definition->uses & USES_CALLER)) {
            s_fail (render, node, "TypeError", "macro '%s' was invoked with two values for the"
                    " special caller argument. This is most likely a bug.", name);
            ok = false;
        }
        for (size_t named = 0; ok && named < args->named_count; named++)
            if (!consumed [named]) {
                s_fail (render, node, "TypeError", "macro '%s' takes no keyword argument '%s'",
                        name, args->names [named]);
                ok = false;
            }
    }
    if (ok && (definition->uses & USES_VARARGS)) {
        size_t first = param_count < args->positional_count? param_count: args->positional_count;
        jinja_value_t *varargs = s_tuple_of (render, args->positional + first,
                                             args->positional_count - first);
        ok = varargs && s_assign (render, node, scope, "varargs", varargs);
        jinja_value_unref (&varargs);
    }
    else
    if (ok && args->positional_count > param_count) {
        s_fail (render, node, "TypeError", "macro '%s' takes not more than %zu argument(s)",
                name, param_count);
        ok = false;
    }
    free (consumed);
    jinja_value_t *result = NULL;
    if (ok) {
        jinja_buffer_t buffer;
        jinja_buffer_init (&buffer, &render->heap, render->max_output);
        render->call_depth++;
        exec_status_t status = s_exec_body (render, scope, &definition->body, &buffer);
        render->call_depth--;
        if (status == EXEC_ERROR)
            jinja_buffer_release (&buffer);
        else
            result = jinja_buffer_to_string (&buffer, false);
    }
    jinja_value_unref (&scope);
    if (!result)
        s_locate (render, node);
    return result;
}

//  The text a block renders (its own scope), as a string value.
static jinja_value_t *
s_render_block (render_t *render, jinja_value_t *scope, const node_t *node)
{
    jinja_value_t *block_scope = jinja_value_new_scope (&render->heap, scope);
    if (!block_scope)
        return s_out_of_memory (render, node);
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, &render->heap, render->max_output);
    exec_status_t status = s_exec_body (render, block_scope, &node->body, &buffer);
    jinja_value_unref (&block_scope);
    if (status == EXEC_ERROR) {
        jinja_buffer_release (&buffer);
        return NULL;
    }
    return jinja_buffer_to_string (&buffer, false);
}

static exec_status_t
s_write_value (render_t *render, const node_t *node, jinja_buffer_t *out, jinja_value_t *value)
{
    if (!value)
        return EXEC_ERROR;
    int rc = jinja_value_write_str (out, value);
    jinja_value_unref (&value);
    if (rc) {
        s_locate (render, node);
        return EXEC_ERROR;
    }
    return EXEC_OK;
}

static exec_status_t
s_exec_node (render_t *render, jinja_value_t *scope, const node_t *node, jinja_buffer_t *out)
{
    switch (node->kind) {
        case NODE_OUTPUT:
            for (size_t index = 0; index < node->args.count; index++) {
                const node_t *item = node->args.items [index];
                jinja_value_t *value = item->kind == NODE_CONST? jinja_value_ref (item->value):
                                       s_eval (render, scope, item);
                if (s_write_value (render, item, out, value) == EXEC_ERROR)
                    return EXEC_ERROR;
            }
            return EXEC_OK;
        case NODE_IF: {
            const node_t *branch = node;
            size_t elif = 0;
            while (branch) {
                jinja_value_t *test = s_eval (render, scope, branch->a);
                if (!test)
                    return EXEC_ERROR;
                bool truth = jinja_value_truthy (test);
                jinja_value_unref (&test);
                if (truth)
                    return s_exec_body (render, scope, &branch->body, out);
                branch = elif < node->args.count? node->args.items [elif++]: NULL;
            }
            return s_exec_body (render, scope, &node->else_body, out);
        }
        case NODE_FOR: {
            jinja_value_t *iterable = s_eval (render, scope, node->b);
            if (!iterable)
                return EXEC_ERROR;
            exec_status_t status = s_run_for (render, scope, node, iterable, 0, out);
            jinja_value_unref (&iterable);
            return status;
        }
        case NODE_SET: {
            jinja_value_t *value = s_eval (render, scope, node->b);
            bool ok = value && s_bind_target (render, scope, node->a, value);
            jinja_value_unref (&value);
            return ok? EXEC_OK: EXEC_ERROR;
        }
        case NODE_SET_BLOCK: {
            jinja_value_t *value = s_render_block (render, scope, node);
            if (value && node->b) {
                jinja_value_t *filtered = s_filter_node (render, scope, node->b, value);
                jinja_value_unref (&value);
                value = filtered;
            }
            bool ok = value && s_bind_target (render, scope, node->a, value);
            jinja_value_unref (&value);
            return ok? EXEC_OK: EXEC_ERROR;
        }
        case NODE_MACRO: {
            jinja_value_t *macro = jinja_value_new_callable (&render->heap, CALL_MACRO, 0, node->name,
                                                             node, NULL, scope);
            bool ok = macro && s_assign (render, node, scope, node->name, macro);
            jinja_value_unref (&macro);
            if (!ok)
                s_locate (render, node);
            return ok? EXEC_OK: EXEC_ERROR;
        }
        case NODE_CALL_BLOCK: {
            const node_t *call = node->a;
            jinja_value_t *caller = jinja_value_new_callable (&render->heap, CALL_MACRO, 0, "caller",
                                                              node, NULL, scope);
            jinja_value_t *callee = caller? s_eval (render, scope, call->a): NULL;
            jinja_value_t *result = NULL;
            args_t args;
            if (callee && s_eval_args (render, scope, call, &args)) {
                result = s_call (render, call, callee, &args, caller);
                s_args_release (&args);
            }
            jinja_value_unref (&callee);
            jinja_value_unref (&caller);
            if (!result)
                s_locate (render, node);
            return s_write_value (render, node, out, result);
        }
        case NODE_FILTER_BLOCK: {
            jinja_value_t *value = s_render_block (render, scope, node);
            jinja_value_t *filtered = value? s_filter_node (render, scope, node->a, value): NULL;
            jinja_value_unref (&value);
            return s_write_value (render, node, out, filtered);
        }
        case NODE_BREAK:
            return EXEC_BREAK;
        case NODE_CONTINUE:
            return EXEC_CONTINUE;
        case NODE_WITH: {
            jinja_value_t *with_scope = jinja_value_new_scope (&render->heap, scope);
            if (!with_scope) {
                s_locate (render, node);
                return EXEC_ERROR;
            }
            for (size_t index = 0; index < node->args.count; index++) {
                const node_t *param = node->args.items [index];
                jinja_value_t *value = s_eval (render, scope, param->a);
                bool ok = value && s_assign (render, param, with_scope, param->name, value);
                jinja_value_unref (&value);
                if (!ok) {
                    jinja_value_unref (&with_scope);
                    return EXEC_ERROR;
                }
            }
            exec_status_t status = s_exec_body (render, with_scope, &node->body, out);
            jinja_value_unref (&with_scope);
            return status;
        }
        case NODE_SCOPE:
            return s_exec_body (render, scope, &node->body, out);
        default:
            s_fail (render, node, "TemplateRuntimeError", "cannot execute this statement");
            return EXEC_ERROR;
    }
}

static exec_status_t
s_exec_body (render_t *render, jinja_value_t *scope, const node_list_t *body, jinja_buffer_t *out)
{
    for (size_t index = 0; index < body->count; index++) {
        const node_t *node = body->items [index];
        if (!s_step (render, node))
            return EXEC_ERROR;
        if (render->depth >= MAX_EVAL_DEPTH) {
            s_fail (render, node, "RecursionError", "maximum recursion depth exceeded");
            return EXEC_ERROR;
        }
        render->depth++;
        exec_status_t status = s_exec_node (render, scope, node, out);
        render->depth--;
        if (status == EXEC_ERROR) {
            if (!render->heap.failed)
                s_fail (render, node, "TemplateRuntimeError", "the statement failed");
            s_locate (render, node);
        }
        if (status != EXEC_OK)
            return status;
    }
    return EXEC_OK;
}

//  --- The template ---------------------------------------------------------------------

static void
s_write_error (char *err, size_t err_size, int line, int column, const char *message)
{
    if (!err || !err_size)
        return;
    if (line > 0)
        snprintf (err, err_size, "line %d, column %d: %s", line, column, message);
    else
        snprintf (err, err_size, "%s", message);
}

jinja_template_t *
jinja_template_new (const char *source, char *err, size_t err_size)
{
    if (!source) {
        s_write_error (err, err_size, 0, 0, "no template");
        return NULL;
    }
    size_t size = strlen (source);
    if (!jinja_utf8_valid (source, size)) {
        s_write_error (err, err_size, 0, 0, "the template is not valid UTF-8");
        return NULL;
    }
    jinja_template_t *self = calloc (1, sizeof (jinja_template_t));
    char *normal = malloc (size + 1);
    if (!self || !normal) {
        free (self);
        free (normal);
        s_write_error (err, err_size, 0, 0, "out of memory");
        return NULL;
    }
    //  newlines become \n, and one newline at the very end is dropped (Jinja2's
    //  keep_trailing_newline=False)
    size_t used = 0;
    for (size_t index = 0; index < size; index++) {
        if (source [index] == '\r') {
            normal [used++] = '\n';
            if (index + 1 < size && source [index + 1] == '\n')
                index++;
        }
        else
            normal [used++] = source [index];
    }
    if (used && normal [used - 1] == '\n')
        used--;
    normal [used] = 0;
    self->source = normal;
    size_t line_count = 1;
    for (size_t index = 0; index < used; index++)
        if (normal [index] == '\n')
            line_count++;
    self->line_starts = malloc (line_count * sizeof (size_t));
    if (!self->line_starts) {
        jinja_template_destroy (&self);
        s_write_error (err, err_size, 0, 0, "out of memory");
        return NULL;
    }
    self->line_starts [0] = 0;
    self->line_count = 1;
    for (size_t index = 0; index < used; index++)
        if (normal [index] == '\n')
            self->line_starts [self->line_count++] = index + 1;

    lexer_t lexer;
    memset (&lexer, 0, sizeof (lexer));
    lexer.source = normal;
    lexer.size = used;
    s_lex (&lexer);

    parser_t parser;
    memset (&parser, 0, sizeof (parser));
    parser.lexer = &lexer;
    bool failed = false;
    size_t error_offset = 0;
    char message [600];
    if (lexer.failed) {
        error_offset = lexer.error_offset;
        snprintf (message, sizeof (message), "%s", lexer.error);
        failed = true;
    }
    else {
        if (s_subparse (&parser, &self->body, NULL, NULL))
            s_check_list (&parser, &self->body, false);
        if (parser.failed) {
            error_offset = parser.error_offset;
            snprintf (message, sizeof (message), "%s", parser.error);
            failed = true;
        }
    }
    s_lexer_release (&lexer);
    if (failed) {
        int line, column;
        s_source_position (self->source, self->line_starts, self->line_count, error_offset,
                           &line, &column);
        char full [700];
        snprintf (full, sizeof (full), "TemplateSyntaxError: %s", message);
        s_write_error (err, err_size, line, column, full);
        jinja_template_destroy (&self);
        return NULL;
    }
    return self;
}

void
jinja_template_destroy (jinja_template_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    jinja_template_t *self = *self_p;
    for (size_t index = 0; index < self->body.count; index++)
        s_node_destroy (&self->body.items [index]);
    free (self->body.items);
    free (self->source);
    free (self->line_starts);
    free (self);
    *self_p = NULL;
}

char *
jinja_template_render (const jinja_template_t *self, const json_t *variables,
                       const jinja_options_t *options, size_t *size, char *err, size_t err_size)
{
    jinja_options_t defaults;
    memset (&defaults, 0, sizeof (defaults));
    if (!options)
        options = &defaults;
    render_t render;
    memset (&render, 0, sizeof (render));
    render.template = self;
    jinja_heap_init (&render.heap, options->max_memory? options->max_memory: DEFAULT_MAX_MEMORY);
    render.now = options->now;
    render.max_output = options->max_output? options->max_output: DEFAULT_MAX_OUTPUT;
    render.max_iterations = options->max_iterations? options->max_iterations:
                                                     DEFAULT_MAX_ITERATIONS;
    render.max_steps = options->max_steps? options->max_steps: DEFAULT_MAX_STEPS;

    char *text = NULL;
    jinja_value_t *root = NULL;
    if (variables && !json_is_object (variables)) {
        s_write_error (err, err_size, 0, 0, "the template's variables must be a JSON object");
        return NULL;
    }
    render.variables = variables? jinja_value_from_json (&render.heap, variables):
                                  jinja_value_new_dict (&render.heap);
    if (render.variables)
        root = jinja_value_new_scope (&render.heap, NULL);
    if (root) {
        jinja_buffer_t out;
        jinja_buffer_init (&out, &render.heap, render.max_output);
        exec_status_t status = s_exec_body (&render, root, &self->body, &out);
        if (status == EXEC_OK && !render.heap.failed) {
            //  the buffer's bytes become the caller's
            text = out.data? out.data: calloc (1, 1);
            if (size)
                *size = out.size;
            out.data = NULL;
        }
        else
            jinja_buffer_release (&out);
    }
    jinja_value_unref (&root);
    jinja_value_unref (&render.variables);
    jinja_heap_sweep (&render.heap);
    if (!text) {
        char message [1100];
        snprintf (message, sizeof (message), "%s",
                  render.heap.failed? render.heap.error: "out of memory");
        int line = 0, column = 0;
        if (render.error_located)
            s_source_position (self->source, self->line_starts, self->line_count,
                               render.error_offset, &line, &column);
        s_write_error (err, err_size, line, column, message);
    }
    return text;
}
