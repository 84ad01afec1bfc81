// TQ2_0: 256 weights in 66 bytes: 64 bytes of 2-bit codes, then f16 d. Each 128 weights use 32 bytes:
// quarter k of 32 weights takes bits 2k..2k+1 of those bytes. w = d * (q - 1).
// 66-byte blocks start on even bytes: read through weights.wgsl's byte readers.
const QK: u32 = 256u;
const QB: u32 = 66u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let q = (u8x4(w_u32(b + 32u * (g >> 5u) + 4u * (g & 7u))) >> vec4<u32>(2u * ((g >> 3u) & 3u))) & vec4<u32>(3u);
    return w_f16(b + 64u) * (vec4<f32>(q) - 1.0);
}
