/*
 * The activations both point-wise kernels share (lstm_cell.c, the plain cell; lstm_variants.c, the
 * cell variants), written so that compilers vectorize them.
 */
#ifndef LSTM_MT_FASTMATH_H
#define LSTM_MT_FASTMATH_H

#include <stdint.h>
#include <string.h>

/* e^x within 3e-7 relative error, written so that compilers vectorize it: x = n·ln2 + r
 * (ln2 split in two for precision), a degree-6 polynomial for e^r on [-ln2/2, ln2/2], and
 * 2^n built from exponent bits. Inputs are clamped to where 2^n is a normal float; NaN
 * stays NaN (both comparisons are false). */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_to_n;
    memcpy(&two_to_n, &bits, sizeof two_to_n);
    return p * two_to_n;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

static inline float tanh_approx(float x) { return 2.0f * sigmoid(2.0f * x) - 1.0f; } /* tanh x = 2σ(2x) − 1 */

#endif
