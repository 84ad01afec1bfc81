// Q5_1: 32 weights in 24 bytes: f16 scale d, f16 offset m, 32 high bits qh, 16 bytes of low
// nibbles (order as Q4_0); w = d * q + m.
const QK: u32 = 32u;
const QB: u32 = 24u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let lo = (u8x4(w_u32(b + 8u + (g & 3u) * 4u)) >> vec4<u32>((g >> 2u) * 4u)) & vec4<u32>(0xfu);
    let hi = ((vec4<u32>(w_u32(b + 4u)) >> (vec4<u32>(4u * g) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u)) << vec4<u32>(4u);
    return w_f16(b) * vec4<f32>(lo | hi) + w_f16(b + 2u);
}
