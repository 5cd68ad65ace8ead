/*  test_block_manager — scheduler/block_manager: prefix reuse, copy-on-write, LRU
    eviction, exact prefix matches, identical blocks, growth that fails without changing
    anything, the read-only prefix query, and a randomized run of thousands of operations against the test's own
    record of what every block holds, with block_manager_check after each one.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block_manager.h"

//  --------------------------------------------------------------------------
//  Helpers

//  block_manager_check, failing the test with its message.

//  Match a prompt's cached prefix and count the query, as the scheduler does when it
//  admits a sequence.
static uint32_t
s_match (block_manager_t *bm, block_table_t *table, const uint32_t *tokens,
         uint32_t n_tokens, uint32_t max_tokens)
{
    uint32_t matched = block_manager_match_prefix (bm, table, tokens, n_tokens, max_tokens);
    block_manager_count_prefix_query (bm, n_tokens, matched);
    return matched;
}

static void
s_check (const block_manager_t *bm, const uint32_t *expected_refs)
{
    char err [256] = "";
    if (block_manager_check (bm, expected_refs, err, sizeof err) != 0)
        fail_msg ("block_manager_check: %s", err);
}

//  block_manager_check with the reference counts these tables make.
static void
s_check_tables (const block_manager_t *bm, block_table_t **tables, size_t n_tables)
{
    uint32_t n_blocks = block_manager_n_blocks (bm);
    uint32_t *refs = (uint32_t *) calloc (n_blocks, sizeof (uint32_t));
    assert_non_null (refs);
    uint32_t n_used = 0;
    for (size_t t = 0; t < n_tables; t++)
        for (uint32_t i = 0; i < tables [t]->n_blocks; i++) {
            assert_true (tables [t]->blocks [i] < n_blocks);
            if (refs [tables [t]->blocks [i]]++ == 0)
                n_used++;
        }
    s_check (bm, refs);
    assert_int_equal (block_manager_n_used (bm), n_used);
    assert_int_equal (block_manager_n_free (bm), n_blocks - n_used);
    free (refs);
}

//  Grow table to n_positions, writing from first_write, expecting success and
//  n_expected_copies copies. Returns the number of copies.
static uint32_t
s_grow (block_manager_t *bm, block_table_t *table, uint32_t first_write, uint32_t n_positions,
        block_copy_t *copies)
{
    uint32_t n_copies = 0;
    uint32_t needed = block_manager_blocks_needed (bm, table, first_write, n_positions);
    uint32_t n_free = block_manager_n_free (bm);
    assert_int_equal (block_manager_grow (bm, table, first_write, n_positions, copies, &n_copies), 0);
    assert_int_equal (block_manager_n_free (bm), n_free - needed);
    assert_true (n_copies <= needed);
    assert_true ((uint64_t) table->n_blocks * block_manager_block_size (bm) >= n_positions);
    return n_copies;
}

//  A sequence that computes its prompt: grow from zero and commit.
static void
s_prefill (block_manager_t *bm, block_table_t *table, const uint32_t *tokens, uint32_t n_tokens)
{
    block_copy_t copies [64];
    assert_int_equal (s_grow (bm, table, 0, n_tokens, copies), 0);
    block_manager_commit (bm, table, tokens, n_tokens);
}

static void
s_assert_blocks (const block_table_t *table, const uint32_t *expected, uint32_t n_expected)
{
    assert_int_equal (table->n_blocks, n_expected);
    for (uint32_t i = 0; i < n_expected; i++)
        assert_int_equal (table->blocks [i], expected [i]);
}


//  --------------------------------------------------------------------------
//  Hand-written scenarios

static void
test_new_and_destroy (void **state)
{
    (void) state;
    assert_null (block_manager_new (0, 4, true));
    assert_null (block_manager_new (4, 0, true));

    block_manager_t *bm = block_manager_new (8, 4, true);
    assert_non_null (bm);
    assert_int_equal (block_manager_n_blocks (bm), 8);
    assert_int_equal (block_manager_block_size (bm), 4);
    assert_int_equal (block_manager_n_free (bm), 8);
    assert_int_equal (block_manager_n_used (bm), 0);
    uint32_t refs [8] = { 0 };
    s_check (bm, NULL);
    s_check (bm, refs);

    //  The check can fail, and says why
    refs [3] = 1;
    char err [256] = "";
    assert_int_equal (block_manager_check (bm, refs, err, sizeof err), -1);
    assert_non_null (strstr (err, "block 3"));

    uint64_t queries = 1, hits = 1;
    block_manager_prefix_stats (bm, &queries, &hits);
    assert_true (queries == 0 && hits == 0);

    //  An empty table can be freed; growing to 0 positions takes nothing
    block_table_t table = { 0 };
    uint32_t n_copies = 0;
    assert_int_equal (block_manager_grow (bm, &table, 0, 0, NULL, &n_copies), 0);
    assert_int_equal (table.n_blocks, 0);
    block_manager_free (bm, &table);
    block_manager_free (bm, &table);

    block_manager_destroy (&bm);
    assert_null (bm);
    block_manager_destroy (&bm);
}

//  A sequence computes its prompt and leaves; the next one with the same start takes
//  its blocks.
static void
test_prefix_reuse (void **state)
{
    (void) state;
    block_manager_t *bm = block_manager_new (16, 4, true);
    assert_non_null (bm);
    uint64_t queries, hits;

    const uint32_t prompt_a [10] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
    block_table_t a = { 0 };
    assert_int_equal (s_match (bm, &a, prompt_a, 10, 9), 0);
    assert_int_equal (a.n_blocks, 0);
    block_manager_prefix_stats (bm, &queries, &hits);
    assert_true (queries == 2 && hits == 0);

    assert_int_equal (block_manager_blocks_needed (bm, &a, 0, 10), 3);
    s_prefill (bm, &a, prompt_a, 10);
    const uint32_t a_blocks [3] = { 0, 1, 2 };
    s_assert_blocks (&a, a_blocks, 3);
    assert_int_equal (a.n_committed, 2);       //  the third block is not full
    block_table_t *live [3] = { &a };
    s_check_tables (bm, live, 1);

    //  Same 8 tokens, then others: two blocks matched while a still holds them
    const uint32_t prompt_b [11] = { 1, 2, 3, 4, 5, 6, 7, 8, 99, 98, 97 };
    block_table_t b = { 0 };
    assert_int_equal (s_match (bm, &b, prompt_b, 11, 10), 8);
    s_assert_blocks (&b, a_blocks, 2);
    assert_int_equal (b.n_committed, 2);
    live [1] = &b;
    s_check_tables (bm, live, 2);
    block_manager_prefix_stats (bm, &queries, &hits);
    assert_true (queries == 4 && hits == 2);

    //  a leaves: its shared blocks stay held by b, its last one is free
    block_manager_free (bm, &a);
    assert_null (a.blocks);
    assert_int_equal (a.n_blocks, 0);
    live [0] = &b;
    s_check_tables (bm, live, 1);
    assert_int_equal (block_manager_n_used (bm), 2);

    block_copy_t copies [4];
    assert_int_equal (s_grow (bm, &b, 8, 11, copies), 0);
    assert_int_equal (b.n_blocks, 3);
    block_manager_commit (bm, &b, prompt_b, 11);
    assert_int_equal (b.n_committed, 2);
    block_manager_free (bm, &b);
    s_check_tables (bm, live, 0);
    assert_int_equal (block_manager_n_free (bm), 16);

    //  Cached but held by no table: still matched. A prompt of exactly two blocks with
    //  max_tokens n - 1 leaves its last block to compute.
    block_table_t c = { 0 };
    assert_int_equal (s_match (bm, &c, prompt_a, 8, 7), 4);
    s_assert_blocks (&c, a_blocks, 1);
    live [0] = &c;
    s_check_tables (bm, live, 1);
    block_manager_free (bm, &c);
    assert_int_equal (s_match (bm, &c, prompt_a, 8, 8), 8);
    s_assert_blocks (&c, a_blocks, 2);
    block_manager_free (bm, &c);

    //  Shorter than a block: nothing to match
    assert_int_equal (s_match (bm, &c, prompt_a, 3, 3), 0);
    assert_int_equal (c.n_blocks, 0);
    block_manager_prefix_stats (bm, &queries, &hits);
    assert_true (queries == 4 + 2 + 2 && hits == 2 + 1 + 2);
    s_check_tables (bm, live, 0);
    block_manager_destroy (&bm);
}

//  Forked sequences share blocks; the first write into a shared block copies it, once.
static void
test_fork_copy_on_write (void **state)
{
    (void) state;
    block_manager_t *bm = block_manager_new (8, 4, true);
    assert_non_null (bm);
    block_copy_t copies [8];

    const uint32_t prompt [6] = { 1, 2, 3, 4, 5, 6 };
    block_table_t a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
    s_prefill (bm, &a, prompt, 6);
    const uint32_t a_blocks [2] = { 0, 1 };
    s_assert_blocks (&a, a_blocks, 2);
    assert_int_equal (a.n_committed, 1);

    assert_int_equal (block_manager_fork (bm, &a, &b), 0);
    s_assert_blocks (&b, a_blocks, 2);
    assert_int_equal (b.n_committed, 1);
    block_table_t *live [4] = { &a, &b };
    s_check_tables (bm, live, 2);
    assert_int_equal (block_manager_n_used (bm), 2);

    //  Fork into a table that is not empty: refused
    assert_int_equal (block_manager_fork (bm, &a, &b), -1);

    //  b writes position 6 (in the shared partial block 1) and on into a new block:
    //  one copy, listed once, and one new block.
    assert_int_equal (block_manager_blocks_needed (bm, &b, 6, 10), 2);
    assert_int_equal (s_grow (bm, &b, 6, 10, copies), 1);
    assert_int_equal (copies [0].src, 1);
    assert_int_equal (b.n_blocks, 3);
    assert_int_equal (b.blocks [0], 0);
    assert_int_equal (copies [0].dst, b.blocks [1]);
    assert_true (b.blocks [1] != 1 && b.blocks [2] != 1 && b.blocks [1] != b.blocks [2]);
    s_assert_blocks (&a, a_blocks, 2);
    s_check_tables (bm, live, 2);

    //  a now holds block 1 alone: it writes in place
    assert_int_equal (block_manager_blocks_needed (bm, &a, 6, 8), 0);
    assert_int_equal (s_grow (bm, &a, 6, 8, copies), 0);
    s_assert_blocks (&a, a_blocks, 2);
    s_check_tables (bm, live, 2);

    //  c (a fork of a) writes from position 2: blocks 0 and 1 are copied. Block 0
    //  stays registered for the others; c's n_committed drops to 0.
    assert_int_equal (block_manager_fork (bm, &a, &c), 0);
    assert_int_equal (c.n_committed, 1);
    assert_int_equal (s_grow (bm, &c, 2, 8, copies), 2);
    assert_int_equal (copies [0].src, 0);
    assert_int_equal (copies [1].src, 1);
    assert_int_equal (c.blocks [0], copies [0].dst);
    assert_int_equal (c.blocks [1], copies [1].dst);
    assert_int_equal (c.n_committed, 0);
    live [2] = &c;
    s_check_tables (bm, live, 3);
    assert_int_equal (s_match (bm, &d, prompt, 6, 5), 4);
    assert_int_equal (d.blocks [0], 0);
    live [3] = &d;
    s_check_tables (bm, live, 4);

    //  Copies come from block_manager_n_free like new blocks: with none free, -1
    block_manager_free (bm, &d);
    uint32_t n_copies = 0;
    while (block_manager_n_free (bm) > 0)
        assert_int_equal (block_manager_grow (bm, &c, c.n_blocks * 4, c.n_blocks * 4 + 1,
                                              copies, &n_copies), 0);
    assert_int_equal (n_copies, 0);
    assert_int_equal (block_manager_fork (bm, &a, &d), 0);
    assert_int_equal (block_manager_blocks_needed (bm, &d, 7, 8), 1);
    assert_int_equal (block_manager_grow (bm, &d, 7, 8, copies, &n_copies), -1);
    assert_int_equal (n_copies, 0);
    s_assert_blocks (&d, a_blocks, 2);
    s_check_tables (bm, live, 4);

    for (int t = 0; t < 4; t++)
        block_manager_free (bm, live [t]);
    s_check_tables (bm, live, 0);
    assert_int_equal (block_manager_n_free (bm), 8);
    block_manager_destroy (&bm);
}

//  Cached blocks are evicted least recently used first; a matched block becomes the
//  most recently used; a chain loses its end before its start.
static void
test_lru_eviction (void **state)
{
    (void) state;
    block_manager_t *bm = block_manager_new (4, 2, true);
    assert_non_null (bm);
    const uint32_t x [3] = { 1, 2, 0 }, y [3] = { 3, 4, 0 }, z [3] = { 5, 6, 0 };
    block_table_t t = { 0 }, w = { 0 };

    //  x, y, z each compute one block and leave, in that order: blocks 0, 1, 2
    s_prefill (bm, &t, x, 2);
    assert_int_equal (t.blocks [0], 0);
    block_manager_free (bm, &t);
    s_prefill (bm, &t, y, 2);
    assert_int_equal (t.blocks [0], 1);
    block_manager_free (bm, &t);
    s_prefill (bm, &t, z, 2);
    assert_int_equal (t.blocks [0], 2);
    block_manager_free (bm, &t);
    assert_int_equal (block_manager_n_free (bm), 4);
    s_check (bm, NULL);

    //  x is matched again: now y is the least recently used
    assert_int_equal (s_match (bm, &t, x, 3, 2), 2);
    assert_int_equal (t.blocks [0], 0);
    block_manager_free (bm, &t);

    //  Three blocks: the never used one (3), then y's, then z's
    block_copy_t copies [4];
    assert_int_equal (s_grow (bm, &w, 0, 6, copies), 0);
    const uint32_t w_blocks [3] = { 3, 1, 2 };
    s_assert_blocks (&w, w_blocks, 3);
    block_table_t *live [2] = { &w };
    s_check_tables (bm, live, 1);
    assert_int_equal (s_match (bm, &t, y, 3, 2), 0);
    assert_int_equal (s_match (bm, &t, z, 3, 2), 0);
    assert_int_equal (s_match (bm, &t, x, 3, 2), 2);
    block_manager_free (bm, &t);
    block_manager_free (bm, &w);
    s_check_tables (bm, live, 0);
    block_manager_destroy (&bm);

    //  A chain of three full blocks, released: its last block is evicted first
    bm = block_manager_new (4, 2, true);
    assert_non_null (bm);
    const uint32_t chain [7] = { 1, 2, 3, 4, 5, 6, 7 };
    s_prefill (bm, &t, chain, 6);
    const uint32_t t_blocks [3] = { 0, 1, 2 };
    s_assert_blocks (&t, t_blocks, 3);
    assert_int_equal (t.n_committed, 3);
    block_manager_free (bm, &t);
    assert_int_equal (s_grow (bm, &w, 0, 4, copies), 0);     //  3, then 2 (the end)
    const uint32_t w2_blocks [2] = { 3, 2 };
    s_assert_blocks (&w, w2_blocks, 2);
    s_check_tables (bm, live, 1);
    assert_int_equal (s_match (bm, &t, chain, 7, 6), 4);
    block_manager_free (bm, &t);
    assert_int_equal (s_grow (bm, &w, 4, 6, copies), 0);     //  then 1
    assert_int_equal (w.blocks [2], 1);
    assert_int_equal (s_match (bm, &t, chain, 7, 6), 2);
    block_manager_free (bm, &t);
    block_manager_free (bm, &w);
    s_check_tables (bm, live, 0);
    block_manager_destroy (&bm);
}

//  A match is the longest exact run: it stops at the first block with a different
//  token, never takes a block with the right tokens after other tokens, and respects
//  max_tokens.
static void
test_match_stops_at_mismatch (void **state)
{
    (void) state;
    block_manager_t *bm = block_manager_new (16, 4, true);
    assert_non_null (bm);
    uint32_t prompt [13];
    for (uint32_t i = 0; i < 13; i++)
        prompt [i] = i + 1;
    block_table_t a = { 0 }, t = { 0 };
    s_prefill (bm, &a, prompt, 13);
    assert_int_equal (a.n_committed, 3);
    block_manager_free (bm, &a);

    assert_int_equal (s_match (bm, &t, prompt, 13, 12), 12);
    block_manager_free (bm, &t);
    assert_int_equal (s_match (bm, &t, prompt, 13, 11), 8);
    block_manager_free (bm, &t);
    assert_int_equal (s_match (bm, &t, prompt, 13, 3), 0);
    assert_int_equal (s_match (bm, &t, prompt, 7, 100), 4);
    block_manager_free (bm, &t);

    //  One token changed, anywhere in a block
    for (uint32_t at = 0; at < 12; at++) {
        uint32_t other [13];
        memcpy (other, prompt, sizeof other);
        other [at] = 1000;
        assert_int_equal (s_match (bm, &t, other, 13, 12), at / 4 * 4);
        block_manager_free (bm, &t);
    }
    //  The tokens of a's blocks 1 and 2, at the start of a prompt: not a match
    assert_int_equal (s_match (bm, &t, prompt + 4, 9, 8), 0);

    //  The same tokens in every block: each block is its own, in order
    const uint32_t zeros [13] = { 0 };
    s_prefill (bm, &a, zeros, 12);
    assert_int_equal (a.n_committed, 3);
    assert_int_equal (s_match (bm, &t, zeros, 13, 12), 12);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal (t.blocks [i], a.blocks [i]);
    block_manager_free (bm, &t);
    //  A zero block after prompt's first block is not a's first zero block
    uint32_t mixed [9] = { 1, 2, 3, 4, 0, 0, 0, 0, 0 };
    assert_int_equal (s_match (bm, &t, mixed, 9, 8), 4);
    block_manager_free (bm, &t);
    block_manager_free (bm, &a);
    s_check (bm, NULL);
    block_manager_destroy (&bm);
}

//  Two sequences compute the same prompt at once: the second's blocks are not
//  registered (nor any after them), until the first's are gone.
static void
test_identical_blocks_registered_twice (void **state)
{
    (void) state;
    block_manager_t *bm = block_manager_new (12, 4, true);
    assert_non_null (bm);
    const uint32_t p [13] = { 1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22, 23, 30 };
    const uint32_t q [13] = { 1, 2, 3, 4, 5, 6, 7, 8, 40, 41, 42, 43, 50 };
    block_table_t a = { 0 }, b = { 0 }, t = { 0 }, x = { 0 };

    assert_int_equal (s_match (bm, &a, p, 13, 12), 0);
    assert_int_equal (s_match (bm, &b, q, 13, 12), 0);
    s_prefill (bm, &a, p, 13);
    s_prefill (bm, &b, q, 13);
    const uint32_t a_blocks [4] = { 0, 1, 2, 3 };
    const uint32_t b_blocks [4] = { 4, 5, 6, 7 };
    s_assert_blocks (&a, a_blocks, 4);
    s_assert_blocks (&b, b_blocks, 4);
    assert_int_equal (a.n_committed, 3);
    assert_int_equal (b.n_committed, 0);    //  its block 0 has a registered twin
    block_table_t *live [3] = { &a, &b };
    s_check_tables (bm, live, 2);           //  the check refuses registered twins

    //  q's third block is not registered: after a's two blocks, nothing more
    assert_int_equal (s_match (bm, &t, q, 13, 12), 8);
    assert_int_equal (t.blocks [0], 0);
    assert_int_equal (t.blocks [1], 1);
    block_manager_free (bm, &t);

    //  Committing again changes nothing while a's blocks are there
    block_manager_commit (bm, &b, q, 13);
    assert_int_equal (b.n_committed, 0);

    //  a leaves and its blocks are evicted: b's commit now registers its own
    block_manager_free (bm, &a);
    live [0] = &b;
    s_check_tables (bm, live, 1);
    block_copy_t copies [4];
    assert_int_equal (s_grow (bm, &x, 0, 32, copies), 0);  //  all 8 free blocks
    assert_int_equal (block_manager_n_free (bm), 0);
    live [1] = &x;
    s_check_tables (bm, live, 2);
    assert_int_equal (s_match (bm, &t, p, 13, 12), 0);
    block_manager_commit (bm, &b, q, 13);
    assert_int_equal (b.n_committed, 3);
    s_check_tables (bm, live, 2);
    assert_int_equal (s_match (bm, &t, q, 13, 12), 12);
    s_assert_blocks (&t, b_blocks, 3);
    block_manager_free (bm, &t);
    block_manager_free (bm, &b);
    block_manager_free (bm, &x);
    s_check (bm, NULL);
    block_manager_destroy (&bm);
}

//  With prefix caching off, nothing is registered or matched; the rest works the same.
static void
test_prefix_caching_off (void **state)
{
    (void) state;
    block_manager_t *bm = block_manager_new (8, 4, false);
    assert_non_null (bm);
    const uint32_t p [9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    block_table_t a = { 0 }, b = { 0 };
    assert_int_equal (s_match (bm, &a, p, 9, 8), 0);
    s_prefill (bm, &a, p, 9);
    assert_int_equal (a.n_committed, 0);
    assert_int_equal (block_manager_fork (bm, &a, &b), 0);
    block_copy_t copies [4];
    assert_int_equal (s_grow (bm, &b, 9, 10, copies), 1);
    block_table_t *live [2] = { &a, &b };
    s_check_tables (bm, live, 2);
    block_manager_free (bm, &a);
    block_manager_free (bm, &b);
    assert_int_equal (block_manager_n_free (bm), 8);
    assert_int_equal (s_match (bm, &a, p, 9, 8), 0);
    assert_int_equal (a.n_blocks, 0);
    uint64_t queries = 1, hits = 1;
    block_manager_prefix_stats (bm, &queries, &hits);
    assert_true (queries == 0 && hits == 0);
    s_check_tables (bm, live, 0);
    block_manager_destroy (&bm);
}

//  block_manager_cached_prefix answers what block_manager_match_prefix would for the
//  same arguments (and match takes exactly n_unheld blocks out of the free count).
static void
s_assert_cached_prefix_is_the_match (block_manager_t *bm, const uint32_t *tokens,
                                     uint32_t n_tokens, uint32_t max_tokens)
{
    uint32_t n_unheld = 12345;
    uint32_t cached = block_manager_cached_prefix (bm, tokens, n_tokens, max_tokens,
                                                   &n_unheld);
    uint32_t n_free = block_manager_n_free (bm);
    block_table_t table = { 0 };
    uint32_t matched = block_manager_match_prefix (bm, &table, tokens, n_tokens, max_tokens);
    assert_int_equal (cached, matched);
    assert_int_equal (block_manager_n_free (bm), n_free - n_unheld);
    block_manager_free (bm, &table);
}

//  The read-only query: how much of a prompt is cached, and how many of those blocks
//  no table holds, with no reference taken, no block moved in the LRU order and no
//  query counted. Its answers are match_prefix's.
static void
test_cached_prefix_changes_nothing (void **state)
{
    (void) state;
    block_manager_t *bm = block_manager_new (8, 2, true);
    assert_non_null (bm);
    const uint32_t x [3] = { 1, 2, 0 }, y [3] = { 3, 4, 0 }, z [3] = { 5, 6, 0 };
    const uint32_t chain [5] = { 7, 8, 9, 10, 11 };
    block_table_t t = { 0 }, held = { 0 }, w = { 0 };

    //  x, y, z compute one block each and leave, in that order: blocks 0, 1, 2 are
    //  cached, x's least recently used. `held` keeps chain's blocks 3 -> 4 (registered)
    //  and 5 (partial). Free: 6 and 7, then the cached ones.
    s_prefill (bm, &t, x, 2);
    block_manager_free (bm, &t);
    s_prefill (bm, &t, y, 2);
    block_manager_free (bm, &t);
    s_prefill (bm, &t, z, 2);
    block_manager_free (bm, &t);
    s_prefill (bm, &held, chain, 5);
    assert_int_equal (held.n_committed, 2);
    block_table_t *live [2] = { &held };
    s_check_tables (bm, live, 1);
    uint64_t queries_before, hits_before;
    block_manager_prefix_stats (bm, &queries_before, &hits_before);

    //  Cached and held by none; held; limited by max_tokens, by n_tokens, by a
    //  mismatch; nothing to ask about.
    uint32_t n_unheld = 99;
    assert_int_equal (block_manager_cached_prefix (bm, x, 3, 2, &n_unheld), 2);
    assert_int_equal (n_unheld, 1);
    assert_int_equal (block_manager_cached_prefix (bm, chain, 5, 4, &n_unheld), 4);
    assert_int_equal (n_unheld, 0);
    assert_int_equal (block_manager_cached_prefix (bm, chain, 5, 3, &n_unheld), 2);
    assert_int_equal (block_manager_cached_prefix (bm, chain, 3, 100, NULL), 2);
    const uint32_t other [5] = { 7, 8, 9, 99, 11 };
    assert_int_equal (block_manager_cached_prefix (bm, other, 5, 4, &n_unheld), 2);
    assert_int_equal (n_unheld, 0);
    assert_int_equal (block_manager_cached_prefix (bm, y + 1, 2, 2, &n_unheld), 0);
    assert_int_equal (n_unheld, 0);
    assert_int_equal (block_manager_cached_prefix (bm, NULL, 5, 4, &n_unheld), 0);
    assert_int_equal (block_manager_cached_prefix (NULL, x, 3, 2, &n_unheld), 0);

    //  Nothing changed: the reference counts, the counters ...
    s_check_tables (bm, live, 1);
    uint64_t queries, hits;
    block_manager_prefix_stats (bm, &queries, &hits);
    assert_true (queries == queries_before && hits == hits_before);
    //  ... and the LRU order: x's block is still the first evicted (after the two
    //  free ones), where a match would have made it the most recently used.
    block_copy_t copies [4];
    assert_int_equal (s_grow (bm, &w, 0, 6, copies), 0);
    const uint32_t w_blocks [3] = { 6, 7, 0 };
    s_assert_blocks (&w, w_blocks, 3);
    live [1] = &w;
    s_check_tables (bm, live, 2);
    assert_int_equal (block_manager_cached_prefix (bm, x, 3, 2, NULL), 0);
    assert_int_equal (block_manager_cached_prefix (bm, y, 3, 2, NULL), 2);

    //  Every answer is the match's, whatever the blocks' state.
    s_assert_cached_prefix_is_the_match (bm, x, 3, 2);
    s_assert_cached_prefix_is_the_match (bm, y, 3, 2);
    s_assert_cached_prefix_is_the_match (bm, z, 3, 2);
    s_assert_cached_prefix_is_the_match (bm, chain, 5, 4);
    s_assert_cached_prefix_is_the_match (bm, chain, 5, 3);
    s_assert_cached_prefix_is_the_match (bm, chain, 4, 4);
    s_assert_cached_prefix_is_the_match (bm, other, 5, 4);
    block_manager_free (bm, &held);                 //  chain's blocks: cached, unheld
    s_assert_cached_prefix_is_the_match (bm, chain, 5, 4);
    assert_int_equal (block_manager_cached_prefix (bm, chain, 5, 4, &n_unheld), 4);
    assert_int_equal (n_unheld, 2);
    block_manager_free (bm, &w);
    s_check (bm, NULL);
    block_manager_destroy (&bm);

    //  Prefix caching off: nothing is ever cached.
    bm = block_manager_new (4, 2, false);
    assert_non_null (bm);
    s_prefill (bm, &t, x, 2);
    block_manager_free (bm, &t);
    assert_int_equal (block_manager_cached_prefix (bm, x, 3, 2, &n_unheld), 0);
    assert_int_equal (n_unheld, 0);
    block_manager_destroy (&bm);
}

//  A grow that cannot get its blocks returns -1 and changes nothing.
static void
s_grow_must_fail (block_manager_t *bm, block_table_t *table, uint32_t first_write,
                  uint32_t n_positions, block_copy_t *copies, block_table_t **live, size_t n_live)
{
    block_table_t before = *table;
    uint32_t blocks_before [16];
    assert_true (table->n_blocks <= 16);
    if (table->n_blocks > 0)
        memcpy (blocks_before, table->blocks, table->n_blocks * sizeof (uint32_t));
    uint32_t n_free = block_manager_n_free (bm);
    assert_true (block_manager_blocks_needed (bm, table, first_write, n_positions) > n_free);

    block_copy_t sentinel = { 12345, 54321 };
    for (int i = 0; i < 4; i++)
        copies [i] = sentinel;
    uint32_t n_copies = 7;
    assert_int_equal (block_manager_grow (bm, table, first_write, n_positions, copies, &n_copies), -1);
    assert_int_equal (n_copies, 7);
    for (int i = 0; i < 4; i++)
        assert_true (copies [i].src == sentinel.src && copies [i].dst == sentinel.dst);
    assert_true (table->blocks == before.blocks);
    assert_int_equal (table->n_blocks, before.n_blocks);
    assert_int_equal (table->capacity, before.capacity);
    assert_int_equal (table->n_committed, before.n_committed);
    assert_memory_equal (table->blocks, blocks_before, table->n_blocks * sizeof (uint32_t));
    assert_int_equal (block_manager_n_free (bm), n_free);
    s_check_tables (bm, live, n_live);
}

static void
test_grow_failure_changes_nothing (void **state)
{
    (void) state;
    block_manager_t *bm = block_manager_new (4, 4, true);
    assert_non_null (bm);
    const uint32_t p [16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
    block_copy_t copies [4];
    block_table_t a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
    s_prefill (bm, &a, p, 6);                       //  blocks 0, 1
    assert_int_equal (block_manager_fork (bm, &a, &b), 0);
    s_prefill (bm, &c, p, 4);                       //  block 2, a twin: not registered
    assert_int_equal (c.n_committed, 0);
    block_table_t *live [4] = { &a, &b, &c, &d };
    assert_int_equal (block_manager_n_free (bm), 1);

    //  A copy and two new blocks, one free
    assert_int_equal (block_manager_blocks_needed (bm, &b, 6, 13), 3);
    s_grow_must_fail (bm, &b, 6, 13, copies, live, 3);
    //  Two new blocks
    s_grow_must_fail (bm, &c, 4, 12, copies, live, 3);
    //  A copy, none free
    assert_int_equal (s_grow (bm, &d, 0, 4, copies), 0);
    assert_int_equal (block_manager_n_free (bm), 0);
    s_grow_must_fail (bm, &b, 6, 7, copies, live, 4);
    s_grow_must_fail (bm, &b, 0, 1, copies, live, 4);
    //  A copy is needed and there is room, but nowhere to list it
    block_manager_free (bm, &d);
    uint32_t n_copies = 0;
    assert_int_equal (block_manager_grow (bm, &b, 6, 7, NULL, &n_copies), -1);
    assert_int_equal (n_copies, 0);
    s_check_tables (bm, live, 3);

    //  Room again: the same grow works, with its copy
    block_manager_free (bm, &c);
    assert_int_equal (block_manager_n_free (bm), 2);
    s_grow_must_fail (bm, &b, 6, 13, copies, live, 2);
    block_manager_free (bm, &a);                    //  block 1 is b's alone now
    assert_int_equal (block_manager_blocks_needed (bm, &b, 6, 13), 2);
    assert_int_equal (s_grow (bm, &b, 6, 13, copies), 0);
    live [0] = &b;
    s_check_tables (bm, live, 1);
    block_manager_free (bm, &b);
    s_check_tables (bm, live, 0);
    block_manager_destroy (&bm);
}

//  Writing into a registered block that no other table holds takes it, and every
//  registered block after it, out of the cache; its id registered again for other
//  tokens is not followed by the old blocks.
static void
test_write_into_registered_block (void **state)
{
    (void) state;
    block_manager_t *bm = block_manager_new (8, 4, true);
    assert_non_null (bm);
    block_copy_t copies [4];
    uint32_t p [9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    block_table_t a = { 0 }, t = { 0 };
    s_prefill (bm, &a, p, 9);
    assert_int_equal (a.n_committed, 2);

    //  Positions 2 .. 5 again, other tokens: no copy, nothing registered any more
    p [2] = 70;
    p [3] = 71;
    assert_int_equal (s_grow (bm, &a, 2, 6, copies), 0);
    assert_int_equal (a.n_blocks, 3);               //  never shrinks
    assert_int_equal (a.n_committed, 0);
    block_table_t *live [2] = { &a };
    s_check_tables (bm, live, 1);
    const uint32_t old [9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    assert_int_equal (s_match (bm, &t, old, 9, 8), 0);

    //  Block 0 registered again with the new tokens: the old block 1 does not follow it
    block_manager_commit (bm, &a, p, 6);
    assert_int_equal (a.n_committed, 1);
    s_check_tables (bm, live, 1);
    assert_int_equal (s_match (bm, &t, p, 9, 8), 4);
    block_manager_free (bm, &t);
    block_manager_free (bm, &a);
    s_check (bm, NULL);
    block_manager_destroy (&bm);
}

//  Evicting a block takes what was registered after it out of the cache, even a block
//  a table still holds; a new chain through the evicted block's id matches only itself.
static void
test_evicted_block_takes_its_chain (void **state)
{
    (void) state;
    block_manager_t *bm = block_manager_new (3, 2, true);
    assert_non_null (bm);
    block_copy_t copies [4];
    const uint32_t p [5] = { 1, 2, 3, 4, 5 };
    block_table_t a = { 0 }, b = { 0 }, t = { 0 }, x = { 0 };
    s_prefill (bm, &a, p, 4);                       //  blocks 0 -> 1, registered
    assert_int_equal (a.n_committed, 2);
    assert_int_equal (s_match (bm, &b, p, 5, 4), 4);

    //  b rewrites position 1: copies block 0 (into 2) and keeps block 1, which stays
    //  registered after block 0
    assert_int_equal (s_grow (bm, &b, 1, 2, copies), 1);
    assert_int_equal (copies [0].src, 0);
    assert_int_equal (copies [0].dst, 2);
    assert_int_equal (b.blocks [1], 1);
    assert_int_equal (b.n_committed, 0);
    block_table_t *live [2] = { &a, &b };
    s_check_tables (bm, live, 2);

    //  a leaves: block 0 is cached, block 1 is still b's; then b leaves
    block_manager_free (bm, &a);
    live [0] = &b;
    s_check_tables (bm, live, 1);
    block_manager_free (bm, &b);
    assert_int_equal (block_manager_n_free (bm), 3);
    s_check_tables (bm, live, 0);

    //  Two blocks: block 2 (free), then the least recently used, block 0, evicted with
    //  block 1 after it
    assert_int_equal (s_grow (bm, &x, 0, 4, copies), 0);
    const uint32_t x_blocks [2] = { 2, 0 };
    s_assert_blocks (&x, x_blocks, 2);
    live [0] = &x;
    s_check_tables (bm, live, 1);
    assert_int_equal (s_match (bm, &t, p, 5, 4), 0);

    //  x computes 9 9 8 8: block 0 now follows block 2. A prompt 9 9 8 8 3 4 must not
    //  find the old block 1 (3 4 after block 0) after it.
    const uint32_t q [7] = { 9, 9, 8, 8, 3, 4, 0 };
    block_manager_commit (bm, &x, q, 4);
    assert_int_equal (x.n_committed, 2);
    block_manager_free (bm, &x);
    assert_int_equal (s_match (bm, &t, q, 7, 6), 4);
    s_assert_blocks (&t, x_blocks, 2);
    block_manager_free (bm, &t);
    s_check (bm, NULL);
    block_manager_destroy (&bm);
}


//  --------------------------------------------------------------------------
//  Randomized: many sequences, every operation checked against the test's own record

#define R_MAX_SEQS 10
#define R_MAX_LEN 60
#define R_N_PREFIXES 3
#define R_PREFIX_LEN 24

typedef struct {
    bool live;
    block_table_t table;
    uint32_t tokens [R_MAX_LEN];    //  the sequence's tokens: prompt, then generated
    uint64_t context [R_MAX_LEN];   //  a hash of tokens [0 .. p]
    uint32_t n_tokens;              //  tokens known
    uint32_t n_written;             //  positions computed into its blocks
} r_seq_t;

typedef struct {
    block_manager_t *bm;
    uint32_t n_blocks;
    uint32_t block_size;
    bool caching;
    uint64_t rng;
    //  What the test wrote into each block's rows: the token and its context hash
    //  (UINT64_MAX: never written)
    uint32_t *row_token;
    uint64_t *row_context;
    r_seq_t seqs [R_MAX_SEQS];
    uint32_t prefixes [R_N_PREFIXES][R_PREFIX_LEN];
    uint64_t queries;               //  the stats the manager should report
    uint64_t hits;
    uint32_t *refs;
    //  How much of each thing happened, to be sure the run did something
    uint64_t n_matched_blocks;
    uint64_t n_copies;
    uint64_t n_grow_failures;
    uint64_t n_forks;
    uint64_t n_rewinds;
    uint64_t n_twins;               //  commits that stopped short of the full blocks
} r_state_t;

static uint32_t
r_next (r_state_t *r, uint32_t bound)
{
    //  splitmix64
    uint64_t z = (r->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (uint32_t) (z % bound);
}

//  Recompute the context hashes from position `from` on.
static void
r_contexts (r_seq_t *seq, uint32_t from)
{
    for (uint32_t p = from; p < seq->n_tokens; p++) {
        uint64_t h = p == 0? 0x1234567ULL: seq->context [p - 1];
        h = (h ^ (seq->tokens [p] + 1)) * 0x100000001B3ULL;
        h ^= h >> 32;
        seq->context [p] = h;
    }
}

//  Generated tokens come from a small vocabulary so identical blocks are common.
static void
r_generate (r_state_t *r, r_seq_t *seq, uint32_t up_to)
{
    uint32_t from = seq->n_tokens;
    if (up_to > R_MAX_LEN)
        up_to = R_MAX_LEN;
    while (seq->n_tokens < up_to)
        seq->tokens [seq->n_tokens++] = r_next (r, 3);
    r_contexts (seq, from);
}

static int
r_free_slot (r_state_t *r)
{
    for (int s = 0; s < R_MAX_SEQS; s++)
        if (!r->seqs [s].live)
            return s;
    return -1;
}

static int
r_live_seq (r_state_t *r)
{
    int n_live = 0;
    for (int s = 0; s < R_MAX_SEQS; s++)
        n_live += r->seqs [s].live;
    if (n_live == 0)
        return -1;
    int pick = (int) r_next (r, (uint32_t) n_live);
    for (int s = 0; s < R_MAX_SEQS; s++)
        if (r->seqs [s].live && pick-- == 0)
            return s;
    return -1;
}

static void
r_free_seq (r_state_t *r, r_seq_t *seq)
{
    block_manager_free (r->bm, &seq->table);
    assert_null (seq->table.blocks);
    seq->live = false;
}

//  Everything the test knows, after every operation.
static void
r_verify (r_state_t *r)
{
    uint32_t bs = r->block_size;
    memset (r->refs, 0, r->n_blocks * sizeof (uint32_t));
    uint32_t n_used = 0;
    for (int s = 0; s < R_MAX_SEQS; s++) {
        r_seq_t *seq = &r->seqs [s];
        if (!seq->live)
            continue;
        block_table_t *table = &seq->table;
        assert_true (table->n_blocks <= table->capacity);
        assert_true ((uint64_t) table->n_blocks * bs >= seq->n_written);
        assert_true (table->n_committed <= seq->n_written / bs);
        if (!r->caching)
            assert_int_equal (table->n_committed, 0);
        for (uint32_t i = 0; i < table->n_blocks; i++) {
            assert_true (table->blocks [i] < r->n_blocks);
            if (r->refs [table->blocks [i]]++ == 0)
                n_used++;
        }
        //  Its blocks hold what it wrote, after what it wrote before
        for (uint32_t p = 0; p < seq->n_written; p++) {
            size_t row = (size_t) table->blocks [p / bs] * bs + p % bs;
            if (r->row_token [row] != seq->tokens [p] || r->row_context [row] != seq->context [p])
                fail_msg ("sequence %d position %u: block %u row %u holds %u, not %u%s",
                          s, p, table->blocks [p / bs], p % bs, r->row_token [row],
                          seq->tokens [p],
                          r->row_token [row] == seq->tokens [p]? " (other context)": "");
        }
    }
    s_check (r->bm, r->refs);
    assert_int_equal (block_manager_n_used (r->bm), n_used);
    assert_int_equal (block_manager_n_free (r->bm), r->n_blocks - n_used);
    uint64_t queries, hits;
    block_manager_prefix_stats (r->bm, &queries, &hits);
    assert_true (queries == r->queries && hits == r->hits);
}

//  A new sequence: a prompt from a shared prefix, another sequence, or anything;
//  then the match.
static void
r_new_seq (r_state_t *r)
{
    int s = r_free_slot (r);
    if (s < 0)
        return;
    r_seq_t *seq = &r->seqs [s];
    memset (seq, 0, sizeof *seq);
    uint32_t bs = r->block_size;

    uint32_t kind = r_next (r, 10);
    int other = r_live_seq (r);
    if (kind < 6) {
        const uint32_t *prefix = r->prefixes [r_next (r, R_N_PREFIXES)];
        uint32_t n = r_next (r, R_PREFIX_LEN + 1);
        memcpy (seq->tokens, prefix, n * sizeof (uint32_t));
        seq->n_tokens = n;
        r_contexts (seq, 0);
        r_generate (r, seq, n + r_next (r, 10));
    }
    else
    if (kind < 8 && other >= 0) {
        //  All or part of another sequence's tokens, maybe more
        r_seq_t *from = &r->seqs [other];
        uint32_t n = r_next (r, from->n_tokens + 1);
        memcpy (seq->tokens, from->tokens, n * sizeof (uint32_t));
        seq->n_tokens = n;
        r_contexts (seq, 0);
        r_generate (r, seq, n + r_next (r, 4));
    }
    else
    if (kind < 9) {
        //  A shared prefix shifted: the same tokens in other contexts
        const uint32_t *prefix = r->prefixes [r_next (r, R_N_PREFIXES)];
        uint32_t start = 1 + r_next (r, bs * 2);
        seq->n_tokens = R_PREFIX_LEN - start;
        memcpy (seq->tokens, prefix + start, seq->n_tokens * sizeof (uint32_t));
        r_contexts (seq, 0);
    }
    else
        r_generate (r, seq, r_next (r, 20));
    if (seq->n_tokens == 0)
        r_generate (r, seq, 1);
    seq->live = true;

    //  The longest prefix some live sequence has committed: must be found (its blocks
    //  are held and registered, or their twins are)
    uint32_t n = seq->n_tokens;
    uint32_t max_tokens = n - 1;
    uint32_t at_least = 0;
    if (r->caching)
        for (int o = 0; o < R_MAX_SEQS; o++) {
            r_seq_t *live = &r->seqs [o];
            if (o == s || !live->live)
                continue;
            uint32_t k = 0;
            while (k < live->table.n_committed && (k + 1) * bs <= max_tokens
               &&  memcmp (live->tokens + k * bs, seq->tokens + k * bs, bs * sizeof (uint32_t)) == 0)
                k++;
            if (k > at_least)
                at_least = k;
        }

    //  The read-only query says first what the match takes, and how many free blocks.
    uint32_t n_unheld;
    uint32_t cached = block_manager_cached_prefix (r->bm, seq->tokens, n, max_tokens,
                                                   &n_unheld);
    uint32_t n_free = block_manager_n_free (r->bm);
    uint32_t matched = s_match (r->bm, &seq->table, seq->tokens, n, max_tokens);
    assert_int_equal (matched, cached);
    assert_int_equal (block_manager_n_free (r->bm), n_free - n_unheld);
    if (r->caching) {
        r->queries += n / bs;
        r->hits += matched / bs;
    }
    else
        assert_int_equal (matched, 0);
    assert_int_equal (matched % bs, 0);
    assert_true (matched <= max_tokens);
    assert_true (matched >= at_least * bs);
    assert_int_equal (seq->table.n_blocks, matched / bs);
    assert_int_equal (seq->table.n_committed, matched / bs);
    seq->n_written = matched;
    r->n_matched_blocks += matched / bs;
    //  (r_verify then checks that the matched blocks hold these tokens in this context)
}

//  Grow a sequence to n_positions writing from first_write, check everything grow
//  promises, write the test's record, maybe commit. Returns false when grow failed.
static bool
r_grow (r_state_t *r, r_seq_t *seq, uint32_t first_write, uint32_t n_positions)
{
    uint32_t bs = r->block_size;
    block_table_t *table = &seq->table;
    uint32_t old_blocks [R_MAX_LEN];
    uint32_t old_n_blocks = table->n_blocks;
    uint32_t old_committed = table->n_committed;
    uint32_t *old_array = table->blocks;
    uint32_t old_capacity = table->capacity;
    if (old_n_blocks > 0)
        memcpy (old_blocks, table->blocks, old_n_blocks * sizeof (uint32_t));
    uint32_t n_free = block_manager_n_free (r->bm);
    uint32_t needed = block_manager_blocks_needed (r->bm, table, first_write, n_positions);

    block_copy_t copies [R_MAX_LEN + 1];
    uint32_t n_copies = 0;
    int rc = block_manager_grow (r->bm, table, first_write, n_positions, copies, &n_copies);
    if (rc != 0) {
        assert_true (needed > n_free);
        assert_int_equal (n_copies, 0);
        assert_true (table->blocks == old_array && table->capacity == old_capacity);
        assert_int_equal (table->n_blocks, old_n_blocks);
        assert_int_equal (table->n_committed, old_committed);
        assert_memory_equal (table->blocks, old_blocks, old_n_blocks * sizeof (uint32_t));
        assert_int_equal (block_manager_n_free (r->bm), n_free);
        r->n_grow_failures++;
        return false;
    }
    assert_true (needed <= n_free);
    assert_int_equal (block_manager_n_free (r->bm), n_free - needed);
    uint32_t want = n_positions / bs + (n_positions % bs != 0);
    assert_int_equal (table->n_blocks, want > old_n_blocks? want: old_n_blocks);
    assert_int_equal (table->n_blocks - old_n_blocks + n_copies, needed);

    //  Only blocks the writes touch changed, each one listed as a copy, once, in order
    uint32_t first_touched = first_write / bs;
    uint32_t j = 0;
    for (uint32_t i = 0; i < old_n_blocks; i++) {
        if (table->blocks [i] == old_blocks [i])
            continue;
        assert_true (first_write < n_positions && i >= first_touched && i < want);
        assert_true (j < n_copies);
        assert_int_equal (copies [j].src, old_blocks [i]);
        assert_int_equal (copies [j].dst, table->blocks [i]);
        j++;
    }
    assert_int_equal (j, n_copies);
    if (first_write < n_positions && first_touched < old_n_blocks)
        assert_true (table->n_committed <= first_touched);
    assert_true (table->n_committed <= old_committed);

    //  The worker: copies first, then the writes
    for (uint32_t c = 0; c < n_copies; c++) {
        memcpy (r->row_token + (size_t) copies [c].dst * bs,
                r->row_token + (size_t) copies [c].src * bs, bs * sizeof (uint32_t));
        memcpy (r->row_context + (size_t) copies [c].dst * bs,
                r->row_context + (size_t) copies [c].src * bs, bs * sizeof (uint64_t));
    }
    for (uint32_t p = first_write; p < n_positions; p++) {
        size_t row = (size_t) table->blocks [p / bs] * bs + p % bs;
        r->row_token [row] = seq->tokens [p];
        r->row_context [row] = seq->context [p];
    }
    seq->n_written = n_positions;
    r->n_copies += n_copies;

    if (r_next (r, 5) > 0) {
        uint32_t committed = table->n_committed;
        block_manager_commit (r->bm, table, seq->tokens, seq->n_written);
        assert_true (table->n_committed >= committed);
        uint32_t n_full = seq->n_written / bs;
        if (r->caching && table->n_committed < n_full)
            r->n_twins++;
    }
    return true;
}

//  Compute more of a sequence: the rest of its prompt in chunks, then generated tokens.
static void
r_step (r_state_t *r)
{
    int s = r_live_seq (r);
    if (s < 0)
        return;
    r_seq_t *seq = &r->seqs [s];
    uint32_t n_positions = seq->n_written + 1 + r_next (r, r_next (r, 4) == 0? 12: 3);
    if (n_positions > R_MAX_LEN) {
        r_free_seq (r, seq);               //  finished
        return;
    }
    r_generate (r, seq, n_positions);
    if (!r_grow (r, seq, seq->n_written, n_positions)) {
        //  Preempt someone (maybe itself)
        int victim = r_live_seq (r);
        r_free_seq (r, &r->seqs [victim]);
    }
}

//  Go back to an earlier position and compute other tokens from there (the table keeps
//  its blocks).
static void
r_rewind (r_state_t *r)
{
    int s = r_live_seq (r);
    if (s < 0)
        return;
    r_seq_t *seq = &r->seqs [s];
    uint32_t from = r_next (r, seq->n_written + 1);
    uint32_t n_positions = from + 1 + r_next (r, 6);
    if (n_positions > R_MAX_LEN)
        n_positions = R_MAX_LEN;
    if (from >= n_positions)
        return;
    r_seq_t saved = *seq;
    seq->n_tokens = from;
    r_generate (r, seq, n_positions);
    r->n_rewinds++;
    if (!r_grow (r, seq, from, n_positions))
        *seq = saved;                       //  nothing happened
}

static void
r_fork (r_state_t *r)
{
    int s = r_live_seq (r);
    int d = r_free_slot (r);
    if (s < 0 || d < 0)
        return;
    r_seq_t *src = &r->seqs [s];
    r_seq_t *dst = &r->seqs [d];
    memset (dst, 0, sizeof *dst);
    assert_int_equal (block_manager_fork (r->bm, &src->table, &dst->table), 0);
    assert_int_equal (dst->table.n_blocks, src->table.n_blocks);
    assert_memory_equal (dst->table.blocks, src->table.blocks,
                         src->table.n_blocks * sizeof (uint32_t));
    assert_int_equal (dst->table.n_committed, src->table.n_committed);
    //  Same past, its own future
    memcpy (dst->tokens, src->tokens, sizeof dst->tokens);
    memcpy (dst->context, src->context, sizeof dst->context);
    dst->n_tokens = src->n_written;
    dst->n_written = src->n_written;
    dst->live = true;
    r->n_forks++;
}

static void
r_commit (r_state_t *r)
{
    int s = r_live_seq (r);
    if (s < 0)
        return;
    r_seq_t *seq = &r->seqs [s];
    uint32_t committed = seq->table.n_committed;
    block_manager_commit (r->bm, &seq->table, seq->tokens, seq->n_written);
    assert_true (seq->table.n_committed >= committed);
}

static void
r_run (uint32_t n_blocks, uint32_t block_size, bool caching, uint64_t seed, int n_ops)
{
    r_state_t *r = (r_state_t *) calloc (1, sizeof (r_state_t));
    assert_non_null (r);
    r->n_blocks = n_blocks;
    r->block_size = block_size;
    r->caching = caching;
    r->rng = seed;
    r->bm = block_manager_new (n_blocks, block_size, caching);
    assert_non_null (r->bm);
    size_t n_rows = (size_t) n_blocks * block_size;
    r->row_token = (uint32_t *) malloc (n_rows * sizeof (uint32_t));
    r->row_context = (uint64_t *) malloc (n_rows * sizeof (uint64_t));
    r->refs = (uint32_t *) malloc (n_blocks * sizeof (uint32_t));
    assert_true (r->row_token && r->row_context && r->refs);
    for (size_t i = 0; i < n_rows; i++) {
        r->row_token [i] = UINT32_MAX;
        r->row_context [i] = UINT64_MAX;
    }
    for (int k = 0; k < R_N_PREFIXES; k++)
        for (int i = 0; i < R_PREFIX_LEN; i++)
            //  Prefixes 1 and 2 share their first 5 tokens
            r->prefixes [k][i] = (k == 2 && i < 5)? r->prefixes [1][i]: r_next (r, 6);

    for (int op = 0; op < n_ops; op++) {
        uint32_t what = r_next (r, 100);
        if (what < 20)
            r_new_seq (r);
        else
        if (what < 75)
            r_step (r);
        else
        if (what < 80)
            r_rewind (r);
        else
        if (what < 86)
            r_fork (r);
        else
        if (what < 92)
            r_commit (r);
        else {
            int s = r_live_seq (r);
            if (s >= 0)
                r_free_seq (r, &r->seqs [s]);
        }
        r_verify (r);
    }
    for (int s = 0; s < R_MAX_SEQS; s++)
        if (r->seqs [s].live)
            r_free_seq (r, &r->seqs [s]);
    r_verify (r);
    assert_int_equal (block_manager_n_free (r->bm), n_blocks);

    print_message ("# %u blocks of %u, caching %s, seed %llu: %llu blocks matched, "
                   "%llu copies, %llu grow failures, %llu forks, %llu rewinds, %llu short commits\n",
                   n_blocks, block_size, caching? "on": "off", (unsigned long long) seed,
                   (unsigned long long) r->n_matched_blocks, (unsigned long long) r->n_copies,
                   (unsigned long long) r->n_grow_failures, (unsigned long long) r->n_forks,
                   (unsigned long long) r->n_rewinds, (unsigned long long) r->n_twins);
    //  The run did what it is for
    assert_true (r->n_copies > 0 && r->n_grow_failures > 0 && r->n_forks > 0);
    if (caching)
        assert_true (r->n_matched_blocks > 0 && r->n_twins > 0);

    block_manager_destroy (&r->bm);
    free (r->row_token);
    free (r->row_context);
    free (r->refs);
    free (r);
}

static void
test_randomized (void **state)
{
    (void) state;
    r_run (32, 4, true, 1, 20000);
    r_run (32, 4, true, 2, 20000);
    r_run (32, 4, true, 3, 20000);
    r_run (32, 4, false, 4, 10000);
    r_run (40, 1, true, 5, 10000);
    r_run (20, 3, true, 6, 10000);
    r_run (12, 8, true, 7, 10000);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_new_and_destroy),
        cmocka_unit_test (test_prefix_reuse),
        cmocka_unit_test (test_fork_copy_on_write),
        cmocka_unit_test (test_lru_eviction),
        cmocka_unit_test (test_match_stops_at_mismatch),
        cmocka_unit_test (test_identical_blocks_registered_twice),
        cmocka_unit_test (test_prefix_caching_off),
        cmocka_unit_test (test_cached_prefix_changes_nothing),
        cmocka_unit_test (test_grow_failure_changes_nothing),
        cmocka_unit_test (test_write_into_registered_block),
        cmocka_unit_test (test_evicted_block_takes_its_chain),
        cmocka_unit_test (test_randomized),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
