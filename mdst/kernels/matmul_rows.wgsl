// Many-row matmul (prefill, GEMM): Y[r, o0 + j] = sum_k X[r, k] * W[j, k] for rows r < m and
// the part's rows j < n. Each workgroup computes a 32 x 32 tile of Y, stepping through k 32 at a
// time with both operands staged (weights dequantized once per tile) in workgroup memory;
// each of the 64 threads owns a 4 x 4 block of the tile.
// Dispatch: (ceil(n / 32), ceil(m / 32)).

struct P {
    k: u32,          // weights per row; a multiple of 4
    n: u32,
    row_bytes: u32,
    o0: u32,
    m: u32,          // activation rows
    y_stride: u32,   // floats per row of Y
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [m, k]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [m, y_stride]
@group(0) @binding(3) var<uniform> p: P;

const T: u32 = 32u;   // tile edge in rows, outputs and k

var<workgroup> xs: array<f32, 1024>;  // [k][row] of the tile
var<workgroup> ws: array<f32, 1024>;  // [k][output] of the tile

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j0 = wid.x * T;
    let r0 = wid.y * T;
    let tx = lid % 8u;   // owns outputs j0 + 4tx .. +3
    let ty = lid / 8u;   // owns rows r0 + 4ty .. +3
    let kg = p.k / 4u;
    let gpb = QK / 4u;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += T) {
        for (var e = lid; e < 256u; e += 64u) {
            let row = e / 8u;       // tile row (activation row or weight row)
            let q = e % 8u;         // group of 4 along k
            let G = k0 / 4u + q;
            var xv = vec4<f32>(0.0);
            if (r0 + row < p.m && G < kg) {
                xv = x[(r0 + row) * kg + G];
            }
            var wv = vec4<f32>(0.0);
            if (j0 + row < p.n && G < kg) {
                wv = deq4((j0 + row) * p.row_bytes + (G / gpb) * QB, G % gpb);
            }
            for (var c = 0u; c < 4u; c++) {
                xs[(4u * q + c) * T + row] = xv[c];
                ws[(4u * q + c) * T + row] = wv[c];
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < T; kk++) {
            let a = vec4<f32>(xs[kk * T + 4u * ty], xs[kk * T + 4u * ty + 1u],
                              xs[kk * T + 4u * ty + 2u], xs[kk * T + 4u * ty + 3u]);
            let b = vec4<f32>(ws[kk * T + 4u * tx], ws[kk * T + 4u * tx + 1u],
                              ws[kk * T + 4u * tx + 2u], ws[kk * T + 4u * tx + 3u]);
            for (var i = 0u; i < 4u; i++) {
                acc[i] += a[i] * b;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + 4u * ty + i;
        for (var c = 0u; c < 4u; c++) {
            let j = j0 + 4u * tx + c;
            if (r < p.m && j < p.n) {
                y[r * p.y_stride + p.o0 + j] = acc[i][c];
            }
        }
    }
}
