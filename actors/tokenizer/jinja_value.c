/*  jinja_value — values of the Jinja2 engine and their Python semantics. See jinja_value.h.

    Freeing never recurses: a value whose count reaches zero goes on its heap's to_free
    list, and one loop frees the list, so a list nested a million deep (a template can
    build one) is freed without a deep C stack. Everything that walks into values (repr,
    ==, ordering, JSON) stops at MAX_NESTING levels with an error instead.
*/
#include "jinja_value.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  How deep repr, ==, ordering and JSON go into nested values before they give up
//  (Python stops at its recursion limit, about as deep).
#define MAX_NESTING 512

static jinja_value_t s_none = { .type = JINJA_NONE, .refs = -1 };
static jinja_value_t s_true = { .type = JINJA_BOOL, .refs = -1, .u.boolean = true };
static jinja_value_t s_false = { .type = JINJA_BOOL, .refs = -1, .u.boolean = false };
static jinja_value_t s_undefined = {
    .type = JINJA_UNDEFINED, .refs = -1,
    .u.undefined = { .message = NULL, .error_kind = NULL }
};

//  --- Heap ------------------------------------------------------------------------------

void
jinja_heap_init (jinja_heap_t *heap, size_t max_bytes)
{
    memset (heap, 0, sizeof (*heap));
    heap->max_bytes = max_bytes;
}

void *
jinja_heap_fail (jinja_heap_t *heap, const char *kind, const char *format, ...)
{
    if (!heap || heap->failed)
        return NULL;
    heap->failed = true;
    int used = snprintf (heap->error, sizeof (heap->error), "%s: ", kind);
    if (used < 0 || (size_t) used >= sizeof (heap->error))
        return NULL;
    va_list args;
    va_start (args, format);
    vsnprintf (heap->error + used, sizeof (heap->error) - (size_t) used, format, args);
    va_end (args);
    return NULL;
}

static bool
s_heap_reserve (jinja_heap_t *heap, size_t size)
{
    if (!heap)
        return true;
    if (heap->max_bytes && (size > heap->max_bytes
                            || heap->live_bytes > heap->max_bytes - size)) {
        jinja_heap_fail (heap, "MemoryError",
                         "the template needs more than %zu MiB of memory",
                         heap->max_bytes >> 20);
        return false;
    }
    heap->live_bytes += size;
    heap->allocated += size;
    return true;
}

void *
jinja_heap_alloc (jinja_heap_t *heap, size_t size)
{
    if (!s_heap_reserve (heap, size))
        return NULL;
    void *data = malloc (size ? size : 1);
    if (!data) {
        if (heap)
            heap->live_bytes -= size;
        jinja_heap_fail (heap, "MemoryError", "out of memory");
    }
    return data;
}

void *
jinja_heap_realloc (jinja_heap_t *heap, void *data, size_t old_size, size_t new_size)
{
    if (new_size > old_size && !s_heap_reserve (heap, new_size - old_size))
        return NULL;
    void *grown = realloc (data, new_size ? new_size : 1);
    if (!grown) {
        if (heap && new_size > old_size)
            heap->live_bytes -= new_size - old_size;
        jinja_heap_fail (heap, "MemoryError", "out of memory");
        return NULL;
    }
    if (heap && new_size < old_size)
        heap->live_bytes -= old_size - new_size;
    return grown;
}

void
jinja_heap_free (jinja_heap_t *heap, void *data, size_t size)
{
    if (!data)
        return;
    free (data);
    if (heap)
        heap->live_bytes = heap->live_bytes >= size? heap->live_bytes - size: 0;
}

static void
s_track (jinja_heap_t *heap, jinja_value_t *value)
{
    if (!heap)
        return;
    value->tracked_prev = NULL;
    value->tracked_next = heap->tracked;
    if (heap->tracked)
        heap->tracked->tracked_prev = value;
    heap->tracked = value;
}

static void
s_untrack (jinja_heap_t *heap, jinja_value_t *value)
{
    if (!heap)
        return;
    if (value->tracked_prev)
        value->tracked_prev->tracked_next = value->tracked_next;
    else
    if (heap->tracked == value)
        heap->tracked = value->tracked_next;
    if (value->tracked_next)
        value->tracked_next->tracked_prev = value->tracked_prev;
    value->tracked_prev = value->tracked_next = NULL;
}

//  --- References and freeing ----------------------------------------------------------

jinja_value_t *
jinja_value_ref (jinja_value_t *value)
{
    if (value && value->refs >= 0)
        value->refs++;
    return value;
}

//  Drops what a value holds (not the value itself).
static void
s_release_contents (jinja_value_t *value)
{
    jinja_heap_t *heap = value->heap;
    switch (value->type) {
        case JINJA_STRING:
            jinja_heap_free (heap, value->u.string.data, value->u.string.size + 1);
            value->u.string.data = NULL;
            break;
        case JINJA_UNDEFINED:
            if (value->u.undefined.message) {
                jinja_heap_free (heap, value->u.undefined.message,
                                 strlen (value->u.undefined.message) + 1);
                value->u.undefined.message = NULL;
            }
            break;
        case JINJA_LIST:
            for (size_t index = 0; index < value->u.list.count; index++)
                jinja_value_unref (&value->u.list.items [index]);
            jinja_heap_free (heap, value->u.list.items,
                             value->u.list.capacity * sizeof (jinja_value_t *));
            value->u.list.items = NULL;
            value->u.list.count = value->u.list.capacity = 0;
            break;
        case JINJA_DICT:
            for (size_t index = 0; index < value->u.dict.count; index++) {
                jinja_value_unref (&value->u.dict.entries [index].key);
                jinja_value_unref (&value->u.dict.entries [index].value);
            }
            jinja_heap_free (heap, value->u.dict.entries,
                             value->u.dict.capacity * sizeof (jinja_dict_entry_t));
            jinja_heap_free (heap, value->u.dict.slots,
                             value->u.dict.slot_count * sizeof (uint32_t));
            value->u.dict.entries = NULL;
            value->u.dict.slots = NULL;
            value->u.dict.count = value->u.dict.capacity = value->u.dict.slot_count = 0;
            break;
        case JINJA_NAMESPACE:
            jinja_value_unref (&value->u.namespace_.attrs);
            break;
        case JINJA_CALLABLE:
            jinja_value_unref (&value->u.callable.self);
            jinja_value_unref (&value->u.callable.closure);
            if (value->u.callable.name) {
                jinja_heap_free (heap, value->u.callable.name,
                                 strlen (value->u.callable.name) + 1);
                value->u.callable.name = NULL;
            }
            break;
        case JINJA_LOOP:
            jinja_value_unref (&value->u.loop.items);
            jinja_value_unref (&value->u.loop.last_changed);
            jinja_value_unref (&value->u.loop.scope);
            break;
        case JINJA_SCOPE:
            jinja_value_unref (&value->u.scope.vars);
            jinja_value_unref (&value->u.scope.parent);
            break;
        default:
            break;
    }
}

static void
s_free_value (jinja_value_t *value)
{
    jinja_heap_t *heap = value->heap;
    if (value->type == JINJA_NAMESPACE || value->type == JINJA_SCOPE)
        s_untrack (heap, value);
    s_release_contents (value);
    jinja_heap_free (heap, value, sizeof (jinja_value_t));
}

void
jinja_value_unref (jinja_value_t **value_p)
{
    if (!value_p || !*value_p)
        return;
    jinja_value_t *value = *value_p;
    *value_p = NULL;
    if (value->refs < 0)
        return;
    if (--value->refs > 0)
        return;
    jinja_heap_t *heap = value->heap;
    if (!heap) {
        s_free_value (value);
        return;
    }
    value->free_next = heap->to_free;
    heap->to_free = value;
    if (heap->freeing)
        return;                     //  the loop below, further up the stack, frees it
    heap->freeing = true;
    while (heap->to_free) {
        jinja_value_t *next = heap->to_free;
        heap->to_free = next->free_next;
        s_free_value (next);
    }
    heap->freeing = false;
}

