/*  block_manager — the KV blocks of one worker: which block holds what, shared prefixes,
    copy-on-write.

    A worker's KV cache is a pool of n_blocks blocks of block_size positions (npu/model).
    The scheduler keeps one block_manager_t per worker and one block table per sequence:
    the blocks that hold the sequence's positions 0, block_size, 2 * block_size, ... in
    order. The worker only executes: it reads and writes the blocks a step names and
    makes the copies a step lists.

    Reference counts: a block is held by every table that lists it. Sequences that fork
    (n > 1, beams) share their blocks; before a sequence writes into a block that another
    table also holds, block_manager_grow gives it a fresh block and lists the copy
    (copy-on-write) that the worker must make first.

    Prefix caching (when on): a full block whose positions have been computed is
    registered (block_manager_commit) under its tokens and the block before it, so a
    later sequence whose prompt starts with the same tokens takes the same blocks
    (block_manager_match_prefix) and skips computing them. A match compares the tokens
    themselves and the chain of blocks before, not only a hash, so it is never wrong.
    block_manager_cached_prefix says how much would match without taking anything, so
    the scheduler can ask every worker's cache before choosing where a request runs.
    A registered block that no table holds any more stays cached, and is evicted, least
    recently used first, only when a block is needed and none is free. A table releases
    its blocks last first, so a chain loses its end before its start. A block that
    leaves the cache (evicted, or written into) takes the blocks registered after it
    along: its id, reused for other tokens, must never lead a match to them.

    Counting: "free" blocks are those block_manager_grow can take now: never used,
    released, or cached but held by no table.
*/
#ifndef ZLLM_BLOCK_MANAGER_H
#define ZLLM_BLOCK_MANAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  One copy the worker makes before a step: block src to block dst.
typedef struct {
    uint32_t src;
    uint32_t dst;
} block_copy_t;

//  The blocks of one sequence. Zero-initialized is an empty table; block_manager_free
//  empties it and frees its array.
typedef struct {
    uint32_t *blocks;               //  block ids, in position order
    uint32_t n_blocks;
    uint32_t capacity;              //  of the array
    uint32_t n_committed;           //  leading full blocks registered or matched
} block_table_t;

typedef struct _block_manager_t block_manager_t;

//  A pool of n_blocks (>= 1) blocks of block_size (>= 1) positions. NULL when out of
//  memory or an argument is 0.
block_manager_t *
    block_manager_new (uint32_t n_blocks, uint32_t block_size, bool prefix_caching);

void
    block_manager_destroy (block_manager_t **self_p);

uint32_t
    block_manager_n_blocks (const block_manager_t *self);

uint32_t
    block_manager_block_size (const block_manager_t *self);

//  Blocks that can be taken now (free, or cached and held by no table).
uint32_t
    block_manager_n_free (const block_manager_t *self);

//  Blocks held by at least one table.
uint32_t
    block_manager_n_used (const block_manager_t *self);

//  Find the longest run of cached full blocks that holds tokens[0 .. k*block_size-1],
//  with k*block_size <= max_tokens, and put them in table (which must be empty); each
//  is held once more and becomes the most recently used. Returns the number of tokens
//  they hold (0 when prefix caching is off or nothing matches); table->n_committed is
//  the number of blocks. Counts nothing: see block_manager_count_prefix_query.
uint32_t
    block_manager_match_prefix (block_manager_t *self, block_table_t *table,
                                const uint32_t *tokens, uint32_t n_tokens,
                                uint32_t max_tokens);

//  How many leading tokens of tokens[] the cache holds: what block_manager_match_prefix
//  would return for the same arguments, but read-only. No block is held, none changes
//  its place in the LRU order, nothing is counted. When n_unheld is not NULL, it gets
//  how many of those blocks no table holds: a match would take them out of the free
//  count (block_manager_n_free). For choosing, among workers, the one that caches the
//  most of a prompt before any of them matches it.
uint32_t
    block_manager_cached_prefix (const block_manager_t *self, const uint32_t *tokens,
                                 uint32_t n_tokens, uint32_t max_tokens,
                                 uint32_t *n_unheld);

//  Blocks block_manager_grow would take for the same arguments.
uint32_t
    block_manager_blocks_needed (const block_manager_t *self, const block_table_t *table,
                                 uint32_t first_write, uint32_t n_positions);

//  Make table hold positions 0 .. n_positions-1, about to write positions first_write ..
//  n_positions-1 (first_write <= the positions it holds now): append new blocks, and
//  give every block the writes touch that another table also holds a copy of its own:
//  a fresh block replaces it in table and {old, new} is appended to copies (which must
//  have room for block_manager_blocks_needed entries; *n_copies is increased), in table
//  order. A block written into is no longer registered for prefix caching (nor are the
//  blocks registered after it), and table->n_committed drops to the first block
//  written. A table that already holds more blocks keeps them (grow never shrinks).
//  Returns 0, or -1 with nothing changed when there are not enough free blocks (or
//  memory, or copies is NULL and a copy is needed).
int
    block_manager_grow (block_manager_t *self, block_table_t *table, uint32_t first_write,
                        uint32_t n_positions, block_copy_t *copies, uint32_t *n_copies);

//  Say that positions 0 .. n_tokens-1 of table hold tokens[0 .. n_tokens-1] and are
//  computed. With prefix caching, the full blocks from table->n_committed on are
//  registered in order, each after the one before it, and counted in n_committed. An
//  identical block (same tokens after the same block) registered already stops this:
//  this one is simply not registered, nor are the ones after it (nothing could match
//  them after an unregistered block), and a later commit tries again from there.
void
    block_manager_commit (block_manager_t *self, block_table_t *table,
                          const uint32_t *tokens, uint32_t n_tokens);

//  Make dst (empty) hold the same blocks as src, each held once more. Returns 0, or -1
//  when out of memory.
int
    block_manager_fork (block_manager_t *self, const block_table_t *src, block_table_t *dst);

//  Release every block of table and empty it (its array freed).
void
    block_manager_free (block_manager_t *self, block_table_t *table);

//  Count one prefix-cache query for block_manager_prefix_stats: n_tokens / block_size
//  blocks asked for, n_cached / block_size found (what match_prefix returned). The
//  caller counts once per sequence it admits, however often it matched before (a
//  sequence that waits for free blocks is matched again each time it is tried).
//  Nothing is counted when prefix caching is off.
void
    block_manager_count_prefix_query (block_manager_t *self, uint32_t n_tokens,
                                      uint32_t n_cached);

//  Prefix-cache counters since the start: blocks asked for and blocks found.
void
    block_manager_prefix_stats (const block_manager_t *self, uint64_t *queries, uint64_t *hits);

//  Check the manager's invariants (counts add up, free and cached lists and the lookup
//  agree, reference counts match `expected_refs` when it is not NULL: one count per
//  block, as the caller computed from its live tables). Returns 0, or -1 with the first
//  broken one described in err. For tests.
int
    block_manager_check (const block_manager_t *self, const uint32_t *expected_refs,
                         char *err, size_t err_size);

#endif
