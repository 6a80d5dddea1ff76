/*
 * The cell variants' point-wise step in C, for CPU float32: the equations of
 * lstm_mt/lstm/variants.py after the step's matrix products, forward and backward, one pass per
 * row (two where a layer norm needs a row's mean and variance first):
 *
 *     pre   = x_in + γ_h · LN(rec) per gate block            (layer norm; else pre is given)
 *     f     = σ(pre_f + w_cf · C_prev)    i = σ(pre_i + w_ci · C_prev), or 1 − f (coupled gates)
 *     C̃     = tanh(pre_C̃)                 C̃_t = f · C_prev + i · C̃
 *     o     = σ(pre_o + w_co · C̃_t)       h̃_t = o · tanh(γ_C · LN(C̃_t) + β_C)   (or o · tanh(C̃_t))
 *     C     = d_C · C_prev + (1 − d_C) · C̃_t      h = d_h · h_prev + (1 − d_h) · h̃_t   (zoneout)
 *
 * A variant that is off is given neutral values (zero peepholes, zero zoneout) rather than
 * tested for, so the inner loops have no branches on missing inputs and vectorize. Matrices
 * are row-major with a row stride in floats; stride 0 repeats one row for every sequence
 * (zoneout's expectation in evaluation). lstm_mt/lstm/native.py builds this file with
 * lstm_cell.c into one library; lstm_mt/lstm/variant_pointwise.py calls it and checks it
 * against its tensor operations on first use.
 */
#include <math.h>
#include <stdint.h>

#include "fastmath.h"

#define LAYER_NORM_EPS 1e-5f /* torch.nn.LayerNorm's default, as variants.LAYER_NORM_EPS */

/* A matrix with one row per sequence: row r starts at data + r * stride. */
typedef struct {
    float *data;
    int64_t stride;
} rows_t;

#define ROW(m, r) ((m).data + (r) * (m).stride)

typedef struct {
    int64_t rows, H;
    int64_t coupled;           /* CIFG: i = 1 − f */
    const float *peepholes;    /* [3H]: w_ci, w_cf, w_co (zeros when off) */
    const float *gain_hh;      /* [4H] γ_h with layer norm, else NULL */
    const float *gain_c;       /* [H] γ_C with layer norm, else NULL */
    const float *bias_c;       /* [H] β_C with layer norm */
    rows_t pre;                /* [4H] W·[h, x] + b; with layer norm written here from x_in and rec */
    rows_t x_in, rec;          /* [4H] with layer norm: the input's share and the recurrent product W_h·h_in */
    rows_t rec_hat;            /* [4H] out with layer norm: rec normalized per gate block, (rec − mean)/σ */
    rows_t c_prev, h_prev;     /* [H] */
    rows_t keep_c, keep_h;     /* [H] zoneout's d: 0/1 in training, the probability in evaluation, 0 off */
    rows_t gates;              /* [4H] out: i, f, C̃, o (may be pre; NULL in inference without layer norm) */
    rows_t c_tilde;            /* [H] out: C̃_t (may be c when C is not zoned out) */
    rows_t tanh_c;             /* [H] out: tanh of what h shows (with gates) */
    rows_t c, h;               /* [H] out */
    rows_t rec_rstd;           /* [4] out with layer norm: each gate block's 1/σ of rec */
    rows_t c_hat, c_rstd;      /* [H], [1] out with layer norm: C̃_t normalized, and its 1/σ */
} variant_forward_t;

typedef struct {
    int64_t rows, H;
    int64_t coupled;
    const float *peepholes, *gain_hh, *gain_c; /* as in variant_forward_t */
    rows_t gates, c_tilde, tanh_c, c_prev;     /* saved by the forward pass */
    rows_t keep_c, keep_h;
    rows_t dh, dc;             /* [H] in: the gradients arriving at h and C */
    rows_t grad_pre;           /* [4H] out: dL/dpre */
    rows_t dc_prev, dh_prev;   /* [H] added to: the gradients reaching C_prev and (through zoneout) h_prev */
    rows_t d_shown;            /* [H] out with layer norm: dL/d(γ_C · LN(C̃_t) + β_C), for γ_C's and β_C's gradients */
    rows_t c_hat, c_rstd;      /* in with layer norm, from the forward pass */
    rows_t rec_hat, rec_rstd;  /* in with layer norm, from the forward pass */
    rows_t grad_rec;           /* [4H] out with layer norm: dL/drec */
} variant_backward_t;