void
jinja_heap_sweep (jinja_heap_t *heap)
{
    //  Pin every tracked value, empty them all (which frees everything else that only
    //  they held), then free their shells.
    for (jinja_value_t *value = heap->tracked; value; value = value->tracked_next)
        value->refs++;
    heap->freeing = true;           //  what the values drop is queued, not freed at once
    for (jinja_value_t *value = heap->tracked; value; value = value->tracked_next) {
        s_release_contents (value);
        while (heap->to_free) {
            jinja_value_t *next = heap->to_free;
            heap->to_free = next->free_next;
            s_free_value (next);
        }
    }
    heap->freeing = false;
    while (heap->tracked) {
        jinja_value_t *value = heap->tracked;
        heap->tracked = value->tracked_next;
        jinja_heap_free (heap, value, sizeof (jinja_value_t));
    }
}

void
jinja_value_freeze (jinja_value_t *value)
{
    if (value && value->refs >= 0)
        value->refs = -2;
}

void
jinja_value_free_frozen (jinja_value_t **value_p)
{
    if (!value_p || !*value_p)
        return;
    jinja_value_t *value = *value_p;
    *value_p = NULL;
    if (value->refs == -2) {
        value->refs = 1;
        jinja_value_unref (&value);
    }
}

//  --- Constructors ---------------------------------------------------------------------

jinja_value_t *
jinja_value_none (void)
{
    return &s_none;
}

jinja_value_t *
jinja_value_bool (bool value)
{
    return value? &s_true: &s_false;
}

jinja_value_t *
jinja_value_undefined (void)
{
    return &s_undefined;
}

static jinja_value_t *
s_new (jinja_heap_t *heap, jinja_type_t type)
{
    jinja_value_t *value = jinja_heap_alloc (heap, sizeof (jinja_value_t));
    if (!value)
        return NULL;
    memset (value, 0, sizeof (*value));
    value->type = type;
    value->refs = 1;
    value->heap = heap;
    return value;
}

jinja_value_t *
jinja_value_new_int (jinja_heap_t *heap, int64_t integer)
{
    jinja_value_t *value = s_new (heap, JINJA_INT);
    if (value)
        value->u.integer = integer;
    return value;
}

jinja_value_t *
jinja_value_new_float (jinja_heap_t *heap, double number)
{
    jinja_value_t *value = s_new (heap, JINJA_FLOAT);
    if (value)
        value->u.number = number;
    return value;
}

jinja_value_t *
jinja_value_new_string (jinja_heap_t *heap, const char *data, size_t size, bool safe)
{
    jinja_value_t *value = s_new (heap, JINJA_STRING);
    if (!value)
        return NULL;
    value->u.string.data = jinja_heap_alloc (heap, size + 1);
    if (!value->u.string.data) {
        jinja_heap_free (heap, value, sizeof (jinja_value_t));
        return NULL;
    }
    if (size)
        memcpy (value->u.string.data, data, size);
    value->u.string.data [size] = 0;
    value->u.string.size = size;
    value->u.string.length = jinja_utf8_length (data, size);
    value->u.string.safe = safe;
    return value;
}

jinja_value_t *
jinja_value_new_cstring (jinja_heap_t *heap, const char *text)
{
    return jinja_value_new_string (heap, text, strlen (text), false);
}

jinja_value_t *
jinja_value_new_undefined (jinja_heap_t *heap, const char *error_kind,
                           const char *format, ...)
{
    char message [512];
    va_list args;
    va_start (args, format);
    vsnprintf (message, sizeof (message), format, args);
    va_end (args);
    jinja_value_t *value = s_new (heap, JINJA_UNDEFINED);
    if (!value)
        return NULL;
    size_t size = strlen (message) + 1;
    value->u.undefined.message = jinja_heap_alloc (heap, size);
    if (!value->u.undefined.message) {
        jinja_heap_free (heap, value, sizeof (jinja_value_t));
        return NULL;
    }
    memcpy (value->u.undefined.message, message, size);
    value->u.undefined.error_kind = error_kind? error_kind: "UndefinedError";
    return value;
}

jinja_value_t *
jinja_value_new_list (jinja_heap_t *heap, jinja_list_kind_t kind)
{
    jinja_value_t *value = s_new (heap, JINJA_LIST);
    if (value)
        value->u.list.kind = kind;
    return value;
}

jinja_value_t *
jinja_value_new_dict (jinja_heap_t *heap)
{
    return s_new (heap, JINJA_DICT);
}

jinja_value_t *
jinja_value_new_namespace (jinja_heap_t *heap)
{
    jinja_value_t *value = s_new (heap, JINJA_NAMESPACE);
    if (!value)
        return NULL;
    value->u.namespace_.attrs = jinja_value_new_dict (heap);
    if (!value->u.namespace_.attrs) {
        jinja_heap_free (heap, value, sizeof (jinja_value_t));
        return NULL;
    }
    s_track (heap, value);
    return value;
}

jinja_value_t *
jinja_value_new_scope (jinja_heap_t *heap, jinja_value_t *parent)
{
    jinja_value_t *value = s_new (heap, JINJA_SCOPE);
    if (!value)
        return NULL;
    value->u.scope.vars = jinja_value_new_dict (heap);
    if (!value->u.scope.vars) {
        jinja_heap_free (heap, value, sizeof (jinja_value_t));
        return NULL;
    }
    value->u.scope.parent = jinja_value_ref (parent);
    s_track (heap, value);
    return value;
}

jinja_value_t *
jinja_value_new_callable (jinja_heap_t *heap, int kind, int id, const char *name,
                          const void *node, jinja_value_t *self, jinja_value_t *closure)
{
    jinja_value_t *value = s_new (heap, JINJA_CALLABLE);
    if (!value)
        return NULL;
    size_t size = strlen (name) + 1;
    value->u.callable.name = jinja_heap_alloc (heap, size);
    if (!value->u.callable.name) {
        jinja_heap_free (heap, value, sizeof (jinja_value_t));
        return NULL;
    }
    memcpy (value->u.callable.name, name, size);
    value->u.callable.kind = kind;
    value->u.callable.id = id;
    value->u.callable.node = node;
    value->u.callable.self = jinja_value_ref (self);
    value->u.callable.closure = jinja_value_ref (closure);
    return value;
}

jinja_value_t *
jinja_value_new_loop (jinja_heap_t *heap, jinja_value_t *items, size_t depth0)
{
    jinja_value_t *value = s_new (heap, JINJA_LOOP);
    if (!value)
        return NULL;
    value->u.loop.items = jinja_value_ref (items);
    value->u.loop.depth0 = depth0;
    return value;
}

//  --- Lists and dicts ------------------------------------------------------------------

int
jinja_list_push (jinja_value_t *list, jinja_value_t *item)
{
    if (list->u.list.count == list->u.list.capacity) {
        size_t capacity = list->u.list.capacity? list->u.list.capacity * 2: 4;
        jinja_value_t **items = jinja_heap_realloc (list->heap, list->u.list.items,
                                                    list->u.list.capacity * sizeof (*items),
                                                    capacity * sizeof (*items));
        if (!items)
            return -1;
        list->u.list.items = items;
        list->u.list.capacity = capacity;
    }
    list->u.list.items [list->u.list.count++] = jinja_value_ref (item);
    return 0;
}

//  Dicts up to this size are searched entry by entry; larger ones get a hash index.
#define DICT_INDEX_THRESHOLD 8

static jinja_dict_entry_t *
s_dict_find (const jinja_value_t *dict, const jinja_value_t *key)
{
    if (dict->u.dict.slot_count) {
        size_t mask = dict->u.dict.slot_count - 1;
        size_t slot = (size_t) jinja_value_hash (key) & mask;
        while (dict->u.dict.slots [slot]) {
            jinja_dict_entry_t *entry = &dict->u.dict.entries [dict->u.dict.slots [slot] - 1];
            if (jinja_value_equal (entry->key, key))
                return entry;
            slot = (slot + 1) & mask;
        }
        return NULL;
    }
    for (size_t index = 0; index < dict->u.dict.count; index++) {
        jinja_dict_entry_t *entry = &dict->u.dict.entries [index];
        if (jinja_value_equal (entry->key, key))
            return entry;
    }
    return NULL;
}

