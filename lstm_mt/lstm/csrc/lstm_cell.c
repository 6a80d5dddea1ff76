/*
 * The LSTM cell's point-wise step in C, for CPU float32.
 *
 * The same equations as `lstm_step` in lstm_mt/lstm/equations.py, taken element by element in one
 * pass over memory instead of a dozen separate tensor operations:
 *
 *     i = σ(pre_i)   f = σ(pre_f)   C̃ = tanh(pre_C̃)   o = σ(pre_o)
 *     C = f * C_prev + i * C̃        h = o * tanh(C)
 *
 * where row r of `pre` holds W·[h, x] + b for one sequence: four blocks of H values, in
 * the order i, f, C̃, o. Every matrix argument is row-major with its own row stride (in
 * floats), so callers can pass slices of larger buffers. Rows are shared among OpenMP
 * threads when built with -fopenmp: the same OpenMP runtime (and thread pool) as PyTorch's,
 * which loaded it first, so torch.set_num_threads applies. lstm_mt/native.py compiles
 * this file when a C compiler is present, checks it against PyTorch, and otherwise leaves
 * the work to the tensor operations.
 */
#include <stdint.h>
#include <string.h>

#include "fastmath.h"

/* One step for `rows` sequences. With `gates` and `tanh_c` (not NULL) it also keeps what the
 * backward pass needs: i, f, C̃, o (laid out like `pre`) and tanh(C). With `bias` (4H values, not
 * NULL) the pre-activations are pre + bias. */
static inline void forward_rows(int64_t rows, int64_t H, const float *pre, int64_t pre_stride,
                                const float *bias, const float *c_prev, int64_t c_prev_stride, float *c, int64_t c_stride,
                                float *h, int64_t h_stride, float *gates, int64_t gates_stride,
                                float *tanh_c, int64_t tanh_c_stride, const int keep) {
#pragma omp parallel for if (rows * H >= 4096)
    for (int64_t r = 0; r < rows; ++r) {
        const float *restrict p = pre + r * pre_stride;
        const float *restrict cp = c_prev + r * c_prev_stride;
        float *restrict c_r = c + r * c_stride;
        float *restrict h_r = h + r * h_stride;
        float *restrict g_r = keep ? gates + r * gates_stride : 0;
        float *restrict t_r = keep ? tanh_c + r * tanh_c_stride : 0;
#pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) {
            float pre_i = p[j], pre_f = p[H + j], pre_g = p[2 * H + j], pre_o = p[3 * H + j];
            if (bias) {
                pre_i += bias[j], pre_f += bias[H + j], pre_g += bias[2 * H + j], pre_o += bias[3 * H + j];
            }
            float i = sigmoid(pre_i);
            float f = sigmoid(pre_f);
            float g = tanh_approx(pre_g);  /* C̃ */
            float o = sigmoid(pre_o);
            float c_new = f * cp[j] + i * g;
            float tanh_c_new = tanh_approx(c_new);
            c_r[j] = c_new;
            h_r[j] = o * tanh_c_new;
            if (keep) {
                g_r[j] = i;
                g_r[H + j] = f;
                g_r[2 * H + j] = g;
                g_r[3 * H + j] = o;
                t_r[j] = tanh_c_new;
            }
        }
    }
}

/* Inference: C and h only. */
void lstm_cell_forward(int64_t rows, int64_t H, const float *pre, int64_t pre_stride,
                       const float *c_prev, int64_t c_prev_stride, float *c, int64_t c_stride,
                       float *h, int64_t h_stride) {
    forward_rows(rows, H, pre, pre_stride, 0, c_prev, c_prev_stride, c, c_stride, h, h_stride, 0, 0, 0, 0, 0);
}

/* Training: C and h, and the gates and tanh(C) for `lstm_cell_backward`. */
void lstm_cell_forward_keep(int64_t rows, int64_t H, const float *pre, int64_t pre_stride,
                            const float *c_prev, int64_t c_prev_stride, float *c, int64_t c_stride,
                            float *h, int64_t h_stride, float *gates, int64_t gates_stride,
                            float *tanh_c, int64_t tanh_c_stride) {
    forward_rows(rows, H, pre, pre_stride, 0, c_prev, c_prev_stride, c, c_stride, h, h_stride, gates,
                 gates_stride, tanh_c, tanh_c_stride, 1);
}

/* MKL's cblas_sgemm_compute (lstm_mt/lstm/mkl.py passes its address): C := A·B + beta·C, B packed. */
typedef void (*packed_product_t)(int layout, int transa, int transb, int m, int n, int k, const float *a,
                                 int lda, const void *b, int ldb, float beta, float *c, int ldc);
enum { ROW_MAJOR = 101, NO_TRANSPOSE = 111, PACKED = 151 };

/* A variant cell's step in a layer (lstm_variants.c): `variant` is its variant_forward_t. */
void lstm_variant_layer_step(void *variant, int64_t rows, float *pre, const float *c_prev, const float *h_prev,
                             float *c, float *h);

