// Weight access for the types whose blocks are whole 16-byte words (WIDE_TYPES in __init__.py): binding 0
// read as vec4<u32>, so a block's header and each 16 bytes of its data are one load rather than four.
// Offsets stay in bytes; every block, row and part starts on a 16-byte boundary.

@group(0) @binding(0) var<storage, read> W: array<vec4<u32>>;

// The wide types' blocks (Q4_K, Q5_K) open with the same header word: f16 d, f16 dmin, then 12 bytes of
// 6-bit scales and mins for 8 sub-blocks of 32; these read it.

// (scale, min) of sub-block s, as integers 0..63.
fn kq_scale_min(hd: vec4<u32>, s: u32) -> vec2<f32> {
    // scale bytes s%4 of words 1 and 2; sub-blocks 4..7 add word 3 and use these as high bits.
    // Both are computed and one selected: neighbouring threads take different sub-blocks.
    let sh = 8u * (s & 3u);
    let a = (hd.yz >> vec2<u32>(sh)) & vec2<u32>(0xffu);
    let c = (hd.w >> sh) & 0xffu;
    let high = vec2<u32>(c & 0xfu, c >> 4u) | ((a >> vec2<u32>(6u)) << vec2<u32>(4u));
    return vec2<f32>(select(a & vec2<u32>(63u), high, s >= 4u));
}

// Scales and mins of sub-blocks 2 pr and 2 pr + 1 as one word: bytes (scale, scale, min, min).
// Sub-blocks 0..3 keep 6 bits in bytes s of words 1 (scale) and 2 (min); 4..7 keep their low 4 bits
// in the nibbles of byte s - 4 of word 3 and their high 2 in the top bits of bytes s - 4 of words 1, 2.
fn kq_scales(hd: vec4<u32>, pr: u32) -> u32 {
    let sh = 16u * (pr & 1u);
    let a = (hd.y >> sh) & 0xffffu;
    let m = (hd.z >> sh) & 0xffffu;
    let c = (hd.w >> sh) & 0xffffu;
    let low = (a & 0x3f3fu) | ((m & 0x3f3fu) << 16u);
    let high = ((c & 0x0f0fu) | ((a >> 2u) & 0x3030u)) | ((((c >> 4u) & 0x0f0fu) | ((m >> 2u) & 0x3030u)) << 16u);
    return select(low, high, pr >= 2u);
}
