"""The scorer's per-token statistics in one pass of native code: row max, target gap, softmax sums.

For every scored token the scorer needs the gap l_y - max(l) and, per temperature
T = k/20, the softmax denominator S_k = sum over the vocabulary of exp(z / T) with
z = logits - max(logits) <= 0 (see `scoring.token_statistics`). In torch that is a
max, a subtraction into a new (rows, V) tensor, a gather and, per temperature, an
exponential and a sum, each its own pass through memory: for the 3.7M main-job model
those passes took longer than the model's whole forward pass in causal mode
(docs/performance.md). `token_sums` does it row by row in a small C function, so
each row stays in cache and no (rows, V) temporary is made:

  m = max(l); gap = l_y - m
  T = 1 alone:  S = sum 2^((l - m) * log2(e))          one pass of exponentials
  the sweep:    e = 2^((l - m) * (20/k) * log2(e))     for the seeds k = 31..60
                S_k = sum(e); while k is even: e = e * e, k = k / 2, S_k = sum(e)

2^x is a degree-7 Taylor polynomial of 2^f on f in [-1/2, 1/2] (truncation error
< 6e-9 relative, below fp32 rounding) times 2^n put straight into the exponent bits.
The chain's 30 exponentials and 30 squarings cover every grid point k = 1..60
exactly once (exp(z/T)^2 = exp(z/(T/2))); it is bound by the arithmetic, about
one cycle per vocabulary entry and temperature.

Terms never go below 2^-126 (exponents are clamped there, and a term below
2^-63 is raised to 2^-63 before it is squared): the sum is >= 1, so the floors
add at most V * 2^-126, far below its rounding, and no subnormal number ever
enters a multiplication (x86 CPUs handle those ~100x slower). Sums use 32
fp32 partial sums per row (vectorised), like torch's own reduction; results
agree with float64 to ~2e-6 relative (tests/test_eval_scoring.py checks the
kernel and the torch path against a float64 reference).

The C file is compiled once per machine by `gptbert.native` (`cc -O3
-march=native`, cached, well under a second). Without a C compiler, or with
GPTBERT_NATIVE=0, `token_sums` returns None and the scorer uses the torch path
(same results, slower). Rows are split over torch's thread count. Logits may
be -inf (an impossible token): the clamp max(-inf, -126) is still -126.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import torch
from torch import Tensor

from .. import native

GRID = 20  # temperatures k / GRID, k = 1 .. 3 * GRID

_SOURCE = r"""
#include <math.h>
#include <stdint.h>

#define GRID 20
#define KMAX (3 * GRID)

#define LANES 32  /* partial sums per row: two AVX-512 (four AVX2) vectors, so the adds do not wait on each other */

/* 2^x for x <= 0 (clamped at -126): 2^n * p(f), n = round(x), f = x - n in [-1/2, 1/2]. */
static inline float exp2_neg(float x) {
    const float c1 = 0.69314718056f, c2 = 0.24022650695f, c3 = 0.05550410866f, c4 = 0.00961812911f,
                c5 = 0.00133335581f, c6 = 0.00015403530f, c7 = 0.00001525273f;  /* ln(2)^j / j! */
    x = fmaxf(x, -126.0f);
    int32_t n = (int32_t)(x - 0.5f);              /* x <= 0: truncation toward zero rounds x - 0.5 up */
    float f = x - (float)n;                        /* in (-0.5, 0.5] */
    float p = 1.0f + f * (c1 + f * (c2 + f * (c3 + f * (c4 + f * (c5 + f * (c6 + f * c7))))));
    union { int32_t i; float f; } two_n;
    two_n.i = (n + 127) << 23;                     /* 2^n, n >= -126: a normal float */
    return p * two_n.f;
}

static float total(const float *acc) {
    float s = 0.0f;
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

static float row_max(const float *restrict l, const float *restrict b, int64_t V) {
    float acc[LANES];
    for (int j = 0; j < LANES; j++) acc[j] = l[0] + b[0];
    int64_t i = 0;
    for (; i + LANES <= V; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] = fmaxf(acc[j], l[i + j] + b[i + j]);
    for (; i < V; i++) acc[0] = fmaxf(acc[0], l[i] + b[i]);
    float m = acc[0];
    for (int j = 1; j < LANES; j++) m = fmaxf(m, acc[j]);
    return m;
}

/* sum of 2^((l + b - m) * scale) over the row (every term <= 1). The logit l + b minus m first: exact
   where it is near m, however large both are (l * scale - m * scale would lose the difference). */
static float exp2_sum(const float *restrict l, const float *restrict b, float m, float scale, int64_t V) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= V; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += exp2_neg((l[i + j] + b[i + j] - m) * scale);
    for (; i < V; i++) acc[0] += exp2_neg((l[i] + b[i] - m) * scale);
    return total(acc);
}

/* The same, also keeping the terms in out. */
static float exp2_sum_keep(const float *restrict l, const float *restrict b, float m, float scale, float *restrict out,
                           int64_t V) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= V; i += LANES)
        for (int j = 0; j < LANES; j++) {
            out[i + j] = exp2_neg((l[i + j] + b[i + j] - m) * scale);
            acc[j] += out[i + j];
        }
    for (; i < V; i++) {
        out[i] = exp2_neg((l[i] + b[i] - m) * scale);
        acc[0] += out[i];
    }
    return total(acc);
}

