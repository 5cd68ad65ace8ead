/*  vocab — a model's vocabulary and llama.cpp's SPM and byte-level BPE tokenizers.
    See vocab.h.

    Loading copies each token's text into one blob (every text NUL-terminated, so that
    vocab_token_text can hand it out), with its score, its type and the piece it stands for
    in output text, and builds an open-addressing hash table from text to id. The
    end-of-generation tokens and the type changes that come with them are settled first,
    as llama.cpp does at load, since they decide which tokens are control tokens.

    Tokenizing follows llama.cpp (llama-vocab.cpp: tokenizer_st_partition, then
    llm_tokenizer_spm or llm_tokenizer_bpe) step by step:

    1. Partition. User-defined tokens (type 4) are cut out of the text before anything else,
       as llama.cpp does even when special tokens are not parsed: longest token first, and
       for each token every occurrence, leftmost first. With special tokens parsed, control
       and unknown tokens are cut out too. What is left are raw fragments, each tokenized
       on its own.

    SPM, for each raw fragment:

    2. The fragment gets a leading space when add_space_prefix holds and the fragment is
       the first or follows a cut-out token; then every space becomes U+2581 ("▁").
    3. The fragment is split into UTF-8 characters. Each adjacent pair whose joined text
       is a token goes into a max-heap ordered by that token's score, the leftmost pair
       first on ties. Popping a pair merges it, if neither side changed since it was
       pushed, and pushes the new pairs the merged symbol forms with its neighbours.
       Where no token has a "▁" after another character (checked at load; true of the
       SentencePiece vocabularies seen), no merge can cross from a character into a
       following "▁", so the fragment is cut there into words, each merged on its own
       with a small heap: the same result, ten times faster on long text.
       One deliberate difference: a byte that does not start a well-formed character is a
       symbol of its own, where llama.cpp takes as many bytes as the lead byte announces
       without checking them. Both give byte tokens for such bytes; only the characters
       after a broken sequence can differ.
    4. Each final symbol whose text is a token is output. The others are single characters
       that no token covers: their bytes are output as <0xNN> tokens. (llama.cpp's
       resegment would first look the symbol up in its merge history, but a merged symbol's
       text is always a token, so only unmerged characters ever get there.)

    BPE, for each raw fragment:

    2. A byte that does not start a well-formed UTF-8 character reads as U+FFFD, as
       llama.cpp's unicode_cpts_from_utf8 does (llama.cpp also accepts overlong forms and
       surrogates, which are read as U+FFFD here).
    3. Pre-tokenize: the pre-tokenizer's regular expressions (PCRE2, UTF and Unicode
       properties, JIT-compiled) are applied in order. Each one splits every piece that
       the ones before it left: its matches and the text between them all become pieces,
       as llama.cpp's unicode_regex_split does. A pattern sees only its piece, so a
       lookahead stops at the piece's end. Where llama.cpp runs a hand-written matcher
       (gpt-2, llama3) or std::regex over category-collapsed text, the pattern here is
       written to give the same pieces: \s is Unicode's White_Space (llama.cpp's
       whitespace set), and where llama.cpp's collapsed \p{S} misses "~", so does ours.
    4. Each final piece (word) is merged: one symbol per byte, written in GPT-2's
       byte-to-unicode alphabet; each adjacent pair that tokenizer.ggml.merges lists goes
       into a min-heap by the merge's rank, the leftmost first on ties; popping a pair
       merges it if neither side changed, and pushes the pairs the merged symbol forms.
       Symbols are numbered (a token's id, or a number past the vocabulary for a merge
       result that is not a token), so a pair's rank is one hash lookup on two numbers.
    5. Each final symbol that is a token is output; any other symbol outputs, for each
       byte of its alphabet text, the one-byte token of that byte when there is one
       (llama.cpp's fallback, which in practice never fires).
       Words of up to 64 bytes are cached per call: text repeats its words.

    Work per call is O(n log n) in the text's length; all of a call's state is on its own
    session_t, so many threads may tokenize with one vocab_t.
*/
#include "vocab.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Token types as tokenizer.ggml.token_type numbers them.
typedef enum {
    TOKEN_TYPE_UNDEFINED = 0,
    TOKEN_TYPE_NORMAL = 1,
    TOKEN_TYPE_UNKNOWN = 2,
    TOKEN_TYPE_CONTROL = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED = 5,
    TOKEN_TYPE_BYTE = 6
} token_type_t;

//  The tokenizer a vocabulary uses (tokenizer.ggml.model).
typedef enum {
    VOCAB_MODEL_SPM,                //  "llama"
    VOCAB_MODEL_BPE                 //  "gpt2"
} vocab_model_t;

//  "▁", U+2581, which SentencePiece writes for a space.
#define SPACE_MARK "\xe2\x96\x81"
#define SPACE_MARK_LEN 3

//  U+FFFD, which an invalid byte reads as before BPE.
#define REPLACEMENT_CHAR "\xef\xbf\xbd"
#define REPLACEMENT_CHAR_LEN 3

//  Texts longer than this are refused: symbol offsets are 32-bit, and each input byte
//  may grow to three (a space becomes "▁", an invalid byte U+FFFD).
#define VOCAB_MAX_TEXT ((size_t) 256 << 20)

//  The most regular expressions a BPE pre-tokenizer applies.
#define PRE_MAX_REGEXES 8

//  BPE words up to this many bytes are cached per call, up to this many words.
#define WORD_CACHE_MAX_LEN 64
#define WORD_CACHE_MAX_WORDS (1u << 16)

//  The most end-of-generation tokens kept.
#define EOG_MAX 64

//  GPT-2's byte alphabet uses the codepoints below this one.
#define ALPHABET_END 0x144

//  A token that the partition step cuts out of the text before the SPM pass.
typedef struct {
    uint32_t id;
    uint32_t len;                   //  bytes of its text
    bool rstrip;                    //  whitespace after it is dropped (llama.cpp's Phi-3 rule)
} special_t;

//  One slot of the BPE merge table: the pair (left, right) of symbol numbers merges, at
//  this rank, into symbol result. key is UINT64_MAX in an empty slot.
typedef struct {
    uint64_t key;                   //  left << 32 | right
    uint32_t rank;
    uint32_t result;
} merge_slot_t;

struct _vocab_t {
    vocab_model_t model;
    uint32_t size;                  //  number of tokens
    char *text_blob;                //  every token's text, each followed by a NUL
    size_t *text_offset;            //  where token i's text starts in text_blob
    uint32_t *text_len;             //  its length in bytes (it may hold NULs)
    float *score;
    uint8_t *type;                  //  token_type_t
    char *piece_blob;               //  every token's output piece, back to back
    size_t *piece_offset;           //  size + 1 entries: piece i is [offset[i], offset[i+1])
    uint32_t *table;                //  hash slots: id + 1, or 0 when empty
    size_t table_mask;              //  slot count - 1 (a power of two)
    special_t *specials;            //  unknown, control and user-defined tokens, longest first
    size_t special_count;
    uint32_t bos;
    uint32_t eos;
    uint32_t unk;
    bool add_bos;
    bool add_eos;
    uint32_t eog [EOG_MAX];         //  end-of-generation tokens, ascending
    size_t eog_count;

    //  SPM
    uint32_t byte_token [256];      //  the token each byte falls back to; UINT32_MAX if none
    bool add_space_prefix;
    bool words_split_at_space;      //  no token has a "▁" after another character

    //  BPE
    char pre_name [64];             //  tokenizer.ggml.pre
    pcre2_code *pre_regex [PRE_MAX_REGEXES];
    size_t pre_count;
    bool ignore_merges;             //  a word that is a token is output whole
    merge_slot_t *merges;           //  open addressing, at most half full
    size_t merge_mask;
    char byte_char [256][2];        //  GPT-2's alphabet: each byte's character, in UTF-8
    uint8_t byte_char_len [256];
    int16_t alphabet_byte [ALPHABET_END];   //  the byte each character stands for, or -1
    uint32_t byte_symbol [256];     //  the symbol number of each byte's character
    uint32_t byte_fallback [256][2];    //  the one-byte tokens a stray byte falls back to
    uint8_t byte_fallback_count [256];
};

//  --- Errors ----------------------------------------------------------------------------

static void
s_set_error (char *err, size_t err_size, const char *format, ...)
{
    if (!err || err_size == 0)
        return;
    va_list args;
    va_start (args, format);
    vsnprintf (err, err_size, format, args);
    va_end (args);
}

//  --- UTF-8 -----------------------------------------------------------------------------

//  Length of the well-formed UTF-8 character at text[0..avail-1], or 1 when the bytes
//  there do not form one (a stray continuation byte, an overlong form, a surrogate, a
//  truncated sequence): such a byte becomes a symbol of its own.
static size_t
s_utf8_char_len (const unsigned char *text, size_t avail)
{
    unsigned char lead = text [0];
    size_t need;
    unsigned char second_low = 0x80;
    unsigned char second_high = 0xBF;

    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF)
        need = 2;
    else
    if (lead == 0xE0) {
        need = 3;
        second_low = 0xA0;
    }
    else
    if (lead == 0xED) {
        need = 3;
        second_high = 0x9F;
    }
    else
    if (lead >= 0xE1 && lead <= 0xEF)
        need = 3;
    else
    if (lead == 0xF0) {
        need = 4;
        second_low = 0x90;
    }
    else
    if (lead == 0xF4) {
        need = 4;
        second_high = 0x8F;
    }
    else
    if (lead >= 0xF1 && lead <= 0xF3)
        need = 4;
    else
        return 1;

    if (avail < need)
        return 1;
    if (text [1] < second_low || text [1] > second_high)
        return 1;
    for (size_t i = 2; i < need; i++)
        if (text [i] < 0x80 || text [i] > 0xBF)
            return 1;
    return need;
}

//  True when text[at] starts a well-formed character (or is ASCII).
static bool
s_utf8_valid_at (const unsigned char *text, size_t at, size_t len)
{
    return text [at] < 0x80 || s_utf8_char_len (text + at, len - at) > 1;
}

//  Writes codepoint as UTF-8 at out (room for 4 bytes); returns its length.
static size_t
s_utf8_encode (uint32_t codepoint, char *out)
{
    if (codepoint < 0x80) {
        out [0] = (char) codepoint;
        return 1;
    }
    if (codepoint < 0x800) {
        out [0] = (char) (0xC0 | (codepoint >> 6));
        out [1] = (char) (0x80 | (codepoint & 0x3F));
        return 2;
    }
    if (codepoint < 0x10000) {
        out [0] = (char) (0xE0 | (codepoint >> 12));
        out [1] = (char) (0x80 | ((codepoint >> 6) & 0x3F));
        out [2] = (char) (0x80 | (codepoint & 0x3F));
        return 3;
    }
    out [0] = (char) (0xF0 | (codepoint >> 18));
    out [1] = (char) (0x80 | ((codepoint >> 12) & 0x3F));
    out [2] = (char) (0x80 | ((codepoint >> 6) & 0x3F));
    out [3] = (char) (0x80 | (codepoint & 0x3F));
    return 4;
}

//  Decodes the well-formed character at text[0..avail-1] into *codepoint and returns its
//  length; returns 0 when the bytes there do not form one.
static size_t
s_utf8_decode (const unsigned char *text, size_t avail, uint32_t *codepoint)
{
    size_t len = s_utf8_char_len (text, avail);
    if (len == 1) {
        if (text [0] >= 0x80)
            return 0;
        *codepoint = text [0];
        return 1;
    }
    uint32_t value = text [0] & (0xFF >> (len + 1));
    for (size_t i = 1; i < len; i++)
        value = (value << 6) | (text [i] & 0x3F);
    *codepoint = value;
    return len;
}

//  --- Hash table: token text to id ------------------------------------------------------

