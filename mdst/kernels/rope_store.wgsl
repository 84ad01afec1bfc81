// The step's attention inputs in one pass: per-head RMSNorm of queries and keys (where the
// model has q/k norms), RoPE on both, and keys and values appended to the layer's cache (in its
// format, kv/<type>.wgsl) at slot pos % ring. Replaces q_norm, k_norm, two ropes and kv_store.
// Workgroup h < heads takes query head h (writing the rotated query to `out`); the others take
// key/value head h - heads. Padding rows are never stored. Row r is activation row row0 + r (STEP_ROW0).
// POOL (a batched step): row r's position and pool slot come from the step's table (STEP_SEQS), and the
// cache bound is the whole pool, `stride` rows a slot.
// Dispatch: (heads + kv_heads, rows).

struct P {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,   // at most 512, a multiple of KVB
    n_rot: u32,
    neox: u32,
    mscale: f32,
    ring: u32,
    eps: f32,
    q_norm: u32,     // 1: normalize query heads with qw
    k_norm: u32,     // 1: normalize key heads with kw
    stride: u32,     // POOL: rows from one slot of the pool to the next
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;         // [rows, heads * head_dim]
@group(0) @binding(4) var<storage, read> k: array<f32>;         // [rows, kv_heads * head_dim]
@group(0) @binding(5) var<storage, read> v: array<f32>;         // [rows, kv_heads * head_dim]
@group(0) @binding(6) var<storage, read_write> out: array<f32>; // [rows, heads * head_dim]: rotated queries
// The RoPE frequencies [n_rot / 2], then the query norm's weight and the key norm's [head_dim each]:
// one buffer, as WebGPU's default limit is 8 storage buffers a shader.
@group(0) @binding(7) var<storage, read> aux: array<f32>;
@group(0) @binding(8) var<uniform> p: P;

override WG: u32 = 64u;
override POOL: bool = false;

var<workgroup> sh: array<f32, 512>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let r = wid.y;
    let hd = p.head_dim;
    let is_q = h < p.heads;
    let kvh = h - p.heads;
    // 1. the head, normalized where the model says
    let row = step[STEP_ROW0] + r;   // where the row sits in the activations
    var src = 0u;
    if (is_q) {
        src = (row * p.heads + h) * hd;
    } else {
        src = (row * p.kv_heads + kvh) * hd;
    }
    var ss = 0.0;
    for (var d = lid; d < hd; d += WG) {
        var e = 0.0;
        if (is_q) {
            e = q[src + d];
        } else {
            e = k[src + d];
        }
        sh[d] = e;
        ss += e * e;
    }
    red[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let norm = (is_q && p.q_norm != 0u) || (!is_q && p.k_norm != 0u);
    let inv = inverseSqrt(red[0] / f32(hd) + p.eps);
    for (var d = lid; d < hd; d += WG) {
        if (norm) {
            var wd = p.n_rot / 2u + d;   // the query norm's weight
            if (!is_q) {
                wd += hd;
            }
            sh[d] *= inv * aux[wd];
        }
    }
    workgroupBarrier();
    // 2. rotate each pair (a thread owns whole pairs, so in place is safe)
    let pairs = p.n_rot / 2u;
    var pos = step[STEP_POS0] + r;
    var base = 0u;
    if (POOL) {
        pos = step[step[STEP_SEQS] + 2u * r];
        base = step[step[STEP_SEQS] + 2u * r + 1u] * p.stride;
    }
    for (var i = lid; i < pairs; i += WG) {
        let ab = rope_pair(i, p.n_rot, p.neox);
        let o = rotate_pair(vec2<f32>(sh[ab.x], sh[ab.y]), pos, aux[i], p.mscale);
        sh[ab.x] = o.x;
        sh[ab.y] = o.y;
    }
    workgroupBarrier();
    // 3. queries out; keys and values into the cache
    if (is_q) {
        for (var d = lid; d < hd; d += WG) {
            out[src + d] = sh[d];
        }
        return;
    }
    if (r >= step[STEP_ROWS]) {
        return;
    }
    let slot = base + pos % p.ring;
    let kv_dim = p.kv_heads * hd;
    for (var blk = lid; blk < hd / KVB; blk += WG) {
        var kx: array<f32, KVB>;
        var vx: array<f32, KVB>;
        for (var j = 0u; j < KVB; j++) {
            kx[j] = sh[blk * KVB + j];
            vx[j] = v[src + blk * KVB + j];
        }
        k_put(slot, (kvh * hd) / KVB + blk, kv_dim, kx);
        v_put(slot, (kvh * hd) / KVB + blk, kv_dim, vx);
    }
}