//  Rebuild the hash index with room for at least twice the entries.
static int
s_dict_reindex (jinja_value_t *dict, size_t wanted)
{
    size_t slot_count = 16;
    while (slot_count < wanted * 2)
        slot_count *= 2;
    if (slot_count > UINT32_MAX)
        return -1;
    uint32_t *slots = jinja_heap_alloc (dict->heap, slot_count * sizeof (uint32_t));
    if (!slots)
        return -1;
    memset (slots, 0, slot_count * sizeof (uint32_t));
    for (size_t index = 0; index < dict->u.dict.count; index++) {
        size_t slot = (size_t) jinja_value_hash (dict->u.dict.entries [index].key) & (slot_count - 1);
        while (slots [slot])
            slot = (slot + 1) & (slot_count - 1);
        slots [slot] = (uint32_t) index + 1;
    }
    jinja_heap_free (dict->heap, dict->u.dict.slots, dict->u.dict.slot_count * sizeof (uint32_t));
    dict->u.dict.slots = slots;
    dict->u.dict.slot_count = slot_count;
    return 0;
}

int
jinja_dict_set (jinja_value_t *dict, jinja_value_t *key, jinja_value_t *value)
{
    jinja_dict_entry_t *entry = s_dict_find (dict, key);
    if (entry) {
        jinja_value_t *old = entry->value;
        entry->value = jinja_value_ref (value);
        jinja_value_unref (&old);
        return 0;
    }
    if (dict->u.dict.count == dict->u.dict.capacity) {
        size_t capacity = dict->u.dict.capacity? dict->u.dict.capacity * 2: 4;
        jinja_dict_entry_t *entries =
            jinja_heap_realloc (dict->heap, dict->u.dict.entries,
                                dict->u.dict.capacity * sizeof (*entries),
                                capacity * sizeof (*entries));
        if (!entries)
            return -1;
        dict->u.dict.entries = entries;
        dict->u.dict.capacity = capacity;
    }
    size_t count = dict->u.dict.count + 1;
    if (count > DICT_INDEX_THRESHOLD && count * 2 > dict->u.dict.slot_count) {
        if (s_dict_reindex (dict, count))
            return -1;
    }
    entry = &dict->u.dict.entries [dict->u.dict.count++];
    entry->key = jinja_value_ref (key);
    entry->value = jinja_value_ref (value);
    if (dict->u.dict.slot_count) {
        size_t mask = dict->u.dict.slot_count - 1;
        size_t slot = (size_t) jinja_value_hash (key) & mask;
        while (dict->u.dict.slots [slot])
            slot = (slot + 1) & mask;
        dict->u.dict.slots [slot] = (uint32_t) dict->u.dict.count;
    }
    return 0;
}

int
jinja_dict_set_str (jinja_value_t *dict, const char *key, jinja_value_t *value)
{
    jinja_value_t *key_value = jinja_value_new_cstring (dict->heap, key);
    if (!key_value)
        return -1;
    int rc = jinja_dict_set (dict, key_value, value);
    jinja_value_unref (&key_value);
    return rc;
}

jinja_value_t *
jinja_dict_get (const jinja_value_t *dict, const jinja_value_t *key)
{
    jinja_dict_entry_t *entry = s_dict_find (dict, key);
    return entry? entry->value: NULL;
}

jinja_value_t *
jinja_dict_get_str (const jinja_value_t *dict, const char *key)
{
    size_t size = strlen (key);
    if (dict->u.dict.slot_count) {
        jinja_value_t probe;
        memset (&probe, 0, sizeof (probe));
        probe.type = JINJA_STRING;
        probe.refs = -1;
        probe.u.string.data = (char *) key;
        probe.u.string.size = size;
        return jinja_dict_get (dict, &probe);
    }
    for (size_t index = 0; index < dict->u.dict.count; index++) {
        const jinja_value_t *entry_key = dict->u.dict.entries [index].key;
        if (entry_key->type == JINJA_STRING && entry_key->u.string.size == size
        &&  memcmp (entry_key->u.string.data, key, size) == 0)
            return dict->u.dict.entries [index].value;
    }
    return NULL;
}

//  --- Python semantics -----------------------------------------------------------------

const char *
jinja_value_type_name (const jinja_value_t *value)
{
    switch (value->type) {
        case JINJA_UNDEFINED: return "Undefined";
        case JINJA_NONE: return "NoneType";
        case JINJA_BOOL: return "bool";
        case JINJA_INT: return "int";
        case JINJA_FLOAT: return "float";
        case JINJA_STRING: return value->u.string.safe? "Markup": "str";
        case JINJA_LIST:
            switch (value->u.list.kind) {
                case JINJA_LIST_TUPLE: return "tuple";
                case JINJA_LIST_GENERATOR: return "generator";
                case JINJA_LIST_DICT_ITEMS: return "dict_items";
                case JINJA_LIST_DICT_KEYS: return "dict_keys";
                case JINJA_LIST_DICT_VALUES: return "dict_values";
                default: return "list";
            }
        case JINJA_DICT: return "dict";
        case JINJA_NAMESPACE: return "Namespace";
        case JINJA_CALLABLE: return value->u.callable.node? "Macro": "builtin_function_or_method";
        case JINJA_LOOP: return "LoopContext";
        case JINJA_SCOPE: return "Scope";
    }
    return "object";
}

bool
jinja_value_truthy (const jinja_value_t *value)
{
    switch (value->type) {
        case JINJA_UNDEFINED: return false;
        case JINJA_NONE: return false;
        case JINJA_BOOL: return value->u.boolean;
        case JINJA_INT: return value->u.integer != 0;
        case JINJA_FLOAT: return value->u.number != 0.0;
        case JINJA_STRING: return value->u.string.size > 0;
        case JINJA_LIST:
            if (value->u.list.kind == JINJA_LIST_GENERATOR)
                return true;
            return value->u.list.count > 0;
        case JINJA_DICT: return value->u.dict.count > 0;
        default: return true;
    }
}

static bool
s_is_number (const jinja_value_t *value)
{
    return value->type == JINJA_BOOL || value->type == JINJA_INT || value->type == JINJA_FLOAT;
}

static double
s_as_double (const jinja_value_t *value)
{
    if (value->type == JINJA_FLOAT)
        return value->u.number;
    if (value->type == JINJA_INT)
        return (double) value->u.integer;
    return value->u.boolean? 1.0: 0.0;
}

static int64_t
s_as_int (const jinja_value_t *value)
{
    if (value->type == JINJA_INT)
        return value->u.integer;
    return value->u.boolean? 1: 0;
}

static bool
s_equal (const jinja_value_t *a, const jinja_value_t *b, int depth)
{
    if (a == b)
        return true;
    if (depth > MAX_NESTING)
        return false;
    if (s_is_number (a) && s_is_number (b)) {
        if (a->type == JINJA_FLOAT || b->type == JINJA_FLOAT)
            return s_as_double (a) == s_as_double (b);
        return s_as_int (a) == s_as_int (b);
    }
    if (a->type != b->type)
        return false;
    switch (a->type) {
        case JINJA_UNDEFINED:
        case JINJA_NONE:
            return true;
        case JINJA_STRING:
            return a->u.string.size == b->u.string.size
                && memcmp (a->u.string.data, b->u.string.data, a->u.string.size) == 0;
        case JINJA_LIST: {
            jinja_list_kind_t kind_a = a->u.list.kind;
            jinja_list_kind_t kind_b = b->u.list.kind;
            if (kind_a != kind_b || kind_a == JINJA_LIST_GENERATOR
            ||  kind_a == JINJA_LIST_DICT_VALUES)
                return false;
            if (a->u.list.count != b->u.list.count)
                return false;
            for (size_t index = 0; index < a->u.list.count; index++)
                if (!s_equal (a->u.list.items [index], b->u.list.items [index], depth + 1))
                    return false;
            return true;
        }
        case JINJA_DICT:
            if (a->u.dict.count != b->u.dict.count)
                return false;
            for (size_t index = 0; index < a->u.dict.count; index++) {
                const jinja_dict_entry_t *entry = &a->u.dict.entries [index];
                const jinja_value_t *other = jinja_dict_get (b, entry->key);
                if (!other || !s_equal (entry->value, other, depth + 1))
                    return false;
            }
            return true;
        default:
            return false;
    }
}

