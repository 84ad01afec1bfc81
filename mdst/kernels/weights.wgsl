// Weight access, prepended to kernels that read a weight tensor (binding 0), followed by
// quant/<type>.wgsl, which defines QK (weights per block), QB (bytes per block) and
// deq4(b, g): weights 4g..4g+3 of the block that starts at byte b, as f32. Types whose blocks are
// whole 16-byte words take weights_vec4.wgsl instead (README.md, section 1).

@group(0) @binding(0) var<storage, read> W: array<u32>;

// Byte-addressed reads: GGUF blocks (18, 34, 210 bytes...) are not 4-byte aligned.
fn w_u8(o: u32) -> u32 {
    return (W[o >> 2u] >> ((o & 3u) * 8u)) & 0xffu;
}

// Branch-free: both words are read and the second shifted out when o is aligned
// ((v << 1) << 31 is 0, where v << 32 would not be). Divergent branches cost more than a load.
fn w_u32(o: u32) -> u32 {
    let s = (o & 3u) * 8u;
    return (W[o >> 2u] >> s) | ((W[(o >> 2u) + 1u] << 1u) << (31u - s));
}

// Two words from byte o, o even: three loads where two w_u32 take four.
fn w_u32x2(o: u32) -> vec2<u32> {
    let s = (o & 3u) * 8u;
    let a = W[o >> 2u];
    let b = W[(o >> 2u) + 1u];
    let c = W[(o >> 2u) + 2u];
    return vec2<u32>((a >> s) | ((b << 1u) << (31u - s)), (b >> s) | ((c << 1u) << (31u - s)));
}

// Four words from byte o, anywhere: five loads where four w_u32 take eight.
fn w_u32x4(o: u32) -> vec4<u32> {
    let s = (o & 3u) * 8u;
    let i = o >> 2u;
    let a = vec4<u32>(W[i], W[i + 1u], W[i + 2u], W[i + 3u]);
    let b = vec4<u32>(W[i + 1u], W[i + 2u], W[i + 3u], W[i + 4u]);
    return (a >> vec4<u32>(s)) | ((b << vec4<u32>(1u)) << vec4<u32>(31u - s));
}

fn w_u16(o: u32) -> u32 {
    return w_u32(o) & 0xffffu;
}

fn w_f16(o: u32) -> f32 {
    return unpack2x16float(w_u16(o)).x;
}

// The IQ types' sign patterns: v, weights 4h..4h+3 of 8, takes signs from bits 4h..4h+3 of s (set: negative),
// flipped in the sign bits rather than multiplied.
fn signed4(v: vec4<f32>, s: u32, h: u32) -> vec4<f32> {
    let m = (vec4<u32>(s) << (vec4<u32>(31u, 30u, 29u, 28u) - 4u * h)) & vec4<u32>(0x80000000u);
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) ^ m);
}

// 8 signs from 7 stored bits: the eighth makes the count of negatives even (llama.cpp's ksigns table).
fn ksigns(s7: u32) -> u32 {
    return s7 | ((countOneBits(s7) & 1u) << 7u);
}

// Signed bytes of a 16-byte table (4 a word: a vector, so dynamic indexing needs no memory) at indices q:
// the level tables of IQ4_NL, IQ4_XS and MXFP4.
fn levels16(table: vec4<u32>, q: vec4<u32>) -> vec4<f32> {
    let v = vec4<u32>(table[q.x >> 2u], table[q.y >> 2u], table[q.z >> 2u], table[q.w >> 2u]);
    return vec4<f32>(bitcast<vec4<i32>>(v << (vec4<u32>(24u) - 8u * (q & vec4<u32>(3u)))) >> vec4<u32>(24u));
}

// IQ4_NL's 16 levels (IQ4_XS uses them too).
const IQ4_LEVELS = vec4<u32>(0xbfad9881u, 0xf6eaddcfu, 0x26190d01u, 0x71594535u);

