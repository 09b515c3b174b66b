"""Fused kernels for the model on the CPU, each one native pass forward and one backward.

`geglu(x) = a * gelu_tanh(g)` for x = [a, g] (..., 2I) -> (..., I); `dropout(x, p)` and
`dropout_matmul(x, v, p)`; `layer_norm(x, eps)` for the parameter-free norms that feed a matmul;
`attention_probs(qk, c2p, p2c, idx, mask, scale)`, the attention's scale, relative-position bias,
mask and softmax. Each is described where it is defined, below.

The feed-forward's gate (paper 2.2, as the official code: GELU in its tanh form). In eager
PyTorch on the CPU this is three passes forward (gelu, mul, and the chunk's strided reads) and
five backward, and the tanh form of GELU is itself slow: on an AMX Xeon with torch 2.13,
F.gelu(approximate="tanh") took 6.0 ms on a (256, 16, 768) bf16 tensor against 1.3 ms for the
exact GELU (docs/performance.md). Here a small C kernel (gptbert.native) reads x once and
writes y once forward, and reads x and dy once and writes dx once backward, on fp32 or bf16
tensors, rows split over torch's thread count (on the AMX VM it was measured on, a second thread
did not make it faster: the kernel is arithmetic-bound, ~1.4 ns an element, and the two vCPUs
behaved as one core's vector units). In the small model's training step it saves ~2.5%, and the
dropout below ~8% (docs/performance.md).

The math, with u = sqrt(2/pi) (g + 0.044715 g^3):
  gelu_tanh(g) = g (1 + tanh u) / 2 = g * s,      s = sigmoid(2u) = 1 / (1 + e), e = exp(-2u)
  gelu_tanh'(g) = s + 2 sqrt(2/pi) g s (1 - s) (1 + 3 * 0.044715 g^2),  with 1 - s = e * s
(1 - s is formed as e * s, not as a difference, so it keeps its precision where s is near 1.)
exp is a range-reduced polynomial (2^n times e^f, |f| <= ln(2)/2, degree 7: truncation below
1e-8 relative), its argument clamped to [-80, 80], where s is within 2e-35 of 0 or 1.
In fp32 the results match torch's formula to a few ulp (tests/test_fused.py); in bf16 the
kernel computes in fp32 from the bf16 inputs and rounds each output once (round to nearest
even), where eager torch rounds the GELU and then the product: ours is the more accurate.
Elementwise, so the result does not depend on how the rows are split between threads.

Other devices, other dtypes, torch.compile tracing, or no native code (GPTBERT_NATIVE=0, no C
compiler) take the torch formula, the same function.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native

_SOURCE = r"""
#define _POSIX_C_SOURCE 200112L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define C2 1.5957691216057308f     /* 2 sqrt(2 / pi) */
#define KAPPA 0.044715f

/* e^x, x clamped to [-80, 80]: x = n ln2 + f (Cody-Waite, |f| <= ln2 / 2), e^f by its Taylor
   polynomial of degree 7 (truncation < 1e-8 relative), times 2^n put into the exponent bits. */
static inline float exp_clamped(float x) {
    x = fminf(fmaxf(x, -80.0f), 80.0f);
    float n = rintf(x * 1.44269504089f);
    float f = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;  /* ln2 = hi + lo */
    float p = 1.0f + f * (1.0f + f * (0.5f + f * (1.6666667e-1f + f * (4.1666668e-2f
              + f * (8.3333333e-3f + f * (1.3888889e-3f + f * 1.9841270e-4f))))));
    union { int32_t i; float f; } two_n;
    two_n.i = ((int32_t)n + 127) << 23;  /* |n| <= 116: a normal float */
    return p * two_n.f;
}

