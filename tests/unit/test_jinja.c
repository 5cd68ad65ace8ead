/*  test_jinja — the Jinja2 engine, construct by construct.

    - Rendering: every construct chat templates use (literals, operators, Python's str()
      of values, undefined, slices, loops and the loop variable, set and namespaces,
      macros and call blocks, filters, tests, string and dict methods, whitespace control)
      against what Jinja2 3.1 renders with Hugging Face's settings (trim_blocks,
      lstrip_blocks, loop controls, tojson as json.dumps, strftime_now with the clock
      fixed at 2026-01-02 03:04:05). The expected texts were produced by Jinja2 itself.
    - Errors: syntax errors name the line and column where the template is wrong; render
      errors say what Jinja2 says (UndefinedError, TypeError, raise_exception's message)
      and where.
    - Limits and hostile templates: unterminated tags, deep nesting, runaway recursion,
      huge loops, huge strings and outputs, reference cycles: each is a clean error (or a
      clean render), never a crash or a leak (the sanitizer build runs these too).
    - Threads: one template rendered by several threads at once.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "jinja.h"
#include "jinja_value.h"

//  2026-01-02 03:04:05 UTC, the clock of the reference renderings (TZ is UTC here).
#define FIXED_NOW ((time_t) 1767323045)

typedef struct {
    const char *what;
    const char *source;
    const char *variables;          //  JSON object
    const char *expected;
} render_case_t;

//  The constructs and what Jinja2 3.1.6 renders for them (HF settings, fixed clock).
static const render_case_t s_render_cases [] = {
    { "numbers print as Python's str()",
      "{{ 1 }} {{ 1.0 }} {{ 1.5e10 }} {{ 1e16 }} {{ 0.1 + 0.2 }} {{ -0.0 }} {{ 1e-5 }} {{ 2/3 }}",
      "{}",
      "1 1.0 15000000000.0 1e+16 0.30000000000000004 -0.0 1e-05 0.6666666666666666" },
    { "booleans and none",
      "{{ true }} {{ True }} {{ none }} {{ None }} {{ false }}",
      "{}",
      "True True None None False" },
    { "string escapes",
      "{{ 'a\\nb\\tc\\\\d\\'e\"f' }}|{{ \"\\u00e9\\x41\\101\" }}",
      "{}",
      "a\nb\tc\\d'e\"f|\303\251AA" },
    { "containers print as repr",
      "{{ [1, 'a', none, true, 1.5, [2], {'k': 'v'}] }} {{ (1, 2) }} {{ (1,) }} {{ () }} {{ ['it\\'s', 'say \"hi\"'] }}",
      "{}",
      "[1, 'a', None, True, 1.5, [2], {'k': 'v'}] (1, 2) (1,) () [\"it's\", 'say \"hi\"']" },
    { "adjacent strings join",
      "{{ 'a' 'b' }}",
      "{}",
      "ab" },
    { "integer and float arithmetic",
      "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7.5 % 2 }} {{ -7.5 // 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 10 / 4 }} {{ 10 / 5 }}",
      "{}",
      "3 -4 1 2 -2 1.5 -4.0 1024 0.5 2.5 2.0" },
    { "precedence",
      "{{ 1 + 2 * 3 - 4 / 2 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ -1 | abs }}",
      "{}",
      "5.0 9 64 4 1" },
    { "sequence operators",
      "{{ 'a' + 'b' }} {{ 'ab' * 3 }} {{ 3 * 'ab' }} {{ [1] * 3 }} {{ [1, 2] + [3] }} {{ 'a' ~ 1 ~ none ~ true }}",
      "{}",
      "ab ababab ababab [1, 1, 1] [1, 2, 3] a1NoneTrue" },
    { "comparisons",
      "{{ 1 < 2 < 3 }} {{ 1 < 2 > 3 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' != 'b' }}",
      "{}",
      "True False True True True True True" },
    { "in and not in",
      "{{ 'a' in 'cat' }} {{ 'x' not in 'cat' }} {{ 1 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in (1, 2) }}",
      "{}",
      "True True True True True" },
    { "and/or return operands",
      "{{ 0 or 'x' }}|{{ 1 and 'y' }}|{{ '' and 'z' }}|{{ none or [] }}|{{ not 0 }}|{{ not 'a' }}",
      "{}",
      "x|y||[]|True|False" },
    { "conditional expressions",
      "{{ 'yes' if 1 else 'no' }} {{ 'yes' if 0 else 'no' }} [{{ 'yes' if 0 }}]",
      "{}",
      "yes no []" },
    { "undefined is quiet when printed, iterated, tested",
      "[{{ x }}] {{ x is defined }} {{ x is undefined }} {{ x | default('d') }} {{ '' | default('e', true) }} {{ '' | d('f') }} [{{ x ~ 'a' }}] [{{ x | string }}] {{ x | length }} {{ x | list }} {% for i in x %}no{% endfor %}[{{ x | join(',') }}] {{ not x }}",
      "{}",
      "[] False True d e  [a] [] 0 [] [] True" },
    { "missing keys and indexes are undefined",
      "{{ d.a }}|{{ d['a'] }}|{{ d.missing }}|{{ d['missing'] }}|{{ d.missing is defined }}",
      "{\"d\": {\"a\": 1}}",
      "1|1|||False" },
    { "list indexes and slices",
      "{{ l[0] }}|{{ l[-1] }}|{{ l[5] }}|{{ l[1:] }}|{{ l[::-1] }}|{{ l[::2] }}|{{ l[-2:] }}|{{ l[:-1] }}|{{ l[5:] }}|{{ l.0 }}",
      "{\"l\": [1, 2, 3, 4]}",
      "1|4||[2, 3, 4]|[4, 3, 2, 1]|[1, 3]|[3, 4]|[1, 2, 3]|[]|1" },
    { "string indexes and slices count characters",
      "{{ s[0] }}|{{ s[-1] }}|{{ s[1:3] }}|{{ s[::-1] }}|{{ s[10] }}|{{ s|length }}",
      "{\"s\": \"h\303\251llo w\303\266rld\"}",
      "h|d|\303\251l|dlr\303\266w oll\303\251h|d|11" },
    { "loop variable",
      "{% for i in range(3) %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }}|{% endfor %}",
      "{}",
      "10TrueFalse332|21FalseFalse321|32FalseTrue310|" },
    { "loop previtem nextitem cycle changed",
      "{% for i in [1,1,3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.cycle('a','b') }}-{{ loop.changed(i) }}|{% endfor %}",
      "{}",
      "-1-a-True|1-3-b-False|1--a-True|" },
    { "for else",
      "{% for i in [] %}x{% else %}empty{% endfor %}",
      "{}",
      "empty" },
    { "for with a filter",
      "{% for i in [1,2,3,4,5] if i is odd %}{{ i }}{{ loop.index }}{% endfor %}",
      "{}",
      "113253" },
    { "break and continue",
      "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
      "{}",
      "0134" },
    { "unpacking",
      "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}{% for k, v in {'c': 3} | items %}{{ k }}={{ v }}{% endfor %}{% set a, b = 1, 2 %}{{ a }}{{ b }}",
      "{}",
      "a=1;b=2;c=312" },
    { "strings and dicts iterate",
      "{% for c in 'abc' %}{{ c }}.{% endfor %}{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}",
      "{}",
      "a.b.c.xy" },
    { "nested loops",
      "{% for a in [1, 2] %}{% for b in [3, 4] %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }}|{% endfor %}",
      "{}",
      "113 214 1|123 224 2|" },
    { "loop scope",
      "{% set x = 1 %}{% for i in [1,2] %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}",
      "{}",
      "12121" },
    { "namespace",
      "{% set ns = namespace(a=1, b=[]) %}{% for i in [1,2,3] %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}{{ ns.b }}",
      "{}",
      "7[]" },
    { "block set",
      "{% set x %}block {{ 1 + 1 }}{% endset %}[{{ x }}]{% set y | upper %}up{% endset %}{{ y }}",
      "{}",
      "[block 2]UP" },
    { "macros with defaults",
      "{% macro m(a, b=2, c='x') %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ m(1) }}|{{ m(1, 3) }}|{{ m(1, c='z') }}|{{ m(a=5) }}|{{ m() }}",
      "{}",
      "12x|13x|12z|52x|2x" },
    { "varargs and kwargs",
      "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k=4) }}",
      "{}",
      "1(2, 3){'k': 4}" },
    { "call blocks",
      "{% macro m(a) %}<{{ caller(a) }}>{% endmacro %}{% call(x) m(7) %}got {{ x }}{% endcall %}",
      "{}",
      "<got 7>" },
    { "recursive macro",
      "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1) | int }}{% endif %}{% endmacro %}{{ fact(5) }}",
      "{}",
      "120" },
    { "macros see the template's variables when called",
      "{% set v = 'outer' %}{% macro m() %}{{ v }}{% endmacro %}{% set v = 'changed' %}{{ m() }}",
      "{}",
      "changed" },
    { "filter blocks",
      "{% filter upper %}hello {{ 'world' }}{% endfilter %}|{% filter trim | upper %}  padded  {% endfilter %}|",
      "{}",
      "HELLO WORLD|PADDED|" },
    { "with",
      "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]",
      "{}",
      "3[]" },
    { "raw",
      "{% raw %}{{ not rendered }}{% endraw %}",
      "{}",
      "{{ not rendered }}" },
    { "if elif else",
      "{% if 1 %}one{% elif 2 %}two{% else %}three{% endif %}{% if 0 %}one{% elif 2 %}two{% else %}three{% endif %}{% if 0 %}one{% elif 0 %}two{% else %}three{% endif %}",
      "{}",
      "onetwothree" },
    { "recursive loops",
      "{% for item in tree recursive %}[{{ item.name }}{% if item.children %}{{ loop(item.children) }}{% endif %}:{{ loop.depth }}]{% endfor %}",
      "{\"tree\": [{\"name\": \"a\", \"children\": [{\"name\": \"b\"}, {\"name\": \"c\", \"children\": [{\"name\": \"d\"}]}]}]}",
      "[a[b:2][c[d:3]:2]:1]" },
    { "trim_blocks and lstrip_blocks",
      "a\n  {% if true %}\n    yes\n  {% endif %}\nb\n",
      "{}",
      "a\n    yes\nb" },
    { "minus strips whitespace",
      "a  {%- if true -%}  yes  {%- endif -%}  b",
      "{}",
      "ayesb" },
    { "plus keeps whitespace",
      "a  {%+ if true %}x{% endif +%}\nb",
      "{}",
      "a  x\nb" },
    { "comments and variables with lstrip",
      "  {{ 1 }}\n  {% set x = 1 %}\n  {# c #}\nend",
      "{}",
      "  1\nend" },
    { "loop lines",
      "{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}\n",
      "{}",
      "  1\n  2\n" },
    { "minus everywhere",
      "{%- for i in [1,2] -%}\n  {{- i -}}\n{%- endfor -%}",
      "{}",
      "12" },
    { "CRLF newlines",
      "line1\r\nline2\r\n{% if true %}\r\nx\r\n{% endif %}\r\n",
      "{}",
      "line1\nline2\nx\n" },
    { "one trailing newline is dropped",
      "two trailing\n\n",
      "{}",
      "two trailing\n" },
    { "comment minus",
      "{# comment #}a{#- trimmed -#} b",
      "{}",
      "ab" },
    { "raw keeps its text",
      "   {% raw %}  raw  {% endraw %}  \n",
      "{}",
      "  raw    " },
    { "map select reject",
      "{{ users | map(attribute='name') | join(', ') }}|{{ users | selectattr('age', 'equalto', 30) | map(attribute='name') | list }}|{{ users | rejectattr('active') | map(attribute='name') | list }}|{{ [1,2,3,4] | select('odd') | list }}|{{ [1,2,3,4] | reject('even') | list }}|{{ [0, 1, '', 'a'] | select | list }}|{{ ['a', 'B'] | map('upper') | list }}",
      "{\"users\": [{\"name\": \"Bob\", \"age\": 30}, {\"name\": \"alice\", \"age\": 25}, {\"name\": \"Carl\", \"age\": 30, \"active\": true}]}",
      "Bob, alice, Carl|['Bob', 'Carl']|['Bob', 'alice']|[1, 3]|[1, 3]|[1, 'a']|['A', 'B']" },
    { "sort dictsort unique",
      "{{ users | sort(attribute='name') | map(attribute='name') | list }}|{{ ['b', 'A', 'c'] | sort }}|{{ [3, 1, 2] | sort(reverse=true) }}|{{ d | dictsort }}|{{ d | dictsort(by='value', reverse=true) }}|{{ [1, 2, 1, 'a', 'A'] | unique | list }}",
      "{\"users\": [{\"name\": \"Bob\"}, {\"name\": \"alice\"}], \"d\": {\"b\": 2, \"A\": 1, \"c\": 3}}",
      "['alice', 'Bob']|['A', 'b', 'c']|[3, 2, 1]|[('A', 1), ('b', 2), ('c', 3)]|[('c', 3), ('b', 2), ('A', 1)]|[1, 2, 'a']" },
    { "text filters",
      "{{ s | trim }}|{{ s | trim('  H') }}|{{ s | upper }}|{{ s | lower }}|{{ s | title }}|{{ s | capitalize }}|{{ s | length }}|{{ s | wordcount }}|{{ 'a-b-c' | replace('-', '+') }}|{{ 'hello' | center(11) }}",
      "{\"s\": \"  Hello World  \"}",
      "Hello World|ello World|  HELLO WORLD  |  hello world  |  Hello World  |  hello world  |15|2|a+b+c|   hello   " },
    { "first last min max sum",
      "{{ [1, 2, 3] | first }}{{ [1, 2, 3] | last }}{{ 'xyz' | first }}[{{ [] | first }}]{{ [3, 1, 2] | min }}{{ [3, 1, 2] | max }}{{ [1, 2] | sum }}",
      "{}",
      "13x[]133" },
    { "numbers",
      "{{ -3.7 | abs }}|{{ -3.7 | round }}|{{ 2.5 | round }}|{{ 42.55 | round(1) }}|{{ -3.7 | round(0, 'floor') }}|{{ '42' | int }}|{{ '42.7' | int }}|{{ 'x' | int(7) }}|{{ '0x1A' | int(0, 16) }}|{{ '1.5' | float }}|{{ 3 | float }}",
      "{}",
      "3.7|-4.0|2.0|42.5|-4.0|42|42|7|26|1.5|3.0" },
    { "string and list",
      "{{ 'a' | string }}{{ 1 | string }}{{ [1, 'a'] | string }}{{ 'abc' | list }}{{ {'a': 1} | list }}",
      "{}",
      "a1[1, 'a']['a', 'b', 'c']['a']" },
    { "batch and slice",
      "{{ [1, 2, 3, 4, 5] | batch(2) | list }}|{{ [1, 2, 3, 4, 5] | batch(2, 0) | list }}|{{ [1,2,3,4,5,6,7] | slice(3, 'x') | list }}",
      "{}",
      "[[1, 2], [3, 4], [5]]|[[1, 2], [3, 4], [5, 0]]|[[1, 2, 3], [4, 5, 'x'], [6, 7, 'x']]" },
    { "indent",
      "{{ 'text\\nline2\\n\\nline4' | indent }}|{{ 'text\\nline2\\n\\nline4' | indent(2, true) }}|{{ 'a\\nb' | indent(first=true, blank=true) }}|{{ 'a\\nb' | indent('> ') }}",
      "{}",
      "text\n    line2\n\n    line4|  text\n  line2\n\n  line4|    a\n    b|a\n> b" },
    { "tojson",
      "{{ {'a': 1, 'b': [1, 2, {'c': none}], 'd': '\303\251\"\\n', 'e': 1.0, 'f': true} | tojson }}|{{ {'a': 1, 'b': [1, 2], 'c': {}} | tojson(indent=2) }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}|{{ {'a': [1, 2]} | tojson(separators=(',', ':')) }}|{{ '\303\251\342\202\254\360\237\230\200' | tojson(ensure_ascii=true) }}",
      "{}",
      "{\"a\": 1, \"b\": [1, 2, {\"c\": null}], \"d\": \"\303\251\\\"\\n\", \"e\": 1.0, \"f\": true}|{\n  \"a\": 1,\n  \"b\": [\n    1,\n    2\n  ],\n  \"c\": {}\n}|{\"a\": 2, \"b\": 1}|{\"a\":[1,2]}|\"\\u00e9\\u20ac\\ud83d\\ude00\"" },
    { "safe and escape",
      "{{ '<a>' | escape }}|{{ '<a>' | safe | escape }}|{{ ('<' | safe) + '<' }}|{{ '<' + ('<' | safe) }}|{{ ('a' | safe) ~ '<' }}",
      "{}",
      "&lt;a&gt;|<a>|<&lt;|&lt;<|a<" },
    { "printf formatting",
      "{{ '%s-%d-%05.2f|%x|%r|%%' | format('a', 3, 3.14159, 255, 'q') }}|{{ '%(a)s' | format(a=1) }}|{{ 'v=%s' % 5 }}|{{ '%s and %s' % (1, 2) }}|{{ '%5s|%-5s|' % ('a', 'b') }}",
      "{}",
      "a-3-03.14|ff|'q'|%|1|v=5|1 and 2|    a|b    |" },
    { "str.format",
      "{{ '{} {}'.format(1, 'a') }}|{{ '{0}{1}{0}'.format('a', 'b') }}|{{ '{name}!'.format(name='x') }}|{{ '{:>5}|{:<5}|{:^5}|{:05d}|{:.2f}|{:,}|{:x}'.format('a', 'b', 'c', 42, 3.14159, 1234567, 255) }}",
      "{}",
      "1 a|aba|x!|    a|b    |  c  |00042|3.14|1,234,567|ff" },
    { "groupby",
      "{% for age, group in users | groupby('age') %}{{ age }}:{{ group | map(attribute='name') | join(',') }};{% endfor %}",
      "{\"users\": [{\"name\": \"Bob\", \"age\": 30}, {\"name\": \"alice\", \"age\": 25}, {\"name\": \"Carl\", \"age\": 30}]}",
      "25:alice;30:Bob,Carl;" },
    { "truncate and reverse",
      "{{ 'hello world foo bar' | truncate(9) }}|{{ 'abc' | reverse }}|{{ [1, 2] | reverse | list }}",
      "{}",
      "hello...|cba|[2, 1]" },
    { "unknown filters inside an if wait until reached",
      "{% if false %}{{ x | unknownfilter }}{% endif %}ok",
      "{}",
      "ok" },
    { "strip methods",
      "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s.strip(' !H') }}|{{ 'xxaxx'.strip('x') }}",
      "{\"s\": \"  Hello, World!  \"}",
      "Hello, World!|Hello, World!  |  Hello, World!|ello, World|a" },
    { "split methods",
      "{{ 'a,b,,c'.split(',') }}|{{ ' a  b c '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a b c'.rsplit(' ', 1) }}|{{ '  a b  c '.split(none, 1) }}|{{ 'a\\nb\\r\\nc'.splitlines() }}",
      "{}",
      "['a', 'b', '', 'c']|['a', 'b', 'c']|['a', 'b c']|['a b', 'c']|['a', 'b  c ']|['a', 'b', 'c']" },
    { "find startswith replace join",
      "{{ 'hello'.find('l') }}{{ 'hello'.rfind('l') }}{{ 'hello'.find('z') }}{{ 'h\303\251llo'.find('l') }}{{ 'hello'.count('l') }}|{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ ','.join(['a', 'b']) }}",
      "{}",
      "23-122|TrueTrue|bba|a,b" },
    { "case methods",
      "{{ 'caf\303\251 \303\237'.upper() }}|{{ '\303\211COLE'.lower() }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}|{{ 'aB'.swapcase() }}",
      "{}",
      "CAF\303\211 SS|\303\251cole|Hello World|Hello|Ab" },
    { "is methods and padding",
      "{{ '123'.isdigit() }}{{ 'abc'.isalpha() }}{{ ' '.isspace() }}{{ 'abc'.islower() }}|{{ 'ab'.center(6, '*') }}|{{ '42'.zfill(5) }}|{{ 'a=b=c'.partition('=') }}",
      "{}",
      "TrueTrueTrueTrue|**ab**|00042|('a', '=', 'b=c')" },
    { "dict methods",
      "{{ d.get('a') }}{{ d.get('b') }}{{ d.get('b', 5) }}|{{ d.keys() }}|{{ d.items() | list }}",
      "{\"d\": {\"a\": 1}}",
      "1None5|dict_keys(['a'])|[('a', 1)]" },
    { "tests",
      "{{ 3 is odd }}{{ 3 is even }}{{ 3 is divisibleby 3 }}{{ 3 is number }}{{ 3 is integer }}{{ 2.0 is float }}{{ true is boolean }}{{ 's' is string }}{{ [1] is sequence }}{{ {} is mapping }}{{ {} is iterable }}{{ 3 is iterable }}{{ none is none }}{{ false is false }}{{ 1 is true }}",
      "{}",
      "TrueFalseTrueTrueTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueFalse" },
    { "comparison tests",
      "{{ 1 is eq 1 }}{{ 1 is ne 2 }}{{ 2 is gt 1 }}{{ 2 is ge 2 }}{{ 1 is lt 2 }}{{ 2 is le 1 }}{{ 'a' is in 'abc' }}{{ 1 is equalto 1 }}{{ 'abc' is lower }}{{ 'upper' is filter }}{{ range is callable }}",
      "{}",
      "TrueTrueTrueTrueTrueFalseTrueTrueTrueTrueTrue" },
    { "range dict namespace",
      "{{ range(3) | list }}{{ range(1, 4) | list }}{{ range(10, 0, -3) | list }}{{ dict(a=1, b=2) }}{{ namespace(x=1).x }}",
      "{}",
      "[0, 1, 2][1, 2, 3][10, 7, 4, 1]{'a': 1, 'b': 2}1" },
    { "strftime_now",
      "{{ strftime_now('%Y-%m-%d %H:%M:%S %B %b %d %A') }}",
      "{}",
      "2026-01-02 03:04:05 January Jan 02 Friday" },
};

//  --- Helpers ---------------------------------------------------------------------------

//  Render source with variables (JSON text or NULL); returns the text or NULL with err.
static char *
s_render_with (const char *source, const char *variables, const jinja_options_t *options,
               char *err, size_t err_size)
{
    jinja_template_t *template = jinja_template_new (source, err, err_size);
    if (!template)
        return NULL;
    json_t *json = NULL;
    if (variables) {
        json_error_t error;
        json = json_loads (variables, 0, &error);
        assert_non_null (json);
    }
    jinja_options_t defaults;
    memset (&defaults, 0, sizeof (defaults));
    defaults.now = FIXED_NOW;
    char *text = jinja_template_render (template, json, options? options: &defaults, NULL,
                                        err, err_size);
    json_decref (json);
    jinja_template_destroy (&template);
    return text;
}

static char *
s_render (const char *source, const char *variables, char *err, size_t err_size)
{
    return s_render_with (source, variables, NULL, err, err_size);
}

//  The template must fail (at parse or render) with a message that holds `expected`.
static void
s_expect_error (const char *source, const char *variables, const char *expected)
{
    char err [1024] = "";
    char *text = s_render (source, variables, err, sizeof (err));
    if (text || !strstr (err, expected)) {
        print_error ("template: %s\n  expected an error with: %s\n  got: %s\n", source, expected,
                     text? text: err);
        free (text);
        fail ();
    }
}

static void
s_expect_text (const char *source, const char *variables, const char *expected)
{
    char err [1024] = "";
    char *text = s_render (source, variables, err, sizeof (err));
    if (!text || strcmp (text, expected) != 0) {
        print_error ("template: %s\n  expected: %s\n  got: %s\n", source, expected,
                     text? text: err);
        free (text);
        fail ();
    }
    free (text);
}

//  A string of count copies of piece (the caller frees).
static char *
s_repeat (const char *prefix, const char *piece, size_t count, const char *suffix)
{
    size_t size = strlen (prefix) + strlen (piece) * count + strlen (suffix) + 1;
    char *text = malloc (size);
    assert_non_null (text);
    strcpy (text, prefix);
    size_t used = strlen (prefix);
    for (size_t index = 0; index < count; index++) {
        memcpy (text + used, piece, strlen (piece));
        used += strlen (piece);
    }
    strcpy (text + used, suffix);
    return text;
}

//  --- Rendering ------------------------------------------------------------------------

static void
test_render_cases (void **state)
{
    (void) state;
    size_t failures = 0;
    size_t count = sizeof (s_render_cases) / sizeof (s_render_cases [0]);
    for (size_t index = 0; index < count; index++) {
        const render_case_t *entry = &s_render_cases [index];
        char err [1024] = "";
        char *text = s_render (entry->source, entry->variables, err, sizeof (err));
        if (!text || strcmp (text, entry->expected) != 0) {
            print_error ("%s:\n  template: %s\n  expected: %s\n  got:      %s\n", entry->what,
                         entry->source, entry->expected, text? text: err);
            failures++;
        }
        free (text);
    }
    printf ("# %zu of %zu constructs render as Jinja2 renders them\n",
                   count - failures, count);
    assert_int_equal (failures, 0);
}

static void
test_output_with_nul_bytes (void **state)
{
    (void) state;
    char err [256];
    jinja_template_t *template = jinja_template_new ("a{{ '\\0' }}b", err, sizeof (err));
    assert_non_null (template);
    size_t size = 0;
    char *text = jinja_template_render (template, NULL, NULL, &size, err, sizeof (err));
    assert_non_null (text);
    assert_int_equal (size, 3);
    assert_memory_equal (text, "a\0b", 3);
    free (text);
    jinja_template_destroy (&template);
}

static void
test_variables_from_json (void **state)
{
    (void) state;
    s_expect_text ("{{ a }}|{{ b }}|{{ c }}|{{ d }}|{{ e }}|{{ f.g[1] }}|{{ f | tojson }}",
                   "{\"a\": 1, \"b\": 2.5, \"c\": null, \"d\": true, \"e\": \"\\u00e9\","
                   " \"f\": {\"g\": [1, \"x\"], \"h\": {}}}",
                   "1|2.5|None|True|\xc3\xa9|x|{\"g\": [1, \"x\"], \"h\": {}}");
    //  a big object: keys are found by hash, in order
    json_t *big = json_object ();
    for (int index = 0; index < 20000; index++) {
        char key [32];
        snprintf (key, sizeof (key), "k%d", index);
        json_object_set_new (big, key, json_integer (index));
    }
    json_t *variables = json_pack ("{s:o}", "big", big);
    char err [256];
    jinja_template_t *template = jinja_template_new (
        "{{ big.k19999 }} {{ big['k7'] }} {{ big | length }} {{ (big | list)[2] }}",
        err, sizeof (err));
    assert_non_null (template);
    char *text = jinja_template_render (template, variables, NULL, NULL, err, sizeof (err));
    assert_non_null (text);
    assert_string_equal (text, "19999 7 20000 k2");
    free (text);
    jinja_template_destroy (&template);
    json_decref (variables);
}

static void
test_strftime_clock (void **state)
{
    (void) state;
    //  the fixed clock, and the real one
    s_expect_text ("{{ strftime_now('%d %b %Y') }}", NULL, "02 Jan 2026");
    char err [256];
    jinja_options_t options;
    memset (&options, 0, sizeof (options));
    char *text = s_render_with ("{{ strftime_now('%Y') | int > 2024 }}", NULL, &options,
                                err, sizeof (err));
    assert_non_null (text);
    assert_string_equal (text, "True");
    free (text);
}

static void
test_markup (void **state)
{
    (void) state;
    //  what functionary's template does: Markup + str escapes the str
    s_expect_text ("{{ \"Use '\"|safe + name + \"' \"|safe + {'a': \"it's\"} | tojson }}",
                   "{\"name\": \"<x>\"}",
                   "Use '&lt;x&gt;' {&#34;a&#34;: &#34;it&#39;s&#34;}");
    s_expect_text ("{{ ('a' | safe) ~ '<' }}{{ ('<' | safe) | trim | escape }}", NULL, "a<<");
}

//  --- Errors ---------------------------------------------------------------------------

static void
test_syntax_errors (void **state)
{
    (void) state;
    s_expect_error ("{{ x", NULL, "line 1, column 5: TemplateSyntaxError: unexpected end of template");
    s_expect_error ("{% if x %}", NULL, "line 1, column 11: TemplateSyntaxError: Unexpected end of template."
                    " Jinja was looking for the following tags: 'elif' or 'else' or 'endif'.");
    s_expect_error ("text\n{% for %}", NULL, "line 2, column 8: TemplateSyntaxError: Expected an expression");
    s_expect_error ("{#", NULL, "line 1, column 1: TemplateSyntaxError: Missing end of comment tag");
    s_expect_error ("a\nb {% raw %}abc", NULL, "line 2, column 3: TemplateSyntaxError: Missing end of raw directive");
    s_expect_error ("{{ 'abc }}", NULL, "line 1, column 4: TemplateSyntaxError: unexpected char ''' at 3");
    s_expect_error ("{{ (((( }}", NULL, "line 1, column 9: TemplateSyntaxError: unexpected '}', expected ')'");
    s_expect_error ("{{ [1, 2) }}", NULL, "unexpected ')', expected ']'");
    s_expect_error ("{% endif %}", NULL, "line 1, column 4: TemplateSyntaxError: Encountered unknown tag 'endif'.");
    s_expect_error ("{% if 1 %}{% endfor %}", NULL, "Encountered unknown tag 'endfor'.");
    s_expect_error ("{{ 1 +* 2 }}", NULL, "line 1, column 7: TemplateSyntaxError: unexpected '*'");
    s_expect_error ("{% macro m(a=1, b) %}{% endmacro %}", NULL,
                    "non-default argument follows default argument");
    s_expect_error ("{% break %}", NULL, "'break' outside loop");
    s_expect_error ("{% for i in x %}{% macro m() %}{% continue %}{% endmacro %}{% endfor %}",
                    NULL, "'continue' outside loop");
    s_expect_error ("{{ x | }}", NULL, "expected token 'name', got 'end of print statement'");
    s_expect_error ("hello\nworld {{ 1 +\n }}", NULL, "line 3, column 2: TemplateSyntaxError: unexpected 'end of print statement'");
    s_expect_error ("{{ \"\\xZZ\" }}", NULL, "truncated \\xXX escape");
    s_expect_error ("{% include 'x' %}", NULL, "the 'include' tag is not supported");
    s_expect_error ("{{ x | nosuchfilter }}", NULL, "line 1, column 8: TemplateSyntaxError: No filter named 'nosuchfilter'.");
    s_expect_error ("{{ x is nosuchtest }}", NULL, "No test named 'nosuchtest'.");
    s_expect_error ("{% set 1 = 2 %}", NULL, "can't assign to 'const'");
    s_expect_error ("{{ 99999999999999999999 }}", NULL, "integer literal too large");
    s_expect_error ("{% call x %}{% endcall %}", NULL, "expected call");
    s_expect_error ("\xff\xfe", NULL, "not valid UTF-8");
}

static void
test_render_errors (void **state)
{
    (void) state;
    const char *dict = "{\"d\": {\"a\": 1}}";
    s_expect_error ("{{ x.y }}", NULL, "line 1, column 5: UndefinedError: 'x' is undefined");
    s_expect_error ("{{ d.missing.x }}", dict,
                    "line 1, column 13: UndefinedError: 'dict object' has no attribute 'missing'");
    s_expect_error ("{{ 1 + 'a' }}", NULL,
                    "TypeError: unsupported operand type(s) for +: 'int' and 'str'");
    s_expect_error ("{{ 'a' + 1 }}", NULL, "TypeError: can only concatenate str (not \"int\") to str");
    s_expect_error ("{{ 1 / 0 }}", NULL, "ZeroDivisionError: division by zero");
    s_expect_error ("{{ x + 1 }}", NULL, "UndefinedError: 'x' is undefined");
    s_expect_error ("{{ [1, 2].append(3) }}", NULL,
                    "SecurityError: access to attribute 'append' of 'list' object is unsafe.");
    s_expect_error ("{% set n = {'a': 1} %}{{ n.pop('a') }}", NULL,
                    "SecurityError: access to attribute 'pop' of 'dict' object is unsafe.");
    s_expect_error ("\n  {{ raise_exception('boom') }}", NULL, "line 2, column 6: TemplateError: boom");
    s_expect_error ("{% for i in 5 %}{% endfor %}", NULL, "TypeError: 'int' object is not iterable");
    s_expect_error ("{% for a, b in [[1]] %}{% endfor %}", NULL,
                    "ValueError: not enough values to unpack (expected 2, got 1)");
    s_expect_error ("{{ namespace(a=1) | tojson }}", NULL,
                    "TypeError: Object of type Namespace is not JSON serializable");
    s_expect_error ("{{ [1] | map('upper') | tojson }}", NULL,
                    "TypeError: Object of type generator is not JSON serializable");
    s_expect_error ("{{ x | tojson }}", NULL, "Object of type Undefined is not JSON serializable");
    s_expect_error ("{% set x = 5 %}{% set x.y = 1 %}", NULL,
                    "cannot assign attribute on non-namespace object");
    s_expect_error ("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", NULL,
                    "macro 'm' takes not more than 1 argument(s)");
    s_expect_error ("{% macro m(a) %}{% endmacro %}{{ m(b=2) }}", NULL,
                    "macro 'm' takes no keyword argument 'b'");
    s_expect_error ("{{ range(100001) }}", NULL, "OverflowError: Range too big.");
    s_expect_error ("{{ 1 < 'a' }}", NULL,
                    "TypeError: '<' not supported between instances of 'int' and 'str'");
    s_expect_error ("line1\nline2 {{ x.y.z }}", NULL, "line 2, column 11: UndefinedError: 'x' is undefined");
    s_expect_error ("{% if true %}{{ x | nosuchfilter }}{% endif %}", NULL,
                    "TemplateRuntimeError: No filter named 'nosuchfilter' found.");
    s_expect_error ("{{ {[1]: 2} }}", NULL, "TypeError: unhashable type: 'list'");
    s_expect_error ("{{ 'a' in 1 }}", NULL, "TypeError: argument of type 'int' is not iterable");
    s_expect_error ("{{ undefined_fn() }}", NULL, "UndefinedError: 'undefined_fn' is undefined");
    s_expect_error ("{% macro m() %}{{ x.y }}{% endmacro %}\n\n{{ m() }}", NULL,
                    "line 1, column 20: UndefinedError: 'x' is undefined");
    s_expect_error ("{{ 10 ** 20 }}", NULL, "OverflowError");
    s_expect_error ("{{ '%d' % 'a' }}", NULL, "TypeError");
    s_expect_error ("{{ l[::0] }}", "{\"l\": [1]}", "ValueError: slice step cannot be zero");
    s_expect_error ("{{ x }}", "[1, 2]", "variables must be a JSON object");
}

static void
test_undefined_semantics (void **state)
{
    (void) state;
    //  quiet when printed, tested, iterated, defaulted; an error when looked into
    s_expect_text ("[{{ x }}{{ (x.y is defined) if x is defined }}{{ x | default(1) }}"
                   "{{ (x or 'o') }}{% for a in x %}!{% endfor %}]", NULL, "[1o]");
    s_expect_text ("{{ 'a' if false }}|{{ d.missing is defined }}|{{ d['missing'] is none }}",
                   "{\"d\": {}}", "|False|False");
    s_expect_error ("{{ ('a' if false).x }}", NULL, "the inline if-expression on line 1 evaluated"
                    " to false and no else section was defined.");
    s_expect_error ("{{ [] | first | upper }}{{ ([] | first).x }}", NULL,
                    "No first item, sequence was empty.");
    s_expect_error ("{% for i in [1] %}{{ loop.previtem.x }}{% endfor %}", NULL,
                    "there is no previous item");
    s_expect_error ("{% macro m(a) %}{{ a.b }}{% endmacro %}{{ m() }}", NULL,
                    "parameter 'a' was not provided");
}

//  --- Limits and hostile templates ----------------------------------------------------

static void
test_deep_nesting (void **state)
{
    (void) state;
    struct {
        const char *prefix, *piece, *suffix;
        size_t count;
        const char *expected;
    } cases [] = {
        { "{{ ", "(", " }}", 5000, "too many nested brackets" },
        { "{{ ", "[", " }}", 5000, "too many nested brackets" },
        { "{{ ", "not ", "1 }}", 20000, "nested too deeply" },
        { "{{ ", "-", "1 }}", 20000, "nested too deeply" },
        { "{{ 1", " + 1", " }}", 20000, "nested too deeply" },
        { "{{ 1", "|string", " }}", 5000, "nested too deeply" },
        { "", "{% if 1 %}", "x", 2000, "nested too deeply" },
        { "", "{% for i in [1] %}", "x", 2000, "nested too deeply" },
        { "", "{% macro m() %}", "x", 2000, "nested too deeply" },
        { "{{ 1 if 1 else ", "2 if 2 else ", "3 }}", 20000, "nested too deeply" },
        { "{{ x", "[0]", " }}", 20000, "nested too deeply" },
        { "{{ x", ".a", " }}", 20000, "nested too deeply" },
        { "{{ f", "()", " }}", 20000, "nested too deeply" },
    };
    for (size_t index = 0; index < sizeof (cases) / sizeof (cases [0]); index++) {
        char *source = s_repeat (cases [index].prefix, cases [index].piece, cases [index].count,
                                 cases [index].suffix);
        s_expect_error (source, NULL, cases [index].expected);
        free (source);
    }
    //  long but flat templates are fine
    char *elifs = s_repeat ("{% if 0 %}", "{% elif 0 %}", 20000, "{% else %}e{% endif %}");
    s_expect_text (elifs, NULL, "e");
    free (elifs);
    char *text = s_repeat ("", "{{ 'x' }}{% if true %}y{% endif %}", 20000, "");
    char err [256];
    char *rendered = s_render (text, NULL, err, sizeof (err));
    assert_non_null (rendered);
    assert_int_equal (strlen (rendered), 40000);
    free (rendered);
    free (text);
}

static void
test_unterminated (void **state)
{
    (void) state;
    const char *sources [] = {
        "{{", "{%", "{#", "{{ x", "{% if", "{% if x %}", "{% for x in y %}", "{% macro m() %}",
        "{% raw %}", "{{ 'a", "{{ \"a\\", "{{ x[", "{{ x(", "{{ {", "{{ x |", "{{ x is",
        "{% set x %}", "{% call m() %}", "{% filter upper %}", "{{ x.", "{% if x %}{% else %}",
        "{{ 1 if", "{{ (1,", "{%- ", "{{- ", "{{ x }", "{% x %", "}}", "%}", "#}",
    };
    for (size_t index = 0; index < sizeof (sources) / sizeof (sources [0]); index++) {
        char err [512] = "";
        char *text = s_render (sources [index], NULL, err, sizeof (err));
        //  "}}" alone is text; the others are errors with a position
        if (text) {
            free (text);
            continue;
        }
        assert_non_null (strstr (err, "line 1, column"));
    }
}

static void
test_runaway_templates (void **state)
{
    (void) state;
    //  (with lower limits than the defaults, to be quick under the sanitizers)
    jinja_options_t quick;
    memset (&quick, 0, sizeof (quick));
    quick.max_iterations = 200000;
    quick.max_steps = 2000000;
    char quick_err [256];
    char *quick_text = s_render_with ("{% for i in range(100000) %}{% for j in range(100000) %}"
                                      "{% endfor %}{% endfor %}", NULL, &quick, quick_err,
                                      sizeof (quick_err));
    assert_null (quick_text);
    assert_non_null (strstr (quick_err, "more than 200000 loop iterations"));
    quick.max_iterations = 0;
    quick.max_steps = 200000;
    quick_text = s_render_with ("{% for i in range(100000) %}{% for j in range(100) %}{{ j }}"
                                "{% endfor %}{% endfor %}", NULL, &quick, quick_err,
                                sizeof (quick_err));
    assert_null (quick_text);
    assert_non_null (strstr (quick_err, "steps of work"));
    s_expect_error ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", NULL,
                    "RecursionError: maximum recursion depth exceeded");
    s_expect_error ("{% macro m(n) %}{{ m(n + 1) ~ m(n + 1) }}{% endmacro %}{{ m(0) }}", NULL,
                    "RecursionError");
    s_expect_error ("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}", NULL,
                    "MemoryError");
    s_expect_error ("{{ 'x' * 1000000000 }}", NULL, "MemoryError");
    s_expect_error ("{{ [1] * 1000000000 }}", NULL, "MemoryError");
    s_expect_error ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", NULL,
                    "the output is longer than the limit");
    //  quadratic copying runs into the work limit (here a small one, to be quick)
    jinja_options_t options;
    memset (&options, 0, sizeof (options));
    options.max_steps = 2000000;
    char err [256];
    char *text = s_render_with ("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
                                "{% set ns.l = ns.l + [i] %}{% endfor %}", NULL, &options,
                                err, sizeof (err));
    assert_null (text);
    assert_non_null (strstr (err, "steps of work"));
    //  nested values are freed without recursion; printing them stops in time
    s_expect_text ("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
                   "{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l | length }}", NULL, "1");
    s_expect_error ("{% set ns = namespace(l=[]) %}{% for i in range(5000) %}"
                    "{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l }}", NULL, "RecursionError");
    s_expect_error ("{% set ns = namespace(t=()) %}{% for i in range(5000) %}"
                    "{% set ns.t = (ns.t,) %}{% endfor %}{{ {ns.t: 1} }}", NULL, "unhashable");
    //  reference cycles through namespaces are freed at the end (ASan checks)
    s_expect_text ("{% set ns = namespace() %}{% set ns.self = ns %}{% set ns.l = [ns, ns] %}"
                   "{% macro m() %}{{ ns.l | length }}{% endmacro %}{% set ns.m = m %}"
                   "{{ ns.m() }}", NULL, "2");
    s_expect_error ("{% set ns = namespace() %}{% set ns.self = ns %}{{ ns }}", NULL,
                    "RecursionError");
}

static void
test_limits_options (void **state)
{
    (void) state;
    jinja_options_t options;
    memset (&options, 0, sizeof (options));
    options.now = FIXED_NOW;
    options.max_output = 10;
    char err [512];
    char *text = s_render_with ("{{ 'x' * 11 }}", NULL, &options, err, sizeof (err));
    assert_null (text);
    assert_non_null (strstr (err, "MemoryError"));
    text = s_render_with ("{{ 'x' * 10 }}", NULL, &options, err, sizeof (err));
    assert_non_null (text);
    free (text);

    memset (&options, 0, sizeof (options));
    options.max_iterations = 5;
    text = s_render_with ("{% for i in range(5) %}{% endfor %}ok", NULL, &options, err, sizeof (err));
    assert_non_null (text);
    free (text);
    text = s_render_with ("{% for i in range(6) %}{% endfor %}", NULL, &options, err, sizeof (err));
    assert_null (text);
    assert_non_null (strstr (err, "more than 5 loop iterations"));

    memset (&options, 0, sizeof (options));
    options.max_steps = 1000;
    text = s_render_with ("{% for i in range(2000) %}{{ i }}{% endfor %}", NULL, &options,
                          err, sizeof (err));
    assert_null (text);
    assert_non_null (strstr (err, "steps of work"));

    memset (&options, 0, sizeof (options));
    options.max_memory = 1 << 20;
    text = s_render_with ("{% set ns = namespace(s='') %}{% for i in range(20) %}"
                          "{% set ns.s = ns.s ~ ('x' * 100000) %}{% endfor %}", NULL, &options,
                          err, sizeof (err));
    assert_null (text);
    assert_non_null (strstr (err, "MemoryError"));
}

//  --- Threads --------------------------------------------------------------------------

typedef struct {
    const jinja_template_t *template;
    const char *expected;
    int failures;
} thread_job_t;

static void *
s_thread_main (void *arg)
{
    thread_job_t *job = arg;
    json_t *variables = json_pack ("{s:[s,s,s],s:{s:i}}", "items", "a", "b", "c", "d", "k", 7);
    for (int round = 0; round < 200; round++) {
        char err [256];
        char *text = jinja_template_render (job->template, variables, NULL, NULL, err, sizeof (err));
        if (!text || strcmp (text, job->expected) != 0)
            job->failures++;
        free (text);
    }
    json_decref (variables);
    return NULL;
}

static void
test_threads (void **state)
{
    (void) state;
    char err [256];
    jinja_template_t *template = jinja_template_new (
        "{% set ns = namespace(n=0) %}{% macro m(x) %}<{{ x | upper }}>{% endmacro %}"
        "{% for i in items %}{{ m(i) }}{% set ns.n = ns.n + d.k %}{% endfor %}"
        "{{ ns.n }}{{ 'const' }}{{ [1, 2.5, 'x'] | tojson }}", err, sizeof (err));
    assert_non_null (template);
    const char *expected = "<A><B><C>21const[1, 2.5, \"x\"]";
    pthread_t threads [4];
    thread_job_t jobs [4];
    for (int index = 0; index < 4; index++) {
        jobs [index] = (thread_job_t) { template, expected, 0 };
        assert_int_equal (pthread_create (&threads [index], NULL, s_thread_main, &jobs [index]), 0);
    }
    for (int index = 0; index < 4; index++) {
        pthread_join (threads [index], NULL);
        assert_int_equal (jobs [index].failures, 0);
    }
    jinja_template_destroy (&template);
}

//  --- Values ---------------------------------------------------------------------------

static void
test_float_repr (void **state)
{
    (void) state;
    struct {
        double value;
        const char *text;
    } cases [] = {
        { 1.0, "1.0" }, { 0.1, "0.1" }, { 1e16, "1e+16" }, { 1e15, "1000000000000000.0" },
        { 1e-4, "0.0001" }, { 1e-5, "1e-05" }, { 1.5e-7, "1.5e-07" }, { -0.0, "-0.0" },
        { 123456789.123, "123456789.123" }, { 1.0 / 3.0, "0.3333333333333333" },
        { 5e-324, "5e-324" }, { 1.7976931348623157e308, "1.7976931348623157e+308" },
        { 0.30000000000000004, "0.30000000000000004" }, { 2.5, "2.5" }, { 1e22, "1e+22" },
    };
    for (size_t index = 0; index < sizeof (cases) / sizeof (cases [0]); index++) {
        char text [64];
        jinja_format_float (cases [index].value, text, sizeof (text));
        assert_string_equal (text, cases [index].text);
    }
}

int
main (void)
{
    setenv ("TZ", "UTC", 1);
    tzset ();
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_render_cases),
        cmocka_unit_test (test_output_with_nul_bytes),
        cmocka_unit_test (test_variables_from_json),
        cmocka_unit_test (test_strftime_clock),
        cmocka_unit_test (test_markup),
        cmocka_unit_test (test_syntax_errors),
        cmocka_unit_test (test_render_errors),
        cmocka_unit_test (test_undefined_semantics),
        cmocka_unit_test (test_deep_nesting),
        cmocka_unit_test (test_unterminated),
        cmocka_unit_test (test_runaway_templates),
        cmocka_unit_test (test_limits_options),
        cmocka_unit_test (test_threads),
        cmocka_unit_test (test_float_repr),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
