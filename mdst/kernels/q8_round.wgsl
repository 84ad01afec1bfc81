// x's 8-bit round trip written out as floats (reference.q8_round_trip, llama.cpp's q8_1 blocks): per 32 values
// of a row, d = amax / 127 and y = round(x / d) d. A many-row matmul multiplies this copy, so its tiles stay those
// of f32 activations, f16 ones included; the one-row matmul rounds x in workgroup memory instead (no dispatch).
// A thread takes one block. Dispatch: ceil(blocks / WG) workgroups, spilling into y past 65535.

struct P {
    blocks: u32,   // 32-value blocks in x (rows x k / 32)
}

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;          // [blocks, 8]
@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;    // [blocks, 8]
@group(0) @binding(2) var<uniform> p: P;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let b = flat_wg(wid, nwg) * WG + lid;
    if (b >= p.blocks) {
        return;
    }
    var v: array<vec4<f32>, 8>;
    var m = vec4<f32>(0.0);
    for (var i = 0u; i < 8u; i++) {
        v[i] = x[8u * b + i];
        m = max(m, abs(v[i]));
    }
    let s = q8_scales(m);
    for (var i = 0u; i < 8u; i++) {
        y[8u * b + i] = round(v[i] * s.y) * s.x;
    }
}