/* e <- e^2, returning sum(e). Values below 2^-63 are raised to 2^-63 first, so no square is subnormal:
   every term is >= 2^-126 and the V floors add at most V * 2^-126 to a sum that is >= 1. */
static float square_sum(float *restrict e, int64_t V) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= V; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float v = fmaxf(e[i + j], 1.0842022e-19f);
            e[i + j] = v * v;
            acc[j] += e[i + j];
        }
    for (; i < V; i++) {
        float v = fmaxf(e[i], 1.0842022e-19f);
        e[i] = v * v;
        acc[0] += e[i];
    }
    return total(acc);
}

/* logits: (rows, V) fp32, before the bias b (V,) is added; targets: (rows,) in [0, V).  For every row,
   with l = logits + b and m = max(l): gaps[r] = l[y] - m, and sums[r, j] = sum exp((l - m) / T_j),
   T_j = ks[j] / GRID. (The bias is added here, not by the matmul: addmm's bias pass cost more than
   half as much as the matmul itself.)
   K == 1 with ks[0] == GRID (T = 1 alone) takes one pass of exponentials; otherwise the whole grid
   k = 1..KMAX is computed by the chain (30 seeds in (1.5, 3], each squared down). buf: V floats. */
void token_sums(const float *logits, const float *b, const int64_t *targets, int64_t rows, int64_t V,
                const int32_t *ks, int32_t K, float *sums, float *gaps, float *buf) {
    const float log2e = 1.44269504089f;
    float grid[KMAX + 1];
    for (int64_t r = 0; r < rows; r++) {
        const float *l = logits + r * V;
        const float m = row_max(l, b, V);
        gaps[r] = (l[targets[r]] + b[targets[r]]) - m;
        float *o = sums + r * K;
        if (K == 1 && ks[0] == GRID) {
            o[0] = exp2_sum(l, b, m, log2e, V);
            continue;
        }
        for (int k = KMAX / 2 + 1; k <= KMAX; k++) {  /* seeds T = k / GRID in (1.5, 3] */
            grid[k] = exp2_sum_keep(l, b, m, (float)GRID / (float)k * log2e, buf, V);
            for (int kk = k; kk % 2 == 0;) {           /* exp(z / T)^2 = exp(z / (T / 2)) */
                kk /= 2;
                grid[kk] = square_sum(buf, V);
            }
        }
        for (int j = 0; j < K; j++) o[j] = grid[ks[j]];
    }
}
"""
_SIGNATURES = {"token_sums": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                               ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p], None)}


def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None where native code is off or cannot be built."""
    return native.library("sweep", _SOURCE, _SIGNATURES)


def token_sums(logits: Tensor, targets: Tensor, ks: Sequence[int], bias: Tensor | None = None
               ) -> tuple[Tensor, Tensor] | None:
    """(R, V) fp32 CPU logits, (R,) targets, grid indices ks (T = k / 20) -> ((R, K) sums, (R,) gaps).

    With l = logits + bias (a (V,) row added to every row; none by default): sums[r, j] = sum over
    the vocabulary of exp((l[r] - max) / (ks[j] / 20)), each >= 1; gaps[r] = l[r, target] - max.
    None when the native code is not available (the caller falls back to torch).
    """
    lib = library()
    if lib is None or logits.device.type != "cpu" or logits.dtype != torch.float32 or logits.dim() != 2:
        return None
    logits = logits.contiguous()
    R, V = logits.shape
    targets = targets.to(torch.int64).contiguous()
    if targets.shape != (R,):
        raise ValueError(f"targets must have shape ({R},), got {tuple(targets.shape)}")
    if R and (int(targets.min()) < 0 or int(targets.max()) >= V):
        raise ValueError(f"targets must lie in [0, {V})")
    if bias is None:
        bias = torch.zeros(V, dtype=torch.float32)
    elif bias.shape != (V,) or bias.dtype != torch.float32 or bias.device.type != "cpu":
        raise ValueError(f"bias must be a ({V},) fp32 CPU tensor, got {tuple(bias.shape)} {bias.dtype}")
    bias = bias.contiguous()
    if not ks or any(not 1 <= k <= 3 * GRID for k in ks):
        raise ValueError(f"grid indices must lie in 1..{3 * GRID}, got {list(ks)}")
    kt = torch.tensor(list(ks), dtype=torch.int32)
    K = len(ks)
    sums = torch.empty((R, K), dtype=torch.float32)
    gaps = torch.empty((R,), dtype=torch.float32)

    def run(lo: int, hi: int) -> None:
        buf = torch.empty(V, dtype=torch.float32)
        lib.token_sums(logits[lo:hi].data_ptr(), bias.data_ptr(), targets[lo:hi].data_ptr(), hi - lo, V, kt.data_ptr(), K,
                       sums[lo:hi].data_ptr(), gaps[lo:hi].data_ptr(), buf.data_ptr())

    native.parallel(run, R)
    return sums, gaps