bool
jinja_value_equal (const jinja_value_t *a, const jinja_value_t *b)
{
    return s_equal (a, b, 0);
}

static int
s_compare (jinja_heap_t *heap, const jinja_value_t *a, const jinja_value_t *b,
           const char *op, int *result, int depth)
{
    if (depth > MAX_NESTING) {
        jinja_heap_fail (heap, "RecursionError", "maximum recursion depth exceeded in comparison");
        return -1;
    }
    const jinja_value_t *undefined = a->type == JINJA_UNDEFINED? a:
                                     b->type == JINJA_UNDEFINED? b: NULL;
    if (undefined) {
        jinja_heap_fail (heap, undefined->u.undefined.error_kind?
                               undefined->u.undefined.error_kind: "UndefinedError",
                         "%s", undefined->u.undefined.message?
                               undefined->u.undefined.message: "value is undefined");
        return -1;
    }
    if (s_is_number (a) && s_is_number (b)) {
        if (a->type == JINJA_FLOAT || b->type == JINJA_FLOAT) {
            double x = s_as_double (a), y = s_as_double (b);
            *result = x < y? -1: x > y? 1: 0;
        }
        else {
            int64_t x = s_as_int (a), y = s_as_int (b);
            *result = x < y? -1: x > y? 1: 0;
        }
        return 0;
    }
    if (a->type == JINJA_STRING && b->type == JINJA_STRING) {
        size_t common = a->u.string.size < b->u.string.size? a->u.string.size: b->u.string.size;
        int order = memcmp (a->u.string.data, b->u.string.data, common);
        if (order == 0)
            order = a->u.string.size < b->u.string.size? -1:
                    a->u.string.size > b->u.string.size? 1: 0;
        *result = order < 0? -1: order > 0? 1: 0;
        return 0;
    }
    if (a->type == JINJA_LIST && b->type == JINJA_LIST
    &&  a->u.list.kind == b->u.list.kind
    &&  (a->u.list.kind == JINJA_LIST_PLAIN || a->u.list.kind == JINJA_LIST_TUPLE)) {
        size_t count = a->u.list.count < b->u.list.count? a->u.list.count: b->u.list.count;
        for (size_t index = 0; index < count; index++) {
            const jinja_value_t *x = a->u.list.items [index];
            const jinja_value_t *y = b->u.list.items [index];
            if (!s_equal (x, y, depth + 1))
                return s_compare (heap, x, y, op, result, depth + 1);
        }
        *result = a->u.list.count < b->u.list.count? -1:
                  a->u.list.count > b->u.list.count? 1: 0;
        return 0;
    }
    jinja_heap_fail (heap, "TypeError",
                     "'%s' not supported between instances of '%s' and '%s'",
                     op, jinja_value_type_name (a), jinja_value_type_name (b));
    return -1;
}

int
jinja_value_compare (jinja_heap_t *heap, const jinja_value_t *a, const jinja_value_t *b,
                     const char *op, int *result)
{
    return s_compare (heap, a, b, op, result, 0);
}

static bool
s_hashable (const jinja_value_t *value, int depth)
{
    if (depth > MAX_NESTING)
        return false;
    if (value->type == JINJA_DICT)
        return false;
    if (value->type == JINJA_LIST) {
        if (value->u.list.kind == JINJA_LIST_GENERATOR)
            return true;
        if (value->u.list.kind != JINJA_LIST_TUPLE)
            return false;
        for (size_t index = 0; index < value->u.list.count; index++)
            if (!s_hashable (value->u.list.items [index], depth + 1))
                return false;
    }
    return true;
}

bool
jinja_value_hashable (const jinja_value_t *value)
{
    return s_hashable (value, 0);
}

static uint64_t
s_mix (uint64_t value)
{
    value ^= value >> 33;
    value *= 0xff51afd7ed558ccdULL;
    value ^= value >> 33;
    value *= 0xc4ceb9fe1a85ec53ULL;
    value ^= value >> 33;
    return value;
}

static uint64_t
s_hash (const jinja_value_t *value, int depth)
{
    switch (value->type) {
        case JINJA_NONE:
            return 0x9e3779b97f4a7c15ULL;
        case JINJA_UNDEFINED:
            return 0x7f4a7c159e3779b9ULL;
        case JINJA_BOOL:
            return s_mix (value->u.boolean? 1: 0);
        case JINJA_INT:
            return s_mix ((uint64_t) value->u.integer);
        case JINJA_FLOAT: {
            double number = value->u.number;
            if (number == floor (number) && number >= -9.2e18 && number <= 9.2e18)
                return s_mix ((uint64_t) (int64_t) number);
            uint64_t bits;
            memcpy (&bits, &number, sizeof (bits));
            return s_mix (bits);
        }
        case JINJA_STRING: {
            uint64_t hash = 0xcbf29ce484222325ULL;
            for (size_t index = 0; index < value->u.string.size; index++) {
                hash ^= (unsigned char) value->u.string.data [index];
                hash *= 0x100000001b3ULL;
            }
            return hash;
        }
        case JINJA_LIST: {
            uint64_t hash = 0x345678ULL + value->u.list.count;
            if (value->u.list.kind != JINJA_LIST_TUPLE)
                return s_mix ((uint64_t) (uintptr_t) value);
            if (depth > MAX_NESTING)
                return hash;        //  equal values still hash alike
            for (size_t index = 0; index < value->u.list.count; index++)
                hash = s_mix (hash ^ s_hash (value->u.list.items [index], depth + 1));
            return hash;
        }
        default:
            return s_mix ((uint64_t) (uintptr_t) value);
    }
}

uint64_t
jinja_value_hash (const jinja_value_t *value)
{
    return s_hash (value, 0);
}

//  --- Buffers --------------------------------------------------------------------------

void
jinja_buffer_init (jinja_buffer_t *buffer, jinja_heap_t *heap, size_t limit)
{
    memset (buffer, 0, sizeof (*buffer));
    buffer->heap = heap;
    buffer->limit = limit;
}

int
jinja_buffer_append (jinja_buffer_t *buffer, const char *data, size_t size)
{
    if (size == 0)
        return 0;
    if (buffer->limit && (size > buffer->limit || buffer->size > buffer->limit - size)) {
        jinja_heap_fail (buffer->heap, "MemoryError",
                         "the output is longer than the limit of %zu bytes", buffer->limit);
        return -1;
    }
    if (buffer->size + size + 1 > buffer->capacity) {
        size_t capacity = buffer->capacity? buffer->capacity: 64;
        while (capacity < buffer->size + size + 1)
            capacity *= 2;
        char *grown = jinja_heap_realloc (buffer->heap, buffer->data, buffer->capacity, capacity);
        if (!grown)
            return -1;
        buffer->data = grown;
        buffer->capacity = capacity;
    }
    memcpy (buffer->data + buffer->size, data, size);
    buffer->size += size;
    buffer->data [buffer->size] = 0;
    return 0;
}

int
jinja_buffer_append_str (jinja_buffer_t *buffer, const char *text)
{
    return jinja_buffer_append (buffer, text, strlen (text));
}

int
jinja_buffer_printf (jinja_buffer_t *buffer, const char *format, ...)
{
    char text [512];
    va_list args;
    va_start (args, format);
    int size = vsnprintf (text, sizeof (text), format, args);
    va_end (args);
    if (size < 0)
        return -1;
    if ((size_t) size >= sizeof (text))
        size = sizeof (text) - 1;
    return jinja_buffer_append (buffer, text, (size_t) size);
}

jinja_value_t *
jinja_buffer_to_string (jinja_buffer_t *buffer, bool safe)
{
    jinja_heap_t *heap = buffer->heap;
    jinja_value_t *value = s_new (heap, JINJA_STRING);
    if (!value)
        return NULL;
    if (!buffer->data) {
        value->u.string.data = jinja_heap_alloc (heap, 1);
        if (!value->u.string.data) {
            jinja_heap_free (heap, value, sizeof (jinja_value_t));
            return NULL;
        }
        value->u.string.data [0] = 0;
    }
    else {
        //  shrink the buffer to the string's size, as the string's free will count
        char *data = jinja_heap_realloc (heap, buffer->data, buffer->capacity, buffer->size + 1);
        if (!data) {
            jinja_heap_free (heap, value, sizeof (jinja_value_t));
            return NULL;
        }
        value->u.string.data = data;
        value->u.string.size = buffer->size;
        value->u.string.length = jinja_utf8_length (data, buffer->size);
    }
    value->u.string.safe = safe;
    buffer->data = NULL;
    buffer->size = buffer->capacity = 0;
    return value;
}

