/*  test_sampler — the generator, greedy choice, log-probabilities and temperature
    sampling of npu/sampler.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "sampler.h"

//  xoshiro256** from the state {1, 2, 3, 4} gives these (the authors' reference code).
static void
test_rng_reference_values (void **state)
{
    (void) state;
    sampler_rng_t rng = { { 1, 2, 3, 4 } };
    //  uniform() is the top 53 bits of each output times 2^-53.
    const uint64_t expected [4] = { 11520ULL, 0ULL, 1509978240ULL, 1215971899390074240ULL };
    for (int i = 0; i < 4; i++)
        assert_true (sampler_rng_uniform (&rng) == (double) (expected [i] >> 11) * 0x1.0p-53);

    //  Seeding fills the state with splitmix64's first four outputs for that seed.
    sampler_rng_seed (&rng, 0);
    assert_true (rng.s [0] == 0xE220A8397B1DCDAFULL);
    assert_true (rng.s [1] == 0x6E789E6AA1B965F4ULL);
    assert_true (rng.s [2] == 0x06C45D188009454FULL);
    assert_true (rng.s [3] == 0xF88BB8A8724C81ECULL);
}

static void
test_rng_same_seed_same_sequence (void **state)
{
    (void) state;
    sampler_rng_t a, b, c;
    sampler_rng_seed (&a, 42);
    sampler_rng_seed (&b, 42);
    sampler_rng_seed (&c, 43);
    int differences = 0;
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        double x = sampler_rng_uniform (&a);
        double y = sampler_rng_uniform (&b);
        double z = sampler_rng_uniform (&c);
        assert_true (x == y);
        assert_true (x >= 0 && x < 1);
        assert_true (z >= 0 && z < 1);
        if (x != z)
            differences++;
        sum += x;
    }
    assert_true (differences > 9990);
    assert_true (fabs (sum / 10000 - 0.5) < 0.02);
}

static void
test_greedy_argmax (void **state)
{
    (void) state;
    const float logits [6] = { -3.0f, 1.5f, 0.25f, 7.0f, -10.0f, 6.999f };
    assert_int_equal (sampler_sample (logits, 6, 0.0f, NULL, NULL), 3);

    //  A tie goes to the lowest id.
    const float tied [5] = { 1.0f, 4.0f, 2.0f, 4.0f, 4.0f };
    assert_int_equal (sampler_sample (tied, 5, 0.0f, NULL, NULL), 1);

    //  All negative; the first is the highest.
    const float negative [3] = { -0.5f, -1.0f, -0.75f };
    assert_int_equal (sampler_sample (negative, 3, 0.0f, NULL, NULL), 0);

    //  NaN is never chosen.
    const float with_nan [3] = { NAN, -1.0f, -2.0f };
    assert_int_equal (sampler_sample (with_nan, 3, 0.0f, NULL, NULL), 1);

    //  One token.
    const float single [1] = { -100.0f };
    float logprob = 1;
    assert_int_equal (sampler_sample (single, 1, 0.0f, NULL, &logprob), 0);
    assert_true (fabsf (logprob) < 1e-6f);
}

static void
test_logprob (void **state)
{
    (void) state;
    //  log softmax by hand: 3 - log(e^1 + e^2 + e^3) = -0.40760596444...
    const float logits [3] = { 1.0f, 2.0f, 3.0f };
    float logprob = 0;
    assert_int_equal (sampler_sample (logits, 3, 0.0f, NULL, &logprob), 2);
    double expected = 3.0 - log (exp (1.0) + exp (2.0) + exp (3.0));
    assert_true (fabs (logprob - expected) < 1e-6);
    assert_true (fabs (expected - -0.40760596444) < 1e-9);

    //  Large logits must not overflow: -log(1 + e^-1) = -0.31326168751...
    const float large [2] = { 1000.0f, 1001.0f };
    assert_int_equal (sampler_sample (large, 2, 0.0f, NULL, &logprob), 1);
    assert_true (fabs (logprob - -0.31326168751) < 1e-6);

    //  Very negative logits must not underflow to -inf.
    const float small [2] = { -1000.0f, -1001.0f };
    assert_int_equal (sampler_sample (small, 2, 0.0f, NULL, &logprob), 0);
    assert_true (fabs (logprob - -0.31326168751) < 1e-6);

    //  A large vocabulary of equal logits: each is log(1/n).
    static float flat [32000];
    for (int i = 0; i < 32000; i++)
        flat [i] = 0.5f;
    assert_int_equal (sampler_sample (flat, 32000, 0.0f, NULL, &logprob), 0);
    assert_true (fabs (logprob - -log (32000.0)) < 1e-5);

    //  -inf logits have probability 0 and change nothing.
    const float masked [3] = { -INFINITY, 2.0f, 2.0f };
    assert_int_equal (sampler_sample (masked, 3, 0.0f, NULL, &logprob), 1);
    assert_true (fabs (logprob - -log (2.0)) < 1e-6);
}

//  Frequencies of many draws follow softmax(logits / T); the reported logprob is
//  the untempered one.
static void
test_temperature_frequencies (void **state)
{
    (void) state;
    const float logits [5] = { 0.0f, 1.0f, 2.0f, -INFINITY, 0.5f };
    const float temperature = 0.7f;
    double expected [5], total = 0;
    for (int i = 0; i < 5; i++) {
        expected [i] = exp ((double) logits [i] / temperature);
        total += expected [i];
    }
    for (int i = 0; i < 5; i++)
        expected [i] /= total;

    sampler_rng_t rng;
    sampler_rng_seed (&rng, 12345);
    const int draws = 200000;
    int counts [5] = { 0 };
    for (int d = 0; d < draws; d++) {
        float logprob = 0;
        uint32_t token = sampler_sample (logits, 5, temperature, &rng, &logprob);
        assert_true (token < 5);
        counts [token]++;
        double log_sum = log (exp (0.0) + exp (1.0) + exp (2.0) + exp (0.5));
        assert_true (fabs (logprob - (logits [token] - log_sum)) < 1e-5);
    }
    assert_int_equal (counts [3], 0);
    for (int i = 0; i < 5; i++)
        assert_true (fabs ((double) counts [i] / draws - expected [i]) < 0.01);

    //  The same seed draws the same tokens.
    sampler_rng_t a, b;
    sampler_rng_seed (&a, 7);
    sampler_rng_seed (&b, 7);
    for (int d = 0; d < 1000; d++)
        assert_int_equal (sampler_sample (logits, 5, 1.0f, &a, NULL),
                          sampler_sample (logits, 5, 1.0f, &b, NULL));
}

//  A very low temperature is greedy; a high one is close to uniform.
static void
test_temperature_extremes (void **state)
{
    (void) state;
    const float logits [4] = { 0.1f, 0.3f, 0.2f, 0.0f };
    sampler_rng_t rng;
    sampler_rng_seed (&rng, 99);
    for (int d = 0; d < 1000; d++)
        assert_int_equal (sampler_sample (logits, 4, 1e-4f, &rng, NULL), 1);

    int counts [4] = { 0 };
    for (int d = 0; d < 40000; d++)
        counts [sampler_sample (logits, 4, 1000.0f, &rng, NULL)]++;
    for (int i = 0; i < 4; i++)
        assert_true (fabs (counts [i] / 40000.0 - 0.25) < 0.02);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_rng_reference_values),
        cmocka_unit_test (test_rng_same_seed_same_sequence),
        cmocka_unit_test (test_greedy_argmax),
        cmocka_unit_test (test_logprob),
        cmocka_unit_test (test_temperature_frequencies),
        cmocka_unit_test (test_temperature_extremes),
    };
    return cmocka_run_group_tests_name ("sampler", tests, NULL, NULL);
}
