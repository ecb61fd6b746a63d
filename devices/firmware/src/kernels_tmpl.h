/* Kernel bodies shared by float32 and int8; included by kernels.c with
 * T (element), ACC (accumulator), BT (bias), SUF (name suffix), STORE(acc) (acc -> T),
 * SATADD(a, b), LOWEST (max-pool identity) defined, and the layout:
 * XI(n, c, y, x, C, H, W) the index of an activation element (NCHW or NHWC) and
 * WI(oc, icg, ky, kx) the index of a convolution weight (uses OC, cpg, KH, KW, DW). */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

#define CONV_DIMS \
    const int N = k->p[0], C = k->p[1], H = k->p[2], W = k->p[3], OC = k->p[4]; \
    const int KH = k->p[5], KW = k->p[6], SH = k->p[7], SW = k->p[8], PH = k->p[9], PW = k->p[10]; \
    const int G = k->p[11], cpg = C / G, opg = OC / G; \
    const int OH = (H + 2 * PH - KH) / SH + 1, OW = (W + 2 * PW - KW) / SW + 1; \
    const int DW = G > 1 && G == C && OC == C; \
    (void)N; (void)cpg; (void)opg; (void)DW;

NOINLINE void FN(conv_fwd)(const struct kparams *k, const T *x, const T *w, const BT *b, T *y)
{
    CONV_DIMS
    /* element strides along the input channels of x and of the weights */
    const int xcs = XI(0, 1, 0, 0, C, H, W), wcs = WI(0, 1, 0, 0) - WI(0, 0, 0, 0);
    for (int n = 0; n < N; n++)
        for (int oc = 0; oc < OC; oc++) {
            const int g = oc / opg;
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    ACC acc = b ? (ACC)b[oc] : 0;
                    for (int ky = 0; ky < KH; ky++) {
                        const int iy = oy * SH - PH + ky;
                        if (iy < 0 || iy >= H) continue;
                        for (int kx = 0; kx < KW; kx++) {
                            const int ix = ox * SW - PW + kx;
                            if (ix < 0 || ix >= W) continue;
                            const T *xp = x + XI(n, g * cpg, iy, ix, C, H, W);
                            const T *wp = w + WI(oc, 0, ky, kx);
                            if (cpg == 1) { acc += (ACC)*xp * (ACC)*wp; continue; }
                            for (int ic = 0; ic < cpg; ic++)
                                acc += (ACC)xp[ic * xcs] * (ACC)wp[ic * wcs];
                        }
                    }
                    y[XI(n, oc, oy, ox, OC, OH, OW)] = STORE(acc);
                }
        }
}

NOINLINE void FN(conv_bwd_data)(const struct kparams *k, const T *dy, const T *w, T *dx)
{
    CONV_DIMS
    /* element strides along the output channels of dy and of the weights */
    const int dys = XI(0, 1, 0, 0, OC, OH, OW), wos = WI(1, 0, 0, 0) - WI(0, 0, 0, 0);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const int g = c / cpg, icg = c - g * cpg;
            for (int iy = 0; iy < H; iy++)
                for (int ix = 0; ix < W; ix++) {
                    ACC acc = 0;
                    for (int ky = 0; ky < KH; ky++) {
                        const int ty = iy + PH - ky;
                        if (ty < 0 || ty % SH) continue;
                        const int oy = ty / SH;
                        if (oy >= OH) continue;
                        for (int kx = 0; kx < KW; kx++) {
                            const int tx = ix + PW - kx;
                            if (tx < 0 || tx % SW) continue;
                            const int ox = tx / SW;
                            if (ox >= OW) continue;
                            const T *dp = dy + XI(n, g * opg, oy, ox, OC, OH, OW);
                            const T *wp = w + WI(g * opg, icg, ky, kx);
                            if (opg == 1) { acc += (ACC)*dp * (ACC)*wp; continue; }
                            for (int j = 0; j < opg; j++) acc += (ACC)dp[j * dys] * (ACC)wp[j * wos];
                        }
                    }
                    dx[XI(n, c, iy, ix, C, H, W)] = STORE(acc);
                }
        }
}