void
jinja_buffer_release (jinja_buffer_t *buffer)
{
    jinja_heap_free (buffer->heap, buffer->data, buffer->capacity);
    buffer->data = NULL;
    buffer->size = buffer->capacity = 0;
}

//  --- str() and repr() ----------------------------------------------------------------

void
jinja_format_float (double value, char *text, size_t size)
{
    if (isnan (value)) {
        snprintf (text, size, "nan");
        return;
    }
    if (isinf (value)) {
        snprintf (text, size, value < 0? "-inf": "inf");
        return;
    }
    //  Shortest digits that read back as the same double
    char scientific [40];
    for (int precision = 1; precision <= 17; precision++) {
        snprintf (scientific, sizeof (scientific), "%.*e", precision - 1, value);
        if (strtod (scientific, NULL) == value)
            break;
    }
    //  scientific is [-]d[.ddd]e[+-]xx: split into sign, digits and exponent
    bool negative = scientific [0] == '-';
    const char *cursor = scientific + (negative? 1: 0);
    char digits [24];
    size_t digit_count = 0;
    while (*cursor && *cursor != 'e') {
        if (*cursor != '.' && digit_count < sizeof (digits) - 1)
            digits [digit_count++] = *cursor;
        cursor++;
    }
    digits [digit_count] = 0;
    int exponent = *cursor == 'e'? atoi (cursor + 1): 0;
    //  strip trailing zeros (keep one digit)
    while (digit_count > 1 && digits [digit_count - 1] == '0')
        digits [--digit_count] = 0;

    char out [64];
    size_t used = 0;
    if (negative)
        out [used++] = '-';
    if (exponent >= -4 && exponent < 16) {
        //  fixed notation, as Python's repr for -4 <= exponent < 16
        if (exponent < 0) {
            out [used++] = '0';
            out [used++] = '.';
            for (int zero = 0; zero < -exponent - 1; zero++)
                out [used++] = '0';
            for (size_t index = 0; index < digit_count; index++)
                out [used++] = digits [index];
        }
        else {
            size_t integer_digits = (size_t) exponent + 1;
            for (size_t index = 0; index < integer_digits; index++)
                out [used++] = index < digit_count? digits [index]: '0';
            out [used++] = '.';
            if (digit_count > integer_digits)
                for (size_t index = integer_digits; index < digit_count; index++)
                    out [used++] = digits [index];
            else
                out [used++] = '0';
        }
        out [used] = 0;
    }
    else {
        out [used++] = digits [0];
        if (digit_count > 1) {
            out [used++] = '.';
            for (size_t index = 1; index < digit_count; index++)
                out [used++] = digits [index];
        }
        out [used] = 0;
        snprintf (out + used, sizeof (out) - used, "e%c%02d",
                  exponent < 0? '-': '+', exponent < 0? -exponent: exponent);
    }
    snprintf (text, size, "%s", out);
}

//  Python's str.isprintable() for one code point, for repr.
static bool
s_printable (uint32_t code)
{
    if (code < 0x20 || (code >= 0x7F && code <= 0xA0) || code == 0xAD)
        return false;
    if (code == 0x1680 || (code >= 0x2000 && code <= 0x200F) || (code >= 0x2028 && code <= 0x202F)
    ||  (code >= 0x205F && code <= 0x206F) || code == 0x3000 || code == 0xFEFF
    ||  (code >= 0xFFF9 && code <= 0xFFFB) || code == 0xFFFE || code == 0xFFFF
    ||  (code >= 0x600 && code <= 0x605) || code == 0x61C || code == 0x6DD || code == 0x70F
    ||  code == 0x180E)
        return false;
    if ((code >= 0xD800 && code <= 0xDFFF) || (code >= 0xE000 && code <= 0xF8FF)
    ||  code >= 0xF0000 || (code >= 0xE0000 && code <= 0xE0FFF))
        return false;
    return true;
}

static int
s_write_string_repr (jinja_buffer_t *out, const jinja_value_t *value)
{
    const char *data = value->u.string.data;
    size_t size = value->u.string.size;
    bool has_single = memchr (data, '\'', size) != NULL;
    bool has_double = memchr (data, '"', size) != NULL;
    char quote = has_single && !has_double? '"': '\'';
    if (value->u.string.safe && jinja_buffer_append_str (out, "Markup("))
        return -1;
    if (jinja_buffer_append (out, &quote, 1))
        return -1;
    size_t pos = 0;
    size_t run = 0;                 //  start of the bytes not yet written
    while (pos < size) {
        size_t start = pos;
        uint32_t code = jinja_utf8_next (data, size, &pos);
        char escape [16];
        escape [0] = 0;
        if (code == '\\')
            strcpy (escape, "\\\\");
        else
        if (code == (uint32_t) quote)
            snprintf (escape, sizeof (escape), "\\%c", quote);
        else
        if (code == '\n')
            strcpy (escape, "\\n");
        else
        if (code == '\r')
            strcpy (escape, "\\r");
        else
        if (code == '\t')
            strcpy (escape, "\\t");
        else
        if (!s_printable (code)) {
            if (code <= 0xFF)
                snprintf (escape, sizeof (escape), "\\x%02x", code);
            else
            if (code <= 0xFFFF)
                snprintf (escape, sizeof (escape), "\\u%04x", code);
            else
                snprintf (escape, sizeof (escape), "\\U%08x", code);
        }
        if (escape [0]) {
            if (jinja_buffer_append (out, data + run, start - run)
            ||  jinja_buffer_append_str (out, escape))
                return -1;
            run = pos;
        }
    }
    if (jinja_buffer_append (out, data + run, size - run)
    ||  jinja_buffer_append (out, &quote, 1))
        return -1;
    if (value->u.string.safe && jinja_buffer_append_str (out, ")"))
        return -1;
    return 0;
}

static int s_write_repr (jinja_buffer_t *out, const jinja_value_t *value, int depth);

static int
s_write_items_repr (jinja_buffer_t *out, const jinja_value_t *list, int depth)
{
    for (size_t index = 0; index < list->u.list.count; index++) {
        if (index && jinja_buffer_append (out, ", ", 2))
            return -1;
        if (s_write_repr (out, list->u.list.items [index], depth + 1))
            return -1;
    }
    return 0;
}

