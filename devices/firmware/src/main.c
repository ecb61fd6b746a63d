/* costdb firmware agent: EnergyRunner-style text commands ("name%") and binary frames.
 *
 * Frame (both directions): A5 5A | ver u8 | type u8 | seq u8 | len u16 LE | payload | crc32 LE
 * crc32 (IEEE, as zlib) covers ver..payload. Every reply ends with the line "m-ready\r\n".
 * Requests: HELLO 0x01, RUN 0x02, CALIB 0x03, PING 0x04. Replies: HELLO 0x81, RESULT 0x82,
 * CALIB 0x83, PONG 0x84, OUTPUT 0x90 (u32 offset + bytes), NAK 0xEE (u8 code + text).
 * docs/firmware.md is the full description. */
#include <stdint.h>
#include <string.h>
#include "board.h"
#include "kernels.h"

#ifndef PROTOCOL_VERSION
#define PROTOCOL_VERSION 2
#endif
#define FW_VERSION "0.3.0"   /* 0.2: interrupt-driven receive ring; 0.3: int8 NHWC, SIMD kernels,
                                per-channel int8 SGD, scratch in the arena (protocol 2) */
#define MAX_RX 256
#define OUT_CHUNK 192
#define MAX_REPLY 320       /* largest reply payload the host accepts (protocol.py MAX_REPLY) */

enum { T_HELLO = 1, T_RUN = 2, T_CALIB = 3, T_PING = 4,
       R_HELLO = 0x81, R_RESULT = 0x82, R_CALIB = 0x83, R_PONG = 0x84, R_OUTPUT = 0x90,
       R_NAK = 0xEE };
enum { NAK_CRC = 1, NAK_LENGTH = 2, NAK_VERSION = 3, NAK_TYPE = 4, NAK_BAD = 5 };
enum { ST_OK = 0, ST_UNSUPPORTED = 1, ST_DOES_NOT_FIT = 2, ST_ERROR = 3 };
enum { DT_F32 = 0, DT_S8 = 1 };

extern uint8_t _sarena[], _earena[];
extern uint32_t _sstack[], _estack[];
static uint32_t timer_overhead;

/* ------------------------------------------------------------------ output */
static void puts_raw(const char *s) { while (*s) uart_putc((uint8_t)*s++); }
static void ready(void) { puts_raw("m-ready\r\n"); }

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, uint32_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int i = 0; i < 8; i++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void send_frame2(uint8_t type, uint8_t seq, const void *a, uint32_t na, const void *b,
                        uint32_t nb)
{
    uint8_t hdr[7] = {0xA5, 0x5A, PROTOCOL_VERSION, type, seq,
                      (uint8_t)((na + nb) & 0xFF), (uint8_t)((na + nb) >> 8)};
    uint32_t crc = crc32_update(0, hdr + 2, 5);
    crc = crc32_update(crc, a, na);
    crc = crc32_update(crc, b, nb);
    for (int i = 0; i < 7; i++) uart_putc(hdr[i]);
    for (uint32_t i = 0; i < na; i++) uart_putc(((const uint8_t *)a)[i]);
    for (uint32_t i = 0; i < nb; i++) uart_putc(((const uint8_t *)b)[i]);
    for (int i = 0; i < 4; i++) uart_putc((uint8_t)(crc >> (8 * i)));
}

static void send_frame(uint8_t type, uint8_t seq, const void *p, uint32_t n)
{
    send_frame2(type, seq, p, n, 0, 0);
}

static void nak(uint8_t seq, uint8_t code, const char *msg)
{
    uint8_t buf[64];
    uint32_t n = (uint32_t)strlen(msg);
    if (n > 62) n = 62;
    buf[0] = code;
    buf[1] = PROTOCOL_VERSION;
    memcpy(buf + 2, msg, n);
    send_frame(R_NAK, seq, buf, n + 2);
}