//  FNV-1a, 64-bit.
static uint64_t
s_hash (const char *text, size_t len)
{
    uint64_t hash = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) {
        hash ^= (unsigned char) text [i];
        hash *= 1099511628211ULL;
    }
    return hash;
}

static bool
s_text_equals (const vocab_t *self, uint32_t id, const char *text, size_t len)
{
    return self->text_len [id] == len
        && memcmp (self->text_blob + self->text_offset [id], text, len) == 0;
}

//  The id of the token whose text is text[0..len-1], or UINT32_MAX.
static uint32_t
s_lookup (const vocab_t *self, const char *text, size_t len)
{
    size_t slot = (size_t) s_hash (text, len) & self->table_mask;
    while (self->table [slot]) {
        uint32_t id = self->table [slot] - 1;
        if (s_text_equals (self, id, text, len))
            return id;
        slot = (slot + 1) & self->table_mask;
    }
    return UINT32_MAX;
}

//  Adds token id. When another token has the same text, the later id wins, as in
//  llama.cpp's token_to_id map.
static void
s_table_insert (vocab_t *self, uint32_t id)
{
    const char *text = self->text_blob + self->text_offset [id];
    size_t len = self->text_len [id];
    size_t slot = (size_t) s_hash (text, len) & self->table_mask;
    while (self->table [slot]) {
        if (s_text_equals (self, self->table [slot] - 1, text, len))
            break;
        slot = (slot + 1) & self->table_mask;
    }
    self->table [slot] = id + 1;
}

//  --- GPT-2's byte alphabet ---------------------------------------------------------------

//  Byte-level BPE writes every byte as a printable character: the bytes that are
//  printable in Latin-1 ("!".."~", "¡".."¬", "®".."ÿ") stand for themselves, the others
//  (control bytes, space, DEL, NBSP, soft hyphen) take U+0100, U+0101, ... in byte order.
//  Fills codepoints[byte], and byte_of[codepoint] for codepoints below ALPHABET_END (-1
//  for a codepoint that stands for no byte).
static void
s_gpt2_alphabet (uint32_t codepoints [256], int16_t byte_of [ALPHABET_END])
{
    for (uint32_t codepoint = 0; codepoint < ALPHABET_END; codepoint++)
        byte_of [codepoint] = -1;
    uint32_t next = 0x100;
    for (int byte = 0; byte < 256; byte++) {
        bool printable = (byte >= 0x21 && byte <= 0x7E)
                      || (byte >= 0xA1 && byte <= 0xAC)
                      || (byte >= 0xAE && byte <= 0xFF);
        codepoints [byte] = printable? (uint32_t) byte: next++;
        byte_of [codepoints [byte]] = (int16_t) byte;
    }
}

//  --- BPE pre-tokenizers ------------------------------------------------------------------

//  The regular expressions of llama.cpp's pre-tokenizers (llm_tokenizer_bpe), written for
//  PCRE2. In these, \s and \S are read as Unicode's White_Space and its complement (see
//  s_expand_pattern): the whitespace llama.cpp's matchers use.

//  GPT-2's: llama.cpp matches it by hand, with a final \s+ (the same pieces either way).
static const char s_pattern_gpt2 [] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

//  Llama 3's, with the case-insensitive contractions spelled out as llama.cpp has them.
static const char s_pattern_llama3 [] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

//  Qwen2's: Llama 3's with one digit at a time.
static const char s_pattern_qwen2 [] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

//  BLOOM's: words up to a space or punctuation ("…。，、।۔،").
static const char s_pattern_bloom [] =
    " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{964}\\x{6D4}\\x{60C})]+";

//  Tekken's (Mistral): llama.cpp's form, where a letter outside ASCII counts as both
//  upper and lower case.
static const char s_pattern_tekken [] =
    "[^\\r\\n\\p{L}\\p{N}]?(?:(?=\\p{L})[^a-z])*(?:(?=\\p{L})[^A-Z])+"
    "|[^\\r\\n\\p{L}\\p{N}]?(?:(?=\\p{L})[^a-z])+(?:(?=\\p{L})[^A-Z])*"
    "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

//  GPT-4o's (o200k), in llama.cpp's form.
static const char s_pattern_gpt4o [] =
    "[^\\r\\n\\p{L}\\p{N}]?(?:(?=\\p{L})[^a-z])*(?:(?=\\p{L})[^A-Z])+"
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
    "|[^\\r\\n\\p{L}\\p{N}]?(?:(?=\\p{L})[^a-z])+(?:(?=\\p{L})[^A-Z])*"
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char s_pattern_bailingmoe [] =
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";

static const char s_pattern_seed_coder [] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

//  DeepSeek V3's third pattern. llama.cpp matches it over category-collapsed text, where
//  \p{S} lacks "~": so "~" may lead a word and does not join a punctuation run.
static const char s_pattern_deepseek3 [] =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
    "|(?:~|[^\\r\\n\\p{L}\\p{P}\\p{S}])?[\\p{L}\\p{M}]+"
    "| ?(?:(?!~)[\\p{P}\\p{S}])+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

//  Kimi K2's, as llama.cpp's hand-written matcher reads it: runs of Han characters (its
//  ranges), then words of other letters with an optional contraction, then Llama 3's.
static const char s_pattern_kimi_k2 [] =
    "[\\x{4E00}-\\x{9FFF}\\x{3400}-\\x{4DBF}\\x{20000}-\\x{2A6DF}\\x{2A700}-\\x{2B73F}"
    "\\x{2B740}-\\x{2B81F}\\x{2B820}-\\x{2CEAF}\\x{2CEB0}-\\x{2EBEF}\\x{F900}-\\x{FAFF}"
    "\\x{2F800}-\\x{2FA1F}]+"
    "|[^\\r\\n\\p{L}\\p{N}]?"
    "(?:(?![\\x{4E00}-\\x{9FFF}\\x{3400}-\\x{4DBF}\\x{20000}-\\x{2A6DF}\\x{2A700}-\\x{2B73F}"
    "\\x{2B740}-\\x{2B81F}\\x{2B820}-\\x{2CEAF}\\x{2CEB0}-\\x{2EBEF}\\x{F900}-\\x{FAFF}"
    "\\x{2F800}-\\x{2FA1F}])\\p{L})+"
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

//  CJK runs (DeepSeek): U+4E00..U+9FA5, U+0800..U+4E00, Hangul U+AC00..U+D7FF.
static const char s_pattern_cjk [] =
    "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";

//  DeepSeek LLM's letters: the cased letters (upper, lower, title case), as ranges.
static const char s_pattern_deepseek_letters [] =
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-"
    "\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-"
    "\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}"
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}"
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}"
    "\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-"
    "\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}"
    "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}"
    "\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}"
    "\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-"
    "\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}"
    "\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}"
    "\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}"
    "\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}"
    "\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-"
    "\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"
    "\\x{1E900}-\\x{1E943}]+";

static const char *const s_regexes_default [] = {
    "[\\p{P}\\$\\+<=>\\^~\\|]+", s_pattern_gpt2, "\\p{N}+", "[0-9][0-9][0-9]", NULL
};
static const char *const s_regexes_gpt2 [] = { s_pattern_gpt2, NULL };
static const char *const s_regexes_llama3 [] = { s_pattern_llama3, NULL };
static const char *const s_regexes_qwen2 [] = { s_pattern_qwen2, NULL };
static const char *const s_regexes_starcoder [] = { "\\p{N}", s_pattern_gpt2, NULL };
static const char *const s_regexes_falcon [] = {
    "[\\p{P}\\$\\+<=>\\^~\\|`]+", s_pattern_gpt2, "[0-9][0-9][0-9]", NULL
};
static const char *const s_regexes_deepseek_llm [] = {
    "[\\r\\n]", s_pattern_deepseek_letters,
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
    "\\s+$", s_pattern_cjk, "\\p{N}+", NULL
};
static const char *const s_regexes_deepseek_coder [] = {
    "[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", s_pattern_cjk, "\\p{N}", NULL
};
static const char *const s_regexes_deepseek3 [] = {
    "\\p{N}{1,3}", "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
    s_pattern_deepseek3, NULL
};
static const char *const s_regexes_bloom [] = { s_pattern_bloom, NULL };
static const char *const s_regexes_viking [] = { s_pattern_bloom, "\\p{N}", NULL };
static const char *const s_regexes_tekken [] = { s_pattern_tekken, NULL };
static const char *const s_regexes_chameleon [] = {
    "<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )",
    "\\p{N}", "[\\p{P}!-/:-@\\[-`{-~]", s_pattern_gpt2, NULL
};
static const char *const s_regexes_gpt4o [] = { s_pattern_gpt4o, NULL };
static const char *const s_regexes_superbpe [] = {
    "\\p{N}+", "(?=([0-9]{3})+(?![0-9]))", NULL
};
static const char *const s_regexes_bailingmoe [] = { s_pattern_bailingmoe, NULL };
static const char *const s_regexes_seed_coder [] = { s_pattern_seed_coder, NULL };
static const char *const s_regexes_kimi_k2 [] = { s_pattern_kimi_k2, NULL };

//  A tokenizer.ggml.pre name llama.cpp knows, what it applies and its flags.
typedef struct {
    const char *name;
    const char *const *regexes;     //  NULL-terminated
    bool ignore_merges;             //  a word that is a token is output whole
    bool add_bos;                   //  the default when add_bos_token is absent
} pre_tokenizer_t;

static const pre_tokenizer_t s_pre_tokenizers [] = {
    { "default", s_regexes_default, false, false },
    { "llama3", s_regexes_llama3, true, true },
    { "llama-v3", s_regexes_llama3, true, true },
    { "llama-bpe", s_regexes_llama3, true, true },
    { "falcon3", s_regexes_llama3, true, true },
    { "falcon-h1", s_regexes_llama3, true, true },
    { "pixtral", s_regexes_llama3, true, true },
    { "midm-2.0", s_regexes_llama3, true, true },
    { "lfm2", s_regexes_llama3, true, true },
    { "dbrx", s_regexes_llama3, false, false },
    { "smaug-bpe", s_regexes_llama3, false, false },
    { "chatglm-bpe", s_regexes_llama3, false, false },
    { "glm4", s_regexes_llama3, false, false },
    { "deepseek-llm", s_regexes_deepseek_llm, false, false },
    { "deepseek-coder", s_regexes_deepseek_coder, false, false },
    { "deepseek-v3", s_regexes_deepseek3, false, false },
    { "hunyuan-dense", s_regexes_deepseek3, false, false },
    { "falcon", s_regexes_falcon, false, false },
    { "gpt-2", s_regexes_gpt2, false, false },
    { "phi-2", s_regexes_gpt2, false, false },
    { "mpt", s_regexes_gpt2, false, false },
    { "olmo", s_regexes_gpt2, false, false },
    { "jais", s_regexes_gpt2, false, false },
    { "trillion", s_regexes_gpt2, false, false },
    { "granite-docling", s_regexes_gpt2, false, false },
    { "exaone4", s_regexes_gpt2, false, false },
    { "jina-es", s_regexes_gpt2, false, false },
    { "jina-de", s_regexes_gpt2, false, false },
    { "jina-v1-en", s_regexes_gpt2, false, false },
    { "jina-v2-es", s_regexes_gpt2, false, false },
    { "jina-v2-de", s_regexes_gpt2, false, false },
    { "jina-v2-code", s_regexes_gpt2, false, false },
    { "roberta-bpe", s_regexes_gpt2, false, false },
    { "gigachat", s_regexes_gpt2, false, false },
    { "a.x-4.0", s_regexes_gpt2, false, false },
    { "mellum", s_regexes_gpt2, false, false },
    { "starcoder", s_regexes_starcoder, false, false },
    { "refact", s_regexes_starcoder, false, false },
    { "command-r", s_regexes_starcoder, false, false },
    { "smollm", s_regexes_starcoder, false, false },
    { "codeshell", s_regexes_starcoder, false, false },
    { "exaone", s_regexes_starcoder, false, false },
    { "minerva-7b", s_regexes_starcoder, false, false },
    { "qwen2", s_regexes_qwen2, false, false },
    { "deepseek-r1-qwen", s_regexes_qwen2, false, false },
    { "stablelm2", s_regexes_qwen2, false, false },
    { "megrez", s_regexes_qwen2, false, false },
    { "hunyuan", s_regexes_qwen2, false, false },
    { "grok-2", s_regexes_qwen2, false, false },
    { "poro-chat", s_regexes_bloom, false, false },
    { "bloom", s_regexes_bloom, false, false },
    { "gpt3-finnish", s_regexes_bloom, false, false },
    { "viking", s_regexes_viking, false, false },
    { "tekken", s_regexes_tekken, true, true },
    { "chameleon", s_regexes_chameleon, false, true },
    { "gpt-4o", s_regexes_gpt4o, false, false },
    { "llama4", s_regexes_gpt4o, false, false },
    { "minimax-m2", s_regexes_gpt4o, false, false },
    { "superbpe", s_regexes_superbpe, false, false },
    { "bailingmoe", s_regexes_bailingmoe, false, false },
    { "bailingmoe2", s_regexes_bailingmoe, false, false },
    { "llada-moe", s_regexes_bailingmoe, false, false },
    { "seed-coder", s_regexes_seed_coder, false, false },
    { "kimi-k2", s_regexes_kimi_k2, false, false },
};