static inline float from_bf16(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

static inline uint16_t to_bf16(float f) {  /* round to nearest even */
    union { uint32_t u; float f; } v;
    v.f = f;
    return (uint16_t)((v.u + 0x7FFFu + ((v.u >> 16) & 1u)) >> 16);
}

#define LOAD_F32(p) (p)
#define STORE_F32(v) (v)
#define LOAD_BF16(p) from_bf16(p)
#define STORE_BF16(v) to_bf16(v)

/* x: (rows, 2I) = [a | g]; y: (rows, I) = a * gelu_tanh(g). */
#define FORWARD(NAME, T, LOAD, STORE)                                                        \
void NAME(const T *restrict x, T *restrict y, int64_t rows, int64_t I) {                    \
    for (int64_t r = 0; r < rows; r++) {                                                     \
        const T *a = x + r * 2 * I, *g = a + I;                                              \
        T *yr = y + r * I;                                                                   \
        for (int64_t i = 0; i < I; i++) {                                                    \
            float gi = LOAD(g[i]);                                                           \
            float e = exp_clamped(-C2 * gi * (1.0f + KAPPA * gi * gi));                      \
            yr[i] = STORE(LOAD(a[i]) * gi / (1.0f + e));                                     \
        }                                                                                    \
    }                                                                                        \
}

/* dx = [dy * gelu_tanh(g) | dy * a * gelu_tanh'(g)], (rows, 2I). */
#define BACKWARD(NAME, T, LOAD, STORE)                                                       \
void NAME(const T *restrict x, const T *restrict dy, T *restrict dx, int64_t rows, int64_t I) { \
    for (int64_t r = 0; r < rows; r++) {                                                     \
        const T *a = x + r * 2 * I, *g = a + I, *d = dy + r * I;                             \
        T *da = dx + r * 2 * I, *dg = da + I;                                                \
        for (int64_t i = 0; i < I; i++) {                                                    \
            float gi = LOAD(g[i]), di = LOAD(d[i]);                                          \
            float e = exp_clamped(-C2 * gi * (1.0f + KAPPA * gi * gi));                      \
            float s = 1.0f / (1.0f + e), s1 = e * s;                                         \
            float slope = s + C2 * gi * s * s1 * (1.0f + 3.0f * KAPPA * gi * gi);            \
            da[i] = STORE(di * gi * s);                                                      \
            dg[i] = STORE(di * LOAD(a[i]) * slope);                                          \
        }                                                                                    \
    }                                                                                        \
}

/* Dropout: element i is kept when the top 16 bits of fmix32(seed ^ c(i)) are >= threshold, with
   c(i) an odd multiple of i's low and high words (a bijection on 32-bit indices); kept values are
   scaled (one fp32 multiply, one rounding), dropped ones are 0. The mask is a pure function of
   (seed, i): backward rebuilds it, and however [lo, hi) is split between threads it is the same.
   One 32-bit hash per element vectorises (0.96 ns an element on one AMX Xeon core, bf16), where
   16-bit lanes of one 64-bit hash did not (3.6 ns): the lanes' interleaved stores kept GCC scalar. */
static inline uint32_t fmix32(uint32_t h) {  /* MurmurHash3's finalizer: full avalanche */
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    return h ^ (h >> 16);
}

#define DROPOUT(NAME, T, LOAD, STORE)                                                        \
void NAME(const T *restrict x, T *restrict y, int64_t lo, int64_t hi, uint32_t seed,        \
          int32_t threshold, float scale) {                                                  \
    for (int64_t i = lo; i < hi; i++) {                                                      \
        uint32_t c = (uint32_t)i * 0x9E3779B9u ^ (uint32_t)((uint64_t)i >> 32) * 0x85EBCA77u; \
        int32_t lane = (int32_t)(fmix32(seed ^ c) >> 16);                                    \
        y[i] = STORE(lane >= threshold ? LOAD(x[i]) * scale : 0.0f);                         \
    }                                                                                        \
}

/* LayerNorm without affine parameters, rows of n: y = (x - mean) * rstd, rstd = 1 / sqrt(var + eps),
   in fp32 whatever the storage type, y written in the output's type. The moments take one pass over
   the row, of x - x[0] (shifted by the row's first value, so the variance does not cancel when
   the mean is large against the spread: 1e-3 against torch fp32's 2e-3 at mean 1e4, std 1, float64
   reference); a second pass normalises. Backward from y itself (no affine: y is x-hat):
   dx = rstd * (dy - mean(dy) - y * mean(dy * y)). */
#define LN_FORWARD(NAME, TI, LOADI, TO, STOREO)                                              \
void NAME(const TI *restrict x, TO *restrict y, float *restrict rstd, int64_t rows, int64_t n, \
          float eps) {                                                                       \
    for (int64_t r = 0; r < rows; r++) {                                                     \
        const TI *xr = x + r * n;                                                            \
        TO *yr = y + r * n;                                                                  \
        float x0 = LOADI(xr[0]), s = 0.0f, v = 0.0f;                                         \
        for (int64_t i = 0; i < n; i++) { float d = LOADI(xr[i]) - x0; s += d; v += d * d; } \
        float ms = s / (float)n, mean = x0 + ms;                                             \
        float rs = 1.0f / sqrtf(fmaxf(v / (float)n - ms * ms, 0.0f) + eps);                  \
        for (int64_t i = 0; i < n; i++) yr[i] = STOREO((LOADI(xr[i]) - mean) * rs);          \
        rstd[r] = rs;                                                                        \
    }                                                                                        \
}

#define LN_BACKWARD(NAME, TO, LOADO, TI, STOREI)                                             \
void NAME(const TO *restrict y, const TO *restrict dy, const float *restrict rstd,          \
          TI *restrict dx, int64_t rows, int64_t n) {                                        \
    for (int64_t r = 0; r < rows; r++) {                                                     \
        const TO *yr = y + r * n, *dr = dy + r * n;                                          \
        TI *xr = dx + r * n;                                                                 \
        float a = 0.0f, b = 0.0f;                                                            \
        for (int64_t i = 0; i < n; i++) { float d = LOADO(dr[i]); a += d; b += d * LOADO(yr[i]); } \
        a /= (float)n;                                                                       \
        b /= (float)n;                                                                       \
        float rs = rstd[r];                                                                  \
        for (int64_t i = 0; i < n; i++) xr[i] = STOREI(rs * (LOADO(dr[i]) - a - LOADO(yr[i]) * b)); \
    }                                                                                        \
}

/* Per-call scratch, 64-byte aligned, owned by the calling thread (NULL: out of memory, and the kernel
   returns 1). Scratch carved from one shared torch tensor ran no faster on two threads
   than on one on the AMX VM; a thread's own allocation scales (measured, docs/performance.md). */
static float *scratch(int64_t floats) {
    void *p = 0;
    return posix_memalign(&p, 64, (size_t)floats * sizeof(float) + 64) == 0 ? (float *)p : 0;
}

/* Attention probabilities with the relative-position bias (paper 2.2), one query row at a time:
     s_j = qk_ij * scale + ((c2p_i[idx_ij] + p2c_j[idx_ij]) + mask_ij),   p_i = softmax_j(s_i)
   Slab n = b * H + h: qk and p are (T, T) at n * T * T; c2p and p2c (T, R) rows at b * cb + h * ch;
   idx (T, T) bucket indices, rows ir apart, at b * ib (ib = 0: one table for every row of the
   batch); mask (T, T) fp32, rows T apart, at b * mb, or NULL. A mask entry below -1e30 (-inf)
   drops its key: probability exactly 0 (a row with every key dropped gets NaN, as torch's).
   Each slab's p2c table is first widened to fp32 in scratch (T * R floats), so the row's
   bias is one scalar gather loop, and the rest of the row (scale, mask, max, exp, sum, store) runs
   in loops that vectorise: split this way it took 30% less time than one fused loop. */
#define ATTN_FORWARD(NAME, T_, LOAD, STORE)                                                  \
int NAME(const T_ *restrict qk, const T_ *restrict c2p, const T_ *restrict p2c,            \
          const int64_t *restrict idx, const float *restrict mask, T_ *restrict p,           \
          int64_t lo, int64_t hi, int64_t H, int64_t T, int64_t R, int64_t cb, int64_t ch,   \
          int64_t ib, int64_t ir, int64_t mb, float scale) {                                 \
    float *row = scratch(2 * T + R + T * R), *cf = row + T, *pf = cf + R;                    \
    if (!row) return 1;                                                                      \
    int32_t *xi = (int32_t *)(pf + T * R);                                                   \
    for (int64_t n = lo; n < hi; n++) {                                                      \
        int64_t b = n / H, h = n % H;                                                        \
        const T_ *cs = c2p + b * cb + h * ch, *ps = p2c + b * cb + h * ch;                   \
        for (int64_t k = 0; k < T * R; k++) pf[k] = LOAD(ps[k]);                             \
        for (int64_t i = 0; i < T; i++) {                                                    \
            const T_ *q = qk + (n * T + i) * T, *ci = cs + i * R;                            \
            const int64_t *xr = idx + b * ib + i * ir;                                       \
            T_ *out = p + (n * T + i) * T;                                                   \
            for (int64_t k = 0; k < R; k++) cf[k] = LOAD(ci[k]);                             \
            for (int64_t j = 0; j < T; j++) xi[j] = (int32_t)xr[j];                          \
            for (int64_t j = 0; j < T; j++) row[j] = cf[xi[j]] + pf[j * R + xi[j]];          \
            float mx = -3.0e38f;                                                             \
            if (mask) {                                                                      \
                const float *mr = mask + b * mb + i * T;                                     \
                for (int64_t j = 0; j < T; j++) {                                            \
                    float m = mr[j];                                                         \
                    float v = m < -1.0e30f ? -3.0e38f : LOAD(q[j]) * scale + (row[j] + m);   \
                    row[j] = v;                                                              \
                    mx = fmaxf(mx, v);                                                       \
                }                                                                            \
            } else {                                                                         \
                for (int64_t j = 0; j < T; j++) {                                            \
                    float v = LOAD(q[j]) * scale + row[j];                                   \
                    row[j] = v;                                                              \
                    mx = fmaxf(mx, v);                                                       \
                }                                                                            \
            }                                                                                \
            float sum = 0.0f;                                                                \
            for (int64_t j = 0; j < T; j++) {                                                \
                float e = row[j] < -1.0e38f ? 0.0f : exp_clamped(row[j] - mx);               \
                row[j] = e;                                                                  \
                sum += e;                                                                    \
            }                                                                                \
            float inv = sum > 0.0f ? 1.0f / sum : NAN;                                       \
            for (int64_t j = 0; j < T; j++) out[j] = STORE(row[j] * inv);                    \
        }                                                                                    \
    }                                                                                        \
    free(row);                                                                               \
    return 0;                                                                                \
}

/* Backward: ds_j = p_j (dp_j - sum_k p_k dp_k) (the softmax), dqk = ds * scale, and the bias terms'
   gradients dc2p_i[idx_ij] += ds_j, dp2c_j[idx_ij] += ds_j, summed per slab in fp32 scratch and
   written once, in the tables' type and layout (slab at b * cb + h * ch, as the inputs). Slabs
   are split between threads, so each sum has one writer. The row's arithmetic vectorises; the
   two scatter-adds are one scalar loop after it. */
#define ATTN_BACKWARD(NAME, T_, LOAD, STORE)                                                 \
int NAME(const T_ *restrict p, const T_ *restrict dp, const int64_t *restrict idx,         \
          T_ *restrict dqk, T_ *restrict dc2p, T_ *restrict dp2c,                            \
          int64_t lo, int64_t hi, int64_t H, int64_t T, int64_t R, int64_t cb, int64_t ch,   \
          int64_t ib, int64_t ir, float scale) {                                             \
    float *ds = scratch(2 * T + 2 * T * R), *dcf = ds + T, *dpf = dcf + T * R;               \
    if (!ds) return 1;                                                                       \
    int32_t *xi = (int32_t *)(dpf + T * R);                                                  \
    for (int64_t n = lo; n < hi; n++) {                                                      \
        int64_t b = n / H, h = n % H;                                                        \
        for (int64_t k = 0; k < T * R; k++) { dcf[k] = 0.0f; dpf[k] = 0.0f; }               \
        for (int64_t i = 0; i < T; i++) {                                                    \
            const T_ *pr = p + (n * T + i) * T, *dr = dp + (n * T + i) * T;                  \
            const int64_t *xr = idx + b * ib + i * ir;                                       \
            T_ *out = dqk + (n * T + i) * T;                                                 \
            float *dci = dcf + i * R;                                                        \
            float dot = 0.0f;                                                                \
            for (int64_t j = 0; j < T; j++) dot += LOAD(pr[j]) * LOAD(dr[j]);                \
            for (int64_t j = 0; j < T; j++) {                                                \
                float d = LOAD(pr[j]) * (LOAD(dr[j]) - dot);                                 \
                ds[j] = d;                                                                   \
                out[j] = STORE(d * scale);                                                   \
            }                                                                                \
            for (int64_t j = 0; j < T; j++) xi[j] = (int32_t)xr[j];                          \
            for (int64_t j = 0; j < T; j++) {                                                \
                dci[xi[j]] += ds[j];                                                         \
                dpf[j * R + xi[j]] += ds[j];                                                 \
            }                                                                                \
        }                                                                                    \
        T_ *dc = dc2p + b * cb + h * ch, *dq = dp2c + b * cb + h * ch;                       \
        for (int64_t k = 0; k < T * R; k++) { dc[k] = STORE(dcf[k]); dq[k] = STORE(dpf[k]); } \
    }                                                                                        \
    free(ds);                                                                                \
    return 0;                                                                                \
}

ATTN_FORWARD(attn_forward_f32, float, LOAD_F32, STORE_F32)
ATTN_FORWARD(attn_forward_bf16, uint16_t, LOAD_BF16, STORE_BF16)
ATTN_BACKWARD(attn_backward_f32, float, LOAD_F32, STORE_F32)
ATTN_BACKWARD(attn_backward_bf16, uint16_t, LOAD_BF16, STORE_BF16)

LN_FORWARD(ln_forward_f32_f32, float, LOAD_F32, float, STORE_F32)
LN_FORWARD(ln_forward_f32_bf16, float, LOAD_F32, uint16_t, STORE_BF16)
LN_FORWARD(ln_forward_bf16_bf16, uint16_t, LOAD_BF16, uint16_t, STORE_BF16)
LN_BACKWARD(ln_backward_f32_f32, float, LOAD_F32, float, STORE_F32)
LN_BACKWARD(ln_backward_bf16_f32, uint16_t, LOAD_BF16, float, STORE_F32)
LN_BACKWARD(ln_backward_bf16_bf16, uint16_t, LOAD_BF16, uint16_t, STORE_BF16)

/* out = x + b, fp32 x and out, bf16 b: the residual sum of a block under autocast, one pass. */
void add_f32_bf16(const float *restrict x, const uint16_t *restrict b, float *restrict out, int64_t lo,
                  int64_t hi) {
    for (int64_t i = lo; i < hi; i++) out[i] = x[i] + from_bf16(b[i]);
}

DROPOUT(dropout_f32, float, LOAD_F32, STORE_F32)
DROPOUT(dropout_bf16, uint16_t, LOAD_BF16, STORE_BF16)

FORWARD(geglu_forward_f32, float, LOAD_F32, STORE_F32)
FORWARD(geglu_forward_bf16, uint16_t, LOAD_BF16, STORE_BF16)
BACKWARD(geglu_backward_f32, float, LOAD_F32, STORE_F32)
BACKWARD(geglu_backward_bf16, uint16_t, LOAD_BF16, STORE_BF16)
"""

_P, _I64 = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    **{f"dropout_{t}": ([_P, _P, _I64, _I64, ctypes.c_uint32, ctypes.c_int32, ctypes.c_float], None)
       for t in ("f32", "bf16")},
    **{f"geglu_forward_{t}": ([_P, _P, _I64, _I64], None) for t in ("f32", "bf16")},
    **{f"geglu_backward_{t}": ([_P, _P, _P, _I64, _I64], None) for t in ("f32", "bf16")},
    "add_f32_bf16": ([_P, _P, _P, _I64, _I64], None),
    **{f"attn_forward_{t}": ([_P] * 6 + [_I64] * 10 + [ctypes.c_float], ctypes.c_int) for t in ("f32", "bf16")},
    **{f"attn_backward_{t}": ([_P] * 6 + [_I64] * 9 + [ctypes.c_float], ctypes.c_int) for t in ("f32", "bf16")},
    **{f"ln_forward_{t}": ([_P, _P, _P, _I64, _I64, ctypes.c_float], None) for t in ("f32_f32", "f32_bf16", "bf16_bf16")},
    **{f"ln_backward_{t}": ([_P, _P, _P, _P, _I64, _I64], None) for t in ("f32_f32", "bf16_f32", "bf16_bf16")},
}
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}
_MIN_ELEMENTS_PER_THREAD = 1 << 14


def library() -> ctypes.CDLL | None:
    return native.library("fused", _SOURCE, _SIGNATURES)


def _split(n: int, per_item: int, run, scratch: str | None = None) -> None:
    """run(lo, hi) over the non-empty parts of [0, n) split between torch's threads, each part at
    least _MIN_ELEMENTS_PER_THREAD elements (per_item per index). Kernels that allocate their own
    scratch return nonzero when that fails: a MemoryError naming `scratch`."""
    def part(lo: int, hi: int) -> None:
        if hi > lo and run(lo, hi) and scratch is not None:
            raise MemoryError(f"{scratch}: no memory for its scratch")

    native.parallel(part, n, min_rows=max(1, _MIN_ELEMENTS_PER_THREAD // max(1, per_item)))


def geglu_reference(x: Tensor) -> Tensor:
    """The torch formula (the official code's GeGLU)."""
    a, g = x.chunk(2, dim=-1)
    return a * F.gelu(g, approximate="tanh")


def _rows(x: Tensor) -> tuple[int, int]:
    I = x.shape[-1] // 2
    return x.numel() // max(1, 2 * I), I


def _call(fn, rows: int, I: int, *tensors: Tensor) -> None:
    ptrs = [t.data_ptr() for t in tensors]
    widths = [t.shape[-1] for t in tensors]  # I or 2I per row
    size = tensors[0].element_size()
    _split(rows, I, lambda lo, hi: fn(*[p + lo * w * size for p, w in zip(ptrs, widths)], hi - lo, I))


class _GeGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.contiguous()
        rows, I = _rows(x)
        y = x.new_empty((*x.shape[:-1], I))
        _call(getattr(library(), f"geglu_forward_{_SUFFIX[x.dtype]}"), rows, I, x, y)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        dy = dy.to(x.dtype).contiguous()
        rows, I = _rows(x)
        dx = torch.empty_like(x)
        _call(getattr(library(), f"geglu_backward_{_SUFFIX[x.dtype]}"), rows, I, x, dy, dx)
        return dx


def geglu(x: Tensor) -> Tensor:
    """(..., 2I) -> (..., I): x[..., :I] * gelu_tanh(x[..., I:]); native where it can run."""
    if (x.device.type == "cpu" and x.dtype in _SUFFIX and x.shape[-1] % 2 == 0 and x.numel() > 0
            and not torch.compiler.is_compiling() and library() is not None):
        return _GeGLU.apply(x)
    return geglu_reference(x)


# ---------------------------------------------------------------------------
# Dropout


def dropout_threshold(p: float) -> tuple[int, float]:
    """(threshold, keep rate): 16 random bits u keep their element when u >= threshold = round(p * 65536), so the
    drop rate is quantised to 1/65536 (0.1 -> 0.1000061) and kept values are scaled by 1 / rate."""
    threshold = round(p * 65536)
    return threshold, 1.0 - threshold / 65536


def _dropout_pass(x: Tensor, seed: int, threshold: int, scale: float) -> Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    fn = getattr(library(), f"dropout_{_SUFFIX[x.dtype]}")
    n = x.numel()
    xp, yp = x.data_ptr(), y.data_ptr()

    _split(n, 1, lambda lo, hi: fn(xp, yp, lo, hi, seed, threshold, scale))
    return y


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, seed: int, threshold: int, scale: float) -> Tensor:
        ctx.args = (seed, threshold, scale)
        return _dropout_pass(x, seed, threshold, scale)

    @staticmethod
    def backward(ctx, dy: Tensor):
        return _dropout_pass(dy, *ctx.args), None, None, None  # the same mask, rebuilt from the seed


def dropout(x: Tensor, p: float) -> Tensor | None:
    """Training-mode dropout in one native pass, or None where it cannot run (the caller's torch path).

    The mask is a hash of (seed, element index), the seed one 32-bit draw from torch's global
    generator: so a run resumes exactly (its RNG state is checkpointed), recomputed attention
    (torch.utils.checkpoint with preserve_rng_state) redraws the same mask, and no mask is kept
    for backward: it is rebuilt from the seed, one pass over the gradient.
    """
    if not _native_ok(x):
        return None
    seed = int(torch.randint(0, 2**32, (1,), dtype=torch.int64))
    threshold, rate = dropout_threshold(p)
    return _Dropout.apply(x, seed, threshold, 1.0 / rate)


def _native_ok(x: Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in _SUFFIX and x.numel() > 0
            and not torch.compiler.is_compiling() and library() is not None)


class _DropoutMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, v: Tensor, seed: int, threshold: int, scale: float) -> Tensor:
        ctx.args = (seed, threshold, scale)
        ctx.save_for_backward(x, v)  # x, not dropout(x): the attention softmax keeps x anyway
        return _dropout_pass(x, seed, threshold, scale) @ v

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, v = ctx.saved_tensors
        dropped = _dropout_pass(x, *ctx.args)  # rebuilt from the seed: one pass
        dv = dropped.transpose(-1, -2) @ dy
        dx = _dropout_pass(dy @ v.transpose(-1, -2), *ctx.args)
        return dx, dv, None, None, None


