/* One full-batch step of Algorithm 1, fused into one pass over the samples (moesim.engines.fused).
 *
 * For every sample i and run s: router logits h = Theta_s^T x_sum_i, noisy top-1 routing
 * m = argmax(h + r), the gate, the routed expert's output
 *     f = sum_j a_j sum_p sigma(<w_mj, x_i^(p)> + b_mj),   sigma(z) = z^q,
 * the margin y * gate * f, the loss and its derivative, and the sample's share of the gradients
 *     dL/dw_mj   += df * a_j * q z^(q-1) x^(p),   dL/dTheta += x_sum (dL/dh)^T.
 * A sample is read once and every run uses it while it is in cache; nothing is gathered, sorted
 * or padded. This is the arithmetic of moesim.engines.eager.moe_step / single_step (tested equal to them).
 *
 * Gradients are accumulated per chunk of samples (chunk boundaries depend on n only, never on
 * the number of threads) and then summed over the chunks in chunk order, so a result does not
 * depend on how many threads ran it. Threads take whole chunks. moesim_fused_forward is the
 * forward pass alone (evaluation): the routed layer, or every expert on every sample.
 *
 * Written with GCC vector extensions (8 floats; AVX2 + FMA where -march=native has them): the
 * inner loops keep 4 patches x 16 filters of pre-activations in registers.
 *
 * One file of about 550 lines, on purpose: moesim.engines.fused compiles this single translation
 * unit on first use with no build system, and the step and the forward pass share the static
 * inline register-blocked kernels, which the compiler must see together to inline them.
 *
 * Layouts (all float32, C-contiguous):
 *   x (n, d, P): the samples patch-minor (the P values of one coordinate side by side);
 *   xs (n, d) = sum_p x^(p); y (n,); noise (S, n, M);
 *   theta (S, d, Mp): the router, M padded to Mp (a multiple of 8, at most MAX_EXPERTS) with zeros;
 *   w (S, M, d, Jp): filters transposed, J padded to Jp (a multiple of 16) with zero filters;
 *   bias (S, M, Jp) or NULL; a (Jp,) with zeros on padding filters.
 *   Linear experts (q = 1): f_m = <u_m, x_sum> + c_m with u_m = sum_j a_j w_mj, c_m = P <b_m, a>;
 *   w is then u (S, d, Mp) and bias c (S, Mp), and the gradients are those of u and c.
 *   Outputs: margin, loss (S, n); expert (S, n) int64;
 *   gw (C, S, M, d, Jp), gb (C, S, M, Jp) or NULL, gth (C, S, d, Mp) or NULL: per-chunk sums,
 *   and gw_out, gb_out, gth_out: their sums over the chunks (in chunk order), the gradients.
 */
#include <math.h>
#ifdef __AVX__
#include <immintrin.h>
#endif
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8 load8(const float *p) { return *(const v8u *)p; }
static inline void store8(float *p, v8 v) { *(v8u *)p = v; }
static inline v8 bcast(float v) { return (v8){v, v, v, v, v, v, v, v}; }
static inline v8 sel(v8i mask, v8 a, v8 b) { return (v8)(((v8i)a & mask) | ((v8i)b & ~mask)); }  /* mask ? a : b */
static inline float hsum8(v8 v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }
static inline float hmax8(v8 v) {
    float m = v[0];
    for (int l = 1; l < 8; l++) m = v[l] > m ? v[l] : m;
    return m;
}

/* exp of 8 lanes (Cephes expf polynomial after reduction by ln 2; relative error ~2e-7 like
 * libm's expf); lanes below -87.3 (including -inf) give 0. */