static const pre_tokenizer_t *
s_find_pre_tokenizer (const char *name)
{
    size_t count = sizeof s_pre_tokenizers / sizeof s_pre_tokenizers [0];
    for (size_t i = 0; i < count; i++)
        if (strcmp (s_pre_tokenizers [i].name, name) == 0)
            return &s_pre_tokenizers [i];
    return NULL;
}

//  Writes pattern into out (cap bytes) with \s as \p{White_Space} and \S as
//  \P{White_Space}; other escapes are copied as they are. Returns -1 if out is too small.
static int
s_expand_pattern (const char *pattern, char *out, size_t cap)
{
    size_t used = 0;
    for (size_t i = 0; pattern [i]; i++) {
        const char *piece = NULL;
        char pair [3] = { pattern [i], 0, 0 };
        if (pattern [i] == '\\' && pattern [i + 1]) {
            i++;
            pair [1] = pattern [i];
            if (pattern [i] == 's')
                piece = "\\p{White_Space}";
            else
            if (pattern [i] == 'S')
                piece = "\\P{White_Space}";
        }
        if (!piece)
            piece = pair;
        size_t len = strlen (piece);
        if (used + len + 1 > cap)
            return -1;
        memcpy (out + used, piece, len);
        used += len;
    }
    out [used] = 0;
    return 0;
}

//  Compiles the pre-tokenizer's regular expressions into self->pre_regex.
static int
s_compile_pre_tokenizer (vocab_t *self, const pre_tokenizer_t *pre, char *err, size_t err_size)
{
    for (size_t i = 0; pre->regexes [i]; i++) {
        if (i >= PRE_MAX_REGEXES) {
            s_set_error (err, err_size, "pre-tokenizer \"%s\" has too many patterns", pre->name);
            return -1;
        }
        size_t cap = strlen (pre->regexes [i]) * 8 + 1;
        char *pattern = (char *) malloc (cap);
        if (!pattern || s_expand_pattern (pre->regexes [i], pattern, cap)) {
            free (pattern);
            s_set_error (err, err_size, "out of memory");
            return -1;
        }
        int error_code;
        PCRE2_SIZE error_offset;
        pcre2_code *code = pcre2_compile ((PCRE2_SPTR) pattern, PCRE2_ZERO_TERMINATED,
                                          PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY,
                                          &error_code, &error_offset, NULL);
        free (pattern);
        if (!code) {
            PCRE2_UCHAR message [128];
            pcre2_get_error_message (error_code, message, sizeof message);
            s_set_error (err, err_size, "pre-tokenizer \"%s\", pattern %zu: %s at %zu",
                         pre->name, i, (const char *) message, (size_t) error_offset);
            return -1;
        }
        //  Without JIT (not built in, or no executable memory) matching still works.
        pcre2_jit_compile (code, PCRE2_JIT_COMPLETE);
        self->pre_regex [self->pre_count++] = code;
    }
    return 0;
}

//  --- Loading ---------------------------------------------------------------------------

//  A special-token id from the GGUF, or UINT32_MAX when it is missing or out of range.
static uint32_t
s_special_id (const gguf_t *gguf, const char *key, uint32_t size)
{
    uint32_t id;
    if (gguf_get_u32 (gguf, key, &id) || id >= size)
        return UINT32_MAX;
    return id;
}

static bool
s_get_bool_or (const gguf_t *gguf, const char *key, bool fallback)
{
    bool value;
    return gguf_get_bool (gguf, key, &value)? fallback: value;
}

//  The byte a <0xNN> token stands for; -1 when its text has another form.
static int
s_byte_of_token_text (const char *text, size_t len)
{
    if (len != 6 || memcmp (text, "<0x", 3) != 0 || text [5] != '>')
        return -1;
    int value = 0;
    for (int i = 3; i < 5; i++) {
        char c = text [i];
        int digit;
        if (c >= '0' && c <= '9')
            digit = c - '0';
        else
        if (c >= 'A' && c <= 'F')
            digit = c - 'A' + 10;
        else
        if (c >= 'a' && c <= 'f')
            digit = c - 'a' + 10;
        else
            return -1;
        value = value * 16 + digit;
    }
    return value;
}

//  The bytes a normal BPE token's text stands for: each character of GPT-2's alphabet
//  becomes its byte. A character outside the alphabet is copied as it is (as Hugging
//  Face's ByteLevel decoder does; llama.cpp writes an "[UNK_BYTE_...]" marker there).
static size_t
s_decode_alphabet (const vocab_t *self, const char *text, size_t len, char *out)
{
    const unsigned char *bytes = (const unsigned char *) text;
    size_t written = 0;
    size_t i = 0;
    while (i < len) {
        uint32_t codepoint;
        size_t char_len = s_utf8_decode (bytes + i, len - i, &codepoint);
        int byte = (char_len && codepoint < ALPHABET_END)? self->alphabet_byte [codepoint]: -1;
        if (byte >= 0)
            out [written++] = (char) byte;
        else {
            if (char_len == 0)
                char_len = 1;
            memcpy (out + written, text + i, char_len);
            written += char_len;
        }
        i += char_len;
    }
    return written;
}

//  Writes token id's output piece at out (which has room for its text) and returns its
//  length. Follows llama.cpp's token_to_piece without special tokens: normal tokens with
//  "▁" as a space (SPM) or through the byte alphabet (BPE), byte tokens as their byte,
//  user-defined tokens as their text; control, unknown, unused and undefined tokens give
//  nothing.
static size_t
s_make_piece (const vocab_t *self, uint32_t id, char *out)
{
    const char *text = self->text_blob + self->text_offset [id];
    size_t len = self->text_len [id];
    switch (self->type [id]) {
        case TOKEN_TYPE_NORMAL: {
            if (self->model == VOCAB_MODEL_BPE)
                return s_decode_alphabet (self, text, len, out);
            size_t written = 0;
            size_t i = 0;
            while (i < len) {
                if (len - i >= SPACE_MARK_LEN && memcmp (text + i, SPACE_MARK, SPACE_MARK_LEN) == 0) {
                    out [written++] = ' ';
                    i += SPACE_MARK_LEN;
                }
                else
                    out [written++] = text [i++];
            }
            return written;
        }
        case TOKEN_TYPE_USER_DEFINED:
            memcpy (out, text, len);
            return len;
        case TOKEN_TYPE_BYTE: {
            int byte = s_byte_of_token_text (text, len);
            if (byte < 0)
                return 0;
            out [0] = (char) byte;
            return 1;
        }
        default:
            return 0;
    }
}

//  Orders specials longest text first, then by id (llama.cpp leaves ties unordered).
static int
s_compare_specials (const void *a, const void *b)
{
    const special_t *left = (const special_t *) a;
    const special_t *right = (const special_t *) b;
    if (left->len != right->len)
        return left->len > right->len? -1: 1;
    return left->id < right->id? -1: left->id > right->id;
}

//  True when the model's general.name, lowercased, contains "phi-3" or "phi3".
static bool
s_named_phi3 (const gguf_t *gguf)
{
    gguf_str_t name;
    if (gguf_get_str (gguf, "general.name", &name))
        return false;
    char lower [256];
    size_t len = name.len < sizeof lower - 1? (size_t) name.len: sizeof lower - 1;
    for (size_t i = 0; i < len; i++) {
        char c = name.ptr [i];
        lower [i] = (c >= 'A' && c <= 'Z')? (char) (c - 'A' + 'a'): c;
    }
    lower [len] = 0;
    return strstr (lower, "phi-3") || strstr (lower, "phi3");
}

//  True when text has a "▁" right after a character other than "▁".
static bool
s_has_inner_space_mark (const char *text, size_t len)
{
    const char *found = memmem (text, len, SPACE_MARK, SPACE_MARK_LEN);
    while (found) {
        size_t at = (size_t) (found - text);
        if (at > 0 && (at < SPACE_MARK_LEN
                       || memcmp (text + at - SPACE_MARK_LEN, SPACE_MARK, SPACE_MARK_LEN) != 0))
            return true;
        found = memmem (text + at + 1, len - at - 1, SPACE_MARK, SPACE_MARK_LEN);
    }
    return false;
}

//  Unknown, control and user-defined tokens: the ones written in text that the
//  partition step may cut out (llama.cpp's cache_special_tokens).
static bool
s_is_special_type (uint8_t type)
{
    return type == TOKEN_TYPE_UNKNOWN || type == TOKEN_TYPE_CONTROL
        || type == TOKEN_TYPE_USER_DEFINED;
}

//  Builds the list of tokens that the partition step cuts out. llama.cpp gives Phi-3
//  models (by name) right-strip on all of them except <unk>, <s> and <|endoftext|>.
static int
s_build_specials (vocab_t *self, const gguf_t *gguf)
{
    bool phi3 = s_named_phi3 (gguf);
    size_t count = 0;
    for (uint32_t id = 0; id < self->size; id++) {
        if (s_is_special_type (self->type [id]) && self->text_len [id] > 0)
            count++;
    }
    if (count == 0)
        return 0;
    self->specials = (special_t *) calloc (count, sizeof (special_t));
    if (!self->specials)
        return -1;
    for (uint32_t id = 0; id < self->size; id++) {
        if (s_is_special_type (self->type [id]) && self->text_len [id] > 0) {
            special_t *special = &self->specials [self->special_count++];
            special->id = id;
            special->len = self->text_len [id];
            const char *text = self->text_blob + self->text_offset [id];
            size_t len = self->text_len [id];
            special->rstrip = phi3
                && !(len == 5 && memcmp (text, "<unk>", 5) == 0)
                && !(len == 3 && memcmp (text, "<s>", 3) == 0)
                && !(len == 13 && memcmp (text, "<|endoftext|>", 13) == 0);
        }
    }
    qsort (self->specials, self->special_count, sizeof (special_t), s_compare_specials);
    return 0;
}

//  --- Loading: end of generation --------------------------------------------------------

//  Texts llama.cpp takes for the end-of-turn token when the GGUF names none.
static const char *const s_eot_texts [] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",     //  DeepSeek
    "<end_of_utterance>", NULL
};

//  Texts of the fill-in-the-middle tokens llama.cpp recognises when the GGUF names none.
static const char *const s_fim_pre_texts [] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>", "\xe2\x96\x81<PRE>",
    "<|code_prefix|>", NULL
};
static const char *const s_fim_suf_texts [] = {
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>", "<SUF>", "\xe2\x96\x81<SUF>",
    "<|code_suffix|>", NULL
};
static const char *const s_fim_mid_texts [] = {
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>", "\xe2\x96\x81<MID>",
    "<|code_middle|>", NULL
};
static const char *const s_fim_pad_texts [] = {
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL
};
static const char *const s_fim_rep_texts [] = {
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL
};
static const char *const s_fim_sep_texts [] = { "<|file_sep|>", NULL };

