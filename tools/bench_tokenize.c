/*  bench_tokenize — how fast vocab_tokenize runs on a large text.

    bench_tokenize [--vocab GGUF] [--mb N | --file F] [--runs R] [--special]

    Tokenizes N MB (default 10) of English-like text, made up here from a fixed word list
    with a fixed random sequence (the same text on every run and every machine), or the
    contents of a file, with the vocabulary of GGUF (default: the StarCoder vocabulary of
    the shared test data). Each of R runs (default 5) times one vocab_tokenize call over
    the whole text; the report gives each run and the median in MB/s (10^6 bytes per
    second), with the command line that reproduces it.
*/
#include "gguf.h"
#include "vocab.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_VOCAB "../shared/models/vocab/ggml-vocab-starcoder.gguf"

//  Common English words, roughly by frequency: the text draws from the front more often.
static const char *const s_words [] = {
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for",
    "on", "are", "with", "as", "I", "his", "they", "be", "at", "one", "have", "this",
    "from", "or", "had", "by", "not", "word", "but", "what", "some", "we", "can", "out",
    "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an",
    "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many",
    "then", "them", "write", "would", "like", "so", "these", "her", "long", "make",
    "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come",
    "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water",
    "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any",
    "new", "work", "part", "take", "get", "place", "made", "live", "where", "after",
    "back", "little", "only", "round", "man", "year", "came", "show", "every", "good",
    "me", "give", "our", "under", "name", "very", "through", "just", "form", "sentence",
    "great", "think", "say", "help", "low", "line", "differ", "turn", "cause", "much",
    "mean", "before", "move", "right", "boy", "old", "too", "same", "tell", "does",
    "set", "three", "want", "air", "well", "also", "play", "small", "end", "put", "home",
    "read", "hand", "port", "large", "spell", "add", "even", "land", "here", "must",
    "big", "high", "such", "follow", "act", "why", "ask", "men", "change", "went",
    "light", "kind", "off", "need", "house", "picture", "try", "us", "again", "animal",
    "point", "mother", "world", "near", "build", "self", "earth", "father", "head",
    "stand", "own", "page", "should", "country", "found", "answer", "school", "grow",
    "study", "still", "learn", "plant", "cover", "food", "sun", "four", "between",
    "state", "keep", "eye", "never", "last", "let", "thought", "city", "tree", "cross",
    "farm", "hard", "start", "might", "story", "saw", "far", "sea", "draw", "left",
    "late", "run", "don't", "while", "press", "close", "night", "real", "life", "few",
    "north", "open", "seem", "together", "next", "white", "children", "begin", "got",
    "walk", "example", "ease", "paper", "group", "always", "music", "those", "both",
    "mark", "often", "letter", "until", "mile", "river", "car", "feet", "care",
    "second", "book", "carry", "took", "science", "eat", "room", "friend", "began",
    "idea", "fish", "mountain", "stop", "once", "base", "hear", "horse", "cut", "sure",
    "watch", "color", "face", "wood", "main", "enough", "plain", "girl", "usual",
    "young", "ready", "above", "ever", "red", "list", "though", "feel", "talk", "bird",
    "soon", "body", "dog", "family", "direct", "pose", "leave", "song", "measure",
    "door", "product", "black", "short", "numeral", "class", "wind", "question",
    "happen", "complete", "ship", "area", "half", "rock", "order", "fire", "south",
    "problem", "piece", "told", "knew", "pass", "since", "top", "whole", "king",
    "space", "heard", "best", "hour", "better", "true", "during", "hundred", "five",
    "remember", "step", "early", "hold", "west", "ground", "interest", "reach", "fast",
    "verb", "sing", "listen", "six", "table", "travel", "less", "morning", "ten",
    "simple", "several", "vowel", "toward", "war", "lay", "against", "pattern", "slow",
    "center", "love", "person", "money", "serve", "appear", "road", "map", "rain",
    "rule", "govern", "pull", "cold", "notice", "voice", "unit", "power", "town",
    "fine", "certain", "fly", "fall", "lead", "cry", "dark", "machine", "note", "wait",
    "plan", "figure", "star", "box", "noun", "field", "rest", "correct", "able",
    "pound", "done", "beauty", "drive", "stood", "contain", "front", "teach", "week",
    "final", "gave", "green", "oh", "quick", "develop", "ocean", "warm", "free",
    "minute", "strong", "special", "mind", "behind", "clear", "tail", "produce",
    "fact", "street", "inch", "multiply", "nothing", "course", "stay", "wheel", "full",
    "force", "blue", "object", "decide", "surface", "deep", "moon", "island", "foot",
    "system", "busy", "test", "record", "boat", "common", "gold", "possible", "plane",
    "stead", "dry", "wonder", "laugh", "thousand", "ago", "ran", "check", "game",
    "shape", "equate", "hot", "miss", "brought", "heat", "snow", "tire", "bring",
    "yes", "distant", "fill", "east", "paint", "language", "among", "tokenizer",
    "encoding", "vocabulary", "performance", "benchmark", "throughput", "parallel",
};