/* Mean and 1/√(var + ε) of x[0..n), variance about the mean (two passes, as torch's layer norm). */
static inline void moments(const float *x, int64_t n, float *mean, float *rstd) {
    float sum = 0.0f, squares = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) sum += x[j];
    const float m = sum / (float)n;
#pragma omp simd reduction(+ : squares)
    for (int64_t j = 0; j < n; ++j) squares += (x[j] - m) * (x[j] - m);
    *mean = m;
    *rstd = 1.0f / sqrtf(squares / (float)n + LAYER_NORM_EPS);
}

/* The layer norm's backward for x̂ = (x − mean)·rstd and dL/dx̂ = grad · gain:
 * dL/dx = rstd · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)), written to out. */
static inline void layer_norm_backward(const float *restrict x_hat, const float *restrict grad,
                                       const float *restrict gain, int64_t n, float rstd, float *restrict out) {
    float sum = 0.0f, dot = 0.0f;
#pragma omp simd reduction(+ : sum, dot)
    for (int64_t j = 0; j < n; ++j) {
        const float d = grad[j] * gain[j];
        sum += d;
        dot += d * x_hat[j];
    }
    const float mean_d = sum / (float)n, mean_dot = dot / (float)n;
    for (int64_t j = 0; j < n; ++j) out[j] = rstd * (grad[j] * gain[j] - mean_d - x_hat[j] * mean_dot);
}

/* With layer norm: pre = x_in + γ_h · LN(rec) for each of the four gate blocks of row r. */
static inline void normalize_recurrent(const variant_forward_t *a, int64_t r) {
    const int64_t H = a->H;
    for (int64_t k = 0; k < 4; ++k) {
        const float *restrict rec = ROW(a->rec, r) + k * H, *restrict x = ROW(a->x_in, r) + k * H;
        const float *restrict gain = a->gain_hh + k * H;
        float *restrict pre = ROW(a->pre, r) + k * H, *restrict hat = ROW(a->rec_hat, r) + k * H, mean, rstd;
        moments(rec, H, &mean, &rstd);
        ROW(a->rec_rstd, r)[k] = rstd;
        for (int64_t j = 0; j < H; ++j) {
            hat[j] = (rec[j] - mean) * rstd;
            pre[j] = x[j] + gain[j] * hat[j];
        }
    }
}

/* The row pointers of one step's forward, taken out of the arguments once per row. */
typedef struct {
    const float *pre, *restrict c_prev, *restrict h_prev, *restrict keep_c, *restrict keep_h;
    float *gates, *c_tilde, *restrict tanh_c, *c, *restrict h;
} forward_row_t;

/* Unit j's tanh, h and C once C̃_t (ct), o and what h shows are known. */
static inline __attribute__((always_inline)) void finish_unit(const forward_row_t *p, int64_t j, float ct, float o,
                                                              float shown, const int keep) {
    const float tc = tanh_approx(shown), kc = p->keep_c[j], kh = p->keep_h[j];
    if (keep) p->tanh_c[j] = tc;
    p->c[j] = kc * p->c_prev[j] + (1.0f - kc) * ct;
    p->h[j] = kh * p->h_prev[j] + (1.0f - kh) * (o * tc);
}

/* One row's forward. `keep`: also write the gates and tanh (training, and always with layer norm);
 * `ln_c`: C̃_t is layer-normalized before tanh. */