//  Texts that end generation whatever the GGUF says (llama.cpp's special_eog_ids).
static const char *const s_eog_texts [] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>",
    "<end_of_utterance>", NULL
};

static bool
s_text_in_list (const vocab_t *self, uint32_t id, const char *const *list)
{
    for (size_t i = 0; list [i]; i++)
        if (s_text_equals (self, id, list [i], strlen (list [i])))
            return true;
    return false;
}

//  A token that llama.cpp recognises by its text becomes a control token ("this is
//  probably a bug in the model. its type will be overridden").
static void
s_make_control (vocab_t *self, uint32_t id)
{
    self->type [id] = TOKEN_TYPE_CONTROL;
}

//  The special token named by key (or by old_key, the deprecated name, which wins as in
//  llama.cpp), or else the first token (lowest id) whose text is in list, made a control
//  token; UINT32_MAX when there is none.
static uint32_t
s_find_special (vocab_t *self, const gguf_t *gguf, const char *key, const char *old_key,
                const char *const *list)
{
    uint32_t id = old_key? s_special_id (gguf, old_key, self->size): UINT32_MAX;
    if (id == UINT32_MAX)
        id = s_special_id (gguf, key, self->size);
    if (id != UINT32_MAX)
        return id;
    for (id = 0; id < self->size; id++) {
        if (s_text_in_list (self, id, list)) {
            s_make_control (self, id);
            return id;
        }
    }
    return UINT32_MAX;
}

static void
s_eog_add (vocab_t *self, uint32_t id)
{
    if (id == UINT32_MAX)
        return;
    for (size_t i = 0; i < self->eog_count; i++)
        if (self->eog [i] == id)
            return;
    if (self->eog_count < EOG_MAX)
        self->eog [self->eog_count++] = id;
}

static int
s_compare_ids (const void *a, const void *b)
{
    uint32_t left = *(const uint32_t *) a;
    uint32_t right = *(const uint32_t *) b;
    return left < right? -1: left > right;
}

//  Settles the end-of-generation tokens, with the type changes llama.cpp makes on the
//  way (llama_vocab::impl::load, "auto-detect special tokens by text").
static void
s_find_eog (vocab_t *self, const gguf_t *gguf)
{
    static const char *const eom_texts [] = { "<|eom_id|>", NULL };
    uint32_t eot = s_find_special (self, gguf, "tokenizer.ggml.eot_token_id", NULL, s_eot_texts);
    uint32_t eom = s_find_special (self, gguf, "tokenizer.ggml.eom_token_id", NULL, eom_texts);
    s_find_special (self, gguf, "tokenizer.ggml.fim_pre_token_id",
                    "tokenizer.ggml.prefix_token_id", s_fim_pre_texts);
    s_find_special (self, gguf, "tokenizer.ggml.fim_suf_token_id",
                    "tokenizer.ggml.suffix_token_id", s_fim_suf_texts);
    s_find_special (self, gguf, "tokenizer.ggml.fim_mid_token_id",
                    "tokenizer.ggml.middle_token_id", s_fim_mid_texts);
    s_eog_add (self, s_find_special (self, gguf, "tokenizer.ggml.fim_pad_token_id", NULL,
                                     s_fim_pad_texts));
    s_eog_add (self, s_find_special (self, gguf, "tokenizer.ggml.fim_rep_token_id", NULL,
                                     s_fim_rep_texts));
    s_eog_add (self, s_find_special (self, gguf, "tokenizer.ggml.fim_sep_token_id", NULL,
                                     s_fim_sep_texts));

    uint32_t end = UINT32_MAX;
    bool has_return = false;
    bool has_call = false;
    for (uint32_t id = 0; id < self->size; id++) {
        if (!s_text_in_list (self, id, s_eog_texts))
            continue;
        s_eog_add (self, id);
        s_make_control (self, id);
        if (s_text_equals (self, id, "<|return|>", 10))
            has_return = true;
        if (s_text_equals (self, id, "<|call|>", 8))
            has_call = true;
        if (s_text_equals (self, id, "<|end|>", 7))
            end = id;
    }
    //  gpt-oss (o200k_harmony): these are text that the chat format shows.
    static const char *const harmony_texts [] = {
        "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL
    };
    for (uint32_t id = 0; id < self->size; id++)
        if (s_text_in_list (self, id, harmony_texts))
            self->type [id] = TOKEN_TYPE_USER_DEFINED;
    s_eog_add (self, self->eos);
    s_eog_add (self, eot);
    s_eog_add (self, eom);
    //  gpt-oss again: "<|end|>" ends a message, not the generation.
    if (has_return && has_call && end != UINT32_MAX) {
        for (size_t i = 0; i < self->eog_count; i++) {
            if (self->eog [i] == end) {
                self->eog [i] = self->eog [--self->eog_count];
                break;
            }
        }
        self->type [end] = TOKEN_TYPE_USER_DEFINED;
    }
    qsort (self->eog, self->eog_count, sizeof (uint32_t), s_compare_ids);
}

//  --- Loading: BPE merges --------------------------------------------------------------

//  Texts that merges name but that are not tokens, numbered from the vocabulary's size
//  on: a merge's sides and result are symbol numbers, whether or not they are tokens.
typedef struct {
    char *blob;
    size_t blob_len;
    size_t blob_cap;
    size_t *offset;
    uint32_t *len;
    size_t count;
    size_t cap;
    uint32_t *slots;                //  index + 1, or 0
    size_t slot_mask;
} extra_strings_t;

static void
s_extra_destroy (extra_strings_t *extra)
{
    free (extra->blob);
    free (extra->offset);
    free (extra->len);
    free (extra->slots);
    memset (extra, 0, sizeof *extra);
}

static int
s_extra_grow_slots (extra_strings_t *extra)
{
    size_t slot_count = extra->slot_mask? (extra->slot_mask + 1) * 2: 1024;
    uint32_t *slots = (uint32_t *) calloc (slot_count, sizeof (uint32_t));
    if (!slots)
        return -1;
    for (size_t i = 0; i < extra->count; i++) {
        size_t slot = (size_t) s_hash (extra->blob + extra->offset [i], extra->len [i])
                    & (slot_count - 1);
        while (slots [slot])
            slot = (slot + 1) & (slot_count - 1);
        slots [slot] = (uint32_t) i + 1;
    }
    free (extra->slots);
    extra->slots = slots;
    extra->slot_mask = slot_count - 1;
    return 0;
}

//  The symbol number of text[0..len-1]: its token id, or its number among the extra
//  strings (added when add is true). UINT32_MAX when unknown, or out of memory.
static uint32_t
s_symbol_number (const vocab_t *self, extra_strings_t *extra, const char *text, size_t len,
                 bool add)
{
    uint32_t id = s_lookup (self, text, len);
    if (id != UINT32_MAX)
        return id;
    if (extra->slots) {
        size_t slot = (size_t) s_hash (text, len) & extra->slot_mask;
        while (extra->slots [slot]) {
            size_t index = extra->slots [slot] - 1;
            if (extra->len [index] == len
            &&  memcmp (extra->blob + extra->offset [index], text, len) == 0)
                return self->size + (uint32_t) index;
            slot = (slot + 1) & extra->slot_mask;
        }
    }
    if (!add)
        return UINT32_MAX;
    if ((extra->count + 1) * 2 > (extra->slot_mask? extra->slot_mask + 1: 0)
    &&  s_extra_grow_slots (extra))
        return UINT32_MAX;
    if (extra->count == extra->cap) {
        size_t cap = extra->cap? extra->cap * 2: 64;
        size_t *offset = (size_t *) realloc (extra->offset, cap * sizeof (size_t));
        if (!offset)
            return UINT32_MAX;
        extra->offset = offset;
        uint32_t *lens = (uint32_t *) realloc (extra->len, cap * sizeof (uint32_t));
        if (!lens)
            return UINT32_MAX;
        extra->len = lens;
        extra->cap = cap;
    }
    if (extra->blob_len + len > extra->blob_cap) {
        size_t cap = extra->blob_cap? extra->blob_cap: 4096;
        while (cap < extra->blob_len + len)
            cap *= 2;
        char *blob = (char *) realloc (extra->blob, cap);
        if (!blob)
            return UINT32_MAX;
        extra->blob = blob;
        extra->blob_cap = cap;
    }
    size_t index = extra->count++;
    memcpy (extra->blob + extra->blob_len, text, len);
    extra->offset [index] = extra->blob_len;
    extra->len [index] = (uint32_t) len;
    extra->blob_len += len;
    size_t slot = (size_t) s_hash (text, len) & extra->slot_mask;
    while (extra->slots [slot])
        slot = (slot + 1) & extra->slot_mask;
    extra->slots [slot] = (uint32_t) index + 1;
    return self->size + (uint32_t) index;
}

static size_t
s_merge_slot_of (uint64_t key, size_t mask)
{
    return (size_t) ((key * 0x9E3779B97F4A7C15ULL) >> 17) & mask;
}

//  The slot of pair (left, right) in the merge table, or NULL.
static const merge_slot_t *
s_merge_find (const vocab_t *self, uint32_t left, uint32_t right)
{
    uint64_t key = (uint64_t) left << 32 | right;
    size_t slot = s_merge_slot_of (key, self->merge_mask);
    while (self->merges [slot].key != UINT64_MAX) {
        if (self->merges [slot].key == key)
            return &self->merges [slot];
        slot = (slot + 1) & self->merge_mask;
    }
    return NULL;
}