static uint64_t
s_next_random (uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return *state >> 33;
}

//  Writes len bytes of English-like text into text: sentences of 4 to 20 words, a comma
//  now and then, a number now and then, paragraphs of 3 to 8 sentences.
static void
s_make_text (char *text, size_t len)
{
    size_t word_count = sizeof s_words / sizeof s_words [0];
    uint64_t state = 20240601;
    size_t used = 0;
    while (used < len) {
        char sentence [512];
        size_t sentence_len = 0;
        size_t words = 4 + s_next_random (&state) % 17;
        for (size_t w = 0; w < words; w++) {
            //  Squaring a uniform number favours the front of the list.
            uint64_t r = s_next_random (&state) % 1000;
            size_t index = (size_t) (r * r / 1000 * word_count / 1000);
            char word [48];
            if (s_next_random (&state) % 40 == 0)
                snprintf (word, sizeof word, "%u", (unsigned) (s_next_random (&state) % 5000));
            else
                snprintf (word, sizeof word, "%s", s_words [index]);
            if (w == 0 && word [0] >= 'a' && word [0] <= 'z')
                word [0] = (char) (word [0] - 'a' + 'A');
            sentence_len += (size_t) snprintf (sentence + sentence_len,
                                               sizeof sentence - sentence_len, "%s%s",
                                               w? " ": "", word);
            if (w + 1 < words && s_next_random (&state) % 12 == 0)
                sentence [sentence_len++] = ',';
        }
        uint64_t end = s_next_random (&state) % 10;
        sentence [sentence_len++] = end == 0? '?': end == 1? '!': '.';
        sentence [sentence_len++] = s_next_random (&state) % 6 == 0? '\n': ' ';
        size_t copy = sentence_len < len - used? sentence_len: len - used;
        memcpy (text + used, sentence, copy);
        used += copy;
    }
}

static char *
s_read_file (const char *path, size_t *len)
{
    FILE *file = fopen (path, "rb");
    if (!file)
        return NULL;
    char *data = NULL;
    if (fseek (file, 0, SEEK_END) == 0) {
        long size = ftell (file);
        if (size >= 0 && fseek (file, 0, SEEK_SET) == 0) {
            data = (char *) malloc ((size_t) size + 1);
            if (data && fread (data, 1, (size_t) size, file) != (size_t) size) {
                free (data);
                data = NULL;
            }
            else
            if (data)
                *len = (size_t) size;
        }
    }
    fclose (file);
    return data;
}

static double
s_seconds (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (double) now.tv_sec + (double) now.tv_nsec / 1e9;
}

static int
s_compare_doubles (const void *a, const void *b)
{
    double left = *(const double *) a;
    double right = *(const double *) b;
    return left < right? -1: left > right;
}

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: bench_tokenize [--vocab GGUF] [--mb N | --file F] [--runs R] [--special]\n"
        "\n"
        "Time vocab_tokenize over a large text; report MB/s (median of R runs).\n"
        "  --vocab GGUF   vocabulary (default " DEFAULT_VOCAB ")\n"
        "  --mb N         generate N MB of English-like text (default 10)\n"
        "  --file F       tokenize the contents of F instead\n"
        "  --runs R       runs to time (default 5)\n"
        "  --special      recognise special tokens (vocab_tokenize_special)\n");
}

