/*  block_manager — the KV blocks of one worker (the contract is in block_manager.h).

    Everything is indexed by block id, 0 .. n_blocks-1:

    blocks        one block_t per block: its reference count (the tables that list it)
                  and, while it is registered in the prefix cache, its place in the
                  cache: the block before it, its hash, its links in the lookup, in its
                  parent's list of children and in the LRU list.
    tokens        n_blocks * block_size token ids, only with prefix caching: the tokens
                  of each registered block, so that a match compares real tokens.
    free_stack    blocks that hold nothing anyone wants (reference count 0, not
                  registered). A stack: the block released last is taken first.
    lru_head/tail a doubly linked list (lru_prev, lru_next) of the registered blocks
                  that no table holds, least recently used at the head. They count as
                  free (block_manager_n_free) but keep their contents until evicted.
    buckets       the lookup: a chained hash table (hash_next) from a block's hash to
                  the registered blocks with that hash, with at least one bucket per
                  block, so a chain is O(1) long expected.

    Every block is in exactly one of three places:
        held      ref > 0, registered or not; neither on free_stack nor in the LRU list
        cached    ref == 0 and registered: in the LRU list (and the lookup)
        free      ref == 0 and not registered: on free_stack
    Taking a block pops free_stack; when that is empty, it evicts the LRU head.

    The prefix cache is a forest. A registered block holds one full block's tokens and
    names `prev`, the registered block that held the block before it in the sequence it
    was computed in (NONE for a sequence's first block); `hash` is s_hash (prev's hash,
    or a seed for NONE, and the tokens), so the hashes of a prompt's blocks can be
    computed one after the other while walking it. Block i of a prompt matches a
    registered block B when B's tokens are the prompt's block i and B's prev is the
    block matched for block i-1 (NONE for i = 0). By induction a match holds exactly
    the prompt's tokens, computed after exactly the prompt's earlier tokens. No two
    registered blocks have the same prev and tokens.

    The induction needs one more rule: when a block leaves the cache (evicted, or
    written into), every registered block after it (its children, and theirs) leaves
    too. Otherwise its id, taken again for other tokens and registered again, would
    leave the old children naming it as prev: only their hash (chained from the old
    tokens) would keep them from matching after the new tokens, and a 64-bit collision
    would be a wrong match. With the rule, a match never depends on a hash. Those
    children are almost always cached (a table that holds a registered block holds the
    one before it, unless it wrote into that one and took a copy) and become free; a
    held one simply stays held, unregistered. s_unregister_tree does this without
    recursion, leaves first.

    Tables release their blocks last first: the end of a chain becomes less recently
    used than its start, so it is evicted first and the start stays matchable.

    Registering (block_manager_commit) goes in order from table->n_committed and stops
    at the first full block it cannot register: one whose identical twin (same prev,
    same tokens) is registered already. Registering the blocks after it would be
    useless, since their prev would be an unregistered block that no match can reach.
    table->n_committed stays there and the next commit tries that block again (it
    succeeds once the twin is evicted). Invariant: a table's blocks below n_committed
    are registered, each one's prev the block before it in the table (grow lowers
    n_committed to the first block it writes into).
*/
#include "block_manager.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  No block: the end of a list, or the prev of a sequence's first block.
#define BLOCK_NONE UINT32_MAX

//  The hash "before" a sequence's first block.
static const uint64_t s_hash_seed = 0x7a6c6c6d2d6b7621ULL;

typedef struct {
    uint32_t ref;                   //  tables that list this block
    bool registered;                //  in the prefix cache (lookup, parent's children)
    uint32_t prev;                  //  registered: the block before, or BLOCK_NONE
    uint64_t hash;                  //  registered: s_hash (prev's hash, tokens)
    uint32_t hash_next;             //  registered: next block in the same bucket
    uint32_t first_child;           //  registered: first registered block whose prev
    uint32_t next_sibling;          //  is this one, and the links between those
    uint32_t prev_sibling;
    uint32_t lru_prev;              //  cached: neighbours in the LRU list
    uint32_t lru_next;
} block_t;