//  Reads tokenizer.ggml.merges ("left right" strings, best first) into the merge table.
//  As in llama.cpp, the two sides are split at the first space after the first byte,
//  and when a pair is listed twice its first rank counts.
static int
s_load_merges (vocab_t *self, const gguf_t *gguf, char *err, size_t err_size)
{
    //  Kimi K2's GGUF may have none: llama.cpp lets it through.
    if (gguf_find_key (gguf, "tokenizer.ggml.merges") < 0
    &&  strcmp (self->pre_name, "kimi-k2") != 0) {
        s_set_error (err, err_size, "tokenizer.ggml.merges is missing");
        return -1;
    }
    extra_strings_t extra;
    memset (&extra, 0, sizeof extra);
    char *joined = NULL;
    size_t joined_cap = 0;
    uint64_t count = 0;
    gguf_type_t elem_type = GGUF_TYPE_STRING;
    if (gguf_find_key (gguf, "tokenizer.ggml.merges") >= 0
    &&  (gguf_get_array (gguf, "tokenizer.ggml.merges", &elem_type, &count, NULL)
         || elem_type != GGUF_TYPE_STRING)) {
        s_set_error (err, err_size, "tokenizer.ggml.merges is not an array of strings");
        return -1;
    }
    if (count > UINT32_MAX / 4) {
        s_set_error (err, err_size, "tokenizer.ggml.merges has %llu merges",
                     (unsigned long long) count);
        return -1;
    }
    size_t slot_count = 16;
    while (slot_count < count * 2)
        slot_count <<= 1;
    self->merges = (merge_slot_t *) malloc (slot_count * sizeof (merge_slot_t));
    if (!self->merges)
        goto out_of_memory;
    for (size_t i = 0; i < slot_count; i++)
        self->merges [i].key = UINT64_MAX;
    self->merge_mask = slot_count - 1;

    for (uint64_t rank = 0; rank < count; rank++) {
        gguf_str_t merge;
        gguf_array_str (gguf, "tokenizer.ggml.merges", rank, &merge);
        const char *space = merge.len > 1?
            (const char *) memchr (merge.ptr + 1, ' ', (size_t) merge.len - 1): NULL;
        if (!space)
            continue;
        size_t left_len = (size_t) (space - merge.ptr);
        size_t right_len = (size_t) merge.len - left_len - 1;
        if (right_len == 0)
            continue;               //  no symbol is empty: this pair never applies
        if (left_len + right_len > joined_cap) {
            joined_cap = (left_len + right_len) * 2;
            char *grown = (char *) realloc (joined, joined_cap);
            if (!grown)
                goto out_of_memory;
            joined = grown;
        }
        memcpy (joined, merge.ptr, left_len);
        memcpy (joined + left_len, space + 1, right_len);
        uint32_t left = s_symbol_number (self, &extra, merge.ptr, left_len, true);
        uint32_t right = s_symbol_number (self, &extra, space + 1, right_len, true);
        uint32_t result = s_symbol_number (self, &extra, joined, left_len + right_len, true);
        if (left == UINT32_MAX || right == UINT32_MAX || result == UINT32_MAX)
            goto out_of_memory;
        uint64_t key = (uint64_t) left << 32 | right;
        size_t slot = s_merge_slot_of (key, self->merge_mask);
        while (self->merges [slot].key != UINT64_MAX && self->merges [slot].key != key)
            slot = (slot + 1) & self->merge_mask;
        if (self->merges [slot].key == UINT64_MAX) {
            self->merges [slot].key = key;
            self->merges [slot].rank = (uint32_t) rank;
            self->merges [slot].result = result;
        }
    }

    //  The alphabet: each byte's character, its symbol number, and the one-byte tokens
    //  that a symbol which is not a token falls back to.
    for (int byte = 0; byte < 256; byte++) {
        self->byte_symbol [byte] = s_symbol_number (self, &extra, self->byte_char [byte],
                                                    self->byte_char_len [byte], false);
        self->byte_fallback_count [byte] = 0;
        for (size_t i = 0; i < self->byte_char_len [byte]; i++) {
            uint32_t id = s_lookup (self, &self->byte_char [byte][i], 1);
            if (id != UINT32_MAX)
                self->byte_fallback [byte][self->byte_fallback_count [byte]++] = id;
        }
    }
    free (joined);
    s_extra_destroy (&extra);
    return 0;

out_of_memory:
    free (joined);
    s_extra_destroy (&extra);
    s_set_error (err, err_size, "out of memory");
    return -1;
}

//  --- Loading ---------------------------------------------------------------------------

vocab_t *
vocab_new (const gguf_t *gguf, char *err, size_t err_size)
{
    if (!gguf) {
        s_set_error (err, err_size, "no GGUF file given");
        return NULL;
    }
    gguf_str_t model;
    if (gguf_get_str (gguf, "tokenizer.ggml.model", &model)) {
        s_set_error (err, err_size, "the GGUF has no tokenizer (tokenizer.ggml.model is missing)");
        return NULL;
    }
    vocab_model_t model_kind;
    if (model.len == 5 && memcmp (model.ptr, "llama", 5) == 0)
        model_kind = VOCAB_MODEL_SPM;
    else
    if (model.len == 4 && memcmp (model.ptr, "gpt2", 4) == 0)
        model_kind = VOCAB_MODEL_BPE;
    else {
        int shown = model.len > 64? 64: (int) model.len;
        s_set_error (err, err_size,
                     "tokenizer model \"%.*s\" is not supported: only \"llama\" (SentencePiece) "
                     "and \"gpt2\" (byte-level BPE) are", shown, model.ptr);
        return NULL;
    }
    const pre_tokenizer_t *pre = NULL;
    char pre_name [64] = "";
    if (model_kind == VOCAB_MODEL_BPE) {
        gguf_str_t pre_text;
        if (gguf_get_str (gguf, "tokenizer.ggml.pre", &pre_text) == 0 && pre_text.len > 0) {
            if (pre_text.len >= sizeof pre_name) {
                s_set_error (err, err_size, "pre-tokenizer \"%.*s...\" is not supported",
                             (int) (sizeof pre_name - 1), pre_text.ptr);
                return NULL;
            }
            memcpy (pre_name, pre_text.ptr, (size_t) pre_text.len);
            pre_name [pre_text.len] = 0;
        }
        else
            strcpy (pre_name, "default");   //  missing or empty: llama.cpp warns, uses this
        pre = s_find_pre_tokenizer (pre_name);
        if (!pre) {
            s_set_error (err, err_size, "BPE pre-tokenizer \"%s\" (tokenizer.ggml.pre) is "
                         "not supported", pre_name);
            return NULL;
        }
    }
    gguf_type_t elem_type;
    uint64_t count;
    if (gguf_get_array (gguf, "tokenizer.ggml.tokens", &elem_type, &count, NULL)
    ||  elem_type != GGUF_TYPE_STRING) {
        s_set_error (err, err_size, "tokenizer.ggml.tokens is missing or not an array of strings");
        return NULL;
    }
    if (count == 0 || count >= UINT32_MAX / 2) {
        s_set_error (err, err_size, "tokenizer.ggml.tokens has %llu tokens",
                     (unsigned long long) count);
        return NULL;
    }

    vocab_t *self = (vocab_t *) calloc (1, sizeof (vocab_t));
    if (!self) {
        s_set_error (err, err_size, "out of memory");
        return NULL;
    }
    self->model = model_kind;
    strcpy (self->pre_name, pre_name);
    self->size = (uint32_t) count;
    uint32_t size = self->size;

    //  Texts: one blob, each text NUL-terminated.
    size_t blob_bytes = 0;
    for (uint32_t id = 0; id < size; id++) {
        gguf_str_t text;
        gguf_array_str (gguf, "tokenizer.ggml.tokens", id, &text);
        if (text.len > UINT32_MAX / 4) {
            s_set_error (err, err_size, "token %u is %llu bytes long", id,
                         (unsigned long long) text.len);
            goto fail;
        }
        blob_bytes += (size_t) text.len + 1;
    }
    self->text_blob = (char *) malloc (blob_bytes);
    self->text_offset = (size_t *) calloc (size, sizeof (size_t));
    self->text_len = (uint32_t *) calloc (size, sizeof (uint32_t));
    self->score = (float *) calloc (size, sizeof (float));
    self->type = (uint8_t *) calloc (size, 1);
    self->piece_blob = (char *) malloc (blob_bytes);
    self->piece_offset = (size_t *) calloc ((size_t) size + 1, sizeof (size_t));
    if (!self->text_blob || !self->text_offset || !self->text_len || !self->score
    ||  !self->type || !self->piece_blob || !self->piece_offset) {
        s_set_error (err, err_size, "out of memory");
        goto fail;
    }
    size_t offset = 0;
    for (uint32_t id = 0; id < size; id++) {
        gguf_str_t text;
        gguf_array_str (gguf, "tokenizer.ggml.tokens", id, &text);
        self->text_offset [id] = offset;
        self->text_len [id] = (uint32_t) text.len;
        if (text.len)
            memcpy (self->text_blob + offset, text.ptr, (size_t) text.len);
        self->text_blob [offset + text.len] = 0;
        offset += (size_t) text.len + 1;
    }

    //  Scores (0 when absent) and types (normal when absent).
    if (gguf_find_key (gguf, "tokenizer.ggml.scores") >= 0
    &&  gguf_array_f32 (gguf, "tokenizer.ggml.scores", self->score, size)) {
        s_set_error (err, err_size, "tokenizer.ggml.scores is not an array of %u numbers", size);
        goto fail;
    }
    if (gguf_find_key (gguf, "tokenizer.ggml.token_type") >= 0) {
        int32_t *types = (int32_t *) calloc (size, sizeof (int32_t));
        if (!types) {
            s_set_error (err, err_size, "out of memory");
            goto fail;
        }
        if (gguf_array_i32 (gguf, "tokenizer.ggml.token_type", types, size)) {
            free (types);
            s_set_error (err, err_size, "tokenizer.ggml.token_type is not an array of %u integers", size);
            goto fail;
        }
        for (uint32_t id = 0; id < size; id++)
            self->type [id] = (types [id] >= 0 && types [id] <= TOKEN_TYPE_BYTE)?
                              (uint8_t) types [id]: TOKEN_TYPE_UNDEFINED;
        free (types);
    }
    else
        memset (self->type, TOKEN_TYPE_NORMAL, size);

    //  Hash table, at most half full.
    size_t slots = 1;
    while (slots < (size_t) size * 2)
        slots <<= 1;
    self->table = (uint32_t *) calloc (slots, sizeof (uint32_t));
    if (!self->table) {
        s_set_error (err, err_size, "out of memory");
        goto fail;
    }
    self->table_mask = slots - 1;
    for (uint32_t id = 0; id < size; id++)
        s_table_insert (self, id);

    self->bos = s_special_id (gguf, "tokenizer.ggml.bos_token_id", size);
    self->eos = s_special_id (gguf, "tokenizer.ggml.eos_token_id", size);
    self->unk = s_special_id (gguf, "tokenizer.ggml.unknown_token_id", size);
    self->add_bos = s_get_bool_or (gguf, "tokenizer.ggml.add_bos_token",
                                   model_kind == VOCAB_MODEL_SPM? true: pre->add_bos);
    self->add_eos = s_get_bool_or (gguf, "tokenizer.ggml.add_eos_token", false);
    self->add_space_prefix = model_kind == VOCAB_MODEL_SPM
                          && s_get_bool_or (gguf, "tokenizer.ggml.add_space_prefix", true);

    //  End of generation: may turn tokens into control tokens, so before the pieces and
    //  the specials.
    s_find_eog (self, gguf);

    uint32_t alphabet [256];
    s_gpt2_alphabet (alphabet, self->alphabet_byte);
    for (int byte = 0; byte < 256; byte++)
        self->byte_char_len [byte] = (uint8_t) s_utf8_encode (alphabet [byte],
                                                              self->byte_char [byte]);

    //  Output pieces: never longer than the text.
    offset = 0;
    for (uint32_t id = 0; id < size; id++) {
        self->piece_offset [id] = offset;
        offset += s_make_piece (self, id, self->piece_blob + offset);
    }
    self->piece_offset [size] = offset;

    if (model_kind == VOCAB_MODEL_SPM) {
        //  Byte fallback: <0xNN>, else the byte as a one-character token.
        for (int byte = 0; byte < 256; byte++) {
            char name [8];
            snprintf (name, sizeof name, "<0x%02X>", byte);
            uint32_t id = s_lookup (self, name, 6);
            if (id == UINT32_MAX) {
                char one = (char) byte;
                id = s_lookup (self, &one, 1);
            }
            self->byte_token [byte] = id;
        }
        self->words_split_at_space = true;
        for (uint32_t id = 0; id < size && self->words_split_at_space; id++)
            self->words_split_at_space = !s_has_inner_space_mark (
                self->text_blob + self->text_offset [id], self->text_len [id]);
    }
    else {
        self->ignore_merges = pre->ignore_merges;
        if (s_load_merges (self, gguf, err, err_size)
        ||  s_compile_pre_tokenizer (self, pre, err, err_size))
            goto fail;
    }

    if (s_build_specials (self, gguf)) {
        s_set_error (err, err_size, "out of memory");
        goto fail;
    }
    return self;

fail:
    vocab_destroy (&self);
    return NULL;
}

void
vocab_destroy (vocab_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    vocab_t *self = *self_p;
    free (self->text_blob);
    free (self->text_offset);
    free (self->text_len);
    free (self->score);
    free (self->type);
    free (self->piece_blob);
    free (self->piece_offset);
    free (self->table);
    free (self->specials);
    free (self->merges);
    for (size_t i = 0; i < self->pre_count; i++)
        pcre2_code_free (self->pre_regex [i]);
    free (self);
    *self_p = NULL;
}

uint32_t
vocab_size (const vocab_t *self)
{
    return self->size;
}

uint32_t
vocab_bos (const vocab_t *self)
{
    return self->bos;
}