static inline v8 exp8(v8 x) {
    const v8 lo = bcast(-87.3365447f), hi = bcast(88.3762626f);
    v8i under = x < lo;
    x = sel(under, lo, x);
    x = sel(x > hi, hi, x);
    v8 t = x * bcast(1.44269504088896341f) + bcast(0.5f);
    v8 n = __builtin_convertvector(__builtin_convertvector(t, v8i), v8);
    n = sel(n > t, n - bcast(1.0f), n);  /* floor */
    v8 r = x - n * bcast(0.693359375f) - n * bcast(-2.12194440e-4f);
    v8 p = bcast(1.9875691500e-4f);
    p = p * r + bcast(1.3981999507e-3f);
    p = p * r + bcast(8.3334519073e-3f);
    p = p * r + bcast(4.1665795894e-2f);
    p = p * r + bcast(1.6666665459e-1f);
    p = p * r + bcast(5.0000001201e-1f);
    p = p * r * r + r + bcast(1.0f);
    v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
    v8 res = p * (v8)e;
    return (v8)((v8i)res & ~under);
}

#define MAX_EXPERTS 64

/* The integers of cfg.gate and cfg.loss: moesim/engines/fused.py reads these two lines (C_ENUMS). */
enum { GATE_SOFTMAX = 0, GATE_NOISY_LOGIT = 1, GATE_NOISY_SOFTMAX = 2 };
enum { LOSS_LOGISTIC = 0, LOSS_DOUBLE_SOFTMAX = 1 };

typedef struct {
    const float *x, *xs, *y, *noise, *theta, *w, *bias, *a;
    float *margin, *loss, *gw, *gb, *gth, *gw_out, *gb_out, *gth_out, *f_out, *gate_out;
    int64_t *expert;
    int64_t n, P, d, Jp, M, Mp, S, C, q;
    int64_t gate, loss_kind, router, dense;
    int64_t nthreads, tid;
} Job;

/* torch.nn.functional.softplus (beta = 1, threshold = 20) */
static inline float softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }
static inline float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

/* One register block of the routed expert, forward: filters jc..jc+15 of one expert (w: d x Jp)
 * on NP patches starting at xp. Leaves z^(q-1) in zq1[p][.] (sigma'(z) / q) and adds
 * a_j sigma(z) to the lanes of *f. */
static inline __attribute__((always_inline)) void fwd_block(const int NP, const float *restrict xp,
                                                            const float *restrict w, const float *restrict bias,
                                                            const float *restrict a, float *restrict zq1, v8 *f,
                                                            int64_t d, int64_t Jp, int64_t q, int64_t P) {
    v8 acc0[4], acc1[4];
    v8 b0 = bias ? load8(bias) : bcast(0.0f), b1 = bias ? load8(bias + 8) : bcast(0.0f);
    for (int p = 0; p < NP; p++) { acc0[p] = b0; acc1[p] = b1; }
    for (int64_t k = 0; k < d; k++) {
        v8 w0 = load8(w + k * Jp), w1 = load8(w + k * Jp + 8);
        __asm__("" : "+x"(w0), "+x"(w1));  /* keep w in registers: folding its load into each FMA made the loop load-bound */
        for (int p = 0; p < NP; p++) {
            v8 xv = bcast(xp[k * P + p]);
            acc0[p] += xv * w0;
            acc1[p] += xv * w1;
        }
    }
    v8 a0 = load8(a), a1 = load8(a + 8), f0 = bcast(0.0f), f1 = bcast(0.0f);
    for (int p = 0; p < NP; p++) {
        v8 t0 = acc0[p], t1 = acc1[p];
        for (int64_t e = 2; e < q; e++) { t0 *= acc0[p]; t1 *= acc1[p]; }  /* z^(q-1) */
        store8(zq1 + p * Jp, t0);
        store8(zq1 + p * Jp + 8, t1);
        f0 += a0 * (t0 * acc0[p]);
        f1 += a1 * (t1 * acc1[p]);
    }
    *f += f0 + f1;
}

