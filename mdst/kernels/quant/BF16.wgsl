// BF16: the top 16 bits of an f32, 4 weights a "block".
const QK: u32 = 4u;
const QB: u32 = 8u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let lo = w_u32(b);
    let hi = w_u32(b + 4u);
    return bitcast<vec4<f32>>(vec4<u32>(lo << 16u, lo & 0xffff0000u, hi << 16u, hi & 0xffff0000u));
}