static char *utoa_(uint32_t v, char *p)
{
    char tmp[11];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

static char *kv(char *p, const char *key, const char *s, uint32_t v, int numeric)
{
    while (*key) *p++ = *key++;
    *p++ = '=';
    if (numeric) p = utoa_(v, p); else while (*s) *p++ = *s++;
    *p++ = ';';
    return p;
}

/* ------------------------------------------------------------------ hello */
static void do_hello(uint8_t seq)
{
    char buf[MAX_REPLY], *p = buf;   /* worst case (every number 10 digits): 306 */
    p = kv(p, "proto", 0, PROTOCOL_VERSION, 1);
    p = kv(p, "fw", FW_VERSION, 0, 0);
    p = kv(p, "board", BOARD_NAME, 0, 0);
    p = kv(p, "cpu", BOARD_CPU, 0, 0);
    p = kv(p, "clock_hz", 0, BOARD_CLOCK_HZ, 1);
    p = kv(p, "ram_bytes", 0, BOARD_RAM_BYTES, 1);
    p = kv(p, "flash_bytes", 0, BOARD_FLASH_BYTES, 1);
    p = kv(p, "arena_bytes", 0, (uint32_t)(_earena - _sarena), 1);
    p = kv(p, "stack_bytes", 0, (uint32_t)((uint8_t *)_estack - (uint8_t *)_sstack), 1);
#ifdef TIMER_DWT
    p = kv(p, "timer", "dwt", 0, 0);
#else
    p = kv(p, "timer", "systick", 0, 0);
#endif
    p = kv(p, "timer_hz", 0, TIMER_HZ, 1);
    p = kv(p, "kernels", KERNEL_VARIANT, 0, 0);
    p = kv(p, "timer_overhead", 0, timer_overhead, 1);
    p = kv(p, "max_payload", 0, MAX_RX, 1);
    p = kv(p, "rx_buffer", 0, rx_ring_size(), 1);
    p = kv(p, "rx_overruns", 0, rx_ring_overruns(), 1);
    send_frame(R_HELLO, seq, buf, (uint32_t)(p - buf));
}

/* ------------------------------------------------------------------ calibration loop */
static NOINLINE uint32_t spin(uint32_t n)
{
    uint32_t t0 = timer_now();
#if defined(__ARM_ARCH_6M__)   /* GCC emits divided syntax for Thumb-1: "sub" sets flags */
    if (n) __asm volatile ("1: sub %0, #1\n bne 1b\n" : "+l"(n) : : "cc");
#else
    if (n) __asm volatile ("1: subs %0, %0, #1\n bne 1b\n" : "+l"(n) : : "cc");
#endif
    return timer_now() - t0;
}

/* ------------------------------------------------------------------ op runs */
struct run_req {            /* wire layout, little-endian, 80 bytes */
    uint8_t kernel, dtype, flags, reserved;
    uint16_t warmups, samples;
    uint32_t seed;
    int32_t p[12];
    float f[2];
    int32_t qmult, qshift;
};
#define FLAG_OUTPUT 1u
#define FLAG_BIAS 2u
#define MAX_SAMPLES 64
_Static_assert(sizeof(uint32_t) * 9 + 4 * MAX_SAMPLES <= MAX_REPLY, "RESULT exceeds MAX_REPLY");
_Static_assert(5 + OUT_CHUNK <= MAX_REPLY && MAX_RX <= MAX_REPLY, "frame exceeds MAX_REPLY");

enum { FILL_T, FILL_BIAS, FILL_LABEL, FILL_QMULT, FILL_NONE };
struct buf { uint64_t count; uint32_t esize; uint8_t fill; uint8_t *ptr; };

static uint32_t rng;
static uint32_t xorshift(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static void fill(struct buf *b, int dtype, int32_t classes, int32_t qshift)
{
    for (uint64_t i = 0; i < b->count; i++) {
        uint32_t r = xorshift();
        switch (b->fill) {
        case FILL_T:
            if (dtype == DT_S8) ((int8_t *)b->ptr)[i] = (int8_t)(r >> 24);
            else ((float *)b->ptr)[i] = (float)((int32_t)(r >> 8) - 8388608) * (1.0f / 8388608.0f);
            break;
        case FILL_BIAS:
            if (dtype == DT_S8) ((int32_t *)b->ptr)[i] = (int32_t)r >> 20;
            else ((float *)b->ptr)[i] = (float)((int32_t)(r >> 8) - 8388608) * (1.0f / 8388608.0f);
            break;
        case FILL_LABEL:
            ((int32_t *)b->ptr)[i] = (int32_t)(r % (uint32_t)classes);
            break;
        case FILL_QMULT:   /* per-channel (mult, shift): mult in [2^30, 2^31), shift - 0..3 */
            ((int32_t *)b->ptr)[i] = (i & 1) ? qshift - (int32_t)(r & 3u)
                                             : (int32_t)(0x40000000u | (r >> 2));
            break;
        }
    }
}

struct result {             /* wire layout of RESULT, followed by samples and a message */
    uint8_t status, nsamples, n_in, n_out;
    uint32_t needed_bytes, peak_bytes, stack_bytes, output_bytes, output_crc;
};

static uint8_t seq_cur;
static void result_msg(struct result *r, const char *msg)
{
    send_frame2(R_RESULT, seq_cur, r, sizeof *r, msg, (uint32_t)strlen(msg));
}

static int pos(int32_t v) { return v > 0 && v < 65536; }

/* Describe the kernel's buffers (inputs first, then outputs); returns 0 if unsupported. */
static int plan(const struct run_req *q, struct kparams *k, struct buf *b, int *n_in, int *n_out,
                const char **err)
{
    const int s8 = q->dtype == DT_S8;
    const uint32_t es = s8 ? 1 : 4;
    const int32_t *p = q->p;
    int ni = 0, no = 0;
#define IN(cnt, kind) do { b[ni].count = (cnt); b[ni].esize = (kind) == FILL_T ? es : 4; b[ni].fill = (kind); ni++; } while (0)
#define OUT(cnt, esz) do { b[ni + no].count = (cnt); b[ni + no].esize = (esz); b[ni + no].fill = FILL_NONE; no++; } while (0)
    memcpy(k->p, q->p, sizeof k->p);
    k->f[0] = q->f[0];
    k->f[1] = q->f[1];
    k->qmult = q->qmult;
    k->qshift = q->qshift;
    k->has_bias = (q->flags & FLAG_BIAS) != 0;
    *err = "bad shape";
    switch (q->kernel) {
    case K_CONV_FWD: case K_CONV_BWD_DATA: case K_CONV_BWD_WEIGHT: {
        for (int i = 0; i < 9; i++) if (!pos(p[i])) return -1;
        if (!(p[7] > 0 && p[8] > 0 && p[9] >= 0 && p[10] >= 0 && pos(p[11]))) return -1;
        if (p[1] % p[11] || p[4] % p[11]) return -1;
        int32_t oh = (p[2] + 2 * p[9] - p[5]) / p[7] + 1, ow = (p[3] + 2 * p[10] - p[6]) / p[8] + 1;
        if (p[2] + 2 * p[9] < p[5] || p[3] + 2 * p[10] < p[6]) return -1;
        uint64_t x = (uint64_t)p[0] * p[1] * p[2] * p[3], y = (uint64_t)p[0] * p[4] * oh * ow;
        uint64_t w = (uint64_t)p[4] * (p[1] / p[11]) * p[5] * p[6];
        if (q->kernel == K_CONV_FWD) {
            IN(x, FILL_T); IN(w, FILL_T); if (k->has_bias) IN(p[4], FILL_BIAS); OUT(y, es);
        } else if (q->kernel == K_CONV_BWD_DATA) {
            IN(y, FILL_T); IN(w, FILL_T); OUT(x, es);
        } else {
            IN(x, FILL_T); IN(y, FILL_T); OUT(w, es); if (k->has_bias) OUT(p[4], 4);
        }
        break;
    }
    case K_LINEAR_FWD: case K_LINEAR_BWD_DATA: case K_LINEAR_BWD_WEIGHT: {
        for (int i = 0; i < 3; i++) if (!pos(p[i])) return -1;
        uint64_t x = (uint64_t)p[0] * p[1], y = (uint64_t)p[0] * p[2], w = (uint64_t)p[1] * p[2];
        if (q->kernel == K_LINEAR_FWD) {
            IN(x, FILL_T); IN(w, FILL_T); if (k->has_bias) IN(p[2], FILL_BIAS); OUT(y, es);
        } else if (q->kernel == K_LINEAR_BWD_DATA) {
            IN(y, FILL_T); IN(w, FILL_T); OUT(x, es);
        } else {
            IN(x, FILL_T); IN(y, FILL_T); OUT(w, es); if (k->has_bias) OUT(p[2], 4);
        }
        break;
    }
    case K_RELU_FWD: case K_RELU6_FWD:
        if (p[0] <= 0) return -1;
        IN(p[0], FILL_T); OUT(p[0], es);
        break;
    case K_RELU_BWD: case K_RELU6_BWD: case K_ADD:
        if (p[0] <= 0) return -1;
        IN(p[0], FILL_T); IN(p[0], FILL_T); OUT(p[0], es);
        break;
    case K_MAXPOOL_FWD: case K_MAXPOOL_BWD: case K_AVGPOOL_FWD: case K_AVGPOOL_BWD: {
        for (int i = 0; i < 6; i++) if (!pos(p[i])) return -1;
        if (!(p[6] > 0 && p[7] > 0 && p[8] >= 0 && p[9] >= 0)) return -1;
        if (p[2] + 2 * p[8] < p[4] || p[3] + 2 * p[9] < p[5]) return -1;
        int32_t oh = (p[2] + 2 * p[8] - p[4]) / p[6] + 1, ow = (p[3] + 2 * p[9] - p[5]) / p[7] + 1;
        uint64_t x = (uint64_t)p[0] * p[1] * p[2] * p[3], y = (uint64_t)p[0] * p[1] * oh * ow;
        if (q->kernel == K_MAXPOOL_FWD || q->kernel == K_AVGPOOL_FWD) { IN(x, FILL_T); OUT(y, es); }
        else if (q->kernel == K_MAXPOOL_BWD) { IN(x, FILL_T); IN(y, FILL_T); OUT(x, es); }
        else { IN(y, FILL_T); OUT(x, es); }
        break;
    }
    case K_CE_FWD: case K_CE_BWD:
        if (!pos(p[0]) || !pos(p[1])) return -1;
        IN((uint64_t)p[0] * p[1], FILL_T); IN(p[0], FILL_LABEL);
        if (q->kernel == K_CE_FWD) OUT(s8 ? (uint64_t)p[0] : 1, 4); else OUT((uint64_t)p[0] * p[1], es);
        break;
    case K_SGD:
        if (p[0] <= 0) return -1;
        if (s8 && q->f[1] != 0.0f) { *err = "int8 sgd has no momentum"; return 0; }
        if (s8 && (p[1] < 0 || (p[1] > 1 && p[0] % p[1]))) return -1;
        IN(p[0], FILL_T); IN(p[0], FILL_T);
        if (s8) { b[ni].count = 2u * (uint64_t)(p[1] > 1 ? p[1] : 1); b[ni].esize = 4;
                  b[ni].fill = FILL_QMULT; ni++; }
        else if (q->f[1] != 0.0f) IN(p[0], FILL_T);
        break;                           /* updates p in place: p is the output */
    default:
        *err = "unknown kernel";
        return 0;
    }
    *n_in = ni;
    *n_out = no;
    return 1;
#undef IN
#undef OUT
}

static void call_kernel(int kid, int s8, const struct kparams *k, struct buf *b, int ni,
                        uint8_t *scratch)
{
#define P(i) ((void *)b[i].ptr)
    void *bias = k->has_bias ? P(2) : 0;
    void *dbias = k->has_bias ? P(3) : 0;
#if KERNELS_SIMD
    if (s8 && scratch) switch (kid) {   /* the SIMD kernels (simd_plan() said so) */
    case K_CONV_FWD: conv_fwd_s8_simd(k, P(0), P(1), bias, P(ni), scratch); return;
    case K_CONV_BWD_DATA: conv_bwd_data_s8_simd(k, P(0), P(1), P(2), scratch); return;
    case K_CONV_BWD_WEIGHT: conv_bwd_weight_s8_simd(k, P(0), P(1), P(2), dbias, scratch); return;
    case K_LINEAR_FWD: linear_fwd_s8_simd(k, P(0), P(1), bias, P(ni), scratch); return;
    case K_LINEAR_BWD_DATA: linear_bwd_data_s8_simd(k, P(0), P(1), P(2), scratch); return;
    case K_LINEAR_BWD_WEIGHT: linear_bwd_weight_s8_simd(k, P(0), P(1), P(2), dbias, scratch); return;
    }
#else
    (void)scratch;
#endif
    if (s8) switch (kid) {
    case K_CONV_FWD: conv_fwd_s8(k, P(0), P(1), bias, P(ni)); break;
    case K_CONV_BWD_DATA: conv_bwd_data_s8(k, P(0), P(1), P(2)); break;
    case K_CONV_BWD_WEIGHT: conv_bwd_weight_s8(k, P(0), P(1), P(2), dbias); break;
    case K_LINEAR_FWD: linear_fwd_s8(k, P(0), P(1), bias, P(ni)); break;
    case K_LINEAR_BWD_DATA: linear_bwd_data_s8(k, P(0), P(1), P(2)); break;
    case K_LINEAR_BWD_WEIGHT: linear_bwd_weight_s8(k, P(0), P(1), P(2), dbias); break;
    case K_RELU_FWD: relu_fwd_s8(k, P(0), P(1)); break;
    case K_RELU_BWD: relu_bwd_s8(k, P(0), P(1), P(2)); break;
    case K_RELU6_FWD: relu6_fwd_s8(k, P(0), P(1)); break;
    case K_RELU6_BWD: relu6_bwd_s8(k, P(0), P(1), P(2)); break;
    case K_MAXPOOL_FWD: maxpool_fwd_s8(k, P(0), P(1)); break;
    case K_MAXPOOL_BWD: maxpool_bwd_s8(k, P(0), P(1), P(2)); break;
    case K_AVGPOOL_FWD: avgpool_fwd_s8(k, P(0), P(1)); break;
    case K_AVGPOOL_BWD: avgpool_bwd_s8(k, P(0), P(1)); break;
    case K_ADD: add_s8(k, P(0), P(1), P(2)); break;
    case K_CE_FWD: ce_fwd_s8(k, P(0), P(1), P(2)); break;
    case K_CE_BWD: ce_bwd_s8(k, P(0), P(1), P(2)); break;
    case K_SGD: sgd_s8(k, P(0), P(1), P(2)); break;
    } else switch (kid) {
    case K_CONV_FWD: conv_fwd_f32(k, P(0), P(1), bias, P(ni)); break;
    case K_CONV_BWD_DATA: conv_bwd_data_f32(k, P(0), P(1), P(2)); break;
    case K_CONV_BWD_WEIGHT: conv_bwd_weight_f32(k, P(0), P(1), P(2), dbias); break;
    case K_LINEAR_FWD: linear_fwd_f32(k, P(0), P(1), bias, P(ni)); break;
    case K_LINEAR_BWD_DATA: linear_bwd_data_f32(k, P(0), P(1), P(2)); break;
    case K_LINEAR_BWD_WEIGHT: linear_bwd_weight_f32(k, P(0), P(1), P(2), dbias); break;
    case K_RELU_FWD: relu_fwd_f32(k, P(0), P(1)); break;
    case K_RELU_BWD: relu_bwd_f32(k, P(0), P(1), P(2)); break;
    case K_RELU6_FWD: relu6_fwd_f32(k, P(0), P(1)); break;
    case K_RELU6_BWD: relu6_bwd_f32(k, P(0), P(1), P(2)); break;
    case K_MAXPOOL_FWD: maxpool_fwd_f32(k, P(0), P(1)); break;
    case K_MAXPOOL_BWD: maxpool_bwd_f32(k, P(0), P(1), P(2)); break;
    case K_AVGPOOL_FWD: avgpool_fwd_f32(k, P(0), P(1)); break;
    case K_AVGPOOL_BWD: avgpool_bwd_f32(k, P(0), P(1)); break;
    case K_ADD: add_f32(k, P(0), P(1), P(2)); break;
    case K_CE_FWD: ce_fwd_f32(k, P(0), P(1), P(2)); break;
    case K_CE_BWD: ce_bwd_f32(k, P(0), P(1), P(2)); break;
    case K_SGD: sgd_f32(k, P(0), P(1), ni > 2 ? P(2) : 0); break;
    }
#undef P
}

static void do_run(uint8_t seq, const uint8_t *payload, uint32_t len)
{
    struct run_req q;
    struct result r;
    struct kparams k;
    struct buf b[6];
    uint32_t samples[MAX_SAMPLES];
    int ni = 0, no = 0;
    const char *err = "";
    memset(&r, 0, sizeof r);
    memset(&k, 0, sizeof k);
    seq_cur = seq;
    if (len < sizeof q) { r.status = ST_ERROR; result_msg(&r, "short run request"); return; }
    memcpy(&q, payload, sizeof q);
    if (q.dtype > DT_S8) { r.status = ST_UNSUPPORTED; result_msg(&r, "dtype not supported"); return; }
    int ok = plan(&q, &k, b, &ni, &no, &err);
    if (ok <= 0) { r.status = ok == 0 ? ST_UNSUPPORTED : ST_ERROR; result_msg(&r, err); return; }
    const int nb = ni + no;
    r.n_in = (uint8_t)ni;
    r.n_out = (uint8_t)no;
    uint64_t need = 0;
    for (int i = 0; i < nb; i++) need += (b[i].count * b[i].esize + 7u) & ~7ull;
    /* SIMD kernels: im2col columns / transposed operands, after the buffers */
    const int32_t simd = q.dtype == DT_S8 ? simd_plan(q.kernel, &k) : -1;
    const uint32_t scratch_bytes = simd >= 0 ? ((uint32_t)simd + 7u) & ~7u : 0u;
    need += scratch_bytes;
    const uint32_t arena = (uint32_t)(_earena - _sarena);
    r.needed_bytes = need > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)need;
    if (need > arena) { r.status = ST_DOES_NOT_FIT; result_msg(&r, "op does not fit the arena"); return; }
    uint8_t *top = _sarena;
    for (int i = 0; i < nb; i++) {
        b[i].ptr = top;
        top += (b[i].count * b[i].esize + 7u) & ~7ull;
    }
    /* the SIMD path gets a scratch pointer (never null, even for 0 bytes: depthwise) */
    uint8_t *scratch = simd >= 0 ? top : 0;
    top += scratch_bytes;
    rng = q.seed ? q.seed : 0x9E3779B9u;
    const int32_t classes = q.p[1];
    for (int i = 0; i < nb; i++) {
        if (b[i].fill == FILL_NONE) memset(b[i].ptr, 0, (size_t)(b[i].count * b[i].esize));
        else fill(&b[i], q.dtype, classes, q.qshift);
    }
    r.peak_bytes = (uint32_t)(top - _sarena);
    /* outputs: the buffers after the inputs; in-place SGD updates its first input */
    const int first_out = no ? ni : 0;
    const int last_out = no ? nb : 1;
    for (int i = first_out; i < last_out; i++) r.output_bytes += (uint32_t)(b[i].count * b[i].esize);

    /* paint the free stack below this frame, run once, check and send the result */
    uint32_t *sp;
    __asm volatile ("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = _sstack; p < sp - 8; p++) *p = 0xC5C5C5C5u;
    call_kernel(q.kernel, q.dtype == DT_S8, &k, b, ni, scratch);
    uint32_t crc = 0;
    for (int i = first_out; i < last_out; i++) {
        uint32_t n = (uint32_t)(b[i].count * b[i].esize);
        crc = crc32_update(crc, b[i].ptr, n);
        if (q.flags & FLAG_OUTPUT)
            for (uint32_t off = 0; off < n; off += OUT_CHUNK) {
                uint32_t m = n - off < OUT_CHUNK ? n - off : OUT_CHUNK;
                uint8_t hdr[5] = {(uint8_t)i, (uint8_t)off, (uint8_t)(off >> 8),
                                  (uint8_t)(off >> 16), (uint8_t)(off >> 24)};
                send_frame2(R_OUTPUT, seq, hdr, 5, b[i].ptr + off, m);
            }
    }
    r.output_crc = crc;
    for (int i = 0; i < q.warmups; i++) call_kernel(q.kernel, q.dtype == DT_S8, &k, b, ni, scratch);
    int ns = q.samples < 1 ? 1 : (q.samples > MAX_SAMPLES ? MAX_SAMPLES : q.samples);
    for (int i = 0; i < ns; i++) {
        board_ts_pin(1);
        uint32_t t0 = timer_now();
        call_kernel(q.kernel, q.dtype == DT_S8, &k, b, ni, scratch);
        uint32_t t1 = timer_now();
        board_ts_pin(0);
        uint32_t d = t1 - t0;
        samples[i] = d > timer_overhead ? d - timer_overhead : 0;
    }
    uint32_t *lo = _sstack;
    while (lo < sp && *lo == 0xC5C5C5C5u) lo++;
    r.stack_bytes = (uint32_t)((uint8_t *)sp - (uint8_t *)lo);
    r.nsamples = (uint8_t)ns;
    r.status = ST_OK;
    send_frame2(R_RESULT, seq, &r, sizeof r, samples, 4u * ns);
}

/* ------------------------------------------------------------------ dispatch */
static void handle_frame(uint8_t ver, uint8_t type, uint8_t seq, const uint8_t *p, uint32_t n)
{
    if (ver != PROTOCOL_VERSION) { nak(seq, NAK_VERSION, "protocol version mismatch"); return; }
    switch (type) {
    case T_HELLO: do_hello(seq); break;
    case T_RUN: do_run(seq, p, n); break;
    case T_CALIB: {
        uint32_t iters = 0, out[2];
        if (n >= 4) memcpy(&iters, p, 4);
        out[0] = iters;
        out[1] = spin(iters) - spin(0);
        send_frame(R_CALIB, seq, out, 8);
        break;
    }
    case T_PING: send_frame(R_PONG, seq, p, n); break;
    default: nak(seq, NAK_TYPE, "unknown frame type");
    }
}

static void handle_text(const char *cmd, int overflow)
{
    if (overflow) puts_raw("m-error-overflow\r\n");
    else if (!strcmp(cmd, "name")) { puts_raw("m-name-costdb-"); puts_raw(BOARD_NAME); puts_raw("\r\n"); }
    else if (!strcmp(cmd, "profile")) {
        char v[12];
        *utoa_(PROTOCOL_VERSION, v) = 0;
        puts_raw("m-profile-[costdb-fw " FW_VERSION " proto ");
        puts_raw(v);
        puts_raw("]\r\n");
    } else puts_raw("m-error-unknown-command\r\n");
    ready();
}

static uint8_t rx[7 + MAX_RX + 4];

int main(void)
{
    board_init();
    timer_init();
    {
        uint32_t best = 0xFFFFFFFFu;
        for (int i = 0; i < 5; i++) {
            uint32_t t0 = timer_now(), t1 = timer_now();
            if (t1 - t0 < best) best = t1 - t0;
        }
        timer_overhead = best;
    }
    char text[48];
    int tn = 0, overflow = 0;
    for (;;) {
        uint8_t c = uart_getc();
        if (c == 0xA5) {
            uint8_t c2 = uart_getc();
            if (c2 == 0x5A) {
                for (int i = 2; i < 7; i++) rx[i] = uart_getc();
                uint32_t len = rx[5] | ((uint32_t)rx[6] << 8);
                if (len > MAX_RX) { nak(rx[4], NAK_LENGTH, "frame too long"); ready(); continue; }
                for (uint32_t i = 0; i < len + 4; i++) rx[7 + i] = uart_getc();
                uint32_t want = crc32_update(0, rx + 2, 5 + len);
                uint32_t got = rx[7 + len] | ((uint32_t)rx[8 + len] << 8) |
                               ((uint32_t)rx[9 + len] << 16) | ((uint32_t)rx[10 + len] << 24);
                if (want != got) nak(rx[4], NAK_CRC, "crc mismatch");
                else handle_frame(rx[2], rx[3], rx[4], rx + 7, len);
                ready();
                continue;
            }
            c = c2;
        }
        if (c == '%') {
            text[tn] = 0;
            handle_text(text, overflow);
            tn = 0;
            overflow = 0;
        } else if (c >= 0x20 && c < 0x7F) {
            if (tn < (int)sizeof text - 1) text[tn++] = (char)c; else overflow = 1;
        }
    }
}