/* The same block, backward: c[p][j] = coef a_j z^(q-1); g[k][.] += sum_p x^(p)_k c[p][.], gb += sum_p c[p]. */
static inline __attribute__((always_inline)) void bwd_block(const int NP, const float *restrict xp,
                                                            const float *restrict zq1, const float *restrict a,
                                                            float coef, float *restrict g, float *restrict gb,
                                                            int64_t d, int64_t Jp, int64_t P) {
    v8 c0[4], c1[4];
    v8 a0 = load8(a) * bcast(coef), a1 = load8(a + 8) * bcast(coef);
    for (int p = 0; p < NP; p++) { c0[p] = a0 * load8(zq1 + p * Jp); c1[p] = a1 * load8(zq1 + p * Jp + 8); }
    if (gb) {
        v8 s0 = load8(gb), s1 = load8(gb + 8);
        for (int p = 0; p < NP; p++) { s0 += c0[p]; s1 += c1[p]; }
        store8(gb, s0);
        store8(gb + 8, s1);
    }
    for (int64_t k = 0; k < d; k++) {
        v8 s0 = load8(g + k * Jp), s1 = load8(g + k * Jp + 8);
        for (int p = 0; p < NP; p++) {
            v8 xv = bcast(xp[k * P + p]);
            s0 += xv * c0[p];
            s1 += xv * c1[p];
        }
        store8(g + k * Jp, s0);
        store8(g + k * Jp + 8, s1);
    }
}

/* Out-of-line copies for 4 patches and for 1: each gets its own register allocation (inlined into
 * the big per-sample loop, the loop counter was spilled to memory). */
static __attribute__((noinline)) void fwd_block4(const float *restrict xp, const float *restrict w,
                                                 const float *restrict bias, const float *restrict a,
                                                 float *restrict zq1, v8 *f, int64_t d, int64_t Jp, int64_t q,
                                                 int64_t P) {
    fwd_block(4, xp, w, bias, a, zq1, f, d, Jp, q, P);
}
static __attribute__((noinline)) void fwd_block1(const float *restrict xp, const float *restrict w,
                                                 const float *restrict bias, const float *restrict a,
                                                 float *restrict zq1, v8 *f, int64_t d, int64_t Jp, int64_t q,
                                                 int64_t P) {
    fwd_block(1, xp, w, bias, a, zq1, f, d, Jp, q, P);
}
static __attribute__((noinline)) void bwd_block4(const float *restrict xp, const float *restrict zq1,
                                                 const float *restrict a, float coef, float *restrict g,
                                                 float *restrict gb, int64_t d, int64_t Jp, int64_t P) {
    bwd_block(4, xp, zq1, a, coef, g, gb, d, Jp, P);
}
static __attribute__((noinline)) void bwd_block1(const float *restrict xp, const float *restrict zq1,
                                                 const float *restrict a, float coef, float *restrict g,
                                                 float *restrict gb, int64_t d, int64_t Jp, int64_t P) {
    bwd_block(1, xp, zq1, a, coef, g, gb, d, Jp, P);
}

/* f of one sample through one expert; leaves sigma'(z)/q = z^(q-1) in zq1 (P x Jp). */
static float expert_forward(const Job *jb, const float *restrict xi, const float *restrict w,
                            const float *restrict bias, float *restrict zq1) {
    const int64_t P = jb->P, d = jb->d, Jp = jb->Jp, q = jb->q;
    v8 f = bcast(0.0f);
    int64_t p0 = 0;
    for (; p0 + 4 <= P; p0 += 4)
        for (int64_t jc = 0; jc < Jp; jc += 16)
            fwd_block4(xi + p0, w + jc, bias ? bias + jc : NULL, jb->a + jc, zq1 + p0 * Jp + jc, &f, d, Jp, q, P);
    for (; p0 < P; p0++)
        for (int64_t jc = 0; jc < Jp; jc += 16)
            fwd_block1(xi + p0, w + jc, bias ? bias + jc : NULL, jb->a + jc, zq1 + p0 * Jp + jc, &f, d, Jp, q, P);
    return ((f[0] + f[1]) + (f[2] + f[3])) + ((f[4] + f[5]) + (f[6] + f[7]));
}

/* gw (d x Jp) += coef a_j z^(q-1) x^(p) summed over p; gb (Jp) += coef a_j z^(q-1) summed over p. */
static void expert_backward(const Job *jb, const float *restrict xi, float coef, const float *restrict zq1,
                            float *restrict gw, float *restrict gb) {
    const int64_t P = jb->P, d = jb->d, Jp = jb->Jp;
    int64_t p0 = 0;
    for (; p0 + 4 <= P; p0 += 4)
        for (int64_t jc = 0; jc < Jp; jc += 16)
            bwd_block4(xi + p0, zq1 + p0 * Jp + jc, jb->a + jc, coef, gw + jc, gb ? gb + jc : NULL, d, Jp, P);
    for (; p0 < P; p0++)
        for (int64_t jc = 0; jc < Jp; jc += 16)
            bwd_block1(xi + p0, zq1 + p0 * Jp + jc, jb->a + jc, coef, gw + jc, gb ? gb + jc : NULL, d, Jp, P);
}

