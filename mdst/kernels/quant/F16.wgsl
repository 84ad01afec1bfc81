// F16: IEEE half floats, 4 weights a "block".
const QK: u32 = 4u;
const QB: u32 = 8u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(w_u32(b)), unpack2x16float(w_u32(b + 4u)));
}