static int
s_write_repr (jinja_buffer_t *out, const jinja_value_t *value, int depth)
{
    if (depth > MAX_NESTING) {
        jinja_heap_fail (out->heap, "RecursionError",
                         "maximum recursion depth exceeded while getting the repr of an object");
        return -1;
    }
    char text [64];
    switch (value->type) {
        case JINJA_UNDEFINED:
            return jinja_buffer_append_str (out, "Undefined");
        case JINJA_NONE:
            return jinja_buffer_append_str (out, "None");
        case JINJA_BOOL:
            return jinja_buffer_append_str (out, value->u.boolean? "True": "False");
        case JINJA_INT:
            snprintf (text, sizeof (text), "%lld", (long long) value->u.integer);
            return jinja_buffer_append_str (out, text);
        case JINJA_FLOAT:
            jinja_format_float (value->u.number, text, sizeof (text));
            return jinja_buffer_append_str (out, text);
        case JINJA_STRING:
            return s_write_string_repr (out, value);
        case JINJA_LIST:
            switch (value->u.list.kind) {
                case JINJA_LIST_TUPLE:
                    if (jinja_buffer_append_str (out, "(")
                    ||  s_write_items_repr (out, value, depth))
                        return -1;
                    if (value->u.list.count == 1 && jinja_buffer_append_str (out, ","))
                        return -1;
                    return jinja_buffer_append_str (out, ")");
                case JINJA_LIST_GENERATOR:
                    return jinja_buffer_append_str (out, "<generator object at 0x0>");
                case JINJA_LIST_DICT_ITEMS:
                case JINJA_LIST_DICT_KEYS:
                case JINJA_LIST_DICT_VALUES:
                    if (jinja_buffer_append_str (out, jinja_value_type_name (value))
                    ||  jinja_buffer_append_str (out, "([")
                    ||  s_write_items_repr (out, value, depth))
                        return -1;
                    return jinja_buffer_append_str (out, "])");
                default:
                    if (jinja_buffer_append_str (out, "[")
                    ||  s_write_items_repr (out, value, depth))
                        return -1;
                    return jinja_buffer_append_str (out, "]");
            }
        case JINJA_DICT:
            if (jinja_buffer_append_str (out, "{"))
                return -1;
            for (size_t index = 0; index < value->u.dict.count; index++) {
                if (index && jinja_buffer_append (out, ", ", 2))
                    return -1;
                if (s_write_repr (out, value->u.dict.entries [index].key, depth + 1)
                ||  jinja_buffer_append (out, ": ", 2)
                ||  s_write_repr (out, value->u.dict.entries [index].value, depth + 1))
                    return -1;
            }
            return jinja_buffer_append_str (out, "}");
        case JINJA_NAMESPACE:
            if (jinja_buffer_append_str (out, "<Namespace ")
            ||  s_write_repr (out, value->u.namespace_.attrs, depth + 1))
                return -1;
            return jinja_buffer_append_str (out, ">");
        case JINJA_CALLABLE:
            if (value->u.callable.node)
                return jinja_buffer_printf (out, "<Macro '%s'>", value->u.callable.name);
            if (value->u.callable.self)
                return jinja_buffer_printf (out, "<built-in method %s of %s object at 0x0>",
                                            value->u.callable.name,
                                            jinja_value_type_name (value->u.callable.self));
            return jinja_buffer_printf (out, "<built-in function %s>", value->u.callable.name);
        case JINJA_LOOP:
            return jinja_buffer_printf (out, "<LoopContext %zu/%zu>", value->u.loop.index0 + 1,
                                        value->u.loop.items->u.list.count);
        case JINJA_SCOPE:
            return jinja_buffer_append_str (out, "<Scope>");
    }
    return 0;
}

int
jinja_value_write_repr (jinja_buffer_t *out, const jinja_value_t *value)
{
    return s_write_repr (out, value, 0);
}

int
jinja_value_write_str (jinja_buffer_t *out, const jinja_value_t *value)
{
    if (value->type == JINJA_STRING)
        return jinja_buffer_append (out, value->u.string.data, value->u.string.size);
    if (value->type == JINJA_UNDEFINED)
        return 0;
    return s_write_repr (out, value, 0);
}

jinja_value_t *
jinja_value_to_string (jinja_heap_t *heap, jinja_value_t *value)
{
    if (value->type == JINJA_STRING)
        return jinja_value_ref (value);
    jinja_buffer_t buffer;
    jinja_buffer_init (&buffer, heap, 0);
    if (jinja_value_write_str (&buffer, value)) {
        jinja_buffer_release (&buffer);
        return NULL;
    }
    return jinja_buffer_to_string (&buffer, false);
}

//  --- JSON -----------------------------------------------------------------------------

static int
s_write_json_string (jinja_buffer_t *out, const char *data, size_t size, bool ensure_ascii)
{
    if (jinja_buffer_append (out, "\"", 1))
        return -1;
    size_t pos = 0;
    size_t run = 0;
    while (pos < size) {
        size_t start = pos;
        unsigned char byte = (unsigned char) data [pos];
        char escape [16];
        escape [0] = 0;
        if (byte >= 0x80) {
            uint32_t code = jinja_utf8_next (data, size, &pos);
            if (ensure_ascii) {
                if (code >= 0x10000) {
                    uint32_t offset = code - 0x10000;
                    snprintf (escape, sizeof (escape), "\\u%04x\\u%04x",
                              0xD800 + (offset >> 10), 0xDC00 + (offset & 0x3FF));
                }
                else
                    snprintf (escape, sizeof (escape), "\\u%04x", code);
            }
        }
        else {
            pos++;
            if (byte == '"')
                strcpy (escape, "\\\"");
            else
            if (byte == '\\')
                strcpy (escape, "\\\\");
            else
            if (byte == '\n')
                strcpy (escape, "\\n");
            else
            if (byte == '\r')
                strcpy (escape, "\\r");
            else
            if (byte == '\t')
                strcpy (escape, "\\t");
            else
            if (byte == '\b')
                strcpy (escape, "\\b");
            else
            if (byte == '\f')
                strcpy (escape, "\\f");
            else
            if (byte < 0x20)
                snprintf (escape, sizeof (escape), "\\u%04x", byte);
        }
        if (escape [0]) {
            if (jinja_buffer_append (out, data + run, start - run)
            ||  jinja_buffer_append_str (out, escape))
                return -1;
            run = pos;
        }
    }
    if (jinja_buffer_append (out, data + run, size - run))
        return -1;
    return jinja_buffer_append (out, "\"", 1);
}

static int
s_write_json_newline (jinja_buffer_t *out, const jinja_json_options_t *options, int level)
{
    if (jinja_buffer_append (out, "\n", 1))
        return -1;
    for (int index = 0; index < level; index++)
        if (jinja_buffer_append_str (out, options->indent))
            return -1;
    return 0;
}

//  A dict key as json.dumps writes it, or -1 (TypeError) for keys it refuses.
static int
s_write_json_key (jinja_buffer_t *out, const jinja_value_t *key, bool ensure_ascii)
{
    char text [64];
    switch (key->type) {
        case JINJA_STRING:
            return s_write_json_string (out, key->u.string.data, key->u.string.size,
                                        ensure_ascii);
        case JINJA_INT:
            snprintf (text, sizeof (text), "%lld", (long long) key->u.integer);
            break;
        case JINJA_FLOAT:
            if (isnan (key->u.number))
                snprintf (text, sizeof (text), "NaN");
            else
            if (isinf (key->u.number))
                snprintf (text, sizeof (text), key->u.number < 0? "-Infinity": "Infinity");
            else
                jinja_format_float (key->u.number, text, sizeof (text));
            break;
        case JINJA_BOOL:
            snprintf (text, sizeof (text), key->u.boolean? "true": "false");
            break;
        case JINJA_NONE:
            snprintf (text, sizeof (text), "null");
            break;
        default:
            jinja_heap_fail (out->heap, "TypeError",
                             "keys must be str, int, float, bool or None, not %s",
                             jinja_value_type_name (key));
            return -1;
    }
    return s_write_json_string (out, text, strlen (text), false);
}

