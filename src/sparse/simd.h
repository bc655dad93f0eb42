/* simd.h — the few vector operations the sparse kernels (forward.c) use: AVX-512F, else AVX2 +
 * FMA, else plain C (whatever -march the build chose). Every lane computes exactly what the
 * scalar code computes (fused multiply-add = fmaf, max(a, b) = a > b ? a : b), so the tile
 * width, the chunk a value sits in and the instruction set never change a result's bits.
 * Masked loads and stores touch only the first n lanes (no read past a run's end). */
#ifndef NEST_SPARSE_SIMD_H
#define NEST_SPARSE_SIMD_H

#include <math.h>
#include <stdint.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define SP_W 16
typedef __m512 vf;
typedef __mmask16 vmask;
static inline vf v_zero(void) { return _mm512_setzero_ps(); }
static inline vf v_set1(float a) { return _mm512_set1_ps(a); }
static inline vf v_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void v_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
static inline vmask v_mask(int n) { return (vmask)(n >= 16 ? 0xffffu : (1u << n) - 1u); }
static inline vmask v_maskbits(uint32_t bits) { return (vmask)bits; } /* lane j: bit j */
static inline vf v_loadm(const float *p, vmask m) { return _mm512_maskz_loadu_ps(m, p); }
static inline void v_storem(float *p, vmask m, vf v) { _mm512_mask_storeu_ps(p, m, v); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf v_max(vf a, vf b) { return _mm512_max_ps(a, b); } /* a > b ? a : b */
/* lanes j with lens[j] > k */
static inline vmask v_lanes_gt(const int32_t *lens, int k) {
  return _mm512_cmpgt_epi32_mask(_mm512_loadu_si512(lens), _mm512_set1_epi32(k));
}
/* lane j: m ? base[idx[j]] : 0 */
static inline vf v_gatherm(const float *base, const int32_t *idx, vmask m) {
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_loadu_si512(idx), base, 4);
}
/* lane j: m ? fma(a, b, c) : c */
static inline vf v_fmam(vf a, vf b, vf c, vmask m) { return _mm512_mask3_fmadd_ps(a, b, c, m); }
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SP_W 8
typedef __m256 vf;
typedef __m256i vmask;
static inline vf v_zero(void) { return _mm256_setzero_ps(); }
static inline vf v_set1(float a) { return _mm256_set1_ps(a); }
static inline vf v_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void v_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline vmask v_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vmask v_maskbits(uint32_t bits) {
  const __m256i b = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits), b), b);
}
static inline vf v_loadm(const float *p, vmask m) { return _mm256_maskload_ps(p, m); }
static inline void v_storem(float *p, vmask m, vf v) { _mm256_maskstore_ps(p, m, v); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf v_max(vf a, vf b) { return _mm256_max_ps(a, b); } /* a > b ? a : b */
static inline vmask v_lanes_gt(const int32_t *lens, int k) {
  return _mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i *)lens), _mm256_set1_epi32(k));
}
static inline vf v_gatherm(const float *base, const int32_t *idx, vmask m) {
  return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base,
                                  _mm256_loadu_si256((const __m256i *)idx), _mm256_castsi256_ps(m),
                                  4);
}
static inline vf v_fmam(vf a, vf b, vf c, vmask m) {
  return _mm256_blendv_ps(c, _mm256_fmadd_ps(a, b, c), _mm256_castsi256_ps(m));
}
#else
#define SP_W 4
typedef struct {
  float v[SP_W];
} vf;
typedef unsigned vmask; /* bit j: lane j */
static inline vf v_zero(void) { return (vf){{0.0f, 0.0f, 0.0f, 0.0f}}; }
static inline vf v_set1(float a) { return (vf){{a, a, a, a}}; }
static inline vf v_load(const float *p) { return (vf){{p[0], p[1], p[2], p[3]}}; }
static inline void v_store(float *p, vf v) {
  for (int j = 0; j < SP_W; ++j) p[j] = v.v[j];
}
static inline vmask v_mask(int n) { return n >= SP_W ? (1u << SP_W) - 1u : (1u << n) - 1u; }
static inline vmask v_maskbits(uint32_t bits) { return bits; }
static inline vf v_loadm(const float *p, vmask m) {
  vf r = v_zero();
  for (int j = 0; j < SP_W; ++j)
    if (m >> j & 1u) r.v[j] = p[j];
  return r;
}
static inline void v_storem(float *p, vmask m, vf v) {
  for (int j = 0; j < SP_W; ++j)
    if (m >> j & 1u) p[j] = v.v[j];
}
static inline vf v_fma(vf a, vf b, vf c) {
  for (int j = 0; j < SP_W; ++j) c.v[j] = fmaf(a.v[j], b.v[j], c.v[j]);
  return c;
}
static inline vf v_add(vf a, vf b) {
  for (int j = 0; j < SP_W; ++j) a.v[j] += b.v[j];
  return a;
}
static inline vf v_max(vf a, vf b) {
  for (int j = 0; j < SP_W; ++j) a.v[j] = a.v[j] > b.v[j] ? a.v[j] : b.v[j];
  return a;
}
static inline vmask v_lanes_gt(const int32_t *lens, int k) {
  vmask m = 0;
  for (int j = 0; j < SP_W; ++j) m |= (vmask)(lens[j] > k) << j;
  return m;
}
static inline vf v_gatherm(const float *base, const int32_t *idx, vmask m) {
  vf r = v_zero();
  for (int j = 0; j < SP_W; ++j)
    if (m >> j & 1u) r.v[j] = base[idx[j]];
  return r;
}
static inline vf v_fmam(vf a, vf b, vf c, vmask m) {
  for (int j = 0; j < SP_W; ++j)
    if (m >> j & 1u) c.v[j] = fmaf(a.v[j], b.v[j], c.v[j]);
  return c;
}
#endif

#endif
