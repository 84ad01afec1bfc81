// Sampling, second stage, one workgroup: the top k of all slices' candidates, then llama.cpp's chain on
// them: top-p (smallest prefix whose probability reaches top_p), min-p (probability at least min_p
// times the largest), temperature, and a draw by inverse CDF with the uniform number u the host put in
// the draw buffer (so a seed reproduces the same text). Writes the chosen token id. Workgroup y takes row y's
// candidates with the y-th draw of the buffer (DRAW_WORDS each) and writes ids[y].
// Dispatch: (1, rows).

struct P {
    slices: u32,     // candidate slices (KMAX places each, the first k filled)
}

@group(0) @binding(0) var<storage, read> draw: array<u32>;
@group(0) @binding(1) var<storage, read_write> cand: array<vec2<u32>>;   // [rows, slices, KMAX] (consumed)
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;          // [rows]
@group(0) @binding(3) var<uniform> p: P;

const WG: u32 = 64u;
const NEG: f32 = -3.4e38;

var<workgroup> top_v: array<f32, KMAX>;
var<workgroup> top_i: array<u32, KMAX>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d = wid.y * DRAW_WORDS;
    let c0 = wid.y * p.slices * KMAX;   // the row's candidates
    let k = min(draw[d + DRAW_TOP_K], KMAX);
    let n_cand = p.slices * KMAX;
    for (var r = 0u; r < KMAX; r++) {
        if (r >= k) {
            break;
        }
        var v = NEG;
        var id = NONE_ID;   // this thread's best candidate (ties: the lower token id) and its place
        var at = 0u;
        for (var i = lid; i < n_cand; i += WG) {
            if (i % KMAX >= k) {
                continue;
            }
            let c = cand[c0 + i];
            if (ranks_before(bitcast<f32>(c.x), c.y, v, id)) {
                v = bitcast<f32>(c.x);
                id = c.y;
                at = i;
            }
        }
        let b = pick_best(v, id, lid, WG);
        if (lid == 0u) {
            top_v[r] = select(NEG, b.v, b.i != NONE_ID);
            top_i[r] = b.i;
        }
        if (b.i != NONE_ID && id == b.i) {   // the thread holding it (token ids are unique among candidates)
            cand[c0 + at].y = NONE_ID;   // taken
        }
        workgroupBarrier();
    }
    if (lid != 0u) {
        return;
    }
    // the chain runs on at most 64 values: one invocation
    var n = 0u;
    while (n < k && top_i[n] != NONE_ID) {
        n++;
    }
    let t = bitcast<f32>(draw[d + DRAW_TEMPERATURE]);
    if (t == 0.0) {   // greedy with a logit bias: the best candidate (the host asks for k = 1)
        ids[wid.y] = top_i[0];
        return;
    }
    var total = 0.0;
    for (var i = 0u; i < n; i++) {
        total += exp(top_v[i] - top_v[0]);
    }
    var keep = n;
    let top_p = bitcast<f32>(draw[d + DRAW_TOP_P]);
    if (top_p < 1.0) {
        var cum = 0.0;
        for (var i = 0u; i < n; i++) {
            cum += exp(top_v[i] - top_v[0]) / total;
            if (cum >= top_p) {
                keep = i + 1u;
                break;
            }
        }
    }
    let min_p = bitcast<f32>(draw[d + DRAW_MIN_P]);
    if (min_p > 0.0) {
        var m = 0u;
        for (var i = 0u; i < n; i++) {
            if (exp(top_v[i] - top_v[0]) >= min_p) {
                m++;
            }
        }
        keep = min(keep, max(m, 1u));
    }
    var z = 0.0;
    for (var i = 0u; i < keep; i++) {
        z += exp((top_v[i] - top_v[0]) / t);
    }
    let target_ = bitcast<f32>(draw[d + DRAW_U]) * z;
    var cum = 0.0;
    var pick = keep - 1u;
    for (var i = 0u; i < keep; i++) {
        cum += exp((top_v[i] - top_v[0]) / t);
        if (cum >= target_) {
            pick = i;
            break;
        }
    }
    ids[wid.y] = top_i[pick];
}