uint32_t
vocab_eos (const vocab_t *self)
{
    return self->eos;
}

bool
vocab_add_bos (const vocab_t *self)
{
    return self->add_bos;
}

bool
vocab_add_eos (const vocab_t *self)
{
    return self->add_eos;
}

const char *
vocab_model_name (const vocab_t *self)
{
    return self->model == VOCAB_MODEL_BPE? "gpt2": "llama";
}

const char *
vocab_pre_name (const vocab_t *self)
{
    return self->pre_name;
}

bool
vocab_is_eog (const vocab_t *self, uint32_t id)
{
    for (size_t i = 0; i < self->eog_count; i++)
        if (self->eog [i] == id)
            return true;
    return false;
}

size_t
vocab_eog_tokens (const vocab_t *self, uint32_t *ids, size_t max)
{
    for (size_t i = 0; i < self->eog_count && i < max; i++)
        ids [i] = self->eog [i];
    return self->eog_count;
}

bool
vocab_is_control (const vocab_t *self, uint32_t id)
{
    return id < self->size && self->type [id] == TOKEN_TYPE_CONTROL;
}

int
vocab_piece (const vocab_t *self, uint32_t id, char *buf, size_t cap)
{
    if (id >= self->size)
        return -1;
    size_t start = self->piece_offset [id];
    size_t len = self->piece_offset [id + 1] - start;
    size_t copied = len < cap? len: cap;
    if (copied)
        memcpy (buf, self->piece_blob + start, copied);
    return (int) len;
}

int
vocab_piece_keep_special (const vocab_t *self, uint32_t id, char *buf, size_t cap)
{
    if (id >= self->size)
        return -1;
    if (self->type [id] != TOKEN_TYPE_CONTROL && self->type [id] != TOKEN_TYPE_UNKNOWN)
        return vocab_piece (self, id, buf, cap);
    const char *text = self->text_blob + self->text_offset [id];
    size_t len = self->text_len [id];
    size_t copied = len < cap? len: cap;
    if (copied)
        memcpy (buf, text, copied);
    return (int) len;
}

const char *
vocab_token_text (const vocab_t *self, uint32_t id)
{
    if (id >= self->size)
        return NULL;
    return self->text_blob + self->text_offset [id];
}

//  --- Tokenizing ------------------------------------------------------------------------

//  A piece of the text: raw text still to tokenize, or a token cut out of it.
typedef struct {
    size_t offset;
    size_t length;
    uint32_t id;                    //  UINT32_MAX for raw text
} fragment_t;

typedef struct {
    fragment_t *items;
    size_t count;
    size_t cap;
} fragment_list_t;

//  A symbol of the SPM pass: a span of the escaped fragment.
typedef struct {
    uint32_t start;                 //  offset in session text
    uint32_t n;                     //  bytes; 0 once merged into its left neighbour
    int32_t prev;                   //  neighbours in the chain, -1 at either end
    int32_t next;
} symbol_t;

//  A candidate merge of two adjacent symbols.
typedef struct {
    float score;                    //  of the token that the merge forms
    int32_t left;
    int32_t right;
    uint32_t size;                  //  bytes of the merged text when it was pushed
} bigram_t;

//  A symbol of the BPE pass: bytes [i, i + len) of the word, where i is its index.
typedef struct {
    uint32_t number;                //  symbol number (see s_load_merges), or UINT32_MAX
    uint32_t len;                   //  bytes; 0 once merged into its left neighbour
    int32_t prev;
    int32_t next;
} bpe_symbol_t;

//  A candidate BPE merge of two adjacent symbols.
typedef struct {
    uint32_t rank;
    int32_t left;
    int32_t right;
    uint32_t size;                  //  bytes of the merged text when it was pushed
    uint32_t result;                //  the merged symbol's number
} bpe_pair_t;

//  A word of the BPE word cache: its text and its tokens, in the cache's blobs.
typedef struct {
    uint64_t hash;
    uint32_t text_offset;
    uint32_t text_len;
    uint32_t ids_offset;
    uint32_t ids_count;
} cached_word_t;

typedef struct {
    const vocab_t *vocab;
    char *text;                     //  SPM: the escaped fragment
    size_t text_cap;
    symbol_t *symbols;
    size_t symbol_cap;
    bigram_t *heap;
    size_t heap_count;
    size_t heap_cap;

    //  BPE
    char *clean;                    //  a fragment with invalid UTF-8 read as U+FFFD
    size_t clean_cap;
    pcre2_match_data *match [PRE_MAX_REGEXES];
    pcre2_match_context *match_context;     //  with a JIT stack, once one is needed
    pcre2_jit_stack *jit_stack;
    bpe_symbol_t *bpe_symbols;
    size_t bpe_symbol_cap;
    bpe_pair_t *pairs;              //  min-heap by rank, then left
    size_t pair_count;
    size_t pair_cap;
    uint32_t *word_ids;             //  the current word's tokens
    size_t word_id_count;
    size_t word_id_cap;
    char *encoded;                  //  the current word in the byte alphabet
    size_t encoded_cap;
    cached_word_t *cache;
    size_t cache_count;
    size_t cache_cap;
    uint32_t *cache_slots;          //  index + 1, or 0
    size_t cache_slot_mask;
    char *cache_text;
    size_t cache_text_len;
    size_t cache_text_cap;
    uint32_t *cache_ids;
    size_t cache_ids_len;
    size_t cache_ids_cap;

    uint32_t *ids;                  //  caller's output
    size_t max_ids;
    int64_t count;                  //  tokens so far, written or not
    char *err;
    size_t err_size;
} session_t;

static void
s_emit (session_t *session, uint32_t id)
{
    if ((uint64_t) session->count < session->max_ids)
        session->ids [session->count] = id;
    session->count++;
}

//  Grows *items to hold at least want elements of elem_size bytes.
static int
s_reserve (void **items, size_t *cap, size_t want, size_t elem_size)
{
    if (want <= *cap)
        return 0;
    size_t new_cap = *cap? *cap: 16;
    while (new_cap < want)
        new_cap *= 2;
    void *grown = realloc (*items, new_cap * elem_size);
    if (!grown)
        return -1;
    *items = grown;
    *cap = new_cap;
    return 0;
}

//  --- Tokenizing: SPM -------------------------------------------------------------------

//  True when bigram a comes out of the heap before bigram b: higher score first, then
//  the leftmost.
static bool
s_bigram_before (const bigram_t *a, const bigram_t *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    return a->left < b->left;
}

static int
s_heap_push (session_t *session, bigram_t bigram)
{
    if (s_reserve ((void **) &session->heap, &session->heap_cap,
                   session->heap_count + 1, sizeof (bigram_t)))
        return -1;
    size_t child = session->heap_count++;
    while (child > 0) {
        size_t parent = (child - 1) / 2;
        if (!s_bigram_before (&bigram, &session->heap [parent]))
            break;
        session->heap [child] = session->heap [parent];
        child = parent;
    }
    session->heap [child] = bigram;
    return 0;
}

static bigram_t
s_heap_pop (session_t *session)
{
    bigram_t top = session->heap [0];
    bigram_t last = session->heap [--session->heap_count];
    size_t count = session->heap_count;
    size_t parent = 0;
    while (true) {
        size_t child = parent * 2 + 1;
        if (child >= count)
            break;
        if (child + 1 < count && s_bigram_before (&session->heap [child + 1], &session->heap [child]))
            child++;
        if (!s_bigram_before (&session->heap [child], &last))
            break;
        session->heap [parent] = session->heap [child];
        parent = child;
    }
    if (count > 0)
        session->heap [parent] = last;
    return top;
}

//  Pushes the merge of symbols left and right when their joined text is a token.
static int
s_try_add_bigram (session_t *session, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return 0;
    const symbol_t *left_symbol = &session->symbols [left];
    uint32_t size = left_symbol->n + session->symbols [right].n;
    uint32_t id = s_lookup (session->vocab, session->text + left_symbol->start, size);
    if (id == UINT32_MAX)
        return 0;
    bigram_t bigram = { session->vocab->score [id], left, right, size };
    return s_heap_push (session, bigram);
}

//  Outputs one final symbol: its token, or its bytes as byte tokens.
static int
s_output_symbol (session_t *session, const symbol_t *symbol)
{
    const vocab_t *vocab = session->vocab;
    const char *text = session->text + symbol->start;
    uint32_t id = s_lookup (vocab, text, symbol->n);
    if (id != UINT32_MAX) {
        s_emit (session, id);
        return 0;
    }
    for (uint32_t i = 0; i < symbol->n; i++) {
        unsigned char byte = (unsigned char) text [i];
        id = vocab->byte_token [byte];
        if (id == UINT32_MAX)
            id = vocab->unk;
        if (id == UINT32_MAX) {
            s_set_error (session->err, session->err_size,
                         "the vocabulary has no token for byte 0x%02X and no unknown token", byte);
            return -1;
        }
        s_emit (session, id);
    }
    return 0;
}

//  The SPM pass over session text[start..end-1]: split into characters, merge, output.
static int
s_tokenize_segment (session_t *session, size_t start, size_t end)
{
    //  Symbols: one per character.
    if (s_reserve ((void **) &session->symbols, &session->symbol_cap, end - start,
                   sizeof (symbol_t)))
        goto out_of_memory;
    const unsigned char *bytes = (const unsigned char *) session->text;
    int32_t symbol_count = 0;
    size_t offset = start;
    while (offset < end) {
        size_t char_len = s_utf8_char_len (bytes + offset, end - offset);
        symbol_t *symbol = &session->symbols [symbol_count];
        symbol->start = (uint32_t) offset;
        symbol->n = (uint32_t) char_len;
        symbol->prev = symbol_count - 1;
        offset += char_len;
        symbol->next = offset == end? -1: symbol_count + 1;
        symbol_count++;
    }
    if (symbol_count == 0)
        return 0;

    //  Merge the best pair while any pair forms a token.
    session->heap_count = 0;
    for (int32_t i = 1; i < symbol_count; i++)
        if (s_try_add_bigram (session, i - 1, i))
            goto out_of_memory;
    while (session->heap_count > 0) {
        bigram_t bigram = s_heap_pop (session);
        symbol_t *left = &session->symbols [bigram.left];
        symbol_t *right = &session->symbols [bigram.right];
        if (left->n == 0 || right->n == 0 || left->n + right->n != bigram.size)
            continue;               //  one side has changed since the pair was pushed
        left->n += right->n;
        right->n = 0;
        left->next = right->next;
        if (right->next >= 0)
            session->symbols [right->next].prev = bigram.left;
        if (s_try_add_bigram (session, left->prev, bigram.left)
        ||  s_try_add_bigram (session, bigram.left, left->next))
            goto out_of_memory;
    }

    for (int32_t i = 0; i != -1; i = session->symbols [i].next)
        if (s_output_symbol (session, &session->symbols [i]))
            return -1;
    return 0;

out_of_memory:
    s_set_error (session->err, session->err_size, "out of memory");
    return -1;
}

static bool
s_space_mark_at (const char *text, size_t pos, size_t len)
{
    return len - pos >= SPACE_MARK_LEN && memcmp (text + pos, SPACE_MARK, SPACE_MARK_LEN) == 0;
}

