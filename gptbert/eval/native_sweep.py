"""The temperature sweep's softmax denominators in one pass of native code.

For every scored token the sweep needs, per temperature T = k/20 (k = 1..60),
S_k = sum over the vocabulary of exp(z / T), with z = logits - max(logits) <= 0
(see `scoring.token_statistics`). In torch that is ~150 elementwise ops
over each (rows, V) block: 30 exponentials (the seeds k = 31..60), 30 squarings
(exp(z/T)^2 = exp(z/(T/2))) and 60 sums, each its own pass through memory;
on a 2-core AVX2 CPU that cost about as much as the model's forward pass in
causal mode. This module does the same arithmetic row by row in a small C
function, so each row of z stays in cache (2.6x faster there; it is then
bound by the arithmetic, about one cycle per vocabulary entry and temperature):

  e = 2^(z * (20/k) * log2(e))   for the seed k, a degree-7 Taylor polynomial of
                                  2^f on f in [-1/2, 1/2] (truncation error
                                  < 6e-9 relative, below fp32 rounding) times 2^n
                                  put straight into the exponent bits
  S_k = sum(e); while k is even: e = e * e, k = k / 2, S_k = sum(e)

Terms never go below 2^-126 (exponents are clamped there, and a term below
2^-63 is raised to 2^-63 before it is squared): the sum is >= 1, so the floors
add at most V * 2^-126, far below its rounding, and no subnormal number ever
enters a multiplication (x86 CPUs handle those ~100x slower). Sums use 32
fp32 partial sums per row (vectorised), like torch's own reduction; results
agree with float64 to ~2e-6 relative (tests/test_eval_scoring.py checks the
kernel and the torch path against a float64 reference).

The C file is compiled once per machine by `gptbert.native` (`cc -O3
-march=native`, cached, well under a second). Without a C compiler, or with
GPTBERT_NATIVE=0, `sweep_sums` returns None and the scorer uses the torch path
(same results, slower). Rows are split over torch's thread count. z may hold
-inf (a logit of -inf): the clamp max(-inf, -126) is still -126.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from .. import native

GRID = 20  # temperatures k / GRID, k = 1 .. 3 * GRID

_SOURCE = r"""
#include <math.h>
#include <stdint.h>

#define GRID 20
#define KMAX (3 * GRID)

#define LANES 32  /* partial sums per row: 4 AVX2 vectors, so the adds do not wait on each other */

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

/* out = 2^(z * scale) for z <= 0, returning sum(out). */
static float exp2_sum(const float *restrict z, float scale, float *restrict out, int64_t V) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= V; i += LANES)
        for (int j = 0; j < LANES; j++) {
            out[i + j] = exp2_neg(z[i + j] * scale);
            acc[j] += out[i + j];
        }
    for (; i < V; i++) {
        out[i] = exp2_neg(z[i] * scale);
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

/* z: (rows, V) fp32, each row <= 0 with max 0.  out: (rows, KMAX + 1) fp32, out[r, k] = sum exp(z / (k / GRID)).
   buf: V floats of scratch. */
void sweep_sums(const float *z, int64_t rows, int64_t V, float *out, float *buf) {
    const float log2e = 1.44269504089f;
    for (int64_t r = 0; r < rows; r++) {
        const float *zr = z + r * V;
        float *o = out + r * (KMAX + 1);
        o[0] = 0.0f;
        for (int k = KMAX / 2 + 1; k <= KMAX; k++) {  /* seeds T = k / GRID in (1.5, 3] */
            o[k] = exp2_sum(zr, (float)GRID / (float)k * log2e, buf, V);
            for (int kk = k; kk % 2 == 0;) {           /* exp(z / T)^2 = exp(z / (T / 2)) */
                kk /= 2;
                o[kk] = square_sum(buf, V);
            }
        }
    }
}
"""

_SIGNATURES = {"sweep_sums": ([ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p],
                               None)}


def library() -> ctypes.CDLL | None:
    """The compiled sweep, built on first use; None where native code is off or cannot be built."""
    return native.library("sweep", _SOURCE, _SIGNATURES)


def sweep_sums(z: Tensor) -> Tensor | None:
    """(R, V) fp32 CPU tensor of logits minus their row max -> (R, 61) fp32 sums, column k = sum exp(z / (k/20)).

    Column 0 is 0 (unused). None when the native code is not available (the caller falls back to torch).
    """
    lib = library()
    if lib is None or z.device.type != "cpu" or z.dtype != torch.float32 or z.dim() != 2:
        return None
    z = z.contiguous()
    R, V = z.shape
    out = torch.empty((R, 3 * GRID + 1), dtype=torch.float32)

    def run(lo: int, hi: int) -> None:
        buf = torch.empty(V, dtype=torch.float32)
        lib.sweep_sums(z[lo:hi].data_ptr(), hi - lo, V, out[lo:hi].data_ptr(), buf.data_ptr())

    native.parallel(run, R)
    return out