def dropout_matmul(x: Tensor, v: Tensor, p: float) -> Tensor | None:
    """`dropout(x, p) @ v` (same seed draw, mask and products as the two ops apart) without keeping
    dropout(x) for backward; None where native code cannot run.

    For the attention probabilities: the softmax keeps its output x for its own backward, and the
    product with the values would keep dropout(x), a second (B, H, T, T) tensor, for the gradient
    of v. Here backward rebuilds dropout(x) from x and the seed instead (one native pass): at T=512
    that is 24 MB a layer for the small model's micro-batch of 8 rows (docs/performance.md).
    """
    if x.dtype != v.dtype or not _native_ok(x):
        return None
    seed = int(torch.randint(0, 2**32, (1,), dtype=torch.int64))
    threshold, rate = dropout_threshold(p)
    return _DropoutMatmul.apply(x, v, seed, threshold, 1.0 / rate)


# ---------------------------------------------------------------------------
# LayerNorm that feeds a matmul


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
        x = x.contiguous()
        n = x.shape[-1]
        rows = x.numel() // n
        y = torch.empty(x.shape, dtype=out_dtype)
        rstd = torch.empty(rows, dtype=torch.float32)
        fn = getattr(library(), f"ln_forward_{_SUFFIX[x.dtype]}_{_SUFFIX[out_dtype]}")
        xp, yp, rp, xs, ys = x.data_ptr(), y.data_ptr(), rstd.data_ptr(), n * x.element_size(), n * y.element_size()
        _split(rows, n, lambda lo, hi: fn(xp + lo * xs, yp + lo * ys, rp + 4 * lo, hi - lo, n, eps))
        ctx.save_for_backward(y, rstd)  # y, not x: the next matmul keeps y anyway
        ctx.in_dtype = x.dtype
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        y, rstd = ctx.saved_tensors
        dy = dy.to(y.dtype).contiguous()
        n = y.shape[-1]
        rows = rstd.numel()
        dx = torch.empty(y.shape, dtype=ctx.in_dtype)
        fn = getattr(library(), f"ln_backward_{_SUFFIX[y.dtype]}_{_SUFFIX[ctx.in_dtype]}")
        yp, dyp, rp, dxp = y.data_ptr(), dy.data_ptr(), rstd.data_ptr(), dx.data_ptr()
        ys, xs = n * y.element_size(), n * dx.element_size()
        _split(rows, n, lambda lo, hi: fn(yp + lo * ys, dyp + lo * ys, rp + 4 * lo, dxp + lo * xs, hi - lo, n))
        return dx, None, None