/* pre += bias on each of `rows` rows of width `width`. */
static void add_bias(int64_t rows, int64_t width, float *pre, const float *bias) {
#pragma omp parallel for if (rows * width >= 16384)
    for (int64_t r = 0; r < rows; ++r) {
        float *restrict p = pre + r * width;
        for (int64_t j = 0; j < width; ++j) p[j] += bias[j];
    }
}

/* Inference over a whole layer, for a length-sorted batch: `batch_sizes[t]` sequences run at step t.
 *
 *     pre_t = W_x·x_t (all steps in one product) + W_h·h_{t-1} + b,   then the step's equations
 *
 * `x` is [steps, batch, input], `pre` [steps, batch, 4H] room for the pre-activations, `hs` and
 * `cs` [steps, batch, H] receive every step's h and C, zero past a sequence's end; `h0`, `c0` are
 * [batch, H]. `w_ih` and `w_hh` are W_x and W_h packed by MKL. With `h0_is_zero` the first step
 * skips W_h·h0. With `variant` (a variant_forward_t, see lstm_variant_layer_step) the step is the
 * variant cell's. One call from Python per layer: no per-step dispatch. */
void lstm_layer_forward(packed_product_t product, int64_t steps, int64_t batch, int64_t input_size,
                        int64_t H, const int64_t *batch_sizes, const float *x, const void *w_ih,
                        const void *w_hh, const float *bias, const float *h0, const float *c0,
                        int64_t h0_is_zero, float *pre, float *hs, float *cs, void *variant) {
    const int64_t G = 4 * H;
    if (steps * batch == 0) return;
    product(ROW_MAJOR, NO_TRANSPOSE, PACKED, (int)(steps * batch), (int)G, (int)input_size, x,
            (int)input_size, w_ih, (int)G, 0.0f, pre, (int)G);
    for (int64_t t = 0; t < steps; ++t) {
        const int64_t rows = batch_sizes[t];
        float *pre_t = pre + t * batch * G, *h_t = hs + t * batch * H, *c_t = cs + t * batch * H;
        const float *h_prev = t ? h_t - batch * H : h0, *c_prev = t ? c_t - batch * H : c0;
        if (!(t == 0 && h0_is_zero) && rows > 0)
            product(ROW_MAJOR, NO_TRANSPOSE, PACKED, (int)rows, (int)G, (int)H, h_prev, (int)H, w_hh,
                    (int)G, 1.0f, pre_t, (int)G);
        if (variant) {
            if (bias) add_bias(rows, G, pre_t, bias);
            lstm_variant_layer_step(variant, rows, pre_t, c_prev, h_prev, c_t, h_t);
        } else {
            forward_rows(rows, H, pre_t, G, bias, c_prev, H, c_t, H, h_t, H, 0, 0, 0, 0, 0);
        }
        memset(h_t + rows * H, 0, (size_t)((batch - rows) * H) * sizeof(float));
        memset(c_t + rows * H, 0, (size_t)((batch - rows) * H) * sizeof(float));
    }
}

/* The backward pass of one step. From the step's gates, tanh(C) and C_prev, and the incoming
 * dh = dL/dh and dc = dL/dC (from later steps and outputs), with σ' = σ(1 − σ) and
 * tanh' = 1 − tanh²:
 *
 *     dC     = dc + dh · o · (1 − tanh²C)         (C reaches the loss directly and through h)
 *     dpre_i = dC · C̃ · i(1 − i)      dpre_f = dC · C_prev · f(1 − f)
 *     dpre_C̃ = dC · i · (1 − C̃²)      dpre_o = dh · tanh C · o(1 − o)
 *
 * writes dL/dpre to `grad_pre` (laid out like the gates) and adds dC · f, the gradient
 * reaching C_prev, to `dc_prev`. */
void lstm_cell_backward(int64_t rows, int64_t H, const float *gates, int64_t gates_stride,
                        const float *tanh_c, int64_t tanh_c_stride, const float *c_prev,
                        int64_t c_prev_stride, const float *dh, int64_t dh_stride, const float *dc,
                        int64_t dc_stride, float *grad_pre, int64_t grad_pre_stride, float *dc_prev,
                        int64_t dc_prev_stride) {
#pragma omp parallel for if (rows * H >= 4096)
    for (int64_t r = 0; r < rows; ++r) {
        const float *restrict g_r = gates + r * gates_stride;
        const float *restrict t_r = tanh_c + r * tanh_c_stride;
        const float *restrict cp = c_prev + r * c_prev_stride;
        const float *restrict dh_r = dh + r * dh_stride;
        const float *restrict dc_r = dc + r * dc_stride;
        float *restrict out = grad_pre + r * grad_pre_stride;
        float *restrict dcp = dc_prev + r * dc_prev_stride;
#pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) {
            float i = g_r[j], f = g_r[H + j], g = g_r[2 * H + j], o = g_r[3 * H + j];
            float tc = t_r[j];
            float dC = dc_r[j] + dh_r[j] * o * (1.0f - tc * tc);
            out[j] = dC * g * i * (1.0f - i);
            out[H + j] = dC * cp[j] * f * (1.0f - f);
            out[2 * H + j] = dC * i * (1.0f - g * g);
            out[3 * H + j] = dh_r[j] * tc * o * (1.0f - o);
            dcp[j] += dC * f;
        }
    }
}
