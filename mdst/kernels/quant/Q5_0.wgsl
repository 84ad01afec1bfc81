// Q5_0: 32 weights in 22 bytes: f16 scale d, 32 high bits qh, 16 bytes of low nibbles
// (order as Q4_0); bit i of qh is the fifth bit of weight i; w = d * (q - 16).
const QK: u32 = 32u;
const QB: u32 = 22u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let lo = (u8x4(w_u32(b + 6u + (g & 3u) * 4u)) >> vec4<u32>((g >> 2u) * 4u)) & vec4<u32>(0xfu);
    let hi = ((vec4<u32>(w_u32(b + 2u)) >> (vec4<u32>(4u * g) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u)) << vec4<u32>(4u);
    return w_f16(b) * (vec4<f32>(lo | hi) - 16.0);
}
