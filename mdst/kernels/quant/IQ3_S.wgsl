// IQ3_S: 256 weights in 110 bytes: f16 d, 64 bytes of grid index low bits (byte i: weights 4i..4i+3), 8
// bytes of their ninth bits (bit i&7 of byte i/8), 32 sign bytes (byte s: weights 8s..8s+7) and 4 bytes
// of 4-bit scales (nibble s for weights 32s..32s+31). Grid entries are 4 levels of 1, 3, ..., 15.
// w = d * (1 + 2 * scale) * level * sign.
// 110-byte blocks start on even bytes: read through weights.wgsl's byte readers.
const QK: u32 = 256u;
const QB: u32 = 110u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let level = grid4(w_u8(b + 2u + g) | (((w_u8(b + 66u + (g >> 3u)) >> (g & 7u)) & 1u) << 8u));
    let sc = (w_u8(b + 106u + (g >> 4u)) >> (4u * ((g >> 3u) & 1u))) & 0xfu;
    return w_f16(b) * f32(1u + 2u * sc) * signed4(level, w_u8(b + 74u + (g >> 1u)), g & 1u);
}
