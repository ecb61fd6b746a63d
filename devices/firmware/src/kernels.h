/* Training kernels, float32 and int8. See docs/firmware.md for the exact definitions.
 * float32: NCHW (as torch), weights [OC][C/G][KH][KW], [OUT][IN].
 * int8: the layout of fast MCU kernels (CMSIS-NN, TinyEngine): activations NHWC, convolution
 * weights OHWI [OC][KH][KW][C/G], depthwise (G == C == OC > 1) weights [KH][KW][OC], linear
 * [OUT][IN]; symmetric (zero point 0), int32 accumulation, int32 bias, requantisation as
 * TFLite/CMSIS-NN (requant() below).
 * Two int8 variants: the portable C kernels (kernels_tmpl.h; every core, and the numerical
 * reference on the board) and, on cores with the DSP extension, SIMD kernels for conv, depthwise
 * and linear, forward and backward (kernels_simd.c), bit-exact with the portable ones. */
#pragma once
#include <stdint.h>

#define NOINLINE __attribute__((noinline))

enum kernel_id {
    K_CONV_FWD = 1, K_CONV_BWD_DATA = 2, K_CONV_BWD_WEIGHT = 3,
    K_LINEAR_FWD = 4, K_LINEAR_BWD_DATA = 5, K_LINEAR_BWD_WEIGHT = 6,
    K_RELU_FWD = 7, K_RELU_BWD = 8, K_RELU6_FWD = 9, K_RELU6_BWD = 10,
    K_MAXPOOL_FWD = 11, K_MAXPOOL_BWD = 12, K_AVGPOOL_FWD = 13, K_AVGPOOL_BWD = 14,
    K_ADD = 15, K_CE_FWD = 16, K_CE_BWD = 17, K_SGD = 18,
};

/* Kernel parameters as they arrive from the host. p[] meaning per kernel:
 * conv:   N C H W OC KH KW SH SW PH PW G      linear: N IN OUT
 * pool:   N C H W KH KW SH SW PH PW           eltwise: numel (relu6 int8: p[1] = q6)
 * ce:     N K                                 sgd: numel, f[0] = lr, f[1] = momentum */
struct kparams {
    int32_t p[12];
    float f[2];
    int32_t qmult, qshift;
    int has_bias;
};

static inline int8_t sat8(int32_t v) { return (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v)); }

/* TFLite MultiplyByQuantizedMultiplier: SaturatingRoundingDoublingHighMul then
 * RoundingDivideByPOT; shift > 0 shifts left first (wrapping), shift <= 0 divides. */
static inline int32_t requant(int32_t acc, int32_t mult, int32_t shift)
{
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int32_t a = (int32_t)((uint32_t)acc << left);
    int32_t h;
    if (a == INT32_MIN && mult == INT32_MIN) {
        h = INT32_MAX;
    } else {   /* gemmlowp: (ab + (ab >= 0 ? 2^30 : 1 - 2^30)) / 2^31 rounded toward zero, which
                * is floor((ab + 2^30) / 2^31) for every ab: one branch-free expression */
        h = (int32_t)(((int64_t)a * (int64_t)mult + (1LL << 30)) >> 31);
    }
    int32_t mask = (int32_t)((1u << right) - 1u);
    int32_t rem = h & mask;
    int32_t thr = (mask >> 1) + (h < 0 ? 1 : 0);
    return (h >> right) + (rem > thr ? 1 : 0);
}

/* round(num / den) with halves away from zero, den > 0 */
static inline int32_t round_div(int32_t num, int32_t den)
{
    return num >= 0 ? (num + den / 2) / den : -((-num + den / 2) / den);
}

#define DECLARE_KERNELS(SUF, T, BT) \
    void conv_fwd_##SUF(const struct kparams *k, const T *x, const T *w, const BT *b, T *y); \
    void conv_bwd_data_##SUF(const struct kparams *k, const T *dy, const T *w, T *dx); \
    void conv_bwd_weight_##SUF(const struct kparams *k, const T *x, const T *dy, T *dw, BT *db); \
    void linear_fwd_##SUF(const struct kparams *k, const T *x, const T *w, const BT *b, T *y); \
    void linear_bwd_data_##SUF(const struct kparams *k, const T *dy, const T *w, T *dx); \
    void linear_bwd_weight_##SUF(const struct kparams *k, const T *x, const T *dy, T *dw, BT *db); \
    void relu_fwd_##SUF(const struct kparams *k, const T *x, T *y); \
    void relu_bwd_##SUF(const struct kparams *k, const T *y, const T *dy, T *dx); \
    void relu6_fwd_##SUF(const struct kparams *k, const T *x, T *y); \
    void relu6_bwd_##SUF(const struct kparams *k, const T *y, const T *dy, T *dx); \
    void maxpool_fwd_##SUF(const struct kparams *k, const T *x, T *y); \
    void maxpool_bwd_##SUF(const struct kparams *k, const T *x, const T *dy, T *dx); \
    void avgpool_fwd_##SUF(const struct kparams *k, const T *x, T *y); \
    void avgpool_bwd_##SUF(const struct kparams *k, const T *dy, T *dx); \
    void add_##SUF(const struct kparams *k, const T *a, const T *b, T *y);

DECLARE_KERNELS(f32, float, float)
DECLARE_KERNELS(s8, int8_t, int32_t)
void sgd_f32(const struct kparams *k, float *p, const float *g, float *v);
void sgd_s8(const struct kparams *k, int8_t *p, const int8_t *g, const int32_t *q);
void ce_fwd_f32(const struct kparams *k, const float *x, const int32_t *t, float *loss);
void ce_bwd_f32(const struct kparams *k, const float *x, const int32_t *t, float *dx);
void ce_fwd_s8(const struct kparams *k, const int8_t *x, const int32_t *t, int32_t *loss);
void ce_bwd_s8(const struct kparams *k, const int8_t *x, const int32_t *t, int8_t *dx);

/* SIMD int8 kernels (kernels_simd.c). simd_plan(): the scratch bytes the SIMD kernel for this
 * request needs from the arena (>= 0), or -1 when the portable kernel runs instead (no DSP
 * extension, KERNELS=portable, or a shape / requantisation the SIMD kernels do not cover). */
int32_t simd_plan(int kid, const struct kparams *k);
void conv_fwd_s8_simd(const struct kparams *k, const int8_t *x, const int8_t *w,
                      const int32_t *b, int8_t *y, uint8_t *scratch);
void conv_bwd_data_s8_simd(const struct kparams *k, const int8_t *dy, const int8_t *w,
                           int8_t *dx, uint8_t *scratch);
void conv_bwd_weight_s8_simd(const struct kparams *k, const int8_t *x, const int8_t *dy,
                             int8_t *dw, int32_t *db, uint8_t *scratch);
void linear_fwd_s8_simd(const struct kparams *k, const int8_t *x, const int8_t *w,
                        const int32_t *b, int8_t *y, uint8_t *scratch);
void linear_bwd_data_s8_simd(const struct kparams *k, const int8_t *dy, const int8_t *w,
                             int8_t *dx, uint8_t *scratch);
void linear_bwd_weight_s8_simd(const struct kparams *k, const int8_t *x, const int8_t *dy,
                               int8_t *dw, int32_t *db, uint8_t *scratch);
#if defined(__ARM_FEATURE_DSP) && !defined(KERNELS_PORTABLE)
#define KERNELS_SIMD 1
#define KERNEL_VARIANT "simd"
#else
#define KERNELS_SIMD 0
#define KERNEL_VARIANT "portable"
#endif
