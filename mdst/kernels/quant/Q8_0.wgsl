// Q8_0: 32 weights in 34 bytes: f16 scale d, 32 signed bytes q; w = d * q.
const QK: u32 = 32u;
const QB: u32 = 34u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    return w_f16(b) * i8x4(w_u32(b + 2u + 4u * g));
}