struct _block_manager_t {
    uint32_t n_blocks;
    uint32_t block_size;
    bool prefix_caching;
    block_t *blocks;                //  n_blocks
    uint32_t *tokens;               //  n_blocks * block_size, or NULL without caching
    uint32_t *free_stack;           //  n_blocks slots
    uint32_t n_free_stack;
    uint32_t lru_head;              //  least recently used cached block
    uint32_t lru_tail;              //  most recently used cached block
    uint32_t n_lru;
    uint32_t *buckets;              //  n_buckets heads, a power of two
    uint32_t n_buckets;
    uint32_t n_registered;
    uint64_t queries;               //  prefix-cache blocks asked for
    uint64_t hits;                  //  and found
};


//  --------------------------------------------------------------------------
//  Hashing and the lookup

//  A block's hash from the hash of the block before it and its tokens. Only spreads
//  blocks over buckets: a match always compares tokens and prev.
static uint64_t
s_hash (uint64_t prev_hash, const uint32_t *tokens, uint32_t n_tokens)
{
    uint64_t h = prev_hash;
    for (uint32_t i = 0; i < n_tokens; i++) {
        h ^= tokens [i];
        h *= 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
    }
    //  splitmix64's finalizer
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBULL;
    h ^= h >> 31;
    return h;
}

static uint32_t *
s_tokens_of (const block_manager_t *self, uint32_t block)
{
    return self->tokens + (size_t) block * self->block_size;
}

//  The registered block with this hash, prev and tokens, or BLOCK_NONE.
static uint32_t
s_lookup (const block_manager_t *self, uint64_t hash, uint32_t prev, const uint32_t *tokens)
{
    uint32_t b = self->buckets [hash & (self->n_buckets - 1)];
    while (b != BLOCK_NONE) {
        const block_t *block = &self->blocks [b];
        if (block->hash == hash && block->prev == prev
        &&  memcmp (s_tokens_of (self, b), tokens,
                    self->block_size * sizeof (uint32_t)) == 0)
            return b;
        b = block->hash_next;
    }
    return BLOCK_NONE;
}


//  --------------------------------------------------------------------------
//  The LRU list and the free stack

//  Append a cached block at the most recently used end.
static void
s_lru_push (block_manager_t *self, uint32_t b)
{
    block_t *block = &self->blocks [b];
    block->lru_prev = self->lru_tail;
    block->lru_next = BLOCK_NONE;
    if (self->lru_tail == BLOCK_NONE)
        self->lru_head = b;
    else
        self->blocks [self->lru_tail].lru_next = b;
    self->lru_tail = b;
    self->n_lru++;
}

static void
s_lru_remove (block_manager_t *self, uint32_t b)
{
    block_t *block = &self->blocks [b];
    if (block->lru_prev == BLOCK_NONE)
        self->lru_head = block->lru_next;
    else
        self->blocks [block->lru_prev].lru_next = block->lru_next;
    if (block->lru_next == BLOCK_NONE)
        self->lru_tail = block->lru_prev;
    else
        self->blocks [block->lru_next].lru_prev = block->lru_prev;
    block->lru_prev = BLOCK_NONE;
    block->lru_next = BLOCK_NONE;
    self->n_lru--;
}


//  --------------------------------------------------------------------------
//  Registering and unregistering

//  Register block b (held, not registered) under prev (registered, or BLOCK_NONE),
//  with this hash and these tokens.
static void
s_register (block_manager_t *self, uint32_t b, uint32_t prev, uint64_t hash,
            const uint32_t *tokens)
{
    block_t *block = &self->blocks [b];
    memcpy (s_tokens_of (self, b), tokens, self->block_size * sizeof (uint32_t));
    block->registered = true;
    block->prev = prev;
    block->hash = hash;
    block->first_child = BLOCK_NONE;

    uint32_t bucket = (uint32_t) (hash & (self->n_buckets - 1));
    block->hash_next = self->buckets [bucket];
    self->buckets [bucket] = b;

    block->prev_sibling = BLOCK_NONE;
    block->next_sibling = BLOCK_NONE;
    if (prev != BLOCK_NONE) {
        block_t *parent = &self->blocks [prev];
        block->next_sibling = parent->first_child;
        if (parent->first_child != BLOCK_NONE)
            self->blocks [parent->first_child].prev_sibling = b;
        parent->first_child = b;
    }
    self->n_registered++;
}

