// Greedy pick, first stage: the largest value of each row of one logits part [rows, cols] and
// its column (col0 + index; ties go to the lower index), written to best[row, part] as
// (f32 bits, index). Dispatch: rows workgroups.

struct P {
    cols: u32,
    col0: u32,
    part: u32,
    n_parts: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> best: array<vec2<u32>>;  // [rows, n_parts]
@group(0) @binding(2) var<uniform> p: P;

override WG: u32 = 64u;

var<workgroup> bv: array<f32, WG>;
var<workgroup> bi: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.x;
    var v = -3.4e38;
    var idx = 0xffffffffu;
    for (var c = lid; c < p.cols; c += WG) {
        let xc = x[r * p.cols + c];
        if (xc > v) {
            v = xc;
            idx = c;
        }
    }
    bv[lid] = v;
    bi[lid] = idx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let ov = bv[lid + s];
            let oi = bi[lid + s];
            if (ov > bv[lid] || (ov == bv[lid] && oi < bi[lid])) {
                bv[lid] = ov;
                bi[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        best[r * p.n_parts + p.part] = vec2<u32>(bitcast<u32>(bv[0]), p.col0 + bi[0]);
    }
}
