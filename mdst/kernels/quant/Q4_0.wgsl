// Q4_0: 32 weights in 18 bytes: f16 scale d, 16 bytes of 4-bit q.
// Byte i holds weight i (low nibble) and weight i+16 (high nibble); w = d * (q - 8).
const QK: u32 = 32u;
const QB: u32 = 18u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let q = u8x4(w_u32(b + 2u + (g & 3u) * 4u)) >> vec4<u32>((g >> 2u) * 4u);
    return w_f16(b) * (vec4<f32>(q & vec4<u32>(0xfu)) - 8.0);
}
