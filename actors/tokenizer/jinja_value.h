/*  jinja_value — the values a Jinja2 template computes with, and the Python semantics
    that templates rely on: str() and repr() of every value, truthiness, ==, ordering,
    json.dumps (HF's tojson), UTF-8 strings indexed by code point.

    A value is a reference-counted jinja_value_t. Constructors return a new reference;
    jinja_value_unref drops one. Containers (list, dict) take their own reference to what
    is put in them (the caller keeps its own). none, true, false and the plain undefined
    are static singletons: ref and unref do nothing to them. Values made while parsing
    (the template's constants) are frozen with jinja_value_freeze: they are never counted
    again, so many threads may render one template at once.

    Every value made while rendering belongs to a jinja_heap_t: the heap counts the bytes
    that live values hold (a template that asks for more than max_bytes gets an error,
    not the memory), keeps the first error message of the render, and tracks the only
    values that can form reference cycles (namespaces and scopes, the mutable ones), so
    that jinja_heap_sweep frees whatever a cycle kept alive when the render ends.

    Functions that can fail return NULL (or -1) and leave a message in the heap, written
    the way Python would say it ("TypeError: ..."); the template engine adds where.
*/
#ifndef ZLLM_JINJA_VALUE_H
#define ZLLM_JINJA_VALUE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    JINJA_UNDEFINED,
    JINJA_NONE,
    JINJA_BOOL,
    JINJA_INT,
    JINJA_FLOAT,
    JINJA_STRING,
    JINJA_LIST,                     //  list, tuple, generator or dict view (see kind)
    JINJA_DICT,
    JINJA_NAMESPACE,                //  namespace(): attributes that `set ns.x` changes
    JINJA_CALLABLE,                 //  macro, builtin function, bound method
    JINJA_LOOP,                     //  the `loop` variable of a for loop
    JINJA_SCOPE                     //  variables of one scope (never seen by templates)
} jinja_type_t;

typedef enum {
    JINJA_LIST_PLAIN,
    JINJA_LIST_TUPLE,
    JINJA_LIST_GENERATOR,           //  what map/select/... give: iterable once, no len
    JINJA_LIST_DICT_ITEMS,          //  dict.items(), dict.keys(), dict.values()
    JINJA_LIST_DICT_KEYS,
    JINJA_LIST_DICT_VALUES
} jinja_list_kind_t;

typedef struct _jinja_value_t jinja_value_t;
typedef struct _jinja_heap_t jinja_heap_t;

typedef struct {
    jinja_value_t *key;
    jinja_value_t *value;
} jinja_dict_entry_t;

struct _jinja_value_t {
    jinja_type_t type;
    int32_t refs;                   //  < 0: static or frozen, never freed by unref
    jinja_heap_t *heap;             //  NULL for static and frozen values
    jinja_value_t *tracked_prev;    //  namespaces and scopes: the heap's tracked list
    jinja_value_t *tracked_next;
    jinja_value_t *free_next;       //  while being freed: the heap's list of values to free
    union {
        bool boolean;
        int64_t integer;
        double number;
        struct {
            char *data;             //  UTF-8, NUL-terminated
            size_t size;            //  bytes
            size_t length;          //  code points
            bool safe;              //  markupsafe.Markup (what |safe gives)
        } string;
        struct {
            jinja_value_t **items;
            size_t count;
            size_t capacity;
            jinja_list_kind_t kind;
            bool consumed;          //  a generator that was iterated
        } list;
        struct {
            jinja_dict_entry_t *entries;     //  in insertion order
            size_t count;
            size_t capacity;
            uint32_t *slots;        //  hash index of entries + 1 (0: free), when large
            size_t slot_count;      //  a power of two, or 0 while the dict is small
        } dict;
        struct {
            jinja_value_t *attrs;   //  a dict
        } namespace_;
        struct {
            char *message;          //  what using it raises, e.g. "'x' is undefined"
            const char *error_kind; //  "UndefinedError" or "SecurityError"
        } undefined;
        struct {
            int kind;               //  the engine's: builtin, method, macro, caller...
            int id;                 //  which builtin or method
            const void *node;       //  a macro's definition (owned by the template)
            jinja_value_t *self;    //  bound receiver, or NULL
            jinja_value_t *closure; //  a macro's scope, or NULL
            char *name;
        } callable;
        struct {
            jinja_value_t *items;   //  the list iterated (a plain list)
            size_t index0;
            size_t depth0;
            jinja_value_t *last_changed;    //  loop.changed's memory, or NULL
            const void *node;       //  the for statement (recursive loops)
            jinja_value_t *scope;   //  scope the loop runs in (recursive loops)
        } loop;
        struct {
            jinja_value_t *vars;    //  a dict
            jinja_value_t *parent;  //  enclosing scope, or NULL at the root
        } scope;
    } u;
};

