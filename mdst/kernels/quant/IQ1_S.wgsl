// IQ1_S: 256 weights in 50 bytes: f16 d, 32 bytes of grid index low bits (byte i: weights 8i..8i+7), then
// a u16 for each 32 weights: the indices' high 3 bits (bits 3j..3j+2 for weights 8j..8j+7), a 3-bit scale
// (bits 12..14) and the sign of delta (bit 15). Grid entries (grid.wgsl) are 8 levels of -1, 0, 1.
// w = d * (1 + 2 * scale) * (level + delta), delta = +-1/8.
// 50-byte blocks start on even bytes: read through weights.wgsl's byte readers.
const QK: u32 = 256u;
const QB: u32 = 50u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let l = g >> 1u;                                 // the group of 8 weights
    let qh = w_u16(b + 34u + 2u * (l >> 2u));
    let idx = w_u8(b + 2u + l) | (((qh >> (3u * (l & 3u))) & 7u) << 8u);
    let delta = select(0.125, -0.125, (qh & 0x8000u) != 0u);
    return w_f16(b) * f32(1u + 2u * ((qh >> 12u) & 7u)) * iq1_levels(idx, g & 1u, delta);
}
