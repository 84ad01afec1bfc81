// TQ1_0: 256 weights in 54 bytes: 48 bytes of 5 ternary digits each, 4 bytes of 4 digits each, then f16 d.
// A byte x holds digits as the fraction x/256 in base 3: digit n is ((x * 3^n mod 256) * 3) >> 8.
// Weights 0..159: digit n of byte j (0..31) is weight 32n + j; weights 160..239: digit n of byte 32 + j
// (j 0..15) is weight 160 + 16n + j; weights 240..255: digit n of byte 48 + j (j 0..3) is weight
// 240 + 4n + j. w = d * (digit - 1).
// 54-byte blocks start on even bytes: read through weights.wgsl's byte readers.
const QK: u32 = 256u;
const QB: u32 = 54u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    // the 4 bytes that hold group g and the digit n they hold it in, for the three parts of the block
    let h = g - 40u;
    let o = select(select(48u, 32u + 4u * (h & 3u), g < 60u), 4u * (g & 7u), g < 40u);
    let n = select(select(g - 60u, h >> 2u, g < 60u), g >> 3u, g < 40u);
    let m = select(81u, (0x1b090301u >> (8u * n)) & 0xffu, n < 4u);   // 3^n
    let x = (u8x4(w_u32(b + o)) * m) & vec4<u32>(0xffu);
    return w_f16(b + 52u) * (vec4<f32>((x * 3u) >> vec4<u32>(8u)) - 1.0);
}
