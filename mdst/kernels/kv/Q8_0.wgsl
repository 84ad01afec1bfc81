// KV cache rows stored in 8 bits as Q8_0 does: each block of 32 values is q = round(x / d)
// with d = max|x| / 127 kept at f16 precision. A row of kv_dim values is kv_dim / 32 scales
// (f32 words holding the f16-rounded d) followed by kv_dim / 4 words of four signed bytes.
// Kernels bind K at 1 and V at 2. See ../README.md.

@group(0) @binding(1) var<storage, read_write> kc: array<u32>;
@group(0) @binding(2) var<storage, read_write> vc: array<u32>;

const KVB: u32 = 32u;   // values written together: one block

fn q8_row_words(kv_dim: u32) -> u32 {
    return kv_dim / 32u + kv_dim / 4u;
}

// The four values of quant word w (signed bytes, low byte first) times the block's scale word s.
fn q8_values(s: u32, w: u32) -> vec4<f32> {
    let q = bitcast<vec4<i32>>(vec4<u32>(w << 24u, w << 16u, w << 8u, w)) >> vec4<u32>(24u);
    return bitcast<f32>(s) * vec4<f32>(q);
}

// Values i .. i + 3 of a cached row (i a multiple of 4): one quant word.
fn k_get4(row: u32, i: u32, kv_dim: u32) -> vec4<f32> {
    let b = row * q8_row_words(kv_dim);
    return q8_values(kc[b + i / 32u], kc[b + kv_dim / 32u + i / 4u]);
}

fn v_get4(row: u32, i: u32, kv_dim: u32) -> vec4<f32> {
    let b = row * q8_row_words(kv_dim);
    return q8_values(vc[b + i / 32u], vc[b + kv_dim / 32u + i / 4u]);
}

// The block's scale word and its eight quant words: [scale, q0, ..., q7].
fn q8_pack(x: array<f32, KVB>) -> array<u32, 9> {
    var amax = 0.0;
    for (var j = 0u; j < KVB; j++) {
        amax = max(amax, abs(x[j]));
    }
    let d = amax / 127.0;
    var inv = 0.0;
    if (d > 0.0) {
        inv = 1.0 / d;
    }
    var out: array<u32, 9>;
    out[0] = bitcast<u32>(unpack2x16float(pack2x16float(vec2<f32>(d, 0.0))).x);
    for (var w = 0u; w < 8u; w++) {
        var word = 0u;
        for (var j = 0u; j < 4u; j++) {
            let q = i32(clamp(round(x[4u * w + j] * inv), -127.0, 127.0));
            word |= (bitcast<u32>(q) & 0xffu) << (8u * j);
        }
        out[w + 1u] = word;
    }
    return out;
}

fn k_put(row: u32, blk: u32, kv_dim: u32, x: array<f32, KVB>) {
    let p = q8_pack(x);
    let b = row * q8_row_words(kv_dim);
    kc[b + blk] = p[0];
    for (var w = 0u; w < 8u; w++) {
        kc[b + kv_dim / 32u + 8u * blk + w] = p[w + 1u];
    }
}

fn v_put(row: u32, blk: u32, kv_dim: u32, x: array<f32, KVB>) {
    let p = q8_pack(x);
    let b = row * q8_row_words(kv_dim);
    vc[b + blk] = p[0];
    for (var w = 0u; w < 8u; w++) {
        vc[b + kv_dim / 32u + 8u * blk + w] = p[w + 1u];
    }
}
