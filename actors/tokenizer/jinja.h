/*  jinja — a Jinja2 template engine for chat templates, set up as Hugging Face
    transformers sets up Jinja2 for apply_chat_template: an ImmutableSandboxedEnvironment
    with trim_blocks and lstrip_blocks, the loop controls (break, continue), the
    {% generation %} block, a tojson filter that is json.dumps (no ASCII escaping,
    indent, separators, sort_keys), and the globals raise_exception(message) and
    strftime_now(format).

    What a template can do: text with {{ }} {% %} {# #} and whitespace control (- and +),
    raw blocks; if/elif/else, for (loop variable, else, inline filter, unpacking,
    recursive), set (also block set and namespace attributes), macros with defaults,
    varargs, kwargs and caller, call blocks, filter blocks, with; Python expressions with
    Python's semantics for str(), truthiness, comparisons, arithmetic, slicing, string,
    list and dict methods; Jinja2's filters and tests and its Undefined. Lists and dicts
    cannot be changed (list.append raises SecurityError, as in the sandbox).

    Errors name the line and column: syntax errors when the template is parsed, render
    errors ("UndefinedError: 'x' is undefined", what raise_exception says, a TypeError)
    where the failing expression or statement is. A template cannot crash the process or
    take it over: nesting, recursion, loop iterations, work, memory and output are
    limited, and going past a limit is an error like any other.

    Who owns what: jinja_template_new copies what it keeps of the source. A template
    never changes once parsed: many threads may render one at once. A rendered text is
    a heap string the caller frees.
*/
#ifndef ZLLM_JINJA_H
#define ZLLM_JINJA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct _jinja_template_t jinja_template_t;

//  Parse a template (UTF-8; a NUL ends it). On error returns NULL and writes
//  "line L, column C: message" into err.
jinja_template_t *
    jinja_template_new (const char *source, char *err, size_t err_size);

void
    jinja_template_destroy (jinja_template_t **self_p);

typedef struct {
    time_t now;                     //  what strftime_now formats, as local time; 0: now
    size_t max_output;              //  bytes; 0: 64 MiB
    size_t max_memory;              //  bytes of values alive at once; 0: 512 MiB
    uint64_t max_iterations;        //  loop iterations in all; 0: 5,000,000
    uint64_t max_steps;             //  work: expressions and statements evaluated, plus
                                    //  one per 64 bytes allocated; 0: 50,000,000
} jinja_options_t;

//  Render with variables (a JSON object: its members are the template's variables;
//  NULL: none). options may be NULL (all defaults). Returns the text (NUL-terminated;
//  *size, when size is not NULL, says how long, as the text may hold NUL bytes), or NULL
//  with "line L, column C: Kind: message" in err.
char *
    jinja_template_render (const jinja_template_t *self, const json_t *variables,
                           const jinja_options_t *options, size_t *size,
                           char *err, size_t err_size);

#endif
