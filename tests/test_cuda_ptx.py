"""The PTX wrappers of csrc/ptx.h (ldmatrix, mma.sync, cp.async) hold, lane for lane, the fragments
the PTX ISA documents — checked against the ISA's tables as written below, not against the C++.

On the CPU this checks the emulator's host versions (csrc/emulator/cuda_emu.h); on a GPU
(HGNET_TEST_GPU=1) the very same probes (csrc/ptx_probe.cu) run on the hardware, so a pass there
shows that the hardware, the tables and the emulator agree.

Names as in the PTX ISA ("Warp-level matrix fragments"): groupID = lane / 4, threadID_in_group =
lane % 4; a .f16x2 / .bf16x2 register holds its lower-numbered element in the low 16 bits.
"""
import numpy as np
import pytest
import torch

from hgnet_kernels.kernels.cuda import ops as cuda_ops

from helpers import DEVICE
LANES = range(32)


def run(name, data: np.ndarray) -> np.ndarray:
    if DEVICE == "cuda" and torch.cuda.get_device_capability() < ((7, 5) if name.startswith("ldmatrix") else (8, 0)):
        pytest.skip(f"{name} needs a newer GPU")
    out = cuda_ops.ptx_probe(name, torch.from_numpy(np.frombuffer(data.tobytes(), np.uint8).copy()).to(DEVICE))
    return out.cpu().numpy()


# ---- ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16 ----------------------------------------
# "Each thread in the warp holds a fragment of the row (two consecutive elements): thread T gets
# elements (T / 4, 2·(T % 4)) and (T / 4, 2·(T % 4) + 1) of each matrix"; threads 8i..8i+7 give the
# row addresses of matrix i; with .trans each matrix is read column-major, i.e. thread T gets
# elements (2·(T % 4), T / 4) and (2·(T % 4) + 1, T / 4).

@pytest.mark.parametrize("trans", [False, True], ids=["plain", "trans"])
@pytest.mark.parametrize("num", [1, 2, 4])
def test_ldmatrix_fragment_layout(num, trans):
    rng = np.random.default_rng(num * 2 + trans)
    tile = rng.permutation(65536)[:32 * 8].astype(np.uint16).reshape(32, 8)  # distinct elements
    row_of_lane = rng.permutation(32).astype(np.int32)  # lane l addresses tile row row_of_lane[l]
    got = run(f"ldmatrix_x{num}" + ("_trans" if trans else ""),
              np.concatenate([tile.view(np.uint8).ravel(), row_of_lane.view(np.uint8)])).view(np.uint32).reshape(32, 4)
    for i in range(num):
        matrix = tile[row_of_lane[8 * i:8 * i + 8]]  # row j: the address of thread 8i + j
        for lane in LANES:
            g, t = lane // 4, lane % 4
            lo, hi = (matrix[2 * t, g], matrix[2 * t + 1, g]) if trans else (matrix[g, 2 * t], matrix[g, 2 * t + 1])
            assert got[lane, i] == int(lo) | int(hi) << 16, (lane, i)
    assert (got[:, num:] == 0).all()


# ---- mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 --------------------------------
# A (16×16): a0..a7, row groupID for a0, a1, a4, a5 and groupID + 8 for a2, a3, a6, a7; column
# threadID_in_group·2 + (i & 1), plus 8 for a4..a7. B (16×8): b0..b3, row threadID_in_group·2 +
# (i & 1), plus 8 for b2, b3; column groupID. C, D (16×8): c0..c3, row groupID for c0, c1 and
# groupID + 8 for c2, c3; column threadID_in_group·2 + (i & 1).

def a_m16n8k16(i, g, t):
    return g + (8 if i in (2, 3, 6, 7) else 0), 2 * t + (i & 1) + (8 if i >= 4 else 0)


def b_m16n8k16(i, g, t):
    return 2 * t + (i & 1) + (8 if i >= 2 else 0), g


def cd(i, g, t):
    return g + (8 if i >= 2 else 0), 2 * t + (i & 1)


# ---- mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 ---------------------------------------------
# A (16×8): a0..a3, row groupID for a0, a2 and groupID + 8 for a1, a3; column threadID_in_group,
# plus 4 for a2, a3. B (8×8): b0, b1, row threadID_in_group, plus 4 for b1; column groupID.

def a_m16n8k8(i, g, t):
    return g + (8 if i in (1, 3) else 0), t + (4 if i >= 2 else 0)


def b_m16n8k8(i, g, t):
    return t + (4 if i == 1 else 0), g


