// matmul_row's step for weight types without one of their own: a unit is GPT groups of 4 weights
// (GPT = 1: neighbouring threads read neighbouring bytes), read through deq4. Groups past the row's
// end (k not a multiple of 4 * GPT) read the row's last group against zeros: no branch per group.
//
// Every step defines: UNIT (weights a unit; a row holds ceil(k / UNIT) units), step_x(u) (the x a
// unit reads, and their sum of squares with NORM, in a struct XU), either step_dot(b, u, xu) (unit u of
// the row at byte b against xu; matmul_row.whole.wgsl follows such a step) or its split, step_w(b, u)
// (unit u read and decoded as far as it can be once for every row of x, in a struct WU) and step_wx(w,
// xu) (those weights against xu), and step_init(lid) (run before anything else; STEP_SYNC says a barrier
// must follow it).

override UNIT: u32 = 4u * GPT;
const STEP_SYNC: bool = false;

struct XU {
    a: mat4x4<f32>,   // groups 0..3 of the unit (those past GPT or the row's end are zero)
    b: mat4x4<f32>,   // groups 4..7
    ss: f32,
}

fn step_init(lid: u32) {}

// x's group u * GPT + i, or zeros past the row's end; its sum of squares added to ss with NORM.
fn gx(u: u32, i: u32, ss: ptr<function, f32>) -> vec4<f32> {
    let G = u * GPT + i;
    let kg = p.k / 4u;
    if (i >= GPT || G >= kg) {
        return vec4<f32>(0.0);
    }
    if (NORM) {
        *ss += sq(G);
    }
    return xg(G);
}

// (Written out rather than looped: compilers keep the groups in registers.)
fn step_x(u: u32) -> XU {
    var xu: XU;
    var ss = 0.0;
    xu.a = mat4x4<f32>(gx(u, 0u, &ss), gx(u, 1u, &ss), gx(u, 2u, &ss), gx(u, 3u, &ss));
    if (GPT > 4u) {
        xu.b = mat4x4<f32>(gx(u, 4u, &ss), gx(u, 5u, &ss), gx(u, 6u, &ss), gx(u, 7u, &ss));
    }
    xu.ss = ss;
    return xu;
}

// Group u * GPT + i of the row at byte b against x (the row's last group past its end: x is zero there).
fn gdot(b: u32, u: u32, i: u32, xv: vec4<f32>) -> f32 {
    let gpb = QK / 4u;           // groups per block
    let G = min(u * GPT + i, p.k / 4u - 1u);
    return dot(deq4(b + (G / gpb) * QB, G % gpb), xv);
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    var s = gdot(b, u, 0u, xu.a[0]);
    if (GPT > 1u) {
        s += gdot(b, u, 1u, xu.a[1]);
    }
    if (GPT > 2u) {
        s += gdot(b, u, 2u, xu.a[2]) + gdot(b, u, 3u, xu.a[3]);
    }
    if (GPT > 4u) {
        s += gdot(b, u, 4u, xu.b[0]) + gdot(b, u, 5u, xu.b[1]) + gdot(b, u, 6u, xu.b[2]) + gdot(b, u, 7u, xu.b[3]);
    }
    return s;
}
