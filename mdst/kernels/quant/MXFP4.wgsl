// MXFP4: 32 weights in 17 bytes: an E8M0 exponent byte e, then 16 bytes of 4-bit E2M1 codes (weight j
// in the low nibble of byte j, weight 16 + j in its high nibble). w = 2^(e - 128) * level[q], the levels
// being E2M1's values doubled (0, 1, 2, 3, 4, 6, 8, 12, then the same negated).
// 17-byte blocks start on any byte: read through weights.wgsl's byte readers.
const QK: u32 = 32u;
const QB: u32 = 17u;

// The 16 doubled E2M1 values as signed bytes, 4 a word (weights.wgsl's levels16).
const MXFP4_LEVELS = vec4<u32>(0x03020100u, 0x0c080604u, 0xfdfeff00u, 0xf4f8fafcu);

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let q = (u8x4(w_u32(b + 1u + (g & 3u) * 4u)) >> vec4<u32>((g >> 2u) * 4u)) & vec4<u32>(0xfu);
    return ldexp(1.0, i32(w_u8(b)) - 128) * levels16(MXFP4_LEVELS, q);
}