static inline __attribute__((always_inline)) void forward_row(const variant_forward_t *a, int64_t r, const int keep,
                                                              const int ln_c) {
    const int64_t H = a->H;
    const int coupled = a->coupled != 0;
    if (a->gain_hh) normalize_recurrent(a, r);
    const forward_row_t p = {ROW(a->pre, r),     ROW(a->c_prev, r),  ROW(a->h_prev, r), ROW(a->keep_c, r),
                             ROW(a->keep_h, r),  keep ? ROW(a->gates, r) : 0,            ROW(a->c_tilde, r),
                             keep ? ROW(a->tanh_c, r) : 0,           ROW(a->c, r),       ROW(a->h, r)};
    const float *restrict w = a->peepholes, *pre = p.pre, *restrict cp = p.c_prev;
    float *g_r = p.gates, *ct_r = p.c_tilde;  /* the gates may overwrite pre: each unit reads before it writes */
#pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
        const float f = sigmoid(pre[H + j] + w[H + j] * cp[j]);
        const float i_own = sigmoid(pre[j] + w[j] * cp[j]);
        const float i = coupled ? 1.0f - f : i_own;
        const float g = tanh_approx(pre[2 * H + j]);
        const float ct = f * cp[j] + i * g;
        const float o = sigmoid(pre[3 * H + j] + w[2 * H + j] * ct);
        if (keep) {
            g_r[j] = i;
            g_r[H + j] = f;
            g_r[2 * H + j] = g;
            g_r[3 * H + j] = o;
        }
        ct_r[j] = ct;
        if (!ln_c) finish_unit(&p, j, ct, o, ct, keep);
    }
    if (!ln_c) return;
    const float *restrict gain = a->gain_c, *restrict bias = a->bias_c;
    float *restrict hat = ROW(a->c_hat, r), mean, rstd;
    moments(ct_r, H, &mean, &rstd);
    ROW(a->c_rstd, r)[0] = rstd;
#pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
        hat[j] = (ct_r[j] - mean) * rstd;
        finish_unit(&p, j, ct_r[j], g_r[3 * H + j], gain[j] * hat[j] + bias[j], 1);
    }
}

/* One step for a->rows sequences (rows shared among OpenMP threads, as in lstm_cell.c). Layer norm of
 * C̃_t needs the gates (o waits there for C̃_t's statistics). */
void lstm_variant_forward(const variant_forward_t *a) {
    const int keep = a->gates.data != 0, ln_c = a->gain_c != 0;
#pragma omp parallel for if (a->rows * a->H >= 4096)
    for (int64_t r = 0; r < a->rows; ++r) {
        if (ln_c)
            forward_row(a, r, 1, 1);
        else if (keep)
            forward_row(a, r, 1, 0);
        else
            forward_row(a, r, 0, 0);
    }
}

/* One step of a whole inference layer (lstm_layer_forward in lstm_cell.c): `variant` holds the cell's
 * constants (coupled, peepholes, zoneout's probabilities as rows of stride 0, no layer norm); the
 * step's rows, [rows, 4H] for pre and [rows, H] for the rest, are set here. C̃_t goes to C itself:
 * without gates to keep, each unit takes C̃_t from a register before it writes C. */
void lstm_variant_layer_step(void *variant, int64_t rows, float *pre, const float *c_prev, const float *h_prev,
                             float *c, float *h) {
    variant_forward_t *a = variant;
    const int64_t H = a->H;
    a->rows = rows;
    a->pre = (rows_t){pre, 4 * H};
    a->c_prev = (rows_t){(float *)c_prev, H};
    a->h_prev = (rows_t){(float *)h_prev, H};
    a->c_tilde = (rows_t){c, H};
    a->c = (rows_t){c, H};
    a->h = (rows_t){h, H};
    lstm_variant_forward(a);
}

/* The row pointers of one step's backward, taken out of the arguments once per row. */
typedef struct {
    const float *restrict gates, *restrict c_prev, *restrict keep_c, *restrict dc, *restrict peepholes;
    float *grad_pre, *restrict dc_prev;
    int coupled;
} backward_row_t;

/* Unit j's gate gradients once dL/dC̃_t (dct) is known, with dpre_o already in grad_pre. Writes
 * dpre_i (0 with coupled gates), dpre_f, dpre_C̃ and adds C_prev's gradient. */