//  The SPM pass over one raw fragment. When no token has a "▁" after another character
//  (true of SentencePiece vocabularies, checked at load), no merge can join a character
//  to a "▁" that follows it, so the text splits there into words that merge on their
//  own: the same result as one pass over the whole fragment, with small heaps.
static int
s_tokenize_fragment (session_t *session, const char *raw, size_t raw_len, bool space_prefix)
{
    //  Escape: optional leading space, every space as "▁".
    size_t escaped_max = raw_len * SPACE_MARK_LEN + SPACE_MARK_LEN;
    if (s_reserve ((void **) &session->text, &session->text_cap, escaped_max, 1)) {
        s_set_error (session->err, session->err_size, "out of memory");
        return -1;
    }
    char *text = session->text;
    size_t len = 0;
    if (space_prefix) {
        memcpy (text, SPACE_MARK, SPACE_MARK_LEN);
        len = SPACE_MARK_LEN;
    }
    for (size_t i = 0; i < raw_len; i++) {
        if (raw [i] == ' ') {
            memcpy (text + len, SPACE_MARK, SPACE_MARK_LEN);
            len += SPACE_MARK_LEN;
        }
        else
            text [len++] = raw [i];
    }
    if (!session->vocab->words_split_at_space)
        return s_tokenize_segment (session, 0, len);

    size_t start = 0;
    size_t pos = 0;
    while (pos < len) {
        //  Skip the "▁"s that start a word, then find the next "▁".
        while (s_space_mark_at (text, pos, len))
            pos += SPACE_MARK_LEN;
        while (pos < len && !s_space_mark_at (text, pos, len))
            pos++;
        if (s_tokenize_segment (session, start, pos))
            return -1;
        start = pos;
    }
    return 0;
}

//  --- Tokenizing: BPE -------------------------------------------------------------------

//  True when pair a comes out of the heap before pair b: lower rank first, then the
//  leftmost.
static bool
s_pair_before (const bpe_pair_t *a, const bpe_pair_t *b)
{
    if (a->rank != b->rank)
        return a->rank < b->rank;
    return a->left < b->left;
}

static int
s_pair_push (session_t *session, bpe_pair_t pair)
{
    if (s_reserve ((void **) &session->pairs, &session->pair_cap,
                   session->pair_count + 1, sizeof (bpe_pair_t)))
        return -1;
    size_t child = session->pair_count++;
    while (child > 0) {
        size_t parent = (child - 1) / 2;
        if (!s_pair_before (&pair, &session->pairs [parent]))
            break;
        session->pairs [child] = session->pairs [parent];
        child = parent;
    }
    session->pairs [child] = pair;
    return 0;
}

static bpe_pair_t
s_pair_pop (session_t *session)
{
    bpe_pair_t top = session->pairs [0];
    bpe_pair_t last = session->pairs [--session->pair_count];
    size_t count = session->pair_count;
    size_t parent = 0;
    while (true) {
        size_t child = parent * 2 + 1;
        if (child >= count)
            break;
        if (child + 1 < count
        &&  s_pair_before (&session->pairs [child + 1], &session->pairs [child]))
            child++;
        if (!s_pair_before (&session->pairs [child], &last))
            break;
        session->pairs [parent] = session->pairs [child];
        parent = child;
    }
    if (count > 0)
        session->pairs [parent] = last;
    return top;
}

//  Pushes the merge of BPE symbols left and right when the merges list the pair.
static int
s_try_add_pair (session_t *session, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return 0;
    const bpe_symbol_t *left_symbol = &session->bpe_symbols [left];
    const bpe_symbol_t *right_symbol = &session->bpe_symbols [right];
    if (left_symbol->number == UINT32_MAX || right_symbol->number == UINT32_MAX)
        return 0;
    const merge_slot_t *merge = s_merge_find (session->vocab, left_symbol->number,
                                              right_symbol->number);
    if (!merge)
        return 0;
    bpe_pair_t pair = { merge->rank, left, right, left_symbol->len + right_symbol->len,
                        merge->result };
    return s_pair_push (session, pair);
}

static int
s_word_id (session_t *session, uint32_t id)
{
    if (s_reserve ((void **) &session->word_ids, &session->word_id_cap,
                   session->word_id_count + 1, sizeof (uint32_t)))
        return -1;
    session->word_ids [session->word_id_count++] = id;
    return 0;
}

//  The tokens of one symbol of word: its token, or the one-byte fallback of its bytes.
static int
s_output_bpe_symbol (session_t *session, const char *word, int32_t index)
{
    const vocab_t *vocab = session->vocab;
    const bpe_symbol_t *symbol = &session->bpe_symbols [index];
    if (symbol->number < vocab->size)
        return s_word_id (session, symbol->number);
    for (uint32_t i = 0; i < symbol->len; i++) {
        unsigned char byte = (unsigned char) word [index + (int32_t) i];
        for (uint8_t k = 0; k < vocab->byte_fallback_count [byte]; k++)
            if (s_word_id (session, vocab->byte_fallback [byte][k]))
                return -1;
    }
    return 0;
}

//  Merges word[0..len-1] and puts its tokens in session->word_ids.
static int
s_merge_word (session_t *session, const char *word, size_t len)
{
    const vocab_t *vocab = session->vocab;
    session->word_id_count = 0;

    //  A word that is a token as a whole is that token (llama.cpp's ignore_merges).
    if (vocab->ignore_merges) {
        if (s_reserve ((void **) &session->encoded, &session->encoded_cap, len * 2, 1))
            return -1;
        size_t encoded_len = 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char byte = (unsigned char) word [i];
            memcpy (session->encoded + encoded_len, vocab->byte_char [byte],
                    vocab->byte_char_len [byte]);
            encoded_len += vocab->byte_char_len [byte];
        }
        uint32_t id = s_lookup (vocab, session->encoded, encoded_len);
        if (id != UINT32_MAX)
            return s_word_id (session, id);
    }

    //  Symbols: one per byte.
    if (s_reserve ((void **) &session->bpe_symbols, &session->bpe_symbol_cap, len,
                   sizeof (bpe_symbol_t)))
        return -1;
    for (size_t i = 0; i < len; i++) {
        bpe_symbol_t *symbol = &session->bpe_symbols [i];
        symbol->number = vocab->byte_symbol [(unsigned char) word [i]];
        symbol->len = 1;
        symbol->prev = (int32_t) i - 1;
        symbol->next = i + 1 == len? -1: (int32_t) i + 1;
    }

    //  Merge the best ranked pair while any pair is listed.
    session->pair_count = 0;
    for (size_t i = 1; i < len; i++)
        if (s_try_add_pair (session, (int32_t) i - 1, (int32_t) i))
            return -1;
    while (session->pair_count > 0) {
        bpe_pair_t pair = s_pair_pop (session);
        bpe_symbol_t *left = &session->bpe_symbols [pair.left];
        bpe_symbol_t *right = &session->bpe_symbols [pair.right];
        if (left->len == 0 || right->len == 0 || left->len + right->len != pair.size)
            continue;               //  one side has changed since the pair was pushed
        left->len += right->len;
        left->number = pair.result;
        right->len = 0;
        left->next = right->next;
        if (right->next >= 0)
            session->bpe_symbols [right->next].prev = pair.left;
        if (s_try_add_pair (session, left->prev, pair.left)
        ||  s_try_add_pair (session, pair.left, left->next))
            return -1;
    }
    for (int32_t i = 0; i != -1; i = session->bpe_symbols [i].next)
        if (s_output_bpe_symbol (session, word, i))
            return -1;
    return 0;
}

//  The cached word equal to word[0..len-1] with this hash, or NULL.
static const cached_word_t *
s_cache_find (const session_t *session, const char *word, size_t len, uint64_t hash)
{
    if (!session->cache_slots)
        return NULL;
    size_t slot = (size_t) hash & session->cache_slot_mask;
    while (session->cache_slots [slot]) {
        const cached_word_t *entry = &session->cache [session->cache_slots [slot] - 1];
        if (entry->hash == hash && entry->text_len == len
        &&  memcmp (session->cache_text + entry->text_offset, word, len) == 0)
            return entry;
        slot = (slot + 1) & session->cache_slot_mask;
    }
    return NULL;
}

//  Remembers word and its tokens (session->word_ids). A full cache, or no memory for
//  it, only means the word is not remembered.
static void
s_cache_add (session_t *session, const char *word, size_t len, uint64_t hash)
{
    if (session->cache_count >= WORD_CACHE_MAX_WORDS)
        return;
    if ((session->cache_count + 1) * 2 > (session->cache_slots? session->cache_slot_mask + 1: 0)) {
        size_t slot_count = session->cache_slots? (session->cache_slot_mask + 1) * 2: 1024;
        uint32_t *slots = (uint32_t *) calloc (slot_count, sizeof (uint32_t));
        if (!slots)
            return;
        for (size_t i = 0; i < session->cache_count; i++) {
            size_t slot = (size_t) session->cache [i].hash & (slot_count - 1);
            while (slots [slot])
                slot = (slot + 1) & (slot_count - 1);
            slots [slot] = (uint32_t) i + 1;
        }
        free (session->cache_slots);
        session->cache_slots = slots;
        session->cache_slot_mask = slot_count - 1;
    }
    if (s_reserve ((void **) &session->cache, &session->cache_cap, session->cache_count + 1,
                   sizeof (cached_word_t))
    ||  s_reserve ((void **) &session->cache_text, &session->cache_text_cap,
                   session->cache_text_len + len, 1)
    ||  s_reserve ((void **) &session->cache_ids, &session->cache_ids_cap,
                   session->cache_ids_len + session->word_id_count, sizeof (uint32_t)))
        return;
    cached_word_t *entry = &session->cache [session->cache_count];
    entry->hash = hash;
    entry->text_offset = (uint32_t) session->cache_text_len;
    entry->text_len = (uint32_t) len;
    entry->ids_offset = (uint32_t) session->cache_ids_len;
    entry->ids_count = (uint32_t) session->word_id_count;
    memcpy (session->cache_text + session->cache_text_len, word, len);
    session->cache_text_len += len;
    memcpy (session->cache_ids + session->cache_ids_len, session->word_ids,
            session->word_id_count * sizeof (uint32_t));
    session->cache_ids_len += session->word_id_count;
    size_t slot = (size_t) hash & session->cache_slot_mask;
    while (session->cache_slots [slot])
        slot = (slot + 1) & session->cache_slot_mask;
    session->cache_slots [slot] = (uint32_t) session->cache_count + 1;
    session->cache_count++;
}

//  Tokenizes one word of the pre-tokenizer's output.
static int
s_bpe_word (session_t *session, const char *word, size_t len)
{
    const vocab_t *vocab = session->vocab;
    if (len == 1) {
        unsigned char byte = (unsigned char) word [0];
        uint32_t number = vocab->byte_symbol [byte];
        if (number < vocab->size)
            s_emit (session, number);
        else
            for (uint8_t k = 0; k < vocab->byte_fallback_count [byte]; k++)
                s_emit (session, vocab->byte_fallback [byte][k]);
        return 0;
    }
    uint64_t hash = 0;
    if (len <= WORD_CACHE_MAX_LEN) {
        hash = s_hash (word, len);
        const cached_word_t *cached = s_cache_find (session, word, len, hash);
        if (cached) {
            for (uint32_t i = 0; i < cached->ids_count; i++)
                s_emit (session, session->cache_ids [cached->ids_offset + i]);
            return 0;
        }
    }
    if (s_merge_word (session, word, len)) {
        s_set_error (session->err, session->err_size, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < session->word_id_count; i++)
        s_emit (session, session->word_ids [i]);
    if (len <= WORD_CACHE_MAX_LEN)
        s_cache_add (session, word, len, hash);
    return 0;
}

//  Runs pre-tokenizer pattern level on subject[0..len-1] from offset. Returns PCRE2's
//  code; a pattern that needs more JIT stack than the default gets a bigger one.
static int
s_regex_match (session_t *session, size_t level, const char *subject, size_t len,
               size_t offset, uint32_t options)
{
    const vocab_t *vocab = session->vocab;
    int rc = pcre2_match (vocab->pre_regex [level], (PCRE2_SPTR) subject, len, offset,
                          options | PCRE2_NO_UTF_CHECK, session->match [level],
                          session->match_context);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !session->jit_stack) {
        session->match_context = pcre2_match_context_create (NULL);
        session->jit_stack = pcre2_jit_stack_create (64 * 1024, 64 * 1024 * 1024, NULL);
        if (!session->match_context || !session->jit_stack)
            return PCRE2_ERROR_NOMEMORY;
        pcre2_jit_stack_assign (session->match_context, NULL, session->jit_stack);
        rc = pcre2_match (vocab->pre_regex [level], (PCRE2_SPTR) subject, len, offset,
                          options | PCRE2_NO_UTF_CHECK, session->match [level],
                          session->match_context);
    }
    return rc;
}