/* torch.argmax of v (Mp lanes, padding lanes -inf): the first maximum, a NaN counting as maximal. */
static inline int64_t argmax_first(const float *restrict v, int64_t Mp) {
#ifdef __AVX__
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (int64_t b = 0; b < Mp; b += 8) {
        const __m256 x = _mm256_loadu_ps(v + b);
        const int nan = _mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        if (__builtin_expect(nan != 0, 0)) return b + __builtin_ctz(nan);
        mx = _mm256_max_ps(mx, x);
    }
    mx = _mm256_max_ps(mx, _mm256_permute2f128_ps(mx, mx, 1));
    mx = _mm256_max_ps(mx, _mm256_permute_ps(mx, 0x4E));
    mx = _mm256_max_ps(mx, _mm256_permute_ps(mx, 0xB1));
    for (int64_t b = 0; b < Mp; b += 8) {
        const int eq = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v + b), mx, _CMP_EQ_OQ));
        if (eq) return b + __builtin_ctz(eq);
    }
    return 0;
#else
    float best = v[0];
    int64_t m = 0;
    for (int64_t e = 1; e < Mp; e++) {
        const int take = !isnan(best) & ((v[e] > best) | isnan(v[e]));
        best = take ? v[e] : best;
        m = take ? e : m;
    }
    return m;
#endif
}

/* Samples are taken SAMPLE_BLOCK at a time, each phase (routing, expert forward, loss, backward)
 * over the whole block: the samples' dependency chains are independent, so the CPU overlaps them. */
#define SAMPLE_BLOCK 8

/* Router logits of a block of nb samples: h[u][e] = sum_k xs[u][k] theta[k][e] (theta: d x Mp).
 * One accumulator per sample: nb independent chains, theta's row loaded once for all of them. */
static __attribute__((noinline)) void router_fwd(const float *restrict xs, int64_t nb, const float *restrict th,
                                                 float (*restrict h)[MAX_EXPERTS], int64_t d, int64_t Mp) {
    for (int64_t b = 0; b < Mp; b += 8) {
        if (nb == SAMPLE_BLOCK) {
            v8 acc[SAMPLE_BLOCK];
            for (int u = 0; u < SAMPLE_BLOCK; u++) acc[u] = bcast(0.0f);
            for (int64_t k = 0; k < d; k++) {
                v8 t = load8(th + k * Mp + b);
                __asm__("" : "+x"(t));
                for (int u = 0; u < SAMPLE_BLOCK; u++) acc[u] += bcast(xs[u * d + k]) * t;
            }
            for (int u = 0; u < SAMPLE_BLOCK; u++) store8(h[u] + b, acc[u]);
        } else {
            for (int64_t u = 0; u < nb; u++) {
                v8 acc = bcast(0.0f);
                for (int64_t k = 0; k < d; k++) acc += bcast(xs[u * d + k]) * load8(th + k * Mp + b);
                store8(h[u] + b, acc);
            }
        }
    }
}

/* gth (d x Mp) += sum_u xs[u] dh[u]^T over a block of nb samples. */
static __attribute__((noinline)) void router_bwd(const float *restrict xs, int64_t nb,
                                                 float (*restrict dh)[MAX_EXPERTS], float *restrict gt,
                                                 int64_t d, int64_t Mp) {
    for (int64_t b = 0; b < Mp; b += 8) {
        if (nb == SAMPLE_BLOCK) {
            v8 g[SAMPLE_BLOCK];
            for (int u = 0; u < SAMPLE_BLOCK; u++) g[u] = load8(dh[u] + b);
            for (int64_t k = 0; k < d; k++) {
                v8 s0 = load8(gt + k * Mp + b), s1 = bcast(0.0f);
                for (int u = 0; u < SAMPLE_BLOCK; u += 2) {
                    s0 += bcast(xs[u * d + k]) * g[u];
                    s1 += bcast(xs[(u + 1) * d + k]) * g[u + 1];
                }
                store8(gt + k * Mp + b, s0 + s1);
            }
        } else {
            for (int64_t u = 0; u < nb; u++) {
                v8 g = load8(dh[u] + b);
                for (int64_t k = 0; k < d; k++) store8(gt + k * Mp + b, load8(gt + k * Mp + b) + bcast(xs[u * d + k]) * g);
            }
        }
    }
}


