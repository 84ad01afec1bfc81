// Causal attention with grouped-query heads over a layer's KV cache (read through
// kv/<type>.wgsl). Row r sits at position pos = pos0 + r and attends to positions
// [pos - window + 1, pos] (window 0: [0, pos]), read from slot position % ring. Keys are
// taken WG at a time with an online softmax, so any context length runs in fixed memory.
// SPLIT = 0: one workgroup per (query head, row) writes the output. SPLIT > 0 (decode on a GPU,
// where a few heads would leave it idle): workgroup z takes the SPLIT keys from the z-th onwards
// and writes its partial (running max, sum, unnormalized output; head_dim + 2 floats) for
// attention_merge to combine.
// LPK lanes score each key together, reading its row in contiguous pieces (coalesced on GPUs)
// and summing through workgroup memory; LPK = 1 (a lane per key, no extra barriers) suits CPUs.
// Dispatch: (heads, rows, 1), or (heads, rows, splits) with SPLIT.

struct P {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,   // a multiple of 4, at most 8 * WG
    ring: u32,
    window: u32,
    scale: f32,
    softcap: f32,    // 0: none; else scores become softcap * tanh(score / softcap)
    temp_scale: f32, // attention temperature (0: none): queries at position p are scaled by
    temp_floor: u32, //   1 + temp_scale * log(1 + floor(p / temp_floor))
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;       // [rows, heads * head_dim]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [rows, heads * head_dim] (or partials)
@group(0) @binding(5) var<uniform> p: P;

override WG: u32 = 64u;
override SPLIT: u32 = 0u;
override LPK: u32 = 1u;   // lanes per key: a power of two dividing WG

var<workgroup> qs: array<f32, 512>;
var<workgroup> sc: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

// Values at dims d0, d0 + WG, d0 + 2 WG, d0 + 3 WG of cached V row `row` (past the head: its last
// dim, never stored).
fn v4(row: u32, vb: u32, kv_dim: u32, d0: u32) -> vec4<f32> {
    let e = vec4<u32>(d0) + vec4<u32>(0u, 1u, 2u, 3u) * WG;
    let d = min(e, vec4<u32>(p.head_dim - 1u)) + vec4<u32>(vb);
    return vec4<f32>(v_get(row, d.x, kv_dim), v_get(row, d.y, kv_dim), v_get(row, d.z, kv_dim),
                     v_get(row, d.w, kv_dim));
}

// Store v's dims (as v4 spreads them) that lie inside the head.
fn put4(base: u32, d0: u32, v: vec4<f32>) {
    if (d0 < p.head_dim) {
        out[base + d0] = v.x;
    }
    if (d0 + WG < p.head_dim) {
        out[base + d0 + WG] = v.y;
    }
    if (d0 + 2u * WG < p.head_dim) {
        out[base + d0 + 2u * WG] = v.z;
    }
    if (d0 + 3u * WG < p.head_dim) {
        out[base + d0 + 3u * WG] = v.w;
    }
}

fn q4(d: u32) -> vec4<f32> {
    return vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u]);
}