//  --- Heap ------------------------------------------------------------------------------

struct _jinja_heap_t {
    size_t live_bytes;
    size_t max_bytes;
    uint64_t allocated;             //  bytes ever allocated: a measure of the work done
    jinja_value_t *tracked;         //  namespaces and scopes alive
    jinja_value_t *to_free;         //  values whose count reached 0, freed one at a time
    bool freeing;                   //  the loop that frees to_free is running
    bool failed;
    char error [1024];              //  first error: "Kind: message"
};

void
    jinja_heap_init (jinja_heap_t *heap, size_t max_bytes);

//  Free every tracked value that is still alive (cycles) and everything they hold.
//  Call when the render is over and nothing else refers to its values.
void
    jinja_heap_sweep (jinja_heap_t *heap);

//  Record an error (only the first one of a render is kept). kind is the Python
//  exception name, e.g. "TypeError". Always returns NULL, for `return jinja_heap_fail (...)`.
void *
    jinja_heap_fail (jinja_heap_t *heap, const char *kind, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

//  Memory that counts against the heap's limit (heap may be NULL: not counted).
void *
    jinja_heap_alloc (jinja_heap_t *heap, size_t size);
void *
    jinja_heap_realloc (jinja_heap_t *heap, void *data, size_t old_size, size_t new_size);
void
    jinja_heap_free (jinja_heap_t *heap, void *data, size_t size);

//  --- Construction and references ------------------------------------------------------

jinja_value_t *
    jinja_value_ref (jinja_value_t *value);

//  Drop a reference and set *value_p to NULL (NULL is fine).
void
    jinja_value_unref (jinja_value_t **value_p);

//  Make a value immortal: a template's constant, freed by jinja_value_free_frozen.
void
    jinja_value_freeze (jinja_value_t *value);
void
    jinja_value_free_frozen (jinja_value_t **value_p);

jinja_value_t *
    jinja_value_none (void);
jinja_value_t *
    jinja_value_bool (bool value);
//  The undefined that `x is defined` is false for and that raises nothing itself.
jinja_value_t *
    jinja_value_undefined (void);

jinja_value_t *
    jinja_value_new_int (jinja_heap_t *heap, int64_t value);
jinja_value_t *
    jinja_value_new_float (jinja_heap_t *heap, double value);
//  Copies size bytes of data (UTF-8).
jinja_value_t *
    jinja_value_new_string (jinja_heap_t *heap, const char *data, size_t size, bool safe);
jinja_value_t *
    jinja_value_new_cstring (jinja_heap_t *heap, const char *text);
//  An undefined that raises "error_kind: message" when used (error_kind NULL:
//  UndefinedError).
jinja_value_t *
    jinja_value_new_undefined (jinja_heap_t *heap, const char *error_kind,
                               const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));
jinja_value_t *
    jinja_value_new_list (jinja_heap_t *heap, jinja_list_kind_t kind);
jinja_value_t *
    jinja_value_new_dict (jinja_heap_t *heap);
jinja_value_t *
    jinja_value_new_namespace (jinja_heap_t *heap);
jinja_value_t *
    jinja_value_new_scope (jinja_heap_t *heap, jinja_value_t *parent);
//  A callable; name is copied, self and closure referenced (either may be NULL).
jinja_value_t *
    jinja_value_new_callable (jinja_heap_t *heap, int kind, int id, const char *name,
                              const void *node, jinja_value_t *self,
                              jinja_value_t *closure);
jinja_value_t *
    jinja_value_new_loop (jinja_heap_t *heap, jinja_value_t *items, size_t depth0);

//  --- Lists and dicts ------------------------------------------------------------------

//  Append (item is referenced). Returns 0, or -1 out of memory.
int
    jinja_list_push (jinja_value_t *list, jinja_value_t *item);

//  Set key to value (both referenced), replacing an equal key's value in place.
int
    jinja_dict_set (jinja_value_t *dict, jinja_value_t *key, jinja_value_t *value);
int
    jinja_dict_set_str (jinja_value_t *dict, const char *key, jinja_value_t *value);