def pack16(values, dtype):
    bits = torch.tensor(values, dtype=torch.float32).to(dtype).view(torch.int16).numpy().view(np.uint16)
    return bits.astype(np.uint32)


@pytest.mark.parametrize("kind", ["f16", "bf16", "tf32"])
def test_mma_fragment_layout(kind):
    rng = np.random.default_rng({"f16": 1, "bf16": 2, "tf32": 3}[kind])
    k = 8 if kind == "tf32" else 16
    # Small integers: every product and sum is exact, so the check is bit for bit.
    A = rng.integers(-8, 9, (16, k)).astype(np.float32)
    B = rng.integers(-8, 9, (k, 8)).astype(np.float32)
    C = rng.integers(-64, 65, (16, 8)).astype(np.float32)
    a = np.zeros((32, 4), np.uint32)
    b = np.zeros((32, 2), np.uint32)
    c = np.zeros((32, 4), np.float32)
    for lane in LANES:
        g, t = lane // 4, lane % 4
        if kind == "tf32":  # one 32-bit element per register
            a[lane] = [A[a_m16n8k8(i, g, t)].view(np.uint32) for i in range(4)]
            b[lane] = [B[b_m16n8k8(i, g, t)].view(np.uint32) for i in range(2)]
        else:  # register r holds elements 2r (low half) and 2r + 1
            dtype = torch.float16 if kind == "f16" else torch.bfloat16
            elements = pack16([A[a_m16n8k16(i, g, t)] for i in range(8)], dtype)
            a[lane] = elements[0::2] | elements[1::2] << 16
            elements = pack16([B[b_m16n8k16(i, g, t)] for i in range(4)], dtype)
            b[lane] = elements[0::2] | elements[1::2] << 16
        c[lane] = [C[cd(i, g, t)] for i in range(4)]
    d = run(f"mma_{kind}", np.concatenate([a.ravel(), b.ravel(), c.view(np.uint32).ravel()])).view(np.float32)
    expected = A @ B + C
    for lane in LANES:
        g, t = lane // 4, lane % 4
        assert [d[lane * 4 + i] for i in range(4)] == [expected[cd(i, g, t)] for i in range(4)], lane


def test_mma_tf32_reads_only_tf32_bits():
    """The tensor cores read the 19 tf32 bits of each fp32 operand; the 3×TF32 path rounds with
    cvt.rna.tf32 first, so what happens to the other 13 bits never matters there."""
    A = np.zeros((16, 8), np.float32)
    A[0, 0] = 1.0
    B = np.zeros((8, 8), np.float32)
    B[0, 0] = np.float32(1.0 + 2.0 ** -12)  # below tf32's precision
    a = np.zeros((32, 4), np.uint32)
    b = np.zeros((32, 2), np.uint32)
    a[0, 0] = A[0, 0].view(np.uint32)
    b[0, 0] = B[0, 0].view(np.uint32)
    d = run("mma_tf32", np.concatenate([a.ravel(), b.ravel(), np.zeros(128, np.uint32)])).view(np.float32)
    assert d[0] == 1.0


# ---- cp.async -------------------------------------------------------------------------------------
# cp.async.cg.shared.global [dst], [src], 16, src-size: src-size bytes copied, the rest of the 16
# zero-filled; cp.async.commit_group closes a group of this thread's copies; cp.async.wait_group N
# returns once at most the N most recent groups are pending.

def test_cp_async_groups_and_zero_fill():
    rng = np.random.default_rng(4)
    data = rng.integers(1, 255, 36 * 16).astype(np.uint8)
    chunks = data.reshape(36, 16)
    out = run("cp_async", data).reshape(40, 16)
    zeros = np.zeros(16, np.uint8)
    assert (out[0] == chunks[0]).all()          # group 1 complete after wait_group 1
    assert (out[1] == zeros).all()              # its src-size 0 copy wrote zeros
    assert (out[3] == chunks[0]).all() and (out[4] == zeros).all() and (out[5] == chunks[2]).all()  # wait_group 0
    assert (out[6] == 0xab).all()               # no copy touches other bytes
    for lane in LANES:
        assert (out[8 + lane] == (chunks[4 + lane] if lane % 2 == 0 else zeros)).all(), lane
    if DEVICE == "cpu":
        # The emulator lands a copy only when a wait_group completes its group: until then the
        # destination reads as all-ones bytes (NaN), so a missing wait shows in any result.
        assert (out[2] == 0xff).all()
