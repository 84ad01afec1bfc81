// F32: plain floats; a "block" is 4 weights so deq4 has one shape for every type.
const QK: u32 = 4u;
const QB: u32 = 16u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let i = b >> 2u;  // float rows are 4-byte aligned
    return bitcast<vec4<f32>>(vec4<u32>(W[i], W[i + 1u], W[i + 2u], W[i + 3u]));
}
