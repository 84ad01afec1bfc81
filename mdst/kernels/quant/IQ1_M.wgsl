// IQ1_M: 256 weights in 56 bytes: 32 bytes of grid index low bits (byte i: weights 8i..8i+7), 16 bytes
// with a nibble for each 8 weights (the index's high 3 bits, then the sign of delta), then 4 u16 of 3-bit
// scales (bits 3j..3j+2 of u16 i for weights 64i+16j..) whose top nibbles together are the block's f16 d.
// Grid entries (grid.wgsl) are 8 levels of -1, 0, 1. w = d * (1 + 2 * scale) * (level + delta),
// delta = +-1/8.
// 56-byte blocks start on even bytes: read through weights.wgsl's byte readers.
const QK: u32 = 256u;
const QB: u32 = 56u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let l = g >> 1u;                                 // the group of 8 weights
    let sc = w_u32x2(b + 48u);                       // the 4 scale words
    let d = unpack2x16float(((sc.x >> 12u) & 0xfu) | ((sc.x >> 24u) & 0xf0u) | ((sc.y >> 4u) & 0xf00u)
                            | ((sc.y >> 16u) & 0xf000u)).x;
    let s = l >> 1u;                                 // the scale's 16 weights
    let word = select(sc.x, sc.y, s >= 8u) >> (16u * ((s >> 2u) & 1u));
    let qh = w_u8(b + 32u + (l >> 1u)) >> (4u * (l & 1u));
    let idx = w_u8(b + l) | ((qh & 7u) << 8u);
    let delta = select(0.125, -0.125, (qh & 8u) != 0u);
    return d * f32(1u + 2u * ((word >> (3u * (s & 3u))) & 7u)) * iq1_levels(idx, g & 1u, delta);
}
