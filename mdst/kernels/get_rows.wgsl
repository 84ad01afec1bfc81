// Row lookup (token embeddings): out[r, :] = scale * W[token r, :] for the tokens whose row lies
// in this weight part, rows [row0, row0 + part_rows). A split table takes one dispatch per part.
// Dispatch: (ceil(cols / 4 / WG), rows).

struct P {
    cols: u32,       // weights per row; a multiple of 4
    row0: u32,
    part_rows: u32,
    row_bytes: u32,
    scale: f32,
    w0: u32,         // byte offset of row row0 in the weight buffer
}

@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;  // [rows, cols]
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.y;
    let G = wid.x * WG + lid;  // group of 4 weights
    if (G >= p.cols / 4u) {
        return;
    }
    let id = step[STEP_TOKENS + r];
    if (id < p.row0 || id - p.row0 >= p.part_rows) {
        return;
    }
    let gpb = QK / 4u;
    out[r * (p.cols / 4u) + G] = p.scale * deq4(p.w0 + (id - p.row0) * p.row_bytes + (G / gpb) * QB, G % gpb);
}