fn k4(row: u32, i: u32, kv_dim: u32) -> vec4<f32> {
    return vec4<f32>(k_get(row, i, kv_dim), k_get(row, i + 1u, kv_dim), k_get(row, i + 2u, kv_dim),
                     k_get(row, i + 3u, kv_dim));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let r = wid.y;
    if (r >= step[STEP_ROWS]) {
        return;
    }
    let pos = step[STEP_POS0] + r;
    var first = 0u;
    if (p.window > 0u && pos + 1u > p.window) {
        first = pos + 1u - p.window;
    }
    var last = pos;   // keys [first, last]
    if (SPLIT > 0u) {
        first += wid.z * SPLIT;
        last = min(pos, first + SPLIT - 1u);
    }
    let kvh = h / (p.heads / p.kv_heads);
    let kv_dim = p.kv_heads * p.head_dim;
    let qbase = (r * p.heads + h) * p.head_dim;
    let qscale = p.scale * (1.0 + p.temp_scale * log(floor(f32(pos) / f32(p.temp_floor)) + 1.0));
    for (var d = lid; d < p.head_dim; d += WG) {
        qs[d] = q[qbase + d] * qscale;
    }
    workgroupBarrier();

    var m = -3.0e38;
    var l = 0.0;
    // this lane's output dims lid + c * WG: c < 4 in accA, 4 <= c < 8 in accB (only for heads wider
    // than 4 * WG); vectors, not an indexed array, so they stay in registers
    var accA = vec4<f32>(0.0);
    var accB = vec4<f32>(0.0);
    let wide = p.head_dim > 4u * WG;
    let kpc = WG / LPK;   // keys scored per chunk
    let lane = lid % LPK;
    let kk = lid / LPK;
    for (var t0 = first; t0 <= last; t0 += kpc) {
        let j = t0 + kk;
        var dot_ = 0.0;
        if (j <= last) {
            let row = j % p.ring;
            let kb = kvh * p.head_dim;
            // four neighbouring values a lane, two fours an iteration: eight loads in flight
            for (var d = 4u * lane; d < p.head_dim; d += 8u * LPK) {
                dot_ += dot(q4(d), k4(row, kb + d, kv_dim));
                let d2 = d + 4u * LPK;
                if (d2 < p.head_dim) {
                    dot_ += dot(q4(d2), k4(row, kb + d2, kv_dim));
                }
            }
        }
        if (LPK > 1u) {
            red[lid] = dot_;
            workgroupBarrier();
            for (var w = LPK / 2u; w > 0u; w /= 2u) {
                if (lane < w) {
                    red[lid] += red[lid + w];
                }
                workgroupBarrier();
            }
            dot_ = red[lid - lane];
        }
        if (lane == 0u) {
            var s = -3.0e38;
            if (j <= last) {
                s = dot_;
                if (p.softcap > 0.0) {
                    s = p.softcap * tanh(clamp(s / p.softcap, -15.0, 15.0));
                }
            }
            sc[kk] = s;
        }
        workgroupBarrier();
        let n = min(kpc, last + 1u - t0);
        var tm = m;
        for (var u = 0u; u < n; u++) {
            tm = max(tm, sc[u]);
        }
        let alpha = exp(m - tm);
        l *= alpha;
        accA *= alpha;
        accB *= alpha;
        // four keys an iteration (loads in flight together); past n a key weighs 0 and rereads key n - 1
        let vb = kvh * p.head_dim;
        for (var u = 0u; u < n; u += 4u) {
            let us = min(vec4<u32>(u) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(n - 1u));
            let pw = select(vec4<f32>(0.0), exp(vec4<f32>(sc[us.x], sc[us.y], sc[us.z], sc[us.w]) - tm),
                            vec4<u32>(u) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n));
            let rows = (vec4<u32>(t0) + us) % vec4<u32>(p.ring);
            l += pw.x + pw.y + pw.z + pw.w;
            accA += pw.x * v4(rows.x, vb, kv_dim, lid) + pw.y * v4(rows.y, vb, kv_dim, lid)
                  + pw.z * v4(rows.z, vb, kv_dim, lid) + pw.w * v4(rows.w, vb, kv_dim, lid);
            if (wide) {
                let d0 = lid + 4u * WG;
                accB += pw.x * v4(rows.x, vb, kv_dim, d0) + pw.y * v4(rows.y, vb, kv_dim, d0)
                      + pw.z * v4(rows.z, vb, kv_dim, d0) + pw.w * v4(rows.w, vb, kv_dim, d0);
            }
        }
        m = tm;
        workgroupBarrier();
    }
    if (SPLIT > 0u) {
        // partial (m, l, acc) of split z; an empty split (past pos) has l = 0
        let pb = ((r * p.heads + h) * nwg.z + wid.z) * (p.head_dim + 2u);
        if (lid == 0u) {
            out[pb] = m;
            out[pb + 1u] = l;
        }
        put4(pb + 2u, lid, accA);
        put4(pb + 2u, lid + 4u * WG, accB);
        return;
    }
    put4(qbase, lid, accA / l);
    put4(qbase, lid + 4u * WG, accB / l);
}
