// IQ2_S: 256 weights in 82 bytes: f16 d, 32 bytes of grid index low bits (byte i: weights 8i..8i+7), 32
// sign bytes (byte i: weights 8i..8i+7), 8 bytes of the indices' ninth and tenth bits (bits 2j..2j+1 of
// byte i for weights 32i+8j..), then 8 bytes of 4-bit scales (nibble s for weights 16s..16s+15). Grid
// entry idx is 8 weights, level 8, 25 or 43 each. w = d * (0.5 + scale) / 4 * level * sign.
// 82-byte blocks start on even bytes: read through weights.wgsl's byte readers.
const QK: u32 = 256u;
const QB: u32 = 82u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let l = g >> 1u;                                 // the group of 8 weights
    let idx = w_u8(b + 2u + l) | (((w_u8(b + 66u + (l >> 2u)) >> (2u * (l & 3u))) & 3u) << 8u);
    let sc = (w_u8(b + 74u + (l >> 2u)) >> (4u * ((l >> 1u) & 1u))) & 0xfu;
    return w_f16(b) * (0.5 + f32(sc)) * 0.25 * signed4(grid4(2u * idx + (g & 1u)), w_u8(b + 34u + l), g & 1u);
}