//  Take block b, registered and with no registered children, out of the cache. If no
//  table holds it, it moves from the LRU list to the free stack.
static void
s_unregister_leaf (block_manager_t *self, uint32_t b)
{
    block_t *block = &self->blocks [b];

    //  Out of its bucket (expected O(1) long)
    uint32_t bucket = (uint32_t) (block->hash & (self->n_buckets - 1));
    if (self->buckets [bucket] == b)
        self->buckets [bucket] = block->hash_next;
    else {
        uint32_t at = self->buckets [bucket];
        while (self->blocks [at].hash_next != b)
            at = self->blocks [at].hash_next;
        self->blocks [at].hash_next = block->hash_next;
    }
    //  Out of its parent's children
    if (block->prev_sibling != BLOCK_NONE)
        self->blocks [block->prev_sibling].next_sibling = block->next_sibling;
    else
    if (block->prev != BLOCK_NONE)
        self->blocks [block->prev].first_child = block->next_sibling;
    if (block->next_sibling != BLOCK_NONE)
        self->blocks [block->next_sibling].prev_sibling = block->prev_sibling;

    block->registered = false;
    block->prev = BLOCK_NONE;
    block->hash_next = BLOCK_NONE;
    block->next_sibling = BLOCK_NONE;
    block->prev_sibling = BLOCK_NONE;
    self->n_registered--;

    if (block->ref == 0) {
        s_lru_remove (self, b);
        self->free_stack [self->n_free_stack++] = b;
    }
}

//  Take registered block root and every registered block after it out of the cache:
//  go down to a leaf, unregister it, go back up to its parent, until root is done.
static void
s_unregister_tree (block_manager_t *self, uint32_t root)
{
    uint32_t b = root;
    while (true) {
        while (self->blocks [b].first_child != BLOCK_NONE)
            b = self->blocks [b].first_child;
        uint32_t parent = self->blocks [b].prev;
        s_unregister_leaf (self, b);
        if (b == root)
            break;
        b = parent;
    }
}


//  --------------------------------------------------------------------------
//  Taking and releasing blocks

//  Take a block that no table holds (there must be one) and hold it once.
static uint32_t
s_take (block_manager_t *self)
{
    if (self->n_free_stack == 0)
        //  Evict the least recently used cached block (and what was registered after
        //  it): they all go to the free stack, the evicted block last.
        s_unregister_tree (self, self->lru_head);
    uint32_t b = self->free_stack [--self->n_free_stack];
    self->blocks [b].ref = 1;
    return b;
}

static void
s_release (block_manager_t *self, uint32_t b)
{
    block_t *block = &self->blocks [b];
    block->ref--;
    if (block->ref == 0) {
        if (block->registered)
            s_lru_push (self, b);
        else
            self->free_stack [self->n_free_stack++] = b;
    }
}

//  Make table's array hold at least n_blocks ids. Returns 0, or -1 when out of memory
//  (the table unchanged).
static int
s_table_reserve (block_table_t *table, uint32_t n_blocks)
{
    if (table->capacity >= n_blocks)
        return 0;
    uint64_t capacity = (uint64_t) table->capacity * 2;
    if (capacity < 8)
        capacity = 8;
    if (capacity < n_blocks)
        capacity = n_blocks;
    if (capacity > UINT32_MAX)
        capacity = UINT32_MAX;
    uint32_t *blocks = (uint32_t *) realloc (table->blocks, (size_t) capacity * sizeof (uint32_t));
    if (!blocks)
        return -1;
    table->blocks = blocks;
    table->capacity = (uint32_t) capacity;
    return 0;
}

//  Blocks needed to hold n_positions positions.
static uint32_t
s_blocks_for (const block_manager_t *self, uint32_t n_positions)
{
    return n_positions / self->block_size + (n_positions % self->block_size != 0);
}