def layer_norm(x: Tensor, eps: float) -> Tensor:
    """Parameter-free LayerNorm over the last dimension, for a norm whose output feeds a matmul.

    On the CPU (native code), one pass forward that writes the output directly in the matmul's
    dtype (bf16 under CPU autocast: the cast the matmul would make is folded in, and the two
    projections that read the attention's pre-norm share one bf16 copy instead of casting it
    twice), and keeps that output and one fp32 rstd per row for backward, not the input: the
    matmul keeps the output anyway. At T=512 this keeps ~27 MB a layer less for the small model's
    micro-batch of 8 rows (docs/performance.md). The forward values are those of F.layer_norm
    rounded to the output dtype (tests/test_fused.py); backward computes from the bf16 output
    where torch's uses the fp32 input, one bf16 rounding of x-hat (the matmul's weight gradient
    already reads that rounded output). Elsewhere F.layer_norm, where autocast keeps its dtype.
    """
    if not _native_ok(x):
        return F.layer_norm(x, x.shape[-1:], eps=eps)
    bf16_autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return _LayerNorm.apply(x, eps, torch.bfloat16 if bf16_autocast else x.dtype)


# ---------------------------------------------------------------------------
# Attention probabilities with the relative-position bias


class _AttentionProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qk: Tensor, c2p: Tensor, p2c: Tensor, idx: Tensor, mask: Tensor | None, scale: float) -> Tensor:
        B, H, T, _ = qk.shape
        R = c2p.shape[-1]
        qk = qk.contiguous()
        c2p, p2c = _slabs(c2p), _slabs(p2c)
        if p2c.stride()[:2] != c2p.stride()[:2]:  # one pair of slab strides for both tables
            c2p, p2c = c2p.contiguous(), p2c.contiguous()
        if idx.stride(-1) != 1:
            idx = idx.contiguous()
        ib = idx.stride(0) if idx.shape[0] > 1 else 0  # 0: one (T, T) table for every row
        mb = 0
        if mask is not None:
            mask = mask.float().contiguous()  # (1 or B, 1, T, T) additive: 0 / -inf
            mb = T * T if mask.shape[0] > 1 else 0
        p = torch.empty_like(qk)
        fn = getattr(library(), f"attn_forward_{_SUFFIX[qk.dtype]}")
        ptrs = (qk.data_ptr(), c2p.data_ptr(), p2c.data_ptr(), idx.data_ptr(),
                None if mask is None else mask.data_ptr(), p.data_ptr())
        tail = (H, T, R, c2p.stride(0), c2p.stride(1), ib, idx.stride(-2), mb, scale)
        _split(B * H, T * T, lambda lo, hi: fn(*ptrs, lo, hi, *tail), scratch=f"attention kernel ({T}-token rows)")
        ctx.save_for_backward(p, idx)  # p: the product with the values keeps it anyway
        ctx.args = (scale, R, ib, c2p.stride())
        return p

    @staticmethod
    def backward(ctx, dp: Tensor):
        p, idx = ctx.saved_tensors
        scale, R, ib, strides = ctx.args
        B, H, T, _ = p.shape
        dp = dp.to(p.dtype).contiguous()
        dqk = torch.empty_like(p)
        # the tables' gradients in the tables' own layout (per_head_product's (H, B, ..) storage)
        dc2p, dp2c = (torch.empty_strided((B, H, T, R), strides, dtype=p.dtype) for _ in range(2))
        fn = getattr(library(), f"attn_backward_{_SUFFIX[p.dtype]}")
        ptrs = (p.data_ptr(), dp.data_ptr(), idx.data_ptr(), dqk.data_ptr(), dc2p.data_ptr(), dp2c.data_ptr())
        tail = (H, T, R, strides[0], strides[1], ib, idx.stride(-2), scale)
        _split(B * H, T * T, lambda lo, hi: fn(*ptrs, lo, hi, *tail), scratch=f"attention kernel ({T}-token rows)")
        return dqk, dc2p, dp2c, None, None, None