static int
s_write_json (jinja_buffer_t *out, const jinja_value_t *value,
              const jinja_json_options_t *options, int level)
{
    if (level > MAX_NESTING) {
        jinja_heap_fail (out->heap, "RecursionError",
                         "maximum recursion depth exceeded while encoding a JSON object");
        return -1;
    }
    const char *item_separator = options->item_separator? options->item_separator:
                                 options->indent? ",": ", ";
    const char *key_separator = options->key_separator? options->key_separator: ": ";
    char text [64];
    switch (value->type) {
        case JINJA_NONE:
            return jinja_buffer_append_str (out, "null");
        case JINJA_BOOL:
            return jinja_buffer_append_str (out, value->u.boolean? "true": "false");
        case JINJA_INT:
            snprintf (text, sizeof (text), "%lld", (long long) value->u.integer);
            return jinja_buffer_append_str (out, text);
        case JINJA_FLOAT:
            if (isnan (value->u.number))
                return jinja_buffer_append_str (out, "NaN");
            if (isinf (value->u.number))
                return jinja_buffer_append_str (out, value->u.number < 0? "-Infinity": "Infinity");
            jinja_format_float (value->u.number, text, sizeof (text));
            return jinja_buffer_append_str (out, text);
        case JINJA_STRING:
            return s_write_json_string (out, value->u.string.data, value->u.string.size,
                                        options->ensure_ascii);
        case JINJA_LIST:
            if (value->u.list.kind == JINJA_LIST_PLAIN || value->u.list.kind == JINJA_LIST_TUPLE) {
                if (value->u.list.count == 0)
                    return jinja_buffer_append_str (out, "[]");
                if (jinja_buffer_append_str (out, "["))
                    return -1;
                for (size_t index = 0; index < value->u.list.count; index++) {
                    if (index && jinja_buffer_append_str (out, item_separator))
                        return -1;
                    if (options->indent && s_write_json_newline (out, options, level + 1))
                        return -1;
                    if (s_write_json (out, value->u.list.items [index], options, level + 1))
                        return -1;
                }
                if (options->indent && s_write_json_newline (out, options, level))
                    return -1;
                return jinja_buffer_append_str (out, "]");
            }
            break;
        case JINJA_DICT: {
            if (value->u.dict.count == 0)
                return jinja_buffer_append_str (out, "{}");
            //  the order to write the entries in: insertion order, or sorted keys
            size_t count = value->u.dict.count;
            size_t *order = malloc (count * sizeof (size_t));
            if (!order) {
                jinja_heap_fail (out->heap, "MemoryError", "out of memory");
                return -1;
            }
            for (size_t index = 0; index < count; index++)
                order [index] = index;
            if (options->sort_keys) {
                //  insertion sort: stable, and dicts are small
                for (size_t index = 1; index < count; index++) {
                    size_t current = order [index];
                    size_t slot = index;
                    while (slot > 0) {
                        int result = 0;
                        if (jinja_value_compare (out->heap,
                                                 value->u.dict.entries [order [slot - 1]].key,
                                                 value->u.dict.entries [current].key,
                                                 "<", &result)) {
                            free (order);
                            return -1;
                        }
                        if (result <= 0)
                            break;
                        order [slot] = order [slot - 1];
                        slot--;
                    }
                    order [slot] = current;
                }
            }
            int rc = jinja_buffer_append_str (out, "{");
            for (size_t index = 0; rc == 0 && index < count; index++) {
                const jinja_dict_entry_t *entry = &value->u.dict.entries [order [index]];
                if (index)
                    rc = jinja_buffer_append_str (out, item_separator);
                if (rc == 0 && options->indent)
                    rc = s_write_json_newline (out, options, level + 1);
                if (rc == 0)
                    rc = s_write_json_key (out, entry->key, options->ensure_ascii);
                if (rc == 0)
                    rc = jinja_buffer_append_str (out, key_separator);
                if (rc == 0)
                    rc = s_write_json (out, entry->value, options, level + 1);
            }
            free (order);
            if (rc == 0 && options->indent)
                rc = s_write_json_newline (out, options, level);
            if (rc == 0)
                rc = jinja_buffer_append_str (out, "}");
            return rc;
        }
        default:
            break;
    }
    jinja_heap_fail (out->heap, "TypeError", "Object of type %s is not JSON serializable",
                     jinja_value_type_name (value));
    return -1;
}

int
jinja_value_write_json (jinja_buffer_t *out, const jinja_value_t *value,
                        const jinja_json_options_t *options)
{
    return s_write_json (out, value, options, 0);
}

static jinja_value_t *
s_from_json (jinja_heap_t *heap, const json_t *json, int depth)
{
    if (depth > MAX_NESTING)
        return jinja_heap_fail (heap, "ValueError", "JSON input is nested too deeply");
    switch (json_typeof (json)) {
        case JSON_NULL:
            return jinja_value_none ();
        case JSON_TRUE:
            return jinja_value_bool (true);
        case JSON_FALSE:
            return jinja_value_bool (false);
        case JSON_INTEGER:
            return jinja_value_new_int (heap, (int64_t) json_integer_value (json));
        case JSON_REAL:
            return jinja_value_new_float (heap, json_real_value (json));
        case JSON_STRING:
            return jinja_value_new_string (heap, json_string_value (json),
                                           json_string_length (json), false);
        case JSON_ARRAY: {
            jinja_value_t *list = jinja_value_new_list (heap, JINJA_LIST_PLAIN);
            if (!list)
                return NULL;
            size_t index;
            json_t *item;
            json_array_foreach (json, index, item) {
                jinja_value_t *value = s_from_json (heap, item, depth + 1);
                if (!value || jinja_list_push (list, value)) {
                    jinja_value_unref (&value);
                    jinja_value_unref (&list);
                    return NULL;
                }
                jinja_value_unref (&value);
            }
            return list;
        }
        case JSON_OBJECT: {
            jinja_value_t *dict = jinja_value_new_dict (heap);
            if (!dict)
                return NULL;
            const char *key;
            json_t *item;
            json_object_foreach ((json_t *) json, key, item) {
                jinja_value_t *key_value = jinja_value_new_cstring (heap, key);
                jinja_value_t *value = key_value? s_from_json (heap, item, depth + 1): NULL;
                if (!value || jinja_dict_set (dict, key_value, value)) {
                    jinja_value_unref (&key_value);
                    jinja_value_unref (&value);
                    jinja_value_unref (&dict);
                    return NULL;
                }
                jinja_value_unref (&key_value);
                jinja_value_unref (&value);
            }
            return dict;
        }
    }
    return jinja_value_none ();
}

jinja_value_t *
jinja_value_from_json (jinja_heap_t *heap, const json_t *json)
{
    return s_from_json (heap, json, 0);
}

//  --- UTF-8 ----------------------------------------------------------------------------

uint32_t
jinja_utf8_next (const char *text, size_t size, size_t *pos)
{
    const unsigned char *bytes = (const unsigned char *) text;
    size_t at = *pos;
    unsigned char lead = bytes [at];
    uint32_t code;
    size_t need;
    if (lead < 0x80) {
        *pos = at + 1;
        return lead;
    }
    if (lead >= 0xF0) {
        code = lead & 0x07;
        need = 3;
    }
    else
    if (lead >= 0xE0) {
        code = lead & 0x0F;
        need = 2;
    }
    else
    if (lead >= 0xC0) {
        code = lead & 0x1F;
        need = 1;
    }
    else {
        *pos = at + 1;              //  stray continuation byte: not in valid input
        return 0xFFFD;
    }
    at++;
    while (need-- && at < size && (bytes [at] & 0xC0) == 0x80)
        code = (code << 6) | (bytes [at++] & 0x3F);
    *pos = at;
    return code;
}

size_t
jinja_utf8_encode (uint32_t code, char *out)
{
    if (code < 0x80) {
        out [0] = (char) code;
        return 1;
    }
    if (code < 0x800) {
        out [0] = (char) (0xC0 | (code >> 6));
        out [1] = (char) (0x80 | (code & 0x3F));
        return 2;
    }
    if (code < 0x10000) {
        out [0] = (char) (0xE0 | (code >> 12));
        out [1] = (char) (0x80 | ((code >> 6) & 0x3F));
        out [2] = (char) (0x80 | (code & 0x3F));
        return 3;
    }
    out [0] = (char) (0xF0 | (code >> 18));
    out [1] = (char) (0x80 | ((code >> 12) & 0x3F));
    out [2] = (char) (0x80 | ((code >> 6) & 0x3F));
    out [3] = (char) (0x80 | (code & 0x3F));
    return 4;
}

size_t
jinja_utf8_length (const char *text, size_t size)
{
    size_t length = 0;
    for (size_t index = 0; index < size; index++)
        if (((unsigned char) text [index] & 0xC0) != 0x80)
            length++;
    return length;
}

bool
jinja_utf8_valid (const char *text, size_t size)
{
    const unsigned char *bytes = (const unsigned char *) text;
    size_t at = 0;
    while (at < size) {
        unsigned char lead = bytes [at];
        size_t need;
        uint32_t code;
        if (lead < 0x80) {
            at++;
            continue;
        }
        if (lead >= 0xC2 && lead <= 0xDF) {
            need = 1;
            code = lead & 0x1F;
        }
        else
        if (lead >= 0xE0 && lead <= 0xEF) {
            need = 2;
            code = lead & 0x0F;
        }
        else
        if (lead >= 0xF0 && lead <= 0xF4) {
            need = 3;
            code = lead & 0x07;
        }
        else
            return false;
        if (size - at <= need)
            return false;
        for (size_t index = 1; index <= need; index++) {
            if ((bytes [at + index] & 0xC0) != 0x80)
                return false;
            code = (code << 6) | (bytes [at + index] & 0x3F);
        }
        if ((need == 2 && code < 0x800) || (need == 3 && (code < 0x10000 || code > 0x10FFFF))
        ||  (code >= 0xD800 && code <= 0xDFFF))
            return false;
        at += need + 1;
    }
    return true;
}

