// Sampling, first stage: the k largest logits of one slice of SLICE columns of a logits part, as
// (f32 bits, vocabulary id) pairs in descending order (ties: the lower id first), in the slice's
// KMAX candidate places (unused places keep whatever they held; the second stage reads k of them).
// A token that a constrained draw forbids (draw_allows) is staged as no value, like the columns past the
// part's end, so it is never a candidate. The slice is staged in workgroup memory and its maximum
// extracted k times. Workgroup y takes logits row y with the y-th draw of the buffer (DRAW_WORDS each; a row
// that does not draw has k = 0) and its own candidates.
// Dispatch: (ceil(cols / SLICE), rows) for the part.

struct P {
    cols: u32,       // columns of this part
    col0: u32,       // first vocabulary id of this part
    slice0: u32,     // index of this part's first slice among all the row's slices
    slices: u32,     // a row's slices, over all parts
}

@group(0) @binding(0) var<storage, read> draw: array<u32>;                // k = draw[DRAW_TOP_K] <= KMAX
@group(0) @binding(1) var<storage, read> x: array<f32>;                   // [rows, cols]
@group(0) @binding(2) var<storage, read_write> cand: array<vec2<u32>>;    // [rows, slices, KMAX]
@group(0) @binding(3) var<uniform> p: P;

const SLICE: u32 = 2048u;
const WG: u32 = 64u;
const NEG: f32 = -3.4e38;

var<workgroup> vals: array<f32, SLICE>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let start = wid.x * SLICE;
    let n = min(SLICE, p.cols - start);
    let d = wid.y * DRAW_WORDS;
    let masked = draw[d + DRAW_MASKED] != 0u;
    for (var i = lid; i < SLICE; i += WG) {
        var v = NEG;
        let t = p.col0 + start + i;
        if (i < n && (!masked || draw_allows(draw[d + DRAW_WORDS + t / 32u], t))) {
            v = x[wid.y * p.cols + start + i];
        }
        vals[i] = v;
    }
    workgroupBarrier();
    let k = min(draw[d + DRAW_TOP_K], KMAX);
    for (var r = 0u; r < KMAX; r++) {
        if (r >= k) {   // uniform: every invocation reads the same k
            break;
        }
        var v = NEG;
        var at = NONE_ID;
        for (var i = lid; i < SLICE; i += WG) {
            if (vals[i] > v) {   // strided ascending: the first maximum a thread meets has its lowest index
                v = vals[i];
                at = i;
            }
        }
        let b = pick_best(v, at, lid, WG);
        if (lid == 0u) {
            var id = NONE_ID;   // fewer than k real values in this slice
            if (b.i < n && b.v > NEG) {
                id = p.col0 + start + b.i;
                vals[b.i] = NEG;
            }
            cand[(wid.y * p.slices + p.slice0 + wid.x) * KMAX + r] = vec2<u32>(bitcast<u32>(b.v), id);
        }
        workgroupBarrier();
    }
}