def _slabs(t: Tensor) -> Tensor:
    """t (B, H, T, R) laid out as (B, H, ..) or (H, B, ..) (per_head_product's), else a contiguous copy."""
    return t if t.is_contiguous() or t.transpose(0, 1).is_contiguous() else t.contiguous()


def attention_probs(qk: Tensor, c2p: Tensor, p2c: Tensor, idx: Tensor, mask: Tensor | None,
                    scale: float) -> Tensor | None:
    """softmax(qk * scale + bias + mask) for the disentangled attention, in one native pass each way,
    or None where native code cannot run (the caller's torch path, the same math).

    qk (B, H, T, T) query-key products; c2p, p2c (B, H, T, R) the products of queries with the
    relative-position keys and of keys with the relative-position queries (already scaled); idx
    (1 or B, 1, T, T) the bucket of each (query i, key j); mask (1 or B, 1, T, T) additive 0 / -inf.
    The bias is c2p[i, idx[i, j]] + p2c[j, idx[i, j]] (`Attention._bias`). In eager torch this is
    two gathers of (B, H, T, T), three adds, a scale and a softmax, and backward two scatter-adds
    (bf16 sums, 63 buckets), each a pass through memory; here each query row is built, normalised
    and written once, in fp32, and backward reads the probabilities and their gradient once and
    sums the bias gradients in fp32. Keeps only the probabilities (and idx) for backward.
    """
    if not (_native_ok(qk) and qk.dim() == 4 and c2p.dtype == qk.dtype and p2c.dtype == qk.dtype
            and idx.dtype == torch.int64 and c2p.shape[-1] == p2c.shape[-1]):
        return None
    return _AttentionProbs.apply(qk, c2p, p2c, idx, mask, scale)


def add_into(out: Tensor, x: Tensor, b: Tensor) -> None:
    """out = x + b, written into out (a row of the layer-sum buffer). An fp32 x plus a bf16 b (a block's
    output under autocast) is one native pass; torch.add would first widen b into a new tensor."""
    if (out.dtype == x.dtype == torch.float32 and b.dtype == torch.bfloat16 and out.is_contiguous()
            and x.shape == b.shape == out.shape and _native_ok(x)):
        x, b = x.contiguous(), b.contiguous()
        fn, ptrs = library().add_f32_bf16, (x.data_ptr(), b.data_ptr(), out.data_ptr())
        _split(x.numel(), 1, lambda lo, hi: fn(*ptrs, lo, hi))
        return
    torch.add(x, b, out=out)