size_t
jinja_utf8_offset (const jinja_value_t *string, size_t index)
{
    if (string->u.string.length == string->u.string.size)
        return index;               //  ASCII
    size_t pos = 0;
    size_t size = string->u.string.size;
    const char *data = string->u.string.data;
    while (index > 0 && pos < size) {
        pos++;
        while (pos < size && ((unsigned char) data [pos] & 0xC0) == 0x80)
            pos++;
        index--;
    }
    return pos;
}

//  --- Unicode character classes (the common scripts; Python knows them all) ------------

bool
jinja_unicode_is_space (uint32_t code)
{
    return (code >= 0x09 && code <= 0x0D) || (code >= 0x1C && code <= 0x20)
        || code == 0x85 || code == 0xA0 || code == 0x1680
        || (code >= 0x2000 && code <= 0x200A) || code == 0x2028 || code == 0x2029
        || code == 0x202F || code == 0x205F || code == 0x3000;
}

//  Pairs where the upper case is even and the lower case the next (odd) code point.
static bool
s_even_odd_pair (uint32_t code)
{
    return (code >= 0x100 && code <= 0x12F) || (code >= 0x132 && code <= 0x137)
        || (code >= 0x14A && code <= 0x177) || (code >= 0x182 && code <= 0x185)
        || (code >= 0x1A0 && code <= 0x1A5) || (code >= 0x1DE && code <= 0x1EF)
        || (code >= 0x1F8 && code <= 0x21F) || (code >= 0x222 && code <= 0x233)
        || (code >= 0x3D8 && code <= 0x3EF) || (code >= 0x460 && code <= 0x481)
        || (code >= 0x48A && code <= 0x4BF) || (code >= 0x4D0 && code <= 0x52F)
        || (code >= 0x1E00 && code <= 0x1E95) || (code >= 0x1EA0 && code <= 0x1EFF)
        || (code >= 0x2C80 && code <= 0x2CE3) || (code >= 0xA640 && code <= 0xA66D)
        || (code >= 0xA680 && code <= 0xA69B) || (code >= 0xA722 && code <= 0xA72F)
        || (code >= 0xA732 && code <= 0xA76F) || (code >= 0xA77E && code <= 0xA787);
}

//  Pairs where the upper case is odd and the lower case the next (even) code point.
static bool
s_odd_even_pair (uint32_t code)
{
    return (code >= 0x139 && code <= 0x148) || (code >= 0x179 && code <= 0x17E)
        || (code >= 0x4C1 && code <= 0x4CE) || (code >= 0x1CD && code <= 0x1DC);
}

uint32_t
jinja_unicode_upper (uint32_t code)
{
    if (code < 0x80)
        return code >= 'a' && code <= 'z'? code - 32: code;
    if (code == 0xB5)
        return 0x39C;
    if (code == 0xFF)
        return 0x178;
    if ((code >= 0xE0 && code <= 0xFE && code != 0xF7))
        return code - 32;
    if (code == 0x131)
        return 'I';
    if (code == 0x17F)
        return 'S';
    if (s_even_odd_pair (code & ~1u) && s_even_odd_pair (code) && (code & 1))
        return code - 1;
    if (s_odd_even_pair (code) && !(code & 1) && s_odd_even_pair (code - 1))
        return code - 1;
    if (code >= 0x3B1 && code <= 0x3C9 && code != 0x3C2)
        return code - 32;
    if (code == 0x3C2)
        return 0x3A3;
    if (code == 0x3AC)
        return 0x386;
    if (code >= 0x3AD && code <= 0x3AF)
        return code - 37;
    if (code == 0x3CC)
        return 0x38C;
    if (code == 0x3CD || code == 0x3CE)
        return code - 63;
    if (code >= 0x430 && code <= 0x44F)
        return code - 32;
    if (code >= 0x450 && code <= 0x45F)
        return code - 80;
    if (code >= 0x561 && code <= 0x586)
        return code - 48;
    if (code >= 0x10D0 && code <= 0x10FA)
        return code + 0x1C90 - 0x10D0;
    if (code >= 0x24D0 && code <= 0x24E9)
        return code - 26;
    if (code >= 0xFF41 && code <= 0xFF5A)
        return code - 32;
    return code;
}

uint32_t
jinja_unicode_lower (uint32_t code)
{
    if (code < 0x80)
        return code >= 'A' && code <= 'Z'? code + 32: code;
    if ((code >= 0xC0 && code <= 0xDE && code != 0xD7))
        return code + 32;
    if (code == 0x130)
        return 'i';
    if (code == 0x178)
        return 0xFF;
    if (s_even_odd_pair (code) && !(code & 1) && s_even_odd_pair (code + 1))
        return code + 1;
    if (s_odd_even_pair (code) && (code & 1) && s_odd_even_pair (code + 1))
        return code + 1;
    if (code >= 0x391 && code <= 0x3A9 && code != 0x3A2)
        return code + 32;
    if (code == 0x386)
        return 0x3AC;
    if (code >= 0x388 && code <= 0x38A)
        return code + 37;
    if (code == 0x38C)
        return 0x3CC;
    if (code == 0x38E || code == 0x38F)
        return code + 63;
    if (code >= 0x410 && code <= 0x42F)
        return code + 32;
    if (code >= 0x400 && code <= 0x40F)
        return code + 80;
    if (code >= 0x531 && code <= 0x556)
        return code + 48;
    if (code >= 0x1C90 && code <= 0x1CBA)
        return code - 0x1C90 + 0x10D0;
    if (code >= 0x24B6 && code <= 0x24CF)
        return code + 26;
    if (code >= 0xFF21 && code <= 0xFF3A)
        return code + 32;
    return code;
}

bool
jinja_unicode_is_upper (uint32_t code)
{
    return jinja_unicode_lower (code) != code;
}

bool
jinja_unicode_is_lower (uint32_t code)
{
    return jinja_unicode_upper (code) != code || code == 0xDF || code == 0x138
        || code == 0x149;
}

bool
jinja_unicode_is_alpha (uint32_t code)
{
    if (code < 0x80)
        return (code >= 'a' && code <= 'z') || (code >= 'A' && code <= 'Z');
    if (code == 0xAA || code == 0xB5 || code == 0xBA)
        return true;
    if (code >= 0xC0 && code <= 0x24F)
        return code != 0xD7 && code != 0xF7;
    if (jinja_unicode_is_upper (code) || jinja_unicode_is_lower (code))
        return true;
    return (code >= 0x5D0 && code <= 0x5EA) || (code >= 0x620 && code <= 0x64A)
        || (code >= 0x904 && code <= 0x939) || (code >= 0xE01 && code <= 0xE30)
        || (code >= 0x3041 && code <= 0x3096) || (code >= 0x30A1 && code <= 0x30FA)
        || (code >= 0x3400 && code <= 0x4DBF) || (code >= 0x4E00 && code <= 0x9FFF)
        || (code >= 0xAC00 && code <= 0xD7A3) || (code >= 0xF900 && code <= 0xFAFF)
        || (code >= 0x20000 && code <= 0x2FA1F);
}

bool
jinja_unicode_is_digit (uint32_t code)
{
    if (code < 0x80)
        return code >= '0' && code <= '9';
    return code == 0xB2 || code == 0xB3 || code == 0xB9
        || (code >= 0x660 && code <= 0x669) || (code >= 0x6F0 && code <= 0x6F9)
        || (code >= 0x966 && code <= 0x96F) || (code >= 0x2070 && code <= 0x2079 && code != 0x2071
                                                 && code != 0x2072 && code != 0x2073)
        || (code >= 0x2080 && code <= 0x2089) || (code >= 0xFF10 && code <= 0xFF19);
}
