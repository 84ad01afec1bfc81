// One-row matmul (decode, GEMV): y[o0 + j] = sum_k x[k] * W[j, k] for the part's rows j < n.
// ROWS output rows per workgroup, WG / ROWS threads per row (a power of two), each striding
// over groups of 4 weights; a tree reduction in workgroup memory sums them.
// Dispatch: ceil(n / ROWS) workgroups, spilling into y past 65535.

struct P {
    k: u32,          // weights per row; a multiple of 4
    n: u32,          // rows of this weight part
    row_bytes: u32,
    o0: u32,         // first output column of this part
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [k]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [o0 + n ...]
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;
override ROWS: u32 = 2u;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let tpr = WG / ROWS;
    let t = lid % tpr;
    let j = flat_wg(wid, nwg) * ROWS + lid / tpr;
    var acc = 0.0;
    if (j < p.n) {
        let gpb = QK / 4u;
        let base = j * p.row_bytes;
        for (var G = t; G < p.k / 4u; G += tpr) {
            acc += dot(deq4(base + (G / gpb) * QB, G % gpb), x[G]);
        }
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = tpr / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if (t == 0u && j < p.n) {
        y[p.o0 + j] = red[lid];
    }
}