NOINLINE void FN(conv_bwd_weight)(const struct kparams *k, const T *x, const T *dy, T *dw, BT *db)
{
    CONV_DIMS
    /* element strides from one output column to the next, in dy and in x */
    const int dxs = XI(0, 0, 0, 1, OC, OH, OW), xxs = SW * XI(0, 0, 0, 1, C, H, W);
    for (int oc = 0; oc < OC; oc++) {
        const int g = oc / opg;
        for (int icg = 0; icg < cpg; icg++) {
            const int c = g * cpg + icg;
            for (int ky = 0; ky < KH; ky++)
                for (int kx = 0; kx < KW; kx++) {
                    ACC acc = 0;
                    /* the output columns whose input column is inside the image */
                    int ox0 = 0, ox1 = OW;
                    while (ox0 < OW && ox0 * SW - PW + kx < 0) ox0++;
                    while (ox1 > ox0 && (ox1 - 1) * SW - PW + kx >= W) ox1--;
                    for (int n = 0; n < N; n++) {
                        for (int oy = 0; oy < OH; oy++) {
                            const int iy = oy * SH - PH + ky;
                            if (iy < 0 || iy >= H || ox0 >= ox1) continue;
                            const T *dp = dy + XI(n, oc, oy, ox0, OC, OH, OW);
                            const T *xp = x + XI(n, c, iy, ox0 * SW - PW + kx, C, H, W);
                            for (int ox = ox0; ox < ox1; ox++, dp += dxs, xp += xxs)
                                acc += (ACC)*dp * (ACC)*xp;
                        }
                    }
                    dw[WI(oc, icg, ky, kx)] = STORE(acc);
                }
        }
    }
    if (db)
        for (int oc = 0; oc < OC; oc++) {
            ACC acc = 0;
            for (int n = 0; n < N; n++)
                for (int oy = 0; oy < OH; oy++)
                    for (int ox = 0; ox < OW; ox++) acc += (ACC)dy[XI(n, oc, oy, ox, OC, OH, OW)];
            db[oc] = (BT)acc;
        }
}

NOINLINE void FN(linear_fwd)(const struct kparams *k, const T *x, const T *w, const BT *b, T *y)
{
    const int N = k->p[0], IN = k->p[1], OUT = k->p[2];
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            ACC acc = b ? (ACC)b[o] : 0;
            const T *xr = x + n * IN, *wr = w + o * IN;
            for (int i = 0; i < IN; i++) acc += (ACC)xr[i] * (ACC)wr[i];
            y[n * OUT + o] = STORE(acc);
        }
}

NOINLINE void FN(linear_bwd_data)(const struct kparams *k, const T *dy, const T *w, T *dx)
{
    const int N = k->p[0], IN = k->p[1], OUT = k->p[2];
    for (int n = 0; n < N; n++)
        for (int i = 0; i < IN; i++) {
            ACC acc = 0;
            for (int o = 0; o < OUT; o++) acc += (ACC)dy[n * OUT + o] * (ACC)w[o * IN + i];
            dx[n * IN + i] = STORE(acc);
        }
}

NOINLINE void FN(linear_bwd_weight)(const struct kparams *k, const T *x, const T *dy, T *dw, BT *db)
{
    const int N = k->p[0], IN = k->p[1], OUT = k->p[2];
    for (int o = 0; o < OUT; o++) {
        for (int i = 0; i < IN; i++) {
            ACC acc = 0;
            for (int n = 0; n < N; n++) acc += (ACC)dy[n * OUT + o] * (ACC)x[n * IN + i];
            dw[o * IN + i] = STORE(acc);
        }
        if (db) {
            ACC acc = 0;
            for (int n = 0; n < N; n++) acc += (ACC)dy[n * OUT + o];
            db[o] = (BT)acc;
        }
    }
}

NOINLINE void FN(relu_fwd)(const struct kparams *k, const T *x, T *y)
{
    for (int i = 0; i < k->p[0]; i++) y[i] = x[i] > 0 ? x[i] : 0;
}

NOINLINE void FN(relu_bwd)(const struct kparams *k, const T *y, const T *dy, T *dx)
{
    for (int i = 0; i < k->p[0]; i++) dx[i] = y[i] > 0 ? dy[i] : 0;
}

NOINLINE void FN(relu6_fwd)(const struct kparams *k, const T *x, T *y)
{
    const T six = SIX(k);
    for (int i = 0; i < k->p[0]; i++) y[i] = x[i] < 0 ? 0 : (x[i] > six ? six : x[i]);
}

NOINLINE void FN(relu6_bwd)(const struct kparams *k, const T *y, const T *dy, T *dx)
{
    const T six = SIX(k);
    for (int i = 0; i < k->p[0]; i++) dx[i] = (y[i] > 0 && y[i] < six) ? dy[i] : 0;
}