static inline __attribute__((always_inline)) void gate_gradients(const backward_row_t *p, int64_t H, int64_t j,
                                                                 float dct) {
    const float *restrict w = p->peepholes;
    const float i = p->gates[j], f = p->gates[H + j], g = p->gates[2 * H + j], cp = p->c_prev[j];
    dct += p->grad_pre[3 * H + j] * w[2 * H + j];  /* C̃_t reaches o through its peephole */
    const float d_input = dct * g;
    const float d_forget = p->coupled ? dct * cp - d_input : dct * cp;  /* i = 1 − f */
    const float d_i = p->coupled ? 0.0f : d_input * i * (1.0f - i);
    const float d_f = d_forget * f * (1.0f - f);
    p->grad_pre[j] = d_i;
    p->grad_pre[H + j] = d_f;
    p->grad_pre[2 * H + j] = dct * i * (1.0f - g * g);
    p->dc_prev[j] += p->keep_c[j] * p->dc[j] + dct * f + d_i * w[j] + d_f * w[H + j];
}

/* One row's backward (see the forward's equations):
 *     dh̃ = (1 − d_h)·dh, and h_prev gets d_h·dh       dpre_o = dh̃·tanh·o(1 − o)
 *     dL/dshown = dh̃·o·(1 − tanh²)                     dC̃_t = (1 − d_C)·dC + (LN's backward of) dL/dshown + dpre_o·w_co
 *     dpre_C̃ = dC̃_t·i·(1 − C̃²)   dpre_f = dC̃_t·(C_prev − C̃ if coupled, else C_prev)·f(1 − f)   dpre_i = dC̃_t·C̃·i(1 − i)
 *     C_prev gets d_C·dC + dC̃_t·f + dpre_i·w_ci + dpre_f·w_cf
 * With layer norm of C̃_t, dL/dshown waits in d_shown for the row's sums; of the recurrent product,
 * its gradient follows from dL/dpre block by block. */
static inline __attribute__((always_inline)) void backward_row(const variant_backward_t *a, int64_t r, const int ln_c) {
    const int64_t H = a->H;
    const backward_row_t p = {ROW(a->gates, r), ROW(a->c_prev, r),   ROW(a->keep_c, r),   ROW(a->dc, r),
                              a->peepholes,     ROW(a->grad_pre, r), ROW(a->dc_prev, r), a->coupled != 0};
    const float *restrict o_r = p.gates + 3 * H, *restrict tc_r = ROW(a->tanh_c, r), *restrict kh_r = ROW(a->keep_h, r);
    const float *restrict dh_r = ROW(a->dh, r), *restrict kc_r = p.keep_c, *restrict dc_r = p.dc;
    float *restrict dhp = ROW(a->dh_prev, r), *restrict d_o = p.grad_pre + 3 * H;
    float *restrict shown = ln_c ? ROW(a->d_shown, r) : 0;
#pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
        const float o = o_r[j], tc = tc_r[j], kh = kh_r[j];
        const float dh_new = (1.0f - kh) * dh_r[j];
        dhp[j] += kh * dh_r[j];
        d_o[j] = dh_new * tc * o * (1.0f - o);
        const float d_shown = dh_new * o * (1.0f - tc * tc);
        if (ln_c)
            shown[j] = d_shown;
        else
            gate_gradients(&p, H, j, (1.0f - kc_r[j]) * dc_r[j] + d_shown);
    }
    if (ln_c) {
        float *d_ct = p.grad_pre + H;  /* dL/dC̃_t through the layer norm, parked in the forget gate's slot */
        layer_norm_backward(ROW(a->c_hat, r), shown, a->gain_c, H, ROW(a->c_rstd, r)[0], d_ct);
#pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) gate_gradients(&p, H, j, (1.0f - kc_r[j]) * dc_r[j] + d_ct[j]);
    }
    if (a->gain_hh) {
        for (int64_t k = 0; k < 4; ++k)
            layer_norm_backward(ROW(a->rec_hat, r) + k * H, p.grad_pre + k * H, a->gain_hh + k * H, H,
                                ROW(a->rec_rstd, r)[k], ROW(a->grad_rec, r) + k * H);
    }
}