/* Routing of samples ib..ib+nb-1 in run s: router logits (left in h), noisy top-1 choice m and
 * gate; for the softmax gates pr holds the probabilities. Without a router: m = 0, gate = 1.
 * A NULL noise means no noise (evaluation). */
static void route_block(const Job *jb, int64_t s, int64_t ib, int64_t nb, float (*h)[MAX_EXPERTS],
                        float (*pr)[MAX_EXPERTS], int64_t *m, float *gate) {
    static const float no_noise[MAX_EXPERTS];
    const int64_t n = jb->n, d = jb->d, M = jb->M, Mp = jb->Mp;
    if (jb->router) router_fwd(jb->xs + ib * d, nb, jb->theta + s * d * Mp, h, d, Mp);
    for (int64_t u = 0; u < nb; u++) {
        m[u] = 0;
        gate[u] = 1.0f;
        if (!jb->router) continue;
        const int64_t i = ib + u;
        const float *r = jb->noise ? jb->noise + (s * n + i) * M : no_noise;
        float *hu = h[u], *pu = pr[u];
        /* noisy top-1 */
        float *nz = pr[u];
        for (int64_t e = 0; e < M; e++) nz[e] = hu[e] + r[e];
        for (int64_t e = M; e < Mp; e++) nz[e] = -INFINITY;
        const int64_t mu = argmax_first(nz, Mp);
        const float best = nz[mu];
        m[u] = mu;
        if (jb->gate == GATE_NOISY_LOGIT) {
            gate[u] = best;
        } else {  /* softmax of h (paper) or of h + r, over M lanes; padding lanes -inf */
            const float *src = jb->gate == GATE_SOFTMAX ? hu : nz;
            v8 mx = bcast(-INFINITY), tot = bcast(0.0f);
            if (src == hu) for (int64_t e = M; e < Mp; e++) hu[e] = -INFINITY;
            for (int64_t b = 0; b < Mp; b += 8) { v8 v = load8(src + b); mx = sel(v > mx, v, mx); }
            const v8 mxv = bcast(hmax8(mx));
            for (int64_t b = 0; b < Mp; b += 8) {
                v8 ev = exp8(load8(src + b) - mxv);
                store8(pu + b, ev);
                tot += ev;
            }
            const v8 inv = bcast(1.0f / hsum8(tot));
            for (int64_t b = 0; b < Mp; b += 8) store8(pu + b, load8(pu + b) * inv);
            gate[u] = pu[mu];
        }
    }
}

/* Sizes of one chunk's expert-gradient sums: (S, M, d, Jp) and (S, M, Jp); for linear experts
 * (q = 1) the gradients of u (S, d, Mp) and of its bias (S, Mp). */
static int64_t wsize(const Job *jb) { return jb->q == 1 ? jb->S * jb->d * jb->Mp : jb->S * jb->M * jb->d * jb->Jp; }
static int64_t bsize(const Job *jb) { return jb->q == 1 ? jb->S * jb->Mp : jb->S * jb->M * jb->Jp; }

/* Linear experts: every expert's f = <u_m, x_sum> + c_m for a block of samples (one router-like pass). */
static void linear_outputs(const Job *jb, int64_t s, int64_t ib, int64_t nb, float (*fl)[MAX_EXPERTS]) {
    const int64_t d = jb->d, Mp = jb->Mp;
    router_fwd(jb->xs + ib * d, nb, jb->w + s * d * Mp, fl, d, Mp);
    if (jb->bias)
        for (int64_t u = 0; u < nb; u++)
            for (int64_t e = 0; e < Mp; e++) fl[u][e] += jb->bias[s * Mp + e];
}

