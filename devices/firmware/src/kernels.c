/* Instantiates kernels_tmpl.h for float32 and int8, plus cross-entropy and SGD. */
#include <math.h>
#include "kernels.h"
#include "ce_lut.h"

/* ---- float32 ---- */
#define T float
#define ACC float
#define BT float
#define SUF f32
#define STORE(acc) (acc)
#define SATADD(a, b) ((a) + (b))
#define LOWEST (-INFINITY)
#define AVG(acc, count) ((acc) / (float)(count))
#define SIX(k) 6.0f
#define XI(n, c, y, x, C, H, W) ((((n) * (C) + (c)) * (H) + (y)) * (W) + (x))
#define WI(oc, icg, ky, kx) ((((oc) * cpg + (icg)) * KH + (ky)) * KW + (kx))
#include "kernels_tmpl.h"
#undef XI
#undef WI
#undef T
#undef ACC
#undef BT
#undef SUF
#undef STORE
#undef SATADD
#undef LOWEST
#undef AVG
#undef SIX

/* ---- int8: NHWC activations, OHWI weights, depthwise weights [KH][KW][OC] ---- */
#define T int8_t
#define ACC int32_t
#define BT int32_t
#define SUF s8
#define STORE(acc) sat8(requant((acc), k->qmult, k->qshift))
#define SATADD(a, b) sat8((int32_t)(a) + (int32_t)(b))
#define LOWEST (-128)
#define AVG(acc, count) sat8(round_div((acc), (count)))
#define SIX(k) ((int8_t)k->p[1])
#define XI(n, c, y, x, C, H, W) ((((n) * (H) + (y)) * (W) + (x)) * (C) + (c))
#define WI(oc, icg, ky, kx) (DW ? ((ky) * KW + (kx)) * OC + (oc) \
                                : (((oc) * KH + (ky)) * KW + (kx)) * cpg + (icg))
#include "kernels_tmpl.h"

/* Row maximum (into *max) and sum of exp(r[i] - max): the stable softmax denominator. */
static inline float row_sumexp(const float *r, int K, float *max)
{
    float m = r[0];
    for (int i = 1; i < K; i++) if (r[i] > m) m = r[i];
    float s = 0.0f;
    for (int i = 0; i < K; i++) s += expf(r[i] - m);
    *max = m;
    return s;
}

NOINLINE void ce_fwd_f32(const struct kparams *k, const float *x, const int32_t *t, float *loss)
{
    const int N = k->p[0], K = k->p[1];
    float total = 0.0f;
    for (int n = 0; n < N; n++) {
        const float *r = x + n * K;
        float m;
        const float s = row_sumexp(r, K, &m);
        total += m + logf(s) - r[t[n]];
    }
    loss[0] = total / (float)N;
}

NOINLINE void ce_bwd_f32(const struct kparams *k, const float *x, const int32_t *t, float *dx)
{
    const int N = k->p[0], K = k->p[1];
    for (int n = 0; n < N; n++) {
        const float *r = x + n * K;
        float m;
        const float s = row_sumexp(r, K, &m);
        for (int i = 0; i < K; i++)
            dx[n * K + i] = (expf(r[i] - m) / s - (i == t[n] ? 1.0f : 0.0f)) / (float)N;
    }
}

/* int8 softmax in Q15 from the exp table: p[i] = (lut[max - x_i] << 15) / sum (floor). */
static uint32_t softmax_q15(const int8_t *r, int K, int i, uint32_t *sum_out, int8_t *max_out,
                            int compute)
{
    if (compute) {
        int8_t m = r[0];
        for (int j = 1; j < K; j++) if (r[j] > m) m = r[j];
        uint32_t s = 0;
        for (int j = 0; j < K; j++) s += CE_EXP_LUT[m - r[j]];
        *sum_out = s;
        *max_out = m;
    }
    return (CE_EXP_LUT[*max_out - r[i]] << 15) / *sum_out;
}

NOINLINE void ce_fwd_s8(const struct kparams *k, const int8_t *x, const int32_t *t, int32_t *loss)
{
    const int N = k->p[0], K = k->p[1];
    for (int n = 0; n < N; n++) {
        uint32_t s;
        int8_t m;
        uint32_t p = softmax_q15(x + n * K, K, t[n], &s, &m, 1);
        loss[n] = CE_NLL_LUT[p >> 7];
    }
}

NOINLINE void ce_bwd_s8(const struct kparams *k, const int8_t *x, const int32_t *t, int8_t *dx)
{
    const int N = k->p[0], K = k->p[1];
    for (int n = 0; n < N; n++) {
        uint32_t s;
        int8_t m;
        for (int i = 0; i < K; i++) {
            int32_t p = (int32_t)softmax_q15(x + n * K, K, i, &s, &m, i == 0);
            int32_t num = p - (i == t[n] ? 32768 : 0);
            dx[n * K + i] = sat8(round_div(num, 256 * N));
        }
    }
}

NOINLINE void sgd_f32(const struct kparams *k, float *p, const float *g, float *v)
{
    const float lr = k->f[0], mom = k->f[1];
    if (v) {
        for (int i = 0; i < k->p[0]; i++) {
            v[i] = mom * v[i] + g[i];
            p[i] -= lr * v[i];
        }
    } else {
        for (int i = 0; i < k->p[0]; i++) p[i] -= lr * g[i];
    }
}

/* int8 SGD with quantisation-aware scaling (Lin et al., "On-device training under 256KB
 * memory"): the int8 weight W = s_W[c] * w of output channel c moves by
 * lr * s_g / s_W[c]^2 * g for an int8 gradient g of scale s_g, that real factor given per
 * channel as a TFLite multiplier q[2c] (mult) and q[2c + 1] (shift):
 *     w = sat8(w - requant(g, q[2c], q[2c + 1])),   channel c = i / (numel / channels).
 * The parameter is channel-major (OHWI, [OUT][IN]); p[1] = channels (0 or 1: one scale). */
NOINLINE void sgd_s8(const struct kparams *k, int8_t *p, const int8_t *g, const int32_t *q)
{
    const int numel = k->p[0], ch = k->p[1] > 1 ? k->p[1] : 1, per = numel / ch;
    for (int c = 0; c < ch; c++) {
        const int32_t m = q[2 * c], s = q[2 * c + 1];
        for (int i = c * per; i < (c + 1) * per; i++)
            p[i] = sat8((int32_t)p[i] - requant((int32_t)g[i], m, s));
    }
}
