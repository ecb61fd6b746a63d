/* int8 kernels for cores with the DSP extension (Cortex-M4/M7/M33): SXTB16 + SMLAD through the
 * ACLE intrinsics of arm_acle.h, partial im2col into a small scratch buffer, 2 x 2 register
 * blocking (2 rows of the reduction matrix x 2 columns), in the style of CMSIS-NN.
 *
 * Layouts are those of the portable int8 kernels (kernels.h): activations NHWC, convolution
 * weights OHWI ([OC][KH][KW][C/G]), depthwise weights [KH][KW][OC]. Results are bit-exact with
 * the portable kernels: the same int32 sums and the same TFLite requantisation.
 *
 * Every dense kernel is one matrix product out[r][c] = requant(init[r] + sum_k R[r][k] * col_c[k]):
 *   conv fwd        R = weights [OC][KH*KW*C]          col = im2col of one output pixel
 *   conv bwd_data   R = weights transposed [C][KH*KW*OC] (built in scratch)
 *                                                      col = gather of dy for one input pixel
 *   conv bwd_weight R = dy transposed [OC][N*OH*OW]    col = x under one (ky, kx, c) tap
 *   linear fwd      R = weights [OUT][IN]              col = one row of x
 *   linear bwd_data R = weights transposed [IN][OUT]   col = one row of dy
 *   linear bwd_wt   R = dy transposed [OUT][N]         col = one column of x
 *                   (batch 1: an outer product, outer_s8)
 * A column is gathered into int8 ("patch"), then widened into int16 in SMLAD order: per 4
 * values (v0 v1 v2 v3) the words (v0, v2) and (v1, v3), which is what SXTB16 and SXTB16 ROR #8
 * make of the 4 int8 row values in one load. Depthwise convolutions (G == C == OC) have their
 * own channel-vectorised loops: interior output pixels of the forward pass pair taps through
 * SMLAD (PKHBT/PKHTB, weight pairs packed in scratch, an assembly inner loop), the rest use
 * SMLABB / SMLATT per channel. Everything else (other grouped convolutions, pools, eltwise,
 * SGD) uses the portable kernels. Requantisation: rq_apply (5 or 8 instructions, bit-exact).
 *
 * simd_plan() decides (the host mirrors it in devices/serial/ops.py scratch_bytes()). */
#include <string.h>
#include "kernels.h"

#if defined(__ARM_FEATURE_DSP) && !defined(KERNELS_PORTABLE)
#include <arm_acle.h>