static void run_chunk(const Job *jb, int64_t chunk, float *scratch) {
    const int64_t n = jb->n, P = jb->P, d = jb->d, Jp = jb->Jp, M = jb->M, Mp = jb->Mp, S = jb->S, C = jb->C;
    const int64_t i0 = chunk * n / C, i1 = (chunk + 1) * n / C;
    const int64_t wsz = wsize(jb), bsz = bsize(jb), tsz = S * d * Mp;
    const int linear = jb->q == 1;
    float *gw = jb->gw + chunk * wsz;
    float *gb = jb->gb ? jb->gb + chunk * bsz : NULL;
    float *gth = jb->gth ? jb->gth + chunk * tsz : NULL;
    memset(gw, 0, sizeof(float) * wsz);
    if (gb) memset(gb, 0, sizeof(float) * bsz);
    if (gth) memset(gth, 0, sizeof(float) * tsz);
    float *zq1 = scratch;  /* SAMPLE_BLOCK x P x Jp */
    float h[SAMPLE_BLOCK][MAX_EXPERTS] __attribute__((aligned(32)));
    float pr[SAMPLE_BLOCK][MAX_EXPERTS] __attribute__((aligned(32)));
    float fl[SAMPLE_BLOCK][MAX_EXPERTS] __attribute__((aligned(32)));
    float gate[SAMPLE_BLOCK], f[SAMPLE_BLOCK], dm[SAMPLE_BLOCK];
    int64_t m[SAMPLE_BLOCK];
    const float qf = (float)jb->q;
    for (int64_t ib = i0; ib < i1; ib += SAMPLE_BLOCK) {
        const int64_t nb = i1 - ib < SAMPLE_BLOCK ? i1 - ib : SAMPLE_BLOCK;
        for (int64_t s = 0; s < S; s++) {
            /* routing: logits, noisy top-1, gate */
            route_block(jb, s, ib, nb, h, pr, m, gate);
            /* the routed expert's output */
            if (linear) {
                linear_outputs(jb, s, ib, nb, fl);
                for (int64_t u = 0; u < nb; u++) f[u] = fl[u][m[u]];
            } else {
                for (int64_t u = 0; u < nb; u++) {
                    const float *w = jb->w + (s * M + m[u]) * d * Jp;
                    const float *bias = jb->bias ? jb->bias + (s * M + m[u]) * Jp : NULL;
                    f[u] = expert_forward(jb, jb->x + (ib + u) * P * d, w, bias, zq1 + u * P * Jp);
                }
            }
            /* margin, loss and dL/dmargin */
            for (int64_t u = 0; u < nb; u++) {
                const int64_t i = ib + u;
                const float mg = jb->y[i] * gate[u] * f[u];
                float l, dl;
                if (jb->loss_kind == LOSS_LOGISTIC) {
                    l = softplus(-mg);
                    dl = -sigmoid(-mg);
                } else {
                    const float t = tanhf(mg / 2.0f);
                    l = softplus(-t);
                    dl = -sigmoid(-t) * (1.0f - t * t) / 2.0f;
                }
                jb->margin[s * n + i] = mg;
                jb->loss[s * n + i] = l;
                jb->expert[s * n + i] = m[u];
                dm[u] = dl / (float)n;
            }
            /* gradients */
            if (linear) {  /* dL/du_m += df x_sum, dL/dc_m += df: a router-like update with df at m */
                for (int64_t u = 0; u < nb; u++) {
                    const float df = dm[u] * jb->y[ib + u] * gate[u];
                    for (int64_t e = 0; e < Mp; e++) fl[u][e] = 0.0f;
                    fl[u][m[u]] = df;
                    if (gb) gb[s * Mp + m[u]] += df;
                }
                router_bwd(jb->xs + ib * d, nb, fl, gw + s * d * Mp, d, Mp);
            } else {
                for (int64_t u = 0; u < nb; u++) {
                    const int64_t i = ib + u;
                    expert_backward(jb, jb->x + i * P * d, dm[u] * jb->y[i] * gate[u] * qf, zq1 + u * P * Jp,
                                    gw + (s * M + m[u]) * d * Jp, gb ? gb + (s * M + m[u]) * Jp : NULL);
                }
            }
            if (!jb->router) continue;
            for (int64_t u = 0; u < nb; u++) {
                const float dgate = dm[u] * jb->y[ib + u] * f[u];
                float *dh = h[u];  /* h[u] now holds dL/dh */
                for (int64_t e = 0; e < Mp; e++) dh[e] = 0.0f;
                if (jb->gate == GATE_NOISY_LOGIT) {
                    dh[m[u]] = dgate;
                } else {
                    for (int64_t e = 0; e < M; e++) dh[e] = dgate * gate[u] * ((e == m[u] ? 1.0f : 0.0f) - pr[u][e]);
                }
            }
            router_bwd(jb->xs + ib * d, nb, h, gth + s * d * Mp, d, Mp);
        }
    }
}