//  The table's blocks [*lo, *hi) that writing positions first_write .. n_positions-1
//  touches (an empty range when there are no writes or they are all past its blocks).
static void
s_touched (const block_manager_t *self, const block_table_t *table,
           uint32_t first_write, uint32_t n_positions, uint32_t *lo, uint32_t *hi)
{
    *lo = 0;
    *hi = 0;
    if (first_write >= n_positions)
        return;
    uint32_t first = first_write / self->block_size;
    uint32_t end = s_blocks_for (self, n_positions);
    if (end > table->n_blocks)
        end = table->n_blocks;
    if (first < end) {
        *lo = first;
        *hi = end;
    }
}

//  Blocks that block_manager_grow takes: new ones past the table's end, and one copy
//  for each touched block that another table also holds (the copies in *n_cow).
static uint64_t
s_needed (const block_manager_t *self, const block_table_t *table,
          uint32_t first_write, uint32_t n_positions, uint32_t *n_cow)
{
    uint32_t want = s_blocks_for (self, n_positions);
    uint64_t n_new = want > table->n_blocks? want - table->n_blocks: 0;
    uint32_t lo, hi;
    s_touched (self, table, first_write, n_positions, &lo, &hi);
    *n_cow = 0;
    for (uint32_t i = lo; i < hi; i++)
        if (self->blocks [table->blocks [i]].ref > 1)
            (*n_cow)++;
    return n_new + *n_cow;
}


//  --------------------------------------------------------------------------
//  The manager

block_manager_t *
block_manager_new (uint32_t n_blocks, uint32_t block_size, bool prefix_caching)
{
    if (n_blocks == 0 || block_size == 0)
        return NULL;
    block_manager_t *self = (block_manager_t *) calloc (1, sizeof (block_manager_t));
    if (!self)
        return NULL;
    self->n_blocks = n_blocks;
    self->block_size = block_size;
    self->prefix_caching = prefix_caching;
    self->lru_head = BLOCK_NONE;
    self->lru_tail = BLOCK_NONE;

    //  At least one bucket per block: the lookup never holds more than n_blocks.
    uint64_t n_buckets = 1;
    while (n_buckets < n_blocks && n_buckets < (1ULL << 31))
        n_buckets *= 2;
    self->n_buckets = prefix_caching? (uint32_t) n_buckets: 1;

    self->blocks = (block_t *) calloc (n_blocks, sizeof (block_t));
    self->free_stack = (uint32_t *) malloc ((size_t) n_blocks * sizeof (uint32_t));
    self->buckets = (uint32_t *) malloc ((size_t) self->n_buckets * sizeof (uint32_t));
    if (prefix_caching) {
        if ((size_t) n_blocks > SIZE_MAX / sizeof (uint32_t) / block_size) {
            block_manager_destroy (&self);
            return NULL;
        }
        self->tokens = (uint32_t *) malloc ((size_t) n_blocks * block_size * sizeof (uint32_t));
    }
    if (!self->blocks || !self->free_stack || !self->buckets
    ||  (prefix_caching && !self->tokens)) {
        block_manager_destroy (&self);
        return NULL;
    }
    for (uint32_t j = 0; j < self->n_buckets; j++)
        self->buckets [j] = BLOCK_NONE;
    for (uint32_t b = 0; b < n_blocks; b++) {
        block_t *block = &self->blocks [b];
        block->prev = BLOCK_NONE;
        block->hash_next = BLOCK_NONE;
        block->first_child = BLOCK_NONE;
        block->next_sibling = BLOCK_NONE;
        block->prev_sibling = BLOCK_NONE;
        block->lru_prev = BLOCK_NONE;
        block->lru_next = BLOCK_NONE;
        //  Stacked so that blocks are first taken in order 0, 1, 2, ...
        self->free_stack [b] = n_blocks - 1 - b;
    }
    self->n_free_stack = n_blocks;
    return self;
}

void
block_manager_destroy (block_manager_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    block_manager_t *self = *self_p;
    free (self->blocks);
    free (self->tokens);
    free (self->free_stack);
    free (self->buckets);
    free (self);
    *self_p = NULL;
}

uint32_t
block_manager_n_blocks (const block_manager_t *self)
{
    return self->n_blocks;
}

uint32_t
block_manager_block_size (const block_manager_t *self)
{
    return self->block_size;
}

uint32_t
block_manager_n_free (const block_manager_t *self)
{
    return self->n_free_stack + self->n_lru;
}

