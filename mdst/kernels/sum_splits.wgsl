// The slices of a split-k matmul_rows added: y[r, o0 + j] = sum over s < splits of parts[s, r, j]
// (+ res[r, o0 + j] with RES), in slice order.
// Dispatch: ceil(m * n / WG) workgroups, spilling into y past 65535.

struct P {
    n: u32,         // outputs a row
    m: u32,         // rows
    splits: u32,
    o0: u32,
    y_stride: u32,  // floats per row of y and res
}

@group(0) @binding(0) var<storage, read> parts: array<f32>;      // [splits, m, n]
@group(0) @binding(1) var<storage, read> res: array<f32>;        // [m, y_stride]: added with RES
@group(0) @binding(2) var<storage, read_write> y: array<f32>;    // [m, y_stride]
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;
override RES: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_wg(wid, nwg) * WG + lid;
    if (i >= p.m * p.n) {
        return;
    }
    let at = (i / p.n) * p.y_stride + p.o0 + i % p.n;
    var s = 0.0;
    for (var z = 0u; z < p.splits; z++) {
        s += parts[z * p.m * p.n + i];
    }
    if (RES) {
        s += res[at];
    }
    y[at] = s;
}