//  Splits text[start..end-1] with pre-tokenizer pattern level: each match and each run
//  of text between matches goes on to the next pattern, and after the last one is a
//  word to merge. As std::regex_iterator does (llama.cpp's loop), after an empty match
//  the search goes on at the same place for a non-empty one, then one character on.
static int
s_bpe_split (session_t *session, size_t level, const char *text, size_t start, size_t end)
{
    if (start == end)
        return 0;
    if (level == session->vocab->pre_count)
        return s_bpe_word (session, text + start, end - start);

    const char *subject = text + start;
    size_t len = end - start;
    size_t offset = 0;              //  where the next search starts
    size_t done = 0;                //  bytes of subject already passed on
    uint32_t options = 0;
    while (offset <= len) {
        int rc = s_regex_match (session, level, subject, len, offset, options);
        if (rc == PCRE2_ERROR_NOMATCH) {
            if (options == 0 || offset == len)
                break;
            offset += s_utf8_char_len ((const unsigned char *) subject + offset, len - offset);
            options = 0;
            continue;
        }
        if (rc < 0) {
            PCRE2_UCHAR message [128];
            pcre2_get_error_message (rc, message, sizeof message);
            s_set_error (session->err, session->err_size, "pre-tokenizer: %s",
                         (const char *) message);
            return -1;
        }
        const PCRE2_SIZE *ovector = pcre2_get_ovector_pointer (session->match [level]);
        size_t match_start = ovector [0];
        size_t match_end = ovector [1];
        if (s_bpe_split (session, level + 1, text, start + done, start + match_start)
        ||  s_bpe_split (session, level + 1, text, start + match_start, start + match_end))
            return -1;
        done = match_end;
        offset = match_end;
        options = match_end == match_start? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED: 0;
    }
    return s_bpe_split (session, level + 1, text, start + done, end);
}

//  The BPE pass over one raw fragment: invalid UTF-8 read as U+FFFD, pre-tokenize, merge.
static int
s_bpe_fragment (session_t *session, const char *raw, size_t raw_len)
{
    const unsigned char *bytes = (const unsigned char *) raw;
    size_t valid = 0;
    while (valid < raw_len) {
        if (bytes [valid] < 0x80)
            valid++;
        else {
            size_t char_len = s_utf8_char_len (bytes + valid, raw_len - valid);
            if (char_len == 1)
                break;
            valid += char_len;
        }
    }
    if (valid == raw_len)
        return s_bpe_split (session, 0, raw, 0, raw_len);

    if (s_reserve ((void **) &session->clean, &session->clean_cap,
                   raw_len * REPLACEMENT_CHAR_LEN, 1)) {
        s_set_error (session->err, session->err_size, "out of memory");
        return -1;
    }
    memcpy (session->clean, raw, valid);
    size_t len = valid;
    size_t pos = valid;
    while (pos < raw_len) {
        if (s_utf8_valid_at (bytes, pos, raw_len)) {
            size_t char_len = s_utf8_char_len (bytes + pos, raw_len - pos);
            memcpy (session->clean + len, raw + pos, char_len);
            len += char_len;
            pos += char_len;
        }
        else {
            memcpy (session->clean + len, REPLACEMENT_CHAR, REPLACEMENT_CHAR_LEN);
            len += REPLACEMENT_CHAR_LEN;
            pos++;
        }
    }
    return s_bpe_split (session, 0, session->clean, 0, len);
}

static int
s_bpe_session_start (session_t *session)
{
    const vocab_t *vocab = session->vocab;
    for (size_t i = 0; i < vocab->pre_count; i++) {
        session->match [i] = pcre2_match_data_create_from_pattern (vocab->pre_regex [i], NULL);
        if (!session->match [i])
            return -1;
    }
    return 0;
}

static void
s_session_end (session_t *session)
{
    free (session->text);
    free (session->symbols);
    free (session->heap);
    free (session->clean);
    for (size_t i = 0; i < PRE_MAX_REGEXES; i++)
        pcre2_match_data_free (session->match [i]);
    pcre2_match_context_free (session->match_context);
    pcre2_jit_stack_free (session->jit_stack);
    free (session->bpe_symbols);
    free (session->pairs);
    free (session->word_ids);
    free (session->encoded);
    free (session->cache);
    free (session->cache_slots);
    free (session->cache_text);
    free (session->cache_ids);
}

//  --- Tokenizing: the partition and the whole call ----------------------------------------

static int
s_fragment_append (fragment_list_t *list, size_t offset, size_t length, uint32_t id)
{
    if (s_reserve ((void **) &list->items, &list->cap, list->count + 1, sizeof (fragment_t)))
        return -1;
    fragment_t *fragment = &list->items [list->count++];
    fragment->offset = offset;
    fragment->length = length;
    fragment->id = id;
    return 0;
}

static bool
s_is_space (char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

//  Cuts every occurrence of special token `special` out of the raw fragments in *list,
//  as llama.cpp's tokenizer_st_partition does. *spare is a scratch list; the two are
//  swapped when anything was cut.
static int
s_cut_special (const vocab_t *vocab, const special_t *special, const char *text,
               fragment_list_t *list, fragment_list_t *spare)
{
    const char *token = vocab->text_blob + vocab->text_offset [special->id];
    size_t token_len = vocab->text_len [special->id];

    //  Most tokens occur nowhere: check before rebuilding the list.
    bool found = false;
    for (size_t i = 0; i < list->count && !found; i++) {
        const fragment_t *fragment = &list->items [i];
        if (fragment->id == UINT32_MAX
        &&  memmem (text + fragment->offset, fragment->length, token, token_len))
            found = true;
    }
    if (!found)
        return 0;

    spare->count = 0;
    for (size_t i = 0; i < list->count; i++) {
        fragment_t fragment = list->items [i];
        if (fragment.id != UINT32_MAX) {
            if (s_fragment_append (spare, fragment.offset, fragment.length, fragment.id))
                return -1;
            continue;
        }
        size_t start = fragment.offset;
        size_t end = fragment.offset + fragment.length;
        while (start < end) {
            const char *match = (const char *) memmem (text + start, end - start, token, token_len);
            if (!match) {
                if (s_fragment_append (spare, start, end - start, UINT32_MAX))
                    return -1;
                break;
            }
            size_t match_at = (size_t) (match - text);
            if (match_at > start
            &&  s_fragment_append (spare, start, match_at - start, UINT32_MAX))
                return -1;
            if (s_fragment_append (spare, match_at, token_len, special->id))
                return -1;
            start = match_at + token_len;
            if (special->rstrip)
                while (start < end && s_is_space (text [start]))
                    start++;
        }
    }
    fragment_list_t swap = *list;
    *list = *spare;
    *spare = swap;
    return 0;
}

//  Marks in pairs (a bitmap of 65536 bits) every two adjacent bytes of text, and in
//  singles every byte: a special token whose first two bytes are not there occurs nowhere.
static void
s_mark_byte_pairs (const char *text, size_t len, uint64_t *pairs, uint64_t *singles)
{
    memset (pairs, 0, 65536 / 8);
    memset (singles, 0, 256 / 8);
    const unsigned char *bytes = (const unsigned char *) text;
    for (size_t i = 0; i < len; i++) {
        singles [bytes [i] >> 6] |= 1ULL << (bytes [i] & 63);
        if (i + 1 < len) {
            unsigned pair = (unsigned) bytes [i] << 8 | bytes [i + 1];
            pairs [pair >> 6] |= 1ULL << (pair & 63);
        }
    }
}

static bool
s_may_occur (const vocab_t *self, const special_t *special, const uint64_t *pairs,
             const uint64_t *singles)
{
    const unsigned char *token = (const unsigned char *) self->text_blob
                               + self->text_offset [special->id];
    if (special->len == 1)
        return (singles [token [0] >> 6] >> (token [0] & 63)) & 1;
    unsigned pair = (unsigned) token [0] << 8 | token [1];
    return (pairs [pair >> 6] >> (pair & 63)) & 1;
}

//  Tokenizes text; parse_special also cuts out control and unknown tokens written in it.
static int64_t
s_tokenize (const vocab_t *self, const char *text, size_t len, bool add_bos,
            bool parse_special, uint32_t *ids, size_t max_ids, char *err, size_t err_size)
{
    if (!self || (!text && len > 0) || (!ids && max_ids > 0)) {
        s_set_error (err, err_size, "vocab_tokenize: missing argument");
        return -1;
    }
    if (len > VOCAB_MAX_TEXT) {
        s_set_error (err, err_size, "text of %zu bytes is too long to tokenize (limit %zu)",
                     len, VOCAB_MAX_TEXT);
        return -1;
    }
    session_t session;
    memset (&session, 0, sizeof session);
    session.vocab = self;
    session.ids = ids;
    session.max_ids = max_ids;
    session.err = err;
    session.err_size = err_size;

    fragment_list_t list = { NULL, 0, 0 };
    fragment_list_t spare = { NULL, 0, 0 };
    uint64_t *pairs = NULL;
    int64_t result = -1;

    if (add_bos) {
        if (self->bos == UINT32_MAX) {
            s_set_error (err, err_size, "BOS was asked for but the vocabulary names no BOS token");
            goto done;
        }
        s_emit (&session, self->bos);
    }
    if (self->model == VOCAB_MODEL_BPE && s_bpe_session_start (&session))
        goto out_of_memory;
    if (len > 0 && s_fragment_append (&list, 0, len, UINT32_MAX))
        goto out_of_memory;
    if (len > 0 && self->special_count > 0) {
        pairs = (uint64_t *) malloc (65536 / 8 + 256 / 8);
        if (!pairs)
            goto out_of_memory;
        uint64_t *singles = pairs + 65536 / 64;
        s_mark_byte_pairs (text, len, pairs, singles);
        for (size_t i = 0; i < self->special_count; i++) {
            const special_t *special = &self->specials [i];
            if (!parse_special && self->type [special->id] != TOKEN_TYPE_USER_DEFINED)
                continue;
            if (!s_may_occur (self, special, pairs, singles))
                continue;
            if (s_cut_special (self, special, text, &list, &spare))
                goto out_of_memory;
        }
    }
    bool after_special = true;      //  the text's start counts as following one
    for (size_t i = 0; i < list.count; i++) {
        const fragment_t *fragment = &list.items [i];
        if (fragment->id != UINT32_MAX) {
            s_emit (&session, fragment->id);
            after_special = true;
        }
        else {
            int rc;
            if (self->model == VOCAB_MODEL_BPE)
                rc = s_bpe_fragment (&session, text + fragment->offset, fragment->length);
            else
                rc = s_tokenize_fragment (&session, text + fragment->offset, fragment->length,
                                          self->add_space_prefix && after_special);
            if (rc)
                goto done;
            after_special = false;
        }
    }
    result = session.count;
    goto done;

out_of_memory:
    s_set_error (err, err_size, "out of memory");
done:
    free (list.items);
    free (spare.items);
    free (pairs);
    s_session_end (&session);
    return result;
}

int64_t
vocab_tokenize (const vocab_t *self, const char *text, size_t len, bool add_bos,
                uint32_t *ids, size_t max_ids, char *err, size_t err_size)
{
    return s_tokenize (self, text, len, add_bos, false, ids, max_ids, err, err_size);
}

int64_t
vocab_tokenize_special (const vocab_t *self, const char *text, size_t len, bool add_bos,
                        uint32_t *ids, size_t max_ids, char *err, size_t err_size)
{
    return s_tokenize (self, text, len, add_bos, true, ids, max_ids, err, err_size);
}