/* Forward only, samples i0..i1-1: the routed expert's f, the gate and the expert (f_out, gate_out,
 * expert: (S, n)), or with dense every expert's f (f_out: (S, M, n)). */
static void forward_range(const Job *jb, int64_t i0, int64_t i1, float *zq1) {
    const int64_t n = jb->n, P = jb->P, d = jb->d, Jp = jb->Jp, M = jb->M, S = jb->S;
    float h[SAMPLE_BLOCK][MAX_EXPERTS] __attribute__((aligned(32)));
    float pr[SAMPLE_BLOCK][MAX_EXPERTS] __attribute__((aligned(32)));
    float fl[SAMPLE_BLOCK][MAX_EXPERTS] __attribute__((aligned(32)));
    float gate[SAMPLE_BLOCK];
    int64_t m[SAMPLE_BLOCK];
    for (int64_t ib = i0; ib < i1; ib += SAMPLE_BLOCK) {
        const int64_t nb = i1 - ib < SAMPLE_BLOCK ? i1 - ib : SAMPLE_BLOCK;
        for (int64_t s = 0; s < S; s++) {
            if (jb->q == 1) linear_outputs(jb, s, ib, nb, fl);
            if (jb->dense) {
                for (int64_t e = 0; e < M; e++)
                    for (int64_t u = 0; u < nb; u++)
                        jb->f_out[(s * M + e) * n + ib + u] = jb->q == 1 ? fl[u][e] : expert_forward(
                            jb, jb->x + (ib + u) * P * d, jb->w + (s * M + e) * d * Jp,
                            jb->bias ? jb->bias + (s * M + e) * Jp : NULL, zq1);
                continue;
            }
            route_block(jb, s, ib, nb, h, pr, m, gate);
            for (int64_t u = 0; u < nb; u++) {
                const int64_t i = ib + u;
                jb->f_out[s * n + i] = jb->q == 1 ? fl[u][m[u]] : expert_forward(
                    jb, jb->x + i * P * d, jb->w + (s * M + m[u]) * d * Jp,
                    jb->bias ? jb->bias + (s * M + m[u]) * Jp : NULL, zq1);
                jb->gate_out[s * n + i] = gate[u];
                jb->expert[s * n + i] = m[u];
            }
        }
    }
}

static void *forward_worker(void *arg) {
    const Job *jb = (const Job *)arg;
    float *scratch = malloc(sizeof(float) * jb->P * jb->Jp);
    if (!scratch) return (void *)1;
    forward_range(jb, jb->tid * jb->n / jb->nthreads, (jb->tid + 1) * jb->n / jb->nthreads, scratch);
    free(scratch);
    return NULL;
}

static void *worker(void *arg) {
    const Job *jb = (const Job *)arg;
    float *scratch = malloc(sizeof(float) * SAMPLE_BLOCK * jb->P * jb->Jp);
    if (!scratch) return (void *)1;
    for (int64_t chunk = jb->tid; chunk < jb->C; chunk += jb->nthreads) run_chunk(jb, chunk, scratch);
    free(scratch);
    return NULL;
}