uint32_t
block_manager_n_used (const block_manager_t *self)
{
    return self->n_blocks - self->n_free_stack - self->n_lru;
}

//  How many blocks a prefix match may take at most: the full blocks of the first
//  min (n_tokens, max_tokens) tokens, no more than are registered; 0 when prefix caching
//  is off or there are no tokens.
static uint32_t
s_prefix_limit (const block_manager_t *self, const uint32_t *tokens, uint32_t n_tokens,
                uint32_t max_tokens)
{
    if (!self->prefix_caching || !tokens)
        return 0;
    uint32_t limit = (n_tokens < max_tokens? n_tokens: max_tokens) / self->block_size;
    return limit < self->n_registered? limit: self->n_registered;
}

//  Walk tokens block by block down the chain of registered blocks, at most limit
//  blocks. Returns how many match in a row; their ids go to blocks (when not NULL,
//  with room for limit), and how many of them no table holds to *n_unheld (when not
//  NULL). Changes nothing.
static uint32_t
s_walk_prefix (const block_manager_t *self, const uint32_t *tokens, uint32_t limit,
               uint32_t *blocks, uint32_t *n_unheld)
{
    uint32_t bs = self->block_size;
    uint32_t n_matched = 0;
    uint32_t prev = BLOCK_NONE;
    uint64_t prev_hash = s_hash_seed;
    if (n_unheld)
        *n_unheld = 0;
    while (n_matched < limit) {
        const uint32_t *block_tokens = tokens + (size_t) n_matched * bs;
        uint64_t hash = s_hash (prev_hash, block_tokens, bs);
        uint32_t b = s_lookup (self, hash, prev, block_tokens);
        if (b == BLOCK_NONE)
            break;
        if (blocks)
            blocks [n_matched] = b;
        if (n_unheld && self->blocks [b].ref == 0)
            (*n_unheld)++;
        n_matched++;
        prev = b;
        prev_hash = hash;
    }
    return n_matched;
}

uint32_t
block_manager_match_prefix (block_manager_t *self, block_table_t *table,
                            const uint32_t *tokens, uint32_t n_tokens, uint32_t max_tokens)
{
    if (!self || !table || table->n_blocks > 0)
        return 0;
    uint32_t limit = s_prefix_limit (self, tokens, n_tokens, max_tokens);
    if (limit == 0 || s_table_reserve (table, limit) != 0)
        return 0;
    uint32_t n_matched = s_walk_prefix (self, tokens, limit, table->blocks, NULL);
    //  Hold them: a cached one leaves the LRU list (it goes back, most recently used,
    //  when released).
    for (uint32_t i = 0; i < n_matched; i++) {
        uint32_t b = table->blocks [i];
        if (self->blocks [b].ref == 0)
            s_lru_remove (self, b);
        self->blocks [b].ref++;
    }
    table->n_blocks = n_matched;
    table->n_committed = n_matched;
    return n_matched * self->block_size;
}

uint32_t
block_manager_cached_prefix (const block_manager_t *self, const uint32_t *tokens,
                             uint32_t n_tokens, uint32_t max_tokens, uint32_t *n_unheld)
{
    if (n_unheld)
        *n_unheld = 0;
    if (!self)
        return 0;
    uint32_t limit = s_prefix_limit (self, tokens, n_tokens, max_tokens);
    if (limit == 0)
        return 0;
    return s_walk_prefix (self, tokens, limit, NULL, n_unheld) * self->block_size;
}

void
block_manager_count_prefix_query (block_manager_t *self, uint32_t n_tokens,
                                  uint32_t n_cached)
{
    if (!self || !self->prefix_caching)
        return;
    self->queries += n_tokens / self->block_size;
    self->hits += n_cached / self->block_size;
}

uint32_t
block_manager_blocks_needed (const block_manager_t *self, const block_table_t *table,
                             uint32_t first_write, uint32_t n_positions)
{
    uint32_t n_cow;
    uint64_t needed = s_needed (self, table, first_write, n_positions, &n_cow);
    return needed > UINT32_MAX? UINT32_MAX: (uint32_t) needed;
}