#define POOL_DIMS \
    const int N = k->p[0], C = k->p[1], H = k->p[2], W = k->p[3]; \
    const int KH = k->p[4], KW = k->p[5], SH = k->p[6], SW = k->p[7], PH = k->p[8], PW = k->p[9]; \
    const int OH = (H + 2 * PH - KH) / SH + 1, OW = (W + 2 * PW - KW) / SW + 1;

NOINLINE void FN(maxpool_fwd)(const struct kparams *k, const T *x, T *y)
{
    POOL_DIMS
    for (int nc = 0; nc < N * C; nc++) {
        const int n = nc / C, c = nc % C;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                T m = LOWEST;
                for (int ky = 0; ky < KH; ky++) {
                    const int iy = oy * SH - PH + ky;
                    if (iy < 0 || iy >= H) continue;
                    for (int kx = 0; kx < KW; kx++) {
                        const int ix = ox * SW - PW + kx;
                        if (ix < 0 || ix >= W) continue;
                        if (x[XI(n, c, iy, ix, C, H, W)] > m) m = x[XI(n, c, iy, ix, C, H, W)];
                    }
                }
                y[XI(n, c, oy, ox, C, OH, OW)] = m;
            }
    }
}

NOINLINE void FN(maxpool_bwd)(const struct kparams *k, const T *x, const T *dy, T *dx)
{
    POOL_DIMS
    for (int i = 0; i < N * C * H * W; i++) dx[i] = 0;
    for (int nc = 0; nc < N * C; nc++) {
        const int n = nc / C, c = nc % C;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                int best = -1;
                for (int ky = 0; ky < KH; ky++) {
                    const int iy = oy * SH - PH + ky;
                    if (iy < 0 || iy >= H) continue;
                    for (int kx = 0; kx < KW; kx++) {
                        const int ix = ox * SW - PW + kx;
                        if (ix < 0 || ix >= W) continue;
                        const int at = XI(n, c, iy, ix, C, H, W);
                        if (best < 0 || x[at] > x[best]) best = at;
                    }
                }
                if (best >= 0) {
                    T *d = &dx[best];
                    *d = SATADD(*d, dy[XI(n, c, oy, ox, C, OH, OW)]);
                }
            }
    }
}

NOINLINE void FN(avgpool_fwd)(const struct kparams *k, const T *x, T *y)
{
    POOL_DIMS
    const int count = KH * KW;
    for (int nc = 0; nc < N * C; nc++) {
        const int n = nc / C, c = nc % C;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                ACC acc = 0;
                for (int ky = 0; ky < KH; ky++) {
                    const int iy = oy * SH - PH + ky;
                    if (iy < 0 || iy >= H) continue;
                    for (int kx = 0; kx < KW; kx++) {
                        const int ix = ox * SW - PW + kx;
                        if (ix < 0 || ix >= W) continue;
                        acc += (ACC)x[XI(n, c, iy, ix, C, H, W)];
                    }
                }
                y[XI(n, c, oy, ox, C, OH, OW)] = AVG(acc, count);
            }
    }
}

NOINLINE void FN(avgpool_bwd)(const struct kparams *k, const T *dy, T *dx)
{
    POOL_DIMS
    const int count = KH * KW;
    for (int nc = 0; nc < N * C; nc++) {
        const int n = nc / C, c = nc % C;
        for (int iy = 0; iy < H; iy++)
            for (int ix = 0; ix < W; ix++) {
                ACC acc = 0;
                for (int ky = 0; ky < KH; ky++) {
                    const int ty = iy + PH - ky;
                    if (ty < 0 || ty % SH) continue;
                    const int oy = ty / SH;
                    if (oy >= OH) continue;
                    for (int kx = 0; kx < KW; kx++) {
                        const int tx = ix + PW - kx;
                        if (tx < 0 || tx % SW) continue;
                        const int ox = tx / SW;
                        if (ox >= OW) continue;
                        acc += (ACC)dy[XI(n, c, oy, ox, C, OH, OW)];
                    }
                }
                dx[XI(n, c, iy, ix, C, H, W)] = AVG(acc, count);
            }
    }
}

NOINLINE void FN(add)(const struct kparams *k, const T *a, const T *b, T *y)
{
    for (int i = 0; i < k->p[0]; i++) y[i] = SATADD(a[i], b[i]);
}

#undef CONV_DIMS
#undef POOL_DIMS
#undef FN
#undef CAT
#undef CAT_