/* out[e] = sum over chunks c = 0, 1, ..., C-1 of part[c][e], in that order, for this thread's share of e. */
static void reduce_share(const float *part, float *out, int64_t size, int64_t C, int64_t tid, int64_t nthreads) {
    const int64_t e0 = tid * size / nthreads, e1 = (tid + 1) * size / nthreads;
    for (int64_t e = e0; e < e1; e++) out[e] = part[e];
    for (int64_t c = 1; c < C; c++)
        for (int64_t e = e0; e < e1; e++) out[e] += part[c * size + e];
}

static void *reducer(void *arg) {
    const Job *jb = (const Job *)arg;
    const int64_t S = jb->S, M = jb->M, d = jb->d, Jp = jb->Jp, C = jb->C, T = jb->nthreads, t = jb->tid;
    reduce_share(jb->gw, jb->gw_out, wsize(jb), C, t, T);
    if (jb->gb) reduce_share(jb->gb, jb->gb_out, bsize(jb), C, t, T);
    if (jb->gth) reduce_share(jb->gth, jb->gth_out, S * d * jb->Mp, C, t, T);
    return NULL;
}

/* Run fn(&jobs[t]) for t = 0..nthreads-1, t = 0 on this thread; returns nonzero if any failed. */
static int run_threads(void *(*fn)(void *), Job *jobs, int64_t nthreads) {
    pthread_t th[64];
    int status = 0;
    int64_t started = 1;
    for (int64_t t = 1; t < nthreads; t++, started++)
        if (pthread_create(&th[t], NULL, fn, &jobs[t]) != 0) break;
    for (int64_t t = started; t < nthreads; t++)  /* threads that could not start: run their share here */
        if (fn(&jobs[t])) status = 1;
    if (fn(&jobs[0])) status = 1;
    for (int64_t t = 1; t < started; t++) {
        void *ret;
        pthread_join(th[t], &ret);
        if (ret) status = 1;
    }
    return status;
}

/* Returns 0 on success, 1 when memory could not be had. */
int moesim_fused_step(const float *x, const float *xs, const float *y, const float *noise, const float *theta,
                      const float *w, const float *bias, const float *a, float *margin, float *loss,
                      int64_t *expert, float *gw, float *gb, float *gth, float *gw_out, float *gb_out,
                      float *gth_out, int64_t n, int64_t P, int64_t d, int64_t Jp, int64_t M, int64_t Mp,
                      int64_t S, int64_t C, int64_t q, int64_t gate, int64_t loss_kind, int64_t router,
                      int64_t nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 64) nthreads = 64;
    Job jobs[64];
    const int64_t T = nthreads < C ? nthreads : C;
    for (int64_t t = 0; t < nthreads; t++) {
        jobs[t] = (Job){x, xs, y, noise, theta, w, bias, a, margin, loss, gw, gb, gth, gw_out, gb_out, gth_out,
                        NULL, NULL, expert, n, P, d, Jp, M, Mp, S, C, q, gate, loss_kind, router, 0, T, t};
    }
    if (run_threads(worker, jobs, T)) return 1;
    for (int64_t t = 0; t < nthreads; t++) jobs[t].nthreads = nthreads;
    return run_threads(reducer, jobs, nthreads);
}

/* Forward pass only (evaluation): see forward_range. Returns 0 on success, 1 when memory could not be had. */
int moesim_fused_forward(const float *x, const float *xs, const float *noise, const float *theta, const float *w,
                         const float *bias, const float *a, float *f_out, float *gate_out, int64_t *expert, int64_t n,
                         int64_t P, int64_t d, int64_t Jp, int64_t M, int64_t Mp, int64_t S, int64_t q, int64_t gate,
                         int64_t router, int64_t dense, int64_t nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 64) nthreads = 64;
    if (nthreads > n) nthreads = n > 0 ? n : 1;
    Job jobs[64];
    for (int64_t t = 0; t < nthreads; t++) {
        jobs[t] = (Job){x, xs, NULL, noise, theta, w, bias, a, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                        f_out, gate_out, expert, n, P, d, Jp, M, Mp, S, 1, q, gate, 0, router, dense, nthreads, t};
    }
    return run_threads(forward_worker, jobs, nthreads);
}
