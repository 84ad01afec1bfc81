// Attention with SPLIT, second stage: combine a (head, row)'s per-split partials (m, l, acc) into
// out = sum_z acc_z * exp(m_z - M) / sum_z l_z * exp(m_z - M), M the largest m_z of non-empty splits.
// Dispatch: (heads, rows).

struct P {
    heads: u32,
    head_dim: u32,
    splits: u32,
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> part: array<f32>;       // [rows, heads, splits, head_dim + 2]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [rows, heads * head_dim]
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let r = wid.y;
    if (r >= step[STEP_ROWS]) {
        return;
    }
    let stride = p.head_dim + 2u;
    let base = (r * p.heads + h) * p.splits * stride;
    var big = -3.0e38;
    for (var z = 0u; z < p.splits; z++) {
        if (part[base + z * stride + 1u] > 0.0) {
            big = max(big, part[base + z * stride]);
        }
    }
    var total = 0.0;
    for (var z = 0u; z < p.splits; z++) {
        let l = part[base + z * stride + 1u];
        if (l > 0.0) {
            total += l * exp(part[base + z * stride] - big);
        }
    }
    for (var d = lid; d < p.head_dim; d += WG) {
        var acc = 0.0;
        for (var z = 0u; z < p.splits; z++) {
            let o = base + z * stride;
            if (part[o + 1u] > 0.0) {
                acc += part[o + 2u + d] * exp(part[o] - big);
            }
        }
        out[(r * p.heads + h) * p.head_dim + d] = acc / total;
    }
}
