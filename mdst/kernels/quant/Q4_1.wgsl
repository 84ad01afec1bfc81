// Q4_1: 32 weights in 20 bytes: f16 scale d, f16 offset m, 16 bytes of 4-bit q
// (nibble order as Q4_0); w = d * q + m.
const QK: u32 = 32u;
const QB: u32 = 20u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let q = u8x4(w_u32(b + 4u + (g & 3u) * 4u)) >> vec4<u32>((g >> 2u) * 4u);
    return w_f16(b) * vec4<f32>(q & vec4<u32>(0xfu)) + w_f16(b + 2u);
}
