//! The semantic window scan's first pass: chunk vectors as 8-bit codes with a per-chunk scale, and
//! a bound on how far a cosine computed from the codes can be from the exact one.
//!
//! The exact scan reads every stored f32 vector for every embedded post, and it was the largest
//! cost of semantic linking once the encoder was fast (two thirds of the static encoder's linking
//! time on the dev mix, `benches/README.md`). Codes are a quarter of the bytes and their dot product
//! is integer arithmetic, which vectorizes well and gives the same result on every processor (no
//! rounding order to differ). The scan estimates every candidate from the codes, keeps only those
//! whose estimate plus its error bound can still reach the top k, and computes those exactly
//! ([`crate::link::semantic::SemanticIndex::nearest`]): the result is the exact scan's, not an
//! approximation of it.
//!
//! The bound: with `a' = scale_a × codes_a` and `r_a = ‖a − a'‖`,
//! `|a·b − a'·b'| ≤ |(a − a')·b| + |a'·(b − b')| ≤ r_a‖b‖ + (‖a‖ + r_a) r_b`, and a max or mean of
//! estimates is off by at most the max or mean of their bounds. `ROUNDING_SLACK` covers the f32
//! rounding of both sides.

/// Added to every bound for the f32 rounding of the exact and the estimated dot products (each is
/// off by about `dimension × ε ≈ 10⁻⁵` for unit vectors).
const ROUNDING_SLACK: f32 = 1e-4;

/// The largest code: codes are symmetric, in `-127..=127`.
const CODE_MAX: f32 = 127.0;

/// One vector's codes and what the bound needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CodeScale {
    /// The value of code 1.
    pub scale: f32,
    /// `‖v − scale × codes‖`.
    pub residual: f32,
    /// `‖v‖`.
    pub norm: f32,
}

/// Quantizes `vector` into `codes` (appended) and returns its scale, residual and norm.
pub fn quantize_into(vector: &[f32], codes: &mut Vec<i8>) -> CodeScale {
    let largest = vector.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = largest / CODE_MAX;
    let (mut residual, mut norm) = (0.0f32, 0.0f32);
    for &value in vector {
        let code = if scale > 0.0 { (value / scale).round().clamp(-CODE_MAX, CODE_MAX) } else { 0.0 };
        codes.push(code as i8);
        let error = value - code * scale;
        residual += error * error;
        norm += value * value;
    }
    CodeScale { scale, residual: residual.sqrt(), norm: norm.sqrt() }
}

/// The integer dot product of two equally long code vectors.
pub fn dot_codes(a: &[i8], b: &[i8]) -> i32 {
    let mut out = Vec::with_capacity(1);
    dots_with_each(a, b, &mut out);
    out[0]
}

/// The integer dot product of `query` with each `query.len()`-long vector of `codes`, in order,
/// into `out` (cleared first). One call per scan keeps the loop tight and the processor check out of it.
pub fn dots_with_each(query: &[i8], codes: &[i8], out: &mut Vec<i32>) {
    out.clear();
    if query.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2, checked just above.
        return unsafe { dots_with_each_avx2(query, codes, out) };
    }
    dots_with_each_portable(query, codes, out)
}

/// The same loop compiled for AVX2: 32 codes per instruction instead of the baseline's 16. Integer
/// sums are exact, so both give the same result.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_with_each_avx2(query: &[i8], codes: &[i8], out: &mut Vec<i32>) {
    dots_with_each_portable(query, codes, out)
}

// Plain loops, not `extend` over a `map`: the iterator adapters' generic folds are not inlined into
// the AVX2 function, and outside it they compile for the baseline (measured: 1.8x slower).
#[inline(always)]
fn dots_with_each_portable(query: &[i8], codes: &[i8], out: &mut Vec<i32>) {
    out.reserve(codes.len() / query.len());
    for vector in codes.chunks_exact(query.len()) {
        out.push(dot_codes_portable(query, vector));
    }
}

