//! Golden 02_groupnorm: nn.GroupNorm(16, 256) on the CPU twin.

use glip_rt::backend::cpu::group_norm::{group_norm, GroupNormShape};
use glip_rt::testing::{assert_close, load_golden};

#[test]
fn golden_02_groupnorm() {
    let g = load_golden("02_groupnorm").unwrap();
    let x = &g["input/x"];
    let [n, c, h, w] = x.dims::<4>("x").unwrap();
    let s = GroupNormShape::glip(n, c);
    let mut y = vec![f32::NAN; x.numel()];
    group_norm(
        &s,
        h * w,
        &x.to_f32_vec().unwrap(),
        &g["weight"].to_f32_vec().unwrap(),
        &g["bias"].to_f32_vec().unwrap(),
        &mut y,
    )
    .unwrap();
    assert_close(
        "02 output/y",
        &y,
        &g["output/y"].to_f32_vec().unwrap(),
        1e-4,
        1e-4,
    );
}