int
main (int argc, char **argv)
{
    static const struct option long_options [] = {
        { "vocab", required_argument, NULL, 'v' },
        { "mb", required_argument, NULL, 'm' },
        { "file", required_argument, NULL, 'f' },
        { "runs", required_argument, NULL, 'r' },
        { "special", no_argument, NULL, 's' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    const char *vocab_path = DEFAULT_VOCAB;
    const char *file_path = NULL;
    double megabytes = 10;
    int runs = 5;
    bool special = false;
    int option;
    while ((option = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
        switch (option) {
            case 'v':
                vocab_path = optarg;
                break;
            case 'm':
                megabytes = atof (optarg);
                if (!(megabytes > 0 && megabytes <= 200)) {
                    fprintf (stderr, "bench_tokenize: --mb: give a size from 0 to 200\n");
                    return 2;
                }
                break;
            case 'f':
                file_path = optarg;
                break;
            case 'r':
                runs = atoi (optarg);
                if (runs < 1 || runs > 100) {
                    fprintf (stderr, "bench_tokenize: --runs: give 1 to 100\n");
                    return 2;
                }
                break;
            case 's':
                special = true;
                break;
            case 'h':
                s_usage (stdout);
                return 0;
            default:
                s_usage (stderr);
                return 2;
        }
    }
    if (optind != argc) {
        s_usage (stderr);
        return 2;
    }

    char err [256] = "";
    gguf_t *gguf = gguf_open (vocab_path, err, sizeof err);
    if (!gguf) {
        fprintf (stderr, "bench_tokenize: %s: %s\n", vocab_path, err);
        return 1;
    }
    vocab_t *vocab = vocab_new (gguf, err, sizeof err);
    gguf_destroy (&gguf);
    if (!vocab) {
        fprintf (stderr, "bench_tokenize: %s: %s\n", vocab_path, err);
        return 1;
    }

    size_t len = 0;
    char *text = NULL;
    if (file_path) {
        text = s_read_file (file_path, &len);
        if (!text) {
            fprintf (stderr, "bench_tokenize: cannot read %s\n", file_path);
            vocab_destroy (&vocab);
            return 1;
        }
    }
    else {
        len = (size_t) (megabytes * 1e6);
        text = (char *) malloc (len + 1);
        if (!text) {
            fprintf (stderr, "bench_tokenize: out of memory\n");
            vocab_destroy (&vocab);
            return 1;
        }
        s_make_text (text, len);
    }

    //  The token count, and a buffer for it: the timed runs only tokenize.
    int64_t count = vocab_tokenize (vocab, text, len, false, NULL, 0, err, sizeof err);
    uint32_t *ids = NULL;
    if (count >= 0)
        ids = (uint32_t *) malloc (((size_t) count + 1) * sizeof (uint32_t));
    if (!ids) {
        fprintf (stderr, "bench_tokenize: %s\n", count < 0? err: "out of memory");
        free (text);
        vocab_destroy (&vocab);
        return 1;
    }

    printf ("command:");
    for (int i = 0; i < argc; i++)
        printf (" %s", argv [i]);
    printf ("\nvocab: %s (%s, pre-tokenizer \"%s\", %u tokens)\n", vocab_path,
            vocab_model_name (vocab), vocab_pre_name (vocab), vocab_size (vocab));
    printf ("text: %zu bytes%s%s, %" PRId64 " tokens (%.2f bytes per token)%s\n", len,
            file_path? " from ": " generated", file_path? file_path: "", count,
            count? (double) len / (double) count: 0.0, special? ", special tokens on": "");

    double *rates = (double *) calloc ((size_t) runs, sizeof (double));
    int status = rates? 0: 1;
    for (int run = 0; run < runs && status == 0; run++) {
        double start = s_seconds ();
        int64_t got = special?
            vocab_tokenize_special (vocab, text, len, false, ids, (size_t) count, err, sizeof err):
            vocab_tokenize (vocab, text, len, false, ids, (size_t) count, err, sizeof err);
        double seconds = s_seconds () - start;
        if (got < 0) {
            fprintf (stderr, "bench_tokenize: %s\n", err);
            status = 1;
            break;
        }
        rates [run] = (double) len / 1e6 / seconds;
        printf ("run %d: %.3f s, %.1f MB/s, %.2f M tokens/s\n", run + 1, seconds, rates [run],
                (double) got / 1e6 / seconds);
    }
    if (status == 0) {
        qsort (rates, (size_t) runs, sizeof (double), s_compare_doubles);
        printf ("median: %.1f MB/s\n", rates [runs / 2]);
    }
    free (rates);
    free (ids);
    free (text);
    vocab_destroy (&vocab);
    return status;
}