int
block_manager_grow (block_manager_t *self, block_table_t *table, uint32_t first_write,
                    uint32_t n_positions, block_copy_t *copies, uint32_t *n_copies)
{
    if (!self || !table || !n_copies)
        return -1;
    //  Everything that can fail, first.
    uint32_t n_cow;
    uint64_t needed = s_needed (self, table, first_write, n_positions, &n_cow);
    if (needed > block_manager_n_free (self))
        return -1;
    if (n_cow > 0 && !copies)
        return -1;
    uint32_t want = s_blocks_for (self, n_positions);
    if (s_table_reserve (table, want) != 0)
        return -1;

    //  The blocks the writes touch: a shared one is replaced by a copy of its own; one
    //  this table alone holds is written in place, so leaves the prefix cache.
    uint32_t lo, hi;
    s_touched (self, table, first_write, n_positions, &lo, &hi);
    if (lo < hi && table->n_committed > lo)
        table->n_committed = lo;
    for (uint32_t i = lo; i < hi; i++) {
        uint32_t b = table->blocks [i];
        if (self->blocks [b].ref > 1) {
            uint32_t copy = s_take (self);
            self->blocks [b].ref--;
            table->blocks [i] = copy;
            copies [*n_copies].src = b;
            copies [*n_copies].dst = copy;
            (*n_copies)++;
        }
        else
        if (self->blocks [b].registered)
            s_unregister_tree (self, b);
    }
    //  New blocks at the end
    while (table->n_blocks < want)
        table->blocks [table->n_blocks++] = s_take (self);
    return 0;
}

void
block_manager_commit (block_manager_t *self, block_table_t *table,
                      const uint32_t *tokens, uint32_t n_tokens)
{
    if (!self || !table || !tokens || !self->prefix_caching)
        return;
    uint32_t bs = self->block_size;
    uint32_t n_full = n_tokens / bs;
    if (n_full > table->n_blocks)
        n_full = table->n_blocks;

    while (table->n_committed < n_full) {
        uint32_t i = table->n_committed;
        uint32_t b = table->blocks [i];
        const uint32_t *block_tokens = tokens + (size_t) i * bs;
        uint32_t prev = BLOCK_NONE;
        uint64_t prev_hash = s_hash_seed;
        if (i > 0) {
            prev = table->blocks [i - 1];
            if (!self->blocks [prev].registered)
                break;              //  cannot happen while the invariant holds
            prev_hash = self->blocks [prev].hash;
        }
        block_t *block = &self->blocks [b];
        if (block->registered) {
            //  Registered by a table that shares it (fork): it must be this chain's.
            if (block->prev != prev
            ||  memcmp (s_tokens_of (self, b), block_tokens, bs * sizeof (uint32_t)) != 0)
                break;
        }
        else {
            uint64_t hash = s_hash (prev_hash, block_tokens, bs);
            if (s_lookup (self, hash, prev, block_tokens) != BLOCK_NONE)
                break;              //  its twin is registered: stop here
            s_register (self, b, prev, hash, block_tokens);
        }
        table->n_committed++;
    }
}

int
block_manager_fork (block_manager_t *self, const block_table_t *src, block_table_t *dst)
{
    if (!self || !src || !dst || dst->n_blocks > 0)
        return -1;
    if (s_table_reserve (dst, src->n_blocks) != 0)
        return -1;
    for (uint32_t i = 0; i < src->n_blocks; i++) {
        dst->blocks [i] = src->blocks [i];
        self->blocks [src->blocks [i]].ref++;
    }
    dst->n_blocks = src->n_blocks;
    dst->n_committed = src->n_committed;
    return 0;
}

void
block_manager_free (block_manager_t *self, block_table_t *table)
{
    if (!self || !table)
        return;
    //  Last block first: see the header comment.
    for (uint32_t i = table->n_blocks; i > 0; i--)
        s_release (self, table->blocks [i - 1]);
    free (table->blocks);
    table->blocks = NULL;
    table->n_blocks = 0;
    table->capacity = 0;
    table->n_committed = 0;
}

void
block_manager_prefix_stats (const block_manager_t *self, uint64_t *queries, uint64_t *hits)
{
    if (queries)
        *queries = self->queries;
    if (hits)
        *hits = self->hits;
}


