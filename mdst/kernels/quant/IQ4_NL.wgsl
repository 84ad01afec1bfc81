// IQ4_NL: 32 weights in 18 bytes: f16 d, 16 bytes of 4-bit indices (nibble order as Q4_0) into
// a fixed table of 16 signed levels; w = d * level[q].
const QK: u32 = 32u;
const QB: u32 = 18u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let q = (u8x4(w_u32(b + 2u + (g & 3u) * 4u)) >> vec4<u32>((g >> 2u) * 4u)) & vec4<u32>(0xfu);
    return w_f16(b) * levels16(IQ4_LEVELS, q);
}
