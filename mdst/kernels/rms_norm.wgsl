// RMSNorm over vectors of `dim` floats: out[v, :] = x[v, :] / sqrt(mean(x[v, :]^2) + eps) * w,
// plus a[v, :] with ADD (Gemma's post-norms followed by the residual add, in one pass).
// Per-head norms (q/k norm) are the same op with dim = head size. One workgroup per vector.
// Dispatch: n_vec workgroups, spilling into y past 65535.

struct P {
    dim: u32,
    n_vec: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;   // [dim]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> a: array<f32>;   // like x: added with ADD
@group(0) @binding(4) var<uniform> p: P;

override WG: u32 = 64u;
override ADD: bool = false;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let v = flat_wg(wid, nwg);
    if (v >= p.n_vec) {
        return;
    }
    let base = v * p.dim;
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += WG) {
        ss += x[base + i] * x[base + i];
    }
    red[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let inv = inverseSqrt(red[0] / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += WG) {
        var o = x[base + i] * inv * w[i];
        if (ADD) {
            o += a[base + i];
        }
        out[base + i] = o;
    }
}
