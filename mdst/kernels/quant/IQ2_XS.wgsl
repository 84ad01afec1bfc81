// IQ2_XS: 256 weights in 74 bytes: f16 d, 32 u16 (each 8 weights: a 9-bit grid index, 7-bit sign index
// above it), then 8 bytes of 4-bit scales (nibble s for weights 16s..16s+15). Grid entry idx is 8
// weights, level 8, 25 or 43 each; the sign index gives their signs (weights.wgsl's ksigns).
// w = d * (0.5 + scale) / 4 * level * sign.
// 74-byte blocks start on even bytes: read through weights.wgsl's byte readers.
const QK: u32 = 256u;
const QB: u32 = 74u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let l = g >> 1u;                                 // the u16 of the group: 8 weights
    let q = w_u16(b + 2u + 2u * l);
    let idx = q & 511u;
    let sc = (w_u8(b + 66u + (l >> 2u)) >> (4u * ((l >> 1u) & 1u))) & 0xfu;
    return w_f16(b) * (0.5 + f32(sc)) * 0.25 * signed4(grid4(2u * idx + (g & 1u)), ksigns(q >> 9u), g & 1u);
}
