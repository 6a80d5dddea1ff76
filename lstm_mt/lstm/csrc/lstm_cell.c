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

#include "fastmath.h"

/* One step for `rows` sequences. With `gates` and `tanh_c` (not NULL) it also keeps what the
 * backward pass needs: i, f, C̃, o (laid out like `pre`) and tanh(C). */
static inline void forward_rows(int64_t rows, int64_t H, const float *pre, int64_t pre_stride,
                                const float *c_prev, int64_t c_prev_stride, float *c, int64_t c_stride,
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
            float i = sigmoid(p[j]);
            float f = sigmoid(p[H + j]);
            float g = tanh_approx(p[2 * H + j]);  /* C̃ */
            float o = sigmoid(p[3 * H + j]);
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
    forward_rows(rows, H, pre, pre_stride, c_prev, c_prev_stride, c, c_stride, h, h_stride, 0, 0, 0, 0, 0);
}

/* Training: C and h, and the gates and tanh(C) for `lstm_cell_backward`. */
void lstm_cell_forward_keep(int64_t rows, int64_t H, const float *pre, int64_t pre_stride,
                            const float *c_prev, int64_t c_prev_stride, float *c, int64_t c_stride,
                            float *h, int64_t h_stride, float *gates, int64_t gates_stride,
                            float *tanh_c, int64_t tanh_c_stride) {
    forward_rows(rows, H, pre, pre_stride, c_prev, c_prev_stride, c, c_stride, h, h_stride, gates,
                 gates_stride, tanh_c, tanh_c_stride, 1);
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