//  Borrowed value for key, or NULL.
jinja_value_t *
    jinja_dict_get (const jinja_value_t *dict, const jinja_value_t *key);
jinja_value_t *
    jinja_dict_get_str (const jinja_value_t *dict, const char *key);

//  --- Python semantics -----------------------------------------------------------------

//  Python's type name: "int", "str", "Markup", "list", "NoneType", "Undefined", ...
const char *
    jinja_value_type_name (const jinja_value_t *value);

//  bool(value)
bool
    jinja_value_truthy (const jinja_value_t *value);

//  a == b
bool
    jinja_value_equal (const jinja_value_t *a, const jinja_value_t *b);

//  Ordering for <, >, sort: sets *result to -1, 0 or 1. Returns -1 with a TypeError
//  for values Python cannot order (op is the operator for the message).
int
    jinja_value_compare (jinja_heap_t *heap, const jinja_value_t *a, const jinja_value_t *b,
                         const char *op, int *result);

//  Is the value hashable (a possible dict key)?
bool
    jinja_value_hashable (const jinja_value_t *value);

//  A hash that equal values share (1 == 1.0 == True), for hashable values.
uint64_t
    jinja_value_hash (const jinja_value_t *value);

//  A growable byte buffer with a size limit, counted against a heap.
typedef struct {
    jinja_heap_t *heap;
    char *data;
    size_t size;
    size_t capacity;
    size_t limit;                   //  0: no limit of its own (the heap's still applies)
} jinja_buffer_t;

void
    jinja_buffer_init (jinja_buffer_t *buffer, jinja_heap_t *heap, size_t limit);
int
    jinja_buffer_append (jinja_buffer_t *buffer, const char *data, size_t size);
int
    jinja_buffer_append_str (jinja_buffer_t *buffer, const char *text);
int
    jinja_buffer_printf (jinja_buffer_t *buffer, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));
//  Hand the bytes over as a string value (the buffer is then empty).
jinja_value_t *
    jinja_buffer_to_string (jinja_buffer_t *buffer, bool safe);
void
    jinja_buffer_release (jinja_buffer_t *buffer);

//  Append str(value) / repr(value).
int
    jinja_value_write_str (jinja_buffer_t *out, const jinja_value_t *value);
int
    jinja_value_write_repr (jinja_buffer_t *out, const jinja_value_t *value);

//  str(value) as a new string value (a string is returned as itself, referenced).
jinja_value_t *
    jinja_value_to_string (jinja_heap_t *heap, jinja_value_t *value);

//  json.dumps(value, ensure_ascii, indent, separators, sort_keys). indent: NULL for
//  none, else the text one level indents by. item_separator / key_separator: NULL for
//  Python's defaults.
typedef struct {
    bool ensure_ascii;
    const char *indent;
    const char *item_separator;
    const char *key_separator;
    bool sort_keys;
} jinja_json_options_t;

int
    jinja_value_write_json (jinja_buffer_t *out, const jinja_value_t *value,
                            const jinja_json_options_t *options);

//  A JSON value (jansson) as a template value.
jinja_value_t *
    jinja_value_from_json (jinja_heap_t *heap, const json_t *json);

//  Python's repr() of a float: the shortest text that reads back as the same double.
void
    jinja_format_float (double value, char *text, size_t size);

//  --- UTF-8 ----------------------------------------------------------------------------

//  Decode the code point at text[*pos] (text is valid UTF-8) and advance *pos.
uint32_t
    jinja_utf8_next (const char *text, size_t size, size_t *pos);
//  Encode a code point; returns the number of bytes (1..4) written to out.
size_t
    jinja_utf8_encode (uint32_t code, char *out);
//  Number of code points in valid UTF-8.
size_t
    jinja_utf8_length (const char *text, size_t size);
//  Is text well-formed UTF-8?
bool
    jinja_utf8_valid (const char *text, size_t size);
//  Byte offset of code point index (index <= length).
size_t
    jinja_utf8_offset (const jinja_value_t *string, size_t index);

//  Python's str.isspace() for one code point.
bool
    jinja_unicode_is_space (uint32_t code);
uint32_t
    jinja_unicode_upper (uint32_t code);
uint32_t
    jinja_unicode_lower (uint32_t code);
bool
    jinja_unicode_is_upper (uint32_t code);
bool
    jinja_unicode_is_lower (uint32_t code);
bool
    jinja_unicode_is_alpha (uint32_t code);
bool
    jinja_unicode_is_digit (uint32_t code);

#endif
