// IQ4_XS: 256 weights in 136 bytes: f16 d, u16 scales_h, 4 bytes scales_l, 128 bytes of 4-bit
// indices into IQ4_NL's table. Sub-block s of 32 weights uses 16 bytes (nibble order as Q4_0)
// and the 6-bit scale (nibble s of scales_l) | (bits 2s..2s+1 of scales_h) << 4.
// w = d * (scale - 32) * level[q].
// 136 is a multiple of 4, so every block is 4-byte aligned and is read as whole words.
const QK: u32 = 256u;
const QB: u32 = 136u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let w = b >> 2u;
    let s = g >> 3u;
    let w0 = W[w];                // d, scales_h
    let sc = ((W[w + 1u] >> (4u * s)) & 0xfu) | (((w0 >> (16u + 2u * s)) & 3u) << 4u);
    let q = (u8x4(W[w + 2u + 4u * s + (g & 3u)]) >> vec4<u32>(4u * ((g >> 2u) & 1u))) & vec4<u32>(0xfu);
    return unpack2x16float(w0).x * (f32(sc) - 32.0) * levels16(IQ4_LEVELS, q);
}
