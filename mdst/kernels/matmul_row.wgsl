// One-row matmul (decode, GEMV): y[o0 + j] = sum_k x[k] * W[j, k] for the part's rows j < n.
// WG / TPR output rows per workgroup, TPR threads per row (a power of two). A thread takes
// 32 consecutive weights at a time (8 groups of 4 from one block: its scales are decoded once
// and the weight bytes are read together), striding over the row; a tree reduction in
// workgroup memory sums each row's threads.
// Dispatch: ceil(n / (WG / TPR)) workgroups, spilling into y past 65535.

struct P {
    k: u32,          // weights per row; a multiple of 4
    n: u32,          // rows of this weight part
    row_bytes: u32,
    o0: u32,         // first output column of this part
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [k]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [o0 + n ...]
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 256u;
override TPR: u32 = 32u;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = lid % TPR;
    let j = flat_wg(wid, nwg) * (WG / TPR) + lid / TPR;
    var acc = 0.0;
    if (j < p.n) {
        let kg = p.k / 4u;           // groups of 4 weights in the row
        let gpb = QK / 4u;           // groups per block
        let base = j * p.row_bytes;
        for (var c = t * 8u; c < kg; c += TPR * 8u) {
            if (gpb >= 8u && c + 8u <= kg) {
                // 8 groups of one block: the same block start for all (scale loads are shared)
                let b = base + (c / gpb) * QB;
                let g0 = c % gpb;
                for (var i = 0u; i < 8u; i++) {
                    acc += dot(deq4(b, g0 + i), x[c + i]);
                }
            } else {
                for (var G = c; G < min(c + 8u, kg); G++) {
                    acc += dot(deq4(base + (G / gpb) * QB, G % gpb), x[G]);
                }
            }
        }
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if (t == 0u && j < p.n) {
        y[p.o0 + j] = red[lid];
    }
}