//  --------------------------------------------------------------------------
//  Checking

static int
s_fail (char *err, size_t err_size, const char *format, ...)
{
    if (err && err_size > 0) {
        va_list args;
        va_start (args, format);
        vsnprintf (err, err_size, format, args);
        va_end (args);
    }
    return -1;
}

//  Where check found each block
#define FOUND_FREE_STACK 1
#define FOUND_LRU 2
#define FOUND_LOOKUP 4

static int
s_check (const block_manager_t *self, const uint32_t *expected_refs, uint8_t *found,
         char *err, size_t err_size)
{
    uint32_t n = self->n_blocks;

    //  The free stack: blocks held by none and not registered, each once.
    if (self->n_free_stack > n)
        return s_fail (err, err_size, "free stack holds %u > %u blocks", self->n_free_stack, n);
    for (uint32_t i = 0; i < self->n_free_stack; i++) {
        uint32_t b = self->free_stack [i];
        if (b >= n)
            return s_fail (err, err_size, "free stack [%u] = %u: no such block", i, b);
        if (found [b] & FOUND_FREE_STACK)
            return s_fail (err, err_size, "block %u twice on the free stack", b);
        found [b] |= FOUND_FREE_STACK;
        if (self->blocks [b].ref != 0 || self->blocks [b].registered)
            return s_fail (err, err_size, "block %u on the free stack is held (%u) or registered",
                           b, self->blocks [b].ref);
    }

    //  The LRU list: registered blocks held by none, each once, links both ways.
    uint32_t n_lru = 0;
    uint32_t before = BLOCK_NONE;
    for (uint32_t b = self->lru_head; b != BLOCK_NONE; b = self->blocks [b].lru_next) {
        if (b >= n || n_lru >= n)
            return s_fail (err, err_size, "LRU list broken at %u (after %u blocks)", b, n_lru);
        if (found [b] & FOUND_LRU)
            return s_fail (err, err_size, "block %u twice in the LRU list", b);
        found [b] |= FOUND_LRU;
        if (self->blocks [b].lru_prev != before)
            return s_fail (err, err_size, "block %u in the LRU list: lru_prev %u, not %u",
                           b, self->blocks [b].lru_prev, before);
        if (self->blocks [b].ref != 0 || !self->blocks [b].registered)
            return s_fail (err, err_size, "block %u in the LRU list is held (%u) or not registered",
                           b, self->blocks [b].ref);
        before = b;
        n_lru++;
    }
    if (self->lru_tail != before)
        return s_fail (err, err_size, "LRU tail %u, but the list ends at %u", self->lru_tail, before);
    if (n_lru != self->n_lru)
        return s_fail (err, err_size, "LRU list holds %u blocks, counted %u", n_lru, self->n_lru);

    //  The lookup: registered blocks, each once, in the bucket of its hash.
    uint32_t n_lookup = 0;
    for (uint32_t j = 0; j < self->n_buckets; j++) {
        for (uint32_t b = self->buckets [j]; b != BLOCK_NONE; b = self->blocks [b].hash_next) {
            if (b >= n || n_lookup >= n)
                return s_fail (err, err_size, "bucket %u broken at %u", j, b);
            if (found [b] & FOUND_LOOKUP)
                return s_fail (err, err_size, "block %u twice in the lookup", b);
            found [b] |= FOUND_LOOKUP;
            if (!self->blocks [b].registered)
                return s_fail (err, err_size, "block %u in the lookup is not registered", b);
            if ((self->blocks [b].hash & (self->n_buckets - 1)) != j)
                return s_fail (err, err_size, "block %u in bucket %u, not its hash's", b, j);
            n_lookup++;
        }
    }

    //  Each block
    uint32_t n_held = 0;
    uint32_t n_registered = 0;
    uint32_t n_with_prev = 0;
    uint32_t n_children = 0;
    for (uint32_t b = 0; b < n; b++) {
        const block_t *block = &self->blocks [b];
        if (expected_refs && block->ref != expected_refs [b])
            return s_fail (err, err_size, "block %u held %u times, expected %u",
                           b, block->ref, expected_refs [b]);
        uint8_t places = found [b] & (FOUND_FREE_STACK | FOUND_LRU);
        if (block->ref > 0) {
            n_held++;
            if (places != 0)
                return s_fail (err, err_size, "held block %u is also free (%s)", b,
                               places == FOUND_LRU? "LRU list": "free stack");
        }
        else
        if (block->registered) {
            if (places != FOUND_LRU)
                return s_fail (err, err_size, "cached block %u is not (only) in the LRU list", b);
        }
        else
        if (places != FOUND_FREE_STACK)
            return s_fail (err, err_size, "free block %u is not (only) on the free stack", b);

        if (!block->registered) {
            if (found [b] & FOUND_LOOKUP)
                return s_fail (err, err_size, "unregistered block %u is in the lookup", b);
            if (block->first_child != BLOCK_NONE)
                return s_fail (err, err_size, "unregistered block %u has children", b);
            continue;
        }
        n_registered++;
        if (!self->prefix_caching)
            return s_fail (err, err_size, "block %u registered with prefix caching off", b);
        if (!(found [b] & FOUND_LOOKUP))
            return s_fail (err, err_size, "registered block %u is not in the lookup", b);

        //  Its chain: prev registered, hash from prev's
        uint64_t prev_hash = s_hash_seed;
        if (block->prev != BLOCK_NONE) {
            if (block->prev >= n || !self->blocks [block->prev].registered)
                return s_fail (err, err_size, "registered block %u follows block %u, not registered",
                               b, block->prev);
            prev_hash = self->blocks [block->prev].hash;
            n_with_prev++;
        }
        if (s_hash (prev_hash, s_tokens_of (self, b), self->block_size) != block->hash)
            return s_fail (err, err_size, "registered block %u: wrong hash", b);

        //  No twin (another registered block with its prev and tokens)
        for (uint32_t c = self->buckets [block->hash & (self->n_buckets - 1)];
             c != BLOCK_NONE; c = self->blocks [c].hash_next)
            if (c != b && self->blocks [c].hash == block->hash
            &&  self->blocks [c].prev == block->prev
            &&  memcmp (s_tokens_of (self, c), s_tokens_of (self, b),
                        self->block_size * sizeof (uint32_t)) == 0)
                return s_fail (err, err_size, "registered blocks %u and %u are identical", c, b);

        //  Its children all name it as prev, and link both ways
        uint32_t n_its = 0;
        uint32_t sibling_before = BLOCK_NONE;
        for (uint32_t c = block->first_child; c != BLOCK_NONE;
             c = self->blocks [c].next_sibling) {
            if (c >= n || n_its >= n)
                return s_fail (err, err_size, "children of block %u broken at %u", b, c);
            if (!self->blocks [c].registered || self->blocks [c].prev != b)
                return s_fail (err, err_size, "block %u listed as a child of %u", c, b);
            if (self->blocks [c].prev_sibling != sibling_before)
                return s_fail (err, err_size, "block %u: prev_sibling %u, not %u",
                               c, self->blocks [c].prev_sibling, sibling_before);
            sibling_before = c;
            n_its++;
        }
        n_children += n_its;
    }
    if (n_registered != self->n_registered || n_lookup != n_registered)
        return s_fail (err, err_size, "%u blocks registered, %u in the lookup, counted %u",
                       n_registered, n_lookup, self->n_registered);
    if (n_children != n_with_prev)
        return s_fail (err, err_size, "%u registered blocks follow another, %u listed as children",
                       n_with_prev, n_children);
    if (self->n_free_stack + self->n_lru + n_held != n)
        return s_fail (err, err_size, "%u free + %u cached + %u held != %u blocks",
                       self->n_free_stack, self->n_lru, n_held, n);
    return 0;
}

int
block_manager_check (const block_manager_t *self, const uint32_t *expected_refs,
                     char *err, size_t err_size)
{
    if (!self)
        return s_fail (err, err_size, "no block manager");
    uint8_t *found = (uint8_t *) calloc (self->n_blocks, 1);
    if (!found)
        return s_fail (err, err_size, "out of memory");
    int rc = s_check (self, expected_refs, found, err, err_size);
    free (found);
    if (rc == 0 && err && err_size > 0)
        err [0] = 0;
    return rc;
}
