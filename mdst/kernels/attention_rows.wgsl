// Many-row attention (prefill) on GPUs as one flash-attention pass: causal GQA over a layer's KV cache
// (read through kv/<format>.wgsl), optional window, softcap and temperature, as attention.wgsl computes
// it, with no scores kept beyond one tile. A workgroup takes a block of QB = BR * GW query vectors: BR
// rows of GW query heads that share one KV head. Keys go BC at a time through workgroup memory, so a
// cached row is read once for all QB query vectors (attention.wgsl reads it once for each row):
//   1. the tile's K rows into workgroup memory;
//   2. scores: LPS lanes a (query vector, key) pair, partial dots summed through workgroup memory;
//      masked (past the row's position, before its window) to -inf;
//   3. the tile's V rows into the same memory;
//   4. values: thread (query vector, fours of dims) keeps the running max and sum of its query vector
//      (each of its threads the same, computed from the tile's scores) and its dims' running output.
// Row r sits at position pos0 + r and attends to [pos - window + 1, pos] (window 0: [0, pos]), slot
// position % ring. Dispatch: (heads / GW, ceil(rows / BR), 1).

struct P {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,   // a multiple of 4; QB * head_dim <= QMAX, BC * head_dim <= KVMAX, head_dim / 4 <= 4 * (WG / QB)
    ring: u32,
    window: u32,
    scale: f32,
    softcap: f32,    // 0: none; else scores become softcap * tanh(score / softcap)
    temp_scale: f32, // attention temperature (0: none): queries at position p are scaled by
    temp_floor: u32, //   1 + temp_scale * log(1 + floor(p / temp_floor))
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;          // [rows, heads * head_dim]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [rows, heads * head_dim]
@group(0) @binding(5) var<uniform> p: P;

override WG: u32 = 128u;
override GW: u32 = 1u;    // query heads of one KV head a workgroup: divides heads / kv_heads
override BR: u32 = 16u;   // rows a workgroup
override BC: u32 = 8u;    // keys a tile
override QB: u32 = BR * GW;        // query vectors a workgroup, at most WG
override LPS: u32 = WG / (QB * BC); // lanes a score (at least 1)
override TPQ: u32 = WG / QB;        // threads a query vector in step 4

// Limits of workgroup memory, read by the host (plan.flash_tiles): 13 KiB in all at WG = 128.
const QMAX: u32 = 2048u;    // query values a workgroup holds: QB * head_dim
const KVMAX: u32 = 1024u;   // cached values a tile holds: BC * head_dim
const NV: u32 = 4u;         // fours of dims a thread adds in step 4, at most

var<workgroup> qs: array<vec4<f32>, QMAX / 4u>;   // [QB, head_dim / 4], scaled
var<workgroup> kv: array<vec4<f32>, KVMAX / 4u>;  // [BC, head_dim / 4]: the tile's K, then its V
var<workgroup> red: array<f32, WG>;               // lanes' partial scores
var<workgroup> sc: array<f32, WG>;                // [QB, BC] the tile's scores (-inf where masked)

// The first key row `pos` attends to.
fn first_key(pos: u32) -> u32 {
    if (p.window > 0u && pos + 1u > p.window) {
        return pos + 1u - p.window;
    }
    return 0u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n_rows = step[STEP_ROWS];
    let r0 = wid.y * BR;
    if (r0 >= n_rows) {
        return;
    }
    let pos0 = step[STEP_POS0] + r0;
    let r_end = min(r0 + BR, n_rows);   // rows [r0, r_end) are real
    let first = first_key(pos0);
    let last = step[STEP_POS0] + r_end - 1u;   // keys [first, last] cover every row of the block
    let h0 = wid.x * GW;
    let kb = (h0 / (p.heads / p.kv_heads)) * p.head_dim;   // the KV head's first value in a cached row
    let kv_dim = p.kv_heads * p.head_dim;
    let dv = p.head_dim / 4u;
    // query vector i of the block: row r0 + i / GW, head h0 + i % GW
    for (var e = lid; e < QB * dv; e += WG) {
        let i = e / dv;
        let r = r0 + i / GW;
        var v = vec4<f32>(0.0);
        if (r < r_end) {
            let pos = step[STEP_POS0] + r;
            let qscale = p.scale * (1.0 + p.temp_scale * log(floor(f32(pos) / f32(p.temp_floor)) + 1.0));
            let qb = (r * p.heads + h0 + i % GW) * p.head_dim + 4u * (e % dv);
            v = vec4<f32>(q[qb], q[qb + 1u], q[qb + 2u], q[qb + 3u]) * qscale;
        }
        qs[e] = v;
    }

    // step 2: pair (query vector si, key sk), lane sl of LPS
    let pair = lid / LPS;
    let sl = lid % LPS;
    let si = pair / BC;
    let sk = pair % BC;
    let s_pos = step[STEP_POS0] + r0 + si / GW;
    let s_first = first_key(s_pos);
    // step 4: query vector vi, dims 4 * (vc + TPQ * j) for j < NV
    let vi = lid / TPQ;
    let vc = lid % TPQ;
    var m = -3.0e38;   // the query vector's running max and sum (the same in each of its threads)
    var l = 0.0;
    var acc0 = vec4<f32>(0.0);   // separate variables: a loop-indexed array may live in slow memory
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var t0 = first; t0 <= last; t0 += BC) {
        let n = min(BC, last + 1u - t0);   // keys in this tile
        // 1. K rows
        workgroupBarrier();   // the previous tile's step 4 is done with kv and sc
        for (var e = lid; e < BC * dv; e += WG) {
            let t = e / dv;
            var v = vec4<f32>(0.0);
            if (t < n) {
                v = k_get4((t0 + t) % p.ring, kb + 4u * (e % dv), kv_dim);
            }
            kv[e] = v;
        }
        workgroupBarrier();
        // 2. scores
        var s = 0.0;
        if (pair < QB * BC) {
            for (var c = sl; c < dv; c += LPS) {
                s += dot(qs[si * dv + c], kv[sk * dv + c]);
            }
        }
        if (LPS > 1u) {
            red[lid] = s;
            workgroupBarrier();
            s = 0.0;
            for (var j = 0u; j < LPS; j++) {
                s += red[pair * LPS + j];
            }
        }
        let key = t0 + sk;
        if (pair < QB * BC && sl == 0u) {
            var v = -3.0e38;
            if (sk < n && key >= s_first && key <= s_pos) {
                v = softcapped(s, p.softcap);
            }
            sc[pair] = v;
        }
        workgroupBarrier();
        // 3. V rows
        for (var e = lid; e < BC * dv; e += WG) {
            let t = e / dv;
            var v = vec4<f32>(0.0);
            if (t < n) {
                v = v_get4((t0 + t) % p.ring, kb + 4u * (e % dv), kv_dim);
            }
            kv[e] = v;
        }
        workgroupBarrier();
        // 4. values
        if (vi < QB) {
            var mt = m;
            for (var t = 0u; t < n; t++) {
                mt = max(mt, sc[vi * BC + t]);
            }
            let alpha = exp(m - mt);
            m = mt;
            l *= alpha;
            acc0 *= alpha;
            acc1 *= alpha;
            acc2 *= alpha;
            acc3 *= alpha;
            for (var t = 0u; t < n; t++) {
                let st = sc[vi * BC + t];
                var w = 0.0;
                if (st > -1.0e38) {
                    w = exp(st - mt);
                }
                l += w;
                let b = t * dv + vc;
                if (vc < dv) { acc0 += w * kv[b]; }
                if (vc + TPQ < dv) { acc1 += w * kv[b + TPQ]; }
                if (vc + 2u * TPQ < dv) { acc2 += w * kv[b + 2u * TPQ]; }
                if (vc + 3u * TPQ < dv) { acc3 += w * kv[b + 3u * TPQ]; }
            }
        }
    }
    let r = r0 + vi / GW;
    if (vi < QB && r < r_end) {
        let ob = (r * p.heads + h0 + vi % GW) * p.head_dim;
        let acc = array<vec4<f32>, NV>(acc0, acc1, acc2, acc3);
        for (var j = 0u; j < NV; j++) {
            let c = vc + j * TPQ;
            if (c < dv) {
                let o = acc[j] / l;
                out[ob + 4u * c] = o.x;
                out[ob + 4u * c + 1u] = o.y;
                out[ob + 4u * c + 2u] = o.z;
                out[ob + 4u * c + 3u] = o.w;
            }
        }
    }
}