#[inline(always)]
fn dot_codes_portable(a: &[i8], b: &[i8]) -> i32 {
    // 127² × 2¹⁷ < 2³¹: no overflow below 131,072 dimensions, so the wrapping add (which builds with
    // overflow checks still vectorize) never wraps.
    let mut sum = 0i32;
    for (&x, &y) in a.iter().zip(b) {
        sum = sum.wrapping_add(i32::from(x) * i32::from(y));
    }
    sum
}

/// The estimated dot product of two quantized vectors from their codes' dot product.
pub fn estimate(a: CodeScale, b: CodeScale, dot: i32) -> f32 {
    a.scale * b.scale * dot as f32
}

/// The bound on `|a·b − estimate|` for vectors quantized with these scales.
pub fn error_bound(a: CodeScale, b: CodeScale) -> f32 {
    a.residual * b.norm + (a.norm + a.residual) * b.residual + ROUNDING_SLACK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dimension: usize) -> Vec<f32> {
        let values: Vec<f32> = (0..dimension as u64)
            .map(|i| {
                (xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        values.iter().map(|v| v / norm).collect()
    }

    #[test]
    fn codes_reproduce_the_vector_within_its_residual() {
        let vector = unit(1, 256);
        let mut codes = Vec::new();
        let scale = quantize_into(&vector, &mut codes);
        assert_eq!(codes.len(), 256);
        assert!((scale.norm - 1.0).abs() < 1e-5);
        let largest = codes.iter().map(|c| c.unsigned_abs()).max().unwrap();
        assert_eq!(largest, 127, "the largest component takes the largest code");
        let residual: f32 =
            vector.iter().zip(&codes).map(|(v, &c)| (v - scale.scale * f32::from(c)).powi(2)).sum::<f32>().sqrt();
        assert!((residual - scale.residual).abs() < 1e-6);
        assert!(scale.residual < 0.02, "residual {}", scale.residual);
    }

    #[test]
    fn the_estimate_is_within_its_bound_and_close() {
        let mut worst_ratio = 0.0f32;
        for seed in 0..200 {
            let (a, b) = (unit(seed, 384), unit(seed + 1000, 384));
            // Half the pairs close together, as paraphrases are.
            let b: Vec<f32> = if seed % 2 == 0 { a.iter().zip(&b).map(|(x, y)| x + 0.1 * y).collect() } else { b };
            let norm = b.iter().map(|v| v * v).sum::<f32>().sqrt();
            let b: Vec<f32> = b.iter().map(|v| v / norm).collect();
            let (mut a_codes, mut b_codes) = (Vec::new(), Vec::new());
            let (sa, sb) = (quantize_into(&a, &mut a_codes), quantize_into(&b, &mut b_codes));
            let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let (estimate, bound) = (estimate(sa, sb, dot_codes(&a_codes, &b_codes)), error_bound(sa, sb));
            assert!((exact - estimate).abs() <= bound, "seed {seed}: {exact} vs {estimate} ± {bound}");
            worst_ratio = worst_ratio.max((exact - estimate).abs() / bound);
        }
        assert!(worst_ratio > 0.0, "the estimates are not exact, so the bound is exercised");
    }

    #[test]
    fn the_dispatched_dot_matches_the_portable_one() {
        let a: Vec<i8> = (0..1000).map(|i| ((i * 37) % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..1000).map(|i| ((i * 91) % 255 - 127) as i8).collect();
        let plain: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
        assert_eq!(dot_codes(&a, &b), plain);
        let mut each = Vec::new();
        dots_with_each(&a[..10], &b[..40], &mut each);
        let expected: Vec<i32> =
            b[..40].chunks(10).map(|v| v.iter().zip(&a[..10]).map(|(&x, &y)| x as i32 * y as i32).sum()).collect();
        assert_eq!(each, expected);
        assert_eq!(
            dot_codes(&a[..7], &b[..7]),
            a[..7].iter().zip(&b[..7]).map(|(&x, &y)| x as i32 * y as i32).sum::<i32>()
        );
    }

    #[test]
    fn a_zero_vector_has_zero_codes_and_no_error() {
        let mut codes = Vec::new();
        let scale = quantize_into(&[0.0; 8], &mut codes);
        assert_eq!(codes, vec![0; 8]);
        assert_eq!((scale.scale, scale.residual, scale.norm), (0.0, 0.0, 0.0));
    }
}