/* One step's backward for a->rows sequences. */
void lstm_variant_backward(const variant_backward_t *a) {
#pragma omp parallel for if (a->rows * a->H >= 4096)
    for (int64_t r = 0; r < a->rows; ++r) {
        if (a->gain_c)
            backward_row(a, r, 1);
        else
            backward_row(a, r, 0);
    }
}

/* The input's share of the layer-normalized cell, for all steps at once: each row of x holds
 * `blocks` blocks of H values, each normalized on its own with a gain (and a bias, or NULL):
 * hat = (x − mean)/σ, y = gain · hat + bias, keeping hat and each block's 1/σ (rstd, `blocks` per row).
 * All matrices are contiguous. */
void lstm_block_norm_forward(int64_t rows, int64_t H, int64_t blocks, const float *x, const float *gain,
                             const float *bias, float *y, float *hat, float *rstd) {
#pragma omp parallel for if (rows * H >= 4096)
    for (int64_t r = 0; r < rows * blocks; ++r) {
        const int64_t k = r % blocks;
        const float *restrict x_r = x + r * H, *restrict g = gain + k * H;
        float *restrict y_r = y + r * H, *restrict hat_r = hat + r * H, mean, s;
        moments(x_r, H, &mean, &s);
        rstd[r] = s;
        for (int64_t j = 0; j < H; ++j) {
            hat_r[j] = (x_r[j] - mean) * s;
            y_r[j] = g[j] * hat_r[j] + (bias ? bias[k * H + j] : 0.0f);
        }
    }
}

/* Its backward: dx from dy through y = gain · LN(x), block by block. */
void lstm_block_norm_backward(int64_t rows, int64_t H, int64_t blocks, const float *dy, const float *hat,
                              const float *rstd, const float *gain, float *dx) {
#pragma omp parallel for if (rows * H >= 4096)
    for (int64_t r = 0; r < rows * blocks; ++r)
        layer_norm_backward(hat + r * H, dy + r * H, gain + (r % blocks) * H, H, rstd[r], dx + r * H);
}

/* out[k] += Σ_r a[r][k] · b[r][k] over contiguous [rows, width] matrices: a gain's gradient in one
 * pass, without the product as a temporary. Threads take disjoint column ranges. */
void lstm_column_dot(int64_t rows, int64_t width, const float *a, const float *b, float *out) {
    const int64_t chunk = 256;
#pragma omp parallel for if (rows * width >= 65536)
    for (int64_t start = 0; start < width; start += chunk) {
        const int64_t end = start + chunk < width ? start + chunk : width;
        for (int64_t r = 0; r < rows; ++r) {
            const float *restrict a_r = a + r * width, *restrict b_r = b + r * width;
            float *restrict o = out;
            for (int64_t k = start; k < end; ++k) o[k] += a_r[k] * b_r[k];
        }
    }
}

/* Zoneout's d (and any Bernoulli mask): out[i] = 1 where a 16-bit lane of a counter-based hash
 * (splitmix64's finalizer of seed + word index) is below threshold = round(p * 2^16), else 0.
 * Four units share a 64-bit word. Counter-based, so the result does not depend on the thread count. */
static inline uint64_t mix64(uint64_t seed, int64_t word) {
    uint64_t z = seed + (uint64_t)(word + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void lstm_bernoulli16_fill(int64_t n, uint64_t seed, int64_t threshold, float *out) {
    const int64_t full = n / 4;
#pragma omp parallel for simd if (n >= 65536)
    for (int64_t w = 0; w < full; ++w) {
        const uint64_t z = mix64(seed, w);
        for (int k = 0; k < 4; ++k) out[4 * w + k] = (int64_t)((z >> (16 * k)) & 0xFFFF) < threshold ? 1.0f : 0.0f;
    }
    uint64_t z = mix64(seed, full);
    for (int64_t i = 4 * full; i < n; ++i, z >>= 16) out[i] = (int64_t)(z & 0xFFFF) < threshold ? 1.0f : 0.0f;
}