static inline int32_t ld32(const void *p) { int32_t v; memcpy(&v, p, 4); return v; }
static inline int32_t sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm ("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* requantisation parameters, hoisted out of the loops */
struct rq { int32_t mult; int left, right; int32_t nudge, negmask; };

static void rq_init(struct rq *q, const struct kparams *k)
{
    q->mult = k->qmult;
    q->left = k->qshift > 0 ? k->qshift : 0;
    q->right = k->qshift > 0 ? 0 : -k->qshift;
    q->nudge = q->right ? (int32_t)(1u << (q->right - 1)) : 0;
    q->negmask = q->right ? -1 : 0;
}

static inline int32_t smmulr(int32_t a, int32_t b)
{
    int32_t r;
    __asm ("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

static inline int32_t smmlar(int32_t a, int32_t b, int32_t acc)
{
    int32_t r;
    __asm ("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* == sat8(requant()) of kernels.h for the multipliers simd_plan() admits (mult 0 or in
 * [2^30, 2^31), shift >= -21). Why it is exact:
 *  - gemmlowp's SaturatingRoundingDoublingHighMul, (a*m + nudge) / 2^31 rounded toward zero,
 *    equals h = floor((a*m + 2^30) / 2^31) = SMMULR(2a, m). When 2a overflows (|a| >= 2^30) QADD
 *    saturates it and the result still saturates int8 the same way: |h| >= 2^29 - 1, and a
 *    right shift of at most 21 leaves |r| >= 255.
 *  - RoundingDivideByPOT(h, e) (remainder > threshold rounds up, threshold one higher for
 *    negative h) equals floor((h + 2^(e-1) - [h < 0]) / 2^e) for e >= 1, h for e = 0.
 * F (a compile-time constant, 1 when shift <= -1: left = 0, e >= 1) takes 5 instructions:
 * SMMLAR adds the nudge 2^(e-1) to h exactly, and [a < 0] replaces [h < 0]: they differ only
 * when h = 0 (m > 0, a < 0, h >= 0 forces h = 0), where (2^(e-1) - 1) >> e = 2^(e-1) >> e = 0.
 * F = 0 is the general form (8 instructions). */
static ALWAYS_INLINE int8_t rq_apply(int32_t acc, const struct rq *q, const int F)
{
    if (F) {
        const int32_t hn = smmlar(__qadd(acc, acc), q->mult, q->nudge);
        return (int8_t)__ssat((hn + (acc >> 31)) >> q->right, 8);
    }
    const int32_t a = (int32_t)((uint32_t)acc << q->left);
    const int32_t h = smmulr(__qadd(a, a), q->mult);
    const int32_t r = (h + q->nudge + ((h >> 31) & q->negmask)) >> q->right;
    return (int8_t)__ssat(r, 8);
}

static int rq_fast(const struct kparams *k) { return k->qshift <= -1; }

/* the F = 1 form for an accumulator already doubled without overflow (2 * acc): no QADD */
static ALWAYS_INLINE int8_t rq_doubled(int32_t acc2, const struct rq *q)
{
    const int32_t hn = smmlar(acc2, q->mult, q->nudge);
    return (int8_t)__ssat((hn + (acc2 >> 31)) >> q->right, 8);
}

/* ------------------------------------------------------------------ matrix product */
typedef const int8_t *(*colgen_fn)(const void *ctx, int j, int8_t *patch);

struct gemm {
    const int8_t *R;  int NR, K, rs;      /* rows R + r * rs, K values each */
    int NC; colgen_fn gen; const void *ctx;
    const int32_t *bias;                  /* per row, or 0 */
    int8_t *out; int ors, ocs;            /* out[r * ors + c * ocs] */
    int16_t *c0, *c1; int8_t *patch;      /* scratch */
};

/* int8 column -> int16 words (v0, v2), (v1, v3) per 4 values, zero-padded to 4 */
static void widen(const int8_t *src, int K, int16_t *dst)
{
    int32_t *d = (int32_t *)dst;
    int i = 0;
    for (; i + 4 <= K; i += 4) {
        int32_t v = ld32(src + i);
        d[0] = __sxtb16(v);
        d[1] = sxtb16_ror8(v);
        d += 2;
    }
    if (i < K) {
        uint8_t t[4] = {0, 0, 0, 0};
        for (int j = 0; i + j < K; j++) t[j] = (uint8_t)src[i + j];
        int32_t v = ld32(t);
        d[0] = __sxtb16(v);
        d[1] = sxtb16_ror8(v);
    }
}

static inline void mm2x2(const int8_t *a0, const int8_t *a1, const int16_t *b0,
                         const int16_t *b1, int K4, int32_t *s)
{
    int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
    const int32_t *p0 = (const int32_t *)b0, *p1 = (const int32_t *)b1;
    while (K4--) {
        const int32_t w0 = ld32(a0), w1 = ld32(a1);
        a0 += 4; a1 += 4;
        const int32_t w0a = __sxtb16(w0), w0b = sxtb16_ror8(w0);
        const int32_t w1a = __sxtb16(w1), w1b = sxtb16_ror8(w1);
        int32_t x = p0[0], y = p0[1];
        p0 += 2;
        s00 = __smlad(w0a, x, s00); s00 = __smlad(w0b, y, s00);
        s10 = __smlad(w1a, x, s10); s10 = __smlad(w1b, y, s10);
        x = p1[0]; y = p1[1];
        p1 += 2;
        s01 = __smlad(w0a, x, s01); s01 = __smlad(w0b, y, s01);
        s11 = __smlad(w1a, x, s11); s11 = __smlad(w1b, y, s11);
    }
    s[0] = s00; s[1] = s01; s[2] = s10; s[3] = s11;
}

/* 4 rows x 1 column (a single column: a batch-1 fully connected layer) */
static inline void mm4x1(const int8_t *a, int rs, const int16_t *b0, int K4, int32_t *s)
{
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
    const int8_t *a0 = a, *a1 = a + rs, *a2 = a + 2 * rs, *a3 = a + 3 * rs;
    const int32_t *p0 = (const int32_t *)b0;
    while (K4--) {
        const int32_t x = p0[0], y = p0[1];
        p0 += 2;
        int32_t w = ld32(a0); a0 += 4;
        s0 = __smlad(__sxtb16(w), x, s0); s0 = __smlad(sxtb16_ror8(w), y, s0);
        w = ld32(a1); a1 += 4;
        s1 = __smlad(__sxtb16(w), x, s1); s1 = __smlad(sxtb16_ror8(w), y, s1);
        w = ld32(a2); a2 += 4;
        s2 = __smlad(__sxtb16(w), x, s2); s2 = __smlad(sxtb16_ror8(w), y, s2);
        w = ld32(a3); a3 += 4;
        s3 = __smlad(__sxtb16(w), x, s3); s3 = __smlad(sxtb16_ror8(w), y, s3);
    }
    s[0] = s0; s[1] = s1; s[2] = s2; s[3] = s3;
}

static inline int32_t mm1x1(const int8_t *a0, const int16_t *b0, int K4, int32_t s)
{
    const int32_t *p0 = (const int32_t *)b0;
    while (K4--) {
        const int32_t w = ld32(a0);
        a0 += 4;
        s = __smlad(__sxtb16(w), p0[0], s);
        s = __smlad(sxtb16_ror8(w), p0[1], s);
        p0 += 2;
    }
    return s;
}

static ALWAYS_INLINE void gemm_body(const struct gemm *gp, const struct kparams *k, const int F)
{
    struct rq q;
    rq_init(&q, k);
    const struct gemm gl = *gp, *g = &gl;   /* a local copy: int8 stores cannot alias it */
    const int K4 = (g->K + 3) >> 2;
    int j = 0;
    for (; j + 1 < g->NC; j += 2) {
        widen(g->gen(g->ctx, j, g->patch), g->K, g->c0);
        widen(g->gen(g->ctx, j + 1, g->patch), g->K, g->c1);
        int8_t *o = g->out + j * g->ocs;
        int r = 0;
        for (; r + 1 < g->NR; r += 2) {
            int32_t s[4];
            s[0] = s[1] = g->bias ? g->bias[r] : 0;
            s[2] = s[3] = g->bias ? g->bias[r + 1] : 0;
            mm2x2(g->R + r * g->rs, g->R + (r + 1) * g->rs, g->c0, g->c1, K4, s);
            o[r * g->ors] = rq_apply(s[0], &q, F);
            o[r * g->ors + g->ocs] = rq_apply(s[1], &q, F);
            o[(r + 1) * g->ors] = rq_apply(s[2], &q, F);
            o[(r + 1) * g->ors + g->ocs] = rq_apply(s[3], &q, F);
        }
        if (r < g->NR) {
            const int32_t b = g->bias ? g->bias[r] : 0;
            o[r * g->ors] = rq_apply(mm1x1(g->R + r * g->rs, g->c0, K4, b), &q, F);
            o[r * g->ors + g->ocs] = rq_apply(mm1x1(g->R + r * g->rs, g->c1, K4, b), &q, F);
        }
    }
    if (j < g->NC) {
        widen(g->gen(g->ctx, j, g->patch), g->K, g->c0);
        int8_t *o = g->out + j * g->ocs;
        int r = 0;
        for (; r + 3 < g->NR; r += 4) {
            int32_t s[4];
            for (int i = 0; i < 4; i++) s[i] = g->bias ? g->bias[r + i] : 0;
            mm4x1(g->R + r * g->rs, g->rs, g->c0, K4, s);
            for (int i = 0; i < 4; i++) o[(r + i) * g->ors] = rq_apply(s[i], &q, F);
        }
        for (; r < g->NR; r++)
            o[r * g->ors] = rq_apply(mm1x1(g->R + r * g->rs, g->c0, K4,
                                           g->bias ? g->bias[r] : 0), &q, F);
    }
}

static NOINLINE void gemm_fast(const struct gemm *g, const struct kparams *k) { gemm_body(g, k, 1); }
static NOINLINE void gemm_general(const struct gemm *g, const struct kparams *k) { gemm_body(g, k, 0); }
static void gemm_run(const struct gemm *g, const struct kparams *k)
{
    if (rq_fast(k)) gemm_fast(g, k); else gemm_general(g, k);
}

static inline void copy8(int8_t *d, const int8_t *s, int n)
{
    for (; n >= 4; n -= 4, d += 4, s += 4) { int32_t v = ld32(s); memcpy(d, &v, 4); }
    while (n-- > 0) *d++ = *s++;
}

/* ------------------------------------------------------------------ column generators */
struct cctx { const struct kparams *k; const int8_t *a; };

#define DIMS \
    const int N = k->p[0], C = k->p[1], H = k->p[2], W = k->p[3], OC = k->p[4]; \
    const int KH = k->p[5], KW = k->p[6], SH = k->p[7], SW = k->p[8], PH = k->p[9], PW = k->p[10]; \
    const int OH = (H + 2 * PH - KH) / SH + 1, OW = (W + 2 * PW - KW) / SW + 1; \
    (void)N; (void)C; (void)H; (void)W; (void)OC; (void)OH; (void)OW; (void)SH; (void)SW; (void)PH; (void)PW; (void)KH; (void)KW;

/* conv fwd: the KH*KW*C inputs under output pixel j (n, oy, ox), zeros in the padding */
static const int8_t *col_conv_fwd(const void *vc, int j, int8_t *patch)
{
    const struct cctx *cc = vc;
    const struct kparams *k = cc->k;
    DIMS
    const int n = j / (OH * OW), oy = (j / OW) % OH, ox = j % OW;
    const int iy0 = oy * SH - PH, ix0 = ox * SW - PW;
    const int8_t *xn = cc->a + (size_t)n * H * W * C;
    if (KH == 1 && KW == 1 && PH == 0 && PW == 0) return xn + (iy0 * W + ix0) * C;
    const int row = KW * C;
    for (int ky = 0; ky < KH; ky++) {
        int8_t *d = patch + ky * row;
        const int iy = iy0 + ky;
        if (iy < 0 || iy >= H) { memset(d, 0, (size_t)row); continue; }
        const int8_t *s = xn + iy * W * C;
        if (ix0 >= 0 && ix0 + KW <= W) { copy8(d, s + ix0 * C, row); continue; }
        for (int kx = 0; kx < KW; kx++) {
            const int ix = ix0 + kx;
            if (ix < 0 || ix >= W) memset(d + kx * C, 0, (size_t)C);
            else copy8(d + kx * C, s + ix * C, C);
        }
    }
    return patch;
}

/* conv bwd_data: dy under input pixel j (n, iy, ix): [ky][kx][oc], zeros where no output
 * pixel reads (iy, ix) through tap (ky, kx) */
static const int8_t *col_conv_bwd_data(const void *vc, int j, int8_t *patch)
{
    const struct cctx *cc = vc;
    const struct kparams *k = cc->k;
    DIMS
    const int n = j / (H * W), iy = (j / W) % H, ix = j % W;
    const int8_t *dyn = cc->a + (size_t)n * OH * OW * OC;
    for (int ky = 0; ky < KH; ky++) {
        const int ty = iy + PH - ky, oy = ty / SH;
        const int oky = ty >= 0 && ty % SH == 0 && oy < OH;
        for (int kx = 0; kx < KW; kx++) {
            int8_t *d = patch + (ky * KW + kx) * OC;
            const int tx = ix + PW - kx, ox = tx / SW;
            if (oky && tx >= 0 && tx % SW == 0 && ox < OW) copy8(d, dyn + (oy * OW + ox) * OC, OC);
            else memset(d, 0, (size_t)OC);
        }
    }
    return patch;
}

/* conv bwd_weight: x under tap j = (ky, kx, c) for every output pixel (n, oy, ox) */
static const int8_t *col_conv_bwd_weight(const void *vc, int j, int8_t *patch)
{
    const struct cctx *cc = vc;
    const struct kparams *k = cc->k;
    DIMS
    const int c = j % C, kx = (j / C) % KW, ky = j / (C * KW);
    int8_t *d = patch;
    for (int n = 0; n < N; n++)
        for (int oy = 0; oy < OH; oy++) {
            const int iy = oy * SH - PH + ky;
            if (iy < 0 || iy >= H) { memset(d, 0, (size_t)OW); d += OW; continue; }
            const int8_t *s = cc->a + (((size_t)n * H + iy) * W) * C + c;
            for (int ox = 0; ox < OW; ox++) {
                const int ix = ox * SW - PW + kx;
                *d++ = (ix >= 0 && ix < W) ? s[ix * C] : 0;
            }
        }
    return patch;
}

struct lctx { const int8_t *a; int stride, n; };

static const int8_t *col_row(const void *vc, int j, int8_t *patch)
{
    const struct lctx *lc = vc;
    (void)patch;
    return lc->a + j * lc->stride;
}

static const int8_t *col_column(const void *vc, int j, int8_t *patch)
{
    const struct lctx *lc = vc;
    for (int n = 0; n < lc->n; n++) patch[n] = lc->a[n * lc->stride + j];
    return patch;
}

/* ------------------------------------------------------------------ plan */
static uint32_t align8(uint32_t v) { return (v + 7u) & ~7u; }

static int is_dw(const struct kparams *k) { return k->p[11] > 1 && k->p[11] == k->p[1] && k->p[4] == k->p[1]; }

/* scratch layout: [rows (transposed copy) + 4 bytes of over-read slack][col0][col1][patch] */
static uint32_t gemm_scratch(uint32_t rows_bytes, int K)
{
    const uint32_t K4 = (uint32_t)(K + 3) >> 2;
    return (rows_bytes ? align8(rows_bytes + 4u) : 0u) + 20u * K4;
}

int32_t simd_plan(int kid, const struct kparams *k)
{
    const int32_t *p = k->p;
    /* the fast requantisation (rq_apply) holds for these multipliers, which is every one the
     * host makes (TFLite's QuantizeMultiplier normalises to [2^30, 2^31)) */
    if (!(k->qmult == 0 || k->qmult >= (1 << 30)) || k->qshift > 30 || k->qshift < -21) return -1;
    switch (kid) {
    case K_CONV_FWD: case K_CONV_BWD_DATA: case K_CONV_BWD_WEIGHT: {
        const int KHW = p[5] * p[6];
        const int OH = (p[2] + 2 * p[9] - p[5]) / p[7] + 1, OW = (p[3] + 2 * p[10] - p[6]) / p[8] + 1;
        if (is_dw(k))   /* forward: the weights packed in tap pairs */
            return KHW > 64 ? -1 : kid == K_CONV_FWD ? 24 * (p[1] >> 2) * ((KHW + 1) >> 1) : 0;
        if (p[11] != 1) return -1;
        if (kid == K_CONV_FWD) return (int32_t)gemm_scratch(0, KHW * p[1]);
        if (kid == K_CONV_BWD_DATA)
            return (int32_t)gemm_scratch((uint32_t)p[1] * KHW * p[4], KHW * p[4]);
        return (int32_t)gemm_scratch((uint32_t)p[4] * p[0] * OH * OW, p[0] * OH * OW);
    }
    case K_LINEAR_FWD: return (int32_t)gemm_scratch(0, p[1]);
    case K_LINEAR_BWD_DATA: return (int32_t)gemm_scratch((uint32_t)p[1] * p[2], p[2]);
    case K_LINEAR_BWD_WEIGHT:   /* batch 1: no scratch (an outer product) */
        return p[0] == 1 ? 0 : (int32_t)gemm_scratch((uint32_t)p[2] * p[0], p[0]);
    default: return -1;
    }
}

static void gemm_scratch_init(struct gemm *g, uint8_t *scratch, uint32_t rows_bytes)
{
    const uint32_t K4 = (uint32_t)(g->K + 3) >> 2;
    uint8_t *s = scratch + (rows_bytes ? align8(rows_bytes + 4u) : 0u);
    g->c0 = (int16_t *)s;
    g->c1 = (int16_t *)(s + 8u * K4);
    g->patch = (int8_t *)(s + 16u * K4);
}

/* ------------------------------------------------------------------ depthwise */
/* y[n][oy][ox][c] = b[c] + sum over valid taps of x[n][iy][ix][c] * w[ky][kx][c];
 * bwd_data is the same loop with dy for x and the taps that reach (iy, ix) */
struct tap { int32_t xo, wo; };

static ALWAYS_INLINE void dw_pixel(const struct tap *t, int nt, const int8_t *x, const int8_t *w,
                                    const int32_t *b, int8_t *y, int C, const struct rq *q,
                                    const int F)
{
    const struct rq lq = *q;
    int c = 0;
    for (; c + 4 <= C; c += 4) {
        int32_t a0 = b ? b[c] : 0, a1 = b ? b[c + 1] : 0, a2 = b ? b[c + 2] : 0,
                a3 = b ? b[c + 3] : 0;
        for (int i = 0; i < nt; i++) {
            const int32_t xv = ld32(x + t[i].xo + c), wv = ld32(w + t[i].wo + c);
            const int32_t xa = __sxtb16(xv), xb = sxtb16_ror8(xv);
            const int32_t wa = __sxtb16(wv), wb = sxtb16_ror8(wv);
            a0 = __smlabb(xa, wa, a0);
            a2 = __smlatt(xa, wa, a2);
            a1 = __smlabb(xb, wb, a1);
            a3 = __smlatt(xb, wb, a3);
        }
        y[c] = rq_apply(a0, &lq, F); y[c + 1] = rq_apply(a1, &lq, F);
        y[c + 2] = rq_apply(a2, &lq, F); y[c + 3] = rq_apply(a3, &lq, F);
    }
    for (; c < C; c++) {
        int32_t a = b ? b[c] : 0;
        for (int i = 0; i < nt; i++) a += (int32_t)x[t[i].xo + c] * (int32_t)w[t[i].wo + c];
        y[c] = rq_apply(a, &lq, F);
    }
}

/* Interior pixels: every tap is inside the image, so the taps come in pairs (t, t + 1) with
 * fixed offsets. Per 4 channels and tap pair, the x words of both taps are widened and packed
 * per channel into (x_t, x_t+1) with PKHBT / PKHTB, and one SMLAD per channel multiplies
 * them with the pre-packed weight pair. The table holds, per 4-channel block and tap pair,
 * 6 words: the two x offsets, then (w_t, w_t+1) for each of the 4 channels (one pointer walks
 * it: few live registers). An odd tap count pads the last pair with a zero weight. */
#define DW_ENTRY 6
static ALWAYS_INLINE void dw_pixel_packed(const int32_t *tab, int npairs, const int8_t *x,
                                           const int32_t *b, int8_t *y, int C, const int8_t *w,
                                           const int32_t *xo, int KHW, const struct rq *q,
                                           const int F)
{
    const struct rq lq = *q;
    int c = 0;
    for (; c + 4 <= C; c += 4) {
        int32_t a0 = b ? b[c] : 0, a1 = b ? b[c + 1] : 0, a2 = b ? b[c + 2] : 0,
                a3 = b ? b[c + 3] : 0;
        const int8_t *xc = x + c;
        const int32_t *p = tab + (c >> 2) * npairs * DW_ENTRY, *pe = p + npairs * DW_ENTRY;
        /* per entry: u, v = x words of the two taps; (ua, va) their channels 0 and 2, then
         * 1 and 3; t = (x_t, x_t+1) of one channel; w = that channel's weight pair. Written in
         * assembly because GCC 12 spills the weights of this 13-register loop (npairs >= 1). */
        int32_t u, v, ua, va, t, w;
        __asm volatile (
            "1: ldrd   %[u], %[v], [%[p]]\n"
            "   ldr    %[u], [%[xc], %[u]]\n"
            "   ldr    %[v], [%[xc], %[v]]\n"
            "   sxtb16 %[ua], %[u]\n"
            "   sxtb16 %[va], %[v]\n"
            "   pkhbt  %[t], %[ua], %[va], lsl #16\n"
            "   ldr    %[w], [%[p], #8]\n"
            "   smlad  %[a0], %[t], %[w], %[a0]\n"
            "   pkhtb  %[t], %[va], %[ua], asr #16\n"
            "   ldr    %[w], [%[p], #16]\n"
            "   smlad  %[a2], %[t], %[w], %[a2]\n"
            "   sxtb16 %[ua], %[u], ror #8\n"
            "   sxtb16 %[va], %[v], ror #8\n"
            "   pkhbt  %[t], %[ua], %[va], lsl #16\n"
            "   ldr    %[w], [%[p], #12]\n"
            "   smlad  %[a1], %[t], %[w], %[a1]\n"
            "   pkhtb  %[t], %[va], %[ua], asr #16\n"
            "   ldr    %[w], [%[p], #20]\n"
            "   smlad  %[a3], %[t], %[w], %[a3]\n"
            "   adds   %[p], %[p], #24\n"
            "   cmp    %[p], %[pe]\n"
            "   blo    1b\n"
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [p] "+r"(p),
              [u] "=&r"(u), [v] "=&r"(v), [ua] "=&r"(ua), [va] "=&r"(va), [t] "=&r"(t),
              [w] "=&r"(w)
            : [pe] "r"(pe), [xc] "r"(xc)
            : "cc", "memory");
        y[c] = rq_apply(a0, &lq, F); y[c + 1] = rq_apply(a1, &lq, F);
        y[c + 2] = rq_apply(a2, &lq, F); y[c + 3] = rq_apply(a3, &lq, F);
    }
    for (; c < C; c++) {
        int32_t a = b ? b[c] : 0;
        for (int t = 0; t < KHW; t++) a += (int32_t)x[xo[t] + c] * (int32_t)w[t * C + c];
        y[c] = rq_apply(a, &lq, F);
    }
}

static ALWAYS_INLINE void dw_fwd_body(const struct kparams *k, const int8_t *x, const int8_t *w,
                                       const int32_t *b, int8_t *y, uint8_t *scratch, const int F)
{
    DIMS
    struct rq q;
    struct tap t[64];
    int32_t xo[66];
    rq_init(&q, k);
    const int KHW = KH * KW, npairs = (KHW + 1) >> 1, C4 = C >> 2;
    for (int ky = 0; ky < KH; ky++)        /* tap offsets of an interior pixel */
        for (int kx = 0; kx < KW; kx++) xo[ky * KW + kx] = (ky * W + kx) * C;
    xo[KHW] = xo[KHW - 1];
    int32_t *tab = (int32_t *)scratch;     /* whole 4-channel blocks, see dw_pixel_packed */
    for (int cb = 0; cb < C4; cb++)
        for (int j = 0; j < npairs; j++) {
            int32_t *e = tab + (cb * npairs + j) * DW_ENTRY;
            const int t0 = 2 * j, t1 = 2 * j + 1;
            e[0] = xo[t0];
            e[1] = xo[t1];
            for (int ch = 0; ch < 4; ch++) {
                const int c = cb * 4 + ch;
                const int32_t lo = (uint16_t)(int16_t)w[t0 * C + c];
                const int32_t hi = t1 < KHW ? (int32_t)w[t1 * C + c] : 0;
                e[2 + ch] = (int32_t)((uint32_t)lo | ((uint32_t)hi << 16));
            }
        }
    for (int n = 0; n < N; n++)
        for (int oy = 0; oy < OH; oy++) {
            const int iy0 = oy * SH - PH, yin = iy0 >= 0 && iy0 + KH <= H;
            for (int ox = 0; ox < OW; ox++) {
                const int ix0 = ox * SW - PW;
                int8_t *yp = y + ((n * OH + oy) * OW + ox) * C;
                if (yin && ix0 >= 0 && ix0 + KW <= W) {
                    dw_pixel_packed(tab, npairs, x + ((n * H + iy0) * W + ix0) * C, b, yp, C,
                                    w, xo, KHW, &q, F);
                    continue;
                }
                int nt = 0;
                for (int ky = 0; ky < KH; ky++) {
                    const int iy = iy0 + ky;
                    if (iy < 0 || iy >= H) continue;
                    for (int kx = 0; kx < KW; kx++) {
                        const int ix = ix0 + kx;
                        if (ix < 0 || ix >= W) continue;
                        t[nt].xo = ((n * H + iy) * W + ix) * C;
                        t[nt].wo = (ky * KW + kx) * C;
                        nt++;
                    }
                }
                dw_pixel(t, nt, x, w, b, yp, C, &q, F);
            }
        }
}

static ALWAYS_INLINE void dw_bwd_data_body(const struct kparams *k, const int8_t *dy,
                                            const int8_t *w, int8_t *dx, const int F)
{
    DIMS
    struct rq q;
    struct tap t[64];
    rq_init(&q, k);
    for (int n = 0; n < N; n++)
        for (int iy = 0; iy < H; iy++)
            for (int ix = 0; ix < W; ix++) {
                int nt = 0;
                for (int ky = 0; ky < KH; ky++) {
                    const int ty = iy + PH - ky, oy = ty / SH;
                    if (ty < 0 || ty % SH || oy >= OH) continue;
                    for (int kx = 0; kx < KW; kx++) {
                        const int tx = ix + PW - kx, ox = tx / SW;
                        if (tx < 0 || tx % SW || ox >= OW) continue;
                        t[nt].xo = ((n * OH + oy) * OW + ox) * C;
                        t[nt].wo = (ky * KW + kx) * C;
                        nt++;
                    }
                }
                dw_pixel(t, nt, dy, w, 0, dx + ((n * H + iy) * W + ix) * C, C, &q, F);
            }
}

static ALWAYS_INLINE void dw_bwd_weight_body(const struct kparams *k, const int8_t *x,
                                              const int8_t *dy, int8_t *dw, int32_t *db,
                                              const int F)
{
    DIMS
    struct rq q;
    rq_init(&q, k);
    for (int ky = 0; ky < KH; ky++)
        for (int kx = 0; kx < KW; kx++) {
            /* output rows / columns whose input (iy, ix) is inside the image for this tap */
            int oy0 = 0, oy1 = OH, ox0 = 0, ox1 = OW;
            while (oy0 < OH && oy0 * SH - PH + ky < 0) oy0++;
            while (oy1 > oy0 && (oy1 - 1) * SH - PH + ky >= H) oy1--;
            while (ox0 < OW && ox0 * SW - PW + kx < 0) ox0++;
            while (ox1 > ox0 && (ox1 - 1) * SW - PW + kx >= W) ox1--;
            int8_t *d = dw + (ky * KW + kx) * C;
            int c = 0;
            for (; c + 4 <= C; c += 4) {
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                for (int n = 0; n < N; n++)
                    for (int oy = oy0; oy < oy1; oy++) {
                        const int8_t *xp = x + ((n * H + oy * SH - PH + ky) * W + ox0 * SW - PW + kx) * C + c;
                        const int8_t *gp = dy + ((n * OH + oy) * OW + ox0) * C + c;
                        for (int ox = ox0; ox < ox1; ox++, xp += SW * C, gp += C) {
                            const int32_t xv = ld32(xp), gv = ld32(gp);
                            const int32_t xa = __sxtb16(xv), xb = sxtb16_ror8(xv);
                            const int32_t ga = __sxtb16(gv), gb = sxtb16_ror8(gv);
                            a0 = __smlabb(xa, ga, a0);
                            a2 = __smlatt(xa, ga, a2);
                            a1 = __smlabb(xb, gb, a1);
                            a3 = __smlatt(xb, gb, a3);
                        }
                    }
                d[c] = rq_apply(a0, &q, F); d[c + 1] = rq_apply(a1, &q, F);
                d[c + 2] = rq_apply(a2, &q, F); d[c + 3] = rq_apply(a3, &q, F);
            }
            for (; c < C; c++) {
                int32_t a = 0;
                for (int n = 0; n < N; n++)
                    for (int oy = oy0; oy < oy1; oy++)
                        for (int ox = ox0; ox < ox1; ox++)
                            a += (int32_t)x[((n * H + oy * SH - PH + ky) * W + ox * SW - PW + kx) * C + c]
                                 * (int32_t)dy[((n * OH + oy) * OW + ox) * C + c];
                d[c] = rq_apply(a, &q, F);
            }
        }
    if (db) {
        for (int c = 0; c < C; c++) db[c] = 0;
        for (int i = 0; i < N * OH * OW; i++)
            for (int c = 0; c < C; c++) db[c] += dy[i * C + c];
    }
}

static NOINLINE void dw_fwd(const struct kparams *k, const int8_t *x, const int8_t *w,
                            const int32_t *b, int8_t *y, uint8_t *scratch)
{
    if (rq_fast(k)) dw_fwd_body(k, x, w, b, y, scratch, 1);
    else dw_fwd_body(k, x, w, b, y, scratch, 0);
}

static NOINLINE void dw_bwd_data(const struct kparams *k, const int8_t *dy, const int8_t *w,
                                 int8_t *dx)
{
    if (rq_fast(k)) dw_bwd_data_body(k, dy, w, dx, 1);
    else dw_bwd_data_body(k, dy, w, dx, 0);
}

static NOINLINE void dw_bwd_weight(const struct kparams *k, const int8_t *x, const int8_t *dy,
                                   int8_t *dw, int32_t *db)
{
    if (rq_fast(k)) dw_bwd_weight_body(k, x, dy, dw, db, 1);
    else dw_bwd_weight_body(k, x, dy, dw, db, 0);
}

/* ------------------------------------------------------------------ entry points */
void conv_fwd_s8_simd(const struct kparams *k, const int8_t *x, const int8_t *w,
                      const int32_t *b, int8_t *y, uint8_t *scratch)
{
    if (is_dw(k)) { dw_fwd(k, x, w, b, y, scratch); return; }
    DIMS
    struct cctx cc = {k, x};
    struct gemm g = {w, OC, KH * KW * C, KH * KW * C, N * OH * OW, col_conv_fwd, &cc, b,
                     y, 1, OC, 0, 0, 0};
    gemm_scratch_init(&g, scratch, 0);
    gemm_run(&g, k);
}

void conv_bwd_data_s8_simd(const struct kparams *k, const int8_t *dy, const int8_t *w,
                           int8_t *dx, uint8_t *scratch)
{
    if (is_dw(k)) { dw_bwd_data(k, dy, w, dx); return; }
    DIMS
    const int KHW = KH * KW, K = KHW * OC;
    int8_t *wt = (int8_t *)scratch;          /* wt[c][tap][oc] = w[oc][tap][c] */
    for (int oc = 0; oc < OC; oc++)
        for (int t = 0; t < KHW; t++) {
            const int8_t *s = w + (oc * KHW + t) * C;
            for (int c = 0; c < C; c++) wt[c * K + t * OC + oc] = s[c];
        }
    struct cctx cc = {k, dy};
    struct gemm g = {wt, C, K, K, N * H * W, col_conv_bwd_data, &cc, 0, dx, 1, C, 0, 0, 0};
    gemm_scratch_init(&g, scratch, (uint32_t)C * K);
    gemm_run(&g, k);
}

void conv_bwd_weight_s8_simd(const struct kparams *k, const int8_t *x, const int8_t *dy,
                             int8_t *dw, int32_t *db, uint8_t *scratch)
{
    if (is_dw(k)) { dw_bwd_weight(k, x, dy, dw, db); return; }
    DIMS
    const int P = N * OH * OW, KK = KH * KW * C;
    int8_t *dyt = (int8_t *)scratch;         /* dyt[oc][p] = dy[p][oc] */
    for (int i = 0; i < P; i++)
        for (int oc = 0; oc < OC; oc++) dyt[oc * P + i] = dy[i * OC + oc];
    struct cctx cc = {k, x};
    struct gemm g = {dyt, OC, P, P, KK, col_conv_bwd_weight, &cc, 0, dw, KK, 1, 0, 0, 0};
    gemm_scratch_init(&g, scratch, (uint32_t)OC * P);
    gemm_run(&g, k);
    if (db)
        for (int oc = 0; oc < OC; oc++) {
            int32_t a = 0;
            const int8_t *r = dyt + oc * P;
            for (int i = 0; i < P; i++) a += r[i];
            db[oc] = a;
        }
}

void linear_fwd_s8_simd(const struct kparams *k, const int8_t *x, const int8_t *w,
                        const int32_t *b, int8_t *y, uint8_t *scratch)
{
    const int N = k->p[0], IN = k->p[1], OUT = k->p[2];
    struct lctx lc = {x, IN, N};
    struct gemm g = {w, OUT, IN, IN, N, col_row, &lc, b, y, 1, OUT, 0, 0, 0};
    gemm_scratch_init(&g, scratch, 0);
    gemm_run(&g, k);
}

void linear_bwd_data_s8_simd(const struct kparams *k, const int8_t *dy, const int8_t *w,
                             int8_t *dx, uint8_t *scratch)
{
    const int N = k->p[0], IN = k->p[1], OUT = k->p[2];
    int8_t *wt = (int8_t *)scratch;          /* wt[i][o] = w[o][i] */
    for (int o = 0; o < OUT; o++)
        for (int i = 0; i < IN; i++) wt[i * OUT + o] = w[o * IN + i];
    struct lctx lc = {dy, OUT, N};
    struct gemm g = {wt, IN, OUT, OUT, N, col_row, &lc, 0, dx, 1, IN, 0, 0, 0};
    gemm_scratch_init(&g, scratch, (uint32_t)IN * OUT);
    gemm_run(&g, k);
}

/* dw[o][i] = requant(dy[o] * x[i]), 4 outputs per x word */
static ALWAYS_INLINE void outer_s8(const struct kparams *k, const int8_t *x, const int8_t *dy,
                              int8_t *dw, int32_t *db, const int F)
{
    const int IN = k->p[1], OUT = k->p[2];
    struct rq q;
    rq_init(&q, k);
    for (int o = 0; o < OUT; o++) {
        const int32_t d = dy[o];
        int8_t *r = dw + o * IN;
        int i = 0;
        if (F) {   /* |2 d x| <= 2^15: the doubling goes into the multiplier */
            const int32_t d2 = 2 * d;
            for (; i + 4 <= IN; i += 4) {
                const int32_t xv = ld32(x + i);
                const int32_t xa = __sxtb16(xv), xb = sxtb16_ror8(xv);
                r[i] = rq_doubled(__smlabb(xa, d2, 0), &q);
                r[i + 1] = rq_doubled(__smlabb(xb, d2, 0), &q);
                r[i + 2] = rq_doubled(__smlatb(xa, d2, 0), &q);
                r[i + 3] = rq_doubled(__smlatb(xb, d2, 0), &q);
            }
        }
        for (; i + 4 <= IN; i += 4) {
            const int32_t xv = ld32(x + i);
            const int32_t xa = __sxtb16(xv), xb = sxtb16_ror8(xv);
            r[i] = rq_apply(__smlabb(xa, d, 0), &q, F);
            r[i + 1] = rq_apply(__smlabb(xb, d, 0), &q, F);
            r[i + 2] = rq_apply(__smlatb(xa, d, 0), &q, F);
            r[i + 3] = rq_apply(__smlatb(xb, d, 0), &q, F);
        }
        for (; i < IN; i++) r[i] = rq_apply((int32_t)x[i] * d, &q, F);
        if (db) db[o] = d;
    }
}

void linear_bwd_weight_s8_simd(const struct kparams *k, const int8_t *x, const int8_t *dy,
                               int8_t *dw, int32_t *db, uint8_t *scratch)
{
    const int N = k->p[0], IN = k->p[1], OUT = k->p[2];
    if (N == 1) {   /* batch 1: an outer product, one MAC per output */
        if (rq_fast(k)) outer_s8(k, x, dy, dw, db, 1); else outer_s8(k, x, dy, dw, db, 0);
        return;
    }
    int8_t *dyt = (int8_t *)scratch;         /* dyt[o][n] = dy[n][o] */
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) dyt[o * N + n] = dy[n * OUT + o];
    struct lctx lc = {x, IN, N};
    struct gemm g = {dyt, OUT, N, N, IN, col_column, &lc, 0, dw, IN, 1, 0, 0, 0};
    gemm_scratch_init(&g, scratch, (uint32_t)OUT * N);
    gemm_run(&g, k);
    if (db)
        for (int o = 0; o < OUT; o++) {
            int32_t a = 0;
            for (int n = 0; n < N; n++) a += dyt[o * N + n];
            db[o] = a;
        }
}

#else
int32_t simd_plan(int kid, const struct kparams *k) { (void)kid; (void)k; return -1; }
#endif
