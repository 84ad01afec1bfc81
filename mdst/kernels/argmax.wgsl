// Greedy pick, first stage: for each row of one logits part [rows, cols], the largest value of
// each slice of SLICE columns and its vocabulary id (col0 + column; ties go to the lower id),
// written to best[row, slice0 + slice] as (f32 bits, id). Many slices keep the GPU busy on a
// large vocabulary. Dispatch: (ceil(cols / SLICE), rows).

struct P {
    cols: u32,
    col0: u32,
    slice0: u32,     // this part's first slice among all of a row's slices
    slices: u32,     // a row's slices over all parts
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> best: array<vec2<u32>>;  // [rows, slices]
@group(0) @binding(2) var<uniform> p: P;

const SLICE: u32 = 4096u;
override WG: u32 = 256u;   // a power of two, at most PICK_WG

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.y;
    let start = wid.x * SLICE;
    let end = min(start + SLICE, p.cols);
    var v = -3.4e38;
    var idx = NONE_ID;
    for (var c = start + lid; c < end; c += WG) {
        let xc = x[r * p.cols + c];
        if (xc > v) {
            v = xc;
            idx = c;
        }
    }
    let b = pick_best(v, idx, lid, WG);
    if (lid == 0u) {
        best[r * p.slices + p.slice0 + wid.x] = vec2<u32>(bitcast<u32>(b.v), p.col0 + b.i);
    }
}
