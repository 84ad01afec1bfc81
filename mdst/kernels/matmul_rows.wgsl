// Many-row matmul (prefill, GEMM) on GPUs: Y[r, o0 + j] = sum_k X[r, k] * W[j, k] (+ R[r, o0 + j]
// with RES) for rows r < m and the part's rows j < n. Each workgroup of 256 threads computes a 64 x 64 tile of Y, stepping
// through k 32 at a time with both operands staged in workgroup memory (each weight is dequantized
// once per 64 activation rows); each thread owns a 4 x 4 block of the tile. Q8: each row's 32 staged values of
// X (one block) go through their 8-bit round trip (reference.q8_round_trip) in workgroup memory first.
// Dispatch: (ceil(n / 64), ceil(m / 64)).

struct P {
    k: u32,          // weights per row; a multiple of 4
    n: u32,
    row_bytes: u32,
    o0: u32,
    m: u32,          // activation rows
    y_stride: u32,   // floats per row of Y
    w0: u32,         // byte offset of the part's first row in the weight buffer
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [m, k]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [m, y_stride]
@group(0) @binding(3) var<storage, read> res: array<f32>;       // [m, y_stride]: added with RES
@group(0) @binding(4) var<uniform> p: P;

override RES: bool = false;
override Q8: bool = false;

const TILE: u32 = 64u;   // rows and outputs per tile
const TK: u32 = 32u;     // k per step

var<workgroup> xs: array<vec4<f32>, 512>;  // [k][row / 4]: 4 rows a vec4
var<workgroup> ws: array<vec4<f32>, 512>;  // [k][output / 4]

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j0 = wid.x * TILE;
    let r0 = wid.y * TILE;
    let tx = lid % 16u;   // owns outputs j0 + 4tx .. +3
    let ty = lid / 16u;   // owns rows r0 + 4ty .. +3
    let kg = p.k / 4u;
    let gpb = QK / 4u;
    // one accumulator per row, as separate variables: an array indexed in a loop can end up in
    // slow per-thread memory when the loop is not unrolled
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // stage: 64 rows x 8 groups of 4 k, for X and for W; two of each per thread
        for (var e = lid; e < 512u; e += 256u) {
            let row = e / 8u;
            let q = e % 8u;
            let G = k0 / 4u + q;
            var xv = vec4<f32>(0.0);
            if (r0 + row < p.m && G < kg) {
                xv = x[(r0 + row) * kg + G];
            }
            var wv = vec4<f32>(0.0);
            if (j0 + row < p.n && G < kg) {
                wv = deq4(p.w0 + (j0 + row) * p.row_bytes + (G / gpb) * QB, G % gpb);
            }
            for (var c = 0u; c < 4u; c++) {
                xs[(4u * q + c) * 16u + row / 4u][row % 4u] = xv[c];
                ws[(4u * q + c) * 16u + row / 4u][row % 4u] = wv[c];
            }
        }
        workgroupBarrier();
        if (Q8) {
            if (lid < TILE) {
                var amax = 0.0;
                for (var kk = 0u; kk < TK; kk++) {
                    amax = max(amax, abs(xs[kk * 16u + lid / 4u][lid % 4u]));
                }
                let d = amax / 127.0;
                let id = select(0.0, 1.0 / d, d > 0.0);
                for (var kk = 0u; kk < TK; kk++) {
                    let at = kk * 16u + lid / 4u;
                    xs[at][lid % 4u] = round(xs[at][lid % 4u] * id) * d;
                }
            }
            workgroupBarrier();
        }
        for (var kk = 0u; kk < TK; kk++) {
            let a = xs[kk * 16u + ty];
            let b = ws[kk * 16u + tx];
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }
    var acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + 4u * ty + i;
        for (var c = 0u; c < 4u; c++) {
            let j = j0 + 4u * tx + c;
            if (r < p.m && j < p.n) {
                let at = r * p.y_stride + p.o0 + j;
                var v = acc[i][c];
                if (RES) {
                    v += res[at];
                }
                y[at] = v;
            }
        }
    }
}
