//! CPU twin of kernels/logits.cu: GLIP's dot-product region-word logits and the
//! token → phrase MEAN aggregation of their sigmoids (spec §3.6, §3.9 step 2, §8 items 7, 10).

use super::gemm::{gemm, Mat};
use super::nn::sigmoid;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// F.normalize's eps.
pub const NORMALIZE_EPS: f32 = 1e-12;
/// GLIP's clamp of the dot-product logits (CLAMP_DOT_PRODUCT): the one ±50000 of
/// backend/ops.rs.
pub const LOGIT_CLAMP: f32 = crate::backend::ops::GLIP_CLAMP;

/// The text side of the dot-product head for `rows` token rows of `hidden` [rows, lang_dim]:
/// E = h / max(‖h‖, 1e-12), proj = Linear(E / 2) with `w` [dim, lang_dim], `b` [dim], and
/// tok_bias = E · bias_lang + bias0. The bias uses E, not E/2 (vldyhead.py:772-777).
/// Returns (proj [rows, dim], tok_bias [rows]).
pub fn text_projection(
    hidden: &[f32],
    rows: usize,
    w: &[f32],
    b: &[f32],
    bias_lang: &[f32],
    bias0: f32,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let lang = bias_lang.len();
    let dim = b.len();
    if lang == 0 || hidden.len() != rows * lang || w.len() != dim * lang {
        return Err(Error::shape(
            "text_projection",
            format!(
                "hidden {} for {rows} rows, weight {} for [{dim}, {lang}]",
                hidden.len(),
                w.len()
            ),
        ));
    }
    let mut half = vec![0.0f32; rows * lang];
    let mut tok_bias = vec![0.0f32; rows];
    for r in 0..rows {
        let h = &hidden[r * lang..(r + 1) * lang];
        let norm = h
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
            .max(NORMALIZE_EPS);
        let mut dot = 0.0f32;
        for (k, (&hv, &bl)) in h.iter().zip(bias_lang).enumerate() {
            let e = hv / norm;
            half[r * lang + k] = e / 2.0;
            dot += e * bl;
        }
        tok_bias[r] = dot + bias0;
    }
    let proj = super::nn::linear(&half, rows, w, dim, Some(b))?;
    Ok((proj, tok_bias))
}

/// How the visual features of [`dot_logits`] are laid out per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisualLayout {
    /// [dim, n_pos]: an NCHW level with H·W flattened (what the head convolutions see).
    ChannelMajor,
    /// [n_pos, dim]: flattened tokens (what VLFuse sees).
    PositionMajor,
}

/// logits[b, p, t] = clamp((v[b, p] · proj[b, t]) / scale + tok_bias[b, t], ±clamp) for
/// `batch` images of `n_pos` positions and `n_txt` tokens; visual features are not
/// normalised (dot_product_projection_image is Identity); scale = exp(log_scale), divided
/// by as GLIP does. Output [batch, n_pos, n_txt].
#[allow(clippy::too_many_arguments)]
pub fn dot_logits(
    visual: &[f32],
    layout: VisualLayout,
    proj: &[f32],
    tok_bias: &[f32],
    batch: usize,
    n_pos: usize,
    n_txt: usize,
    dim: usize,
    scale: f32,
    clamp: f32,
) -> Result<Vec<f32>> {
    if visual.len() != batch * n_pos * dim
        || proj.len() != batch * n_txt * dim
        || tok_bias.len() != batch * n_txt
    {
        return Err(Error::shape(
            "dot_logits",
            format!(
                "visual {} proj {} tok_bias {} for batch {batch} n_pos {n_pos} n_txt {n_txt} dim {dim}",
                visual.len(),
                proj.len(),
                tok_bias.len()
            ),
        ));
    }
    let mut out = vec![0.0f32; batch * n_pos * n_txt];
    for b in 0..batch {
        let v = &visual[b * n_pos * dim..(b + 1) * n_pos * dim];
        let a = match layout {
            VisualLayout::ChannelMajor => Mat::transposed(v, n_pos),
            VisualLayout::PositionMajor => Mat::rows(v, dim),
        };
        let p = &proj[b * n_txt * dim..(b + 1) * n_txt * dim];
        let o = &mut out[b * n_pos * n_txt..(b + 1) * n_pos * n_txt];
        if !gemm(n_pos, n_txt, dim, a, Mat::transposed(p, dim), o, 1.0, false) {
            return Err(Error::shape("dot_logits", "gemm extents"));
        }
        let tb = &tok_bias[b * n_txt..(b + 1) * n_txt];
        o.par_chunks_mut(n_txt.max(1)).for_each(|row| {
            for (x, &bias) in row.iter_mut().zip(tb) {
                *x = (*x / scale + bias).clamp(-clamp, clamp);
            }
        });
    }
    Ok(out)
}

pub use crate::backend::atss::PositiveMapCsr;

/// scores[b, p, label − 1] = mean over the label's tokens of sigmoid(logits[b, p, t]) for
/// `logits` [rows, n_txt] (rows = batch · positions); columns of labels absent from the map
/// stay 0, tokens of no label are ignored, and a label with an empty token list gets NaN
/// (torch's mean of nothing), which never passes the score threshold.
/// Output [rows, num_labels].
pub fn phrase_mean(
    logits: &[f32],
    rows: usize,
    n_txt: usize,
    map: &PositiveMapCsr,
    num_labels: usize,
) -> Result<Vec<f32>> {
    if logits.len() != rows * n_txt {
        return Err(Error::shape(
            "phrase_mean",
            format!("logits {} for [{rows}, {n_txt}]", logits.len()),
        ));
    }
    if map.offsets.len() != map.labels.len() + 1
        || map.offsets.windows(2).any(|w| w[0] > w[1])
        || map.offsets.last().is_some_and(|&o| o > map.tokens.len())
    {
        return Err(Error::shape("phrase_mean", "positive map offsets"));
    }
    if map
        .labels
        .iter()
        .any(|&l| l == 0 || l as usize > num_labels)
        || map.tokens.iter().any(|&t| t >= n_txt)
    {
        return Err(Error::shape(
            "phrase_mean",
            format!("positive map outside {num_labels} labels / {n_txt} tokens"),
        ));
    }
    let mut out = vec![0.0f32; rows * num_labels];
    out.par_chunks_mut(num_labels.max(1))
        .enumerate()
        .for_each(|(r, o)| {
            let row = &logits[r * n_txt..(r + 1) * n_txt];
            for (i, &label) in map.labels.iter().enumerate() {
                let toks = &map.tokens[map.offsets[i]..map.offsets[i + 1]];
                // Sequential sum then divide, as torch's mean over a short last dim.
                let s: f32 = toks.iter().map(|&t| sigmoid(row[t])).sum();
                o[label as usize - 1] = s / toks.len() as f32;
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrase_mean_averages_sigmoids_and_leaves_other_columns_zero() -> crate::Result<()> {
        let logits = vec![0.0, 2.0, -2.0, 1.0];
        let map = PositiveMapCsr::new(&[(2, vec![1, 2]), (3, vec![3])], 4, 4)?;
        let s = phrase_mean(&logits, 1, 4, &map, 4)?;
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 0.5).abs() < 1e-6);
        assert!((s[2] - sigmoid(1.0)).abs() < 1e-7);
        assert_eq!(s[3], 0.0);
        Ok(())
    }

    #[test]
    fn labels_beyond_the_head_are_rejected() {
        assert!(PositiveMapCsr::new(&[(81, vec![1])], 80, 4).is_err());
    }
}
